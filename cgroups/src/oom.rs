//! OOM-kill notifications for a container's cgroup, for `events` and the shim.
//!
//! - cgroup v1: an eventfd registered on `memory.oom_control` through
//!   `cgroup.event_control`; the kernel bumps it each time the cgroup hits its limit and
//!   the OOM killer runs (and once more when the cgroup is removed).
//! - cgroup v2: inotify on `memory.events`; an OOM kill is a rise of its `oom_kill` count.
//!
//! ```no_run
//! # fn main() -> capsa_cgroups::Result<()> {
//! # let paths = std::collections::BTreeMap::new();
//! use capsa_cgroups::{OomEvent, OomWatcher};
//! let mut w = OomWatcher::new(&paths)?; // Manager::paths() of the container
//! loop {
//!     match w.wait(None)? {
//!         OomEvent::Oom(n) => println!("{n} OOM kill(s)"),
//!         OomEvent::Timeout => {}
//!         OomEvent::Gone => break,
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fs;

/// What [`OomWatcher::wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomEvent {
    /// This many OOM kills happened since the last report (at least 1).
    Oom(u64),
    /// Nothing happened before the timeout.
    Timeout,
    /// The cgroup was removed (v1) or has no processes left (v2): no more events will come.
    Gone,
}

#[derive(Debug)]
enum Kind {
    V1 { efd: OwnedFd, _control: File, dir: PathBuf },
    V2 { ino: OwnedFd, dir: PathBuf, last: u64 },
}

/// Watches one cgroup for OOM kills. Its fd ([`AsFd`]) becomes readable when there is
/// something to report, so a caller can poll it together with other fds.
#[derive(Debug)]
pub struct OomWatcher {
    kind: Kind,
}

/// The `oom_kill` count of a cgroup directory: v1 `memory.oom_control`, v2 `memory.events`.
pub fn oom_kill_count(dir: &Path) -> Result<u64> {
    let file = if dir.join("memory.events").exists() { "memory.events" } else { "memory.oom_control" };
    let text = fs::read(&dir.join(file))?;
    Ok(crate::stats::flat_keyed(&text).get("oom_kill").copied().unwrap_or(0))
}

fn os_err(op: &'static str, path: &Path) -> Error {
    Error::io(op, path, io::Error::last_os_error())
}

impl OomWatcher {
    /// Watches the memory cgroup among `paths` (as [`crate::Manager::paths`] returns them):
    /// the v1 `memory` directory if there is one, else the cgroup2 directory.
    pub fn new(paths: &BTreeMap<String, PathBuf>) -> Result<OomWatcher> {
        if let Some(dir) = paths.get("memory") {
            return Self::v1(dir);
        }
        match paths.get("") {
            Some(dir) if dir.join("memory.events").exists() => Self::v2(dir),
            _ => Err(Error::Msg("OOM notifications need the memory cgroup controller, which this container's cgroup does not have".into())),
        }
    }

    fn v1(dir: &Path) -> Result<OomWatcher> {
        let control_path = dir.join("memory.oom_control");
        let control = File::open(&control_path).map_err(|e| Error::io("open", &control_path, e))?;
        // SAFETY: eventfd(2) takes two integers and returns a new fd or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(os_err("eventfd for", dir));
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let efd = unsafe { OwnedFd::from_raw_fd(raw) };
        let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
        fs::write(&dir.join("cgroup.event_control"), &line)?;
        Ok(OomWatcher { kind: Kind::V1 { efd, _control: control, dir: dir.to_path_buf() } })
    }

    fn v2(dir: &Path) -> Result<OomWatcher> {
        // SAFETY: inotify_init1(2) takes flags and returns a new fd or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return Err(os_err("inotify_init1 for", dir));
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let ino = unsafe { OwnedFd::from_raw_fd(raw) };
        for name in ["memory.events", "cgroup.events"] {
            let p = dir.join(name);
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| Error::Msg(format!("{}: path contains a NUL byte", p.display())))?;
            // SAFETY: a valid inotify fd and a NUL-terminated path that outlives the call.
            if unsafe { libc::inotify_add_watch(ino.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) } < 0 {
                return Err(os_err("inotify_add_watch", &p));
            }
        }
        let last = oom_kill_count(dir)?;
        Ok(OomWatcher { kind: Kind::V2 { ino, dir: dir.to_path_buf(), last } })
    }

    /// Waits up to `timeout` (forever if `None`) for the next OOM kill.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<OomEvent> {
        let ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
        let mut pfd = libc::pollfd { fd: self.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: one valid pollfd that lives across the call.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(Error::Msg(format!("poll for OOM events: {}", io::Error::last_os_error())));
            }
            if n == 0 {
                return Ok(OomEvent::Timeout);
            }
            return self.check();
        }
    }

    /// Non-blocking: what happened since the last call (after the fd polled readable).
    pub fn check(&mut self) -> Result<OomEvent> {
        match &mut self.kind {
            Kind::V1 { efd, dir, .. } => {
                let mut buf = [0u8; 8];
                // SAFETY: reads at most 8 bytes into an 8-byte buffer from our eventfd.
                let n = unsafe { libc::read(efd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n != 8 {
                    return Ok(if dir.join("cgroup.event_control").exists() { OomEvent::Timeout } else { OomEvent::Gone });
                }
                // The kernel also signals the eventfd when the cgroup is removed.
                if !dir.join("cgroup.event_control").exists() {
                    return Ok(OomEvent::Gone);
                }
                Ok(OomEvent::Oom(u64::from_ne_bytes(buf).max(1)))
            }
            Kind::V2 { ino, dir, last } => {
                let mut buf = [0u8; 4096];
                // Drain the queued inotify events; what changed is read from the files.
                // SAFETY: reads into a buffer of the given length from our inotify fd.
                while unsafe { libc::read(ino.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
                let count = match oom_kill_count(dir) {
                    Ok(c) => c,
                    Err(e) if e.is_not_found() => return Ok(OomEvent::Gone),
                    Err(e) => return Err(e),
                };
                if count > *last {
                    let n = count - *last;
                    *last = count;
                    return Ok(OomEvent::Oom(n));
                }
                let events = fs::read(&dir.join("cgroup.events")).unwrap_or_default();
                if events.lines().any(|l| l.trim() == "populated 0") {
                    return Ok(OomEvent::Gone);
                }
                Ok(OomEvent::Timeout)
            }
        }
    }
}

impl AsFd for OomWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::V1 { efd, .. } => efd.as_fd(),
            Kind::V2 { ino, .. } => ino.as_fd(),
        }
    }
}

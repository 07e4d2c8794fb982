//! Serialising commands on one container id across processes: a POSIX write lock on
//! `<root>/<id>/.lock`, held for the whole command.
//!
//! A POSIX (fcntl) lock, not flock: it belongs to the process and is not inherited by the
//! children `create` forks, so a container's init never holds it, and it goes away with a
//! `create` that was killed half-way. The lock file's fd is closed in every child right
//! after fork (see `process::fds::keep_only`), and waits are bounded.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Context, Error, Result};

/// Held while a command works on a container; released when dropped or when the process ends.
pub struct Lock {
    _file: File,
}

pub const LOCK_FILE: &str = ".lock";

/// How long a command waits for another one on the same container. Bounded, so that no
/// process holding the lock (however it got it) can hang `kill` or `delete --force` for ever.
pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Lock {
    /// Waits (at most [`LOCK_TIMEOUT`]) until no other process holds the lock of the
    /// container in `dir`.
    pub fn acquire(dir: &Path) -> Result<Lock> {
        Lock::acquire_within(dir, LOCK_TIMEOUT)
    }

    pub fn acquire_within(dir: &Path, timeout: std::time::Duration) -> Result<Lock> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_ctx(|| format!("lock {}", dir.display()))?;
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_micros(500);
        loop {
            let mut fl = write_lock();
            // SAFETY: F_SETLK reads one flock struct that lives for the call.
            if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) } == 0 {
                return Ok(Lock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES) | Some(libc::EINTR)) {
                return Err(Error::from(e).context(format!("lock {}", dir.display())));
            }
            if start.elapsed() >= timeout {
                // SAFETY: F_GETLK fills in the flock struct that lives for the call.
                let holder = if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) } == 0
                    && fl.l_type != libc::F_UNLCK as libc::c_short
                {
                    format!(" (held by pid {})", fl.l_pid)
                } else {
                    String::new()
                };
                return Err(Error::new(format!(
                    "container {} is locked by another process{holder}: gave up after {} s",
                    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(20));
        }
    }
}

fn write_lock() -> libc::flock {
    // SAFETY: flock is plain data; zeroed then filled in.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

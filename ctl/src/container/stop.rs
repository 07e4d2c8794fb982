//! `stop`, `kill`, and waiting for a container to be down: signals go to the container
//! through the capsa library; the monitor, the container's parent, sees the exit and
//! records it; the command returns once the monitor is done (its lock is free).
//!
//! docker's rule for restart policies: `stop`, and `kill` with SIGKILL or the container's
//! stop signal, count as a stop by the user: the policy is off until the next `start`.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use capsa::container::{Container, Status};
use capsa_image::Store;

use super::{reconcile, Lock, Record};
use crate::cli::{fail, Result};
use crate::monitor::client as monitor_client;

/// Config.StopSignal (or the image's), else SIGTERM.
pub fn stop_signal(rec: &Record) -> i32 {
    rec.stored.config.stop_signal.as_deref().and_then(|s| capsa::container::parse_signal(s).ok()).unwrap_or(libc::SIGTERM)
}

/// `-t`, else `--stop-timeout`, else docker's 10 seconds (-1: wait forever).
pub fn stop_timeout(rec: &Record, flag: Option<i64>) -> i64 {
    flag.or(rec.stored.config.stop_timeout).unwrap_or(10)
}

/// The container's init, if capsa knows it alive: (pid, status).
pub fn runtime_status(state_root: &Path, id: &str) -> Option<(i32, Status)> {
    let st = Container::peek(state_root, id).ok()?;
    let status = capsa::container::status_of(&st, &state_root.join(id));
    match status {
        Status::Stopped | Status::Creating => None,
        s => Some((st.pid, s)),
    }
}

/// Waits up to `secs` (forever if negative) for process `pid` to end; true if it did.
fn wait_pid(pid: i32, secs: i64) -> bool {
    let Ok(fd) = super::pidfd_open(pid) else { return true };
    let mut left = if secs < 0 { i64::MAX } else { secs * 1000 };
    loop {
        let step = left.min(60_000) as u16;
        let mut fds = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(step)) {
            Ok(n) if n > 0 => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true,
            Ok(_) => {}
        }
        left -= step as i64;
        if left <= 0 {
            return false;
        }
    }
}

/// Marks a stop by the user: no restart until the next start; a monitor waiting to
/// restart gives up.
fn mark_user_stop(store: &mut Store, rec: &Record) -> Result<()> {
    super::update(store, &rec.id, "user_stopped = 1", &[])?;
    let _ = monitor_client::request(&super::dir(store, &rec.id), "stop");
    Ok(())
}

/// Stops a container: its stop signal, `timeout` seconds, then SIGKILL; returns once the
/// monitor has recorded the exit. A stopped container is left as it is.
pub fn stop(store: &mut Store, state_root: &Path, rec: &Record, timeout: i64, signal: Option<i32>) -> Result<()> {
    if !rec.is_active() {
        return Ok(());
    }
    mark_user_stop(store, rec)?;
    let sig = signal.unwrap_or_else(|| stop_signal(rec));
    if let Some((pid, status)) = runtime_status(state_root, &rec.id) {
        let _ = capsa::container::kill(state_root, &rec.id, sig, false);
        if status == Status::Paused {
            // Frozen processes act on signals once thawed.
            let _ = capsa::container::resume(state_root, &rec.id);
        }
        if !wait_pid(pid, timeout) {
            let _ = capsa::container::kill(state_root, &rec.id, libc::SIGKILL, true);
            if !wait_pid(pid, 10) {
                return Err(fail(format!("container {} did not stop after SIGKILL", rec.id)));
            }
        }
    }
    wait_down(store, state_root, rec)
}

/// Waits for the monitor to finish with a container that is down (its lock free), and
/// records the exit itself if there is no monitor.
pub fn wait_down(store: &mut Store, state_root: &Path, rec: &Record) -> Result<()> {
    let dir = super::dir(store, &rec.id);
    match Lock::take_within(&dir, Duration::from_secs(30)) {
        Ok(Some(lock)) => {
            // The monitor has gone; if it did not record the exit (killed), do it here.
            if let Some(now) = super::get(store, &rec.id)? {
                if now.is_active() {
                    reconcile::finish(store, state_root, &now, None, &lock)?;
                }
            }
            Ok(())
        }
        Ok(None) => Err(fail(format!("container {}: its monitor did not finish within 30 s", rec.id))),
        // The directory is gone: removed (--rm) by its monitor.
        Err(_) => Ok(()),
    }
}

/// `kill -s SIGNAL`: the signal to the container's init (docker's error when it does not run).
pub fn kill(store: &mut Store, state_root: &Path, rec: &Record, sig: i32) -> Result<()> {
    if runtime_status(state_root, &rec.id).is_none() {
        return Err(fail(format!("Cannot kill container: {}: Container {} is not running", rec.name, rec.id)));
    }
    if sig == libc::SIGKILL || sig == stop_signal(rec) {
        mark_user_stop(store, rec)?;
    }
    capsa::container::kill(state_root, &rec.id, sig, false).map_err(|e| fail(format!("Cannot kill container: {}: {e}", rec.name)))?;
    Ok(())
}

//! `kill`: send a signal to a container's init, or with `--all` to all its processes.

use std::os::fd::AsRawFd;
use std::path::Path;

use super::{Container, Status};
use crate::bail;
use crate::error::{Error, Result};

/// Parses `KILL`, `SIGKILL`, `sigkill` or `9`. `0` is accepted as runc accepts it: kill(2)'s
/// existence check, which fails with "container not running" once init is gone.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if n >= 0 && n <= libc::SIGRTMAX() {
            return Ok(n);
        }
        bail!("unknown signal {s:?}");
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let std = nix::sys::signal::Signal::iterator().find(|sig| sig.as_str().strip_prefix("SIG") == Some(name));
    if let Some(sig) = std {
        return Ok(sig as i32);
    }
    // RTMIN+n / RTMAX-n
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() { 0 } else { rest.strip_prefix('+').and_then(|r| r.parse().ok()).unwrap_or(-1) };
        if let Some(sig) = (off >= 0).then(|| libc::SIGRTMIN().checked_add(off)).flatten().filter(|s| *s <= libc::SIGRTMAX()) {
            return Ok(sig);
        }
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let off: i32 = if rest.is_empty() { 0 } else { rest.strip_prefix('-').and_then(|r| r.parse().ok()).unwrap_or(-1) };
        if let Some(sig) = (off >= 0).then(|| libc::SIGRTMAX().checked_sub(off)).flatten().filter(|s| *s >= libc::SIGRTMIN()) {
            return Ok(sig);
        }
    }
    bail!("unknown signal {s:?}")
}

pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> Result<()> {
    let c = Container::load(root, id)?;
    let status = c.status();
    if status == Status::Stopped {
        if all {
            // As runc: `--all` still reaches what is left in a stopped container's cgroup
            // (children of an init that shared its pid namespace, e.g. a pod's, outlive it);
            // with no cgroup left there is nothing to signal and that is not an error.
            return crate::cgroup::kill_all_paths(&c.state.cgroup_paths, signal);
        }
        bail!("container not running");
    }
    if all || !c.state.own_pid_ns {
        crate::cgroup::kill_all_paths(&c.state.cgroup_paths, signal)?;
        if !all {
            return Ok(());
        }
    }
    signal_init(&c, signal)
}

pub(super) fn signal_init(c: &Container, signal: i32) -> Result<()> {
    let pidfd = super::start::pidfd_open(c.state.pid)?;
    // Re-check after opening the pidfd: the pid may have been recycled meanwhile.
    if !super::process_alive(c.state.pid, c.state.pid_start) {
        bail!("container not running");
    }
    // SAFETY: pidfd_send_signal with a live pidfd, a signal number and no siginfo.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, std::ptr::null::<libc::siginfo_t>(), 0) };
    if r != 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context(format!("signal {signal} to container init")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("sighup").unwrap(), 1);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("RTMIN+1").unwrap(), libc::SIGRTMIN() + 1);
        assert!(parse_signal("FOO").is_err());
        assert_eq!(parse_signal("0").unwrap(), 0);
        assert!(parse_signal("-1").is_err());
        assert!(parse_signal("100").is_err());
        assert!(parse_signal("RTMIN+2147483647").is_err());
        assert!(parse_signal("RTMAX-2147483647").is_err());
        assert!(parse_signal("RTMIN+99999999999").is_err());
    }
}

//! `start`: release a created container's init so it execs the user's process.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;

use super::{Container, Status, EXEC_FIFO};
use crate::bail;
use crate::error::{Context, Error, Result};

/// Starts the container; returns warnings (a failing poststart hook) for the caller to log.
pub fn start(root: &Path, id: &str) -> Result<Vec<String>> {
    let c = Container::load(root, id)?;
    match c.status() {
        Status::Created => {}
        Status::Stopped => bail!("cannot start a container that has stopped"),
        Status::Running => bail!("cannot start an already running container"),
        s => bail!("cannot start a container in the {s} state"),
    }
    let fifo_path = c.dir.join(EXEC_FIFO);
    let stopped = || Error::new("cannot start a container that has stopped");
    // Init holds exec.fifo open for reading: without a reader (init died) this is ENXIO.
    let fifo = match open(&fifo_path, OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(f) => f,
        Err(nix::errno::Errno::ENXIO) => return Err(stopped()),
        Err(e) => return Err(Error::from(e).context("open exec.fifo")),
    };
    let pidfd = pidfd_open(c.state.pid)?;
    match nix::unistd::write(&fifo, b"0") {
        Ok(1) => {}
        Ok(_) | Err(nix::errno::Errno::EPIPE) => return Err(stopped()),
        Err(e) => return Err(Error::from(e).context("write exec.fifo")),
    }
    // Wait until init no longer holds exec.fifo: it is close-on-exec, so that happens when
    // the user's process has been exec'd (after startContainer hooks) — or init died. A
    // pipe without readers reports POLLERR to its writer.
    let unread = || {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fifo), libc::FIONREAD, &mut n) };
        if r == 0 {
            n
        } else {
            0
        }
    };
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::empty()), PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::from(e).context("wait for container init")),
        }
        let gone = fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP));
        let died = fds[1].revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
        if gone || died {
            break;
        }
    }
    // Init died before taking the byte: the user's process never started.
    if unread() > 0 {
        return Err(stopped());
    }
    std::fs::remove_file(&fifo_path).ctx("remove exec.fifo")?;
    log::debug!("start {id}: init {} runs the user's process", c.state.pid);
    let poststart = c.state.hook_list(|h| h.poststart());
    if poststart.is_empty() {
        return Ok(Vec::new());
    }
    // A failing poststart hook is a warning, and the others still run (see crate::hooks).
    Ok(crate::hooks::run_all("poststart", &poststart, &c.state.hook_json("running", Some(c.state.pid))))
}

/// A pidfd for `pid` (pid reuse cannot redirect our signals or waits).
pub fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context(format!("pidfd_open {pid}")));
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits up to `timeout_ms` for the process behind `pidfd` to exit; true if it did.
pub fn pidfd_wait(pidfd: &OwnedFd, timeout_ms: u16) -> bool {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::from(timeout_ms)), Ok(n) if n > 0)
}

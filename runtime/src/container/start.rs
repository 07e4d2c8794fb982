//! `start`: release a created container's init so it execs the user's process.

use std::io::Read;
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
    // O_RDWR never blocks on a fifo; init's blocked open(O_WRONLY) returns once we hold it.
    let fifo = open(&fifo_path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).ctx("open exec.fifo")?;
    let pidfd = pidfd_open(c.state.pid)?;
    // If init dies instead of writing, its pidfd becomes readable and we stop waiting.
    let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN), PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::from(e).context("wait for container init")),
        }
    }
    let fifo_ready = fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
    if !fifo_ready {
        bail!("cannot start a container that has stopped");
    }
    let mut b = [0u8; 1];
    std::fs::File::from(fifo).read_exact(&mut b).ctx("read exec.fifo")?;
    std::fs::remove_file(&fifo_path).ctx("remove exec.fifo")?;
    let mut warnings = Vec::new();
    let poststart = c.state.hook_list(|h| h.poststart());
    if !poststart.is_empty() {
        let state = c.state.hook_json("running", Some(c.state.pid));
        if let Err(e) = crate::hooks::run("poststart", &poststart, &state) {
            warnings.push(e.to_string());
        }
    }
    Ok(warnings)
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

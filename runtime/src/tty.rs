//! `process.terminal`: init opens a pty in the container's own devpts, makes the slave
//! its controlling terminal and stdio, binds it on /dev/console, and sends the master to
//! `--console-socket` with SCM_RIGHTS (the data part says "/dev/ptmx", as runc sends).

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::stat::Mode;

use crate::error::{Context, Error, Result};

/// A socketpair whose first end receives the pty master when capsa itself holds the
/// terminal (`run`/`exec` with a tty and no --console-socket).
pub fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).ctx("socketpair")
}

/// Sends `fd` over the unix socket `sock`, with `name` as the data bytes.
pub fn send_fd(sock: BorrowedFd<'_>, name: &str, fd: BorrowedFd<'_>) -> Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).ctx("send pty master to console socket")?;
    Ok(())
}

/// Receives one fd sent with [`send_fd`].
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).ctx("receive pty master")?;
    for c in msg.cmsgs().ctx("receive pty master")? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this fd in our table for us alone.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(Error::new("console socket: no file descriptor received"))
}

/// In init, after pivot_root: the pty becomes the process's terminal.
/// `bind_console`: also bind the pty on /dev/console (init does, `exec` does not).
pub fn setup_console(console_socket: BorrowedFd<'_>, size: Option<(u16, u16)>, bind_console: bool) -> Result<()> {
    let master_fd = open("/dev/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty()).ctx("terminal: open /dev/ptmx")?;
    let master = master_fd;
    // A devpts instance mounted with ptmxmode needs no grantpt; unlock the slave.
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context("terminal: unlock pty"));
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int into `n`.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } != 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context("terminal: TIOCGPTN"));
    }
    let slave_path = format!("/dev/pts/{n}");
    if let Some((h, w)) = size {
        let ws = libc::winsize { ws_row: h, ws_col: w, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one winsize struct.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let slave = open(slave_path.as_str(), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
        .with_ctx(|| format!("terminal: open {slave_path}"))?;

    // /dev/console is the terminal too (as in runc); ignore a rootfs without /dev.
    if bind_console && std::path::Path::new("/dev").is_dir() {
        if std::fs::symlink_metadata("/dev/console").is_err() {
            let _ = std::fs::File::create("/dev/console");
        }
        mount(Some(slave_path.as_str()), "/dev/console", None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .ctx("terminal: bind /dev/console")?;
    }

    send_fd(console_socket, "/dev/ptmx", master.as_fd())?;
    drop(master);

    for target in 0..=2 {
        // SAFETY: dup2 onto stdio numbers; the old stdio fds are meant to be replaced.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(Error::from(std::io::Error::last_os_error()).context("terminal: dup2"));
        }
    }
    // SAFETY: TIOCSCTTY on our own stdin with argument 0.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context("terminal: TIOCSCTTY"));
    }
    Ok(())
}

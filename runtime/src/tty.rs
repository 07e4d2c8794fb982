//! `process.terminal`: init opens a pty in the container's own devpts, makes the slave
//! its controlling terminal and stdio, binds it on /dev/console, and sends the master to
//! `--console-socket` with SCM_RIGHTS (the data part says "/dev/ptmx", as runc sends).

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use capsa_sys::{Follow, Root};
use nix::fcntl::OFlag;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::stat::{fstat, makedev, SFlag};
use nix::sys::statfs::{fstatfs, DEVPTS_SUPER_MAGIC};

use crate::bail;
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

/// Opens the pty multiplexer of the container's devpts and checks it is one: the image
/// controls `/dev` when it is not a fresh tmpfs, and `/dev/pts/ptmx` or `/dev/ptmx` could
/// be a symlink or a bind of anything (CVE-2025-52565).
fn open_ptmx(root: &Root) -> Result<OwnedFd> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY;
    let ptmx = makedev(5, 2);
    let first = root.open_at(Path::new("/dev/pts/ptmx"), flags, Follow::Never);
    let fd = match first {
        Ok(fd) => {
            if fstatfs(fd.as_fd()).ctx("terminal: statfs /dev/pts/ptmx")?.filesystem_type() != DEVPTS_SUPER_MAGIC {
                bail!("terminal: /dev/pts/ptmx is not on a devpts filesystem");
            }
            fd
        }
        // A host /dev bound in has a ptmxmode=000 devpts: use the /dev/ptmx node.
        Err(_) => root.open_at(Path::new("/dev/ptmx"), flags, Follow::Never).ctx("terminal: open /dev/pts/ptmx or /dev/ptmx")?,
    };
    let st = fstat(fd.as_fd()).ctx("terminal: stat ptmx")?;
    if capsa_sys::root::kind(&st) != SFlag::S_IFCHR || st.st_rdev != ptmx {
        bail!("terminal: the container's ptmx is not the pty multiplexer (char 5:2)");
    }
    Ok(fd)
}

/// In init, after pivot_root: the pty becomes the process's terminal.
/// `bind_console`: also bind the pty on /dev/console (init does, `exec` does not).
pub fn setup_console(console_socket: BorrowedFd<'_>, size: Option<(u16, u16)>, bind_console: bool) -> Result<()> {
    let root = Root::open(Path::new("/")).ctx("terminal: open /")?;
    let master = open_ptmx(&root)?;
    // A devpts instance mounted with ptmxmode needs no grantpt; unlock the slave.
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context("terminal: unlock pty"));
    }
    if let Some((h, w)) = size {
        let ws = libc::winsize { ws_row: h, ws_col: w, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one winsize struct.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    // The slave straight from the master, not by a /dev/pts/N path the image could fake.
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd we own.
    let raw = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context("terminal: open the pty slave (TIOCGPTPEER)"));
    }
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    let slave = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };

    // /dev/console is the terminal too (as in runc); ignore a rootfs without /dev.
    if bind_console {
        match root.open_path(Path::new("/dev"), Follow::Never) {
            Ok(_) => {
                let target = root
                    .create_file(Path::new("/dev/console"), 0o666, Follow::Never)
                    .ctx("terminal: /dev/console (must not be a symlink)")?;
                let tree = capsa_sys::mount::clone_tree(slave.as_fd(), false).ctx("terminal: bind the pty")?;
                capsa_sys::mount::attach(tree.as_fd(), target.as_fd()).ctx("terminal: bind /dev/console")?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(Error::from(e).context("terminal: /dev (must not be a symlink)")),
        }
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

/// Our own terminal (stdin) in raw mode while we proxy a container's tty (`capsa run`,
/// capsactl attach); the previous mode comes back on drop. Without a terminal it does nothing.
pub struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    pub fn enter() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        match tcgetattr(&stdin) {
            Ok(orig) => {
                let mut raw = orig.clone();
                cfmakeraw(&mut raw);
                let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
                RawMode(Some(orig))
            }
            Err(_) => RawMode(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, orig);
        }
    }
}

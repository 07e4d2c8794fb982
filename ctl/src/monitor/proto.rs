//! The monitor's socket protocol: `SOCK_SEQPACKET` (message boundaries kept), one short
//! text message per packet (a verb and space-separated arguments), file descriptors
//! alongside with `SCM_RIGHTS`.
//!
//! | from      | message                    | fds                    | meaning                               |
//! |-----------|----------------------------|------------------------|---------------------------------------|
//! | monitor   | `note MESSAGE`             |                        | a warning for the user, before `started` |
//! | monitor   | `started PID`              |                        | the container runs (to `run`/`start`)  |
//! | monitor   | `error CODE MESSAGE`       |                        | it could not start                    |
//! | client    | `attach IN OUT ERR`        | stdin?, stdout?, stderr? (1 = given) | copy the container's stdio to/from these |
//! | client    | `resize ROWS COLS`         |                        | the client's terminal size changed    |
//! | client    | `signal N`                 |                        | send signal N to the container        |
//! | client    | `wait`                     |                        | answer `exit CODE` at the next exit   |
//! | client    | `stop`                     |                        | a user stop: no more restarts         |
//! | monitor   | `exit CODE`                |                        | the container exited (recorded)       |
//! | monitor   | `detached`                 |                        | the detach keys were typed            |
//! | monitor   | `ok`                       |                        | request done                          |

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr};

/// The longest message.
pub const MAX: usize = 4096;

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socket::socketpair(socket::AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(errno)
}

pub fn send(sock: BorrowedFd<'_>, msg: &str, fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(msg.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// One message and the fds that came with it; None at end of stream.
pub fn recv(sock: BorrowedFd<'_>) -> io::Result<Option<(String, Vec<OwnedFd>)>> {
    let mut buf = [0u8; MAX];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let r = socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC);
        let msg = match r {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECONNRESET) => return Ok(None),
            Err(e) => return Err(errno(e)),
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(errno)? {
            if let ControlMessageOwned::ScmRights(v) = c {
                // SAFETY: the kernel just installed these fds for us; nobody else owns them.
                fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let n = msg.bytes;
        if n == 0 && fds.is_empty() {
            return Ok(None);
        }
        return Ok(Some((String::from_utf8_lossy(&buf[..n]).into_owned(), fds)));
    }
}

/// A path for `sun_path` (108 bytes): long ones are reached through our own fd on their
/// directory (`/proc/self/fd/N/NAME`), as conmon does.
fn addr(path: &Path) -> io::Result<(UnixAddr, Option<OwnedFd>)> {
    if path.as_os_str().len() < 100 {
        return Ok((UnixAddr::new(path).map_err(errno)?, None));
    }
    let dir = path.parent().ok_or_else(|| io::Error::other("socket path without a directory"))?;
    let name = path.file_name().ok_or_else(|| io::Error::other("socket path without a name"))?;
    let d = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(errno)?;
    let p = Path::new("/proc/self/fd").join(d.as_raw_fd().to_string()).join(name);
    Ok((UnixAddr::new(&p).map_err(errno)?, Some(d)))
}

/// Listens on `path` (replacing a stale socket file).
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let _ = std::fs::remove_file(path);
    let s = socket::socket(socket::AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .map_err(errno)?;
    let (a, _dir) = addr(path)?;
    socket::bind(s.as_raw_fd(), &a).map_err(errno)?;
    socket::listen(&s, socket::Backlog::new(64).map_err(errno)?).map_err(errno)?;
    Ok(s)
}

pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let s = socket::socket(socket::AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).map_err(errno)?;
    let (a, _dir) = addr(path)?;
    socket::connect(s.as_raw_fd(), &a).map_err(errno)?;
    Ok(s)
}

/// Accepts one pending connection (None if there is none).
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    match socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
        // SAFETY: accept4 returned a new fd that we own.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::ECONNABORTED) | Err(nix::errno::Errno::EINTR) => Ok(None),
        Err(e) => Err(errno(e)),
    }
}

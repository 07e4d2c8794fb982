//! Console sockets and pty readers for terminal tests.

use std::fs;
use std::io::Read;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::*;

/// The receiving end of `--console-socket`: a listening unix socket in the test dir that accepts
/// one connection and receives the pty master over SCM_RIGHTS.
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> Self {
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind console socket");
        listener.set_nonblocking(true).expect("nonblocking");
        ConsoleSocket { path: path.to_path_buf(), listener }
    }

    /// Accept the runtime's connection and receive the pty master fd (within `timeout`).
    #[track_caller]
    pub fn recv_master(&self, timeout: Duration) -> std::os::fd::OwnedFd {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let (stream, _) = poll(timeout, "the runtime to connect to the console socket", || self.listener.accept().ok());
        stream.set_nonblocking(false).expect("blocking");
        stream.set_read_timeout(Some(timeout)).expect("rcvtimeo");
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let msg =
            recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC).expect("recvmsg on console socket");
        let mut fds = vec![];
        for c in msg.cmsgs().expect("cmsgs") {
            if let ControlMessageOwned::ScmRights(v) = c {
                fds.extend(v);
            }
        }
        assert_eq!(fds.len(), 1, "expected exactly one fd over the console socket, got {fds:?}");
        // SAFETY: the fd was just received via SCM_RIGHTS and is owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fds[0]) }
    }
}

/// Read everything from a pty master in a background thread until EOF/EIO; poll with
/// [`PtyReader::wait_for`].
pub struct PtyReader {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl PtyReader {
    pub fn spawn(master: std::os::fd::OwnedFd) -> Self {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut f = fs::File::from(master);
            let mut chunk = [0u8; 4096];
            loop {
                match f.read(&mut chunk) {
                    Ok(0) | Err(_) => break, // EIO once the last slave fd is closed
                    Ok(n) => b.lock().expect("pty buf").extend_from_slice(&chunk[..n]),
                }
            }
        });
        PtyReader { buf }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().expect("pty buf")).replace('\r', "")
    }

    #[track_caller]
    pub fn wait_for(&self, needle: &str) -> String {
        poll(POLL_TIMEOUT, &format!("pty output to contain {needle:?}"), || {
            let t = self.text();
            t.contains(needle).then_some(t)
        })
    }
}

//! The typed protocol between `capsa create` (the parent) and the processes it forks,
//! over one `SOCK_SEQPACKET` socketpair (message boundaries are kept by the kernel).
//!
//! Two children take part: *stage 1* joins or creates the namespaces and forks *init*,
//! which becomes the container's pid 1 and later execs the user's process.
//!
//! | step | from → to        | message          | meaning                                                 |
//! |------|------------------|------------------|---------------------------------------------------------|
//! | 1    | parent → stage 1 | `Go`             | stage 1 is in the container's cgroups: it may unshare    |
//! | 2    | stage 1 → parent | `MapIds`         | (new user namespace only) write stage 1's uid/gid maps   |
//! | 3    | parent → stage 1 | `IdsMapped`      | the maps are written                                     |
//! | 4    | stage 1 → parent | `InitPid(pid)`   | init is forked (host pid); stage 1 exits                 |
//! | 4'   | parent → init    | `Go`             | init may start (nothing it sends can overtake InitPid)   |
//! | 4a   | init → parent    | `Hooks`          | (only with hooks) mounts done: run prestart, createRuntime |
//! | 4b   | parent → init    | `HooksDone(s)`   | they ran; `s` is the state JSON for createContainer/start  |
//! | 4c   | init → parent    | `NotifyFd` + fd  | (SCMP_ACT_NOTIFY only) the seccomp listener fd follows    |
//! | 5    | init → parent    | `Ready`          | init is set up and blocks on exec.fifo until `start`     |
//! | any  | child → parent   | `Error(msg)`     | setup failed, `msg` says why; the child exits with 1     |
//!
//! A child that dies without `Error` shows up as end-of-file on the parent's side.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{recv, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use crate::error::{Context, Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Go,
    MapIds,
    IdsMapped,
    InitPid(i32),
    Ready,
    Error(String),
    Hooks,
    HooksDone(String),
    NotifyFd,
}

const MAX_MSG: usize = 64 * 1024;

impl Msg {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8);
        match self {
            Msg::Go => out.push(1),
            Msg::MapIds => out.push(2),
            Msg::IdsMapped => out.push(3),
            Msg::InitPid(pid) => {
                out.push(4);
                out.extend_from_slice(&pid.to_le_bytes());
            }
            Msg::Ready => out.push(5),
            Msg::Error(s) | Msg::HooksDone(s) => {
                out.push(if matches!(self, Msg::Error(_)) { 6 } else { 8 });
                let b = s.as_bytes();
                out.extend_from_slice(&b[..b.len().min(MAX_MSG - 1)]);
            }
            Msg::Hooks => out.push(7),
            Msg::NotifyFd => out.push(9),
        }
        out
    }

    fn decode(b: &[u8]) -> Option<Msg> {
        let (&tag, rest) = b.split_first()?;
        Some(match tag {
            1 => Msg::Go,
            2 => Msg::MapIds,
            3 => Msg::IdsMapped,
            4 => Msg::InitPid(i32::from_le_bytes(rest.try_into().ok()?)),
            5 => Msg::Ready,
            6 => Msg::Error(String::from_utf8_lossy(rest).into_owned()),
            7 => Msg::Hooks,
            8 => Msg::HooksDone(String::from_utf8_lossy(rest).into_owned()),
            9 => Msg::NotifyFd,
            _ => return None,
        })
    }
}

/// One end of the socketpair.
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// Returns (parent end, child end), both close-on-exec.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).ctx("socketpair")?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Sends with plain write(2): after a seccomp filter is loaded, init's last messages
    /// must only need syscalls every program needs.
    pub fn send(&self, m: &Msg) -> Result<()> {
        let b = m.encode();
        nix::unistd::write(&self.fd, &b).ctx("sync: send")?;
        Ok(())
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// Receives one message; `None` when the other side closed.
    pub fn recv(&self) -> Result<Option<Msg>> {
        let mut buf = vec![0u8; MAX_MSG];
        loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => return Msg::decode(&buf[..n]).map(Some).ok_or_else(|| Error::new("sync: malformed message")),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::from(e).context("sync: recv")),
            }
        }
    }

    /// Receives one message and insists it is `want`; a child's `Error` becomes ours.
    pub fn expect(&self, want: &Msg) -> Result<()> {
        match self.recv()? {
            Some(m) if &m == want => Ok(()),
            Some(Msg::Error(e)) => Err(Error::new(e)),
            Some(m) => Err(Error::new(format!("sync: expected {want:?}, got {m:?}"))),
            None => Err(Error::new(format!("sync: peer closed while waiting for {want:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (a, b) = Channel::pair().unwrap();
        for m in [
            Msg::Go,
            Msg::MapIds,
            Msg::IdsMapped,
            Msg::InitPid(4242),
            Msg::Ready,
            Msg::Error("boom".into()),
            Msg::Hooks,
            Msg::HooksDone("{}".into()),
            Msg::NotifyFd,
        ] {
            a.send(&m).unwrap();
            assert_eq!(b.recv().unwrap(), Some(m));
        }
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }
}

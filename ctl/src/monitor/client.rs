//! The client side of the monitor's socket: one-shot requests (`stop`, `wait`), and an
//! attached session (`run` in the foreground, `start -a`, `attach`): our terminal in raw
//! mode when the container has one, its size sent on every SIGWINCH, signals forwarded
//! (docker's --sig-proxy) when it has none, until the monitor says `exit CODE`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::proto;

/// Connects to a container's monitor.
pub fn connect(dir: &Path) -> std::io::Result<OwnedFd> {
    proto::connect(&super::socket_path(dir))
}

/// Sends one request and returns the answer (None: no answer before the monitor closed).
pub fn request(dir: &Path, msg: &str) -> std::io::Result<Option<String>> {
    let s = connect(dir)?;
    proto::send(s.as_fd(), msg, &[])?;
    Ok(proto::recv(s.as_fd())?.map(|(m, _)| m))
}

/// How an attached session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Exit(i32),
    Detached,
    /// The monitor went away without an answer (killed).
    Lost,
}

/// Our terminal's size, if stdout (or stdin) is one.
pub fn term_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    for fd in [1, 0] {
        // SAFETY: TIOCGWINSZ writes one winsize into ws.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// Attaches our stdio to the container through `sock` (already connected; `send_attach`:
/// ask for it, else the monitor has our stdio from the start) until it exits.
pub fn session(sock: &OwnedFd, send_attach: Option<(bool, bool, bool)>, tty: bool, sig_proxy: bool) -> std::io::Result<End> {
    if let Some((i, o, e)) = send_attach {
        let mut fds = Vec::new();
        for (want, fd) in [(i, 0), (o, 1), (e, 2)] {
            if want {
                fds.push(fd);
            }
        }
        let msg = format!("attach {} {} {}", i as u8, o as u8, e as u8);
        proto::send(sock.as_fd(), &msg, &fds)?;
        match proto::recv(sock.as_fd())? {
            Some((m, _)) if m == "ok" => {}
            Some((m, _)) if m.starts_with("exit ") => return Ok(End::Exit(m[5..].trim().parse().unwrap_or(0))),
            Some((m, _)) => return Err(std::io::Error::other(format!("attach: {m}"))),
            None => return Ok(End::Lost),
        }
    }
    let mut sigs = SigSet::empty();
    for s in capsa::container::foreground::forwarded().iter() {
        if s != Signal::SIGCHLD {
            sigs.add(s);
        }
    }
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigs), Some(&mut old)).map_err(std::io::Error::from)?;
    let sfd = SignalFd::with_flags(&sigs, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(std::io::Error::from)?;
    let _raw = if tty { Some(capsa::tty::RawMode::enter()) } else { None };
    if tty {
        if let Some((r, c)) = term_size() {
            let _ = proto::send(sock.as_fd(), &format!("resize {r} {c}"), &[]);
        }
    }
    let end = loop {
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN), PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => break Err(std::io::Error::from(e)),
        }
        let (sock_ready, sig_ready) = (fds[0].revents().is_some_and(|r| !r.is_empty()), fds[1].revents().is_some_and(|r| !r.is_empty()));
        if sig_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGWINCH {
                    if let (true, Some((r, c))) = (tty, term_size()) {
                        let _ = proto::send(sock.as_fd(), &format!("resize {r} {c}"), &[]);
                    }
                } else if sig_proxy && !tty {
                    let _ = proto::send(sock.as_fd(), &format!("signal {sig}"), &[]);
                } else if sig == libc::SIGINT || sig == libc::SIGTERM || sig == libc::SIGHUP {
                    // A terminal session: the user leaves; the container goes on.
                    break;
                }
            }
        }
        if sock_ready {
            match proto::recv(sock.as_fd()) {
                Ok(Some((m, _))) => {
                    if let Some(c) = m.strip_prefix("exit ") {
                        break Ok(End::Exit(c.trim().parse().unwrap_or(0)));
                    }
                    if m == "detached" {
                        break Ok(End::Detached);
                    }
                }
                Ok(None) | Err(_) => break Ok(End::Lost),
            }
        }
    };
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    end
}

//! Child reaping for a subreaper that also runs commands.
//!
//! The shim is a child subreaper: container inits (re-parented to us when the runtime's
//! `create`/`exec` exits), the runtime commands we exec and logging binaries all end up as our
//! children. A SIGCHLD handler writes a byte to a socket the event loop (`reactor.rs`) watches
//! (signal-hook's self-pipe); the loop alone calls `waitpid(-1)`; nobody else ever waits (std's
//! `Child::wait` would race it and get ECHILD). Every exit is matched to a registered waiter by
//! pid; waiters only send on a channel, so the loop never blocks. Not a signalfd: that needs
//! SIGCHLD blocked, and std passes the blocked mask on to every child — the runtime, and through
//! it the container's processes.
//!
//! Two races are closed here:
//! - a command we spawn exits before we register for it: [`Reaper::spawn`] registers the waiter
//!   while holding the lock the loop needs to deliver the exit;
//! - a container process (whose pid we learn only from the runtime's `--pid-file` after the
//!   runtime exited) exits before we learn its pid: exits of unknown pids are kept while a
//!   [`Watch`] is open, tagged with a sequence number so that a stale exit of an earlier process
//!   with the same pid is never taken for the new one.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::reactor::{Events, Reactor, Source};

type Callback = Box<dyn FnOnce(i32) + Send>;

#[derive(Default)]
struct Inner {
    waiters: HashMap<i32, Callback>,
    /// pid -> (exit code, sequence number of the exit)
    unclaimed: HashMap<i32, (i32, u64)>,
    watches: usize,
    seq: u64,
}

pub struct Reaper {
    inner: Mutex<Inner>,
    /// Readable after SIGCHLD (the handler writes a byte to its peer).
    sigchld: UnixStream,
}

/// While alive, exits of pids nobody waits for are kept for [`Reaper::claim`].
pub struct Watch {
    reaper: Arc<Reaper>,
    start_seq: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut inner = self.reaper.lock();
        inner.watches = inner.watches.saturating_sub(1);
        if inner.watches == 0 {
            inner.unclaimed.clear();
        }
    }
}

/// Exit code the way containerd reports it: the status, or 128 + signal.
pub fn exit_code(status: WaitStatus) -> Option<(i32, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as i32)),
        _ => None,
    }
}

impl Reaper {
    /// A reaper whose SIGCHLD socket the caller registers with the event loop
    /// ([`Reaper::register`]).
    pub fn new() -> io::Result<Reaper> {
        let (r, w) = UnixStream::pair()?;
        r.set_nonblocking(true)?;
        w.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(libc::SIGCHLD, w)?;
        Ok(Reaper { inner: Mutex::new(Inner::default()), sigchld: r })
    }

    pub fn register(self: &Arc<Self>, reactor: &Reactor) -> io::Result<()> {
        reactor.add(self.sigchld.as_fd(), Events::EPOLLIN, Arc::clone(self) as Arc<dyn Source>)?;
        // A child that exited before the registration is reaped now.
        self.reap_all();
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a callback panicked; the maps are still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reap_all(&self) {
        loop {
            match waitpid(Some(Pid::from_raw(-1)), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    if let Some((pid, code)) = exit_code(status) {
                        self.deliver(pid, code);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    fn deliver(&self, pid: i32, code: i32) {
        let cb = {
            let mut inner = self.lock();
            inner.seq += 1;
            let seq = inner.seq;
            match inner.waiters.remove(&pid) {
                Some(cb) => Some(cb),
                None => {
                    if inner.watches > 0 {
                        inner.unclaimed.insert(pid, (code, seq));
                    }
                    None
                }
            }
        };
        if let Some(cb) = cb {
            cb(code);
        }
    }

    /// Spawn `cmd`; the returned receiver gets its exit code.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, std::sync::mpsc::Receiver<i32>)> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut inner = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        // Any unclaimed entry for this pid predates the spawn (we hold the lock): stale.
        inner.unclaimed.remove(&pid);
        inner.waiters.insert(
            pid,
            Box::new(move |code| {
                let _ = tx.send(code);
            }),
        );
        Ok((child, rx))
    }

    /// Keep exits of not-yet-known pids from now on, until the returned guard is dropped.
    pub fn watch(self: &Arc<Self>) -> Watch {
        let mut inner = self.lock();
        inner.watches += 1;
        Watch { reaper: Arc::clone(self), start_seq: inner.seq }
    }

    /// Call `cb` with the exit code of `pid`: now if it already exited after `watch` began,
    /// else when it exits. Returns true if it had already exited.
    pub fn claim(&self, pid: i32, watch: &Watch, cb: impl FnOnce(i32) + Send + 'static) -> bool {
        let early = {
            let mut inner = self.lock();
            match inner.unclaimed.remove(&pid) {
                Some((code, seq)) if seq > watch.start_seq => Some(code),
                _ => {
                    inner.waiters.insert(pid, Box::new(cb));
                    return false;
                }
            }
        };
        if let Some(code) = early {
            cb(code);
        }
        true
    }
}

impl Source for Reaper {
    fn ready(&self, _reactor: &Reactor, _token: u64, _events: Events) {
        // Signals coalesce: drain the wake-ups, then reap every child that is done.
        let mut buf = [0u8; 64];
        while matches!((&self.sigchld).read(&mut buf), Ok(n) if n > 0) {}
        self.reap_all();
    }
}

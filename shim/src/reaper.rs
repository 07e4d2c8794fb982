//! Child reaping for a subreaper that also runs commands.
//!
//! The shim is a child subreaper: container inits (re-parented to us when the runtime's
//! `create`/`exec` exits), the runtime commands we exec and logging binaries all end up as our
//! children. One thread owns `waitpid(-1)`; nobody else ever waits (std's `Child::wait` would race
//! it and get ECHILD). Every exit is matched to a registered waiter by pid.
//!
//! Two races are closed here:
//! - a command we spawn exits before we register for it: [`Reaper::spawn`] registers the waiter
//!   while holding the lock the reaper thread needs to deliver the exit;
//! - a container process (whose pid we learn only from the runtime's `--pid-file` after the
//!   runtime exited) exits before we learn its pid: exits of unknown pids are kept while a
//!   [`Watch`] is open, tagged with a sequence number so that a stale exit of an earlier process
//!   with the same pid is never taken for the new one.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

type Callback = Box<dyn FnOnce(i32) + Send>;

#[derive(Default)]
struct Inner {
    waiters: HashMap<i32, Callback>,
    /// pid -> (exit code, sequence number of the exit)
    unclaimed: HashMap<i32, (i32, u64)>,
    watches: usize,
    seq: u64,
}

#[derive(Default)]
pub struct Reaper {
    inner: Mutex<Inner>,
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
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a callback panicked; the maps are still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start the thread that reaps every child on SIGCHLD. Must run before any child is spawned.
    pub fn start(self: &Arc<Self>) -> io::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([libc::SIGCHLD])?;
        let me = Arc::clone(self);
        std::thread::Builder::new().name("reaper".into()).spawn(move || {
            for _ in signals.forever() {
                me.reap_all();
            }
        })?;
        Ok(())
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

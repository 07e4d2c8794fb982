//! The shim's one event loop: a level-triggered epoll over every fd the shim waits on — the
//! ttrpc listener and connections, SIGCHLD (a signalfd), the stdio streams it copies and the
//! OOM notifications of every container. It runs on the main thread; nothing that blocks runs
//! here (requests that run the runtime binary go to the worker pool, see `server.rs`).
//!
//! A [`Source`] is registered per fd under a token; a source with two fds (a stream waiting for
//! its destination to drain) registers itself twice. Sources deregister themselves (`remove`)
//! before closing their fds, so a token never outlives its fd; tokens are never reused, so an
//! event already fetched for a removed token is simply dropped.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

pub use nix::sys::epoll::EpollFlags as Events;

/// Something the loop calls when one of its fds is ready.
pub trait Source: Send + Sync {
    /// `token` says which of the source's fds is ready; `events` what it is ready for.
    fn ready(&self, reactor: &Reactor, token: u64, events: EpollFlags);
}

/// Token of the loop's own wake-up eventfd.
const WAKE: u64 = 0;

pub struct Reactor {
    epoll: Epoll,
    wake: EventFd,
    sources: Mutex<HashMap<u64, Arc<dyn Source>>>,
    next: AtomicU64,
    stop: AtomicBool,
}

impl Reactor {
    pub fn new() -> io::Result<Reactor> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        epoll.add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        Ok(Reactor { epoll, wake, sources: Mutex::new(HashMap::new()), next: AtomicU64::new(WAKE + 1), stop: AtomicBool::new(false) })
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<dyn Source>>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watch `fd` for `events` (level-triggered); returns the token `src` will be called with.
    pub fn add(&self, fd: impl AsFd, events: EpollFlags, src: Arc<dyn Source>) -> io::Result<u64> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        // Registered before the fd is added, so that an immediate event finds its source.
        self.sources().insert(token, src);
        if let Err(e) = self.epoll.add(fd, EpollEvent::new(events, token)) {
            self.sources().remove(&token);
            return Err(e.into());
        }
        Ok(token)
    }

    /// Change what `fd` (registered under `token`) is watched for; empty events pause it.
    pub fn modify(&self, fd: impl AsFd, token: u64, events: EpollFlags) -> io::Result<()> {
        let mut ev = EpollEvent::new(events, token);
        Ok(self.epoll.modify(fd, &mut ev)?)
    }

    /// Stop watching `fd`; call before closing it.
    pub fn remove(&self, fd: impl AsFd, token: u64) {
        let _ = self.epoll.delete(fd);
        self.sources().remove(&token);
    }

    /// Make [`Reactor::run`] return (from any thread).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.write(1);
    }

    /// Dispatch events until [`Reactor::stop`].
    pub fn run(&self) -> io::Result<()> {
        let mut events = [EpollEvent::empty(); 64];
        while !self.stop.load(Ordering::SeqCst) {
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            for ev in &events[..n] {
                let token = ev.data();
                if token == WAKE {
                    let _ = self.wake.read();
                    continue;
                }
                let src = self.sources().get(&token).cloned();
                if let Some(src) = src {
                    src.ready(self, token, ev.events());
                }
            }
        }
        Ok(())
    }
}

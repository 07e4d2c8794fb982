//! Serialising commands on one container id across processes: an exclusive `flock` on
//! the container's state directory, held for the whole command.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Context, Result};

/// Held while a command works on a container; released when dropped.
pub struct Lock {
    _flock: Flock<File>,
}

impl Lock {
    /// Blocks until no other capsa process holds the lock on `dir`.
    pub fn acquire(dir: &Path) -> Result<Lock> {
        let f = File::open(dir).with_ctx(|| format!("lock {}", dir.display()))?;
        let flock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_ctx(|| format!("lock {}", dir.display()))?;
        let _ = flock.as_fd();
        Ok(Lock { _flock: flock })
    }
}

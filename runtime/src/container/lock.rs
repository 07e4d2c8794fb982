//! Serialising commands on one container id across processes: a POSIX write lock on
//! `<root>/<id>/.lock`, held for the whole command.
//!
//! A POSIX (fcntl) lock, not flock: it belongs to the process and is not inherited by the
//! children `create` forks, so a container's init never holds it, and it goes away with a
//! `create` that was killed half-way.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Context, Error, Result};

/// Held while a command works on a container; released when dropped or when the process ends.
pub struct Lock {
    _file: File,
}

pub const LOCK_FILE: &str = ".lock";

impl Lock {
    /// Blocks until no other capsa process holds the lock of the container in `dir`.
    pub fn acquire(dir: &Path) -> Result<Lock> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_ctx(|| format!("lock {}", dir.display()))?;
        // SAFETY: flock is plain data; zeroed then filled in.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        loop {
            // SAFETY: F_SETLKW reads one flock struct that lives for the call.
            if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLKW, &fl) } == 0 {
                return Ok(Lock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::from(e).context(format!("lock {}", dir.display())));
            }
        }
    }
}

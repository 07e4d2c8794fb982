//! A handle on procfs for the writes the runtime makes there (sysctls, oom_score_adj, LSM
//! attributes, ...), which an attacker inside the container must not be able to redirect
//! (CVE-2025-52881): by making `/proc` a symlink, by mounting something over
//! `/proc/sys/kernel/...`, or by swapping the path between a check and the write.
//!
//! [`ProcFs::new`] takes, in order of preference:
//! 1. a private procfs instance (`fsopen("proc")` + `fsmount`), attached nowhere, so no
//!    mount of the container's can cover any of its files;
//! 2. a non-recursive clone of the mount at `/proc` (`open_tree`): its over-mounts are left
//!    behind;
//! 3. `/proc` itself, opened without following any symlink.
//!
//! Each is verified to be the root of a procfs (`fstatfs` magic and root inode), and files
//! below it are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_XDEV |
//! RESOLVE_NO_SYMLINKS)` and checked to be on procfs again.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::fstat;
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};

use crate::other;

/// procfs's root directory inode number (`PROC_ROOT_INO`).
const PROC_ROOT_INO: u64 = 1;

/// A verified procfs root.
#[derive(Debug)]
pub struct ProcFs {
    fd: OwnedFd,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// True when `fd` is on procfs.
pub fn is_procfs(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(fstatfs(fd).map_err(errno)?.filesystem_type() == PROC_SUPER_MAGIC)
}

impl ProcFs {
    /// The best handle this process can get (see the module comment).
    pub fn new() -> io::Result<ProcFs> {
        if let Ok(fd) = crate::mount::new_fs("proc", &[], crate::mount::MOUNT_ATTR_NOSUID | crate::mount::MOUNT_ATTR_NOEXEC) {
            if let Ok(p) = ProcFs::verify(fd) {
                return Ok(p);
            }
        }
        if let Ok(fd) = crate::mount::clone_tree_at("/proc", false) {
            if let Ok(p) = ProcFs::verify(fd) {
                return Ok(p);
            }
        }
        let root = crate::Root::open(Path::new("/"))?;
        let fd = root.open_at(Path::new("/proc"), OFlag::O_PATH | OFlag::O_DIRECTORY, crate::Follow::Never)?;
        ProcFs::verify(fd)
    }

    /// The procfs at `/proc` of this process's root, reached without following a symlink
    /// and verified (cheaper than [`ProcFs::new`]; what is mounted below it is seen).
    pub fn current() -> io::Result<ProcFs> {
        let root = crate::Root::open(Path::new("/"))?;
        ProcFs::verify(root.open_at(Path::new("/proc"), OFlag::O_PATH | OFlag::O_DIRECTORY, crate::Follow::Never)?)
    }

    /// Uses `fd` if it is the root of a procfs.
    pub fn verify(fd: OwnedFd) -> io::Result<ProcFs> {
        if !is_procfs(fd.as_fd())? {
            return Err(other("not a procfs mount"));
        }
        if fstat(fd.as_fd()).map_err(errno)?.st_ino != PROC_ROOT_INO {
            return Err(other("not the root of a procfs mount"));
        }
        Ok(ProcFs { fd })
    }

    /// Opens `path` (relative, e.g. `sys/net/ipv4/ip_forward`, `1234/oom_score_adj`) below
    /// the procfs root, crossing no mount and following no symlink.
    pub fn open(&self, path: &str, flags: OFlag) -> io::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_XDEV | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = loop {
            match openat2(self.fd.as_fd(), path.trim_start_matches('/'), how) {
                Err(Errno::EAGAIN) => continue,
                r => break r.map_err(errno)?,
            }
        };
        if !is_procfs(fd.as_fd())? {
            return Err(other(format!("/proc/{path}: not on procfs")));
        }
        Ok(fd)
    }

    /// Opens `path` below this process's own directory (`/proc/<pid>/path` as this procfs
    /// numbers us; `self` is a symlink and is not followed).
    pub fn open_self(&self, path: &str, flags: OFlag) -> io::Result<OwnedFd> {
        self.open(&format!("{}/{}", std::process::id(), path.trim_start_matches('/')), flags)
    }

    /// Writes `data` to `path` in one write(2), as procfs expects.
    pub fn write(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let fd = self.open(path, OFlag::O_WRONLY)?;
        let n = nix::unistd::write(&fd, data).map_err(errno)?;
        if n != data.len() {
            return Err(other(format!("/proc/{path}: short write")));
        }
        Ok(())
    }

    /// Reads `path` (at most 1 MiB).
    pub fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let fd = self.open(path, OFlag::O_RDONLY)?;
        let mut out = Vec::new();
        std::fs::File::from(fd).take(1 << 20).read_to_end(&mut out)?;
        Ok(out)
    }
}

/// Opens the file an `O_PATH` fd names for real I/O (`flags`), through this process's own
/// `/proc/PID/fd/N`: the same inode, whatever has been renamed since. The procfs is looked up
/// afresh each time (a cached one could belong to another pid namespace after a fork).
pub fn reopen(fd: BorrowedFd<'_>, flags: OFlag) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let proc = ProcFs::current().or_else(|_| ProcFs::new())?;
    // `PID/fd` are procfs directories; the last component is the magic link to our own fd,
    // which must be followed (so no openat2 restrictions here).
    let pid = std::process::id();
    nix::fcntl::openat(
        proc.fd.as_fd(),
        format!("{pid}/fd/{}", fd.as_raw_fd()).as_str(),
        flags | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(errno)
}

impl AsFd for ProcFs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_instance_reads_and_refuses_symlinks() {
        let p = ProcFs::new().unwrap();
        let status = String::from_utf8(p.read(&format!("{}/status", std::process::id())).unwrap()).unwrap();
        assert!(status.contains("Pid:"));
        assert!(p.open_self("status", OFlag::O_RDONLY).is_ok());
        // `self` is a symlink, `../` leaves the root: both refused.
        assert!(p.open("self/status", OFlag::O_RDONLY).is_err());
        assert!(p.open("../etc/passwd", OFlag::O_RDONLY).is_err());
        assert!(p.open("/sys/kernel/ostype", OFlag::O_RDONLY).is_ok());
    }

    #[test]
    fn reopen_gives_the_same_file() {
        let dir = std::env::temp_dir().join(format!("capsa-sys-reopen-{}", std::process::id()));
        std::fs::write(&dir, "content").unwrap();
        let p = nix::fcntl::open(&dir, OFlag::O_PATH, nix::sys::stat::Mode::empty()).unwrap();
        let f = reopen(p.as_fd(), OFlag::O_RDONLY).unwrap();
        assert_eq!(std::io::read_to_string(std::fs::File::from(f)).unwrap(), "content");
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn verify_refuses_what_is_not_procfs_root() {
        let tmp = nix::fcntl::open("/tmp", OFlag::O_PATH | OFlag::O_DIRECTORY, nix::sys::stat::Mode::empty()).unwrap();
        assert!(ProcFs::verify(tmp).is_err());
        let sub = nix::fcntl::open("/proc/sys", OFlag::O_PATH | OFlag::O_DIRECTORY, nix::sys::stat::Mode::empty()).unwrap();
        assert!(ProcFs::verify(sub).is_err());
    }
}

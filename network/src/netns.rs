//! Network namespaces made by us and kept alive by a bind mount of the namespace file under
//! a run dir (as `ip netns add` does under /run/netns), so that a container joins one through
//! `linux.namespaces[network].path` and it outlives any process.
//!
//! Unlike `ip netns`, the run dir is not made a shared mount point of its own: mounting and
//! unmounting it with the first and last namespace cost two RCU grace periods per container
//! (~8 ms here), and a dir mounted for good would outlive every store. What that sharing buys
//! is that a mount namespace copied from ours while a namespace is mounted sees its unmount;
//! a container's own copy goes when it pivots (its old root is unmounted); a copy made by
//! another tool keeps the namespace alive until that copy ends, with the container's veth
//! pair in it set down by [`crate::container::detach`] (which otherwise leaves the pair to the
//! kernel, deleted with the namespace) and deleted by the container's next start.
//!
//! Work inside a namespace is done by [`Ns::run`]: a thread of its own joins the namespace
//! (setns changes only the calling thread's network namespace), so the caller's threads never
//! move. Netlink sockets opened and processes started on that thread belong to the namespace.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Context, Error, Result};

/// A network namespace to work in.
#[derive(Clone, Debug)]
pub enum Ns {
    /// The calling thread's own.
    Current,
    /// The namespace whose file (a bind mount or /proc/PID/ns/net) is at this path.
    Path(PathBuf),
}

impl Ns {
    /// Runs `f` with the calling thread in this namespace (on a thread of its own for
    /// [`Ns::Path`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        match self {
            Ns::Current => f(),
            Ns::Path(p) => {
                let fd = open_ns(p)?;
                std::thread::scope(|s| {
                    s.spawn(move || {
                        setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).with_ctx(|| format!("join network namespace {}", p.display()))?;
                        f()
                    })
                    .join()
                    .map_err(|_| Error::new(format!("work in network namespace {} panicked", p.display())))?
                })
            }
        }
    }

    /// An fd of the namespace (for IFLA_NET_NS_FD).
    pub fn open(&self) -> Result<OwnedFd> {
        match self {
            Ns::Current => open_ns(Path::new("/proc/thread-self/ns/net")),
            Ns::Path(p) => open_ns(p),
        }
    }
}

fn open_ns(p: &Path) -> Result<OwnedFd> {
    let f =
        File::options().read(true).custom_flags(libc::O_CLOEXEC).open(p).with_ctx(|| format!("open network namespace {}", p.display()))?;
    Ok(f.into())
}

/// Makes a new network namespace bind-mounted at `dir/name`; an existing `name` is an error.
pub fn create(dir: &Path, name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.starts_with('.') {
        return Err(Error::new(format!("network namespace name {name:?}: must be a plain file name")));
    }
    std::fs::create_dir_all(dir).with_ctx(|| format!("create {}", dir.display()))?;
    let path = dir.join(name);
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .with_ctx(|| format!("create network namespace file {}", path.display()))?;
    let made = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).ctx("unshare a network namespace")?;
            mount(Some(Path::new("/proc/thread-self/ns/net")), &path, None::<&OsStr>, MsFlags::MS_BIND, None::<&OsStr>)
                .with_ctx(|| format!("bind-mount the new network namespace on {}", path.display()))
        })
        .join()
        .map_err(|_| Error::new("creating a network namespace panicked"))?
    });
    if let Err(e) = made {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Unmounts and removes a namespace file made by [`create`]; one already gone is fine. The
/// namespace itself ends when nothing else holds it.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a crash between create and mount); ENOENT: gone.
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(Error::from(e).context(format!("unmount network namespace {}", path.display()))),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::os(format!("remove {}", path.display()), e)),
    }
}

/// Unmounts the run dir's own mount (made by [`create`]) and removes the dir, if no namespace
/// file is left in it.
pub fn remove_dir(dir: &Path) -> Result<()> {
    if std::fs::read_dir(dir).with_ctx(|| format!("read {}", dir.display()))?.next().is_some() {
        return Err(Error::new(format!("{}: network namespaces are still in it", dir.display())));
    }
    if is_mount_point(dir)? {
        umount2(dir, MntFlags::MNT_DETACH).with_ctx(|| format!("unmount {}", dir.display()))?;
    }
    std::fs::remove_dir(dir).with_ctx(|| format!("remove {}", dir.display()))
}

/// Whether `path` is a namespace file (nsfs) as [`create`] bind-mounts: one statfs(2), where
/// [`is_mount_point`] reads all of mountinfo. A missing file, or the empty file a crash left
/// before the mount, is not one.
pub fn is_ns_file(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC).unwrap_or(false)
}

/// Whether `dir` is the mount point of a mount in our mount namespace.
pub fn is_mount_point(dir: &Path) -> Result<bool> {
    let dir = std::fs::canonicalize(dir).with_ctx(|| format!("resolve {}", dir.display()))?;
    Ok(capsa_sys::mountinfo::read_self().ctx("read /proc/self/mountinfo")?.iter().any(|m| m.mount_point == dir))
}

/// Lists the namespace bind mounts under `dir` (from mountinfo).
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = std::fs::canonicalize(dir).with_ctx(|| format!("resolve {}", dir.display()))?;
    let mounts = capsa_sys::mountinfo::read_self().ctx("read /proc/self/mountinfo")?;
    Ok(mounts.into_iter().map(|m| m.mount_point).filter(|p| p.starts_with(&dir) && *p != dir).collect())
}

/// The raw fd number, for netlink attributes that carry one.
pub fn raw(fd: &OwnedFd) -> i32 {
    fd.as_raw_fd()
}

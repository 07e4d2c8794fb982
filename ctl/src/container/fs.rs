//! A container's filesystem as `cp`, `export`, `diff` and `commit` see it from the host:
//! the rootfs overlay (mounted by the monitor while the container runs, mounted here for
//! the duration while it is down, under its lock), and for `cp` its volumes and binds
//! mounted on it at their destinations, in a private mount namespace (as docker does:
//! tmpfs mounts and what the container mounted itself are not visible from outside).
//! Paths inside it are resolved with `capsa_sys::Root` (RESOLVE_IN_ROOT), never joined.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use capsa_image::Store;
use capsa_sys::{Follow, Root};

use super::{stop, volumes, Lock, Record};
use crate::cli::{fail, Result};

pub struct View {
    pub rootfs: PathBuf,
    pub dir: PathBuf,
    mounted_here: bool,
    _lock: Option<Lock>,
}

impl View {
    /// Opens a container's filesystem (the caller has reconciled the row).
    pub fn open(store: &Store, state_root: &Path, rec: &Record) -> Result<View> {
        let dir = super::dir(store, &rec.id);
        let rootfs = dir.join("rootfs");
        if stop::runtime_status(state_root, &rec.id).is_some() {
            return Ok(View { rootfs, dir, mounted_here: false, _lock: None });
        }
        let lock = match Lock::take_within(&dir, std::time::Duration::from_secs(5)) {
            Ok(Some(l)) => l,
            Ok(None) => return Err(fail(format!("container {} is busy (starting or stopping): try again", rec.id))),
            Err(e) => return Err(fail(format!("container {}: {e}", rec.id))),
        };
        let chain = store.chain_of(rec.top_chain.clone())?;
        capsa_image::snapshot::unmount_rootfs(&dir)?;
        store.snapshots.mount_rootfs(&chain, &dir)?;
        Ok(View { rootfs, dir, mounted_here: true, _lock: Some(lock) })
    }

    pub fn root(&self) -> Result<Root> {
        Root::open(&self.rootfs).map_err(|e| fail(format!("rootfs {}: {e}", self.rootfs.display())))
    }

    /// Puts the container's volumes and binds on its rootfs, where the runtime puts them
    /// (in the same order, each destination resolved inside the tree made so far), so that
    /// every path the caller then resolves with `RESOLVE_IN_ROOT` follows the image's
    /// symlinks and crosses into the mounts as the container's own processes would (docker
    /// mounts the volumes on the container's rootfs for `cp` the same way). Read-only
    /// mounts stay read-only. Only in this process's private mount namespace: see
    /// [`private_mounts`], which must come first.
    pub fn mount_volumes(&self, store: &Store, rec: &Record) -> Result<()> {
        let root = self.root()?;
        let mut ms: Vec<_> = rec.stored.mounts.iter().filter(|m| m.typ == "volume" || m.typ == "bind").collect();
        ms.sort_by_key(|m| m.destination.split('/').filter(|c| !c.is_empty()).count());
        for m in ms {
            let src = if m.typ == "volume" { volumes::data_dir(store, &m.name) } else { PathBuf::from(&m.source) };
            let at = |e: std::io::Error| fail(format!("mount {} ({}): {e}", m.destination, src.display()));
            let dest = Path::new(&m.destination);
            // As the runtime does: a directory (or file) made where the image has none.
            let target =
                if src.is_dir() { root.mkdir_all(dest, 0o755, Follow::InRoot) } else { root.create_file(dest, 0o644, Follow::InRoot) }
                    .map_err(at)?;
            let tree = capsa_sys::mount::clone_tree_at(&src.to_string_lossy(), true).map_err(at)?;
            if !m.rw {
                let ro = capsa_sys::mount::Attr { set: capsa_sys::mount::MOUNT_ATTR_RDONLY, recursive: true, ..Default::default() };
                capsa_sys::mount::set_attr(tree.as_fd(), ro).map_err(at)?;
            }
            capsa_sys::mount::attach(tree.as_fd(), target.as_fd()).map_err(at)?;
        }
        Ok(())
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = capsa_image::snapshot::unmount_rootfs(&self.dir);
        }
    }
}

/// Gives this process a mount namespace of its own, with nothing propagating back to the
/// host's: what [`View::mount_volumes`] (and a stopped container's rootfs mount) puts there
/// is gone when the process exits, however it exits. Call before [`View::open`], in a
/// single-threaded process (unshare refuses otherwise).
pub fn private_mounts() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| fail(format!("unshare the mount namespace: {}", e.desc())))?;
    nix::mount::mount(None::<&str>, "/", None::<&str>, nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| fail(format!("make the mount namespace private: {}", e.desc())))
}

/// Mount points the runtime makes in a container's upper directory when the image lacks
/// them. docker keeps these in a separate init layer, so they are not the user's changes:
/// neither `diff` nor `commit` shows them (when they are still empty).
const INIT_PATHS: &[&str] = &[
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/dev/console",
    "/proc",
    "/sys",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/mtab",
    "/sbin/docker-init",
];

/// The image's layers under a container, top first, to ask what the image holds.
pub struct Lowers(Vec<Root>);

impl Lowers {
    pub fn open(store: &Store, rec: &Record) -> Result<Lowers> {
        let chain = store.chain_of(rec.top_chain.clone())?;
        Ok(Lowers(chain.iter().rev().filter_map(|c| Root::open(&store.snapshots.fs(c)).ok()).collect()))
    }

    /// What the image has at `p` (None: nothing, or hidden by a whiteout).
    pub fn stat(&self, p: &Path) -> Option<nix::sys::stat::FileStat> {
        for l in &self.0 {
            if let Ok(fd) = l.open_at(p, OFlag::O_PATH, Follow::NotLast) {
                let st = nix::sys::stat::fstat(fd.as_fd()).ok()?;
                // A whiteout in a higher layer hides the lower ones.
                return (!crate::fstree::is_whiteout(&st)).then_some(st);
            }
        }
        None
    }

    /// Whether upper entry `p` (container path) is a mount point the runtime made: an
    /// init path the image lacks, still an empty file or a directory.
    pub fn is_init_entry(&self, p: &Path, st: &nix::sys::stat::FileStat) -> bool {
        let k = crate::fstree::kind(st);
        let empty = k == nix::sys::stat::SFlag::S_IFDIR || (k == nix::sys::stat::SFlag::S_IFREG && st.st_size == 0);
        empty && INIT_PATHS.iter().any(|i| Path::new(i) == p) && self.stat(p).is_none()
    }
}

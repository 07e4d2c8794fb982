//! A container's filesystem as `cp`, `export`, `diff` and `commit` see it from the host:
//! the rootfs overlay (mounted by the monitor while the container runs, mounted here for
//! the duration while it is down, under its lock), and its volumes and binds at their
//! destinations, found by the path once resolved (as docker does: tmpfs mounts and what
//! the container mounted itself are not visible from outside). Paths inside it are resolved with
//! `capsa_sys::Root` (RESOLVE_IN_ROOT), never joined.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};

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

    /// The root a container path lives in (the rootfs, or a volume's or bind's source)
    /// and the path inside that root, found as docker finds it: the path is resolved
    /// first, symlinks followed inside the container's tree (across its mounts), and only
    /// then matched against the mount points. `follow_last`: follow a symlink in the last
    /// component too (it is always followed when the path ends in `/` or `/.`).
    ///
    /// Every step looks inside one root by `RESOLVE_IN_ROOT`, and so does the caller's
    /// final open: a container that swaps a component meanwhile can at worst redirect the
    /// copy to another place inside that same root, never to the host.
    pub fn resolve(&self, store: &Store, rec: &Record, path: &str, follow_last: bool) -> Result<(Root, PathBuf)> {
        let tree = Tree::new(self.root()?, store, rec)?;
        let follow_last = follow_last || path.ends_with('/') || path.ends_with("/.") || path == ".";
        let comps = tree.resolve(Path::new(&format!("/{path}")), follow_last).map_err(|e| fail(format!("{path}: {e}")))?;
        let (i, rel) = tree.locate(&comps);
        let root = tree.take(i);
        Ok((root, rel))
    }
}

/// The container's tree as its processes see it, for lookups from the host: the rootfs
/// with the volumes and binds on top. tmpfs mounts are not part of it (docker's `cp`
/// does not see them either).
struct Tree {
    rootfs: Root,
    /// Each mount's place (components of its destination, resolved as the runtime
    /// resolved it when mounting: in the tree made of the mounts before it) and root.
    mounts: Vec<(Vec<OsString>, Root)>,
}

/// The components of `p` that name something (`/` and `.` dropped, `..` kept).
fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Symlinks followed in one lookup before giving up (the kernel's limit).
const MAX_LINKS: usize = 40;

impl Tree {
    fn new(rootfs: Root, store: &Store, rec: &Record) -> Result<Tree> {
        let mut tree = Tree { rootfs, mounts: Vec::new() };
        // The order the runtime mounts them in (see spec.rs): parents first.
        let mut ms: Vec<_> = rec.stored.mounts.iter().filter(|m| m.typ == "volume" || m.typ == "bind").collect();
        ms.sort_by_key(|m| m.destination.split('/').filter(|c| !c.is_empty()).count());
        for m in ms {
            let src = if m.typ == "volume" { volumes::data_dir(store, &m.name) } else { PathBuf::from(&m.source) };
            let root = Root::open(&src).map_err(|e| fail(format!("mount {} ({}): {e}", m.destination, src.display())))?;
            let place = tree.resolve(Path::new(&m.destination), true).map_err(|e| fail(format!("mount {}: {e}", m.destination)))?;
            tree.mounts.push((place, root));
        }
        Ok(tree)
    }

    /// Which root holds the (resolved) path `comps`: the index of the mount (or None,
    /// the rootfs) and the path inside it. The last mount on a place is the one seen.
    fn locate(&self, comps: &[OsString]) -> (Option<usize>, PathBuf) {
        let mut best: Option<usize> = None;
        for (i, (place, _)) in self.mounts.iter().enumerate() {
            if comps.starts_with(place) && best.is_none_or(|b| place.len() >= self.mounts[b].0.len()) {
                best = Some(i);
            }
        }
        let skip = best.map_or(0, |b| self.mounts[b].0.len());
        let mut rel = PathBuf::from("/");
        rel.extend(&comps[skip..]);
        (best, rel)
    }

    fn root(&self, i: Option<usize>) -> &Root {
        i.map_or(&self.rootfs, |i| &self.mounts[i].1)
    }

    fn take(mut self, i: Option<usize>) -> Root {
        match i {
            Some(i) => self.mounts.swap_remove(i).1,
            None => self.rootfs,
        }
    }

    /// `path` with every symlink followed as the kernel would inside the container (an
    /// absolute target starts again at the container's `/`, `..` stops there), except the
    /// last component unless `follow_last`. Components that do not exist are kept as they
    /// are (a file about to be created).
    fn resolve(&self, path: &Path, follow_last: bool) -> std::io::Result<Vec<OsString>> {
        let mut pending = components(path);
        let mut done: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(c) = pending.pop_front() {
            if c == ".." {
                done.pop();
                continue;
            }
            done.push(c);
            if pending.is_empty() && !follow_last {
                break;
            }
            let (i, rel) = self.locate(&done);
            let fd = match self.root(i).open_at(&rel, OFlag::O_PATH, Follow::NotLast) {
                Ok(fd) => fd,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => continue,
                Err(e) => return Err(e),
            };
            let st = nix::sys::stat::fstat(fd.as_fd()).map_err(std::io::Error::from)?;
            if capsa_sys::root::kind(&st) != nix::sys::stat::SFlag::S_IFLNK {
                continue;
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = nix::fcntl::readlinkat(fd.as_fd(), "").map_err(std::io::Error::from)?;
            done.pop();
            if Path::new(&target).is_absolute() {
                done.clear();
            }
            for c in components(Path::new(&target)).into_iter().rev() {
                pending.push_front(c);
            }
        }
        Ok(done)
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = capsa_image::snapshot::unmount_rootfs(&self.dir);
        }
    }
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

//! A container's filesystem as `cp`, `export`, `diff` and `commit` see it from the host:
//! the rootfs overlay (mounted by the monitor while the container runs, mounted here for
//! the duration while it is down, under its lock), and its volumes and binds at their
//! destinations, found by the path (as docker does: tmpfs mounts and what the container
//! mounted itself are not visible from outside). Paths inside it are resolved with
//! `capsa_sys::Root` (RESOLVE_IN_ROOT), never joined.

use std::path::{Path, PathBuf};

use capsa_image::Store;
use capsa_sys::Root;

use super::{create::clean_dest, stop, volumes, Lock, Record};
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
    /// and the path inside that root.
    pub fn resolve(&self, store: &Store, rec: &Record, path: &str) -> Result<(Root, PathBuf)> {
        let clean = clean_dest(&format!("/{path}"));
        let mut mounts: Vec<_> = rec.stored.mounts.iter().filter(|m| m.typ == "volume" || m.typ == "bind").collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.destination.len()));
        for m in mounts {
            let rest = if clean == m.destination { Some("/") } else { clean.strip_prefix(&m.destination).filter(|r| r.starts_with('/')) };
            if let Some(rest) = rest {
                let src = if m.typ == "volume" { volumes::data_dir(store, &m.name) } else { PathBuf::from(&m.source) };
                let root = Root::open(&src).map_err(|e| fail(format!("mount {} ({}): {e}", m.destination, src.display())))?;
                return Ok((root, PathBuf::from(rest)));
            }
        }
        Ok((self.root()?, PathBuf::from(clean)))
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = capsa_image::snapshot::unmount_rootfs(&self.dir);
        }
    }
}

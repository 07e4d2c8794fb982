//! Snapshots: each layer unpacked once, in overlay form, under
//! `<root>/snapshots/<chainID hex>/fs`, shared by every image and container that stands
//! on it; and the overlay mounts that make a container's rootfs from them.
//!
//! overlayfs takes all lowerdirs in one mount option, and mount(2) copies at most one page
//! of options: 120 lowerdirs of 80-character paths do not fit. As containers/storage does,
//! each snapshot also has a short name, `<root>/l/<20 base32 chars>` → its `fs`, and the
//! mount is made from the store's root with relative `l/…` lowerdirs (~23 bytes a layer,
//! so 150+ layers fit).
//!
//! A snapshot is unpacked into `snapshots/tmp-*` and renamed to its chainID only once its
//! diffID checked out, so a snapshot dir under a chainID name is always complete; a crash
//! leaves only `tmp-*` dirs, which `gc` removes.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Context, Error, Result};
use crate::layer::{self, Limits, Unpacked};
use crate::oci::Compression;

pub struct Snapshots {
    root: PathBuf,
    dir: PathBuf,
    links: PathBuf,
}

/// A container's rootfs as made by [`Snapshots::mount_rootfs`].
#[derive(Debug)]
pub struct Rootfs {
    /// Where the rootfs is (the bundle's `rootfs`).
    pub path: PathBuf,
    /// false: a copy (overlay unavailable); the reason is in `note`.
    pub overlay: bool,
    pub note: Option<String>,
}

impl Snapshots {
    pub fn open(root: &Path) -> Result<Snapshots> {
        let dir = root.join("snapshots");
        let links = root.join("l");
        for d in [&dir, &links] {
            std::fs::create_dir_all(d).with_ctx(|| format!("create {}", d.display()))?;
        }
        Ok(Snapshots { root: root.to_path_buf(), dir, links })
    }

    pub fn path(&self, chain: &Digest) -> PathBuf {
        self.dir.join(chain.hex())
    }

    pub fn fs(&self, chain: &Digest) -> PathBuf {
        self.path(chain).join("fs")
    }

    pub fn exists(&self, chain: &Digest) -> bool {
        self.fs(chain).is_dir()
    }

    /// The short name of a snapshot: 20 base32 characters (100 bits) of its chainID.
    pub fn link_name(chain: &Digest) -> String {
        const ALPHA: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let hex = chain.hex().as_bytes();
        let mut bits: u128 = 0;
        for &h in &hex[..25] {
            let v = (h as char).to_digit(16).unwrap_or(0) as u128;
            bits = (bits << 4) | v;
        }
        (0..20).map(|i| ALPHA[((bits >> (95 - 5 * i)) & 31) as usize] as char).collect()
    }

    /// Unpacks a layer blob as snapshot `chain`, checking its diffID against `diff_id`
    /// when given. Returns what was unpacked; if another process made the same snapshot
    /// first, its copy is kept and ours dropped.
    pub fn unpack(
        &self,
        blob: &std::fs::File,
        blob_digest: &Digest,
        comp: Compression,
        chain: &Digest,
        diff_id: Option<&Digest>,
        limits: &Limits,
    ) -> Result<Unpacked> {
        let tmp = self.dir.join(format!("tmp-{}", crate::content::random_suffix()));
        let fs = tmp.join("fs");
        std::fs::create_dir_all(&fs).with_ctx(|| format!("create {}", fs.display()))?;
        let res = layer::unpack(blob, blob_digest, comp, &fs, limits).and_then(|u| match diff_id {
            Some(want) if *want != u.diff_id => Err(Error::new(format!(
                "layer {blob_digest}: uncompressed content is {}, but the image config says diff_id {want}",
                u.diff_id
            ))),
            _ => Ok(u),
        });
        let u = match res {
            Ok(u) => u,
            Err(e) => {
                let _ = layer::remove_tree(&tmp);
                return Err(e);
            }
        };
        let dest = self.path(chain);
        if let Err(e) = std::fs::rename(&tmp, &dest) {
            let _ = layer::remove_tree(&tmp);
            if !dest.join("fs").is_dir() {
                return Err(Error::from(e).context(format!("store snapshot {}", dest.display())));
            }
        }
        self.link(chain)?;
        Ok(u)
    }

    /// (Re)makes `l/<short>` → `../snapshots/<hex>/fs`.
    pub fn link(&self, chain: &Digest) -> Result<()> {
        let name = Self::link_name(chain);
        let target = PathBuf::from("../snapshots").join(chain.hex()).join("fs");
        let at = self.links.join(&name);
        match std::fs::read_link(&at) {
            Ok(t) if t == target => return Ok(()),
            Ok(t) if t.starts_with("../snapshots") && Path::new(&self.links).join(&t).is_dir() => {
                return Err(Error::new(format!("snapshot link {name} already names {} (a 100-bit collision?)", t.display())));
            }
            _ => {}
        }
        let tmp = self.links.join(format!(".{name}.{}", crate::content::random_suffix()));
        std::os::unix::fs::symlink(&target, &tmp).with_ctx(|| format!("link {}", tmp.display()))?;
        std::fs::rename(&tmp, &at).with_ctx(|| format!("link {}", at.display()))?;
        Ok(())
    }

    pub fn remove(&self, chain: &Digest) -> Result<()> {
        let _ = std::fs::remove_file(self.links.join(Self::link_name(chain)));
        layer::remove_tree(&self.path(chain)).with_ctx(|| format!("remove snapshot {}", chain))
    }

    /// Names in `snapshots/` that are not complete snapshots (leftovers of a crash), and
    /// the chainIDs of the complete ones.
    pub fn list(&self) -> Result<(Vec<Digest>, Vec<PathBuf>)> {
        let mut good = Vec::new();
        let mut strays = Vec::new();
        for e in std::fs::read_dir(&self.dir).with_ctx(|| format!("list {}", self.dir.display()))?.flatten() {
            match e.file_name().to_str().map(|n| Digest::parse(&format!("sha256:{n}"))) {
                Some(Ok(d)) => good.push(d),
                _ => strays.push(e.path()),
            }
        }
        Ok((good, strays))
    }

    /// Links in `l/` whose snapshot is gone.
    pub fn dangling_links(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.links).map(|rd| rd.flatten().map(|e| e.path()).filter(|p| !p.is_dir()).collect()).unwrap_or_default()
    }

    /// Makes `dir/rootfs` for a container: an overlay of `layers` (bottom first) with
    /// `dir/upper` and `dir/work`, or, where overlay cannot be mounted, a copy of them.
    ///
    /// The mount is made with the store's root as the working directory (relative, short
    /// lowerdirs). The working directory is per process: call this while the process is
    /// single-threaded (capsactl always is by then).
    pub fn mount_rootfs(&self, layers: &[Digest], dir: &Path) -> Result<Rootfs> {
        let rootfs = dir.join("rootfs");
        let upper = dir.join("upper");
        let work = dir.join("work");
        for d in [&rootfs, &upper, &work] {
            std::fs::create_dir_all(d).with_ctx(|| format!("create {}", d.display()))?;
        }
        let mut lowers: Vec<String> = layers.iter().rev().map(|c| format!("l/{}", Self::link_name(c))).collect();
        if lowers.is_empty() {
            let empty = dir.join("empty");
            std::fs::create_dir_all(&empty).ctx("create empty lower")?;
            lowers.push(empty.to_string_lossy().into_owned());
        }
        for c in layers {
            if !self.exists(c) {
                return Err(Error::new(format!(
                    "snapshot of layer {c} is missing from the store (run `capsactl image prune` and load the image again)"
                )));
            }
            self.link(c)?;
        }
        let opts = format!("lowerdir={},upperdir={},workdir={},index=off", lowers.join(":"), upper.display(), work.display());
        // redirect_dir and metacopy off, whatever the kernel's defaults: the upper dir must
        // hold every change as plain entries, for commit, diff and build to read it as a layer
        // (a renamed directory is then copied up whole). A kernel older than these options
        // has them off and refuses their names: mounted without them.
        let plain = format!("{opts},redirect_dir=off,metacopy=off");
        // CAPSA_NO_OVERLAY=1 forces the copy, to test it on a host that has overlay.
        let mounted = match std::env::var_os("CAPSA_NO_OVERLAY") {
            Some(_) => Err(std::io::Error::from_raw_os_error(libc::ENODEV)),
            None => match mount_from(&self.root, &rootfs, &plain) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => mount_from(&self.root, &rootfs, &opts),
                r => r,
            },
        };
        match mounted {
            Ok(()) => Ok(Rootfs { path: rootfs, overlay: true, note: None }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)) => {
                let note = format!("overlay unavailable ({e}): using a copied rootfs");
                crate::copy::merge_layers(&layers.iter().map(|c| self.fs(c)).collect::<Vec<_>>(), &rootfs)
                    .ctx("copy the layers into the rootfs")?;
                Ok(Rootfs { path: rootfs, overlay: false, note: Some(note) })
            }
            Err(e) => Err(Error::from(e).context(format!("mount overlay on {} ({} layers)", rootfs.display(), layers.len()))),
        }
    }
}

/// mount(2) of overlay with `root` as the working directory (restored afterwards).
fn mount_from(root: &Path, target: &Path, opts: &str) -> std::io::Result<()> {
    if threads() != 1 {
        return Err(std::io::Error::other("overlay mount needs a single-threaded process (it changes the working directory)"));
    }
    let saved = std::fs::File::open(".")?;
    std::env::set_current_dir(root)?;
    let r = nix::mount::mount(Some("overlay"), target, Some("overlay"), nix::mount::MsFlags::empty(), Some(opts));
    nix::unistd::fchdir(saved.as_fd()).map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
    r.map_err(|e| std::io::Error::from_raw_os_error(e as i32))
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|rd| rd.count()).unwrap_or(1)
}

/// Unmounts a container rootfs made by [`Snapshots::mount_rootfs`] (lazily if busy) and
/// removes `dir`.
pub fn remove_rootfs(dir: &Path) -> Result<()> {
    unmount_rootfs(dir)?;
    layer::remove_tree(dir).with_ctx(|| format!("remove {}", dir.display()))
}

/// Unmounts `dir/rootfs` (lazily if busy) and keeps the container's upper dir: a stopped
/// container that may start again. Not mounted is fine.
pub fn unmount_rootfs(dir: &Path) -> Result<()> {
    let rootfs = dir.join("rootfs");
    // More than one mount may be stacked there (a start killed half-way, then another).
    for _ in 0..8 {
        match nix::mount::umount2(&rootfs, nix::mount::MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW)
                    .with_ctx(|| format!("unmount {}", rootfs.display()))?;
            }
            Err(e) => return Err(Error::from(e).context(format!("unmount {}", rootfs.display()))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_are_short_and_distinct() {
        let a = Snapshots::link_name(&Digest::of(b"a"));
        let b = Snapshots::link_name(&Digest::of(b"b"));
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c)));
    }
}

//! `mounts[]` of config.json: option parsing (pure, unit-tested) and performing one mount
//! inside the rootfs.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::path::{create_file, mkdir_all, open_inside, secure_join};
use crate::error::{Context, Result};

/// What one entry of `options` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountOpt {
    /// A flag to set (`ro`, `nosuid`, `bind`, ...).
    Set(MsFlags),
    /// A flag to clear (`rw`, `suid`, ...).
    Clear(MsFlags),
    /// A propagation change applied after the mount (`rprivate`, `shared`, ...).
    Propagation(MsFlags),
    /// Mount attributes for the mount and every mount below it (`rro`, `rnosuid`, ...):
    /// `MOUNT_ATTR_*` bits to set and to clear.
    Recursive { set: u64, clr: u64 },
    /// `idmap` / `ridmap`: an idmapped bind mount (recursive for `ridmap`).
    Idmap { recursive: bool },
}

/// Parses a mount option; `None` means it is filesystem data (`mode=755`, `size=64k`).
pub fn parse_option(o: &str) -> Option<MountOpt> {
    use MountOpt::*;
    let f = |x| Some(Set(x));
    let c = |x| Some(Clear(x));
    let p = |x| Some(Propagation(x));
    match o {
        "defaults" => Some(Clear(MsFlags::empty())),
        "ro" => f(MsFlags::MS_RDONLY),
        "rw" => c(MsFlags::MS_RDONLY),
        "nosuid" => f(MsFlags::MS_NOSUID),
        "suid" => c(MsFlags::MS_NOSUID),
        "nodev" => f(MsFlags::MS_NODEV),
        "dev" => c(MsFlags::MS_NODEV),
        "noexec" => f(MsFlags::MS_NOEXEC),
        "exec" => c(MsFlags::MS_NOEXEC),
        "sync" => f(MsFlags::MS_SYNCHRONOUS),
        "async" => c(MsFlags::MS_SYNCHRONOUS),
        "dirsync" => f(MsFlags::MS_DIRSYNC),
        "remount" => f(MsFlags::MS_REMOUNT),
        "mand" => f(MsFlags::MS_MANDLOCK),
        "nomand" => c(MsFlags::MS_MANDLOCK),
        "atime" => c(MsFlags::MS_NOATIME),
        "noatime" => f(MsFlags::MS_NOATIME),
        "diratime" => c(MsFlags::MS_NODIRATIME),
        "nodiratime" => f(MsFlags::MS_NODIRATIME),
        "relatime" => f(MsFlags::MS_RELATIME),
        "norelatime" => c(MsFlags::MS_RELATIME),
        "strictatime" => f(MsFlags::MS_STRICTATIME),
        "nostrictatime" => c(MsFlags::MS_STRICTATIME),
        "bind" => f(MsFlags::MS_BIND),
        "rbind" => f(MsFlags::MS_BIND | MsFlags::MS_REC),
        "silent" => f(MsFlags::MS_SILENT),
        "loud" => c(MsFlags::MS_SILENT),
        "iversion" => f(MsFlags::MS_I_VERSION),
        "noiversion" => c(MsFlags::MS_I_VERSION),
        "lazytime" => f(MsFlags::MS_LAZYTIME),
        "nolazytime" => c(MsFlags::MS_LAZYTIME),
        "nosymfollow" => f(MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)),
        "symfollow" => c(MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)),
        "private" => p(MsFlags::MS_PRIVATE),
        "rprivate" => p(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
        "shared" => p(MsFlags::MS_SHARED),
        "rshared" => p(MsFlags::MS_SHARED | MsFlags::MS_REC),
        "slave" => p(MsFlags::MS_SLAVE),
        "rslave" => p(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        "unbindable" => p(MsFlags::MS_UNBINDABLE),
        "runbindable" => p(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
        "idmap" => Some(Idmap { recursive: false }),
        "ridmap" => Some(Idmap { recursive: true }),
        _ => recursive_option(o),
    }
}

/// `rro`, `rnosuid`, `rnoatime`, ...: the recursive (mount_setattr) forms.
fn recursive_option(o: &str) -> Option<MountOpt> {
    use super::idmap::*;
    let (set, clr) = match o.strip_prefix('r')? {
        "ro" => (MOUNT_ATTR_RDONLY, 0),
        "rw" => (0, MOUNT_ATTR_RDONLY),
        "nosuid" => (MOUNT_ATTR_NOSUID, 0),
        "suid" => (0, MOUNT_ATTR_NOSUID),
        "nodev" => (MOUNT_ATTR_NODEV, 0),
        "dev" => (0, MOUNT_ATTR_NODEV),
        "noexec" => (MOUNT_ATTR_NOEXEC, 0),
        "exec" => (0, MOUNT_ATTR_NOEXEC),
        "nodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "diratime" => (0, MOUNT_ATTR_NODIRATIME),
        "relatime" => (MOUNT_ATTR_RELATIME, MOUNT_ATTR_ATIME),
        "norelatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME),
        "noatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME),
        "atime" => (MOUNT_ATTR_RELATIME, MOUNT_ATTR_ATIME),
        "strictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME),
        "nostrictatime" => (MOUNT_ATTR_RELATIME, MOUNT_ATTR_ATIME),
        "nosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "symfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    };
    Some(MountOpt::Recursive { set, clr })
}

/// A mount ready to be performed by init: everything parsed in the parent.
#[derive(Debug, Clone)]
pub struct MountPlan {
    pub destination: PathBuf,
    pub source: Option<PathBuf>,
    pub fstype: Option<String>,
    pub flags: MsFlags,
    pub data: String,
    pub propagation: Vec<MsFlags>,
    /// Recursive attributes to set/clear after mounting.
    pub rec_set: u64,
    pub rec_clr: u64,
    /// `Some(recursive)` for `idmap`/`ridmap`.
    pub idmap: Option<bool>,
    /// The detached idmapped tree, made by the parent (see [`super::idmap`]); init
    /// attaches it with move_mount.
    pub idmapped_tree: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

impl MountPlan {
    pub fn from_spec(m: &oci_spec::runtime::Mount) -> MountPlan {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        let mut propagation = Vec::new();
        let (mut rec_set, mut rec_clr, mut idmap) = (0u64, 0u64, None);
        for o in m.options().iter().flatten() {
            match parse_option(o) {
                Some(MountOpt::Set(f)) => flags |= f,
                Some(MountOpt::Clear(f)) => flags &= !f,
                Some(MountOpt::Propagation(f)) => propagation.push(f),
                Some(MountOpt::Recursive { set, clr }) => {
                    rec_set = (rec_set & !clr) | set;
                    rec_clr = (rec_clr & !set) | clr;
                }
                Some(MountOpt::Idmap { recursive }) => idmap = Some(recursive),
                None => data.push(o.as_str()),
            }
        }
        let fstype = m.typ().clone().filter(|t| !t.is_empty());
        if fstype.as_deref() == Some("bind") {
            flags |= MsFlags::MS_BIND;
        }
        MountPlan {
            destination: m.destination().clone(),
            source: m.source().clone(),
            fstype,
            flags,
            data: data.join(","),
            propagation,
            rec_set,
            rec_clr,
            idmap,
            idmapped_tree: None,
        }
    }

    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

/// The flags a bind mount must be remounted with to take effect.
const BIND_REMOUNT_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// Mounts `m` inside `rootfs` (before pivot_root). `bundle` is the directory relative
/// bind sources are resolved against.
pub fn mount_one(rootfs: &Path, bundle: &Path, m: &MountPlan) -> Result<()> {
    let dest = secure_join(rootfs, &m.destination)?;
    let source = m.source.as_ref().map(|s| if m.is_bind() && s.is_relative() { bundle.join(s) } else { s.clone() });
    if m.is_bind() {
        let src = source.as_ref().ok_or_else(|| crate::error::Error::new("bind mount without source"))?;
        let meta = std::fs::metadata(src).with_ctx(|| format!("source {}", src.display()))?;
        if meta.is_dir() {
            mkdir_all(&dest, 0o755)?;
        } else {
            create_file(&dest)?;
        }
    } else {
        mkdir_all(&dest, 0o755)?;
    }
    let target = open_inside(rootfs, &dest)?;
    let target_path = format!("/proc/self/fd/{}", target.as_raw_fd());

    if let Some(tree) = &m.idmapped_tree {
        super::idmap::attach(std::os::fd::AsFd::as_fd(tree.as_ref()), std::os::fd::AsFd::as_fd(&target))
            .with_ctx(|| format!("attach idmapped mount on {}", m.destination.display()))?;
    } else if m.is_bind() {
        let first = m.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
        mount(source.as_deref(), target_path.as_str(), None::<&str>, first, None::<&str>)
            .with_ctx(|| format!("bind {} on {}", source.as_deref().unwrap_or(Path::new("")).display(), m.destination.display()))?;
        if m.flags.intersects(BIND_REMOUNT_FLAGS) {
            // Reopen: the fd now refers to the mount point below the new mount.
            let target = open_inside(rootfs, &dest)?;
            let target_path = format!("/proc/self/fd/{}", target.as_raw_fd());
            remount_bind(&target_path, m.flags & BIND_REMOUNT_FLAGS)
                .with_ctx(|| format!("remount {} with {:?}", m.destination.display(), m.flags & BIND_REMOUNT_FLAGS))?;
        }
    } else {
        let data = (!m.data.is_empty()).then_some(m.data.as_str());
        let r = mount(source.as_deref(), target_path.as_str(), m.fstype.as_deref(), m.flags, data);
        if let Err(e) = r {
            // sysfs cannot be mounted in a user namespace without its own network
            // namespace; runc falls back to a recursive bind of the host's /sys.
            if m.fstype.as_deref() == Some("sysfs") && matches!(e, nix::errno::Errno::EPERM) {
                mount(Some("/sys"), target_path.as_str(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                    .with_ctx(|| format!("mount sysfs on {}", m.destination.display()))?;
                let target = open_inside(rootfs, &dest)?;
                remount_bind(&format!("/proc/self/fd/{}", target.as_raw_fd()), m.flags & BIND_REMOUNT_FLAGS)
                    .with_ctx(|| format!("remount {}", m.destination.display()))?;
            } else {
                return Err(crate::error::Error::from(e).context(format!(
                    "mount {} ({}) on {}",
                    source.as_deref().unwrap_or(Path::new("none")).display(),
                    m.fstype.as_deref().unwrap_or(""),
                    m.destination.display()
                )));
            }
        }
    }
    if m.rec_set != 0 || m.rec_clr != 0 {
        let target = open_inside(rootfs, &dest)?;
        super::idmap::set_recursive(&format!("/proc/self/fd/{}", target.as_raw_fd()), m.rec_set, m.rec_clr)
            .with_ctx(|| format!("recursive mount options on {}", m.destination.display()))?;
    }
    if !m.propagation.is_empty() {
        let target = open_inside(rootfs, &dest)?;
        let target_path = format!("/proc/self/fd/{}", target.as_raw_fd());
        for p in &m.propagation {
            mount(None::<&str>, target_path.as_str(), None::<&str>, *p, None::<&str>)
                .with_ctx(|| format!("set propagation of {}", m.destination.display()))?;
        }
    }
    Ok(())
}

/// The per-mount flags of `flags` as MOUNT_ATTR bits (for trees made with open_tree).
pub fn attr_bits(flags: MsFlags) -> u64 {
    use super::idmap::*;
    let mut a = 0;
    for (f, b) in [
        (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
    ] {
        if flags.contains(f) {
            a |= b;
        }
    }
    a
}

/// Remounts a bind mount with `flags`, keeping the flags the kernel locks on it (a
/// remount that drops e.g. nosuid inherited from a locked mount fails with EPERM).
pub fn remount_bind(target: &str, flags: MsFlags) -> Result<()> {
    let locked = locked_flags(target);
    mount(None::<&str>, target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked, None::<&str>)?;
    Ok(())
}

/// The per-mount flags currently set on the mount at `path` (statvfs).
fn locked_flags(path: &str) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(s) = statvfs(path) else { return MsFlags::empty() };
    let f = s.flags();
    let mut out = MsFlags::empty();
    for (a, b) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(a) {
            out |= b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_flags_and_data() {
        let m: oci_spec::runtime::Mount = serde_json::from_str(
            r#"{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]}"#,
        )
        .unwrap();
        let p = MountPlan::from_spec(&m);
        assert_eq!(p.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(p.data, "mode=755,size=65536k");
        let m: oci_spec::runtime::Mount =
            serde_json::from_str(r#"{"destination":"/x","type":"none","source":"/tmp","options":["rbind","ro","rw","nosuid","rprivate"]}"#)
                .unwrap();
        let p = MountPlan::from_spec(&m);
        assert!(p.is_bind());
        assert_eq!(p.flags, MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_NOSUID);
        assert_eq!(p.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(parse_option("mode=755"), None);
    }
}

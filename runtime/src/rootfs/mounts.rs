//! `mounts[]` of config.json: option parsing (pure, unit-tested) and performing one mount
//! inside the rootfs.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use capsa_sys::{mount, Follow, Root};
use nix::mount::MsFlags;

use crate::bail;
use crate::error::{Context, Error, Result};

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
    /// `tmpcopyup`: a tmpfs that starts with a copy of what the image has there.
    TmpCopyUp,
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
        "tmpcopyup" => Some(TmpCopyUp),
        _ => recursive_option(o),
    }
}

/// `rro`, `rnosuid`, `rnoatime`, ...: the recursive (mount_setattr) forms.
fn recursive_option(o: &str) -> Option<MountOpt> {
    use capsa_sys::mount::*;
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
    /// `tmpcopyup` on a tmpfs.
    pub copy_up: bool,
    /// Recursive attributes to set/clear after mounting.
    pub rec_set: u64,
    pub rec_clr: u64,
    /// `Some(recursive)` for `idmap`/`ridmap`.
    pub idmap: Option<bool>,
    /// uid_map and gid_map text of an idmapped mount.
    pub id_maps: Option<(String, String)>,
    /// A detached tree made by the parent, which init attaches with move_mount: an idmapped
    /// bind (see [`super::idmap`]), or any bind of a container with a user namespace, whose
    /// root may not be able to reach the source (see `InitPlan::make_trees`).
    pub tree: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

impl MountPlan {
    pub fn from_spec(m: &oci_spec::runtime::Mount) -> MountPlan {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        let mut propagation = Vec::new();
        let (mut rec_set, mut rec_clr, mut idmap, mut copy_up) = (0u64, 0u64, None, false);
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
                Some(MountOpt::TmpCopyUp) => copy_up = true,
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
            copy_up,
            id_maps: None,
            tree: None,
        }
    }

    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

/// Destinations and filesystem types the kernel or the runtime give special meaning: they
/// must be mounted on real directories, checked on the path exactly as config.json writes
/// it, with no symlink anywhere on the way (runc: "must be mounted on ordinary directory").
/// A `/proc -> /dev/p` symlink in the image would otherwise land procfs where masking and
/// read-only paths never find it.
const SPECIAL_TYPES: [&str; 6] = ["proc", "sysfs", "mqueue", "devpts", "cgroup", "cgroup2"];
const SPECIAL_DESTINATIONS: [&str; 7] = ["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys/fs/cgroup"];

impl MountPlan {
    /// True when the destination must be a real directory (see [`SPECIAL_TYPES`]).
    pub fn is_special(&self) -> bool {
        self.fstype.as_deref().is_some_and(|t| SPECIAL_TYPES.contains(&t))
            || SPECIAL_DESTINATIONS.iter().any(|d| clean(&self.destination) == Path::new(d))
    }

    /// A tmpfs (or /dev) that is mounted writable and made read-only at the end, as runc
    /// does, so that devices and copies can be made in it first.
    pub fn late_readonly(&self) -> bool {
        self.flags.contains(MsFlags::MS_RDONLY)
            && !self.copy_up
            && (self.fstype.as_deref() == Some("tmpfs") || clean(&self.destination) == Path::new("/dev"))
    }

    /// How symlinks in the destination are treated.
    pub fn follow(&self) -> Follow {
        if self.is_special() {
            Follow::Never
        } else {
            Follow::InRoot
        }
    }
}

/// `/a//b/./c/` → `/a/b/c` (no `..` resolution: that is the resolver's job).
fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        if let std::path::Component::Normal(s) = c {
            out.push(s);
        } else if c == std::path::Component::ParentDir {
            out.push("..");
        }
    }
    out
}

/// The files of /proc that may be covered by a bind mount (lxcfs and similar), as runc
/// allows; nothing else in procfs may be mounted over.
const PROC_BIND_ALLOWED: [&str; 9] = [
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
];

/// Opens (creating it if missing) the destination of `m` inside `root`.
fn destination(root: &Root, m: &MountPlan, source: Option<&Path>) -> Result<OwnedFd> {
    let follow = m.follow();
    let what = |e: std::io::Error| -> Error {
        if e.raw_os_error() == Some(libc::ELOOP) && follow == Follow::Never {
            Error::new(format!(
                "{}: a component is a symlink; {} must be mounted on a real directory",
                root.display(&m.destination),
                m.fstype.as_deref().unwrap_or("this destination")
            ))
        } else {
            Error::from(e).context(format!("destination {}", root.display(&m.destination)))
        }
    };
    let is_file_bind = m.is_bind()
        && match (&m.tree, source) {
            // Made by the parent: the source may be out of this process's reach.
            (Some(tree), _) => {
                capsa_sys::root::kind(&nix::sys::stat::fstat(tree.as_fd()).ctx("stat bind source")?) != nix::sys::stat::SFlag::S_IFDIR
            }
            (None, Some(src)) => !std::fs::metadata(src).with_ctx(|| format!("source {}", src.display()))?.is_dir(),
            (None, None) => false,
        };
    let fd = if is_file_bind { root.create_file(&m.destination, 0o755, follow) } else { root.mkdir_all(&m.destination, 0o755, follow) }
        .map_err(what)?;
    // `/data -> /` in the image: a mount on the container's root directory is stacked on `/`,
    // where init (which pivots into the directory underneath) never sees it, but every later
    // setns into the mount namespace (`capsa exec`) lands on top of it: exec'd processes, and
    // the runtime's own code in them, would see the mount (a volume with a fake /proc) as `/`.
    let (st, rst) = (nix::sys::stat::fstat(fd.as_fd()).ctx("stat destination")?, nix::sys::stat::fstat(root.as_fd()).ctx("stat rootfs")?);
    if (st.st_dev, st.st_ino) == (rst.st_dev, rst.st_ino) {
        bail!("{}: resolves to the container's root directory; nothing may be mounted there", root.display(&m.destination));
    }
    // Mounting over procfs is how the runtime's own writes get redirected
    // (CVE-2019-19921, CVE-2025-52881): only a new procfs, or a bind on one of a few files
    // named as such in config.json.
    if capsa_sys::procfs::is_procfs(fd.as_fd()).map_err(what)? && m.fstype.as_deref() != Some("proc") {
        let written = clean(&m.destination);
        if !(m.is_bind() && PROC_BIND_ALLOWED.iter().any(|a| written == Path::new(a))) {
            bail!(
                "{}: resolves into procfs; only a proc mount or a bind on {} may go there",
                root.display(&m.destination),
                PROC_BIND_ALLOWED.join(", ")
            );
        }
    }
    Ok(fd)
}

/// Mounts `m` inside `root` (before pivot_root, while `/proc` is still the host's, so the
/// target can be named as `/proc/self/fd/N` of an fd opened inside the root). `bundle` is
/// the directory relative bind sources are resolved against.
pub fn mount_one(root: &Root, bundle: &Path, m: &MountPlan) -> Result<()> {
    let source = m.source.as_ref().map(|s| if m.is_bind() && s.is_relative() { bundle.join(s) } else { s.clone() });
    if m.is_bind() && source.is_none() {
        bail!("bind mount without source");
    }
    let existed = root.open_path(&m.destination, m.follow()).is_ok();
    let target = destination(root, m, source.as_deref())?;
    let target_path = mount::fd_path(target.as_fd());

    // The mount just made, when it was attached from a detached tree: what is set on it
    // afterwards goes through this fd. Looking the destination up again instead would cross
    // the new mount, and a symlink in *its* contents could lead elsewhere: with
    // `/vol -> /mnt/x/link/..` a `ro` bind lands on /mnt/x, and after the mount `link` is the
    // bound directory's own symlink, so a second lookup made some other mount read-only.
    let mut top: Option<OwnedFd> = None;
    if let Some(tree) = &m.tree {
        mount::attach(tree.as_fd(), target.as_fd()).with_ctx(|| {
            format!("attach the bind of {} on {}", m.source.as_deref().unwrap_or(Path::new("")).display(), m.destination.display())
        })?;
        top = Some(tree.try_clone().ctx("dup the attached tree")?);
    } else if let (true, Some(src)) = (m.is_bind(), source.as_deref()) {
        // Detached, flags set on it (`ro` included), then attached: never a remount by path.
        let tree = super::trees::clone_bind(src, m.flags).with_ctx(|| format!("bind {} on {}", src.display(), m.destination.display()))?;
        mount::attach(tree.as_fd(), target.as_fd())
            .with_ctx(|| format!("attach the bind of {} on {}", src.display(), m.destination.display()))?;
        top = Some(tree);
    } else if m.fstype.as_deref() == Some("tmpfs") {
        // runc: a tmpfs on an existing directory takes its mode (sysfs's 0555 at
        // /sys/fs/cgroup); a read-only one is written first and made read-only at the end.
        let mode = nix::sys::stat::fstat(target.as_fd()).ctx("stat destination")?.st_mode & 0o7777;
        if m.copy_up {
            let (set, _) = attr_change(m.flags);
            let src = m.source.as_deref().and_then(Path::to_str).unwrap_or("tmpfs");
            let tree = super::tmpfs::copy_up(target.as_fd(), src, &m.data, set)?;
            mount::attach(tree.as_fd(), target.as_fd()).with_ctx(|| format!("attach tmpfs on {}", m.destination.display()))?;
            top = Some(tree);
        } else {
            let data = (!m.data.is_empty()).then_some(m.data.as_str());
            let flags = if m.late_readonly() { m.flags & !MsFlags::MS_RDONLY } else { m.flags };
            nix::mount::mount(source.as_deref(), target_path.as_str(), Some("tmpfs"), flags, data)
                .with_ctx(|| format!("mount tmpfs on {}", m.destination.display()))?;
        }
        if existed {
            let top = top_of(root, m, &top)?;
            let dir = nix::fcntl::openat(
                top.as_fd(),
                ".",
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ctx("open tmpfs")?;
            match nix::sys::stat::fchmod(dir.as_fd(), nix::sys::stat::Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(nix::errno::Errno::EROFS) => {}
                Err(e) => return Err(Error::from(e).context(format!("chmod {}", m.destination.display()))),
            }
        }
    } else {
        let data = (!m.data.is_empty()).then_some(m.data.as_str());
        let r = nix::mount::mount(source.as_deref(), target_path.as_str(), m.fstype.as_deref(), m.flags, data);
        if let Err(e) = r {
            // sysfs cannot be mounted in a user namespace without its own network
            // namespace; runc falls back to a recursive bind of the host's /sys.
            if m.fstype.as_deref() == Some("sysfs") && matches!(e, nix::errno::Errno::EPERM) {
                nix::mount::mount(Some("/sys"), target_path.as_str(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                    .with_ctx(|| format!("mount sysfs on {}", m.destination.display()))?;
                set_flags(root, m, m.flags & BIND_REMOUNT_FLAGS)?;
            } else {
                return Err(Error::from(e).context(format!(
                    "mount {} ({}) on {}",
                    source.as_deref().unwrap_or(Path::new("none")).display(),
                    m.fstype.as_deref().unwrap_or(""),
                    m.destination.display()
                )));
            }
        }
    }
    if m.rec_set != 0 || m.rec_clr != 0 {
        let top = top_of(root, m, &top)?;
        mount::set_attr(top.as_fd(), mount::Attr { set: m.rec_set, clear: m.rec_clr, propagation: 0, recursive: true })
            .with_ctx(|| format!("recursive mount options on {}", m.destination.display()))?;
    }
    if !m.propagation.is_empty() {
        let top = top_of(root, m, &top)?;
        for p in &m.propagation {
            let recursive = p.contains(MsFlags::MS_REC);
            let prop = (*p & !MsFlags::MS_REC).bits();
            mount::set_attr(top.as_fd(), mount::Attr { set: 0, clear: 0, propagation: prop, recursive })
                .with_ctx(|| format!("set propagation of {}", m.destination.display()))?;
        }
    }
    Ok(())
}

/// The mount just made for `m`: the attached tree when there is one, else looked up again.
fn top_of(root: &Root, m: &MountPlan, top: &Option<OwnedFd>) -> Result<OwnedFd> {
    match top {
        Some(fd) => fd.try_clone().ctx("dup the new mount's fd"),
        None => mounted(root, m),
    }
}

/// The root of what was just mounted at `m`'s destination (looked up again: the fd opened
/// before the mount names the directory underneath it). Only for mounts made with mount(2);
/// see [`mount_one`] for why a second lookup is a weakness where the destination may go
/// through symlinks.
fn mounted(root: &Root, m: &MountPlan) -> Result<OwnedFd> {
    root.open_path(&m.destination, m.follow()).with_ctx(|| format!("reopen {}", m.destination.display()))
}

/// The per-mount flags of a bind (`ro`, `nosuid`, ...) set on the mount just made at `m`'s
/// destination, with mount_setattr on its fd: flags already set (including those the
/// kernel locks in a user namespace) stay as they are.
fn set_flags(root: &Root, m: &MountPlan, flags: MsFlags) -> Result<()> {
    let top = mounted(root, m)?;
    let (set, clear) = attr_change(flags);
    mount::set_attr(top.as_fd(), mount::Attr { set, clear, propagation: 0, recursive: false })
        .with_ctx(|| format!("remount {} with {:?}", m.destination.display(), flags))
}

/// The flags a bind mount must be remounted with to take effect.
pub(crate) const BIND_REMOUNT_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// `MS_*` per-mount flags as `MOUNT_ATTR_*` bits to set and to clear (the atime mode is one
/// field: setting it clears the others).
pub fn attr_change(flags: MsFlags) -> (u64, u64) {
    use mount::*;
    let mut set = 0;
    let mut clear = 0;
    for (f, b) in [
        (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
    ] {
        if flags.contains(f) {
            set |= b;
        }
    }
    if flags.contains(MsFlags::MS_NOATIME) {
        set |= MOUNT_ATTR_NOATIME;
        clear |= MOUNT_ATTR_ATIME;
    } else if flags.contains(MsFlags::MS_STRICTATIME) {
        set |= MOUNT_ATTR_STRICTATIME;
        clear |= MOUNT_ATTR_ATIME;
    } else if flags.contains(MsFlags::MS_RELATIME) {
        clear |= MOUNT_ATTR_ATIME;
    }
    (set, clear)
}

/// The per-mount flags of `flags` as MOUNT_ATTR bits (for trees made with open_tree).
pub fn attr_bits(flags: MsFlags) -> u64 {
    attr_change(flags).0
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

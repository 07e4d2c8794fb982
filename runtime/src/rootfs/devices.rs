//! Device nodes in the container's /dev: runc's default set plus `linux.devices`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use capsa_sys::{mount, Follow, Root};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::mount::MsFlags;
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::bail;
use crate::error::{Context, Error, Result};

#[derive(Debug, Clone)]
pub struct DevicePlan {
    pub path: PathBuf,
    /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The devices every container gets (runc's list), unless config.json lists the path.
pub fn default_devices() -> Vec<DevicePlan> {
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
        .into_iter()
        .map(|(n, major, minor)| DevicePlan {
            path: PathBuf::from("/dev").join(n),
            kind: SFlag::S_IFCHR,
            major,
            minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        })
        .collect()
}

pub fn from_spec(d: &oci_spec::runtime::LinuxDevice) -> Result<DevicePlan> {
    use oci_spec::runtime::LinuxDeviceType as T;
    let kind = match d.typ() {
        T::C | T::U => SFlag::S_IFCHR,
        T::B => SFlag::S_IFBLK,
        T::P => SFlag::S_IFIFO,
        T::A => crate::bail!("linux.devices {:?}: type \"a\" is not a device node type", d.path()),
    };
    Ok(DevicePlan {
        path: d.path().clone(),
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: crate::user::check_id(&format!("linux.devices {:?} uid", d.path()), d.uid().unwrap_or(0))?,
        gid: crate::user::check_id(&format!("linux.devices {:?} gid", d.path()), d.gid().unwrap_or(0))?,
    })
}

/// Creates `d` inside `root`: mknod, or a bind mount of the host's node when in a user
/// namespace (mknod of devices is not allowed there). Every step works on the parent
/// directory's fd, so a symlink swapped in cannot move the node elsewhere.
pub fn create(root: &Root, d: &DevicePlan, bind: bool) -> Result<()> {
    if bind {
        let target = root.create_file(&d.path, 0o755, Follow::InRoot).with_ctx(|| format!("create {}", root.display(&d.path)))?;
        nix::mount::mount(Some(&d.path), mount::fd_path(target.as_fd()).as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_ctx(|| format!("bind device {}", d.path.display()))?;
        return Ok(());
    }
    let (dir, name) = root.parent(&d.path, 0o755, Follow::InRoot).with_ctx(|| format!("parent of {}", root.display(&d.path)))?;
    match unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(Error::from(e).context(format!("replace {}", d.path.display()))),
    }
    mknodat(&dir, name.as_os_str(), d.kind, Mode::from_bits_truncate(d.mode), makedev(d.major, d.minor))
        .with_ctx(|| format!("mknod {}", d.path.display()))?;
    fchownat(&dir, name.as_os_str(), Some(Uid::from_raw(d.uid)), Some(Gid::from_raw(d.gid)), AtFlags::AT_SYMLINK_NOFOLLOW)
        .with_ctx(|| format!("chown {}", d.path.display()))?;
    Ok(())
}

/// A symlink `link -> target` inside `root`, unless something is already there.
fn symlink_in(root: &Root, target: &str, link: &str) -> Result<()> {
    let (dir, name) = root.parent(Path::new(link), 0o755, Follow::InRoot).with_ctx(|| format!("parent of {link}"))?;
    match symlinkat(target, &dir, name.as_os_str()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::from(e).context(format!("symlink {link}"))),
    }
}

/// /dev/fd, /dev/stdin, ... and /dev/core, as runc makes them.
pub fn create_symlinks(root: &Root) -> Result<()> {
    let mut links = vec![
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "/dev/core"));
    }
    for (target, link) in links {
        symlink_in(root, target, link)?;
    }
    Ok(())
}

/// Points /dev/ptmx at the container's own devpts instance.
pub fn setup_ptmx(root: &Root) -> Result<()> {
    let (dir, name) = root.parent(Path::new("/dev/ptmx"), 0o755, Follow::InRoot).ctx("parent of /dev/ptmx")?;
    match unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(Error::from(e).context("remove /dev/ptmx")),
    }
    symlinkat("pts/ptmx", &dir, name.as_os_str()).ctx("symlink /dev/ptmx")
}

/// Opens `path` inside `root` and checks it is the character device `major:minor` (a
/// `/dev/null` that is a symlink to `/proc/keys`, or a bind of some other file, is refused:
/// CVE-2025-31133). Returns an `O_PATH` fd on it.
pub fn open_verified(root: &Root, path: &Path, major: u64, minor: u64) -> Result<OwnedFd> {
    let fd = match root.open_path(path, Follow::Never) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            bail!("{}: a symlink, not the character device {major}:{minor}", path.display())
        }
        Err(e) => return Err(Error::from(e).context(format!("open {}", path.display()))),
    };
    let st = nix::sys::stat::fstat(fd.as_fd()).with_ctx(|| format!("stat {}", path.display()))?;
    if capsa_sys::root::kind(&st) != SFlag::S_IFCHR || st.st_rdev != makedev(major, minor) {
        bail!("{}: not the character device {major}:{minor}", path.display());
    }
    Ok(fd)
}

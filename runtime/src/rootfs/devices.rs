//! Device nodes in the container's /dev: runc's default set plus `linux.devices`.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chown, Gid, Uid};

use super::path::{create_file, mkdir_all, open_inside, secure_join};
use crate::error::{Context, Result};

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
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// Creates `d` inside `rootfs`: mknod, or a bind mount of the host's node when in a
/// user namespace (mknod of devices is not allowed there).
pub fn create(rootfs: &Path, d: &DevicePlan, bind: bool) -> Result<()> {
    let dest = secure_join(rootfs, &d.path)?;
    if let Some(parent) = dest.parent() {
        mkdir_all(parent, 0o755)?;
    }
    if bind {
        create_file(&dest)?;
        let target = open_inside(rootfs, &dest)?;
        mount(Some(&d.path), format!("/proc/self/fd/{}", target.as_raw_fd()).as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_ctx(|| format!("bind device {}", d.path.display()))?;
        return Ok(());
    }
    match std::fs::remove_file(&dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::error::Error::from(e).context(format!("replace {}", d.path.display()))),
    }
    mknod(&dest, d.kind, Mode::from_bits_truncate(d.mode), makedev(d.major, d.minor)).with_ctx(|| format!("mknod {}", d.path.display()))?;
    chown(&dest, Some(Uid::from_raw(d.uid)), Some(Gid::from_raw(d.gid))).with_ctx(|| format!("chown {}", d.path.display()))?;
    Ok(())
}

/// /dev/fd, /dev/stdin, ... and /dev/ptmx, as runc makes them.
pub fn create_symlinks(rootfs: &Path) -> Result<()> {
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
        let at = secure_join(rootfs, Path::new(link))?;
        match std::os::unix::fs::symlink(target, &at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(crate::error::Error::from(e).context(format!("symlink {link}"))),
        }
    }
    Ok(())
}

/// Points /dev/ptmx at the container's own devpts instance.
pub fn setup_ptmx(rootfs: &Path) -> Result<()> {
    let at = secure_join(rootfs, Path::new("/dev/ptmx"))?;
    match std::fs::remove_file(&at) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::error::Error::from(e).context("remove /dev/ptmx")),
    }
    std::os::unix::fs::symlink("pts/ptmx", &at).ctx("symlink /dev/ptmx")
}

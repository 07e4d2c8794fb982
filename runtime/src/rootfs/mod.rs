//! The container's filesystem view, built by init inside its new mount namespace:
//!
//! 1. `/` becomes rslave (or `linux.rootfsPropagation`) so nothing leaks to the host;
//! 2. the rootfs is bind-mounted on itself (pivot_root needs a mount point);
//! 3. `mounts[]` in order, targets resolved inside the rootfs ([`path`]);
//! 4. /dev: default and `linux.devices` nodes, /dev/ptmx and the /dev/fd symlinks;
//! 5. pivot_root (or MS_MOVE + chroot with `--no-pivot`);
//! 6. then, in container paths: sysctl, readonlyPaths, maskedPaths, read-only root.

pub mod devices;
pub mod idmap;
pub mod mountinfo;
pub mod mounts;
pub mod path;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot, pivot_root};

use self::devices::DevicePlan;
use self::mounts::MountPlan;
use crate::error::{Context, Result};

/// One cgroup hierarchy to show at the container's `cgroup` mount.
#[derive(Debug, Clone)]
pub struct CgroupHierarchy {
    /// Directory name under the mount point (`memory`, `cpu,cpuacct`, `unified`, ...).
    pub name: String,
    /// `cgroup` or `cgroup2`.
    pub fstype: String,
    /// Mount data selecting the hierarchy (`memory`, `none,name=systemd`, ``).
    pub data: String,
    /// The container's cgroup directory on the host, bound when there is no cgroupns.
    pub host_dir: PathBuf,
}

/// How to mount `type: cgroup` entries.
#[derive(Debug, Clone, Default)]
pub struct CgroupView {
    /// Pure cgroup v2 host: one cgroup2 mount at the destination itself.
    pub unified: bool,
    /// The container has its own cgroup namespace: mount the filesystems afresh
    /// (the kernel roots them at the container's cgroup); otherwise bind host dirs.
    pub namespaced: bool,
    pub hierarchies: Vec<CgroupHierarchy>,
}

/// Everything init needs to build the rootfs, prepared by the parent.
#[derive(Debug, Clone)]
pub struct RootfsPlan {
    pub rootfs: PathBuf,
    pub bundle: PathBuf,
    pub root_propagation: MsFlags,
    pub readonly: bool,
    pub no_pivot: bool,
    pub mounts: Vec<MountPlan>,
    /// Create the default and listed device nodes (false when /dev is a host bind).
    pub setup_dev: bool,
    pub devices: Vec<DevicePlan>,
    /// In a user namespace device nodes are bind-mounted from the host.
    pub bind_devices: bool,
    pub cgroup: CgroupView,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub sysctl: Vec<(String, String)>,
    /// process.cwd, created (0755) if missing, as runc does.
    pub cwd: PathBuf,
}

/// `linux.rootfsPropagation` value to mount flags.
pub fn propagation_flag(s: &str) -> Option<MsFlags> {
    Some(match s {
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Steps 1–5: runs in init, in its own mount namespace, before pivot_root.
pub fn prepare(p: &RootfsPlan) -> Result<()> {
    mount(None::<&str>, "/", None::<&str>, p.root_propagation, None::<&str>).ctx("make / private to the container")?;
    make_parent_mount_private(&p.rootfs)?;
    mount(Some(&p.rootfs), &p.rootfs, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .with_ctx(|| format!("bind rootfs {}", p.rootfs.display()))?;

    for (i, m) in p.mounts.iter().enumerate() {
        let r = if m.fstype.as_deref() == Some("cgroup") { mount_cgroup(p, m) } else { mounts::mount_one(&p.rootfs, &p.bundle, m) };
        r.with_ctx(|| format!("mounts[{i}] {}", m.destination.display()))?;
    }

    let cwd = path::secure_join(&p.rootfs, &p.cwd)?;
    if std::fs::symlink_metadata(&cwd).is_err() {
        path::mkdir_all(&cwd, 0o755).with_ctx(|| format!("process.cwd {}", p.cwd.display()))?;
    }
    if p.setup_dev {
        for d in &p.devices {
            devices::create(&p.rootfs, d, p.bind_devices).with_ctx(|| format!("linux.devices {}", d.path.display()))?;
        }
        devices::setup_ptmx(&p.rootfs)?;
        devices::create_symlinks(&p.rootfs)?;
    }
    Ok(())
}

/// Step 5.
pub fn enter(p: &RootfsPlan) -> Result<()> {
    chdir(&p.rootfs).with_ctx(|| format!("chdir {}", p.rootfs.display()))?;
    if p.no_pivot {
        mount(Some(&p.rootfs), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).ctx("move rootfs to /")?;
        chroot(".").ctx("chroot")?;
    } else {
        pivot_root(".", ".").ctx("pivot_root")?;
        // The old root is stacked under the new one; detach it without the unmount
        // propagating to the host.
        mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>).ctx("make old root rslave")?;
        umount2(".", MntFlags::MNT_DETACH).ctx("detach old root")?;
    }
    chdir("/").ctx("chdir /")?;
    Ok(())
}

/// Step 6, in container paths after [`enter`].
pub fn finalize(p: &RootfsPlan) -> Result<()> {
    for (k, v) in &p.sysctl {
        let file = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&file, v).with_ctx(|| format!("linux.sysctl {k:?} = {v:?}"))?;
    }
    for path in &p.readonly_paths {
        readonly_path(path).with_ctx(|| format!("linux.readonlyPaths {}", path.display()))?;
    }
    for path in &p.masked_paths {
        mask_path(path).with_ctx(|| format!("linux.maskedPaths {}", path.display()))?;
    }
    if p.readonly {
        mounts::remount_bind("/", MsFlags::MS_RDONLY).ctx("root.readonly: remount / read-only")?;
    }
    Ok(())
}

fn readonly_path(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    mount(Some(path), path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).ctx("bind")?;
    let p = path.to_str().ok_or_else(|| crate::error::Error::new("path is not UTF-8"))?;
    mounts::remount_bind(p, MsFlags::MS_RDONLY | MsFlags::MS_REC).ctx("remount read-only")
}

fn mask_path(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
        Ok(m) if m.is_dir() => {
            mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>).ctx("mount tmpfs")?;
            Ok(())
        }
        Ok(_) => {
            mount(Some("/dev/null"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>).ctx("bind /dev/null")?;
            Ok(())
        }
    }
}

/// pivot_root refuses a new root whose parent mount is shared.
fn make_parent_mount_private(rootfs: &Path) -> Result<()> {
    let mounts = mountinfo::read()?;
    let parent = mounts.iter().filter(|m| rootfs.starts_with(&m.mount_point)).max_by_key(|m| m.mount_point.as_os_str().len());
    if let Some(m) = parent {
        if m.optional.iter().any(|o| o.starts_with("shared:")) {
            mount(None::<&str>, &m.mount_point, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
                .with_ctx(|| format!("make {} private", m.mount_point.display()))?;
        }
    }
    Ok(())
}

/// `type: cgroup`: the container's own cgroups at the destination.
fn mount_cgroup(p: &RootfsPlan, m: &MountPlan) -> Result<()> {
    let dest = path::secure_join(&p.rootfs, &m.destination)?;
    path::mkdir_all(&dest, 0o755)?;
    let view = &p.cgroup;
    let flags = m.flags & !MsFlags::MS_BIND;
    if view.unified {
        let Some(h) = view.hierarchies.first() else { return Ok(()) };
        return mount_hierarchy(&p.rootfs, &dest, view.namespaced, h, flags);
    }
    let fd = path::open_inside(&p.rootfs, &dest)?;
    mount(
        Some("tmpfs"),
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        Some("tmpfs"),
        flags & !MsFlags::MS_RDONLY,
        Some("mode=755"),
    )
    .ctx("mount tmpfs")?;
    for h in &view.hierarchies {
        let sub = dest.join(&h.name);
        path::mkdir_all(&sub, 0o755)?;
        mount_hierarchy(&p.rootfs, &sub, view.namespaced, h, flags).with_ctx(|| format!("cgroup {}", h.name))?;
        if h.name.contains(',') {
            for part in h.name.split(',') {
                let link = dest.join(part);
                if !link.exists() {
                    std::os::unix::fs::symlink(&h.name, &link).with_ctx(|| format!("symlink {}", link.display()))?;
                }
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        let fd = path::open_inside(&p.rootfs, &dest)?;
        mount(
            None::<&str>,
            format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
            None::<&str>,
            MsFlags::MS_REMOUNT | flags,
            Some("mode=755"),
        )
        .ctx("remount cgroup tmpfs read-only")?;
    }
    Ok(())
}

/// Mounts one hierarchy at `at` (a path inside `rootfs`): afresh in a cgroup namespace,
/// else as a bind of the container's host directory, remounted with `flags`.
fn mount_hierarchy(rootfs: &Path, at: &Path, namespaced: bool, h: &CgroupHierarchy, flags: MsFlags) -> Result<()> {
    let fd = path::open_inside(rootfs, at)?;
    let target = format!("/proc/self/fd/{}", fd.as_raw_fd());
    if namespaced {
        let data = (!h.data.is_empty()).then_some(h.data.as_str());
        mount(Some(h.fstype.as_str()), target.as_str(), Some(h.fstype.as_str()), flags, data)?;
    } else {
        mount(Some(&h.host_dir), target.as_str(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)?;
        // Reopen: the old fd names the directory under the new mount.
        let fd = path::open_inside(rootfs, at)?;
        let target = format!("/proc/self/fd/{}", fd.as_raw_fd());
        mounts::remount_bind(&target, flags & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC))?;
    }
    Ok(())
}

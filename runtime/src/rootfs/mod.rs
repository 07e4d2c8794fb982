//! The container's filesystem view, built by init inside its new mount namespace:
//!
//! 1. `/` becomes rslave (or takes `linux.rootfsPropagation`) so nothing leaks to the host;
//! 2. the rootfs is bind-mounted on itself (pivot_root needs a mount point) and opened as a
//!    [`Root`]: from here on every path is resolved inside it by the kernel, never joined;
//! 3. `mounts[]` in order; special destinations (/proc, /sys, /dev/pts, ...) must be real
//!    directories, and nothing but procfs may cover procfs;
//! 4. /dev: default and `linux.devices` nodes, /dev/ptmx and the /dev/fd symlinks;
//! 5. pivot_root (or MS_MOVE + chroot with `--no-pivot`); the old root is made rslave and
//!    detached; then the rootfs propagation is applied to the new `/`;
//! 6. then, inside the container: sysctls through a private procfs handle, readonlyPaths
//!    and maskedPaths on fds (a masked file gets a verified /dev/null), read-only root.

pub mod devices;
pub mod trees;

pub use mounts::MountPlan;
pub mod mounts;
pub mod tmpfs;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use capsa_sys::{mount as sysmount, Follow, Root};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};

use self::devices::DevicePlan;
use crate::bail;
use crate::cgroup::{CgroupHierarchy, CgroupView};
use crate::error::{Context, Error, Result};

/// Everything init needs to build the rootfs, prepared by the parent.
#[derive(Debug, Clone)]
pub struct RootfsPlan {
    pub rootfs: PathBuf,
    pub bundle: PathBuf,
    /// `linux.rootfsPropagation`, if given (the default is rslave).
    pub root_propagation: Option<MsFlags>,
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
    /// False when the container shares the runtime's mount namespace: then nothing is
    /// mounted and init only chroots into the rootfs (see process::plan, which refuses the
    /// fields that would need mounts).
    pub own_mount_ns: bool,
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

/// What config.json validation asks of a mount: options a bind mount cannot pass to the
/// kernel as data must be ones we know.
pub fn check_mount(i: usize, m: &oci_spec::runtime::Mount) -> Result<()> {
    for o in m.options().iter().flatten() {
        if mounts::parse_option(o).is_none() && m.typ().as_deref() == Some("bind") {
            bail!("mounts[{i}].options: unknown mount option {o:?}");
        }
    }
    Ok(())
}

/// What `/` of the new mount namespace becomes before anything is mounted: the rootfs
/// propagation itself, except that an unbindable `/` could not be bind-mounted on itself
/// (that one is applied after pivot_root, on the container's `/` only).
fn initial_propagation(p: &RootfsPlan) -> MsFlags {
    match p.root_propagation {
        Some(f) if !f.contains(MsFlags::MS_UNBINDABLE) => f,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    }
}

/// Steps 1–4: runs in init, in its own mount namespace, before pivot_root. Returns the
/// rootfs as a [`Root`].
pub fn prepare(p: &RootfsPlan) -> Result<Root> {
    if !p.own_mount_ns {
        let root = Root::open(&p.rootfs).with_ctx(|| format!("open rootfs {}", p.rootfs.display()))?;
        make_cwd(&root, &p.cwd)?;
        return Ok(root);
    }
    mount(None::<&str>, "/", None::<&str>, initial_propagation(p), None::<&str>).ctx("set propagation of /")?;
    make_parent_mount_private(&p.rootfs)?;
    mount(Some(&p.rootfs), &p.rootfs, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .with_ctx(|| format!("bind rootfs {}", p.rootfs.display()))?;
    let root = Root::open(&p.rootfs).with_ctx(|| format!("open rootfs {}", p.rootfs.display()))?;

    for (i, m) in p.mounts.iter().enumerate() {
        let r = if m.fstype.as_deref() == Some("cgroup") { mount_cgroup(p, &root, m) } else { mounts::mount_one(&root, &p.bundle, m) };
        r.with_ctx(|| format!("mounts[{i}] {}", m.destination.display()))?;
    }

    make_cwd(&root, &p.cwd)?;
    if p.setup_dev {
        for d in &p.devices {
            devices::create(&root, d, p.bind_devices).with_ctx(|| format!("linux.devices {}", d.path.display()))?;
        }
        devices::setup_ptmx(&root)?;
        devices::create_symlinks(&root)?;
    }
    Ok(root)
}

/// process.cwd, made (0755) if missing.
fn make_cwd(root: &Root, cwd: &Path) -> Result<()> {
    match root.open_path(cwd, Follow::InRoot) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            root.mkdir_all(cwd, 0o755, Follow::InRoot).with_ctx(|| format!("process.cwd {}", cwd.display())).map(drop)
        }
        Err(e) => Err(Error::from(e).context(format!("process.cwd {}", cwd.display()))),
    }
}

/// Step 5. `root` is the rootfs from [`prepare`].
pub fn enter(p: &RootfsPlan, root: Root) -> Result<()> {
    if !p.own_mount_ns {
        // The runtime's mount namespace: no pivot_root (it would change the host's root).
        fchdir(root.as_fd()).with_ctx(|| format!("chdir {}", p.rootfs.display()))?;
        drop(root);
        chroot(".").ctx("chroot")?;
        chdir("/").ctx("chdir /")?;
        return Ok(());
    }
    if p.no_pivot {
        hide_host_proc_and_sys(&p.rootfs)?;
        fchdir(root.as_fd()).with_ctx(|| format!("chdir {}", p.rootfs.display()))?;
        drop(root);
        mount(Some(&p.rootfs), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).ctx("move rootfs to /")?;
        chroot(".").ctx("chroot")?;
    } else {
        let old_root = nix::fcntl::open(
            "/",
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ctx("open old root")?;
        fchdir(root.as_fd()).with_ctx(|| format!("chdir {}", p.rootfs.display()))?;
        drop(root);
        pivot_root(".", ".").ctx("pivot_root")?;
        // The old root is stacked on the new one, and our cwd still names it: make it
        // rslave there (not on the new root, whose propagation is the container's), so
        // detaching it does not propagate to the host.
        fchdir(old_root.as_fd()).ctx("chdir old root")?;
        drop(old_root);
        mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>).ctx("make old root rslave")?;
        umount2(".", MntFlags::MNT_DETACH).ctx("detach old root")?;
    }
    chdir("/").ctx("chdir /")?;
    if let Some(f) = p.root_propagation {
        mount(None::<&str>, "/", None::<&str>, f, None::<&str>).ctx("linux.rootfsPropagation")?;
    }
    Ok(())
}

/// `--no-pivot` leaves the host's mounts in the container's mount namespace under the
/// chroot, and the kernel checks procfs and sysfs mounts against all of them, chroot or not:
/// the host's /proc and /sys (and what is mounted below them) are detached first, or covered
/// by an empty read-only tmpfs where they cannot be, as runc does.
fn hide_host_proc_and_sys(rootfs: &Path) -> Result<()> {
    let mounts = capsa_sys::mountinfo::read_self().ctx("read /proc/self/mountinfo")?;
    let mut targets: Vec<&Path> = mounts
        .iter()
        .filter(|m| m.fstype == "proc" || m.fstype == "sysfs")
        .map(|m| m.mount_point.as_path())
        .filter(|p| !p.starts_with(rootfs))
        .collect();
    // Deepest first, so nothing is detached from under another.
    targets.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    targets.dedup();
    for t in targets {
        if umount2(t, MntFlags::MNT_DETACH).is_ok() {
            continue;
        }
        mount(
            Some("tmpfs"),
            t,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=0"),
        )
        .with_ctx(|| format!("--no-pivot: hide the host's {}", t.display()))?;
    }
    Ok(())
}

/// Step 6, inside the container after [`enter`]: nothing here follows a symlink or names
/// a path through `/proc/self/fd`.
pub fn finalize(p: &RootfsPlan) -> Result<()> {
    let root = Root::open(Path::new("/")).ctx("open /")?;
    if !p.sysctl.is_empty() {
        let proc = capsa_sys::procfs::ProcFs::new().ctx("linux.sysctl: open procfs")?;
        for (k, v) in &p.sysctl {
            let file = format!("sys/{}", k.replace('.', "/"));
            proc.write(&file, v.as_bytes()).with_ctx(|| format!("linux.sysctl {k:?} = {v:?}"))?;
        }
    }
    for path in &p.readonly_paths {
        readonly_path(&root, path).with_ctx(|| format!("linux.readonlyPaths {}", path.display()))?;
    }
    if !p.masked_paths.is_empty() {
        // Opened (and verified) on first use: a container without files to mask may have
        // no /dev/null at all.
        let mut null: Option<OwnedFd> = None;
        for path in &p.masked_paths {
            mask_path(&root, path, &mut null).with_ctx(|| format!("linux.maskedPaths {}", path.display()))?;
        }
    }
    for m in p.mounts.iter().filter(|m| m.late_readonly()) {
        let top = root.open_path(&m.destination, m.follow()).with_ctx(|| format!("reopen {}", m.destination.display()))?;
        let (set, clear) = mounts::attr_change(MsFlags::MS_RDONLY);
        sysmount::set_attr(top.as_fd(), sysmount::Attr { set, clear, propagation: 0, recursive: false })
            .with_ctx(|| format!("make {} read-only", m.destination.display()))?;
    }
    if p.readonly {
        let (set, clear) = mounts::attr_change(MsFlags::MS_RDONLY);
        sysmount::set_attr(root.as_fd(), sysmount::Attr { set, clear, propagation: 0, recursive: false })
            .ctx("root.readonly: make / read-only")?;
    }
    Ok(())
}

/// The target of a masked or read-only path: `None` when it does not exist (nothing to
/// hide). Symlinks are refused, not followed: `/proc/x -> /elsewhere` would hide the wrong
/// thing and leave the real one open.
fn open_target(root: &Root, path: &Path) -> Result<Option<OwnedFd>> {
    match root.open_path(path, Follow::Never) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!("a component of the path is a symlink: refusing to follow it"),
        Err(e) => Err(e.into()),
    }
}

fn readonly_path(root: &Root, path: &Path) -> Result<()> {
    let Some(target) = open_target(root, path)? else { return Ok(()) };
    let tree = sysmount::clone_tree(target.as_fd(), true).ctx("bind")?;
    let (set, clear) = mounts::attr_change(MsFlags::MS_RDONLY);
    sysmount::set_attr(tree.as_fd(), sysmount::Attr { set, clear, propagation: 0, recursive: true }).ctx("make read-only")?;
    sysmount::attach(tree.as_fd(), target.as_fd()).ctx("attach")
}

fn mask_path(root: &Root, path: &Path, null: &mut Option<OwnedFd>) -> Result<()> {
    let Some(target) = open_target(root, path)? else { return Ok(()) };
    let st = nix::sys::stat::fstat(target.as_fd()).ctx("stat")?;
    let tree = if capsa_sys::root::kind(&st) == nix::sys::stat::SFlag::S_IFDIR {
        sysmount::new_fs("tmpfs", &[], sysmount::MOUNT_ATTR_RDONLY).ctx("mount tmpfs")?
    } else {
        if null.is_none() {
            *null = Some(devices::open_verified(root, Path::new("/dev/null"), 1, 3).ctx("cannot mask files")?);
        }
        let Some(n) = null.as_ref() else { bail!("no /dev/null") };
        sysmount::clone_tree(n.as_fd(), false).ctx("bind /dev/null")?
    };
    sysmount::attach(tree.as_fd(), target.as_fd()).ctx("attach")
}

/// pivot_root refuses a new root whose parent mount is shared.
fn make_parent_mount_private(rootfs: &Path) -> Result<()> {
    let mounts = capsa_sys::mountinfo::read_self().ctx("read /proc/self/mountinfo")?;
    let parent = mounts.iter().filter(|m| rootfs.starts_with(&m.mount_point)).max_by_key(|m| m.mount_point.as_os_str().len());
    if let Some(m) = parent {
        if m.shared() {
            mount(None::<&str>, &m.mount_point, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
                .with_ctx(|| format!("make {} private", m.mount_point.display()))?;
        }
    }
    Ok(())
}

/// `type: cgroup`: the container's own cgroups at the destination (a real directory).
fn mount_cgroup(p: &RootfsPlan, root: &Root, m: &MountPlan) -> Result<()> {
    let nodir = |e: std::io::Error| -> Error {
        if e.raw_os_error() == Some(libc::ELOOP) {
            Error::new(format!("{}: a component is a symlink; cgroup must be mounted on a real directory", root.display(&m.destination)))
        } else {
            Error::from(e).context(format!("destination {}", root.display(&m.destination)))
        }
    };
    let dest = root.mkdir_all(&m.destination, 0o755, Follow::Never).map_err(nodir)?;
    let view = &p.cgroup;
    let flags = m.flags & !MsFlags::MS_BIND;
    if view.unified {
        let Some(h) = view.hierarchies.first() else { return Ok(()) };
        return mount_hierarchy(root, &m.destination, dest, view.namespaced, h, flags);
    }
    // As runc: a writable tmpfs (nosuid, nodev, noexec) that takes the mode of the directory
    // it covers (sysfs's 0555, so container root without CAP_DAC_OVERRIDE cannot add to it);
    // the hierarchies in it are read-only when the cgroup mount is.
    let mode = nix::sys::stat::fstat(dest.as_fd()).ctx("stat destination")?.st_mode & 0o7777;
    let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), sysmount::fd_path(dest.as_fd()).as_str(), Some("tmpfs"), tmpfs_flags, Some("mode=755")).ctx("mount tmpfs")?;
    for h in &view.hierarchies {
        let sub = m.destination.join(&h.name);
        let fd = root.mkdir_all(&sub, 0o755, Follow::Never).map_err(nodir)?;
        mount_hierarchy(root, &sub, fd, view.namespaced, h, flags).with_ctx(|| format!("cgroup {}", h.name))?;
        if h.name.contains(',') {
            for part in h.name.split(',') {
                let (dir, name) = root.parent(&m.destination.join(part), 0o755, Follow::Never).map_err(nodir)?;
                match nix::unistd::symlinkat(h.name.as_str(), &dir, name.as_os_str()) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(Error::from(e).context(format!("symlink {part}"))),
                }
            }
        }
    }
    let top = root.open_path(&m.destination, Follow::Never).map_err(nodir)?;
    let dir = nix::fcntl::openat(
        top.as_fd(),
        ".",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx("open the cgroup tmpfs")?;
    nix::sys::stat::fchmod(dir.as_fd(), nix::sys::stat::Mode::from_bits_truncate(mode)).ctx("chmod the cgroup tmpfs")?;
    Ok(())
}

/// Mounts one hierarchy on `at` (`path` inside the root): afresh in a cgroup namespace,
/// else as a bind of the container's host directory, with `flags` applied after.
fn mount_hierarchy(root: &Root, path: &Path, at: OwnedFd, namespaced: bool, h: &CgroupHierarchy, flags: MsFlags) -> Result<()> {
    let target = sysmount::fd_path(at.as_fd());
    let data = (!h.data.is_empty()).then_some(h.data.as_str());
    let fresh = namespaced.then(|| mount(Some(h.fstype.as_str()), target.as_str(), Some(h.fstype.as_str()), flags, data));
    match fresh {
        Some(Ok(())) => {}
        // In a user namespace the kernel may refuse a fresh mount (EPERM without a cgroup
        // namespace of our own, EBUSY for a read-only one of the shared superblock): bind the
        // container's host directory instead, as runc does.
        Some(Err(e)) if !matches!(e, nix::errno::Errno::EPERM | nix::errno::Errno::EBUSY) => return Err(e.into()),
        _ => {
            mount(Some(&h.host_dir), target.as_str(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)?;
            let top = root.open_path(path, Follow::Never)?;
            let per_mount = flags & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
            let (set, clear) = mounts::attr_change(per_mount);
            sysmount::set_attr(top.as_fd(), sysmount::Attr { set, clear, propagation: 0, recursive: false })?;
        }
    }
    Ok(())
}

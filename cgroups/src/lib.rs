//! capsa's cgroup managers behind one small object-safe trait, [`Manager`]: cgroup v1
//! (`v1.rs`, Legacy hosts), Hybrid (`hybrid.rs`: the v1 manager plus a directory in the
//! cgroup2 mount at `/sys/fs/cgroup/unified`) and cgroup v2 (`v2.rs`, Unified hosts).
//!
//! ```no_run
//! # fn main() -> capsa_cgroups::Result<()> {
//! use capsa_cgroups::{detect, manager, Resources};
//! let mode = detect()?;
//! let cg = manager(mode, Some("/capsa/c1"), "c1")?;
//! cg.create()?;
//! cg.apply(&Resources::default())?;
//! cg.add_task(1234)?;
//! // Later, possibly from another process (`capsa delete`):
//! let cg = capsa_cgroups::manager_from_paths(cg.paths().values())?;
//! cg.kill_all(libc::SIGKILL)?;
//! cg.destroy()?;
//! # Ok(()) }
//! ```
//!
//! What else is here: [`Resources`] covers every `linux.resources` field with runc's v1↔v2
//! conversions (`resources.rs`); [`Manager::stats`] gives runc's `events --stats` data
//! (`stats.rs`); [`OomWatcher`] reports OOM kills (`oom.rs`); on cgroup v2, device rules become
//! an eBPF program (`devices.rs`). On a Hybrid host, hugepage limits and `unified` keys whose
//! controller lives on the cgroup2 side (hugetlb on this project's CI) are written there.
//!
//! Where the container's cgroup goes is runc's cgroupfs-driver rule; see the table in
//! `path.rs`: an absolute `linux.cgroupsPath` is relative to each hierarchy's root, a
//! relative one to the runtime's own cgroup, and an absent one is `<own cgroup>/<id>`.
//!
//! Why cgroupfs is written by hand rather than through cgroups-rs: the runtime needs exact
//! runc semantics (placement in every v1 hierarchy including `name=systemd` and the hybrid
//! cgroup2 mount, runc's write orders and value conversions) and errors that name the OCI
//! field, and all of it is a few hundred lines of reads and writes.

mod devices;
mod error;
mod fs;
mod hybrid;
mod of_pid;
mod oom;
mod path;
mod proc;
mod resources;
mod stats;
mod systemd;
mod v1;
mod v2;

#[cfg(test)]
mod host_tests;
#[cfg(test)]
mod systemd_host_tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

pub use error::{Error, Result};
pub use of_pid::manager_for_pid;
pub use oom::{oom_kill_count, OomEvent, OomWatcher};
pub use resources::{
    blkio_weight_to_io_weight, hugepage_sizes, shares_to_weight, BlockIo, Cpu, DeviceRule, HugepageLimit, Memory, Network, Pids, Rdma,
    Resources, ThrottleDevice, WeightDevice,
};
pub use stats::{BlkioEntry, BlkioStats, CpuStats, CpusetStats, HugetlbStats, MemoryEntry, MemoryStats, PidsStats, Stats};
pub use systemd::SystemdBus;

/// Where cgroups are mounted, as far as this crate cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// cgroup v1 only: `/sys/fs/cgroup` is a tmpfs holding one mount per hierarchy.
    Legacy,
    /// cgroup v1 plus a cgroup2 mount at `/sys/fs/cgroup/unified` (usually with no or few
    /// controllers); the container is placed in both.
    Hybrid,
    /// Pure cgroup v2: `/sys/fs/cgroup` is the cgroup2 mount.
    Unified,
}

/// Where the cgroup filesystems live.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The cgroup2 mount of a Hybrid host.
const HYBRID_UNIFIED: &str = "/sys/fs/cgroup/unified";

/// Detects the host's [`Mode`] with statfs(2): `/sys/fs/cgroup` of type cgroup2 is Unified;
/// a tmpfs there is Hybrid if `/sys/fs/cgroup/unified` is cgroup2, else Legacy.
pub fn detect() -> Result<Mode> {
    let fs_type = |p: &str| {
        nix::sys::statfs::statfs(p)
            .map(|s| s.filesystem_type())
            .map_err(|e| Error::io("statfs", Path::new(p), std::io::Error::from_raw_os_error(e as i32)))
    };
    let root = fs_type(CGROUP_ROOT)?;
    classify(root, fs_type(HYBRID_UNIFIED).ok())
}

/// The pure part of [`detect`].
fn classify(root: nix::sys::statfs::FsType, unified: Option<nix::sys::statfs::FsType>) -> Result<Mode> {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};
    if root == CGROUP2_SUPER_MAGIC {
        Ok(Mode::Unified)
    } else if root == TMPFS_MAGIC {
        Ok(if unified == Some(CGROUP2_SUPER_MAGIC) { Mode::Hybrid } else { Mode::Legacy })
    } else {
        Err(Error::Msg(format!(
            "{CGROUP_ROOT} is neither cgroup2 nor a tmpfs of v1 hierarchies (filesystem type {:#x}): cgroups are not mounted",
            root.0
        )))
    }
}

/// A container's cgroup, in every hierarchy it lives in.
///
/// Object safe: the runtime holds a `Box<dyn Manager>` from [`manager`] or
/// [`manager_from_paths`]. Every method works on paths only, so a manager rebuilt in another
/// process (e.g. `capsa delete`) can do everything except know which parent directories the
/// original `create` made.
pub trait Manager: fmt::Debug + Send + Sync {
    /// Creates the container's cgroup directories (missing parents too) in every hierarchy.
    /// Existing directories are fine, so calling it twice is harmless. On a v1 host the
    /// cpuset directories get their parent's `cpuset.cpus`/`mems` so tasks can join; on v2
    /// the controllers we manage are enabled in each ancestor's `cgroup.subtree_control`
    /// (not by `create` in a Hybrid host's cgroup2 hierarchy: `apply` enables just the
    /// controller a hugepage limit or `unified` key needs there). On failure, the directories
    /// this call made are removed again.
    fn create(&self) -> Result<()>;

    /// Moves process `pid` (all its threads) into the cgroup, in every hierarchy.
    fn add_task(&self, pid: i32) -> Result<()>;

    /// Writes the limits in `resources` (fields that are `None` are left alone). Errors name
    /// the OCI field, its value and the kernel's answer.
    fn apply(&self, resources: &Resources) -> Result<()>;

    /// Pids of every process in the cgroup and its sub-cgroups, sorted.
    fn pids(&self) -> Result<Vec<i32>>;

    /// Sends `signal` to every process in the cgroup. SIGKILL uses cgroup2's `cgroup.kill`
    /// where it exists (v2, and the Hybrid cgroup2 directory); otherwise the cgroup is frozen
    /// while the pids are listed and signalled, then thawed. A frozen (paused) cgroup stays
    /// frozen unless the signal is SIGKILL.
    fn kill_all(&self, signal: i32) -> Result<()>;

    /// Freezes every process and waits until the kernel reports the cgroup frozen
    /// (v1 `freezer.state` FROZEN, v2 `cgroup.events` `frozen 1`).
    fn freeze(&self) -> Result<()>;

    /// Thaws a frozen cgroup and waits until the kernel reports it.
    fn thaw(&self) -> Result<()>;

    /// Whether the cgroup is frozen or being frozen (for `state` to report "paused").
    fn is_frozen(&self) -> Result<bool>;

    /// Whether the container's cgroup directory exists.
    fn exists(&self) -> bool;

    /// Removes the container's cgroup directory, and any cgroups below it, in every
    /// hierarchy, deepest first, retrying EBUSY for about a second while exiting tasks
    /// leave. Missing directories are fine. Parent directories are removed only if this
    /// same instance created them, or were handed to it with [`Manager::adopt_created`], and
    /// nothing else lives in them now (runc leaves the empty parents of a nested
    /// `linux.cgroupsPath` behind; we do not). The cgroup must have no processes left.
    fn destroy(&self) -> Result<()>;

    /// The directories this instance's `create` made (missing parents of a nested
    /// `linux.cgroupsPath` included), parents first. Record them with [`Manager::paths`]:
    /// a manager rebuilt in another process removes them when given them back through
    /// [`Manager::adopt_created`].
    fn created(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Takes over the directories another instance's `create` made ([`Manager::created`]),
    /// so that `destroy` removes those that nothing else uses, parents included. Each must be
    /// one of this manager's directories or a parent of one, strictly below its hierarchy's
    /// mount point; otherwise an error naming it, and nothing is taken.
    fn adopt_created(&self, dirs: &[PathBuf]) -> Result<()> {
        match dirs.first() {
            None => Ok(()),
            Some(d) => Err(Error::Msg(format!("created cgroup directory {}: this manager does not remove directories", d.display()))),
        }
    }

    /// Resource usage, runc's `events --stats` data (see [`Stats`]).
    fn stats(&self) -> Result<Stats>;

    /// The container's directory per controller, runc's `cgroup_paths` shape: v1 controller
    /// names (`cpu`, `cpuacct`, `name=systemd`, ...) and `""` for the cgroup2 directory.
    fn paths(&self) -> BTreeMap<String, PathBuf>;

    /// The systemd unit holding the cgroup (systemd driver only): record it with the paths
    /// to rebuild the manager with [`systemd_manager_from_paths`].
    fn systemd_unit(&self) -> Option<&str> {
        None
    }
}

/// The manager for container `id` with `linux.cgroupsPath` `cgroups_path` (absent or empty:
/// `<own cgroup>/<id>`) on a host in `mode`. Reads /proc/self/mountinfo and
/// /proc/self/cgroup; creates nothing.
///
/// This is the cgroupfs driver: systemd `slice:prefix:name` paths give
/// [`Error::SystemdDriver`] (see [`systemd_manager`]).
pub fn manager(mode: Mode, cgroups_path: Option<&str>, id: &str) -> Result<Box<dyn Manager>> {
    let inner = path::parse(cgroups_path, id)?;
    let preferred_v2 = if mode == Mode::Unified { CGROUP_ROOT } else { HYBRID_UNIFIED };
    let layout = proc::Layout::load(Path::new(preferred_v2))?;
    Ok(match mode {
        Mode::Legacy => Box::new(v1::V1Manager::new(&layout, &inner)?),
        Mode::Hybrid => Box::new(hybrid::HybridManager::new(&layout, &inner)?),
        Mode::Unified => Box::new(v2::V2Manager::new(&layout, &inner)?),
    })
}

/// The systemd driver's manager for container `id` (`--systemd-cgroup`, see `systemd/`):
/// `cgroups_path` is `slice:prefix:name` (absent or empty: `capsa-<id>.scope` in
/// `system.slice`, or `user.slice` of a user's manager), and the cgroup is the transient scope
/// `prefix-name.scope` that the first [`Manager::add_task`] starts through `bus`. Checks that
/// systemd is the init and resolves the paths; a user manager is asked for its cgroup.
pub fn systemd_manager(mode: Mode, cgroups_path: Option<&str>, id: &str, bus: SystemdBus) -> Result<Box<dyn Manager>> {
    Ok(Box::new(systemd::SystemdManager::new(mode, cgroups_path, id, bus)?))
}

/// A systemd driver's manager over an existing unit and its directories (as recorded from
/// [`Manager::systemd_unit`] and [`Manager::paths`]): `destroy` stops the unit, `apply` sets
/// its properties; everything else works on the directories as [`manager_from_paths`].
pub fn systemd_manager_from_paths<I, P>(unit: &str, bus: SystemdBus, paths: I) -> Result<Box<dyn Manager>>
where
    I: IntoIterator<Item = P>,
    P: AsRef<Path>,
{
    Ok(Box::new(systemd::SystemdManager::existing(unit, bus, manager_from_paths(paths)?)))
}

/// Asks systemd to move `pid` into `unit` (its sub-cgroup `subcgroup`, or `""` for the unit's
/// own): for a process the caller may not move itself, as a rootless `exec` into a container
/// of the user's systemd manager.
pub fn systemd_attach(unit: &str, bus: SystemdBus, subcgroup: &str, pid: i32) -> Result<()> {
    systemd::attach(unit, bus, subcgroup, pid)
}

/// A manager over existing cgroup directories, as returned by [`Manager::paths`] (keys are
/// not needed: each path's hierarchy is found from /proc/self/mountinfo). For commands that
/// run after `create`, in another process: `delete`, `kill`, `pause`, `ps`, `update`.
///
/// Paths in a cgroup2 mount alone make a v2 manager; v1 paths a v1 manager, or a Hybrid one
/// when a cgroup2 path comes with them. Every path must be absolute, free of
/// `..`, and strictly inside a mounted cgroup hierarchy.
pub fn manager_from_paths<I, P>(paths: I) -> Result<Box<dyn Manager>>
where
    I: IntoIterator<Item = P>,
    P: AsRef<Path>,
{
    let layout = proc::Layout::load(Path::new(HYBRID_UNIFIED))?;
    let mut v1_dirs: Vec<path::Dir> = Vec::new();
    let mut v2_dir: Option<path::Dir> = None;
    for p in paths {
        let p = p.as_ref();
        let bad = |why: &str| Error::Msg(format!("cgroup path {}: {why}", p.display()));
        if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
            return Err(bad("must be absolute and clean"));
        }
        let h = layout.containing(p).ok_or_else(|| bad("not inside a mounted cgroup hierarchy"))?;
        if p == h.mount_point {
            return Err(bad("is a hierarchy root, not a container's cgroup"));
        }
        let dir = path::Dir { controllers: h.controllers.clone(), mount: h.mount_point.clone(), path: p.to_path_buf() };
        if h.controllers.is_empty() {
            if v2_dir.as_ref().is_some_and(|d| d.path != dir.path) {
                return Err(bad("a second cgroup2 directory"));
            }
            v2_dir = Some(dir);
        } else if !v1_dirs.contains(&dir) {
            v1_dirs.push(dir);
        }
    }
    match (v1_dirs.is_empty(), v2_dir) {
        (true, Some(d)) => Ok(Box::new(v2::V2Manager::with_controllers(d.mount, d.path, v2::CONTROLLERS))),
        (false, Some(unified)) => Ok(Box::new(hybrid::HybridManager::from_dirs(v1_dirs, unified))),
        (false, None) => Ok(Box::new(v1::V1Manager::from_dirs(v1_dirs))),
        (true, None) => Err(Error::Msg("no cgroup paths given".into())),
    }
}

/// Whether the cgroup at `paths` (as from [`Manager::paths`]) is frozen, looking only at
/// those directories: the v1 freezer's `freezer.state` if one of them has it, else the
/// cgroup2 `cgroup.freeze`, as the managers freeze. Unlike [`manager_from_paths`] it reads no
/// mountinfo: `state`, `start` and `kill` ask this on every call.
pub fn is_frozen_at<P: AsRef<Path>>(paths: &[P]) -> bool {
    let dirs = || paths.iter().map(|p| p.as_ref());
    let freezer = match dirs().find(|d| d.join("freezer.state").exists()) {
        Some(d) => fs::Freezer::V1(d.to_path_buf()),
        None => match dirs().find(|d| d.join("cgroup.freeze").exists()) {
            Some(d) => fs::Freezer::V2(d.to_path_buf()),
            None => return false,
        },
    };
    freezer.is_frozen().unwrap_or(false)
}

/// Removes the cgroup `rel` (such as a front end's own parent, `/capsa`) from every hierarchy
/// where nothing uses it any more: the kernel refuses to remove a cgroup with child cgroups or
/// processes, so where one is there, or it is missing, it stays as it is. `rel` must be a plain
/// path below the hierarchy roots (no `..`).
pub fn remove_if_unused(rel: &str) -> Result<()> {
    let rel = Path::new(rel.trim_start_matches('/'));
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::Msg(format!("cgroup {}: want a path below the hierarchy roots, without ..", rel.display())));
    }
    let mounts = capsa_sys::mountinfo::read_self().map_err(|e| Error::io("read", Path::new("/proc/self/mountinfo"), e))?;
    for m in mounts.iter().filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2") {
        fs::rmdir_if_unused(&m.mount_point.join(rel));
    }
    Ok(())
}

/// Whether `cgroups_path` is a systemd-driver `slice:prefix:name` path (which the cgroupfs
/// driver rejects with [`Error::SystemdDriver`]).
pub fn is_systemd_path(cgroups_path: &str) -> bool {
    path::is_systemd_path(cgroups_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, TMPFS_MAGIC};

    #[test]
    fn classify_modes() {
        assert_eq!(classify(CGROUP2_SUPER_MAGIC, None).ok(), Some(Mode::Unified));
        assert_eq!(classify(TMPFS_MAGIC, Some(CGROUP2_SUPER_MAGIC)).ok(), Some(Mode::Hybrid));
        assert_eq!(classify(TMPFS_MAGIC, None).ok(), Some(Mode::Legacy));
        assert_eq!(classify(TMPFS_MAGIC, Some(TMPFS_MAGIC)).ok(), Some(Mode::Legacy));
        assert!(classify(CGROUP_SUPER_MAGIC, None).is_err());
    }

    #[test]
    fn detect_sees_this_host_as_hybrid() {
        // DESIGN.md: this machine and CI are hybrid. Elsewhere just check it does not fail.
        let mode = detect();
        assert!(mode.is_ok(), "{mode:?}");
    }

    #[test]
    fn systemd_path_is_rejected_before_touching_the_host() {
        let e = manager(Mode::Hybrid, Some("system.slice:capsa:c1"), "c1").err();
        assert!(matches!(e, Some(Error::SystemdDriver { .. })), "{e:?}");
    }

    #[test]
    fn from_paths_rejects_paths_outside_cgroupfs() {
        for p in ["/tmp/x", "relative", "/sys/fs/cgroup/x/../y", "/sys/fs/cgroup"] {
            assert!(manager_from_paths([p]).is_err(), "{p}");
        }
        assert!(manager_from_paths(Vec::<PathBuf>::new()).is_err());
    }

    #[test]
    fn trait_is_object_safe() {
        fn _takes(_: &dyn Manager) {}
    }
}

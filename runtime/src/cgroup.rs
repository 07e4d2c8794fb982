//! The runtime's side of cgroups: turns `linux.resources` into the `capsa-cgroups`
//! crate's [`Resources`], and keeps the container's cgroup as plain paths in state.json
//! (plus the systemd unit, with `--systemd-cgroup`) so later commands (kill, delete, state)
//! can rebuild a manager in another process.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use capsa_cgroups::{DeviceRule, Manager, Resources};

use crate::error::{Error, Result};

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

/// The container's cgroup while it is being created.
pub struct Cgroup {
    mgr: Box<dyn Manager>,
    unified: bool,
    /// Placed by systemd: processes join through it, never by writing cgroup files.
    systemd: bool,
}

/// How a process forked for the container joins its cgroups by itself, without the
/// parent writing its pid to `cgroup.procs`. Such a write takes the kernel's global
/// cgroup_threadgroup_rwsem for writing, whose RCU grace period costs 5–20 ms on the first
/// container started after a quiet moment (11 ms median measured here, 200 ms apart; 0.2 ms
/// back to back). Instead:
///
/// * cgroup v1: the child writes "0" (itself) to each hierarchy's `tasks` file: moving one
///   thread of a single-threaded process is moving the process, and the kernel skips the
///   global lock for it;
/// * cgroup v2: the child is forked straight into the cgroup (clone3 `CLONE_INTO_CGROUP`).
///
/// Either way the same 0.2 ms, quiet or not.
pub struct SelfJoin {
    /// `tasks` files of the v1 hierarchies, open for writing.
    pub v1_tasks: Vec<OwnedFd>,
    /// The cgroup2 directory, for CLONE_INTO_CGROUP.
    pub v2_dir: Option<OwnedFd>,
}

impl SelfJoin {
    /// Opens what a child needs to join the cgroup directories `dirs` (one per hierarchy).
    pub fn open(dirs: &[PathBuf]) -> Result<SelfJoin> {
        use nix::fcntl::{open, OFlag};
        use nix::sys::stat::Mode;
        let mut j = SelfJoin { v1_tasks: Vec::new(), v2_dir: None };
        for d in dirs {
            let dir = open(d, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| Error::from(e).context(format!("open cgroup {}", d.display())))?;
            let v2 = nix::sys::statfs::fstatfs(std::os::fd::AsFd::as_fd(&dir))
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
            if v2 {
                j.v2_dir = Some(dir);
            } else {
                let tasks = open(&d.join("tasks"), OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(|e| Error::from(e).context(format!("open {}/tasks", d.display())))?;
                j.v1_tasks.push(tasks);
            }
        }
        Ok(j)
    }

    /// In the child: joins the v1 hierarchies (the v2 one was joined at clone time, or by
    /// the parent), then closes the fds.
    pub fn join_v1(mut self) -> Result<()> {
        for f in self.v1_tasks.drain(..) {
            nix::unistd::write(&f, b"0").map_err(|e| Error::from(e).context("join the container's cgroup (tasks)"))?;
        }
        Ok(())
    }

    /// Where the child could not be cloned into the v2 cgroup (old kernel): the parent
    /// moves it there.
    pub fn join_v2_from_parent(&self, pid: i32) -> Result<()> {
        let Some(dir) = &self.v2_dir else { return Ok(()) };
        use nix::fcntl::{openat, OFlag};
        let f = openat(std::os::fd::AsFd::as_fd(dir), "cgroup.procs", OFlag::O_WRONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(|e| Error::from(e).context("open cgroup.procs"))?;
        nix::unistd::write(&f, pid.to_string().as_bytes()).map_err(|e| Error::from(e).context("join the cgroup2 hierarchy"))?;
        Ok(())
    }

    pub fn fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.v1_tasks.iter().chain(self.v2_dir.iter()).map(|f| f.as_raw_fd()).collect()
    }
}

/// A cgroup named but not made yet (see [`Cgroup::plan`]).
pub struct PlannedCgroup {
    cg: Cgroup,
    resources: Resources,
}

impl PlannedCgroup {
    /// The directories the cgroup will have, one per hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.cg.paths()
    }

    /// The parents of [`PlannedCgroup::paths`] that do not exist yet, parents first: what
    /// creating will make besides the cgroup's own directories. A parent made meanwhile by
    /// someone else is harmless here: removal skips a directory still in use.
    /// (None with the systemd driver: systemd makes and removes its slices.)
    pub fn missing_parents(&self) -> Vec<PathBuf> {
        let mut missing = Vec::new();
        if self.cg.systemd {
            return missing;
        }
        for p in self.paths() {
            let mut up: Vec<PathBuf> = p.ancestors().skip(1).take_while(|a| !a.exists()).map(Path::to_path_buf).collect();
            up.reverse();
            for d in up {
                if !missing.contains(&d) {
                    missing.push(d);
                }
            }
        }
        missing
    }

    pub fn systemd_unit(&self) -> Option<String> {
        self.cg.systemd_unit()
    }

    /// Makes the directories and applies the limits; on failure nothing is left behind.
    pub fn create(self) -> Result<Cgroup> {
        let PlannedCgroup { cg, resources } = self;
        cg.mgr.create()?;
        if let Err(e) = cg.mgr.apply(&resources) {
            let _ = cg.mgr.destroy();
            return Err(e.into());
        }
        Ok(cg)
    }
}

/// The systemd manager a container's unit belongs to: the user's for a rootless container.
fn systemd_bus(rootless: bool) -> capsa_cgroups::SystemdBus {
    if rootless {
        capsa_cgroups::SystemdBus::User
    } else {
        capsa_cgroups::SystemdBus::System
    }
}

impl Cgroup {
    /// Creates the cgroup at `linux.cgroupsPath` (runc's default when absent) and applies
    /// the limits; on failure nothing is left behind. With `systemd` (`--systemd-cgroup`)
    /// the cgroup is a systemd scope (of the user's manager when `rootless`), started by the
    /// first [`Cgroup::add_task`].
    pub fn create(linux: &oci_spec::runtime::Linux, id: &str, systemd: bool, rootless: bool) -> Result<Cgroup> {
        Cgroup::plan(linux, id, systemd, rootless)?.create()
    }

    /// Where the cgroup will be, without making anything yet: `create` records this in the
    /// container's state first, so that a create killed while making the directories can
    /// still be cleaned up by `delete`.
    pub fn plan(linux: &oci_spec::runtime::Linux, id: &str, systemd: bool, rootless: bool) -> Result<PlannedCgroup> {
        let mode = capsa_cgroups::detect()?;
        let path = linux.cgroups_path().as_ref().map(|p| p.to_string_lossy().into_owned());
        let path = path.as_deref().filter(|p| !p.is_empty());
        let mgr = if systemd {
            capsa_cgroups::systemd_manager(mode, path, id, systemd_bus(rootless))?
        } else {
            capsa_cgroups::manager(mode, path, id)?
        };
        let mut resources = resources(linux);
        if systemd && rootless {
            // An unprivileged caller cannot load a device program, and neither can the user's
            // systemd manager; the user namespace keeps device nodes out of reach instead (as
            // runc and crun do for rootless containers).
            resources.devices.clear();
        }
        Ok(PlannedCgroup { cg: Cgroup { mgr, unified: mode == capsa_cgroups::Mode::Unified, systemd }, resources })
    }
    /// What a child needs to join the cgroups by itself: every hierarchy of a cgroupfs
    /// manager (the systemd driver places processes through systemd instead).
    pub fn self_join(&self) -> Result<Option<SelfJoin>> {
        if self.systemd {
            return Ok(None);
        }
        SelfJoin::open(&self.paths()).map(Some)
    }

    pub fn add_task(&self, pid: i32) -> Result<()> {
        Ok(self.mgr.add_task(pid)?)
    }

    pub fn kill_all(&self, sig: i32) -> Result<()> {
        Ok(self.mgr.kill_all(sig)?)
    }

    pub fn destroy(&self) -> Result<()> {
        Ok(self.mgr.destroy()?)
    }

    /// The directories the cgroup's creation made, parents first (a nested
    /// `linux.cgroupsPath`'s missing parents included): recorded in state.json for `delete`.
    pub fn created(&self) -> Vec<PathBuf> {
        self.mgr.created()
    }

    /// The systemd unit of the container's cgroup (`--systemd-cgroup`).
    pub fn systemd_unit(&self) -> Option<String> {
        self.mgr.systemd_unit().map(str::to_string)
    }

    /// Distinct directories of the container's cgroup, one per hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.mgr.paths().into_values().collect();
        v.sort();
        v.dedup();
        v
    }

    /// What init mounts for a `type: cgroup` entry.
    pub fn view(&self) -> Result<CgroupView> {
        let mounts = capsa_sys::mountinfo::read_self()?;
        let mut hierarchies = Vec::new();
        for p in self.paths() {
            let Some(m) = mounts
                .iter()
                .filter(|m| (m.fstype == "cgroup" || m.fstype == "cgroup2") && p.starts_with(&m.mount_point))
                .max_by_key(|m| m.mount_point.as_os_str().len())
            else {
                continue;
            };
            // On a hybrid host runc shows the v1 hierarchies only (no `unified`), and so do we.
            if !self.unified && m.fstype == "cgroup2" {
                continue;
            }
            let name = m.mount_point.strip_prefix("/sys/fs/cgroup").unwrap_or(&m.mount_point).to_string_lossy().into_owned();
            let data: Vec<&str> = m.super_options.split(',').filter(|o| *o != "rw" && *o != "ro").collect();
            let data = if m.fstype == "cgroup2" { String::new() } else { data.join(",") };
            hierarchies.push(CgroupHierarchy { name, fstype: m.fstype.clone(), data, host_dir: p.clone() });
        }
        Ok(CgroupView { unified: self.unified, namespaced: false, hierarchies })
    }
}

/// `linux.resources` of config.json → the crate's resources, followed by the devices every
/// container may use.
pub fn resources(linux: &oci_spec::runtime::Linux) -> Resources {
    match linux.resources() {
        Some(res) => {
            let mut r = resources_from(res);
            r.devices = devices(res.devices().as_deref().unwrap_or_default());
            r
        }
        None => Resources { devices: devices(&[]), ..Default::default() },
    }
}

/// Every field of a `LinuxResources` except `devices` (which `update` leaves alone, as runc
/// does). Values that mean "not set" in runc (0, empty) become `None`.
pub fn resources_from(res: &oci_spec::runtime::LinuxResources) -> Resources {
    use capsa_cgroups::{HugepageLimit, Rdma, ThrottleDevice, WeightDevice};
    let mut r = Resources::default();
    if let Some(m) = res.memory() {
        r.memory.limit = m.limit();
        r.memory.reservation = m.reservation();
        r.memory.swap = m.swap();
        r.memory.kernel = m.kernel();
        r.memory.kernel_tcp = m.kernel_tcp();
        r.memory.swappiness = m.swappiness();
        r.memory.disable_oom_killer = m.disable_oom_killer();
        r.memory.use_hierarchy = m.use_hierarchy();
        r.memory.check_before_update = m.check_before_update();
    }
    if let Some(p) = res.pids() {
        r.pids.limit = Some(p.limit()).filter(|l| *l != 0);
    }
    if let Some(c) = res.cpu() {
        r.cpu.shares = c.shares();
        r.cpu.quota = c.quota();
        r.cpu.burst = c.burst();
        r.cpu.period = c.period();
        r.cpu.realtime_runtime = c.realtime_runtime();
        r.cpu.realtime_period = c.realtime_period();
        r.cpu.cpus = c.cpus().clone().filter(|s| !s.is_empty());
        r.cpu.mems = c.mems().clone().filter(|s| !s.is_empty());
        r.cpu.idle = c.idle();
    }
    if let Some(b) = res.block_io() {
        let throttle = |v: &Option<Vec<oci_spec::runtime::LinuxThrottleDevice>>| -> Vec<ThrottleDevice> {
            v.as_deref().unwrap_or_default().iter().map(|t| ThrottleDevice { major: t.major(), minor: t.minor(), rate: t.rate() }).collect()
        };
        r.block_io.weight = b.weight();
        r.block_io.leaf_weight = b.leaf_weight();
        r.block_io.weight_device = b
            .weight_device()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|w| WeightDevice { major: w.major(), minor: w.minor(), weight: w.weight(), leaf_weight: w.leaf_weight() })
            .collect();
        r.block_io.throttle_read_bps = throttle(b.throttle_read_bps_device());
        r.block_io.throttle_write_bps = throttle(b.throttle_write_bps_device());
        r.block_io.throttle_read_iops = throttle(b.throttle_read_iops_device());
        r.block_io.throttle_write_iops = throttle(b.throttle_write_iops_device());
    }
    if let Some(h) = res.hugepage_limits() {
        r.hugepage_limits = h.iter().map(|h| HugepageLimit { page_size: h.page_size().clone(), limit: h.limit() }).collect();
    }
    if let Some(n) = res.network() {
        r.network.class_id = n.class_id();
        r.network.priorities = n.priorities().as_deref().unwrap_or_default().iter().map(|p| (p.name().clone(), p.priority())).collect();
    }
    if let Some(rd) = res.rdma() {
        r.rdma = rd.iter().map(|(k, v)| (k.clone(), Rdma { hca_handles: v.hca_handles(), hca_objects: v.hca_objects() })).collect();
    }
    if let Some(u) = res.unified() {
        r.unified = u.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    r
}

/// The spec's device rules followed by the devices every container may use (runc's list:
/// mknod of anything, the standard character devices, ptys, tun).
fn devices(spec: &[oci_spec::runtime::LinuxDeviceCgroup]) -> Vec<DeviceRule> {
    use oci_spec::runtime::LinuxDeviceType as T;
    let mut out: Vec<DeviceRule> = spec
        .iter()
        .filter_map(|d| {
            // runc keeps the letters r, w and m of an access string and ignores the others
            // (config::warnings says so); a rule left with none grants or denies nothing.
            let access = match d.access().as_deref() {
                None | Some("") => "rwm".to_string(),
                Some(a) => a.chars().filter(|c| "rwm".contains(*c)).collect(),
            };
            (!access.is_empty()).then(|| DeviceRule {
                allow: d.allow(),
                kind: match d.typ() {
                    Some(T::C) | Some(T::U) => 'c',
                    Some(T::B) => 'b',
                    _ => 'a',
                },
                major: d.major(),
                minor: d.minor(),
                access,
            })
        })
        .collect();
    let rule = |kind, major, minor, access: &str| DeviceRule { allow: true, kind, major, minor, access: access.to_string() };
    out.push(rule('c', None, None, "m"));
    out.push(rule('b', None, None, "m"));
    for (major, minor) in [(1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 2), (10, 200)] {
        out.push(rule('c', Some(major), Some(minor), "rwm"));
    }
    out.push(rule('c', Some(136), None, "rwm"));
    out
}

/// Whether `linux.resources` asks for a limit (device rules do not count: without a cgroup
/// the user namespace already keeps device nodes out of reach).
pub fn asks_for_limits(linux: &oci_spec::runtime::Linux) -> bool {
    let Some(r) = linux.resources() else { return false };
    r.memory().as_ref().is_some_and(|m| m.limit().is_some() || m.reservation().is_some() || m.swap().is_some())
        || r.pids().is_some()
        || r.cpu().as_ref().is_some_and(|c| c.shares().is_some() || c.quota().is_some() || c.cpus().is_some())
        || r.block_io().is_some()
        || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
}

fn from_paths(paths: &[PathBuf]) -> Option<Box<dyn Manager>> {
    if paths.is_empty() {
        return None;
    }
    capsa_cgroups::manager_from_paths(paths).ok()
}

/// runc's checks before `create` touches anything: a cgroup that already has processes gets
/// a warning (returned); a frozen one — itself or an ancestor — is refused, as the
/// container's init would freeze as it joins and `create` would wait for it for ever.
/// systemd paths are left to [`Cgroup::create`].
pub fn precheck(linux: &oci_spec::runtime::Linux, id: &str, systemd: bool) -> Result<Vec<String>> {
    let path = linux.cgroups_path().as_ref().map(|p| p.to_string_lossy().into_owned());
    let path = path.as_deref().filter(|p| !p.is_empty());
    if systemd || path.is_some_and(capsa_cgroups::is_systemd_path) {
        return Ok(Vec::new());
    }
    let mgr = capsa_cgroups::manager(capsa_cgroups::detect()?, path, id)?;
    let mut warnings = Vec::new();
    if mgr.exists() {
        let n = mgr.pids().map(|p| p.len()).unwrap_or(0);
        if n > 0 {
            warnings.push(format!("container's cgroup is not empty: {n} process(es) found"));
        }
    }
    // Only the hierarchies that can freeze: v1's freezer, and cgroup2 (key "").
    for (_, dir) in mgr.paths().into_iter().filter(|(k, _)| k == "freezer" || k.is_empty()) {
        // The container's directory if it exists and its ancestors, up to the hierarchy root.
        for d in dir.ancestors().take_while(|d| d.starts_with("/sys/fs/cgroup") && *d != std::path::Path::new("/sys/fs/cgroup")) {
            if d.is_dir() && capsa_cgroups::is_frozen_at(&[d]) {
                let field = path.map(|p| format!("linux.cgroupsPath {p:?}")).unwrap_or_else(|| "cgroup".to_string());
                return Err(Error::new(format!("{field}: container's cgroup unexpectedly frozen ({} is frozen)", d.display())));
            }
        }
    }
    Ok(warnings)
}

pub fn is_frozen(paths: &[PathBuf]) -> bool {
    capsa_cgroups::is_frozen_at(paths)
}

pub fn kill_all_paths(paths: &[PathBuf], sig: i32) -> Result<()> {
    match from_paths(paths) {
        Some(m) if m.exists() => Ok(m.kill_all(sig)?),
        _ => Ok(()),
    }
}

pub fn thaw_paths(paths: &[PathBuf]) -> Result<()> {
    match from_paths(paths) {
        Some(m) => Ok(m.thaw()?),
        None => Ok(()),
    }
}

/// Removes the container's cgroup and the parent directories its create made (`created`,
/// see [`Cgroup::created`]) that nothing else uses; with a systemd `unit`, stops the unit
/// first (through the user's manager when `rootless`).
pub fn destroy_paths(paths: &[PathBuf], created: &[PathBuf], unit: Option<&str>, rootless: bool) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let m = match unit {
        Some(u) => capsa_cgroups::systemd_manager_from_paths(u, systemd_bus(rootless), paths)?,
        None => capsa_cgroups::manager_from_paths(paths)?,
    };
    // A state naming directories that are not the cgroup's parents (edited by hand) loses
    // only the parents' cleanup: the container's own directories still go.
    let _ = m.adopt_created(created);
    Ok(m.destroy()?)
}

pub fn pids(paths: &[PathBuf]) -> Result<Vec<i32>> {
    match from_paths(paths) {
        Some(m) => Ok(m.pids()?),
        None => Ok(Vec::new()),
    }
}

/// A manager over the container's recorded cgroup directories; an error when it has none.
fn manager_of(paths: &[PathBuf]) -> Result<Box<dyn Manager>> {
    if paths.is_empty() {
        return Err(Error::new("the container has no cgroup"));
    }
    Ok(capsa_cgroups::manager_from_paths(paths)?)
}

pub fn freeze_paths(paths: &[PathBuf]) -> Result<()> {
    Ok(manager_of(paths)?.freeze()?)
}

/// `exec` as an unprivileged user into a container of their systemd manager: the process
/// starts outside the manager's subtree, so only systemd may move it into `unit` (its
/// sub-cgroup `subcgroup`, `""` for the unit's own), as runc has it do.
pub fn attach_to_unit(unit: &str, rootless: bool, subcgroup: &str, pid: i32) -> Result<()> {
    Ok(capsa_cgroups::systemd_attach(unit, systemd_bus(rootless), subcgroup, pid)?)
}

/// `update`: the new limits, also as the systemd `unit`'s properties when there is one.
pub fn apply_paths(paths: &[PathBuf], unit: Option<&str>, rootless: bool, r: &Resources) -> Result<()> {
    let m = match unit {
        Some(u) if !paths.is_empty() => capsa_cgroups::systemd_manager_from_paths(u, systemd_bus(rootless), paths)?,
        _ => manager_of(paths)?,
    };
    Ok(m.apply(r)?)
}

pub fn stats_paths(paths: &[PathBuf]) -> Result<capsa_cgroups::Stats> {
    Ok(manager_of(paths)?.stats()?)
}

/// Watches the container's memory cgroup for OOM kills.
pub fn oom_watcher(paths: &[PathBuf]) -> Result<capsa_cgroups::OomWatcher> {
    let map = manager_of(paths)?.paths();
    Ok(capsa_cgroups::OomWatcher::new(&map)?)
}

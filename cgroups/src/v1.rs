//! The cgroup v1 manager (Legacy and Hybrid hosts): one directory per mounted hierarchy —
//! every one this process belongs to, including named ones like `name=systemd`, so the
//! container is placed everywhere as runc places it — plus, on a Hybrid host, one directory
//! in the cgroup2 hierarchy at `/sys/fs/cgroup/unified` (placement, freezing fallback,
//! `cgroup.kill`, and the controllers only that hierarchy has — hugetlb on this project's CI —
//! for hugepage limits and `unified` keys, enabled on demand by `apply`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::fs::{self, Freezer};
use crate::path::Inner;
use crate::proc::Layout;
use crate::resources::{field, nonempty, nonzero, pids_max, rdma_line, v1_memory_writes, Resources};
use crate::v2::V2Manager;
use crate::Manager;

/// The container's directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dir {
    /// Controllers of the hierarchy (`cpu`, `cpu,cpuacct` split, `name=systemd`); empty for
    /// the cgroup2 hierarchy.
    pub controllers: Vec<String>,
    /// The hierarchy's mount point: directories are only ever created below it.
    pub mount: PathBuf,
    /// The container's cgroup directory.
    pub path: PathBuf,
}

/// Manager for cgroup v1, optionally with the Hybrid host's cgroup2 hierarchy.
#[derive(Debug)]
pub(crate) struct V1Manager {
    dirs: Vec<Dir>,
    unified: Option<Dir>,
    /// Directories this instance created, parents first (see `destroy`).
    created: Mutex<Vec<PathBuf>>,
}

impl V1Manager {
    /// Resolves `inner` in every v1 hierarchy of `layout`, and in its cgroup2 hierarchy when
    /// `hybrid`.
    pub(crate) fn new(layout: &Layout, inner: &Inner, hybrid: bool) -> Result<V1Manager> {
        if layout.v1.is_empty() {
            return Err(Error::Msg("no cgroup v1 hierarchy is mounted (see /proc/self/mountinfo)".into()));
        }
        let dirs = layout
            .v1
            .iter()
            .map(|h| Ok(Dir { controllers: h.controllers.clone(), mount: h.mount_point.clone(), path: inner.dir_in(h)? }))
            .collect::<Result<Vec<_>>>()?;
        let unified = if hybrid {
            let h = layout.v2.as_ref().ok_or_else(|| Error::Msg("hybrid cgroups: the cgroup2 hierarchy is not mounted".into()))?;
            Some(Dir { controllers: Vec::new(), mount: h.mount_point.clone(), path: inner.dir_in(h)? })
        } else {
            None
        };
        Ok(V1Manager::from_dirs(dirs, unified))
    }

    /// A manager over directories that already exist (from [`Manager::paths`]).
    pub(crate) fn from_dirs(dirs: Vec<Dir>, unified: Option<Dir>) -> V1Manager {
        V1Manager { dirs, unified, created: Mutex::new(Vec::new()) }
    }

    fn all(&self) -> impl Iterator<Item = &Dir> {
        self.dirs.iter().chain(self.unified.iter())
    }

    /// The container's directory in the hierarchy holding `controller`.
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find(|d| d.controllers.iter().any(|c| c == controller)).map(|d| d.path.as_path())
    }

    /// Like [`Self::dir`], but an error naming the OCI field when the controller is missing.
    fn need(&self, controller: &str, field: &'static str, value: impl std::fmt::Display) -> Result<&Path> {
        self.dir(controller).ok_or_else(|| Error::Msg(format!("the {controller} cgroup controller is not mounted")).field(field, value))
    }

    /// The directory whose `cgroup.procs` lists the container's processes.
    fn procs_dir(&self) -> &Path {
        ["pids", "freezer", "memory"]
            .iter()
            .find_map(|c| self.dir(c))
            .or_else(|| self.all().next().map(|d| d.path.as_path()))
            .unwrap_or(Path::new("/nonexistent"))
    }

    fn freezer(&self) -> Result<Freezer> {
        match (self.dir("freezer"), &self.unified) {
            (Some(d), _) => Ok(Freezer::V1(d.to_path_buf())),
            (None, Some(u)) => Ok(Freezer::V2(u.path.clone())),
            (None, None) => Err(Error::Msg("the freezer cgroup controller is not mounted".into())),
        }
    }

    fn create_dirs(&self, created: &mut Vec<PathBuf>) -> Result<()> {
        for d in self.all() {
            fs::mkdir_all(&d.mount, &d.path, created)?;
        }
        if let Some(d) = self.dirs.iter().find(|d| d.controllers.iter().any(|c| c == "cpuset")) {
            fill_cpuset(&d.mount, &d.path)?;
        }
        Ok(())
    }

    fn apply_memory(&self, r: &Resources) -> Result<()> {
        let m = &r.memory;
        let limit = nonzero(m.limit).unwrap_or(0);
        let swap = nonzero(m.swap).unwrap_or(0);
        let reservation = nonzero(m.reservation);
        if limit == 0
            && swap == 0
            && reservation.is_none()
            && m.swappiness.is_none()
            && m.disable_oom_killer != Some(true)
            && m.kernel.is_none()
            && m.kernel_tcp.is_none()
            && m.use_hierarchy.is_none()
        {
            return Ok(());
        }
        let Some(dir) = self.dir("memory") else {
            return Err(Error::Msg("linux.resources.memory is set but the memory cgroup controller is not mounted".into()));
        };
        if m.check_before_update == Some(true) && limit > 0 {
            check_usage(&dir.join("memory.usage_in_bytes"), limit)?;
        }
        // Kernel memory limits go first: the kernel refuses them once tasks are charged
        // (runc writes them first for the same reason).
        if let Some(v) = nonzero(m.kernel) {
            let file = dir.join("memory.kmem.limit_in_bytes");
            // Absent on kernels that dropped kmem limits; ENOTSUP/EINVAL on kernels that
            // refuse new ones. Either way the kernel has no such limit: ignored, as runc 1.2.
            match fs::write(&file, &v.to_string()) {
                Ok(()) => {}
                Err(e) if e.is_not_found() || matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)) => {}
                Err(e) => return Err(e.field(field::MEMORY_KERNEL, v)),
            }
        }
        if let Some(v) = nonzero(m.kernel_tcp) {
            fs::write(&dir.join("memory.kmem.tcp.limit_in_bytes"), &v.to_string()).map_err(|e| e.field(field::MEMORY_KERNEL_TCP, v))?;
        }
        if let Some(want) = m.use_hierarchy {
            let file = dir.join("memory.use_hierarchy");
            let want_s = if want { "1" } else { "0" };
            if fs::read(&file).map_err(|e| e.field(field::MEMORY_USE_HIERARCHY, want))? != want_s {
                fs::write(&file, want_s).map_err(|e| e.field(field::MEMORY_USE_HIERARCHY, want))?;
            }
        }
        let cur_limit = if limit != 0 && swap != 0 { fs::read_i128(&dir.join("memory.limit_in_bytes"))? } else { 0 };
        let memsw = dir.join("memory.memsw.limit_in_bytes").exists();
        for w in v1_memory_writes(limit, swap, cur_limit, memsw) {
            fs::write(&dir.join(w.file), &w.value.to_string()).map_err(|e| {
                let e = if w.file == "memory.limit_in_bytes" && e.raw_os_error() == Some(libc::EBUSY) {
                    let usage = fs::read(&dir.join("memory.usage_in_bytes")).unwrap_or_default();
                    let peak = fs::read(&dir.join("memory.max_usage_in_bytes")).unwrap_or_default();
                    e.with_note(format!("current usage {usage} bytes, peak {peak} bytes: the kernel could not reclaim enough memory"))
                } else {
                    e
                };
                e.field(w.field, w.value)
            })?;
        }
        if let Some(v) = reservation {
            fs::write(&dir.join("memory.soft_limit_in_bytes"), &v.to_string()).map_err(|e| e.field(field::MEMORY_RESERVATION, v))?;
        }
        if m.disable_oom_killer == Some(true) {
            fs::write(&dir.join("memory.oom_control"), "1").map_err(|e| e.field(field::MEMORY_DISABLE_OOM, true))?;
        }
        if let Some(v) = m.swappiness {
            fs::write(&dir.join("memory.swappiness"), &v.to_string()).map_err(|e| e.field(field::MEMORY_SWAPPINESS, v))?;
        }
        Ok(())
    }

    fn apply_cpu(&self, r: &Resources) -> Result<()> {
        let c = &r.cpu;
        if let Some(shares) = nonzero(c.shares) {
            let dir = self.need("cpu", field::CPU_SHARES, shares)?;
            let file = dir.join("cpu.shares");
            fs::write(&file, &shares.to_string()).map_err(|e| e.field(field::CPU_SHARES, shares))?;
            // The kernel clamps out-of-range values silently; say so instead.
            let got = fs::read(&file).map_err(|e| e.field(field::CPU_SHARES, shares))?;
            if got != shares.to_string() {
                return Err(Error::Msg(format!("the kernel set {} to {got} (allowed range 2-262144)", file.display()))
                    .field(field::CPU_SHARES, shares));
            }
        }
        // Realtime budget: period first, so a runtime that fits the new period is accepted.
        if let Some(p) = nonzero(c.realtime_period) {
            let dir = self.need("cpu", field::CPU_RT_PERIOD, p)?;
            fs::write(&dir.join("cpu.rt_period_us"), &p.to_string()).map_err(|e| e.field(field::CPU_RT_PERIOD, p))?;
        }
        if let Some(rt) = nonzero(c.realtime_runtime) {
            let dir = self.need("cpu", field::CPU_RT_RUNTIME, rt)?;
            fs::write(&dir.join("cpu.rt_runtime_us"), &rt.to_string()).map_err(|e| {
                let e = if e.raw_os_error() == Some(libc::EINVAL) {
                    e.with_note("more than the parent cgroup's cpu.rt_runtime_us leaves, or than the period".into())
                } else {
                    e
                };
                e.field(field::CPU_RT_RUNTIME, rt)
            })?;
        }
        if let Some(idle) = c.idle {
            let dir = self.need("cpu", field::CPU_IDLE, idle)?;
            fs::write(&dir.join("cpu.idle"), &idle.to_string()).map_err(|e| e.field(field::CPU_IDLE, idle))?;
        }
        let quota = nonzero(c.quota);
        let period = nonzero(c.period);
        let mut retry_burst = None;
        if let Some(b) = c.burst {
            let dir = self.need("cpu", field::CPU_BURST, b)?;
            match fs::write(&dir.join("cpu.cfs_burst_us"), &b.to_string()) {
                Ok(()) => {}
                // As runc: a burst above the old quota is refused; retry after the quota.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && quota.is_some() => retry_burst = Some(b),
                Err(e) => return Err(e.field(field::CPU_BURST, b)),
            }
        }
        if quota.is_none() && period.is_none() {
            return Ok(());
        }
        let dir = match (quota, period) {
            (Some(q), _) => self.need("cpu", field::CPU_QUOTA, q)?,
            (None, p) => self.need("cpu", field::CPU_PERIOD, p.unwrap_or(0))?,
        };
        let period_file = dir.join("cpu.cfs_period_us");
        // As runc: a smaller period can be refused (EINVAL) while the old quota/new period
        // ratio exceeds the parent's; if a quota is also being set, retry after it.
        let mut retry_period = None;
        if let Some(p) = period {
            match fs::write(&period_file, &p.to_string()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && quota.is_some() => retry_period = Some(p),
                Err(e) => return Err(e.field(field::CPU_PERIOD, p)),
            }
        }
        if let Some(q) = quota {
            fs::write(&dir.join("cpu.cfs_quota_us"), &q.to_string()).map_err(|e| e.field(field::CPU_QUOTA, q))?;
        }
        if let Some(p) = retry_period {
            fs::write(&period_file, &p.to_string()).map_err(|e| e.field(field::CPU_PERIOD, p))?;
        }
        if let Some(b) = retry_burst {
            fs::write(&dir.join("cpu.cfs_burst_us"), &b.to_string()).map_err(|e| e.field(field::CPU_BURST, b))?;
        }
        Ok(())
    }

    /// blkio: weights go to `blkio.weight*` (CFQ) or `blkio.bfq.weight*` (BFQ), whichever the
    /// kernel has, as runc picks them; throttles to `blkio.throttle.*`.
    fn apply_blkio(&self, r: &Resources) -> Result<()> {
        let b = &r.block_io;
        if !b.is_set() {
            return Ok(());
        }
        let dir = self.need("blkio", "linux.resources.blockIO", "{...}")?;
        let (weight_file, weight_dev_file) = if dir.join("blkio.weight").exists() {
            ("blkio.weight", "blkio.weight_device")
        } else {
            ("blkio.bfq.weight", "blkio.bfq.weight_device")
        };
        let missing = |e: Error, what: &str| {
            if e.is_not_found() {
                e.with_note(format!("this kernel's block I/O schedulers have no {what}"))
            } else {
                e
            }
        };
        if let Some(w) = nonzero(b.weight) {
            fs::write(&dir.join(weight_file), &w.to_string()).map_err(|e| missing(e, "weight").field(field::BLKIO_WEIGHT, w))?;
        }
        if let Some(w) = nonzero(b.leaf_weight) {
            fs::write(&dir.join("blkio.leaf_weight"), &w.to_string())
                .map_err(|e| missing(e, "leaf weight (CFQ only)").field(field::BLKIO_LEAF_WEIGHT, w))?;
        }
        for (i, wd) in b.weight_device.iter().enumerate() {
            if let Some(w) = nonzero(wd.weight) {
                let line = format!("{}:{} {w}", wd.major, wd.minor);
                fs::write(&dir.join(weight_dev_file), &line).map_err(|e| {
                    let e = if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENODEV | libc::EOPNOTSUPP)) {
                        e.with_note("no such block device, or its I/O scheduler is not BFQ/CFQ".into())
                    } else {
                        missing(e, "per-device weight")
                    };
                    e.field(field::BLKIO_WEIGHT_DEVICE, format!("[{i}] {line:?}"))
                })?;
            }
            if let Some(w) = nonzero(wd.leaf_weight) {
                let line = format!("{}:{} {w}", wd.major, wd.minor);
                fs::write(&dir.join("blkio.leaf_weight_device"), &line).map_err(|e| {
                    missing(e, "per-device leaf weight (CFQ only)").field(field::BLKIO_WEIGHT_DEVICE, format!("[{i}] leafWeight {line:?}"))
                })?;
            }
        }
        for (f, file, _, list) in b.throttles() {
            for (i, t) in list.iter().enumerate() {
                let line = t.v1_line();
                fs::write(&dir.join(file), &line).map_err(|e| e.field(f, format!("[{i}] {line:?}")))?;
            }
        }
        Ok(())
    }

    /// Hugepage limits: v1 `hugetlb.<size>.limit_in_bytes`; on a Hybrid host whose hugetlb
    /// controller is on the cgroup2 side (as on this project's CI), `hugetlb.<size>.max` in
    /// the cgroup2 directory, with the controller enabled down to it.
    fn apply_hugetlb(&self, r: &Resources) -> Result<()> {
        if r.hugepage_limits.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.dir("hugetlb") {
            for (i, h) in r.hugepage_limits.iter().enumerate() {
                let file = format!("hugetlb.{}.limit_in_bytes", h.page_size);
                let v = if h.limit < 0 { -1 } else { h.limit };
                fs::write(&dir.join(&file), &v.to_string())
                    .map_err(|e| e.field(field::HUGEPAGE_LIMITS, format!("[{i}] {} {}", h.page_size, h.limit)))?;
            }
            return Ok(());
        }
        match self.unified_with("hugetlb") {
            Some(v2) => v2.apply_hugetlb(r),
            None => Err(Error::Msg(
                "the hugetlb cgroup controller is not available (neither a v1 hierarchy nor in the cgroup2 hierarchy)".into(),
            )
            .field(field::HUGEPAGE_LIMITS, format!("[0] {}", r.hugepage_limits[0].page_size))),
        }
    }

    /// net_cls / net_prio (v1 only).
    fn apply_network(&self, r: &Resources) -> Result<()> {
        let n = &r.network;
        if let Some(id) = n.class_id {
            let dir = self.need("net_cls", field::NETWORK_CLASS_ID, id)?;
            fs::write(&dir.join("net_cls.classid"), &id.to_string()).map_err(|e| e.field(field::NETWORK_CLASS_ID, id))?;
        }
        for (i, (name, prio)) in n.priorities.iter().enumerate() {
            let line = format!("{name} {prio}");
            let dir = self.need("net_prio", field::NETWORK_PRIORITIES, format!("[{i}] {line:?}"))?;
            fs::write(&dir.join("net_prio.ifpriomap"), &line).map_err(|e| e.field(field::NETWORK_PRIORITIES, format!("[{i}] {line:?}")))?;
        }
        Ok(())
    }

    fn apply_rdma(&self, r: &Resources) -> Result<()> {
        for (dev, lim) in &r.rdma {
            let Some(line) = rdma_line(dev, lim) else { continue };
            let value = format!("{{{dev:?}: {line:?}}}");
            let dir = match self.dir("rdma") {
                Some(d) => d.to_path_buf(),
                None => match self.unified_with("rdma") {
                    Some(v2) => v2.dir().to_path_buf(),
                    None => return Err(Error::Msg("the rdma cgroup controller is not available".into()).field(field::RDMA, value)),
                },
            };
            fs::write(&dir.join("rdma.max"), &line).map_err(|e| e.field(field::RDMA, value))?;
        }
        Ok(())
    }

    /// `unified` on a v1 host: runc refuses it outright. On a Hybrid host we write the keys
    /// whose controller the cgroup2 hierarchy has (e.g. `hugetlb.2MB.max` here) and refuse
    /// the others, naming the key.
    fn apply_unified(&self, r: &Resources) -> Result<()> {
        for (k, v) in &r.unified {
            let controller = k.split('.').next().unwrap_or_default();
            let value = format!("{{{k:?}: {v:?}}}");
            let Some(v2) = self.unified_with(controller) else {
                let why = if self.unified.is_some() {
                    format!(
                        "the {controller} controller is not in this hybrid host's cgroup2 hierarchy (it is a cgroup v1 controller here)"
                    )
                } else {
                    "cgroup v2 keys cannot be set on a cgroup v1 host".to_string()
                };
                return Err(Error::Msg(why).field(field::UNIFIED, value));
            };
            v2.write_unified(k, v)?;
        }
        Ok(())
    }

    /// A v2 manager over the Hybrid cgroup2 directory with `controller` enabled down to it,
    /// or `None` when that hierarchy lacks the controller. `cgroup.*` keys need none.
    fn unified_with(&self, controller: &str) -> Option<V2Manager> {
        let u = self.unified.as_ref()?;
        let v2 = V2Manager::with_controllers(u.mount.clone(), u.path.clone(), &[]);
        if controller == "cgroup" {
            return Some(v2);
        }
        let root = fs::read(&u.mount.join("cgroup.controllers")).ok()?;
        if !root.split_whitespace().any(|c| c == controller) {
            return None;
        }
        v2.enable_down_to_leaf(controller);
        Some(v2)
    }

    /// Rules are written in order: a deny of `a` resets the list to "nothing allowed".
    fn apply_devices(&self, r: &Resources) -> Result<()> {
        if r.devices.is_empty() {
            return Ok(());
        }
        let dir = self.need("devices", field::DEVICES, r.devices.len())?;
        for (i, rule) in r.devices.iter().enumerate() {
            let file = if rule.allow { "devices.allow" } else { "devices.deny" };
            let line = rule.v1_line();
            fs::write(&dir.join(file), &line).map_err(|e| e.field(field::DEVICES, format!("[{i}] {line:?}")))?;
        }
        Ok(())
    }

    fn apply_cpuset(&self, r: &Resources) -> Result<()> {
        for (field, file, value) in
            [(field::CPU_CPUS, "cpuset.cpus", nonempty(&r.cpu.cpus)), (field::CPU_MEMS, "cpuset.mems", nonempty(&r.cpu.mems))]
        {
            if let Some(v) = value {
                let dir = self.need("cpuset", field, format!("{v:?}"))?;
                fs::write(&dir.join(file), v).map_err(|e| e.field(field, format!("{v:?}")))?;
            }
        }
        Ok(())
    }
}

/// `checkBeforeUpdate`: refuses `limit` below the usage in `usage_file`.
pub(crate) fn check_usage(usage_file: &Path, limit: i64) -> Result<()> {
    let usage = fs::read_i128(usage_file).map_err(|e| e.field(field::MEMORY_LIMIT, limit))?;
    if i128::from(limit) < usage {
        return Err(
            Error::Msg(format!("below the current usage of {usage} bytes (checkBeforeUpdate is set)")).field(field::MEMORY_LIMIT, limit)
        );
    }
    Ok(())
}

/// A new v1 cpuset cgroup has empty `cpuset.cpus`/`cpuset.mems`, and no task can join it
/// (ENOSPC) until they are filled: copy each empty one from the parent, top-down from the
/// hierarchy root to `leaf`, as runc does.
fn fill_cpuset(mount: &Path, leaf: &Path) -> Result<()> {
    let Ok(rel) = leaf.strip_prefix(mount) else {
        return Ok(());
    };
    let mut parent = mount.to_path_buf();
    for part in rel.components() {
        let dir = parent.join(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if fs::read(&dir.join(file))?.is_empty() {
                let value = fs::read(&parent.join(file))?;
                fs::write(&dir.join(file), &value)?;
            }
        }
        parent = dir;
    }
    Ok(())
}

impl Manager for V1Manager {
    fn create(&self) -> Result<()> {
        let mut created = Vec::new();
        let result = self.create_dirs(&mut created);
        if result.is_err() {
            // Leave nothing behind: remove what this call made, deepest first.
            for d in created.iter().rev() {
                fs::rmdir_if_unused(d);
            }
            return result;
        }
        self.created.lock().unwrap_or_else(|e| e.into_inner()).extend(created);
        Ok(())
    }

    fn add_task(&self, pid: i32) -> Result<()> {
        for d in self.all() {
            fs::write(&d.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn apply(&self, r: &Resources) -> Result<()> {
        r.validate()?;
        self.apply_memory(r)?;
        if let Some(limit) = nonzero(r.pids.limit) {
            let dir = self.need("pids", field::PIDS_LIMIT, limit)?;
            fs::write(&dir.join("pids.max"), &pids_max(limit)).map_err(|e| e.field(field::PIDS_LIMIT, limit))?;
        }
        self.apply_cpu(r)?;
        self.apply_cpuset(r)?;
        self.apply_blkio(r)?;
        self.apply_hugetlb(r)?;
        self.apply_network(r)?;
        self.apply_rdma(r)?;
        self.apply_unified(r)?;
        self.apply_devices(r)
    }

    fn pids(&self) -> Result<Vec<i32>> {
        fs::procs_recursive(self.procs_dir())
    }

    fn kill_all(&self, signal: i32) -> Result<()> {
        let freezer = self.freezer().ok();
        let kill_dir = self.unified.as_ref().map(|u| u.path.as_path());
        fs::kill_all(self.procs_dir(), kill_dir, freezer.as_ref(), signal)
    }

    fn freeze(&self) -> Result<()> {
        self.freezer()?.freeze()
    }

    fn thaw(&self) -> Result<()> {
        self.freezer()?.thaw()
    }

    fn is_frozen(&self) -> Result<bool> {
        self.freezer()?.is_frozen()
    }

    fn exists(&self) -> bool {
        self.procs_dir().is_dir()
    }

    fn destroy(&self) -> Result<()> {
        let mut first_err = None;
        for d in self.all() {
            if let Err(e) = fs::remove_tree(&d.path) {
                first_err.get_or_insert(e);
            }
        }
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        for d in created.iter().rev() {
            fs::rmdir_if_unused(d);
        }
        first_err.map_or(Ok(()), Err)
    }

    fn stats(&self) -> Result<crate::Stats> {
        let mut st = crate::Stats::default();
        crate::stats::v1(&|c| self.dir(c).map(Path::to_path_buf), &mut st)?;
        if self.dir("hugetlb").is_none() {
            if let Some(u) = &self.unified {
                crate::stats::v2_hugetlb(&u.path, &mut st)?;
            }
        }
        Ok(st)
    }

    fn paths(&self) -> BTreeMap<String, PathBuf> {
        let mut map = BTreeMap::new();
        for d in &self.dirs {
            for c in &d.controllers {
                map.insert(c.clone(), d.path.clone());
            }
        }
        if let Some(u) = &self.unified {
            map.insert(String::new(), u.path.clone());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::parse;
    use crate::proc::{parse_mountinfo, parse_proc_cgroup};

    fn layout() -> Layout {
        Layout::from_parts(
            &parse_mountinfo(
                "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                 35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                 40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
                 41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            ),
            &parse_proc_cgroup("3:name=systemd:/\n2:memory:/pa/h\n1:cpu,cpuacct:/\n0::/u\n"),
            Path::new("/sys/fs/cgroup/unified"),
        )
    }

    #[test]
    fn paths_cover_every_controller_and_unified_in_hybrid() {
        let inner = parse(None, "c1").ok();
        let m = inner.and_then(|i| V1Manager::new(&layout(), &i, true).ok());
        let paths = m.map(|m| m.paths()).unwrap_or_default();
        let expect: BTreeMap<String, PathBuf> = [
            ("", "/sys/fs/cgroup/unified/u/c1"),
            ("cpu", "/sys/fs/cgroup/cpu,cpuacct/c1"),
            ("cpuacct", "/sys/fs/cgroup/cpu,cpuacct/c1"),
            ("memory", "/sys/fs/cgroup/memory/pa/h/c1"),
            ("name=systemd", "/sys/fs/cgroup/systemd/c1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
        .collect();
        assert_eq!(paths, expect);
    }

    #[test]
    fn legacy_has_no_unified_and_missing_controller_names_the_field() {
        let m = parse(Some("/a/b"), "c1").and_then(|i| V1Manager::new(&layout(), &i, false));
        let Ok(m) = m else { panic!("{m:?}") };
        assert!(!m.paths().contains_key(""));
        assert_eq!(m.paths().get("memory"), Some(&PathBuf::from("/sys/fs/cgroup/memory/a/b")));
        let r = Resources { pids: crate::Pids { limit: Some(10) }, ..Default::default() };
        let e = m.apply(&r).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(e, "linux.resources.pids.limit = 10: the pids cgroup controller is not mounted");
        // Nothing requested: nothing to do, even without the controllers.
        assert!(m.apply(&Resources::default()).is_ok());
    }
}

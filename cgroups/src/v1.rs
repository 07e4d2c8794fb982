//! The cgroup v1 manager (Legacy hosts, and the v1 half of a Hybrid host's manager in
//! `hybrid.rs`): one directory per mounted hierarchy — every one this process belongs to,
//! including named ones like `name=systemd`, so the container is placed everywhere as runc
//! places it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::{self, Created, Freezer};
use crate::path::{Dir, Inner};
use crate::proc::Layout;
use crate::resources::{field, nonempty, nonzero, pids_max, rdma_line, v1_memory_writes, Resources};
use crate::Manager;

/// Manager for the cgroup v1 hierarchies.
#[derive(Debug)]
pub(crate) struct V1Manager {
    dirs: Vec<Dir>,
    /// Directories this instance created (see `destroy`).
    created: Created,
}

impl V1Manager {
    /// Resolves `inner` in every v1 hierarchy of `layout`.
    pub(crate) fn new(layout: &Layout, inner: &Inner) -> Result<V1Manager> {
        if layout.v1.is_empty() {
            return Err(Error::Msg("no cgroup v1 hierarchy is mounted (see /proc/self/mountinfo)".into()));
        }
        let dirs = layout.v1.iter().map(|h| inner.placed_in(h)).collect::<Result<Vec<_>>>()?;
        Ok(V1Manager::from_dirs(dirs))
    }

    /// A manager over directories that already exist (from [`Manager::paths`]).
    pub(crate) fn from_dirs(dirs: Vec<Dir>) -> V1Manager {
        V1Manager { dirs, created: Created::default() }
    }

    /// The container's directories, one per hierarchy.
    pub(crate) fn dirs(&self) -> impl Iterator<Item = &Dir> {
        self.dirs.iter()
    }

    /// The container's directory in the hierarchy holding `controller`.
    pub(crate) fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find(|d| d.controllers.iter().any(|c| c == controller)).map(|d| d.path.as_path())
    }

    /// Like [`Self::dir`], but an error naming the OCI field when the controller is missing.
    fn need(&self, controller: &str, field: &'static str, value: impl std::fmt::Display) -> Result<&Path> {
        self.dir(controller).ok_or_else(|| Error::Msg(format!("the {controller} cgroup controller is not mounted")).field(field, value))
    }

    /// The directory whose `cgroup.procs` lists the container's processes.
    pub(crate) fn procs_dir(&self) -> &Path {
        ["pids", "freezer", "memory"]
            .iter()
            .find_map(|c| self.dir(c))
            .or_else(|| self.dirs.first().map(|d| d.path.as_path()))
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// The v1 freezer, if that hierarchy is mounted.
    pub(crate) fn freezer(&self) -> Option<Freezer> {
        self.dir("freezer").map(|d| Freezer::V1(d.to_path_buf()))
    }

    fn need_freezer(&self) -> Result<Freezer> {
        self.freezer().ok_or_else(|| Error::Msg("the freezer cgroup controller is not mounted".into()))
    }

    /// Makes the directories (recording new ones in `created`) and fills new cpuset ones.
    pub(crate) fn create_dirs(&self, created: &mut Vec<PathBuf>) -> Result<()> {
        for d in &self.dirs {
            fs::mkdir_all(&d.mount, &d.path, created)?;
        }
        if let Some(d) = self.dirs.iter().find(|d| d.controllers.iter().any(|c| c == "cpuset")) {
            fill_cpuset(&d.mount, &d.path)?;
        }
        Ok(())
    }

    /// Writes `pid` to `cgroup.procs` in every hierarchy.
    pub(crate) fn add_task_v1(&self, pid: i32) -> Result<()> {
        for d in &self.dirs {
            fs::write(&d.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Removes the container's directory in every hierarchy; the first error is returned.
    pub(crate) fn remove_dirs(&self) -> Result<()> {
        let mut first_err = None;
        for d in &self.dirs {
            if let Err(e) = fs::remove_tree(&d.path) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub(crate) fn apply_memory(&self, r: &Resources) -> Result<()> {
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
            fs::check_usage(&dir.join("memory.usage_in_bytes"), limit)?;
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

    pub(crate) fn apply_cpu(&self, r: &Resources) -> Result<()> {
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
    pub(crate) fn apply_blkio(&self, r: &Resources) -> Result<()> {
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

    /// Hugepage limits: v1 `hugetlb.<size>.limit_in_bytes` (a Hybrid host whose hugetlb
    /// controller is on the cgroup2 side writes them there instead, see `hybrid.rs`).
    pub(crate) fn apply_hugetlb(&self, r: &Resources) -> Result<()> {
        if r.hugepage_limits.is_empty() {
            return Ok(());
        }
        let Some(dir) = self.dir("hugetlb") else {
            return Err(no_hugetlb(r));
        };
        for (i, h) in r.hugepage_limits.iter().enumerate() {
            let file = format!("hugetlb.{}.limit_in_bytes", h.page_size);
            let v = if h.limit < 0 { -1 } else { h.limit };
            fs::write(&dir.join(&file), &v.to_string())
                .map_err(|e| e.field(field::HUGEPAGE_LIMITS, format!("[{i}] {} {}", h.page_size, h.limit)))?;
        }
        Ok(())
    }

    /// net_cls / net_prio (v1 only).
    pub(crate) fn apply_network(&self, r: &Resources) -> Result<()> {
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

    /// `rdma.max` lines, in the v1 rdma hierarchy or, when it is not mounted, in the
    /// directory `elsewhere` names (a Hybrid host's cgroup2 side).
    pub(crate) fn apply_rdma(&self, r: &Resources, elsewhere: &dyn Fn() -> Option<PathBuf>) -> Result<()> {
        for (dev, lim) in &r.rdma {
            let Some(line) = rdma_line(dev, lim) else { continue };
            let value = format!("{{{dev:?}: {line:?}}}");
            let dir = match self.dir("rdma").map(Path::to_path_buf).or_else(elsewhere) {
                Some(d) => d,
                None => return Err(Error::Msg("the rdma cgroup controller is not available".into()).field(field::RDMA, value)),
            };
            fs::write(&dir.join("rdma.max"), &line).map_err(|e| e.field(field::RDMA, value))?;
        }
        Ok(())
    }

    /// `unified` on a v1 host: runc refuses it outright (a Hybrid host writes the keys its
    /// cgroup2 side can take, see `hybrid.rs`).
    fn apply_unified(&self, r: &Resources) -> Result<()> {
        match r.unified.iter().next() {
            Some((k, v)) => {
                Err(Error::Msg("cgroup v2 keys cannot be set on a cgroup v1 host".into())
                    .field(field::UNIFIED, format!("{{{k:?}: {v:?}}}")))
            }
            None => Ok(()),
        }
    }

    /// Rules are written in order: a deny of `a` resets the list to "nothing allowed".
    pub(crate) fn apply_devices(&self, r: &Resources) -> Result<()> {
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

    /// `pids.max` (0 leaves it alone, a negative limit is `max`).
    pub(crate) fn apply_pids(&self, r: &Resources) -> Result<()> {
        if let Some(limit) = nonzero(r.pids.limit) {
            let dir = self.need("pids", field::PIDS_LIMIT, limit)?;
            fs::write(&dir.join("pids.max"), &pids_max(limit)).map_err(|e| e.field(field::PIDS_LIMIT, limit))?;
        }
        Ok(())
    }

    pub(crate) fn apply_cpuset(&self, r: &Resources) -> Result<()> {
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

/// The error for hugepage limits where no hierarchy has the hugetlb controller.
pub(crate) fn no_hugetlb(r: &Resources) -> Error {
    let first = r.hugepage_limits.first().map(|h| h.page_size.as_str()).unwrap_or_default();
    Error::Msg("the hugetlb cgroup controller is not available (neither a v1 hierarchy nor in the cgroup2 hierarchy)".into())
        .field(field::HUGEPAGE_LIMITS, format!("[0] {first}"))
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
        self.created.record(|made| self.create_dirs(made))
    }

    fn add_task(&self, pid: i32) -> Result<()> {
        self.add_task_v1(pid)
    }

    fn apply(&self, r: &Resources) -> Result<()> {
        r.validate()?;
        self.apply_memory(r)?;
        self.apply_pids(r)?;
        self.apply_cpu(r)?;
        self.apply_cpuset(r)?;
        self.apply_blkio(r)?;
        self.apply_hugetlb(r)?;
        self.apply_network(r)?;
        self.apply_rdma(r, &|| None)?;
        self.apply_unified(r)?;
        self.apply_devices(r)
    }

    fn pids(&self) -> Result<Vec<i32>> {
        fs::procs_recursive(self.procs_dir())
    }

    fn kill_all(&self, signal: i32) -> Result<()> {
        fs::kill_all(self.procs_dir(), None, self.freezer().as_ref(), signal)
    }

    fn freeze(&self) -> Result<()> {
        self.need_freezer()?.freeze()
    }

    fn thaw(&self) -> Result<()> {
        self.need_freezer()?.thaw()
    }

    fn is_frozen(&self) -> Result<bool> {
        self.need_freezer()?.is_frozen()
    }

    fn exists(&self) -> bool {
        self.procs_dir().is_dir()
    }

    fn destroy(&self) -> Result<()> {
        let result = self.remove_dirs();
        self.created.remove_unused();
        result
    }

    fn created(&self) -> Vec<PathBuf> {
        self.created.list()
    }

    fn adopt_created(&self, dirs: &[PathBuf]) -> Result<()> {
        let own: Vec<(&Path, &Path)> = self.dirs.iter().map(|d| (d.mount.as_path(), d.path.as_path())).collect();
        self.created.adopt(dirs, &own)
    }

    fn stats(&self) -> Result<crate::Stats> {
        let mut st = crate::Stats::default();
        crate::stats::v1(&|c| self.dir(c).map(Path::to_path_buf), &mut st)?;
        Ok(st)
    }

    fn paths(&self) -> BTreeMap<String, PathBuf> {
        let mut map = BTreeMap::new();
        for d in &self.dirs {
            for c in &d.controllers {
                map.insert(c.clone(), d.path.clone());
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::parse;
    use crate::proc::tests::sample_layout;

    #[test]
    fn paths_cover_every_v1_controller() {
        let m = parse(None, "c1").and_then(|i| V1Manager::new(&sample_layout(), &i));
        let paths = m.map(|m| m.paths()).unwrap_or_default();
        let expect: BTreeMap<String, PathBuf> = [
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
        let m = parse(Some("/a/b"), "c1").and_then(|i| V1Manager::new(&sample_layout(), &i));
        let Ok(m) = m else { panic!("{m:?}") };
        assert!(!m.paths().contains_key(""));
        assert_eq!(m.paths().get("memory"), Some(&PathBuf::from("/sys/fs/cgroup/memory/a/b")));
        let r = Resources { pids: crate::Pids { limit: Some(10) }, ..Default::default() };
        let e = m.apply(&r).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(e, "linux.resources.pids.limit = 10: the pids cgroup controller is not mounted");
        let r = Resources { unified: [("memory.high".to_string(), "1".to_string())].into(), ..Default::default() };
        let e = m.apply(&r).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(e, "linux.resources.unified = {\"memory.high\": \"1\"}: cgroup v2 keys cannot be set on a cgroup v1 host");
        // Nothing requested: nothing to do, even without the controllers.
        assert!(m.apply(&Resources::default()).is_ok());
    }
}

//! The cgroup v2 manager (Unified hosts): one directory in the cgroup2 hierarchy. `create`
//! enables the controllers we manage in every ancestor's `cgroup.subtree_control`, so the
//! leaf gets their interface files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::{self, Created, Freezer};
use crate::path::Inner;
use crate::proc::Layout;
use crate::resources::{
    blkio_weight_to_io_weight, cpu_max, field, nonempty, nonzero, pids_max, rdma_line, shares_to_weight, v2_bytes, v2_swap_max, Resources,
};
use crate::Manager;

/// Controllers `create` enables down to the container's cgroup, when the kernel offers them.
pub(crate) const CONTROLLERS: &[&str] = &["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"];

/// Manager for a cgroup2 hierarchy.
#[derive(Debug)]
pub(crate) struct V2Manager {
    mount: PathBuf,
    path: PathBuf,
    /// Controllers to enable in the ancestors (see [`CONTROLLERS`]).
    enable: &'static [&'static str],
    /// Directories this instance created (see `destroy`).
    created: Created,
}

impl V2Manager {
    /// Resolves `inner` in the cgroup2 hierarchy of `layout`.
    pub(crate) fn new(layout: &Layout, inner: &Inner) -> Result<V2Manager> {
        let h = layout.v2.as_ref().ok_or_else(|| Error::Msg("the cgroup2 hierarchy is not mounted (see /proc/self/mountinfo)".into()))?;
        Ok(V2Manager::with_controllers(h.mount_point.clone(), inner.dir_in(h)?, CONTROLLERS))
    }

    /// A manager for `path` below the cgroup2 mount `mount`, enabling `enable` in ancestors.
    pub(crate) fn with_controllers(mount: PathBuf, path: PathBuf, enable: &'static [&'static str]) -> V2Manager {
        V2Manager { mount, path, enable, created: Created::default() }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a control file of `controller`; a missing file gets a hint, since on v2 that
    /// almost always means the controller is not enabled for this cgroup.
    fn write(&self, controller: &str, name: &str, value: &str) -> Result<()> {
        fs::write(&self.file(name), value).map_err(|e| {
            if e.is_not_found() && self.path.is_dir() {
                e.with_note(format!("the {controller} controller is not enabled in the parent's cgroup.subtree_control"))
            } else {
                e
            }
        })
    }

    /// Enables [`Self::enable`] ∩ `cgroup.controllers` in `dir`'s `cgroup.subtree_control`,
    /// one controller at a time. Failures are ignored, as runc does (`apply` then reports the
    /// missing interface file with a hint). A cgroup that holds processes (the runtime's own,
    /// for a relative path: a systemd service, a login session) is left alone: the kernel
    /// refuses its domain controllers anyway, and would accept the threaded ones (cpu, pids)
    /// by turning it into a threaded domain, whose new children then refuse every process
    /// ("domain invalid", EOPNOTSUPP).
    fn enable_controllers(&self, dir: &Path) {
        if dir != self.mount && fs::procs_in(dir).is_ok_and(|p| !p.is_empty()) {
            return;
        }
        let Ok(available) = fs::read(&dir.join("cgroup.controllers")) else {
            return;
        };
        let enabled = fs::read(&dir.join("cgroup.subtree_control")).unwrap_or_default();
        let available: Vec<&str> = available.split_whitespace().collect();
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        for c in self.enable.iter().filter(|c| available.contains(c) && !enabled.contains(c)) {
            let _ = fs::write(&dir.join("cgroup.subtree_control"), &format!("+{c}"));
        }
    }

    fn create_dirs(&self, created: &mut Vec<PathBuf>) -> Result<()> {
        fs::mkdir_all(&self.mount, &self.path, created)?;
        let mut dir = self.mount.clone();
        if let Ok(rel) = self.path.strip_prefix(&self.mount) {
            for part in rel.components() {
                self.enable_controllers(&dir);
                dir.push(part);
            }
        }
        Ok(())
    }

    /// The container's cgroup2 directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.path
    }

    /// Enables `controller` in `cgroup.subtree_control` of every ancestor of the leaf that
    /// offers it (best effort, as [`Self::enable_controllers`]).
    pub(crate) fn enable_down_to_leaf(&self, controller: &str) {
        let Ok(rel) = self.path.strip_prefix(&self.mount) else { return };
        let mut dir = self.mount.clone();
        for part in rel.components() {
            let available = fs::read(&dir.join("cgroup.controllers")).unwrap_or_default();
            let enabled = fs::read(&dir.join("cgroup.subtree_control")).unwrap_or_default();
            if available.split_whitespace().any(|c| c == controller) && !enabled.split_whitespace().any(|c| c == controller) {
                let _ = fs::write(&dir.join("cgroup.subtree_control"), &format!("+{controller}"));
            }
            dir.push(part);
        }
    }

    /// Writes one `linux.resources.unified` key, with runc's checks and a clearer error.
    pub(crate) fn write_unified(&self, key: &str, value: &str) -> Result<()> {
        let shown = format!("{{{key:?}: {value:?}}}");
        let file = self.file(key);
        fs::write(&file, value).map_err(|e| {
            let controller = key.split('.').next().unwrap_or_default();
            let available = fs::read(&self.path.join("cgroup.controllers")).unwrap_or_default();
            let e = if (e.is_not_found() || e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EPERM))
                && controller != "cgroup"
                && !available.split_whitespace().any(|c| c == controller)
            {
                Error::Msg(format!("the {controller} controller is not available in {}", self.path.display()))
            } else if e.is_not_found() {
                e.with_note("no such cgroup2 file".into())
            } else {
                e
            };
            e.field(field::UNIFIED, shown)
        })
    }

    fn apply_memory(&self, r: &Resources) -> Result<()> {
        let m = &r.memory;
        let mut limit = nonzero(m.limit).unwrap_or(0);
        let swap = nonzero(m.swap).unwrap_or(0);
        if m.check_before_update == Some(true) && limit > 0 {
            fs::check_usage(&self.file("memory.current"), limit)?;
        }
        if limit == 0 && swap > 0 {
            // `update --memory-swap` alone: convert against the limit in force, as runc
            // does with its saved config.
            if let Ok(cur) = fs::read(&self.file("memory.max")) {
                limit = if cur == "max" { -1 } else { cur.parse().unwrap_or(0) };
            }
            let swap_max = v2_swap_max(swap, limit).map_err(|msg| Error::Msg(msg).field(field::MEMORY_SWAP, swap))?;
            if let Some(s) = swap_max {
                self.write("memory", "memory.swap.max", &s).map_err(|e| e.field(field::MEMORY_SWAP, swap))?;
            }
            limit = 0;
        } else if limit != 0 || swap != 0 {
            let swap_max = v2_swap_max(swap, limit).map_err(|msg| Error::Msg(msg).field(field::MEMORY_SWAP, swap))?;
            if let Some(s) = swap_max {
                match self.write("memory", "memory.swap.max", &s) {
                    Ok(()) => {}
                    // No swap accounting: "unlimited" and "none" are both already true.
                    Err(e) if e.is_not_found() && (s == "max" || s == "0") && self.path.is_dir() => {}
                    Err(e) => return Err(e.field(field::MEMORY_SWAP, swap)),
                }
            }
        }
        if let Some(v) = v2_bytes(limit) {
            self.write("memory", "memory.max", &v).map_err(|e| e.field(field::MEMORY_LIMIT, limit))?;
        }
        if let Some(v) = nonzero(m.reservation) {
            if let Some(s) = v2_bytes(v) {
                self.write("memory", "memory.low", &s).map_err(|e| e.field(field::MEMORY_RESERVATION, v))?;
            }
        }
        // swappiness, disableOOMKiller, kernel, kernelTCP and useHierarchy have no v2
        // equivalent (v2 is always hierarchical); ignored, as runc does.
        Ok(())
    }

    fn apply_cpu(&self, r: &Resources) -> Result<()> {
        let c = &r.cpu;
        if let Some(rt) = nonzero(c.realtime_runtime) {
            return Err(Error::Msg("cgroup v2 has no realtime group scheduling".into()).field(field::CPU_RT_RUNTIME, rt));
        }
        if let Some(p) = nonzero(c.realtime_period) {
            return Err(Error::Msg("cgroup v2 has no realtime group scheduling".into()).field(field::CPU_RT_PERIOD, p));
        }
        if let Some(shares) = nonzero(c.shares) {
            self.write("cpu", "cpu.weight", &shares_to_weight(shares).to_string()).map_err(|e| e.field(field::CPU_SHARES, shares))?;
        }
        if let Some(idle) = c.idle {
            self.write("cpu", "cpu.idle", &idle.to_string()).map_err(|e| e.field(field::CPU_IDLE, idle))?;
        }
        let quota = nonzero(c.quota).unwrap_or(0);
        let period = nonzero(c.period).unwrap_or(0);
        let mut retry_burst = None;
        if let Some(b) = c.burst {
            match self.write("cpu", "cpu.max.burst", &b.to_string()) {
                Ok(()) => {}
                // As runc: a burst above the old quota is refused; retry after the quota.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && quota != 0 => retry_burst = Some(b),
                Err(e) => return Err(e.field(field::CPU_BURST, b)),
            }
        }
        if let Some(v) = cpu_max(quota, period) {
            let (f, val) = if quota != 0 { (field::CPU_QUOTA, quota.to_string()) } else { (field::CPU_PERIOD, period.to_string()) };
            self.write("cpu", "cpu.max", &v).map_err(|e| e.field(f, val))?;
        }
        if let Some(b) = retry_burst {
            self.write("cpu", "cpu.max.burst", &b.to_string()).map_err(|e| e.field(field::CPU_BURST, b))?;
        }
        for (f, file, value) in [(field::CPU_CPUS, "cpuset.cpus", nonempty(&c.cpus)), (field::CPU_MEMS, "cpuset.mems", nonempty(&c.mems))] {
            if let Some(v) = value {
                self.write("cpuset", file, v).map_err(|e| e.field(f, format!("{v:?}")))?;
            }
        }
        Ok(())
    }

    /// runc's `setIo`: weights to `io.bfq.weight` when BFQ is there, else `io.weight`
    /// converted; per-device weights only with BFQ; throttles to `io.max`.
    fn apply_io(&self, r: &Resources) -> Result<()> {
        let b = &r.block_io;
        if !b.is_set() {
            return Ok(());
        }
        let bfq = self.file("io.bfq.weight").exists();
        if let Some(w) = nonzero(b.weight) {
            let res = if bfq {
                self.write("io", "io.bfq.weight", &w.to_string())
            } else {
                self.write("io", "io.weight", &blkio_weight_to_io_weight(w).to_string())
            };
            res.map_err(|e| e.field(field::BLKIO_WEIGHT, w))?;
        }
        if let Some(w) = nonzero(b.leaf_weight) {
            return Err(Error::Msg("cgroup v2 has no leaf weight".into()).field(field::BLKIO_LEAF_WEIGHT, w));
        }
        for (i, wd) in b.weight_device.iter().enumerate() {
            if let Some(w) = nonzero(wd.weight) {
                let line = format!("{}:{} {w}", wd.major, wd.minor);
                if !bfq {
                    return Err(Error::Msg("per-device weights need the BFQ I/O scheduler (io.bfq.weight is missing)".into())
                        .field(field::BLKIO_WEIGHT_DEVICE, format!("[{i}] {line:?}")));
                }
                self.write("io", "io.bfq.weight", &line).map_err(|e| e.field(field::BLKIO_WEIGHT_DEVICE, format!("[{i}] {line:?}")))?;
            }
            if let Some(w) = nonzero(wd.leaf_weight) {
                return Err(
                    Error::Msg("cgroup v2 has no leaf weight".into()).field(field::BLKIO_WEIGHT_DEVICE, format!("[{i}] leafWeight {w}"))
                );
            }
        }
        for (f, _, key, list) in b.throttles() {
            for (i, t) in list.iter().enumerate() {
                let line = t.v2_line(key);
                self.write("io", "io.max", &line).map_err(|e| e.field(f, format!("[{i}] {line:?}")))?;
            }
        }
        Ok(())
    }

    /// `hugetlb.<size>.max` (and `.rsvd.max` where the kernel has it, as runc 1.2 does, so
    /// reservations are limited too).
    pub(crate) fn apply_hugetlb(&self, r: &Resources) -> Result<()> {
        for (i, h) in r.hugepage_limits.iter().enumerate() {
            let v = if h.limit < 0 { "max".to_string() } else { h.limit.to_string() };
            let shown = format!("[{i}] {} {}", h.page_size, h.limit);
            self.write("hugetlb", &format!("hugetlb.{}.max", h.page_size), &v)
                .map_err(|e| e.field(field::HUGEPAGE_LIMITS, shown.clone()))?;
            let rsvd = format!("hugetlb.{}.rsvd.max", h.page_size);
            if self.file(&rsvd).exists() {
                self.write("hugetlb", &rsvd, &v).map_err(|e| e.field(field::HUGEPAGE_LIMITS, shown))?;
            }
        }
        Ok(())
    }

    fn apply_rdma(&self, r: &Resources) -> Result<()> {
        for (dev, lim) in &r.rdma {
            if let Some(line) = rdma_line(dev, lim) {
                self.write("rdma", "rdma.max", &line).map_err(|e| e.field(field::RDMA, format!("{{{dev:?}: {line:?}}}")))?;
            }
        }
        Ok(())
    }

    fn freezer(&self) -> Freezer {
        Freezer::V2(self.path.clone())
    }
}

impl Manager for V2Manager {
    fn create(&self) -> Result<()> {
        self.created.record(|made| self.create_dirs(made))
    }

    fn add_task(&self, pid: i32) -> Result<()> {
        fs::write(&self.file("cgroup.procs"), &pid.to_string())
    }

    fn apply(&self, r: &Resources) -> Result<()> {
        r.validate()?;
        self.apply_memory(r)?;
        if let Some(limit) = nonzero(r.pids.limit) {
            self.write("pids", "pids.max", &pids_max(limit)).map_err(|e| e.field(field::PIDS_LIMIT, limit))?;
        }
        self.apply_cpu(r)?;
        self.apply_io(r)?;
        self.apply_hugetlb(r)?;
        self.apply_rdma(r)?;
        // network (net_cls/net_prio) has no cgroup v2 counterpart; ignored, as runc does.
        // `unified` goes last so it overrides the converted values, as in runc.
        for (k, v) in &r.unified {
            self.write_unified(k, v)?;
        }
        // Device rules: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE (see devices.rs).
        if !r.devices.is_empty() {
            crate::devices::attach(&self.path, &r.devices).map_err(|e| e.field(field::DEVICES, format!("{} rules", r.devices.len())))?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        fs::procs_recursive(&self.path)
    }

    fn kill_all(&self, signal: i32) -> Result<()> {
        fs::kill_all(&self.path, Some(&self.path), Some(&self.freezer()), signal)
    }

    fn freeze(&self) -> Result<()> {
        self.freezer().freeze()
    }

    fn thaw(&self) -> Result<()> {
        self.freezer().thaw()
    }

    fn is_frozen(&self) -> Result<bool> {
        self.freezer().is_frozen()
    }

    fn exists(&self) -> bool {
        self.path.is_dir()
    }

    fn destroy(&self) -> Result<()> {
        let result = fs::remove_tree(&self.path);
        self.created.remove_unused();
        result
    }

    fn created(&self) -> Vec<PathBuf> {
        self.created.list()
    }

    fn adopt_created(&self, dirs: &[PathBuf]) -> Result<()> {
        self.created.adopt(dirs, &[(self.mount.as_path(), self.path.as_path())])
    }

    fn stats(&self) -> Result<crate::Stats> {
        let mut st = crate::Stats::default();
        crate::stats::v2(&self.path, &mut st)?;
        Ok(st)
    }

    fn paths(&self) -> BTreeMap<String, PathBuf> {
        BTreeMap::from([(String::new(), self.path.clone())])
    }
}

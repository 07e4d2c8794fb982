//! What the shim reads from cgroupfs itself: the container's cgroup paths (from
//! /proc/PID/cgroup + mountinfo), Stats (v1 Metrics on v1/hybrid hosts, v2 Metrics on pure v2
//! hosts, as containerd-shim-runc-v2 reports), OOM notifications (v1: memory.oom_control eventfd;
//! v2: inotify on memory.events), and the process list.
//!
//! Written directly rather than through cgroups-rs (whose v1 metrics helper in containerd-shim
//! 0.11 parses v2 files and panics on v1 ones) or capsa-cgroups (no read/notify API yet).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use containerd_shim::protos::cgroups::metrics as v1m;
use containerd_shim::protos::cgroups_v2::metrics as v2m;
use protobuf::well_known_types::any::Any;
use protobuf::Message;

#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    /// v1: controller name -> directory. Empty on a pure v2 host.
    pub v1: HashMap<String, PathBuf>,
    /// Pure v2 host: the unified directory.
    pub v2: Option<PathBuf>,
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

pub fn is_unified() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup").map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC).unwrap_or(false)
}

/// cgroup mounts: (superblock options or "" for cgroup2, mount point, root inside the hierarchy).
fn cgroup_mounts() -> Vec<(String, PathBuf, String, bool)> {
    let Ok(s) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut out = Vec::new();
    for line in s.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let fstype = post[0];
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        out.push((post[2].to_string(), PathBuf::from(pre[4]), pre[3].to_string(), fstype == "cgroup2"));
    }
    out
}

impl Cgroups {
    pub fn of_pid(pid: i32) -> io::Result<Cgroups> {
        let s = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let mounts = cgroup_mounts();
        let mut cg = Cgroups::default();
        let unified = is_unified();
        for line in s.lines() {
            let mut it = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else { continue };
            if ctrls.is_empty() {
                if unified {
                    if let Some((_, mp, root, _)) = mounts.iter().find(|m| m.3) {
                        cg.v2 = Some(join_under(mp, root, path));
                    }
                }
                continue;
            }
            for ctrl in ctrls.split(',') {
                let name = ctrl.trim_start_matches("name=");
                if let Some((_, mp, root, _)) = mounts.iter().find(|m| !m.3 && m.0.split(',').any(|o| o == ctrl)) {
                    cg.v1.insert(name.to_string(), join_under(mp, root, path));
                }
            }
        }
        Ok(cg)
    }

    fn v1_file(&self, ctrl: &str, file: &str) -> Option<PathBuf> {
        self.v1.get(ctrl).map(|d| d.join(file))
    }

    /// Pids in the container's cgroup (pids or memory controller on v1).
    pub fn procs(&self) -> io::Result<Vec<i32>> {
        let dir = match &self.v2 {
            Some(d) => d.clone(),
            None => ["pids", "memory", "cpu", "freezer"]
                .iter()
                .find_map(|c| self.v1.get(*c).cloned())
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup for the container"))?,
        };
        let s = fs::read_to_string(dir.join("cgroup.procs"))?;
        Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Stats as containerd wants them, packed in an Any.
    pub fn metrics(&self) -> io::Result<Any> {
        let (url, data) = match &self.v2 {
            Some(d) => ("io.containerd.cgroups.v2.Metrics", metrics_v2(d).write_to_bytes()),
            None => ("io.containerd.cgroups.v1.Metrics", self.metrics_v1()?.write_to_bytes()),
        };
        let mut any = Any::new();
        any.type_url = url.to_string();
        any.value = data.map_err(io::Error::other)?;
        Ok(any)
    }

    fn metrics_v1(&self) -> io::Result<v1m::Metrics> {
        let mut m = v1m::Metrics::new();
        if !self.v1.contains_key("memory") && !self.v1.contains_key("cpuacct") {
            return Err(io::Error::new(io::ErrorKind::NotFound, "container has no memory/cpuacct cgroup"));
        }
        if let Some(cur) = self.v1_file("pids", "pids.current").and_then(|p| read_u64(&p)) {
            let mut p = v1m::PidsStat::new();
            p.current = cur;
            p.limit = self.v1_file("pids", "pids.max").and_then(|p| read_u64(&p)).unwrap_or(0);
            m.pids = Some(p).into();
        }
        if let Some(total) = self.v1_file("cpuacct", "cpuacct.usage").and_then(|p| read_u64(&p)) {
            let mut cpu = v1m::CPUStat::new();
            let mut u = v1m::CPUUsage::new();
            u.total = total;
            if let Some(s) = self.v1_file("cpuacct", "cpuacct.usage_percpu").and_then(|p| fs::read_to_string(p).ok()) {
                u.per_cpu = s.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            }
            if let Some(st) = self.v1_file("cpuacct", "cpuacct.stat").and_then(|p| read_kv(&p)) {
                // USER_HZ ticks -> ns (runc does the same conversion).
                let tick = 1_000_000_000 / clock_ticks();
                u.user = st.get("user").copied().unwrap_or(0) * tick;
                u.kernel = st.get("system").copied().unwrap_or(0) * tick;
            }
            cpu.usage = Some(u).into();
            if let Some(st) = self.v1_file("cpu", "cpu.stat").and_then(|p| read_kv(&p)) {
                let mut t = v1m::Throttle::new();
                t.periods = st.get("nr_periods").copied().unwrap_or(0);
                t.throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
                t.throttled_time = st.get("throttled_time").copied().unwrap_or(0);
                cpu.throttling = Some(t).into();
            }
            m.cpu = Some(cpu).into();
        }
        if let Some(dir) = self.v1.get("memory") {
            let mut mem = v1m::MemoryStat::new();
            if let Some(st) = read_kv(&dir.join("memory.stat")) {
                let g = |k: &str| st.get(k).copied().unwrap_or(0);
                mem.cache = g("cache");
                mem.rss = g("rss");
                mem.rss_huge = g("rss_huge");
                mem.mapped_file = g("mapped_file");
                mem.dirty = g("dirty");
                mem.writeback = g("writeback");
                mem.pg_pg_in = g("pgpgin");
                mem.pg_pg_out = g("pgpgout");
                mem.pg_fault = g("pgfault");
                mem.pg_maj_fault = g("pgmajfault");
                mem.inactive_anon = g("inactive_anon");
                mem.active_anon = g("active_anon");
                mem.inactive_file = g("inactive_file");
                mem.active_file = g("active_file");
                mem.unevictable = g("unevictable");
                mem.hierarchical_memory_limit = g("hierarchical_memory_limit");
                mem.hierarchical_swap_limit = g("hierarchical_memsw_limit");
                mem.total_cache = g("total_cache");
                mem.total_rss = g("total_rss");
                mem.total_rss_huge = g("total_rss_huge");
                mem.total_mapped_file = g("total_mapped_file");
                mem.total_dirty = g("total_dirty");
                mem.total_writeback = g("total_writeback");
                mem.total_pg_pg_in = g("total_pgpgin");
                mem.total_pg_pg_out = g("total_pgpgout");
                mem.total_pg_fault = g("total_pgfault");
                mem.total_pg_maj_fault = g("total_pgmajfault");
                mem.total_inactive_anon = g("total_inactive_anon");
                mem.total_active_anon = g("total_active_anon");
                mem.total_inactive_file = g("total_inactive_file");
                mem.total_active_file = g("total_active_file");
                mem.total_unevictable = g("total_unevictable");
            }
            let entry = |prefix: &str| {
                let mut e = v1m::MemoryEntry::new();
                e.usage = read_u64(&dir.join(format!("{prefix}usage_in_bytes"))).unwrap_or(0);
                e.max = read_u64(&dir.join(format!("{prefix}max_usage_in_bytes"))).unwrap_or(0);
                e.limit = read_u64(&dir.join(format!("{prefix}limit_in_bytes"))).unwrap_or(0);
                e.failcnt = read_u64(&dir.join(format!("{prefix}failcnt"))).unwrap_or(0);
                e
            };
            mem.usage = Some(entry("memory.")).into();
            mem.swap = Some(entry("memory.memsw.")).into();
            mem.kernel = Some(entry("memory.kmem.")).into();
            mem.kernel_tcp = Some(entry("memory.kmem.tcp.")).into();
            m.memory = Some(mem).into();
            if let Some(st) = read_kv(&dir.join("memory.oom_control")) {
                let mut o = v1m::MemoryOomControl::new();
                o.oom_kill_disable = st.get("oom_kill_disable").copied().unwrap_or(0);
                o.under_oom = st.get("under_oom").copied().unwrap_or(0);
                o.oom_kill = st.get("oom_kill").copied().unwrap_or(0);
                m.memory_oom_control = Some(o).into();
            }
        }
        Ok(m)
    }

    /// Watch for OOM kills; `on_oom` runs once per kill, until the cgroup is removed.
    pub fn watch_oom(&self, on_oom: impl Fn() + Send + Sync + 'static) -> io::Result<std::sync::Arc<Oom>> {
        if let Some(dir) = &self.v2 {
            return watch_oom_v2(dir.clone(), Box::new(on_oom));
        }
        let dir = self.v1.get("memory").cloned().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no memory cgroup"))?;
        watch_oom_v1(dir, Box::new(on_oom))
    }
}

/// Put `pid` into the cgroup `path` (runc Options ShimCgroup): every v1 hierarchy that has the
/// directory, or the unified hierarchy.
pub fn add_pid(path: &str, pid: u32) -> io::Result<()> {
    let rel = path.trim_start_matches('/');
    if is_unified() {
        return fs::write(Path::new("/sys/fs/cgroup").join(rel).join("cgroup.procs"), pid.to_string());
    }
    let mut done = false;
    for (_, mp, _, v2) in cgroup_mounts() {
        let procs = mp.join(rel).join("cgroup.procs");
        if !v2 && procs.exists() {
            fs::write(&procs, pid.to_string())?;
            done = true;
        }
    }
    if done {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::NotFound, "no hierarchy has this cgroup"))
    }
}

/// oom_score_adj of `pid` = ours (containerd's, inherited by `start`) + 1, at most 1000.
pub fn adjust_oom_score(pid: u32) -> io::Result<()> {
    let own: i64 = fs::read_to_string("/proc/self/oom_score_adj")?.trim().parse().map_err(io::Error::other)?;
    fs::write(format!("/proc/{pid}/oom_score_adj"), (own + 1).min(1000).to_string())
}

fn join_under(mountpoint: &Path, root: &str, path: &str) -> PathBuf {
    let rel = path.strip_prefix(root).filter(|_| root != "/").unwrap_or(path);
    mountpoint.join(rel.trim_start_matches('/'))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    let s = fs::read_to_string(p).ok()?;
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

fn read_kv(p: &Path) -> Option<HashMap<String, u64>> {
    let s = fs::read_to_string(p).ok()?;
    Some(parse_kv(&s))
}

fn parse_kv(s: &str) -> HashMap<String, u64> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

fn metrics_v2(dir: &Path) -> v2m::Metrics {
    let mut m = v2m::Metrics::new();
    let mut p = v2m::PidsStat::new();
    p.current = read_u64(&dir.join("pids.current")).unwrap_or(0);
    p.limit = read_u64(&dir.join("pids.max")).map(|v| if v == u64::MAX { 0 } else { v }).unwrap_or(0);
    m.pids = Some(p).into();
    if let Some(st) = read_kv(&dir.join("cpu.stat")) {
        let g = |k: &str| st.get(k).copied().unwrap_or(0);
        let mut c = v2m::CPUStat::new();
        c.usage_usec = g("usage_usec");
        c.user_usec = g("user_usec");
        c.system_usec = g("system_usec");
        c.nr_periods = g("nr_periods");
        c.nr_throttled = g("nr_throttled");
        c.throttled_usec = g("throttled_usec");
        m.cpu = Some(c).into();
    }
    let mut mem = v2m::MemoryStat::new();
    if let Some(st) = read_kv(&dir.join("memory.stat")) {
        let g = |k: &str| st.get(k).copied().unwrap_or(0);
        mem.anon = g("anon");
        mem.file = g("file");
        mem.kernel_stack = g("kernel_stack");
        mem.slab = g("slab");
        mem.sock = g("sock");
        mem.shmem = g("shmem");
        mem.file_mapped = g("file_mapped");
        mem.file_dirty = g("file_dirty");
        mem.file_writeback = g("file_writeback");
        mem.pgfault = g("pgfault");
        mem.pgmajfault = g("pgmajfault");
        mem.inactive_anon = g("inactive_anon");
        mem.active_anon = g("active_anon");
        mem.inactive_file = g("inactive_file");
        mem.active_file = g("active_file");
        mem.unevictable = g("unevictable");
    }
    mem.usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
    mem.usage_limit = read_u64(&dir.join("memory.max")).unwrap_or(0);
    mem.swap_usage = read_u64(&dir.join("memory.swap.current")).unwrap_or(0);
    mem.swap_limit = read_u64(&dir.join("memory.swap.max")).unwrap_or(0);
    m.memory = Some(mem).into();
    if let Some(st) = read_kv(&dir.join("memory.events")) {
        let g = |k: &str| st.get(k).copied().unwrap_or(0);
        let mut e = v2m::MemoryEvents::new();
        e.low = g("low");
        e.high = g("high");
        e.max = g("max");
        e.oom = g("oom");
        e.oom_kill = g("oom_kill");
        m.memory_events = Some(e).into();
    }
    m
}

/// OOM kills of one container's cgroup, counted by the kernel (`oom_kill` in v1
/// memory.oom_control / v2 memory.events). The watcher thread calls [`Oom::check`] when the
/// kernel signals; the shim calls it again when the init exits, before the cgroup can be
/// removed, so an OOM kill is published (and before the exit) even if the watcher thread has
/// not run yet.
pub struct Oom {
    file: PathBuf,
    seen: std::sync::Mutex<u64>,
    on_oom: Box<dyn Fn() + Send + Sync>,
}

impl Oom {
    /// The counter; Some(None) when this kernel has no `oom_kill` field; None: cgroup gone.
    fn count(&self) -> Option<Option<u64>> {
        read_kv(&self.file).map(|m| m.get("oom_kill").copied())
    }

    /// Publish OOM kills not published yet. `signalled`: the kernel just notified (used only on
    /// kernels without the counter). Returns false once the cgroup is gone.
    pub fn check(&self, signalled: bool) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match self.count() {
            None => false,
            Some(Some(now)) => {
                if now > *seen {
                    *seen = now;
                    (self.on_oom)();
                }
                true
            }
            Some(None) => {
                if signalled {
                    (self.on_oom)();
                }
                true
            }
        }
    }
}

fn watch_oom_v1(dir: PathBuf, on_oom: Box<dyn Fn() + Send + Sync>) -> io::Result<std::sync::Arc<Oom>> {
    let ctl = fs::File::open(dir.join("memory.oom_control"))?;
    // SAFETY: eventfd has no memory preconditions; the result is checked before use.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh fd owned by nobody else.
    let efd = unsafe { OwnedFd::from_raw_fd(raw) };
    fs::write(dir.join("cgroup.event_control"), format!("{} {}", efd.as_raw_fd(), ctl.as_raw_fd()))?;
    let oom = std::sync::Arc::new(Oom { file: dir.join("memory.oom_control"), seen: Default::default(), on_oom });
    if let Some(Some(n)) = oom.count() {
        *oom.seen.lock().unwrap_or_else(|e| e.into_inner()) = n;
    }
    let o = std::sync::Arc::clone(&oom);
    std::thread::Builder::new().name("oom".into()).spawn(move || {
        let _ctl = ctl;
        loop {
            let mut buf = [0u8; 8];
            // SAFETY: reads 8 bytes into a valid 8-byte buffer from our own eventfd.
            let n = unsafe { libc::read(efd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            // The eventfd also fires when the cgroup is removed: then stop.
            if !o.check(true) {
                return;
            }
        }
    })?;
    Ok(oom)
}

fn watch_oom_v2(dir: PathBuf, on_oom: Box<dyn Fn() + Send + Sync>) -> io::Result<std::sync::Arc<Oom>> {
    // SAFETY: inotify_init1 has no memory preconditions; checked below.
    let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned by nobody else.
    let ifd = unsafe { OwnedFd::from_raw_fd(raw) };
    let events = dir.join("memory.events");
    let cpath = std::ffi::CString::new(events.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: cpath is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::inotify_add_watch(ifd.as_raw_fd(), cpath.as_ptr(), libc::IN_MODIFY) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let oom = std::sync::Arc::new(Oom { file: events, seen: Default::default(), on_oom });
    if let Some(Some(n)) = oom.count() {
        *oom.seen.lock().unwrap_or_else(|e| e.into_inner()) = n;
    }
    let o = std::sync::Arc::clone(&oom);
    std::thread::Builder::new().name("oom".into()).spawn(move || loop {
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a valid buffer of the given length from our inotify fd.
        let n = unsafe { libc::read(ifd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        // IN_IGNORED arrives when the cgroup (and its file) is removed.
        if n <= 0 || !o.check(false) {
            return;
        }
    })?;
    Ok(oom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_and_paths() {
        let m = parse_kv("cache 4096\nrss 8192\nbad\nx y\n");
        assert_eq!(m.get("cache"), Some(&4096));
        assert_eq!(m.get("rss"), Some(&8192));
        assert_eq!(m.len(), 2);
        assert_eq!(join_under(Path::new("/sys/fs/cgroup/memory"), "/", "/default/abc"), PathBuf::from("/sys/fs/cgroup/memory/default/abc"));
        assert_eq!(join_under(Path::new("/sys/fs/cgroup/memory"), "/k8s", "/k8s/abc"), PathBuf::from("/sys/fs/cgroup/memory/abc"));
    }
}

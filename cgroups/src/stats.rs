//! [`Stats`]: a container's resource usage read from cgroupfs, with the fields and
//! conversions of runc's `events --stats` (`types/events.go` of runc 1.1), so the runtime
//! only has to render it as JSON.
//!
//! Files that do not exist (a controller not mounted, a kernel without swap accounting)
//! leave their fields at zero, as runc does; a file that exists but cannot be parsed is an
//! error naming it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fs;

/// Everything `events --stats` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub cpu: CpuStats,
    pub cpuset: CpusetStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
    pub blkio: BlkioStats,
    /// Page size (`2MB`) → usage.
    pub hugetlb: BTreeMap<String, HugetlbStats>,
}

/// CPU time in nanoseconds and CFS throttling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuStats {
    pub total: u64,
    pub percpu: Vec<u64>,
    pub percpu_kernel: Vec<u64>,
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
}

/// cpuset configuration (v1 files; v2 reports the effective cpus/mems only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpusetStats {
    pub cpus: Vec<u16>,
    pub mems: Vec<u16>,
    pub cpu_exclusive: u64,
    pub mem_hardwall: u64,
    pub mem_exclusive: u64,
    pub memory_migrate: u64,
    pub memory_spread_page: u64,
    pub memory_spread_slab: u64,
    pub memory_pressure: u64,
    pub sched_load_balance: u64,
    pub sched_relax_domain_level: i64,
}

/// One memory counter family (usage, swap, kernel, kernel TCP), bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryEntry {
    pub limit: u64,
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Page cache: `cache` of v1 memory.stat, `file` of v2.
    pub cache: u64,
    pub usage: MemoryEntry,
    /// v1: memory+swap (`memory.memsw.*`); v2: memory.current + memory.swap.current, as runc.
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    pub kernel_tcp: MemoryEntry,
    /// memory.stat as is.
    pub raw: BTreeMap<String, u64>,
    /// v2 `memory.events` as is (`low`, `high`, `max`, `oom`, `oom_kill`); empty on v1.
    pub events: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsStats {
    pub current: u64,
    /// 0 when unlimited (`max`).
    pub limit: u64,
}

/// One line of a blkio/io statistics file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    /// `Read`, `Write`, `Sync`, `Async`, `Discard`, `Total`.
    pub op: String,
    pub value: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioStats {
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HugetlbStats {
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

/// Reads `dir/name` if it exists: `Ok(None)` when missing.
fn opt_read(dir: &Path, name: &str) -> Result<Option<String>> {
    match fs::read(&dir.join(name)) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A single unsigned value; `max` (and v1's "unlimited" 2^63-4096 is kept as is) → u64::MAX
/// for `max`, as runc. Missing file → 0.
fn u64_file(dir: &Path, name: &str) -> Result<u64> {
    match opt_read(dir, name)? {
        None => Ok(0),
        Some(s) if s == "max" => Ok(u64::MAX),
        Some(s) => parse_u64(&s, &dir.join(name)),
    }
}

fn parse_u64(s: &str, file: &Path) -> Result<u64> {
    s.trim().parse().map_err(|_| Error::Msg(format!("read {}: unexpected value {s:?}", file.display())))
}

/// `key value` lines (memory.stat, cpu.stat, memory.events) → map; lines that do not
/// parse are skipped (new kernels add keys with other shapes).
pub(crate) fn flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

fn keyed_file(dir: &Path, name: &str) -> Result<BTreeMap<String, u64>> {
    Ok(opt_read(dir, name)?.map(|t| flat_keyed(&t)).unwrap_or_default())
}

/// A cpuset list `0-2,5` → `[0, 1, 2, 5]`; malformed parts are skipped.
pub(crate) fn parse_list(s: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    out.extend(a..=b.min(a.saturating_add(4096)));
                }
            }
            None => out.extend(part.parse::<u16>().ok()),
        }
    }
    out
}

/// v1 blkio lines `8:0 Read 4096`; `Total N` summary lines are skipped, as runc does.
pub(crate) fn parse_blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 3 {
                return None;
            }
            let (maj, min) = f[0].split_once(':')?;
            Some(BlkioEntry { major: maj.parse().ok()?, minor: min.parse().ok()?, op: f[1].to_string(), value: f[2].parse().ok()? })
        })
        .collect()
}

/// v2 `io.stat` lines `8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...` → (bytes, ios) entries with
/// runc's ops `Read`/`Write`.
pub(crate) fn parse_io_stat(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some((maj, min)) = f.next().and_then(|d| d.split_once(':')) else { continue };
        let (Ok(major), Ok(minor)) = (maj.parse(), min.parse()) else { continue };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let Ok(value) = v.parse() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry { major, minor, op: op.to_string(), value });
        }
    }
    (bytes, ios)
}

/// `cpuacct.usage_all`: `cpu user system` header then one line per cpu.
fn parse_usage_all(text: &str) -> (Vec<u64>, Vec<u64>) {
    let (mut k, mut u) = (Vec::new(), Vec::new());
    for l in text.lines().skip(1) {
        let f: Vec<u64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if f.len() == 3 {
            u.push(f[1]);
            k.push(f[2]);
        }
    }
    (k, u)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn v1_memory_entry(dir: &Path, prefix: &str) -> Result<MemoryEntry> {
    Ok(MemoryEntry {
        limit: u64_file(dir, &format!("{prefix}.limit_in_bytes"))?,
        usage: u64_file(dir, &format!("{prefix}.usage_in_bytes"))?,
        max: u64_file(dir, &format!("{prefix}.max_usage_in_bytes"))?,
        failcnt: u64_file(dir, &format!("{prefix}.failcnt"))?,
    })
}

/// Fills `stats` from v1 directories: `dir(controller)` gives each controller's directory.
pub(crate) fn v1(dir: &dyn Fn(&str) -> Option<std::path::PathBuf>, stats: &mut Stats) -> Result<()> {
    if let Some(d) = dir("cpu") {
        let s = keyed_file(&d, "cpu.stat")?;
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        stats.cpu.periods = g("nr_periods");
        stats.cpu.throttled_periods = g("nr_throttled");
        stats.cpu.throttled_time = g("throttled_time");
    }
    if let Some(d) = dir("cpuacct") {
        stats.cpu.total = u64_file(&d, "cpuacct.usage")?;
        if let Some(t) = opt_read(&d, "cpuacct.usage_percpu")? {
            stats.cpu.percpu = t.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        }
        if let Some(t) = opt_read(&d, "cpuacct.usage_all")? {
            (stats.cpu.percpu_kernel, stats.cpu.percpu_user) = parse_usage_all(&t);
        }
        let s = keyed_file(&d, "cpuacct.stat")?;
        let ns = 1_000_000_000 / clock_ticks();
        stats.cpu.user = s.get("user").copied().unwrap_or(0).saturating_mul(ns);
        stats.cpu.kernel = s.get("system").copied().unwrap_or(0).saturating_mul(ns);
    }
    if let Some(d) = dir("cpuset") {
        let c = &mut stats.cpuset;
        c.cpus = parse_list(&opt_read(&d, "cpuset.cpus")?.unwrap_or_default());
        c.mems = parse_list(&opt_read(&d, "cpuset.mems")?.unwrap_or_default());
        c.cpu_exclusive = u64_file(&d, "cpuset.cpu_exclusive")?;
        c.mem_hardwall = u64_file(&d, "cpuset.mem_hardwall")?;
        c.mem_exclusive = u64_file(&d, "cpuset.mem_exclusive")?;
        c.memory_migrate = u64_file(&d, "cpuset.memory_migrate")?;
        c.memory_spread_page = u64_file(&d, "cpuset.memory_spread_page")?;
        c.memory_spread_slab = u64_file(&d, "cpuset.memory_spread_slab")?;
        c.memory_pressure = u64_file(&d, "cpuset.memory_pressure")?;
        c.sched_load_balance = u64_file(&d, "cpuset.sched_load_balance")?;
        c.sched_relax_domain_level = opt_read(&d, "cpuset.sched_relax_domain_level")?.and_then(|s| s.parse().ok()).unwrap_or(0);
    }
    if let Some(d) = dir("memory") {
        let m = &mut stats.memory;
        m.raw = keyed_file(&d, "memory.stat")?;
        m.cache = m.raw.get("cache").copied().unwrap_or(0);
        m.usage = v1_memory_entry(&d, "memory")?;
        m.swap = v1_memory_entry(&d, "memory.memsw")?;
        m.kernel = v1_memory_entry(&d, "memory.kmem")?;
        m.kernel_tcp = v1_memory_entry(&d, "memory.kmem.tcp")?;
    }
    if let Some(d) = dir("pids") {
        pids(&d, stats)?;
    }
    if let Some(d) = dir("blkio") {
        // runc's order: the first family whose files exist wins.
        for (bytes, ios) in [
            ("blkio.bfq.io_service_bytes_recursive", "blkio.bfq.io_serviced_recursive"),
            ("blkio.io_service_bytes_recursive", "blkio.io_serviced_recursive"),
            ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive"),
        ] {
            if let Some(t) = opt_read(&d, bytes)? {
                stats.blkio.io_service_bytes_recursive = parse_blkio_v1(&t);
                stats.blkio.io_serviced_recursive = parse_blkio_v1(&opt_read(&d, ios)?.unwrap_or_default());
                break;
            }
        }
    }
    if let Some(d) = dir("hugetlb") {
        for size in crate::hugepage_sizes() {
            let p = format!("hugetlb.{size}");
            let h = HugetlbStats {
                usage: u64_file(&d, &format!("{p}.usage_in_bytes"))?,
                max: u64_file(&d, &format!("{p}.max_usage_in_bytes"))?,
                failcnt: u64_file(&d, &format!("{p}.failcnt"))?,
            };
            stats.hugetlb.insert(size, h);
        }
    }
    Ok(())
}

fn pids(d: &Path, stats: &mut Stats) -> Result<()> {
    stats.pids.current = u64_file(d, "pids.current")?;
    stats.pids.limit = match u64_file(d, "pids.max")? {
        u64::MAX => 0,
        v => v,
    };
    Ok(())
}

/// Hugetlb usage from a cgroup2 directory (`.current`, failcnt = `max` of `.events`).
pub(crate) fn v2_hugetlb(d: &Path, stats: &mut Stats) -> Result<()> {
    for size in crate::hugepage_sizes() {
        let p = format!("hugetlb.{size}");
        if !d.join(format!("{p}.current")).exists() {
            continue;
        }
        let h = HugetlbStats {
            usage: u64_file(d, &format!("{p}.current"))?,
            max: 0,
            failcnt: keyed_file(d, &format!("{p}.events"))?.get("max").copied().unwrap_or(0),
        };
        stats.hugetlb.insert(size, h);
    }
    Ok(())
}

/// Fills `stats` from a cgroup2 directory, with runc's (fs2) conversions.
pub(crate) fn v2(d: &Path, stats: &mut Stats) -> Result<()> {
    let s = keyed_file(d, "cpu.stat")?;
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    stats.cpu.total = g("usage_usec").saturating_mul(1000);
    stats.cpu.user = g("user_usec").saturating_mul(1000);
    stats.cpu.kernel = g("system_usec").saturating_mul(1000);
    stats.cpu.periods = g("nr_periods");
    stats.cpu.throttled_periods = g("nr_throttled");
    stats.cpu.throttled_time = g("throttled_usec").saturating_mul(1000);
    stats.cpuset.cpus = parse_list(&opt_read(d, "cpuset.cpus.effective")?.unwrap_or_default());
    stats.cpuset.mems = parse_list(&opt_read(d, "cpuset.mems.effective")?.unwrap_or_default());
    let m = &mut stats.memory;
    m.raw = keyed_file(d, "memory.stat")?;
    m.cache = m.raw.get("file").copied().unwrap_or(0);
    let events = keyed_file(d, "memory.events")?;
    m.usage = MemoryEntry {
        limit: u64_file(d, "memory.max")?,
        usage: u64_file(d, "memory.current")?,
        max: u64_file(d, "memory.peak")?,
        failcnt: events.get("max").copied().unwrap_or(0),
    };
    m.events = events;
    if d.join("memory.swap.current").exists() {
        let swap_limit = u64_file(d, "memory.swap.max")?;
        m.swap = MemoryEntry {
            limit: if swap_limit == u64::MAX || m.usage.limit == u64::MAX { u64::MAX } else { swap_limit.saturating_add(m.usage.limit) },
            usage: u64_file(d, "memory.swap.current")?.saturating_add(m.usage.usage),
            max: 0,
            failcnt: keyed_file(d, "memory.swap.events")?.get("max").copied().unwrap_or(0),
        };
    }
    pids(d, stats)?;
    if let Some(t) = opt_read(d, "io.stat")? {
        (stats.blkio.io_service_bytes_recursive, stats.blkio.io_serviced_recursive) = parse_io_stat(&t);
    }
    v2_hugetlb(d, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_keyed_files() {
        assert_eq!(parse_list("0-2,5\n"), vec![0, 1, 2, 5]);
        assert_eq!(parse_list(""), Vec::<u16>::new());
        assert_eq!(parse_list("x,3"), vec![3]);
        let m = flat_keyed("cache 10\nrss 20\nodd\nnested a b\n");
        assert_eq!(m.get("cache"), Some(&10));
        assert_eq!(m.get("rss"), Some(&20));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn blkio_parsers() {
        let v = parse_blkio_v1("8:0 Read 4096\n8:0 Write 0\nTotal 4096\n");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], BlkioEntry { major: 8, minor: 0, op: "Read".into(), value: 4096 });
        let (b, i) = parse_io_stat("254:0 rbytes=100 wbytes=200 rios=3 wios=4 dbytes=0 dios=0\n");
        assert_eq!(b.iter().map(|e| (e.op.as_str(), e.value)).collect::<Vec<_>>(), [("Read", 100), ("Write", 200)]);
        assert_eq!(i.iter().map(|e| (e.major, e.op.as_str(), e.value)).collect::<Vec<_>>(), [(254, "Read", 3), (254, "Write", 4)]);
    }

    #[test]
    fn usage_all() {
        let (k, u) = parse_usage_all("cpu user system\n0 10 20\n1 30 40\n");
        assert_eq!(k, vec![20, 40]);
        assert_eq!(u, vec![10, 30]);
    }
}

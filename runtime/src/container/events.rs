//! `events`: a container's resource usage and OOM kills as runc prints them, one JSON
//! object per line: `{"type":"stats","id":"c1","data":{...}}` and `{"type":"oom","id":"c1"}`.
//!
//! The `data` object has the fields, names and `omitempty` rules of runc 1.1's
//! `types.Stats` (cpu, cpuset, memory, pids, blkio, hugetlb, intel_rdt,
//! network_interfaces), so tools that parse runc's output parse ours.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Container, Status};
use crate::error::{Error, Result};

fn zero(v: &u64) -> bool {
    *v == 0
}

/// One event line.
#[derive(Debug, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub typ: &'static str,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Stats>,
}

#[derive(Debug, Serialize)]
pub struct Stats {
    cpu: Cpu,
    cpuset: CpuSet,
    memory: Memory,
    pids: Pids,
    blkio: Blkio,
    hugetlb: BTreeMap<String, Hugetlb>,
    intel_rdt: BTreeMap<String, u64>,
    network_interfaces: Option<Vec<()>>,
}

#[derive(Debug, Serialize)]
struct Hugetlb {
    #[serde(skip_serializing_if = "zero")]
    usage: u64,
    #[serde(skip_serializing_if = "zero")]
    max: u64,
    failcnt: u64,
}

#[derive(Debug, Serialize)]
struct BlkioEntry {
    #[serde(skip_serializing_if = "zero")]
    major: u64,
    #[serde(skip_serializing_if = "zero")]
    minor: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    op: String,
    #[serde(skip_serializing_if = "zero")]
    value: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Blkio {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Serialize)]
struct Pids {
    #[serde(skip_serializing_if = "zero")]
    current: u64,
    #[serde(skip_serializing_if = "zero")]
    limit: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Throttling {
    #[serde(skip_serializing_if = "zero")]
    periods: u64,
    #[serde(skip_serializing_if = "zero")]
    throttled_periods: u64,
    #[serde(skip_serializing_if = "zero")]
    throttled_time: u64,
}

#[derive(Debug, Serialize)]
struct CpuUsage {
    #[serde(skip_serializing_if = "zero")]
    total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    percpu: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    percpu_kernel: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    percpu_user: Vec<u64>,
    kernel: u64,
    user: u64,
}

#[derive(Debug, Serialize)]
struct Cpu {
    usage: CpuUsage,
    throttling: Throttling,
}

#[derive(Debug, Serialize)]
struct CpuSet {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cpus: Vec<u16>,
    cpu_exclusive: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mems: Vec<u16>,
    mem_hardwall: u64,
    mem_exclusive: u64,
    memory_migrate: u64,
    memory_spread_page: u64,
    memory_spread_slab: u64,
    memory_pressure: u64,
    sched_load_balance: u64,
    sched_relax_domain_level: i64,
}

#[derive(Debug, Serialize)]
struct MemoryEntry {
    limit: u64,
    #[serde(skip_serializing_if = "zero")]
    usage: u64,
    #[serde(skip_serializing_if = "zero")]
    max: u64,
    failcnt: u64,
}

#[derive(Debug, Serialize)]
struct Memory {
    #[serde(skip_serializing_if = "zero")]
    cache: u64,
    usage: MemoryEntry,
    swap: MemoryEntry,
    kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    kernel_tcp: MemoryEntry,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    raw: BTreeMap<String, u64>,
}

fn mem_entry(e: &capsa_cgroups::MemoryEntry) -> MemoryEntry {
    MemoryEntry { limit: e.limit, usage: e.usage, max: e.max, failcnt: e.failcnt }
}

fn blkio_entries(v: &[capsa_cgroups::BlkioEntry]) -> Vec<BlkioEntry> {
    v.iter().map(|e| BlkioEntry { major: e.major, minor: e.minor, op: e.op.clone(), value: e.value }).collect()
}

/// runc's `convertLibcontainerStats`.
pub fn convert(s: &capsa_cgroups::Stats) -> Stats {
    let c = &s.cpuset;
    Stats {
        cpu: Cpu {
            usage: CpuUsage {
                total: s.cpu.total,
                percpu: s.cpu.percpu.clone(),
                percpu_kernel: s.cpu.percpu_kernel.clone(),
                percpu_user: s.cpu.percpu_user.clone(),
                kernel: s.cpu.kernel,
                user: s.cpu.user,
            },
            throttling: Throttling {
                periods: s.cpu.periods,
                throttled_periods: s.cpu.throttled_periods,
                throttled_time: s.cpu.throttled_time,
            },
        },
        cpuset: CpuSet {
            cpus: c.cpus.clone(),
            cpu_exclusive: c.cpu_exclusive,
            mems: c.mems.clone(),
            mem_hardwall: c.mem_hardwall,
            mem_exclusive: c.mem_exclusive,
            memory_migrate: c.memory_migrate,
            memory_spread_page: c.memory_spread_page,
            memory_spread_slab: c.memory_spread_slab,
            memory_pressure: c.memory_pressure,
            sched_load_balance: c.sched_load_balance,
            sched_relax_domain_level: c.sched_relax_domain_level,
        },
        memory: Memory {
            cache: s.memory.cache,
            usage: mem_entry(&s.memory.usage),
            swap: mem_entry(&s.memory.swap),
            kernel: mem_entry(&s.memory.kernel),
            kernel_tcp: mem_entry(&s.memory.kernel_tcp),
            raw: s.memory.raw.clone(),
        },
        pids: Pids { current: s.pids.current, limit: s.pids.limit },
        blkio: Blkio {
            io_service_bytes_recursive: blkio_entries(&s.blkio.io_service_bytes_recursive),
            io_serviced_recursive: blkio_entries(&s.blkio.io_serviced_recursive),
        },
        hugetlb: s.hugetlb.iter().map(|(k, h)| (k.clone(), Hugetlb { usage: h.usage, max: h.max, failcnt: h.failcnt })).collect(),
        intel_rdt: BTreeMap::new(),
        network_interfaces: None,
    }
}

/// Loads the container (releasing its lock at once: `events` runs for long) and checks it
/// is not stopped, as runc: "container with id X is not running".
fn live_paths(root: &Path, id: &str) -> Result<Vec<PathBuf>> {
    let c = Container::load(root, id)?;
    if c.status() == Status::Stopped {
        return Err(Error::new(format!("container with id {id} is not running")));
    }
    Ok(c.state.cgroup_paths.clone())
}

/// One `{"type":"stats",...}` event (`events --stats`).
pub fn stats(root: &Path, id: &str) -> Result<Event> {
    let paths = live_paths(root, id)?;
    let s = crate::cgroup::stats_paths(&paths)?;
    Ok(Event { typ: "stats", id: id.to_string(), data: Some(convert(&s)) })
}

/// runc's event loop: a stats event every `interval` and an `oom` event for each OOM
/// kill, until the container's cgroup goes away (v1) or empties (v2). `emit` gets each
/// event; a stats read that fails is reported through `warn` and skipped, as runc logs it.
pub fn watch(root: &Path, id: &str, interval: Duration, emit: &mut dyn FnMut(&Event), warn: &mut dyn FnMut(&str)) -> Result<()> {
    if interval.is_zero() {
        return Err(Error::new("--interval: duration interval must be greater than 0"));
    }
    let paths = live_paths(root, id)?;
    let mut oom = crate::cgroup::oom_watcher(&paths)?;
    let too_long = || Error::new(format!("--interval {interval:?}: too long"));
    let mut next = Instant::now().checked_add(interval).ok_or_else(too_long)?;
    loop {
        let left = next.saturating_duration_since(Instant::now());
        match oom.wait(Some(left))? {
            capsa_cgroups::OomEvent::Oom(n) => {
                for _ in 0..n {
                    emit(&Event { typ: "oom", id: id.to_string(), data: None });
                }
            }
            capsa_cgroups::OomEvent::Gone => return Ok(()),
            capsa_cgroups::OomEvent::Timeout => {}
        }
        if Instant::now() >= next {
            next = next.checked_add(interval).ok_or_else(too_long)?;
            match crate::cgroup::stats_paths(&paths) {
                Ok(s) => emit(&Event { typ: "stats", id: id.to_string(), data: Some(convert(&s)) }),
                Err(e) => warn(&e.to_string()),
            }
        }
    }
}

/// Parses a Go duration as runc's `--interval` takes it: `5s`, `100ms`, `1m30s`, `1.5h`,
/// `250us`, `10ns`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || Error::new(format!("invalid duration {s:?}"));
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        if n == 0 {
            return Err(bad());
        }
        let v: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let secs = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += v * secs;
        rest = &rest[u..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("5s").ok(), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("100ms").ok(), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m30s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("0").ok(), Some(Duration::ZERO));
        for bad in ["", "5", "s", "5x", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stats_json_has_runc_shape_and_omits_zeros() {
        let mut s = capsa_cgroups::Stats::default();
        s.pids.current = 1;
        s.pids.limit = 50;
        s.memory.usage.usage = 4096;
        let e = Event { typ: "stats", id: "c1".into(), data: Some(convert(&s)) };
        let v = serde_json::to_value(&e).unwrap_or_default();
        assert_eq!(v["type"], "stats");
        assert_eq!(v["id"], "c1");
        assert_eq!(v["data"]["pids"], serde_json::json!({"current": 1, "limit": 50}));
        assert_eq!(v["data"]["memory"]["usage"], serde_json::json!({"limit": 0, "usage": 4096, "failcnt": 0}));
        assert_eq!(v["data"]["cpu"]["usage"], serde_json::json!({"kernel": 0, "user": 0}));
        assert_eq!(v["data"]["network_interfaces"], serde_json::Value::Null);
        assert!(v["data"]["blkio"].as_object().is_some_and(|o| o.is_empty()));
        let oom = serde_json::to_string(&Event { typ: "oom", id: "c1".into(), data: None }).unwrap_or_default();
        assert_eq!(oom, r#"{"type":"oom","id":"c1"}"#);
    }
}

//! A container's `capsa_cgroups::Stats` as containerd's Metrics messages: cgroup v1 Metrics on
//! Legacy and Hybrid hosts, v2 Metrics on pure v2 hosts, as containerd-shim-runc-v2 reports.
//! The cgroup reading itself is capsa-cgroups' (the shim has no cgroup code of its own); this
//! is only the mapping of fields.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use capsa_cgroups::{oom_kill_count, BlkioEntry, Mode, Stats};
use containerd_shim_protos::cgroups::metrics as v1m;
use containerd_shim_protos::cgroups_v2::metrics as v2m;
use protobuf::well_known_types::any::Any;
use protobuf::Message;

/// Stats packed as containerd wants them. `paths`: the container's cgroup directories
/// ([`capsa_cgroups::Manager::paths`]), for the v1 OOM counter.
pub fn to_any(mode: Mode, stats: &Stats, paths: &BTreeMap<String, PathBuf>) -> Result<Any, String> {
    let (url, data) = match mode {
        Mode::Unified => ("io.containerd.cgroups.v2.Metrics", v2(stats).write_to_bytes()),
        Mode::Legacy | Mode::Hybrid => ("io.containerd.cgroups.v1.Metrics", v1(stats, paths).write_to_bytes()),
    };
    let mut any = Any::new();
    any.type_url = url.to_string();
    any.value = data.map_err(|e| format!("encode metrics: {e}"))?;
    Ok(any)
}

fn v1_entry(e: &capsa_cgroups::MemoryEntry) -> v1m::MemoryEntry {
    v1m::MemoryEntry { limit: e.limit, usage: e.usage, max: e.max, failcnt: e.failcnt, ..Default::default() }
}

fn v1_blkio(list: &[BlkioEntry]) -> Vec<v1m::BlkIOEntry> {
    list.iter()
        .map(|e| v1m::BlkIOEntry { op: e.op.clone(), major: e.major, minor: e.minor, value: e.value, ..Default::default() })
        .collect()
}

pub fn v1(s: &Stats, paths: &BTreeMap<String, PathBuf>) -> v1m::Metrics {
    let mut m = v1m::Metrics::new();
    m.pids = Some(v1m::PidsStat { current: s.pids.current, limit: s.pids.limit, ..Default::default() }).into();
    let usage =
        v1m::CPUUsage { total: s.cpu.total, kernel: s.cpu.kernel, user: s.cpu.user, per_cpu: s.cpu.percpu.clone(), ..Default::default() };
    let throttling = v1m::Throttle {
        periods: s.cpu.periods,
        throttled_periods: s.cpu.throttled_periods,
        throttled_time: s.cpu.throttled_time,
        ..Default::default()
    };
    m.cpu = Some(v1m::CPUStat { usage: Some(usage).into(), throttling: Some(throttling).into(), ..Default::default() }).into();
    let r = &s.memory.raw;
    let g = |k: &str| r.get(k).copied().unwrap_or(0);
    let mem = v1m::MemoryStat {
        cache: g("cache"),
        rss: g("rss"),
        rss_huge: g("rss_huge"),
        mapped_file: g("mapped_file"),
        dirty: g("dirty"),
        writeback: g("writeback"),
        pg_pg_in: g("pgpgin"),
        pg_pg_out: g("pgpgout"),
        pg_fault: g("pgfault"),
        pg_maj_fault: g("pgmajfault"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        hierarchical_memory_limit: g("hierarchical_memory_limit"),
        hierarchical_swap_limit: g("hierarchical_memsw_limit"),
        total_cache: g("total_cache"),
        total_rss: g("total_rss"),
        total_rss_huge: g("total_rss_huge"),
        total_mapped_file: g("total_mapped_file"),
        total_dirty: g("total_dirty"),
        total_writeback: g("total_writeback"),
        total_pg_pg_in: g("total_pgpgin"),
        total_pg_pg_out: g("total_pgpgout"),
        total_pg_fault: g("total_pgfault"),
        total_pg_maj_fault: g("total_pgmajfault"),
        total_inactive_anon: g("total_inactive_anon"),
        total_active_anon: g("total_active_anon"),
        total_inactive_file: g("total_inactive_file"),
        total_active_file: g("total_active_file"),
        total_unevictable: g("total_unevictable"),
        usage: Some(v1_entry(&s.memory.usage)).into(),
        swap: Some(v1_entry(&s.memory.swap)).into(),
        kernel: Some(v1_entry(&s.memory.kernel)).into(),
        kernel_tcp: Some(v1_entry(&s.memory.kernel_tcp)).into(),
        ..Default::default()
    };
    m.memory = Some(mem).into();
    if let Some(dir) = paths.get("memory") {
        let oom_kill = oom_kill_count(dir).unwrap_or(0);
        m.memory_oom_control = Some(v1m::MemoryOomControl { oom_kill, ..Default::default() }).into();
    }
    m.blkio = Some(v1m::BlkIOStat {
        io_service_bytes_recursive: v1_blkio(&s.blkio.io_service_bytes_recursive),
        io_serviced_recursive: v1_blkio(&s.blkio.io_serviced_recursive),
        ..Default::default()
    })
    .into();
    m.hugetlb = s
        .hugetlb
        .iter()
        .map(|(size, h)| v1m::HugetlbStat { usage: h.usage, max: h.max, failcnt: h.failcnt, pagesize: size.clone(), ..Default::default() })
        .collect();
    m
}

pub fn v2(s: &Stats) -> v2m::Metrics {
    let mut m = v2m::Metrics::new();
    m.pids = Some(v2m::PidsStat { current: s.pids.current, limit: s.pids.limit, ..Default::default() }).into();
    // capsa-cgroups gives runc's nanoseconds; v2 Metrics carry cpu.stat's microseconds.
    m.cpu = Some(v2m::CPUStat {
        usage_usec: s.cpu.total / 1000,
        user_usec: s.cpu.user / 1000,
        system_usec: s.cpu.kernel / 1000,
        nr_periods: s.cpu.periods,
        nr_throttled: s.cpu.throttled_periods,
        throttled_usec: s.cpu.throttled_time / 1000,
        ..Default::default()
    })
    .into();
    let r = &s.memory.raw;
    let g = |k: &str| r.get(k).copied().unwrap_or(0);
    let usage = &s.memory.usage;
    // capsa-cgroups' swap entry is memory + swap (runc's convention); v2 Metrics want swap alone.
    let swap = &s.memory.swap;
    let swap_limit = if swap.limit == u64::MAX || usage.limit == u64::MAX { swap.limit } else { swap.limit.saturating_sub(usage.limit) };
    m.memory = Some(v2m::MemoryStat {
        anon: g("anon"),
        file: g("file"),
        kernel_stack: g("kernel_stack"),
        slab: g("slab"),
        sock: g("sock"),
        shmem: g("shmem"),
        file_mapped: g("file_mapped"),
        file_dirty: g("file_dirty"),
        file_writeback: g("file_writeback"),
        anon_thp: g("anon_thp"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        slab_reclaimable: g("slab_reclaimable"),
        slab_unreclaimable: g("slab_unreclaimable"),
        pgfault: g("pgfault"),
        pgmajfault: g("pgmajfault"),
        workingset_refault: g("workingset_refault"),
        workingset_activate: g("workingset_activate"),
        workingset_nodereclaim: g("workingset_nodereclaim"),
        pgrefill: g("pgrefill"),
        pgscan: g("pgscan"),
        pgsteal: g("pgsteal"),
        pgactivate: g("pgactivate"),
        pgdeactivate: g("pgdeactivate"),
        pglazyfree: g("pglazyfree"),
        pglazyfreed: g("pglazyfreed"),
        thp_fault_alloc: g("thp_fault_alloc"),
        thp_collapse_alloc: g("thp_collapse_alloc"),
        usage: usage.usage,
        usage_limit: usage.limit,
        max_usage: usage.max,
        swap_usage: swap.usage.saturating_sub(usage.usage),
        swap_limit,
        ..Default::default()
    })
    .into();
    let ev = &s.memory.events;
    let e = |k: &str| ev.get(k).copied().unwrap_or(0);
    m.memory_events = Some(v2m::MemoryEvents {
        low: e("low"),
        high: e("high"),
        max: e("max"),
        oom: e("oom"),
        oom_kill: e("oom_kill"),
        oom_group_kill: e("oom_group_kill"),
        ..Default::default()
    })
    .into();
    // io.stat: one IOEntry per device from the bytes and ios lists.
    let mut io: HashMap<(u64, u64), v2m::IOEntry> = HashMap::new();
    for (list, bytes) in [(&s.blkio.io_service_bytes_recursive, true), (&s.blkio.io_serviced_recursive, false)] {
        for b in list {
            let ent = io.entry((b.major, b.minor)).or_insert_with(|| v2m::IOEntry { major: b.major, minor: b.minor, ..Default::default() });
            match (b.op.as_str(), bytes) {
                ("Read", true) => ent.rbytes = b.value,
                ("Write", true) => ent.wbytes = b.value,
                ("Read", false) => ent.rios = b.value,
                ("Write", false) => ent.wios = b.value,
                _ => {}
            }
        }
    }
    let mut usage: Vec<v2m::IOEntry> = io.into_values().collect();
    usage.sort_by_key(|e| (e.major, e.minor));
    m.io = Some(v2m::IOStat { usage, ..Default::default() }).into();
    m.hugetlb = s
        .hugetlb
        .iter()
        .map(|(size, h)| v2m::HugeTlbStat { current: h.usage, max: h.max, pagesize: size.clone(), ..Default::default() })
        .collect();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_pids_are_zero_and_units_convert() {
        let mut s = Stats::default();
        s.pids.current = 3; // capsa-cgroups already maps "max" to 0, as containerd expects
        s.cpu.total = 5_000_000;
        s.memory.usage = capsa_cgroups::MemoryEntry { limit: 1 << 30, usage: 1 << 20, max: 2 << 20, failcnt: 0 };
        s.memory.swap = capsa_cgroups::MemoryEntry { limit: (1 << 30) + 4096, usage: (1 << 20) + 10, max: 0, failcnt: 0 };
        s.memory.events.insert("oom_kill".into(), 2);
        let m = v2(&s);
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
        assert_eq!(m.cpu.usage_usec, 5000);
        assert_eq!((m.memory.swap_usage, m.memory.swap_limit), (10, 4096));
        assert_eq!(m.memory_events.oom_kill, 2);
        let m = v1(&s, &BTreeMap::new());
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
        assert_eq!(m.memory.usage.limit, 1 << 30);
    }
}

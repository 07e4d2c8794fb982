//! [`Resources`]: the limits capsa applies, as a plain struct the runtime fills from
//! `linux.resources` of the OCI spec, and the pure conversions from OCI (= cgroup v1)
//! semantics to the values written to cgroupfs.
//!
//! Conventions, as in runc: `None` leaves the current value alone. For memory limit,
//! reservation and swap, CPU shares, quota and period, `Some(0)` also means "unset" (runc
//! stores these as plain integers where 0 means not given). `-1` means unlimited.

use std::collections::BTreeMap;

/// Resource limits for one container. Grows with the OCI `linux.resources` surface; build it
/// with `Resources { memory: ..., ..Default::default() }` so new fields do not break callers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// `linux.resources.memory`.
    pub memory: Memory,
    /// `linux.resources.pids`.
    pub pids: Pids,
    /// `linux.resources.cpu`.
    pub cpu: Cpu,
    /// `linux.resources.blockIO`.
    pub block_io: BlockIo,
    /// `linux.resources.hugepageLimits`, in order.
    pub hugepage_limits: Vec<HugepageLimit>,
    /// `linux.resources.network` (cgroup v1 `net_cls`/`net_prio` only).
    pub network: Network,
    /// `linux.resources.rdma`: device name → limits.
    pub rdma: BTreeMap<String, Rdma>,
    /// `linux.resources.unified`: cgroup2 file name → value, written as is.
    pub unified: BTreeMap<String, String>,
    /// `linux.resources.devices`, in order, followed by the runtime's default allowed devices.
    pub devices: Vec<DeviceRule>,
}

/// One device cgroup rule. `None` major/minor is the wildcard `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    /// `a` (all), `c` (char) or `b` (block).
    pub kind: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// Any of `r`, `w`, `m`.
    pub access: String,
}

impl DeviceRule {
    /// The v1 `devices.allow`/`devices.deny` line: `c 1:3 rwm`, `a *:* rwm`.
    pub fn v1_line(&self) -> String {
        let n = |v: Option<i64>| v.filter(|v| *v >= 0).map_or("*".to_string(), |v| v.to_string());
        format!("{} {}:{} {}", self.kind, n(self.major), n(self.minor), self.access)
    }

    /// Checks type and access letters, so a bad rule is refused before anything is written
    /// (the v1 kernel would refuse it mid-list; the v2 eBPF generator needs it clean).
    pub(crate) fn check(&self) -> Result<(), String> {
        if !matches!(self.kind, 'a' | 'b' | 'c') {
            return Err(format!("type {:?} is not one of a, b, c", self.kind));
        }
        if self.access.is_empty() || !self.access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(format!("access {:?} must be made of r, w, m", self.access));
        }
        Ok(())
    }
}

/// `linux.resources.memory`. Byte values; `-1` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// `limit`: hard limit (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    pub limit: Option<i64>,
    /// `reservation`: soft limit (v1 `memory.soft_limit_in_bytes`, v2 `memory.low`).
    pub reservation: Option<i64>,
    /// `swap`: memory **plus** swap limit, v1 semantics (v1 `memory.memsw.limit_in_bytes`;
    /// v2 `memory.swap.max` = swap - limit).
    pub swap: Option<i64>,
    /// `kernel`: v1 `memory.kmem.limit_in_bytes`, written where the file exists (recent
    /// kernels accept and ignore it; runc 1.2 ignores the field). No v2 equivalent: ignored
    /// there, as runc does.
    pub kernel: Option<i64>,
    /// `kernelTCP`: v1 `memory.kmem.tcp.limit_in_bytes`. No v2 equivalent: ignored there, as
    /// runc does.
    pub kernel_tcp: Option<i64>,
    /// `swappiness` 0-100 (v1 only; ignored on v2, which has no such knob).
    pub swappiness: Option<u64>,
    /// `disableOOMKiller` (v1 `memory.oom_control`; only `true` is written, as runc does;
    /// ignored on v2, which has no such knob).
    pub disable_oom_killer: Option<bool>,
    /// `useHierarchy`: v1 `memory.use_hierarchy` (written only when it differs; recent
    /// kernels are always hierarchical and refuse `0`). v2 is always hierarchical.
    pub use_hierarchy: Option<bool>,
    /// `checkBeforeUpdate`: refuse a new `limit` below the current usage instead of letting
    /// the kernel reclaim (v1) or OOM-kill (v2) to get there.
    pub check_before_update: Option<bool>,
}

/// `linux.resources.pids`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pids {
    /// `limit`: maximum number of tasks; `< 0` means unlimited (`max`), 0 leaves it alone.
    pub limit: Option<i64>,
}

/// `linux.resources.cpu`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cpu {
    /// `shares`: relative weight, v1 `cpu.shares` (2-262144); v2 `cpu.weight` via
    /// [`shares_to_weight`].
    pub shares: Option<u64>,
    /// `quota`: CFS quota in µs per period; `-1` unlimited.
    pub quota: Option<i64>,
    /// `burst`: CFS burst in µs (v1 `cpu.cfs_burst_us`, v2 `cpu.max.burst`).
    pub burst: Option<u64>,
    /// `period`: CFS period in µs.
    pub period: Option<u64>,
    /// `realtimeRuntime`: v1 `cpu.rt_runtime_us` (µs per `realtimePeriod`); v2 has no RT
    /// group scheduling: refused there.
    pub realtime_runtime: Option<i64>,
    /// `realtimePeriod`: v1 `cpu.rt_period_us`.
    pub realtime_period: Option<u64>,
    /// `cpus`: cpuset list such as `0-3,6`; empty means unset.
    pub cpus: Option<String>,
    /// `mems`: memory node list such as `0`; empty means unset.
    pub mems: Option<String>,
    /// `idle`: 1 makes the cgroup SCHED_IDLE (`cpu.idle`, v1 and v2).
    pub idle: Option<i64>,
}

/// `linux.resources.blockIO`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockIo {
    /// `weight` 10-1000: v1 `blkio.weight` (or `blkio.bfq.weight`); v2 `io.bfq.weight`, else
    /// `io.weight` via [`blkio_weight_to_io_weight`].
    pub weight: Option<u16>,
    /// `leafWeight` 10-1000: v1 `blkio.leaf_weight` (CFQ only; refused where missing).
    pub leaf_weight: Option<u16>,
    /// `weightDevice`.
    pub weight_device: Vec<WeightDevice>,
    /// `throttleReadBpsDevice` (bytes/s).
    pub throttle_read_bps: Vec<ThrottleDevice>,
    /// `throttleWriteBpsDevice` (bytes/s).
    pub throttle_write_bps: Vec<ThrottleDevice>,
    /// `throttleReadIOPSDevice`.
    pub throttle_read_iops: Vec<ThrottleDevice>,
    /// `throttleWriteIOPSDevice`.
    pub throttle_write_iops: Vec<ThrottleDevice>,
}

impl BlockIo {
    pub(crate) fn is_set(&self) -> bool {
        nonzero(self.weight).is_some()
            || nonzero(self.leaf_weight).is_some()
            || !self.weight_device.is_empty()
            || !self.throttle_read_bps.is_empty()
            || !self.throttle_write_bps.is_empty()
            || !self.throttle_read_iops.is_empty()
            || !self.throttle_write_iops.is_empty()
    }

    /// The four throttle lists with their OCI field, v1 file and v2 `io.max` key.
    pub(crate) fn throttles(&self) -> [(&'static str, &'static str, &'static str, &[ThrottleDevice]); 4] {
        [
            (field::BLKIO_READ_BPS, "blkio.throttle.read_bps_device", "rbps", &self.throttle_read_bps),
            (field::BLKIO_WRITE_BPS, "blkio.throttle.write_bps_device", "wbps", &self.throttle_write_bps),
            (field::BLKIO_READ_IOPS, "blkio.throttle.read_iops_device", "riops", &self.throttle_read_iops),
            (field::BLKIO_WRITE_IOPS, "blkio.throttle.write_iops_device", "wiops", &self.throttle_write_iops),
        ]
    }
}

/// One `blockIO.weightDevice` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightDevice {
    pub major: i64,
    pub minor: i64,
    pub weight: Option<u16>,
    pub leaf_weight: Option<u16>,
}

/// One `blockIO.throttle*Device` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThrottleDevice {
    pub major: i64,
    pub minor: i64,
    pub rate: u64,
}

impl ThrottleDevice {
    /// The v1 throttle line `8:0 1048576` (0 removes the limit).
    pub(crate) fn v1_line(&self) -> String {
        format!("{}:{} {}", self.major, self.minor, self.rate)
    }

    /// The v2 `io.max` line `8:0 rbps=1048576` (runc's `StringName`); rate 0 is `max`, the
    /// v1 meaning of 0 (no limit).
    pub(crate) fn v2_line(&self, key: &str) -> String {
        if self.rate == 0 {
            format!("{}:{} {key}=max", self.major, self.minor)
        } else {
            format!("{}:{} {key}={}", self.major, self.minor, self.rate)
        }
    }
}

/// One `hugepageLimits` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HugepageLimit {
    /// `pageSize` as in the kernel's file names: `2MB`, `1GB`, `64KB`.
    pub page_size: String,
    /// Bytes; a negative value is unlimited.
    pub limit: i64,
}

/// `linux.resources.network`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    /// `classID`: v1 `net_cls.classid`.
    pub class_id: Option<u32>,
    /// `priorities`: v1 `net_prio.ifpriomap` lines `<interface> <priority>`.
    pub priorities: Vec<(String, u32)>,
}

/// One `linux.resources.rdma` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rdma {
    pub hca_handles: Option<u32>,
    pub hca_objects: Option<u32>,
}

/// The `rdma.max` line for `device`: `mlx4_0 hca_handle=2 hca_object=2000`; `None` when
/// neither limit is given.
pub(crate) fn rdma_line(device: &str, r: &Rdma) -> Option<String> {
    if r.hca_handles.is_none() && r.hca_objects.is_none() {
        return None;
    }
    let mut s = device.to_string();
    if let Some(h) = r.hca_handles {
        s.push_str(&format!(" hca_handle={h}"));
    }
    if let Some(o) = r.hca_objects {
        s.push_str(&format!(" hca_object={o}"));
    }
    Some(s)
}

/// runc's `ConvertBlkIOToIOWeightValue`: v1 blkio weight (10-1000) to v2 `io.weight`
/// (1-10000): `1 + (weight - 10) * 9999 / 990`; 0 stays 0 (unset).
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// Hugepage sizes the kernel offers, as `2MB`/`1GB` names (runc's `HugePageSizes`), from
/// the directory names `hugepages-2048kB` under /sys/kernel/mm/hugepages.
pub fn hugepage_sizes() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd.flatten().filter_map(|e| e.file_name().to_str().and_then(hugepage_dir_to_size)).collect();
    v.sort();
    v
}

/// `hugepages-2048kB` → `2MB`, `hugepages-1048576kB` → `1GB`, `hugepages-64kB` → `64KB`.
pub(crate) fn hugepage_dir_to_size(name: &str) -> Option<String> {
    let kb: u64 = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
    let mut v = kb;
    let mut unit = 0;
    let units = ["KB", "MB", "GB", "TB", "PB"];
    while v >= 1024 && v & 1023 == 0 && unit + 1 < units.len() {
        v /= 1024;
        unit += 1;
    }
    Some(format!("{v}{}", units[unit]))
}

/// A `unified` key must name a file of the cgroup directory itself: `controller.file`,
/// no `/`, not `.`/`..` (runc refuses the same).
pub(crate) fn check_unified_key(key: &str) -> Result<(), String> {
    if key.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if key.is_empty() || key.contains('/') || key.starts_with('.') || !key.contains('.') {
        return Err("must be a cgroup2 file name such as \"memory.high\"".into());
    }
    Ok(())
}

/// Field names used in error messages.
pub(crate) mod field {
    pub const MEMORY_LIMIT: &str = "linux.resources.memory.limit";
    pub const MEMORY_RESERVATION: &str = "linux.resources.memory.reservation";
    pub const MEMORY_SWAP: &str = "linux.resources.memory.swap";
    pub const MEMORY_KERNEL: &str = "linux.resources.memory.kernel";
    pub const MEMORY_KERNEL_TCP: &str = "linux.resources.memory.kernelTCP";
    pub const MEMORY_SWAPPINESS: &str = "linux.resources.memory.swappiness";
    pub const MEMORY_DISABLE_OOM: &str = "linux.resources.memory.disableOOMKiller";
    pub const MEMORY_USE_HIERARCHY: &str = "linux.resources.memory.useHierarchy";
    pub const PIDS_LIMIT: &str = "linux.resources.pids.limit";
    pub const CPU_SHARES: &str = "linux.resources.cpu.shares";
    pub const CPU_QUOTA: &str = "linux.resources.cpu.quota";
    pub const CPU_BURST: &str = "linux.resources.cpu.burst";
    pub const CPU_PERIOD: &str = "linux.resources.cpu.period";
    pub const CPU_RT_RUNTIME: &str = "linux.resources.cpu.realtimeRuntime";
    pub const CPU_RT_PERIOD: &str = "linux.resources.cpu.realtimePeriod";
    pub const CPU_CPUS: &str = "linux.resources.cpu.cpus";
    pub const CPU_MEMS: &str = "linux.resources.cpu.mems";
    pub const CPU_IDLE: &str = "linux.resources.cpu.idle";
    pub const BLKIO_WEIGHT: &str = "linux.resources.blockIO.weight";
    pub const BLKIO_LEAF_WEIGHT: &str = "linux.resources.blockIO.leafWeight";
    pub const BLKIO_WEIGHT_DEVICE: &str = "linux.resources.blockIO.weightDevice";
    pub const BLKIO_READ_BPS: &str = "linux.resources.blockIO.throttleReadBpsDevice";
    pub const BLKIO_WRITE_BPS: &str = "linux.resources.blockIO.throttleWriteBpsDevice";
    pub const BLKIO_READ_IOPS: &str = "linux.resources.blockIO.throttleReadIOPSDevice";
    pub const BLKIO_WRITE_IOPS: &str = "linux.resources.blockIO.throttleWriteIOPSDevice";
    pub const HUGEPAGE_LIMITS: &str = "linux.resources.hugepageLimits";
    pub const NETWORK_CLASS_ID: &str = "linux.resources.network.classID";
    pub const NETWORK_PRIORITIES: &str = "linux.resources.network.priorities";
    pub const RDMA: &str = "linux.resources.rdma";
    pub const UNIFIED: &str = "linux.resources.unified";
    pub const DEVICES: &str = "linux.resources.devices";
}

impl Resources {
    /// Checks everything that can be checked without the kernel, so a bad value is refused
    /// before the first write (an `update` then changes nothing).
    pub fn validate(&self) -> crate::Result<()> {
        use crate::Error;
        let bad = |f: &'static str, v: String, why: String| Err(Error::Msg(why).field(f, v));
        if let Some(v) = self.memory.swappiness {
            if v > 100 {
                return bad(field::MEMORY_SWAPPINESS, v.to_string(), "valid range is 0-100".into());
            }
        }
        let weights = [(field::BLKIO_WEIGHT, self.block_io.weight), (field::BLKIO_LEAF_WEIGHT, self.block_io.leaf_weight)];
        for (f, v) in weights {
            if let Some(w) = nonzero(v) {
                if !(10..=1000).contains(&w) {
                    return bad(f, w.to_string(), "valid range is 10-1000".into());
                }
            }
        }
        for (i, wd) in self.block_io.weight_device.iter().enumerate() {
            for w in [wd.weight, wd.leaf_weight].into_iter().flatten() {
                if w != 0 && !(10..=1000).contains(&w) {
                    let v = format!("[{i}] {}:{} {w}", wd.major, wd.minor);
                    return bad(field::BLKIO_WEIGHT_DEVICE, v, "valid range is 10-1000".into());
                }
            }
        }
        if !self.hugepage_limits.is_empty() {
            let sizes = hugepage_sizes();
            for (i, h) in self.hugepage_limits.iter().enumerate() {
                if !sizes.contains(&h.page_size) {
                    return bad(
                        field::HUGEPAGE_LIMITS,
                        format!("[{i}] pageSize {:?}", h.page_size),
                        format!("not a hugepage size of this kernel (it has {sizes:?})"),
                    );
                }
            }
        }
        for (k, v) in &self.unified {
            if let Err(why) = check_unified_key(k) {
                return bad(field::UNIFIED, format!("{{{k:?}: {v:?}}}"), format!("key {why}"));
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            if let Err(why) = d.check() {
                return bad(field::DEVICES, format!("[{i}] {:?}", d.v1_line()), why);
            }
        }
        Ok(())
    }
}

/// `Some(v)` unless `v` is 0, the "unset" value of runc's integer fields.
pub(crate) fn nonzero<T: Copy + Default + PartialEq>(v: Option<T>) -> Option<T> {
    v.filter(|v| *v != T::default())
}

/// `Some(s)` unless empty.
pub(crate) fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// `pids.max` value: a positive limit as is, anything else `max`.
pub(crate) fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}

/// runc's conversion of v1 `cpu.shares` (2-262144, default 1024) to v2 `cpu.weight`
/// (1-10000, default 100): `1 + ((shares - 2) * 9999) / 262142`, with shares clamped to the
/// v1 range first so out-of-range input cannot overflow. 0 stays 0 (unset).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// v2 value for a byte limit: 0 is unset (`None`), -1 is `max`.
pub(crate) fn v2_bytes(v: i64) -> Option<String> {
    match v {
        0 => None,
        -1 => Some("max".into()),
        v => Some(v.to_string()),
    }
}

/// runc's `ConvertMemorySwapToCgroupV2Value`: OCI `swap` is memory+swap (v1 semantics);
/// v2 `memory.swap.max` is swap alone. Returns the v2 value in the same convention (0 unset,
/// -1 max).
pub(crate) fn v2_swap(swap: i64, limit: i64) -> Result<i64, String> {
    // Unlimited memory with swap not given: both unlimited, as on v1.
    if limit == -1 && swap == 0 {
        return Ok(-1);
    }
    if swap == -1 || swap == 0 {
        return Ok(swap);
    }
    if limit == 0 || limit == -1 {
        return Err("a swap limit needs a memory limit (linux.resources.memory.limit)".into());
    }
    if limit < 0 {
        return Err(format!("invalid memory limit {limit}"));
    }
    if swap < limit {
        return Err(format!("memory+swap must be >= linux.resources.memory.limit ({limit})"));
    }
    Ok(swap - limit)
}

/// v2 `memory.swap.max` string for OCI `swap`/`limit`, or `None` to leave it alone.
/// `swap == limit` (no swap allowed) yields "0", as runc does.
pub(crate) fn v2_swap_max(swap: i64, limit: i64) -> Result<Option<String>, String> {
    let v = v2_swap(swap, limit)?;
    Ok(match v2_bytes(v) {
        None if swap > 0 => Some("0".into()),
        s => s,
    })
}

/// v2 `cpu.max` for OCI quota/period (0 = unset), or `None` if neither is set:
/// `"<quota> <period>"`, `"max <period>"` for an unlimited (≤ 0) quota, and without the
/// period when only the quota is given (the kernel keeps its period).
pub(crate) fn cpu_max(quota: i64, period: u64) -> Option<String> {
    if quota == 0 && period == 0 {
        return None;
    }
    let mut s = if quota > 0 { quota.to_string() } else { "max".to_string() };
    if period != 0 {
        s.push(' ');
        s.push_str(&period.to_string());
    }
    Some(s)
}

/// One write to a v1 memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemWrite {
    pub field: &'static str,
    pub file: &'static str,
    pub value: i64,
}

/// The v1 writes for limit and memory+swap, in an order the kernel accepts. The kernel
/// requires `memsw.limit >= limit` at every step, so (as runc does) when the new swap value
/// is unlimited or above the current limit, memsw is raised first; otherwise the limit is
/// lowered first. Unlimited memory with swap not given also makes swap unlimited.
/// `cur_limit` is the current `memory.limit_in_bytes`; `memsw` whether swap accounting exists
/// (without it swap is silently not limited).
pub(crate) fn v1_memory_writes(limit: i64, swap: i64, cur_limit: i128, memsw: bool) -> Vec<MemWrite> {
    use field::{MEMORY_LIMIT, MEMORY_SWAP};
    let swap = if limit == -1 && swap == 0 && memsw { -1 } else { swap };
    let l = (limit != 0).then_some(MemWrite { field: MEMORY_LIMIT, file: "memory.limit_in_bytes", value: limit });
    let s = (swap != 0 && memsw).then_some(MemWrite { field: MEMORY_SWAP, file: "memory.memsw.limit_in_bytes", value: swap });
    let swap_first = limit != 0 && swap != 0 && (swap == -1 || cur_limit < swap as i128);
    let order = if swap_first { [s, l] } else { [l, s] };
    order.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rule_lines() {
        let r = DeviceRule { allow: false, kind: 'a', major: None, minor: None, access: "rwm".into() };
        assert_eq!(r.v1_line(), "a *:* rwm");
        let r = DeviceRule { allow: true, kind: 'c', major: Some(136), minor: Some(-1), access: "rwm".into() };
        assert_eq!(r.v1_line(), "c 136:* rwm");
    }

    #[test]
    fn blkio_and_other_conversions_match_runc() {
        assert_eq!(blkio_weight_to_io_weight(0), 0);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(5), 1, "clamped");
        let t = ThrottleDevice { major: 8, minor: 0, rate: 1_048_576 };
        assert_eq!(t.v1_line(), "8:0 1048576");
        assert_eq!(t.v2_line("rbps"), "8:0 rbps=1048576");
        assert_eq!(ThrottleDevice { major: 8, minor: 16, rate: 0 }.v2_line("wiops"), "8:16 wiops=max");
        assert_eq!(hugepage_dir_to_size("hugepages-2048kB").as_deref(), Some("2MB"));
        assert_eq!(hugepage_dir_to_size("hugepages-1048576kB").as_deref(), Some("1GB"));
        assert_eq!(hugepage_dir_to_size("hugepages-64kB").as_deref(), Some("64KB"));
        assert_eq!(hugepage_dir_to_size("hugepages-x"), None);
        let r = Rdma { hca_handles: Some(2), hca_objects: Some(2000) };
        assert_eq!(rdma_line("mlx4_0", &r).as_deref(), Some("mlx4_0 hca_handle=2 hca_object=2000"));
        assert_eq!(rdma_line("mlx4_0", &Rdma::default()), None);
        for ok in ["memory.high", "cgroup.freeze", "hugetlb.2MB.max"] {
            assert!(check_unified_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "memory", "../memory.high", "a/b.c", ".hidden", "x\0.y"] {
            assert!(check_unified_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validate_refuses_before_writing_and_names_the_field() {
        let msg = |r: Resources| r.validate().err().map(|e| e.to_string()).unwrap_or_default();
        let mut r = Resources::default();
        r.memory.swappiness = Some(101);
        assert_eq!(msg(r), "linux.resources.memory.swappiness = 101: valid range is 0-100");
        let mut r = Resources::default();
        r.block_io.weight = Some(5);
        assert_eq!(msg(r), "linux.resources.blockIO.weight = 5: valid range is 10-1000");
        let mut r = Resources::default();
        r.unified.insert("../x".into(), "1".into());
        assert!(msg(r).starts_with("linux.resources.unified = {\"../x\": \"1\"}: key must be"));
        let mut r = Resources::default();
        r.devices.push(DeviceRule { allow: true, kind: 'x', major: None, minor: None, access: "r".into() });
        assert_eq!(msg(r), "linux.resources.devices = [0] \"x *:* r\": type 'x' is not one of a, b, c");
        assert!(Resources::default().validate().is_ok());
    }

    #[test]
    fn shares_to_weight_matches_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1, "clamped, no underflow");
        assert_eq!(shares_to_weight(u64::MAX), 10_000, "clamped, no overflow");
    }

    #[test]
    fn swap_conversion_matches_runc() {
        assert_eq!(v2_swap(0, -1), Ok(-1));
        assert_eq!(v2_swap(0, 100), Ok(0));
        assert_eq!(v2_swap(-1, 100), Ok(-1));
        assert_eq!(v2_swap(300, 100), Ok(200));
        assert_eq!(v2_swap(100, 100), Ok(0));
        assert!(v2_swap(50, 100).is_err());
        assert!(v2_swap(100, 0).is_err());
        assert!(v2_swap(100, -1).is_err());
        assert!(v2_swap(100, -5).is_err());
    }

    #[test]
    fn swap_max_strings() {
        assert_eq!(v2_swap_max(0, 0), Ok(None));
        assert_eq!(v2_swap_max(0, 100), Ok(None));
        assert_eq!(v2_swap_max(0, -1), Ok(Some("max".into())));
        assert_eq!(v2_swap_max(-1, 100), Ok(Some("max".into())));
        assert_eq!(v2_swap_max(100, 100), Ok(Some("0".into())), "swap == limit disables swap");
        assert_eq!(v2_swap_max(300, 100), Ok(Some("200".into())));
    }

    #[test]
    fn value_formatting() {
        assert_eq!(pids_max(10), "10");
        assert_eq!(pids_max(0), "max");
        assert_eq!(pids_max(-1), "max");
        assert_eq!(v2_bytes(0), None);
        assert_eq!(v2_bytes(-1).as_deref(), Some("max"));
        assert_eq!(v2_bytes(67_108_864).as_deref(), Some("67108864"));
        assert_eq!(cpu_max(0, 0), None);
        assert_eq!(cpu_max(50_000, 100_000).as_deref(), Some("50000 100000"));
        assert_eq!(cpu_max(-1, 100_000).as_deref(), Some("max 100000"));
        assert_eq!(cpu_max(20_000, 0).as_deref(), Some("20000"));
        assert_eq!(cpu_max(0, 250_000).as_deref(), Some("max 250000"));
        assert_eq!(nonzero(Some(0i64)), None);
        assert_eq!(nonzero(Some(5u64)), Some(5));
        assert_eq!(nonempty(&Some(String::new())), None);
        assert_eq!(nonempty(&Some("0-1".into())), Some("0-1"));
    }

    fn files(w: &[MemWrite]) -> Vec<(&str, i64)> {
        w.iter().map(|w| (w.file, w.value)).collect()
    }

    #[test]
    fn v1_memory_write_order() {
        const UNLIMITED: i128 = 9_223_372_036_854_771_712;
        // Raising both: memsw first.
        assert_eq!(files(&v1_memory_writes(300, 400, 100, true)), [("memory.memsw.limit_in_bytes", 400), ("memory.limit_in_bytes", 300)]);
        // Lowering both from unlimited: limit first.
        assert_eq!(
            files(&v1_memory_writes(64 << 20, 128 << 20, UNLIMITED, true)),
            [("memory.limit_in_bytes", 64 << 20), ("memory.memsw.limit_in_bytes", 128 << 20)]
        );
        // Unlimited swap: memsw first.
        assert_eq!(files(&v1_memory_writes(100, -1, 200, true)), [("memory.memsw.limit_in_bytes", -1), ("memory.limit_in_bytes", 100)]);
        // Unlimited memory, swap not given: swap follows, written first.
        assert_eq!(files(&v1_memory_writes(-1, 0, 100, true)), [("memory.memsw.limit_in_bytes", -1), ("memory.limit_in_bytes", -1)]);
        // Only one of them.
        assert_eq!(files(&v1_memory_writes(100, 0, UNLIMITED, true)), [("memory.limit_in_bytes", 100)]);
        assert_eq!(files(&v1_memory_writes(0, 500, 100, true)), [("memory.memsw.limit_in_bytes", 500)]);
        // No swap accounting: swap is skipped.
        assert_eq!(files(&v1_memory_writes(100, 200, 50, false)), [("memory.limit_in_bytes", 100)]);
        assert_eq!(files(&v1_memory_writes(-1, 0, 50, false)), [("memory.limit_in_bytes", -1)]);
        assert!(v1_memory_writes(0, 0, 0, true).is_empty());
    }
}

//! [`Resources`]: the limits capsa applies, as a plain struct the runtime fills from
//! `linux.resources` of the OCI spec, and the pure conversions from OCI (= cgroup v1)
//! semantics to the values written to cgroupfs.
//!
//! Conventions, as in runc: `None` leaves the current value alone. For memory limit,
//! reservation and swap, CPU shares, quota and period, `Some(0)` also means "unset" (runc
//! stores these as plain integers where 0 means not given). `-1` means unlimited.

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
    /// `swappiness` 0-100 (v1 only; ignored on v2, which has no such knob).
    pub swappiness: Option<u64>,
    /// `disableOOMKiller` (v1 `memory.oom_control`; only `true` is written, as runc does;
    /// ignored on v2, which has no such knob).
    pub disable_oom_killer: Option<bool>,
}

/// `linux.resources.pids`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pids {
    /// `limit`: maximum number of tasks; `<= 0` means unlimited (`max`).
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
    /// `period`: CFS period in µs.
    pub period: Option<u64>,
    /// `cpus`: cpuset list such as `0-3,6`; empty means unset.
    pub cpus: Option<String>,
    /// `mems`: memory node list such as `0`; empty means unset.
    pub mems: Option<String>,
}

/// Field names used in error messages.
pub(crate) mod field {
    pub const MEMORY_LIMIT: &str = "linux.resources.memory.limit";
    pub const MEMORY_RESERVATION: &str = "linux.resources.memory.reservation";
    pub const MEMORY_SWAP: &str = "linux.resources.memory.swap";
    pub const MEMORY_SWAPPINESS: &str = "linux.resources.memory.swappiness";
    pub const MEMORY_DISABLE_OOM: &str = "linux.resources.memory.disableOOMKiller";
    pub const PIDS_LIMIT: &str = "linux.resources.pids.limit";
    pub const CPU_SHARES: &str = "linux.resources.cpu.shares";
    pub const CPU_QUOTA: &str = "linux.resources.cpu.quota";
    pub const CPU_PERIOD: &str = "linux.resources.cpu.period";
    pub const CPU_CPUS: &str = "linux.resources.cpu.cpus";
    pub const CPU_MEMS: &str = "linux.resources.cpu.mems";
    pub const DEVICES: &str = "linux.resources.devices";
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
        return Err(format!(
            "memory+swap must be >= linux.resources.memory.limit ({limit})"
        ));
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
    let mut s = if quota > 0 {
        quota.to_string()
    } else {
        "max".to_string()
    };
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
pub(crate) fn v1_memory_writes(
    limit: i64,
    swap: i64,
    cur_limit: i128,
    memsw: bool,
) -> Vec<MemWrite> {
    use field::{MEMORY_LIMIT, MEMORY_SWAP};
    let swap = if limit == -1 && swap == 0 && memsw {
        -1
    } else {
        swap
    };
    let l = (limit != 0).then_some(MemWrite {
        field: MEMORY_LIMIT,
        file: "memory.limit_in_bytes",
        value: limit,
    });
    let s = (swap != 0 && memsw).then_some(MemWrite {
        field: MEMORY_SWAP,
        file: "memory.memsw.limit_in_bytes",
        value: swap,
    });
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
        assert_eq!(
            v2_swap_max(100, 100),
            Ok(Some("0".into())),
            "swap == limit disables swap"
        );
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
        assert_eq!(
            files(&v1_memory_writes(300, 400, 100, true)),
            [
                ("memory.memsw.limit_in_bytes", 400),
                ("memory.limit_in_bytes", 300)
            ]
        );
        // Lowering both from unlimited: limit first.
        assert_eq!(
            files(&v1_memory_writes(64 << 20, 128 << 20, UNLIMITED, true)),
            [
                ("memory.limit_in_bytes", 64 << 20),
                ("memory.memsw.limit_in_bytes", 128 << 20)
            ]
        );
        // Unlimited swap: memsw first.
        assert_eq!(
            files(&v1_memory_writes(100, -1, 200, true)),
            [
                ("memory.memsw.limit_in_bytes", -1),
                ("memory.limit_in_bytes", 100)
            ]
        );
        // Unlimited memory, swap not given: swap follows, written first.
        assert_eq!(
            files(&v1_memory_writes(-1, 0, 100, true)),
            [
                ("memory.memsw.limit_in_bytes", -1),
                ("memory.limit_in_bytes", -1)
            ]
        );
        // Only one of them.
        assert_eq!(
            files(&v1_memory_writes(100, 0, UNLIMITED, true)),
            [("memory.limit_in_bytes", 100)]
        );
        assert_eq!(
            files(&v1_memory_writes(0, 500, 100, true)),
            [("memory.memsw.limit_in_bytes", 500)]
        );
        // No swap accounting: swap is skipped.
        assert_eq!(
            files(&v1_memory_writes(100, 200, 50, false)),
            [("memory.limit_in_bytes", 100)]
        );
        assert_eq!(
            files(&v1_memory_writes(-1, 0, 50, false)),
            [("memory.limit_in_bytes", -1)]
        );
        assert!(v1_memory_writes(0, 0, 0, true).is_empty());
    }
}

//! `linux.resources` → systemd unit properties (systemd.resource-control(5)), for every value
//! systemd has a property for. The manager then writes every value to cgroupfs as well, as
//! runc does: systemd writes its properties again on `daemon-reload` and when it changes any
//! unit of the slice, so it must hold the same values, and cgroupfs gets what systemd has no
//! property for (swappiness, kernel TCP memory, hugetlb, rdma, net_cls, burst, ...).
//!
//! | OCI                          | cgroup v2 unit property          | cgroup v1 unit property |
//! |------------------------------|----------------------------------|-------------------------|
//! | memory.limit                 | MemoryMax                        | MemoryLimit             |
//! | memory.reservation           | MemoryLow                        | —                       |
//! | memory.swap                  | MemorySwapMax (swap alone)       | —                       |
//! | cpu.shares                   | CPUWeight (runc's conversion)    | CPUShares               |
//! | cpu.idle = 1                 | CPUWeight = 0 (idle)             | —                       |
//! | cpu.quota, cpu.period        | CPUQuotaPerSecUSec, CPUQuotaPeriodUSec (both)              |
//! | cpu.cpus, cpu.mems           | AllowedCPUs, AllowedMemoryNodes (bit masks; both)           |
//! | pids.limit                   | TasksMax (both)                                            |
//! | blockIO.weight               | IOWeight (converted)             | BlockIOWeight           |
//! | blockIO.weightDevice         | IODeviceWeight                   | BlockIODeviceWeight     |
//! | blockIO.throttle{Read,Write}BpsDevice  | IO{Read,Write}BandwidthMax | BlockIO{Read,Write}Bandwidth |
//! | blockIO.throttle{Read,Write}IOPSDevice | IO{Read,Write}IOPSMax      | —                       |
//! | devices                      | DevicePolicy, DeviceAllow (both)                           |
//! | unified (v2): cpu.weight, cpu.max, cpu.idle, cpuset.*, memory.{min,low,high,max,swap.max}, pids.max | as above |
//!
//! systemd's CPU quota is per second in steps of 10 ms, so a quota is rounded up to the next
//! step, and the rounded value is what cgroupfs gets too (runc does the same).

use crate::devices::Emulator;
use crate::error::{Error, Result};
use crate::resources::{blkio_weight_to_io_weight, field, nonempty, nonzero, shares_to_weight, v2_swap_max, Resources, ThrottleDevice};

use super::wire::Value;

/// systemd's "infinity" for byte, task and time limits.
const INFINITY: u64 = u64::MAX;
/// The kernel's default CFS period.
pub(crate) const DEFAULT_PERIOD: u64 = 100_000;

/// What [`properties`] needs to know about the host and the unit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    /// cgroup v2 names (Unified host) or v1 ones.
    pub v2: bool,
    /// systemd's version (properties newer than it are left to cgroupfs).
    pub version: u32,
    /// The CFS period in force, for a quota given without a period.
    pub period: u64,
    /// The memory limit in force (OCI convention, -1 unlimited), for a swap limit given
    /// without one.
    pub memory_limit: i64,
}

/// The properties for `r`, and `r` as cgroupfs must get it (the CPU quota rounded as systemd
/// rounds it).
pub(crate) fn properties(r: &Resources, cx: &Context) -> Result<(Vec<Value>, Resources)> {
    let mut out = Resources::clone(r);
    let mut p: Vec<Value> = Vec::new();
    let t = |name: &str, v: u64| Value::prop(name, Value::U64(v));
    let bytes = |v: i64| if v < 0 { INFINITY } else { v as u64 };

    // Memory.
    let m = &r.memory;
    if let Some(limit) = nonzero(m.limit) {
        p.push(t(if cx.v2 { "MemoryMax" } else { "MemoryLimit" }, bytes(limit)));
    }
    if cx.v2 {
        if let Some(v) = nonzero(m.reservation) {
            p.push(t("MemoryLow", bytes(v)));
        }
        if let Some(swap) = nonzero(m.swap) {
            let limit = nonzero(m.limit).unwrap_or(cx.memory_limit);
            match v2_swap_max(swap, limit).map_err(|why| Error::Msg(why).field(field::MEMORY_SWAP, swap))? {
                Some(s) if s == "max" => p.push(t("MemorySwapMax", INFINITY)),
                Some(s) => p.push(t("MemorySwapMax", s.parse().unwrap_or(INFINITY))),
                None => {}
            }
        }
    }

    // CPU weight, idle, quota.
    let idle = cx.v2 && r.cpu.idle == Some(1) && cx.version >= 252;
    if idle {
        p.push(t("CPUWeight", 0));
    } else if let Some(shares) = nonzero(r.cpu.shares) {
        p.push(if cx.v2 { t("CPUWeight", shares_to_weight(shares)) } else { t("CPUShares", shares) });
    }
    let quota = nonzero(r.cpu.quota).unwrap_or(0);
    let period = nonzero(r.cpu.period).unwrap_or(0);
    if period != 0 && cx.version >= 242 {
        p.push(t("CPUQuotaPeriodUSec", period));
    }
    if quota != 0 || period != 0 {
        let (per_sec, rounded) = quota_per_sec(quota, if period != 0 { period } else { cx.period });
        p.push(t("CPUQuotaPerSecUSec", per_sec));
        if let Some(q) = rounded {
            out.cpu.quota = Some(q);
        }
    }
    if cx.version >= 244 {
        for (name, f, v) in
            [("AllowedCPUs", field::CPU_CPUS, nonempty(&r.cpu.cpus)), ("AllowedMemoryNodes", field::CPU_MEMS, nonempty(&r.cpu.mems))]
        {
            if let Some(list) = v {
                let bits = cpu_mask(list).map_err(|why| Error::Msg(why).field(f, format!("{list:?}")))?;
                p.push(Value::prop(name, Value::Array("y".into(), bits.into_iter().map(Value::Byte).collect())));
            }
        }
    }

    // Tasks.
    if let Some(limit) = nonzero(r.pids.limit) {
        p.push(t("TasksMax", if limit > 0 { limit as u64 } else { INFINITY }));
    }

    // Block I/O.
    let b = &r.block_io;
    if let Some(w) = nonzero(b.weight) {
        p.push(if cx.v2 { t("IOWeight", blkio_weight_to_io_weight(w)) } else { t("BlockIOWeight", u64::from(w)) });
    }
    let weights: Vec<Value> = b
        .weight_device
        .iter()
        .filter_map(|wd| {
            let w = nonzero(wd.weight)?;
            let w = if cx.v2 { blkio_weight_to_io_weight(w) } else { u64::from(w) };
            Some(Value::Struct(vec![Value::str(block_path(wd.major, wd.minor)), Value::U64(w)]))
        })
        .collect();
    if !weights.is_empty() {
        p.push(Value::prop(if cx.v2 { "IODeviceWeight" } else { "BlockIODeviceWeight" }, Value::Array("(st)".into(), weights)));
    }
    let limits = |list: &[ThrottleDevice]| -> Value {
        let items = list
            .iter()
            .map(|d| Value::Struct(vec![Value::str(block_path(d.major, d.minor)), Value::U64(if d.rate == 0 { INFINITY } else { d.rate })]))
            .collect();
        Value::Array("(st)".into(), items)
    };
    let throttles: [(&str, Option<&str>, &[ThrottleDevice]); 4] = [
        ("IOReadBandwidthMax", Some("BlockIOReadBandwidth"), &b.throttle_read_bps),
        ("IOWriteBandwidthMax", Some("BlockIOWriteBandwidth"), &b.throttle_write_bps),
        ("IOReadIOPSMax", None, &b.throttle_read_iops),
        ("IOWriteIOPSMax", None, &b.throttle_write_iops),
    ];
    for (v2_name, v1_name, list) in throttles {
        let name = if cx.v2 { Some(v2_name) } else { v1_name };
        if let (Some(name), false) = (name, list.is_empty()) {
            p.push(Value::prop(name, limits(list)));
        }
    }

    if !r.devices.is_empty() {
        p.extend(device_properties(&Emulator::from_rules(&r.devices), cx.version));
    }

    if cx.v2 {
        for (k, v) in &r.unified {
            let v = v.trim();
            let bad = |why: &str| Error::Msg(why.to_string()).field(field::UNIFIED, format!("{{{k:?}: {v:?}}}"));
            let num = |s: &str| if s == "max" { Ok(INFINITY) } else { s.parse::<u64>().map_err(|_| bad("not a number or \"max\"")) };
            match k.as_str() {
                "cpu.weight" if !(r.unified.get("cpu.idle").is_some_and(|i| i.trim() == "1") && cx.version >= 252) => {
                    p.push(t("CPUWeight", num(v)?))
                }
                "cpu.idle" if v == "1" && cx.version >= 252 => p.push(t("CPUWeight", 0)),
                "cpu.max" => {
                    let mut it = v.split_whitespace();
                    let q = match it.next() {
                        Some("max") => -1,
                        Some(q) => q.parse::<i64>().map_err(|_| bad("quota is not a number or \"max\""))?,
                        None => return Err(bad("empty")),
                    };
                    let per = it
                        .next()
                        .map(|s| s.parse::<u64>().map_err(|_| bad("period is not a number")))
                        .transpose()?
                        .unwrap_or(DEFAULT_PERIOD);
                    if cx.version >= 242 {
                        p.push(t("CPUQuotaPeriodUSec", per));
                    }
                    p.push(t("CPUQuotaPerSecUSec", quota_per_sec(q, per).0));
                }
                "cpuset.cpus" | "cpuset.mems" if cx.version >= 244 => {
                    let bits = cpu_mask(v).map_err(|why| bad(&why))?;
                    let name = if k == "cpuset.cpus" { "AllowedCPUs" } else { "AllowedMemoryNodes" };
                    p.push(Value::prop(name, Value::Array("y".into(), bits.into_iter().map(Value::Byte).collect())));
                }
                "memory.min" => p.push(t("MemoryMin", num(v)?)),
                "memory.low" => p.push(t("MemoryLow", num(v)?)),
                "memory.high" => p.push(t("MemoryHigh", num(v)?)),
                "memory.max" => p.push(t("MemoryMax", num(v)?)),
                "memory.swap.max" => p.push(t("MemorySwapMax", num(v)?)),
                // systemd refuses TasksMax=0; 1 is the closest (runc does the same).
                "pids.max" => p.push(t("TasksMax", num(v)?.max(1))),
                _ => {} // cgroupfs only
            }
        }
    }
    Ok((p, out))
}

/// CPUQuotaPerSecUSec for `quota` per `period` µs (≤ 0: unlimited), rounded up to systemd's
/// 10 ms steps, and the quota that rounding gives back when it changed it.
pub(crate) fn quota_per_sec(quota: i64, period: u64) -> (u64, Option<i64>) {
    if quota <= 0 {
        return (INFINITY, None);
    }
    let period = if period == 0 { DEFAULT_PERIOD } else { period };
    let per_sec = (quota as u64).saturating_mul(1_000_000) / period;
    if per_sec.is_multiple_of(10_000) {
        return (per_sec, None);
    }
    let per_sec = (per_sec / 10_000 + 1) * 10_000;
    (per_sec, Some((per_sec as u128 * u128::from(period) / 1_000_000) as i64))
}

/// A cpuset list (`0-3,8`) as systemd's bit mask: byte i holds CPUs 8i..8i+7, lowest bit
/// first (what `AllowedCPUs=` takes over D-Bus).
pub(crate) fn cpu_mask(list: &str) -> std::result::Result<Vec<u8>, String> {
    let mut bits: Vec<u8> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("{s:?} is not a CPU or node number"));
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if lo > hi || hi >= 1 << 16 {
            return Err(format!("bad range {part:?}"));
        }
        for n in lo..=hi {
            let byte = (n / 8) as usize;
            if bits.len() <= byte {
                bits.resize(byte + 1, 0);
            }
            bits[byte] |= 1 << (n % 8);
        }
    }
    if bits.is_empty() {
        return Err("empty list".into());
    }
    Ok(bits)
}

fn block_path(major: i64, minor: i64) -> String {
    format!("/dev/block/{major}:{minor}")
}

/// DevicePolicy/DeviceAllow for the device list the rules leave. systemd has only allow
/// lists: a deny-by-default list becomes `DevicePolicy=strict` with one entry per exception;
/// an allow-by-default list (possibly with denied exceptions) becomes "allow everything"
/// for systemd, and the denials are enforced by capsa's own rules (the v1 `devices.deny`
/// writes, or on v2 the eBPF program, which must agree with systemd's for an access to pass).
fn device_properties(e: &Emulator, version: u32) -> Vec<Value> {
    let entry = |path: String, access: &str| Value::Struct(vec![Value::str(path), Value::str(access)]);
    let reset = Value::prop("DeviceAllow", Value::Array("(ss)".into(), vec![]));
    if e.default_allow {
        return vec![reset, Value::prop("DevicePolicy", Value::str("auto"))];
    }
    let mut allow = Vec::new();
    for x in &e.exceptions {
        let access = crate::devices::access_string(x.access);
        let kinds: &[(char, &str)] = match x.kind {
            'c' => &[('c', "char")],
            'b' => &[('b', "block")],
            _ => &[('c', "char"), ('b', "block")],
        };
        for (_, group) in kinds {
            let path = match (x.major, x.minor) {
                (None, None) => format!("{group}-*"),
                (Some(maj), None) if version >= 240 => format!("{group}-{maj}"),
                (Some(maj), Some(min)) => format!("/dev/{group}/{maj}:{min}"),
                // "*:N" and (before v240) "N:*" have no systemd spelling; capsa's own rules
                // carry them (an access they allow is then refused by systemd's list on v2,
                // as with runc).
                _ => continue,
            };
            allow.push(entry(path, &access));
        }
    }
    vec![reset, Value::prop("DevicePolicy", Value::str("strict")), Value::prop("DeviceAllow", Value::Array("(ss)".into(), allow))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{BlockIo, Cpu, DeviceRule, Memory, Pids};

    fn cx(v2: bool) -> Context {
        Context { v2, version: 252, period: DEFAULT_PERIOD, memory_limit: 0 }
    }

    /// name → value, for assertions.
    fn map(p: &[Value]) -> Vec<(String, Value)> {
        p.iter()
            .filter_map(|v| match v {
                Value::Struct(f) => match (f.first(), f.get(1)) {
                    (Some(Value::Str(n)), Some(Value::Variant(v))) => Some((n.clone(), (**v).clone())),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn get(p: &[Value], name: &str) -> Option<Value> {
        map(p).into_iter().rev().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    #[test]
    fn v2_memory_cpu_tasks_io() {
        let r = Resources {
            memory: Memory { limit: Some(64 << 20), reservation: Some(32 << 20), swap: Some(96 << 20), ..Default::default() },
            cpu: Cpu { shares: Some(1024), quota: Some(50_000), period: Some(100_000), cpus: Some("0-1,9".into()), ..Default::default() },
            pids: Pids { limit: Some(-1) },
            block_io: BlockIo {
                weight: Some(500),
                throttle_read_bps: vec![ThrottleDevice { major: 8, minor: 0, rate: 1 << 20 }],
                throttle_write_iops: vec![ThrottleDevice { major: 8, minor: 0, rate: 0 }],
                ..Default::default()
            },
            ..Default::default()
        };
        let (p, out) = properties(&r, &cx(true)).expect("properties");
        assert_eq!(get(&p, "MemoryMax"), Some(Value::U64(64 << 20)));
        assert_eq!(get(&p, "MemoryLow"), Some(Value::U64(32 << 20)));
        assert_eq!(get(&p, "MemorySwapMax"), Some(Value::U64(32 << 20)), "swap alone on v2");
        assert_eq!(get(&p, "CPUWeight"), Some(Value::U64(39)));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(Value::U64(500_000)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), Some(Value::U64(100_000)));
        assert_eq!(get(&p, "AllowedCPUs"), Some(Value::Array("y".into(), vec![Value::Byte(0b11), Value::Byte(0b10)])));
        assert_eq!(get(&p, "TasksMax"), Some(Value::U64(u64::MAX)));
        assert_eq!(get(&p, "IOWeight"), Some(Value::U64(4950)));
        let row = |path: &str, v: u64| Value::Struct(vec![Value::str(path), Value::U64(v)]);
        assert_eq!(get(&p, "IOReadBandwidthMax"), Some(Value::Array("(st)".into(), vec![row("/dev/block/8:0", 1 << 20)])));
        assert_eq!(get(&p, "IOWriteIOPSMax"), Some(Value::Array("(st)".into(), vec![row("/dev/block/8:0", u64::MAX)])));
        assert_eq!(out, r, "nothing to round");
    }

    #[test]
    fn v1_names() {
        let r = Resources {
            memory: Memory { limit: Some(-1), reservation: Some(5), swap: Some(-1), ..Default::default() },
            cpu: Cpu { shares: Some(512), ..Default::default() },
            block_io: BlockIo {
                weight: Some(300),
                throttle_read_iops: vec![ThrottleDevice { major: 8, minor: 0, rate: 5 }],
                ..Default::default()
            },
            ..Default::default()
        };
        let (p, _) = properties(&r, &cx(false)).expect("properties");
        let names: Vec<String> = map(&p).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["MemoryLimit", "CPUShares", "BlockIOWeight"]);
        assert_eq!(get(&p, "MemoryLimit"), Some(Value::U64(u64::MAX)));
        assert_eq!(get(&p, "CPUShares"), Some(Value::U64(512)));
    }

    #[test]
    fn quota_rounds_up_to_systemd_steps_and_cgroupfs_follows() {
        assert_eq!(quota_per_sec(50_000, 100_000), (500_000, None));
        assert_eq!(quota_per_sec(12_345, 100_000), (130_000, Some(13_000)));
        assert_eq!(quota_per_sec(-1, 100_000), (u64::MAX, None));
        let r = Resources { cpu: Cpu { quota: Some(12_345), ..Default::default() }, ..Default::default() };
        let (p, out) = properties(&r, &Context { period: 200_000, ..cx(true) }).expect("properties");
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(Value::U64(70_000)), "against the period in force");
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), None);
        assert_eq!(out.cpu.quota, Some(14_000));
        // Period alone: unlimited quota, as the cgroupfs write ("max <period>") does.
        let r = Resources { cpu: Cpu { period: Some(50_000), ..Default::default() }, ..Default::default() };
        let (p, _) = properties(&r, &cx(true)).expect("properties");
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(Value::U64(u64::MAX)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), Some(Value::U64(50_000)));
    }

    #[test]
    fn old_systemd_gets_only_what_it_knows() {
        let r = Resources {
            cpu: Cpu { period: Some(50_000), cpus: Some("0".into()), idle: Some(1), ..Default::default() },
            ..Default::default()
        };
        let (p, _) = properties(&r, &Context { version: 239, ..cx(true) }).expect("properties");
        let names: Vec<String> = map(&p).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["CPUQuotaPerSecUSec"]);
        let (p, _) = properties(&r, &cx(true)).expect("properties");
        assert_eq!(get(&p, "CPUWeight"), Some(Value::U64(0)), "idle");
    }

    #[test]
    fn swap_errors_name_the_field_before_anything_is_sent() {
        let r = Resources { memory: Memory { limit: Some(100), swap: Some(50), ..Default::default() }, ..Default::default() };
        let e = properties(&r, &cx(true)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.starts_with("linux.resources.memory.swap = 50: "), "{e}");
        // Swap alone converts against the limit in force.
        let r = Resources { memory: Memory { swap: Some(300), ..Default::default() }, ..Default::default() };
        let (p, _) = properties(&r, &Context { memory_limit: 100, ..cx(true) }).expect("properties");
        assert_eq!(get(&p, "MemorySwapMax"), Some(Value::U64(200)));
        let e = properties(&Resources { cpu: Cpu { cpus: Some("3-1".into()), ..Default::default() }, ..Default::default() }, &cx(true));
        assert!(e.err().map(|e| e.to_string()).unwrap_or_default().starts_with("linux.resources.cpu.cpus = \"3-1\": "));
    }

    #[test]
    fn cpu_masks() {
        assert_eq!(cpu_mask("0"), Ok(vec![1]));
        assert_eq!(cpu_mask("0-7,8"), Ok(vec![0xff, 1]));
        assert_eq!(cpu_mask(" 3 , 5-6 "), Ok(vec![0b0110_1000]));
        for bad in ["", "x", "2-1", "1-", "70000"] {
            assert!(cpu_mask(bad).is_err(), "{bad:?}");
        }
    }

    fn rule(allow: bool, kind: char, major: Option<i64>, minor: Option<i64>, access: &str) -> DeviceRule {
        DeviceRule { allow, kind, major, minor, access: access.into() }
    }

    #[test]
    fn device_lists() {
        let allow_list = Resources {
            devices: vec![
                rule(false, 'a', None, None, "rwm"),
                rule(true, 'c', None, None, "m"),
                rule(true, 'c', Some(1), Some(3), "rwm"),
                rule(true, 'c', Some(136), None, "rw"),
                rule(true, 'b', None, Some(4), "r"),
            ],
            ..Default::default()
        };
        let (p, _) = properties(&allow_list, &cx(true)).expect("properties");
        assert_eq!(get(&p, "DevicePolicy"), Some(Value::str("strict")));
        let e = |path: &str, a: &str| Value::Struct(vec![Value::str(path), Value::str(a)]);
        assert_eq!(
            get(&p, "DeviceAllow"),
            Some(Value::Array("(ss)".into(), vec![e("char-*", "m"), e("/dev/char/1:3", "rwm"), e("char-136", "rw")])),
            "\"b *:4\" has no systemd spelling"
        );
        assert_eq!(map(&p)[0], ("DeviceAllow".to_string(), Value::Array("(ss)".into(), vec![])), "the list is reset first");
        let deny_list =
            Resources { devices: vec![rule(true, 'a', None, None, "rwm"), rule(false, 'c', Some(1), Some(3), "w")], ..Default::default() };
        let (p, _) = properties(&deny_list, &cx(false)).expect("properties");
        assert_eq!(get(&p, "DevicePolicy"), Some(Value::str("auto")));
        assert_eq!(get(&p, "DeviceAllow"), Some(Value::Array("(ss)".into(), vec![])));
    }

    #[test]
    fn unified_keys_on_v2() {
        let mut r = Resources::default();
        for (k, v) in [("memory.high", "1000"), ("memory.max", "max"), ("pids.max", "0"), ("cpu.max", "20000 50000"), ("io.max", "x")] {
            r.unified.insert(k.into(), v.into());
        }
        let (p, _) = properties(&r, &cx(true)).expect("properties");
        assert_eq!(get(&p, "MemoryHigh"), Some(Value::U64(1000)));
        assert_eq!(get(&p, "MemoryMax"), Some(Value::U64(u64::MAX)));
        assert_eq!(get(&p, "TasksMax"), Some(Value::U64(1)));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(Value::U64(400_000)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), Some(Value::U64(50_000)));
        assert_eq!(map(&p).len(), 5, "io.max is cgroupfs only");
        let (p, _) = properties(&r, &cx(false)).expect("properties");
        assert!(p.is_empty(), "no unified keys on v1");
        r.unified.insert("memory.low".into(), "lots".into());
        assert!(properties(&r, &cx(true)).is_err());
    }
}

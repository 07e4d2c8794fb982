//! A container's `Config` + `HostConfig` + `Mounts` → the OCI runtime spec capsa runs,
//! rebuilt at every start (as docker does): the image-config rules of
//! `capsa_image::runspec`, then docker's defaults and the host options: capabilities,
//! seccomp, no-new-privileges, rlimits, cgroup resources, devices, mounts (volumes, binds,
//! tmpfs, /dev/shm size), a read-only root, `--privileged`, `--init`.

use std::path::Path;

use serde_json::{json, Value};

use capsa_image::runspec::{self, RunOpts};
use capsa_image::Store;

use super::config::MountPoint;
use super::{volumes, Record};
use crate::cli::{Failure, Result};

/// The cgroup containers go below without `--cgroup-parent` (docker's is `/docker`); made by
/// the first container, removed with the last (see remove.rs).
pub const DEFAULT_CGROUP_PARENT: &str = "/capsa";

fn bad(msg: impl Into<String>) -> Failure {
    Failure { msg: msg.into(), code: 125 }
}

/// `net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; `ALL` stays `ALL`.
pub fn normalize_cap(c: &str) -> std::result::Result<String, String> {
    let up = c.to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let full = if up.starts_with("CAP_") { up } else { format!("CAP_{up}") };
    if capsa::capabilities::cap_number(&full).is_some() {
        Ok(full)
    } else {
        Err(format!("invalid capability {c:?}"))
    }
}

/// Capabilities this process may hand on (its bounding set): root here lacks some
/// (CAP_SYS_RESOURCE), and a container cannot get what we do not have.
fn own_bounding() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapBnd:").map(|v| u64::from_str_radix(v.trim(), 16).unwrap_or(u64::MAX))))
        .unwrap_or(u64::MAX)
}

/// docker's rule: the default set, plus --cap-add, minus --cap-drop (`ALL` in either).
pub fn capabilities(privileged: bool, add: &[String], drop: &[String]) -> Vec<String> {
    let own = own_bounding();
    let all: Vec<String> = capsa::capabilities::all_names()
        .into_iter()
        .filter(|c| capsa::capabilities::cap_number(c).is_some_and(|n| own & (1u64 << n) != 0))
        .collect();
    if privileged {
        return all;
    }
    let add: Vec<String> = add.iter().filter_map(|c| normalize_cap(c).ok()).collect();
    let drop: Vec<String> = drop.iter().filter_map(|c| normalize_cap(c).ok()).collect();
    let mut caps: Vec<String> = if add.iter().any(|c| c == "ALL") {
        all.clone()
    } else if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        runspec::DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    if !drop.iter().any(|c| c == "ALL") {
        caps.retain(|c| !drop.contains(c));
    }
    for c in add.iter().filter(|c| *c != "ALL") {
        if !caps.contains(c) && all.contains(c) {
            caps.push(c.clone());
        }
    }
    caps
}

/// docker's masked and read-only paths.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Where `--init` finds its init: `$CAPSA_INIT`, else `capsa-init` beside capsactl.
pub fn init_binary() -> Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("CAPSA_INIT") {
        return Ok(p.into());
    }
    if let Some(exe) = std::env::var_os(crate::EXE_ENV) {
        let p = Path::new(&exe).with_file_name("capsa-init");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(bad("--init: not implemented yet: the workspace builds no init binary (set CAPSA_INIT to a static one, e.g. tini-static, or put capsa-init beside capsactl)"))
}

/// Builds the spec for `rec` with its rootfs mounted at `rootfs`; `dir` holds the
/// container's /etc files.
pub fn build(store: &Store, rec: &Record, rootfs: &Path, dir: &Path) -> Result<Value> {
    let c = &rec.stored.config;
    let h = &rec.stored.host;
    let host_net = h.network_mode == "host";
    // The image-config rules of runspec, from the container's resolved Config.
    let img = json!({
        "architecture": "", "os": "linux",
        "config": {"Entrypoint": c.entrypoint, "Cmd": c.cmd, "Env": c.env, "WorkingDir": c.working_dir, "User": c.user, "Labels": c.labels, "StopSignal": c.stop_signal, "Volumes": c.volumes},
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    let img: capsa_image::oci::ImageConfig = serde_json::from_value(img).map_err(|e| bad(format!("container config: {e}")))?;
    let etc = super::network::etc_files(store, rec, dir)?;
    let opts = RunOpts { tty: c.tty, host_network: host_net, hostname: c.hostname.clone(), etc_files: etc, ..Default::default() };
    let mut spec = runspec::build(&capsa::spec::example(None), &img, rootfs, &opts).map_err(|e| bad(e.to_string()))?;
    // The network namespace its start made (network.rs), or another container's.
    if let (Some(p), Some(nss)) = (super::network::ns_path(store, rec), spec["linux"]["namespaces"].as_array_mut()) {
        nss.iter_mut().filter(|n| n["type"] == "network").for_each(|n| n["path"] = json!(p));
    }

    // The process.
    let caps = capabilities(h.privileged, h.cap_add.as_deref().unwrap_or_default(), h.cap_drop.as_deref().unwrap_or_default());
    spec["process"]["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    let sec: Vec<&str> = h.security_opt.iter().flatten().map(String::as_str).collect();
    let nnp = sec.iter().any(|s| matches!(*s, "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"));
    spec["process"]["noNewPrivileges"] = json!(nnp);
    if h.console_size != [0, 0] && c.tty {
        spec["process"]["consoleSize"] = json!({"height": h.console_size[0], "width": h.console_size[1]});
    }
    if let Some(us) = &h.ulimits {
        let r: Vec<Value> = us
            .iter()
            .map(|u| {
                let v = |n: i64| if n < 0 { u64::MAX } else { n as u64 };
                json!({"type": format!("RLIMIT_{}", u.name.to_ascii_uppercase()), "soft": v(u.soft), "hard": v(u.hard)})
            })
            .collect();
        spec["process"]["rlimits"] = json!(r);
    }
    if h.init == Some(true) {
        let mut args = vec![Value::from("/sbin/docker-init"), Value::from("--")];
        args.extend(spec["process"]["args"].as_array().cloned().unwrap_or_default());
        spec["process"]["args"] = Value::Array(args);
    }

    // linux: seccomp, cgroup, resources, devices, masked paths.
    let parent = if h.cgroup_parent.is_empty() { DEFAULT_CGROUP_PARENT } else { h.cgroup_parent.trim_end_matches('/') };
    spec["linux"]["cgroupsPath"] = json!(format!("{parent}/{}", rec.id));
    let seccomp_opt = sec.iter().find_map(|s| s.strip_prefix("seccomp=").or_else(|| s.strip_prefix("seccomp:")));
    if !h.privileged && seccomp_opt != Some("unconfined") {
        spec["linux"]["seccomp"] = match seccomp_opt {
            Some(file) => {
                let text = std::fs::read(file).map_err(|e| bad(format!("--security-opt seccomp={file}: {e}")))?;
                super::seccomp::parse_profile(&text).map_err(|e| bad(format!("--security-opt seccomp={file}: {e}")))?
            }
            None => super::seccomp::default_profile(&caps),
        };
    }
    let mut res = json!({});
    if h.privileged {
        res["devices"] = json!([{"allow": true, "access": "rwm"}]);
    } else {
        let mut rules = vec![json!({"allow": false, "access": "rwm"})];
        let mut nodes = Vec::new();
        for d in &h.devices {
            let (typ, major, minor, mode) = device_of(&d.path_on_host)?;
            rules.push(json!({"allow": true, "type": typ, "major": major, "minor": minor, "access": d.cgroup_permissions}));
            nodes.push(
                json!({"path": d.path_in_container, "type": typ, "major": major, "minor": minor, "fileMode": mode, "uid": 0, "gid": 0}),
            );
        }
        res["devices"] = json!(rules);
        if !nodes.is_empty() {
            spec["linux"]["devices"] = json!(nodes);
        }
    }
    if h.memory > 0 {
        res["memory"] = json!({"limit": h.memory});
        if h.memory_swap != 0 {
            res["memory"]["swap"] = json!(h.memory_swap);
        }
    }
    if h.cpu_shares > 0 || h.nano_cpus > 0 {
        let mut cpu = json!({});
        if h.cpu_shares > 0 {
            cpu["shares"] = json!(h.cpu_shares);
        }
        if h.nano_cpus > 0 {
            cpu["period"] = json!(100_000);
            cpu["quota"] = json!(h.nano_cpus / 10_000);
        }
        res["cpu"] = cpu;
    }
    if let Some(p) = h.pids_limit {
        res["pids"] = json!({"limit": if p < 0 { -1 } else { p }});
    }
    spec["linux"]["resources"] = res;
    if h.privileged {
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
        spec["linux"]["devices"] = json!(host_devices());
    } else {
        spec["linux"]["maskedPaths"] = json!(MASKED);
        spec["linux"]["readonlyPaths"] = json!(READONLY);
    }
    spec["root"]["readonly"] = json!(h.readonly_rootfs);

    // Mounts: the defaults (privileged: /sys and cgroups writable), /dev/shm's size, then
    // the user's, parents first; a user mount replaces a default at the same place.
    let mut user: Vec<Value> = Vec::new();
    for m in &rec.stored.mounts {
        user.push(mount_of(store, m)?);
    }
    for (dest, opts) in &h.tmpfs {
        let mut o = vec!["nosuid".to_string(), "noexec".to_string(), "nodev".to_string()];
        for x in opts.split(',').filter(|x| !x.is_empty()) {
            match x {
                "exec" => o.retain(|y| y != "noexec"),
                "suid" => o.retain(|y| y != "nosuid"),
                "dev" => o.retain(|y| y != "nodev"),
                _ => o.push(x.to_string()),
            }
        }
        user.push(json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": o}));
    }
    if h.init == Some(true) {
        let init = init_binary()?;
        user.push(
            json!({"destination": "/sbin/docker-init", "type": "bind", "source": init, "options": ["bind", "ro", "nosuid", "nodev"]}),
        );
    }
    let dests: Vec<String> = user.iter().filter_map(|m| m["destination"].as_str().map(str::to_string)).collect();
    if let Some(ms) = spec["mounts"].as_array_mut() {
        ms.retain(|m| !m["destination"].as_str().is_some_and(|d| dests.iter().any(|x| x == d)));
        for m in ms.iter_mut() {
            match m["destination"].as_str() {
                Some("/dev/shm") => m["options"] = json!(["nosuid", "noexec", "nodev", "mode=1777", format!("size={}", h.shm_size)]),
                Some("/sys") if h.privileged => m["options"] = json!(["nosuid", "noexec", "nodev"]),
                Some("/sys/fs/cgroup") if h.privileged => m["options"] = json!(["nosuid", "noexec", "nodev", "relatime"]),
                _ => {}
            }
        }
        user.sort_by_key(|m| m["destination"].as_str().map(|d| d.split('/').filter(|c| !c.is_empty()).count()).unwrap_or(0));
        ms.extend(user);
    }
    Ok(spec)
}

fn mount_of(store: &Store, m: &MountPoint) -> Result<Value> {
    let mut opts = vec!["rbind".to_string()];
    match m.typ.as_str() {
        "bind" => {
            opts.push(if m.propagation.is_empty() { "rprivate".into() } else { m.propagation.clone() });
            if !m.rw {
                opts.push("ro".into());
            }
            Ok(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": opts}))
        }
        "volume" => {
            opts.push("rprivate".into());
            if !m.rw {
                opts.push("ro".into());
            }
            let src = volumes::data_dir(store, &m.name);
            Ok(json!({"destination": m.destination, "type": "bind", "source": src, "options": opts}))
        }
        "tmpfs" => {
            let mut o = vec!["nosuid".to_string(), "nodev".to_string()];
            if !m.rw {
                o.push("ro".into());
            }
            o.extend(m.options.iter().cloned());
            Ok(json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": o}))
        }
        t => Err(bad(format!("mount at {}: unknown type {t:?}", m.destination))),
    }
}

/// (type, major, minor, mode) of a host device node.
fn device_of(path: &str) -> Result<(&'static str, u64, u64, u32)> {
    let st = nix::sys::stat::stat(path).map_err(|e| bad(format!("--device {path}: {}", e.desc())))?;
    let k = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode & nix::sys::stat::SFlag::S_IFMT.bits());
    let typ = match k {
        nix::sys::stat::SFlag::S_IFCHR => "c",
        nix::sys::stat::SFlag::S_IFBLK => "b",
        _ => return Err(bad(format!("--device {path}: not a device node"))),
    };
    Ok((typ, nix::sys::stat::major(st.st_rdev), nix::sys::stat::minor(st.st_rdev), st.st_mode & 0o777))
}

/// `--privileged`: the host's device nodes (the top level of /dev, as nodes of their own).
fn host_devices() -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/dev") else { return out };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        // The runtime makes these itself; /dev/console is the container's terminal.
        if ["null", "zero", "full", "random", "urandom", "tty", "console", "ptmx"].contains(&name.as_str()) {
            continue;
        }
        if let Ok((typ, major, minor, mode)) = device_of(&p.to_string_lossy()) {
            out.push(json!({"path": p, "type": typ, "major": major, "minor": minor, "fileMode": mode, "uid": 0, "gid": 0}));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets_as_docker_makes_them() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let d = capabilities(false, &[], &[]);
        assert_eq!(d.len(), runspec::DEFAULT_CAPS.len());
        let c = capabilities(false, &s(&["net_admin"]), &s(&["CAP_CHOWN", "kill"]));
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()) && !c.contains(&"CAP_CHOWN".to_string()) && !c.contains(&"CAP_KILL".to_string()));
        assert_eq!(capabilities(false, &s(&["NET_RAW"]), &s(&["ALL"])), vec!["CAP_NET_RAW".to_string()]);
        assert!(capabilities(false, &s(&["ALL"]), &s(&["SYS_ADMIN"])).iter().all(|c| c != "CAP_SYS_ADMIN"));
        assert!(normalize_cap("nope").is_err());
    }
}

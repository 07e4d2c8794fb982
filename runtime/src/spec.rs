//! `capsa spec`: the example config.json runc writes, as data, so callers that depend on
//! its shape (tests, tutorials) get the same bundle layout.

use serde_json::{json, Value};

const CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// The default spec for this host; `rootless` maps the caller's uid/gid and avoids what needs
/// real root. It has a cgroup namespace only on a pure cgroup v2 host, as runc's (on a v1 or
/// hybrid host one changes what /proc/self/cgroup shows inside, unlike runc's spec).
pub fn example(rootless: Option<(u32, u32)>) -> Value {
    let unified = capsa_cgroups::detect().is_ok_and(|m| m == capsa_cgroups::Mode::Unified);
    example_for(rootless, unified)
}

/// [`example`] with or without a cgroup namespace, whatever the host.
pub fn example_for(rootless: Option<(u32, u32)>, cgroup_ns: bool) -> Value {
    let mut devpts = vec!["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"];
    if rootless.is_none() {
        devpts.push("gid=5");
    }
    let sys = if rootless.is_some() {
        json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    } else {
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]})
    };
    let mut namespaces = vec![json!({"type": "pid"})];
    if rootless.is_none() {
        namespaces.push(json!({"type": "network"}));
    }
    namespaces.extend([json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})]);
    if cgroup_ns {
        namespaces.push(json!({"type": "cgroup"}));
    }
    if rootless.is_some() {
        namespaces.push(json!({"type": "user"}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    });
    match rootless {
        Some((uid, gid)) => {
            linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
            linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
        }
        None => linux["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]}),
    }
    json!({
        "ociVersion": crate::config::OCI_VERSION,
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS, "ambient": CAPS},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "capsa",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": devpts},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            sys,
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": linux
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    #[test]
    fn example_parses_and_validates_shape() {
        let v = super::example_for(None, false);
        let text = serde_json::to_vec(&v).unwrap();
        let spec = crate::config::parse(&text).unwrap();
        assert_eq!(spec.mounts().as_ref().unwrap().len(), 7);
        let ns = |v: &Value| v["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].clone()).collect::<Vec<_>>();
        assert!(!ns(&v).contains(&json!("cgroup")));
        assert!(ns(&super::example_for(None, true)).contains(&json!("cgroup")));
        let r = super::example_for(Some((1000, 1000)), false);
        assert_eq!(r["linux"]["uidMappings"][0]["hostID"], 1000);
        assert!(r["linux"].get("resources").is_none());
    }
}

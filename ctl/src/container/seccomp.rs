//! docker's default seccomp profile, rendered for a container's capability set the way
//! docker renders it: `hack/seccomp-docker-default.json` is moby's profile for amd64 with
//! the default capabilities (the rules that hold whatever the capabilities are); the
//! rules moby makes conditional on a capability are added here from the container's
//! bounding set, and the `clone` namespace-flag restriction (and `clone3` → ENOSYS) apply
//! only without CAP_SYS_ADMIN, as in moby's `includes`/`excludes`.

use serde_json::{json, Value};

const BASE: &str = include_str!("../../../hack/seccomp-docker-default.json");

/// moby's capability-conditional allow rules.
const BY_CAP: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYS_TIME", &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// The default profile for a container whose bounding set is `caps` (`CAP_*` names).
pub fn default_profile(caps: &[String]) -> Value {
    let mut p: Value = serde_json::from_str(BASE).unwrap_or_else(|_| json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    let has = |c: &str| caps.iter().any(|x| x == c);
    let Some(rules) = p["syscalls"].as_array_mut() else { return p };
    // The rendered file carries the default capabilities' conditional rules (chroot for
    // CAP_SYS_CHROOT, the restricted clone and clone3 for no CAP_SYS_ADMIN): take them out
    // and put back what this container's capabilities call for.
    let conditional = ["chroot", "clone", "clone3"];
    rules.retain(|r| {
        let names: Vec<&str> = r["names"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        !(names.len() == 1 && conditional.contains(&names[0]))
    });
    let mut extra: Vec<&str> = Vec::new();
    for (cap, names) in BY_CAP {
        if has(cap) {
            extra.extend(names.iter().copied());
        }
    }
    extra.sort_unstable();
    extra.dedup();
    if !extra.is_empty() {
        rules.push(json!({"names": extra, "action": "SCMP_ACT_ALLOW"}));
    }
    if !has("CAP_SYS_ADMIN") {
        // clone without any namespace flag (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET).
        rules.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 2114060288u64, "op": "SCMP_CMP_MASKED_EQ"}]}));
        // clone3's flags are in memory seccomp cannot read: make libc fall back to clone.
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}));
    }
    p
}

/// Checks a user's profile (`--security-opt seccomp=FILE`): it must be an OCI seccomp
/// object (docker's extended profile format with `includes`/`excludes` is not accepted).
pub fn parse_profile(text: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(text).map_err(|e| format!("decode seccomp profile: {e}"))?;
    if !v.is_object() || v.get("defaultAction").is_none() {
        return Err("decode seccomp profile: want an object with defaultAction".into());
    }
    if v.get("syscalls")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|r| r.get("includes").is_some() || r.get("excludes").is_some()))
    {
        return Err("includes/excludes in a seccomp profile are not supported (give a profile already rendered for the container)".into());
    }
    if v.get("archMap").is_some() {
        return Err("archMap is not supported (use architectures)".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(p: &Value, name: &str) -> bool {
        p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none() && r["names"].as_array().unwrap().iter().any(|n| n == name))
    }

    #[test]
    fn capabilities_shape_the_profile() {
        let default: Vec<String> = capsa_image::runspec::DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
        let p = default_profile(&default);
        assert!(allowed(&p, "chroot") && !allowed(&p, "mount") && !allowed(&p, "ptrace_x"));
        assert!(!allowed(&p, "clone"), "clone only without namespace flags");
        let mut admin = default.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let p = default_profile(&admin);
        assert!(allowed(&p, "mount") && allowed(&p, "clone") && allowed(&p, "unshare"));
        let no_chroot: Vec<String> = default.into_iter().filter(|c| c != "CAP_SYS_CHROOT").collect();
        assert!(!allowed(&default_profile(&no_chroot), "chroot"));
        // What comes out is an OCI profile the runtime compiles.
        let spec: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p).unwrap();
        assert!(!spec.syscalls().as_ref().unwrap().is_empty());
    }
}

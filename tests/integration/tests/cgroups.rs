//! cgroups: where the container's cgroup is, resources written to it, limits enforced, removal.
//! (This host is hybrid: v1 controllers plus a cgroup2 mount with no controllers.)

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::path::Path;

/// Own cgroup path of the test process per controller ("memory" -> "/process_api/x").
fn own_cgroup(controller: &str) -> String {
    read("/proc/self/cgroup")
        .lines()
        .find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, c, p) = (it.next()?, it.next()?, it.next()?);
            c.split(',').any(|x| x == controller).then(|| p.to_string())
        })
        .unwrap_or_else(|| "/".into())
}

/// Without cgroupsPath the container's cgroup is named after the id, under the runtime's own
/// cgroup in every hierarchy; delete removes it.
#[test]
fn default_cgroup_path() {
    let mut c = Container::shared("cg-default");
    c.args(&["sleep", "100"]);
    c.create(&[]).ok();
    let pid = c.pid();
    let cg = read(format!("/proc/{pid}/cgroup"));
    for ctrl in ["memory", "pids", "cpu", "devices", "freezer"] {
        let own = own_cgroup(ctrl);
        let want = format!("{}/{}", own.trim_end_matches('/'), c.id);
        let line = cg.lines().find(|l| l.split(':').nth(1).is_some_and(|x| x.split(',').any(|y| y == ctrl)));
        let line = line.unwrap_or_else(|| panic!("no {ctrl} line in {cg}"));
        assert!(line.ends_with(&format!(":{want}")), "{ctrl}: {line}, want {want}");
        let dir = cgroup_dir_of(pid, ctrl).unwrap();
        assert!(dir.is_dir(), "{}", dir.display());
    }
    let dirs = cgroup_dirs_for(&c.id);
    assert!(!dirs.is_empty());
    c.delete_force().ok();
    for d in dirs {
        assert!(!d.exists(), "{} not removed by delete", d.display());
    }
}

/// An absolute linux.cgroupsPath is used as is (from the hierarchy root).
#[test]
fn absolute_cgroups_path() {
    let mut c = Container::shared("cg-abs");
    let path = format!("/{}-abs", c.id);
    c.set("/linux/cgroupsPath", json!(path));
    c.args(&["sleep", "100"]);
    c.create(&[]).ok();
    let pid = c.pid();
    let cg = read(format!("/proc/{pid}/cgroup"));
    for ctrl in ["memory", "pids"] {
        let line = cg.lines().find(|l| l.split(':').nth(1) == Some(ctrl)).expect("controller line");
        assert!(line.ends_with(&format!(":{path}")), "{line}");
    }
    assert!(Path::new(&format!("/sys/fs/cgroup/pids{path}")).is_dir());
    c.delete_force().ok();
    assert!(!Path::new(&format!("/sys/fs/cgroup/pids{path}")).exists());
}

#[test]
fn resources_written() {
    let mut c = Container::shared("cg-resources");
    c.set("/linux/resources/memory", json!({"limit": 64 << 20}));
    c.set("/linux/resources/pids", json!({"limit": 50}));
    c.set("/linux/resources/cpu", json!({"shares": 512, "quota": 50000, "period": 100000}));
    c.args(&["sleep", "100"]);
    c.create(&[]).ok();
    let pid = c.pid();
    let file = |ctrl: &str, f: &str| read(cgroup_dir_of(pid, ctrl).unwrap().join(f)).trim().to_string();
    assert_eq!(file("memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(file("pids", "pids.max"), "50");
    assert_eq!(file("cpu", "cpu.shares"), "512");
    assert_eq!(file("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(file("cpu", "cpu.cfs_period_us"), "100000");
}

/// pids.limit is enforced: the container cannot fork past it.
#[test]
fn pids_limit_enforced() {
    let mut c = Container::shared("cg-pids");
    c.set("/linux/resources/pids", json!({"limit": 4}));
    // The shell itself may give up (exit 2) when fork fails; what matters is that it failed.
    c.sh("for i in 1 2 3 4 5 6; do sleep 5 & done 2>&1; echo done");
    let out = c.run(&[]);
    assert!(out.stdout.contains("can't fork") || out.stdout.contains("Resource temporarily unavailable"),
            "forks past pids.limit must fail: {out}");
}

/// A memory limit below what the init already uses cannot be applied: create fails cleanly and
/// leaves nothing behind.
#[test]
fn memory_limit_too_low() {
    let mut c = Container::shared("cg-mem-low");
    c.set("/linux/resources/memory", json!({"limit": 1024}));
    c.args(&["true"]);
    c.write_config();
    let out = c.create_cmd(&[]).run().fails_cleanly();
    // runc: "unable to set memory limit to 1024 (current usage: N, peak usage: M)". capsa names
    // the field (DESIGN: "linux.resources.memory.limit = 1024: below the kernel minimum").
    if is_capsa() {
        assert!(out.stderr.contains("linux.resources.memory.limit"), "{out}");
    } else {
        assert!(out.stderr.contains("memory limit"), "{out}");
    }
    c.assert_clean();
}

/// The cgroup is also gone when the container exits by itself and `run` (without --keep) cleans up.
#[test]
fn cgroup_removed_after_run() {
    let mut c = Container::shared("cg-run");
    c.sh("cat /proc/self/cgroup");
    let out = c.run(&[]).ok();
    assert!(out.stdout.contains(&c.id), "{out}");
    assert!(cgroup_dirs_for(&c.id).is_empty());
}

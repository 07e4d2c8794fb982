//! Operations on a running container: pause/resume, ps, events, update.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::collections::BTreeSet;
use std::time::Duration;

/// A pure cgroup v2 host (the VM of hack/cgroup2-vm.sh), as opposed to v1/hybrid.
fn unified() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// `pid`'s cgroup directory for `controller`: its v1 hierarchy, or the cgroup2 directory.
fn dir_of(pid: i32, controller: &str) -> std::path::PathBuf {
    if !unified() {
        return cgroup_dir_of(pid, controller).expect("v1 cgroup");
    }
    let rel = read(format!("/proc/{pid}/cgroup")).lines().find_map(|l| l.strip_prefix("0::").map(str::to_string)).unwrap();
    std::path::Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'))
}

/// The kernel's view of the freezer: v1 freezer.state, v2 `frozen` of cgroup.events.
fn frozen_state(dir: &std::path::Path) -> &'static str {
    if unified() {
        if read(dir.join("cgroup.events")).lines().any(|l| l == "frozen 1") {
            "FROZEN"
        } else {
            "THAWED"
        }
    } else if read(dir.join("freezer.state")).trim() == "FROZEN" {
        "FROZEN"
    } else {
        "THAWED"
    }
}

fn running(name: &str, script: &str) -> (Container, Output) {
    let mut c = Container::shared(name);
    c.sh(script);
    let out = c.create_start();
    (c, out)
}

#[test]
fn pause_resume() {
    // The container counts on stdout; while paused the output must not grow.
    let (c, out) = running("pause", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.01; done");
    wait_file_contains(&out.stdout_path, "\n3\n");
    c.rt(["pause", &c.id]).ok();
    assert_eq!(c.status(), "paused");
    let pid = c.pid();
    let freezer = dir_of(pid, "freezer");
    assert_eq!(frozen_state(&freezer), "FROZEN");
    let len = out.stdout_now().len();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(out.stdout_now().len(), len, "a paused container kept running");
    // Pausing twice / resuming a running container: errors (runc: "container not running",
    // "container not paused").
    c.rt(["pause", &c.id]).fails_cleanly();
    c.rt(["resume", &c.id]).ok();
    assert_eq!(c.status(), "running");
    assert_eq!(frozen_state(&freezer), "THAWED");
    assert!(wait_until(POLL_TIMEOUT, || out.stdout_now().len() > len), "did not resume");
    c.rt(["resume", &c.id]).fails_cleanly();
}

/// delete --force of a paused container kills it (thawing it first) and leaves nothing.
#[test]
fn delete_force_paused() {
    let (c, _) = running("pause-delete", "exec sleep 100");
    let pid = c.pid();
    c.rt(["pause", &c.id]).ok();
    c.delete_force().ok();
    wait_pid_dead(pid);
    c.assert_clean();
}

#[test]
fn ps_formats() {
    let (c, _) = running("ps", "sleep 100 & exec sleep 101");
    let init = c.pid();
    poll(POLL_TIMEOUT, "init exec'd", || (proc_cmdline(init) == "sleep 101").then_some(()));
    let v = c.rt(["ps", "--format", "json", &c.id]).ok().json();
    let pids: BTreeSet<i64> = v.as_array().expect("array").iter().map(|p| p.as_i64().expect("pid")).collect();
    assert_eq!(pids.len(), 2, "{v}");
    assert!(pids.contains(&(init as i64)));
    // The table form is ps(1)'s output (runc runs `ps -ef` and filters it).
    let t = c.rt(["ps", &c.id]).ok();
    let header = t.stdout.lines().next().unwrap_or("");
    assert!(header.split_whitespace().take(2).eq(["UID", "PID"]), "{t}");
    assert_eq!(t.stdout.lines().count(), 3, "{t}");
}

#[test]
fn events_stats() {
    let mut c = Container::shared("events");
    c.set("/linux/resources/pids", json!({"limit": 50}));
    c.args(&["sleep", "100"]);
    c.create_start();
    let out = c.rt(["events", "--stats", &c.id]).ok();
    let v: Value = serde_json::from_str(out.stdout.lines().next().unwrap_or("")).expect("one JSON line");
    assert_eq!(v["type"], "stats", "{out}");
    assert_eq!(v["id"], c.id.as_str(), "{out}");
    assert_eq!(v["data"]["pids"]["current"], 1, "{out}");
    assert_eq!(v["data"]["pids"]["limit"], 50, "{out}");
    assert!(v["data"]["memory"]["usage"]["usage"].as_u64().is_some_and(|u| u > 0), "{out}");
    assert!(v["data"]["cpu"]["usage"]["total"].as_u64().is_some(), "{out}");
}

#[test]
fn update_resources() {
    let mut c = Container::shared("update");
    c.set("/linux/resources/pids", json!({"limit": 50}));
    c.args(&["sleep", "100"]);
    c.create_start();
    let pid = c.pid();
    let res = c.dir.join("resources.json");
    std::fs::write(&res, r#"{"memory":{"limit":33554432},"pids":{"limit":20},"cpu":{"shares":256}}"#).unwrap();
    c.cmd(["update", "--resources", "-", &c.id]).stdin(Stdin::File(res)).run().ok();
    let file = |ctrl: &str, f: &str| read(dir_of(pid, ctrl).join(f)).trim().to_string();
    if unified() {
        assert_eq!(file("memory", "memory.max"), "33554432");
        assert_eq!(file("cpu", "cpu.weight"), "10", "runc's shares conversion");
    } else {
        assert_eq!(file("memory", "memory.limit_in_bytes"), "33554432");
        assert_eq!(file("cpu", "cpu.shares"), "256");
    }
    assert_eq!(file("pids", "pids.max"), "20");
    // The flag form.
    c.rt(["update", "--pids-limit", "30", &c.id]).ok();
    assert_eq!(file("pids", "pids.max"), "30");
    // A malformed resources document is a clean error and changes nothing.
    let bad = c.dir.join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    c.cmd(["update", "--resources", "-", &c.id]).stdin(Stdin::File(bad)).run().fails_cleanly();
    assert_eq!(file("pids", "pids.max"), "30");
}

/// A created (not yet started) container can be paused and resumed, as with runc; it then
/// starts normally.
#[test]
fn pause_created_container() {
    let mut c = Container::shared("pause-created");
    c.args(&["sleep", "100"]);
    c.create(&[]).ok();
    c.rt(["pause", &c.id]).ok();
    assert_eq!(c.status(), "paused");
    let out = c.rt(["start", &c.id]);
    assert_ne!(out.code, Some(0), "a paused container does not start: {out}");
    c.rt(["resume", &c.id]).ok();
    assert_eq!(c.status(), "created");
    c.start().ok();
    assert_eq!(c.status(), "running");
}

//! The systemd cgroup driver end to end (`--systemd-cgroup`): hack/systemd-vm.sh runs this
//! suite with `--ignored` in a VM whose PID 1 is systemd (with a user `capsa-user`, uid
//! 1000, whose own systemd manager runs); on hosts without systemd it is ignored.
//!
//! What systemd holds is read with `systemctl show`, what the kernel holds from cgroupfs and
//! from inside the container. Like the rest of the suite it runs against runc too
//! (`CAPSA_BIN=/usr/sbin/runc`), whose systemd driver is the reference.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const NEEDS: &str = "needs systemd as PID 1 (hack/systemd-vm.sh runs it)";

/// The user whose systemd manager the VM starts at boot (lingering).
const USER: &str = "capsa-user";

fn needs_systemd() {
    assert!(Path::new("/run/systemd/system").is_dir(), "{NEEDS}");
}

/// `systemctl [--user] show -p P... UNIT` as a map; `user` runs it as that user against
/// their manager.
fn show(unit: &str, props: &[&str], user: Option<&str>) -> BTreeMap<String, String> {
    let mut c = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "env", "XDG_RUNTIME_DIR=/run/user/1000", "systemctl", "--user"]);
            c
        }
        None => Command::new("systemctl"),
    };
    c.arg("show");
    for p in props {
        c.arg("-p").arg(p);
    }
    c.arg(unit);
    let out = run_host_cmd(c, CMD_TIMEOUT).ok();
    out.stdout.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn load_state(unit: &str, user: Option<&str>) -> String {
    show(unit, &["LoadState"], user).get("LoadState").cloned().unwrap_or_default()
}

/// `--systemd-cgroup create` (the global flag before the command, as runc takes it).
fn create_sd(c: &Container) -> Output {
    c.write_config();
    let b = c.bundle.to_str().unwrap().to_string();
    c.cmd(["--systemd-cgroup", "create", "--bundle", &b, &c.id]).run()
}

/// The cgroup2 path of `pid` (`0::` line).
fn cgroup_of(pid: i32) -> String {
    read(format!("/proc/{pid}/cgroup")).lines().find_map(|l| l.strip_prefix("0::").map(str::to_string)).unwrap_or_default()
}

fn unified() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The unit's directory holding `file` (the cgroup2 one on v2, the controller's on v1).
fn unit_file(cg: &str, controller: &str, file: &str) -> PathBuf {
    if unified() {
        PathBuf::from(format!("/sys/fs/cgroup{cg}/{file}"))
    } else {
        PathBuf::from(format!("/sys/fs/cgroup/{controller}{cg}/{file}"))
    }
}

#[test]
#[ignore = "needs systemd as PID 1 (hack/systemd-vm.sh runs it)"]
fn limits_in_systemctl_update_pause_and_delete_removes_the_unit() {
    needs_systemd();
    let features = Container::shared("sd-features").rt(["features"]).ok().json();
    assert_eq!(features["linux"]["cgroup"]["systemd"], true);

    let mut c = Container::shared("sd-limits");
    let slice = format!("capsa-it{}.slice", std::process::id());
    c.set("/linux/cgroupsPath", json!(format!("{slice}:capsa:{}", c.id)));
    c.set("/linux/resources/memory", json!({"limit": 64 << 20}));
    c.set("/linux/resources/pids", json!({"limit": 50}));
    c.set("/linux/resources/cpu", json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"}));
    c.args(&["sleep", "100"]);
    create_sd(&c).ok();
    let unit = format!("capsa-{}.scope", c.id);
    let pid = c.pid();
    let cg = cgroup_of(pid);
    assert_eq!(cg, format!("/capsa.slice/{slice}/{unit}"));
    let s = show(&unit, &["ActiveState", "Slice", "Delegate", "TasksMax", "CPUQuotaPerSecUSec", "DevicePolicy"], None);
    assert_eq!(s["ActiveState"], "active", "{s:?}");
    assert_eq!(s["Slice"], slice);
    assert_eq!(s["Delegate"], "yes");
    assert_eq!(s["TasksMax"], "50");
    assert_eq!(s["CPUQuotaPerSecUSec"], "500ms");
    assert_eq!(s["DevicePolicy"], "strict");
    if unified() {
        let s = show(&unit, &["MemoryMax", "CPUWeight", "AllowedCPUs"], None);
        assert_eq!(s["MemoryMax"], "67108864");
        assert_eq!(s["CPUWeight"], "20");
        assert_eq!(s["AllowedCPUs"], "0");
    } else {
        assert_eq!(show(&unit, &["MemoryLimit"], None)["MemoryLimit"], "67108864");
    }
    let mem_file = if unified() { "memory.max" } else { "memory.limit_in_bytes" };
    assert_eq!(read(unit_file(&cg, "memory", mem_file)).trim(), "67108864");
    assert_eq!(read(unit_file(&cg, "pids", "pids.max")).trim(), "50");

    c.start().ok();
    c.wait_status("running");
    // What the container sees at its cgroup mount (no cgroup namespace here: capsa binds the
    // container's own directory there; runc 1.1 mounts the whole cgroup2 hierarchy).
    if is_capsa() {
        let inside = if unified() { "/sys/fs/cgroup/memory.max" } else { "/sys/fs/cgroup/memory/memory.limit_in_bytes" };
        assert_eq!(c.rt(["exec", &c.id, "cat", inside]).ok().stdout.trim(), "67108864");
    }
    c.rt(["pause", &c.id]).ok();
    assert_eq!(c.status(), "paused");
    c.rt(["resume", &c.id]).ok();
    assert_eq!(c.status(), "running");

    // update: systemd's properties and the files.
    c.rt(["update", "--memory", "128m", "--pids-limit", "60", &c.id]).ok();
    let s = show(&unit, &["TasksMax", if unified() { "MemoryMax" } else { "MemoryLimit" }], None);
    assert_eq!(s["TasksMax"], "60");
    assert_eq!(s[if unified() { "MemoryMax" } else { "MemoryLimit" }], "134217728");
    assert_eq!(read(unit_file(&cg, "memory", mem_file)).trim(), "134217728");
    assert_eq!(read(unit_file(&cg, "pids", "pids.max")).trim(), "60");

    c.kill("KILL").ok();
    c.wait_status("stopped");
    c.delete().ok();
    assert_eq!(load_state(&unit, None), "not-found", "delete left the unit");
    assert!(!unit_file(&cg, "pids", "").exists(), "delete left {cg}");
    let _ = Command::new("systemctl").args(["stop", &slice]).status();
}

/// `delete --force` of a running container stops the unit; a nested slice is made the way
/// systemd nests slices.
#[test]
#[ignore = "needs systemd as PID 1 (hack/systemd-vm.sh runs it)"]
fn nested_slice_and_force_delete() {
    needs_systemd();
    let mut c = Container::shared("sd-nested");
    let top = format!("capsa-n{}", std::process::id());
    c.set("/linux/cgroupsPath", json!(format!("{top}-x.slice:test:{}", c.id)));
    c.args(&["sleep", "100"]);
    create_sd(&c).ok();
    c.start().ok();
    let unit = format!("test-{}.scope", c.id);
    let cg = cgroup_of(c.pid());
    assert_eq!(cg, format!("/capsa.slice/{top}.slice/{top}-x.slice/{unit}"));
    assert_eq!(show(&format!("{top}-x.slice"), &["ActiveState"], None)["ActiveState"], "active");
    c.delete_force().ok();
    assert_eq!(load_state(&unit, None), "not-found");
    assert!(!Path::new(&format!("/sys/fs/cgroup/unified{cg}")).exists() && !Path::new(&format!("/sys/fs/cgroup{cg}")).exists());
    c.assert_clean();
    let _ = Command::new("systemctl").args(["stop", &format!("{top}.slice")]).status();
}

/// An OOM kill inside the container: counted in the scope's cgroup; the unit and the
/// container stay (Delegate=yes units continue after an OOM kill).
#[test]
#[ignore = "needs systemd as PID 1 (hack/systemd-vm.sh runs it)"]
fn oom_kill_in_the_container_leaves_the_unit() {
    needs_systemd();
    let mut c = Container::shared("sd-oom");
    c.set("/linux/cgroupsPath", json!(format!(":capsa:{}", c.id)));
    c.set("/linux/resources/memory", json!({"limit": 16 << 20, "swap": 16 << 20}));
    c.args(&["sleep", "100"]);
    create_sd(&c).ok();
    c.start().ok();
    let unit = format!("capsa-{}.scope", c.id);
    let cg = cgroup_of(c.pid());
    assert_eq!(cg, format!("/system.slice/{unit}"), "the default slice");
    let out = c.rt(["exec", &c.id, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    assert_eq!(out.code, Some(137), "the hog is OOM-killed: {out}");
    let events = if unified() { read(unit_file(&cg, "", "memory.events")) } else { read(unit_file(&cg, "memory", "memory.oom_control")) };
    let kills: u64 = events.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0);
    assert!(kills >= 1, "{events}");
    assert_eq!(show(&unit, &["ActiveState"], None)["ActiveState"], "active");
    assert_eq!(c.status(), "running");
    c.delete_force().ok();
    assert_eq!(load_state(&unit, None), "not-found");
}

/// A create that fails after systemd started the unit removes it again, and the error names
/// the field; a bad slice is refused naming linux.cgroupsPath.
#[test]
#[ignore = "needs systemd as PID 1 (hack/systemd-vm.sh runs it)"]
fn failed_create_leaves_no_unit() {
    needs_systemd();
    let mut c = Container::shared("sd-fail");
    c.set("/linux/cgroupsPath", json!(format!(":capsa:{}", c.id)));
    c.set("/linux/resources/cpu", json!({"cpus": "99"}));
    c.args(&["sleep", "100"]);
    // runc 1.1 adds a warning line about a device it skips for systemd.
    let out = if is_capsa() { create_sd(&c).fails_cleanly() } else { create_sd(&c).code_is(1) };
    assert!(out.err_msg().contains("cpus"), "{out}");
    let unit = format!("capsa-{}.scope", c.id);
    assert_eq!(load_state(&unit, None), "not-found", "the failed create left the unit");
    assert!(!Path::new(&format!("/sys/fs/cgroup/system.slice/{unit}")).exists());
    c.assert_clean();

    let mut d = Container::shared("sd-badslice");
    d.set("/linux/cgroupsPath", json!(format!("a--b.slice:capsa:{}", d.id)));
    let out = create_sd(&d).fails_cleanly();
    if is_capsa() {
        assert!(out.err_msg().starts_with("linux.cgroupsPath \"a--b.slice:capsa:"), "{out}");
    }
    d.assert_clean();
}

/// Rootless: `--systemd-cgroup --rootless true` as an unprivileged user puts the container
/// in a scope of the user's own systemd manager, which delegates the cgroup to the user, so
/// the limits apply (without systemd a rootless container has no cgroup at all).
#[test]
#[ignore = "needs systemd as PID 1 (hack/systemd-vm.sh runs it)"]
fn rootless_container_under_the_user_manager() {
    needs_systemd();
    let uid: u32 = String::from_utf8_lossy(&Command::new("id").args(["-u", USER]).output().unwrap().stdout).trim().parse().unwrap();
    let dir = PathBuf::from(format!("/tmp/capsa-it-sd-rootless-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let bin = dir.join("runtime");
    std::fs::copy(runtime_bin(), &bin).unwrap();
    let mut cp = Command::new("cp");
    cp.args(["-a"]).arg(base_rootfs()).arg(bundle.join("rootfs"));
    run_host_cmd(cp, CMD_TIMEOUT).ok();
    let mut chown = Command::new("chown");
    chown.args(["-R", &format!("{uid}:{uid}")]).arg(&dir);
    run_host_cmd(chown, CMD_TIMEOUT).ok();
    let root = dir.join("root");
    let as_user = |args: &[&str]| {
        let mut c = Command::new("runuser");
        c.args(["-u", USER, "--", "env", "XDG_RUNTIME_DIR=/run/user/1000"]).arg(&bin).arg("--root").arg(&root).args(args);
        c.current_dir(&bundle);
        run_host_cmd(c, CMD_TIMEOUT)
    };
    as_user(&["spec", "--rootless"]).ok();
    let mut cfg: Value = serde_json::from_str(&read(bundle.join("config.json"))).unwrap();
    let id = format!("sdrl{}", std::process::id());
    set_ptr(&mut cfg, "/process/terminal", json!(false));
    // What the container sees at its cgroup mount, written where the host can read it.
    set_ptr(&mut cfg, "/process/args", json!(["sh", "-c", "cat /sys/fs/cgroup/memory.max >/seen; exec sleep 100"]));
    set_ptr(&mut cfg, "/root/readonly", json!(false));
    set_ptr(&mut cfg, "/linux/cgroupsPath", json!(format!(":capsa:{id}")));
    set_ptr(&mut cfg, "/linux/resources", json!({"memory": {"limit": 64 << 20}, "pids": {"limit": 20}}));
    std::fs::write(bundle.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    std::os::unix::fs::chown(bundle.join("config.json"), Some(uid), Some(uid)).unwrap();

    if !unified() {
        // A user's manager cannot delegate v1 hierarchies: refused cleanly, nothing left.
        let out = as_user(&["--systemd-cgroup", "--rootless", "true", "run", "-d", &id]).fails_cleanly();
        if is_capsa() {
            assert!(out.err_msg().contains("needs cgroup v2"), "{out}");
        }
        assert!(std::fs::read_dir(&root).map(|mut d| d.next().is_none()).unwrap_or(true), "state left in --root");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    as_user(&["--systemd-cgroup", "--rootless", "true", "run", "-d", &id]).ok();
    let st: Value = serde_json::from_str(&as_user(&["state", &id]).ok().stdout).unwrap();
    let pid = st["pid"].as_i64().unwrap() as i32;
    let unit = format!("capsa-{id}.scope");
    let cg = cgroup_of(pid);
    assert_eq!(cg, format!("/user.slice/user-{uid}.slice/user@{uid}.service/user.slice/{unit}"));
    let s = show(&unit, &["ActiveState", "MemoryMax", "TasksMax", "Delegate"], Some(USER));
    assert_eq!(s["ActiveState"], "active", "{s:?}");
    assert_eq!(s["MemoryMax"], "67108864");
    assert_eq!(s["TasksMax"], "20");
    assert_eq!(s["Delegate"], "yes");
    assert_eq!(read(format!("/sys/fs/cgroup{cg}/memory.max")).trim(), "67108864");
    assert_eq!(read(format!("/sys/fs/cgroup{cg}/pids.max")).trim(), "20");
    let meta = std::fs::metadata(format!("/sys/fs/cgroup{cg}")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid, "delegated to the user");
    let seen = poll(POLL_TIMEOUT, "the container's /seen", || Some(read(bundle.join("rootfs/seen"))).filter(|s| !s.is_empty()));
    assert_eq!(seen.trim(), "67108864");
    // exec: the user may not move a process into its manager's subtree from outside it;
    // systemd does. In the container's cgroup namespace it is at the root, "0::/". (runc 1.1,
    // Debian 12's, ignores the failed join and leaves the process where it was.)
    let out = as_user(&["exec", &id, "cat", "/proc/self/cgroup", "/sys/fs/cgroup/memory.max"]).ok();
    if is_capsa() {
        assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["0::/", "67108864"], "{out}");
    }

    as_user(&["delete", "--force", &id]).ok();
    wait_pid_dead(pid);
    assert_eq!(load_state(&unit, Some(USER)), "not-found");
    assert!(!Path::new(&format!("/sys/fs/cgroup{cg}")).exists());
    assert!(std::fs::read_dir(&root).map(|mut d| d.next().is_none()).unwrap_or(true), "state left in --root");
    let _ = std::fs::remove_dir_all(&dir);
}

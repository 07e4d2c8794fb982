//! The systemd driver against a real systemd, as root: hack/systemd-vm.sh runs these in a VM
//! whose PID 1 is systemd (`--ignored systemd_host_tests::`); elsewhere they are ignored.
//! What systemd holds is read back with `systemctl show`, what the kernel holds from
//! cgroupfs; every test ends with the unit gone and its directories removed.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::host_tests::{assert_gone, assert_placed, read, unique, Guard};
use crate::{detect, systemd_manager, systemd_manager_from_paths, Cpu, Memory, Mode, OomEvent, OomWatcher, Pids, Resources, SystemdBus};

/// The host's mode; the test fails unless it runs as root under systemd.
fn sd_host() -> Mode {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    assert!(Path::new("/run/systemd/system").is_dir(), "needs systemd as PID 1 (hack/systemd-vm.sh)");
    detect().expect("cgroups")
}

/// `systemctl show -p P... UNIT` as a map.
fn show(unit: &str, props: &[&str]) -> BTreeMap<String, String> {
    let mut c = Command::new("systemctl");
    c.arg("show");
    for p in props {
        c.arg("-p").arg(p);
    }
    let out = c.arg(unit).output().expect("systemctl");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn load_state(unit: &str) -> String {
    show(unit, &["LoadState"]).get("LoadState").cloned().unwrap_or_default()
}

/// The unit's cgroup2 (v2) or memory (v1) directory.
fn mem_dir(paths: &BTreeMap<String, std::path::PathBuf>, mode: Mode) -> std::path::PathBuf {
    if mode == Mode::Unified {
        paths[""].clone()
    } else {
        paths["memory"].clone()
    }
}

#[test]
#[ignore = "needs systemd as PID 1 (hack/systemd-vm.sh runs it)"]
fn scope_limits_update_freeze_stop() {
    let mode = sd_host();
    let v2 = mode == Mode::Unified;
    let id = unique("sd");
    let m = systemd_manager(mode, Some(&format!("capsa-test.slice:capsa:{id}")), &id, SystemdBus::System).expect("manager");
    let unit = m.systemd_unit().map(str::to_string).unwrap_or_default();
    assert_eq!(unit, format!("capsa-{id}.scope"));
    let mut g = Guard::new(m);
    let paths = g.mgr.paths();
    let cg = format!("/capsa.slice/capsa-test.slice/{unit}");
    for (k, p) in &paths {
        assert!(p.to_string_lossy().ends_with(&cg), "{k}: {}", p.display());
    }
    g.mgr.create().expect("create");
    let r = Resources {
        memory: Memory { limit: Some(64 << 20), reservation: Some(32 << 20), ..Default::default() },
        pids: Pids { limit: Some(10) },
        cpu: Cpu { shares: Some(1024), quota: Some(50_000), period: Some(100_000), cpus: Some("0".into()), ..Default::default() },
        devices: vec![
            crate::DeviceRule { allow: false, kind: 'a', major: None, minor: None, access: "rwm".into() },
            crate::DeviceRule { allow: true, kind: 'c', major: Some(1), minor: Some(3), access: "rwm".into() },
        ],
        ..Default::default()
    };
    g.mgr.apply(&r).expect("apply before the unit exists");
    assert_eq!(load_state(&unit), "not-found", "no unit before a process");
    assert!(!g.mgr.exists());

    let pid = g.sleeper();
    assert_placed(pid, &paths);
    let s =
        show(&unit, &["ActiveState", "Slice", "Delegate", "ControlGroup", "TasksMax", "CPUQuotaPerSecUSec", "DevicePolicy", "DeviceAllow"]);
    assert_eq!(s["ActiveState"], "active", "{s:?}");
    assert_eq!(s["Slice"], "capsa-test.slice");
    assert_eq!(s["Delegate"], "yes");
    assert_eq!(s["ControlGroup"], cg);
    assert_eq!(s["TasksMax"], "10");
    assert_eq!(s["CPUQuotaPerSecUSec"], "500ms");
    assert_eq!(s["DevicePolicy"], "strict");
    assert!(s["DeviceAllow"].contains("/dev/char/1:3 rwm"), "{s:?}");
    let mem = mem_dir(&paths, mode);
    if v2 {
        let s = show(&unit, &["MemoryMax", "MemoryLow", "CPUWeight", "AllowedCPUs"]);
        assert_eq!(s["MemoryMax"], "67108864");
        assert_eq!(s["MemoryLow"], "33554432");
        assert_eq!(s["CPUWeight"], "39");
        assert_eq!(s["AllowedCPUs"], "0");
        assert_eq!(read(&mem.join("memory.max")), "67108864");
        assert_eq!(read(&mem.join("memory.low")), "33554432");
        assert_eq!(read(&mem.join("pids.max")), "10");
        assert_eq!(read(&mem.join("cpu.max")), "50000 100000");
        assert_eq!(read(&mem.join("cpu.weight")), "39");
        assert_eq!(read(&mem.join("cpuset.cpus")), "0");
    } else {
        let s = show(&unit, &["MemoryLimit", "CPUShares"]);
        assert_eq!(s["MemoryLimit"], "67108864");
        assert_eq!(s["CPUShares"], "1024");
        assert_eq!(read(&mem.join("memory.limit_in_bytes")), "67108864");
        assert_eq!(read(&paths["cpu"].join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(&paths["cpuset"].join("cpuset.cpus")), "0");
        assert_eq!(read(&paths["pids"].join("pids.max")), "10");
    }

    // update: properties and files; a quota off systemd's 10 ms steps is rounded up in both.
    let up = Resources {
        memory: Memory { limit: Some(128 << 20), ..Default::default() },
        pids: Pids { limit: Some(20) },
        cpu: Cpu { quota: Some(12_345), ..Default::default() },
        ..Default::default()
    };
    g.mgr.apply(&up).expect("update");
    let s = show(&unit, &["TasksMax", "CPUQuotaPerSecUSec", if v2 { "MemoryMax" } else { "MemoryLimit" }]);
    assert_eq!(s["TasksMax"], "20");
    assert_eq!(s["CPUQuotaPerSecUSec"], "130ms");
    assert_eq!(s[if v2 { "MemoryMax" } else { "MemoryLimit" }], "134217728");
    if v2 {
        assert_eq!(read(&mem.join("cpu.max")), "13000 100000");
        assert_eq!(read(&mem.join("memory.max")), "134217728");
    } else {
        assert_eq!(read(&paths["cpu"].join("cpu.cfs_quota_us")), "13000");
    }

    g.mgr.freeze().expect("freeze");
    assert!(g.mgr.is_frozen().expect("is_frozen"));
    g.mgr.thaw().expect("thaw");
    assert!(!g.mgr.is_frozen().expect("is_frozen"));

    // destroy with the process alive: systemd stops the unit (SIGTERM) and we wait for it.
    g.mgr.destroy().expect("destroy");
    assert_eq!(g.wait_signal(pid), Some(libc::SIGTERM));
    assert_eq!(load_state(&unit), "not-found");
    drop(g);
    assert_gone(&paths);
}

#[test]
#[ignore = "needs systemd as PID 1 (hack/systemd-vm.sh runs it)"]
fn nested_slice_and_a_manager_rebuilt_from_paths() {
    let mode = sd_host();
    let id = unique("nest");
    let m = systemd_manager(mode, Some(&format!("capsa-a-b.slice:t:{id}")), &id, SystemdBus::System).expect("manager");
    let unit = format!("t-{id}.scope");
    let mut g = Guard::new(m);
    let paths = g.mgr.paths();
    g.mgr.create().expect("create");
    let pid = g.sleeper();
    assert_placed(pid, &paths);
    let cg = format!("/capsa.slice/capsa-a.slice/capsa-a-b.slice/{unit}");
    assert_eq!(show(&unit, &["ControlGroup"])["ControlGroup"], cg);
    for p in paths.values() {
        assert!(p.to_string_lossy().ends_with(&cg), "{}", p.display());
    }
    assert_eq!(show("capsa-a-b.slice", &["ActiveState"])["ActiveState"], "active", "systemd made the nested slices");

    // Another process (`capsa update`, `capsa delete`) rebuilds it from the recorded paths.
    let again = systemd_manager_from_paths(&unit, SystemdBus::System, paths.values()).expect("from paths");
    assert_eq!(again.paths(), paths);
    again.apply(&Resources { pids: Pids { limit: Some(7) }, ..Default::default() }).expect("update");
    assert_eq!(show(&unit, &["TasksMax"])["TasksMax"], "7");
    let pids_dir = if mode == Mode::Unified { &paths[""] } else { &paths["pids"] };
    assert_eq!(read(&pids_dir.join("pids.max")), "7");
    again.destroy().expect("destroy");
    assert_eq!(g.wait_signal(pid), Some(libc::SIGTERM));
    assert_eq!(load_state(&unit), "not-found");
    assert_gone(&paths);
    drop(g);
    let _ = Command::new("systemctl").args(["stop", "capsa-a.slice"]).status();
}

#[test]
#[ignore = "needs systemd as PID 1 (hack/systemd-vm.sh runs it)"]
fn failed_start_removes_the_unit_and_a_taken_name_is_left_alone() {
    let mode = sd_host();
    let id = unique("fail");
    let path = format!("capsa-test.slice:capsa:{id}");
    let unit = format!("capsa-{id}.scope");

    // A limit cgroupfs refuses after the unit started: the unit is stopped again.
    let m = systemd_manager(mode, Some(&path), &id, SystemdBus::System).expect("manager");
    let mut g = Guard::new(m);
    let paths = g.mgr.paths();
    g.mgr.create().expect("create");
    let bad = Resources { unified: [("cpu.idle".to_string(), "7".to_string())].into(), ..Default::default() };
    g.mgr.apply(&bad).expect("recorded");
    let child = Command::new("sleep").arg("30").spawn().expect("spawn");
    let pid = child.id() as i32;
    g.children.push(child);
    let e = g.mgr.add_task(pid).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.starts_with("linux.resources.unified = {\"cpu.idle\": \"7\"}: "), "{e}");
    assert_eq!(load_state(&unit), "not-found", "the failed create left the unit");
    assert_gone(&paths);
    assert_eq!(g.wait_signal(pid), Some(libc::SIGKILL));
    drop(g);

    // A unit of that name already runs: the error names it and systemd's reply, and the
    // failed manager's cleanup (kill_all, destroy) leaves the other one alone.
    let mut first = Guard::new(systemd_manager(mode, Some(&path), &id, SystemdBus::System).expect("manager"));
    first.mgr.create().expect("create");
    let alive = first.sleeper();
    let second = systemd_manager(mode, Some(&path), &id, SystemdBus::System).expect("manager");
    second.create().expect("create");
    let mut other = Command::new("sleep").arg("30").spawn().expect("spawn");
    let e = second.add_task(other.id() as i32).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        e,
        format!("systemd unit {unit}: StartTransientUnit: org.freedesktop.systemd1.UnitExists: Unit {unit} was already loaded or has a fragment file.")
    );
    second.kill_all(libc::SIGKILL).expect("kill_all of the failed one");
    second.destroy().expect("destroy of the failed one");
    assert_eq!(show(&unit, &["ActiveState"])["ActiveState"], "active");
    assert!(Path::new(&format!("/proc/{alive}")).exists());
    let _ = other.kill();
    let _ = other.wait();
    first.mgr.destroy().expect("destroy");
    assert_eq!(first.wait_signal(alive), Some(libc::SIGTERM));
    assert_eq!(load_state(&unit), "not-found");
}

/// An OOM kill in the scope is reported; the unit (Delegate=yes: OOMPolicy=continue) and
/// the container's other processes stay.
#[test]
#[ignore = "needs systemd as PID 1 (hack/systemd-vm.sh runs it)"]
fn oom_kill_is_reported_and_the_unit_stays() {
    let mode = sd_host();
    let id = unique("oom");
    let m = systemd_manager(mode, Some(&format!("capsa-test.slice:capsa:{id}")), &id, SystemdBus::System).expect("manager");
    let unit = format!("capsa-{id}.scope");
    let mut g = Guard::new(m);
    let paths = g.mgr.paths();
    g.mgr.create().expect("create");
    g.mgr
        .apply(&Resources { memory: Memory { limit: Some(16 << 20), swap: Some(16 << 20), ..Default::default() }, ..Default::default() })
        .expect("limit");
    let keeper = g.sleeper();
    let mut w = OomWatcher::new(&paths).expect("watcher");
    let mut hog = Command::new("sh")
        .args(["-c", "kill -STOP $$; exec dd if=/dev/zero of=/dev/null bs=64M count=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = hog.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    while read(Path::new(&format!("/proc/{pid}/stat"))).split(") ").nth(1).map(|s| s.starts_with('T')) != Some(true) {
        assert!(Instant::now() < deadline, "child did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    g.mgr.add_task(pid).expect("add_task");
    // SAFETY: signals our own child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(hog.wait().expect("wait").signal(), Some(libc::SIGKILL));
    let ev = w.wait(Some(Duration::from_secs(5))).expect("wait");
    assert!(matches!(ev, OomEvent::Oom(n) if n >= 1), "{ev:?}");
    assert!(crate::oom_kill_count(&mem_dir(&paths, mode)).expect("count") >= 1);
    assert_eq!(show(&unit, &["ActiveState"])["ActiveState"], "active");
    assert!(Path::new(&format!("/proc/{keeper}")).exists());
    g.mgr.destroy().expect("destroy");
    assert_eq!(g.wait_signal(keeper), Some(libc::SIGTERM));
    assert_eq!(load_state(&unit), "not-found");
    drop(g);
    assert_gone(&paths);
}

/// Both ways to reach the system manager answer: its private socket and the bus daemon.
#[test]
#[ignore = "needs systemd as PID 1 (hack/systemd-vm.sh runs it)"]
fn private_socket_and_bus_daemon_both_answer() {
    sd_host();
    use crate::systemd::bus_version;
    let direct = bus_version(Path::new("/run/systemd/private"), false).expect("private socket");
    let daemon = bus_version(Path::new("/run/dbus/system_bus_socket"), true).expect("bus daemon");
    assert!(!direct.is_empty());
    assert_eq!(direct, daemon);
}

//! Namespaces: new ones of every type, user namespace mappings, joining existing ones by path.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::path::Path;

/// `readlink /proc/self/ns/*` printed by the container as "name link" lines.
const PRINT_NS: &str = "for n in cgroup ipc mnt net pid time user uts; do \
                        [ -e /proc/self/ns/$n ] && echo \"$n $(readlink /proc/self/ns/$n)\"; done";

fn ns_map(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines().filter_map(|l| l.split_once(' ')).map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn pid_namespace() {
    let mut c = Container::shared("ns-pid");
    c.sh("echo $$; grep NSpid /proc/$$/status; ls /proc | grep -E '^[0-9]+$' | wc -l");
    let out = c.run(&[]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "1", "the container's init must be pid 1: {out}");
    // Inside, only one level of the pid hierarchy is visible.
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["NSpid:", "1"], "{out}");
    // sh, grep and ls/wc pipeline: a handful of processes, none of the host's hundreds.
    let n: u32 = lines[2].trim().parse().expect("count");
    assert!(n <= 5, "container sees {n} pids: {out}");
}

/// The host sees the init at some host pid, with pid 1 as its innermost NSpid.
#[test]
fn pid_namespace_host_view() {
    let mut c = Container::shared("ns-pid-host");
    c.args(&["sleep", "100"]);
    c.create_start();
    let pid = c.pid();
    let status = read(format!("/proc/{pid}/status"));
    let nspid = status_field(&status, "NSpid").expect("NSpid");
    let v: Vec<&str> = nspid.split_whitespace().collect();
    assert_eq!(v.len(), 2, "NSpid {nspid}");
    assert_eq!(v[0], pid.to_string());
    assert_eq!(v[1], "1");
}

#[test]
fn uts_namespace_hostname_domainname() {
    let mut c = Container::shared("ns-uts");
    c.set("/hostname", json!("capsa-test-host"));
    c.set("/domainname", json!("capsa.example"));
    c.sh("hostname; cat /proc/sys/kernel/domainname");
    let out = c.run(&[]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "capsa-test-host", "{out}");
    // runc 1.1 ignores `domainname` (support came in runc 1.2; the container keeps "(none)").
    // The spec says it MUST be set, so capsa does.
    if is_capsa() {
        assert_eq!(lines[1], "capsa.example", "{out}");
    }
    let host = nix::unistd::gethostname().expect("gethostname");
    assert_ne!(host.to_string_lossy(), "capsa-test-host", "the host's hostname changed");
}

/// Every configured namespace is new (its inode differs from the host's); unconfigured ones are
/// shared with the host. Also checks the mount namespace hides the container's mounts from the
/// host.
#[test]
fn namespaces_differ_from_host() {
    let mut c = Container::shared("ns-all");
    c.namespace("cgroup", None);
    c.sh(PRINT_NS);
    let out = c.run(&[]).ok();
    let inside = ns_map(&out.stdout);
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "uts"] {
        let host = ns_link("self", ns);
        let ins = inside.get(ns).unwrap_or_else(|| panic!("no {ns} in {out}"));
        assert!(ins.starts_with(&format!("{ns}:[")), "{ns}: {ins}");
        assert_ne!(ins, &host, "{ns} namespace must be new");
    }
    // No user namespace configured: shared with the host.
    assert_eq!(inside["user"], ns_link("self", "user"));

    // Without a network namespace, the container shares the host's.
    let mut d = Container::shared("ns-no-net");
    d.no_namespace("network");
    d.sh(PRINT_NS);
    let out = d.run(&[]).ok();
    assert_eq!(ns_map(&out.stdout)["net"], ns_link("self", "net"));
}

#[test]
fn net_namespace_only_lo() {
    let mut c = Container::shared("ns-net");
    c.sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; echo --; ls /sys/class/net");
    let out = c.run(&[]).ok();
    assert_eq!(out.stdout, "lo\n--\nlo\n", "{out}");
}

#[test]
fn ipc_namespace_is_private() {
    // A SysV message queue made on the host must not be visible inside.
    let mut c = Container::shared("ns-ipc");
    c.sh("cat /proc/sysvipc/msg | wc -l; readlink /proc/self/ns/ipc");
    // SAFETY: msgget/msgctl on a private key; the queue is removed right after the run.
    let q = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
    assert!(q >= 0, "msgget: {}", std::io::Error::last_os_error());
    let out = c.run(&[]);
    // SAFETY: removing the queue created above.
    unsafe { libc::msgctl(q, libc::IPC_RMID, std::ptr::null_mut()) };
    let out = out.ok();
    let mut l = out.stdout.lines();
    assert_eq!(l.next(), Some("1"), "only the header line of /proc/sysvipc/msg: {out}");
    assert_ne!(l.next().unwrap_or(""), ns_link("self", "ipc"));
}

#[test]
fn mount_namespace_hides_container_mounts() {
    let mut c = Container::shared("ns-mnt");
    c.args(&["sleep", "100"]);
    c.create_start();
    let pid = c.pid();
    let inside = read(format!("/proc/{pid}/mountinfo"));
    let points = mountinfo_points(&inside);
    assert!(points.iter().any(|p| p == "/proc"), "container has /proc: {inside}");
    assert!(points.iter().any(|p| p == "/dev/pts"), "container has /dev/pts: {inside}");
    let rootfs = c.rootfs.to_string_lossy().to_string();
    let host = host_mount_points();
    assert!(!host.iter().any(|p| p.starts_with(&rootfs)), "container mounts leaked to the host: {host:?}");
    assert_ne!(ns_link(&pid.to_string(), "mnt"), ns_link("self", "mnt"));
}

#[test]
fn cgroup_namespace() {
    let mut c = Container::shared("ns-cgroup");
    c.namespace("cgroup", None);
    c.sh("cat /proc/self/cgroup");
    let out = c.run(&[]).ok();
    // In its own cgroup namespace the container's cgroups are the roots.
    for l in out.stdout.lines() {
        assert!(l.ends_with(":/"), "cgroup path not / in a cgroup namespace: {l}\n{out}");
        assert!(!l.contains(&c.id));
    }
    assert!(!out.stdout.is_empty());

    // Without one, the container sees its cgroup path (named after the id).
    let mut d = Container::shared("ns-no-cgroup");
    d.no_namespace("cgroup");
    d.sh("cat /proc/self/cgroup");
    let out = d.run(&[]).ok();
    assert!(out.stdout.contains(&d.id), "{out}");
}

/// Time namespace with offsets: /proc/uptime (boottime) inside is a day ahead of the host's.
#[test]
fn time_namespace() {
    // Linux 5.6+; every kernel this suite runs on has it (a missing one is a failure, not a skip).
    assert!(Path::new("/proc/self/ns/time").exists(), "this kernel has no time namespace (Linux 5.6+)");
    // runc 1.1 does not know the time namespace ("namespace {"time" ""} does not exist"; support
    // came in runc 1.2). capsa implements it, so this only runs against capsa.
    if !is_capsa() {
        eprintln!("skipped: runc 1.1 has no time namespace support");
        return;
    }
    let mut c = Container::shared("ns-time");
    c.namespace("time", None);
    c.set(
        "/linux/timeOffsets",
        json!({"boottime": {"secs": 86400, "nanosecs": 0},
                                       "monotonic": {"secs": 86400, "nanosecs": 0}}),
    );
    c.sh("cut -d' ' -f1 /proc/uptime; readlink /proc/self/ns/time");
    let out = c.run(&[]).ok();
    let mut l = out.stdout.lines();
    let inside: f64 = l.next().and_then(|s| s.parse().ok()).expect("uptime");
    let host: f64 = read("/proc/uptime").split(' ').next().and_then(|s| s.parse().ok()).expect("host uptime");
    assert!(inside >= host + 86000.0, "uptime inside {inside}, host {host}");
    assert_ne!(l.next().unwrap_or(""), ns_link("self", "time"));
}

#[test]
fn user_namespace_mappings() {
    let mut c = Container::shared("ns-user");
    c.namespace("user", None);
    c.set("/linux/uidMappings", json!([{"containerID": 0, "hostID": 100000, "size": 65536}]));
    c.set("/linux/gidMappings", json!([{"containerID": 0, "hostID": 200000, "size": 65536}]));
    c.sh("id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; echo ready; exec sleep 100");
    let out = c.create_start();
    let text = wait_file_contains(&out.stdout_path, "ready");
    let lines: Vec<String> = text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(lines[0], "0", "uid inside: {text}");
    assert_eq!(lines[1], "0", "gid inside: {text}");
    assert_eq!(lines[2], "0 100000 65536", "uid_map: {text}");
    assert_eq!(lines[3], "0 200000 65536", "gid_map: {text}");

    // The host sees the mapped ids.
    let pid = c.pid();
    poll(POLL_TIMEOUT, "sleep exec'd", || (proc_cmdline(pid) == "sleep 100").then_some(()));
    let status = read(format!("/proc/{pid}/status"));
    assert_eq!(status_field(&status, "Uid").unwrap().split_whitespace().next(), Some("100000"));
    assert_eq!(status_field(&status, "Gid").unwrap().split_whitespace().next(), Some("200000"));
    assert_ne!(ns_link(&pid.to_string(), "user"), ns_link("self", "user"));
}

/// A second container joins the first one's network and UTS namespaces by path.
#[test]
fn join_existing_namespaces_by_path() {
    let mut a = Container::shared("ns-join-a");
    a.set("/hostname", json!("ns-join-a"));
    a.args(&["sleep", "100"]);
    a.create_start();
    let apid = a.pid().to_string();

    let mut b = Container::shared("ns-join-b");
    b.namespace("network", Some(&format!("/proc/{apid}/ns/net")));
    b.namespace("uts", Some(&format!("/proc/{apid}/ns/uts")));
    // Setting a hostname would change a's; leave it to a.
    remove_ptr(&mut b.config, "/hostname");
    b.sh(&format!("{PRINT_NS}; hostname"));
    let out = b.run(&[]).ok();
    let inside = ns_map(&out.stdout);
    assert_eq!(inside["net"], ns_link(&apid, "net"));
    assert_eq!(inside["uts"], ns_link(&apid, "uts"));
    // The other namespaces are b's own.
    assert_ne!(inside["ipc"], ns_link(&apid, "ipc"));
    assert_ne!(inside["mnt"], ns_link(&apid, "mnt"));
    assert_ne!(inside["pid"], ns_link(&apid, "pid"));
    assert_eq!(out.stdout.lines().last(), Some("ns-join-a"));
    drop(b);
    // a is untouched by b's exit.
    assert_eq!(a.status(), "running");
}

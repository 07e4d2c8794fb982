//! podman (the Debian package, with conmon) driving the runtime with `--runtime`, as podman
//! users run capsa: podman's stock seccomp profile, exit codes, `exec` into a detached
//! container, `rm -f`. Each scenario runs on runc (the reference) and on the runtime under test.
//!
//! Every test has its own podman setup ([`Podman`], src/podman.rs): private storage and
//! config, no network, cgroupfs, and a leftover check on drop.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::path::PathBuf;

const RUNC: &str = "/usr/sbin/runc";

fn runtimes() -> [PathBuf; 2] {
    [PathBuf::from(RUNC), runtime_bin().to_path_buf()]
}

/// podman's stock seccomp profile (/usr/share/containers/seccomp.json, which names `syscall`
/// and `timerfd`, known to no kernel) loads; output and exit codes come through conmon.
#[test]
fn podman_run_with_stock_seccomp_profile() {
    let p = Podman::new();
    for rt in runtimes() {
        let out = p.run(&rt, &["--rm"], &["sh", "-c", "echo hello; grep -E '^Seccomp:' /proc/self/status; id -u"]).run().ok();
        let l: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(l.first(), Some(&"hello"), "{}: {out}", rt.display());
        assert_eq!(l.get(1).map(|s| s.split_whitespace().collect::<Vec<_>>()), Some(vec!["Seccomp:", "2"]), "{}: {out}", rt.display());
        assert_eq!(l.get(2), Some(&"0"), "{out}");
        let out = p.run(&rt, &["--rm"], &["sh", "-c", "exit 3"]).run();
        assert_eq!(out.code, Some(3), "{}: exit code: {out}", rt.display());
    }
}

/// A detached container, `exec` into it (podman passes `exec --process FILE --detach` style
/// arguments through conmon), `stop` and `rm`.
#[test]
fn podman_detached_exec_stop_rm() {
    let p = Podman::new();
    for rt in runtimes() {
        let out = p.run(&rt, &["-d"], &["sleep", "100"]).run().ok();
        let id = out.stdout.trim().to_string();
        p.remember(&id);
        let out = p.cmd(&rt).args(["exec", &id, "sh", "-c", "echo in-$((6*7)); cat /proc/1/cmdline | tr '\\0' ' '"]).run().ok();
        assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["in-42", "sleep 100 "], "{}: {out}", rt.display());
        let out = p.cmd(&rt).args(["exec", &id, "sh", "-c", "exit 5"]).run();
        assert_eq!(out.code, Some(5), "{}: {out}", rt.display());
        let st = p.cmd(&rt).args(["inspect", "--format", "{{.State.Status}}", &id]).run().ok();
        assert_eq!(st.stdout.trim(), "running", "{st}");
        p.cmd(&rt).args(["stop", "-t", "0", &id]).run().ok();
        p.cmd(&rt).args(["rm", &id]).run().ok();
        // conmon's exit command (`podman container cleanup`, whose argv names the id) may
        // still be ending after stop and rm have returned.
        wait_until(POLL_TIMEOUT, || processes_for(&id).is_empty());
        assert!(processes_for(&id).is_empty(), "{}: {:?}", rt.display(), processes_for(&id));
        assert!(cgroup_dirs_for(&id).is_empty(), "{}: {:?}", rt.display(), cgroup_dirs_for(&id));
    }
}

//! OCI hooks: order, the state on stdin, the namespace each runs in, env, failures, timeouts.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::time::{Duration, Instant};

/// A hook running /bin/sh (busybox on the host and in the container alike) that appends
/// "NAME <mnt ns> <HOOKVAR> <stdin>" to `log`.
fn hook(name: &str, log: &str) -> Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("echo \"{name} $(readlink /proc/self/ns/mnt) $HOOKVAR $(cat)\" >> {log}")],
        "env": ["HOOKVAR=hookvar-set"]
    })
}

#[test]
fn hooks_order_state_and_namespaces() {
    let mut c = Container::new("hooks");
    let logdir = c.host_dir("hooklog");
    let host_log = logdir.join("log");
    let host_log = host_log.to_str().unwrap();
    // startContainer runs inside the container (after pivot_root): it logs through a bind mount.
    c.add_mount(json!({"destination": "/hooklog", "type": "bind", "source": logdir.to_str(),
                       "options": ["rbind", "rw"]}));
    c.set(
        "/hooks",
        json!({
            "prestart": [hook("prestart", host_log)],
            "createRuntime": [hook("createRuntime", host_log)],
            "createContainer": [hook("createContainer", host_log)],
            "startContainer": [hook("startContainer", "/hooklog/log")],
            "poststart": [hook("poststart", host_log)],
            "poststop": [hook("poststop", host_log)],
        }),
    );
    c.sh("echo main >> /hooklog/log");
    c.run(&[]).ok();
    let log = read(logdir.join("log"));
    let names: Vec<&str> = log.lines().map(|l| l.split(' ').next().unwrap()).collect();
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap_or_else(|| panic!("{n} did not run: {log}"));
    assert_eq!(names.len(), 7, "each hook once, plus main: {log}");
    assert!(at("prestart") < at("createRuntime"), "{log}");
    assert!(at("createRuntime") < at("createContainer"), "{log}");
    assert!(at("createContainer") < at("startContainer"), "{log}");
    assert!(at("startContainer") < at("main"), "startContainer runs before the user process: {log}");
    assert_eq!(names.last(), Some(&"poststop"), "{log}");
    // runc 1.1 runs poststart hooks during *create* (state "created", before the user process and
    // before startContainer). The spec says poststart runs after the user process was started, as
    // part of `start`; capsa follows the spec.
    if is_capsa() {
        assert!(at("startContainer") < at("poststart"), "poststart after the process started: {log}");
    }

    let host_mnt = ns_link("self", "mnt");
    for l in log.lines().filter(|l| !l.starts_with("main")) {
        let mut it = l.splitn(4, ' ');
        let (name, mnt, var, state) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        assert_eq!(var, "hookvar-set", "{name}: hook env not applied: {l}");
        let st: Value = serde_json::from_str(state.trim()).unwrap_or_else(|e| panic!("{name}: stdin not JSON ({e}): {l}"));
        assert_eq!(st["id"], c.id.as_str(), "{l}");
        assert_eq!(st["bundle"], c.bundle.to_str().unwrap(), "{l}");
        assert!(st["ociVersion"].is_string() && st["status"].is_string(), "{l}");
        match name {
            // Runtime-namespace hooks.
            "prestart" | "createRuntime" | "poststart" | "poststop" => {
                assert_eq!(mnt, host_mnt, "{name} must run in the runtime's mount namespace")
            }
            // Container-namespace hooks.
            _ => assert_ne!(mnt, host_mnt, "{name} must run in the container's mount namespace"),
        }
        if name == "poststop" {
            assert_eq!(st["status"], "stopped", "{l}");
        }
        if matches!(name, "prestart" | "createRuntime" | "createContainer") {
            // The spec's lifecycle runs these after the environment is created (step 2), and
            // its state table calls that "created"; runc 1.1 says "creating".
            assert_eq!(st["status"], if is_capsa() { "created" } else { "creating" }, "{l}");
        }
        if matches!(name, "prestart" | "createRuntime") {
            assert!(st["pid"].as_i64().is_some_and(|p| p > 1), "{name}: the host pid of the init: {l}");
        }
    }
}

/// A failing prestart/createRuntime hook fails create cleanly and rolls everything back.
#[test]
fn failing_create_hooks_roll_back() {
    for kind in ["prestart", "createRuntime", "createContainer"] {
        let mut c = Container::shared(&format!("hook-fail-{kind}"));
        c.args(&["sleep", "100"]);
        c.set(&format!("/hooks/{kind}"), json!([{"path": "/bin/sh", "args": ["sh", "-c", "echo hook-broke >&2; exit 3"]}]));
        c.write_config();
        c.create_cmd(&[]).run().fails_cleanly();
        c.assert_clean();
    }
}

/// A hook past its timeout is killed and create fails (promptly, not when the hook would end).
#[test]
fn hook_timeout() {
    let mut c = Container::shared("hook-timeout");
    c.args(&["sleep", "100"]);
    // A sleep no other test (or parallel suite) runs, so the check below sees only ours.
    let sleep = format!("sleep 30.{}{}", std::process::id(), c.id.len());
    c.set("/hooks/prestart", json!([{"path": "/bin/sh", "args": ["sh", "-c", format!("exec {sleep}")], "timeout": 1}]));
    c.write_config();
    let t = Instant::now();
    let out = c.create_cmd(&[]).run().fails_cleanly();
    assert!(t.elapsed() < Duration::from_secs(15), "timeout not enforced (the hook sleeps 30 s): {:?}\n{out}", t.elapsed());
    // runc: "hook ran past specified timeout of 1.0s"
    assert!(out.stderr.contains("timeout"), "{out}");
    c.assert_clean();
    assert!(processes_for(&sleep).is_empty(), "the timed-out hook was not killed");
}

/// poststart and poststop failures: per the spec the runtime MUST only log a warning and carry
/// on.
#[test]
fn failing_poststart_and_poststop_only_warn() {
    // poststop: runc follows the spec (run exits with the container's code).
    let mut c = Container::shared("hook-poststop-fail");
    c.sh("exit 0");
    c.set("/hooks/poststop", json!([{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]));
    c.run(&[]).ok();
    c.assert_clean();

    // poststart: runc 1.1 fails `start` (exit 1) and destroys the container. The spec says a
    // failing poststart hook MUST only produce a warning (crun does so), and capsa follows the spec
    // (DESIGN: the spec's MUSTs win for what happens to the container).
    let mut d = Container::shared("hook-poststart-fail");
    d.args(&["sleep", "100"]);
    d.set("/hooks/poststart", json!([{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]));
    d.write_config();
    if is_capsa() {
        d.create(&[]).ok();
        let out = d.start().ok();
        assert!(!out.stderr.trim().is_empty(), "a warning is expected on stderr: {out}");
        assert_eq!(d.status(), "running");
    } else {
        // runc runs poststart during create: create fails and rolls back.
        d.create_cmd(&[]).run().fails_cleanly();
        d.assert_clean();
    }
}

/// createContainer hooks run with the container's rootfs as their working directory (runc
/// chdirs there before running them).
#[test]
fn create_container_hooks_run_in_the_rootfs() {
    let mut c = Container::new("hook-cwd");
    let logdir = c.host_dir("hooklog");
    let log = logdir.join("log");
    c.set(
        "/hooks/createContainer",
        json!([{"path": "/bin/sh", "args": ["sh", "-c", format!("pwd > {}; ls >> {}", log.display(), log.display())]}]),
    );
    c.args(&["true"]);
    c.run(&[]).ok();
    let text = read(&log);
    let rootfs = c.bundle.join("rootfs").canonicalize().unwrap();
    assert_eq!(text.lines().next(), Some(rootfs.to_str().unwrap()), "{text}");
    assert!(text.lines().any(|l| l == "bin"), "the rootfs's entries: {text}");
}

/// A failing poststart or poststop hook is a warning, and the hooks after it still run.
#[test]
fn remaining_hooks_run_after_a_failing_one() {
    let mut c = Container::shared("hook-remaining");
    let logdir = c.host_dir("hooklog");
    let log = logdir.join("log").display().to_string();
    let append = |what: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {what} >> {log}")]});
    let fail = json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 7"]});
    if !is_capsa() {
        // runc 1.1.5 stops at the first failing poststop hook, and fails on the first failing
        // poststart hook (during create).
        return;
    }
    c.set("/hooks/poststop", json!([fail.clone(), append("poststop-2")]));
    c.set("/hooks/poststart", json!([fail, append("poststart-2")]));
    c.args(&["true"]);
    let out = c.run(&[]).ok();
    let text = read(logdir.join("log"));
    assert!(text.contains("poststop-2"), "the poststop hook after the failing one ran: {text}\n{out}");
    assert!(text.contains("poststart-2"), "the poststart hook after the failing one ran: {text}\n{out}");
    let warnings: Vec<&str> = out.stderr.lines().filter(|l| l.contains("level=warning")).collect();
    assert_eq!(warnings.len(), 2, "one warning per failing hook: {out}");
    assert!(warnings.iter().all(|w| w.contains("error running hook") && w.contains("exit status 7")), "{out}");

    c.assert_clean();
}

/// A hook failure says `error running hook` and, for a hook killed by a signal, names the
/// signal as runc does (`signal: bad system call`): callers match on these words.
#[test]
fn hook_failure_names_the_signal() {
    let mut c = Container::shared("hook-signal");
    c.set("/hooks/prestart", json!([{"path": "/bin/sh", "args": ["sh", "-c", "kill -SYS $$"]}]));
    c.args(&["true"]);
    c.write_config();
    let out = c.create_cmd(&[]).run().fails_cleanly();
    let msg = out.err_msg();
    assert!(msg.contains("error running hook") && msg.contains("signal: bad system call"), "{out}");
    c.assert_clean();
}

/// poststart runs once the user's process has been executed: the pid in its state is
/// already the container's program, not the runtime's init.
#[test]
fn poststart_sees_the_user_process() {
    let mut c = Container::shared("hook-poststart-exe");
    let logdir = c.host_dir("hooklog");
    let log = logdir.join("log").display().to_string();
    let script = format!("pid=$(sed 's/.*\"pid\":\\([0-9]*\\).*/\\1/'); tr '\\0' ' ' < /proc/$pid/cmdline >> {log}");
    c.set("/hooks/poststart", json!([{"path": "/bin/sh", "args": ["sh", "-c", script]}]));
    c.args(&["sleep", "100"]);
    c.write_config();
    c.create(&[]).ok();
    c.start().ok();
    let text = read(logdir.join("log"));
    // runc 1.1 runs poststart during create, while the pid is still `runc init`.
    if is_capsa() {
        assert_eq!(text.trim(), "sleep 100", "poststart saw: {text:?}");
    }
}

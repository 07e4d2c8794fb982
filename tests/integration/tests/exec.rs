//! `exec`: a second process in a running container, as people run it and as containerd's shim
//! runs it (`exec --process FILE --detach --pid-file P`), plus `--preserve-fds` and `--pid-file`
//! of create.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::collections::BTreeSet;
use std::fs;

fn running(name: &str) -> Container {
    let mut c = Container::shared(name);
    c.set("/hostname", json!("exec-host"));
    c.args(&["sleep", "100"]);
    c.create_start();
    c
}

#[test]
#[ignore = "capsa exec is issue 6, not implemented yet"]
fn exec_joins_the_container() {
    let c = running("exec-join");
    let init = c.pid().to_string();
    let out = c
        .rt(["exec", &c.id, "sh", "-c",
             "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; for n in pid mnt net ipc uts; do readlink /proc/self/ns/$n; done"])
        .ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(l[0], "exec-host", "{out}");
    assert_eq!(l[1].trim(), "sleep 100", "{out}");
    for (i, ns) in ["pid", "mnt", "net", "ipc", "uts"].iter().enumerate() {
        assert_eq!(l[2 + i], ns_link(&init, ns), "{ns}: {out}");
    }
}

#[test]
#[ignore = "capsa exec is issue 6, not implemented yet"]
fn exec_exit_code_and_stdio() {
    let c = running("exec-exit");
    c.rt(["exec", &c.id, "sh", "-c", "exit 4"]).code_is(4);
    let out = c.rt(["exec", &c.id, "sh", "-c", "echo out; echo err >&2"]).ok();
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
}

/// Without overrides, exec takes the container's process settings (user, caps, env, cwd,
/// noNewPrivileges, rlimits).
#[test]
#[ignore = "capsa exec is issue 6, not implemented yet"]
fn exec_inherits_container_process_settings() {
    let mut c = Container::shared("exec-inherit");
    c.set("/process/cwd", json!("/home"));
    c.set("/process/env", json!(["PATH=/bin", "FROM_CONFIG=1"]));
    c.args(&["sleep", "100"]);
    c.create_start();
    let init = c.pid();
    poll(POLL_TIMEOUT, "init exec'd", || (proc_cmdline(init) == "sleep 100").then_some(()));
    let out = c
        .rt(["exec", &c.id, "sh", "-c", "pwd; echo $FROM_CONFIG; grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/$$/status; ulimit -n"])
        .ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(l[0], "/home", "{out}");
    assert_eq!(l[1], "1", "{out}");
    let host = read(format!("/proc/{init}/status"));
    for (i, k) in ["CapBnd", "CapEff", "NoNewPrivs"].iter().enumerate() {
        assert_eq!(l[2 + i].split_once(':').unwrap().1.trim(), status_field(&host, k).unwrap(), "{k}: {out}");
    }
    assert_eq!(l[5], "1024", "{out}");
}

/// runc's exec flags: --user, --env, --cwd, --cap.
#[test]
#[ignore = "capsa exec is issue 6, not implemented yet"]
fn exec_flags() {
    let c = running("exec-flags");
    let out = c
        .rt(["exec", "--user", "1000:10", "--env", "FOO=bar", "--cwd", "/tmp", &c.id,
             "sh", "-c", "id -u; id -g; echo $FOO; pwd"])
        .ok();
    assert_eq!(out.stdout, "1000\n10\nbar\n/tmp\n");
}

/// What containerd's shim does: exec --process FILE --detach --pid-file P; then the exec'd process
/// is visible in `ps` and is killed with the container.
#[test]
#[ignore = "capsa exec is issue 6, not implemented yet"]
fn exec_process_json_detach_pid_file() {
    let c = running("exec-detach");
    let proc_json = c.dir.join("process.json");
    fs::write(
        &proc_json,
        serde_json::to_string(&json!({
            "terminal": false, "user": {"uid": 1000, "gid": 1000}, "args": ["sleep", "99"],
            "env": ["PATH=/bin"], "cwd": "/", "noNewPrivileges": true
        }))
        .unwrap(),
    )
    .unwrap();
    let pid_file = c.dir.join("exec.pid");
    let out = c
        .rt(["exec", "--process", proc_json.to_str().unwrap(), "--detach", "--pid-file",
             pid_file.to_str().unwrap(), &c.id])
        .ok();
    assert_eq!(out.stdout, "", "{out}");
    let pid: i32 = read(&pid_file).trim().parse().expect("pid file holds a pid");
    assert!(pid_alive(pid));
    poll(POLL_TIMEOUT, "exec'd sleep", || (proc_cmdline(pid) == "sleep 99").then_some(()));
    let status = read(format!("/proc/{pid}/status"));
    assert_eq!(status_field(&status, "Uid").unwrap().split_whitespace().next(), Some("1000"));
    let ps = c.rt(["ps", "--format", "json", &c.id]).ok().json();
    let pids: BTreeSet<i64> = ps.as_array().unwrap().iter().filter_map(Value::as_i64).collect();
    assert!(pids.contains(&(pid as i64)) && pids.contains(&(c.pid() as i64)), "ps: {ps}");
    c.kill("KILL").ok();
    wait_pid_dead(pid);
}

/// CVE-2024-21626 through exec: the exec'd process holds only stdio and its cwd is inside.
#[test]
#[ignore = "capsa exec is issue 6, not implemented yet"]
fn exec_no_leaked_fds_and_cwd() {
    let c = running("exec-fds");
    let out = c.rt(["exec", &c.id, "ls", "/proc/self/fd"]).ok();
    let fds: BTreeSet<u32> = out.stdout.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert!(fds.is_subset(&[0, 1, 2, 3].into()), "exec'd process has extra fds: {fds:?}");
    for fd in 3..=10 {
        let cwd = format!("/proc/self/fd/{fd}");
        let out = c.rt(["exec", "--cwd", &cwd, &c.id, "sh", "-c",
                        "a=$(stat -c %d:%i /); cd ../../../../../../../..; b=$(stat -c %d:%i .); \
                         [ \"$a\" = \"$b\" ] && echo inside || echo ESCAPED"]);
        if out.success() {
            assert_eq!(out.stdout, "inside\n", "exec --cwd {cwd} escaped:\n{out}");
        } else {
            assert!(out.code.is_some(), "{out}");
        }
    }
    assert_eq!(c.status(), "running");
}

/// exec into a stopped container fails; runc's own exec failures exit 255 (the process' exit
/// code is passed through otherwise, so the runtime's errors must not look like one).
#[test]
#[ignore = "capsa exec is issue 6, not implemented yet"]
fn exec_into_stopped_container_fails() {
    let c = running("exec-stopped");
    c.kill("KILL").ok();
    c.wait_status("stopped");
    let out = c.rt(["exec", &c.id, "true"]);
    assert_eq!(out.code, Some(255), "{out}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
    let ghost = format!("{}-ghost", c.id);
    let out = c.rt(["exec", &ghost, "true"]);
    assert_ne!(out.code, Some(0), "{out}");
}

/// create --pid-file writes the init's host pid (runc: no trailing newline).
#[test]
fn create_pid_file() {
    let mut c = Container::shared("pid-file");
    c.args(&["sleep", "100"]);
    let pid_file = c.dir.join("init.pid");
    c.create(&["--pid-file", pid_file.to_str().unwrap()]).ok();
    let text = read(&pid_file);
    assert_eq!(text.trim().parse::<i32>().expect("pid"), c.pid(), "{text:?}");
    // A relative --pid-file is relative to the runtime's cwd (the bundle here).
    let mut d = Container::shared("pid-file-rel");
    d.args(&["sleep", "100"]);
    d.create(&["--pid-file", "rel.pid", "--no-new-keyring"]).ok();
    assert_eq!(read(d.bundle.join("rel.pid")).trim().parse::<i32>().expect("pid"), d.pid());
}

/// create --preserve-fds N passes fds 3..3+N to the container process.
#[test]
fn preserve_fds() {
    let mut c = Container::shared("preserve-fds");
    let data = c.dir.join("fd3.txt");
    fs::write(&data, "through-fd-3\n").unwrap();
    c.sh("cat <&3; ls /proc/self/fd");
    c.write_config();
    let out = c
        .run_cmd(&["--preserve-fds", "1"])
        .pass_fd(fs::File::open(&data).unwrap(), 3)
        .run()
        .ok();
    let mut l = out.stdout.lines();
    assert_eq!(l.next(), Some("through-fd-3"), "{out}");
    let fds: BTreeSet<u32> = l.flat_map(|x| x.split_whitespace()).map(|s| s.parse().unwrap()).collect();
    assert!(fds.contains(&3) && fds.is_subset(&[0, 1, 2, 3, 4].into()), "{fds:?}");

    // Without --preserve-fds the extra fd is not passed.
    let mut d = Container::shared("preserve-fds-none");
    d.sh("(cat <&3) 2>/dev/null || echo no-fd3");
    d.write_config();
    let out = d.run_cmd(&[]).pass_fd(fs::File::open(&data).unwrap(), 3).run().ok();
    assert_eq!(out.stdout, "no-fd3\n", "{out}");
}

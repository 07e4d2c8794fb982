//! `exec`: a second process in a running container, as people run it and as containerd's shim
//! runs it (`exec --process FILE --detach --pid-file P`), plus `--preserve-fds` and `--pid-file`
//! of create.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

fn running(name: &str) -> Container {
    let mut c = Container::shared(name);
    c.set("/hostname", json!("exec-host"));
    c.args(&["sleep", "100"]);
    c.create_start();
    c
}

#[test]
fn exec_joins_the_container() {
    let c = running("exec-join");
    let init = c.pid().to_string();
    let out = c
        .rt([
            "exec",
            &c.id,
            "sh",
            "-c",
            "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; for n in pid mnt net ipc uts; do readlink /proc/self/ns/$n; done",
        ])
        .ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(l[0], "exec-host", "{out}");
    assert_eq!(l[1].trim(), "sleep 100", "{out}");
    for (i, ns) in ["pid", "mnt", "net", "ipc", "uts"].iter().enumerate() {
        assert_eq!(l[2 + i], ns_link(&init, ns), "{ns}: {out}");
    }
}

#[test]
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
fn exec_inherits_container_process_settings() {
    let mut c = Container::shared("exec-inherit");
    c.set("/process/cwd", json!("/home"));
    c.set("/process/env", json!(["PATH=/bin", "FROM_CONFIG=1"]));
    c.args(&["sleep", "100"]);
    c.create_start();
    let init = c.pid();
    poll(POLL_TIMEOUT, "init exec'd", || (proc_cmdline(init) == "sleep 100").then_some(()));
    let out =
        c.rt(["exec", &c.id, "sh", "-c", "pwd; echo $FROM_CONFIG; grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/$$/status; ulimit -n"]).ok();
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
fn exec_flags() {
    let c = running("exec-flags");
    let out =
        c.rt(["exec", "--user", "1000:10", "--env", "FOO=bar", "--cwd", "/tmp", &c.id, "sh", "-c", "id -u; id -g; echo $FOO; pwd"]).ok();
    assert_eq!(out.stdout, "1000\n10\nbar\n/tmp\n");
}

/// What containerd's shim does: exec --process FILE --detach --pid-file P; then the exec'd process
/// is visible in `ps` and is killed with the container.
#[test]
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
    let out = c.rt(["exec", "--process", proc_json.to_str().unwrap(), "--detach", "--pid-file", pid_file.to_str().unwrap(), &c.id]).ok();
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
fn exec_no_leaked_fds_and_cwd() {
    let c = running("exec-fds");
    let out = c.rt(["exec", &c.id, "ls", "/proc/self/fd"]).ok();
    let fds: BTreeSet<u32> = out.stdout.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert!(fds.is_subset(&[0, 1, 2, 3].into()), "exec'd process has extra fds: {fds:?}");
    for fd in 3..=10 {
        let cwd = format!("/proc/self/fd/{fd}");
        let out = c.rt([
            "exec",
            "--cwd",
            &cwd,
            &c.id,
            "sh",
            "-c",
            "a=$(stat -c %d:%i /); cd ../../../../../../../..; b=$(stat -c %d:%i .); \
                         [ \"$a\" = \"$b\" ] && echo inside || echo ESCAPED",
        ]);
        if out.success() {
            assert_eq!(out.stdout, "inside\n", "exec --cwd {cwd} escaped:\n{out}");
        } else {
            assert!(out.code.is_some(), "{out}");
        }
    }
    assert_eq!(c.status(), "running");
}

/// exec's own failures exit 255, as runc's, so they cannot be confused with the exit code of
/// the process (issue 11; issue 6 had asked for 1): a stopped container, no such container, a
/// paused one without --ignore-paused, a binary that does not exist, a pid file that cannot be
/// written. Each says `exec failed` in one line, and nothing is left running.
#[test]
fn exec_own_failures_exit_255() {
    let c = running("exec-255");
    let ghost = format!("{}-ghost", c.id);
    let bad_pid_file = c.dir.join("no-such-dir/exec.pid");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("no such container", vec!["exec", &ghost, "true"]),
        ("missing binary", vec!["exec", &c.id, "/no/such/binary"]),
        ("bad pid-file path", vec!["exec", "--detach", "--pid-file", bad_pid_file.to_str().unwrap(), &c.id, "true"]),
    ];
    for (what, args) in &cases {
        let out = c.rt(args.clone()).fails_cleanly_with(255);
        assert!(out.err_msg().contains("exec failed"), "{what}: {out}");
    }
    // Arguments the process gets are never the runtime's: a 255 from the process itself.
    c.rt(["exec", &c.id, "sh", "-c", "exit 255"]).code_is(255);
    c.rt(["exec", &c.id, "sh", "-c", "exit 1"]).code_is(1);

    c.rt(["pause", &c.id]).ok();
    let out = c.rt(["exec", &c.id, "true"]).fails_cleanly_with(255);
    assert!(out.err_msg().contains("paused"), "{out}");
    c.rt(["resume", &c.id]).ok();

    c.kill("KILL").ok();
    c.wait_status("stopped");
    c.rt(["exec", &c.id, "true"]).fails_cleanly_with(255);
    assert!(processes_for("no/such/binary").is_empty());
}

/// Everything after the container id is the process's: runc's `-flag` → `--flag` rewriting
/// and help handling stop there, so `cmd -version -h --root x` reaches `cmd` unchanged.
#[test]
fn exec_arguments_after_the_id_are_untouched() {
    let c = running("exec-args");
    let out = c.rt(["exec", &c.id, "sh", "-c", "echo \"$*\"", "sh", "-version", "-h", "--help", "-root", "x", "--", "-debug"]).ok();
    assert_eq!(out.stdout, "-version -h --help -root x -- -debug\n", "{out}");
    // runc's single-dash long flags before the id still work.
    let out = c.rt(["exec", "-cwd", "/tmp", "-env", "A=b", &c.id, "sh", "-c", "pwd; echo $A"]).ok();
    assert_eq!(out.stdout, "/tmp\nb\n", "{out}");
}

/// A `--process` file without `user` runs as 0:0, as runc's (its Go struct defaults to zero).
#[test]
fn exec_process_file_without_user_is_root() {
    let mut c = Container::shared("exec-nouser");
    c.set("/process/user", json!({"uid": 1000, "gid": 1000}));
    c.args(&["sleep", "100"]);
    c.create_start();
    let p = c.dir.join("process.json");
    fs::write(&p, r#"{"args": ["sh", "-c", "id -u; id -g"], "cwd": "/", "env": ["PATH=/bin"]}"#).unwrap();
    let out = c.rt(["exec", "--process", p.to_str().unwrap(), &c.id]).ok();
    assert_eq!(out.stdout, "0\n0\n", "{out}");
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
    let out = c.run_cmd(&["--preserve-fds", "1"]).pass_fd(fs::File::open(&data).unwrap(), 3).run().ok();
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

/// exec -t with a console socket: the receiver in the test gets the pty master and the
/// process sees a terminal (created in the container's own devpts).
#[test]
fn exec_tty_console_socket() {
    let c = running("exec-tty");
    let sock = ConsoleSocket::bind(&c.dir.join("exec-console.sock"));
    let sock_path = sock.path.to_str().unwrap().to_string();
    let pid_file = c.dir.join("tty.pid");
    c.rt([
        "exec",
        "--tty",
        "--detach",
        "--console-socket",
        &sock_path,
        "--pid-file",
        pid_file.to_str().unwrap(),
        &c.id,
        "sh",
        "-c",
        "tty; [ -t 0 ] && [ -t 1 ] && echo all-tty; echo done",
    ])
    .ok();
    let master = sock.recv_master(Duration::from_secs(10));
    let pty = PtyReader::spawn(master);
    let text = pty.wait_for("done");
    let l: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(l[0].starts_with("/dev/pts/"), "{text}");
    assert_eq!(l[1], "all-tty", "{text}");
}

/// --detach --pid-file: the pid is in the container's cgroups (every hierarchy), its
/// namespaces are the container's, and many execs can run at once.
#[test]
fn exec_detach_cgroup_and_parallel() {
    let c = running("exec-parallel");
    let init = c.pid();
    let pid_file = c.dir.join("p.pid");
    c.rt(["exec", "--detach", "--pid-file", pid_file.to_str().unwrap(), &c.id, "sleep", "50"]).ok();
    let pid: i32 = read(&pid_file).trim().parse().unwrap();
    for (_, ctl) in cgroup_hierarchies().iter().filter(|(_, c)| !c.is_empty()) {
        let first = ctl.split(',').next().unwrap();
        assert_eq!(cgroup_dir_of(pid, first), cgroup_dir_of(init, first), "{ctl}");
    }
    for ns in ["pid", "mnt", "net", "ipc", "uts", "cgroup"] {
        assert_eq!(ns_link(&pid.to_string(), ns), ns_link(&init.to_string(), ns), "{ns}");
    }
    // Eight execs at once, each with its own exit code.
    let runs: Vec<_> = (0..8).map(|i| (i, c.cmd(["exec", c.id.as_str(), "sh", "-c", &format!("echo {i}; exit {i}")]).spawn())).collect();
    for (i, r) in runs {
        let out = r.wait();
        assert_eq!(out.code, Some(i), "{out}");
        assert_eq!(out.stdout, format!("{i}\n"), "{out}");
    }
    c.kill("KILL").ok();
    wait_pid_dead(pid);
}

/// A name in --user is looked up in the container's /etc/passwd and /etc/group, with its
/// supplementary groups; --additional-gids and --cap apply.
#[test]
fn exec_named_user_groups_caps() {
    let c = running("exec-user");
    let out = c.rt(["exec", "--user", "alice", &c.id, "sh", "-c", "id -u; id -g; id -G; echo $HOME"]).ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(l[0], "1000", "{out}");
    assert_eq!(l[1], "1000", "{out}");
    assert!(l[2].split(' ').any(|g| g == "10"), "alice is in wheel (10): {out}");
    assert_eq!(l[3], "/home/alice", "{out}");
    let out = c.rt(["exec", "-u", "1000:1000", "-g", "33", "-g", "44", &c.id, "sh", "-c", "id -G"]).ok();
    let groups: BTreeSet<&str> = out.stdout.split_whitespace().collect();
    assert!(groups.contains("33") && groups.contains("44"), "{out}");
    let out = c.rt(["exec", "--cap", "CAP_NET_ADMIN", &c.id, "sh", "-c", "grep CapEff /proc/self/status"]).ok();
    let eff = u64::from_str_radix(out.stdout.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert!(eff & (1 << 12) != 0, "CAP_NET_ADMIN (12) effective: {out}");
}

/// Bad input: exit 255 (exec's own failure), one clear line naming the field, and no stray
/// process in the container.
#[test]
fn exec_bad_input() {
    let c = running("exec-bad");
    let procs_before = read(cgroup_dir_of(c.pid(), "pids").unwrap().join("cgroup.procs"));
    let write = |name: &str, v: &str| {
        let p = c.dir.join(name);
        fs::write(&p, v).unwrap();
        p.to_str().unwrap().to_string()
    };
    let cases = [
        (write("bad1.json", "{not json"), "--process"),
        (write("bad2.json", r#"{"user":{"uid":"x","gid":0},"args":["true"],"cwd":"/"}"#), "process.user.uid"),
        (write("bad3.json", r#"{"user":{"uid":0,"gid":0},"args":["true"],"cwd":"tmp"}"#), "process.cwd"),
    ];
    for (file, field) in &cases {
        // A bad process file is exec's own failure: 255, as runc.
        let out = c.rt(["exec", "--process", file, &c.id]).fails_cleanly_with(255);
        if is_capsa() {
            assert!(out.stderr.contains(field), "names {field}: {out}");
        }
    }
    let out = c.rt(["exec", "--user", "nosuchuser", &c.id, "true"]);
    assert_ne!(out.code, Some(0), "{out}");
    if is_capsa() {
        assert_eq!(out.code, Some(255), "{out}");
        assert!(out.stderr.contains("nosuchuser"), "{out}");
        let out = c.rt(["exec", "--cap", "CAP_NOPE", &c.id, "true"]).fails_cleanly_with(255);
        assert!(out.stderr.contains("CAP_NOPE"), "{out}");
    }
    let procs_after = read(cgroup_dir_of(c.pid(), "pids").unwrap().join("cgroup.procs"));
    assert_eq!(procs_before, procs_after, "no stray process");
}

/// Foreground exec -t without --console-socket: capsa holds the pty and copies it to its
/// own stdout.
#[test]
fn exec_tty_foreground_without_socket() {
    let c = running("exec-tty-fg");
    let out = c.rt(["exec", "-t", &c.id, "sh", "-c", "tty; exit 5"]);
    assert_eq!(out.code, Some(5), "{out}");
    assert!(out.stdout.trim().starts_with("/dev/pts/"), "{out}");
}

/// exec into a paused container fails clearly unless --ignore-paused.
#[test]
fn exec_paused_needs_ignore_paused() {
    let c = running("exec-paused");
    c.rt(["pause", &c.id]).ok();
    let out = c.rt(["exec", &c.id, "true"]);
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("paused"), "{out}");
    let pid_file = c.dir.join("paused.pid");
    c.rt(["exec", "--ignore-paused", "--detach", "--pid-file", pid_file.to_str().unwrap(), &c.id, "sleep", "30"]).ok();
    let pid: i32 = read(&pid_file).trim().parse().unwrap();
    // It joined the frozen cgroup: it exists but is frozen until resume.
    assert!(pid_alive(pid));
    c.rt(["resume", &c.id]).ok();
    c.kill("KILL").ok();
    wait_pid_dead(pid);
}

/// `exec --cgroup`: repeatable; `ctrl[,ctrl]:path` puts the process in that sub-cgroup of
/// those controllers' hierarchies and leaves it in the container's cgroup elsewhere; an
/// unknown controller, a path leaving the container's cgroup and one path next to a
/// controller-prefixed one are refused with exit 255 and runc's words, before anything runs.
#[test]
fn exec_cgroup_flag() {
    let c = running("exec-cgroup");
    let init = c.pid();
    let mem = cgroup_dir_of(init, "memory").unwrap();
    // cpu and cpuacct: one hierarchy or two (here two), `cpu,cpuacct:c1` names both.
    let cpu = [cgroup_dir_of(init, "cpu").unwrap(), cgroup_dir_of(init, "cpuacct").unwrap()];
    let pids = cgroup_dir_of(init, "pids").unwrap();
    fs::create_dir(mem.join("m1")).unwrap();
    for d in &cpu {
        let _ = fs::create_dir(d.join("c1"));
    }
    let show = "cat /proc/self/cgroup";
    let out = c.rt(["exec", "--cgroup", "memory:m1", "--cgroup", "cpu,cpuacct:c1", &c.id, "sh", "-c", show]).ok();
    let line =
        |ctrl: &str| out.stdout.lines().find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|x| x == ctrl))).unwrap().to_string();
    assert!(line("memory").ends_with("/m1"), "{out}");
    assert!(line("cpu").ends_with("/c1") && line("cpuacct").ends_with("/c1"), "{out}");
    let rel = pids.strip_prefix("/sys/fs/cgroup/pids").unwrap();
    assert!(line("pids").ends_with(rel.to_str().unwrap()), "other hierarchies: the container's cgroup: {out}");

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--cgroup", "../m1"], "is not a sub cgroup path"),
        (vec!["--cgroup", "memory:a/../../x"], "is not a sub cgroup path"),
        (vec!["--cgroup", "nosuchctl:m1"], "unknown controller nosuchctl"),
        (vec!["--cgroup", "m1", "--cgroup", "memory:m1"], "missing <controller>: prefix"),
        (vec!["--cgroup", "memory:m1", "--cgroup", "memory:m2"], "controller memory specified multiple times"),
        (vec!["--cgroup", "memory:nonexistent"], "nonexistent"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["exec"];
        args.extend(flags.iter().copied());
        args.extend([c.id.as_str(), "sh", "-c", "echo RAN"]);
        let out = c.rt(args).fails_cleanly_with(255);
        assert!(!out.stdout.contains("RAN"), "{out}");
        // runc 1.1.5 words some of these differently (and takes a repeated controller's last
        // path); the exit code and that nothing ran are common ground.
        if is_capsa() {
            assert!(out.err_msg().contains(want), "want {want:?}: {out}");
        }
    }
    c.kill("KILL").ok();
    c.wait_status("stopped");
    fs::remove_dir(mem.join("m1")).unwrap();
    for d in &cpu {
        let _ = fs::remove_dir(d.join("c1"));
    }
}

//! Container lifecycle through the CLI: run, create/start/kill/delete, state, list, and the
//! serialisation of concurrent commands on one id.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::fs;

#[test]
fn run_exit_code_passthrough() {
    let mut c = Container::shared("run-exit");
    c.sh("exit 3");
    c.run(&[]).code_is(3);
    // `run` without --keep deletes the container once it exited.
    c.rt(["state", &c.id]).code_is(1);
    c.assert_clean();
}

#[test]
fn run_stdout_stderr_passthrough() {
    let mut c = Container::shared("run-stdio");
    c.sh("echo hello-out; echo hello-err >&2");
    let out = c.run(&[]).ok();
    assert_eq!(out.stdout, "hello-out\n");
    assert_eq!(out.stderr, "hello-err\n");
}

/// A container killed by a signal makes `run` exit 128+N, like a shell.
#[test]
fn run_exit_code_of_signalled_container() {
    let mut c = Container::shared("run-signal");
    c.args(&["sleep", "100"]);
    c.write_config();
    let running = c.run_cmd(&[]).spawn();
    poll(POLL_TIMEOUT, "container running", || {
        let o = c.rt(["state", &c.id]);
        (o.success() && o.json()["status"] == "running").then_some(())
    });
    c.kill("KILL").ok();
    running.wait().code_is(137);
}

#[test]
fn create_start_kill_delete() {
    let mut c = Container::shared("lifecycle");
    // The user process announces itself on stdout; before `start` nothing may be printed.
    c.sh("echo started; exec sleep 100");
    let created = c.create(&[]).ok();
    assert_eq!(created.stdout, "", "create must not print anything");

    let st = c.state();
    assert_eq!(st["status"], "created");
    let pid = st["pid"].as_i64().expect("pid") as i32;
    assert!(pid > 0 && pid_alive(pid), "created container's init {pid} must be alive");
    // The init is still the runtime, blocked before exec: the user process has not run.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(created.stdout_now(), "", "user process ran before start");
    let exe = fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
    assert!(!exe.contains("busybox"), "init already exec'd the user process: exe {exe}");

    c.start().ok();
    wait_file_contains(&created.stdout_path, "started");
    assert_eq!(c.status(), "running");
    assert_eq!(c.pid(), pid, "start keeps the init pid");
    poll(POLL_TIMEOUT, "init exec'd sleep", || (proc_cmdline(pid) == "sleep 100").then_some(()));

    c.kill("KILL").ok();
    wait_pid_dead(pid);
    c.wait_status("stopped");

    c.delete().ok();
    let o = c.rt(["state", &c.id]).fails_cleanly();
    assert!(o.stderr.contains("does not exist") || o.stderr.contains(&c.id), "{o}");
    c.assert_clean();
}

/// `kill` accepts signal names with and without the SIG prefix, numbers, and defaults to TERM.
#[test]
fn kill_signal_forms() {
    let mut c = Container::shared("kill-forms");
    // pid 1 of a pid namespace only receives signals it has handlers for: trap them and report.
    c.sh("trap 'echo got-USR1' USR1; trap 'echo got-HUP' HUP; trap 'echo got-USR2' USR2; \
         trap 'echo got-TERM; exit 0' TERM; echo ready; while :; do sleep 0.05; done");
    let out = c.create_start();
    wait_file_contains(&out.stdout_path, "ready");
    c.kill("USR1").ok();
    wait_file_contains(&out.stdout_path, "got-USR1");
    c.kill("SIGHUP").ok();
    wait_file_contains(&out.stdout_path, "got-HUP");
    c.kill("12").ok(); // SIGUSR2
    wait_file_contains(&out.stdout_path, "got-USR2");
    let pid = c.pid();
    c.rt(["kill", &c.id]).ok(); // default: SIGTERM
    wait_file_contains(&out.stdout_path, "got-TERM");
    wait_pid_dead(pid);
    c.wait_status("stopped");
    c.delete().ok();
}

#[test]
fn kill_stopped_container_fails() {
    let mut c = Container::shared("kill-stopped");
    c.args(&["true"]);
    c.run(&["--keep"]).ok();
    assert_eq!(c.status(), "stopped");
    c.kill("KILL").fails_cleanly();
    c.delete().ok();
}

/// Signal 0 is kill(2)'s existence check, accepted as runc accepts it.
#[test]
fn kill_signal_zero() {
    let mut c = Container::shared("kill-zero");
    c.args(&["sleep", "100"]);
    c.create_start().ok();
    c.kill("0").ok();
    assert_eq!(c.status(), "running");
    c.kill("KILL").ok();
    c.wait_status("stopped");
    c.kill("0").fails_cleanly();
    c.delete().ok();
}

/// `kill --all` on a stopped container still signals what is left in its cgroup, as runc does:
/// children of an init without a pid namespace of its own (a pod's shared one) outlive it, and
/// containerd's StopPodSandbox relies on this to end them.
#[test]
fn kill_all_reaches_leftovers_of_a_stopped_container() {
    let mut c = Container::shared("kill-all-stopped");
    c.no_namespace("pid");
    c.sh("sleep 1000 & echo $!");
    // create + start, not `run`: runc's foreground `run` waits for the orphan it subreaps.
    let out = c.create_start();
    c.wait_status("stopped");
    let text = wait_file_contains(&out.stdout_path, "\n");
    let pid: i32 = text.trim().parse().unwrap_or_else(|_| panic!("no pid printed: {text:?}"));
    assert!(pid_alive(pid), "the background sleep must outlive its init");
    c.kill("KILL").fails_cleanly();
    assert!(pid_alive(pid), "kill without --all must not reach it");
    c.rt(["kill", "--all", &c.id, "KILL"]).ok();
    wait_pid_dead(pid);
    // Nothing left in the cgroup: still not an error.
    c.rt(["kill", "--all", &c.id, "KILL"]).ok();
    c.delete().ok();
}

#[test]
fn start_twice_fails() {
    let mut c = Container::shared("start-twice");
    c.args(&["sleep", "100"]);
    c.create(&[]).ok();
    c.start().ok();
    c.start().fails_cleanly();
    assert_eq!(c.status(), "running");
}

#[test]
fn delete_running_needs_force() {
    let mut c = Container::shared("delete-running");
    c.args(&["sleep", "100"]);
    c.create_start();
    let pid = c.pid();
    c.delete().fails_cleanly();
    assert_eq!(c.status(), "running", "a failed delete must not touch the container");
    c.delete_force().ok();
    wait_pid_dead(pid);
    c.rt(["state", &c.id]).code_is(1);
    c.assert_clean();
}

#[test]
fn delete_force_created() {
    let mut c = Container::shared("delete-created");
    c.args(&["sleep", "100"]);
    c.create(&[]).ok();
    let pid = c.pid();
    c.delete_force().ok();
    wait_pid_dead(pid);
    c.assert_clean();
}

#[test]
fn run_detach() {
    let mut c = Container::shared("run-detach");
    c.sh("echo detached; exec sleep 100");
    let out = c.run(&["--detach"]).ok();
    wait_file_contains(&out.stdout_path, "detached");
    assert_eq!(c.status(), "running");
    c.kill("KILL").ok();
    c.wait_status("stopped");
    c.delete().ok();
}

#[test]
fn run_keep() {
    let mut c = Container::shared("run-keep");
    c.sh("exit 5");
    c.run(&["--keep"]).code_is(5);
    let st = c.state();
    assert_eq!(st["status"], "stopped");
    c.delete().ok();
    c.rt(["state", &c.id]).code_is(1);
}

/// `state` prints runc's JSON: exactly these keys in this order, annotations only when present.
#[test]
fn state_json_fields() {
    let mut c = Container::shared("state-json");
    c.args(&["sleep", "100"]);
    c.set("/annotations", json!({"org.example.key": "value"}));
    c.create(&[]).ok();
    let out = c.rt(["state", &c.id]).ok();
    let st = out.json();
    assert_eq!(
        json_key_order(&out.stdout),
        // runc's order: annotations (omitempty) comes before owner.
        ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "annotations", "owner"],
        "{out}"
    );
    assert!(st["ociVersion"].as_str().is_some_and(|v| v.starts_with("1.")), "{st}");
    assert_eq!(st["id"], c.id.as_str());
    assert!(st["pid"].as_i64().is_some_and(|p| p > 0));
    assert_eq!(st["status"], "created");
    assert_eq!(st["bundle"], c.bundle.to_str().unwrap());
    assert_eq!(st["rootfs"], c.rootfs.to_str().unwrap());
    assert_eq!(st["owner"], "");
    assert_eq!(st["annotations"], json!({"org.example.key": "value"}));
    assert_rfc3339_nano(st["created"].as_str().expect("created is a string"));

    // Without annotations the key is omitted (Go's omitempty).
    let mut d = Container::shared("state-json-noann");
    d.args(&["sleep", "100"]);
    d.create(&[]).ok();
    let out = d.rt(["state", &d.id]).ok();
    assert_eq!(json_key_order(&out.stdout), ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"]);

    // A relative root.path is reported absolute, joined to the bundle.
    let mut e = Container::new("state-json-rel");
    e.args(&["sleep", "100"]);
    e.create(&[]).ok();
    let st = e.state();
    assert_eq!(st["rootfs"], e.bundle.join("rootfs").to_str().unwrap());

    // A stopped container reports pid 0.
    c.kill("KILL").ok();
    c.wait_status("stopped");
    assert_eq!(c.state()["pid"], 0);
}

/// Go's time.RFC3339Nano: 2006-01-02T15:04:05.999999999Z07:00 (trailing zeros of the fraction
/// trimmed, the fraction dropped when zero).
fn assert_rfc3339_nano(s: &str) {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r.clone()).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let ok_prefix = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    assert!(ok_prefix, "created {s:?} is not RFC 3339");
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        assert!((1..=9).contains(&n), "created {s:?}: fraction must have 1-9 digits");
        rest = &frac[n..];
    }
    let tz_ok = rest == "Z" || (rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && rest.as_bytes()[3] == b':');
    assert!(tz_ok, "created {s:?}: bad zone {rest:?}");
}

#[test]
fn list_formats() {
    let mut c = Container::shared("list");
    c.args(&["sleep", "100"]);
    c.create(&[]).ok();

    let table = c.rt(["list"]).ok();
    let mut lines = table.stdout.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"], "{table}");
    let row: Vec<&str> = lines.next().expect("one row").split_whitespace().collect();
    assert_eq!(row.len(), 6, "{table}");
    assert_eq!(row[0], c.id);
    assert_eq!(row[1], c.pid().to_string());
    assert_eq!(row[2], "created");
    assert_eq!(row[3], c.bundle.to_str().unwrap());
    assert_rfc3339_nano(row[4]);
    // `list` shows the owner's user name, while `state` prints "" (runc).
    assert_eq!(row[5], "root");
    assert!(lines.next().is_none(), "{table}");

    let j = c.rt(["list", "--format", "json"]).ok();
    let arr = j.json();
    let arr = arr.as_array().expect("json array");
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["id"], c.id.as_str());
    assert_eq!(arr[0]["status"], "created");
    assert_eq!(arr[0]["bundle"], c.bundle.to_str().unwrap());
    assert_eq!(
        json_key_order(&serde_json::to_string(&arr[0]).unwrap()).len(),
        8,
        "ociVersion id pid status bundle rootfs created owner: {j}"
    );

    let q = c.rt(["list", "-q"]).ok();
    assert_eq!(q.stdout, format!("{}\n", c.id));

    // An empty (or missing) root: header only, "null"-free JSON.
    let empty = Container::shared("list-empty");
    let t = empty.rt(["list"]).ok();
    assert_eq!(t.stdout.lines().count(), 1, "{t}");
    let j = empty.rt(["list", "--format", "json"]).ok();
    let v = j.json();
    assert!(v == json!([]) || v.is_null(), "{j}");
}

/// Two `delete --force` racing on one (killed) container: both finish, the state is gone, and
/// nothing is left behind.
#[test]
fn concurrent_delete_force() {
    let mut c = Container::shared("conc-delete");
    c.args(&["sleep", "100"]);
    c.create_start();
    c.kill("KILL").ok();
    let a = c.cmd(["delete", "--force", &c.id]).spawn();
    let b = c.cmd(["delete", "--force", &c.id]).spawn();
    let (a, b) = (a.wait(), b.wait());
    assert!(a.success() || b.success(), "at least one delete must succeed:\n{a}\n{b}");
    for o in [&a, &b] {
        assert!(matches!(o.code, Some(0) | Some(1)), "{o}");
    }
    c.rt(["state", &c.id]).code_is(1);
    c.assert_clean();
}

/// Two `create` racing on one id: exactly one wins, the loser fails cleanly and does not damage the
/// winner, and after delete nothing is left.
#[test]
fn concurrent_create_same_id() {
    // runc 1.1.5 is racy here (checks for the state dir, then creates it, without a lock): both
    // creates can fail, or one "wins" while the loser's `runc init` and cgroups are leaked on the
    // host ("exec fifo ... already exists", "Failed to remove cgroup"). capsa must serialise
    // creates on an id (lock), so this only runs against capsa.
    if !is_capsa() {
        eprintln!("skipped: runc 1.1 does not serialise concurrent create (leaks processes)");
        return;
    }
    for round in 0..5 {
        let mut c = Container::shared(&format!("conc-create-{round}"));
        c.args(&["sleep", "100"]);
        c.write_config();
        let a = c.create_cmd(&[]).spawn();
        let b = c.create_cmd(&[]).spawn();
        let (a, b) = (a.wait(), b.wait());
        assert_eq!([a.success(), b.success()].iter().filter(|x| **x).count(), 1, "exactly one create must succeed:\n{a}\n{b}");
        let loser = if a.success() { &b } else { &a };
        assert_eq!(loser.code, Some(1), "{loser}");
        assert_eq!(c.status(), "created");
        assert!(pid_alive(c.pid()));
        c.delete_force().ok();
        c.assert_clean();
    }
}

/// A `create` killed half-way (here while a prestart hook runs) leaves a container that
/// `delete --force` removes completely: state dir, cgroups and the orphaned init.
#[test]
fn create_killed_at_each_directory_it_makes_is_cleaned_up_by_delete() {
    if !is_capsa() {
        return; // runc 1.1 leaves the cgroups of a killed create behind.
    }
    let mut c = Container::shared("killed-mkdir");
    // Nested, so that creating makes parents too.
    let cg = format!("/{}-parent/nested/{}", c.id, c.id);
    c.set("/linux/cgroupsPath", json!(cg));
    c.write_config();
    // strace's fault injection SIGKILLs the create process (its children are not traced) on
    // entry to its n-th mkdir: the state dirs, then each cgroup directory of each hierarchy.
    let mut n = 1;
    loop {
        let inject = format!("inject=mkdir,mkdirat:signal=KILL:when={n}");
        let out = Cmd::new("strace", &c.out)
            .current_dir(&c.bundle)
            .args(["-qq", "-o", "/dev/null", "-e", "trace=mkdir,mkdirat", "-e", &inject])
            .arg(runtime_bin())
            .arg("--root")
            .arg(&c.root)
            .args(["create", "--bundle", c.bundle.to_str().expect("utf-8 path"), &c.id])
            .run();
        if out.success() {
            break; // past the last mkdir
        }
        // A kill before the first state leaves only the dir: "does not exist", and removed.
        c.rt(["delete", &c.id]);
        c.assert_clean();
        n += 1;
        assert!(n < 100, "create never got past its mkdirs:\n{out}");
    }
    // The state dirs and at least the cgroup's three levels were kill points.
    assert!(n > 5, "only {n} mkdirs before create succeeded: is the injection working?");
    c.delete_force().ok();
    c.assert_clean();
}

#[test]
fn delete_removes_the_dir_of_a_create_killed_before_its_first_state() {
    // What a create killed right after making its state dir leaves: the dir, no state.json.
    let c = Container::shared("stateless");
    let dir = c.root.join(&c.id);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(".state.json.tmp"), b"{").unwrap();
    let out = c.rt(["delete", &c.id]).fails_cleanly();
    assert!(out.stderr.contains("does not exist"), "{out}");
    assert!(!dir.exists(), "delete left the state dir of a killed create");
    // The same with --force, which succeeds.
    fs::create_dir_all(&dir).unwrap();
    c.delete_force().ok();
    assert!(!dir.exists(), "delete --force left the state dir of a killed create");
    c.assert_clean();
}

#[test]
fn killed_create_is_cleaned_up_by_delete() {
    if !is_capsa() {
        return; // runc 1.1 leaves the cgroups of a killed create behind.
    }
    let mut c = Container::shared("killed-create");
    c.args(&["sleep", "100"]);
    // A sleep no other test runs: another suite's `sleep 30` must not pass for this hook.
    c.set("/hooks/prestart", json!([{"path": "/bin/sh", "args": ["sh", "-c", "sleep 3017"]}]));
    c.write_config();
    let running = c.create_cmd(&[]).spawn();
    let pid = running.pid();
    poll(POLL_TIMEOUT, "create reaches the hook", || {
        (!processes_for("sleep 3017").is_empty() || all_pids().iter().any(|p| proc_cmdline(*p) == "sleep 3017")).then_some(())
    });
    // SAFETY: kill with a pid we spawned.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = running.wait_or_kill();
    assert_eq!(c.status(), "creating");
    c.delete_force().ok();
    for p in all_pids() {
        if proc_cmdline(p) == "sleep 3017" {
            // SAFETY: kill of the hook process the killed create left behind.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
    c.assert_clean();
}

//! capsactl's containers end to end, as root: `run -d` under a per-container monitor that
//! outlives the command, `ps`, `logs [-f]`, `exec [-it]`, `stop` (SIGTERM, then SIGKILL
//! after `-t`), `start`, `restart`, `rm [-f]`, bind mounts and named volumes, restart
//! policies, and kills of a monitor or of a `capsactl run`. Every test has its own store
//! and state root and checks that nothing is left behind: processes, mounts, capsa state,
//! container directories and rows, volumes.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Nothing of any container is left: processes, mounts, rootfs dirs, rows, capsa state,
/// anonymous volumes.
fn assert_clean(env: &Env) {
    // A killed process may take a moment to be gone from /proc (its exit runs on another
    // CPU, and PID 1 reaps orphans slowly here): poll a few seconds before calling it left.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !env.procs().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(env.procs().is_empty(), "processes left: {:?}", env.procs());
    assert!(env.mounts().is_empty(), "mounts left: {:?}", env.mounts());
    assert_eq!(env.count("containers"), 0, "container dirs left");
    assert_eq!(env.db("SELECT count(*) FROM containers"), "0", "container rows left");
    assert_eq!(env.db("SELECT count(*) FROM container_volumes"), "0", "volume uses left");
    assert_eq!(env.db("SELECT count(*) FROM volumes WHERE anonymous = 1"), "0", "anonymous volumes left");
    let state: Vec<_> = std::fs::read_dir(env.state()).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(state.is_empty(), "capsa state left: {state:?}");
}

fn status(env: &Env, name: &str) -> String {
    env.ok(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name]).trim().to_string()
}

/// The pid of a container's monitor: `capsactl-monitor id=ID ...` (or `capsactl __watch
/// id=ID ...` without that binary), or the same process a moment earlier, before it exec'd
/// its steady state (`capsactl ... __monitor ID ...`: `run -d` may return before that).
fn monitor_pid(id: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let steady = (cmd.starts_with("capsactl-monitor ") || cmd.contains("__watch")) && cmd.contains(&format!("id={id} "));
        if steady || cmd.contains(&format!(" __monitor {id} ")) {
            return e.file_name().to_str().and_then(|p| p.parse().ok());
        }
    }
    None
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive: only its parent (the monitor, or PID 1) can reap it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}

const TICKER: &str = "trap 'echo got TERM; exit 0' TERM; i=0; while true; do echo tick $i; echo err $i >&2; i=$((i+1)); sleep 0.1; done";

#[test]
fn detached_run_outlives_the_command_then_ps_logs_exec_stop_start_restart_rm() {
    let env = Env::new("detached");
    load_busybox(&env);
    let id = env.ok(&["run", "-d", "--name", "web", "busybox", "sh", "-c", TICKER]).trim().to_string();
    assert_eq!(id.len(), 64, "run -d prints the full id: {id:?}");
    // The command has returned; the container runs on under its monitor, which is in a
    // session of its own (not this test's child).
    let pid: i32 = env.ok(&["inspect", "-f", "{{.State.Pid}}", "web"]).trim().parse().unwrap();
    assert!(pid > 0 && alive(pid), "the container's init runs after run -d returned");
    let mon = monitor_pid(&id).expect("a monitor for the container");
    let stat = std::fs::read_to_string(format!("/proc/{mon}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    assert_eq!(fields[3], mon.to_string(), "the monitor leads its own session: {stat}");
    let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: Vec<&str> = ppid.rsplit(')').next().unwrap().split_whitespace().collect();
    assert_eq!(ppid[1], mon.to_string(), "the monitor is the container's parent");

    // ps: running, with docker's columns; -q gives short ids.
    let ps = env.ok(&["ps"]);
    assert!(ps.starts_with("CONTAINER ID   IMAGE"), "{ps}");
    assert!(ps.contains(&id[..12]) && ps.contains("Up ") && ps.contains("web"), "{ps}");
    assert_eq!(env.ok(&["ps", "-q"]), format!("{}\n", &id[..12]));
    assert_eq!(status(&env, "web"), "running 0");

    // logs: stdout to stdout, stderr to stderr, --tail.
    until("two ticks logged", || env.ok(&["logs", "web"]).contains("tick 2"));
    let o = env.ctl(&["logs", "web"]);
    assert!(out(&o).starts_with("tick 0\ntick 1\n") && !out(&o).contains("err"), "{}", out(&o));
    assert!(err(&o).starts_with("err 0\nerr 1\n") && !err(&o).contains("tick"), "{}", err(&o));
    let o = env.ctl(&["logs", "--tail", "1", "web"]);
    assert_eq!(out(&o).lines().count() + err(&o).lines().count(), 1, "--tail counts both streams");
    // The log is docker's json-file: one object per line with log, stream, time.
    let log = std::fs::read_to_string(env.root().join(format!("containers/{id}/{id}-json.log"))).unwrap();
    let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert!(first["log"].as_str().unwrap().ends_with('\n') && first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert!(["stdout", "stderr"].contains(&first["stream"].as_str().unwrap()), "{first}");

    // exec: a process in the container's namespaces, its output and exit code, -e, -w.
    assert_eq!(env.ok(&["exec", "web", "sh", "-c", "echo in; cat /proc/1/cmdline | tr '\\0' ' '"]), format!("in\nsh -c {TICKER} "));
    let o = env.ctl(&["exec", "-e", "A=b", "-w", "/tmp", "web", "sh", "-c", "echo $A $(pwd) >&2; exit 3"]);
    assert_eq!((o.status.code(), err(&o).as_str()), (Some(3), "b /tmp\n"));
    let o = env.ctl(&["exec", "web", "/no/such/command"]);
    assert_eq!(o.status.code(), Some(127), "{}", err(&o));

    // rm of a running container is refused (and changes nothing).
    let e = env.fails(&["rm", "web"]);
    assert!(e.contains("You cannot remove a running container"), "{e}");
    assert_eq!(status(&env, "web"), "running 0");

    // stop: SIGTERM, which the trap turns into exit 0; the exit is recorded.
    assert_eq!(env.ok(&["stop", "web"]), "web\n");
    assert_eq!(status(&env, "web"), "exited 0");
    assert!(!alive(pid) && monitor_pid(&id).is_none(), "stop returns once the container and its monitor are gone");
    assert!(env.ok(&["logs", "web"]).ends_with("got TERM\n"));
    assert!(env.mounts().is_empty(), "a stopped container's rootfs is unmounted: {:?}", env.mounts());
    assert_eq!(env.ok(&["ps", "-q"]), "");
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (0)") && ps.contains("web"), "{ps}");

    env.ok(&["rm", "web"]);
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");
    assert_clean(&env);
}

#[test]
fn stop_start_restart_keep_the_container_and_its_files() {
    let env = Env::new("restart");
    load_busybox(&env);
    let id = env.ok(&["run", "-d", "--name", "keep", "busybox", "sh", "-c", TICKER]).trim().to_string();
    // Each stop comes once the shell has set its trap (it ticks after): a SIGTERM that
    // reaches PID 1 before it has a handler is dropped, and the stop would end in SIGKILL.
    let ticked = |n: usize| until("the ticker's trap", || env.ok(&["logs", "keep"]).matches("tick 0\n").count() == n);
    ticked(1);
    env.ok(&["exec", "keep", "sh", "-c", "echo mine > /kept"]);
    let pid1: i32 = env.ok(&["inspect", "-f", "{{.State.Pid}}", "keep"]).trim().parse().unwrap();
    assert_eq!(env.ok(&["stop", "-t", "5", "keep"]), "keep\n");
    let e = env.fails(&["exec", "keep", "true"]);
    assert!(e.contains("is not running"), "{e}");
    assert_eq!(env.ok(&["start", "keep"]), "keep\n");
    assert_eq!(status(&env, "keep"), "running 0");
    let pid2: i32 = env.ok(&["inspect", "-f", "{{.State.Pid}}", "keep"]).trim().parse().unwrap();
    assert!(pid2 != pid1 && alive(pid2) && !alive(pid1));
    assert_eq!(env.ok(&["exec", "keep", "cat", "/kept"]), "mine\n", "the writable layer survives stop and start");
    ticked(2);
    // restart: stop, then start under a new monitor.
    let mon = monitor_pid(&id).unwrap();
    assert_eq!(env.ok(&["restart", "-t", "5", "keep"]), "keep\n");
    let pid3: i32 = env.ok(&["inspect", "-f", "{{.State.Pid}}", "keep"]).trim().parse().unwrap();
    assert!(pid3 != pid2 && alive(pid3) && !alive(pid2));
    assert!(monitor_pid(&id).is_some_and(|m| m != mon), "a new monitor");
    assert_eq!(env.ok(&["exec", "keep", "cat", "/kept"]), "mine\n");
    let logs = env.ok(&["logs", "keep"]);
    assert_eq!(logs.matches("got TERM").count(), 2, "the log runs on across starts: {logs}");
    assert_eq!(logs.matches("tick 0\n").count(), 3, "{logs}");
    // rm -f kills and removes a running container; everything goes.
    assert_eq!(env.ok(&["rm", "-f", "keep"]), "keep\n");
    assert!(!alive(pid3));
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");
    assert_clean(&env);
}

#[test]
fn stop_kills_a_process_that_ignores_sigterm_after_the_timeout() {
    let env = Env::new("stopkill");
    load_busybox(&env);
    // The shell says "ready" once its trap is set: a signal that reaches PID 1 before it has a
    // handler is dropped by the kernel.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "busybox",
        "sh",
        "-c",
        "trap 'echo ignored TERM' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    until("stubborn's trap", || env.ok(&["logs", "stubborn"]).contains("ready"));
    let pid: i32 = env.ok(&["inspect", "-f", "{{.State.Pid}}", "stubborn"]).trim().parse().unwrap();
    assert_eq!(env.ok(&["stop", "-t", "1", "stubborn"]), "stubborn\n");
    // It was sent SIGTERM first (and said so), then SIGKILL: 128 + 9.
    assert_eq!(status(&env, "stubborn"), "exited 137");
    assert!(env.ok(&["logs", "stubborn"]).contains("ignored TERM"));
    assert!(!alive(pid));
    // --stop-signal and --stop-timeout of the container are used by a plain stop.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "usr1",
        "--stop-signal",
        "USR1",
        "--stop-timeout",
        "1",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got USR1; exit 5' USR1; echo ready; while true; do sleep 0.1; done",
    ]);
    until("usr1's trap", || env.ok(&["logs", "usr1"]).contains("ready"));
    env.ok(&["stop", "usr1"]);
    assert_eq!(status(&env, "usr1"), "exited 5");
    assert_eq!(env.ok(&["logs", "usr1"]), "ready\ngot USR1\n");
    env.ok(&["rm", "stubborn", "usr1"]);
    assert_clean(&env);
}

#[test]
fn logs_follow_until_the_container_exits() {
    let env = Env::new("follow");
    load_busybox(&env);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "counter",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done; echo done >&2",
    ]);
    // -f prints what is there, then what comes, and returns when the container exits.
    let o = env.ctl(&["logs", "-f", "counter"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "line 1\nline 2\nline 3\nline 4\nline 5\n");
    assert_eq!(err(&o), "done\n");
    assert_eq!(status(&env, "counter"), "exited 0");
    // -t prefixes docker's timestamps.
    let o = env.ctl(&["logs", "-t", "--tail", "2", "counter"]);
    let (t, e) = (out(&o), err(&o));
    assert!(t.ends_with("Z line 5\n") && t.starts_with("20") && t.lines().count() == 1, "{t:?}");
    assert!(e.ends_with("Z done\n") && e.starts_with("20"), "{e:?}");
    // -f of a stopped container prints and returns.
    assert_eq!(env.ok(&["logs", "-f", "counter"]).lines().count(), 5);
    env.ok(&["rm", "counter"]);
    assert_clean(&env);
}

#[test]
fn exec_it_gets_a_terminal() {
    use std::io::Read;
    use std::os::fd::{AsFd, OwnedFd};
    let env = Env::new("execit");
    load_busybox(&env);
    env.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "1000"]);
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = |fd: &OwnedFd| Stdio::from(fd.as_fd().try_clone_to_owned().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_capsactl"))
        .arg("--root")
        .arg(env.root())
        .arg("--state-root")
        .arg(env.state())
        .args(["exec", "-it", "box", "sh", "-c", "tty; echo $TERM; exit 4"])
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave))
        .spawn()
        .unwrap();
    drop(pty.slave);
    let status = child.wait().unwrap();
    let mut master = std::fs::File::from(pty.master);
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(status.code(), Some(4), "{got}");
    assert!(got.contains("/dev/pts/") && got.contains("xterm"), "{got:?}");
    env.ok(&["rm", "-f", "box"]);
    assert_clean(&env);
}

#[test]
fn bind_mounts_and_named_volumes_persist_across_containers() {
    let env = Env::new("volumes");
    load_busybox(&env);
    let host = env.dir.join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in"), "from the host\n").unwrap();
    let bind = format!("{}:/h", host.display());
    let o = env.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "cat /h/in; echo out > /h/out; echo kept > /data/f",
    ]);
    assert_eq!(o, "from the host\n");
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "out\n", "the container wrote through the bind mount");
    // The named volume outlives the container and shows in the next one.
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "data\n");
    assert_eq!(env.ok(&["run", "--rm", "-v", "data:/data:ro", "busybox", "cat", "/data/f"]), "kept\n");
    let o = env.ctl(&["run", "--rm", "-v", "data:/data:ro", "busybox", "sh", "-c", "echo x > /data/g"]);
    assert_eq!(o.status.code(), Some(1), "a read-only volume refuses writes: {}", err(&o));
    let o = env.ctl(&["run", "--rm", "-v", &format!("{bind}:ro"), "busybox", "touch", "/h/nope"]);
    assert_eq!(o.status.code(), Some(1), "a read-only bind refuses writes: {}", err(&o));
    assert!(!host.join("nope").exists());
    // inspect shows the mounts as docker does.
    env.ok(&["create", "--name", "c1", "-v", "data:/data", "-v", &bind, "busybox", "true"]);
    let mounts = inspect(&env, "c1")["Mounts"].clone();
    let kinds: Vec<(&str, &str)> =
        mounts.as_array().unwrap().iter().map(|m| (m["Type"].as_str().unwrap(), m["Destination"].as_str().unwrap())).collect();
    assert!(kinds.contains(&("volume", "/data")) && kinds.contains(&("bind", "/h")), "{mounts}");
    // A volume in use cannot go; once its container is gone it can.
    let e = env.fails(&["volume", "rm", "data"]);
    assert!(e.contains("volume is in use"), "{e}");
    env.ok(&["rm", "c1"]);
    assert_eq!(env.ok(&["volume", "rm", "data"]), "data\n");
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "");
    assert_eq!(env.count("volumes"), 0, "the volume's directory went with it");
    // An anonymous volume (-v /path) goes with its --rm container.
    env.ok(&["run", "--rm", "-v", "/anon", "busybox", "touch", "/anon/x"]);
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "");
    assert_clean(&env);
}

#[test]
fn bad_input_and_unknown_containers_fail_clearly_and_leave_nothing() {
    let env = Env::new("badinput");
    load_busybox(&env);
    for args in [
        &["stop", "nosuch"][..],
        &["start", "nosuch"],
        &["restart", "nosuch"],
        &["rm", "nosuch"],
        &["kill", "nosuch"],
        &["logs", "nosuch"],
        &["inspect", "nosuch"],
        &["exec", "nosuch", "true"],
    ] {
        let o = env.ctl(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", err(&o));
        // docker's words: `inspect` looks for any object, the others for a container.
        let what = if args[0] == "inspect" { "No such object: nosuch" } else { "No such container: nosuch" };
        assert!(err(&o).contains(what), "{args:?}: {}", err(&o));
    }
    // rm -f of a missing container is not an error (docker).
    env.ok(&["rm", "-f", "nosuch"]);
    for (v, msg) in [
        ("data:/x:zz", "invalid mode: zz"),
        ("data:relative", "mount path must be absolute"),
        ("a:b:c:d", "invalid volume specification"),
        ("bad name!:/x", "includes invalid characters for a local volume name"),
        ("/tmp:/", "destination can't be '/'"),
    ] {
        let o = env.ctl(&["run", "-d", "-v", "fresh:/y", "-v", v, "busybox", "true"]);
        assert_eq!(o.status.code(), Some(125), "-v {v}: {}", err(&o));
        assert!(err(&o).contains(msg), "-v {v}: {}", err(&o));
    }
    let o = env.ctl(&["run", "-d", "-v", "/one:/x", "-v", "two:/x", "busybox", "true"]);
    assert!(err(&o).contains("Duplicate mount point: /x"), "{}", err(&o));
    // A name conflict: the second container, its new named and anonymous volumes, all go.
    env.ok(&["create", "--name", "taken", "busybox", "true"]);
    let o = env.ctl(&["run", "-d", "--name", "taken", "-v", "newvol:/n", "-v", "/anon", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains("is already in use"), "{}", err(&o));
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "", "no volume made by a failed run is left");
    assert_eq!(env.ok(&["ps", "-a", "-q"]).lines().count(), 1);
    env.ok(&["rm", "taken"]);
    // A command that does not exist: 127, and a --rm container is gone.
    let o = env.ctl(&["run", "--rm", "busybox", "/no/such/binary"]);
    assert_eq!(o.status.code(), Some(127), "{}", err(&o));
    assert_clean(&env);
    assert_eq!(env.count("volumes"), 0, "no volume directory left");
}

#[test]
fn kill_9_of_a_monitor_or_of_capsactl_run_then_ps_tells_the_truth_and_rm_cleans_up() {
    let env = Env::new("killed9");
    load_busybox(&env);
    // 1. The monitor dies; the container runs on without it. ps -a still says it runs;
    //    once the container is gone the exit is unknown (255) and rm cleans up.
    let id = env.ok(&["run", "-d", "--name", "orphan", "busybox", "sleep", "1000"]).trim().to_string();
    let pid: i32 = env.ok(&["inspect", "-f", "{{.State.Pid}}", "orphan"]).trim().parse().unwrap();
    let mon = monitor_pid(&id).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(mon), nix::sys::signal::Signal::SIGKILL).unwrap();
    until("the monitor is gone", || !alive(mon));
    assert_eq!(status(&env, "orphan"), "running 0", "its init lives on");
    assert!(inspect(&env, "orphan")["State"]["Error"].as_str().unwrap().contains("monitor gone"));
    env.ok(&["stop", "-t", "1", "orphan"]);
    assert!(!alive(pid));
    assert_eq!(status(&env, "orphan"), "exited 255", "the exit code is unknown without a monitor");
    env.ok(&["rm", "orphan"]);
    assert_clean(&env);

    // 2. Monitor and container killed at once (as a reboot would): ps -a says exited, rm
    //    cleans up the mount, capsa's state and the directory.
    let id = env.ok(&["run", "-d", "--name", "both", "busybox", "sleep", "1000"]).trim().to_string();
    let pid: i32 = env.ok(&["inspect", "-f", "{{.State.Pid}}", "both"]).trim().parse().unwrap();
    let mon = monitor_pid(&id).unwrap();
    for p in [mon, pid] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    until("both are gone", || !alive(mon) && !alive(pid));
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (255)") && ps.contains("both"), "{ps}");
    assert!(env.mounts().is_empty(), "ps -a found the container down and unmounted it: {:?}", env.mounts());
    env.ok(&["rm", "both"]);
    assert_clean(&env);

    // 3. `capsactl run --rm` (attached) killed: as with docker, the container goes on
    //    under its monitor; rm -f then removes everything.
    let mut run = Command::new(env!("CARGO_BIN_EXE_capsactl"))
        .arg("--root")
        .arg(env.root())
        .arg("--state-root")
        .arg(env.state())
        .args(["run", "--rm", "--name", "fg", "busybox", "sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    until("the container runs", || env.ctl(&["inspect", "-f", "{{.State.Status}}", "fg"]).stdout == b"running\n");
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(status(&env, "fg"), "running 0");
    env.ok(&["rm", "-f", "fg"]);
    assert_clean(&env);

    // 4. A reboot: every process gone, and with them what lived in memory only: capsa's
    //    state dir (on /run), the mounts, the cgroups. ps -a says exited; the container
    //    starts again, as docker's do; rm then cleans up.
    let id = env.ok(&["run", "-d", "--name", "rebooted", "busybox", "sleep", "1000"]).trim().to_string();
    let pid: i32 = env.ok(&["inspect", "-f", "{{.State.Pid}}", "rebooted"]).trim().parse().unwrap();
    let mon = monitor_pid(&id).unwrap();
    let state: Value = serde_json::from_slice(&std::fs::read(env.state().join(&id).join("state.json")).unwrap()).unwrap();
    for p in [mon, pid] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    until("both are gone", || !alive(mon) && !alive(pid));
    let mut mounts: Vec<String> = env.mounts().iter().filter_map(|l| l.split(' ').nth(4).map(str::to_string)).collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
    for cg in state["cgroupPaths"].as_array().unwrap() {
        until("the cgroup empties", || {
            std::fs::remove_dir(cg.as_str().unwrap()).is_ok() || !std::path::Path::new(cg.as_str().unwrap()).exists()
        });
    }
    std::fs::remove_dir_all(env.state()).unwrap();
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (255)") && ps.contains("rebooted"), "{ps}");
    env.ok(&["start", "rebooted"]);
    assert_eq!(status(&env, "rebooted"), "running 0");
    env.ok(&["rm", "-f", "rebooted"]);
    assert_clean(&env);
}

#[test]
fn restart_policies_start_again_and_stop_ends_them() {
    let env = Env::new("policy");
    load_busybox(&env);
    // on-failure:2 — two restarts of a failing process, then it stays exited.
    env.ok(&["run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 3"]);
    until("two restarts, then exited", || {
        let s = env.ok(&["inspect", "-f", "{{.State.Status}} {{.RestartCount}}", "flaky"]);
        s.trim() == "exited 2"
    });
    assert_eq!(status(&env, "flaky"), "exited 3");
    assert_eq!(env.ok(&["logs", "flaky"]), "run\nrun\nrun\n");
    // always — a process that exits 0 is started again until a stop.
    env.ok(&["run", "-d", "--name", "always", "--restart", "always", "busybox", "sh", "-c", "echo up; sleep 0.2"]);
    until("restarted twice", || env.ok(&["inspect", "-f", "{{.RestartCount}}", "always"]).trim().parse::<i64>().unwrap() >= 2);
    env.ok(&["stop", "-t", "1", "always"]);
    assert!(env.ok(&["inspect", "-f", "{{.State.Status}}", "always"]).starts_with("exited"));
    let n = env.ok(&["inspect", "-f", "{{.RestartCount}}", "always"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.ok(&["inspect", "-f", "{{.RestartCount}}", "always"]), n, "no restart after a stop");
    // --restart with --rm is refused.
    let e = env.fails(&["run", "-d", "--rm", "--restart", "always", "busybox", "true"]);
    assert!(e.contains("Conflicting options: --restart and --rm"), "{e}");
    env.ok(&["rm", "-f", "flaky", "always"]);
    assert_clean(&env);
}

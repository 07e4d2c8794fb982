//! The rest of capsactl's container verbs end to end, as root, on real containers: commit
//! then run the committed image, OOM reported, log rotation, 50 containers started at once,
//! attach, pause/unpause, top, stats, wait, rename, diff, export, port, the prunes,
//! `system df`, `info`, and bad input to each. Every test checks that nothing is left:
//! processes, mounts, capsa state, container dirs and rows, volumes, cgroups.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod support;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// Nothing of any container is left: processes, mounts, rows, dirs, capsa state,
/// anonymous volumes, and the cgroups of the containers `ids`.
fn assert_clean(env: &Env, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env.procs().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(env.procs().is_empty(), "processes left: {:?}", env.procs());
    assert!(env.mounts().is_empty(), "mounts left: {:?}", env.mounts());
    assert_eq!(env.count("containers"), 0, "container dirs left");
    assert_eq!(env.db("SELECT count(*) FROM containers"), "0", "container rows left");
    assert_eq!(env.db("SELECT count(*) FROM container_volumes"), "0", "volume uses left");
    assert_eq!(env.db("SELECT count(*) FROM volumes WHERE anonymous = 1"), "0", "anonymous volumes left");
    let state: Vec<_> = std::fs::read_dir(env.state()).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(state.is_empty(), "capsa state left: {state:?}");
    for id in ids {
        assert_eq!(id.len(), 64, "a full container id: {id:?}");
        for c in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let p = c.path().join("capsa").join(id);
            assert!(!p.exists(), "cgroup left: {}", p.display());
        }
    }
}

/// The top layer of `image`, as `save` writes it.
fn saved(env: &Env, image: &str) -> Vec<u8> {
    let p = env.dir.join("saved.tar");
    env.ok(&["save", "-o", p.to_str().unwrap(), image]);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    let mut files = std::collections::HashMap::new();
    for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(name, data);
    }
    let m: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let last = m[0]["Layers"].as_array().unwrap().last().unwrap().as_str().unwrap().to_string();
    files.remove(&last).unwrap()
}

/// The entries of the top layer of `image`, as `save` writes it.
fn top_layer(env: &Env, image: &str) -> Vec<String> {
    let top = saved(env, image);
    let mut names: Vec<String> =
        tar::Archive::new(&top[..]).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    names.sort();
    names
}

#[test]
fn diff_and_commit_show_only_the_users_changes_and_the_committed_image_runs() {
    let env = Env::new("commit");
    load_busybox(&env);
    let id = env.ok(&["run", "-d", "--name", "src", "busybox", "sleep", "1000"]).trim().to_string();
    env.ok(&["exec", "src", "sh", "-c", "echo made > /newfile; rm /etc/group; mkdir -p /home/alice/d; echo x > /home/alice/d/x"]);
    // docker's words: the mount points the runtime made (/proc, /dev, /etc/hostname...)
    // are not changes of the user's.
    assert_eq!(env.ok(&["diff", "src"]), "C /etc\nD /etc/group\nC /home\nC /home/alice\nA /home/alice/d\nA /home/alice/d/x\nA /newfile\n");
    let img = env.ok(&["commit", "-m", "a message", "-c", "CMD [\"cat\", \"/newfile\"]", "src", "snap:v1"]).trim().to_string();
    assert!(img.starts_with("sha256:") && img.len() == 71, "{img}");
    assert_eq!(
        top_layer(&env, "snap:v1"),
        ["etc/", "etc/.wh.group", "home/", "home/alice/", "home/alice/d/", "home/alice/d/x", "newfile"],
        "the layer holds the changes and nothing the runtime made"
    );
    // The committed image runs: its CMD, its files, the deletion.
    assert_eq!(env.ok(&["run", "--rm", "snap:v1"]), "made\n");
    let o = env.ctl(&["run", "--rm", "snap:v1", "sh", "-c", "cat /home/alice/d/x; test -e /etc/group || echo gone"]);
    assert_eq!(out(&o), "x\ngone\n", "{}", err(&o));
    let hist = env.ok(&["history", "--no-trunc", "snap:v1"]);
    assert!(hist.lines().nth(1).unwrap().contains("a message"), "{hist}");
    // A running container keeps running through the commit (paused, then resumed).
    assert_eq!(inspect(&env, "src")["State"]["Status"], "running");
    // export: the container's filesystem as a tar, with the change.
    let o = env.ctl(&["export", "src"]);
    assert!(o.status.success(), "{}", err(&o));
    let names: Vec<String> =
        tar::Archive::new(&o.stdout[..]).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert!(names.contains(&"newfile".to_string()) && names.contains(&"bin/busybox".to_string()), "{names:?}");
    assert!(!names.contains(&"etc/group".to_string()), "{names:?}");
    // Of a stopped container too (its rootfs mounted for the export, then unmounted).
    env.ok(&["stop", "-t", "0", "src"]);
    let o = env.ctl(&["export", "src"]);
    assert!(o.status.success() && o.stdout.len() > 1 << 20, "{}", err(&o));
    assert!(env.mounts().is_empty(), "export left a mount: {:?}", env.mounts());
    env.ok(&["rm", "-f", "src"]);
    env.ok(&["rmi", "snap:v1"]);
    assert_clean(&env, &[id]);
}

#[test]
fn oom_is_reported() {
    let env = Env::new("oom");
    load_busybox(&env);
    // `tail` of an endless line keeps it all in memory.
    let o = env.ctl(&["run", "--name", "hog", "--memory", "16m", "busybox", "tail", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(137), "{}", err(&o));
    let st = inspect(&env, "hog")["State"].clone();
    assert_eq!(
        (st["Status"].as_str(), st["OOMKilled"].as_bool(), st["ExitCode"].as_i64()),
        (Some("exited"), Some(true), Some(137)),
        "{st}"
    );
    assert!(env.ok(&["ps", "-a"]).contains("Exited (137)"));
    // Detached too, recorded by the monitor; and a plain kill is not an OOM.
    let hog2 = env.ok(&["run", "-d", "--name", "hog2", "--memory", "16m", "busybox", "tail", "/dev/zero"]).trim().to_string();
    assert_eq!(env.ok(&["wait", "hog2"]), "137\n");
    assert_eq!(inspect(&env, "hog2")["State"]["OOMKilled"], true);
    let calm = env.ok(&["run", "-d", "--name", "calm", "--memory", "16m", "busybox", "sleep", "1000"]).trim().to_string();
    env.ok(&["kill", "calm"]);
    assert_eq!(env.ok(&["wait", "calm"]), "137\n");
    assert_eq!(inspect(&env, "calm")["State"]["OOMKilled"], false);
    let hog = inspect(&env, "hog")["Id"].as_str().unwrap().to_string();
    env.ok(&["rm", "hog", "hog2", "calm"]);
    assert_clean(&env, &[hog, hog2, calm]);
}

#[test]
fn log_rotation_end_to_end() {
    let env = Env::new("logrot");
    load_busybox(&env);
    let id = env
        .ok(&[
            "run",
            "-d",
            "--name",
            "chatty",
            "--log-opt",
            "max-size=1k",
            "--log-opt",
            "max-file=3",
            "busybox",
            "sh",
            "-c",
            "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done",
        ])
        .trim()
        .to_string();
    assert_eq!(env.ok(&["wait", "chatty"]), "0\n");
    let dir = env.root().join("containers").join(&id);
    let log = |s: &str| dir.join(format!("{id}-json.log{s}"));
    // max-file=3: the current file and two rotated ones, each at most about max-size.
    for s in ["", ".1", ".2"] {
        let len = std::fs::metadata(log(s)).unwrap().len();
        assert!(len > 0 && len <= 1024 + 64, "{s}: {len} bytes");
    }
    assert!(!log(".3").exists(), "max-file=3 keeps three files");
    // logs reads the rotated files oldest first: one run of consecutive lines ending in
    // the last one.
    let all = env.ok(&["logs", "chatty"]);
    let nums: Vec<u32> = all.lines().map(|l| l.strip_prefix("line-").unwrap().parse().unwrap()).collect();
    assert!(nums.len() > 20, "{all}");
    assert_eq!(*nums.last().unwrap(), 299);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "lines in order across the files: {nums:?}");
    assert!(std::fs::read_to_string(log(".2")).unwrap().contains(&format!("line-{}\\n", nums[0])), "the oldest file comes first");
    assert_eq!(env.ok(&["logs", "--tail", "2", "chatty"]), "line-298\nline-299\n");
    // --tail reaching into the rotated files.
    let n = nums.len() - 1;
    assert_eq!(env.ok(&["logs", "--tail", &n.to_string(), "chatty"]).lines().count(), n);
    // -f of a stopped container prints and returns.
    assert_eq!(env.ok(&["logs", "-f", "chatty"]), all);
    env.ok(&["rm", "chatty"]);
    assert_clean(&env, &[id]);
}

#[test]
fn fifty_containers_started_concurrently_lose_nothing() {
    let env = Env::new("fifty");
    load_busybox(&env);
    let runs: Vec<_> = (0..50)
        .map(|i| {
            let (root, state) = (env.root(), env.state());
            std::thread::spawn(move || {
                Command::new(env!("CARGO_BIN_EXE_capsactl"))
                    .arg("--root")
                    .arg(root)
                    .arg("--state-root")
                    .arg(state)
                    .args(["run", "-d", "--name", &format!("c{i:02}"), "busybox", "sleep", "1000"])
                    .stdin(std::process::Stdio::null())
                    .output()
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for r in runs {
        let o = r.join().unwrap();
        assert!(o.status.success(), "{}", err(&o));
        ids.push(out(&o).trim().to_string());
    }
    assert_eq!(env.db("SELECT count(*) FROM containers"), "50");
    assert_eq!(env.ok(&["ps", "-q"]).lines().count(), 50, "all 50 run");
    let names = env.ok(&["ps", "--format", "{{.Names}} {{.State}}"]);
    for i in 0..50 {
        assert!(names.contains(&format!("c{i:02} running")), "c{i:02}: {names}");
    }
    let pids: std::collections::HashSet<String> = ids.iter().map(|id| env.ok(&["inspect", "-f", "{{.State.Pid}}", id])).collect();
    assert_eq!(pids.len(), 50, "50 distinct processes");
    let rms: Vec<_> = ids
        .iter()
        .map(|id| {
            let (root, state, id) = (env.root(), env.state(), id.clone());
            std::thread::spawn(move || {
                Command::new(env!("CARGO_BIN_EXE_capsactl"))
                    .arg("--root")
                    .arg(root)
                    .arg("--state-root")
                    .arg(state)
                    .args(["rm", "-f", &id])
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for r in rms {
        let o = r.join().unwrap();
        assert!(o.status.success(), "{}", err(&o));
    }
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");
    assert_clean(&env, &ids);
}

/// Several `rm -f` of one container at once: each succeeds (the container is gone either
/// way), none reports a half-removed directory, and nothing is left.
#[test]
fn concurrent_rm_of_one_container() {
    let env = Env::new("rmrace");
    load_busybox(&env);
    for round in 0..10 {
        let id = env.ok(&["run", "-d", "--name", "same", "busybox", "sleep", "1000"]).trim().to_string();
        let rms: Vec<_> = (0..6)
            .map(|_| {
                let (root, state) = (env.root(), env.state());
                std::thread::spawn(move || {
                    Command::new(env!("CARGO_BIN_EXE_capsactl"))
                        .arg("--root")
                        .arg(root)
                        .arg("--state-root")
                        .arg(state)
                        .args(["rm", "-f", "same"])
                        .output()
                        .unwrap()
                })
            })
            .collect();
        for r in rms {
            let o = r.join().unwrap();
            // The losers of the race find no container, as docker's "No such container".
            assert!(o.status.success() || err(&o).contains("No such container"), "round {round}: {}", err(&o));
            assert!(!err(&o).contains("not empty"), "round {round}: {}", err(&o));
        }
        assert_eq!(env.ok(&["ps", "-a", "-q"]), "", "round {round}");
        assert_clean(&env, &[id]);
    }
}

/// A directory of the image renamed in a container is committed whole: the rootfs is
/// mounted with redirect_dir off, so its upper dir holds the moved files themselves (with it
/// on, as some kernels default, it would hold only a redirect to the lower dir).
#[test]
fn commit_of_a_renamed_image_directory() {
    let env = Env::new("commit-rename");
    load_busybox(&env);
    env.ok(&["run", "--name", "mv", "busybox", "/bin/mv", "/bin", "/moved"]);
    env.ok(&["commit", "mv", "mv:1"]);
    let o = env.ok(&["run", "--rm", "mv:1", "/moved/busybox", "ls", "/moved/busybox"]);
    assert_eq!(o.trim(), "/moved/busybox", "{o}");
    // And the old name is gone (a whiteout).
    let o = env.ctl(&["run", "--rm", "mv:1", "/moved/busybox", "test", "-e", "/bin"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    env.ok(&["rm", "mv"]);
    env.ok(&["rmi", "mv:1"]);
}

#[test]
fn attach_pause_top_stats_wait_rename_port() {
    let env = Env::new("verbs");
    load_busybox(&env);
    // attach: the output from then on, and the exit code.
    // (For 6 s, so that a slow machine still attaches while it talks.)
    let talk = "i=0; while [ $i -lt 60 ]; do echo hello-attach; echo to-err >&2; sleep 0.1; i=$((i+1)); done; exit 3";
    let a = env.ok(&["run", "-d", "--name", "att", "busybox", "sh", "-c", talk]);
    let o = env.ctl(&["attach", "att"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(out(&o).lines().all(|l| l == "hello-attach") && out(&o).ends_with("hello-attach\n"), "{}", out(&o));
    assert!(err(&o).lines().all(|l| l == "to-err") && err(&o).ends_with("to-err\n"), "{}", err(&o));
    assert_eq!(env.ok(&["wait", "att"]), "3\n");
    // pause/unpause: docker's states, and the processes really stop (the cgroup freezes).
    let b = env.ok(&["run", "-d", "--name", "tick", "busybox", "sh", "-c", "while true; do date +%s%N > /t; sleep 0.05; done"]);
    assert_eq!(env.ok(&["pause", "tick"]), "tick\n");
    assert_eq!(inspect(&env, "tick")["State"]["Status"], "paused");
    assert_eq!(inspect(&env, "tick")["State"]["Paused"], true);
    assert!(env.ok(&["ps"]).contains("(Paused)"));
    let dir = env.root().join("containers").join(b.trim()).join("upper");
    let t1 = std::fs::read_to_string(dir.join("t")).unwrap_or_default();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(dir.join("t")).unwrap_or_default(), t1, "a paused container does nothing");
    assert!(env.fails(&["pause", "tick"]).contains("is already paused"));
    assert_eq!(env.ok(&["unpause", "tick"]), "tick\n");
    until("it ticks again", || std::fs::read_to_string(dir.join("t")).unwrap_or_default() != t1);
    assert_eq!(inspect(&env, "tick")["State"]["Status"], "running");
    assert!(env.fails(&["unpause", "tick"]).contains("is not paused"));
    // top: ps of the container's processes, as docker shows them.
    let top = env.ok(&["top", "tick"]);
    assert!(top.starts_with("UID") && top.contains("PID") && top.contains("while true"), "{top}");
    let top = env.ok(&["top", "tick", "-o", "pid,comm"]);
    assert!(top.lines().next().unwrap().contains("COMMAND") && top.contains("sh"), "{top}");
    // stats --no-stream: one table, the container's memory and pids.
    let s = env.ok(&["stats", "--no-stream", "tick"]);
    let mut lines = s.lines();
    assert!(lines.next().unwrap().starts_with("CONTAINER ID   NAME"), "{s}");
    let row = lines.next().unwrap();
    assert!(row.starts_with(&b.trim()[..12]) && row.contains("tick") && row.contains("iB /"), "{s}");
    assert!(lines.next().is_none(), "{s}");
    // rename: the new name works, the old one is gone, a taken name is refused.
    env.ok(&["rename", "tick", "tock"]);
    assert!(env.fails(&["inspect", "tick"]).contains("No such object: tick"));
    assert_eq!(inspect(&env, "tock")["Name"], "/tock");
    assert!(env.fails(&["rename", "tock", "att"]).contains("is already in use"));
    // port: nothing published: no lines; a port asked for: an error.
    assert_eq!(env.ok(&["port", "tock"]), "");
    assert!(env.fails(&["port", "tock", "80"]).contains("No public port '80/tcp' published"));
    // wait for several: each exit code, in order.
    env.ok(&["kill", "-s", "KILL", "tock"]);
    assert_eq!(env.ok(&["wait", "att", "tock"]), "3\n137\n");
    env.ok(&["rm", "att", "tock"]);
    assert_clean(&env, &[a.trim().to_string(), b.trim().to_string()]);
}

#[test]
fn prunes_system_df_and_info() {
    let env = Env::new("prune");
    load_busybox(&env);
    let dead = env.ok(&["create", "--name", "dead", "-v", "/anon", "busybox", "true"]).trim().to_string();
    let live = env.ok(&["run", "-d", "--name", "live", "-v", "keep:/k", "busybox", "sleep", "1000"]).trim().to_string();
    env.ok(&["volume", "create", "spare"]);
    // An image made by commit, untagged (dangling), and a tagged one nobody uses.
    let dangling = env.ok(&["commit", "live"]).trim().to_string();
    env.ok(&["commit", "live", "tagged:1"]);
    let info = env.ok(&["info", "--format", "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}} {{.Images}}"]);
    assert_eq!(info, "2 1 1 3\n");
    let df = env.ok(&["system", "df"]);
    let row = |k: &str| df.lines().find(|l| l.starts_with(k)).unwrap().split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(&row("Images")[1..3], ["3", "1"], "{df}");
    assert_eq!(&row("Containers")[1..3], ["2", "1"], "{df}");
    // Reclaimable: only the two commits' own small layers (busybox's is in use).
    assert_eq!(row("Images")[5], "(0%)", "{df}");
    // A volume is active while any container (running or not) has it.
    assert_eq!(&row("Local")[2..4], ["3", "2"], "{df}");
    // container prune: the stopped one (and its anonymous volume goes with -v semantics
    // only on rm; prune keeps volumes as docker does).
    let o = env.ok(&["container", "prune", "-f"]);
    assert!(o.contains("Deleted Containers:") && o.contains(&dead), "{o}");
    assert_eq!(env.ok(&["ps", "-a", "--format", "{{.Names}}"]), "live\n");
    // volume prune: unused anonymous volumes; -a also named ones; never one in use.
    let o = env.ok(&["volume", "prune", "-f"]);
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "keep\nspare\n", "{o}");
    env.ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "keep\n");
    // image prune: the dangling one; -a every unused one; never one in use.
    let o = env.ok(&["image", "prune", "-f"]);
    assert!(o.contains(&dangling), "{o}");
    assert_eq!(env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]), "tagged:1\nbusybox:latest\n", "newest first");
    env.ok(&["image", "prune", "-a", "-f"]);
    assert_eq!(env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]), "busybox:latest\n");
    // system prune -a --volumes with the container running: nothing of it goes.
    env.ok(&["system", "prune", "-a", "-f", "--volumes"]);
    assert_eq!(env.ok(&["ps", "-q"]).lines().count(), 1);
    assert_eq!(env.ok(&["images", "-q"]).lines().count(), 1);
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "keep\n");
    // Once it is stopped, system prune takes the container and its image; --volumes
    // prunes anonymous volumes only (docker ≥ 23: -a is about images).
    env.ok(&["stop", "-t", "0", "live"]);
    let o = env.ok(&["system", "prune", "-a", "-f", "--volumes"]);
    assert!(o.contains("Deleted Containers:") && o.contains(&live), "{o}");
    assert_eq!(env.ok(&["images", "-q"]), "");
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "keep\n");
    env.ok(&["volume", "rm", "keep"]);
    let df = env.ok(&["system", "df"]);
    assert!(df.lines().skip(1).all(|l| l.split_whitespace().any(|w| w == "0")), "{df}");
    assert_eq!(env.count("volumes"), 0);
    assert_clean(&env, &[dead, live]);
}

#[test]
fn bad_input_to_the_other_verbs_fails_clearly_and_leaves_nothing() {
    let env = Env::new("verbs-bad");
    load_busybox(&env);
    let id = env.ok(&["run", "-d", "--name", "bb", "busybox", "sleep", "1000"]).trim().to_string();
    for (args, msg) in [
        (&["port", "nosuch"][..], "No such container: nosuch"),
        (&["pause", "nosuch"], "No such container: nosuch"),
        (&["unpause", "bb"], "is not paused"),
        (&["top", "nosuch"], "No such container: nosuch"),
        (&["stats", "--no-stream", "nosuch"], "No such container: nosuch"),
        (&["wait", "nosuch"], "No such container: nosuch"),
        (&["rename", "nosuch", "x2"], "No such container: nosuch"),
        (&["rename", "bb", "bad!name"], "Invalid container name (bad!name)"),
        (&["diff", "nosuch"], "No such container: nosuch"),
        (&["export", "nosuch"], "No such container: nosuch"),
        (&["attach", "nosuch"], "No such container: nosuch"),
        (&["commit", "nosuch"], "No such container: nosuch"),
        (&["commit", "bb", "BAD:REF:x"], "invalid reference format"),
        (&["cp", "nosuch:/x", "/tmp"], "No such container: nosuch"),
        (&["run", "--memory", "12zz", "busybox", "true"], "--memory \"12zz\": invalid size"),
        (&["run", "--cpus", "abc", "busybox", "true"], "--cpus \"abc\""),
        (&["run", "--restart", "sometimes", "busybox", "true"], "invalid restart policy \"sometimes\""),
        (&["run", "--log-opt", "max-size=abc", "busybox", "true"], "--log-opt max-size \"abc\""),
        (&["run", "--log-opt", "max-file=0", "busybox", "true"], "max-file=0"),
        (&["run", "--log-opt", "bogus=1", "busybox", "true"], "unknown log opt 'bogus'"),
        (&["run", "--ulimit", "nofile=abc", "busybox", "true"], "--ulimit nofile=abc"),
        (&["run", "--pids-limit", "x", "busybox", "true"], "--pids-limit"),
        (&["stop", "-t", "x", "bb"], "--time"),
        (&["kill", "-s", "NOPE", "bb"], "unknown signal \"NOPE\""),
        (&["logs", "--tail", "x", "bb"], "--tail x"),
        (&["volume", "rm", "nosuch"], "no such volume"),
        (&["volume", "inspect", "nosuch"], "no such volume"),
        (&["top", "bb", "-o", "bogus"], "bogus"),
    ] {
        let o = env.ctl(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err(&o).contains(msg), "{args:?}: {}", err(&o));
        // docker: 125 for its own command line (flags, run's options), 1 when the daemon
        // refuses.
        let own = args[0] == "run" || args.iter().any(|a| matches!(*a, "-t" | "--pids-limit"));
        assert_eq!(o.status.code(), Some(if own { 125 } else { 1 }), "{args:?}: {}", err(&o));
    }
    // Nothing was made or changed by any of them.
    assert_eq!(env.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]), "bb running\n");
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "");
    assert_eq!(env.ok(&["images", "-q"]).lines().count(), 1);
    env.ok(&["rm", "-f", "bb"]);
    assert_clean(&env, &[id]);
}

/// The monitor runs as the small `capsactl-monitor` binary beside capsactl, and its helpers
/// (`__exited`, `__start`) get their fds right: a restart with a terminal hands the new pty
/// master back over fd 4, the answer comes over fd 3.
#[test]
fn the_monitor_binary_restarts_a_container_with_a_terminal() {
    let env = Env::new("montty");
    load_busybox(&env);
    let run =
        ["run", "-d", "-t", "--name", "tty", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run on $(tty); sleep 1; exit 1"];
    let id = env.ok(&run).trim().to_string();
    // `run -d` returns once the container runs, which may be before the monitor has
    // exec'd its steady state: wait for it (each run lasts a second).
    let mut mon = String::new();
    until("the monitor's steady state", || {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmd = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default()).replace('\0', " ");
            if cmd.contains(&format!("id={id} ")) {
                mon = cmd;
                if mon.starts_with("capsactl-monitor ") {
                    return true;
                }
            }
        }
        false
    });
    assert!(mon.starts_with("capsactl-monitor id="), "{mon}");
    until("two restarts", || env.ok(&["inspect", "-f", "{{.RestartCount}} {{.State.Status}}", "tty"]) == "2 exited\n");
    let logs = env.ok(&["logs", "tty"]);
    assert_eq!(logs.matches("run on /dev/pts/").count(), 3, "{logs:?}");
    env.ok(&["rm", "tty"]);
    assert_clean(&env, &[id]);
}

/// The image is the attacker: its User is looked up in its own /etc/passwd and /etc/group,
/// read inside its root (a symlink to the host's file, a FIFO, an endless file do not get
/// through), ids that wrap to root refused; its WorkingDir is made and entered inside the
/// container, whatever symlinks lead there.
#[test]
fn a_hostile_images_user_and_working_dir_stay_inside_it() {
    let env = Env::new("hostile-cfg");
    let host_passwd = env.write("host-passwd", b"evil:x:0:0::/:/bin/sh\n");
    let host_dir = env.dir.join("host-wd");
    let load = |name: &str, extra: &dyn Fn(Layer) -> Layer, cfg: serde_json::Value| {
        let l = extra(Layer::new().busybox()).tar();
        let c = config(std::slice::from_ref(&l), cfg);
        let p = env.write(&format!("{name}.tar"), &docker_archive(&[l], &c, &[&format!("{name}:latest")]));
        env.ok(&["load", "-i", p.to_str().unwrap()]);
    };
    let passwd_link = format!("/../../../../..{}", host_passwd.display());
    // /etc/passwd a symlink to a host file naming "evil": not found (read inside the root).
    load("linked", &|l: Layer| l.symlink("etc/passwd", &passwd_link), serde_json::json!({"User": "evil", "Cmd": ["id"]}));
    let o = env.ctl(&["run", "--rm", "linked"]);
    assert!(!o.status.success() && err(&o).contains("unable to find user evil"), "{}", err(&o));
    // /etc/passwd a FIFO: refused at once, no hang.
    load("fifo", &|l: Layer| l.fifo("etc/passwd"), serde_json::json!({"User": "alice", "Cmd": ["id"]}));
    let o = env.ctl(&["run", "--rm", "fifo"]);
    assert!(!o.status.success() && err(&o).contains("not a regular file"), "{}", err(&o));
    // An id that would wrap to root.
    load("wrap", &|l: Layer| l, serde_json::json!({"User": "4294967296", "Cmd": ["id"]}));
    let o = env.ctl(&["run", "--rm", "wrap"]);
    assert!(!o.status.success() && err(&o).contains("CVE-2024-40635"), "{}", err(&o));
    // The named user of the image's own passwd works.
    load("alice", &|l: Layer| l, serde_json::json!({"User": "alice", "Cmd": ["id", "-u"]}));
    assert_eq!(env.ok(&["run", "--rm", "alice"]), "1000\n");
    // WorkingDir through a symlink climbing out: made and entered inside the container.
    let wd_link = format!("/../../../..{}", host_dir.display());
    load("wd", &|l: Layer| l.symlink("w", &wd_link), serde_json::json!({"WorkingDir": "/w/sub", "Cmd": ["pwd"]}));
    let o = env.ctl(&["run", "--rm", "wd"]);
    assert!(!host_dir.exists(), "the working dir was made on the host: {}", err(&o));
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), format!("{}/sub\n", host_dir.display()), "the container's own path");
    assert_eq!(env.ok(&["run", "--rm", "-w", "/made/here", "alice", "pwd"]), "/made/here\n");
    assert_clean(&env, &[]);
}

/// The README's walk through the container half of docker's tutorial, as typed there
/// (exec -it and logs -f are covered in containers.rs).
#[test]
fn the_readme_tutorial_runs() {
    let env = Env::new("tutorial");
    load_busybox(&env);
    let id = env
        .ok(&[
            "run",
            "-d",
            "--name",
            "app",
            "-v",
            "todo-db:/etc/todos",
            "busybox",
            "sh",
            "-c",
            "while true; do date >> /etc/todos/log; echo tick; sleep 1; done",
        ])
        .trim()
        .to_string();
    assert!(env.ok(&["ps"]).contains(" app\n"));
    until("a tick logged", || env.ok(&["logs", "app"]).contains("tick"));
    env.ok(&["stop", "app"]);
    env.ok(&["start", "app"]);
    env.ok(&["restart", "app"]);
    let log = env.dir.join("log");
    env.ok(&["cp", "app:/etc/todos/log", log.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&log).unwrap().lines().count() >= 1);
    env.ok(&["exec", "app", "sh", "-c", "echo configured > /etc/motd"]);
    env.ok(&["commit", "app", "app:v2"]);
    env.ok(&["rm", "-f", "app"]);
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "todo-db\n", "the named volume stays");
    let o =
        env.ok(&["run", "--rm", "-v", "todo-db:/etc/todos", "app:v2", "sh", "-c", "cat /etc/motd; test -s /etc/todos/log && echo kept"]);
    assert_eq!(o, "configured\nkept\n");
    assert!(env.ok(&["volume", "inspect", "todo-db"]).contains("\"Name\": \"todo-db\""));
    env.ok(&["volume", "rm", "todo-db"]);
    assert_clean(&env, &[id]);
}

/// commit reads a tree the container controls: a FIFO (never opened: it would block), a
/// symlink to a host path (kept as a link, not followed), a device node, a file still
/// growing; the layer holds them as they are.
#[test]
fn commit_of_a_hostile_upper_dir() {
    let env = Env::new("commit-hostile");
    load_busybox(&env);
    let secret = env.write("secret", b"HOST\n");
    let id = env
        .ok(&["run", "-d", "--name", "evil", "busybox", "sh", "-c", "while true; do echo grow >> /growing; usleep 1000; done"])
        .trim()
        .to_string();
    let setup = format!("mkfifo /fifo && ln -s {} /link && mknod /null c 1 3 && ln -s /proc/self/root /procroot", secret.display());
    env.ok(&["exec", "evil", "sh", "-c", &setup]);
    // Paused by default: the growing file is read as it is at that moment.
    env.ok(&["commit", "evil", "evil:1"]);
    let top = saved(&env, "evil:1");
    let mut kinds = std::collections::BTreeMap::new();
    for e in tar::Archive::new(&top[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let link = e.link_name().unwrap().map(|l| l.display().to_string()).unwrap_or_default();
        let mut data = String::new();
        if e.header().entry_type() == tar::EntryType::Regular {
            e.read_to_string(&mut data).unwrap();
        }
        kinds.insert(name, (e.header().entry_type(), link, data));
    }
    assert_eq!(kinds["fifo"].0, tar::EntryType::Fifo);
    assert_eq!(kinds["link"], (tar::EntryType::Symlink, secret.display().to_string(), String::new()), "the link itself");
    assert_eq!(kinds["procroot"].1, "/proc/self/root");
    assert_eq!(kinds["null"].0, tar::EntryType::Char);
    assert!(kinds["growing"].2.lines().all(|l| l == "grow"), "whole lines only: the container was paused");
    assert!(kinds.values().all(|(_, _, d)| !d.contains("HOST")), "nothing of the host's was read");
    // The image runs, its FIFO a FIFO.
    assert_eq!(env.ok(&["run", "--rm", "evil:1", "sh", "-c", "test -p /fifo && readlink /link"]), format!("{}\n", secret.display()));
    env.ok(&["rm", "-f", "evil"]);
    env.ok(&["rmi", "evil:1"]);
    assert_clean(&env, &[id]);
}

/// A container whose process name is not UTF-8 (its init is a script named `x\377`, which
/// the kernel takes as its command name) is still seen running: ps, inspect and stop.
#[test]
fn a_process_name_that_is_not_utf8_still_runs() {
    let env = Env::new("comm");
    load_busybox(&env);
    let script = "f=\"/x$(printf '\\377')\"; printf '#!/bin/sh\\nwhile :; do sleep 0.1; done\\n' > \"$f\"; chmod +x \"$f\"; exec \"$f\"";
    let id = env.ok(&["run", "-d", "--name", "comm", "busybox", "sh", "-c", script]).trim().to_string();
    let pid: i32 = env.ok(&["inspect", "-f", "{{.State.Pid}}", "comm"]).trim().parse().unwrap();
    until("the script runs as init", || std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_default() == b"x\xff\n");
    assert_eq!(env.ok(&["inspect", "-f", "{{.State.Status}}", "comm"]), "running\n");
    assert!(env.ok(&["ps"]).contains("Up "), "{}", env.ok(&["ps", "-a"]));
    env.ok(&["stop", "-t", "1", "comm"]);
    assert_eq!(env.ok(&["inspect", "-f", "{{.State.Status}}", "comm"]), "exited\n");
    env.ok(&["rm", "comm"]);
    assert_clean(&env, &[id]);
}

/// A deletion of a file whose name is not UTF-8 is committed as its own whiteout: a lossy
/// name would whiten out its `\u{FFFD}` twin and keep the deleted file in the image.
#[test]
fn commit_whiteouts_of_names_that_are_not_utf8() {
    let env = Env::new("commit-bytes");
    load_busybox(&env);
    let make = "mkdir /data && echo SECRET > \"/data/sec$(printf '\\377')\" && echo innocent > \"/data/sec$(printf '\\357\\277\\275')\"";
    env.ok(&["run", "--name", "mk", "busybox", "sh", "-c", make]);
    env.ok(&["commit", "mk", "bytes:1"]);
    env.ok(&["run", "--name", "del", "bytes:1", "sh", "-c", "rm \"/data/sec$(printf '\\377')\""]);
    env.ok(&["commit", "del", "bytes:2"]);
    assert_eq!(env.ok(&["run", "--rm", "bytes:2", "sh", "-c", "cat /data/*"]), "innocent\n", "the deleted file is still in the image");
    env.ok(&["rm", "mk", "del"]);
    env.ok(&["rmi", "bytes:2", "bytes:1"]);
    assert_clean(&env, &[]);
}

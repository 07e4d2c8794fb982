//! containerd-shim-capsa-v2 driven by a real containerd (the Debian package) through `ctr`.
//!
//! Every test starts its own containerd on a private socket with its own root, state, runtime
//! root and fifo dirs under `/tmp/csit-<pid>-<n>/`, in its own namespace, imports a busybox image
//! built offline with umoci, and on drop stops containerd and asserts that nothing is left: no
//! process mentioning the test dir or namespace, no mount under the dir, no cgroup named after the
//! namespace. The host's containerd socket and /run/containerd are never used.
//!
//! Runtimes: each scenario runs on runc (`/usr/sbin/runc`, the reference) and on capsa
//! (`$CAPSA_BIN`). containerd's PATH for the test has our shim as `containerd-shim-capsa-v2` and
//! also as `containerd-shim-runc-v2`, so `ctr run --runtime io.containerd.runc.v2 --runc-binary X`
//! reaches our shim with runc Options (BinaryName), the CRI deployment documented in README.
//! `--runtime io.containerd.capsa.v2` (no Options: the default binary `capsa` from PATH) is
//! exercised too. Every scenario runs in full on both runtimes; nothing is skipped.
//!
//! The shim binary and the `shim-task` example come from the same cargo profile as this test
//! (`cargo test --workspace` builds both); `CAPSA_SHIM_BIN` overrides the shim.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const IMAGE: &str = "docker.io/library/busybox-capsa:latest";
const RUNC: &str = "/usr/sbin/runc";

/// `target/<profile>`, the directory of this test's cargo profile.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn shim_bin() -> PathBuf {
    let p = match std::env::var_os("CAPSA_SHIM_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => profile_dir().join("containerd-shim-capsa-v2"),
    };
    assert!(p.is_file(), "{}: missing; build it: cargo build -p containerd-shim-capsa-v2 --examples", p.display());
    p
}

fn shim_task_bin() -> PathBuf {
    let p = profile_dir().join("examples/shim-task");
    assert!(p.is_file(), "{}: missing; build it: cargo build -p containerd-shim-capsa-v2 --examples", p.display());
    p
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Rt {
    Runc,
    Capsa,
}

impl Rt {
    fn bin(self) -> PathBuf {
        match self {
            Rt::Runc => PathBuf::from(RUNC),
            Rt::Capsa => runtime_bin().to_path_buf(),
        }
    }

    /// `ctr run` / `ctr create` flags selecting our shim and this runtime binary.
    fn run_flags(self) -> Vec<String> {
        vec!["--runtime".into(), "io.containerd.runc.v2".into(), "--runc-binary".into(), self.bin().display().to_string()]
    }
}

const RUNTIMES: [Rt; 2] = [Rt::Runc, Rt::Capsa];

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A private containerd. Drop stops it and checks that nothing is left behind.
struct Containerd {
    dir: PathBuf,
    ns: String,
    child: Option<Child>,
    out: PathBuf,
}

impl Containerd {
    fn start() -> Containerd {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        // Both end in a marker so that test 1's names are not substrings of test 10's.
        let dir = PathBuf::from(format!("/tmp/csit-{}-{n}-d", std::process::id()));
        let ns = format!("csit{}n{n}x", std::process::id());
        let _ = fs::remove_dir_all(&dir);
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(dir.join("fifo")).unwrap();
        let shim = shim_bin();
        std::os::unix::fs::symlink(&shim, bin.join("containerd-shim-capsa-v2")).unwrap();
        std::os::unix::fs::symlink(&shim, bin.join("containerd-shim-runc-v2")).unwrap();
        std::os::unix::fs::symlink(runtime_bin(), bin.join("capsa")).unwrap();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
            d = dir.display()
        );
        fs::write(dir.join("config.toml"), config).unwrap();
        let out = dir.join("out");
        let mut cd = Containerd { dir, ns, child: None, out };
        cd.spawn_daemon();
        let tar = busybox_image_tar(&cd.dir);
        cd.ctr(&["images", "import", "--base-name", "docker.io/library/busybox-capsa"]).arg(tar).run().ok();
        cd
    }

    fn spawn_daemon(&mut self) {
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .env("PATH", format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", self.dir.join("bin").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let up = wait_until(POLL_TIMEOUT, || self.sock().exists() && self.ctr(&["version"]).run().success());
        assert!(up, "containerd did not come up:\n{}", self.log());
    }

    /// Stop containerd (SIGTERM, as a service manager would) and start it again.
    fn restart(&mut self) {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        child.wait().unwrap();
        let _ = fs::remove_file(self.sock());
        self.spawn_daemon();
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Cmd {
        Cmd::new("ctr", &self.out).arg("-a").arg(self.sock()).args(["-n", &self.ns]).args(args)
    }

    /// `ctr run` with our shim on `rt`; fifos in the private fifo dir.
    fn run(&self, rt: Rt, flags: &[&str], id: &str, cmd: &[&str]) -> Cmd {
        let fifo = self.dir.join("fifo").display().to_string();
        self.ctr(&["run", "--fifo-dir", &fifo]).args(rt.run_flags()).args(flags).args([IMAGE, id]).args(cmd)
    }

    /// `ctr run --rm` in the background with a pipe as its stdin, output to a file.
    fn spawn_ctr_run(&self, rt: Rt, id: &str, cmd: &[&str]) -> Bg {
        let fifo = self.dir.join("fifo").display().to_string();
        let mut args: Vec<String> = vec!["-a".into(), self.sock().display().to_string(), "-n".into(), self.ns.clone()];
        args.extend(["run", "--rm", "--fifo-dir", &fifo].map(String::from));
        args.extend(rt.run_flags());
        args.extend([IMAGE, id].map(String::from));
        args.extend(cmd.iter().map(|a| a.to_string()));
        self.spawn_ctr(&args, id)
    }

    /// `ctr ARGS` in the background with a pipe as its stdin, stdout+stderr to a file.
    fn spawn_ctr(&self, args: &[String], tag: &str) -> Bg {
        let out = self.dir.join(format!("{tag}-{}.out", SEQ.fetch_add(1, Ordering::Relaxed)));
        let f = fs::File::create(&out).unwrap();
        let child = Command::new("ctr").args(args).stdin(Stdio::piped()).stdout(f.try_clone().unwrap()).stderr(f).spawn().unwrap();
        Bg { child, out }
    }

    fn exec(&self, flags: &[&str], id: &str, exec_id: &str, cmd: &[&str]) -> Cmd {
        let fifo = self.dir.join("fifo").display().to_string();
        self.ctr(&["task", "exec", "--fifo-dir", &fifo, "--exec-id", exec_id]).args(flags).arg(id).args(cmd)
    }

    /// `sh -c` a command line inside a pty (util-linux `script`), for ctr's `-t`; `script -e`
    /// returns the exit code of the command.
    fn in_pty(&self, cmdline: &str) -> Output {
        Cmd::new("script", &self.out).args(["-qec", cmdline, "/dev/null"]).run()
    }

    fn ctr_line(&self) -> String {
        format!("ctr -a {} -n {}", self.sock().display(), self.ns)
    }

    fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr(&["task", "ls"]).run().ok();
        out.stdout.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(2).unwrap_or(&"").to_string())
        })
    }

    fn wait_status(&self, id: &str, want: &str) {
        poll(POLL_TIMEOUT, &format!("task {id} {want}"), || (self.task_status(id).as_deref() == Some(want)).then_some(()));
    }

    fn task_pid(&self, id: &str) -> i32 {
        let out = self.ctr(&["task", "ls"]).run().ok();
        out.stdout
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&id)).then(|| f[1].parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no task {id}:\n{out}"))
    }

    /// Live shim processes serving this containerd.
    fn shims(&self) -> Vec<i32> {
        let needle = format!("-address {}", self.sock().display());
        all_pids()
            .into_iter()
            .filter(|p| pid_alive(*p) && proc_cmdline(*p).contains("containerd-shim") && proc_cmdline(*p).contains(&needle))
            .collect()
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.dir.join("state/io.containerd.runtime.v2.task").join(&self.ns).join(id)
    }

    /// Kill -9 and remove a task and its container.
    fn remove(&self, id: &str) {
        if self.task_status(id).is_some_and(|s| s != "STOPPED") {
            self.ctr(&["task", "kill", "-s", "KILL", id]).run().ok();
            self.wait_status(id, "STOPPED");
        }
        self.ctr(&["task", "rm", id]).run().ok();
        self.ctr(&["container", "rm", id]).run().ok();
    }

    /// `ctr events` in the background, output to a file; stopped by [`Events::stop`].
    fn events(&self) -> Events {
        let path = self.dir.join(format!("events-{}.log", SEQ.fetch_add(1, Ordering::Relaxed)));
        let child = Command::new("ctr")
            .arg("-a")
            .arg(self.sock())
            .args(["-n", &self.ns, "events"])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&path).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // ctr subscribes asynchronously: publish a probe event (a namespace label) until ctr
        // shows it, so that nothing the test does next can happen before the subscription.
        let ev = Events { child, path };
        let probe = format!("probe{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let seen = wait_until(POLL_TIMEOUT, || {
            self.ctr(&["namespaces", "label", &self.ns, &format!("capsa.test/events={probe}")]).run().ok();
            ev.text().contains(&probe)
        });
        assert!(seen, "ctr events never showed the probe event:\n{}", ev.text());
        ev
    }
}

/// A `ctr` running in the background; killed on drop if still running.
struct Bg {
    child: Child,
    out: PathBuf,
}

impl Bg {
    fn write_stdin(&mut self, data: &[u8]) {
        self.child.stdin.as_mut().expect("stdin is a pipe").write_all(data).unwrap();
    }

    fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Its exit code, waiting at most POLL_TIMEOUT (then it is killed and the test fails).
    #[track_caller]
    fn wait(&mut self) -> Option<i32> {
        let mut status = None;
        let done = wait_until(POLL_TIMEOUT, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(done, "ctr did not finish in {POLL_TIMEOUT:?}: {}", read(&self.out));
        status.and_then(|s| s.code())
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Events {
    child: Child,
    path: PathBuf,
}

impl Events {
    fn text(&self) -> String {
        fs::read_to_string(&self.path).unwrap_or_default()
    }

    /// Wait until a line has `topic` and all of `has`; return the lines so far.
    fn wait_for(&self, topic: &str, has: &[&str]) -> Vec<String> {
        let ok = wait_until(POLL_TIMEOUT, || self.text().lines().any(|l| l.contains(topic) && has.iter().all(|h| l.contains(h))));
        assert!(ok, "no {topic} event with {has:?}:\n{}", self.text());
        self.text().lines().map(str::to_string).collect()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Remove what a failed test left, then stop containerd. Checks come after the cleanup.
        let mut leftover_shims = Vec::new();
        if let Some(mut child) = self.child.take() {
            let out = self.ctr(&["task", "ls", "-q"]).run();
            for id in out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = self.ctr(&["task", "kill", "-s", "KILL", id]).run();
                wait_until(Duration::from_secs(5), || self.task_status(id).is_none_or(|s| s == "STOPPED"));
                let _ = self.ctr(&["task", "rm", "-f", id]).run();
            }
            let out = self.ctr(&["container", "ls", "-q"]).run();
            for id in out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = self.ctr(&["container", "rm", id]).run();
            }
            // Shims exit shortly after their last task is deleted.
            wait_until(Duration::from_secs(5), || self.shims().is_empty());
            leftover_shims = self.shims();
            for p in &leftover_shims {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Runtime state of containers the shims did not delete (only after a failure).
        for rt in RUNTIMES {
            let root = self.dir.join("runc").join(&self.ns);
            if let Ok(rd) = fs::read_dir(&root) {
                for e in rd.flatten() {
                    let _ = Command::new(rt.bin())
                        .arg("--root")
                        .arg(&root)
                        .args(["delete", "--force"])
                        .arg(e.file_name())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        let prefix = format!("{}/", self.dir.display());
        let mut mounts: Vec<String> = host_mount_points().into_iter().filter(|m| m.starts_with(&prefix)).collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in &mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        // ctr's default cgroups are /<namespace>/<id>; the runtime removes the leaf only.
        for d in cgroup_dirs_for(&self.ns).into_iter().rev() {
            let _ = fs::remove_dir(&d);
        }
        let procs: Vec<String> = processes_for(&self.ns).into_iter().chain(processes_for(&self.dir.display().to_string())).collect();
        let keep = std::thread::panicking() && std::env::var_os("CAPSA_IT_KEEP").is_some();
        if !keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
        if !std::thread::panicking() {
            assert!(leftover_shims.is_empty(), "shims still running after every task was removed: {leftover_shims:?}");
            assert!(mounts.is_empty(), "mounts left under {}: {mounts:?}", self.dir.display());
            assert!(procs.is_empty(), "processes left: {procs:?}");
            let cgs = cgroup_dirs_for(&self.ns);
            assert!(cgs.is_empty(), "cgroups left: {cgs:?}");
            assert!(!self.dir.exists() || keep, "{} not removed", self.dir.display());
        }
    }
}

#[test]
fn run_rm_output_exit_code_and_stdin() {
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("rm-{rt:?}").to_lowercase();
        // The second before the exit is for ctr 1.6, not the runtime: `ctr run` opens its end of
        // the fifos in goroutines and cancels those not open yet when the task has exited, so
        // under load a container that exits at once could lose a stream with any runtime.
        let out = cd.run(rt, &["--rm"], &id, &["sh", "-c", "echo out-$((1+2)); echo err-line >&2; sleep 1; exit 3"]).run();
        assert_eq!(out.code, Some(3), "{rt:?}: exit code\n{out}");
        assert!(out.stdout.contains("out-3"), "{rt:?}: stdout\n{out}");
        assert!(out.stderr.contains("err-line"), "{rt:?}: stderr\n{out}");
        // stdin is copied in, and its end reaches the container (cat exits) through CloseIO,
        // which ctr sends when its own stdin ends — here after the container said it is ready
        // (ctr sends none for an input that ended before its task existed, with any shim).
        let id_in = format!("{id}-in");
        let mut ctr = cd.spawn_ctr_run(rt, &id_in, &["sh", "-c", "echo ready; cat; echo eof-seen"]);
        wait_file_contains(&ctr.out, "ready\n");
        ctr.write_stdin(b"line one\nline two\n");
        ctr.close_stdin();
        let code = ctr.wait();
        let text = read(&ctr.out);
        assert_eq!(code, Some(0), "{rt:?}: {text}");
        assert!(text.contains("ready\nline one\nline two\neof-seen"), "{rt:?}: stdin\n{text}");
        // The shim exits once its last task is deleted.
        assert!(wait_until(POLL_TIMEOUT, || cd.shims().is_empty()), "{rt:?}: shim still running: {:?}", cd.shims());
        assert!(cd.ctr(&["container", "ls", "-q"]).run().ok().stdout.trim().is_empty());
    }
}

#[test]
fn capsa_runtime_name_uses_capsa_from_path() {
    let cd = Containerd::start();
    let fifo = cd.dir.join("fifo").display().to_string();
    cd.ctr(&["run", "-d", "--fifo-dir", &fifo, "--runtime", "io.containerd.capsa.v2", IMAGE, "byname", "sleep", "100"]).run().ok();
    cd.wait_status("byname", "RUNNING");
    // No Options: the default binary `capsa` and root `<dir of containerd's socket>/runc/<ns>`.
    let opts: Value = serde_json::from_str(&fs::read_to_string(cd.bundle("byname").join("options.json")).unwrap()).unwrap();
    assert_eq!(opts["binary_name"], "capsa", "{opts}");
    let root = cd.dir.join("runc").join(&cd.ns);
    assert_eq!(opts["root"], root.display().to_string(), "{opts}");
    let st = Cmd::new(runtime_bin(), &cd.out).arg("--root").arg(&root).args(["state", "byname"]).run().ok();
    assert_eq!(st.json()["status"], "running", "{st}");
    cd.remove("byname");
}

#[test]
fn detached_exec_kill_delete() {
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("det-{rt:?}").to_lowercase();
        cd.run(rt, &["-d"], &id, &["sleep", "100"]).run().ok();
        cd.wait_status(&id, "RUNNING");
        let pid = cd.task_pid(&id);
        assert!(pid_alive(pid));
        // The reference (containerd 1.6's Go shim with runc) once lost the whole output of
        // this exec in a full run (exit code right, stdout empty): there it waits a moment
        // before printing. capsa's shim is held to the immediate exec.
        let pre = if matches!(rt, Rt::Runc) { "sleep 0.3; " } else { "" };
        let cmd = format!("{pre}echo in-exec $(cat /proc/1/cmdline | tr '\\0' ' '); exit 5");
        let out = cd.exec(&[], &id, "e1", &["sh", "-c", &cmd]).run();
        assert_eq!(out.code, Some(5), "{rt:?}\n{out}");
        assert!(out.stdout.contains("in-exec sleep 100"), "{rt:?}\n{out}");
        // A failing exec reports the runtime's error, and the task keeps running.
        let bad = cd.exec(&[], &id, "e2", &["/no/such/binary"]).run();
        assert_ne!(bad.code, Some(0), "{bad}");
        assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"));
        // SIGTERM is ignored by sleep as pid 1 (the kernel drops it when it is sent, before
        // `kill` returns); SIGKILL is not. An exec after it proves the task still runs.
        cd.ctr(&["task", "kill", &id]).run().ok();
        cd.exec(&[], &id, "e3", &["true"]).run().ok();
        assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"), "{rt:?}");
        cd.ctr(&["task", "kill", "-s", "KILL", &id]).run().ok();
        cd.wait_status(&id, "STOPPED");
        wait_pid_dead(pid);
        // Killing a stopped task: containerd's "not found".
        let again = cd.ctr(&["task", "kill", "-s", "KILL", &id]).run();
        assert_ne!(again.code, Some(0), "{again}");
        cd.ctr(&["task", "rm", &id]).run().ok();
        cd.ctr(&["container", "rm", &id]).run().ok();
        assert!(!cd.bundle(&id).exists(), "bundle left");
        assert!(fs::read_dir(cd.dir.join("runc").join(&cd.ns)).map(|d| d.count()).unwrap_or(0) == 0, "runtime state left");
    }
}

/// ctr sets the window size (ResizePty) only after the process started: poll for it (up to 10 s).
const WINSIZE: &str = "i=0; while [ $i -lt 100 ]; do s=$(stty size </dev/tty 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != \"0 0\" ] && break; sleep 0.1; i=$((i+1)); done; echo \"size=$s\"";

#[test]
fn tty_run_and_exec() {
    let cd = Containerd::start();
    let ctr = cd.ctr_line();
    let fifo = cd.dir.join("fifo").display().to_string();
    for rt in RUNTIMES {
        let id = format!("tty-{rt:?}").to_lowercase();
        let rflags = rt.run_flags().join(" ");
        let out = cd.in_pty(&format!(
            "stty cols 91 rows 33; {ctr} run --rm -t --fifo-dir {fifo} {rflags} {IMAGE} {id} sh -c 'tty; {WINSIZE}; exit 4'"
        ));
        assert_eq!(out.code, Some(4), "{rt:?}\n{out}");
        assert!(out.stdout.contains("/dev/pts/"), "{rt:?}: not a tty\n{out}");
        assert!(out.stdout.contains("size=33 91"), "{rt:?}: window size not passed\n{out}");
        let id = format!("ttyx-{rt:?}").to_lowercase();
        cd.run(rt, &["-d"], &id, &["sleep", "100"]).run().ok();
        cd.wait_status(&id, "RUNNING");
        let out = cd.in_pty(&format!(
            "stty cols 77 rows 22; {ctr} task exec -t --fifo-dir {fifo} --exec-id x1 {id} sh -c 'tty; {WINSIZE}; exit 6'"
        ));
        assert_eq!(out.code, Some(6), "{rt:?}\n{out}");
        assert!(out.stdout.contains("/dev/pts/"), "{rt:?}: exec not a tty\n{out}");
        assert!(out.stdout.contains("size=22 77"), "{rt:?}: exec window size\n{out}");
        cd.remove(&id);
    }
}

#[test]
fn pause_resume_with_events() {
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("pause-{rt:?}").to_lowercase();
        let ev = cd.events();
        cd.run(rt, &["-d"], &id, &["sleep", "100"]).run().ok();
        cd.wait_status(&id, "RUNNING");
        let pid = cd.task_pid(&id);
        cd.ctr(&["task", "pause", &id]).run().ok();
        cd.wait_status(&id, "PAUSED");
        let freezer = cgroup_dir_of(pid, "freezer").unwrap().join("freezer.state");
        assert_eq!(fs::read_to_string(&freezer).unwrap().trim(), "FROZEN", "{rt:?}");
        cd.ctr(&["task", "resume", &id]).run().ok();
        cd.wait_status(&id, "RUNNING");
        assert_eq!(fs::read_to_string(&freezer).unwrap().trim(), "THAWED", "{rt:?}");
        let lines = ev.wait_for("/tasks/resumed", &[&id]);
        assert!(lines.iter().any(|l| l.contains("/tasks/paused") && l.contains(&id)), "{lines:?}");
        cd.remove(&id);
    }
}

#[test]
fn metrics_and_pids() {
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("met-{rt:?}").to_lowercase();
        cd.run(rt, &["-d", "--memory-limit", "134217728"], &id, &["sleep", "100"]).run().ok();
        cd.wait_status(&id, "RUNNING");
        let pid = cd.task_pid(&id);
        let out = cd.ctr(&["task", "metrics", &id]).run().ok();
        let metric = |k: &str| -> String {
            out.stdout
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.first() == Some(&k)).then(|| f.get(1).unwrap_or(&"").to_string())
                })
                .unwrap_or_else(|| panic!("{rt:?}: no {k}:\n{out}"))
        };
        assert_eq!(metric("memory.limit_in_bytes"), "134217728", "{rt:?}\n{out}");
        assert!(metric("memory.usage_in_bytes").parse::<u64>().unwrap() > 0, "{out}");
        assert_eq!(metric("pids.current"), "1", "{rt:?}\n{out}");
        // No pids limit: containerd's convention is 0, not cgroupfs' "max" as a number.
        assert_eq!(metric("pids.limit"), "0", "{rt:?}\n{out}");
        assert!(metric("cpuacct.usage").parse::<u64>().unwrap() > 0, "{out}");
        let ps = cd.ctr(&["task", "ps", &id]).run().ok();
        assert!(ps.stdout.lines().any(|l| l.split_whitespace().next() == Some(&pid.to_string())), "{rt:?}\n{ps}");
        cd.exec(&["--detach"], &id, "bg1", &["sleep", "50"]).run().ok();
        let ps = poll(POLL_TIMEOUT, "exec in ps", || {
            let ps = cd.ctr(&["task", "ps", &id]).run().ok();
            (ps.stdout.lines().count() == 3).then_some(ps)
        });
        assert!(ps.stdout.contains("bg1"), "{rt:?}: exec id not in ps INFO\n{ps}");
        cd.remove(&id);
    }
}

#[test]
fn update_memory_limit() {
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("upd-{rt:?}").to_lowercase();
        cd.run(rt, &["-d"], &id, &["sleep", "100"]).run().ok();
        cd.wait_status(&id, "RUNNING");
        let pid = cd.task_pid(&id);
        let limit = cgroup_dir_of(pid, "memory").unwrap().join("memory.limit_in_bytes");
        // ctr 1.6 has no `task update`: call the shim's Update directly on its socket.
        let addr = fs::read_to_string(cd.bundle(&id).join("address")).unwrap();
        let input = cd.dir.join("resources.json");
        fs::write(&input, r#"{"memory":{"limit":67108864}}"#).unwrap();
        Cmd::new(shim_task_bin(), &cd.out).args([addr.trim(), "update", &id]).stdin(Stdin::File(input)).run().ok();
        assert_eq!(fs::read_to_string(&limit).unwrap().trim(), "67108864", "{rt:?}");
        // A bad value comes back as the runtime's error.
        let bad = cd.dir.join("bad.json");
        fs::write(&bad, r#"{"memory":{"limit":1024}}"#).unwrap();
        let out = Cmd::new(shim_task_bin(), &cd.out).args([addr.trim(), "update", &id]).stdin(Stdin::File(bad)).run();
        assert_eq!(out.code, Some(1), "{rt:?}: {out}");
        assert!(out.stderr.contains("update"), "{out}");
        cd.remove(&id);
    }
}

#[test]
fn oom_kill_is_reported() {
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("oom-{rt:?}").to_lowercase();
        let ev = cd.events();
        // dd's 64 MiB buffer in a 16 MiB cgroup (no swap on this host).
        let out =
            cd.run(rt, &["--rm", "--memory-limit", "16777216"], &id, &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]).run();
        assert_eq!(out.code, Some(137), "{rt:?}\n{out}");
        let lines = ev.wait_for("/tasks/oom", &[&format!("\"container_id\":\"{id}\"")]);
        let oom = lines.iter().position(|l| l.contains("/tasks/oom")).unwrap();
        let exit = lines.iter().position(|l| l.contains("/tasks/exit") && l.contains(&id)).unwrap();
        assert!(oom < exit, "oom after exit: {lines:?}");
        assert!(lines[exit].contains("\"exit_status\":137"), "{}", lines[exit]);
    }
}

#[test]
fn one_shim_per_group() {
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let group = format!("io.containerd.runc.v2.group=pod-{rt:?}");
        let (a, b) = (format!("ga-{rt:?}").to_lowercase(), format!("gb-{rt:?}").to_lowercase());
        cd.run(rt, &["-d", "--annotation", &group], &a, &["sleep", "100"]).run().ok();
        cd.run(rt, &["-d", "--annotation", &group], &b, &["sleep", "100"]).run().ok();
        cd.wait_status(&a, "RUNNING");
        cd.wait_status(&b, "RUNNING");
        let shims = cd.shims();
        assert_eq!(shims.len(), 1, "{rt:?}: one shim for the group: {shims:?}");
        let (pa, pb) = (cd.task_pid(&a), cd.task_pid(&b));
        // Both inits are children of that shim (it is their subreaper).
        for p in [pa, pb] {
            let ppid = status_field(&fs::read_to_string(format!("/proc/{p}/status")).unwrap(), "PPid").unwrap();
            assert_eq!(ppid.parse::<i32>().unwrap(), shims[0], "{rt:?}: parent of {p}");
        }
        // A container outside the group gets its own shim.
        let solo = format!("solo-{rt:?}").to_lowercase();
        cd.run(rt, &["-d"], &solo, &["sleep", "100"]).run().ok();
        assert!(wait_until(POLL_TIMEOUT, || cd.shims().len() == 2), "{rt:?}: {:?}", cd.shims());
        cd.remove(&solo);
        // `task rm` returns after containerd's Delete and Shutdown calls to the shim: it must
        // have refused to exit, and still serve the group's other task.
        cd.remove(&a);
        assert_eq!(cd.task_status(&b).as_deref(), Some("RUNNING"));
        let ps = cd.ctr(&["task", "ps", &b]).run().ok();
        assert!(ps.stdout.contains(&pb.to_string()), "{rt:?}: {ps}");
        assert_eq!(cd.shims(), shims, "{rt:?}: the shim must stay for the group's other task");
        cd.remove(&b);
        assert!(wait_until(POLL_TIMEOUT, || cd.shims().is_empty()), "{rt:?}: shim did not exit: {:?}", cd.shims());
        // No zombies were left behind by the shim while it ran: it is gone, and so is every pid.
        wait_pid_dead(pa);
        wait_pid_dead(pb);
    }
}

#[test]
fn killed_shim_leaves_containerd_able_to_clean_up() {
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("k9-{rt:?}").to_lowercase();
        let ev = cd.events();
        cd.run(rt, &["-d"], &id, &["sleep", "100"]).run().ok();
        cd.wait_status(&id, "RUNNING");
        let pid = cd.task_pid(&id);
        let shims = cd.shims();
        assert_eq!(shims.len(), 1);
        let addr = fs::read_to_string(cd.bundle(&id).join("address")).unwrap();
        let sock = PathBuf::from(addr.trim().trim_start_matches("unix://"));
        assert!(sock.exists());
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(shims[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
        // containerd runs `shim delete`: the runtime kills and deletes the container.
        ev.wait_for("/tasks/exit", &[&id, "\"exit_status\":137"]);
        wait_pid_dead(pid);
        assert!(wait_until(POLL_TIMEOUT, || cd.task_status(&id).is_none()), "{rt:?}: task still listed");
        cd.ctr(&["container", "rm", &id]).run().ok();
        assert!(!sock.exists(), "{rt:?}: dead shim's socket left: {}", sock.display());
        assert!(fs::read_dir(cd.dir.join("runc").join(&cd.ns)).map(|d| d.count()).unwrap_or(0) == 0, "runtime state left");
    }
}

#[test]
fn init_exit_published_after_execs() {
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("order-{rt:?}").to_lowercase();
        let ev = cd.events();
        // In the test's (host's) pid namespace: the kernel does not kill the execs with the init (in a
        // pid namespace of its own it would, and would report them first anyway); the shim
        // kills them (`kill --all`) and must hold the init's exit back until they are gone.
        let host_pid_ns = format!("pid:/proc/{}/ns/pid", std::process::id());
        cd.run(rt, &["-d", "--with-ns", &host_pid_ns], &id, &["sleep", "100"]).run().ok();
        cd.wait_status(&id, "RUNNING");
        for e in ["x1", "x2"] {
            cd.exec(&["--detach"], &id, e, &["sleep", "100"]).run().ok();
        }
        poll(POLL_TIMEOUT, "execs running", || (cd.ctr(&["task", "ps", &id]).run().ok().stdout.lines().count() == 4).then_some(()));
        let ps = cd.ctr(&["task", "ps", &id]).run().ok();
        let pids: Vec<i32> = ps.stdout.lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
        cd.ctr(&["task", "kill", "-s", "KILL", &id]).run().ok();
        let lines = ev.wait_for("/tasks/exit", &[&format!("\"id\":\"{id}\"")]);
        let init = lines.iter().position(|l| l.contains("/tasks/exit") && l.contains(&format!("\"id\":\"{id}\""))).unwrap();
        for e in ["x1", "x2"] {
            let ex = lines
                .iter()
                .position(|l| l.contains("/tasks/exit") && l.contains(&format!("\"id\":\"{e}\"")))
                .unwrap_or_else(|| panic!("{rt:?}: no exit event for exec {e} before the init's: {lines:?}"));
            assert!(ex < init, "{rt:?}: init exit published before exec {e} exited: {lines:?}");
            assert!(lines[ex].contains("\"exit_status\":137"), "{rt:?}: exec {e} not killed: {}", lines[ex]);
        }
        for p in pids {
            wait_pid_dead(p);
        }
        cd.remove(&id);
    }
}

#[test]
fn stdio_log_uris() {
    let cd = Containerd::start();
    // A logging binary: fd 3 = stdout, fd 4 = stderr; closing fd 5 says "ready".
    let logger = cd.dir.join("logger.sh");
    fs::write(&logger, "#!/bin/sh\ncat <&3 >\"$2\" 5>&- &\ncat <&4 >\"$4\" 5>&- &\nexec 5>&-\nwait\n").unwrap();
    fs::set_permissions(&logger, fs::Permissions::from_mode(0o755)).unwrap();
    for rt in RUNTIMES {
        let id = format!("logf-{rt:?}").to_lowercase();
        let file = cd.dir.join(format!("{id}.log"));
        let uri = format!("file://{}", file.display());
        cd.run(rt, &["--rm", "--log-uri", &uri], &id, &["sh", "-c", "echo to-file; echo err-to-file >&2"]).run().ok();
        let text = fs::read_to_string(&file).unwrap();
        assert!(text.contains("to-file\n") && text.contains("err-to-file\n"), "{rt:?}: {text:?}");

        let id = format!("logb-{rt:?}").to_lowercase();
        let (o, e) = (cd.dir.join(format!("{id}.out")), cd.dir.join(format!("{id}.err")));
        let uri = format!("binary://{}?out={}&err={}", logger.display(), o.display(), e.display());
        cd.run(rt, &["--rm", "--log-uri", &uri], &id, &["sh", "-c", "echo via-binary; echo err-via-binary >&2"]).run().ok();
        assert!(
            wait_until(POLL_TIMEOUT, || fs::read_to_string(&o).unwrap_or_default() == "via-binary\n"),
            "{rt:?}: {:?}",
            fs::read_to_string(&o)
        );
        assert!(
            wait_until(POLL_TIMEOUT, || fs::read_to_string(&e).unwrap_or_default() == "err-via-binary\n"),
            "{rt:?}: {:?}",
            fs::read_to_string(&e)
        );
    }
}

#[test]
fn containerd_restart_keeps_tasks_and_output() {
    let mut cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("rst-{rt:?}").to_lowercase();
        cd.run(rt, &["-d"], &id, &["sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.05; done"]).run().ok();
        cd.wait_status(&id, "RUNNING");
        let pid = cd.task_pid(&id);
        let shims = cd.shims();
        cd.restart();
        // The new containerd reconnects to the same shim; the task lives on.
        cd.wait_status(&id, "RUNNING");
        assert_eq!(cd.task_pid(&id), pid);
        assert_eq!(cd.shims(), shims);
        // Output kept flowing into the fifo while nobody read it, and reaches a new reader.
        let attach_out = cd.dir.join(format!("{id}.attach"));
        let mut attach = Command::new("ctr")
            .arg("-a")
            .arg(cd.sock())
            .args(["-n", &cd.ns, "task", "attach", &id])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&attach_out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let seen = wait_until(POLL_TIMEOUT, || {
            let t = fs::read_to_string(&attach_out).unwrap_or_default();
            t.lines().filter(|l| l.starts_with("tick-")).count() >= 5
        });
        let _ = attach.kill();
        let _ = attach.wait();
        assert!(seen, "{rt:?}: no output after the restart: {:?}", fs::read_to_string(&attach_out));
        // Events reach the new containerd.
        let ev = cd.events();
        cd.ctr(&["task", "kill", "-s", "KILL", &id]).run().ok();
        ev.wait_for("/tasks/exit", &[&format!("\"id\":\"{id}\"")]);
        cd.remove(&id);
    }
}

/// An exec whose background child keeps stdout open returns once the exec'd process exits: the
/// shim closes the client's fifo then, not when the last holder of the pipe goes.
#[test]
fn exec_returns_when_the_process_exits() {
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("execbg-{rt:?}").to_lowercase();
        cd.run(rt, &["-d"], &id, &["sleep", "100"]).run().ok();
        cd.wait_status(&id, "RUNNING");
        let out = cd.exec(&[], &id, "bg", &["sh", "-c", "sleep 600 & echo started"]).timeout(POLL_TIMEOUT).run();
        assert_eq!(out.code, Some(0), "{rt:?}: exec did not return when its process exited\n{out}");
        assert_eq!(out.stdout.trim(), "started", "{rt:?}\n{out}");
        // The background sleep lives on in the container.
        let ps = cd.ctr(&["task", "ps", &id]).run().ok();
        assert_eq!(ps.stdout.lines().count(), 3, "{rt:?}: init and the background sleep\n{ps}");
        cd.remove(&id);
    }
}

/// A client that attaches to stdin and leaves is not the end of the container's input: only
/// CloseIO is. Here `ctr run -d` and then a first `ctr task attach` leave; a second attach still
/// feeds `cat`.
#[test]
fn attached_client_leaving_does_not_close_stdin() {
    let cd = Containerd::start();
    let fifo = cd.dir.join("fifo").display().to_string();
    let sock = cd.sock().display().to_string();
    for rt in RUNTIMES {
        let id = format!("attach-{rt:?}").to_lowercase();
        let mut args: Vec<String> = ["-a", &sock, "-n", &cd.ns, "run", "-d", "--fifo-dir", &fifo].map(String::from).to_vec();
        args.extend(rt.run_flags());
        args.extend([IMAGE, &id, "cat"].map(String::from));
        // ctr's own stdin stays open (so it sends no CloseIO); ctr exits after the start.
        let mut run = cd.spawn_ctr(&args, &id);
        assert_eq!(run.wait(), Some(0), "{rt:?}: {}", read(&run.out));
        cd.wait_status(&id, "RUNNING");
        let attach_args: Vec<String> = ["-a", &sock, "-n", &cd.ns, "task", "attach", &id].map(String::from).to_vec();
        for word in ["first", "second"] {
            let mut attach = cd.spawn_ctr(&attach_args, &format!("{id}-{word}"));
            // Written until echoed: ctr attaches asynchronously.
            let seen = wait_until(POLL_TIMEOUT, || {
                attach.write_stdin(format!("{word}\n").as_bytes());
                read(&attach.out).contains(word)
            });
            assert!(seen, "{rt:?}: {word} attach got no echo (task {:?}): {}", cd.task_status(&id), read(&attach.out));
            // The client leaves (killed: it sends no CloseIO).
            drop(attach);
        }
        assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"), "{rt:?}");
        drop(run);
        cd.remove(&id);
    }
}

/// Kill of an exited task is NotFound (what CRI's StopContainer and StopPodSandbox ignore), and
/// `kill --all` still reaches the runtime, which signals what is left in the cgroup.
#[test]
fn kill_of_an_exited_task() {
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("killx-{rt:?}").to_lowercase();
        cd.run(rt, &["-d"], &id, &["true"]).run().ok();
        cd.wait_status(&id, "STOPPED");
        let out = cd.ctr(&["task", "kill", "-s", "KILL", &id]).run();
        assert_ne!(out.code, Some(0), "{rt:?}: {out}");
        assert!(out.stderr.contains("not found"), "{rt:?}: want NotFound\n{out}");
        cd.ctr(&["task", "kill", "--all", "-s", "KILL", &id]).run().ok();
        cd.remove(&id);
    }
}

/// runc Options `SystemdCgroup = true` (`ctr run --runc-systemd-cgroup`, what CRI sets for
/// kubelet's systemd driver) reaches the runtime as `--systemd-cgroup`: the task's cgroup is a
/// systemd scope, gone once the task is deleted. hack/systemd-vm.sh runs it (systemd as PID 1).
#[test]
#[ignore = "needs systemd as PID 1 (hack/systemd-vm.sh runs it)"]
fn systemd_cgroup_option_reaches_the_runtime() {
    assert!(Path::new("/run/systemd/system").is_dir(), "needs systemd as PID 1 (hack/systemd-vm.sh)");
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("sd{}", rt.bin().file_name().unwrap().to_string_lossy());
        let unit = format!("csit-{}-{id}.scope", cd.ns);
        let path = format!("system.slice:csit-{}:{id}", cd.ns);
        cd.run(rt, &["-d", "--runc-systemd-cgroup", "--cgroup", &path], &id, &["sleep", "100"]).run().ok();
        cd.wait_status(&id, "RUNNING");
        let pid = cd.task_pid(&id);
        let cg = read(format!("/proc/{pid}/cgroup"));
        assert!(cg.lines().any(|l| l.ends_with(&format!(":/system.slice/{unit}"))), "{rt:?}: {cg}");
        let opts = read(cd.bundle(&id).join("options.json"));
        assert!(opts.contains("\"systemd_cgroup\":true"), "{rt:?}: {opts}");
        let show = |p: &str| {
            let o = Command::new("systemctl").args(["show", "-p", p, &unit]).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        assert_eq!(show("ActiveState"), "ActiveState=active", "{rt:?}");
        cd.remove(&id);
        assert_eq!(show("LoadState"), "LoadState=not-found", "{rt:?}: the task's unit is gone");
    }
}

/// containerd's default seccomp profile (`ctr run --seccomp`; CRI's `RuntimeDefault`, which
/// Kubernetes asks for, is made by the same code in containerd) loads and applies, through
/// the shim, on the reference runtime and on the one under test (issue 11: the stock
/// profiles of docker, podman, containerd and Kubernetes must all load).
#[test]
fn containerd_default_seccomp_profile() {
    let cd = Containerd::start();
    for rt in RUNTIMES {
        let id = format!("seccomp-{rt:?}").to_lowercase();
        let out = cd.run(rt, &["--rm", "--seccomp"], &id, &["cat", "/proc/self/status"]).run().ok();
        let mode = out.stdout.lines().find_map(|l| l.strip_prefix("Seccomp:")).map(str::trim);
        assert_eq!(mode, Some("2"), "{rt:?}: a filter is loaded: {out}");
        assert!(wait_until(POLL_TIMEOUT, || cd.shims().is_empty()), "{rt:?}: shim still running");
    }
}

//! containerd-shim-capsa-v2 driven directly, the way containerd drives it (`shim start`, then the
//! Task API over ttrpc, events back to an Events service), without containerd: so it also runs
//! in the pure cgroup v2 VM (hack/cgroup2-vm.sh), where there is no containerd. What it checks
//! depends on cgroups only: Stats (v1 Metrics on a v1/hybrid host, v2 Metrics on pure v2) and
//! the OOM event published before the exit it caused.
//!
//! Each test has its own directory `/tmp/cshd-<pid>-<n>/` (bundle, sockets, runtime root), its
//! containers under the cgroup `/cshd-<pid>-<n>/`, and checks on drop that the shim exited and
//! no process, mount or cgroup is left.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use capsa_integration::*;
use containerd_shim_protos::api::{
    CreateTaskRequest, DeleteRequest, Empty, ForwardRequest, ShutdownRequest, StartRequest, StatsRequest, WaitRequest,
};
use containerd_shim_protos::cgroups::metrics::Metrics as V1Metrics;
use containerd_shim_protos::cgroups_v2::metrics::Metrics as V2Metrics;
use containerd_shim_protos::shim_sync::{create_events, Events};
use containerd_shim_protos::{Client, TaskClient};
use protobuf::Message;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn shim_bin() -> PathBuf {
    let p = match std::env::var_os("CAPSA_SHIM_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let exe = std::env::current_exe().unwrap();
            exe.parent().and_then(Path::parent).unwrap().join("containerd-shim-capsa-v2")
        }
    };
    assert!(p.is_file(), "{}: missing; build it: cargo build -p containerd-shim-capsa-v2", p.display());
    p
}

fn pure_v2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup").map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC).unwrap()
}

/// containerd's Events service: records the topics the shim forwards.
#[derive(Default)]
struct Recorder {
    topics: Mutex<Vec<String>>,
}

impl Events for Recorder {
    fn forward(&self, _ctx: &ttrpc::TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let env = req.envelope.as_ref();
        self.topics.lock().unwrap().push(env.map(|e| e.topic.clone()).unwrap_or_default());
        Ok(Empty::new())
    }
}

struct Harness {
    dir: PathBuf,
    ns: String,
    cgroup: String,
    events: Arc<Recorder>,
    server: Option<ttrpc::Server>,
    shims: Vec<i32>,
}

impl Harness {
    fn new() -> Harness {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/cshd-{}-{n}-d", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).unwrap();
        std::os::unix::fs::symlink(runtime_bin(), dir.join("bin/capsa")).unwrap();
        let events = Arc::new(Recorder::default());
        let sock = dir.join("events.sock");
        let mut server = ttrpc::Server::new()
            .bind(&format!("unix://{}", sock.display()))
            .unwrap()
            .register_service(create_events(Arc::clone(&events) as Arc<dyn Events + Send + Sync>));
        server.start().unwrap();
        Harness {
            cgroup: format!("cshd-{}-{n}", std::process::id()),
            ns: format!("cshd{}n{n}", std::process::id()),
            dir,
            events,
            server: Some(server),
            shims: Vec::new(),
        }
    }

    /// A bundle for container `id` running `args`, with a memory limit (bytes) if given.
    fn bundle(&self, id: &str, args: &[&str], memory: Option<i64>) -> PathBuf {
        let b = self.dir.join(id);
        let mut cmd = Command::new("sh");
        cmd.arg(workspace_root().join("hack/mkbundle.sh")).arg(&b).args(args);
        let out = run_host_cmd(cmd, CMD_TIMEOUT);
        assert!(out.success(), "{out}");
        let mut cfg: Value = serde_json::from_str(&read(b.join("config.json"))).unwrap();
        set_ptr(&mut cfg, "/linux/cgroupsPath", json!(format!("/{}/{id}", self.cgroup)));
        if let Some(m) = memory {
            set_ptr(&mut cfg, "/linux/resources/memory", json!({"limit": m}));
        }
        fs::write(b.join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        b
    }

    /// `shim start` as containerd runs it (cwd = bundle); returns a Task client on its address.
    fn start_shim(&mut self, id: &str, bundle: &Path) -> TaskClient {
        let out = Command::new(shim_bin())
            .args(["-namespace", &self.ns, "-id", id, "-address"])
            .arg(self.dir.join("c.sock"))
            .args(["-publish-binary", "/bin/true", "start"])
            .current_dir(bundle)
            .env("TTRPC_ADDRESS", self.dir.join("events.sock"))
            .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.dir.join("bin").display()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let addr = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success() && addr.starts_with("unix://"), "shim start: {out:?}");
        let client = TaskClient::new(Client::connect(&addr).unwrap());
        let c = client.connect(ctx(), &Default::default()).unwrap();
        self.shims.push(c.shim_pid as i32);
        client
    }

    fn topics(&self) -> Vec<String> {
        self.events.topics.lock().unwrap().clone()
    }
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(20_000_000_000)
}

impl Drop for Harness {
    fn drop(&mut self) {
        for p in &self.shims {
            let gone = wait_until(POLL_TIMEOUT, || pid_dead(*p));
            if !gone {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), nix::sys::signal::Signal::SIGKILL);
                if !std::thread::panicking() {
                    panic!("shim {p} did not exit after Shutdown");
                }
            }
        }
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        // The runtime removes the container's cgroup; the per-test parent is ours to remove.
        let parents = cgroup_dirs_for(&self.cgroup);
        let leaves: Vec<PathBuf> = parents
            .iter()
            .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten().filter(|e| e.path().is_dir()).map(|e| e.path()))
            .collect();
        for d in parents.iter().rev() {
            let _ = fs::remove_dir(d);
        }
        let procs = processes_for(&self.dir.display().to_string());
        let _ = fs::remove_dir_all(&self.dir);
        if !std::thread::panicking() {
            assert!(leaves.is_empty(), "cgroups left: {leaves:?}");
            assert!(procs.is_empty(), "processes left: {procs:?}");
        }
    }
}

/// An OOM kill is published as /tasks/oom before the /tasks/exit it caused, on v1 (eventfd on
/// memory.oom_control) and on v2 (memory.events), through the shim's one event loop.
#[test]
fn oom_event_before_exit() {
    let mut h = Harness::new();
    // dd's 64 MiB buffer in a 16 MiB cgroup (no swap here or in the VM).
    let b = h.bundle("oom", &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"], Some(16 << 20));
    let c = h.start_shim("oom", &b);
    let req = CreateTaskRequest { id: "oom".into(), bundle: b.display().to_string(), ..Default::default() };
    c.create(ctx(), &req).unwrap();
    c.start(ctx(), &StartRequest { id: "oom".into(), ..Default::default() }).unwrap();
    let w = c.wait(ctx(), &WaitRequest { id: "oom".into(), ..Default::default() }).unwrap();
    assert_eq!(w.exit_status, 137, "killed by the OOM killer");
    let topics = poll(POLL_TIMEOUT, "the exit event", || {
        let t = h.topics();
        t.iter().any(|t| t == "/tasks/exit").then_some(t)
    });
    let oom = topics.iter().position(|t| t == "/tasks/oom").unwrap_or_else(|| panic!("no /tasks/oom: {topics:?}"));
    let exit = topics.iter().position(|t| t == "/tasks/exit").unwrap();
    assert!(oom < exit, "{topics:?}");
    c.delete(ctx(), &DeleteRequest { id: "oom".into(), ..Default::default() }).unwrap();
    c.shutdown(ctx(), &ShutdownRequest { id: "oom".into(), ..Default::default() }).ok();
}

/// Stats in the format of the host's cgroups, with containerd's conventions: no pids limit is
/// 0, the memory limit as set.
#[test]
fn stats_match_the_cgroup_version() {
    let mut h = Harness::new();
    let b = h.bundle("stats", &["sleep", "100"], Some(64 << 20));
    let c = h.start_shim("stats", &b);
    let req = CreateTaskRequest { id: "stats".into(), bundle: b.display().to_string(), ..Default::default() };
    c.create(ctx(), &req).unwrap();
    c.start(ctx(), &StartRequest { id: "stats".into(), ..Default::default() }).unwrap();
    let s = c.stats(ctx(), &StatsRequest { id: "stats".into(), ..Default::default() }).unwrap();
    let any = s.stats.as_ref().unwrap();
    if pure_v2() {
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = V2Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage_limit, 64 << 20, "{m:?}");
        assert!(m.memory.usage > 0, "{m:?}");
        assert_eq!((m.pids.current, m.pids.limit), (1, 0), "{m:?}");
        assert!(m.cpu.usage_usec > 0, "{m:?}");
    } else {
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = V1Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage.limit, 64 << 20, "{m:?}");
        assert!(m.memory.usage.usage > 0, "{m:?}");
        assert_eq!((m.pids.current, m.pids.limit), (1, 0), "{m:?}");
        assert!(m.cpu.usage.total > 0, "{m:?}");
    }
    c.kill(ctx(), &containerd_shim_protos::api::KillRequest { id: "stats".into(), signal: 9, ..Default::default() }).unwrap();
    let w = c.wait(ctx(), &WaitRequest { id: "stats".into(), ..Default::default() }).unwrap();
    assert_eq!(w.exit_status, 137);
    c.delete(ctx(), &DeleteRequest { id: "stats".into(), ..Default::default() }).unwrap();
    c.shutdown(ctx(), &ShutdownRequest { id: "stats".into(), ..Default::default() }).ok();
}

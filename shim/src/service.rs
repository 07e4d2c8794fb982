//! The task service: containerd's Task API v2 on top of the runtime binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use capsa_cgroups::{Manager, OomEvent, OomWatcher};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::shim::oci::{CheckpointOptions, ProcessDetails};
use containerd_shim_protos::shim::shim::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest,
    ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest,
    WaitResponse,
};
use containerd_shim_protos::topics::*;
use containerd_shim_protos::types::empty::Empty;
use containerd_shim_protos::types::task::{ProcessInfo, Status};
use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::Message;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use ttrpc::{self, Code, TtrpcContext};

use crate::io::{self as pio, ProcIo, StdioPaths};
use crate::publisher::Event;
use crate::reactor::{Events, Reactor, Source};
use crate::reaper::Reaper;
use crate::runtime::{CmdStdio, Runtime, RuntimeOpts};
use crate::server::Responder;

/// How long an exited process's output may take to reach its fifo before the fifo is closed.
const DRAIN: Duration = Duration::from_secs(2);

fn err(code: Code, msg: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

fn internal(msg: impl ToString) -> ttrpc::Error {
    err(Code::UNKNOWN, msg)
}

fn now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut t = Timestamp::new();
    t.seconds = d.as_secs() as i64;
    t.nanos = d.subsec_nanos() as i32;
    t
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct PState {
    pid: i32,
    status: Status,
    exit_status: u32,
    exited_at: Option<Timestamp>,
    io: Option<Arc<ProcIo>>,
    /// Wait requests answered when the process exits (no thread waits for them).
    waiters: Vec<Responder>,
}

struct Proc {
    exec_id: String,
    stdio: StdioPaths,
    /// Exec: the OCI process JSON from the Exec request.
    spec: Vec<u8>,
    st: Mutex<PState>,
    cv: Condvar,
}

impl Proc {
    fn new(exec_id: &str, stdio: StdioPaths, spec: Vec<u8>) -> Proc {
        Proc {
            exec_id: exec_id.to_string(),
            stdio,
            spec,
            st: Mutex::new(PState { pid: 0, status: Status::CREATED, exit_status: 0, exited_at: None, io: None, waiters: Vec::new() }),
            cv: Condvar::new(),
        }
    }

    fn io(&self) -> Option<Arc<ProcIo>> {
        lock(&self.st).io.clone()
    }

    /// The process is gone: its output reaches the fifos (bounded), then Wait is answered.
    fn set_exited(&self, code: i32) -> (i32, Timestamp) {
        if let Some(io) = self.io() {
            io.process_exited(DRAIN);
        }
        let mut st = lock(&self.st);
        st.status = Status::STOPPED;
        st.exit_status = code as u32;
        let ts = now();
        st.exited_at = Some(ts.clone());
        let waiters = std::mem::take(&mut st.waiters);
        let resp = WaitResponse { exit_status: st.exit_status, exited_at: st.exited_at.clone().into(), ..Default::default() };
        let pid = st.pid;
        self.cv.notify_all();
        drop(st);
        for w in waiters {
            w.send(Ok(resp.clone()));
        }
        (pid, ts)
    }

    fn status(&self) -> Status {
        lock(&self.st).status
    }
}

#[derive(Default)]
struct CState {
    execs: HashMap<String, Arc<Proc>>,
    /// Execs started (or starting) and not yet exited.
    running_execs: usize,
    /// Init exited while execs were still running: published when the last one exits.
    pending_init_exit: Option<i32>,
}

struct Container {
    id: String,
    bundle: PathBuf,
    rootfs_mounted: bool,
    runtime: Runtime,
    own_pid_ns: bool,
    /// The container's cgroup, found from its init's pid (capsa-cgroups).
    cgroup: Option<Box<dyn Manager>>,
    oom: Option<Arc<OomSource>>,
    init: Arc<Proc>,
    st: Mutex<CState>,
}

/// OOM notifications of one container, on the shim's one event loop.
struct OomSource {
    id: String,
    watcher: Mutex<Option<OomWatcher>>,
    token: AtomicU64,
    reactor: Arc<Reactor>,
    events: Sender<Event>,
}

impl OomSource {
    fn start(id: &str, cg: &dyn Manager, reactor: &Arc<Reactor>, events: Sender<Event>) -> Result<Arc<OomSource>, String> {
        let w = OomWatcher::new(&cg.paths()).map_err(|e| e.to_string())?;
        let src = Arc::new(OomSource {
            id: id.to_string(),
            watcher: Mutex::new(None),
            token: AtomicU64::new(0),
            reactor: Arc::clone(reactor),
            events,
        });
        // Held across the registration: an event that comes at once waits for the token.
        let mut g = lock(&src.watcher);
        let token = reactor.add(w.as_fd(), Events::EPOLLIN, Arc::clone(&src) as Arc<dyn Source>).map_err(|e| e.to_string())?;
        src.token.store(token, Ordering::SeqCst);
        *g = Some(w);
        drop(g);
        Ok(src)
    }

    /// Publish OOM kills not published yet; stop watching once the cgroup is gone.
    fn check(&self) {
        let mut g = lock(&self.watcher);
        let Some(w) = g.as_mut() else { return };
        match w.check() {
            Ok(OomEvent::Oom(_)) => match to_any(EVENTS, &TaskOOM { container_id: self.id.clone(), ..Default::default() }) {
                Ok(any) => {
                    let _ = self.events.send((TASK_OOM_EVENT_TOPIC, any));
                }
                Err(e) => log::error!("encode oom event: {e}"),
            },
            Ok(OomEvent::Timeout) => {}
            Ok(OomEvent::Gone) | Err(_) => self.stop_locked(&mut g),
        }
    }

    fn stop_locked(&self, g: &mut Option<OomWatcher>) {
        if let Some(w) = g.take() {
            self.reactor.remove(w.as_fd(), self.token.load(Ordering::SeqCst));
        }
    }

    fn stop(&self) {
        let mut g = lock(&self.watcher);
        self.stop_locked(&mut g);
    }
}

impl Source for OomSource {
    fn ready(&self, _reactor: &Reactor, _token: u64, _events: Events) {
        self.check();
    }
}

struct ExitMsg {
    id: String,
    exec_id: String,
    code: i32,
}

pub struct Service {
    namespace: String,
    address: String,
    reaper: Arc<Reaper>,
    reactor: Arc<Reactor>,
    /// Where cgroups are (decides the Metrics format).
    cgroup_mode: Option<capsa_cgroups::Mode>,
    events: Sender<Event>,
    exits: Sender<ExitMsg>,
    /// Shutdown was asked for and may be honoured: the server stops after answering it.
    exiting: AtomicBool,
    containers: Mutex<HashMap<String, Arc<Container>>>,
}

/// Default `--root` for the runtime: `<dir of containerd's socket>/runc/<namespace>`, which for
/// the default socket is containerd-shim-runc-v2's `/run/containerd/runc/<namespace>`; a private
/// containerd (tests) keeps its runtime state next to its socket.
pub fn default_root(address: &str, namespace: &str) -> String {
    let dir = Path::new(address.trim_start_matches("unix://")).parent().unwrap_or(Path::new("/run/containerd"));
    dir.join("runc").join(namespace).display().to_string()
}

pub const DEFAULT_BINARY: &str = "capsa";

/// Protobuf packages of the messages the shim packs in an Any.
const EVENTS: &str = "containerd.events";
const RUNC_V1: &str = "containerd.runc.v1";

/// `m` in an Any, its type URL `<package>.<name>` as containerd's typeurl registers it. Built
/// from the name rather than protobuf reflection (`descriptor_dyn`), which would build the whole
/// descriptor pool on the heap and fault in the reflection code, for a type name.
fn to_any<M: Message>(package: &str, m: &M) -> Result<Any, String> {
    let mut any = Any::new();
    any.type_url = format!("{package}.{}", M::NAME);
    any.value = m.write_to_bytes().map_err(|e| e.to_string())?;
    Ok(any)
}

fn has_own_pid_ns(bundle: &Path) -> bool {
    let Ok(data) = std::fs::read(bundle.join("config.json")) else { return true };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) else { return true };
    v.pointer("/linux/namespaces")
        .and_then(|n| n.as_array())
        .map(|ns| {
            ns.iter().any(|n| {
                n.get("type").and_then(|t| t.as_str()) == Some("pid") && n.get("path").and_then(|p| p.as_str()).unwrap_or("").is_empty()
            })
        })
        .unwrap_or(false)
}

fn unmount_rootfs(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    // Lazy unmount, repeated for stacked mounts; stops at EINVAL (not a mount point).
    for _ in 0..16 {
        if nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
}

/// Mount one rootfs mount from the Create request (overlay from the snapshotter, or a bind).
/// Not the containerd-shim crate's mount_rootfs: it forks and waits through the crate's own
/// reaper, which this shim does not run.
fn mount_one(fstype: &str, source: &str, options: &[String], target: &Path) -> Result<(), String> {
    use nix::mount::MsFlags;
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "suid" | "dev" | "exec" | "defaults" => (MsFlags::empty(), MsFlags::empty()),
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    let data = data.join(",");
    if data.len() >= 4096 - 512 {
        return Err(format!("mount options of {source} too long ({} bytes)", data.len()));
    }
    let fstype = if fstype.is_empty() || flags.contains(MsFlags::MS_BIND) { None } else { Some(fstype) };
    let first = if flags.contains(MsFlags::MS_BIND) { flags - MsFlags::MS_RDONLY } else { flags };
    nix::mount::mount(Some(source), target, fstype, first, (!data.is_empty()).then_some(data.as_str())).map_err(|e| e.to_string())?;
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        // A bind mount becomes read-only only by a remount.
        nix::mount::mount(None::<&str>, target, None::<&str>, flags | MsFlags::MS_REMOUNT, None::<&str>).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A runtime `kill` failure as containerd-shim-runc-v2 maps it: an exited process or a missing
/// container is NotFound (StopPodSandbox and CRI's StopContainer ignore that), else Unknown.
fn kill_error(id: &str, e: String) -> ttrpc::Error {
    let l = e.to_lowercase();
    if l.contains("process already finished") || l.contains("not running") || l.contains("no such process") {
        err(Code::NOT_FOUND, format!("{id}: process already finished: {e}"))
    } else if l.contains("does not exist") {
        err(Code::NOT_FOUND, format!("{id}: no such container: {e}"))
    } else {
        internal(format!("kill {id}: {e}"))
    }
}

impl Service {
    pub fn new(namespace: &str, address: &str, reaper: Arc<Reaper>, reactor: Arc<Reactor>, events: Sender<Event>) -> Arc<Service> {
        let (tx, rx) = std::sync::mpsc::channel::<ExitMsg>();
        let cgroup_mode = capsa_cgroups::detect().map_err(|e| log::warn!("cgroups: {e}")).ok();
        let s = Arc::new(Service {
            namespace: namespace.to_string(),
            address: address.to_string(),
            reaper,
            reactor,
            cgroup_mode,
            events,
            exits: tx,
            exiting: AtomicBool::new(false),
            containers: Mutex::new(HashMap::new()),
        });
        // Exits are handled off the reaper thread: handling may run the runtime (kill --all),
        // whose own exit only the reaper thread can deliver.
        let weak = Arc::downgrade(&s);
        let _ = std::thread::Builder::new().name("exits".into()).stack_size(256 * 1024).spawn(move || {
            for m in rx {
                let Some(s) = weak.upgrade() else { return };
                s.handle_exit(m);
            }
        });
        s
    }

    /// Wait, answered when the process exits rather than by a thread parked until then.
    pub fn wait_deferred(&self, payload: &[u8], r: Responder) {
        let req = match WaitRequest::parse_from_bytes(payload) {
            Ok(req) => req,
            Err(e) => return r.send::<WaitResponse>(Err(err(Code::INVALID_ARGUMENT, format!("wait request: {e}")))),
        };
        log::debug!("wait {}", req.id);
        let p = match self.get(&req.id).and_then(|c| self.process(&c, &req.exec_id)) {
            Ok(p) => p,
            Err(e) => return r.send::<WaitResponse>(Err(e)),
        };
        let mut st = lock(&p.st);
        if st.status == Status::STOPPED {
            let resp = WaitResponse { exit_status: st.exit_status, exited_at: st.exited_at.clone().into(), ..Default::default() };
            drop(st);
            r.send(Ok(resp));
        } else {
            st.waiters.push(r);
        }
    }

    /// Shutdown was asked for (and no container is left, or `now`).
    pub fn exiting(&self) -> bool {
        self.exiting.load(Ordering::SeqCst)
    }

    fn publish<M: Message>(&self, topic: &'static str, m: &M) {
        match to_any(EVENTS, m) {
            Ok(any) => {
                let _ = self.events.send((topic, any));
            }
            Err(e) => log::error!("encode event {topic}: {e}"),
        }
    }

    fn get(&self, id: &str) -> ttrpc::Result<Arc<Container>> {
        lock(&self.containers).get(id).cloned().ok_or_else(|| err(Code::NOT_FOUND, format!("container {id}: not found")))
    }

    fn process(&self, c: &Container, exec_id: &str) -> ttrpc::Result<Arc<Proc>> {
        if exec_id.is_empty() {
            return Ok(Arc::clone(&c.init));
        }
        lock(&c.st).execs.get(exec_id).cloned().ok_or_else(|| err(Code::NOT_FOUND, format!("exec {exec_id} of {}: not found", c.id)))
    }

    fn exit_callback(&self, id: &str, exec_id: &str) -> impl FnOnce(i32) + Send + 'static {
        let tx = self.exits.clone();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        move |code| {
            let _ = tx.send(ExitMsg { id, exec_id, code });
        }
    }

    fn handle_exit(&self, m: ExitMsg) {
        let Ok(c) = self.get(&m.id) else { return };
        if let Some(oom) = &c.oom {
            // An OOM kill is published before the exit it caused, and while the cgroup exists.
            oom.check();
        }
        if m.exec_id.is_empty() {
            let defer = {
                let mut st = lock(&c.st);
                if st.running_execs > 0 {
                    st.pending_init_exit = Some(m.code);
                    true
                } else {
                    false
                }
            };
            if !c.own_pid_ns {
                // Without its own pid namespace nothing kills the rest of the container.
                if let Err(e) = c.runtime.run(&["kill", "--all", &c.id, "9"], None) {
                    log::warn!("kill --all {}: {e}", c.id);
                }
            }
            if !defer {
                self.init_exited(&c, m.code);
            }
            return;
        }
        let Some(p) = lock(&c.st).execs.get(&m.exec_id).cloned() else { return };
        let (pid, ts) = p.set_exited(m.code);
        self.publish(
            TASK_EXIT_EVENT_TOPIC,
            &TaskExit {
                container_id: c.id.clone(),
                id: m.exec_id.clone(),
                pid: pid as u32,
                exit_status: m.code as u32,
                exited_at: Some(ts).into(),
                ..Default::default()
            },
        );
        self.exec_done(&c);
    }

    /// One running exec fewer; publishes a deferred init exit when it was the last.
    fn exec_done(&self, c: &Container) {
        let pending = {
            let mut st = lock(&c.st);
            st.running_execs = st.running_execs.saturating_sub(1);
            if st.running_execs == 0 {
                st.pending_init_exit.take()
            } else {
                None
            }
        };
        if let Some(code) = pending {
            self.init_exited(c, code);
        }
    }

    fn init_exited(&self, c: &Container, code: i32) {
        let (pid, ts) = c.init.set_exited(code);
        self.publish(
            TASK_EXIT_EVENT_TOPIC,
            &TaskExit {
                container_id: c.id.clone(),
                id: c.id.clone(),
                pid: pid as u32,
                exit_status: code as u32,
                exited_at: Some(ts).into(),
                ..Default::default()
            },
        );
    }

    fn do_create(&self, req: &CreateTaskRequest) -> ttrpc::Result<u32> {
        if req.id.is_empty() || req.bundle.is_empty() {
            return Err(err(Code::INVALID_ARGUMENT, "create: id and bundle are required"));
        }
        if !req.checkpoint.is_empty() {
            return Err(err(Code::UNIMPLEMENTED, "create from checkpoint: not supported on this host (CRIU does not work here)"));
        }
        if lock(&self.containers).contains_key(&req.id) {
            return Err(err(Code::ALREADY_EXISTS, format!("container {}: already exists", req.id)));
        }
        let bundle = PathBuf::from(&req.bundle);
        let opts = crate::options::parse(req.options.as_ref()).map_err(|e| err(Code::INVALID_ARGUMENT, e))?;
        let ropts = RuntimeOpts {
            binary_name: if opts.binary_name.is_empty() { DEFAULT_BINARY.to_string() } else { opts.binary_name.clone() },
            root: if opts.root.is_empty() {
                default_root(&self.address, &self.namespace)
            } else {
                Path::new(&opts.root).join(&self.namespace).display().to_string()
            },
            systemd_cgroup: opts.systemd_cgroup,
            no_pivot_root: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
            io_uid: opts.io_uid,
            io_gid: opts.io_gid,
        };
        ropts.save(&bundle).map_err(|e| internal(format!("write {}/options.json: {e}", bundle.display())))?;
        let runtime = Runtime::new(ropts.clone(), &bundle, Some(Arc::clone(&self.reaper)));

        let rootfs_mounted = !req.rootfs.is_empty();
        if rootfs_mounted {
            let target = bundle.join("rootfs");
            std::fs::create_dir_all(&target).map_err(|e| internal(format!("mkdir {}: {e}", target.display())))?;
            for m in &req.rootfs {
                if let Err(e) = mount_one(&m.type_, &m.source, &m.options, &target) {
                    unmount_rootfs(&bundle);
                    return Err(internal(format!("mount rootfs {} ({}): {e}", m.source, m.type_)));
                }
            }
        }
        let fail = |e: ttrpc::Error| {
            if rootfs_mounted {
                unmount_rootfs(&bundle);
            }
            e
        };
        let stdio = StdioPaths { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone(), terminal: req.terminal };
        let mut prep = pio::prepare(&stdio, ropts.io_uid, ropts.io_gid, &self.reaper, &req.id, &self.namespace)
            .map_err(|e| fail(internal(format!("stdio: {e}"))))?;
        let pid_file = bundle.join("init.pid");
        let pid_file_s = pid_file.display().to_string();
        let mut args = vec!["create", "--bundle", &req.bundle, "--pid-file", &pid_file_s];
        let cs_path = prep.console_socket.as_ref().map(|c| c.path.display().to_string());
        if let Some(p) = &cs_path {
            args.extend(["--console-socket", p.as_str()]);
        }
        if ropts.no_pivot_root {
            args.push("--no-pivot");
        }
        if ropts.no_new_keyring {
            args.push("--no-new-keyring");
        }
        args.push(&req.id);
        let watch = self.reaper.watch();
        let cmd_stdio = CmdStdio {
            stdin: std::mem::replace(&mut prep.stdin, std::process::Stdio::null()),
            stdout: std::mem::replace(&mut prep.stdout, std::process::Stdio::null()),
            stderr: std::mem::replace(&mut prep.stderr, std::process::Stdio::null()),
        };
        runtime.run_with(&args, cmd_stdio, None).map_err(|e| fail(internal(e)))?;
        let cleanup = |e: String| {
            let _ = runtime.run(&["delete", "--force", &req.id], None);
            fail(internal(e))
        };
        let io = pio::finish(&mut prep, &stdio, &self.reactor).map_err(|e| cleanup(format!("stdio: {e}")))?;
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .map_err(|e| e.to_string())
            .and_then(|s| s.trim().parse().map_err(|e: std::num::ParseIntError| e.to_string()))
            .map_err(|e| cleanup(format!("pid file {pid_file_s}: {e}")))?;
        let cgroup = capsa_cgroups::manager_for_pid(pid).map_err(|e| log::warn!("cgroup of {}: {e}", req.id)).ok();
        let init = Arc::new(Proc::new("", stdio.clone(), Vec::new()));
        {
            let mut st = lock(&init.st);
            st.pid = pid;
            st.io = Some(Arc::new(io));
        }
        let oom = cgroup.as_deref().and_then(|cg| {
            OomSource::start(&req.id, cg, &self.reactor, self.events.clone()).map_err(|e| log::warn!("oom watch {}: {e}", req.id)).ok()
        });
        let c = Arc::new(Container {
            oom,
            id: req.id.clone(),
            bundle: bundle.clone(),
            rootfs_mounted,
            runtime,
            own_pid_ns: has_own_pid_ns(&bundle),
            cgroup,
            init,
            st: Mutex::new(CState::default()),
        });
        lock(&self.containers).insert(req.id.clone(), Arc::clone(&c));
        self.reaper.claim(pid, &watch, self.exit_callback(&req.id, ""));
        drop(watch);
        self.publish(
            TASK_CREATE_EVENT_TOPIC,
            &TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                })
                .into(),
                checkpoint: req.checkpoint.clone(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        Ok(pid as u32)
    }

    fn start_exec(&self, c: &Arc<Container>, p: &Arc<Proc>) -> ttrpc::Result<u32> {
        if p.status() != Status::CREATED {
            return Err(err(Code::FAILED_PRECONDITION, format!("exec {}: already started", p.exec_id)));
        }
        {
            let mut st = lock(&c.st);
            if c.init.status() == Status::STOPPED || st.pending_init_exit.is_some() {
                return Err(err(Code::FAILED_PRECONDITION, format!("container {}: not running", c.id)));
            }
            st.running_execs += 1;
        }
        match self.start_exec_inner(c, p) {
            Ok(pid) => Ok(pid),
            Err(e) => {
                self.exec_done(c);
                Err(e)
            }
        }
    }

    fn start_exec_inner(&self, c: &Arc<Container>, p: &Arc<Proc>) -> ttrpc::Result<u32> {
        let spec_path = c.bundle.join(format!("process-{}.json", p.exec_id));
        let pid_file = c.bundle.join(format!("{}.pid", p.exec_id));
        std::fs::write(&spec_path, &p.spec).map_err(|e| internal(format!("write {}: {e}", spec_path.display())))?;
        let _rm = RemoveOnDrop(spec_path.clone());
        let mut prep = pio::prepare(&p.stdio, c.runtime.opts.io_uid, c.runtime.opts.io_gid, &self.reaper, &c.id, &self.namespace)
            .map_err(|e| internal(format!("stdio: {e}")))?;
        let (spec_s, pid_s) = (spec_path.display().to_string(), pid_file.display().to_string());
        let mut args = vec!["exec", "--process", &spec_s, "--detach", "--pid-file", &pid_s];
        let cs_path = prep.console_socket.as_ref().map(|c| c.path.display().to_string());
        if let Some(cs) = &cs_path {
            args.extend(["--console-socket", cs.as_str()]);
        }
        args.push(&c.id);
        let watch = self.reaper.watch();
        let cmd_stdio = CmdStdio {
            stdin: std::mem::replace(&mut prep.stdin, std::process::Stdio::null()),
            stdout: std::mem::replace(&mut prep.stdout, std::process::Stdio::null()),
            stderr: std::mem::replace(&mut prep.stderr, std::process::Stdio::null()),
        };
        c.runtime.run_with(&args, cmd_stdio, None).map_err(internal)?;
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .map_err(|e| e.to_string())
            .and_then(|s| s.trim().parse().map_err(|e: std::num::ParseIntError| e.to_string()))
            .map_err(|e| internal(format!("pid file {pid_s}: {e}")))?;
        let _ = std::fs::remove_file(&pid_file);
        let io = match pio::finish(&mut prep, &p.stdio, &self.reactor) {
            Ok(io) => Arc::new(io),
            Err(e) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                return Err(internal(format!("stdio: {e}")));
            }
        };
        {
            let mut st = lock(&p.st);
            st.pid = pid;
            st.status = Status::RUNNING;
            st.io = Some(io);
        }
        self.reaper.claim(pid, &watch, self.exit_callback(&c.id, &p.exec_id));
        self.publish(
            TASK_EXEC_STARTED_EVENT_TOPIC,
            &TaskExecStarted { container_id: c.id.clone(), exec_id: p.exec_id.clone(), pid: pid as u32, ..Default::default() },
        );
        Ok(pid as u32)
    }
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A signal number for kill(2); 0 (the existence check) is None.
fn signal_of(n: u32) -> ttrpc::Result<Option<nix::sys::signal::Signal>> {
    if n == 0 {
        return Ok(None);
    }
    nix::sys::signal::Signal::try_from(n as i32).map(Some).map_err(|_| err(Code::INVALID_ARGUMENT, format!("signal {n}: invalid")))
}

impl containerd_shim_protos::Task for Service {
    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        log::debug!("state {}", req.id);
        let c = self.get(&req.id)?;
        let p = self.process(&c, &req.exec_id)?;
        let st = lock(&p.st);
        Ok(StateResponse {
            id: if req.exec_id.is_empty() { c.id.clone() } else { req.exec_id.clone() },
            bundle: c.bundle.display().to_string(),
            pid: st.pid as u32,
            status: st.status.into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: st.exit_status,
            exited_at: st.exited_at.clone().into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn create(&self, _ctx: &TtrpcContext, req: CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
        log::debug!("create {}", req.id);
        let pid = self.do_create(&req)?;
        Ok(CreateTaskResponse { pid, ..Default::default() })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        log::debug!("start {}", req.id);
        let c = self.get(&req.id)?;
        let p = self.process(&c, &req.exec_id)?;
        let pid = if req.exec_id.is_empty() {
            if p.status() != Status::CREATED {
                return Err(err(Code::FAILED_PRECONDITION, format!("container {}: already started", c.id)));
            }
            c.runtime.run(&["start", &c.id], None).map_err(internal)?;
            let mut st = lock(&p.st);
            if st.status == Status::CREATED {
                st.status = Status::RUNNING;
            }
            let pid = st.pid as u32;
            drop(st);
            self.publish(TASK_START_EVENT_TOPIC, &TaskStart { container_id: c.id.clone(), pid, ..Default::default() });
            pid
        } else {
            self.start_exec(&c, &p)?
        };
        Ok(StartResponse { pid, ..Default::default() })
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        log::debug!("delete {}", req.id);
        let c = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            let p = self.process(&c, &req.exec_id)?;
            let status = p.status();
            if status == Status::RUNNING {
                return Err(err(Code::FAILED_PRECONDITION, format!("exec {}: still running", req.exec_id)));
            }
            lock(&c.st).execs.remove(&req.exec_id);
            if status == Status::CREATED {
                // Never started (or its start failed): release anyone in Wait.
                p.set_exited(255);
            }
            if let Some(io) = p.io() {
                io.wait_output(DRAIN);
            }
            let st = lock(&p.st);
            return Ok(DeleteResponse {
                pid: st.pid as u32,
                exit_status: st.exit_status,
                exited_at: st.exited_at.clone().into(),
                ..Default::default()
            });
        }
        let status = c.init.status();
        if status == Status::RUNNING || status == Status::PAUSED {
            return Err(err(Code::FAILED_PRECONDITION, format!("container {}: still running", c.id)));
        }
        // --force: a created (never started) init is killed first, as runc's shim does.
        if let Err(e) = c.runtime.run(&["delete", "--force", &c.id], None) {
            if !e.contains("not exist") && !e.contains("not found") {
                return Err(internal(e));
            }
        }
        if status == Status::CREATED {
            // Wait (bounded) for the killed init's exit so the response carries its status.
            let st = lock(&c.init.st);
            let _ = c.init.cv.wait_timeout_while(st, Duration::from_secs(2), |s| s.status != Status::STOPPED);
        }
        if let Some(io) = c.init.io() {
            io.wait_output(DRAIN);
        }
        if let Some(oom) = &c.oom {
            oom.stop();
        }
        let (pid, exit_status, exited_at) = {
            let st = lock(&c.init.st);
            (st.pid as u32, st.exit_status, st.exited_at.clone())
        };
        if c.rootfs_mounted {
            unmount_rootfs(&c.bundle);
        }
        lock(&self.containers).remove(&c.id);
        for p in lock(&c.st).execs.drain().map(|(_, p)| p) {
            if p.status() != Status::STOPPED {
                p.set_exited(255);
            }
        }
        self.publish(
            TASK_DELETE_EVENT_TOPIC,
            &TaskDelete {
                container_id: c.id.clone(),
                pid,
                exit_status,
                exited_at: exited_at.clone().into(),
                id: c.id.clone(),
                ..Default::default()
            },
        );
        Ok(DeleteResponse { pid, exit_status, exited_at: exited_at.into(), ..Default::default() })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        log::debug!("pids {}", req.id);
        let c = self.get(&req.id)?;
        let pids: Vec<i32> = match c.runtime.run(&["ps", "--format", "json", &c.id], None) {
            Ok(out) => serde_json::from_slice(&out.stdout).map_err(|e| internal(format!("ps output: {e}")))?,
            Err(e) => {
                // A runtime without `ps` (capsa before it has one): the cgroup's process list
                // is what `runc ps` reads too.
                match c.cgroup.as_ref().map(|cg| cg.pids()) {
                    Some(Ok(p)) => p,
                    _ => return Err(internal(e)),
                }
            }
        };
        let execs: HashMap<i32, String> = lock(&c.st).execs.values().map(|p| (lock(&p.st).pid, p.exec_id.clone())).collect();
        let mut processes = Vec::new();
        for pid in pids {
            let mut pi = ProcessInfo { pid: pid as u32, ..Default::default() };
            if let Some(exec_id) = execs.get(&pid) {
                if let Ok(any) = to_any(RUNC_V1, &ProcessDetails { exec_id: exec_id.clone(), ..Default::default() }) {
                    pi.info = Some(any).into();
                }
            }
            processes.push(pi);
        }
        Ok(PidsResponse { processes, ..Default::default() })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        log::debug!("pause {}", req.id);
        let c = self.get(&req.id)?;
        c.runtime.run(&["pause", &c.id], None).map_err(internal)?;
        {
            let mut st = lock(&c.init.st);
            if st.status == Status::RUNNING {
                st.status = Status::PAUSED;
            }
        }
        self.publish(TASK_PAUSED_EVENT_TOPIC, &TaskPaused { container_id: c.id.clone(), ..Default::default() });
        Ok(Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        log::debug!("resume {}", req.id);
        let c = self.get(&req.id)?;
        c.runtime.run(&["resume", &c.id], None).map_err(internal)?;
        {
            let mut st = lock(&c.init.st);
            if st.status == Status::PAUSED {
                st.status = Status::RUNNING;
            }
        }
        self.publish(TASK_RESUMED_EVENT_TOPIC, &TaskResumed { container_id: c.id.clone(), ..Default::default() });
        Ok(Empty::new())
    }

    fn checkpoint(&self, _ctx: &TtrpcContext, req: CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        log::debug!("checkpoint {}", req.id);
        let c = self.get(&req.id)?;
        let mut criu = std::process::Command::new("criu");
        let criu_ok =
            criu.arg("check").stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let criu_ok = self.reaper.spawn(criu_ok).ok().and_then(|(_, rx)| rx.recv().ok()) == Some(0);
        if !criu_ok {
            return Err(err(Code::UNIMPLEMENTED, "checkpoint: not supported on this host (`criu check` fails or criu is not installed)"));
        }
        let opts = match req.options.as_ref() {
            Some(a) if !a.value.is_empty() => CheckpointOptions::parse_from_bytes(&a.value)
                .map_err(|e| err(Code::INVALID_ARGUMENT, format!("checkpoint options: {e}")))?,
            _ => CheckpointOptions::new(),
        };
        let mut args = vec!["checkpoint", "--image-path", &req.path];
        if !opts.exit {
            args.push("--leave-running");
        }
        args.push(&c.id);
        c.runtime.run(&args, None).map_err(internal)?;
        Ok(Empty::new())
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        log::debug!("kill {}", req.id);
        let c = self.get(&req.id)?;
        let p = self.process(&c, &req.exec_id)?;
        if req.exec_id.is_empty() {
            // `--all` still goes to the runtime for a stopped init: what is left in its cgroup
            // (a shared pid namespace's orphans) is signalled, as containerd-shim-runc-v2 does.
            if p.status() == Status::STOPPED && !req.all {
                return Err(err(Code::NOT_FOUND, format!("container {}: process already finished", c.id)));
            }
            let sig = req.signal.to_string();
            let mut args = vec!["kill"];
            if req.all {
                args.push("--all");
            }
            args.extend([c.id.as_str(), sig.as_str()]);
            c.runtime.run(&args, None).map_err(|e| kill_error(&c.id, e))?;
            return Ok(Empty::new());
        }
        let sig = signal_of(req.signal)?;
        let st = lock(&p.st);
        if st.pid <= 0 {
            return Err(err(Code::FAILED_PRECONDITION, format!("exec {}: process not started", req.exec_id)));
        }
        if st.status != Status::RUNNING {
            return Err(err(Code::NOT_FOUND, format!("exec {}: process already finished", req.exec_id)));
        }
        // The pid is still ours (not reaped: its exit would have marked it stopped under this lock).
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.pid), sig).map_err(|e| kill_error(&req.exec_id, e.to_string()))?;
        Ok(Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        log::debug!("exec {}", req.id);
        let c = self.get(&req.id)?;
        if req.exec_id.is_empty() {
            return Err(err(Code::INVALID_ARGUMENT, "exec: exec_id is required"));
        }
        let spec = req.spec.as_ref().map(|a| a.value.clone()).unwrap_or_default();
        if serde_json::from_slice::<serde_json::Value>(&spec).is_err() {
            return Err(err(Code::INVALID_ARGUMENT, format!("exec {}: spec is not an OCI process JSON", req.exec_id)));
        }
        {
            let mut st = lock(&c.st);
            if st.execs.contains_key(&req.exec_id) {
                return Err(err(Code::ALREADY_EXISTS, format!("exec {}: already exists", req.exec_id)));
            }
            let stdio =
                StdioPaths { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone(), terminal: req.terminal };
            st.execs.insert(req.exec_id.clone(), Arc::new(Proc::new(&req.exec_id, stdio, spec)));
        }
        self.publish(
            TASK_EXEC_ADDED_EVENT_TOPIC,
            &TaskExecAdded { container_id: c.id.clone(), exec_id: req.exec_id.clone(), ..Default::default() },
        );
        Ok(Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        log::debug!("resize_pty {}", req.id);
        let c = self.get(&req.id)?;
        let p = self.process(&c, &req.exec_id)?;
        let st = lock(&p.st);
        match st.io.as_ref() {
            Some(io) => io.resize(req.width, req.height).map_err(|e| err(Code::FAILED_PRECONDITION, format!("resize: {e}")))?,
            None => return Err(err(Code::FAILED_PRECONDITION, "resize: process has no terminal")),
        }
        Ok(Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        log::debug!("close_io {}", req.id);
        let c = self.get(&req.id)?;
        let p = self.process(&c, &req.exec_id)?;
        if req.stdin {
            if let Some(io) = p.io() {
                io.close_io();
            }
        }
        Ok(Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        log::debug!("update {}", req.id);
        let c = self.get(&req.id)?;
        let data = req.resources.as_ref().map(|a| a.value.clone()).unwrap_or_default();
        if serde_json::from_slice::<serde_json::Value>(&data).is_err() {
            return Err(err(Code::INVALID_ARGUMENT, "update: resources are not an OCI LinuxResources JSON"));
        }
        c.runtime.run(&["update", "--resources", "-", &c.id], Some(&data)).map_err(internal)?;
        Ok(Empty::new())
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        log::debug!("stats {}", req.id);
        let c = self.get(&req.id)?;
        let cg = c.cgroup.as_ref().ok_or_else(|| err(Code::NOT_FOUND, format!("container {}: no cgroup", c.id)))?;
        let mode = self.cgroup_mode.ok_or_else(|| err(Code::NOT_FOUND, "no cgroup filesystem"))?;
        let stats = cg.stats().map_err(|e| internal(format!("stats {}: {e}", c.id)))?;
        let any = crate::metrics::to_any(mode, &stats, &cg.paths()).map_err(internal)?;
        Ok(StatsResponse { stats: Some(any).into(), ..Default::default() })
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        log::debug!("connect {}", req.id);
        let task_pid = self.get(&req.id).map(|c| lock(&c.init.st).pid as u32).unwrap_or(0);
        Ok(ConnectResponse { shim_pid: std::process::id(), task_pid, version: env!("CARGO_PKG_VERSION").to_string(), ..Default::default() })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        log::debug!("shutdown {}", req.id);
        if req.now || lock(&self.containers).is_empty() {
            self.exiting.store(true, Ordering::SeqCst);
        }
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: ttrpc::Error) -> Code {
        match e {
            ttrpc::Error::RpcStatus(s) => s.code.enum_value_or(Code::UNKNOWN),
            _ => Code::UNKNOWN,
        }
    }

    /// The runtime's words for an exited process or a missing container are NotFound, as
    /// containerd-shim-runc-v2 maps runc's; anything else stays an error.
    /// The type URLs containerd's typeurl knows these messages by.
    #[test]
    fn type_urls_without_reflection() {
        use protobuf::MessageFull;
        assert_eq!(to_any(EVENTS, &TaskExit::new()).map(|a| a.type_url), Ok("containerd.events.TaskExit".to_string()));
        for (url, full) in [
            (to_any(EVENTS, &TaskOOM::new()), TaskOOM::descriptor().full_name().to_string()),
            (to_any(EVENTS, &TaskExecStarted::new()), TaskExecStarted::descriptor().full_name().to_string()),
            (to_any(RUNC_V1, &ProcessDetails::new()), ProcessDetails::descriptor().full_name().to_string()),
        ] {
            assert_eq!(url.map(|a| a.type_url), Ok(full));
        }
    }

    #[test]
    fn kill_errors_map_like_the_go_shim() {
        for msg in [
            "capsa kill failed: container not running",
            "runc kill failed: container with id x is not running",
            "kill: os: process already finished",
            "kill: No such process",
        ] {
            assert_eq!(code(kill_error("c", msg.into())), Code::NOT_FOUND, "{msg}");
        }
        assert_eq!(code(kill_error("c", "capsa kill failed: container \"c\" does not exist".into())), Code::NOT_FOUND);
        assert_eq!(code(kill_error("c", "capsa kill failed: permission denied".into())), Code::UNKNOWN);
    }
}

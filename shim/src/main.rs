//! containerd-shim-capsa-v2: containerd's task API v2 (runtime `io.containerd.capsa.v2`) on top
//! of `capsa` or any binary with runc's command line (runc Options `BinaryName`).
//!
//! The shim is multi-threaded (ttrpc workers, stdio copiers, the reaper), so it never forks a
//! container itself: every container operation execs the runtime binary, as
//! containerd-shim-runc-v2 execs runc (DESIGN principle 1).
//!
//! Actions (containerd's shim protocol):
//! - `start`: print the ttrpc address of the shim serving this container's group, starting one if
//!   needed. Nothing else may reach stdout or stderr: containerd reads both as the address.
//! - `delete`: clean up after a shim that died (runtime `delete --force`, unmount the rootfs).
//! - no action: serve the task API on the listener passed as fd 3 (or `-socket`).

mod cgroup;
mod io;
mod reaper;
mod runtime;
mod service;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_sync::EventsClient;
use containerd_shim::{api, ExitSignal, Flags};
use protobuf::Message;
use sha2::{Digest, Sha256};

use crate::runtime::{Runtime, RuntimeOpts};
use crate::service::{Event, Service};

/// Labels (OCI annotations) whose value names the shim group: containers with the same value
/// share one shim process (one shim per pod).
const GROUP_LABELS: [&str; 2] = ["io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"];

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(args.get(1..).unwrap_or(&[])) {
        Ok(f) => f,
        Err(e) => fail(&format!("arguments: {e}")),
    };
    if flags.version {
        println!("containerd-shim-capsa-v2:\n  Version: {}\n  Runtime: io.containerd.capsa.v2", env!("CARGO_PKG_VERSION"));
        return;
    }
    if flags.namespace.is_empty() {
        fail("-namespace is required");
    }
    let r = match flags.action.as_str() {
        "start" => start(&flags),
        "delete" => delete(&flags),
        "" => serve(&flags),
        other => Err(format!("unknown action {other:?}")),
    };
    if let Err(e) = r {
        fail(&e);
    }
}

/// Errors only: on success `start` writes nothing but the address.
fn fail(msg: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "containerd-shim-capsa-v2: {msg}");
    std::process::exit(1);
}

fn group_id(id: &str, bundle: &Path) -> String {
    let Ok(data) = std::fs::read(bundle.join("config.json")) else { return id.to_string() };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&data) else { return id.to_string() };
    for l in GROUP_LABELS {
        if let Some(v) = spec.pointer("/annotations").and_then(|a| a.get(l)).and_then(|v| v.as_str()) {
            if !v.is_empty() {
                return v.to_string();
            }
        }
    }
    id.to_string()
}

/// `unix://<dir of containerd's socket>/s/<sha256(address/ns/group)>`: for the default socket
/// this is containerd-shim-runc-v2's `/run/containerd/s/<hash>`.
fn socket_address(address: &str, namespace: &str, group: &str) -> String {
    let path = Path::new(address).join(namespace).join(group);
    let hash = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let dir = Path::new(address.trim_start_matches("unix://")).parent().unwrap_or(Path::new("/run/containerd"));
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("unix://{}", dir.join("s").join(hex).display())
}

fn socket_path(addr: &str) -> &str {
    addr.strip_prefix("unix://").unwrap_or(addr)
}

fn shim_alive(addr: &str) -> bool {
    UnixStream::connect(socket_path(addr)).is_ok()
}

fn start(flags: &Flags) -> Result<(), String> {
    let cwd = std::env::current_dir().map_err(|e| format!("cwd: {e}"))?;
    let group = group_id(&flags.id, &cwd);
    let address = socket_address(&flags.address, &flags.namespace, &group);
    let path = PathBuf::from(socket_path(&address));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    }
    let listener = match UnixListener::bind(&path) {
        Ok(l) => Some(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            // Another container of the group already has a shim (or one is starting up).
            let mut alive = false;
            for _ in 0..50 {
                if shim_alive(&address) {
                    alive = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive {
                None
            } else {
                let _ = std::fs::remove_file(&path);
                Some(UnixListener::bind(&path).map_err(|e| format!("listen {}: {e}", path.display()))?)
            }
        }
        Err(e) => return Err(format!("listen {}: {e}", path.display())),
    };
    if let Some(listener) = listener {
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(["-namespace", &flags.namespace, "-id", &flags.id, "-address", &flags.address]);
        if !flags.publish_binary.is_empty() {
            cmd.args(["-publish-binary", &flags.publish_binary]);
        }
        if flags.debug {
            cmd.arg("-debug");
        }
        cmd.current_dir(&cwd).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let fd = listener.as_raw_fd();
        // SAFETY: runs in the child between fork and exec; `start` is single-threaded and the
        // closure only calls setsid/dup2/fcntl, which are async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if fd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            let _ = std::fs::remove_file(&path);
            format!("start shim: {e}")
        })?;
        drop(listener);
        // Options on stdin (the runc Options of the first container): the shim's cgroup.
        let mut data = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut data);
        if let Ok(any) = protobuf::well_known_types::any::Any::parse_from_bytes(&data) {
            if let Ok(Some(opts)) = service::parse_options(Some(&any)) {
                if !opts.shim_cgroup.is_empty() {
                    cgroup::add_pid(&opts.shim_cgroup, child.id()).map_err(|e| format!("shim cgroup {}: {e}", opts.shim_cgroup))?;
                }
            }
        }
        // Like containerd-shim-runc-v2: the shim goes just before containerd for the OOM killer.
        let _ = cgroup::adjust_oom_score(child.id());
    }
    containerd_shim::util::write_address(&address).map_err(|e| format!("write address: {e}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes()).and_then(|_| out.flush()).map_err(|e| format!("stdout: {e}"))?;
    Ok(())
}

fn delete(flags: &Flags) -> Result<(), String> {
    let bundle =
        if flags.bundle.is_empty() { std::env::current_dir().map_err(|e| format!("cwd: {e}"))? } else { PathBuf::from(&flags.bundle) };
    let opts = RuntimeOpts::load(&bundle).unwrap_or_else(|| RuntimeOpts {
        binary_name: service::DEFAULT_BINARY.to_string(),
        root: service::default_root(&flags.address, &flags.namespace),
        ..Default::default()
    });
    let rt = Runtime::new(opts, &bundle, None);
    if let Err(e) = rt.run(&["delete", "--force", &flags.id], None) {
        // Already gone is fine; anything else is worth a log line, not a failure.
        log::warn!("{e}");
    }
    let rootfs = bundle.join("rootfs");
    for _ in 0..16 {
        if nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
    // The dead shim's socket: remove it unless another shim of the group still serves it.
    if let Ok(addr) = std::fs::read_to_string(bundle.join("address")) {
        let addr = addr.trim();
        if !addr.is_empty() && !shim_alive(addr) {
            let _ = std::fs::remove_file(socket_path(addr));
        }
    }
    let mut ts = protobuf::well_known_types::timestamp::Timestamp::new();
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    let resp = api::DeleteResponse { exit_status: 128 + libc::SIGKILL as u32, exited_at: Some(ts).into(), ..Default::default() };
    let bytes = resp.write_to_bytes().map_err(|e| format!("encode: {e}"))?;
    std::io::stdout().write_all(&bytes).map_err(|e| format!("stdout: {e}"))?;
    Ok(())
}

/// Forward events to containerd in order; reconnect (containerd restarted) and retry a while.
fn publisher(rx: std::sync::mpsc::Receiver<Event>, ttrpc_address: String, namespace: String) {
    let mut client: Option<EventsClient> = None;
    for (topic, any) in rx {
        let mut env = Envelope::new();
        env.topic = topic.to_string();
        env.namespace = namespace.clone();
        if let Ok(ts) = containerd_shim::util::timestamp() {
            env.timestamp = Some(ts).into();
        }
        env.event = Some(any).into();
        let req = ForwardRequest { envelope: Some(env).into(), ..Default::default() };
        for attempt in 0..50 {
            if client.is_none() {
                client =
                    containerd_shim::util::connect(&ttrpc_address).ok().and_then(|fd| ttrpc::Client::new(fd).ok()).map(EventsClient::new);
            }
            if let Some(c) = &client {
                match c.forward(ttrpc::context::with_timeout(5_000_000_000), &req) {
                    Ok(_) => break,
                    Err(e) => {
                        log::warn!("publish {topic} (attempt {attempt}): {e}");
                        client = None;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn serve(flags: &Flags) -> Result<(), String> {
    // One malloc arena: every thread of the shim is mostly idle, and per-thread arenas cost
    // resident memory (measured: VmRSS per shim 3.2 MB -> see hack/bench-shim.sh).
    // SAFETY: mallopt only sets an allocator tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!("set subreaper: {}", std::io::Error::last_os_error()));
    }
    let reaper = Arc::new(reaper::Reaper::default());
    reaper.start().map_err(|e| format!("reaper: {e}"))?;
    // containerd ends a shim with SIGTERM only after Shutdown; the default action is right.
    let listener_fd = if flags.socket.is_empty() {
        let is_socket =
            std::fs::metadata("/proc/self/fd/3").map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())).unwrap_or(false);
        // SAFETY: fd 3 is open (its /proc link resolved to a socket) and stays open while borrowed.
        let listening = is_socket
            && nix::sys::socket::getsockopt(&unsafe { std::os::fd::BorrowedFd::borrow_raw(3) }, nix::sys::socket::sockopt::AcceptConn)
                .unwrap_or(false);
        if !listening {
            return Err("no -socket and fd 3 is not a listening socket (containerd starts the shim with `start`)".into());
        }
        // SAFETY: fd 3 is the listening socket `start` passed us (checked above); we take sole ownership.
        unsafe { OwnedFd::from_raw_fd(3) }
    } else {
        let l = UnixListener::bind(socket_path(&flags.socket)).map_err(|e| format!("listen {}: {e}", flags.socket))?;
        OwnedFd::from(l)
    };
    if containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id).is_err() {
        // No log fifo (started by hand): stay quiet.
    }
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| "TTRPC_ADDRESS is not set".to_string())?;
    let (tx, rx) = std::sync::mpsc::channel::<Event>();
    let ns = flags.namespace.clone();
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || publisher(rx, ttrpc_address, ns))
        .map_err(|e| format!("publisher thread: {e}"))?;
    let exit = Arc::new(ExitSignal::default());
    let service = Service::new(&flags.namespace, &flags.address, Arc::clone(&reaper), tx, Arc::clone(&exit));
    let task = containerd_shim::protos::shim_sync::create_task(service as Arc<dyn containerd_shim::Task + Send + Sync>);
    // Wait blocks a worker for the life of a process: allow many workers.
    let mut server = ttrpc::Server::new()
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(4096)
        .add_listener(listener_fd.into_raw_fd())
        .map_err(|e| format!("ttrpc: {e}"))?
        .register_service(task);
    server.start().map_err(|e| format!("ttrpc start: {e}"))?;
    exit.wait();
    if let Ok(addr) = std::fs::read_to_string("address") {
        let p = socket_path(addr.trim());
        let _ = std::fs::remove_file(p);
    }
    // Let the Shutdown reply go out; a handler still blocked (a Wait whose client went away)
    // must not keep the process alive, so the graceful shutdown gets a bounded time.
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new().name("shutdown".into()).spawn(move || {
        server.shutdown();
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(1));
    std::process::exit(0);
}

//! containerd-shim-capsa-v2: containerd's task API v2 (runtime `io.containerd.capsa.v2`) on top
//! of `capsa` or any binary with runc's command line (runc Options `BinaryName`).
//!
//! The shim is multi-threaded (request workers, the exit handler, the event publisher), so it
//! never forks a container itself: every container operation execs the runtime binary, as
//! containerd-shim-runc-v2 execs runc (DESIGN principle 1).
//!
//! Threads of a serving shim, whatever the number of containers: the main thread runs the one
//! event loop (`reactor.rs`: ttrpc connections, SIGCHLD, stdio streams, OOM notifications of
//! every container); `exits` handles process exits in order; `publisher` sends events to
//! containerd; request workers come and go with the load (one kept idle). Wait requests hold no
//! thread. A panic in a request handler fails that request only (`server.rs`).
//!
//! Actions (containerd's shim protocol):
//! - `start`: print the ttrpc address of the shim serving this container's group, starting one if
//!   needed. Nothing else may reach stdout or stderr: containerd reads both as the address.
//! - `delete`: clean up after a shim that died (runtime `delete --force`, unmount the rootfs).
//! - no action: serve the task API on the listener passed as fd 3 (or `-socket`).

mod args;
mod io;
mod logger;
mod metrics;
mod options;
mod publisher;
mod reactor;
mod reaper;
mod runtime;
mod server;
mod service;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use args::Flags;
use protobuf::Message;
use sha2::{Digest, Sha256};

use crate::publisher::Event;
use crate::reactor::Reactor;
use crate::runtime::{Runtime, RuntimeOpts};
use crate::service::Service;

/// Labels (OCI annotations) whose value names the shim group: containers with the same value
/// share one shim process (one shim per pod).
const GROUP_LABELS: [&str; 2] = ["io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"];

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let flags = match args::parse(args.get(1..).unwrap_or(&[])) {
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
/// this is containerd-shim-runc-v2's `/run/containerd/s/<hash>`. Not containerd-shim's
/// `socket_address`, which always uses `/run/containerd/s`: a private containerd (the tests', a
/// second one on the host) keeps its shims' sockets next to its own.
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
        // Options on stdin (those of the group's first container): the shim's cgroup.
        let mut data = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut data);
        if let Ok(any) = protobuf::well_known_types::any::Any::parse_from_bytes(&data) {
            if let Ok(opts) = options::parse(Some(&any)) {
                if !opts.shim_cgroup.is_empty() {
                    join_cgroup(&opts.shim_cgroup, child.id()).map_err(|e| format!("ShimCgroup {:?}: {e}", opts.shim_cgroup))?;
                }
            }
        }
        // Like containerd-shim-runc-v2: the shim goes just before containerd for the OOM killer.
        let _ = adjust_oom_score(child.id());
    }
    // For containerd's later `delete`: written whole under another name, then renamed.
    std::fs::write(".address", &address).and_then(|_| std::fs::rename(".address", "address")).map_err(|e| format!("write address: {e}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes()).and_then(|_| out.flush()).map_err(|e| format!("stdout: {e}"))?;
    Ok(())
}

/// Put `pid` into the existing cgroup `path` (runc Options `ShimCgroup`, relative to the
/// hierarchy roots), in every hierarchy.
fn join_cgroup(path: &str, pid: u32) -> Result<(), String> {
    let mode = capsa_cgroups::detect().map_err(|e| e.to_string())?;
    let abs = format!("/{}", path.trim_start_matches('/'));
    let m = capsa_cgroups::manager(mode, Some(&abs), "shim").map_err(|e| e.to_string())?;
    if !m.exists() {
        return Err("no such cgroup".into());
    }
    m.add_task(pid as i32).map_err(|e| e.to_string())
}

/// oom_score_adj of `pid` = ours (containerd's, inherited by `start`) + 1, at most 1000.
fn adjust_oom_score(pid: u32) -> std::io::Result<()> {
    let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")?.trim().parse().map_err(std::io::Error::other)?;
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), (own + 1).min(1000).to_string())
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
    let resp = containerd_shim_protos::shim::shim::DeleteResponse {
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(ts).into(),
        ..Default::default()
    };
    let bytes = resp.write_to_bytes().map_err(|e| format!("encode: {e}"))?;
    std::io::stdout().write_all(&bytes).map_err(|e| format!("stdout: {e}"))?;
    Ok(())
}

fn serve(flags: &Flags) -> Result<(), String> {
    // One malloc arena: every thread of the shim is mostly idle, and per-thread arenas cost
    // resident memory (see hack/bench-shim.sh).
    // SAFETY: mallopt only sets an allocator tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!("set subreaper: {}", std::io::Error::last_os_error()));
    }
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
    if logger::init(flags.debug).is_err() {
        // No log fifo (started by hand): stay quiet.
    }
    if cfg!(panic = "abort") {
        log::warn!(
            "built with panic=abort: a panic in one request ends the shim and every task it serves (build with --profile release-shim)"
        );
    }
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| "TTRPC_ADDRESS is not set".to_string())?;
    let reactor = Arc::new(Reactor::new().map_err(|e| format!("epoll: {e}"))?);
    let reaper = Arc::new(reaper::Reaper::new().map_err(|e| format!("signalfd: {e}"))?);
    reaper.register(&reactor).map_err(|e| format!("reaper: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel::<Event>();
    let ns = flags.namespace.clone();
    std::thread::Builder::new()
        .name("publisher".into())
        .stack_size(256 * 1024)
        .spawn(move || publisher::run(rx, ttrpc_address, ns))
        .map_err(|e| format!("publisher thread: {e}"))?;
    let service = Service::new(&flags.namespace, &flags.address, Arc::clone(&reaper), Arc::clone(&reactor), tx);
    let methods =
        containerd_shim_protos::shim_sync::create_task(Arc::clone(&service) as Arc<dyn containerd_shim_protos::Task + Send + Sync>);
    let mut deferred: std::collections::HashMap<String, server::Deferred> = std::collections::HashMap::new();
    let s = Arc::clone(&service);
    deferred.insert("/containerd.task.v2.Task/Wait".into(), Box::new(move |payload, r| s.wait_deferred(payload, r)));
    let (s, r) = (Arc::clone(&service), Arc::clone(&reactor));
    let after_request = Box::new(move || {
        if s.exiting() {
            r.stop();
        }
    });
    let server = server::Server::new(listener_fd, methods, deferred, after_request).map_err(|e| format!("ttrpc: {e}"))?;
    server.register(&reactor).map_err(|e| format!("ttrpc: {e}"))?;
    reactor.run().map_err(|e| format!("event loop: {e}"))?;
    // Shutdown was answered: remove our socket and go. Requests still running end with us.
    if let Ok(addr) = std::fs::read_to_string("address") {
        let p = socket_path(addr.trim());
        let _ = std::fs::remove_file(p);
    }
    std::process::exit(0);
}

//! Starting a container (the monitor runs this, for the first start and for restarts):
//! the rootfs mounted, volumes made and filled from the image, the spec written, the
//! capsa library's create + start. The container's init inherits this process's fds 0-2
//! (the monitor's pipes, or /dev/null with a terminal); with a terminal the pty master
//! comes back to the caller. A failure leaves nothing running or mounted.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use capsa::container::{self, CreateArgs};
use capsa::process::plan::CreateOpts;
use capsa_image::Store;
use capsa_sys::Root;

use super::{volumes, Record};
use crate::cli::{Failure, Result};

/// What a start leaves to the monitor.
pub struct Started {
    pub pid: i32,
    /// With a terminal: the pty master.
    pub master: Option<OwnedFd>,
    /// A warning for the user (overlay unavailable: a copied rootfs).
    pub note: Option<String>,
}

/// docker's exit codes for a container that could not start: 127 when the command does
/// not exist, 126 when it cannot be run, 125 otherwise.
pub fn start_failure(msg: String) -> Failure {
    let code = if msg.contains("not found") || msg.contains("no such file") || msg.contains("No such file") {
        127
    } else if msg.contains("ermission denied") {
        126
    } else {
        125
    };
    Failure { msg, code }
}

/// Starts `rec`. The caller holds the container's lock and has set fds 0-2.
pub fn start(store: &Store, state_root: &Path, rec: &Record) -> Result<Started> {
    let dir = super::dir(store, &rec.id);
    let r = try_start(store, state_root, rec, &dir);
    if r.is_err() {
        let _ = container::delete(state_root, &rec.id, true);
        let _ = capsa_image::snapshot::unmount_rootfs(&dir);
        let _ = super::network::detach(store, rec);
    }
    r
}

fn try_start(store: &Store, state_root: &Path, rec: &Record, dir: &Path) -> Result<Started> {
    trace("start: begin");
    // Leftovers of a start or monitor killed half-way.
    if state_root.join(&rec.id).exists() {
        let _ = container::delete(state_root, &rec.id, true);
    }
    capsa_image::snapshot::unmount_rootfs(dir)?;
    let chain = store.chain_of(rec.top_chain.clone())?;
    let rootfs = store.snapshots.mount_rootfs(&chain, dir)?;
    trace("start: rootfs mounted");
    let root = Root::open(&rootfs.path).map_err(|e| Failure { msg: format!("rootfs {}: {e}", rootfs.path.display()), code: 125 })?;
    for m in rec.stored.mounts.iter().filter(|m| m.typ == "volume") {
        let data = volumes::data_dir(store, &m.name);
        std::fs::create_dir_all(&data).map_err(|e| Failure { msg: format!("volume {}: {e}", data.display()), code: 125 })?;
        if !m.options.iter().any(|o| o == "nocopy") {
            volumes::init_from_image(&root, &m.destination, &data)?;
        }
    }
    super::network::attach(store, rec)?;
    trace("start: network attached");
    let spec = super::spec::build(store, rec, &rootfs.path, dir)?;
    let text = serde_json::to_vec(&spec).map_err(|e| Failure { msg: format!("encode config.json: {e}"), code: 125 })?;
    std::fs::write(dir.join("config.json"), text)?;
    trace("start: bundle written");
    let tty = rec.stored.config.tty;
    // The capsa library forks only from a single-threaded process: the network's
    // background socket closes (a stale start's rules deleted above) are joined first.
    capsa_network::nftnl::settle();
    let created = container::create(CreateArgs {
        root: state_root,
        id: &rec.id,
        bundle: dir,
        pid_file: None,
        console_socket: None,
        hold_tty: tty,
        opts: CreateOpts { no_pivot: false, no_new_keyring: false, preserve_fds: 0, listen_fds: 0 },
        systemd_cgroup: false,
        rootless: !nix::unistd::geteuid().is_root(),
    })
    .map_err(|e| start_failure(e.to_string()))?;
    trace("start: created");
    let master = match &created.tty {
        Some(s) => Some(capsa::tty::recv_fd(s.as_fd()).map_err(|e| start_failure(e.to_string()))?),
        None => None,
    };
    container::start(state_root, &rec.id).map_err(|e| start_failure(e.to_string()))?;
    trace("start: started");
    Ok(Started { pid: created.state.pid, master, note: rootfs.note })
}

/// `CAPSACTL_TRACE=FILE`: appends the time of each step to FILE (for benchmarks; not stderr,
/// which in the monitor may be a pipe of the container). FILE is the user's own choice; a
/// symlink there is not followed.
pub fn trace(what: &str) {
    use std::sync::OnceLock;
    static START: OnceLock<Option<std::time::Instant>> = OnceLock::new();
    static FILE: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
    let Some(path) = FILE.get_or_init(|| std::env::var_os("CAPSACTL_TRACE")) else { return };
    if let Some(t0) = START.get_or_init(|| Some(std::time::Instant::now())) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let line = format!("{:8.2} ms  [{}] {what}\n", t0.elapsed().as_secs_f64() * 1e3, std::process::id());
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).custom_flags(libc::O_NOFOLLOW).open(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

//! `run --rm [-i] [-t] IMAGE [CMD...]`: snapshot → overlay rootfs → bundle → the capsa
//! library (create, start, wait, delete) → the process's exit code → rootfs unmounted and
//! removed. The container gets the host's network (`--network host`) or none (default
//! until the network crate exists).
//!
//! capsactl is single-threaded here: the capsa library forks the container (DESIGN
//! principle 1), and the overlay mount changes the working directory.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sys::signal::SigmaskHow;

use capsa::container::{self, foreground, CreateArgs};
use capsa::process::plan::CreateOpts;
use capsa_image::runspec::{self, RunOpts};
use capsa_image::snapshot::remove_rootfs;
use capsa_image::Store;

use super::{fail, Cli, Failure, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove the container when it exits (required for now: containers that outlive
    /// their command come with the containers issue).
    #[arg(long)]
    pub rm: bool,
    /// Keep STDIN open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// host or none (default: none; bridge networks come with the network crate).
    #[arg(long, default_value = "none")]
    pub network: String,
    /// Set environment variables (KEY=VALUE, or KEY to take it from here).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// User name or uid, with an optional group (USER[:GROUP]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Overwrite the image's ENTRYPOINT.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Accepted for compatibility; the container id names it.
    #[arg(long)]
    pub name: Option<String>,
    pub image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

fn random_id() -> String {
    let a = capsa_image::content::random_suffix();
    let b = capsa_image::content::random_suffix();
    let c = capsa_image::content::random_suffix();
    let d = capsa_image::content::random_suffix();
    format!("{a}{b}{c}{d}")
}

/// `CAPSACTL_TRACE=1`: the time of each step of `run` on stderr (for benchmarks).
fn trace(what: &str) {
    use std::sync::OnceLock;
    static START: OnceLock<Option<std::time::Instant>> = OnceLock::new();
    if let Some(t0) = START.get_or_init(|| std::env::var_os("CAPSACTL_TRACE").map(|_| std::time::Instant::now())) {
        eprintln!("{:8.2} ms  {what}", t0.elapsed().as_secs_f64() * 1e3);
    }
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    trace("start");
    if !a.rm {
        return Err(Failure {
            msg: "capsactl run without --rm is not implemented yet (kept containers come with the containers issue): add --rm".into(),
            code: 125,
        });
    }
    let host_network = match a.network.as_str() {
        "host" => true,
        "none" => false,
        other => {
            return Err(Failure {
                msg: format!("--network {other}: only host and none are available until the network crate lands"),
                code: 125,
            })
        }
    };
    let mut store = cli.store()?;
    trace("store open");
    reap_orphans(cli, &mut store);
    let img = store.resolve(&a.image).map_err(|e| match e.kind() {
        capsa_image::error::Kind::NotFound => {
            Failure { msg: format!("Unable to find image '{}' locally (capsactl has no pull yet: load it)", a.image), code: 125 }
        }
        _ => Failure { msg: e.to_string(), code: 125 },
    })?;
    let (cfg, _) = store.config(&img)?;
    let chain = store.chain(&img)?;
    let id = random_id();
    let dir = store.containers_dir().join(&id);
    {
        // The row keeps the layers while the container lives, and lets `image prune`
        // clean up after a killed run.
        let _lock = store.lock_shared()?;
        store.add_container(&id, &img, true)?;
    }
    trace("image resolved, container recorded");
    let result = run_container(cli, a, &mut store, &cfg, &chain, &id, &dir, host_network);
    trace("container exited");
    let cleanup = cleanup(cli, &mut store, &id, &dir);
    trace("cleaned up");
    let code = result?;
    cleanup?;
    Ok(code)
}

#[allow(clippy::too_many_arguments)]
fn run_container(
    cli: &Cli,
    a: &Args,
    store: &mut Store,
    cfg: &capsa_image::oci::ImageConfig,
    chain: &[capsa_image::Digest],
    id: &str,
    dir: &Path,
    host_network: bool,
) -> Result<i32> {
    let rootfs = store.snapshots.mount_rootfs(chain, dir)?;
    trace("rootfs mounted");
    if let Some(n) = &rootfs.note {
        eprintln!("WARNING: {n}");
    }
    let hostname = a.hostname.clone().unwrap_or_else(|| id[..12].to_string());
    let etc = etc_files(dir, &hostname, host_network)?;
    let env: Vec<String> = a
        .env
        .iter()
        .filter_map(|e| if e.contains('=') { Some(e.clone()) } else { std::env::var(e).ok().map(|v| format!("{e}={v}")) })
        .collect();
    let opts = RunOpts {
        cmd: a.cmd.clone(),
        entrypoint: a.entrypoint.clone(),
        tty: a.tty,
        host_network,
        hostname,
        env,
        user: a.user.clone(),
        workdir: a.workdir.clone(),
        etc_files: etc,
    };
    let spec =
        runspec::build(&capsa::spec::example(None), cfg, &rootfs.path, &opts).map_err(|e| Failure { msg: e.to_string(), code: 125 })?;
    let text = serde_json::to_vec_pretty(&spec).map_err(|e| fail(format!("encode config.json: {e}")))?;
    std::fs::write(dir.join("config.json"), text)?;
    trace("bundle written");
    store.set_container_state(id, "running")?;
    if !a.interactive {
        // docker gives a container without -i an empty stdin.
        let null = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2_stdin(&null).map_err(|e| fail(format!("stdin: {e}")))?;
        let _ = null.as_raw_fd();
    }
    exec(cli, id, dir, a.tty)
}

/// The capsa library's create + start + wait + delete, as `capsa run` does.
fn exec(cli: &Cli, id: &str, bundle: &Path, tty: bool) -> Result<i32> {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let sigs = foreground::forwarded();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigs), None).map_err(|e| fail(format!("block signals: {e}")))?;
    let created = container::create(CreateArgs {
        root: &cli.state_root,
        id,
        bundle,
        pid_file: None,
        console_socket: None,
        hold_tty: tty,
        opts: CreateOpts { no_pivot: false, no_new_keyring: false, preserve_fds: 0, listen_fds: 0 },
        systemd_cgroup: false,
        rootless: !nix::unistd::geteuid().is_root(),
    })
    .map_err(start_failure)?;
    trace("created");
    let master = match &created.tty {
        Some(s) => match capsa::tty::recv_fd(std::os::fd::AsFd::as_fd(s)) {
            Ok(m) => Some(m),
            Err(e) => {
                let _ = container::delete(&cli.state_root, id, true);
                return Err(start_failure(e));
            }
        },
        None => None,
    };
    if let Err(e) = container::start(&cli.state_root, id) {
        let _ = container::delete(&cli.state_root, id, true);
        return Err(start_failure(e));
    }
    trace("started");
    let code = foreground::wait(created.state.pid, &sigs, master);
    trace("waited");
    let _ = container::delete(&cli.state_root, id, true);
    trace("deleted");
    Ok(code?)
}

/// docker's exit codes for a container that could not start: 127 when the command does
/// not exist, 126 when it cannot be run, 125 otherwise.
fn start_failure(e: capsa::Error) -> Failure {
    let msg = e.to_string();
    let code = if msg.contains("not found") || msg.contains("no such file") || msg.contains("No such file") {
        127
    } else if msg.contains("ermission denied") {
        126
    } else {
        125
    };
    Failure { msg, code }
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf of the container, as docker writes them.
fn etc_files(dir: &Path, hostname: &str, host_network: bool) -> Result<Vec<(String, PathBuf)>> {
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")
    };
    let resolv = if host_network { std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default() } else { String::new() };
    let mut out = Vec::new();
    for (name, content) in [("hostname", format!("{hostname}\n")), ("hosts", hosts), ("resolv.conf", resolv)] {
        let p = dir.join(name);
        std::fs::write(&p, content)?;
        out.push((format!("/etc/{name}"), p));
    }
    Ok(out)
}

fn cleanup(cli: &Cli, store: &mut Store, id: &str, dir: &Path) -> Result<()> {
    let _ = container::delete(&cli.state_root, id, true);
    remove_rootfs(dir)?;
    trace("rootfs removed");
    store.remove_container_row(id)?;
    Ok(())
}

/// Cleans up after `run --rm` commands that were killed: their container, rootfs and row.
pub fn reap_orphans(cli: &Cli, store: &mut Store) {
    let Ok(ids) = store.orphaned_containers() else { return };
    for id in ids {
        let dir = store.containers_dir().join(&id);
        let _ = cleanup(cli, store, &id, &dir);
    }
}

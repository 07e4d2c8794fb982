//! `checkpoint` and `restore`: runc's flags, checked as runc checks them (the container, its
//! state, `--parent-path`, `--page-server`, `--manage-cgroups-mode`, `--empty-ns`, the bundle),
//! then refused: CRIU does not work on this host, so capsa does not implement them. A caller
//! with a mistake in its flags learns about the mistake first, as it would from runc. Nothing
//! is created on disk (runc creates the image directory; capsa only checks it).

use std::path::{Path, PathBuf};

use capsa::container::{Container, Status};
use capsa::{bail, Result};

use super::Cli;

/// The CRIU options checkpoint and restore share.
#[derive(clap::Args, Debug)]
pub struct CriuFlags {
    /// Path for saving criu image files.
    #[arg(long = "image-path", value_name = "PATH")]
    pub image_path: Option<PathBuf>,
    /// Path for saving work files and logs.
    #[arg(long = "work-path", value_name = "PATH")]
    pub work_path: Option<PathBuf>,
    /// Allow open tcp connections.
    #[arg(long = "tcp-established")]
    pub tcp_established: bool,
    /// Allow external unix sockets.
    #[arg(long = "ext-unix-sk")]
    pub ext_unix_sk: bool,
    /// Allow shell jobs.
    #[arg(long = "shell-job")]
    pub shell_job: bool,
    /// Handle file locks, for safety.
    #[arg(long = "file-locks")]
    pub file_locks: bool,
    /// Cgroups mode: soft|full|strict|ignore (default: soft).
    #[arg(long = "manage-cgroups-mode", value_name = "MODE")]
    pub manage_cgroups_mode: Option<String>,
    /// Create a namespace, but don't restore its properties.
    #[arg(long = "empty-ns", value_name = "NS")]
    pub empty_ns: Vec<String>,
    /// Enable auto deduplication of memory images.
    #[arg(long = "auto-dedup")]
    pub auto_dedup: bool,
    /// Use userfaultfd to lazily restore memory pages.
    #[arg(long = "lazy-pages")]
    pub lazy_pages: bool,
}

#[derive(clap::Args, Debug)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub criu: CriuFlags,
    /// Path for previous criu image files in pre-dump.
    #[arg(long = "parent-path", value_name = "PATH")]
    pub parent_path: Option<PathBuf>,
    /// Leave the process running after checkpointing.
    #[arg(long = "leave-running")]
    pub leave_running: bool,
    /// Skip in-flight tcp connections.
    #[arg(long = "tcp-skip-in-flight")]
    pub tcp_skip_in_flight: bool,
    /// Allow one to link unlinked files back when possible.
    #[arg(long = "link-remap")]
    pub link_remap: bool,
    /// criu writes \0 to this FD once lazy-pages is ready.
    #[arg(long = "status-fd", default_value_t = -1, allow_negative_numbers = true)]
    pub status_fd: i32,
    /// ADDRESS:PORT of the page server.
    #[arg(long = "page-server", value_name = "ADDRESS:PORT")]
    pub page_server: Option<String>,
    /// Dump container's memory information only, leave the container running after this.
    #[arg(long = "pre-dump")]
    pub pre_dump: bool,
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub criu: CriuFlags,
    /// Path to an AF_UNIX socket which will receive the pty master.
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Path to the root of the bundle directory.
    #[arg(short = 'b', long)]
    pub bundle: Option<PathBuf>,
    /// Detach from the container's process.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Specify the file to write the process id to.
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Disable the use of the subreaper used to reap reparented processes.
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
    /// Do not use pivot root to jail process inside rootfs.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Specify an LSM profile to be used during restore in the form of TYPE:NAME.
    #[arg(long = "lsm-profile", value_name = "TYPE:NAME")]
    pub lsm_profile: Option<String>,
    /// Specify an LSM mount context to be used during restore.
    #[arg(long = "lsm-mount-context", value_name = "CONTEXT")]
    pub lsm_mount_context: Option<String>,
    pub id: String,
}

const UNSUPPORTED: &str = "not supported: CRIU does not work on this host";

/// runc's default image directory: `./checkpoint`.
fn image_path(f: &CriuFlags) -> PathBuf {
    f.image_path.clone().unwrap_or_else(|| PathBuf::from("checkpoint"))
}

/// What runc's criuOptions checks (without creating the image directory).
fn check_criu_flags(f: &CriuFlags, parent: Option<&Path>, page_server: Option<&str>) -> Result<()> {
    if let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
        if p.is_absolute() {
            bail!("--parent-path must be relative");
        }
        let real = image_path(f).join(p);
        match std::fs::metadata(&real) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("invalid --parent-path: {}: not a directory", real.display()),
            Err(e) => return Err(capsa::Error::from(e).context(format!("invalid --parent-path: {}", real.display()))),
        }
    }
    if let Some(ps) = page_server.filter(|s| !s.is_empty()) {
        let (addr, port) = ps.rsplit_once(':').unwrap_or(("", ""));
        if addr.is_empty() || port.is_empty() {
            bail!("Use --page-server ADDRESS:PORT to specify page server");
        }
        if port.parse::<u16>().is_err() {
            bail!("--page-server {ps:?}: Invalid port number");
        }
    }
    if let Some(m) = f.manage_cgroups_mode.as_deref().filter(|m| !m.is_empty()) {
        if !["soft", "full", "strict", "ignore"].contains(&m) {
            bail!("--manage-cgroups-mode {m:?}: invalid (soft, full, strict or ignore)");
        }
    }
    for ns in &f.empty_ns {
        if ns != "network" {
            bail!("--empty-ns: namespace {ns:?} is not supported");
        }
    }
    Ok(())
}

pub fn checkpoint(cli: &Cli, a: &CheckpointArgs) -> Result<i32> {
    let state = Container::peek(&cli.root, &a.id)?;
    let status = capsa::container::status_of(&state, &cli.root.join(&a.id));
    if matches!(status, Status::Created | Status::Stopped) {
        bail!("Container cannot be checkpointed in {status} state");
    }
    check_criu_flags(&a.criu, a.parent_path.as_deref(), a.page_server.as_deref())?;
    bail!("checkpoint: {UNSUPPORTED}")
}

pub fn restore(cli: &Cli, a: &RestoreArgs) -> Result<i32> {
    check_criu_flags(&a.criu, None, None)?;
    capsa::container::validate_id(&a.id)?;
    if cli.root.join(&a.id).exists() {
        bail!("container with id {:?} already exists", a.id);
    }
    let bundle = a.bundle.clone().unwrap_or_else(|| PathBuf::from("."));
    capsa::config::load(&bundle)?;
    bail!("restore: {UNSUPPORTED}")
}

use std::path::PathBuf;

use capsa::container::{self, CreateArgs};
use capsa::process::plan::CreateOpts;
use capsa::Result;

use super::Cli;

/// The flags `create` and `run` share (runc's), flattened into both.
#[derive(clap::Args, Debug)]
pub struct CreateFlags {
    /// Path to the bundle (directory with config.json).
    #[arg(short = 'b', long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is true.
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// File to write the container's init pid to.
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot_root (for a rootfs on a ramdisk).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass N extra fds (3..3+N) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
}

impl CreateFlags {
    /// The library's arguments; `hold_tty`: receive the pty master ourselves (`run` in the
    /// foreground).
    pub fn args<'a>(&'a self, cli: &'a Cli, id: &'a str, hold_tty: bool) -> CreateArgs<'a> {
        CreateArgs {
            root: &cli.root,
            id,
            bundle: &self.bundle,
            pid_file: self.pid_file.as_deref(),
            console_socket: self.console_socket.as_deref(),
            hold_tty,
            opts: CreateOpts {
                no_pivot: self.no_pivot,
                no_new_keyring: self.no_new_keyring,
                preserve_fds: i32::try_from(self.preserve_fds).unwrap_or(i32::MAX),
                listen_fds: listen_fds(),
            },
            systemd_cgroup: cli.systemd_cgroup,
            rootless: cli.rootless(),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub flags: CreateFlags,
    pub id: String,
}

/// systemd socket activation: LISTEN_FDS=N when LISTEN_PID is this process (as runc reads it).
pub fn listen_fds() -> i32 {
    let n = std::env::var("LISTEN_FDS").ok().and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
    let for_us = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    if for_us {
        n.clamp(0, 1024)
    } else {
        0
    }
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let created = container::create(a.flags.args(cli, &a.id, false))?;
    created.warnings.iter().for_each(|w| crate::log::warn(w));
    log::debug!("container {} created, init pid {}", a.id, created.state.pid);
    Ok(0)
}

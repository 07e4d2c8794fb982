use std::path::PathBuf;

use capsa::container::{self, CreateArgs};
use capsa::process::plan::CreateOpts;
use capsa::Result;

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
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
    pub id: String,
}

pub fn opts(no_pivot: bool, no_new_keyring: bool, preserve_fds: u32) -> CreateOpts {
    CreateOpts { no_pivot, no_new_keyring, preserve_fds: i32::try_from(preserve_fds).unwrap_or(i32::MAX), listen_fds: listen_fds() }
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
    container::create(CreateArgs {
        root: &cli.root,
        id: &a.id,
        bundle: &a.bundle,
        pid_file: a.pid_file.as_deref(),
        console_socket: a.console_socket.as_deref(),
        hold_tty: false,
        opts: opts(a.no_pivot, a.no_new_keyring, a.preserve_fds),
        systemd_cgroup: cli.systemd_cgroup,
        rootless: cli.rootless(),
    })?;
    Ok(0)
}

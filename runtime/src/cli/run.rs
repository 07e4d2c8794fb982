//! `run`: create + start, then (unless --detach) wait for the container, forwarding
//! signals, and exit with its exit code (128+N when killed by signal N), as runc does.

use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::sys::signal::SigmaskHow;

use capsa::container::{self, CreateArgs};
use capsa::error::Context;
use capsa::Result;

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short = 'b', long, default_value = ".")]
    pub bundle: PathBuf,
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Do not wait: return once the container runs.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep the stopped container (do not delete it) after it exits.
    #[arg(long)]
    pub keep: bool,
    /// Do not make capsa a child subreaper.
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    if !a.no_subreaper && !a.detach {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    // Block the forwarded signals before forking so none is lost; init unblocks them.
    let sigs = super::foreground::forwarded();
    if !a.detach {
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigs), None).ctx("block signals")?;
    }
    let created = container::create(CreateArgs {
        root: &cli.root,
        id: &a.id,
        bundle: &a.bundle,
        pid_file: a.pid_file.as_deref(),
        console_socket: a.console_socket.as_deref(),
        // In the foreground capsa holds the terminal itself; detached, the caller must
        // give a console socket (create says so).
        hold_tty: !a.detach,
        opts: super::create::opts(a.no_pivot, a.no_new_keyring, a.preserve_fds),
        systemd_cgroup: cli.systemd_cgroup,
        rootless: cli.rootless(),
    })?;
    let master = match &created.tty {
        Some(s) => match capsa::tty::recv_fd(s.as_fd()) {
            Ok(m) => Some(m),
            Err(e) => {
                let _ = container::delete(&cli.root, &a.id, true);
                return Err(e);
            }
        },
        None => None,
    };
    match container::start(&cli.root, &a.id) {
        Ok(warnings) => warnings.iter().for_each(|w| crate::log::warn(w)),
        Err(e) => {
            let _ = container::delete(&cli.root, &a.id, true);
            return Err(e);
        }
    }
    if a.detach {
        return Ok(0);
    }
    let code = super::foreground::wait(created.state.pid, &sigs, master)?;
    if !a.keep {
        for w in container::delete(&cli.root, &a.id, true)? {
            crate::log::warn(&w);
        }
    }
    Ok(code)
}

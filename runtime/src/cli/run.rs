//! `run`: create + start, then (unless --detach) wait for the container, forwarding
//! signals, and exit with its exit code (128+N when killed by signal N), as runc does.

use std::os::fd::AsFd;

use nix::sys::signal::SigmaskHow;

use capsa::container;
use capsa::error::Context;
use capsa::Result;

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub flags: super::create::CreateFlags,
    /// Do not wait: return once the container runs.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep the stopped container (do not delete it) after it exits.
    #[arg(long)]
    pub keep: bool,
    /// Do not make capsa a child subreaper.
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
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
    // In the foreground capsa holds the terminal itself; detached, the caller must give a
    // console socket (create says so).
    let created = container::create(a.flags.args(cli, &a.id, !a.detach))?;
    created.warnings.iter().for_each(|w| crate::log::warn(w));
    log::debug!("container {} created, init pid {}", a.id, created.state.pid);
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
        Ok(warnings) => {
            warnings.iter().for_each(|w| crate::log::warn(w));
            log::debug!("container {} started", a.id);
        }
        Err(e) => {
            let _ = container::delete(&cli.root, &a.id, true);
            return Err(e);
        }
    }
    if a.detach {
        return Ok(0);
    }
    let code = super::foreground::wait(created.state.pid, &sigs, master)?;
    log::debug!("container {} exited with {code}", a.id);
    if !a.keep {
        for w in container::delete(&cli.root, &a.id, true)? {
            crate::log::warn(&w);
        }
    }
    Ok(code)
}

//! `run [OPTIONS] IMAGE [COMMAND] [ARG...]`: `create`, then start under a monitor; with
//! `-d` print the id once the container runs, else stay attached (the monitor copies the
//! container's output to our stdout/stderr and its log) and exit with its exit code.

use std::time::Duration;

use super::{create, Cli, Failure, Result};
use crate::container::{self, Lock};
use crate::monitor::{self, client};

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Run container in background and print container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Proxy received signals to the process (non-TTY mode only).
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    #[command(flatten)]
    pub opts: create::Opts,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    container::start::trace("run: begin");
    let mut store = cli.store()?;
    container::reconcile::all(cli, &mut store);
    let ((rec, warnings), lock) = container::create::create(&mut store, &a.opts, !a.detach, "starting")?;
    for w in &warnings {
        eprintln!("WARNING: {w}");
    }
    container::start::trace("run: created");
    let spawned = match monitor::spawn(cli, &mut store, &rec, lock, (!a.detach).then_some(a.opts.interactive)) {
        Ok(s) => s,
        Err(e) => return Err(failed_start(cli, &mut store, &rec.id, e)),
    };
    container::start::trace("run: running");
    if a.detach {
        println!("{}", rec.id);
        return Ok(0);
    }
    let end = client::session(&spawned.chan, None, rec.stored.config.tty, a.sig_proxy)?;
    let mut mon = spawned.monitor;
    match end {
        client::End::Exit(code) => {
            // Without a restart policy the monitor is done now: reap it, so that nothing of
            // the container outlives this command.
            if rec.stored.host.restart_policy.is_none() {
                let _ = mon.wait();
            }
            Ok(code)
        }
        client::End::Detached => Ok(0),
        client::End::Lost => {
            let _ = mon.wait();
            let now = container::get(&store, &rec.id)?;
            Err(Failure {
                msg: format!(
                    "the monitor of container {} went away{}",
                    rec.id,
                    now.map(|r| format!(" (state: {})", r.state)).unwrap_or_default()
                ),
                code: 125,
            })
        }
    }
}

/// After a start that failed: a `--rm` container goes, others stay as docker leaves them
/// (created, with the error), and the caller gets the start's error.
pub fn failed_start(cli: &Cli, store: &mut capsa_image::Store, id: &str, e: Failure) -> Failure {
    let dir = container::dir(store, id);
    if let Ok(Some(lock)) = Lock::take_within(&dir, Duration::from_secs(10)) {
        if let Ok(Some(rec)) = container::get(store, id) {
            container::reconcile::runtime_down(store, &cli.state_root, &rec);
            if rec.auto_remove {
                let _ = container::remove::remove_down(store, &cli.state_root, &rec, true);
            } else {
                let first = rec.started_at.is_empty();
                let state = if first { "created" } else { "exited" };
                let _ = container::update(store, id, "state = ?2, error = ?3, exit_code = ?4", &[&state, &e.msg, &e.code]);
            }
        }
        drop(lock);
    }
    e
}

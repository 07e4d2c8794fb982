//! `start [-a] [-i] CONTAINER...`: start stopped containers under a monitor each; with
//! `-a` stay attached to the (single) container and exit with its exit code.

use super::{each, fail, Cli, Result};
use crate::container::{self, Lock};
use crate::monitor::{self, client};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short, long)]
    pub attach: bool,
    /// Attach container's STDIN.
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            return Err(fail("you cannot start and attach multiple containers at once"));
        }
        let rec = container::find(&store, &a.containers[0])?;
        let rec = container::reconcile::one(&mut store, &cli.state_root, &rec)?.ok_or_else(|| fail("the container was removed"))?;
        let tty = rec.stored.config.tty;
        let chan = if rec.is_active() {
            // Running already: attach to it.
            let s = client::connect(&container::dir(&store, &rec.id)).map_err(|e| fail(format!("attach to {}: {e}", rec.id)))?;
            match client::session(&s, Some((a.interactive, true, !tty)), tty, true)? {
                client::End::Exit(c) => return Ok(c),
                _ => return Ok(0),
            }
        } else {
            let lock = lock(&store, &rec.id)?;
            prep(&mut store, &rec.id)?;
            monitor::spawn(cli, &mut store, &rec, lock, Some(a.interactive && rec.stored.config.open_stdin))
                .map_err(|e| super::run::failed_start(cli, &mut store, &rec.id, e))?
        };
        return match client::session(&chan.chan, None, tty, true)? {
            client::End::Exit(c) => Ok(c),
            client::End::Detached => Ok(0),
            client::End::Lost => Err(fail(format!("the monitor of container {} went away", rec.id))),
        };
    }
    each(&a.containers, |name| {
        let rec = container::find(&store, name)?;
        let rec =
            container::reconcile::one(&mut store, &cli.state_root, &rec)?.ok_or_else(|| fail(format!("No such container: {name}")))?;
        if !rec.is_active() {
            let lock = lock(&store, &rec.id)?;
            prep(&mut store, &rec.id)?;
            monitor::spawn(cli, &mut store, &rec, lock, None).map_err(|e| super::run::failed_start(cli, &mut store, &rec.id, e))?;
        }
        println!("{name}");
        Ok(())
    })
}

pub fn lock(store: &capsa_image::Store, id: &str) -> Result<Lock> {
    match Lock::take_within(&container::dir(store, id), std::time::Duration::from_secs(5)) {
        Ok(Some(l)) => Ok(l),
        Ok(None) => Err(fail(format!("container {id} is busy: another command is starting, stopping or removing it"))),
        Err(e) => Err(fail(format!("container {id}: {e}"))),
    }
}

/// A start by the user: the restart policy counts from zero again.
pub fn prep(store: &mut capsa_image::Store, id: &str) -> Result<()> {
    container::update(store, id, "user_stopped = 0, restart_count = 0", &[])
}

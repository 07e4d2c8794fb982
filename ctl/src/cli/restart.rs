//! `restart [-t SECONDS] CONTAINER...`: stop (as `stop`), then start under a new monitor.

use super::{each, Cli, Result};
use crate::container::{self, stop};

/// The same flags as `stop`.
pub use super::stop::Args;

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let sig = a.signal.as_deref().map(capsa::container::parse_signal).transpose().map_err(|e| super::fail(format!("--signal: {e}")))?;
    each(&a.containers, |name| {
        let rec = container::find(&store, name)?;
        let rec = container::reconcile::one(&mut store, &cli.state_root, &rec)?
            .ok_or_else(|| super::fail(format!("No such container: {name}")))?;
        let t = stop::stop_timeout(&rec, a.time);
        stop::stop(&mut store, &cli.state_root, &rec, t, sig)?;
        let rec =
            container::get(&store, &rec.id)?.ok_or_else(|| super::fail(format!("container {name} was removed when it stopped (--rm)")))?;
        let lock = super::start::lock(&store, &rec.id)?;
        super::start::prep(&mut store, &rec.id)?;
        crate::monitor::spawn(cli, &mut store, &rec, lock, None).map_err(|e| super::run::failed_start(cli, &mut store, &rec.id, e))?;
        println!("{name}");
        Ok(())
    })
}

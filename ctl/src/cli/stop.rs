//! `stop [-t SECONDS] [-s SIGNAL] CONTAINER...`: the stop signal, then SIGKILL after the
//! timeout; returns once each container is down and its exit recorded.

use super::{each, Cli, Result};
use crate::container::{self, stop};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds to wait before killing the container (default: --stop-timeout or 10).
    #[arg(short = 't', long = "time", visible_alias = "timeout", allow_hyphen_values = true)]
    pub time: Option<i64>,
    /// Signal to send to the container (default: its stop signal).
    #[arg(short, long)]
    pub signal: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let sig = a.signal.as_deref().map(capsa::container::parse_signal).transpose().map_err(|e| super::fail(format!("--signal: {e}")))?;
    each(&a.containers, |name| {
        let rec = container::find(&store, name)?;
        let Some(rec) = container::reconcile::one(&mut store, &cli.state_root, &rec)? else {
            println!("{name}");
            return Ok(());
        };
        let t = stop::stop_timeout(&rec, a.time);
        stop::stop(&mut store, &cli.state_root, &rec, t, sig)?;
        println!("{name}");
        Ok(())
    })
}

//! `kill [-s SIGNAL] CONTAINER...`: a signal (default SIGKILL) to each container's init.

use super::{each, Cli, Result};
use crate::container::{self, stop};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Signal to send to the container.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let sig = capsa::container::parse_signal(&a.signal).map_err(|e| super::fail(format!("invalid signal: {e}")))?;
    each(&a.containers, |name| {
        let rec = container::find(&store, name)?;
        let rec = container::reconcile::one(&mut store, &cli.state_root, &rec)?
            .ok_or_else(|| super::fail(format!("No such container: {name}")))?;
        stop::kill(&mut store, &cli.state_root, &rec, sig)?;
        println!("{name}");
        Ok(())
    })
}

//! `rm [-f] [-v] CONTAINER...`: remove containers (running ones only with -f); -v also
//! removes their anonymous volumes.

use super::{each, Cli, Result};
use crate::container::{self, remove};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    each(&a.containers, |name| {
        let rec = match container::find(&store, name) {
            Ok(r) => r,
            // docker: rm -f of a missing container is not an error.
            Err(_) if a.force => return Ok(()),
            Err(e) => return Err(e),
        };
        remove::rm(&mut store, &cli.state_root, &rec, a.force, a.volumes)?;
        println!("{name}");
        Ok(())
    })
}

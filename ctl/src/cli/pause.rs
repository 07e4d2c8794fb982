//! `pause` / `unpause CONTAINER...`: freeze and thaw every process of the container
//! (capsa's cgroup freezer).

use super::{each, fail, Cli, Result};
use crate::container::{self, stop};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(cli: &Cli, a: &Args, pause: bool) -> Result<i32> {
    let mut store = cli.store()?;
    each(&a.containers, |name| {
        let rec = container::find(&store, name)?;
        let rec =
            container::reconcile::one(&mut store, &cli.state_root, &rec)?.ok_or_else(|| fail(format!("No such container: {name}")))?;
        let status = stop::runtime_status(&cli.state_root, &rec.id).map(|(_, s)| s);
        if pause {
            match status {
                None => return Err(fail(format!("Container {} is not running", rec.id))),
                Some(capsa::container::Status::Paused) => return Err(fail(format!("Container {} is already paused", rec.id))),
                _ => {}
            }
            capsa::container::pause(&cli.state_root, &rec.id).map_err(|e| fail(format!("Cannot pause container {}: {e}", rec.id)))?;
            container::set_state(&mut store, &rec.id, "paused")?;
        } else {
            if status != Some(capsa::container::Status::Paused) {
                return Err(fail(format!("Container {} is not paused", rec.id)));
            }
            capsa::container::resume(&cli.state_root, &rec.id).map_err(|e| fail(format!("Cannot unpause container {}: {e}", rec.id)))?;
            container::set_state(&mut store, &rec.id, "running")?;
        }
        println!("{name}");
        Ok(())
    })
}

//! `top CONTAINER [ps OPTIONS]`: the host's `ps` (default `-ef`) limited to the
//! container's processes, as docker does.

use super::{fail, Cli, Result};
use crate::container::{self, stop};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let rec = container::find(&store, &a.container)?;
    let rec =
        container::reconcile::one(&mut store, &cli.state_root, &rec)?.ok_or_else(|| fail(format!("No such container: {}", a.container)))?;
    if stop::runtime_status(&cli.state_root, &rec.id).is_none() {
        return Err(fail(format!("container {} is not running", rec.id)));
    }
    let pids = capsa::container::ps::pids(&cli.state_root, &rec.id)?;
    let args = if a.ps_args.is_empty() { vec!["-ef".to_string()] } else { a.ps_args.clone() };
    // docker: ps's complaint comes back from the daemon (exit 1).
    let table = capsa::container::ps::table(&pids, &args).map_err(|e| fail(e.to_string()))?;
    print!("{table}");
    Ok(0)
}

//! `rename CONTAINER NEW_NAME`.

use super::{Cli, Result};
use crate::container;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub container: String,
    pub new_name: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let rec = container::find(&store, &a.container)?;
    let new = a.new_name.strip_prefix('/').unwrap_or(&a.new_name);
    if new == rec.name {
        return Err(super::fail("Renaming a container with the same name as its current name"));
    }
    // docker: the daemon refuses (exit 1), not the command line (125).
    container::rename(&mut store, &rec.id, new).map_err(|e| super::Failure { code: 1, ..e })?;
    Ok(0)
}

//! `builder prune [-a] [-f]`: the build cache removed (see `crate::build::cache`).

use clap::Subcommand;

use super::{Cli, Result};
use crate::format;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Remove build cache.
    Prune(PruneArgs),
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused build cache, not just dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(cli: &Cli, c: &Cmd) -> Result<i32> {
    let Cmd::Prune(a) = c;
    if !a.force {
        let what = if a.all { "all build cache" } else { "all dangling build cache" };
        if !super::confirm(what) {
            return Ok(0);
        }
    }
    let mut store = cli.store()?;
    // A killed build's scratch dir holds mounts of layers: its own cleanup first.
    crate::build::run::Scratch::clean_stale(&store, &cli.state_root);
    let (_, bytes) = crate::build::cache::prune(&mut store, a.all)?;
    println!("Total:\t{}", format::size(bytes));
    Ok(0)
}

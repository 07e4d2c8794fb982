//! `tag SOURCE TARGET`.

use super::{Cli, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub source: String,
    pub target: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let img = store.resolve(&a.source)?;
    store.tag(&img.id, &a.target)?;
    Ok(0)
}

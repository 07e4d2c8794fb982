//! `import`: not implemented yet.

use super::{fail, Cli, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub file: String,
    pub reference: Option<String>,
}

pub fn run(_cli: &Cli, _a: &Args) -> Result<i32> {
    Err(fail("capsactl import: not implemented yet"))
}

//! `save`: not implemented yet.

use super::{fail, Cli, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long)]
    pub output: Option<std::path::PathBuf>,
    #[arg(long, default_value = "docker")]
    pub format: String,
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn run(_cli: &Cli, _a: &Args) -> Result<i32> {
    Err(fail("capsactl save: not implemented yet"))
}

use capsa::Result;

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    capsa::container::resume(&cli.root, &a.id)?;
    Ok(0)
}

use capsa::Result;

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    for w in capsa::container::start(&cli.root, &a.id)? {
        crate::log::warn(&w);
    }
    Ok(0)
}

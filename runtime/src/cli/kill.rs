use capsa::Result;

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Send the signal to every process of the container.
    #[arg(short = 'a', long)]
    pub all: bool,
    pub id: String,
    /// Signal name (KILL, SIGKILL) or number; default SIGTERM.
    #[arg(default_value = "SIGTERM", allow_hyphen_values = true)]
    pub signal: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let sig = capsa::container::parse_signal(&a.signal)?;
    log::debug!("kill {}: signal {sig}{}", a.id, if a.all { " to every process" } else { "" });
    capsa::container::kill(&cli.root, &a.id, sig, a.all)?;
    Ok(0)
}

//! `attach [--no-stdin] [--sig-proxy=false] CONTAINER`: our stdio to a running container
//! through its monitor (ctrl-p ctrl-q detaches from a terminal).

use super::{fail, Cli, Result};
use crate::container;
use crate::monitor::client;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Do not attach STDIN.
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Proxy all received signals to the process.
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    pub container: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let rec = container::find(&store, &a.container)?;
    let rec =
        container::reconcile::one(&mut store, &cli.state_root, &rec)?.ok_or_else(|| fail(format!("No such container: {}", a.container)))?;
    match rec.state.as_str() {
        "running" | "starting" => {}
        "paused" => return Err(fail("You cannot attach to a paused container, unpause it first")),
        "restarting" => return Err(fail("You cannot attach to a restarting container, wait until it is running")),
        _ => return Err(fail("You cannot attach to a stopped container, start it first")),
    }
    let tty = rec.stored.config.tty;
    let stdin = !a.no_stdin && rec.stored.config.open_stdin;
    let sock = client::connect(&container::dir(&store, &rec.id))
        .map_err(|e| fail(format!("attach {}: its monitor does not answer: {e}", rec.id)))?;
    drop(store);
    match client::session(&sock, Some((stdin, true, !tty)), tty, a.sig_proxy)? {
        client::End::Exit(c) => Ok(c),
        client::End::Detached => {
            eprintln!("read escape sequence");
            Ok(1)
        }
        client::End::Lost => Err(fail(format!("the monitor of container {} went away", rec.id))),
    }
}

//! `capsactl`: the docker-like front end. Each command is a short process over the store
//! (`--root`, default `/var/lib/capsa`): no daemon. Commands live in `cli/`, one file
//! each; the work is done by the `capsa-image` library and, to run containers, by the
//! `capsa` library.

mod cli;
mod format;
mod progress;

use clap::Parser;

fn main() {
    // `run` forks a container through the capsa library, which requires a sealed copy of
    // the running binary (CVE-2019-5736, see capsa::process::exeseal): restart from one
    // before anything else, as the capsa CLI does.
    if std::env::args_os().skip(1).any(|a| a == "run") {
        if let Err(e) = capsa::process::exeseal::ensure_sealed() {
            eprintln!("Error: {e}");
            std::process::exit(125);
        }
    }
    let parsed = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                // docker exits 125 when its own arguments are wrong.
                _ => 125,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    match cli::dispatch(&parsed) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(e.code);
        }
    }
}

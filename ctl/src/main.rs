//! `capsactl`: the docker-like front end. Each command is a short process over the store
//! (`--root`, default `/var/lib/capsa`): no daemon. Commands live in `cli/`, one file
//! each; the work is done by the `capsa-image` library and, to run containers, by the
//! `capsa` library.

mod cli;
mod format;
mod progress;

use clap::Parser;

fn main() {
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

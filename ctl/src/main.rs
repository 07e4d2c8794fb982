//! `capsactl`: the docker-like front end. Each command is a short process over the store
//! (`--root`, default `/var/lib/capsa`): no daemon. Commands live in `cli/`, one file
//! each; the work is done by the `capsa-image` library, the `container` and `monitor`
//! modules here and, to run containers, the `capsa` library. Each running container has
//! a small monitor process of its own (see `monitor/`).

#![recursion_limit = "256"]

mod build;
mod cli;
mod container;
mod format;
mod fstree;
mod logs;
mod monitor;
mod progress;

use clap::Parser;

/// Where capsactl was started from (before it re-executed itself from a sealed copy):
/// `--init` finds `capsa-init` beside it.
pub const EXE_ENV: &str = "_CAPSACTL_EXE";

/// Commands that fork container processes (capsa requires a sealed binary for those) or
/// run the monitor (which does).
const FORKS: &[&str] = &["run", "start", "restart", "exec", "build", "__monitor", "__start", "__build-stage"];

fn main() {
    // Lossy here, only to look for a command word: an argument that is not UTF-8 (a file
    // name for `cp`) is clap's to refuse with a message, not a panic.
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    // The monitor's steady state: the smallest path, no argument parser, no store.
    if args.get(1).map(String::as_str) == Some("__watch") {
        match monitor::watch::Args::parse(&args[2..]) {
            Ok(a) => std::process::exit(monitor::watch::run(a)),
            Err(e) => {
                eprintln!("Error: {e}");
                std::process::exit(125);
            }
        }
    }
    // Output commands die quietly when their reader goes (`capsactl logs x | head`), as
    // Unix tools do; Rust's runtime ignores SIGPIPE by default.
    // SAFETY: signal() with SIG_DFL before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    if std::env::var_os(EXE_ENV).is_none() {
        if let Ok(exe) = std::env::current_exe() {
            std::env::set_var(EXE_ENV, exe);
        }
    }
    // Forking a container through the capsa library requires a sealed copy of the running
    // binary (CVE-2019-5736, see capsa::process::exeseal): restart from one before
    // anything else, as the capsa CLI does.
    if args.iter().skip(1).any(|a| FORKS.contains(&a.as_str())) {
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

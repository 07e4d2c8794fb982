//! The `capsa` command: parse the command line, run one command from [`cli`], turn an
//! error into runc's log line and exit code 1.

// No std runtime setup: it reads /proc/self/maps (glibc's pthread_getattr_np, for the main
// thread's stack guard) and installs a SIGSEGV handler, on every start of a program that runs
// twice per container (see exeseal). What capsa needs of it is done in `main` below.
#![no_main]

mod cli;
mod log;

use clap::Parser;

/// The C entry point (glibc calls it; std::env::args works without std's runtime on glibc).
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // As std's runtime does: a write to a closed pipe is an EPIPE error, not a SIGPIPE death.
    // SAFETY: installing SIG_IGN runs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    run();
    0
}

fn run() {
    // Commands that fork into a container restart from a sealed copy of this binary before
    // anything else (CVE-2019-5736; see capsa::process::exeseal). A container named like a
    // command only costs a needless re-exec.
    if std::env::args_os().skip(1).any(|a| a == "create" || a == "run" || a == "exec") {
        if let Err(e) = capsa::process::exeseal::ensure_sealed() {
            eprintln!("capsa: {e}");
            std::process::exit(1);
        }
    }
    let args = cli::normalize_args(std::env::args_os());
    let mut parsed = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => 1,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    parsed.fix_root();
    log::init(parsed.log.as_deref(), &parsed.log_format, parsed.debug);
    match cli::dispatch(&parsed) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            log::error(&e.to_string());
            std::process::exit(1);
        }
    }
}

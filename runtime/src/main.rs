//! The `capsa` command: parse the command line, run one command from [`cli`], turn an
//! error into runc's log line and exit code (1, or 255 for `exec`'s own failures).

// No std runtime setup: it reads /proc/self/maps (glibc's pthread_getattr_np, for the main
// thread's stack guard) and installs a SIGSEGV handler, on every start of a program that runs
// twice per container (see exeseal). What capsa needs of it is done in `main` below. The unit
// tests' harness keeps its own main (hence the cfg).
#![cfg_attr(not(test), no_main)]

mod cli;
mod log;

/// The C entry point (glibc calls it; std::env::args works without std's runtime on glibc).
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // As std's runtime does: a write to a closed pipe is an EPIPE error, not a SIGPIPE death.
    // SAFETY: installing SIG_IGN runs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    run();
    0
}

#[cfg_attr(test, allow(dead_code))]
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
    let (args, command) = match cli::prepare(std::env::args_os().collect()) {
        cli::Prepared::Run(args, command) => (args, command),
        cli::Prepared::Help(topic) => exit(cli::print_help(topic.as_deref())),
    };
    let mut parsed = match cli::parse(args, command.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // runc exits 1 on a usage error (clap's default would be 2).
            std::process::exit(1);
        }
    };
    parsed.fix_root();
    if let Err(e) = log::init(parsed.log.as_deref(), &parsed.log_format, parsed.debug) {
        exit(Err(e.into()));
    }
    exit(cli::dispatch(&parsed))
}

fn exit(outcome: cli::Outcome) -> ! {
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(f) => {
            log::error(&f.error.to_string());
            std::process::exit(f.code);
        }
    }
}

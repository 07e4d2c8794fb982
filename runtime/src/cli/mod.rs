//! One file per command. Commands are thin: parse, call the library, print.

mod create;
mod delete;
mod exec;
mod features;
mod foreground;
mod kill;
mod list;
mod run;
mod spec;
mod start;
mod state;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use capsa::Result;

#[derive(Parser, Debug)]
#[command(name = "capsa", about = "capsa: an OCI container runtime, runc-compatible", disable_version_flag = true)]
pub struct Cli {
    /// Enable debug logging.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set)]
    pub debug: bool,
    /// Log file (default: stderr).
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Directory for container state (tmpfs recommended).
    #[arg(long, global = true, default_value = "/run/capsa")]
    pub root: PathBuf,
    /// Accepted for compatibility; checkpointing is not supported.
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    /// Use systemd's cgroup driver (not supported yet: refused at create).
    #[arg(long = "systemd-cgroup", global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set)]
    pub systemd_cgroup: bool,
    /// Rootless mode: auto, true or false.
    #[arg(long, default_value = "auto", value_parser = ["auto", "true", "false"])]
    pub rootless: String,
    /// Print the version.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    #[command(subcommand)]
    pub cmd: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container (its process waits for `start`).
    Create(create::Args),
    /// Run the user's process of a created container.
    Start(start::Args),
    /// Print the state of a container as JSON.
    State(state::Args),
    /// Send a signal to a container's init (default SIGTERM).
    Kill(kill::Args),
    /// Delete a container and everything it holds.
    Delete(delete::Args),
    /// Create and start a container, wait for it unless --detach.
    Run(run::Args),
    /// Write an example config.json.
    Spec(spec::Args),
    /// List containers.
    #[command(alias = "ls")]
    List(list::Args),
    /// Print what this build supports, as JSON.
    Features,
    /// Run a process inside a running container.
    Exec(exec::Args),
    /// Not implemented yet.
    Pause(Later),
    /// Not implemented yet.
    Resume(Later),
    /// Not implemented yet.
    Ps(Later),
    /// Not implemented yet.
    Events(Later),
    /// Not implemented yet.
    Update(Later),
    /// Not supported on this host (CRIU does not work here).
    Checkpoint(Later),
    /// Not supported on this host (CRIU does not work here).
    Restore(Later),
}

/// Arguments of a command that is not implemented: taken as they come.
#[derive(clap::Args, Debug)]
pub struct Later {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// runc (urfave/cli) accepts `-root x` as well as `--root x`: turn single-dash long flags
/// into double-dash ones so callers written for runc work unchanged.
pub fn normalize_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    const LONG: &[&str] = &[
        "root", "log", "log-format", "debug", "systemd-cgroup", "rootless", "criu", "bundle", "console-socket",
        "pid-file", "no-pivot", "no-new-keyring", "preserve-fds", "detach", "keep", "no-subreaper", "force", "all",
        "format", "quiet", "version", "help",
    ];
    args.enumerate()
        .map(|(i, a)| {
            if i > 0 {
                if let Some(s) = a.to_str() {
                    if let Some(rest) = s.strip_prefix('-') {
                        let name = rest.split('=').next().unwrap_or(rest);
                        if !rest.starts_with('-') && LONG.contains(&name) {
                            return OsString::from(format!("-{s}"));
                        }
                    }
                }
            }
            a
        })
        .collect()
}

pub fn dispatch(cli: &Cli) -> Result<i32> {
    if cli.version {
        out(&format!(
            "capsa version {}\ncommit: {}\nspec: {}\n",
            env!("CARGO_PKG_VERSION"),
            option_env!("CAPSA_COMMIT").unwrap_or("unknown"),
            capsa::config::OCI_VERSION
        ));
        return Ok(0);
    }
    let Some(cmd) = &cli.cmd else {
        use clap::CommandFactory;
        let _ = Cli::command().print_help();
        return Ok(0);
    };
    match cmd {
        Command::Create(a) => create::run(cli, a),
        Command::Start(a) => start::run(cli, a),
        Command::State(a) => state::run(cli, a),
        Command::Kill(a) => kill::run(cli, a),
        Command::Delete(a) => delete::run(cli, a),
        Command::Run(a) => run::run(cli, a),
        Command::Spec(a) => spec::run(a),
        Command::List(a) => list::run(cli, a),
        Command::Features => features::run(),
        Command::Exec(a) => exec::run(cli, a),
        Command::Pause(_) => not_yet("pause"),
        Command::Resume(_) => not_yet("resume"),
        Command::Ps(_) => not_yet("ps"),
        Command::Events(_) => not_yet("events"),
        Command::Update(_) => not_yet("update"),
        Command::Checkpoint(_) => Err(capsa::Error::new("checkpoint: not supported: CRIU does not work on this host")),
        Command::Restore(_) => Err(capsa::Error::new("restore: not supported: CRIU does not work on this host")),
    }
}

/// Writes to stdout; a closed pipe (`capsa list | head -1`) is not an error worth a panic.
pub fn out(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes()).and_then(|_| o.flush());
}

fn not_yet(name: &str) -> Result<i32> {
    Err(capsa::Error::new(format!("{name}: not implemented yet in this version of capsa")))
}

/// Before opening anything, make sure fds 3..3+n exist, so none of our own fds lands in
/// the range handed to the container with --preserve-fds.
pub fn reserve_preserved_fds(n: u32) {
    for fd in 3..3 + n as i32 {
        // SAFETY: F_GETFD only queries flags of an fd number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            if let Ok(f) = std::fs::File::open("/dev/null") {
                let raw = std::os::fd::IntoRawFd::into_raw_fd(f);
                if raw != fd {
                    // SAFETY: dup2 onto a free fd number, then close our temporary fd.
                    unsafe {
                        libc::dup2(raw, fd);
                        libc::close(raw);
                    }
                }
            }
        }
    }
}

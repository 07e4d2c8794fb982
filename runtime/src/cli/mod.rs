//! One file per command. Commands are thin: parse, call the library, print.

mod create;
mod delete;
mod events;
mod exec;
mod features;
mod foreground;
mod kill;
mod list;
mod pause;
mod ps;
mod resume;
mod run;
mod spec;
mod start;
mod state;
mod update;

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
    /// Use the systemd cgroup driver: the cgroup is a transient scope unit (`linux.cgroupsPath` "slice:prefix:name").
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
    /// Suspend every process of the container (cgroup freezer).
    Pause(pause::Args),
    /// Resume a paused container.
    Resume(resume::Args),
    /// List the container's processes.
    Ps(ps::Args),
    /// Print resource usage and OOM events as JSON.
    Events(events::Args),
    /// Change resource limits of a container.
    Update(update::Args),
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
        "root",
        "log",
        "log-format",
        "debug",
        "systemd-cgroup",
        "rootless",
        "criu",
        "bundle",
        "console-socket",
        "pid-file",
        "no-pivot",
        "no-new-keyring",
        "preserve-fds",
        "detach",
        "keep",
        "no-subreaper",
        "force",
        "all",
        "format",
        "quiet",
        "version",
        "help",
        "stats",
        "interval",
        "resources", // events, update
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

impl Cli {
    /// `--rootless auto` means: rootless when not run as root.
    pub fn rootless(&self) -> bool {
        match self.rootless.as_str() {
            "true" => true,
            "false" => false,
            _ => !nix::unistd::geteuid().is_root(),
        }
    }

    /// The default root of an unprivileged user is $XDG_RUNTIME_DIR/capsa (as runc's).
    pub fn fix_root(&mut self) {
        if self.root == std::path::Path::new("/run/capsa") && !nix::unistd::geteuid().is_root() {
            self.root = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
                Some(d) => PathBuf::from(d).join("capsa"),
                None => PathBuf::from(format!("/tmp/capsa-{}", nix::unistd::geteuid())),
            };
        }
    }
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
        Command::Pause(a) => pause::run(cli, a),
        Command::Resume(a) => resume::run(cli, a),
        Command::Ps(a) => ps::run(cli, a),
        Command::Events(a) => events::run(cli, a),
        Command::Update(a) => update::run(cli, a),
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

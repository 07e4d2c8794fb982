//! One file per command. Commands are thin: parse, call the library, print.
//!
//! The command line is runc's (urfave/cli): global flags before the command, a command's flags
//! before its first argument, `-flag` accepted for `--flag`, and `-h`/`--help`/`help` printing
//! help in runc's layout ([`help`]). [`prepare`] does the runc-specific part before clap
//! parses: it rewrites single-dash long flags and finds help requests, and it stops at the
//! first argument of the command (the container id) or at `--`, so nothing the user passes
//! to the container's process (`capsa exec ID cmd -version -h`) is ever touched.

mod build_info;
mod checkpoint;
mod create;
mod delete;
mod events;
mod exec;
mod features;
mod foreground;
mod help;
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

/// Global flags, in runc's order.
#[derive(Parser, Debug)]
#[command(
    name = "capsa",
    about = "an OCI container runtime, runc-compatible",
    disable_version_flag = true,
    disable_help_flag = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Enable debug logging.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set)]
    pub debug: bool,
    /// Set the log file to write capsa's logs to (default is stderr).
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Set the log format ('text' (default), or 'json').
    #[arg(long = "log-format", global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Root directory for storage of container state (this should be located in tmpfs).
    #[arg(long, global = true, default_value = "/run/capsa")]
    pub root: PathBuf,
    /// Accepted for compatibility; checkpointing is not supported.
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    /// Use the systemd cgroup driver: the cgroup is a transient scope unit (`linux.cgroupsPath` "slice:prefix:name").
    #[arg(long = "systemd-cgroup", global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set)]
    pub systemd_cgroup: bool,
    /// Ignore cgroup permission errors ('true', 'false', or 'auto').
    #[arg(long, default_value = "auto", value_parser = ["auto", "true", "false"])]
    pub rootless: String,
    /// Print the version.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    #[command(subcommand)]
    pub cmd: Option<Command>,
}

/// The commands, in runc's order (`help` lists them so).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Checkpoint a running container (not supported: CRIU does not work on this host).
    Checkpoint(checkpoint::CheckpointArgs),
    /// Create a container (its process waits for `start`).
    Create(create::Args),
    /// Delete a container and everything it holds.
    Delete(delete::Args),
    /// Print resource usage and OOM events as JSON.
    Events(events::Args),
    /// Run a new process inside a running container.
    Exec(exec::Args),
    /// Send a signal to a container's init (default SIGTERM).
    Kill(kill::Args),
    /// List containers.
    #[command(visible_alias = "ls")]
    List(list::Args),
    /// Suspend every process of the container (cgroup freezer).
    Pause(pause::Args),
    /// List the container's processes.
    Ps(ps::Args),
    /// Restore a container from a checkpoint (not supported: CRIU does not work on this host).
    Restore(checkpoint::RestoreArgs),
    /// Resume a paused container.
    Resume(resume::Args),
    /// Create and start a container, wait for it unless --detach.
    Run(run::Args),
    /// Write an example config.json.
    Spec(spec::Args),
    /// Run the user's process of a created container.
    Start(start::Args),
    /// Print the state of a container as JSON.
    State(state::Args),
    /// Change resource limits of a container.
    Update(update::Args),
    /// Print what this build supports, as JSON.
    Features,
}

/// A failed command: the error and the exit code (1, or 255 for `exec`'s own failures, as runc).
pub struct Failure {
    pub code: i32,
    pub error: capsa::Error,
}

impl From<capsa::Error> for Failure {
    fn from(error: capsa::Error) -> Self {
        Failure { code: 1, error }
    }
}

pub type Outcome = std::result::Result<i32, Failure>;

/// What the command line asks for, before clap parses it.
pub enum Prepared {
    /// Parse these (normalised) arguments with clap and run the command.
    Run(Vec<OsString>),
    /// Print help for this command (None: the main help).
    Help(Option<String>),
}

/// runc's conventions applied to argv (see the module comment).
pub fn prepare(args: Vec<OsString>) -> Prepared {
    use clap::CommandFactory;
    // Only argv that needs it pays for building clap's command tree twice.
    let needs_scan = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .any(|a| a == "help" || a == "h" || a == "-h" || a == "--help" || (a.starts_with('-') && !a.starts_with("--") && a.len() > 2));
    if !needs_scan {
        return Prepared::Run(args);
    }
    let mut root = Cli::command();
    root.build();
    let mut out: Vec<OsString> = Vec::with_capacity(args.len());
    let mut sub: Option<&clap::Command> = None;
    let mut verbatim = false;
    let mut help = false;
    let mut it = args.into_iter();
    out.extend(it.next());
    while let Some(a) = it.next() {
        if verbatim {
            out.push(a);
            continue;
        }
        let cmd = sub.unwrap_or(&root);
        let Some(s) = a.to_str().map(str::to_string) else {
            // Not UTF-8: an argument, not a flag.
            verbatim = sub.is_some();
            out.push(a);
            continue;
        };
        if s == "--" {
            verbatim = true;
            out.push(a);
            continue;
        }
        if let Some(flag) = s.strip_prefix('-').filter(|f| !f.is_empty()) {
            // `--name[=v]`, `-name[=v]` (runc's single-dash long form, when `name` is a long
            // flag here) or `-n` / a cluster of short flags.
            let name = |l: &str| l.split('=').next().unwrap_or_default().to_string();
            if name(flag.trim_start_matches('-')) == "help" {
                help = true;
                out.push(a);
                continue;
            }
            let (arg, has_value) = if let Some(l) = flag.strip_prefix('-') {
                out.push(a);
                (find_long(cmd, &root, &name(l)), l.contains('='))
            } else if let Some(arg) = find_long(cmd, &root, &name(flag)).filter(|_| name(flag).chars().count() > 1) {
                out.push(OsString::from(format!("-{s}")));
                (Some(arg), flag.contains('='))
            } else {
                help |= flag == "h";
                out.push(a);
                let c = flag.chars().next().unwrap_or('-');
                (find_short(cmd, &root, c), flag.chars().count() > 1)
            };
            // A flag's separate value is copied as it is.
            if arg.is_some_and(takes_separate_value) && !has_value {
                out.extend(it.next());
            }
            continue;
        }
        match sub {
            None if s == "help" || s == "h" => {
                let topic = it.next().and_then(|t| t.into_string().ok());
                return Prepared::Help(topic);
            }
            None => {
                sub = root.find_subcommand(&s);
                // An unknown command: clap reports it; nothing after it is rewritten.
                verbatim = sub.is_none();
            }
            // The command's first argument: what follows belongs to it (and the container).
            Some(_) => verbatim = true,
        }
        out.push(a);
    }
    if help {
        return Prepared::Help(sub.map(|s| s.get_name().to_string()));
    }
    Prepared::Run(out)
}

fn find_long<'a>(cmd: &'a clap::Command, root: &'a clap::Command, name: &str) -> Option<&'a clap::Arg> {
    let hit = |c: &'a clap::Command| {
        c.get_arguments().find(|a| a.get_long() == Some(name) || a.get_all_aliases().is_some_and(|v| v.contains(&name)))
    };
    hit(cmd).or_else(|| hit(root).filter(|a| a.is_global_set()))
}

fn find_short<'a>(cmd: &'a clap::Command, root: &'a clap::Command, c: char) -> Option<&'a clap::Arg> {
    let hit = |cmd: &'a clap::Command| cmd.get_arguments().find(|a| a.get_short() == Some(c));
    hit(cmd).or_else(|| hit(root).filter(|a| a.is_global_set()))
}

/// A flag that consumes the next argument as its value (`--root DIR`, not `--debug`).
fn takes_separate_value(a: &clap::Arg) -> bool {
    a.get_action().takes_values() && !a.is_require_equals_set() && a.get_num_args().is_none_or(|n| n.min_values() > 0)
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

/// `capsa --version`: runc's layout (`NAME version V`, then `key: value` lines), with how this
/// binary was built, so a benchmark or a bug report can tell which build it met.
pub fn version_text() -> String {
    let b = build_info::get();
    format!("capsa version {}\n{}", env!("CARGO_PKG_VERSION"), b.lines())
}

pub fn print_help(topic: Option<&str>) -> Outcome {
    use clap::CommandFactory;
    let mut root = Cli::command();
    root.build();
    let text = match topic {
        None => help::main(&root),
        Some(name) => match root.find_subcommand(name) {
            Some(c) => help::command(c),
            // runc (urfave/cli): "No help topic for 'x'", exit 3.
            None => return Err(Failure { code: 3, error: capsa::Error::new(format!("No help topic for '{name}'")) }),
        },
    };
    out(&text);
    Ok(0)
}

pub fn dispatch(cli: &Cli) -> Outcome {
    if cli.version {
        out(&version_text());
        return Ok(0);
    }
    let Some(cmd) = &cli.cmd else {
        return print_help(None);
    };
    log::debug!("capsa {}: {}", env!("CARGO_PKG_VERSION"), command_name(cmd));
    Ok(match cmd {
        Command::Create(a) => create::run(cli, a)?,
        Command::Start(a) => start::run(cli, a)?,
        Command::State(a) => state::run(cli, a)?,
        Command::Kill(a) => kill::run(cli, a)?,
        Command::Delete(a) => delete::run(cli, a)?,
        Command::Run(a) => run::run(cli, a)?,
        Command::Spec(a) => spec::run(a)?,
        Command::List(a) => list::run(cli, a)?,
        Command::Features => features::run()?,
        Command::Exec(a) => return exec::run(cli, a),
        Command::Pause(a) => pause::run(cli, a)?,
        Command::Resume(a) => resume::run(cli, a)?,
        Command::Ps(a) => ps::run(cli, a)?,
        Command::Events(a) => events::run(cli, a)?,
        Command::Update(a) => update::run(cli, a)?,
        Command::Checkpoint(a) => checkpoint::checkpoint(cli, a)?,
        Command::Restore(a) => checkpoint::restore(cli, a)?,
    })
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Checkpoint(_) => "checkpoint",
        Command::Create(_) => "create",
        Command::Delete(_) => "delete",
        Command::Events(_) => "events",
        Command::Exec(_) => "exec",
        Command::Kill(_) => "kill",
        Command::List(_) => "list",
        Command::Pause(_) => "pause",
        Command::Ps(_) => "ps",
        Command::Restore(_) => "restore",
        Command::Resume(_) => "resume",
        Command::Run(_) => "run",
        Command::Spec(_) => "spec",
        Command::Start(_) => "start",
        Command::State(_) => "state",
        Command::Update(_) => "update",
        Command::Features => "features",
    }
}

/// Writes to stdout; a closed pipe (`capsa list | head -1`) is not an error worth a panic.
pub fn out(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes()).and_then(|_| o.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(args: &[&str]) -> Vec<String> {
        let v = std::iter::once("capsa").chain(args.iter().copied()).map(OsString::from).collect();
        match prepare(v) {
            Prepared::Run(v) => v.into_iter().skip(1).map(|a| a.into_string().unwrap()).collect(),
            Prepared::Help(t) => vec![format!("HELP {t:?}")],
        }
    }

    #[test]
    fn single_dash_long_flags_become_double_dash_before_the_first_argument_only() {
        assert_eq!(prep(&["-root", "/r", "-debug", "list"]), ["--root", "/r", "--debug", "list"]);
        assert_eq!(
            prep(&["exec", "-tty", "-cwd", "/tmp", "id", "cmd", "-version", "-h"]),
            ["exec", "--tty", "--cwd", "/tmp", "id", "cmd", "-version", "-h"]
        );
        // The value of a flag is never taken for a flag or for the command's first argument.
        assert_eq!(prep(&["exec", "-e", "-x=1", "-user", "0", "id", "-log"]), ["exec", "-e", "-x=1", "--user", "0", "id", "-log"]);
        assert_eq!(prep(&["exec", "--", "id", "-version"]), ["exec", "--", "id", "-version"]);
        assert_eq!(prep(&["-log-format=json", "state", "x"]), ["--log-format=json", "state", "x"]);
        // Short flags stay as they are.
        assert_eq!(prep(&["delete", "-f", "id"]), ["delete", "-f", "id"]);
    }

    #[test]
    fn help_requests() {
        assert_eq!(prep(&["-h"]), ["HELP None"]);
        assert_eq!(prep(&["--root", "/x", "help"]), ["HELP None"]);
        assert_eq!(prep(&["help", "exec"]), ["HELP Some(\"exec\")"]);
        assert_eq!(prep(&["h", "exec"]), ["HELP Some(\"exec\")"]);
        assert_eq!(prep(&["exec", "-h"]), ["HELP Some(\"exec\")"]);
        assert_eq!(prep(&["ls", "--help"]), ["HELP Some(\"list\")"]);
        assert_eq!(prep(&["exec", "id", "sh", "-h"]), ["exec", "id", "sh", "-h"]);
        assert_eq!(prep(&["exec", "id", "help"]), ["exec", "id", "help"]);
    }
}

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

use clap::{FromArgMatches, Subcommand};

/// Global flags, in runc's order, and the command.
#[derive(clap::Args, Debug)]
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
    /// Set by [`parse`] from the one command clap was given.
    #[arg(skip)]
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

/// The commands' names and aliases, in [`Command`]'s order (a unit test holds them equal).
const COMMANDS: &[(&str, &[&str])] = &[
    ("checkpoint", &[]),
    ("create", &[]),
    ("delete", &[]),
    ("events", &[]),
    ("exec", &[]),
    ("kill", &[]),
    ("list", &["ls"]),
    ("pause", &[]),
    ("ps", &[]),
    ("restore", &[]),
    ("resume", &[]),
    ("run", &[]),
    ("spec", &[]),
    ("start", &[]),
    ("state", &[]),
    ("update", &[]),
    ("features", &[]),
];

/// The canonical name of command `name` (or alias).
fn command_name_of(name: &str) -> Option<&'static str> {
    COMMANDS.iter().find(|(n, aliases)| *n == name || aliases.contains(&name)).map(|(n, _)| *n)
}

/// capsa with its global flags and no command.
fn root_command() -> clap::Command {
    let c = clap::Command::new("capsa")
        .about("an OCI container runtime, runc-compatible")
        .disable_version_flag(true)
        .disable_help_flag(true)
        .disable_help_subcommand(true);
    <Cli as clap::Args>::augment_args(c)
}

/// One command's definition, the derived one, made without the others: clap's cost of
/// building every command's flags on each start (capsa starts for every container
/// operation) is paid only by `help`, which needs the whole tree ([`full_command`]).
fn command_def(name: &str) -> Option<clap::Command> {
    use clap::Args as _;
    let name = command_name_of(name)?;
    let c = clap::Command::new(name);
    Some(match name {
        "checkpoint" => checkpoint::CheckpointArgs::augment_args(c),
        "create" => create::Args::augment_args(c),
        "delete" => delete::Args::augment_args(c),
        "events" => events::Args::augment_args(c),
        "exec" => exec::Args::augment_args(c),
        "kill" => kill::Args::augment_args(c),
        "list" => list::Args::augment_args(c).visible_alias("ls"),
        "pause" => pause::Args::augment_args(c),
        "ps" => ps::Args::augment_args(c),
        "restore" => checkpoint::RestoreArgs::augment_args(c),
        "resume" => resume::Args::augment_args(c),
        "run" => run::Args::augment_args(c),
        "spec" => spec::Args::augment_args(c),
        "start" => start::Args::augment_args(c),
        "state" => state::Args::augment_args(c),
        "update" => update::Args::augment_args(c),
        _ => c, // features
    })
}

/// Every command, for help.
fn full_command() -> clap::Command {
    let mut c = Command::augment_subcommands(root_command());
    c.build();
    c
}

/// Parses prepared arguments (see [`prepare`]) with the global flags and `command`'s only.
pub fn parse(args: Vec<OsString>, command: Option<&str>) -> Result<Cli, clap::Error> {
    let mut cmd = root_command();
    if let Some(c) = command.and_then(command_def) {
        cmd = cmd.subcommand(c);
    }
    let m = cmd.try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&m)?;
    if m.subcommand().is_some() {
        cli.cmd = Some(Command::from_arg_matches(&m)?);
    }
    Ok(cli)
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
    /// Parse these (normalised) arguments with clap ([`parse`]) and run the command, whose
    /// name (as given) is the second field.
    Run(Vec<OsString>, Option<String>),
    /// Print help for this command (None: the main help).
    Help(Option<String>),
}

/// runc's conventions applied to argv (see the module comment), and which command it names.
pub fn prepare(args: Vec<OsString>) -> Prepared {
    let root = root_command();
    let mut out: Vec<OsString> = Vec::with_capacity(args.len());
    let mut sub_def: Option<clap::Command> = None;
    let mut sub_name: Option<String> = None;
    let mut verbatim = false;
    let mut help = false;
    let mut it = args.into_iter();
    out.extend(it.next());
    while let Some(a) = it.next() {
        if verbatim {
            out.push(a);
            continue;
        }
        let cmd = sub_def.as_ref().unwrap_or(&root);
        let Some(s) = a.to_str().map(str::to_string) else {
            // Not UTF-8: an argument, not a flag.
            verbatim = sub_name.is_some();
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
        match sub_name {
            None if s == "help" || s == "h" => {
                let topic = it.next().and_then(|t| t.into_string().ok());
                return Prepared::Help(topic);
            }
            None => {
                sub_def = command_def(&s);
                // An unknown command: clap reports it; nothing after it is rewritten.
                verbatim = sub_def.is_none();
                sub_name = Some(s);
            }
            // The command's first argument: what follows belongs to it (and the container).
            Some(_) => verbatim = true,
        }
        out.push(a);
    }
    if help {
        return Prepared::Help(sub_name.and_then(|n| command_name_of(&n)).map(str::to_string));
    }
    Prepared::Run(out, sub_name)
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
    let root = full_command();
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
            Prepared::Run(v, _) => v.into_iter().skip(1).map(|a| a.into_string().unwrap()).collect(),
            Prepared::Help(t) => vec![format!("HELP {t:?}")],
        }
    }

    /// COMMANDS and command_def agree with the derived enum (names, aliases, every flag).
    #[test]
    fn command_table_matches_the_enum() {
        let full = full_command();
        let names: Vec<&str> = full.get_subcommands().map(|c| c.get_name()).collect();
        assert_eq!(names, COMMANDS.iter().map(|(n, _)| *n).collect::<Vec<_>>());
        for sub in full.get_subcommands() {
            let (_, aliases) = COMMANDS.iter().find(|(n, _)| *n == sub.get_name()).unwrap();
            assert_eq!(sub.get_all_aliases().collect::<Vec<_>>(), aliases.to_vec(), "{}", sub.get_name());
            let def = command_def(sub.get_name()).unwrap();
            let ids =
                |c: &clap::Command| c.get_arguments().filter(|a| !a.is_global_set()).map(|a| a.get_id().to_string()).collect::<Vec<_>>();
            assert_eq!(ids(&def), ids(sub), "{}", sub.get_name());
        }
        let cli = parse(["capsa", "--root", "/r", "ls", "-q"].map(OsString::from).to_vec(), Some("ls")).unwrap();
        assert!(matches!(cli.cmd, Some(Command::List(_))));
        assert_eq!(cli.root, PathBuf::from("/r"));
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

//! One file per command. Commands are thin: parse, call the library, print.

mod attach;
mod build;
mod builder;
mod commit;
mod cp;
pub mod create;
mod diff;
mod exec;
mod export;
mod history;
mod images;
mod import;
mod info;
mod inspect;
mod kill;
mod load;
mod login;
mod logout;
mod logs;
mod network;
mod pause;
mod port;
mod prune;
mod ps;
pub mod pull;
mod push;
mod rename;
mod restart;
mod rm;
mod rmi;
mod run;
pub mod save;
mod start;
mod stats;
mod stop;
mod system;
mod tag;
mod top;
mod version;
mod volume;
mod wait;

use std::fmt;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use capsa_image::Store;

#[derive(Parser, Debug)]
#[command(name = "capsactl", about = "capsactl: images and containers on capsa, docker's commands, no daemon", version)]
pub struct Cli {
    /// The store (images, layers, containers); default $CAPSA_ROOT or /var/lib/capsa.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Where capsa keeps container state (as `capsa --root`).
    #[arg(long = "state-root", global = true, value_name = "DIR", default_value = "/run/capsa")]
    pub state_root: PathBuf,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load images from a tar archive (docker save format or OCI layout) or STDIN.
    Load(load::Args),
    /// Save images to a tar archive (docker format by default, or OCI layout).
    Save(save::Args),
    /// Import a root filesystem tarball as a one-layer image.
    Import(import::Args),
    /// List images.
    Images(images::Args),
    /// Create a tag TARGET that refers to SOURCE.
    Tag(tag::Args),
    /// Remove one or more images.
    Rmi(rmi::Args),
    /// Show the history of an image.
    History(history::Args),
    /// Create and run a new container from an image.
    Run(run::Args),
    /// Create a new container.
    Create(create::Args),
    /// Start one or more stopped containers.
    Start(start::Args),
    /// Stop one or more running containers.
    Stop(stop::Args),
    /// Kill one or more running containers.
    Kill(kill::Args),
    /// Restart one or more containers.
    Restart(restart::Args),
    /// Remove one or more containers.
    Rm(rm::Args),
    /// List containers.
    Ps(ps::Args),
    /// Fetch the logs of a container.
    Logs(logs::Args),
    /// Execute a command in a running container.
    Exec(exec::Args),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(attach::Args),
    /// Display the running processes of a container.
    Top(top::Args),
    /// Display a live stream of container(s) resource usage statistics.
    Stats(stats::Args),
    /// Pause all processes within one or more containers.
    Pause(pause::Args),
    /// Unpause all processes within one or more containers.
    Unpause(pause::Args),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(wait::Args),
    /// List port mappings or a specific mapping for the container.
    Port(port::Args),
    /// Rename a container.
    Rename(rename::Args),
    /// Copy files/folders between a container and the local filesystem.
    Cp(cp::Args),
    /// Create a new image from a container's changes.
    Commit(commit::Args),
    /// Export a container's filesystem as a tar archive.
    Export(export::Args),
    /// Inspect changes to files or directories on a container's filesystem.
    Diff(diff::Args),
    /// Manage images (ls, inspect, history, prune, rm, tag, load, save, import).
    #[command(subcommand)]
    Image(ImageCmd),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::Cmd),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::Cmd),
    /// Manage capsactl (df, prune, info).
    #[command(subcommand)]
    System(system::Cmd),
    /// Manage the build cache (prune).
    #[command(subcommand)]
    Builder(builder::Cmd),
    /// Return low-level information on containers and images, as JSON.
    Inspect(inspect::Args),
    /// Display system-wide information.
    Info(info::Args),
    /// Show the capsactl version information.
    Version(version::Args),
    #[command(name = "__monitor", hide = true)]
    Monitor(crate::monitor::MonitorArgs),
    #[command(name = "__exited", hide = true)]
    Exited { id: String, code: i32 },
    #[command(name = "__start", hide = true)]
    StartHelper { id: String },
    #[command(name = "__build-stage", hide = true)]
    BuildStage { job: std::path::PathBuf, out: std::path::PathBuf },
    /// Build an image from a Dockerfile.
    Build(Box<build::Args>),
    /// Download an image from a registry.
    Pull(pull::Args),
    /// Upload an image to a registry.
    Push(push::Args),
    /// Log in to a registry (credentials kept in docker's config.json).
    Login(login::Args),
    /// Log out from a registry.
    Logout(logout::Args),
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    #[command(alias = "list")]
    Ls(images::Args),
    Inspect(inspect::Args),
    History(history::Args),
    /// Remove unused images (dangling ones; with -a, all without a container).
    Prune(prune::Args),
    Rm(rmi::Args),
    Tag(tag::Args),
    Load(load::Args),
    Save(save::Args),
    Import(import::Args),
    Pull(pull::Args),
    Push(push::Args),
    Build(Box<build::Args>),
}

#[derive(Subcommand, Debug)]
pub enum ContainerCmd {
    Run(run::Args),
    Create(create::Args),
    Start(start::Args),
    Stop(stop::Args),
    Kill(kill::Args),
    Restart(restart::Args),
    Rm(rm::Args),
    #[command(alias = "list", alias = "ps")]
    Ls(ps::Args),
    Logs(logs::Args),
    Exec(exec::Args),
    Attach(attach::Args),
    Inspect(inspect::Args),
    Top(top::Args),
    Stats(stats::Args),
    Pause(pause::Args),
    Unpause(pause::Args),
    Wait(wait::Args),
    Port(port::Args),
    Rename(rename::Args),
    Cp(cp::Args),
    Commit(commit::Args),
    Export(export::Args),
    Diff(diff::Args),
    /// Remove all stopped containers.
    Prune(system::ContainerPruneArgs),
}

/// A command's failure: the message and the exit code (docker: 1 for most, 125 when
/// capsactl itself failed to run a container, 127/126 when the command was not found).
#[derive(Debug)]
pub struct Failure {
    pub msg: String,
    pub code: i32,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl From<capsa_image::Error> for Failure {
    fn from(e: capsa_image::Error) -> Self {
        Failure { msg: e.to_string(), code: 1 }
    }
}

impl From<capsa::Error> for Failure {
    fn from(e: capsa::Error) -> Self {
        Failure { msg: e.to_string(), code: 125 }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure { msg: e.to_string(), code: 1 }
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure { msg: format!("database: {e}"), code: 1 }
    }
}

pub fn fail(msg: impl Into<String>) -> Failure {
    Failure { msg: msg.into(), code: 1 }
}

pub type Result<T> = std::result::Result<T, Failure>;

impl Cli {
    pub fn store_root(&self) -> PathBuf {
        let root = self.root.clone().unwrap_or_else(Store::default_root);
        std::path::absolute(&root).unwrap_or(root)
    }

    pub fn store(&self) -> Result<Store> {
        Ok(Store::open(&self.store_root())?)
    }
}

/// Runs `f` for each name, printing docker's per-item errors; exit code 1 if any failed.
pub fn each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<i32> {
    let mut code = 0;
    for n in names {
        if let Err(e) = f(n) {
            eprintln!("Error response from daemon: {e}");
            code = 1;
        }
    }
    Ok(code)
}

pub fn dispatch(cli: &Cli) -> Result<i32> {
    match &cli.cmd {
        Command::Load(a) | Command::Image(ImageCmd::Load(a)) => load::run(cli, a),
        Command::Save(a) | Command::Image(ImageCmd::Save(a)) => save::run(cli, a),
        Command::Import(a) | Command::Image(ImageCmd::Import(a)) => import::run(cli, a),
        Command::Images(a) | Command::Image(ImageCmd::Ls(a)) => images::run(cli, a),
        Command::Tag(a) | Command::Image(ImageCmd::Tag(a)) => tag::run(cli, a),
        Command::Rmi(a) | Command::Image(ImageCmd::Rm(a)) => rmi::run(cli, a),
        Command::History(a) | Command::Image(ImageCmd::History(a)) => history::run(cli, a),
        Command::Image(ImageCmd::Inspect(a)) => inspect::run_images(cli, a),
        Command::Inspect(a) => inspect::run(cli, a),
        Command::Container(ContainerCmd::Inspect(a)) => inspect::run_containers(cli, a),
        Command::Image(ImageCmd::Prune(a)) => prune::run(cli, a),
        Command::Run(a) | Command::Container(ContainerCmd::Run(a)) => run::run(cli, a),
        Command::Create(a) | Command::Container(ContainerCmd::Create(a)) => create::run(cli, a),
        Command::Start(a) | Command::Container(ContainerCmd::Start(a)) => start::run(cli, a),
        Command::Stop(a) | Command::Container(ContainerCmd::Stop(a)) => stop::run(cli, a),
        Command::Kill(a) | Command::Container(ContainerCmd::Kill(a)) => kill::run(cli, a),
        Command::Restart(a) | Command::Container(ContainerCmd::Restart(a)) => restart::run(cli, a),
        Command::Rm(a) | Command::Container(ContainerCmd::Rm(a)) => rm::run(cli, a),
        Command::Ps(a) | Command::Container(ContainerCmd::Ls(a)) => ps::run(cli, a),
        Command::Logs(a) | Command::Container(ContainerCmd::Logs(a)) => logs::run(cli, a),
        Command::Exec(a) | Command::Container(ContainerCmd::Exec(a)) => exec::run(cli, a),
        Command::Attach(a) | Command::Container(ContainerCmd::Attach(a)) => attach::run(cli, a),
        Command::Top(a) | Command::Container(ContainerCmd::Top(a)) => top::run(cli, a),
        Command::Stats(a) | Command::Container(ContainerCmd::Stats(a)) => stats::run(cli, a),
        Command::Pause(a) | Command::Container(ContainerCmd::Pause(a)) => pause::run(cli, a, true),
        Command::Unpause(a) | Command::Container(ContainerCmd::Unpause(a)) => pause::run(cli, a, false),
        Command::Wait(a) | Command::Container(ContainerCmd::Wait(a)) => wait::run(cli, a),
        Command::Port(a) | Command::Container(ContainerCmd::Port(a)) => port::run(cli, a),
        Command::Rename(a) | Command::Container(ContainerCmd::Rename(a)) => rename::run(cli, a),
        Command::Cp(a) | Command::Container(ContainerCmd::Cp(a)) => cp::run(cli, a),
        Command::Commit(a) | Command::Container(ContainerCmd::Commit(a)) => commit::run(cli, a),
        Command::Export(a) | Command::Container(ContainerCmd::Export(a)) => export::run(cli, a),
        Command::Diff(a) | Command::Container(ContainerCmd::Diff(a)) => diff::run(cli, a),
        Command::Container(ContainerCmd::Prune(a)) => system::container_prune(cli, a),
        Command::Volume(c) => volume::run(cli, c),
        Command::Network(c) => network::run(cli, c),
        Command::System(c) => system::run(cli, c),
        Command::Builder(c) => builder::run(cli, c),
        Command::Info(a) => info::run(cli, a),
        Command::Version(a) => version::run(cli, a),
        Command::Monitor(a) => Ok(crate::monitor::monitor_main(cli, a)),
        Command::Exited { id, code } => Ok(crate::monitor::exited_main(cli, id, *code)),
        Command::StartHelper { id } => Ok(crate::monitor::start_main(cli, id)),
        Command::BuildStage { job, out } => Ok(crate::build::parallel::worker_main(cli, job, out)),
        Command::Build(a) | Command::Image(ImageCmd::Build(a)) => build::run(cli, a),
        Command::Pull(a) | Command::Image(ImageCmd::Pull(a)) => pull::run(cli, a),
        Command::Push(a) | Command::Image(ImageCmd::Push(a)) => push::run(cli, a),
        Command::Login(a) => login::run(cli, a),
        Command::Logout(a) => logout::run(cli, a),
    }
}

/// docker's question before a prune ("WARNING! This will remove {what}."): whether the
/// answer on STDIN is yes.
pub fn confirm(what: &str) -> bool {
    ask(&format!("This will remove {what}."))
}

/// "WARNING! {text}" and "Are you sure you want to continue? [y/N]".
pub fn ask(text: &str) -> bool {
    use std::io::{BufRead, Write};
    print!("WARNING! {text}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}

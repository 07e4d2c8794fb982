//! One file per command. Commands are thin: parse, call the library, print.

mod history;
mod images;
mod import;
mod inspect;
mod load;
mod prune;
mod rmi;
mod run;
mod save;
mod tag;

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
    /// Run a command in a new container.
    Run(run::Args),
    /// Manage images (ls, inspect, history, prune, rm, tag, load, save, import).
    #[command(subcommand)]
    Image(ImageCmd),
    /// Return low-level information on images, as JSON.
    Inspect(inspect::Args),
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

pub fn fail(msg: impl Into<String>) -> Failure {
    Failure { msg: msg.into(), code: 1 }
}

pub type Result<T> = std::result::Result<T, Failure>;

impl Cli {
    pub fn store(&self) -> Result<Store> {
        let root = self.root.clone().unwrap_or_else(Store::default_root);
        Ok(Store::open(&root)?)
    }
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
        Command::Inspect(a) | Command::Image(ImageCmd::Inspect(a)) => inspect::run(cli, a),
        Command::Image(ImageCmd::Prune(a)) => prune::run(cli, a),
        Command::Run(a) => run::run(cli, a),
    }
}

//! `commit [-a AUTHOR] [-m MESSAGE] [-c CHANGE] [-p=false] CONTAINER [REPOSITORY[:TAG]]`.

use super::{fail, Cli, Result};
use crate::container::{self, commit};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>").
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image.
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Commit message.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Pause container during commit.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pause: bool,
    pub container: String,
    pub reference: Option<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let rec = container::find(&store, &a.container)?;
    let rec =
        container::reconcile::one(&mut store, &cli.state_root, &rec)?.ok_or_else(|| fail(format!("No such container: {}", a.container)))?;
    let tag = match &a.reference {
        Some(r) => {
            let parsed = capsa_image::reference::Reference::parse(r).map_err(|e| fail(format!("invalid reference format: {e}")))?;
            if parsed.tag.is_none() {
                return Err(fail(format!("invalid reference format: {r}: a digest cannot be committed to")));
            }
            Some(parsed.full())
        }
        None => None,
    };
    let o = commit::Opts { author: a.author.clone(), message: a.message.clone(), changes: a.change.clone(), pause: a.pause, tag };
    let id = commit::commit(&mut store, &cli.state_root, &rec, &o)?;
    println!("{id}");
    Ok(0)
}

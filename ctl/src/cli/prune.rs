//! `image prune [-a] [-f]`: dangling images (no tag), or with -a every image no container
//! uses; then leftovers of killed commands; then unreferenced layers and blobs.

use super::{Cli, Result};
use crate::format;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove all unused images, not just dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    if !a.force {
        let what = if a.all { "all images without at least one container associated to them" } else { "all dangling images" };
        if !super::confirm(what) {
            return Ok(0);
        }
    }
    let mut store = cli.store()?;
    crate::container::reconcile::all(cli, &mut store);
    let mut deleted = Vec::new();
    for img in store.images()? {
        if (a.all || img.tags.is_empty()) && store.containers_of(&img.id)?.is_empty() {
            for t in &img.tags {
                store.untag(t)?;
            }
            store.delete_image(&img.id)?;
            deleted.push(img);
        }
    }
    // A killed build's scratch dir holds a container and mounts: its own cleanup first.
    crate::build::run::Scratch::clean_stale(&store, &cli.state_root);
    let report = store.gc()?;
    if !deleted.is_empty() {
        println!("Deleted Images:");
        for img in &deleted {
            for t in &img.tags {
                let (r, tag) = capsa_image::reference::split_tag(t);
                println!("untagged: {}:{tag}", capsa_image::reference::familiar(r));
            }
            println!("deleted: {}", img.id);
        }
        println!();
    }
    println!("Total reclaimed space: {}", format::size(report.bytes));
    Ok(0)
}

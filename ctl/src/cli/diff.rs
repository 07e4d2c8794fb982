//! `diff CONTAINER`: what changed in the container's filesystem, from its overlay upper
//! directory: `A` added, `C` changed (it exists in the image), `D` deleted (a whiteout).

use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::OFlag;

use capsa_sys::{Follow, Root};

use super::{fail, Cli, Result};
use crate::container;
use crate::fstree;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub container: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let rec = container::find(&store, &a.container)?;
    let rec =
        container::reconcile::one(&mut store, &cli.state_root, &rec)?.ok_or_else(|| fail(format!("No such container: {}", a.container)))?;
    let upper = container::dir(&store, &rec.id).join("upper");
    let dir = std::fs::File::open(&upper).map_err(|e| fail(format!("{}: {e}", upper.display())))?;
    // The image's layers, top first, to tell "changed" from "added".
    let lowers: Vec<Root> =
        store.chain_of(rec.top_chain.clone())?.iter().rev().filter_map(|c| Root::open(&store.snapshots.fs(c)).ok()).collect();
    let in_image = |p: &Path| -> bool {
        for l in &lowers {
            match l.open_at(p, OFlag::O_PATH, Follow::NotLast) {
                Ok(fd) => {
                    // A whiteout in a higher layer hides the lower ones.
                    return nix::sys::stat::fstat(fd.as_fd()).map(|st| !fstree::is_whiteout(&st)).unwrap_or(true);
                }
                Err(_) => continue,
            }
        }
        false
    };
    let mut out = Vec::new();
    fstree::walk(dir.as_fd(), &mut |n| {
        let p = Path::new("/").join(n.path);
        if fstree::is_whiteout(n.st) {
            out.push(format!("D {}", p.display()));
            return Ok(false);
        }
        let tag = if in_image(&p) { "C" } else { "A" };
        out.push(format!("{tag} {}", p.display()));
        Ok(true)
    })
    .map_err(|e| fail(format!("diff: {e}")))?;
    for l in out {
        println!("{l}");
    }
    Ok(0)
}

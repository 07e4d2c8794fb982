//! `rmi [-f] IMAGE...`: docker's rules. A name removes that tag, and the image with its
//! last tag; an id removes the image, refusing (without -f) one that has several tags.
//! An image used by a container is never removed. Then unreferenced layers and blobs go.

use capsa_image::reference::{familiar, split_tag, Reference};
use capsa_image::store::ImageInfo;
use capsa_image::Store;

use super::{fail, Cli, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Force removal of an image with several tags (by id).
    #[arg(short, long)]
    pub force: bool,
    /// Accepted for compatibility (capsactl keeps no untagged parents).
    #[arg(long = "no-prune")]
    pub no_prune: bool,
    #[arg(required = true)]
    pub images: Vec<String>,
}

fn shown(full: &str) -> String {
    let (r, t) = split_tag(full);
    format!("{}:{t}", familiar(r))
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let mut code = 0;
    let mut removed_any = false;
    for name in &a.images {
        match remove_one(&mut store, name, a.force) {
            Ok(deleted) => removed_any |= deleted,
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = 1;
            }
        }
    }
    if removed_any {
        store.gc()?;
    }
    Ok(code)
}

/// Returns whether the image itself was deleted (not only untagged).
fn remove_one(store: &mut Store, name: &str, force: bool) -> Result<bool> {
    let img: ImageInfo = store.resolve(name)?;
    let by_name = Reference::parse(name).ok().filter(|r| r.digest.is_none() && img.tags.contains(&r.full()));
    let users = store.containers_of(&img.id)?;
    if let Some(r) = by_name {
        let full = r.full();
        if img.tags.len() > 1 {
            store.untag(&full)?;
            println!("Untagged: {}", shown(&full));
            return Ok(false);
        }
        if !users.is_empty() {
            return Err(fail(format!(
                "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                &users[0][..12.min(users[0].len())],
                img.id.short()
            )));
        }
    } else {
        if !users.is_empty() {
            return Err(fail(format!(
                "conflict: unable to delete {} (cannot be forced) - image is being used by running container {}",
                img.id.short(),
                &users[0][..12.min(users[0].len())]
            )));
        }
        if img.tags.len() > 1 && !force {
            return Err(fail(format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                img.id.short()
            )));
        }
    }
    for t in &img.tags {
        println!("Untagged: {}", shown(t));
    }
    store.delete_image(&img.id)?;
    println!("Deleted: {}", img.id);
    Ok(true)
}

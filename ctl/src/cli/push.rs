//! `push NAME[:TAG]`: an image of the store to a registry (blobs first, manifest last).
//! `CAPSA_PUSH_CHUNK_SIZE=BYTES` uploads blobs in PATCH chunks of that size instead of
//! one PUT each.

use capsa_registry::{PushOpts, Settings};

use super::pull::{LayerProgress, Out};
use super::{fail, Cli, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Push all tags of the repository (not implemented).
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// Suppress verbose output.
    #[arg(short, long)]
    pub quiet: bool,
    /// NAME[:TAG] (tag it first with `capsactl tag`).
    pub name: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    if a.all_tags {
        return Err(fail("push --all-tags is not implemented: push each tag"));
    }
    let chunk_size = match std::env::var("CAPSA_PUSH_CHUNK_SIZE") {
        Ok(v) => Some(
            v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| fail(format!("CAPSA_PUSH_CHUNK_SIZE={v:?}: want a number of bytes")))?,
        ),
        Err(_) => None,
    };
    let settings = Settings::from_env()?;
    let store = cli.store()?;
    let r = capsa_image::reference::Reference::parse(&a.name)?;
    if !a.quiet {
        println!("The push refers to repository [{}]", capsa_image::reference::familiar(&r.repo));
    }
    let shown = LayerProgress::new(Out::Stdout, a.quiet);
    let res = capsa_registry::push(&store, &a.name, &PushOpts { settings: &settings, progress: &shown, chunk_size });
    shown.finish();
    let p = res?;
    if !a.quiet {
        println!("{}: digest: {} size: {}", p.tag, p.digest, p.size);
    }
    Ok(0)
}

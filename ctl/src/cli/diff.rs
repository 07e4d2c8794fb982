//! `diff CONTAINER`: what changed in the container's filesystem, from its overlay upper
//! directory: `A` added, `C` changed (it exists in the image), `D` deleted (a whiteout).

use std::os::fd::AsFd;
use std::path::Path;

use nix::sys::stat::SFlag;

use super::{fail, Cli, Result};
use crate::container::{self, fs::Lowers};
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
    let lowers = Lowers::open(&store, &rec)?;
    // (line, path, whether it only holds mount points the runtime made)
    let mut out: Vec<(String, std::path::PathBuf, bool)> = Vec::new();
    fstree::walk(dir.as_fd(), &mut |n| {
        let p = Path::new("/").join(n.path);
        if fstree::is_whiteout(n.st) {
            out.push((format!("D {}", p.display()), p, false));
            return Ok(false);
        }
        if lowers.is_init_entry(&p, n.st) {
            return Ok(true);
        }
        match lowers.stat(&p) {
            // A directory of the image copied up only because something was made in it:
            // shown only if something shown is under it (docker's init layer again).
            Some(l) if fstree::kind(n.st) == SFlag::S_IFDIR => {
                let same = (l.st_mode, l.st_uid, l.st_gid) == (n.st.st_mode, n.st.st_uid, n.st.st_gid);
                out.push((format!("C {}", p.display()), p, same));
            }
            Some(_) => out.push((format!("C {}", p.display()), p, false)),
            None => out.push((format!("A {}", p.display()), p, false)),
        }
        Ok(true)
    })
    .map_err(|e| fail(format!("diff: {e}")))?;
    let shown: Vec<&std::path::PathBuf> = out.iter().filter(|(_, _, only)| !only).map(|(_, p, _)| p).collect();
    let out: Vec<String> =
        out.iter().filter(|(_, p, only)| !only || shown.iter().any(|s| s.starts_with(p) && *s != p)).map(|(l, _, _)| l.clone()).collect();
    for l in out {
        println!("{l}");
    }
    Ok(0)
}

//! `export [-o FILE] CONTAINER`: the container's filesystem (its rootfs as the container
//! sees it, without volumes) as a tar archive, written by the fd walk of `fstree`.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use super::{fail, Cli, Result};
use crate::container::{self, fs::View};
use crate::fstree::{TarOpts, TarWriter};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write to a file, instead of STDOUT.
    #[arg(short, long)]
    pub output: Option<std::path::PathBuf>,
    pub container: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    let rec = container::find(&store, &a.container)?;
    let rec =
        container::reconcile::one(&mut store, &cli.state_root, &rec)?.ok_or_else(|| fail(format!("No such container: {}", a.container)))?;
    if a.output.is_none() && nix::unistd::isatty(std::io::stdout()).unwrap_or(false) {
        return Err(fail("cowardly refusing to save to a terminal. Use the -o flag or redirect"));
    }
    let view = View::open(&store, &cli.state_root, &rec)?;
    let root = std::fs::File::open(&view.rootfs).map_err(|e| fail(format!("rootfs: {e}")))?;
    let out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| fail(format!("{}: {e}", p.display())))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut t = TarWriter::new(std::io::BufWriter::with_capacity(1 << 20, out), TarOpts::default());
    t.add_tree(root.as_fd(), Path::new("")).map_err(|e| fail(format!("export: {e}")))?;
    t.finish().and_then(|mut w| w.flush()).map_err(|e| fail(format!("export: {e}")))?;
    Ok(0)
}

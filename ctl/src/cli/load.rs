//! `load`: images from a docker-archive or OCI layout (tar, compressed tar or directory).

use std::path::PathBuf;

use capsa_image::archive::{self, LoadOpts, Source};
use capsa_image::layer::Limits;
use capsa_image::oci::Platform;
use capsa_image::reference::{familiar, split_tag};

use super::{Cli, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Read from a tar archive file (or an OCI layout directory) instead of STDIN.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Suppress the progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Load this platform's manifest of a multi-platform image (OS/ARCH[/VARIANT]).
    #[arg(long)]
    pub platform: Option<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let platform = a.platform.as_deref().map(Platform::parse).transpose()?;
    let mut store = cli.store()?;
    let (src, _scratch) = match &a.input {
        Some(p) if p.is_dir() => (Source::dir(p)?, None),
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| super::fail(format!("open {}: {e}", p.display())))?;
            let (f, scratch) = archive::source::seekable(f, &store.tmp_dir())?;
            (Source::tar(f, &p.display().to_string())?, scratch)
        }
        None => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                return Err(super::fail("requested load from stdin, but stdin is empty (use -i FILE or a pipe)"));
            }
            let f = std::fs::File::from(std::io::stdin().lock().as_fd_owned()?);
            let (f, scratch) = archive::source::seekable(f, &store.tmp_dir())?;
            (Source::tar(f, "stdin")?, scratch)
        }
    };
    let bar = if a.quiet { crate::progress::Bar::new_hidden() } else { crate::progress::Bar::new("Loading layers") };
    let loaded = archive::load(&mut store, &src, &LoadOpts { platform, limits: Limits::default(), progress: &bar });
    bar.finish();
    for img in loaded? {
        if img.tags.is_empty() {
            println!("Loaded image ID: {}", img.id);
        }
        for t in &img.tags {
            let (repo, tag) = split_tag(t);
            println!("Loaded image: {}:{tag}", familiar(repo));
        }
    }
    Ok(0)
}

trait OwnedStdin {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl OwnedStdin for std::io::StdinLock<'_> {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}

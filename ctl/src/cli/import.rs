//! `import FILE|- [REPOSITORY[:TAG]]`: a root filesystem tarball as a one-layer image.

use capsa_image::layer::Limits;
use capsa_image::reference::Reference;

use super::{fail, Cli, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tarball (plain, gzip or zstd), or - for STDIN. URLs are not fetched.
    pub file: String,
    pub reference: Option<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let tag = a.reference.as_deref().map(Reference::parse).transpose()?.map(|r| r.full());
    if a.file.contains("://") {
        return Err(fail(format!("import {}: importing from a URL is not supported (offline): download it first", a.file)));
    }
    let mut store = cli.store()?;
    let id = if a.file == "-" {
        capsa_image::archive::import(&mut store, std::io::stdin().lock(), "-", tag, &Limits::default())?
    } else {
        let f = std::fs::File::open(&a.file).map_err(|e| fail(format!("open {}: {e}", a.file)))?;
        capsa_image::archive::import(&mut store, f, &a.file, tag, &Limits::default())?
    };
    println!("{id}");
    Ok(0)
}

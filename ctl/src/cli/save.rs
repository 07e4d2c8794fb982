//! `save [-o FILE] [--format docker|oci] IMAGE...`: a tar of the images (docker's format
//! by default), to FILE (written beside it and renamed when complete) or to STDOUT.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use capsa_image::archive::{self, Format, Item};
use capsa_image::reference::Reference;

use super::{fail, Cli, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write to a file, instead of STDOUT.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// docker (manifest.json, plain layers; also an OCI layout), oci (OCI layout tar, blobs
    /// as stored) or oci-dir (the OCI layout as a new directory -o DIR).
    #[arg(long, default_value = "docker", value_parser = ["docker", "oci", "oci-dir"])]
    pub format: String,
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Writes the archive beside `path` and renames it there once complete (also `build -o`).
pub fn to_file(store: &capsa_image::Store, items: &[Item], format: Format, path: &std::path::Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name = path.file_name().ok_or_else(|| fail(format!("--output {}: not a file name", path.display())))?;
    let tmp = dir.join(format!(".{}.{}", name.to_string_lossy(), capsa_image::content::random_suffix()));
    let f = std::fs::File::create(&tmp).map_err(|e| fail(format!("create {}: {e}", tmp.display())))?;
    let res = archive::save(store, items, format, std::io::BufWriter::with_capacity(1 << 20, f))
        .and_then(|w| w.into_inner().map_err(|e| capsa_image::Error::new(format!("write {}: {e}", path.display()))))
        .and_then(|_| std::fs::rename(&tmp, path).map_err(|e| capsa_image::Error::new(format!("rename to {}: {e}", path.display()))));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(())
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let store = cli.store()?;
    let format = if a.format == "oci" { Format::Oci } else { Format::Docker };
    let mut items: Vec<Item> = Vec::new();
    for name in &a.images {
        let img = store.resolve(name)?;
        let by_name = Reference::parse(name).ok().map(|r| r.full()).filter(|f| img.tags.contains(f));
        match items.iter_mut().find(|i| i.image.id == img.id) {
            Some(i) => i.names.extend(by_name),
            None => items.push(Item { names: by_name.into_iter().collect(), image: img }),
        }
    }
    if a.format == "oci-dir" {
        let dir = a.output.as_ref().ok_or_else(|| fail("--format oci-dir: -o DIR is required"))?;
        archive::save_dir(&store, &items, dir)?;
        return Ok(0);
    }
    match &a.output {
        Some(path) => to_file(&store, &items, format, path)?,
        None => {
            if std::io::stdout().is_terminal() {
                return Err(fail("cowardly refusing to save to a terminal. Use the -o flag or redirect"));
            }
            let out = std::io::stdout().lock();
            let mut w = archive::save(&store, &items, format, std::io::BufWriter::with_capacity(1 << 20, out))?;
            w.flush()?;
        }
    }
    Ok(0)
}

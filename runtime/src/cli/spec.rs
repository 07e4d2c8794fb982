use std::path::PathBuf;

use capsa::error::Context;
use capsa::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write config.json in.
    #[arg(short = 'b', long, default_value = ".")]
    pub bundle: PathBuf,
    /// Make a spec for a rootless container (maps the caller's uid and gid).
    #[arg(long = "rootless", id = "spec_rootless")]
    pub rootless: bool,
}

pub fn run(a: &Args) -> Result<i32> {
    let path = a.bundle.join("config.json");
    if path.exists() {
        bail!("File {} exists. Remove it first", path.display());
    }
    let ids = a.rootless.then(|| (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw()));
    let v = capsa::spec::example(ids);
    // Tab-indented, as runc writes it.
    let mut text = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut text, fmt);
    serde::Serialize::serialize(&v, &mut ser).map_err(|e| capsa::Error::new(e.to_string()))?;
    std::fs::write(&path, text).with_ctx(|| format!("write {}", path.display()))?;
    Ok(0)
}

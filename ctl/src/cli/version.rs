//! `version`: capsactl's version (there is no server: capsactl is the whole engine).

use super::{Cli, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Format output using a Go template subset ({{.Client.Version}}, {{json .}}).
    #[arg(short, long)]
    pub format: Option<String>,
}

pub fn run(_cli: &Cli, a: &Args) -> Result<i32> {
    let v = env!("CARGO_PKG_VERSION");
    let os_arch = format!(
        "linux/{}",
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            o => o,
        }
    );
    let info = serde_json::json!({
        "Client": {"Version": v, "ApiVersion": "1.43", "Os": "linux", "Arch": std::env::consts::ARCH, "Platform": {"Name": "capsactl"}},
        "Server": {"Version": v, "Platform": {"Name": "capsactl (no daemon)"}, "Components": [{"Name": "capsa", "Version": v}]}
    });
    if let Some(f) = &a.format {
        let t = crate::format::Template::parse(f)?;
        let obj: std::collections::BTreeMap<String, serde_json::Value> = serde_json::from_value(info).unwrap_or_default();
        println!("{}", t.render(&obj)?);
        return Ok(0);
    }
    println!("Client:\n Version:           {v}\n API version:       1.43 (docker CLI compatible commands)\n OS/Arch:           {os_arch}\n Context:           default\n");
    println!("Server: capsactl (no daemon: every command works on the store)\n Engine:\n  Version:          {v}\n  OS/Arch:          {os_arch}\n Runtime:\n  capsa:            {v} (library)");
    Ok(0)
}

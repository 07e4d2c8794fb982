//! `image inspect` / `inspect`: docker's JSON (an array), or `--format` per image.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use capsa_image::reference::{familiar, split_tag};
use capsa_image::store::ImageInfo;
use capsa_image::Store;

use super::{Cli, Result};
use crate::format;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Format output using a Go template subset ({{.Id}}, {{.Config.Cmd}}, {{json .}}).
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let store = cli.store()?;
    let template = a.format.as_deref().map(format::Template::parse).transpose()?;
    let mut out = Vec::new();
    let mut code = 0;
    for name in &a.images {
        match store.resolve(name) {
            Ok(img) => out.push(describe(&store, &img)?),
            Err(_) => {
                eprintln!("Error: No such image: {name}");
                code = 1;
            }
        }
    }
    match template {
        Some(t) => {
            for v in &out {
                let obj: BTreeMap<String, Value> = serde_json::from_value(v.clone()).unwrap_or_default();
                println!("{}", t.render(&obj)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&Value::Array(out)).unwrap_or_default()),
    }
    Ok(code)
}

/// docker's image inspect object.
pub fn describe(store: &Store, img: &ImageInfo) -> Result<Value> {
    let (cfg, _) = store.config(img)?;
    let tags: Vec<String> = img.tags.iter().map(|t| split_tag(t)).map(|(r, t)| format!("{}:{t}", familiar(r))).collect();
    let mut repos: Vec<String> = img.tags.iter().map(|t| familiar(split_tag(t).0).to_string()).collect();
    repos.dedup();
    let repo_digests: Vec<String> = match &img.repo_digest {
        Some(d) => repos.iter().map(|r| format!("{r}@{d}")).collect(),
        None => Vec::new(),
    };
    let chain = store.chain(img)?;
    let dirs: Vec<String> = chain.iter().rev().map(|c| store.snapshots.fs(c).display().to_string()).collect();
    let mut config = serde_json::to_value(cfg.config.clone().unwrap_or_default()).unwrap_or(json!({}));
    // docker shows these keys even when empty.
    if let Some(o) = config.as_object_mut() {
        for k in ["Env", "Cmd", "Entrypoint", "Labels", "Volumes", "WorkingDir", "User"] {
            o.entry(k).or_insert(Value::Null);
        }
    }
    Ok(json!({
        "Id": img.id.to_string(),
        "RepoTags": tags,
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": cfg.history.as_ref().and_then(|h| h.last()).and_then(|h| h.comment.clone()).unwrap_or_default(),
        "Created": cfg.created.clone().unwrap_or_default(),
        "DockerVersion": cfg.extra.get("docker_version").cloned().unwrap_or(Value::from("")),
        "Author": cfg.author.clone().unwrap_or_default(),
        "Config": config,
        "Architecture": cfg.architecture,
        "Variant": cfg.variant,
        "Os": cfg.os,
        "Size": img.size,
        "GraphDriver": {
            "Name": "overlay",
            "Data": {"LowerDir": dirs.join(":")}
        },
        "RootFS": {"Type": "layers", "Layers": cfg.rootfs.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"}
    }))
}

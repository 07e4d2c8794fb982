//! `inspect` (containers first, then images, as docker), `container inspect`, `image
//! inspect`: docker's JSON (an array), or `--format` per object.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use capsa_image::reference::{familiar, split_tag};
use capsa_image::store::ImageInfo;
use capsa_image::Store;

use super::{Cli, Result};
use crate::container::{self, volumes, Record, ZERO_TIME};
use crate::format;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Format output using a Go template subset ({{.Id}}, {{.State.Status}}, {{json .}}).
    #[arg(short, long)]
    pub format: Option<String>,
    /// Return JSON for the specified type (container or image).
    #[arg(long = "type")]
    pub typ: Option<String>,
    /// Display total file sizes (containers).
    #[arg(short, long)]
    pub size: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Any,
    Container,
    Image,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let kind = match a.typ.as_deref() {
        None => Kind::Any,
        Some("container") => Kind::Container,
        Some("image") => Kind::Image,
        Some(t) => return Err(super::fail(format!("\"{t}\" is not a valid value for --type"))),
    };
    inspect(cli, a, kind)
}

pub fn run_images(cli: &Cli, a: &Args) -> Result<i32> {
    inspect(cli, a, Kind::Image)
}

pub fn run_containers(cli: &Cli, a: &Args) -> Result<i32> {
    inspect(cli, a, Kind::Container)
}

fn inspect(cli: &Cli, a: &Args, kind: Kind) -> Result<i32> {
    let mut store = cli.store()?;
    let template = a.format.as_deref().map(format::Template::parse).transpose()?;
    let mut out = Vec::new();
    let mut code = 0;
    for name in &a.names {
        if kind != Kind::Image {
            if let Ok(rec) = container::find(&store, name) {
                let rec = container::reconcile::one(&mut store, &cli.state_root, &rec)?.unwrap_or(rec);
                out.push(describe_container(&store, &rec, a.size)?);
                continue;
            }
        }
        if kind != Kind::Container {
            if let Ok(img) = store.resolve(name) {
                out.push(describe(&store, &img)?);
                continue;
            }
        }
        let what = match kind {
            Kind::Image => "image",
            Kind::Container => "container",
            Kind::Any => "object",
        };
        eprintln!("Error: No such {what}: {name}");
        code = 1;
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

fn time_or_zero(t: &str) -> &str {
    if t.is_empty() {
        ZERO_TIME
    } else {
        t
    }
}

/// docker's container inspect object.
pub fn describe_container(store: &Store, r: &Record, size: bool) -> Result<Value> {
    let dir = container::dir(store, &r.id);
    let argv = r.stored.config.argv();
    let status = super::ps::state(r);
    let running = matches!(r.state.as_str(), "running" | "paused" | "restarting" | "starting");
    let mounts: Vec<Value> = r
        .stored
        .mounts
        .iter()
        .map(|m| {
            let mut v = serde_json::to_value(m).unwrap_or(json!({}));
            if let Some(o) = v.as_object_mut() {
                o.remove("CapsaOptions");
                if m.typ == "volume" {
                    o.insert("Source".into(), json!(volumes::data_dir(store, &m.name).display().to_string()));
                }
            }
            v
        })
        .collect();
    let lower: Vec<String> =
        store.chain_of(r.top_chain.clone()).unwrap_or_default().iter().rev().map(|c| store.snapshots.fs(c).display().to_string()).collect();
    let mut v = json!({
        "Id": r.id,
        "Created": r.created_at,
        "Path": argv.first().cloned().unwrap_or_default(),
        "Args": argv.iter().skip(1).cloned().collect::<Vec<_>>(),
        "State": {
            "Status": status,
            "Running": running && r.state != "restarting",
            "Paused": r.state == "paused",
            "Restarting": r.state == "restarting",
            "OOMKilled": r.oom_killed,
            "Dead": r.state == "dead",
            "Pid": if running { r.pid } else { 0 },
            "ExitCode": r.exit_code,
            "Error": r.error,
            "StartedAt": time_or_zero(&r.started_at),
            "FinishedAt": time_or_zero(&r.finished_at),
        },
        "Image": r.image,
        "ResolvConfPath": dir.join("resolv.conf"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        "LogPath": if r.stored.host.log_config.typ == "none" { String::new() } else { container::log_path(&dir, &r.id).display().to_string() },
        "Name": format!("/{}", r.name),
        "RestartCount": r.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": r.stored.host,
        "GraphDriver": {"Data": {"LowerDir": lower.join(":"), "MergedDir": dir.join("rootfs"), "UpperDir": dir.join("upper"), "WorkDir": dir.join("work")}, "Name": "overlay2"},
        "Mounts": mounts,
        "Config": r.stored.config,
        "NetworkSettings": container::network::settings(store, r)
    });
    if size {
        let rw = volumes::dir_size(&dir.join("upper"));
        let image = store.resolve(&r.image).map(|i| i.size).unwrap_or(0);
        v["SizeRw"] = json!(rw);
        v["SizeRootFs"] = json!(rw + image);
    }
    Ok(v)
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

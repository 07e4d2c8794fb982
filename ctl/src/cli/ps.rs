//! `ps [-a] [-q] [-s] [-n N] [-l] [--no-trunc] [--format F] [--filter K=V]`: docker's
//! table (CONTAINER ID, IMAGE, COMMAND, CREATED, STATUS, PORTS, NAMES [, SIZE]). Rows are
//! reconciled first, so a container whose monitor was killed shows what is true.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{fail, Cli, Result};
use crate::container::{self, Record};
use crate::format;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Display total file sizes.
    #[arg(short, long)]
    pub size: bool,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long = "last", allow_hyphen_values = true)]
    pub last: Option<i64>,
    /// Show the latest created container (includes all states).
    #[arg(short, long)]
    pub latest: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format output using a Go template subset ({{.ID}}, {{.Names}}, {{json .}}, table ...).
    #[arg(long)]
    pub format: Option<String>,
    /// Filter output based on conditions provided (id, name, label, status, exited, ancestor, volume, before, since).
    #[arg(short, long)]
    pub filter: Vec<String>,
}

/// docker's STATUS column.
pub fn status(r: &Record) -> String {
    let since = |t: &str| format::duration(format::now() - format::parse_time(t).unwrap_or_else(format::now));
    match r.state.as_str() {
        "running" => format!("Up {}", since(&r.started_at)),
        "paused" => format!("Up {} (Paused)", since(&r.started_at)),
        "restarting" => format!("Restarting ({}) {} ago", r.exit_code, since(&r.finished_at)),
        "exited" if r.finished_at.is_empty() => format!("Exited ({})", r.exit_code),
        "exited" => format!("Exited ({}) {} ago", r.exit_code, since(&r.finished_at)),
        "removing" => "Removal In Progress".into(),
        "dead" => "Dead".into(),
        _ => "Created".into(),
    }
}

/// docker's State: created, running, paused, restarting, removing, exited, dead.
pub fn state(r: &Record) -> &str {
    match r.state.as_str() {
        "starting" => "created",
        s => s,
    }
}

fn command(r: &Record, trunc: bool) -> String {
    let argv = r.stored.config.argv();
    let mut c = argv.join(" ");
    if trunc && c.chars().count() > 20 {
        c = c.chars().take(19).collect::<String>() + "…";
    }
    serde_json::to_string(&c).unwrap_or_default()
}

fn matches(store: &capsa_image::Store, r: &Record, filters: &[(String, String)], all: &[Record]) -> Result<bool> {
    // Filters of one key are ORed, different keys ANDed (docker's rule).
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in filters {
        by_key.entry(k.as_str()).or_default().push(v.as_str());
    }
    let created = |id: &str| all.iter().find(|x| x.id == id || x.name == id || x.id.starts_with(id)).map(|x| x.created_at.clone());
    for (k, vals) in by_key {
        let ok = vals.iter().any(|v| match k {
            "id" => r.id.starts_with(v),
            "name" => r.name.contains(v),
            "label" => match v.split_once('=') {
                Some((lk, lv)) => r.stored.config.labels.get(lk).is_some_and(|x| x == lv),
                None => r.stored.config.labels.contains_key(*v),
            },
            "status" => state(r) == *v,
            "exited" => r.state == "exited" && v.parse::<i32>().ok() == Some(r.exit_code),
            "ancestor" => {
                r.stored.config.image == *v
                    || r.image.trim_start_matches("sha256:").starts_with(v.trim_start_matches("sha256:"))
                    || store.resolve(v).map(|i| i.id.to_string() == r.image).unwrap_or(false)
            }
            "volume" => r.stored.mounts.iter().any(|m| m.name == *v || m.destination == *v || m.source == *v),
            "before" => created(v).is_some_and(|c| r.created_at < c),
            "since" => created(v).is_some_and(|c| r.created_at > c),
            _ => false,
        });
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    container::reconcile::all(cli, &mut store);
    let mut filters = Vec::new();
    for f in &a.filter {
        let (k, v) = f.split_once('=').ok_or_else(|| fail(format!("bad format of filter (expected name=value): {f}")))?;
        if !["id", "name", "label", "status", "exited", "ancestor", "volume", "before", "since"].contains(&k) {
            return Err(fail(format!("invalid filter '{k}'")));
        }
        filters.push((k.to_string(), v.to_string()));
    }
    let all_rows = container::list(&store)?;
    let show_all = a.all || a.latest || a.last.is_some_and(|n| n >= 0) || filters.iter().any(|(k, _)| k == "status" || k == "exited");
    let mut rows: Vec<&Record> = Vec::new();
    for r in &all_rows {
        if !show_all && !matches!(r.state.as_str(), "running" | "paused" | "restarting" | "removing") {
            continue;
        }
        if !matches(&store, r, &filters, &all_rows)? {
            continue;
        }
        rows.push(r);
    }
    let limit = if a.latest { Some(1) } else { a.last.filter(|n| *n >= 0).map(|n| n as usize) };
    if let Some(n) = limit {
        rows.truncate(n);
    }
    if a.quiet {
        for r in rows {
            println!("{}", if a.no_trunc { r.id.as_str() } else { r.short_id() });
        }
        return Ok(0);
    }
    let trunc = !a.no_trunc;
    let size = |r: &Record| -> String {
        let upper = crate::container::volumes::dir_size(&container::dir(&store, &r.id).join("upper"));
        let image = store.resolve(&r.image).map(|i| i.size).unwrap_or(0);
        format!("{} (virtual {})", format::size(upper), format::size(upper + image))
    };
    let objs: Vec<BTreeMap<String, Value>> = rows
        .iter()
        .map(|r| {
            let mut o = BTreeMap::new();
            o.insert("ID".into(), json!(if trunc { r.short_id() } else { r.id.as_str() }));
            o.insert("Image".into(), json!(r.stored.config.image));
            o.insert("Command".into(), json!(command(r, trunc)));
            o.insert("CreatedAt".into(), json!(r.created_at));
            o.insert("RunningFor".into(), json!(format::ago(Some(&r.created_at))));
            // docker's: 0.0.0.0:8080->80/tcp, ...
            let ports: Vec<String> = container::network::port_lines(&store, r).into_iter().map(|(c, h)| format!("{h}->{c}")).collect();
            o.insert("Ports".into(), json!(ports.join(", ")));
            o.insert("State".into(), json!(state(r)));
            o.insert("Status".into(), json!(status(r)));
            o.insert("Names".into(), json!(r.name));
            o.insert("Labels".into(), json!(r.stored.config.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")));
            o.insert(
                "Mounts".into(),
                json!(r
                    .stored
                    .mounts
                    .iter()
                    .map(|m| if m.name.is_empty() { m.source.clone() } else { m.name.clone() })
                    .collect::<Vec<_>>()
                    .join(",")),
            );
            o.insert("Networks".into(), json!(r.stored.host.network_mode));
            o.insert(
                "Size".into(),
                json!(if a.size || a.format.as_deref().is_some_and(|f| f.contains(".Size")) { size(r) } else { String::new() }),
            );
            o
        })
        .collect();
    if let Some(f) = &a.format {
        let t = format::Template::parse(f)?;
        let headers: BTreeMap<&str, &str> = [
            ("ID", "CONTAINER ID"),
            ("Image", "IMAGE"),
            ("Command", "COMMAND"),
            ("CreatedAt", "CREATED AT"),
            ("RunningFor", "CREATED"),
            ("Ports", "PORTS"),
            ("State", "STATE"),
            ("Status", "STATUS"),
            ("Names", "NAMES"),
            ("Labels", "LABELS"),
            ("Mounts", "MOUNTS"),
            ("Networks", "NETWORKS"),
            ("Size", "SIZE"),
        ]
        .into_iter()
        .collect();
        print!("{}", format::with_template(&t, &headers, &objs)?);
        return Ok(0);
    }
    let mut headers = vec!["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"];
    if a.size {
        headers.push("SIZE");
    }
    let cells: Vec<Vec<String>> = objs
        .iter()
        .map(|o| {
            let g = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mut row = vec![g("ID"), g("Image"), g("Command"), g("RunningFor"), g("Status"), g("Ports"), g("Names")];
            if a.size {
                row.push(g("Size"));
            }
            row
        })
        .collect();
    print!("{}", format::table(&headers, &cells));
    Ok(0)
}

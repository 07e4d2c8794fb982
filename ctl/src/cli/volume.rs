//! `volume create|ls|inspect|rm|prune`: named volumes (docker's local driver).

use std::collections::BTreeMap;

use clap::Subcommand;
use serde_json::{json, Value};

use super::{each, fail, Cli, Result};
use crate::container::volumes;
use crate::format;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes.
    Inspect(InspectArgs),
    /// Remove one or more volumes.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes (anonymous ones; with -a all unused).
    Prune(PruneArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Specify volume driver name.
    #[arg(short, long, default_value = "local")]
    pub driver: String,
    /// Set metadata for a volume.
    #[arg(long)]
    pub label: Vec<String>,
    /// Set driver specific options.
    #[arg(short, long)]
    pub opt: Vec<String>,
    /// Specify volume name.
    #[arg(long = "name")]
    pub name_flag: Option<String>,
    pub name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Only display volume names.
    #[arg(short, long)]
    pub quiet: bool,
    /// Provide filter values (dangling=true|false, name=, label=).
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Format output using a Go template subset.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Format output using a Go template subset.
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub volumes: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Do not error if a volume does not exist.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub volumes: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

fn kv(list: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    list.iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            if k.is_empty() {
                return Err(fail(format!("{what} {l:?}: empty key")));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

pub fn run(cli: &Cli, c: &Cmd) -> Result<i32> {
    let mut store = cli.store()?;
    match c {
        Cmd::Create(a) => {
            if a.driver != "local" {
                return Err(fail(format!("error looking up volume plugin {}: plugin \"{}\" not found", a.driver, a.driver)));
            }
            let name = match (&a.name, &a.name_flag) {
                (Some(n), Some(f)) if n != f => {
                    return Err(fail("conflicting options: either specify --name or provide positional arg, not both"))
                }
                (Some(n), _) | (None, Some(n)) => n.clone(),
                (None, None) => crate::container::random_id(),
            };
            let v = volumes::create(
                &mut store,
                &name,
                &kv(&a.label, "--label")?,
                &kv(&a.opt, "--opt")?,
                a.name.is_none() && a.name_flag.is_none(),
            )?;
            println!("{}", v.name);
            Ok(0)
        }
        Cmd::Ls(a) => {
            let mut rows = Vec::new();
            for v in volumes::list(&store)? {
                let mut ok = true;
                for f in &a.filter {
                    let (k, val) = f.split_once('=').ok_or_else(|| fail(format!("bad format of filter (expected name=value): {f}")))?;
                    ok &= match k {
                        "dangling" => (volumes::users(&store, &v.name)?.is_empty()) == matches!(val, "true" | "1"),
                        "name" => v.name.contains(val),
                        "driver" => v.driver == val,
                        "label" => match val.split_once('=') {
                            Some((lk, lv)) => v.labels.get(lk).is_some_and(|x| x == lv),
                            None => v.labels.contains_key(val),
                        },
                        _ => return Err(fail(format!("invalid filter '{k}'"))),
                    };
                }
                if ok {
                    rows.push(v);
                }
            }
            if a.quiet {
                for v in rows {
                    println!("{}", v.name);
                }
                return Ok(0);
            }
            let objs: Vec<BTreeMap<String, Value>> = rows
                .iter()
                .map(|v| {
                    let mut o = BTreeMap::new();
                    o.insert("Driver".into(), json!(v.driver));
                    o.insert("Name".into(), json!(v.name));
                    o.insert("Mountpoint".into(), json!(volumes::data_dir(&store, &v.name).display().to_string()));
                    o.insert("Scope".into(), json!("local"));
                    o.insert("Labels".into(), json!(v.labels.iter().map(|(k, x)| format!("{k}={x}")).collect::<Vec<_>>().join(",")));
                    o
                })
                .collect();
            match &a.format {
                Some(f) => {
                    let t = format::Template::parse(f)?;
                    let h: BTreeMap<&str, &str> = [
                        ("Driver", "DRIVER"),
                        ("Name", "VOLUME NAME"),
                        ("Mountpoint", "MOUNTPOINT"),
                        ("Scope", "SCOPE"),
                        ("Labels", "LABELS"),
                    ]
                    .into_iter()
                    .collect();
                    print!("{}", format::with_template(&t, &h, &objs)?);
                }
                None => {
                    let cells: Vec<Vec<String>> = rows.iter().map(|v| vec![v.driver.clone(), v.name.clone()]).collect();
                    print!("{}", format::table(&["DRIVER", "VOLUME NAME"], &cells));
                }
            }
            Ok(0)
        }
        Cmd::Inspect(a) => {
            let mut out = Vec::new();
            let mut code = 0;
            for n in &a.volumes {
                match volumes::get(&store, n)? {
                    Some(v) => out.push(volumes::describe(&store, &v)),
                    None => {
                        eprintln!("Error response from daemon: get {n}: no such volume");
                        code = 1;
                    }
                }
            }
            match &a.format {
                Some(f) => {
                    let t = format::Template::parse(f)?;
                    for v in &out {
                        let obj: BTreeMap<String, Value> = serde_json::from_value(v.clone()).unwrap_or_default();
                        println!("{}", t.render(&obj)?);
                    }
                }
                None => println!("{}", serde_json::to_string_pretty(&Value::Array(out)).unwrap_or_default()),
            }
            Ok(code)
        }
        Cmd::Rm(a) => each(&a.volumes, |n| {
            volumes::remove(&mut store, n, a.force)?;
            println!("{n}");
            Ok(())
        }),
        Cmd::Prune(a) => {
            if !a.force
                && !super::confirm(if a.all {
                    "all local volumes not used by at least one container"
                } else {
                    "anonymous local volumes not used by at least one container"
                })
            {
                return Ok(0);
            }
            let (names, bytes) = prune(&mut store, a.all)?;
            if !names.is_empty() {
                println!("Deleted Volumes:");
                for n in &names {
                    println!("{n}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", format::size(bytes));
            Ok(0)
        }
    }
}

/// Removes unused volumes (anonymous only unless `all`); returns names and bytes freed.
pub fn prune(store: &mut capsa_image::Store, all: bool) -> Result<(Vec<String>, u64)> {
    let mut names = Vec::new();
    let mut bytes = 0;
    for v in volumes::list(store)? {
        if (all || v.anonymous) && volumes::users(store, &v.name)?.is_empty() {
            let size = volumes::size(store, &v.name);
            if volumes::remove(store, &v.name, true).is_ok() {
                bytes += size;
                names.push(v.name);
            }
        }
    }
    Ok((names, bytes))
}

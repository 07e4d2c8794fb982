//! `system df`, `system prune`, `system info`, and `container prune`.

use clap::Subcommand;

use super::{Cli, Result};
use crate::container::{self, remove, volumes};
use crate::format;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Show disk usage.
    Df(DfArgs),
    /// Remove unused data (stopped containers, dangling images; -a unused images; --volumes).
    Prune(PruneArgs),
    /// Display system-wide information.
    Info(super::info::Args),
}

#[derive(clap::Args, Debug)]
pub struct DfArgs {
    /// Show detailed information on space usage.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused images not just dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Prune anonymous volumes.
    #[arg(long)]
    pub volumes: bool,
}

#[derive(clap::Args, Debug)]
pub struct ContainerPruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(cli: &Cli, c: &Cmd) -> Result<i32> {
    match c {
        Cmd::Df(a) => df(cli, a),
        Cmd::Prune(a) => prune(cli, a),
        Cmd::Info(a) => super::info::run(cli, a),
    }
}

fn df(cli: &Cli, a: &DfArgs) -> Result<i32> {
    let mut store = cli.store()?;
    container::reconcile::all(cli, &mut store);
    let images = store.images()?;
    let ctrs = container::list(&store)?;
    let used: std::collections::HashSet<&str> = ctrs.iter().map(|c| c.image.as_str()).collect();
    // Layers are shared: an image's size counts each of its layers once overall, and a
    // layer is reclaimable only if no image in use has it.
    let mut layers = Vec::new();
    let mut in_use = std::collections::HashSet::new();
    for i in &images {
        let ls = store.layers(i)?;
        if used.contains(i.id.to_string().as_str()) {
            in_use.extend(ls.iter().map(|l| l.chain.to_string()));
        }
        layers.extend(ls);
    }
    let mut seen = std::collections::HashSet::new();
    let (mut img_total, mut img_reclaim) = (0u64, 0u64);
    for l in &layers {
        if seen.insert(l.chain.to_string()) {
            img_total += l.size;
            if !in_use.contains(&l.chain.to_string()) {
                img_reclaim += l.size;
            }
        }
    }
    let active_imgs = images.iter().filter(|i| used.contains(i.id.to_string().as_str())).count();
    let ctr_size = |c: &container::Record| volumes::dir_size(&container::dir(&store, &c.id).join("upper"));
    let ctr_total: u64 = ctrs.iter().map(ctr_size).sum();
    let ctr_reclaim: u64 = ctrs.iter().filter(|c| !c.is_active()).map(ctr_size).sum();
    let active_ctrs = ctrs.iter().filter(|c| c.is_active()).count();
    let vols = volumes::list(&store)?;
    let vol_size = |n: &str| volumes::size(&store, n);
    let vol_total: u64 = vols.iter().map(|v| vol_size(&v.name)).sum();
    let mut vol_active = 0;
    let mut vol_reclaim = 0;
    for v in &vols {
        if volumes::users(&store, &v.name)?.is_empty() {
            vol_reclaim += vol_size(&v.name);
        } else {
            vol_active += 1;
        }
    }
    let cache = crate::build::cache::usage(&store)?;
    let pct = |r: u64, t: u64| (r * 100).checked_div(t).map(|p| format!(" ({p}%)")).unwrap_or_default();
    let rows = vec![
        vec![
            "Images".into(),
            images.len().to_string(),
            active_imgs.to_string(),
            format::size(img_total),
            format!("{}{}", format::size(img_reclaim), pct(img_reclaim, img_total)),
        ],
        vec![
            "Containers".into(),
            ctrs.len().to_string(),
            active_ctrs.to_string(),
            format::size(ctr_total),
            format!("{}{}", format::size(ctr_reclaim), pct(ctr_reclaim, ctr_total)),
        ],
        vec![
            "Local Volumes".into(),
            vols.len().to_string(),
            vol_active.to_string(),
            format::size(vol_total),
            format!("{}{}", format::size(vol_reclaim), pct(vol_reclaim, vol_total)),
        ],
        vec![
            "Build Cache".into(),
            cache.total.to_string(),
            cache.active.to_string(),
            format::size(cache.size),
            format!("{}{}", format::size(cache.reclaimable), pct(cache.reclaimable, cache.size)),
        ],
    ];
    print!("{}", format::table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows));
    if a.verbose {
        println!("\nContainers space usage:\n");
        let cells: Vec<Vec<String>> = ctrs
            .iter()
            .map(|c| {
                vec![
                    c.short_id().to_string(),
                    c.stored.config.image.clone(),
                    format::size(ctr_size(c)),
                    super::ps::status(c),
                    c.name.clone(),
                ]
            })
            .collect();
        print!("{}", format::table(&["CONTAINER ID", "IMAGE", "SIZE", "STATUS", "NAMES"], &cells));
        println!("\nLocal Volumes space usage:\n");
        let cells: Vec<Vec<String>> = vols
            .iter()
            .map(|v| {
                vec![
                    v.name.clone(),
                    volumes::users(&store, &v.name).map(|u| u.len()).unwrap_or(0).to_string(),
                    format::size(vol_size(&v.name)),
                ]
            })
            .collect();
        print!("{}", format::table(&["VOLUME NAME", "LINKS", "SIZE"], &cells));
    }
    Ok(0)
}

/// Removes every container that is down (and stray directories); returns ids and bytes.
fn prune_containers(cli: &Cli, store: &mut capsa_image::Store) -> Result<(Vec<String>, u64)> {
    container::reconcile::all(cli, store);
    let mut ids = Vec::new();
    let mut bytes = 0;
    for c in container::list(store)? {
        if c.is_active() {
            continue;
        }
        let size = volumes::dir_size(&container::dir(store, &c.id).join("upper"));
        if remove::rm(store, &cli.state_root, &c, false, false).is_ok() {
            bytes += size;
            ids.push(c.id);
        }
    }
    remove::strays(store);
    Ok((ids, bytes))
}

pub fn container_prune(cli: &Cli, a: &ContainerPruneArgs) -> Result<i32> {
    if !a.force && !super::confirm("all stopped containers") {
        return Ok(0);
    }
    let mut store = cli.store()?;
    let (ids, bytes) = prune_containers(cli, &mut store)?;
    if !ids.is_empty() {
        println!("Deleted Containers:");
        for i in &ids {
            println!("{i}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", format::size(bytes));
    Ok(0)
}

fn prune(cli: &Cli, a: &PruneArgs) -> Result<i32> {
    if !a.force {
        let mut what = "  - all stopped containers\n".to_string();
        if a.volumes {
            what.push_str("  - all anonymous volumes not used by at least one container\n");
        }
        what.push_str(if a.all {
            "  - all images without at least one container associated to them\n"
        } else {
            "  - all dangling images\n"
        });
        what.push_str(if a.all { "  - all build cache\n" } else { "  - unused build cache\n" });
        if !super::ask(&format!("This will remove:\n{what}")) {
            return Ok(0);
        }
    }
    let mut store = cli.store()?;
    let (ids, mut bytes) = prune_containers(cli, &mut store)?;
    if !ids.is_empty() {
        println!("Deleted Containers:");
        for i in &ids {
            println!("{i}");
        }
        println!();
    }
    if a.volumes {
        let (names, b) = super::volume::prune(&mut store, false)?;
        bytes += b;
        if !names.is_empty() {
            println!("Deleted Volumes:");
            for n in &names {
                println!("{n}");
            }
            println!();
        }
    }
    let mut deleted = Vec::new();
    for img in store.images()? {
        if (a.all || img.tags.is_empty()) && store.containers_of(&img.id)?.is_empty() {
            for t in &img.tags {
                store.untag(t)?;
            }
            store.delete_image(&img.id)?;
            deleted.push(img);
        }
    }
    // A killed build's scratch dir holds a container and mounts: its own cleanup first.
    crate::build::run::Scratch::clean_stale(&store, &cli.state_root);
    let report = store.gc()?;
    bytes += report.bytes;
    // The build cache: cache mounts no build uses, entries no image holds (-a: all).
    bytes += crate::build::cache::prune(&mut store, a.all)?.1;
    if !deleted.is_empty() {
        println!("Deleted Images:");
        for img in &deleted {
            for t in &img.tags {
                let (r, tag) = capsa_image::reference::split_tag(t);
                println!("untagged: {}:{tag}", capsa_image::reference::familiar(r));
            }
            println!("deleted: {}", img.id);
        }
        println!();
    }
    println!("Total reclaimed space: {}", format::size(bytes));
    Ok(0)
}

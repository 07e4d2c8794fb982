//! `images`: the table docker prints (REPOSITORY TAG [DIGEST] IMAGE ID CREATED SIZE),
//! `-q`, `--digests`, `--format`, `-a`, and an optional REPOSITORY[:TAG] filter.

use std::collections::BTreeMap;

use serde_json::Value;

use capsa_image::reference::{familiar, split_tag, Reference};

use super::{Cli, Result};
use crate::format;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show all images (capsactl keeps no intermediate images: same as without).
    #[arg(short, long)]
    pub all: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format output using a Go template subset ({{.Repository}}, {{json .}}, table ...).
    #[arg(long)]
    pub format: Option<String>,
    /// Only images of this repository[:tag].
    pub reference: Option<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let store = cli.store()?;
    let filter = a.reference.as_deref().map(|r| {
        let has_tag = r.rsplit('/').next().is_some_and(|l| l.contains(':'));
        Reference::parse(r).map(|p| (p.repo, if has_tag { p.tag } else { None }))
    });
    let filter = filter.transpose()?;
    let mut rows: Vec<BTreeMap<String, Value>> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for img in store.images()? {
        let id = if a.no_trunc { img.id.to_string() } else { img.id.short().to_string() };
        let names: Vec<(String, String)> = if img.tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            img.tags.iter().map(|t| split_tag(t)).map(|(r, t)| (r.to_string(), t.to_string())).collect()
        };
        for (repo, tag) in names {
            if let Some((frepo, ftag)) = &filter {
                if &repo != frepo || ftag.as_ref().is_some_and(|t| *t != tag) {
                    continue;
                }
            }
            let digest = img.repo_digest.as_ref().map(|d| d.to_string()).unwrap_or_else(|| "<none>".into());
            let mut o = BTreeMap::new();
            let shown = if repo == "<none>" { repo.clone() } else { familiar(&repo).to_string() };
            o.insert("Repository".into(), Value::from(shown));
            o.insert("Tag".into(), Value::from(tag));
            o.insert("Digest".into(), Value::from(digest));
            o.insert("ID".into(), Value::from(id.clone()));
            o.insert("CreatedSince".into(), Value::from(format::ago(img.created.as_deref())));
            o.insert("CreatedAt".into(), Value::from(img.created.clone().unwrap_or_default()));
            o.insert("Size".into(), Value::from(format::size(img.size)));
            o.insert("VirtualSize".into(), Value::from(format::size(img.size)));
            o.insert("SharedSize".into(), Value::from("N/A"));
            o.insert("UniqueSize".into(), Value::from("N/A"));
            o.insert("Containers".into(), Value::from("N/A"));
            rows.push(o);
            if !ids.contains(&id) {
                ids.push(id.clone());
            }
        }
    }
    if a.quiet {
        for id in ids {
            println!("{id}");
        }
        return Ok(0);
    }
    let mut headers = BTreeMap::new();
    for (k, v) in [
        ("Repository", "REPOSITORY"),
        ("Tag", "TAG"),
        ("Digest", "DIGEST"),
        ("ID", "IMAGE ID"),
        ("CreatedSince", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("Size", "SIZE"),
    ] {
        headers.insert(k, v);
    }
    let template = match &a.format {
        Some(f) => f.clone(),
        None if a.digests => "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}".into(),
        None => "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}".into(),
    };
    let t = format::Template::parse(&template)?;
    print!("{}", format::with_template(&t, &headers, &rows)?);
    Ok(0)
}

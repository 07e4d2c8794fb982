//! `history IMAGE`: IMAGE CREATED CREATED BY SIZE COMMENT, newest first.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Cli, Result};
use crate::format;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print sizes and dates in full (bytes, RFC 3339).
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long)]
    pub format: Option<String>,
    pub image: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let store = cli.store()?;
    let img = store.resolve(&a.image)?;
    let (cfg, _) = store.config(&img)?;
    let layers = store.layers(&img)?;
    let history = cfg.history.clone().unwrap_or_default();
    let mut sizes = layers.iter().map(|l| l.size);
    let mut rows: Vec<BTreeMap<String, Value>> = Vec::new();
    for (i, h) in history.iter().enumerate() {
        let size = if h.empty_layer { 0 } else { sizes.next().unwrap_or(0) };
        let id = if i + 1 == history.len() {
            if a.no_trunc {
                img.id.to_string()
            } else {
                img.id.short().to_string()
            }
        } else {
            "<missing>".to_string()
        };
        let mut by = h.created_by.clone().unwrap_or_default().replace(['\t', '\n'], " ");
        if !a.no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        let mut o = BTreeMap::new();
        o.insert("ID".to_string(), Value::from(id));
        o.insert(
            "CreatedSince".to_string(),
            Value::from(if a.human { format::ago(h.created.as_deref()) } else { h.created.clone().unwrap_or_default() }),
        );
        o.insert("CreatedAt".to_string(), Value::from(h.created.clone().unwrap_or_default()));
        o.insert("CreatedBy".to_string(), Value::from(by));
        o.insert("Size".to_string(), Value::from(if a.human { format::size(size) } else { size.to_string() }));
        o.insert("Comment".to_string(), Value::from(h.comment.clone().unwrap_or_default()));
        rows.push(o);
    }
    rows.reverse();
    if a.quiet {
        for r in rows {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    let mut headers = BTreeMap::new();
    for (k, v) in [
        ("ID", "IMAGE"),
        ("CreatedSince", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("CreatedBy", "CREATED BY"),
        ("Size", "SIZE"),
        ("Comment", "COMMENT"),
    ] {
        headers.insert(k, v);
    }
    let t = format::Template::parse(
        a.format.as_deref().unwrap_or("table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"),
    )?;
    print!("{}", format::with_template(&t, &headers, &rows)?);
    Ok(0)
}

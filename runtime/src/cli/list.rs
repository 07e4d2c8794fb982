use std::os::unix::fs::MetadataExt;

use capsa::container::{self, Container};
use capsa::{bail, Result};

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format: table or json.
    #[arg(short = 'f', long, default_value = "table")]
    pub format: String,
    /// Print only the container ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

fn owner(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
        })
        .next()
        .unwrap_or_else(|| format!("#{uid}"))
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    if a.format != "table" && a.format != "json" {
        bail!("invalid format option {:?}: use table or json", a.format);
    }
    let ids = container::list_ids(&cli.root)?;
    let mut rows = Vec::new();
    for id in &ids {
        let Ok(state) = Container::peek(&cli.root, id) else { continue };
        let dir = cli.root.join(id);
        let status = container::status_of(&state, &dir);
        let uid = std::fs::metadata(&dir).map(|m| m.uid()).unwrap_or(0);
        rows.push((state, status, owner(uid)));
    }
    if a.quiet {
        let ids: String = rows.iter().map(|(s, _, _)| format!("{}\n", s.id)).collect();
        super::out(&ids);
        return Ok(0);
    }
    if a.format == "json" {
        let v: Vec<_> = rows.iter().map(|(s, st, o)| s.oci(*st, o.clone())).collect();
        let out =
            if v.is_empty() { "null".to_string() } else { serde_json::to_string(&v).map_err(|e| capsa::Error::new(e.to_string()))? };
        super::out(&format!("{out}\n"));
        return Ok(0);
    }
    // runc uses Go's tabwriter (minwidth 12, padding 3); the last column is not padded.
    let mut table = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from).to_vec()];
    for (s, st, o) in &rows {
        let pid = if *st == container::Status::Stopped { 0 } else { s.pid };
        table.push(vec![s.id.clone(), pid.to_string(), st.to_string(), s.bundle.display().to_string(), s.created.clone(), o.clone()]);
    }
    let cols = 6;
    let widths: Vec<usize> = (0..cols - 1).map(|c| table.iter().map(|r| r[c].len() + 3).max().unwrap_or(0).max(12)).collect();
    let mut out = String::new();
    for r in &table {
        for (c, cell) in r.iter().enumerate() {
            if c < cols - 1 {
                out.push_str(&format!("{cell:<w$}", w = widths[c]));
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    super::out(&out);
    Ok(0)
}

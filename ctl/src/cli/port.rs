//! `port CONTAINER [PRIVATE_PORT[/PROTO]]`: the ports a running container has published, as
//! its start made them (random host ports included; a stopped container has none, as with
//! docker).

use super::{fail, Cli, Result};
use crate::container;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub container: String,
    pub port: Option<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let store = cli.store()?;
    let rec = container::find(&store, &a.container)?;
    let lines = container::network::port_lines(&store, &rec);
    match &a.port {
        None => {
            for (p, host) in &lines {
                println!("{p} -> {host}");
            }
            Ok(0)
        }
        Some(p) => {
            let key = if p.contains('/') { p.clone() } else { format!("{p}/tcp") };
            let found: Vec<&String> = lines.iter().filter(|(k, _)| *k == key).map(|(_, h)| h).collect();
            if found.is_empty() {
                return Err(fail(format!("No public port '{key}' published for {}", rec.short_id())));
            }
            for h in found {
                println!("{h}");
            }
            Ok(0)
        }
    }
}

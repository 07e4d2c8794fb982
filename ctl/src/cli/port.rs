//! `port CONTAINER [PRIVATE_PORT[/PROTO]]`: published ports. capsactl publishes none yet
//! (bridge networks and `-p` come with the network crate), so the list is empty and a
//! asked-for port is reported as not published, as docker reports it.

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
    let bindings = &rec.stored.host.port_bindings;
    match &a.port {
        None => {
            for (p, b) in bindings {
                for hb in b.as_array().into_iter().flatten() {
                    let ip = hb["HostIp"].as_str().filter(|s| !s.is_empty()).unwrap_or("0.0.0.0");
                    println!("{p} -> {ip}:{}", hb["HostPort"].as_str().unwrap_or(""));
                }
            }
            Ok(0)
        }
        Some(p) => {
            let key = if p.contains('/') { p.clone() } else { format!("{p}/tcp") };
            match bindings.get(&key).and_then(|b| b.as_array()).filter(|b| !b.is_empty()) {
                Some(b) => {
                    for hb in b {
                        let ip = hb["HostIp"].as_str().filter(|s| !s.is_empty()).unwrap_or("0.0.0.0");
                        println!("{ip}:{}", hb["HostPort"].as_str().unwrap_or(""));
                    }
                    Ok(0)
                }
                None => Err(fail(format!("No public port '{key}' published for {}", rec.short_id()))),
            }
        }
    }
}

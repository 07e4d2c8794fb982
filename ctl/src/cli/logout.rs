//! `logout [SERVER]`: removes the credentials of a registry from docker's config.json (or
//! its credential helper). SERVER defaults to docker.io.

use capsa_registry::auth::{server_key, DockerConfig};
use capsa_registry::Settings;

use super::{Cli, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The registry (`host[:port]`); default docker.io.
    pub server: Option<String>,
}

pub fn run(_cli: &Cli, a: &Args) -> Result<i32> {
    let domain = super::login::server_domain(a.server.as_deref());
    let key = server_key(&domain);
    let settings = Settings::from_env()?;
    let mut cfg = DockerConfig::load(&settings.docker_config)?;
    if cfg.erase(&key)? {
        println!("Removing login credentials for {key}");
    } else {
        println!("Not logged in to {key}");
    }
    Ok(0)
}

//! A container on a bridge network, end to end: `attach` makes its network namespace, veth
//! pair, address and published ports (undoing all of it if any step fails), `detach` removes
//! them, and `cleanup` also releases its leases — from the container id alone, so it works
//! after a crash at any point of `attach` (every name is derived from the id).
//!
//! The address is leased by the caller first (`ipam::allocate` in its own transaction), so
//! no database transaction stays open across netlink and nft work.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::ipam::Network;
use crate::netns::Ns;
use crate::{bridge, firewall, ipam, netns};

/// What `attach` needs.
pub struct Setup<'a> {
    /// The namespace the bridge and the rules live in (the host's).
    pub host: &'a Ns,
    /// Where namespaces are bind-mounted (`RUN_DIR/netns/ID`) and locks kept.
    pub run_dir: &'a Path,
    pub net: &'a Network,
    pub container: &'a str,
    /// Leased by the caller.
    pub ip: Ipv4Addr,
    pub ports: &'a [firewall::PortMap],
    /// 0: the kernel's default (1500).
    pub mtu: u32,
}

/// What a container was given.
#[derive(Debug)]
pub struct Attached {
    /// For `linux.namespaces[network].path`.
    pub netns: PathBuf,
    pub veth: String,
}

pub fn netns_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("netns")
}

/// A container id names files and nft tags: letters, digits, '_', '-', '.', not starting with
/// '.', at most 128 characters.
fn check_id(id: &str) -> Result<()> {
    let ok =
        !id.is_empty() && id.len() <= 128 && !id.starts_with('.') && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(format!("container id {id:?}: only letters, digits, '_', '-' and '.' (not first), at most 128")))
    }
}

/// Makes everything; on failure removes what it made and returns the first error.
pub fn attach(s: &Setup) -> Result<Attached> {
    check_id(s.container)?;
    let ns_path = netns::create(&netns_dir(s.run_dir), s.container)?;
    let made = (|| {
        let br = bridge::ensure(s.host, s.net, s.mtu)?;
        firewall::add_network(s.host, s.net)?;
        let veth = bridge::attach(s.host, &ns_path, s.net, br, s.container, s.ip, s.mtu)?;
        firewall::publish(s.host, s.run_dir, s.container, s.ip, s.ports)?;
        Ok(veth)
    })();
    match made {
        Ok(veth) => Ok(Attached { netns: ns_path, veth }),
        Err(e) => {
            let _ = detach(s.host, s.run_dir, s.container);
            Err(e)
        }
    }
}

/// Removes a container's rules, veth pair and namespace; what is already gone is fine. Every
/// step is tried; the first error is returned.
pub fn detach(host: &Ns, run_dir: &Path, container: &str) -> Result<()> {
    check_id(container)?;
    let r1 = firewall::unpublish(host, container);
    let r2 = bridge::detach(host, container);
    let r3 = netns::remove(&netns_dir(run_dir).join(container));
    r1.and(r2).and(r3)
}

/// `detach` and release the container's leases (in the caller's connection).
pub fn cleanup(host: &Ns, run_dir: &Path, conn: &Connection, container: &str) -> Result<()> {
    let r = detach(host, run_dir, container);
    ipam::release(conn, container)?;
    r
}

//! A container on a bridge network, end to end: `attach` makes its network namespace, veth
//! pair, address and published ports (undoing all of it if any step fails), `detach` removes
//! them, and `cleanup` also releases its leases — from the container id alone, so it works
//! after a crash at any point of `attach` (every name is derived from the id).
//!
//! The address is leased by the caller first (`ipam::allocate` in its own transaction), so
//! no database transaction stays open across netlink and nft work.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::ipam::Network;
use crate::netns::Ns;
use crate::{bridge, firewall, ipam, netns};

/// docker's `--network` modes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// On the named bridge network (`bridge`, docker's default, or a user network).
    Bridge(String),
    /// The host's namespace: no namespace of its own (the runtime spec has none).
    Host,
    /// A namespace of its own with only `lo`, up ([`attach_none`]).
    None,
    /// Another container's namespace ([`joined`]).
    Container(String),
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        Ok(match s {
            "host" => Mode::Host,
            "none" => Mode::None,
            "" => return Err(Error::new("network mode \"\": expected bridge, host, none, container:ID or a network name")),
            _ => match s.strip_prefix("container:") {
                Some(id) => {
                    check_id(id).map_err(|e| e.context(format!("network mode {s:?}")))?;
                    Mode::Container(id.to_string())
                }
                None => Mode::Bridge(s.to_string()),
            },
        })
    }
}

/// `--network none`: a namespace of its own with `lo` up and nothing else; removed by
/// [`detach`] like any other.
pub fn attach_none(run_dir: &Path, container: &str) -> Result<PathBuf> {
    check_id(container)?;
    let path = netns::create(&netns_dir(run_dir), container)?;
    let up = Ns::Path(path.clone()).run(|| {
        let mut rt = crate::rtnl::Rtnl::open()?;
        let lo = rt.link("lo")?.ok_or_else(|| Error::new("no lo in a new network namespace"))?;
        rt.set_up(lo.index)
    });
    if let Err(e) = up {
        let _ = netns::remove(&path);
        return Err(e);
    }
    Ok(path)
}

/// `--network container:OTHER`: the namespace OTHER was given (it must have one of ours).
pub fn joined(run_dir: &Path, other: &str) -> Result<PathBuf> {
    check_id(other)?;
    let path = netns_dir(run_dir).join(other);
    if !netns::is_mount_point(&path).unwrap_or(false) {
        return Err(Error::new(format!("network mode container:{other}: that container has no network namespace of capsa's")));
    }
    Ok(path)
}

/// What `attach` needs.
pub struct Setup<'a> {
    /// The namespace the bridge and the rules live in (the host's).
    pub host: &'a Ns,
    /// Where namespaces are bind-mounted (`RUN_DIR/netns/ID`) and locks kept.
    pub run_dir: &'a Path,
    pub net: &'a Network,
    pub container: &'a str,
    /// Leased by the caller (`ip6` on a network with IPv6, from the same lease).
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
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
        firewall::add_network(s.host, s.run_dir, s.net)?;
        let veth = bridge::veth_name(s.container);
        bridge::attach(s.host, &ns_path, s.net, br, &veth, "eth0", s.ip, s.ip6, s.mtu, true)?;
        firewall::publish(s.host, s.run_dir, s.container, s.ip, s.ip6, s.ports)?;
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

/// Puts a container whose namespace exists already (made by [`attach`] or [`attach_none`])
/// on one more network (docker's `network connect`): a veth pair of its own
/// ([`bridge::veth_name_on`]) whose inside end is the first free `ethN`, no default route
/// and no published ports. On failure removes what it made. Returns (veth, interface).
pub fn attach_extra(
    host: &Ns,
    run_dir: &Path,
    net: &Network,
    container: &str,
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    mtu: u32,
) -> Result<(String, String)> {
    check_id(container)?;
    let ns_path = netns_dir(run_dir).join(container);
    if !netns::is_mount_point(&ns_path).unwrap_or(false) {
        return Err(Error::new(format!("container {container}: has no network namespace of capsa's to connect")));
    }
    let ns = Ns::Path(ns_path.clone());
    let ifname = ns.run(|| {
        let names: Vec<String> = crate::rtnl::Rtnl::open()?.links()?.into_iter().map(|l| l.name).collect();
        Ok((0..).map(|i| format!("eth{i}")).find(|n| !names.contains(n)).unwrap_or_default())
    })?;
    let veth = bridge::veth_name_on(container, &net.name);
    let made = (|| {
        let br = bridge::ensure(host, net, mtu)?;
        firewall::add_network(host, run_dir, net)?;
        bridge::attach(host, &ns_path, net, br, &veth, &ifname, ip, ip6, mtu, false)
    })();
    match made {
        Ok(()) => Ok((veth, ifname)),
        Err(e) => {
            let _ = bridge::del_link(host, &veth);
            Err(e)
        }
    }
}

/// Takes a container off a network: one it was connected to by [`attach_extra`], or with
/// `first` the one [`attach`] put it on (its published ports go too); its namespace stays.
pub fn detach_network(host: &Ns, container: &str, network: &str, first: bool) -> Result<()> {
    check_id(container)?;
    if first {
        let r = firewall::unpublish(host, container);
        return r.and(bridge::detach(host, container));
    }
    bridge::del_link(host, &bridge::veth_name_on(container, network))
}

/// Removes a container's rules, veth pair and namespace; what is already gone is fine. Every
/// step is tried; the first error is returned.
///
/// The veth pair is not deleted here when the container's namespace is still ours (mounted):
/// deleting a link (RTM_DELLINK) waits for the kernel's RCU work, 15-25 ms here, most of the
/// network's share of a `run --rm`. Its inside end lives in that namespace, so the kernel
/// deletes the pair with the namespace once the last reference goes (our bind mount, unmounted
/// here; the container's processes are gone by then), asynchronously, a few ms later. Its host
/// end is first set down (0.1 ms): a namespace kept alive by someone else (a copy of our
/// mount made by another tool's mount namespace, a `--network container:` process still
/// running) keeps the pair, but a port that is down forwards nothing and the bridge forgets
/// its MAC addresses, so an address released here and given again is never live twice. A
/// pair still there when its container starts again is deleted then ([`bridge::attach`]).
/// Without our namespace (a crash before it was mounted) the pair is deleted as before.
pub fn detach(host: &Ns, run_dir: &Path, container: &str) -> Result<()> {
    check_id(container)?;
    let ns_path = netns_dir(run_dir).join(container);
    let ours = netns::is_ns_file(&ns_path);
    let veth = bridge::veth_name(container);
    // The rules on a thread of their own, while the links are dealt with.
    let (r1, r2) = std::thread::scope(|s| {
        let rules = s.spawn(|| firewall::unpublish(host, container));
        let r2 = if ours { bridge::set_down(host, &veth) } else { bridge::del_link(host, &veth) };
        (rules.join().unwrap_or_else(|_| Err(Error::new("removing published ports panicked"))), r2)
    });
    let r3 = netns::remove(&ns_path);
    r1.and(r2).and(r3)
}

/// `detach` (with the veth pairs of every network it leases an address on) and release the
/// container's leases (in the caller's connection).
pub fn cleanup(host: &Ns, run_dir: &Path, conn: &Connection, container: &str) -> Result<()> {
    let networks: Vec<String> = ipam::leases_of(conn, container)?.into_iter().map(|(n, _)| n).collect();
    let r = detach_all(host, run_dir, container, &networks);
    ipam::release(conn, container)?;
    r
}

/// [`detach`] and the veth pairs of `networks` besides the first (no database: a caller
/// may run this on a thread of its own, then release the leases).
pub fn detach_all(host: &Ns, run_dir: &Path, container: &str, networks: &[String]) -> Result<()> {
    check_id(container)?;
    // Pairs of `network connect` live in the same namespace: they go with it as the first.
    let ours = netns::is_ns_file(&netns_dir(run_dir).join(container));
    let mut r = Ok(());
    for network in networks {
        let veth = bridge::veth_name_on(container, network);
        r = r.and(if ours { bridge::set_down(host, &veth) } else { bridge::del_link(host, &veth) });
    }
    r.and(detach(host, run_dir, container))
}

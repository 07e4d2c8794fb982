//! A container's network, over the capsa-network library: what `run`/`create` take (`--network`,
//! `-p`, `-P`, `--dns`, `--add-host`), what a start makes (`attach`: namespace, veth, address,
//! published ports, before the runtime creates the container, which joins the namespace through
//! `linux.namespaces[network].path`) and what going down removes (`detach`: from every path a
//! container goes down by — its exit, `rm`, a failed start, reconciliation after a `kill -9` —
//! so nothing is left: veth, namespace, rules, lease). As docker, a container holds its address
//! and ports while it runs; a stopped one holds none.
//!
//! ```text
//! <store>/network/netns/<id>       the container's network namespace (a bind mount)
//! <store>/network/firewall.lock    serialises port checks and rule adds
//! <store>/network/hosts.lock       serialises /etc/hosts rewrites
//! containers/<id>/network.json     what attach made (addresses, host ports): inspect, port
//! containers/<id>/hosts, hostname, resolv.conf   bind-mounted on /etc/...
//! ```
//!
//! Names on user networks: /etc/hosts kept current, not a DNS responder. capsactl has no
//! daemon, so a responder would be one more long-lived process per network (or per
//! container) to start, watch and clean up after a crash; the hosts files need none: every
//! change of a network's members (a start, a stop, `network connect`/`disconnect`) rewrites
//! the hosts file of each running member from the leases in the database, under one lock.
//! A bind-mounted file cannot be replaced by a rename (the container keeps the old inode),
//! so it is rewritten in place: the new text over the old, then truncated to its length.
//! What this does not give: names that change while a program caches /etc/hosts, and
//! answers for names of stopped containers (docker's DNS gives none either).
//!
//! The default network is `bridge` on the bridge `capsa0` (docker's `docker0`), its subnet
//! the first of 10.87.0.0/16, 10.86.0.0/16, ... that overlaps no route of the host and no
//! other network; user networks get 10.90.N.0/24. (podman uses 10.88.0.0/16 and
//! 10.89.N.0/24, docker 172.17.0.0/16 and up: neither is taken.) `CAPSACTL_DEFAULT_NETWORK`
//! (as dockerd's `--bridge none`) names another default, e.g. `none`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::{Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use capsa_image::Store;
use capsa_network::container as netctr;
use capsa_network::firewall::{PortMap, Proto};
use capsa_network::ipam::{self, Network, NewNetwork, Subnet, Subnet6};
use capsa_network::netns::Ns;

use super::Record;
use crate::cli::create::Opts;
use crate::cli::{fail, Failure, Result};

/// The default network's name and bridge (docker's `bridge` on `docker0`).
pub const DEFAULT_NETWORK: &str = "bridge";
pub const DEFAULT_BRIDGE: &str = "capsa0";

fn bad(msg: impl Into<String>) -> Failure {
    Failure { msg: msg.into(), code: 125 }
}

fn nerr(e: capsa_network::Error) -> Failure {
    fail(e.to_string())
}

/// Where namespaces are bind-mounted and the network locks kept.
pub fn run_dir(store: &Store) -> PathBuf {
    store.root.join("network")
}

/// The network a container gets without `--network`.
pub fn default_mode() -> String {
    std::env::var("CAPSACTL_DEFAULT_NETWORK").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_NETWORK.to_string())
}

/// Modes that are not networks of the database.
pub fn is_special(mode: &str) -> bool {
    mode == "host" || mode == "none" || mode.starts_with("container:")
}

/// What `create` takes from the network options.
pub struct NetOpts {
    /// host, none, container:ID, or a network's name.
    pub mode: String,
    /// docker's HostConfig.PortBindings: "80/tcp" → [{"HostIp": "", "HostPort": "8080"}].
    pub bindings: BTreeMap<String, Value>,
    /// The image's exposed ports and the published ones.
    pub exposed: BTreeMap<String, Value>,
    pub dns: Vec<String>,
    pub extra_hosts: Vec<String>,
}

/// A published port as given: `[IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]` (HOSTPORT empty or
/// missing: a random one at start; a range `LO-HI` with one container port: the first free
/// one of the range at start, as docker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub host_ip: Option<Ipv4Addr>,
    /// The host ports it may take (`(n, n)`: exactly n).
    pub host_ports: Option<(u16, u16)>,
    pub container_port: u16,
    pub proto: Proto,
}

fn proto_str(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

/// `-p` as docker takes it, ranges expanded: `8000-8002:80-82` is three ports, `80-82` three
/// with random host ports, `8000-8010:80` one port with a host port from the range.
pub fn parse_publish(s: &str) -> std::result::Result<Vec<Publish>, String> {
    let bad = |why: &str| format!("-p {s}: {why}");
    let (rest, proto) = match s.rsplit_once('/') {
        Some((r, "tcp")) => (r, Proto::Tcp),
        Some((r, "udp")) => (r, Proto::Udp),
        Some((_, p)) => return Err(bad(&format!("protocol {p:?}: expected tcp or udp (sctp is not implemented yet)"))),
        None => (s, Proto::Tcp),
    };
    let port = |p: &str, what: &str| -> std::result::Result<u16, String> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad(&format!("invalid {what} port {p:?}: expected 1-65535"))),
        }
    };
    let range = |p: &str, what: &str| -> std::result::Result<(u16, u16), String> {
        match p.split_once('-') {
            None => port(p, what).map(|n| (n, n)),
            Some((a, b)) => {
                let (a, b) = (port(a, what)?, port(b, what)?);
                if a > b {
                    return Err(bad(&format!("invalid {what} port range {p:?}: its end is below its start")));
                }
                Ok((a, b))
            }
        }
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, hp, cp) = match parts.as_slice() {
        [c] => (None, "", *c),
        [h, c] => (None, *h, *c),
        [ip, h, c] => (Some(*ip), *h, *c),
        _ => return Err(bad("expected [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp] (IPv6 host addresses are not implemented yet)")),
    };
    let host_ip = match ip {
        None | Some("") | Some("0.0.0.0") => None,
        Some(a) => Some(a.parse::<Ipv4Addr>().map_err(|_| bad(&format!("host address {a:?}: not an IPv4 address")))?),
    };
    let host = if hp.is_empty() { None } else { Some(range(hp, "host")?) };
    let (c0, c1) = range(cp, "container")?;
    let one = |host_ports, container_port| Publish { host_ip, host_ports, container_port, proto };
    match host {
        // One container port: any host port of the range.
        _ if c0 == c1 => Ok(vec![one(host, c0)]),
        None => Ok((c0..=c1).map(|c| one(None, c)).collect()),
        Some((h0, h1)) if h1 - h0 == c1 - c0 => Ok((c0..=c1).map(|c| one(Some((h0 + (c - c0), h0 + (c - c0))), c)).collect()),
        Some(_) => Err(bad(&format!("invalid ranges specified for container and host ports: {cp} and {hp} (want ranges of one length)"))),
    }
}

/// `run`/`create`'s network options, checked (exit code 125 for bad ones, as docker).
pub fn options(store: &Store, o: &Opts, image_exposed: &BTreeMap<String, Value>, warnings: &mut Vec<String>) -> Result<NetOpts> {
    let mode = match o.network.as_deref() {
        None | Some("default") | Some("") => default_mode(),
        Some(m) => m.to_string(),
    };
    let mode = if let Some(other) = mode.strip_prefix("container:") {
        let r = super::find(store, other).map_err(|e| bad(format!("--network {mode}: {}", e.msg)))?;
        format!("container:{}", r.id)
    } else if is_special(&mode) || mode == DEFAULT_NETWORK {
        mode
    } else {
        match ipam::network(store.db.conn(), &mode).map_err(nerr)? {
            Some(n) => n.name,
            None => {
                let by_id = ipam::networks(store.db.conn()).map_err(nerr)?.into_iter().find(|n| n.id.starts_with(&mode) && mode.len() >= 3);
                by_id.map(|n| n.name).ok_or_else(|| bad(format!("network {mode} not found")))?
            }
        }
    };
    if mode.starts_with("container:") && o.hostname.is_some() {
        return Err(bad("conflicting options: hostname and the network mode (--network container:...)"));
    }
    if mode.starts_with("container:") && (!o.publish.is_empty() || o.publish_all) {
        return Err(bad("conflicting options: port publishing and the container type network mode"));
    }
    let mut bindings: BTreeMap<String, Value> = BTreeMap::new();
    let mut exposed = image_exposed.clone();
    for p in o.publish.iter().map(|p| parse_publish(p).map_err(bad)).collect::<Result<Vec<_>>>()?.into_iter().flatten() {
        let key = format!("{}/{}", p.container_port, proto_str(p.proto));
        let host_port = match p.host_ports {
            None => String::new(),
            Some((a, b)) if a == b => a.to_string(),
            Some((a, b)) => format!("{a}-{b}"),
        };
        let b = json!({"HostIp": p.host_ip.map(|i| i.to_string()).unwrap_or_default(), "HostPort": host_port});
        match bindings.get_mut(&key).and_then(Value::as_array_mut) {
            Some(v) => v.push(b),
            None => {
                bindings.insert(key.clone(), json!([b]));
            }
        }
        exposed.entry(key).or_insert(json!({}));
    }
    if (mode == "host" || mode == "none") && (!bindings.is_empty() || o.publish_all) {
        warnings.push(format!("Published ports are discarded when using {mode} network mode"));
        bindings.clear();
    }
    let mut dns = Vec::new();
    for d in &o.dns {
        let ip: std::net::IpAddr = d.parse().map_err(|_| bad(format!("--dns {d:?}: not an IP address")))?;
        dns.push(ip.to_string());
    }
    let mut extra_hosts = Vec::new();
    for h in &o.add_host {
        let (name, ip) = h.split_once(['=', ':']).ok_or_else(|| bad(format!("--add-host {h:?}: expected HOST:IP")))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
            return Err(bad(format!("--add-host {h:?}: invalid host name {name:?}")));
        }
        let ip = if ip == "host-gateway" {
            return Err(bad(format!("--add-host {h:?}: host-gateway is not implemented yet")));
        } else {
            ip.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .map_err(|_| bad(format!("--add-host {h:?}: invalid IP address {ip:?}")))?
        };
        extra_hosts.push(format!("{name}:{ip}"));
    }
    Ok(NetOpts { mode, bindings, exposed, dns, extra_hosts })
}

/// What a start made, kept in the container's directory for `inspect` and `port` (removed by
/// `detach`).
#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct Attached {
    /// The namespace's bind mount (docker's SandboxKey).
    pub sandbox: String,
    pub networks: Vec<Endpoint>,
    pub ports: Vec<Port>,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct Endpoint {
    pub network: String,
    pub network_id: String,
    pub ip: String,
    pub prefix: u8,
    pub gateway: String,
    pub mac: String,
    pub veth: String,
    /// On a network with IPv6 (`network create --ipv6`): address, prefix length, gateway.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip6: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix6: u8,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway6: String,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub proto: String,
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

fn state_path(store: &Store, id: &str) -> PathBuf {
    super::dir(store, id).join("network.json")
}

/// What `attach` made for a running container (None: nothing, or it is down).
pub fn attached(store: &Store, id: &str) -> Option<Attached> {
    serde_json::from_slice(&std::fs::read(state_path(store, id)).ok()?).ok()
}

/// The networks a container is on: its mode's (unless special) and those connected since.
pub fn networks_of(rec: &Record) -> Vec<String> {
    let mode = &rec.stored.host.network_mode;
    let mut v = Vec::new();
    if !is_special(mode) && !mode.is_empty() {
        v.push(mode.clone());
    }
    for n in &rec.stored.networks {
        if !v.contains(n) {
            v.push(n.clone());
        }
    }
    v
}

/// The namespace a container's spec names (None: the host's).
pub fn ns_path(store: &Store, rec: &Record) -> Option<PathBuf> {
    let mode = &rec.stored.host.network_mode;
    if mode == "host" {
        return None;
    }
    let owner = mode.strip_prefix("container:").unwrap_or(&rec.id);
    Some(netctr::netns_dir(&run_dir(store)).join(owner))
}

/// The default network (its row made on first use; its bridge by the first container's start).
pub fn default_network(store: &Store) -> Result<Network> {
    network(store, DEFAULT_NETWORK)
}

/// The network `name`, made first if it is the default one and missing.
fn network(store: &Store, name: &str) -> Result<Network> {
    if let Some(n) = ipam::network(store.db.conn(), name).map_err(nerr)? {
        return Ok(n);
    }
    if name != DEFAULT_NETWORK {
        return Err(fail(format!("network {name} not found")));
    }
    let tx = Transaction::new_unchecked(store.db.conn(), TransactionBehavior::Immediate)?;
    if let Some(n) = ipam::network(&tx, name).map_err(nerr)? {
        return Ok(n);
    }
    let candidates: Vec<Subnet> = (0..16u8).map(|i| Subnet { addr: Ipv4Addr::new(10, 87 - i, 0, 0), prefix: 16 }).collect();
    let subnet = free_subnet(&tx, &candidates)?;
    let n = ipam::create_network(
        &tx,
        &NewNetwork { name, bridge: DEFAULT_BRIDGE, subnet: Some(subnet), created: &super::now(), ..Default::default() },
    )
    .map_err(nerr)?;
    tx.commit()?;
    Ok(n)
}

/// The first of `candidates` that overlaps no route of this namespace and no network.
pub fn free_subnet(conn: &rusqlite::Connection, candidates: &[Subnet]) -> Result<Subnet> {
    let routes = host_routes()?;
    let nets = ipam::networks(conn).map_err(nerr)?;
    candidates
        .iter()
        .copied()
        .find(|c| !routes.iter().any(|r| r.overlaps(*c)) && !nets.iter().any(|n| n.subnet.overlaps(*c)))
        .ok_or_else(|| fail("no free subnet left for a network: every candidate overlaps a route or a network (give --subnet)"))
}

/// A /64 for a network created with `--ipv6` and no IPv6 `--subnet`, as docker 27's default
/// IPv6 pool: a unique local /48 (fdXX:XXXX:XXXX::/48, RFC 4193) whose 40-bit global id is
/// derived from this machine's id (/etc/machine-id; the store's path without one), so every
/// network of one host shares it; the first of its /64s that overlaps no IPv6 route of this
/// namespace and no network's IPv6 subnet.
pub fn free_subnet6(conn: &rusqlite::Connection) -> Result<Subnet6> {
    let seed = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let d = capsa_image::Digest::of(format!("capsactl ipv6 pool {}", seed.trim()).as_bytes()).to_string();
    let hex = d.strip_prefix("sha256:").unwrap_or(&d);
    let g = |i: usize| u16::from_str_radix(hex.get(i..i + 4).unwrap_or("0"), 16).unwrap_or(0);
    let (g0, g1, g2) = (0xfd00 | (g(0) & 0xff), g(4), g(8));
    let routes = host_routes6()?;
    let nets = ipam::networks(conn).map_err(nerr)?;
    (0..=u16::MAX)
        .map(|i| Subnet6 { addr: Ipv6Addr::new(g0, g1, g2, i, 0, 0, 0, 0), prefix: 64 })
        .find(|c| !routes.iter().any(|r| r.overlaps(*c)) && !nets.iter().any(|n| n.v6.is_some_and(|(s, _)| s.overlaps(*c))))
        .ok_or_else(|| fail("no free IPv6 subnet left in the default pool (give --subnet)"))
}

/// The IPv6 routes of this namespace's main table a network must not overlap.
pub fn host_routes6() -> Result<Vec<Subnet6>> {
    let mut rt = capsa_network::rtnl::Rtnl::open().map_err(nerr)?;
    capsa_network::bridge::host_routes6(&mut rt).map_err(nerr)
}

/// The routes of this namespace's main table (the default route left out).
pub fn host_routes() -> Result<Vec<Subnet>> {
    let mut rt = capsa_network::rtnl::Rtnl::open().map_err(nerr)?;
    Ok(rt.routes_v4().map_err(nerr)?.into_iter().filter(|(_, len, _)| *len > 0).map(|(addr, prefix, _)| Subnet { addr, prefix }).collect())
}

/// Leases an address (and on a network with IPv6 an IPv6 one) on `net` in a transaction of
/// its own (the writer lock taken up front).
fn lease(store: &Store, net: &str, id: &str) -> Result<(Ipv4Addr, Option<Ipv6Addr>)> {
    let tx = Transaction::new_unchecked(store.db.conn(), TransactionBehavior::Immediate)?;
    let ip = ipam::allocate(&tx, net, id).map_err(nerr)?;
    let ip6 = ipam::lease6(&tx, net, id).map_err(nerr)?;
    tx.commit()?;
    Ok((ip, ip6))
}

/// Whether anything of a container's network may exist (a lease, its namespace, its state
/// file): `detach` does nothing otherwise.
fn has_any(store: &Store, id: &str) -> bool {
    state_path(store, id).exists()
        || netctr::netns_dir(&run_dir(store)).join(id).exists()
        || ipam::leases_of(store.db.conn(), id).map(|l| !l.is_empty()).unwrap_or(true)
}

/// Makes a container's network before the runtime creates it. On failure nothing is left.
pub fn attach(store: &Store, rec: &Record) -> Result<()> {
    // Leftovers of a start killed half-way.
    if has_any(store, &rec.id) {
        detach(store, rec)?;
    }
    let r = try_attach(store, rec);
    if r.is_err() {
        let _ = detach(store, rec);
    }
    r
}

fn try_attach(store: &Store, rec: &Record) -> Result<()> {
    let mode = rec.stored.host.network_mode.as_str();
    let rd = run_dir(store);
    let host = Ns::Current;
    let mut att = Attached::default();
    if mode == "host" {
        return Ok(());
    }
    if let Some(other) = mode.strip_prefix("container:") {
        netctr::joined(&rd, other).map_err(|e| fail(format!("cannot join the network of container {other}: {e} (is it running?)")))?;
        return Ok(());
    }
    let nets = networks_of(rec);
    let mut first = true;
    for name in &nets {
        let net = network(store, name)?;
        let (ip, ip6) = lease(store, name, &rec.id)?;
        let ep = if first {
            let ports = if rec.stored.host.network_mode == *name { ports_of(rec)? } else { Vec::new() };
            let (a, ports) = attach_first(store, rec, &net, ip, ip6, &ports)?;
            att.sandbox = a.netns.display().to_string();
            att.ports = ports;
            Endpoint { veth: a.veth, ..endpoint(&net, ip, ip6) }
        } else {
            let (veth, _) = netctr::attach_extra(&host, &rd, &net, &rec.id, ip, ip6, 0).map_err(nerr)?;
            Endpoint { veth, ..endpoint(&net, ip, ip6) }
        };
        att.networks.push(ep);
        first = false;
    }
    if first {
        // `none`, or every network disconnected: lo only.
        let p = netctr::attach_none(&rd, &rec.id).map_err(nerr)?;
        att.sandbox = p.display().to_string();
    }
    write_state(store, &rec.id, &att)?;
    refresh_hosts(store, &nets, Some(&rec.id))
}

fn endpoint(net: &Network, ip: Ipv4Addr, ip6: Option<Ipv6Addr>) -> Endpoint {
    let mac = capsa_network::bridge::mac_of(ip).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    Endpoint {
        network: net.name.clone(),
        network_id: net.id.clone(),
        ip: ip.to_string(),
        prefix: net.subnet.prefix,
        gateway: net.gateway.to_string(),
        mac,
        veth: String::new(),
        ip6: ip6.map(|a| a.to_string()).unwrap_or_default(),
        prefix6: net.v6.filter(|_| ip6.is_some()).map(|(s, _)| s.prefix).unwrap_or(0),
        gateway6: net.v6.filter(|_| ip6.is_some()).map(|(_, g)| g.to_string()).unwrap_or_default(),
    }
}

fn write_state(store: &Store, id: &str, att: &Attached) -> Result<()> {
    let p = state_path(store, id);
    let tmp = p.with_extension("json.tmp");
    let text = serde_json::to_vec(att).map_err(|e| fail(format!("encode {}: {e}", p.display())))?;
    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &p)).map_err(|e| fail(format!("write {}: {e}", p.display())))
}

/// The first network with the published ports; random host ports are chosen here (and
/// chosen again if another container took one meanwhile).
fn attach_first(
    store: &Store,
    rec: &Record,
    net: &Network,
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    want: &[Publish],
) -> Result<(netctr::Attached, Vec<Port>)> {
    let rd = run_dir(store);
    for attempt in 0.. {
        let mut maps = Vec::new();
        // Fixed host ports first, as docker sorts them: a range or a random port never takes
        // one that another binding of the container names.
        let mut taken: Vec<(Proto, u16)> = want
            .iter()
            .filter_map(|p| match p.host_ports {
                Some((n, m)) if n == m => Some((p.proto, n)),
                _ => None,
            })
            .collect();
        for p in want {
            let host_port = match p.host_ports {
                Some((n, m)) if n == m => {
                    check_free(p.host_ip, n, p.proto)?;
                    n
                }
                Some((lo, hi)) => free_in(p, lo, hi, &taken)?,
                None => random_port(p.proto, &taken)?,
            };
            if !taken.contains(&(p.proto, host_port)) {
                taken.push((p.proto, host_port));
            }
            maps.push(PortMap { host_ip: p.host_ip, host_port, container_port: p.container_port, proto: p.proto });
        }
        let setup = netctr::Setup { host: &Ns::Current, run_dir: &rd, net, container: &rec.id, ip, ip6, ports: &maps, mtu: 0 };
        match netctr::attach(&setup) {
            Ok(a) => {
                let ports = maps
                    .iter()
                    .map(|m| Port {
                        proto: proto_str(m.proto).into(),
                        host_ip: m.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                        host_port: m.host_port,
                        container_port: m.container_port,
                    })
                    .collect();
                return Ok((a, ports));
            }
            // A random port published by another container between our check and our add.
            Err(e)
                if attempt < 5
                    && e.to_string().contains("already published")
                    && want.iter().any(|p| p.host_ports.is_none_or(|(a, b)| a != b)) =>
            {
                continue
            }
            Err(e) => {
                let msg = e.to_string();
                return Err(fail(if msg.contains("already published") {
                    format!("driver failed programming external connectivity on endpoint {}: {msg}", rec.name)
                } else {
                    msg
                }));
            }
        }
    }
    Err(fail("no free host port found"))
}

/// The ports to publish at a start: `-p`'s, and with `-P` every exposed port not given.
fn ports_of(rec: &Record) -> Result<Vec<Publish>> {
    let h = &rec.stored.host;
    let mut out = Vec::new();
    for (key, list) in &h.port_bindings {
        for b in list.as_array().into_iter().flatten() {
            let ip = b["HostIp"].as_str().unwrap_or("");
            let hp = b["HostPort"].as_str().unwrap_or("");
            let spec = format!("{ip}:{hp}:{key}");
            out.extend(parse_publish(&spec).map_err(fail)?);
        }
    }
    if h.publish_all_ports {
        for key in rec.stored.config.exposed_ports.keys() {
            if h.port_bindings.contains_key(key) {
                continue;
            }
            // An exposed port the image names oddly (a range) is skipped, as docker warns.
            if let Ok(p) = parse_publish(key).map(|p| p.into_iter().take(2).collect::<Vec<_>>()) {
                if p.len() == 1 {
                    out.extend(p);
                }
            }
        }
    }
    Ok(out)
}

/// A fixed host port must not be in use by a process here (docker's proxy would fail to bind
/// it; with DNAT alone a listener there would silently lose its connections from outside).
fn check_free(ip: Option<Ipv4Addr>, port: u16, proto: Proto) -> Result<()> {
    let addr = (ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    let r = match proto {
        Proto::Tcp => std::net::TcpListener::bind(addr).map(drop),
        Proto::Udp => std::net::UdpSocket::bind(addr).map(drop),
    };
    r.map_err(|e| fail(format!("Bind for {}:{port} failed: port is already allocated ({e})", ip.unwrap_or(Ipv4Addr::UNSPECIFIED))))
}

/// The first port of `lo..=hi` free for `p` (docker's choice for a host port range).
fn free_in(p: &Publish, lo: u16, hi: u16, taken: &[(Proto, u16)]) -> Result<u16> {
    let published = published_keys();
    for port in lo..=hi {
        let key_end = format!(":{port}");
        if taken.contains(&(p.proto, port)) || published.iter().any(|k| k.starts_with(proto_str(p.proto)) && k.ends_with(&key_end)) {
            continue;
        }
        if check_free(p.host_ip, port, p.proto).is_ok() {
            return Ok(port);
        }
    }
    Err(fail(format!(
        "Bind for {}:{lo}-{hi} failed: every port of the range is already allocated",
        p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)
    )))
}

/// The published ports' rule keys (`tcp 0.0.0.0:8080`-like, see capsa-network's firewall).
fn published_keys() -> Vec<String> {
    Ns::Current
        .run(|| capsa_network::nftnl::list_rules("capsa"))
        .map(|rules| rules.into_iter().filter_map(|r| r.comment.split_once(' ').map(|(_, k)| k.to_string())).collect())
        .unwrap_or_default()
}

/// A random free port from the kernel's ephemeral range (docker's choice too): not
/// published by any container (checked again under the firewall lock by `publish`) and not
/// bound by a process.
fn random_port(proto: Proto, taken: &[(Proto, u16)]) -> Result<u16> {
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().filter_map(|x| x.parse::<u16>().ok());
            Some((it.next()?, it.next()?))
        })
        .filter(|(lo, hi)| lo <= hi)
        .unwrap_or((32768, 60999));
    let published = published_keys();
    let span = u32::from(hi - lo) + 1;
    let start = {
        let mut b = [0u8; 4];
        // SAFETY: getrandom writes at most 4 bytes into b.
        unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
        u32::from_ne_bytes(b) % span
    };
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        let key_end = format!(":{port}");
        if taken.contains(&(proto, port)) || published.iter().any(|k| k.starts_with(proto_str(proto)) && k.ends_with(&key_end)) {
            continue;
        }
        if check_free(None, port, proto).is_ok() {
            return Ok(port);
        }
    }
    Err(fail(format!("no free {} port left in {lo}-{hi}", proto_str(proto))))
}

/// Removes everything of a container's network (rules, veth pairs, namespace, leases, state
/// file) and updates the hosts files of the networks' other members. What is gone is fine.
pub fn detach(store: &Store, rec: &Record) -> Result<()> {
    detach_begin(store, rec).finish(store)
}

/// A teardown under way: its netlink part (rules, veth pairs set down, namespace unmounted;
/// the kernel deletes the pairs with the namespace, see capsa-network's container::detach)
/// runs on a thread while the caller does other work; [`Detaching::finish`] waits for it,
/// then releases the leases (after the links are down, so an address is never given again
/// while its old link carries traffic) and updates hosts files.
pub struct Detaching {
    id: String,
    nets: Vec<String>,
    work: Option<std::thread::JoinHandle<std::result::Result<(), capsa_network::Error>>>,
}

pub fn detach_begin(store: &Store, rec: &Record) -> Detaching {
    let mut d = Detaching { id: rec.id.clone(), nets: Vec::new(), work: None };
    if !has_any(store, &rec.id) {
        return d;
    }
    d.nets = ipam::leases_of(store.db.conn(), &rec.id).map(|l| l.into_iter().map(|(n, _)| n).collect()).unwrap_or_default();
    let (rd, id, nets) = (run_dir(store), rec.id.clone(), d.nets.clone());
    d.work = Some(std::thread::spawn(move || netctr::detach_all(&Ns::Current, &rd, &id, &nets)));
    d
}

impl Detaching {
    pub fn finish(self, store: &Store) -> Result<()> {
        let Some(work) = self.work else { return Ok(()) };
        let r = match work.join() {
            Ok(r) => r.map_err(nerr),
            Err(_) => Err(fail(format!("container {}: network teardown panicked", self.id))),
        };
        // Released whatever the links' fate (as capsa-network's cleanup does): a lease kept
        // after a failure would outlive the container's row, its address never given again.
        let released = ipam::release(store.db.conn(), &self.id).map_err(nerr);
        let _ = std::fs::remove_file(state_path(store, &self.id));
        let _ = refresh_hosts(store, &self.nets, None);
        r.and(released.map(drop))
    }
}

/// `network connect`: on the network from the next start, and now if it runs.
pub fn connect(store: &Store, rec: &Record, net: &Network, running: bool) -> Result<()> {
    if !running {
        return Ok(());
    }
    let (ip, ip6) = lease(store, &net.name, &rec.id)?;
    match netctr::attach_extra(&Ns::Current, &run_dir(store), net, &rec.id, ip, ip6, 0) {
        Ok((veth, _)) => {
            let mut att = attached(store, &rec.id).unwrap_or_default();
            att.networks.push(Endpoint { veth, ..endpoint(net, ip, ip6) });
            write_state(store, &rec.id, &att)?;
            refresh_hosts(store, std::slice::from_ref(&net.name), Some(&rec.id))
        }
        Err(e) => {
            let _ = netctr::detach_network(&Ns::Current, &rec.id, &net.name, false);
            let _ = store.db.conn().execute("DELETE FROM leases WHERE network = ?1 AND container = ?2", [&net.name, &rec.id]);
            Err(nerr(e))
        }
    }
}

/// `network disconnect` of a running container: its interface, lease (and, on its first
/// network, published ports) go.
pub fn disconnect(store: &Store, rec: &Record, net: &str) -> Result<()> {
    let mut att = attached(store, &rec.id).unwrap_or_default();
    let first = att.networks.first().is_some_and(|e| e.network == net);
    let r = netctr::detach_network(&Ns::Current, &rec.id, net, first).map_err(nerr);
    store.db.conn().execute("DELETE FROM leases WHERE network = ?1 AND container = ?2", [net, &rec.id])?;
    att.networks.retain(|e| e.network != net);
    if first {
        att.ports.clear();
    }
    write_state(store, &rec.id, &att)?;
    refresh_hosts(store, &[net.to_string()], None)?;
    r
}

// ---- /etc files -------------------------------------------------------------------------

const HOSTS_HEAD: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// A container's /etc/hosts: docker's lines, `--add-host`s, its own address and name, then
/// the other members of each user network it is on (by name, and short id).
fn hosts_text(store: &Store, rec: &Record) -> Result<String> {
    let h = &rec.stored.host;
    let mut s = if h.network_mode == "host" { std::fs::read_to_string("/etc/hosts").unwrap_or_default() } else { HOSTS_HEAD.to_string() };
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    for e in &h.extra_hosts {
        if let Some((name, ip)) = e.split_once(':') {
            s.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    if h.network_mode == "host" {
        return Ok(s);
    }
    let conn = store.db.conn();
    let leases = ipam::leases_of(conn, &rec.id).map_err(nerr)?;
    match leases.first() {
        Some((net, ip)) => {
            s.push_str(&format!("{ip}\t{}\n", rec.stored.config.hostname));
            if let Some(ip6) = ipam::lease6(conn, net, &rec.id).map_err(nerr)? {
                s.push_str(&format!("{ip6}\t{}\n", rec.stored.config.hostname));
            }
        }
        None => s.push_str(&format!("127.0.1.1\t{}\n", rec.stored.config.hostname)),
    }
    let mut seen = std::collections::HashSet::new();
    for (net, _) in leases.iter().filter(|(n, _)| n != DEFAULT_NETWORK) {
        // A member's IPv4 line, then its IPv6 one (on a network with IPv6): names resolve
        // to both.
        let v6: BTreeMap<String, Ipv6Addr> = ipam::leases6_on(conn, net).map_err(nerr)?.into_iter().map(|(a, c)| (c, a)).collect();
        for (ip, other) in ipam::leases_on(conn, net).map_err(nerr)? {
            if other == rec.id || !seen.insert((ip, other.clone())) {
                continue;
            }
            let name: Option<String> =
                rusqlite::OptionalExtension::optional(conn.query_row("SELECT name FROM containers WHERE id = ?1", [&other], |r| r.get(0)))?;
            if let Some(name) = name {
                let short = &other[..12.min(other.len())];
                s.push_str(&format!("{ip}\t{name} {short}\n"));
                if let Some(ip6) = v6.get(&other) {
                    s.push_str(&format!("{ip6}\t{name} {short}\n"));
                }
            }
        }
    }
    Ok(s)
}

/// /etc/resolv.conf: the host's, without loopback nameservers (unreachable from the
/// container's namespace); `--dns` replaces the nameservers; none left: docker's defaults.
pub fn resolv_text(host: &str, dns: &[String], host_network: bool) -> String {
    let mut out = String::new();
    let mut servers = Vec::new();
    for l in host.lines() {
        let t = l.trim();
        if let Some(ns) = t.strip_prefix("nameserver") {
            let ns = ns.trim();
            let loopback = ns.parse::<std::net::IpAddr>().map(|a| a.is_loopback()).unwrap_or(false);
            if (!loopback || host_network) && !ns.is_empty() {
                servers.push(ns.to_string());
            }
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    if !dns.is_empty() {
        servers = dns.to_vec();
    }
    if servers.is_empty() {
        servers = vec!["8.8.8.8".into(), "8.8.4.4".into()];
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out
}

/// Writes the container's /etc/hostname, /etc/hosts and /etc/resolv.conf in its directory
/// (bind-mounted by the spec; their destinations are resolved inside the rootfs by the
/// runtime, as every mount's). `--network container:X` gets X's.
pub fn etc_files(store: &Store, rec: &Record, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let h = &rec.stored.host;
    let _lock = hosts_lock(store)?;
    let mut out = Vec::new();
    let texts: Vec<(&str, String)> = if let Some(other) = h.network_mode.strip_prefix("container:") {
        let odir = super::dir(store, other);
        ["hostname", "hosts", "resolv.conf"].iter().map(|n| (*n, std::fs::read_to_string(odir.join(n)).unwrap_or_default())).collect()
    } else {
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        vec![
            ("hostname", format!("{}\n", rec.stored.config.hostname)),
            ("hosts", hosts_text(store, rec)?),
            ("resolv.conf", resolv_text(&host_resolv, &h.dns, h.network_mode == "host")),
        ]
    };
    for (name, text) in texts {
        let p = dir.join(name);
        write_in_place(&p, &text).map_err(|e| bad(format!("write {}: {e}", p.display())))?;
        out.push((format!("/etc/{name}"), p));
    }
    Ok(out)
}

fn hosts_lock(store: &Store) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let rd = run_dir(store);
    std::fs::create_dir_all(&rd).map_err(|e| fail(format!("create {}: {e}", rd.display())))?;
    let p = rd.join("hosts.lock");
    let f = std::fs::File::options().create(true).append(true).open(&p).map_err(|e| fail(format!("open {}: {e}", p.display())))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| fail(format!("lock {}: {e}", p.display())))
}

/// Rewrites a file in place (same inode: a bind mount of it shows the new text): the new
/// bytes over the old, then cut to their length.
fn write_in_place(p: &Path, text: &str) -> std::io::Result<()> {
    let f = std::fs::File::options().write(true).create(true).truncate(false).open(p)?;
    f.write_all_at(text.as_bytes(), 0)?;
    f.set_len(text.len() as u64)
}

/// Rewrites the hosts file of every member of `nets` (user networks only) but `except`.
fn refresh_hosts(store: &Store, nets: &[String], except: Option<&str>) -> Result<()> {
    let user: Vec<&String> = nets.iter().filter(|n| *n != DEFAULT_NETWORK).collect();
    if user.is_empty() {
        return Ok(());
    }
    let _lock = hosts_lock(store)?;
    let mut done = std::collections::HashSet::new();
    for net in user {
        for (_, id) in ipam::leases_on(store.db.conn(), net).map_err(nerr)? {
            if Some(id.as_str()) == except || !done.insert(id.clone()) {
                continue;
            }
            let Some(rec) = super::get(store, &id)? else { continue };
            let p = super::dir(store, &id).join("hosts");
            if p.exists() {
                let text = hosts_text(store, &rec)?;
                write_in_place(&p, &text).map_err(|e| fail(format!("rewrite {}: {e}", p.display())))?;
            }
        }
    }
    Ok(())
}

// ---- inspect ----------------------------------------------------------------------------

/// docker's NetworkSettings of a container, from what its start made (empty when down).
pub fn settings(store: &Store, rec: &Record) -> Value {
    let att = attached(store, &rec.id);
    let mut ports = serde_json::Map::new();
    for key in rec.stored.config.exposed_ports.keys() {
        ports.insert(key.clone(), Value::Null);
    }
    let mut networks = serde_json::Map::new();
    let mode = &rec.stored.host.network_mode;
    let empty_ep = |id: &str| {
        json!({"IPAMConfig": null, "Links": null, "Aliases": null, "MacAddress": "", "NetworkID": id, "EndpointID": "", "Gateway": "", "IPAddress": "",
            "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DriverOpts": null, "DNSNames": null})
    };
    if !mode.starts_with("container:") {
        for n in networks_of(rec).iter().chain(is_special(mode).then_some(mode).filter(|m| *m != "none" || rec.stored.networks.is_empty()))
        {
            networks.insert(n.clone(), empty_ep(""));
        }
    }
    let mut top =
        json!({"IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "", "EndpointID": "", "SandboxKey": "", "SandboxID": ""});
    if let Some(att) = &att {
        for p in &att.ports {
            let key = format!("{}/{}", p.container_port, p.proto);
            let ip = if p.host_ip.is_empty() { "0.0.0.0".to_string() } else { p.host_ip.clone() };
            let b = json!({"HostIp": ip, "HostPort": p.host_port.to_string()});
            match ports.get_mut(&key).filter(|v| v.is_array()) {
                Some(v) => v.as_array_mut().into_iter().for_each(|a| a.push(b.clone())),
                None => {
                    ports.insert(key, json!([b]));
                }
            }
        }
        top["SandboxKey"] = json!(att.sandbox);
        for e in &att.networks {
            let ep = json!({"IPAMConfig": null, "Links": null, "Aliases": null, "MacAddress": e.mac, "NetworkID": e.network_id,
                "EndpointID": e.veth, "Gateway": e.gateway, "IPAddress": e.ip, "IPPrefixLen": e.prefix, "IPv6Gateway": e.gateway6,
                "GlobalIPv6Address": e.ip6, "GlobalIPv6PrefixLen": e.prefix6, "DriverOpts": null,
                "DNSNames": if e.network == DEFAULT_NETWORK { Value::Null } else { json!([rec.name, rec.short_id()]) }});
            networks.insert(e.network.clone(), ep);
            // docker fills the top-level fields from the default bridge network only.
            if e.network == DEFAULT_NETWORK {
                top["IPAddress"] = json!(e.ip);
                top["IPPrefixLen"] = json!(e.prefix);
                top["Gateway"] = json!(e.gateway);
                top["MacAddress"] = json!(e.mac);
                top["EndpointID"] = json!(e.veth);
            }
        }
    }
    let mut v = json!({
        "Bridge": "", "HairpinMode": false, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "Ports": if att.is_some() || !ports.is_empty() { Value::Object(ports) } else { json!({}) },
        "SecondaryIPAddresses": null, "SecondaryIPv6Addresses": null, "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": "",
        "Networks": networks,
    });
    if let (Some(o), Some(t)) = (v.as_object_mut(), top.as_object()) {
        for (k, x) in t {
            o.insert(k.clone(), x.clone());
        }
    }
    v
}

/// The published ports of a running container, docker's `port` lines: `80/tcp -> 0.0.0.0:8080`.
pub fn port_lines(store: &Store, rec: &Record) -> Vec<(String, String)> {
    let Some(att) = attached(store, &rec.id) else { return Vec::new() };
    att.ports
        .iter()
        .map(|p| {
            let ip = if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip };
            (format!("{}/{}", p.container_port, p.proto), format!("{ip}:{}", p.host_port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let one = |s: &str| {
            let v = parse_publish(s).unwrap();
            assert_eq!(v.len(), 1, "{s}: {v:?}");
            v[0].clone()
        };
        let p = one("8080:80");
        assert_eq!((p.host_ip, p.host_ports, p.container_port, p.proto), (None, Some((8080, 8080)), 80, Proto::Tcp));
        let p = one("127.0.0.1::53/udp");
        assert_eq!((p.host_ip, p.host_ports, p.container_port, p.proto), (Some(Ipv4Addr::LOCALHOST), None, 53, Proto::Udp));
        assert_eq!(one("80").host_ports, None);
        // Ranges: one to one, random host ports, a host range for one port.
        let v = parse_publish("8000-8002:80-82/udp").unwrap();
        let got: Vec<_> = v.iter().map(|p| (p.host_ports, p.container_port, p.proto)).collect();
        assert_eq!(got, [(Some((8000, 8000)), 80, Proto::Udp), (Some((8001, 8001)), 81, Proto::Udp), (Some((8002, 8002)), 82, Proto::Udp)]);
        assert_eq!(
            parse_publish("80-81").unwrap().iter().map(|p| (p.host_ports, p.container_port)).collect::<Vec<_>>(),
            [(None, 80), (None, 81)]
        );
        assert_eq!(one("8000-8010:80").host_ports, Some((8000, 8010)));
        for (bad, why) in [
            ("80/sctp", "sctp"),
            ("x:80", "host port"),
            ("1.2.3:80:80", "host address"),
            ("8000-8001:80-82", "ranges"),
            ("82-80", "end is below its start"),
            ("80-x", "container port"),
            ("0", "container port"),
        ] {
            let e = parse_publish(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let host = "# hi\nsearch example.org\nnameserver 127.0.0.53\nnameserver 192.0.2.53\noptions ndots:2\n";
        assert_eq!(resolv_text(host, &[], false), "# hi\nsearch example.org\noptions ndots:2\nnameserver 192.0.2.53\n");
        assert_eq!(resolv_text("nameserver 127.0.0.1\n", &[], false), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        assert_eq!(resolv_text(host, &["10.0.0.1".into()], false), "# hi\nsearch example.org\noptions ndots:2\nnameserver 10.0.0.1\n");
        assert!(resolv_text(host, &[], true).contains("nameserver 127.0.0.53"));
    }
}

//! `network create|ls|inspect|rm|prune|connect|disconnect`: bridge networks (docker's
//! `bridge` driver) over capsa-network. `bridge` is the default network (made on first use,
//! see container/network.rs); `host` and `none` are listed as docker lists them. Containers on
//! a user network find each other by name through their /etc/hosts, kept current by
//! container/network.rs (it says why that and not a DNS responder).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use clap::Subcommand;
use serde_json::{json, Value};

use capsa_image::Store;
use capsa_network::ipam::{self, Network, NewNetwork, Subnet, Subnet6};
use capsa_network::netns::Ns;
use capsa_network::{bridge, firewall};

use super::{each, fail, Cli, Result};
use crate::container::{self, network as cnet, Record};
use crate::format;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks.
    Inspect(InspectArgs),
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove all unused networks.
    Prune(PruneArgs),
    /// Connect a container to a network.
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(DisconnectArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Driver to manage the Network (bridge).
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format that represents a network segment (one IPv4, and with --ipv6 one
    /// IPv6).
    #[arg(long)]
    pub subnet: Vec<String>,
    /// IPv4 or IPv6 Gateway for the master subnet of its family.
    #[arg(long)]
    pub gateway: Vec<String>,
    /// Restrict external access to the network.
    #[arg(long)]
    pub internal: bool,
    /// Enable IPv6 networking (dual stack: an IPv4 subnet as well).
    #[arg(long)]
    pub ipv6: bool,
    /// Set metadata on a network.
    #[arg(long)]
    pub label: Vec<String>,
    /// Set driver specific options (com.docker.network.bridge.name=NAME).
    #[arg(short, long)]
    pub opt: Vec<String>,
    pub name: String,
}

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Only display network IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate the output.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Provide filter values (name=, id=, driver=, type=custom|builtin, label=).
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Format output using a Go template subset.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Format output using a Go template subset.
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub networks: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Do not error if the network does not exist.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub networks: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    pub network: String,
    pub container: String,
}

#[derive(clap::Args, Debug)]
pub struct DisconnectArgs {
    /// Force the container to disconnect from a network.
    #[arg(short, long)]
    pub force: bool,
    pub network: String,
    pub container: String,
}

fn nerr(e: capsa_network::Error) -> super::Failure {
    fail(e.to_string())
}

/// The ids docker's host and none networks get here (fixed, from their names).
fn builtin_id(name: &str) -> String {
    let d = capsa_image::Digest::of(format!("capsactl network {name}").as_bytes()).to_string();
    d.strip_prefix("sha256:").unwrap_or(&d).to_string()
}

/// A network as `ls` and `inspect` see it: from the database, or host/none.
struct Entry {
    name: String,
    id: String,
    driver: &'static str,
    net: Option<Network>,
}

fn entries(store: &Store) -> Result<Vec<Entry>> {
    // The default network is listed as docker lists its bridge: made (its row) on first sight.
    cnet::default_network(store)?;
    let mut v: Vec<Entry> = ipam::networks(store.db.conn())
        .map_err(nerr)?
        .into_iter()
        .map(|n| Entry { name: n.name.clone(), id: n.id.clone(), driver: "bridge", net: Some(n) })
        .collect();
    v.push(Entry { name: "host".into(), id: builtin_id("host"), driver: "host", net: None });
    v.push(Entry { name: "none".into(), id: builtin_id("none"), driver: "null", net: None });
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

/// docker's lookup: a name, a full id or a unique id prefix.
fn find(store: &Store, key: &str) -> Result<Entry> {
    let all = entries(store)?;
    let not_found = || fail(format!("network {key} not found"));
    if key.is_empty() {
        return Err(not_found());
    }
    let mut hits: Vec<Entry> = Vec::new();
    for e in all {
        if e.name == key || e.id == key {
            return Ok(e);
        }
        if e.id.starts_with(key) {
            hits.push(e);
        }
    }
    match hits.len() {
        1 => hits.pop().ok_or_else(not_found),
        0 => Err(not_found()),
        _ => Err(fail(format!("network {key} is ambiguous ({} matches found based on ID prefix)", hits.len()))),
    }
}

/// Containers whose configuration names the network (running or not).
fn users(store: &Store, name: &str) -> Result<Vec<Record>> {
    Ok(container::list(store)?.into_iter().filter(|r| cnet::networks_of(r).iter().any(|n| n == name)).collect())
}

pub fn run(cli: &Cli, c: &Cmd) -> Result<i32> {
    let mut store = cli.store()?;
    match c {
        Cmd::Create(a) => create(&store, a),
        Cmd::Ls(a) => ls(&store, a),
        Cmd::Inspect(a) => {
            let mut out = Vec::new();
            let mut code = 0;
            for n in &a.networks {
                match find(&store, n) {
                    Ok(e) => out.push(describe(&store, &e)?),
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        code = 1;
                    }
                }
            }
            match &a.format {
                Some(f) => {
                    let t = format::Template::parse(f)?;
                    for v in &out {
                        let obj: BTreeMap<String, Value> = serde_json::from_value(v.clone()).unwrap_or_default();
                        println!("{}", t.render(&obj)?);
                    }
                }
                None => println!("{}", serde_json::to_string_pretty(&Value::Array(out)).unwrap_or_default()),
            }
            Ok(code)
        }
        Cmd::Rm(a) => each(&a.networks, |n| {
            match find(&store, n) {
                Ok(e) => remove(&store, &e)?,
                Err(_) if a.force => {}
                Err(e) => return Err(e),
            }
            println!("{n}");
            Ok(())
        }),
        Cmd::Prune(a) => {
            if !a.force && !super::confirm("all custom networks not used by at least one container") {
                return Ok(0);
            }
            let mut gone = Vec::new();
            for e in entries(&store)? {
                if e.net.is_none() || e.name == cnet::DEFAULT_NETWORK || !users(&store, &e.name)?.is_empty() {
                    continue;
                }
                if remove(&store, &e).is_ok() {
                    gone.push(e.name);
                }
            }
            if !gone.is_empty() {
                println!("Deleted Networks:");
                for n in gone {
                    println!("{n}");
                }
            }
            Ok(0)
        }
        Cmd::Connect(a) => connect(&mut store, &a.network, &a.container),
        Cmd::Disconnect(a) => disconnect(&mut store, &a.network, &a.container),
    }
}

fn create(store: &Store, a: &CreateArgs) -> Result<i32> {
    if a.driver != "bridge" {
        return Err(fail(format!("plugin \"{}\" not found: capsactl's networks use the bridge driver only", a.driver)));
    }
    if a.name.is_empty() || !a.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) || a.name.starts_with(['.', '-']) {
        return Err(fail(format!("invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", a.name)));
    }
    if ["host", "none", cnet::DEFAULT_NETWORK, "default"].contains(&a.name.as_str()) || a.name.starts_with("container:") {
        return Err(fail(format!("network with name {} already exists (a pre-defined network)", a.name)));
    }
    let mut labels = serde_json::Map::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), json!(v));
    }
    let id = ipam::random_id();
    let mut bridge_name = format!("br-{}", &id[..12]);
    for o in &a.opt {
        match o.split_once('=') {
            Some(("com.docker.network.bridge.name", v)) if !v.is_empty() && v.len() <= 15 => bridge_name = v.to_string(),
            _ => return Err(fail(format!("--opt {o}: not implemented yet (com.docker.network.bridge.name=NAME is)"))),
        }
    }
    // docker's flags: --subnet and --gateway once per family; an IPv6 one needs --ipv6.
    let (mut subnet4, mut subnet6): (Option<&str>, Option<&str>) = (None, None);
    for s in &a.subnet {
        let slot = if s.contains(':') { &mut subnet6 } else { &mut subnet4 };
        if slot.replace(s).is_some() {
            return Err(fail(format!("--subnet {s}: one subnet per address family is implemented, not more")));
        }
    }
    let (mut gateway, mut gateway6): (Option<Ipv4Addr>, Option<Ipv6Addr>) = (None, None);
    for g in &a.gateway {
        match g.parse::<IpAddr>() {
            Ok(IpAddr::V4(v)) if gateway.replace(v).is_none() => {}
            Ok(IpAddr::V6(v)) if gateway6.replace(v).is_none() => {}
            Ok(_) => return Err(fail(format!("--gateway {g}: one gateway per address family"))),
            Err(_) => return Err(fail(format!("--gateway {g:?}: not an IP address"))),
        }
    }
    if let (Some(s6), false) = (subnet6, a.ipv6) {
        return Err(fail(format!("--subnet {s6}: an IPv6 subnet needs --ipv6")));
    }
    let subnet = match subnet4 {
        Some(s) => {
            let sn: Subnet = s.parse().map_err(|e| fail(format!("--subnet: {e}")))?;
            if let Some(r) = cnet::host_routes()?.into_iter().find(|r| r.overlaps(sn)) {
                return Err(fail(format!("invalid pool request: subnet {sn} overlaps the host's route to {r}")));
            }
            sn
        }
        None if gateway.is_some() => return Err(fail("--gateway needs --subnet")),
        None => {
            let candidates: Vec<Subnet> = (0..=255u8).map(|i| Subnet { addr: Ipv4Addr::new(10, 90, i, 0), prefix: 24 }).collect();
            cnet::free_subnet(store.db.conn(), &candidates)?
        }
    };
    if let Some(g) = gateway {
        if !subnet.contains(g) || g == subnet.addr || g == subnet.broadcast() {
            return Err(fail(format!("--gateway {g}: not a host address of --subnet {subnet}")));
        }
    }
    let subnet6 = match (subnet6, a.ipv6) {
        (_, false) if gateway6.is_some() => return Err(fail("--gateway with an IPv6 address needs --ipv6")),
        (_, false) => None,
        (Some(s), true) => {
            let sn: Subnet6 = s.parse().map_err(|e| fail(format!("--subnet: {e}")))?;
            if let Some(n) = ipam::networks(store.db.conn()).map_err(nerr)?.into_iter().find(|n| n.v6.is_some_and(|(o, _)| o.overlaps(sn)))
            {
                let other = n.v6.map(|(o, _)| o.to_string()).unwrap_or_default();
                return Err(fail(format!("invalid pool request: --subnet {sn} overlaps network {} ({other})", n.name)));
            }
            if let Some(r) = cnet::host_routes6()?.into_iter().find(|r| r.overlaps(sn)) {
                return Err(fail(format!("invalid pool request: --subnet {sn} overlaps the host's route to {r}")));
            }
            Some(sn)
        }
        (None, true) if gateway6.is_some() => return Err(fail("--gateway with an IPv6 address needs an IPv6 --subnet")),
        (None, true) => Some(cnet::free_subnet6(store.db.conn())?),
    };
    if let (Some(g), Some(sn)) = (gateway6, subnet6) {
        if !sn.contains(g) || g == sn.addr {
            return Err(fail(format!("--gateway {g}: not a host address of --subnet {sn}")));
        }
    }
    let labels = Value::Object(labels).to_string();
    let now = container::now();
    let new = NewNetwork {
        name: &a.name,
        id: &id,
        bridge: &bridge_name,
        subnet: Some(subnet),
        gateway,
        subnet6,
        gateway6,
        internal: a.internal,
        labels: &labels,
        created: &now,
    };
    let net = {
        let tx = rusqlite::Transaction::new_unchecked(store.db.conn(), rusqlite::TransactionBehavior::Immediate)?;
        let n = ipam::create_network(&tx, &new).map_err(|e| {
            let m = e.to_string();
            if m.ends_with("already exists") {
                fail(format!("network with name {} already exists", a.name))
            } else {
                fail(format!("invalid pool request: {m}"))
            }
        })?;
        tx.commit()?;
        n
    };
    // The bridge and its rules now, as docker does; nothing left if that fails.
    let made = bridge::ensure(&Ns::Current, &net, 0).and_then(|_| firewall::add_network(&Ns::Current, &cnet::run_dir(store), &net));
    if let Err(e) = made {
        let _ = firewall::remove_network(&Ns::Current, &net);
        let _ = bridge::remove(&Ns::Current, &net);
        let _ = ipam::remove_network(store.db.conn(), &net.name);
        return Err(nerr(e));
    }
    println!("{}", net.id);
    Ok(0)
}

fn remove(store: &Store, e: &Entry) -> Result<()> {
    let Some(net) = &e.net else {
        return Err(fail(format!("{} is a pre-defined network and cannot be removed", e.name)));
    };
    if e.name == cnet::DEFAULT_NETWORK {
        return Err(fail(format!("{} is a pre-defined network and cannot be removed", e.name)));
    }
    // The row goes first, in one transaction with the check that no container has an
    // address on it: a `run` racing this either leased first (and the removal is refused) or
    // finds no network; it never gets a network whose bridge is being removed.
    let tx = rusqlite::Transaction::new_unchecked(store.db.conn(), rusqlite::TransactionBehavior::Immediate)?;
    let leases = ipam::leases_on(&tx, &net.name).map_err(nerr)?;
    if !leases.is_empty() {
        return Err(fail(format!("error while removing network: network {} id {} has active endpoints", net.name, net.id)));
    }
    ipam::remove_network(&tx, &net.name).map_err(|e| fail(format!("error while removing network: {e}")))?;
    tx.commit()?;
    let r = firewall::remove_network(&Ns::Current, net).and_then(|()| bridge::remove(&Ns::Current, net));
    r.map_err(|e| fail(format!("network {} removed, but not all of its bridge {} and rules: {e}", net.name, net.bridge)))
}

fn ls(store: &Store, a: &LsArgs) -> Result<i32> {
    let mut rows = Vec::new();
    for e in entries(store)? {
        let mut ok = true;
        for f in &a.filter {
            let (k, val) = f.split_once('=').ok_or_else(|| fail(format!("bad format of filter (expected name=value): {f}")))?;
            let labels: BTreeMap<String, String> =
                e.net.as_ref().and_then(|n| serde_json::from_str::<BTreeMap<String, String>>(&n.labels).ok()).unwrap_or_default();
            ok &= match k {
                "name" => e.name.contains(val),
                "id" => e.id.starts_with(val),
                "driver" => e.driver == val,
                "type" => match val {
                    "custom" => e.net.is_some() && e.name != cnet::DEFAULT_NETWORK,
                    "builtin" => e.net.is_none() || e.name == cnet::DEFAULT_NETWORK,
                    _ => return Err(fail(format!("invalid filter: 'type'='{val}' (custom or builtin)"))),
                },
                "label" => match val.split_once('=') {
                    Some((lk, lv)) => labels.get(lk).is_some_and(|x| x == lv),
                    None => labels.contains_key(val),
                },
                _ => return Err(fail(format!("invalid filter '{k}'"))),
            };
        }
        if ok {
            rows.push(e);
        }
    }
    let id = |e: &Entry| if a.no_trunc { e.id.clone() } else { e.id[..12.min(e.id.len())].to_string() };
    if a.quiet {
        for e in &rows {
            println!("{}", id(e));
        }
        return Ok(0);
    }
    match &a.format {
        Some(f) => {
            let t = format::Template::parse(f)?;
            let objs: Vec<BTreeMap<String, Value>> = rows
                .iter()
                .map(|e| {
                    let mut o = BTreeMap::new();
                    o.insert("ID".into(), json!(id(e)));
                    o.insert("Name".into(), json!(e.name));
                    o.insert("Driver".into(), json!(e.driver));
                    o.insert("Scope".into(), json!("local"));
                    o.insert("IPv6".into(), json!(e.net.as_ref().is_some_and(|n| n.v6.is_some()).to_string()));
                    o.insert("Internal".into(), json!(e.net.as_ref().is_some_and(|n| n.internal).to_string()));
                    o.insert("CreatedAt".into(), json!(e.net.as_ref().map(|n| n.created.clone()).unwrap_or_default()));
                    o
                })
                .collect();
            let h: BTreeMap<&str, &str> = [
                ("ID", "NETWORK ID"),
                ("Name", "NAME"),
                ("Driver", "DRIVER"),
                ("Scope", "SCOPE"),
                ("IPv6", "IPV6"),
                ("Internal", "INTERNAL"),
                ("CreatedAt", "CREATED AT"),
            ]
            .into_iter()
            .collect();
            print!("{}", format::with_template(&t, &h, &objs)?);
        }
        None => {
            let cells: Vec<Vec<String>> = rows.iter().map(|e| vec![id(e), e.name.clone(), e.driver.to_string(), "local".into()]).collect();
            print!("{}", format::table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &cells));
        }
    }
    Ok(0)
}

/// docker's network inspect object.
fn describe(store: &Store, e: &Entry) -> Result<Value> {
    let mut containers = serde_json::Map::new();
    let (ipam_config, options, internal, labels, created) = match &e.net {
        Some(n) => {
            let v6: BTreeMap<String, Ipv6Addr> =
                ipam::leases6_on(store.db.conn(), &n.name).map_err(nerr)?.into_iter().map(|(a, c)| (c, a)).collect();
            for (ip, cid) in ipam::leases_on(store.db.conn(), &n.name).map_err(nerr)? {
                let Some(rec) = container::get(store, &cid)? else { continue };
                let ep = cnet::attached(store, &cid).and_then(|a| a.networks.into_iter().find(|x| x.network == n.name));
                let ip6 = match (v6.get(&cid), n.v6) {
                    (Some(a), Some((sn6, _))) => format!("{a}/{}", sn6.prefix),
                    _ => String::new(),
                };
                containers.insert(
                    cid.clone(),
                    json!({"Name": rec.name, "EndpointID": ep.as_ref().map(|x| x.veth.clone()).unwrap_or_default(),
                        "MacAddress": ep.as_ref().map(|x| x.mac.clone()).unwrap_or_default(),
                        "IPv4Address": format!("{ip}/{}", n.subnet.prefix), "IPv6Address": ip6}),
                );
            }
            let mut opts = json!({"com.docker.network.bridge.name": n.bridge});
            if n.name == cnet::DEFAULT_NETWORK {
                opts["com.docker.network.bridge.default_bridge"] = json!("true");
                opts["com.docker.network.bridge.enable_ip_masquerade"] = json!("true");
            }
            let labels: Value = serde_json::from_str(&n.labels).unwrap_or(json!({}));
            let mut config = vec![json!({"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()})];
            if let Some((sn6, gw6)) = n.v6 {
                config.push(json!({"Subnet": sn6.to_string(), "Gateway": gw6.to_string()}));
            }
            (Value::Array(config), opts, n.internal, labels, n.created.clone())
        }
        None => (json!([]), json!({}), false, json!({}), container::ZERO_TIME.to_string()),
    };
    Ok(json!({
        "Name": e.name,
        "Id": e.id,
        "Created": created,
        "Scope": "local",
        "Driver": e.driver,
        "EnableIPv4": true,
        "EnableIPv6": e.net.as_ref().is_some_and(|n| n.v6.is_some()),
        "IPAM": {"Driver": "default", "Options": null, "Config": ipam_config},
        "Internal": internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": labels,
    }))
}

/// Whether the container's network is up now (its start attached it).
fn attached_now(store: &Store, rec: &Record) -> bool {
    matches!(rec.state.as_str(), "running" | "paused") && cnet::attached(store, &rec.id).is_some()
}

fn save_networks(store: &mut Store, rec: &Record) -> Result<()> {
    let cfg = serde_json::to_string(&rec.stored).map_err(|e| fail(format!("encode container config: {e}")))?;
    container::update(store, &rec.id, "config = ?2", &[&cfg])
}

fn connect(store: &mut Store, network: &str, ctr: &str) -> Result<i32> {
    let e = find(store, network)?;
    let rec = container::find(store, ctr)?;
    let mode = rec.stored.host.network_mode.clone();
    let Some(net) = e.net else {
        return Err(fail("container cannot be disconnected from host network or connected to host network"));
    };
    if mode == "host" || mode.starts_with("container:") {
        return Err(fail(format!(
            "container sharing network namespace with another container or host cannot be connected to any other network ({mode})"
        )));
    }
    if cnet::networks_of(&rec).contains(&net.name) {
        return Err(fail(format!("endpoint with name {} already exists in network {}", rec.name, net.name)));
    }
    let mut new = rec.clone();
    new.stored.networks.push(net.name.clone());
    save_networks(store, &new)?;
    if attached_now(store, &rec) {
        if let Err(err) = cnet::connect(store, &new, &net, true) {
            let _ = save_networks(store, &rec);
            return Err(err);
        }
    }
    Ok(0)
}

fn disconnect(store: &mut Store, network: &str, ctr: &str) -> Result<i32> {
    let e = find(store, network)?;
    let rec = container::find(store, ctr)?;
    if e.net.is_none() {
        return Err(fail("container cannot be disconnected from host network or connected to host network"));
    }
    if !cnet::networks_of(&rec).contains(&e.name) {
        return Err(fail(format!("container {} is not connected to network {}", rec.id, e.name)));
    }
    let mut new = rec.clone();
    new.stored.networks.retain(|n| *n != e.name);
    if new.stored.host.network_mode == e.name {
        // Its other networks (if any) remain; from the next start the first of them is eth0.
        new.stored.host.network_mode = "none".into();
    }
    save_networks(store, &new)?;
    if attached_now(store, &rec) {
        cnet::disconnect(store, &rec, &e.name)?;
    }
    Ok(0)
}

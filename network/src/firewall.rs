//! NAT on nftables, in capsa's own tables `ip capsa` and (for networks with IPv6) `ip6 capsa`:
//! masquerade out of each network's subnets and DNAT for published ports. Every rule carries a comment tag, `capsa-net:NAME` for a
//! network's and `capsa:ID PROTO/HOSTIP:PORT` for a container's port, so teardown deletes
//! exactly the rules of one container or network, found by tag (also after a crash).
//!
//! It speaks nf_tables over netlink ([`crate::nftnl`]): each change is one atomic batch. The
//! `nft` binary costs about 5 ms a run here (measured: 20 runs of `nft -f -` adding one rule,
//! 5.2 ms each; `nft -j list table`, 4.6 ms), above the 1 ms per container the issue allows.
//!
//! Chains in table `ip capsa`:
//! - `localnet` (filter, raw priority): drop what comes in from a bridge to 127.0.0.0/8 (the
//!   bridge has route_localnet for published ports on 127.0.0.1; containers must not use it
//!   to reach the host's loopback services);
//! - `prerouting` (dstnat): `fib daddr type local` + port → DNAT, for traffic from other
//!   hosts and from containers (hairpin);
//! - `output` (dstnat): the same for the host's own connections (127.0.0.1 and its addresses);
//! - `postrouting` (srcnat): masquerade from the subnet to anywhere but the bridge; and
//!   masquerade of DNATed connections into the bridge from 127.0.0.0/8 (the container cannot
//!   answer 127.0.0.1) or from the subnet itself (hairpin: the answer must come back through
//!   the host to be un-DNATed);
//! - `forward` (filter): for an internal network (docker's `--internal`), drop what would
//!   be forwarded between its bridge and any other link (no masquerade either); for the
//!   others, into the bridge only answers (`ct state established,related`), published ports
//!   (`ct status dnat`) and traffic between its own containers; anything else routed to the
//!   subnet (from another host, or another network's containers) is dropped, as docker's
//!   DOCKER and DOCKER-ISOLATION chains do.
//!
//! Table `ip6 capsa` has the same chains but `localnet`, with the same rules for a network's
//! IPv6 subnet and a container's IPv6 address, as docker's ip6tables rules: a port published
//! on all addresses (`-p 8080:80`) of a container on an IPv6 network is DNATed from the
//! host's IPv6 addresses too; a port published on one IPv4 address stays IPv4 only. IPv6
//! has no route_localnet: a packet from ::1 may not leave `lo` (RFC 4291 2.5.3; the
//! container would drop it), so `[::1]:PORT` is not DNATed (`ip6 daddr != ::1` in `output`,
//! as docker's `! -d ::1` rule; docker answers there only through its userland proxy, which
//! capsa does not have). The table is removed with the last network's IPv6 rules.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Result};
use crate::ipam::Network;
use crate::netns::Ns;
use crate::nftnl::{self, expr, Batch, Family, Hook};

/// Table `capsa` of families ip and ip6.
const TABLE: &str = "capsa";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
    /// The IP protocol number.
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

/// A published port, docker's `-p [ip:]host:container[/tcp|udp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMap {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl std::str::FromStr for PortMap {
    type Err = Error;
    fn from_str(s: &str) -> Result<PortMap> {
        let bad = |why: &str| Error::new(format!("published port {s:?}: {why}"));
        let (rest, proto) = match s.rsplit_once('/') {
            Some((r, "tcp")) => (r, Proto::Tcp),
            Some((r, "udp")) => (r, Proto::Udp),
            Some((_, p)) => return Err(bad(&format!("protocol {p:?}: expected tcp or udp"))),
            None => (s, Proto::Tcp),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let port = |p: &str, what: &str| -> Result<u16> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(&format!("{what} port {p:?}: expected 1-65535"))),
            }
        };
        let (host_ip, hp, cp) = match parts.as_slice() {
            [h, c] => (None, *h, *c),
            [ip, h, c] => (Some(ip.parse::<Ipv4Addr>().map_err(|_| bad(&format!("host address {ip:?}: not an IPv4 address")))?), *h, *c),
            [_] => return Err(bad("a random host port (-p CONTAINERPORT) is not implemented yet")),
            _ => return Err(bad("expected [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")),
        };
        Ok(PortMap { host_ip, host_port: port(hp, "host")?, container_port: port(cp, "container")?, proto })
    }
}

impl PortMap {
    /// The tag's port part: `tcp/*:8080` or `tcp/10.0.0.1:8080`.
    fn key(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("{}/{ip}:{}", self.proto.as_str(), self.host_port),
            None => format!("{}/*:{}", self.proto.as_str(), self.host_port),
        }
    }
    fn conflicts(&self, key: &str) -> bool {
        // tcp/*:80 conflicts with tcp/ANY:80 and the other way round.
        let Some((proto, rest)) = key.split_once('/') else { return false };
        let Some((ip, port)) = rest.rsplit_once(':') else { return false };
        proto == self.proto.as_str()
            && port == self.host_port.to_string()
            && (ip == "*" || self.host_ip.is_none() || self.host_ip.map(|i| i.to_string()).as_deref() == Some(ip))
    }
}

/// The table and its chains, added (idempotently) in front of a batch of rules.
fn base(b: &mut Batch, family: Family) {
    b.add_table();
    if family == Family::Ip {
        b.add_base_chain("localnet", "filter", Hook::Prerouting, -300);
    }
    b.add_base_chain("prerouting", "nat", Hook::Prerouting, -100);
    b.add_base_chain("output", "nat", Hook::Output, -100);
    b.add_base_chain("postrouting", "nat", Hook::Postrouting, 100);
    b.add_base_chain("forward", "filter", Hook::Forward, 0);
}

/// Commits rules made by `rules`: first alone, and only if the table or a chain is missing
/// (ENOENT) again behind [`base`]. Re-adding existing base chains in every batch costs ~9 ms
/// here (the kernel updates their hooks); a batch of rules alone ~0.2 ms.
fn commit_rules(family: Family, rules: impl Fn(&mut Batch)) -> Result<()> {
    let mut b = Batch::of(family, TABLE);
    rules(&mut b);
    match b.commit() {
        Err(e) if e.errno() == Some(libc::ENOENT) => {
            let mut b = Batch::of(family, TABLE);
            base(&mut b, family);
            rules(&mut b);
            b.commit()
        }
        r => r,
    }
}

/// Adds a network's masquerade rules (once: a network that has them is left alone; the check
/// and the add are one step under the flock in `lock_dir`, so that containers starting at
/// once do not add them twice).
pub fn add_network(host: &Ns, lock_dir: &std::path::Path, net: &Network) -> Result<()> {
    let tag = format!("capsa-net:{}", net.name);
    let _lock = lock(lock_dir)?;
    host.run(|| {
        add_network6(net, &tag)?;
        let (sn, br) = (net.subnet, &net.bridge);
        let mine: Vec<nftnl::Rule> = nftnl::list_rules(TABLE)?.into_iter().filter(|r| r.comment == tag).collect();
        if !mine.is_empty() {
            // A network made before its forward rules existed gets them now.
            if !net.internal && !mine.iter().any(|r| r.chain == "forward") {
                commit_rules(Family::Ip, |b| forward_rules(b, br, &tag))?;
            }
            return Ok(());
        }
        commit_rules(Family::Ip, |b| {
            // iifname BRIDGE ip daddr 127.0.0.0/8 drop: route_localnet on the bridge must not
            // let a container reach the host's 127.0.0.1 services (CVE-2020-8558's lesson).
            b.add_rule("localnet", vec![expr::iifname(br), expr::daddr_in(Ipv4Addr::new(127, 0, 0, 0), 8), expr::drop()], &tag);
            if net.internal {
                // iifname BRIDGE oifname != BRIDGE drop; oifname BRIDGE iifname != BRIDGE drop
                b.add_rule("forward", vec![expr::iifname(br), expr::oifname(false, br), expr::drop()], &tag);
                b.add_rule("forward", vec![expr::oifname(true, br), expr::iifname_ne(br), expr::drop()], &tag);
                return;
            }
            forward_rules(b, br, &tag);
            // ip saddr SUBNET oifname != BRIDGE masquerade
            b.add_rule("postrouting", vec![expr::saddr_in(sn.addr, sn.prefix), expr::oifname(false, br), expr::masquerade()], &tag);
            // oifname BRIDGE ct status dnat ip saddr 127.0.0.0/8 masquerade (and from SUBNET)
            for (a, p) in [(Ipv4Addr::new(127, 0, 0, 0), 8), (sn.addr, sn.prefix)] {
                b.add_rule("postrouting", vec![expr::oifname(true, br), expr::ct_dnat(), expr::saddr_in(a, p), expr::masquerade()], &tag);
            }
        })
    })
}

/// What may be forwarded into a (non-internal) network's bridge: answers, published ports
/// and its own containers' traffic; nothing else (same rules in both families).
fn forward_rules(b: &mut Batch, br: &str, tag: &str) {
    b.add_rule("forward", vec![expr::oifname(true, br), expr::ct_established(), expr::accept()], tag);
    b.add_rule("forward", vec![expr::oifname(true, br), expr::ct_dnat(), expr::accept()], tag);
    b.add_rule("forward", vec![expr::oifname(true, br), expr::iifname(br), expr::accept()], tag);
    b.add_rule("forward", vec![expr::oifname(true, br), expr::drop()], tag);
}

/// The IPv6 half of [`add_network`] (on the caller's thread, under its lock).
fn add_network6(net: &Network, tag: &str) -> Result<()> {
    let Some((sn6, _)) = net.v6 else { return Ok(()) };
    let br = &net.bridge;
    let mine: Vec<nftnl::Rule> = nftnl::list_rules_of(Family::Ip6, TABLE)?.into_iter().filter(|r| r.comment == tag).collect();
    if !mine.is_empty() {
        if !net.internal && !mine.iter().any(|r| r.chain == "forward") {
            commit_rules(Family::Ip6, |b| forward_rules(b, br, tag))?;
        }
        return Ok(());
    }
    commit_rules(Family::Ip6, |b| {
        if net.internal {
            b.add_rule("forward", vec![expr::iifname(br), expr::oifname(false, br), expr::drop()], tag);
            b.add_rule("forward", vec![expr::oifname(true, br), expr::iifname_ne(br), expr::drop()], tag);
            return;
        }
        forward_rules(b, br, tag);
        // ip6 saddr SUBNET6 oifname != BRIDGE masquerade
        b.add_rule("postrouting", vec![expr::saddr6_in(sn6.addr, sn6.prefix), expr::oifname(false, br), expr::masquerade()], tag);
        // oifname BRIDGE ct status dnat ip6 saddr SUBNET6 masquerade (hairpin)
        b.add_rule(
            "postrouting",
            vec![expr::oifname(true, br), expr::ct_dnat(), expr::saddr6_in(sn6.addr, sn6.prefix), expr::masquerade()],
            tag,
        );
    })
}

/// Removes a network's rules (and table `ip6 capsa` once no rule is left in it).
pub fn remove_network(host: &Ns, net: &Network) -> Result<()> {
    let tag = format!("capsa-net:{}", net.name);
    host.run(|| {
        let r = delete_where(Family::Ip, |c| c == tag);
        let r6 = delete_where(Family::Ip6, |c| c == tag).and_then(|()| {
            if nftnl::list_rules_of(Family::Ip6, TABLE)?.is_empty() {
                let mut b = Batch::of(Family::Ip6, TABLE);
                b.del_table();
                match b.commit() {
                    Err(e) if e.errno() == Some(libc::ENOENT) => {}
                    r => r?,
                }
            }
            Ok(())
        });
        r.and(r6)
    })
}

/// Publishes a container's ports: refused, before anything is added, if a port is published
/// already (by any container). The check and the add are one step under an flock, so two
/// containers asking for one port at once cannot both get it. With `ip6` (a container on a
/// network with IPv6), a port published on all addresses is DNATed from the host's IPv6
/// addresses too (table `ip6 capsa`, same tags).
pub fn publish(
    host: &Ns,
    lock_dir: &std::path::Path,
    container: &str,
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    ports: &[PortMap],
) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    for (i, p) in ports.iter().enumerate() {
        if ports[..i].iter().any(|q| q.conflicts(&p.key())) {
            return Err(Error::new(format!("published port {}: given twice", p.key())));
        }
    }
    let _lock = lock(lock_dir)?;
    host.run(|| {
        for r in nftnl::list_rules(TABLE)? {
            if let Some(rest) = r.comment.strip_prefix("capsa:") {
                if let Some((owner, key)) = rest.split_once(' ') {
                    if let Some(p) = ports.iter().find(|p| p.conflicts(key)) {
                        return Err(Error::new(format!("published port {}: already published by container {owner} ({key})", p.key())));
                    }
                }
            }
        }
        commit_rules(Family::Ip, |b| {
            for p in ports {
                let tag = format!("capsa:{container} {}", p.key());
                for chain in ["prerouting", "output"] {
                    let dst = match p.host_ip {
                        Some(hip) => expr::daddr_is(hip),
                        None => expr::daddr_local(),
                    };
                    b.add_rule(chain, vec![dst, expr::dport(p.proto.number(), p.host_port), expr::dnat(ip, p.container_port)], &tag);
                }
            }
        })?;
        let Some(ip6) = ip6 else { return Ok(()) };
        let all: Vec<&PortMap> = ports.iter().filter(|p| p.host_ip.is_none()).collect();
        if all.is_empty() {
            return Ok(());
        }
        commit_rules(Family::Ip6, |b| {
            for p in &all {
                let tag = format!("capsa:{container} {}", p.key());
                let port = || expr::dport(p.proto.number(), p.host_port);
                // fib daddr type local tcp dport P dnat ip6 to [IP6]:C
                b.add_rule("prerouting", vec![expr::daddr_local(), port(), expr::dnat6(ip6, p.container_port)], &tag);
                // ip6 daddr != ::1 fib daddr type local ... (no route_localnet for IPv6)
                b.add_rule(
                    "output",
                    vec![expr::daddr6_ne(Ipv6Addr::LOCALHOST), expr::daddr_local(), port(), expr::dnat6(ip6, p.container_port)],
                    &tag,
                );
            }
        })
    })
}

/// Removes every rule of a container (both tables); none is fine.
pub fn unpublish(host: &Ns, container: &str) -> Result<()> {
    let prefix = format!("capsa:{container} ");
    host.run(|| {
        // Both tables listed before either is changed: a netfilter socket closed after a
        // batch of deletes waits (see nftnl's Batch::close_later).
        let (ip, ip6) = (nftnl::list_rules_of(Family::Ip, TABLE)?, nftnl::list_rules_of(Family::Ip6, TABLE)?);
        let mine = |c: &str| c.starts_with(&prefix);
        let r = delete(Family::Ip, ip, mine);
        r.and(delete(Family::Ip6, ip6, mine))
    })
}

fn delete_where(family: Family, f: impl Fn(&str) -> bool) -> Result<()> {
    delete(family, nftnl::list_rules_of(family, TABLE)?, f)
}

/// Deletes the rules of `rules` (listed from table `FAMILY capsa`) whose comment `f` takes.
fn delete(family: Family, rules: Vec<nftnl::Rule>, f: impl Fn(&str) -> bool) -> Result<()> {
    let mut b = Batch::of(family, TABLE);
    for r in rules {
        if f(&r.comment) {
            b.del_rule(&r.chain, r.handle);
        }
    }
    b.commit()
}

/// Removes capsa's tables altogether (their rules and chains), if there are any.
pub fn remove_table(host: &Ns) -> Result<()> {
    host.run(|| {
        let mut r = Ok(());
        for family in [Family::Ip, Family::Ip6] {
            let mut b = Batch::of(family, TABLE);
            b.del_table();
            r = r.and(match b.commit() {
                Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
                r => r,
            });
        }
        r
    })
}

fn lock(dir: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::os(format!("create {}", dir.display()), e))?;
    let p = dir.join("firewall.lock");
    let f = std::fs::File::options().create(true).append(true).open(&p).map_err(|e| Error::os(format!("open {}", p.display()), e))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::from(e).context(format!("lock {}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_maps_parse_and_refuse() {
        let p: PortMap = "8080:80".parse().unwrap();
        assert_eq!(p, PortMap { host_ip: None, host_port: 8080, container_port: 80, proto: Proto::Tcp });
        let p: PortMap = "127.0.0.1:53:5353/udp".parse().unwrap();
        assert_eq!(p, PortMap { host_ip: Some(Ipv4Addr::LOCALHOST), host_port: 53, container_port: 5353, proto: Proto::Udp });
        for (bad, why) in [
            ("80:0", "container port"),
            ("x:80", "host port"),
            ("80:80/sctp", "protocol"),
            ("1.2.3:80:80", "host address"),
            ("80", "not implemented"),
        ] {
            let e = bad.parse::<PortMap>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains(why), "{bad}: {e}");
        }
        let any: PortMap = "80:80".parse().unwrap();
        assert!(any.conflicts("tcp/10.0.0.1:80"));
        assert!(!any.conflicts("udp/*:80"));
        assert!(!any.conflicts("tcp/*:81"));
        let one: PortMap = "10.0.0.1:80:80".parse().unwrap();
        assert!(one.conflicts("tcp/*:80"));
        assert!(!one.conflicts("tcp/10.0.0.2:80"));
    }
}

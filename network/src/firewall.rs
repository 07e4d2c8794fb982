//! NAT on nftables, in capsa's own table `ip capsa`: masquerade out of each network's subnet
//! and DNAT for published ports. Every rule carries a comment tag, `capsa-net:NAME` for a
//! network's and `capsa:ID PROTO/HOSTIP:PORT` for a container's port, so teardown deletes
//! exactly the rules of one container or network, found by tag (also after a crash).
//!
//! For now this drives the `nft` binary (one `nft -f -` batch per change, atomic in the
//! kernel); the issue allows that only below 1 ms per container, which it is not (see the
//! figures in the closing note): nf_tables over netlink directly is the next step.
//!
//! Chains, all NAT, in table `ip capsa`:
//! - `prerouting` (dstnat): `fib daddr type local` + port → DNAT, for traffic from other
//!   hosts and from containers (hairpin);
//! - `output` (dstnat): the same for the host's own connections (127.0.0.1 and its addresses);
//! - `postrouting` (srcnat): masquerade from the subnet to anywhere but the bridge; and
//!   masquerade of DNATed connections into the bridge from 127.0.0.0/8 (the container cannot
//!   answer 127.0.0.1) or from the subnet itself (hairpin: the answer must come back through
//!   the host to be un-DNATed).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::ipam::Network;
use crate::netns::Ns;

const TABLE: &str = "ip capsa";

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

fn nft(script: &str) -> Result<String> {
    let mut c = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::os("run nft", e))?;
    if let Some(mut i) = c.stdin.take() {
        i.write_all(script.as_bytes()).map_err(|e| Error::os("write to nft", e))?;
    }
    let out = c.wait_with_output().map_err(|e| Error::os("wait for nft", e))?;
    if !out.status.success() {
        return Err(Error::new(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nft_args(args: &[&str]) -> Result<Option<String>> {
    let out = Command::new("nft").args(args).output().map_err(|e| Error::os("run nft", e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(Error::new(format!("nft {}: {}", args.join(" "), err.trim())));
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

const BASE: &str = "add table ip capsa
add chain ip capsa prerouting { type nat hook prerouting priority dstnat; policy accept; }
add chain ip capsa output { type nat hook output priority -100; policy accept; }
add chain ip capsa postrouting { type nat hook postrouting priority srcnat; policy accept; }
";

/// A rule of our table: chain, handle, comment.
struct Rule {
    chain: String,
    handle: u64,
    comment: String,
}

fn rules() -> Result<Vec<Rule>> {
    let Some(out) = nft_args(&["-j", "list", "table", "ip", "capsa"])? else { return Ok(Vec::new()) };
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error::new(format!("nft -j list table: bad JSON: {e}")))?;
    let mut rules = Vec::new();
    for item in v.get("nftables").and_then(|n| n.as_array()).into_iter().flatten() {
        if let Some(r) = item.get("rule") {
            if let (Some(chain), Some(handle)) = (r.get("chain").and_then(|c| c.as_str()), r.get("handle").and_then(|h| h.as_u64())) {
                let comment = r.get("comment").and_then(|c| c.as_str()).unwrap_or("").to_string();
                rules.push(Rule { chain: chain.to_string(), handle, comment });
            }
        }
    }
    Ok(rules)
}

/// Adds a network's masquerade rules (once: a network that has them is left alone).
pub fn add_network(host: &Ns, net: &Network) -> Result<()> {
    let tag = format!("capsa-net:{}", net.name);
    host.run(|| {
        if rules()?.iter().any(|r| r.comment == tag) {
            return Ok(());
        }
        let (sn, br) = (net.subnet, &net.bridge);
        nft(&format!(
            "{BASE}add rule {TABLE} postrouting ip saddr {sn} oifname != \"{br}\" masquerade comment \"{tag}\"
add rule {TABLE} postrouting oifname \"{br}\" ct status dnat ip saddr {{ 127.0.0.0/8, {sn} }} masquerade comment \"{tag}\"
"
        ))
        .map(|_| ())
    })
}

/// Removes a network's rules.
pub fn remove_network(host: &Ns, net: &Network) -> Result<()> {
    let tag = format!("capsa-net:{}", net.name);
    host.run(|| delete_where(|c| c == tag))
}

/// Publishes a container's ports: refused, before anything is added, if a port is published
/// already (by any container). The check and the add are one step under an flock, so two
/// containers asking for one port at once cannot both get it.
pub fn publish(host: &Ns, lock_dir: &std::path::Path, container: &str, ip: Ipv4Addr, ports: &[PortMap]) -> Result<()> {
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
        for r in rules()? {
            if let Some(rest) = r.comment.strip_prefix("capsa:") {
                if let Some((owner, key)) = rest.split_once(' ') {
                    if let Some(p) = ports.iter().find(|p| p.conflicts(key)) {
                        return Err(Error::new(format!("published port {}: already published by container {owner} ({key})", p.key())));
                    }
                }
            }
        }
        let mut s = String::from(BASE);
        for p in ports {
            let tag = format!("capsa:{container} {}", p.key());
            let (proto, hp, cp) = (p.proto.as_str(), p.host_port, p.container_port);
            let dst = match p.host_ip {
                Some(hip) => format!("ip daddr {hip}"),
                None => "fib daddr type local".to_string(),
            };
            for chain in ["prerouting", "output"] {
                s.push_str(&format!("add rule {TABLE} {chain} {dst} {proto} dport {hp} dnat to {ip}:{cp} comment \"{tag}\"\n"));
            }
        }
        nft(&s).map(|_| ())
    })
}

/// Removes every rule of a container; none is fine.
pub fn unpublish(host: &Ns, container: &str) -> Result<()> {
    let prefix = format!("capsa:{container} ");
    host.run(|| delete_where(|c| c.starts_with(&prefix)))
}

fn delete_where(f: impl Fn(&str) -> bool) -> Result<()> {
    let mut s = String::new();
    for r in rules()? {
        if f(&r.comment) {
            s.push_str(&format!("delete rule {TABLE} {} handle {}\n", r.chain, r.handle));
        }
    }
    if s.is_empty() {
        return Ok(());
    }
    nft(&s).map(|_| ())
}

/// Removes capsa's table altogether (its rules and chains), if there is one.
pub fn remove_table(host: &Ns) -> Result<()> {
    host.run(|| nft_args(&["delete", "table", "ip", "capsa"]).map(|_| ()))
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

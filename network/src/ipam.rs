//! IPAM: networks (subnet, gateway, bridge) and the address each container leases, in the
//! store's SQLite database (`capsa.db`, the connection capsa-image opens).
//!
//! Every function takes the caller's connection or transaction; a caller that writes opens
//! the transaction with `BEGIN IMMEDIATE` (rusqlite's `TransactionBehavior::Immediate`), so
//! the writer lock is taken up front and two processes allocating at once are serialised by
//! SQLite (busy_timeout makes the second wait), never given the same address: the primary key
//! (network, ip) would refuse a second lease of an address in any case.
//!
//! The tables (`networks`, `leases`) are part of the store's schema: capsa-image's db.rs makes
//! them in its migration 3, so one database and one schema version hold images, containers
//! and networks.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};

/// An IPv4 subnet, `a.b.c.d/len` with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }
    pub fn overlaps(self, o: Subnet) -> bool {
        let m = self.mask() & o.mask();
        u32::from(self.addr) & m == u32::from(o.addr) & m
    }
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    /// The first usable address (docker's default gateway).
    pub fn first(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }
}

impl FromStr for Subnet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Subnet> {
        let bad = |why: &str| Error::new(format!("subnet {s:?}: {why}"));
        let (a, p) = s.split_once('/').ok_or_else(|| bad("expected ADDRESS/PREFIX, as 10.88.0.0/16"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("prefix length is not a number"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("prefix length must be between 8 and 30"));
        }
        let sn = Subnet { addr, prefix };
        // Addresses that are never a bridge's: "this network", loopback (lo answers for all
        // of it), link-local, multicast and reserved.
        for (net, len, what) in
            [(0, 8, "\"this network\""), (127, 8, "loopback"), (169, 16, "link-local"), (224, 3, "multicast or reserved")]
        {
            let special = Subnet { addr: Ipv4Addr::new(net, if net == 169 { 254 } else { 0 }, 0, 0), prefix: len };
            if sn.overlaps(special) {
                return Err(bad(&format!("overlaps the {what} range {special}")));
            }
        }
        if u32::from(addr) & !sn.mask() != 0 {
            return Err(bad(&format!(
                "host bits are set (the network address is {}/{prefix})",
                Ipv4Addr::from(u32::from(addr) & sn.mask())
            )));
        }
        Ok(sn)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv6 subnet, `a:b::/len` with no host bits set (`network create --ipv6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet6 {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl Subnet6 {
    fn mask(self) -> u128 {
        if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - self.prefix)
        }
    }
    pub fn contains(self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.addr)
    }
    pub fn overlaps(self, o: Subnet6) -> bool {
        let m = self.mask() & o.mask();
        u128::from(self.addr) & m == u128::from(o.addr) & m
    }
    /// The last address of the subnet.
    pub fn last(self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) | !self.mask())
    }
    /// The first address after the subnet-router anycast one (docker's default gateway).
    pub fn first(self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) + 1)
    }
}

impl FromStr for Subnet6 {
    type Err = Error;
    fn from_str(s: &str) -> Result<Subnet6> {
        let bad = |why: &str| Error::new(format!("subnet {s:?}: {why}"));
        let (a, p) = s.split_once('/').ok_or_else(|| bad("expected ADDRESS/PREFIX, as fd00:1::/64"))?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad("not an IPv6 address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("prefix length is not a number"))?;
        // At least 4 addresses (the subnet-router anycast one, the gateway, two more).
        if !(8..=126).contains(&prefix) {
            return Err(bad("prefix length must be between 8 and 126"));
        }
        let sn = Subnet6 { addr, prefix };
        // Addresses that are never a bridge's: unspecified and loopback (::/8 holds both,
        // and the IPv4-compatible/mapped forms), link-local (the kernel's own on every
        // link), multicast.
        for (net, len, what) in [
            (Ipv6Addr::UNSPECIFIED, 8, "unspecified, loopback and IPv4-mapped"),
            (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
            (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
        ] {
            let special = Subnet6 { addr: net, prefix: len };
            if sn.overlaps(special) {
                return Err(bad(&format!("overlaps the {what} range {special}")));
            }
        }
        if u128::from(addr) & !sn.mask() != 0 {
            return Err(bad(&format!(
                "host bits are set (the network address is {}/{prefix})",
                Ipv6Addr::from(u128::from(addr) & sn.mask())
            )));
        }
        Ok(sn)
    }
}

impl fmt::Display for Subnet6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    /// docker's network id: 64 hex digits.
    pub id: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    /// The IPv6 subnet and gateway (`--ipv6`; None: IPv4 only).
    pub v6: Option<(Subnet6, Ipv6Addr)>,
    /// No masquerade and no forwarding to or from other links (docker's `--internal`).
    pub internal: bool,
    /// Labels, a JSON object.
    pub labels: String,
    /// RFC 3339, as the caller wrote it.
    pub created: String,
}

const NET_COLS: &str = "name, id, bridge, subnet, prefix, gateway, internal, labels, created, subnet6, gateway6";

/// A column that must hold an IPv6 subnet or address, read back.
fn col6<T: FromStr>(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<T>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(s) => {
            s.parse().map(Some).map_err(|_| rusqlite::Error::InvalidColumnType(i, format!("IPv6 value {s:?}"), rusqlite::types::Type::Text))
        }
    }
}

fn row_network(r: &rusqlite::Row) -> rusqlite::Result<Network> {
    Ok(Network {
        name: r.get(0)?,
        id: r.get(1)?,
        bridge: r.get(2)?,
        subnet: Subnet { addr: Ipv4Addr::from(r.get::<_, u32>(3)?), prefix: r.get(4)? },
        gateway: Ipv4Addr::from(r.get::<_, u32>(5)?),
        internal: r.get::<_, i64>(6)? != 0,
        labels: r.get(7)?,
        created: r.get(8)?,
        v6: match (col6::<Subnet6>(r, 9)?, col6::<Ipv6Addr>(r, 10)?) {
            (Some(s), Some(g)) => Some((s, g)),
            _ => None,
        },
    })
}

/// What [`create_network`] records.
#[derive(Clone, Debug, Default)]
pub struct NewNetwork<'a> {
    pub name: &'a str,
    /// Empty: a random one.
    pub id: &'a str,
    pub bridge: &'a str,
    pub subnet: Option<Subnet>,
    /// None: the subnet's first address.
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 too (docker's `--ipv6`): this subnet, this gateway (None: the subnet's first
    /// address after the anycast one).
    pub subnet6: Option<Subnet6>,
    pub gateway6: Option<Ipv6Addr>,
    pub internal: bool,
    /// A JSON object; empty: `{}`.
    pub labels: &'a str,
    pub created: &'a str,
}

/// A random id as docker's: 64 hex digits.
pub fn random_id() -> String {
    let mut b = [0u8; 32];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Unreachable on Linux >= 3.17 once booted; the time and pid are unique enough here.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        return format!("{:032x}{:032x}", t, u128::from(std::process::id()));
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Records a network; its name, bridge and subnet must be new, its subnet overlapping no other
/// network's; the gateway (default: the subnet's first address) must be inside the subnet.
pub fn create_network(conn: &Connection, n: &NewNetwork) -> Result<Network> {
    let (name, bridge) = (n.name, n.bridge);
    let subnet = n.subnet.ok_or_else(|| Error::new(format!("network {name}: no subnet")))?;
    let gateway = n.gateway.unwrap_or(subnet.first());
    if !subnet.contains(gateway) || gateway == subnet.addr || gateway == subnet.broadcast() {
        return Err(Error::new(format!("gateway {gateway}: not a host address of subnet {subnet}")));
    }
    let v6 = match n.subnet6 {
        Some(sn6) => {
            let gw6 = n.gateway6.unwrap_or(sn6.first());
            if !sn6.contains(gw6) || gw6 == sn6.addr {
                return Err(Error::new(format!("gateway {gw6}: not a host address of subnet {sn6}")));
            }
            Some((sn6, gw6))
        }
        None if n.gateway6.is_some() => return Err(Error::new(format!("network {name}: an IPv6 gateway needs an IPv6 subnet"))),
        None => None,
    };
    if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ', ':']) {
        return Err(Error::new(format!("bridge name {bridge:?}: must be 1 to 15 characters, no '/', ':' or space")));
    }
    for n in networks(conn)? {
        if n.name == name {
            return Err(Error::new(format!("network {name}: already exists")));
        }
        if n.bridge == bridge {
            return Err(Error::new(format!("bridge {bridge}: already used by network {}", n.name)));
        }
        if n.subnet.overlaps(subnet) {
            return Err(Error::new(format!("subnet {subnet}: overlaps network {} ({})", n.name, n.subnet)));
        }
        if let (Some((mine, _)), Some((theirs, _))) = (v6, n.v6) {
            if mine.overlaps(theirs) {
                return Err(Error::new(format!("subnet {mine}: overlaps network {} ({theirs})", n.name)));
            }
        }
    }
    let id = if n.id.is_empty() { random_id() } else { n.id.to_string() };
    let labels = if n.labels.is_empty() { "{}" } else { n.labels };
    conn.execute(
        &format!("INSERT INTO networks ({NET_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
        params![
            name,
            id,
            bridge,
            u32::from(subnet.addr),
            subnet.prefix,
            u32::from(gateway),
            n.internal as i64,
            labels,
            n.created,
            v6.map(|(s, _)| s.to_string()),
            v6.map(|(_, g)| g.to_string())
        ],
    )?;
    Ok(Network {
        name: name.to_string(),
        id,
        bridge: bridge.to_string(),
        subnet,
        gateway,
        v6,
        internal: n.internal,
        labels: labels.to_string(),
        created: n.created.to_string(),
    })
}

pub fn networks(conn: &Connection) -> Result<Vec<Network>> {
    let mut st = conn.prepare(&format!("SELECT {NET_COLS} FROM networks ORDER BY name"))?;
    let v = st.query_map([], row_network)?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(v)
}

pub fn network(conn: &Connection, name: &str) -> Result<Option<Network>> {
    Ok(conn.query_row(&format!("SELECT {NET_COLS} FROM networks WHERE name = ?1"), [name], row_network).optional()?)
}

/// Forgets a network; one with leases left is refused.
pub fn remove_network(conn: &Connection, name: &str) -> Result<()> {
    let n: i64 = conn.query_row("SELECT count(*) FROM leases WHERE network = ?1", [name], |r| r.get(0))?;
    if n > 0 {
        return Err(Error::new(format!("network {name}: {n} container(s) still have addresses on it")));
    }
    if conn.execute("DELETE FROM networks WHERE name = ?1", [name])? == 0 {
        return Err(Error::new(format!("network {name}: no such network")));
    }
    Ok(())
}

/// Leases the lowest free host address of `network` to `container` (the network address,
/// the gateway and the broadcast address are never leased) and, on a network with IPv6, the
/// lowest free IPv6 address too, in the same row ([`lease6`] reads it). A container has at
/// most one lease per network. Call inside a `BEGIN IMMEDIATE` transaction.
pub fn allocate(conn: &Connection, network: &str, container: &str) -> Result<Ipv4Addr> {
    let net = self::network(conn, network)?.ok_or_else(|| Error::new(format!("network {network}: no such network")))?;
    if let Some(ip) = lease(conn, network, container)? {
        return Err(Error::new(format!("container {container}: already has address {ip} on network {network}")));
    }
    let mut used: Vec<u32> = {
        let mut st = conn.prepare("SELECT ip FROM leases WHERE network = ?1 ORDER BY ip")?;
        let v = st.query_map([network], |r| r.get::<_, u32>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        v
    };
    used.push(u32::from(net.gateway));
    used.sort_unstable();
    let (lo, hi) = (u32::from(net.subnet.addr) + 1, u32::from(net.subnet.broadcast()));
    let mut cand = lo;
    for u in used {
        if u == cand {
            cand += 1;
        } else if u > cand {
            break;
        }
    }
    if cand >= hi {
        return Err(Error::new(format!("network {network}: no free address left in {}", net.subnet)));
    }
    let ip6 = match net.v6 {
        Some((sn6, gw6)) => Some(free6(conn, network, sn6, gw6)?.to_string()),
        None => None,
    };
    conn.execute("INSERT INTO leases (network, ip, container, ip6) VALUES (?1, ?2, ?3, ?4)", params![network, cand, container, ip6])?;
    Ok(Ipv4Addr::from(cand))
}

/// The lowest IPv6 address of `sn6` leased to no one: not the subnet-router anycast address
/// (the subnet's own), not the gateway.
fn free6(conn: &Connection, network: &str, sn6: Subnet6, gw6: Ipv6Addr) -> Result<Ipv6Addr> {
    let mut used: Vec<u128> = leases6_on(conn, network)?.into_iter().map(|(ip, _)| u128::from(ip)).collect();
    used.push(u128::from(gw6));
    used.sort_unstable();
    let mut cand = u128::from(sn6.addr) + 1;
    for u in used {
        if u == cand {
            cand += 1;
        } else if u > cand {
            break;
        }
    }
    if cand > u128::from(sn6.last()) {
        return Err(Error::new(format!("network {network}: no free IPv6 address left in {sn6}")));
    }
    Ok(Ipv6Addr::from(cand))
}

/// The IPv6 address `container` leases on `network` (None: none, or an IPv4-only network).
pub fn lease6(conn: &Connection, network: &str, container: &str) -> Result<Option<Ipv6Addr>> {
    let v: Option<Option<String>> =
        conn.query_row("SELECT ip6 FROM leases WHERE network = ?1 AND container = ?2", [network, container], |r| r.get(0)).optional()?;
    v.flatten().map(|s| s.parse().map_err(|_| Error::new(format!("lease of {container} on {network}: bad IPv6 address {s:?}")))).transpose()
}

/// Every IPv6 lease on a network: (address, container).
pub fn leases6_on(conn: &Connection, network: &str) -> Result<Vec<(Ipv6Addr, String)>> {
    let mut st = conn.prepare("SELECT ip6, container FROM leases WHERE network = ?1 AND ip6 IS NOT NULL")?;
    let v = st.query_map([network], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
    v.into_iter()
        .map(|(s, c)| s.parse().map(|ip| (ip, c)).map_err(|_| Error::new(format!("lease on {network}: bad IPv6 address {s:?}"))))
        .collect()
}

/// Leases a given address (docker's `--ip`): refused if outside the subnet, the gateway, or
/// leased already.
pub fn allocate_exact(conn: &Connection, network: &str, container: &str, ip: Ipv4Addr) -> Result<()> {
    let net = self::network(conn, network)?.ok_or_else(|| Error::new(format!("network {network}: no such network")))?;
    if !net.subnet.contains(ip) || ip == net.subnet.addr || ip == net.subnet.broadcast() || ip == net.gateway {
        return Err(Error::new(format!("address {ip}: not a free host address of network {network} ({})", net.subnet)));
    }
    let holder: Option<String> = conn
        .query_row("SELECT container FROM leases WHERE network = ?1 AND ip = ?2", params![network, u32::from(ip)], |r| r.get(0))
        .optional()?;
    if let Some(h) = holder {
        return Err(Error::new(format!("address {ip}: already in use by container {h} on network {network}")));
    }
    let ip6 = match net.v6 {
        Some((sn6, gw6)) => Some(free6(conn, network, sn6, gw6)?.to_string()),
        None => None,
    };
    conn.execute(
        "INSERT INTO leases (network, ip, container, ip6) VALUES (?1, ?2, ?3, ?4)",
        params![network, u32::from(ip), container, ip6],
    )?;
    Ok(())
}

/// The address `container` leases on `network`.
pub fn lease(conn: &Connection, network: &str, container: &str) -> Result<Option<Ipv4Addr>> {
    Ok(conn
        .query_row("SELECT ip FROM leases WHERE network = ?1 AND container = ?2", [network, container], |r| r.get::<_, u32>(0))
        .optional()?
        .map(Ipv4Addr::from))
}

/// Every lease of a container: (network, address).
pub fn leases_of(conn: &Connection, container: &str) -> Result<Vec<(String, Ipv4Addr)>> {
    let mut st = conn.prepare("SELECT network, ip FROM leases WHERE container = ?1 ORDER BY network")?;
    let v = st
        .query_map([container], |r| Ok((r.get::<_, String>(0)?, Ipv4Addr::from(r.get::<_, u32>(1)?))))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(v)
}

/// Every lease on a network: (address, container).
pub fn leases_on(conn: &Connection, network: &str) -> Result<Vec<(Ipv4Addr, String)>> {
    let mut st = conn.prepare("SELECT ip, container FROM leases WHERE network = ?1 ORDER BY ip")?;
    let v = st
        .query_map([network], |r| Ok((Ipv4Addr::from(r.get::<_, u32>(0)?), r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(v)
}

/// Releases every lease of a container; returns how many there were.
pub fn release(conn: &Connection, container: &str) -> Result<usize> {
    Ok(conn.execute("DELETE FROM leases WHERE container = ?1", [container])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_refuse() {
        let s: Subnet = "10.88.0.0/16".parse().unwrap();
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 88, 255, 255));
        assert!(s.contains(Ipv4Addr::new(10, 88, 3, 4)));
        assert!(!s.contains(Ipv4Addr::new(10, 89, 0, 1)));
        assert!(s.overlaps("10.88.5.0/24".parse().unwrap()));
        assert!(!s.overlaps("10.89.0.0/24".parse().unwrap()));
        for bad in [
            "10.88.0.1/16",
            "10.88.0.0",
            "10.88.0.0/31",
            "x/16",
            "10.88.0.0/x",
            "127.0.0.0/8",
            "127.1.0.0/16",
            "0.0.0.0/8",
            "169.254.0.0/16",
            "224.1.0.0/16",
            "240.0.0.0/8",
            "96.0.0.0/3",
        ] {
            let e = bad.parse::<Subnet>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn leases_skip_gateway_and_run_out() {
        let dir = std::env::temp_dir().join(format!("capsa-ipam-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        drop(capsa_image::db::Db::open(&dir.join("capsa.db")).unwrap());
        let c = Connection::open(dir.join("capsa.db")).unwrap();
        let new = |name, bridge, subnet: &str| NewNetwork { name, bridge, subnet: Some(subnet.parse().unwrap()), ..Default::default() };
        let n = create_network(&c, &new("n", "br-n", "10.1.0.0/30")).unwrap();
        assert_eq!((n.id.len(), n.gateway), (64, Ipv4Addr::new(10, 1, 0, 1)));
        assert_eq!(allocate(&c, "n", "a").unwrap(), Ipv4Addr::new(10, 1, 0, 2));
        let e = allocate(&c, "n", "b").unwrap_err().to_string();
        assert!(e.contains("no free address"), "{e}");
        let e = allocate(&c, "n", "a").unwrap_err().to_string();
        assert!(e.contains("already has address 10.1.0.2"), "{e}");
        assert_eq!(release(&c, "a").unwrap(), 1);
        assert_eq!(allocate(&c, "n", "b").unwrap(), Ipv4Addr::new(10, 1, 0, 2));
        let e = create_network(&c, &new("m", "br-m", "10.1.0.0/24")).unwrap_err().to_string();
        assert!(e.contains("overlaps network n"), "{e}");
        let e = remove_network(&c, "n").unwrap_err().to_string();
        assert!(e.contains("still have addresses"), "{e}");
        let e = allocate_exact(&c, "n", "c", Ipv4Addr::new(10, 1, 0, 2)).unwrap_err().to_string();
        assert!(e.contains("in use by container b"), "{e}");
        drop(c);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ipv6_subnets_and_leases() {
        let s: Subnet6 = "fd00:1::/64".parse().unwrap();
        assert_eq!((s.first(), s.last()), ("fd00:1::1".parse().unwrap(), "fd00:1::ffff:ffff:ffff:ffff".parse().unwrap()));
        assert!(s.overlaps("fd00:1::/48".parse().unwrap()) && !s.overlaps("fd00:2::/64".parse().unwrap()));
        for bad in
            ["fd00:1::1/64", "fd00::", "fd00::/7", "fd00::/127", "10.0.0.0/8", "fe80::/64", "ff02::/16", "::/8", "::ffff:0:0/96", "x/64"]
        {
            let e = bad.parse::<Subnet6>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        let dir = std::env::temp_dir().join(format!("capsa-ipam6-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        drop(capsa_image::db::Db::open(&dir.join("capsa.db")).unwrap());
        let c = Connection::open(dir.join("capsa.db")).unwrap();
        let new = |name, bridge, subnet: &str, subnet6: &str| NewNetwork {
            name,
            bridge,
            subnet: Some(subnet.parse().unwrap()),
            subnet6: Some(subnet6.parse().unwrap()),
            ..Default::default()
        };
        let n = create_network(&c, &new("n", "br-n", "10.1.0.0/24", "fd00:9::/126")).unwrap();
        assert_eq!(n.v6, Some(("fd00:9::/126".parse().unwrap(), "fd00:9::1".parse().unwrap())));
        assert_eq!(network(&c, "n").unwrap().unwrap(), n);
        allocate(&c, "n", "a").unwrap();
        allocate(&c, "n", "b").unwrap();
        assert_eq!(lease6(&c, "n", "a").unwrap(), Some("fd00:9::2".parse().unwrap()));
        assert_eq!(lease6(&c, "n", "b").unwrap(), Some("fd00:9::3".parse().unwrap()));
        // The IPv6 subnet is full: no lease at all (the IPv4 one is not taken either).
        let e = allocate(&c, "n", "c").unwrap_err().to_string();
        assert!(e.contains("no free IPv6 address left in fd00:9::/126"), "{e}");
        assert_eq!(lease(&c, "n", "c").unwrap(), None);
        // Released with the IPv4 lease; given again.
        release(&c, "a").unwrap();
        allocate(&c, "n", "c").unwrap();
        assert_eq!(lease6(&c, "n", "c").unwrap(), Some("fd00:9::2".parse().unwrap()));
        let e = create_network(&c, &new("m", "br-m", "10.2.0.0/24", "fd00:9::/64")).unwrap_err().to_string();
        assert!(e.contains("overlaps network n (fd00:9::/126)"), "{e}");
        let bad_gw = NewNetwork { gateway6: Some("fd00:8::1".parse().unwrap()), ..new("m", "br-m", "10.2.0.0/24", "fd00:7::/64") };
        let e = create_network(&c, &bad_gw).unwrap_err().to_string();
        assert!(e.contains("gateway fd00:8::1: not a host address of subnet fd00:7::/64"), "{e}");
        drop(c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

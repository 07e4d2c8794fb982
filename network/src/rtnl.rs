//! A small synchronous rtnetlink client over netlink-packet-route and netlink-sys: one socket,
//! one request at a time, each acknowledged before the next. The socket belongs to the
//! network namespace of the thread that opened it (see [`crate::netns::Ns::run`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{Error, Result};

pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

/// A link as the kernel reports it.
#[derive(Clone, Debug)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub mtu: u32,
    /// The bridge it is a port of.
    pub master: Option<u32>,
    pub kind: Option<String>,
    pub mac: Vec<u8>,
    /// IFLA_IFALIAS: capsa marks the bridges it makes with [`OWNED_ALIAS`].
    pub alias: Option<String>,
}

/// The alias of a bridge capsa made (and so may delete); a bridge without it is the user's.
pub const OWNED_ALIAS: &str = "capsa-network";

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| Error::os("open an rtnetlink socket", e))?;
        sock.bind_auto().map_err(|e| Error::os("bind the rtnetlink socket", e))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(|e| Error::os("connect the rtnetlink socket", e))?;
        sock.set_ext_ack(true).map_err(|e| Error::os("rtnetlink extended acks", e))?;
        Ok(Rtnl { sock, seq: 0 })
    }

    /// Sends one request and collects the answers until its ACK (or DONE for a dump).
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16, what: &str) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | flags;
        hdr.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0; req.header.length as usize];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(|e| Error::os(what, e))?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(|e| Error::os(what, e))?;
            for raw in messages(&data).map_err(|e| e.context(what))? {
                let m: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(raw).map_err(|e| Error::new(format!("{what}: bad netlink answer: {e}")))?;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(_) => return Err(Error::os(what, e.to_io())),
                    },
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(i) => out.push(i),
                    _ => {}
                }
            }
        }
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16, what: &str) -> Result<()> {
        self.request(msg, NLM_F_ACK | flags, what).map(|_| ())
    }

    /// The link named `name`, or None.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(m), NLM_F_ACK, &format!("look up link {name}")) {
            Ok(v) => Ok(v.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(l)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let v = self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP, "list links")?;
        Ok(v.into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(l)),
                _ => None,
            })
            .collect())
    }

    /// Makes a bridge (an existing link of that name is an error, EEXIST).
    pub fn add_bridge(&mut self, name: &str, mtu: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        if mtu != 0 {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL, &format!("create bridge {name}"))
    }

    /// Makes a veth pair: `host` here, a port of bridge `master` if given; `peer` made directly
    /// in the namespace `peer_ns` (so it never appears in ours under its final name).
    pub fn add_veth(
        &mut self,
        host: &str,
        master: Option<u32>,
        mtu: u32,
        peer: &str,
        peer_mac: Option<[u8; 6]>,
        peer_ns: &OwnedFd,
    ) -> Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        if let Some(mac) = peer_mac {
            p.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        p.attributes.push(LinkAttribute::NetNsFd(crate::netns::raw(peer_ns)));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(host.to_string()));
        if let Some(master) = master {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        if mtu != 0 {
            p.attributes.push(LinkAttribute::Mtu(mtu));
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth), LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p)))]));
        self.ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL, &format!("create veth pair {host} / {peer}"))
    }

    /// Turns hairpin mode on for a bridge port (a packet may leave by the port it came in:
    /// a container reaching its own published port through the host's address).
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(on)])),
        ]));
        self.ack(RouteNetlinkMessage::NewLink(m), 0, &format!("set hairpin mode on link {index}"))
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.ack(RouteNetlinkMessage::SetLink(m), 0, &format!("set link {index} up"))
    }

    pub fn set_down(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.change_mask = LinkFlags::Up;
        self.ack(RouteNetlinkMessage::SetLink(m), 0, &format!("set link {index} down"))
    }

    /// Sets a link's alias (IFLA_IFALIAS; the kernel takes it only on an existing link).
    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.ack(RouteNetlinkMessage::SetLink(m), 0, &format!("set the alias of link {index}"))
    }

    pub fn del_link(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.ack(RouteNetlinkMessage::DelLink(m), 0, &format!("delete link {index}"))
    }

    /// Adds `addr/prefix` to a link (EEXIST if it has it). An IPv6 address is usable at once
    /// (IFA_F_NODAD: no duplicate address detection, whose second or so of "tentative" would
    /// make a container's first connections fail; the addresses are ours to give, from IPAM).
    pub fn add_addr(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = family(addr);
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr));
        m.attributes.push(AddressAttribute::Address(addr));
        if addr.is_ipv6() {
            m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.ack(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL, &format!("add address {addr}/{prefix} to link {index}"))
    }

    /// The addresses of a link.
    pub fn addrs(&mut self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        let v = self.request(RouteNetlinkMessage::GetAddress(AddressMessage::default()), NLM_F_DUMP, "list addresses")?;
        Ok(v.into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => a.attributes.iter().find_map(|at| match at {
                    AddressAttribute::Local(ip) => Some((*ip, a.header.prefix_len)),
                    _ => None,
                }),
                _ => None,
            })
            .collect())
    }

    /// Adds the default route via `gw` on link `index`.
    pub fn add_default_route(&mut self, index: u32, gw: Ipv4Addr) -> Result<()> {
        self.add_route(Ipv4Addr::UNSPECIFIED.into(), 0, index, gw.into())
    }

    /// Adds the IPv6 default route via `gw` on link `index`.
    pub fn add_default_route6(&mut self, index: u32, gw: Ipv6Addr) -> Result<()> {
        self.add_route(Ipv6Addr::UNSPECIFIED.into(), 0, index, gw.into())
    }

    /// Removes `addr/prefix` from a link.
    pub fn del_addr(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = family(addr);
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr));
        self.ack(RouteNetlinkMessage::DelAddress(m), 0, &format!("remove address {addr}/{prefix} from link {index}"))
    }

    /// Adds a route to `dst/prefix` via `gw` on link `index` (both of one family).
    pub fn add_route(&mut self, dst: IpAddr, prefix: u8, index: u32, gw: IpAddr) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.destination_prefix_length = prefix;
        if prefix > 0 {
            m.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
        }
        m.header.address_family = family(dst);
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        m.attributes.push(RouteAttribute::Oif(index));
        self.ack(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL, &format!("add route to {dst}/{prefix} via {gw}"))
    }

    /// The IPv6 routes of the main table: (destination, prefix length).
    pub fn routes_v6(&mut self) -> Result<Vec<(Ipv6Addr, u8)>> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet6;
        let v = self.request(RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP, "list IPv6 routes")?;
        Ok(v.into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) if r.header.table == RouteHeader::RT_TABLE_MAIN => {
                    let dst = r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Destination(RouteAddress::Inet6(d)) => Some(*d),
                        _ => None,
                    });
                    Some((dst.unwrap_or(Ipv6Addr::UNSPECIFIED), r.header.destination_prefix_length))
                }
                _ => None,
            })
            .collect())
    }

    /// The IPv4 routes of the main table: (destination, prefix length, output link).
    pub fn routes_v4(&mut self) -> Result<Vec<(Ipv4Addr, u8, Option<u32>)>> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        let v = self.request(RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP, "list routes")?;
        Ok(v.into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) if r.header.table == RouteHeader::RT_TABLE_MAIN => {
                    let dst = r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
                        _ => None,
                    });
                    let oif = r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => Some(*i),
                        _ => None,
                    });
                    Some((dst.unwrap_or(Ipv4Addr::UNSPECIFIED), r.header.destination_prefix_length, oif))
                }
                _ => None,
            })
            .collect())
    }
}

/// The netlink messages of one datagram, each cut to its `nlmsg_len`. A length shorter than
/// the 16-byte header or running past the datagram is an error (a kernel never sends one;
/// trusting it would misparse or never reach the ACK), as are trailing bytes too short for a
/// header.
pub fn messages(data: &[u8]) -> Result<Vec<&[u8]>> {
    const HDR: usize = 16;
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let rest = &data[off..];
        if rest.len() < HDR {
            return Err(Error::new(format!("bad netlink answer: {} bytes left at offset {off}, less than a header", rest.len())));
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < HDR || len > rest.len() {
            return Err(Error::new(format!(
                "bad netlink answer: message length {len} at offset {off} (header 16, {} bytes left)",
                rest.len()
            )));
        }
        out.push(&rest[..len]);
        // NLMSG_ALIGN: messages start on 4-byte boundaries.
        off = off.saturating_add((len + 3) & !3);
    }
    Ok(out)
}

fn family(a: IpAddr) -> AddressFamily {
    match a {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn to_link(l: LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        up: l.header.flags.contains(LinkFlags::Up),
        mtu: 0,
        master: None,
        kind: None,
        mac: Vec::new(),
        alias: None,
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Address(a) => link.mac = a,
            LinkAttribute::Controller(c) => link.master = Some(c),
            LinkAttribute::IfAlias(a) => link.alias = Some(a),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(len: u32, extra: usize) -> Vec<u8> {
        let mut v = len.to_ne_bytes().to_vec();
        v.resize(16 + extra, 0);
        v
    }

    #[test]
    fn message_lengths_are_checked() {
        // Two messages: 20 bytes (padded to 20) and 16.
        let mut d = hdr(20, 4);
        d.extend(hdr(16, 0));
        let m = messages(&d).unwrap();
        assert_eq!(m.iter().map(|x| x.len()).collect::<Vec<_>>(), vec![20, 16]);
        // A 17-byte message is padded to 20 before the next.
        let mut d = hdr(17, 4);
        d.extend(hdr(16, 0));
        assert_eq!(messages(&d).unwrap().len(), 2);
        for (bad, why) in [
            (hdr(0, 0), "message length 0"),
            (hdr(15, 0), "message length 15"),
            (hdr(4096, 0), "message length 4096"),
            (vec![1, 0, 0], "less than a header"),
        ] {
            let e = messages(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let mut d = hdr(16, 0);
        d.extend([0u8; 8]);
        assert!(messages(&d).unwrap_err().to_string().contains("at offset 16"));
        assert!(messages(&[]).unwrap().is_empty());
    }
}

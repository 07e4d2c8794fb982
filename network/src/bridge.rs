//! The network's bridge in the host namespace, and a container's veth pair on it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::error::{Context, Error, Result};
use crate::ipam::Network;
use crate::netns::Ns;
use crate::rtnl::{self, Rtnl};

/// Makes the network's bridge if it is missing (gateway address, up), turns on IPv4
/// forwarding and lets 127.0.0.1 be routed to the bridge (route_localnet, as docker does, so
/// a published port answers on 127.0.0.1). On a network with IPv6 the bridge gets the IPv6
/// gateway address too and IPv6 forwarding is turned on (`net.ipv6.conf.all.forwarding`, as
/// docker does for an IPv6 network; IPv6 has no route_localnet: see [`crate::firewall`]).
/// A subnet (v4 or v6) that overlaps a route of the host that is not the bridge's is refused
/// before anything is made. An existing interface of that
/// name is used only if it is a bridge (docker's rule for a user-provided bridge); capsa
/// marks the bridges it makes ([`rtnl::OWNED_ALIAS`]) and [`remove`] deletes only those.
/// Returns the bridge's index.
pub fn ensure(host: &Ns, net: &Network, mtu: u32) -> Result<u32> {
    host.run(|| {
        let mut rt = Rtnl::open()?;
        let index = match rt.link(&net.bridge)? {
            Some(l) if l.kind.as_deref() == Some("bridge") => l.index,
            Some(l) => {
                return Err(Error::new(format!(
                    "network {}: interface {} exists and is not a bridge ({})",
                    net.name,
                    net.bridge,
                    l.kind.as_deref().unwrap_or("a device")
                )))
            }
            None => {
                for (dst, len, _) in rt.routes_v4()? {
                    // The default route (0.0.0.0/0) overlaps everything and is fine.
                    if len > 0 && net.subnet.overlaps(crate::ipam::Subnet { addr: dst, prefix: len }) {
                        return Err(Error::new(format!(
                            "network {}: subnet {} overlaps the host's route to {dst}/{len}",
                            net.name, net.subnet
                        )));
                    }
                }
                if let Some((sn6, _)) = net.v6 {
                    if let Some((dst, len)) = host_routes6(&mut rt)?.into_iter().find(|r| r.overlaps(sn6)).map(|r| (r.addr, r.prefix)) {
                        return Err(Error::new(format!("network {}: subnet {sn6} overlaps the host's route to {dst}/{len}", net.name)));
                    }
                }
                let made = match rt.add_bridge(&net.bridge, mtu) {
                    Ok(()) => true,
                    // Another process made it first.
                    Err(e) if e.errno() == Some(libc::EEXIST) => false,
                    Err(e) => return Err(e),
                };
                let l = rt.link(&net.bridge)?.ok_or_else(|| Error::new(format!("bridge {}: gone right after it was made", net.bridge)))?;
                if made {
                    if let Err(e) = rt.set_alias(l.index, rtnl::OWNED_ALIAS) {
                        let _ = rt.del_link(l.index);
                        return Err(e);
                    }
                }
                l.index
            }
        };
        let gw = IpAddr::V4(net.gateway);
        if !rt.addrs(index)?.iter().any(|(a, _)| *a == gw) {
            match rt.add_addr(index, gw, net.subnet.prefix) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some((sn6, gw6)) = net.v6 {
            let gw6 = IpAddr::V6(gw6);
            if !rt.addrs(index)?.iter().any(|(a, _)| *a == gw6) {
                match rt.add_addr(index, gw6, sn6.prefix) {
                    Ok(()) => {}
                    Err(e) if e.errno() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
            }
            sysctl("net/ipv6/conf/all/forwarding", "1")?;
        }
        // Router advertisements a container sends must not give the host a route or an
        // address (CVE-2020-13401's lesson; docker sets the same on its bridges).
        sysctl_v6(&format!("net/ipv6/conf/{}/accept_ra", net.bridge), "0")?;
        rt.set_up(index)?;
        sysctl("net/ipv4/ip_forward", "1")?;
        sysctl(&format!("net/ipv4/conf/{}/route_localnet", net.bridge), "1")?;
        Ok(index)
    })
}

/// The IPv6 routes of the main table a network's subnet must not overlap: all but the
/// default route, link-local (fe80::/64 on every link) and multicast ones.
pub fn host_routes6(rt: &mut Rtnl) -> Result<Vec<crate::ipam::Subnet6>> {
    let special = [
        crate::ipam::Subnet6 { addr: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), prefix: 10 },
        crate::ipam::Subnet6 { addr: Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), prefix: 8 },
    ];
    Ok(rt
        .routes_v6()?
        .into_iter()
        .filter(|(_, len)| *len > 0)
        .map(|(addr, prefix)| crate::ipam::Subnet6 { addr, prefix })
        .filter(|r| !special.iter().any(|s| s.overlaps(*r)))
        .collect())
}

/// Removes the network's bridge (and with it its address and routes) if capsa made it; a
/// user's bridge stays, without the gateway address capsa gave it. A missing one is fine.
pub fn remove(host: &Ns, net: &Network) -> Result<()> {
    host.run(|| {
        let mut rt = Rtnl::open()?;
        match rt.link(&net.bridge)? {
            Some(l) if l.alias.as_deref() == Some(rtnl::OWNED_ALIAS) => rt.del_link(l.index)?,
            // Made by a `network create` or `run` killed before it marked it: the name derived
            // from the network's id is capsa's, and the bridge is as it was just made (down,
            // unmarked, no address).
            Some(l)
                if l.kind.as_deref() == Some("bridge")
                    && l.alias.is_none()
                    && !l.up
                    && net.id.len() >= 12
                    && net.bridge == format!("br-{}", &net.id[..12])
                    && rt.addrs(l.index)?.is_empty() =>
            {
                rt.del_link(l.index)?
            }
            Some(l) if l.kind.as_deref() == Some("bridge") => {
                match rt.del_addr(l.index, IpAddr::V4(net.gateway), net.subnet.prefix) {
                    Err(e) if e.errno() != Some(libc::EADDRNOTAVAIL) => return Err(e),
                    _ => {}
                }
                if let Some((sn6, gw6)) = net.v6 {
                    match rt.del_addr(l.index, IpAddr::V6(gw6), sn6.prefix) {
                        Err(e) if e.errno() != Some(libc::EADDRNOTAVAIL) => return Err(e),
                        _ => {}
                    }
                }
                sysctl(&format!("net/ipv4/conf/{}/route_localnet", net.bridge), "0")?;
            }
            _ => {}
        }
        Ok(())
    })
}

/// The host end's name for a container's first network (its `eth0`): derived from the
/// container id alone, so that cleanup after a crash finds it (15 characters at most, the
/// kernel's limit).
pub fn veth_name(container: &str) -> String {
    // FNV-1a, 64 bits, shown as 11 hex digits (44 bits).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("veth{:011x}", h & 0xfff_ffff_ffff)
}

/// The host end's name for a network a container was connected to besides its first
/// (`eth1`, ...): derived from the container id and the network's name.
pub fn veth_name_on(container: &str, network: &str) -> String {
    veth_name(&format!("{container}/{network}"))
}

/// Puts a container on the bridge: a veth pair `veth` with the host end a hairpin port of the
/// bridge and the other end `ifname` in the container's namespace (MAC [`mac_of`] the
/// address), with `ip/prefix` (and `ip6` on a network with IPv6), `lo` and `ifname` up and,
/// if `default_route`, the default routes via the gateways.
#[allow(clippy::too_many_arguments)]
pub fn attach(
    host: &Ns,
    container_ns: &Path,
    net: &Network,
    bridge_index: u32,
    veth: &str,
    ifname: &str,
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    mtu: u32,
    default_route: bool,
) -> Result<()> {
    let cns = Ns::Path(container_ns.to_path_buf());
    let cfd = cns.open()?;
    host.run(|| {
        let mut rt = Rtnl::open()?;
        match rt.add_veth(veth, Some(bridge_index), mtu, ifname, Some(mac_of(ip)), &cfd) {
            // A pair of this container's previous run, whose namespace the kernel has not
            // destroyed yet (or someone else keeps alive; see container::detach): its name is
            // ours (derived from the container id), so it goes now.
            Err(e) if e.errno() == Some(libc::EEXIST) => {
                if let Some(old) = rt.link(veth)? {
                    match rt.del_link(old.index) {
                        Err(e) if e.errno() != Some(libc::ENODEV) => return Err(e),
                        _ => {}
                    }
                }
                rt.add_veth(veth, Some(bridge_index), mtu, ifname, Some(mac_of(ip)), &cfd)?;
            }
            r => r?,
        }
        let l = rt.link(veth)?.ok_or_else(|| Error::new(format!("veth {veth}: gone right after it was made")))?;
        rt.set_hairpin(l.index, true)?;
        rt.set_up(l.index)
    })?;
    cns.run(|| {
        // Addresses and routes are static: another container's router advertisements must
        // not add routes or addresses (a rogue default route, a prefix claimed on-link).
        for conf in ["all", "default", ifname] {
            sysctl_v6(&format!("net/ipv6/conf/{conf}/accept_ra"), "0")?;
        }
        let mut rt = Rtnl::open()?;
        let lo = rt.link("lo")?.ok_or_else(|| Error::new("no lo in the container's network namespace"))?;
        rt.set_up(lo.index)?;
        let eth = rt.link(ifname)?.ok_or_else(|| Error::new(format!("{ifname} missing in the container's network namespace")))?;
        rt.add_addr(eth.index, IpAddr::V4(ip), net.subnet.prefix)?;
        let v6 = match (ip6, net.v6) {
            (Some(ip6), Some((sn6, gw6))) => {
                rt.add_addr(eth.index, IpAddr::V6(ip6), sn6.prefix)?;
                Some(gw6)
            }
            (Some(ip6), None) => return Err(Error::new(format!("address {ip6}: network {} has no IPv6", net.name))),
            _ => None,
        };
        rt.set_up(eth.index)?;
        if default_route {
            rt.add_default_route(eth.index, net.gateway)?;
            if let Some(gw6) = v6 {
                rt.add_default_route6(eth.index, gw6)?;
            }
        }
        Ok(())
    })
    .with_ctx(|| format!("set up {ifname} of network {}", net.name))
}

/// The container's MAC address, derived from its IPv4 address as docker did before 26.0
/// (02:42 and the four bytes of the address: locally administered, unicast, and the same for
/// the same address, so neighbours' ARP caches stay right across a restart).
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Removes a container's first veth pair (both ends go with the host end); a missing one is
/// fine.
pub fn detach(host: &Ns, container: &str) -> Result<()> {
    del_link(host, &veth_name(container))
}

/// Sets the link `name` of the host namespace down; a missing one is fine.
pub fn set_down(host: &Ns, name: &str) -> Result<()> {
    host.run(|| {
        let mut rt = Rtnl::open()?;
        if let Some(l) = rt.link(name)? {
            match rt.set_down(l.index) {
                Err(e) if e.errno() != Some(libc::ENODEV) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    })
}

/// Removes the link `name` of the host namespace; a missing one is fine.
pub fn del_link(host: &Ns, name: &str) -> Result<()> {
    host.run(|| {
        let mut rt = Rtnl::open()?;
        if let Some(l) = rt.link(name)? {
            match rt.del_link(l.index) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(libc::ENODEV) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
}

/// [`sysctl`] of an IPv6 setting: nothing to do on a kernel without IPv6.
fn sysctl_v6(key: &str, value: &str) -> Result<()> {
    if !Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    sysctl(key, value)
}

/// Writes a sysctl of the calling thread's network namespace.
pub fn sysctl(key: &str, value: &str) -> Result<()> {
    let p = Path::new("/proc/sys").join(key);
    if std::fs::read_to_string(&p).map(|v| v.trim() == value).unwrap_or(false) {
        return Ok(());
    }
    std::fs::write(&p, value).with_ctx(|| format!("write {} = {value}", p.display()))
}

//! capsa in a network made by capsa-network: the container joins the namespace bind-mounted
//! by the crate through `linux.namespaces[network].path`, sees its eth0 with the leased
//! address, and a busybox httpd in it answers on the published port from the (test's own)
//! host namespace on 127.0.0.1 and on the gateway address. Everything happens in network
//! namespaces the test makes; at the end nothing of it is left.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use capsa_integration::*;
use capsa_network::container::{self as netctr, Setup};
use capsa_network::netns::{self, Ns};
use capsa_network::rtnl::Rtnl;
use capsa_network::{bridge, firewall, ipam};

fn get(host: &Ns, to: SocketAddr, path: &str) -> Option<String> {
    host.run(|| {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .ok()
}

/// Removes the test's namespace mounts and directory however the test ends: with the
/// "host" namespace go its bridge, veths and rules. (A failed step had left both mounts.)
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for sub in ["netns", "test-ns"] {
            let d = self.0.join(sub);
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let _ = netns::remove(&e.path());
            }
            let _ = netns::remove_dir(&d);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn container_in_a_bridge_network_answers_on_a_published_port() {
    let dir = PathBuf::from(format!("/run/capsa-it-net-{}", std::process::id()));
    let _leftovers = Leftovers(dir.clone());
    let tdir = dir.join("test-ns");
    let host = Ns::Path(netns::create(&tdir, "host").unwrap());
    host.run(|| {
        let mut rt = Rtnl::open()?;
        let lo = rt.link("lo")?.unwrap();
        rt.set_up(lo.index)
    })
    .unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    // The store's schema (capsa-image's migrations hold the network tables).
    drop(capsa_image::db::Db::open(&dir.join("capsa.db")).unwrap());
    let db = rusqlite::Connection::open(dir.join("capsa.db")).unwrap();
    let new = ipam::NewNetwork { name: "it", bridge: "capsa-it0", subnet: Some("10.81.0.0/24".parse().unwrap()), ..Default::default() };
    let net = ipam::create_network(&db, &new).unwrap();
    let ip = ipam::allocate(&db, "it", "net-web").unwrap();
    let ports = ["8080:80".parse().unwrap()];
    let att = netctr::attach(&Setup { host: &host, run_dir: &dir, net: &net, container: "net-web", ip, ip6: None, ports: &ports, mtu: 0 })
        .unwrap();

    // What the container sees of its network.
    let mut c = Container::shared("net-ip");
    c.namespace("network", Some(att.netns.to_str().unwrap()));
    c.sh("ip -4 -o addr show dev eth0 | awk '{print $4}'; ip route | grep default");
    let out = c.run(&[]).ok();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), vec!["10.81.0.2/24", "default via 10.81.0.1 dev eth0 "], "{out}");
    drop(c);

    // busybox httpd serving /etc, reached through the published port.
    let mut web = Container::shared("net-web");
    web.namespace("network", Some(att.netns.to_str().unwrap()));
    web.args(&["/bin/httpd", "-f", "-p", "80", "-h", "/etc"]);
    web.run_detached();
    let to = |a: Ipv4Addr| SocketAddr::from((a, 8080));
    let answer = poll(Duration::from_secs(10), "httpd answers on 127.0.0.1:8080", || get(&host, to(Ipv4Addr::LOCALHOST), "/passwd"));
    assert!(answer.starts_with("HTTP/1.") && answer.contains("root:"), "{answer}");
    let answer = get(&host, to(net.gateway), "/passwd").unwrap();
    assert!(answer.contains("root:"), "{answer}");
    drop(web);

    netctr::cleanup(&host, &dir, &db, "net-web").unwrap();
    firewall::remove_network(&host, &net).unwrap();
    bridge::remove(&host, &net).unwrap();
    firewall::remove_table(&host).unwrap();
    // The veth pair goes with the container's namespace (the kernel's work, a few ms later).
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let links = host.run(|| Ok(Rtnl::open()?.links()?.into_iter().map(|l| l.name).collect::<Vec<_>>())).unwrap();
        if links == ["lo"] {
            break;
        }
        assert!(std::time::Instant::now() < end, "links left: {links:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!att.netns.exists());
    netns::remove(&tdir.join("host")).unwrap();
    netns::remove_dir(&tdir).unwrap();
    netns::remove_dir(&netctr::netns_dir(&dir)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

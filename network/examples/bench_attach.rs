//! Time of capsa-network's steps for one container, median of N (default 30), in a network
//! namespace of its own (nothing on the machine's network is touched):
//!   cargo run --release -p capsa-network --example bench_attach [N]
//! Prints: bridge+veth+address+route (no port), the same with one port published (the whole
//! `attach`), the nft step alone, and `cleanup`.

#![allow(clippy::unwrap_used)] // a benchmark tool: any failure ends the run

use std::path::PathBuf;
use std::time::{Duration, Instant};

use capsa_network::container::{self, Setup};
use capsa_network::firewall::{self, PortMap};
use capsa_network::{bridge, ipam, netns, netns::Ns};
use rusqlite::Connection;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let dir = PathBuf::from(format!("/run/capsa-netbench-{}", std::process::id()));
    let host = Ns::Path(netns::create(&dir.join("test-ns"), "host").unwrap());
    // The store's schema (capsa-image's migrations hold the network tables).
    drop(capsa_image::db::Db::open(&dir.join("capsa.db")).unwrap());
    let db = Connection::open(dir.join("capsa.db")).unwrap();
    let new = ipam::NewNetwork { name: "b", bridge: "capsa-b0", subnet: Some("10.90.0.0/24".parse().unwrap()), ..Default::default() };
    let net = ipam::create_network(&db, &new).unwrap();
    let ip = ipam::allocate(&db, "b", "c").unwrap();
    let port: PortMap = "8080:80".parse().unwrap();
    // Warm up: the bridge and the network's rules exist, as for every container but the first.
    bridge::ensure(&host, &net, 0).unwrap();
    firewall::add_network(&host, &dir, &net).unwrap();
    let (mut plain, mut full, mut nft, mut clean) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        container::attach(&Setup { host: &host, run_dir: &dir, net: &net, container: "c", ip, ip6: None, ports: &[], mtu: 0 }).unwrap();
        plain.push(t.elapsed());
        let t = Instant::now();
        firewall::publish(&host, &dir, "c", ip, None, &[port]).unwrap();
        nft.push(t.elapsed());
        let t = Instant::now();
        container::detach(&host, &dir, "c").unwrap();
        clean.push(t.elapsed());
        let t = Instant::now();
        container::attach(&Setup { host: &host, run_dir: &dir, net: &net, container: "c", ip, ip6: None, ports: &[port], mtu: 0 }).unwrap();
        full.push(t.elapsed());
        container::detach(&host, &dir, "c").unwrap();
    }
    let (mut list, mut unp) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        host.run(|| capsa_network::nftnl::list_rules("capsa")).unwrap();
        list.push(t.elapsed());
        firewall::publish(&host, &dir, "c", ip, None, &[port]).unwrap();
        let t = Instant::now();
        firewall::unpublish(&host, "c").unwrap();
        unp.push(t.elapsed());
    }
    use capsa_network::nftnl::{expr, Batch};
    let (mut one, mut basev, mut del1) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let t = Instant::now();
        host.run(|| {
            let mut b = Batch::new("capsa");
            b.add_rule("prerouting", vec![expr::dport(6, 1000 + i as u16), expr::dnat(ip, 80)], "x");
            b.commit()
        })
        .unwrap();
        one.push(t.elapsed());
        let t = Instant::now();
        host.run(|| {
            let mut b = Batch::new("capsa");
            b.add_table();
            b.commit()
        })
        .unwrap();
        basev.push(t.elapsed());
        let r = host.run(|| capsa_network::nftnl::list_rules("capsa")).unwrap();
        let r = r.iter().find(|r| r.comment == "x").unwrap();
        let t = Instant::now();
        host.run(|| {
            let mut b = Batch::new("capsa");
            b.del_rule(&r.chain, r.handle);
            b.commit()
        })
        .unwrap();
        del1.push(t.elapsed());
    }
    println!("  batch: one rule:                                   {:.2}", median(one));
    println!("  batch: add table only:                             {:.2}", median(basev));
    println!("  batch: delete one rule:                            {:.2}", median(del1));
    println!("  list rules (netlink dump):                         {:.2}", median(list));
    println!("  unpublish one port (list + delete batch):          {:.2}", median(unp));
    println!("capsa-network, median of {n} (ms):");
    println!("  attach, no port (netns + veth + address + route):  {:.2}", median(plain));
    println!("  attach, one port published (all of it):           {:.2}", median(full));
    println!("  publish one port alone (nf_tables batch):          {:.2}", median(nft));
    println!("  detach (rules + veth + netns):                     {:.2}", median(clean));
    netns::remove(&dir.join("test-ns").join("host")).unwrap();
    netns::remove_dir(&dir.join("test-ns")).unwrap();
    netns::remove_dir(&container::netns_dir(&dir)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

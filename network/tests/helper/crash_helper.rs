//! Helper of the test `kill_9_mid_setup_then_cleanup_leaves_nothing` (tests/bridge.rs): does
//! the first STEPS steps of a container's network setup, says "ready" and waits to be killed.
//!   capsa-network-crash-helper HOST_NS RUN_DIR DB NETWORK CONTAINER STEPS
//! Steps: 1 lease an address, 2 make the netns, 3 veth pair and eth0 set up, 4 publish 8080:80.

#![allow(clippy::unwrap_used)] // a test helper: any failure ends it, and the test sees that

use std::io::Write;
use std::path::PathBuf;

use capsa_network::container::netns_dir;
use capsa_network::netns::{self, Ns};
use capsa_network::{bridge, firewall, ipam};
use rusqlite::{Connection, TransactionBehavior};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (host, run_dir, db, network, id, steps) =
        (Ns::Path(PathBuf::from(&a[1])), PathBuf::from(&a[2]), &a[3], &a[4], &a[5], a[6].parse::<u32>().unwrap());
    let mut c = Connection::open(db).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(60)).unwrap();
    let net = ipam::network(&c, network).unwrap().unwrap();
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
    let ip = ipam::allocate(&tx, network, id).unwrap();
    tx.commit().unwrap();
    if steps >= 2 {
        let ns = netns::create(&netns_dir(&run_dir), id).unwrap();
        if steps >= 3 {
            let br = bridge::ensure(&host, &net, 0).unwrap();
            bridge::attach(&host, &ns, &net, br, &bridge::veth_name(id), "eth0", ip, None, 0, true).unwrap();
        }
        if steps >= 4 {
            firewall::publish(&host, &run_dir, id, ip, None, &["8080:80".parse().unwrap()]).unwrap();
        }
    }
    println!("ready");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

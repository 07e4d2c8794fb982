//! capsa-network on the real kernel, as root. Each test makes its own "host" network
//! namespace (and an "upstream" one standing in for the outside world) and does everything,
//! bridge and rules included, inside them: the machine's own network is never touched and no
//! packet leaves the namespaces the test made. Every test ends by proving that nothing is left:
//! links, nft ruleset and namespace bind mounts listed before and after.

#![allow(clippy::unwrap_used)] // test helpers: a failed step fails the test

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use capsa_network::container::{self, Setup};
use capsa_network::firewall::{self, PortMap};
use capsa_network::ipam::{self, Network};
use capsa_network::netns::{self, Ns};
use capsa_network::rtnl::Rtnl;
use capsa_network::{bridge, Result};
use rusqlite::{Connection, TransactionBehavior};

/// A test's own namespaces and run dir.
struct Env {
    dir: PathBuf,
    /// The test's own namespaces (host, upstream): `dir/test-ns`.
    host: Ns,
    upstream: Ns,
}

const UPLINK_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const UPLINK_UPSTREAM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

impl Env {
    /// "host" and "upstream" joined by a veth pair on 192.0.2.0/24 (TEST-NET-1), `lo` up in both.
    fn new(tag: &str) -> Env {
        let dir = PathBuf::from(format!("/run/capsa-nettest-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tdir = dir.join("test-ns");
        let host = Ns::Path(netns::create(&tdir, "host").unwrap());
        let upstream = Ns::Path(netns::create(&tdir, "upstream").unwrap());
        let up_fd = upstream.open().unwrap();
        host.run(|| {
            let mut rt = Rtnl::open()?;
            rt.add_veth("uplink", None, 0, "downlink", None, &up_fd)?;
            let l = rt.link("uplink")?.unwrap();
            rt.add_addr(l.index, IpAddr::V4(UPLINK_HOST), 24)?;
            rt.set_up(l.index)?;
            let lo = rt.link("lo")?.unwrap();
            rt.set_up(lo.index)
        })
        .unwrap();
        upstream
            .run(|| {
                let mut rt = Rtnl::open()?;
                let l = rt.link("downlink")?.unwrap();
                rt.add_addr(l.index, IpAddr::V4(UPLINK_UPSTREAM), 24)?;
                rt.set_up(l.index)?;
                let lo = rt.link("lo")?.unwrap();
                rt.set_up(lo.index)
            })
            .unwrap();
        Env { dir, host, upstream }
    }

    fn db(&self) -> Connection {
        migrate(&self.dir.join("capsa.db"));
        let c = Connection::open(self.dir.join("capsa.db")).unwrap();
        c.busy_timeout(Duration::from_secs(60)).unwrap();
        c
    }

    /// Asserts that the listing becomes `want`, polled for at most 60 s: a container's veth
    /// pair goes with its namespace, which the kernel destroys asynchronously a few ms after
    /// `detach` unmounts it.
    fn settled(&self, want: &(Vec<String>, String, Vec<PathBuf>), what: &str) {
        let end = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.listing();
            if now == *want {
                return;
            }
            if std::time::Instant::now() > end {
                assert_eq!(*want, now, "{what}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the host namespace holds: its links, its nft ruleset, our namespace mounts.
    fn listing(&self) -> (Vec<String>, String, Vec<PathBuf>) {
        let links = self.host.run(|| Ok(Rtnl::open()?.links()?.into_iter().map(|l| l.name).collect::<Vec<_>>())).unwrap();
        let rules = self.host.run(|| Ok(run("nft", &["list", "ruleset"]))).unwrap();
        let cdir = container::netns_dir(&self.dir);
        let mounts = if cdir.exists() { netns::mounts_under(&cdir).unwrap() } else { Vec::new() };
        (links, rules, mounts)
    }

    fn finish(mut self) {
        self.remove_all(true);
    }

    /// Removes the test's namespaces (with them go every link and rule made in them) and its
    /// dirs; `strict`: every step must succeed.
    fn remove_all(&mut self, strict: bool) {
        if !self.dir.exists() {
            return;
        }
        for sub in ["netns", "test-ns"] {
            let d = self.dir.join(sub);
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let r = netns::remove(&e.path());
                assert!(!strict || r.is_ok(), "{r:?}");
            }
            if d.exists() {
                let r = netns::remove_dir(&d);
                assert!(!strict || r.is_ok(), "{r:?}");
            }
        }
        let r = std::fs::remove_dir_all(&self.dir);
        assert!(!strict || r.is_ok(), "{r:?}");
    }
}

impl Drop for Env {
    /// A failed test still removes what it made.
    fn drop(&mut self) {
        self.remove_all(false);
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// A TCP server in `ns` on port `port` that answers each connection with `name` and the
/// peer's address, then closes.
fn serve(ns: &Ns, port: u16, name: &'static str) -> Server {
    let l = ns.run(|| Ok(TcpListener::bind(("0.0.0.0", port))?)).unwrap();
    let own = l.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let peer = c.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
            let _ = c.write_all(format!("{name} {peer}").as_bytes());
        }
    });
    Server(own, Some(t))
}

/// A server of [`serve`]; dropped, it stops and its socket goes (a socket holds its network
/// namespace alive, as a container's process does).
struct Server(TcpListener, Option<std::thread::JoinHandle<()>>);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: shutdown(2) of a socket this struct owns; it wakes the accept loop.
        unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&self.0), libc::SHUT_RDWR) };
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

/// Connects from `ns` and returns what the server said ("NAME PEER").
fn ask(ns: &Ns, to: SocketAddr) -> Result<String> {
    ask_within(ns, to, Duration::from_secs(5))
}

fn ask_within(ns: &Ns, to: SocketAddr, timeout: Duration) -> Result<String> {
    ns.run(|| {
        let mut s = TcpStream::connect_timeout(&to, timeout).map_err(|e| capsa_network::Error::os(format!("connect to {to}"), e))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

fn lease(c: &mut Connection, net: &str, id: &str) -> Ipv4Addr {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
    let ip = ipam::allocate(&tx, net, id).unwrap();
    tx.commit().unwrap();
    ip
}

fn make_network(c: &Connection, name: &str, bridge: &str, subnet: &str) -> Network {
    ipam::create_network(c, &ipam::NewNetwork { name, bridge, subnet: Some(subnet.parse().unwrap()), ..Default::default() }).unwrap()
}

/// The store's schema, network tables included (capsa-image's migrations make them).
fn migrate(db: &Path) {
    drop(capsa_image::db::Db::open(db).unwrap());
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

#[test]
fn bridge_ports_hairpin_masquerade_and_nothing_left() {
    let real_links_before = Rtnl::open().unwrap().links().unwrap().len();
    let env = Env::new("main");
    let before = env.listing();
    let mut db = env.db();
    let net = make_network(&db, "t", "capsa-t0", "10.77.0.0/24");
    let (ia, ib) = (lease(&mut db, "t", "ctr-a"), lease(&mut db, "t", "ctr-b"));
    assert_eq!((ia, ib), (Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 3)));
    let ports: Vec<PortMap> = vec!["8080:80".parse().unwrap(), "127.0.0.1:8081:81".parse().unwrap()];
    let a = container::attach(&Setup {
        host: &env.host,
        run_dir: &env.dir,
        net: &net,
        container: "ctr-a",
        ip: ia,
        ip6: None,
        ports: &ports,
        mtu: 1400,
    })
    .unwrap();
    let b = container::attach(&Setup {
        host: &env.host,
        run_dir: &env.dir,
        net: &net,
        container: "ctr-b",
        ip: ib,
        ip6: None,
        ports: &[],
        mtu: 1400,
    })
    .unwrap();
    let (na, nb) = (Ns::Path(a.netns.clone()), Ns::Path(b.netns.clone()));

    // Inside a container: lo and eth0 up, its address, MTU, default route via the gateway.
    let (eth0, lo, routes) = na
        .run(|| {
            let mut rt = Rtnl::open()?;
            let eth0 = rt.link("eth0")?.unwrap();
            let addrs = rt.addrs(eth0.index)?;
            Ok(((eth0.up, eth0.mtu, addrs, eth0.mac), rt.link("lo")?.unwrap().up, rt.routes_v4()?))
        })
        .unwrap();
    assert_eq!(eth0, (true, 1400, vec![(IpAddr::V4(ia), 24)], vec![0x02, 0x42, 10, 77, 0, 2]));
    assert!(lo);
    assert!(routes.iter().any(|(d, l, _)| *d == Ipv4Addr::UNSPECIFIED && *l == 0), "{routes:?}");
    // On the host: the veth is an up port of the bridge, hairpin on.
    let (veth, br) = env.host.run(|| Ok((Rtnl::open()?.link(&a.veth)?.unwrap(), Rtnl::open()?.link("capsa-t0")?.unwrap()))).unwrap();
    assert_eq!((veth.master, veth.up, veth.mtu), (Some(br.index), true, 1400));
    // (Hairpin mode is proven by the container reaching its own published port below.)

    let servers = [serve(&na, 80, "a80"), serve(&na, 81, "a81"), serve(&nb, 80, "b80"), serve(&env.upstream, 9000, "upstream")];

    // Container to container on the bridge.
    assert_eq!(ask(&nb, sa(ia, 80)).unwrap(), format!("a80 {ib}"));
    assert_eq!(ask(&na, sa(ib, 80)).unwrap(), format!("b80 {ia}"));
    // Published port from the host: 127.0.0.1 and its own addresses (uplink, gateway).
    assert!(ask(&env.host, sa(Ipv4Addr::LOCALHOST, 8080)).unwrap().starts_with("a80 "));
    assert!(ask(&env.host, sa(UPLINK_HOST, 8080)).unwrap().starts_with("a80 "));
    assert!(ask(&env.host, sa(net.gateway, 8080)).unwrap().starts_with("a80 "));
    // A port published on 127.0.0.1 only.
    assert!(ask(&env.host, sa(Ipv4Addr::LOCALHOST, 8081)).unwrap().starts_with("a81 "));
    // From another machine (upstream), through the host's address; not on 8081.
    assert_eq!(ask(&env.upstream, sa(UPLINK_HOST, 8080)).unwrap(), format!("a80 {UPLINK_UPSTREAM}"));
    assert!(ask(&env.upstream, sa(UPLINK_HOST, 8081)).is_err());
    // Hairpin: another container, and the container itself, through the host's address.
    assert!(ask(&nb, sa(UPLINK_HOST, 8080)).unwrap().starts_with("a80 "));
    assert!(ask(&na, sa(UPLINK_HOST, 8080)).unwrap().starts_with("a80 "));
    // Egress is masqueraded: upstream sees the host's address, never the container's.
    assert_eq!(ask(&na, sa(UPLINK_UPSTREAM, 9000)).unwrap(), format!("upstream {UPLINK_HOST}"));

    // A container cannot reach the host's 127.0.0.1 services through the bridge (which has
    // route_localnet): a (root, hence able) container routes 127.0.0.0/8 to the gateway.
    let lo_only = env.host.run(|| Ok(TcpListener::bind(("127.0.0.1", 7000))?)).unwrap();
    std::thread::spawn(move || {
        for c in lo_only.incoming() {
            let Ok(mut c) = c else { return };
            let _ = c.write_all(b"host-lo");
        }
    });
    assert_eq!(ask(&env.host, sa(Ipv4Addr::LOCALHOST, 7000)).unwrap(), "host-lo");
    nb.run(|| {
        let mut rt = Rtnl::open()?;
        let lo = rt.link("lo")?.unwrap();
        rt.del_addr(lo.index, IpAddr::V4(Ipv4Addr::LOCALHOST), 8)?;
        let eth0 = rt.link("eth0")?.unwrap();
        rt.add_route(Ipv4Addr::new(127, 0, 0, 0).into(), 8, eth0.index, net.gateway.into())?;
        bridge::sysctl("net/ipv4/conf/eth0/route_localnet", "1")
    })
    .unwrap();
    let e = ask_within(&nb, sa(Ipv4Addr::LOCALHOST, 7000), Duration::from_millis(500)).unwrap_err().to_string();
    assert!(e.contains("timed out"), "{e}");

    // A port published already is refused, and the refused container leaves nothing.
    let ic = lease(&mut db, "t", "ctr-c");
    let e = container::attach(&Setup {
        host: &env.host,
        run_dir: &env.dir,
        net: &net,
        container: "ctr-c",
        ip: ic,
        ip6: None,
        ports: &["8080:8080".parse().unwrap()],
        mtu: 0,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("already published by container ctr-a"), "{e}");
    assert!(!container::netns_dir(&env.dir).join("ctr-c").exists());
    // Its veth pair goes with its namespace (the kernel's work, a few ms later).
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while env.host.run(|| Rtnl::open()?.link(&bridge::veth_name("ctr-c"))).unwrap().is_some() {
        assert!(std::time::Instant::now() < end, "the refused container's veth pair is left");
        std::thread::sleep(Duration::from_millis(10));
    }
    container::cleanup(&env.host, &env.dir, &db, "ctr-c").unwrap();

    // Teardown: containers (their processes gone first), then the network.
    drop(servers);
    for id in ["ctr-a", "ctr-b"] {
        container::cleanup(&env.host, &env.dir, &db, id).unwrap();
    }
    assert!(ask(&env.host, sa(Ipv4Addr::LOCALHOST, 8080)).is_err());
    assert_eq!(ipam::leases_on(&db, "t").unwrap(), vec![]);
    firewall::remove_network(&env.host, &net).unwrap();
    bridge::remove(&env.host, &net).unwrap();
    ipam::remove_network(&db, "t").unwrap();
    firewall::remove_table(&env.host).unwrap();
    env.settled(&before, "before/after: links, nft ruleset, namespace mounts");
    drop(db);
    env.finish();
    assert_eq!(Rtnl::open().unwrap().links().unwrap().len(), real_links_before, "the machine's own links changed");
}

/// 50 allocations at once, each on its own connection (as 50 `capsactl run`s would be):
/// 50 distinct addresses; then an address asked for twice is refused.
#[test]
fn fifty_concurrent_leases_are_distinct() {
    let dir = PathBuf::from(format!("/run/capsa-nettest-{}-ipam", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("capsa.db");
    {
        migrate(&path);
        let c = Connection::open(&path).unwrap();
        make_network(&c, "n", "capsa-n0", "10.78.0.0/24");
    }
    let start = std::sync::Arc::new(std::sync::Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let (path, start) = (path.clone(), start.clone());
            std::thread::spawn(move || {
                let mut c = Connection::open(&path).unwrap();
                c.busy_timeout(Duration::from_secs(60)).unwrap();
                start.wait();
                lease(&mut c, "n", &format!("c{i}"))
            })
        })
        .collect();
    let mut ips: Vec<Ipv4Addr> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50);
    assert!(ips.iter().all(|ip| (2..=51).contains(&ip.octets()[3])), "{ips:?}");
    let c = Connection::open(&path).unwrap();
    let e = ipam::allocate_exact(&c, "n", "other", ips[0]).unwrap_err().to_string();
    assert!(e.contains("already in use"), "{e}");
    drop(c);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A setup that died half-way (namespace, veth and rules made, then the process gone) is
/// removed completely by `cleanup` given the container id alone.
#[test]
fn cleanup_after_a_crash_leaves_nothing() {
    let env = Env::new("crash");
    let before = env.listing();
    let mut db = env.db();
    let net = make_network(&db, "c", "capsa-c0", "10.79.0.0/24");
    let ip = lease(&mut db, "c", "crashed");
    // The steps of attach, by hand, then abandoned as a killed process would leave them.
    let br = bridge::ensure(&env.host, &net, 0).unwrap();
    firewall::add_network(&env.host, &env.dir, &net).unwrap();
    let ns = netns::create(&container::netns_dir(&env.dir), "crashed").unwrap();
    bridge::attach(&env.host, &ns, &net, br, &bridge::veth_name("crashed"), "eth0", ip, None, 0, true).unwrap();
    firewall::publish(&env.host, &env.dir, "crashed", ip, None, &["9090:90".parse().unwrap()]).unwrap();
    // The rules, as nft reads them back from the kernel.
    let listed = env.host.run(|| Ok(run("nft", &["list", "table", "ip", "capsa"]))).unwrap();
    for want in [
        "type nat hook prerouting priority dstnat; policy accept;",
        "type nat hook output priority -100; policy accept;",
        "type nat hook postrouting priority srcnat; policy accept;",
        "fib daddr type local tcp dport 9090 dnat to 10.79.0.2:90 comment \"capsa:crashed tcp/*:9090\"",
        "ip saddr 10.79.0.0/24 oifname != \"capsa-c0\" masquerade comment \"capsa-net:c\"",
        "oifname \"capsa-c0\" ct status dnat ip saddr 127.0.0.0/8 masquerade comment \"capsa-net:c\"",
        "type filter hook prerouting priority raw; policy accept;",
        "iifname \"capsa-c0\" ip daddr 127.0.0.0/8 drop comment \"capsa-net:c\"",
    ] {
        assert!(listed.contains(want), "{want}\nnot in\n{listed}");
    }
    // Cleanup from nothing but the id.
    container::cleanup(&env.host, &env.dir, &db, "crashed").unwrap();
    container::cleanup(&env.host, &env.dir, &db, "crashed").unwrap();
    let rules = env.host.run(|| Ok(run("nft", &["list", "table", "ip", "capsa"]))).unwrap();
    assert!(!rules.contains("capsa:crashed"), "{rules}");
    assert!(env.host.run(|| Rtnl::open()?.link(&bridge::veth_name("crashed"))).unwrap().is_none());
    assert!(!Path::new(&ns).exists());
    assert_eq!(ipam::leases_of(&db, "crashed").unwrap(), vec![]);
    firewall::remove_network(&env.host, &net).unwrap();
    bridge::remove(&env.host, &net).unwrap();
    firewall::remove_table(&env.host).unwrap();
    env.settled(&before, "at the end");
    drop(db);
    env.finish();
}

/// A process killed with SIGKILL after each step of a container's setup (lease, netns, veth,
/// published port): `cleanup` from the id alone then leaves no veth, namespace, rule or lease.
#[test]
fn kill_9_mid_setup_then_cleanup_leaves_nothing() {
    let helper = env!("CARGO_BIN_EXE_capsa-network-crash-helper");
    let env = Env::new("kill");
    let db = env.db();
    let net = make_network(&db, "k", "capsa-k0", "10.80.0.0/24");
    bridge::ensure(&env.host, &net, 0).unwrap();
    firewall::add_network(&env.host, &env.dir, &net).unwrap();
    let before = env.listing();
    let Ns::Path(host_path) = &env.host else { unreachable!() };
    for steps in 1..=4 {
        let id = format!("killed{steps}");
        let mut child = std::process::Command::new(helper)
            .args([
                host_path.to_str().unwrap(),
                env.dir.to_str().unwrap(),
                env.dir.join("capsa.db").to_str().unwrap(),
                "k",
                &id,
                &steps.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready", "helper, {steps} steps");
        child.kill().unwrap();
        child.wait().unwrap();
        // What the killed process left.
        assert!(ipam::lease(&db, "k", &id).unwrap().is_some());
        assert_eq!(container::netns_dir(&env.dir).join(&id).exists(), steps >= 2);
        assert_eq!(env.host.run(|| Rtnl::open()?.link(&bridge::veth_name(&id))).unwrap().is_some(), steps >= 3);
        let rules = env.host.run(|| capsa_network::nftnl::list_rules("capsa")).unwrap();
        assert_eq!(rules.iter().any(|r| r.comment.starts_with(&format!("capsa:{id} "))), steps >= 4);
        container::cleanup(&env.host, &env.dir, &db, &id).unwrap();
        assert_eq!(ipam::lease(&db, "k", &id).unwrap(), None);
        env.settled(&before, &format!("after a kill at step {steps} and cleanup"));
    }
    firewall::remove_network(&env.host, &net).unwrap();
    bridge::remove(&env.host, &net).unwrap();
    firewall::remove_table(&env.host).unwrap();
    drop(db);
    env.finish();
}

/// A subnet overlapping a route of the host is refused before anything is made.
#[test]
fn subnet_overlapping_a_host_route_is_refused() {
    let env = Env::new("overlap");
    let before = env.listing();
    let db = env.db();
    // 192.0.2.0/24 is the uplink's subnet in the test's host namespace.
    let net = make_network(&db, "o", "capsa-o0", "192.0.2.0/25");
    let e = bridge::ensure(&env.host, &net, 0).unwrap_err().to_string();
    assert!(e.contains("subnet 192.0.2.0/25 overlaps the host's route to 192.0.2.0/24"), "{e}");
    env.settled(&before, "at the end");
    drop(db);
    env.finish();
}

/// A network named after an interface that is not a bridge (lo, a NIC, a veth) is refused
/// and nothing is changed; a user's own bridge is used but never deleted; only bridges capsa
/// made (marked by their alias) go with the network.
#[test]
fn only_bridges_are_adopted_and_only_our_own_deleted() {
    let env = Env::new("owned");
    let db = env.db();
    let addrs_of = |name: &str| {
        env.host
            .run(|| {
                let mut rt = Rtnl::open()?;
                let l = rt.link(name)?.unwrap();
                rt.addrs(l.index)
            })
            .unwrap()
    };
    let before = env.listing();
    let lo_addrs = addrs_of("lo");
    for (iface, subnet) in [("lo", "10.77.0.0/24"), ("uplink", "10.77.1.0/24")] {
        let net = make_network(&db, &format!("n-{iface}"), iface, subnet);
        let e = bridge::ensure(&env.host, &net, 0).unwrap_err().to_string();
        assert!(e.contains(&format!("interface {iface} exists and is not a bridge")), "{e}");
        bridge::remove(&env.host, &net).unwrap();
        env.settled(&before, iface);
    }
    assert_eq!(lo_addrs, addrs_of("lo"));
    // The user's bridge: used, then left as it was (no gateway address).
    env.host
        .run(|| {
            let mut rt = Rtnl::open()?;
            rt.add_bridge("userbr0", 0)
        })
        .unwrap();
    let net = make_network(&db, "n-user", "userbr0", "10.78.0.0/24");
    bridge::ensure(&env.host, &net, 0).unwrap();
    assert!(addrs_of("userbr0").iter().any(|(a, _)| *a == IpAddr::V4(net.gateway)));
    bridge::remove(&env.host, &net).unwrap();
    assert!(addrs_of("userbr0").is_empty(), "{:?}", addrs_of("userbr0"));
    // Ours: made with the mark, deleted.
    let net = make_network(&db, "n-ours", "capsa-ours0", "10.79.0.0/24");
    bridge::ensure(&env.host, &net, 0).unwrap();
    let alias = env.host.run(|| Ok(Rtnl::open()?.link("capsa-ours0")?.unwrap().alias)).unwrap();
    assert_eq!(alias.as_deref(), Some(capsa_network::rtnl::OWNED_ALIAS));
    bridge::remove(&env.host, &net).unwrap();
    let links = env.listing().0;
    assert!(links.contains(&"userbr0".to_string()) && !links.contains(&"capsa-ours0".to_string()), "{links:?}");
    drop(db);
    env.finish();
}

/// `--network none` gets a namespace with only lo, up; `container:ID` joins ID's; bad modes
/// are refused by name.
#[test]
fn modes_none_and_container() {
    let env = Env::new("modes");
    assert_eq!("host".parse::<container::Mode>().unwrap(), container::Mode::Host);
    assert_eq!("mynet".parse::<container::Mode>().unwrap(), container::Mode::Bridge("mynet".into()));
    assert_eq!("container:abc".parse::<container::Mode>().unwrap(), container::Mode::Container("abc".into()));
    let e = "container:../x".parse::<container::Mode>().unwrap_err().to_string();
    assert!(e.contains("network mode \"container:../x\""), "{e}");
    let p = container::attach_none(&env.dir, "lonely").unwrap();
    let links = Ns::Path(p.clone()).run(|| Ok(Rtnl::open()?.links()?.into_iter().map(|l| (l.name, l.up)).collect::<Vec<_>>())).unwrap();
    assert_eq!(links, vec![("lo".to_string(), true)]);
    assert_eq!(container::joined(&env.dir, "lonely").unwrap(), p);
    let e = container::joined(&env.dir, "nobody").unwrap_err().to_string();
    assert!(e.contains("container:nobody"), "{e}");
    container::detach(&env.host, &env.dir, "lonely").unwrap();
    assert!(!p.exists());
    assert!(container::joined(&env.dir, "lonely").is_err());
    env.finish();
}

/// `detach` leaves the veth pair to the kernel, which deletes it with the container's
/// namespace: a container started again at once, while its old pair may still be there, gets
/// a new one; a namespace someone else keeps alive keeps its pair, but down (no traffic with a
/// released address), until the container's next start deletes it or the holder lets go.
#[test]
fn restart_at_once_and_a_namespace_kept_alive_by_someone_else() {
    let env = Env::new("restart");
    let before = env.listing();
    let mut db = env.db();
    let net = make_network(&db, "r", "capsa-r0", "10.78.0.0/24");
    let veth = bridge::veth_name("again");
    let link = |name: &str| env.host.run(|| Rtnl::open()?.link(name)).unwrap();
    let setup = |ip| Setup { host: &env.host, run_dir: &env.dir, net: &net, container: "again", ip, ip6: None, ports: &[], mtu: 0 };
    for round in 0..5 {
        let ip = lease(&mut db, "r", "again");
        container::attach(&setup(ip)).unwrap_or_else(|e| panic!("start {round}: {e}"));
        assert!(link(&veth).is_some_and(|l| l.up), "start {round}");
        container::cleanup(&env.host, &env.dir, &db, "again").unwrap();
    }

    // Held by someone else: an open fd of the namespace (as a mount namespace copied from
    // ours would hold it).
    let ip = lease(&mut db, "r", "again");
    let a = container::attach(&setup(ip)).unwrap();
    let holder = Ns::Path(a.netns.clone()).open().unwrap();
    container::cleanup(&env.host, &env.dir, &db, "again").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let kept = link(&veth).expect("the pair stays while its namespace is held");
    assert!(!kept.up, "a kept pair is down");
    // The next start deletes it and makes its own.
    let ip = lease(&mut db, "r", "again");
    container::attach(&setup(ip)).unwrap();
    let new = link(&veth).unwrap();
    assert!(new.up && new.index != kept.index, "{new:?} / {kept:?}");
    container::cleanup(&env.host, &env.dir, &db, "again").unwrap();
    drop(holder);
    firewall::remove_network(&env.host, &net).unwrap();
    bridge::remove(&env.host, &net).unwrap();
    ipam::remove_network(&db, "r").unwrap();
    firewall::remove_table(&env.host).unwrap();
    env.settled(&before, "at the end");
    drop(db);
    env.finish();
}

/// IPv6: a container's address, route and published port (table ip6 capsa, same tag), left
/// behind by a setup that died, are removed by `cleanup` from the id alone; the network's
/// removal takes table ip6 capsa with its last rules.
#[test]
fn ipv6_setup_then_crash_cleanup_leaves_nothing() {
    let env = Env::new("crash6");
    let before = env.listing();
    let mut db = env.db();
    let new = ipam::NewNetwork {
        name: "v6",
        bridge: "capsa-v60",
        subnet: Some("10.76.0.0/24".parse().unwrap()),
        subnet6: Some("fd00:76::/64".parse().unwrap()),
        ..Default::default()
    };
    let net = ipam::create_network(&db, &new).unwrap();
    let ip = lease(&mut db, "v6", "crashed6");
    let ip6 = ipam::lease6(&db, "v6", "crashed6").unwrap();
    assert_eq!(ip6, Some("fd00:76::2".parse().unwrap()));
    // The steps of attach, by hand, then abandoned.
    let br = bridge::ensure(&env.host, &net, 0).unwrap();
    firewall::add_network(&env.host, &env.dir, &net).unwrap();
    let ns = netns::create(&container::netns_dir(&env.dir), "crashed6").unwrap();
    bridge::attach(&env.host, &ns, &net, br, &bridge::veth_name("crashed6"), "eth0", ip, ip6, 0, true).unwrap();
    firewall::publish(&env.host, &env.dir, "crashed6", ip, ip6, &["9090:90".parse().unwrap(), "127.0.0.1:9091:91".parse().unwrap()])
        .unwrap();
    let inside = Ns::Path(ns.clone()).run(|| Ok(run("ip", &["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"]))).unwrap();
    assert!(inside.contains("inet6 fd00:76::2/64"), "{inside}");
    let routes = Ns::Path(ns.clone()).run(|| Ok(run("ip", &["-6", "route", "show", "default"]))).unwrap();
    assert!(routes.starts_with("default via fd00:76::1 dev eth0"), "{routes}");
    let bridge_addrs = env.host.run(|| Ok(run("ip", &["-6", "-o", "addr", "show", "dev", "capsa-v60", "scope", "global"]))).unwrap();
    assert!(bridge_addrs.contains("inet6 fd00:76::1/64"), "{bridge_addrs}");
    let listed = env.host.run(|| Ok(run("nft", &["list", "table", "ip6", "capsa"]))).unwrap();
    for want in [
        "fib daddr type local tcp dport 9090 dnat to [fd00:76::2]:90 comment \"capsa:crashed6 tcp/*:9090\"",
        "ip6 daddr != ::1 fib daddr type local tcp dport 9090 dnat to [fd00:76::2]:90 comment \"capsa:crashed6 tcp/*:9090\"",
        "ip6 saddr fd00:76::/64 oifname != \"capsa-v60\" masquerade comment \"capsa-net:v6\"",
        "oifname \"capsa-v60\" ct status dnat ip6 saddr fd00:76::/64 masquerade comment \"capsa-net:v6\"",
    ] {
        assert!(listed.contains(want), "{want}\nnot in\n{listed}");
    }
    // A port published on one IPv4 address stays IPv4 only.
    assert!(!listed.contains("9091"), "{listed}");
    assert_eq!(env.host.run(|| Ok(run("sysctl", &["-n", "net.ipv6.conf.all.forwarding"]))).unwrap().trim(), "1");

    container::cleanup(&env.host, &env.dir, &db, "crashed6").unwrap();
    let listed = env.host.run(|| Ok(run("nft", &["list", "table", "ip6", "capsa"]))).unwrap();
    assert!(!listed.contains("crashed6"), "{listed}");
    assert_eq!(ipam::lease6(&db, "v6", "crashed6").unwrap(), None);
    firewall::remove_network(&env.host, &net).unwrap();
    bridge::remove(&env.host, &net).unwrap();
    ipam::remove_network(&db, "v6").unwrap();
    let tables = env.host.run(|| Ok(run("nft", &["list", "tables"]))).unwrap();
    assert!(!tables.contains("ip6 capsa"), "{tables}");
    firewall::remove_table(&env.host).unwrap();
    env.settled(&before, "at the end");
    drop(db);
    env.finish();
}

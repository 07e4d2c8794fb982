//! capsactl's networks end to end, as root: `run -p`, the default bridge, user networks and
//! names, `network` commands, teardown after rm, failures and kill -9.
//!
//! Every test makes its own "host" network namespace (and an "upstream" one standing in for
//! the outside world, joined to it by a veth pair on 192.0.2.0/24) and runs every capsactl
//! command in "host" (setns before exec), so the bridge, the nftables rules and the
//! containers' namespaces live there: the machine's own network is never touched and no
//! packet leaves the namespaces the test made. Each test ends by comparing a listing of the
//! host namespace's links, its nftables ruleset and the namespace bind mounts with the one
//! taken before its containers ran.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use capsa_network::netns::{self, Ns};
use capsa_network::rtnl::Rtnl;
use serde_json::Value;
use support::*;

const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The same link's IPv6 addresses (2001:db8::/32 is for documentation, as 192.0.2.0/24).
const HOST_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const UPSTREAM_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// What [`NetEnv::listing`] gives: links, rules/addresses/routes, namespace mounts, leases.
type Listing = (Vec<String>, String, Vec<PathBuf>, String);

/// A test's store, its "host" and "upstream" namespaces.
struct NetEnv {
    env: Env,
    host: Ns,
    upstream: Ns,
    host_fd: OwnedFd,
}

impl NetEnv {
    fn new(tag: &str) -> NetEnv {
        let env = Env::new(&format!("net-{tag}"));
        let tdir = env.dir.join("test-ns");
        let host = Ns::Path(netns::create(&tdir, "host").unwrap());
        let upstream = Ns::Path(netns::create(&tdir, "upstream").unwrap());
        let up_fd = upstream.open().unwrap();
        host.run(|| {
            let mut rt = Rtnl::open()?;
            rt.add_veth("uplink", None, 0, "downlink", None, &up_fd)?;
            let l = rt.link("uplink")?.unwrap();
            rt.add_addr(l.index, IpAddr::V4(HOST_IP), 24)?;
            rt.add_addr(l.index, IpAddr::V6(HOST_IP6), 64)?;
            rt.set_up(l.index)?;
            let lo = rt.link("lo")?.unwrap();
            rt.set_up(lo.index)
        })
        .unwrap();
        upstream
            .run(|| {
                let mut rt = Rtnl::open()?;
                let l = rt.link("downlink")?.unwrap();
                rt.add_addr(l.index, IpAddr::V4(UPSTREAM_IP), 24)?;
                rt.add_addr(l.index, IpAddr::V6(UPSTREAM_IP6), 64)?;
                rt.set_up(l.index)?;
                let lo = rt.link("lo")?.unwrap();
                rt.set_up(lo.index)
            })
            .unwrap();
        let host_fd = host.open().unwrap();
        let e = NetEnv { env, host, upstream, host_fd };
        let p = e.env.write("busybox.tar", &busybox_archive());
        assert_eq!(e.ok(&["load", "-i", p.to_str().unwrap()]), "Loaded image: busybox:latest\n");
        e
    }

    /// capsactl in the test's host namespace, with the default bridge network.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_capsactl"));
        c.arg("--root").arg(self.env.root()).arg("--state-root").arg(self.env.state()).args(args);
        c.env("CAPSACTL_DEFAULT_NETWORK", "bridge").stdin(Stdio::null());
        let fd = self.host_fd.as_raw_fd();
        // SAFETY: between fork and exec only setns(2), async-signal-safe, on an fd we keep open.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(o.status.success(), "capsactl {args:?}: {}\n{}", String::from_utf8_lossy(&o.stderr), String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs capsactl, asserts failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(!o.status.success(), "capsactl {args:?} should fail: {}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }

    /// What the host namespace holds: its links, its nftables ruleset and IPv6 addresses
    /// and routes, the namespaces mounted under the store, the leases.
    fn listing(&self) -> Listing {
        let links = self.host.run(|| Ok(Rtnl::open()?.links()?.into_iter().map(|l| l.name).collect::<Vec<_>>())).unwrap();
        // IPv6: global addresses (link and address name) and routes but the link-local ones,
        // without their state flags (a bridge with no port is "linkdown").
        let addrs6 = |t: String| t.lines().map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" ") + "\n").collect::<String>();
        let routes6 =
            |t: String| t.lines().filter(|l| !l.starts_with("fe80::/64")).map(|l| l.replace(" linkdown", "") + "\n").collect::<String>();
        let rules = self
            .host
            .run(|| {
                let a = addrs6(run("ip", &["-6", "-o", "addr", "show", "scope", "global"]));
                Ok([run("nft", &["list", "ruleset"]), a, routes6(run("ip", &["-6", "route"]))].join("\n"))
            })
            .unwrap();
        let d = self.env.root().join("network/netns");
        let mounts = if d.exists() { netns::mounts_under(&d).unwrap() } else { Vec::new() };
        (links, rules, mounts, self.env.db("SELECT count(*) FROM leases"))
    }

    /// The listing once no veth pair of a removed container is left: the kernel deletes a pair
    /// with its container's namespace, asynchronously, a few ms after `rm` (capsa-network's
    /// container::detach), and a removed container's host end is down while it waits (a
    /// running container's is up). Polled for at most 60 s (the kernel tears namespaces down one at a time, and a loaded machine is slow); then the listing as it is.
    fn quiet(&self) -> Listing {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let down_veths = self
                .host
                .run(|| Ok(Rtnl::open()?.links()?.into_iter().filter(|l| l.kind.as_deref() == Some("veth") && !l.up).count()))
                .unwrap();
            if down_veths == 0 || Instant::now() > end {
                return self.listing();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asserts that the listing becomes `want` (polled for at most 60 s, as [`NetEnv::quiet`]).
    fn settled(&self, want: &Listing, what: &str) {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.listing();
            if now == *want {
                return;
            }
            if Instant::now() > end {
                assert_eq!(*want, now, "{what}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `capsactl exec` output, trimmed.
    fn exec(&self, name: &str, sh: &str) -> String {
        self.ok(&["exec", name, "sh", "-c", sh]).trim().to_string()
    }
}

impl Drop for NetEnv {
    fn drop(&mut self) {
        // Containers first, in the namespace they were made in; then the test's namespaces
        // (every link and rule in them goes with them).
        if self.env.root().join("capsa.db").exists() {
            for id in self.env.db("SELECT id FROM containers").lines() {
                let _ = self.ctl(&["rm", "-f", id]);
            }
        }
        let tdir = self.env.dir.join("test-ns");
        for n in ["host", "upstream"] {
            let _ = netns::remove(&tdir.join(n));
        }
        let _ = netns::remove_dir(&tdir);
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// An HTTP GET from namespace `ns`; the whole answer.
fn get(ns: &Ns, to: SocketAddr, path: &str) -> Option<String> {
    ns.run(|| {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .ok()
}

/// Polls `f` until it gives Some (a server takes a moment to listen); fails after 20 s.
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// A plain HTTP server in `ns` that answers every request with the peer's address.
fn serve_peer(ns: &Ns, port: u16) {
    let l = ns.run(|| Ok(TcpListener::bind(("0.0.0.0", port))?)).unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let peer = c.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
            let _ = c.write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{peer}", peer.len()).as_bytes());
        }
    });
}

/// The default network once made (its bridge and masquerade rules stay, as docker0 does):
/// the listing every test compares with at its end.
fn baseline(e: &NetEnv) -> Listing {
    e.ok(&["run", "--rm", "busybox", "true"]);
    e.quiet()
}

#[test]
fn published_port_answers_on_loopback_host_address_hairpin_and_egress_is_masqueraded() {
    let e = NetEnv::new("web");
    let before = baseline(&e);
    assert!(before.0.contains(&"capsa0".to_string()), "{:?}", before.0);
    let id = e.ok(&["run", "-d", "-p", "8080:80", "--name", "web", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc"]).trim().to_string();

    // From the host: 127.0.0.1 and its own address; from "another host" (upstream).
    for (ns, ip) in [(&e.host, Ipv4Addr::LOCALHOST), (&e.host, HOST_IP), (&e.upstream, HOST_IP)] {
        let answer = until("httpd answers", || get(ns, sa(ip, 8080), "/passwd"));
        assert!(answer.starts_with("HTTP/1.") && answer.contains("root:x:0:0"), "{ip}: {answer}");
    }

    // What inspect and port say is what is there.
    let ns = e.inspect("web")["NetworkSettings"].clone();
    let ip: Ipv4Addr = ns["IPAddress"].as_str().unwrap().parse().unwrap();
    assert_eq!(ns["Gateway"], "10.87.0.1");
    assert_eq!(ns["IPPrefixLen"], 16);
    let o = ip.octets();
    assert_eq!(ns["MacAddress"], format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]));
    assert_eq!(ns["Ports"]["80/tcp"], serde_json::json!([{"HostIp": "0.0.0.0", "HostPort": "8080"}]));
    assert_eq!(ns["Networks"]["bridge"]["IPAddress"], ip.to_string());
    assert_eq!(ns["SandboxKey"], e.env.root().join("network/netns").join(&id).display().to_string());
    assert_eq!(e.ok(&["port", "web"]), "80/tcp -> 0.0.0.0:8080\n");
    assert_eq!(e.ok(&["port", "web", "80"]), "0.0.0.0:8080\n");
    assert!(e.ok(&["ps"]).contains("0.0.0.0:8080->80/tcp"));
    let inside = e.exec("web", "ip -4 -o addr show dev eth0 | awk '{print $4}'; ip route | grep default");
    assert_eq!(inside, format!("{ip}/16\ndefault via 10.87.0.1 dev eth0"));

    // From another container: the host's address and the gateway (hairpin through DNAT), and
    // the container's own address directly.
    for url in ["http://192.0.2.1:8080/passwd", "http://10.87.0.1:8080/passwd", &format!("http://{ip}:80/passwd")] {
        let out = e.ok(&["run", "--rm", "busybox", "wget", "-qO-", url]);
        assert!(out.contains("root:x:0:0"), "{url}: {out}");
    }
    // Out to "upstream": masqueraded behind the host's address.
    serve_peer(&e.upstream, 9000);
    let out = e.ok(&["run", "--rm", "busybox", "wget", "-qO-", "http://192.0.2.2:9000/"]);
    assert_eq!(out, HOST_IP.to_string());

    // The port is taken: refused, clearly, and nothing of the second container's network made.
    let mid = e.quiet();
    let err = e.fails(&["run", "-d", "--rm", "-p", "8080:80", "busybox", "sleep", "100"]);
    assert!(err.contains("tcp/*:8080: already published by container"), "{err}");
    e.settled(&mid, "after the refused run");

    // Port ranges, as docker's: one to one, and a host range for one port, which takes the
    // first port of it that is free (8080 is web's, 8081 and 8082 this container's own).
    e.ok(&[
        "run",
        "-d",
        "--name",
        "ranges",
        "-p",
        "8081-8082:80-81",
        "-p",
        "8080-8090:90",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    assert_eq!(e.ok(&["port", "ranges"]), "80/tcp -> 0.0.0.0:8081\n81/tcp -> 0.0.0.0:8082\n90/tcp -> 0.0.0.0:8083\n");
    let answer = until("httpd answers on the range", || get(&e.host, sa(Ipv4Addr::LOCALHOST, 8081), "/passwd"));
    assert!(answer.contains("root:x:0:0"), "{answer}");
    // A fixed host port is the binding's own, whatever the order: the range takes another.
    e.ok(&["run", "-d", "--name", "fixed", "-p", "8000-8001:1000", "-p", "8000:80", "busybox", "sleep", "100"]);
    assert_eq!(e.ok(&["port", "fixed"]), "1000/tcp -> 0.0.0.0:8001\n80/tcp -> 0.0.0.0:8000\n");
    e.ok(&["rm", "-f", "fixed"]);
    let err = e.fails(&["run", "-d", "--rm", "-p", "8000-8001:80-82", "busybox", "true"]);
    assert!(err.contains("invalid ranges specified for container and host ports"), "{err}");
    e.ok(&["rm", "-f", "ranges"]);

    e.ok(&["rm", "-f", "web"]);
    assert!(get(&e.host, sa(Ipv4Addr::LOCALHOST, 8080), "/passwd").is_none(), "the port is gone with the container");
    e.settled(&before, "at the end");
}

/// Lines of a container's /etc/hosts that name other containers (after docker's and its own).
fn peers(e: &NetEnv, name: &str) -> Vec<String> {
    let hosts = e.exec(name, "cat /etc/hosts");
    hosts.lines().skip(7).map(|l| l.split('\t').nth(1).unwrap_or("").split(' ').next().unwrap_or("").to_string()).collect()
}

#[test]
fn user_network_names_and_network_commands() {
    let e = NetEnv::new("user");
    let before = baseline(&e);
    let id = e.ok(&["network", "create", "--subnet", "10.91.0.0/24", "--label", "team=a", "appnet"]).trim().to_string();
    assert_eq!(id.len(), 64);
    // Refused clearly: a name taken, a subnet overlapping a route, another driver.
    assert!(e.fails(&["network", "create", "appnet"]).contains("network with name appnet already exists"));
    let err = e.fails(&["network", "create", "--subnet", "10.91.0.0/25", "x"]);
    assert!(err.contains("subnet 10.91.0.0/25 overlaps the host's route to 10.91.0.0/24"), "{err}");
    let err = e.fails(&["network", "create", "--subnet", "192.0.2.0/24", "x"]);
    assert!(err.contains("overlaps the host's route to 192.0.2.0/24"), "{err}");
    assert!(e.fails(&["network", "create", "-d", "macvlan", "x"]).contains("plugin \"macvlan\" not found"));
    let ls = e.ok(&["network", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]);
    let names: Vec<&str> = lines[1..].iter().map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    assert_eq!(names, ["appnet", "bridge", "host", "none"]);
    assert!(lines[1].starts_with(&format!("{}   appnet   bridge   local", &id[..12])), "{ls}");
    assert_eq!(e.ok(&["network", "ls", "-q", "--filter", "type=custom", "--no-trunc"]), format!("{id}\n"));
    assert_eq!(e.ok(&["network", "ls", "--filter", "label=team=a", "--format", "{{.Name}} {{.Driver}}"]), "appnet bridge\n");

    e.ok(&["run", "-d", "--network", "appnet", "--name", "web", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc"]);
    e.ok(&["run", "-d", "--network", "appnet", "--name", "cli", "busybox", "sleep", "1000"]);
    // By name, from a container started before and from one started after.
    let out = e.ok(&["exec", "cli", "wget", "-qO-", "http://web/passwd"]);
    assert!(out.contains("root:x:0:0"), "{out}");
    let out = e.ok(&["run", "--rm", "--network", "appnet", "busybox", "wget", "-qO-", "http://web/passwd"]);
    assert!(out.contains("root:x:0:0"), "{out}");
    assert_eq!(peers(&e, "web"), ["cli"]);
    assert_eq!(peers(&e, "cli"), ["web"]);
    // Not on the default bridge (docker's gives no names either).
    assert!(!e.ctl(&["run", "--rm", "busybox", "wget", "-T", "2", "-qO-", "http://web/passwd"]).status.success());

    let v: Value = serde_json::from_str(&e.ok(&["network", "inspect", "appnet"])).unwrap();
    let n = &v[0];
    assert_eq!((n["Name"].as_str(), n["Driver"].as_str(), n["Scope"].as_str()), (Some("appnet"), Some("bridge"), Some("local")));
    assert_eq!(n["IPAM"]["Config"], serde_json::json!([{"Subnet": "10.91.0.0/24", "Gateway": "10.91.0.1"}]));
    assert_eq!(n["Labels"], serde_json::json!({"team": "a"}));
    let members: Vec<&str> = n["Containers"].as_object().unwrap().values().map(|c| c["Name"].as_str().unwrap()).collect();
    assert_eq!(members.len(), 2, "{n}");
    let web_ip = e.inspect("web")["NetworkSettings"]["Networks"]["appnet"]["IPAddress"].as_str().unwrap().to_string();
    assert!(web_ip.starts_with("10.91.0."), "{web_ip}");
    assert_eq!(e.ok(&["network", "inspect", "-f", "{{.Name}} {{.Internal}}", "appnet"]), "appnet false\n");
    let err = e.fails(&["network", "rm", "appnet"]);
    assert!(err.contains("has active endpoints"), "{err}");
    assert!(e.fails(&["network", "rm", "bridge"]).contains("pre-defined network"));

    // connect / disconnect a running container on the default bridge.
    e.ok(&["run", "-d", "--name", "other", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc"]);
    e.ok(&["network", "connect", "appnet", "other"]);
    assert!(e.fails(&["network", "connect", "appnet", "other"]).contains("already exists in network appnet"));
    assert_eq!(e.exec("other", "ip -o link | grep -c eth"), "2");
    assert_eq!(peers(&e, "cli"), ["web", "other"]);
    let out = e.ok(&["exec", "cli", "wget", "-qO-", "http://other/passwd"]);
    assert!(out.contains("root:x:0:0"), "{out}");
    e.ok(&["network", "disconnect", "appnet", "other"]);
    assert!(e.fails(&["network", "disconnect", "appnet", "other"]).contains("is not connected to network appnet"));
    assert_eq!(e.exec("other", "ip -o link | grep -c eth"), "1");
    assert_eq!(peers(&e, "cli"), ["web"]);
    // A stopped container leaves the others' hosts files; rm takes it off the network.
    e.ok(&["stop", "-t", "0", "web"]);
    assert_eq!(peers(&e, "cli"), Vec::<String>::new());
    e.ok(&["start", "web"]);
    assert_eq!(peers(&e, "cli"), ["web"]);
    e.ok(&["rm", "-f", "web", "cli", "other"]);
    assert_eq!(e.env.db("SELECT count(*) FROM leases"), "0");

    // prune removes networks no container uses; rm the rest.
    e.ok(&["network", "create", "spare"]);
    e.ok(&["create", "--network", "spare", "--name", "idle", "busybox", "true"]);
    assert_eq!(e.ok(&["network", "prune", "-f"]), "Deleted Networks:\nappnet\n");
    e.ok(&["rm", "idle"]);
    assert_eq!(e.ok(&["network", "rm", "spare"]), "spare\n");
    assert!(e.fails(&["network", "inspect", "spare"]).contains("network spare not found"));
    e.settled(&before, "at the end");
}

#[test]
fn fifty_concurrent_runs_get_distinct_addresses() {
    let e = NetEnv::new("fifty");
    let before = baseline(&e);
    let children: Vec<_> = (0..50)
        .map(|i| e.cmd(&["run", "-d", "--name", &format!("c{i}"), "busybox", "sleep", "1000"]).stdout(Stdio::piped()).spawn().unwrap())
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut ips: Vec<String> =
        (0..50).map(|i| e.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &format!("c{i}")]).trim().to_string()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50, "{ips:?}");
    assert_eq!(e.env.db("SELECT count(DISTINCT ip) FROM leases"), "50");
    let names: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    e.ok(&args);
    e.settled(&before, "at the end");
}

fn sa6(ip: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(ip), port)
}

/// An HTTP server in a container on port 80 whose /cgi-bin/peer answers with the address the
/// connection came from (busybox httpd's REMOTE_ADDR).
const PEER_HTTPD: &str = "mkdir -p /tmp/w/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' \
    > /tmp/w/cgi-bin/peer && chmod +x /tmp/w/cgi-bin/peer && exec httpd -f -p 80 -h /tmp/w";

#[test]
fn ipv6_network_names_egress_published_port_concurrency_and_bad_input() {
    let e = NetEnv::new("v6");
    let before = baseline(&e);
    // The default bridge stays IPv4 only, as docker's.
    let v: Value = serde_json::from_str(&e.ok(&["network", "inspect", "bridge"])).unwrap();
    assert_eq!((v[0]["EnableIPv6"].clone(), v[0]["IPAM"]["Config"].as_array().unwrap().len()), (Value::Bool(false), 1));

    // Bad input: a clear error naming the flag, nothing made.
    for (args, want) in [
        (vec!["--ipv6", "--subnet", "fd00:zz::/64"], "--subnet: subnet \"fd00:zz::/64\": not an IPv6 address"),
        (vec!["--ipv6", "--subnet", "fd00:1::1/64"], "host bits are set (the network address is fd00:1::/64)"),
        (vec!["--ipv6", "--subnet", "fe80::/64"], "overlaps the link-local range fe80::/10"),
        (vec!["--ipv6", "--subnet", "ff02::/64"], "overlaps the multicast range"),
        (vec!["--ipv6", "--subnet", "fd00:1::/127"], "prefix length must be between 8 and 126"),
        (vec!["--subnet", "fd00:1::/64"], "--subnet fd00:1::/64: an IPv6 subnet needs --ipv6"),
        (
            vec!["--ipv6", "--subnet", "fd00:1::/64", "--gateway", "fd00:2::1"],
            "--gateway fd00:2::1: not a host address of --subnet fd00:1::/64",
        ),
        (vec!["--ipv6", "--subnet", "fd00:1::/64", "--gateway", "fd00:1::"], "--gateway fd00:1::: not a host address"),
        (vec!["--ipv6", "--gateway", "fd00:1::1"], "--gateway with an IPv6 address needs an IPv6 --subnet"),
        (vec!["--ipv6", "--subnet", "fd00:1::/64", "--subnet", "fd00:2::/64"], "--subnet fd00:2::/64: one subnet per address family"),
        (vec!["--ipv6", "--subnet", "2001:db8::/48"], "--subnet 2001:db8::/48 overlaps the host's route to 2001:db8::/64"),
    ] {
        let mut a = vec!["network", "create"];
        a.extend(args.iter().copied());
        a.push("bad");
        let err = e.fails(&a);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    e.settled(&before, "at the end");

    // Dual stack: the IPv4 subnet given (or picked) as well.
    e.ok(&["network", "create", "--ipv6", "--subnet", "fd00:1::/64", "--subnet", "10.92.0.0/24", "v6net"]);
    let err = e.fails(&["network", "create", "--ipv6", "--subnet", "fd00:1::/80", "other"]);
    assert!(err.contains("--subnet fd00:1::/80 overlaps network v6net (fd00:1::/64)"), "{err}");
    // Without --subnet: a ULA /64 of one /48, a new one per network.
    e.ok(&["network", "create", "--ipv6", "auto1"]);
    e.ok(&["network", "create", "--ipv6", "auto2"]);
    let pool = |n: &str| {
        let v: Value = serde_json::from_str(&e.ok(&["network", "inspect", n])).unwrap();
        v[0]["IPAM"]["Config"].as_array().unwrap().iter().map(|c| c["Subnet"].as_str().unwrap().to_string()).collect::<Vec<_>>().join(" ")
    };
    let (a1, a2) = (pool("auto1"), pool("auto2"));
    let s1 = a1.split(' ').nth(1).unwrap().to_string();
    let s2 = a2.split(' ').nth(1).unwrap().to_string();
    assert!(s1.starts_with("fd") && s1.ends_with("::/64") && s1 != s2, "{a1} / {a2}");
    assert_eq!(s1.split(':').take(3).collect::<Vec<_>>(), s2.split(':').take(3).collect::<Vec<_>>(), "one /48: {s1} {s2}");
    assert!(a1.starts_with("10.90."), "{a1}");
    e.ok(&["network", "rm", "auto1", "auto2"]);

    let n: Value = serde_json::from_str(&e.ok(&["network", "inspect", "v6net"])).unwrap();
    assert_eq!(n[0]["EnableIPv6"], true);
    assert_eq!(
        n[0]["IPAM"]["Config"],
        serde_json::json!([{"Subnet": "10.92.0.0/24", "Gateway": "10.92.0.1"}, {"Subnet": "fd00:1::/64", "Gateway": "fd00:1::1"}])
    );
    assert_eq!(e.ok(&["network", "ls", "--filter", "name=v6net", "--format", "{{.Name}} {{.IPv6}}"]), "v6net true\n");

    e.ok(&["run", "-d", "--network", "v6net", "-p", "8080:80", "--name", "web", "busybox", "sh", "-c", PEER_HTTPD]);
    e.ok(&["run", "-d", "--network", "v6net", "--name", "cli", "busybox", "sleep", "1000"]);
    let ep = e.inspect("web")["NetworkSettings"]["Networks"]["v6net"].clone();
    assert_eq!(
        (ep["GlobalIPv6Address"].as_str(), ep["GlobalIPv6PrefixLen"].as_u64(), ep["IPv6Gateway"].as_str()),
        (Some("fd00:1::2"), Some(64), Some("fd00:1::1"))
    );
    assert_eq!(e.inspect("cli")["NetworkSettings"]["Networks"]["v6net"]["GlobalIPv6Address"], "fd00:1::3");
    let n: Value = serde_json::from_str(&e.ok(&["network", "inspect", "v6net"])).unwrap();
    let v6: Vec<&str> = n[0]["Containers"].as_object().unwrap().values().map(|c| c["IPv6Address"].as_str().unwrap()).collect();
    assert!(v6.contains(&"fd00:1::2/64") && v6.contains(&"fd00:1::3/64"), "{v6:?}");
    let inside = e.exec("web", "ip -6 -o addr show dev eth0 scope global | awk '{print $4}'; ip -6 route | grep default | cut -d' ' -f1-5");
    assert_eq!(inside, "fd00:1::2/64\ndefault via fd00:1::1 dev eth0");
    // Names resolve to both addresses (ping -6 by name); TCP over IPv6 between the two. (By
    // name, TCP clients prefer IPv4 to a ULA address, RFC 6724's order, as with docker.)
    let hosts = e.exec("cli", "grep web /etc/hosts | cut -f1");
    assert_eq!(hosts, "10.92.0.2\nfd00:1::2");
    assert_eq!(e.exec("cli", "grep -w $(hostname) /etc/hosts | cut -f1"), "10.92.0.3\nfd00:1::3");
    e.ok(&["exec", "cli", "ping", "-6", "-c", "1", "-W", "5", "web"]);
    let peer = until("web answers over IPv6", || {
        let o = e.ctl(&["exec", "cli", "wget", "-qO-", "http://[fd00:1::2]/cgi-bin/peer"]);
        o.status.success().then(|| out(&o).trim().to_string())
    });
    assert_eq!(peer, "[fd00:1::3]");

    // The published port on the host's IPv6 address: from "another host" (the client's
    // address kept) and from the host itself; not on ::1 (no route_localnet for IPv6:
    // refused at once, not DNATed to a container that would drop it).
    let a = until("published port over IPv6 from upstream", || get(&e.upstream, sa6(HOST_IP6, 8080), "/cgi-bin/peer"));
    assert!(a.starts_with("HTTP/1.") && a.trim_end().ends_with(&format!("[{UPSTREAM_IP6}]")), "{a}");
    let a = get(&e.host, sa6(HOST_IP6, 8080), "/cgi-bin/peer").unwrap();
    assert!(a.trim_end().ends_with(&format!("[{HOST_IP6}]")), "{a}");
    let a = get(&e.host, sa(HOST_IP, 8080), "/cgi-bin/peer").unwrap();
    assert!(a.trim_end().ends_with(&format!("[::ffff:{HOST_IP}]")), "IPv4 still: {a}");
    let refused =
        e.host.run(|| Ok(TcpStream::connect_timeout(&sa6(Ipv6Addr::LOCALHOST, 8080), Duration::from_secs(2)).map_err(|x| x.kind())));
    assert_eq!(refused.unwrap().err(), Some(std::io::ErrorKind::ConnectionRefused));
    // Egress over IPv6: masqueraded behind the host's IPv6 address.
    let l = e.upstream.run(|| Ok(TcpListener::bind(sa6(Ipv6Addr::UNSPECIFIED, 9006))?)).unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let peer = c.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
            let _ = c.write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{peer}", peer.len()).as_bytes());
        }
    });
    let o = e.ok(&["exec", "cli", "wget", "-qO-", "http://[2001:db8::2]:9006/"]);
    assert_eq!(o, HOST_IP6.to_string());

    // 20 at once: distinct IPv6 addresses, all in the subnet.
    let children: Vec<_> = (0..20)
        .map(|i| {
            e.cmd(&["run", "-d", "--network", "v6net", "--name", &format!("m{i}"), "busybox", "sleep", "1000"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut ips: Vec<Ipv6Addr> = (0..20)
        .map(|i| {
            e.inspect(&format!("m{i}"))["NetworkSettings"]["Networks"]["v6net"]["GlobalIPv6Address"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "{ips:?}");
    assert!(ips.iter().all(|ip| ip.segments()[..4] == [0xfd00, 1, 0, 0]), "{ips:?}");
    assert_eq!(e.env.db("SELECT count(DISTINCT ip6) FROM leases"), "22");
    let names: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let mut args = vec!["rm", "-f", "web", "cli"];
    args.extend(names.iter().map(String::as_str));
    e.ok(&args);

    // A tiny subnet runs out: the third container is refused and leaves nothing.
    e.ok(&["network", "create", "--ipv6", "--subnet", "fd00:9::/126", "tiny"]);
    e.ok(&["run", "-d", "--network", "tiny", "--name", "t1", "busybox", "sleep", "1000"]);
    e.ok(&["run", "-d", "--network", "tiny", "--name", "t2", "busybox", "sleep", "1000"]);
    let mid = e.quiet();
    let err = e.fails(&["run", "-d", "--network", "tiny", "--name", "t3", "busybox", "sleep", "1000"]);
    assert!(err.contains("no free IPv6 address left in fd00:9::/126"), "{err}");
    e.settled(&mid, "after the refused run");
    e.ok(&["rm", "-f", "t1", "t2", "t3"]);
    e.ok(&["network", "rm", "tiny", "v6net"]);
    // The bridges, their addresses and routes, table ip6 capsa and the leases are gone.
    e.settled(&before, "at the end");
}

/// The pids of processes whose command line has all of `words`.
fn pids_with(words: &[&str]) -> Vec<i32> {
    let mut v = Vec::new();
    for d in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = d.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let cmd = String::from_utf8_lossy(&std::fs::read(d.path().join("cmdline")).unwrap_or_default()).replace('\0', " ");
        if words.iter().all(|w| cmd.contains(w)) {
            v.push(pid);
        }
    }
    v
}

#[test]
fn kill_9_in_the_middle_of_run_then_ps_and_rm_leave_nothing() {
    let e = NetEnv::new("kill");
    let before = baseline(&e);
    let root = e.env.root().display().to_string();
    // Kills at several points of `run -d -p`: while it creates, while its monitor attaches the
    // network, after the container started.
    let mut seen = Vec::new();
    // Delays step by 3 ms until a kill has hit a start half-way and one a running container
    // (how long a start takes depends on the machine's load).
    for (i, ms) in (0..400u64).map(|i| 2 + 3 * i).enumerate() {
        let half = seen.iter().any(|s: &String| s.contains("\"starting\" network made"));
        if half && seen.iter().any(|s| s.contains("\"running\"")) {
            break;
        }
        let name = format!("k{i}");
        let port = format!("{}:80", 9100 + i % 50);
        let mut run =
            e.cmd(&["run", "-d", "-p", &port, "--name", &name, "busybox", "sleep", "1000"]).stdout(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        for pid in pids_with(&[&root, "__monitor"]).into_iter().chain([run.id() as i32]) {
            // SAFETY: kill(2) with a pid and a signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = run.wait();
        // What the kill left: the row's state, and whether network pieces were made.
        let state = e.env.db(&format!("SELECT state FROM containers WHERE name = '{name}'"));
        let made = e.listing() != before;
        seen.push(format!("{ms} ms: {state:?} {}", if made { "network made" } else { "no network" }));
        // ps -a reconciles; rm -f removes whatever is there.
        e.ok(&["ps", "-a"]);
        let ids = e.env.db("SELECT id FROM containers");
        for id in ids.lines() {
            e.ok(&["rm", "-f", id]);
        }
        e.settled(&before, &format!("after a kill -9 at {ms} ms"));
        let nsdir = e.env.root().join("network/netns");
        let left: Vec<_> = std::fs::read_dir(&nsdir).map(|r| r.flatten().map(|x| x.file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "namespace files left: {left:?}");
    }
    eprintln!("kills: {seen:?}");
    // At least one kill hit a start half-way, with network pieces made and no monitor left.
    assert!(seen.iter().any(|s| s.contains("\"starting\" network made")), "{seen:?}");
}

#[test]
fn dns_add_host_hostname_publish_all_and_a_hostile_image() {
    let e = NetEnv::new("etc");
    let before = baseline(&e);
    // An image whose /etc/hosts and /etc/resolv.conf are symlinks out of the rootfs, and
    // which exposes two ports.
    let evil = e.env.dir.join("evil-target");
    let l = Layer::new()
        .busybox()
        .symlink("etc/hosts", &format!("/../../../../../..{}", evil.join("hosts").display()))
        .symlink("etc/resolv.conf", &format!("../../../../../../..{}", evil.join("resolv.conf").display()))
        .tar();
    let cfg = config(std::slice::from_ref(&l), serde_json::json!({"Cmd": ["sh"], "ExposedPorts": {"80/tcp": {}, "53/udp": {}}}));
    let p = e.env.write("evil.tar", &docker_archive(&[l], &cfg, &["evil:1"]));
    e.ok(&["load", "-i", p.to_str().unwrap()]);
    std::fs::create_dir_all(&evil).unwrap();

    let out = e.ok(&[
        "run",
        "--rm",
        "--hostname",
        "box",
        "--dns",
        "192.0.2.53",
        "--add-host",
        "db:10.1.2.3",
        "evil:1",
        "sh",
        "-c",
        "hostname; cat /etc/hostname; grep -v '^#' /etc/resolv.conf | grep nameserver; grep -E 'db|box' /etc/hosts",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["box", "box", "nameserver 192.0.2.53"], "{out}");
    assert!(lines[3].starts_with("10.1.2.3\tdb"), "{out}");
    assert!(lines[4].starts_with("10.87.0.") && lines[4].ends_with("\tbox"), "{out}");
    assert!(!evil.join("hosts").exists() && !evil.join("resolv.conf").exists(), "wrote through the image's symlinks");
    // resolv.conf from the host's, loopback nameservers dropped (the test's host namespace
    // shares the machine's /etc/resolv.conf).
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let got = e.ok(&["run", "--rm", "busybox", "cat", "/etc/resolv.conf"]);
    for l in host.lines().filter(|l| l.starts_with("nameserver")) {
        let loopback = l.split_whitespace().nth(1).and_then(|a| a.parse::<IpAddr>().ok()).is_some_and(|a| a.is_loopback());
        assert_eq!(got.contains(l), !loopback, "{l} in {got}");
    }

    // -P: the exposed ports on random host ports from the kernel's ephemeral range.
    e.ok(&["run", "-d", "-P", "--name", "all", "evil:1", "httpd", "-f", "-p", "80", "-h", "/etc"]);
    let ports = e.ok(&["port", "all"]);
    let (lo, hi) = {
        let r = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let v: Vec<u16> = r.split_whitespace().map(|x| x.parse().unwrap()).collect();
        (v[0], v[1])
    };
    let mut tcp = 0;
    for l in ports.lines() {
        let (what, host) = l.split_once(" -> ").unwrap();
        let port: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
        assert!((lo..=hi).contains(&port), "{l}");
        if what == "80/tcp" {
            tcp = port;
        }
    }
    assert_eq!(ports.lines().count(), 2, "{ports}");
    let answer = until("httpd answers on the random port", || get(&e.host, sa(HOST_IP, tcp), "/passwd"));
    assert!(answer.contains("root:x:0:0"), "{answer}");
    // -p CONTAINERPORT alone: random too.
    e.ok(&["run", "-d", "-p", "127.0.0.1::80", "--name", "one", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc"]);
    let host = e.ok(&["port", "one", "80/tcp"]);
    assert!(host.starts_with("127.0.0.1:"), "{host}");

    // A port a process of the host listens on is refused; bad -p values name the field.
    let _busy = e.host.run(|| Ok(TcpListener::bind(("0.0.0.0", 8099))?)).unwrap();
    let mid = e.quiet();
    let err = e.fails(&["run", "--rm", "-p", "8099:80", "busybox", "true"]);
    assert!(err.contains("Bind for 0.0.0.0:8099 failed: port is already allocated"), "{err}");
    e.settled(&mid, "after the refused run");
    for (bad, why) in [("-p=80:80/sctp", "sctp"), ("-p=x:80", "invalid host port"), ("-p=1000-1001:80-82", "invalid ranges")] {
        let o = e.ctl(&["run", "--rm", bad, "busybox", "true"]);
        assert_eq!(o.status.code(), Some(125), "{bad}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(why), "{bad}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let err = e.fails(&["run", "--rm", "--network", "nosuch", "busybox", "true"]);
    assert!(err.contains("network nosuch not found"), "{err}");

    // --network none: lo only; host: the host namespace's links; container:X: X's.
    assert_eq!(e.ok(&["run", "--rm", "--network", "none", "busybox", "sh", "-c", "ip -o link | wc -l"]).trim(), "1");
    let links = e.ok(&["run", "--rm", "--network", "host", "busybox", "ip", "-o", "link"]);
    assert!(links.contains("uplink"), "{links}");
    let all_ip = e.inspect("all")["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    let joined = e.ok(&["run", "--rm", "--network", "container:all", "busybox", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(joined.contains(&format!("inet {all_ip}/16")), "{joined}");
    e.ok(&["rm", "-f", "all", "one"]);
    e.settled(&before, "at the end");
}

#[test]
fn only_published_ports_are_reachable_from_outside_networks_are_isolated_and_router_ads_are_ignored() {
    let e = NetEnv::new("fw");
    let before = baseline(&e);
    e.ok(&["network", "create", "--ipv6", "--subnet", "fd00:77::/64", "--subnet", "10.77.0.0/24", "neta"]);
    e.ok(&["network", "create", "--subnet", "10.78.0.0/24", "netb"]);
    e.ok(&["run", "-d", "--network", "neta", "--name", "priv", "busybox", "httpd", "-f", "-p", "81", "-h", "/etc"]);
    e.ok(&["run", "-d", "--network", "neta", "-p", "8181:80", "--name", "pub", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc"]);
    let ip = |n: &str| e.inspect(n)["NetworkSettings"]["Networks"]["neta"]["IPAddress"].as_str().unwrap().parse::<Ipv4Addr>().unwrap();
    let (priv4, pub4) = (ip("priv"), ip("pub"));
    let priv6: Ipv6Addr = e.inspect("priv")["NetworkSettings"]["Networks"]["neta"]["GlobalIPv6Address"].as_str().unwrap().parse().unwrap();
    // The host itself reaches a container's address (as docker's), so the server is up.
    until("priv answers the host", || get(&e.host, sa(priv4, 81), "/passwd"));
    // "Upstream" routes the subnets to the host, as a real network would with a routed subnet.
    let Ns::Path(up) = &e.upstream else { panic!("upstream is a path") };
    let up = format!("--net={}", up.display());
    run("nsenter", &[&up, "ip", "route", "add", "10.77.0.0/24", "via", &HOST_IP.to_string()]);
    run("nsenter", &[&up, "ip", "-6", "route", "add", "fd00:77::/64", "via", &HOST_IP6.to_string()]);
    // Only the published port gets in from outside; a container port that is not published,
    // or published on 127.0.0.1 only, does not (docker's DOCKER chain).
    let a = until("the published port from upstream", || get(&e.upstream, sa(HOST_IP, 8181), "/passwd"));
    assert!(a.contains("root:x:0:0"), "{a}");
    assert!(get(&e.upstream, sa(priv4, 81), "/passwd").is_none(), "an unpublished port reached from upstream");
    assert!(get(&e.upstream, sa6(priv6, 81), "/passwd").is_none(), "an unpublished port reached from upstream over IPv6");
    assert!(get(&e.upstream, sa(pub4, 80), "/passwd").is_none(), "a published container port reached directly from upstream");
    // Containers of one network reach each other; another network's do not (docker's
    // DOCKER-ISOLATION), but they do reach its published port on the host's address.
    let url = format!("http://{priv4}:81/passwd");
    assert!(e.ok(&["run", "--rm", "--network", "neta", "busybox", "wget", "-qO-", &url]).contains("root:x:0:0"));
    let o = e.ctl(&["run", "--rm", "--network", "netb", "busybox", "wget", "-T", "2", "-qO-", &url]);
    assert!(!o.status.success(), "netb reached neta's container: {}", out(&o));
    let o = e.ok(&["run", "--rm", "--network", "netb", "busybox", "wget", "-qO-", "http://192.0.2.1:8181/passwd"]);
    assert!(o.contains("root:x:0:0"), "{o}");
    // Router advertisements: neither the host's bridges nor a container take them.
    let bridges: Vec<String> =
        e.host.run(|| Rtnl::open()?.links()).unwrap().into_iter().filter(|l| l.kind.as_deref() == Some("bridge")).map(|l| l.name).collect();
    assert_eq!(bridges.len(), 3, "{bridges:?}");
    for b in &bridges {
        let v = e.host.run(|| Ok(std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{b}/accept_ra"))?)).unwrap();
        assert_eq!(v.trim(), "0", "accept_ra of {b}");
    }
    assert_eq!(
        e.exec(
            "priv",
            "cat /proc/sys/net/ipv6/conf/all/accept_ra /proc/sys/net/ipv6/conf/default/accept_ra /proc/sys/net/ipv6/conf/eth0/accept_ra"
        ),
        "0\n0\n0"
    );
    e.ok(&["rm", "-f", "priv", "pub"]);
    e.ok(&["network", "rm", "neta", "netb"]);
    e.settled(&before, "at the end");
}

#[test]
fn network_rm_racing_run_never_leaves_a_container_without_its_bridge() {
    let e = NetEnv::new("rmrace");
    let before = baseline(&e);
    let mut removed = 0;
    for i in 0..16u64 {
        e.ok(&["network", "create", "--subnet", "10.79.0.0/24", "rx"]);
        let mut run = e.cmd(&["run", "-d", "--name", "rxc", "--network", "rx", "busybox", "sleep", "100"]);
        let child = run.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // 0 to 112 ms: the moment `run` leases an address falls somewhere in there.
        std::thread::sleep(Duration::from_millis(i * i / 2));
        let rm = e.ctl(&["network", "rm", "rx"]);
        let _ = child.wait_with_output();
        let bridge_up =
            e.host.run(|| Ok(Rtnl::open()?.links()?.iter().any(|l| l.kind.as_deref() == Some("bridge") && l.name != "capsa0"))).unwrap();
        let listed = e.ok(&["network", "ls", "--format", "{{.Name}}"]).lines().any(|l| l == "rx");
        let running = e.ok(&["ps", "--format", "{{.Names}}"]).lines().any(|l| l == "rxc");
        if rm.status.success() {
            removed += 1;
            assert!(!listed && !bridge_up && !running, "round {i}: removed, yet listed {listed}, bridge {bridge_up}, running {running}");
        } else {
            assert!(listed && bridge_up, "round {i}: refused ({}), yet listed {listed}, bridge {bridge_up}", err(&rm));
        }
        let _ = e.ctl(&["rm", "-f", "rxc"]);
        let _ = e.ctl(&["network", "rm", "rx"]);
    }
    eprintln!("network rm won {removed} of 16 rounds");
    // A `network create` killed between making its bridge and marking it as capsa's: the
    // bridge (down, unmarked, no address, named after the network's id) goes with `rm`.
    e.ok(&["network", "create", "--subnet", "10.79.0.0/24", "killed"]);
    let v: Value = serde_json::from_str(&e.ok(&["network", "inspect", "killed"])).unwrap();
    let br = format!("br-{}", &v[0]["Id"].as_str().unwrap()[..12]);
    e.host
        .run(|| {
            let mut rt = Rtnl::open()?;
            let l = rt.link(&br)?.unwrap();
            rt.set_down(l.index)?;
            rt.set_alias(l.index, "")?;
            for (a, p) in rt.addrs(l.index)? {
                rt.del_addr(l.index, a, p)?;
            }
            Ok(())
        })
        .unwrap();
    e.ok(&["network", "rm", "killed"]);
    e.settled(&before, "at the end");
}

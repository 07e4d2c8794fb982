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
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
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

    /// What the host namespace holds: its links, its nftables ruleset, the namespaces
    /// mounted under the store, the leases.
    fn listing(&self) -> (Vec<String>, String, Vec<PathBuf>, String) {
        let links = self.host.run(|| Ok(Rtnl::open()?.links()?.into_iter().map(|l| l.name).collect::<Vec<_>>())).unwrap();
        let rules = self.host.run(|| Ok(run("nft", &["list", "ruleset"]))).unwrap();
        let d = self.env.root().join("network/netns");
        let mounts = if d.exists() { netns::mounts_under(&d).unwrap() } else { Vec::new() };
        (links, rules, mounts, self.env.db("SELECT count(*) FROM leases"))
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
fn baseline(e: &NetEnv) -> (Vec<String>, String, Vec<PathBuf>, String) {
    e.ok(&["run", "--rm", "busybox", "true"]);
    e.listing()
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
    let mid = e.listing();
    let err = e.fails(&["run", "-d", "--rm", "-p", "8080:80", "busybox", "sleep", "100"]);
    assert!(err.contains("tcp/*:8080: already published by container"), "{err}");
    assert_eq!(mid, e.listing());

    e.ok(&["rm", "-f", "web"]);
    assert!(get(&e.host, sa(Ipv4Addr::LOCALHOST, 8080), "/passwd").is_none(), "the port is gone with the container");
    assert_eq!(before, e.listing());
}

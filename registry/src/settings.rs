//! Where registries are and how to reach them, read from the files docker users already
//! have:
//!
//! * `daemon.json` (`$CAPSA_DAEMON_JSON`, else `/etc/capsa/daemon.json`, else docker's
//!   `/etc/docker/daemon.json`): `insecure-registries` (`host[:port]` or an IPv4 CIDR),
//!   `registry-mirrors` (URLs tried before docker.io for pulls),
//!   `max-concurrent-downloads` / `max-concurrent-uploads` (default 3, as docker);
//! * CA and client certificates: `<dir>/<host[:port]>/*.crt` (CAs) and `*.cert` + `*.key`
//!   (a client certificate), docker's `certs.d` convention, in `$CAPSA_CERTS_D` if set, else
//!   `/etc/capsa/certs.d`, `/etc/docker/certs.d` and `/etc/containers/certs.d`;
//! * credentials: docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//!   `~/.docker/config.json`), see [`crate::auth`].
//!
//! Names are those of [`capsa_image::reference`]: `docker.io/library/busybox` is served by
//! `registry-1.docker.io` (after the mirrors); any other first component is the host.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use capsa_image::{Error, Result};

/// docker.io's API host.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

#[derive(Debug, Clone)]
pub struct Settings {
    pub insecure: Vec<String>,
    pub mirrors: Vec<String>,
    pub certs_dirs: Vec<PathBuf>,
    pub docker_config: PathBuf,
    pub max_downloads: usize,
    pub max_uploads: usize,
    pub timeout_connect: Duration,
    /// How long a read or write may stall before the transfer is given up (and resumed).
    pub timeout_idle: Duration,
}

/// How to speak to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HTTPS, verified.
    Https,
    /// A URL given with http:// (a mirror).
    Http,
    /// A loopback registry: HTTPS, verified, or plain HTTP when the server does not speak
    /// TLS at all. A certificate that fails verification is an error, never a downgrade.
    HttpsOrHttp,
    /// A registry marked insecure: HTTPS without verification, else plain HTTP (docker).
    Insecure,
}

/// One place to send requests for a repository.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host[:port]`, as in certs.d and in config.json.
    pub host: String,
    /// What the image name calls the registry (`docker.io` for the Hub and its mirrors).
    pub domain: String,
    pub scheme: Scheme,
    /// A path prefix of a mirror URL (usually empty).
    pub prefix: String,
    pub mirror: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            insecure: Vec::new(),
            mirrors: Vec::new(),
            certs_dirs: vec!["/etc/capsa/certs.d".into(), "/etc/docker/certs.d".into(), "/etc/containers/certs.d".into()],
            docker_config: default_docker_config(),
            max_downloads: 3,
            max_uploads: 3,
            timeout_connect: Duration::from_secs(30),
            timeout_idle: Duration::from_secs(60),
        }
    }
}

fn default_docker_config() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker/config.json")
}

impl Settings {
    /// The settings of this machine and user (see the module comment).
    pub fn from_env() -> Result<Settings> {
        let mut s = Settings::default();
        if let Some(d) = std::env::var_os("CAPSA_CERTS_D") {
            s.certs_dirs = vec![PathBuf::from(d)];
        }
        let daemon = match std::env::var_os("CAPSA_DAEMON_JSON") {
            Some(p) => Some(PathBuf::from(p)),
            None => ["/etc/capsa/daemon.json", "/etc/docker/daemon.json"].iter().map(PathBuf::from).find(|p| p.is_file()),
        };
        if let Some(p) = daemon {
            match std::fs::read(&p) {
                Ok(b) => s.apply_daemon_json(&b, &p.display().to_string())?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::new(format!("read {}: {e}", p.display()))),
            }
        }
        if let Some(t) = std::env::var("CAPSA_REGISTRY_TIMEOUT").ok().and_then(|v| v.parse::<u64>().ok()) {
            s.timeout_idle = Duration::from_secs(t.max(1));
        }
        Ok(s)
    }

    /// Takes the registry keys of a daemon.json (others are docker's business).
    pub fn apply_daemon_json(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::new(format!("{what}: {e}")))?;
        let strings = |key: &str| -> Result<Vec<String>> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string).ok_or_else(|| Error::new(format!("{what}: {key}: want a list of strings"))))
                    .collect(),
                Some(_) => Err(Error::new(format!("{what}: {key}: want a list of strings"))),
            }
        };
        self.insecure = strings("insecure-registries")?;
        self.mirrors = strings("registry-mirrors")?;
        for m in &self.mirrors {
            if !(m.starts_with("http://") || m.starts_with("https://")) {
                return Err(Error::new(format!("{what}: registry-mirrors: {m:?}: want an http:// or https:// URL")));
            }
        }
        for (key, slot) in [("max-concurrent-downloads", &mut self.max_downloads), ("max-concurrent-uploads", &mut self.max_uploads)] {
            match v.get(key) {
                None | Some(Value::Null) => {}
                Some(n) => match n.as_u64() {
                    Some(n) if (1..=64).contains(&n) => *slot = n as usize,
                    _ => return Err(Error::new(format!("{what}: {key}: want a number from 1 to 64"))),
                },
            }
        }
        Ok(())
    }

    /// Whether `host` (`host[:port]`) is listed as insecure (by name or IPv4 CIDR).
    pub fn is_insecure(&self, host: &str) -> bool {
        let bare = strip_port(host);
        self.insecure.iter().any(|i| {
            if i == host || i == bare {
                return true;
            }
            match (i.split_once('/'), bare.parse::<Ipv4Addr>()) {
                (Some((net, bits)), Ok(ip)) => match (net.parse::<Ipv4Addr>(), bits.parse::<u32>()) {
                    (Ok(net), Ok(bits)) if bits <= 32 => {
                        let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
                        u32::from(ip) & mask == u32::from(net) & mask
                    }
                    _ => false,
                },
                _ => false,
            }
        })
    }

    fn scheme_for(&self, host: &str) -> Scheme {
        if self.is_insecure(host) {
            Scheme::Insecure
        } else if is_loopback(host) {
            Scheme::HttpsOrHttp
        } else {
            Scheme::Https
        }
    }

    /// The endpoints to pull `domain`'s repositories from, in order: docker.io's mirrors,
    /// then the registry itself.
    pub fn pull_endpoints(&self, domain: &str) -> Result<Vec<Endpoint>> {
        let mut out = Vec::new();
        if domain == "docker.io" {
            for m in &self.mirrors {
                out.push(mirror_endpoint(m)?);
            }
        }
        out.push(self.push_endpoint(domain));
        Ok(out)
    }

    /// The endpoint to push to (mirrors are for pulls only).
    pub fn push_endpoint(&self, domain: &str) -> Endpoint {
        let host = if domain == "docker.io" { DOCKER_HUB.to_string() } else { domain.to_string() };
        Endpoint { scheme: self.scheme_for(&host), host, domain: domain.to_string(), prefix: String::new(), mirror: false }
    }
}

fn mirror_endpoint(url: &str) -> Result<Endpoint> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", r)) => (Scheme::Http, r),
        Some(("https", r)) => (Scheme::Https, r),
        _ => return Err(Error::new(format!("registry-mirrors: {url:?}: want an http:// or https:// URL"))),
    };
    let (host, prefix) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{}", p.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    if host.is_empty() {
        return Err(Error::new(format!("registry-mirrors: {url:?}: no host")));
    }
    let prefix = if prefix == "/" { String::new() } else { prefix };
    Ok(Endpoint { host: host.to_string(), domain: "docker.io".into(), scheme, prefix, mirror: true })
}

/// `host:port` → `host` (IPv6 `[::1]:5000` → `::1`).
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// localhost, 127.0.0.0/8 and ::1, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let h = strip_port(host);
    h == "localhost" || h == "::1" || h.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Splits a normalised repository (`docker.io/library/busybox`) into the registry's
/// domain and the repository path on it.
pub fn split_repo(repo: &str) -> (&str, &str) {
    repo.split_once('/').unwrap_or(("docker.io", repo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_and_loopback() {
        let mut s = Settings::default();
        s.apply_daemon_json(
            br#"{"insecure-registries":["reg.lan:5000","10.1.0.0/16"],"registry-mirrors":["http://127.0.0.1:5001/"],"debug":true}"#,
            "d",
        )
        .unwrap();
        assert!(s.is_insecure("reg.lan:5000"));
        assert!(!s.is_insecure("reg.lan:5001"));
        assert!(s.is_insecure("10.1.2.3:443"));
        assert!(!s.is_insecure("10.2.0.1"));
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:80"));
        assert!(!is_loopback("128.0.0.1") && !is_loopback("example.com"));
        let e = s.pull_endpoints("docker.io").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].host.as_str(), e[0].scheme, e[0].mirror), ("127.0.0.1:5001", Scheme::Http, true));
        assert_eq!((e[1].host.as_str(), e[1].scheme), (DOCKER_HUB, Scheme::Https));
        assert_eq!(s.pull_endpoints("127.0.0.1:5000").unwrap()[0].scheme, Scheme::HttpsOrHttp);
        assert_eq!(s.push_endpoint("reg.lan:5000").scheme, Scheme::Insecure);
        assert!(s.apply_daemon_json(br#"{"registry-mirrors":["mirror.lan"]}"#, "d").unwrap_err().to_string().contains("registry-mirrors"));
        assert!(s.apply_daemon_json(br#"{"max-concurrent-downloads":0}"#, "d").is_err());
        assert_eq!(split_repo("docker.io/library/busybox"), ("docker.io", "library/busybox"));
    }
}

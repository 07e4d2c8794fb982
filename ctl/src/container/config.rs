//! What `create`/`run` decided about a container, in docker's own JSON shapes so that
//! `inspect` shows them as they are: `Config` (the process: resolved at create time from
//! the image and the flags, as docker does), `HostConfig` (how it runs: resources,
//! security, restart policy, log options, binds) and `Mounts` (the volumes, binds and
//! tmpfs it gets). Stored as one JSON document in the container's database row.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The container's row document.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Stored {
    #[serde(rename = "Config")]
    pub config: Config,
    #[serde(rename = "HostConfig")]
    pub host: HostConfig,
    #[serde(rename = "Mounts", default)]
    pub mounts: Vec<MountPoint>,
    /// Networks it was connected to besides `HostConfig.NetworkMode`'s (`network connect`),
    /// in order (see container/network.rs).
    #[serde(rename = "CapsaNetworks", default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
}

/// docker's container `Config`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Config {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub image: String,
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
    pub on_build: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
}

impl Config {
    /// Entrypoint + Cmd: what the container runs (docker's `Path` + `Args`).
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().flatten().chain(self.cmd.iter().flatten()).cloned().collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// "no" (docker writes "no" for an unset policy), "always", "unless-stopped", "on-failure".
    pub name: String,
    pub maximum_retry_count: i64,
}

impl RestartPolicy {
    /// `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub fn parse(s: &str) -> Result<RestartPolicy, String> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let max = match count {
            None => 0,
            Some(c) => {
                c.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| format!("--restart {s}: invalid maximum retry count {c:?}"))?
            }
        };
        match name {
            "no" | "" if count.is_none() => Ok(RestartPolicy { name: "no".into(), maximum_retry_count: 0 }),
            "always" | "unless-stopped" if count.is_none() => Ok(RestartPolicy { name: name.into(), maximum_retry_count: 0 }),
            "always" | "unless-stopped" | "no" => {
                Err(format!("--restart {s}: maximum retry count cannot be used with restart policy '{name}'"))
            }
            "on-failure" => Ok(RestartPolicy { name: name.into(), maximum_retry_count: max }),
            _ => Err(format!("--restart {s}: invalid restart policy {name:?} (no, always, unless-stopped, on-failure[:N])")),
        }
    }

    pub fn is_none(&self) -> bool {
        self.name.is_empty() || self.name == "no"
    }

    /// Whether an exit with `code` after `restarts` restarts is followed by another start
    /// (the caller has already ruled out a stop by the user).
    pub fn restarts(&self, code: i32, restarts: i64) -> bool {
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => code != 0 && (self.maximum_retry_count == 0 || restarts < self.maximum_retry_count),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct LogConfig {
    /// json-file or none.
    #[serde(rename = "Type")]
    pub typ: String,
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Device {
    pub path_on_host: String,
    pub path_in_container: String,
    pub cgroup_permissions: String,
}

/// docker's `HostConfig` (the fields capsactl honours; the others keep docker's zero values
/// so scripts find them).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    pub binds: Option<Vec<String>>,
    pub log_config: LogConfig,
    pub network_mode: String,
    pub port_bindings: BTreeMap<String, serde_json::Value>,
    pub restart_policy: RestartPolicy,
    pub auto_remove: bool,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub security_opt: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tmpfs: BTreeMap<String, String>,
    pub shm_size: i64,
    pub cpu_shares: i64,
    pub memory: i64,
    pub memory_swap: i64,
    pub nano_cpus: i64,
    pub cgroup_parent: String,
    pub devices: Vec<Device>,
    pub pids_limit: Option<i64>,
    pub ulimits: Option<Vec<Ulimit>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// `[rows, columns]` of the terminal at create time (docker's ConsoleSize).
    pub console_size: [u16; 2],
    /// `-P`: the image's exposed ports on random host ports (container/network.rs).
    #[serde(default)]
    pub publish_all_ports: bool,
    /// `--dns`: nameservers for /etc/resolv.conf instead of the host's.
    #[serde(default)]
    pub dns: Vec<String>,
    /// `--add-host NAME:IP`, as docker keeps them (`NAME:IP`).
    #[serde(default)]
    pub extra_hosts: Vec<String>,
}

/// One entry of docker's `Mounts`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct MountPoint {
    /// volume, bind or tmpfs.
    #[serde(rename = "Type")]
    pub typ: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub source: String,
    pub destination: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    pub mode: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    pub propagation: String,
    /// Not docker's: tmpfs options, `nocopy`; kept out of inspect's view.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "CapsaOptions")]
    pub options: Vec<String>,
}

/// Byte sizes as docker takes them: `512`, `64k`, `100m`, `1g` (binary units, optional `b`).
pub fn parse_bytes(s: &str, what: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').filter(|r| r.chars().last().is_some_and(|c| "kmgtp".contains(c))).unwrap_or(&t).to_string();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some('p') => (&t[..t.len() - 1], 1 << 50),
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| format!("{what} {s:?}: invalid size (want a number with an optional unit k, m, g)"))?;
    if !(0.0..9.0e18).contains(&v) {
        return Err(format!("{what} {s:?}: out of range"));
    }
    Ok((v * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512", "x").unwrap(), 512);
        assert_eq!(parse_bytes("64k", "x").unwrap(), 65536);
        assert_eq!(parse_bytes("100m", "x").unwrap(), 100 << 20);
        assert_eq!(parse_bytes("1GB", "x").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1.5g", "x").unwrap(), 3 << 29);
        assert!(parse_bytes("lots", "--memory").unwrap_err().contains("--memory"));
        assert!(parse_bytes("-1m", "x").is_err());
    }

    #[test]
    fn restart_policies() {
        assert_eq!(RestartPolicy::parse("no").unwrap().name, "no");
        let p = RestartPolicy::parse("on-failure:3").unwrap();
        assert_eq!(p.maximum_retry_count, 3);
        assert!(p.restarts(1, 2) && !p.restarts(1, 3) && !p.restarts(0, 0));
        assert!(RestartPolicy::parse("on-failure").unwrap().restarts(2, 100));
        assert!(RestartPolicy::parse("always").unwrap().restarts(0, 1000));
        assert!(RestartPolicy::parse("always:3").is_err());
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
    }
}

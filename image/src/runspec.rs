//! Image config → OCI runtime spec, by the image-spec's conversion rules
//! (`conversion.md`): Entrypoint + Cmd → process.args, Env, WorkingDir → cwd, User →
//! uid/gid (names looked up in the image's own /etc/passwd and /etc/group, read inside the
//! rootfs by `capsa_sys::Root`), Labels → annotations, StopSignal and ExposedPorts →
//! their `org.opencontainers.image.*` annotations. Volumes are made as directories (the
//! containers issue mounts volumes on them).
//!
//! The caller gives the base spec (the `capsa spec` example, which this crate does not
//! depend on) and docker's run options; what comes out runs on the capsa library as is.

use std::collections::BTreeMap;
use std::path::Path;

use capsa_sys::{Follow, Root};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::oci::ImageConfig;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// docker run's options that shape the spec.
#[derive(Debug, Default, Clone)]
pub struct RunOpts {
    /// Replaces the image's Cmd when not empty.
    pub cmd: Vec<String>,
    /// Replaces the image's Entrypoint (`--entrypoint`; `Some("")` clears it).
    pub entrypoint: Option<String>,
    pub tty: bool,
    pub host_network: bool,
    pub hostname: String,
    /// Extra `KEY=VALUE`s (`-e`), after the image's.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Files bind-mounted read-write on /etc/hosts, /etc/hostname, /etc/resolv.conf.
    pub etc_files: Vec<(String, std::path::PathBuf)>,
}

/// The resolved user of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// Builds the spec from `base` for an image whose rootfs is at `rootfs`.
pub fn build(base: &Value, config: &ImageConfig, rootfs: &Path, o: &RunOpts) -> Result<Value> {
    let c = config.config.clone().unwrap_or_default();
    let mut spec = base.clone();
    // process.args: Entrypoint + Cmd (docker: a run command replaces Cmd).
    let entrypoint: Vec<String> = match &o.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => c.entrypoint.clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = if !o.cmd.is_empty() {
        o.cmd.clone()
    } else if o.entrypoint.is_some() {
        Vec::new()
    } else {
        c.cmd.clone().unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::new("no command specified (the image has no Entrypoint or Cmd; give one after the image name)"));
    }
    let root = Root::open(rootfs).map_err(|e| Error::new(format!("rootfs {}: {e}", rootfs.display())))?;
    let user_spec = o.user.clone().or(c.user.clone()).unwrap_or_default();
    let user = resolve_user(&root, &user_spec)?;

    let mut env: Vec<String> = c.env.clone().unwrap_or_default();
    let has = |env: &[String], k: &str| env.iter().any(|e| e.split_once('=').map(|(a, _)| a) == Some(k));
    if !has(&env, "PATH") {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    env.push(format!("HOSTNAME={}", o.hostname));
    if o.tty && !has(&env, "TERM") {
        env.push("TERM=xterm".to_string());
    }
    for e in &o.env {
        let k = e.split_once('=').map(|(k, _)| k).unwrap_or(e);
        env.retain(|x| x.split_once('=').map(|(a, _)| a) != Some(k));
        env.push(e.clone());
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", user.home));
    }
    let cwd = o.workdir.clone().or(c.working_dir.clone()).filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
    let cwd = if cwd.starts_with('/') { cwd } else { format!("/{cwd}") };

    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    spec["process"] = json!({
        "terminal": o.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": false
    });
    if user.additional_gids.is_empty() {
        if let Some(u) = spec["process"]["user"].as_object_mut() {
            u.remove("additionalGids");
        }
    }
    spec["root"] = json!({"path": rootfs.to_string_lossy(), "readonly": false});
    spec["hostname"] = json!(o.hostname);
    if o.host_network {
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            // docker: --network host shares the host's UTS namespace too.
            ns.retain(|n| n["type"] != "uts");
        }
        if let Some(obj) = spec.as_object_mut() {
            obj.remove("hostname");
        }
    }
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for (dest, src) in &o.etc_files {
            mounts.push(json!({"destination": dest, "type": "bind", "source": src.to_string_lossy(), "options": ["rbind", "rprivate"]}));
        }
    }
    // Annotations: the labels, then what the conversion rules name.
    let mut ann: BTreeMap<String, String> = c.labels.clone().unwrap_or_default();
    if let Some(s) = &c.stop_signal {
        ann.insert("org.opencontainers.image.stopSignal".into(), s.clone());
    }
    if let Some(p) = &c.exposed_ports {
        ann.insert("org.opencontainers.image.exposedPorts".into(), p.keys().cloned().collect::<Vec<_>>().join(","));
    }
    ann.insert("org.opencontainers.image.os".into(), config.os.clone());
    ann.insert("org.opencontainers.image.architecture".into(), config.architecture.clone());
    if let Some(a) = &config.author {
        ann.insert("org.opencontainers.image.author".into(), a.clone());
    }
    if let Some(t) = &config.created {
        ann.insert("org.opencontainers.image.created".into(), t.clone());
    }
    spec["annotations"] = json!(ann);
    // Volumes exist as directories in the container (anonymous volumes come later).
    for v in c.volumes.iter().flat_map(|v| v.keys()) {
        root.mkdir_all(Path::new(v), 0o755, Follow::InRoot).map_err(|e| Error::new(format!("config.Volumes {v:?}: {e}")))?;
    }
    Ok(spec)
}

/// A numeric id from an image (CVE-2024-40635: ids above int32 once wrapped to root).
fn numeric_id(s: &str, what: &str) -> Result<Option<u32>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match s.parse::<u64>() {
        Ok(v) if v <= i32::MAX as u64 => Ok(Some(v as u32)),
        _ => Err(Error::new(format!("config.User: {what} {s} is above the largest allowed id (2147483647) (refused, CVE-2024-40635)"))),
    }
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn read_db(root: &Root, path: &str) -> Result<String> {
    match root.read_file(Path::new(path), 4 << 20) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(String::new()),
        Err(e) => Err(Error::new(format!("read the image's {path}: {e}"))),
    }
}

fn passwd(root: &Root) -> Result<Vec<PasswdEntry>> {
    Ok(read_db(root, "/etc/passwd")?
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry { name: f[0].to_string(), uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5].to_string() })
        })
        .collect())
}

/// (name, gid, members) of /etc/group.
fn groups(root: &Root) -> Result<Vec<(String, u32, Vec<String>)>> {
    Ok(read_db(root, "/etc/group")?
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some((f[0].to_string(), f[2].parse().ok()?, f[3].split(',').filter(|m| !m.is_empty()).map(str::to_string).collect()))
        })
        .collect())
}

/// `user`, `uid`, `user:group`, `uid:gid` (any mix), as docker resolves it.
pub fn resolve_user(root: &Root, spec: &str) -> Result<User> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = passwd(root)?;
    let (uid, mut gid, home, name) = if u.is_empty() {
        let e = users.iter().find(|e| e.uid == 0);
        (0, 0, e.map(|e| e.home.clone()).unwrap_or_else(|| "/root".into()), e.map(|e| e.name.clone()))
    } else if let Some(n) = numeric_id(u, "uid")? {
        match users.iter().find(|e| e.uid == n) {
            Some(e) => (n, e.gid, e.home.clone(), Some(e.name.clone())),
            None => (n, 0, "/".to_string(), None),
        }
    } else {
        let e = users.iter().find(|e| e.name == u).ok_or_else(|| {
            Error::new(format!("config.User {spec:?}: unable to find user {u}: no matching entries in the image's /etc/passwd"))
        })?;
        (e.uid, e.gid, e.home.clone(), Some(e.name.clone()))
    };
    let all_groups = groups(root)?;
    if let Some(g) = g.filter(|g| !g.is_empty()) {
        gid = match numeric_id(g, "gid")? {
            Some(n) => n,
            None => {
                all_groups
                    .iter()
                    .find(|(n, _, _)| n == g)
                    .ok_or_else(|| {
                        Error::new(format!("config.User {spec:?}: unable to find group {g}: no matching entries in the image's /etc/group"))
                    })?
                    .1
            }
        };
    }
    let mut additional: Vec<u32> = match &name {
        Some(n) => all_groups.iter().filter(|(_, id, m)| m.contains(n) && *id != gid).map(|(_, id, _)| *id).collect(),
        None => Vec::new(),
    };
    additional.sort_unstable();
    additional.dedup();
    Ok(User { uid, gid, additional_gids: additional, home: if home.is_empty() { "/".into() } else { home } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs(name: &str) -> (std::path::PathBuf, Root) {
        let d = std::env::temp_dir().join(format!("capsa-image-user-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(d.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n").unwrap();
        std::fs::write(d.join("etc/group"), "root:x:0:\nwheel:x:10:alice\nalice:x:1000:\nstaff:x:50:\n").unwrap();
        let r = Root::open(&d).unwrap();
        (d, r)
    }

    #[test]
    fn users_resolve_like_docker() {
        let (d, r) = rootfs("resolve");
        assert_eq!(resolve_user(&r, "").unwrap(), User { uid: 0, gid: 0, additional_gids: vec![], home: "/root".into() });
        assert_eq!(
            resolve_user(&r, "alice").unwrap(),
            User { uid: 1000, gid: 1000, additional_gids: vec![10], home: "/home/alice".into() }
        );
        assert_eq!(resolve_user(&r, "alice:staff").unwrap().gid, 50);
        assert_eq!(resolve_user(&r, "4242").unwrap(), User { uid: 4242, gid: 0, additional_gids: vec![], home: "/".into() });
        assert_eq!(resolve_user(&r, "1000:7").unwrap().gid, 7);
        assert!(resolve_user(&r, "bob").unwrap_err().to_string().contains("unable to find user bob"));
        assert!(resolve_user(&r, "alice:nogroup").unwrap_err().to_string().contains("unable to find group"));
        // CVE-2024-40635: a uid above int32 must not wrap to 0.
        let e = resolve_user(&r, "2147483648").unwrap_err().to_string();
        assert!(e.contains("CVE-2024-40635"), "{e}");
        assert!(resolve_user(&r, "0:4294967296").unwrap_err().to_string().contains("CVE-2024-40635"));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn passwd_is_read_inside_the_rootfs() {
        let (d, r) = rootfs("inside");
        // An image whose /etc/passwd is a symlink to the host's: resolved inside the rootfs.
        std::fs::remove_file(d.join("etc/passwd")).unwrap();
        let outside = d.with_extension("host-passwd");
        std::fs::write(&outside, "evil:x:0:0::/:/bin/sh\n").unwrap();
        let link = format!("/../../../../../..{}", outside.display());
        std::os::unix::fs::symlink(&link, d.join("etc/passwd")).unwrap();
        assert!(resolve_user(&r, "evil").unwrap_err().to_string().contains("unable to find user evil"));
        let _ = std::fs::remove_dir_all(d);
        let _ = std::fs::remove_file(outside);
    }

    #[test]
    fn args_env_and_annotations() {
        let (d, _r) = rootfs("spec");
        let cfg: ImageConfig = serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["A=1"], "WorkingDir": "srv",
                        "User": "alice", "Labels": {"x": "y"}, "StopSignal": "SIGQUIT", "ExposedPorts": {"80/tcp": {}}},
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        let base = json!({"process": {}, "mounts": [], "linux": {"namespaces": [{"type": "network"}, {"type": "pid"}]}});
        let o = RunOpts { hostname: "abc".into(), ..Default::default() };
        let s = build(&base, &cfg, &d, &o).unwrap();
        assert_eq!(s["process"]["args"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(s["process"]["cwd"], "/srv");
        assert_eq!(s["process"]["user"]["uid"], 1000);
        assert_eq!(s["annotations"]["x"], "y");
        assert_eq!(s["annotations"]["org.opencontainers.image.stopSignal"], "SIGQUIT");
        assert_eq!(s["annotations"]["org.opencontainers.image.exposedPorts"], "80/tcp");
        let env: Vec<String> = serde_json::from_value(s["process"]["env"].clone()).unwrap();
        assert!(
            env.contains(&"A=1".to_string()) && env.iter().any(|e| e.starts_with("PATH=")) && env.contains(&"HOME=/home/alice".to_string())
        );
        let o = RunOpts { cmd: vec!["ls".into()], host_network: true, ..Default::default() };
        let s = build(&base, &cfg, &d, &o).unwrap();
        assert_eq!(s["process"]["args"], json!(["/bin/sh", "-c", "ls"]));
        assert_eq!(s["linux"]["namespaces"], json!([{"type": "pid"}]));
        let _ = std::fs::remove_dir_all(d);
    }
}

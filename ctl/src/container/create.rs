//! `create` (and the first half of `run`): docker's options and the image's config become
//! the container's `Config`, `HostConfig` and `Mounts`; named and anonymous volumes are
//! made; the container's directory, lock and database row come into being. Nothing is
//! mounted and nothing runs until `start`.
//!
//! Order, for crash safety: directory and lock first, then the row (one transaction with
//! its layer reference and volume uses). A `run --rm` killed before it started leaves a
//! row whose lock is free, which [`super::reconcile`] removes.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::params;

use capsa_image::Store;

use super::config::{parse_bytes, Config, Device, HostConfig, LogConfig, MountPoint, RestartPolicy, Stored, Ulimit};
use super::{names, volumes, Lock, Record};
use crate::cli::create::Opts;
use crate::cli::{fail, Failure, Result};

/// docker's exit code for a bad `run`/`create` option.
fn bad(msg: impl Into<String>) -> Failure {
    Failure { msg: msg.into(), code: 125 }
}

/// Makes the container. `attached`: `run` without `-d` (docker's StdinOnce and Attach*);
/// `state`: `created`, or `starting` for `run` (so that a `run --rm` killed before its
/// monitor started is cleaned up by the next command). Returns the row, warnings for the
/// user, and the container's lock (held).
pub fn create(store: &mut Store, o: &Opts, attached: bool, state: &str) -> Result<((Record, Vec<String>), Lock)> {
    let mut warnings = Vec::new();
    // Pulled first when missing (or always, per --pull), as docker's run and create do.
    let img = crate::cli::pull::image_or_pull(store, &o.image, o.pull)?;
    let (icfg, _) = store.config(&img)?;
    let ic = icfg.config.clone().unwrap_or_default();
    let id = super::random_id();

    // Config: the image's, with the flags applied (docker resolves it at create time).
    let mut env: Vec<String> = ic.env.clone().unwrap_or_default();
    let mut user_env = Vec::new();
    for f in &o.env_file {
        let text = std::fs::read_to_string(f).map_err(|e| bad(format!("--env-file {}: {e}", f.display())))?;
        for (n, line) in text.lines().enumerate() {
            let l = line.trim_start();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if l.split('=').next().is_some_and(|k| k.is_empty() || k.contains(char::is_whitespace)) {
                return Err(bad(format!("--env-file {} line {}: variable {:?} contains whitespaces", f.display(), n + 1, l)));
            }
            user_env.push(l.to_string());
        }
    }
    user_env.extend(o.env.iter().cloned());
    for e in user_env {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (e.clone(), std::env::var(&e).ok()),
        };
        if k.is_empty() {
            return Err(bad(format!("-e {e:?}: invalid environment variable (empty name)")));
        }
        env.retain(|x| x.split_once('=').map(|(a, _)| a) != Some(k.as_str()) && x != &k);
        if let Some(v) = v {
            env.push(format!("{k}={v}"));
        }
    }
    let entrypoint = match &o.entrypoint {
        Some(e) if e.is_empty() => None,
        Some(e) => Some(vec![e.clone()]),
        None => ic.entrypoint.clone().filter(|e| !e.is_empty()),
    };
    let cmd = if !o.cmd.is_empty() {
        Some(o.cmd.clone())
    } else if o.entrypoint.is_some() {
        None
    } else {
        ic.cmd.clone()
    };
    if entrypoint.is_none() && cmd.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(bad("No command specified"));
    }
    let mut labels = ic.labels.clone().unwrap_or_default();
    for l in &o.label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            return Err(bad(format!("--label {l:?}: empty key")));
        }
        labels.insert(k.to_string(), v.to_string());
    }
    let net = super::network::options(store, o, &ic.exposed_ports.clone().unwrap_or_default(), &mut warnings)?;
    let network = net.mode.clone();
    if let Some(h) = &o.hostname {
        if h.is_empty() || h.len() > 64 || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
            return Err(bad(format!("--hostname {h:?}: invalid hostname")));
        }
        if network == "host" {
            warnings.push("--hostname is ignored with --network host (the host's UTS namespace is shared)".into());
        }
    }
    if let Some(s) = &o.stop_signal {
        capsa::container::parse_signal(s).map_err(|e| bad(format!("--stop-signal: {e}")))?;
    }
    if let Some(s) = ic.stop_signal.as_deref().filter(|_| o.stop_signal.is_none()) {
        if capsa::container::parse_signal(s).is_err() {
            warnings.push(format!("image StopSignal {s:?} is not a signal: SIGTERM is used"));
        }
    }
    let config = Config {
        hostname: o.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
        domainname: String::new(),
        user: o.user.clone().or(ic.user.clone()).unwrap_or_default(),
        attach_stdin: attached && o.interactive,
        attach_stdout: attached,
        attach_stderr: attached,
        exposed_ports: net.exposed.clone(),
        tty: o.tty,
        open_stdin: o.interactive,
        stdin_once: attached && o.interactive,
        env,
        cmd,
        image: o.image.clone(),
        volumes: ic.volumes.clone(),
        working_dir: o.workdir.clone().or(ic.working_dir.clone()).unwrap_or_default(),
        entrypoint,
        on_build: None,
        labels,
        stop_signal: o.stop_signal.clone().or(ic.stop_signal.clone()),
        stop_timeout: o.stop_timeout,
    };
    if !config.working_dir.is_empty() && !config.working_dir.starts_with('/') && o.workdir.is_some() {
        return Err(bad(format!("the working directory '{}' is invalid, it needs to be an absolute path", config.working_dir)));
    }

    let mut host = host_config(o, &network)?;
    (host.port_bindings, host.publish_all_ports, host.dns, host.extra_hosts) = (net.bindings, o.publish_all, net.dns, net.extra_hosts);
    if host.auto_remove && !host.restart_policy.is_none() {
        return Err(bad("Conflicting options: --restart and --rm"));
    }
    let mut mounts = mounts(store, o)?;
    // Image VOLUMEs not covered by a mount get an anonymous volume each.
    for dest in config.volumes.iter().flat_map(|v| v.keys()) {
        let clean = clean_dest(dest);
        if !mounts.iter().any(|m| m.destination == clean) {
            mounts.push(MountPoint { typ: "volume".into(), destination: clean, rw: true, driver: "local".into(), ..Default::default() });
        }
    }
    // Name every anonymous volume now (docker shows them in inspect right after create).
    for m in mounts.iter_mut().filter(|m| m.typ == "volume" && m.name.is_empty()) {
        m.name = super::random_id();
        m.options.push("anonymous".into());
    }

    let name = match &o.name {
        Some(n) => {
            names::validate(n)?;
            n.strip_prefix('/').unwrap_or(n).to_string()
        }
        None => String::new(),
    };
    let stored = Stored { config, host, mounts, networks: Vec::new() };

    // Directory and lock first (see the module comment), then volumes and the row.
    let dir = super::dir(store, &id);
    for d in ["upper", "work"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| fail(format!("create {}: {e}", dir.join(d).display())))?;
    }
    let lock = match Lock::try_take(&dir) {
        Ok(Some(l)) => l,
        _ => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(fail(format!("lock {}: taken by another process", dir.display())));
        }
    };
    let mut existed = std::collections::HashSet::new();
    for m in stored.mounts.iter().filter(|m| m.typ == "volume") {
        if volumes::get(store, &m.name)?.is_some() {
            existed.insert(m.name.clone());
        }
    }
    let result = insert(store, &id, &name, &img, &stored, state);
    let rec = match result {
        Ok(r) => r,
        Err(e) => {
            // Nothing left behind: the volumes made for it go too.
            for m in stored.mounts.iter().filter(|m| m.typ == "volume" && !existed.contains(&m.name)) {
                let _ = volumes::remove(store, &m.name, true);
            }
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    Ok(((rec, warnings), lock))
}

fn insert(store: &mut Store, id: &str, name: &str, img: &capsa_image::store::ImageInfo, stored: &Stored, state: &str) -> Result<Record> {
    // Volumes (named ones made if missing, anonymous ones made here).
    for m in stored.mounts.iter().filter(|m| m.typ == "volume") {
        let anon = m.options.iter().any(|o| o == "anonymous");
        volumes::create(store, &m.name, &BTreeMap::new(), &BTreeMap::new(), anon)?;
    }
    let cfg = serde_json::to_string(stored).map_err(|e| fail(format!("encode container config: {e}")))?;
    let top = img.top.as_ref().map(|t| t.to_string());
    let image = img.id.to_string();
    let now = super::now();
    let auto_remove = stored.host.auto_remove;
    let vols: Vec<String> = stored.mounts.iter().filter(|m| m.typ == "volume").map(|m| m.name.clone()).collect();
    let mut name = name.to_string();
    let generated = name.is_empty();
    for attempt in 0..10u32 {
        if generated {
            name = names::generate(attempt);
        }
        let r = store.db.write(|tx| {
            tx.execute(
                "INSERT INTO containers (id, name, image, top_chain, state, auto_remove, created, created_at, config) VALUES (?1, ?2, ?3, ?4, ?9, ?5, ?6, ?7, ?8)",
                params![id, name, image, top, auto_remove as i64, capsa_image::db::now(), now, cfg, state],
            )?;
            if let Some(t) = &top {
                capsa_image::db::add_ref(tx, t, 1)?;
            }
            for v in &vols {
                tx.execute("INSERT OR IGNORE INTO container_volumes (container, volume) VALUES (?1, ?2)", params![id, v])?;
            }
            Ok(())
        });
        match r {
            Ok(()) => break,
            Err(e) if e.to_string().contains("UNIQUE") && e.to_string().contains("name") => {
                if generated && attempt < 9 {
                    continue;
                }
                let other: String =
                    store.db.conn().query_row("SELECT id FROM containers WHERE name = ?1", [&name], |r| r.get(0)).unwrap_or_default();
                return Err(names::in_use(&name, &other));
            }
            Err(e) => return Err(e.into()),
        }
    }
    super::get(store, id)?.ok_or_else(|| fail(format!("container {id} vanished after create")))
}

fn host_config(o: &Opts, network: &str) -> Result<HostConfig> {
    let restart = match &o.restart {
        Some(r) => RestartPolicy::parse(r).map_err(bad)?,
        None => RestartPolicy { name: "no".into(), maximum_retry_count: 0 },
    };
    let memory = o.memory.as_deref().map(|m| parse_bytes(m, "--memory")).transpose().map_err(bad)?.unwrap_or(0);
    if memory != 0 && memory < 6 << 20 {
        return Err(bad("Minimum memory limit allowed is 6MB"));
    }
    let memory_swap = match o.memory_swap.as_deref() {
        None => 0,
        Some("-1") => -1,
        Some(s) => parse_bytes(s, "--memory-swap").map_err(bad)?,
    };
    if memory_swap > 0 && memory_swap < memory {
        return Err(bad("Minimum memoryswap limit should be larger than memory limit, see usage"));
    }
    if memory_swap != 0 && memory == 0 {
        return Err(bad("You should always set the Memory limit when using Memoryswap limit, see usage"));
    }
    let nano_cpus = match &o.cpus {
        Some(c) => {
            let v: f64 = c.parse().map_err(|_| bad(format!("--cpus {c:?}: invalid number")))?;
            let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
            if v <= 0.0 || v > ncpu {
                return Err(bad(format!("range of CPUs is from 0.01 to {ncpu:.2}, as there are only {ncpu} CPUs available")));
            }
            (v * 1e9) as i64
        }
        None => 0,
    };
    if o.init {
        // Refused at create, not at start, when there is no init to bind in.
        super::spec::init_binary()?;
    }
    let mut ulimits = Vec::new();
    for u in &o.ulimit {
        ulimits.push(parse_ulimit(u)?);
    }
    let mut security_opt = Vec::new();
    for s in &o.security_opt {
        let (k, v) = s.split_once(['=', ':']).unwrap_or((s.as_str(), ""));
        match k {
            "seccomp" if v == "unconfined" => {}
            "seccomp" => {
                let text = std::fs::read(v).map_err(|e| bad(format!("--security-opt seccomp={v}: {e}")))?;
                super::seccomp::parse_profile(&text).map_err(|e| bad(format!("--security-opt seccomp={v}: {e}")))?;
            }
            "no-new-privileges" if matches!(v, "" | "true" | "false") => {}
            "apparmor" if v == "unconfined" => {}
            "label" if v == "disable" => {}
            "apparmor" | "label" => {
                return Err(bad(format!(
                    "--security-opt {s}: AppArmor and SELinux are not available to capsactl (only apparmor=unconfined, label=disable)"
                )));
            }
            _ => return Err(bad(format!("--security-opt {s}: invalid option (seccomp=unconfined|PROFILE.json, no-new-privileges)"))),
        }
        security_opt.push(s.clone());
    }
    for c in o.cap_add.iter().chain(&o.cap_drop) {
        super::spec::normalize_cap(c).map_err(bad)?;
    }
    let mut tmpfs = BTreeMap::new();
    for t in &o.tmpfs {
        let (dest, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
        if !dest.starts_with('/') {
            return Err(bad(format!("--tmpfs {t}: invalid mount path {dest:?}: must be absolute")));
        }
        tmpfs.insert(clean_dest(dest), opts.to_string());
    }
    let mut devices = Vec::new();
    for d in &o.device {
        devices.push(parse_device(d)?);
    }
    let shm_size = o.shm_size.as_deref().map(|s| parse_bytes(s, "--shm-size")).transpose().map_err(bad)?.unwrap_or(64 << 20);
    if shm_size <= 0 {
        return Err(bad("--shm-size: must be greater than 0"));
    }
    let log_type = o.log_driver.clone().unwrap_or_else(|| "json-file".into());
    if log_type != "json-file" && log_type != "none" {
        return Err(bad(format!("--log-driver {log_type}: capsactl logs with json-file (or none)")));
    }
    let mut log_opts = BTreeMap::new();
    for l in &o.log_opt {
        let (k, v) = l.split_once('=').ok_or_else(|| bad(format!("--log-opt {l}: want KEY=VALUE")))?;
        match k {
            "max-size" => {
                parse_bytes(v, "--log-opt max-size").map_err(bad)?;
            }
            "max-file" => {
                v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| bad(format!("--log-opt max-file={v}: want a number ≥ 1")))?;
            }
            "compress" | "labels" | "env" | "tag" | "mode" | "max-buffer-size" => {
                return Err(bad(format!("--log-opt {k}: not implemented yet (capsactl's json-file log takes max-size and max-file)")));
            }
            _ => return Err(bad(format!("unknown log opt '{k}' for json-file log driver"))),
        }
        log_opts.insert(k.to_string(), v.to_string());
    }
    if log_opts.contains_key("max-file") && !log_opts.contains_key("max-size") {
        return Err(bad("max-file cannot be used without max-size (--log-opt max-size=SIZE)"));
    }
    if log_type == "none" && !log_opts.is_empty() {
        return Err(bad("--log-opt needs the json-file log driver"));
    }
    let console_size = terminal_size();
    let cgroup_parent = o.cgroup_parent.clone().unwrap_or_default();
    if !cgroup_parent.is_empty() && (!cgroup_parent.starts_with('/') || cgroup_parent.split('/').any(|c| c == "..")) {
        return Err(bad(format!("--cgroup-parent {cgroup_parent:?}: want an absolute cgroup path without ..")));
    }
    Ok(HostConfig {
        binds: if o.volume.is_empty() { None } else { Some(o.volume.clone()) },
        log_config: LogConfig { typ: log_type, config: log_opts },
        network_mode: network.to_string(),
        port_bindings: BTreeMap::new(),
        restart_policy: restart,
        auto_remove: o.rm,
        cap_add: (!o.cap_add.is_empty()).then(|| o.cap_add.clone()),
        cap_drop: (!o.cap_drop.is_empty()).then(|| o.cap_drop.clone()),
        privileged: o.privileged,
        readonly_rootfs: o.read_only,
        security_opt: (!security_opt.is_empty()).then_some(security_opt),
        tmpfs,
        shm_size,
        cpu_shares: o.cpu_shares.unwrap_or(0),
        memory,
        memory_swap,
        nano_cpus,
        cgroup_parent,
        devices,
        pids_limit: o.pids_limit.filter(|p| *p != 0),
        ulimits: (!ulimits.is_empty()).then_some(ulimits),
        init: o.init.then_some(true),
        console_size: if o.tty { console_size } else { [0, 0] },
        publish_all_ports: false,
        dns: Vec::new(),
        extra_hosts: Vec::new(),
    })
}

/// Rows and columns of our terminal, if stdout is one.
fn terminal_size() -> [u16; 2] {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize.
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 {
        [ws.ws_row, ws.ws_col]
    } else {
        [0, 0]
    }
}

const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
    "as",
];

fn parse_ulimit(s: &str) -> Result<Ulimit> {
    let (name, vals) = s.split_once('=').ok_or_else(|| bad(format!("--ulimit {s}: want NAME=SOFT[:HARD]")))?;
    if !ULIMITS.contains(&name) {
        return Err(bad(format!("--ulimit {s}: invalid ulimit type: {name}")));
    }
    let (soft, hard) = vals.split_once(':').unwrap_or((vals, vals));
    let num = |v: &str| -> Result<i64> {
        if v == "-1" || v == "unlimited" {
            return Ok(-1);
        }
        v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| bad(format!("--ulimit {s}: invalid value {v:?}")))
    };
    let (soft, hard) = (num(soft)?, num(hard)?);
    if hard != -1 && (soft == -1 || soft > hard) {
        return Err(bad(format!("--ulimit {s}: soft limit {soft} is above the hard limit {hard}")));
    }
    Ok(Ulimit { name: name.to_string(), soft, hard })
}

fn parse_device(s: &str) -> Result<Device> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, ctr, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if !p.starts_with('/') => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(bad(format!("--device {s}: want /dev/HOST[:/dev/CONTAINER[:rwm]]"))),
    };
    if !host.starts_with('/') || !ctr.starts_with('/') {
        return Err(bad(format!("--device {s}: paths must be absolute")));
    }
    if perms.is_empty() || !perms.chars().all(|c| "rwm".contains(c)) {
        return Err(bad(format!("--device {s}: invalid permissions {perms:?} (a mix of r, w, m)")));
    }
    let st = nix::sys::stat::stat(host)
        .map_err(|e| bad(format!("--device {s}: error gathering device information while adding custom device {host:?}: {}", e.desc())))?;
    let k = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode & nix::sys::stat::SFlag::S_IFMT.bits());
    if k != nix::sys::stat::SFlag::S_IFCHR && k != nix::sys::stat::SFlag::S_IFBLK {
        return Err(bad(format!("--device {s}: {host} is not a device node")));
    }
    Ok(Device { path_on_host: host.to_string(), path_in_container: ctr.to_string(), cgroup_permissions: perms.to_string() })
}

/// `/a//b/` → `/a/b` (docker compares mount destinations cleaned).
pub fn clean_dest(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    format!("/{}", parts.join("/"))
}

const PROPAGATIONS: &[&str] = &["private", "rprivate", "shared", "rshared", "slave", "rslave"];

/// `-v`, `--mount` and `--tmpfs` as docker's Mounts.
fn mounts(store: &Store, o: &Opts) -> Result<Vec<MountPoint>> {
    let mut out: Vec<MountPoint> = Vec::new();
    let add = |m: MountPoint, out: &mut Vec<MountPoint>| -> Result<()> {
        if m.destination == "/" {
            return Err(bad(format!("invalid mount config: destination can't be '/' ({})", m.source)));
        }
        if out.iter().any(|x| x.destination == m.destination) {
            return Err(bad(format!("Duplicate mount point: {}", m.destination)));
        }
        out.push(m);
        Ok(())
    };
    for v in &o.volume {
        let parts: Vec<&str> = v.split(':').collect();
        let (src, dest, mode) = match parts.as_slice() {
            [d] => ("", *d, ""),
            [s, d] if d.starts_with('/') => (*s, *d, ""),
            [d, m] => ("", *d, *m),
            [s, d, m] => (*s, *d, *m),
            _ => return Err(bad(format!("invalid volume specification: '{v}'"))),
        };
        if !dest.starts_with('/') {
            return Err(bad(format!("invalid volume specification: '{v}': mount path must be absolute")));
        }
        let mut rw = true;
        let mut propagation = String::new();
        let mut options = Vec::new();
        for m in mode.split(',').filter(|m| !m.is_empty()) {
            match m {
                "ro" => rw = false,
                "rw" => rw = true,
                "nocopy" => options.push("nocopy".to_string()),
                "z" | "Z" => {}
                p if PROPAGATIONS.contains(&p) => propagation = p.to_string(),
                _ => return Err(bad(format!("invalid mode: {m} (in -v {v})"))),
            }
        }
        let m = if src.is_empty() || !src.starts_with('/') {
            if !src.is_empty() {
                volumes::validate(src).map_err(|e| bad(e.msg))?;
            }
            if !propagation.is_empty() {
                return Err(bad(format!("invalid mode: {propagation}: propagation applies to bind mounts only (in -v {v})")));
            }
            MountPoint {
                typ: "volume".into(),
                name: src.to_string(),
                destination: clean_dest(dest),
                driver: "local".into(),
                mode: mode.into(),
                rw,
                options,
                ..Default::default()
            }
        } else {
            // docker creates a missing -v source directory (not so for --mount).
            if !Path::new(src).exists() {
                std::fs::create_dir_all(src).map_err(|e| bad(format!("-v {v}: create {src}: {e}")))?;
            }
            MountPoint {
                typ: "bind".into(),
                source: clean_dest(src),
                destination: clean_dest(dest),
                mode: mode.into(),
                rw,
                propagation: if propagation.is_empty() { "rprivate".into() } else { propagation },
                ..Default::default()
            }
        };
        add(m, &mut out)?;
    }
    for spec in &o.mount {
        let mut kv: BTreeMap<&str, &str> = BTreeMap::new();
        for field in spec.split(',') {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            kv.insert(k, v);
        }
        let typ = kv.get("type").copied().unwrap_or("volume");
        let src = kv.get("source").or(kv.get("src")).copied().unwrap_or("");
        let dest = kv.get("target").or(kv.get("destination")).or(kv.get("dst")).copied().unwrap_or("");
        if dest.is_empty() || !dest.starts_with('/') {
            return Err(bad(format!("invalid argument \"{spec}\" for \"--mount\" flag: target is required and must be absolute")));
        }
        let ro = match kv.get("readonly").or(kv.get("ro")).copied() {
            None | Some("false") | Some("0") => false,
            Some("") | Some("true") | Some("1") => true,
            Some(x) => return Err(bad(format!("--mount {spec}: invalid readonly value {x:?}"))),
        };
        for k in kv.keys() {
            if ![
                "type",
                "source",
                "src",
                "target",
                "destination",
                "dst",
                "readonly",
                "ro",
                "bind-propagation",
                "volume-nocopy",
                "tmpfs-size",
                "tmpfs-mode",
                "consistency",
            ]
            .contains(k)
            {
                return Err(bad(format!("--mount {spec}: unexpected key '{k}'")));
            }
        }
        let m = match typ {
            "bind" => {
                if !src.starts_with('/') {
                    return Err(bad(format!(
                        "invalid mount config for type \"bind\": invalid mount path: '{src}' mount path must be absolute"
                    )));
                }
                if !Path::new(src).exists() {
                    return Err(bad(format!("invalid mount config for type \"bind\": bind source path does not exist: {src}")));
                }
                let prop = kv.get("bind-propagation").copied().unwrap_or("rprivate");
                if !PROPAGATIONS.contains(&prop) {
                    return Err(bad(format!("--mount {spec}: invalid bind-propagation {prop:?}")));
                }
                MountPoint {
                    typ: "bind".into(),
                    source: clean_dest(src),
                    destination: clean_dest(dest),
                    rw: !ro,
                    propagation: prop.into(),
                    ..Default::default()
                }
            }
            "volume" => {
                if !src.is_empty() {
                    volumes::validate(src).map_err(|e| bad(e.msg))?;
                }
                let mut options = Vec::new();
                if matches!(kv.get("volume-nocopy").copied(), Some("") | Some("true") | Some("1")) {
                    options.push("nocopy".to_string());
                }
                MountPoint {
                    typ: "volume".into(),
                    name: src.to_string(),
                    destination: clean_dest(dest),
                    driver: "local".into(),
                    rw: !ro,
                    options,
                    ..Default::default()
                }
            }
            "tmpfs" => {
                if !src.is_empty() {
                    return Err(bad(format!("invalid mount config for type \"tmpfs\": source must not be specified ({spec})")));
                }
                let mut options = Vec::new();
                if let Some(s) = kv.get("tmpfs-size") {
                    let b = parse_bytes(s, "tmpfs-size").map_err(bad)?;
                    options.push(format!("size={b}"));
                }
                if let Some(m) = kv.get("tmpfs-mode") {
                    u32::from_str_radix(m, 8).map_err(|_| bad(format!("--mount {spec}: invalid tmpfs-mode {m:?} (octal)")))?;
                    options.push(format!("mode={m}"));
                }
                MountPoint { typ: "tmpfs".into(), destination: clean_dest(dest), rw: !ro, options, ..Default::default() }
            }
            other => return Err(bad(format!("--mount {spec}: invalid mount type {other:?} (bind, volume, tmpfs)"))),
        };
        add(m, &mut out)?;
    }
    let _ = store;
    Ok(out)
}

//! capsactl pull, push, login, logout and run's pull against a real `docker-registry` on
//! 127.0.0.1 (started here, on a free port) in three setups: no auth; htpasswd over TLS
//! with a CA made here; token auth with the token server of registry_support. Nothing but
//! 127.0.0.1 is contacted: docker.io names are only pulled through a local mirror.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod registry_support;
mod support;

use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;

use registry_support::*;
use serde_json::{json, Value};
use support::*;

/// capsactl with this test's store, extra environment and stdin.
fn ctl(env: &Env, args: &[&str], vars: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_capsactl"));
    c.arg("--root").arg(env.root()).arg("--state-root").arg(env.state()).args(args);
    // Never the machine's own settings: a private config.json, no daemon.json, no certs.d.
    c.env("DOCKER_CONFIG", env.dir.join("docker")).env("CAPSA_DAEMON_JSON", env.dir.join("daemon.json"));
    c.env("CAPSA_CERTS_D", env.dir.join("no-certs.d"));
    for (k, v) in vars {
        c.env(k, v);
    }
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        i.write_all(stdin).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> String {
    let o = ctl(env, args, vars, b"");
    assert!(o.status.success(), "capsactl {args:?}: {}\n{}", err(&o), out(&o));
    out(&o)
}

fn fails(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> String {
    let o = ctl(env, args, vars, b"");
    assert!(!o.status.success(), "capsactl {args:?} should fail: {}", out(&o));
    err(&o)
}

/// Loads a two-layer busybox image (busybox + a file holding `marker`) as `tag`.
fn load_image(env: &Env, tag: &str, marker: &str, extra: Option<Vec<u8>>) {
    let mut layers = vec![Layer::new().busybox().tar(), Layer::new().dir("srv/", 0o755).file("srv/marker", 0o644, marker.as_bytes()).tar()];
    if let Some(x) = extra {
        layers.push(Layer::new().file("srv/blob", 0o644, &x).tar());
    }
    let layers: Vec<Vec<u8>> = layers.into_iter().map(|l| gzip(&l)).collect();
    let plain: Vec<Vec<u8>> = layers.iter().map(|l| flate2_decode(l)).collect();
    let cfg = config(&plain, json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}));
    let cfg_b = serde_json::to_vec(&cfg).unwrap();
    // An OCI layout with gzip layers (as registries usually hold them).
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &cfg_b),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect::<Vec<_>>()});
    let m_b = serde_json::to_vec(&manifest).unwrap();
    let mut blobs = layers.clone();
    blobs.push(cfg_b);
    blobs.push(m_b.clone());
    let mut d = desc("application/vnd.oci.image.manifest.v1+json", &m_b);
    d["annotations"] = json!({"io.containerd.image.name": tag});
    let index = json!({"schemaVersion": 2, "manifests": [d]});
    let p = env.write(&format!("img-{}.tar", capsa_image::Digest::of(tag.as_bytes()).short()), &oci_layout(&blobs, &index));
    ok(env, &["load", "-q", "-i", p.to_str().unwrap()], &[]);
}

fn flate2_decode(b: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut out).unwrap();
    out
}

fn blob_count(env: &Env) -> usize {
    env.count("blobs/sha256")
}

/// No half-written anything: no ingest files, no unfinished snapshots, no scratch.
fn assert_no_leftovers(env: &Env) {
    assert_eq!(env.count("ingest"), 0, "ingest files left");
    let snaps: Vec<String> = std::fs::read_dir(env.root().join("snapshots"))
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(snaps.iter().all(|s| !s.starts_with("tmp-")), "unfinished snapshots left: {snaps:?}");
}

#[test]
fn no_auth_push_pull_round_trip_mount_chunks_mirror_and_run() {
    let env = Env::new("reg-plain");
    let reg = Registry::start(&env.dir.join("reg"), Auth::None);
    let h = reg.host();
    let name = format!("{h}/bb:1");
    load_image(&env, &name, "one", None);
    // Push: every blob sent, the manifest last.
    let o = ok(&env, &["push", &name], &[]);
    assert!(o.starts_with(&format!("The push refers to repository [{h}/bb]\n")), "{o}");
    assert_eq!(o.matches(": Pushed\n").count(), 3, "2 layers and the config: {o}");
    let last = o.lines().last().unwrap().to_string();
    assert!(last.starts_with("1: digest: sha256:"), "{o}");
    let pushed_digest = last.split(' ').nth(2).unwrap().to_string();
    // Byte for byte what the store holds: the manifest and each blob.
    let local_id = ok(&env, &["images", "-q", "--no-trunc", &name], &[]).trim().to_string();
    let (st, head, remote_manifest) =
        http("GET", reg.port, "/v2/bb/manifests/1", &[("Accept", "application/vnd.oci.image.manifest.v1+json")], b"");
    assert_eq!(st, 200, "{head}");
    let hexd = pushed_digest.strip_prefix("sha256:").unwrap();
    assert_eq!(remote_manifest, std::fs::read(env.root().join("blobs/sha256").join(hexd)).unwrap());
    let m: Value = serde_json::from_slice(&remote_manifest).unwrap();
    for l in m["layers"].as_array().unwrap().iter().chain([&m["config"]]) {
        let d = l["digest"].as_str().unwrap();
        let (st, _, remote) = http("GET", reg.port, &format!("/v2/bb/blobs/{d}"), &[], b"");
        assert_eq!(st, 200);
        assert_eq!(remote, std::fs::read(env.root().join("blobs/sha256").join(&d[7..])).unwrap(), "blob {d}");
    }
    // Again: nothing to send.
    let o = ok(&env, &["push", &name], &[]);
    assert_eq!(o.matches(": Layer already exists\n").count(), 3, "{o}");
    // Another repository of the same registry: mounted, not sent.
    let other = format!("{h}/other:1");
    ok(&env, &["tag", &name, &other], &[]);
    let o = ok(&env, &["push", &other], &[]);
    assert_eq!(o.matches(": Mounted from another repository\n").count(), 3, "{o}");

    // Pull into an empty store: same image, runs.
    let env2 = Env::new("reg-plain-2");
    let o = ok(&env2, &["pull", &name], &[]);
    assert!(o.contains("1: Pulling from bb\n"), "{o}");
    assert_eq!(o.matches(": Pull complete\n").count(), 2, "{o}");
    assert!(o.contains(&format!("Digest: {pushed_digest}\n")), "{o}");
    assert!(o.ends_with(&format!("Status: Downloaded newer image for {name}\n{name}\n")), "{o}");
    assert_eq!(ok(&env2, &["images", "-q", "--no-trunc", &name], &[]).trim(), local_id);
    let o = ok(&env2, &["images", "--digests", &format!("{h}/bb")], &[]);
    assert!(o.contains(&pushed_digest), "{o}");
    assert_eq!(ok(&env2, &["run", "--rm", &name, "cat", "/srv/marker"], &[]), "one");
    // A second pull fetches nothing.
    let o = ok(&env2, &["pull", &name], &[]);
    assert_eq!(o.matches(": Already exists\n").count(), 2, "{o}");
    assert!(o.contains(&format!("Status: Image is up to date for {name}\n")), "{o}");
    assert_eq!(ok(&env2, &["pull", "-q", &format!("{h}/bb@{pushed_digest}")], &[]), format!("{h}/bb@{pushed_digest}\n"));
    // -q prints the name only.
    let env3 = Env::new("reg-plain-3");
    assert_eq!(ok(&env3, &["pull", "-q", &other], &[]), format!("{other}\n"));
    drop(env3);

    // run pulls what it does not have; --pull never does not.
    let env4 = Env::new("reg-plain-4");
    let o = ctl(&env4, &["run", "--rm", "--pull", "never", &name, "true"], &[], b"");
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    let o = ctl(&env4, &["run", "--rm", &name, "cat", "/srv/marker"], &[], b"");
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "one");
    assert!(err(&o).contains(&format!("Unable to find image '{name}' locally")), "{}", err(&o));
    assert!(err(&o).contains("Status: Downloaded newer image"), "{}", err(&o));
    drop(env4);

    // Chunked upload (PATCH with Content-Range, then PUT ?digest=) of a bigger layer.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let chunked = format!("{h}/chunked:1");
    load_image(&env, &chunked, "chunky", Some(big.clone()));
    let o = ok(&env, &["push", &chunked], &[("CAPSA_PUSH_CHUNK_SIZE", "65536")]);
    assert!(o.contains(": Pushed\n"), "{o}");
    let env5 = Env::new("reg-plain-5");
    ok(&env5, &["pull", "-q", &chunked], &[]);
    assert_eq!(
        ok(&env5, &["run", "--rm", &chunked, "md5sum", "/srv/blob"], &[]),
        ok(&env, &["run", "--rm", &chunked, "md5sum", "/srv/blob"], &[])
    );
    drop(env5);

    // docker.io names through a mirror (the only endpoint that answers here).
    let hub = format!("{h}/library/busybox:latest");
    ok(&env, &["tag", &name, &hub], &[]);
    ok(&env, &["push", &hub], &[]);
    let env6 = Env::new("reg-plain-6");
    std::fs::write(env6.dir.join("daemon.json"), format!(r#"{{"registry-mirrors": ["http://{h}"]}}"#)).unwrap();
    let o = ok(&env6, &["pull", "busybox"], &[]);
    assert!(o.starts_with("Using default tag: latest\nlatest: Pulling from library/busybox\n"), "{o}");
    assert!(o.ends_with("docker.io/library/busybox:latest\n"), "{o}");
    assert_eq!(ok(&env6, &["run", "--rm", "busybox", "cat", "/srv/marker"], &[]), "one");
    drop(env6);

    // Unknown names and tags.
    let e = fails(&env, &["pull", &format!("{h}/bb:nope")], &[]);
    assert!(e.contains("manifest unknown"), "{e}");
    let e = fails(&env, &["push", &format!("{h}/never-tagged:1")], &[]);
    assert!(e.contains("An image does not exist locally with the tag"), "{e}");
    assert_no_leftovers(&env);
    assert_no_leftovers(&env2);
}

#[test]
fn multi_platform_index_picks_os_arch_variant() {
    let env = Env::new("reg-multi");
    let reg = Registry::start(&env.dir.join("reg"), Auth::None);
    let h = reg.host();
    let mut entries = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8")), ("arm", Some("v6")), ("arm", Some("v7"))] {
        let label = format!("{arch}{}", variant.unwrap_or(""));
        let layers =
            vec![Layer::new().busybox().tar(), Layer::new().dir("srv/", 0o755).file("srv/platform", 0o644, label.as_bytes()).tar()];
        let mut cfg = config(&layers, json!({"Cmd": ["sh"]}));
        cfg["architecture"] = json!(arch);
        if let Some(v) = variant {
            cfg["variant"] = json!(v);
        }
        let tag = format!("{h}/multi:{label}");
        let p = env.write(&format!("{label}.tar"), &docker_archive(&layers, &cfg, &[&tag]));
        ok(&env, &["load", "-q", "-i", p.to_str().unwrap()], &[]);
        let o = ok(&env, &["push", &tag], &[]);
        let last: Vec<&str> = o.lines().last().unwrap().split(' ').collect();
        let mut platform = json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        entries.push(json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": last[2], "size": last[4].parse::<u64>().unwrap(), "platform": platform}));
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
    let (st, head, _) = http(
        "PUT",
        reg.port,
        "/v2/multi/manifests/all",
        &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
        &serde_json::to_vec(&index).unwrap(),
    );
    assert_eq!(st, 201, "{head}");
    let all = format!("{h}/multi:all");
    for (platform, want) in
        [(None, "amd64"), (Some("linux/arm64"), "arm64v8"), (Some("linux/arm/v7"), "armv7"), (Some("linux/arm/v6"), "armv6")]
    {
        let e = Env::new(&format!("reg-multi-{want}"));
        let mut args = vec!["pull", "-q"];
        if let Some(p) = platform {
            args.extend(["--platform", p]);
        }
        args.push(&all);
        ok(&e, &args, &[]);
        assert_eq!(ok(&e, &["run", "--rm", &all, "cat", "/srv/platform"], &[]), want, "{platform:?}");
    }
    let e = fails(&env, &["pull", "--platform", "linux/s390x", &all], &[]);
    assert!(e.contains("no matching manifest for linux/s390x") && e.contains("linux/arm/v7"), "{e}");
    // The index is what the image is known by.
    let (_, _, raw) = http("GET", reg.port, "/v2/multi/manifests/all", &[("Accept", "application/vnd.oci.image.index.v1+json")], b"");
    let idx_digest = capsa_image::Digest::of(&raw).to_string();
    let e2 = Env::new("reg-multi-digest");
    let o = ok(&e2, &["pull", &all], &[]);
    assert!(o.contains(&format!("Digest: {idx_digest}\n")), "{o}");
}

#[test]
fn htpasswd_over_tls_login_logout_and_helpers() {
    let env = Env::new("reg-tls");
    let reg = Registry::start(&env.dir.join("reg"), Auth::Htpasswd(vec![("alice", "secret")]));
    let h = reg.host();
    let certs = reg.certs_d(&env.dir);
    let with_ca = [("CAPSA_CERTS_D", certs.to_str().unwrap())];
    let cfg_path = env.dir.join("docker/config.json");
    // Without the CA the certificate is refused, never downgraded to plain HTTP.
    let o = ctl(&env, &["login", "-u", "alice", "--password-stdin", &h], &[], b"secret\n");
    assert!(!o.status.success());
    assert!(err(&o).contains("UnknownIssuer") || err(&o).contains("certificate"), "{}", err(&o));
    assert!(!cfg_path.exists());
    // Listed as insecure: TLS without verification (docker's rule), so login works.
    std::fs::write(env.dir.join("daemon.json"), format!(r#"{{"insecure-registries": ["{h}"]}}"#)).unwrap();
    let o = ctl(&env, &["login", "-u", "alice", "--password-stdin", &h], &[], b"secret\n");
    assert!(o.status.success(), "{}", err(&o));
    std::fs::remove_file(env.dir.join("daemon.json")).unwrap();
    std::fs::remove_file(&cfg_path).unwrap();
    // A wrong password is refused and not written.
    let o = ctl(&env, &["login", "-u", "alice", "--password-stdin", &h], &with_ca, b"wrong\n");
    assert!(!o.status.success());
    assert!(err(&o).contains("unauthorized"), "{}", err(&o));
    assert!(!cfg_path.exists());
    // Push without logging in: refused.
    let name = format!("{h}/secure/bb:1");
    load_image(&env, &name, "tls", None);
    let e = fails(&env, &["push", &name], &with_ca);
    assert!(e.contains("401") || e.contains("unauthorized"), "{e}");
    // login writes docker's format.
    let o = ctl(&env, &["login", "-u", "alice", "--password-stdin", &h], &with_ca, b"secret\n");
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "Login Succeeded\n");
    let v: Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    assert_eq!(v, json!({"auths": {h.clone(): {"auth": "YWxpY2U6c2VjcmV0"}}}));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cfg_path).unwrap().permissions().mode() & 0o777, 0o600);
    ok(&env, &["push", &name], &with_ca);
    let env2 = Env::new("reg-tls-2");
    std::fs::create_dir_all(env2.dir.join("docker")).unwrap();
    std::fs::copy(&cfg_path, env2.dir.join("docker/config.json")).unwrap();
    ok(&env2, &["pull", &name], &with_ca);
    assert_eq!(ok(&env2, &["run", "--rm", &name, "cat", "/srv/marker"], &with_ca), "tls");
    // logout removes them; other fields of the file stay.
    let mut v2 = v.clone();
    v2["psFormat"] = json!("table {{.ID}}");
    std::fs::write(env2.dir.join("docker/config.json"), serde_json::to_vec(&v2).unwrap()).unwrap();
    assert_eq!(ok(&env2, &["logout", &h], &[]), format!("Removing login credentials for {h}\n"));
    let v3: Value = serde_json::from_slice(&std::fs::read(env2.dir.join("docker/config.json")).unwrap()).unwrap();
    assert_eq!(v3, json!({"auths": {}, "psFormat": "table {{.ID}}"}));
    let e = fails(&env2, &["pull", &format!("{h}/secure/bb:1")], &with_ca);
    assert!(e.contains("401") || e.contains("unauthorized"), "{e}");
    // A credential helper (credHelpers) docker-credential-capsatest on PATH.
    let bin = env2.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-capsatest");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread s\n[ \"$s\" = \"{h}\" ] || {{ echo credentials not found; exit 1; }}\necho '{{\"ServerURL\":\"{h}\",\"Username\":\"alice\",\"Secret\":\"secret\"}}'\n"),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(env2.dir.join("docker/config.json"), format!(r#"{{"credHelpers": {{"{h}": "capsatest"}}}}"#)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    ok(&env2, &["rmi", &name], &[]);
    ok(&env2, &["pull", &name], &[with_ca[0], ("PATH", &path)]);
    assert_no_leftovers(&env2);
}

#[test]
fn token_auth_with_a_token_server() {
    let env = Env::new("reg-token");
    let tokens = TokenServer::start(&env.dir.join("tokens"), vec![("bob", "hunter2")]);
    let reg = Registry::start(&env.dir.join("reg"), Auth::Token(tokens.clone()));
    let h = reg.host();
    let name = format!("{h}/team/app:v1");
    load_image(&env, &name, "token", None);
    // Anonymous: the token grants nothing, the registry refuses.
    let e = fails(&env, &["push", &name], &[]);
    assert!(e.contains("401") || e.contains("unauthorized"), "{e}");
    let o = ctl(&env, &["login", "-u", "bob", "--password-stdin", &h], &[], b"nope");
    assert!(!o.status.success() && err(&o).contains("incorrect username or password"), "{}", err(&o));
    let o = ctl(&env, &["login", "-u", "bob", "-p", "hunter2", &h], &[], b"");
    assert!(o.status.success(), "{}", err(&o));
    let before = tokens.issued.load(Ordering::SeqCst);
    ok(&env, &["push", &name], &[]);
    // One token for the whole push (pull,push scope), kept until it expires.
    assert_eq!(tokens.issued.load(Ordering::SeqCst) - before, 1);
    let env2 = Env::new("reg-token-2");
    std::fs::create_dir_all(env2.dir.join("docker")).unwrap();
    std::fs::copy(env.dir.join("docker/config.json"), env2.dir.join("docker/config.json")).unwrap();
    let before = tokens.issued.load(Ordering::SeqCst);
    ok(&env2, &["pull", &name], &[]);
    assert_eq!(tokens.issued.load(Ordering::SeqCst) - before, 1, "one token for the manifest, config and every layer");
    assert_eq!(ok(&env2, &["run", "--rm", &name, "cat", "/srv/marker"], &[]), "token");
    tokens.stop();
}

/// A registry (through a proxy) that corrupts a blob: a clear error, nothing committed.
/// One that cuts the connection in the middle of a blob: resumed with Range.
#[test]
fn corrupt_or_cut_blobs() {
    let env = Env::new("reg-faults");
    let reg = Registry::start(&env.dir.join("reg"), Auth::None);
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let name = format!("{}/faulty:1", reg.host());
    load_image(&env, &name, "faults", Some(big));
    ok(&env, &["push", &name], &[]);

    let bad = Proxy::start(reg.port, Fault::Corrupt(700_000));
    let via = format!("127.0.0.1:{}/faulty:1", bad.port);
    let env2 = Env::new("reg-faults-2");
    let e = fails(&env2, &["pull", &via], &[]);
    assert!(e.contains("digest mismatch"), "{e}");
    assert!(bad.fired.load(Ordering::SeqCst) > 0);
    // The bad blob is nowhere: not under any name, not half-written, no image.
    let big_blob_present =
        std::fs::read_dir(env2.root().join("blobs/sha256")).unwrap().flatten().any(|e| e.metadata().unwrap().len() > 1_000_000);
    assert!(!big_blob_present, "a corrupt blob was committed");
    // Nor the good blobs and snapshots of the failed pull: it leaves nothing.
    assert_eq!(blob_count(&env2), 0, "blobs of the failed pull left behind");
    assert_eq!(env2.count("snapshots"), 0, "snapshots of the failed pull left behind");
    assert_eq!(ok(&env2, &["images", "-q"], &[]), "");
    assert_no_leftovers(&env2);
    drop(bad);

    let cut = Proxy::start(reg.port, Fault::Cut(900_000));
    let via = format!("127.0.0.1:{}/faulty:1", cut.port);
    let o = ok(&env2, &["pull", &via], &[]);
    assert_eq!(cut.fired.load(Ordering::SeqCst), 1, "the connection was cut once");
    assert!(cut.saw_range.load(Ordering::SeqCst), "the download resumed with a Range request");
    assert!(o.contains("Status: Downloaded newer image"), "{o}");
    assert_eq!(
        ok(&env2, &["run", "--rm", &via, "md5sum", "/srv/blob"], &[]).split(' ').next(),
        ok(&env, &["run", "--rm", &name, "md5sum", "/srv/blob"], &[]).split(' ').next()
    );
    assert_eq!(blob_count(&env2), blob_count(&env), "the same blobs as the source store");
    assert_no_leftovers(&env2);
    drop(cut);

    // A stalled connection: the idle timeout (1 s here) ends it, the download resumes.
    let stall = Proxy::start(reg.port, Fault::Stall(900_000));
    let via = format!("127.0.0.1:{}/faulty:1", stall.port);
    let env3 = Env::new("reg-faults-3");
    let t0 = std::time::Instant::now();
    ok(&env3, &["pull", "-q", &via], &[("CAPSA_REGISTRY_TIMEOUT", "1")]);
    assert_eq!(stall.fired.load(Ordering::SeqCst), 1);
    assert!(stall.saw_range.load(Ordering::SeqCst), "the download resumed with a Range request");
    assert!(t0.elapsed() < std::time::Duration::from_secs(25), "resumed before the stall (30 s) ended");
    drop(env3);

    // 503s are retried with backoff.
    let busy = Proxy::start(reg.port, Fault::Unavailable(2));
    let via = format!("127.0.0.1:{}/faulty:1", busy.port);
    let env4 = Env::new("reg-faults-4");
    ok(&env4, &["pull", "-q", &via], &[]);
    assert_eq!(busy.fired.load(Ordering::SeqCst), 2);
}

/// What the registry serves must be what it says it is: a Content-Type that is not the
/// document's mediaType is refused, a schema 1 manifest is refused by name.
#[test]
fn content_type_mismatch_and_schema1_refused() {
    let env = Env::new("reg-ctype");
    let reg = Registry::start(&env.dir.join("reg"), Auth::None);
    let name = format!("{}/typed:1", reg.host());
    load_image(&env, &name, "typed", None);
    ok(&env, &["push", &name], &[]);
    let oci = "Content-Type: application/vnd.oci.image.manifest.v1+json";
    for (to, want) in [
        (
            "Content-Type: application/vnd.docker.distribution.manifest.v2+json",
            "its mediaType is \"application/vnd.oci.image.manifest.v1+json\" (refused)",
        ),
        ("Content-Type: application/vnd.oci.image.index.v1+json", "(refused)"),
        ("Content-Type: application/vnd.docker.distribution.manifest.v1+prettyjws", "Docker schema 1 manifests are not supported"),
    ] {
        let p = Proxy::start(reg.port, Fault::Rewrite(oci, to));
        let e2 = Env::new("reg-ctype-2");
        let e = fails(&e2, &["pull", &format!("127.0.0.1:{}/typed:1", p.port)], &[]);
        assert!(p.fired.load(Ordering::SeqCst) > 0, "the proxy rewrote nothing");
        assert!(e.contains(want), "{to}: {e}");
        assert_eq!(blob_count(&e2), 0, "nothing stored");
        assert_no_leftovers(&e2);
    }
}

/// An image as a hostile registry would serve it under `evil:1`: its gzip layers, config,
/// manifest, and the answers (`/v2/`, the manifest by tag and by digest, each blob).
struct EvilImage {
    layers: Vec<Vec<u8>>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl EvilImage {
    fn new(tars: Vec<Vec<u8>>) -> EvilImage {
        let layers: Vec<Vec<u8>> = tars.iter().map(|t| gzip(t)).collect();
        let config = serde_json::to_vec(&config(&tars, json!({"Cmd": ["sh"]}))).unwrap();
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": desc("application/vnd.oci.image.config.v1+json", &config),
            "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect::<Vec<_>>()});
        EvilImage { layers, config, manifest: serde_json::to_vec(&manifest).unwrap() }
    }

    /// The same image with its manifest changed by `edit`.
    fn with_manifest(&self, edit: impl FnOnce(&mut Value)) -> EvilImage {
        let mut m: Value = serde_json::from_slice(&self.manifest).unwrap();
        edit(&mut m);
        EvilImage { layers: self.layers.clone(), config: self.config.clone(), manifest: serde_json::to_vec(&m).unwrap() }
    }

    fn blob_path(b: &[u8]) -> String {
        format!("/v2/evil/blobs/{}", capsa_image::Digest::of(b))
    }

    /// The honest answers; `edit` then changes them as the attack needs.
    fn answers(&self) -> Vec<(String, Answer)> {
        let m = Answer::new(200, &self.manifest).header("Content-Type", OCI_MANIFEST);
        let mut v = vec![
            ("/v2/".to_string(), Answer::new(200, b"{}")),
            ("/v2/evil/manifests/1".to_string(), m.clone()),
            (format!("/v2/evil/manifests/{}", capsa_image::Digest::of(&self.manifest)), m),
            (Self::blob_path(&self.config), Answer::new(200, &self.config)),
        ];
        for l in &self.layers {
            v.push((Self::blob_path(l), Answer::new(200, l)));
        }
        v
    }
}

fn set(answers: &mut [(String, Answer)], path: &str, a: Answer) {
    let slot = answers.iter_mut().find(|(p, _)| p == path).unwrap_or_else(|| panic!("no answer for {path}"));
    slot.1 = a;
}

/// Pulls `reference` (after `127.0.0.1:PORT/`) from a registry giving `answers`: it must
/// fail, and the store must hold nothing afterwards (no image, blob, snapshot, ingest).
fn refused(name: &str, answers: Vec<(String, Answer)>, reference: &str) -> String {
    let evil = Evil::start(answers);
    let env = Env::new(&format!("reg-evil-{name}"));
    let e = fails(&env, &["pull", &format!("{}/{reference}", evil.host())], &[]);
    assert_eq!(ok(&env, &["images", "-q"], &[]), "", "{name}: an image was recorded");
    assert_eq!(blob_count(&env), 0, "{name}: blobs left behind");
    assert_eq!(env.count("snapshots"), 0, "{name}: snapshots left behind");
    assert_eq!(env.count("l"), 0, "{name}: snapshot links left behind");
    assert_no_leftovers(&env);
    e
}

/// A registry is an attacker: documents and blobs that lie about their digest or size, a
/// huge manifest, redirects elsewhere, layers with `../` and symlink escapes. Each is
/// refused with a clear error and leaves nothing in the store; credentials never follow
/// a redirect to another host.
#[test]
fn hostile_registry_is_refused_and_leaves_nothing() {
    // Bytes gzip cannot shrink, so the second layer's blob is ~200 kB.
    let noise: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let img = EvilImage::new(vec![
        Layer::new().dir("srv/", 0o755).file("srv/one", 0o644, b"one").tar(),
        Layer::new().dir("srv/", 0o755).file("srv/two", 0o644, &noise).tar(),
    ]);
    let (l0, l1) = (EvilImage::blob_path(&img.layers[0]), EvilImage::blob_path(&img.layers[1]));

    // A layer whose bytes are not its digest (same size).
    let mut a = img.answers();
    let mut lie = img.layers[1].clone();
    let mid = lie.len() / 2;
    lie[mid] ^= 0xff;
    set(&mut a, &l1, Answer::new(200, &lie));
    let e = refused("digest", a, "evil:1");
    assert!(e.contains("digest mismatch") && e.contains(&l1[15..]), "{e}");

    // A layer longer than its descriptor says.
    let mut a = img.answers();
    let mut long = img.layers[1].clone();
    long.extend_from_slice(b"and more");
    set(&mut a, &l1, Answer::new(200, &long));
    let e = refused("long", a, "evil:1");
    assert!(e.contains("sent more than"), "{e}");

    // A layer that always ends early (200 to every Range request): retried, then given up.
    let mut a = img.answers();
    let mut short = Answer::new(200, &img.layers[1][..1000]);
    short.length = Some(img.layers[1].len() as u64);
    set(&mut a, &l1, short);
    let e = refused("short", a, "evil:1");
    assert!(e.contains("interrupted") && e.contains(&l1[15..]), "{e}");

    // A descriptor size at the top of u64 (no overflow, no endless read).
    let a = img.with_manifest(|m| m["layers"][0]["size"] = json!(u64::MAX)).answers();
    let e = refused("u64max", a, "evil:1");
    assert!(e.contains(&l0[15..]), "{e}");

    // A manifest that is not the digest it is pulled by, and one whose
    // Docker-Content-Digest lies.
    let mut a = img.answers();
    let asked = capsa_image::Digest::of(&img.manifest);
    let other = img.manifest.iter().chain(b" ").copied().collect::<Vec<u8>>();
    set(&mut a, &format!("/v2/evil/manifests/{asked}"), Answer::new(200, &other).header("Content-Type", OCI_MANIFEST));
    let e = refused("manifest-digest", a, &format!("evil@{asked}"));
    assert!(e.contains("digest mismatch"), "{e}");
    let mut a = img.answers();
    let wrong = capsa_image::Digest::of(b"something else").to_string();
    set(
        &mut a,
        "/v2/evil/manifests/1",
        Answer::new(200, &img.manifest).header("Content-Type", OCI_MANIFEST).header("Docker-Content-Digest", &wrong),
    );
    let e = refused("header-digest", a, "evil:1");
    assert!(e.contains("digest mismatch") && e.contains(&wrong), "{e}");

    // A manifest of 5 MiB, announced, and not announced (read until the connection ends).
    let mut fat: Value = serde_json::from_slice(&img.manifest).unwrap();
    fat["annotations"] = json!({"padding": "x".repeat(5 << 20)});
    let fat = serde_json::to_vec(&fat).unwrap();
    for (label, length) in [("announced", Some(fat.len() as u64)), ("unannounced", None)] {
        let mut a = img.answers();
        let mut big = Answer::new(200, &fat).header("Content-Type", OCI_MANIFEST);
        big.length = length;
        set(&mut a, "/v2/evil/manifests/1", big);
        let e = refused(&format!("fat-{label}"), a, "evil:1");
        assert!(e.contains("more than the 4194304"), "{label}: {e}");
    }
    // A config descriptor claiming 1 TiB.
    let a = img.with_manifest(|m| m["config"]["size"] = json!(1u64 << 40)).answers();
    let e = refused("config-size", a, "evil:1");
    assert!(e.contains("more than the 4194304"), "{e}");

    // A layer redirected to another host that serves other bytes: refused as any lie.
    let elsewhere = Evil::start(vec![("/blob".to_string(), Answer::new(200, &lie))]);
    let mut a = img.answers();
    set(&mut a, &l1, Answer::new(307, b"").header("Location", &format!("http://{}/blob", elsewhere.host())));
    let e = refused("redirect-lie", a, "evil:1");
    assert!(e.contains("digest mismatch"), "{e}");
    assert_eq!(elsewhere.requests_for("/blob").len(), 1, "the redirect was followed once");
    // A redirect loop ends.
    let mut a = img.answers();
    set(&mut a, &l1, Answer::new(307, b"").header("Location", &l1));
    let e = refused("redirect-loop", a, "evil:1");
    assert!(e.to_lowercase().contains("too many redirects"), "{e}");

    // A registry with Basic auth redirecting a layer elsewhere (as registries do to their
    // storage): the pull works and the password goes to the registry only.
    let storage = Evil::start(vec![("/storage/l1".to_string(), Answer::new(200, &img.layers[1]))]);
    let mut a = img.answers();
    set(&mut a, &l1, Answer::new(307, b"").header("Location", &format!("http://{}/storage/l1", storage.host())));
    set(&mut a, "/v2/", Answer::new(401, b"").header("WWW-Authenticate", "Basic realm=\"evil\""));
    let reg = Evil::start(a);
    let env = Env::new("reg-evil-auth-redirect");
    std::fs::create_dir_all(env.dir.join("docker")).unwrap();
    std::fs::write(env.dir.join("docker/config.json"), format!(r#"{{"auths": {{"{}": {{"auth": "YWxpY2U6c2VjcmV0"}}}}}}"#, reg.host()))
        .unwrap();
    ok(&env, &["pull", "-q", &format!("{}/evil:1", reg.host())], &[]);
    let has_auth = |h: &String| h.to_ascii_lowercase().contains("\r\nauthorization:");
    assert!(reg.requests_for(&l1).iter().all(has_auth), "the registry got the credentials");
    let at_storage = storage.requests_for("/storage/l1");
    assert_eq!(at_storage.len(), 1);
    assert!(!at_storage.iter().any(has_auth), "credentials followed the redirect: {at_storage:?}");
    drop(env);

    // Layers whose entries climb out: `../` names and a write through a symlink that
    // points outside. The blobs are honest (digest, size, diff_id): unpacking refuses.
    let mark = format!("capsa-evil-{}", std::process::id());
    let outside = std::path::PathBuf::from("/tmp").join(&mark);
    let _ = std::fs::remove_dir_all(&outside);
    std::fs::create_dir_all(&outside).unwrap();
    let climb = format!("../../../../../../../../..{}/dotdot", outside.display());
    let escape = EvilImage::new(vec![
        Layer::new().dir("srv/", 0o755).file("srv/fine", 0o644, b"fine").tar(),
        Layer::new().file(&climb, 0o644, b"escaped").tar(),
    ]);
    let e = refused("dotdot", escape.answers(), "evil:1");
    assert!(e.contains("dotdot"), "the error names the entry: {e}");
    let via_link = EvilImage::new(vec![
        Layer::new().symlink("out", &format!("/../../../../..{}", outside.display())).tar(),
        Layer::new().dir("out/", 0o755).file("out/through-link", 0o644, b"escaped").tar(),
    ]);
    let env = Env::new("reg-evil-symlink");
    let evil = Evil::start(via_link.answers());
    // Either refused or unpacked inside the layer; never written outside.
    let o = ctl(&env, &["pull", "-q", &format!("{}/evil:1", evil.host())], &[], b"");
    let left: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "written outside the store through the layers: {left:?} ({})", err(&o));
    if !o.status.success() {
        assert_eq!(blob_count(&env), 0);
        assert_eq!(env.count("snapshots"), 0);
    }
    assert_no_leftovers(&env);
    std::fs::remove_dir_all(&outside).unwrap();
}

//! capsactl end to end, as root: images built here, loaded, listed, tagged, saved, and run
//! as real containers on real overlayfs through the capsa library. Every test has its own
//! store and state root and checks that nothing is left behind.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod support;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::*;

/// Nothing of a finished container is left: mounts, rootfs dirs, rows, capsa state.
fn assert_clean(env: &Env) {
    assert!(env.mounts().is_empty(), "mounts left: {:?}", env.mounts());
    assert_eq!(env.count("containers"), 0, "container dirs left");
    assert_eq!(env.db("SELECT count(*) FROM containers"), "0", "container rows left");
    let state: Vec<_> = std::fs::read_dir(env.state()).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(state.is_empty(), "capsa state left: {state:?}");
}

#[test]
fn load_then_run_prints_hi() {
    let env = Env::new("hi");
    load_busybox(&env);
    assert_eq!(env.ok(&["run", "--rm", "busybox", "echo", "hi"]), "hi\n");
    let o = env.ctl(&["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!((o.status.code(), out(&o).as_str(), err(&o).as_str()), (Some(3), "out\n", "err\n"));
    assert_clean(&env);
    let o = env.ctl(&["run", "--rm", "busybox", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(127), "{}", err(&o));
    assert_clean(&env);
    let o = env.ctl(&["run", "--rm", "--pull", "never", "nosuchimage"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("Unable to find image 'nosuchimage:latest' locally"), "{}", err(&o));
}

#[test]
fn image_config_becomes_the_process() {
    let env = Env::new("config");
    let base = Layer::new().busybox().tar();
    let top = Layer::new().dir("srv/", 0o755).file("srv/hello", 0o644, b"from the image\n").tar();
    let layers = vec![base, top];
    let cfg = config(
        &layers,
        json!({"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["cat hello; echo $GREETING; id -u; id -G; pwd"], "Env": ["GREETING=hey", "PATH=/bin"],
                "WorkingDir": "/srv", "User": "alice", "Labels": {"org.example": "yes"}, "StopSignal": "SIGQUIT", "Volumes": {"/data": {}}}),
    );
    let p = env.write("img.tar", &docker_archive(&layers, &cfg, &["cfg:1"]));
    env.ok(&["load", "-i", p.to_str().unwrap()]);
    assert_eq!(env.ok(&["run", "--rm", "cfg:1"]), "from the image\nhey\n1000\n1000 10\n/srv\n");
    // A command replaces Cmd, not the Entrypoint; -e, -u, -w override.
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "-e",
            "GREETING=yo",
            "-u",
            "0:0",
            "-w",
            "/",
            "cfg:1",
            "echo $GREETING; id -u; pwd; test -d /data && echo vol"
        ]),
        "yo\n0\n/\nvol\n"
    );
    assert_eq!(env.ok(&["run", "--rm", "--entrypoint", "/bin/echo", "cfg:1", "plain"]), "plain\n");
    let o = env.ctl(&["run", "--rm", "-u", "bob", "cfg:1"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("unable to find user bob"), "{}", err(&o));
    assert_clean(&env);
    // CVE-2024-40635: a uid above int32 in the image config is refused, never run as root.
    let cfg = config(&layers[..1], json!({"Cmd": ["id", "-u"], "User": "2147483648"}));
    let p = env.write("big-uid.tar", &docker_archive(&layers[..1], &cfg, &["biguid:1"]));
    env.ok(&["load", "-i", p.to_str().unwrap()]);
    let o = env.ctl(&["run", "--rm", "biguid:1"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("CVE-2024-40635") && out(&o).is_empty(), "{}", err(&o));
    assert_clean(&env);
}

/// Layer 2 deletes a file and replaces a directory of layer 1: overlay and the copied
/// fallback must both show it.
#[test]
fn whiteouts_and_opaque_dirs_on_overlay_and_on_the_copied_fallback() {
    let env = Env::new("whiteouts");
    let l1 = Layer::new()
        .busybox()
        .file("etc/removed", 0o644, b"x")
        .dir("data/", 0o755)
        .file("data/a", 0o644, b"a")
        .file("keep", 0o644, b"k")
        .tar();
    let l2 = Layer::new().whiteout("etc/removed").opaque("data").file("data/b", 0o644, b"b").tar();
    let layers = vec![l1, l2];
    let cfg = config(&layers, json!({"Cmd": ["sh", "-c", "ls /data; test -e /etc/removed || echo gone; cat /keep"]}));
    let p = env.write("wh.tar", &docker_archive(&layers, &cfg, &["wh:1"]));
    env.ok(&["load", "-i", p.to_str().unwrap()]);
    assert_eq!(env.ok(&["run", "--rm", "wh:1"]), "b\ngone\nk");
    let o = env.ctl_env(&["run", "--rm", "wh:1"], &[("CAPSA_NO_OVERLAY", "1")]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "b\ngone\nk");
    assert!(err(&o).contains("using a copied rootfs"), "the fallback says so: {}", err(&o));
    assert_clean(&env);
}

#[test]
fn images_tag_inspect_history_rmi_prune() {
    let env = Env::new("cmds");
    load_busybox(&env);
    let id = env.ok(&["images", "-q"]).trim().to_string();
    assert_eq!(id.len(), 12);
    env.ok(&["tag", "busybox", "me/bb:v1"]);
    let t = env.ok(&["images"]);
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("REPOSITORY   TAG      IMAGE ID       CREATED") && lines[0].ends_with("SIZE"), "{t}");
    assert!(lines.iter().any(|l| l.starts_with("me/bb        v1       ") && l.contains(&id)), "{t}");
    assert!(env.ok(&["images", "--digests"]).lines().next().unwrap().contains("DIGEST"));
    assert_eq!(env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]), "busybox:latest\nme/bb:v1\n");
    assert_eq!(env.ok(&["images", "me/bb", "-q"]).trim(), id);
    let v: Value = serde_json::from_str(&env.ok(&["image", "inspect", "me/bb:v1"])).unwrap();
    assert_eq!(v[0]["RepoTags"], json!(["busybox:latest", "me/bb:v1"]));
    assert_eq!(v[0]["Config"]["Cmd"], json!(["sh"]));
    assert_eq!(v[0]["RepoDigests"], json!([]), "a docker-archive gives no repo digest, as with docker load");
    assert_eq!(v[0]["Os"], "linux");
    assert!(v[0]["Id"].as_str().unwrap().starts_with(&format!("sha256:{id}")));
    assert_eq!(env.ok(&["inspect", "--format", "{{.Config.Cmd}} {{.Architecture}}", "busybox"]), "[\"sh\"] amd64\n");
    let h = env.ok(&["history", "busybox"]);
    assert!(h.starts_with("IMAGE          CREATED") && h.contains("layer 0") && h.lines().nth(1).unwrap().starts_with(&id), "{h}");
    // rmi by id with two tags needs -f; by name it only untags.
    assert!(env.fails(&["rmi", &id]).contains("must be forced"));
    assert_eq!(env.ok(&["rmi", "me/bb:v1"]), "Untagged: me/bb:v1\n");
    assert!(env.count("snapshots") == 1 && env.db("SELECT count(*) FROM images") == "1");
    let o = env.ok(&["rmi", "busybox"]);
    assert!(o.starts_with("Untagged: busybox:latest\nDeleted: sha256:"), "{o}");
    assert_eq!(env.count("snapshots"), 0, "layers removed with the last image");
    assert_eq!(env.count("blobs/sha256"), 0, "blobs removed with the last image");
    assert!(env.fails(&["rmi", "busybox"]).contains("No such image"));
    // A dangling image (its tag moved away) goes with image prune.
    load_busybox(&env);
    let other = Layer::new().busybox().file("x", 0o644, b"x").tar();
    let cfg = config(std::slice::from_ref(&other), json!({"Cmd": ["sh"]}));
    let p = env.write("other.tar", &docker_archive(&[other], &cfg, &["busybox:latest"]));
    env.ok(&["load", "-i", p.to_str().unwrap()]);
    assert!(env.ok(&["images"]).contains("<none>"));
    let o = env.ok(&["image", "prune", "-f"]);
    assert!(o.contains("deleted: sha256:") && o.contains("Total reclaimed space:"), "{o}");
    assert_eq!(env.db("SELECT count(*) FROM images"), "1");
}

#[test]
fn save_and_load_round_trip_with_umoci_and_skopeo() {
    let env = Env::new("save");
    load_busybox(&env);
    let d = env.dir.join("saved-docker.tar");
    let o = env.dir.join("saved-oci.tar");
    env.ok(&["save", "-o", d.to_str().unwrap(), "busybox"]);
    env.ok(&["save", "--format", "oci", "-o", o.to_str().unwrap(), "busybox"]);
    // Other tools read what we wrote.
    let s = Command::new("skopeo").args(["inspect", &format!("docker-archive:{}", d.display())]).output().expect("skopeo (hack/deps.sh)");
    assert!(s.status.success(), "skopeo: {}", err(&s));
    let layout = env.dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    assert!(Command::new("tar").arg("-C").arg(&layout).arg("-xf").arg(&o).status().unwrap().success());
    let u = Command::new("umoci").arg("ls").arg("--layout").arg(&layout).output().expect("umoci (hack/deps.sh)");
    assert_eq!(out(&u), "latest\n", "{}", err(&u));
    // An OCI layout directory: umoci reads it, we load it back.
    let od = env.dir.join("saved-oci-dir");
    env.ok(&["save", "--format", "oci-dir", "-o", od.to_str().unwrap(), "busybox"]);
    let u = Command::new("umoci").arg("ls").arg("--layout").arg(&od).output().unwrap();
    assert_eq!(out(&u), "latest\n", "{}", err(&u));
    assert!(env.fails(&["save", "--format", "oci-dir", "-o", od.to_str().unwrap(), "busybox"]).contains("already exists"));
    // And our archives load into a fresh store and run.
    for f in [&d, &o, &od] {
        let env2 = Env::new(&format!("save-{}", f.file_name().unwrap().to_string_lossy()));
        assert_eq!(env2.ok(&["load", "-i", f.to_str().unwrap()]), "Loaded image: busybox:latest\n");
        assert_eq!(env2.ok(&["run", "--rm", "busybox", "echo", "again"]), "again\n");
    }
    // A docker-archive and an OCI layout made by umoci + skopeo on this machine load.
    let rootfs = env.dir.join("rootfs.tar");
    std::fs::write(&rootfs, Layer::new().busybox().tar()).unwrap();
    let oci = env.dir.join("umoci");
    let run = |c: &mut Command| {
        let o = c.output().unwrap();
        assert!(o.status.success(), "{c:?}: {}", err(&o));
    };
    run(Command::new("umoci").args(["init", "--layout"]).arg(&oci));
    run(Command::new("umoci").args(["new", "--image"]).arg(format!("{}:bb", oci.display())));
    run(Command::new("umoci").args(["raw", "add-layer", "--image"]).arg(format!("{}:bb", oci.display())).arg(&rootfs));
    run(Command::new("umoci").args(["config", "--config.cmd", "sh", "--image"]).arg(format!("{}:bb", oci.display())));
    let da = env.dir.join("skopeo.tar");
    run(Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("oci:{}:bb", oci.display()))
        .arg(format!("docker-archive:{}:skopeo/bb:1", da.display())));
    let env3 = Env::new("save-skopeo");
    assert_eq!(env3.ok(&["load", "-i", da.to_str().unwrap()]), "Loaded image: skopeo/bb:1\n");
    assert_eq!(env3.ok(&["run", "--rm", "skopeo/bb:1", "echo", "skopeo"]), "skopeo\n");
    let o = env3.ok(&["load", "-i", oci.to_str().unwrap()]);
    assert!(o.starts_with("Loaded image ID: sha256:"), "umoci's layout names no repository: {o}");
    // umoci's layers are gzip: saved in docker format they are written out decompressed.
    let id = o.trim().trim_start_matches("Loaded image ID: ").to_string();
    env3.ok(&["tag", &id, "umoci:gz"]);
    let gz = env.dir.join("from-gzip.tar");
    env3.ok(&["save", "-o", gz.to_str().unwrap(), "umoci:gz"]);
    let env4 = Env::new("save-gz");
    assert_eq!(env4.ok(&["load", "-i", gz.to_str().unwrap()]), "Loaded image: umoci:gz\n");
    assert_eq!(env4.ok(&["run", "--rm", "umoci:gz", "echo", "gz"]), "gz\n");
    assert_clean(&env3);
}

#[test]
fn import_a_rootfs_tarball() {
    let env = Env::new("import");
    let p = env.write("rootfs.tar.gz", &gzip(&Layer::new().busybox().tar()));
    let id = env.ok(&["import", p.to_str().unwrap(), "imported:1"]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(env.ok(&["run", "--rm", "imported:1", "echo", "imported"]), "imported\n");
    let h = env.ok(&["history", "imported:1"]);
    assert!(h.contains("Imported from"), "{h}");
    assert_clean(&env);
}

#[test]
fn bad_archives_are_refused_and_leave_nothing() {
    let env = Env::new("bad");
    let good = Layer::new().busybox().tar();
    let evil = Layer::new().file("x", 0o644, b"x").tar();
    // Layer content that is not what the config's diff_ids say.
    let cfg = config(std::slice::from_ref(&good), json!({"Cmd": ["sh"]}));
    let p = env.write("mismatch.tar", &docker_archive(std::slice::from_ref(&evil), &cfg, &["bad:1"]));
    let e = env.fails(&["load", "-i", p.to_str().unwrap()]);
    assert!(e.contains("digest mismatch") && e.contains("layer.tar"), "{e}");
    // CVE-2024-3727: a digest that is a path.
    let idx = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:../../../../etc/passwd", "size": 10}]});
    let p = env.write("digest-path.tar", &oci_layout(&[], &idx));
    let e = env.fails(&["load", "-i", p.to_str().unwrap()]);
    assert!(e.contains("invalid digest"), "{e}");
    // docker-archive paths that climb out of the archive.
    let m = json!([{"Config": "../../../etc/passwd", "RepoTags": ["x:1"], "Layers": []}]);
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "manifest.json", &serde_json::to_vec(&m).unwrap());
    let p = env.write("climb.tar", &b.into_inner().unwrap());
    let e = env.fails(&["load", "-i", p.to_str().unwrap()]);
    assert!(e.contains("escapes the archive") || e.contains("no file"), "{e}");
    // CVE-2021-41190: a manifest whose mediaType says it is an index.
    let cfg_b = serde_json::to_vec(&config(std::slice::from_ref(&good), json!({}))).unwrap();
    let man = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &cfg_b), "layers": [desc("application/vnd.oci.image.layer.v1.tar", &good)], "manifests": []}))
    .unwrap();
    let idx = json!({"schemaVersion": 2, "manifests": [desc("application/vnd.oci.image.manifest.v1+json", &man)]});
    let p = env.write("ambiguous.tar", &oci_layout(&[good.clone(), cfg_b.clone(), man], &idx));
    let e = env.fails(&["load", "-i", p.to_str().unwrap()]);
    assert!(e.contains("CVE-2021-41190"), "{e}");
    // A layer with an entry that climbs out: the error names the layer and the entry.
    let climb = Layer::new().file("../../escape", 0o644, b"x").tar();
    let cfg = config(std::slice::from_ref(&climb), json!({}));
    let p = env.write("climb-layer.tar", &docker_archive(std::slice::from_ref(&climb), &cfg, &["climb:1"]));
    let e = env.fails(&["load", "-i", p.to_str().unwrap()]);
    assert!(e.contains("layer sha256:") && e.contains("entry \"../../escape\""), "{e}");
    // A truncated archive.
    let full = busybox_archive();
    let p = env.write("trunc.tar", &full[..full.len() / 2]);
    let e = env.fails(&["load", "-i", p.to_str().unwrap()]);
    assert!(e.contains("truncated") || e.contains("no file"), "{e}");
    // Nothing was recorded, no snapshot is there; verified blobs are garbage for prune.
    assert_eq!(env.db("SELECT count(*) FROM images"), "0");
    assert_eq!(env.db("SELECT count(*) FROM layers"), "0");
    assert_eq!(env.count("snapshots"), 0, "no snapshot (finished or not) after failed loads");
    env.ok(&["image", "prune", "-f"]);
    assert_eq!(env.count("blobs/sha256"), 0);
    assert_eq!(env.count("ingest") + env.count("tmp"), 0);
}

#[test]
fn multi_platform_index_picks_the_host_or_platform() {
    let env = Env::new("platform");
    let amd = Layer::new().busybox().file("arch", 0o644, b"amd64\n").tar();
    let arm = Layer::new().file("arch", 0o644, b"arm64\n").tar();
    let mk = |l: &Vec<u8>, arch: &str| {
        let mut c = config(std::slice::from_ref(l), json!({"Cmd": ["cat", "/arch"]}));
        c["architecture"] = json!(arch);
        let cb = serde_json::to_vec(&c).unwrap();
        let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc("application/vnd.oci.image.config.v1+json", &cb), "layers": [desc("application/vnd.oci.image.layer.v1.tar", l)]}))
        .unwrap();
        (cb, m)
    };
    let (ca, ma) = mk(&amd, "amd64");
    let (cr, mr) = mk(&arm, "arm64");
    let mut da = desc("application/vnd.oci.image.manifest.v1+json", &ma);
    da["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let mut dr = desc("application/vnd.oci.image.manifest.v1+json", &mr);
    dr["platform"] = json!({"os": "linux", "architecture": "arm64", "variant": "v8"});
    let list =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [dr, da]}))
            .unwrap();
    let mut top = desc("application/vnd.oci.image.index.v1+json", &list);
    top["annotations"] = json!({"io.containerd.image.name": "docker.io/library/multi:1"});
    let idx = json!({"schemaVersion": 2, "manifests": [top]});
    let p = env.write("multi.tar", &oci_layout(&[amd, arm, ca, ma, cr, mr, list], &idx));
    env.ok(&["load", "-i", p.to_str().unwrap()]);
    assert_eq!(env.ok(&["run", "--rm", "multi:1"]), "amd64\n");
    assert!(env.ok(&["images", "--digests"]).contains("sha256:"), "the index digest is the repo digest");
    let env2 = Env::new("platform-arm");
    env2.ok(&["load", "--platform", "linux/arm64", "-i", p.to_str().unwrap()]);
    assert_eq!(env2.ok(&["inspect", "--format", "{{.Architecture}}", "multi:1"]), "arm64\n");
    let e = env2.fails(&["load", "--platform", "linux/s390x", "-i", p.to_str().unwrap()]);
    assert!(e.contains("no manifest for platform linux/s390x") && e.contains("linux/arm64/v8"), "{e}");
    assert_clean(&env);
}

#[test]
fn an_image_of_120_layers_mounts_and_runs() {
    let env = Env::new("120");
    let mut layers = vec![Layer::new().busybox().tar()];
    for i in 1..120 {
        layers.push(Layer::new().file(&format!("layers/f{i:03}"), 0o644, format!("{i}\n").as_bytes()).tar());
    }
    let cfg = config(&layers, json!({"Cmd": ["sh", "-c", "ls /layers | wc -l; cat /layers/f119"]}));
    let p = env.write("120.tar", &docker_archive(&layers, &cfg, &["many:120"]));
    env.ok(&["load", "-i", p.to_str().unwrap()]);
    assert_eq!(env.count("snapshots"), 120);
    assert_eq!(env.ok(&["run", "--rm", "many:120"]).split_whitespace().collect::<Vec<_>>(), ["119", "119"]);
    assert_clean(&env);
}

/// A second container of an unpacked image copies no byte of its layers: its files are the
/// snapshot's own inodes (seen through overlay), and the store does not grow.
#[test]
fn a_second_container_copies_no_layer_byte() {
    let env = Env::new("nocopy");
    load_busybox(&env);
    let snap = std::fs::read_dir(env.root().join("snapshots")).unwrap().next().unwrap().unwrap().path();
    let ino = std::fs::metadata(snap.join("fs/bin/busybox")).unwrap().ino();
    let usage = || {
        let o = Command::new("du")
            .args(["-s", "--block-size=1"])
            .arg(env.root().join("snapshots"))
            .arg(env.root().join("blobs"))
            .output()
            .unwrap();
        out(&o).lines().map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap()).sum::<u64>()
    };
    let before = usage();
    for _ in 0..2 {
        let seen = env.ok(&["run", "--rm", "busybox", "stat", "-c", "%i", "/bin/busybox"]);
        assert_eq!(seen.trim(), ino.to_string(), "the container sees the snapshot's inode");
    }
    assert_eq!(usage(), before);
    assert_clean(&env);
}

#[test]
fn concurrent_loads_share_one_snapshot() {
    let env = Env::new("concurrent");
    let p = env.write("busybox.tar", &busybox_archive());
    let kids: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_capsactl"))
                .arg("--root")
                .arg(env.root())
                .args(["load", "-q", "-i", p.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", err(&o));
    }
    assert_eq!(env.db("SELECT count(*) FROM images"), "1");
    assert_eq!(env.db("SELECT refs FROM layers"), "1");
    assert_eq!(env.count("snapshots"), 1);
    assert_eq!(env.ok(&["run", "--rm", "busybox", "true"]), "");
}

#[test]
fn killed_run_and_load_are_cleaned_up_by_rm_and_prune() {
    let env = Env::new("killed");
    load_busybox(&env);
    let mut run = Command::new(env!("CARGO_BIN_EXE_capsactl"))
        .arg("--root")
        .arg(env.root())
        .arg("--state-root")
        .arg(env.state())
        .args(["run", "--rm", "busybox", "sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.db("SELECT state FROM containers") != "running" || std::fs::read_dir(env.state()).map(|r| r.count()).unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "the container did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    run.kill().unwrap();
    run.wait().unwrap();
    // As with docker, the container outlives a killed client: its monitor looks after it
    // (tests/containers.rs kills monitors too).
    assert!(!env.mounts().is_empty(), "the container runs on, its rootfs mounted");
    assert_eq!(env.db("SELECT state FROM containers"), "running");
    // A load killed half-way through its input.
    let mut load = Command::new(env!("CARGO_BIN_EXE_capsactl"))
        .arg("--root")
        .arg(env.root())
        .args(["load", "-q"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let other = Layer::new().busybox().file("big", 0o644, &vec![3u8; 4 << 20]).tar();
    let cfg = config(std::slice::from_ref(&other), json!({}));
    let archive = docker_archive(&[other], &cfg, &["half:1"]);
    {
        use std::io::Write;
        let stdin = load.stdin.as_mut().unwrap();
        stdin.write_all(&archive[..archive.len() / 2]).unwrap();
        stdin.flush().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    load.kill().unwrap();
    load.wait().unwrap();
    let id = env.db("SELECT id FROM containers");
    env.ok(&["rm", "-f", &id]);
    env.ok(&["image", "prune", "-f"]);
    assert_clean(&env);
    assert_eq!(env.count("tmp") + env.count("ingest"), 0);
    assert_eq!(env.ok(&["images", "--format", "{{.Repository}}"]), "busybox\n");
    assert_eq!(env.ok(&["run", "--rm", "busybox", "echo", "still"]), "still\n");
}

/// A Debian userland from the packages on this machine: bash and coreutils with their
/// shared libraries (found by ldd) in one layer, Debian's /etc files in another.
#[test]
fn a_debian_userland_from_host_packages_runs() {
    let env = Env::new("debian");
    let bins = ["/bin/bash", "/usr/bin/env", "/usr/bin/id", "/usr/bin/cat", "/usr/bin/ls"];
    let mut files: Vec<String> = bins.iter().map(|b| b.to_string()).collect();
    for b in bins {
        let o = Command::new("ldd").arg(b).output().expect("ldd");
        for l in out(&o).lines() {
            let path = l.split_whitespace().find(|w| w.starts_with('/')).map(str::to_string);
            if let Some(p) = path {
                if !files.contains(&p) {
                    files.push(p);
                }
            }
        }
    }
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(true);
    for f in &files {
        b.append_path_with_name(f, f.trim_start_matches('/')).unwrap();
    }
    let bins_layer = b.into_inner().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for f in ["/etc/os-release", "/etc/debian_version", "/etc/passwd", "/etc/group"] {
        b.append_path_with_name(f, f.trim_start_matches('/')).unwrap();
    }
    let etc_layer = b.into_inner().unwrap();
    let layers = vec![bins_layer, etc_layer];
    let cfg = config(
        &layers,
        json!({"Cmd": ["/bin/bash", "-c", "echo bash $BASH_VERSINFO; . /etc/os-release; echo $ID; id -un"], "Env": ["PATH=/usr/bin:/bin"]}),
    );
    let p = env.write("debian.tar", &docker_archive(&layers, &cfg, &["debian-host:1"]));
    env.ok(&["load", "-i", p.to_str().unwrap()]);
    let o = env.ok(&["run", "--rm", "debian-host:1"]);
    let lines: Vec<&str> = o.lines().collect();
    assert!(lines[0].starts_with("bash ") && lines[1] == "debian" && lines[2] == "root", "{o}");
    assert_clean(&env);
}

/// Layers shared by two images are unpacked once, kept while either image needs them, and
/// removed with the last one.
#[test]
fn shared_layers_are_counted_and_collected() {
    let env = Env::new("shared");
    let base = Layer::new().busybox().tar();
    let a = Layer::new().file("a", 0o644, b"a\n").tar();
    let b = Layer::new().file("b", 0o644, b"b\n").tar();
    for (name, top) in [("img:a", &a), ("img:b", &b)] {
        let layers = vec![base.clone(), top.clone()];
        let cfg = config(&layers, json!({"Cmd": ["sh"]}));
        let p = env.write("x.tar", &docker_archive(&layers, &cfg, &[name]));
        env.ok(&["load", "-i", p.to_str().unwrap()]);
    }
    assert_eq!(env.count("snapshots"), 3, "the base is unpacked once");
    assert_eq!(env.db("SELECT refs FROM layers WHERE parent IS NULL"), "2");
    env.ok(&["rmi", "img:a"]);
    assert_eq!(env.count("snapshots"), 2);
    assert_eq!(env.ok(&["run", "--rm", "img:b", "cat", "/b"]), "b\n");
    env.ok(&["rmi", "img:b"]);
    assert_eq!(env.count("snapshots"), 0);
    assert_eq!(env.count("blobs/sha256"), 0);
    assert_eq!(env.db("SELECT count(*) FROM layers"), "0");
    assert_clean(&env);
}

/// `run -it` from a terminal: the process gets a pty of its own, sees a tty, and its output
/// comes back through ours.
#[test]
fn run_with_a_terminal() {
    use std::io::Read;
    use std::os::fd::{AsFd, OwnedFd};
    let env = Env::new("tty");
    load_busybox(&env);
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = |fd: &OwnedFd| Stdio::from(fd.as_fd().try_clone_to_owned().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_capsactl"))
        .arg("--root")
        .arg(env.root())
        .arg("--state-root")
        .arg(env.state())
        .args(["run", "--rm", "-i", "-t", "busybox", "sh", "-c", "tty; echo $TERM; exit 7"])
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave))
        .spawn()
        .unwrap();
    drop(pty.slave);
    let status = child.wait().unwrap();
    let mut master = std::fs::File::from(pty.master);
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    // Everything was written before exit; read until the pty reports no more (EIO).
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(status.code(), Some(7), "{got}");
    assert!(got.contains("/dev/pts/0") && got.contains("xterm"), "{got:?}");
    assert_clean(&env);
}

//! `capsactl cp` end to end, as root, on real containers: both directions, docker's rules
//! for files, directories and `DIR/.`, paths resolved through the image's symlinks before
//! the mount is picked (a volume behind a symlink), the symlink-swap race of
//! CVE-2018-15664 run against it, and the booby-trapped libraries of CVE-2019-14271. Every
//! test checks that nothing is left behind.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;
use support::*;

/// Loads busybox plus `extra` (applied on top in the same layer) as `cpimg:latest`.
fn load_image(env: &Env, extra: impl FnOnce(Layer) -> Layer) {
    let l = extra(Layer::new().busybox()).tar();
    let cfg = config(std::slice::from_ref(&l), json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}));
    let p = env.write("cpimg.tar", &docker_archive(&[l], &cfg, &["cpimg:latest"]));
    env.ok(&["load", "-i", p.to_str().unwrap()]);
}

/// Nothing of any container is left: processes, mounts, rows, dirs, capsa state, and the
/// cgroups of the containers `ids`.
fn assert_clean(env: &Env, ids: &[String]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !env.procs().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(env.procs().is_empty(), "processes left: {:?}", env.procs());
    assert!(env.mounts().is_empty(), "mounts left: {:?}", env.mounts());
    assert_eq!(env.count("containers"), 0, "container dirs left");
    assert_eq!(env.db("SELECT count(*) FROM containers"), "0", "container rows left");
    assert_eq!(env.db("SELECT count(*) FROM volumes WHERE anonymous = 1"), "0", "anonymous volumes left");
    let state: Vec<_> = std::fs::read_dir(env.state()).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(state.is_empty(), "capsa state left: {state:?}");
    for id in ids {
        for c in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let p = c.path().join("capsa").join(id);
            assert!(!p.exists(), "cgroup left: {}", p.display());
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn cp_resolves_the_images_symlinks_before_picking_the_mount() {
    let env = Env::new("cp-resolve");
    // /v -> /data and /w -> data lead to the volume mounted on /data; /lnk -> /data/f;
    // /m -> /real: a mount on /m lands on /real (the runtime follows it in the root).
    load_image(&env, |l| {
        l.dir("data/", 0o755)
            .file("data/f", 0o644, b"image\n")
            .symlink("v", "/data")
            .symlink("w", "data")
            .symlink("lnk", "/data/f")
            .dir("real/", 0o755)
            .file("real/g", 0o644, b"image g\n")
            .symlink("m", "/real")
    });
    let vol = env.dir.join("vol");
    let vol2 = env.dir.join("vol2");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::create_dir_all(&vol2).unwrap();
    std::fs::write(vol.join("f"), "volume\n").unwrap();
    std::fs::write(vol2.join("g"), "volume g\n").unwrap();
    let (b1, b2) = (format!("{}:/data", vol.display()), format!("{}:/m", vol2.display()));
    let id = env.ok(&["create", "--name", "ct", "-v", &b1, "-v", &b2, "cpimg", "sleep", "1000"]).trim().to_string();
    let host_in = env.write("in.txt", b"from the host\n");

    // Twice: on the created container (its rootfs mounted by cp itself), then running.
    for round in ["created", "running"] {
        if round == "running" {
            env.ok(&["start", "ct"]);
            // The runtime put the second mount where /m leads, as cp assumes.
            assert_eq!(env.ok(&["exec", "ct", "cat", "/real/g"]), "volume g\n");
        }
        let out = env.dir.join(format!("out-{round}"));
        std::fs::create_dir_all(&out).unwrap();
        for (src, want) in [
            ("ct:/v/f", "volume\n"),
            ("ct:/w/f", "volume\n"),
            ("ct:/data/f", "volume\n"),
            ("ct:/real/g", "volume g\n"),
            ("ct:/m/g", "volume g\n"),
        ] {
            let dst = out.join("got");
            env.ok(&["cp", src, dst.to_str().unwrap()]);
            assert_eq!(read(&dst), want, "{round}: cp {src}");
            std::fs::remove_file(&dst).unwrap();
        }
        // A symlink named last is copied as a link, or followed with -L (into the volume).
        env.ok(&["cp", "ct:/lnk", out.join("l").to_str().unwrap()]);
        assert_eq!(std::fs::read_link(out.join("l")).unwrap(), Path::new("/data/f"));
        env.ok(&["cp", "-L", "ct:/lnk", out.join("lf").to_str().unwrap()]);
        assert_eq!(read(&out.join("lf")), "volume\n");
        // A directory through the symlink: its content is the volume's.
        env.ok(&["cp", "ct:/v/.", out.join("d").to_str().unwrap()]);
        assert_eq!(read(&out.join("d/f")), "volume\n");

        // Into the container: through /v/ and /w, and a tar on stdin into /v.
        env.ok(&["cp", host_in.to_str().unwrap(), &format!("ct:/v/{round}-1")]);
        env.ok(&["cp", host_in.to_str().unwrap(), "ct:/w/"]);
        assert_eq!(read(&vol.join(format!("{round}-1"))), "from the host\n");
        assert_eq!(read(&vol.join("in.txt")), "from the host\n");
        std::fs::remove_file(vol.join("in.txt")).unwrap();
        let tar = Layer::new().file(&format!("{round}-tar"), 0o644, b"tarred\n").tar();
        let mut cp = Command::new(env!("CARGO_BIN_EXE_capsactl"))
            .arg("--root")
            .arg(env.root())
            .arg("--state-root")
            .arg(env.state())
            .args(["cp", "-", "ct:/v"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut cp.stdin.take().unwrap(), &tar).unwrap();
        assert!(cp.wait().unwrap().success());
        assert_eq!(read(&vol.join(format!("{round}-tar"))), "tarred\n");
        env.ok(&["cp", host_in.to_str().unwrap(), "ct:/m/"]);
        assert_eq!(read(&vol2.join("in.txt")), "from the host\n");
        std::fs::remove_file(vol2.join("in.txt")).unwrap();
    }
    // Nothing went into the image's hidden /data or /real: the rootfs is unchanged there.
    let diff = env.ok(&["diff", "ct"]);
    assert!(!diff.contains("/data") && !diff.contains("/real"), "written under a mount's hidden dir: {diff}");
    env.ok(&["rm", "-f", "ct"]);
    assert_clean(&env, &[id]);
}

#[test]
fn cp_both_ways_files_directories_contents_archive_and_errors() {
    let env = Env::new("cp-both");
    load_image(&env, |l| {
        l.dir("srv/", 0o755).dir("srv/sub/", 0o750).file("srv/sub/a", 0o640, b"a\n").owned("srv/o", 0o600, 1000, 1000, b"o\n")
    });
    let id = env.ok(&["run", "-d", "--name", "ct", "cpimg", "sleep", "1000"]).trim().to_string();
    let out = env.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    // A directory into an existing host directory: the directory itself.
    env.ok(&["cp", "ct:/srv", out.to_str().unwrap()]);
    assert_eq!(read(&out.join("srv/sub/a")), "a\n");
    // DIR/. into a new directory: its content; -a keeps owners, without it they are root's.
    env.ok(&["cp", "-a", "ct:/srv/.", out.join("copy").to_str().unwrap()]);
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(out.join("copy/o")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (1000, 1000, 0o600));
    assert_eq!(std::fs::metadata(out.join("srv/o")).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(out.join("copy/sub")).unwrap().mode() & 0o777, 0o750);
    // To stdout as a tar.
    let o = env.ctl(&["cp", "ct:/srv/sub", "-"]);
    assert!(o.status.success(), "{}", err(&o));
    let mut names: Vec<String> =
        tar::Archive::new(&o.stdout[..]).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    names.sort();
    assert_eq!(names, ["sub/", "sub/a"]);
    // From the host: a file (new name, into a directory), a directory, DIR/.
    let h = env.dir.join("h");
    std::fs::create_dir_all(h.join("d/e")).unwrap();
    std::fs::write(h.join("d/e/x"), "x\n").unwrap();
    std::fs::write(h.join("f"), "f\n").unwrap();
    env.ok(&["cp", h.join("f").to_str().unwrap(), "ct:/tmp/renamed"]);
    env.ok(&["cp", h.join("f").to_str().unwrap(), "ct:/tmp"]);
    env.ok(&["cp", h.join("d").to_str().unwrap(), "ct:/tmp/"]);
    env.ok(&["cp", &format!("{}/.", h.join("d").display()), "ct:/srv/"]);
    assert_eq!(env.ok(&["exec", "ct", "cat", "/tmp/renamed", "/tmp/f", "/tmp/d/e/x", "/srv/e/x"]), "f\nf\nx\nx\n");
    // Errors: docker's words, non-zero, nothing written.
    for (args, msg) in [
        (vec!["cp", "ct:/nope", out.to_str().unwrap()], "Could not find the file /nope in container"),
        (vec!["cp", "nosuch:/etc", out.to_str().unwrap()], "No such container: nosuch"),
        (vec!["cp", h.join("f").to_str().unwrap(), "ct:/no/such/dir/"], "must exist"),
        (vec!["cp", "ct:/etc/passwd", "/nonexistent-dir/x/"], "must exist"),
        (vec!["cp", "a", "b"], "must specify at least one container source"),
        (vec!["cp", "ct:/a", "ct:/b"], "copying between containers is not supported"),
        (vec!["cp", h.join("d").to_str().unwrap(), "ct:/etc/passwd"], "cannot copy a directory to a file"),
    ] {
        let o = env.ctl(&args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        assert!(err(&o).contains(msg), "{args:?}: {}", err(&o));
    }
    assert_eq!(env.ok(&["exec", "ct", "cat", "/etc/passwd"]).lines().count(), 3, "passwd unchanged");
    env.ok(&["rm", "-f", "ct"]);
    assert_clean(&env, &[id]);
}

/// CVE-2018-15664: while `cp` runs, a process in the container flips a path component
/// between a real directory and a symlink to `/`. A cp that resolved the path once and
/// reopened it as a host path would read or write the host's file of that name.
#[test]
fn cp_is_safe_against_the_symlink_swap_race() {
    let env = Env::new("cp-race");
    // The host files the race aims at, at the same path inside the container's tree.
    let aim = env.dir.join("aim");
    std::fs::create_dir_all(&aim).unwrap();
    std::fs::write(aim.join("secret"), "HOST SECRET\n").unwrap();
    std::fs::write(aim.join("target"), "HOST TARGET\n").unwrap();
    let rel = aim.strip_prefix("/").unwrap().display().to_string();
    let (inside, root_side) = (format!("d/{rel}"), rel.clone());
    load_image(&env, |mut l| {
        let mut acc = String::new();
        for c in Path::new(&rel).components() {
            acc.push_str(&c.as_os_str().to_string_lossy());
            acc.push('/');
            l = l.dir(&format!("d/{acc}"), 0o755).dir(&acc, 0o755);
        }
        l.file(&format!("{inside}/secret"), 0o644, b"inside d\n")
            .file(&format!("{root_side}/secret"), 0o644, b"container root\n")
            .symlink("rootlink", "/")
    });
    // The swapper: `swap` is the directory d, then the symlink to /, and so on (rename(2)).
    let swapper = "mv /d /swap; while true; do mv /swap /d; mv /rootlink /swap; mv /swap /rootlink; mv /d /swap; done";
    let id = env.ok(&["run", "-d", "--name", "racer", "cpimg", "sh", "-c", swapper]).trim().to_string();
    let out = env.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let payload = env.write("payload", b"PAYLOAD\n");
    let (mut via_dir, mut via_link, mut partial, mut write_ok) = (0, 0, 0, 0);
    for i in 0..150 {
        let dst = out.join(format!("got{i}"));
        let o = env.ctl(&["cp", &format!("racer:/swap/{rel}/secret"), dst.to_str().unwrap()]);
        if o.status.success() {
            // overlayfs here has redirect_dir off, so the swapper's `mv` of a directory
            // from the image gets EXDEV and copies it: cp may meet a `secret` the copy has
            // made but not yet filled. Any prefix of the container's contents is the
            // container's own file; anything else came from the host.
            match read(&dst).as_str() {
                "inside d\n" => via_dir += 1,
                "container root\n" => via_link += 1,
                got if "inside d\n".starts_with(got) || "container root\n".starts_with(got) => partial += 1,
                got => panic!("cp read {got:?}: the host's file"),
            }
        }
        let o = env.ctl(&["cp", payload.to_str().unwrap(), &format!("racer:/swap/{rel}/target")]);
        write_ok += o.status.success() as usize;
        assert_eq!(read(&aim.join("target")), "HOST TARGET\n", "cp wrote the host's file");
        assert_eq!(std::fs::read_dir(&aim).unwrap().count(), 2, "cp created a file on the host");
    }
    // The race was live: copies went through the directory and through the symlink.
    assert!(
        via_dir > 0 && via_link > 0 && write_ok > 0,
        "reads via the directory {via_dir}, via the symlink {via_link}, writes {write_ok}: the race did not happen"
    );
    eprintln!("race: {via_dir} reads via the directory, {via_link} via the symlink, {partial} of a file mid-copy, {write_ok} writes");
    env.ok(&["rm", "-f", "racer"]);
    assert_clean(&env, &[id]);
}

/// CVE-2019-14271: docker cp ran a helper chrooted in the container, which loaded the
/// container's libnss. The image here is booby-trapped: /etc/ld.so.preload and every
/// libnss a glibc lookup could load run a constructor that leaves a mark on the host. cp
/// in both directions, with -a (owners) and without, must leave no mark.
#[test]
fn cp_never_loads_or_runs_anything_of_the_container() {
    let env = Env::new("cp-nss");
    let mark = env.dir.join("pwned");
    let src = env.write("evil.c", format!("#include <stdio.h>\n__attribute__((constructor)) static void pwn(void) {{ FILE *f = fopen(\"{}\", \"a\"); if (f) {{ fputs(\"loaded\\n\", f); fclose(f); }} }}\n", mark.display()).as_bytes());
    let so = env.dir.join("evil.so");
    let st = Command::new("gcc").args(["-shared", "-fPIC", "-o"]).arg(&so).arg(&src).status().expect("gcc (hack/deps.sh installs it)");
    assert!(st.success());
    // The trap works: loaded into a host process, it leaves the mark.
    assert!(Command::new("/bin/true").env("LD_PRELOAD", &so).status().unwrap().success());
    assert!(mark.exists(), "the booby trap fires when loaded");
    std::fs::remove_file(&mark).unwrap();
    let evil = std::fs::read(&so).unwrap();
    load_image(&env, |mut l| {
        l = l.file("evil.so", 0o755, &evil).file("etc/ld.so.preload", 0o644, b"/evil.so\n");
        l = l.file("etc/nsswitch.conf", 0o644, b"passwd: files evil\ngroup: files evil\nhosts: files evil\n");
        for dir in ["lib/", "lib64/", "lib/x86_64-linux-gnu/", "usr/lib/", "usr/lib/x86_64-linux-gnu/"] {
            l = l.dir(dir, 0o755);
            for lib in ["libnss_files.so.2", "libnss_evil.so.2", "libnss_compat.so.2", "libc.so.6"] {
                l = l.file(&format!("{dir}{lib}"), 0o755, &evil);
            }
        }
        l.owned("etc/owned", 0o644, 1000, 1000, b"x\n")
    });
    let id = env.ok(&["run", "-d", "--name", "trap", "cpimg", "sleep", "1000"]).trim().to_string();
    let out = env.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    env.ok(&["cp", "trap:/etc", out.to_str().unwrap()]);
    env.ok(&["cp", "-a", "trap:/etc/.", out.join("a").to_str().unwrap()]);
    assert!(env.ctl(&["cp", "-a", "trap:/etc", "-"]).status.success());
    env.ok(&["cp", "-a", out.join("etc").to_str().unwrap(), "trap:/tmp/"]);
    env.ok(&["cp", out.join("etc/owned").to_str().unwrap(), "trap:/tmp/x"]);
    env.ok(&["stop", "-t", "0", "trap"]);
    env.ok(&["cp", "-a", "trap:/etc", out.join("stopped").to_str().unwrap()]);
    env.ok(&["cp", "-a", out.join("etc").to_str().unwrap(), "trap:/root/"]);
    assert!(!mark.exists(), "cp loaded a library of the container: {}", std::fs::read_to_string(&mark).unwrap_or_default());
    env.ok(&["rm", "trap"]);
    assert_clean(&env, &[id]);
}

/// `cp -` extracts a plain archive, as docker does: `.wh.` names are files (not whiteouts
/// that delete), entries cannot leave the destination (`..`, a symlink to `/` in the same
/// tar), and entries under a volume land in the volume; a read-only volume refuses.
/// Reading a directory that has a volume below it gives the volume's files.
#[test]
fn cp_tar_in_is_a_plain_archive_confined_to_the_container_and_crosses_into_volumes() {
    let env = Env::new("cp-tar");
    load_image(&env, |l| {
        l.dir("srv/", 0o755).file("srv/keep", 0o644, b"keep\n").dir("srv/data/", 0o755).file("srv/data/hidden", 0o644, b"image\n")
    });
    let vol = env.dir.join("vol");
    let ro = env.dir.join("ro");
    for d in [&vol, &ro] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(vol.join("v"), "volume\n").unwrap();
    let (b1, b2) = (format!("{}:/srv/data", vol.display()), format!("{}:/ro:ro", ro.display()));
    let id = env.ok(&["run", "-d", "--name", "tarred", "-v", &b1, "-v", &b2, "cpimg", "sleep", "1000"]).trim().to_string();
    let cp_in = |tar: &[u8], dest: &str| {
        let mut cp = Command::new(env!("CARGO_BIN_EXE_capsactl"))
            .arg("--root")
            .arg(env.root())
            .arg("--state-root")
            .arg(env.state())
            .args(["cp", "-", dest])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut cp.stdin.take().unwrap(), tar).unwrap();
        cp.wait_with_output().unwrap()
    };
    // Whiteout names are plain files; nothing is deleted.
    let o = cp_in(&Layer::new().file(".wh.keep", 0o644, b"w\n").file(".wh..wh..opq", 0o644, b"o\n").tar(), "tarred:/srv");
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(env.ok(&["exec", "tarred", "sh", "-c", "cat /srv/keep /srv/.wh.keep /srv/.wh..wh..opq"]), "keep\nw\no\n");
    // Entries under /srv/data go into the volume, not under the image's hidden dir.
    let o = cp_in(&Layer::new().dir("data/", 0o755).file("data/new", 0o644, b"new\n").tar(), "tarred:/srv");
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(read(&vol.join("new")), "new\n");
    // A hostile archive: a name climbing out, and a symlink to / then a file through it.
    let host = env.dir.join("host-target");
    let o = cp_in(&Layer::new().file(&format!("../../../../../..{}", host.display()), 0o644, b"x").tar(), "tarred:/tmp");
    assert!(!o.status.success() && err(&o).contains("escapes"), "{}", err(&o));
    let through = format!("esc{}", host.display());
    let o = cp_in(&Layer::new().symlink("esc", "/").file(&through, 0o644, b"x").tar(), "tarred:/tmp");
    assert!(!host.exists(), "cp - wrote through a symlink to the host ({})", err(&o));
    // A read-only volume stays read-only.
    let o = cp_in(&Layer::new().file("f", 0o644, b"x").tar(), "tarred:/ro");
    assert!(!o.status.success() && err(&o).contains("Read-only"), "{}", err(&o));
    let o = env.ctl(&["cp", env.write("plain", b"p").to_str().unwrap(), "tarred:/ro/f"]);
    assert!(!o.status.success() && err(&o).contains("Read-only"), "{}", err(&o));
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0, "nothing written into the read-only volume");
    // Reading a directory with a volume below it: the volume's files, not the image's.
    let out = env.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    env.ok(&["cp", "tarred:/srv", out.to_str().unwrap()]);
    assert_eq!(read(&out.join("srv/data/v")), "volume\n");
    assert!(!out.join("srv/data/hidden").exists(), "the image's hidden file was copied");
    let o = env.ctl(&["cp", "tarred:/srv", "-"]);
    let names: Vec<String> =
        tar::Archive::new(&o.stdout[..]).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert!(names.contains(&"srv/data/v".to_string()) && !names.contains(&"srv/data/hidden".to_string()), "{names:?}");
    // cp's own mounts stayed in its own mount namespace.
    assert!(env.mounts().iter().all(|m| !m.contains("/vol ") && !m.contains("/ro ")), "{:?}", env.mounts());
    env.ok(&["rm", "-f", "tarred"]);
    assert_clean(&env, &[id]);
}

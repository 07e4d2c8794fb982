//! Images built in the tests: layers as tars (including hostile entries no ordinary tar
//! tool writes), docker-archives and OCI layouts around them, busybox-static as the base.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use capsa_image::Digest;
use serde_json::{json, Value};

pub const BUSYBOX: &str = "/bin/busybox";

/// A layer tar being written.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: tar::EntryType, name: &[u8], mode: u32, size: u64, link: &[u8]) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().expect("gnu header");
        assert!(name.len() < 100 && link.len() < 100, "test names are short");
        g.name[..name.len()].copy_from_slice(name);
        g.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

impl Layer {
    pub fn new() -> Layer {
        Layer { b: tar::Builder::new(Vec::new()) }
    }

    /// Any entry, name and link written byte for byte (hostile ones included).
    pub fn raw(mut self, kind: tar::EntryType, name: &str, mode: u32, data: &[u8], link: &str) -> Self {
        let h = header(kind, name.as_bytes(), mode, data.len() as u64, link.as_bytes());
        self.b.append(&h, data).expect("append");
        self
    }

    pub fn dir(self, name: &str, mode: u32) -> Self {
        self.raw(tar::EntryType::Directory, name, mode, b"", "")
    }

    pub fn file(self, name: &str, mode: u32, data: &[u8]) -> Self {
        self.raw(tar::EntryType::Regular, name, mode, data, "")
    }

    pub fn owned(mut self, name: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, name.as_bytes(), mode, data.len() as u64, b"");
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.b.append(&h, data).expect("append");
        self
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.raw(tar::EntryType::Symlink, name, 0o777, b"", target)
    }

    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.raw(tar::EntryType::Link, name, 0o644, b"", target)
    }

    pub fn chardev(mut self, name: &str, major: u32, minor: u32) -> Self {
        let mut h = header(tar::EntryType::Char, name.as_bytes(), 0o666, 0, b"");
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        h.set_cksum();
        self.b.append(&h, &b""[..]).expect("append");
        self
    }

    pub fn fifo(self, name: &str) -> Self {
        self.raw(tar::EntryType::Fifo, name, 0o600, b"", "")
    }

    /// A file with PAX records (xattrs as SCHILY.xattr.NAME, uid, mtime...).
    pub fn pax_file(mut self, name: &str, mode: u32, data: &[u8], pax: &[(&str, &[u8])]) -> Self {
        self.b.append_pax_extensions(pax.iter().map(|(k, v)| (*k, *v))).expect("pax");
        self = self.file(name, mode, data);
        self
    }

    pub fn whiteout(self, name: &str) -> Self {
        let p = Path::new(name);
        let w = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => format!("{}/.wh.{}", d.display(), p.file_name().unwrap().to_string_lossy()),
            _ => format!(".wh.{name}"),
        };
        self.file(&w, 0o644, b"")
    }

    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), 0o644, b"")
    }

    /// The busybox-static base: /bin/busybox, one symlink per applet, /etc/passwd, /etc/group.
    pub fn busybox(self) -> Self {
        let bb = std::fs::read(BUSYBOX).expect("busybox-static is installed (hack/deps.sh)");
        let mut l = self.dir("bin/", 0o755).file("bin/busybox", 0o755, &bb).dir("etc/", 0o755).dir("tmp/", 0o1777).dir("root/", 0o700);
        let list = Command::new(BUSYBOX).arg("--list").output().expect("busybox --list");
        for a in String::from_utf8_lossy(&list.stdout).lines() {
            if a != "busybox" {
                l = l.symlink(&format!("bin/{a}"), "busybox");
            }
        }
        l.symlink("sbin", "bin")
            .dir("usr/", 0o755)
            .symlink("usr/bin", "../bin")
            .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:alice:/home/alice:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
            .file("etc/group", 0o644, b"root:x:0:\nwheel:x:10:alice\nalice:x:1000:\nnogroup:x:65534:\n")
            .dir("home/", 0o755)
            .dir("home/alice/", 0o755)
    }

    pub fn tar(self) -> Vec<u8> {
        self.b.into_inner().expect("finish tar")
    }
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).expect("zstd")
}

/// An image config for these plain layers.
pub fn config(layers: &[Vec<u8>], run: Value) -> Value {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    let history: Vec<Value> =
        layers.iter().enumerate().map(|(i, _)| json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("layer {i}")})).collect();
    json!({"created": "2024-01-01T00:00:00Z", "architecture": "amd64", "os": "linux", "config": run, "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history})
}

/// A docker-archive (`docker save`, legacy layout: `<id>/layer.tar`) of one image.
pub fn docker_archive(layers: &[Vec<u8>], config: &Value, tags: &[&str]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let cfg = serde_json::to_vec(config).unwrap();
    let cfg_name = format!("{}.json", Digest::of(&cfg).hex());
    let mut paths = Vec::new();
    for l in layers {
        let p = format!("{}/layer.tar", Digest::of(l).hex());
        add(&mut b, &p, l);
        paths.push(p);
    }
    add(&mut b, &cfg_name, &cfg);
    let m = json!([{"Config": cfg_name, "RepoTags": tags, "Layers": paths}]);
    add(&mut b, "manifest.json", &serde_json::to_vec(&m).unwrap());
    b.into_inner().unwrap()
}

pub fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, path, data).expect("append");
}

/// An OCI layout tar: blobs given as (media type, bytes); index.json written as given.
pub fn oci_layout(blobs: &[Vec<u8>], index: &Value) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for blob in blobs {
        add(&mut b, &format!("blobs/sha256/{}", Digest::of(blob).hex()), blob);
    }
    add(&mut b, "index.json", &serde_json::to_vec(index).unwrap());
    b.into_inner().unwrap()
}

pub fn desc(media_type: &str, blob: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": Digest::of(blob).to_string(), "size": blob.len()})
}

/// A private store and capsa state root for one test, removed (after checking that no
/// mount is left under it) when dropped.
pub struct Env {
    pub dir: PathBuf,
}

impl Env {
    pub fn new(name: &str) -> Env {
        // These suites run in the machine's network namespace: their containers get none of
        // their own (as dockerd's --bridge none) rather than a bridge on the host's network.
        // tests/network.rs runs capsactl in namespaces it makes, with the bridge.
        if std::env::var_os("CAPSACTL_DEFAULT_NETWORK").is_none() {
            std::env::set_var("CAPSACTL_DEFAULT_NETWORK", "none");
        }
        let dir = PathBuf::from(format!("/tmp/capsactl-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Env { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("store")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_env(args, &[])
    }

    pub fn ctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_capsactl"));
        c.arg("--root").arg(self.root()).arg("--state-root").arg(self.state()).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(std::process::Stdio::null());
        c.output().expect("run capsactl")
    }

    /// Runs capsactl and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(o.status.success(), "capsactl {args:?}: {}\n{}", String::from_utf8_lossy(&o.stderr), String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs capsactl, asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(!o.status.success(), "capsactl {args:?} should fail: {}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// Mounts under this test's directory (there must be none once a command returned).
    pub fn mounts(&self) -> Vec<String> {
        let mi = String::from_utf8_lossy(&std::fs::read("/proc/self/mountinfo").unwrap()).into_owned();
        let d = self.dir.to_string_lossy().into_owned();
        mi.lines().filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&d))).map(str::to_string).collect()
    }

    /// Files under a store subdirectory.
    pub fn count(&self, sub: &str) -> usize {
        std::fs::read_dir(self.root().join(sub)).map(|r| r.count()).unwrap_or(0)
    }

    pub fn db(&self, sql: &str) -> String {
        let o = Command::new("sqlite3").arg(self.root().join("capsa.db")).arg(sql).output();
        match o {
            Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Err(e) => panic!("sqlite3 (hack/deps.sh installs it): {e}"),
        }
    }
}

impl Env {
    /// Processes whose command line names this test's directory (monitors) or whose root
    /// is inside it (container processes).
    pub fn procs(&self) -> Vec<(i32, String)> {
        let d = self.dir.to_string_lossy().into_owned();
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            if pid == std::process::id() as i32 {
                continue;
            }
            let cmd = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default()).replace('\0', " ");
            let root = std::fs::read_link(e.path().join("root")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            if cmd.contains(&d) || root.starts_with(&d) {
                found.push((pid, cmd));
            }
        }
        found
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A test that failed half-way may leave containers running under their monitors:
        // remove them as a user would, then kill whatever is left, so that no monitor
        // outlives the test (holding its mounts, or an fd of the harness).
        if self.root().join("capsa.db").exists() {
            for id in self.db("SELECT id FROM containers").lines() {
                let _ = self.ctl(&["rm", "-f", id]);
            }
        }
        for (pid, _) in self.procs() {
            // SAFETY: kill(2) with a pid and a signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let left = self.mounts();
        for m in left.iter().rev() {
            if let Some(p) = m.split(' ').nth(4) {
                let _ = Command::new("umount").arg("-l").arg(p).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if !std::thread::panicking() {
            assert!(left.is_empty(), "mounts left behind: {left:?}");
        }
    }
}

/// The busybox image as a docker-archive, tagged `busybox:latest`.
pub fn busybox_archive() -> Vec<u8> {
    let l = Layer::new().busybox().tar();
    let cfg = config(
        std::slice::from_ref(&l),
        json!({"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}),
    );
    docker_archive(&[l], &cfg, &["busybox:latest"])
}

/// A command's stdout, as text.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's stderr, as text.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Loads [`busybox_archive`] as `busybox:latest`.
pub fn load_busybox(env: &Env) {
    let p = env.write("busybox.tar", &busybox_archive());
    assert_eq!(env.ok(&["load", "-i", p.to_str().unwrap()]), "Loaded image: busybox:latest\n");
}

/// `inspect NAME`, the one object.
pub fn inspect(env: &Env, name: &str) -> Value {
    let v: Value = serde_json::from_str(&env.ok(&["inspect", name])).unwrap();
    v[0].clone()
}

/// Waits up to 20 s for `f`, naming `what` if it never holds.
pub fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !f() {
        assert!(std::time::Instant::now() < end, "timed out waiting: {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

//! Rootless: capsa run by a real unprivileged user (created here with useradd), with the
//! config `capsa spec --rootless` writes: a user namespace mapping the caller's ids, no
//! cgroups (not delegated on this host), devices bound from the host.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const USER: &str = "capsa-rootless";

fn ensure_user() -> (u32, u32) {
    if Command::new("id").arg("-u").arg(USER).output().map(|o| !o.status.success()).unwrap_or(true) {
        let mut c = Command::new("useradd");
        c.args(["--system", "--no-create-home", "--shell", "/bin/sh", USER]);
        // Another test process may have created it meanwhile: only the result matters.
        let _ = run_host_cmd(c, CMD_TIMEOUT);
    }
    let id = |flag: &str| {
        let o = Command::new("id").args([flag, USER]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().parse::<u32>().unwrap()
    };
    (id("-u"), id("-g"))
}

/// A directory the user owns: the runtime binary, a bundle with a private rootfs, a --root.
struct Setup {
    dir: PathBuf,
    bin: PathBuf,
    bundle: PathBuf,
    root: PathBuf,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let (uid, gid) = ensure_user();
        let dir = PathBuf::from(format!("/tmp/capsa-it-rootless-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        let bin = dir.join("capsa");
        std::fs::copy(runtime_bin(), &bin).unwrap();
        let mut cp = Command::new("cp");
        cp.args(["-a"]).arg(base_rootfs()).arg(bundle.join("rootfs"));
        run_host_cmd(cp, CMD_TIMEOUT).ok();
        let mut chown = Command::new("chown");
        chown.args(["-R", &format!("{uid}:{gid}")]).arg(&dir);
        run_host_cmd(chown, CMD_TIMEOUT).ok();
        let root = dir.join("root");
        Setup { dir, bin, bundle, root }
    }

    fn as_user(&self, args: &[&str]) -> Output {
        let mut c = Command::new("runuser");
        c.args(["-u", USER, "--"]).arg(&self.bin).arg("--root").arg(&self.root).args(args);
        c.current_dir(&self.bundle);
        run_host_cmd(c, CMD_TIMEOUT)
    }

    fn config(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.bundle.join("config.json")).unwrap()).unwrap()
    }

    fn write_config(&self, v: &Value) {
        let p = self.bundle.join("config.json");
        std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
        let (uid, gid) = ensure_user();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn state_dir_empty(root: &Path) -> bool {
    std::fs::read_dir(root).map(|mut d| d.next().is_none()).unwrap_or(true)
}

#[test]
fn rootless_run_as_unprivileged_user() {
    if !is_capsa() {
        return; // runc's rootless mode is exercised by runc's own tests; this checks capsa.
    }
    let s = Setup::new("run");
    let (uid, _) = ensure_user();
    s.as_user(&["spec", "--rootless"]).ok();
    let mut cfg = s.config();
    set_ptr(&mut cfg, "/process/terminal", json!(false));
    set_ptr(&mut cfg, "/root/readonly", json!(false));
    set_ptr(&mut cfg, "/process/args", json!(["sh", "-c", "id -u; cat /proc/self/uid_map; hostname; touch /written && echo ok; exit 3"]));
    s.write_config(&cfg);
    let out = s.as_user(&["run", "rl-run"]);
    assert_eq!(out.code, Some(3), "{out}");
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(l[0], "0", "root inside: {out}");
    let map: Vec<&str> = l[1].split_whitespace().collect();
    assert_eq!(map, vec!["0", &uid.to_string(), "1"], "the caller's uid is mapped: {out}");
    assert_eq!(l[2], "capsa", "{out}");
    assert_eq!(l[3], "ok", "{out}");
    // The file was written as the user on the host.
    let meta = std::fs::metadata(s.bundle.join("rootfs/written")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid);
    assert!(state_dir_empty(&s.root), "nothing left in --root");
    assert!(cgroup_dirs_for("rl-run").is_empty(), "no cgroup for a rootless container");
}

#[test]
fn rootless_lifecycle_and_refusals() {
    if !is_capsa() {
        return;
    }
    let s = Setup::new("life");
    s.as_user(&["spec", "--rootless"]).ok();
    let mut cfg = s.config();
    set_ptr(&mut cfg, "/process/terminal", json!(false));
    set_ptr(&mut cfg, "/process/args", json!(["sleep", "100"]));
    s.write_config(&cfg);
    s.as_user(&["create", "rl-life"]).ok();
    let st: Value = serde_json::from_str(&s.as_user(&["state", "rl-life"]).ok().stdout).unwrap();
    assert_eq!(st["status"], "created");
    s.as_user(&["start", "rl-life"]).ok();
    // exec joins the user namespace the way init did (no setgroups there).
    assert_eq!(s.as_user(&["exec", "rl-life", "id", "-u"]).ok().stdout.trim(), "0");
    s.as_user(&["kill", "rl-life", "KILL"]).ok();
    let pid = st["pid"].as_i64().unwrap() as i32;
    wait_pid_dead(pid);
    s.as_user(&["delete", "rl-life"]).ok();
    assert!(state_dir_empty(&s.root));

    // Limits need cgroups, which are not delegated to this user: refused, nothing left.
    set_ptr(&mut cfg, "/linux/resources", json!({"pids": {"limit": 10}}));
    s.write_config(&cfg);
    let out = s.as_user(&["create", "rl-limits"]).fails_cleanly();
    assert!(out.stderr.contains("linux.resources"), "{out}");
    assert!(state_dir_empty(&s.root));
    // Without a user namespace an unprivileged user cannot make a container.
    let mut no_userns = s.config();
    remove_ptr(&mut no_userns, "/linux/resources");
    let ns: Vec<Value> = no_userns["linux"]["namespaces"].as_array().unwrap().iter().filter(|n| n["type"] != "user").cloned().collect();
    set_ptr(&mut no_userns, "/linux/namespaces", json!(ns));
    remove_ptr(&mut no_userns, "/linux/uidMappings");
    remove_ptr(&mut no_userns, "/linux/gidMappings");
    s.write_config(&no_userns);
    let out = s.as_user(&["create", "rl-nouserns"]).fails_cleanly();
    assert!(out.stderr.contains("user namespace"), "{out}");
    assert!(state_dir_empty(&s.root));
}

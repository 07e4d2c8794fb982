//! The per-test container fixture and its leftover check.

use std::ffi::OsString;
use std::fs;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

use crate::*;

// The per-test container fixture
// ---------------------------------------------------------------------------------------------

static ID_SEQ: AtomicU32 = AtomicU32::new(0);

/// One test's container: unique id, `--root`, bundle and output dir under `/tmp/capsa-it-<id>/`.
///
/// Dropping it force-deletes the container and asserts that nothing was left behind:
/// no state dir under `--root`, no cgroup directory named after the id, no live process whose
/// cmdline or cgroup mentions the id, no host mount under the test dir or the container's rootfs.
/// Then the dir is removed (never through a mount).
pub struct Container {
    pub id: String,
    /// `/tmp/capsa-it-<id>`
    pub dir: PathBuf,
    /// The `--root` state directory.
    pub root: PathBuf,
    /// The bundle directory (holds config.json, and rootfs/ unless shared).
    pub bundle: PathBuf,
    /// The rootfs the config points at (private copy, or the shared base).
    pub rootfs: PathBuf,
    /// Where command output files go.
    pub out: PathBuf,
    /// config.json, written to the bundle by [`Container::write_config`] (called by create/run).
    pub config: Value,
    /// Skip the leftover checks (set by tests that deliberately leave the runtime in a weird state
    /// and clean up themselves). Default false.
    pub skip_leftover_check: bool,
}

impl Container {
    /// A container with a private copy of the base rootfs (writable by the test, `root.path`
    /// "rootfs" relative to the bundle, `root.readonly` false).
    pub fn new(name: &str) -> Self {
        let mut c = Self::bare(name);
        copy_rootfs(&base_rootfs(), &c.bundle.join("rootfs"));
        c.rootfs = c.bundle.join("rootfs");
        set_ptr(&mut c.config, "/root/readonly", json!(false));
        c
    }

    /// A container on the shared base rootfs (absolute `root.path`, `root.readonly` true). Cheapest;
    /// use it when the test needs no extra mount points in the rootfs and writes nothing there.
    pub fn shared(name: &str) -> Self {
        let mut c = Self::bare(name);
        c.rootfs = base_rootfs();
        set_ptr(&mut c.config, "/root", json!({"path": c.rootfs.to_str(), "readonly": true}));
        c
    }

    /// Dirs and config only, no rootfs.
    fn bare(name: &str) -> Self {
        // Resolve the binary first: if it is missing this panics before a Container (whose Drop
        // runs the binary) exists.
        runtime_bin();
        let n = ID_SEQ.fetch_add(1, Ordering::Relaxed);
        let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(40).collect();
        // pid + sequence make the id unique; the '-' after the counter keeps one id from being a
        // substring of another ("...-1-x" never occurs inside "...-11-x").
        let id = format!("cit{}-{n}-{name}", std::process::id());
        let dir = PathBuf::from(format!("/tmp/capsa-it-{id}"));
        // Only a dead test process with the same pid could have left it; never rm through mounts.
        let prefix = format!("{}/", dir.display());
        assert!(!host_mount_points().iter().any(|m| m.starts_with(&prefix)), "stale mounts under {}: unmount them first", dir.display());
        remove_dir_one_fs(&dir);
        fs::create_dir_all(&dir).expect("create test dir");
        let root = dir.join("root");
        let bundle = dir.join("bundle");
        let out = dir.join("out");
        for d in [&bundle, &out] {
            fs::create_dir_all(d).expect("create test subdir");
        }
        let mut config = base_config().clone();
        set_ptr(&mut config, "/process/args", json!(["true"]));
        Container { id, rootfs: bundle.join("rootfs"), dir, root, bundle, out, config, skip_leftover_check: false }
    }

    // ---- config editing -----------------------------------------------------------------

    /// process.args
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        set_ptr(&mut self.config, "/process/args", json!(args));
        self
    }

    /// process.args = ["sh", "-c", script]
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// Set a config value by JSON pointer.
    pub fn set(&mut self, ptr: &str, v: Value) -> &mut Self {
        set_ptr(&mut self.config, ptr, v);
        self
    }

    /// Append a mount.
    pub fn add_mount(&mut self, m: Value) -> &mut Self {
        let mounts = self.config.pointer_mut("/mounts").and_then(Value::as_array_mut);
        match mounts {
            Some(a) => a.push(m),
            None => set_ptr(&mut self.config, "/mounts", json!([m])),
        }
        self
    }

    /// Add a namespace (or set the path of an existing one of that type).
    pub fn namespace(&mut self, typ: &str, path: Option<&str>) -> &mut Self {
        let mut ns = json!({"type": typ});
        if let Some(p) = path {
            ns["path"] = json!(p);
        }
        let list = self.config.pointer_mut("/linux/namespaces").and_then(Value::as_array_mut).expect("linux.namespaces");
        list.retain(|n| n["type"] != typ);
        list.push(ns);
        self
    }

    /// Remove a namespace type from linux.namespaces.
    pub fn no_namespace(&mut self, typ: &str) -> &mut Self {
        if let Some(list) = self.config.pointer_mut("/linux/namespaces").and_then(Value::as_array_mut) {
            list.retain(|n| n["type"] != typ);
        }
        self
    }

    /// Mount a fresh tmpfs at `dest` (e.g. "/tmp" on a read-only rootfs).
    pub fn tmpfs(&mut self, dest: &str) -> &mut Self {
        self.add_mount(json!({
            "destination": dest, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777"]
        }))
    }

    /// Write `self.config` to bundle/config.json.
    pub fn write_config(&self) {
        let text = serde_json::to_string_pretty(&self.config).expect("serialize config");
        fs::write(self.bundle.join("config.json"), text).expect("write config.json");
    }

    // ---- runtime commands --------------------------------------------------------------

    /// `runtime --root ROOT ARGS...`, in the bundle dir.
    pub fn cmd<S: Into<OsString>>(&self, args: impl IntoIterator<Item = S>) -> Cmd {
        Cmd::new(runtime_bin(), &self.out).current_dir(&self.bundle).arg("--root").arg(&self.root).args(args)
    }

    /// Run a runtime command to completion.
    #[track_caller]
    pub fn rt<S: Into<OsString>>(&self, args: impl IntoIterator<Item = S>) -> Output {
        self.cmd(args).run()
    }

    /// Write config.json and `run --bundle B [extra...] ID` in the foreground.
    #[track_caller]
    pub fn run(&self, extra: &[&str]) -> Output {
        self.write_config();
        self.run_cmd(extra).run()
    }

    /// The `run` command without running it (config already written).
    pub fn run_cmd(&self, extra: &[&str]) -> Cmd {
        let b = self.bundle.to_str().expect("utf-8 path").to_string();
        let mut args = vec!["run".to_string(), "--bundle".into(), b];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.id.clone());
        self.cmd(args)
    }

    /// Write config.json and `create --bundle B [extra...] ID`.
    #[track_caller]
    pub fn create(&self, extra: &[&str]) -> Output {
        self.write_config();
        self.create_cmd(extra).run()
    }

    /// The `create` command without running it.
    pub fn create_cmd(&self, extra: &[&str]) -> Cmd {
        let b = self.bundle.to_str().expect("utf-8 path").to_string();
        let mut args = vec!["create".to_string(), "--bundle".into(), b];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.id.clone());
        self.cmd(args)
    }

    #[track_caller]
    pub fn start(&self) -> Output {
        self.rt(["start", &self.id])
    }

    #[track_caller]
    pub fn kill(&self, sig: &str) -> Output {
        self.rt(["kill", &self.id, sig])
    }

    #[track_caller]
    pub fn delete(&self) -> Output {
        self.rt(["delete", &self.id])
    }

    #[track_caller]
    pub fn delete_force(&self) -> Output {
        self.rt(["delete", "--force", &self.id])
    }

    /// `state ID`, which must succeed, parsed.
    #[track_caller]
    pub fn state(&self) -> Value {
        self.rt(["state", &self.id]).ok().json()
    }

    /// The "status" field of `state`.
    #[track_caller]
    pub fn status(&self) -> String {
        self.state()["status"].as_str().unwrap_or_default().to_string()
    }

    /// The container init's host pid from `state`.
    #[track_caller]
    pub fn pid(&self) -> i32 {
        let p = self.state()["pid"].as_i64().expect("state.pid");
        assert!(p > 0, "state.pid = {p}");
        p as i32
    }

    /// Poll `state` until status == `want`.
    #[track_caller]
    pub fn wait_status(&self, want: &str) {
        let mut last = String::new();
        let ok = wait_until(POLL_TIMEOUT, || {
            last = self.status();
            last == want
        });
        assert!(ok, "container {} never reached status {want:?} (last {last:?})", self.id);
    }

    /// create + start, both must succeed. Returns the create output (whose stdout/stderr files
    /// receive the container's output).
    #[track_caller]
    pub fn create_start(&self) -> Output {
        let out = self.create(&[]).ok();
        self.start().ok();
        out
    }

    /// `run --detach`; the container's stdout goes to the returned output's stdout file.
    #[track_caller]
    pub fn run_detached(&self) -> Output {
        self.run(&["--detach"]).ok()
    }

    /// A host directory inside the test dir (for bind mounts, shared files).
    pub fn host_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        fs::create_dir_all(&d).expect("create host dir");
        d
    }

    // ---- leftovers ---------------------------------------------------------------------

    /// Everything this container left behind, as human-readable lines (empty = clean).
    /// Processes are given a moment to die: a SIGKILLed process disappears asynchronously.
    pub fn leftovers(&self) -> Vec<String> {
        let mut bad = vec![];
        if let Ok(rd) = fs::read_dir(&self.root) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().contains(&self.id) {
                    bad.push(format!("state left: {}", e.path().display()));
                }
            }
        }
        let mut procs = vec![];
        wait_until(POLL_TIMEOUT, || {
            procs = processes_for(&self.id);
            procs.is_empty()
        });
        bad.extend(procs.into_iter().map(|p| format!("process left: {p}")));
        bad.extend(cgroup_dirs_for(&self.id).into_iter().map(|p| format!("cgroup left: {}", p.display())));
        bad.extend(self.mounts_under_dir().into_iter().map(|m| format!("mount left: {m}")));
        bad
    }

    /// Host mounts under the test dir (which holds a private rootfs) or, for a container on the
    /// shared base rootfs, under that rootfs (no container mount may ever appear there).
    fn mounts_under_dir(&self) -> Vec<String> {
        let dir = self.dir.to_string_lossy().to_string();
        let rootfs = self.rootfs.to_string_lossy().to_string();
        host_mount_points()
            .into_iter()
            .filter(|m| m == &dir || m.starts_with(&format!("{dir}/")) || m == &rootfs || m.starts_with(&format!("{rootfs}/")))
            .collect()
    }

    /// Force-delete and collect leftovers (what Drop does), without removing the dir. For tests
    /// that want to assert cleanliness mid-test (e.g. after a failing create).
    #[track_caller]
    pub fn assert_clean(&self) {
        let bad = self.leftovers();
        assert!(bad.is_empty(), "container {} left things behind:\n  {}", self.id, bad.join("\n  "));
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Force-delete whatever is there; ignore the result (it may never have been created).
        let _ = self.cmd(["delete", "--force", &self.id]).spawn().wait_or_kill();
        let bad = if self.skip_leftover_check { vec![] } else { self.leftovers() };
        // Never rm -rf through a mount (a leaked bind mount of a host dir would be emptied).
        let mut mounts = self.mounts_under_dir();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in &mounts {
            if let Ok(c) = std::ffi::CString::new(m.as_bytes()) {
                // SAFETY: umount2 with a valid NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let keep = std::env::var_os("CAPSA_IT_KEEP").is_some() && (std::thread::panicking() || !bad.is_empty());
        if !keep && self.mounts_under_dir().is_empty() {
            remove_dir_one_fs(&self.dir);
        }
        if !bad.is_empty() {
            let msg = format!("container {} left things behind:\n  {}", self.id, bad.join("\n  "));
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

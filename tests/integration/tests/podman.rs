//! podman (the Debian package, with conmon) driving the runtime with `--runtime`, as podman
//! users run capsa: podman's stock seccomp profile, exit codes, `exec` into a detached
//! container, `rm -f`. Each scenario runs on runc (the reference) and on the runtime under test.
//!
//! Every test has its own podman storage, run root, tmp dir and containers.conf under
//! `/tmp/capsa-podman-<pid>-<n>-d/` (vfs storage: no host mounts), no network
//! (`--network none`: nothing reaches netavark or the host's network), and cgroupfs (no systemd
//! here). On drop it removes every container and checks that no process, mount or cgroup of
//! its containers is left.
//!
//! This host's root lacks CAP_SYS_RESOURCE, so podman's default rlimits (nofile and nproc
//! 1048576) cannot be set by any runtime (runc and crun fail the same way): the test's
//! containers.conf asks for 1024.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

const RUNC: &str = "/usr/sbin/runc";

fn runtimes() -> [PathBuf; 2] {
    [PathBuf::from(RUNC), runtime_bin().to_path_buf()]
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A private podman setup; [`Podman::cmd`] runs podman in it.
struct Podman {
    dir: PathBuf,
    rootfs: PathBuf,
    out: PathBuf,
    /// Long ids of the containers this test made, for the leftover check.
    ids: std::cell::RefCell<Vec<String>>,
}

impl Podman {
    fn new() -> Podman {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/capsa-podman-{}-{n}-d", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let out = dir.join("out");
        fs::create_dir_all(&out).unwrap();
        let rootfs = dir.join("rootfs");
        copy_rootfs(&base_rootfs(), &rootfs);
        fs::write(
            dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        Podman { dir, rootfs, out, ids: Default::default() }
    }

    /// `podman` with this setup's storage and config, and `runtime`.
    fn cmd(&self, runtime: &Path) -> Cmd {
        let d = &self.dir;
        Cmd::new("podman", &self.out)
            .env("CONTAINERS_CONF", d.join("containers.conf").to_str().unwrap())
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--runtime"])
            .arg(runtime)
    }

    /// `podman run --network none --rootfs <copy of the busybox rootfs>` + `args`.
    fn run(&self, runtime: &Path, flags: &[&str], args: &[&str]) -> Cmd {
        self.cmd(runtime).args(["run", "--network", "none"]).args(flags).arg("--rootfs").arg(&self.rootfs).args(args)
    }

    fn remember(&self, id: &str) {
        self.ids.borrow_mut().push(id.trim().to_string());
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(Path::new(RUNC)).args(["rm", "-af", "-t", "0"]).run();
        let mut left = Vec::new();
        for id in self.ids.borrow().iter() {
            left.extend(processes_for(id));
            left.extend(cgroup_dirs_for(id).into_iter().map(|d| d.display().to_string()));
        }
        let dir = self.dir.display().to_string();
        left.extend(host_mount_points().into_iter().filter(|m| m.starts_with(&dir)));
        left.extend(processes_for(&dir));
        if left.is_empty() {
            remove_dir_one_fs(&self.dir);
        }
        if !std::thread::panicking() {
            assert!(left.is_empty(), "podman test left behind: {left:#?}");
        }
    }
}

/// podman's stock seccomp profile (/usr/share/containers/seccomp.json, which names `syscall`
/// and `timerfd`, known to no kernel) loads; output and exit codes come through conmon.
#[test]
fn podman_run_with_stock_seccomp_profile() {
    let p = Podman::new();
    for rt in runtimes() {
        let out = p.run(&rt, &["--rm"], &["sh", "-c", "echo hello; grep -E '^Seccomp:' /proc/self/status; id -u"]).run().ok();
        let l: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(l.first(), Some(&"hello"), "{}: {out}", rt.display());
        assert_eq!(l.get(1).map(|s| s.split_whitespace().collect::<Vec<_>>()), Some(vec!["Seccomp:", "2"]), "{}: {out}", rt.display());
        assert_eq!(l.get(2), Some(&"0"), "{out}");
        let out = p.run(&rt, &["--rm"], &["sh", "-c", "exit 3"]).run();
        assert_eq!(out.code, Some(3), "{}: exit code: {out}", rt.display());
    }
}

/// A detached container, `exec` into it (podman passes `exec --process FILE --detach` style
/// arguments through conmon), `stop` and `rm`.
#[test]
fn podman_detached_exec_stop_rm() {
    let p = Podman::new();
    for rt in runtimes() {
        let out = p.run(&rt, &["-d"], &["sleep", "100"]).run().ok();
        let id = out.stdout.trim().to_string();
        p.remember(&id);
        let out = p.cmd(&rt).args(["exec", &id, "sh", "-c", "echo in-$((6*7)); cat /proc/1/cmdline | tr '\\0' ' '"]).run().ok();
        assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["in-42", "sleep 100 "], "{}: {out}", rt.display());
        let out = p.cmd(&rt).args(["exec", &id, "sh", "-c", "exit 5"]).run();
        assert_eq!(out.code, Some(5), "{}: {out}", rt.display());
        let st = p.cmd(&rt).args(["inspect", "--format", "{{.State.Status}}", &id]).run().ok();
        assert_eq!(st.stdout.trim(), "running", "{st}");
        p.cmd(&rt).args(["stop", "-t", "0", &id]).run().ok();
        p.cmd(&rt).args(["rm", &id]).run().ok();
        assert!(processes_for(&id).is_empty(), "{}: {:?}", rt.display(), processes_for(&id));
        assert!(cgroup_dirs_for(&id).is_empty(), "{}: {:?}", rt.display(), cgroup_dirs_for(&id));
    }
}

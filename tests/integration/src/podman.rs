//! A private podman setup for the tests that drive the runtime through podman (the Debian
//! package, with conmon).
//!
//! Each [`Podman`] has its own storage, run root, tmp dir and containers.conf under
//! `/tmp/capsa-podman-<pid>-<n>-d/` (vfs storage: no host mounts), runs containers with no
//! network (`--network none`: nothing reaches netavark or the host's network) on a private
//! copy of the busybox rootfs (`--rootfs`), and uses cgroupfs (no systemd here). On drop it
//! removes every container and checks that no process, mount or cgroup of its containers is
//! left.
//!
//! This host's root lacks CAP_SYS_RESOURCE, so podman's default rlimits (nofile and nproc
//! 1048576) cannot be set by any runtime (runc and crun fail the same way): the setup's
//! containers.conf asks for 1024.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{base_rootfs, cgroup_dirs_for, copy_rootfs, host_mount_points, processes_for, remove_dir_one_fs, Cmd};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// What every podman of the suite needs in containers.conf.
pub const PODMAN_CONF: &str = "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                               [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n";

/// A private podman setup; [`Podman::cmd`] runs podman in it.
pub struct Podman {
    pub dir: PathBuf,
    /// A private copy of the base rootfs, for `--rootfs`.
    pub rootfs: PathBuf,
    pub out: PathBuf,
    /// Long ids of the containers the test made, for the leftover check.
    ids: std::cell::RefCell<Vec<String>>,
}

impl Podman {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Podman {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/capsa-podman-{}-{n}-d", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let out = dir.join("out");
        fs::create_dir_all(&out).expect("create podman test dir");
        let rootfs = dir.join("rootfs");
        copy_rootfs(&base_rootfs(), &rootfs);
        fs::write(dir.join("containers.conf"), PODMAN_CONF).expect("write containers.conf");
        Podman { dir, rootfs, out, ids: Default::default() }
    }

    /// The global flags that keep podman's state in this setup.
    pub fn storage_flags(&self) -> Vec<String> {
        let d = &self.dir;
        let p = |s: &str| d.join(s).display().to_string();
        vec![
            "--root".into(),
            p("storage"),
            "--runroot".into(),
            p("run"),
            "--tmpdir".into(),
            p("tmp"),
            "--storage-driver".into(),
            "vfs".into(),
        ]
    }

    /// `podman` with this setup's storage and containers.conf, and `runtime` (a path, or a
    /// name from containers.conf).
    pub fn cmd(&self, runtime: &Path) -> Cmd {
        Cmd::new("podman", &self.out)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf").to_str().expect("utf-8 path"))
            .args(self.storage_flags())
            .arg("--runtime")
            .arg(runtime)
    }

    /// `podman run --network none --rootfs <copy of the busybox rootfs>` + `flags` + `args`.
    pub fn run(&self, runtime: &Path, flags: &[&str], args: &[&str]) -> Cmd {
        self.cmd(runtime).args(["run", "--network", "none"]).args(flags).arg("--rootfs").arg(&self.rootfs).args(args)
    }

    /// Adds a container id to the leftover check.
    pub fn remember(&self, id: &str) {
        self.ids.borrow_mut().push(id.trim().to_string());
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(Path::new("/usr/sbin/runc")).args(["rm", "-af", "-t", "0"]).run();
        // conmon's cleanup processes (their argv names the ids and the root) end a moment
        // after rm returns.
        let dir = self.dir.display().to_string();
        crate::wait_until(crate::POLL_TIMEOUT, || {
            self.ids.borrow().iter().all(|id| processes_for(id).is_empty()) && processes_for(&dir).is_empty()
        });
        let mut left = Vec::new();
        for id in self.ids.borrow().iter() {
            left.extend(processes_for(id));
            left.extend(cgroup_dirs_for(id).into_iter().map(|d| d.display().to_string()));
        }
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

//! What the host sees: polling, /proc, mountinfo, cgroup directories, files and mounts the
//! tests make, and the sysprobe helper binary.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::*;

// ---------------------------------------------------------------------------------------------
// Polling and /proc helpers
// ---------------------------------------------------------------------------------------------

/// Poll `f` until it returns Some, or panic after `timeout` with `what`.
#[track_caller]
pub fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut sleep = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(25));
    }
}

/// Poll until `f` is true or the timeout passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut sleep = Duration::from_millis(2);
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(25));
    }
}

/// The state letter of /proc/PID/stat (R, S, Z, ...), None if the process is gone.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// Dead means gone or a zombie. PID 1 on this host reaps orphans only about once a second, so
/// `kill -0` would call a zombie alive.
pub fn pid_dead(pid: i32) -> bool {
    matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

pub fn pid_alive(pid: i32) -> bool {
    !pid_dead(pid)
}

/// Wait until `pid` is dead (gone or zombie).
#[track_caller]
pub fn wait_pid_dead(pid: i32) {
    poll(POLL_TIMEOUT, &format!("pid {pid} to die"), || pid_dead(pid).then_some(()));
}

/// `readlink /proc/PID/ns/NS`, e.g. "net:[4026531840]".
pub fn ns_link(pid: &str, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{ns}: {e}"))
}

/// A /proc/PID/status field ("Uid", "CapEff", ...), trimmed.
pub fn status_field(status: &str, key: &str) -> Option<String> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim().to_string())
    })
}

/// /proc/PID/cmdline with NULs as spaces.
pub fn proc_cmdline(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ").trim().to_string()
}

/// All numeric pids in /proc.
pub fn all_pids() -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else { return vec![] };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Mount points from /proc/self/mountinfo (octal escapes decoded).
pub fn host_mount_points() -> Vec<String> {
    mountinfo_points(&String::from_utf8_lossy(&fs::read("/proc/self/mountinfo").unwrap_or_default()))
}

/// Mount points (field 5) of a mountinfo text.
pub fn mountinfo_points(text: &str) -> Vec<String> {
    parse_mountinfo(text).into_iter().map(|m| m.mount_point).collect()
}

/// One parsed line of mountinfo.
#[derive(Debug, Clone)]
pub struct MountInfo {
    pub mount_point: String,
    pub root: String,
    pub options: String,
    pub optional: String,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

impl MountInfo {
    pub fn has_opt(&self, o: &str) -> bool {
        self.options.split(',').any(|x| x == o)
    }
}

/// Parse a mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    capsa_sys::mountinfo::parse(text)
        .into_iter()
        .map(|m| MountInfo {
            root: m.root.to_string_lossy().into_owned(),
            mount_point: m.mount_point.to_string_lossy().into_owned(),
            options: m.options,
            optional: m.optional.join(" "),
            fstype: m.fstype,
            source: m.source,
            super_options: m.super_options,
        })
        .collect()
}

/// (mount point, own cgroup path) for every cgroup hierarchy mounted on the host, from
/// /proc/self/mountinfo and /proc/self/cgroup. The runtime runs in the test's cgroup, so a
/// container's cgroup with a relative (default) cgroupsPath is created under these.
pub fn cgroup_hierarchies() -> &'static [(PathBuf, String)] {
    static H: OnceLock<Vec<(PathBuf, String)>> = OnceLock::new();
    H.get_or_init(|| {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut out = vec![];
        for m in parse_mountinfo(&String::from_utf8_lossy(&fs::read("/proc/self/mountinfo").unwrap_or_default())) {
            let path = match m.fstype.as_str() {
                "cgroup2" => own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/").to_string(),
                "cgroup" => {
                    let opts: BTreeSet<&str> = m.super_options.split(',').collect();
                    own.lines()
                        .find_map(|l| {
                            let mut it = l.splitn(3, ':');
                            let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
                            (!ctrls.is_empty() && ctrls.split(',').all(|c| opts.contains(c))).then(|| path.to_string())
                        })
                        .unwrap_or_else(|| "/".into())
                }
                _ => continue,
            };
            out.push((PathBuf::from(&m.mount_point), path));
        }
        out
    })
}

/// Directories whose name contains `needle` under `dir`, up to `depth` levels.
fn find_dirs_named(dir: &Path, needle: &str, depth: u32, out: &mut BTreeSet<PathBuf>) {
    if depth == 0 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let p = e.path();
        if e.file_name().to_string_lossy().contains(needle) {
            out.insert(p.clone());
        }
        find_dirs_named(&p, needle, depth - 1, out);
    }
}

/// cgroup directories that mention `id`: in every hierarchy, under the test's own cgroup (4 levels)
/// and under the hierarchy root (2 levels, for absolute cgroupsPath).
pub fn cgroup_dirs_for(id: &str) -> Vec<PathBuf> {
    let mut found = BTreeSet::new();
    for (mnt, own) in cgroup_hierarchies() {
        find_dirs_named(&mnt.join(own.trim_start_matches('/')), id, 4, &mut found);
        find_dirs_named(mnt, id, 2, &mut found);
    }
    found.into_iter().collect()
}

/// The host cgroup directory of `pid` in the hierarchy that has `controller` (v1), e.g.
/// "/sys/fs/cgroup/memory/process_api/x/ID".
pub fn cgroup_dir_of(pid: i32, controller: &str) -> Option<PathBuf> {
    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = cg.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        ctrls.split(',').any(|c| c == controller).then(|| path.to_string())
    })?;
    for m in parse_mountinfo(&String::from_utf8_lossy(&fs::read("/proc/self/mountinfo").ok()?)) {
        if m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == controller) {
            // The hierarchy may be mounted at a sub-cgroup (m.root); we are in the host's view.
            let rel = rel.strip_prefix(&m.root).unwrap_or(&rel);
            return Some(Path::new(&m.mount_point).join(rel.trim_start_matches('/')));
        }
    }
    None
}

/// Processes (not zombies) whose cmdline or /proc/PID/cgroup mention `id`, as "PID cmdline".
pub fn processes_for(id: &str) -> Vec<String> {
    let me = std::process::id() as i32;
    let mut out = vec![];
    for pid in all_pids() {
        if pid == me || pid_dead(pid) {
            continue;
        }
        let cmdline = proc_cmdline(pid);
        let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if (cmdline.contains(id) || cg.contains(id)) && pid_alive(pid) {
            out.push(format!("{pid} {cmdline}"));
        }
    }
    out
}

/// Copy the base rootfs: directories and symlinks recreated, bin/busybox hard-linked (read-only
/// for every test), other files copied. Owners and modes preserved. A few ms.
pub fn copy_rootfs(src: &Path, dst: &Path) {
    fn walk(src: &Path, dst: &Path) {
        let md = fs::symlink_metadata(src).expect("stat rootfs entry");
        let ft = md.file_type();
        if ft.is_symlink() {
            let t = fs::read_link(src).expect("readlink");
            std::os::unix::fs::symlink(t, dst).expect("symlink");
        } else if ft.is_dir() {
            fs::create_dir(dst).expect("mkdir");
            for e in fs::read_dir(src).expect("readdir").flatten() {
                walk(&e.path(), &dst.join(e.file_name()));
            }
            fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777)).expect("chmod");
        } else if src.file_name().is_some_and(|n| n == "busybox") {
            if fs::hard_link(src, dst).is_err() {
                fs::copy(src, dst).expect("copy busybox");
            }
            return;
        } else {
            fs::copy(src, dst).expect("copy file");
        }
        let _ = std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()));
    }
    walk(src, dst);
}

/// rm -rf that never crosses into another filesystem (a mount under the dir is left alone).
pub fn remove_dir_one_fs(dir: &Path) {
    fn walk(p: &Path, dev: u64) {
        let Ok(md) = fs::symlink_metadata(p) else { return };
        if md.dev() != dev {
            return;
        }
        if md.is_dir() {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), dev);
                }
            }
            let _ = fs::remove_dir(p);
        } else {
            let _ = fs::remove_file(p);
        }
    }
    if let Ok(md) = fs::symlink_metadata(dir) {
        walk(dir, md.dev());
    }
}

/// Read a whole file, or "" if it doesn't exist.
pub fn read(p: impl AsRef<Path>) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Wait until the file at `p` contains `needle`; returns its content.
#[track_caller]
pub fn wait_file_contains(p: &Path, needle: &str) -> String {
    poll(POLL_TIMEOUT, &format!("{} to contain {needle:?}", p.display()), || {
        let s = read(p);
        s.contains(needle).then_some(s)
    })
}

/// A mount made on the host by a test, lazily unmounted on drop. Declare it after the
/// [`Container`] so it is dropped (unmounted) before the container's leftover check runs.
pub struct HostMount(pub PathBuf);

impl HostMount {
    /// Mount a fresh tmpfs at `target` (created if missing).
    pub fn tmpfs(target: &Path) -> Self {
        use nix::mount::{mount, MsFlags};
        fs::create_dir_all(target).expect("create mount target");
        mount(Some("tmpfs"), target, Some("tmpfs"), MsFlags::empty(), Some("mode=755"))
            .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", target.display()));
        HostMount(target.to_path_buf())
    }

    /// Make this mount shared (mount --make-shared).
    pub fn make_shared(&self) -> &Self {
        use nix::mount::{mount, MsFlags};
        mount(None::<&str>, &self.0, None::<&str>, MsFlags::MS_SHARED, None::<&str>)
            .unwrap_or_else(|e| panic!("make-shared {}: {e}", self.0.display()));
        self
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The directory holding `sysprobe` (src/bin/sysprobe.rs) built as a static-pie, so it runs on
/// the busybox rootfs: bind-mount it into a container and run `/DIR/sysprobe`. Built once per
/// test process (and only when the source is newer) with plain `rustc -C
/// target-feature=+crt-static`, not cargo: no second cargo build runs while `cargo test` holds
/// the target dir, and the helper has no dependencies. A file lock serialises test processes.
pub fn sysprobe_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("capsa-integration/sysprobe");
        fs::create_dir_all(&dir).expect("create sysprobe dir");
        let lock = fs::File::create(target_dir().join("capsa-integration/sysprobe.lock")).expect("create sysprobe.lock");
        // SAFETY: flock on a valid, owned fd; the lock is released when `lock` is dropped.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock sysprobe.lock: {}", std::io::Error::last_os_error());
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/sysprobe.rs");
        let bin = dir.join("sysprobe");
        let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        if mtime(&bin).is_none() || mtime(&bin) < mtime(&src) {
            let tmp = dir.join("sysprobe.tmp");
            let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
            let mut cmd = Command::new(rustc);
            cmd.args(["--edition", "2021", "-O", "-C", "target-feature=+crt-static", "-o"]).arg(&tmp).arg(&src);
            let out = run_host_cmd(cmd, Duration::from_secs(120));
            assert!(out.success(), "building sysprobe failed:\n{out}");
            fs::rename(&tmp, &bin).expect("install sysprobe");
        }
        drop(lock);
        dir
    })
}

/// What a hostile-image test checks on the host afterwards: the runtime binary, a marker file
/// outside the rootfs that symlink tricks aim at, `kernel.core_pattern` (the classic write from
/// an unmasked procfs), and the host's mount table outside the churn of parallel tests.
pub struct HostWatch {
    bin: Vec<u8>,
    core_pattern: String,
    mounts: BTreeSet<String>,
    /// A file outside every rootfs, content "host".
    pub marker: PathBuf,
}

/// Mount points other tests (in this process or another worktree's) come and go under.
fn churns(m: &str) -> bool {
    ["/tmp/", "/run/", "/var/lib/", "/var/run/", "/sys/fs/cgroup/"].iter().any(|p| m.starts_with(p))
}

impl HostWatch {
    /// Snapshots the host; the marker file goes in `dir` (the test's own dir, outside its rootfs).
    pub fn new(dir: &Path) -> HostWatch {
        let marker = dir.join("host-marker");
        fs::write(&marker, "host").expect("write marker");
        HostWatch {
            bin: fs::read(runtime_bin()).expect("read runtime binary"),
            core_pattern: read("/proc/sys/kernel/core_pattern"),
            mounts: host_mount_points().into_iter().filter(|m| !churns(m)).collect(),
            marker,
        }
    }

    /// Panics when anything watched changed.
    pub fn assert_untouched(&self) {
        if fs::read(runtime_bin()).expect("read runtime binary") != self.bin {
            // Put it back (best effort; it may be busy) so the rest of the suite can run.
            wait_until(POLL_TIMEOUT, || fs::write(runtime_bin(), &self.bin).is_ok());
            panic!("the runtime binary {} was modified from a container!", runtime_bin().display());
        }
        assert_eq!(read("/proc/sys/kernel/core_pattern"), self.core_pattern, "kernel.core_pattern changed");
        assert_eq!(read(&self.marker), "host", "the host marker file was changed");
        let now: BTreeSet<String> = host_mount_points().into_iter().filter(|m| !churns(m)).collect();
        let added: Vec<&String> = now.difference(&self.mounts).collect();
        assert!(added.is_empty(), "new host mounts: {added:?}");
    }
}

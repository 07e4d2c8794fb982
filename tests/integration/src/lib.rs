//! Shared helpers for the end-to-end tests.
//!
//! The suite drives a runc-compatible runtime binary as root and checks what a container sees
//! (it prints `/proc/self/status`, `id`, mountinfo, ...) and what the host sees (cgroup files,
//! mounts, /proc). It is written against the runc CLI contract, so it can be run against runc
//! itself to validate the tests:
//!
//! ```text
//! cargo test -p capsa-integration -- --test-threads 4                          # target/release/capsa
//! CAPSA_BIN=/usr/sbin/runc cargo test -p capsa-integration -- --test-threads 4 # reference run
//! ```
//!
//! Every test owns a [`Container`]: a unique id, its own `--root` state directory and bundle under
//! `/tmp/capsa-it-<id>/`, and a drop guard that force-deletes the container and then asserts that
//! nothing was left behind (state dir, cgroup dirs, processes, mounts). Set `CAPSA_IT_KEEP=1` to keep
//! the directories of failed tests for inspection.
//!
//! Checks that only capsa is expected to pass (runc 1.1 is known to behave otherwise) are gated with
//! [`is_capsa`], and each gate says why in a comment.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

/// Upper bound for one runtime command; the suite never waits longer than this on a child.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// Default bound for polling loops (waiting for a status, for output, for a process to die).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Locating things
// ---------------------------------------------------------------------------------------------

/// The workspace root (`tests/integration/../..`).
pub fn workspace_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        p.canonicalize().unwrap_or(p)
    })
}

/// The cargo target directory the test binary was built into (`target/`).
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        let d = PathBuf::from(d);
        return if d.is_absolute() { d } else { workspace_root().join(d) };
    }
    // current_exe = <target>/<profile>/deps/<test>-<hash>
    if let Ok(exe) = std::env::current_exe() {
        if let Some(t) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            if t.join("CACHEDIR.TAG").exists() {
                return t.to_path_buf();
            }
        }
    }
    workspace_root().join("target")
}

/// The runtime binary under test: `$CAPSA_BIN`, default `<workspace>/target/release/capsa`.
pub fn runtime_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let p = match std::env::var_os("CAPSA_BIN") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => workspace_root().join("target/release/capsa"),
        };
        assert!(
            p.is_file(),
            "runtime binary {} not found: build it with `cargo build --release -p capsa` or set \
             CAPSA_BIN (e.g. CAPSA_BIN=/usr/sbin/runc to validate the suite against runc)",
            p.display()
        );
        p.canonicalize().unwrap_or(p)
    })
}

/// True when the binary under test is capsa (its file name is "capsa"), false for the reference
/// runtime (runc). Used to gate checks where capsa deliberately differs from runc 1.1; every use
/// says why at the spot.
pub fn is_capsa() -> bool {
    runtime_bin().file_name().is_some_and(|n| n == "capsa")
}

/// The base bundle built once per test process by `hack/mkbundle.sh` into
/// `<target>/capsa-integration/base` (idempotent: a rerun only repairs what differs). It lives under
/// target/, not /tmp, so nothing is left behind on the host; a file lock serialises concurrent test
/// processes. Returns the bundle dir (with `rootfs/` and `config.json`).
pub fn base_bundle() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = target_dir().join("capsa-integration");
        fs::create_dir_all(&dir).expect("create base bundle dir");
        let lock = fs::File::create(dir.join("base.lock")).expect("create base.lock");
        // SAFETY: flock on a valid, owned fd; the lock is released when `lock` is dropped.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock base.lock: {}", std::io::Error::last_os_error());
        let base = dir.join("base");
        let script = workspace_root().join("hack/mkbundle.sh");
        let mut cmd = Command::new("sh");
        cmd.arg(&script).arg(&base);
        let out = run_host_cmd(cmd, CMD_TIMEOUT);
        assert!(out.success(), "hack/mkbundle.sh failed:\n{out}");
        drop(lock);
        base
    })
}

/// The shared read-only base rootfs (absolute path).
pub fn base_rootfs() -> PathBuf {
    base_bundle().join("rootfs")
}

/// config.json of the base bundle, parsed once.
pub fn base_config() -> &'static Value {
    static CFG: OnceLock<Value> = OnceLock::new();
    CFG.get_or_init(|| {
        let text = fs::read_to_string(base_bundle().join("config.json")).expect("read base config");
        serde_json::from_str(&text).expect("base config.json is JSON")
    })
}

// ---------------------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------------------

/// The result of one command. stdout/stderr were redirected to files, not pipes: a container
/// started by `create`/`run -d` inherits them and would keep a pipe open forever. The files keep
/// receiving the container's output; [`Output::stdout_now`] re-reads them.
#[derive(Debug, Clone)]
pub struct Output {
    pub cmdline: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    pub elapsed: Duration,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\n  -> code {:?} signal {:?} in {:?}\n  stdout: {}\n  stderr: {}",
            self.cmdline,
            self.code,
            self.signal,
            self.elapsed,
            indent(&self.stdout),
            indent(&self.stderr)
        )
    }
}

fn indent(s: &str) -> String {
    if s.is_empty() {
        return "<empty>".into();
    }
    s.trim_end().replace('\n', "\n          ")
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }

    /// Panics unless the command exited with `code`.
    #[track_caller]
    pub fn code_is(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "unexpected exit code:\n{self}");
        self
    }

    /// A clean failure: exit code 1, and stderr is one non-empty, meaningful line (not a panic,
    /// not a usage dump).
    #[track_caller]
    pub fn fails_cleanly(self) -> Self {
        assert_eq!(self.code, Some(1), "expected exit code 1:\n{self}");
        let err = self.stderr.trim();
        assert!(!err.is_empty(), "expected an error message on stderr:\n{self}");
        assert_eq!(err.lines().count(), 1, "expected exactly one line on stderr:\n{self}");
        for bad in ["panicked", "RUST_BACKTRACE", "Usage:", "USAGE:"] {
            assert!(!err.contains(bad), "stderr looks like a crash or usage dump:\n{self}");
        }
        assert!(err.len() >= 8, "stderr too short to be meaningful:\n{self}");
        self
    }

    /// The error message on stderr, with runc's logrus text wrapper
    /// (`time="..." level=error msg="..."`) removed if present.
    pub fn err_msg(&self) -> String {
        let line = self.stderr.trim().lines().last().unwrap_or("").to_string();
        if let Some(i) = line.find(" msg=\"") {
            let rest = &line[i + 6..];
            let rest = rest.strip_suffix('"').unwrap_or(rest);
            return rest.replace("\\\"", "\"");
        }
        line
    }

    /// Re-read stdout from its file (a detached container keeps writing to it).
    pub fn stdout_now(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Re-read stderr from its file.
    pub fn stderr_now(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

static OUT_SEQ: AtomicU32 = AtomicU32::new(0);

/// Where command output goes when a command is not tied to a [`Container`].
fn scratch_dir() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = target_dir().join("capsa-integration/out");
        fs::create_dir_all(&d).expect("create scratch out dir");
        d
    })
}

/// Standard input for a command.
pub enum Stdin {
    Null,
    File(PathBuf),
}

/// A command with output to files and a hard timeout.
pub struct Cmd {
    cmd: Command,
    display: String,
    out_dir: PathBuf,
    timeout: Duration,
    stdin: Stdin,
    extra_fds: Vec<(fs::File, i32)>,
}

impl Cmd {
    pub fn new(program: impl AsRef<std::ffi::OsStr>, out_dir: &Path) -> Self {
        let program = program.as_ref();
        Cmd {
            cmd: Command::new(program),
            display: program.to_string_lossy().into_owned(),
            out_dir: out_dir.to_path_buf(),
            timeout: CMD_TIMEOUT,
            stdin: Stdin::Null,
            extra_fds: vec![],
        }
    }

    /// Pass `file` to the child as fd `target` (>= 3), e.g. for `--preserve-fds`.
    pub fn pass_fd(mut self, file: fs::File, target: i32) -> Self {
        assert!(target >= 3);
        self.extra_fds.push((file, target));
        self
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        let a = a.into();
        let _ = write!(self.display, " {}", a.to_string_lossy());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn current_dir(mut self, d: &Path) -> Self {
        self.cmd.current_dir(d);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    pub fn stdin(mut self, s: Stdin) -> Self {
        self.stdin = s;
        self
    }

    /// Spawn without waiting (for commands run concurrently); finish with [`Running::wait`].
    pub fn spawn(mut self) -> Running {
        let n = OUT_SEQ.fetch_add(1, Ordering::Relaxed);
        let tag: String = self
            .display
            .split_whitespace()
            .filter(|w| !w.starts_with('-') && !w.starts_with('/'))
            .take(2)
            .collect::<Vec<_>>()
            .join("-")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .take(40)
            .collect();
        fs::create_dir_all(&self.out_dir).expect("create out dir");
        let stdout_path = self.out_dir.join(format!("{n:04}-{tag}.out"));
        let stderr_path = self.out_dir.join(format!("{n:04}-{tag}.err"));
        let so = fs::File::create(&stdout_path).expect("create stdout file");
        let se = fs::File::create(&stderr_path).expect("create stderr file");
        let si = match &self.stdin {
            Stdin::Null => Stdio::null(),
            Stdin::File(p) => Stdio::from(fs::File::open(p).expect("open stdin file")),
        };
        self.cmd.stdin(si).stdout(so).stderr(se);
        if !self.extra_fds.is_empty() {
            use std::os::fd::AsRawFd;
            assert!(self.extra_fds.len() <= 8, "at most 8 extra fds");
            let mut pairs = [(-1i32, -1i32); 8];
            for (i, (f, t)) in self.extra_fds.iter().enumerate() {
                pairs[i] = (f.as_raw_fd(), *t);
            }
            let n = self.extra_fds.len();
            // SAFETY: the closure runs in the forked child before exec and only calls the
            // async-signal-safe fcntl/dup2 on fds this process owns, without allocating. Sources
            // are first moved above all targets (F_DUPFD_CLOEXEC >= 100) so that a target never
            // clobbers a source that is not yet duplicated; dup2 clears FD_CLOEXEC on the target.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut self.cmd, move || {
                    let mut moved = [-1i32; 8];
                    for i in 0..n {
                        moved[i] = libc::fcntl(pairs[i].0, libc::F_DUPFD_CLOEXEC, 100);
                        if moved[i] < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    for i in 0..n {
                        if libc::dup2(moved[i], pairs[i].1) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let start = Instant::now();
        let child = self.cmd.spawn().unwrap_or_else(|e| panic!("spawn `{}`: {e}", self.display));
        Running { child, display: self.display, stdout_path, stderr_path, start, timeout: self.timeout }
    }

    /// Run to completion (killing the child and failing after the timeout).
    #[track_caller]
    pub fn run(self) -> Output {
        self.spawn().wait()
    }
}

/// A spawned [`Cmd`].
pub struct Running {
    child: std::process::Child,
    display: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    start: Instant,
    timeout: Duration,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait for the child; after the timeout kill it and panic with what it printed so far.
    #[track_caller]
    pub fn wait(self) -> Output {
        match self.wait_or_kill() {
            Ok(out) => out,
            Err(out) => panic!("command timed out (killed):\n{out}"),
        }
    }

    /// Wait for the child; after the timeout kill it and return Err with what it printed.
    pub fn wait_or_kill(mut self) -> Result<Output, Box<Output>> {
        let mut sleep = Duration::from_millis(1);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) => {}
                Err(e) => {
                    eprintln!("wait `{}`: {e}", self.display);
                    return Err(Box::new(self.collect(None, None)));
                }
            }
            if self.start.elapsed() > self.timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let out = self.collect(None, None);
                eprintln!("TIMEOUT after {:?}:\n{out}", self.timeout);
                return Err(Box::new(out));
            }
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(Duration::from_millis(20));
        };
        use std::os::unix::process::ExitStatusExt;
        let out = self.collect(status.code(), status.signal());
        eprintln!("{out}");
        Ok(out)
    }

    fn collect(&self, code: Option<i32>, signal: Option<i32>) -> Output {
        Output {
            cmdline: self.display.clone(),
            code,
            signal,
            stdout: fs::read_to_string(&self.stdout_path).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr_path).unwrap_or_default(),
            stdout_path: self.stdout_path.clone(),
            stderr_path: self.stderr_path.clone(),
            elapsed: self.start.elapsed(),
        }
    }
}

/// Run a host command with a timeout, output captured in the shared scratch dir.
pub fn run_host_cmd(cmd: Command, timeout: Duration) -> Output {
    let display = format!("{cmd:?}");
    let program = cmd.get_program().to_owned();
    let mut c = Cmd::new(program, scratch_dir()).timeout(timeout);
    c.cmd = cmd;
    c.display = display;
    let out = c.run();
    let _ = fs::remove_file(&out.stdout_path);
    let _ = fs::remove_file(&out.stderr_path);
    out
}

/// Run the runtime binary with `args` (no `--root`; for `spec`, `features`, `--version`),
/// in `cwd`, output files in `out_dir`.
pub fn runtime_cmd(cwd: &Path, out_dir: &Path) -> Cmd {
    Cmd::new(runtime_bin(), out_dir).current_dir(cwd)
}

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
    mountinfo_points(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Mount points (field 5) of a mountinfo text.
pub fn mountinfo_points(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape_mountinfo).collect()
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
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let g: Vec<&str> = post.split(' ').collect();
            Some(MountInfo {
                root: unescape_mountinfo(f.get(3)?),
                mount_point: unescape_mountinfo(f.get(4)?),
                options: f.get(5)?.to_string(),
                optional: f.get(6..).map(|x| x.join(" ")).unwrap_or_default(),
                fstype: g.first()?.to_string(),
                source: g.get(1).map(|s| unescape_mountinfo(s)).unwrap_or_default(),
                super_options: g.get(2).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (mount point, own cgroup path) for every cgroup hierarchy mounted on the host, from
/// /proc/self/mountinfo and /proc/self/cgroup. The runtime runs in the test's cgroup, so a
/// container's cgroup with a relative (default) cgroupsPath is created under these.
pub fn cgroup_hierarchies() -> &'static [(PathBuf, String)] {
    static H: OnceLock<Vec<(PathBuf, String)>> = OnceLock::new();
    H.get_or_init(|| {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut out = vec![];
        for m in parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()) {
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
    for m in parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").ok()?) {
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

// ---------------------------------------------------------------------------------------------
// JSON config editing
// ---------------------------------------------------------------------------------------------

/// Set a value by JSON pointer ("/process/user/uid"), creating intermediate objects.
pub fn set_ptr(v: &mut Value, ptr: &str, new: Value) {
    let mut cur = v;
    let parts: Vec<&str> = ptr.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        if let Value::Array(a) = cur {
            let idx: usize = p.parse().expect("array index in pointer");
            if last {
                a[idx] = new;
                return;
            }
            cur = &mut a[idx];
            continue;
        }
        if !cur.is_object() {
            *cur = json!({});
        }
        let obj = cur.as_object_mut().expect("object");
        if last {
            obj.insert((*p).to_string(), new);
            return;
        }
        cur = obj.entry((*p).to_string()).or_insert_with(|| json!({}));
    }
}

/// Remove a value by JSON pointer, if present.
pub fn remove_ptr(v: &mut Value, ptr: &str) {
    let (parent, key) = ptr.rsplit_once('/').expect("pointer");
    if let Some(Value::Object(o)) = v.pointer_mut(parent) {
        o.remove(key);
    }
}

/// Top-level keys of a JSON object text in the order they appear (serde_json's Value sorts them).
pub fn json_key_order(text: &str) -> Vec<String> {
    let mut keys = vec![];
    let (mut depth, mut in_str, mut esc) = (0i32, false, false);
    let mut cur = String::new();
    let mut last_str = None::<String>;
    for c in text.chars() {
        if in_str {
            if esc {
                esc = false;
                cur.push(c);
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
                last_str = Some(std::mem::take(&mut cur));
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ':' if depth == 1 => {
                if let Some(k) = last_str.take() {
                    keys.push(k);
                }
            }
            c if !c.is_whitespace() => last_str = None,
            _ => {}
        }
    }
    keys
}

/// Linux capability numbers by name (CAP_CHOWN = 0 ... CAP_CHECKPOINT_RESTORE = 40).
pub const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The /proc/PID/status hex mask ("%016x") for a set of capability names.
pub fn cap_mask(names: &[&str]) -> String {
    let mut m = 0u64;
    for n in names {
        let i = CAPS.iter().position(|c| c == n).unwrap_or_else(|| panic!("unknown cap {n}"));
        m |= 1 << i;
    }
    format!("{m:016x}")
}

// ---------------------------------------------------------------------------------------------
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
        wait_until(Duration::from_secs(3), || {
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

/// The receiving end of `--console-socket`: a listening unix socket in the test dir that accepts
/// one connection and receives the pty master over SCM_RIGHTS.
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> Self {
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind console socket");
        listener.set_nonblocking(true).expect("nonblocking");
        ConsoleSocket { path: path.to_path_buf(), listener }
    }

    /// Accept the runtime's connection and receive the pty master fd (within `timeout`).
    #[track_caller]
    pub fn recv_master(&self, timeout: Duration) -> std::os::fd::OwnedFd {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let (stream, _) = poll(timeout, "the runtime to connect to the console socket", || self.listener.accept().ok());
        stream.set_nonblocking(false).expect("blocking");
        stream.set_read_timeout(Some(timeout)).expect("rcvtimeo");
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let msg =
            recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC).expect("recvmsg on console socket");
        let mut fds = vec![];
        for c in msg.cmsgs().expect("cmsgs") {
            if let ControlMessageOwned::ScmRights(v) = c {
                fds.extend(v);
            }
        }
        assert_eq!(fds.len(), 1, "expected exactly one fd over the console socket, got {fds:?}");
        // SAFETY: the fd was just received via SCM_RIGHTS and is owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fds[0]) }
    }
}

/// Read everything from a pty master in a background thread until EOF/EIO; poll with
/// [`PtyReader::wait_for`].
pub struct PtyReader {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl PtyReader {
    pub fn spawn(master: std::os::fd::OwnedFd) -> Self {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut f = fs::File::from(master);
            let mut chunk = [0u8; 4096];
            loop {
                match f.read(&mut chunk) {
                    Ok(0) | Err(_) => break, // EIO once the last slave fd is closed
                    Ok(n) => b.lock().expect("pty buf").extend_from_slice(&chunk[..n]),
                }
            }
        });
        PtyReader { buf }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().expect("pty buf")).replace('\r', "")
    }

    #[track_caller]
    pub fn wait_for(&self, needle: &str) -> String {
        poll(POLL_TIMEOUT, &format!("pty output to contain {needle:?}"), || {
            let t = self.text();
            t.contains(needle).then_some(t)
        })
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

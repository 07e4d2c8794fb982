//! Locating the runtime and the base bundle, and running commands with output to files and a
//! hard timeout.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

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
pub(crate) fn target_dir() -> PathBuf {
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
            "runtime binary {} not found: build it with `hack/build.sh` or set \
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
        self.fails_cleanly_with(1)
    }

    /// [`Output::fails_cleanly`] with exit code `code` (255: runc's code for exec's own
    /// failures).
    #[track_caller]
    pub fn fails_cleanly_with(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "expected exit code {code}:\n{self}");
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

//! Independent stages built side by side.
//!
//! The capsa library forks a RUN's container only from a single-threaded process, so a
//! stage built beside another runs in a process of its own: `capsactl __build-stage JOB
//! OUT`, this binary again, handed the options, the stages it builds on and the images
//! the parent resolved in a JSON job file. The worker builds its stage as the parent would
//! (`exec::stage_main`), in a scratch directory of its own under its own lock, and answers
//! with the stage's layers, config and cache key. Its layers are in the store and its
//! cache rows in the database like any step's; the parent's shared store lock keeps
//! garbage collection away until the image is written.
//!
//! Ending: a worker dies with its parent (PR_SET_PDEATHSIG); the parent turns SIGINT,
//! SIGTERM and SIGHUP into a cancel (workers killed, then what they left is cleaned up,
//! as for any killed build: [`super::run::Scratch::clean_stale`]).
//!
//! ```text
//! <parent scratch>/Dockerfile     the Dockerfile, written once for all workers
//! <parent scratch>/steps          the `#N` step counter all of them share
//! <parent scratch>/keys/KEY       flock: one process at a time makes a cache key's layer
//! <parent scratch>/stage-N.job    what worker N is asked (removed once it has read it)
//! <parent scratch>/progress       the tty view's events (see view.rs)
//! <parent scratch>/stage-N.out    its answer (written whole, then renamed into place)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

use super::exec::StageOut;
use crate::cli::{fail, Cli, Failure, Result};

/// The build's step counter (`#N` in the progress), shared by the parent and its workers
/// through a file: each number is taken under the file's lock.
pub struct Steps(File);

impl Steps {
    pub fn create(path: &Path) -> Result<Steps> {
        let f = File::options().read(true).write(true).create_new(true).open(path);
        Ok(Steps(f.map_err(|e| fail(format!("create {}: {e}", path.display())))?))
    }

    pub fn open(path: &Path) -> Result<Steps> {
        let f = File::options().read(true).write(true).open(path);
        Ok(Steps(f.map_err(|e| fail(format!("open {}: {e}", path.display())))?))
    }

    /// The next step number (1, 2, ...).
    pub fn next(&self) -> Result<usize> {
        let io = |e: std::io::Error| fail(format!("build step counter: {e}"));
        self.0.lock().map_err(io)?;
        let mut b = [0u8; 8];
        let n = match self.0.read_exact_at(&mut b, 0) {
            Ok(()) => u64::from_le_bytes(b),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io(e)),
        } + 1;
        let w = self.0.write_all_at(&n.to_le_bytes(), 0);
        let _ = self.0.unlock();
        w.map_err(io)?;
        Ok(n as usize)
    }
}

/// What a worker is asked to build.
#[derive(Serialize, Deserialize)]
pub struct Job {
    pub context: PathBuf,
    /// The name the Dockerfile is shown by (its text is `<shared>/Dockerfile`).
    pub dockerfile_name: String,
    pub build_args: BTreeMap<String, String>,
    pub no_cache: bool,
    pub network: String,
    pub allow: BTreeSet<String>,
    pub quiet: bool,
    /// The parent's --progress: a tty view is fed through `<parent scratch>/progress`.
    pub progress: super::view::Mode,
    pub cgroup_parent: String,
    pub secrets: BTreeMap<String, super::mounts::SecretSource>,
    /// The stage to build (an index into the Dockerfile's stages) and its name.
    pub stage: usize,
    pub label: String,
    /// The stages it builds on.
    pub done: Vec<(usize, StageOut)>,
    /// Base and --from images the parent resolved (not looked up again: one may have
    /// been untagged meanwhile).
    pub images: BTreeMap<String, capsa_image::store::ImageInfo>,
    /// The parent's scratch directory (see the module's table).
    pub shared: PathBuf,
}

/// Makes the key's layer alone: held while a step looks its key up and, on a miss,
/// makes and records the layer, so that two stages with the same step (side by side)
/// make it once and both use it, as they would one after the other.
pub fn lock_key(shared: &Path, key: &str) -> Result<File> {
    let dir = shared.join("keys");
    std::fs::create_dir_all(&dir).map_err(|e| fail(format!("create {}: {e}", dir.display())))?;
    let p = dir.join(key.replace(':', "-"));
    let f = File::options().create(true).truncate(false).write(true).open(&p).map_err(|e| fail(format!("{}: {e}", p.display())))?;
    f.lock().map_err(|e| fail(format!("lock {}: {e}", p.display())))?;
    Ok(f)
}

/// A worker's answer.
#[derive(Serialize, Deserialize)]
struct Answer {
    built: Option<(StageOut, BTreeSet<String>)>,
    error: Option<(String, i32)>,
}

/// A running worker.
pub struct Worker {
    pub stage: usize,
    label: String,
    child: Child,
    /// Readable once the worker has exited (None: no pidfd, the caller polls).
    pidfd: Option<OwnedFd>,
    out: PathBuf,
}

/// A finished stage: its output and the build args it used.
pub type Built = (StageOut, BTreeSet<String>);

impl Worker {
    /// Starts a worker for `job`, its files in `dir` (the parent's scratch directory).
    pub fn spawn(cli: &Cli, dir: &Path, job: &Job) -> Result<Worker> {
        let path = dir.join(format!("stage-{}.job", job.stage));
        let out = dir.join(format!("stage-{}.out", job.stage));
        let text = serde_json::to_vec(job).map_err(|e| fail(format!("encode the job of stage {}: {e}", job.label)))?;
        std::fs::write(&path, text).map_err(|e| fail(format!("write {}: {e}", path.display())))?;
        let _ = std::fs::remove_file(&out);
        // Its stdio is ours (RUN output and progress go where the parent's go).
        let mut cmd = Command::new("/proc/self/exe");
        // SAFETY: between fork and exec the child only calls sigprocmask and prctl, which
        // are async-signal-safe: it starts with no signal blocked (the parent blocks the
        // cancelling ones) and dies with its parent.
        unsafe {
            cmd.pre_exec(|| {
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .arg0("capsactl")
            .arg("--root")
            .arg(cli.store_root())
            .arg("--state-root")
            .arg(&cli.state_root)
            .arg("__build-stage")
            .arg(&path)
            .arg(&out)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("start the build of stage {}: {e}", job.label)))?;
        // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        // SAFETY: fd is a new descriptor that nothing else owns.
        let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
        Ok(Worker { stage: job.stage, label: job.label.clone(), child, pidfd, out })
    }

    /// The worker's answer once it has exited (None: still running).
    pub fn try_finish(&mut self) -> Option<Result<Built>> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(self.answer(status)),
            Err(e) => Some(Err(fail(format!("wait for the build of stage {}: {e}", self.label)))),
        }
    }

    /// Kills the worker and waits for it (what it leaves is a killed build's).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }

    fn answer(&mut self, status: std::process::ExitStatus) -> Result<Built> {
        let text = std::fs::read(&self.out);
        let _ = std::fs::remove_file(&self.out);
        let a: Answer = match text.ok().and_then(|t| serde_json::from_slice(&t).ok()) {
            Some(a) => a,
            None => return Err(fail(format!("the build of stage {} ended without an answer ({status})", self.label))),
        };
        match (a.built, a.error) {
            (Some(b), None) => Ok(b),
            (_, Some((msg, code))) => Err(Failure { msg, code }),
            (None, None) => Err(fail(format!("the build of stage {} answered nothing", self.label))),
        }
    }
}

/// The cancelling signals (SIGINT, SIGTERM, SIGHUP) as a cancel, while the build has
/// workers: blocked and read from a signalfd (the mask comes back when dropped).
pub struct Cancel {
    sfd: nix::sys::signalfd::SignalFd,
    old: nix::sys::signal::SigSet,
}

impl Cancel {
    pub fn new() -> Result<Cancel> {
        use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        let sigs = super::run::cancelling();
        let mut old = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigs), Some(&mut old)).map_err(|e| fail(format!("block signals: {e}")))?;
        match SignalFd::with_flags(&sigs, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
            Ok(sfd) => Ok(Cancel { sfd, old }),
            Err(e) => {
                let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                Err(fail(format!("signalfd: {e}")))
            }
        }
    }

    /// The cancel, if a cancelling signal came.
    pub fn check(&self) -> Result<()> {
        match self.sfd.read_signal() {
            Ok(Some(info)) => Err(super::run::cancelled(info.ssi_signo as i32)),
            _ => Ok(()),
        }
    }

    /// Blocks until one of `workers` has exited or a cancelling signal came.
    pub fn wait_any(&self, workers: &[Worker]) -> Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let all = workers.iter().all(|w| w.pidfd.is_some());
        let mut fds = vec![PollFd::new(self.sfd.as_fd(), PollFlags::POLLIN)];
        fds.extend(workers.iter().filter_map(|w| w.pidfd.as_ref()).map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN)));
        // Without pidfds (an old kernel): a short wait, the caller looks again.
        let timeout = if all { PollTimeout::NONE } else { PollTimeout::from(10u8) };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(fail(format!("poll: {e}"))),
        }
        self.check()
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        use nix::sys::signal::{sigprocmask, SigmaskHow};
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// `__build-stage JOB OUT`: builds one stage for a parent build and writes the answer.
pub fn worker_main(cli: &Cli, job: &Path, out: &Path) -> i32 {
    let r = (|| -> Result<Built> {
        let text = std::fs::read(job).map_err(|e| fail(format!("read {}: {e}", job.display())))?;
        let _ = std::fs::remove_file(job);
        let job: Job = serde_json::from_slice(&text).map_err(|e| fail(format!("{}: {e}", job.display())))?;
        let mut store = cli.store()?;
        super::exec::stage_main(&mut store, &cli.state_root, &job)
    })();
    let (a, code) = match r {
        Ok(b) => (Answer { built: Some(b), error: None }, 0),
        Err(e) => (Answer { built: None, error: Some((e.msg, e.code)) }, 1),
    };
    let tmp = out.with_extension("tmp");
    let written = serde_json::to_vec(&a)
        .map_err(std::io::Error::other)
        .and_then(|t| std::fs::write(&tmp, t))
        .and_then(|()| std::fs::rename(&tmp, out));
    if let Err(e) = written {
        eprintln!("Error: write {}: {e}", out.display());
        return 1;
    }
    code
}

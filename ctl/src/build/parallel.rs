//! Independent stages built side by side.
//!
//! The capsa library forks a RUN's container only from a single-threaded process, so a
//! stage built beside another runs in a process of its own: `capsactl __build-stage JOB`,
//! this binary again, handed the Dockerfile, the options and the stages built so far in a
//! JSON job file. The worker builds its stage as the parent would (`exec::stage_main`),
//! in a scratch directory of its own under its own lock (a worker killed half-way is
//! cleaned up as any killed build is: [`super::run::Scratch::clean_stale`]), and answers
//! with the stage's layers, config and cache key in a result file. Its layers are in the
//! store and its cache rows in the database like any step's; the parent's shared store
//! lock keeps garbage collection away until the image is written.
//!
//! ```text
//! <parent scratch>/steps          the `#N` step counter all of them share
//! <parent scratch>/stage-N.job    what worker N is asked
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
    /// The Dockerfile's text and the name it is shown by.
    pub dockerfile: (String, String),
    pub build_args: BTreeMap<String, String>,
    pub no_cache: bool,
    pub network: String,
    pub quiet: bool,
    pub cgroup_parent: String,
    /// The stage to build (an index into the Dockerfile's stages).
    pub stage: usize,
    /// Stages built so far.
    pub done: Vec<(usize, StageOut)>,
    /// Base and --from images the parent pulled: name → image id.
    pub images: BTreeMap<String, String>,
    pub steps: PathBuf,
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
        let text = serde_json::to_vec(job).map_err(|e| fail(format!("encode the job of stage {}: {e}", job.stage)))?;
        std::fs::write(&path, text).map_err(|e| fail(format!("write {}: {e}", path.display())))?;
        let _ = std::fs::remove_file(&out);
        // Its stdio is ours (RUN output and progress go where the parent's go).
        let child = Command::new("/proc/self/exe")
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
            .map_err(|e| fail(format!("start the build of stage {}: {e}", job.stage)))?;
        // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        // SAFETY: fd is a new descriptor that nothing else owns.
        let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
        Ok(Worker { stage: job.stage, child, pidfd, out })
    }

    /// The worker's answer once it has exited (None: still running).
    pub fn try_finish(&mut self) -> Option<Result<Built>> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(self.answer(status)),
            Err(e) => Some(Err(fail(format!("wait for the build of stage {}: {e}", self.stage)))),
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
            None => return Err(fail(format!("the build of stage {} ended without an answer ({status})", self.stage))),
        };
        match (a.built, a.error) {
            (Some(b), None) => Ok(b),
            (_, Some((msg, code))) => Err(Failure { msg, code }),
            (None, None) => Err(fail(format!("the build of stage {} answered nothing", self.stage))),
        }
    }
}

/// Blocks until at least one of `workers` has exited.
pub fn wait_any(workers: &[Worker]) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    if workers.is_empty() {
        return;
    }
    if workers.iter().all(|w| w.pidfd.is_some()) {
        let mut fds: Vec<PollFd> =
            workers.iter().filter_map(|w| w.pidfd.as_ref()).map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN)).collect();
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                _ => return,
            }
        }
    }
    // Without pidfds (an old kernel): a short sleep, the caller looks again.
    std::thread::sleep(std::time::Duration::from_millis(10));
}

/// `__build-stage JOB OUT`: builds one stage for a parent build and writes the answer.
pub fn worker_main(cli: &Cli, job: &Path, out: &Path) -> i32 {
    let r = (|| -> Result<Built> {
        let text = std::fs::read(job).map_err(|e| fail(format!("read {}: {e}", job.display())))?;
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

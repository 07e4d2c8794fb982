//! `exec`: run one more process inside a running container.

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

use super::{Container, Status};
use crate::bail;
use crate::error::{Context, Error, Result};
use crate::namespaces::Join;
use crate::process::exec::{ExecPlan, NamedUser};
use crate::process::plan::ProcessPlan;
use crate::process::sync::{Channel, Msg};

pub struct ExecArgs<'a> {
    pub root: &'a Path,
    pub id: &'a str,
    pub process: oci_spec::runtime::Process,
    pub named_user: Option<NamedUser>,
    pub console_socket: Option<&'a Path>,
    /// An already connected console socket (foreground `exec -t` without --console-socket).
    pub console_fd: Option<OwnedFd>,
    pub pid_file: Option<&'a Path>,
    pub preserve_fds: i32,
    pub ignore_paused: bool,
    /// `--cgroup [controller:]path`: a sub-cgroup of the container's to run in.
    pub sub_cgroup: Option<&'a str>,
}

/// The container's process settings, the base of `exec` without `--process`.
pub fn container_process(root: &Path, id: &str) -> Result<oci_spec::runtime::Process> {
    let c = Container::load(root, id)?;
    match &c.state.process {
        Some(p) => Ok(p.clone()),
        None => {
            let b = crate::config::load(&c.state.bundle)?;
            b.spec.process().clone().ok_or_else(|| Error::new("process: missing"))
        }
    }
}

/// Namespace types an exec joins, in order: user first (so the others are joined with its
/// privileges), mount last.
const NAMESPACES: [(&str, CloneFlags); 8] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

fn ns_inode(path: &str) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Every namespace of `pid` that is not already ours.
fn namespaces_of(pid: i32) -> Result<(Vec<Join>, bool)> {
    let mut join = Vec::new();
    let mut joins_user = false;
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let Some(ino) = ns_inode(&theirs) else { continue };
        if ns_inode(&format!("/proc/self/ns/{name}")) == Some(ino) {
            continue;
        }
        let fd = open(theirs.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).with_ctx(|| format!("open {theirs}"))?;
        joins_user |= name == "user";
        join.push(Join { flag, fd, path: PathBuf::from(theirs) });
    }
    Ok((join, joins_user))
}

/// Starts the process; returns its host pid once it has exec'd.
pub fn exec(a: ExecArgs) -> Result<i32> {
    // The process joins the container's pid namespace (CVE-2019-5736).
    crate::process::exeseal::require_sealed()?;
    crate::process::fds::reserve_preserved(a.preserve_fds)?;
    // When stage 1 exits, the process becomes our child (so a failure before its exec can be
    // reaped here); a caller that waits for it keeps the setting it had.
    let _subreaper = crate::process::fds::Subreaper::set();
    let p = &a.process;
    if !p.cwd().is_absolute() {
        bail!("process.cwd {:?}: must be an absolute path", p.cwd());
    }
    if p.args().as_ref().is_none_or(|v| v.is_empty() || v[0].is_empty()) {
        bail!("process.args: must not be empty");
    }
    let terminal = p.terminal().unwrap_or(false);
    if terminal && a.console_socket.is_none() && a.console_fd.is_none() {
        bail!("process.terminal is true: --console-socket is required to receive the pty master");
    }
    crate::scheduling::check_lsm(p)?;

    // The lock is held only to read a consistent state: execs run in parallel.
    let (state, join, joins_user, paused) = {
        let c = Container::load(a.root, a.id)?;
        let status = c.status();
        match status {
            Status::Stopped => bail!("cannot exec in a stopped container"),
            // pid 0: nothing to join yet; /proc/0/ns/* would be "no namespace" and the
            // process would run in the host's.
            Status::Creating => bail!("cannot exec in a container that is still being created"),
            Status::Paused if !a.ignore_paused => bail!("cannot exec in a paused container (use --ignore-paused)"),
            _ => {}
        }
        let (join, joins_user) = namespaces_of(c.state.pid)?;
        (c.state.clone(), join, joins_user, status == Status::Paused)
    };
    let mut cgroup_dirs = sub_cgroup_dirs(&state.cgroup_paths, a.sub_cgroup)?;
    let mut late_cgroup = Vec::new();
    if paused {
        for dir in cgroup_dirs.drain(..) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .with_ctx(|| format!("open {}/cgroup.procs", dir.display()))?;
            late_cgroup.push(OwnedFd::from(f));
        }
    }

    let mut process = ProcessPlan::from_spec(p)?;
    // A rootless container's user namespace denies setgroups, as for its init.
    process.rootless = state.rootless;
    if process.oom_score_adj.is_some() {
        // runc applies oomScoreAdj to the container's init only.
        process.oom_score_adj = None;
    }
    let console_socket = match (a.console_fd, a.console_socket) {
        (Some(fd), _) if terminal => Some(fd),
        (None, Some(path)) if terminal => {
            Some(OwnedFd::from(std::os::unix::net::UnixStream::connect(path).with_ctx(|| format!("--console-socket {}", path.display()))?))
        }
        (_, Some(_)) => bail!("--console-socket given but process.terminal is false"),
        _ => None,
    };
    let seccomp = state.seccomp.as_ref().map(crate::seccomp::plan).transpose()?;
    let plan = ExecPlan {
        join,
        joins_user,
        process,
        named_user: a.named_user,
        console_socket,
        preserve_fds: a.preserve_fds,
        seccomp,
        cgroup_join: Default::default(),
        late_cgroup,
    };

    let (parent, child) = Channel::pair()?;
    // Stage 1 joins the cgroups itself (see cgroup::SelfJoin), except in a rootless
    // container of the user's systemd manager: a process from outside the manager's subtree
    // may only be moved in by systemd (AttachProcessesToUnit, as runc has it do).
    let unit = state.systemd_unit.as_deref().filter(|_| state.rootless && !cgroup_dirs.is_empty());
    let self_join = if cgroup_dirs.is_empty() || unit.is_some() { None } else { Some(crate::cgroup::SelfJoin::open(&cgroup_dirs)?) };
    let (forked, in_v2) = match &self_join {
        Some(j) => crate::process::clone::fork_maybe_into(j.v2_dir.as_ref())?,
        None => (crate::process::fds::fork()?, false),
    };
    *plan.cgroup_join.borrow_mut() = self_join;
    match forked {
        ForkResult::Child => {
            drop(parent);
            crate::process::exec::stage1(&plan, &child)
        }
        ForkResult::Parent { child: stage1 } => {
            drop(child);
            let listener = plan.seccomp.as_ref().and_then(|s| s.listener.as_ref());
            let joined = match (plan.cgroup_join.take(), unit) {
                (Some(j), _) if !in_v2 => j.join_v2_from_parent(stage1.as_raw()),
                (None, Some(unit)) => {
                    let dir = &cgroup_dirs[0];
                    let base = state.cgroup_paths.iter().find(|p| dir.starts_with(p));
                    let sub = base.and_then(|b| dir.strip_prefix(b).ok()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                    crate::cgroup::attach_to_unit(unit, state.rootless, &sub, stage1.as_raw())
                }
                _ => Ok(()),
            };
            let r = joined.and_then(|()| drive(&parent, listener, &state));
            if r.is_err() {
                let _ = nix::sys::signal::kill(stage1, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = waitpid(stage1, None);
            let pid = r.map_err(|e| e.context("exec"))?;
            if let Some(f) = a.pid_file {
                super::create::write_pid_file(f, pid)?;
            }
            Ok(pid)
        }
    }
}

fn drive(chan: &Channel, listener: Option<&(PathBuf, String)>, state: &super::State) -> Result<i32> {
    chan.send(&Msg::Go)?;
    let mut pid = None;
    loop {
        match chan.recv()? {
            Some(Msg::InitPid(p)) => {
                pid = Some(p);
                chan.send(&Msg::Go)?;
            }
            // Paused container: the process is set up and freezes as it joins the cgroup.
            Some(Msg::Ready) => return pid.ok_or_else(|| Error::new("sync: Ready before InitPid")),
            Some(Msg::NotifyFd) => {
                let fd = crate::tty::recv_fd(chan.as_fd())?;
                let (Some(l), Some(p)) = (listener, pid) else { bail!("sync: unexpected seccomp listener fd") };
                let json = state.hook_json("running", Some(p));
                crate::seccomp::send_to_agent(l, std::os::fd::AsFd::as_fd(&fd), p, &json)?;
            }
            Some(Msg::Error(e)) => {
                if let Some(p) = pid {
                    // It failed before exec: reap it if it became our child, else let it go.
                    let _ = nix::sys::signal::kill(Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
                    let _ = waitpid(Pid::from_raw(p), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
                }
                return Err(Error::new(e));
            }
            Some(m) => bail!("sync: unexpected message {m:?}"),
            // The sync socket is close-on-exec: end-of-file after InitPid means it exec'd.
            None => return pid.ok_or_else(|| Error::new("exec: process died before it started")),
        }
    }
}

/// The cgroup directories the process joins: the container's, or `--cgroup` below them
/// (`path` for every hierarchy, or `controller:path` for one).
fn sub_cgroup_dirs(paths: &[PathBuf], sub: Option<&str>) -> Result<Vec<PathBuf>> {
    let Some(sub) = sub else { return Ok(paths.to_vec()) };
    let (controller, rel) = match sub.split_once(':') {
        Some((c, r)) => (Some(c), r),
        None => (None, sub),
    };
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        bail!("--cgroup {sub:?}: must not contain ..");
    }
    let mut out = Vec::new();
    for p in paths {
        let matches = controller.is_none_or(|c| {
            p.strip_prefix("/sys/fs/cgroup")
                .ok()
                .and_then(|r| r.iter().next())
                .is_some_and(|h| h.to_str().is_some_and(|h| h.split(',').any(|x| x == c || x == format!("name={c}"))))
        });
        if matches {
            let d = p.join(rel);
            if !d.is_dir() {
                bail!("--cgroup {sub:?}: {} does not exist", d.display());
            }
            out.push(d);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

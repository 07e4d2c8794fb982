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
    /// `--cgroup [controller[,controller]:]path` (repeatable): sub-cgroups of the container's
    /// to run in.
    pub sub_cgroups: &'a [String],
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
        if !join.iter().any(|j| j.flag == CloneFlags::CLONE_NEWNS) {
            // Its init only chrooted into the rootfs; joining namespaces would not put a new
            // process there.
            bail!("container {} shares the runtime's mount namespace (no \"mount\" in linux.namespaces): capsa cannot exec into it", a.id);
        }
        (c.state.clone(), join, joins_user, status == Status::Paused)
    };
    let mut cgroup_dirs = sub_cgroup_dirs(&state.cgroup_paths, a.sub_cgroups)?;
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

/// The cgroup directories the process joins: the container's, or below them as `--cgroup`
/// asks (runc's rules): one `path` for every hierarchy (the only form on cgroup v2), or any
/// number of `controller[,controller...]:path`, each controller named once, the others
/// staying in the container's cgroup. A path must stay inside the container's cgroup and
/// exist.
fn sub_cgroup_dirs(paths: &[PathBuf], args: &[String]) -> Result<Vec<PathBuf>> {
    if args.is_empty() {
        return Ok(paths.to_vec());
    }
    // controller ("" = every hierarchy) → (sub path, the argument it came from)
    let mut wanted: Vec<(String, String, &str)> = Vec::new();
    for arg in args {
        match arg.split_once(':') {
            Some((ctrls, sub)) => {
                for c in ctrls.split(',') {
                    if c.is_empty() {
                        bail!("invalid --cgroup argument: {arg} (empty <controller> prefix)");
                    }
                    if wanted.iter().any(|(w, _, _)| w == c) {
                        bail!("invalid --cgroup argument(s): controller {c} specified multiple times");
                    }
                    wanted.push((c.to_string(), sub.to_string(), arg));
                }
            }
            None if args.len() == 1 => wanted.push((String::new(), arg.clone(), arg)),
            None => bail!("invalid --cgroup argument: {arg} (missing <controller>: prefix)"),
        }
    }
    let controllers: Vec<Vec<String>> = paths.iter().map(|p| controllers_of(p)).collect();
    for (c, _, arg) in wanted.iter().filter(|(c, _, _)| !c.is_empty()) {
        if !controllers.iter().flatten().any(|x| x == c) {
            let known: Vec<&str> = controllers.iter().flatten().map(String::as_str).collect();
            bail!("--cgroup {arg}: unknown controller {c} in SubCgroupPaths (this container's: {})", known.join(", "));
        }
    }
    let mut out = Vec::with_capacity(paths.len());
    for (p, ctrls) in paths.iter().zip(&controllers) {
        let subs: Vec<&(String, String, &str)> = wanted.iter().filter(|(c, _, _)| c.is_empty() || ctrls.contains(c)).collect();
        let Some((_, sub, arg)) = subs.first() else {
            out.push(p.clone());
            continue;
        };
        if let Some((_, other, _)) = subs.iter().find(|(_, s, _)| s != sub) {
            bail!("--cgroup {arg}: controllers of one hierarchy ({}) given different paths {sub:?} and {other:?}", ctrls.join(","));
        }
        // runc 1.1's words (runc ≥1.2: "bad sub cgroup path").
        let d = sub_path(p, sub).ok_or_else(|| Error::new(format!("--cgroup {arg}: {sub} is not a sub cgroup path")))?;
        if !d.is_dir() {
            bail!("--cgroup {arg}: {} does not exist", d.display());
        }
        out.push(d);
    }
    Ok(out)
}

/// `base` joined with `sub`, cleaned lexically; None when the result is not inside `base`.
fn sub_path(base: &Path, sub: &str) -> Option<PathBuf> {
    let mut parts: Vec<&str> = Vec::new();
    for c in sub.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.iter().fold(base.to_path_buf(), |p, c| p.join(c)))
}

/// The controller names of the hierarchy `dir` is in, as runc names them: `cpu`, `cpuacct`
/// for `/sys/fs/cgroup/cpu,cpuacct/...`, `name=systemd` for a named hierarchy, and for a
/// cgroup2 hierarchy the controllers in its root's `cgroup.controllers`.
fn controllers_of(dir: &Path) -> Vec<String> {
    let root = Path::new("/sys/fs/cgroup");
    let Ok(rel) = dir.strip_prefix(root) else { return Vec::new() };
    let first = rel.iter().next().and_then(|h| h.to_str()).unwrap_or_default();
    let v2_root = if root.join("cgroup.controllers").exists() { root.to_path_buf() } else { root.join(first) };
    match std::fs::read_to_string(v2_root.join("cgroup.controllers")) {
        Ok(list) => list.split_whitespace().map(String::from).collect(),
        Err(_) if first == "systemd" => vec!["name=systemd".to_string()],
        Err(_) => first.split(',').map(String::from).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_inside() {
        let base = Path::new("/sys/fs/cgroup/cpu/c1");
        assert_eq!(sub_path(base, "a/b"), Some(base.join("a/b")));
        assert_eq!(sub_path(base, "/a/../b/"), Some(base.join("b")));
        assert_eq!(sub_path(base, "a/../.."), None);
        assert_eq!(sub_path(base, "../c1x"), None);
    }

    #[test]
    fn argument_errors_are_runcs() {
        let paths = [PathBuf::from("/sys/fs/cgroup/memory/c1")];
        let err = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            sub_cgroup_dirs(&paths, &args).unwrap_err().to_string()
        };
        assert_eq!(err(&[":x"]), "invalid --cgroup argument: :x (empty <controller> prefix)");
        assert_eq!(err(&["memory:a", "memory:b"]), "invalid --cgroup argument(s): controller memory specified multiple times");
        assert_eq!(err(&["a", "memory:b"]), "invalid --cgroup argument: a (missing <controller>: prefix)");
        assert!(err(&["../x"]).contains("../x is not a sub cgroup path"));
    }
}

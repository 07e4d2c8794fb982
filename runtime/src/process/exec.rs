//! The children of `capsa exec`: stage 1 joins the running container's namespaces and forks
//! the process that execs the user's command inside them.
//!
//! The protocol is the create table of [`super::sync`] without the init steps:
//! `Go` → `InitPid(pid)` → `Go` (to the command's process) → end-of-file once the command exec'd (the sync socket is
//! close-on-exec), or `Error(msg)` if anything failed. In a paused container the process
//! sends `Ready` before it joins the frozen cgroup and freezes until `resume`.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use nix::sched::setns;

use super::init::{become_process, become_userns_root, exit_now, fail, fork_and_report, load_seccomp};
use super::plan::ProcessPlan;
use super::sync::{Channel, Msg};
use crate::error::{Context, Error, Result};
use crate::namespaces::Join;

/// A user given by name (`--user alice[:wheel]`), resolved inside the container.
#[derive(Debug, Clone)]
pub struct NamedUser {
    pub user: String,
    pub group: Option<String>,
}

pub struct ExecPlan {
    /// The container's namespaces that differ from ours, the user namespace first.
    pub join: Vec<Join>,
    pub joins_user: bool,
    pub process: ProcessPlan,
    pub named_user: Option<NamedUser>,
    pub console_socket: Option<OwnedFd>,
    pub preserve_fds: i32,
    /// The container's `linux.seccomp`, compiled.
    pub seccomp: Option<crate::seccomp::SeccompPlan>,
    /// How stage 1 joins the container's cgroups by itself (taken and closed by stage 1).
    pub cgroup_join: std::cell::RefCell<Option<crate::cgroup::SelfJoin>>,
    /// `cgroup.procs` files the process writes itself into as its last step, when the
    /// container is paused (`--ignore-paused`): joining a frozen cgroup earlier would
    /// freeze the setup half-way.
    pub late_cgroup: Vec<OwnedFd>,
}

impl ExecPlan {
    /// The fds the children need; everything else is closed right after fork.
    fn fds(&self, chan: &Channel) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        let mut v = vec![chan.as_fd().as_raw_fd()];
        v.extend(self.join.iter().map(|j| j.fd.as_raw_fd()));
        v.extend(self.console_socket.iter().map(|f| f.as_raw_fd()));
        v.extend(self.late_cgroup.iter().map(|f| f.as_raw_fd()));
        v.extend(self.cgroup_join.borrow().iter().flat_map(|j| j.fds()));
        v
    }
}

/// Stage 1 of exec: joins the namespaces, forks the command's process, exits.
pub fn stage1(plan: &ExecPlan, chan: &Channel) -> ! {
    super::fds::keep_only(&plan.fds(chan), plan.preserve_fds);
    match stage1_inner(plan, chan) {
        Ok(()) => exit_now(0),
        Err(e) => fail(chan, e),
    }
}

fn stage1_inner(plan: &ExecPlan, chan: &Channel) -> Result<()> {
    // Joined first thing; a failure is reported after Go, when the parent listens.
    let joined = plan.cgroup_join.take().map(|j| j.join_v1()).transpose();
    chan.expect(&Msg::Go)?;
    joined?;
    // Processes already in the container must not reach our memory or fds through
    // /proc/PID while we run capsa code there; exec resets this.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    for j in &plan.join {
        setns(j.fd.as_fd(), j.flag).with_ctx(|| format!("join {}", j.path.display()))?;
    }
    if plan.joins_user {
        become_userns_root()?;
    }
    fork_and_report(chan, || run(plan, chan))
}

/// In the container's namespaces (and, after setns of the mount namespace, its root).
fn run(plan: &ExecPlan, chan: &Channel) -> Result<std::convert::Infallible> {
    let mut p = plan.process.clone();
    if let Some(cpus) = &p.sched.affinity_initial {
        crate::scheduling::SchedPlan::set_affinity("process.execCPUAffinity.initial", cpus)?;
    }
    nix::unistd::setsid().ctx("setsid")?;
    if let Some(u) = &plan.named_user {
        resolve_user(u, &mut p)?;
    }
    if p.terminal {
        let sock = plan.console_socket.as_ref().ok_or_else(|| Error::new("process.terminal: no console socket"))?;
        crate::tty::setup_console(sock.as_fd(), p.console_size, false)?;
    }
    let (exe, env) = become_process(&p, plan.seccomp.as_ref(), chan, plan.preserve_fds)?;
    if !plan.late_cgroup.is_empty() {
        // Joining a frozen cgroup freezes us on the spot: say we are done first.
        chan.send(&Msg::Ready)?;
        for f in &plan.late_cgroup {
            nix::unistd::write(f, b"0").ctx("join the paused container's cgroup")?;
        }
    }
    if let Some(sc) = plan.seccomp.as_ref().filter(|_| p.no_new_privileges) {
        load_seccomp(sc, chan)?;
    }
    let Err(e) = nix::unistd::execve(&exe, &p.args, &env);
    Err(Error::from(e).context(format!("exec {:?}", p.args[0])))
}

/// `--user name[:group]` through the container's /etc/passwd and /etc/group; a named user
/// also gets the groups /etc/group lists it in. The files are the image's: read inside the
/// container's root, bounded, regular files only, and ids above 4294967294 refused (see
/// [`crate::user`]).
fn resolve_user(u: &NamedUser, p: &mut ProcessPlan) -> Result<()> {
    let root = capsa_sys::Root::open(std::path::Path::new("/")).ctx("open /")?;
    let passwd = crate::user::parse_passwd(&crate::user::read_db(&root, "/etc/passwd")?.unwrap_or_default());
    let groups = crate::user::parse_group(&crate::user::read_db(&root, "/etc/group")?.unwrap_or_default());
    let entry = passwd
        .iter()
        .find(|e| e.name == u.user || e.uid.to_string() == u.user)
        .ok_or_else(|| Error::new(format!("--user {:?}: no such user in the container's /etc/passwd", u.user)))?;
    let mut gid = entry.gid;
    if let Some(g) = &u.group {
        gid = match g.parse::<u32>() {
            Ok(n) => crate::user::check_id("--user group", n)?,
            Err(_) => groups
                .iter()
                .find(|e| &e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| Error::new(format!("--user {:?}: no such group {g:?} in the container's /etc/group", u.user)))?,
        };
    }
    let mut extra: Vec<u32> = groups.iter().filter(|e| e.members.contains(&entry.name)).map(|e| e.gid).collect();
    extra.extend(p.additional_gids.iter().copied());
    extra.sort_unstable();
    extra.dedup();
    p.uid = entry.uid;
    p.gid = gid;
    p.additional_gids = extra;
    if !entry.home.is_empty() && !p.env.iter().any(|e| e.as_bytes().starts_with(b"HOME=")) {
        if let Ok(c) = CString::new(format!("HOME={}", entry.home)) {
            p.env.push(c);
        }
    }
    Ok(())
}

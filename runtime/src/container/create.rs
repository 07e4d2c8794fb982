//! `create`: set the container up and leave its init blocked on exec.fifo.

use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

use super::lock::Lock;
use super::state::State;
use super::{save_state, validate_id, EXEC_FIFO};
use crate::bail;
use crate::cgroup::Cgroup;
use crate::error::{Context, Error, Result};
use crate::process::plan::{CreateOpts, InitPlan};
use crate::process::sync::{Channel, Msg};

pub struct CreateArgs<'a> {
    pub root: &'a Path,
    pub id: &'a str,
    pub bundle: &'a Path,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    /// With process.terminal and no console socket, receive the pty master ourselves
    /// (`run` in the foreground): [`Created::tty`] is the socket it arrives on.
    pub hold_tty: bool,
    pub opts: CreateOpts,
    pub systemd_cgroup: bool,
    /// `--rootless`: no cgroups (not delegated here), ids mapped by an unprivileged parent.
    pub rootless: bool,
}

/// Undoes a half-done create when dropped, unless disarmed.
struct Cleanup {
    dir: Option<std::path::PathBuf>,
    cgroup: Option<Cgroup>,
    stage1: Option<Pid>,
    init: Option<Pid>,
}

impl Cleanup {
    fn disarm(mut self) {
        self.dir = None;
        self.cgroup = None;
        self.stage1 = None;
        self.init = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in [self.stage1.take(), self.init.take()].into_iter().flatten() {
            let _ = kill(pid, Signal::SIGKILL);
            // Stage 1 is our child; init became ours when stage 1 exited (we are a
            // child subreaper while creating).
            let _ = waitpid(pid, None);
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill_all(libc::SIGKILL);
            let _ = cg.destroy();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What `create` leaves to its caller.
pub struct Created {
    /// The container's state (also written to disk).
    pub state: State,
    /// With `hold_tty`: the socket the pty master arrives on (see [`crate::tty::recv_fd`]).
    pub tty: Option<OwnedFd>,
    /// For the caller to log: fields this host ignores, a cgroup that already had processes.
    pub warnings: Vec<String>,
}

/// Creates container `id`.
pub fn create(a: CreateArgs) -> Result<Created> {
    validate_id(a.id)?;
    let bundle = crate::config::load(a.bundle)?;
    let spec = &bundle.spec;
    crate::process::exeseal::require_sealed()?;
    crate::process::fds::reserve_preserved(a.opts.preserve_fds.saturating_add(a.opts.listen_fds))?;
    let _subreaper = crate::process::fds::Subreaper::set();
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    if terminal && a.console_socket.is_none() && !a.hold_tty {
        bail!("process.terminal is true: --console-socket is required to receive the pty master");
    }
    if !terminal && a.console_socket.is_some() {
        bail!("--console-socket given but process.terminal is false");
    }

    let linux = spec.linux().as_ref().ok_or_else(|| Error::new("linux: missing"))?;
    let mut warnings = bundle.warnings.clone();
    if !a.rootless {
        warnings.extend(crate::cgroup::precheck(linux, a.id, a.systemd_cgroup)?);
    }

    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(a.root).with_ctx(|| format!("--root {}", a.root.display()))?;
    let dir = a.root.join(a.id);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("container with id {:?} already exists", a.id)
        }
        Err(e) => return Err(Error::from(e).context(format!("create {}", dir.display()))),
    }
    let mut cleanup = Cleanup { dir: Some(dir.clone()), cgroup: None, stage1: None, init: None };
    let _lock = Lock::acquire(&dir)?;

    // A first state, pid 0 ("creating"), naming the cgroup before any directory of it is
    // made: if this process is killed half-way, `delete` still finds what to remove.
    let mut state = State {
        id: a.id.to_string(),
        pid: 0,
        pid_start: 0,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: crate::timefmt::rfc3339_nano(std::time::SystemTime::now()),
        annotations: spec.annotations().clone().unwrap_or_default().into_iter().collect(),
        cgroup_paths: Vec::new(),
        cgroup_created: Vec::new(),
        systemd_unit: None,
        own_pid_ns: false,
        rootless: a.rootless,
        hooks: spec.hooks().clone(),
        process: spec.process().clone(),
        seccomp: linux.seccomp().clone(),
    };
    let view = if a.rootless && !a.systemd_cgroup {
        // runc's rule: without cgroup delegation a rootless container has no cgroup, and
        // limits it asks for cannot be honoured. (With --systemd-cgroup the user's systemd
        // manager delegates one.)
        if crate::cgroup::asks_for_limits(linux) {
            bail!("linux.resources: a rootless container cannot set resource limits (cgroups are not delegated to this user)");
        }
        save_state(&dir, &state)?;
        crate::cgroup::CgroupView::default()
    } else {
        let planned = Cgroup::plan(linux, a.id, a.systemd_cgroup, a.rootless)?;
        state.cgroup_paths = planned.paths();
        state.cgroup_created = planned.missing_parents();
        state.systemd_unit = planned.systemd_unit();
        save_state(&dir, &state)?;
        let cg = planned.create()?;
        // What was really made (a parent may have appeared meanwhile).
        if cg.created() != state.cgroup_created {
            state.cgroup_created = cg.created();
            save_state(&dir, &state)?;
        }
        let view = cg.view()?;
        log::debug!("create {}: cgroup {:?}", a.id, state.cgroup_paths);
        cleanup.cgroup = Some(cg);
        view
    };

    let mut plan = InitPlan::build(spec, &bundle.dir, &bundle.rootfs, &a.opts, view)?;
    plan.make_trees()?;
    plan.process.rootless = a.rootless;
    if !a.opts.no_new_keyring {
        plan.new_keyring = Some(format!("_ses.{}", a.id));
    }
    let fifo = dir.join(EXEC_FIFO);
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622)).ctx("create exec.fifo")?;
    // mkfifo honours the umask; the fifo must be writable by the container's user.
    std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o622)).ctx("chmod exec.fifo")?;
    // Opened here, read-write (never blocks), and inherited by init: it reads one byte from
    // it to wait for `start`, whatever user and user namespace it has switched to by then.
    plan.fifo = Some(open(&fifo, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).ctx("open exec.fifo")?);
    let mut tty = None;
    if terminal {
        plan.console_socket = Some(match a.console_socket {
            Some(path) => {
                OwnedFd::from(std::os::unix::net::UnixStream::connect(path).with_ctx(|| format!("--console-socket {}", path.display()))?)
            }
            None => {
                let (ours, theirs) = crate::tty::socketpair()?;
                tty = Some(ours);
                theirs
            }
        });
    }

    let (parent, child) = Channel::pair()?;
    // cgroupfs: stage 1 joins the cgroups itself (see cgroup::SelfJoin); systemd places it.
    let self_join = match &cleanup.cgroup {
        Some(cg) => cg.self_join()?,
        None => None,
    };
    let (forked, in_v2) = match &self_join {
        Some(j) => crate::process::clone::fork_maybe_into(j.v2_dir.as_ref())?,
        None => (crate::process::fds::fork()?, false),
    };
    *plan.cgroup_join.borrow_mut() = self_join;
    match forked {
        ForkResult::Child => {
            drop(parent);
            crate::process::init::stage1(&plan, &child)
        }
        ForkResult::Parent { child: stage1 } => {
            drop(child);
            cleanup.stage1 = Some(stage1);
            match plan.cgroup_join.take() {
                Some(j) if !in_v2 => j.join_v2_from_parent(stage1.as_raw())?,
                Some(_) => {}
                None => {
                    if let Some(cg) = &cleanup.cgroup {
                        cg.add_task(stage1.as_raw())?;
                    }
                }
            }
            let hooks = HookCtx { spec, id: a.id, bundle: &bundle.dir };
            let init = drive_children(&plan, &parent, stage1, &mut cleanup, &hooks).map_err(|e| e.context("create"))?;
            let pid_start =
                super::proc_stat(init.as_raw()).map(|(_, t)| t).ok_or_else(|| Error::new("container init exited during create"))?;
            let own_pid_ns = plan.ns.unshare.contains(nix::sched::CloneFlags::CLONE_NEWPID);
            state.pid = init.as_raw();
            state.pid_start = pid_start;
            state.own_pid_ns = own_pid_ns;
            state.created = crate::timefmt::rfc3339_nano(std::time::SystemTime::now());
            if let Some(cg) = &cleanup.cgroup {
                // The systemd driver makes its cgroupfs directories when the unit starts.
                state.cgroup_created = cg.created();
            }
            save_state(&dir, &state)?;
            if let Some(p) = a.pid_file {
                write_pid_file(p, init.as_raw())?;
            }
            cleanup.disarm();
            Ok(Created { state, tty, warnings })
        }
    }
}

/// The parent's side of the protocol table in [`crate::process::sync`].
/// What the parent needs to run prestart and createRuntime hooks.
struct HookCtx<'a> {
    spec: &'a oci_spec::runtime::Spec,
    id: &'a str,
    bundle: &'a Path,
}

impl HookCtx<'_> {
    /// The OCI state the create-time hooks (status `created`, see crate::hooks) and the
    /// seccomp agent (`creating`) get.
    fn state(&self, pid: Pid, status: &str) -> String {
        let annotations = self.spec.annotations().clone().unwrap_or_default().into_iter().collect();
        crate::hooks::HookState {
            oci_version: crate::config::OCI_VERSION,
            id: self.id,
            status,
            pid: Some(pid.as_raw()),
            bundle: self.bundle,
            annotations: &annotations,
        }
        .json()
    }
}

fn drive_children(plan: &InitPlan, chan: &Channel, stage1: Pid, cleanup: &mut Cleanup, hooks: &HookCtx) -> Result<Pid> {
    if cleanup.cgroup.is_none() && !plan.ns.new_user && !nix::unistd::geteuid().is_root() {
        bail!("linux.namespaces: a rootless container needs a new user namespace (see `capsa spec --rootless`)");
    }
    chan.send(&Msg::Go)?;
    let mut init = None;
    loop {
        match chan.recv()? {
            Some(Msg::MapIds) => {
                crate::namespaces::write_id_maps(stage1.as_raw(), &plan.ns.uid_map, &plan.ns.gid_map)?;
                chan.send(&Msg::IdsMapped)?;
            }
            Some(Msg::InitPid(pid)) => {
                log::debug!("create {}: init forked, pid {pid}", hooks.id);
                let pid = Pid::from_raw(pid);
                init = Some(pid);
                cleanup.init = Some(pid);
                waitpid(stage1, None).ctx("wait for stage 1")?;
                cleanup.stage1 = None;
                crate::netdev::move_into(&plan.net_devices, pid.as_raw())?;
                chan.send(&Msg::Go)?;
            }
            Some(Msg::Hooks) => {
                let pid = init.ok_or_else(|| Error::new("sync: Hooks before InitPid"))?;
                let state = hooks.state(pid, "created");
                log::debug!("create {}: rootfs ready, running prestart and createRuntime hooks", hooks.id);
                use crate::process::plan::hooks_of;
                // prestart is deprecated but still honoured, before createRuntime.
                crate::hooks::run("prestart", &hooks_of(hooks.spec, |h| h.prestart()), &state)?;
                crate::hooks::run("createRuntime", &hooks_of(hooks.spec, |h| h.create_runtime()), &state)?;
                chan.send(&Msg::HooksDone(state))?;
            }
            Some(Msg::NotifyFd) => {
                let pid = init.ok_or_else(|| Error::new("sync: NotifyFd before InitPid"))?;
                let fd = crate::tty::recv_fd(chan.as_fd())?;
                let listener = plan.seccomp.as_ref().and_then(|s| s.listener.as_ref());
                let listener = listener.ok_or_else(|| Error::new("sync: NotifyFd without a listener"))?;
                let state = hooks.state(pid, "creating");
                crate::seccomp::send_to_agent(listener, std::os::fd::AsFd::as_fd(&fd), pid.as_raw(), &state)?;
            }
            Some(Msg::Ready) => {
                log::debug!("create {}: init ready, waiting for start", hooks.id);
                return init.ok_or_else(|| Error::new("sync: Ready before InitPid"));
            }
            Some(Msg::Error(e)) => return Err(Error::new(e)),
            Some(m) => bail!("sync: unexpected message {m:?}"),
            None => return Err(died_during_setup(cleanup.init.take().or(init))),
        }
    }
}

/// Says how init died when it vanished without a message (it is our child by then, as we
/// are a subreaper and stage 1 has exited).
fn died_during_setup(init: Option<Pid>) -> Error {
    use nix::sys::wait::WaitStatus;
    match init.map(|p| waitpid(p, None)) {
        Some(Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _))) => {
            Error::new("container init was killed (SIGKILL) during setup: out of memory? check linux.resources.memory.limit")
        }
        Some(Ok(WaitStatus::Signaled(_, sig, _))) => Error::new(format!("container init was killed by {sig} during setup")),
        Some(Ok(WaitStatus::Exited(_, code))) => Error::new(format!("container init exited with {code} during setup")),
        _ => Error::new("container init exited before it was ready"),
    }
}

/// Written atomically: containerd reads the pid as soon as the file exists.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = std::path::absolute(path).with_ctx(|| format!("--pid-file {}", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("pid")));
    std::fs::write(&tmp, pid.to_string()).with_ctx(|| format!("--pid-file {}", path.display()))?;
    std::fs::rename(&tmp, &path).with_ctx(|| format!("--pid-file {}", path.display()))?;
    Ok(())
}

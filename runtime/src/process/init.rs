//! Code that runs in the forked children. capsa is single-threaded, so after fork the
//! child may allocate; still, everything that parses or decides was done in the parent
//! ([`super::plan`]) and this file is mostly a list of system calls in the right order.
//!
//! Children never return into the CLI: they report failure as `Msg::Error` over the
//! sync channel and leave with `_exit`.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::unistd::{setresgid, setresuid, ForkResult, Gid, Uid};

use super::plan::{InitPlan, ProcessPlan};
use super::sync::{Channel, Msg};
use crate::error::{Context, Error, Result};

pub(super) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process without running the parent's atexit handlers or
    // flushing stdio buffers it shares with us.
    unsafe { libc::_exit(code) }
}

pub(super) fn fail(chan: &Channel, e: Error) -> ! {
    let _ = chan.send(&Msg::Error(e.to_string()));
    exit_now(1)
}

/// Stage 1: joins and creates namespaces, forks init, reports init's pid, exits.
pub fn stage1(plan: &InitPlan, chan: &Channel) -> ! {
    super::fds::keep_only(&plan.fds(chan), plan.preserve_fds);
    match stage1_inner(plan, chan) {
        Ok(()) => exit_now(0),
        Err(e) => fail(chan, e),
    }
}

fn stage1_inner(plan: &InitPlan, chan: &Channel) -> Result<()> {
    // Joined first thing; a failure is reported after Go, when the parent listens.
    let joined = plan.cgroup_join.take().map(|j| j.join_v1()).transpose();
    chan.expect(&Msg::Go)?;
    joined?;
    for j in &plan.ns.join {
        setns(j.fd.as_fd(), j.flag).with_ctx(|| format!("linux.namespaces: join {}", j.path.display()))?;
    }
    if plan.ns.new_user {
        unshare(CloneFlags::CLONE_NEWUSER).ctx("linux.namespaces: create user namespace")?;
        chan.send(&Msg::MapIds)?;
        chan.expect(&Msg::IdsMapped)?;
    }
    if plan.ns.new_user || plan.ns.joins_user {
        become_userns_root()?;
    }
    unshare(plan.ns.unshare).with_ctx(|| format!("linux.namespaces: unshare {:?}", plan.ns.unshare))?;
    if let Some(offsets) = &plan.ns.time_offsets {
        std::fs::write("/proc/self/timens_offsets", offsets).ctx("linux.timeOffsets")?;
    }
    fork_and_report(chan, || init(plan, chan))
}

/// Forks; the child waits for the parent's `Go`, then runs `child` (which only returns on
/// failure, reported to the parent); this process reports the child's pid.
pub(super) fn fork_and_report(chan: &Channel, child: impl FnOnce() -> Result<std::convert::Infallible>) -> Result<()> {
    // SAFETY: this process is a child of single-threaded capsa (the library checked its
    // thread count before the first fork; /proc/self may not even be ours here).
    match unsafe { nix::unistd::fork() }.ctx("fork")? {
        ForkResult::Child => {
            // Until it execs, this process is capsa inside the container: processes there
            // (an exec, a hook) must not reach its memory or fds through /proc/PID.
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
            // Wait until the parent has our pid: otherwise our first message could reach
            // it before stage 1's InitPid.
            let e = match chan.expect(&Msg::Go).and_then(|()| child()) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            fail(chan, e)
        }
        ForkResult::Parent { child } => chan.send(&Msg::InitPid(child.as_raw())),
    }
}

/// Root of the user namespace just joined or created (container uid/gid 0 must be mapped).
pub(super) fn become_userns_root() -> Result<()> {
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).ctx("user namespace: setresgid(0)")?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).ctx("user namespace: setresuid(0)")?;
    Ok(())
}

/// Init: becomes the container. On success it execs and never returns.
fn init(plan: &InitPlan, chan: &Channel) -> Result<std::convert::Infallible> {
    let p = &plan.process;
    if let Some(cpus) = &p.sched.affinity_initial {
        crate::scheduling::SchedPlan::set_affinity("process.execCPUAffinity.initial", cpus)?;
    }
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).with_ctx(|| format!("process.oomScoreAdj {adj}"))?;
    }
    nix::unistd::setsid().ctx("setsid")?;
    if let Some(name) = &plan.new_keyring {
        join_session_keyring(name)?;
    }

    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let root = crate::rootfs::prepare(&plan.rootfs).ctx("rootfs")?;
    let mut hook_state = String::new();
    if plan.wants_hooks || !plan.start_container_hooks.is_empty() {
        chan.send(&Msg::Hooks)?;
        hook_state = match chan.recv()? {
            Some(Msg::HooksDone(s)) => with_own_pid(&s),
            Some(Msg::Error(e)) => return Err(Error::new(e)),
            other => return Err(Error::new(format!("sync: expected HooksDone, got {other:?}"))),
        };
        crate::hooks::run_in("createContainer", &plan.create_container_hooks, &hook_state, Some(&plan.rootfs.rootfs))?;
    }
    crate::rootfs::enter(&plan.rootfs, root).ctx("rootfs")?;
    if p.terminal {
        let sock = plan.console_socket.as_ref().ok_or_else(|| Error::new("process.terminal: no console socket"))?;
        crate::tty::setup_console(sock.as_fd(), p.console_size, true)?;
    }
    if let Some(h) = &plan.hostname {
        nix::unistd::sethostname(h).with_ctx(|| format!("hostname {h:?}"))?;
    }
    if let Some(d) = &plan.domainname {
        set_domainname(d).with_ctx(|| format!("domainname {d:?}"))?;
    }
    crate::rootfs::finalize(&plan.rootfs)?;

    let (exe, env) = become_process(p, plan.seccomp.as_ref(), chan, plan.preserve_fds)?;
    if let Some(sc) = plan.seccomp.as_ref().filter(|_| p.no_new_privileges) {
        load_seccomp(sc, chan)?;
    }

    // From here on only write, read and execve: nothing a seccomp profile could forbid
    // without forbidding the container's own program.
    chan.send(&Msg::Ready)?;
    if let Some(f) = &plan.fifo {
        let mut b = [0u8; 1];
        nix::unistd::read(f, &mut b).ctx("wait for start on exec fifo")?;
    }
    if !plan.start_container_hooks.is_empty() {
        // After `start` nobody reads our sync channel: a failing hook goes to stderr.
        if let Err(e) = crate::hooks::run("startContainer", &plan.start_container_hooks, &hook_state) {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("capsa: {e}\n").as_bytes());
            exit_now(1);
        }
    }
    let Err(e) = nix::unistd::execve(&exe, &p.args, &env);
    Err(Error::from(e).context(format!("exec {:?}", p.args[0])))
}

/// Hooks run by init see the pid as the container sees it (runc does the same).
fn with_own_pid(state: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(state) {
        Ok(mut v) => {
            v["pid"] = serde_json::Value::from(std::process::id());
            v.to_string()
        }
        Err(_) => state.to_string(),
    }
}

/// runc sets HOME from the container's /etc/passwd (or `/`) when the config does not.
/// The container's /etc/passwd is read inside its root, bounded and only if it is a
/// regular file (see [`crate::user`]).
pub(super) fn with_home(env: &[CString], uid: u32) -> Result<Vec<CString>> {
    if env.iter().any(|e| e.as_bytes().starts_with(b"HOME=")) {
        return Ok(env.to_vec());
    }
    let root = capsa_sys::Root::open(Path::new("/")).ctx("open /")?;
    let passwd = crate::user::read_db(&root, "/etc/passwd")?.unwrap_or_default();
    let home = crate::user::parse_passwd(&passwd)
        .into_iter()
        .find(|e| e.uid == uid)
        .map(|e| e.home)
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let mut out = env.to_vec();
    if let Ok(c) = CString::new(format!("HOME={home}")) {
        out.push(c);
    }
    Ok(out)
}

/// What init and exec share, from rlimits to the step before a late seccomp load: the
/// process's scheduling, privileges, user, cwd, fds and signals. Returns the executable
/// and the environment to execve.
pub(super) fn become_process(
    p: &ProcessPlan,
    seccomp: Option<&crate::seccomp::SeccompPlan>,
    chan: &Channel,
    preserve_fds: i32,
) -> Result<(CString, Vec<CString>)> {
    crate::rlimits::apply(&p.rlimits)?;
    p.sched.apply()?;
    if let Some(sc) = seccomp.filter(|_| !p.no_new_privileges) {
        // Without no_new_privs loading needs CAP_SYS_ADMIN, which the user switch drops.
        load_seccomp(sc, chan)?;
    }
    if p.no_new_privileges {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(Error::from(std::io::Error::last_os_error()).context("process.noNewPrivileges"));
        }
    }
    fix_stdio_permissions(p.uid);
    // Try the cwd as root first (it may be unreadable to the user), again after the
    // user switch if that failed, as runc does.
    let early_cwd = nix::unistd::chdir(&p.cwd).is_ok();
    switch_user(p)?;
    if !early_cwd {
        nix::unistd::chdir(&p.cwd).with_ctx(|| format!("process.cwd {:?}", p.cwd))?;
    }
    verify_cwd(&p.cwd)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(p.umask.unwrap_or(0o022)));

    let exe = find_executable(&p.args[0], &p.path_var)?;
    let env = with_home(&p.env, p.uid)?;
    close_fds_on_exec(preserve_fds)?;
    reset_signals();
    if let Some(cpus) = &p.sched.affinity_final {
        crate::scheduling::SchedPlan::set_affinity("process.execCPUAffinity.final", cpus)?;
    }
    crate::scheduling::lsm_on_exec(p.apparmor_profile.as_deref(), p.selinux_label.as_deref())?;
    Ok((exe, env))
}

/// runc's fixStdioPermissions: stdio belongs to the process user, so that a non-root
/// process can reopen `/dev/stdout` (nginx does). Decided by fd, never by path: `/dev/null`
/// (char 1:3) is never touched, and neither is a file outside the container (a log file the
/// caller redirected to, a host fifo): only anonymous pipes and sockets, and files whose
/// mount the container can see (its terminal). Failures are ignored, as in runc.
fn fix_stdio_permissions(uid: u32) {
    const PIPEFS_MAGIC: i64 = 0x5049_5045;
    const SOCKFS_MAGIC: i64 = 0x534f_434b;
    let mut visible: Option<Vec<u32>> = None;
    for fd in 0..=2 {
        // SAFETY: fds 0-2 are ours for the duration of this call.
        let f = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let Ok(st) = nix::sys::stat::fstat(f) else { continue };
        let kind = capsa_sys::root::kind(&st);
        if st.st_uid == uid || (kind == nix::sys::stat::SFlag::S_IFCHR && st.st_rdev == nix::sys::stat::makedev(1, 3)) {
            continue;
        }
        let fs = nix::sys::statfs::fstatfs(f).map(|s| s.filesystem_type().0).unwrap_or(0);
        let anonymous = fs == PIPEFS_MAGIC || fs == SOCKFS_MAGIC;
        if !anonymous {
            let mounts = visible
                .get_or_insert_with(|| capsa_sys::mountinfo::read_self().map(|m| m.iter().map(|m| m.id).collect()).unwrap_or_default());
            if !mount_id(f).is_some_and(|id| mounts.contains(&id)) {
                continue;
            }
        }
        // Only the owner, as runc: the group may be the mount's choice (tty).
        let _ = nix::unistd::fchown(f, Some(Uid::from_raw(uid)), None);
    }
}

/// The id of the mount an fd is on (statx STATX_MNT_ID).
fn mount_id(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY: statx is plain data, zeroed then filled in by the kernel.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx with AT_EMPTY_PATH reads an empty path and writes one statx struct.
    let r = unsafe { libc::statx(fd.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_MNT_ID, &mut stx) };
    (r == 0 && stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id as u32)
}

/// Loads the filter; a NOTIFY listener fd goes to the parent, which hands it to the agent.
pub(super) fn load_seccomp(sc: &crate::seccomp::SeccompPlan, chan: &Channel) -> Result<()> {
    if let Some(fd) = crate::seccomp::load(sc)? {
        chan.send(&Msg::NotifyFd)?;
        crate::tty::send_fd(chan.as_fd(), "seccomp", fd.as_fd())?;
    }
    Ok(())
}

fn join_session_keyring(name: &str) -> Result<()> {
    let c = CString::new(name).map_err(|_| Error::new("keyring name contains NUL"))?;
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl reads the NUL-terminated name for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, c.as_ptr()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // Kernels without keyrings: carry on, as runc does.
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(Error::from(e).context(format!("join session keyring {name}")));
        }
    }
    Ok(())
}

fn set_domainname(d: &str) -> Result<()> {
    // SAFETY: setdomainname reads `len` bytes from a live buffer.
    let r = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
    if r != 0 {
        return Err(Error::from(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Drops the bounding set, switches uid/gid keeping capabilities, then sets them.
pub(super) fn switch_user(p: &ProcessPlan) -> Result<()> {
    if let Some(c) = &p.caps {
        c.drop_bounding()?;
    }
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let groups: Vec<Gid> = p.additional_gids.iter().map(|g| Gid::from_raw(*g)).collect();
    // A rootless container's user namespace denies setgroups; only extra groups need it.
    if !(p.rootless && groups.is_empty()) {
        nix::unistd::setgroups(&groups).ctx("process.user.additionalGids: setgroups")?;
    }
    let g = Gid::from_raw(p.gid);
    setresgid(g, g, g).with_ctx(|| format!("process.user.gid {}", p.gid))?;
    let u = Uid::from_raw(p.uid);
    setresuid(u, u, u).with_ctx(|| format!("process.user.uid {}", p.uid))?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    if let Some(c) = &p.caps {
        c.apply()?;
    }
    Ok(())
}

/// CVE-2024-21626: a cwd reached through a leaked fd (e.g. `/proc/self/fd/7`) lies outside
/// the container's root; getcwd then fails or starts with "(unreachable)".
pub(super) fn verify_cwd(cwd: &Path) -> Result<()> {
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() => Ok(()),
        Ok(p) => Err(Error::new(format!("process.cwd {cwd:?}: resolves to {p:?} outside the container"))),
        Err(e) => Err(Error::from(e).context(format!("process.cwd {cwd:?}: outside the container"))),
    }
}

/// `args[0]` as given when it has a slash, else looked up in the container's PATH.
pub(super) fn find_executable(arg0: &CString, path_var: &str) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let name = arg0.to_bytes();
    let is_exec = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let shown = String::from_utf8_lossy(name);
    if name.contains(&b'/') {
        let p = Path::new(std::ffi::OsStr::from_bytes(name));
        if !is_exec(p) {
            let why = if p.exists() { "permission denied" } else { "no such file or directory" };
            return Err(Error::new(format!("exec: \"{shown}\": stat {shown}: {why}")));
        }
        return Ok(arg0.clone());
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand: PathBuf = Path::new(dir).join(std::ffi::OsStr::from_bytes(name));
        if is_exec(&cand) {
            return CString::new(cand.as_os_str().as_bytes()).map_err(|_| Error::new("path contains NUL"));
        }
    }
    Err(Error::new(format!("exec: \"{shown}\": executable file not found in $PATH")))
}

/// Everything above stdio and the preserved fds is closed at exec (CVE-2024-21626: no
/// host fd may reach the container). The preserved fds are made inheritable.
pub(super) fn close_fds_on_exec(preserve: i32) -> Result<()> {
    let first_closed = 3 + preserve.max(0) as u32;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our own fds.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first_closed, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if r != 0 {
        // Pre-5.11 kernels: walk /proc/self/fd.
        for fd in std::fs::read_dir("/proc/self/fd").ctx("list fds")?.flatten() {
            if let Some(n) = fd.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if n >= first_closed as i32 {
                    // SAFETY: sets FD_CLOEXEC on an fd number; harmless if it was just closed.
                    unsafe { libc::fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC) };
                }
            }
        }
    }
    for fd in 3..first_closed as i32 {
        // SAFETY: clears FD_CLOEXEC on an fd the caller asked us to pass on.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    Ok(())
}

/// The user's process starts with no blocked signals and default dispositions (Rust
/// ignores SIGPIPE, and ignored signals survive exec).
pub(super) fn reset_signals() {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL has no handler code to be unsafe about.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

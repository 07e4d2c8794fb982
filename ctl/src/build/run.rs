//! A build step's scratch directory and its RUN container.
//!
//! ```text
//! <store>/tmp/build-<random>/lock      flock: held by the build for its whole run
//! <store>/tmp/build-<random>/step/     upper, work, rootfs (the overlay of the parent
//!                                      layers), config.json, /etc files: one step at a time
//! <store>/tmp/build-<random>/from-N/   a COPY --from source, mounted for that step
//! <store>/tmp/build-<random>/container the id of the RUN container while one runs
//! ```
//!
//! A RUN is a container made by the same code as `capsactl run`'s (a `Record` in memory
//! through `container::spec::build`: docker's capabilities, seccomp profile, masked paths,
//! cgroup below /capsa) and run in the foreground by the capsa library, as `capsa run`
//! does: create, start, wait (signals forwarded), delete. No monitor, no database row.
//! A build killed half-way leaves a directory whose lock is free: the next build removes
//! its container, mounts and files ([`Scratch::clean_stale`]).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use capsa_image::digest::Digest;
use capsa_image::Store;
use capsa_sys::{Follow, Root};

use crate::cli::{fail, Failure, Result};
use crate::container::config::{Config, HostConfig, LogConfig, RestartPolicy, Stored};
use crate::container::{self, Record};

/// The build's scratch directory (removed when dropped).
pub struct Scratch {
    pub dir: PathBuf,
    _lock: File,
    state_root: PathBuf,
}

impl Scratch {
    pub fn new(store: &Store, state_root: &Path) -> Result<Scratch> {
        Self::clean_stale(store, state_root);
        // Made under another name and renamed once locked: another build's clean_stale
        // must never find a `build-*` whose lock is not yet taken (and remove it).
        let name = format!("build-{}", &container::random_id()[..16]);
        let (new, dir) = (store.tmp_dir().join(format!("new-{name}")), store.tmp_dir().join(&name));
        std::fs::create_dir_all(&new).map_err(|e| fail(format!("create {}: {e}", new.display())))?;
        let locked = File::create(new.join("lock")).and_then(|lock| {
            container::flock(&lock, libc::LOCK_EX | libc::LOCK_NB)?;
            std::fs::rename(&new, &dir)?;
            Ok(lock)
        });
        match locked {
            Ok(lock) => Ok(Scratch { dir, _lock: lock, state_root: state_root.to_path_buf() }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&new);
                Err(fail(format!("make the build's scratch directory {}: {e}", dir.display())))
            }
        }
    }

    /// A fresh directory for a step (or a --from source): anything of a previous one is
    /// unmounted and removed first.
    pub fn fresh(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.join(name);
        remove_dir(&d)?;
        std::fs::create_dir_all(&d).map_err(|e| fail(format!("create {}: {e}", d.display())))?;
        Ok(d)
    }

    /// Scratch directories of builds that were killed: their RUN container deleted, their
    /// mounts and files removed (by each build, and by the prunes before the store's gc,
    /// which leaves `tmp/build-*` alone).
    pub fn clean_stale(store: &Store, state_root: &Path) {
        let Ok(rd) = std::fs::read_dir(store.tmp_dir()) else { return };
        for e in rd.flatten() {
            let d = e.path();
            if !e.file_name().to_string_lossy().starts_with("build-") {
                continue;
            }
            let Ok(lock) = File::open(d.join("lock")) else { continue };
            if container::flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_err() {
                continue;
            }
            if let Ok(id) = std::fs::read_to_string(d.join("container")) {
                let id = id.trim();
                let _ = capsa::container::delete(state_root, id, true);
                let _ = capsa_cgroups::remove_if_unused(container::spec::DEFAULT_CGROUP_PARENT);
                if id.len() >= 12 {
                    let _ = container::network::detach(store, &record(id, &RunSpec::default()));
                    let _ = std::fs::remove_dir_all(container::dir(store, id));
                }
            }
            let _ = remove_dir(&d);
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(id) = std::fs::read_to_string(self.dir.join("container")) {
            let _ = capsa::container::delete(&self.state_root, id.trim(), true);
        }
        let _ = remove_dir(&self.dir);
    }
}

/// Unmounts every `rootfs` directly under `d` and `d/rootfs`, then removes `d`.
pub fn remove_dir(d: &Path) -> Result<()> {
    if !d.exists() {
        return Ok(());
    }
    capsa_image::snapshot::unmount_rootfs(d)?;
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                capsa_image::snapshot::unmount_rootfs(&e.path())?;
            }
        }
    }
    capsa_image::layer::remove_tree(d).map_err(|e| fail(format!("remove {}: {e}", d.display())))
}

/// What a RUN runs and how.
#[derive(Default)]
pub struct RunSpec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
    /// A `--network` mode of run: none, host, bridge or a network's name.
    pub network: String,
    /// The command's output goes to `<step>/output.log`, not to ours.
    pub quiet: bool,
    /// As `run --cgroup-parent` (empty: /capsa).
    pub cgroup_parent: String,
    /// RUN --mount's binds and tmpfs (see `mounts.rs`).
    pub mounts: Vec<crate::container::config::MountPoint>,
    /// RUN --security=insecure: as `run --privileged`.
    pub privileged: bool,
    /// `env` holds secrets (RUN --mount=type=secret,env=): the bundle, whose config.json
    /// has them, is on a tmpfs of its own, never on the disk.
    pub private_bundle: bool,
}

/// Runs `r` on the overlay of `chain` in `step` (made by [`Scratch::fresh`]); returns the
/// exit code. The rootfs is unmounted afterwards, and the mount points the runtime made
/// that the image did not have (/proc, /etc/hosts, ...) are removed from the upper dir,
/// so that only what the command wrote remains.
pub fn run(store: &Store, state_root: &Path, scratch: &Scratch, step: &Path, chain: &[Digest], r: &RunSpec) -> Result<i32> {
    let rootfs = store.snapshots.mount_rootfs(chain, step)?;
    let res = run_mounted(store, state_root, scratch, step, &rootfs.path, r);
    capsa_image::snapshot::unmount_rootfs(step)?;
    let (code, stubs, parents) = res?;
    let upper = Root::open(&step.join("upper")).map_err(|e| fail(format!("{}/upper: {e}", step.display())))?;
    for s in stubs.iter().rev() {
        remove_stub(&upper, s);
    }
    // A directory the stubs were made in (/etc for /etc/hosts) was copied up: if nothing
    // else changed in it, it goes too.
    for (p, meta) in parents.iter().rev() {
        remove_copied_up(&upper, p, *meta);
    }
    Ok(code)
}

/// (mode, uid, gid) of a directory.
type DirMeta = (u32, u32, u32);

#[allow(clippy::type_complexity)]
fn run_mounted(
    store: &Store,
    state_root: &Path,
    scratch: &Scratch,
    step: &Path,
    rootfs: &Path,
    r: &RunSpec,
) -> Result<(i32, Vec<PathBuf>, Vec<(PathBuf, DirMeta)>)> {
    let id = container::random_id();
    let rec = record(&id, r);
    std::fs::write(scratch.dir.join("container"), &id)?;
    // The network as `run` makes it (a namespace of its own for none and bridge); its
    // state is kept in the container's directory, locked like a container's so that no
    // other command takes it for a stray.
    let cdir = container::dir(store, &id);
    std::fs::create_dir_all(&cdir).map_err(|e| fail(format!("create {}: {e}", cdir.display())))?;
    let lock = container::Lock::try_take(&cdir).ok().flatten().ok_or_else(|| fail(format!("lock {}", cdir.display())));
    let res = lock.and_then(|_lock| {
        let r = container::network::attach(store, &rec).and_then(|()| run_attached(store, state_root, step, rootfs, r, &rec));
        let _ = container::network::detach(store, &rec);
        r
    });
    let _ = std::fs::remove_dir_all(&cdir);
    let _ = std::fs::remove_file(scratch.dir.join("container"));
    res
}

#[allow(clippy::type_complexity)]
fn run_attached(
    store: &Store,
    state_root: &Path,
    step: &Path,
    rootfs: &Path,
    r: &RunSpec,
    rec: &Record,
) -> Result<(i32, Vec<PathBuf>, Vec<(PathBuf, DirMeta)>)> {
    let id = &rec.id;
    let spec = container::spec::build(store, rec, rootfs, step)?;
    // The mount points missing from the image (and their missing parents).
    let root = Root::open(rootfs).map_err(|e| fail(format!("rootfs {}: {e}", rootfs.display())))?;
    let mut stubs: Vec<PathBuf> = Vec::new();
    let mut parents: Vec<(PathBuf, DirMeta)> = Vec::new();
    for m in spec["mounts"].as_array().into_iter().flatten() {
        let Some(dest) = m["destination"].as_str() else { continue };
        let dest = real_dest(&root, dest);
        let mut p = PathBuf::new();
        for c in dest.components() {
            p.push(c);
            if stubs.contains(&p) || parents.iter().any(|(x, _)| *x == p) {
                continue;
            }
            match root.open_path(&p, Follow::NotLast) {
                Err(_) => stubs.push(p.clone()),
                Ok(fd) => {
                    if let Ok(st) = nix::sys::stat::fstat(&fd) {
                        if crate::fstree::kind(&st) == nix::sys::stat::SFlag::S_IFDIR && p != dest {
                            parents.push((p.clone(), (st.st_mode & 0o7777, st.st_uid, st.st_gid)));
                        }
                    }
                }
            }
        }
    }
    stubs.sort_by_key(|p| p.components().count());
    parents.sort_by_key(|(p, _)| p.components().count());
    let text = serde_json::to_vec(&spec).map_err(|e| fail(format!("encode config.json: {e}")))?;
    let bundle = if r.private_bundle { super::mounts::private_tmpfs(&step.join("bundle")).map_err(fail)? } else { step.to_path_buf() };
    std::fs::write(bundle.join("config.json"), text)?;
    let log = if r.quiet {
        Some(File::create(step.join("output.log")).map_err(|e| fail(format!("{}/output.log: {e}", step.display())))?)
    } else {
        None
    };
    let code = foreground(state_root, id, &bundle, log.as_ref());
    if r.private_bundle {
        // Whatever the RUN's end: the secrets' tmpfs goes now (a failed step's dir is not
        // walked again for mounts this deep).
        remove_dir(&step.join("bundle"))?;
    }
    let code = code?;
    Ok((code, stubs, parents))
}

/// A mount's destination as the runtime makes it, relative to the rootfs: the image's
/// symlinks on the way followed inside the rootfs (as the runtime follows them, also to
/// places that do not exist yet, which it makes), the rest as written. The mount points
/// made for it are found there, not at the path as written.
fn real_dest(root: &Root, dest: &str) -> PathBuf {
    use nix::fcntl::OFlag;
    use std::collections::VecDeque;
    use std::path::Component;
    let mut todo: VecDeque<std::ffi::OsString> = VecDeque::new();
    let push_front = |todo: &mut VecDeque<std::ffi::OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => todo.push_front(n.to_os_string()),
                Component::ParentDir => todo.push_front("..".into()),
                _ => {}
            }
        }
    };
    push_front(&mut todo, Path::new(dest));
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let looked = root.open_at(&cur, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::Never).ok().and_then(|d| {
            let st = crate::fstree::lstat_at(std::os::fd::AsFd::as_fd(&d), &c).ok()?;
            let link = (crate::fstree::kind(&st) == nix::sys::stat::SFlag::S_IFLNK)
                .then(|| crate::fstree::read_link_at(std::os::fd::AsFd::as_fd(&d), &c).ok())
                .flatten();
            Some(link)
        });
        match looked {
            // A symlink: its target, from the root if absolute, then what was left.
            Some(Some(target)) if links < 40 => {
                links += 1;
                let t = PathBuf::from(target);
                if t.is_absolute() {
                    cur = PathBuf::new();
                }
                push_front(&mut todo, &t);
            }
            // There (or a loop of links, left as it is): on to the next component.
            Some(_) => cur.push(&c),
            // Missing: made as written from here.
            None => {
                cur.push(&c);
                cur.extend(todo.drain(..).filter(|x| x != ".."));
            }
        }
    }
    cur
}

/// The container's record, in memory only: what `spec::build` reads.
fn record(id: &str, r: &RunSpec) -> Record {
    let config = Config {
        hostname: id[..12].to_string(),
        user: r.user.clone(),
        env: r.env.clone(),
        cmd: Some(r.argv.clone()),
        working_dir: r.workdir.clone(),
        ..Default::default()
    };
    let host = HostConfig {
        log_config: LogConfig { typ: "none".into(), config: Default::default() },
        network_mode: r.network.clone(),
        restart_policy: RestartPolicy { name: "no".into(), maximum_retry_count: 0 },
        shm_size: 64 << 20,
        cgroup_parent: r.cgroup_parent.clone(),
        privileged: r.privileged,
        ..Default::default()
    };
    Record {
        id: id.to_string(),
        name: String::new(),
        image: String::new(),
        top_chain: None,
        state: "running".into(),
        auto_remove: true,
        created_at: String::new(),
        pid: 0,
        exit_code: 0,
        started_at: String::new(),
        finished_at: String::new(),
        oom_killed: false,
        restart_count: 0,
        user_stopped: false,
        error: String::new(),
        stored: Stored { config, host, mounts: r.mounts.clone(), networks: Vec::new() },
    }
}

/// create + start + wait + delete through the capsa library, in the foreground. The
/// container's stdin is /dev/null; its stdout and stderr are the log, or our stderr (the
/// build's progress, as BuildKit shows a RUN's output; stdout carries only the image id).
/// SIGINT, SIGTERM and SIGHUP cancel the step (the container is killed: a shell as PID 1
/// would ignore them); other signals are forwarded to it.
fn foreground(state_root: &Path, id: &str, bundle: &Path, log: Option<&File>) -> Result<i32> {
    use std::os::fd::AsFd;
    let to = match log {
        Some(f) => f.as_fd().try_clone_to_owned(),
        None => std::io::stderr().as_fd().try_clone_to_owned(),
    }
    .map_err(|e| fail(format!("dup the RUN's output: {e}")))?;
    let out = std::io::stdout().as_fd().try_clone_to_owned().map_err(|e| fail(format!("dup stdout: {e}")))?;
    let err = std::io::stderr().as_fd().try_clone_to_owned().map_err(|e| fail(format!("dup stderr: {e}")))?;
    // SAFETY: dup2 of an fd we hold onto fds 1 and 2 (put back below).
    unsafe {
        libc::dup2(to.as_raw_fd(), 1);
        libc::dup2(to.as_raw_fd(), 2);
    }
    let res = foreground_inner(state_root, id, bundle);
    // SAFETY: dup2 of the saved fds back onto 1 and 2.
    unsafe {
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(err.as_raw_fd(), 2);
    }
    res
}

/// The signals that cancel a build.
pub fn cancelling() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal;
    let mut s = nix::sys::signal::SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        s.add(sig);
    }
    s
}

/// The error of a build cancelled by `sig`.
pub fn cancelled(sig: i32) -> Failure {
    let name = nix::sys::signal::Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("a signal");
    Failure { msg: format!("build cancelled ({name})"), code: 128 + sig }
}

fn foreground_inner(state_root: &Path, id: &str, bundle: &Path) -> Result<i32> {
    use capsa::container::{self as rt, CreateArgs};
    use capsa::process::plan::CreateOpts;
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let sigs = rt::foreground::forwarded();
    let mut old = nix::sys::signal::SigSet::empty();
    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&sigs), Some(&mut old))
        .map_err(|e| fail(format!("block signals: {e}")))?;
    // The container's init is our child; we reap it (and what it leaves to us).
    let _reaper = capsa::process::fds::Subreaper::set();
    let res = (|| -> Result<i32> {
        let sfd = SignalFd::with_flags(&sigs, SfdFlags::SFD_CLOEXEC).map_err(|e| fail(format!("signalfd: {e}")))?;
        // Single-threaded for the fork: the network's background socket closes joined.
        capsa_network::nftnl::settle();
        let created = rt::create(CreateArgs {
            root: state_root,
            id,
            bundle,
            pid_file: None,
            console_socket: None,
            hold_tty: false,
            opts: CreateOpts { no_pivot: false, no_new_keyring: false, preserve_fds: 0, listen_fds: 0 },
            systemd_cgroup: false,
            rootless: !nix::unistd::geteuid().is_root(),
        })
        .map_err(|e| container::start::start_failure(e.to_string()))?;
        rt::start(state_root, id).map_err(|e| container::start::start_failure(e.to_string()))?;
        let init = created.state.pid;
        let cancel = cancelling();
        let mut cancelled_by = None;
        loop {
            let info = match sfd.read_signal() {
                Ok(Some(i)) => i,
                Ok(None) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(fail(format!("read signals: {e}"))),
            };
            let sig = info.ssi_signo as i32;
            if sig == libc::SIGCHLD {
                if let Some(code) = reap(init) {
                    return match cancelled_by {
                        Some(s) => Err(cancelled(s)),
                        None => Ok(code),
                    };
                }
                continue;
            }
            let Ok(signal) = nix::sys::signal::Signal::try_from(sig) else { continue };
            let sig = if cancel.contains(signal) {
                cancelled_by.get_or_insert(sig);
                libc::SIGKILL
            } else {
                sig
            };
            // SAFETY: kill with the pid of our child (not yet reaped) and a signal number.
            unsafe { libc::kill(init, sig) };
        }
    })();
    let _ = rt::delete(state_root, id, true);
    let _ = capsa_cgroups::remove_if_unused(container::spec::DEFAULT_CGROUP_PARENT);
    let _ = nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&old), None);
    res
}

/// The exit code of `init` once it has exited. Only init is waited for: the build's
/// stage workers are our children too, and theirs to wait for.
fn reap(init: i32) -> Option<i32> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    match waitpid(nix::unistd::Pid::from_raw(init), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
        Ok(_) => None,
        // Not our child (any more): nothing to wait for.
        Err(_) => Some(255),
    }
}

/// Removes directory `p` from the upper dir if it is empty, not opaque and has the
/// mode and owner it had below (a copy-up, nothing the command did).
fn remove_copied_up(upper: &Root, p: &Path, meta: DirMeta) {
    use nix::fcntl::OFlag;
    let parent = p.parent().unwrap_or(Path::new(""));
    let Some(name) = p.file_name() else { return };
    let Ok(dir) = upper.open_at(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::Never) else { return };
    let d = std::os::fd::AsFd::as_fd(&dir);
    let Ok(st) = crate::fstree::lstat_at(d, name) else { return };
    if crate::fstree::kind(&st) != nix::sys::stat::SFlag::S_IFDIR || (st.st_mode & 0o7777, st.st_uid, st.st_gid) != meta {
        return;
    }
    let Ok(fd) = crate::fstree::open_dir_at(d, name) else { return };
    if crate::fstree::is_opaque(std::os::fd::AsFd::as_fd(&fd)) {
        return;
    }
    let _ = nix::unistd::unlinkat(d, name, nix::unistd::UnlinkatFlags::RemoveDir);
}

/// Removes `p` from the upper dir if it is an empty directory or an empty regular file
/// (a mount point the runtime made), resolving nothing through symlinks.
fn remove_stub(upper: &Root, p: &Path) {
    use nix::fcntl::OFlag;
    let parent = p.parent().unwrap_or(Path::new(""));
    let Some(name) = p.file_name() else { return };
    let Ok(dir) = upper.open_at(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::Never) else { return };
    let Ok(st) = crate::fstree::lstat_at(std::os::fd::AsFd::as_fd(&dir), name) else { return };
    let d = std::os::fd::AsFd::as_fd(&dir);
    match crate::fstree::kind(&st) {
        nix::sys::stat::SFlag::S_IFDIR => {
            let _ = nix::unistd::unlinkat(d, name, nix::unistd::UnlinkatFlags::RemoveDir);
        }
        nix::sys::stat::SFlag::S_IFREG if st.st_size == 0 => {
            let _ = nix::unistd::unlinkat(d, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        _ => {}
    }
}

//! The per-container monitor: capsactl has no daemon, so each running container has one
//! small process of its own (podman's conmon, containerd's shim) that is its parent.
//!
//! ```text
//! capsactl run -d ──fork, setsid, exec──▶ capsactl __monitor ID      (the monitor, start)
//!   waits for "started PID"                 mounts, writes the spec, capsa create+start,
//!   prints the id, exits                    records "running", answers, then
//!                                         ──exec──▶ capsactl __watch ...  (steady state,
//!                                                    see watch.rs: stdio, log, socket)
//!                                           on exit ─▶ capsactl __exited ID CODE (records)
//!                                           restart ─▶ capsactl __start ID        (starts)
//! ```
//!
//! The monitor holds the container's lock (see `container::Lock`) from the moment the
//! starting command forks it until it exits, so a free lock means "no monitor": that is
//! how every later command tells a crashed monitor from a live one. `run` without `-d`
//! stays attached: the monitor inherits its stdio and copies the container's output there
//! (and into the log), and answers `exit CODE` on the same socket when it is over.

pub mod client;
pub mod proto;
pub mod watch;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use capsa_image::Store;

use crate::cli::{fail, Cli, Failure, Result};
use crate::container::{self, config::parse_bytes, start, Lock, Record};

/// A started container, as the starting command sees it.
pub struct Spawned {
    /// The socket to the monitor (attached: where `exit CODE` arrives).
    pub chan: OwnedFd,
    pub monitor: std::process::Child,
}

fn clear_cloexec(fd: BorrowedFd<'_>) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()));
}

/// Takes fd number `n` handed to us by the process that started us, after checking that
/// it is open, is not our stdio, and is of `kind`.
fn take_fd(n: RawFd, what: &str, kind: nix::sys::stat::SFlag) -> Result<OwnedFd> {
    if n <= 2 {
        return Err(fail(format!("{what} fd {n}: not a handed-over fd")));
    }
    // SAFETY: fstat of a plain fd number into a zeroed struct we own (EBADF if closed).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(n, &mut st) } < 0 {
        return Err(fail(format!("{what} fd {n}: {}", std::io::Error::last_os_error())));
    }
    if nix::sys::stat::SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) != kind {
        return Err(fail(format!("{what} fd {n}: not a {kind:?}")));
    }
    // SAFETY: the fd is open and was left to us alone by our parent (checked above).
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Starts the monitor of `rec` (its lock, held by the caller, passes to the monitor) and
/// waits until the container runs. `attach`: Some(with_stdin): the monitor takes our
/// stdout and stderr (and stdin) as an attached client's.
pub fn spawn(cli: &Cli, store: &mut Store, rec: &Record, lock: Lock, attach: Option<bool>) -> Result<Spawned> {
    container::set_state(store, &rec.id, "starting")?;
    let (mine, theirs) = proto::pair()?;
    let lock = lock.into_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("capsactl")
        .arg("--root")
        .arg(&store.root)
        .arg("--state-root")
        .arg(&cli.state_root)
        .arg("__monitor")
        .arg(&rec.id)
        .arg(theirs.as_raw_fd().to_string())
        .arg(lock.as_raw_fd().to_string())
        .arg(match attach {
            Some(true) => "attach-in",
            Some(false) => "attach",
            None => "detach",
        });
    if attach.is_none() {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    }
    let keep = [theirs.as_raw_fd(), lock.as_raw_fd()];
    // SAFETY: between fork and exec the child only makes async-signal-safe system calls
    // (setsid, close_range, fcntl) on its own fds.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // The monitor outlives us: it must not keep any fd we inherited (a caller's
            // pipe, or a lock such as `flock FILE capsactl ...`'s, held as long as the
            // container runs). Everything from 3 up closes at exec, but what it is given.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            for fd in keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    start::trace("spawn monitor");
    let child = cmd.spawn().map_err(|e| fail(format!("start the monitor: {e}")))?;
    drop(theirs);
    drop(lock);
    loop {
        match proto::recv(mine.as_fd()) {
            Ok(Some((m, _))) if m.starts_with("note ") => {
                eprintln!("WARNING: {}", &m[5..]);
                continue;
            }
            r => break answer_of(r, mine, child),
        }
    }
}

/// The monitor's answer to a start: `started PID` or `error CODE MESSAGE`.
fn answer_of(r: std::io::Result<Option<(String, Vec<OwnedFd>)>>, mine: OwnedFd, child: std::process::Child) -> Result<Spawned> {
    match r {
        Ok(Some((m, _))) => {
            start::trace("monitor answered");
            if m.starts_with("started ") {
                return Ok(Spawned { chan: mine, monitor: child });
            }
            if let Some(rest) = m.strip_prefix("error ") {
                let (code, msg) = rest.split_once(' ').unwrap_or(("125", rest));
                return Err(Failure { msg: msg.to_string(), code: code.parse().unwrap_or(125) });
            }
            Err(fail(format!("monitor: unexpected answer {m:?}")))
        }
        _ => {
            let mut child = child;
            let st = child.wait();
            Err(Failure { msg: format!("the container's monitor died before the container started ({st:?})"), code: 125 })
        }
    }
}

/// Arguments of `__monitor`: ID CHAN-FD LOCK-FD attach|detach.
#[derive(clap::Args, Debug)]
pub struct MonitorArgs {
    pub id: String,
    pub chan: RawFd,
    pub lock: RawFd,
    pub mode: String,
}

/// `__monitor`: starts the container, answers the starting command, becomes the watcher.
pub fn monitor_main(cli: &Cli, a: &MonitorArgs) -> i32 {
    let fds = take_fd(a.chan, "channel", nix::sys::stat::SFlag::S_IFSOCK)
        .and_then(|c| Ok((c, take_fd(a.lock, "lock", nix::sys::stat::SFlag::S_IFREG)?)));
    let (chan, lock) = match fds {
        Ok(f) => f,
        Err(e) => {
            eprintln!("Error: __monitor: {e}");
            return 125;
        }
    };
    match first_start(cli, a, &chan, lock) {
        Ok(mut w) => {
            start::trace("exec watch");
            // Drop what the start touched: a fresh, small image for the long wait, the
            // capsactl-monitor binary beside capsactl (the helpers it runs are capsactl's);
            // without one, capsactl itself.
            let ctl = std::env::var_os(crate::EXE_ENV).map(std::path::PathBuf::from);
            if let Some(mon) = ctl.as_ref().map(|c| c.with_file_name("capsactl-monitor")).filter(|m| m.is_file()) {
                w.ctl = ctl.clone();
                let _ = Command::new(&mon).arg0("capsactl-monitor").args(w.to_argv()).exec();
                w.ctl = None;
            }
            let err = Command::new("/proc/self/exe").arg0("capsactl").arg("__watch").args(w.to_argv()).exec();
            // exec failed: watch from here.
            let _ = err;
            watch::run(w)
        }
        Err(f) => {
            let msg = format!("error {} {}", f.code, f.msg.replace('\n', " "));
            let _ = proto::send(chan.as_fd(), &msg, &[]);
            1
        }
    }
}

fn dev_null() -> std::io::Result<OwnedFd> {
    Ok(OwnedFd::from(std::fs::File::options().read(true).write(true).open("/dev/null")?))
}

fn dup2(from: &impl AsRawFd, to: RawFd) -> Result<()> {
    // SAFETY: dup2 onto one of our stdio numbers, replacing it on purpose.
    if unsafe { libc::dup2(from.as_raw_fd(), to) } < 0 {
        return Err(fail(format!("dup2: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// Log settings of a container: (path or None for the `none` driver, max-size, max-file).
pub fn log_settings(store: &Store, rec: &Record) -> (Option<std::path::PathBuf>, u64, u32) {
    let lc = &rec.stored.host.log_config;
    if lc.typ == "none" {
        return (None, 0, 1);
    }
    let max_size = lc.config.get("max-size").and_then(|s| parse_bytes(s, "max-size").ok()).unwrap_or(0) as u64;
    let max_file = lc.config.get("max-file").and_then(|s| s.parse().ok()).unwrap_or(1);
    (Some(container::log_path(&container::dir(store, &rec.id), &rec.id)), max_size, max_file)
}

fn first_start(cli: &Cli, a: &MonitorArgs, chan: &OwnedFd, lock: OwnedFd) -> Result<watch::Args> {
    start::trace("monitor: begin");
    let mut store = cli.store()?;
    let rec = container::get(&store, &a.id)?.ok_or_else(|| fail(format!("No such container: {}", a.id)))?;
    let dir = container::dir(&store, &rec.id);
    let attach = a.mode.starts_with("attach");
    let cfg = &rec.stored.config;
    let null = dev_null()?;
    // The starting command's stdio, for an attached run.
    let (cin, cout, cerr) = if attach {
        let stdin = if cfg.open_stdin && a.mode == "attach-in" { std::io::stdin().as_fd().try_clone_to_owned().ok() } else { None };
        (stdin, std::io::stdout().as_fd().try_clone_to_owned().ok(), std::io::stderr().as_fd().try_clone_to_owned().ok())
    } else {
        (None, None, None)
    };
    // The container's stdio: pipes, or /dev/null with a terminal (init opens the pty).
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| fail(format!("pipe: {e}")));
    let (mut out_r, mut err_r, mut in_w) = (None, None, None);
    if cfg.tty {
        for n in 0..3 {
            dup2(&null, n)?;
        }
    } else {
        let (or, ow) = pipe()?;
        let (er, ew) = pipe()?;
        match cfg.open_stdin {
            true => {
                let (ir, iw) = pipe()?;
                dup2(&ir, 0)?;
                in_w = Some(iw);
            }
            false => dup2(&null, 0)?,
        }
        dup2(&ow, 1)?;
        dup2(&ew, 2)?;
        out_r = Some(or);
        err_r = Some(er);
    }
    let listen = proto::listen(&dir.join("ctl.sock")).map_err(|e| fail(format!("monitor socket: {e}")))?;
    let started = start::start(&store, &cli.state_root, &rec);
    // Our copies of the container's ends go: its output ends when it ends.
    for n in 0..3 {
        let _ = dup2(&null, n);
    }
    let started = started?;
    let now = container::now();
    container::update(
        &mut store,
        &rec.id,
        "state = 'running', pid = ?2, started_at = ?3, user_stopped = 0, error = '', exit_code = 0, oom_killed = 0",
        &[&started.pid, &now],
    )?;
    if let Some(n) = &started.note {
        proto::send(chan.as_fd(), &format!("note {}", n.replace('\n', " ")), &[])?;
    }
    proto::send(chan.as_fd(), &format!("started {}", started.pid), &[])?;
    start::trace("monitor: answered");
    let (out, stdin) = match started.master {
        Some(m) => {
            let s = if cfg.open_stdin { crate::fstree::dup(m.as_fd()).ok() } else { None };
            (Some(m), s)
        }
        None => (out_r, in_w),
    };
    let (log, max_size, max_file) = log_settings(&store, &rec);
    drop(store);
    // Handed over across exec by number: no longer ours to close (the watcher owns them).
    let keep = |fd: Option<OwnedFd>| -> Option<RawFd> {
        fd.map(|f| {
            clear_cloexec(f.as_fd());
            f.into_raw_fd()
        })
    };
    let client = if attach { Some(chan.try_clone().map_err(|e| fail(format!("dup: {e}")))?) } else { None };
    Ok(watch::Args {
        id: rec.id.clone(),
        root: cli.store_root(),
        state_root: cli.state_root.clone(),
        dir,
        init: started.pid,
        tty: cfg.tty,
        open_stdin: cfg.open_stdin,
        stdin_once: cfg.stdin_once,
        out: keep(out),
        err: keep(err_r),
        stdin: keep(stdin),
        lock: keep(Some(lock)).unwrap_or(-1),
        listen: keep(Some(listen)).unwrap_or(-1),
        client: keep(client),
        cin: keep(cin),
        cout: keep(cout),
        cerr: keep(cerr),
        log,
        max_size,
        max_file,
        ctl: None,
    })
}

/// Writes a helper's answer to fd 3, the status pipe the monitor gave us (nothing when
/// fd 3 is not a pipe: run by hand, it may be anything).
fn answer(s: &str) {
    use std::io::Write;
    if let Ok(fd) = take_fd(3, "status", nix::sys::stat::SFlag::S_IFIFO) {
        let _ = std::fs::File::from(fd).write_all(s.as_bytes());
    }
}

/// `__exited ID CODE`: the container's init exited with CODE. Records it, cleans up the
/// runtime state and the rootfs mount, removes a `--rm` container, and answers `restart`
/// or `done`.
pub fn exited_main(cli: &Cli, id: &str, code: i32) -> i32 {
    let r = (|| -> Result<&'static str> {
        let mut store = cli.store()?;
        let Some(rec) = container::get(&store, id)? else { return Ok("done") };
        let oom = container::reconcile::runtime_down(&store, &cli.state_root, &rec);
        let restart = !rec.user_stopped && rec.stored.host.restart_policy.restarts(code, rec.restart_count);
        if rec.auto_remove && !restart {
            container::remove::remove_down(&mut store, &cli.state_root, &rec, true)?;
            return Ok("done");
        }
        let now = container::now();
        let state = if restart { "restarting" } else { "exited" };
        container::update(
            &mut store,
            id,
            "state = ?2, pid = 0, exit_code = ?3, finished_at = ?4, oom_killed = ?5",
            &[&state, &code, &now, &(oom as i64)],
        )?;
        Ok(if restart { "restart" } else { "done" })
    })();
    match r {
        Ok(s) => {
            answer(s);
            0
        }
        Err(_) => {
            answer("done");
            1
        }
    }
}

/// `__start ID`: starts the container again for its monitor (restart policy). Its stdio
/// is the container's; fd 3 takes the answer, fd 4 the pty master.
pub fn start_main(cli: &Cli, id: &str) -> i32 {
    let r = (|| -> Result<String> {
        let mut store = cli.store()?;
        let Some(rec) = container::get(&store, id)? else { return Ok("cancelled".into()) };
        if rec.user_stopped {
            container::set_state(&mut store, id, "exited")?;
            return Ok("cancelled".into());
        }
        match start::start(&store, &cli.state_root, &rec) {
            Ok(s) => {
                let now = container::now();
                container::update(
                    &mut store,
                    id,
                    "state = 'running', pid = ?2, started_at = ?3, restart_count = restart_count + 1, error = ''",
                    &[&s.pid, &now],
                )?;
                if let Some(m) = &s.master {
                    // fd 4: the socket the monitor gave us for the pty master.
                    let sock = take_fd(4, "console socket", nix::sys::stat::SFlag::S_IFSOCK)?;
                    proto::send(sock.as_fd(), "master", &[m.as_raw_fd()])?;
                }
                Ok(format!("started {}", s.pid))
            }
            Err(f) => {
                let now = container::now();
                container::update(
                    &mut store,
                    id,
                    "state = 'exited', pid = 0, exit_code = ?2, error = ?3, finished_at = ?4",
                    &[&f.code, &f.msg, &now],
                )?;
                Ok("failed".into())
            }
        }
    })();
    answer(&r.unwrap_or_else(|e| format!("failed {e}")));
    0
}

/// The monitor's control socket in the container's directory.
pub fn socket_path(dir: &Path) -> std::path::PathBuf {
    dir.join("ctl.sock")
}

//! The monitor's steady state (`capsactl __watch ...`): the container's parent for as
//! long as it runs, in a fresh process image (the monitor execs itself once the container
//! runs, so what the start touched — SQLite, the spec, the library — is not kept resident).
//!
//! It holds the container's stdio (pipes, or the pty master) and copies output to the
//! json-file log and to attached clients, client input to the container; serves its
//! socket (attach, resize, signal, wait, stop); reaps the container's init; and when it
//! exits, runs `capsactl __exited` (which records the exit in the database, cleans up, and
//! says whether the restart policy wants another start), answers waiting clients, and
//! either exits or, after docker's backoff (100 ms doubling up to a minute, back to 100 ms
//! after a run of 10 s), runs `capsactl __start`, whose container init it inherits as a
//! child subreaper.
//!
//! Single-threaded, one poll loop, no SQLite: the database is written by the short
//! helper processes.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::SFlag;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::proto;
use crate::logs::write::{Stream, Writer};

/// What the monitor hands to its steady state across exec (`key=value` arguments).
#[derive(Debug, Default, Clone)]
pub struct Args {
    pub id: String,
    pub root: PathBuf,
    pub state_root: PathBuf,
    pub dir: PathBuf,
    pub init: i32,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub out: Option<RawFd>,
    pub err: Option<RawFd>,
    pub stdin: Option<RawFd>,
    pub lock: RawFd,
    pub listen: RawFd,
    /// The `run`/`start -a` client that started the container, attached from the start.
    pub client: Option<RawFd>,
    pub cin: Option<RawFd>,
    pub cout: Option<RawFd>,
    pub cerr: Option<RawFd>,
    /// None: the `none` log driver.
    pub log: Option<PathBuf>,
    pub max_size: u64,
    pub max_file: u32,
    /// The capsactl binary that runs the helpers (`__exited`, `__start`); None: this
    /// process's own binary (the monitor runs as `capsactl __watch`).
    pub ctl: Option<PathBuf>,
}

impl Args {
    pub fn to_argv(&self) -> Vec<String> {
        let mut v = vec![
            format!("id={}", self.id),
            format!("root={}", self.root.display()),
            format!("state-root={}", self.state_root.display()),
            format!("dir={}", self.dir.display()),
            format!("init={}", self.init),
            format!("tty={}", self.tty as u8),
            format!("open-stdin={}", self.open_stdin as u8),
            format!("stdin-once={}", self.stdin_once as u8),
            format!("lock={}", self.lock),
            format!("listen={}", self.listen),
            format!("max-size={}", self.max_size),
            format!("max-file={}", self.max_file),
        ];
        for (k, v2) in [
            ("out", self.out),
            ("err", self.err),
            ("stdin", self.stdin),
            ("client", self.client),
            ("cin", self.cin),
            ("cout", self.cout),
            ("cerr", self.cerr),
        ] {
            if let Some(fd) = v2 {
                v.push(format!("{k}={fd}"));
            }
        }
        if let Some(l) = &self.log {
            v.push(format!("log={}", l.display()));
        }
        if let Some(c) = &self.ctl {
            v.push(format!("ctl={}", c.display()));
        }
        v
    }

    pub fn parse(argv: &[String]) -> Result<Args, String> {
        let mut a = Args { lock: -1, listen: -1, max_file: 1, ..Default::default() };
        for kv in argv {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("__watch: bad argument {kv:?}"))?;
            let fd = || v.parse::<RawFd>().map_err(|_| format!("__watch: {k}={v}: not an fd"));
            match k {
                "id" => a.id = v.to_string(),
                "root" => a.root = v.into(),
                "state-root" => a.state_root = v.into(),
                "dir" => a.dir = v.into(),
                "init" => a.init = v.parse().map_err(|_| format!("__watch: init={v}"))?,
                "tty" => a.tty = v == "1",
                "open-stdin" => a.open_stdin = v == "1",
                "stdin-once" => a.stdin_once = v == "1",
                "lock" => a.lock = fd()?,
                "listen" => a.listen = fd()?,
                "out" => a.out = Some(fd()?),
                "err" => a.err = Some(fd()?),
                "stdin" => a.stdin = Some(fd()?),
                "client" => a.client = Some(fd()?),
                "cin" => a.cin = Some(fd()?),
                "cout" => a.cout = Some(fd()?),
                "cerr" => a.cerr = Some(fd()?),
                "log" => a.log = Some(v.into()),
                "ctl" => a.ctl = Some(v.into()),
                "max-size" => a.max_size = v.parse().unwrap_or(0),
                "max-file" => a.max_file = v.parse().unwrap_or(1),
                _ => return Err(format!("__watch: unknown argument {k:?}")),
            }
        }
        if a.id.is_empty() || a.lock < 0 || a.listen < 0 {
            return Err("__watch: id, lock and listen are required".into());
        }
        // Each fd is what it should be, and none is given twice (or is our stdio).
        let mut seen = Vec::new();
        let need = |k: &str, fd: RawFd, kinds: &[SFlag], seen: &mut Vec<RawFd>| -> Result<(), String> {
            if fd <= 2 || seen.contains(&fd) {
                return Err(format!("__watch: {k}={fd}: not a handed-over fd"));
            }
            seen.push(fd);
            // SAFETY: fstat of a plain fd number into a zeroed struct we own (EBADF if
            // it is not open; nothing is taken).
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            if unsafe { libc::fstat(fd, &mut st) } < 0 {
                return Err(format!("__watch: {k}={fd}: {}", std::io::Error::last_os_error()));
            }
            let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
            if !kinds.is_empty() && !kinds.contains(&kind) {
                return Err(format!("__watch: {k}={fd}: not a {kinds:?}"));
            }
            Ok(())
        };
        // The container's stdio: pipes, or the pty master.
        let stream = [SFlag::S_IFIFO, SFlag::S_IFCHR];
        need("lock", a.lock, &[SFlag::S_IFREG], &mut seen)?;
        need("listen", a.listen, &[SFlag::S_IFSOCK], &mut seen)?;
        if let Some(c) = a.client {
            need("client", c, &[SFlag::S_IFSOCK], &mut seen)?;
        }
        for (k, fd) in [("out", a.out), ("err", a.err), ("stdin", a.stdin)] {
            if let Some(fd) = fd {
                need(k, fd, &stream, &mut seen)?;
            }
        }
        // An attached client's own stdio may be anything (a file, a terminal, /dev/null).
        for (k, fd) in [("cin", a.cin), ("cout", a.cout), ("cerr", a.cerr)] {
            if let Some(fd) = fd {
                need(k, fd, &[], &mut seen)?;
            }
        }
        Ok(a)
    }
}

/// Takes an fd number handed over by the monitor's start across exec (checked by
/// [`Args::parse`]: open, of the right kind, given once).
fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: the fd numbers on our command line were left open for us alone by the
    // monitor that exec'd us, each once (Args::parse checked); nothing else here owns them.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    fd
}

struct Client {
    sock: OwnedFd,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    attached: bool,
    waiting: bool,
    /// ctrl-p seen, waiting for ctrl-q (docker's detach keys).
    ctrl_p: bool,
}

struct Watch {
    a: Args,
    init: i32,
    started: Instant,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    log: Writer,
    listen: OwnedFd,
    clients: Vec<Client>,
    _lock: OwnedFd,
    delay: Duration,
    restart_at: Option<Instant>,
    stop: bool,
    buf: Vec<u8>,
}

fn write_all(fd: BorrowedFd<'_>, mut b: &[u8]) -> bool {
    while !b.is_empty() {
        match nix::unistd::write(fd, b) {
            Ok(0) => return false,
            Ok(n) => b = &b[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                let mut p = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(&mut p, PollTimeout::from(1000u16));
            }
            Err(_) => return false,
        }
    }
    true
}

/// Runs the steady state; returns the process exit code.
pub fn run(a: Args) -> i32 {
    // SAFETY: prctl with integer arguments; signal() with SIG_IGN for SIGPIPE, SIGHUP and
    // SIGINT (a dead client or a terminal must not end the monitor).
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGCHLD);
    let _ = nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&sigs), None);
    let Ok(sfd) = SignalFd::with_flags(&sigs, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) else { return 1 };
    let log = Writer::open(a.log.as_deref(), a.max_size, a.max_file).or_else(|_| Writer::open(None, 0, 1));
    let Ok(log) = log else { return 1 };
    let mut w = Watch {
        init: a.init,
        started: Instant::now(),
        out: a.out.map(own),
        err: a.err.map(own),
        stdin: a.stdin.map(own),
        log,
        listen: own(a.listen),
        clients: Vec::new(),
        _lock: own(a.lock),
        delay: Duration::ZERO,
        restart_at: None,
        stop: false,
        buf: vec![0u8; 64 * 1024],
        a,
    };
    if let Some(c) = w.a.client {
        let attached = Client {
            sock: own(c),
            stdin: w.a.cin.map(own),
            stdout: w.a.cout.map(own),
            stderr: w.a.cerr.map(own),
            attached: true,
            waiting: true,
            ctrl_p: false,
        };
        w.clients.push(attached);
    }
    loop {
        // The container may have exited before we got here (or between two polls).
        if let Some(code) = w.reap() {
            if !w.exited(code) {
                return 0;
            }
            continue;
        }
        if let Some(at) = w.restart_at {
            if Instant::now() >= at {
                w.restart_at = None;
                if !w.restart() {
                    return 0;
                }
                continue;
            }
        }
        w.poll_once(&sfd);
        while let Ok(Some(_)) = sfd.read_signal() {}
    }
}

impl Watch {
    /// Reaps exited children; Some(code) once the container's init is among them.
    fn reap(&mut self) -> Option<i32> {
        let mut result = None;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == self.init => result = Some(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == self.init => result = Some(128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if result.is_some() {
            self.init = 0;
        }
        result
    }

    fn poll_once(&mut self, sfd: &SignalFd) {
        #[derive(Clone, Copy)]
        enum Src {
            Sig,
            Listen,
            Out,
            Err,
            Sock(usize),
            In(usize),
        }
        let mut srcs = vec![Src::Sig, Src::Listen];
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN), PollFd::new(self.listen.as_fd(), PollFlags::POLLIN)];
        if let Some(o) = &self.out {
            srcs.push(Src::Out);
            fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
        }
        if let Some(e) = &self.err {
            srcs.push(Src::Err);
            fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
        }
        for (i, c) in self.clients.iter().enumerate() {
            srcs.push(Src::Sock(i));
            fds.push(PollFd::new(c.sock.as_fd(), PollFlags::POLLIN));
            if let (Some(s), true) = (&c.stdin, self.stdin.is_some() && self.init != 0) {
                srcs.push(Src::In(i));
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
        }
        let timeout = match self.restart_at {
            Some(at) => PollTimeout::from(at.saturating_duration_since(Instant::now()).as_millis().min(60_000) as u16),
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(_) => return,
        }
        let ready: Vec<(Src, PollFlags)> =
            srcs.iter().zip(fds.iter()).filter_map(|(s, f)| f.revents().filter(|r| !r.is_empty()).map(|r| (*s, r))).collect();
        drop(fds);
        let mut drop_clients: Vec<usize> = Vec::new();
        for (src, _) in ready {
            match src {
                Src::Sig => {}
                Src::Listen => {
                    while let Ok(Some(sock)) = proto::accept(self.listen.as_fd()) {
                        self.clients.push(Client {
                            sock,
                            stdin: None,
                            stdout: None,
                            stderr: None,
                            attached: false,
                            waiting: false,
                            ctrl_p: false,
                        });
                    }
                }
                Src::Out => {
                    self.pump(Stream::Stdout);
                }
                Src::Err => {
                    self.pump(Stream::Stderr);
                }
                Src::Sock(i) => {
                    if !self.request(i) {
                        drop_clients.push(i);
                    }
                }
                Src::In(i) => {
                    if !self.input(i) {
                        drop_clients.push(i);
                    }
                }
            }
        }
        drop_clients.sort_unstable();
        drop_clients.dedup();
        for i in drop_clients.into_iter().rev() {
            self.clients.remove(i);
        }
    }

    /// Copies one read of the container's output to the log and the attached clients.
    fn pump(&mut self, stream: Stream) -> bool {
        let fd = match stream {
            Stream::Stdout => self.out.as_ref(),
            Stream::Stderr => self.err.as_ref(),
        };
        let Some(fd) = fd else { return false };
        let n = match nix::unistd::read(fd, &mut self.buf) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => return true,
            // EIO: a pty whose other side is closed.
            Err(_) => 0,
        };
        if n == 0 {
            match stream {
                Stream::Stdout => self.out = None,
                Stream::Stderr => self.err = None,
            }
            return false;
        }
        let data = &self.buf[..n];
        self.log.write(stream, data);
        for c in &mut self.clients {
            let target = match stream {
                Stream::Stdout => &mut c.stdout,
                Stream::Stderr => {
                    if c.stderr.is_some() {
                        &mut c.stderr
                    } else {
                        continue;
                    }
                }
            };
            if let Some(t) = target {
                if !write_all(t.as_fd(), data) {
                    *target = None;
                }
            }
        }
        true
    }

    /// Reads what is left of the container's output (it has exited): until both streams
    /// end, or a second passes without output (a process outside its pid namespace may
    /// still hold them).
    fn drain(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.out.is_some() || self.err.is_some() {
            let mut fds = Vec::new();
            let mut which = Vec::new();
            if let Some(o) = &self.out {
                fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
                which.push(Stream::Stdout);
            }
            if let Some(e) = &self.err {
                fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
                which.push(Stream::Stderr);
            }
            let left = u16::try_from(deadline.saturating_duration_since(Instant::now()).as_millis()).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(left)) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let ready: Vec<Stream> =
                which.iter().zip(fds.iter()).filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty())).map(|(s, _)| *s).collect();
            drop(fds);
            for s in ready {
                self.pump(s);
            }
        }
        self.out = None;
        self.err = None;
        self.log.flush();
    }

    /// One message from client `i`; false when the client is gone.
    fn request(&mut self, i: usize) -> bool {
        let msg = match proto::recv(self.clients[i].sock.as_fd()) {
            Ok(Some(m)) => m,
            _ => return false,
        };
        let (text, fds) = msg;
        let words: Vec<&str> = text.split_whitespace().collect();
        let reply = |c: &Client, m: &str| proto::send(c.sock.as_fd(), m, &[]).is_ok();
        match words.as_slice() {
            ["attach", inp, out, err] => {
                let mut it = fds.into_iter();
                let c = &mut self.clients[i];
                if *inp == "1" {
                    c.stdin = it.next();
                }
                if *out == "1" {
                    c.stdout = it.next();
                }
                if *err == "1" {
                    c.stderr = it.next();
                }
                c.attached = true;
                c.waiting = true;
                reply(c, "ok")
            }
            ["resize", rows, cols] => {
                if let (true, Some(o), Ok(r), Ok(cl)) = (self.a.tty, &self.out, rows.parse::<u16>(), cols.parse::<u16>()) {
                    let ws = libc::winsize { ws_row: r, ws_col: cl, ws_xpixel: 0, ws_ypixel: 0 };
                    // SAFETY: TIOCSWINSZ reads one winsize from a live struct.
                    unsafe { libc::ioctl(o.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                }
                true
            }
            ["signal", n] => {
                if let (Ok(sig), true) = (n.parse::<i32>(), self.init > 0) {
                    // SAFETY: kill of our own child (not reaped yet, so its pid is not reused).
                    unsafe { libc::kill(self.init, sig) };
                }
                true
            }
            ["wait"] => {
                self.clients[i].waiting = true;
                true
            }
            ["stop"] => {
                self.stop = true;
                let ok = reply(&self.clients[i], "ok");
                if self.restart_at.is_some() {
                    // Waiting to restart: there is nothing left to look after.
                    std::process::exit(0);
                }
                ok
            }
            ["detach"] => false,
            _ => reply(&self.clients[i], "error unknown request"),
        }
    }

    /// Input from client `i` to the container; false when the client detached.
    fn input(&mut self, i: usize) -> bool {
        let c = &mut self.clients[i];
        let Some(inp) = &c.stdin else { return true };
        let n = match nix::unistd::read(inp, &mut self.buf) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => return true,
            Err(_) => 0,
        };
        if n == 0 {
            c.stdin = None;
            if self.a.stdin_once && !self.a.tty {
                // docker's StdinOnce: the first attached stdin closing closes the container's.
                self.stdin = None;
            }
            return true;
        }
        let mut data = Vec::with_capacity(n + 1);
        let mut detach = false;
        for &b in &self.buf[..n] {
            if c.ctrl_p {
                c.ctrl_p = false;
                if b == 0x11 {
                    detach = true;
                    break;
                }
                data.push(0x10);
            }
            if b == 0x10 && self.a.tty {
                c.ctrl_p = true;
                continue;
            }
            data.push(b);
        }
        if let Some(s) = &self.stdin {
            if !data.is_empty() && !write_all(s.as_fd(), &data) {
                self.stdin = None;
            }
        }
        if detach {
            let _ = proto::send(c.sock.as_fd(), "detached", &[]);
            return false;
        }
        true
    }

    /// The container exited with `code`: record, answer, and decide. false: we are done.
    fn exited(&mut self, code: i32) -> bool {
        self.drain();
        self.stdin = None;
        let decision = self.helper(&["__exited", &self.a.id.clone(), &code.to_string()], None, None).unwrap_or_default();
        let msg = format!("exit {code}");
        for c in &self.clients {
            if c.attached || c.waiting {
                let _ = proto::send(c.sock.as_fd(), &msg, &[]);
            }
        }
        self.clients.retain(|c| !(c.attached || c.waiting));
        if decision.trim() != "restart" || self.stop {
            return false;
        }
        // docker's backoff: 100 ms, doubling while runs stay shorter than 10 s, at most a
        // minute; back to 100 ms after a run of 10 s or more.
        self.delay = if self.delay.is_zero() || self.started.elapsed() >= Duration::from_secs(10) {
            Duration::from_millis(100)
        } else {
            (self.delay * 2).min(Duration::from_secs(60))
        };
        self.restart_at = Some(Instant::now() + self.delay);
        true
    }

    /// Starts the container again through `capsactl __start`; false: it did not start.
    fn restart(&mut self) -> bool {
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok();
        let tty = self.a.tty;
        let (out, err) = if tty { (None, None) } else { (pipe(), pipe()) };
        let inp = if !tty && self.a.open_stdin { pipe() } else { None };
        let console = if tty { proto::pair().ok() } else { None };
        let stdio = |p: Option<OwnedFd>| p.map(Stdio::from).unwrap_or_else(Stdio::null);
        let status = self.helper(
            &["__start", &self.a.id.clone()],
            Some((
                stdio(inp.as_ref().and_then(|(r, _)| r.try_clone().ok())),
                stdio(out.as_ref().and_then(|(_, w)| w.try_clone().ok())),
                stdio(err.as_ref().and_then(|(_, w)| w.try_clone().ok())),
            )),
            console.as_ref().map(|(_, theirs)| theirs.as_fd()),
        );
        let Some(status) = status else { return false };
        let Some(pid) = status.lines().find_map(|l| l.strip_prefix("started ")).and_then(|p| p.trim().parse::<i32>().ok()) else {
            return false;
        };
        self.init = pid;
        self.started = Instant::now();
        if tty {
            let master = console.and_then(|(ours, theirs)| {
                drop(theirs);
                proto::recv(ours.as_fd()).ok().flatten().and_then(|(_, mut fds)| fds.pop())
            });
            self.stdin = if self.a.open_stdin { master.as_ref().and_then(|m| m.try_clone().ok()) } else { None };
            self.out = master;
        } else {
            self.out = out.map(|(r, _)| r);
            self.err = err.map(|(r, _)| r);
            self.stdin = inp.map(|(_, w)| w);
        }
        true
    }

    /// Runs `capsactl --root R --state-root S ARGS...` and returns what it printed on fd 3
    /// (given `fd4`, that is the helper's fd 4).
    fn helper(&self, args: &[&str], stdio: Option<(Stdio, Stdio, Stdio)>, fd4: Option<BorrowedFd<'_>>) -> Option<String> {
        let (r, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let exe = self.a.ctl.clone().unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        let mut cmd = Command::new(exe);
        cmd.arg0("capsactl").arg("--root").arg(&self.a.root).arg("--state-root").arg(&self.a.state_root).args(args);
        match stdio {
            Some((i, o, e)) => {
                cmd.stdin(i).stdout(o).stderr(e);
            }
            None => {
                cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        // Raw numbers for the child between fork and exec; wr and fd4 outlive the spawn.
        let (status_fd, console_fd) = (wr.as_raw_fd(), fd4.map(|f| f.as_raw_fd()));
        // SAFETY: between fork and exec the child only calls fcntl and dup2, which are
        // async-signal-safe, on fds that are open in the parent. Both are first copied
        // above 10, so that neither dup2 can land on the other's source (status_fd may be
        // 4, console_fd 3), nor be a no-op that keeps FD_CLOEXEC (a source already at 3).
        unsafe {
            cmd.pre_exec(move || {
                let high = |fd: RawFd| {
                    let n = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                    if n < 0 {
                        Err(std::io::Error::last_os_error())
                    } else {
                        Ok(n)
                    }
                };
                let s = high(status_fd)?;
                let c = match console_fd {
                    Some(f) => Some(high(f)?),
                    None => None,
                };
                if libc::dup2(s, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(c) = c {
                    if libc::dup2(c, 4) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().ok()?;
        drop(wr);
        drop(cmd);
        let mut out = String::new();
        let _ = std::fs::File::from(r).read_to_string(&mut out);
        // The answer is complete once fd 3 is closed; the helper's exit may come later
        // (closing a netfilter socket waits for the kernel, see capsa-network's nftnl), and
        // the waiting client need not wait for it. `reap` collects it.
        drop(child);
        Some(out)
    }
}

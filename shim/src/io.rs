//! Process stdio as containerd hands it over: fifo paths (the default), `file://PATH` and
//! `binary://PATH?ARGS` log URIs, or a terminal whose master arrives on a console socket.
//!
//! Without a terminal the container gets pipes, and [`Pump`]s on the shim's event loop move the
//! data between them and the fifos (splice(2), pipe to pipe, no copy through the shim; a pty
//! master, which cannot splice, is read and written through a small buffer): no thread per
//! stream. Output fifos are opened O_RDWR: the open never blocks and, since the shim holds a
//! read end, a containerd restart (its reader goes away) does not break the pipe; output
//! resumes when the new containerd reopens the fifo.
//!
//! Stdin: the shim keeps a write end of the stdin fifo open until CloseIO, as
//! containerd-shim-runc-v2 does, so a client that detaches (`ctr task attach` leaving) is not
//! end of input; only CloseIO, and then every client closing its end, is.
//!
//! When the process exits, what its pipes hold is copied and the fifos are closed then, even if
//! a background child still holds the pipe (`sh -c 'sleep 600 & echo started'`): the client's
//! copy ends with the process, not with the last holder of its stdout.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};

use crate::reactor::{Events, Reactor, Source};
use crate::reaper::Reaper;

#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn set_nonblocking(f: &impl AsFd) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL)?);
    fcntl(f, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Bytes waiting in a pipe or fifo.
fn bytes_available(f: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through a valid pointer; the fd is open.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r < 0 {
        0
    } else {
        n.max(0) as usize
    }
}

thread_local! {
    /// The copy buffer of streams that cannot splice (a pty master), one per copying thread.
    static COPY_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Where one step of copying stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The source has nothing more right now.
    Idle,
    /// The destination is full.
    Full,
    /// The source ended (every writer closed) or the destination broke.
    Eof,
    /// A pty master with no slave open (EIO): nothing until the process opens its tty again.
    Hangup,
}

struct PumpState {
    src: Option<File>,
    dst: Option<File>,
    src_token: u64,
    /// Registered while the destination is full: wait for it to drain.
    dst_token: Option<u64>,
    splice: bool,
    /// Copy mode: bytes read but not yet written (the destination was full).
    pending: Vec<u8>,
    pty: bool,
    done: bool,
}

/// Moves one stream from `src` to `dst` on the event loop.
pub struct Pump {
    reactor: Arc<Reactor>,
    me: Weak<Pump>,
    st: Mutex<PumpState>,
    done: Condvar,
}

impl Pump {
    /// Start copying `src` into `dst`. `pty`: `src` is a pty master (EIO = no slave open).
    pub fn start(reactor: &Arc<Reactor>, src: File, dst: File, pty: bool) -> io::Result<Arc<Pump>> {
        set_nonblocking(&src)?;
        set_nonblocking(&dst)?;
        let pump = Arc::new_cyclic(|me| Pump {
            reactor: Arc::clone(reactor),
            me: me.clone(),
            st: Mutex::new(PumpState {
                src: None,
                dst: Some(dst),
                src_token: 0,
                dst_token: None,
                splice: true,
                pending: Vec::new(),
                pty,
                done: false,
            }),
            done: Condvar::new(),
        });
        {
            let mut st = lock(&pump.st);
            st.src_token = reactor.add(src.as_fd(), Events::EPOLLIN, Arc::clone(&pump) as Arc<dyn Source>)?;
            st.src = Some(src);
        }
        Ok(pump)
    }

    /// Copy until the source is empty, the destination full, or the source ended.
    fn step(st: &mut PumpState, max_rounds: usize) -> Step {
        let (Some(src), Some(dst)) = (st.src.as_ref(), st.dst.as_ref()) else { return Step::Eof };
        for _ in 0..max_rounds {
            if !st.pending.is_empty() {
                match (&*dst).write(&st.pending) {
                    Ok(n) => {
                        st.pending.drain(..n);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Full,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Step::Eof,
                }
            }
            if st.splice {
                match splice(src, None, dst, None, 1 << 16, SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE) {
                    Ok(0) => return Step::Eof,
                    Ok(_) => continue,
                    // EAGAIN is either side: a full destination if the source has data.
                    Err(Errno::EAGAIN) => return if bytes_available(src) > 0 { Step::Full } else { Step::Idle },
                    Err(Errno::EINTR) => continue,
                    // Not a pipe on either side (a pty master): copy through a buffer.
                    Err(Errno::EINVAL) => {
                        st.splice = false;
                        continue;
                    }
                    Err(Errno::EIO) if st.pty => return Step::Hangup,
                    Err(_) => return Step::Eof,
                }
            }
            let r = COPY_BUF.with(|b| {
                let mut b = b.borrow_mut();
                if b.is_empty() {
                    b.resize(16 * 1024, 0);
                }
                let n = match (&*src).read(&mut b) {
                    Ok(0) => return Err(Step::Eof),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(Step::Idle),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
                    Err(e) if st.pty && e.raw_os_error() == Some(libc::EIO) => return Err(Step::Hangup),
                    Err(_) => return Err(Step::Eof),
                };
                match (&*dst).write(&b[..n]) {
                    Ok(w) if w == n => {}
                    Ok(w) => st.pending.extend_from_slice(&b[w..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => st.pending.extend_from_slice(&b[..n]),
                    Err(_) => return Err(Step::Eof),
                }
                Ok(n)
            });
            if let Err(step) = r {
                return step;
            }
        }
        Step::Idle
    }

    fn finish_locked(&self, st: &mut PumpState) {
        if st.done {
            return;
        }
        if let (Some(t), Some(dst)) = (st.dst_token.take(), st.dst.as_ref()) {
            self.reactor.remove(dst.as_fd(), t);
        }
        if let Some(src) = st.src.as_ref() {
            self.reactor.remove(src.as_fd(), st.src_token);
        }
        st.src = None;
        if let Some(dst) = st.dst.take() {
            release_output(dst);
        }
        st.pending = Vec::new();
        st.done = true;
        self.done.notify_all();
    }

    /// React to where copying stopped.
    fn settle(&self, st: &mut PumpState, step: Step) {
        match step {
            Step::Idle => {}
            Step::Eof => self.finish_locked(st),
            Step::Hangup => {
                // Level-triggered HUP would spin: pause the source until the process exits.
                if let Some(src) = st.src.as_ref() {
                    let _ = self.reactor.modify(src.as_fd(), st.src_token, Events::empty());
                }
            }
            Step::Full => {
                if st.dst_token.is_some() {
                    return;
                }
                let (Some(src), Some(dst), Some(me)) = (st.src.as_ref(), st.dst.as_ref(), self.me.upgrade()) else { return };
                let _ = self.reactor.modify(src.as_fd(), st.src_token, Events::empty());
                match self.reactor.add(dst.as_fd(), Events::EPOLLOUT, me as Arc<dyn Source>) {
                    Ok(t) => st.dst_token = Some(t),
                    Err(_) => self.finish_locked(st),
                }
            }
        }
    }

    /// The process is gone: copy what the source holds now (waiting for a full destination up
    /// to `deadline`), then close both ends, whoever else still holds the source's write end.
    pub fn drain_and_finish(&self, deadline: Instant) {
        let mut st = lock(&self.st);
        while !st.done {
            let step = Self::step(&mut st, usize::MAX);
            let left = deadline.saturating_duration_since(Instant::now());
            let wait_on = match step {
                Step::Eof | Step::Hangup => break,
                Step::Full => st.dst.as_ref().map(|d| (d.as_raw_fd(), libc::POLLOUT)),
                // A pty's last output may still be on its way through the tty layer.
                Step::Idle if st.pty => st.src.as_ref().map(|s| (s.as_raw_fd(), libc::POLLIN)),
                Step::Idle => break,
            };
            let Some((fd, events)) = wait_on else { break };
            let ms = if step == Step::Idle { left.min(Duration::from_millis(50)) } else { left };
            let mut pfd = libc::pollfd { fd, events, revents: 0 };
            // SAFETY: one valid pollfd for an fd this pump owns, which stays open (we hold the lock).
            let n = unsafe { libc::poll(&mut pfd, 1, libc::c_int::try_from(ms.as_millis()).unwrap_or(libc::c_int::MAX)) };
            if n <= 0 {
                break;
            }
        }
        self.finish_locked(&mut st);
    }

    /// Stop now, dropping whatever was not copied (stdin of an exited process).
    pub fn finish(&self) {
        let mut st = lock(&self.st);
        self.finish_locked(&mut st);
    }

    /// Wait (bounded) until the pump finished.
    pub fn wait_done(&self, timeout: Duration) {
        let st = lock(&self.st);
        let _ = self.done.wait_timeout_while(st, timeout, |s| !s.done);
    }
}

impl Source for Pump {
    fn ready(&self, _reactor: &Reactor, token: u64, _events: Events) {
        let mut st = lock(&self.st);
        if st.done {
            return;
        }
        if st.dst_token == Some(token) {
            // The destination drained: watch the source again.
            if let (Some(t), Some(dst)) = (st.dst_token.take(), st.dst.as_ref()) {
                self.reactor.remove(dst.as_fd(), t);
            }
            if let Some(src) = st.src.as_ref() {
                let _ = self.reactor.modify(src.as_fd(), st.src_token, Events::EPOLLIN);
            }
        }
        // Bounded rounds: level-triggered, so the loop comes back for the rest.
        let step = Self::step(&mut st, 16);
        self.settle(&mut st, step);
    }
}

/// The shim's side of a running process's stdio.
#[derive(Default)]
pub struct ProcIo {
    outputs: Vec<Arc<Pump>>,
    stdin: Option<Arc<Pump>>,
    /// The shim's write end of the stdin fifo (see the module doc); dropped by CloseIO.
    stdin_keepalive: Mutex<Option<File>>,
    /// pty master, for ResizePty.
    console: Option<File>,
}

impl ProcIo {
    /// CloseIO: stdin ends once every client closed its end of the fifo and the data is copied.
    pub fn close_io(&self) {
        lock(&self.stdin_keepalive).take();
    }

    /// The process exited: copy its remaining output (bounded by `timeout`) and close the
    /// fifos; stop feeding its stdin.
    pub fn process_exited(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for p in &self.outputs {
            p.drain_and_finish(deadline);
        }
        if let Some(p) = &self.stdin {
            p.finish();
        }
        self.close_io();
    }

    /// Wait (bounded) until the output pumps are done.
    pub fn wait_output(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for p in &self.outputs {
            p.wait_done(deadline.saturating_duration_since(Instant::now()));
        }
    }

    pub fn resize(&self, width: u32, height: u32) -> io::Result<()> {
        let Some(c) = &self.console else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "process has no terminal"));
        };
        let ws = libc::winsize { ws_row: height as u16, ws_col: width as u16, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is our open pty master.
        let r = unsafe { libc::ioctl(c.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// What the runtime command needs (stdio or console socket), and what to finish once it ran.
pub struct Prepared {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    pub console_socket: Option<ConsoleSocket>,
    /// Output pumps to start once the runtime command succeeded: (reader, fifo path).
    pending_out: Vec<(File, String)>,
    /// The stdin fifo and the writer into the process's stdin pipe.
    pending_in: Option<(String, File)>,
}

enum Target {
    Null,
    Fifo(String),
    File(PathBuf),
    Binary(String, Vec<String>),
}

fn parse_target(uri: &str) -> io::Result<Target> {
    if uri.is_empty() {
        return Ok(Target::Null);
    }
    if let Some(rest) = uri.strip_prefix("file://") {
        return Ok(Target::File(PathBuf::from(percent_decode(rest))));
    }
    if let Some(rest) = uri.strip_prefix("binary://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        // Like containerd's NewBinaryCmd: every query pair becomes `key value`.
        let mut args = Vec::new();
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            args.push(percent_decode(k));
            if !v.is_empty() {
                args.push(percent_decode(v));
            }
        }
        return Ok(Target::Binary(percent_decode(path), args));
    }
    if let Some(rest) = uri.strip_prefix("fifo://") {
        return Ok(Target::Fifo(rest.to_string()));
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("stdio uri {uri:?}: unsupported scheme {scheme:?}")));
    }
    Ok(Target::Fifo(uri.to_string()))
}

/// `%XX` (two hex digits) to the byte; anything else is kept as it is. Works on bytes: a `%`
/// before a multi-byte character is not a place to cut the string.
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pipe() -> io::Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    Ok((File::from(r), File::from(w)))
}

fn chown_fd(f: &File, uid: u32, gid: u32) -> io::Result<()> {
    if uid == 0 && gid == 0 {
        return Ok(());
    }
    nix::unistd::fchown(f.as_fd(), Some(uid.into()), Some(gid.into())).map_err(io::Error::from)
}

fn open_output_fifo(path: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// Closes an output fifo the shim opened read-write (so that opening never waited for
/// containerd's reader). containerd opens its readers asynchronously: closing before its
/// reader is there leaves that open waiting for a writer forever (an exec that finished
/// first; its ExecSync hung). So the fifo passes to a write-only fd, which is closed once a
/// reader is there (a fifo's write end polls POLLERR while it has none), or after 10 s; the
/// wait is on a thread of its own. Anything else is simply closed.
fn release_output(f: File) {
    // SAFETY: F_GETFL on an fd we own.
    let rdwr = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) } & libc::O_ACCMODE == libc::O_RDWR;
    let fifo = f.metadata().map(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type())).unwrap_or(false);
    if !(rdwr && fifo) {
        return;
    }
    // Opened anew through /proc/self/fd: our read-write fd is a reader, so this never fails
    // for want of one.
    let Ok(w) =
        OpenOptions::new().write(true).custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK).open(format!("/proc/self/fd/{}", f.as_raw_fd()))
    else {
        return;
    };
    drop(f);
    let _ = std::thread::Builder::new().name("fifo-close".into()).spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let mut pfd = libc::pollfd { fd: w.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd for an fd this thread owns.
            let n = unsafe { libc::poll(&mut pfd, 1, 0) };
            if n >= 0 && pfd.revents & libc::POLLERR == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(w);
    });
}

/// The stdin fifo's read end, and the shim's own write end that keeps EOF away until CloseIO.
/// Neither open blocks: the read end is opened non-blocking first, so the write end finds a reader.
fn open_stdin_fifo(path: &str) -> io::Result<(File, File)> {
    let err = |e: io::Error| io::Error::new(e.kind(), format!("{path}: {e}"));
    let r = OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK).open(path).map_err(err)?;
    let w = OpenOptions::new().write(true).custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK).open(path).map_err(err)?;
    Ok((r, w))
}

static SOCKET_SEQ: AtomicU64 = AtomicU64::new(0);

/// A listening unix socket the runtime connects to, to send the pty master.
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> io::Result<ConsoleSocket> {
        let path =
            std::env::temp_dir().join(format!("capsa-shim-pty-{}-{}.sock", std::process::id(), SOCKET_SEQ.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket { path, listener })
    }

    /// Receive the pty master the runtime sent (it connected while `create`/`exec` ran).
    pub fn receive(&self, timeout: Duration) -> io::Result<File> {
        let deadline = Instant::now() + timeout;
        let conn = loop {
            match self.listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("console socket: no connection: {e}"))),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 4096];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg =
            nix::sys::socket::recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(io::Error::from)?;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                let mut it = fds.into_iter();
                if let Some(fd) = it.next() {
                    for extra in it {
                        // SAFETY: the kernel just installed this fd for us and nothing else owns it.
                        drop(unsafe { OwnedFd::from_raw_fd(extra) });
                    }
                    // SAFETY: as above; ownership moves into the File.
                    return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "console socket: message carried no fd"))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Set up stdio for a process about to be created by the runtime.
pub fn prepare(p: &StdioPaths, uid: u32, gid: u32, reaper: &Arc<Reaper>, id: &str, namespace: &str) -> io::Result<Prepared> {
    let mut prep = Prepared {
        stdin: Stdio::null(),
        stdout: Stdio::null(),
        stderr: Stdio::null(),
        console_socket: None,
        pending_out: Vec::new(),
        pending_in: None,
    };
    if p.terminal {
        prep.console_socket = Some(ConsoleSocket::new()?);
        return Ok(prep);
    }
    if !p.stdin.is_empty() {
        let (r, w) = pipe()?;
        chown_fd(&r, uid, gid)?;
        prep.stdin = Stdio::from(r);
        prep.pending_in = Some((p.stdin.clone(), w));
    }
    let out = parse_target(&p.stdout)?;
    let err = parse_target(&p.stderr)?;
    // binary:// takes both streams: fd 3 = stdout, fd 4 = stderr, fd 5 = "ready" pipe.
    if let Target::Binary(path, args) = &out {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        chown_fd(&out_w, uid, gid)?;
        chown_fd(&err_w, uid, gid)?;
        start_log_binary(path, args, out_r, err_r, reaper, id, namespace)?;
        prep.stdout = Stdio::from(out_w);
        prep.stderr = Stdio::from(err_w);
        return Ok(prep);
    }
    let (stdout, same_file) = match (&out, &err) {
        (Target::File(a), Target::File(b)) if a == b => (open_target(&out, uid, gid, &mut prep)?, true),
        _ => (open_target(&out, uid, gid, &mut prep)?, false),
    };
    prep.stderr = if same_file {
        match &stdout {
            Some(f) => Stdio::from(f.try_clone()?),
            None => Stdio::null(),
        }
    } else {
        match open_target(&err, uid, gid, &mut prep)? {
            Some(f) => Stdio::from(f),
            None => Stdio::null(),
        }
    };
    prep.stdout = match stdout {
        Some(f) => Stdio::from(f),
        None => Stdio::null(),
    };
    Ok(prep)
}

/// The container's end for one output stream (None: /dev/null).
fn open_target(t: &Target, uid: u32, gid: u32, prep: &mut Prepared) -> io::Result<Option<File>> {
    match t {
        Target::Null => Ok(None),
        Target::File(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            Ok(Some(f))
        }
        Target::Fifo(path) => {
            let (r, w) = pipe()?;
            chown_fd(&w, uid, gid)?;
            prep.pending_out.push((r, path.clone()));
            Ok(Some(w))
        }
        Target::Binary(..) => Err(io::Error::new(io::ErrorKind::InvalidInput, "binary:// must be used for stdout")),
    }
}

fn start_log_binary(
    path: &str,
    args: &[String],
    out_r: File,
    err_r: File,
    reaper: &Arc<Reaper>,
    id: &str,
    namespace: &str,
) -> io::Result<()> {
    let (mut ready_r, ready_w) = pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only calls dup2/fcntl, which
    // are async-signal-safe; it touches no memory shared with other threads of the shim.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            // Move the fds above 5 first so that dup2 onto 3..5 cannot clobber a source.
            let mut high = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                let h = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if h < 0 {
                    return Err(io::Error::last_os_error());
                }
                high[i] = h;
            }
            for (i, h) in high.iter().enumerate() {
                if libc::dup2(*h, 3 + i as i32) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let _ = reaper.spawn(&mut cmd).map_err(|e| io::Error::new(e.kind(), format!("logging binary {path}: {e}")))?;
    drop(ready_w);
    drop(out_r);
    drop(err_r);
    // The binary closes fd 5 (or exits) when it is ready to read; give up after 10 s like
    // containerd-shim-runc-v2.
    let mut fds = [nix::poll::PollFd::new(ready_r.as_fd(), nix::poll::PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)) {
        Ok(0) => {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("logging binary {path}: not ready after 10s (fd 5 not closed)")))
        }
        Ok(_) => {
            let mut b = [0u8; 1];
            let _ = ready_r.read(&mut b);
        }
        Err(e) => return Err(io::Error::other(format!("logging binary {path}: {e}"))),
    }
    Ok(())
}

/// After the runtime command succeeded: start the pumps, receive the pty master.
pub fn finish(prep: &mut Prepared, p: &StdioPaths, reactor: &Arc<Reactor>) -> io::Result<ProcIo> {
    let mut io = ProcIo::default();
    if let Some(cs) = prep.console_socket.take() {
        let master = cs.receive(Duration::from_secs(10))?;
        if !p.stdin.is_empty() {
            let (fifo, keepalive) = open_stdin_fifo(&p.stdin)?;
            io.stdin = Some(Pump::start(reactor, fifo, master.try_clone()?, false)?);
            io.stdin_keepalive = Mutex::new(Some(keepalive));
        }
        if !p.stdout.is_empty() {
            let fifo = open_output_fifo(&p.stdout)?;
            io.outputs.push(Pump::start(reactor, master.try_clone()?, fifo, true)?);
        }
        io.console = Some(master);
    }
    for (r, path) in prep.pending_out.drain(..) {
        let fifo = open_output_fifo(&path)?;
        io.outputs.push(Pump::start(reactor, r, fifo, false)?);
    }
    if let Some((path, w)) = prep.pending_in.take() {
        let (fifo, keepalive) = open_stdin_fifo(&path)?;
        io.stdin = Some(Pump::start(reactor, fifo, w, false)?);
        io.stdin_keepalive = Mutex::new(Some(keepalive));
    }
    Ok(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// An output fifo released before its reader opened (a fast exec): the reader's open
    /// still finds a writer, then EOF. Without it, the open blocks forever.
    #[test]
    fn output_fifo_released_before_its_reader_opens() {
        let dir = std::env::temp_dir().join(format!("capsa-shim-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("stderr");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let w = open_output_fifo(path.to_str().expect("utf-8")).expect("open");
        release_output(w);
        std::thread::sleep(Duration::from_millis(100));
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let r = File::open(&p).and_then(|mut f| f.read_to_string(&mut s));
            let _ = tx.send(r.map(|_| s));
        });
        let got = rx.recv_timeout(Duration::from_secs(5)).expect("the reader's open hung");
        assert_eq!(got.expect("read"), "");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn uris() {
        assert!(matches!(parse_target("").expect("empty"), Target::Null));
        assert!(matches!(parse_target("/run/x/stdout").expect("fifo"), Target::Fifo(p) if p == "/run/x/stdout"));
        assert!(matches!(parse_target("file:///var/log/a%20b.log").expect("file"), Target::File(p) if p == Path::new("/var/log/a b.log")));
        match parse_target("binary:///usr/bin/logger?id=7&verbose").expect("binary") {
            Target::Binary(p, a) => {
                assert_eq!(p, "/usr/bin/logger");
                assert_eq!(a, vec!["id", "7", "verbose"]);
            }
            _ => panic!("not binary"),
        }
        assert!(parse_target("http://x").is_err());
        // Not escapes: a `%` before a multi-byte character or a sign.
        assert!(matches!(parse_target("file:///l/x%\u{e9}%+1").expect("file"), Target::File(p) if p == Path::new("/l/x%\u{e9}%+1")));
    }
}

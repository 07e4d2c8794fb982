//! Process stdio as containerd hands it over: fifo paths (the default), `file://PATH` and
//! `binary://PATH?ARGS` log URIs, or a terminal whose master arrives on a console socket.
//!
//! Without a terminal the container gets pipes and threads copy between them and the fifos, like
//! containerd-shim-runc-v2. Output fifos are opened O_RDWR: the open never blocks and, since the
//! shim holds a read end, a containerd restart (its reader goes away) does not break the pipe;
//! output resumes when the new containerd reopens the fifo.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::reaper::Reaper;

#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The shim's side of a running process's stdio.
#[derive(Default)]
pub struct ProcIo {
    /// Writer into the process's stdin (pipe or pty master); taken by CloseIO.
    pub stdin: Arc<Mutex<Option<File>>>,
    /// pty master, for ResizePty.
    pub console: Option<File>,
    /// One message per output copier when it finished.
    done: Option<Receiver<()>>,
    copiers: usize,
    /// Path of the stdin fifo whose open may still block a thread.
    stdin_fifo: Option<String>,
    /// Set when the process exited (ends a pty copier at the next EIO).
    exited: Arc<AtomicBool>,
    /// CloseIO was called.
    stdin_closed: Arc<AtomicBool>,
}

impl ProcIo {
    /// Wait (bounded) until the output copiers drained the process's output.
    pub fn wait_output(&mut self, timeout: Duration) {
        let Some(rx) = self.done.take() else { return };
        let deadline = Instant::now() + timeout;
        for _ in 0..self.copiers {
            let left = deadline.saturating_duration_since(Instant::now());
            if rx.recv_timeout(left).is_err() {
                break;
            }
        }
    }

    pub fn mark_exited(&self) {
        self.exited.store(true, Ordering::SeqCst);
    }

    /// CloseIO: stdin ends once the clients' writers are closed and their data is copied.
    pub fn close_io(&self) {
        self.stdin_closed.store(true, Ordering::SeqCst);
    }

    /// The process is gone: drop the writer into its stdin.
    pub fn close_stdin(&self) {
        if let Ok(mut g) = self.stdin.lock() {
            g.take();
        }
    }

    /// Release everything: stdin writer, pty master, and a stdin copier still blocked in open().
    pub fn close(&mut self) {
        self.close_io();
        self.close_stdin();
        self.console.take();
        if let Some(p) = self.stdin_fifo.take() {
            // Unblocks a copier waiting in open(O_RDONLY) for a writer that never came.
            let _ = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(p);
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
    pub io: ProcIo,
    /// Copiers to start once the runtime command succeeded: (reader, fifo path).
    pending_out: Vec<(File, String)>,
    pending_in: Option<(String, Arc<Mutex<Option<File>>>)>,
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

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
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
    OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(path)
}

/// Copy `from` into the already opened fifo `to` until EOF. The fifo is opened by the caller,
/// before Create/Start returns: containerd's client gives up opening its read end once the
/// process exited, so a late open here would lose the output of a short-lived process.
///
/// `pty_exited`: for a pty master. EIO there means "no slave open right now", which also happens
/// before the process has its terminal; like containerd's console package, it is taken as the
/// end only once the process has exited.
fn copy_out(mut from: File, mut to: File, done: std::sync::mpsc::Sender<()>, pty_exited: Option<Arc<AtomicBool>>) {
    let _ = std::thread::Builder::new().name("io-out".into()).spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EIO) => match &pty_exited {
                    Some(exited) if !exited.load(Ordering::SeqCst) => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    _ => break,
                },
                Err(_) => break,
            }
        }
        drop(to);
        let _ = done.send(());
    });
}

/// Copy the stdin fifo into the process until EOF (every client writer closed) or, after
/// CloseIO (`closed`), until no more data is pending. CloseIO only marks: containerd's client
/// calls it right after writing its last data, which may not be copied yet.
fn copy_in(fifo: String, to: Arc<Mutex<Option<File>>>, close_on_eof: bool, closed: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new().name("io-in".into()).spawn(move || {
        // Blocks until containerd/the client opens the write side (or ProcIo::close unblocks it).
        let Ok(mut from) = OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(&fifo) else { return };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let mut fds = [nix::poll::PollFd::new(from.as_fd(), nix::poll::PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u8)) {
                Ok(0) => {
                    if closed.load(Ordering::SeqCst) {
                        break;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let mut g = match to.lock() {
                Ok(g) => g,
                Err(_) => return,
            };
            match g.as_mut() {
                Some(w) => {
                    if w.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                None => return, // the process exited
            }
        }
        if close_on_eof {
            if let Ok(mut g) = to.lock() {
                g.take();
            }
        }
    });
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
        io: ProcIo::default(),
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
        *prep.io.stdin.lock().map_err(|_| io::Error::other("poisoned"))? = Some(w);
        prep.pending_in = Some((p.stdin.clone(), Arc::clone(&prep.io.stdin)));
        prep.io.stdin_fifo = Some(p.stdin.clone());
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

/// After the runtime command succeeded: start the copiers, receive the pty master.
pub fn finish(prep: &mut Prepared, p: &StdioPaths) -> io::Result<ProcIo> {
    let mut io = std::mem::take(&mut prep.io);
    let (tx, rx) = channel();
    let mut copiers = 0;
    if let Some(cs) = prep.console_socket.take() {
        let master = cs.receive(Duration::from_secs(10))?;
        if !p.stdin.is_empty() {
            *io.stdin.lock().map_err(|_| io::Error::other("poisoned"))? = Some(master.try_clone()?);
            copy_in(p.stdin.clone(), Arc::clone(&io.stdin), false, Arc::clone(&io.stdin_closed));
            io.stdin_fifo = Some(p.stdin.clone());
        }
        if !p.stdout.is_empty() {
            let fifo = open_output_fifo(&p.stdout).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.stdout)))?;
            copy_out(master.try_clone()?, fifo, tx.clone(), Some(Arc::clone(&io.exited)));
            copiers += 1;
        }
        io.console = Some(master);
    }
    for (r, path) in prep.pending_out.drain(..) {
        let fifo = open_output_fifo(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        copy_out(r, fifo, tx.clone(), None);
        copiers += 1;
    }
    if let Some((fifo, w)) = prep.pending_in.take() {
        copy_in(fifo, w, true, Arc::clone(&io.stdin_closed));
    }
    io.done = Some(rx);
    io.copiers = copiers;
    Ok(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
    }
}

//! The ttrpc server of the shim: connections on the event loop, requests on a small worker
//! pool, and responses that may be sent later (Wait).
//!
//! Not ttrpc's own sync `Server` (nor containerd-shim's runner, which uses it): that server
//! runs five threads per connection (reader, writer, dispatcher and two or more workers), and
//! containerd opens one connection per container, so a pod of 50 containers would cost 250
//! threads; and its handlers must answer before returning, so every Wait parks a worker for the
//! life of its process. Here the event loop reads every connection, a request is handled on a
//! pooled worker through the method table containerd-shim generates (`create_task`), and Wait
//! is answered by whoever sees the process exit ([`Responder`]). The wire format is ttrpc's: a
//! 10-byte header (length, stream id, type, flags; big endian) and a protobuf `Request` /
//! `Response`, using the ttrpc crate's types.
//!
//! A request whose handler panics gets an INTERNAL error back; the shim and the pod's other
//! containers carry on (the shim is built with `panic = "unwind"`, see Cargo.toml).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};
use protobuf::Message;
use ttrpc::proto::{Codec, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX, MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};
use ttrpc::{Code, MessageHeader, MethodHandler, Request, Response, TtrpcContext};

use crate::reactor::{Events, Reactor, Source};

pub type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;

/// A method answered later: gets the request payload and a [`Responder`], returns at once.
pub type Deferred = Box<dyn Fn(&[u8], Responder) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One client connection. The socket stays blocking for writes (bounded by a send timeout);
/// the event loop reads it with MSG_DONTWAIT.
pub struct Conn {
    sock: UnixStream,
    /// Itself, for the event loop's `ready` (which only gets `&self`).
    me: Weak<Conn>,
    /// Set by the event loop thread right after registration, before any event can arrive.
    token: AtomicU64,
    rbuf: Mutex<Vec<u8>>,
    wlock: Mutex<()>,
    server: Arc<Shared>,
}

impl Conn {
    fn write_frame(&self, stream_id: u32, type_: u8, payload: &[u8]) -> io::Result<()> {
        let mh = MessageHeader { length: payload.len() as u32, stream_id, type_, flags: 0 };
        let mut frame: Vec<u8> = mh.into();
        frame.extend_from_slice(payload);
        let _g = lock(&self.wlock);
        (&self.sock).write_all(&frame)
    }

    fn respond(&self, stream_id: u32, res: &Response) {
        match res.encode() {
            Ok(buf) => {
                if let Err(e) = self.write_frame(stream_id, MESSAGE_TYPE_RESPONSE, &buf) {
                    log::debug!("ttrpc: write response: {e}");
                }
            }
            Err(e) => log::error!("ttrpc: encode response: {e}"),
        }
    }

    fn respond_status(&self, stream_id: u32, code: Code, msg: String) {
        let mut res = Response::new();
        res.set_status(ttrpc::get_status(code, msg));
        self.respond(stream_id, &res);
    }

    fn close(&self, reactor: &Reactor) {
        reactor.remove(self.sock.as_fd(), self.token.load(Ordering::SeqCst));
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }

    /// Read what is there; hand every complete request to the pool. False: connection gone.
    fn read_requests(self: &Arc<Self>) -> bool {
        let mut buf = lock(&self.rbuf);
        let mut chunk = [0u8; 8192];
        let mut open = true;
        while open {
            match recv(self.sock.as_raw_fd(), &mut chunk, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => open = false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => open = false,
            }
        }
        while buf.len() >= MESSAGE_HEADER_LENGTH {
            let mh = MessageHeader::from(&buf[..MESSAGE_HEADER_LENGTH]);
            if mh.length as usize > MESSAGE_LENGTH_MAX {
                log::warn!("ttrpc: message of {} bytes is over the limit; closing the connection", mh.length);
                return false;
            }
            let end = MESSAGE_HEADER_LENGTH + mh.length as usize;
            if buf.len() < end {
                break;
            }
            let payload = buf[MESSAGE_HEADER_LENGTH..end].to_vec();
            buf.drain(..end);
            if mh.type_ != MESSAGE_TYPE_REQUEST {
                continue;
            }
            let conn = Arc::clone(self);
            self.server.pool.submit(Box::new(move || conn.handle(mh, payload)));
        }
        if buf.is_empty() {
            // Give a large request's buffer back.
            *buf = Vec::new();
        }
        open
    }

    fn handle(self: Arc<Self>, mh: MessageHeader, payload: Vec<u8>) {
        let req = match Request::decode(&payload) {
            Ok(r) => r,
            Err(e) => return self.respond_status(mh.stream_id, Code::INVALID_ARGUMENT, format!("ttrpc request: {e}")),
        };
        let path = format!("/{}/{}", req.service, req.method);
        let server = Arc::clone(&self.server);
        if let Some(d) = server.deferred.get(&path) {
            let responder = Responder { conn: Arc::clone(&self), stream_id: mh.stream_id };
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d(&req.payload, responder))) {
                self.respond_status(mh.stream_id, Code::INTERNAL, format!("{path}: panic: {}", panic_text(&p)));
            }
            return;
        }
        let Some(method) = server.methods.get(&path) else {
            return self.respond_status(mh.stream_id, Code::UNIMPLEMENTED, format!("{path}: no such method"));
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let ctx = TtrpcContext {
            fd: self.sock.as_raw_fd(),
            cancel_rx: crossbeam_channel::never(),
            mh,
            res_tx: tx,
            metadata: ttrpc::context::from_pb(&req.metadata),
            timeout_nano: req.timeout_nano,
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| method.handler(ctx, req))) {
            Ok(Ok(())) => {
                for (rmh, buf) in rx.try_iter() {
                    if let Err(e) = self.write_frame(rmh.stream_id, rmh.type_, &buf) {
                        log::debug!("ttrpc: write response: {e}");
                    }
                }
            }
            Ok(Err(e)) => self.respond_status(mh.stream_id, Code::INTERNAL, format!("{path}: {e}")),
            Err(p) => {
                log::error!("{path}: panic: {}", panic_text(&p));
                self.respond_status(mh.stream_id, Code::INTERNAL, format!("{path}: panic: {}", panic_text(&p)));
            }
        }
        (server.after_request)();
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".into())
}

impl Source for Conn {
    fn ready(&self, reactor: &Reactor, _token: u64, _events: Events) {
        let Some(me) = self.me.upgrade() else { return };
        if !me.read_requests() {
            me.close(reactor);
        }
    }
}

/// Answers one deferred request (Wait) whenever the answer is known; from any thread.
pub struct Responder {
    conn: Arc<Conn>,
    stream_id: u32,
}

impl Responder {
    pub fn send<M: Message>(self, r: ttrpc::Result<M>) {
        let mut res = Response::new();
        match r {
            Ok(m) => match m.write_to_bytes() {
                Ok(b) => {
                    res.set_status(ttrpc::get_status(Code::OK, String::new()));
                    res.payload = b;
                }
                Err(e) => res.set_status(ttrpc::get_status(Code::INTERNAL, format!("encode response: {e}"))),
            },
            Err(ttrpc::Error::RpcStatus(s)) => res.set_status(s),
            Err(e) => res.set_status(ttrpc::get_status(Code::UNKNOWN, e.to_string())),
        }
        self.conn.respond(self.stream_id, &res);
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Worker threads for requests: started when a request finds none idle (up to MAX_WORKERS), and
/// ended after a while idle, down to one kept for the next request.
struct Pool {
    st: Mutex<PoolState>,
    cv: Condvar,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Job>,
    idle: usize,
    threads: usize,
}

const MAX_WORKERS: usize = 64;
const KEEP_WORKERS: usize = 1;
const IDLE_EXIT: Duration = Duration::from_secs(10);
/// Handlers run protobuf/serde code and spawn the runtime: shallow. Only touched pages count.
const WORKER_STACK: usize = 256 * 1024;

impl Pool {
    fn submit(self: &Arc<Self>, job: Job) {
        let mut st = lock(&self.st);
        st.queue.push_back(job);
        if st.queue.len() <= st.idle {
            self.cv.notify_one();
            return;
        }
        if st.threads >= MAX_WORKERS {
            return; // queued for the next free worker
        }
        st.threads += 1;
        drop(st);
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("worker".into()).stack_size(WORKER_STACK).spawn(move || me.work());
        if let Err(e) = spawned {
            log::error!("worker thread: {e}");
            lock(&self.st).threads -= 1;
        }
    }

    fn work(&self) {
        let mut st = lock(&self.st);
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                job();
                st = lock(&self.st);
                continue;
            }
            st.idle += 1;
            let (g, timeout) = self.cv.wait_timeout(st, IDLE_EXIT).unwrap_or_else(|e| e.into_inner());
            st = g;
            st.idle -= 1;
            if timeout.timed_out() && st.queue.is_empty() && st.threads > KEEP_WORKERS {
                st.threads -= 1;
                return;
            }
        }
    }
}

struct Shared {
    methods: Methods,
    deferred: HashMap<String, Deferred>,
    pool: Arc<Pool>,
    after_request: Box<dyn Fn() + Send + Sync>,
}

/// The listening socket's source: accepts connections.
pub struct Server {
    listener: UnixListener,
    shared: Arc<Shared>,
}

impl Server {
    /// `after_request` runs after every answered request (the shim checks whether to exit).
    pub fn new(
        listener: OwnedFd,
        methods: Methods,
        deferred: HashMap<String, Deferred>,
        after_request: Box<dyn Fn() + Send + Sync>,
    ) -> io::Result<Arc<Server>> {
        let listener = UnixListener::from(listener);
        listener.set_nonblocking(true)?;
        let pool = Arc::new(Pool { st: Mutex::new(PoolState::default()), cv: Condvar::new() });
        let shared = Arc::new(Shared { methods, deferred, pool, after_request });
        Ok(Arc::new(Server { listener, shared }))
    }

    pub fn register(self: &Arc<Self>, reactor: &Reactor) -> io::Result<()> {
        reactor.add(self.listener.as_fd(), Events::EPOLLIN, Arc::clone(self) as Arc<dyn Source>)?;
        Ok(())
    }

    fn accept(&self, reactor: &Reactor) {
        loop {
            let sock = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("ttrpc accept: {e}");
                    return;
                }
            };
            // accept(2) does not inherit O_NONBLOCK on Linux; writes stay blocking, bounded.
            let _ = sock.set_write_timeout(Some(Duration::from_secs(10)));
            let conn = Arc::new_cyclic(|me| Conn {
                sock,
                me: me.clone(),
                token: AtomicU64::new(0),
                rbuf: Mutex::new(Vec::new()),
                wlock: Mutex::new(()),
                server: Arc::clone(&self.shared),
            });
            // The connection lives in the reactor's table until `close` removes it.
            match reactor.add(conn.sock.as_fd(), Events::EPOLLIN | Events::EPOLLRDHUP, Arc::clone(&conn) as Arc<dyn Source>) {
                Ok(t) => conn.token.store(t, Ordering::SeqCst),
                Err(e) => log::warn!("ttrpc: watch connection: {e}"),
            }
        }
    }
}

impl Source for Server {
    fn ready(&self, reactor: &Reactor, _token: u64, _events: Events) {
        self.accept(reactor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Echoes the payload; panics on "boom".
    struct Echo;

    impl MethodHandler for Echo {
        fn handler(&self, ctx: TtrpcContext, req: Request) -> ttrpc::Result<()> {
            if req.payload == b"boom" {
                panic!("boom requested");
            }
            let mut res = Response::new();
            res.set_status(ttrpc::get_status(Code::OK, String::new()));
            res.payload = req.payload;
            ttrpc::response_to_channel(ctx.mh.stream_id, res, ctx.res_tx)
        }
    }

    fn call(sock: &mut UnixStream, stream_id: u32, payload: &[u8]) -> Response {
        let mut r = Request::new();
        r.service = "t.S".into();
        r.method = "M".into();
        r.payload = payload.to_vec();
        let body = r.encode().expect("encode");
        let mh = MessageHeader { length: body.len() as u32, stream_id, type_: MESSAGE_TYPE_REQUEST, flags: 0 };
        let mut frame: Vec<u8> = mh.into();
        frame.extend_from_slice(&body);
        sock.write_all(&frame).expect("write");
        let mut h = [0u8; MESSAGE_HEADER_LENGTH];
        sock.read_exact(&mut h).expect("read header");
        let mh = MessageHeader::from(&h);
        assert_eq!((mh.stream_id, mh.type_), (stream_id, MESSAGE_TYPE_RESPONSE));
        let mut b = vec![0u8; mh.length as usize];
        sock.read_exact(&mut b).expect("read body");
        Response::decode(&b).expect("decode")
    }

    /// A request whose handler panics gets INTERNAL; the same connection goes on being served.
    #[test]
    fn a_panicking_request_fails_alone() {
        let dir = std::env::temp_dir().join(format!("capsa-shim-srv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let reactor = Arc::new(Reactor::new().expect("reactor"));
        let mut methods: Methods = HashMap::new();
        methods.insert("/t.S/M".into(), Box::new(Echo));
        let server = Server::new(OwnedFd::from(listener), methods, HashMap::new(), Box::new(|| {})).expect("server");
        server.register(&reactor).expect("register");
        let r = Arc::clone(&reactor);
        let looper = std::thread::spawn(move || r.run());
        let mut sock = UnixStream::connect(&path).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let res = call(&mut sock, 1, b"boom");
        let status = res.status.as_ref().expect("status");
        assert_eq!(status.code.enum_value_or(Code::UNKNOWN), Code::INTERNAL);
        assert!(status.message.contains("panic") && status.message.contains("boom requested"), "{}", status.message);
        let res = call(&mut sock, 3, b"still here");
        assert_eq!(res.status.as_ref().map(|s| s.code.enum_value_or(Code::UNKNOWN)), Some(Code::OK));
        assert_eq!(res.payload, b"still here");
        reactor.stop();
        looper.join().expect("loop").expect("run");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! What the registry tests run against, all on 127.0.0.1 and started by the tests: a real
//! `docker-registry` (Debian's distribution 2.8) on a free port with no auth, htpasswd
//! over TLS with a CA made here, or token auth with the small token server below (RS256
//! JWTs signed by `openssl`); a TCP proxy that corrupts or cuts a blob; a raw HTTP client.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16, child: &mut Child, log: &Path) {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("docker-registry exited ({st}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "docker-registry did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(cmd: &mut Command) -> Vec<u8> {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (hack/deps.sh installs it)"));
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

pub enum Auth {
    None,
    /// htpasswd (bcrypt) with these users, over TLS.
    Htpasswd(Vec<(&'static str, &'static str)>),
    /// Token auth with this token server.
    Token(Arc<TokenServer>),
}

pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    /// The CA that signed the server's certificate (TLS setups).
    pub ca: Option<PathBuf>,
}

impl Registry {
    pub fn start(dir: &Path, auth: Auth) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: capsa-test-secret\n",
            dir.join("data").display()
        );
        let mut ca = None;
        match &auth {
            Auth::None => {}
            Auth::Htpasswd(users) => {
                let c = make_tls(dir);
                cfg += &format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    dir.join("server.crt").display(),
                    dir.join("server.key").display()
                );
                let mut lines = String::new();
                for (u, p) in users {
                    lines += String::from_utf8(run(Command::new("htpasswd").args(["-Bbn", u, p]))).unwrap().trim();
                    lines.push('\n');
                }
                std::fs::write(dir.join("htpasswd"), lines).unwrap();
                cfg += &format!("auth:\n  htpasswd:\n    realm: capsa-test\n    path: {}\n", dir.join("htpasswd").display());
                ca = Some(c);
            }
            Auth::Token(t) => {
                cfg += &format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    t.port,
                    t.cert.display()
                );
            }
        }
        std::fs::write(dir.join("config.yml"), cfg).unwrap();
        let log = dir.join("registry.log");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("docker-registry (hack/deps.sh installs it)");
        wait_port(port, &mut child, &log);
        Registry { child, port, dir: dir.to_path_buf(), ca }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A certs.d directory that trusts this registry's CA.
    pub fn certs_d(&self, dir: &Path) -> PathBuf {
        let d = dir.join("certs.d");
        std::fs::create_dir_all(d.join(self.host())).unwrap();
        std::fs::copy(self.ca.as_ref().unwrap(), d.join(self.host()).join("ca.crt")).unwrap();
        d
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it; returns the CA's path.
fn make_tls(dir: &Path) -> PathBuf {
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    run(Command::new("openssl").args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]).args([
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
        "-days",
        "2",
        "-subj",
        "/CN=capsa test CA",
    ]));
    run(Command::new("openssl").args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]).args([
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
        "-subj",
        "/CN=127.0.0.1",
    ]));
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl").args(["x509", "-req", "-in", &p("server.csr"), "-CA", &p("ca.crt"), "-CAkey", &p("ca.key")]).args([
        "-CAcreateserial",
        "-out",
        &p("server.crt"),
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
    ]));
    dir.join("ca.crt")
}

pub const SERVICE: &str = "capsa-test-registry";
pub const ISSUER: &str = "capsa-test-issuer";

/// The token service of docker's token auth: `GET /token?service=&scope=...` with Basic
/// credentials (or none: anonymous, granted nothing), answering a JWT signed RS256 with
/// a key whose self-signed certificate the registry trusts (the `x5c` header).
pub struct TokenServer {
    pub port: u16,
    key: PathBuf,
    pub cert: PathBuf,
    cert_der: Vec<u8>,
    users: Vec<(&'static str, &'static str)>,
    /// Tokens handed out, and requests refused.
    pub issued: AtomicUsize,
    pub refused: AtomicUsize,
    stop: AtomicBool,
}

impl TokenServer {
    pub fn start(dir: &Path, users: Vec<(&'static str, &'static str)>) -> Arc<TokenServer> {
        std::fs::create_dir_all(dir).unwrap();
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=capsa token issuer"])
            .args(["-keyout".as_ref(), key.as_os_str(), "-out".as_ref(), cert.as_os_str()]));
        let cert_der = run(Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = Arc::new(TokenServer {
            port,
            key,
            cert,
            cert_der,
            users,
            issued: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let t2 = t.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if t2.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(c) = conn {
                    let t3 = t2.clone();
                    std::thread::spawn(move || t3.serve(c));
                }
            }
        });
        t
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }

    fn serve(&self, mut c: TcpStream) {
        let Some((head, _)) = read_head(&mut c) else { return };
        let first = head.lines().next().unwrap_or("").to_string();
        let target = first.split(' ').nth(1).unwrap_or("").to_string();
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        let mut scopes = Vec::new();
        let mut service = String::new();
        for kv in query.split('&') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = unescape(v);
            match k {
                "scope" => scopes.push(v),
                "service" => service = v,
                _ => {}
            }
        }
        let auth = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization").then(|| v.trim().to_string())
        });
        let user = match auth {
            None => None,
            Some(a) => {
                let pair = a.strip_prefix("Basic ").and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
                let pair = pair.map(|p| String::from_utf8_lossy(&p).into_owned()).unwrap_or_default();
                match self.users.iter().find(|(u, p)| format!("{u}:{p}") == pair) {
                    Some((u, _)) => Some(u.to_string()),
                    None => {
                        self.refused.fetch_add(1, Ordering::SeqCst);
                        let _ = c.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    }
                }
            }
        };
        if service != SERVICE {
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        // Authenticated users get what they ask for; anonymous ones get nothing.
        let access: Vec<serde_json::Value> = if user.is_some() {
            scopes
                .iter()
                .filter_map(|s| {
                    let mut p = s.splitn(3, ':');
                    let (typ, name, actions) = (p.next()?, p.next()?, p.next()?);
                    Some(serde_json::json!({"type": typ, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                })
                .collect()
        } else {
            Vec::new()
        };
        let jwt = self.sign(user.as_deref().unwrap_or(""), access);
        self.issued.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::json!({"token": jwt, "expires_in": 300}).to_string();
        let _ = write!(
            c,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    fn sign(&self, sub: &str, access: Vec<serde_json::Value>) -> String {
        let b64u = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let header =
            serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)]});
        let claims = serde_json::json!({"iss": ISSUER, "sub": sub, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", self.issued.load(Ordering::SeqCst)), "access": access});
        let input = format!("{}.{}", b64u(header.to_string().as_bytes()), b64u(claims.to_string().as_bytes()));
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        format!("{input}.{}", b64u(&out.stdout))
    }
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads an HTTP head (up to the blank line); returns it and what came after.
fn read_head(c: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = c.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    }
}

/// A raw HTTP/1.1 request to 127.0.0.1 (plain): (status, headers, body).
pub fn http(method: &str, port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    c.write_all(req.as_bytes()).unwrap();
    c.write_all(body).unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    let i = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..i]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = all[i + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let i = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
}

/// What the proxy does to the registry's answers.
#[derive(Clone, Copy)]
pub enum Fault {
    /// Flips one byte at this offset of every connection's answer stream.
    Corrupt(u64),
    /// Closes the first connection whose answers pass this many bytes (once).
    Cut(u64),
    /// Replaces these bytes by those wherever a read of the answers holds them (headers).
    Rewrite(&'static str, &'static str),
    /// Answers the first N connections with 503 Service Unavailable, then passes through.
    Unavailable(usize),
    /// Stops sending (for 10 s) once the first connection's answers pass this offset.
    Stall(u64),
}

/// A TCP proxy to a registry on 127.0.0.1 that applies a [`Fault`], and notes whether a
/// client asked for a Range.
pub struct Proxy {
    pub port: u16,
    pub saw_range: Arc<AtomicBool>,
    pub fired: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: u16, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let saw_range = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (sr, fi, st) = (saw_range.clone(), fired.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut client) = conn else { continue };
                if let Fault::Unavailable(n) = fault {
                    if fi.load(Ordering::SeqCst) < n {
                        fi.fetch_add(1, Ordering::SeqCst);
                        // Whatever the request (a TLS hello too), one read, then the answer.
                        let _ = client.read(&mut [0u8; 4096]);
                        let _ = client.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        continue;
                    }
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let sr = sr.clone();
                std::thread::spawn(move || pipe_requests(c2, s2, &sr));
                let fi = fi.clone();
                std::thread::spawn(move || pipe_answers(server, client, fault, &fi));
            }
        });
        Proxy { port, saw_range, fired, stop }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pipe_requests(mut from: TcpStream, mut to: TcpStream, saw_range: &AtomicBool) {
    let mut b = vec![0u8; 64 << 10];
    let seen = Mutex::new(());
    loop {
        let n = match from.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if b[..n].windows(13).any(|w| w.eq_ignore_ascii_case(b"range: bytes=")) {
            let _g = seen.lock();
            saw_range.store(true, Ordering::SeqCst);
        }
        if to.write_all(&b[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn pipe_answers(mut from: TcpStream, mut to: TcpStream, fault: Fault, fired: &AtomicUsize) {
    let mut b = vec![0u8; 64 << 10];
    let mut pos = 0u64;
    loop {
        let n = match from.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let end = pos + n as u64;
        match fault {
            Fault::Corrupt(at) if pos <= at && at < end => {
                b[(at - pos) as usize] ^= 0x55;
                fired.fetch_add(1, Ordering::SeqCst);
            }
            Fault::Rewrite(old, new) => {
                let chunk = &b[..n];
                if let Some(i) = chunk.windows(old.len()).position(|w| w == old.as_bytes()) {
                    fired.fetch_add(1, Ordering::SeqCst);
                    let mut v = chunk[..i].to_vec();
                    v.extend_from_slice(new.as_bytes());
                    v.extend_from_slice(&chunk[i + old.len()..]);
                    if to.write_all(&v).is_err() {
                        break;
                    }
                    pos = end;
                    continue;
                }
            }
            Fault::Stall(at) if end > at && fired.load(Ordering::SeqCst) == 0 => {
                fired.fetch_add(1, Ordering::SeqCst);
                let _ = to.write_all(&b[..(at - pos.min(at)) as usize]);
                std::thread::sleep(std::time::Duration::from_secs(30));
                let _ = to.shutdown(std::net::Shutdown::Both);
                let _ = from.shutdown(std::net::Shutdown::Both);
                return;
            }
            Fault::Cut(at) if end > at && fired.load(Ordering::SeqCst) == 0 => {
                fired.fetch_add(1, Ordering::SeqCst);
                let _ = to.write_all(&b[..(at - pos.min(at)) as usize]);
                let _ = to.shutdown(std::net::Shutdown::Both);
                let _ = from.shutdown(std::net::Shutdown::Both);
                return;
            }
            _ => {}
        }
        if to.write_all(&b[..n]).is_err() {
            break;
        }
        pos = end;
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// One canned answer of an [`Evil`] registry.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The Content-Length to announce; None: none (the body ends when the connection does).
    pub length: Option<u64>,
}

impl Answer {
    pub fn new(status: u16, body: &[u8]) -> Answer {
        Answer { status, headers: Vec::new(), body: body.to_vec(), length: Some(body.len() as u64) }
    }

    pub fn header(mut self, k: &str, v: &str) -> Answer {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
}

/// A hostile registry on 127.0.0.1 (plain HTTP): canned answers by path (query ignored),
/// whatever the request; 404 for other paths. Every request's head is kept in `seen`.
pub struct Evil {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Evil {
    pub fn start(routes: Vec<(String, Answer)>) -> Evil {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let routes = Arc::new(routes);
        let (se, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(c) = conn else { continue };
                let (routes, se) = (routes.clone(), se.clone());
                std::thread::spawn(move || Evil::serve(c, &routes, &se));
            }
        });
        Evil { port, seen, stop }
    }

    fn serve(mut c: TcpStream, routes: &[(String, Answer)], seen: &Mutex<Vec<String>>) {
        let mut first = [0u8; 1];
        if c.peek(&mut first).is_err() {
            return;
        }
        if first[0] == 0x16 {
            // A TLS hello: answer as a plain HTTP server does (the client falls back).
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        let Some((head, _)) = read_head(&mut c) else { return };
        seen.lock().unwrap().push(head.clone());
        let target = head.lines().next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_string();
        let path = target.split('?').next().unwrap_or("");
        let a = routes.iter().find(|(p, _)| p == path).map(|(_, a)| a.clone()).unwrap_or_else(|| {
            Answer::new(404, br#"{"errors":[{"code":"NAME_UNKNOWN","message":"nothing here"}]}"#).header("Content-Type", "application/json")
        });
        let mut h = format!("HTTP/1.1 {} Evil\r\nConnection: close\r\n", a.status);
        for (k, v) in &a.headers {
            h += &format!("{k}: {v}\r\n");
        }
        if let Some(n) = a.length {
            h += &format!("Content-Length: {n}\r\n");
        }
        h += "\r\n";
        let _ = c.write_all(h.as_bytes());
        let _ = c.write_all(&a.body);
        let _ = c.shutdown(std::net::Shutdown::Both);
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The heads of the requests for `path` so far.
    pub fn requests_for(&self, path: &str) -> Vec<String> {
        let want = format!(" {path}");
        self.seen.lock().unwrap().iter().filter(|h| h.lines().next().unwrap_or("").contains(&want)).cloned().collect()
    }
}

impl Drop for Evil {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

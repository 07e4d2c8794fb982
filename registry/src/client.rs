//! One connection to a registry endpoint: the transport (TLS or, where allowed, plain
//! HTTP), authentication, retries.
//!
//! * TLS: rustls with the system's roots (`$SSL_CERT_FILE` or Debian's bundle) plus the
//!   CAs in `certs.d/<host[:port]>/*.crt`, and a client certificate from `*.cert` + `*.key`
//!   there. Plain HTTP only for a registry marked insecure (after HTTPS without
//!   verification fails, as docker) and for a loopback one whose server does not speak TLS.
//! * Auth: `GET /v2/` first (docker's ping); its 401 challenge says Basic or Bearer. Every
//!   request then carries the pair or a token; a token is asked for once for all the
//!   scopes of the operation and kept until it expires. A 401 later (a token expired early,
//!   a scope the registry wants) gets one fresh token and one retry.
//! * Retries: connection failures, resets, 5xx and 429 are retried 4 times with
//!   exponential backoff (0.2 s, 0.4 s, ...). A read or write that stalls for
//!   [`Settings::timeout_idle`] fails (and a blob download resumes, see pull.rs).
//!
//! A `Client` is shared by the worker threads of one pull or push (ureq's agent pools
//! connections; the auth state is behind a mutex). It starts no thread of its own.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use crate::auth::{parse_challenge, Challenge, Credentials};
use crate::settings::{is_loopback, Endpoint, Scheme, Settings};
use capsa_image::{Error, Result};

const RETRIES: u32 = 4;

pub struct Client {
    agent: ureq::Agent,
    /// `https://host[:port][/prefix]`, decided by the ping.
    base: String,
    pub endpoint: Endpoint,
    creds: Option<Credentials>,
    scopes: Vec<String>,
    insecure_realms: Vec<String>,
    state: Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Scopes a 401 asked for beyond ours.
    extra: Vec<String>,
    token: Option<(String, Instant)>,
}

/// A request body that can be sent again on a retry.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of `file` from `offset`; `on_bytes` hears of each chunk sent.
    File {
        file: &'a File,
        offset: u64,
        len: u64,
        on_bytes: Option<&'a (dyn Fn(u64) + Sync)>,
    },
}

impl Client {
    /// Opens `ep`: builds the TLS config, pings `/v2/` (choosing HTTPS or plain HTTP) and
    /// learns how the registry authenticates. `scopes` are the token scopes the operation
    /// needs (`repository:NAME:pull[,push]`).
    pub fn connect(settings: &Settings, ep: &Endpoint, scopes: Vec<String>, creds: Option<Credentials>) -> Result<Client> {
        let verified = || agent(settings, tls_config(settings, &ep.host, true)?);
        let mut insecure_realms = settings.insecure.clone();
        if is_loopback(&ep.host) {
            insecure_realms.push(ep.host.clone());
        }
        let https = format!("https://{}{}", ep.host, ep.prefix);
        let http = format!("http://{}{}", ep.host, ep.prefix);
        let mk = |agent: ureq::Agent, base: String| Client {
            agent,
            base,
            endpoint: ep.clone(),
            creds: creds.clone(),
            scopes: scopes.clone(),
            insecure_realms: insecure_realms.clone(),
            state: Mutex::new(AuthState::default()),
        };
        let c = match ep.scheme {
            Scheme::Https => mk(verified()?, https),
            Scheme::Http => mk(agent(settings, tls_config(settings, &ep.host, true)?)?, http),
            Scheme::HttpsOrHttp => {
                let c = mk(verified()?, https);
                match c.ping() {
                    Ok(()) => return Ok(c),
                    Err(e) if not_tls(&e) => mk(c.agent.clone(), http),
                    Err(e) => return Err(e),
                }
            }
            Scheme::Insecure => {
                let c = mk(agent(settings, tls_config(settings, &ep.host, false)?)?, https);
                match c.ping() {
                    Ok(()) => return Ok(c),
                    Err(_) => mk(c.agent.clone(), http),
                }
            }
        };
        c.ping()?;
        Ok(c)
    }

    /// `GET /v2/`: 200 (open) or 401 with a challenge.
    fn ping(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let mut last = None;
        for attempt in 0..=RETRIES {
            match self.agent.get(&url).call() {
                Ok(r) => {
                    drain(r);
                    return Ok(());
                }
                Err(ureq::Error::Status(401, r)) => {
                    let ch = r.header("www-authenticate").and_then(parse_challenge);
                    drain(r);
                    let Some(ch) = ch else {
                        return Err(Error::new(format!("GET {url}: 401 without a Basic or Bearer challenge")));
                    };
                    if let Ok(mut st) = self.state.lock() {
                        st.challenge = Some(ch);
                    }
                    return Ok(());
                }
                Err(ureq::Error::Status(code, r)) if retryable(code) && attempt < RETRIES => {
                    drain(r);
                    backoff(attempt);
                }
                Err(ureq::Error::Status(_, r)) => {
                    return Err(status_error("GET", &url, r).context("not a registry (API v2)"));
                }
                Err(ureq::Error::Transport(t)) => {
                    let e = Error::new(format!("GET {url}: {t}"));
                    if attempt == RETRIES || not_tls(&e) || t.kind() == ureq::ErrorKind::InvalidUrl {
                        return Err(e);
                    }
                    last = Some(e);
                    backoff(attempt);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::new(format!("GET {url}: failed"))))
    }

    /// The URL of `/v2/<path>` (or a Location the registry gave, absolute or not).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if path.starts_with("/v2/") {
            format!("{}{path}", self.base)
        } else {
            // A Location relative to the host (registries send /v2/... ones).
            let origin_end = self.base.find("://").map(|i| i + 3).unwrap_or(0);
            let host_end = self.base[origin_end..].find('/').map(|i| origin_end + i).unwrap_or(self.base.len());
            format!("{}/{}", &self.base[..host_end], path.trim_start_matches('/'))
        }
    }

    /// Sends a request with authentication, retrying what may be retried. Returns the
    /// response whatever its status (callers check it; [`status_error`] words it).
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &Body) -> Result<ureq::Response> {
        let url = self.url(path);
        // Credentials go to our registry's origin only, never to a host a Location or a
        // redirect names (ureq drops them on redirects itself).
        let ours = origin(&url) == origin(&self.base);
        // A body sent in part cannot be sent again to the same upload session: uploads
        // are retried whole by push.rs instead.
        let retries = if matches!(body, Body::File { .. }) || method == "PATCH" { 0 } else { RETRIES };
        let mut reauthed = false;
        let mut attempt = 0;
        loop {
            let mut req = self.agent.request(method, &url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if ours {
                if let Some(a) = self.authorization()? {
                    req = req.set("Authorization", &a);
                }
            }
            let res = match body {
                Body::Empty if method == "PUT" || method == "POST" || method == "PATCH" => req.set("Content-Length", "0").call(),
                Body::Empty => req.call(),
                Body::Bytes(b) => req.send_bytes(b),
                Body::File { file, offset, len, on_bytes } => {
                    req.set("Content-Length", &len.to_string()).send(PRead { file, pos: *offset, end: offset + len, on_bytes: *on_bytes })
                }
            };
            let resp = match res {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(ureq::Error::Transport(t)) => {
                    if attempt >= retries {
                        return Err(Error::new(format!("{method} {url}: {t}")));
                    }
                    backoff(attempt);
                    attempt += 1;
                    continue;
                }
            };
            let code = resp.status();
            if code == 401 && ours && !reauthed {
                reauthed = true;
                let ch = resp.header("www-authenticate").and_then(parse_challenge);
                drain(resp);
                let mut st = self.state.lock().map_err(|_| Error::new("auth state poisoned"))?;
                st.token = None;
                if let Some(ch) = ch {
                    if let Challenge::Bearer { scope: Some(s), .. } = &ch {
                        for s in s.split(' ') {
                            if !self.scopes.iter().any(|x| x == s) && !st.extra.iter().any(|x| x == s) {
                                st.extra.push(s.to_string());
                            }
                        }
                    }
                    st.challenge = Some(ch);
                }
                continue;
            }
            if retryable(code) && attempt < retries {
                drain(resp);
                backoff(attempt);
                attempt += 1;
                continue;
            }
            return Ok(resp);
        }
    }

    /// The Authorization header for our registry, fetching a token if needed.
    fn authorization(&self) -> Result<Option<String>> {
        let mut st = self.state.lock().map_err(|_| Error::new("auth state poisoned"))?;
        match st.challenge.clone() {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.creds.as_ref().map(Credentials::basic)),
            Some(Challenge::Bearer { realm, service, .. }) => {
                if let Some((t, exp)) = &st.token {
                    if Instant::now() < *exp {
                        return Ok(Some(format!("Bearer {t}")));
                    }
                }
                let mut scopes = self.scopes.clone();
                scopes.extend(st.extra.iter().cloned());
                let (token, ttl) = self.fetch_token(&realm, service.as_deref(), &scopes, self.creds.as_ref())?;
                // Renewed a little before the registry would refuse it.
                let exp = Instant::now() + ttl.saturating_sub(Duration::from_secs(5));
                st.token = Some((token.clone(), exp));
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Asks the token service `realm` for a token for `scopes`, with `creds` if any.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        creds: Option<&Credentials>,
    ) -> Result<(String, Duration)> {
        let host = realm.strip_prefix("http://").map(|r| r.split('/').next().unwrap_or(r));
        if let Some(h) = host {
            if !(is_loopback(h) || self.insecure_realms.iter().any(|i| i == h || crate::settings::strip_port(h) == i)) {
                return Err(Error::new(format!("token realm {realm}: plain HTTP is only allowed for loopback and insecure registries")));
            }
        } else if !realm.starts_with("https://") {
            return Err(Error::new(format!("token realm {realm:?}: not an http(s) URL")));
        }
        let mut q = Vec::new();
        if let Some(s) = service {
            q.push(format!("service={}", encode(s)));
        }
        for s in scopes {
            q.push(format!("scope={}", encode(s)));
        }
        if let Some(c) = creds {
            q.push(format!("account={}", encode(&c.username)));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = if q.is_empty() { realm.to_string() } else { format!("{realm}{sep}{}", q.join("&")) };
        let shown = realm;
        let mut attempt = 0;
        let resp = loop {
            let mut req = self.agent.get(&url);
            if let Some(c) = creds {
                req = req.set("Authorization", &c.basic());
            }
            match req.call() {
                Ok(r) => break r,
                Err(ureq::Error::Status(401, r)) | Err(ureq::Error::Status(403, r)) => {
                    let e = status_error("GET", shown, r);
                    let why = if creds.is_some() { "incorrect username or password" } else { "authentication required" };
                    return Err(Error::new(format!("{}: unauthorized: {why} ({e})", self.endpoint.host)));
                }
                Err(ureq::Error::Status(code, r)) if retryable(code) && attempt < RETRIES => drain(r),
                Err(ureq::Error::Status(_, r)) => return Err(status_error("GET", shown, r).context("token")),
                Err(ureq::Error::Transport(t)) if attempt >= RETRIES => return Err(Error::new(format!("token from {shown}: {t}"))),
                Err(ureq::Error::Transport(_)) => {}
            }
            backoff(attempt);
            attempt += 1;
        };
        let body = read_limited(resp, 1 << 20, "token response")?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| Error::new(format!("token from {shown}: {e}")))?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::new(format!("token from {shown}: no token in the answer")))?;
        // The spec's default and minimum lifetime is 60 s.
        let ttl = v.get("expires_in").and_then(Value::as_u64).unwrap_or(60).max(60);
        Ok((token.to_string(), Duration::from_secs(ttl)))
    }

    /// Checks credentials against the registry the way `docker login` does: `/v2/` with
    /// the pair (Basic), or a token asked for with it and no scope (Bearer).
    pub fn check_login(&self) -> Result<()> {
        let ch = self.state.lock().map_err(|_| Error::new("auth state poisoned"))?.challenge.clone();
        match ch {
            None => Ok(()),
            Some(Challenge::Basic) => {
                let r = self.send("GET", "/v2/", &[], &Body::Empty)?;
                match r.status() {
                    200 => {
                        drain(r);
                        Ok(())
                    }
                    401 => {
                        drain(r);
                        Err(Error::new(format!("{}: unauthorized: incorrect username or password", self.endpoint.host)))
                    }
                    _ => Err(status_error("GET", &self.url("/v2/"), r)),
                }
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                self.fetch_token(&realm, service.as_deref(), &[], self.creds.as_ref()).map(|_| ())
            }
        }
    }
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[start..].find('/') {
        Some(i) => &url[..start + i],
        None => url,
    }
}

/// Whether a failed HTTPS attempt means the server speaks plain HTTP.
fn not_tls(e: &Error) -> bool {
    let s = e.to_string();
    s.contains("InvalidContentType") || s.contains("corrupt message") || s.contains("HTTP response to HTTPS")
}

fn retryable(code: u16) -> bool {
    code == 429 || code == 408 || (500..600).contains(&code) && code != 501 && code != 505
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(200 << attempt.min(5)));
}

/// Reads what is left of a response so its connection goes back to the pool.
pub fn drain(r: ureq::Response) {
    let _ = std::io::copy(&mut r.into_reader().take(1 << 20), &mut std::io::sink());
}

/// Reads a whole response body, refusing more than `limit` bytes (by Content-Length
/// before reading, and while reading).
pub fn read_limited(r: ureq::Response, limit: u64, what: &str) -> Result<Vec<u8>> {
    if let Some(n) = r.header("content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
        if n > limit {
            return Err(Error::new(format!("{what}: {n} bytes is more than the {limit} allowed")));
        }
    }
    let mut out = Vec::new();
    r.into_reader().take(limit + 1).read_to_end(&mut out).map_err(|e| Error::new(format!("{what}: {e}")))?;
    if out.len() as u64 > limit {
        return Err(Error::new(format!("{what}: more than the {limit} bytes allowed")));
    }
    Ok(out)
}

/// An error for a response the caller did not expect: the status and the registry's
/// own error codes (`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"..."}]}`).
pub fn status_error(method: &str, url: &str, r: ureq::Response) -> Error {
    let code = r.status();
    let text = r.status_text().to_string();
    let body = read_limited(r, 64 << 10, "error body").unwrap_or_default();
    let mut detail = String::new();
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        if let Some(errs) = v.get("errors").and_then(Value::as_array) {
            let parts: Vec<String> = errs
                .iter()
                .map(|e| {
                    let c = e.get("code").and_then(Value::as_str).unwrap_or("");
                    let m = e.get("message").and_then(Value::as_str).unwrap_or("");
                    format!("{c}: {m}")
                })
                .collect();
            detail = parts.join("; ");
        }
    }
    if detail.is_empty() {
        detail = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
    }
    let sep = if detail.is_empty() { "" } else { ": " };
    let hint = if code == 401 || code == 403 {
        let host = origin(url).split("://").nth(1).unwrap_or("");
        format!(" (not logged in, or not allowed: capsactl login {host})")
    } else {
        String::new()
    };
    Error::new(format!("{method} {url}: {code} {text}{sep}{detail}{hint}"))
}

/// Percent-encoding of a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A file region read with pread (no shared offset), reporting what was read.
struct PRead<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    on_bytes: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl Read for PRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "blob shorter than its size"));
        }
        self.pos += n as u64;
        if let Some(f) = self.on_bytes {
            f(n as u64);
        }
        Ok(n)
    }
}

fn agent(settings: &Settings, tls: Arc<rustls::ClientConfig>) -> Result<ureq::Agent> {
    Ok(ureq::AgentBuilder::new()
        .tls_config(tls)
        .timeout_connect(settings.timeout_connect)
        .timeout_read(settings.timeout_idle)
        .timeout_write(settings.timeout_idle)
        .max_idle_connections_per_host(16)
        .redirects(5)
        .user_agent(concat!("capsactl/", env!("CARGO_PKG_VERSION")))
        .build())
}

/// The rustls config for `host`: verified against the system roots and certs.d's CAs, or
/// (`verify` false, insecure registries) not verified at all.
pub fn tls_config(settings: &Settings, host: &str, verify: bool) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(format!("TLS: {e}")))?;
    let dirs: Vec<_> = settings.certs_dirs.iter().map(|d| d.join(host)).filter(|d| d.is_dir()).collect();
    let builder = if verify {
        let mut roots = rustls::RootCertStore::empty();
        let system = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .into_iter()
            .chain(["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"].map(std::path::PathBuf::from))
            .find(|p| p.is_file());
        if let Some(p) = system {
            if let Ok(it) = CertificateDer::pem_file_iter(&p) {
                roots.add_parsable_certificates(it.flatten());
            }
        }
        for d in &dirs {
            for f in files_with(d, ".crt") {
                let certs: Vec<_> = CertificateDer::pem_file_iter(&f)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| Error::new(format!("{}: {e}", f.display())))?;
                for c in certs {
                    roots.add(c).map_err(|e| Error::new(format!("{}: {e}", f.display())))?;
                }
            }
        }
        builder.with_root_certificates(roots)
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    // A client certificate: NAME.cert with NAME.key beside it (the first one found).
    if let Some(cert) = dirs.iter().flat_map(|d| files_with(d, ".cert")).next() {
        let key = cert.with_extension("key");
        if !key.is_file() {
            return Err(Error::new(format!("{}: no {} beside it", cert.display(), key.display())));
        }
        let chain: Vec<_> = CertificateDer::pem_file_iter(&cert)
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| Error::new(format!("{}: {e}", cert.display())))?;
        let k = PrivateKeyDer::from_pem_file(&key).map_err(|e| Error::new(format!("{}: {e}", key.display())))?;
        let cfg = builder.with_client_auth_cert(chain, k).map_err(|e| Error::new(format!("{}: {e}", cert.display())))?;
        return Ok(Arc::new(cfg));
    }
    Ok(Arc::new(builder.with_no_client_auth()))
}

fn files_with(dir: &std::path::Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(ext)).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Accepts any server certificate (registries marked insecure only).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_above_the_limit_are_refused() {
        let big = vec![b' '; 5 << 20];
        let r = ureq::Response::new(200, "OK", std::str::from_utf8(&big).unwrap()).unwrap();
        let e = read_limited(r, 4 << 20, "manifest").unwrap_err().to_string();
        assert!(e.contains("more than the 4194304"), "{e}");
        let r = ureq::Response::new(200, "OK", "{}").unwrap();
        assert_eq!(read_limited(r, 4 << 20, "manifest").unwrap(), b"{}");
        assert_eq!(encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(origin("https://h:5000/v2/x?y"), "https://h:5000");
    }
}

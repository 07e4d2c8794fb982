//! Credentials and the authentication flows.
//!
//! Credentials live where docker keeps them, so docker and capsactl share logins: the
//! `config.json` of [`crate::Settings::docker_config`]:
//!
//! ```json
//! {"auths": {"reg.example:5000": {"auth": "base64(user:password)"}},
//!  "credHelpers": {"reg.example:5000": "pass"}, "credsStore": "secretservice"}
//! ```
//!
//! A host's helper (`credHelpers`, else `credsStore`) is the program
//! `docker-credential-<name>` speaking docker's protocol (`get`/`store`/`erase`, server
//! URL or JSON on stdin, JSON on stdout); without one, `auths` holds the base64 pair. Keys
//! are compared as docker does (scheme and path dropped), and docker.io's key is
//! `https://index.docker.io/v1/`. Other fields of the file are kept untouched when
//! capsactl writes it (atomically, mode 0600).
//!
//! Challenges: a registry answers 401 with `WWW-Authenticate: Basic realm=...` (send the
//! pair) or `Bearer realm=...,service=...,scope=...` (ask the realm for a token with the
//! pair, if any, and send the token); see [`crate::client`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use capsa_image::{Error, Result};

/// docker.io's key in config.json.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization` header value of HTTP Basic.
    pub fn basic(&self) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.username, self.password)))
    }
}

/// The config.json key of a registry (by its image-name domain or host).
pub fn server_key(domain: &str) -> String {
    match domain {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY.to_string(),
        d => d.to_string(),
    }
}

/// docker's ConvertToHostname: `https://reg:5000/v1/` → `reg:5000`.
fn hostname_of(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn same_server(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        match hostname_of(s) {
            "index.docker.io" | "registry-1.docker.io" | "docker.io" => "index.docker.io".into(),
            h => h.to_string(),
        }
    };
    norm(a) == norm(b)
}

/// docker's config.json, as a JSON value so that fields we do not know are kept.
pub struct DockerConfig {
    pub path: PathBuf,
    json: Value,
}

impl DockerConfig {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<DockerConfig> {
        let json = match std::fs::read(path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => json!({}),
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::new(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
            Err(e) => return Err(Error::new(format!("read {}: {e}", path.display()))),
        };
        if !json.is_object() {
            return Err(Error::new(format!("{}: not a JSON object", path.display())));
        }
        Ok(DockerConfig { path: path.to_path_buf(), json })
    }

    fn helper_for(&self, key: &str) -> Option<String> {
        if let Some(Value::Object(h)) = self.json.get("credHelpers") {
            for (k, v) in h {
                if same_server(k, key) {
                    return v.as_str().map(str::to_string);
                }
            }
        }
        self.json.get("credsStore").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
    }

    /// The credentials for server `key` (see [`server_key`]), if any.
    pub fn get(&self, key: &str) -> Result<Option<Credentials>> {
        if let Some(h) = self.helper_for(key) {
            return helper_get(&h, key);
        }
        let Some(Value::Object(auths)) = self.json.get("auths") else { return Ok(None) };
        for (k, v) in auths {
            if !same_server(k, key) {
                continue;
            }
            let what = format!("{}: auths.{k}", self.path.display());
            if let Some(a) = v.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .map_err(|e| Error::new(format!("{what}.auth: not base64: {e}")))?;
                let s = String::from_utf8(raw).map_err(|_| Error::new(format!("{what}.auth: not UTF-8")))?;
                let (u, p) = s.split_once(':').ok_or_else(|| Error::new(format!("{what}.auth: want base64 of user:password")))?;
                return Ok(Some(Credentials { username: u.to_string(), password: p.to_string() }));
            }
            if let (Some(u), Some(p)) = (v.get("username").and_then(Value::as_str), v.get("password").and_then(Value::as_str)) {
                return Ok(Some(Credentials { username: u.to_string(), password: p.to_string() }));
            }
            if v.get("identitytoken").is_some() {
                return Err(Error::new(format!("{what}: identity tokens (OAuth) are not supported: log in with a password or token")));
            }
        }
        Ok(None)
    }

    /// Records credentials for `key`: through its helper, else in `auths`; then saves.
    pub fn store(&mut self, key: &str, c: &Credentials) -> Result<()> {
        let key = &server_key(hostname_of(key));
        if let Some(h) = self.helper_for(key) {
            let input = json!({"ServerURL": key, "Username": c.username, "Secret": c.password}).to_string();
            helper(&h, "store", &input)?;
            return Ok(());
        }
        let obj = self.json.as_object_mut().ok_or_else(|| Error::new("config.json: not an object"))?;
        let auths = obj.entry("auths").or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Some(a) = auths.as_object_mut() {
            let old: Vec<String> = a.keys().filter(|k| same_server(k, key) && *k != key).cloned().collect();
            for k in old {
                a.remove(&k);
            }
            let pair = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
            a.insert(key.to_string(), json!({"auth": pair}));
        }
        self.save()
    }

    /// Removes the credentials of `key`; returns whether there were any.
    pub fn erase(&mut self, key: &str) -> Result<bool> {
        if let Some(h) = self.helper_for(key) {
            helper(&h, "erase", key)?;
            return Ok(true);
        }
        let mut found = false;
        if let Some(Value::Object(a)) = self.json.get_mut("auths") {
            let keys: Vec<String> = a.keys().filter(|k| same_server(k, key)).cloned().collect();
            for k in keys {
                a.remove(&k);
                found = true;
            }
        }
        if found {
            self.save()?;
        }
        Ok(found)
    }

    /// Writes the file atomically (a temporary file in the same directory, mode 0600,
    /// renamed over it), as docker does.
    fn save(&self) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::new(format!("create {}: {e}", dir.display())))?;
        let tmp = dir.join(format!(".config.json.{}", capsa_image::content::random_suffix()));
        let text = serde_json::to_vec_pretty(&self.json).map_err(|e| Error::new(format!("encode config.json: {e}")))?;
        let res = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&text).and_then(|_| f.write_all(b"\n")).and_then(|_| f.sync_all()))
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::new(format!("write {}: {e}", self.path.display())));
        }
        Ok(())
    }
}

/// Runs `docker-credential-<name> <op>` with `input` on stdin; returns its stdout.
fn helper(name: &str, op: &str, input: &str) -> Result<Vec<u8>> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(Error::new(format!("credential helper {name:?}: not a valid helper name")));
    }
    let prog = format!("docker-credential-{name}");
    let mut child = Command::new(&prog)
        .arg(op)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::new(format!("credential helper {prog}: {e}")))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| Error::new(format!("credential helper {prog}: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(if out.stdout.is_empty() { &out.stderr } else { &out.stdout }).trim().to_string();
        return Err(Error::new(format!("credential helper {prog} {op}: {msg}")));
    }
    Ok(out.stdout)
}

fn helper_get(name: &str, key: &str) -> Result<Option<Credentials>> {
    let out = match helper(name, "get", key) {
        Ok(o) => o,
        // The protocol's answer for "none stored".
        Err(e) if e.to_string().contains("credentials not found") => return Ok(None),
        Err(e) => return Err(e),
    };
    let v: Value = serde_json::from_slice(&out).map_err(|e| Error::new(format!("credential helper {name}: output: {e}")))?;
    let user = v.get("Username").and_then(Value::as_str).unwrap_or_default();
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or_default();
    if user == "<token>" {
        return Err(Error::new(format!("credential helper {name}: identity tokens (OAuth) are not supported")));
    }
    if user.is_empty() && secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials { username: user.to_string(), password: secret.to_string() }))
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let params = parse_params(rest);
    let get = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
    } else {
        None
    }
}

/// `a="x, y",b=z` → [(a, "x, y"), (b, z)].
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let name = s[start..i].trim().to_string();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                let ch = s[i..].chars().next().unwrap_or(' ');
                val.push(ch);
                i += ch.len_utf8();
            }
            i += 1;
        } else {
            let st = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[st..i].trim().to_string();
        }
        if !name.is_empty() {
            out.push((name, val));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into())
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="basic-realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn config_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("capsa-auth-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = dir.join("config.json");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&p, r#"{"auths":{"https://reg.lan:5000/v1/":{"auth":"YTpi"}},"psFormat":"table"}"#).unwrap();
        let mut c = DockerConfig::load(&p).unwrap();
        assert_eq!(c.get("reg.lan:5000").unwrap(), Some(Credentials { username: "a".into(), password: "b".into() }));
        assert_eq!(c.get("reg.lan:5001").unwrap(), None);
        c.store("docker.io", &Credentials { username: "me".into(), password: "p:w".into() }).unwrap();
        let c2 = DockerConfig::load(&p).unwrap();
        assert_eq!(c2.get(&server_key("docker.io")).unwrap().unwrap().password, "p:w");
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "table");
        assert_eq!(v["auths"][DOCKER_HUB_KEY]["auth"], "bWU6cDp3");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let mut c3 = DockerConfig::load(&p).unwrap();
        assert!(c3.erase("reg.lan:5000").unwrap());
        assert!(!c3.erase("reg.lan:5000").unwrap());
        assert_eq!(DockerConfig::load(&p).unwrap().get("reg.lan:5000").unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! A small synchronous D-Bus client for the few calls the systemd driver makes.
//!
//! Why not a D-Bus crate: capsa is single-threaded before it forks the container (DESIGN
//! principle 1), and the maintained Rust clients (zbus, dbus-rs with its async layers) run
//! their I/O on threads or an executor inside the calling process. The calls we need are a
//! handful of method calls and one signal (`JobRemoved`), which is a few hundred lines of
//! blocking socket I/O: no threads, no extra process, and about a millisecond per container.
//!
//! How it connects, as `systemctl` does: to the manager's private socket first (root:
//! `/run/systemd/private`; user: `$XDG_RUNTIME_DIR/systemd/private`), a direct connection
//! with no bus daemon in between (and no `Hello`); else to the bus (`DBUS_SYSTEM_BUS_ADDRESS`
//! or `/run/dbus/system_bus_socket`; `DBUS_SESSION_BUS_ADDRESS` or `$XDG_RUNTIME_DIR/bus`).
//! Authentication is SASL `EXTERNAL` with our uid, with `BEGIN` in the same write, as sd-bus
//! clients (`systemctl`) do it; the first message goes out only after the server's `OK`.
//! systemd 252 leaves a message that arrives in the same read as `BEGIN` unread until more
//! input comes: sent back to back with `BEGIN` it stalled the VM tests for the whole 30 s
//! timeout. (A server that rejects our uid, as a bus daemon does for a process in a user
//! namespace, gets `AUTH EXTERNAL` without an identity and an empty `DATA` instead.)

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::wire::{Message, Value, ERROR, METHOD_RETURN, SIGNAL};

/// Which systemd instance to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemdBus {
    /// The system manager (PID 1), as root.
    System,
    /// The calling user's manager (`user@UID.service`), for rootless containers.
    User,
}

impl SystemdBus {
    /// `system` or `user`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            SystemdBus::System => "system",
            SystemdBus::User => "user",
        }
    }
}

/// How long one reply or job may take, as runc waits for a job.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) const SYSTEMD: &str = "org.freedesktop.systemd1";
pub(crate) const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
pub(crate) const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// What a call can fail with.
#[derive(Debug)]
pub(crate) enum CallError {
    /// systemd (or the bus) answered with an error: its name and message.
    Reply { name: String, message: String },
    /// The connection failed, or a reply was malformed or late.
    Io(io::Error),
}

impl CallError {
    /// True for the given D-Bus error name (`org.freedesktop.systemd1.NoSuchUnit`, ...).
    pub(crate) fn is(&self, name: &str) -> bool {
        matches!(self, CallError::Reply { name: n, .. } if n == name)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Reply { name, message } if message.is_empty() => f.write_str(name),
            CallError::Reply { name, message } => write!(f, "{name}: {message}"),
            CallError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for CallError {
    fn from(e: io::Error) -> Self {
        CallError::Io(e)
    }
}

/// Where a connection can go, in the order tried.
fn addresses(bus: SystemdBus) -> Vec<(PathBuf, bool)> {
    let mut out = Vec::new();
    match bus {
        SystemdBus::System => {
            if nix::unistd::geteuid().is_root() {
                out.push((PathBuf::from("/run/systemd/private"), false));
            }
            match std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
                Ok(a) => out.extend(parse_address(&a).into_iter().map(|p| (p, true))),
                Err(_) => out.push((PathBuf::from("/run/dbus/system_bus_socket"), true)),
            }
        }
        SystemdBus::User => {
            let runtime = std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix::unistd::geteuid())));
            out.push((runtime.join("systemd/private"), false));
            match std::env::var("DBUS_SESSION_BUS_ADDRESS") {
                Ok(a) => out.extend(parse_address(&a).into_iter().map(|p| (p, true))),
                Err(_) => out.push((runtime.join("bus"), true)),
            }
        }
    }
    out
}

/// The `unix:path=` entries of a D-Bus address list (`unix:path=/run/user/1000/bus;...`),
/// with `%xx` escapes undone. Abstract sockets and TCP are not supported.
pub(crate) fn parse_address(list: &str) -> Vec<PathBuf> {
    let unescape = |s: &str| -> Option<String> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).ok()
    };
    list.split(';')
        .filter_map(|a| a.strip_prefix("unix:"))
        .filter_map(|kv| kv.split(',').find_map(|p| p.strip_prefix("path=")).and_then(unescape))
        .map(PathBuf::from)
        .collect()
}

/// A connection to a systemd manager.
#[derive(Debug)]
pub(crate) struct Bus {
    stream: UnixStream,
    /// Through a bus daemon (names and `Hello`), not the private socket.
    daemon: bool,
    serial: u32,
    /// Signals read while waiting for a reply.
    signals: Vec<Message>,
}

impl Bus {
    /// Connects to `bus`'s manager, trying each address in turn; the error names them all.
    pub(crate) fn connect(bus: SystemdBus) -> io::Result<Bus> {
        let mut errors = Vec::new();
        for (path, daemon) in addresses(bus) {
            match Bus::connect_to(&path, daemon) {
                Ok(b) => return Ok(b),
                Err(e) => errors.push(format!("{}: {e}", path.display())),
            }
        }
        Err(io::Error::other(errors.join("; ")))
    }

    pub(crate) fn connect_to(path: &Path, daemon: bool) -> io::Result<Bus> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let mut bus = Bus { stream, daemon, serial: 0, signals: Vec::new() };
        bus.authenticate()?;
        if daemon {
            bus.call(Some("org.freedesktop.DBus"), "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello", vec![])
                .map_err(|e| io::Error::other(format!("Hello: {e}")))?;
        }
        Ok(bus)
    }

    /// SASL `EXTERNAL` (see the module's comment).
    fn authenticate(&mut self) -> io::Result<()> {
        // The identity is the uid as decimal text, hex-encoded: 0 is "30", 1000 "31303030".
        let uid: String = nix::unistd::geteuid().as_raw().to_string().bytes().map(|b| format!("{b:02x}")).collect();
        self.stream.write_all(format!("\0AUTH EXTERNAL {uid}\r\nBEGIN\r\n").as_bytes())?;
        let line = self.read_line()?;
        if line.starts_with("OK ") {
            return Ok(());
        }
        if line.starts_with("REJECTED") {
            let _ = self.read_line()?; // the ERROR answering our early BEGIN
            self.stream.write_all(b"AUTH EXTERNAL\r\n")?;
            let mut line = self.read_line()?;
            if line.starts_with("DATA") {
                self.stream.write_all(b"DATA\r\n")?;
                line = self.read_line()?;
            }
            if line.starts_with("OK ") {
                return self.stream.write_all(b"BEGIN\r\n");
            }
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("authentication refused: {line:?}")));
        }
        Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("authentication refused: {line:?}")))
    }

    /// One `\r\n`-terminated line of the SASL exchange (byte by byte: nothing after it may
    /// be consumed, though the server sends nothing before BEGIN anyway).
    fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if line.len() > 4096 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "authentication line too long"));
            }
            if self.stream.read(&mut b)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed during authentication"));
            }
            line.push(b[0]);
        }
        line.truncate(line.len() - 2);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn send(&mut self, m: &Message) -> io::Result<u32> {
        self.serial = self.serial.wrapping_add(1).max(1);
        self.stream.write_all(&m.encode(self.serial))?;
        Ok(self.serial)
    }

    fn receive(&mut self) -> io::Result<Message> {
        let mut head = [0u8; 16];
        self.stream.read_exact(&mut head).map_err(timeout_text)?;
        let total = Message::total_len(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let mut buf = vec![0u8; total];
        buf[..16].copy_from_slice(&head);
        self.stream.read_exact(&mut buf[16..]).map_err(timeout_text)?;
        Message::decode(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// Calls a method and waits for its reply (signals that arrive meanwhile are kept for
    /// [`Bus::wait_job`]); returns the reply's body.
    pub(crate) fn call(
        &mut self,
        dest: Option<&str>,
        path: &str,
        iface: &str,
        member: &str,
        args: Vec<Value>,
    ) -> Result<Vec<Value>, CallError> {
        let serial = self.send(&Message::call(dest, path, iface, member, args))?;
        loop {
            let m = self.receive()?;
            match m.kind {
                SIGNAL => self.signals.push(m),
                METHOD_RETURN if m.reply_serial == Some(serial) => return Ok(m.body),
                ERROR if m.reply_serial == Some(serial) => {
                    let message = m.body.first().and_then(Value::as_str).unwrap_or_default().to_string();
                    return Err(CallError::Reply { name: m.error_name.unwrap_or_default(), message });
                }
                _ => {} // a reply to something else, or a method call to us: not ours
            }
        }
    }

    /// A call to the systemd manager object.
    pub(crate) fn manager(&mut self, member: &str, args: Vec<Value>) -> Result<Vec<Value>, CallError> {
        let dest = self.daemon.then_some(SYSTEMD);
        self.call(dest, MANAGER_PATH, MANAGER, member, args)
    }

    /// `org.freedesktop.DBus.Properties.Get` of `property` in `iface` on object `path`.
    pub(crate) fn property(&mut self, path: &str, iface: &str, property: &str) -> Result<Value, CallError> {
        let dest = self.daemon.then_some(SYSTEMD);
        let body = self.call(dest, path, PROPERTIES, "Get", vec![Value::str(iface), Value::str(property)])?;
        body.into_iter().next().ok_or_else(|| CallError::Io(io::Error::new(io::ErrorKind::InvalidData, "empty Get reply")))
    }

    /// Asks for the manager's job signals on a bus daemon: a match rule so the daemon routes
    /// `JobRemoved` to us, and `Subscribe` so systemd emits it on the bus at all. (On the
    /// private socket systemd sends every signal to every connection anyway.)
    pub(crate) fn subscribe(&mut self) -> Result<(), CallError> {
        if !self.daemon {
            return Ok(());
        }
        let rule = format!("type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',interface='{MANAGER}',member='JobRemoved'");
        self.call(Some("org.freedesktop.DBus"), "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", vec![Value::str(rule)])?;
        match self.manager("Subscribe", vec![]) {
            // Subscribing twice on one connection is refused; that is fine.
            Err(e) if e.is("org.freedesktop.systemd1.AlreadySubscribed") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Waits for `JobRemoved` of `job` (an object path) and returns its result (`done`,
    /// `failed`, `canceled`, `timeout`, `dependency`, `skipped`).
    pub(crate) fn wait_job(&mut self, job: &str) -> io::Result<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(i) = self.signals.iter().position(|s| job_removed(s).is_some_and(|(j, _)| j == job)) {
                let s = self.signals.remove(i);
                return Ok(job_removed(&s).map(|(_, r)| r.to_string()).unwrap_or_default());
            }
            self.signals.clear();
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no result for job {job} after {TIMEOUT:?}")));
            }
            let m = self.receive()?;
            if m.kind == SIGNAL {
                self.signals.push(m);
            }
        }
    }
}

/// `(job path, result)` of a `JobRemoved(u id, o job, s unit, s result)` signal.
fn job_removed(m: &Message) -> Option<(&str, &str)> {
    if m.member.as_deref() != Some("JobRemoved") || m.interface.as_deref() != Some(MANAGER) {
        return None;
    }
    match m.body.as_slice() {
        [_, job, _, result] => Some((job.as_str()?, result.as_str()?)),
        _ => None,
    }
}

fn timeout_text(e: io::Error) -> io::Error {
    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
        io::Error::new(io::ErrorKind::TimedOut, format!("no answer from systemd within {TIMEOUT:?}"))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_addresses() {
        assert_eq!(parse_address("unix:path=/run/user/1000/bus"), vec![PathBuf::from("/run/user/1000/bus")]);
        assert_eq!(parse_address("unix:abstract=/tmp/x,guid=1;unix:path=/a%20b,guid=2;tcp:host=x"), vec![PathBuf::from("/a b")]);
        assert!(parse_address("unix:path=/bad%zz").is_empty());
    }

    #[test]
    fn job_removed_is_recognised() {
        let mut m = Message::call(
            None,
            MANAGER_PATH,
            MANAGER,
            "JobRemoved",
            vec![Value::U32(7), Value::Path("/org/freedesktop/systemd1/job/7".into()), Value::str("a.scope"), Value::str("done")],
        );
        m.kind = SIGNAL;
        assert_eq!(job_removed(&m), Some(("/org/freedesktop/systemd1/job/7", "done")));
        m.member = Some("JobNew".into());
        assert_eq!(job_removed(&m), None);
    }
}

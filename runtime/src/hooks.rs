//! OCI hooks: each gets the container state on stdin, its own args and env, and is killed
//! after `timeout` seconds. Where they run (as runc does):
//!
//! | hook            | run by  | namespaces / when                                       | failure          |
//! |-----------------|---------|---------------------------------------------------------|------------------|
//! | prestart        | parent  | runtime's, after the container namespaces exist          | create fails     |
//! | createRuntime   | parent  | same moment as prestart                                  | create fails     |
//! | createContainer | init    | container's, mounts done, before pivot_root              | create fails     |
//! | startContainer  | init    | container's, after `start`, just before the user process | start fails      |
//! | poststart       | `start` | runtime's, after the user process started                | warning only (1) |
//! | poststop        | `delete`| runtime's, after the container is gone                   | warning only     |
//!
//! (1) runc fails `start` on a failing poststart hook; the OCI spec says the runtime MUST
//! log a warning and continue, and crun does that. The spec wins for what happens to the
//! container. A failing poststart or poststop hook does not stop the ones after it either
//! ([`run_all`]): the spec's "continue the lifecycle" covers the remaining hooks.
//!
//! The state on stdin says `created` for prestart, createRuntime and createContainer: the
//! spec's lifecycle runs them after the environment is created (step 2), and its state
//! table calls that `created` (runc 1.1 says `creating`). createContainer hooks run with the
//! container's rootfs as their working directory (runc chdirs there before them).
//!
//! A failure reads `hooks.KIND[I] PATH: error running hook: exit status 3, stdout: "…",
//! stderr: "…"` (or `signal: bad system call (core dumped)`): runc's words, which callers
//! match on, after the field.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use oci_spec::runtime::Hook;
use serde::Serialize;

use crate::error::{Context, Error, Result};

/// The state a hook reads on stdin (the OCI runtime spec's state object).
#[derive(Debug, Clone, Serialize)]
pub struct HookState<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: &'a std::path::Path,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: &'a std::collections::BTreeMap<String, String>,
}

impl HookState<'_> {
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Runs `hooks` (the `kind` list of config.json) one after the other; stops at the first
/// failure.
pub fn run(kind: &str, hooks: &[Hook], state: &str) -> Result<()> {
    run_in(kind, hooks, state, None)
}

/// [`run`], each hook started in `cwd` (createContainer: the container's rootfs).
pub fn run_in(kind: &str, hooks: &[Hook], state: &str, cwd: Option<&Path>) -> Result<()> {
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, state, cwd).with_ctx(|| format!("hooks.{kind}[{i}] {}", h.path().display()))?;
    }
    Ok(())
}

/// Runs every hook of `hooks` even when some fail (poststart, poststop: the spec says a
/// failure is only a warning); returns one warning per failing hook.
pub fn run_all(kind: &str, hooks: &[Hook], state: &str) -> Vec<String> {
    hooks
        .iter()
        .enumerate()
        .filter_map(|(i, h)| run_one(h, state, None).err().map(|e| format!("hooks.{kind}[{i}] {}: {e}", h.path().display())))
        .collect()
}

fn run_one(h: &Hook, state: &str, cwd: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new(h.path());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let args = h.args().clone().unwrap_or_default();
    if let Some((arg0, rest)) = args.split_first() {
        std::os::unix::process::CommandExt::arg0(&mut cmd, arg0);
        cmd.args(rest);
    }
    cmd.env_clear();
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().ctx("error running hook")?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin must not make us fail.
        let _ = stdin.write_all(state.as_bytes());
    }
    // A timeout too large to add to the clock (i64::MAX seconds) is no timeout at all.
    let deadline = h.timeout().filter(|t| *t > 0).and_then(|t| Instant::now().checked_add(Duration::from_secs(t as u64)));
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    // Read both pipes until the hook closes them (or the timeout).
    while stdout.is_some() || stderr.is_some() {
        let remaining = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::new(format!(
                        "error running hook: killed, it ran past its timeout of {}s",
                        h.timeout().unwrap_or(0)
                    )));
                }
                PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = Vec::new();
        if let Some(s) = &stdout {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        if let Some(s) = &stderr {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, remaining) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(Error::from(e).context("poll")),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        let mut i = 0;
        let mut buf = [0u8; 4096];
        if stdout.is_some() {
            if ready[i] {
                match stdout.as_mut().map(|s| s.read(&mut buf)) {
                    Some(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
                    _ => stdout = None,
                }
            }
            i += 1;
        }
        if stderr.is_some() && ready[i] {
            match stderr.as_mut().map(|s| s.read(&mut buf)) {
                Some(Ok(n)) if n > 0 => err.extend_from_slice(&buf[..n]),
                _ => stderr = None,
            }
        }
    }
    let status = child.wait().ctx("error running hook: wait")?;
    if status.success() {
        return Ok(());
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().replace('\n', " ");
    Err(Error::new(format!("error running hook: {}, stdout: {:?}, stderr: {:?}", exit_text(status), text(&out), text(&err))))
}

/// How a process ended, in Go's words (runc's callers match on them): `exit status 3`,
/// `signal: bad system call (core dumped)`.
fn exit_text(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => {
            let core = if status.core_dumped() { " (core dumped)" } else { "" };
            format!("signal: {}{core}", signal_description(sig))
        }
        _ => status.to_string(),
    }
}

/// `bad system call` for SIGSYS: the C library's description, first letter lowered as Go
/// writes them.
fn signal_description(sig: i32) -> String {
    // SAFETY: strsignal returns a pointer to a NUL-terminated string owned by the C library,
    // valid until the next strsignal call; it is copied at once (capsa is single-threaded).
    let text = unsafe {
        let p = libc::strsignal(sig);
        if p.is_null() {
            return format!("signal {sig}");
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    let mut c = text.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => format!("signal {sig}"),
    }
}

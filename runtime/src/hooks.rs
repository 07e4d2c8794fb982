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
//! container.

use std::io::{Read, Write};
use std::os::fd::AsFd;
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
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, state).with_ctx(|| format!("hooks.{kind}[{i}] {}", h.path().display()))?;
    }
    Ok(())
}

fn run_one(h: &Hook, state: &str) -> Result<()> {
    let mut cmd = Command::new(h.path());
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
    let mut child = cmd.spawn().ctx("start")?;
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
                    return Err(Error::new(format!("killed: ran past its timeout of {}s", h.timeout().unwrap_or(0))));
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
    let status = child.wait().ctx("wait")?;
    if status.success() {
        return Ok(());
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().replace('\n', " ");
    Err(Error::new(format!("{status}, stdout: {:?}, stderr: {:?}", text(&out), text(&err))))
}

//! The runtime binary (capsa, runc or any binary with runc's CLI), run the way containerd's own
//! shim runs runc: `BIN --root ROOT --log BUNDLE/log.json --log-format json [--systemd-cgroup] CMD`.
//! Errors are the last `"level":"error"` line the command wrote to the log, else its stderr.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::reaper::Reaper;

/// What the shim keeps of the runc Options in `<bundle>/options.json`, so that `shim delete`
/// (run by containerd after the shim died) drives the same binary with the same root.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuntimeOpts {
    pub binary_name: String,
    pub root: String,
    #[serde(default)]
    pub systemd_cgroup: bool,
    #[serde(default)]
    pub no_pivot_root: bool,
    #[serde(default)]
    pub no_new_keyring: bool,
    #[serde(default)]
    pub io_uid: u32,
    #[serde(default)]
    pub io_gid: u32,
}

pub const OPTIONS_FILE: &str = "options.json";

impl RuntimeOpts {
    pub fn load(bundle: &Path) -> Option<RuntimeOpts> {
        let data = std::fs::read(bundle.join(OPTIONS_FILE)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    pub fn save(&self, bundle: &Path) -> std::io::Result<()> {
        let data = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(bundle.join(OPTIONS_FILE), data)
    }
}

#[derive(Clone)]
pub struct Runtime {
    pub opts: RuntimeOpts,
    log: PathBuf,
    reaper: Option<Arc<Reaper>>,
}

pub struct Output {
    pub stdout: Vec<u8>,
}

/// Stdio a command gets. For `create`/`exec` these are the container's own stdio.
pub struct CmdStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl Runtime {
    /// `reaper`: Some in the serving shim (a thread reaps every child), None in `shim delete`.
    pub fn new(opts: RuntimeOpts, bundle: &Path, reaper: Option<Arc<Reaper>>) -> Runtime {
        Runtime { opts, log: bundle.join("log.json"), reaper }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.opts.binary_name);
        cmd.arg("--root").arg(&self.opts.root);
        cmd.arg("--log").arg(&self.log).arg("--log-format").arg("json");
        if self.opts.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd.args(args);
        cmd
    }

    /// Run `args`; on success return its stdout. `input` goes to stdin.
    pub fn run(&self, args: &[&str], input: Option<&[u8]>) -> Result<Output, String> {
        let stdio = CmdStdio {
            stdin: if input.is_some() { Stdio::piped() } else { Stdio::null() },
            stdout: Stdio::piped(),
            stderr: Stdio::piped(),
        };
        self.run_with(args, stdio, input)
    }

    /// Run `args` with the given stdio (pipes are read here).
    pub fn run_with(&self, args: &[&str], stdio: CmdStdio, input: Option<&[u8]>) -> Result<Output, String> {
        let log_start = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.command(args);
        cmd.stdin(stdio.stdin).stdout(stdio.stdout).stderr(stdio.stderr);
        let name = format!("{} {}", self.opts.binary_name, args.first().copied().unwrap_or(""));
        let (mut child, rx) = match &self.reaper {
            Some(r) => {
                let (c, rx) = r.spawn(&mut cmd).map_err(|e| format!("{name}: {e}"))?;
                (c, Some(rx))
            }
            None => (cmd.spawn().map_err(|e| format!("{name}: {e}"))?, None),
        };
        if let (Some(mut w), Some(data)) = (child.stdin.take(), input) {
            // A runtime that exits early closes the pipe: the error shows up as its exit status.
            let _ = w.write_all(data);
        }
        let (stdout, stderr) = read_both(child.stdout.take(), child.stderr.take());
        let code = match rx {
            Some(rx) => rx.recv().map_err(|e| format!("{name}: lost exit status: {e}"))?,
            None => match child.wait() {
                Ok(st) => st.code().unwrap_or(128),
                Err(e) => return Err(format!("{name}: {e}")),
            },
        };
        if code == 0 {
            return Ok(Output { stdout });
        }
        let msg = last_log_error(&self.log, log_start)
            .or_else(|| {
                let s = String::from_utf8_lossy(&stderr).trim().to_string();
                (!s.is_empty()).then_some(s)
            })
            .unwrap_or_else(|| format!("exit status {code}"));
        Err(format!("{name} failed: {msg}"))
    }
}

/// Read a command's stdout and stderr pipes to their ends in this thread (poll), without a
/// thread per pipe.
fn read_both(out: Option<ChildStdout>, err: Option<ChildStderr>) -> (Vec<u8>, Vec<u8>) {
    let mut bufs = (Vec::new(), Vec::new());
    let mut pipes: Vec<(Box<dyn Read>, RawFd, bool)> = Vec::new();
    if let Some(o) = out {
        let fd = o.as_raw_fd();
        pipes.push((Box::new(o), fd, true));
    }
    if let Some(e) = err {
        let fd = e.as_raw_fd();
        pipes.push((Box::new(e), fd, false));
    }
    let mut chunk = [0u8; 4096];
    while !pipes.is_empty() {
        let mut pfds: Vec<libc::pollfd> = pipes.iter().map(|p| libc::pollfd { fd: p.1, events: libc::POLLIN, revents: 0 }).collect();
        // SAFETY: a valid array of pollfds for pipes we own, alive across the call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        let mut i = 0;
        for pfd in &pfds {
            if pfd.revents == 0 {
                i += 1;
                continue;
            }
            let (r, _, is_out) = &mut pipes[i];
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    pipes.remove(i);
                    continue;
                }
                Ok(k) => {
                    if *is_out { &mut bufs.0 } else { &mut bufs.1 }.extend_from_slice(&chunk[..k]);
                }
            }
            i += 1;
        }
    }
    bufs
}

/// The message of the last error line of a JSON log written since `start`.
pub fn last_log_error(path: &Path, start: u64) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let from = if start <= len { start } else { 0 };
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut s = String::new();
    f.read_to_string(&mut s).ok()?;
    s.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        if v.get("level")?.as_str()? == "error" {
            Some(v.get("msg")?.as_str()?.to_string())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_since_offset() {
        let dir = std::env::temp_dir().join(format!("capsa-shim-ut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let p = dir.join("log.json");
        let first = "{\"level\":\"error\",\"msg\":\"old\",\"time\":\"t\"}\n";
        std::fs::write(&p, format!("{first}{{\"level\":\"warning\",\"msg\":\"w\"}}\n{{\"level\":\"error\",\"msg\":\"new\"}}\n{{\"level\":\"info\",\"msg\":\"i\"}}\nnot json\n"))
            .expect("write");
        assert_eq!(last_log_error(&p, 0).as_deref(), Some("new"));
        std::fs::write(&p, first).expect("write");
        assert_eq!(last_log_error(&p, first.len() as u64), None);
        assert_eq!(last_log_error(&p, 0).as_deref(), Some("old"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

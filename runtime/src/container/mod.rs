//! Containers on disk and their lifecycle: create → start → kill → delete.
//!
//! A container is the directory `<root>/<id>/` holding `state.json` and, until it is
//! started, `exec.fifo`. Every command takes an exclusive lock on that directory, so
//! commands on one id from concurrent processes run one after the other.

mod create;
mod delete;
pub mod events;
mod exec;
pub mod foreground;
mod kill;
pub mod lock;
mod pause;
pub mod ps;
mod start;
pub mod state;
pub mod update;

use std::path::{Path, PathBuf};

pub use create::{create, CreateArgs, Created};
pub use delete::delete;
pub use exec::{container_process, exec, ExecArgs};
pub use kill::{kill, parse_signal};
pub use pause::{pause, resume};
pub use start::start;
pub use state::{State, Status};
pub use update::update;

use crate::error::{Context, Error, Result};
use lock::Lock;

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

/// runc's rule for ids: letters, digits and `_+-.`, not `.` or `..`.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::new(format!("invalid container id {id:?}: use letters, digits and _+-.")))
    }
}

/// A container loaded from disk, locked for as long as this value lives.
pub struct Container {
    pub state: State,
    pub dir: PathBuf,
    _lock: Lock,
}

impl Container {
    /// Loads and locks container `id` under `root`.
    pub fn load(root: &Path, id: &str) -> Result<Container> {
        validate_id(id)?;
        let dir = root.join(id);
        if !dir.is_dir() {
            return Err(Error::not_exist(id));
        }
        let lock = match Lock::acquire(&dir) {
            Ok(l) => l,
            Err(_) if !dir.exists() => return Err(Error::not_exist(id)),
            Err(e) => return Err(e),
        };
        // A delete may have run while we waited for the lock, or a create crashed.
        let state = match std::fs::read(dir.join(STATE_FILE)) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::new(format!("{}: {e}", dir.join(STATE_FILE).display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::not_exist(id)),
            Err(e) => return Err(Error::from(e).context(format!("read {}", dir.join(STATE_FILE).display()))),
        };
        Ok(Container { state, dir, _lock: lock })
    }

    /// Reads a container's state without locking (for `state` and `list`: state.json is
    /// replaced atomically, and a hook run by `create` may ask for the state while create
    /// holds the lock).
    pub fn peek(root: &Path, id: &str) -> Result<State> {
        validate_id(id)?;
        let b = match std::fs::read(root.join(id).join(STATE_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::not_exist(id)),
            Err(e) => return Err(Error::from(e).context(format!("read state of {id}"))),
        };
        serde_json::from_slice(&b).map_err(|e| Error::new(format!("state of {id}: {e}")))
    }

    pub fn status(&self) -> Status {
        status_of(&self.state, &self.dir)
    }

    pub fn save(&self) -> Result<()> {
        save_state(&self.dir, &self.state)
    }
}

/// Removes the directory of a create killed before it wrote the first state (it holds
/// nothing else: the cgroup is named in the state before it is made). Under the lock, so
/// never the directory of a create still running. As runc's `delete` does.
pub fn remove_stateless(root: &Path, id: &str) -> Result<()> {
    validate_id(id)?;
    let dir = root.join(id);
    if !dir.is_dir() {
        return Ok(());
    }
    let _lock = match Lock::acquire(&dir) {
        Ok(l) => l,
        Err(_) if !dir.exists() => return Ok(()),
        Err(e) => return Err(e),
    };
    if dir.join(STATE_FILE).exists() {
        return Ok(());
    }
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::from(e).context(format!("remove {}", dir.display()))),
        _ => Ok(()),
    }
}

pub fn save_state(dir: &Path, state: &State) -> Result<()> {
    let tmp = dir.join(".state.json.tmp");
    let b = serde_json::to_vec(state).map_err(|e| Error::new(format!("encode state: {e}")))?;
    std::fs::write(&tmp, b).ctx("write state")?;
    std::fs::rename(&tmp, dir.join(STATE_FILE)).ctx("write state")?;
    Ok(())
}

/// Status as runc derives it: init dead → stopped; frozen cgroup → paused; exec.fifo
/// present → created; else running.
pub fn status_of(state: &State, dir: &Path) -> Status {
    if state.pid == 0 {
        // Written by create before init exists (so a killed create can be deleted).
        return Status::Creating;
    }
    if !process_alive(state.pid, state.pid_start) {
        return Status::Stopped;
    }
    // The freezer first: a created container can be paused too (runc allows it).
    if crate::cgroup::is_frozen(&state.cgroup_paths) {
        return Status::Paused;
    }
    if dir.join(EXEC_FIFO).exists() {
        return Status::Created;
    }
    Status::Running
}

/// `(state char, start time)` from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    // Bytes: the command name is the container's executable's, any bytes (one that is not
    // UTF-8 must not make a running container look gone). It may hold spaces and
    // parentheses: fields start after the last ')'.
    let s = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/stat")).ok()?).into_owned();
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?.chars().next()?;
    // starttime is field 22 of the whole line, the 20th after the command.
    let start = f.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Alive and not a zombie, and still the same process (start time matches).
pub fn process_alive(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    matches!(proc_stat(pid), Some((s, t)) if t == start && s != 'Z' && s != 'X')
}

/// Ids of all containers under `root`, sorted.
pub fn list_ids(root: &Path) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    match std::fs::read_dir(root) {
        Ok(rd) => {
            for e in rd.flatten() {
                if e.path().join(STATE_FILE).exists() {
                    if let Some(s) = e.file_name().to_str() {
                        ids.push(s.to_string());
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::from(e).context(format!("list {}", root.display()))),
    }
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1_2.3+x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ä"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_stat() {
        let (s, start) = proc_stat(std::process::id() as i32).unwrap();
        assert!(s != 'Z' && s != 'X', "{s}");
        assert!(process_alive(std::process::id() as i32, start));
        assert!(!process_alive(std::process::id() as i32, start + 1));
    }
}

//! Putting the database in line with what is really there, after kills and reboots.
//!
//! A row that says a container is starting, running, paused or restarting is only true
//! while something holds the container's lock (its monitor). When the lock is free the
//! monitor is gone (`kill -9`, a reboot, a crash): if capsa says the container's init
//! still lives, the container runs on without a monitor (its exit will not be recorded);
//! otherwise the container is down and we record it as exited (code 255: unknown, as
//! docker does when it loses a container), clean up its runtime state and rootfs mount,
//! and remove it if it was `--rm`.

use std::path::Path;

use capsa_image::Store;

use super::{remove, stop, Lock, Record};
use crate::cli::{Cli, Result};

/// Reconciles every row that claims a running container. Best effort: a row that cannot
/// be fixed now is left for the next command.
pub fn all(cli: &Cli, store: &mut Store) {
    let Ok(rows) = super::list(store) else { return };
    for rec in rows.iter().filter(|r| r.is_active()) {
        let _ = one(store, &cli.state_root, rec);
    }
}

/// Reconciles one row; returns the row as it is afterwards (None: removed).
pub fn one(store: &mut Store, state_root: &Path, rec: &Record) -> Result<Option<Record>> {
    if !rec.is_active() {
        return Ok(Some(rec.clone()));
    }
    let dir = super::dir(store, &rec.id);
    let lock = match Lock::try_take(&dir) {
        Ok(Some(l)) => l,
        // Held: a monitor or a command looks after it; the row is theirs to update.
        Ok(None) => return Ok(Some(rec.clone())),
        // No directory (removed by hand?): nothing can run; record it.
        Err(_) => {
            match super::get(store, &rec.id)? {
                Some(now) if now.is_active() => finish_without_dir(store, state_root, &now)?,
                other => return Ok(other),
            }
            return super::get(store, &rec.id);
        }
    };
    // The row was read before we held the lock: its monitor may have recorded the exit and
    // gone since. Only the row as it is now, under the lock, says what is left to do.
    let rec = match super::get(store, &rec.id)? {
        Some(now) if now.is_active() => now,
        other => return Ok(other),
    };
    let rec = &rec;
    if let Some((pid, _)) = stop::runtime_status(state_root, &rec.id) {
        if (rec.state != "running" && rec.state != "paused") || rec.error.is_empty() {
            let started = if rec.started_at.is_empty() { super::now() } else { rec.started_at.clone() };
            super::update(
                store,
                &rec.id,
                "state = CASE WHEN state = 'paused' THEN 'paused' ELSE 'running' END, pid = ?2, started_at = ?3, error = ?4",
                &[&pid, &started, &"monitor gone: the container runs on, its exit will not be recorded"],
            )?;
        }
    } else {
        finish(store, state_root, rec, None, &lock)?;
    }
    drop(lock);
    super::get(store, &rec.id)
}

fn finish_without_dir(store: &mut Store, state_root: &Path, rec: &Record) -> Result<()> {
    let _ = capsa::container::delete(state_root, &rec.id, true);
    if rec.auto_remove {
        return remove::forget(store, rec, true);
    }
    record(store, rec, 255, false, "the container's directory is gone")
}

/// A container is down and its monitor did not (or could not) record it: clean up its
/// runtime state and mount, then record the exit (`code` None: unknown) or remove it.
/// The caller holds its lock.
pub fn finish(store: &mut Store, state_root: &Path, rec: &Record, code: Option<i32>, _lock: &Lock) -> Result<()> {
    let oom = runtime_down(store, state_root, rec);
    // Waiting to restart: the last exit is already recorded.
    let (code, oom) = if rec.state == "restarting" { (code.or(Some(rec.exit_code)), oom || rec.oom_killed) } else { (code, oom) };
    if rec.auto_remove {
        return remove::remove_down(store, state_root, rec, true);
    }
    let err = if code.is_none() { "exit status unknown: the container's monitor was gone when it stopped" } else { "" };
    record(store, rec, code.unwrap_or(255), oom, err)
}

/// capsa's state and cgroup, the rootfs mount and the network of a container that is down. Returns
/// whether the kernel OOM-killed something in it (read before the cgroup goes).
pub fn runtime_down(store: &Store, state_root: &Path, rec: &Record) -> bool {
    // Its network (veth, namespace, rules, leases): a container down holds none. Torn down
    // while the runtime's state goes (see network::Detaching).
    let net = super::network::detach_begin(store, rec);
    let oom = oom_killed(state_root, &rec.id);
    let _ = capsa::container::delete(state_root, &rec.id, true);
    let _ = capsa_image::snapshot::unmount_rootfs(&super::dir(store, &rec.id));
    let _ = net.finish(store);
    oom
}

/// Whether the container's memory cgroup saw an OOM kill.
pub fn oom_killed(state_root: &Path, id: &str) -> bool {
    let Ok(st) = capsa::container::Container::peek(state_root, id) else { return false };
    st.cgroup_paths.iter().any(|p| capsa_cgroups::oom_kill_count(p).unwrap_or(0) > 0)
}

/// Records an exit in the row.
pub fn record(store: &mut Store, rec: &Record, code: i32, oom: bool, err: &str) -> Result<()> {
    let now = super::now();
    super::update(
        store,
        &rec.id,
        "state = 'exited', pid = 0, exit_code = ?2, finished_at = ?3, oom_killed = ?4, error = ?5",
        &[&code, &now, &(oom as i64), &err],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race CI once lost: `wait` read a running row, the monitor then recorded exit 137
    /// and went, and reconcile (holding the lock now free) recorded "unknown" (255) over it.
    #[test]
    fn a_row_read_before_the_lock_is_not_trusted() {
        let root = std::env::temp_dir().join(format!("capsactl-reconcile-{}", std::process::id()));
        let state_root = root.join("state");
        let mut store = Store::open(&root.join("store")).expect("store");
        let id = "a".repeat(64);
        store
            .db
            .write(|tx| {
                tx.execute(
                    "INSERT INTO containers (id, name, state, created, created_at, config) VALUES (?1, 'r', 'running', 0, '', '{}')",
                    [&id],
                )?;
                Ok(())
            })
            .expect("insert");
        std::fs::create_dir_all(super::super::dir(&store, &id)).expect("dir");
        let stale = super::super::get(&store, &id).expect("get").expect("row");
        assert!(stale.is_active());
        // The monitor records the exit and releases the lock.
        record(&mut store, &stale, 137, true, "").expect("record");
        let now = one(&mut store, &state_root, &stale).expect("reconcile").expect("row");
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!((now.state.as_str(), now.exit_code, now.oom_killed, now.error.as_str()), ("exited", 137, true, ""));
    }
}

//! capsactl's containers: rows in the store's database, a directory each under
//! `<store>/containers/<id>/`, and the capsa runtime's state under `--state-root`.
//!
//! ```text
//! containers/<id>/lock            flock: held by the monitor for the container's whole run
//!                                 (and by a command while it starts, stops or removes it)
//! containers/<id>/upper, work     the overlay's writable layer
//! containers/<id>/rootfs          the overlay mount while the container runs
//! containers/<id>/config.json     the bundle capsa runs (rewritten at every start)
//! containers/<id>/hostname, hosts, resolv.conf
//! containers/<id>/network.json   what its start made of its network (see network.rs)
//! containers/<id>/<id>-json.log   docker's json-file log (and .1, .2 ... when rotated)
//! containers/<id>/ctl.sock        the monitor's socket (attach, wait, resize, stop)
//! ```
//!
//! Truth after a crash: the database says what was last recorded; the lock says whether a
//! monitor (or a command) is looking after the container; capsa's state says whether its
//! init lives. [`reconcile`] puts the three together, so that after a `kill -9` of a
//! monitor or a command, or a reboot, `ps -a` tells the truth and `rm` cleans up.

pub mod commit;
pub mod config;
pub mod create;
pub mod fs;
pub mod names;
pub mod network;
pub mod reconcile;
pub mod remove;
pub mod seccomp;
pub mod spec;
pub mod start;
pub mod stop;
pub mod volumes;

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, OptionalExtension};

use capsa_image::Store;

use crate::cli::{fail, Failure, Result};
use config::Stored;

/// A container's database row.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub image: String,
    pub top_chain: Option<String>,
    /// created | starting | running | paused | restarting | exited | dead | removing
    pub state: String,
    pub auto_remove: bool,
    pub created_at: String,
    pub pid: i32,
    pub exit_code: i32,
    pub started_at: String,
    pub finished_at: String,
    pub oom_killed: bool,
    pub restart_count: i64,
    pub user_stopped: bool,
    pub error: String,
    pub stored: Stored,
}

const COLS: &str = "id, name, image, top_chain, state, auto_remove, created_at, pid, exit_code, started_at, finished_at, oom_killed, restart_count, user_stopped, error, config";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Record> {
    let cfg: Option<String> = r.get(15)?;
    Ok(Record {
        id: r.get(0)?,
        name: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
        image: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        top_chain: r.get(3)?,
        state: r.get(4)?,
        auto_remove: r.get::<_, i64>(5)? != 0,
        created_at: r.get(6)?,
        pid: r.get(7)?,
        exit_code: r.get(8)?,
        started_at: r.get(9)?,
        finished_at: r.get(10)?,
        oom_killed: r.get::<_, i64>(11)? != 0,
        restart_count: r.get(12)?,
        user_stopped: r.get::<_, i64>(13)? != 0,
        error: r.get(14)?,
        stored: cfg.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or_default(),
    })
}

impl Record {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// Whether the row says a process should be looking after it.
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "starting" | "running" | "paused" | "restarting" | "removing")
    }
}

/// Every container, newest first.
pub fn list(store: &Store) -> Result<Vec<Record>> {
    let mut st = store.db.conn().prepare_cached(&format!("SELECT {COLS} FROM containers ORDER BY created_at DESC, rowid DESC"))?;
    let rows = st.query_map([], row)?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub fn get(store: &Store, id: &str) -> Result<Option<Record>> {
    Ok(store.db.conn().query_row(&format!("SELECT {COLS} FROM containers WHERE id = ?1"), [id], row).optional()?)
}

/// docker's lookup: a full id, a name (with or without its leading `/`), or a unique id prefix.
pub fn find(store: &Store, key: &str) -> Result<Record> {
    let not_found = || Failure { msg: format!("No such container: {key}"), code: 1 };
    if key.is_empty() {
        return Err(not_found());
    }
    let conn = store.db.conn();
    if let Some(r) = conn.query_row(&format!("SELECT {COLS} FROM containers WHERE id = ?1"), [key], row).optional()? {
        return Ok(r);
    }
    let name = key.strip_prefix('/').unwrap_or(key);
    if let Some(r) = conn.query_row(&format!("SELECT {COLS} FROM containers WHERE name = ?1"), [name], row).optional()? {
        return Ok(r);
    }
    if key.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut st = conn.prepare(&format!("SELECT {COLS} FROM containers WHERE id LIKE ?1 || '%' LIMIT 2"))?;
        let found: Vec<Record> = st.query_map([key.to_ascii_lowercase()], row)?.collect::<std::result::Result<_, _>>()?;
        match found.len() {
            1 => return found.into_iter().next().ok_or_else(not_found),
            2 => return Err(fail(format!("multiple IDs found with provided prefix: {key}"))),
            _ => {}
        }
    }
    Err(not_found())
}

/// Updates some columns of a row: `set` is an SQL `SET` list with ?2.. parameters
/// (?1 is the id).
pub fn update(store: &mut Store, id: &str, set: &str, values: &[&dyn rusqlite::ToSql]) -> Result<()> {
    let sql = format!("UPDATE containers SET {set} WHERE id = ?1");
    let mut all: Vec<&dyn rusqlite::ToSql> = vec![&id];
    all.extend_from_slice(values);
    store.db.write(|tx| {
        tx.execute(&sql, all.as_slice())?;
        Ok(())
    })?;
    Ok(())
}

pub fn set_state(store: &mut Store, id: &str, state: &str) -> Result<()> {
    update(store, id, "state = ?2", &[&state])
}

/// The container's directory.
pub fn dir(store: &Store, id: &str) -> PathBuf {
    store.containers_dir().join(id)
}

pub fn log_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}-json.log"))
}

/// flock(2) `op` (LOCK_SH, LOCK_EX, with LOCK_NB) on `f`: capsactl's locks (containers,
/// build scratch dirs, cache mounts) are all held this way, released when `f` is closed.
pub fn flock(f: &File, op: i32) -> std::io::Result<()> {
    // SAFETY: flock on an fd `f` owns for the whole call.
    if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The per-container lock (`containers/<id>/lock`): an flock held by the monitor while it
/// looks after the container, or by a command starting, stopping or removing it. The
/// kernel drops it when its holder dies, `kill -9` included.
pub struct Lock(File);

impl Lock {
    fn open(dir: &Path) -> std::io::Result<File> {
        File::options().create(true).truncate(false).write(true).open(dir.join("lock"))
    }

    /// Takes the lock if nobody holds it.
    pub fn try_take(dir: &Path) -> std::io::Result<Option<Lock>> {
        let f = Self::open(dir)?;
        match flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(Lock(f))),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `timeout` for the lock.
    pub fn take_within(dir: &Path, timeout: Duration) -> std::io::Result<Option<Lock>> {
        let end = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(l) = Self::try_take(dir)? {
                return Ok(Some(l));
            }
            if Instant::now() >= end {
                return Ok(None);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    pub fn into_fd(self) -> OwnedFd {
        OwnedFd::from(self.0)
    }
}

/// A pidfd for `pid`: signals and waits that a recycled pid cannot redirect.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd (or -1).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; nobody else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// A fresh container id: 64 hex digits, as docker's.
pub fn random_id() -> String {
    let mut b = [0u8; 32];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Unreachable on Linux ≥ 3.17 after boot; fall back to the store's random names.
        return (0..4).map(|_| capsa_image::content::random_suffix()).collect::<String>().chars().take(64).collect();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Now, as docker writes times (RFC 3339 with nanoseconds, UTC).
pub fn now() -> String {
    capsa::timefmt::rfc3339_nano(std::time::SystemTime::now())
}

/// docker's zero time, shown for times that never happened.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Removes a container's row and gives back its layer reference and volume uses.
pub fn delete_row(store: &mut Store, id: &str) -> Result<()> {
    let id = id.to_string();
    store.db.write(|tx| {
        let top: Option<Option<String>> = tx.query_row("SELECT top_chain FROM containers WHERE id = ?1", [&id], |r| r.get(0)).optional()?;
        if let Some(top) = top {
            tx.execute("DELETE FROM container_volumes WHERE container = ?1", [&id])?;
            tx.execute("DELETE FROM containers WHERE id = ?1", [&id])?;
            if let Some(t) = top {
                capsa_image::db::add_ref(tx, &t, -1)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// Renames a container (names are unique).
pub fn rename(store: &mut Store, id: &str, name: &str) -> Result<()> {
    names::validate(name)?;
    let (id, name) = (id.to_string(), name.to_string());
    let taken: Option<String> = store.db.conn().query_row("SELECT id FROM containers WHERE name = ?1", [&name], |r| r.get(0)).optional()?;
    if let Some(other) = taken {
        return Err(names::in_use(&name, &other));
    }
    store
        .db
        .write(|tx| {
            tx.execute("UPDATE containers SET name = ?2 WHERE id = ?1", params![id, name])?;
            Ok(())
        })
        .map_err(|e| if e.to_string().contains("UNIQUE") { fail(format!("the name {name:?} was taken meanwhile")) } else { e.into() })
}

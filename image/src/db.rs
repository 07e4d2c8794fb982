//! Metadata in SQLite (bundled, WAL): images, tags, manifests, layers and the blobs each
//! image holds; containers (with what capsactl's monitor records: pid, exit code, times,
//! OOM, restarts), named volumes and which containers use them; networks and the address each
//! container leases on one (capsa-network's IPAM).
//!
//! Why SQLite: several `capsactl` processes write at once and there is no daemon, so
//! writes need transactions that work across processes and survive a kill at any instant;
//! WAL lets readers run while one writer commits. podman's libpod ended up with the same.
//! Every write is one `BEGIN IMMEDIATE` transaction (the writer lock taken up front, so
//! two writers never deadlock upgrading a read lock); `busy_timeout` makes the others wait.
//! Opening is serialised by an flock on `capsa.db.lock`: the first processes to open a new
//! store would otherwise race to switch it to WAL, and SQLite answers one of two
//! connections upgrading their read locks at once with "database is locked" at once,
//! without waiting (its deadlock rule).
//!
//! Reference counts (`layers.refs`) count what stands directly on a layer: images whose
//! top layer it is, layers whose parent it is, containers whose image top it is. A layer
//! with no references is garbage; the counts only change inside transactions.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::error::{Context, Result};

/// The schema, one entry per version; a store is brought up to date when opened.
const MIGRATIONS: &[&str] = &[
    // 1: images, tags, manifests, blobs per image, layers, containers.
    "CREATE TABLE images (
        id TEXT PRIMARY KEY,           -- the config digest (docker's image id)
        manifest TEXT NOT NULL,        -- digest of the manifest this image came from
        repo_digest TEXT,              -- digest of the index it was picked from, if any
        top_chain TEXT REFERENCES layers(chain_id),
        size INTEGER NOT NULL,         -- unpacked bytes of all its layers
        created TEXT,                  -- the config's created time (RFC 3339)
        added INTEGER NOT NULL         -- unix time it entered this store
    );
    CREATE TABLE tags (
        name TEXT PRIMARY KEY,         -- normalised: docker.io/library/busybox:latest
        image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
    );
    CREATE INDEX tags_image ON tags(image);
    CREATE TABLE image_blobs (
        image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        kind TEXT NOT NULL,            -- index | manifest | config | layer
        PRIMARY KEY (image, digest)
    );
    CREATE INDEX image_blobs_digest ON image_blobs(digest);
    CREATE TABLE layers (
        chain_id TEXT PRIMARY KEY,
        diff_id TEXT NOT NULL,
        parent TEXT REFERENCES layers(chain_id),
        blob TEXT,                     -- the blob it was unpacked from (may be compressed)
        media_type TEXT,
        size INTEGER NOT NULL,         -- unpacked bytes
        link TEXT NOT NULL UNIQUE,     -- its short name under <root>/l/ (overlay lowerdir)
        refs INTEGER NOT NULL DEFAULT 0,
        added INTEGER NOT NULL
    );
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT UNIQUE,
        image TEXT REFERENCES images(id),
        top_chain TEXT REFERENCES layers(chain_id),
        state TEXT NOT NULL,           -- created | running | exited
        auto_remove INTEGER NOT NULL DEFAULT 0,
        owner_pid INTEGER,             -- the capsactl process looking after it (run --rm)
        owner_start INTEGER,           -- its start time, so a reused pid is not mistaken
        created INTEGER NOT NULL,
        config TEXT                    -- JSON, the containers issue's
    );",
    // 2: container lifecycle (capsactl's monitor records exits here), named volumes and
    // which containers use them.
    "ALTER TABLE containers ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE containers ADD COLUMN exit_code INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE containers ADD COLUMN created_at TEXT NOT NULL DEFAULT '';   -- RFC 3339, nanoseconds
    ALTER TABLE containers ADD COLUMN started_at TEXT NOT NULL DEFAULT '';
    ALTER TABLE containers ADD COLUMN finished_at TEXT NOT NULL DEFAULT '';
    ALTER TABLE containers ADD COLUMN oom_killed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE containers ADD COLUMN restart_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE containers ADD COLUMN user_stopped INTEGER NOT NULL DEFAULT 0; -- stop/kill: no restart
    ALTER TABLE containers ADD COLUMN error TEXT NOT NULL DEFAULT '';
    CREATE TABLE volumes (
        name TEXT PRIMARY KEY,
        driver TEXT NOT NULL DEFAULT 'local',
        labels TEXT NOT NULL DEFAULT '{}',   -- JSON object
        options TEXT NOT NULL DEFAULT '{}',  -- JSON object
        anonymous INTEGER NOT NULL DEFAULT 0,
        created TEXT NOT NULL               -- RFC 3339
    );
    CREATE TABLE container_volumes (
        container TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        volume TEXT NOT NULL REFERENCES volumes(name),
        PRIMARY KEY (container, volume)
    );
    CREATE INDEX container_volumes_volume ON container_volumes(volume);",
    // 3: networks and the addresses containers lease on them (capsa-network's ipam.rs reads
    // and writes these; a lease lives while its container is attached).
    "CREATE TABLE networks (
        name TEXT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,       -- docker's network id (64 hex digits)
        bridge TEXT NOT NULL UNIQUE,   -- the bridge link's name
        subnet INTEGER NOT NULL,       -- IPv4 network address as a number
        prefix INTEGER NOT NULL,
        gateway INTEGER NOT NULL,      -- the bridge's address
        internal INTEGER NOT NULL DEFAULT 0,
        labels TEXT NOT NULL DEFAULT '{}',  -- JSON object
        created TEXT NOT NULL          -- RFC 3339
    );
    CREATE TABLE leases (
        network TEXT NOT NULL REFERENCES networks(name),
        ip INTEGER NOT NULL,
        container TEXT NOT NULL,
        PRIMARY KEY (network, ip),
        UNIQUE (network, container)
    );
    CREATE INDEX leases_container ON leases(container);",
    // 4: capsactl build's cache: a step's key (parent state, instruction after
    // substitution, build args, source checksums) and the layer it made (NULL: the step
    // changed no file). The layer holds no reference for the cache: garbage collection
    // may take it, and the entry goes with it.
    "CREATE TABLE build_cache (
        key TEXT PRIMARY KEY,
        chain_id TEXT REFERENCES layers(chain_id) ON DELETE CASCADE,
        created_by TEXT NOT NULL,
        created TEXT NOT NULL,
        added INTEGER NOT NULL
    );
    CREATE INDEX build_cache_chain ON build_cache(chain_id);",
    // 5: IPv6 on bridge networks (`network create --ipv6`): a network's IPv6 subnet and
    // gateway (NULL: IPv4 only), and the IPv6 address a lease holds besides its IPv4 one
    // (one row, so one transaction gives and one DELETE releases both).
    "ALTER TABLE networks ADD COLUMN subnet6 TEXT;  -- fd00:1:2:3::/64, canonical
    ALTER TABLE networks ADD COLUMN gateway6 TEXT;
    ALTER TABLE leases ADD COLUMN ip6 TEXT;         -- canonical text; NULL on IPv4-only networks
    CREATE UNIQUE INDEX leases_ip6 ON leases(network, ip6);",
];

pub struct Db {
    conn: Connection,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let _setup = SetupLock::take(Path::new(&lock_path))?;
        let conn = Connection::open(path).with_ctx(|| format!("open database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(60))?;
        // WAL: readers do not block the writer; NORMAL: a kill never corrupts or loses a
        // committed transaction (only a power loss may lose the last ones).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The last connection to close would checkpoint the WAL into the database and fsync
        // it: 5-15 ms at the end of every short command. The WAL is checkpointed when it
        // grows past 1000 pages instead (SQLite's autocheckpoint), by whichever commit
        // crosses that line.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        let mut db = Db { conn };
        db.migrate().ctx("database schema")?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<()> {
        // Usually up to date: a read, no write lock.
        let current: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current as usize == MIGRATIONS.len() {
            return Ok(());
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version as usize > MIGRATIONS.len() {
            return Err(crate::Error::new(format!(
                "store schema version {version} is newer than this capsactl knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `f` in one write transaction (committed when it returns Ok).
    pub fn write<T>(&mut self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }
}

/// An exclusive flock held while a connection sets the database up; released on drop
/// (closing the file releases it).
struct SetupLock(#[allow(dead_code)] std::fs::File);

impl SetupLock {
    fn take(path: &Path) -> Result<SetupLock> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::options().create(true).append(true).open(path).with_ctx(|| format!("open {}", path.display()))?;
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(SetupLock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(crate::Error::from(e).context(format!("lock {}", path.display())));
            }
        }
    }
}

/// Adds `delta` to a layer's reference count.
pub fn add_ref(tx: &Transaction, chain: &str, delta: i64) -> Result<()> {
    tx.execute("UPDATE layers SET refs = refs + ?1 WHERE chain_id = ?2", params![delta, chain])?;
    Ok(())
}

pub fn layer_exists(conn: &Connection, chain: &str) -> Result<bool> {
    Ok(conn.query_row("SELECT 1 FROM layers WHERE chain_id = ?1", [chain], |_| Ok(())).optional()?.is_some())
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes opening a new store at the same instant all get it (none "database is
    /// locked"): many connections race to set it up, again and again.
    #[test]
    fn simultaneous_first_opens_all_succeed() {
        let dir = std::env::temp_dir().join(format!("capsa-db-test-{}", std::process::id()));
        for round in 0..30 {
            let path = dir.join(format!("{round}.db"));
            std::fs::create_dir_all(&dir).unwrap();
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let opens: Vec<_> = (0..8)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        Db::open(&path).map(|_| ()).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for o in opens {
                assert_eq!(o.join().unwrap(), Ok(()), "round {round}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

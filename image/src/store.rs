//! The store: one root directory (default `/var/lib/capsa`) holding the content store,
//! the snapshots and the database, used by short `capsactl` processes at once.
//!
//! ```text
//! <root>/capsa.db          SQLite (WAL): images, tags, manifests, layers, containers
//! <root>/capsa.db.lock     flock: held while a process opens the database (see db.rs)
//! <root>/blobs/sha256/HEX  content-addressed blobs
//! <root>/snapshots/HEX/fs  one unpacked layer per chainID (overlay form)
//! <root>/l/SHORT           short links to snapshots, for overlay's lowerdir
//! <root>/containers/ID     a container's upper, work and rootfs, and its bundle
//! <root>/volumes/NAME/_data  named volumes (capsactl)
//! <root>/store.lock        flock: shared while adding, exclusive while collecting garbage
//! ```
//!
//! Crash consistency: files first, then one transaction. Blobs and snapshots are complete
//! under their names (see content.rs and snapshot.rs) before the transaction that
//! references them commits; a kill before the commit leaves unreferenced files, which
//! `gc` (under the exclusive lock, so no load is half-way) removes. Rows are only deleted
//! in transactions, and files of deleted rows are removed after the commit.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};

use crate::content::Content;
use crate::db::{self, Db};
use crate::digest::Digest;
use crate::error::{Context, Error, Result};
use crate::oci::{ImageConfig, Manifest, MAX_DOC};
use crate::reference::Reference;
use crate::snapshot::Snapshots;

pub struct Store {
    pub root: PathBuf,
    pub content: Content,
    pub snapshots: Snapshots,
    pub db: Db,
}

/// A layer to record with an image (bottom first).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewLayer {
    pub chain: Digest,
    pub diff_id: Digest,
    pub blob: Digest,
    pub media_type: String,
    pub size: u64,
}

/// An image to record, with everything it references.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub id: Digest,
    pub manifest: Digest,
    pub repo_digest: Option<Digest>,
    pub layers: Vec<NewLayer>,
    pub created: Option<String>,
    /// Every blob the image needs: (digest, "index" | "manifest" | "config" | "layer").
    pub blobs: Vec<(Digest, &'static str)>,
    /// Full names (`docker.io/library/busybox:latest`) to point at it.
    pub tags: Vec<String>,
}

/// An image as `images` and `inspect` see it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ImageInfo {
    pub id: Digest,
    pub manifest: Digest,
    pub repo_digest: Option<Digest>,
    pub top: Option<Digest>,
    pub size: u64,
    pub created: Option<String>,
    pub added: i64,
    pub tags: Vec<String>,
}

/// An images row: id, manifest, repo_digest, top_chain, size, created, added.
type Row = (String, String, Option<String>, Option<String>, i64, Option<String>, i64);

/// What garbage collection removed.
#[derive(Debug, Default)]
pub struct GcReport {
    pub layers: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub strays: usize,
}

/// Inserts the layer rows of a chain (bottom first) that are missing, counting each new
/// row as a reference to its parent; returns the top chainID.
fn insert_layers<'a>(tx: &rusqlite::Transaction, layers: &'a [NewLayer], now: i64) -> Result<Option<&'a Digest>> {
    let mut parent: Option<&Digest> = None;
    for l in layers {
        let new = tx.execute(
            "INSERT OR IGNORE INTO layers (chain_id, diff_id, parent, blob, media_type, size, link, refs, added)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)",
            params![
                l.chain.to_string(),
                l.diff_id.to_string(),
                parent.map(|p| p.to_string()),
                l.blob.to_string(),
                l.media_type,
                l.size as i64,
                Snapshots::link_name(&l.chain),
                now
            ],
        )?;
        if new == 1 {
            if let Some(p) = parent {
                db::add_ref(tx, &p.to_string(), 1)?;
            }
        }
        parent = Some(&l.chain);
    }
    Ok(parent)
}

/// Held while a process adds to the store (shared) or collects garbage (exclusive); its
/// own fd on store.lock, so it borrows nothing.
pub struct LockGuard(File);

impl Drop for LockGuard {
    fn drop(&mut self) {
        // SAFETY: flock on an fd we own, unlocking.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Store {
    /// The default root: `$CAPSA_ROOT`, else `/var/lib/capsa` for root and
    /// `$XDG_DATA_HOME/capsa` (or `~/.local/share/capsa`) for other users.
    pub fn default_root() -> PathBuf {
        if let Some(r) = std::env::var_os("CAPSA_ROOT") {
            return PathBuf::from(r);
        }
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/capsa");
        }
        match (std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME")) {
            (Some(x), _) => PathBuf::from(x).join("capsa"),
            (None, Some(h)) => PathBuf::from(h).join(".local/share/capsa"),
            _ => PathBuf::from("/var/lib/capsa"),
        }
    }

    pub fn open(root: &Path) -> Result<Store> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root).with_ctx(|| format!("create store {}", root.display()))?;
        let root = std::path::absolute(root).with_ctx(|| format!("store {}", root.display()))?;
        File::options().create(true).append(true).open(root.join("store.lock")).ctx("create store.lock")?;
        let content = Content::open(&root)?;
        let snapshots = Snapshots::open(&root)?;
        std::fs::create_dir_all(root.join("containers")).ctx("create containers dir")?;
        std::fs::create_dir_all(root.join("volumes")).ctx("create volumes dir")?;
        std::fs::create_dir_all(root.join("tmp")).ctx("create tmp dir")?;
        let db = Db::open(&root.join("capsa.db"))?;
        Ok(Store { root, content, snapshots, db })
    }

    fn flock(&self, op: i32) -> Result<LockGuard> {
        // Opened again (a dup would share one lock): each guard is a lock of its own.
        let f = File::options().append(true).open(self.root.join("store.lock")).ctx("open store.lock")?;
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
                return Ok(LockGuard(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::from(e).context("lock the store"));
            }
        }
    }

    /// Taken while adding blobs and snapshots that no row references yet.
    pub fn lock_shared(&self) -> Result<LockGuard> {
        self.flock(libc::LOCK_SH)
    }

    /// Taken by garbage collection: no other process is half-way through adding.
    pub fn lock_exclusive(&self) -> Result<LockGuard> {
        self.flock(libc::LOCK_EX)
    }

    /// A private scratch directory under the store (same filesystem, for renames).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// Records an image and its layers, blobs and tags in one transaction.
    pub fn register(&mut self, img: &NewImage) -> Result<()> {
        let total: u64 = img.layers.iter().map(|l| l.size).sum();
        let now = db::now();
        self.db.write(|tx| {
            let parent = insert_layers(tx, &img.layers, now)?;
            let id = img.id.to_string();
            let new = tx.execute(
                "INSERT OR IGNORE INTO images (id, manifest, repo_digest, top_chain, size, created, added) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    img.manifest.to_string(),
                    img.repo_digest.as_ref().map(|d| d.to_string()),
                    parent.map(|p| p.to_string()),
                    total as i64,
                    img.created,
                    now
                ],
            )?;
            if new == 1 {
                if let Some(p) = parent {
                    db::add_ref(tx, &p.to_string(), 1)?;
                }
            }
            for (d, kind) in &img.blobs {
                tx.execute("INSERT OR IGNORE INTO image_blobs (image, digest, kind) VALUES (?1, ?2, ?3)", params![id, d.to_string(), kind])?;
            }
            for t in &img.tags {
                tx.execute("INSERT OR REPLACE INTO tags (name, image) VALUES (?1, ?2)", params![t, id])?;
            }
            Ok(())
        })
    }

    /// Records layers (bottom first) that no image holds yet, in one transaction (a build
    /// keeps its intermediate layers for its cache this way; refs 0 until an image stands
    /// on them, so `gc` may take them).
    pub fn record_layers(&mut self, layers: &[NewLayer], also: impl FnOnce(&rusqlite::Transaction) -> Result<()>) -> Result<()> {
        let now = db::now();
        self.db.write(|tx| {
            insert_layers(tx, layers, now)?;
            also(tx)
        })
    }

    fn tags_of(&self, id: &str) -> Result<Vec<String>> {
        let mut st = self.db.conn().prepare_cached("SELECT name FROM tags WHERE image = ?1 ORDER BY name")?;
        let rows = st.query_map([id], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn info_row(&self, r: &rusqlite::Row) -> rusqlite::Result<Row> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
    }

    fn to_info(&self, row: Row) -> Result<ImageInfo> {
        let (id, manifest, repo, top, size, created, added) = row;
        Ok(ImageInfo {
            tags: self.tags_of(&id)?,
            id: Digest::parse(&id)?,
            manifest: Digest::parse(&manifest)?,
            repo_digest: repo.map(|r| Digest::parse(&r)).transpose()?,
            top: top.map(|t| Digest::parse(&t)).transpose()?,
            size: size as u64,
            created,
            added,
        })
    }

    const COLS: &'static str = "id, manifest, repo_digest, top_chain, size, created, added";

    /// Every image, newest first (by the config's created time, as docker sorts).
    pub fn images(&self) -> Result<Vec<ImageInfo>> {
        let mut st = self.db.conn().prepare(&format!("SELECT {} FROM images ORDER BY created DESC, added DESC", Self::COLS))?;
        let rows: Vec<_> = st.query_map([], |r| self.info_row(r))?.collect::<std::result::Result<_, _>>()?;
        rows.into_iter().map(|r| self.to_info(r)).collect()
    }

    fn by_id(&self, id: &str) -> Result<Option<ImageInfo>> {
        let row =
            self.db.conn().query_row(&format!("SELECT {} FROM images WHERE id = ?1", Self::COLS), [id], |r| self.info_row(r)).optional()?;
        row.map(|r| self.to_info(r)).transpose()
    }

    /// Finds an image by name[:tag], name@digest, full id (`sha256:…`) or a unique id
    /// prefix, as docker does.
    pub fn resolve(&self, s: &str) -> Result<ImageInfo> {
        let hexish = |x: &str| !x.is_empty() && x.len() <= 64 && x.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if let Some(h) = s.strip_prefix("sha256:") {
            if hexish(h) {
                return self.by_prefix(h, s);
            }
        }
        if let Ok(r) = Reference::parse(s) {
            if let Some(d) = &r.digest {
                let d = d.to_string();
                let id: Option<String> = self
                    .db
                    .conn()
                    .query_row(
                        "SELECT i.id FROM images i WHERE (i.manifest = ?1 OR i.repo_digest = ?1) AND (EXISTS (SELECT 1 FROM tags t WHERE t.image = i.id AND t.name LIKE ?2 || ':%') OR NOT EXISTS (SELECT 1 FROM tags t WHERE t.image = i.id))",
                        params![d, r.repo],
                        |row| row.get(0),
                    )
                    .optional()?;
                if let Some(id) = id {
                    if let Some(i) = self.by_id(&id)? {
                        return Ok(i);
                    }
                }
            } else {
                let id: Option<String> =
                    self.db.conn().query_row("SELECT image FROM tags WHERE name = ?1", [r.full()], |row| row.get(0)).optional()?;
                if let Some(id) = id {
                    if let Some(i) = self.by_id(&id)? {
                        return Ok(i);
                    }
                }
            }
        }
        if hexish(s) && s.len() >= 4 {
            if let Ok(i) = self.by_prefix(s, s) {
                return Ok(i);
            }
        }
        Err(Error::not_found(format!("No such image: {s}")))
    }

    fn by_prefix(&self, hex: &str, shown: &str) -> Result<ImageInfo> {
        let mut st = self.db.conn().prepare("SELECT id FROM images WHERE id LIKE 'sha256:' || ?1 || '%' LIMIT 2")?;
        let ids: Vec<String> = st.query_map([hex], |r| r.get(0))?.collect::<std::result::Result<_, _>>()?;
        match ids.as_slice() {
            [one] => self.by_id(one)?.ok_or_else(|| Error::not_found(format!("No such image: {shown}"))),
            [] => Err(Error::not_found(format!("No such image: {shown}"))),
            _ => Err(Error::new(format!("{shown}: ambiguous image id prefix"))),
        }
    }

    pub fn config(&self, img: &ImageInfo) -> Result<(ImageConfig, Vec<u8>)> {
        let bytes = self.content.read(&img.id, MAX_DOC)?;
        Ok((ImageConfig::parse(&bytes, &format!("config {}", img.id))?, bytes))
    }

    pub fn manifest(&self, img: &ImageInfo) -> Result<(Manifest, Vec<u8>)> {
        let bytes = self.content.read(&img.manifest, MAX_DOC)?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::new(format!("manifest {}: {e}", img.manifest)))?;
        Ok((m, bytes))
    }

    /// The image's layers as chainIDs, bottom first.
    pub fn chain(&self, img: &ImageInfo) -> Result<Vec<Digest>> {
        self.chain_of(img.top.as_ref().map(|d| d.to_string()))
    }

    /// The layers under top layer `top` (a chainID), bottom first: what a container
    /// stands on (its row keeps the top layer, and so the chain, referenced).
    pub fn chain_of(&self, top: Option<String>) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let mut cur = top;
        while let Some(c) = cur {
            let parent: Option<String> = self
                .db
                .conn()
                .query_row("SELECT parent FROM layers WHERE chain_id = ?1", [&c], |r| r.get(0))
                .optional()?
                .ok_or_else(|| Error::new(format!("layer {c} is missing from the database")))?;
            out.push(Digest::parse(&c)?);
            cur = parent;
            if out.len() > 10_000 {
                return Err(Error::new("layer chain loops"));
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The unpacked size of layer `chain`, if the store has its row (registry pulls skip
    /// such layers when their snapshot is there too).
    pub fn layer_size(&self, chain: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> =
            self.db.conn().query_row("SELECT size FROM layers WHERE chain_id = ?1", [chain.to_string()], |r| r.get(0)).optional()?;
        Ok(size.map(|s| s as u64))
    }

    /// Layer rows of an image (bottom first): (chainID, diffID, blob, media type, size).
    pub fn layers(&self, img: &ImageInfo) -> Result<Vec<NewLayer>> {
        let mut out = Vec::new();
        for c in self.chain(img)? {
            let (diff, blob, mt, size): (String, Option<String>, Option<String>, i64) = self.db.conn().query_row(
                "SELECT diff_id, blob, media_type, size FROM layers WHERE chain_id = ?1",
                [c.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            out.push(NewLayer {
                diff_id: Digest::parse(&diff)?,
                blob: Digest::parse(blob.as_deref().unwrap_or(&diff))?,
                media_type: mt.unwrap_or_default(),
                size: size as u64,
                chain: c,
            });
        }
        Ok(out)
    }

    /// Points `name` (any form; normalised) at image `id`.
    pub fn tag(&mut self, id: &Digest, name: &str) -> Result<String> {
        let r = Reference::parse(name)?;
        if r.tag.is_none() {
            return Err(Error::new(format!("{name}: a tag cannot be a digest reference")));
        }
        let full = r.full();
        let id = id.to_string();
        self.db.write(|tx| {
            tx.execute("INSERT OR REPLACE INTO tags (name, image) VALUES (?1, ?2)", params![full, id])?;
            Ok(())
        })?;
        Ok(full)
    }

    /// Removes the tag `full`; returns whether it existed.
    pub fn untag(&mut self, full: &str) -> Result<bool> {
        let full = full.to_string();
        self.db.write(|tx| Ok(tx.execute("DELETE FROM tags WHERE name = ?1", [&full])? == 1))
    }

    /// Containers (rows) standing on image `id`.
    pub fn containers_of(&self, id: &Digest) -> Result<Vec<String>> {
        let mut st = self.db.conn().prepare("SELECT id FROM containers WHERE image = ?1")?;
        let rows = st.query_map([id.to_string()], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Deletes image `id` (its tags and blob references; its top layer loses a
    /// reference). Files go at the next [`Store::gc`].
    pub fn delete_image(&mut self, id: &Digest) -> Result<()> {
        let id = id.to_string();
        self.db.write(|tx| {
            let top: Option<Option<String>> = tx.query_row("SELECT top_chain FROM images WHERE id = ?1", [&id], |r| r.get(0)).optional()?;
            let Some(top) = top else { return Err(Error::not_found(format!("No such image: {id}"))) };
            tx.execute("DELETE FROM tags WHERE image = ?1", [&id])?;
            tx.execute("DELETE FROM image_blobs WHERE image = ?1", [&id])?;
            tx.execute("DELETE FROM images WHERE id = ?1", [&id])?;
            if let Some(t) = top {
                db::add_ref(tx, &t, -1)?;
            }
            Ok(())
        })
    }

    /// Records a container standing on `image` (so its layers are kept) and the process
    /// looking after it.
    pub fn add_container(&mut self, id: &str, image: &ImageInfo, auto_remove: bool) -> Result<()> {
        let (pid, start) = own_pid_start();
        let (id, img, top) = (id.to_string(), image.id.to_string(), image.top.as_ref().map(|t| t.to_string()));
        self.db.write(|tx| {
            tx.execute(
                "INSERT INTO containers (id, image, top_chain, state, auto_remove, owner_pid, owner_start, created) VALUES (?1, ?2, ?3, 'created', ?4, ?5, ?6, ?7)",
                params![id, img, top, auto_remove as i64, pid, start as i64, db::now()],
            )?;
            if let Some(t) = &top {
                db::add_ref(tx, t, 1)?;
            }
            Ok(())
        })
    }

    pub fn set_container_state(&mut self, id: &str, state: &str) -> Result<()> {
        let (id, state) = (id.to_string(), state.to_string());
        self.db.write(|tx| {
            tx.execute("UPDATE containers SET state = ?1 WHERE id = ?2", params![state, id])?;
            Ok(())
        })
    }

    pub fn remove_container_row(&mut self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.db.write(|tx| {
            let top: Option<Option<String>> =
                tx.query_row("SELECT top_chain FROM containers WHERE id = ?1", [&id], |r| r.get(0)).optional()?;
            if let Some(top) = top {
                tx.execute("DELETE FROM containers WHERE id = ?1", [&id])?;
                if let Some(t) = top {
                    db::add_ref(tx, &t, -1)?;
                }
            }
            Ok(())
        })
    }

    /// `run --rm` containers whose capsactl process is gone (killed): to be cleaned up.
    pub fn orphaned_containers(&self) -> Result<Vec<String>> {
        let mut st = self.db.conn().prepare("SELECT id, owner_pid, owner_start FROM containers WHERE auto_remove = 1")?;
        let rows: Vec<(String, Option<i64>, Option<i64>)> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<std::result::Result<_, _>>()?;
        Ok(rows
            .into_iter()
            .filter(|(_, pid, start)| match (pid, start) {
                (Some(p), Some(s)) => pid_start(*p as i32) != Some(*s as u64),
                _ => true,
            })
            .map(|(id, _, _)| id)
            .collect())
    }

    /// Garbage collection, under the exclusive lock: layers nothing stands on (rows, then
    /// snapshots), blobs no image references, and leftovers of killed processes.
    pub fn gc(&mut self) -> Result<GcReport> {
        let _guard = self.lock_exclusive()?;
        let mut report = GcReport::default();
        // 1. Layer rows with no references, cascading down to their parents.
        let dead: Vec<String> = self.db.write(|tx| {
            let mut dead = Vec::new();
            loop {
                let rows: Vec<(String, Option<String>)> = {
                    let mut st = tx.prepare("SELECT chain_id, parent FROM layers WHERE refs <= 0")?;
                    let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<std::result::Result<_, _>>()?;
                    r
                };
                if rows.is_empty() {
                    break;
                }
                for (c, p) in rows {
                    tx.execute("DELETE FROM layers WHERE chain_id = ?1", [&c])?;
                    if let Some(p) = p {
                        db::add_ref(tx, &p, -1)?;
                    }
                    dead.push(c);
                }
            }
            Ok(dead)
        })?;
        // 2. Snapshots without a row (including those just deleted) and unfinished ones.
        let (snaps, strays) = self.snapshots.list()?;
        for c in snaps {
            if !db::layer_exists(self.db.conn(), &c.to_string())? {
                self.snapshots.remove(&c)?;
                report.layers += 1;
            }
        }
        for s in strays {
            crate::layer::remove_tree(&s).with_ctx(|| format!("remove {}", s.display()))?;
            report.strays += 1;
        }
        for l in self.snapshots.dangling_links() {
            let _ = std::fs::remove_file(l);
        }
        let _ = dead;
        // 3. Blobs no image references.
        let (blobs, strays) = self.content.list()?;
        for d in blobs {
            let used = self
                .db
                .conn()
                .query_row("SELECT 1 FROM image_blobs WHERE digest = ?1 LIMIT 1", [d.to_string()], |_| Ok(()))
                .optional()?
                .is_some();
            if !used {
                report.bytes += self.content.size(&d).unwrap_or(0);
                self.content.delete(&d)?;
                report.blobs += 1;
            }
        }
        for s in strays {
            let _ = std::fs::remove_file(&s);
            report.strays += 1;
        }
        // 4. Scratch files of killed processes. A build's scratch dir (`build-*`) may hold a
        //    container and overlay mounts, live or left by a kill: capsactl's build cleans
        //    those (never a walk into a mounted rootfs here).
        if let Ok(rd) = std::fs::read_dir(self.tmp_dir()) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("build-") {
                    continue;
                }
                let _ = crate::layer::remove_tree(&e.path());
                report.strays += 1;
            }
        }
        Ok(report)
    }
}

/// Our own pid and start time (from /proc/self/stat), recorded with a container.
fn own_pid_start() -> (i32, u64) {
    let pid = std::process::id() as i32;
    (pid, pid_start(pid).unwrap_or(0))
}

/// A process's start time, if it is alive (and not a zombie).
pub fn pid_start(pid: i32) -> Option<u64> {
    // Bytes: the command name may be any bytes (the fields after it are text).
    let s = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/stat")).ok()?).into_owned();
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    f.nth(18)?.parse().ok()
}

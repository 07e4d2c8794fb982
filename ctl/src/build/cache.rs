//! The build cache as `system df`, `system prune` and `builder prune` see it: the steps'
//! entries (table `build_cache`, see exec.rs) and the RUN --mount=type=cache directories
//! (see mounts.rs).
//!
//! An entry's layer is held by no reference of its own: garbage collection takes it once no
//! image has it, and the entry goes with it. So the cache's own bytes are those of the
//! layers of its entries that no image has, and of the cache mounts.

use std::collections::HashSet;

use capsa_image::Store;

use super::mounts;
use crate::cli::{fail, Result};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Entries and cache mounts.
    pub total: usize,
    /// Cache mounts a build is using now.
    pub active: usize,
    pub size: u64,
    pub reclaimable: u64,
}

/// The chain ids of every image's layers.
fn image_layers(store: &Store) -> Result<HashSet<String>> {
    let mut held = HashSet::new();
    for img in store.images()? {
        held.extend(store.layers(&img)?.into_iter().map(|l| l.chain.to_string()));
    }
    Ok(held)
}

/// (entries, and the sizes of their layers that no image has).
fn entries(store: &Store) -> Result<(usize, Vec<(String, u64)>)> {
    let conn = store.db.conn();
    let n: i64 = conn.query_row("SELECT count(*) FROM build_cache", [], |r| r.get(0)).map_err(|e| fail(format!("build cache: {e}")))?;
    let mut st = conn
        .prepare("SELECT DISTINCT b.chain_id, l.size FROM build_cache b JOIN layers l ON l.chain_id = b.chain_id")
        .map_err(|e| fail(format!("build cache: {e}")))?;
    let rows: Vec<(String, i64)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).and_then(|r| r.collect()).map_err(|e| fail(format!("build cache: {e}")))?;
    let held = image_layers(store)?;
    let own = rows.into_iter().filter(|(c, _)| !held.contains(c)).map(|(c, s)| (c, s.max(0) as u64)).collect();
    Ok((n.max(0) as usize, own))
}

pub fn usage(store: &Store) -> Result<Usage> {
    let (n, own) = entries(store)?;
    let layers: u64 = own.iter().map(|(_, s)| s).sum();
    let m = mounts::usage(store);
    Ok(Usage { total: n + m.total, active: m.active, size: layers + m.size, reclaimable: layers + m.size - m.active_size })
}

/// Removes the cache mounts no build is using and the entries whose layer no image has
/// (`all`: every entry), then collects the layers; returns (objects removed, bytes).
pub fn prune(store: &mut Store, all: bool) -> Result<(usize, u64)> {
    let (dirs, mut bytes) = mounts::prune(store);
    // Under the store's exclusive lock, which a running build holds shared: the steps it
    // has recorded belong to no image yet, and must not be taken from under it. Released
    // before the gc, which takes it itself.
    let guard = store.lock_exclusive()?;
    let held = image_layers(store)?;
    let removed = store
        .db
        .write(|tx| {
            let keys: Vec<(String, Option<String>)> = {
                let mut st = tx.prepare("SELECT key, chain_id FROM build_cache")?;
                let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<std::result::Result<_, _>>()?;
                r
            };
            let mut n = 0;
            for (k, c) in keys {
                if all || c.is_none_or(|c| !held.contains(&c)) {
                    n += tx.execute("DELETE FROM build_cache WHERE key = ?1", [&k])?;
                }
            }
            Ok(n)
        })
        .map_err(|e| fail(format!("build cache: {e}")))?;
    drop(guard);
    bytes += store.gc()?.bytes;
    Ok((dirs + removed, bytes))
}

//! `rm [-f] [-v]`, `--rm`, `container prune`: a container that is down loses its runtime
//! state, rootfs mount, directory (upper layer, logs), anonymous volumes (with `-v`, and
//! always with `--rm`, as docker) and finally its row, so that a removal interrupted at any
//! point can simply be run again.

use std::path::Path;
use std::time::Duration;

use capsa_image::Store;

use super::{reconcile, stop, volumes, Lock, Record};
use crate::cli::{fail, Failure, Result};

/// `rm`: refuses a running container unless `force` (then kills it first).
pub fn rm(store: &mut Store, state_root: &Path, rec: &Record, force: bool, vols: bool) -> Result<()> {
    let dir = super::dir(store, &rec.id);
    let rec = match reconcile::one(store, state_root, rec)? {
        Some(r) => r,
        None => return Ok(()),
    };
    if rec.is_active() {
        if !force {
            let what = if rec.state == "paused" { "paused" } else { "running" };
            return Err(Failure {
                msg: format!(
                    "You cannot remove a {what} container {}. Stop the container before attempting removal or force remove",
                    rec.id
                ),
                code: 1,
            });
        }
        super::update(store, &rec.id, "user_stopped = 1", &[])?;
        let _ = crate::monitor::client::request(&dir, "stop");
        if stop::runtime_status(state_root, &rec.id).is_some() {
            let _ = capsa::container::resume(state_root, &rec.id);
            let _ = capsa::container::kill(state_root, &rec.id, libc::SIGKILL, true);
        }
        stop::wait_down(store, state_root, &rec)?;
    }
    // Down now (or removed by its own monitor: --rm).
    if super::get(store, &rec.id)?.is_none() {
        return Ok(());
    }
    let lock = match Lock::take_within(&dir, Duration::from_secs(30)) {
        Ok(Some(l)) => Some(l),
        Ok(None) => return Err(fail(format!("container {}: busy (another command holds it)", rec.id))),
        Err(_) => None,
    };
    // Removed meanwhile by another `rm` (whose lock we waited for), or started again?
    let Some(rec) = super::get(store, &rec.id)? else { return Ok(()) };
    if rec.is_active() && stop::runtime_status(state_root, &rec.id).is_some() {
        return Err(fail(format!("container {} was started again while being removed", rec.id)));
    }
    let r = remove_down(store, state_root, &rec, vols);
    drop(lock);
    r
}

/// Removes a container that is down. The caller holds its lock (or the directory is gone).
pub fn remove_down(store: &mut Store, state_root: &Path, rec: &Record, vols: bool) -> Result<()> {
    super::set_state(store, &rec.id, "removing")?;
    reconcile::runtime_down(store, state_root, rec);
    if rec.stored.host.cgroup_parent.is_empty() {
        // The shared default parent goes with its last container (the kernel keeps it while
        // another container's cgroup is below it; a create racing this makes it again).
        let _ = capsa_cgroups::remove_if_unused(super::spec::DEFAULT_CGROUP_PARENT);
    }
    let dir = super::dir(store, &rec.id);
    let err = |e: &dyn std::fmt::Display| fail(format!("remove container {}: {e}", rec.id));
    capsa_image::snapshot::unmount_rootfs(&dir).map_err(|e| err(&e))?;
    // Moved out of the way first, then removed: a command opening this container's lock
    // meanwhile (a second `rm`) finds no directory instead of making a file in a tree
    // being removed. A leftover of a removal killed half-way goes with `strays`.
    let gone = store.containers_dir().join(format!(".removing-{}", rec.id));
    capsa_image::snapshot::remove_rootfs(&gone).map_err(|e| err(&e))?;
    match std::fs::rename(&dir, &gone) {
        Ok(()) => capsa_image::snapshot::remove_rootfs(&gone).map_err(|e| err(&e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&e)),
    }
    forget(store, rec, vols)
}

/// Deletes the row, then the anonymous volumes it used (with `vols`).
pub fn forget(store: &mut Store, rec: &Record, vols: bool) -> Result<()> {
    super::delete_row(store, &rec.id)?;
    if vols {
        for m in rec.stored.mounts.iter().filter(|m| m.typ == "volume" && m.options.iter().any(|o| o == "anonymous")) {
            // Still used by another container (--volumes-from is not supported, but be safe).
            if volumes::users(store, &m.name)?.is_empty() {
                volumes::remove(store, &m.name, true)?;
            }
        }
    }
    Ok(())
}

/// Directories under `containers/` without a row (a create killed before its row was
/// written) and nobody holding their lock.
pub fn strays(store: &mut Store) -> usize {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(store.containers_dir()) else { return 0 };
    for e in rd.flatten() {
        let Some(id) = e.file_name().to_str().map(str::to_string) else { continue };
        if matches!(super::get(store, &id), Ok(Some(_))) {
            continue;
        }
        if let Ok(Some(lock)) = Lock::try_take(&e.path()) {
            if matches!(super::get(store, &id), Ok(None)) && capsa_image::snapshot::remove_rootfs(&e.path()).is_ok() {
                n += 1;
            }
            drop(lock);
        }
    }
    n
}

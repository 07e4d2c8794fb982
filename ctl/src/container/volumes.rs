//! Named volumes (docker's `local` driver): `<store>/volumes/<name>/_data`, a row each in
//! the `volumes` table, and `container_volumes` rows saying which containers use which.
//! Anonymous volumes (an image VOLUME or `-v /path` without a name) get a random 64-hex
//! name and go with their container on `rm -v` and `--rm`.
//!
//! As docker does, a volume that is still empty when a container first mounts it over a
//! directory of the image gets a copy of that directory's content (unless `nocopy`). The
//! copy reads the image through `capsa_sys::Root` and the fd walk of `fstree`.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use capsa_image::Store;
use capsa_sys::{Follow, Root};

use crate::cli::{fail, Failure, Result};

#[derive(Debug, Clone)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub anonymous: bool,
    pub created: String,
}

pub fn root_dir(store: &Store) -> PathBuf {
    store.root.join("volumes")
}

/// Where a volume's data lives (docker's `Mountpoint`).
pub fn data_dir(store: &Store, name: &str) -> PathBuf {
    root_dir(store).join(name).join("_data")
}

/// docker's rule for volume names.
pub fn validate(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.len() <= 255
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(fail(format!("create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")))
    }
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<Volume> {
    let labels: String = r.get(2)?;
    let options: String = r.get(3)?;
    Ok(Volume {
        name: r.get(0)?,
        driver: r.get(1)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        options: serde_json::from_str(&options).unwrap_or_default(),
        anonymous: r.get::<_, i64>(4)? != 0,
        created: r.get(5)?,
    })
}

const COLS: &str = "name, driver, labels, options, anonymous, created";

pub fn get(store: &Store, name: &str) -> Result<Option<Volume>> {
    Ok(store.db.conn().query_row(&format!("SELECT {COLS} FROM volumes WHERE name = ?1"), [name], row).optional()?)
}

pub fn list(store: &Store) -> Result<Vec<Volume>> {
    let mut st = store.db.conn().prepare(&format!("SELECT {COLS} FROM volumes ORDER BY name"))?;
    let rows = st.query_map([], row)?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

/// Containers using volume `name`.
pub fn users(store: &Store, name: &str) -> Result<Vec<String>> {
    let mut st = store.db.conn().prepare("SELECT container FROM container_volumes WHERE volume = ?1 ORDER BY container")?;
    let rows = st.query_map([name], |r| r.get(0))?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

/// Creates a volume (an existing one of that name is returned as it is, as docker does).
pub fn create(
    store: &mut Store,
    name: &str,
    labels: &BTreeMap<String, String>,
    options: &BTreeMap<String, String>,
    anonymous: bool,
) -> Result<Volume> {
    validate(name)?;
    if let Some(opt) = options.keys().next() {
        // The local driver's type/device/o options mount a filesystem: not supported yet.
        return Err(fail(format!(
            "create {name}: volume option {opt:?} is not supported (capsactl's local volumes are plain directories)"
        )));
    }
    let dir = data_dir(store, name);
    std::fs::create_dir_all(&dir).map_err(|e| fail(format!("create {name}: {}: {e}", dir.display())))?;
    let (n, l, o, now) = (name.to_string(), json!(labels).to_string(), json!(options).to_string(), super::now());
    store.db.write(|tx| {
        tx.execute(
            "INSERT OR IGNORE INTO volumes (name, driver, labels, options, anonymous, created) VALUES (?1, 'local', ?2, ?3, ?4, ?5)",
            params![n, l, o, anonymous as i64, now],
        )?;
        Ok(())
    })?;
    get(store, name)?.ok_or_else(|| fail(format!("create {name}: the volume vanished")))
}

/// Removes a volume that no container uses (`force`: a missing one is not an error).
pub fn remove(store: &mut Store, name: &str, force: bool) -> Result<()> {
    if get(store, name)?.is_none() {
        return if force { Ok(()) } else { Err(fail(format!("get {name}: no such volume"))) };
    }
    let n = name.to_string();
    let in_use: Vec<String> = store.db.write(|tx| {
        let users: Vec<String> = {
            let mut st = tx.prepare("SELECT container FROM container_volumes WHERE volume = ?1")?;
            let r = st.query_map([&n], |r| r.get(0))?.collect::<std::result::Result<_, _>>()?;
            r
        };
        if users.is_empty() {
            tx.execute("DELETE FROM volumes WHERE name = ?1", [&n])?;
        }
        Ok(users)
    })?;
    if !in_use.is_empty() {
        return Err(Failure { msg: format!("remove {name}: volume is in use - [{}]", in_use.join(", ")), code: 1 });
    }
    let dir = root_dir(store).join(name);
    capsa_image::layer::remove_tree(&dir).map_err(|e| fail(format!("remove {name}: {}: {e}", dir.display())))?;
    Ok(())
}

/// Bytes used by a volume (`system df`, `volume inspect` do not need it exact).
pub fn size(store: &Store, name: &str) -> u64 {
    dir_size(&data_dir(store, name))
}

pub fn dir_size(p: &Path) -> u64 {
    let Ok(root) = std::fs::File::open(p) else { return 0 };
    let mut total = 0;
    let _ = crate::fstree::walk(root.as_fd(), &mut |n| {
        if crate::fstree::kind(n.st) == nix::sys::stat::SFlag::S_IFREG {
            total += n.st.st_blocks as u64 * 512;
        }
        Ok(true)
    });
    total
}

/// docker's `volume inspect` object.
pub fn describe(store: &Store, v: &Volume) -> Value {
    json!({
        "CreatedAt": v.created,
        "Driver": v.driver,
        "Labels": if v.labels.is_empty() { Value::Null } else { json!(v.labels) },
        "Mountpoint": data_dir(store, &v.name).display().to_string(),
        "Name": v.name,
        "Options": if v.options.is_empty() { Value::Null } else { json!(v.options) },
        "Scope": "local"
    })
}

/// Copies the image's content at `dest` (inside the mounted rootfs) into the volume when
/// the volume is empty, as docker does on a volume's first use.
pub fn init_from_image(rootfs: &Root, dest: &str, data: &Path) -> Result<()> {
    let vol = std::fs::File::open(data).map_err(|e| fail(format!("volume {}: {e}", data.display())))?;
    if !crate::fstree::names(vol.as_fd()).map_err(|e| fail(format!("volume {}: {e}", data.display())))?.is_empty() {
        return Ok(());
    }
    let src = match rootfs.open_at(Path::new(dest), nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY, Follow::InRoot) {
        Ok(fd) => fd,
        // Nothing (or no directory) in the image there: nothing to copy.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(()),
        Err(e) => return Err(fail(format!("volume at {dest}: open the image's {dest}: {e}"))),
    };
    crate::fstree::copy_contents(src.as_fd(), vol.as_fd(), crate::fstree::CopyOpts { keep_owner: true })
        .map_err(|e| fail(format!("volume at {dest}: copy the image's content: {e}")))?;
    // The volume's root takes the owner and mode of the image's directory (docker's rule).
    if let Ok(st) = nix::sys::stat::fstat(src.as_fd()) {
        let _ = nix::unistd::fchown(vol.as_fd(), Some(st.st_uid.into()), Some(st.st_gid.into()));
        let _ = nix::sys::stat::fchmod(vol.as_fd(), nix::sys::stat::Mode::from_bits_truncate(st.st_mode & 0o7777));
    }
    Ok(())
}

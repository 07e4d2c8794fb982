//! `commit`: a container's changes (its overlay upper directory) as a new image layer.
//!
//! The upper directory is written as an OCI layer tar by the fd walk of `fstree` (the
//! container may be changing it: it is paused unless `--pause=false`, and nothing in it is
//! ever followed): overlayfs whiteouts (char 0:0) become `.wh.NAME` entries and opaque
//! directories a `.wh..wh..opq` entry. The tar goes into the content store as it is
//! written (digest = diffID, an uncompressed layer), is unpacked as a snapshot like any
//! loaded layer, and the new image is the container's image plus that layer, with the
//! container's config (and `--change` directives) as its config.

use std::os::fd::AsFd;
use std::path::Path;

use nix::sys::stat::FileStat;
use serde_json::{json, Value};

use capsa_image::digest::{Algo, Digest};
use capsa_image::oci::{self, Compression, Descriptor, Manifest};
use capsa_image::store::{NewImage, NewLayer};
use capsa_image::Store;

use super::Record;
use crate::cli::{fail, Result};
use crate::fstree::{TarOpts, TarWriter};

pub struct Opts {
    pub author: Option<String>,
    pub message: Option<String>,
    pub changes: Vec<String>,
    pub pause: bool,
    /// Full name (`docker.io/library/x:tag`) to tag the image with.
    pub tag: Option<String>,
}

/// Applies one Dockerfile-like `--change` line to an image config's `config` object.
pub fn apply_change(cfg: &mut Value, change: &str) -> Result<()> {
    let (instr, rest) = change.trim().split_once(char::is_whitespace).unwrap_or((change.trim(), ""));
    let rest = rest.trim();
    let list = |s: &str| -> Vec<String> {
        match serde_json::from_str::<Vec<String>>(s) {
            Ok(v) => v,
            Err(_) => vec!["/bin/sh".into(), "-c".into(), s.to_string()],
        }
    };
    let bad =
        || fail(format!("--change {change:?}: want CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME or WORKDIR with a value"));
    if rest.is_empty() {
        return Err(bad());
    }
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => cfg["Cmd"] = json!(list(rest)),
        "ENTRYPOINT" => cfg["Entrypoint"] = json!(list(rest)),
        "ENV" => {
            let (k, v) = rest.split_once('=').or_else(|| rest.split_once(char::is_whitespace)).ok_or_else(bad)?;
            let mut env: Vec<String> = serde_json::from_value(cfg["Env"].clone()).unwrap_or_default();
            env.retain(|e| e.split_once('=').map(|(a, _)| a) != Some(k.trim()));
            env.push(format!("{}={}", k.trim(), v.trim().trim_matches('"')));
            cfg["Env"] = json!(env);
        }
        "EXPOSE" => {
            for p in rest.split_whitespace() {
                let key = if p.contains('/') { p.to_string() } else { format!("{p}/tcp") };
                if !cfg["ExposedPorts"].is_object() {
                    cfg["ExposedPorts"] = json!({});
                }
                cfg["ExposedPorts"][key] = json!({});
            }
        }
        "LABEL" => {
            let (k, v) = rest.split_once('=').ok_or_else(bad)?;
            if !cfg["Labels"].is_object() {
                cfg["Labels"] = json!({});
            }
            cfg["Labels"][k.trim().trim_matches('"')] = json!(v.trim().trim_matches('"'));
        }
        "STOPSIGNAL" => cfg["StopSignal"] = json!(rest),
        "USER" => cfg["User"] = json!(rest),
        "WORKDIR" => cfg["WorkingDir"] = json!(rest),
        "VOLUME" => {
            let vols: Vec<String> = serde_json::from_str(rest).unwrap_or_else(|_| rest.split_whitespace().map(str::to_string).collect());
            if !cfg["Volumes"].is_object() {
                cfg["Volumes"] = json!({});
            }
            for v in vols {
                cfg["Volumes"][v] = json!({});
            }
        }
        _ => return Err(bad()),
    }
    Ok(())
}

/// Writes the upper directory as a layer blob; returns its digest (= diffID). `skip`:
/// entries left out (commit: the mount points the runtime made, see fs::Lowers); `clamp`:
/// no mtime later than this (SOURCE_DATE_EPOCH, for reproducible layers).
fn layer_blob(store: &Store, upper: &Path, skip: &dyn Fn(&Path, &FileStat) -> bool, clamp: Option<i64>) -> Result<Digest> {
    let dir = std::fs::File::open(upper).map_err(|e| fail(format!("open {}: {e}", upper.display())))?;
    let w = store.content.writer(Algo::Sha256)?;
    let mut t = TarWriter::new(std::io::BufWriter::with_capacity(1 << 20, w), TarOpts { overlay_upper: true, clamp_mtime: clamp });
    t.add_tree_except(dir.as_fd(), Path::new(""), skip).map_err(|e| fail(format!("write the layer: {e}")))?;
    let w = t.finish().map_err(|e| fail(format!("write the layer: {e}")))?;
    let w = w.into_inner().map_err(|e| fail(format!("write the layer: {}", e.error())))?;
    Ok(w.commit(None, None)?)
}

/// An overlay upper directory as a new layer on `parent` (its chainID): the blob in the
/// content store, unpacked as a snapshot. Used by `commit` and `build`.
pub fn layer_from_upper(
    store: &Store,
    upper: &Path,
    parent: Option<&Digest>,
    skip: &dyn Fn(&Path, &FileStat) -> bool,
    clamp: Option<i64>,
) -> Result<NewLayer> {
    let blob = layer_blob(store, upper, skip, clamp)?;
    let chain = Digest::chain(parent, &blob);
    let f = store.content.open_blob(&blob)?;
    let size = store.snapshots.unpack(&f, &blob, Compression::None, &chain, Some(&blob), &capsa_image::layer::Limits::default())?.size;
    Ok(NewLayer { chain, diff_id: blob.clone(), blob, media_type: oci::OCI_LAYER.to_string(), size })
}

/// Stores `icfg` and a manifest over `layers` (bottom first), and records the image with
/// `tags`; returns the image id. Used by `commit` and `build`.
pub fn write_image(store: &mut Store, icfg: &capsa_image::oci::ImageConfig, layers: Vec<NewLayer>, tags: Vec<String>) -> Result<Digest> {
    let cfg_bytes = serde_json::to_vec(icfg).map_err(|e| fail(format!("encode config: {e}")))?;
    let id = store.content.put(&cfg_bytes, None)?;
    let mut mlayers = Vec::new();
    for l in &layers {
        mlayers.push(Descriptor::new(&l.media_type, l.blob.clone(), store.content.size(&l.blob)?));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::OCI_MANIFEST.into()),
        config: Descriptor::new(oci::OCI_CONFIG, id.clone(), cfg_bytes.len() as u64),
        layers: mlayers,
        annotations: None,
    };
    let mbytes = serde_json::to_vec(&manifest).map_err(|e| fail(format!("encode manifest: {e}")))?;
    let mdigest = store.content.put(&mbytes, None)?;
    let mut blobs: Vec<(Digest, &'static str)> = layers.iter().map(|l| (l.blob.clone(), "layer")).collect();
    blobs.push((id.clone(), "config"));
    blobs.push((mdigest.clone(), "manifest"));
    store.register(&NewImage {
        id: id.clone(),
        manifest: mdigest,
        repo_digest: None,
        layers,
        created: icfg.created.clone(),
        blobs,
        tags,
    })?;
    Ok(id)
}

/// Commits `rec`; returns the new image id.
pub fn commit(store: &mut Store, state_root: &Path, rec: &Record, o: &Opts) -> Result<Digest> {
    let img = store.resolve(&rec.image).map_err(|_| fail(format!("the image of container {} is gone from the store", rec.id)))?;
    let (mut icfg, _) = store.config(&img)?;
    let mut layers = store.layers(&img)?;
    let upper = super::dir(store, &rec.id).join("upper");
    let lowers = super::fs::Lowers::open(store, rec)?;
    let running = super::stop::runtime_status(state_root, &rec.id).is_some_and(|(_, s)| s == capsa::container::Status::Running);
    let paused_here = o.pause && running && capsa::container::pause(state_root, &rec.id).is_ok();
    let _guard = store.lock_shared()?;
    let parent = layers.last().map(|l| l.chain.clone());
    let skip = |p: &Path, st: &FileStat| lowers.is_init_entry(&Path::new("/").join(p), st);
    let layer = layer_from_upper(store, &upper, parent.as_ref(), &skip, None);
    if paused_here {
        let _ = capsa::container::resume(state_root, &rec.id);
    }
    let layer = layer?;
    let diff_id = layer.diff_id.clone();
    layers.push(layer);

    // The config: the container's, as docker commits it.
    let c = &rec.stored.config;
    let mut run = json!({
        "Env": c.env, "Cmd": c.cmd, "Entrypoint": c.entrypoint, "WorkingDir": c.working_dir, "User": c.user,
        "Labels": c.labels, "Volumes": c.volumes, "ExposedPorts": if c.exposed_ports.is_empty() { Value::Null } else { json!(c.exposed_ports) },
        "StopSignal": c.stop_signal
    });
    for ch in &o.changes {
        apply_change(&mut run, ch)?;
    }
    if let Some(m) = run.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    let now = capsa_image::archive::import::rfc3339_now();
    icfg.config = Some(serde_json::from_value(run).map_err(|e| fail(format!("container config: {e}")))?);
    icfg.rootfs.diff_ids.push(diff_id.clone());
    icfg.created = Some(now.clone());
    if let Some(a) = &o.author {
        icfg.author = Some(a.clone());
    }
    let mut h = capsa_image::oci::History { created: Some(now.clone()), created_by: Some(c.argv().join(" ")), ..Default::default() };
    h.author = o.author.clone();
    h.comment = o.message.clone();
    icfg.history.get_or_insert_with(Vec::new).push(h);
    icfg.extra.insert("container".into(), json!(rec.id));
    let id = write_image(store, &icfg, layers, o.tag.iter().cloned().collect())?;
    drop(_guard);
    Ok(id)
}

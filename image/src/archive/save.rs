//! `save`: images out of the store as a tar, in docker's format (`manifest.json`, read by
//! every docker, podman and skopeo; also an OCI layout, as docker ≥ 25 writes it) or as an
//! OCI image layout. Written to a temporary file beside the target and renamed at the end:
//! a failure leaves no half-written archive.
//!
//! In docker format layers are plain tars named by their diffID (what `docker save`
//! writes and every loader accepts); compressed blobs are decompressed on the way out. In
//! OCI format the stored blobs are written as they are.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::digest::{Digest, HashReader};
use crate::error::{Error, Result};
use crate::oci::{self, Compression, Descriptor, Manifest};
use crate::reference::{familiar, split_tag};
use crate::store::{ImageInfo, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Docker,
    Oci,
}

/// One image to save and the full names (`docker.io/library/busybox:latest`) to record.
pub struct Item {
    pub image: ImageInfo,
    pub names: Vec<String>,
}

/// Where the files go: a tar stream, or a directory (an OCI layout on disk).
enum Sink<W: Write> {
    Tar(tar::Builder<W>),
    Dir(PathBuf),
}

struct Out<W: Write> {
    sink: Sink<W>,
    written: HashSet<String>,
}

impl<W: Write> Out<W> {
    /// Adds a file; `path` is always one of ours (`blobs/<algo>/<hex>` of a validated digest,
    /// `index.json`, ...), never a name from an image.
    fn add(&mut self, path: &str, size: u64, mut data: impl Read) -> Result<()> {
        if !self.written.insert(path.to_string()) {
            return Ok(());
        }
        match &mut self.sink {
            Sink::Tar(tar) => {
                let mut h = tar::Header::new_ustar();
                h.set_size(size);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mtime(0);
                tar.append_data(&mut h, path, data).map_err(|e| Error::new(format!("write {path}: {e}")))
            }
            Sink::Dir(dir) => {
                let p = dir.join(path);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::new(format!("create {}: {e}", parent.display())))?;
                }
                let mut f = File::create(&p).map_err(|e| Error::new(format!("create {}: {e}", p.display())))?;
                io::copy(&mut data, &mut f).map_err(|e| Error::new(format!("write {}: {e}", p.display())))?;
                Ok(())
            }
        }
    }

    fn add_bytes(&mut self, path: &str, b: &[u8]) -> Result<()> {
        self.add(path, b.len() as u64, b)
    }
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algo().name(), d.hex())
}

/// Writes the images as a tar to `w`.
pub fn save<W: Write>(store: &Store, items: &[Item], format: Format, w: W) -> Result<W> {
    let mut tar = tar::Builder::new(w);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut out = Out { sink: Sink::Tar(tar), written: HashSet::new() };
    write_images(store, items, format, &mut out)?;
    match out.sink {
        Sink::Tar(t) => t.into_inner().map_err(|e| Error::new(format!("finish the archive: {e}"))),
        Sink::Dir(_) => Err(Error::new("save: not a tar")),
    }
}

/// Writes the images as an OCI image layout directory `dir` (which must not exist yet):
/// made beside it under a temporary name and renamed when complete.
pub fn save_dir(store: &Store, items: &[Item], dir: &Path) -> Result<()> {
    if dir.exists() {
        return Err(Error::new(format!("{}: already exists", dir.display())));
    }
    let name = dir.file_name().ok_or_else(|| Error::new(format!("{}: not a directory name", dir.display())))?;
    let tmp = dir.with_file_name(format!(".{}.{}", name.to_string_lossy(), crate::content::random_suffix()));
    std::fs::create_dir(&tmp).map_err(|e| Error::new(format!("create {}: {e}", tmp.display())))?;
    let mut out: Out<io::Sink> = Out { sink: Sink::Dir(tmp.clone()), written: HashSet::new() };
    let res = write_images(store, items, Format::Oci, &mut out)
        .and_then(|_| std::fs::rename(&tmp, dir).map_err(|e| Error::new(format!("rename to {}: {e}", dir.display()))));
    if res.is_err() {
        let _ = crate::layer::remove_tree(&tmp);
    }
    res
}

fn write_images<W: Write>(store: &Store, items: &[Item], format: Format, out: &mut Out<W>) -> Result<()> {
    out.add_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut index = Vec::new();
    let mut docker = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for it in items {
        let img = &it.image;
        let (_, config) = store.config(img)?;
        out.add_bytes(&blob_path(&img.id), &config)?;
        let layers = store.layers(img)?;
        let out = &mut *out;
        let (manifest_desc, layer_paths) = match format {
            Format::Oci => {
                let (m, bytes) = store.manifest(img)?;
                for l in &m.layers {
                    let f = store.content.open_blob(&l.digest)?;
                    out.add(&blob_path(&l.digest), l.size, f)?;
                }
                out.add_bytes(&blob_path(&img.manifest), &bytes)?;
                (
                    Descriptor::new(m.media_type.as_deref().unwrap_or(oci::OCI_MANIFEST), img.manifest.clone(), bytes.len() as u64),
                    Vec::new(),
                )
            }
            Format::Docker => {
                let mut descs = Vec::new();
                let mut paths = Vec::new();
                for l in &layers {
                    let size = add_plain_layer(store, out, l)?;
                    descs.push(Descriptor::new(oci::OCI_LAYER, l.diff_id.clone(), size));
                    paths.push(blob_path(&l.diff_id));
                }
                let m = Manifest {
                    schema_version: 2,
                    media_type: Some(oci::OCI_MANIFEST.into()),
                    config: Descriptor::new(oci::OCI_CONFIG, img.id.clone(), config.len() as u64),
                    layers: descs,
                    annotations: None,
                };
                let bytes = serde_json::to_vec(&m).map_err(|e| Error::new(format!("encode manifest: {e}")))?;
                let d = Digest::of(&bytes);
                out.add_bytes(&blob_path(&d), &bytes)?;
                (Descriptor::new(oci::OCI_MANIFEST, d, bytes.len() as u64), paths)
            }
        };
        let names: Vec<Option<&String>> = if it.names.is_empty() { vec![None] } else { it.names.iter().map(Some).collect() };
        for n in names {
            let mut d = manifest_desc.clone();
            if let Some(n) = n {
                let (repo, tag) = split_tag(n);
                let mut ann = BTreeMap::new();
                ann.insert("io.containerd.image.name".to_string(), n.clone());
                ann.insert("org.opencontainers.image.ref.name".to_string(), tag.to_string());
                d.annotations = Some(ann);
                if let Some(top) = layers.last() {
                    repositories.entry(familiar(repo).to_string()).or_default().insert(tag.to_string(), top.diff_id.hex().to_string());
                }
            }
            index.push(d);
        }
        if format == Format::Docker {
            let tags: Vec<String> = it.names.iter().map(|n| split_tag(n)).map(|(r, t)| format!("{}:{t}", familiar(r))).collect();
            docker.push(json!({"Config": blob_path(&img.id), "RepoTags": if tags.is_empty() { serde_json::Value::Null } else { json!(tags) }, "Layers": layer_paths}));
        }
    }
    let idx = json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": index});
    out.add_bytes("index.json", &serde_json::to_vec(&idx).unwrap_or_default())?;
    if format == Format::Docker {
        out.add_bytes("manifest.json", &serde_json::to_vec(&docker).unwrap_or_default())?;
        if !repositories.is_empty() {
            out.add_bytes("repositories", &serde_json::to_vec(&repositories).unwrap_or_default())?;
        }
    }
    Ok(())
}

/// Writes a layer as a plain tar named by its diffID; returns its size.
fn add_plain_layer<W: Write>(store: &Store, out: &mut Out<W>, l: &crate::store::NewLayer) -> Result<u64> {
    let f = store.content.open_blob(&l.blob)?;
    let mut head = [0u8; 4];
    let n = std::os::unix::fs::FileExt::read_at(&f, &mut head, 0).map_err(|e| Error::new(format!("layer {}: {e}", l.blob)))?;
    let comp = Compression::sniff(&head[..n]);
    if comp == Compression::None {
        let size = f.metadata().map_err(|e| Error::new(format!("layer {}: {e}", l.blob)))?.len();
        out.add(&blob_path(&l.diff_id), size, f)?;
        return Ok(size);
    }
    // The tar header needs the size first: decompress into a scratch file, checking the
    // diffID on the way.
    let tmp = store.tmp_dir().join(format!("save-{}", crate::content::random_suffix()));
    let res = (|| {
        let mut scratch = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::new(format!("{}: {e}", tmp.display())))?;
        let dec: Box<dyn Read> = match comp {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(f))),
            _ => Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| Error::new(format!("zstd: {e}")))?),
        };
        let mut hr = HashReader::new(dec, crate::digest::Algo::Sha256);
        io::copy(&mut hr, &mut scratch).map_err(|e| Error::new(format!("layer {}: decompress: {e}", l.blob)))?;
        let (d, size) = hr.finish().map_err(|e| Error::new(format!("layer {}: {e}", l.blob)))?;
        if d != l.diff_id {
            return Err(Error::new(format!("layer {}: uncompressed content is {d}, expected diffID {}", l.blob, l.diff_id)));
        }
        let scratch = File::open(&tmp).map_err(|e| Error::new(format!("{}: {e}", tmp.display())))?;
        out.add(&blob_path(&l.diff_id), size, scratch)?;
        Ok(size)
    })();
    let _ = std::fs::remove_file(&tmp);
    res
}

//! `load`: images from a docker-archive (`docker save`: manifest.json) or an OCI image
//! layout (index.json), as a tar or a directory, into the store.
//!
//! One pass plans every image (documents parsed and checked, platforms picked), then a
//! pool of threads (one per core) stores each layer blob (hashed as it is copied, named
//! only when its digest matches) and unpacks it into its snapshot, several layers at a
//! time. The threads are joined before `load` returns. Then one transaction records
//! the images. Anything that fails leaves nothing referenced: the blobs and snapshots
//! already made are kept only if complete and verified, and `gc` reclaims them.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Read;

use serde::Deserialize;

use super::source::Source;
use crate::content::Content;
use crate::digest::{Algo, Digest};
use crate::error::{Error, Result};
use crate::layer::Limits;
use crate::oci::{self, Compression, Descriptor, Doc, ImageConfig, Manifest, Platform, MAX_DOC};
use crate::reference::Reference;
use crate::snapshot::Snapshots;
use crate::store::{NewImage, NewLayer, Store};

/// Reports progress of long work (load, unpack) to a caller that may draw it.
pub trait Progress: Sync {
    fn start(&self, _total: u64) {}
    fn advance(&self, _bytes: u64) {}
}

/// No progress display.
pub struct Quiet;
impl Progress for Quiet {}

pub struct LoadOpts<'a> {
    /// Which manifest of a multi-platform index to take (default: this host's).
    pub platform: Option<Platform>,
    pub limits: Limits,
    pub progress: &'a dyn Progress,
}

/// An image that was loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub id: Digest,
    /// Full names given to it (`docker.io/library/busybox:latest`).
    pub tags: Vec<String>,
}

/// One layer to bring in: where its blob is in the source, what it must be.
#[derive(Debug, Clone)]
struct LayerPlan {
    path: String,
    /// The blob's digest when the source names it (OCI descriptors, blobs/ paths).
    blob: Option<Digest>,
    size: Option<u64>,
    media_type: Option<String>,
    diff_id: Digest,
    chain: Digest,
}

struct ImagePlan {
    config: Vec<u8>,
    config_digest: Digest,
    parsed: ImageConfig,
    manifest: Option<(Vec<u8>, Digest)>,
    index: Option<(Vec<u8>, Digest)>,
    layers: Vec<LayerPlan>,
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// `blobs/sha256/HEX` → that digest (validated).
fn digest_of_path(p: &str) -> Option<Digest> {
    let rest = p.strip_prefix("blobs/")?;
    let (algo, hex) = rest.split_once('/')?;
    Digest::parse(&format!("{algo}:{hex}")).ok()
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algo().name(), d.hex())
}

pub fn load(store: &mut Store, src: &Source, opts: &LoadOpts) -> Result<Vec<Loaded>> {
    let what = src.describe();
    let plans = if src.has("manifest.json") {
        plan_docker(src)?
    } else if src.has("index.json") {
        plan_oci(src, opts.platform.as_ref().unwrap_or(&Platform::host()))?
    } else {
        return Err(Error::new(format!("{what}: neither a docker-archive (no manifest.json) nor an OCI image layout (no index.json)")));
    };
    if plans.is_empty() {
        return Err(Error::new(format!("{what}: no images in it")));
    }
    let _lock = store.lock_shared()?;
    let results = bring_layers(store, src, &plans, opts)?;
    let mut out = Vec::new();
    for p in plans {
        out.push(record(store, p, &results)?);
    }
    Ok(out)
}

fn plan_docker(src: &Source) -> Result<Vec<ImagePlan>> {
    let bytes = src.read("manifest.json", MAX_DOC)?;
    let entries: Vec<DockerEntry> = serde_json::from_slice(&bytes).map_err(|e| Error::new(format!("manifest.json: {e}")))?;
    let mut plans = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let what = format!("manifest.json[{i}]");
        let config = src.read(&e.config, MAX_DOC).map_err(|x| x.context(format!("{what}: Config")))?;
        let config_digest = Digest::of(&config);
        if let Some(named) = digest_of_path(&e.config) {
            if named != config_digest && named.algo() == Algo::Sha256 {
                return Err(Error::new(format!("{what}: Config {:?}: content is {config_digest} (digest mismatch)", e.config)));
            }
        }
        let parsed = ImageConfig::parse(&config, &format!("{what}: config {}", e.config))?;
        if parsed.rootfs.diff_ids.len() != e.layers.len() {
            return Err(Error::new(format!(
                "{what}: {} layers but the config lists {} diff_ids",
                e.layers.len(),
                parsed.rootfs.diff_ids.len()
            )));
        }
        let layers = chain_plan(&parsed, e.layers.iter().map(|l| (l.clone(), digest_of_path(l), None, None)).collect());
        let mut tags = Vec::new();
        for t in e.repo_tags.iter().flatten() {
            let r = Reference::parse(t).map_err(|x| x.context(format!("{what}: RepoTags")))?;
            tags.push(r.full());
        }
        plans.push(ImagePlan { config, config_digest, parsed, manifest: None, index: None, layers, tags });
    }
    Ok(plans)
}

/// A layer as the source lists it: path, blob digest, size and media type when known.
type SourceLayer = (String, Option<Digest>, Option<u64>, Option<String>);

fn chain_plan(config: &ImageConfig, layers: Vec<SourceLayer>) -> Vec<LayerPlan> {
    let mut parent: Option<Digest> = None;
    layers
        .into_iter()
        .zip(config.rootfs.diff_ids.iter())
        .map(|((path, blob, size, media_type), diff)| {
            let chain = Digest::chain(parent.as_ref(), diff);
            parent = Some(chain.clone());
            LayerPlan { path, blob, size, media_type, diff_id: diff.clone(), chain }
        })
        .collect()
}

fn plan_oci(src: &Source, platform: &Platform) -> Result<Vec<ImagePlan>> {
    let bytes = src.read("index.json", MAX_DOC)?;
    let Doc::Index(index) = oci::parse_doc(&bytes, Some(oci::OCI_INDEX), "index.json")? else {
        return Err(Error::new("index.json: not an index"));
    };
    let mut plans = Vec::new();
    for (i, d) in index.manifests.iter().enumerate() {
        let what = format!("index.json manifests[{i}] ({})", d.digest);
        let mut tags = Vec::new();
        let ann = d.annotations.clone().unwrap_or_default();
        // io.containerd.image.name is a full name; ref.name may be only a tag ("latest"),
        // which names no repository: such an image loads untagged, as with docker.
        let name = ann
            .get("io.containerd.image.name")
            .or_else(|| ann.get("org.opencontainers.image.ref.name").filter(|n| n.contains(':') || n.contains('/')));
        if let Some(r) = name.and_then(|n| Reference::parse(n).ok()) {
            if r.tag.is_some() {
                tags.push(r.full());
            }
        }
        let (manifest, mdesc, idx) = pick_manifest(src, d, platform, &what)?;
        plans.push(plan_manifest(src, manifest, mdesc, idx, tags, &what)?);
    }
    Ok(plans)
}

type Picked = (Manifest, (Vec<u8>, Digest), Option<(Vec<u8>, Digest)>);

/// Follows a descriptor through at most one level of index to a manifest for `platform`.
fn pick_manifest(src: &Source, d: &Descriptor, platform: &Platform, what: &str) -> Result<Picked> {
    let bytes = read_blob(src, d, what)?;
    match oci::parse_doc(&bytes, Some(&d.media_type), what)? {
        Doc::Manifest(m) => Ok((*m, (bytes, d.digest.clone()), None)),
        Doc::Index(idx) => {
            let mut seen = Vec::new();
            for (j, m) in idx.manifests.iter().enumerate() {
                let p = m.platform.clone().unwrap_or_default();
                seen.push(p.to_string());
                // Attestation manifests (unknown/unknown) are not images.
                if oci::is_manifest_type(&m.media_type) && platform.matches(&p) {
                    let w = format!("{what} manifests[{j}]");
                    let mb = read_blob(src, m, &w)?;
                    let Doc::Manifest(man) = oci::parse_doc(&mb, Some(&m.media_type), &w)? else {
                        return Err(Error::new(format!("{w}: not a manifest")));
                    };
                    return Ok((*man, (mb, m.digest.clone()), Some((bytes, d.digest.clone()))));
                }
            }
            Err(Error::new(format!("{what}: no manifest for platform {platform} (it has {})", seen.join(", "))))
        }
    }
}

fn read_blob(src: &Source, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
    if d.size > MAX_DOC {
        return Err(Error::new(format!("{what}: {} bytes is more than the {MAX_DOC} allowed for a document", d.size)));
    }
    let bytes = src.read(&blob_path(&d.digest), MAX_DOC).map_err(|e| e.context(what))?;
    let got = match d.digest.algo() {
        Algo::Sha256 => Digest::of(&bytes),
        Algo::Sha512 => {
            let mut h = crate::digest::Hasher::new(Algo::Sha512);
            h.update(&bytes);
            h.finish()
        }
    };
    if got != d.digest || bytes.len() as u64 != d.size {
        return Err(Error::new(format!(
            "{what}: content is {got} ({} bytes), descriptor says {} ({} bytes): digest mismatch",
            bytes.len(),
            d.digest,
            d.size
        )));
    }
    Ok(bytes)
}

fn plan_manifest(
    src: &Source,
    m: Manifest,
    mdesc: (Vec<u8>, Digest),
    idx: Option<(Vec<u8>, Digest)>,
    tags: Vec<String>,
    what: &str,
) -> Result<ImagePlan> {
    let config = read_blob(src, &m.config, &format!("{what} config"))?;
    let parsed = ImageConfig::parse(&config, &format!("{what} config"))?;
    if parsed.rootfs.diff_ids.len() != m.layers.len() {
        return Err(Error::new(format!(
            "{what}: {} layers but the config lists {} diff_ids",
            m.layers.len(),
            parsed.rootfs.diff_ids.len()
        )));
    }
    let layers = chain_plan(
        &parsed,
        m.layers.iter().map(|l| (blob_path(&l.digest), Some(l.digest.clone()), Some(l.size), Some(l.media_type.clone()))).collect(),
    );
    Ok(ImagePlan { config, config_digest: m.config.digest.clone(), parsed, manifest: Some(mdesc), index: idx, layers, tags })
}

/// What became of one layer: its blob, how it is compressed, its unpacked size.
#[derive(Debug, Clone)]
struct LayerDone {
    blob: Digest,
    media_type: String,
    size: u64,
}

/// Stores and unpacks every layer of every plan, on a pool of threads.
fn bring_layers(store: &Store, src: &Source, plans: &[ImagePlan], opts: &LoadOpts) -> Result<BTreeMap<Digest, LayerDone>> {
    // Layers already in the database (the connection stays on this thread).
    let mut known: BTreeMap<Digest, u64> = BTreeMap::new();
    for p in plans {
        for l in &p.layers {
            use rusqlite::OptionalExtension;
            let size: Option<i64> =
                store.db.conn().query_row("SELECT size FROM layers WHERE chain_id = ?1", [l.chain.to_string()], |r| r.get(0)).optional()?;
            if let Some(s) = size {
                known.insert(l.chain.clone(), s as u64);
            }
        }
    }
    let (content, snapshots) = (&store.content, &store.snapshots);
    let mut jobs: VecDeque<LayerPlan> = VecDeque::new();
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for p in plans {
        for l in &p.layers {
            if seen.insert(l.chain.clone()) {
                total += l.size.or_else(|| src.size(&l.path)).unwrap_or(0);
                jobs.push_back(l.clone());
            }
        }
    }
    opts.progress.start(total);
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
    crate::workers::run(
        jobs,
        workers,
        "load",
        |job| job.chain.clone(),
        |job| bring_one(content, snapshots, known.get(&job.chain).copied(), src, job, opts),
    )
}

fn bring_one(
    content: &Content,
    snapshots: &Snapshots,
    known: Option<u64>,
    src: &Source,
    job: &LayerPlan,
    opts: &LoadOpts,
) -> Result<LayerDone> {
    let name = &job.path;
    // 1. The blob, verified against the name the source gives it (if any).
    let blob = match &job.blob {
        Some(d) if content.has(d) => {
            opts.progress.advance(job.size.unwrap_or(0));
            d.clone()
        }
        known => {
            let (mut r, size) = src.open(name)?;
            if let (Some(want), Some(d)) = (job.size, known) {
                if want != size {
                    return Err(Error::new(format!("layer {d}: {size} bytes in the archive, descriptor says {want}")));
                }
            }
            let algo = known.as_ref().map(|d| d.algo()).unwrap_or(Algo::Sha256);
            let mut w = content.writer(algo)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = r.read(&mut buf).map_err(|e| Error::new(format!("layer {name}: read: {e}")))?;
                if n == 0 {
                    break;
                }
                std::io::Write::write_all(&mut w, &buf[..n]).map_err(|e| Error::new(format!("layer {name}: store: {e}")))?;
                opts.progress.advance(n as u64);
            }
            w.commit(known.as_ref(), Some(size)).map_err(|e| e.context(format!("layer {name}")))?
        }
    };
    // 2. How it is compressed: the descriptor's media type, else its first bytes.
    let file = content.open_blob(&blob)?;
    let comp = match &job.media_type {
        Some(mt) => Compression::of_media_type(mt).ok_or_else(|| Error::new(format!("layer {blob}: media type {mt:?} is not a layer")))?,
        None => {
            let mut head = [0u8; 4];
            let n = std::os::unix::fs::FileExt::read_at(&file, &mut head, 0).map_err(|e| Error::new(format!("layer {blob}: {e}")))?;
            Compression::sniff(&head[..n])
        }
    };
    if comp == Compression::None && blob != job.diff_id {
        return Err(Error::new(format!(
            "layer {name}: uncompressed content is {blob}, but the image config says diff_id {} (digest mismatch)",
            job.diff_id
        )));
    }
    let media_type = job.media_type.clone().unwrap_or_else(|| comp.oci_media_type().to_string());
    // 3. The snapshot, unless this layer (same chain) is already unpacked.
    let size = match known {
        Some(s) if snapshots.exists(&job.chain) => s,
        _ => snapshots.unpack(&file, &blob, comp, &job.chain, Some(&job.diff_id), &opts.limits)?.size,
    };
    Ok(LayerDone { blob, media_type, size })
}

fn record(store: &mut Store, p: ImagePlan, done: &BTreeMap<Digest, LayerDone>) -> Result<Loaded> {
    let mut layers = Vec::new();
    let mut blobs: Vec<(Digest, &'static str)> = Vec::new();
    for l in &p.layers {
        let d = done.get(&l.chain).ok_or_else(|| Error::new(format!("layer {} was not brought in", l.chain)))?;
        layers.push(NewLayer {
            chain: l.chain.clone(),
            diff_id: l.diff_id.clone(),
            blob: d.blob.clone(),
            media_type: d.media_type.clone(),
            size: d.size,
        });
        blobs.push((d.blob.clone(), "layer"));
    }
    store.content.put(&p.config, Some(&p.config_digest))?;
    blobs.push((p.config_digest.clone(), "config"));
    // A docker-archive has no manifest: make the OCI one that describes what we stored.
    // The digest a registry would know the image by: the index's, else the manifest's as
    // the source gave it (a docker-archive has none, as with `docker load`).
    let mut repo_digest = p.manifest.as_ref().map(|(_, d)| d.clone());
    let (mbytes, mdigest) = match p.manifest {
        Some(m) => m,
        None => {
            let m = Manifest {
                schema_version: 2,
                media_type: Some(oci::OCI_MANIFEST.to_string()),
                config: Descriptor::new(oci::OCI_CONFIG, p.config_digest.clone(), p.config.len() as u64),
                layers: layers
                    .iter()
                    .map(|l| Ok(Descriptor::new(&l.media_type, l.blob.clone(), store.content.size(&l.blob)?)))
                    .collect::<Result<_>>()?,
                annotations: None,
            };
            let b = serde_json::to_vec(&m).map_err(|e| Error::new(format!("encode manifest: {e}")))?;
            let d = Digest::of(&b);
            (b, d)
        }
    };
    store.content.put(&mbytes, Some(&mdigest))?;
    blobs.push((mdigest.clone(), "manifest"));
    if let Some((b, d)) = &p.index {
        store.content.put(b, Some(d))?;
        blobs.push((d.clone(), "index"));
        repo_digest = Some(d.clone());
    }
    let img = NewImage {
        id: p.config_digest.clone(),
        manifest: mdigest,
        repo_digest,
        layers,
        created: p.parsed.created.clone(),
        blobs,
        tags: p.tags.clone(),
    };
    store.register(&img)?;
    Ok(Loaded { id: p.config_digest, tags: p.tags })
}

//! `pull`: an image from a registry into the store, ready to run.
//!
//! 1. The manifest by tag or digest, asking for every type we read (OCI and Docker v2
//!    schema 2 manifests and indexes; schema 1 only so that it can be refused by name).
//!    At most 4 MiB; the Content-Type and the document's `mediaType` must agree; by digest
//!    (or with a `Docker-Content-Digest`), the bytes must hash to it.
//! 2. From an index, the manifest for the platform (os, architecture, variant), fetched by
//!    digest and checked against its descriptor (digest, size, media type).
//! 3. The config (verified like a manifest), then the layers on a pool of
//!    [`Settings::max_downloads`] threads, each taking a layer, streaming its blob into the
//!    content store (hashed as the bytes arrive; named only when digest and size match,
//!    so a bad blob is never committed), then unpacking it while the others still
//!    download. A layer already unpacked is skipped, a blob already stored is not fetched.
//!    A download cut short resumes from where it stopped with `Range` (a 200 answer to a
//!    Range request starts again from zero). The threads are joined before [`pull`]
//!    returns, so the caller may fork afterwards (DESIGN principle 1).
//! 4. One transaction records the image, its layers and its name.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{Read, Write};

use capsa_image::content::Content;
use capsa_image::digest::{Algo, Hasher};
use capsa_image::layer::Limits;
use capsa_image::oci::{self, Compression, Descriptor, Doc, ImageConfig, Manifest, Platform, MAX_DOC};
use capsa_image::reference::{familiar, Reference};
use capsa_image::snapshot::Snapshots;
use capsa_image::store::{NewImage, NewLayer, Store};
use capsa_image::{Digest, Error, Result};

use crate::auth::{server_key, DockerConfig};
use crate::client::{read_limited, status_error, Body, Client};
use crate::progress::{Progress, Status};
use crate::settings::{split_repo, Settings};

pub struct PullOpts<'a> {
    pub settings: &'a Settings,
    /// Which manifest of an index to take (default: this host's platform).
    pub platform: Option<Platform>,
    pub limits: Limits,
    pub progress: &'a dyn Progress,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub id: Digest,
    /// The normalised name (`docker.io/library/busybox:latest`, or `...@sha256:...`).
    pub name: String,
    /// The digest the registry knows the image by (the index's, if it was one).
    pub digest: Digest,
    /// false: the name already pointed at this image ("Image is up to date").
    pub updated: bool,
    /// Things to tell the user (a platform that differs from the one asked for).
    pub warnings: Vec<String>,
    /// Layers (bottom first) and what became of each.
    pub layers: Vec<(Digest, Status)>,
}

/// Every manifest type we read, for `Accept`. Schema 1 is listed so that a registry
/// holding only that answers with it and we can say why it is refused.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.1, application/vnd.docker.distribution.manifest.v1+json;q=0.1";

pub fn pull(store: &mut Store, name: &str, opts: &PullOpts) -> Result<Pulled> {
    let res = pull_any(store, name, opts);
    if res.is_err() {
        // A failed pull leaves nothing behind: the blobs it committed and the snapshots it
        // unpacked before the failure belong to no image. Garbage collection removes them
        // under the store's exclusive lock, so no other process's pull or load (which hold
        // the shared lock until their image is recorded) loses anything it is adding.
        let _ = store.gc();
    }
    res
}

fn pull_any(store: &mut Store, name: &str, opts: &PullOpts) -> Result<Pulled> {
    let r = Reference::parse(name)?;
    let (domain, path) = split_repo(&r.repo);
    let endpoints = opts.settings.pull_endpoints(domain)?;
    let config = DockerConfig::load(&opts.settings.docker_config)?;
    let mut errors: Vec<String> = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let key = if ep.mirror { ep.host.clone() } else { server_key(domain) };
        let attempt = config
            .get(&key)
            .and_then(|creds| Client::connect(opts.settings, ep, vec![format!("repository:{path}:pull")], creds))
            .and_then(|c| pull_from(store, &c, &r, path, opts));
        match attempt {
            Ok(p) => return Ok(p),
            // A mirror that fails (down, or without the image) passes to the next one.
            Err(e) if ep.mirror && i + 1 < endpoints.len() => errors.push(format!("mirror {}: {e}", ep.host)),
            Err(e) if errors.is_empty() => return Err(e),
            Err(e) => {
                errors.push(e.to_string());
                return Err(Error::new(errors.join("; ")));
            }
        }
    }
    Err(Error::new(format!("{name}: no registry to pull from")))
}

/// A layer to bring in.
#[derive(Debug, Clone)]
struct Job {
    desc: Descriptor,
    diff_id: Digest,
    chain: Digest,
    /// Its unpacked size, when the store already has the layer.
    known: Option<u64>,
}

struct Done {
    size: u64,
    status: Status,
}

fn pull_from(store: &mut Store, c: &Client, r: &Reference, path: &str, opts: &PullOpts) -> Result<Pulled> {
    let shown = familiar(&r.repo).to_string();
    let reference = match (&r.digest, &r.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_string(),
    };
    let what = format!("{shown}:{reference}");
    let (bytes, mt, top) = fetch_manifest(c, path, &reference, r.digest.as_ref(), None, &what)?;
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let mut warnings = Vec::new();
    let (manifest, mbytes, mdigest, index) = match oci::parse_doc(&bytes, mt.as_deref(), &format!("manifest of {what}"))? {
        Doc::Manifest(m) => (*m, bytes, top.clone(), None),
        Doc::Index(idx) => {
            let mut seen = Vec::new();
            let mut picked = None;
            for m in &idx.manifests {
                let p = m.platform.clone().unwrap_or_default();
                // Attestations (unknown/unknown) and nested indexes are not images.
                if oci::is_manifest_type(&m.media_type) && !p.os.is_empty() && p.os != "unknown" {
                    seen.push(p.to_string());
                    if picked.is_none() && platform.matches(&p) {
                        picked = Some(m.clone());
                    }
                }
            }
            let Some(m) = picked else {
                return Err(Error::new(format!(
                    "{what}: no matching manifest for {platform} in the manifest list entries (it has {})",
                    if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
                )));
            };
            let w = format!("{what}: manifest for {platform}");
            let (b, t, d) = fetch_manifest(c, path, &m.digest.to_string(), Some(&m.digest), Some(&m), &w)?;
            let Doc::Manifest(man) = oci::parse_doc(&b, t.as_deref().or(Some(&m.media_type)), &w)? else {
                return Err(Error::new(format!("{w}: an index where a manifest was expected")));
            };
            (*man, b, d, Some((bytes, top.clone())))
        }
    };
    let config = fetch_document_blob(c, path, &manifest.config, &format!("{what}: config"))?;
    let parsed = ImageConfig::parse(&config, &format!("{what}: config {}", manifest.config.digest))?;
    if parsed.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::new(format!(
            "{what}: the manifest has {} layers but the config lists {} diff_ids",
            manifest.layers.len(),
            parsed.rootfs.diff_ids.len()
        )));
    }
    if !platform.matches(&parsed.platform()) {
        warnings.push(format!("The requested image's platform ({}) does not match the wanted platform ({platform})", parsed.platform()));
    }
    let _lock = store.lock_shared()?;
    let jobs = plan(store, &manifest, &parsed)?;
    let done = bring_layers(store, c, path, &jobs, opts)?;
    // Record: config, manifest, index, then one transaction.
    store.content.put(&config, Some(&manifest.config.digest))?;
    store.content.put(&mbytes, Some(&mdigest))?;
    let mut blobs: Vec<(Digest, &'static str)> = Vec::new();
    let mut layers = Vec::new();
    let mut statuses = Vec::new();
    for j in &jobs {
        let d = done.get(&j.chain).ok_or_else(|| Error::new(format!("layer {} was not brought in", j.desc.digest)))?;
        layers.push(NewLayer {
            chain: j.chain.clone(),
            diff_id: j.diff_id.clone(),
            blob: j.desc.digest.clone(),
            media_type: j.desc.media_type.clone(),
            size: d.size,
        });
        blobs.push((j.desc.digest.clone(), "layer"));
        statuses.push((j.desc.digest.clone(), d.status));
    }
    blobs.push((manifest.config.digest.clone(), "config"));
    blobs.push((mdigest.clone(), "manifest"));
    if let Some((b, d)) = &index {
        store.content.put(b, Some(d))?;
        blobs.push((d.clone(), "index"));
    }
    let name = r.full();
    let tags = if r.digest.is_none() { vec![name.clone()] } else { Vec::new() };
    let before = store.resolve(&name).ok().map(|i| i.id);
    let id = manifest.config.digest.clone();
    store.register(&NewImage {
        id: id.clone(),
        manifest: mdigest,
        repo_digest: Some(top.clone()),
        layers,
        created: parsed.created.clone(),
        blobs,
        tags,
    })?;
    Ok(Pulled { updated: before.as_ref() != Some(&id), id, name, digest: top, warnings, layers: statuses })
}

/// GETs a manifest or index and checks it (size, digest, Content-Type vs mediaType).
/// Returns the bytes, the media type to read it as, and its digest.
fn fetch_manifest(
    c: &Client,
    path: &str,
    reference: &str,
    want: Option<&Digest>,
    desc: Option<&Descriptor>,
    what: &str,
) -> Result<(Vec<u8>, Option<String>, Digest)> {
    if let Some(d) = desc {
        if d.size > MAX_DOC {
            return Err(Error::new(format!("{what}: {} bytes is more than the {MAX_DOC} allowed for a manifest", d.size)));
        }
    }
    let url = format!("/v2/{path}/manifests/{reference}");
    let resp = c.send("GET", &url, &[("Accept", ACCEPT)], &Body::Empty)?;
    match resp.status() {
        200 => {}
        404 => {
            crate::client::drain(resp);
            return Err(Error::not_found(format!("manifest for {what} not found: manifest unknown")));
        }
        _ => return Err(status_error("GET", &c.url(&url), resp)),
    }
    let ct = resp.header("content-type").map(|v| v.split(';').next().unwrap_or("").trim().to_string()).unwrap_or_default();
    let header_digest = resp.header("docker-content-digest").map(str::to_string);
    let bytes = read_limited(resp, MAX_DOC, &format!("{what}: manifest"))?;
    let digest = match want {
        Some(w) => {
            let got = hash(&bytes, w.algo());
            if got != *w {
                return Err(Error::new(format!("{what}: manifest content is {got}, not the {w} asked for (digest mismatch)")));
            }
            got
        }
        None => {
            let got = Digest::of(&bytes);
            if let Some(h) = header_digest.as_deref().and_then(|h| Digest::parse(h).ok()) {
                if hash(&bytes, h.algo()) != h {
                    return Err(Error::new(format!(
                        "{what}: the registry says the manifest is {h}, its content is {got} (digest mismatch)"
                    )));
                }
            }
            got
        }
    };
    if let Some(d) = desc {
        if bytes.len() as u64 != d.size {
            return Err(Error::new(format!("{what}: manifest is {} bytes, its descriptor says {}", bytes.len(), d.size)));
        }
    }
    // The Content-Type and the document must say the same (a document that is read as
    // one thing and was served as another is refused).
    let own = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string));
    let typed = oci::is_index_type(&ct) || oci::is_manifest_type(&ct) || ct == oci::DOCKER_SCHEMA1 || ct == oci::DOCKER_SCHEMA1_SIGNED;
    if ct == oci::DOCKER_SCHEMA1 || ct == oci::DOCKER_SCHEMA1_SIGNED {
        return Err(Error::new(format!(
            "{what}: Docker schema 1 manifests are not supported (deprecated; re-push the image with a current client)"
        )));
    }
    let mt = match (own, typed) {
        (Some(o), true) if o != ct => {
            return Err(Error::new(format!("{what}: served as {ct:?} but its mediaType is {o:?} (refused)")));
        }
        (Some(o), _) => Some(o),
        (None, true) => Some(ct.clone()),
        (None, false) => None,
    };
    if let (Some(d), Some(m)) = (desc, &mt) {
        if *m != d.media_type {
            return Err(Error::new(format!("{what}: is a {m:?}, its descriptor says {:?} (refused)", d.media_type)));
        }
    }
    Ok((bytes, mt, digest))
}

fn hash(bytes: &[u8], algo: Algo) -> Digest {
    let mut h = Hasher::new(algo);
    h.update(bytes);
    h.finish()
}

/// A small blob (the config) read whole and checked against its descriptor.
fn fetch_document_blob(c: &Client, path: &str, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
    if d.size > MAX_DOC {
        return Err(Error::new(format!("{what}: {} bytes is more than the {MAX_DOC} allowed", d.size)));
    }
    let url = format!("/v2/{path}/blobs/{}", d.digest);
    let resp = c.send("GET", &url, &[], &Body::Empty)?;
    if resp.status() != 200 {
        return Err(status_error("GET", &c.url(&url), resp).context(what));
    }
    let bytes = read_limited(resp, MAX_DOC, what)?;
    let got = hash(&bytes, d.digest.algo());
    if got != d.digest || bytes.len() as u64 != d.size {
        return Err(Error::new(format!(
            "{what}: content is {got} ({} bytes), the manifest says {} ({} bytes): digest mismatch",
            bytes.len(),
            d.digest,
            d.size
        )));
    }
    Ok(bytes)
}

/// The layers with their chainIDs, and which the store already has.
fn plan(store: &Store, m: &Manifest, cfg: &ImageConfig) -> Result<Vec<Job>> {
    let mut parent: Option<Digest> = None;
    let mut jobs = Vec::new();
    for (desc, diff) in m.layers.iter().zip(cfg.rootfs.diff_ids.iter()) {
        let chain = Digest::chain(parent.as_ref(), diff);
        parent = Some(chain.clone());
        let known = store.layer_size(&chain)?;
        jobs.push(Job { desc: desc.clone(), diff_id: diff.clone(), chain, known });
    }
    Ok(jobs)
}

fn bring_layers(store: &Store, c: &Client, path: &str, jobs: &[Job], opts: &PullOpts) -> Result<BTreeMap<Digest, Done>> {
    let (content, snapshots) = (&store.content, &store.snapshots);
    let mut queue = VecDeque::new();
    let mut seen = HashSet::new();
    for j in jobs {
        if seen.insert(j.chain.clone()) {
            opts.progress.update(&j.desc.digest, Status::Waiting, 0, j.desc.size);
            queue.push_back(j.clone());
        }
    }
    let workers = opts.settings.max_downloads.clamp(1, 64).min(queue.len().max(1));
    capsa_image::workers::run(queue, workers, "pull", |job| job.chain.clone(), |job| bring_one(c, path, content, snapshots, job, opts))
}

fn bring_one(c: &Client, path: &str, content: &Content, snapshots: &Snapshots, job: &Job, opts: &PullOpts) -> Result<Done> {
    let d = &job.desc;
    let what = format!("layer {}", d.digest);
    if let Some(size) = job.known {
        if snapshots.exists(&job.chain) {
            opts.progress.update(&d.digest, Status::AlreadyExists, d.size, d.size);
            return Ok(Done { size, status: Status::AlreadyExists });
        }
    }
    let comp = Compression::of_media_type(&d.media_type)
        .ok_or_else(|| Error::new(format!("{what}: media type {:?} is not a layer", d.media_type)))?;
    if comp == Compression::None && d.digest != job.diff_id {
        return Err(Error::new(format!(
            "{what}: an uncompressed layer whose digest is not the config's diff_id {} (digest mismatch)",
            job.diff_id
        )));
    }
    if content.has(&d.digest) {
        let have = content.size(&d.digest)?;
        if have != d.size {
            return Err(Error::new(format!("{what}: the stored blob is {have} bytes, the manifest says {}", d.size)));
        }
    } else {
        download(c, path, content, d, opts.progress).map_err(|e| e.context(&what))?;
    }
    opts.progress.update(&d.digest, Status::Extracting, d.size, d.size);
    let file = content.open_blob(&d.digest)?;
    let u = snapshots.unpack(&file, &d.digest, comp, &job.chain, Some(&job.diff_id), &opts.limits)?;
    opts.progress.update(&d.digest, Status::PullComplete, d.size, d.size);
    Ok(Done { size: u.size, status: Status::PullComplete })
}

/// Cuts (errors, early ends) survived while making progress; without progress, fewer.
const MAX_CUTS: u32 = 20;
const MAX_CUTS_WITHOUT_PROGRESS: u32 = 4;

/// Streams blob `d` into the content store, resuming after cuts; commits it only if its
/// size and digest match.
fn download(c: &Client, path: &str, content: &Content, d: &Descriptor, progress: &dyn Progress) -> Result<()> {
    let url = format!("/v2/{path}/blobs/{}", d.digest);
    let mut w = content.writer(d.digest.algo())?;
    let mut cuts = 0;
    let mut idle_cuts = 0;
    let mut buf = vec![0u8; 256 << 10];
    progress.update(&d.digest, Status::Downloading, 0, d.size);
    loop {
        let from = w.size();
        let range = format!("bytes={from}-");
        let headers: Vec<(&str, &str)> = if from > 0 { vec![("Range", range.as_str())] } else { Vec::new() };
        let resp = c.send("GET", &url, &headers, &Body::Empty)?;
        match resp.status() {
            206 if from > 0 => {
                let start = resp
                    .header("content-range")
                    .and_then(|v| v.trim().strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(from) {
                    // Not the part asked for: start again from zero.
                    crate::client::drain(resp);
                    w = content.writer(d.digest.algo())?;
                    continue;
                }
            }
            200 => {
                if from > 0 {
                    // The registry ignores Range: take the whole blob again.
                    w = content.writer(d.digest.algo())?;
                }
            }
            _ => return Err(status_error("GET", &c.url(&url), resp)),
        }
        let start = w.size();
        // One byte more than the descriptor allows, to see a registry sending too much.
        let mut r = resp.into_reader().take(d.size.saturating_add(1).saturating_sub(start));
        let cut = loop {
            match r.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    w.write_all(&buf[..n]).map_err(|e| Error::new(format!("store: {e}")))?;
                    progress.update(&d.digest, Status::Downloading, w.size(), d.size);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e.to_string()),
            }
        };
        let got = w.size();
        if got > d.size {
            return Err(Error::new(format!("the registry sent more than the {} bytes of the manifest: discarded", d.size)));
        }
        if got == d.size {
            break;
        }
        // Cut short (an error, or an end before the size): resume.
        cuts += 1;
        idle_cuts = if got > start { 0 } else { idle_cuts + 1 };
        let why = cut.unwrap_or_else(|| format!("connection closed after {got} of {} bytes", d.size));
        if cuts > MAX_CUTS || idle_cuts > MAX_CUTS_WITHOUT_PROGRESS {
            return Err(Error::new(format!("download interrupted {cuts} times, giving up: {why}")));
        }
        progress.update(&d.digest, Status::Resuming, got, d.size);
        std::thread::sleep(std::time::Duration::from_millis(100 << idle_cuts.min(4)));
    }
    w.commit(Some(&d.digest), Some(d.size)).map(|_| ())
}

//! `push`: an image of the store (loaded, pulled, tagged) to a registry.
//!
//! The blobs first (layers and config, [`Settings::max_uploads`] at a time), the manifest
//! last, so that the registry never holds a manifest whose blobs are missing:
//!
//! * `HEAD` the blob: the registry has it → skipped ("Layer already exists");
//! * otherwise, if the image also has a name in another repository of the same registry,
//!   a cross-repository mount (`POST .../uploads/?mount=DIGEST&from=REPO`): 201 means the
//!   registry linked its copy and nothing is sent;
//! * otherwise an upload: `POST .../uploads/`, then either one `PUT ?digest=` with the
//!   whole blob (monolithic, the default: one request) or `PATCH`es of
//!   [`PushOpts::chunk_size`] bytes with `Content-Range` and a final empty `PUT ?digest=`
//!   (chunked). An upload cut short is started again in a new session (a session that
//!   got part of a body cannot be trusted with the rest), at most 3 times.
//!
//! The manifest goes out byte for byte as the store has it, so the pushed image has the
//! digest the store knows it by.

use std::collections::VecDeque;
use std::sync::Mutex;

use capsa_image::content::Content;
use capsa_image::oci::{self, Descriptor};
use capsa_image::reference::{familiar, split_tag, Reference};
use capsa_image::store::Store;
use capsa_image::{Digest, Error, Result};

use crate::auth::{server_key, DockerConfig};
use crate::client::{drain, encode, status_error, Body, Client};
use crate::progress::{Progress, Status};
use crate::settings::{split_repo, Settings};

pub struct PushOpts<'a> {
    pub settings: &'a Settings,
    pub progress: &'a dyn Progress,
    /// Upload in PATCH chunks of this many bytes instead of one PUT.
    pub chunk_size: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Pushed {
    /// `127.0.0.1:5000/app` (docker's familiar form).
    pub repo: String,
    pub tag: String,
    /// The manifest's digest and size, as the registry now names it.
    pub digest: Digest,
    pub size: u64,
    /// Each blob (layers, then the config) and what became of it.
    pub blobs: Vec<(Digest, Status)>,
}

pub fn push(store: &Store, name: &str, opts: &PushOpts) -> Result<Pushed> {
    let r = Reference::parse(name)?;
    if r.digest.is_some() {
        return Err(Error::new(format!("{name}: cannot push a digest reference: push a tag")));
    }
    let tag = r.tag.clone().unwrap_or_else(|| "latest".to_string());
    let full = r.full();
    let shown = familiar(&r.repo).to_string();
    let img = store.resolve(&full).ok().filter(|i| i.tags.contains(&full)).ok_or_else(|| {
        Error::not_found(format!("An image does not exist locally with the tag: {shown}:{tag} (capsactl tag IMAGE {shown}:{tag})"))
    })?;
    let (manifest, mbytes) = store.manifest(&img)?;
    let media_type = match &manifest.media_type {
        Some(m) => m.clone(),
        None if manifest.config.media_type == oci::DOCKER_CONFIG => oci::DOCKER_MANIFEST.to_string(),
        None => oci::OCI_MANIFEST.to_string(),
    };
    let mut blobs: Vec<Descriptor> = manifest.layers.clone();
    blobs.push(manifest.config.clone());
    for b in &blobs {
        match store.content.size(&b.digest) {
            Ok(s) if s == b.size => {}
            Ok(s) => return Err(Error::new(format!("blob {}: {s} bytes in the store, the manifest says {}", b.digest, b.size))),
            Err(e) => return Err(e.context(format!("{shown}:{tag}"))),
        }
    }
    let (domain, path) = split_repo(&r.repo);
    // Other repositories of the same registry holding this image: sources for mounts.
    let mut sources: Vec<String> = Vec::new();
    for t in &img.tags {
        let (repo, _) = split_tag(t);
        let (d, p) = split_repo(repo);
        if d == domain && p != path && !sources.iter().any(|s| s == p) {
            sources.push(p.to_string());
        }
    }
    let mut scopes = vec![format!("repository:{path}:pull,push")];
    scopes.extend(sources.iter().map(|s| format!("repository:{s}:pull")));
    let ep = opts.settings.push_endpoint(domain);
    let creds = DockerConfig::load(&opts.settings.docker_config)?.get(&server_key(domain))?;
    let c = Client::connect(opts.settings, &ep, scopes, creds)?;
    let statuses = upload_all(&c, path, &store.content, &blobs, &sources, opts)?;
    // The manifest, last.
    let url = format!("/v2/{path}/manifests/{tag}");
    let resp = c.send("PUT", &url, &[("Content-Type", &media_type)], &Body::Bytes(&mbytes))?;
    if resp.status() != 201 && resp.status() != 200 {
        return Err(status_error("PUT", &c.url(&url), resp).context("push manifest"));
    }
    let digest = Digest::of(&mbytes);
    if let Some(h) = resp.header("docker-content-digest").and_then(|h| Digest::parse(h).ok()) {
        if h.algo() == digest.algo() && h != digest {
            return Err(Error::new(format!("push manifest: the registry named it {h}, its content is {digest}")));
        }
    }
    drain(resp);
    Ok(Pushed { repo: shown, tag, digest, size: mbytes.len() as u64, blobs: statuses })
}

fn upload_all(
    c: &Client,
    path: &str,
    content: &Content,
    blobs: &[Descriptor],
    sources: &[String],
    opts: &PushOpts,
) -> Result<Vec<(Digest, Status)>> {
    let mut queue = VecDeque::new();
    for (i, b) in blobs.iter().enumerate() {
        if !queue.iter().any(|(_, x): &(usize, Descriptor)| x.digest == b.digest) {
            opts.progress.update(&b.digest, Status::Waiting, 0, b.size);
            queue.push_back((i, b.clone()));
        }
    }
    let workers = opts.settings.max_uploads.clamp(1, 64).min(queue.len().max(1));
    let queue = Mutex::new(queue);
    let done: Mutex<Vec<(usize, Digest, Status)>> = Mutex::new(Vec::new());
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                let Some((i, b)) = queue.lock().ok().and_then(|mut q| q.pop_front()) else { return };
                match push_blob(c, path, content, &b, sources, opts) {
                    Ok(st) => {
                        opts.progress.update(&b.digest, st, b.size, b.size);
                        if let Ok(mut d) = done.lock() {
                            d.push((i, b.digest.clone(), st));
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e.context(format!("blob {}", b.digest)));
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut d = done.into_inner().map_err(|_| Error::new("push: a worker thread panicked"))?;
    d.sort_by_key(|(i, _, _)| *i);
    Ok(d.into_iter().map(|(_, d, s)| (d, s)).collect())
}

fn push_blob(c: &Client, path: &str, content: &Content, b: &Descriptor, sources: &[String], opts: &PushOpts) -> Result<Status> {
    let blob_url = format!("/v2/{path}/blobs/{}", b.digest);
    let resp = c.send("HEAD", &blob_url, &[], &Body::Empty)?;
    match resp.status() {
        200 => {
            drain(resp);
            return Ok(Status::LayerExists);
        }
        404 => drain(resp),
        _ => return Err(status_error("HEAD", &c.url(&blob_url), resp)),
    }
    let mut tries = 0;
    loop {
        tries += 1;
        match upload(c, path, content, b, if tries == 1 { sources } else { &[] }, opts) {
            Ok(s) => return Ok(s),
            Err(e) if tries < 3 && e.to_string().contains("(retry)") => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One upload session (or mount). Errors worth a new session say "(retry)".
fn upload(c: &Client, path: &str, content: &Content, b: &Descriptor, sources: &[String], opts: &PushOpts) -> Result<Status> {
    let start = format!("/v2/{path}/blobs/uploads/");
    let mut location = None;
    for src in sources {
        let url = format!("{start}?mount={}&from={}", b.digest, encode(src));
        let resp = c.send("POST", &url, &[], &Body::Empty)?;
        match resp.status() {
            201 => {
                drain(resp);
                return Ok(Status::Mounted);
            }
            // Not mounted, but an upload session was opened instead.
            202 => {
                location = resp.header("location").map(str::to_string);
                drain(resp);
                if location.is_some() {
                    break;
                }
            }
            _ => drain(resp),
        }
    }
    let mut location = match location {
        Some(l) => l,
        None => {
            let resp = c.send("POST", &start, &[], &Body::Empty)?;
            if resp.status() != 202 {
                return Err(status_error("POST", &c.url(&start), resp).context("start upload"));
            }
            let l = resp.header("location").map(str::to_string).ok_or_else(|| Error::new("start upload: 202 without a Location"))?;
            drain(resp);
            l
        }
    };
    let file = content.open_blob(&b.digest)?;
    let sent = std::sync::atomic::AtomicU64::new(0);
    let on_bytes = |n: u64| {
        let total = sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        opts.progress.update(&b.digest, Status::Pushing, total, b.size);
    };
    let with_digest = |l: &str| format!("{l}{}digest={}", if l.contains('?') { '&' } else { '?' }, encode(&b.digest.to_string()));
    let octet = [("Content-Type", "application/octet-stream")];
    let resp = match opts.chunk_size {
        None => {
            let url = with_digest(&location);
            let body = Body::File { file: &file, offset: 0, len: b.size, on_bytes: Some(&on_bytes) };
            c.send("PUT", &url, &octet, &body).map_err(|e| Error::new(format!("{e} (retry)")))?
        }
        Some(n) => {
            let n = n.max(1);
            let mut off = 0;
            while off < b.size {
                let len = n.min(b.size - off);
                let range = format!("{off}-{}", off + len - 1);
                let body = Body::File { file: &file, offset: off, len, on_bytes: Some(&on_bytes) };
                let resp = c
                    .send("PATCH", &location, &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)], &body)
                    .map_err(|e| Error::new(format!("{e} (retry)")))?;
                if resp.status() != 202 {
                    return Err(status_error("PATCH", &c.url(&location), resp).context(format!("chunk {range}")));
                }
                location = resp
                    .header("location")
                    .map(str::to_string)
                    .ok_or_else(|| Error::new(format!("chunk {range}: 202 without a Location")))?;
                drain(resp);
                off += len;
            }
            c.send("PUT", &with_digest(&location), &octet, &Body::Empty)?
        }
    };
    if resp.status() != 201 {
        return Err(status_error("PUT", &c.url(&location), resp).context("finish upload"));
    }
    if let Some(h) = resp.header("docker-content-digest").and_then(|h| Digest::parse(h).ok()) {
        if h != b.digest {
            return Err(Error::new(format!("the registry stored {h} for blob {} (digest mismatch)", b.digest)));
        }
    }
    drain(resp);
    Ok(Status::Pushed)
}

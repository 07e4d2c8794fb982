//! `import`: a root filesystem tarball (plain, gzip or zstd) as a one-layer image, like
//! `docker import`: the tarball is the layer blob as it is, the config is made here.

use std::fs::File;
use std::io::Read;

use serde_json::json;

use crate::digest::{Algo, Digest, HashReader};
use crate::error::{Error, Result};
use crate::layer::Limits;
use crate::oci::{self, Compression, Descriptor, ImageConfig, Manifest, Platform};
use crate::store::{NewImage, NewLayer, Store};

/// Imports `input` (any readable stream); `source` names it in the history comment,
/// `tag` is a full name or none. Returns the image id.
pub fn import(store: &mut Store, mut input: impl Read, source: &str, tag: Option<String>, limits: &Limits) -> Result<Digest> {
    let _lock = store.lock_shared()?;
    let mut w = store.content.writer(Algo::Sha256)?;
    std::io::copy(&mut input, &mut w).map_err(|e| Error::new(format!("import {source}: {e}")))?;
    let blob = w.commit(None, None).map_err(|e| e.context(format!("import {source}")))?;
    let f = store.content.open_blob(&blob)?;
    let mut head = [0u8; 4];
    let n = std::os::unix::fs::FileExt::read_at(&f, &mut head, 0).map_err(|e| Error::new(format!("import {source}: {e}")))?;
    let comp = Compression::sniff(&head[..n]);
    // The diffID names the snapshot, so it is known first: a compressed tarball is read
    // once to hash its uncompressed stream.
    let diff_id = match comp {
        Compression::None => blob.clone(),
        _ => {
            let f = store.content.open_blob(&blob)?;
            let dec: Box<dyn Read> = match comp {
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f))),
                _ => Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| Error::new(format!("zstd: {e}")))?),
            };
            HashReader::new(dec, Algo::Sha256).finish().map_err(|e| Error::new(format!("import {source}: {e}")))?.0
        }
    };
    let chain = diff_id.clone();
    let size = store
        .snapshots
        .unpack(
            &File::open(store.content.path(&blob)).map_err(|e| Error::new(format!("{e}")))?,
            &blob,
            comp,
            &chain,
            Some(&diff_id),
            limits,
        )?
        .size;
    let now = rfc3339_now();
    let host = Platform::host();
    let config = json!({
        "created": now,
        "architecture": host.architecture,
        "os": host.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created": now, "comment": format!("Imported from {source}")}]
    });
    let config = serde_json::to_vec(&config).map_err(|e| Error::new(format!("encode config: {e}")))?;
    let parsed = ImageConfig::parse(&config, "config")?;
    let id = store.content.put(&config, None)?;
    let media_type = comp.oci_media_type().to_string();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::OCI_MANIFEST.into()),
        config: Descriptor::new(oci::OCI_CONFIG, id.clone(), config.len() as u64),
        layers: vec![Descriptor::new(&media_type, blob.clone(), store.content.size(&blob)?)],
        annotations: None,
    };
    let mbytes = serde_json::to_vec(&manifest).map_err(|e| Error::new(format!("encode manifest: {e}")))?;
    let mdigest = store.content.put(&mbytes, None)?;
    store.register(&NewImage {
        id: id.clone(),
        manifest: mdigest.clone(),
        repo_digest: None,
        layers: vec![NewLayer { chain, diff_id, blob: blob.clone(), media_type, size }],
        created: parsed.created,
        blobs: vec![(blob, "layer"), (id.clone(), "config"), (mdigest, "manifest")],
        tags: tag.into_iter().collect(),
    })?;
    Ok(id)
}

/// Now as RFC 3339 UTC with nanoseconds (the form docker writes in configs).
pub fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z", rem / 3600, rem / 60 % 60, rem % 60, d.subsec_nanos())
}

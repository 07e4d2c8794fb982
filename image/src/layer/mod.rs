//! Layer apply: a layer blob (tar, tar+gzip, tar+zstd) unpacked into an empty directory
//! in overlay form, ready to be one lowerdir of a container's rootfs.
//!
//! * Whiteouts (`.wh.NAME`) become what overlayfs reads: a 0:0 character device `NAME`;
//!   opaque directories (`.wh..wh..opq`) get `trusted.overlay.opaque=y`. A layer is thus
//!   unpacked on its own, without its parents, and independent layers unpack in parallel.
//! * Every path is resolved inside the layer's directory by `capsa_sys::Root` (openat2
//!   `RESOLVE_IN_ROOT`): a symlink in the layer pointing at `/etc` leads to the layer's own
//!   `etc`, never the host's. Names with `..` that would climb above the root are refused.
//! * The diffID (sha256 of the uncompressed tar) is computed while reading and checked by
//!   the caller against the image config. An uncompressed blob's diffID is its digest,
//!   already verified when it was stored, so its file contents are copied by the kernel
//!   (`copy_file_range`) without passing through this process.
//! * One difference from unpacking all layers into one directory (docker's vfs, umoci):
//!   a path under a directory that a *lower* layer made a symlink (`lib` → `usr/lib`) is
//!   not followed through that symlink here, since the lower layer is not seen; overlay then
//!   shows this layer's real directory. Layers written by `docker build` never do this (the
//!   upper dir they come from holds the resolved path); containerd's overlay applier,
//!   which writes into the layer's own upper directory, does the same.
//! * Decompression bombs: unpacking stops once the uncompressed stream passes
//!   [`Limits::max_bytes`], or once it is past 1 GiB and more than [`Limits::max_ratio`]
//!   times the compressed size (real layers compress 2–10×; gzip's ceiling is ~1030×).

mod apply;
mod remove;

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

pub use apply::{apply, apply_plain, clean, set_xattr};
pub use remove::{remove_all_at, remove_tree};

use crate::digest::{Algo, Digest, HashReader};
use crate::error::{Error, Result};
use crate::oci::Compression;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest uncompressed stream accepted for one layer.
    pub max_bytes: u64,
    /// Largest uncompressed/compressed ratio accepted past `ratio_after` bytes.
    pub max_ratio: u64,
    pub ratio_after: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let max_bytes = std::env::var("CAPSA_MAX_LAYER_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(64 << 30);
        Limits { max_bytes, max_ratio: 200, ratio_after: 1 << 30 }
    }
}

/// What unpacking a layer gave.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub diff_id: Digest,
    /// Bytes of file contents written (what `images` shows as size).
    pub size: u64,
}

/// Unpacks the blob `blob` (digest `digest`, stored with `compression`) into the empty
/// directory `dest`. `what` names the layer in errors.
pub fn unpack(blob: &File, digest: &Digest, compression: Compression, dest: &Path, limits: &Limits) -> Result<Unpacked> {
    let what = format!("layer {digest}");
    let root = capsa_sys::Root::open(dest).map_err(|e| Error::new(format!("{what}: open {}: {e}", dest.display())))?;
    let compressed = blob.metadata().map_err(|e| Error::new(format!("{what}: {e}")))?.len();
    match compression {
        Compression::None => {
            // Its digest is its diffID; read headers only and let the kernel copy data.
            let mut ar = tar::Archive::new(blob);
            let entries = ar.entries_with_seek().map_err(|e| Error::new(format!("{what}: {e}")))?;
            let size = apply::apply(entries, &root, &what, Some(blob))?;
            Ok(Unpacked { diff_id: digest.clone(), size })
        }
        Compression::Gzip | Compression::Zstd => {
            let input = BufReader::with_capacity(256 << 10, blob);
            let decoder: Box<dyn Read> = match compression {
                Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
                _ => Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(|e| Error::new(format!("{what}: zstd: {e}")))?),
            };
            let guarded = Guard { inner: decoder, read: 0, compressed, limits: *limits };
            let mut ar = tar::Archive::new(HashReader::new(BufReader::with_capacity(256 << 10, guarded), Algo::Sha256));
            let entries = ar.entries().map_err(|e| Error::new(format!("{what}: {e}")))?;
            let size = apply::apply(entries, &root, &what, None)?;
            let (diff_id, _) = ar.into_inner().finish().map_err(|e| Error::new(format!("{what}: after the last entry: {e}")))?;
            Ok(Unpacked { diff_id, size })
        }
    }
}

/// `inner` (the decompressed stream of `compressed` bytes) stopped as [`Limits`] say: for
/// archives other than layers (a build's `ADD x.tar.gz`).
pub fn bounded<R: Read>(inner: R, compressed: u64, limits: Limits) -> impl Read {
    Guard { inner, read: 0, compressed, limits }
}

/// Counts uncompressed bytes and stops a decompression bomb.
struct Guard<R> {
    inner: R,
    read: u64,
    compressed: u64,
    limits: Limits,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limits.max_bytes {
            return Err(io::Error::other(format!(
                "decompression bomb? uncompressed stream passed {} bytes (CAPSA_MAX_LAYER_BYTES)",
                self.limits.max_bytes
            )));
        }
        if self.read > self.limits.ratio_after && self.read / self.compressed.max(1) > self.limits.max_ratio {
            return Err(io::Error::other(format!(
                "decompression bomb: {} bytes of {} compressed is more than {}x",
                self.read, self.compressed, self.limits.max_ratio
            )));
        }
        Ok(n)
    }
}

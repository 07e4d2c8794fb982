//! The content store: blobs addressed by digest under `<root>/blobs/<algo>/<hex>`.
//!
//! A blob is written to an unnamed file (`O_TMPFILE`) in the blobs directory, hashed as the
//! bytes arrive, and linked under its name only when the digest (and size, when known)
//! match: a crash at any instant leaves either no file or the whole verified blob, never a
//! half-written one under a digest's name. Where the filesystem has no `O_TMPFILE`, a named
//! file in `<root>/ingest/` is used and renamed instead (leftovers are removed by `gc`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::digest::{Algo, Digest, Hasher};
use crate::error::{Context, Error, Result};

pub struct Content {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl Content {
    pub fn open(root: &Path) -> Result<Content> {
        let blobs = root.join("blobs");
        let ingest = root.join("ingest");
        for d in [blobs.join("sha256"), blobs.join("sha512"), ingest.clone()] {
            std::fs::create_dir_all(&d).with_ctx(|| format!("create {}", d.display()))?;
        }
        Ok(Content { blobs, ingest })
    }

    /// Where blob `d` lives (the digest's form was validated when it was parsed).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.algo().name()).join(d.hex())
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    pub fn size(&self, d: &Digest) -> Result<u64> {
        Ok(std::fs::metadata(self.path(d)).map_err(|e| not_found(d, e))?.len())
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.path(d)).map_err(|e| not_found(d, e))
    }

    /// Reads a small blob (a manifest, a config) whole, refusing more than `limit` bytes.
    pub fn read(&self, d: &Digest, limit: u64) -> Result<Vec<u8>> {
        let f = self.open_blob(d)?;
        let mut out = Vec::new();
        f.take(limit + 1).read_to_end(&mut out).with_ctx(|| format!("read blob {d}"))?;
        if out.len() as u64 > limit {
            return Err(Error::new(format!("blob {d}: larger than {limit} bytes")));
        }
        Ok(out)
    }

    /// Stores `data`, checking it against `expected` when given; returns its digest.
    pub fn put(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let d = Digest::of(data);
        if let Some(e) = expected {
            if e.algo() == Algo::Sha256 && *e != d {
                return Err(Error::new(format!("digest mismatch: expected {e}, content is {d}")));
            }
        }
        if self.has(&d) {
            return Ok(d);
        }
        let mut w = self.writer(expected.map(|e| e.algo()).unwrap_or(Algo::Sha256))?;
        w.write_all(data).ctx("write blob")?;
        w.commit(expected, Some(data.len() as u64))
    }

    /// A writer for a new blob hashed with `algo`.
    pub fn writer(&self, algo: Algo) -> Result<Writer> {
        let dir = self.blobs.join(algo.name());
        let (file, named) = match std::fs::OpenOptions::new().write(true).read(true).mode(0o644).custom_flags(libc::O_TMPFILE).open(&dir) {
            Ok(f) => (f, None),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR)) => {
                let p = self.ingest.join(format!("{}-{}", std::process::id(), random_suffix()));
                let f =
                    std::fs::OpenOptions::new().write(true).read(true).create_new(true).mode(0o644).open(&p).ctx("create ingest file")?;
                (f, Some(p))
            }
            Err(e) => return Err(Error::from(e).context(format!("create blob in {}", dir.display()))),
        };
        Ok(Writer { file, named, hasher: Hasher::new(algo), size: 0, dir })
    }

    pub fn delete(&self, d: &Digest) -> Result<()> {
        match std::fs::remove_file(self.path(d)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from(e).context(format!("remove blob {d}"))),
        }
    }

    /// Every blob present, for garbage collection. Names that are not a valid digest are
    /// returned apart (they are not ours).
    pub fn list(&self) -> Result<(Vec<Digest>, Vec<PathBuf>)> {
        let mut good = Vec::new();
        let mut strays = Vec::new();
        for algo in ["sha256", "sha512"] {
            let dir = self.blobs.join(algo);
            for e in std::fs::read_dir(&dir).with_ctx(|| format!("list {}", dir.display()))?.flatten() {
                match e.file_name().to_str().map(|n| Digest::parse(&format!("{algo}:{n}"))) {
                    Some(Ok(d)) => good.push(d),
                    _ => strays.push(e.path()),
                }
            }
        }
        for e in std::fs::read_dir(&self.ingest).with_ctx(|| format!("list {}", self.ingest.display()))?.flatten() {
            strays.push(e.path());
        }
        Ok((good, strays))
    }
}

fn not_found(d: &Digest, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::not_found(format!("blob {d}: not in the content store"))
    } else {
        Error::from(e).context(format!("blob {d}"))
    }
}

/// A short random string for temporary names (not security-relevant: names are created
/// with O_EXCL / rename checks).
pub fn random_suffix() -> String {
    let mut b = [0u8; 8];
    if File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        b = (t as u64).to_le_bytes();
    }
    crate::digest::to_hex(&b)
}

/// A blob being written: hashed and counted as it goes.
pub struct Writer {
    file: File,
    named: Option<PathBuf>,
    hasher: Hasher,
    size: u64,
    dir: PathBuf,
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Writer {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Names the blob if it matches `expected` (digest and size when given); otherwise
    /// nothing is kept and the error says what differed. Returns the digest.
    pub fn commit(self, expected: Option<&Digest>, expected_size: Option<u64>) -> Result<Digest> {
        let Writer { file, named, hasher, size, dir } = self;
        let d = hasher.finish();
        let discard = |named: &Option<PathBuf>| {
            if let Some(p) = named {
                let _ = std::fs::remove_file(p);
            }
        };
        if let Some(want) = expected_size {
            if want != size {
                discard(&named);
                return Err(Error::new(format!("size mismatch: expected {want} bytes, got {size}")));
            }
        }
        if let Some(e) = expected {
            if *e != d {
                discard(&named);
                return Err(Error::new(format!("digest mismatch: expected {e}, content is {d}")));
            }
        }
        let dest = dir.join(d.hex());
        match named {
            Some(p) => std::fs::rename(&p, &dest).with_ctx(|| format!("commit blob {d}"))?,
            None => {
                let src = capsa_sys::mount::fd_path(file.as_fd());
                match nix::unistd::linkat(
                    nix::fcntl::AT_FDCWD,
                    Path::new(&src),
                    nix::fcntl::AT_FDCWD,
                    &dest,
                    nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
                ) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(Error::from(e).context(format!("commit blob {d}"))),
                }
            }
        }
        Ok(d)
    }
}

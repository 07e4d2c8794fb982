//! Where an image comes from: a tar (docker-archive or OCI layout) or an OCI layout
//! directory. A tar is scanned once for its entries' offsets; blobs are then read by
//! position, several at a time. Paths inside a directory are resolved inside it
//! (`capsa_sys::Root`); names inside a tar are compared after lexical cleaning.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use capsa_sys::{Follow, Root};
use nix::fcntl::OFlag;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
/// An entry of a scanned tar: a file at an offset, or a link to another name.
pub enum Ent {
    File { off: u64, size: u64 },
    Link(String),
}

pub enum Source {
    Tar { file: Arc<File>, entries: HashMap<String, Ent>, name: String },
    Dir { root: Root },
}

/// Lexically clean archive path as a string key (`./a/../b` → `b`).
fn key(p: &Path) -> Option<String> {
    crate::layer::clean(p).ok().map(|p| p.to_string_lossy().into_owned())
}

impl Source {
    /// Scans a seekable tar file.
    pub fn tar(file: File, name: &str) -> Result<Source> {
        let mut entries = HashMap::new();
        {
            let mut ar = tar::Archive::new(&file);
            let it = ar.entries_with_seek().map_err(|e| Error::new(format!("{name}: {e}")))?;
            let mut last = String::from("(start)");
            for e in it {
                let e = e.map_err(|e| Error::new(format!("{name}: truncated or corrupt archive after {last:?}: {e}")))?;
                let p = e.path().map_err(|e| Error::new(format!("{name}: {e}")))?.into_owned();
                last = p.display().to_string();
                let Some(k) = key(&p) else { continue };
                match e.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        entries.insert(k, Ent::File { off: e.raw_file_position(), size: e.size() });
                    }
                    tar::EntryType::Symlink => {
                        if let Ok(Some(t)) = e.link_name() {
                            let base = p.parent().unwrap_or(Path::new("")).to_path_buf();
                            let joined = if t.is_absolute() { t.into_owned() } else { base.join(t) };
                            if let Some(t) = key(&joined) {
                                entries.insert(k, Ent::Link(t));
                            }
                        }
                    }
                    tar::EntryType::Link => {
                        if let Ok(Some(t)) = e.link_name() {
                            if let Some(t) = key(&t) {
                                entries.insert(k, Ent::Link(t));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        // A tar cut short ends "cleanly" at a header boundary for the tar reader: an entry
        // whose data runs past the end of the file tells.
        let len = file.metadata().map_err(|e| Error::new(format!("{name}: {e}")))?.len();
        for (k, e) in &entries {
            if let Ent::File { off, size } = e {
                // Sizes come from the archive's headers: a sum that overflows is past any end.
                match off.checked_add(*size) {
                    Some(end) if end <= len => {}
                    Some(end) => {
                        return Err(Error::new(format!("{name}: truncated archive: {k:?} needs {} bytes past its end", end - len)))
                    }
                    None => return Err(Error::new(format!("{name}: {k:?}: size {size} at offset {off} is past any end"))),
                }
            }
        }
        Ok(Source::Tar { file: Arc::new(file), entries, name: name.to_string() })
    }

    pub fn dir(path: &Path) -> Result<Source> {
        Ok(Source::Dir { root: Root::open(path).map_err(|e| Error::new(format!("{}: {e}", path.display())))? })
    }

    fn find(&self, p: &str) -> Option<(u64, u64)> {
        let Source::Tar { entries, .. } = self else { return None };
        let mut k = p.to_string();
        for _ in 0..16 {
            match entries.get(&k)? {
                Ent::File { off, size } => return Some((*off, *size)),
                Ent::Link(t) => k = t.clone(),
            }
        }
        None
    }

    pub fn has(&self, p: &str) -> bool {
        match self {
            Source::Tar { .. } => self.find(p).is_some(),
            Source::Dir { root } => root.open_at(Path::new(p), OFlag::O_PATH, Follow::InRoot).is_ok(),
        }
    }

    /// The size of the file `p` in the source, if it is there.
    pub fn size(&self, p: &str) -> Option<u64> {
        let k = key(Path::new(p))?;
        match self {
            Source::Tar { .. } => self.find(&k).map(|(_, s)| s),
            Source::Dir { root } => {
                let fd = root.open_at(Path::new(&k), OFlag::O_PATH, Follow::InRoot).ok()?;
                nix::sys::stat::fstat(&fd).ok().map(|st| st.st_size as u64)
            }
        }
    }

    /// A reader of the file `p` in the source and its size.
    pub fn open(&self, p: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        let k = key(Path::new(p)).ok_or_else(|| Error::new(format!("{p:?}: escapes the archive")))?;
        match self {
            Source::Tar { file, name, .. } => {
                let (off, size) = self.find(&k).ok_or_else(|| Error::new(format!("{name}: no file {p:?} in the archive")))?;
                Ok((Box::new(RangeReader { file: file.clone(), off, left: size }), size))
            }
            Source::Dir { root } => {
                let fd = root
                    .open_at(Path::new(&k), OFlag::O_RDONLY, Follow::InRoot)
                    .map_err(|e| Error::new(format!("{}: {e}", root.display(Path::new(&k)))))?;
                let f = File::from(fd);
                let md = f.metadata().map_err(|e| Error::new(format!("{p}: {e}")))?;
                if !md.is_file() {
                    return Err(Error::new(format!("{}: not a regular file", root.display(Path::new(&k)))));
                }
                Ok((Box::new(f), md.len()))
            }
        }
    }

    /// Reads a small file (a JSON document) whole, refusing more than `limit` bytes.
    pub fn read(&self, p: &str, limit: u64) -> Result<Vec<u8>> {
        let (r, size) = self.open(p)?;
        if size > limit {
            return Err(Error::new(format!("{p}: {size} bytes is more than the {limit} allowed")));
        }
        let mut out = Vec::with_capacity(size as usize);
        r.take(limit + 1).read_to_end(&mut out).map_err(|e| Error::new(format!("read {p}: {e}")))?;
        Ok(out)
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Tar { name, .. } => name.clone(),
            Source::Dir { root } => root.path().display().to_string(),
        }
    }
}

/// Reads `left` bytes from `off` of a shared file, by position (many readers at once).
struct RangeReader {
    file: Arc<File>,
    off: u64,
    left: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let n = self.file.read_at(&mut buf[..want], self.off)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "archive ends inside this file (truncated)"));
        }
        self.off += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Makes `input` a seekable, uncompressed file: a regular uncompressed file is used as
/// it is; a pipe, or a gzip/zstd-compressed archive, is copied (decompressed) into
/// `scratch` first (removed when the returned guard drops).
pub fn seekable(mut input: File, scratch: &Path) -> Result<(File, Option<Scratch>)> {
    let md = input.metadata().map_err(|e| Error::new(format!("stat input: {e}")))?;
    let mut head = [0u8; 4];
    let mut peeked = 0;
    if md.is_file() {
        let n = input.read_at(&mut head, 0).map_err(|e| Error::new(format!("read input: {e}")))?;
        if crate::oci::Compression::sniff(&head[..n]) == crate::oci::Compression::None {
            return Ok((input, None));
        }
    } else {
        while peeked < 4 {
            let n = input.read(&mut head[peeked..]).map_err(|e| Error::new(format!("read input: {e}")))?;
            if n == 0 {
                break;
            }
            peeked += n;
        }
    }
    let path = scratch.join(format!("input-{}", crate::content::random_suffix()));
    let guard = Scratch(path.clone());
    let mut out = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::new(format!("create {}: {e}", path.display())))?;
    let chained: Box<dyn Read> = Box::new(io::Cursor::new(head[..peeked].to_vec()).chain(input));
    let comp = crate::oci::Compression::sniff(&head[..if md.is_file() { 4 } else { peeked }]);
    let mut r: Box<dyn Read> = match comp {
        crate::oci::Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(chained)),
        crate::oci::Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(chained).map_err(|e| Error::new(format!("zstd: {e}")))?),
        crate::oci::Compression::None => chained,
    };
    io::copy(&mut r, &mut out).map_err(|e| Error::new(format!("read input: {e}")))?;
    Ok((out, Some(guard)))
}

/// A scratch file removed on drop.
pub struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

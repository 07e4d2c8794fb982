//! The entries of one layer tar, applied inside a [`Root`]. See the module above for the
//! rules; this file is the per-entry work.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use capsa_sys::{Follow, Root};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, futimens, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};
use tar::EntryType;

use super::remove::remove_all_at;
use crate::error::{Error, Result};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
const XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Applies every entry; returns the bytes of file contents written. `raw`: the archive
/// file itself when it is an uncompressed tar (contents are then copied by the kernel).
pub fn apply<R: Read>(entries: tar::Entries<'_, R>, root: &Root, what: &str, raw: Option<&File>) -> Result<u64> {
    apply_with(entries, Applier { root, raw, cache: None, dirs: Vec::new(), size: 0, whiteouts: true }, what)
}

/// As [`apply`], for a plain archive rather than a layer (`capsactl cp -` into a
/// container, as docker's `cp` extracts it): `.wh.` names are ordinary files, not
/// whiteouts or opaque markers.
pub fn apply_plain<R: Read>(entries: tar::Entries<'_, R>, root: &Root, what: &str) -> Result<u64> {
    apply_with(entries, Applier { root, raw: None, cache: None, dirs: Vec::new(), size: 0, whiteouts: false }, what)
}

fn apply_with<R: Read>(entries: tar::Entries<'_, R>, mut a: Applier<'_>, what: &str) -> Result<u64> {
    let mut last = String::from("(start of archive)");
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::new(format!("{what}: truncated or corrupt tar after entry {last:?}: {e}")))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        a.entry(&mut entry).map_err(|e| Error::new(format!("{what}: entry {name:?}: {e}")))?;
        last = name;
    }
    a.finish().map_err(|e| Error::new(format!("{what}: directory times: {e}")))?;
    Ok(a.size)
}

struct Applier<'a> {
    root: &'a Root,
    raw: Option<&'a File>,
    /// The directory of the previous entry (tars list a directory's files together).
    cache: Option<(PathBuf, OwnedFd)>,
    /// Directories and their times, set last (adding entries changes a directory's mtime).
    dirs: Vec<(PathBuf, TimeSpec)>,
    size: u64,
    /// A layer: `.wh.` names are whiteouts (false: a plain archive).
    whiteouts: bool,
}

/// Owner, mode, times and xattrs of an entry, from its header and PAX records.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

type Res<T> = std::result::Result<T, String>;

fn io_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn errno(e: Errno) -> String {
    e.desc().to_string()
}

/// The entry's path made relative and lexically clean; `..` that would climb above the
/// layer root is refused (CVE-2014-9356 / CVE-2014-6407 style names).
pub fn clean(p: &Path) -> Res<PathBuf> {
    let mut out: Vec<&OsStr> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err(format!("path {:?} escapes the layer root through \"..\"", p));
                }
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Ok(out.iter().collect())
}

impl Applier<'_> {
    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Res<()> {
        let kind = e.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink) {
            return Ok(());
        }
        let path = e.path().map_err(io_err)?.into_owned();
        let rel = clean(&path)?;
        let meta = self.meta(e)?;
        let Some(base) = rel.file_name().map(|n| n.to_os_string()) else {
            // The root itself ("./"): its owner and mode, as docker applies them.
            if kind == EntryType::Directory {
                let fd = self.root.open_at(Path::new("."), OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::Never).map_err(io_err)?;
                self.set_meta(fd.as_fd(), &meta)?;
                self.dirs.push((PathBuf::new(), meta.mtime));
            }
            return Ok(());
        };
        let base_b = base.as_bytes();
        if self.whiteouts && base_b.starts_with(WHITEOUT.as_bytes()) {
            return self.whiteout(&rel, base_b);
        }
        match kind {
            EntryType::Directory => self.dir(&rel, &meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => self.file(&rel, e, &meta),
            EntryType::Symlink => {
                let target = e.link_name().map_err(io_err)?.ok_or("symlink without a target")?.into_owned();
                self.symlink(&rel, &target, &meta)
            }
            EntryType::Link => {
                let target = e.link_name().map_err(io_err)?.ok_or("hardlink without a target")?.into_owned();
                self.hardlink(&rel, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (major, minor) = if kind == EntryType::Fifo {
                    (None, None)
                } else {
                    (e.header().device_major().map_err(io_err)?, e.header().device_minor().map_err(io_err)?)
                };
                let kind = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                self.node(&rel, kind, major.unwrap_or(0), minor.unwrap_or(0), &meta)
            }
            other => Err(format!("unsupported tar entry type {:?}", other.as_byte() as char)),
        }
    }

    fn meta<R: Read>(&self, e: &mut tar::Entry<'_, R>) -> Res<Meta> {
        let h = e.header();
        let mut uid = h.uid().map_err(io_err)?;
        let mut gid = h.gid().map_err(io_err)?;
        let mode = h.mode().map_err(io_err)? & 0o7777;
        let mut mtime = TimeSpec::new(h.mtime().map_err(io_err)? as i64, 0);
        let mut xattrs = Vec::new();
        if let Some(pax) = e.pax_extensions().map_err(io_err)? {
            for ext in pax {
                let ext = ext.map_err(io_err)?;
                let key = ext.key().map_err(|_| "PAX record key is not UTF-8".to_string())?;
                let value = ext.value_bytes();
                let num = || std::str::from_utf8(value).ok().and_then(|v| v.trim().parse::<u64>().ok());
                match key {
                    "uid" => uid = num().ok_or("PAX uid: not a number")?,
                    "gid" => gid = num().ok_or("PAX gid: not a number")?,
                    "mtime" => mtime = pax_time(value).ok_or("PAX mtime: not a time")?,
                    k if k.starts_with(XATTR_PREFIX) => {
                        let name = &k[XATTR_PREFIX.len()..];
                        // overlayfs reads trusted.overlay.*: only we write those (whiteouts).
                        if name.starts_with("trusted.overlay.") {
                            continue;
                        }
                        let name = CString::new(name).map_err(|_| "xattr name contains NUL")?;
                        xattrs.push((name, value.to_vec()));
                    }
                    _ => {}
                }
            }
        }
        let id = |v: u64, what: &str| u32::try_from(v).ok().filter(|v| *v != u32::MAX).ok_or_else(|| format!("{what} {v}: out of range"));
        Ok(Meta { uid: id(uid, "uid")?, gid: id(gid, "gid")?, mode, mtime, xattrs })
    }

    /// The directory holding `rel` (created 0755 where missing) and `rel`'s last name.
    fn parent(&mut self, rel: &Path) -> Res<(BorrowedFd<'_>, OsString)> {
        let name = rel.file_name().ok_or("no name")?.to_os_string();
        let dir = rel.parent().unwrap_or(Path::new(""));
        let hit = matches!(&self.cache, Some((p, _)) if p == dir);
        if !hit {
            let fd = match self.root.open_at(dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Follow::InRoot) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.root.mkdir_all(dir, 0o755, Follow::InRoot).map_err(io_err)?,
                Err(e) => return Err(format!("directory {}: {e}", dir.display())),
            };
            self.cache = Some((dir.to_path_buf(), fd));
        }
        let fd = self.cache.as_ref().map(|(_, fd)| fd.as_fd()).ok_or("no parent")?;
        Ok((fd, name))
    }

    /// Makes room for a new entry `name` in `dir`: removes what is there, unless it is a
    /// directory and `keep_dir` (a directory entry over an existing directory merges).
    /// Returns whether an existing directory was kept.
    fn make_room(dir: BorrowedFd<'_>, name: &OsStr, keep_dir: bool) -> Res<(bool, bool)> {
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok((false, false)),
            Err(e) => Err(errno(e)),
            Ok(st) => {
                let is_dir = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
                if is_dir && keep_dir {
                    return Ok((true, false));
                }
                remove_all_at(dir, name).map_err(io_err)?;
                Ok((false, true))
            }
        }
    }

    fn dir(&mut self, rel: &Path, meta: &Meta) -> Res<()> {
        let (dir, name) = self.parent(rel)?;
        let (kept, removed) = Self::make_room(dir, &name, true)?;
        if !kept {
            match mkdirat(dir, name.as_os_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(errno(e)),
            }
        }
        let fd = openat(dir, name.as_os_str(), OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(errno)?;
        if removed {
            self.cache = None;
        }
        self.set_meta(fd.as_fd(), meta)?;
        self.dirs.push((rel.to_path_buf(), meta.mtime));
        Ok(())
    }

    fn file<R: Read>(&mut self, rel: &Path, e: &mut tar::Entry<'_, R>, meta: &Meta) -> Res<()> {
        let raw = self.raw;
        let (dir, name) = self.parent(rel)?;
        let (_, removed) = Self::make_room(dir, &name, false)?;
        let fd = openat(
            dir,
            name.as_os_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(errno)?;
        if removed {
            self.cache = None;
        }
        let len = e.size();
        let sparse = e.header().entry_type() == EntryType::GNUSparse;
        let mut f = File::from(fd);
        match raw {
            Some(src) if !sparse && len > 0 => copy_range(src, e.raw_file_position(), &f, len)?,
            _ => {
                let n = io::copy(e, &mut f).map_err(io_err)?;
                if n != len {
                    return Err(format!("truncated: {n} of {len} bytes"));
                }
                f.flush().map_err(io_err)?;
            }
        }
        self.size += len;
        self.set_meta(f.as_fd(), meta)
    }

    fn symlink(&mut self, rel: &Path, target: &Path, meta: &Meta) -> Res<()> {
        if target.as_os_str().is_empty() {
            return Err("symlink with an empty target".into());
        }
        let (dir, name) = self.parent(rel)?;
        Self::make_room(dir, &name, false)?;
        // The target is stored as it is: it is only ever resolved inside a root.
        nix::unistd::symlinkat(target, dir, name.as_os_str()).map_err(errno)?;
        fchownat(dir, name.as_os_str(), Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| format!("chown: {}", e.desc()))?;
        utimensat(dir, name.as_os_str(), &meta.mtime, &meta.mtime, UtimensatFlags::NoFollowSymlink).map_err(errno)?;
        // A symlink may replace a directory that later names go through.
        self.cache = None;
        Ok(())
    }

    fn hardlink(&mut self, rel: &Path, target: &Path) -> Res<()> {
        let target = clean(target).map_err(|e| format!("hardlink target: {e}"))?;
        if target == rel {
            return Ok(());
        }
        let tname = target.file_name().ok_or("hardlink to the layer root")?.to_os_string();
        let tdir = self
            .root
            .open_at(target.parent().unwrap_or(Path::new("")), OFlag::O_PATH | OFlag::O_DIRECTORY, Follow::InRoot)
            .map_err(|e| format!("hardlink target {}: {e}", target.display()))?;
        let (dir, name) = self.parent(rel)?;
        let (_, removed) = Self::make_room(dir, &name, false)?;
        // linkat without AT_SYMLINK_FOLLOW links the target entry itself (a symlink stays
        // a symlink): nothing outside the root is reachable this way.
        match nix::unistd::linkat(tdir.as_fd(), tname.as_os_str(), dir, name.as_os_str(), AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Err(format!("hardlink target {:?} is not in this layer", target.display().to_string())),
            Err(Errno::EPERM) => return Err(format!("hardlink target {:?} is a directory", target.display().to_string())),
            Err(e) => return Err(format!("hardlink to {}: {}", target.display(), e.desc())),
        }
        if removed {
            self.cache = None;
        }
        Ok(())
    }

    fn node(&mut self, rel: &Path, kind: SFlag, major: u32, minor: u32, meta: &Meta) -> Res<()> {
        let (dir, name) = self.parent(rel)?;
        let (_, removed) = Self::make_room(dir, &name, false)?;
        mknodat(dir, name.as_os_str(), kind, Mode::from_bits_truncate(0o600), nix::sys::stat::makedev(major as u64, minor as u64))
            .map_err(errno)?;
        // Opened O_PATH|O_NOFOLLOW (a device is never opened for I/O here); owner and mode
        // are set through the fd's /proc path, which names exactly this node.
        let fd = openat(dir, name.as_os_str(), OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).map_err(errno)?;
        let p = capsa_sys::mount::fd_path(fd.as_fd());
        nix::unistd::chown(Path::new(&p), Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))
            .map_err(|e| format!("chown: {}", e.desc()))?;
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            Path::new(&p),
            Mode::from_bits_truncate(meta.mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| format!("chmod: {}", e.desc()))?;
        utimensat(dir, name.as_os_str(), &meta.mtime, &meta.mtime, UtimensatFlags::NoFollowSymlink).map_err(errno)?;
        if removed {
            self.cache = None;
        }
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path, base: &[u8]) -> Res<()> {
        if base == OPAQUE.as_bytes() {
            let dir = rel.parent().unwrap_or(Path::new(""));
            self.root.mkdir_all(dir, 0o755, Follow::InRoot).map_err(io_err)?;
            let fd = self.root.open_at(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::InRoot).map_err(io_err)?;
            return set_xattr(fd.as_fd(), c"trusted.overlay.opaque", b"y").map_err(|e| format!("mark opaque: {e}"));
        }
        if base.starts_with(b".wh..wh.") {
            // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not part of the image.
            return Ok(());
        }
        let hidden = &base[WHITEOUT.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err("whiteout of an invalid name".into());
        }
        let target = rel.with_file_name(OsStr::from_bytes(hidden));
        let (dir, name) = self.parent(&target)?;
        let (_, removed) = Self::make_room(dir, &name, false)?;
        mknodat(dir, name.as_os_str(), SFlag::S_IFCHR, Mode::empty(), 0).map_err(|e| format!("whiteout: {}", e.desc()))?;
        if removed {
            self.cache = None;
        }
        Ok(())
    }

    /// Owner, then mode (chown clears set-id bits), xattrs, times, on a file we opened.
    fn set_meta(&self, fd: BorrowedFd<'_>, meta: &Meta) -> Res<()> {
        fchown(fd, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid))).map_err(|e| format!("chown: {}", e.desc()))?;
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(meta.mode)).map_err(|e| format!("chmod: {}", e.desc()))?;
        for (k, v) in &meta.xattrs {
            set_xattr(fd, k, v).map_err(|e| format!("xattr {}: {e}", k.to_string_lossy()))?;
        }
        futimens(fd, &meta.mtime, &meta.mtime).map_err(errno)?;
        Ok(())
    }

    fn finish(&mut self) -> Res<()> {
        self.cache = None;
        for (rel, t) in self.dirs.drain(..).rev() {
            let fd = match self.root.open_at(&rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::NotLast) {
                Ok(fd) => fd,
                // Replaced or whited out later in the same layer.
                Err(_) => continue,
            };
            futimens(fd.as_fd(), &t, &t).map_err(errno)?;
        }
        Ok(())
    }
}

/// PAX times are decimal seconds with an optional fraction (`1700000000.123456789`).
fn pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    Some(TimeSpec::new(secs, nanos))
}

pub fn set_xattr(fd: BorrowedFd<'_>, name: &std::ffi::CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: fsetxattr reads a NUL-terminated name and `value.len()` bytes of value.
    let r = unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Copies `len` bytes at `off` of `src` to the start of `dst`, in the kernel.
fn copy_range(src: &File, off: u64, dst: &File, len: u64) -> Res<()> {
    let mut off_in = off as i64;
    let mut left = len;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        match nix::fcntl::copy_file_range(src.as_fd(), Some(&mut off_in), dst.as_fd(), None, chunk) {
            Ok(0) => return Err(format!("truncated: {} of {len} bytes", len - left)),
            Ok(n) => left -= n as u64,
            Err(Errno::EINTR) => continue,
            Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL) => {
                return copy_by_read(src, off_in as u64, dst, left, len);
            }
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(())
}

fn copy_by_read(src: &File, mut off: u64, mut dst: &File, mut left: u64, len: u64) -> Res<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 256 << 10];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = src.read_at(&mut buf[..want], off).map_err(io_err)?;
        if n == 0 {
            return Err(format!("truncated: {} of {len} bytes", len - left));
        }
        dst.write_all(&buf[..n]).map_err(io_err)?;
        off += n as u64;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean(Path::new("./a/b/")).unwrap(), PathBuf::from("a/b"));
        assert_eq!(clean(Path::new("/a/../b")).unwrap(), PathBuf::from("b"));
        assert!(clean(Path::new("../etc/passwd")).is_err());
        assert!(clean(Path::new("a/../../x")).is_err());
        assert_eq!(clean(Path::new("./")).unwrap(), PathBuf::new());
    }

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(b"12.5"), Some(TimeSpec::new(12, 500_000_000)));
        assert_eq!(pax_time(b"7"), Some(TimeSpec::new(7, 0)));
        assert_eq!(pax_time(b"x"), None);
    }
}

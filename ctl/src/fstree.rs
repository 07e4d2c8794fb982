//! Trees that a container controls, walked by file descriptor: volume initialisation from
//! the image, `cp` in both directions, `commit`, `export` and `diff`.
//!
//! A container can rename, replace or symlink anything in its filesystem while we read or
//! write it (CVE-2018-15664 swapped a directory for a symlink to `/` in the middle of a
//! `docker cp`). So nothing here joins a path into a string and reopens it: each directory
//! is opened relative to its parent's fd with `O_NOFOLLOW|O_DIRECTORY`, each file relative
//! to its directory's fd with `O_NOFOLLOW`, and everything created is created relative to
//! a directory fd with `O_NOFOLLOW`/`O_EXCL`, so a swapped component either is what we
//! opened or fails. The starting points come from `capsa_sys::Root` (RESOLVE_IN_ROOT).
//! Nothing of the container's is executed or loaded (CVE-2019-14271): no chroot, no NSS.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

pub fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Deepest directory nesting we follow (a hostile tree may be arbitrarily deep).
const MAX_DEPTH: usize = 1024;

/// One entry met by [`walk`].
pub struct Node<'a> {
    /// The directory holding it.
    pub parent: BorrowedFd<'a>,
    pub name: &'a OsStr,
    /// Relative to the walk's start.
    pub path: &'a Path,
    pub st: &'a FileStat,
    /// For a directory: an fd on it (opened `O_NOFOLLOW|O_DIRECTORY`).
    pub dir: Option<BorrowedFd<'a>>,
}

/// The names in a directory (sorted, without `.` and `..`).
pub fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let d = nix::dir::Dir::openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(errno)?;
    let mut out = Vec::new();
    for e in d {
        let e = e.map_err(errno)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    out.sort();
    Ok(out)
}

pub fn open_dir_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    openat(parent, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).map_err(errno)
}

pub fn lstat_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<FileStat> {
    fstatat(parent, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)
}

/// Visits every entry under `dir`, parents before children, names sorted. `visit`
/// returns whether to go into a directory. Entries that vanish while we walk are skipped.
pub fn walk(dir: BorrowedFd<'_>, visit: &mut dyn FnMut(&Node) -> io::Result<bool>) -> io::Result<()> {
    walk_in(dir, Path::new(""), visit, 0)
}

fn walk_in(dir: BorrowedFd<'_>, prefix: &Path, visit: &mut dyn FnMut(&Node) -> io::Result<bool>, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!("{}: directories nested deeper than {MAX_DEPTH}", prefix.display())));
    }
    for name in names(dir)? {
        let st = match lstat_at(dir, &name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let path = prefix.join(&name);
        let sub = if kind(&st) == SFlag::S_IFDIR {
            match open_dir_at(dir, &name) {
                Ok(fd) => Some(fd),
                // Replaced by something else since the stat: skip it rather than follow.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENOTDIR)) => continue,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let node = Node { parent: dir, name: &name, path: &path, st: &st, dir: sub.as_ref().map(|f| f.as_fd()) };
        if visit(&node)? {
            if let Some(sub) = &sub {
                walk_in(sub.as_fd(), &path, visit, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Reads a symlink's target relative to its directory.
pub fn read_link_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    readlinkat(parent, name).map_err(errno)
}

/// Opens a regular file of the tree for reading (never a symlink, fifo or device: a fifo
/// would block us, a device could be anything).
pub fn open_file_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::fs::File> {
    let fd =
        openat(parent, name, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty()).map_err(errno)?;
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(errno)?;
    if kind(&st) != SFlag::S_IFREG {
        return Err(io::Error::other(format!("{}: not a regular file any more", name.to_string_lossy())));
    }
    Ok(std::fs::File::from(fd))
}

/// Extended attributes of an open file (names and values), except overlayfs' own.
pub fn xattrs(fd: BorrowedFd<'_>) -> Vec<(CString, Vec<u8>)> {
    let mut out = Vec::new();
    let mut names = vec![0u8; 4096];
    // SAFETY: flistxattr writes at most names.len() bytes into names.
    let n = unsafe { libc::flistxattr(fd.as_raw_fd(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return out;
    }
    for name in names[..n as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let Ok(cname) = CString::new(name) else { continue };
        let mut val = vec![0u8; 65536];
        // SAFETY: fgetxattr writes at most val.len() bytes into val.
        let m = unsafe { libc::fgetxattr(fd.as_raw_fd(), cname.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if m >= 0 {
            val.truncate(m as usize);
            out.push((cname, val));
        }
    }
    out
}

/// Whether an overlay upper directory is opaque (`trusted.overlay.opaque` = `y`).
pub fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    let mut v = [0u8; 4];
    // SAFETY: fgetxattr writes at most 4 bytes into v.
    let n = unsafe { libc::fgetxattr(dir.as_raw_fd(), c"trusted.overlay.opaque".as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    n == 1 && v[0] == b'y'
}

/// An overlayfs whiteout: a character device 0:0.
pub fn is_whiteout(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

// ---------------------------------------------------------------------------------------
// Copying a tree (or one entry) into a directory fd.

/// How [`copy_into`] treats owners.
#[derive(Debug, Clone, Copy)]
pub struct CopyOpts {
    /// Keep uids/gids (else files belong to the copying user... here: root, 0:0).
    pub keep_owner: bool,
}

/// Copies entry `name` of `src_parent` as `dst_name` inside `dst_parent`, recursively.
/// Existing files are replaced, existing directories merged; an existing symlink in the
/// destination is replaced, never followed.
pub fn copy_entry(src_parent: BorrowedFd<'_>, name: &OsStr, dst_parent: BorrowedFd<'_>, dst_name: &OsStr, o: CopyOpts) -> io::Result<()> {
    let st = lstat_at(src_parent, name)?;
    let mut links = HashMap::new();
    copy_one(src_parent, name, &st, dst_parent, dst_name, o, &mut links, 0)
}

/// Copies everything inside directory `src` into directory `dst`.
pub fn copy_contents(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, o: CopyOpts) -> io::Result<()> {
    let mut links = HashMap::new();
    for name in names(src)? {
        let st = match lstat_at(src, &name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        copy_one(src, &name, &st, dst, &name, o, &mut links, 0)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn copy_one(
    sp: BorrowedFd<'_>,
    name: &OsStr,
    st: &FileStat,
    dp: BorrowedFd<'_>,
    dname: &OsStr,
    o: CopyOpts,
    links: &mut HashMap<(u64, u64), (OwnedFd, OsString)>,
    depth: usize,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other("directories nested too deep"));
    }
    let mode = st.st_mode & 0o7777;
    let (uid, gid) = if o.keep_owner { (st.st_uid, st.st_gid) } else { (0, 0) };
    let k = kind(st);
    if k != SFlag::S_IFDIR {
        // A hard link to something already copied in this run: link it again.
        if st.st_nlink > 1 {
            if let Some((dir, first)) = links.get(&(st.st_dev, st.st_ino)) {
                replace_non_dir(dp, dname)?;
                let r = nix::unistd::linkat(dir.as_fd(), first.as_os_str(), dp, dname, nix::fcntl::AtFlags::empty());
                if r.is_ok() {
                    return Ok(());
                }
            }
        }
    }
    match k {
        SFlag::S_IFDIR => {
            let src = open_dir_at(sp, name)?;
            match nix::sys::stat::mkdirat(dp, dname, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(errno(e)),
            }
            // An existing symlink or file of that name is not a directory: replace it.
            let dst = match open_dir_at(dp, dname) {
                Ok(d) => d,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                    replace_non_dir(dp, dname)?;
                    nix::sys::stat::mkdirat(dp, dname, Mode::from_bits_truncate(0o700)).map_err(errno)?;
                    open_dir_at(dp, dname)?
                }
                Err(e) => return Err(e),
            };
            for n in names(src.as_fd())? {
                let cst = match lstat_at(src.as_fd(), &n) {
                    Ok(s) => s,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                copy_one(src.as_fd(), &n, &cst, dst.as_fd(), &n, o, links, depth + 1)?;
            }
            nix::unistd::fchown(dst.as_fd(), Some(uid.into()), Some(gid.into())).map_err(errno)?;
            nix::sys::stat::fchmod(dst.as_fd(), Mode::from_bits_truncate(mode)).map_err(errno)?;
            set_times(dst.as_fd(), st);
        }
        SFlag::S_IFREG => {
            let mut src = open_file_at(sp, name)?;
            let dst = create_file_at(dp, dname, &mut src, uid, gid, mode)?;
            for (n, v) in xattrs(src.as_fd()) {
                // SAFETY: fsetxattr reads v.len() bytes of v and the NUL-terminated name.
                unsafe { libc::fsetxattr(dst.as_raw_fd(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
            }
            set_times(dst.as_fd(), st);
            if st.st_nlink > 1 {
                if let Ok(d) = nix::unistd::dup(dp) {
                    links.insert((st.st_dev, st.st_ino), (d, dname.to_os_string()));
                }
            }
        }
        SFlag::S_IFLNK => {
            let target = read_link_at(sp, name)?;
            replace_non_dir(dp, dname)?;
            nix::unistd::symlinkat(target.as_os_str(), dp, dname).map_err(errno)?;
            nix::unistd::fchownat(dp, dname, Some(uid.into()), Some(gid.into()), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(errno)?;
        }
        SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO | SFlag::S_IFSOCK => {
            if k == SFlag::S_IFSOCK {
                return Ok(());
            }
            replace_non_dir(dp, dname)?;
            nix::sys::stat::mknodat(dp, dname, k, Mode::from_bits_truncate(mode), st.st_rdev).map_err(errno)?;
            nix::unistd::fchownat(dp, dname, Some(uid.into()), Some(gid.into()), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(errno)?;
        }
        _ => {}
    }
    Ok(())
}

/// Makes file `name` in `dir` anew (a non-directory there goes first; never through a
/// symlink), fills it from `src` and gives it `uid`, `gid` and `mode`. The caller sets times.
pub fn create_file_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    src: &mut dyn io::Read,
    uid: u32,
    gid: u32,
    mode: u32,
) -> io::Result<std::fs::File> {
    replace_non_dir(dir, name)?;
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(errno)?;
    let mut f = std::fs::File::from(fd);
    io::copy(src, &mut f)?;
    nix::unistd::fchown(f.as_fd(), Some(uid.into()), Some(gid.into())).map_err(errno)?;
    nix::sys::stat::fchmod(f.as_fd(), Mode::from_bits_truncate(mode)).map_err(errno)?;
    Ok(f)
}

/// Removes `name` from `dir` unless it is a directory (which the caller merges into).
pub fn replace_non_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => Err(io::Error::other(format!("cannot overwrite directory {:?} with a non-directory", name))),
        Err(e) => Err(errno(e)),
    }
}

/// Gives `fd` the access and modification times of `st`.
pub fn set_times(fd: BorrowedFd<'_>, st: &FileStat) {
    let ts = [
        libc::timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec },
        libc::timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec },
    ];
    // SAFETY: futimens reads two timespecs.
    unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) };
}

// ---------------------------------------------------------------------------------------
// Writing a tree as a tar stream.

/// What a tar of a tree holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct TarOpts {
    /// The tree is an overlay upper directory: whiteouts (char 0:0) become `.wh.NAME`
    /// entries and opaque directories get a `.wh..wh..opq` entry (the OCI layer form).
    pub overlay_upper: bool,
    /// No mtime later than this (SOURCE_DATE_EPOCH: reproducible layers).
    pub clamp_mtime: Option<i64>,
}

/// Streams trees into a tar archive.
pub struct TarWriter<W: Write> {
    b: tar::Builder<W>,
    links: HashMap<(u64, u64), PathBuf>,
    o: TarOpts,
}

fn header(st: &FileStat, typ: tar::EntryType, clamp: Option<i64>) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(typ);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.min(clamp.unwrap_or(i64::MAX)).max(0) as u64);
    h.set_size(0);
    h
}

impl<W: Write> TarWriter<W> {
    pub fn new(w: W, o: TarOpts) -> TarWriter<W> {
        let mut b = tar::Builder::new(w);
        b.mode(tar::HeaderMode::Complete);
        TarWriter { b, links: HashMap::new(), o }
    }

    /// Adds the entry `name` of `parent` as `path` in the archive, and everything under
    /// it when it is a directory.
    pub fn add_entry(&mut self, parent: BorrowedFd<'_>, name: &OsStr, path: &Path) -> io::Result<()> {
        let st = lstat_at(parent, name)?;
        let dir = if kind(&st) == SFlag::S_IFDIR { Some(open_dir_at(parent, name)?) } else { None };
        let node = Node { parent, name, path, st: &st, dir: dir.as_ref().map(|d| d.as_fd()) };
        self.add(&node)?;
        if let Some(d) = &dir {
            self.add_tree(d.as_fd(), path)?;
        }
        Ok(())
    }

    /// Adds everything under directory `dir`, with paths under `prefix`.
    pub fn add_tree(&mut self, dir: BorrowedFd<'_>, prefix: &Path) -> io::Result<()> {
        self.add_tree_except(dir, prefix, &|_, _| false)
    }

    /// As [`TarWriter::add_tree`], leaving out the entries `skip` names (by their path
    /// relative to `dir`; what is under a skipped directory is still added).
    pub fn add_tree_except(&mut self, dir: BorrowedFd<'_>, prefix: &Path, skip: &dyn Fn(&Path, &FileStat) -> bool) -> io::Result<()> {
        walk(dir, &mut |n: &Node| {
            if skip(n.path, n.st) {
                return Ok(true);
            }
            let full = prefix.join(n.path);
            let node = Node { parent: n.parent, name: n.name, path: &full, st: n.st, dir: n.dir };
            self.add(&node)?;
            // Under a whiteout there is nothing; the walk goes on into real directories.
            Ok(!(self.o.overlay_upper && is_whiteout(n.st)))
        })
    }

    fn add(&mut self, n: &Node) -> io::Result<()> {
        let st = n.st;
        let k = kind(st);
        if self.o.overlay_upper && is_whiteout(st) {
            // The name's bytes as they are: a lossy one would whiten out another file.
            let mut name = std::ffi::OsString::from(".wh.");
            name.push(n.name);
            let wh = n.path.with_file_name(name);
            let mut h = header(st, tar::EntryType::Regular, self.o.clamp_mtime);
            h.set_mode(0o644);
            return self.b.append_data(&mut h, &wh, io::empty());
        }
        if k != SFlag::S_IFDIR && st.st_nlink > 1 {
            if let Some(first) = self.links.get(&(st.st_dev, st.st_ino)) {
                let mut h = header(st, tar::EntryType::Link, self.o.clamp_mtime);
                let first = first.clone();
                return self.b.append_link(&mut h, n.path, first);
            }
            self.links.insert((st.st_dev, st.st_ino), n.path.to_path_buf());
        }
        match k {
            SFlag::S_IFDIR => {
                let mut h = header(st, tar::EntryType::Directory, self.o.clamp_mtime);
                if let Some(d) = n.dir {
                    self.pax_xattrs(d)?;
                }
                let mut p = n.path.as_os_str().to_os_string();
                p.push("/");
                self.b.append_data(&mut h, Path::new(&p), io::empty())?;
                if self.o.overlay_upper && n.dir.is_some_and(is_opaque) {
                    let mut h = header(st, tar::EntryType::Regular, self.o.clamp_mtime);
                    h.set_mode(0o644);
                    self.b.append_data(&mut h, n.path.join(".wh..wh..opq"), io::empty())?;
                }
            }
            SFlag::S_IFREG => {
                let f = match open_file_at(n.parent, n.name) {
                    Ok(f) => f,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                    Err(e) => return Err(e),
                };
                self.pax_xattrs(f.as_fd())?;
                let mut h = header(st, tar::EntryType::Regular, self.o.clamp_mtime);
                // The header needs the size up front: exactly st_size bytes go in, padded
                // with zeros if the file shrank meanwhile, cut if it grew.
                h.set_size(st.st_size as u64);
                let r = f.take(st.st_size as u64).chain(io::repeat(0)).take(st.st_size as u64);
                self.b.append_data(&mut h, n.path, r)?;
            }
            SFlag::S_IFLNK => {
                let target = read_link_at(n.parent, n.name)?;
                let mut h = header(st, tar::EntryType::Symlink, self.o.clamp_mtime);
                // The target as it is, byte for byte: the tar crate's link names are
                // normalised paths (`/` came out as `//`, `a//b/` as `a/b`). A target too
                // long for the header goes in a GNU long-link entry, which it writes verbatim.
                if h.set_link_name_literal(target.as_bytes()).is_ok() {
                    self.b.append_data(&mut h, n.path, io::empty())?;
                } else {
                    self.b.append_link(&mut h, n.path, Path::new(&target))?;
                }
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                let typ = match k {
                    SFlag::S_IFCHR => tar::EntryType::Char,
                    SFlag::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = header(st, typ, self.o.clamp_mtime);
                if k != SFlag::S_IFIFO {
                    h.set_device_major(nix::sys::stat::major(st.st_rdev) as u32)?;
                    h.set_device_minor(nix::sys::stat::minor(st.st_rdev) as u32)?;
                }
                self.b.append_data(&mut h, n.path, io::empty())?;
            }
            // Sockets are not archived (as tar and docker do).
            _ => {}
        }
        Ok(())
    }

    fn pax_xattrs(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let xs = xattrs(fd);
        if xs.is_empty() {
            return Ok(());
        }
        // PAX keys are text: a name that is not UTF-8 cannot be kept as it is (converted, it
        // would name another attribute), so the layer is refused.
        let mut recs: Vec<(String, Vec<u8>)> = Vec::new();
        for (n, v) in xs {
            let n = n.to_str().map_err(|_| io::Error::other(format!("extended attribute name {n:?} is not UTF-8")))?;
            recs.push((format!("SCHILY.xattr.{n}"), v));
        }
        self.b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    pub fn finish(self) -> io::Result<W> {
        self.b.into_inner()
    }
}

/// An owned duplicate of `fd`.
pub fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd we own (or -1).
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: n is a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("capsactl-fstree-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn dirfd(p: &Path) -> OwnedFd {
        OwnedFd::from(std::fs::File::open(p).unwrap())
    }

    #[test]
    fn copy_keeps_symlinks_as_links_and_never_follows_them_in_the_destination() {
        let d = tmp("copy");
        let (src, dst, outside) = (d.join("src"), d.join("dst"), d.join("outside"));
        for p in [&src, &dst, &outside] {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), b"data").unwrap();
        std::fs::hard_link(src.join("sub/f"), src.join("sub/g")).unwrap();
        symlink("/etc/passwd", src.join("link")).unwrap();
        // The destination has a symlink where a file and a directory will be written.
        symlink(&outside, dst.join("sub")).unwrap();
        symlink(outside.join("x"), dst.join("link")).unwrap();
        copy_contents(dirfd(&src).as_fd(), dirfd(&dst).as_fd(), CopyOpts { keep_owner: true }).unwrap();
        assert_eq!(std::fs::read(dst.join("sub/f")).unwrap(), b"data");
        assert!(std::fs::symlink_metadata(dst.join("sub")).unwrap().is_dir());
        assert_eq!(std::fs::read_link(dst.join("link")).unwrap(), Path::new("/etc/passwd"));
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written through a symlink");
        assert_eq!(std::fs::metadata(dst.join("sub/f")).unwrap().ino(), std::fs::metadata(dst.join("sub/g")).unwrap().ino());
        let _ = std::fs::remove_dir_all(d);
    }

    /// The tar TarWriter makes of directory `d`.
    fn tar_of(d: &Path) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new(), TarOpts::default());
        w.add_tree(dirfd(d).as_fd(), Path::new("")).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn tar_of_a_tree() {
        let d = tmp("tar");
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("a/b/f"), b"hello").unwrap();
        symlink("../x", d.join("a/l")).unwrap();
        let bytes = tar_of(&d);
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut s = String::new();
            if e.header().entry_type() == tar::EntryType::Regular {
                e.read_to_string(&mut s).unwrap();
            }
            seen.push(format!("{p}={s}"));
        }
        assert_eq!(seen, vec!["a/=", "a/b/=", "a/b/f=hello", "a/l="]);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn symlink_targets_are_archived_byte_for_byte() {
        let d = tmp("links");
        let long = format!("/{}", "long/".repeat(30));
        let targets = ["/", "a//b/", "./x", "../..", "/etc/", long.as_str()];
        for (i, t) in targets.iter().enumerate() {
            symlink(t, d.join(format!("l{i}"))).unwrap();
        }
        let bytes = tar_of(&d);
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().entry_type(), tar::EntryType::Symlink);
            seen.push(String::from_utf8(e.link_name_bytes().unwrap().into_owned()).unwrap());
        }
        assert_eq!(seen, targets);
        let _ = std::fs::remove_dir_all(d);
    }
}

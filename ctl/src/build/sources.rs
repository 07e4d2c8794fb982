//! COPY/ADD sources: found in a root (the build context, another stage's rootfs or an
//! image's), checksummed for the cache, and copied into the step's rootfs.
//!
//! Both sides are hostile. A source path is resolved inside its root by
//! `capsa_sys::Root` (RESOLVE_IN_ROOT): a symlink in the context that points at `/etc`
//! or `../..` leads to the context's own `etc` or its top, never out of it. Below a
//! source directory nothing is followed: symlinks are copied as symlinks. The destination
//! is made with `Root::mkdir_all` inside the rootfs (a symlink there resolves inside the
//! rootfs too), and every entry below it is created relative to its directory's fd with
//! `O_NOFOLLOW`/`O_EXCL`, as `fstree` does for `cp`.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, SFlag};

use capsa_image::digest::{Algo, Hasher};
use capsa_sys::{Follow, Root};

use super::glob::{self, Ignore};
use crate::fstree::{create_file_at, kind, lstat_at, names, open_dir_at, open_file_at, read_link_at, replace_non_dir, set_times};

/// Deepest nesting copied (a hostile tree may be arbitrarily deep).
const MAX_DEPTH: usize = 1024;

fn errno(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// A root files are copied from.
pub struct SourceRoot {
    pub root: Root,
    /// `.dockerignore` of the context (empty for stages and images).
    pub ignore: Ignore,
    /// What it is, for messages: "build context", "stage build", "image gcc".
    pub what: String,
    /// Fifos, sockets and devices met below a source directory and not copied (docker
    /// copies none of them), for the build's warning.
    pub skipped: std::cell::RefCell<Vec<PathBuf>>,
    /// The running COPY's `--exclude` patterns (set by [`SourceRoot::set_excludes`]), and
    /// the source directory they are relative to below it.
    exclude: std::cell::RefCell<(Ignore, Option<PathBuf>)>,
}

/// One source found: its real path inside the root (symlinks of the pattern followed,
/// inside the root), the name it was found by and whether it is a directory.
///
/// As docker's: `COPY link /d/` where `link` is a symlink copies what it points at, named
/// after the source (`/d/link`), not after the target; a glob's symlink matches alike.
#[derive(Debug, Clone)]
pub struct Found {
    pub rel: PathBuf,
    /// The last component of the source as written (or matched by a glob): the name a
    /// file source gets in a destination directory.
    pub name: OsString,
    pub is_dir: bool,
    /// The path as the source named or matched it (symlinks not followed): what
    /// `COPY --parents` keeps.
    pub matched: PathBuf,
}

impl SourceRoot {
    pub fn open(dir: &Path, what: &str, dockerignore: bool) -> Result<SourceRoot, String> {
        let real = std::fs::canonicalize(dir).map_err(|e| format!("{what} {}: {e}", dir.display()))?;
        let root = Root::open(&real).map_err(|e| format!("{what} {}: {e}", dir.display()))?;
        let ignore = if dockerignore {
            match root.read_file(Path::new(".dockerignore"), 1 << 20) {
                Ok(b) => Ignore::parse(&String::from_utf8_lossy(&b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
                Err(e) => return Err(format!("{what}: .dockerignore: {e}")),
            }
        } else {
            Ignore::default()
        };
        Ok(SourceRoot { root, ignore, what: what.to_string(), skipped: Default::default(), exclude: Default::default() })
    }

    /// COPY/ADD `--exclude`: patterns as `.dockerignore`'s (`**`, `!`), matched against a
    /// source as found (its path in the root, `hom*` finding `home.txt`) and, below a
    /// source directory, against paths relative to that directory, as BuildKit's.
    pub fn set_excludes(&self, patterns: &[String]) {
        *self.exclude.borrow_mut() = (Ignore::parse(&patterns.join("\n")), None);
    }

    /// Below which source directory the walk is (for `--exclude`).
    fn set_base(&self, base: Option<&Path>) {
        self.exclude.borrow_mut().1 = base.map(Path::to_path_buf);
    }

    /// Whether `--exclude` leaves out `rel` (a path in the root below the current source
    /// directory, or with `top`, a source itself).
    fn user_excluded(&self, rel: &Path, is_dir: bool, top: bool) -> bool {
        let ex = self.exclude.borrow();
        if ex.0.is_empty() {
            return false;
        }
        let sub = if top {
            rel
        } else {
            match ex.1.as_deref().map(|b| rel.strip_prefix(b)) {
                Some(Ok(s)) => s,
                _ => return false,
            }
        };
        let sub = sub.to_string_lossy();
        ex.0.excluded(&sub) && !(is_dir && ex.0.may_reinclude(&sub))
    }

    fn excluded(&self, rel: &Path) -> bool {
        !self.ignore.is_empty() && self.ignore.excluded(&rel.to_string_lossy())
    }

    /// Whether an entry is copied: not excluded by .dockerignore, or an excluded directory
    /// that an exception names something below of (it is then copied, with what is
    /// re-included in it: see [`Ignore::may_reinclude`]).
    fn included(&self, rel: &Path, is_dir: bool) -> bool {
        (!self.excluded(rel) || (is_dir && self.ignore.may_reinclude(&rel.to_string_lossy()))) && !self.user_excluded(rel, is_dir, false)
    }

    /// The entries a source (a path or a glob, relative to the root) names. None found is
    /// an error, as in docker.
    pub fn find(&self, pattern: &str) -> Result<Vec<Found>, String> {
        let clean = glob::clean(pattern);
        let mut cands: Vec<PathBuf> = vec![PathBuf::new()];
        if glob::has_meta(&clean) {
            for comp in clean.split('/') {
                let mut next = Vec::new();
                for c in &cands {
                    if glob::has_meta(comp) {
                        let Ok(dir) = self.root.open_at(c, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::InRoot) else { continue };
                        for n in names(dir.as_fd()).map_err(|e| format!("{}: list {}: {e}", self.what, c.display()))? {
                            if glob::matches(comp, &n.to_string_lossy(), true) {
                                next.push(c.join(&n));
                            }
                        }
                    } else {
                        next.push(c.join(comp));
                    }
                }
                cands = next;
            }
        } else {
            cands = vec![PathBuf::from(&clean)];
        }
        let mut out = Vec::new();
        let globbed = glob::has_meta(&clean);
        self.set_base(None);
        for c in cands {
            if self.user_excluded(&c, false, true) {
                continue;
            }
            match self.real(&c) {
                Ok(Some(f)) if f.special.is_none() => out.push(f.found),
                // A fifo, socket or device named by a glob is left out (as docker leaves it
                // out of the context); named on its own it is an error (docker copies
                // nothing then, silently).
                Ok(Some(f)) if globbed => self.skipped.borrow_mut().push(f.found.rel),
                Ok(Some(f)) => {
                    return Err(format!(
                        "{} in {}: is a {}: only files, directories and symlinks are copied",
                        c.display(),
                        self.what,
                        f.special.unwrap_or_default()
                    ))
                }
                // Matched by a glob, there, and not excluded itself: a symlink whose target
                // is not in the root (outside it, missing or excluded). Docker fails too.
                Ok(None) if globbed && !self.excluded(&c) => {
                    return Err(format!("{} in {}: {}: its target is not in the {}", pattern, self.what, c.display(), self.what))
                }
                Ok(None) => {}
                Err(e) => return Err(format!("{}: {}: {e}", self.what, c.display())),
            }
        }
        if out.is_empty() {
            let why = if glob::has_meta(&clean) { "no source files were specified (nothing matches)" } else { "not found" };
            return Err(format!("{} in {}: {why}", if pattern.is_empty() { "." } else { pattern }, self.what));
        }
        Ok(out)
    }

    /// Where `rel` really is (symlinks followed inside the root); None when it does not
    /// exist or is excluded by .dockerignore (by its own name or its target's).
    fn real(&self, rel: &Path) -> std::io::Result<Option<Real>> {
        let fd = match self.root.open_path(rel, Follow::InRoot) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(errno)?;
        let at = capsa_sys::root::fd_target(fd.as_fd())?;
        if st.st_nlink == 0 || at.as_os_str().as_bytes().ends_with(b" (deleted)") {
            // Replaced or removed since it was opened: its path is gone.
            return Err(std::io::Error::other("the source changed while it was being read; build again"));
        }
        let real = at.strip_prefix(self.root.path()).map(Path::to_path_buf).unwrap_or_default();
        let k = kind(&st);
        let is_dir = k == SFlag::S_IFDIR;
        if !self.included(rel, is_dir) || !self.included(&real, is_dir) {
            return Ok(None);
        }
        let name = rel.file_name().map(OsStr::to_os_string).unwrap_or_default();
        Ok(Some(Real { found: Found { rel: real, name, is_dir, matched: rel.to_path_buf() }, special: special(k) }))
    }

    /// The parent directory (an fd) and name of a found entry.
    fn parent_of(&self, rel: &Path) -> std::io::Result<(OwnedFd, OsString)> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().map(OsStr::to_os_string).unwrap_or_else(|| OsString::from("."));
        let dir = self.root.open_at(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::Never)?;
        Ok((dir, name))
    }

    /// Adds what `found` holds (paths relative to it, types, modes, owners when
    /// `owners`, contents, link targets) to `h`: the cache's checksum of a source.
    pub fn checksum(&self, found: &Found, owners: bool, h: &mut Hasher) -> std::io::Result<()> {
        found_head(found, h);
        self.set_base(Some(&found.rel));
        if found.rel.as_os_str().is_empty() {
            let dir = self.root.open_at(Path::new(""), OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::Never)?;
            return self.checksum_tree(dir.as_fd(), Path::new(""), owners, h);
        }
        let (dir, name) = self.parent_of(&found.rel)?;
        let st = lstat_at(dir.as_fd(), &name)?;
        self.checksum_entry(dir.as_fd(), &name, &found.rel, &st, owners, h, 0)
    }

    fn checksum_tree(&self, dir: BorrowedFd<'_>, rel: &Path, owners: bool, h: &mut Hasher) -> std::io::Result<()> {
        self.checksum_children(dir, rel, owners, h, 0)
    }

    fn checksum_children(&self, dir: BorrowedFd<'_>, rel: &Path, owners: bool, h: &mut Hasher, depth: usize) -> std::io::Result<()> {
        for n in names(dir)? {
            let r = rel.join(&n);
            let st = lstat_at(dir, &n)?;
            if !self.included(&r, kind(&st) == SFlag::S_IFDIR) {
                continue;
            }
            self.checksum_entry(dir, &n, &r, &st, owners, h, depth + 1)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn checksum_entry(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        st: &FileStat,
        owners: bool,
        h: &mut Hasher,
        depth: usize,
    ) -> std::io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(std::io::Error::other("directories nested too deep"));
        }
        let k = kind(st);
        if special(k).is_some() {
            return Ok(());
        }
        h.update(entry_header(rel, st, owners).as_bytes());
        match k {
            SFlag::S_IFDIR => {
                let d = open_dir_at(parent, name)?;
                self.checksum_children(d.as_fd(), rel, owners, h, depth)?;
            }
            SFlag::S_IFREG => {
                let mut f = open_file_at(parent, name)?;
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
            SFlag::S_IFLNK => h.update(read_link_at(parent, name)?.as_bytes()),
            _ => {}
        }
        Ok(())
    }

    /// A found regular file (ADD's archive) copied into `into` (a private scratch file),
    /// hashed into `h` as [`SourceRoot::copy`] would hash it.
    pub fn copy_file_hashed(&self, found: &Found, into: &mut std::fs::File, owners: bool, h: &mut Hasher) -> std::io::Result<()> {
        found_head(found, h);
        let (p, n) = self.parent_of(&found.rel)?;
        let st = lstat_at(p.as_fd(), &n)?;
        h.update(entry_header(&found.rel, &st, owners).as_bytes());
        let mut src = Hashing { inner: open_file_at(p.as_fd(), &n)?, h };
        std::io::copy(&mut src, into)?;
        Ok(())
    }

    /// Opens a found regular file for reading (ADD's archives).
    pub fn open_file(&self, found: &Found) -> std::io::Result<std::fs::File> {
        let (dir, name) = self.parent_of(&found.rel)?;
        open_file_at(dir.as_fd(), &name)
    }

    /// Copies `found` into directory `dst` (an fd inside the rootfs): a directory's
    /// contents, or the file/symlink itself as `dst_name`. What it copies goes into `h`
    /// exactly as [`SourceRoot::checksum`] hashes it: the bytes copied are the bytes hashed,
    /// so a source changed between the cache lookup and the copy is seen (see exec.rs).
    pub fn copy(&self, found: &Found, dst: BorrowedFd<'_>, dst_name: &OsStr, o: &CopyOpts, h: &mut Hasher) -> std::io::Result<()> {
        found_head(found, h);
        self.set_base(Some(&found.rel));
        if found.is_dir {
            let src = if found.rel.as_os_str().is_empty() {
                self.root.open_at(Path::new(""), OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::Never)?
            } else {
                let (p, n) = self.parent_of(&found.rel)?;
                let st = lstat_at(p.as_fd(), &n)?;
                h.update(entry_header(&found.rel, &st, o.keep_owner).as_bytes());
                open_dir_at(p.as_fd(), &n)?
            };
            return self.copy_children(src.as_fd(), &found.rel, dst, o, h, 0);
        }
        let (p, n) = self.parent_of(&found.rel)?;
        let st = lstat_at(p.as_fd(), &n)?;
        self.copy_entry(p.as_fd(), &n, &found.rel, &st, dst, dst_name, o, h, 0)
    }

    fn copy_children(
        &self,
        src: BorrowedFd<'_>,
        rel: &Path,
        dst: BorrowedFd<'_>,
        o: &CopyOpts,
        h: &mut Hasher,
        depth: usize,
    ) -> std::io::Result<()> {
        for n in names(src)? {
            let r = rel.join(&n);
            let st = match lstat_at(src, &n) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            if !self.included(&r, kind(&st) == SFlag::S_IFDIR) {
                continue;
            }
            self.copy_entry(src, &n, &r, &st, dst, &n, o, h, depth + 1)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_entry(
        &self,
        sp: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        st: &FileStat,
        dp: BorrowedFd<'_>,
        dname: &OsStr,
        o: &CopyOpts,
        h: &mut Hasher,
        depth: usize,
    ) -> std::io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(std::io::Error::other("directories nested too deep"));
        }
        let k = kind(st);
        // Devices, fifos and sockets are not copied (docker's context holds none: it drops
        // fifos and turns the others into empty files); the build says which were left.
        if special(k).is_some() {
            self.skipped.borrow_mut().push(rel.to_path_buf());
            return Ok(());
        }
        h.update(entry_header(rel, st, o.keep_owner).as_bytes());
        let (uid, gid) = match o.owner {
            Some(ids) => ids,
            None if o.keep_owner => (st.st_uid, st.st_gid),
            None => (0, 0),
        };
        let mode = match &o.mode {
            Some(c) => c.apply(st.st_mode & 0o7777, k == SFlag::S_IFDIR),
            None => st.st_mode & 0o7777,
        };
        match k {
            SFlag::S_IFDIR => {
                let src = open_dir_at(sp, name)?;
                let dst = dir_at(dp, dname)?;
                self.copy_children(src.as_fd(), rel, dst.as_fd(), o, h, depth)?;
                nix::unistd::fchown(dst.as_fd(), Some(uid.into()), Some(gid.into())).map_err(errno)?;
                nix::sys::stat::fchmod(dst.as_fd(), Mode::from_bits_truncate(mode)).map_err(errno)?;
                set_times(dst.as_fd(), st);
            }
            SFlag::S_IFREG => {
                let mut src = Hashing { inner: open_file_at(sp, name)?, h };
                let dst = create_file_at(dp, dname, &mut src, uid, gid, mode)?;
                set_times(dst.as_fd(), st);
            }
            SFlag::S_IFLNK => {
                let target = read_link_at(sp, name)?;
                h.update(target.as_bytes());
                replace_non_dir(dp, dname)?;
                nix::unistd::symlinkat(target.as_os_str(), dp, dname).map_err(errno)?;
                nix::unistd::fchownat(dp, dname, Some(uid.into()), Some(gid.into()), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(errno)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A source found, with what kind of special file it is (if it is one).
struct Real {
    found: Found,
    special: Option<&'static str>,
}

/// A fifo, socket or device: never copied.
fn special(k: SFlag) -> Option<&'static str> {
    match k {
        SFlag::S_IFIFO => Some("fifo"),
        SFlag::S_IFSOCK => Some("socket"),
        SFlag::S_IFCHR | SFlag::S_IFBLK => Some("device"),
        _ => None,
    }
}

/// What the checksum of a source starts with: where it is and the name it was found by.
fn found_head(found: &Found, h: &mut Hasher) {
    h.update(found.rel.as_os_str().as_bytes());
    h.update(b"\0");
    h.update(found.name.as_bytes());
    h.update(b"\0");
}

/// What the checksum of a source holds for one entry before its contents.
pub fn entry_header(rel: &Path, st: &FileStat, owners: bool) -> String {
    let owner = if owners { format!("{}:{}", st.st_uid, st.st_gid) } else { String::new() };
    format!("{}\0{:o}\0{owner}\0", rel.display(), st.st_mode)
}

/// A reader that hashes what passes through it.
pub struct Hashing<'a, R> {
    pub inner: R,
    pub h: &'a mut Hasher,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.h.update(&buf[..n]);
        Ok(n)
    }
}

/// How sources are written.
#[derive(Debug, Clone, Default)]
pub struct CopyOpts {
    /// --chown: every entry gets these ids.
    pub owner: Option<(u32, u32)>,
    /// Without --chown: keep the source's owners (COPY --from), else 0:0 (the context).
    pub keep_owner: bool,
    /// --chmod.
    pub mode: Option<Chmod>,
}

/// The directory `name` in `dir`, made if missing; something else there (a file, a
/// symlink) is replaced, never followed.
pub fn dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<OwnedFd> {
    match nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(errno(e)),
    }
    match open_dir_at(dir, name) {
        Ok(d) => Ok(d),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
            replace_non_dir(dir, name)?;
            nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(0o755)).map_err(errno)?;
            open_dir_at(dir, name)
        }
        Err(e) => Err(e),
    }
}

/// A fresh hasher for checksums.
pub fn hasher() -> Hasher {
    Hasher::new(Algo::Sha256)
}

/// Writes a heredoc's body as file `name` in `dir` (COPY <<EOF).
pub fn write_file(dir: BorrowedFd<'_>, name: &OsStr, content: &[u8], o: &CopyOpts) -> std::io::Result<()> {
    let (uid, gid) = o.owner.unwrap_or((0, 0));
    let mode = o.mode.as_ref().map(|c| c.apply(0o644, false)).unwrap_or(0o644);
    create_file_at(dir, name, &mut &content[..], uid, gid, mode).map(drop)
}

/// COPY/ADD `--chmod`: an octal mode, or a symbolic one as chmod(1) and BuildKit take it
/// (`u+x,go-w`, `a=rX`, `g=u`), applied to each entry's own mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    /// Clauses: who (a mask of the u, g, o permission bits), then operations.
    Symbolic(Vec<(u32, Vec<(char, Perm)>)>),
}

/// What a symbolic operation adds, removes or sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Perm {
    /// Letters of `rwxXst`.
    Letters(String),
    /// The bits another class has now (`g=u`).
    Copy(char),
}

const WHO_U: u32 = 0o4700;
const WHO_G: u32 = 0o2070;
const WHO_O: u32 = 0o1007;

impl Chmod {
    pub fn parse(s: &str) -> Result<Chmod, String> {
        let bad = |why: &str| format!("--chmod={s}: {why}");
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return u32::from_str_radix(s, 8)
                .ok()
                .filter(|v| *v <= 0o7777)
                .map(Chmod::Octal)
                .ok_or_else(|| bad("not an octal mode of at most 7777"));
        }
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let mut who = 0;
            let mut rest = clause;
            while let Some(c) = rest.chars().next() {
                who |= match c {
                    'u' => WHO_U,
                    'g' => WHO_G,
                    'o' => WHO_O,
                    'a' => WHO_U | WHO_G | WHO_O,
                    _ => break,
                };
                rest = &rest[1..];
            }
            if who == 0 {
                who = WHO_U | WHO_G | WHO_O;
            }
            let mut ops = Vec::new();
            while let Some(op) = rest.chars().next().filter(|c| matches!(c, '+' | '-' | '=')) {
                rest = &rest[1..];
                let end = rest.find(['+', '-', '=']).unwrap_or(rest.len());
                let perm = &rest[..end];
                rest = &rest[end..];
                let p = match perm {
                    "u" | "g" | "o" => Perm::Copy(perm.chars().next().unwrap_or('u')),
                    p if p.chars().all(|c| "rwxXst".contains(c)) => Perm::Letters(p.to_string()),
                    p => return Err(bad(&format!("{p:?}: want permissions of rwxXst, or one of u, g, o"))),
                };
                ops.push((op, p));
            }
            if ops.is_empty() || !rest.is_empty() {
                return Err(bad(&format!("{clause:?}: want an octal mode or [ugoa]*[+-=][rwxXst]*, comma separated")));
            }
            clauses.push((who, ops));
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode an entry of mode `mode` (permission bits) gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(c) => c,
        };
        let mut m = mode & 0o7777;
        for (who, ops) in clauses {
            for (op, perm) in ops {
                let bits = match perm {
                    Perm::Copy(c) => {
                        let three = match c {
                            'u' => (m >> 6) & 7,
                            'g' => (m >> 3) & 7,
                            _ => m & 7,
                        };
                        three * 0o111
                    }
                    Perm::Letters(l) => {
                        let mut b = 0;
                        for c in l.chars() {
                            b |= match c {
                                'r' => 0o444,
                                'w' => 0o222,
                                'x' => 0o111,
                                'X' if is_dir || m & 0o111 != 0 => 0o111,
                                's' => 0o6000,
                                't' => 0o1000,
                                _ => 0,
                            };
                        }
                        b
                    }
                } & who;
                m = match op {
                    '+' => m | bits,
                    '-' => m & !bits,
                    // As chmod(1): `=` keeps a directory's set-id bits unless it sets them.
                    _ => (m & !(who & if is_dir { !0o6000 } else { !0 })) | bits,
                };
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Symbolic modes give what chmod(1) gives (with a `who`, where its umask plays no part).
    #[test]
    fn symbolic_chmod_as_chmod_1() {
        let d = std::env::temp_dir().join(format!("capsactl-chmod-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let specs =
            ["u+x", "go-w", "u+x,go-w", "a=rX", "a+X", "u=rwx,g=rx,o=", "g=u", "o=g", "u+s", "g+s,o+t", "ug+rw-x", "a-rwx,u+r", "o+rwt"];
        for (i, spec) in specs.iter().enumerate() {
            for start in [0o644u32, 0o755, 0o600, 0o4751, 0o1777, 0o000] {
                for is_dir in [false, true] {
                    let p = d.join(format!("{i}-{start:o}-{is_dir}"));
                    if is_dir {
                        std::fs::create_dir(&p).unwrap();
                    } else {
                        std::fs::write(&p, b"").unwrap();
                    }
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(start)).unwrap();
                    let o = std::process::Command::new("chmod").arg(spec).arg(&p).output().unwrap();
                    assert!(o.status.success(), "chmod {spec}: {}", String::from_utf8_lossy(&o.stderr));
                    let want = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
                    let got = Chmod::parse(spec).unwrap().apply(start, is_dir);
                    assert_eq!(got, want, "{spec} on {start:o} (dir: {is_dir}): {got:o}, chmod(1) {want:o}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(Chmod::parse("0755").unwrap(), Chmod::Octal(0o755));
        for bad in ["", "8", "17777", "u+q", "x+r", "u", "u+x,", "+r,g"] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}

//! Paths inside a root directory that an attacker controls: a container's rootfs before
//! pivot_root, the container's `/` after it, an image layer being extracted.
//!
//! A [`Root`] is an `O_PATH` fd on the directory. Every path is looked up by the kernel
//! relative to it, with symlinks resolved as if the root were `/` and `..` stopping at it:
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` where the kernel has it, otherwise a
//! walk of our own, one `O_NOFOLLOW` component at a time. Nothing is ever joined into a
//! string and reopened, so a symlink swapped in between two steps cannot lead outside, and
//! `/proc/self/fd/N`-style magic links are never followed.
//!
//! Creating (`mkdir_all`, `create_file`, [`Root::parent`] for mknod/symlink/unlink) walks
//! the existing part the same way and makes each missing component relative to its
//! parent's fd.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, mkdirat, FileStat, Mode, SFlag};

use crate::other;

/// How symlinks in a path are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Every symlink is resolved inside the root, as in a chroot.
    InRoot,
    /// As `InRoot`, but the last component is not followed: a symlink there is itself the
    /// result (opened `O_PATH|O_NOFOLLOW`), or an error where a real file is needed.
    NotLast,
    /// No component may be a symlink (`ELOOP`): the rule for special mount destinations
    /// such as `/proc` and `/dev/pts`, checked on the path exactly as written.
    Never,
}

/// Filesystems whose "regular" files [`Root::read_file`] refuses: procfs, sysfs, debugfs,
/// tracefs (reads with side effects, or that block).
const PSEUDO_FS: [nix::sys::statfs::FsType; 4] = [
    nix::sys::statfs::PROC_SUPER_MAGIC,
    nix::sys::statfs::SYSFS_MAGIC,
    nix::sys::statfs::FsType(0x6462_6720 as _),
    nix::sys::statfs::FsType(0x7472_6163 as _),
];

/// Links followed in one lookup before giving up with `ELOOP` (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// A directory that paths are resolved inside of.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The kind of file `st` describes.
pub fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// The components of `p` that name something (`/` and `.` dropped, `..` kept).
fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

impl Root {
    /// Opens the directory `path` (trusted: it comes from the caller, not from the root's
    /// contents) as a root.
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(errno)?;
        Ok(Root { fd, path: path.to_path_buf() })
    }

    /// A root on an fd we already hold (`path` is only used in messages).
    pub fn from_fd(fd: OwnedFd, path: &Path) -> Root {
        Root { fd, path: path.to_path_buf() }
    }

    /// The path this root was opened at, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path` as seen from outside, for messages: `<root>/<path>`.
    pub fn display(&self, path: &Path) -> String {
        let rel = path.strip_prefix("/").unwrap_or(path);
        self.path.join(rel).display().to_string()
    }

    /// Opens `path` inside the root with `flags` (`O_CLOEXEC` is always added; `O_CREAT`
    /// is not allowed here, see [`Root::create_file`]).
    pub fn open_at(&self, path: &Path, flags: OFlag, follow: Follow) -> io::Result<OwnedFd> {
        let mut flags = flags | OFlag::O_CLOEXEC;
        // Only NotLast stops at a final symlink; for Never the kernel must try to resolve
        // it, so that RESOLVE_NO_SYMLINKS refuses it (with O_NOFOLLOW it would hand back
        // the link itself).
        if follow == Follow::NotLast {
            flags |= OFlag::O_NOFOLLOW;
        }
        let resolve = match follow {
            Follow::Never => ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS,
            _ => ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        };
        let rel = relative(path);
        loop {
            match openat2(self.fd.as_fd(), rel, OpenHow::new().flags(flags).resolve(resolve)) {
                Ok(fd) => return Ok(fd),
                // A rename raced the lookup: the kernel asks us to try again.
                Err(Errno::EAGAIN) => continue,
                Err(Errno::ENOSYS) => return self.open_by_walk(path, flags, follow),
                Err(e) => return Err(errno(e)),
            }
        }
    }

    /// `O_PATH` handle on `path` (no access to its contents needed: for mounting, stat).
    pub fn open_path(&self, path: &Path, follow: Follow) -> io::Result<OwnedFd> {
        self.open_at(path, OFlag::O_PATH, follow)
    }

    /// Without openat2 (Linux < 5.6): walk to an `O_PATH` handle, then reopen it through
    /// our own fd table for other flags.
    fn open_by_walk(&self, path: &Path, flags: OFlag, follow: Follow) -> io::Result<OwnedFd> {
        let fd = self.walk(path, follow, None)?;
        if flags.contains(OFlag::O_PATH) {
            return Ok(fd);
        }
        let st = fstat(fd.as_fd()).map_err(errno)?;
        if kind(&st) == SFlag::S_IFLNK {
            return Err(errno(Errno::ELOOP));
        }
        let reopen = flags & !(OFlag::O_NOFOLLOW | OFlag::O_CREAT | OFlag::O_EXCL);
        nix::fcntl::open(Path::new(&crate::mount::fd_path(fd.as_fd())), reopen, Mode::empty()).map_err(errno)
    }

    /// `mkdir -p` inside the root; returns an `O_PATH` handle on the directory.
    pub fn mkdir_all(&self, path: &Path, mode: u32, follow: Follow) -> io::Result<OwnedFd> {
        let follow = if follow == Follow::NotLast { Follow::InRoot } else { follow };
        // Most directories exist: one openat2 instead of a walk.
        match self.open_at(path, OFlag::O_PATH | OFlag::O_DIRECTORY, follow) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(other(format!("{}: exists and is not a directory", self.display(path))))
            }
            Err(e) => return Err(e),
        }
        let fd = self.walk(path, follow, Some(mode))?;
        let st = fstat(fd.as_fd()).map_err(errno)?;
        if kind(&st) != SFlag::S_IFDIR {
            return Err(other(format!("{}: exists and is not a directory", self.display(path))));
        }
        Ok(fd)
    }

    /// The directory that holds `path` (created if missing) and the last component's name,
    /// for calls that make or remove that entry (mknodat, symlinkat, unlinkat, ...).
    pub fn parent(&self, path: &Path, mode: u32, follow: Follow) -> io::Result<(OwnedFd, OsString)> {
        let mut comps = components(path);
        let name = comps.pop_back().ok_or_else(|| other(format!("{}: names the root itself", self.display(path))))?;
        if name == ".." {
            return Err(other(format!("{}: ends in ..", self.display(path))));
        }
        let parent: PathBuf = comps.iter().collect();
        let dir_follow = if follow == Follow::NotLast { Follow::InRoot } else { follow };
        Ok((self.mkdir_all(&parent, mode, dir_follow)?, name))
    }

    /// An empty file at `path` unless something is already there (for bind-mounting a file
    /// on it); its parents are created (0755). Returns an `O_PATH` handle on what is there.
    pub fn create_file(&self, path: &Path, mode: u32, follow: Follow) -> io::Result<OwnedFd> {
        match self.open_path(path, follow) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let (dir, name) = self.parent(path, 0o755, follow)?;
        match openat(
            dir.as_fd(),
            name.as_os_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        ) {
            Ok(_) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(errno(e)),
        }
        openat(dir.as_fd(), name.as_os_str(), OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).map_err(errno)
    }

    /// Reads a regular file inside the root (symlinks resolved inside it), refusing
    /// anything else and anything longer than `limit` bytes. It is looked at through an
    /// `O_PATH` handle first and only opened for reading once it is known to be a regular
    /// file: opening a FIFO would block, a device could have side effects, `/dev/zero` would
    /// never end. Files of the kernel's pseudo filesystems are refused too, though they look
    /// regular: reading `/proc/kmsg` blocks and consumes the host's kernel log, tracefs's
    /// `trace_pipe` blocks, and none of them is a file an image provides.
    pub fn read_file(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", self.display(path)));
        let fd = self.open_path(path, Follow::InRoot)?;
        let st = fstat(fd.as_fd()).map_err(errno)?;
        if kind(&st) != SFlag::S_IFREG {
            return Err(with_path(other("not a regular file")));
        }
        let fs = nix::sys::statfs::fstatfs(fd.as_fd()).map_err(errno)?.filesystem_type();
        if PSEUDO_FS.contains(&fs) {
            return Err(with_path(other("a file of the kernel's procfs, sysfs, debugfs or tracefs, not of the image")));
        }
        let file = crate::procfs::reopen(fd.as_fd(), OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)?;
        read_regular(file, limit).map_err(with_path)
    }

    /// The lookup itself, by our own walk: `create` makes missing directories with that
    /// mode. Returns an `O_PATH` fd.
    fn walk(&self, path: &Path, follow: Follow, create: Option<u32>) -> io::Result<OwnedFd> {
        let mut pending = components(path);
        // The directories we are inside of, below the root: `..` pops one.
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut links = 0;
        let mut retries = 0;
        while let Some(comp) = pending.pop_front() {
            if comp == ".." {
                stack.pop();
                continue;
            }
            let cur: BorrowedFd<'_> = stack.last().map(|f| f.as_fd()).unwrap_or(self.fd.as_fd());
            let last = pending.is_empty();
            let fd = match openat(cur, comp.as_os_str(), OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create.is_some() && retries < MAX_LINKS => {
                    let mode = Mode::from_bits_truncate(create.unwrap_or(0o755));
                    match mkdirat(cur, comp.as_os_str(), mode) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(io::Error::new(errno(e).kind(), format!("mkdir {}: {}", self.display(path), e.desc()))),
                    }
                    // Look it up again: whatever is there now goes through the same checks.
                    retries += 1;
                    pending.push_front(comp);
                    continue;
                }
                Err(e) => return Err(errno(e)),
            };
            let st = fstat(fd.as_fd()).map_err(errno)?;
            match kind(&st) {
                SFlag::S_IFLNK => {
                    if last && follow == Follow::NotLast {
                        return Ok(fd);
                    }
                    // procfs links (`/proc/self/fd/N`, `/proc/1/root`) are magic: their text
                    // names something outside the root, never to be read as a path in it.
                    if follow == Follow::Never || crate::procfs::is_procfs(cur)? {
                        return Err(errno(Errno::ELOOP));
                    }
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(errno(Errno::ELOOP));
                    }
                    let target = readlinkat(fd.as_fd(), "").map_err(errno)?;
                    let target = Path::new(&target);
                    if target.is_absolute() {
                        stack.clear();
                    }
                    for c in components(target).into_iter().rev() {
                        pending.push_front(c);
                    }
                }
                SFlag::S_IFDIR => stack.push(fd),
                _ if last => return Ok(fd),
                _ => return Err(errno(Errno::ENOTDIR)),
            }
        }
        let cur = stack.last().map(|f| f.as_fd()).unwrap_or(self.fd.as_fd());
        openat(cur, ".", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(errno)
    }
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A path as openat2 takes it relative to the root (`.` for the root itself).
fn relative(p: &Path) -> &Path {
    let s = p.as_os_str().as_bytes();
    let trimmed = &s[s.iter().take_while(|b| **b == b'/').count()..];
    if trimmed.is_empty() {
        Path::new(".")
    } else {
        Path::new(OsStr::from_bytes(trimmed))
    }
}

/// Reads all of a regular file, at most `limit` bytes.
pub fn read_regular(fd: OwnedFd, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let st = fstat(fd.as_fd()).map_err(errno)?;
    if kind(&st) != SFlag::S_IFREG {
        return Err(other("not a regular file"));
    }
    let mut f = std::fs::File::from(fd);
    let mut out = Vec::new();
    (&mut f).take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(other(format!("larger than {limit} bytes")));
    }
    Ok(out)
}

/// The path the kernel gives for an fd (for messages and checks; never reopened).
pub fn fd_target(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn setup(name: &str) -> (Dir, Root, PathBuf) {
        let dir = std::env::temp_dir().join(format!("capsa-sys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("outside/secret"), "host").unwrap();
        std::fs::write(root.join("real/sub/file"), "inside").unwrap();
        symlink("/../../../outside", root.join("evil")).unwrap();
        symlink(dir.join("outside"), root.join("abs_host")).unwrap();
        symlink("real", root.join("rel")).unwrap();
        symlink("/real/sub", root.join("abs")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        symlink("/proc/self/root", root.join("magic")).unwrap();
        symlink("/nowhere/deep", root.join("dangling")).unwrap();
        let r = Root::open(&root).unwrap();
        (Dir(dir), r, root)
    }

    fn target(fd: &OwnedFd) -> PathBuf {
        fd_target(fd.as_fd()).unwrap()
    }

    /// Every lookup, by openat2 and by the walk, must give the same answer.
    fn both(r: &Root, p: &str, follow: Follow) -> io::Result<PathBuf> {
        let a = r.open_path(Path::new(p), follow).map(|f| target(&f));
        let b = r.walk(Path::new(p), follow, None).map(|f| target(&f));
        match (&a, &b) {
            (Ok(x), Ok(y)) => assert_eq!(x, y, "{p}"),
            (Err(x), Err(y)) => assert_eq!(x.raw_os_error(), y.raw_os_error(), "{p}: {x} vs {y}"),
            _ => panic!("{p}: openat2 {a:?} vs walk {b:?}"),
        }
        a
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let (_d, r, root) = setup("resolve");
        assert_eq!(both(&r, "/evil", Follow::InRoot).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert_eq!(both(&r, "/abs_host/secret", Follow::InRoot).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert_eq!(both(&r, "/rel/sub/file", Follow::InRoot).unwrap(), root.join("real/sub/file"));
        assert_eq!(both(&r, "abs/file", Follow::InRoot).unwrap(), root.join("real/sub/file"));
        assert_eq!(both(&r, "/../../real/../../real/sub", Follow::InRoot).unwrap(), root.join("real/sub"));
        assert_eq!(both(&r, "/", Follow::InRoot).unwrap(), root);
        assert_eq!(both(&r, "/loop", Follow::InRoot).unwrap_err().raw_os_error(), Some(libc::ELOOP));
        // /proc/self/root inside the root is just a path that does not exist there.
        assert_eq!(both(&r, "/magic", Follow::InRoot).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        // Not following the last component gives the link itself.
        assert_eq!(both(&r, "/rel", Follow::NotLast).unwrap(), root.join("rel"));
        assert_eq!(both(&r, "/rel/sub", Follow::NotLast).unwrap(), root.join("real/sub"));
        // Never: any symlink on the way is an error.
        assert_eq!(both(&r, "/rel/sub", Follow::Never).unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(both(&r, "/real/sub", Follow::Never).unwrap(), root.join("real/sub"));
        assert_eq!(both(&r, "/rel", Follow::Never).unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(both(&r, "/dangling", Follow::Never).unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert!(r.create_file(Path::new("/rel"), 0o644, Follow::Never).is_err());
        assert_eq!(both(&r, "/real/sub/file/x", Follow::InRoot).unwrap_err().raw_os_error(), Some(libc::ENOTDIR));
    }

    #[test]
    fn creating_stays_inside() {
        let (d, r, root) = setup("create");
        let fd = r.mkdir_all(Path::new("/evil/made"), 0o755, Follow::InRoot).unwrap();
        assert_eq!(target(&fd), root.join("outside/made"));
        assert!(!d.0.join("outside/made").exists());
        let fd = r.mkdir_all(Path::new("/dangling/x"), 0o700, Follow::InRoot).unwrap();
        assert_eq!(target(&fd), root.join("nowhere/deep/x"));
        assert!(r.mkdir_all(Path::new("/rel/new"), 0o755, Follow::Never).is_err());
        assert!(!root.join("real/new").exists());
        assert!(r.mkdir_all(Path::new("/real/sub/file/x"), 0o755, Follow::InRoot).is_err());
        let f = r.create_file(Path::new("/abs_host/secret"), 0o644, Follow::InRoot).unwrap();
        assert_eq!(target(&f), root.join(d.0.join("outside/secret").strip_prefix("/").unwrap()));
        assert_eq!(std::fs::read_to_string(d.0.join("outside/secret")).unwrap(), "host");
        let (dir, name) = r.parent(Path::new("/evil/x/y"), 0o755, Follow::InRoot).unwrap();
        assert_eq!(target(&dir), root.join("outside/x"));
        assert_eq!(name, "y");
        assert!(r.parent(Path::new("/"), 0o755, Follow::InRoot).is_err());
    }

    #[test]
    fn procfs_magic_links_are_never_read_as_paths() {
        let (d, _r, _root) = setup("magic");
        let host = Root::open(Path::new("/")).unwrap();
        let dir = nix::fcntl::open(&d.0, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let link = format!("/proc/self/fd/{}/made", dir.as_raw_fd());
        let before: Vec<_> = std::fs::read_dir(&d.0).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(host.mkdir_all(Path::new(&link), 0o755, Follow::InRoot).unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(host.open_path(Path::new(&link), Follow::InRoot).unwrap_err().raw_os_error(), Some(libc::ELOOP));
        let after: Vec<_> = std::fs::read_dir(&d.0).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(before, after);
        assert!(!Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join("made").exists());
    }

    #[test]
    fn reading_refuses_what_is_not_a_regular_file() {
        let (_d, r, root) = setup("read");
        assert_eq!(r.read_file(Path::new("/rel/sub/file"), 100).unwrap(), b"inside");
        assert!(r.read_file(Path::new("/rel/sub/file"), 3).unwrap_err().to_string().contains("larger than 3 bytes"));
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        // Must not block: opened O_NONBLOCK and refused as not a regular file.
        assert!(r.read_file(Path::new("/fifo"), 100).unwrap_err().to_string().contains("not a regular file"));
        symlink("/dev/zero", root.join("zero")).unwrap();
        assert!(r.read_file(Path::new("/zero"), 100).is_err());
        assert!(r.read_file(Path::new("/real"), 100).is_err());
        // Regular to stat, but procfs: /proc/kmsg would block and eat the host's kernel log.
        let host = Root::open(Path::new("/")).unwrap();
        assert!(host.read_file(Path::new("/proc/self/status"), 1 << 20).unwrap_err().to_string().contains("procfs"));
        assert!(host.read_file(Path::new("/sys/kernel/uevent_seqnum"), 1 << 20).is_err());
    }
}

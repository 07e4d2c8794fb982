//! tmpfs mounts as runc makes them:
//!
//! * `tmpcopyup` (podman `--tmpfs`, `--read-only`, `--mount type=tmpfs`): the new tmpfs
//!   starts with a copy of what the image has at the destination. The tmpfs is made
//!   detached (fsopen), filled from the destination directory's fd, and only then attached,
//!   so no temporary directory on the host is involved;
//! * a tmpfs mounted on an existing directory takes that directory's mode (which is why
//!   runc's /sys/fs/cgroup is 0555: sysfs's mount point is);
//! * a read-only tmpfs is mounted writable and made read-only at the end, so devices and
//!   copies can be made in it first.
//!
//! The copy reads the image, which is the attacker: every entry is opened relative to its
//! directory's fd with `O_NOFOLLOW`, symlinks are copied as symlinks, special files are made
//! with mknodat, and nothing is read from a file that is not regular.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use capsa_sys::mount;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, mknodat, utimensat, FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, symlinkat, Gid, Uid};

use crate::error::{Context, Error, Result};

/// How deep a copied tree may go (a loop of bind mounts must not recurse for ever).
const MAX_DEPTH: usize = 256;

/// tmpfs `data` (`mode=755,size=64k,noswap`) as fsconfig key/value pairs.
pub fn options(data: &str) -> Vec<(&str, Option<&str>)> {
    data.split(',').filter(|o| !o.is_empty()).map(|o| o.split_once('=').map_or((o, None), |(k, v)| (k, Some(v)))).collect()
}

/// A new, detached tmpfs holding a copy of the directory `src` (an `O_PATH` fd), with
/// per-mount attributes `attrs`; attach it with [`mount::attach`].
pub fn copy_up(src: BorrowedFd<'_>, source: &str, data: &str, attrs: u64) -> Result<OwnedFd> {
    let mut opts = options(data);
    opts.insert(0, ("source", Some(source)));
    // Written first, made read-only after the copy.
    let tree = mount::new_fs("tmpfs", &opts, attrs & !mount::MOUNT_ATTR_RDONLY).ctx("tmpcopyup: make tmpfs")?;
    let from = openat(src, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).ctx("tmpcopyup: open")?;
    let to = openat(tree.as_fd(), ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).ctx("tmpcopyup")?;
    copy_dir(from, to.as_fd(), 0)?;
    let st = fstat(src).ctx("tmpcopyup: stat")?;
    fchmod(to.as_fd(), Mode::from_bits_truncate(st.st_mode & 0o7777)).ctx("tmpcopyup: chmod")?;
    if attrs & mount::MOUNT_ATTR_RDONLY != 0 {
        mount::set_attr(tree.as_fd(), mount::Attr { set: mount::MOUNT_ATTR_RDONLY, ..Default::default() })
            .ctx("tmpcopyup: make read-only")?;
    }
    Ok(tree)
}

/// Copies every entry of `from` (a readable directory fd) into `to`.
fn copy_dir(from: OwnedFd, to: BorrowedFd<'_>, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::new(format!("tmpcopyup: directories nested deeper than {MAX_DEPTH}")));
    }
    let mut dir = Dir::from_fd(from).ctx("tmpcopyup: read directory")?;
    let src = dir.as_fd().try_clone_to_owned().ctx("tmpcopyup: dup")?;
    for entry in dir.iter() {
        let entry = entry.ctx("tmpcopyup: read directory")?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name.to_bytes());
        copy_entry(src.as_fd(), to, name, depth).with_ctx(|| format!("tmpcopyup: {}", name.to_string_lossy()))?;
    }
    Ok(())
}

fn copy_entry(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, name: &OsStr, depth: usize) -> Result<()> {
    let st = fstatat(src, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let kind = capsa_sys::root::kind(&st);
    let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
    match kind {
        SFlag::S_IFDIR => {
            mkdirat(dst, name, Mode::from_bits_truncate(0o700))?;
            let from = openat(src, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
            let to = openat(dst, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
            copy_dir(from, to.as_fd(), depth + 1)?;
        }
        SFlag::S_IFREG => {
            let from = openat(src, name, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty())?;
            // Swapped for something else since fstatat: copy nothing from it.
            let now = fstat(from.as_fd())?;
            if capsa_sys::root::kind(&now) != SFlag::S_IFREG {
                return Err(Error::new("changed while being copied"));
            }
            let to =
                openat(dst, name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC, Mode::from_bits_truncate(0o600))?;
            copy_sparse(&std::fs::File::from(from), &std::fs::File::from(to), now.st_size.max(0) as u64).ctx("copy")?;
        }
        SFlag::S_IFLNK => {
            let target = readlinkat(src, name)?;
            symlinkat(target.as_os_str(), dst, name)?;
        }
        SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
            mknodat(dst, name, kind, mode, st.st_rdev)?;
        }
        // Sockets are bound to what listens on them: nothing to copy.
        _ => return Ok(()),
    }
    finish(dst, name, &st, kind == SFlag::S_IFLNK)
}

/// Copies the data of a regular file of `size` bytes and leaves its holes as holes: a sparse
/// file costs the tmpfs (memory) only what it really holds. Written out, a 1 TB sparse file
/// from a small image (`/var/log/lastlog` after `useradd -u 2000000000`) filled the tmpfs
/// (half the host's RAM by default) with zeros, or failed with ENOSPC.
fn copy_sparse(from: &std::fs::File, to: &std::fs::File, size: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let end = i64::try_from(size).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    let mut buf = vec![0u8; 128 << 10];
    let mut pos: i64 = 0;
    while pos < end {
        let data = match nix::unistd::lseek(from, pos, nix::unistd::Whence::SeekData) {
            Ok(d) => d,
            // Nothing but a hole up to the end.
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = nix::unistd::lseek(from, data, nix::unistd::Whence::SeekHole).map_err(std::io::Error::from)?.min(end);
        let mut at = data;
        while at < hole {
            let want = usize::try_from(hole - at).unwrap_or(usize::MAX).min(buf.len());
            let n = from.read_at(&mut buf[..want], at as u64)?;
            if n == 0 {
                // Shrunk while being copied: what is left reads as a hole.
                break;
            }
            to.write_all_at(&buf[..n], at as u64)?;
            at += n as i64;
        }
        pos = hole.max(at);
    }
    to.set_len(size)
}

/// Owner, then mode (chown clears set-id bits), then times.
fn finish(dst: BorrowedFd<'_>, name: &OsStr, st: &FileStat, is_link: bool) -> Result<()> {
    match fchownat(dst, name, Some(Uid::from_raw(st.st_uid)), Some(Gid::from_raw(st.st_gid)), AtFlags::AT_SYMLINK_NOFOLLOW) {
        // An owner not mapped in a user namespace: keep ours, as runc's copy does.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::EPERM) => {}
        Err(e) => return Err(Error::from(e).context("chown")),
    }
    if !is_link {
        nix::sys::stat::fchmodat(dst, name, Mode::from_bits_truncate(st.st_mode & 0o7777), nix::sys::stat::FchmodatFlags::FollowSymlink)
            .ctx("chmod")?;
    }
    let atime = TimeSpec::new(st.st_atime, st.st_atime_nsec);
    let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
    utimensat(dst, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink).ctx("set times")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn tmpfs_options() {
        assert_eq!(options("mode=755,size=64k,noswap"), vec![("mode", Some("755")), ("size", Some("64k")), ("noswap", None)]);
        assert!(options("").is_empty());
    }

    #[test]
    fn copy_up_keeps_the_tree_and_follows_nothing() {
        let dir = std::env::temp_dir().join(format!("capsa-copyup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src/sub")).unwrap();
        std::fs::write(dir.join("src/sub/f"), "data").unwrap();
        // 1 TiB of hole, then a few bytes: far more than the tmpfs (or this host) holds.
        let sparse = std::fs::File::create(dir.join("src/sparse")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&sparse, b"tail\n", 1 << 40).unwrap();
        std::fs::set_permissions(dir.join("src/sub/f"), std::fs::Permissions::from_mode(0o4751)).unwrap();
        symlink("/etc/shadow", dir.join("src/link")).unwrap();
        nix::unistd::mkfifo(&dir.join("src/fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::set_permissions(dir.join("src"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let src = nix::fcntl::open(&dir.join("src"), OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let tree = copy_up(src.as_fd(), "tmpfs", "mode=755,size=16m", mount::MOUNT_ATTR_RDONLY).unwrap();
        let root = openat(tree.as_fd(), ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        assert_eq!(fstat(root.as_fd()).unwrap().st_mode & 0o7777, 0o1777);
        let f = fstatat(root.as_fd(), "sub/f", AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
        assert_eq!(f.st_mode & 0o7777, 0o4751);
        assert_eq!(f.st_size, 4);
        let sparse = fstatat(root.as_fd(), "sparse", AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
        assert_eq!(sparse.st_size, (1 << 40) + 5);
        assert!(sparse.st_blocks < 64, "the holes of a sparse file were written out: {} blocks", sparse.st_blocks);
        let mut tail = [0u8; 5];
        let f = openat(root.as_fd(), "sparse", OFlag::O_RDONLY, Mode::empty()).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::from(f), &mut tail, 1 << 40).unwrap();
        assert_eq!(&tail, b"tail\n");
        assert_eq!(readlinkat(root.as_fd(), "link").unwrap(), "/etc/shadow");
        assert_eq!(capsa_sys::root::kind(&fstatat(root.as_fd(), "fifo", AtFlags::AT_SYMLINK_NOFOLLOW).unwrap()), SFlag::S_IFIFO);
        // Read-only once copied.
        let e = openat(root.as_fd(), "new", OFlag::O_CREAT | OFlag::O_WRONLY, Mode::from_bits_truncate(0o600)).unwrap_err();
        assert_eq!(e, Errno::EROFS);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

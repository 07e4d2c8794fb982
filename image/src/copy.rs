//! The rootfs fallback where overlayfs cannot be mounted: the snapshots (in overlay form)
//! are merged, bottom layer first, into a plain directory. A 0:0 character device removes
//! what the lower layers had at that name; a `trusted.overlay.opaque=y` directory replaces
//! the lower directory instead of merging with it. Destination paths are resolved inside
//! the rootfs by `capsa_sys::Root`; the sources (the store's snapshots, whose symlinks are
//! image content) are walked by directory fd, never by joined paths.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use capsa_sys::{Follow, Root};
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};

use crate::layer::remove_all_at;

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

pub fn merge_layers(layers: &[PathBuf], dest: &Path) -> io::Result<()> {
    let root = Root::open(dest)?;
    for l in layers {
        let src = open_dir_at(None, l.as_os_str())?;
        merge_dir(&src, Path::new(""), &root)?;
    }
    Ok(())
}

/// Opens a directory of a snapshot without following a symlink at its last component
/// (`at`: relative to that directory, else the path as given).
fn open_dir_at(at: Option<&OwnedFd>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match at {
        Some(dir) => openat(dir.as_fd(), name, flags, Mode::empty()),
        None => nix::fcntl::open(name, flags, Mode::empty()),
    }
    .map_err(errno)
}

fn is_opaque(dir: &OwnedFd) -> bool {
    let mut buf = [0u8; 4];
    // SAFETY: fgetxattr writes at most buf.len() bytes into buf.
    let n = unsafe { libc::fgetxattr(dir.as_raw_fd(), c"trusted.overlay.opaque".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n == 1 && buf[0] == b'y'
}

/// The entry names of an open directory, without "." and "..".
fn entries(dir: &OwnedFd) -> io::Result<Vec<std::ffi::OsString>> {
    let mut d =
        nix::dir::Dir::openat(dir.as_fd(), ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(errno)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let name = e.map_err(errno)?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(std::ffi::OsString::from_vec(name));
        }
    }
    Ok(names)
}

/// Merges the snapshot directory `src` (at `rel` in the rootfs) into the rootfs. Every
/// source entry is reached through its directory's fd, never by a path: a snapshot's
/// symlinks are image content and are never followed.
fn merge_dir(src: &OwnedFd, rel: &Path, root: &Root) -> io::Result<()> {
    for name in entries(src)? {
        let r = rel.join(&name);
        let m = fstatat(src.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
        let kind = SFlag::from_bits_truncate(m.st_mode & SFlag::S_IFMT.bits());
        let (uid, gid, mode) = (Uid::from_raw(m.st_uid), Gid::from_raw(m.st_gid), Mode::from_bits_truncate(m.st_mode & 0o7777));
        let (dir, _) = root.parent(&r, 0o755, Follow::InRoot)?;
        let times = TimeSpec::new(m.st_mtime, m.st_mtime_nsec);
        let existing = fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok();
        let existing_dir = existing.is_some_and(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR);
        if kind == SFlag::S_IFCHR && m.st_rdev == 0 {
            remove_all_at(dir.as_fd(), &name)?;
            continue;
        }
        if kind == SFlag::S_IFDIR {
            let sub = open_dir_at(Some(src), &name)?;
            if existing.is_some() && (!existing_dir || is_opaque(&sub)) {
                remove_all_at(dir.as_fd(), &name)?;
            }
            match mkdirat(dir.as_fd(), name.as_os_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(errno(e)),
            }
            let fd = open_dir_at(Some(&dir), &name)?;
            nix::unistd::fchown(fd.as_fd(), Some(uid), Some(gid)).map_err(errno)?;
            nix::sys::stat::fchmod(fd.as_fd(), mode).map_err(errno)?;
            merge_dir(&sub, &r, root)?;
            nix::sys::stat::futimens(fd.as_fd(), &times, &times).map_err(errno)?;
            continue;
        }
        if existing.is_some() {
            remove_all_at(dir.as_fd(), &name)?;
        }
        if kind == SFlag::S_IFREG {
            let from = openat(src.as_fd(), name.as_os_str(), OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(errno)?;
            let fd = openat(
                dir.as_fd(),
                name.as_os_str(),
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(errno)?;
            let mut out = File::from(fd);
            io::copy(&mut File::from(from), &mut out)?;
            nix::unistd::fchown(out.as_fd(), Some(uid), Some(gid)).map_err(errno)?;
            nix::sys::stat::fchmod(out.as_fd(), mode).map_err(errno)?;
            nix::sys::stat::futimens(out.as_fd(), &times, &times).map_err(errno)?;
            continue;
        }
        if kind == SFlag::S_IFLNK {
            let target = nix::fcntl::readlinkat(src.as_fd(), name.as_os_str()).map_err(errno)?;
            nix::unistd::symlinkat(target.as_os_str(), dir.as_fd(), name.as_os_str()).map_err(errno)?;
        } else if kind == SFlag::S_IFCHR || kind == SFlag::S_IFBLK || kind == SFlag::S_IFIFO {
            mknodat(dir.as_fd(), name.as_os_str(), kind, mode, m.st_rdev).map_err(errno)?;
        } else {
            continue; // sockets are not part of an image
        }
        fchownat(dir.as_fd(), name.as_os_str(), Some(uid), Some(gid), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
        utimensat(dir.as_fd(), name.as_os_str(), &times, &times, UtimensatFlags::NoFollowSymlink).map_err(errno)?;
    }
    Ok(())
}

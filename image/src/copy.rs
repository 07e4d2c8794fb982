//! The rootfs fallback where overlayfs cannot be mounted: the snapshots (in overlay form)
//! are merged, bottom layer first, into a plain directory. A 0:0 character device removes
//! what the lower layers had at that name; a `trusted.overlay.opaque=y` directory replaces
//! the lower directory instead of merging with it. Destination paths are resolved inside
//! the rootfs by `capsa_sys::Root`; the sources are the store's own snapshots.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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
        merge_dir(l, Path::new(""), &root)?;
    }
    Ok(())
}

fn is_opaque(p: &Path) -> bool {
    let Ok(f) = File::open(p) else { return false };
    let mut buf = [0u8; 4];
    // SAFETY: fgetxattr writes at most buf.len() bytes into buf.
    let n = unsafe { libc::fgetxattr(f.as_raw_fd(), c"trusted.overlay.opaque".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n == 1 && buf[0] == b'y'
}

fn merge_dir(base: &Path, rel: &Path, root: &Root) -> io::Result<()> {
    for e in std::fs::read_dir(base.join(rel))? {
        let e = e?;
        let name = e.file_name();
        let r = rel.join(&name);
        let src = base.join(&r);
        let m = std::fs::symlink_metadata(&src)?;
        let ft = m.file_type();
        let (dir, _) = root.parent(&r, 0o755, Follow::InRoot)?;
        let times = TimeSpec::new(m.mtime(), m.mtime_nsec());
        let existing = fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok();
        let existing_dir = existing.is_some_and(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR);
        if ft.is_char_device() && m.rdev() == 0 {
            remove_all_at(dir.as_fd(), &name)?;
            continue;
        }
        if ft.is_dir() {
            if existing.is_some() && (!existing_dir || is_opaque(&src)) {
                remove_all_at(dir.as_fd(), &name)?;
            }
            match mkdirat(dir.as_fd(), name.as_os_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(errno(e)),
            }
            let fd = openat(
                dir.as_fd(),
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno)?;
            nix::unistd::fchown(fd.as_fd(), Some(Uid::from_raw(m.uid())), Some(Gid::from_raw(m.gid()))).map_err(errno)?;
            nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(m.mode() & 0o7777)).map_err(errno)?;
            merge_dir(base, &r, root)?;
            nix::sys::stat::futimens(fd.as_fd(), &times, &times).map_err(errno)?;
            continue;
        }
        if existing.is_some() {
            remove_all_at(dir.as_fd(), &name)?;
        }
        if ft.is_file() {
            let fd = openat(
                dir.as_fd(),
                name.as_os_str(),
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(errno)?;
            let mut out = File::from(fd);
            io::copy(&mut File::open(&src)?, &mut out)?;
            nix::unistd::fchown(out.as_fd(), Some(Uid::from_raw(m.uid())), Some(Gid::from_raw(m.gid()))).map_err(errno)?;
            nix::sys::stat::fchmod(out.as_fd(), Mode::from_bits_truncate(m.mode() & 0o7777)).map_err(errno)?;
            nix::sys::stat::futimens(out.as_fd(), &times, &times).map_err(errno)?;
            continue;
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(&src)?;
            nix::unistd::symlinkat(OsStr::from_bytes(target.as_os_str().as_bytes()), dir.as_fd(), name.as_os_str()).map_err(errno)?;
        } else {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else {
                continue; // sockets are not part of an image
            };
            mknodat(dir.as_fd(), name.as_os_str(), kind, Mode::from_bits_truncate(m.mode() & 0o7777), m.rdev()).map_err(errno)?;
        }
        fchownat(dir.as_fd(), name.as_os_str(), Some(Uid::from_raw(m.uid())), Some(Gid::from_raw(m.gid())), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(errno)?;
        utimensat(dir.as_fd(), name.as_os_str(), &times, &times, UtimensatFlags::NoFollowSymlink).map_err(errno)?;
    }
    Ok(())
}

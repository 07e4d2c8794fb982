//! The new mount API on file descriptors: a mount made here lands on the directory an fd
//! names, never on whatever a path happens to resolve to by then.
//!
//! * [`clone_tree`]: a detached copy of the mount at an fd (`open_tree(OPEN_TREE_CLONE)`);
//! * [`attach`]: put a detached mount on a target fd (`move_mount`);
//! * [`set_attr`]: change per-mount flags and propagation (`mount_setattr`), optionally
//!   recursively, without a path and without `MS_REMOUNT`;
//! * [`new_fs`]: a fresh filesystem instance, detached (`fsopen` + `fsconfig` + `fsmount`);
//! * [`fd_path`]: `/proc/self/fd/N` for the classic mount(2), which needs a path.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_ATIME: u64 = 0x70;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

const OPEN_TREE_CLONE: u32 = 1;
const AT_RECURSIVE: u32 = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
const FSOPEN_CLOEXEC: u32 = 1;
const FSMOUNT_CLOEXEC: u32 = 1;
const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Turns a syscall's fd result into an [`OwnedFd`].
fn owned(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(r).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `/proc/self/fd/N` of `fd`, for calls that only take a path (mount(2)). Only meaningful
/// while `/proc` is the host's procfs (before pivot_root).
pub fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// A detached copy of the mount (and with `recursive`, the mounts below it) at the file
/// or directory `fd` names: a bind mount not yet attached anywhere.
pub fn clone_tree(fd: BorrowedFd<'_>, recursive: bool) -> io::Result<OwnedFd> {
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32 | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: open_tree reads an empty NUL-terminated path; fd is live for the call.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) })
}

/// A detached copy of the mount at `path` (resolved normally, from our cwd and root).
pub fn clone_tree_at(path: &str, recursive: bool) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: open_tree reads a NUL-terminated path that lives for the call.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) })
}

/// Attaches the detached mount `tree` on the file or directory `target` names.
pub fn attach(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: move_mount reads two empty NUL-terminated paths; both fds are live.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
}

/// What [`set_attr`] changes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attr {
    pub set: u64,
    pub clear: u64,
    /// `MS_SHARED`, `MS_SLAVE`, `MS_PRIVATE` or `MS_UNBINDABLE` (one of them), or 0.
    pub propagation: u64,
    pub recursive: bool,
}

/// mount_setattr on the mount `fd` names (its root or any file in it).
pub fn set_attr(fd: BorrowedFd<'_>, a: Attr) -> io::Result<()> {
    set_attr_raw(fd.as_raw_fd(), "", libc::AT_EMPTY_PATH as u32, a, None)
}

/// mount_setattr on `path` (absolute, or relative to our cwd).
pub fn set_attr_at(path: &str, a: Attr) -> io::Result<()> {
    set_attr_raw(libc::AT_FDCWD, path, 0, a, None)
}

/// Marks the detached tree `fd` idmapped with the user namespace `userns` (plus `set`).
pub fn set_idmap(fd: BorrowedFd<'_>, userns: BorrowedFd<'_>, set: u64, recursive: bool) -> io::Result<()> {
    let a = Attr { set: MOUNT_ATTR_IDMAP | set, clear: 0, propagation: 0, recursive };
    set_attr_raw(fd.as_raw_fd(), "", libc::AT_EMPTY_PATH as u32, a, Some(userns.as_raw_fd()))
}

fn set_attr_raw(dirfd: i32, path: &str, flags: u32, a: Attr, userns: Option<i32>) -> io::Result<()> {
    let attr = MountAttr { attr_set: a.set, attr_clr: a.clear, propagation: a.propagation, userns_fd: userns.unwrap_or(0) as u64 };
    let c = cstr(path)?;
    let flags = flags | if a.recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr reads a NUL-terminated path and `attr` of the size given.
    check(unsafe {
        libc::syscall(libc::SYS_mount_setattr, dirfd, c.as_ptr(), flags, &attr as *const MountAttr, std::mem::size_of::<MountAttr>())
    })
}

/// A new, detached instance of filesystem `fstype` (`tmpfs`, `proc`, ...) configured with
/// `options` (`("mode", Some("755"))`, `("ro", None)` for a flag) and mounted with the
/// `MOUNT_ATTR_*` bits `attrs`. Attach it with [`attach`].
pub fn new_fs(fstype: &str, options: &[(&str, Option<&str>)], attrs: u64) -> io::Result<OwnedFd> {
    let t = cstr(fstype)?;
    // SAFETY: fsopen reads a NUL-terminated name that lives for the call.
    let fs = owned(unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), FSOPEN_CLOEXEC) })?;
    for (k, v) in options {
        let key = cstr(k)?;
        let r = match v {
            Some(v) => {
                let val = cstr(v)?;
                // SAFETY: fsconfig reads two NUL-terminated strings that live for the call.
                unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), FSCONFIG_SET_STRING, key.as_ptr(), val.as_ptr(), 0) }
            }
            // SAFETY: fsconfig reads a NUL-terminated key; value must be NULL for a flag.
            None => unsafe {
                libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), FSCONFIG_SET_FLAG, key.as_ptr(), std::ptr::null::<u8>(), 0)
            },
        };
        check(r)?;
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    check(unsafe {
        libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), FSCONFIG_CMD_CREATE, std::ptr::null::<u8>(), std::ptr::null::<u8>(), 0)
    })?;
    // SAFETY: fsmount with a live fs context fd and integer flags.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn detached_tmpfs_is_readonly_and_gone_with_its_fd() {
        if !is_root() {
            panic!("needs root (mount API)");
        }
        let fs = new_fs("tmpfs", &[("mode", Some("700"))], MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID).unwrap();
        let st = nix::sys::statvfs::fstatvfs(fs.as_fd()).unwrap();
        assert!(st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
        let r =
            nix::fcntl::openat(fs.as_fd(), "x", nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY, nix::sys::stat::Mode::empty());
        assert_eq!(r.err(), Some(nix::errno::Errno::EROFS));
        assert!(new_fs("no-such-fs", &[], 0).is_err());
        assert!(new_fs("tmpfs", &[("no-such-option", Some("1"))], 0).is_err());
    }
}

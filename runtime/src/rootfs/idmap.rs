//! Mount attributes through the new mount API: recursive flags (`rro`, `rnosuid`, …) with
//! mount_setattr(AT_RECURSIVE), and idmapped mounts (`idmap`/`ridmap` with the mount's
//! uidMappings/gidMappings) made in the parent, where capsa has the host's privileges
//! over the filesystem, and attached by init with move_mount.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe, ForkResult};

use crate::error::{Context, Error, Result};

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

pub(crate) const OPEN_TREE_CLONE: u32 = 1;
const AT_RECURSIVE: u32 = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstr(p: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(p).map_err(|_| Error::new("path contains NUL"))
}

/// mount_setattr on `dirfd`/`path`.
pub(crate) fn setattr(dirfd: i32, path: &str, flags: u32, set: u64, clr: u64, userns: Option<i32>) -> Result<()> {
    let attr = MountAttr { attr_set: set, attr_clr: clr, propagation: 0, userns_fd: userns.unwrap_or(0) as u64 };
    let c = cstr(path)?;
    // SAFETY: mount_setattr reads a NUL-terminated path and `attr` of the size given.
    let r = unsafe {
        libc::syscall(libc::SYS_mount_setattr, dirfd, c.as_ptr(), flags, &attr as *const MountAttr, std::mem::size_of::<MountAttr>())
    };
    if r != 0 {
        return Err(Error::from(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Sets and clears mount attributes on the mount at `target` and every mount below it.
pub fn set_recursive(target: &str, set: u64, clr: u64) -> Result<()> {
    setattr(libc::AT_FDCWD, target, AT_RECURSIVE, set, clr, None).ctx("mount_setattr")
}

/// A user namespace with these maps (for MOUNT_ATTR_IDMAP): a child unshares it and
/// waits while we write its maps and keep a handle on the namespace.
pub fn userns_with_maps(uid_map: &str, gid_map: &str) -> Result<OwnedFd> {
    let (ready_r, ready_w) = pipe().ctx("pipe")?;
    let (done_r, done_w) = pipe().ctx("pipe")?;
    // SAFETY: capsa is single-threaded; the child only makes system calls and _exits.
    match unsafe { fork() }.ctx("fork")? {
        ForkResult::Child => {
            drop(ready_r);
            drop(done_w);
            let ok = unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_w, if ok { b"1" } else { b"0" });
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&done_r, &mut b);
            // SAFETY: leave without running the parent's atexit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(done_r);
            let mut b = [0u8; 1];
            let r = nix::unistd::read(&ready_r, &mut b);
            let result = (|| {
                if !matches!(r, Ok(1)) || b[0] != b'1' {
                    return Err(Error::new("create a user namespace for the id mapping"));
                }
                std::fs::write(format!("/proc/{child}/uid_map"), uid_map).with_ctx(|| format!("uidMappings {uid_map:?}"))?;
                std::fs::write(format!("/proc/{child}/setgroups"), "deny").ctx("setgroups")?;
                std::fs::write(format!("/proc/{child}/gid_map"), gid_map).with_ctx(|| format!("gidMappings {gid_map:?}"))?;
                let f = std::fs::File::open(format!("/proc/{child}/ns/user")).ctx("open user namespace")?;
                Ok(OwnedFd::from(f))
            })();
            drop(done_w);
            let _ = waitpid(child, None);
            result
        }
    }
}

/// A detached copy of `source` (recursive for rbind) with the id mapping of `userns`
/// (recursive for ridmap) and the per-mount `set` attributes.
pub fn idmapped_tree(source: &Path, rbind: bool, ridmap: bool, userns: BorrowedFd<'_>, set: u64) -> Result<OwnedFd> {
    let src = cstr(&source.to_string_lossy())?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | if rbind { AT_RECURSIVE } else { 0 };
    // SAFETY: open_tree reads a NUL-terminated path; on success returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, src.as_ptr(), flags) };
    if fd < 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context(format!("open_tree {}", source.display())));
    }
    // SAFETY: fd was just returned by the kernel and nobody else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let at = libc::AT_EMPTY_PATH as u32 | if ridmap { AT_RECURSIVE } else { 0 };
    setattr(tree.as_raw_fd(), "", at, MOUNT_ATTR_IDMAP | set, 0, Some(userns.as_raw_fd()))
        .map_err(|e| e.context(format!("idmap {} (does its filesystem support idmapped mounts?)", source.display())))?;
    Ok(tree)
}

/// Attaches a detached mount (from [`idmapped_tree`]) on the directory `target` (an fd:
/// move_mount does not follow a /proc/self/fd magic link in a path).
pub fn attach(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<()> {
    let empty = cstr("")?;
    // SAFETY: move_mount reads two empty NUL-terminated paths; both fds are live.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context("move_mount"));
    }
    Ok(())
}

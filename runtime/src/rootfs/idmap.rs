//! Idmapped mounts (`idmap`/`ridmap` with the mount's uidMappings/gidMappings), made in the
//! parent, where capsa has the host's privileges over the filesystem, and attached by init
//! with move_mount (capsa-sys's mount API).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use capsa_sys::mount;

use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{pipe, ForkResult};

use crate::error::{Context, Error, Result};

/// A user namespace with these maps (for MOUNT_ATTR_IDMAP): a child unshares it and
/// waits while we write its maps and keep a handle on the namespace.
pub fn userns_with_maps(uid_map: &str, gid_map: &str) -> Result<OwnedFd> {
    let (ready_r, ready_w) = pipe().ctx("pipe")?;
    let (done_r, done_w) = pipe().ctx("pipe")?;
    match crate::process::fds::fork()? {
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

/// A detached copy of `source` (recursive with `MS_REC`) with the per-mount flags of
/// `flags` set, a slave of its source (as a bind made in init's rslave namespace would be),
/// for a container with a user namespace.
pub fn bind_tree(source: &Path, flags: nix::mount::MsFlags) -> Result<OwnedFd> {
    let src = source.to_str().ok_or_else(|| Error::new(format!("{}: not UTF-8", source.display())))?;
    let rec = flags.contains(nix::mount::MsFlags::MS_REC);
    let tree = mount::clone_tree_at(src, rec).with_ctx(|| format!("bind source {}", source.display()))?;
    let (set, clear) = super::mounts::attr_change(flags & super::mounts::BIND_REMOUNT_FLAGS);
    // Flags on the top mount only, as a remount of a bind has them; propagation on all.
    mount::set_attr(tree.as_fd(), mount::Attr { set, clear, propagation: 0, recursive: false })
        .with_ctx(|| format!("bind source {}: mount flags", source.display()))?;
    let propagation = nix::mount::MsFlags::MS_SLAVE.bits();
    mount::set_attr(tree.as_fd(), mount::Attr { set: 0, clear: 0, propagation, recursive: true })
        .with_ctx(|| format!("bind source {}: make it a slave", source.display()))?;
    Ok(tree)
}

/// A detached copy of `source` (recursive for rbind) with the id mapping of `userns`
/// (recursive for ridmap) and the per-mount `set` attributes.
pub fn idmapped_tree(source: &Path, rbind: bool, ridmap: bool, userns: BorrowedFd<'_>, set: u64) -> Result<OwnedFd> {
    let src = source.to_str().ok_or_else(|| Error::new(format!("{}: not UTF-8", source.display())))?;
    let tree = mount::clone_tree_at(src, rbind).with_ctx(|| format!("open_tree {}", source.display()))?;
    mount::set_idmap(tree.as_fd(), userns, set, ridmap)
        .with_ctx(|| format!("idmap {} (does its filesystem support idmapped mounts?)", source.display()))?;
    Ok(tree)
}

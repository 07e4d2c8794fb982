//! Detached mount trees made by the parent, where capsa has the host's privileges over the
//! filesystem, and attached by init with move_mount: idmapped mounts (`idmap`/`ridmap` with
//! the mount's uidMappings/gidMappings) and the binds of a user-namespaced container.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use capsa_sys::mount;

use crate::error::{Context, Error, Result};

/// A detached copy of `source` (recursive with `MS_REC`) with the per-mount flags of
/// `flags` set, a slave of its source (as a bind made in init's rslave namespace would be),
/// for a container with a user namespace.
pub fn bind_tree(source: &Path, flags: nix::mount::MsFlags) -> Result<OwnedFd> {
    let tree = clone_bind(source, flags)?;
    let propagation = nix::mount::MsFlags::MS_SLAVE.bits();
    mount::set_attr(tree.as_fd(), mount::Attr { set: 0, clear: 0, propagation, recursive: true })
        .with_ctx(|| format!("bind source {}: make it a slave", source.display()))?;
    Ok(tree)
}

/// A detached copy of `source` (recursive with `MS_REC`) with the per-mount flags of
/// `flags` set on its top mount, as a remount of a bind has them; its propagation is what a
/// bind made by mount(2) here would get. Init binds this way, so the flags are set on the
/// mount itself before it is attached, never on whatever the destination resolves to later.
pub fn clone_bind(source: &Path, flags: nix::mount::MsFlags) -> Result<OwnedFd> {
    let src = source.to_str().ok_or_else(|| Error::new(format!("{}: not UTF-8", source.display())))?;
    let rec = flags.contains(nix::mount::MsFlags::MS_REC);
    let tree = mount::clone_tree_at(src, rec).with_ctx(|| format!("bind source {}", source.display()))?;
    let (set, clear) = super::mounts::attr_change(flags & super::mounts::BIND_REMOUNT_FLAGS);
    mount::set_attr(tree.as_fd(), mount::Attr { set, clear, propagation: 0, recursive: false })
        .with_ctx(|| format!("bind source {}: mount flags", source.display()))?;
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

//! capsa-sys: the one low-level layer the rest of the workspace stands on.
//!
//! * [`root`]: opening, creating and reading paths *inside* a directory an attacker
//!   controls (a container's rootfs, an image layer being extracted). Every lookup is made
//!   by the kernel relative to a directory fd (`openat2` with `RESOLVE_IN_ROOT`, or a walk
//!   of our own one component at a time), never by a string joined and reopened.
//! * [`mount`]: the new mount API (`open_tree`, `move_mount`, `mount_setattr`, `fsopen`),
//!   working on file descriptors so that a mount never lands on a path swapped underneath.
//! * [`procfs`]: a handle on procfs that is verified to be procfs and cannot be covered by
//!   a mount the container made, for every write the runtime makes there.
//! * [`mountinfo`]: the one parser of `/proc/PID/mountinfo` in the workspace.
//!
//! Functions return [`std::io::Error`], so the errno survives; callers add what they were
//! doing and which field of the config asked for it.

pub mod mount;
pub mod mountinfo;
pub mod procfs;
pub mod root;

pub use root::{Follow, Root};

/// An `io::Error` that carries its own message (no errno).
pub(crate) fn other(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

//! The processes capsa forks for a container and how they talk to it.
//!
//! * [`plan`]: everything the children need, computed by the parent before fork so the
//!   children do little more than system calls.
//! * [`sync`]: the typed parent ⇄ child protocol, documented as one table.
//! * [`init`]: stage 1 (namespaces) and init (rootfs, process attributes, exec).
//! * [`exec`]: the children of `capsa exec`, joining a running container.
//! * [`exeseal`]: keeps /proc/self/exe of capsa unwritable from a container (CVE-2019-5736).
//! * [`fds`]: the guards around fork: one thread only, preserved fds, nothing else inherited.

pub mod clone;
pub mod exec;
pub mod exeseal;
pub mod fds;
pub mod init;
pub mod plan;
pub mod sync;
pub mod userns;

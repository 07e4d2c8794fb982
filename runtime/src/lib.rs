//! capsa: a runc-compatible OCI container runtime.
//!
//! The library holds the whole container lifecycle; the `capsa` binary only parses the
//! command line, calls one function here and prints. Where things live:
//!
//! * [`container`]: state on disk, the status machine, create/start/kill/delete;
//! * [`process`]: the forked children, the parent ⇄ child protocol, init;
//! * [`rootfs`]: mounts, devices, pivot_root, masked and read-only paths;
//! * [`namespaces`], [`capabilities`], [`rlimits`], [`tty`]: one process attribute each;
//! * [`cgroup`]: `linux.resources` and the container's cgroup via `capsa-cgroups`;
//! * [`config`]: reading and validating config.json.

pub mod capabilities;
pub mod cgroup;
pub mod config;
pub mod container;
pub mod error;
pub mod features;
pub mod hooks;
pub mod namespaces;
pub mod netdev;
pub mod process;
pub mod rlimits;
pub mod rootfs;
pub mod scheduling;
pub mod seccomp;
pub mod spec;
pub mod timefmt;
pub mod tty;
pub mod user;

pub use error::{Error, Result};

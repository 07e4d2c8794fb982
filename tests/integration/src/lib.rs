//! Shared helpers for the end-to-end tests.
//!
//! The suite drives a runc-compatible runtime binary as root and checks what a container sees
//! (it prints `/proc/self/status`, `id`, mountinfo, ...) and what the host sees (cgroup files,
//! mounts, /proc). It is written against the runc CLI contract, so it can be run against runc
//! itself to validate the tests:
//!
//! ```text
//! cargo test -p capsa-integration -- --test-threads 4                          # target/release/capsa
//! CAPSA_BIN=/usr/sbin/runc cargo test -p capsa-integration -- --test-threads 4 # reference run
//! ```
//!
//! Every test owns a [`Container`]: a unique id, its own `--root` state directory and bundle under
//! `/tmp/capsa-it-<id>/`, and a drop guard that force-deletes the container and then asserts that
//! nothing was left behind (state dir, cgroup dirs, processes, mounts). Set `CAPSA_IT_KEEP=1` to keep
//! the directories of failed tests for inspection.
//!
//! Checks that only capsa is expected to pass (runc 1.1 is known to behave otherwise) are gated with
//! [`is_capsa`], and each gate says why in a comment.

mod config;
mod console;
mod container;
mod host;
mod image;
mod podman;
mod runner;

pub use config::*;
pub use console::*;
pub use container::*;
pub use host::*;
pub use image::*;
pub use podman::*;
pub use runner::*;
pub use serde_json::{json, Value};

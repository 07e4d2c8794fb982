//! `pause` / `resume`: freeze and thaw every process of the container through its cgroup
//! (v1 freezer, cgroup2 `cgroup.freeze`), waiting until the kernel reports the new state.

use std::path::Path;

use super::{Container, Status};
use crate::bail;
use crate::error::{Context, Result};

/// Freezes a running or created container (as runc does). runc's error for any other
/// status: "container not running".
pub fn pause(root: &Path, id: &str) -> Result<()> {
    let c = Container::load(root, id)?;
    if !matches!(c.status(), Status::Running | Status::Created) {
        bail!("container not running");
    }
    crate::cgroup::freeze_paths(&c.state.cgroup_paths).ctx("pause")
}

/// Thaws a paused container. runc's error otherwise: "container not paused".
pub fn resume(root: &Path, id: &str) -> Result<()> {
    let c = Container::load(root, id)?;
    if c.status() != Status::Paused {
        bail!("container not paused");
    }
    crate::cgroup::thaw_paths(&c.state.cgroup_paths).ctx("resume")
}

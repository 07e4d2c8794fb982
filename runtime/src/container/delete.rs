//! `delete`: remove a stopped (or, with `--force`, any) container and its cgroups.

use std::path::Path;

use super::{Container, Status};
use crate::bail;
use crate::error::{Context, Result};

/// Deletes the container; returns warnings (a failing poststop hook) for the caller to log.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<Vec<String>> {
    let c = match Container::load(root, id) {
        Ok(c) => c,
        Err(e) if e.is_not_exist() => {
            super::remove_stateless(root, id)?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    match c.status() {
        Status::Stopped => {}
        // runc deletes a created (never started) container without --force.
        Status::Created => stop(&c)?,
        s @ (Status::Running | Status::Paused) => {
            if !force {
                bail!("cannot delete container {id} that is not stopped: {s}");
            }
            if s == Status::Paused {
                let _ = crate::cgroup::thaw_paths(&c.state.cgroup_paths);
            }
            stop(&c)?;
        }
        // We hold the lock, so the create that wrote this state is gone (killed half-way):
        // whatever it left in the cgroup is killed by destroy.
        Status::Creating => {}
    }
    destroy(&c)
}

/// SIGKILL the container and wait until init is gone.
fn stop(c: &Container) -> Result<()> {
    let pidfd = super::start::pidfd_open(c.state.pid).ok();
    if !c.state.own_pid_ns {
        let _ = crate::cgroup::kill_all_paths(&c.state.cgroup_paths, libc::SIGKILL);
    }
    let _ = super::kill::signal_init(c, libc::SIGKILL);
    if let Some(fd) = pidfd {
        if !super::start::pidfd_wait(&fd, 10_000) {
            bail!("container init {} did not die after SIGKILL", c.state.pid);
        }
    }
    Ok(())
}

fn destroy(c: &Container) -> Result<Vec<String>> {
    if !c.state.own_pid_ns || c.state.pid == 0 {
        // Without its own pid namespace the container's other processes outlive init; after
        // a killed create, its orphaned children are still in the cgroup.
        let _ = crate::cgroup::kill_all_paths(&c.state.cgroup_paths, libc::SIGKILL);
    }
    crate::cgroup::destroy_paths(&c.state.cgroup_paths, &c.state.cgroup_created, c.state.systemd_unit.as_deref(), c.state.rootless)
        .ctx("remove cgroup")?;
    log::debug!("delete {}: cgroup removed", c.state.id);
    std::fs::remove_dir_all(&c.dir).with_ctx(|| format!("remove {}", c.dir.display()))?;
    // A failing poststop hook is a warning, and the others still run (see crate::hooks).
    Ok(crate::hooks::run_all("poststop", &c.state.hook_list(|h| h.poststop()), &c.state.hook_json("stopped", None)))
}

//! [`manager_for_pid`]: the cgroup a running process lives in, for callers that did not create
//! it (the containerd shim finds a container's cgroup from its init pid, as
//! containerd-shim-runc-v2 does).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::{detect, manager_from_paths, proc, Manager, Mode, CGROUP_ROOT, HYBRID_UNIFIED};

/// A manager over the cgroup directories process `pid` is in, read from `/proc/PID/cgroup` and
/// this process's mountinfo. Hierarchies where the process sits at the root (not placed there,
/// e.g. a named hierarchy the runtime skipped) are left out.
pub fn manager_for_pid(pid: i32) -> Result<Box<dyn Manager>> {
    let preferred_v2 = if detect()? == Mode::Unified { CGROUP_ROOT } else { HYBRID_UNIFIED };
    let cgroup_file = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = std::fs::read_to_string(&cgroup_file).map_err(|e| Error::io("read", &cgroup_file, e))?;
    // Bytes, not text: a mount point elsewhere may have a name that is not UTF-8.
    let mounts = capsa_sys::mountinfo::read_self().map_err(|e| Error::io("read", Path::new("/proc/self/mountinfo"), e))?;
    let layout = proc::Layout::from_parts(&proc::cgroup_mounts(mounts), &proc::parse_proc_cgroup(&text), Path::new(preferred_v2));
    let dirs: Vec<PathBuf> =
        layout.v1.iter().chain(layout.v2.iter()).filter_map(|h| h.own_dir().ok().filter(|d| *d != h.mount_point)).collect();
    if dirs.is_empty() {
        return Err(Error::Msg(format!("process {pid} is in no cgroup below a hierarchy root (see {})", cgroup_file.display())));
    }
    manager_from_paths(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_and_missing_pid() {
        // The test runner sits in some cgroup below the roots on this host (or in none: then the
        // error must say so rather than hand out the hierarchy roots).
        match manager_for_pid(std::process::id() as i32) {
            Ok(m) => assert!(m.paths().values().all(|p| p.is_dir()), "{:?}", m.paths()),
            Err(e) => assert!(e.to_string().contains("no cgroup below a hierarchy root"), "{e}"),
        }
        let e = manager_for_pid(i32::MAX).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("/proc/2147483647/cgroup"), "{e}");
    }

    /// As root (the suite's premise): a child placed in a new cgroup is found there, in every
    /// hierarchy the manager that placed it uses.
    #[test]
    fn finds_the_cgroup_a_child_was_placed_in() {
        let id = format!("capsa-test-{}-of-pid", std::process::id());
        let m = crate::manager(detect().expect("cgroups mounted"), Some(&format!("/{id}")), &id).expect("manager");
        m.create().expect("create (needs root)");
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        let placed = m.add_task(child.id() as i32);
        let found = manager_for_pid(child.id() as i32).map(|f| f.paths());
        let _ = child.kill();
        let _ = child.wait();
        let destroyed = m.destroy();
        placed.expect("add_task");
        destroyed.expect("destroy");
        assert_eq!(found.expect("manager_for_pid"), m.paths());
    }
}

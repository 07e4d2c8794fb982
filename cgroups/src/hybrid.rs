//! The Hybrid host's manager: the v1 manager for every v1 hierarchy, plus one directory in
//! the cgroup2 hierarchy at `/sys/fs/cgroup/unified`. That directory gives placement, a
//! freezer when the v1 one is missing, `cgroup.kill`, and the controllers only that
//! hierarchy has (hugetlb on this project's CI) for hugepage limits, rdma and `unified`
//! keys, enabled on demand by `apply`.
//!
//! Composed of the two managers so that neither `v1.rs` nor `v2.rs` needs the other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::{self, Created, Freezer};
use crate::path::{Dir, Inner};
use crate::proc::Layout;
use crate::resources::{field, Resources};
use crate::v1::{self, V1Manager};
use crate::v2::V2Manager;
use crate::Manager;

/// Manager for a Hybrid host: v1 hierarchies plus the cgroup2 directory.
#[derive(Debug)]
pub(crate) struct HybridManager {
    v1: V1Manager,
    unified: Dir,
    /// Directories this instance created, in both halves (see `destroy`).
    created: Created,
}

impl HybridManager {
    /// Resolves `inner` in every v1 hierarchy of `layout` and in its cgroup2 hierarchy.
    pub(crate) fn new(layout: &Layout, inner: &Inner) -> Result<HybridManager> {
        let v1 = V1Manager::new(layout, inner)?;
        let h = layout.v2.as_ref().ok_or_else(|| Error::Msg("hybrid cgroups: the cgroup2 hierarchy is not mounted".into()))?;
        Ok(HybridManager { v1, unified: inner.placed_in(h)?, created: Created::default() })
    }

    /// A manager over directories that already exist (from [`Manager::paths`]).
    pub(crate) fn from_dirs(v1_dirs: Vec<Dir>, unified: Dir) -> HybridManager {
        HybridManager { v1: V1Manager::from_dirs(v1_dirs), unified, created: Created::default() }
    }

    /// A v2 manager over the cgroup2 directory with `controller` enabled down to it, or
    /// `None` when that hierarchy lacks the controller. `cgroup.*` keys need none.
    fn unified_with(&self, controller: &str) -> Option<V2Manager> {
        let u = &self.unified;
        let v2 = V2Manager::with_controllers(u.mount.clone(), u.path.clone(), &[]);
        if controller == "cgroup" {
            return Some(v2);
        }
        let root = fs::read(&u.mount.join("cgroup.controllers")).ok()?;
        if !root.split_whitespace().any(|c| c == controller) {
            return None;
        }
        v2.enable_down_to_leaf(controller);
        Some(v2)
    }

    /// Hugepage limits: in the v1 hugetlb hierarchy if there is one, else
    /// `hugetlb.<size>.max` in the cgroup2 directory, with the controller enabled down to it.
    fn apply_hugetlb(&self, r: &Resources) -> Result<()> {
        if r.hugepage_limits.is_empty() || self.v1.dir("hugetlb").is_some() {
            return self.v1.apply_hugetlb(r);
        }
        match self.unified_with("hugetlb") {
            Some(v2) => v2.apply_hugetlb(r),
            None => Err(v1::no_hugetlb(r)),
        }
    }

    /// `unified`: the keys whose controller the cgroup2 hierarchy has (e.g. `hugetlb.2MB.max`
    /// here) are written; the others are refused, naming the key.
    fn apply_unified(&self, r: &Resources) -> Result<()> {
        for (k, v) in &r.unified {
            let controller = k.split('.').next().unwrap_or_default();
            let Some(v2) = self.unified_with(controller) else {
                let why = format!(
                    "the {controller} controller is not in this hybrid host's cgroup2 hierarchy (it is a cgroup v1 controller here)"
                );
                return Err(Error::Msg(why).field(field::UNIFIED, format!("{{{k:?}: {v:?}}}")));
            };
            v2.write_unified(k, v)?;
        }
        Ok(())
    }

    fn freezer(&self) -> Freezer {
        self.v1.freezer().unwrap_or_else(|| Freezer::V2(self.unified.path.clone()))
    }
}

impl Manager for HybridManager {
    fn create(&self) -> Result<()> {
        self.created.record(|made| {
            self.v1.create_dirs(made)?;
            fs::mkdir_all(&self.unified.mount, &self.unified.path, made)
        })
    }

    fn add_task(&self, pid: i32) -> Result<()> {
        self.v1.add_task_v1(pid)?;
        fs::write(&self.unified.path.join("cgroup.procs"), &pid.to_string())
    }

    /// The v1 manager's order, with the cgroup2 side standing in where v1 lacks a controller.
    fn apply(&self, r: &Resources) -> Result<()> {
        r.validate()?;
        self.v1.apply_memory(r)?;
        self.v1.apply_pids(r)?;
        self.v1.apply_cpu(r)?;
        self.v1.apply_cpuset(r)?;
        self.v1.apply_blkio(r)?;
        self.apply_hugetlb(r)?;
        self.v1.apply_network(r)?;
        self.v1.apply_rdma(r, &|| self.unified_with("rdma").map(|v2| v2.dir().to_path_buf()))?;
        self.apply_unified(r)?;
        self.v1.apply_devices(r)
    }

    fn pids(&self) -> Result<Vec<i32>> {
        fs::procs_recursive(self.v1.procs_dir())
    }

    fn kill_all(&self, signal: i32) -> Result<()> {
        fs::kill_all(self.v1.procs_dir(), Some(&self.unified.path), Some(&self.freezer()), signal)
    }

    fn freeze(&self) -> Result<()> {
        self.freezer().freeze()
    }

    fn thaw(&self) -> Result<()> {
        self.freezer().thaw()
    }

    fn is_frozen(&self) -> Result<bool> {
        self.freezer().is_frozen()
    }

    fn exists(&self) -> bool {
        self.v1.exists()
    }

    fn destroy(&self) -> Result<()> {
        let result = self.v1.remove_dirs();
        let unified = fs::remove_tree(&self.unified.path);
        self.created.remove_unused();
        result.and(unified)
    }

    fn created(&self) -> Vec<PathBuf> {
        self.created.list()
    }

    fn adopt_created(&self, dirs: &[PathBuf]) -> Result<()> {
        let mut own: Vec<(&Path, &Path)> = self.v1.dirs().map(|d| (d.mount.as_path(), d.path.as_path())).collect();
        own.push((self.unified.mount.as_path(), self.unified.path.as_path()));
        self.created.adopt(dirs, &own)
    }

    fn stats(&self) -> Result<crate::Stats> {
        let mut st = self.v1.stats()?;
        if self.v1.dir("hugetlb").is_none() {
            crate::stats::v2_hugetlb(&self.unified.path, &mut st)?;
        }
        Ok(st)
    }

    fn paths(&self) -> BTreeMap<String, PathBuf> {
        let mut map = self.v1.paths();
        map.insert(String::new(), self.unified.path.clone());
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::parse;
    use crate::proc::tests::sample_layout;

    #[test]
    fn paths_cover_every_controller_and_unified() {
        let m = parse(None, "c1").and_then(|i| HybridManager::new(&sample_layout(), &i));
        let paths = m.map(|m| m.paths()).unwrap_or_default();
        let expect: BTreeMap<String, PathBuf> = [
            ("", "/sys/fs/cgroup/unified/u/c1"),
            ("cpu", "/sys/fs/cgroup/cpu,cpuacct/c1"),
            ("cpuacct", "/sys/fs/cgroup/cpu,cpuacct/c1"),
            ("memory", "/sys/fs/cgroup/memory/pa/h/c1"),
            ("name=systemd", "/sys/fs/cgroup/systemd/c1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
        .collect();
        assert_eq!(paths, expect);
    }
}

//! Reading the cgroup layout from procfs: which hierarchies are mounted where
//! (`/proc/self/mountinfo`) and which cgroup this process is in (`/proc/self/cgroup`).
//!
//! The parsers are pure functions over the files' text so they can be unit-tested with
//! samples; [`Layout::load`] reads the real files.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One `cgroup` or `cgroup2` line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Field 4: the directory of the hierarchy that is mounted here (usually `/`).
    pub root: String,
    /// Field 5: where it is mounted.
    pub mount_point: PathBuf,
    /// `cgroup` (v1) or `cgroup2`.
    pub fstype: String,
    /// Super options, e.g. `rw,cpu,cpuacct` or `rw,name=systemd`.
    pub super_opts: Vec<String>,
}

/// One line of `/proc/self/cgroup`: `ID:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcCgroup {
    /// Hierarchy id; 0 is the cgroup2 hierarchy.
    pub id: u32,
    /// Controllers of a v1 hierarchy (`cpu`, `cpuacct`, `name=systemd`); empty for v2.
    pub controllers: Vec<String>,
    /// The process's cgroup, relative to the hierarchy root (of its cgroup namespace).
    pub path: String,
}

/// The `cgroup` and `cgroup2` mounts of mountinfo text (parsed by the workspace's parser,
/// `capsa_sys::mountinfo`, which undoes the kernel's octal escapes), in file order.
#[cfg(test)]
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    cgroup_mounts(capsa_sys::mountinfo::parse(text))
}

/// The `cgroup` and `cgroup2` mounts of a parsed mount table, in its order.
pub(crate) fn cgroup_mounts(all: Vec<capsa_sys::mountinfo::MountInfo>) -> Vec<Mount> {
    all.into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| Mount {
            root: m.root.to_string_lossy().into_owned(),
            mount_point: m.mount_point,
            fstype: m.fstype,
            super_opts: m.super_options.split(',').map(str::to_string).collect(),
        })
        .collect()
}

/// Parses `/proc/<pid>/cgroup` text. Malformed lines are skipped.
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            // The path may itself contain ':'; split at the first two only.
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(ProcCgroup {
                id,
                controllers: controllers.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// A mounted hierarchy and where this process sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// v1 controllers (`["cpu"]`, `["cpu", "cpuacct"]`, `["name=systemd"]`); empty for cgroup2.
    pub controllers: Vec<String>,
    /// Where the hierarchy is mounted.
    pub mount_point: PathBuf,
    /// Which directory of the hierarchy is mounted there (mountinfo field 4).
    pub mount_root: String,
    /// This process's cgroup in the hierarchy (from /proc/self/cgroup).
    pub own: String,
}

impl Hierarchy {
    /// Directory of this process's own cgroup, e.g. `/sys/fs/cgroup/memory/process_api/x`.
    pub fn own_dir(&self) -> Result<PathBuf> {
        let rel = strip_root(&self.own, &self.mount_root).ok_or_else(|| {
            Error::Msg(format!(
                "cgroup {:?} of this process is outside the directory {:?} mounted at {}",
                self.own,
                self.mount_root,
                self.mount_point.display()
            ))
        })?;
        Ok(self.mount_point.join(rel))
    }
}

/// `path` relative to `root`, component-wise (`/a/b` under `/a` is `b`; under `/ab` is None).
pub(crate) fn strip_root<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    let root = root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/').map(|r| r.trim_start_matches('/'))
    }
}

/// The cgroup hierarchies visible to this process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Every mounted v1 hierarchy that this process belongs to, in /proc/self/cgroup order
    /// reversed (so `cpu` comes before `name=systemd` on a typical host).
    pub v1: Vec<Hierarchy>,
    /// The cgroup2 hierarchy, if mounted.
    pub v2: Option<Hierarchy>,
}

impl Layout {
    /// Matches /proc/self/cgroup entries with the mounts that serve them.
    ///
    /// A v1 entry is served by the first `cgroup` mount whose super options contain all of
    /// its controllers (this handles co-mounts like `cpu,cpuacct` and named hierarchies
    /// like `name=systemd`); a mount whose root contains our cgroup is preferred, so a
    /// bind mount of some sub-directory is not picked by accident. Hierarchies that are not
    /// mounted in our mount namespace are left out. For cgroup2, a mount at
    /// `preferred_v2` wins over others.
    pub fn from_parts(mounts: &[Mount], procs: &[ProcCgroup], preferred_v2: &Path) -> Layout {
        let pick = |candidates: Vec<&Mount>, own: &str, preferred: Option<&Path>| -> Option<Mount> {
            let fits = |m: &Mount| strip_root(own, &m.root).is_some();
            let best = candidates
                .iter()
                .copied()
                .find(|m| fits(m) && preferred.is_some_and(|p| m.mount_point == p))
                .or_else(|| candidates.iter().copied().find(|m| fits(m)))
                .or_else(|| candidates.first().copied());
            best.cloned()
        };
        let mut layout = Layout::default();
        for p in procs.iter().rev() {
            if p.id == 0 && p.controllers.is_empty() {
                let candidates: Vec<&Mount> = mounts.iter().filter(|m| m.fstype == "cgroup2").collect();
                if let Some(m) = pick(candidates, &p.path, Some(preferred_v2)) {
                    layout.v2 =
                        Some(Hierarchy { controllers: Vec::new(), mount_point: m.mount_point, mount_root: m.root, own: p.path.clone() });
                }
                continue;
            }
            if p.controllers.is_empty() {
                continue;
            }
            let candidates: Vec<&Mount> =
                mounts.iter().filter(|m| m.fstype == "cgroup" && p.controllers.iter().all(|c| m.super_opts.contains(c))).collect();
            if let Some(m) = pick(candidates, &p.path, None) {
                layout.v1.push(Hierarchy {
                    controllers: p.controllers.clone(),
                    mount_point: m.mount_point,
                    mount_root: m.root,
                    own: p.path.clone(),
                });
            }
        }
        layout
    }

    /// Reads `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn load(preferred_v2: &Path) -> Result<Layout> {
        // Bytes, not text: a mount point elsewhere may have a name that is not UTF-8.
        let mountinfo = capsa_sys::mountinfo::read_self().map_err(|e| Error::io("read", Path::new("/proc/self/mountinfo"), e))?;
        let cgroup = read_proc("/proc/self/cgroup")?;
        Ok(Layout::from_parts(&cgroup_mounts(mountinfo), &parse_proc_cgroup(&cgroup), preferred_v2))
    }

    /// The cgroup mount that contains `path` (longest mount point wins), and whether it is v2.
    pub fn containing(&self, path: &Path) -> Option<&Hierarchy> {
        self.v1.iter().chain(self.v2.iter()).filter(|h| path.starts_with(&h.mount_point)).max_by_key(|h| h.mount_point.as_os_str().len())
    }
}

fn read_proc(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io("read", Path::new(path), e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Hybrid layout: co-mounted cpu,cpuacct, memory in a sub-cgroup, `name=systemd`, and
    /// the cgroup2 mount at unified.
    pub(crate) fn sample_layout() -> Layout {
        Layout::from_parts(
            &parse_mountinfo(
                "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                 35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                 40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
                 41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            ),
            &parse_proc_cgroup("3:name=systemd:/\n2:memory:/pa/h\n1:cpu,cpuacct:/\n0::/u\n"),
            Path::new("/sys/fs/cgroup/unified"),
        )
    }

    /// This machine's mountinfo (hybrid: v1 controllers + cgroup2 at unified).
    const HYBRID_MOUNTINFO: &str = "\
22 1 0:20 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/ac09
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    /// A typical systemd host of the v1 era: cpu,cpuacct co-mounted, optional fields, xattr.
    const SYSTEMD_V1_MOUNTINFO: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
";

    const SYSTEMD_V1_CGROUP: &str = "\
12:net_cls,net_prio:/
4:cpu,cpuacct:/user.slice
1:name=systemd:/user.slice/user-0.slice/session-1.scope
0::/user.slice/user-0.slice/session-1.scope
";

    #[test]
    fn parses_hybrid_mountinfo() {
        let m = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(m.len(), 10, "tmpfs and ext4 lines are dropped");
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(m[0].super_opts, vec!["rw", "cpu"]);
        assert_eq!(m[8].super_opts, vec!["rw", "name=systemd"]);
        assert_eq!(m[9].fstype, "cgroup2");
        assert_eq!(m[9].root, "/");
    }

    #[test]
    fn parses_optional_fields_and_escapes() {
        let text = "50 25 0:40 /a\\040b /mnt/my\\040cg rw shared:3 master:1 - cgroup cgroup rw,memory\n\
                    garbage line\n\
                    51 25 0:41 / /x rw - cgroup\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].root, "/a b");
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/my cg"));
        assert_eq!(m[0].super_opts, vec!["rw", "memory"]);
    }

    #[test]
    fn parses_proc_cgroup_with_colons_in_path() {
        let p = parse_proc_cgroup("4:memory:/a:b/c\n0::/\nbad\n1:name=systemd:/x\n");
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], ProcCgroup { id: 4, controllers: vec!["memory".into()], path: "/a:b/c".into() });
        assert_eq!(p[1], ProcCgroup { id: 0, controllers: vec![], path: "/".into() });
        assert_eq!(p[2].controllers, vec!["name=systemd"]);
    }

    #[test]
    fn hybrid_layout_matches_every_hierarchy() {
        let l =
            Layout::from_parts(&parse_mountinfo(HYBRID_MOUNTINFO), &parse_proc_cgroup(HYBRID_CGROUP), Path::new("/sys/fs/cgroup/unified"));
        let names: Vec<String> = l.v1.iter().map(|h| h.controllers.join(",")).collect();
        assert_eq!(names, ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "name=systemd"]);
        let mem = &l.v1[3];
        assert_eq!(mem.own_dir().ok(), Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/ac09")));
        let v2 = l.v2.as_ref().map(|h| h.mount_point.clone());
        assert_eq!(v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(l.containing(Path::new("/sys/fs/cgroup/unified/x")).map(|h| h.controllers.is_empty()), Some(true));
        assert_eq!(l.containing(Path::new("/sys/fs/cgroup/cpuacct/x")).map(|h| h.controllers.clone()), Some(vec!["cpuacct".to_string()]));
        assert!(l.containing(Path::new("/tmp/x")).is_none());
    }

    #[test]
    fn comounted_and_named_hierarchies() {
        let l = Layout::from_parts(
            &parse_mountinfo(SYSTEMD_V1_MOUNTINFO),
            &parse_proc_cgroup(SYSTEMD_V1_CGROUP),
            Path::new("/sys/fs/cgroup/unified"),
        );
        assert_eq!(l.v1.len(), 3);
        let systemd = &l.v1[0];
        assert_eq!(systemd.controllers, vec!["name=systemd"]);
        assert_eq!(systemd.mount_point, PathBuf::from("/sys/fs/cgroup/systemd"));
        let cpu = &l.v1[1];
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(cpu.own_dir().ok(), Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/user.slice")));
        assert_eq!(
            l.v2.as_ref().and_then(|h| h.own_dir().ok()),
            Some(PathBuf::from("/sys/fs/cgroup/unified/user.slice/user-0.slice/session-1.scope"))
        );
    }

    #[test]
    fn pure_v2_layout_and_namespaced_mount_root() {
        let mi = "30 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = Layout::from_parts(&parse_mountinfo(mi), &parse_proc_cgroup("0::/kubepods/pod1/ctr\n"), Path::new("/sys/fs/cgroup"));
        assert!(l.v1.is_empty());
        let v2 = l.v2.as_ref().map(|h| h.own_dir().ok());
        assert_eq!(v2, Some(Some(PathBuf::from("/sys/fs/cgroup/ctr"))));
    }

    #[test]
    fn own_cgroup_outside_mount_root_is_an_error() {
        let h = Hierarchy {
            controllers: vec!["memory".into()],
            mount_point: "/sys/fs/cgroup/memory".into(),
            mount_root: "/a".into(),
            own: "/ab".into(),
        };
        assert!(h.own_dir().is_err());
    }

    #[test]
    fn unmounted_hierarchy_is_left_out() {
        let l = Layout::from_parts(
            &parse_mountinfo("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            &parse_proc_cgroup("2:memory:/\n1:cpu:/\n"),
            Path::new("/sys/fs/cgroup/unified"),
        );
        assert_eq!(l.v1.len(), 1);
        assert!(l.v2.is_none());
    }

    #[test]
    fn strip_root_is_component_wise() {
        assert_eq!(strip_root("/", "/"), Some(""));
        assert_eq!(strip_root("/a/b", "/"), Some("a/b"));
        assert_eq!(strip_root("/a/b", "/a"), Some("b"));
        assert_eq!(strip_root("/a", "/a"), Some(""));
        assert_eq!(strip_root("/ab", "/a"), None);
    }
}

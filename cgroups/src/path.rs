//! `linux.cgroupsPath` → one directory per hierarchy, with runc's cgroupfs-driver semantics:
//!
//! | `linux.cgroupsPath` | directory in each hierarchy                                  |
//! |---------------------|--------------------------------------------------------------|
//! | `/a/b` (absolute)   | `<mount point>/a/b` — relative to the hierarchy's root        |
//! | `a/b` (relative)    | `<mount point>/<our own cgroup>/a/b` (from /proc/self/cgroup) |
//! | absent or `""`      | `<mount point>/<our own cgroup>/<container id>`               |
//!
//! The path is cleaned (`//`, `.` dropped, `..` resolved). Unlike runc, which silently clamps
//! a `..` that climbs above the start, we reject it, naming `linux.cgroupsPath`; a path that
//! cleans to the starting directory itself (`/`, `.`) is rejected too, since the container
//! would otherwise share (and `delete` would try to remove) a cgroup it does not own.
//!
//! systemd `slice:prefix:name` paths are rejected with [`Error::SystemdDriver`].

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::proc::Hierarchy;

/// The container's directory in one mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dir {
    /// Controllers of the hierarchy (`cpu`, `cpu,cpuacct` split, `name=systemd`); empty for
    /// the cgroup2 hierarchy.
    pub controllers: Vec<String>,
    /// The hierarchy's mount point: directories are only ever created below it.
    pub mount: PathBuf,
    /// The container's cgroup directory.
    pub path: PathBuf,
}

/// Where the container's cgroup lives, before it is placed in a particular hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inner {
    /// Relative to each hierarchy's root (an absolute `linux.cgroupsPath`).
    Root(PathBuf),
    /// Relative to the runtime's own cgroup in each hierarchy.
    Own(PathBuf),
}

/// True for systemd-driver paths like `system.slice:capsa:abc` or `:capsa:abc`.
pub(crate) fn is_systemd_path(p: &str) -> bool {
    !p.contains('/') && p.split(':').count() == 3
}

/// Joins the normal components of `p`, resolving `..`; `None` if `..` climbs above the start.
fn clean(p: &str) -> Option<PathBuf> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.iter().collect())
}

/// Interprets `linux.cgroupsPath` (or its absence) for container `id`.
pub(crate) fn parse(cgroups_path: Option<&str>, id: &str) -> Result<Inner> {
    let bad = |path: &str, reason: &str| Error::CgroupsPath { path: path.to_string(), reason: reason.to_string() };
    match cgroups_path.filter(|p| !p.is_empty()) {
        None => {
            if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
                return Err(Error::Msg(format!("container id {id:?} cannot name a cgroup (linux.cgroupsPath is not set)")));
            }
            Ok(Inner::Own(PathBuf::from(id)))
        }
        Some(p) if is_systemd_path(p) => Err(Error::SystemdDriver { path: p.to_string() }),
        Some(p) if p.contains('\0') => Err(bad(p, "contains a NUL byte")),
        Some(p) => {
            let absolute = p.starts_with('/');
            let cleaned = clean(p).ok_or_else(|| {
                bad(
                    p,
                    if absolute {
                        "\"..\" escapes the cgroup hierarchy root"
                    } else {
                        "\"..\" escapes the runtime's own cgroup (relative paths start there)"
                    },
                )
            })?;
            if cleaned.as_os_str().is_empty() {
                return Err(bad(
                    p,
                    if absolute { "names the cgroup hierarchy root itself" } else { "names the runtime's own cgroup itself" },
                ));
            }
            Ok(if absolute { Inner::Root(cleaned) } else { Inner::Own(cleaned) })
        }
    }
}

impl Inner {
    /// The container's directory in hierarchy `h`.
    pub(crate) fn dir_in(&self, h: &Hierarchy) -> Result<PathBuf> {
        Ok(match self {
            Inner::Root(p) => h.mount_point.join(p),
            Inner::Own(p) => h.own_dir()?.join(p),
        })
    }

    /// [`Self::dir_in`] with the hierarchy's controllers and mount point.
    pub(crate) fn placed_in(&self, h: &Hierarchy) -> Result<Dir> {
        Ok(Dir { controllers: h.controllers.clone(), mount: h.mount_point.clone(), path: self.dir_in(h)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hier(own: &str) -> Hierarchy {
        Hierarchy {
            controllers: vec!["memory".into()],
            mount_point: "/sys/fs/cgroup/memory".into(),
            mount_root: "/".into(),
            own: own.into(),
        }
    }

    fn dir(path: Option<&str>, id: &str, own: &str) -> Result<PathBuf> {
        parse(path, id)?.dir_in(&hier(own))
    }

    #[test]
    fn absolute_is_relative_to_hierarchy_root() {
        assert_eq!(dir(Some("/a/b"), "id", "/mine").ok(), Some("/sys/fs/cgroup/memory/a/b".into()));
        assert_eq!(dir(Some("//a/./b/"), "id", "/mine").ok(), Some("/sys/fs/cgroup/memory/a/b".into()));
        assert_eq!(dir(Some("/a/x/../b"), "id", "/").ok(), Some("/sys/fs/cgroup/memory/a/b".into()));
    }

    #[test]
    fn relative_is_under_own_cgroup() {
        assert_eq!(dir(Some("a/b"), "id", "/process_api/h").ok(), Some("/sys/fs/cgroup/memory/process_api/h/a/b".into()));
        assert_eq!(dir(Some("./a"), "id", "/").ok(), Some("/sys/fs/cgroup/memory/a".into()));
    }

    #[test]
    fn absent_is_own_cgroup_slash_id() {
        assert_eq!(dir(None, "c1", "/process_api/h").ok(), Some("/sys/fs/cgroup/memory/process_api/h/c1".into()));
        assert_eq!(dir(Some(""), "c1", "/").ok(), Some("/sys/fs/cgroup/memory/c1".into()));
    }

    #[test]
    fn dotdot_escape_is_rejected_naming_the_field() {
        for p in ["/../etc", "/a/../../b", "../x", "a/../../x"] {
            let e = parse(Some(p), "id").err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.starts_with(&format!("linux.cgroupsPath {p:?}: ")), "{p}: {e}");
            assert!(e.contains("escapes"), "{e}");
        }
    }

    #[test]
    fn root_itself_is_rejected() {
        for p in ["/", "/a/..", ".", "a/.."] {
            assert!(matches!(parse(Some(p), "id"), Err(Error::CgroupsPath { .. })), "{p}");
        }
    }

    #[test]
    fn systemd_paths_are_rejected() {
        for p in ["system.slice:capsa:abc", ":capsa:abc", "kubepods-pod1.slice:cri-containerd:x"] {
            assert!(matches!(parse(Some(p), "id"), Err(Error::SystemdDriver { .. })), "{p}");
        }
        // A cgroupfs path may contain ':' (kubelet's cgroupfs driver never makes these, but
        // runc accepts them as literal names).
        assert!(matches!(parse(Some("/a:b:c/d"), "id"), Ok(Inner::Root(_))));
        assert!(matches!(parse(Some("a:b"), "id"), Ok(Inner::Own(_))));
    }

    #[test]
    fn bad_ids_are_rejected_when_used_as_a_name() {
        for id in ["", ".", "..", "a/b"] {
            assert!(parse(None, id).is_err(), "{id:?}");
        }
    }
}

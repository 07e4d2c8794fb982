//! The runtime's side of cgroups: turns `linux.resources` into the `capsa-cgroups`
//! crate's [`Resources`], and keeps the container's cgroup as plain paths in state.json
//! so later commands (kill, delete, state) can rebuild a manager in another process.

use std::path::PathBuf;

use capsa_cgroups::{DeviceRule, Manager, Resources};

use crate::error::{Error, Result};
use crate::rootfs::{mountinfo, CgroupHierarchy, CgroupView};

impl From<capsa_cgroups::Error> for Error {
    fn from(e: capsa_cgroups::Error) -> Self {
        Error::new(e.to_string())
    }
}

/// The container's cgroup while it is being created.
pub struct Cgroup {
    mgr: Box<dyn Manager>,
    unified: bool,
}

impl Cgroup {
    /// Creates the cgroup at `linux.cgroupsPath` (runc's default when absent) and applies
    /// the limits; on failure nothing is left behind.
    pub fn create(linux: &oci_spec::runtime::Linux, id: &str, systemd: bool) -> Result<Cgroup> {
        if systemd {
            return Err(Error::new("--systemd-cgroup: the systemd cgroup driver is not supported by capsa yet"));
        }
        let mode = capsa_cgroups::detect()?;
        let path = linux.cgroups_path().as_ref().map(|p| p.to_string_lossy().into_owned());
        let mgr = capsa_cgroups::manager(mode, path.as_deref().filter(|p| !p.is_empty()), id)?;
        let resources = resources(linux);
        mgr.create()?;
        let cg = Cgroup { mgr, unified: mode == capsa_cgroups::Mode::Unified };
        if let Err(e) = cg.mgr.apply(&resources) {
            let _ = cg.mgr.destroy();
            return Err(e.into());
        }
        Ok(cg)
    }

    pub fn add_task(&self, pid: i32) -> Result<()> {
        Ok(self.mgr.add_task(pid)?)
    }

    pub fn kill_all(&self, sig: i32) -> Result<()> {
        Ok(self.mgr.kill_all(sig)?)
    }

    pub fn destroy(&self) -> Result<()> {
        Ok(self.mgr.destroy()?)
    }

    /// Distinct directories of the container's cgroup, one per hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.mgr.paths().into_values().collect();
        v.sort();
        v.dedup();
        v
    }

    /// What init mounts for a `type: cgroup` entry.
    pub fn view(&self) -> Result<CgroupView> {
        let mounts = mountinfo::read()?;
        let mut hierarchies = Vec::new();
        for p in self.paths() {
            let Some(m) = mounts
                .iter()
                .filter(|m| (m.fstype == "cgroup" || m.fstype == "cgroup2") && p.starts_with(&m.mount_point))
                .max_by_key(|m| m.mount_point.as_os_str().len())
            else {
                continue;
            };
            let name = m.mount_point.strip_prefix("/sys/fs/cgroup").unwrap_or(&m.mount_point).to_string_lossy().into_owned();
            let data: Vec<&str> = m.super_options.split(',').filter(|o| *o != "rw" && *o != "ro").collect();
            let data = if m.fstype == "cgroup2" { String::new() } else { data.join(",") };
            hierarchies.push(CgroupHierarchy { name, fstype: m.fstype.clone(), data, host_dir: p.clone() });
        }
        Ok(CgroupView { unified: self.unified, namespaced: false, hierarchies })
    }
}

/// `linux.resources` → the crate's resources (memory, pids, cpu for now).
pub fn resources(linux: &oci_spec::runtime::Linux) -> Resources {
    let mut r = Resources::default();
    let Some(res) = linux.resources() else {
        r.devices = devices(&[]);
        return r;
    };
    if let Some(m) = res.memory() {
        r.memory.limit = m.limit();
        r.memory.reservation = m.reservation();
        r.memory.swap = m.swap();
        r.memory.swappiness = m.swappiness();
        r.memory.disable_oom_killer = m.disable_oom_killer();
    }
    if let Some(p) = res.pids() {
        r.pids.limit = Some(p.limit());
    }
    r.devices = devices(res.devices().as_deref().unwrap_or_default());
    if let Some(c) = res.cpu() {
        r.cpu.shares = c.shares();
        r.cpu.quota = c.quota();
        r.cpu.period = c.period();
        r.cpu.cpus = c.cpus().clone().filter(|s| !s.is_empty());
        r.cpu.mems = c.mems().clone().filter(|s| !s.is_empty());
    }
    r
}

/// The spec's device rules followed by the devices every container may use (runc's list:
/// mknod of anything, the standard character devices, ptys, tun).
fn devices(spec: &[oci_spec::runtime::LinuxDeviceCgroup]) -> Vec<DeviceRule> {
    use oci_spec::runtime::LinuxDeviceType as T;
    let mut out: Vec<DeviceRule> = spec
        .iter()
        .map(|d| DeviceRule {
            allow: d.allow(),
            kind: match d.typ() {
                Some(T::C) | Some(T::U) => 'c',
                Some(T::B) => 'b',
                _ => 'a',
            },
            major: d.major(),
            minor: d.minor(),
            access: d.access().clone().filter(|a| !a.is_empty()).unwrap_or_else(|| "rwm".to_string()),
        })
        .collect();
    let rule = |kind, major, minor, access: &str| DeviceRule { allow: true, kind, major, minor, access: access.to_string() };
    out.push(rule('c', None, None, "m"));
    out.push(rule('b', None, None, "m"));
    for (major, minor) in [(1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 2), (10, 200)] {
        out.push(rule('c', Some(major), Some(minor), "rwm"));
    }
    out.push(rule('c', Some(136), None, "rwm"));
    out
}

fn from_paths(paths: &[PathBuf]) -> Option<Box<dyn Manager>> {
    if paths.is_empty() {
        return None;
    }
    capsa_cgroups::manager_from_paths(paths).ok()
}

pub fn is_frozen(paths: &[PathBuf]) -> bool {
    from_paths(paths).is_some_and(|m| m.is_frozen().unwrap_or(false))
}

pub fn kill_all_paths(paths: &[PathBuf], sig: i32) -> Result<()> {
    match from_paths(paths) {
        Some(m) if m.exists() => Ok(m.kill_all(sig)?),
        _ => Ok(()),
    }
}

pub fn thaw_paths(paths: &[PathBuf]) -> Result<()> {
    match from_paths(paths) {
        Some(m) => Ok(m.thaw()?),
        None => Ok(()),
    }
}

pub fn destroy_paths(paths: &[PathBuf]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let m = capsa_cgroups::manager_from_paths(paths)?;
    Ok(m.destroy()?)
}

pub fn pids(paths: &[PathBuf]) -> Result<Vec<i32>> {
    match from_paths(paths) {
        Some(m) => Ok(m.pids()?),
        None => Ok(Vec::new()),
    }
}


//! The systemd cgroup driver (`--systemd-cgroup`): the container's cgroup is a transient
//! scope unit, `prefix-name.scope` in the slice of `linux.cgroupsPath` `slice:prefix:name`,
//! that systemd creates with `Delegate=yes` around the container's first process, and the
//! limits are unit properties (see `props.rs`) as well as cgroupfs values. What happens
//! where:
//!
//! | step                      | systemd (D-Bus, `bus.rs`)                          | cgroupfs (the v1/v2/hybrid manager over the unit's directories) |
//! |---------------------------|----------------------------------------------------|------------------------|
//! | `create`                  | read systemd's Version (fails early without systemd) | —                    |
//! | `apply` before a process  | limits → properties, kept for the start            | —                      |
//! | first `add_task(pid)`     | StartTransientUnit (Slice, Delegate, PIDs, accounting, properties), wait for the job | check the pid is in the unit's directory, make the hierarchies systemd does not manage (v1), enable controllers (v2), add the pid everywhere, write every limit |
//! | `apply` later (`update`)  | SetUnitProperties                                  | write every limit      |
//! | `destroy` (`delete`)      | StopUnit, wait for the job, ResetFailedUnit (none of it when systemd already dropped the unit) | remove what is left |
//! | the rest                  | —                                                  | pids, kill, freeze, stats, paths |
//!
//! A failed start removes the unit again. Scopes need a process to exist, which is why the
//! unit is started by the first `add_task` rather than by `create`; the runtime adds its
//! first process before that process runs anything, so the limits are in place in time.
//!
//! Each of those steps has its own connection, closed when it is done (`create`'s is kept for
//! the start that follows within milliseconds, and an `update` sets the properties over the
//! connection that read the Version): systemd sends every signal of the whole
//! system to every connection on its private socket, and a synchronous client must not let
//! one sit unread for long. (A client with a reader thread, runc's go-systemd, keeps one.)
//!
//! Paths: the unit's cgroup is the slice's directory (`a-b.slice` →
//! `/a.slice/a-b.slice`) plus the unit, below the manager's own cgroup for a user manager
//! (`/user.slice/user-1000.slice/user@1000.service/...`), in every mounted hierarchy.
//! Rootless (the user manager) needs cgroup v2, as with runc.

mod bus;
mod props;
mod unit;
mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use bus::SystemdBus;
use bus::{Bus, MANAGER};
use props::{Context, DEFAULT_PERIOD};
use wire::Value;

use crate::error::{Error, Result};
use crate::fs;
use crate::hybrid::HybridManager;
use crate::path::Dir;
use crate::proc::{strip_root, Hierarchy, Layout};
use crate::v1::V1Manager;
use crate::v2::{V2Manager, CONTROLLERS};
use crate::{Manager, Mode, Resources, CGROUP_ROOT, HYBRID_UNIFIED};

/// The systemd-driven manager of one container.
#[derive(Debug)]
pub(crate) struct SystemdManager {
    unit: String,
    slice: String,
    bus: SystemdBus,
    /// The container's name, for the unit's Description.
    name: String,
    /// cgroup v2 property names (a Unified host).
    v2: bool,
    /// cgroupfs work on the unit's directories.
    fs: Box<dyn Manager>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The unit is ours: started by this instance, or rebuilt from a container's state.
    /// Until then `kill_all` and `destroy` touch nothing, so the cleanup of a create that
    /// failed because the name was taken leaves the other container alone.
    started: bool,
    /// Limits applied before the unit exists: the properties to start it with, and what
    /// cgroupfs gets afterwards.
    pending: Option<(Vec<Value>, Resources)>,
    version: Option<u32>,
    /// The connection `create` opened, for the start.
    conn: Option<Bus>,
}

impl SystemdManager {
    /// The manager for container `id`: its unit from `cgroups_path` (`slice:prefix:name`;
    /// absent: `capsa-<id>.scope` in the default slice) on a host in `mode`, through `bus`.
    pub(crate) fn new(mode: Mode, cgroups_path: Option<&str>, id: &str, bus: SystemdBus) -> Result<SystemdManager> {
        check_booted(Path::new("/run/systemd/system"))?;
        let names = unit::parse(cgroups_path, id, bus)?;
        if bus == SystemdBus::User && mode != Mode::Unified {
            return Err(Error::Msg(
                "--systemd-cgroup with --rootless needs cgroup v2 (a user's systemd manager cannot delegate v1 hierarchies)".into(),
            ));
        }
        // A user manager's units live below its own cgroup (user@UID.service).
        let base = match bus {
            SystemdBus::System => String::new(),
            SystemdBus::User => {
                let cg = connect(bus)?.property(bus::MANAGER_PATH, MANAGER, "ControlGroup").map_err(|e| Error::Systemd {
                    unit: names.unit.clone(),
                    what: "read the user manager's ControlGroup".into(),
                    reply: e.to_string(),
                })?;
                cg.as_str().unwrap_or_default().trim_end_matches('/').to_string()
            }
        };
        let slice_dir = unit::expand_slice(&names.slice).map_err(Error::Msg)?;
        let cgroup = format!("{base}{slice_dir}/{}", names.unit);
        let fs = fs_manager(mode, &cgroup)?;
        Ok(SystemdManager {
            unit: names.unit,
            slice: names.slice,
            bus,
            name: id.to_string(),
            v2: mode == Mode::Unified,
            fs,
            state: Mutex::new(State::default()),
        })
    }

    /// A manager for an existing unit, over its recorded directories (for `delete`, `update`).
    pub(crate) fn existing(unit: &str, bus: SystemdBus, fs: Box<dyn Manager>) -> SystemdManager {
        let v2 = fs.paths().keys().all(|k| k.is_empty());
        SystemdManager {
            unit: unit.to_string(),
            slice: String::new(),
            bus,
            name: String::new(),
            v2,
            fs,
            state: Mutex::new(State { started: true, ..Default::default() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, what: &str, reply: impl std::fmt::Display) -> Error {
        Error::Systemd { unit: self.unit.clone(), what: what.to_string(), reply: reply.to_string() }
    }

    /// systemd's version (`252.38-1~deb12u1` → 252), asked once; `keep` keeps the connection
    /// for the start.
    fn version(&self, st: &mut State, keep: bool) -> Result<u32> {
        if let Some(v) = st.version {
            return Ok(v);
        }
        let mut conn = connect(self.bus)?;
        let reply = conn.property(bus::MANAGER_PATH, MANAGER, "Version").map_err(|e| self.err("read systemd's Version", e))?;
        if keep {
            st.conn = Some(conn);
        }
        let text = reply.as_str().unwrap_or_default();
        let digits: String = text.trim_start_matches('v').chars().take_while(char::is_ascii_digit).collect();
        let v = digits.parse().map_err(|_| self.err("read systemd's Version", format!("unexpected {text:?}")))?;
        st.version = Some(v);
        Ok(v)
    }

    /// The cgroup directory holding the memory controller's files.
    fn memory_dir(&self) -> Option<PathBuf> {
        let p = self.fs.paths();
        p.get("memory").or_else(|| p.get("")).cloned()
    }

    /// The CFS period and memory limit in force, for values given without them.
    fn in_force(&self) -> (u64, i64) {
        let paths = self.fs.paths();
        let (period, limit) = if self.v2 {
            let dir = paths.get("").cloned().unwrap_or_default();
            let period = fs::read(&dir.join("cpu.max")).ok().and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse().ok()));
            let limit = fs::read(&dir.join("memory.max")).ok().map(|s| if s == "max" { -1 } else { s.parse().unwrap_or(0) });
            (period, limit)
        } else {
            let period = paths.get("cpu").and_then(|d| fs::read(&d.join("cpu.cfs_period_us")).ok()).and_then(|s| s.parse().ok());
            (period, None)
        };
        (period.unwrap_or(DEFAULT_PERIOD), limit.unwrap_or(0))
    }

    /// The properties every container's scope starts with, then the limits'.
    fn start_properties(&self, pid: i32, limits: Vec<Value>) -> Vec<Value> {
        let b = |v: bool| Value::Bool(v);
        let mut p = vec![
            Value::prop("Description", Value::str(format!("capsa container {}", self.name))),
            Value::prop("Slice", Value::str(self.slice.clone())),
            Value::prop("Delegate", b(true)),
            Value::prop("PIDs", Value::Array("u".into(), vec![Value::U32(pid as u32)])),
            Value::prop("DefaultDependencies", b(false)),
            Value::prop("MemoryAccounting", b(true)),
            Value::prop("CPUAccounting", b(true)),
            Value::prop(if self.v2 { "IOAccounting" } else { "BlockIOAccounting" }, b(true)),
            Value::prop("TasksAccounting", b(true)),
        ];
        p.extend(limits);
        p
    }

    /// StartTransientUnit with `pid`; a unit of that name left failed by an earlier run is
    /// reset and the start retried once, as runc does. Once this returns the unit is ours:
    /// the connection and the start job's path are returned for [`Self::started`].
    fn start_unit(&self, st: &mut State, pid: i32, limits: Vec<Value>) -> Result<(Bus, String)> {
        let props = self.start_properties(pid, limits);
        let mut conn = match st.conn.take() {
            Some(c) => c,
            None => connect(self.bus)?,
        };
        conn.subscribe().map_err(|e| self.err("Subscribe", e))?;
        let args = || {
            vec![
                Value::str(self.unit.clone()),
                Value::str("replace"),
                Value::Array("(sv)".into(), props.clone()),
                Value::Array("(sa(sv))".into(), vec![]),
            ]
        };
        let reply = match conn.manager("StartTransientUnit", args()) {
            Err(e) if e.is("org.freedesktop.systemd1.UnitExists") => {
                let _ = conn.manager("ResetFailedUnit", vec![Value::str(self.unit.clone())]);
                conn.manager("StartTransientUnit", args())
            }
            r => r,
        };
        let body = reply.map_err(|e| self.err("StartTransientUnit", e))?;
        let job = body.first().and_then(Value::as_str).unwrap_or_default().to_string();
        Ok((conn, job))
    }

    /// Waits for the start job, then checks that systemd put `pid` where the paths say: in
    /// the cgroup2 directory (or v1 `name=systemd`, the hierarchy systemd tracks units in).
    fn started(&self, conn: &mut Bus, job: &str, pid: i32) -> Result<()> {
        let result = conn.wait_job(job).map_err(|e| self.err("wait for the start job", e))?;
        if result != "done" {
            return Err(self.err("start job", format!("ended with result {result:?} (see `journalctl -u {}`)", self.unit)));
        }
        let paths = self.fs.paths();
        let Some(dir) = paths.get("").or_else(|| paths.get("name=systemd")) else { return Ok(()) };
        if !fs::procs_in(dir).is_ok_and(|p| p.contains(&pid)) {
            let actual = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            return Err(self.err(
                "ControlGroup",
                format!("systemd did not put pid {pid} in {} where capsa looks for it (it is in {:?})", dir.display(), actual.trim()),
            ));
        }
        Ok(())
    }

    /// The first process: start the unit around it, then the cgroupfs part. On failure the
    /// unit is stopped again (a unit of that name that was not ours is left alone).
    fn start(&self, st: &mut State, pid: i32) -> Result<()> {
        let (limits, resources) = st.pending.take().unwrap_or_default();
        let (mut conn, job) = self.start_unit(st, pid, limits)?;
        st.started = true;
        let rest = self
            .started(&mut conn, &job, pid)
            .and_then(|()| self.fs.create())
            .and_then(|()| self.fs.add_task(pid))
            .and_then(|()| self.fs.apply(&resources));
        drop(conn);
        if let Err(e) = rest {
            let _ = self.fs.kill_all(libc::SIGKILL);
            let _ = self.stop();
            let _ = self.fs.destroy();
            st.started = false;
            return Err(e);
        }
        Ok(())
    }

    /// Whether systemd may still hold the unit: its cgroup (in the hierarchy systemd tracks
    /// units in) or its transient unit file (`/run/systemd/transient/NAME`, removed when the
    /// unit is gone, kept while a failed one waits for a reset) still exists. Most containers
    /// are deleted after they exited, when systemd has already stopped and dropped the scope.
    fn unit_present(&self) -> bool {
        let paths = self.fs.paths();
        let cgroup = paths.get("").or_else(|| paths.get("name=systemd"));
        let transient = match self.bus {
            SystemdBus::System => PathBuf::from("/run/systemd/transient"),
            SystemdBus::User => std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix::unistd::geteuid())))
                .join("systemd/transient"),
        };
        cgroup.is_none_or(|d| d.exists()) || transient.join(&self.unit).exists()
    }

    /// StopUnit and wait for the job (a unit already gone is fine), then ResetFailedUnit.
    fn stop(&self) -> Result<()> {
        if !self.unit_present() {
            return Ok(());
        }
        let mut conn = connect(self.bus)?;
        conn.subscribe().map_err(|e| self.err("Subscribe", e))?;
        match conn.manager("StopUnit", vec![Value::str(self.unit.clone()), Value::str("replace")]) {
            Ok(body) => {
                let job = body.first().and_then(Value::as_str).unwrap_or_default().to_string();
                conn.wait_job(&job).map_err(|e| self.err("wait for the stop job", e))?;
            }
            Err(e) if e.is("org.freedesktop.systemd1.NoSuchUnit") => {}
            Err(e) => return Err(self.err("StopUnit", e)),
        }
        // A unit that failed stays loaded until this (no error when it is already gone).
        let _ = conn.manager("ResetFailedUnit", vec![Value::str(self.unit.clone())]);
        Ok(())
    }
}

/// Whether systemd is the init (sd_booted(3): its runtime directory `/run/systemd/system`).
fn check_booted(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    Err(Error::Msg(format!("--systemd-cgroup: systemd is not this host's init ({} is missing); use the cgroupfs driver", dir.display())))
}

/// AttachProcessesToUnit: systemd moves `pid` into `unit`'s cgroup (or its sub-cgroup
/// `subcgroup`, `/a/b`; empty for the unit's own), for a caller that may not move it itself
/// (a rootless `exec`: the process starts outside the user manager's subtree).
pub(crate) fn attach(unit: &str, bus: SystemdBus, subcgroup: &str, pid: i32) -> Result<()> {
    let sub = if subcgroup.is_empty() { "/".to_string() } else { format!("/{}", subcgroup.trim_start_matches('/')) };
    let args = vec![Value::str(unit), Value::str(sub), Value::Array("u".into(), vec![Value::U32(pid as u32)])];
    connect(bus)?.manager("AttachProcessesToUnit", args).map_err(|e| Error::Systemd {
        unit: unit.to_string(),
        what: format!("AttachProcessesToUnit of pid {pid}"),
        reply: e.to_string(),
    })?;
    Ok(())
}

/// A new connection to `bus`'s manager, for one step (see the module's comment).
fn connect(bus: SystemdBus) -> Result<Bus> {
    Bus::connect(bus).map_err(|err| Error::SystemdConnect { manager: bus.name(), err })
}

/// The cgroupfs manager over the directories of the unit's cgroup `cgroup` (as systemd names
/// it), in every hierarchy mounted for a host in `mode`.
fn fs_manager(mode: Mode, cgroup: &str) -> Result<Box<dyn Manager>> {
    let preferred_v2 = if mode == Mode::Unified { CGROUP_ROOT } else { HYBRID_UNIFIED };
    let layout = Layout::load(Path::new(preferred_v2))?;
    let place = |h: &Hierarchy| -> Result<Dir> {
        let rel = strip_root(cgroup, &h.mount_root).ok_or_else(|| {
            Error::Msg(format!(
                "the unit's cgroup {cgroup} is outside the directory {:?} mounted at {}",
                h.mount_root,
                h.mount_point.display()
            ))
        })?;
        Ok(Dir { controllers: h.controllers.clone(), mount: h.mount_point.clone(), path: h.mount_point.join(rel) })
    };
    let v2 = || layout.v2.as_ref().ok_or_else(|| Error::Msg("the cgroup2 hierarchy is not mounted (see /proc/self/mountinfo)".into()));
    Ok(match mode {
        Mode::Unified => {
            let d = place(v2()?)?;
            Box::new(V2Manager::with_controllers(d.mount, d.path, CONTROLLERS))
        }
        Mode::Legacy | Mode::Hybrid => {
            if layout.v1.is_empty() {
                return Err(Error::Msg("no cgroup v1 hierarchy is mounted (see /proc/self/mountinfo)".into()));
            }
            let dirs = layout.v1.iter().map(place).collect::<Result<Vec<_>>>()?;
            if mode == Mode::Hybrid {
                Box::new(HybridManager::from_dirs(dirs, place(v2()?)?))
            } else {
                Box::new(V1Manager::from_dirs(dirs))
            }
        }
    })
}

impl Manager for SystemdManager {
    /// Asks systemd for its version, so that a missing manager fails before any process
    /// exists (and `apply` has the version at hand).
    fn create(&self) -> Result<()> {
        self.version(&mut self.lock(), true).map(|_| ())
    }

    fn add_task(&self, pid: i32) -> Result<()> {
        let mut st = self.lock();
        if st.started {
            return self.fs.add_task(pid);
        }
        self.start(&mut st, pid)
    }

    /// Before the unit exists the limits are converted (so bad values fail now) and kept for
    /// the start; afterwards they are set as unit properties, then written to cgroupfs.
    fn apply(&self, r: &Resources) -> Result<()> {
        r.validate()?;
        let mut st = self.lock();
        // An `update` (a fresh process) keeps the connection for SetUnitProperties.
        let started = st.started;
        let version = self.version(&mut st, started)?;
        if !st.started {
            let cx = Context { v2: self.v2, version, period: DEFAULT_PERIOD, memory_limit: 0 };
            st.pending = Some(props::properties(r, &cx)?);
            return Ok(());
        }
        // The connection `version` kept (if it connected), dropped when this step is done.
        let kept = st.conn.take();
        let limit = r.memory.limit.unwrap_or(0);
        if r.memory.check_before_update == Some(true) && limit > 0 {
            if let Some(dir) = self.memory_dir() {
                let usage = if self.v2 { "memory.current" } else { "memory.usage_in_bytes" };
                fs::check_usage(&dir.join(usage), limit)?;
            }
        }
        let (period, memory_limit) = self.in_force();
        let (props, resources) = props::properties(r, &Context { v2: self.v2, version, period, memory_limit })?;
        if !props.is_empty() {
            let args = vec![Value::str(self.unit.clone()), Value::Bool(true), Value::Array("(sv)".into(), props)];
            let mut conn = match kept {
                Some(c) => c,
                None => connect(self.bus)?,
            };
            conn.manager("SetUnitProperties", args).map_err(|e| self.err("SetUnitProperties", e))?;
        }
        self.fs.apply(&resources)
    }

    fn pids(&self) -> Result<Vec<i32>> {
        self.fs.pids()
    }

    fn kill_all(&self, signal: i32) -> Result<()> {
        if !self.lock().started {
            return Ok(());
        }
        self.fs.kill_all(signal)
    }

    fn freeze(&self) -> Result<()> {
        self.fs.freeze()
    }

    fn thaw(&self) -> Result<()> {
        self.fs.thaw()
    }

    fn is_frozen(&self) -> Result<bool> {
        self.fs.is_frozen()
    }

    fn exists(&self) -> bool {
        self.fs.exists()
    }

    /// Stops the unit (systemd removes its cgroup), then removes what cgroupfs has left:
    /// the hierarchies systemd does not manage on v1, sub-cgroups older systemd keeps.
    fn destroy(&self) -> Result<()> {
        let mut st = self.lock();
        if !st.started {
            return Ok(());
        }
        let stopped = self.stop();
        st.started = false;
        let removed = self.fs.destroy();
        stopped.and(removed)
    }

    fn stats(&self) -> Result<crate::Stats> {
        self.fs.stats()
    }

    fn paths(&self) -> BTreeMap<String, PathBuf> {
        self.fs.paths()
    }

    /// What cgroupfs made for systemd (v1 hierarchies systemd does not manage); the unit's
    /// own directories and slices are systemd's.
    fn created(&self) -> Vec<PathBuf> {
        self.fs.created()
    }

    fn adopt_created(&self, dirs: &[PathBuf]) -> Result<()> {
        self.fs.adopt_created(dirs)
    }

    fn systemd_unit(&self) -> Option<&str> {
        Some(&self.unit)
    }
}

/// systemd's Version over the connection at `path` (for the VM tests of both ways in).
#[cfg(test)]
pub(crate) fn bus_version(path: &Path, daemon: bool) -> std::io::Result<String> {
    let mut b = Bus::connect_to(path, daemon)?;
    let v = b.property(bus::MANAGER_PATH, MANAGER, "Version").map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(v.as_str().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_systemd_the_driver_says_so() {
        let e = check_booted(Path::new("/nonexistent/run/systemd/system")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.starts_with("--systemd-cgroup: systemd is not this host's init (/nonexistent/run/systemd/system is missing)"), "{e}");
        assert!(check_booted(Path::new("/")).is_ok());
    }
}

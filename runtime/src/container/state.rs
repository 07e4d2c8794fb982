//! What capsa remembers about a container between commands: `<root>/<id>/state.json`.
//! This file is ours (not the OCI state); [`State::oci`] renders runc's `state` output.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The OCI status machine: creating → created → running → stopped (paused from running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub id: String,
    /// Host pid of the container's init process.
    pub pid: i32,
    /// Start time of init (field 22 of /proc/PID/stat), so a recycled pid is not
    /// mistaken for our init.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 with nanoseconds, as runc prints it.
    pub created: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Cgroup directories of the container, one per hierarchy, to remove on delete.
    #[serde(default)]
    pub cgroup_paths: Vec<PathBuf>,
    /// The directories create made for them (missing parents included), removed on delete
    /// when nothing else uses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroup_created: Vec<PathBuf>,
    /// The systemd scope holding them (`--systemd-cgroup`), stopped on delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// Whether the container has its own pid namespace (if not, `kill`/`delete` must
    /// signal every process of the cgroup, as runc does).
    #[serde(default)]
    pub own_pid_ns: bool,
    #[serde(default)]
    pub rootless: bool,
    /// poststart and poststop run in later commands, when the bundle may be gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// The container's process settings: the base of `exec` without `--process`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<oci_spec::runtime::Process>,
    /// `linux.seccomp`, applied to exec'd processes too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

impl State {
    /// The OCI state object for hooks, as JSON.
    pub fn hook_json(&self, status: &str, pid: Option<i32>) -> String {
        crate::hooks::HookState {
            oci_version: crate::config::OCI_VERSION,
            id: &self.id,
            status,
            pid,
            bundle: &self.bundle,
            annotations: &self.annotations,
        }
        .json()
    }

    pub fn hook_list(
        &self,
        f: impl Fn(&oci_spec::runtime::Hooks) -> &Option<Vec<oci_spec::runtime::Hook>>,
    ) -> Vec<oci_spec::runtime::Hook> {
        self.hooks.as_ref().and_then(|h| f(h).clone()).unwrap_or_default()
    }
}

/// runc's `state` / `list --format json` object; field order matters to byte-level
/// comparisons, so it is a struct, not a map.
#[derive(Debug, Serialize)]
pub struct OciState<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'a str,
    pub id: &'a str,
    pub pid: i32,
    pub status: String,
    pub bundle: &'a PathBuf,
    pub rootfs: &'a PathBuf,
    pub created: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: &'a BTreeMap<String, String>,
    pub owner: String,
}

impl State {
    /// The `state` view: pid 0 once stopped, as runc.
    pub fn oci(&self, status: Status, owner: String) -> OciState<'_> {
        OciState {
            oci_version: crate::config::OCI_VERSION,
            id: &self.id,
            pid: if status == Status::Stopped { 0 } else { self.pid },
            status: status.to_string(),
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: &self.created,
            annotations: &self.annotations,
            owner,
        }
    }
}

//! `linux.namespaces`: which to create, which to join by path, and the id maps of a new
//! user namespace (written by the parent into /proc/PID/{uid,gid}_map).

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType};

use crate::error::{Context, Result};

/// A namespace to join with setns, opened by the parent.
pub struct Join {
    pub flag: CloneFlags,
    pub fd: OwnedFd,
    pub path: PathBuf,
}

pub struct NsPlan {
    /// Namespaces to join, the user namespace first.
    pub join: Vec<Join>,
    pub new_user: bool,
    pub joins_user: bool,
    /// New namespaces other than user, created by one unshare in stage 1.
    pub unshare: CloneFlags,
    pub uid_map: String,
    pub gid_map: String,
    pub time_offsets: Option<String>,
}

pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

pub fn id_map(m: &[LinuxIdMapping]) -> String {
    m.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect()
}

impl NsPlan {
    pub fn from_spec(linux: &oci_spec::runtime::Linux) -> Result<NsPlan> {
        let mut plan = NsPlan {
            join: Vec::new(),
            new_user: false,
            joins_user: false,
            unshare: CloneFlags::empty(),
            uid_map: String::new(),
            gid_map: String::new(),
            time_offsets: None,
        };
        for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
            let f = flag(ns.typ());
            match ns.path() {
                Some(p) => {
                    let fd = open_namespace(p).with_ctx(|| format!("linux.namespaces[{i}].path {}", p.display()))?;
                    let j = Join { flag: f, fd, path: p.clone() };
                    if ns.typ() == LinuxNamespaceType::User {
                        plan.joins_user = true;
                        plan.join.insert(0, j);
                    } else {
                        plan.join.push(j);
                    }
                }
                None if ns.typ() == LinuxNamespaceType::User => plan.new_user = true,
                None => plan.unshare |= f,
            }
        }
        if plan.new_user {
            plan.uid_map = id_map(linux.uid_mappings().as_deref().unwrap_or_default());
            plan.gid_map = id_map(linux.gid_mappings().as_deref().unwrap_or_default());
        }
        if let Some(offsets) = linux.time_offsets() {
            if !plan.unshare.contains(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)) {
                crate::bail!("linux.timeOffsets: requires a new time namespace in linux.namespaces");
            }
            let mut s = String::new();
            for (clock, o) in offsets {
                let id = match clock.as_str() {
                    "monotonic" => "monotonic",
                    "boottime" => "boottime",
                    other => crate::bail!("linux.timeOffsets: unknown clock {other:?} (monotonic, boottime)"),
                };
                s.push_str(&format!("{id} {} {}\n", o.secs().unwrap_or(0), o.nanosecs().unwrap_or(0)));
            }
            plan.time_offsets = Some(s);
        }
        Ok(plan)
    }

    pub fn has(&self, f: CloneFlags) -> bool {
        self.unshare.contains(f) || self.join.iter().any(|j| j.flag == f)
    }
}

/// `nsfs`'s magic (`NSFS_MAGIC`).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Opens a namespace file given by path. It is looked at through an `O_PATH` handle first
/// and only opened for real once it is known to be a namespace: a path in config.json must
/// not make the runtime open a device (opening `/dev/watchdog` arms it) or a FIFO (it would
/// hang).
pub fn open_namespace(p: &std::path::Path) -> Result<OwnedFd> {
    let fd = open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
    let fs = nix::sys::statfs::fstatfs(std::os::fd::AsFd::as_fd(&fd))?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        crate::bail!("not a namespace file (such as /proc/PID/ns/net or a bind mount of one)");
    }
    Ok(capsa_sys::procfs::reopen(std::os::fd::AsFd::as_fd(&fd), OFlag::O_RDONLY)?)
}

/// Writes the id maps of a process that has just created a user namespace.
pub fn write_id_maps(pid: i32, uid_map: &str, gid_map: &str) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/uid_map"), uid_map).with_ctx(|| format!("linux.uidMappings: write {uid_map:?}"))?;
    if !nix::unistd::geteuid().is_root() {
        // An unprivileged writer may only map its own gid, after giving up setgroups.
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny").ctx("user namespace: deny setgroups")?;
    }
    std::fs::write(format!("/proc/{pid}/gid_map"), gid_map).with_ctx(|| format!("linux.gidMappings: write {gid_map:?}"))?;
    Ok(())
}

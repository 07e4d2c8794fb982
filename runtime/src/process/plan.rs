//! What init will do, computed in the parent from config.json and the CLI flags.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use oci_spec::runtime::Spec;

use crate::bail;
use crate::capabilities::CapPlan;
use crate::cgroup::CgroupView;
use crate::error::Result;
use crate::namespaces::NsPlan;
use crate::rlimits::Rlimit;
use crate::rootfs::MountPlan;
use crate::rootfs::{devices, RootfsPlan};

/// The user's process: what init execs and with which attributes.
#[derive(Clone)]
pub struct ProcessPlan {
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    /// PATH from `process.env`, to find `args[0]` inside the container.
    pub path_var: String,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    /// The capability sets (`None` only for callers that keep them as they are).
    pub caps: Option<CapPlan>,
    pub no_new_privileges: bool,
    pub rlimits: Vec<Rlimit>,
    pub oom_score_adj: Option<i32>,
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
    /// ioPriority, scheduler, execCPUAffinity (and, for init, linux.personality).
    pub sched: crate::scheduling::SchedPlan,
    /// Started by an unprivileged user: setgroups is denied in its user namespace.
    pub rootless: bool,
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
}

/// Flags from the command line that shape the container.
#[derive(Default)]
pub struct CreateOpts {
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
    /// Socket-activation fds (`LISTEN_FDS` in capsa's environment), passed first as
    /// fds 3.. with LISTEN_FDS/LISTEN_PID=1 in the container's environment, as runc does.
    pub listen_fds: i32,
}

pub struct InitPlan {
    pub ns: NsPlan,
    pub rootfs: RootfsPlan,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub process: ProcessPlan,
    pub console_socket: Option<OwnedFd>,
    /// exec.fifo, open read-write: init reads one byte from it, which `start` writes.
    pub fifo: Option<OwnedFd>,
    pub preserve_fds: i32,
    pub new_keyring: Option<String>,
    /// createContainer and startContainer hooks run by init; `wants_hooks` also when only
    /// the parent's prestart/createRuntime hooks exist (init must pause for them).
    pub create_container_hooks: Vec<oci_spec::runtime::Hook>,
    pub start_container_hooks: Vec<oci_spec::runtime::Hook>,
    pub wants_hooks: bool,
    pub seccomp: Option<crate::seccomp::SeccompPlan>,
    /// `linux.netDevices`, moved by the parent once init's network namespace exists.
    pub net_devices: crate::netdev::Moves,
    /// How stage 1 joins the container's cgroups by itself (taken and closed by stage 1).
    pub cgroup_join: std::cell::RefCell<Option<crate::cgroup::SelfJoin>>,
}

impl InitPlan {
    /// The fds stage 1 and init need; everything else is closed right after fork.
    pub(crate) fn fds(&self, chan: &super::sync::Channel) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        let mut v = vec![chan.as_fd().as_raw_fd()];
        v.extend(self.ns.join.iter().map(|j| j.fd.as_raw_fd()));
        v.extend(self.console_socket.iter().map(|f| f.as_raw_fd()));
        v.extend(self.fifo.iter().map(|f| f.as_raw_fd()));
        v.extend(self.rootfs.mounts.iter().filter_map(|m| m.tree.as_ref()).map(|t| t.as_raw_fd()));
        v.extend(self.cgroup_join.borrow().iter().flat_map(|j| j.fds()));
        v
    }
}

fn cstring(field: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| crate::error::Error::new(format!("{field} {s:?}: contains a NUL byte")))
}

/// A variable listed twice takes its last value (runc sets them one by one), at the place
/// of its first mention.
fn dedup_env(env: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(env.len());
    for e in env {
        let key = e.split('=').next().unwrap_or(e);
        match out.iter_mut().find(|x| x.split('=').next() == Some(key)) {
            Some(slot) => *slot = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl ProcessPlan {
    pub fn from_spec(p: &oci_spec::runtime::Process) -> Result<ProcessPlan> {
        let args = p.args().iter().flatten().map(|a| cstring("process.args", a)).collect::<Result<Vec<_>>>()?;
        let env =
            dedup_env(p.env().as_deref().unwrap_or_default()).iter().map(|e| cstring("process.env", e)).collect::<Result<Vec<_>>>()?;
        let path_var = p.env().iter().flatten().filter_map(|e| e.strip_prefix("PATH=")).next_back().unwrap_or(DEFAULT_PATH).to_string();
        // runc: no capabilities object means every set is empty.
        let caps = Some(match p.capabilities() {
            Some(c) => CapPlan::from_spec(c)?,
            None => CapPlan { last_cap: crate::capabilities::last_cap(), ..CapPlan::default() },
        });
        let rlimits = crate::rlimits::from_spec(p.rlimits().as_deref().unwrap_or_default())?;
        let u = p.user();
        Ok(ProcessPlan {
            args,
            env,
            path_var,
            cwd: p.cwd().clone(),
            uid: crate::user::check_id("process.user.uid", u.uid())?,
            gid: crate::user::check_id("process.user.gid", u.gid())?,
            additional_gids: u
                .additional_gids()
                .iter()
                .flatten()
                .map(|g| crate::user::check_id("process.user.additionalGids", *g))
                .collect::<Result<Vec<_>>>()?,
            umask: u.umask(),
            caps,
            no_new_privileges: p.no_new_privileges().unwrap_or(false),
            rlimits,
            oom_score_adj: p.oom_score_adj(),
            terminal: p.terminal().unwrap_or(false),
            console_size: p.console_size().as_ref().map(|b| (b.height() as u16, b.width() as u16)),
            sched: crate::scheduling::SchedPlan::from_spec(p)?,
            rootless: false,
            apparmor_profile: p.apparmor_profile().clone(),
            selinux_label: p.selinux_label().clone(),
        })
    }
}

/// True when the namespace `j` joins is the one capsa itself runs in (the host's, for the
/// `capsa` CLI): a sysctl written there would change the host.
fn is_own_namespace(j: &crate::namespaces::Join) -> bool {
    use std::os::unix::fs::MetadataExt;
    let name = match j.flag {
        f if f == CloneFlags::CLONE_NEWNET => "net",
        f if f == CloneFlags::CLONE_NEWIPC => "ipc",
        f if f == CloneFlags::CLONE_NEWUTS => "uts",
        _ => return false,
    };
    let Ok(ours) = std::fs::metadata(format!("/proc/self/ns/{name}")) else { return true };
    match nix::sys::stat::fstat(std::os::fd::AsFd::as_fd(&j.fd)) {
        Ok(st) => st.st_ino == ours.ino() && st.st_dev == ours.dev(),
        Err(_) => true,
    }
}

/// The namespace a sysctl key belongs to, for runc's check that it is not the host's.
fn sysctl_namespace(key: &str) -> Option<CloneFlags> {
    const IPC: [&str; 7] =
        ["kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni"];
    if IPC.contains(&key) || key == "kernel.shm_rmid_forced" || key.starts_with("fs.mqueue.") {
        Some(CloneFlags::CLONE_NEWIPC)
    } else if key.starts_with("net.") {
        Some(CloneFlags::CLONE_NEWNET)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(CloneFlags::CLONE_NEWUTS)
    } else {
        None
    }
}

impl InitPlan {
    /// Builds the plan for a new container. `cgroup` describes the container's cgroups
    /// for `type: cgroup` mounts.
    pub fn build(
        spec: &Spec,
        bundle: &std::path::Path,
        rootfs: &std::path::Path,
        opts: &CreateOpts,
        cgroup: CgroupView,
    ) -> Result<InitPlan> {
        let Some(linux) = spec.linux() else { bail!("linux: missing") };
        let Some(process) = spec.process() else { bail!("process: missing") };
        let ns = NsPlan::from_spec(linux)?;
        let own_mount_ns = ns.has(CloneFlags::CLONE_NEWNS);
        if !own_mount_ns {
            refuse_without_mount_ns(spec, linux)?;
        }
        let in_userns = ns.new_user || ns.joins_user;

        let mut mounts: Vec<MountPlan> = spec.mounts().iter().flatten().map(MountPlan::from_spec).collect();
        for (i, (m, sm)) in mounts.iter_mut().zip(spec.mounts().iter().flatten()).enumerate() {
            let has_maps = sm.uid_mappings().is_some() || sm.gid_mappings().is_some();
            // Mappings without an idmap option still ask for an idmapped mount.
            let Some(recursive) = m.idmap.or(has_maps.then_some(false)) else { continue };
            if !m.is_bind() {
                bail!("mounts[{i}]: idmap needs a bind mount (type \"bind\" or option \"bind\"/\"rbind\")");
            }
            let (Some(uids), Some(gids)) = (sm.uid_mappings().as_deref(), sm.gid_mappings().as_deref()) else {
                bail!("mounts[{i}]: idmap needs both uidMappings and gidMappings");
            };
            m.id_maps = Some((crate::namespaces::id_map(uids), crate::namespaces::id_map(gids)));
            m.idmap = Some(recursive);
        }
        // runc leaves /dev alone when it is bind-mounted from the host; without a mount
        // namespace of its own the container's /dev is the image's (nothing is made in it).
        let setup_dev = own_mount_ns && !mounts.iter().any(|m| m.destination == std::path::Path::new("/dev") && m.is_bind());
        let mut devs: Vec<devices::DevicePlan> = Vec::new();
        for d in linux.devices().iter().flatten() {
            devs.push(devices::from_spec(d)?);
        }
        for d in devices::default_devices() {
            if !devs.iter().any(|x| x.path == d.path) {
                devs.push(d);
            }
        }

        let root_propagation = match linux.rootfs_propagation() {
            Some(p) => Some(
                crate::rootfs::propagation_flag(p)
                    .ok_or_else(|| crate::error::Error::new(format!("linux.rootfsPropagation {p:?}: unknown")))?,
            ),
            None => None,
        };

        let mut sysctl = Vec::new();
        for (k, v) in linux.sysctl().iter().flatten() {
            match sysctl_namespace(k) {
                Some(f) if ns.unshare.contains(f) => {}
                Some(f) => match ns.join.iter().find(|j| j.flag == f) {
                    Some(j) if !is_own_namespace(j) => {}
                    Some(_) => {
                        bail!("linux.sysctl {k:?}: the namespace joined for it is the host's (capsa's own): refusing to change the host")
                    }
                    None => bail!("linux.sysctl {k:?}: the container does not have its own namespace for it"),
                },
                None => bail!("linux.sysctl {k:?}: not in a separate kernel namespace, refusing to change the host"),
            }
            // The key becomes a path below /proc/sys: no empty component, so no "..".
            if k.split(['.', '/']).any(|c| c.is_empty()) {
                bail!("linux.sysctl {k:?}: not a sysctl name");
            }
            sysctl.push((k.clone(), v.clone()));
        }
        sysctl.sort();

        let root = spec.root().as_ref();
        let rootfs_plan = RootfsPlan {
            rootfs: rootfs.to_path_buf(),
            bundle: bundle.to_path_buf(),
            root_propagation,
            readonly: root.and_then(|r| r.readonly()).unwrap_or(false),
            no_pivot: opts.no_pivot,
            mounts,
            setup_dev,
            devices: devs,
            bind_devices: in_userns,
            cgroup,
            masked_paths: linux.masked_paths().clone().unwrap_or_default().into_iter().map(PathBuf::from).collect(),
            readonly_paths: linux.readonly_paths().clone().unwrap_or_default().into_iter().map(PathBuf::from).collect(),
            sysctl,
            cwd: process.cwd().clone(),
            own_mount_ns,
        };
        let uses_cgroupns = ns.has(CloneFlags::CLONE_NEWCGROUP);
        let mut rootfs_plan = rootfs_plan;
        rootfs_plan.cgroup.namespaced = uses_cgroupns;

        let net_devices =
            crate::netdev::plan(&linux.net_devices().clone().unwrap_or_default(), ns.unshare.contains(CloneFlags::CLONE_NEWNET))?;
        let mut process = ProcessPlan::from_spec(process)?;
        if opts.listen_fds > 0 {
            for kv in [format!("LISTEN_FDS={}", opts.listen_fds), "LISTEN_PID=1".to_string()] {
                let key = kv.split('=').next().unwrap_or_default().to_string();
                process.env.retain(|e| !e.to_bytes().starts_with(format!("{key}=").as_bytes()));
                process.env.push(cstring("LISTEN_FDS", &kv)?);
            }
        }
        process.sched.personality = crate::scheduling::SchedPlan::personality(linux)?;
        if process.terminal && process.console_size.is_some_and(|(h, w)| h == 0 && w == 0) {
            bail!("process.consoleSize: height and width are 0");
        }
        Ok(InitPlan {
            ns,
            rootfs: rootfs_plan,
            hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
            domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
            process,
            console_socket: None,
            fifo: None,
            preserve_fds: opts.listen_fds + opts.preserve_fds,
            new_keyring: None,
            create_container_hooks: hooks_of(spec, |h| h.create_container()),
            start_container_hooks: hooks_of(spec, |h| h.start_container()),
            seccomp: linux.seccomp().as_ref().map(crate::seccomp::plan).transpose()?,
            net_devices,
            cgroup_join: Default::default(),
            wants_hooks: !hooks_of(spec, |h| h.prestart()).is_empty()
                || !hooks_of(spec, |h| h.create_runtime()).is_empty()
                || !hooks_of(spec, |h| h.create_container()).is_empty(),
        })
    }
}

impl InitPlan {
    /// Makes, here in the parent with the host's privileges over the filesystem, the
    /// detached trees that init attaches in its mount namespace: idmapped mounts
    /// (`idmap`/`ridmap`), and every bind of a container with a user namespace, whose root
    /// could not reach a source such as a directory under a 0700 home. Separate from
    /// [`InitPlan::build`], which has no side effects.
    pub fn make_trees(&mut self) -> Result<()> {
        let in_userns = self.ns.new_user || self.ns.joins_user;
        for (i, m) in self.rootfs.mounts.iter_mut().enumerate() {
            if m.idmap.is_none() && in_userns && m.is_bind() {
                let source = m.source.clone().unwrap_or_default();
                let source = if source.is_relative() { self.rootfs.bundle.join(source) } else { source };
                match crate::rootfs::trees::bind_tree(&source, m.flags) {
                    Ok(tree) => m.tree = Some(std::sync::Arc::new(tree)),
                    // An unprivileged (rootless) runtime may not clone mounts: init binds it.
                    Err(e) if e.errno() == Some(nix::errno::Errno::EPERM) => {}
                    Err(e) => return Err(e.context(format!("mounts[{i}]"))),
                }
                continue;
            }
            let (Some(recursive), Some((uids, gids))) = (m.idmap, m.id_maps.as_ref()) else { continue };
            let userns = super::userns::with_maps(uids, gids).map_err(|e| e.context(format!("mounts[{i}]")))?;
            let source = m.source.clone().unwrap_or_default();
            let source = if source.is_relative() { self.rootfs.bundle.join(source) } else { source };
            let tree = crate::rootfs::trees::idmapped_tree(
                &source,
                m.flags.contains(MsFlags::MS_REC),
                recursive,
                std::os::fd::AsFd::as_fd(&userns),
                crate::rootfs::mounts::attr_bits(m.flags),
            )
            .map_err(|e| e.context(format!("mounts[{i}]")))?;
            m.tree = Some(std::sync::Arc::new(tree));
        }
        Ok(())
    }
}

/// A container without a mount namespace of its own shares the runtime's (the OCI spec: a
/// namespace type not listed MUST be inherited from the runtime). capsa mounts nothing into
/// that namespace — a mount there would be the host's and outlive the container (runc does
/// mount, and leaves them) — so init only chroots into the rootfs, and every field that
/// needs a mount or a device node in the rootfs is refused, naming it. runc refuses masked
/// and read-only paths the same way ("unable to restrict sys entries without a private MNT
/// namespace").
fn refuse_without_mount_ns(spec: &Spec, linux: &oci_spec::runtime::Linux) -> Result<()> {
    const WHY: &str = "needs a mount namespace of the container's own (add {\"type\": \"mount\"} to linux.namespaces): \
                       without one the container shares the runtime's, and capsa mounts nothing there";
    let non_empty = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    if spec.mounts().as_ref().is_some_and(|m| !m.is_empty()) {
        bail!("mounts: {WHY}");
    }
    if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        bail!("linux.devices: {WHY}");
    }
    if non_empty(linux.masked_paths()) {
        bail!("linux.maskedPaths: {WHY}");
    }
    if non_empty(linux.readonly_paths()) {
        bail!("linux.readonlyPaths: {WHY}");
    }
    if linux.rootfs_propagation().is_some() {
        bail!("linux.rootfsPropagation: {WHY}");
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        bail!("root.readonly: {WHY}");
    }
    Ok(())
}

/// One list of hooks from config.json (empty when absent).
pub fn hooks_of(
    spec: &Spec,
    f: impl Fn(&oci_spec::runtime::Hooks) -> &Option<Vec<oci_spec::runtime::Hook>>,
) -> Vec<oci_spec::runtime::Hook> {
    spec.hooks().as_ref().and_then(|h| f(h).clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_last_wins() {
        let e: Vec<String> = ["A=1", "B=2", "A=3"].iter().map(|s| s.to_string()).collect();
        assert_eq!(super::dedup_env(&e), vec!["A=3".to_string(), "B=2".to_string()]);
    }
}

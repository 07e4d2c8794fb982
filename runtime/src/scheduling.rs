//! Process attributes about CPU and I/O scheduling, and the execution domain:
//! `process.ioPriority`, `process.scheduler`, `process.execCPUAffinity` and
//! `linux.personality`. Parsed in the parent, applied by the child with raw syscalls.

use oci_spec::runtime::{IOPriorityClass, LinuxSchedulerFlag, LinuxSchedulerPolicy};

use crate::bail;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct SchedPlan {
    /// ioprio_set value: class << 13 | level.
    pub ioprio: Option<i32>,
    pub scheduler: Option<SchedAttr>,
    /// CPUs for the process while capsa sets it up, and right before exec.
    pub affinity_initial: Option<Vec<usize>>,
    pub affinity_final: Option<Vec<usize>>,
    /// personality(2) persona.
    pub personality: Option<libc::c_ulong>,
}

/// The kernel's `struct sched_attr` (sched_setattr(2)); libc does not export it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// "0-3,7" → [0, 1, 2, 3, 7].
pub fn parse_cpu_list(field: &str, s: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || Error::new(format!("{field} {s:?}: not a CPU list such as \"0-3,7\""));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b || b >= libc::CPU_SETSIZE as usize {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => {
                let n: usize = part.parse().map_err(|_| bad())?;
                if n >= libc::CPU_SETSIZE as usize {
                    return Err(bad());
                }
                out.push(n);
            }
        }
    }
    if out.is_empty() {
        bail!("{field} {s:?}: empty CPU list");
    }
    Ok(out)
}

impl SchedPlan {
    pub fn from_spec(p: &oci_spec::runtime::Process) -> Result<SchedPlan> {
        let mut plan = SchedPlan::default();
        if let Some(io) = p.io_priority() {
            let class = match io.class() {
                IOPriorityClass::IoprioClassRt => 1,
                IOPriorityClass::IoprioClassBe => 2,
                IOPriorityClass::IoprioClassIdle => 3,
            };
            if !(0..=7).contains(&io.priority()) {
                bail!("process.ioPriority.priority {}: must be 0..7", io.priority());
            }
            plan.ioprio = Some((class << 13) | io.priority() as i32);
        }
        if let Some(s) = p.scheduler() {
            let policy = match s.policy() {
                LinuxSchedulerPolicy::SchedOther => 0,
                LinuxSchedulerPolicy::SchedFifo => 1,
                LinuxSchedulerPolicy::SchedRr => 2,
                LinuxSchedulerPolicy::SchedBatch => 3,
                LinuxSchedulerPolicy::SchedIso => bail!("process.scheduler.policy SCHED_ISO: not implemented by Linux"),
                LinuxSchedulerPolicy::SchedIdle => 5,
                LinuxSchedulerPolicy::SchedDeadline => 6,
            };
            let mut flags = 0u64;
            for f in s.flags().iter().flatten() {
                flags |= match f {
                    LinuxSchedulerFlag::SchedResetOnFork => 0x01,
                    LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
                    LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
                    LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
                    LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
                    LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
                    LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
                };
            }
            let nice = s.nice().unwrap_or(0);
            if !(-20..=19).contains(&nice) {
                bail!("process.scheduler.nice {nice}: must be -20..19");
            }
            let priority = s.priority().unwrap_or(0);
            if (policy == 1 || policy == 2) && !(1..=99).contains(&priority) {
                bail!("process.scheduler.priority {priority}: SCHED_FIFO and SCHED_RR need 1..99");
            }
            if policy != 1 && policy != 2 && priority != 0 {
                bail!("process.scheduler.priority {priority}: only SCHED_FIFO and SCHED_RR take a priority");
            }
            plan.scheduler = Some(SchedAttr {
                size: std::mem::size_of::<SchedAttr>() as u32,
                policy,
                flags,
                nice,
                priority: priority.max(0) as u32,
                runtime: s.runtime().unwrap_or(0),
                deadline: s.deadline().unwrap_or(0),
                period: s.period().unwrap_or(0),
            });
        }
        if let Some(a) = p.exec_cpu_affinity() {
            if let Some(i) = a.initial() {
                plan.affinity_initial = Some(parse_cpu_list("process.execCPUAffinity.initial", i)?);
            }
            if let Some(f) = a.cpu_affinity_final() {
                plan.affinity_final = Some(parse_cpu_list("process.execCPUAffinity.final", f)?);
            }
        }
        Ok(plan)
    }

    /// `linux.personality` as the persona for personality(2).
    pub fn personality(linux: &oci_spec::runtime::Linux) -> Result<Option<libc::c_ulong>> {
        let Some(per) = linux.personality() else { return Ok(None) };
        use oci_spec::runtime::LinuxPersonalityDomain as D;
        if per.flags().as_ref().is_some_and(|f| !f.is_empty()) {
            bail!("linux.personality.flags: no flags are supported (runc supports none either)");
        }
        Ok(Some(match per.domain() {
            D::PerLinux => 0x0000,
            D::PerLinux32 => 0x0008,
        }))
    }

    /// Applies the CPU affinity in `cpus` to the calling process.
    pub fn set_affinity(field: &str, cpus: &[usize]) -> Result<()> {
        // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cpus {
            // SAFETY: c < CPU_SETSIZE was checked when parsing.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        // SAFETY: sched_setaffinity reads one cpu_set_t of the given size.
        if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
            return Err(Error::from(std::io::Error::last_os_error()).context(format!("{field}: sched_setaffinity")));
        }
        Ok(())
    }

    /// ioPriority, scheduler and personality, in the child before the user switch
    /// (a real-time policy needs CAP_SYS_NICE).
    pub fn apply(&self) -> Result<()> {
        if let Some(v) = self.ioprio {
            const IOPRIO_WHO_PROCESS: libc::c_int = 1;
            // SAFETY: ioprio_set with integer arguments only.
            if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, v) } != 0 {
                return Err(Error::from(std::io::Error::last_os_error()).context("process.ioPriority: ioprio_set"));
            }
        }
        if let Some(attr) = &self.scheduler {
            // SAFETY: sched_setattr reads one sched_attr whose size field is set.
            if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr as *const SchedAttr, 0) } != 0 {
                return Err(Error::from(std::io::Error::last_os_error()).context("process.scheduler: sched_setattr"));
            }
        }
        if let Some(p) = self.personality {
            // SAFETY: personality with an integer argument only.
            if unsafe { libc::personality(p) } == -1 {
                return Err(Error::from(std::io::Error::last_os_error()).context("linux.personality"));
            }
        }
        Ok(())
    }
}

/// AppArmor and SELinux: a profile or label for an LSM the host does not run is refused
/// clearly; otherwise the child asks for it at exec with [`lsm_on_exec`].
pub fn check_lsm(p: &oci_spec::runtime::Process) -> Result<()> {
    if let Some(profile) = p.apparmor_profile().as_deref().filter(|s| !s.is_empty()) {
        if !apparmor_enabled() {
            bail!("process.apparmorProfile {profile:?}: AppArmor is not enabled on this host");
        }
    }
    if let Some(label) = p.selinux_label().as_deref().filter(|s| !s.is_empty()) {
        if !selinux_enabled() {
            bail!("process.selinuxLabel {label:?}: SELinux is not enabled on this host");
        }
    }
    Ok(())
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

/// In the child, just before execve: the AppArmor profile / SELinux label the new program
/// runs under (the kernel applies it at exec). This host runs neither LSM, so only the
/// refusal in [`check_lsm`] is exercised by the tests here.
pub fn lsm_on_exec(apparmor: Option<&str>, selinux: Option<&str>) -> Result<()> {
    if let Some(profile) = apparmor.filter(|s| !s.is_empty()) {
        let path = if std::path::Path::new("/proc/self/attr/apparmor/exec").exists() {
            "/proc/self/attr/apparmor/exec"
        } else {
            "/proc/self/attr/exec"
        };
        std::fs::write(path, format!("exec {profile}"))
            .map_err(|e| Error::from(e).context(format!("process.apparmorProfile {profile:?}")))?;
    }
    if let Some(label) = selinux.filter(|s| !s.is_empty()) {
        std::fs::write("/proc/self/attr/exec", label).map_err(|e| Error::from(e).context(format!("process.selinuxLabel {label:?}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("f", "0-3,7").unwrap(), vec![0, 1, 2, 3, 7]);
        assert_eq!(parse_cpu_list("f", "1").unwrap(), vec![1]);
        assert!(parse_cpu_list("f", "3-1").is_err());
        assert!(parse_cpu_list("f", "x").is_err());
        assert!(parse_cpu_list("f", "").is_err());
    }

    #[test]
    fn spec_to_plan() {
        let p: oci_spec::runtime::Process = serde_json::from_str(
            r#"{"cwd":"/","user":{"uid":0,"gid":0},"ioPriority":{"class":"IOPRIO_CLASS_IDLE","priority":7},
                "scheduler":{"policy":"SCHED_BATCH","nice":5},"execCPUAffinity":{"initial":"0","final":"0-1"}}"#,
        )
        .unwrap();
        let plan = SchedPlan::from_spec(&p).unwrap();
        assert_eq!(plan.ioprio, Some((3 << 13) | 7));
        assert_eq!(plan.scheduler.map(|s| (s.policy, s.nice)), Some((3, 5)));
        assert_eq!(plan.affinity_final, Some(vec![0, 1]));
    }
}

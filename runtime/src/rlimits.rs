//! `process.rlimits`: names to resources, applied in init before the user switch.

use crate::bail;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct Rlimit {
    pub name: String,
    pub resource: i32,
    pub soft: u64,
    pub hard: u64,
}

pub fn resource(name: &str) -> Option<i32> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    } as i32)
}

pub fn from_spec(list: &[oci_spec::runtime::PosixRlimit]) -> Result<Vec<Rlimit>> {
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let name = r.typ().to_string();
        let Some(res) = resource(&name) else { bail!("process.rlimits[{i}].type {name:?}: unknown") };
        if r.soft() > r.hard() {
            bail!("process.rlimits[{i}] {name}: soft limit {} is above hard limit {}", r.soft(), r.hard());
        }
        out.push(Rlimit { name, resource: res, soft: r.soft(), hard: r.hard() });
    }
    Ok(out)
}

pub fn apply(list: &[Rlimit]) -> Result<()> {
    for r in list {
        let lim = libc::rlimit { rlim_cur: r.soft, rlim_max: r.hard };
        // SAFETY: setrlimit reads one rlimit struct that lives for the call.
        if unsafe { libc::setrlimit(r.resource as _, &lim) } != 0 {
            let e = crate::error::Error::from(std::io::Error::last_os_error());
            return Err(e.context(format!("process.rlimits {}: setrlimit(soft {}, hard {})", r.name, r.soft, r.hard)));
        }
    }
    Ok(())
}

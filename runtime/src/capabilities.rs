//! The five capability sets of `process.capabilities`, applied with raw `capset` so the
//! effective, permitted and inheritable sets change in one step.

use std::str::FromStr;

use crate::bail;
use crate::error::{Context, Result};

/// The kernel's `__user_cap_header_struct` (libc does not export it).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// The kernel's `__user_cap_data_struct`; version 3 takes two of them (low and high 32 bits).
#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Capability sets as 64-bit masks (bit N = capability N).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapPlan {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    /// Highest capability number the kernel knows (/proc/sys/kernel/cap_last_cap).
    pub last_cap: u32,
}

/// `CAP_SYS_ADMIN` → 21. Unknown names are an error naming the field.
pub fn cap_number(name: &str) -> Option<u32> {
    caps::Capability::from_str(name).ok().map(|c| c.index() as u32)
}

fn mask(field: &str, set: Option<&oci_spec::runtime::Capabilities>, last_cap: u32) -> Result<u64> {
    let mut m = 0u64;
    for c in set.into_iter().flatten() {
        let name = format!("CAP_{c}");
        let Some(n) = cap_number(&name) else { bail!("process.capabilities.{field}: unknown capability {name:?}") };
        if n > last_cap {
            // The kernel does not know it; runc skips such names with a warning.
            continue;
        }
        m |= 1 << n;
    }
    Ok(m)
}

/// Every capability this build knows, by name, in kernel order (`CAP_CHOWN` = 0 first).
pub fn all_names() -> Vec<String> {
    let mut all: Vec<caps::Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all.iter().map(|c| c.to_string()).collect()
}

pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

impl CapPlan {
    pub fn from_spec(c: &oci_spec::runtime::LinuxCapabilities) -> Result<CapPlan> {
        let last_cap = last_cap();
        Ok(CapPlan {
            bounding: mask("bounding", c.bounding().as_ref(), last_cap)?,
            effective: mask("effective", c.effective().as_ref(), last_cap)?,
            permitted: mask("permitted", c.permitted().as_ref(), last_cap)?,
            inheritable: mask("inheritable", c.inheritable().as_ref(), last_cap)?,
            ambient: mask("ambient", c.ambient().as_ref(), last_cap)?,
            last_cap,
        })
    }

    /// Drops every capability not in the bounding set. Needs CAP_SETPCAP, so it runs
    /// before the user switch.
    pub fn drop_bounding(&self) -> Result<()> {
        for n in 0..=self.last_cap {
            if self.bounding & (1 << n) == 0 {
                // SAFETY: prctl with integer arguments only.
                let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, n as libc::c_ulong, 0, 0, 0) };
                if r != 0 {
                    return Err(crate::error::Error::from(std::io::Error::last_os_error()))
                        .with_ctx(|| format!("process.capabilities.bounding: drop capability {n}"));
                }
            }
        }
        Ok(())
    }

    /// Sets effective, permitted and inheritable, then the ambient set.
    pub fn apply(&self) -> Result<()> {
        let header = CapHeader { version: 0x2008_0522, pid: 0 };
        let lo = |m: u64| m as u32;
        let hi = |m: u64| (m >> 32) as u32;
        let data = [
            CapData { effective: lo(self.effective), permitted: lo(self.permitted), inheritable: lo(self.inheritable) },
            CapData { effective: hi(self.effective), permitted: hi(self.permitted), inheritable: hi(self.inheritable) },
        ];
        // SAFETY: header and a two-element data array of the v3 layout, both live for the call.
        let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const _, data.as_ptr()) };
        if r != 0 {
            return Err(crate::error::Error::from(std::io::Error::last_os_error()))
                .ctx("process.capabilities: capset (is effective a subset of permitted?)");
        }
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };
        for n in 0..=self.last_cap {
            if self.ambient & (1 << n) != 0 {
                // A capability missing from permitted or inheritable cannot be raised;
                // runc ignores that, and so do we.
                // SAFETY: prctl with integer arguments only.
                unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, n as libc::c_ulong, 0, 0) };
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_names_in_kernel_order() {
        let all = all_names();
        assert_eq!(
            (all.len(), all[0].as_str(), all[21].as_str(), all[40].as_str()),
            (41, "CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_CHECKPOINT_RESTORE")
        );
        assert!(all.iter().enumerate().all(|(i, c)| cap_number(c) == Some(i as u32)));
    }

    #[test]
    fn names_to_masks() {
        assert_eq!(cap_number("CAP_CHOWN"), Some(0));
        assert_eq!(cap_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(cap_number("CAP_NOPE"), None);
        let c: oci_spec::runtime::LinuxCapabilities =
            serde_json::from_str(r#"{"bounding":["CAP_KILL","CAP_AUDIT_WRITE"],"effective":["CAP_KILL"]}"#).unwrap();
        let p = CapPlan::from_spec(&c).unwrap();
        assert_eq!(p.bounding, (1 << 5) | (1 << 29));
        assert_eq!(p.effective, 1 << 5);
        assert_eq!(p.ambient, 0);
    }
}

//! Installing a filter with seccomp(2), and probing what the running kernel supports.
//!
//! Privileges: the kernel accepts a filter from a thread that has set no_new_privs
//! (`prctl(PR_SET_NO_NEW_PRIVS)`) or holds CAP_SYS_ADMIN in its user namespace; otherwise
//! seccomp(2) fails with EACCES. [`load`] does not set no_new_privs itself: the runtime does
//! it when `process.noNewPrivileges` is true, and otherwise loads the filter while it still
//! holds CAP_SYS_ADMIN (before dropping capabilities), as runc does.

use crate::action::{ret, Action, Op};
use crate::arch::Arch;
use crate::error::LoadError;
use libc::sock_filter;
use nix::errno::Errno;
use serde::Serialize;
use std::fmt;
use std::ops::BitOr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

// seccomp(2) operations (linux/seccomp.h).
const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const SECCOMP_GET_ACTION_AVAIL: libc::c_uint = 2;

/// `SECCOMP_FILTER_FLAG_*` bits passed to seccomp(2).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct FilterFlags(u32);

impl FilterFlags {
    /// Synchronize all threads of the process to the new filter.
    pub const TSYNC: FilterFlags = FilterFlags(1 << 0);
    /// Log every action but ALLOW.
    pub const LOG: FilterFlags = FilterFlags(1 << 1);
    /// Do not force speculative store bypass mitigation.
    pub const SPEC_ALLOW: FilterFlags = FilterFlags(1 << 2);
    /// Return a listener fd for SCMP_ACT_NOTIFY (set by the compiler, not by profiles).
    pub const NEW_LISTENER: FilterFlags = FilterFlags(1 << 3);
    /// With TSYNC + NEW_LISTENER: report a failed sync as ESRCH (added by [`load`]).
    pub const TSYNC_ESRCH: FilterFlags = FilterFlags(1 << 4);
    /// Notified tasks wait killably once the listener has received the notification.
    pub const WAIT_KILLABLE_RECV: FilterFlags = FilterFlags(1 << 5);

    /// The flags a profile may name, with their OCI names.
    pub const KNOWN: [(&'static str, FilterFlags); 4] = [
        ("SECCOMP_FILTER_FLAG_TSYNC", FilterFlags::TSYNC),
        ("SECCOMP_FILTER_FLAG_LOG", FilterFlags::LOG),
        ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", FilterFlags::SPEC_ALLOW),
        ("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", FilterFlags::WAIT_KILLABLE_RECV),
    ];

    pub const fn empty() -> FilterFlags {
        FilterFlags(0)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, other: FilterFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn from_oci(name: &str) -> Option<FilterFlags> {
        FilterFlags::KNOWN.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }
}

impl BitOr for FilterFlags {
    type Output = FilterFlags;
    fn bitor(self, rhs: FilterFlags) -> FilterFlags {
        FilterFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for FilterFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FilterFlags({:#x})", self.0)
    }
}

/// Installs `filter` on the calling thread with seccomp(SECCOMP_SET_MODE_FILTER, flags).
///
/// With `NEW_LISTENER` returns the listener fd (and adds `TSYNC_ESRCH` when `TSYNC` is also
/// set, since the kernel refuses that pair otherwise, as libseccomp does). Does not allocate,
/// so it may run between fork/clone and exec. Needs no_new_privs or CAP_SYS_ADMIN (module doc).
pub fn load(filter: &[sock_filter], flags: FilterFlags) -> Result<Option<OwnedFd>, LoadError> {
    let mut bits = flags.bits();
    if flags.contains(FilterFlags::TSYNC) && flags.contains(FilterFlags::NEW_LISTENER) {
        bits |= FilterFlags::TSYNC_ESRCH.bits();
    }
    let err = |errno| LoadError { errno, flags: bits, tsync_thread: None };
    let len = match u16::try_from(filter.len()) {
        Ok(len) if (1..=4096).contains(&len) => len,
        _ => return Err(err(Errno::EINVAL)),
    };
    let prog = libc::sock_fprog { len, filter: filter.as_ptr().cast_mut() };
    // SAFETY: `prog` points at `filter`, alive for the whole call; the kernel copies the
    // program and only reads through the pointer.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, bits, &prog as *const libc::sock_fprog) };
    if rc < 0 {
        return Err(err(Errno::last()));
    }
    if flags.contains(FilterFlags::NEW_LISTENER) {
        // SAFETY: with NEW_LISTENER a successful call returns a new fd that nothing else owns.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(rc as RawFd) }));
    }
    if rc > 0 {
        // TSYNC without TSYNC_ESRCH: the id of a thread that could not be synchronized.
        return Err(LoadError { errno: Errno::ESRCH, flags: bits, tsync_thread: Some(rc as i32) });
    }
    Ok(None)
}

/// What this crate and the running kernel support; serializes as the `linux.seccomp` object
/// of runc's `features` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    pub enabled: bool,
    /// Actions a profile may use.
    pub actions: Vec<&'static str>,
    /// Operators a profile may use.
    pub operators: Vec<&'static str>,
    /// Architectures this host's filters have sections for.
    pub archs: Vec<&'static str>,
    /// Flags a profile may name.
    pub known_flags: Vec<&'static str>,
    /// Known flags the running kernel accepts (probed).
    pub supported_flags: Vec<&'static str>,
    /// Actions the running kernel implements (SECCOMP_GET_ACTION_AVAIL); not part of
    /// runc's JSON.
    #[serde(skip)]
    pub kernel_actions: Vec<&'static str>,
}

/// Describes the supported actions, operators, archs and flags, probing the kernel.
pub fn features() -> Features {
    let kernel_actions =
        Action::NAMES.into_iter().filter(|name| Action::from_oci(name, None).is_some_and(|a| action_available(base_ret(a)))).collect();
    let supported_flags = FilterFlags::KNOWN
        .iter()
        .filter(|(_, flag)| {
            // The kernel refuses WAIT_KILLABLE_RECV without NEW_LISTENER.
            let extra = if *flag == FilterFlags::WAIT_KILLABLE_RECV { FilterFlags::NEW_LISTENER } else { FilterFlags::empty() };
            flag_supported(*flag | extra)
        })
        .map(|(name, _)| *name)
        .collect();
    Features {
        enabled: true,
        actions: Action::NAMES.to_vec(),
        operators: Op::NAMES.to_vec(),
        archs: Arch::native().map(|a| a.family().iter().map(|a| a.oci_name()).collect()).unwrap_or_default(),
        known_flags: FilterFlags::KNOWN.iter().map(|(name, _)| *name).collect(),
        supported_flags,
        kernel_actions,
    }
}

/// The action's return value without data (what SECCOMP_GET_ACTION_AVAIL expects).
fn base_ret(a: Action) -> u32 {
    match a {
        Action::Errno(_) => ret::ERRNO,
        Action::Trace(_) => ret::TRACE,
        other => other.ret(),
    }
}

fn action_available(action: u32) -> bool {
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 through the pointer, valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0u32, &action as *const u32) };
    rc == 0
}

/// A flag is known to the kernel if, with a NULL program, seccomp(2) gets past the flag
/// checks and fails copying the program (EFAULT) rather than with EINVAL (as libseccomp
/// probes). Nothing is installed.
fn flag_supported(flags: FilterFlags) -> bool {
    // SAFETY: a NULL program pointer is never dereferenced by us; the kernel reports EFAULT.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags.bits(), std::ptr::null::<libc::sock_fprog>()) };
    rc < 0 && Errno::last() == Errno::EFAULT
}

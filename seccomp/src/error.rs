//! Errors. Compile errors name the entry as it appears in config.json, e.g.
//! `linux.seccomp.syscalls[3].args[0].index = 7: must be 0..5`.

use nix::errno::Errno;
use std::fmt;

/// Why a profile cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{field} = {value:?}: unknown action")]
    UnknownAction { field: String, value: String },
    #[error("{field} = {value:?}: unknown operator")]
    UnknownOperator { field: String, value: String },
    #[error("{field} = {value:?}: unknown architecture")]
    UnknownArch { field: String, value: String },
    #[error("{field} = {value:?}: unknown flag")]
    UnknownFlag { field: String, value: String },
    #[error("{field} = {index}: must be 0..5")]
    ArgIndex { field: String, index: u32 },
    #[error("{field} = {value}: must be 0..65535")]
    ErrnoRange { field: String, value: u32 },
    #[error("{field} = {name:?}: no architecture has a syscall of this name (filter: {archs})")]
    UnknownSyscall { field: String, name: String, archs: String },
    #[error("{field} = \"\": empty syscall name")]
    EmptyName { field: String },
    #[error("{field} = \"SCMP_ACT_NOTIFY\": needs linux.seccomp.listenerPath")]
    NotifyWithoutListener { field: String },
    #[error("linux.seccomp.defaultAction = \"SCMP_ACT_NOTIFY\": cannot be the default action")]
    NotifyDefault,
    #[error("linux.seccomp: the filter needs {len} BPF instructions, the kernel accepts at most 4096")]
    TooLong { len: usize },
    #[error("linux.seccomp: no seccomp support for host architecture {0}")]
    UnsupportedHost(&'static str),
}

/// seccomp(2) refused the filter. Plain data (no allocation), so it can be built in a child
/// between fork and exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadError {
    pub errno: Errno,
    /// Flags passed to seccomp(2).
    pub flags: u32,
    /// With SECCOMP_FILTER_FLAG_TSYNC: the thread that could not be synchronized.
    pub tsync_thread: Option<i32>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loading the seccomp filter (flags {:#x}): ", self.flags)?;
        if let Some(tid) = self.tsync_thread {
            return write!(f, "thread {tid} could not be synchronized (SECCOMP_FILTER_FLAG_TSYNC)");
        }
        write!(f, "{}", self.errno.desc())?;
        match self.errno {
            Errno::EACCES => write!(f, " (needs no_new_privs or CAP_SYS_ADMIN)"),
            Errno::EINVAL => write!(f, " (a flag or action this kernel does not support?)"),
            Errno::EBUSY => write!(f, " (a NOTIFY listener is already installed)"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for LoadError {}

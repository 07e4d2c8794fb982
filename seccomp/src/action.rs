//! Actions and comparison operators: OCI names → kernel values.

/// Return values of a seccomp filter (`SECCOMP_RET_*`, linux/seccomp.h). The low 16 bits
/// (`SECCOMP_RET_DATA`) carry the errno for ERRNO and the tracer's data for TRACE.
pub(crate) mod ret {
    pub const KILL_PROCESS: u32 = 0x8000_0000;
    pub const KILL_THREAD: u32 = 0x0000_0000;
    pub const TRAP: u32 = 0x0003_0000;
    pub const ERRNO: u32 = 0x0005_0000;
    pub const USER_NOTIF: u32 = 0x7fc0_0000;
    pub const TRACE: u32 = 0x7ff0_0000;
    pub const LOG: u32 = 0x7ffc_0000;
    pub const ALLOW: u32 = 0x7fff_0000;
}

/// What the kernel does with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    KillProcess,
    /// `SCMP_ACT_KILL` and `SCMP_ACT_KILL_THREAD`.
    KillThread,
    /// SIGSYS to the thread.
    Trap,
    /// Fail with this errno without running the syscall (the kernel caps it at 4095).
    Errno(u16),
    /// Stop for a ptrace tracer (PTRACE_O_TRACESECCOMP), with this event data.
    Trace(u16),
    Allow,
    /// Allow and log.
    Log,
    /// Ask the user-space listener (SECCOMP_FILTER_FLAG_NEW_LISTENER).
    Notify,
}

impl Action {
    /// The OCI names this crate accepts.
    pub const NAMES: [&'static str; 9] = [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    ];

    /// Parses an OCI action. `errno_ret` feeds ERRNO and TRACE (both default to EPERM, as in
    /// runc) and is ignored for the other actions, as runc does.
    pub fn from_oci(name: &str, errno_ret: Option<u16>) -> Option<Action> {
        const EPERM: u16 = libc::EPERM as u16;
        Some(match name {
            "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
            "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
            "SCMP_ACT_TRAP" => Action::Trap,
            "SCMP_ACT_ERRNO" => Action::Errno(errno_ret.unwrap_or(EPERM)),
            "SCMP_ACT_TRACE" => Action::Trace(errno_ret.unwrap_or(EPERM)),
            "SCMP_ACT_ALLOW" => Action::Allow,
            "SCMP_ACT_LOG" => Action::Log,
            "SCMP_ACT_NOTIFY" => Action::Notify,
            _ => return None,
        })
    }

    /// The filter's return value (`SECCOMP_RET_*` | data).
    pub fn ret(self) -> u32 {
        match self {
            Action::KillProcess => ret::KILL_PROCESS,
            Action::KillThread => ret::KILL_THREAD,
            Action::Trap => ret::TRAP,
            Action::Errno(e) => ret::ERRNO | u32::from(e),
            Action::Trace(d) => ret::TRACE | u32::from(d),
            Action::Allow => ret::ALLOW,
            Action::Log => ret::LOG,
            Action::Notify => ret::USER_NOTIF,
        }
    }
}

/// How an argument is compared (`SCMP_CMP_*`). All comparisons are unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `(arg & value) == valueTwo`.
    MaskedEq,
}

impl Op {
    /// The OCI names this crate accepts.
    pub const NAMES: [&'static str; 7] =
        ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"];

    pub fn from_oci(name: &str) -> Option<Op> {
        Some(match name {
            "SCMP_CMP_NE" => Op::Ne,
            "SCMP_CMP_LT" => Op::Lt,
            "SCMP_CMP_LE" => Op::Le,
            "SCMP_CMP_EQ" => Op::Eq,
            "SCMP_CMP_GE" => Op::Ge,
            "SCMP_CMP_GT" => Op::Gt,
            "SCMP_CMP_MASKED_EQ" => Op::MaskedEq,
            _ => return None,
        })
    }
}

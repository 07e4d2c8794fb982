//! Forking a child straight into a cgroup v2 directory (clone3 `CLONE_INTO_CGROUP`), so that
//! no one has to write its pid to `cgroup.procs` (see `cgroup::SelfJoin` for why that write
//! is slow).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::unistd::{ForkResult, Pid};

use crate::error::{Context, Result};

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone_args` as the kernel reads it (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Like fork(2), with the child born in the cgroup v2 directory `cgroup`. `Ok(None)` when
/// this kernel cannot (no clone3, or no CLONE_INTO_CGROUP): fork and join otherwise.
///
/// The child of a raw clone3 skips glibc's fork bookkeeping: no atfork handlers (capsa has
/// none), and glibc's cached thread id in the child is the parent's until the child forks
/// again; the child only makes system calls, forks, and exits (it never signals itself
/// through glibc's raise).
pub fn fork_into_cgroup(cgroup: BorrowedFd<'_>) -> Result<Option<ForkResult>> {
    super::fds::ensure_single_threaded()?;
    let args =
        CloneArgs { flags: CLONE_INTO_CGROUP, exit_signal: libc::SIGCHLD as u64, cgroup: cgroup.as_raw_fd() as u64, ..Default::default() };
    // SAFETY: clone3 reads `args` (size given) and, without CLONE_VM or a new stack,
    // returns twice like fork: 0 in the child, the child's pid in the parent. This process is
    // single-threaded (checked above).
    let r = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    match r {
        0 => Ok(Some(ForkResult::Child)),
        pid if pid > 0 => Ok(Some(ForkResult::Parent { child: Pid::from_raw(pid as i32) })),
        _ => {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOSYS) | Some(libc::E2BIG) | Some(libc::EINVAL) => Ok(None),
                _ => Err(crate::error::Error::from(e)).ctx("clone3 into the container's cgroup"),
            }
        }
    }
}

/// Forks the child, into the cgroup v2 directory `cgroup` where there is one and the
/// kernel can; returns whether it did.
pub fn fork_maybe_into(cgroup: Option<&std::os::fd::OwnedFd>) -> Result<(ForkResult, bool)> {
    if let Some(dir) = cgroup {
        if let Some(r) = fork_into_cgroup(std::os::fd::AsFd::as_fd(dir))? {
            return Ok((r, true));
        }
    }
    Ok((super::fds::fork()?, false))
}

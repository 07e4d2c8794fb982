//! The library's own guards around forking into a container, so that every caller (the
//! `capsa` CLI, capsactl, a test) gets them, not only the CLI:
//!
//! * [`fork`] refuses to fork from a process with more than one thread: after fork only
//!   async-signal-safe calls would be allowed, and the children here allocate (DESIGN
//!   principle 1);
//! * [`reserve_preserved`] keeps the fds handed to the container with `--preserve-fds`
//!   (3..3+N) out of reach of our own opens, and refuses a range above the open-file limit;
//! * [`keep_only`] closes, right after fork, every fd the child was not given on purpose:
//!   no capsa fd (the container's lock, the state dir, a log) may reach a container process
//!   through `/proc/PID/fd` while init is still capsa.

use std::os::fd::RawFd;

use nix::unistd::ForkResult;

use crate::bail;
use crate::error::{Context, Error, Result};

/// Threads of this process, from /proc/self/stat (field 20).
fn threads() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ctx("read /proc/self/stat")?;
    let after = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or("");
    after.split(' ').nth(17).and_then(|n| n.parse().ok()).ok_or_else(|| Error::new("/proc/self/stat: no thread count"))
}

/// Refuses to go on when the process is multi-threaded.
pub fn ensure_single_threaded() -> Result<()> {
    let n = threads()?;
    if n != 1 {
        bail!("refusing to fork a container process from a process with {n} threads: join them first (the children run code that is not async-signal-safe)");
    }
    Ok(())
}

/// fork(2), after checking that this process is single-threaded.
pub fn fork() -> Result<ForkResult> {
    ensure_single_threaded()?;
    // SAFETY: the process has exactly one thread (checked above), so the child may run any
    // code until it execs or exits.
    unsafe { nix::unistd::fork() }.ctx("fork")
}

/// This process as a child subreaper while the guard lives (the previous setting comes back
/// when it is dropped): when stage 1 exits, init becomes our child, so a failed create can
/// kill and reap it, and say how it died.
pub struct Subreaper {
    was: bool,
}

impl Subreaper {
    pub fn set() -> Subreaper {
        let mut was: libc::c_int = 0;
        // SAFETY: PR_GET_CHILD_SUBREAPER writes one int into `was`; PR_SET takes an integer.
        unsafe {
            libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut was as *mut libc::c_int, 0, 0, 0);
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        Subreaper { was: was != 0 }
    }
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        if !self.was {
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
        }
    }
}

/// Makes sure fds 3..3+n are open (a hole gets /dev/null), so none of our own later opens
/// lands in the range a container inherits. `n` may not reach the open-file limit.
pub fn reserve_preserved(n: i32) -> Result<()> {
    if n < 0 {
        bail!("--preserve-fds {n}: must not be negative");
    }
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ctx("getrlimit(RLIMIT_NOFILE)")?;
    if 3 + n as u64 > soft {
        bail!("--preserve-fds {n}: fds 3..{} are above the open-file limit ({soft})", 3 + n as u64);
    }
    for fd in 3..3 + n {
        // SAFETY: F_GETFD only queries the flags of an fd number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        let null = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDWR, nix::sys::stat::Mode::empty()).ctx("open /dev/null")?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(null);
        if raw != fd {
            // SAFETY: dup2 onto a free fd number we reserve, then close our temporary fd.
            unsafe {
                libc::dup2(raw, fd);
                libc::close(raw);
            }
        }
    }
    Ok(())
}

/// In a child right after fork: closes every fd from 3 up except the preserved range
/// 3..3+preserve and the fds in `keep`.
pub fn keep_only(keep: &[RawFd], preserve: i32) {
    let mut keep: Vec<u32> = keep.iter().filter_map(|&f| u32::try_from(f).ok()).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut lo = 3 + preserve.max(0) as u32;
    for k in keep {
        if k < lo {
            continue;
        }
        if k > lo {
            close_range(lo, k - 1);
        }
        lo = k + 1;
    }
    close_range(lo, u32::MAX);
}

fn close_range(lo: u32, hi: u32) {
    // SAFETY: closes fd numbers of our own process; every fd the child still needs is
    // outside [lo, hi] (its owners are kept in `keep`).
    let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) };
    if r != 0 {
        // Pre-5.9 kernels: close what /proc/self/fd lists in the range.
        let fds: Vec<u32> = std::fs::read_dir("/proc/self/fd")
            .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
            .unwrap_or_default();
        for fd in fds.into_iter().filter(|f| (lo..=hi).contains(f)) {
            // SAFETY: as above; an fd that is already closed just gives EBADF.
            unsafe { libc::close(fd as i32) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_count_is_read() {
        // The test harness runs tests on threads of its own: more than one.
        assert!(threads().unwrap() >= 1);
        assert!(reserve_preserved(i32::MAX - 3).unwrap_err().to_string().contains("open-file limit"));
        assert!(reserve_preserved(-1).is_err());
    }
}

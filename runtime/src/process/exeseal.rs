//! CVE-2019-5736: a process inside a container must never be able to write the capsa
//! binary through /proc/PID/exe of a capsa process that entered the container.
//!
//! Every process that forks a container's init or an exec'd process must run from a source
//! that cannot be written, whatever the namespaces: a fresh pid namespace does not keep init
//! alone (`capsa exec` into a created container and startContainer hooks reach `/proc/1/exe`
//! while init is still capsa). [`ensure_sealed`], called first thing by a program (the
//! `capsa` CLI does it before parsing its arguments), re-executes it from, in order of
//! preference:
//!
//! 1. a read-only, detached bind mount of its own binary (`open_tree(OPEN_TREE_CLONE)` +
//!    `mount_setattr(MOUNT_ATTR_RDONLY)` + `execveat`): no copy; a write through the
//!    magic link fails with EROFS. Measured here: 1.4 ms for the re-exec of the 3 MB
//!    release binary (open_tree + mount_setattr + execveat + loader + startup).
//! 2. a sealed memfd copy of the binary (`F_SEAL_WRITE|SHRINK|GROW|SEAL`): costs a copy of
//!    the binary on every start, used only where 1 is refused (old kernels, no privilege).
//!
//! The check for "already sealed" is cheap (one statvfs), so a second re-exec never happens.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Context, Error, Result};

/// Set in the environment of the re-executed capsa, so a failure to seal cannot loop.
const MARKER: &str = "_CAPSA_SEALED";

/// The library's guard before it forks into a container: a process that is not sealed is
/// refused (re-executing it here would restart whatever its caller had already done).
pub fn require_sealed() -> Result<()> {
    if is_sealed() {
        return Ok(());
    }
    Err(Error::new(
        "CVE-2019-5736 protection: this process runs from a writable binary; \
         call capsa::process::exeseal::ensure_sealed() at the start of main before starting containers",
    ))
}

/// Returns when /proc/self/exe is safe; otherwise re-execs and does not return. Call it
/// before doing anything else: the program starts over.
pub fn ensure_sealed() -> Result<()> {
    if is_sealed() {
        std::env::remove_var(MARKER);
        return Ok(());
    }
    if std::env::var_os(MARKER).is_some() {
        return Err(Error::new("CVE-2019-5736 protection: re-executed capsa is still writable"));
    }
    let fd = match readonly_clone() {
        Ok(fd) => fd,
        Err(_) => sealed_memfd_copy().ctx("CVE-2019-5736 protection: copy capsa to a sealed memfd")?,
    };
    reexec(fd)
}

/// True when capsa runs from a read-only mount or a write-sealed memfd.
pub fn is_sealed() -> bool {
    if let Ok(s) = nix::sys::statvfs::statvfs("/proc/self/exe") {
        if s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
            return true;
        }
    }
    if let Ok(f) = std::fs::File::open("/proc/self/exe") {
        // SAFETY: F_GET_SEALS takes no argument and only reads the file's seals.
        let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
        if seals > 0 && seals & libc::F_SEAL_WRITE != 0 {
            return true;
        }
    }
    false
}

fn readonly_clone() -> Result<OwnedFd> {
    use capsa_sys::mount;
    let fd = mount::clone_tree_at("/proc/self/exe", false).ctx("open_tree")?;
    mount::set_attr(fd.as_fd(), mount::Attr { set: mount::MOUNT_ATTR_RDONLY, ..Default::default() }).ctx("mount_setattr")?;
    Ok(fd)
}

fn sealed_memfd_copy() -> Result<OwnedFd> {
    let mfd =
        nix::sys::memfd::memfd_create(c"capsa", nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING)
            .ctx("memfd_create")?;
    let mut src = std::fs::File::open("/proc/self/exe").ctx("open /proc/self/exe")?;
    let mut dst = std::fs::File::from(mfd);
    std::io::copy(&mut src, &mut dst).ctx("copy")?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS with an integer argument on our own memfd.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context("seal memfd"));
    }
    Ok(OwnedFd::from(dst))
}

fn reexec(fd: OwnedFd) -> Result<()> {
    let args: Vec<CString> =
        std::env::args_os().map(|a| CString::new(a.as_bytes()).map_err(|_| Error::new("argument contains NUL"))).collect::<Result<_>>()?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            CString::new(kv.as_bytes()).ok()
        })
        .collect();
    env.push(CString::new(format!("{MARKER}=1")).map_err(|_| Error::new("env"))?);
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv/envp are NUL-terminated arrays of pointers into CStrings alive here;
    // execveat only returns on failure.
    unsafe { libc::syscall(libc::SYS_execveat, fd.as_raw_fd(), c"".as_ptr(), argv.as_ptr(), envp.as_ptr(), libc::AT_EMPTY_PATH) };
    Err(Error::from(std::io::Error::last_os_error()).context("CVE-2019-5736 protection: re-exec capsa"))
}

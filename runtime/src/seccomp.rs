//! `linux.seccomp`: compiled to BPF in the parent by the `capsa-seccomp` crate (pure Rust,
//! no libseccomp), loaded by the child as late as possible, and for SCMP_ACT_NOTIFY the
//! listener fd handed to the agent at `listenerPath` with the state the OCI spec defines.
//!
//! Compiled as runc compiles it ([`capsa_seccomp::Options::runc`]): syscall names no
//! architecture knows are skipped (logged at debug level), and syscalls newer than the newest
//! one the profile names get ENOSYS instead of the default action (runc's stub).
//!
//! When it is loaded (the same points as runc):
//! * with `noNewPrivileges`: after every other setup step, just before init reports ready;
//!   after it init only writes one sync message, reads exec.fifo and execs — syscalls any
//!   program needs, so a profile cannot block capsa's own last steps;
//! * without it: loading needs CAP_SYS_ADMIN, so before the user switch drops capabilities.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use capsa_seccomp::Program;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde::Serialize;

use crate::error::{Context, Error, Result};

pub struct SeccompPlan {
    pub program: Program,
    /// `listenerPath` and `listenerMetadata` when the profile uses SCMP_ACT_NOTIFY.
    pub listener: Option<(PathBuf, String)>,
}

/// Syscalls init makes between loading a filter and handing its NOTIFY listener fd to the
/// parent (`Msg::NotifyFd` is a write(2), the fd follows with sendmsg(2)). A NOTIFY rule on
/// one of them would block init on a listener nobody holds yet: `create` would hang, and
/// `delete --force` with it (init still holds the state dir's lock). runc refuses `write` for
/// the same reason (it passes the fd number over its pipe).
const NOTIFY_FORBIDDEN: [&str; 2] = ["write", "sendmsg"];

/// Compiles `linux.seccomp`; errors name the offending entry.
pub fn plan(seccomp: &oci_spec::runtime::LinuxSeccomp) -> Result<SeccompPlan> {
    let json = serde_json::to_value(seccomp).map_err(|e| Error::new(format!("linux.seccomp: {e}")))?;
    let profile: capsa_seccomp::Seccomp = serde_json::from_value(json).map_err(|e| Error::new(format!("linux.seccomp: {e}")))?;
    for (i, rule) in profile.syscalls.iter().enumerate().filter(|(_, r)| r.action == "SCMP_ACT_NOTIFY") {
        if let Some((j, name)) = rule.names.iter().enumerate().find(|(_, n)| NOTIFY_FORBIDDEN.contains(&n.as_str())) {
            return Err(Error::new(format!(
                "linux.seccomp.syscalls[{i}].names[{j}] = {name:?}: SCMP_ACT_NOTIFY cannot be used for {name} \
                 (the runtime needs it to hand the listener fd over)"
            )));
        }
    }
    // As runc with libseccomp: names no architecture knows are skipped (podman's and
    // docker's profiles list some), and syscalls newer than the profile get ENOSYS.
    let program = Program::compile_with(&profile, &capsa_seccomp::Options::runc())?;
    for name in program.skipped_names() {
        log::debug!("seccomp: unknown syscall name {name:?} ignored");
    }
    for (arch, nr) in program.enosys_above() {
        log::debug!("seccomp: syscalls above {nr} on {} return ENOSYS", arch.oci_name());
    }
    let listener = if program.needs_listener() {
        // The crate refuses NOTIFY rules without a listenerPath.
        let path = profile.listener_path.clone().unwrap_or_default();
        Some((PathBuf::from(path), profile.listener_metadata.clone().unwrap_or_default()))
    } else {
        None
    };
    Ok(SeccompPlan { program, listener })
}

/// Loads the filter into the calling process; returns the NOTIFY listener fd if any.
pub fn load(p: &SeccompPlan) -> Result<Option<OwnedFd>> {
    p.program.load().map_err(|e| Error::new(format!("linux.seccomp: load filter: {e}")))
}

/// The object sent with the listener fd (OCI runtime spec, "seccomp state").
#[derive(Serialize)]
struct SeccompState<'a> {
    #[serde(rename = "ociVersion")]
    oci_version: &'a str,
    fds: [&'a str; 1],
    pid: i32,
    metadata: &'a str,
    state: serde_json::Value,
}

/// Connects to `listenerPath` and sends the listener fd with the seccomp state.
pub fn send_to_agent(listener: &(PathBuf, String), fd: BorrowedFd<'_>, pid: i32, container_state: &str) -> Result<()> {
    let (path, metadata) = listener;
    // runc's words ("failed to connect with seccomp agent"), which callers match on.
    let sock = std::os::unix::net::UnixStream::connect(path)
        .with_ctx(|| format!("linux.seccomp.listenerPath {}: failed to connect with seccomp agent", path.display()))?;
    let state = SeccompState {
        oci_version: crate::config::OCI_VERSION,
        fds: ["seccompFd"],
        pid,
        metadata,
        state: serde_json::from_str(container_state).unwrap_or(serde_json::Value::Null),
    };
    let body = serde_json::to_vec(&state).map_err(|e| Error::new(e.to_string()))?;
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(&body)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .with_ctx(|| format!("linux.seccomp.listenerPath {}: send listener fd", path.display()))?;
    Ok(())
}

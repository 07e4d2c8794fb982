//! A user namespace with given id maps, held by an fd (for idmapped mounts, which need one
//! that no process has to stay in).

use std::os::fd::OwnedFd;

use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{pipe, ForkResult};

use crate::error::{Context, Error, Result};

/// A user namespace with these maps (for MOUNT_ATTR_IDMAP): a child unshares it and
/// waits while we write its maps and keep a handle on the namespace.
pub fn with_maps(uid_map: &str, gid_map: &str) -> Result<OwnedFd> {
    let (ready_r, ready_w) = pipe().ctx("pipe")?;
    let (done_r, done_w) = pipe().ctx("pipe")?;
    match super::fds::fork()? {
        ForkResult::Child => {
            drop(ready_r);
            drop(done_w);
            let ok = unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_w, if ok { b"1" } else { b"0" });
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&done_r, &mut b);
            // SAFETY: leave without running the parent's atexit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(done_r);
            let mut b = [0u8; 1];
            let r = nix::unistd::read(&ready_r, &mut b);
            let result = (|| {
                if !matches!(r, Ok(1)) || b[0] != b'1' {
                    return Err(Error::new("create a user namespace for the id mapping"));
                }
                std::fs::write(format!("/proc/{child}/uid_map"), uid_map).with_ctx(|| format!("uidMappings {uid_map:?}"))?;
                std::fs::write(format!("/proc/{child}/setgroups"), "deny").ctx("setgroups")?;
                std::fs::write(format!("/proc/{child}/gid_map"), gid_map).with_ctx(|| format!("gidMappings {gid_map:?}"))?;
                let f = std::fs::File::open(format!("/proc/{child}/ns/user")).ctx("open user namespace")?;
                Ok(OwnedFd::from(f))
            })();
            drop(done_w);
            let _ = waitpid(child, None);
            result
        }
    }
}

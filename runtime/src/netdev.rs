//! `linux.netDevices`: host network interfaces moved (and optionally renamed) into the
//! container's network namespace, with one rtnetlink RTM_NEWLINK request each. Written by
//! hand: it is one message, and the netlink crates pull in an async runtime.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::bail;
use crate::error::{Error, Result};

const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 0x2;
const IFLA_IFNAME: u16 = 3;
const IFLA_NET_NS_FD: u16 = 28;

/// (host name, name in the container).
pub type Moves = Vec<(String, String)>;

/// Checks `linux.netDevices` against the host; returns the moves to make.
pub fn plan(devs: &HashMap<String, oci_spec::runtime::LinuxNetDevice>, new_netns: bool) -> Result<Moves> {
    if devs.is_empty() {
        return Ok(Vec::new());
    }
    if !new_netns {
        bail!("linux.netDevices: needs a new network namespace in linux.namespaces");
    }
    let mut out = Vec::new();
    let mut names: Vec<&String> = devs.keys().collect();
    names.sort();
    for host in names {
        let target = devs[host].name().clone().filter(|n| !n.is_empty()).unwrap_or_else(|| host.clone());
        if target.len() >= libc::IFNAMSIZ || target.contains('/') || target.contains(char::is_whitespace) {
            bail!("linux.netDevices {host:?}.name {target:?}: not a valid interface name");
        }
        if ifindex(host) == 0 {
            bail!("linux.netDevices {host:?}: no such network device on the host");
        }
        out.push((host.clone(), target));
    }
    Ok(out)
}

fn ifindex(name: &str) -> u32 {
    let Ok(c) = std::ffi::CString::new(name) else { return 0 };
    // SAFETY: if_nametoindex reads a NUL-terminated name.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

fn attr(buf: &mut Vec<u8>, typ: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Moves each device into the network namespace of process `pid`.
pub fn move_into(moves: &Moves, pid: i32) -> Result<()> {
    if moves.is_empty() {
        return Ok(());
    }
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| Error::from(e).context("linux.netDevices: open netns"))?;
    // SAFETY: socket() with constant arguments; on success we own the returned fd.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if raw < 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context("linux.netDevices: netlink socket"));
    }
    // SAFETY: raw is a fresh fd nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // The kernel answers at once; never wait for ever on a reply.
    let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
    // SAFETY: setsockopt reads one timeval of the given size.
    unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    for (seq, (host, target)) in moves.iter().enumerate() {
        let mut body = Vec::new();
        // struct ifinfomsg: family, pad, type, index, flags, change.
        body.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
        body.extend_from_slice(&0u16.to_ne_bytes());
        body.extend_from_slice(&(ifindex(host) as i32).to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        attr(&mut body, IFLA_NET_NS_FD, &(netns.as_raw_fd() as u32).to_ne_bytes());
        let mut name = target.as_bytes().to_vec();
        name.push(0);
        attr(&mut body, IFLA_IFNAME, &name);
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&(seq as u32 + 1).to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        nix::unistd::write(&sock, &msg).map_err(|e| Error::from(e).context(format!("linux.netDevices {host:?}: send")))?;
        let mut reply = [0u8; 1024];
        let n = nix::unistd::read(&sock, &mut reply).map_err(|e| Error::from(e).context(format!("linux.netDevices {host:?}: receive")))?;
        if n >= 20 && u16::from_ne_bytes([reply[4], reply[5]]) == NLMSG_ERROR {
            let code = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
            if code != 0 {
                let e = Error::from(nix::errno::Errno::from_raw(-code));
                return Err(e.context(format!("linux.netDevices {host:?}: move into the container as {target:?}")));
            }
        }
    }
    Ok(())
}

//! User and group ids, and the container's `/etc/passwd` and `/etc/group`.
//!
//! Both files come from the image, which is the attacker: they are read inside the
//! container's root only if they are regular files (a FIFO would hang, `/dev/zero` would
//! never end), at most [`MAX_FILE`] bytes. Ids are checked wherever they enter: 4294967295
//! is `(uid_t)-1`, which setresuid(2) reads as "leave unchanged", so a process given that id
//! would simply stay root.

use std::path::Path;

use capsa_sys::Root;

use crate::bail;
use crate::error::{Context, Result};

/// The largest id a process may get: `(uid_t)-1` is "unchanged" to the kernel.
pub const MAX_ID: u32 = u32::MAX - 1;

/// How much of `/etc/passwd` or `/etc/group` is read.
pub const MAX_FILE: u64 = 4 << 20;

/// Refuses `(uid_t)-1` for `field`.
pub fn check_id(field: &str, id: u32) -> Result<u32> {
    if id > MAX_ID {
        bail!("{field} {id}: not a valid id (4294967295 is (uid_t)-1, which the kernel reads as \"unchanged\")");
    }
    Ok(id)
}

/// Parses an id from text (a passwd field, `--user`), refusing what is not a valid id.
pub fn parse_id(field: &str, s: &str) -> Result<u32> {
    let id: u32 = s.parse().map_err(|_| crate::error::Error::new(format!("{field} {s:?}: not a number from 0 to {MAX_ID}")))?;
    check_id(field, id)
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Reads `path` inside `root` as a regular file; `Ok(None)` when it does not exist. A file
/// masked with /dev/null (`linux.maskedPaths`) reads as empty.
pub fn read_db(root: &Root, path: &str) -> Result<Option<String>> {
    if let Ok(fd) = root.open_path(Path::new(path), capsa_sys::Follow::InRoot) {
        let st = nix::sys::stat::fstat(std::os::fd::AsFd::as_fd(&fd)).with_ctx(|| format!("stat the container's {path}"))?;
        if capsa_sys::root::kind(&st) == nix::sys::stat::SFlag::S_IFCHR && st.st_rdev == nix::sys::stat::makedev(1, 3) {
            return Ok(Some(String::new()));
        }
    }
    match root.read_file(Path::new(path), MAX_FILE) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e).with_ctx(|| format!("read the container's {path}")),
    }
}

/// The entries of a passwd file; lines that do not parse (or carry an invalid id) are
/// skipped, as libc does.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: parse_id("uid", f[2]).ok()?,
                gid: parse_id("gid", f[3]).ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// The entries of a group file (same rules as [`parse_passwd`]).
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: parse_id("gid", f[2]).ok()?,
                members: f.get(3).map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()).unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_at_the_boundary() {
        assert_eq!(check_id("uid", 4294967294).unwrap(), 4294967294);
        assert!(check_id("uid", 4294967295).unwrap_err().to_string().contains("(uid_t)-1"));
        assert!(parse_id("uid", "4294967295").is_err());
        assert!(parse_id("uid", "4294967296").is_err());
        assert!(parse_id("uid", "-1").is_err());
        assert_eq!(parse_id("uid", "0").unwrap(), 0);
    }

    #[test]
    fn passwd_and_group() {
        let p = parse_passwd("root:x:0:0:root:/root:/bin/sh\nbad\nneg:x:-1:0::/:\nmax:x:4294967295:0::/:\nu:x:1000:100::/home/u:/bin/sh\n");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1], PasswdEntry { name: "u".into(), uid: 1000, gid: 100, home: "/home/u".into() });
        let g = parse_group("wheel:x:10:root,u\nempty:x:20:\nmax:x:4294967295:u\n");
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].members, vec!["root", "u"]);
        assert!(g[1].members.is_empty());
    }
}

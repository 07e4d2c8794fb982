//! `/proc/PID/mountinfo`, parsed once for the whole workspace (runtime, cgroups, shim).
//!
//! A line is `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`;
//! the kernel escapes space, tab, newline and backslash in paths as `\ooo` octal.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub id: u32,
    pub parent: u32,
    pub major: u32,
    pub minor: u32,
    /// The directory of the filesystem mounted here (`/` unless a bind of a subdirectory).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,relatime`).
    pub options: String,
    /// Optional fields such as `shared:12` or `master:3`.
    pub optional: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

impl MountInfo {
    /// The peer group this mount is shared in, if any (`shared:N`).
    pub fn shared(&self) -> bool {
        self.optional.iter().any(|o| o.starts_with("shared:"))
    }
}

/// Reads and parses `/proc/self/mountinfo`.
pub fn read_self() -> std::io::Result<Vec<MountInfo>> {
    read("/proc/self/mountinfo")
}

/// Reads and parses a mountinfo file (`/proc/PID/mountinfo`). Read as bytes: a path in
/// it may be any bytes (a mount of an image's directory whose name is not UTF-8), and no
/// such mount may stop us from reading the others.
pub fn read(path: &str) -> std::io::Result<Vec<MountInfo>> {
    use std::io::Read;
    // procfs files have no size: start big, so a long table is read in a few calls.
    let mut text = Vec::with_capacity(64 << 10);
    std::fs::File::open(path)?.read_to_end(&mut text)?;
    Ok(parse_bytes(&text))
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\134` for a backslash).
pub fn unescape(s: &str) -> OsString {
    unescape_bytes(s.as_bytes())
}

fn unescape_bytes(b: &[u8]) -> OsString {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = u32::from(b[i + 1] - b'0') * 64 + u32::from(b[i + 2] - b'0') * 8 + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountInfo> {
    parse_bytes(text.as_bytes())
}

/// Parses mountinfo as read; paths are kept as the bytes they are, the other fields are text.
pub fn parse_bytes(text: &[u8]) -> Vec<MountInfo> {
    text.split(|c| *c == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<MountInfo> {
    let at = line.windows(3).position(|w| w == b" - ")?;
    let (left, right) = (&line[..at], &line[at + 3..]);
    let l: Vec<&[u8]> = left.split(|c| *c == b' ').collect();
    let r: Vec<&[u8]> = right.splitn(3, |c| *c == b' ').collect();
    if l.len() < 6 || r.len() < 3 {
        return None;
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let num = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u32>().ok();
    let dev = std::str::from_utf8(l[2]).ok()?;
    let (major, minor) = dev.split_once(':')?;
    Some(MountInfo {
        id: num(l[0])?,
        parent: num(l[1])?,
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: PathBuf::from(unescape_bytes(l[3])),
        mount_point: PathBuf::from(unescape_bytes(l[4])),
        options: text(l[5]),
        optional: l[6..].iter().map(|s| text(s)).collect(),
        fstype: text(r[0]),
        source: unescape_bytes(r[1]).to_string_lossy().into_owned(),
        super_options: text(r[2]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn parses_lines_with_escapes_and_optional_fields() {
        let t = "36 35 98:0 /mnt1 /mnt\\040x rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n\
                 40 30 0:35 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                 garbage line\n\
                 41 30 0:36 /a\\134b /t\\011ab\\012 rw - tmpfs my\\040src rw\n";
        let m = parse(t);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].id, 36);
        assert_eq!(m[0].parent, 35);
        assert_eq!((m[0].major, m[0].minor), (98, 0));
        assert_eq!(m[0].root, PathBuf::from("/mnt1"));
        assert_eq!(m[0].mount_point.to_str(), Some("/mnt x"));
        assert_eq!(m[0].optional, vec!["master:1", "shared:2"]);
        assert!(m[0].shared());
        assert_eq!(m[1].fstype, "cgroup");
        assert_eq!(m[1].super_options, "rw,memory");
        assert!(!m[1].shared());
        assert_eq!(m[2].root.to_str(), Some("/a\\b"));
        assert_eq!(m[2].mount_point.to_str(), Some("/t\tab\n"));
        assert_eq!(m[2].source, "my src");
    }

    #[test]
    fn paths_that_are_not_utf8() {
        let t = b"50 30 0:40 /x\xff /run/m\xfe rw - overlay overlay rw\n51 30 0:41 / /ok rw - tmpfs tmpfs rw\n";
        let m = parse_bytes(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].root.as_os_str().as_bytes(), b"/x\xff");
        assert_eq!(m[0].mount_point.as_os_str().as_bytes(), b"/run/m\xfe");
        assert_eq!(m[1].mount_point, PathBuf::from("/ok"));
    }

    #[test]
    fn unescape_edges() {
        assert_eq!(unescape("a\\04"), OsString::from("a\\04"));
        assert_eq!(unescape("\\040"), OsString::from(" "));
        assert_eq!(unescape("\\777"), OsString::from("\\777"));
        assert_eq!(unescape("\\\\040"), OsString::from("\\ "));
    }

    #[test]
    fn reads_own_mountinfo() {
        let m = read_self().unwrap();
        assert!(m.iter().any(|m| m.mount_point == std::path::Path::new("/")));
    }
}

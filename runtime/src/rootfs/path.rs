//! Resolving a path *inside* the rootfs: symlinks are followed as if the rootfs were
//! `/`, so a link such as `etc -> /../../../etc` can never lead a mount outside it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::bail;
use crate::error::{Context, Result};

const MAX_SYMLINKS: usize = 255;

fn parts(p: &Path) -> impl DoubleEndedIterator<Item = OsString> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(s) => Some(s.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

/// Joins `path` to `root`, resolving symlinks within `root`. Components that do not
/// exist (yet) are kept as they are.
pub fn secure_join(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut pending: VecDeque<OsString> = parts(path).collect();
    let mut current = PathBuf::new();
    let mut links = 0;
    while let Some(comp) = pending.pop_front() {
        if comp == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&comp);
        let full = root.join(&next);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    bail!("{}: too many levels of symbolic links", path.display());
                }
                let target = std::fs::read_link(&full).with_ctx(|| format!("readlink {}", full.display()))?;
                if target.is_absolute() {
                    current = PathBuf::new();
                }
                for c in parts(&target).rev() {
                    pending.push_front(c);
                }
            }
            _ => current = next,
        }
    }
    Ok(root.join(current))
}

/// Opens `full` (already resolved by [`secure_join`]) with `O_PATH|O_NOFOLLOW` and checks,
/// through the kernel's own view of the fd, that it still lies inside `root`. Mounting on
/// `/proc/self/fd/N` of that fd closes the race where a path is swapped for a symlink.
pub fn open_inside(root: &Path, full: &Path) -> Result<OwnedFd> {
    let fd =
        open(full, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).with_ctx(|| format!("open {}", full.display()))?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).with_ctx(|| format!("resolve {}", full.display()))?;
    if !real.starts_with(root) {
        bail!("{}: resolves to {} outside the rootfs", full.display(), real.display());
    }
    Ok(fd)
}

/// `mkdir -p` of `full` (a path inside `root` from [`secure_join`]).
pub fn mkdir_all(full: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(mode).create(full).with_ctx(|| format!("mkdir {}", full.display()))
}

/// Creates an empty file at `full` (for bind-mounting a file on it) if nothing is there.
pub fn create_file(full: &Path) -> Result<()> {
    if let Some(parent) = full.parent() {
        mkdir_all(parent, 0o755)?;
    }
    match std::fs::symlink_metadata(full) {
        Ok(_) => Ok(()),
        Err(_) => std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(full)
            .map(|_| ())
            .with_ctx(|| format!("create {}", full.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside() {
        let dir = std::env::temp_dir().join(format!("capsa-path-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        symlink("/../../../etc", root.join("evil")).unwrap();
        symlink("real", root.join("rel")).unwrap();
        symlink("/real/sub", root.join("abs")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(secure_join(&root, Path::new("/evil/passwd")).unwrap(), root.join("etc/passwd"));
        assert_eq!(secure_join(&root, Path::new("/rel/sub")).unwrap(), root.join("real/sub"));
        assert_eq!(secure_join(&root, Path::new("abs/x")).unwrap(), root.join("real/sub/x"));
        assert_eq!(secure_join(&root, Path::new("/../../x")).unwrap(), root.join("x"));
        assert!(secure_join(&root, Path::new("/loop")).is_err());
        let fd = open_inside(&root, &root.join("real")).unwrap();
        drop(fd);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

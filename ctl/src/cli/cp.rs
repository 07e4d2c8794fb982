//! `cp [-a] [-L] CONTAINER:SRC DEST|-` and `cp [-a] [-L] SRC|- CONTAINER:DEST`, with
//! docker's rules for files and directories (`SRC/.` copies a directory's content).
//!
//! Safe against the symlink-swap race of CVE-2018-15664: every path on the container's
//! side is resolved by the kernel inside the container's root (RESOLVE_IN_ROOT) and the
//! copy walks by file descriptor, never following a symlink it meets (see fstree.rs); and
//! nothing of the container's is loaded or run (CVE-2019-14271): no chroot helper, no NSS.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;

use capsa_sys::{Follow, Root};

use super::{fail, Cli, Result};
use crate::container::{self, fs::View};
use crate::fstree::{self, CopyOpts};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Archive mode (copy all uid/gid information).
    #[arg(short, long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH.
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress progress output.
    #[arg(short, long)]
    pub quiet: bool,
    pub src: String,
    pub dest: String,
}

/// `NAME:PATH` → (NAME, PATH); a local path has no `:` before its first `/`.
fn split(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') || arg == "-" {
        return None;
    }
    let (c, p) = arg.split_once(':')?;
    if c.is_empty() || c.contains('/') {
        return None;
    }
    Some((c, p))
}

/// A source entry: its directory and its name in it; `contents`: `SRC/.` (copy what is
/// inside, not the directory itself).
struct Source {
    parent: OwnedFd,
    name: OsString,
    contents: bool,
}

fn err(e: std::io::Error, what: &str) -> super::Failure {
    fail(format!("{what}: {e}"))
}

fn wants_contents(p: &str) -> bool {
    p.ends_with("/.") || p == "."
}

fn parent_and_name(p: &Path) -> (PathBuf, OsString) {
    let name = p.file_name().map(OsStr::to_os_string).unwrap_or_else(|| OsString::from("."));
    let parent = p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    (parent, name)
}

/// Resolves `rel` in `root` to a source entry: every component but the last is followed
/// inside the root by the kernel (RESOLVE_IN_ROOT, crossing into the volumes mounted
/// there); a final symlink is the entry itself, or with `follow` (-L, or a path ending in
/// `/` or `/.`) is followed too, each step resolved again inside the root.
fn container_source(root: &Root, rel: &Path, follow: bool, contents: bool) -> Result<Source> {
    let mut rel = rel.to_path_buf();
    for _ in 0..40 {
        if rel == Path::new("/") || rel.as_os_str().is_empty() {
            // The root itself: its content.
            let fd = root.open_at(Path::new("/"), OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::InRoot).map_err(|e| err(e, "open /"))?;
            return Ok(Source { parent: fd, name: OsString::from("."), contents: true });
        }
        let (parent, name) = parent_and_name(&rel);
        let missing = |e| fail(format!("Could not find the file {} in container: {e}", rel.display()));
        let pfd = root.open_at(&parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::InRoot).map_err(missing)?;
        let st = fstree::lstat_at(pfd.as_fd(), &name).map_err(missing)?;
        if follow && fstree::kind(&st) == SFlag::S_IFLNK {
            let target = fstree::read_link_at(pfd.as_fd(), &name).map_err(|e| err(e, "readlink"))?;
            let t = Path::new(&target);
            rel = if t.is_absolute() { t.to_path_buf() } else { parent.join(t) };
            continue;
        }
        return Ok(Source { parent: pfd, name, contents });
    }
    Err(fail("too many levels of symbolic links"))
}

/// The container's tree, as its processes see it, for `cp`: in a mount namespace of our
/// own, the rootfs with its volumes and binds mounted on it (see container::fs).
fn open_tree(cli: &Cli, c: &str) -> Result<(View, Root)> {
    let mut store = cli.store()?;
    let rec = container::find(&store, c)?;
    let rec = container::reconcile::one(&mut store, &cli.state_root, &rec)?.ok_or_else(|| fail(format!("No such container: {c}")))?;
    container::fs::private_mounts()?;
    let view = View::open(&store, &cli.state_root, &rec)?;
    view.mount_volumes(&store, &rec)?;
    let root = view.root()?;
    Ok((view, root))
}

/// A container path as typed, made absolute and clean (the kernel resolves it in the root).
fn container_path(p: &str) -> PathBuf {
    PathBuf::from(crate::container::create::clean_dest(&format!("/{p}")))
}

fn host_source(path: &str, follow: bool) -> Result<Source> {
    let contents = wants_contents(path);
    let p = if follow {
        std::fs::canonicalize(path).map_err(|e| err(e, path))?
    } else {
        std::path::absolute(path).map_err(|e| err(e, path))?
    };
    let (parent, name) = parent_and_name(&p);
    let pfd = OwnedFd::from(std::fs::File::open(&parent).map_err(|e| err(e, &parent.display().to_string()))?);
    fstree::lstat_at(pfd.as_fd(), &name).map_err(|e| err(e, path))?;
    Ok(Source { parent: pfd, name, contents })
}

fn is_dir_entry(s: &Source) -> bool {
    s.name == "." || fstree::lstat_at(s.parent.as_fd(), &s.name).is_ok_and(|st| fstree::kind(&st) == SFlag::S_IFDIR)
}

/// An fd on a directory source.
fn src_dir(s: &Source) -> Result<OwnedFd> {
    if s.name == "." {
        Ok(fstree::dup(s.parent.as_fd())?)
    } else {
        fstree::open_dir_at(s.parent.as_fd(), &s.name).map_err(|e| err(e, "open source"))
    }
}

/// Copies `src` into directory `dir`: as `name` (the entry itself, recursively), or with
/// `name` None (a directory source) its content only.
fn copy_into(src: &Source, dir: &OwnedFd, name: Option<&OsStr>, o: CopyOpts) -> Result<()> {
    match name {
        None => fstree::copy_contents(src_dir(src)?.as_fd(), dir.as_fd(), o).map_err(|e| err(e, "copy")),
        Some(n) if src.name == "." => {
            match nix::sys::stat::mkdirat(dir.as_fd(), n, nix::sys::stat::Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(fail(format!("mkdir {}: {}", n.to_string_lossy(), e.desc()))),
            }
            let d = fstree::open_dir_at(dir.as_fd(), n).map_err(|e| err(e, "open destination"))?;
            fstree::copy_contents(src.parent.as_fd(), d.as_fd(), o).map_err(|e| err(e, "copy"))
        }
        Some(n) => fstree::copy_entry(src.parent.as_fd(), &src.name, dir.as_fd(), n, o).map_err(|e| err(e, "copy")),
    }
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let o = CopyOpts { keep_owner: a.archive };
    match (split(&a.src), split(&a.dest)) {
        (Some(_), Some(_)) => Err(fail("copying between containers is not supported")),
        (None, None) => Err(fail("must specify at least one container source")),
        (Some((c, path)), None) => {
            let (_view, root) = open_tree(cli, c)?;
            // -L, or a path naming a directory's inside: a symlink named last is followed.
            let follow = a.follow_link || path.ends_with('/') || wants_contents(path);
            let src = container_source(&root, &container_path(path), follow, wants_contents(path))?;
            if a.dest == "-" {
                let stdout = std::io::stdout();
                let mut w = fstree::TarWriter::new(std::io::BufWriter::new(stdout.lock()), fstree::TarOpts::default());
                if src.name == "." {
                    w.add_tree(src.parent.as_fd(), Path::new(".")).map_err(|e| err(e, "tar"))?;
                } else {
                    w.add_entry(src.parent.as_fd(), &src.name, Path::new(&src.name)).map_err(|e| err(e, "tar"))?;
                }
                w.finish().and_then(|mut b| b.flush()).map_err(|e| err(e, "tar"))?;
                return Ok(0);
            }
            to_host(&src, &a.dest, o)?;
            Ok(0)
        }
        (None, Some((c, path))) => {
            let (_view, root) = open_tree(cli, c)?;
            // A destination that is a symlink is followed, as docker does (so that one can
            // copy into a symlink to a directory): resolved inside the root by the kernel.
            let rel = container_path(path);
            if a.src == "-" {
                // A tar stream into the destination directory (which must exist). Its
                // entries are plain files: `.wh.` names are not whiteouts here.
                let d = root
                    .open_at(&rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::InRoot)
                    .map_err(|e| fail(format!("Could not find the file {path} in container: {e}")))?;
                let droot = Root::from_fd(d, &rel);
                let mut ar = tar::Archive::new(std::io::stdin().lock());
                let entries = ar.entries().map_err(|e| err(e, "read tar"))?;
                capsa_image::layer::apply_plain(entries, &droot, "stdin")?;
                return Ok(0);
            }
            let src = host_source(&a.src, a.follow_link)?;
            to_container(&src, &root, &rel, path, o)?;
            Ok(0)
        }
    }
}

/// docker's destination rules on the host side (a path the user gave: trusted).
fn to_host(src: &Source, dest: &str, o: CopyOpts) -> Result<()> {
    let d = Path::new(dest);
    let src_is_dir = is_dir_entry(src);
    let abs = std::path::absolute(d).map_err(|e| err(e, dest))?;
    match std::fs::metadata(&abs) {
        Ok(m) if m.is_dir() => {
            let dfd = OwnedFd::from(std::fs::File::open(&abs).map_err(|e| err(e, dest))?);
            let name = (!(src_is_dir && (src.contents || src.name == "."))).then_some(src.name.as_os_str());
            copy_into(src, &dfd, name, o)
        }
        Ok(_) if src_is_dir => Err(fail(format!("cannot copy a directory to a file: {dest}"))),
        _ if src_is_dir => {
            let (parent, _) = parent_and_name(&abs);
            if !parent.is_dir() {
                return Err(fail(format!("destination directory {} must exist", parent.display())));
            }
            std::fs::create_dir(&abs).map_err(|e| err(e, dest))?;
            let dfd = OwnedFd::from(std::fs::File::open(&abs).map_err(|e| err(e, dest))?);
            copy_into(src, &dfd, None, o)
        }
        _ => {
            if dest.ends_with('/') {
                return Err(fail(format!("destination directory {dest} must exist")));
            }
            let (parent, name) = parent_and_name(&abs);
            let pfd = OwnedFd::from(std::fs::File::open(&parent).map_err(|e| fail(format!("destination {}: {e}", parent.display())))?);
            copy_into(src, &pfd, Some(&name), o)
        }
    }
}

/// docker's destination rules inside the container: resolved in its root.
fn to_container(src: &Source, root: &Root, rel: &Path, shown: &str, o: CopyOpts) -> Result<()> {
    let src_is_dir = is_dir_entry(src);
    let existing = root.open_at(rel, OFlag::O_PATH, Follow::InRoot).ok();
    let is_dir =
        existing.as_ref().and_then(|f| nix::sys::stat::fstat(f.as_fd()).ok()).is_some_and(|st| fstree::kind(&st) == SFlag::S_IFDIR);
    if is_dir {
        let dfd = root.open_at(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::InRoot).map_err(|e| err(e, shown))?;
        let name = (!(src_is_dir && (src.contents || src.name == "."))).then_some(src.name.as_os_str());
        return copy_into(src, &dfd, name, o);
    }
    if existing.is_some() && src_is_dir {
        return Err(fail(format!("cannot copy a directory to a file: {shown}")));
    }
    if shown.ends_with('/') && !src_is_dir {
        return Err(fail(format!("destination directory {shown} must exist")));
    }
    let (parent, name) = parent_and_name(rel);
    let pfd = root
        .open_at(&parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::InRoot)
        .map_err(|e| fail(format!("Could not find the file {} in container: {e}", parent.display())))?;
    if src_is_dir {
        match nix::sys::stat::mkdirat(pfd.as_fd(), name.as_os_str(), nix::sys::stat::Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(fail(format!("mkdir {shown}: {}", e.desc()))),
        }
        let dfd = fstree::open_dir_at(pfd.as_fd(), &name).map_err(|e| err(e, shown))?;
        return copy_into(src, &dfd, None, o);
    }
    copy_into(src, &pfd, Some(&name), o)
}

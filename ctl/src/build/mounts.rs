//! `RUN --mount`, as BuildKit's: what one RUN sees besides its rootfs. Nothing of a mount
//! is committed in the step's layer (its mount point, if the image lacked it, goes too).
//!
//! - `type=bind` (the default): a path of the build context, a stage or an image, read-only
//!   unless `rw` (writes are then thrown away). A context path is copied to the scratch
//!   dir, filtered by .dockerignore as COPY's sources are; a stage's or image's is bound
//!   from its own overlay (a fresh upper dir), resolved inside that root.
//! - `type=cache`: a directory kept between builds under `<store>/build-mounts/`, found by
//!   its `id` (default: the target), shared by the builds that name it (`sharing=shared`),
//!   taken in turn (`locked`) or, when busy, replaced by an empty one (`private`).
//! - `type=tmpfs`: an empty tmpfs (`size`).
//! - `type=secret`: a secret given with `build --secret id=ID[,src=FILE|,env=VAR]`, as a
//!   file (mode 0400 unless `mode`) at /run/secrets/ID unless `target`. Not required by
//!   default: absent, the RUN runs without it. Its content is not in the cache key.
//! - `type=ssh` is refused: there is no SSH agent forwarding here.
//!
//! The cache key of a RUN holds each mount's options and, for a bind of the context, the
//! checksum of what it binds; for a stage or an image, its top layer's chain id.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use capsa_image::digest::Digest;
use capsa_image::Store;
use capsa_sys::{Follow, Root};
use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use super::sources::{self, CopyOpts, SourceRoot};
use crate::container::config::MountPoint;
use crate::container::flock;

/// How builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// `from`: a stage or an image (None: the build context); `source` in it.
    Bind {
        from: Option<String>,
        source: String,
        rw: bool,
    },
    Cache {
        id: String,
        from: Option<String>,
        source: String,
        ro: bool,
        sharing: Sharing,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Tmpfs {
        size: Option<i64>,
    },
    Secret {
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
        /// Also (or, without a target, only) as this environment variable of the RUN.
        env: Option<String>,
    },
}

/// One `--mount`: where it goes (absolute, clean) and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    pub target: String,
    pub spec: Spec,
}

/// A secret given on the command line: a file's content or an environment variable's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretSource {
    File(std::path::PathBuf),
    Env(String),
}

/// `--mount`'s fields (`k=v` or bare `k`, comma-separated, a value in double quotes may
/// hold commas), keys lowercased.
fn fields(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut parts = Vec::new();
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    parts.push(cur);
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        match p.split_once('=') {
            Some((k, v)) => out.push((k.trim().to_ascii_lowercase(), Some(v.to_string()))),
            None => out.push((p.to_ascii_lowercase(), None)),
        }
    }
    Ok(out)
}

/// The raw `from=` of a `--mount` (before substitution), for the stages a stage needs.
pub fn from_of(text: &str) -> Option<String> {
    fields(text).ok()?.into_iter().find(|(k, _)| k == "from").and_then(|(_, v)| v).filter(|v| !v.is_empty())
}

fn boolean(k: &str, v: Option<&str>) -> Result<bool, String> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(format!("{k}={v}: want true or false")),
    }
}

fn number(k: &str, v: &str) -> Result<u32, String> {
    v.parse().map_err(|_| format!("{k}={v}: not a number"))
}

fn octal(k: &str, v: &str) -> Result<u32, String> {
    u32::from_str_radix(v, 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| format!("{k}={v}: not an octal mode"))
}

/// Parses one `--mount` value. `expand` substitutes variables in a field's value (it is
/// given the key: `from` sees the global scope only, as COPY --from); a relative target
/// is below `workdir`.
pub fn parse(text: &str, workdir: &str, expand: &dyn Fn(&str, &str) -> Result<String, String>) -> Result<RunMount, String> {
    let mut f: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (k, v) in fields(text)? {
        let k = match k.as_str() {
            "dst" | "destination" => "target".to_string(),
            "src" => "source".to_string(),
            "readonly" => "ro".to_string(),
            "readwrite" => "rw".to_string(),
            _ => k,
        };
        let v = match v {
            Some(raw) => {
                let v = expand(&k, &raw)?;
                if k == "from" && v.is_empty() && !raw.is_empty() {
                    return Err(format!("from={raw}: names nothing (only ARGs declared before the first FROM can be used in from=)"));
                }
                Some(v)
            }
            None => None,
        };
        // A key given twice: the last one, as BuildKit.
        f.insert(k, v);
    }
    let typ = f.remove("type").map(|v| v.unwrap_or_default().to_ascii_lowercase()).unwrap_or_else(|| "bind".into());
    let allowed: &[&str] = match typ.as_str() {
        "bind" => &["target", "source", "from", "rw", "ro"],
        "cache" => &["target", "source", "from", "rw", "ro", "id", "sharing", "mode", "uid", "gid"],
        "tmpfs" => &["target", "size"],
        "secret" => &["target", "id", "required", "mode", "uid", "gid", "env"],
        "ssh" => return Err("type=ssh: SSH agent forwarding is not supported by capsactl build".into()),
        t => return Err(format!("type={t}: unknown mount type (want bind, cache, tmpfs or secret)")),
    };
    if let Some(k) = f.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{k}: not an option of type={typ} (want {})", allowed.join(", ")));
    }
    let value = |k: &str| -> Result<Option<String>, String> {
        match f.get(k) {
            None => Ok(None),
            Some(None) => Err(format!("{k}: needs a value ({k}=…)")),
            Some(Some(v)) => Ok(Some(v.clone())),
        }
    };
    let flag = |k: &str| -> Result<Option<bool>, String> { f.get(k).map(|v| boolean(k, v.as_deref())).transpose() };
    let ids = |default_mode: u32| -> Result<(u32, u32, u32), String> {
        Ok((
            value("mode")?.map(|v| octal("mode", &v)).transpose()?.unwrap_or(default_mode),
            value("uid")?.map(|v| number("uid", &v)).transpose()?.unwrap_or(0),
            value("gid")?.map(|v| number("gid", &v)).transpose()?.unwrap_or(0),
        ))
    };
    // rw and ro say the same thing twice; `ro` wins if both are given, as BuildKit.
    let rw = match (flag("rw")?, flag("ro")?) {
        (_, Some(ro)) => !ro,
        (Some(rw), None) => rw,
        (None, None) => typ == "cache",
    };
    // Lexically clean, `..` included, as BuildKit's (the runtime resolves it in the rootfs
    // anyway).
    let absolute = |t: &str| -> String {
        let full = if t.starts_with('/') { t.to_string() } else { format!("{workdir}/{t}") };
        format!("/{}", super::glob::clean(&full))
    };
    let target = value("target")?.filter(|t| !t.is_empty()).map(|t| absolute(&t));
    let from = value("from")?.filter(|v| !v.is_empty());
    let source = value("source")?.unwrap_or_default();
    let (target, spec) = match typ.as_str() {
        "bind" => (target, Spec::Bind { from, source, rw }),
        "cache" => {
            let t = target.clone().unwrap_or_default();
            let id = value("id")?.filter(|v| !v.is_empty()).unwrap_or(t);
            let sharing = match value("sharing")?.map(|v| v.to_ascii_lowercase()).as_deref() {
                None | Some("shared") => Sharing::Shared,
                Some("private") => Sharing::Private,
                Some("locked") => Sharing::Locked,
                Some(s) => return Err(format!("sharing={s}: want shared, private or locked")),
            };
            let (mode, uid, gid) = ids(0o755)?;
            (target, Spec::Cache { id, from, source, ro: !rw, sharing, mode, uid, gid })
        }
        "tmpfs" => {
            let size = value("size")?.map(|s| crate::container::config::parse_bytes(&s, "size")).transpose()?;
            (target, Spec::Tmpfs { size })
        }
        _ => {
            let env = value("env")?.filter(|v| !v.is_empty());
            let id = match (value("id")?.filter(|v| !v.is_empty()), &target, &env) {
                (Some(id), _, _) => id,
                (None, Some(t), _) => t.rsplit('/').next().unwrap_or_default().to_string(),
                (None, None, Some(e)) => e.clone(),
                (None, None, None) => return Err("type=secret: give an id or a target".into()),
            };
            if env.as_ref().is_some_and(|e| e.contains('=')) {
                return Err(format!("env={}: not a variable name", env.unwrap_or_default()));
            }
            // With env= (Dockerfile 1.10) and no target, the secret is only a variable.
            let target = match (&target, &env) {
                (None, Some(_)) => String::new(),
                _ => target.unwrap_or_else(|| absolute(&format!("/run/secrets/{id}"))),
            };
            let required = flag("required")?.unwrap_or(false);
            let (mode, uid, gid) = ids(0o400)?;
            (Some(target), Spec::Secret { id, required, mode, uid, gid, env })
        }
    };
    let target = target.ok_or_else(|| format!("type={typ}: target is required"))?;
    if target == "/" {
        return Err("target=/: a mount cannot replace the root".into());
    }
    Ok(RunMount { target, spec })
}

/// `build --secret id=ID[,src=FILE|,env=VAR][,type=file|env]`, as docker's: without a
/// source, the file or variable named by the id.
pub fn parse_secret(text: &str) -> Result<(String, SecretSource), String> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut typ = None;
    for (k, v) in fields(text)? {
        let v = v.ok_or_else(|| format!("--secret {text}: {k} needs a value"))?;
        match k.as_str() {
            "id" => id = Some(v),
            "src" | "source" => src = Some(v),
            "env" => env = Some(v),
            "type" if v == "file" || v == "env" => typ = Some(v),
            "type" => return Err(format!("--secret {text}: type={v}: want file or env")),
            _ => return Err(format!("--secret {text}: unknown key {k:?} (want id, src, env, type)")),
        }
    }
    let id = id.filter(|i| !i.is_empty()).ok_or_else(|| format!("--secret {text}: an id is required (id=…)"))?;
    let source = match (src, env, typ.as_deref()) {
        (Some(_), Some(_), _) => return Err(format!("--secret {text}: give src or env, not both")),
        (Some(s), None, _) => SecretSource::File(std::path::PathBuf::from(s)),
        (None, Some(e), _) => SecretSource::Env(e),
        // Neither: the variable named by the id if it is set (or type=env), else the file.
        (None, None, Some("env")) => SecretSource::Env(id.clone()),
        (None, None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
        (None, None, _) => SecretSource::File(std::path::PathBuf::from(&id)),
    };
    Ok((id, source))
}

/// Largest secret taken (BuildKit's limit).
pub const SECRET_MAX: u64 = 500 << 10;

/// What one mount needs besides its options, worked out with the cache key: for a bind of
/// the context, the checksum of its source; for a `from`, the stage's or image's layers.
pub struct Planned {
    pub mount: RunMount,
    pub context_sum: Option<String>,
    pub from_chain: Option<Vec<Digest>>,
}

impl Planned {
    /// What the RUN's cache key holds of this mount: its options, and what a bind binds or
    /// a cache mount is filled from (a context source's checksum, a stage's or image's top
    /// layer). A cache mount's content, a tmpfs's and a secret's are not in it, as
    /// BuildKit's.
    pub fn key(&self) -> String {
        let bound = match &self.mount.spec {
            Spec::Bind { .. } | Spec::Cache { from: Some(_), .. } => {
                let top = self.from_chain.as_ref().and_then(|c| c.last()).map(|d| d.to_string()).unwrap_or_default();
                format!("{}{top}", self.context_sum.as_deref().unwrap_or_default())
            }
            _ => String::new(),
        };
        format!("{:?} {bound}", self.mount)
    }
}

/// The mounts of a RUN while it runs: the locks of its cache mounts are held until this
/// is dropped. The scratch directories ([`scratch_dirs`]) are the caller's to remove.
pub struct Prepared {
    pub mounts: Vec<MountPoint>,
    /// `VAR=value` of the secrets given as variables (`env=`).
    pub env: Vec<String>,
    _locks: Vec<File>,
}

/// Where the mounts of a RUN come from.
pub struct Inputs<'a> {
    pub store: &'a Store,
    pub scratch: &'a Path,
    pub context: &'a SourceRoot,
    pub secrets: &'a BTreeMap<String, SecretSource>,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// `source` resolved inside the root of `chain` (a stage or image), mounted in `dir`: an
/// `O_PATH` fd on it (the runtime is never given a path made of the image's names, see
/// [`bind_fd`]).
fn source_in(store: &Store, chain: &[Digest], dir: &Path, source: &str, from: &str) -> Result<OwnedFd, String> {
    let rootfs = store.snapshots.mount_rootfs(chain, dir).map_err(|e| format!("from={from}: {e}"))?;
    let root = Root::open(&rootfs.path).map_err(io("open the source's root"))?;
    root.open_at(Path::new(if source.is_empty() { "/" } else { source }), OFlag::O_PATH, Follow::InRoot)
        .map_err(|e| format!("source={source}: not found in {from}: {e}"))
}

/// Binds what `fd` is onto `<dir>/rootfs` (an empty directory or file made to match), a
/// path of ours that the runtime is given instead of the source's: the image's names in a
/// path (a symlink beside a name that is not UTF-8, a component swapped meanwhile) must
/// never be resolved again, from the host's root. `run::remove_dir` unmounts it.
fn bind_fd(fd: &OwnedFd, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(io("make a mount's scratch dir"))?;
    let st = nix::sys::stat::fstat(fd).map_err(|e| format!("stat a mount's source: {e}"))?;
    let at = dir.join("rootfs");
    let is_dir = crate::fstree::kind(&st) == nix::sys::stat::SFlag::S_IFDIR;
    let made = if is_dir { std::fs::create_dir(&at) } else { File::create(&at).map(drop) };
    made.map_err(io("make a mount point"))?;
    let src = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::mount::mount(Some(src.as_str()), &at, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("bind a mount's source: {e}"))?;
    Ok(at)
}

/// A tmpfs of our own at `<dir>/rootfs` (mode 0700), for what must not reach the disk
/// (`run::remove_dir` of `dir`, or of its parent, unmounts it).
pub fn private_tmpfs(dir: &Path) -> Result<PathBuf, String> {
    use nix::mount::MsFlags;
    let at = dir.join("rootfs");
    std::fs::create_dir_all(&at).map_err(io("make a mount point"))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // Room for a RUN's config.json with a few secrets of the largest size (SECRET_MAX).
    nix::mount::mount(Some("tmpfs"), &at, Some("tmpfs"), flags, Some("mode=0700,size=8m"))
        .map_err(|e| format!("mount a tmpfs for a secret: {e}"))?;
    Ok(at)
}

/// A bind of `source`, a path of ours (the scratch dir's, the store's): never lossy.
fn bind(target: &str, source: PathBuf, rw: bool) -> Result<MountPoint, String> {
    let source = source.to_str().ok_or_else(|| format!("{}: not UTF-8", source.display()))?.to_string();
    Ok(MountPoint { typ: "bind".into(), source, destination: target.to_string(), rw, ..Default::default() })
}

/// The scratch directories of mount `i` of a RUN (`run::remove_dir` each: the bind of a
/// source first, then the stage's overlay it is in).
pub fn scratch_dirs(scratch: &Path, i: usize) -> [PathBuf; 2] {
    [scratch.join(format!("mnt-{i}-src")), scratch.join(format!("mnt-{i}"))]
}

/// Makes what each mount binds, in the scratch dir (and the store's cache mounts).
pub fn prepare(inp: &Inputs<'_>, list: &[Planned]) -> Result<Prepared, String> {
    let mut p = Prepared { mounts: Vec::new(), env: Vec::new(), _locks: Vec::new() };
    // Cache mounts first, each directory once (two mounts of one id share it), their locks
    // taken in the order of their names: two RUNs never wait for each other in a cycle.
    let mut caches: BTreeMap<String, (usize, PathBuf)> = BTreeMap::new();
    for (i, pl) in list.iter().enumerate() {
        if let Spec::Cache { id, .. } = &pl.mount.spec {
            caches.entry(cache_name(id, pl.from_chain.as_deref())).or_insert((i, PathBuf::new()));
        }
    }
    for (name, (i, data)) in caches.iter_mut() {
        let pl = &list[*i];
        let Spec::Cache { from, source, mode, uid, gid, .. } = &pl.mount.spec else { continue };
        // The strongest sharing any of its mounts asks for.
        let sharing = list
            .iter()
            .filter_map(|q| match &q.mount.spec {
                Spec::Cache { id, sharing, .. } if cache_name(id, q.from_chain.as_deref()) == *name => Some(*sharing),
                _ => None,
            })
            .max_by_key(|s| match s {
                Sharing::Shared => 0,
                Sharing::Private => 1,
                Sharing::Locked => 2,
            })
            .unwrap_or(Sharing::Shared);
        let [_, dir] = scratch_dirs(inp.scratch, *i);
        std::fs::create_dir_all(&dir).map_err(io("make a mount's scratch dir"))?;
        let init = from.as_ref().map(|f| (f.as_str(), source.as_str(), pl.from_chain.as_deref().unwrap_or_default()));
        let (d, lock) = cache_dir(inp.store, &dir, name, sharing, (*mode, *uid, *gid), init)?;
        p._locks.extend(lock);
        *data = d;
    }
    for (i, pl) in list.iter().enumerate() {
        let [src_dir, dir] = scratch_dirs(inp.scratch, i);
        std::fs::create_dir_all(&dir).map_err(io("make a mount's scratch dir"))?;
        let target = pl.mount.target.as_str();
        match &pl.mount.spec {
            Spec::Bind { from: None, source, rw } => {
                p.mounts.push(bind(target, context_copy(inp.context, source, &dir, pl.context_sum.as_deref())?, *rw)?);
            }
            Spec::Bind { from: Some(f), source, rw } => {
                let chain = pl.from_chain.as_deref().unwrap_or_default();
                let fd = source_in(inp.store, chain, &dir, source, f)?;
                p.mounts.push(bind(target, bind_fd(&fd, &src_dir)?, *rw)?);
            }
            Spec::Cache { id, ro, .. } => {
                let data = caches.get(&cache_name(id, pl.from_chain.as_deref())).map(|(_, d)| d.clone()).unwrap_or_default();
                p.mounts.push(bind(target, data, !*ro)?);
            }
            Spec::Tmpfs { size } => p.mounts.push(MountPoint {
                typ: "tmpfs".into(),
                source: "tmpfs".into(),
                destination: target.to_string(),
                rw: true,
                options: size.map(|s| format!("size={s}")).into_iter().collect(),
                ..Default::default()
            }),
            Spec::Secret { id, required, mode, uid, gid, env } => {
                let content = match inp.secrets.get(id) {
                    Some(SecretSource::File(f)) => read_secret(f)?,
                    Some(SecretSource::Env(v)) => match std::env::var_os(v) {
                        Some(x) => x.as_encoded_bytes().to_vec(),
                        None => return Err(format!("secret {id}: the environment variable {v} is not set")),
                    },
                    None if *required => return Err(format!("secret {id}: required, but not given (build --secret id={id},src=FILE)")),
                    None => continue,
                };
                if let Some(var) = env {
                    let value = String::from_utf8(content.clone()).map_err(|_| format!("secret {id}: env={var}: not UTF-8 text"))?;
                    p.env.push(format!("{var}={value}"));
                }
                if target.is_empty() {
                    continue;
                }
                // On a tmpfs of its own: a secret never reaches the disk, even if the
                // build is killed before it removes it.
                let file = private_tmpfs(&dir)?.join("secret");
                let mut f =
                    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file).map_err(io("write a secret"))?;
                f.write_all(&content).map_err(io("write a secret"))?;
                nix::unistd::fchown(&f, Some((*uid).into()), Some((*gid).into())).map_err(|e| format!("secret {id}: chown: {e}"))?;
                f.set_permissions(std::fs::Permissions::from_mode(*mode)).map_err(io("chmod a secret"))?;
                p.mounts.push(bind(target, file, false)?);
            }
        }
    }
    Ok(p)
}

fn read_secret(f: &Path) -> Result<Vec<u8>, String> {
    let file = File::open(f).map_err(|e| format!("secret {}: {e}", f.display()))?;
    let mut out = Vec::new();
    file.take(SECRET_MAX + 1).read_to_end(&mut out).map_err(|e| format!("secret {}: {e}", f.display()))?;
    if out.len() as u64 > SECRET_MAX {
        return Err(format!("secret {}: larger than {} KiB", f.display(), SECRET_MAX >> 10));
    }
    Ok(out)
}

/// A bind of the context: its source copied (as COPY copies it: .dockerignore applies,
/// nothing below it followed) into `dir`; what was copied must hash as the cache key's
/// checksum did.
fn context_copy(ctx: &SourceRoot, source: &str, dir: &Path, sum: Option<&str>) -> Result<PathBuf, String> {
    let found = one_source(ctx, source)?;
    let d = OwnedFd::from(File::open(dir).map_err(io("open a mount's scratch dir"))?);
    let mut h = sources::hasher();
    let o = CopyOpts::default();
    let out = if found.is_dir {
        let t = dir.join("t");
        std::fs::create_dir(&t).map_err(io("make a mount's scratch dir"))?;
        let tfd = OwnedFd::from(File::open(&t).map_err(io("open a mount's scratch dir"))?);
        ctx.copy(&found, tfd.as_fd(), OsStr::new("."), &o, &mut h).map_err(io("copy the bind's source"))?;
        t
    } else {
        ctx.copy(&found, d.as_fd(), OsStr::new("f"), &o, &mut h).map_err(io("copy the bind's source"))?;
        dir.join("f")
    };
    if sum.is_some_and(|s| s != h.finish().to_string()) {
        return Err(format!("source={source}: changed while it was being copied; build again"));
    }
    Ok(out)
}

/// The one entry a bind's `source` names in the context.
pub fn one_source(ctx: &SourceRoot, source: &str) -> Result<sources::Found, String> {
    let src = if source.is_empty() { "." } else { source };
    let mut found = ctx.find(src).map_err(|e| format!("source={source}: {e}"))?;
    if found.len() != 1 {
        return Err(format!("source={source}: names {} paths (want one)", found.len()));
    }
    Ok(found.remove(0))
}

/// The checksum of a context bind's source, for the cache key.
pub fn context_sum(ctx: &SourceRoot, source: &str) -> Result<String, String> {
    let found = one_source(ctx, source)?;
    let mut h = sources::hasher();
    ctx.checksum(&found, false, &mut h).map_err(|e| format!("source={source}: checksum: {e}"))?;
    Ok(h.finish().to_string())
}

/// Where the store keeps cache mounts.
pub fn cache_root(store: &Store) -> PathBuf {
    store.root.join("build-mounts")
}

/// A cache mount's directory name: a hash of its id (the Dockerfile's, it may be anything)
/// and of the top layer of its `from`, as BuildKit names its by id and source.
fn cache_name(id: &str, from: Option<&[Digest]>) -> String {
    let mut h = sources::hasher();
    h.update(id.as_bytes());
    if let Some(top) = from.and_then(|c| c.last()) {
        h.update(b":");
        h.update(top.to_string().as_bytes());
    }
    h.finish().to_string().replace("sha256:", "")[..32].to_string()
}

/// A cache mount's directory (`name`, see [`cache_name`]), made on first use (with its
/// mode and owner, and the content of `init`'s source if given), and the lock that keeps
/// it while the RUN runs.
fn cache_dir(
    store: &Store,
    scratch: &Path,
    name: &str,
    sharing: Sharing,
    (mode, uid, gid): (u32, u32, u32),
    init: Option<(&str, &str, &[Digest])>,
) -> Result<(PathBuf, Option<File>), String> {
    let base = cache_root(store).join(name);
    let how = match sharing {
        Sharing::Shared => libc::LOCK_SH,
        Sharing::Locked => libc::LOCK_EX,
        Sharing::Private => libc::LOCK_EX | libc::LOCK_NB,
    };
    // A prune may remove the directory, lock file and all, while we wait for its lock: a
    // lock on a file no longer there guards nothing, so the lock is taken again.
    let mut tries = 0;
    let lock = loop {
        std::fs::create_dir_all(&base).map_err(io("make a cache mount"))?;
        let lock = File::options().create(true).truncate(false).write(true).open(base.join("lock")).map_err(io("lock a cache mount"))?;
        if let Err(e) = flock(&lock, how) {
            if sharing == Sharing::Private && e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                // In use: this RUN gets a cache of its own, thrown away after it.
                let data = scratch.join("cache");
                make_cache(store, &data, scratch, (mode, uid, gid), init)?;
                return Ok((data, None));
            }
            return Err(format!("lock a cache mount: {e}"));
        }
        tries += 1;
        if lock.metadata().is_ok_and(|m| m.nlink() > 0) || tries > 10 {
            break lock;
        }
    };
    let data = base.join("data");
    if !data.exists() {
        // Made aside and renamed into place: a build killed half-way leaves no half-made
        // cache (two builds making it at once: the first rename wins).
        let new = base.join(format!("new-{}", &crate::container::random_id()[..12]));
        let made = make_cache(store, &new, scratch, (mode, uid, gid), init).and_then(|()| match std::fs::rename(&new, &data) {
            Ok(()) => Ok(()),
            Err(_) if data.exists() => Ok(()),
            Err(e) => Err(format!("make a cache mount: {e}")),
        });
        let _ = capsa_image::layer::remove_tree(&new);
        made?;
    }
    Ok((data, Some(lock)))
}

fn make_cache(
    store: &Store,
    d: &Path,
    scratch: &Path,
    (mode, uid, gid): (u32, u32, u32),
    init: Option<(&str, &str, &[Digest])>,
) -> Result<(), String> {
    std::fs::create_dir(d).map_err(io("make a cache mount"))?;
    if let Some((from, source, chain)) = init {
        let rootfs = store.snapshots.mount_rootfs(chain, scratch).map_err(|e| format!("from={from}: {e}"))?;
        let sroot = SourceRoot::open(&rootfs.path, &format!("from={from}"), false)?;
        let found = one_source(&sroot, source)?;
        if !found.is_dir {
            return Err(format!("source={source}: a cache mount's source must be a directory"));
        }
        let dfd = OwnedFd::from(File::open(d).map_err(io("open a cache mount"))?);
        let o = CopyOpts { keep_owner: true, ..Default::default() };
        sroot.copy(&found, dfd.as_fd(), OsStr::new("."), &o, &mut sources::hasher()).map_err(io("fill a cache mount"))?;
        drop(sroot);
        capsa_image::snapshot::unmount_rootfs(scratch).map_err(|e| format!("from={from}: {e}"))?;
    }
    std::os::unix::fs::chown(d, Some(uid), Some(gid)).map_err(io("chown a cache mount"))?;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).map_err(io("chmod a cache mount"))
}

/// What the cache mounts hold.
#[derive(Debug, Default)]
pub struct MountUsage {
    pub total: usize,
    pub active: usize,
    pub size: u64,
    pub active_size: u64,
}

/// Whether a build is using the cache mount `dir` (it holds its lock).
fn in_use(dir: &Path) -> bool {
    let Ok(lock) = File::open(dir.join("lock")) else { return false };
    flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_err()
}

pub fn usage(store: &Store) -> MountUsage {
    let mut u = MountUsage::default();
    for e in std::fs::read_dir(cache_root(store)).into_iter().flatten().flatten() {
        let size = crate::container::volumes::dir_size(&e.path());
        u.total += 1;
        u.size += size;
        if in_use(&e.path()) {
            u.active += 1;
            u.active_size += size;
        }
    }
    u
}

/// The cache mounts no build is using, removed: (how many, their bytes).
pub fn prune(store: &Store) -> (usize, u64) {
    let Ok(rd) = std::fs::read_dir(cache_root(store)) else { return (0, 0) };
    let (mut n, mut bytes) = (0, 0);
    for e in rd.flatten() {
        // Made if missing (a build may be making the directory): whoever holds it, or is
        // about to, makes us pass it by.
        let Ok(lock) = File::options().create(true).truncate(false).write(true).open(e.path().join("lock")) else { continue };
        if flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            continue;
        }
        bytes += crate::container::volumes::dir_size(&e.path());
        if capsa_image::layer::remove_tree(&e.path()).is_ok() {
            n += 1;
        }
    }
    (n, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<RunMount, String> {
        parse(text, "/w", &|_, v| Ok(v.to_string()))
    }

    #[test]
    fn mount_options() {
        let m = p("type=bind,source=a,target=b").unwrap();
        assert_eq!(m, RunMount { target: "/w/b".into(), spec: Spec::Bind { from: None, source: "a".into(), rw: false } });
        assert_eq!(p("target=../../x/./y").unwrap().target, "/x/y");
        assert_eq!(p("dst=/t,rw").unwrap().spec, Spec::Bind { from: None, source: String::new(), rw: true });
        assert_eq!(p("dst=/t,rw,ro=true").unwrap().spec, Spec::Bind { from: None, source: String::new(), rw: false });
        let c = p("type=cache,target=/c,sharing=locked,mode=0700,uid=5").unwrap();
        assert_eq!(
            c.spec,
            Spec::Cache {
                id: "/c".into(),
                from: None,
                source: String::new(),
                ro: false,
                sharing: Sharing::Locked,
                mode: 0o700,
                uid: 5,
                gid: 0
            }
        );
        let s = p("type=secret,id=tok").unwrap();
        assert_eq!(
            (s.target.as_str(), s.spec),
            ("/run/secrets/tok", Spec::Secret { id: "tok".into(), required: false, mode: 0o400, uid: 0, gid: 0, env: None })
        );
        assert_eq!(
            p("type=secret,target=/etc/k").unwrap().spec,
            Spec::Secret { id: "k".into(), required: false, mode: 0o400, uid: 0, gid: 0, env: None }
        );
        assert_eq!(p("type=tmpfs,target=/t,size=1k").unwrap().spec, Spec::Tmpfs { size: Some(1024) });
        let e = p("type=secret,id=tok,env=TOKEN").unwrap();
        assert_eq!(
            (e.target.as_str(), e.spec),
            ("", Spec::Secret { id: "tok".into(), required: false, mode: 0o400, uid: 0, gid: 0, env: Some("TOKEN".into()) })
        );
        assert_eq!(p("type=secret,env=TOKEN,target=/s").unwrap().target, "/s");
        assert_eq!(p("type=TMPFS,target=/t").unwrap().spec, Spec::Tmpfs { size: None });
        assert_eq!(
            p("type=cache,target=/c,sharing=LOCKED,sharing=private").unwrap().spec,
            p("type=cache,target=/c,sharing=private").unwrap().spec
        );
        assert_eq!(p("target=/x,target=/y").unwrap().target, "/y", "the last one, as BuildKit");
        let none = parse("target=/x,from=$S", "/", &|k, v| Ok(if k == "from" { String::new() } else { v.to_string() }));
        assert!(none.unwrap_err().contains("from=$S: names nothing"));
        assert_eq!(p("\"type=bind\",\"target=/a,b\"").unwrap().target, "/a,b");
        for (bad, why) in [
            ("type=bind", "target is required"),
            ("target=/", "cannot replace the root"),
            ("target=/x,size=1", "size: not an option of type=bind"),
            ("type=cache,target=/c,mode=9", "not an octal mode"),
            ("type=cache,target=/c,uid=x", "not a number"),
            ("type=secret", "give an id or a target"),
            ("type=secret,id=a,required=maybe", "want true or false"),
            ("type=ssh", "SSH agent forwarding"),
            ("target=/x,source", "source: needs a value"),
            ("target=\"/x", "unterminated quote"),
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets_flags() {
        assert_eq!(parse_secret("id=a,src=/f").unwrap(), ("a".into(), SecretSource::File("/f".into())));
        assert_eq!(parse_secret("id=a,env=V").unwrap(), ("a".into(), SecretSource::Env("V".into())));
        assert_eq!(parse_secret("id=a,type=env").unwrap(), ("a".into(), SecretSource::Env("a".into())));
        assert_eq!(parse_secret("id=capsa_no_such_variable").unwrap().1, SecretSource::File("capsa_no_such_variable".into()));
        assert!(parse_secret("src=/f").unwrap_err().contains("an id is required"));
        assert!(parse_secret("id=a,src=/f,env=V").unwrap_err().contains("not both"));
        assert!(parse_secret("id=a,kind=x").unwrap_err().contains("unknown key"));
    }
}

//! `build [-t NAME:TAG]... [-f Dockerfile] [--build-arg K=V]... [--target STAGE]
//! [--no-cache] [--pull] [--network host|none] [--secret id=ID,src=FILE] [--progress auto|plain|tty|quiet] [-q] CONTEXT`: a
//! Dockerfile built into an image in the store (see `crate::build`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use capsa_image::reference::Reference;

use super::{fail, Cli, Failure, Result};
use crate::build::exec::{Builder, FsExport, Opts};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Name and optionally a tag (name:tag); may be given more than once.
    #[arg(short, long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile; `-` reads it from STDIN).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<String>,
    /// Set build-time variables (K=V, or K to take K from this environment).
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_arg: Vec<String>,
    /// Set the target build stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use cache when building the image.
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Always attempt to pull a newer version of the base images (`--pull=false`: the
    /// default, pull only what is missing).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub pull: Option<bool>,
    /// Grant an entitlement: network.host (lets `RUN --network=host` use the host's network),
    /// security.insecure (lets `RUN --security=insecure` run privileged).
    #[arg(long, value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Set target platform for build (only this host's platform).
    #[arg(long)]
    pub platform: Option<String>,
    /// Networking mode for the RUN instructions: default (as `run`'s: the bridge), none,
    /// host, or a network's name.
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Optional parent cgroup for the RUN containers (default /capsa).
    #[arg(long = "cgroup-parent", value_name = "PATH")]
    pub cgroup_parent: Option<String>,
    /// Secret to expose to `RUN --mount=type=secret`: id=ID[,src=FILE|,env=VAR].
    #[arg(long, value_name = "id=ID,src=FILE")]
    pub secret: Vec<String>,
    /// Type of progress output: auto (tty on a terminal, else plain), plain, tty, quiet.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Suppress the build output and print image ID on success.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also export: type=docker|oci,dest=FILE (a `capsactl save` archive), type=local,dest=DIR
    /// or type=tar,dest=FILE|- (the image's filesystem), or just DIR (type=local); the
    /// image stays in the store.
    #[arg(short, long, value_name = "type=…,dest=…")]
    pub output: Option<String>,
    /// The build context: a directory.
    pub context: String,
}

fn bad(msg: impl Into<String>) -> Failure {
    Failure { msg: msg.into(), code: 1 }
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    if a.context == "-" || a.context.contains("://") || a.context.starts_with("git@") {
        return Err(bad(format!(
            "build context {:?}: only a local directory is supported (a tar on STDIN or a remote URL is not implemented in this offline build)",
            a.context
        )));
    }
    let context = PathBuf::from(&a.context);
    if !context.is_dir() {
        return Err(bad(format!("unable to prepare context: path {:?} not found or not a directory", a.context)));
    }
    let export = a.output.as_deref().map(parse_output).transpose()?;
    match a.progress.as_str() {
        "auto" | "plain" | "tty" | "quiet" => {}
        "rawjson" => return Err(bad("--progress rawjson: not implemented yet (auto, plain, tty, quiet)")),
        p => return Err(bad(format!("--progress {p}: want auto, plain, tty, quiet or rawjson"))),
    }
    // `quiet` is -q's output: only the image id.
    let quiet = a.quiet || a.progress == "quiet";
    let progress = crate::build::view::mode(&a.progress, quiet);
    if let Some(p) = &a.platform {
        let want = capsa_image::oci::Platform::parse(p).map_err(|e| bad(format!("--platform {p}: {e}")))?;
        let host = capsa_image::oci::Platform::host();
        if !want.matches(&host) {
            return Err(bad(format!("--platform {p}: building for another platform is not implemented yet (this host is {host})")));
        }
    }
    let network = match a.network.as_str() {
        "default" => crate::container::network::default_mode(),
        n if n.starts_with("container:") => return Err(bad(format!("--network {n}: a build cannot join a container's network"))),
        n => n.to_string(),
    };
    let dockerfile = match a.file.as_deref() {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| bad(format!("read the Dockerfile from STDIN: {e}")))?;
            (s, "Dockerfile".to_string())
        }
        // The context's Dockerfile is the context's (hostile) content: read inside it, a
        // regular file of bounded size (a symlink to a host file, a FIFO or /dev/zero there
        // must not be read, hang or fill memory). A file named by -f is the user's choice,
        // still bounded and regular.
        None => {
            let text = capsa_sys::Root::open(&context)
                .and_then(|root| root.read_file(Path::new("Dockerfile"), DOCKERFILE_MAX))
                .map_err(|e| bad(format!("failed to read dockerfile: {e}")))?;
            (String::from_utf8(text).map_err(|_| bad("failed to read dockerfile: not UTF-8 text"))?, "Dockerfile".to_string())
        }
        Some(f) => {
            let p = PathBuf::from(f);
            let text = read_regular(&p).map_err(|e| bad(format!("failed to read dockerfile {}: {e}", p.display())))?;
            (text, p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into()))
        }
    };
    let mut tags = Vec::new();
    for t in &a.tags {
        let r = Reference::parse(t).map_err(|e| bad(format!("invalid tag {t:?}: {e}")))?;
        if r.digest.is_some() {
            return Err(bad(format!("invalid tag {t:?}: a digest cannot be a tag")));
        }
        tags.push(r.full());
    }
    let cgroup_parent = a.cgroup_parent.clone().unwrap_or_default();
    if !cgroup_parent.is_empty() && (!cgroup_parent.starts_with('/') || cgroup_parent.split('/').any(|c| c == "..")) {
        return Err(bad(format!("--cgroup-parent {cgroup_parent:?}: want an absolute cgroup path without ..")));
    }
    let mut allow = std::collections::BTreeSet::new();
    for e in &a.allow {
        match e.as_str() {
            "network.host" | "security.insecure" => {
                allow.insert(e.clone());
            }
            _ => return Err(bad(format!("--allow {e}: unknown entitlement (want network.host or security.insecure)"))),
        }
    }
    let mut secrets = BTreeMap::new();
    for t in &a.secret {
        let (id, src) = crate::build::mounts::parse_secret(t).map_err(bad)?;
        match &src {
            crate::build::mounts::SecretSource::File(f) if !f.is_file() => {
                return Err(bad(format!("--secret {t}: {} is not a readable file", f.display())))
            }
            crate::build::mounts::SecretSource::File(f) if f.metadata().is_ok_and(|m| m.len() > crate::build::mounts::SECRET_MAX) => {
                return Err(bad(format!("--secret {t}: larger than {} KiB", crate::build::mounts::SECRET_MAX >> 10)))
            }
            crate::build::mounts::SecretSource::Env(v) if std::env::var_os(v).is_none() => {
                return Err(bad(format!("--secret {t}: the environment variable {v} is not set")))
            }
            _ => {}
        }
        secrets.insert(id, src);
    }
    let mut build_args = BTreeMap::new();
    for b in &a.build_arg {
        match b.split_once('=') {
            Some(("", _)) => return Err(bad(format!("--build-arg {b:?}: empty name"))),
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(b) {
                    build_args.insert(b.clone(), v);
                }
            }
        }
    }
    let o = Opts {
        context,
        dockerfile,
        tags,
        build_args,
        target: a.target.clone(),
        no_cache: a.no_cache,
        pull: if a.pull == Some(true) { super::pull::PullPolicy::Always } else { super::pull::PullPolicy::Missing },
        allow,
        network,
        quiet,
        progress,
        export: match &export {
            Some(Export::Fs(fs)) => Some(fs.clone()),
            _ => None,
        },
        cgroup_parent,
        secrets,
    };
    // RUN containers read nothing: their stdin is /dev/null (the Dockerfile may have come
    // from ours, read above).
    let null = std::fs::File::open("/dev/null").map_err(|e| fail(format!("/dev/null: {e}")))?;
    // SAFETY: dup2 of an fd we own onto fd 0.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) } < 0 {
        return Err(fail(format!("dup2 /dev/null: {}", std::io::Error::last_os_error())));
    }
    let mut store = cli.store()?;
    let id = {
        let mut b = Builder::new(&mut store, &cli.state_root, &o)?;
        b.build(cli)?
    };
    let mut print_id = true;
    if let Some(Export::Fs(fs)) = &export {
        // The tar on STDOUT is the output: no image id after it (as docker).
        print_id = !matches!(fs, FsExport::Tar(d) if d.as_os_str() == "-");
    }
    if let Some(Export::Archive(format, dest)) = export {
        let img = store.resolve(&id.to_string())?;
        let names = o.tags.iter().filter(|t| img.tags.contains(t)).cloned().collect();
        let items = [capsa_image::archive::Item { names, image: img }];
        super::save::to_file(&store, &items, format, &dest)?;
        if !quiet {
            eprintln!("exported {id} to {}", dest.display());
        }
    }
    if print_id {
        println!("{id}");
    }
    Ok(0)
}

/// What `-o` asks for.
enum Export {
    /// `type=docker|oci,dest=FILE`: the image as a `save` archive.
    Archive(capsa_image::archive::Format, PathBuf),
    /// `type=local,dest=DIR` or `type=tar,dest=FILE|-`: the image's filesystem.
    Fs(FsExport),
}

/// `-o type=docker|oci|local|tar,dest=…`, or `-o DIR` (type=local), as docker's. The
/// image stays in the store in every case.
fn parse_output(s: &str) -> Result<Export> {
    let want = "want type=docker|oci|local|tar,dest=PATH, or a directory";
    if !s.contains('=') && !s.is_empty() {
        return Ok(Export::Fs(FsExport::Local(PathBuf::from(s))));
    }
    let mut typ = None;
    let mut dest = None;
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("type", v)) => typ = Some(v),
            Some(("dest", v)) if !v.is_empty() => dest = Some(PathBuf::from(v)),
            _ => return Err(bad(format!("-o {s}: {want}"))),
        }
    }
    let dest = dest.ok_or_else(|| bad(format!("-o {s}: dest=PATH is required")))?;
    let stdout = dest.as_os_str() == "-";
    Ok(match typ {
        Some("docker") | Some("oci") if stdout => return Err(bad("-o dest=-: writing the archive to STDOUT is not implemented yet")),
        Some("docker") => Export::Archive(capsa_image::archive::Format::Docker, dest),
        Some("oci") => Export::Archive(capsa_image::archive::Format::Oci, dest),
        Some("local") if stdout => return Err(bad("-o type=local,dest=-: a directory is needed (type=tar writes to STDOUT)")),
        Some("local") => Export::Fs(FsExport::Local(dest)),
        Some("tar") => {
            use std::io::IsTerminal;
            if stdout && std::io::stdout().is_terminal() {
                return Err(bad("-o type=tar,dest=-: STDOUT is a terminal; redirect it"));
            }
            Export::Fs(FsExport::Tar(dest))
        }
        Some(t @ ("image" | "registry")) => return Err(bad(format!("-o type={t}: not implemented yet (docker, oci, local, tar)"))),
        _ => return Err(bad(format!("-o {s}: {want}"))),
    })
}

/// The largest Dockerfile read (docker has no fixed limit; this one bounds memory).
const DOCKERFILE_MAX: u64 = 16 << 20;

/// A regular file (symlinks followed), at most [`DOCKERFILE_MAX`] bytes, as text.
fn read_regular(p: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked next.
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(p)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut b = Vec::new();
    f.take(DOCKERFILE_MAX + 1).read_to_end(&mut b)?;
    if b.len() as u64 > DOCKERFILE_MAX {
        return Err(std::io::Error::other(format!("larger than {DOCKERFILE_MAX} bytes")));
    }
    // Not UTF-8: refused, as a lossy conversion would name other files than it says.
    String::from_utf8(b).map_err(|_| std::io::Error::other("not UTF-8 text"))
}

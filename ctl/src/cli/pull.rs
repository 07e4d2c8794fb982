//! `pull [--platform] [-q] NAME[:TAG|@DIGEST]`: an image from a registry, ready to run;
//! and [`image_or_pull`], the pull-if-missing of `run` and `create`.
//!
//! Output as docker's: on a terminal one progress line per layer (bytes, rate), redrawn
//! in place; otherwise one line per layer when it is done. The registry work (threads) is
//! over when `pull` returns, so a caller may fork containers afterwards.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use capsa_image::layer::Limits;
use capsa_image::oci::Platform;
use capsa_image::reference::{familiar, Reference};
use capsa_image::store::ImageInfo;
use capsa_image::{Digest, Store};
use capsa_registry::{Progress, PullOpts, Settings, Status};

use super::{fail, Cli, Failure, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pull this platform's manifest of a multi-platform image (OS/ARCH[/VARIANT]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Suppress verbose output (print only the image's name).
    #[arg(short, long)]
    pub quiet: bool,
    /// Download all tagged images in the repository (not implemented).
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// NAME[:TAG|@DIGEST]
    pub name: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    if a.all_tags {
        return Err(fail("pull --all-tags is not implemented: pull each tag"));
    }
    let platform = a.platform.as_deref().map(Platform::parse).transpose()?;
    let r = Reference::parse(&a.name)?;
    let settings = Settings::from_env()?;
    let mut store = cli.store()?;
    if !a.quiet {
        if !a.name.contains(':') && !a.name.contains('@') {
            println!("Using default tag: latest");
        }
        let (_, path) = capsa_registry::settings::split_repo(&r.repo);
        let what = r.digest.as_ref().map(|d| d.to_string()).or(r.tag.clone()).unwrap_or_default();
        println!("{what}: Pulling from {path}");
    }
    let shown = LayerProgress::new(Out::Stdout, a.quiet);
    let res =
        capsa_registry::pull(&mut store, &a.name, &PullOpts { settings: &settings, platform, limits: Limits::default(), progress: &shown });
    shown.finish();
    let p = res?;
    if !a.quiet {
        for w in &p.warnings {
            eprintln!("WARNING: {w}");
        }
        println!("Digest: {}", p.digest);
        let status = if p.updated { "Downloaded newer image" } else { "Image is up to date" };
        println!("Status: {status} for {}", familiar_name(&p.name));
    }
    println!("{}", p.name);
    Ok(0)
}

/// `docker.io/library/busybox:latest` → `busybox:latest`.
fn familiar_name(full: &str) -> String {
    let (repo, rest) = match full.split_once('@') {
        Some((r, d)) => (r, format!("@{d}")),
        None => {
            let (r, t) = capsa_image::reference::split_tag(full);
            (r, format!(":{t}"))
        }
    };
    format!("{}{rest}", familiar(repo))
}

/// When `run`/`create` pull an image they do not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PullPolicy {
    /// Pull if the image is not in the store (docker's default).
    #[default]
    Missing,
    /// Always pull first.
    Always,
    /// Never pull: an image not in the store is an error.
    Never,
}

/// The image `name` from the store, pulled first if it is missing (or always, per
/// `policy`), with docker's messages on stderr. The pull's threads are joined when this
/// returns: a caller may fork containers afterwards. Errors carry exit code 125, as
/// docker's `run` gives when it cannot get the image.
pub fn image_or_pull(store: &mut Store, name: &str, policy: PullPolicy) -> Result<ImageInfo> {
    let as_125 = |e: capsa_image::Error| Failure { msg: e.to_string(), code: 125 };
    let found = match policy {
        PullPolicy::Always => None,
        _ => match store.resolve(name) {
            Ok(i) => return Ok(i),
            Err(e) if e.kind() == capsa_image::error::Kind::NotFound => Some(e),
            Err(e) => return Err(as_125(e)),
        },
    };
    let reference = Reference::parse(name).ok();
    let missing_msg = || match &reference {
        Some(r) if r.digest.is_none() && !name.contains(':') => format!("{name}:{}", r.tag.as_deref().unwrap_or("latest")),
        _ => name.to_string(),
    };
    if let Some(e) = &found {
        // Image ids (hex) are never pulled.
        if policy == PullPolicy::Never || reference.is_none() || name.starts_with("sha256:") {
            let hint = if policy == PullPolicy::Never { " (--pull never)" } else { "" };
            let _ = e;
            return Err(Failure { msg: format!("Unable to find image '{}' locally{hint}", missing_msg()), code: 125 });
        }
        eprintln!("Unable to find image '{}' locally", missing_msg());
    }
    let settings = Settings::from_env().map_err(as_125)?;
    let shown = LayerProgress::new(Out::Stderr, false);
    let res =
        capsa_registry::pull(store, name, &PullOpts { settings: &settings, platform: None, limits: Limits::default(), progress: &shown });
    shown.finish();
    let p = res.map_err(as_125)?;
    for w in &p.warnings {
        eprintln!("WARNING: {w}");
    }
    eprintln!("Digest: {}", p.digest);
    let status = if p.updated { "Downloaded newer image" } else { "Image is up to date" };
    eprintln!("Status: {status} for {}", familiar_name(&p.name));
    store.resolve(&p.name).or_else(|_| store.resolve(&p.id.to_string())).map_err(as_125)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Out {
    Stdout,
    Stderr,
}

/// Per-layer progress: live bars on a terminal, else one line per finished layer.
pub struct LayerProgress {
    out: Out,
    quiet: bool,
    multi: Option<indicatif::MultiProgress>,
    bars: Mutex<HashMap<Digest, indicatif::ProgressBar>>,
}

impl LayerProgress {
    pub fn new(out: Out, quiet: bool) -> LayerProgress {
        let tty = match out {
            Out::Stdout => std::io::stdout().is_terminal(),
            Out::Stderr => std::io::stderr().is_terminal(),
        };
        let multi = (tty && !quiet).then(|| {
            let target = match out {
                Out::Stdout => indicatif::ProgressDrawTarget::stdout(),
                Out::Stderr => indicatif::ProgressDrawTarget::stderr(),
            };
            indicatif::MultiProgress::with_draw_target(target)
        });
        LayerProgress { out, quiet, multi, bars: Mutex::new(HashMap::new()) }
    }

    fn line(&self, s: &str) {
        match self.out {
            Out::Stdout => println!("{s}"),
            Out::Stderr => eprintln!("{s}"),
        }
    }

    /// Leaves the bars as they are (their final words) and stops drawing.
    pub fn finish(&self) {
        if let Ok(b) = self.bars.lock() {
            for bar in b.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}

impl Progress for LayerProgress {
    fn update(&self, id: &Digest, status: Status, done: u64, total: u64) {
        if self.quiet {
            return;
        }
        let short = id.short().to_string();
        let Some(multi) = &self.multi else {
            if status.is_final() {
                self.line(&format!("{short}: {}", status.text()));
            }
            return;
        };
        let Ok(mut bars) = self.bars.lock() else { return };
        let bar = bars.entry(id.clone()).or_insert_with(|| {
            let b = multi.add(indicatif::ProgressBar::new(total));
            b.set_prefix(short.clone());
            b
        });
        let moving = matches!(status, Status::Downloading | Status::Pushing | Status::Resuming);
        let template = if moving { "{prefix}: {msg:<12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}" } else { "{prefix}: {msg}" };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(status.text());
        if status.is_final() {
            bar.finish();
        }
    }
}

//! The executor: a parsed Dockerfile → an image in the store.
//!
//! Each stage starts from its base (an image, pulled when missing, another stage, or
//! scratch) and carries a state: its layers (bottom first), its image config (env,
//! workdir, user, shell, cmd, ..., history) and a cache key. Config-only instructions
//! change the config and add an `empty_layer` history entry. RUN and COPY/ADD each make
//! one layer from an overlay upper directory (see `run.rs` and `sources.rs`), committed by
//! the same code as `capsactl commit` (whiteouts as `.wh.` entries, names sorted,
//! mtimes clamped to SOURCE_DATE_EPOCH when set).
//!
//! The cache (table `build_cache`, see `capsa_image::db`): a step's key is the hash of
//! the previous key (which starts from the base image's id and so covers every layer and
//! config change before it), the instruction after substitution (with the build args in
//! effect, which RUN sees in its environment), and for COPY/ADD a checksum of the sources
//! (paths, modes, contents, link targets; owners for --from). A hit reuses the layer if
//! its snapshot and blob are still in the store. `--no-cache` looks nothing up but still
//! records. Only the stages the target needs are built; those that do not depend on each
//! other build side by side (see `parallel.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{params, OptionalExtension};
use serde_json::json;

use capsa_image::digest::Digest;
use capsa_image::oci::{History, ImageConfig, Platform, RootFs};
use capsa_image::store::NewLayer;
use capsa_image::Store;
use capsa_sys::{Follow, Root};

use super::expand;
use super::mounts;
use super::parallel::{self, Job, Steps, Worker};
use super::parse::{self, CopyArgs, Dockerfile, Form, Heredoc, Instruction, Kind};
use super::run::{self, RunSpec, Scratch};
use super::sources::{self, CopyOpts, Found, SourceRoot};
use crate::cli::pull::PullPolicy;
use crate::cli::{fail, Cli, Failure, Result};
use crate::container::commit;

/// What `capsactl build` asks for.
pub struct Opts {
    pub context: PathBuf,
    /// The Dockerfile's text and the name it is shown by in errors.
    pub dockerfile: (String, String),
    /// Full names (`docker.io/library/app:latest`).
    pub tags: Vec<String>,
    /// --build-arg values (a `K` without `=` and unset in our environment is absent).
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub pull: PullPolicy,
    /// RUN's network (a mode of `run --network`) unless `RUN --network` says otherwise.
    pub network: String,
    /// Entitlements the user granted (`--allow network.host`).
    pub allow: BTreeSet<String>,
    pub quiet: bool,
    /// --progress (Quiet with -q).
    pub progress: super::view::Mode,
    /// `-o type=local|tar`: the image's filesystem written out too.
    pub export: Option<FsExport>,
    /// --cgroup-parent of the RUN containers (empty: capsactl's default, /capsa).
    pub cgroup_parent: String,
    /// --secret: what `RUN --mount=type=secret` mounts, by id.
    pub secrets: BTreeMap<String, super::mounts::SecretSource>,
}

/// Where `-o` writes the built image's filesystem.
#[derive(Debug, Clone)]
pub enum FsExport {
    /// `type=local,dest=DIR`: the files, merged into DIR (made if missing).
    Local(PathBuf),
    /// `type=tar,dest=FILE`: a tar of them (`-`: STDOUT).
    Tar(PathBuf),
}

/// A finished stage.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct StageOut {
    layers: Vec<NewLayer>,
    cfg: ImageConfig,
    key: String,
}

/// A stage being built.
struct State {
    layers: Vec<NewLayer>,
    cfg: ImageConfig,
    key: String,
    /// ARGs declared in this stage, in order, with their values (None: declared, unset).
    args: Vec<(String, Option<String>)>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it; else it resets the base's).
    cmd_set: bool,
    /// When the last layer was made (the base's time at first): config-only steps and the
    /// image get it, so that a fully cached rebuild is the same image.
    time: Option<String>,
}

impl State {
    fn rc(&mut self) -> &mut capsa_image::oci::RunConfig {
        self.cfg.config.get_or_insert_with(Default::default)
    }

    fn env(&self) -> Vec<String> {
        self.cfg.config.as_ref().and_then(|c| c.env.clone()).unwrap_or_default()
    }

    /// A variable as the builder sees it: ENV first (it overrides an ARG of that name),
    /// then the stage's ARGs.
    fn lookup(&self, k: &str) -> Option<String> {
        for e in self.env().iter().rev() {
            if let Some((a, v)) = e.split_once('=') {
                if a == k {
                    return Some(v.to_string());
                }
            }
        }
        self.args.iter().rev().find(|(a, _)| a == k).and_then(|(_, v)| v.clone())
    }

    fn workdir(&self) -> String {
        self.cfg.config.as_ref().and_then(|c| c.working_dir.clone()).filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into())
    }

    fn shell(&self) -> Vec<String> {
        self.cfg
            .config
            .as_ref()
            .and_then(|c| c.extra.get("Shell"))
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn chain(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.chain.clone()).collect()
    }
}

pub struct Builder<'a> {
    store: &'a mut Store,
    state_root: &'a Path,
    o: &'a Opts,
    df: Dockerfile,
    context: SourceRoot,
    scratch: Scratch,
    done: Vec<Option<StageOut>>,
    /// Build args some ARG declared.
    used_args: BTreeSet<String>,
    /// SOURCE_DATE_EPOCH, if set: layer mtimes clamped to it, history and created at it.
    epoch: Option<i64>,
    /// The current step's number, taken from `steps` (shared with the stage workers).
    step: usize,
    steps: Steps,
    /// Base and --from images, pulled (if missing) before the build takes the store's
    /// shared lock (a failed pull cleans up under the exclusive one).
    images: BTreeMap<String, capsa_image::store::ImageInfo>,
    /// The global scope: ARGs before the first FROM (what FROM and --from words see).
    meta: BTreeMap<String, String>,
    /// The build's directory shared with its stage workers: the step counter, the cache
    /// key locks, the Dockerfile they read (the parent's scratch dir).
    shared: PathBuf,
    /// Where the steps and their output are shown (dropped last: it waits for its view).
    view: super::view::View,
}

fn h(parts: &[&[u8]]) -> String {
    let mut hs = sources::hasher();
    for p in parts {
        hs.update(&(p.len() as u64).to_le_bytes());
        hs.update(p);
    }
    hs.finish().to_string()
}

/// Platform ARGs the builder defines (docker's automatic ARGs, for this host).
fn auto_arg(k: &str) -> Option<String> {
    let p = Platform::host();
    let v = p.variant.clone().unwrap_or_default();
    Some(match k {
        "TARGETPLATFORM" | "BUILDPLATFORM" => p.to_string(),
        "TARGETOS" | "BUILDOS" => p.os,
        "TARGETARCH" | "BUILDARCH" => p.architecture,
        "TARGETVARIANT" | "BUILDVARIANT" => v,
        _ => return None,
    })
}

/// Build args docker predefines (usable without an ARG line, not in the cache key).
const PREDEFINED: &[&str] =
    &["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"];

impl<'a> Builder<'a> {
    pub fn new(store: &'a mut Store, state_root: &'a Path, o: &'a Opts) -> Result<Builder<'a>> {
        let (text, name) = &o.dockerfile;
        let df = parse::parse(text).map_err(|e| fail(format!("{name}:{}: {}", e.line, e.msg)))?;
        let context = SourceRoot::open(&o.context, "build context", true).map_err(fail)?;
        let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(s) if !s.is_empty() => {
                Some(s.parse::<i64>().map_err(|_| fail(format!("SOURCE_DATE_EPOCH={s:?}: not a number of seconds")))?)
            }
            _ => None,
        };
        let scratch = Scratch::new(store, state_root)?;
        let steps = Steps::create(&scratch.dir.join("steps"))?;
        let shared = scratch.dir.clone();
        let n = df.stages.len();
        // The view's process is forked here, while this process is single-threaded.
        let view = super::view::View::new(o.progress, &scratch.dir.join("progress"));
        Ok(Builder {
            store,
            state_root,
            o,
            df,
            context,
            scratch,
            done: vec![None; n],
            used_args: BTreeSet::new(),
            epoch,
            step: 0,
            steps,
            images: BTreeMap::new(),
            meta: BTreeMap::new(),
            shared,
            view,
        })
    }

    fn err(&self, ins: &Instruction, msg: impl std::fmt::Display) -> Failure {
        let word = ins.text.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        fail(format!("{}:{}: {word}: {msg}", self.o.dockerfile.1, ins.line))
    }

    /// A progress line of its own (see `view.rs`).
    fn say(&mut self, s: &str) {
        self.view.line(s);
    }

    fn now(&self) -> String {
        match self.epoch {
            Some(e) => capsa::timefmt::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.max(0) as u64)),
            None => capsa_image::archive::import::rfc3339_now(),
        }
    }

    /// The global scope (ARGs before the first FROM), for FROM lines.
    fn meta(&mut self) -> Result<BTreeMap<String, String>> {
        let mut m = BTreeMap::new();
        let esc = self.df.escape;
        for ins in self.df.meta_args.clone() {
            let Kind::Arg(list) = &ins.kind else { continue };
            for (k, d) in list {
                let v = match self.o.build_args.get(k) {
                    Some(v) => Some(v.clone()),
                    None => match d {
                        Some(d) => {
                            Some(expand::expand(d, esc, &|x| m.get(x).cloned().or_else(|| auto_arg(x))).map_err(|e| self.err(&ins, e))?)
                        }
                        None => None,
                    },
                };
                self.used_args.insert(k.clone());
                if let Some(v) = v {
                    m.insert(k.clone(), v);
                }
            }
        }
        Ok(m)
    }

    /// Builds the target stage (and what it needs); returns the image id.
    pub fn build(&mut self, cli: &Cli) -> Result<Digest> {
        let r = self.build_target(cli);
        if r.as_ref().is_err_and(|f| f.code > 128 && f.msg.starts_with("build cancelled")) {
            self.view.cancelled();
        }
        r
    }

    fn build_target(&mut self, cli: &Cli) -> Result<Digest> {
        if let Some(sx) = self.df.syntax.as_deref().filter(|sx| !sx.contains("docker/dockerfile")) {
            self.say(&format!("WARNING: # syntax={sx}: frontend images are not run; built with capsactl's own Dockerfile parser"));
        }
        let meta = self.meta()?;
        self.meta = meta.clone();
        let esc = self.df.escape;
        let names: Vec<Option<String>> = self.df.stages.iter().map(|s| s.name.clone()).collect();
        let target = match &self.o.target {
            Some(t) => {
                let t = t.to_ascii_lowercase();
                names
                    .iter()
                    .position(|n| n.as_deref() == Some(t.as_str()))
                    .ok_or_else(|| fail(format!("target stage {t:?} could not be found")))?
            }
            None => names.len() - 1,
        };
        // Which stages the target needs: FROM <stage>, COPY --from and RUN --mount from=.
        let stage_ref = |s: &str, before: usize| -> Option<usize> {
            let l = s.to_ascii_lowercase();
            names[..before]
                .iter()
                .position(|n| n.as_deref() == Some(l.as_str()))
                .or_else(|| s.parse::<usize>().ok().filter(|i| *i < before))
        };
        // --from words see the global scope only (as BuildKit: the stages a stage needs
        // are known before any is built), here and when the COPY runs.
        let global = |w: &str| expand::expand(w, esc, &|x| meta.get(x).cloned().or_else(|| auto_arg(x))).unwrap_or_default();
        let mut deps: Vec<Vec<usize>> = Vec::new();
        // Images each stage needs (its base, its COPY --from images), with the line that
        // names each.
        let mut wants: Vec<Vec<(String, Instruction)>> = Vec::new();
        for (i, st) in self.df.stages.iter().enumerate() {
            let mut d = Vec::new();
            let mut w = Vec::new();
            let mut base = None;
            if let Kind::From { image, .. } = &st.from.kind {
                let img = global(image);
                match names[..i].iter().position(|n| n.as_deref() == Some(img.to_ascii_lowercase().as_str())) {
                    Some(j) => {
                        d.push(j);
                        base = Some(j);
                    }
                    None if !img.eq_ignore_ascii_case("scratch") && !img.is_empty() => w.push((img, st.from.clone())),
                    None => {}
                }
            }
            // COPY --from of the stage, and of the ONBUILD triggers of a stage it builds on.
            let triggers = base.into_iter().flat_map(|j| self.df.stages[j].instructions.iter()).filter_map(|ins| match &ins.kind {
                Kind::Onbuild(_, t) => Some(t.as_ref()),
                _ => None,
            });
            for ins in st.instructions.iter().chain(triggers) {
                for f in from_words(&ins.kind) {
                    let f = global(&f);
                    if names[i..].iter().any(|n| n.as_deref() == Some(f.to_ascii_lowercase().as_str())) {
                        return Err(self.err(ins, format!("--from={f}: stage {f:?} is not defined before this one")));
                    }
                    match stage_ref(&f, i) {
                        Some(j) => d.push(j),
                        None if !f.is_empty() => w.push((f, ins.clone())),
                        None => {}
                    }
                }
            }
            deps.push(d);
            wants.push(w);
        }
        // The target's stages and their images, pulled; an image base's ONBUILD COPY
        // --from triggers may name more stages (then again).
        let mut need;
        loop {
            need = vec![false; names.len()];
            let mut todo = vec![target];
            while let Some(i) = todo.pop() {
                if !need[i] {
                    need[i] = true;
                    todo.extend(deps[i].iter().copied());
                }
            }
            let mut more = false;
            for (i, w) in wants.iter_mut().enumerate().filter(|(i, _)| need[*i]) {
                for (name, ins) in w.clone() {
                    if !self.images.contains_key(&name) {
                        let img = crate::cli::pull::image_or_pull(self.store, &name, self.o.pull)
                            .map_err(|e| self.err(&ins, format!("{name}: {e}")))?;
                        self.images.insert(name.clone(), img);
                    }
                    if !matches!(ins.kind, Kind::From { .. }) {
                        continue;
                    }
                    for t in self.image_triggers(&name) {
                        for f in from_words(&t.kind) {
                            let f = global(&f);
                            match stage_ref(&f, i) {
                                Some(j) if !deps[i].contains(&j) => {
                                    deps[i].push(j);
                                    more = true;
                                }
                                None if !f.is_empty() && !w.iter().any(|(n, _)| *n == f) => {
                                    w.push((f, self.df.stages[i].from.clone()));
                                    more = true;
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            if !more {
                break;
            }
        }
        // From here on blobs and snapshots are made that no image holds yet: garbage
        // collection waits for the build.
        let _guard = self.store.lock_shared()?;
        let order: Vec<usize> = (0..names.len()).filter(|i| need[*i]).collect();
        self.stages(cli, &order, &deps, &meta)?;
        let unused: Vec<&String> =
            self.o.build_args.keys().filter(|k| !self.used_args.contains(*k) && !PREDEFINED.contains(&k.as_str())).collect();
        if !unused.is_empty() {
            self.say(&format!("[Warning] One or more build-args {unused:?} were not consumed"));
        }
        let out = self.done[target].take().ok_or_else(|| fail("the target stage was not built"))?;
        let cfg = out.cfg;
        self.step = self.steps.next()?;
        let t0 = Instant::now();
        let chain: Vec<Digest> = out.layers.iter().map(|l| l.chain.clone()).collect();
        let id = commit::write_image(self.store, &cfg, out.layers, self.o.tags.clone())?;
        self.say(&format!("#{} writing image {id} done {:.1}s", self.step, t0.elapsed().as_secs_f64()));
        for t in &self.o.tags {
            self.say(&format!("#{} naming to {t} done", self.step));
        }
        if let Some(x) = &self.o.export {
            let t0 = Instant::now();
            self.export_fs(&chain, x)?;
            let what = match x {
                FsExport::Local(d) => format!("exporting to directory {}", d.display()),
                FsExport::Tar(f) => format!("exporting to tar {}", f.display()),
            };
            self.say(&format!("#{} {what} done {:.1}s", self.step, t0.elapsed().as_secs_f64()));
        }
        self.view.finish();
        Ok(id)
    }

    /// `-o type=local|tar`: the filesystem of the image (layers `chain`), mounted in the
    /// scratch dir, written to the user's directory or tar. The image is hostile: its
    /// symlinks are written as symlinks, never followed, and nothing of the destination is
    /// followed either (an existing symlink there is replaced). A failed export removes
    /// the tar or the directory it made.
    fn export_fs(&mut self, chain: &[Digest], x: &FsExport) -> Result<()> {
        use std::os::fd::AsFd;
        let dir = self.scratch.fresh("export")?;
        let rootfs = self.store.snapshots.mount_rootfs(chain, &dir)?;
        let src = std::fs::File::open(&rootfs.path).map_err(|e| fail(format!("{}: {e}", rootfs.path.display())));
        let r = src.and_then(|src| match x {
            FsExport::Local(d) => {
                let made = !d.exists();
                let r = std::fs::create_dir_all(d).and_then(|()| {
                    let dst = std::fs::File::open(d)?;
                    crate::fstree::copy_contents(src.as_fd(), dst.as_fd(), crate::fstree::CopyOpts { keep_owner: true })
                });
                if r.is_err() && made {
                    let _ = std::fs::remove_dir_all(d);
                }
                r.map_err(|e| fail(format!("-o type=local,dest={}: {e}", d.display())))
            }
            FsExport::Tar(f) => {
                let to_stdout = f.as_os_str() == "-";
                let r = (|| -> std::io::Result<()> {
                    let out: Box<dyn std::io::Write> =
                        if to_stdout { Box::new(std::io::stdout().lock()) } else { Box::new(std::fs::File::create(f)?) };
                    let opts = crate::fstree::TarOpts { overlay_upper: false, clamp_mtime: self.epoch };
                    let mut w = crate::fstree::TarWriter::new(std::io::BufWriter::new(out), opts);
                    w.add_tree(src.as_fd(), Path::new(""))?;
                    std::io::Write::flush(&mut w.finish()?)
                })();
                if r.is_err() && !to_stdout {
                    let _ = std::fs::remove_file(f);
                }
                r.map_err(|e| fail(format!("-o type=tar,dest={}: {e}", f.display())))
            }
        });
        capsa_image::snapshot::unmount_rootfs(&dir)?;
        run::remove_dir(&dir)?;
        r
    }

    /// Builds the stages in `order` (those the target needs), each once the stages it
    /// depends on (`deps`) are built. A stage that is alone, or that runs no container
    /// (no RUN: quick), builds here; stages that can build side by side each build in a
    /// worker process (see `parallel.rs`), at most as many at a time as there are CPUs,
    /// while this process answers the first to finish or fail, or a cancelling signal. On
    /// a failure the other workers are killed and what they left is cleaned up; the first
    /// failure is the build's.
    fn stages(&mut self, cli: &Cli, order: &[usize], deps: &[Vec<usize>], meta: &BTreeMap<String, String>) -> Result<()> {
        let cap = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
        let mut workers: Vec<Worker> = Vec::new();
        let mut cancel = None;
        let r = self.schedule(cli, order, deps, meta, cap, &mut workers, &mut cancel);
        if r.is_err() && !workers.is_empty() {
            for w in workers.drain(..) {
                w.kill();
            }
            Scratch::clean_stale(self.store, self.state_root);
        }
        drop(cancel);
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn schedule(
        &mut self,
        cli: &Cli,
        order: &[usize],
        deps: &[Vec<usize>],
        meta: &BTreeMap<String, String>,
        cap: usize,
        workers: &mut Vec<Worker>,
        cancel: &mut Option<parallel::Cancel>,
    ) -> Result<()> {
        loop {
            if let Some(c) = cancel.as_ref() {
                c.check()?;
            }
            let mut i = 0;
            while i < workers.len() {
                match workers[i].try_finish() {
                    None => i += 1,
                    Some(r) => {
                        let w = workers.remove(i);
                        let (out, used) = r?;
                        self.done[w.stage] = Some(out);
                        self.used_args.extend(used);
                    }
                }
            }
            let ready: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| {
                    self.done[i].is_none() && !workers.iter().any(|w| w.stage == i) && deps[i].iter().all(|&j| self.done[j].is_some())
                })
                .collect();
            if ready.is_empty() && workers.is_empty() {
                return Ok(());
            }
            // Alone, or no container to run: here, without a worker.
            let here = match ready.as_slice() {
                [one] if workers.is_empty() => Some(*one),
                _ => ready.iter().copied().find(|&i| !self.runs_containers(i)),
            };
            if let Some(i) = here {
                let out = self.stage(i, meta)?;
                self.done[i] = Some(out);
                continue;
            }
            for &j in &ready {
                if workers.len() >= cap {
                    break;
                }
                if cancel.is_none() {
                    *cancel = Some(parallel::Cancel::new()?);
                }
                let job = self.job(j, &deps[j])?;
                workers.push(Worker::spawn(cli, &self.shared, &job)?);
            }
            match cancel.as_ref() {
                Some(c) => c.wait_any(workers)?,
                None => return Err(fail("internal: stages wait without workers")),
            }
        }
    }

    /// Whether building stage `i` may run a container: a RUN, or ONBUILD triggers of
    /// its base (which may hold one).
    fn runs_containers(&self, i: usize) -> bool {
        let st = &self.df.stages[i];
        if st.instructions.iter().any(|ins| matches!(ins.kind, Kind::Run { .. })) {
            return true;
        }
        let Kind::From { image, .. } = &st.from.kind else { return true };
        let esc = self.df.escape;
        let base =
            expand::expand(image, esc, &|x| self.meta.get(x).cloned().or_else(|| auto_arg(x))).unwrap_or_default().to_ascii_lowercase();
        if base == "scratch" {
            return false;
        }
        match self.df.stages[..i].iter().position(|s| s.name.as_deref() == Some(base.as_str())) {
            Some(j) => self.df.stages[j].instructions.iter().any(|ins| matches!(ins.kind, Kind::Onbuild(..))),
            None => !self.image_triggers(&base).is_empty() || !self.images.contains_key(&base),
        }
    }

    /// What a worker needs to build stage `idx`, which builds on the stages `deps`.
    fn job(&self, idx: usize, deps: &[usize]) -> Result<Job> {
        let text = self.shared.join("Dockerfile");
        if !text.exists() {
            std::fs::write(&text, &self.o.dockerfile.0).map_err(|e| fail(format!("write {}: {e}", text.display())))?;
        }
        Ok(Job {
            context: self.o.context.clone(),
            dockerfile_name: self.o.dockerfile.1.clone(),
            build_args: self.o.build_args.clone(),
            no_cache: self.o.no_cache,
            network: self.o.network.clone(),
            allow: self.o.allow.clone(),
            quiet: self.o.quiet,
            progress: self.o.progress,
            cgroup_parent: self.o.cgroup_parent.clone(),
            secrets: self.o.secrets.clone(),
            stage: idx,
            label: self.df.stages[idx].name.clone().unwrap_or_else(|| format!("stage-{idx}")),
            done: deps.iter().filter_map(|&j| Some((j, self.done[j].clone()?))).collect(),
            images: self.images.clone(),
            shared: self.shared.clone(),
        })
    }

    fn stage(&mut self, idx: usize, meta: &BTreeMap<String, String>) -> Result<StageOut> {
        let st_from = self.df.stages[idx].from.clone();
        let instructions = self.df.stages[idx].instructions.clone();
        let label = self.df.stages[idx].name.clone().unwrap_or_else(|| format!("stage-{idx}"));
        let total = instructions.len() + 1;
        let esc = self.df.escape;
        let Kind::From { image, platform, .. } = &st_from.kind else { return Err(fail("internal: a stage without FROM")) };
        let mlook = |x: &str| meta.get(x).cloned().or_else(|| auto_arg(x));
        let image = expand::expand(image, esc, &mlook).map_err(|e| self.err(&st_from, e))?;
        if let Some(p) = platform {
            let p = expand::expand(p, esc, &mlook).map_err(|e| self.err(&st_from, e))?;
            let want = Platform::parse(&p).map_err(|e| self.err(&st_from, e))?;
            if !want.matches(&Platform::host()) {
                return Err(self.err(
                    &st_from,
                    format!("--platform={p}: building for another platform is not implemented yet (this host is {})", Platform::host()),
                ));
            }
        }
        self.step = self.steps.next()?;
        self.view.step(self.step, &format!("[{label} 1/{total}] FROM {image}"));
        let t_from = Instant::now();
        let lower = image.to_ascii_lowercase();
        let base = if lower == "scratch" {
            let p = Platform::host();
            let cfg = ImageConfig {
                architecture: p.architecture,
                os: p.os,
                variant: p.variant,
                rootfs: RootFs { typ: "layers".into(), diff_ids: Vec::new() },
                config: Some(Default::default()),
                ..Default::default()
            };
            StageOut { layers: Vec::new(), cfg, key: h(&[b"scratch"]) }
        } else if let Some(j) = self.df.stages[..idx].iter().position(|s| s.name.as_deref() == Some(lower.as_str())) {
            self.done[j].clone().ok_or_else(|| self.err(&st_from, format!("stage {lower:?} was not built")))?
        } else {
            let img = self.image(&image).map_err(|e| self.err(&st_from, e))?;
            let (cfg, _) = self.store.config(&img)?;
            let layers = self.store.layers(&img)?;
            StageOut { layers, cfg, key: h(&[b"image", img.id.to_string().as_bytes()]) }
        };
        self.view.settled(self.step, t_from.elapsed().as_secs_f64());
        let time = base.cfg.created.clone();
        let mut s = State { layers: base.layers, cfg: base.cfg, key: base.key, args: Vec::new(), cmd_set: false, time };
        // ONBUILD triggers of the base run first, and are not inherited.
        let triggers: Vec<String> = s
            .cfg
            .config
            .as_mut()
            .and_then(|c| c.extra.remove("OnBuild"))
            .and_then(|v| serde_json::from_value::<Option<Vec<String>>>(v).ok().flatten())
            .unwrap_or_default();
        for t in triggers {
            // Parsed as the ONBUILD it came from, so the same rules hold (no ONBUILD ONBUILD,
            // FROM or MAINTAINER), and exactly one instruction: the image is hostile.
            let bad = |why: String| self.err(&st_from, format!("ONBUILD trigger {t:?} of {image}: {why}"));
            let df = parse::parse(&format!("FROM scratch\nONBUILD {t}\n")).map_err(|e| bad(e.msg))?;
            let mut all: Vec<_> = df.stages.into_iter().flat_map(|s| s.instructions).collect();
            let mut ins = match (all.len(), all.pop()) {
                (1, Some(parse::Instruction { kind: parse::Kind::Onbuild(_, ins), .. })) => *ins,
                _ => return Err(bad("not one instruction".into())),
            };
            ins.line = st_from.line;
            self.step = self.steps.next()?;
            self.view.step(self.step, &format!("[{label} 1/{total}] ONBUILD {}", ins.text));
            let t0 = Instant::now();
            self.instruction(&mut s, &ins, idx)?;
            self.view.settled(self.step, t0.elapsed().as_secs_f64());
        }
        for (i, ins) in instructions.iter().enumerate() {
            self.step = self.steps.next()?;
            self.view.step(self.step, &format!("[{label} {}/{total}] {}", i + 2, ins.text));
            let t0 = Instant::now();
            self.instruction(&mut s, ins, idx)?;
            self.view.settled(self.step, t0.elapsed().as_secs_f64());
        }
        let mut cfg = s.cfg;
        cfg.created = match self.epoch {
            Some(_) => Some(self.now()),
            None => s.time.or(cfg.created),
        };
        Ok(StageOut { layers: s.layers, cfg, key: s.key })
    }

    /// A config-only change: the key moves on, history gets an empty_layer entry.
    fn config_step(&mut self, s: &mut State, created_by: String) {
        s.key = h(&[s.key.as_bytes(), created_by.as_bytes()]);
        let created = match self.epoch {
            Some(_) => Some(self.now()),
            None => s.time.clone(),
        };
        s.cfg.history.get_or_insert_with(Vec::new).push(History {
            created,
            created_by: Some(created_by),
            empty_layer: true,
            ..Default::default()
        });
    }

    fn instruction(&mut self, s: &mut State, ins: &Instruction, idx: usize) -> Result<()> {
        let esc = self.df.escape;
        let x = |s: &State, w: &str| expand::expand(w, esc, &|k| s.lookup(k));
        let e = |this: &Self, m: String| this.err(ins, m);
        match &ins.kind {
            Kind::From { .. } => return Err(e(self, "FROM inside a stage".into())),
            Kind::Env(pairs) => {
                // Every value sees the variables as they were before this line.
                let mut set = Vec::new();
                for (k, v) in pairs {
                    let k = x(s, k).map_err(|m| e(self, m))?;
                    let v = x(s, v).map_err(|m| e(self, m))?;
                    if k.is_empty() || k.contains('=') {
                        return Err(e(self, format!("invalid variable name {k:?}")));
                    }
                    set.push((k, v));
                }
                let mut env = s.env();
                for (k, v) in &set {
                    env.retain(|x| x.split_once('=').map(|(a, _)| a) != Some(k.as_str()));
                    env.push(format!("{k}={v}"));
                }
                s.rc().env = Some(env);
                let text = set.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
                self.config_step(s, format!("ENV {text}"));
            }
            Kind::Arg(list) => {
                let mut shown = Vec::new();
                for (k, d) in list {
                    let v = match self.o.build_args.get(k) {
                        Some(v) => Some(v.clone()),
                        None => match d {
                            Some(d) => Some(x(s, d).map_err(|m| e(self, m))?),
                            // `ARG NAME` in a stage takes the global value, or the automatic one.
                            None => self.meta_value(k).or_else(|| auto_arg(k)),
                        },
                    };
                    self.used_args.insert(k.clone());
                    shown.push(match &v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    });
                    s.args.push((k.clone(), v));
                }
                // Not in the image, but in the cache key (RUN sees build args).
                s.key = h(&[s.key.as_bytes(), b"ARG", shown.join(" ").as_bytes()]);
            }
            Kind::Label(pairs) => {
                let mut labels = s.cfg.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let k = x(s, k).map_err(|m| e(self, m))?;
                    let v = x(s, v).map_err(|m| e(self, m))?;
                    if k.is_empty() {
                        return Err(e(self, "empty label name".into()));
                    }
                    shown.push(format!("{k}={v}"));
                    labels.insert(k, v);
                }
                s.rc().labels = Some(labels);
                self.config_step(s, format!("LABEL {}", shown.join(" ")));
            }
            Kind::Expose(words) => {
                let mut ports = s.cfg.config.as_ref().and_then(|c| c.exposed_ports.clone()).unwrap_or_default();
                let mut shown = Vec::new();
                for w in words {
                    for p in expand::expand_fields(w, esc, &|k| s.lookup(k)).map_err(|m| e(self, m))? {
                        for port in expose(&p).map_err(|m| e(self, m))? {
                            shown.push(port.clone());
                            ports.insert(port, json!({}));
                        }
                    }
                }
                s.rc().exposed_ports = Some(ports);
                self.config_step(s, format!("EXPOSE map[{}]", shown.join(" ")));
            }
            Kind::Workdir(w) => {
                let w = x(s, w).map_err(|m| e(self, m))?;
                let abs = if w.starts_with('/') { w.clone() } else { format!("{}/{w}", s.workdir()) };
                let clean = crate::container::create::clean_dest(&abs);
                s.rc().working_dir = Some(clean.clone());
                // As docker, the directory is made in the image if it is missing (a layer
                // then; none when it exists: the upper dir stays empty).
                let dir = clean.clone();
                self.layer_step(s, format!("WORKDIR {clean}"), b"", |b, step, chain| {
                    let rootfs = b.store.snapshots.mount_rootfs(chain, step)?;
                    let r = Root::open(&rootfs.path)
                        .and_then(|root| root.mkdir_all(Path::new(&dir), 0o755, Follow::InRoot))
                        .map_err(|m| b.err(ins, format!("make {dir}: {m}")));
                    capsa_image::snapshot::unmount_rootfs(step)?;
                    r.map(drop)
                })?;
            }
            Kind::User(u) => {
                let u = x(s, u).map_err(|m| e(self, m))?;
                if u.is_empty() {
                    return Err(e(self, "USER is empty after substitution".into()));
                }
                s.rc().user = Some(u.clone());
                self.config_step(s, format!("USER {u}"));
            }
            Kind::Volume(vs) => {
                let mut vols = s.cfg.config.as_ref().and_then(|c| c.volumes.clone()).unwrap_or_default();
                let mut shown = Vec::new();
                for v in vs {
                    let v = x(s, v).map_err(|m| e(self, m))?;
                    if v.is_empty() {
                        return Err(e(self, "VOLUME specified can not be an empty string".into()));
                    }
                    shown.push(v.clone());
                    vols.insert(v, json!({}));
                }
                s.rc().volumes = Some(vols);
                self.config_step(s, format!("VOLUME [{}]", shown.join(" ")));
            }
            Kind::StopSignal(sig) => {
                let sig = x(s, sig).map_err(|m| e(self, m))?;
                capsa::container::parse_signal(&sig).map_err(|m| e(self, format!("{sig:?}: {m}")))?;
                s.rc().stop_signal = Some(sig.clone());
                self.config_step(s, format!("STOPSIGNAL {sig}"));
            }
            Kind::Shell(sh) => {
                s.rc().extra.insert("Shell".into(), json!(sh));
                self.config_step(s, format!("SHELL {}", json!(sh)));
            }
            Kind::Cmd(f) => {
                let argv = self.argv(s, f);
                s.rc().cmd = Some(argv.clone());
                s.cmd_set = true;
                self.config_step(s, format!("CMD {}", json!(argv)));
            }
            Kind::Entrypoint(f) => {
                let argv = self.argv(s, f);
                s.rc().entrypoint = Some(argv.clone());
                // docker: an ENTRYPOINT resets a CMD inherited from the base image.
                if !s.cmd_set {
                    s.rc().cmd = None;
                }
                self.config_step(s, format!("ENTRYPOINT {}", json!(argv)));
            }
            Kind::Healthcheck(hc) => {
                let v = match &hc.test {
                    None => json!({"Test": ["NONE"]}),
                    Some(f) => {
                        let test = match f {
                            Form::Shell(c) => json!(["CMD-SHELL", c]),
                            Form::Exec(v) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(v.iter().cloned());
                                json!(t)
                            }
                        };
                        let mut o = json!({"Test": test});
                        for (k, v) in [
                            ("Interval", hc.interval),
                            ("Timeout", hc.timeout),
                            ("StartPeriod", hc.start_period),
                            ("StartInterval", hc.start_interval),
                        ] {
                            if let Some(v) = v {
                                o[k] = json!(v);
                            }
                        }
                        if let Some(r) = hc.retries {
                            o["Retries"] = json!(r);
                        }
                        o
                    }
                };
                s.rc().extra.insert("Healthcheck".into(), v.clone());
                self.config_step(s, format!("HEALTHCHECK {v}"));
            }
            Kind::Onbuild(text, _) => {
                let rc = s.rc();
                let mut list: Vec<String> =
                    rc.extra.get("OnBuild").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
                list.push(text.clone());
                rc.extra.insert("OnBuild".into(), json!(list));
                self.config_step(s, format!("ONBUILD {text}"));
            }
            Kind::Maintainer(m) => {
                s.cfg.author = Some(m.clone());
                self.config_step(s, format!("MAINTAINER {m}"));
            }
            Kind::Run { cmd, heredocs, network, mounts, security } => {
                // --security=insecure: the RUN runs privileged, if the user granted it (as
                // BuildKit's entitlement).
                let privileged = match security.as_deref() {
                    None | Some("sandbox") => false,
                    Some("insecure") if self.o.allow.contains("security.insecure") => true,
                    Some("insecure") => {
                        return Err(e(
                            self,
                            "--security=insecure: security.insecure is not allowed (grant it with --allow security.insecure)".into(),
                        ))
                    }
                    Some(x) => return Err(e(self, format!("--security={x}: want sandbox or insecure"))),
                };
                let network = match network.as_deref() {
                    None | Some("default") => self.o.network.clone(),
                    // The Dockerfile (or a base image's ONBUILD) may not choose the
                    // host's network by itself: the user grants it, as with BuildKit.
                    Some("host") if !self.o.allow.contains("network.host") => {
                        return Err(e(self, "--network=host: network.host is not allowed (grant it with --allow network.host)".into()))
                    }
                    Some(n @ ("none" | "host")) => n.to_string(),
                    Some(n) => return Err(e(self, format!("--network={n}: want default, none or host"))),
                };
                let argv = match (cmd, heredocs.as_slice()) {
                    (Form::Shell(c), [only]) if is_heredoc_marker(c.trim(), only) => {
                        let mut v = s.shell();
                        v.push(only.content.clone());
                        v
                    }
                    (Form::Shell(c), docs) if !docs.is_empty() => {
                        let mut script = c.clone();
                        script.push('\n');
                        for d in docs {
                            script.push_str(&d.content);
                            script.push_str(&d.name);
                            script.push('\n');
                        }
                        let mut v = s.shell();
                        v.push(script);
                        v
                    }
                    _ => self.argv(s, cmd),
                };
                // Build args in effect are RUN's environment (ENV wins over an ARG).
                let mut env = s.env();
                for (k, v) in &s.args {
                    if let Some(v) = v {
                        if !env.iter().any(|e| e.split_once('=').map(|(a, _)| a) == Some(k.as_str())) {
                            env.push(format!("{k}={v}"));
                        }
                    }
                }
                for k in PREDEFINED {
                    if let Some(v) = self.o.build_args.get(*k) {
                        env.push(format!("{k}={v}"));
                    }
                }
                // --mount: options substituted (from= in the global scope, as COPY --from),
                // what a bind of the context holds checksummed for the key.
                let mut planned = Vec::new();
                for m in mounts {
                    let meta = &self.meta;
                    let sub = |k: &str, v: &str| match k {
                        "from" => expand::expand(v, esc, &|a| meta.get(a).cloned().or_else(|| auto_arg(a))),
                        _ => x(s, v),
                    };
                    let rm = mounts::parse(m, &s.workdir(), &sub).map_err(|why| e(self, format!("--mount={m}: {why}")))?;
                    if !rm.target.is_empty() && planned.iter().any(|p: &mounts::Planned| p.mount.target == rm.target) {
                        return Err(e(self, format!("--mount={m}: target {} is given by another mount", rm.target)));
                    }
                    planned.push(self.plan_mount(ins, rm, idx)?);
                }
                let spec = RunSpec {
                    argv: argv.clone(),
                    env: env.clone(),
                    user: s.cfg.config.as_ref().and_then(|c| c.user.clone()).unwrap_or_default(),
                    workdir: s.workdir(),
                    network: network.clone(),
                    quiet: self.view.captures_output(),
                    cgroup_parent: self.o.cgroup_parent.clone(),
                    mounts: Vec::new(),
                    privileged,
                    private_bundle: false,
                };
                let created_by = format!("RUN {}", argv.join(" "));
                let mut key = vec![json!(env), json!(network)];
                if !planned.is_empty() {
                    key.push(json!(planned.iter().map(mounts::Planned::key).collect::<Vec<_>>()));
                }
                if privileged {
                    key.push(json!("insecure"));
                }
                let key_extra = serde_json::to_vec(&key).unwrap_or_default();
                self.layer_step(s, created_by, &key_extra, |b, step, chain| {
                    b.view.log(b.step, &step.join("output.log"));
                    let inp = mounts::Inputs { store: b.store, scratch: &b.scratch.dir, context: &b.context, secrets: &b.o.secrets };
                    let prepared = mounts::prepare(&inp, &planned).map_err(|why| b.err(ins, format!("--mount: {why}")));
                    let res = prepared.and_then(|p| {
                        let mut spec = RunSpec { mounts: p.mounts.clone(), private_bundle: !p.env.is_empty(), ..spec };
                        spec.env.extend(p.env.iter().cloned());
                        // The runtime's errors (a mount it refused) name the line; a
                        // cancellation keeps its own code and words.
                        run::run(b.store, b.state_root, &b.scratch, step, chain, &spec).map(|code| (code, spec)).map_err(|f| {
                            if f.code > 128 {
                                f
                            } else {
                                b.err(ins, f.msg)
                            }
                        })
                    });
                    for i in 0..planned.len() {
                        for d in mounts::scratch_dirs(&b.scratch.dir, i) {
                            run::remove_dir(&d)?;
                        }
                    }
                    let (code, spec) = res?;
                    if code != 0 && spec.quiet {
                        // -q or the tty view kept the output: show it with the failure.
                        if let Ok(log) = std::fs::read(step.join("output.log")) {
                            b.view.failed_output(b.step, &log);
                        }
                    }
                    if code != 0 {
                        return Err(b.err(ins, format!("process {} did not complete successfully: exit code: {code}", json!(spec.argv))));
                    }
                    Ok(())
                })?;
            }
            Kind::Copy(c) => self.copy(s, ins, c, idx)?,
        }
        Ok(())
    }

    /// The ONBUILD triggers of a pulled image, as instructions (those that do not parse
    /// are left to the stage, which refuses them).
    fn image_triggers(&self, name: &str) -> Vec<Instruction> {
        let Some(img) = self.images.get(name) else { return Vec::new() };
        let Ok((cfg, _)) = self.store.config(img) else { return Vec::new() };
        let triggers: Vec<String> = cfg
            .config
            .and_then(|mut c| c.extra.remove("OnBuild"))
            .and_then(|v| serde_json::from_value::<Option<Vec<String>>>(v).ok().flatten())
            .unwrap_or_default();
        let mut out = Vec::new();
        for t in triggers {
            let Ok(df) = parse::parse(&format!("FROM scratch\nONBUILD {t}\n")) else { continue };
            for ins in df.stages.into_iter().flat_map(|s| s.instructions) {
                if let Kind::Onbuild(_, ins) = ins.kind {
                    out.push(*ins);
                }
            }
        }
        out
    }

    /// An image pulled before the build (or, for a name only known once a stage's ARGs
    /// are set, one the store has).
    fn image(&self, name: &str) -> Result<capsa_image::store::ImageInfo> {
        match self.images.get(name) {
            Some(i) => Ok(i.clone()),
            None => self
                .store
                .resolve(name)
                .map_err(|e| fail(format!("{e} (an image named through a stage's ARG is not pulled: pull it first)"))),
        }
    }

    fn meta_value(&self, k: &str) -> Option<String> {
        let mut val = None;
        for ins in &self.df.meta_args {
            if let Kind::Arg(list) = &ins.kind {
                for (a, d) in list {
                    if a == k {
                        val = self
                            .o
                            .build_args
                            .get(k)
                            .cloned()
                            .or_else(|| d.as_ref().map(|d| expand::expand(d, self.df.escape, &auto_arg).unwrap_or_default()));
                    }
                }
            }
        }
        val
    }

    /// CMD/ENTRYPOINT/RUN argv: exec form as written, shell form through the SHELL.
    fn argv(&self, s: &State, f: &Form) -> Vec<String> {
        match f {
            Form::Exec(v) => v.clone(),
            Form::Shell(c) => {
                let mut v = s.shell();
                v.push(c.clone());
                v
            }
        }
    }

    /// A step that makes a layer: looked up in the cache, else `work` fills the upper dir
    /// of a fresh overlay on the current layers, which becomes the layer (none when the
    /// step changed nothing).
    fn layer_step(
        &mut self,
        s: &mut State,
        created_by: String,
        key_extra: &[u8],
        work: impl FnOnce(&mut Self, &Path, &[Digest]) -> Result<()>,
    ) -> Result<()> {
        let key = h(&[s.key.as_bytes(), created_by.as_bytes(), key_extra]);
        let t0 = Instant::now();
        // Held until the layer is recorded: a stage beside this one with the same step
        // waits, then finds it in the cache.
        let _key_lock = if self.o.no_cache { None } else { Some(parallel::lock_key(&self.shared, &key)?) };
        if !self.o.no_cache {
            if let Some((layer, created)) = self.cached(&key, s.layers.last().map(|l| &l.chain))? {
                let empty = layer.is_none();
                if let Some(l) = layer {
                    s.cfg.rootfs.diff_ids.push(l.diff_id.clone());
                    s.layers.push(l);
                }
                s.cfg.history.get_or_insert_with(Vec::new).push(History {
                    created: Some(created),
                    created_by: Some(created_by),
                    empty_layer: empty,
                    ..Default::default()
                });
                s.key = key;
                s.time = s.cfg.history.as_ref().and_then(|h| h.last()).and_then(|h| h.created.clone());
                self.view.cached(self.step);
                return Ok(());
            }
        }
        let step = self.scratch.fresh("step")?;
        let chain = s.chain();
        work(self, &step, &chain)?;
        let upper = step.join("upper");
        let empty = std::fs::read_dir(&upper).map(|mut d| d.next().is_none()).unwrap_or(true);
        let layer = if empty { None } else { Some(commit::layer_from_upper(self.store, &upper, chain.last(), &|_, _| false, self.epoch)?) };
        run::remove_dir(&step)?;
        let created = self.now();
        let mut all = s.layers.clone();
        all.extend(layer.clone());
        let top = layer.as_ref().map(|l| l.chain.to_string());
        let (k, cb, cr) = (key.clone(), created_by.clone(), created.clone());
        self.store.record_layers(&all, |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO build_cache (key, chain_id, created_by, created, added) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![k, top, cb, cr, capsa_image::db::now()],
            )?;
            Ok(())
        })?;
        if let Some(l) = layer {
            s.cfg.rootfs.diff_ids.push(l.diff_id.clone());
            s.layers.push(l);
        }
        s.time = Some(created.clone());
        s.cfg.history.get_or_insert_with(Vec::new).push(History {
            created: Some(created),
            created_by: Some(created_by),
            empty_layer: empty,
            ..Default::default()
        });
        s.key = key;
        self.view.done(self.step, t0.elapsed().as_secs_f64());
        Ok(())
    }

    /// A cache hit: the layer (None: the step changed nothing) and its history time, if
    /// the layer is still whole in the store.
    fn cached(&self, key: &str, parent: Option<&Digest>) -> Result<Option<(Option<NewLayer>, String)>> {
        let conn = self.store.db.conn();
        let row: Option<(Option<String>, String)> =
            conn.query_row("SELECT chain_id, created FROM build_cache WHERE key = ?1", [key], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        let Some((chain, created)) = row else { return Ok(None) };
        let Some(chain) = chain else { return Ok(Some((None, created))) };
        let l: Option<(String, String, String, i64)> = conn
            .query_row("SELECT diff_id, blob, media_type, size FROM layers WHERE chain_id = ?1", [&chain], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((diff_id, blob, media_type, size)) = l else { return Ok(None) };
        let (Ok(chain), Ok(diff_id), Ok(blob)) = (Digest::parse(&chain), Digest::parse(&diff_id), Digest::parse(&blob)) else {
            return Ok(None);
        };
        if Digest::chain(parent, &diff_id) != chain || !self.store.snapshots.exists(&chain) || !self.store.content.has(&blob) {
            return Ok(None);
        }
        Ok(Some((Some(NewLayer { chain, diff_id, blob, media_type, size: size as u64 }), created)))
    }

    /// COPY and ADD.
    fn copy(&mut self, s: &mut State, ins: &Instruction, c: &CopyArgs, idx: usize) -> Result<()> {
        let esc = self.df.escape;
        let e = |this: &Self, m: String| this.err(ins, m);
        // JSON-form words are literal but for variables: their quotes and escapes are
        // escaped before substitution.
        let x = |s: &State, w: &str, literal: bool| -> std::result::Result<String, String> {
            if literal {
                let mut q = String::new();
                for ch in w.chars() {
                    if ch == esc || ch == '"' || ch == '\'' {
                        q.push(esc);
                    }
                    q.push(ch);
                }
                expand::expand(&q, esc, &|k| s.lookup(k))
            } else {
                expand::expand(w, esc, &|k| s.lookup(k))
            }
        };
        let json = c.json;
        let what = if c.add { "ADD" } else { "COPY" };
        let dest = x(s, &c.dest, json).map_err(|m| e(self, m))?;
        let mut srcs = Vec::new();
        for w in &c.srcs {
            srcs.push(if w.starts_with("<<") { w.clone() } else { x(s, w, json).map_err(|m| e(self, m))? });
        }
        for src in &srcs {
            if src.contains("://") || (c.add && src.starts_with("git@")) {
                return Err(e(self, format!("{src}: remote URLs are not supported in this offline build")));
            }
        }
        let (mode, mode_text) = match &c.chmod {
            Some(m) => {
                let m = x(s, m, false).map_err(|m| e(self, m))?;
                (Some(sources::Chmod::parse(&m).map_err(|m| e(self, m))?), m)
            }
            None => (None, String::new()),
        };
        let chown = match &c.chown {
            Some(u) => Some(x(s, u, false).map_err(|m| e(self, m))?),
            None => None,
        };
        let wd = s.workdir();
        let dest_dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.") || c.parents;
        let abs = crate::container::create::clean_dest(&if dest.starts_with('/') { dest.clone() } else { format!("{wd}/{dest}") });

        // The sources: the context, another stage or an image, mounted for this step.
        // --from sees the global scope only, as BuildKit's (see `build`).
        let from_src = match &c.from {
            Some(f) => {
                let global = expand::expand(f, esc, &|k| self.meta.get(k).cloned().or_else(|| auto_arg(k))).map_err(|m| e(self, m))?;
                if global.is_empty() {
                    return Err(e(
                        self,
                        format!("--from={f}: names nothing (only ARGs declared before the first FROM can be used in --from)"),
                    ));
                }
                Some(global)
            }
            None => None,
        };
        let src_root = match &from_src {
            None => None,
            Some(f) => Some(self.open_from(ins, f, idx)?),
        };
        let root: &SourceRoot = match &src_root {
            Some(r) => r,
            None => &self.context,
        };
        let mut excludes = Vec::new();
        for p in &c.excludes {
            excludes.push(x(s, p, false).map_err(|m| e(self, m))?);
        }
        root.set_excludes(&excludes);
        let mut found: Vec<(String, Vec<Found>)> = Vec::new();
        let mut docs: Vec<&Heredoc> = Vec::new();
        for src in &srcs {
            if let Some(name) = src.strip_prefix("<<") {
                let name = name.trim_start_matches('-').trim_matches(['"', '\'']);
                if let Some(d) = c.heredocs.iter().find(|d| d.name == name) {
                    docs.push(d);
                    continue;
                }
            }
            found.push((src.clone(), root.find(src).map_err(|m| e(self, m))?));
        }
        // As BuildKit: more than one source word needs a directory destination written as
        // one; a glob that matches several makes the destination a directory, one that
        // matches one copies it as a single source would be.
        let many = found.iter().map(|(_, f)| f.len()).sum::<usize>() + docs.len() > 1;
        if srcs.len() > 1 && !dest_dir {
            return Err(e(
                self,
                format!("When using {what} with more than one source file, the destination must be a directory and end with a /"),
            ));
        }
        // The cache key: the instruction after substitution and what the sources hold.
        let mut hs = sources::hasher();
        let owners = from_src.is_some();
        for (_, fs) in &found {
            for f in fs {
                root.checksum(f, owners, &mut hs).map_err(|m| e(self, format!("checksum {}: {m}", f.rel.display())))?;
            }
        }
        // Heredoc bodies, variables expanded unless the delimiter was quoted.
        let mut bodies: Vec<(&Heredoc, String)> = Vec::new();
        for d in &docs {
            let body = if d.expand {
                x(s, &format!("\"{}\"", d.content.replace('"', &format!("{esc}\""))), false).map_err(|m| e(self, m))?
            } else {
                d.content.clone()
            };
            hs.update(d.name.as_bytes());
            hs.update(body.as_bytes());
            bodies.push((d, body));
        }
        let sum = hs.finish().to_string();
        let mut flags = String::new();
        if let Some(f) = &from_src {
            flags.push_str(&format!("--from={f} "));
        }
        if let Some(u) = &chown {
            flags.push_str(&format!("--chown={u} "));
        }
        if c.parents {
            flags.push_str("--parents ");
        }
        for p in &excludes {
            flags.push_str(&format!("--exclude={p} "));
        }
        if let Some(m) = &mode {
            flags.push_str(&match m {
                sources::Chmod::Octal(o) => format!("--chmod={o:o} "),
                sources::Chmod::Symbolic(_) => format!("--chmod={mode_text} "),
            });
        }
        let created_by = format!("{what} {flags}{} {dest} # {sum}", srcs.join(" "));
        let (is_add, parents) = (c.add, c.parents);
        let res = self.layer_step(s, created_by, sum.as_bytes(), |b, step, chain| {
            let rootfs = b.store.snapshots.mount_rootfs(chain, step)?;
            let r = (|| -> Result<()> {
                let dst = Root::open(&rootfs.path).map_err(|m| fail(format!("rootfs: {m}")))?;
                let owner = match &chown {
                    Some(u) => {
                        let u = capsa_image::runspec::resolve_user(&dst, u).map_err(|m| b.err(ins, format!("--chown={u}: {m}")))?;
                        Some((u.uid, u.gid))
                    }
                    None => None,
                };
                let o = CopyOpts { owner, keep_owner: owners, mode };
                let root: &SourceRoot = match &src_root {
                    Some(r) => r,
                    None => &b.context,
                };
                let ioe = |m: std::io::Error| b.err(ins, format!("copy to {abs}: {m}"));
                // What is copied is hashed as the cache key's sources were: if the two differ,
                // a source changed in between, and the layer must not be cached under the key.
                let mut copied = sources::hasher();
                for (src, fs) in &found {
                    for f in fs {
                        if parents {
                            // The source's path below the context (or below the `/./` it
                            // names), made in the destination.
                            let kept = kept_path(src, &f.matched);
                            let (dir, name) = match (f.is_dir, kept.file_name()) {
                                (false, Some(n)) => (Path::new(&abs).join(kept.parent().unwrap_or(Path::new(""))), n.to_os_string()),
                                _ => (Path::new(&abs).join(&kept), std::ffi::OsString::from(".")),
                            };
                            let d = dst.mkdir_all(&dir, 0o755, Follow::InRoot).map_err(ioe)?;
                            root.copy(f, d.as_fd(), &name, &o, &mut copied).map_err(ioe)?;
                            continue;
                        }
                        let base = Some(f.name.clone()).filter(|n| !n.is_empty());
                        if is_add && !f.is_dir {
                            if let Some(comp) = archive_kind(root, f).map_err(|m| b.err(ins, format!("{src}: {m}")))? {
                                let d = dst.mkdir_all(Path::new(&abs), 0o755, Follow::InRoot).map_err(ioe)?;
                                // Extracted from a private copy, the one hashed.
                                let mut copy = tempfile_in(&b.scratch.dir).map_err(ioe)?;
                                root.copy_file_hashed(f, &mut copy, owners, &mut copied).map_err(ioe)?;
                                std::io::Seek::rewind(&mut copy).map_err(ioe)?;
                                extract(copy, &f.rel, d, &abs, comp).map_err(|m| b.err(ins, format!("{src}: {m}")))?;
                                continue;
                            }
                        }
                        if f.is_dir {
                            let d = dst.mkdir_all(Path::new(&abs), 0o755, Follow::InRoot).map_err(ioe)?;
                            root.copy(f, d.as_fd(), OsStr::new("."), &o, &mut copied).map_err(ioe)?;
                            continue;
                        }
                        let into_dir = dest_dir
                            || many
                            || dst
                                .open_at(Path::new(&abs), nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY, Follow::InRoot)
                                .is_ok();
                        let (dir, name) = if into_dir {
                            (abs.clone(), base.ok_or_else(|| b.err(ins, format!("{src}: no file name")))?)
                        } else {
                            let p = Path::new(&abs);
                            (
                                p.parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into()),
                                p.file_name().map(OsStr::to_os_string).unwrap_or_default(),
                            )
                        };
                        let d = dst.mkdir_all(Path::new(&dir), 0o755, Follow::InRoot).map_err(ioe)?;
                        root.copy(f, d.as_fd(), &name, &o, &mut copied).map_err(ioe)?;
                    }
                }
                for (doc, body) in &bodies {
                    copied.update(doc.name.as_bytes());
                    copied.update(body.as_bytes());
                }
                if copied.finish().to_string() != sum {
                    return Err(b.err(ins, format!("{what}: a source changed while it was being copied; build again")));
                }
                for (doc, body) in &bodies {
                    let (dir, name) = if dest_dir || many {
                        (abs.clone(), std::ffi::OsString::from(&doc.name))
                    } else {
                        let p = Path::new(&abs);
                        (
                            p.parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into()),
                            p.file_name().map(OsStr::to_os_string).unwrap_or_default(),
                        )
                    };
                    let d = dst.mkdir_all(Path::new(&dir), 0o755, Follow::InRoot).map_err(ioe)?;
                    sources::write_file(d.as_fd(), &name, body.as_bytes(), &o).map_err(ioe)?;
                }
                Ok(())
            })();
            capsa_image::snapshot::unmount_rootfs(step)?;
            r
        });
        if src_root.is_some() {
            run::remove_dir(&self.scratch.dir.join("from"))?;
        }
        let skipped = match &src_root {
            Some(r) => r.skipped.take(),
            None => self.context.skipped.take(),
        };
        if !skipped.is_empty() {
            let list: Vec<String> = skipped.iter().map(|p| p.display().to_string()).collect();
            self.say(&format!("WARNING: line {}: {what}: fifos, sockets and devices are not copied: {}", ins.line, list.join(", ")));
        }
        res
    }

    /// A RUN --mount with what it needs from the build: the checksum of a context bind's
    /// source, the layers of a `from`.
    fn plan_mount(&mut self, ins: &Instruction, mount: mounts::RunMount, idx: usize) -> Result<mounts::Planned> {
        let (from, context_source) = match &mount.spec {
            mounts::Spec::Bind { from: None, source, .. } => (None, Some(source.clone())),
            mounts::Spec::Bind { from, .. } | mounts::Spec::Cache { from, .. } => (from.clone(), None),
            _ => (None, None),
        };
        let from_chain = match &from {
            Some(f) => Some(self.chain_of_from(ins, f, idx)?.0),
            None => None,
        };
        let context_sum = match context_source {
            Some(src) => Some(mounts::context_sum(&self.context, &src).map_err(|why| self.err(ins, format!("--mount: {why}")))?),
            None => None,
        };
        Ok(mounts::Planned { mount, context_sum, from_chain })
    }

    /// The layers of a `--from`: a stage (by name or index, before this one) or an image,
    /// and what it is, for messages.
    fn chain_of_from(&self, ins: &Instruction, f: &str, idx: usize) -> Result<(Vec<Digest>, String)> {
        let l = f.to_ascii_lowercase();
        let names: Vec<Option<String>> = self.df.stages.iter().map(|s| s.name.clone()).collect();
        let stage =
            names[..idx].iter().position(|n| n.as_deref() == Some(l.as_str())).or_else(|| f.parse::<usize>().ok().filter(|i| *i < idx));
        if names.iter().skip(idx).any(|n| n.as_deref() == Some(l.as_str())) && stage.is_none() {
            return Err(self.err(ins, format!("--from={f}: stage {l:?} is defined after this one")));
        }
        Ok(match stage {
            Some(j) => {
                let out = self.done[j].as_ref().ok_or_else(|| self.err(ins, format!("--from={f}: stage not built")))?;
                (out.layers.iter().map(|l| l.chain.clone()).collect::<Vec<_>>(), format!("stage {f}"))
            }
            None => {
                let img = self.image(f).map_err(|e| self.err(ins, format!("--from={f}: {e}")))?;
                (self.store.chain(&img)?, format!("image {f}"))
            }
        })
    }

    /// COPY --from: a stage (by name or index) or an image, mounted read-only-ish (a
    /// fresh upper dir) under the scratch dir.
    fn open_from(&mut self, ins: &Instruction, f: &str, idx: usize) -> Result<SourceRoot> {
        let (chain, what) = self.chain_of_from(ins, f, idx)?;
        let dir = self.scratch.fresh("from")?;
        let rootfs = self.store.snapshots.mount_rootfs(&chain, &dir)?;
        SourceRoot::open(&rootfs.path, &what, false).map_err(fail)
    }
}

/// A worker's build of one stage (`capsactl __build-stage`, see `parallel.rs`): the
/// stage, and the build args it used.
pub fn stage_main(store: &mut Store, state_root: &Path, job: &Job) -> Result<parallel::Built> {
    let df = job.shared.join("Dockerfile");
    let text = std::fs::read_to_string(&df).map_err(|e| fail(format!("read {}: {e}", df.display())))?;
    let o = Opts {
        context: job.context.clone(),
        dockerfile: (text, job.dockerfile_name.clone()),
        tags: Vec::new(),
        build_args: job.build_args.clone(),
        target: None,
        no_cache: job.no_cache,
        pull: PullPolicy::Never,
        network: job.network.clone(),
        allow: job.allow.clone(),
        quiet: job.quiet,
        export: None,
        // The worker's steps go to its parent's view (joined below), not a view of its own.
        progress: if job.quiet { super::view::Mode::Quiet } else { super::view::Mode::Plain },
        cgroup_parent: job.cgroup_parent.clone(),
        secrets: job.secrets.clone(),
    };
    let _guard = store.lock_shared()?;
    let mut b = Builder::new(store, state_root, &o)?;
    if job.stage >= b.done.len() {
        return Err(fail(format!("stage {}: the Dockerfile has {} stages", job.stage, b.done.len())));
    }
    b.steps = Steps::open(&job.shared.join("steps"))?;
    b.shared = job.shared.clone();
    b.view = super::view::View::join(job.progress, &job.shared.join("progress"));
    for (i, out) in &job.done {
        if let Some(d) = b.done.get_mut(*i) {
            *d = Some(out.clone());
        }
    }
    b.images = job.images.clone();
    let meta = b.meta()?;
    b.meta = meta.clone();
    let out = b.stage(job.stage, &meta)?;
    Ok((out, std::mem::take(&mut b.used_args)))
}

/// COPY --parents: the part of a found source's path (as matched, symlinks not followed)
/// that is kept, all of it or what follows the `/./` pivot of the source as written
/// (`src/./pkg/*.go` keeps `pkg/a.go`).
fn kept_path(src: &str, rel: &Path) -> PathBuf {
    let Some(i) = src.find("/./") else { return rel.to_path_buf() };
    let pivot = super::glob::clean(&src[..i]);
    rel.strip_prefix(&pivot).map(Path::to_path_buf).unwrap_or_else(|_| rel.to_path_buf())
}

/// The stages or images an instruction reads from: COPY --from, RUN --mount's from= (as
/// written, before substitution).
fn from_words(k: &Kind) -> Vec<String> {
    match k {
        Kind::Copy(CopyArgs { from: Some(f), .. }) => vec![f.clone()],
        Kind::Run { mounts, .. } => mounts.iter().filter_map(|m| mounts::from_of(m)).collect(),
        _ => Vec::new(),
    }
}

/// Whether a RUN's command is just one heredoc (`<<EOF`, `<<-"EOF"`): its body is then
/// the script.
fn is_heredoc_marker(c: &str, d: &Heredoc) -> bool {
    let Some(rest) = c.strip_prefix("<<") else { return false };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    rest.trim_matches(['"', '\'']) == d.name
}

/// EXPOSE's `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, ... (docker's keys).
fn expose(p: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        return Err(format!("EXPOSE {p}: invalid protocol {proto:?} (tcp, udp, sctp)"));
    }
    let num = |s: &str| s.parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(|| format!("EXPOSE {p}: invalid port {s:?}"));
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(ports)?, num(ports)?),
    };
    if hi < lo || hi - lo > 1024 {
        return Err(format!("EXPOSE {p}: invalid port range"));
    }
    Ok((lo..=hi).map(|n| format!("{n}/{proto}")).collect())
}

/// An unnamed file in `dir` (O_TMPFILE): gone when closed.
fn tempfile_in(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC).open(dir)
}

/// How an ADD archive is compressed (docker's ADD: gzip, bzip2, xz; zstd too here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveKind {
    Plain,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// The largest xz dictionary decoded (xz -9 uses 64 MiB): a hostile header asking for
/// more is refused before anything is allocated.
const XZ_MEM_LIMIT_KB: u32 = 128 << 10;

/// An ADD source that is a local tar archive: its compression (None: not an archive,
/// copied as it is). As docker's `isArchivePath`: the file, decompressed if its magic
/// bytes say gzip, bzip2, xz (or zstd), must start with a valid tar header.
fn archive_kind(root: &SourceRoot, f: &Found) -> std::io::Result<Option<ArchiveKind>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(512);
    root.open_file(f)?.take(512).read_to_end(&mut head)?;
    let kind = if head.starts_with(&[0x1f, 0x8b]) {
        ArchiveKind::Gzip
    } else if head.starts_with(b"BZh") {
        ArchiveKind::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        ArchiveKind::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ArchiveKind::Zstd
    } else {
        return Ok(is_tar_header(&head).then_some(ArchiveKind::Plain));
    };
    // The first 512 bytes decompressed (a stream that does not decompress is no archive).
    let file = std::io::BufReader::new(root.open_file(f)?);
    let reader: Box<dyn Read> = match kind {
        ArchiveKind::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        ArchiveKind::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(file)),
        ArchiveKind::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(file, true, XZ_MEM_LIMIT_KB)),
        _ => match zstd::stream::read::Decoder::with_buffer(file) {
            Ok(d) => Box::new(d),
            Err(_) => return Ok(None),
        },
    };
    let mut block = Vec::with_capacity(512);
    match reader.take(512).read_to_end(&mut block) {
        Ok(_) => {}
        // A hostile xz header asking for a huge dictionary: said, not copied silently.
        Err(e) if e.kind() == std::io::ErrorKind::OutOfMemory => {
            return Err(std::io::Error::other(format!("xz: the archive needs a dictionary larger than {} MiB", XZ_MEM_LIMIT_KB >> 10)))
        }
        // Not a stream of that kind after all: no archive, copied as it is (docker's rule).
        Err(_) => return Ok(None),
    }
    Ok(is_tar_header(&block).then_some(kind))
}

/// Whether `b` is a tar header block: 512 bytes, not all zero, whose checksum field
/// holds the sum of its bytes (the field itself counted as spaces), as Go's tar reader
/// checks (a V7 header without `ustar` counts too).
fn is_tar_header(b: &[u8]) -> bool {
    if b.len() < 512 || b[..512].iter().all(|x| *x == 0) {
        return false;
    }
    let field = String::from_utf8_lossy(&b[148..156]);
    let Ok(want) = u64::from_str_radix(field.trim_matches(|c: char| c == ' ' || c == '\0'), 8) else { return false };
    let sum: u64 = b[..512].iter().enumerate().map(|(i, x)| if (148..156).contains(&i) { 32 } else { *x as u64 }).sum();
    sum == want
}

/// ADD of a local archive: unpacked into `dir` by the image crate's layer apply (every
/// path resolved inside `dir`, `..` refused, bombs stopped).
fn extract(file: std::fs::File, rel: &Path, dir: std::os::fd::OwnedFd, at: &str, kind: ArchiveKind) -> std::result::Result<(), String> {
    use capsa_image::layer::bounded;
    use std::io::Read;
    let compressed = file.metadata().map_err(|e| e.to_string())?.len();
    let input = std::io::BufReader::with_capacity(256 << 10, file);
    // Decompression bombs stop as a layer's would (capsa_image::layer::Limits): the same
    // size cap and ratio for every compression.
    let limits = capsa_image::layer::Limits::default();
    let reader: Box<dyn Read> = match kind {
        ArchiveKind::Gzip => Box::new(bounded(flate2::bufread::MultiGzDecoder::new(input), compressed, limits)),
        ArchiveKind::Bzip2 => Box::new(bounded(bzip2::bufread::MultiBzDecoder::new(input), compressed, limits)),
        ArchiveKind::Xz => Box::new(bounded(lzma_rust2::XzReader::new_mem_limit(input, true, XZ_MEM_LIMIT_KB), compressed, limits)),
        ArchiveKind::Zstd => {
            Box::new(bounded(zstd::stream::read::Decoder::with_buffer(input).map_err(|e| format!("zstd: {e}"))?, compressed, limits))
        }
        ArchiveKind::Plain => Box::new(input),
    };
    let droot = Root::from_fd(dir, Path::new(at));
    let mut ar = tar::Archive::new(reader);
    let entries = ar.entries().map_err(|e| e.to_string())?;
    // A plain archive, as docker's ADD: `.wh.` names are files, not whiteouts.
    capsa_image::layer::apply_plain(entries, &droot, &format!("archive {}", rel.display())).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_keys() {
        assert_eq!(expose("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expose("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expose("8000-8002").unwrap(), vec!["8000/tcp", "8001/tcp", "8002/tcp"]);
        assert!(expose("0").is_err());
        assert!(expose("70000").is_err());
        assert!(expose("80/xyz").is_err());
        assert!(expose("9-3").is_err());
    }

    #[test]
    fn heredoc_markers() {
        let d = Heredoc { name: "EOF".into(), content: String::new(), expand: true };
        assert!(is_heredoc_marker("<<EOF", &d));
        assert!(is_heredoc_marker("<<-\"EOF\"", &d));
        assert!(!is_heredoc_marker("cat <<EOF", &d));
    }
}

//! `capsactl build`: Dockerfiles built on the same core as `run` and `commit`.
//!
//! ```text
//! parse.rs    the Dockerfile language: directives, continuations, heredocs, instructions
//! expand.rs   variable substitution ($VAR, ${VAR:-word}, ...) with docker's quoting rules
//! glob.rs     COPY/ADD source globs and .dockerignore patterns
//! mounts.rs   RUN --mount: bind, cache, tmpfs and secret mounts of one RUN
//! cache.rs    the build cache as df and the prunes see it (entries, cache mounts)
//! exec.rs     the executor: stages, config instructions, layer steps, the cache
//! parallel.rs independent stages side by side: worker processes, the shared step counter
//! run.rs      the build's scratch directory and RUN's foreground container
//! sources.rs  COPY/ADD sources: found, checksummed and copied between hostile roots
//! view.rs     the build's output: plain lines or the tty view redrawn in place
//! ```

pub mod cache;
pub mod exec;
pub mod expand;
pub mod glob;
pub mod mounts;
pub mod parallel;
pub mod parse;
pub mod run;
pub mod sources;
pub mod view;

//! `capsactl build`: Dockerfiles built on the same core as `run` and `commit`.
//!
//! ```text
//! parse.rs    the Dockerfile language: directives, continuations, heredocs, instructions
//! expand.rs   variable substitution ($VAR, ${VAR:-word}, ...) with docker's quoting rules
//! glob.rs     COPY/ADD source globs and .dockerignore patterns
//! ```

// The executor that uses all of this lands in the next commit.
#![allow(dead_code)]

pub mod expand;
pub mod glob;
pub mod parse;

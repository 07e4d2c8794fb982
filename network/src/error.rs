//! One error type: a message naming what was being done and the cause.

use std::fmt;

#[derive(Debug)]
pub struct Error {
    msg: String,
    /// The OS error, when the cause is one (EEXIST, ENOENT, ... are acted upon by callers).
    errno: Option<i32>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error { msg: msg.into(), errno: None }
    }

    pub fn os(ctx: impl fmt::Display, e: std::io::Error) -> Error {
        Error { msg: format!("{ctx}: {e}"), errno: e.raw_os_error() }
    }

    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    pub fn context(self, ctx: impl fmt::Display) -> Error {
        Error { msg: format!("{ctx}: {}", self.msg), errno: self.errno }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::new(format!("database: {e}"))
    }
}

/// `.ctx("doing x")` on any result whose error converts into ours.
pub trait Context<T> {
    fn ctx(self, ctx: impl fmt::Display) -> Result<T>;
    fn with_ctx<D: fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn ctx(self, ctx: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(ctx))
    }
    fn with_ctx<D: fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error { msg: e.to_string(), errno: e.raw_os_error() }
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Error {
        Error { msg: e.desc().to_string(), errno: Some(e as i32) }
    }
}

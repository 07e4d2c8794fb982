//! One error type for the crate: a single line naming the object and the cause, chained
//! from the outside in with `: ` (`load busybox.tar: layer sha256:ab…: entry "etc/x": ...`).

use std::fmt;

/// What kind of failure, for callers that react differently (exit codes, `rmi -f`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No such image, tag or blob.
    NotFound,
    /// The operation conflicts with the store's state (an image in use, a tag taken).
    Conflict,
    /// Anything else: bad input, I/O.
    Other,
}

#[derive(Debug)]
pub struct Error {
    kind: Kind,
    msg: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Error { kind: Kind::Other, msg: msg.into() }
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        Error { kind: Kind::NotFound, msg: msg.into() }
    }

    pub fn conflict(msg: impl Into<String>) -> Self {
        Error { kind: Kind::Conflict, msg: msg.into() }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Prefixes the message with what was being done.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        Error { kind: self.kind, msg: format!("{ctx}: {}", self.msg) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        // Drop Rust's " (os error N)" suffix: the text is what users read.
        match e.raw_os_error() {
            Some(n) => Error::new(nix::errno::Errno::from_raw(n).desc()),
            None => Error::new(e.to_string()),
        }
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::new(e.desc())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::new(format!("database: {e}"))
    }
}

/// `.ctx("open blob")` on any fallible call: adds what was being done to the error.
pub trait Context<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
    fn with_ctx<D: fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
    fn with_ctx<D: fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

/// Returns early with a formatted [`Error`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::Error::new(format!($($arg)*))) };
}

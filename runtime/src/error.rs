//! One error type for the whole library: it prints as a single line that names the field or
//! the object and the cause, e.g. `process.cwd "tmp": must be an absolute path`, and keeps
//! the cause itself (the errno of a system call, the cgroups or seccomp crate's error) as
//! [`std::error::Error::source`], so callers can match on what went wrong.
//!
//! Context is added from the inside out with [`Context::ctx`] and printed outermost first,
//! joined with `: `, so the most specific cause is last.

use std::fmt;

use nix::errno::Errno;

/// What went wrong, for callers that must react differently (the CLI maps all of them to
/// exit code 1; `delete --force` ignores [`Kind::NotExist`]; the companion crates match on
/// the errno).
#[derive(Debug, thiserror::Error)]
pub enum Kind {
    /// No container with that id. runc prints "container does not exist"; we add the id,
    /// keeping runc's words that callers such as containerd match on.
    #[error("container \"{0}\" does not exist")]
    NotExist(String),
    /// A system call failed; printed as the kernel's text without Rust's "(os error N)".
    #[error("{}", .0.desc())]
    Sys(#[source] Errno),
    /// An I/O error that is not a plain errno (a short write, a message of our own).
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// `linux.resources` and the container's cgroups.
    #[error(transparent)]
    Cgroup(#[from] capsa_cgroups::Error),
    /// `linux.seccomp` could not be compiled.
    #[error(transparent)]
    Seccomp(#[from] capsa_seccomp::Error),
    /// Anything else: invalid input, a refused operation. The text says which field.
    #[error("{0}")]
    Msg(String),
}

/// The library's error: a [`Kind`] and what was being done when it happened.
pub struct Error {
    /// Outermost first.
    context: Vec<String>,
    kind: Kind,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with a message of our own (invalid input, a refusal).
    pub fn new(msg: impl Into<String>) -> Self {
        Error { context: Vec::new(), kind: Kind::Msg(msg.into()) }
    }

    pub fn not_exist(id: &str) -> Self {
        Error { context: Vec::new(), kind: Kind::NotExist(id.to_string()) }
    }

    pub fn from_kind(kind: Kind) -> Self {
        Error { context: Vec::new(), kind }
    }

    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    pub fn is_not_exist(&self) -> bool {
        matches!(self.kind, Kind::NotExist(_))
    }

    /// The errno behind this error, if a system call failed.
    pub fn errno(&self) -> Option<Errno> {
        match &self.kind {
            Kind::Sys(e) => Some(*e),
            Kind::Io(e) => e.raw_os_error().map(Errno::from_raw),
            Kind::Cgroup(e) => e.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.context.insert(0, ctx.to_string());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.context {
            write!(f, "{c}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({self}; {:?})", self.kind)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Sys(e) => Some(e),
            Kind::Io(e) => Some(e),
            Kind::Cgroup(e) => Some(e),
            Kind::Seccomp(e) => Some(e),
            Kind::NotExist(_) | Kind::Msg(_) => None,
        }
    }
}

impl From<Kind> for Error {
    fn from(kind: Kind) -> Self {
        Error::from_kind(kind)
    }
}

impl From<Errno> for Error {
    fn from(e: Errno) -> Self {
        Error::from_kind(Kind::Sys(e))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        // A plain errno keeps only the kernel's text (no " (os error N)"): that is what
        // users read.
        match (e.raw_os_error(), e.get_ref()) {
            (Some(n), None) => Error::from_kind(Kind::Sys(Errno::from_raw(n))),
            _ => Error::from_kind(Kind::Io(e)),
        }
    }
}

impl From<capsa_cgroups::Error> for Error {
    fn from(e: capsa_cgroups::Error) -> Self {
        Error::from_kind(Kind::Cgroup(e))
    }
}

impl From<capsa_seccomp::Error> for Error {
    fn from(e: capsa_seccomp::Error) -> Self {
        Error::from_kind(Kind::Seccomp(e))
    }
}

/// `.ctx("mount proc")` on any fallible call: adds what was being done to the error.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn prints_field_first_and_keeps_the_cause() {
        let e: Error = std::fs::read("/no/such/file").ctx("read /no/such/file").map_err(|e| e.context("config.json")).unwrap_err();
        assert_eq!(e.to_string(), "config.json: read /no/such/file: No such file or directory");
        assert_eq!(e.errno(), Some(Errno::ENOENT));
        let src = e.source().expect("source");
        assert_eq!(src.to_string(), Errno::ENOENT.to_string());
        let e = Error::not_exist("abc");
        assert!(e.is_not_exist());
        assert_eq!(e.to_string(), "container \"abc\" does not exist");
        let e: Error = std::io::Error::other("short write").into();
        assert_eq!(e.to_string(), "short write");
        assert_eq!(e.errno(), None);
    }
}

//! The crate's error type. Every variant displays as one line that names what was being
//! done and the kernel's cause, e.g.
//! `linux.resources.memory.limit = 1024: write /sys/fs/cgroup/memory/x/memory.limit_in_bytes: Device or resource busy`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong managing a cgroup.
///
/// `Display` is the whole one-line message, causes included (what users read). The causes
/// are also kept as [`std::error::Error::source`]: the kernel's `io::Error` of an
/// [`Error::Io`], the inner error of an [`Error::Resource`], so a caller can walk the chain
/// or match on the errno ([`Error::raw_os_error`]). A caller that prints the chain itself
/// should print only the outermost `Display`, or the causes appear twice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation on a cgroup file or directory failed.
    #[error("{op} {}: {}{}", path.display(), errno_text(err), note_text(note))]
    Io {
        /// What was attempted: `read`, `write`, `mkdir`, `rmdir`, `open`, `statfs`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        err: io::Error,
        /// Extra context, e.g. the current memory usage when a limit is refused.
        note: Option<String>,
    },
    /// A value of `linux.resources` could not be applied.
    #[error("{field} = {value}: {cause}")]
    Resource {
        /// The OCI field, e.g. `linux.resources.memory.limit`.
        field: &'static str,
        /// The value as the user wrote it (strings quoted).
        value: String,
        /// Why it could not be applied.
        #[source]
        cause: Box<Error>,
    },
    /// `linux.cgroupsPath` (or the container id used in its place) is not usable.
    #[error("linux.cgroupsPath {path:?}: {reason}")]
    CgroupsPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A systemd `slice:prefix:name` path given to the cgroupfs driver.
    #[error(
        "linux.cgroupsPath {path:?}: a systemd \"slice:prefix:name\" path needs the systemd cgroup driver (--systemd-cgroup); the cgroupfs driver takes a path such as \"/capsa/<id>\""
    )]
    SystemdDriver {
        /// The path as given.
        path: String,
    },
    /// The systemd manager could not be reached.
    #[error("the systemd cgroup driver cannot reach the systemd {manager} manager: {err}")]
    SystemdConnect {
        /// `system` or `user`.
        manager: &'static str,
        /// Why (every address tried, with its error).
        #[source]
        err: io::Error,
    },
    /// systemd refused or failed a request about the container's unit.
    #[error("systemd unit {unit}: {what}: {reply}")]
    Systemd {
        /// The unit, e.g. `capsa-c1.scope`.
        unit: String,
        /// What was asked, e.g. `StartTransientUnit`.
        what: String,
        /// systemd's reply: the D-Bus error name and message, or the job's result.
        reply: String,
    },
    /// Anything else: missing mounts, timeouts, a value the kernel silently changed.
    #[error("{0}")]
    Msg(String),
}

impl Error {
    /// Error for an I/O operation on `path`.
    pub(crate) fn io(op: &'static str, path: &Path, err: io::Error) -> Error {
        Error::Io { op, path: path.to_path_buf(), err, note: None }
    }

    /// Wraps `self` as the cause of a failed `linux.resources` field.
    pub(crate) fn field(self, field: &'static str, value: impl fmt::Display) -> Error {
        Error::Resource { field, value: value.to_string(), cause: Box::new(self) }
    }

    /// Adds a note to an I/O error (no-op for other variants).
    pub(crate) fn with_note(mut self, text: String) -> Error {
        if let Error::Io { note, .. } = &mut self {
            *note = Some(text);
        }
        self
    }

    /// The errno behind this error, if it came from the kernel.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { err, .. } => err.raw_os_error(),
            Error::Resource { cause, .. } => cause.raw_os_error(),
            _ => None,
        }
    }

    /// True if the error is "no such file or directory" (e.g. the cgroup is already gone).
    pub fn is_not_found(&self) -> bool {
        self.raw_os_error() == Some(libc::ENOENT)
    }
}

/// `strerror` text without std's " (os error N)" suffix.
fn errno_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => err.to_string(),
    }
}

fn note_text(note: &Option<String>) -> String {
    match note {
        Some(n) => format!(" ({n})"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_error_is_one_line_with_field_value_and_cause() {
        let e = Error::io("write", Path::new("/sys/fs/cgroup/memory/x/memory.limit_in_bytes"), io::Error::from_raw_os_error(libc::EBUSY))
            .field("linux.resources.memory.limit", 1024);
        assert_eq!(
            e.to_string(),
            "linux.resources.memory.limit = 1024: write /sys/fs/cgroup/memory/x/memory.limit_in_bytes: Device or resource busy"
        );
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
    }

    #[test]
    fn causes_are_kept_as_sources() {
        use std::error::Error as _;
        let e = Error::io("write", Path::new("/f"), io::Error::from_raw_os_error(libc::EBUSY)).field("linux.resources.pids.limit", 5);
        let inner = e.source().map(|s| s.to_string());
        assert_eq!(inner.as_deref(), Some("write /f: Device or resource busy"));
        let errno = e.source().and_then(|s| s.source()).and_then(|s| s.downcast_ref::<io::Error>()).and_then(io::Error::raw_os_error);
        assert_eq!(errno, Some(libc::EBUSY));
        assert!(Error::Msg("x".into()).source().is_none());
    }

    #[test]
    fn note_is_appended_in_parentheses() {
        let e = Error::io("write", Path::new("/f"), io::Error::from_raw_os_error(libc::EBUSY)).with_note("current usage 5 bytes".into());
        assert_eq!(e.to_string(), "write /f: Device or resource busy (current usage 5 bytes)");
    }

    #[test]
    fn systemd_error_mentions_driver() {
        let e = Error::SystemdDriver { path: "system.slice:capsa:x".into() };
        let s = e.to_string();
        assert!(s.contains("linux.cgroupsPath \"system.slice:capsa:x\""), "{s}");
        assert!(s.contains("needs the systemd cgroup driver (--systemd-cgroup)"), "{s}");
        let e = Error::Systemd {
            unit: "capsa-x.scope".into(),
            what: "StartTransientUnit".into(),
            reply: "org.freedesktop.systemd1.UnitExists: Unit capsa-x.scope already exists.".into(),
        };
        assert_eq!(
            e.to_string(),
            "systemd unit capsa-x.scope: StartTransientUnit: org.freedesktop.systemd1.UnitExists: Unit capsa-x.scope already exists."
        );
    }
}

//! Waiting for a container process in the foreground lives in the library
//! ([`capsa::container::foreground`]), shared with capsactl's `run`.

pub use capsa::container::foreground::{forwarded, wait};

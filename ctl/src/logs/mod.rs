//! docker's json-file container logs: written by the monitor ([`write`]), read by `logs`
//! ([`read`]).

pub mod read;
pub mod write;

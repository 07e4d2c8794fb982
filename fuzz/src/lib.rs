//! See tests/fuzz.rs.

//! Images in and out of the store as files: docker-archive (`docker save`) and OCI image
//! layout, tar or directory.

pub mod load;
pub mod source;

pub use load::{load, LoadOpts, Loaded, Progress, Quiet};
pub use source::Source;

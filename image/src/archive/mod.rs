//! Images in and out of the store as files: docker-archive (`docker save`) and OCI image
//! layout, tar or directory; and root filesystem tarballs (`import`).

pub mod import;
pub mod load;
pub mod save;
pub mod source;

pub use import::import;
pub use load::{load, LoadOpts, Loaded, Progress, Quiet};
pub use save::{save, save_dir, Format, Item};
pub use source::Source;

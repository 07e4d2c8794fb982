//! capsa-image: the image store under one root (default `/var/lib/capsa`), used by many
//! short `capsactl` processes at once, with no daemon. A library: it never prints.
//!
//! * [`content`]: blobs by digest, verified while written, named only when they match;
//! * [`db`]: metadata in SQLite (images, tags, manifests, layers, containers);
//! * [`layer`]: a layer tar (plain, gzip, zstd) unpacked inside its directory, in overlay
//!   form, every path resolved by `capsa_sys::Root`;
//! * [`snapshot`]: unpacked layers keyed by chainID, overlay mounts of them, the copied
//!   fallback ([`copy`]);
//! * [`archive`]: docker-archive and OCI layout in ([`archive::load`]) and out;
//! * [`runspec`]: image config → OCI runtime spec;
//! * [`store`]: the store itself: registering, finding, tagging, removing, `gc`;
//! * [`oci`], [`digest`], [`reference`]: the documents, digests and names.

pub mod archive;
pub mod content;
pub mod copy;
pub mod db;
pub mod digest;
pub mod error;
pub mod layer;
pub mod oci;
pub mod reference;
pub mod runspec;
pub mod snapshot;
pub mod store;
pub mod workers;

pub use digest::Digest;
pub use error::{Error, Result};
pub use store::Store;

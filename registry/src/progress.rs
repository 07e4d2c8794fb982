//! What pull and push report about each blob, for a caller that draws it (the library
//! never prints). Called from the worker threads.

use capsa_image::Digest;

/// The state of one layer (or config blob), docker's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Queued behind the concurrency bound.
    Waiting,
    /// Pull: the layer is already unpacked in the store.
    AlreadyExists,
    /// Bytes coming in (`done` of `total`).
    Downloading,
    /// The connection broke; continuing from `done` with a Range request.
    Resuming,
    /// The blob is verified; unpacking it.
    Extracting,
    PullComplete,
    /// Push: bytes going out (`done` of `total`).
    Pushing,
    /// Push: the registry has it (HEAD).
    LayerExists,
    /// Push: mounted from another repository of the same registry.
    Mounted,
    Pushed,
}

impl Status {
    /// How docker shows it.
    pub fn text(self) -> &'static str {
        match self {
            Status::Waiting => "Waiting",
            Status::AlreadyExists => "Already exists",
            Status::Downloading => "Downloading",
            Status::Resuming => "Resuming download",
            Status::Extracting => "Extracting",
            Status::PullComplete => "Pull complete",
            Status::Pushing => "Pushing",
            Status::LayerExists => "Layer already exists",
            Status::Mounted => "Mounted from another repository",
            Status::Pushed => "Pushed",
        }
    }

    /// Whether this is the last word about the blob.
    pub fn is_final(self) -> bool {
        matches!(self, Status::AlreadyExists | Status::PullComplete | Status::LayerExists | Status::Mounted | Status::Pushed)
    }
}

pub trait Progress: Sync {
    /// Blob `id` (a layer or config) is now in `status`; `done` of `total` bytes moved.
    fn update(&self, _id: &Digest, _status: Status, _done: u64, _total: u64) {}
}

/// No progress display.
pub struct Quiet;
impl Progress for Quiet {}

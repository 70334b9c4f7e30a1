//! OCI images: content-addressed blob store, import of root filesystems and archives, registry client, layer unpacking.

pub mod client;
mod digest;
mod error;
pub mod import;
pub mod reference;
pub mod spec;
mod store;
pub mod unpack;

pub use digest::{digest_reader, Digest, Hasher};
pub use error::{Error, Result};
pub use store::{BlobStore, BlobWriter, LocalImage, StoredManifest};

//! OCI images: content-addressed blob store, import of root filesystems and
//! archives, registry client, layer unpacking.
//!
//! # What
//!
//! * [`BlobStore`]: blobs by sha256 digest under `blobs/sha256/<hex>`, plus
//!   repositories of manifests and tags; the storage of both berth's built-in
//!   registry (server side) and an agent's image cache.
//! * [`import`]: build an OCI image (image manifest v1, config, gzip layers)
//!   into a store from a root filesystem directory, a `docker save` archive
//!   or an OCI image layout archive, with a progress callback.
//! * [`client`]: pull from a registry (OCI and Docker schema 2 manifests and
//!   indexes, platform selection, Basic and Bearer-token auth, http and
//!   https) into a store, fetching only missing blobs; push from a store;
//!   list a registry.
//! * [`unpack`]: layers into a layer cache for overlayfs (whiteouts encoded
//!   the overlay way), or flattened into one directory (whiteouts applied),
//!   refusing any entry that would land outside the root.
//!
//! # Design
//!
//! Everything is content-addressed and written atomically: a blob is written
//! to a temp file in the store, hashed on the way, fsynced and renamed into
//! place only when its digest is the expected one; a layer is unpacked into a
//! temp dir renamed into place whole. So a crash never leaves a torn blob or
//! a half layer, and an existing blob or layer dir is always complete: that
//! is what lets pulls skip blobs they have and unpacks skip layers done.
//! Manifests and configs are kept as the exact bytes received, so digests
//! survive a round trip through berth; [`spec`] models only the fields berth
//! reads. Names are checked against the distribution spec's grammar before
//! they touch a path. The store and unpacking are blocking (call them from
//! `spawn_blocking` in async code); the client is async (hyper), streams blob
//! bodies to disk and runs the final fsync on the blocking pool.
//!
//! # Limits
//!
//! * sha256 digests only; gzip or uncompressed layers (zstd is refused
//!   with [`Error::Unsupported`]); no Docker schema 1 manifests.
//! * The registry client speaks HTTP/1.1 (no HTTP/2) over plain TCP or
//!   TLS (rustls, `ring` provider). Registries on loopback hosts default to
//!   http, all others to https (see [`client`] for the overrides); servers
//!   are verified against Mozilla's roots (built in), `SSL_CERT_FILE` and
//!   CAs given to [`client::Client::with_root_certificates`]; verification
//!   cannot be switched off (use plain http for such a registry), and there
//!   are no client certificates. Docker Hub is `registry-1.docker.io`, with
//!   `library/` spelled out.
//! * No garbage collection or deletion of blobs, manifests or layer dirs.
//! * Unpacking refuses a tar entry under a parent that is a symlink (rather
//!   than resolving it inside the root as Docker does); layer tars written by
//!   image builders never need that.
//! * Ownership, device nodes and `SCHILY.xattr.*` attributes are applied only
//!   as root; unprivileged, whiteouts use `user.overlay.opaque` (overlay's
//!   `userxattr` mode) and 0/0 character devices (Linux 5.8+).
//! * A root filesystem import records no extended attributes and skips
//!   sockets.

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

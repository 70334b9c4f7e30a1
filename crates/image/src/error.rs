//! The one error type of the crate.

use crate::Digest;

/// What can go wrong with images, blobs, archives and registries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem or network I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A repository name outside the distribution spec's grammar.
    #[error("invalid repository name {0:?}: lowercase letters, digits and separators (. _ __ -) in /-separated components")]
    InvalidName(String),
    /// A tag outside `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    #[error("invalid tag {0:?}")]
    InvalidTag(String),
    /// A digest that is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    InvalidDigest(String),
    /// An image reference that cannot be parsed.
    #[error("invalid image reference {0:?}")]
    InvalidReference(String),
    /// Content whose hash is not the digest it was announced with.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// Content whose length is not the size it was announced with.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    /// A blob that is not in the store.
    #[error("blob unknown: {0}")]
    BlobUnknown(Digest),
    /// A manifest (by tag or digest) that is not in the store.
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    /// A manifest or image config that does not parse or is inconsistent.
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    /// A media type or layer compression berth does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An archive entry or layer path that would land outside the root.
    #[error("path escapes the root: {0}")]
    PathEscapes(String),
    /// An import archive that is neither a docker save nor an OCI layout, or is broken.
    #[error("invalid archive: {0}")]
    Archive(String),
    /// An upload session that does not exist.
    #[error("upload unknown: {0}")]
    UploadUnknown(String),
    /// No manifest in an index matches the wanted platform.
    #[error("no manifest for platform {0}")]
    PlatformNotFound(String),
    /// The registry refused the credentials (or none were given).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The registry answered with an error.
    #[error("registry error: HTTP {status}: {message}")]
    Registry { status: u16, message: String },
    /// The HTTP exchange itself failed (connect, protocol).
    #[error("http: {0}")]
    Http(String),
    /// A TLS failure: a server certificate that does not verify (not signed
    /// by a trusted CA, expired, for another name), a failed handshake, or
    /// CA certificates that cannot be used.
    #[error("tls: {0}")]
    Tls(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a context to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

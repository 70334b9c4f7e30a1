//! The content-addressed blob store and the repositories' manifests and tags.

use crate::digest::HashingWriter;
use crate::error::IoContext as _;
use crate::reference::{validate_local_name, validate_tag, Reference};
use crate::spec::{AnyManifest, ConfigFile, ImageConfig, Manifest};
use crate::{Digest, Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A directory of blobs addressed by digest, plus repositories of manifests.
///
/// Layout under the root:
///
/// ```text
/// blobs/sha256/<hex>                              every blob, manifests included
/// repositories/<name>/_manifests/revisions/<hex>  the media type of a manifest in <name>
/// repositories/<name>/_manifests/tags/<tag>       the digest a tag points at
/// uploads/<id>                                    registry upload sessions
/// tmp/                                            files being written
/// ```
///
/// Every file is written to `tmp/`, fsynced and renamed into place, so a
/// crash leaves either the old or the new content, never a torn file; a blob
/// is only ever renamed into place after its content hashed to its digest.
/// Tags and revisions sit in `_manifests` (a name component never starts with
/// `_`), so `a/tags` and `a` cannot collide.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// A manifest read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// An image manifest with its parsed config, as stored locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    pub digest: Digest,
    pub manifest: Manifest,
    pub config_file: ConfigFile,
}

impl LocalImage {
    /// How to run the image (empty when the config has no `config` section).
    pub fn config(&self) -> ImageConfig {
        self.config_file.config.clone().unwrap_or_default()
    }

    /// The layer blob digests, lowest first.
    pub fn layers(&self) -> Vec<Digest> {
        self.manifest
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect()
    }
}

/// Writes one blob: hashes as it goes, lands in the store on [`commit`](Self::commit).
/// Dropped without a commit, it leaves nothing behind.
pub struct BlobWriter {
    file: HashingWriter<tempfile::NamedTempFile>,
    blobs: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.file.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies the content against `expected` (when given), fsyncs and renames
    /// the blob into place. A mismatch discards it.
    pub fn commit(self, expected: Option<&Digest>) -> Result<Digest> {
        let HashingWriter { inner: tmp, hasher } = self.file;
        let digest = hasher.finish();
        if let Some(e) = expected {
            if *e != digest {
                return Err(Error::DigestMismatch {
                    expected: e.clone(),
                    actual: digest,
                });
            }
        }
        let dest = self.blobs.join(digest.hex());
        if dest.exists() {
            return Ok(digest);
        }
        tmp.as_file()
            .sync_all()
            .ctx(|| "cannot fsync a new blob".into())?;
        tmp.persist(&dest)
            .map_err(|e| e.error)
            .ctx(|| format!("cannot move a new blob to {}", dest.display()))?;
        sync_dir(&self.blobs)?;
        Ok(digest)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("cannot fsync {}", dir.display()))
}

/// A random hex id (upload sessions, temp names).
pub(crate) fn random_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut out = String::new();
    for salt in 0..2u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_u64(n);
        h.write_u64(salt);
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

fn valid_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl BlobStore {
    /// Opens (creating as needed) the store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["blobs/sha256", "repositories", "uploads", "tmp"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).ctx(|| format!("cannot create {}", d.display()))?;
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where temporary files go (same filesystem as the blobs).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The path of a blob (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::BlobUnknown(digest.clone()))
            }
            Err(e) => Err(e).ctx(|| format!("cannot stat blob {digest}")),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        match File::open(self.blob_path(digest)) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::BlobUnknown(digest.clone()))
            }
            Err(e) => Err(e).ctx(|| format!("cannot open blob {digest}")),
        }
    }

    /// The whole blob in memory (for manifests and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut v)
            .ctx(|| format!("cannot read blob {digest}"))?;
        Ok(v)
    }

    /// Starts writing a blob.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.tmp_dir())
            .ctx(|| format!("cannot create a temp file in {}", self.tmp_dir().display()))?;
        Ok(BlobWriter {
            file: HashingWriter::new(tmp),
            blobs: self.root.join("blobs/sha256"),
        })
    }

    /// Stores what `reader` yields; returns its digest.
    pub fn put_blob(&self, reader: impl Read) -> Result<Digest> {
        self.put_blob_inner(reader, None)
    }

    /// Stores what `reader` yields, refusing it unless it hashes to `expected`.
    pub fn put_blob_verified(&self, reader: impl Read, expected: &Digest) -> Result<Digest> {
        self.put_blob_inner(reader, Some(expected))
    }

    fn put_blob_inner(&self, mut reader: impl Read, expected: Option<&Digest>) -> Result<Digest> {
        let mut w = self.blob_writer()?;
        io::copy(&mut reader, &mut w).ctx(|| "cannot write a blob".into())?;
        w.commit(expected)
    }

    /// Starts an upload session; returns its id.
    pub fn new_upload(&self) -> Result<String> {
        let id = random_id();
        let p = self.root.join("uploads").join(&id);
        File::create(&p).ctx(|| format!("cannot create {}", p.display()))?;
        Ok(id)
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf> {
        let p = self.root.join("uploads").join(id);
        if valid_upload_id(id) && p.is_file() {
            Ok(p)
        } else {
            Err(Error::UploadUnknown(id.to_string()))
        }
    }

    /// Bytes received so far by an upload session.
    pub fn upload_size(&self, id: &str) -> Result<u64> {
        let p = self.upload_path(id)?;
        Ok(fs::metadata(&p)
            .ctx(|| format!("cannot stat {}", p.display()))?
            .len())
    }

    /// Opens an upload session to append to.
    pub fn upload_appender(&self, id: &str) -> Result<File> {
        let p = self.upload_path(id)?;
        OpenOptions::new()
            .append(true)
            .open(&p)
            .ctx(|| format!("cannot open {}", p.display()))
    }

    /// Ends an upload session: the content must hash to `expected`; it then
    /// becomes a blob. On a mismatch the session is discarded.
    pub fn finish_upload(&self, id: &str, expected: &Digest) -> Result<Digest> {
        let p = self.upload_path(id)?;
        let f = File::open(&p).ctx(|| format!("cannot open {}", p.display()))?;
        let (actual, _) =
            crate::digest::digest_reader(&f).ctx(|| format!("cannot read {}", p.display()))?;
        if actual != *expected {
            let _ = fs::remove_file(&p);
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let dest = self.blob_path(expected);
        if dest.exists() {
            let _ = fs::remove_file(&p);
            return Ok(actual);
        }
        f.sync_all().ctx(|| "cannot fsync an upload".into())?;
        fs::rename(&p, &dest).ctx(|| format!("cannot move an upload to {}", dest.display()))?;
        sync_dir(&self.root.join("blobs/sha256"))?;
        Ok(actual)
    }

    /// Drops an upload session.
    pub fn cancel_upload(&self, id: &str) -> Result<()> {
        let p = self.upload_path(id)?;
        fs::remove_file(&p).ctx(|| format!("cannot remove {}", p.display()))
    }

    fn repo_dir(&self, name: &str) -> Result<PathBuf> {
        validate_local_name(name)?;
        Ok(self.root.join("repositories").join(name).join("_manifests"))
    }

    /// Writes small content atomically.
    fn write_small(&self, path: &Path, content: &[u8]) -> Result<()> {
        let dir = path
            .parent()
            .ok_or_else(|| Error::ManifestInvalid(format!("no parent: {}", path.display())))?;
        fs::create_dir_all(dir).ctx(|| format!("cannot create {}", dir.display()))?;
        let mut tmp = tempfile::Builder::new()
            .prefix("link-")
            .tempfile_in(self.tmp_dir())
            .ctx(|| "cannot create a temp file".into())?;
        tmp.write_all(content)
            .and_then(|_| tmp.as_file().sync_all())
            .ctx(|| "cannot write a temp file".into())?;
        tmp.persist(path)
            .map_err(|e| e.error)
            .ctx(|| format!("cannot write {}", path.display()))?;
        sync_dir(dir)
    }

    /// Stores a manifest in repository `name` under `reference` (a tag, or its
    /// own digest). The manifest must parse; every blob it refers to (config
    /// and layers, or an index's manifests) must already be in the store.
    /// Returns the manifest's digest.
    pub fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let repo = self.repo_dir(name)?;
        let reference = Reference::parse(reference)?;
        let digest = Digest::of(bytes);
        if let Reference::Digest(d) = &reference {
            if *d != digest {
                return Err(Error::DigestMismatch {
                    expected: d.clone(),
                    actual: digest,
                });
            }
        }
        let (parsed, parsed_type) = AnyManifest::parse(bytes, Some(media_type))?;
        if parsed_type != media_type {
            return Err(Error::ManifestInvalid(format!(
                "the manifest says mediaType {parsed_type} and was given as {media_type}"
            )));
        }
        for d in parsed.references() {
            match self.blob_size(&d.digest) {
                Ok(size) if size == d.size => {}
                Ok(size) => {
                    return Err(Error::SizeMismatch {
                        digest: d.digest.clone(),
                        expected: d.size,
                        actual: size,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        self.put_blob_verified(bytes, &digest)?;
        self.write_small(
            &repo.join("revisions").join(digest.hex()),
            media_type.as_bytes(),
        )?;
        if let Reference::Tag(t) = &reference {
            self.write_small(&repo.join("tags").join(t), digest.to_string().as_bytes())?;
        }
        Ok(digest)
    }

    /// The digest `reference` (a tag or a digest) resolves to in `name`.
    pub fn resolve(&self, name: &str, reference: &str) -> Result<Digest> {
        let repo = self.repo_dir(name)?;
        let unknown = || Error::ManifestUnknown(format!("{name}:{reference}"));
        match Reference::parse(reference)? {
            Reference::Digest(d) => {
                if repo.join("revisions").join(d.hex()).is_file() {
                    Ok(d)
                } else {
                    Err(unknown())
                }
            }
            Reference::Tag(t) => match fs::read_to_string(repo.join("tags").join(&t)) {
                Ok(s) => Digest::parse(s.trim()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(unknown()),
                Err(e) => Err(e).ctx(|| format!("cannot read tag {name}:{t}")),
            },
        }
    }

    /// A manifest of `name` by tag or digest.
    pub fn get_manifest(&self, name: &str, reference: &str) -> Result<StoredManifest> {
        let digest = self.resolve(name, reference)?;
        let repo = self.repo_dir(name)?;
        let media_type = fs::read_to_string(repo.join("revisions").join(digest.hex()))
            .map_err(|_| Error::ManifestUnknown(format!("{name}@{digest}")))?;
        let bytes = self
            .read_blob(&digest)
            .map_err(|_| Error::ManifestUnknown(format!("{name}@{digest}")))?;
        Ok(StoredManifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// An image manifest of `name` with its config, when it and all its
    /// blobs are here.
    pub fn image(&self, name: &str, reference: &str) -> Result<LocalImage> {
        let m = self.get_manifest(name, reference)?;
        self.image_by_manifest(m.digest, &m.bytes, Some(&m.media_type))
    }

    pub(crate) fn image_by_manifest(
        &self,
        digest: Digest,
        bytes: &[u8],
        media_type: Option<&str>,
    ) -> Result<LocalImage> {
        let manifest = match AnyManifest::parse(bytes, media_type)?.0 {
            AnyManifest::Image(m) => m,
            AnyManifest::Index(_) => {
                return Err(Error::ManifestInvalid(format!(
                    "{digest} is an index, not an image manifest"
                )))
            }
        };
        for l in &manifest.layers {
            if !self.has_blob(&l.digest) {
                return Err(Error::BlobUnknown(l.digest.clone()));
            }
        }
        let config_file = ConfigFile::parse(&self.read_blob(&manifest.config.digest)?)?;
        Ok(LocalImage {
            digest,
            manifest,
            config_file,
        })
    }

    /// The tags of `name`, sorted; empty for an unknown repository.
    pub fn tags(&self, name: &str) -> Result<Vec<String>> {
        let dir = self.repo_dir(name)?.join("tags");
        let mut tags = Vec::new();
        match fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd {
                    let e = e.ctx(|| format!("cannot list {}", dir.display()))?;
                    if let Some(t) = e.file_name().to_str() {
                        if validate_tag(t).is_ok() {
                            tags.push(t.to_string());
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx(|| format!("cannot list {}", dir.display())),
        }
        tags.sort();
        Ok(tags)
    }

    /// Whether repository `name` holds any manifest.
    pub fn has_repository(&self, name: &str) -> bool {
        self.repo_dir(name).is_ok_and(|d| d.is_dir())
    }

    /// Every repository name, sorted.
    pub fn repositories(&self) -> Result<Vec<String>> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
            let rd = fs::read_dir(dir).ctx(|| format!("cannot list {}", dir.display()))?;
            for e in rd {
                let e = e.ctx(|| format!("cannot list {}", dir.display()))?;
                let Some(n) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if n == "_manifests" || !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = if prefix.is_empty() {
                    n
                } else {
                    format!("{prefix}/{n}")
                };
                let p = e.path();
                if p.join("_manifests").is_dir() {
                    out.push(name.clone());
                }
                walk(&p, &name, out)?;
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(&self.root.join("repositories"), "", &mut out)?;
        out.sort();
        Ok(out)
    }
}

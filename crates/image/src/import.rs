//! Building images into a [`BlobStore`] from a root filesystem directory, a
//! `docker save` archive or an OCI image layout archive.

use crate::digest::HashingWriter;
use crate::error::IoContext as _;
use crate::spec::{
    media_types, AnyManifest, ConfigFile, Descriptor, ImageConfig, Manifest, Platform,
};
use crate::store::BlobStore;
use crate::{Digest, Error, Result};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};

/// A progress callback: `(bytes done, bytes in all)`. The total may grow
/// once an archive has been read and the work on its layers is known.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// How to describe an image built from a root filesystem directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsOptions {
    pub entrypoint: Option<Vec<String>>,
    /// Default `["sh"]`.
    pub cmd: Option<Vec<String>>,
    /// Default `PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// Every entry's mtime set to this (seconds since the epoch), for a layer
    /// whose digest depends on content alone; `None` keeps the files' mtimes.
    pub mtime: Option<u64>,
    /// Every entry owned by this uid and gid instead of the files' owners.
    pub owner: Option<(u64, u64)>,
    /// Default: linux and this machine's architecture.
    pub platform: Platform,
}

/// The `PATH` a root filesystem image gets by default.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Default for RootfsOptions {
    fn default() -> Self {
        Self {
            entrypoint: None,
            cmd: Some(vec!["sh".to_string()]),
            env: vec![DEFAULT_PATH.to_string()],
            working_dir: None,
            user: None,
            mtime: None,
            owner: None,
            platform: Platform::host(),
        }
    }
}

/// An image imported into a store and tagged there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub name: String,
    pub tag: String,
    /// The manifest's digest.
    pub digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
    /// Layer blob digests, lowest first.
    pub layers: Vec<Digest>,
}

/// Counts bytes read and reports them.
struct Counting<'a, R> {
    inner: R,
    done: &'a mut u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            *self.done += n as u64;
            (self.progress)(*self.done, self.total);
        }
        Ok(n)
    }
}

/// Imports `path`: a directory as a root filesystem with default options,
/// a file as a `docker save` or OCI layout archive (optionally gzipped).
pub fn import_path(
    store: &BlobStore,
    path: &Path,
    name: &str,
    tag: &str,
    progress: Progress<'_>,
) -> Result<Imported> {
    if path.is_dir() {
        import_rootfs(store, path, &RootfsOptions::default(), name, tag, progress)
    } else {
        import_archive(store, path, name, tag, progress)
    }
}

fn check_target(name: &str, tag: &str) -> Result<()> {
    crate::reference::validate_local_name(name)?;
    crate::reference::validate_tag(tag)
}

/// Builds a one-layer image from the directory `dir` and tags it `name:tag`.
///
/// The layer tar is deterministic: entries sorted by name, numeric owners
/// only, no atime/ctime, gzip without a timestamp; with [`RootfsOptions::mtime`]
/// set, the same tree always gives the same digests. Modes (set-id bits
/// included), owners, symlinks, hard links (by inode), device nodes and
/// fifos are kept; sockets are skipped.
pub fn import_rootfs(
    store: &BlobStore,
    dir: &Path,
    opts: &RootfsOptions,
    name: &str,
    tag: &str,
    progress: Progress<'_>,
) -> Result<Imported> {
    check_target(name, tag)?;
    let meta = fs::metadata(dir).ctx(|| format!("cannot read {}", dir.display()))?;
    if !meta.is_dir() {
        return Err(Error::Archive(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let total = tree_size(dir, &mut std::collections::HashSet::new())?;
    let blob = store.blob_writer()?;
    let gz = flate2::GzBuilder::new().write(blob, flate2::Compression::default());
    let mut builder = tar::Builder::new(HashingWriter::new(gz));
    let mut w = TreeWriter {
        builder: &mut builder,
        opts,
        links: HashMap::new(),
        done: 0,
        total,
        progress,
    };
    w.walk(dir, Path::new(""))?;
    (w.progress)(total, total);
    let hashed = builder
        .into_inner()
        .ctx(|| "cannot finish the layer tar".into())?;
    let diff_id = hashed.hasher.finish();
    let blob = hashed
        .inner
        .finish()
        .ctx(|| "cannot finish the layer gzip".into())?;
    let size = blob.len();
    let layer = blob.commit(None)?;
    let config = ImageConfig {
        entrypoint: opts.entrypoint.clone(),
        cmd: opts.cmd.clone(),
        env: opts.env.clone(),
        working_dir: opts.working_dir.clone(),
        user: opts.user.clone(),
    };
    let config_file = ConfigFile {
        architecture: opts.platform.architecture.clone(),
        os: opts.platform.os.clone(),
        variant: opts.platform.variant.clone(),
        created: None,
        config: Some(config.clone()),
        rootfs: crate::spec::RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id],
        },
        history: Some(vec![serde_json::json!({
            "created_by": format!("berth image import --rootfs ({})", env!("CARGO_PKG_VERSION")),
        })]),
    };
    let config_bytes =
        serde_json::to_vec(&config_file).map_err(|e| Error::ManifestInvalid(e.to_string()))?;
    let config_digest = store.put_blob(config_bytes.as_slice())?;
    let layers = vec![Descriptor::new(media_types::OCI_LAYER_GZIP, layer, size)];
    finish_image(
        store,
        name,
        tag,
        Descriptor::new(
            media_types::OCI_CONFIG,
            config_digest,
            config_bytes.len() as u64,
        ),
        layers,
        config,
    )
}

/// Writes and tags an OCI manifest for config + layers already in the store.
fn finish_image(
    store: &BlobStore,
    name: &str,
    tag: &str,
    config_desc: Descriptor,
    layers: Vec<Descriptor>,
    config: ImageConfig,
) -> Result<Imported> {
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_types::OCI_MANIFEST.to_string()),
        config: config_desc,
        layers,
        annotations: None,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::ManifestInvalid(e.to_string()))?;
    let digest = store.put_manifest(name, tag, &bytes, media_types::OCI_MANIFEST)?;
    Ok(Imported {
        name: name.to_string(),
        tag: tag.to_string(),
        digest,
        layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
        manifest,
        config,
    })
}

/// Bytes of regular files under `dir`, each hard-linked inode once.
fn tree_size(dir: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> Result<u64> {
    let mut total = 0;
    for (path, m) in sorted_entries(dir)? {
        if m.is_dir() {
            total += tree_size(&path, seen)?;
        } else if m.is_file() && (m.nlink() < 2 || seen.insert((m.dev(), m.ino()))) {
            total += m.len();
        }
    }
    Ok(total)
}

fn sorted_entries(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).ctx(|| format!("cannot list {}", dir.display()))? {
        let e = e.ctx(|| format!("cannot list {}", dir.display()))?;
        let p = e.path();
        let m = fs::symlink_metadata(&p).ctx(|| format!("cannot stat {}", p.display()))?;
        v.push((p, m));
    }
    v.sort_by(|a, b| a.0.file_name().cmp(&b.0.file_name()));
    Ok(v)
}

struct TreeWriter<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    opts: &'a RootfsOptions,
    /// (dev, inode) → the first path archived for it, for hard links.
    links: HashMap<(u64, u64), PathBuf>,
    done: u64,
    total: u64,
    progress: Progress<'a>,
}

impl<W: Write> TreeWriter<'_, W> {
    fn header(&self, m: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode() & 0o7777);
        let (uid, gid) = self
            .opts
            .owner
            .unwrap_or((u64::from(m.uid()), u64::from(m.gid())));
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(
            self.opts
                .mtime
                .unwrap_or(u64::try_from(m.mtime()).unwrap_or(0)),
        );
        h.set_size(0);
        h
    }

    fn walk(&mut self, dir: &Path, rel: &Path) -> Result<()> {
        for (path, m) in sorted_entries(dir)? {
            let Some(file_name) = path.file_name() else {
                continue;
            };
            let rel = rel.join(file_name);
            let ft = m.file_type();
            let err = |e: io::Error| Error::Io {
                context: format!("cannot archive {}", path.display()),
                source: e,
            };
            if ft.is_dir() {
                let mut h = self.header(&m, tar::EntryType::Directory);
                self.builder
                    .append_data(&mut h, &rel, io::empty())
                    .map_err(err)?;
                self.walk(&path, &rel)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path)
                    .ctx(|| format!("cannot read the link {}", path.display()))?;
                let mut h = self.header(&m, tar::EntryType::Symlink);
                self.builder
                    .append_link(&mut h, &rel, &target)
                    .map_err(err)?;
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                        let first = first.clone();
                        let mut h = self.header(&m, tar::EntryType::Link);
                        self.builder
                            .append_link(&mut h, &rel, &first)
                            .map_err(err)?;
                        continue;
                    }
                    self.links.insert((m.dev(), m.ino()), rel.clone());
                }
                let mut h = self.header(&m, tar::EntryType::Regular);
                h.set_size(m.len());
                let f = File::open(&path).ctx(|| format!("cannot open {}", path.display()))?;
                // Exactly the size in the header, even if the file changes meanwhile.
                let data = Counting {
                    inner: f.take(m.len()),
                    done: &mut self.done,
                    total: self.total,
                    progress: &mut *self.progress,
                };
                self.builder.append_data(&mut h, &rel, data).map_err(err)?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else {
                    tar::EntryType::Fifo
                };
                let mut h = self.header(&m, kind);
                if kind != tar::EntryType::Fifo {
                    let rdev = m.rdev();
                    let major = u32::try_from(nix::sys::stat::major(rdev)).unwrap_or(0);
                    let minor = u32::try_from(nix::sys::stat::minor(rdev)).unwrap_or(0);
                    h.set_device_major(major).map_err(err)?;
                    h.set_device_minor(minor).map_err(err)?;
                }
                self.builder
                    .append_data(&mut h, &rel, io::empty())
                    .map_err(err)?;
            } else {
                tracing::debug!(path = %path.display(), "skipping a socket");
            }
        }
        Ok(())
    }
}

/// An archive extracted into a staging directory: regular files on disk,
/// symlinks kept aside (old `docker save` links duplicate layers).
struct Staged {
    dir: tempfile::TempDir,
    links: HashMap<PathBuf, PathBuf>,
}

impl Staged {
    /// The staged file at `rel`, symlinks followed inside the archive.
    fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let mut cur = lexical(Path::new(""), Path::new(rel))
            .ok_or_else(|| Error::Archive(format!("{rel} leaves the archive")))?;
        for _ in 0..16 {
            match self.links.get(&cur) {
                Some(target) => {
                    let parent = cur.parent().unwrap_or(Path::new(""));
                    cur = lexical(parent, target)
                        .ok_or_else(|| Error::Archive(format!("{rel} leaves the archive")))?;
                }
                None => {
                    let p = self.dir.path().join(&cur);
                    return if p.is_file() {
                        Ok(p)
                    } else {
                        Err(Error::Archive(format!("{rel} is not in the archive")))
                    };
                }
            }
        }
        Err(Error::Archive(format!("{rel}: too many symlinks")))
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>> {
        let p = self.resolve(rel)?;
        fs::read(&p).ctx(|| format!("cannot read {}", p.display()))
    }

    fn has(&self, rel: &str) -> bool {
        self.resolve(rel).is_ok()
    }
}

/// `base` joined with `rel`, `..` resolved lexically; `None` if it climbs out.
fn lexical(base: &Path, rel: &Path) -> Option<PathBuf> {
    let mut out: Vec<&std::ffi::OsStr> = Vec::new();
    let start: Vec<Component<'_>> = if rel.is_absolute() {
        Vec::new()
    } else {
        base.components().collect()
    };
    for c in start.into_iter().chain(rel.components()) {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out.iter().collect())
}

fn stage(
    store: &BlobStore,
    archive: &Path,
    done: &mut u64,
    total: u64,
    progress: Progress<'_>,
) -> Result<Staged> {
    let f = File::open(archive).ctx(|| format!("cannot open {}", archive.display()))?;
    let counting = Counting {
        inner: f,
        done,
        total,
        progress,
    };
    let mut r = BufReader::with_capacity(256 * 1024, counting);
    let head = r
        .fill_buf()
        .ctx(|| format!("cannot read {}", archive.display()))?;
    let reader: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    };
    let dir = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(store.tmp_dir())
        .ctx(|| "cannot create a staging directory".into())?;
    let mut links = HashMap::new();
    let mut tar = tar::Archive::new(reader);
    let bad = |e: io::Error| Error::Archive(format!("{}: {e}", archive.display()));
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path().map_err(bad)?.into_owned();
        let rel = lexical(Path::new(""), &raw)
            .filter(|_| !raw.is_absolute())
            .ok_or_else(|| Error::PathEscapes(raw.display().to_string()))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = dir.path().join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = dest.parent() {
                    fs::create_dir_all(p).ctx(|| format!("cannot create {}", p.display()))?;
                }
                let mut out =
                    File::create(&dest).ctx(|| format!("cannot create {}", dest.display()))?;
                io::copy(&mut entry, &mut out).map_err(bad)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| {
                        Error::Archive(format!("{}: link without target", rel.display()))
                    })?
                    .into_owned();
                // Hard link names are archive-relative; make them relative to the link's dir.
                let target = if entry.header().entry_type() == tar::EntryType::Link {
                    let depth = rel.components().count().saturating_sub(1);
                    let mut t = PathBuf::new();
                    for _ in 0..depth {
                        t.push("..");
                    }
                    t.join(target)
                } else {
                    target
                };
                links.insert(rel, target);
            }
            _ => {}
        }
    }
    Ok(Staged { dir, links })
}

/// One image of a `docker save` `manifest.json`.
#[derive(serde::Deserialize)]
struct DockerSaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Imports a `docker save` archive (legacy or OCI-layout flavour) or an OCI
/// image layout archive, gzipped or not, and tags the image `name:tag`.
///
/// * `docker save` (a `manifest.json`): the config is kept byte for byte;
///   uncompressed layers are gzipped, gzipped ones kept; every layer's diff id
///   is checked against the config. With several images in the archive, the
///   one whose `RepoTags` holds `name:tag` is taken.
/// * OCI layout (`index.json`, no `manifest.json`): the manifest, config and
///   layers are copied as they are (the manifest digest is preserved), every
///   digest verified. An index picks the entry whose
///   `org.opencontainers.image.ref.name` is `tag` or `name:tag`, else this
///   machine's platform.
pub fn import_archive(
    store: &BlobStore,
    path: &Path,
    name: &str,
    tag: &str,
    progress: Progress<'_>,
) -> Result<Imported> {
    check_target(name, tag)?;
    let archive_len = fs::metadata(path)
        .ctx(|| format!("cannot read {}", path.display()))?
        .len();
    let mut done = 0;
    let staged = stage(store, path, &mut done, archive_len, &mut *progress)?;
    if staged.has("manifest.json") {
        import_docker(store, &staged, name, tag, done, progress)
    } else if staged.has("index.json") {
        import_oci(store, &staged, name, tag, done, progress)
    } else {
        Err(Error::Archive(format!(
            "{}: neither a docker save archive (manifest.json) nor an OCI image layout (index.json)",
            path.display()
        )))
    }
}

enum Compression {
    None,
    Gzip,
}

fn sniff(path: &Path) -> Result<Compression> {
    let mut head = [0u8; 4];
    let mut f = File::open(path).ctx(|| format!("cannot open {}", path.display()))?;
    let n = f
        .read(&mut head)
        .ctx(|| format!("cannot read {}", path.display()))?;
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(Error::Unsupported("zstd-compressed layers".into()))
    } else {
        Ok(Compression::None)
    }
}

fn import_docker(
    store: &BlobStore,
    staged: &Staged,
    name: &str,
    tag: &str,
    mut done: u64,
    progress: Progress<'_>,
) -> Result<Imported> {
    let entries: Vec<DockerSaveEntry> = serde_json::from_slice(&staged.read("manifest.json")?)
        .map_err(|e| Error::Archive(format!("manifest.json: {e}")))?;
    let wanted = format!("{name}:{tag}");
    let entry = match entries.as_slice() {
        [one] => one,
        [] => return Err(Error::Archive("manifest.json lists no image".into())),
        many => many
            .iter()
            .find(|e| e.repo_tags.as_ref().is_some_and(|t| t.contains(&wanted)))
            .ok_or_else(|| {
                Error::Archive(format!(
                    "the archive holds {} images and none is tagged {wanted}",
                    many.len()
                ))
            })?,
    };
    let config_bytes = staged.read(&entry.config)?;
    let config_file = ConfigFile::parse(&config_bytes)?;
    let diff_ids = &config_file.rootfs.diff_ids;
    if diff_ids.len() != entry.layers.len() {
        return Err(Error::Archive(format!(
            "{} layers and {} diff ids in the config",
            entry.layers.len(),
            diff_ids.len()
        )));
    }
    let mut files = Vec::new();
    let mut work = 0;
    for l in &entry.layers {
        let p = staged.resolve(l)?;
        work += fs::metadata(&p)
            .ctx(|| format!("cannot stat {}", p.display()))?
            .len();
        files.push(p);
    }
    let total = done + work;
    progress(done, total);
    let mut layers = Vec::new();
    for (p, expected) in files.iter().zip(diff_ids) {
        let f = File::open(p).ctx(|| format!("cannot open {}", p.display()))?;
        let input = Counting {
            inner: f,
            done: &mut done,
            total,
            progress: &mut *progress,
        };
        let (digest, size, diff_id) = match sniff(p)? {
            Compression::Gzip => {
                // Keep the blob; hash the uncompressed stream for the diff id.
                let mut blob = store.blob_writer()?;
                let mut tee = TeeReader {
                    inner: input,
                    copy: &mut blob,
                };
                let (diff_id, _) =
                    crate::digest::digest_reader(flate2::read::MultiGzDecoder::new(&mut tee))
                        .ctx(|| format!("cannot read the layer {}", p.display()))?;
                io::copy(&mut tee, &mut io::sink())
                    .ctx(|| format!("cannot read the layer {}", p.display()))?;
                let size = blob.len();
                (blob.commit(None)?, size, diff_id)
            }
            Compression::None => {
                let blob = store.blob_writer()?;
                let gz = flate2::GzBuilder::new().write(blob, flate2::Compression::default());
                let mut hw = HashingWriter::new(gz);
                let mut input = input;
                io::copy(&mut input, &mut hw)
                    .ctx(|| format!("cannot compress the layer {}", p.display()))?;
                let diff_id = hw.hasher.finish();
                let blob = hw
                    .inner
                    .finish()
                    .ctx(|| "cannot finish the layer gzip".into())?;
                let size = blob.len();
                (blob.commit(None)?, size, diff_id)
            }
        };
        if diff_id != *expected {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual: diff_id,
            });
        }
        layers.push(Descriptor::new(media_types::OCI_LAYER_GZIP, digest, size));
    }
    let config_digest = store.put_blob(config_bytes.as_slice())?;
    finish_image(
        store,
        name,
        tag,
        Descriptor::new(
            media_types::OCI_CONFIG,
            config_digest,
            config_bytes.len() as u64,
        ),
        layers,
        config_file.config.unwrap_or_default(),
    )
}

/// Copies what is read through it into `copy`.
struct TeeReader<'a, R, W> {
    inner: R,
    copy: &'a mut W,
}

impl<R: Read, W: Write> Read for TeeReader<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn import_oci(
    store: &BlobStore,
    staged: &Staged,
    name: &str,
    tag: &str,
    mut done: u64,
    progress: Progress<'_>,
) -> Result<Imported> {
    let blob_rel = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let index_bytes = staged.read("index.json")?;
    let (mut current, mut media_type) = match AnyManifest::parse(&index_bytes, None)? {
        (AnyManifest::Index(i), _) => {
            let wanted = format!("{name}:{tag}");
            let by_name = i.manifests.iter().find(|d| {
                d.annotations.as_ref().is_some_and(|a| {
                    a.get("org.opencontainers.image.ref.name")
                        .is_some_and(|n| *n == tag || *n == wanted)
                })
            });
            let d = match by_name {
                Some(d) => d.clone(),
                None if i.manifests.len() == 1 => i.manifests[0].clone(),
                None => i.select(&Platform::host())?.clone(),
            };
            (d.digest, d.media_type)
        }
        (AnyManifest::Image(_), _) => {
            return Err(Error::Archive("index.json is not an index".into()))
        }
    };
    // Follow nested indexes down to an image manifest.
    let (manifest, manifest_bytes) = loop {
        let bytes = staged.read(&blob_rel(&current))?;
        let actual = Digest::of(&bytes);
        if actual != current {
            return Err(Error::DigestMismatch {
                expected: current,
                actual,
            });
        }
        match AnyManifest::parse(&bytes, Some(&media_type))? {
            (AnyManifest::Image(m), mt) => {
                media_type = mt;
                break (m, bytes);
            }
            (AnyManifest::Index(i), _) => {
                let d = i.select(&Platform::host())?;
                current = d.digest.clone();
                media_type = d.media_type.clone();
            }
        }
    };
    let mut work = 0;
    let mut sources = Vec::new();
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if d.media_type == media_types::OCI_LAYER_ZSTD || d.media_type.ends_with("+zstd") {
            return Err(Error::Unsupported(format!("zstd layers ({})", d.digest)));
        }
        let p = staged.resolve(&blob_rel(&d.digest))?;
        work += d.size;
        sources.push((d.clone(), p));
    }
    let total = done + work;
    progress(done, total);
    for (d, p) in &sources {
        let f = File::open(p).ctx(|| format!("cannot open {}", p.display()))?;
        let input = Counting {
            inner: f,
            done: &mut done,
            total,
            progress: &mut *progress,
        };
        store.put_blob_verified(input, &d.digest)?;
    }
    let config_file = ConfigFile::parse(&store.read_blob(&manifest.config.digest)?)?;
    let digest = store.put_manifest(name, tag, &manifest_bytes, &media_type)?;
    Ok(Imported {
        name: name.to_string(),
        tag: tag.to_string(),
        digest,
        layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
        manifest,
        config: config_file.config.unwrap_or_default(),
    })
}

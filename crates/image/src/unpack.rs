//! Layer unpacking: a layer blob (tar, tar+gzip) into a directory, safely.
//!
//! Two ways to treat OCI whiteouts:
//!
//! * [`WhiteoutMode::Overlay`]: each layer is unpacked on its own into the
//!   layer cache, and whiteouts are encoded the way overlayfs reads them in a
//!   lower dir: `.wh.<name>` becomes a character device 0/0 named `<name>`,
//!   `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory
//!   (`user.overlay.opaque=y` when not root, for overlay's `userxattr` mode).
//! * [`WhiteoutMode::Flatten`]: layers are applied one over the other into one
//!   directory (the copy fallback when overlayfs is not available), and
//!   whiteouts delete what lower layers put there.
//!
//! Entries never land outside the root: a path with a `..` component is
//! refused, a leading `/` is dropped, and no entry is written through a
//! symlink (an existing parent that is a symlink is refused; an existing
//! entry at the path itself is removed and replaced, never followed). Hard
//! link targets are held to the same rules. Ownership, device nodes and
//! `SCHILY.xattr.*` extended attributes are applied when running as root;
//! otherwise files belong to the current user and device nodes are skipped.

use crate::digest::HashingReader;
use crate::error::IoContext as _;
use crate::spec::Manifest;
use crate::store::{random_id, BlobStore};
use crate::{Digest, Error, Result};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

/// How whiteouts are applied; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Encode whiteouts for overlayfs (layer by layer, in the layer cache).
    Overlay,
    /// Apply whiteouts by deleting from the directory (layers applied in order).
    Flatten,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Opens a layer stream: gzip is detected by its magic number, plain tar is
/// taken as is, zstd is refused.
fn decompress<'a>(reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(256 * 1024, reader);
    let head = r.fill_buf().ctx(|| "cannot read a layer".into())?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(Error::Unsupported("zstd-compressed layers".into()))
    } else {
        Ok(Box::new(r))
    }
}

/// A path inside the layer, cleaned: no `.`, no leading `/`; `..` is refused.
fn clean(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return Err(Error::PathEscapes(p.display().to_string())),
        }
    }
    Ok(out)
}

/// Sets atime and mtime by path without following a symlink or opening
/// anything (a fifo would block an open).
fn set_mtime(path: &Path, mtime: u64) -> Result<()> {
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(i64::try_from(mtime).unwrap_or(0), 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
    .ctx(|| format!("cannot set the times of {}", path.display()))
}

struct Extractor<'a> {
    root: &'a Path,
    mode: WhiteoutMode,
    root_user: bool,
    /// Paths this layer wrote (flatten mode: an opaque dir keeps them).
    written: HashSet<PathBuf>,
    /// Directories with their mode and mtime, set once the layer is done.
    dirs: Vec<(PathBuf, u32, u64)>,
}

impl Extractor<'_> {
    /// Ensures every parent of `rel` is a real directory inside the root,
    /// creating missing ones; refuses a parent that is a symlink.
    fn ensure_parents(&self, rel: &Path) -> Result<()> {
        let mut cur = self.root.to_path_buf();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::PathEscapes(format!(
                        "{} (through the symlink {})",
                        rel.display(),
                        cur.strip_prefix(self.root).unwrap_or(&cur).display()
                    )))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::Archive(format!(
                        "{}: a parent is not a directory",
                        rel.display()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).ctx(|| format!("cannot create {}", cur.display()))?;
                }
                Err(e) => return Err(e).ctx(|| format!("cannot stat {}", cur.display())),
            }
        }
        Ok(())
    }

    /// Whether every parent of `rel` exists as a real directory (no symlinks).
    fn parents_exist(&self, rel: &Path) -> Result<bool> {
        let mut cur = self.root.to_path_buf();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                cur.push(c);
                match fs::symlink_metadata(&cur) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(Error::PathEscapes(rel.display().to_string()))
                    }
                    Ok(m) if m.is_dir() => {}
                    _ => return Ok(false),
                }
            }
        }
        Ok(true)
    }

    fn remove_existing(&self, path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(path).ctx(|| format!("cannot remove {}", path.display()))
            }
            Ok(_) => fs::remove_file(path).ctx(|| format!("cannot remove {}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(|| format!("cannot stat {}", path.display())),
        }
    }

    /// Flatten mode: removes everything under `dir` this layer did not write.
    fn clear_opaque(&self, rel_dir: &Path) -> Result<()> {
        let dir = self.root.join(rel_dir);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).ctx(|| format!("cannot list {}", dir.display())),
        };
        for e in rd {
            let e = e.ctx(|| format!("cannot list {}", dir.display()))?;
            let rel = rel_dir.join(e.file_name());
            if self.written.contains(&rel) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    self.clear_opaque(&rel)?;
                }
            } else {
                self.remove_existing(&e.path())?;
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, parent: &Path, base: &str) -> Result<()> {
        if base == OPAQUE {
            match self.mode {
                WhiteoutMode::Flatten => {
                    if self.parents_exist(&parent.join("x"))? {
                        self.clear_opaque(parent)?;
                    }
                }
                WhiteoutMode::Overlay => {
                    self.ensure_parents(&parent.join("x"))?;
                    let dir = self.root.join(parent);
                    let name = if self.root_user {
                        "trusted.overlay.opaque"
                    } else {
                        "user.overlay.opaque"
                    };
                    xattr::set(&dir, name, b"y")
                        .ctx(|| format!("cannot set {name} on {}", dir.display()))?;
                }
            }
            return Ok(());
        }
        let Some(name) = base.strip_prefix(WHITEOUT_PREFIX) else {
            return Ok(());
        };
        if name.starts_with(WHITEOUT_PREFIX) || name.is_empty() || name == "." || name == ".." {
            // Other `.wh..wh.` names are aufs bookkeeping: nothing to do.
            return Ok(());
        }
        let rel = parent.join(name);
        match self.mode {
            WhiteoutMode::Flatten => {
                if !self.written.contains(&rel) && self.parents_exist(&rel)? {
                    self.remove_existing(&self.root.join(&rel))?;
                }
            }
            WhiteoutMode::Overlay => {
                self.ensure_parents(&rel)?;
                let path = self.root.join(&rel);
                self.remove_existing(&path)?;
                nix::sys::stat::mknod(
                    &path,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    nix::sys::stat::makedev(0, 0),
                )
                .map_err(io::Error::from)
                .ctx(|| format!("cannot create the whiteout {}", path.display()))?;
            }
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry
            .path()
            .ctx(|| "a layer entry has an unreadable path".into())?
            .into_owned();
        let rel = clean(&raw)?;
        let kind = entry.header().entry_type();
        let Some(base) = rel.file_name().and_then(|b| b.to_str()).map(str::to_string) else {
            // The root itself ("./"): nothing to create.
            return Ok(());
        };
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if base.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&parent, &base);
        }
        self.ensure_parents(&rel)?;
        let path = self.root.join(&rel);
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);
        let existing_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if !(kind.is_dir() && existing_dir) {
            self.remove_existing(&path)?;
        }
        let name = || rel.display().to_string();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .ctx(|| format!("cannot create {}", path.display()))?;
                io::copy(&mut entry, &mut f).ctx(|| format!("cannot write {}", name()))?;
                drop(f);
                self.finish_meta(&path, uid, gid, Some(mode), mtime)?;
                self.xattrs(&mut entry, &path);
            }
            tar::EntryType::Directory => {
                if !existing_dir {
                    fs::create_dir(&path).ctx(|| format!("cannot create {}", path.display()))?;
                }
                self.finish_meta(&path, uid, gid, None, mtime)?;
                self.xattrs(&mut entry, &path);
                self.dirs.push((path.clone(), mode, mtime));
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ctx(|| format!("{}: unreadable link target", name()))?
                    .ok_or_else(|| Error::Archive(format!("{}: symlink without target", name())))?
                    .into_owned();
                std::os::unix::fs::symlink(&target, &path)
                    .ctx(|| format!("cannot create the symlink {}", path.display()))?;
                self.finish_meta(&path, uid, gid, None, mtime)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .ctx(|| format!("{}: unreadable link target", name()))?
                    .ok_or_else(|| Error::Archive(format!("{}: hard link without target", name())))?
                    .into_owned();
                let target_rel = clean(&target)?;
                if !self.parents_exist(&target_rel)? {
                    return Err(Error::Archive(format!(
                        "{}: hard link to missing {}",
                        name(),
                        target_rel.display()
                    )));
                }
                let target_path = self.root.join(&target_rel);
                match fs::symlink_metadata(&target_path) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(Error::Archive(format!(
                            "{}: hard link to missing or directory {}",
                            name(),
                            target_rel.display()
                        )))
                    }
                }
                fs::hard_link(&target_path, &path)
                    .ctx(|| format!("cannot link {}", path.display()))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                use nix::sys::stat::{makedev, mknod, Mode, SFlag};
                let flag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                if flag != SFlag::S_IFIFO && !self.root_user {
                    tracing::debug!(path = %name(), "skipping a device node: not root");
                    return Ok(());
                }
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                mknod(
                    &path,
                    flag,
                    Mode::from_bits_truncate(0o600),
                    makedev(u64::from(major), u64::from(minor)),
                )
                .map_err(io::Error::from)
                .ctx(|| format!("cannot create {}", path.display()))?;
                self.finish_meta(&path, uid, gid, Some(mode), mtime)?;
            }
            other => {
                tracing::debug!(path = %name(), kind = ?other, "skipping a layer entry of this kind");
                return Ok(());
            }
        }
        self.written.insert(rel);
        Ok(())
    }

    /// Owner (as root), then mode (chown clears set-id bits), then mtime.
    fn finish_meta(
        &self,
        path: &Path,
        uid: u64,
        gid: u64,
        mode: Option<u32>,
        mtime: u64,
    ) -> Result<()> {
        if self.root_user {
            let uid = u32::try_from(uid).unwrap_or(0);
            let gid = u32::try_from(gid).unwrap_or(0);
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .ctx(|| format!("cannot chown {}", path.display()))?;
        }
        if let Some(mode) = mode {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .ctx(|| format!("cannot chmod {}", path.display()))?;
        }
        set_mtime(path, mtime)
    }

    /// `SCHILY.xattr.*` PAX records (file capabilities and the like), as root.
    fn xattrs<R: Read>(&self, entry: &mut tar::Entry<'_, R>, path: &Path) {
        if !self.root_user {
            return;
        }
        let Ok(Some(exts)) = entry.pax_extensions() else {
            return;
        };
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    if let Err(e) = xattr::set(path, name, ext.value_bytes()) {
                        tracing::warn!(path = %path.display(), xattr = name, error = %e, "cannot set an extended attribute");
                    }
                }
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        for (path, mode, mtime) in self.dirs.iter().rev() {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .ctx(|| format!("cannot chmod {}", path.display()))?;
            set_mtime(path, *mtime)?;
        }
        Ok(())
    }
}

/// Applies one layer stream (tar or tar+gzip) onto `dest` (which must exist)
/// and returns the layer's diff id (the digest of the uncompressed tar).
pub fn apply_layer(reader: impl Read, dest: &Path, mode: WhiteoutMode) -> Result<Digest> {
    let mut tar_stream = HashingReader::new(decompress(reader)?);
    {
        let mut archive = tar::Archive::new(&mut tar_stream);
        let mut x = Extractor {
            root: dest,
            mode,
            root_user: is_root(),
            written: HashSet::new(),
            dirs: Vec::new(),
        };
        for entry in archive
            .entries()
            .ctx(|| "cannot read the layer tar".into())?
        {
            let entry = entry.ctx(|| "cannot read the layer tar".into())?;
            x.entry(entry)?;
        }
        x.finish()?;
    }
    // The tar end and any padding count towards the diff id.
    io::copy(&mut tar_stream, &mut io::sink()).ctx(|| "cannot read the layer tar".into())?;
    Ok(tar_stream.hasher.finish())
}

/// Layers unpacked once each into `<dir>/<hex of the layer digest>/`
/// (overlay-encoded whiteouts), ready to be overlayfs lower dirs.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).ctx(|| format!("cannot create {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Where layer `digest` is (or would be) unpacked.
    pub fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Unpacks layer blob `digest` from `store`, unless already done. The
    /// layer goes to a temp dir first and is renamed into place whole, so a
    /// crash never leaves a half layer. `diff_id`, when given, is checked.
    pub fn unpack(
        &self,
        store: &BlobStore,
        digest: &Digest,
        diff_id: Option<&Digest>,
    ) -> Result<PathBuf> {
        let dest = self.layer_dir(digest);
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{}", digest.hex(), random_id()));
        fs::create_dir(&tmp).ctx(|| format!("cannot create {}", tmp.display()))?;
        let result = (|| {
            let blob = store.open_blob(digest)?;
            let actual = apply_layer(blob, &tmp, WhiteoutMode::Overlay)?;
            if let Some(expected) = diff_id {
                if *expected != actual {
                    return Err(Error::DigestMismatch {
                        expected: expected.clone(),
                        actual,
                    });
                }
            }
            File::open(&tmp)
                .and_then(|d| d.sync_all())
                .ctx(|| format!("cannot fsync {}", tmp.display()))?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_dir_all(&tmp);
            if !dest.is_dir() {
                return Err(e).ctx(|| format!("cannot move a layer to {}", dest.display()));
            }
        }
        Ok(dest)
    }

    /// Unpacks every layer of `manifest` (checking the config's diff ids)
    /// and returns their directories, lowest first.
    pub fn layer_dirs(&self, store: &BlobStore, manifest: &Manifest) -> Result<Vec<PathBuf>> {
        let diff_ids = diff_ids(store, manifest)?;
        manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| self.unpack(store, &l.digest, diff_ids.get(i)))
            .collect()
    }
}

fn diff_ids(store: &BlobStore, manifest: &Manifest) -> Result<Vec<Digest>> {
    let config = crate::spec::ConfigFile::parse(&store.read_blob(&manifest.config.digest)?)?;
    let ids = config.rootfs.diff_ids;
    if ids.len() != manifest.layers.len() {
        return Err(Error::ManifestInvalid(format!(
            "{} layers and {} diff ids",
            manifest.layers.len(),
            ids.len()
        )));
    }
    Ok(ids)
}

/// Applies every layer of `manifest` in order into `dest` (created if
/// missing), whiteouts deleting: one plain directory holding the image's
/// root filesystem, for when overlayfs is not available.
pub fn flatten(store: &BlobStore, manifest: &Manifest, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest).ctx(|| format!("cannot create {}", dest.display()))?;
    let ids = diff_ids(store, manifest)?;
    for (l, expected) in manifest.layers.iter().zip(&ids) {
        let actual = apply_layer(store.open_blob(&l.digest)?, dest, WhiteoutMode::Flatten)?;
        if actual != *expected {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(())
}

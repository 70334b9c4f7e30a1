//! Shared test helpers: a busybox root filesystem, tree snapshots, tar builders.
#![allow(dead_code, clippy::unwrap_used)]

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A small root filesystem: busybox with applet symlinks, a hard link, odd
/// modes and owners, a long path, an empty dir, a fifo (and /dev/null as root).
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    fs::set_permissions(bin.join("busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    for applet in ["sh", "echo", "sleep", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    fs::hard_link(bin.join("busybox"), bin.join("busybox.hard")).unwrap();
    fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", dir.join("usr/bin/env")).unwrap();
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(dir.join("etc/setuid"), "s").unwrap();
    fs::set_permissions(dir.join("etc/setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir_all(dir.join("root")).unwrap();
    fs::set_permissions(dir.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let long = dir.join(format!("{}/{}", "d".repeat(80), "f".repeat(90)));
    fs::create_dir_all(long.parent().unwrap()).unwrap();
    fs::write(&long, vec![7u8; 100_000]).unwrap();
    nix::unistd::mkfifo(
        &dir.join("tmp/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    if is_root() {
        fs::create_dir_all(dir.join("home/user")).unwrap();
        fs::write(dir.join("home/user/file"), "mine").unwrap();
        std::os::unix::fs::chown(dir.join("home/user"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::lchown(dir.join("home/user/file"), Some(1000), Some(100)).unwrap();
        fs::create_dir_all(dir.join("dev")).unwrap();
        nix::sys::stat::mknod(
            &dir.join("dev/null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File(String),
    Dir,
    Symlink(PathBuf),
    Char(u64),
    Block(u64),
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// For files with several links: the first path (in order) of the inode.
    pub link_group: Option<PathBuf>,
}

/// Every entry under `dir` (not `dir` itself), keyed by relative path.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    walk(dir, dir, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<PathBuf, Node>,
    inodes: &mut BTreeMap<(u64, u64), PathBuf>,
) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt as _;
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink(fs::read_link(&p).unwrap())
        } else if ft.is_file() {
            Kind::File(hex::encode(Sha256::digest(fs::read(&p).unwrap())))
        } else if ft.is_char_device() {
            Kind::Char(m.rdev())
        } else if ft.is_block_device() {
            Kind::Block(m.rdev())
        } else {
            Kind::Fifo
        };
        let link_group = (ft.is_file() && m.nlink() > 1).then(|| {
            inodes
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| rel.clone())
                .clone()
        });
        out.insert(
            rel,
            Node {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: if ft.is_symlink() { 0 } else { m.mtime() },
                link_group,
            },
        );
        if ft.is_dir() {
            walk(root, &p, out, inodes);
        }
    }
}

/// Builds a tar in memory from (path, content) files; `None` content = directory.
pub fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut h = tar::Header::new_gnu();
        match content {
            Some(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, path, *c).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A tar entry with a raw name (no path checks), for hostile archives.
pub fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Appends a regular file to an archive being built.
pub fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, path, data).unwrap();
}

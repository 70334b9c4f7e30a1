//! The OCI bundle of a runc container: root filesystem, `/etc` files and `config.json`.
//!
//! * Root filesystem: an overlay mount of the image layers (read-only, shared, newest first in
//!   `lowerdir`) with a per-container `upper/` and `work/` on `rootfs/`. When the overlay mount
//!   fails (e.g. the state directory is itself on an overlay), the layers are copied into
//!   `rootfs/` instead, lowest first, applying whiteouts (`.wh.` files, `.wh..wh..opq`, and
//!   overlay's 0:0 character devices) — slower, and hard links become copies.
//! * `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`: written into the bundle and
//!   bind-mounted, from `dnsServers`, `dnsSearchDomains`, `extraHosts` and the hostname.
//! * `config.json`: built with `oci-spec`'s builders by [`build_spec`], Docker's semantics.
//! * The task's volumes ([`ContainerLaunch::mounts`]): bind mounts (`rbind`, `rprivate` as
//!   Docker's default propagation, `ro` when read-only), parents before children; runc creates
//!   a missing destination inside the root file system. A volume mounted on `/etc/hosts`,
//!   `/etc/resolv.conf` or `/etc/hostname` replaces the agent's file, as in Docker.
//! * `initProcessEnabled`: a static init from the host is bind-mounted read-only under
//!   `/dev/berth-init/` and prefixed to the command: a tini-compatible binary (`tini-static`,
//!   `docker-init`, `catatonit`, or the one configured) when found, else the host's static
//!   busybox running a tiny `sh` init that forwards TERM/INT/HUP/QUIT/USR1/USR2/WINCH to the
//!   command and reaps every orphan (the command runs as a background job, so an INT or QUIT
//!   it gets forwarded is ignored by POSIX rules unless it installs handlers). Without either,
//!   the container runs without an init and a warning is logged.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_model::ecs::{ContainerDefinition, DeviceCgroupPermission};
use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice,
    LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use super::config::{self, ResolvedUser};
use super::{BindMount, ContainerLaunch, Network, RuntimeError};

fn oci(e: oci_spec::OciSpecError) -> RuntimeError {
    RuntimeError::InvalidConfig(format!("building config.json: {e}"))
}

// ---------------------------------------------------------------- root filesystem

/// How the root filesystem is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootfsMode {
    /// Overlay mount, copy when it fails.
    #[default]
    Auto,
    /// Always copy the layers.
    Copy,
}

/// What [`prepare_rootfs`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsKind {
    /// `rootfs/` is an overlay mount.
    Overlay,
    /// `rootfs/` is a copy of the layers.
    Copy,
}

/// Makes `dir/rootfs` from `layers` (lowest first).
pub fn prepare_rootfs(
    dir: &Path,
    layers: &[PathBuf],
    mode: RootfsMode,
) -> Result<RootfsKind, RuntimeError> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs)
        .map_err(RuntimeError::io(format!("creating {}", rootfs.display())))?;
    for l in layers {
        if !l.is_dir() {
            return Err(RuntimeError::InvalidConfig(format!(
                "image layer {} is not a directory",
                l.display()
            )));
        }
    }
    if mode == RootfsMode::Auto {
        match mount_overlay(dir, layers) {
            Ok(()) => return Ok(RootfsKind::Overlay),
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                "overlay mount failed ({e}); copying the image layers into the root file system instead (slower, uses disk)"
            ),
        }
    }
    for l in layers {
        copy_tree(l, &rootfs).map_err(RuntimeError::io(format!(
            "copying layer {} into {}",
            l.display(),
            rootfs.display()
        )))?;
    }
    Ok(RootfsKind::Copy)
}

fn mount_overlay(dir: &Path, layers: &[PathBuf]) -> Result<(), String> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let mut lower: Vec<PathBuf> = layers.iter().rev().cloned().collect();
    if lower.is_empty() {
        let empty = dir.join("lower-empty");
        std::fs::create_dir_all(&empty)
            .map_err(|e| format!("creating {}: {e}", empty.display()))?;
        lower.push(empty);
    }
    let mut parts = Vec::new();
    for p in lower.iter().chain([&upper, &work]) {
        let s = p
            .to_str()
            .ok_or_else(|| format!("path {} is not UTF-8", p.display()))?;
        if s.contains([',', ':', '\\']) {
            return Err(format!(
                "path {s} contains a character overlay options cannot hold"
            ));
        }
        parts.push(s.to_string());
    }
    let n = parts.len();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        parts[..n - 2].join(":"),
        parts[n - 2],
        parts[n - 1]
    );
    if options.len() > 4000 {
        return Err("too many layers for one overlay mount's options".into());
    }
    nix::mount::mount(
        Some("overlay"),
        &dir.join("rootfs"),
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| format!("mount -t overlay: {e}"))
}

fn remove_path(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies one layer over `dst`, applying its whiteouts.
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let s = entry.path();
        let d = dst.join(&name);
        let md = std::fs::symlink_metadata(&s)?;
        let ft = md.file_type();
        if name_str == ".wh..wh..opq" {
            continue;
        }
        if let Some(hidden) = name_str.strip_prefix(".wh.") {
            remove_path(&dst.join(hidden))?;
            continue;
        }
        if ft.is_char_device() && md.rdev() == 0 {
            remove_path(&d)?;
            continue;
        }
        if ft.is_dir() {
            let existing = std::fs::symlink_metadata(&d).ok();
            let opaque = s.join(".wh..wh..opq").exists();
            if opaque || existing.as_ref().is_some_and(|m| !m.is_dir()) {
                remove_path(&d)?;
            }
            if !d.is_dir() {
                std::fs::create_dir(&d)?;
            }
            copy_tree(&s, &d)?;
            std::os::unix::fs::lchown(&d, Some(md.uid()), Some(md.gid()))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
            continue;
        }
        remove_path(&d)?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&s)?, &d)?;
            std::os::unix::fs::lchown(&d, Some(md.uid()), Some(md.gid()))?;
        } else if ft.is_file() {
            std::fs::copy(&s, &d)?;
            std::os::unix::fs::lchown(&d, Some(md.uid()), Some(md.gid()))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                nix::sys::stat::SFlag::S_IFCHR
            } else if ft.is_block_device() {
                nix::sys::stat::SFlag::S_IFBLK
            } else {
                nix::sys::stat::SFlag::S_IFIFO
            };
            nix::sys::stat::mknod(
                &d,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(md.mode() & 0o7777),
                md.rdev(),
            )
            .map_err(std::io::Error::from)?;
            std::os::unix::fs::lchown(&d, Some(md.uid()), Some(md.gid()))?;
        }
        // sockets are not copied
    }
    Ok(())
}

/// Unmounts everything mounted at or below `dir` (deepest first). Fails when something stays
/// mounted, so that the caller does not delete through a mount.
pub fn unmount_all(dir: &Path) -> Result<(), RuntimeError> {
    for m in super::state::mounts_under(dir) {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::empty()) {
            tracing::debug!(mount = %m.display(), "umount: {e}; detaching");
            nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                RuntimeError::Io {
                    context: format!("unmounting {}", m.display()),
                    source: e.into(),
                }
            })?;
        }
    }
    let left = super::state::mounts_under(dir);
    if let Some(m) = left.first() {
        return Err(RuntimeError::Io {
            context: format!("unmounting {}", m.display()),
            source: std::io::Error::other("still mounted"),
        });
    }
    Ok(())
}

/// Reads a file of the root filesystem that is not a symbolic link (so that an image cannot
/// point the agent at a host file); empty when missing.
pub fn read_rootfs_file(rootfs: &Path, rel: &str) -> String {
    let p = rootfs.join(rel.trim_start_matches('/'));
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_file() => std::fs::read_to_string(&p).unwrap_or_default(),
        _ => String::new(),
    }
}

/// Resolves the definition's (else the image's) `user` against the root filesystem.
pub fn resolve_user(rootfs: &Path, user: Option<&str>) -> Result<ResolvedUser, RuntimeError> {
    config::resolve_user(
        user,
        &read_rootfs_file(rootfs, "etc/passwd"),
        &read_rootfs_file(rootfs, "etc/group"),
    )
}

// ---------------------------------------------------------------- /etc files

/// The `/etc` files written into the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    /// → `/etc/hosts`.
    pub hosts: PathBuf,
    /// → `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// → `/etc/hostname`.
    pub hostname: PathBuf,
}

/// The content of `/etc/hosts`.
pub fn hosts_content(
    def: &ContainerDefinition,
    network: &Network,
    hostname: &str,
    host_hosts: &str,
) -> String {
    let mut s = String::new();
    match network {
        Network::Host(_) => {
            s.push_str(host_hosts);
            if !s.is_empty() && !s.ends_with('\n') {
                s.push('\n');
            }
        }
        _ => {
            s.push_str(&format!("127.0.0.1\tlocalhost {hostname}\n"));
            s.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        }
    }
    for e in def.extra_hosts.iter().flatten() {
        if let (Some(h), Some(ip)) = (&e.hostname, &e.ip_address) {
            s.push_str(&format!("{ip}\t{h}\n"));
        }
    }
    s
}

/// The content of `/etc/resolv.conf`: `dnsServers` and `dnsSearchDomains` when given, else the
/// host's (without loopback name servers outside the host network, like Docker, falling back
/// to 8.8.8.8 and 8.8.4.4 when none is left).
pub fn resolv_conf_content(
    def: &ContainerDefinition,
    network: &Network,
    host_resolv: &str,
) -> String {
    let servers: Vec<String> = def.dns_servers.clone().unwrap_or_default();
    let search: Vec<String> = def.dns_search_domains.clone().unwrap_or_default();
    let mut out = String::new();
    let mut nameservers = 0;
    if servers.is_empty() {
        for line in host_resolv.lines() {
            let t = line.trim();
            if let Some(ns) = t.strip_prefix("nameserver") {
                let ns = ns.trim();
                let loopback = ns.starts_with("127.") || ns == "::1";
                if loopback && !matches!(network, Network::Host(_)) {
                    continue;
                }
                nameservers += 1;
                out.push_str(&format!("nameserver {ns}\n"));
            } else if (t.starts_with("search") || t.starts_with("domain")) && !search.is_empty() {
                continue;
            } else if !t.is_empty() {
                out.push_str(t);
                out.push('\n');
            }
        }
        if nameservers == 0 {
            out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        }
    } else {
        for ns in &servers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    out
}

/// Writes `hosts`, `resolv.conf` and `hostname` into `dir`.
pub fn write_etc_files(
    dir: &Path,
    def: &ContainerDefinition,
    network: &Network,
    hostname: &str,
) -> Result<EtcFiles, RuntimeError> {
    let files = EtcFiles {
        hosts: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        hostname: dir.join("hostname"),
    };
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for (path, content) in [
        (
            &files.hosts,
            hosts_content(def, network, hostname, &host_hosts),
        ),
        (
            &files.resolv_conf,
            resolv_conf_content(def, network, &host_resolv),
        ),
        (&files.hostname, format!("{hostname}\n")),
    ] {
        std::fs::write(path, content)
            .map_err(RuntimeError::io(format!("writing {}", path.display())))?;
    }
    Ok(files)
}

// ---------------------------------------------------------------- devices

/// A host device node given to the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// Path inside the container.
    pub container_path: PathBuf,
    /// `c` or `b`.
    pub typ: LinuxDeviceType,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Mode bits.
    pub file_mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// cgroup access, e.g. `"rwm"`.
    pub access: String,
}

/// Describes the host device `host_path` for the container.
pub fn host_device(
    host_path: &Path,
    container_path: &Path,
    access: &str,
) -> Result<HostDevice, RuntimeError> {
    let md = std::fs::metadata(host_path)
        .map_err(RuntimeError::io(format!("device {}", host_path.display())))?;
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(RuntimeError::InvalidConfig(format!(
            "{} is not a device",
            host_path.display()
        )));
    };
    let rdev = md.rdev();
    Ok(HostDevice {
        container_path: container_path.to_path_buf(),
        typ,
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        file_mode: md.mode() & 0o777,
        uid: md.uid(),
        gid: md.gid(),
        access: access.to_string(),
    })
}

/// The devices of `linuxParameters.devices`.
pub fn definition_devices(def: &ContainerDefinition) -> Result<Vec<HostDevice>, RuntimeError> {
    let mut out = Vec::new();
    for d in def
        .linux_parameters
        .as_ref()
        .and_then(|l| l.devices.as_ref())
        .into_iter()
        .flatten()
    {
        let host = d.host_path.as_deref().ok_or_else(|| {
            RuntimeError::InvalidConfig("linuxParameters.devices: hostPath is required".into())
        })?;
        let container = d.container_path.as_deref().unwrap_or(host);
        let access = match &d.permissions {
            Some(p) if !p.is_empty() => {
                let mut a = String::new();
                for (perm, c) in [
                    (DeviceCgroupPermission::Read, 'r'),
                    (DeviceCgroupPermission::Write, 'w'),
                    (DeviceCgroupPermission::Mknod, 'm'),
                ] {
                    if p.contains(&perm) {
                        a.push(c);
                    }
                }
                a
            }
            _ => "rwm".to_string(),
        };
        out.push(host_device(Path::new(host), Path::new(container), &access)?);
    }
    Ok(out)
}

/// The NVIDIA device nodes for `gpu_ids`, when the host has them: the control devices and
/// `/dev/nvidia<N>` for numeric ids (all GPU nodes for other ids, e.g. UUIDs, which cannot be
/// mapped to a minor number here).
pub fn gpu_devices(gpu_ids: &[String]) -> Vec<HostDevice> {
    gpu_devices_in(Path::new("/dev"), gpu_ids)
}

fn gpu_devices_in(dev: &Path, gpu_ids: &[String]) -> Vec<HostDevice> {
    if gpu_ids.is_empty() || !dev.join("nvidiactl").exists() {
        return Vec::new();
    }
    let mut names: Vec<String> = [
        "nvidiactl",
        "nvidia-uvm",
        "nvidia-uvm-tools",
        "nvidia-modeset",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if gpu_ids.iter().all(|id| id.parse::<u32>().is_ok()) {
        names.extend(gpu_ids.iter().map(|id| format!("nvidia{id}")));
    } else if let Ok(entries) = std::fs::read_dir(dev) {
        let mut all: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                n.strip_prefix("nvidia")
                    .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        all.sort();
        names.extend(all);
    }
    names
        .iter()
        .filter_map(|n| {
            let p = dev.join(n);
            if !p.exists() {
                return None;
            }
            host_device(&p, &Path::new("/dev").join(n), "rwm").ok()
        })
        .collect()
}

// ---------------------------------------------------------------- init

/// A static init binary from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitBinary {
    /// tini, docker-init or catatonit: `init -- command...`.
    Tini(PathBuf),
    /// A static busybox running a small `sh` init.
    Busybox(PathBuf),
}

/// Where the init is bind-mounted in the container.
pub const INIT_DIR: &str = "/dev/berth-init";

/// The `sh` init run by busybox: starts the command in the background, forwards signals to it,
/// reaps every child (busybox's `wait` reaps any child while waiting) and exits with the
/// command's status.
pub const BUSYBOX_INIT_SCRIPT: &str = r#""$@" &
c=$!
for s in TERM INT HUP QUIT USR1 USR2 WINCH; do trap "kill -$s $c 2>/dev/null" $s; done
while :; do
  wait $c
  r=$?
  kill -0 $c 2>/dev/null || exit $r
done"#;

/// Whether `path` is an ELF executable without a program interpreter (statically linked).
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[5] != 1 {
        return false; // not ELF, or not little-endian
    }
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
    };
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8).and_then(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            usize::try_from(u64::from_le_bytes(a)).ok()
        })
    };
    let (phoff, phentsize, phnum) = match b[4] {
        2 => (u64_at(0x20), u16_at(0x36), u16_at(0x38)),
        1 => (u32_at(0x1c), u16_at(0x2a), u16_at(0x2c)),
        _ => return false,
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
        return false;
    };
    for i in 0..phnum {
        match u32_at(phoff + i * phentsize) {
            Some(3) => return false, // PT_INTERP
            Some(_) => {}
            None => return false,
        }
    }
    true
}

/// Finds a static init on the host: a tini-compatible binary, else a static busybox.
pub fn find_init() -> Option<InitBinary> {
    const TINI: [&str; 7] = [
        "/usr/bin/tini-static",
        "/usr/local/bin/tini-static",
        "/usr/bin/docker-init",
        "/usr/libexec/docker/docker-init",
        "/usr/local/bin/docker-init",
        "/usr/bin/catatonit",
        "/usr/libexec/podman/catatonit",
    ];
    const BUSYBOX: [&str; 4] = [
        "/bin/busybox",
        "/usr/bin/busybox",
        "/sbin/busybox",
        "/usr/sbin/busybox",
    ];
    TINI.iter()
        .map(PathBuf::from)
        .find(|p| is_static_elf(p))
        .map(InitBinary::Tini)
        .or_else(|| {
            BUSYBOX
                .iter()
                .map(PathBuf::from)
                .find(|p| is_static_elf(p))
                .map(InitBinary::Busybox)
        })
}

impl InitBinary {
    /// The host binary.
    pub fn host_path(&self) -> &Path {
        match self {
            InitBinary::Tini(p) | InitBinary::Busybox(p) => p,
        }
    }

    /// Where it is mounted in the container.
    pub fn container_path(&self) -> String {
        match self {
            InitBinary::Tini(_) => format!("{INIT_DIR}/init"),
            // busybox picks its applet from argv[0]'s base name: keep it `busybox`
            InitBinary::Busybox(_) => format!("{INIT_DIR}/busybox"),
        }
    }

    /// The arguments before the command.
    pub fn prefix(&self) -> Vec<String> {
        match self {
            InitBinary::Tini(_) => vec![self.container_path(), "--".into()],
            InitBinary::Busybox(_) => vec![
                self.container_path(),
                "sh".into(),
                "-c".into(),
                BUSYBOX_INIT_SCRIPT.into(),
                "berth-init".into(),
            ],
        }
    }
}

// ---------------------------------------------------------------- config.json

/// Everything [`build_spec`] needs beyond the launch, resolved on the host.
#[derive(Debug, Clone)]
pub struct SpecInputs<'a> {
    /// The launch.
    pub launch: &'a ContainerLaunch,
    /// The process's argv (without init).
    pub args: Vec<String>,
    /// The process's environment.
    pub env: Vec<(String, String)>,
    /// The resolved user.
    pub user: ResolvedUser,
    /// The hostname.
    pub hostname: String,
    /// The `/etc` files to bind-mount.
    pub etc: Option<EtcFiles>,
    /// Device nodes to create and allow.
    pub devices: Vec<HostDevice>,
    /// The init to prefix, when `initProcessEnabled`.
    pub init: Option<InitBinary>,
    /// What "all capabilities" means (the agent's bounding set), `None` for every capability.
    pub available_caps: Option<Capabilities>,
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, RuntimeError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(oci)
}

/// The OCI mounts of the task's volumes: bind mounts, parents before children (fewest path
/// components first, else in the given order).
pub fn volume_mounts(binds: &[BindMount]) -> Result<Vec<Mount>, RuntimeError> {
    let mut sorted: Vec<&BindMount> = binds.iter().collect();
    sorted.sort_by_key(|b| Path::new(&b.destination).components().count());
    let mut out = Vec::with_capacity(sorted.len());
    for b in sorted {
        let dest = Path::new(&b.destination);
        if !dest.is_absolute() || dest.parent().is_none() {
            return Err(RuntimeError::InvalidConfig(format!(
                "mount point {:?}: the container path must be absolute and not /",
                b.destination
            )));
        }
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        if b.read_only {
            options.push("ro".into());
        }
        out.push(
            MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(b.source.clone())
                .options(options)
                .build()
                .map_err(oci)?,
        );
    }
    Ok(out)
}

/// The container's cgroup: `<cgroup_parent>/<id>`, absolute.
pub fn cgroups_path(cgroup_parent: &str, id: &str) -> String {
    let parent = cgroup_parent.trim_matches('/');
    if parent.is_empty() {
        format!("/{id}")
    } else {
        format!("/{parent}/{id}")
    }
}

const MIB: i64 = 1024 * 1024;

/// Builds `config.json` from the launch, Docker's semantics for every ECS field.
pub fn build_spec(input: &SpecInputs<'_>) -> Result<Spec, RuntimeError> {
    let launch = input.launch;
    let def = &launch.definition;
    let privileged = def.privileged == Some(true);
    let lp = def.linux_parameters.as_ref();
    let readonly = def.readonly_root_filesystem == Some(true);

    // ---- process
    let (add, drop) = lp
        .and_then(|l| l.capabilities.as_ref())
        .map(|c| {
            (
                c.add.clone().unwrap_or_default(),
                c.drop.clone().unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    let caps = config::capabilities(&add, &drop, privileged, input.available_caps.as_ref())?;
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(oci)?;
    let mut user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid);
    if !input.user.additional_gids.is_empty() {
        user = user.additional_gids(input.user.additional_gids.clone());
    }
    let user = user.build().map_err(oci)?;
    let cwd = def
        .working_directory
        .clone()
        .or_else(|| launch.image.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let cwd = if cwd.starts_with('/') {
        cwd
    } else {
        format!("/{cwd}")
    };
    let mut args = input.args.clone();
    let init_enabled = lp.and_then(|l| l.init_process_enabled) == Some(true);
    if let (true, Some(init)) = (init_enabled, &input.init) {
        args = init.prefix().into_iter().chain(args).collect();
    }
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(args)
        .env(
            input
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(cwd)
        .capabilities(capabilities)
        .no_new_privileges(config::no_new_privileges(def));
    let rlimits = config::rlimits(def.ulimits.as_deref().unwrap_or_default())?;
    if !rlimits.is_empty() {
        process = process.rlimits(rlimits);
    }
    let mut process = process.build().map_err(oci)?;
    if process.rlimits().as_ref().is_some_and(|r| r.is_empty()) || def.ulimits.is_none() {
        // the builder fills in oci-spec's default (nofile 1024): inherit the shim's instead
        process.set_rlimits(None);
    }

    // ---- mounts
    let shm_size = match lp.and_then(|l| l.shared_memory_size) {
        Some(mib) if mib > 0 => format!("size={mib}m"),
        _ => "size=65536k".to_string(),
    };
    let sys_mode = if privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
    ];
    for t in lp.and_then(|l| l.tmpfs.as_ref()).into_iter().flatten() {
        let dest = t.container_path.as_deref().ok_or_else(|| {
            RuntimeError::InvalidConfig("linuxParameters.tmpfs: containerPath is required".into())
        })?;
        let size = format!("size={}m", t.size.max(1));
        let mut opts: Vec<&str> = vec!["nosuid", "nodev", "noexec"];
        opts.extend(t.mount_options.iter().flatten().map(String::as_str));
        opts.push(&size);
        mounts.push(mount(dest, "tmpfs", "tmpfs", &opts)?);
    }
    mounts.extend(volume_mounts(&launch.mounts)?);
    if let Some(etc) = &input.etc {
        let mut opts = vec!["rbind", "rprivate"];
        if readonly {
            opts.push("ro");
        }
        for (dest, src) in [
            ("/etc/hosts", &etc.hosts),
            ("/etc/resolv.conf", &etc.resolv_conf),
            ("/etc/hostname", &etc.hostname),
        ] {
            if launch
                .mounts
                .iter()
                .any(|m| Path::new(&m.destination) == Path::new(dest))
            {
                continue;
            }
            mounts.push(mount(dest, "bind", &src.to_string_lossy(), &opts)?);
        }
    }
    if let (true, Some(init)) = (init_enabled, &input.init) {
        mounts.push(mount(
            &init.container_path(),
            "bind",
            &init.host_path().to_string_lossy(),
            &["bind", "ro", "nosuid", "nodev"],
        )?);
    }

    // ---- namespaces
    let ns = |typ: LinuxNamespaceType| -> Result<LinuxNamespace, RuntimeError> {
        LinuxNamespaceBuilder::default()
            .typ(typ)
            .build()
            .map_err(oci)
    };
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Pid)?,
        ns(LinuxNamespaceType::Ipc)?,
        ns(LinuxNamespaceType::Uts)?,
        ns(LinuxNamespaceType::Mount)?,
    ];
    namespaces.push(match &launch.network {
        Network::Host(p) | Network::Join(p) => LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(p.clone())
            .build()
            .map_err(oci)?,
        Network::None => ns(LinuxNamespaceType::Network)?,
    });

    // ---- resources
    let mut memory = LinuxMemoryBuilder::default();
    let limit = def.memory.filter(|m| *m > 0).map(|m| i64::from(m) * MIB);
    if let Some(limit) = limit {
        memory = memory.limit(limit);
        if let Some(swap) = lp.and_then(|l| l.max_swap).filter(|s| *s >= 0) {
            memory = memory.swap(limit + i64::from(swap) * MIB);
        }
    }
    if let Some(r) = def.memory_reservation.filter(|m| *m > 0) {
        memory = memory.reservation(i64::from(r) * MIB);
    }
    if let Some(s) = lp
        .and_then(|l| l.swappiness)
        .filter(|s| (0..=100).contains(s))
    {
        memory = memory.swappiness(s as u64);
    }
    let cpu = LinuxCpuBuilder::default()
        .shares(def.cpu.max(2) as u64)
        .build()
        .map_err(oci)?;
    let mut device_rules: Vec<LinuxDeviceCgroup> = Vec::new();
    let mut linux_devices: Vec<LinuxDevice> = Vec::new();
    if privileged {
        device_rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .access("rwm")
                .build()
                .map_err(oci)?,
        );
    } else {
        device_rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .map_err(oci)?,
        );
    }
    for d in &input.devices {
        linux_devices.push(
            LinuxDeviceBuilder::default()
                .path(d.container_path.clone())
                .typ(d.typ)
                .major(d.major)
                .minor(d.minor)
                .file_mode(d.file_mode)
                .uid(d.uid)
                .gid(d.gid)
                .build()
                .map_err(oci)?,
        );
        if !privileged {
            device_rules.push(
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(d.typ)
                    .major(d.major)
                    .minor(d.minor)
                    .access(d.access.clone())
                    .build()
                    .map_err(oci)?,
            );
        }
    }
    let resources = LinuxResourcesBuilder::default()
        .memory(memory.build().map_err(oci)?)
        .cpu(cpu)
        .devices(device_rules)
        .build()
        .map_err(oci)?;

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroups_path(
            &launch.cgroup_parent,
            &launch.id,
        )))
        .resources(resources);
    if !linux_devices.is_empty() {
        linux = linux.devices(linux_devices);
    }
    if !privileged {
        let mut masked = oci_spec::runtime::get_default_maskedpaths();
        masked.push("/sys/devices/virtual/powercap".into());
        linux = linux
            .masked_paths(masked)
            .readonly_paths(oci_spec::runtime::get_default_readonly_paths());
    }
    let sysctl: HashMap<String, String> = def
        .system_controls
        .iter()
        .flatten()
        .filter_map(|s| Some((s.namespace.clone()?, s.value.clone()?)))
        .collect();
    if !sysctl.is_empty() {
        linux = linux.sysctl(sysctl);
    }
    let mut linux = linux.build().map_err(oci)?;
    if privileged {
        // the builder fills in oci-spec's defaults
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }

    let annotations: HashMap<String, String> = def
        .docker_labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(readonly)
                .build()
                .map_err(oci)?,
        )
        .process(process)
        .hostname(input.hostname.clone())
        .mounts(mounts)
        .linux(linux);
    if !annotations.is_empty() {
        spec = spec.annotations(annotations);
    }
    spec.build().map_err(oci)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use berth_model::ecs::{HostEntry, KernelCapabilities, LinuxParameters, Tmpfs};
    use oci_spec::runtime::Capability;

    fn launch(def: ContainerDefinition) -> ContainerLaunch {
        ContainerLaunch {
            id: "t1-app".into(),
            layers: vec![],
            image: super::super::ImageConfig {
                cmd: Some(vec!["sh".into()]),
                working_dir: Some("/srv".into()),
                ..Default::default()
            },
            definition: def,
            network: Network::None,
            cgroup_parent: "/berth/task-1/".into(),
            hostname: None,
            log_dir: PathBuf::from("/tmp"),
            extra_env: vec![],
            gpu_ids: vec![],
            mounts: vec![],
        }
    }

    fn inputs(l: &ContainerLaunch) -> SpecInputs<'_> {
        SpecInputs {
            launch: l,
            args: vec!["sh".into()],
            env: vec![("PATH".into(), "/bin".into())],
            user: ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![50],
                name: None,
            },
            hostname: "h".into(),
            etc: None,
            devices: vec![],
            init: None,
            available_caps: None,
        }
    }

    #[test]
    fn spec_defaults() {
        let l = launch(ContainerDefinition::default());
        let spec = build_spec(&inputs(&l)).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["root"]["readonly"], false);
        assert_eq!(json["process"]["cwd"], "/srv");
        assert_eq!(json["process"]["user"]["uid"], 1000);
        assert_eq!(json["process"]["user"]["additionalGids"][0], 50);
        assert_eq!(json["linux"]["cgroupsPath"], "/berth/task-1/t1-app");
        assert_eq!(json["linux"]["resources"]["cpu"]["shares"], 2);
        assert!(json["linux"]["resources"]["memory"].get("limit").is_none());
        assert_eq!(json["process"]["noNewPrivileges"], false);
        assert!(json["process"].get("rlimits").is_none());
        let bounding = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert_eq!(bounding.len(), 14);
        assert!(bounding.contains(&serde_json::json!("CAP_CHOWN")));
        assert_eq!(
            json["process"]["capabilities"]["inheritable"],
            serde_json::json!([])
        );
        let ns: Vec<&str> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
        assert!(json["linux"]["namespaces"][4].get("path").is_none());
        let sys = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert!(sys["options"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("ro")));
        assert_eq!(json["linux"]["resources"]["devices"][0]["allow"], false);
        assert!(json["linux"]["maskedPaths"].as_array().unwrap().len() > 3);
    }

    #[test]
    fn spec_maps_limits_and_security() {
        let def = ContainerDefinition {
            cpu: 512,
            memory: Some(16),
            memory_reservation: Some(8),
            readonly_root_filesystem: Some(true),
            privileged: Some(true),
            docker_security_options: Some(vec!["no-new-privileges".into()]),
            docker_labels: Some([("a".to_string(), "b".to_string())].into()),
            linux_parameters: Some(LinuxParameters {
                capabilities: Some(KernelCapabilities {
                    add: Some(vec!["NET_ADMIN".into()]),
                    drop: None,
                }),
                shared_memory_size: Some(128),
                tmpfs: Some(vec![Tmpfs {
                    container_path: Some("/scratch".into()),
                    size: 10,
                    mount_options: Some(vec!["exec".into()]),
                }]),
                max_swap: Some(0),
                init_process_enabled: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut l = launch(def);
        l.network = Network::Join(PathBuf::from("/proc/42/ns/net"));
        let mut i = inputs(&l);
        i.init = Some(InitBinary::Tini(PathBuf::from("/usr/bin/tini-static")));
        let json = serde_json::to_value(build_spec(&i).unwrap()).unwrap();
        let mem = &json["linux"]["resources"]["memory"];
        assert_eq!(mem["limit"], 16 * MIB);
        assert_eq!(mem["reservation"], 8 * MIB);
        assert_eq!(mem["swap"], 16 * MIB);
        assert_eq!(json["linux"]["resources"]["cpu"]["shares"], 512);
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["annotations"]["a"], "b");
        assert_eq!(
            json["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            config::ALL_CAPABILITIES.len()
        );
        assert_eq!(json["linux"]["resources"]["devices"][0]["allow"], true);
        assert!(json["linux"].get("maskedPaths").is_none());
        assert_eq!(json["linux"]["namespaces"][4]["path"], "/proc/42/ns/net");
        let mounts = json["mounts"].as_array().unwrap();
        let find = |d: &str| mounts.iter().find(|m| m["destination"] == d).unwrap();
        assert!(find("/dev/shm")["options"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("size=128m")));
        let scratch = find("/scratch")["options"].as_array().unwrap().clone();
        assert!(scratch.contains(&serde_json::json!("exec")));
        assert!(scratch.contains(&serde_json::json!("size=10m")));
        assert!(find("/sys")["options"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("rw")));
        assert_eq!(
            find("/dev/berth-init/init")["source"],
            "/usr/bin/tini-static"
        );
        assert_eq!(
            json["process"]["args"],
            serde_json::json!(["/dev/berth-init/init", "--", "sh"])
        );
    }

    #[test]
    fn spec_capabilities_add() {
        let def = ContainerDefinition {
            linux_parameters: Some(LinuxParameters {
                capabilities: Some(KernelCapabilities {
                    add: Some(vec!["NET_ADMIN".into()]),
                    drop: Some(vec!["CAP_NET_RAW".into()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let l = launch(def);
        let spec = build_spec(&inputs(&l)).unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        let eff = caps.effective().as_ref().unwrap();
        assert!(eff.contains(&Capability::NetAdmin));
        assert!(!eff.contains(&Capability::NetRaw));
        let bad = ContainerDefinition {
            linux_parameters: Some(LinuxParameters {
                capabilities: Some(KernelCapabilities {
                    add: Some(vec!["NOPE".into()]),
                    drop: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let l = launch(bad);
        assert!(matches!(
            build_spec(&inputs(&l)),
            Err(RuntimeError::InvalidConfig(_))
        ));
    }

    #[test]
    fn spec_bind_mounts_the_task_volumes() {
        let mut l = launch(ContainerDefinition::default());
        let bind = |src: &str, dest: &str, ro: bool| BindMount {
            source: PathBuf::from(src),
            destination: dest.into(),
            read_only: ro,
        };
        l.mounts = vec![
            bind("/var/log/app", "/logs/app", true),
            bind("/srv/data", "/logs", false),
            bind("/srv/hosts", "/etc/hosts", true),
        ];
        let mut i = inputs(&l);
        i.etc = Some(EtcFiles {
            hosts: PathBuf::from("/b/hosts"),
            resolv_conf: PathBuf::from("/b/resolv.conf"),
            hostname: PathBuf::from("/b/hostname"),
        });
        let json = serde_json::to_value(build_spec(&i).unwrap()).unwrap();
        let mounts = json["mounts"].as_array().unwrap();
        let at = |d: &str| -> Vec<&serde_json::Value> {
            mounts.iter().filter(|m| m["destination"] == d).collect()
        };
        let pos = |d: &str| mounts.iter().position(|m| m["destination"] == d).unwrap();
        assert_eq!(at("/logs")[0]["source"], "/srv/data");
        assert_eq!(at("/logs")[0]["type"], "bind");
        assert_eq!(
            at("/logs")[0]["options"],
            serde_json::json!(["rbind", "rprivate"])
        );
        assert_eq!(
            at("/logs/app")[0]["options"],
            serde_json::json!(["rbind", "rprivate", "ro"])
        );
        assert!(pos("/logs") < pos("/logs/app"), "parents first");
        assert!(
            pos("/sys/fs/cgroup") < pos("/logs"),
            "after the system mounts"
        );
        // A volume on /etc/hosts replaces the agent's file; the others stay.
        assert_eq!(at("/etc/hosts").len(), 1);
        assert_eq!(at("/etc/hosts")[0]["source"], "/srv/hosts");
        assert_eq!(at("/etc/resolv.conf")[0]["source"], "/b/resolv.conf");
        for bad in ["logs", "/", ""] {
            l.mounts = vec![bind("/srv/data", bad, false)];
            assert!(
                matches!(build_spec(&inputs(&l)), Err(RuntimeError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn etc_contents() {
        let def = ContainerDefinition {
            dns_servers: Some(vec!["10.0.0.2".into()]),
            dns_search_domains: Some(vec!["corp".into(), "local".into()]),
            extra_hosts: Some(vec![HostEntry {
                hostname: Some("db".into()),
                ip_address: Some("10.1.2.3".into()),
            }]),
            ..Default::default()
        };
        let hosts = hosts_content(&def, &Network::None, "web", "");
        assert!(hosts.contains("127.0.0.1\tlocalhost web\n"));
        assert!(hosts.contains("10.1.2.3\tdb\n"));
        let hosts = hosts_content(
            &def,
            &Network::Host("/proc/1/ns/net".into()),
            "web",
            "1.2.3.4 hosty",
        );
        assert!(hosts.starts_with("1.2.3.4 hosty\n"));
        let r = resolv_conf_content(&def, &Network::None, "nameserver 1.1.1.1\n");
        assert_eq!(r, "nameserver 10.0.0.2\nsearch corp local\n");
        let plain = ContainerDefinition::default();
        let host = "nameserver 127.0.0.53\noptions edns0\nsearch x\n";
        assert_eq!(
            resolv_conf_content(&plain, &Network::None, host),
            "options edns0\nsearch x\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(
            resolv_conf_content(&plain, &Network::Host("/x".into()), host),
            "nameserver 127.0.0.53\noptions edns0\nsearch x\n"
        );
    }

    #[test]
    fn cgroup_paths() {
        assert_eq!(cgroups_path("/berth/t", "c"), "/berth/t/c");
        assert_eq!(cgroups_path("berth/t/", "c"), "/berth/t/c");
        assert_eq!(cgroups_path("", "c"), "/c");
    }

    #[test]
    fn static_elf_detection() {
        let exe = std::env::current_exe().unwrap();
        // test binaries are dynamically linked
        assert!(!is_static_elf(&exe));
        assert!(!is_static_elf(Path::new("/nonexistent")));
        if Path::new("/bin/busybox").exists() && is_static_elf(Path::new("/bin/busybox")) {
            assert!(find_init().is_some());
        }
    }

    #[test]
    fn copy_applies_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let l1 = d.path().join("l1");
        let l2 = d.path().join("l2");
        std::fs::create_dir_all(l1.join("etc/sub")).unwrap();
        std::fs::create_dir_all(l1.join("opq")).unwrap();
        std::fs::write(l1.join("etc/a"), "a").unwrap();
        std::fs::write(l1.join("etc/b"), "b").unwrap();
        std::fs::write(l1.join("opq/old"), "old").unwrap();
        std::os::unix::fs::symlink("a", l1.join("etc/link")).unwrap();
        std::fs::create_dir_all(l2.join("etc")).unwrap();
        std::fs::create_dir_all(l2.join("opq")).unwrap();
        std::fs::write(l2.join("etc/.wh.b"), "").unwrap();
        std::fs::write(l2.join("etc/a"), "a2").unwrap();
        std::fs::write(l2.join("opq/.wh..wh..opq"), "").unwrap();
        std::fs::write(l2.join("opq/new"), "new").unwrap();
        let c = d.path().join("c");
        std::fs::create_dir_all(&c).unwrap();
        let kind = prepare_rootfs(&c, &[l1, l2], RootfsMode::Copy).unwrap();
        assert_eq!(kind, RootfsKind::Copy);
        let r = c.join("rootfs");
        assert_eq!(std::fs::read_to_string(r.join("etc/a")).unwrap(), "a2");
        assert!(!r.join("etc/b").exists());
        assert!(r.join("etc/sub").is_dir());
        assert_eq!(
            std::fs::read_link(r.join("etc/link")).unwrap(),
            Path::new("a")
        );
        assert!(!r.join("opq/old").exists());
        assert!(r.join("opq/new").exists());
        assert!(!r.join("opq/.wh..wh..opq").exists());
    }

    #[test]
    fn gpu_nodes_need_nvidiactl() {
        let d = tempfile::tempdir().unwrap();
        assert!(gpu_devices_in(d.path(), &["0".into()]).is_empty());
        assert!(gpu_devices(&[]).is_empty());
    }
}

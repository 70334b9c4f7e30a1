//! Helpers for tests (of this crate and others): a tiny image layer made from the host's
//! static busybox.

use std::path::{Path, PathBuf};

/// The busybox applets linked in [`busybox_layer`].
pub const APPLETS: &[&str] = &[
    "sh", "ash", "sleep", "echo", "cat", "ip", "ls", "id", "dd", "head", "tail", "env", "pwd",
    "touch", "mkdir", "rm", "true", "false", "hostname", "grep", "wc", "ps", "kill", "mount", "df",
    "printf", "test", "[", "seq", "yes", "tr", "sed", "stat", "ulimit", "wget", "nc",
];

/// The host's busybox, when it is statically linked (usable inside any root file system).
pub fn static_busybox() -> Option<PathBuf> {
    [
        "/bin/busybox",
        "/usr/bin/busybox",
        "/sbin/busybox",
        "/usr/sbin/busybox",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| super::bundle::is_static_elf(p))
}

/// Builds an image layer in `dir`: `bin/busybox` (a copy of the host's static busybox),
/// symbolic links for [`APPLETS`] in `bin/`, `/etc/passwd` (root, `app` = 1000:1000,
/// nobody), `/etc/group`, and the usual empty directories (`tmp` with mode 1777). Returns
/// `dir`.
pub fn busybox_layer(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let busybox = static_busybox().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no static busybox on this host (install busybox-static)",
        )
    })?;
    for d in [
        "bin", "etc", "tmp", "root", "home/app", "proc", "sys", "dev", "var/tmp",
    ] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::copy(&busybox, dir.join("bin/busybox"))?;
    std::fs::set_permissions(
        dir.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    for a in APPLETS {
        let link = dir.join("bin").join(a);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", &link)?;
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         app:x:1000:1000:app:/home/app:/bin/sh\n\
         nobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
    )?;
    Ok(dir.to_path_buf())
}

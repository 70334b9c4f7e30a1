//! Small cgroup helpers: find the hierarchies, create a task's parent cgroup with a memory
//! limit, remove cgroups.
//!
//! runc creates and removes the container's own cgroup (`<parent>/<id>`) and creates missing
//! parents; these helpers are for the task level (a parent with the task's memory limit, its
//! removal once the task's containers are gone) and for cleaning up after a lost runc state.
//! Both cgroup v1 (one hierarchy per controller, `memory.limit_in_bytes`) and v2
//! (`memory.max`) are handled.

use std::path::{Path, PathBuf};

use super::RuntimeError;

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// `true` for cgroup v2.
    pub v2: bool,
    /// The v1 controllers (super options) of this hierarchy, e.g. `["memory"]`, `["name=systemd"]`.
    pub controllers: Vec<String>,
    /// The cgroup of the mount's root (`/` unless namespaced/bind-mounted).
    pub root: String,
}

/// The cgroup hierarchies mounted in this mount namespace.
pub fn hierarchies() -> Vec<Hierarchy> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in info.lines() {
        // id parent maj:min root mount-point options [optional...] - fstype source super-options
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let v2 = match post[0] {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            post[2]
                .split(',')
                .filter(|o| {
                    !matches!(
                        *o,
                        "rw" | "ro" | "relatime" | "nosuid" | "nodev" | "noexec" | "noatime"
                    ) && !o.starts_with("release_agent")
                        && *o != "clone_children"
                        && *o != "xattr"
                })
                .map(str::to_string)
                .collect()
        };
        out.push(Hierarchy {
            mount_point: PathBuf::from(pre[4]),
            v2,
            controllers,
            root: pre[3].to_string(),
        });
    }
    out
}

fn relative(cgroup: &str) -> &str {
    cgroup.trim_start_matches('/')
}

/// The directory of `cgroup` (an absolute cgroup path like `/berth/task-1`) in the memory
/// controller's hierarchy (v1 `memory`, else the v2 unified hierarchy); `None` without one.
pub fn memory_dir(cgroup: &str) -> Option<PathBuf> {
    let hs = hierarchies();
    let h = hs
        .iter()
        .find(|h| !h.v2 && h.controllers.iter().any(|c| c == "memory"))
        .or_else(|| {
            hs.iter().find(|h| {
                h.v2 && std::fs::read_to_string(h.mount_point.join("cgroup.controllers"))
                    .map(|c| c.split_whitespace().any(|c| c == "memory"))
                    .unwrap_or(false)
            })
        })?;
    Some(h.mount_point.join(relative(cgroup)))
}

/// The file holding the `oom_kill` counter of `cgroup`: v1 `memory.oom_control`, v2
/// `memory.events`.
pub fn oom_counter_file(cgroup: &str) -> Option<PathBuf> {
    let dir = memory_dir(cgroup)?;
    let v1 = hierarchies()
        .iter()
        .any(|h| !h.v2 && h.controllers.iter().any(|c| c == "memory"));
    Some(dir.join(if v1 {
        "memory.oom_control"
    } else {
        "memory.events"
    }))
}

/// Parses the `oom_kill N` line of `memory.oom_control` / `memory.events`.
pub fn parse_oom_kill(content: &str) -> Option<u64> {
    content
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// Creates `cgroup` in the memory hierarchy and sets its memory limit (bytes). Other
/// controllers' directories are left to runc, which creates missing parents when it creates a
/// container below.
pub fn set_memory_limit(cgroup: &str, bytes: u64) -> Result<(), RuntimeError> {
    let dir = memory_dir(cgroup).ok_or_else(|| RuntimeError::Io {
        context: "setting a memory limit".into(),
        source: std::io::Error::other("no memory cgroup hierarchy is mounted"),
    })?;
    std::fs::create_dir_all(&dir)
        .map_err(RuntimeError::io(format!("creating {}", dir.display())))?;
    let (file, value) = if dir.join("memory.limit_in_bytes").exists() {
        ("memory.limit_in_bytes", bytes.to_string())
    } else {
        ("memory.max", bytes.to_string())
    };
    std::fs::write(dir.join(file), value).map_err(RuntimeError::io(format!(
        "writing {}",
        dir.join(file).display()
    )))
}

/// Removes `cgroup` (and its child cgroups, which must have no processes) from every
/// hierarchy. Missing directories are fine.
pub fn remove(cgroup: &str) -> Result<(), RuntimeError> {
    if relative(cgroup).is_empty() {
        return Err(RuntimeError::InvalidConfig(
            "refusing to remove the root cgroup".into(),
        ));
    }
    let mut first_error = None;
    for h in hierarchies() {
        let dir = h.mount_point.join(relative(cgroup));
        if let Err(e) = remove_tree(&dir) {
            first_error.get_or_insert(RuntimeError::Io {
                context: format!("removing cgroup {}", dir.display()),
                source: e,
            });
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `rmdir` of a cgroup directory and its sub-cgroups, deepest first (cgroup directories
/// cannot be removed recursively: their files are not deletable).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&entry.path())?;
        }
    }
    // a cgroup whose last process just exited can be busy for a moment
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if tries < 50 && e.raw_os_error() == Some(nix::libc::EBUSY) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `cgroup` exists in any hierarchy.
pub fn exists(cgroup: &str) -> bool {
    !relative(cgroup).is_empty()
        && hierarchies()
            .iter()
            .any(|h| h.mount_point.join(relative(cgroup)).is_dir())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_lines() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn refuses_root() {
        assert!(remove("/").is_err());
        assert!(remove("").is_err());
    }
}

//! cgroups v1: one directory per instance in each controller used.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::{procfs, ProviderError};

/// How long one poll waits (the crate reads no clock: bounded waits count polls).
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// One mounted v1 controller hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Controller {
    pub name: &'static str,
    pub mount: PathBuf,
}

/// The controllers an instance is placed in.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    controllers: Vec<Controller>,
}

const REQUIRED: [&str; 2] = ["memory", "cpu"];
const OPTIONAL: [&str; 3] = ["cpuacct", "pids", "freezer"];

impl Cgroups {
    /// Finds the controllers mounted under `root` (normally `/sys/fs/cgroup`);
    /// memory and cpu must be there. Co-mounted controllers (`cpu,cpuacct`)
    /// count once.
    pub(crate) fn detect(root: &Path) -> Result<Self, String> {
        let mut controllers: Vec<Controller> = vec![];
        let mut seen = BTreeSet::new();
        for name in REQUIRED.iter().chain(OPTIONAL.iter()).copied() {
            let mount = root.join(name);
            if !mount.join("cgroup.procs").is_file() {
                if REQUIRED.contains(&name) {
                    return Err(format!(
                        "no cgroup v1 {name} controller at {} (cgroup v2-only hosts are not supported)",
                        mount.display()
                    ));
                }
                continue;
            }
            let canonical = mount.canonicalize().unwrap_or_else(|_| mount.clone());
            if seen.insert(canonical.clone()) {
                controllers.push(Controller {
                    name,
                    mount: canonical,
                });
            }
        }
        Ok(Self { controllers })
    }

    fn controller(&self, name: &str) -> Option<&Controller> {
        self.controllers.iter().find(|c| c.name == name)
    }

    fn dir(c: &Controller, rel: &str) -> PathBuf {
        c.mount.join(rel.trim_start_matches('/'))
    }

    /// Whether the cgroup exists in any controller.
    pub(crate) fn exists(&self, rel: &str) -> bool {
        self.controllers.iter().any(|c| Self::dir(c, rel).is_dir())
    }

    /// Creates `rel` in every controller and sets its memory limit and CPU share.
    pub(crate) fn create(
        &self,
        rel: &str,
        vcpus: u32,
        memory_mib: u64,
    ) -> Result<(), ProviderError> {
        for c in &self.controllers {
            let dir = Self::dir(c, rel);
            if let Some(parent) = dir.parent() {
                if !parent.is_dir() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| ProviderError::io("creating cgroup", parent, e))?;
                    if c.name == "memory" {
                        // always on since Linux 5.16; older kernels need it set
                        // before the parent has children
                        let _ = enable_hierarchy(parent);
                    }
                }
            }
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(ProviderError::io("creating cgroup", dir, e)),
            }
            match c.name {
                "memory" => {
                    let _ = enable_hierarchy(&dir);
                    let bytes = memory_mib.saturating_mul(1024 * 1024).to_string();
                    write_file(&dir.join("memory.limit_in_bytes"), &bytes)?;
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        // no swapping past the limit either
                        write_file(&memsw, &bytes)?;
                    }
                }
                "cpu" => {
                    let period = read_file(&dir.join("cpu.cfs_period_us"))
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or(100_000);
                    let quota = u64::from(vcpus).saturating_mul(period);
                    write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    let shares = u64::from(vcpus).saturating_mul(1024);
                    write_file(&dir.join("cpu.shares"), &shares.to_string())?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `cgroup.procs` of `rel` in every controller, opened for writing, for
    /// the spawned agent to join itself to.
    pub(crate) fn procs_files(&self, rel: &str) -> Result<Vec<File>, ProviderError> {
        self.controllers
            .iter()
            .map(|c| {
                let path = Self::dir(c, rel).join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| ProviderError::io("opening", path, e))
            })
            .collect()
    }

    /// Every process in `rel` or below it, in any controller.
    pub(crate) fn pids(&self, rel: &str) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for c in &self.controllers {
            for dir in subtree(&Self::dir(c, rel)) {
                if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
                }
            }
        }
        out
    }

    /// SIGKILLs everything in `rel` and below (frozen first where the freezer
    /// is mounted, so nothing forks past the kill) until it is empty, for at
    /// most `polls` rounds. Returns the processes signalled.
    pub(crate) fn kill_all(&self, rel: &str, polls: u32) -> BTreeSet<u32> {
        let mut killed = BTreeMap::new();
        let freezer = self
            .controller("freezer")
            .map(|c| Self::dir(c, rel).join("freezer.state"));
        for _ in 0..polls.max(1) {
            let pids = self.pids(rel);
            if pids.is_empty() {
                break;
            }
            let frozen = freezer.as_deref().is_some_and(freeze);
            for &pid in &pids {
                killed.entry(pid).or_insert_with(|| procfs::start_time(pid));
                let _ = procfs::signal(pid, Signal::SIGKILL);
            }
            if frozen {
                if let Some(state) = &freezer {
                    let _ = write_file(state, "THAWED");
                }
            }
            std::thread::sleep(POLL);
        }
        // a task leaves its cgroup a moment before it is done exiting
        procfs::wait_gone(&killed, polls);
        killed.into_keys().collect()
    }

    /// Removes `rel` and every cgroup below it, deepest first, in every
    /// controller. Missing ones are fine.
    pub(crate) fn remove(&self, rel: &str, polls: u32) -> Result<(), ProviderError> {
        for c in &self.controllers {
            let mut dirs = subtree(&Self::dir(c, rel));
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for dir in dirs {
                remove_dir(&dir, polls)?;
            }
        }
        // runc also creates the containers' cgroups (and their parents) in the
        // hierarchies berth does not manage (blkio, cpuset, devices, named
        // ones…): remove what is there under the same path.
        let roots: BTreeSet<PathBuf> = self
            .controllers
            .iter()
            .filter_map(|c| c.mount.parent().map(Path::to_path_buf))
            .collect();
        for root in roots {
            let Ok(entries) = std::fs::read_dir(&root) else {
                continue;
            };
            for entry in entries.flatten() {
                let hierarchy = entry.path();
                if self.controllers.iter().any(|c| c.mount == hierarchy) || !hierarchy.is_dir() {
                    continue;
                }
                let top = hierarchy.join(rel.trim_start_matches('/'));
                if !top.is_dir() {
                    continue;
                }
                let mut dirs = subtree(&top);
                dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
                for dir in dirs {
                    if let Err(e) = remove_dir(&dir, polls) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a cgroup");
                    }
                }
            }
        }
        Ok(())
    }

    /// The names of the cgroups directly below `root` in any controller.
    pub(crate) fn children(&self, root: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for c in &self.controllers {
            if let Ok(entries) = std::fs::read_dir(Self::dir(c, root)) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        out.insert(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        out
    }
}

fn enable_hierarchy(dir: &Path) -> Result<(), ProviderError> {
    let file = dir.join("memory.use_hierarchy");
    if read_file(&file)?.trim() == "0" {
        write_file(&file, "1")?;
    }
    Ok(())
}

/// Freezes the cgroup whose `freezer.state` is `state`, waiting a little for
/// it to get there; true when the freeze was asked for (and so needs a thaw).
/// The kill goes on whether or not every task got frozen in time.
fn freeze(state: &Path) -> bool {
    if write_file(state, "FROZEN").is_err() {
        return false;
    }
    for _ in 0..25 {
        if read_file(state).is_ok_and(|s| s.trim() == "FROZEN") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// `dir` and every directory below it (parents before children); empty when
/// `dir` does not exist.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        out.push(d);
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
        }
    }
    out
}

fn remove_dir(dir: &Path, polls: u32) -> Result<(), ProviderError> {
    let mut last = None;
    for _ in 0..polls.max(1) {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            // EBUSY while the last tasks finish exiting
            Err(e) => last = Some(e),
        }
        std::thread::sleep(POLL);
    }
    match last {
        Some(e) => Err(ProviderError::io("removing cgroup", dir, e)),
        None => Ok(()),
    }
}

pub(crate) fn read_file(path: &Path) -> Result<String, ProviderError> {
    std::fs::read_to_string(path).map_err(|e| ProviderError::io("reading", path, e))
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), ProviderError> {
    std::fs::write(path, value).map_err(|e| ProviderError::io("writing", path, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn detect_needs_memory_and_cpu() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Cgroups::detect(dir.path()).is_err());
        for name in ["memory", "cpu", "pids"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("cgroup.procs"), "").unwrap();
        }
        // cpuacct co-mounted with cpu counts once
        std::os::unix::fs::symlink(dir.path().join("cpu"), dir.path().join("cpuacct")).unwrap();
        let cg = Cgroups::detect(dir.path()).unwrap();
        let names: Vec<_> = cg.controllers.iter().map(|c| c.name).collect();
        assert_eq!(names, ["memory", "cpu", "pids"]);
    }

    #[test]
    fn subtree_lists_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b/c")).unwrap();
        std::fs::create_dir_all(dir.path().join("a/d")).unwrap();
        let t = subtree(&dir.path().join("a"));
        assert_eq!(t.len(), 4);
        assert_eq!(t[0], dir.path().join("a"));
        assert!(subtree(&dir.path().join("missing")).is_empty());
    }
}

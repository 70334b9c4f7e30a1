//! [`ProcessRuntime`]: the [`Runtime`] trait for machines without root or runc — a container
//! is a plain child process of its shim.
//!
//! What it does: the command line (Docker's entrypoint/command rules), the environment (image
//! `Env`, `environment`, `extra_env`, `PATH`, `HOSTNAME`, `NVIDIA_VISIBLE_DEVICES`), the
//! working directory, stdout/stderr logs, exit codes (`128 + signal`), signals, re-adoption
//! after an agent restart — all through the same shim and state files as runc.
//!
//! Limits — there is **no isolation and no limit**:
//! * the process runs on the host: host file system, network, pid space, hostname; `cpu`,
//!   `memory`, `memoryReservation`, `ulimits`, capabilities, `privileged`,
//!   `readonlyRootFilesystem`, tmpfs, devices, `dnsServers`/`extraHosts`, the hostname and the
//!   task's volumes ([`ContainerLaunch::mounts`], with a warning) are ignored, and OOM kills
//!   are not detected (`oom_killed` is always false);
//! * the image layers are only used to *find the program*: a command given by path (or found
//!   through the container's `PATH`) is looked up in the layers, newest first, following
//!   symbolic links inside the layers; the program then runs from the layer directory — which
//!   works for static binaries and scripts whose interpreter exists on the host, not for
//!   dynamically linked programs needing the image's libraries. Absolute paths the program
//!   opens refer to the host. A command not found in the layers is run from the host;
//! * the working directory is used when it exists on the host, else the container's scratch
//!   directory `state_dir/<id>/work` (with a warning);
//! * `user` is applied (numeric or resolved from the top layer's `/etc/passwd`) only when the
//!   agent runs as root.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::shim::{self, ShimConfig, ShimMode};
use super::state::{self, ContainerDir};
use super::{config, ContainerLaunch, ContainerStatus, Runtime, RuntimeError, ShimCommand};

/// The plain-process runtime.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    state_dir: PathBuf,
    shim: ShimCommand,
}

/// Normalizes `p` lexically (`.` and `..`), keeping it absolute.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Finds the absolute container path `path` in `layers` (lowest first), following symbolic
/// links within the layers (up to 32). Returns the host path of the file in its layer.
pub fn find_in_layers(layers: &[PathBuf], path: &str) -> Option<PathBuf> {
    let mut cur = normalize(Path::new(path));
    for _ in 0..32 {
        let rel = cur.strip_prefix("/").ok()?.to_path_buf();
        let (layer_path, md) = layers.iter().rev().find_map(|l| {
            let p = l.join(&rel);
            std::fs::symlink_metadata(&p).ok().map(|m| (p, m))
        })?;
        if md.file_type().is_symlink() {
            let target = std::fs::read_link(&layer_path).ok()?;
            cur = if target.is_absolute() {
                normalize(&target)
            } else {
                normalize(&cur.parent().unwrap_or(Path::new("/")).join(target))
            };
            continue;
        }
        return md.is_file().then_some(layer_path);
    }
    None
}

/// Resolves the program of `argv0`: in the layers (by path, or through `PATH`), else as given.
pub fn resolve_program(layers: &[PathBuf], argv0: &str, path_env: &str) -> PathBuf {
    if argv0.contains('/') {
        let abs = if argv0.starts_with('/') {
            argv0.to_string()
        } else {
            format!("/{argv0}")
        };
        return find_in_layers(layers, &abs).unwrap_or_else(|| PathBuf::from(argv0));
    }
    path_env
        .split(':')
        .filter(|d| d.starts_with('/'))
        .find_map(|d| find_in_layers(layers, &format!("{}/{argv0}", d.trim_end_matches('/'))))
        .unwrap_or_else(|| PathBuf::from(argv0))
}

impl ProcessRuntime {
    /// A runtime keeping its containers under `state_dir`.
    pub fn new(state_dir: &Path, shim: ShimCommand) -> Self {
        ProcessRuntime {
            state_dir: state_dir.to_path_buf(),
            shim,
        }
    }

    fn container_dir(&self, id: &str) -> Result<ContainerDir, RuntimeError> {
        super::validate_id(id)?;
        Ok(ContainerDir::new(&self.state_dir, id))
    }

    fn prepare(&self, launch: &ContainerLaunch, dir: &Path) -> Result<(), RuntimeError> {
        let def = &launch.definition;
        let args = config::resolve_args(&launch.image, def)?;
        for m in &launch.mounts {
            tracing::warn!(id = %launch.id, "the process runtime cannot mount {} at {}: the process sees the host's file system instead", m.source.display(), m.destination);
        }
        let hostname = launch
            .hostname
            .clone()
            .or_else(|| def.hostname.clone())
            .or_else(|| {
                nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
            });
        let env = config::merge_env(
            &launch.image.env,
            def,
            &launch.extra_env,
            hostname.as_deref(),
            &launch.gpu_ids,
        );
        let path_env = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(config::DEFAULT_PATH);
        let program = resolve_program(&launch.layers, &args[0], path_env);
        let wanted = def
            .working_directory
            .clone()
            .or_else(|| launch.image.working_dir.clone())
            .filter(|w| !w.is_empty());
        let cwd = match wanted {
            Some(w) if Path::new(&w).is_dir() => PathBuf::from(w),
            other => {
                let scratch = dir.join("work");
                std::fs::create_dir_all(&scratch)
                    .map_err(RuntimeError::io(format!("creating {}", scratch.display())))?;
                if let Some(w) = other {
                    tracing::warn!(id = %launch.id, "working directory {w} does not exist on this host; using {}", scratch.display());
                }
                scratch
            }
        };
        let (uid, gid) = match def
            .user
            .as_deref()
            .filter(|u| !u.is_empty())
            .or(launch.image.user.as_deref())
        {
            Some(u) => {
                let read = |rel: &str| {
                    find_in_layers(&launch.layers, rel)
                        .and_then(|p| std::fs::read_to_string(p).ok())
                        .unwrap_or_default()
                };
                let r = config::resolve_user(Some(u), &read("/etc/passwd"), &read("/etc/group"))?;
                (Some(r.uid), Some(r.gid))
            }
            None => (None, None),
        };
        std::fs::create_dir_all(&launch.log_dir).map_err(RuntimeError::io(format!(
            "creating {}",
            launch.log_dir.display()
        )))?;
        state::write_json(
            &dir.join(state::SHIM_CONFIG),
            &ShimConfig {
                id: launch.id.clone(),
                log_dir: launch.log_dir.clone(),
                mode: ShimMode::Process {
                    program,
                    argv0: args[0].clone(),
                    args: args[1..].to_vec(),
                    env,
                    cwd,
                    uid,
                    gid,
                },
            },
        )
    }

    fn running(&self, id: &str) -> Result<Option<state::StartedState>, RuntimeError> {
        let cd = self.container_dir(id)?;
        match cd.status(|s| state::process_alive(s.pid, s.pid_start_ticks))? {
            ContainerStatus::Running { .. } => Ok(cd
                .started()?
                .filter(|s| state::process_alive(s.pid, s.pid_start_ticks))),
            _ => Ok(None),
        }
    }
}

impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn start(&self, launch: &ContainerLaunch) -> Result<(), RuntimeError> {
        let cd = self.container_dir(&launch.id)?;
        if cd.path.exists() {
            return Err(RuntimeError::AlreadyExists(launch.id.clone()));
        }
        std::fs::create_dir_all(&cd.path)
            .map_err(RuntimeError::io(format!("creating {}", cd.path.display())))?;
        let result = self
            .prepare(launch, &cd.path)
            .and_then(|()| shim::spawn(&self.shim, &cd.path, &launch.id));
        match result {
            Ok(pid) => {
                tracing::info!(id = %launch.id, pid, "container started as a plain process (no isolation)");
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&cd.path);
                Err(e)
            }
        }
    }

    fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let cd = self.container_dir(id)?;
        cd.status(|s| state::process_alive(s.pid, s.pid_start_ticks))
    }

    fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let sig = Signal::try_from(signal)
            .map_err(|_| RuntimeError::InvalidConfig(format!("invalid signal {signal}")))?;
        match self.status(id)? {
            ContainerStatus::Missing => return Err(RuntimeError::NotFound(id.to_string())),
            ContainerStatus::Exited { .. } => return Err(RuntimeError::NotRunning(id.to_string())),
            ContainerStatus::Running { .. } => {}
        }
        let Some(s) = self.running(id)? else {
            return Err(RuntimeError::NotRunning(id.to_string()));
        };
        kill(Pid::from_raw(s.pid), sig).map_err(|e| RuntimeError::Io {
            context: format!("signalling pid {}", s.pid),
            source: e.into(),
        })
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let cd = self.container_dir(id)?;
        if !cd.path.exists() {
            return Ok(());
        }
        if let Some(s) = self.running(id)? {
            // the process leads its own process group: kill what it started too
            let _ = killpg(Pid::from_raw(s.pid), Signal::SIGKILL);
            if !cd.wait_exit(Duration::from_secs(10)) {
                tracing::warn!(id, "the process did not exit within 10s of SIGKILL");
            }
        }
        match std::fs::remove_dir_all(&cd.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Io {
                context: format!("removing {}", cd.path.display()),
                source: e,
            }),
        }
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        state::list_ids(&self.state_dir)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn layers_lookup_follows_links() {
        let d = tempfile::tempdir().unwrap();
        let l1 = d.path().join("l1");
        let l2 = d.path().join("l2");
        std::fs::create_dir_all(l1.join("bin")).unwrap();
        std::fs::create_dir_all(l2.join("usr/bin")).unwrap();
        std::fs::write(l1.join("bin/busybox"), "x").unwrap();
        std::os::unix::fs::symlink("busybox", l1.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", l2.join("usr/bin/env")).unwrap();
        std::os::unix::fs::symlink("../../bin/sh", l2.join("usr/bin/sh2")).unwrap();
        let layers = vec![l1.clone(), l2.clone()];
        assert_eq!(
            find_in_layers(&layers, "/bin/sh"),
            Some(l1.join("bin/busybox"))
        );
        assert_eq!(
            find_in_layers(&layers, "/usr/bin/env"),
            Some(l1.join("bin/busybox"))
        );
        assert_eq!(
            find_in_layers(&layers, "/usr/bin/sh2"),
            Some(l1.join("bin/busybox"))
        );
        assert_eq!(find_in_layers(&layers, "/nope"), None);
        assert_eq!(
            resolve_program(&layers, "sh", "/usr/bin:/bin"),
            l1.join("bin/busybox")
        );
        assert_eq!(
            resolve_program(&layers, "true", "/usr/bin:/bin"),
            PathBuf::from("true")
        );
        assert_eq!(
            resolve_program(&layers, "/bin/sh", ""),
            l1.join("bin/busybox")
        );
    }
}

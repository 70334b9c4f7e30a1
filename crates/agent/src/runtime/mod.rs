//! The container runtime layer: runs the containers of a task on this instance.
//!
//! # What
//!
//! A [`Runtime`] starts one container from a [`ContainerLaunch`] (unpacked image layers, the
//! image config, the ECS container definition with overrides applied, the network to use, the
//! task's cgroup), reports its [`ContainerStatus`], signals it, lists the containers it knows on
//! disk and removes them. Two implementations exist:
//!
//! * [`RuncRuntime`] (`runc`): real containers through `runc` — an overlay root filesystem, an
//!   OCI `config.json` built with `oci-spec` from Docker's semantics of the ECS fields,
//!   namespaces, cgroup limits, capabilities, exact OOM-kill reporting.
//! * [`ProcessRuntime`] (`process`): the same trait for machines without root or runc — the
//!   command runs as a plain child process, without any isolation or limit.
//!
//! [`detect`] picks one.
//!
//! # Design
//!
//! Every container has a directory `state_dir/<id>/` that holds everything about it
//! (`shim.json`, `state.json`, `exit.json`, for runc also the bundle: `config.json`,
//! `rootfs/`, the overlay's `upper/` and `work/`, `hosts`, `resolv.conf`, `hostname`). All state
//! is on disk, so a restarted agent re-adopts running containers with [`Runtime::list`] and
//! [`Runtime::status`] without touching them.
//!
//! A small *shim* process per container ([`shim`]) owns the container process: it is started
//! by the runtime through a [`ShimCommand`] (in production `berth shim`, which calls
//! [`shim::main`]), detaches into its own session (so it outlives the agent), starts the
//! container with stdout/stderr appended to `log_dir/stdout.log` and `stderr.log`, waits for it
//! and writes `exit.json` (exit code, `128 + signal` for signals, OOM kill, start and finish
//! times) atomically. Timestamps are only taken inside the shim process.
//!
//! The [`Runtime`] methods block (they run `runc`, mount, copy, wait for the shim's report):
//! call them from `tokio::task::spawn_blocking` in async code.
//!
//! # Limits
//!
//! * Volumes (`mountPoints`, `volumesFrom`) arrive resolved: the supervisor turns them into
//!   host directories ([`ContainerLaunch::mounts`]), which runc bind-mounts (the process
//!   runtime cannot, and ignores them with a warning).
//! * `environmentFiles`, `secrets`, health checks, log drivers and port mappings are not
//!   handled here: the agent resolves them (e.g. into `extra_env`) or handles them elsewhere.
//! * No seccomp profile is applied (Docker applies its default profile) and no AppArmor/SELinux.
//! * Interactive `exec` sessions ([`Runtime::exec_helper`], [`exec`]) need runc; the process
//!   runtime has none.
//! * GPUs: device nodes and `NVIDIA_VISIBLE_DEVICES` only; the NVIDIA user-space libraries are
//!   not injected (that is the job of the NVIDIA container toolkit hook).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub mod bundle;
pub mod cgroup;
pub mod config;
pub mod exec;
pub mod process;
pub mod runc;
pub mod shim;
pub mod state;
pub mod testing;

pub use exec::ExecRequest;
pub use process::ProcessRuntime;
pub use runc::RuncRuntime;

/// The parts of an OCI image config a container's process is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `Env`, `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
}

impl From<&oci_spec::image::Config> for ImageConfig {
    fn from(c: &oci_spec::image::Config) -> Self {
        ImageConfig {
            entrypoint: c.entrypoint().clone(),
            cmd: c.cmd().clone(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
        }
    }
}

/// Which network namespace a container gets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Network {
    /// The host's network namespace (e.g. `/proc/1/ns/net`), joined by path; the container also
    /// gets the host's hostname and `/etc/resolv.conf`.
    Host(PathBuf),
    /// An existing network namespace to join (a bind-mounted netns, or
    /// `/proc/<pid>/ns/net` of another container of the task).
    Join(PathBuf),
    /// A fresh, empty network namespace: loopback only.
    None,
}

/// What to run: one container of a task.
#[derive(Debug, Clone)]
pub struct ContainerLaunch {
    /// Unique runtime id, `[a-zA-Z0-9_.-]`, e.g. `"<taskid>-<container>"`.
    pub id: String,
    /// Unpacked image layer directories, lowest first; read-only, shared between containers.
    pub layers: Vec<PathBuf>,
    /// From the OCI image config.
    pub image: ImageConfig,
    /// The ECS container definition, overrides already applied.
    pub definition: berth_model::ecs::ContainerDefinition,
    /// The network namespace to use.
    pub network: Network,
    /// cgroup path under each controller, e.g. `"/berth/i-0abc/task-<id>"`; created if missing.
    /// The container's own cgroup is `<cgroup_parent>/<id>`.
    pub cgroup_parent: String,
    /// Hostname; else the definition's, else the host's (host network) or the id.
    pub hostname: Option<String>,
    /// Where this container's `stdout.log` / `stderr.log` go (created if missing).
    pub log_dir: PathBuf,
    /// Extra environment, applied over the image's and the definition's.
    pub extra_env: Vec<(String, String)>,
    /// GPU ids (`NVIDIA_VISIBLE_DEVICES` when non-empty).
    pub gpu_ids: Vec<String>,
    /// Host paths bind-mounted into the container (the task's volumes, resolved).
    pub mounts: Vec<BindMount>,
}

/// A host path bind-mounted into a container: one of its `mountPoints` (or one it got through
/// `volumesFrom`), resolved to a path on the host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindMount {
    /// The path on the host (a directory, or a file).
    pub source: PathBuf,
    /// The absolute path inside the container; created by runc when missing.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What a runtime knows about a container.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerStatus {
    /// The container's process runs.
    Running {
        /// Its pid on the host.
        pid: i32,
        /// Epoch seconds.
        started_at: f64,
    },
    /// The container's process has exited.
    Exited {
        /// The exit code; `128 + signal` when killed by a signal; `-1` when the shim that owned
        /// the container vanished before it could record the exit (unknown code).
        code: i32,
        /// Whether the kernel OOM killer killed a process of the container (runc only).
        oom_killed: bool,
        /// Epoch seconds.
        started_at: f64,
        /// Epoch seconds.
        finished_at: f64,
    },
    /// Nothing is known about this id (or its start never completed).
    Missing,
}

/// The errors of the runtime layer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The id is not usable as a runtime id.
    #[error("invalid container id {0:?}: use 1 to 128 characters from [a-zA-Z0-9_.-], not starting with '.'")]
    InvalidId(String),
    /// A container with this id exists already.
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// No container with this id.
    #[error("container {0} not found")]
    NotFound(String),
    /// The container is not running (it exited).
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The launch cannot be turned into a container configuration.
    #[error("invalid container configuration: {0}")]
    InvalidConfig(String),
    /// The container did not start.
    #[error("container {id} failed to start: {reason}")]
    StartFailed {
        /// The container.
        id: String,
        /// Why, as reported by runc or the shim.
        reason: String,
    },
    /// An external command (runc) failed.
    #[error("{command} failed: {message}")]
    Command {
        /// The command line, shortened.
        command: String,
        /// Its error output.
        message: String,
    },
    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let context = context.into();
        move |source| RuntimeError::Io { context, source }
    }
}

/// How the runtime starts a shim: `program args... launch <container dir>`.
///
/// In production this is the `berth` binary with the argument `shim`; the shim's arguments are
/// appended after `args` (see [`shim::main`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCommand {
    /// The executable.
    pub program: PathBuf,
    /// Arguments before the shim's own.
    pub args: Vec<OsString>,
}

impl ShimCommand {
    /// A shim command without leading arguments.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        ShimCommand {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Adds a leading argument (e.g. `shim` for `berth shim`).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }
}

/// A container runtime.
pub trait Runtime: Send + Sync {
    /// `"runc"` or `"process"`.
    fn name(&self) -> &'static str;
    /// Starts a container; returns once its process runs, or with a clear error when it could
    /// not start (nothing is left behind then).
    fn start(&self, launch: &ContainerLaunch) -> Result<(), RuntimeError>;
    /// The container's status.
    fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError>;
    /// Sends a signal to the container's main process. [`RuntimeError::NotRunning`] when it has
    /// exited, [`RuntimeError::NotFound`] when unknown.
    fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError>;
    /// Removes the container: kills it first when it still runs, then deletes the runtime state,
    /// mounts, bundle and the container's cgroup. Removing an unknown id is not an error.
    fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// The ids of the containers known on disk, sorted.
    fn list(&self) -> Result<Vec<String>, RuntimeError>;

    /// Runs `argv` inside a running container (its namespaces and cgroup) and
    /// returns its exit code; `None` when it ran past `timeout` and was killed.
    /// Used for container health checks.
    fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: std::time::Duration,
    ) -> Result<Option<i32>, RuntimeError> {
        let _ = (argv, timeout);
        Err(RuntimeError::InvalidConfig(format!(
            "the {} runtime cannot run a command inside container {id}",
            self.name()
        )))
    }

    /// The command line of the exec helper ([`exec`]) that runs `request` inside the running
    /// container `id` for an interactive session. [`RuntimeError::NotRunning`] or
    /// [`RuntimeError::NotFound`] when the container does not run.
    fn exec_helper(
        &self,
        id: &str,
        request: &ExecRequest,
    ) -> Result<std::process::Command, RuntimeError> {
        let _ = request;
        Err(RuntimeError::InvalidConfig(format!(
            "the {} runtime cannot open a session inside container {id}: exec needs runc",
            self.name()
        )))
    }
}

/// Checks that `id` is a valid runtime id.
pub fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidId(id.to_string()))
    }
}

/// Finds the `runc` binary: `PATH`, then the usual system directories.
pub fn find_runc() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .map(|d| d.join("runc"))
        .find(|p| state::is_executable(p))
}

/// Picks the runtime for this machine: [`RuncRuntime`] when running as root and `runc` is
/// found, else [`ProcessRuntime`] with a loud warning about what it lacks.
pub fn detect(state_dir: &Path, shim: ShimCommand) -> Box<dyn Runtime> {
    let root = nix::unistd::geteuid().is_root();
    let runc = find_runc();
    match (root, runc) {
        (true, Some(runc)) => {
            tracing::info!(runc = %runc.display(), state_dir = %state_dir.display(), "container runtime: runc");
            Box::new(RuncRuntime::new(state_dir, shim).with_runc(runc))
        }
        (root, runc) => {
            let why = if !root {
                "the agent does not run as root"
            } else if runc.is_none() {
                "runc was not found"
            } else {
                "runc is unusable"
            };
            tracing::warn!(
                state_dir = %state_dir.display(),
                "container runtime: process ({why}). Containers run as PLAIN HOST PROCESSES: \
                 no namespaces (they see and can signal every host process, share the host \
                 network and file system), no cgroup limits (cpu, memory and memoryReservation \
                 are NOT enforced, OOM kills are not detected), no capabilities, readonly root, \
                 privileged, tmpfs, ulimits or devices; the image's files are only used to find \
                 the command. Install runc and run the agent as root for real containers."
            );
            Box::new(ProcessRuntime::new(state_dir, shim))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-DEF_1.2").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id(".hidden").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id("a b").is_err());
        assert!(validate_id(&"x".repeat(129)).is_err());
    }
}

//! The one error type of every provider.

use std::path::PathBuf;

/// What went wrong launching, terminating or listing instances.
///
/// Every variant names what it was about: the instance id, the command that
/// ran or the path that was touched.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The launch request itself is unusable (bad instance id, zero vCPUs, ...).
    #[error("invalid launch of {instance_id}: {reason}")]
    InvalidSpec { instance_id: String, reason: String },

    /// An instance with this id was launched before (ids are never reused).
    #[error("instance {instance_id} already exists")]
    AlreadyExists { instance_id: String },

    /// The host cannot fit the instance: the memory of the instances it runs
    /// plus this one would exceed the configured share of host memory.
    #[error(
        "insufficient capacity for {instance_id}: it needs {requested_mib} MiB of memory, \
         {available_mib} MiB of {capacity_mib} MiB are free"
    )]
    InsufficientCapacity {
        instance_id: String,
        requested_mib: u64,
        available_mib: u64,
        capacity_mib: u64,
    },

    /// Every address of the instance range is held by a live instance or a
    /// task on one (for a task address, `instance_id` is the task's instance).
    #[error("no free address in {range} for {instance_id}")]
    AddressesExhausted { instance_id: String, range: String },

    /// The instance does not exist, or no longer takes new task addresses
    /// (shutting down or terminated).
    #[error("instance {instance_id} {reason}")]
    UnknownInstance { instance_id: String, reason: String },

    /// A task address request is unusable (a bad task id).
    #[error("invalid task {task_id:?} on {instance_id}: {reason}")]
    InvalidTask {
        instance_id: String,
        task_id: String,
        reason: String,
    },

    /// The provider was configured with something it cannot use.
    #[error("invalid provider configuration: {reason}")]
    Config { reason: String },

    /// The host lacks something the provider needs (root, cgroup v1 controllers, ...).
    #[error("host unsupported: {reason}")]
    Unsupported { reason: String },

    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// A command could not be started at all.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// Reading or writing a file (state records, cgroup files, logs) failed.
    #[error("{action} {path}: {source}", path = path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A state record could not be encoded or decoded.
    #[error("state record {path}: {source}", path = path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A system call about an instance's processes failed.
    #[error("{op} for {instance_id}: {source}")]
    Sys {
        op: String,
        instance_id: String,
        #[source]
        source: nix::Error,
    },

    /// The instance could not be started (also what the sim provider's
    /// failure injection returns).
    #[error("launching {instance_id} failed: {reason}")]
    LaunchFailed { instance_id: String, reason: String },
}

impl ProviderError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

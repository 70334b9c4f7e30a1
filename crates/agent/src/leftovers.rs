//! What an agent leaves on the host when its instance goes away without it:
//! the containers of its runtime (runc's state, their cgroups, overlay
//! mounts and bundle directories) and its tasks' network namespaces.
//!
//! An agent deletes its containers once the server no longer wants their
//! tasks, but an instance terminated meanwhile (`berth up` stopped with
//! Ctrl-C a moment after a task stopped, a crash) kills the agent first. The
//! instance provider kills every process; [`remove`] then removes the rest,
//! from the agent's state directory alone.

use crate::runtime::{self, ProcessRuntime, RuncRuntime, Runtime, ShimCommand};
use crate::supervisor::LocalTask;
use std::path::Path;

/// What [`remove`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Container ids whose runtime state, mounts and directory were removed.
    pub containers: Vec<String>,
    /// Task network namespaces deleted.
    pub namespaces: Vec<String>,
}

/// Removes every container and task network namespace recorded under an
/// agent's state directory (`STATE_DIR/runtime`, `STATE_DIR/tasks`). Call it
/// only once the agent and its containers' processes are gone: a container
/// still running is killed. Errors are collected; everything that can be
/// removed is.
pub fn remove(state_dir: &Path) -> (Removed, Vec<String>) {
    let mut removed = Removed::default();
    let mut errors = vec![];
    let runtime_dir = state_dir.join("runtime");
    match runtime::state::list_ids(&runtime_dir) {
        Ok(ids) if !ids.is_empty() => {
            // The shim is never run here: removing needs only runc (or nothing).
            let shim = ShimCommand::new("/bin/false");
            let rt: Box<dyn Runtime> = match runtime::find_runc() {
                Some(runc) if nix::unistd::geteuid().is_root() => {
                    Box::new(RuncRuntime::new(&runtime_dir, shim).with_runc(runc))
                }
                _ => Box::new(ProcessRuntime::new(&runtime_dir, shim)),
            };
            for id in ids {
                match rt.remove(&id) {
                    Ok(()) => removed.containers.push(id),
                    Err(e) => errors.push(format!("container {id}: {e}")),
                }
            }
        }
        Ok(_) => {}
        Err(e) => errors.push(e.to_string()),
    }
    if let Ok(entries) = std::fs::read_dir(state_dir.join("tasks")) {
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(task) = serde_json::from_slice::<LocalTask>(&bytes) else {
                continue;
            };
            if task.netns.is_none() {
                continue;
            }
            let id = task
                .spec
                .task_arn
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            if !crate::network::task_netns_path(&id).exists() {
                continue;
            }
            match crate::network::delete_task_netns(&id) {
                Ok(()) => removed
                    .namespaces
                    .push(crate::network::task_netns_name(&id)),
                Err(e) => errors.push(format!("task {id}: {e}")),
            }
        }
    }
    (removed, errors)
}

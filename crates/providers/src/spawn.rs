//! Starting the agent detached, inside its instance's cgroups and network
//! namespace. The only `unsafe` code of the crate: one `pre_exec` hook.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use nix::sched::CloneFlags;

/// Where the new process goes before it executes its program.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    /// `cgroup.procs` files (opened for writing) of the cgroups to join.
    pub cgroup_procs: Vec<File>,
    /// The network namespace to enter (`/run/netns/<name>`, opened for reading).
    pub netns: Option<File>,
}

/// Spawns `cmd` in a new session (so it outlives its parent and no terminal
/// signal reaches it), after joining the cgroups and the network namespace of
/// `placement`. The child is confined before its program's first
/// instruction, so nothing it forks can start outside.
pub(crate) fn spawn_detached(cmd: &mut Command, placement: Placement) -> io::Result<Child> {
    let Placement {
        cgroup_procs,
        netns,
    } = placement;
    let hook = move || -> io::Result<()> {
        for procs in &cgroup_procs {
            // "0" moves the writing process (cgroup v1 and v2 alike)
            nix::unistd::write(procs, b"0").map_err(io::Error::from)?;
        }
        if let Some(ns) = &netns {
            nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        }
        nix::unistd::setsid().map_err(io::Error::from)?;
        Ok(())
    };
    // SAFETY: the hook runs in the forked child between fork and exec, where
    // only async-signal-safe work is allowed. It makes three raw system calls
    // (write(2), setns(2), setsid(2)) on descriptors the parent opened before
    // forking and owns for the hook's whole life (the closure owns the
    // `File`s, which are close-on-exec). It neither allocates nor takes locks:
    // nix's wrappers only read errno, and `io::Error::from(Errno)` builds an
    // OS error without allocating.
    unsafe {
        cmd.pre_exec(hook);
    }
    cmd.spawn()
}

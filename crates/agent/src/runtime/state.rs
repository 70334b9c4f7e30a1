//! The on-disk state of a container, shared by the runtimes and the shim.
//!
//! `state_dir/<id>/` holds:
//! * `shim.json` — what the shim runs ([`super::shim::ShimConfig`]), written by the runtime
//!   before the shim starts; its presence makes the directory a container ([`list_ids`]);
//! * `state.json` — [`StartedState`], written by the shim once the process runs;
//! * `exit.json` — [`ExitState`], written by the shim when the process has exited;
//! * `shim.log` — the shim's own diagnostics.
//!
//! Files are replaced atomically (write to a temporary file, fsync, rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ContainerStatus, RuntimeError};

/// `shim.json`.
pub const SHIM_CONFIG: &str = "shim.json";
/// `state.json`.
pub const STARTED: &str = "state.json";
/// `exit.json`.
pub const EXITED: &str = "exit.json";
/// `shim.log`.
pub const SHIM_LOG: &str = "shim.log";

/// Written by the shim once the container's process runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartedState {
    /// The shim's pid.
    pub shim_pid: i32,
    /// The shim's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), to tell
    /// it from a later process that reuses its pid.
    pub shim_start_ticks: u64,
    /// The container's main process on the host.
    pub pid: i32,
    /// Its start time in clock ticks since boot.
    pub pid_start_ticks: u64,
    /// Epoch seconds.
    pub started_at: f64,
}

/// Written by the shim when the container's process has exited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitState {
    /// Exit code; `128 + signal` for a signal.
    pub code: i32,
    /// Whether the OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// Epoch seconds.
    pub started_at: f64,
    /// Epoch seconds.
    pub finished_at: f64,
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Writes `value` as JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RuntimeError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| RuntimeError::Io {
        context: format!("encoding {}", path.display()),
        source: std::io::Error::other(e),
    })?;
    write_atomic(path, &bytes).map_err(RuntimeError::io(format!("writing {}", path.display())))
}

/// Reads JSON from `path`; `None` when the file does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, RuntimeError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RuntimeError::Io {
                context: format!("decoding {}", path.display()),
                source: std::io::Error::other(e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::Io {
            context: format!("reading {}", path.display()),
            source: e,
        }),
    }
}

/// A process's start time in clock ticks since boot, `None` when it does not exist.
pub fn proc_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) is in parentheses and may contain spaces
    let after = &stat[stat.rfind(')')? + 1..];
    // after ')' come field 3 (state) onwards; start time is field 22
    after.split_whitespace().nth(19)?.parse().ok()
}

/// A process's state letter (`R`, `S`, `Z`...), `None` when it does not exist.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// Whether the process `pid` that started at `ticks` still exists (and is not a zombie).
pub fn process_alive(pid: i32, ticks: u64) -> bool {
    pid > 0 && proc_start_ticks(pid) == Some(ticks) && proc_state(pid) != Some('Z')
}

/// Whether `path` is an executable regular file (after following links).
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The container directories under `state_dir` (those with a `shim.json`), sorted.
pub fn list_ids(state_dir: &Path) -> Result<Vec<String>, RuntimeError> {
    let entries = match std::fs::read_dir(state_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(RuntimeError::Io {
                context: format!("listing {}", state_dir.display()),
                source: e,
            })
        }
    };
    let mut ids = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if super::validate_id(&name).is_ok() && entry.path().join(SHIM_CONFIG).is_file() {
            ids.push(name);
        }
    }
    ids.sort();
    Ok(ids)
}

/// A container directory.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    /// `state_dir/<id>`.
    pub path: PathBuf,
}

impl ContainerDir {
    /// The directory of `id` under `state_dir`.
    pub fn new(state_dir: &Path, id: &str) -> Self {
        ContainerDir {
            path: state_dir.join(id),
        }
    }

    /// Whether the container is known (its `shim.json` exists).
    pub fn exists(&self) -> bool {
        self.path.join(SHIM_CONFIG).is_file()
    }

    /// `state.json`, when written.
    pub fn started(&self) -> Result<Option<StartedState>, RuntimeError> {
        read_json(&self.path.join(STARTED))
    }

    /// `exit.json`, when written.
    pub fn exited(&self) -> Result<Option<ExitState>, RuntimeError> {
        read_json(&self.path.join(EXITED))
    }

    /// The status from the files and the liveness of the shim. `orphan_running` is asked when
    /// the shim is gone without an `exit.json`: whether the container's process still runs
    /// (it then is `Running`, but its exit code will never be known).
    pub fn status(
        &self,
        orphan_running: impl Fn(&StartedState) -> bool,
    ) -> Result<ContainerStatus, RuntimeError> {
        if !self.exists() {
            return Ok(ContainerStatus::Missing);
        }
        if let Some(e) = self.exited()? {
            return Ok(exited(&e));
        }
        let Some(s) = self.started()? else {
            return Ok(ContainerStatus::Missing);
        };
        if process_alive(s.shim_pid, s.shim_start_ticks) {
            return Ok(ContainerStatus::Running {
                pid: s.pid,
                started_at: s.started_at,
            });
        }
        // the shim may have written exit.json between the two reads
        if let Some(e) = self.exited()? {
            return Ok(exited(&e));
        }
        if orphan_running(&s) {
            tracing::warn!(dir = %self.path.display(), "the shim of a running container is gone: its exit code will not be known");
            return Ok(ContainerStatus::Running {
                pid: s.pid,
                started_at: s.started_at,
            });
        }
        tracing::warn!(dir = %self.path.display(), "the shim of a container vanished without recording its exit: exit code unknown (-1)");
        Ok(ContainerStatus::Exited {
            code: -1,
            oom_killed: false,
            started_at: s.started_at,
            finished_at: s.started_at,
        })
    }

    /// Waits until the container has an `exit.json` or its shim is gone, at most `timeout`.
    pub fn wait_exit(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.path.join(EXITED).is_file() {
                return true;
            }
            let shim_alive = match self.started() {
                Ok(Some(s)) => process_alive(s.shim_pid, s.shim_start_ticks),
                _ => false,
            };
            if !shim_alive {
                return self.path.join(EXITED).is_file();
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn exited(e: &ExitState) -> ContainerStatus {
    ContainerStatus::Exited {
        code: e.code,
        oom_killed: e.oom_killed,
        started_at: e.started_at,
        finished_at: e.finished_at,
    }
}

/// Decodes the octal escapes (`\040` etc.) of `/proc/self/mountinfo` fields.
fn unescape_mount_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points of this process's mount namespace.
pub fn mount_points() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_field(p)))
        .collect()
}

/// The mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    v.dedup();
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mount_field("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_field("/plain"), "/plain");
        assert_eq!(unescape_mount_field("/x\\"), "/x\\");
    }

    #[test]
    fn own_process() {
        let pid = std::process::id() as i32;
        let ticks = proc_start_ticks(pid).unwrap();
        assert!(process_alive(pid, ticks));
        assert!(!process_alive(pid, ticks + 1));
        assert!(matches!(proc_state(pid), Some('R') | Some('S')));
    }

    #[test]
    fn json_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        assert!(read_json::<ExitState>(&p).unwrap().is_none());
        let e = ExitState {
            code: 3,
            oom_killed: false,
            started_at: 1.5,
            finished_at: 2.5,
        };
        write_json(&p, &e).unwrap();
        assert_eq!(read_json::<ExitState>(&p).unwrap(), Some(e));
    }
}

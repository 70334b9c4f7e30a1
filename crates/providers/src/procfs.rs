//! Processes, as `/proc` shows them.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// State letter and start time (clock ticks after boot) of `pid`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<(char, u64)> {
    // "pid (comm) S ppid ... starttime ..." — comm may hold spaces and parens
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // field 22 of stat(5) is starttime; `rest` starts at field 3
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// When `pid` started (clock ticks after boot), to tell it from a later
/// process that got the same pid.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, start)| start)
}

/// Whether `pid` runs (not a zombie) and, given `start`, is the process that
/// started then.
pub(crate) fn is_alive(pid: u32, start: Option<u64>) -> bool {
    match stat(pid) {
        Some((state, started)) => {
            !matches!(state, 'Z' | 'X' | 'x') && start.is_none_or(|s| s == started)
        }
        None => false,
    }
}

/// Sends `signal` to `pid`; a process that is gone already is not an error.
pub(crate) fn signal(pid: u32, signal: Signal) -> nix::Result<()> {
    let Ok(raw) = i32::try_from(pid) else {
        return Ok(());
    };
    if raw <= 0 {
        return Ok(());
    }
    match kill(Pid::from_raw(raw), signal) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Sends `signal` to the process group `pgid`; a group that is gone is not an error.
pub(crate) fn signal_group(pgid: u32, signal: Signal) -> nix::Result<()> {
    let Ok(raw) = i32::try_from(pgid) else {
        return Ok(());
    };
    if raw <= 1 {
        return Ok(());
    }
    match nix::sys::signal::killpg(Pid::from_raw(raw), signal) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Waits, for at most `polls` polls, until none of `pids` (pid to start
/// time) runs any more.
pub(crate) fn wait_gone(pids: &BTreeMap<u32, Option<u64>>, polls: u32) {
    for _ in 0..polls.max(1) {
        if !pids.iter().any(|(&pid, &start)| is_alive(pid, start)) {
            return;
        }
        std::thread::sleep(crate::cgroup::POLL);
    }
}

/// The identity (device, inode) of a namespace file such as
/// `/run/netns/<name>` or `/proc/<pid>/ns/net`.
pub(crate) fn ns_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The processes whose network namespace is the one at `netns`.
pub(crate) fn pids_in_netns(netns: &Path) -> Vec<u32> {
    let Some(target) = ns_identity(netns) else {
        return vec![];
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let mut out = vec![];
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if ns_identity(&entry.path().join("ns/net")) == Some(target) {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let line = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn sees_this_process() {
        let me = std::process::id();
        let start = start_time(me);
        assert!(start.is_some());
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start.map(|s| s + 1)));
        assert!(!is_alive(u32::MAX, None));
        assert!(signal(u32::MAX, Signal::SIGTERM).is_ok());
    }
}

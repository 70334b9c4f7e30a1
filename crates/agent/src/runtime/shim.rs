//! The shim: one small process per container that owns the container's process, outlives the
//! agent and records how the container ended.
//!
//! # Why
//!
//! `runc run -d` detaches and loses the exit status, and a container started by the agent
//! directly would die with it (or become a zombie nobody reaps). The shim runs in its own
//! session, waits for the container and writes `exit.json` (see [`super::state`]), so a
//! restarted agent finds running containers untouched and the exit codes of those that ended
//! meanwhile.
//!
//! # How
//!
//! The runtime writes `state_dir/<id>/shim.json` ([`ShimConfig`]) and runs
//! `<shim program> <args...> launch <dir>` with a pipe as stdout. The `launch` stage forks and
//! exits at once; the child goes on as the `run` stage, which is then not a child of the agent
//! (no zombie for the agent to reap, no thread waiting on it). `run <dir>` runs that stage
//! directly, in the foreground. The `run` stage:
//!
//! 1. `setsid()`: a new session, away from the agent's process group and terminal;
//! 2. opens `log_dir/stdout.log` and `stderr.log` for appending (stdin is `/dev/null`);
//! 3. starts the container —
//!    * runc: becomes a *child subreaper* (`PR_SET_CHILD_SUBREAPER`), reads the OOM-kill
//!      counter of the container's memory cgroup (0 for the new cgroup), and runs
//!      `runc run --detach --bundle B --pid-file B/init.pid ID`: the container's init gets the
//!      log files as stdout/stderr and is re-parented to the shim when runc exits, so the shim
//!      can `waitpid` it itself. The container's cgroup survives the exit (runc removes it only
//!      on `runc delete`), so the `oom_kill` counter of `memory.oom_control` (v1) or
//!      `memory.events` (v2) is read *after* the exit: OOM kills are reported exactly, without
//!      the start-up race of `runc events` (an allocation that is killed before `runc events`
//!      subscribes is missed). One runc process instead of `runc create` + `runc start`
//!      saves a runc start-up (~5 ms) on every container start;
//!    * process: spawns the command in its own process group;
//! 4. takes `started_at`, writes `state.json`, prints `started <pid>` on the pipe (or
//!    `failed <reason>` when the start failed, and exits);
//! 5. waits for the container's process, reaping anything else re-parented to it;
//! 6. writes `exit.json`: the exit code (`128 + signal` for a signal), whether the `oom_kill`
//!    counter rose, `started_at`, `finished_at`.
//!
//! The shim never deletes the container: [`super::Runtime::remove`] does.
//!
//! # Limits
//!
//! When the shim itself is killed (e.g. by a service manager that kills the agent's whole
//! cgroup — run the agent with systemd's `KillMode=process`), the container keeps running but
//! its exit code is lost (reported as `-1`).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::state::{self, ExitState, StartedState};
use super::{RuntimeError, ShimCommand};

/// How long a runtime waits for the shim to report a start.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What the shim runs: `state_dir/<id>/shim.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimConfig {
    /// The container id.
    pub id: String,
    /// Where `stdout.log` and `stderr.log` go.
    pub log_dir: PathBuf,
    /// How to run it.
    pub mode: ShimMode,
}

/// How the shim runs the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShimMode {
    /// `runc run --detach` of a bundle.
    Runc {
        /// The runc binary.
        runc: PathBuf,
        /// runc's `--root`, when not its default.
        root: Option<PathBuf>,
        /// The bundle directory.
        bundle: PathBuf,
        /// The file with the container cgroup's `oom_kill` counter.
        oom_counter: Option<PathBuf>,
    },
    /// A plain child process.
    Process {
        /// The executable to run.
        program: PathBuf,
        /// Its `argv[0]`.
        argv0: String,
        /// Its arguments.
        args: Vec<String>,
        /// Its whole environment.
        env: Vec<(String, String)>,
        /// Its working directory.
        cwd: PathBuf,
        /// The uid to switch to (only when the shim runs as root).
        uid: Option<u32>,
        /// The gid to switch to (only when the shim runs as root).
        gid: Option<u32>,
    },
}

/// The shim's entry point, for the `berth shim` subcommand and the `berth-agent-shim` binary.
///
/// Its arguments are the *last two* of the command line: `launch <dir>` (what a runtime runs)
/// or `run <dir>` (the same in the foreground), or `exec <json>` (an exec session's helper,
/// see [`super::exec`]). Everything between the program name and these
/// two is ignored.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let n = args.len();
    if n < 3 {
        eprintln!("usage: <shim> [args...] (launch|run) <container dir> | exec <json>");
        return ExitCode::from(2);
    }
    let dir = PathBuf::from(&args[n - 1]);
    match args[n - 2].to_str() {
        Some("exec") => match args[n - 1].to_str() {
            Some(config) => super::exec::helper_main(config),
            None => ExitCode::from(2),
        },
        Some("launch") => launch(&dir),
        Some("run") => run(&dir),
        _ => {
            eprintln!("usage: <shim> [args...] (launch|run) <container dir>");
            ExitCode::from(2)
        }
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn log(msg: &str) {
    eprintln!("{:.3} shim[{}]: {msg}", now(), std::process::id());
}

/// Stage 1: fork, and let the child go on as the `run` stage while the parent exits, so
/// the `run` stage is not the runtime's child (it is re-parented to init, or to the nearest
/// subreaper). A fork of this freshly started, single-threaded process costs far less than
/// executing the program again.
fn launch(dir: &Path) -> ExitCode {
    // SAFETY: the shim's `launch` stage runs before anything starts a thread (`main` dispatches
    // to it first and nothing before it spawns one), so the child of this fork is a complete
    // copy of a single-threaded process and may run any code, not only async-signal-safe code.
    #[allow(unsafe_code)]
    let forked = unsafe { nix::unistd::fork() };
    match forked {
        Ok(nix::unistd::ForkResult::Parent { .. }) => ExitCode::SUCCESS,
        Ok(nix::unistd::ForkResult::Child) => run(dir),
        Err(e) => {
            println!("failed cannot fork the shim: {e}");
            ExitCode::from(1)
        }
    }
}

fn report(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", line.replace('\n', " "));
    let _ = out.flush();
}

fn open_log(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// What a started container needs to be waited for.
struct Started {
    pid: i32,
    oom_baseline: Option<u64>,
    child: Option<std::process::Child>,
}

/// Stage 2: start the container, report, wait, record the exit.
fn run(dir: &Path) -> ExitCode {
    if let Err(e) = nix::unistd::setsid() {
        log(&format!("setsid: {e} (continuing)"));
    }
    let config: ShimConfig = match state::read_json(&dir.join(state::SHIM_CONFIG)) {
        Ok(Some(c)) => c,
        Ok(None) => {
            report(&format!(
                "failed no {} in {}",
                state::SHIM_CONFIG,
                dir.display()
            ));
            return ExitCode::from(1);
        }
        Err(e) => {
            report(&format!("failed {e}"));
            return ExitCode::from(1);
        }
    };
    let started = (|| {
        std::fs::create_dir_all(&config.log_dir)
            .map_err(|e| format!("cannot create {}: {e}", config.log_dir.display()))?;
        let stdout = open_log(&config.log_dir.join("stdout.log"))?;
        let stderr = open_log(&config.log_dir.join("stderr.log"))?;
        match &config.mode {
            ShimMode::Runc {
                runc,
                root,
                bundle,
                oom_counter,
            } => start_runc(
                &config.id,
                runc,
                root.as_deref(),
                bundle,
                oom_counter.as_deref(),
                stdout,
                stderr,
            ),
            ShimMode::Process {
                program,
                argv0,
                args,
                env,
                cwd,
                uid,
                gid,
            } => {
                let mut cmd = Command::new(program);
                cmd.arg0(argv0)
                    .args(args)
                    .env_clear()
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .current_dir(cwd)
                    .stdin(Stdio::null())
                    .stdout(stdout)
                    .stderr(stderr)
                    .process_group(0);
                if nix::unistd::geteuid().is_root() {
                    if let Some(gid) = gid {
                        cmd.gid(*gid);
                    }
                    if let Some(uid) = uid {
                        cmd.uid(*uid);
                    }
                }
                let child = cmd
                    .spawn()
                    .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
                Ok(Started {
                    pid: child.id() as i32,
                    oom_baseline: None,
                    child: Some(child),
                })
            }
        }
    })();
    let started = match started {
        Ok(s) => s,
        Err(reason) => {
            log(&format!("start failed: {reason}"));
            report(&format!("failed {reason}"));
            return ExitCode::from(1);
        }
    };
    let started_at = now();
    let me = std::process::id() as i32;
    let record = StartedState {
        shim_pid: me,
        shim_start_ticks: state::proc_start_ticks(me).unwrap_or(0),
        pid: started.pid,
        pid_start_ticks: state::proc_start_ticks(started.pid).unwrap_or(0),
        started_at,
    };
    if let Err(e) = state::write_json(&dir.join(state::STARTED), &record) {
        // the container runs: report it, the runtime will see the missing state
        log(&format!("{e}"));
    }
    report(&format!("started {}", started.pid));
    // nobody reads the pipe any more
    if let Ok(devnull) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&devnull);
    }
    log(&format!(
        "container {} runs as pid {}",
        config.id, started.pid
    ));

    let code = match started.child {
        Some(mut child) => match child.wait() {
            Ok(status) => status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(-1),
            Err(e) => {
                log(&format!("wait: {e}"));
                -1
            }
        },
        None => wait_reparented(started.pid, record.pid_start_ticks),
    };
    let finished_at = now();
    let oom_killed = match (&config.mode, started.oom_baseline) {
        (
            ShimMode::Runc {
                oom_counter: Some(file),
                ..
            },
            Some(before),
        ) => read_oom(file).is_some_and(|after| after > before),
        _ => false,
    };
    let exit = ExitState {
        code,
        oom_killed,
        started_at,
        finished_at,
    };
    log(&format!(
        "container {} exited: code {code}, oom_killed {oom_killed}",
        config.id
    ));
    match state::write_json(&dir.join(state::EXITED), &exit) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(&format!("{e}"));
            ExitCode::from(1)
        }
    }
}

fn read_oom(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|c| super::cgroup::parse_oom_kill(&c))
}

/// The last error message runc wrote to its JSON log.
fn runc_log_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        if v.get("level")?.as_str()? == "error" {
            Some(v.get("msg")?.as_str()?.to_string())
        } else {
            None
        }
    })
}

fn runc_command(runc: &Path, root: Option<&Path>, bundle: &Path) -> Command {
    let mut cmd = Command::new(runc);
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    cmd.arg("--log")
        .arg(bundle.join("runc.log"))
        .arg("--log-format")
        .arg("json");
    cmd
}

#[allow(clippy::too_many_arguments)]
fn start_runc(
    id: &str,
    runc: &Path,
    root: Option<&Path>,
    bundle: &Path,
    oom_counter: Option<&Path>,
    stdout: File,
    stderr: File,
) -> Result<Started, String> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("cannot become a child subreaper: {e}"))?;
    let pid_file = bundle.join("init.pid");
    let _ = std::fs::remove_file(&pid_file);
    // The container's cgroup is new, so its OOM-kill counter starts at 0; should a cgroup of the
    // same path be left over, count from what it already holds.
    let oom_baseline = oom_counter.and_then(read_oom).unwrap_or(0);
    // One `runc run -d`: runc creates and starts the container and exits; the container's init
    // keeps the log files as its stdout/stderr and is re-parented to this subreaper. The cgroup
    // stays until `runc delete`, so its OOM-kill counter is read after the exit.
    let status = runc_command(runc, root, bundle)
        .arg("run")
        .arg("--detach")
        .arg("--bundle")
        .arg(bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", runc.display()))?;
    if !status.success() {
        let _ = runc_command(runc, root, bundle)
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        return Err(runc_log_error(&bundle.join("runc.log"))
            .unwrap_or_else(|| format!("runc run exited with {status}")));
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("runc run wrote no pid to {}", pid_file.display()))?;
    Ok(Started {
        pid,
        oom_baseline: Some(oom_baseline),
        child: None,
    })
}

/// Waits for `pid`, a re-parented container init, reaping every other child meanwhile.
fn wait_reparented(pid: i32, ticks: u64) -> i32 {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                // not our child (the re-parenting failed): poll, the code is unknown
                log(&format!(
                    "waitpid: {e}; polling pid {pid}, its exit code will be unknown"
                ));
                while state::process_alive(pid, ticks) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return -1;
            }
        }
    }
}

/// Runtime side: starts the shim for the container directory `dir` (whose `shim.json` is
/// written) and waits until it reports the container running. Returns the container's pid.
pub fn spawn(shim: &ShimCommand, dir: &Path, id: &str) -> Result<i32, RuntimeError> {
    let log_path = dir.join(state::SHIM_LOG);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(RuntimeError::io(format!("opening {}", log_path.display())))?;
    let mut child = Command::new(&shim.program)
        .args(&shim.args)
        .arg("launch")
        .arg(dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(RuntimeError::io(format!(
            "running the shim {}",
            shim.program.display()
        )))?;
    let stdout = child.stdout.take();
    // `launch` exits as soon as `run` is spawned
    let launched = child
        .wait()
        .map_err(RuntimeError::io("waiting for the shim"))?;
    let shim_log = || {
        std::fs::read_to_string(&log_path)
            .map(|s| s.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
            .unwrap_or_default()
    };
    let Some(stdout) = stdout else {
        return Err(RuntimeError::StartFailed {
            id: id.to_string(),
            reason: "the shim's output pipe is missing".into(),
        });
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx.send(r);
    });
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => {
            return Err(RuntimeError::StartFailed {
                id: id.to_string(),
                reason: format!("reading the shim's report: {e}"),
            })
        }
        Err(_) => {
            return Err(RuntimeError::StartFailed {
                id: id.to_string(),
                reason: format!(
                    "the shim did not report within {}s",
                    START_TIMEOUT.as_secs()
                ),
            })
        }
    };
    let line = line.trim_end();
    if let Some(pid) = line.strip_prefix("started ") {
        return pid.trim().parse().map_err(|_| RuntimeError::StartFailed {
            id: id.to_string(),
            reason: format!("the shim reported {line:?}"),
        });
    }
    let reason = match line.strip_prefix("failed ") {
        Some(r) => r.to_string(),
        None if line.is_empty() => format!(
            "the shim exited ({launched}) without reporting; shim.log: {}",
            shim_log()
        ),
        None => format!("the shim reported {line:?}"),
    };
    Err(RuntimeError::StartFailed {
        id: id.to_string(),
        reason,
    })
}

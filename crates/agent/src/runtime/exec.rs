//! Interactive commands inside a running container: the *exec helper*.
//!
//! # Why a helper
//!
//! `runc exec --detach --console-socket` hands the terminal's master side over a unix socket
//! and exits at once; the exec'd process is then re-parented to the nearest child subreaper,
//! and only that process can learn its exit code. The agent must not become a subreaper (it
//! would inherit every orphan of its shims), so each session gets a helper process
//! (`berth shim exec '<json>'`, [`helper_main`]) that is the subreaper, owns the process and
//! relays its I/O to the agent over its own stdin and stdout.
//!
//! # What the helper does
//!
//! 1. Becomes a child subreaper and makes a private directory (mode 0700) for the console
//!    socket, the pid file, runc's log and `process.json`: the container's own `process`
//!    from its bundle's `config.json` (user, environment, working directory, capabilities,
//!    rlimits, no-new-privileges …) with the session's `args`, `terminal` and
//!    `consoleSize` (and `TERM=xterm` on a terminal when the container sets no `TERM`).
//! 2. Runs `runc exec --detach --process process.json --pid-file … [--console-socket …] ID`:
//!    with a TTY it receives the terminal's master through the socket (`SCM_RIGHTS`);
//!    without one it gives runc three pipes, which the process inherits as its stdio. So the
//!    process runs in the container's namespaces and cgroup, exactly like the container's.
//! 3. Reports `S` (started), relays output (`O`, `E`), takes input (`I`), terminal sizes (`R`)
//!    and the end of input (`D`) from the agent, reports input the process took (`A`, the
//!    credit of the flow control), waits for the process, drains its output (bounded: a
//!    background child may hold the pipes open) and reports `X` with the exit code (`128 +
//!    signal` when killed), or `F` with why it could not start.
//! 4. When its stdin closes (the session ended, or the agent died) it kills the process
//!    (SIGKILL; with a TTY its whole process group) and exits.
//!
//! # Framing between agent and helper
//!
//! One frame = a tag byte, a big-endian `u32` length, the payload ([`frame`]). Helper → agent:
//! `S` pid (u32) · `O` stdout bytes · `E` stderr bytes · `A` input bytes written (u32) · `X`
//! exit code (i32) · `F` UTF-8 reason. Agent → helper: `I` input bytes · `R` cols and rows
//! (two u16) · `D` end of input.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long runc may take to hand over the terminal and start the process.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// After the process exits, output is drained until it ends or stops coming for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(300);
/// … and for this long at most.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// Largest output chunk in one frame.
const CHUNK: usize = 16 * 1024;

/// What the agent asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The command, split into words; runs without a shell.
    pub argv: Vec<String>,
    /// On a terminal (stdout and stderr merged).
    pub tty: bool,
    pub cols: u16,
    pub rows: u16,
}

/// What the helper is given (as JSON, its last argument).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperConfig {
    pub runc: PathBuf,
    /// runc's `--root`, when not its default.
    pub root: Option<PathBuf>,
    /// The container id.
    pub id: String,
    /// The container's bundle (its `config.json` gives the process to start from).
    pub bundle: PathBuf,
    pub request: ExecRequest,
}

/// The frames between the agent and the helper.
pub mod frame {
    use std::io::{self, Read};

    /// Helper → agent: the process runs (payload: its pid, u32).
    pub const STARTED: u8 = b'S';
    /// Helper → agent: stdout (or terminal) bytes.
    pub const STDOUT: u8 = b'O';
    /// Helper → agent: stderr bytes.
    pub const STDERR: u8 = b'E';
    /// Helper → agent: this many input bytes were written to the process (u32).
    pub const INPUT_TAKEN: u8 = b'A';
    /// Helper → agent: the process exited (i32 code).
    pub const EXIT: u8 = b'X';
    /// Helper → agent: the process could not start (UTF-8 reason).
    pub const FAILED: u8 = b'F';
    /// Agent → helper: input bytes.
    pub const INPUT: u8 = b'I';
    /// Agent → helper: the terminal's size, cols and rows (two u16).
    pub const RESIZE: u8 = b'R';
    /// Agent → helper: the input ended.
    pub const EOF: u8 = b'D';

    /// The largest payload accepted.
    pub const MAX: usize = 1 << 20;

    /// One frame's bytes.
    pub fn encode(tag: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(tag);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Reads one frame; `None` at a clean end of the stream.
    pub fn read(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
        let mut head = [0u8; 5];
        match r.read_exact(&mut head[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        r.read_exact(&mut head[1..])?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame of {len} bytes is too large"),
            ));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(Some((head[0], payload)))
    }
}

fn log(msg: &str) {
    eprintln!("exec-helper[{}]: {msg}", std::process::id());
}

/// Writes one frame to stdout (the agent); false when the agent is gone.
fn emit(tag: u8, payload: &[u8]) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(&frame::encode(tag, payload)).is_ok() && out.flush().is_ok()
}

/// The helper's entry point: `berth shim exec '<HelperConfig JSON>'`.
pub fn helper_main(config: &str) -> ExitCode {
    let config: HelperConfig = match serde_json::from_str(config) {
        Ok(c) => c,
        Err(e) => {
            emit(
                frame::FAILED,
                format!("bad helper configuration: {e}").as_bytes(),
            );
            return ExitCode::from(2);
        }
    };
    let dir = match private_dir() {
        Ok(d) => d,
        Err(e) => {
            emit(frame::FAILED, e.as_bytes());
            return ExitCode::from(1);
        }
    };
    let code = run(&config, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    code
}

fn private_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt as _;
    let name = format!("berth-exec-{:016x}", rand::random::<u64>());
    let dir = std::env::temp_dir().join(name);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The container's process with the session's command, as `runc exec --process` takes it.
pub fn process_json(bundle: &Path, request: &ExecRequest) -> Result<serde_json::Value, String> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let spec: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    let mut process = spec
        .get("process")
        .cloned()
        .ok_or_else(|| format!("{} has no process", path.display()))?;
    let obj = process
        .as_object_mut()
        .ok_or_else(|| format!("{}: process is not an object", path.display()))?;
    obj.insert("args".into(), serde_json::json!(request.argv));
    obj.insert("terminal".into(), serde_json::json!(request.tty));
    obj.remove("commandLine");
    if request.tty {
        obj.insert(
            "consoleSize".into(),
            serde_json::json!({"height": request.rows, "width": request.cols}),
        );
        let env = obj
            .entry("env")
            .or_insert_with(|| serde_json::json!([]))
            .as_array_mut()
            .ok_or_else(|| format!("{}: process.env is not a list", path.display()))?;
        if !env
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
        {
            env.push(serde_json::json!("TERM=xterm"));
        }
    } else {
        obj.remove("consoleSize");
    }
    Ok(process)
}

/// The last error runc wrote to its JSON log.
fn runc_error(log: &Path) -> Option<String> {
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

/// Receives one file descriptor sent with `SCM_RIGHTS` on `stream`.
fn receive_fd(stream: &std::os::unix::net::UnixStream) -> Result<OwnedFd, String> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::mem::MaybeUninit;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    rustix::net::recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)
        .map_err(|e| format!("cannot receive the terminal from runc: {e}"))?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err("runc sent no terminal over the console socket".into())
}

/// Where the process's stdio goes on the helper's side.
enum Io {
    Tty(std::fs::File),
    Pipes {
        stdin: std::fs::File,
        stdout: std::fs::File,
        stderr: std::fs::File,
    },
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("cannot make a pipe: {e}"))
}

/// Starts the process; returns its pid and its stdio.
fn start(config: &HelperConfig, dir: &Path) -> Result<(i32, Io), String> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| format!("cannot become a child subreaper: {e}"))?;
    let process = process_json(&config.bundle, &config.request)?;
    let process_file = dir.join("process.json");
    std::fs::write(&process_file, process.to_string())
        .map_err(|e| format!("cannot write {}: {e}", process_file.display()))?;
    let pid_file = dir.join("exec.pid");
    let runc_log = dir.join("runc.log");
    let socket = dir.join("console.sock");
    let mut cmd = Command::new(&config.runc);
    if let Some(root) = &config.root {
        cmd.arg("--root").arg(root);
    }
    cmd.arg("--log")
        .arg(&runc_log)
        .arg("--log-format")
        .arg("json")
        .arg("exec")
        .arg("--detach")
        .arg("--process")
        .arg(&process_file)
        .arg("--pid-file")
        .arg(&pid_file);
    let listener;
    let mut ours = None;
    if config.request.tty {
        listener = Some(
            std::os::unix::net::UnixListener::bind(&socket)
                .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?,
        );
        cmd.arg("--console-socket").arg(&socket);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    } else {
        listener = None;
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        cmd.stdin(Stdio::from(in_r))
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w));
        ours = Some((in_w, out_r, err_r));
    }
    cmd.arg(&config.id);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", config.runc.display()))?;
    // The process's ends of the pipes belong to it (and to runc) alone now.
    drop(cmd);
    let mut master = None;
    if let Some(listener) = &listener {
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("console socket: {e}"))?;
        let began = Instant::now();
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream
                        .set_nonblocking(false)
                        .map_err(|e| format!("console socket: {e}"))?;
                    master = Some(receive_fd(&stream)?);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("console socket: {e}")),
            }
            match child.try_wait() {
                // runc connects before it exits: one more look, then it failed.
                Ok(Some(_)) => match listener.accept() {
                    Ok((stream, _)) => {
                        stream
                            .set_nonblocking(false)
                            .map_err(|e| format!("console socket: {e}"))?;
                        master = Some(receive_fd(&stream)?);
                        break;
                    }
                    Err(_) => break,
                },
                Ok(None) if began.elapsed() > START_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "runc exec did not start the process within {}s",
                        START_TIMEOUT.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(format!("cannot wait for runc: {e}")),
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for runc: {e}"))?;
    if !status.success() {
        return Err(
            runc_error(&runc_log).unwrap_or_else(|| format!("runc exec exited with {status}"))
        );
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("runc exec wrote no pid to {}", pid_file.display()))?;
    let io = match (master, ours) {
        (Some(m), _) => Io::Tty(std::fs::File::from(m)),
        (None, Some((stdin, stdout, stderr))) => Io::Pipes {
            stdin: stdin.into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
        },
        (None, None) => return Err("runc exec handed over no terminal".into()),
    };
    Ok((pid, io))
}

enum Input {
    Data(Vec<u8>),
    Eof,
}

fn kill(pid: i32, group: bool) {
    use rustix::process::{kill_process, kill_process_group, Pid, Signal};
    if let Some(p) = Pid::from_raw(pid) {
        if group {
            let _ = kill_process_group(p, Signal::KILL);
        }
        let _ = kill_process(p, Signal::KILL);
    }
}

/// Copies one output of the process to the agent until it ends.
fn relay(mut from: std::fs::File, tag: u8, progress: Arc<AtomicU64>, done: mpsc::Sender<()>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                progress.fetch_add(n as u64, Ordering::SeqCst);
                if !emit(tag, &buf[..n]) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: every holder of the terminal's other side closed it.
            Err(_) => break,
        }
    }
    let _ = done.send(());
}

fn run(config: &HelperConfig, dir: &Path) -> ExitCode {
    let (pid, io) = match start(config, dir) {
        Ok(s) => s,
        Err(reason) => {
            log(&reason);
            emit(frame::FAILED, reason.as_bytes());
            return ExitCode::from(1);
        }
    };
    let tty = config.request.tty;
    if !emit(frame::STARTED, &(pid as u32).to_be_bytes()) {
        kill(pid, tty);
    }
    let progress = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    let (input_tx, input_rx) = mpsc::channel::<Input>();
    let mut readers = 0;
    let (writer, resize): (Option<std::fs::File>, Option<std::fs::File>) = match io {
        Io::Tty(master) => {
            let reader = master.try_clone();
            let writer = master.try_clone();
            match (reader, writer) {
                (Ok(r), Ok(w)) => {
                    let (p, d) = (progress.clone(), done_tx.clone());
                    std::thread::spawn(move || relay(r, frame::STDOUT, p, d));
                    readers += 1;
                    (Some(w), Some(master))
                }
                _ => {
                    kill(pid, true);
                    (None, Some(master))
                }
            }
        }
        Io::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            for (file, tag) in [(stdout, frame::STDOUT), (stderr, frame::STDERR)] {
                let (p, d) = (progress.clone(), done_tx.clone());
                std::thread::spawn(move || relay(file, tag, p, d));
                readers += 1;
            }
            (Some(stdin), None)
        }
    };
    drop(done_tx);
    // The input writer: never blocks the control reader.
    std::thread::spawn(move || {
        let mut writer = writer;
        for input in input_rx {
            match input {
                Input::Data(data) => {
                    if let Some(w) = writer.as_mut() {
                        if w.write_all(&data).is_err() {
                            // The process closed its input: later input goes nowhere.
                            writer = None;
                        }
                    }
                    emit(frame::INPUT_TAKEN, &(data.len() as u32).to_be_bytes());
                }
                Input::Eof if tty => {
                    if let Some(w) = writer.as_mut() {
                        let _ = w.write_all(&[0x04]);
                    }
                }
                Input::Eof => writer = None,
            }
        }
    });
    // The control reader: input, sizes, and the end of the session.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            match frame::read(&mut stdin) {
                Ok(Some((frame::INPUT, data))) => {
                    let _ = input_tx.send(Input::Data(data));
                }
                Ok(Some((frame::EOF, _))) => {
                    let _ = input_tx.send(Input::Eof);
                }
                Ok(Some((frame::RESIZE, p))) if p.len() == 4 => {
                    let cols = u16::from_be_bytes([p[0], p[1]]);
                    let rows = u16::from_be_bytes([p[2], p[3]]);
                    if let Some(m) = &resize {
                        let _ = rustix::termios::tcsetwinsize(
                            m.as_fd(),
                            rustix::termios::Winsize {
                                ws_row: rows,
                                ws_col: cols,
                                ws_xpixel: 0,
                                ws_ypixel: 0,
                            },
                        );
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    // The session is over (or the agent died): the process goes too.
                    kill(pid, tty);
                    return;
                }
            }
        }
    });
    let code = wait_for(pid);
    // Drain what the process left in its pipes or terminal.
    let began = Instant::now();
    let mut last = progress.load(Ordering::SeqCst);
    let mut quiet_since = Instant::now();
    while readers > 0 && began.elapsed() < DRAIN_MAX {
        match done_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(()) => readers -= 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = progress.load(Ordering::SeqCst);
                if now != last {
                    last = now;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() > DRAIN_QUIET {
                    break;
                }
            }
        }
    }
    emit(frame::EXIT, &code.to_be_bytes());
    ExitCode::SUCCESS
}

/// Waits for `pid`, re-parented to this subreaper, reaping every other child meanwhile.
fn wait_for(pid: i32) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log(&format!(
                    "waitpid: {e}; polling pid {pid}, its exit code will be unknown"
                ));
                let ticks = super::state::proc_start_ticks(pid).unwrap_or(0);
                while super::state::process_alive(pid, ticks) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return -1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut bytes = frame::encode(frame::INPUT, b"ls\r");
        bytes.extend(frame::encode(frame::EOF, b""));
        let mut r = std::io::Cursor::new(bytes);
        assert_eq!(
            frame::read(&mut r).unwrap(),
            Some((frame::INPUT, b"ls\r".to_vec()))
        );
        assert_eq!(frame::read(&mut r).unwrap(), Some((frame::EOF, vec![])));
        assert_eq!(frame::read(&mut r).unwrap(), None);
        let mut cut = std::io::Cursor::new(frame::encode(frame::INPUT, b"abc")[..6].to_vec());
        assert!(frame::read(&mut cut).is_err());
        let mut huge = std::io::Cursor::new(vec![b'I', 0xff, 0xff, 0xff, 0xff]);
        assert!(frame::read(&mut huge).is_err());
    }

    #[test]
    fn the_process_is_the_containers_with_the_sessions_command() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","process":{"terminal":false,"user":{"uid":1000,"gid":1000},
               "args":["nginx"],"env":["PATH=/bin","A=1"],"cwd":"/srv","noNewPrivileges":true}}"#,
        )
        .unwrap();
        let req = ExecRequest {
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            tty: true,
            cols: 120,
            rows: 40,
        };
        let p = process_json(dir.path(), &req).unwrap();
        assert_eq!(p["args"], serde_json::json!(["sh", "-c", "echo hi"]));
        assert_eq!(p["terminal"], true);
        assert_eq!(
            p["consoleSize"],
            serde_json::json!({"height": 40, "width": 120})
        );
        assert_eq!(
            p["env"],
            serde_json::json!(["PATH=/bin", "A=1", "TERM=xterm"])
        );
        assert_eq!(p["user"]["uid"], 1000);
        assert_eq!(p["cwd"], "/srv");
        assert_eq!(p["noNewPrivileges"], true);
        let p = process_json(dir.path(), &ExecRequest { tty: false, ..req }).unwrap();
        assert_eq!(p["terminal"], false);
        assert!(p.get("consoleSize").is_none());
        assert_eq!(p["env"], serde_json::json!(["PATH=/bin", "A=1"]));
        assert!(process_json(
            &dir.path().join("nope"),
            &ExecRequest {
                argv: vec![],
                tty: false,
                cols: 0,
                rows: 0
            }
        )
        .is_err());
    }
}

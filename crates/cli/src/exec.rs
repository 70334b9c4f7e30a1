//! `berth exec`: run a command inside a task's running container.
//!
//! It calls `ExecuteCommand` (SigV4-signed), then opens the session's berth stream
//! (`/berth/v1/exec/<session>`, the session token as bearer; framing in
//! `berth_server::exec::native`). The arguments after `--` are quoted into ExecuteCommand's
//! one `command` string so that the server's shell-word split gives them back unchanged.
//!
//! * `-i` passes standard input; without it the process's input is closed at once.
//! * `-t` runs the command on a terminal: the local terminal goes to raw mode (every key,
//!   Ctrl-C and Ctrl-D included, goes to the remote side as a byte), window size changes
//!   (SIGWINCH) follow, and the terminal is restored on every way out.
//! * Without `-t` stdout and stderr stay apart.
//!
//! The exit status is the remote command's; 126 when it could not run, 127 when it was not
//! found, 255 when berth exec itself failed (refused, unreachable, cut off).

use crate::client::{Client, EndpointArgs};
use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use std::io::{IsTerminal as _, Read as _, Write as _};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

/// Exit status when berth exec itself fails.
pub const FAILED: u8 = 255;

#[derive(clap::Args)]
pub struct ExecArgs {
    /// The task: its ID or ARN.
    task: String,
    /// The cluster (name or ARN).
    #[arg(long, default_value = "default")]
    cluster: String,
    /// The container to run in (needed when the task has several).
    #[arg(long)]
    container: Option<String>,
    /// Pass standard input to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Run the command on a terminal (raw mode locally, window size followed).
    #[arg(short, long)]
    tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

/// The local terminal in raw mode, restored when dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<Self> {
        use rustix::termios::{tcgetattr, tcsetattr, OptionalActions};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw)
            .context("cannot put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// The local terminal's size, columns and rows.
fn terminal_size() -> Option<(u16, u16)> {
    [
        rustix::termios::tcgetwinsize(std::io::stdout()),
        rustix::termios::tcgetwinsize(std::io::stdin()),
    ]
    .into_iter()
    .flatten()
    .find(|w| w.ws_col > 0 && w.ws_row > 0)
    .map(|w| (w.ws_col, w.ws_row))
}

/// Runs `berth exec`; returns the exit status to leave with.
pub async fn run(args: ExecArgs) -> u8 {
    match session(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth exec: {e:#}");
            FAILED
        }
    }
}

async fn session(args: ExecArgs) -> anyhow::Result<u8> {
    if args.tty && !std::io::stdin().is_terminal() {
        anyhow::bail!("-t needs a terminal on standard input");
    }
    let client = Client::new(&args.endpoint)?;
    let mut body = json!({
        "cluster": args.cluster,
        "task": args.task,
        "command": berth_protocol::words::quote(&args.command),
        "interactive": true,
    });
    if let Some(c) = &args.container {
        body["container"] = json!(c);
    }
    let answer = client.ecs("ExecuteCommand", &body).await?;
    let session_id = answer["session"]["sessionId"]
        .as_str()
        .context("ExecuteCommand answered no session")?;
    let token = answer["session"]["tokenValue"]
        .as_str()
        .context("ExecuteCommand answered no token")?;
    let (cols, rows) = if args.tty {
        terminal_size().unwrap_or((80, 24))
    } else {
        (80, 24)
    };
    let url = format!(
        "{}/berth/v1/exec/{session_id}?tty={}&cols={cols}&rows={rows}",
        client.endpoint().replacen("http", "ws", 1),
        args.tty
    );
    let mut request = url.into_client_request().context("bad stream URL")?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().context("bad token")?,
    );
    let (mut ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(c) => c,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body: serde_json::Value = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            anyhow::bail!(
                "the stream was refused ({}): {}",
                resp.status(),
                body["message"].as_str().unwrap_or("")
            );
        }
        Err(e) => return Err(e).context("cannot open the exec stream"),
    };
    // Input: a plain thread (a blocked read of the terminal must not hold the runtime).
    let (input_tx, mut input_rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(16);
    if args.interactive {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = input_tx.blocking_send(None);
                        return;
                    }
                    Ok(n) => {
                        if input_tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        drop(input_tx);
        ws.send(Message::Text(json!({"type": "eof"}).to_string().into()))
            .await?;
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut winch = signal(SignalKind::window_change()).ok();
    // Asked to stop: leave through the front door, so the terminal is restored.
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    // From here on the terminal is raw; the guard restores it on every way out.
    let raw = if args.tty {
        Some(RawMode::enter()?)
    } else {
        None
    };
    // Sending has a task of its own, so output keeps being read while input waits for the
    // server (whose window is full until the process reads): no deadlock on a big `cat`.
    let (mut sink, mut ws) = ws.split();
    let (send_tx, mut send_rx) = tokio::sync::mpsc::channel::<Message>(8);
    let sender = tokio::spawn(async move {
        while let Some(m) = send_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut pending: Option<Message> = None;
    let mut input_open = args.interactive;
    let mut exit: Option<(Option<i32>, Option<String>, bool)> = None;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Binary(b))) => match b.split_first() {
                    Some((&1, data)) => {
                        let _ = stdout.write_all(data);
                        let _ = stdout.flush();
                    }
                    Some((&2, data)) => {
                        let _ = stderr.write_all(data);
                        let _ = stderr.flush();
                    }
                    _ => {}
                },
                Some(Ok(Message::Text(text))) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if v["type"] == "exit" {
                        exit = Some((
                            v["exitCode"].as_i64().map(|c| c as i32),
                            v["error"].as_str().map(str::to_string),
                            v["cutOff"] == true,
                        ));
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            input = input_rx.recv(), if input_open && pending.is_none() => match input {
                Some(Some(data)) => {
                    let mut frame = Vec::with_capacity(data.len() + 1);
                    frame.push(0u8);
                    frame.extend_from_slice(&data);
                    pending = Some(Message::Binary(frame.into()));
                }
                Some(None) | None => {
                    input_open = false;
                    pending = Some(Message::Text(json!({"type": "eof"}).to_string().into()));
                }
            },
            permit = send_tx.reserve(), if pending.is_some() => match (permit, pending.take()) {
                (Ok(permit), Some(m)) => permit.send(m),
                _ => break,
            },
            _ = term.recv() => break,
            _ = hup.recv() => break,
            Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => std::future::pending().await } }, if args.tty => {
                if let Some((cols, rows)) = terminal_size() {
                    let m = json!({"type": "resize", "cols": cols, "rows": rows});
                    let _ = send_tx.try_send(Message::Text(m.to_string().into()));
                }
            }
        }
    }
    drop(send_tx);
    sender.abort();
    drop(raw);
    match exit {
        Some((Some(code), _, _)) => Ok(code.clamp(0, 255) as u8),
        Some((None, error, true)) => anyhow::bail!(
            "{}",
            error.unwrap_or_else(|| "the session was cut off".into())
        ),
        Some((None, Some(error), false)) => {
            eprintln!("berth exec: {error}");
            let lower = error.to_lowercase();
            Ok(
                if lower.contains("not found") || lower.contains("no such file") {
                    127
                } else {
                    126
                },
            )
        }
        _ => anyhow::bail!("the exec stream ended without an exit status"),
    }
}

//! Exec sessions on the agent's side: one exec helper ([`crate::runtime::exec`]) per session,
//! its frames turned into protocol messages and back.
//!
//! Sessions belong to one connection to the server: [`Sessions`] is made per connection and,
//! when the connection ends, dropping it ends every session (the helpers see their stdin
//! close and kill their processes). The agent serves nothing else: there is no shell of its
//! own and no listening socket; `runc exec` inside a task's container is the only way in.

use crate::runtime::exec::frame;
use crate::runtime::{ExecRequest, Runtime, RuntimeError};
use berth_protocol::{AgentMessage, ExecStart, ExecStream, ServerMessage, EXEC_WINDOW};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How long a helper has to exit once its session ended, before it is killed.
const HELPER_GRACE: Duration = Duration::from_secs(5);

enum Control {
    Input(Vec<u8>),
    Resize(u16, u16),
    Eof,
    Ack(u64),
    Close,
}

/// The exec sessions of one connection.
pub struct Sessions {
    runtime: Arc<dyn Runtime>,
    out: UnboundedSender<AgentMessage>,
    open: Mutex<HashMap<String, UnboundedSender<Control>>>,
    me: Weak<Sessions>,
}

impl Sessions {
    pub fn new(runtime: Arc<dyn Runtime>, out: UnboundedSender<AgentMessage>) -> Arc<Self> {
        Arc::new_cyclic(|me| Sessions {
            runtime,
            out,
            open: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// Takes an exec message of the server; false when `m` is not one.
    pub fn handle(&self, m: ServerMessage) -> bool {
        let (session, control) = match m {
            ServerMessage::ExecStart(start) => {
                self.start(start);
                return true;
            }
            ServerMessage::ExecInput { session, data } => (session, Control::Input(data)),
            ServerMessage::ExecResize {
                session,
                cols,
                rows,
            } => (session, Control::Resize(cols, rows)),
            ServerMessage::ExecEof { session } => (session, Control::Eof),
            ServerMessage::ExecAck { session, bytes } => (session, Control::Ack(bytes)),
            ServerMessage::ExecClose { session } => (session, Control::Close),
            _ => return false,
        };
        if let Ok(open) = self.open.lock() {
            if let Some(tx) = open.get(&session) {
                let _ = tx.send(control);
            }
        }
        true
    }

    fn start(&self, start: ExecStart) {
        let (tx, rx) = unbounded_channel();
        match self.open.lock() {
            Ok(mut open) if !open.contains_key(&start.session) => {
                open.insert(start.session.clone(), tx);
            }
            _ => {
                tracing::warn!(session = start.session, "exec session already open");
                return;
            }
        }
        tracing::info!(
            session = start.session,
            task = start.task_arn,
            container = start.container,
            tty = start.tty,
            "exec session starting"
        );
        let runtime = self.runtime.clone();
        let out = self.out.clone();
        let me = self.me.clone();
        tokio::spawn(async move {
            let session = start.session.clone();
            run(start, runtime, out, rx).await;
            if let Some(me) = me.upgrade() {
                if let Ok(mut open) = me.open.lock() {
                    open.remove(&session);
                }
            }
            tracing::info!(session, "exec session ended");
        });
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        // Every session's control channel closes: each helper is told to end.
        if let Ok(mut open) = self.open.lock() {
            open.clear();
        }
    }
}

fn refusal(e: &RuntimeError) -> String {
    match e {
        RuntimeError::NotRunning(_) | RuntimeError::NotFound(_) => {
            "the container is not running".to_string()
        }
        other => other.to_string(),
    }
}

async fn run(
    start: ExecStart,
    runtime: Arc<dyn Runtime>,
    out: UnboundedSender<AgentMessage>,
    mut control: UnboundedReceiver<Control>,
) {
    let session = start.session.clone();
    let exit = |exit_code: Option<i32>, error: Option<String>| {
        let _ = out.send(AgentMessage::ExecExit {
            session: session.clone(),
            exit_code,
            error,
        });
    };
    let id = crate::supervisor::runtime_id(&start.task_arn, &start.container);
    let request = ExecRequest {
        argv: start.command,
        tty: start.tty,
        cols: start.cols,
        rows: start.rows,
    };
    let rt = runtime.clone();
    let cmd = match tokio::task::spawn_blocking(move || rt.exec_helper(&id, &request)).await {
        Ok(Ok(cmd)) => cmd,
        Ok(Err(e)) => return exit(None, Some(refusal(&e))),
        Err(_) => return exit(None, Some("internal error".into())),
    };
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return exit(None, Some(format!("cannot start the exec helper: {e}"))),
    };
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill().await;
        return exit(None, Some("the exec helper has no pipes".into()));
    };
    let credit = Arc::new(tokio::sync::Semaphore::new(EXEC_WINDOW as usize));
    let mut reader = tokio::spawn(relay(stdout, session.clone(), out.clone(), credit.clone()));
    let mut reader_done = false;
    loop {
        tokio::select! {
            _ = &mut reader, if !reader_done => {
                reader_done = true;
                break;
            }
            c = control.recv() => {
                let bytes = match c {
                    Some(Control::Input(data)) => frame::encode(frame::INPUT, &data),
                    Some(Control::Resize(cols, rows)) => {
                        let mut p = cols.to_be_bytes().to_vec();
                        p.extend_from_slice(&rows.to_be_bytes());
                        frame::encode(frame::RESIZE, &p)
                    }
                    Some(Control::Eof) => frame::encode(frame::EOF, b""),
                    Some(Control::Ack(n)) => {
                        credit.add_permits(n.min(EXEC_WINDOW) as usize);
                        continue;
                    }
                    Some(Control::Close) | None => break,
                };
                if stdin.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        }
    }
    // Closing the helper's stdin makes it kill the process (if it still runs) and exit.
    drop(stdin);
    if tokio::time::timeout(HELPER_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(session, "the exec helper did not exit; killing it");
        let _ = child.kill().await;
    }
    if !reader_done {
        // Ended early: what the helper still reports (its exit) goes out, without waiting
        // for credit that will not come.
        credit.close();
        if tokio::time::timeout(Duration::from_secs(1), &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
}

/// The helper's frames → messages to the server, within the output window.
async fn relay(
    mut from: tokio::process::ChildStdout,
    session: String,
    out: UnboundedSender<AgentMessage>,
    credit: Arc<tokio::sync::Semaphore>,
) {
    let send = |m: AgentMessage| {
        let _ = out.send(m);
    };
    loop {
        let mut head = [0u8; 5];
        if from.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > frame::MAX {
            break;
        }
        let mut data = vec![0u8; len];
        if from.read_exact(&mut data).await.is_err() {
            break;
        }
        match head[0] {
            frame::STARTED => send(AgentMessage::ExecStarted {
                session: session.clone(),
            }),
            tag @ (frame::STDOUT | frame::STDERR) => {
                // Wait for credit: the server returns it as the client takes the bytes.
                match credit.acquire_many(data.len() as u32).await {
                    Ok(p) => p.forget(),
                    // The session ended: nobody takes output any more.
                    Err(_) => continue,
                }
                send(AgentMessage::ExecOutput {
                    session: session.clone(),
                    stream: if tag == frame::STDOUT {
                        ExecStream::Stdout
                    } else {
                        ExecStream::Stderr
                    },
                    data,
                });
            }
            frame::INPUT_TAKEN if data.len() == 4 => send(AgentMessage::ExecInputAck {
                session: session.clone(),
                bytes: u64::from(u32::from_be_bytes([data[0], data[1], data[2], data[3]])),
            }),
            frame::EXIT if data.len() == 4 => {
                return send(AgentMessage::ExecExit {
                    session: session.clone(),
                    exit_code: Some(i32::from_be_bytes([data[0], data[1], data[2], data[3]])),
                    error: None,
                });
            }
            frame::FAILED => {
                return send(AgentMessage::ExecExit {
                    session: session.clone(),
                    exit_code: None,
                    error: Some(String::from_utf8_lossy(&data).into_owned()),
                });
            }
            _ => {}
        }
    }
    send(AgentMessage::ExecExit {
        session,
        exit_code: None,
        error: Some("the exec helper ended without an exit status".into()),
    });
}

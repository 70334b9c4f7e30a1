//! The agent gateway: one WebSocket per instance, opened by its agent.
//!
//! The upgrade request names the instance (`x-berth-instance-id`) and carries
//! a bearer secret: the one-time join token on first contact, the issued
//! credential afterwards. Agent secrets only open this endpoint; they are
//! never accepted by the ECS API.

use crate::api::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_control::agents::{self, Admission};
use berth_control::AgentLink;
use berth_protocol::{AgentMessage, ServerMessage, INSTANCE_HEADER, VERSION};
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a new connection has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Connected agents: instance id → the sender of its connection.
#[derive(Default)]
pub struct Hub {
    next: AtomicU64,
    senders: Mutex<HashMap<String, (u64, mpsc::UnboundedSender<ServerMessage>)>>,
}

impl Hub {
    fn attach(&self, instance_id: &str, tx: mpsc::UnboundedSender<ServerMessage>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut s) = self.senders.lock() {
            s.insert(instance_id.to_string(), (id, tx));
        }
        id
    }

    /// Detaches a connection unless a newer one of the same instance replaced it.
    fn detach(&self, instance_id: &str, conn: u64) -> bool {
        match self.senders.lock() {
            Ok(mut s) if s.get(instance_id).is_some_and(|(c, _)| *c == conn) => {
                s.remove(instance_id);
                true
            }
            _ => false,
        }
    }

    /// Whether the instance's agent is connected now.
    pub fn is_connected(&self, instance_id: &str) -> bool {
        self.senders
            .lock()
            .map(|s| s.contains_key(instance_id))
            .unwrap_or(false)
    }

    pub fn connected(&self) -> Vec<String> {
        self.senders
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl AgentLink for Hub {
    fn send(&self, instance_id: &str, message: ServerMessage) -> bool {
        match self.senders.lock() {
            Ok(s) => s
                .get(instance_id)
                .is_some_and(|(_, tx)| tx.send(message).is_ok()),
            Err(_) => false,
        }
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, serde_json::json!({"message": message}).to_string()).into_response()
}

pub async fn connect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let instance_id = headers
        .get(INSTANCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    if instance_id.is_empty() || bearer.is_empty() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "an agent must name its instance and present its token",
        );
    }
    let ctx = state.ctx.clone();
    let id = instance_id.clone();
    let admission = tokio::task::spawn_blocking(move || agents::admit(&ctx, &id, &bearer)).await;
    let admission = match admission {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::warn!(instance_id, error = %e.message, "agent refused");
            return refuse(StatusCode::UNAUTHORIZED, &e.message);
        }
        Err(_) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    };
    ws.on_upgrade(move |socket| serve(state, instance_id, admission, socket))
}

async fn send(socket: &mut WebSocket, m: &ServerMessage) -> bool {
    match serde_json::to_string(m) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn serve(
    state: Arc<AppState>,
    instance_id: String,
    admission: Admission,
    mut socket: WebSocket,
) {
    // The first message must be a hello.
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, socket.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<AgentMessage>(&text) {
            Ok(AgentMessage::Hello(h)) if h.instance_id == instance_id && h.protocol == VERSION => {
                h
            }
            Ok(AgentMessage::Hello(h)) if h.protocol != VERSION => {
                let reason = format!(
                    "protocol {} is not supported; this server speaks {VERSION}",
                    h.protocol
                );
                send(&mut socket, &ServerMessage::Goodbye { reason }).await;
                return;
            }
            _ => {
                send(
                    &mut socket,
                    &ServerMessage::Goodbye {
                        reason: "expected a hello".into(),
                    },
                )
                .await;
                return;
            }
        },
        _ => return,
    };
    let ctx = state.ctx.clone();
    let registered = tokio::task::spawn_blocking(move || agents::hello(&ctx, &hello)).await;
    let (arn, generation, tasks) = match registered {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            send(&mut socket, &ServerMessage::Goodbye { reason: e.message }).await;
            return;
        }
        Err(_) => return,
    };
    let credential = match admission {
        Admission::Joined { credential } => Some(credential),
        Admission::Known => None,
    };
    if !send(
        &mut socket,
        &ServerMessage::Welcome {
            container_instance_arn: arn,
            credential,
        },
    )
    .await
    {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = state.hub.attach(&instance_id, tx);
    if let Some(s) = state.scheduler() {
        s.forget(&instance_id);
    }
    tracing::info!(instance_id, "agent connected");
    let first = ServerMessage::Desired { generation, tasks };
    let mut alive = send(&mut socket, &first).await;
    state.wake.notify_one();
    while alive {
        tokio::select! {
            out = rx.recv() => match out {
                Some(m) => alive = send(&mut socket, &m).await,
                None => alive = false,
            },
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Text(text))) => handle(&state, &instance_id, &text).await,
                Some(Ok(Message::Ping(p))) => alive = socket.send(Message::Pong(p)).await.is_ok(),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => alive = false,
                Some(Ok(_)) => {}
            },
        }
    }
    if state.hub.detach(&instance_id, conn) {
        // Its exec sessions end with the connection.
        state.exec.agent_gone(&instance_id);
        let ctx = state.ctx.clone();
        let id = instance_id.clone();
        let _ = tokio::task::spawn_blocking(move || agents::disconnected(&ctx, &id)).await;
        tracing::info!(instance_id, "agent disconnected");
    }
}

async fn handle(state: &Arc<AppState>, instance_id: &str, text: &str) {
    let msg = match serde_json::from_str::<AgentMessage>(text) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(instance_id, error = %e, "unreadable agent message");
            return;
        }
    };
    match msg {
        AgentMessage::Hello(_) | AgentMessage::Heartbeat { .. } => {}
        AgentMessage::TaskUpdate(report) => {
            let ctx = state.ctx.clone();
            let id = instance_id.to_string();
            match tokio::task::spawn_blocking(move || agents::report(&ctx, &id, &report)).await {
                Ok(Ok(true)) => state.wake.notify_one(),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(instance_id, error = %e.message, "task report not applied")
                }
                Err(_) => {}
            }
        }
        AgentMessage::Logs(batch) => state.logs.append(&batch),
        m @ (AgentMessage::ExecStarted { .. }
        | AgentMessage::ExecOutput { .. }
        | AgentMessage::ExecInputAck { .. }
        | AgentMessage::ExecExit { .. }) => {
            state.exec.from_agent(instance_id, &m);
        }
    }
}

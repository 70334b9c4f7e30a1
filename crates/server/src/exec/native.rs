//! berth's own exec stream, for `berth exec`: `GET /berth/v1/exec/{session}` upgraded to a
//! WebSocket, with the session's token in `Authorization: Bearer <token>` (the token came from
//! a SigV4-signed `ExecuteCommand`). Query: `tty` (`true`/`false`), `cols`, `rows`.
//!
//! Frames, both ways:
//!
//! * binary: one tag byte, then bytes. Client → server: tag 0, standard input (or
//!   keystrokes). Server → client: tag 1 stdout, tag 2 stderr (a terminal has only 1).
//! * text: one JSON object. Client → server: `{"type":"resize","cols":C,"rows":R}`,
//!   `{"type":"eof"}` (input ended). Server → client: `{"type":"started"}`, then last
//!   `{"type":"exit","exitCode":N}` — `exitCode` null and `error` set when the process could
//!   not run, and `cutOff` true as well when the session was cut off (agent gone, idle) —
//!   and a close frame.
//!
//! A refused token is an HTTP error before the upgrade: 404 for an unknown session, 403
//! otherwise, with `{"__type":…,"message":…}`.

use super::{AgentEvent, Attachment};
use crate::api::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_protocol::ExecStream;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Where `berth exec` connects: this, then the session id.
pub const PATH_PREFIX: &str = "/berth/v1/exec/";

pub const TAG_STDIN: u8 = 0;
pub const TAG_STDOUT: u8 = 1;
pub const TAG_STDERR: u8 = 2;

#[derive(Debug, Deserialize)]
pub struct StreamParams {
    #[serde(default)]
    tty: bool,
    cols: Option<u16>,
    rows: Option<u16>,
}

fn refuse(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        serde_json::json!({"__type": kind, "message": message}).to_string(),
    )
        .into_response()
}

pub async fn connect(
    State(state): State<Arc<AppState>>,
    Path(session): Path<String>,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if token.is_empty() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "MissingAuthenticationTokenException",
            "An exec stream needs the session's token in Authorization: Bearer.",
        );
    }
    let info = match state.exec.redeem(&session, token) {
        Ok(info) => info,
        Err(r) => {
            let status = if r == super::Refusal::UnknownSession {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            };
            let message = r.message(state.exec.config().token_ttl);
            tracing::info!(session, reason = message, "exec stream refused");
            return refuse(status, r.kind(), &message);
        }
    };
    let attachment = state.exec.attach(info, state.hub.clone());
    ws.on_upgrade(move |socket| serve(attachment, params, socket))
}

async fn send_json(socket: &mut WebSocket, v: serde_json::Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

async fn serve(mut attachment: Attachment, params: StreamParams, mut socket: WebSocket) {
    tracing::info!(
        session = attachment.info.session_id,
        tty = params.tty,
        "exec stream attached (berth)"
    );
    let (cols, rows) = (
        params.cols.unwrap_or(80).max(1),
        params.rows.unwrap_or(24).max(1),
    );
    if !attachment.start(params.tty, cols, rows) {
        send_json(
            &mut socket,
            serde_json::json!({"type": "exit", "exitCode": null, "cutOff": true,
                               "error": "The instance's agent is not connected."}),
        )
        .await;
        let _ = socket.close().await;
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let take_input = attachment.can_take_input();
        tokio::select! {
            incoming = socket.next(), if take_input => match incoming {
                Some(Ok(Message::Binary(b))) => {
                    if let Some((&TAG_STDIN, data)) = b.split_first() {
                        attachment.input(data.to_vec());
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    match v.get("type").and_then(|t| t.as_str()) {
                        Some("resize") => {
                            let dim = |k: &str| v.get(k).and_then(|n| n.as_u64()).map(|n| n.clamp(1, u64::from(u16::MAX)) as u16);
                            if let (Some(c), Some(r)) = (dim("cols"), dim("rows")) {
                                attachment.resize(c, r);
                            }
                        }
                        Some("eof") => attachment.eof(),
                        _ => {}
                    }
                }
                Some(Ok(Message::Ping(p))) => {
                    if socket.send(Message::Pong(p)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    attachment.finish(None, Some("The client went away.".into()));
                    break;
                }
            },
            event = attachment.next() => match event {
                AgentEvent::InputTaken => {}
                AgentEvent::Started => {
                    if !send_json(&mut socket, serde_json::json!({"type": "started"})).await {
                        break;
                    }
                }
                AgentEvent::Output(stream, data) => {
                    let n = data.len() as u64;
                    let mut frame = Vec::with_capacity(data.len() + 1);
                    frame.push(match stream {
                        ExecStream::Stdout => TAG_STDOUT,
                        ExecStream::Stderr => TAG_STDERR,
                    });
                    frame.extend_from_slice(&data);
                    if socket.send(Message::Binary(frame.into())).await.is_err() {
                        attachment.finish(None, Some("The client went away.".into()));
                        break;
                    }
                    attachment.delivered(n);
                }
                AgentEvent::Exit { code, error } => {
                    send_json(&mut socket, serde_json::json!({"type": "exit", "exitCode": code, "error": error})).await;
                    let _ = socket.close().await;
                    break;
                }
                AgentEvent::AgentGone => {
                    send_json(&mut socket, serde_json::json!({"type": "exit", "exitCode": null, "cutOff": true,
                        "error": "The instance's agent disconnected."})).await;
                    let _ = socket.close().await;
                    break;
                }
            },
            _ = tick.tick() => {
                if attachment.idle_expired() {
                    let error = attachment.idle_message();
                    attachment.finish(None, Some(error.clone()));
                    send_json(&mut socket, serde_json::json!({"type": "exit", "exitCode": null, "cutOff": true, "error": error})).await;
                    let _ = socket.close().await;
                    break;
                }
            }
        }
    }
}

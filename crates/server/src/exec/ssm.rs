//! AWS's session-manager data channel on `streamUrl`, so that `aws ecs execute-command`
//! with the unmodified `session-manager-plugin` opens shells in berth containers.
//!
//! The wire protocol is described in `shared/design/ssm-data-channel.md`; in short:
//!
//! * An unsigned WebSocket upgrade; the first frame is a text frame of JSON
//!   (`OpenDataChannel`) whose `TokenValue` is checked ([`super::ExecHub::redeem`]). A
//!   refused token gets a `channel_closed` whose `Output` says why.
//! * Then binary [`ClientMessage`]s only, both ways: `output_stream_data` from here, with
//!   sequence numbers from 0 (the HandshakeRequest is 0, the HandshakeComplete 1, output
//!   follows), kept until the client acknowledges it and re-sent every
//!   [`RESEND_AFTER`] meanwhile (the client drops output that arrives before its handler
//!   is ready); `input_stream_data` from the client, each one acknowledged (duplicates too),
//!   processed in sequence order, duplicates dropped, early ones held until the gap fills.
//! * The process starts after the handshake, with the client's first terminal size
//!   (payload type 3; 80×24 when none comes within [`SIZE_WAIT`]); later sizes resize.
//!   Keystrokes (payload type 1) are bytes on the terminal: `^C` is byte 3, and so on. Flag
//!   2 (TerminateSession) ends the session.
//! * The process's exit, once every output message is acknowledged (at most [`CLOSE_WAIT`]),
//!   sends `channel_closed`; the plugin then prints its goodbye and exits (always 0: the exit
//!   code is not part of this protocol; `berth exec` reports it).
//!
//! Not supported: KMS encryption of the channel (`ExecuteCommand` refuses a cluster that
//! asks for it), `ResumeSession` reconnects (a dropped connection ends the session), port
//! forwarding sessions.

use super::{AgentEvent, Attachment};
use crate::api::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use futures_util::StreamExt as _;
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The fixed header length written in every message (the offset of PayloadLength).
pub const HEADER_LENGTH: u32 = 116;
/// Header plus the payload length field.
const PREFIX: usize = 120;

pub const INPUT_STREAM_DATA: &str = "input_stream_data";
pub const OUTPUT_STREAM_DATA: &str = "output_stream_data";
pub const ACKNOWLEDGE: &str = "acknowledge";
pub const CHANNEL_CLOSED: &str = "channel_closed";

/// Payload types.
pub mod payload {
    pub const OUTPUT: u32 = 1;
    pub const SIZE: u32 = 3;
    pub const HANDSHAKE_REQUEST: u32 = 5;
    pub const HANDSHAKE_RESPONSE: u32 = 6;
    pub const HANDSHAKE_COMPLETE: u32 = 7;
    pub const FLAG: u32 = 10;
}

/// Flag 2 of payload type 10: the client ends the session.
pub const FLAG_TERMINATE_SESSION: u32 = 2;

/// Unacknowledged output is sent again after this long.
pub const RESEND_AFTER: Duration = Duration::from_millis(300);
/// How long the process waits for the client's first terminal size.
pub const SIZE_WAIT: Duration = Duration::from_secs(2);
/// How long the end of a session waits for the client to acknowledge the last output.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long the client has to send its opening frame.
const OPEN_WAIT: Duration = Duration::from_secs(30);
/// The largest output payload in one message.
const OUTPUT_CHUNK: usize = 4096;
/// Input messages held for a gap in the sequence, at most.
const MAX_EARLY: usize = 10_000;
/// Input waiting for the agent's window, at most, before the socket is read no more.
const MAX_PENDING_INPUT: usize = 4 << 20;
/// The agent version announced: four numbers, above every version the plugin gates on.
pub const AGENT_VERSION: &str = "3.3.40.0";

/// One message of the data channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub message_type: String,
    pub schema_version: u32,
    /// Unix epoch milliseconds.
    pub created_date: u64,
    pub sequence_number: i64,
    pub flags: u64,
    pub message_id: uuid::Uuid,
    pub payload_type: u32,
    pub payload: Vec<u8>,
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooShort(usize),
    HeaderLength,
    MessageType,
    CreatedDate,
    Digest,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooShort(n) => {
                write!(f, "a message of {n} bytes is shorter than its header")
            }
            DecodeError::HeaderLength => f.write_str("the header length is 0 or past the end"),
            DecodeError::MessageType => f.write_str("the message type is empty"),
            DecodeError::CreatedDate => f.write_str("the creation date is 0"),
            DecodeError::Digest => f.write_str("the payload digest does not match"),
        }
    }
}

impl ClientMessage {
    /// A message created now with a fresh id.
    pub fn new(
        message_type: &str,
        sequence_number: i64,
        payload_type: u32,
        payload: Vec<u8>,
    ) -> Self {
        let created_date = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1)
            .max(1);
        ClientMessage {
            message_type: message_type.to_string(),
            schema_version: 1,
            created_date,
            sequence_number,
            flags: 0,
            message_id: uuid::Uuid::new_v4(),
            payload_type,
            payload,
        }
    }

    /// The wire bytes: big-endian integers, the type padded with spaces, the id's halves
    /// swapped, the payload's SHA-256.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREFIX + self.payload.len());
        out.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
        let mut kind = [b' '; 32];
        let name = self.message_type.as_bytes();
        let n = name.len().min(32);
        kind[..n].copy_from_slice(&name[..n]);
        out.extend_from_slice(&kind);
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.created_date.to_be_bytes());
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        let id = self.message_id.as_bytes();
        out.extend_from_slice(&id[8..16]);
        out.extend_from_slice(&id[0..8]);
        out.extend_from_slice(&sha2::Sha256::digest(&self.payload));
        out.extend_from_slice(&self.payload_type.to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads a message as the plugin does: fields at fixed offsets, the payload from
    /// `HeaderLength + 4` to the end, checked against its digest.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < PREFIX {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        let u32_at =
            |o: usize| u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_be_bytes(b)
        };
        let header_length = u32_at(0) as usize;
        if header_length == 0 || header_length + 4 > bytes.len() {
            return Err(DecodeError::HeaderLength);
        }
        let message_type = String::from_utf8_lossy(&bytes[4..36])
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string();
        let created_date = u64_at(40);
        let mut id = [0u8; 16];
        id[8..16].copy_from_slice(&bytes[64..72]);
        id[0..8].copy_from_slice(&bytes[72..80]);
        let payload_length = u32_at(116);
        let payload = bytes[header_length + 4..].to_vec();
        let exempt = message_type == "start_publication" || message_type == "pause_publication";
        if !exempt {
            if message_type.is_empty() {
                return Err(DecodeError::MessageType);
            }
            if created_date == 0 {
                return Err(DecodeError::CreatedDate);
            }
            if payload_length != 0 && sha2::Sha256::digest(&payload)[..] != bytes[80..112] {
                return Err(DecodeError::Digest);
            }
        }
        Ok(ClientMessage {
            message_type,
            schema_version: u32_at(36),
            created_date,
            sequence_number: u64_at(48) as i64,
            flags: u64_at(56),
            message_id: uuid::Uuid::from_bytes(id),
            payload_type: u32_at(112),
            payload,
        })
    }
}

/// The acknowledgement of `m`, as the plugin builds it.
pub fn acknowledge(m: &ClientMessage) -> ClientMessage {
    let body = serde_json::json!({
        "AcknowledgedMessageType": m.message_type,
        "AcknowledgedMessageId": m.message_id.to_string(),
        "AcknowledgedMessageSequenceNumber": m.sequence_number,
        "IsSequentialMessage": true,
    });
    let mut ack = ClientMessage::new(ACKNOWLEDGE, 0, 0, body.to_string().into_bytes());
    ack.flags = 3;
    ack
}

/// The `channel_closed` message; `output` is what the plugin prints (empty: its goodbye).
pub fn channel_closed(session_id: &str, output: &str) -> ClientMessage {
    let id = uuid::Uuid::new_v4();
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let body = serde_json::json!({
        "MessageId": id.to_string(),
        "CreatedDate": created,
        "DestinationId": session_id,
        "SessionId": session_id,
        "MessageType": CHANNEL_CLOSED,
        "SchemaVersion": 1,
        "Output": output,
    });
    let mut m = ClientMessage::new(CHANNEL_CLOSED, 0, 0, body.to_string().into_bytes());
    m.message_id = id;
    m
}

fn handshake_request() -> Vec<u8> {
    serde_json::json!({
        "AgentVersion": AGENT_VERSION,
        "RequestedClientActions": [{
            "ActionType": "SessionType",
            "ActionParameters": {"SessionType": "InteractiveCommands", "Properties": {}},
        }],
    })
    .to_string()
    .into_bytes()
}

/// `GET /v1/data-channel/{session}`: the plugin's WebSocket.
pub async fn connect(
    State(state): State<Arc<AppState>>,
    Path(session): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| serve(state, session, socket))
}

async fn send(socket: &mut WebSocket, m: &ClientMessage) -> bool {
    socket
        .send(Message::Binary(m.encode().into()))
        .await
        .is_ok()
}

#[derive(PartialEq, Eq)]
enum Phase {
    Handshake,
    /// Waiting for the first size, until the deadline.
    Size(Instant),
    Running,
    /// The process ended: waiting for the last acknowledgements, until the deadline.
    Closing(Instant),
}

/// One data channel: the connection's state.
struct Channel {
    session_id: String,
    out_seq: i64,
    /// Sent output not yet acknowledged: seq → (message bytes, output bytes, last sent).
    unacked: BTreeMap<i64, (Vec<u8>, u64, Instant)>,
    expected_in: i64,
    early: BTreeMap<i64, ClientMessage>,
    pending_input: std::collections::VecDeque<Vec<u8>>,
    pending_bytes: usize,
    phase: Phase,
    began: Instant,
    closing_output: String,
}

impl Channel {
    async fn output(
        &mut self,
        socket: &mut WebSocket,
        payload_type: u32,
        payload: Vec<u8>,
        counted: u64,
    ) -> bool {
        let m = ClientMessage::new(OUTPUT_STREAM_DATA, self.out_seq, payload_type, payload);
        self.out_seq += 1;
        let bytes = m.encode();
        let ok = socket
            .send(Message::Binary(bytes.clone().into()))
            .await
            .is_ok();
        self.unacked
            .insert(m.sequence_number, (bytes, counted, Instant::now()));
        ok
    }
}

async fn serve(state: Arc<AppState>, session_id: String, mut socket: WebSocket) {
    // The opening frame carries the token.
    let token = loop {
        match tokio::time::timeout(OPEN_WAIT, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                break v
                    .get("TokenValue")
                    .and_then(|t| t.as_str())
                    .unwrap_or("")
                    .to_string();
            }
            Ok(Some(Ok(Message::Ping(p)))) => {
                if socket.send(Message::Pong(p)).await.is_err() {
                    return;
                }
            }
            Ok(Some(Ok(Message::Binary(_)))) | Ok(Some(Ok(Message::Pong(_)))) => {}
            _ => return,
        }
    };
    let info = match state.exec.redeem(&session_id, &token) {
        Ok(info) => info,
        Err(refusal) => {
            let message = refusal.message(state.exec.config().token_ttl);
            tracing::info!(
                session = session_id,
                reason = message,
                "exec stream refused"
            );
            send(&mut socket, &channel_closed(&session_id, &message)).await;
            linger(&mut socket).await;
            return;
        }
    };
    let mut attachment = state.exec.attach(info, state.hub.clone());
    tracing::info!(
        session = session_id,
        "exec stream attached (session-manager)"
    );
    let mut ch = Channel {
        session_id: session_id.clone(),
        out_seq: 0,
        unacked: BTreeMap::new(),
        expected_in: 0,
        early: BTreeMap::new(),
        pending_input: Default::default(),
        pending_bytes: 0,
        phase: Phase::Handshake,
        began: Instant::now(),
        closing_output: String::new(),
    };
    if !ch
        .output(
            &mut socket,
            payload::HANDSHAKE_REQUEST,
            handshake_request(),
            0,
        )
        .await
    {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        // Input the agent's window now allows.
        while attachment.can_take_input() && ch.phase == Phase::Running {
            match ch.pending_input.pop_front() {
                Some(data) => {
                    ch.pending_bytes -= data.len();
                    attachment.input(data);
                }
                None => break,
            }
        }
        let read_more = ch.pending_bytes < MAX_PENDING_INPUT;
        tokio::select! {
            incoming = socket.next(), if read_more => match incoming {
                Some(Ok(Message::Binary(bytes))) => {
                    if !on_client_message(&mut ch, &mut attachment, &mut socket, &bytes).await {
                        break;
                    }
                }
                Some(Ok(Message::Ping(p))) => {
                    if socket.send(Message::Pong(p)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Text(_))) | Some(Ok(Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    attachment.finish(None, Some("The client went away.".into()));
                    break;
                }
            },
            event = attachment.next(), if !matches!(ch.phase, Phase::Closing(_)) => match event {
                AgentEvent::Started | AgentEvent::InputTaken => {}
                AgentEvent::Output(_, data) => {
                    for chunk in data.chunks(OUTPUT_CHUNK) {
                        if !ch.output(&mut socket, payload::OUTPUT, chunk.to_vec(), chunk.len() as u64).await {
                            break;
                        }
                    }
                }
                AgentEvent::Exit { error, .. } => {
                    if let Some(e) = error {
                        ch.closing_output = e;
                    }
                    ch.phase = Phase::Closing(Instant::now() + CLOSE_WAIT);
                }
                AgentEvent::AgentGone => {
                    ch.closing_output = "The instance's agent disconnected.".into();
                    ch.phase = Phase::Closing(Instant::now() + CLOSE_WAIT);
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                for (bytes, _, sent) in ch.unacked.values_mut() {
                    if now.duration_since(*sent) >= RESEND_AFTER {
                        *sent = now;
                        if socket.send(Message::Binary(bytes.clone().into())).await.is_err() {
                            break;
                        }
                    }
                }
                if let Phase::Size(deadline) = ch.phase {
                    if now >= deadline && !start(&mut ch, &mut attachment, 80, 24) {
                        ch.closing_output = "The instance's agent is not connected.".into();
                        ch.phase = Phase::Closing(now);
                    }
                }
                if ch.phase == Phase::Running && attachment.idle_expired() {
                    ch.closing_output = attachment.idle_message();
                    attachment.finish(None, Some(ch.closing_output.clone()));
                    ch.phase = Phase::Closing(now);
                }
            }
        }
        if let Phase::Closing(deadline) = ch.phase {
            if ch.unacked.is_empty() || Instant::now() >= deadline {
                send(
                    &mut socket,
                    &channel_closed(&ch.session_id, &ch.closing_output),
                )
                .await;
                linger(&mut socket).await;
                break;
            }
        }
    }
}

/// After `channel_closed`: the plugin exits without a close frame, so the socket is kept
/// until the client drops it (2 s at most) rather than closed under its reader.
async fn linger(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

fn start(ch: &mut Channel, attachment: &mut Attachment, cols: u16, rows: u16) -> bool {
    ch.phase = Phase::Running;
    attachment.start(true, cols.max(1), rows.max(1))
}

/// Handles one binary frame from the client; false ends the session.
async fn on_client_message(
    ch: &mut Channel,
    attachment: &mut Attachment,
    socket: &mut WebSocket,
    bytes: &[u8],
) -> bool {
    let m = match ClientMessage::decode(bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(session = ch.session_id, error = %e, "dropping an invalid data channel message");
            return true;
        }
    };
    match m.message_type.as_str() {
        ACKNOWLEDGE => {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            if let Some(seq) = v
                .get("AcknowledgedMessageSequenceNumber")
                .and_then(|s| s.as_i64())
            {
                if let Some((_, counted, _)) = ch.unacked.remove(&seq) {
                    attachment.delivered(counted);
                }
            }
            true
        }
        INPUT_STREAM_DATA => {
            // Every input message is acknowledged, duplicates included.
            if !send(socket, &acknowledge(&m)).await {
                return false;
            }
            if m.sequence_number < ch.expected_in {
                return true;
            }
            if m.sequence_number > ch.expected_in {
                if ch.early.len() < MAX_EARLY {
                    ch.early.insert(m.sequence_number, m);
                }
                return true;
            }
            let mut next = Some(m);
            while let Some(m) = next {
                ch.expected_in += 1;
                if !on_input(ch, attachment, socket, m).await {
                    return false;
                }
                next = ch.early.remove(&ch.expected_in);
            }
            true
        }
        _ => true,
    }
}

/// One in-sequence input message.
async fn on_input(
    ch: &mut Channel,
    attachment: &mut Attachment,
    socket: &mut WebSocket,
    m: ClientMessage,
) -> bool {
    match m.payload_type {
        payload::HANDSHAKE_RESPONSE if ch.phase == Phase::Handshake => {
            let body = serde_json::json!({
                "HandshakeTimeToComplete": ch.began.elapsed().as_nanos() as u64,
                "CustomerMessage": "",
            });
            ch.phase = Phase::Size(Instant::now() + SIZE_WAIT);
            ch.output(
                socket,
                payload::HANDSHAKE_COMPLETE,
                body.to_string().into_bytes(),
                0,
            )
            .await
        }
        payload::SIZE => {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            let dim = |k: &str| {
                v.get(k)
                    .and_then(|n| n.as_u64())
                    .map(|n| n.min(u64::from(u16::MAX)) as u16)
            };
            if let (Some(cols), Some(rows)) = (dim("cols"), dim("rows")) {
                match ch.phase {
                    Phase::Size(_) | Phase::Handshake => {
                        if !start(ch, attachment, cols, rows) {
                            ch.closing_output = "The instance's agent is not connected.".into();
                            ch.phase = Phase::Closing(Instant::now());
                        }
                    }
                    Phase::Running => attachment.resize(cols.max(1), rows.max(1)),
                    Phase::Closing(_) => {}
                }
            }
            true
        }
        payload::OUTPUT => {
            if !m.payload.is_empty() && !matches!(ch.phase, Phase::Closing(_)) {
                ch.pending_bytes += m.payload.len();
                ch.pending_input.push_back(m.payload);
            }
            true
        }
        payload::FLAG => {
            let flag = m
                .payload
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            if flag == Some(FLAG_TERMINATE_SESSION) {
                attachment.finish(None, Some("The client terminated the session.".into()));
                ch.phase = Phase::Closing(Instant::now());
            }
            true
        }
        _ => true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The annotated input_stream_data message of the protocol description.
    fn example() -> Vec<u8> {
        let hex = concat!(
            "00000074",
            "696e7075745f73747265616d5f64617461",
            "202020202020202020202020202020",
            "00000001",
            "000001a214b9454e",
            "0000000000000001",
            "0000000000000000",
            "83f832cd0b44207e",
            "c62bec73d64a4c51",
            "edf7359c89077b608a6b3e8b19e63bbfc7aa724989a05ea371a9966a6e9db7cc",
            "00000003",
            "00000016",
            "7b22636f6c73223a3132302c22726f7773223a34307d",
        );
        hex::decode(hex).unwrap()
    }

    #[test]
    fn decodes_the_annotated_example() {
        let bytes = example();
        assert_eq!(bytes.len(), 120 + 22);
        let m = ClientMessage::decode(&bytes).unwrap();
        assert_eq!(m.message_type, INPUT_STREAM_DATA);
        assert_eq!(m.schema_version, 1);
        assert_eq!(m.created_date, 0x0000_01a2_14b9_454e);
        assert_eq!(m.sequence_number, 1);
        assert_eq!(m.flags, 0);
        assert_eq!(
            m.message_id.to_string(),
            "c62bec73-d64a-4c51-83f8-32cd0b44207e"
        );
        assert_eq!(m.payload_type, payload::SIZE);
        assert_eq!(m.payload, br#"{"cols":120,"rows":40}"#);
        // And writes it back byte for byte.
        assert_eq!(m.encode(), bytes);
    }

    #[test]
    fn encoding_swaps_the_id_halves_pads_the_type_and_digests_the_payload() {
        let mut m = ClientMessage::new(OUTPUT_STREAM_DATA, 7, payload::OUTPUT, b"hello".to_vec());
        m.message_id = uuid::Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let b = m.encode();
        assert_eq!(&b[0..4], &116u32.to_be_bytes());
        assert_eq!(&b[4..22], b"output_stream_data");
        assert!(b[22..36].iter().all(|&c| c == b' '));
        assert_eq!(&b[64..72], &hex::decode("8899aabbccddeeff").unwrap()[..]);
        assert_eq!(&b[72..80], &hex::decode("0011223344556677").unwrap()[..]);
        assert_eq!(&b[80..112], &sha2::Sha256::digest(b"hello")[..]);
        assert_eq!(&b[116..120], &5u32.to_be_bytes());
        assert_eq!(ClientMessage::decode(&b).unwrap(), m);
    }

    #[test]
    fn invalid_messages_are_refused() {
        let good = example();
        assert_eq!(
            ClientMessage::decode(&good[..100]),
            Err(DecodeError::TooShort(100))
        );
        let mut bad = good.clone();
        bad[130] ^= 1;
        assert_eq!(ClientMessage::decode(&bad), Err(DecodeError::Digest));
        let mut bad = good.clone();
        bad[40..48].fill(0);
        assert_eq!(ClientMessage::decode(&bad), Err(DecodeError::CreatedDate));
        let mut bad = good.clone();
        bad[4..36].fill(b' ');
        assert_eq!(ClientMessage::decode(&bad), Err(DecodeError::MessageType));
        let mut bad = good.clone();
        bad[0..4].fill(0);
        assert_eq!(ClientMessage::decode(&bad), Err(DecodeError::HeaderLength));
        // NUL padding (as some writers use) reads the same as spaces.
        let mut nul = good;
        for b in &mut nul[21..36] {
            *b = 0;
        }
        assert_eq!(
            ClientMessage::decode(&nul).unwrap().message_type,
            INPUT_STREAM_DATA
        );
        // A zero PayloadLength skips the digest check, as the plugin's Validate does.
        let mut m = ClientMessage::new(ACKNOWLEDGE, 0, 0, vec![]);
        m.flags = 3;
        assert!(ClientMessage::decode(&m.encode()).is_ok());
    }

    #[test]
    fn acknowledgements_and_channel_closed_carry_json() {
        let m = ClientMessage::decode(&example()).unwrap();
        let ack = acknowledge(&m);
        assert_eq!(ack.message_type, ACKNOWLEDGE);
        assert_eq!(ack.flags, 3);
        assert_eq!(ack.sequence_number, 0);
        assert_eq!(ack.payload_type, 0);
        let v: serde_json::Value = serde_json::from_slice(&ack.payload).unwrap();
        assert_eq!(v["AcknowledgedMessageType"], "input_stream_data");
        assert_eq!(
            v["AcknowledgedMessageId"],
            "c62bec73-d64a-4c51-83f8-32cd0b44207e"
        );
        assert_eq!(v["AcknowledgedMessageSequenceNumber"], 1);
        assert_eq!(v["IsSequentialMessage"], true);
        let closed = channel_closed("s-1", "bye");
        let again = ClientMessage::decode(&closed.encode()).unwrap();
        assert_eq!(again.message_type, CHANNEL_CLOSED);
        let v: serde_json::Value = serde_json::from_slice(&again.payload).unwrap();
        assert_eq!(v["SessionId"], "s-1");
        assert_eq!(v["Output"], "bye");
        assert_eq!(v["MessageType"], "channel_closed");
        assert!(v["CreatedDate"].as_str().unwrap().ends_with('Z'));
        let hs: serde_json::Value = serde_json::from_slice(&handshake_request()).unwrap();
        assert_eq!(hs["RequestedClientActions"][0]["ActionType"], "SessionType");
        let version: Vec<u32> = hs["AgentVersion"]
            .as_str()
            .unwrap()
            .split('.')
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(version.len(), 4);
    }
}

//! Exec sessions: `ExecuteCommand` issues a session, a client opens its stream, the server
//! relays between the client and the agent of the task's instance.
//!
//! # Sessions and tokens
//!
//! `ExecuteCommand` (SigV4-signed, see `ops::exec`) checks the task and container and
//! [`ExecHub::issue`]s a session: a random id and a random token, of which only a SHA-256 is
//! kept. The token opens **one** stream: the first WebSocket that presents it consumes it
//! ([`ExecHub::redeem`]); presenting it again is refused, and so is a token not used within
//! [`ExecConfig::token_ttl`] (60 s) of the call. The process starts only once a stream is
//! attached. A session ends when the process exits, when either side goes away (client
//! socket closed, agent disconnected), or after [`ExecConfig::idle_timeout`] (20 minutes)
//! without input or output; its end kills the process and releases everything
//! ([`Attachment`]'s `Drop`).
//!
//! # Streams
//!
//! * [`ssm`]: `streamUrl` (`/v1/data-channel/<sessionId>`), AWS's session-manager data
//!   channel, so `aws ecs execute-command` with the stock `session-manager-plugin` works;
//!   the token comes in the first text frame. Always a terminal.
//! * [`native`]: `/berth/v1/exec/<sessionId>` for `berth exec`, the token in
//!   `Authorization: Bearer`; a terminal or not, stdout and stderr apart, the exit code last.
//!
//! # The end of a session
//!
//! Every session that was attached ends in one [`SessionEnd`] (who, what, how it ended,
//! how long, how many bytes, and its transcript: input and output cut into lines, at most
//! [`TRANSCRIPT_LIMIT`] bytes), handed to the hub's [`SessionEndHook`]; the default hook logs
//! it. Audit recording plugs in there ([`ExecHub::set_end_hook`]), and keeps the transcript
//! with the task's logs unless the cluster's exec logging is `NONE`.

pub mod native;
pub mod ssm;

use crate::gateway::Hub;
use berth_control::AgentLink as _;
use berth_model::clock::Clock;
use berth_protocol::{AgentMessage, ExecStart, ExecStream, LogLine, ServerMessage, EXEC_WINDOW};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How exec sessions behave.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// How long a token stays usable after `ExecuteCommand`.
    pub token_ttl: Duration,
    /// A session without input or output for this long ends.
    pub idle_timeout: Duration,
    /// The server's public base URL (`https://berth.example.com`), for `streamUrl`; without
    /// it, the scheme and `Host` of the `ExecuteCommand` request.
    pub public_url: Option<String>,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            token_ttl: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(20 * 60),
            public_url: None,
        }
    }
}

/// What a session is about.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    pub session_id: String,
    /// The access key id that called `ExecuteCommand`.
    pub principal: String,
    pub cluster_arn: String,
    pub task_arn: String,
    pub container: String,
    /// The instance whose agent runs the process.
    pub instance_id: String,
    /// The command as given.
    pub command: String,
    /// … and split into words.
    pub argv: Vec<String>,
}

/// One ended session, for the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEnd {
    pub session_id: String,
    pub principal: String,
    pub cluster: String,
    pub task: String,
    pub container: String,
    pub command: String,
    /// The process's exit code; `None` when it did not run or was cut off.
    pub exit_code: Option<i32>,
    /// Why the session ended, when not by the process's exit.
    pub reason: Option<String>,
    /// Its stream was refused (a wrong, used or expired token): nothing ran.
    pub refused: bool,
    pub duration: Duration,
    /// Bytes the client sent to the process.
    pub bytes_in: u64,
    /// Bytes of output the process sent to the client.
    pub bytes_out: u64,
    /// The session's input and output as lines (at most [`TRANSCRIPT_LIMIT`] bytes), for the
    /// task's logs when the cluster keeps exec output.
    pub transcript: Vec<LogLine>,
}

/// The most bytes (both ways) of one session kept in its transcript; beyond that one line says
/// how much was left out.
pub const TRANSCRIPT_LIMIT: usize = 1 << 20;

/// A session's input and output cut into lines, per stream, each stamped with when it
/// began.
#[derive(Default)]
struct Transcript {
    lines: Vec<LogLine>,
    /// Partial lines of stdout, stderr and stdin: (when it began, bytes so far).
    open: [(f64, Vec<u8>); 3],
    kept: usize,
    dropped: u64,
}

const STDIN: usize = 2;

impl Transcript {
    fn slot(stream: ExecStream) -> usize {
        match stream {
            ExecStream::Stdout => 0,
            ExecStream::Stderr => 1,
        }
    }

    fn name(slot: usize) -> &'static str {
        ["stdout", "stderr", "stdin"][slot.min(STDIN)]
    }

    /// Output, or input when `stream` is `None`. Input typed at a terminal ends its lines
    /// with a carriage return.
    fn push(&mut self, at: f64, stream: Option<ExecStream>, data: &[u8]) {
        let room = TRANSCRIPT_LIMIT.saturating_sub(self.kept);
        let (keep, drop) = data.split_at(data.len().min(room));
        self.kept += keep.len();
        self.dropped += drop.len() as u64;
        let slot = stream.map_or(STDIN, Self::slot);
        let ends = |b: &u8| *b == b'\n' || (slot == STDIN && *b == b'\r');
        for piece in keep.split_inclusive(ends) {
            let open = &mut self.open[slot];
            if open.1.is_empty() {
                open.0 = at;
            }
            open.1.extend_from_slice(piece);
            if piece.last().is_some_and(ends) {
                self.close(slot);
            }
        }
    }

    fn close(&mut self, slot: usize) {
        let (at, bytes) = std::mem::take(&mut self.open[slot]);
        // An empty line, or the newline of a typed "\r\n".
        if bytes.is_empty() || (slot == STDIN && bytes == b"\n") {
            return;
        }
        let text = String::from_utf8_lossy(&bytes);
        let message = text.trim_end_matches(['\n', '\r']).to_string();
        self.lines.push(LogLine {
            timestamp: at,
            stream: Self::name(slot).into(),
            message,
        });
    }

    fn finish(mut self, at: f64) -> Vec<LogLine> {
        for slot in 0..=STDIN {
            self.close(slot);
        }
        if self.dropped > 0 {
            self.lines.push(LogLine {
                timestamp: at,
                stream: "stdout".into(),
                message: format!(
                    "[berth: {} more bytes of the session were not kept in this transcript]",
                    self.dropped
                ),
            });
        }
        self.lines
    }
}

/// Where ended sessions go.
pub type SessionEndHook = Arc<dyn Fn(&SessionEnd) + Send + Sync>;

/// The default [`SessionEndHook`]: one log line.
pub fn log_session_end(e: &SessionEnd) {
    tracing::info!(
        target: "berth::exec",
        session = e.session_id,
        principal = e.principal,
        cluster = e.cluster,
        task = e.task,
        container = e.container,
        command = e.command,
        exit_code = ?e.exit_code,
        reason = e.reason.as_deref().unwrap_or(""),
        duration_ms = e.duration.as_millis() as u64,
        bytes_in = e.bytes_in,
        bytes_out = e.bytes_out,
        "exec session ended"
    );
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownSession,
    TokenMismatch,
    TokenUsed,
    TokenExpired,
}

impl Refusal {
    /// The error's name, in the ECS style.
    pub fn kind(self) -> &'static str {
        match self {
            Refusal::UnknownSession => "SessionNotFoundException",
            Refusal::TokenMismatch | Refusal::TokenUsed | Refusal::TokenExpired => {
                "InvalidTokenException"
            }
        }
    }

    pub fn message(self, ttl: Duration) -> String {
        match self {
            Refusal::UnknownSession => "No such exec session.".into(),
            Refusal::TokenMismatch => "The token does not belong to this session.".into(),
            Refusal::TokenUsed => {
                "The session's token was already used: a token opens one stream. Call ExecuteCommand again.".into()
            }
            Refusal::TokenExpired => format!(
                "The session's token expired: it must be used within {}s of ExecuteCommand. Call ExecuteCommand again.",
                ttl.as_secs()
            ),
        }
    }
}

enum Slot {
    Issued {
        info: Box<SessionInfo>,
        token_digest: String,
        expires_at: f64,
    },
    /// Its token was used (kept a while, so reuse is told apart from nonsense).
    Used {
        info: Box<SessionInfo>,
        forget_at: f64,
    },
}

/// What the agent says about a session.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    Started,
    Output(ExecStream, Vec<u8>),
    Exit {
        code: Option<i32>,
        error: Option<String>,
    },
    /// The instance's agent disconnected.
    AgentGone,
    /// The process took input: more may go (see [`Attachment::can_take_input`]).
    InputTaken,
}

enum Routed {
    Event(AgentEvent),
    InputTaken(u64),
}

/// The server's exec sessions.
pub struct ExecHub {
    config: ExecConfig,
    clock: Arc<dyn Clock>,
    slots: Mutex<HashMap<String, Slot>>,
    /// Attached sessions: session id → (instance id, where its agent's messages go).
    attached: Mutex<HashMap<String, (String, UnboundedSender<Routed>)>>,
    hook: RwLock<SessionEndHook>,
}

impl ExecHub {
    pub fn new(clock: Arc<dyn Clock>, config: ExecConfig) -> Self {
        ExecHub {
            config,
            clock,
            slots: Mutex::new(HashMap::new()),
            attached: Mutex::new(HashMap::new()),
            hook: RwLock::new(Arc::new(log_session_end)),
        }
    }

    pub fn config(&self) -> &ExecConfig {
        &self.config
    }

    /// Sends every ended session to `hook` instead of the log.
    pub fn set_end_hook(&self, hook: SessionEndHook) {
        if let Ok(mut h) = self.hook.write() {
            *h = hook;
        }
    }

    /// A new session for `info` (its `session_id` is ignored): returns its id and token.
    pub fn issue(&self, mut info: SessionInfo) -> (String, String) {
        let now = self.clock.epoch_seconds();
        let id = format!("ecs-execute-command-{}", uuid::Uuid::new_v4().simple());
        let token = berth_control::new_secret();
        info.session_id = id.clone();
        if let Ok(mut slots) = self.slots.lock() {
            slots.retain(|_, s| match s {
                Slot::Issued { expires_at, .. } => *expires_at + 600.0 > now,
                Slot::Used { forget_at, .. } => *forget_at > now,
            });
            slots.insert(
                id.clone(),
                Slot::Issued {
                    info: Box::new(info),
                    token_digest: berth_control::digest(&token),
                    expires_at: now + self.config.token_ttl.as_secs_f64(),
                },
            );
        }
        (id, token)
    }

    /// Consumes a session's token: the session, or why not. A refusal for a session that
    /// exists (a wrong, used or expired token) is reported to the end hook as a refused
    /// session, so the audit log has it.
    pub fn redeem(&self, session_id: &str, token: &str) -> Result<SessionInfo, Refusal> {
        let (result, refused) = self.try_redeem(session_id, token);
        if let (Err(refusal), Some(info)) = (&result, refused) {
            let end = SessionEnd {
                session_id: info.session_id.clone(),
                principal: info.principal.clone(),
                cluster: cluster_name(&info.cluster_arn),
                task: info.task_arn.clone(),
                container: info.container.clone(),
                command: info.command.clone(),
                exit_code: None,
                reason: Some(refusal.message(self.config.token_ttl)),
                refused: true,
                duration: Duration::ZERO,
                bytes_in: 0,
                bytes_out: 0,
                transcript: Vec::new(),
            };
            let hook = self.hook.read().ok().map(|h| h.clone());
            if let Some(hook) = hook {
                hook(&end);
            }
        }
        result
    }

    /// [`Self::redeem`] without the report: the result, and the session refused if any.
    fn try_redeem(
        &self,
        session_id: &str,
        token: &str,
    ) -> (Result<SessionInfo, Refusal>, Option<SessionInfo>) {
        use subtle::ConstantTimeEq as _;
        let now = self.clock.epoch_seconds();
        let Ok(mut slots) = self.slots.lock() else {
            return (Err(Refusal::UnknownSession), None);
        };
        let refuse = |r: Refusal, info: &SessionInfo| (Err(r), Some(info.clone()));
        match slots.get(session_id) {
            None => (Err(Refusal::UnknownSession), None),
            Some(Slot::Used { info, .. }) => refuse(Refusal::TokenUsed, info),
            Some(Slot::Issued {
                token_digest,
                expires_at,
                info,
            }) => {
                let given = berth_control::digest(token);
                if !bool::from(given.as_bytes().ct_eq(token_digest.as_bytes())) {
                    return refuse(Refusal::TokenMismatch, info);
                }
                if now > *expires_at {
                    return refuse(Refusal::TokenExpired, info);
                }
                let info = (**info).clone();
                slots.insert(
                    session_id.to_string(),
                    Slot::Used {
                        info: Box::new(info.clone()),
                        forget_at: now + 3600.0,
                    },
                );
                (Ok(info), None)
            }
        }
    }

    /// Attaches a redeemed session: from now on the agent's messages about it reach the
    /// returned [`Attachment`].
    pub fn attach(self: &Arc<Self>, info: SessionInfo, agents: Arc<Hub>) -> Attachment {
        let (tx, rx) = unbounded_channel();
        if let Ok(mut a) = self.attached.lock() {
            a.insert(info.session_id.clone(), (info.instance_id.clone(), tx));
        }
        Attachment {
            info,
            agents,
            exec: self.clone(),
            events: rx,
            began: Instant::now(),
            last_activity: Instant::now(),
            bytes_in: 0,
            bytes_out: 0,
            transcript: Transcript::default(),
            input_in_flight: 0,
            exit_code: None,
            reason: None,
            ended: false,
        }
    }

    /// Routes an agent's exec message to its session; false when `m` is not one.
    pub fn from_agent(&self, instance_id: &str, m: &AgentMessage) -> bool {
        let (session, routed) = match m {
            AgentMessage::ExecStarted { session } => (session, Routed::Event(AgentEvent::Started)),
            AgentMessage::ExecOutput {
                session,
                stream,
                data,
            } => (
                session,
                Routed::Event(AgentEvent::Output(*stream, data.clone())),
            ),
            AgentMessage::ExecInputAck { session, bytes } => (session, Routed::InputTaken(*bytes)),
            AgentMessage::ExecExit {
                session,
                exit_code,
                error,
            } => (
                session,
                Routed::Event(AgentEvent::Exit {
                    code: *exit_code,
                    error: error.clone(),
                }),
            ),
            _ => return false,
        };
        if let Ok(a) = self.attached.lock() {
            // Only the agent running the session may speak for it.
            if let Some((instance, tx)) = a.get(session) {
                if instance == instance_id {
                    let _ = tx.send(routed);
                }
            }
        }
        true
    }

    /// The instance's agent disconnected: its sessions end.
    pub fn agent_gone(&self, instance_id: &str) {
        if let Ok(a) = self.attached.lock() {
            for (instance, tx) in a.values() {
                if instance == instance_id {
                    let _ = tx.send(Routed::Event(AgentEvent::AgentGone));
                }
            }
        }
    }

    /// How many sessions are attached now.
    pub fn attached_count(&self) -> usize {
        self.attached.lock().map(|a| a.len()).unwrap_or(0)
    }
}

/// An attached session, owned by its stream. Dropping it ends the session: the agent is told
/// to kill the process, the routing goes, the [`SessionEnd`] is emitted.
pub struct Attachment {
    pub info: SessionInfo,
    agents: Arc<Hub>,
    exec: Arc<ExecHub>,
    events: UnboundedReceiver<Routed>,
    began: Instant,
    last_activity: Instant,
    bytes_in: u64,
    bytes_out: u64,
    transcript: Transcript,
    input_in_flight: u64,
    exit_code: Option<i32>,
    reason: Option<String>,
    ended: bool,
}

impl Attachment {
    fn send(&self, m: ServerMessage) -> bool {
        self.agents.send(&self.info.instance_id, m)
    }

    /// Starts the process; false when the instance's agent is not connected.
    pub fn start(&mut self, tty: bool, cols: u16, rows: u16) -> bool {
        self.last_activity = Instant::now();
        let ok = self.send(ServerMessage::ExecStart(ExecStart {
            session: self.info.session_id.clone(),
            task_arn: self.info.task_arn.clone(),
            container: self.info.container.clone(),
            command: self.info.argv.clone(),
            tty,
            cols,
            rows,
        }));
        if !ok {
            self.finish(None, Some("The instance's agent is not connected.".into()));
        }
        ok
    }

    /// Whether more input may go to the agent now (its window is not full).
    pub fn can_take_input(&self) -> bool {
        self.input_in_flight < EXEC_WINDOW
    }

    pub fn input(&mut self, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        self.last_activity = Instant::now();
        self.bytes_in += data.len() as u64;
        self.input_in_flight += data.len() as u64;
        let at = self.exec.clock.epoch_seconds();
        self.transcript.push(at, None, &data);
        self.send(ServerMessage::ExecInput {
            session: self.info.session_id.clone(),
            data,
        });
    }

    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.send(ServerMessage::ExecResize {
            session: self.info.session_id.clone(),
            cols,
            rows,
        });
    }

    pub fn eof(&mut self) {
        self.send(ServerMessage::ExecEof {
            session: self.info.session_id.clone(),
        });
    }

    /// The client took `bytes` of output: the agent may send more.
    pub fn delivered(&mut self, bytes: u64) {
        if bytes > 0 {
            self.send(ServerMessage::ExecAck {
                session: self.info.session_id.clone(),
                bytes,
            });
        }
    }

    /// The next thing the agent says.
    pub async fn next(&mut self) -> AgentEvent {
        match self.events.recv().await {
            Some(Routed::InputTaken(n)) => {
                self.input_in_flight = self.input_in_flight.saturating_sub(n);
                AgentEvent::InputTaken
            }
            Some(Routed::Event(e)) => {
                match &e {
                    AgentEvent::Output(stream, data) => {
                        self.last_activity = Instant::now();
                        self.bytes_out += data.len() as u64;
                        let at = self.exec.clock.epoch_seconds();
                        self.transcript.push(at, Some(*stream), data);
                    }
                    AgentEvent::Exit { code, error } => {
                        self.finish(*code, error.clone());
                    }
                    AgentEvent::AgentGone => {
                        self.finish(None, Some("The instance's agent disconnected.".into()))
                    }
                    AgentEvent::Started | AgentEvent::InputTaken => {}
                }
                e
            }
            None => AgentEvent::AgentGone,
        }
    }

    /// How long nothing went either way.
    pub fn idle_for(&self) -> Duration {
        self.last_activity.elapsed()
    }

    /// Whether the session has been idle past the limit.
    pub fn idle_expired(&self) -> bool {
        self.idle_for() >= self.exec.config.idle_timeout
    }

    /// Records how the session ended (the first reason wins).
    pub fn finish(&mut self, code: Option<i32>, reason: Option<String>) {
        if !self.ended {
            self.ended = true;
            self.exit_code = code;
            self.reason = reason;
        }
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Why an idle session ended.
    pub fn idle_message(&self) -> String {
        let d = self.exec.config.idle_timeout.as_secs();
        if d >= 60 && d.checked_rem(60) == Some(0) {
            format!("The session was idle for {} minutes.", d / 60)
        } else {
            format!("The session was idle for {d} seconds.")
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if self.exit_code.is_none() {
            // Cut off: the process goes.
            self.send(ServerMessage::ExecClose {
                session: self.info.session_id.clone(),
            });
        }
        if let Ok(mut a) = self.exec.attached.lock() {
            a.remove(&self.info.session_id);
        }
        let cluster = cluster_name(&self.info.cluster_arn);
        let end = SessionEnd {
            session_id: self.info.session_id.clone(),
            principal: self.info.principal.clone(),
            cluster,
            task: self.info.task_arn.clone(),
            container: self.info.container.clone(),
            command: self.info.command.clone(),
            exit_code: self.exit_code,
            reason: if self.ended {
                self.reason.clone()
            } else {
                Some("The client went away.".into())
            },
            refused: false,
            duration: self.began.elapsed(),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            transcript: std::mem::take(&mut self.transcript)
                .finish(self.exec.clock.epoch_seconds()),
        };
        let hook = self.exec.hook.read().ok().map(|h| h.clone());
        if let Some(hook) = hook {
            hook(&end);
        }
    }
}

/// A cluster's name from its ARN.
fn cluster_name(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or_default().to_string()
}

/// The WebSocket base (`ws://host:port`) of the server as a client reached it.
pub fn ws_base(config: &ExecConfig, host: Option<&str>) -> String {
    if let Some(url) = &config.public_url {
        let url = url.trim_end_matches('/');
        if let Some(rest) = url.strip_prefix("https://") {
            return format!("wss://{rest}");
        }
        if let Some(rest) = url.strip_prefix("http://") {
            return format!("ws://{rest}");
        }
        return url.to_string();
    }
    format!("ws://{}", host.unwrap_or("127.0.0.1:7700"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A clock moved by hand.
    struct Manual(AtomicU64);

    impl Clock for Manual {
        fn now(&self) -> Duration {
            Duration::from_millis(self.0.load(Ordering::SeqCst))
        }
    }

    fn info() -> SessionInfo {
        SessionInfo {
            session_id: String::new(),
            principal: "AKIA1".into(),
            cluster_arn: "arn:aws:ecs:us-east-1:0:cluster/c".into(),
            task_arn: "arn:aws:ecs:us-east-1:0:task/c/t".into(),
            container: "app".into(),
            instance_id: "i-1".into(),
            command: "/bin/sh".into(),
            argv: vec!["/bin/sh".into()],
        }
    }

    fn hub() -> (Arc<Manual>, ExecHub) {
        let clock = Arc::new(Manual(AtomicU64::new(1_000_000)));
        let hub = ExecHub::new(clock.clone(), ExecConfig::default());
        (clock, hub)
    }

    #[test]
    fn a_token_opens_one_stream() {
        let (_, hub) = hub();
        let ended = Arc::new(Mutex::new(vec![]));
        let e2 = ended.clone();
        hub.set_end_hook(Arc::new(move |e: &SessionEnd| {
            e2.lock().unwrap().push(e.clone())
        }));
        let (id, token) = hub.issue(info());
        assert!(id.starts_with("ecs-execute-command-"));
        assert_eq!(hub.redeem(&id, "wrong"), Err(Refusal::TokenMismatch));
        let got = hub.redeem(&id, &token).unwrap();
        assert_eq!(got.session_id, id);
        assert_eq!(got.argv, ["/bin/sh"]);
        assert_eq!(hub.redeem(&id, &token), Err(Refusal::TokenUsed));
        assert_eq!(hub.redeem("nope", &token), Err(Refusal::UnknownSession));
        // Refusals of a real session are reported as refused sessions; nonsense is not.
        let refused: Vec<(String, bool, Option<String>)> = ended
            .lock()
            .unwrap()
            .iter()
            .map(|e| (e.session_id.clone(), e.refused, e.reason.clone()))
            .collect();
        assert_eq!(refused.len(), 2);
        assert!(refused.iter().all(|(s, r, _)| s == &id && *r));
        assert!(refused[1]
            .2
            .as_deref()
            .unwrap_or("")
            .contains("already used"));
        // Each session has its own token.
        let (id2, token2) = hub.issue(info());
        assert_ne!(token, token2);
        assert_eq!(hub.redeem(&id2, &token), Err(Refusal::TokenMismatch));
        assert!(hub.redeem(&id2, &token2).is_ok());
    }

    #[test]
    fn a_token_expires_unused() {
        let (clock, hub) = hub();
        let (id, token) = hub.issue(info());
        clock.0.fetch_add(61_000, Ordering::SeqCst);
        assert_eq!(hub.redeem(&id, &token), Err(Refusal::TokenExpired));
        let (id, token) = hub.issue(info());
        clock.0.fetch_add(59_000, Ordering::SeqCst);
        assert!(hub.redeem(&id, &token).is_ok());
        // Long-expired sessions are forgotten as new ones are issued.
        let (old, old_token) = hub.issue(info());
        clock.0.fetch_add(3_600_000, Ordering::SeqCst);
        hub.issue(info());
        assert_eq!(hub.redeem(&old, &old_token), Err(Refusal::UnknownSession));
        assert!(Refusal::TokenExpired
            .message(Duration::from_secs(60))
            .contains("60s"));
    }

    #[test]
    fn stream_urls_follow_the_public_url_or_the_host() {
        let mut c = ExecConfig::default();
        assert_eq!(ws_base(&c, Some("127.0.0.1:9")), "ws://127.0.0.1:9");
        c.public_url = Some("https://berth.example.com/".into());
        assert_eq!(ws_base(&c, Some("x")), "wss://berth.example.com");
        c.public_url = Some("http://10.0.0.1:7700".into());
        assert_eq!(ws_base(&c, None), "ws://10.0.0.1:7700");
    }

    #[tokio::test]
    async fn agent_messages_reach_only_their_session_and_its_end_is_reported() {
        let (_, hub) = hub();
        let hub = Arc::new(hub);
        let ended = Arc::new(Mutex::new(vec![]));
        let e2 = ended.clone();
        hub.set_end_hook(Arc::new(move |e: &SessionEnd| {
            e2.lock().unwrap().push(e.clone())
        }));
        let (id, token) = hub.issue(info());
        let info = hub.redeem(&id, &token).unwrap();
        let mut a = hub.attach(info, Arc::new(Hub::default()));
        assert_eq!(hub.attached_count(), 1);
        // Another instance cannot speak for the session.
        let out = AgentMessage::ExecOutput {
            session: id.clone(),
            stream: ExecStream::Stdout,
            data: b"42\n".to_vec(),
        };
        assert!(hub.from_agent("i-2", &out));
        assert!(hub.from_agent("i-1", &out));
        assert!(!hub.from_agent("i-1", &AgentMessage::Heartbeat { generation: 1 }));
        assert_eq!(
            a.next().await,
            AgentEvent::Output(ExecStream::Stdout, b"42\n".to_vec())
        );
        a.input(b"exit 3\n".to_vec());
        assert!(a.can_take_input());
        hub.from_agent(
            "i-1",
            &AgentMessage::ExecExit {
                session: id.clone(),
                exit_code: Some(3),
                error: None,
            },
        );
        assert_eq!(
            a.next().await,
            AgentEvent::Exit {
                code: Some(3),
                error: None
            }
        );
        drop(a);
        assert_eq!(hub.attached_count(), 0);
        let ended = ended.lock().unwrap();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].exit_code, Some(3));
        assert_eq!(ended[0].bytes_in, 7);
        assert_eq!(ended[0].bytes_out, 3);
        assert_eq!(ended[0].cluster, "c");
        assert_eq!(ended[0].principal, "AKIA1");
        let lines: Vec<(&str, &str)> = ended[0]
            .transcript
            .iter()
            .map(|l| (l.stream.as_str(), l.message.as_str()))
            .collect();
        assert_eq!(lines, [("stdout", "42"), ("stdin", "exit 3")]);
    }

    #[test]
    fn a_transcript_cuts_lines_per_stream_and_stops_at_its_limit() {
        let mut t = Transcript::default();
        t.push(1.0, Some(ExecStream::Stdout), b"a\r\nb");
        t.push(2.0, Some(ExecStream::Stderr), b"oops\n");
        t.push(3.0, Some(ExecStream::Stdout), b"c\n");
        // Typed at a terminal: each key, then Enter as a carriage return.
        for key in [&b"l"[..], b"s", b"\r", b"p", b"w", b"d", b"\r\n"] {
            t.push(4.0, None, key);
        }
        t.push(5.0, None, b"unfinished");
        let kept = t.finish(6.0);
        let lines: Vec<(f64, &str, &str)> = kept
            .iter()
            .map(|l| (l.timestamp, l.stream.as_str(), l.message.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (1.0, "stdout", "a"),
                (2.0, "stderr", "oops"),
                (1.0, "stdout", "bc"),
                (4.0, "stdin", "ls"),
                (4.0, "stdin", "pwd"),
                (5.0, "stdin", "unfinished"),
            ]
        );

        let mut big = Transcript::default();
        big.push(
            1.0,
            Some(ExecStream::Stdout),
            &vec![b'x'; TRANSCRIPT_LIMIT + 10],
        );
        big.push(2.0, Some(ExecStream::Stdout), b"more\n");
        let lines = big.finish(3.0);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].message.len(), TRANSCRIPT_LIMIT);
        assert!(
            lines[1].message.contains("15 more bytes"),
            "{}",
            lines[1].message
        );
    }
}

//! Messages between the berth server and its agents, versioned.
//!
//! # Design
//!
//! One long-lived WebSocket per instance, opened by the agent (outbound only,
//! so instances need no open port). Every message is one JSON text frame.
//!
//! The server never sends commands: it sends the **full desired set of tasks**
//! for the instance with a generation number ([`ServerMessage::Desired`]). The
//! agent converges its real containers to that set and reports every change
//! ([`AgentMessage::TaskUpdate`]). Reconnects, retries and restarts on either
//! side are therefore harmless: the next `Desired` says everything. A task
//! the agent runs that the set leaves out is to be stopped: the server sends
//! only tasks to run, so the set stays the size of what runs. Generations
//! grow along one connection; an agent starts counting again on each.
//!
//! Authentication: the first connection presents the one-time join token the
//! provider handed to the instance; the server answers with a per-instance
//! credential ([`ServerMessage::Welcome`]) that the agent keeps and presents
//! from then on. Both go in the `Authorization: Bearer …` header of the
//! WebSocket upgrade, never in a message.
//!
//! # Exec sessions
//!
//! `ExecuteCommand` sessions ride the same connection, as JSON text frames
//! like everything else; their bytes are base64 in the JSON (`data`). The
//! server starts one with [`ServerMessage::ExecStart`] and feeds it
//! [`ServerMessage::ExecInput`], [`ServerMessage::ExecResize`] and
//! [`ServerMessage::ExecEof`]; the agent answers [`AgentMessage::ExecStarted`],
//! then [`AgentMessage::ExecOutput`] (stdout and stderr apart; a TTY has only
//! stdout) and last [`AgentMessage::ExecExit`]. [`ServerMessage::ExecClose`]
//! ends a session early: the agent kills the process and forgets it.
//!
//! Both directions are flow controlled with a window of [`EXEC_WINDOW`]
//! bytes: the agent has at most that much output in flight until the server
//! returns credit with [`ServerMessage::ExecAck`] (sent once the client took
//! the bytes), and the server sends at most that much input until the agent
//! returns credit with [`AgentMessage::ExecInputAck`] (once the process read
//! it). A session belongs to one connection: when the connection drops,
//! the agent ends its sessions.
//!
//! An agent that supports exec says so with the attribute
//! [`EXEC_CAPABILITY`] in its hello; the server starts no session on an
//! agent without it. An agent ignores server messages it does not know.

use berth_model::ecs::{ContainerDefinition, Volume};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The protocol version both sides speak; a server refuses other versions.
pub const VERSION: u32 = 1;

/// The WebSocket path agents connect to.
pub const CONNECT_PATH: &str = "/agent/v1/connect";

/// The header naming the instance on the upgrade request.
pub const INSTANCE_HEADER: &str = "x-berth-instance-id";

/// The attribute an agent that runs exec sessions advertises (ECS's name).
pub const EXEC_CAPABILITY: &str = "ecs.capability.execute-command";

/// Bytes of exec output (and of input) in flight per session before the
/// sender waits for credit.
pub const EXEC_WINDOW: u64 = 256 * 1024;

/// What an agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AgentMessage {
    /// First message on every connection.
    Hello(Hello),
    /// Sent periodically; carries the last generation the agent applied.
    Heartbeat { generation: u64 },
    /// A task's observed state changed.
    TaskUpdate(TaskReport),
    /// Container output, in order, bounded per batch.
    Logs(LogBatch),
    /// The exec session's process runs.
    ExecStarted { session: String },
    /// Output of an exec session's process.
    ExecOutput {
        session: String,
        stream: ExecStream,
        #[serde(with = "b64")]
        data: Vec<u8>,
    },
    /// The process read this many bytes of input: credit for more.
    ExecInputAck { session: String, bytes: u64 },
    /// The exec session ended: the process's exit code (`128 + signal` when
    /// killed), or why it could not run.
    ExecExit {
        session: String,
        exit_code: Option<i32>,
        error: Option<String>,
    },
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    /// Accepted: the instance's ARN, and on the first connection the
    /// credential to present from now on.
    Welcome {
        container_instance_arn: String,
        credential: Option<String>,
    },
    /// The full set of tasks this instance should run.
    Desired {
        generation: u64,
        tasks: Vec<TaskSpec>,
    },
    /// The connection is refused or ends; the agent should log it.
    Goodbye { reason: String },
    /// Run a command inside a running container.
    ExecStart(ExecStart),
    /// Bytes for the exec session's standard input (or its terminal).
    ExecInput {
        session: String,
        #[serde(with = "b64")]
        data: Vec<u8>,
    },
    /// The client's terminal changed size.
    ExecResize {
        session: String,
        cols: u16,
        rows: u16,
    },
    /// The client's input ended: stdin is closed (a TTY gets `^D`).
    ExecEof { session: String },
    /// The client took this many bytes of output: credit for more.
    ExecAck { session: String, bytes: u64 },
    /// End the session now: kill the process, release everything.
    ExecClose { session: String },
    /// Pull these images now, ahead of the tasks that will use them: sent to
    /// replacement capacity before a planned drain moves tasks there.
    Prefetch { images: Vec<String> },
}

/// What [`ServerMessage::ExecStart`] carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecStart {
    /// The session id, which names every later message of the session.
    pub session: String,
    pub task_arn: String,
    /// The container's name in the task.
    pub container: String,
    /// The command, already split into words.
    pub command: Vec<String>,
    /// Run it on a terminal (stdout and stderr are then one stream).
    pub tty: bool,
    /// The terminal's size, for a TTY.
    pub cols: u16,
    pub rows: u16,
}

/// Which output stream bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecStream {
    Stdout,
    Stderr,
}

/// Bytes as base64 (standard alphabet, padded) in JSON.
mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

pub mod words;

/// Who the agent is and what it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub protocol: u32,
    pub instance_id: String,
    pub agent_version: String,
    /// `runc` or `process`.
    pub runtime: String,
    pub resources: Resources,
    /// `ecs.*` attributes: instance type, availability zone, architecture, capabilities.
    pub attributes: BTreeMap<String, String>,
    /// What the agent runs right now (after a restart: what it re-adopted).
    pub tasks: Vec<TaskReport>,
    /// The last generation of desired state the agent applied (0: none).
    pub generation: u64,
}

/// An instance's registered resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU units: vCPUs × 1024.
    pub cpu: u32,
    pub memory_mib: u64,
    /// GPU ids, when the instance has GPUs.
    pub gpus: Vec<String>,
}

/// Whether a task should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredStatus {
    Running,
    Stopped,
}

/// One task the instance should run (or stop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    pub task_arn: String,
    pub family: String,
    pub revision: i32,
    /// `awsvpc`, `host` or `none`.
    pub network_mode: String,
    pub desired_status: DesiredStatus,
    /// Task-level limits, when the task definition sets them.
    pub cpu: Option<u32>,
    pub memory_mib: Option<u64>,
    /// Container definitions with the task's overrides already applied.
    pub containers: Vec<ContainerDefinition>,
    /// GPU ids assigned to each container, by container name.
    #[serde(default)]
    pub gpu_ids: BTreeMap<String, Vec<String>>,
    /// For `awsvpc`: the task's own address on the instance's network.
    #[serde(default)]
    pub address: Option<TaskAddress>,
    /// The task definition's `volumes`, which the containers' `mountPoints`
    /// name (empty from a server that does not send them).
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// The longest any of its containers may take to stop, in seconds, whatever their
    /// `stopTimeout`: a spot interruption's notice. Sent with `desiredStatus` `STOPPED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_cap: Option<u32>,
}

/// An `awsvpc` task's own address (its ENI's private IP), given by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAddress {
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
}

/// A task as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    pub task_arn: String,
    /// `PENDING` (pulling/creating), `RUNNING`, `STOPPING` or `STOPPED`.
    pub last_status: String,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    pub started_at: Option<f64>,
    pub execution_stopped_at: Option<f64>,
    /// Why the agent stopped or could not start the task, if it did.
    pub stop_code: Option<String>,
    pub stopped_reason: Option<String>,
    /// The task's own address, for `awsvpc`.
    pub private_ipv4_address: Option<String>,
    pub containers: Vec<ContainerReport>,
}

/// A container as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerReport {
    pub name: String,
    pub runtime_id: Option<String>,
    pub last_status: String,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub health_status: Option<String>,
    pub image_digest: Option<String>,
}

/// A batch of container output lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogBatch {
    pub task_arn: String,
    pub container: String,
    pub lines: Vec<LogLine>,
}

/// One line of container output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    pub timestamp: f64,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_a_type_tag() {
        let m = ServerMessage::Desired {
            generation: 7,
            tasks: vec![TaskSpec {
                task_arn: "arn:t".into(),
                family: "web".into(),
                revision: 2,
                network_mode: "host".into(),
                desired_status: DesiredStatus::Running,
                cpu: Some(256),
                memory_mib: None,
                containers: vec![ContainerDefinition {
                    name: Some("app".into()),
                    ..Default::default()
                }],
                gpu_ids: BTreeMap::new(),
                address: None,
                volumes: vec![Volume {
                    name: Some("logs".into()),
                    host: Some(berth_model::ecs::HostVolumeProperties {
                        source_path: Some("/var/log".into()),
                    }),
                    ..Default::default()
                }],
                stop_timeout_cap: None,
            }],
        };
        let text = serde_json::to_string(&m).expect("serialise");
        assert!(!text.contains("stopTimeoutCap"), "left out unless set");
        assert!(text.contains("\"type\":\"desired\""));
        assert!(text.contains("\"desiredStatus\":\"RUNNING\""));
        assert!(text.contains(r#""volumes":[{"name":"logs","host":{"sourcePath":"/var/log"}}]"#));
        let back: ServerMessage = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, m);
        let hb: AgentMessage =
            serde_json::from_str(r#"{"type":"heartbeat","generation":3}"#).expect("parse");
        assert_eq!(hb, AgentMessage::Heartbeat { generation: 3 });
        assert!(serde_json::from_str::<AgentMessage>(r#"{"type":"reboot"}"#).is_err());
    }

    #[test]
    fn exec_messages_carry_bytes_as_base64() {
        let m = ServerMessage::ExecInput {
            session: "s1".into(),
            data: vec![0x03, b'a', 0xff],
        };
        let text = serde_json::to_string(&m).expect("serialise");
        assert_eq!(text, r#"{"type":"execInput","session":"s1","data":"A2H/"}"#);
        assert_eq!(serde_json::from_str::<ServerMessage>(&text).ok(), Some(m));
        let out = AgentMessage::ExecOutput {
            session: "s1".into(),
            stream: ExecStream::Stderr,
            data: b"oops\n".to_vec(),
        };
        let text = serde_json::to_string(&out).expect("serialise");
        assert!(text.contains(r#""stream":"stderr""#), "{text}");
        assert_eq!(serde_json::from_str::<AgentMessage>(&text).ok(), Some(out));
        let start = ServerMessage::ExecStart(ExecStart {
            session: "s".into(),
            task_arn: "arn:t".into(),
            container: "app".into(),
            command: vec!["sh".into()],
            tty: true,
            cols: 80,
            rows: 24,
        });
        let text = serde_json::to_string(&start).expect("serialise");
        assert!(
            text.starts_with(r#"{"type":"execStart","session":"s","taskArn":"arn:t""#),
            "{text}"
        );
        assert!(serde_json::from_str::<ServerMessage>(
            r#"{"type":"execInput","session":"s","data":"not base64!"}"#
        )
        .is_err());
    }

    #[test]
    fn a_spec_without_volumes_from_an_older_server_parses() {
        let text = r#"{"taskArn":"arn:t","family":"web","revision":1,"networkMode":"host",
            "desiredStatus":"RUNNING","cpu":null,"memoryMib":null,"containers":[]}"#;
        let spec: TaskSpec = serde_json::from_str(text).expect("parse");
        assert!(spec.volumes.is_empty());
    }
}

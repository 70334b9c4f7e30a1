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

use berth_model::ecs::{ContainerDefinition, Volume};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The protocol version both sides speak; a server refuses other versions.
pub const VERSION: u32 = 1;

/// The WebSocket path agents connect to.
pub const CONNECT_PATH: &str = "/agent/v1/connect";

/// The header naming the instance on the upgrade request.
pub const INSTANCE_HEADER: &str = "x-berth-instance-id";

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
}

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
            }],
        };
        let text = serde_json::to_string(&m).expect("serialise");
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
    fn a_spec_without_volumes_from_an_older_server_parses() {
        let text = r#"{"taskArn":"arn:t","family":"web","revision":1,"networkMode":"host",
            "desiredStatus":"RUNNING","cpu":null,"memoryMib":null,"containers":[]}"#;
        let spec: TaskSpec = serde_json::from_str(text).expect("parse");
        assert!(spec.volumes.is_empty());
    }
}

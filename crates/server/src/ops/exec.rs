//! ExecuteCommand: a session to run a command in a running container of a task.
//!
//! As AWS defines it: the task must have been started with `enableExecuteCommand`, be RUNNING,
//! and so must the container (named, unless the task has only one); `interactive` must be
//! true; the instance's agent must be connected (`TargetNotConnectedException` otherwise).
//! The answer's `session` (`sessionId`, `streamUrl`, `tokenValue`) opens the stream once, see
//! `crate::exec`. The `command` string is split into words like a shell splits them
//! (`berth_protocol::words`) and run without a shell.
//!
//! The cluster's `executeCommandConfiguration`: a `kmsKeyId` is refused (berth does not
//! encrypt the channel with KMS); `logging` is accepted and has no effect — session output
//! is not copied to CloudWatch or S3; every session's end is logged by the server.

use super::tasks::task_arn;
use super::{active_cluster, Ctx, OpResult, Principal};
use crate::exec::SessionInfo;
use berth_model::ecs::*;
use berth_model::{EcsError, ErrorKind};

/// What ExecuteCommand needs beyond the store: the agents' connections and the sessions.
pub trait ExecEnv {
    /// Whether the instance's agent is connected now.
    fn agent_connected(&self, instance_id: &str) -> bool;
    /// Issues a session; returns its id and token.
    fn issue(&self, info: SessionInfo) -> (String, String);
    /// The session's `streamUrl`.
    fn stream_url(&self, session_id: &str) -> String;
}

/// AWS's words for a task that cannot take exec sessions.
pub const NOT_ENABLED: &str = "The execute command failed because execute command was not enabled when the task was run or the execute command agent isn’t running. Wait and try again or run a new task with execute command enabled and try again.";

/// The longest command accepted.
const MAX_COMMAND: usize = 8192;

pub fn execute_command(
    ctx: &Ctx,
    env: &dyn ExecEnv,
    principal: &Principal,
    req: ExecuteCommandRequest,
) -> OpResult<ExecuteCommandResponse> {
    if !req.interactive {
        return Err(EcsError::invalid(
            "Interactive is the only mode supported currently.",
        ));
    }
    let command = req.command.clone().unwrap_or_default();
    if command.len() > MAX_COMMAND {
        return Err(EcsError::invalid(format!(
            "The command is longer than {MAX_COMMAND} characters."
        )));
    }
    let argv = berth_protocol::words::split(&command)
        .map_err(|e| EcsError::invalid(format!("The command cannot be split into words: {e}.")))?;
    if argv.is_empty() {
        return Err(EcsError::invalid("The command is empty."));
    }
    let Some(task_ref) = req.task.as_deref().filter(|t| !t.is_empty()) else {
        return Err(EcsError::invalid(
            "Missing required parameter in input: \"task\"",
        ));
    };
    let (cluster, task, instance_id) = ctx.store.read(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let arn = task_arn(ctx, &cluster, task_ref);
        let task = match tx.task(&arn)? {
            Some(t) if t.value.cluster_arn == cluster.cluster_arn => t.value,
            _ => return Err(EcsError::invalid("The referenced task was not found.")),
        };
        let instance = match task.container_instance_arn.as_deref() {
            Some(ci) => tx.container_instance(ci)?.map(|v| v.value),
            None => None,
        };
        Ok((cluster, task, instance))
    })?;
    let kms = cluster
        .configuration
        .as_ref()
        .and_then(|c| c.execute_command_configuration.as_ref())
        .and_then(|e| e.kms_key_id.as_deref())
        .filter(|k| !k.is_empty());
    if kms.is_some() {
        return Err(EcsError::new(
            ErrorKind::UnsupportedFeature,
            "The cluster's executeCommandConfiguration names a kmsKeyId: berth does not encrypt exec sessions with KMS. Remove the kmsKeyId to use ExecuteCommand.",
        ));
    }
    if !task.enable_execute_command {
        return Err(EcsError::invalid(NOT_ENABLED));
    }
    let task_arn = task.task_arn.clone().unwrap_or_default();
    let status = task.last_status.as_deref().unwrap_or("PROVISIONING");
    if status != "RUNNING" || task.desired_status.as_deref() == Some("STOPPED") {
        return Err(EcsError::invalid(format!(
            "The execute command failed because the task is not running: its last status is {status} and its desired status {}.",
            task.desired_status.as_deref().unwrap_or("RUNNING")
        )));
    }
    let containers = task.containers.clone().unwrap_or_default();
    let container = match req.container.as_deref().filter(|c| !c.is_empty()) {
        Some(name) => containers
            .iter()
            .find(|c| c.name.as_deref() == Some(name))
            .ok_or_else(|| {
                EcsError::invalid(format!("The task has no container named {name}."))
            })?,
        None if containers.len() == 1 => &containers[0],
        None => {
            return Err(EcsError::invalid(
                "The task has more than one container: name the one to run the command in with container.",
            ))
        }
    };
    let name = container.name.clone().unwrap_or_default();
    if container.last_status.as_deref() != Some("RUNNING") {
        return Err(EcsError::invalid(format!(
            "The execute command failed because container {name} is not running: its last status is {}.",
            container.last_status.as_deref().unwrap_or("PENDING")
        )));
    }
    let Some(instance) = instance_id else {
        return Err(EcsError::new(
            ErrorKind::TargetNotConnected,
            "The execute command failed because the task's container instance is not known.",
        ));
    };
    let instance_id = instance.ec2_instance_id.clone().unwrap_or_default();
    let capable = instance
        .attributes
        .iter()
        .flatten()
        .any(|a| a.name.as_deref() == Some(berth_protocol::EXEC_CAPABILITY));
    if !capable {
        return Err(EcsError::new(
            ErrorKind::TargetNotConnected,
            format!("The execute command failed because the agent of instance {instance_id} does not run exec sessions (it runs containers as plain processes, or is older than exec)."),
        ));
    }
    if !env.agent_connected(&instance_id) {
        return Err(EcsError::new(
            ErrorKind::TargetNotConnected,
            format!("The execute command failed because the agent of instance {instance_id} is not connected. Wait and try again."),
        ));
    }
    let (session_id, token) = env.issue(SessionInfo {
        session_id: String::new(),
        principal: principal.to_string(),
        cluster_arn: cluster.cluster_arn.clone().unwrap_or_default(),
        task_arn: task_arn.clone(),
        container: name.clone(),
        instance_id,
        command,
        argv,
    });
    Ok(ExecuteCommandResponse {
        cluster_arn: cluster.cluster_arn.clone(),
        container_arn: container.container_arn.clone(),
        container_name: Some(name),
        interactive: true,
        session: Some(Session {
            stream_url: Some(env.stream_url(&session_id)),
            session_id: Some(session_id),
            token_value: Some(token),
        }),
        task_arn: Some(task_arn),
    })
}

/// The `managedAgents` DescribeTasks shows on a container of an exec-enabled task: the
/// ExecuteCommandAgent, RUNNING while the container runs.
pub fn managed_agents(task: &Task, container: &Container) -> Option<Vec<ManagedAgent>> {
    if !task.enable_execute_command {
        return None;
    }
    let status = match container.last_status.as_deref() {
        Some("RUNNING") => "RUNNING",
        Some("STOPPED") => "STOPPED",
        _ => "PENDING",
    };
    Some(vec![ManagedAgent {
        name: Some(ManagedAgentName::ExecuteCommandAgent),
        last_status: Some(status.into()),
        last_started_at: if status == "PENDING" {
            None
        } else {
            task.started_at
        },
        reason: None,
    }])
}

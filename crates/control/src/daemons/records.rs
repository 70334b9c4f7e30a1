//! How daemons are stored: four document kinds (see [`berth_store::docs`]).
//!
//! | kind | key | parent | document |
//! | --- | --- | --- | --- |
//! | [`DAEMON_TD`] | `FAMILY:REVISION` (revision zero-padded to 10 digits, so keys sort by revision) | family | [`DaemonTdRecord`] |
//! | [`DAEMON`] | daemon ARN | cluster ARN | [`DaemonRecord`] |
//! | [`DAEMON_DEPLOYMENT`] | deployment ARN | daemon ARN | `DaemonDeployment` |
//! | [`DAEMON_REVISION`] | revision ARN | daemon ARN | `DaemonRevision` |
//!
//! A daemon's tasks are ordinary tasks of group `daemon:NAME` whose
//! `startedBy` is the id of the daemon revision they run (the last path
//! segment of its ARN) and whose task definition ARN is the daemon task
//! definition's.

use berth_model::arn::{Arn, Resource};
use berth_model::ecs::*;
use berth_model::EcsError;
use berth_store::{docs, Tx, Versioned};
use serde::{Deserialize, Serialize};

pub const DAEMON_TD: &str = "daemon-task-definition";
pub const DAEMON: &str = "daemon";
pub const DAEMON_DEPLOYMENT: &str = "daemon-deployment";
pub const DAEMON_REVISION: &str = "daemon-revision";

/// Tag that makes a daemon non-critical (`berth:critical` = `false`): its
/// task stopping does not mark the instance IMPAIRED. Every daemon is
/// critical otherwise, as in ECS.
pub const CRITICAL_TAG: &str = "berth:critical";

/// A registered daemon task definition and its tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonTdRecord {
    pub definition: DaemonTaskDefinition,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// A daemon: its public detail plus what the reconciler runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonRecord {
    /// What DescribeDaemon answers (`currentRevisions` kept by the reconciler).
    pub detail: DaemonDetail,
    pub name: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The revision whose tasks should run: the target of the last
    /// deployment, or the revision a rollback went back to.
    pub revision_arn: String,
    /// The capacity providers (ARNs) whose instances run the daemon.
    pub capacity_provider_arns: Vec<String>,
    #[serde(default)]
    pub deployment_configuration: Option<DaemonDeploymentConfiguration>,
}

impl DaemonRecord {
    /// Whether the daemon's failure marks its instance IMPAIRED.
    pub fn critical(&self) -> bool {
        !self
            .tags
            .iter()
            .any(|t| t.key.as_deref() == Some(CRITICAL_TAG) && t.value.as_deref() == Some("false"))
    }

    /// The group of the daemon's tasks.
    pub fn group(&self) -> String {
        group_of(&self.name)
    }
}

/// The group of a daemon's tasks: `daemon:NAME`.
pub fn group_of(name: &str) -> String {
    format!("daemon:{name}")
}

/// Whether a task is a daemon's.
pub fn is_daemon_task(t: &Task) -> bool {
    t.group.as_deref().is_some_and(|g| g.starts_with("daemon:"))
}

/// The last path segment of an ARN (a revision's or deployment's id).
pub fn id_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or("")
}

/// The document key of a daemon task definition revision.
pub fn td_key(family: &str, revision: i32) -> String {
    format!("{family}:{revision:010}")
}

/// A daemon task definition by ARN (any status).
pub fn load_td(tx: &dyn Tx, arn: &str) -> Result<Option<Versioned<DaemonTdRecord>>, EcsError> {
    let Ok(Arn {
        resource: Resource::DaemonTaskDefinition { family, revision },
        ..
    }) = Arn::parse(arn)
    else {
        return Ok(None);
    };
    Ok(docs::get(tx, DAEMON_TD, &td_key(&family, revision))?)
}

pub fn load_daemon(tx: &dyn Tx, arn: &str) -> Result<Option<Versioned<DaemonRecord>>, EcsError> {
    Ok(docs::get(tx, DAEMON, arn)?)
}

pub fn load_deployment(
    tx: &dyn Tx,
    arn: &str,
) -> Result<Option<Versioned<DaemonDeployment>>, EcsError> {
    Ok(docs::get(tx, DAEMON_DEPLOYMENT, arn)?)
}

pub fn load_revision(
    tx: &dyn Tx,
    arn: &str,
) -> Result<Option<Versioned<DaemonRevision>>, EcsError> {
    Ok(docs::get(tx, DAEMON_REVISION, arn)?)
}

/// Every daemon of a cluster, in ARN order.
pub fn cluster_daemons(
    tx: &dyn Tx,
    cluster_arn: &str,
) -> Result<Vec<Versioned<DaemonRecord>>, EcsError> {
    Ok(docs::all(tx, DAEMON, Some(cluster_arn))?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// A daemon task definition as the task definition its tasks run: host
/// network, MANAGED_INSTANCES, its containers and host volumes.
pub fn as_task_definition(d: &DaemonTaskDefinition) -> TaskDefinition {
    let containers = d
        .container_definitions
        .iter()
        .flatten()
        .filter_map(|c| {
            // The daemon container shape is a subset of the container
            // definition's, member for member.
            serde_json::to_value(c)
                .ok()
                .and_then(|v| serde_json::from_value::<ContainerDefinition>(v).ok())
        })
        .collect();
    let volumes = d
        .volumes
        .iter()
        .flatten()
        .map(|v| Volume {
            name: v.name.clone(),
            host: v.host.clone(),
            ..Default::default()
        })
        .collect();
    TaskDefinition {
        task_definition_arn: d.daemon_task_definition_arn.clone(),
        family: d.family.clone(),
        revision: d.revision,
        task_role_arn: d.task_role_arn.clone(),
        execution_role_arn: d.execution_role_arn.clone(),
        container_definitions: Some(containers),
        volumes: Some(volumes),
        cpu: d.cpu.clone(),
        memory: d.memory.clone(),
        network_mode: Some(NetworkMode::Host),
        requires_compatibilities: Some(vec![Compatibility::ManagedInstances]),
        status: Some(TaskDefinitionStatus::Active),
        registered_at: d.registered_at,
        ..Default::default()
    }
}

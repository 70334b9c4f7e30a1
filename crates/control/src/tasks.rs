//! New tasks, as RunTask and the service scheduler make them.

use berth_model::arn::ArnContext;
use berth_model::ecs::*;

/// What a new task is made of.
pub struct NewTask<'a> {
    pub arns: &'a ArnContext,
    pub cluster_name: &'a str,
    pub cluster_arn: &'a str,
    pub task_definition: &'a TaskDefinition,
    /// RunTask's overrides (empty for a service's task).
    pub overrides: &'a TaskOverride,
    pub network_configuration: Option<&'a NetworkConfiguration>,
    pub capacity_provider: String,
    /// `family:NAME` for a plain RunTask, `service:NAME` for a service's task.
    pub group: String,
    pub started_by: Option<String>,
    pub enable_execute_command: bool,
    pub tags: Vec<Tag>,
    /// Task-level cpu and memory (the definition's, or RunTask's overrides).
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub now: f64,
}

/// A new task in PROVISIONING, with a fresh id, its containers PENDING and,
/// for `awsvpc`, an ENI attachment waiting for its address.
pub fn build(n: &NewTask<'_>) -> Task {
    let td = n.task_definition;
    let containers = td.container_definitions.clone().unwrap_or_default();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let arn = n.arns.task(n.cluster_name, &id);
    let container_overrides: Vec<ContainerOverride> = containers
        .iter()
        .map(|c| {
            n.overrides
                .container_overrides
                .iter()
                .flatten()
                .find(|o| o.name == c.name)
                .cloned()
                .unwrap_or(ContainerOverride {
                    name: c.name.clone(),
                    ..Default::default()
                })
        })
        .collect();
    let task_containers = containers
        .iter()
        .map(|c| Container {
            container_arn: Some(format!(
                "arn:aws:ecs:{}:{}:container/{}/{}/{}",
                n.arns.region,
                n.arns.account,
                n.cluster_name,
                id,
                uuid::Uuid::new_v4()
            )),
            task_arn: Some(arn.clone()),
            name: c.name.clone(),
            image: c.image.clone(),
            last_status: Some("PENDING".into()),
            network_bindings: Some(vec![]),
            network_interfaces: Some(vec![]),
            health_status: Some(HealthStatus::Unknown),
            cpu: Some(c.cpu.to_string()),
            memory: c.memory.map(|m| m.to_string()),
            memory_reservation: c.memory_reservation.map(|m| m.to_string()),
            ..Default::default()
        })
        .collect();
    let attachments = if td.network_mode == Some(NetworkMode::Awsvpc) {
        let mut details = vec![];
        if let Some(s) = n
            .network_configuration
            .and_then(|n| n.awsvpc_configuration.as_ref())
            .and_then(|vpc| vpc.subnets.as_ref())
            .and_then(|s| s.first())
        {
            details.push(KeyValuePair {
                name: Some("subnetId".into()),
                value: Some(s.clone()),
            });
        }
        vec![Attachment {
            id: Some(uuid::Uuid::new_v4().to_string()),
            r#type: Some("ElasticNetworkInterface".into()),
            status: Some("PRECREATED".into()),
            details: Some(details),
        }]
    } else {
        vec![]
    };
    Task {
        attachments: Some(attachments),
        attributes: Some(vec![]),
        capacity_provider_name: Some(n.capacity_provider.clone()),
        cluster_arn: Some(n.cluster_arn.to_string()),
        containers: Some(task_containers),
        cpu: n.cpu.clone(),
        created_at: Some(n.now),
        desired_status: Some("RUNNING".into()),
        enable_execute_command: n.enable_execute_command,
        group: Some(n.group.clone()),
        health_status: Some(HealthStatus::Unknown),
        last_status: Some("PROVISIONING".into()),
        launch_type: Some(LaunchType::ManagedInstances),
        memory: n.memory.clone(),
        overrides: Some(TaskOverride {
            container_overrides: Some(container_overrides),
            inference_accelerator_overrides: Some(vec![]),
            ..n.overrides.clone()
        }),
        started_by: n.started_by.clone(),
        tags: Some(n.tags.clone()),
        task_arn: Some(arn),
        task_definition_arn: td.task_definition_arn.clone(),
        version: 1,
        ..Default::default()
    }
}

/// Asks a placed task to stop: desired STOPPED with `code` and `reason` (the
/// agent stops it and reports). A task already asked to stop, or gone, is
/// left as it is.
pub fn request_stop(
    tx: &dyn berth_store::Tx,
    task_arn: &str,
    code: TaskStopCode,
    reason: String,
    now: f64,
) -> Result<(), berth_model::EcsError> {
    let Some(current) = tx.task(task_arn)? else {
        return Ok(());
    };
    let mut t = current.value;
    if t.desired_status.as_deref() == Some("STOPPED") {
        return Ok(());
    }
    t.desired_status = Some("STOPPED".into());
    t.stop_code = Some(code);
    t.stopped_reason = Some(reason);
    t.stopping_at.get_or_insert(now);
    t.version += 1;
    tx.put_task(&t, berth_store::Expect::Version(current.version))?;
    Ok(())
}

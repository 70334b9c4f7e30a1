//! Task definitions: RegisterTaskDefinition, DescribeTaskDefinition,
//! ListTaskDefinitions, ListTaskDefinitionFamilies, DeregisterTaskDefinition,
//! DeleteTaskDefinitions.

use super::{decode_token, encode_token, page_size, Ctx, OpResult};
use berth_model::arn::{Arn, Resource};
use berth_model::ecs::*;
use berth_model::names::{ContainerName, Family};
use berth_model::resources::{parse_cpu, parse_memory};
use berth_model::{tags, EcsError};
use berth_store::{Expect, TaskDefinitionFilter, Tx, Versioned};

/// At most this many containers in one task definition, as in ECS.
const MAX_CONTAINERS: usize = 10;
/// ECS refuses task definitions larger than 64 KiB.
const MAX_TASK_DEFINITION_BYTES: usize = 64 * 1024;

/// Where a task definition's tags are kept (the TaskDefinition shape has none).
pub(super) fn tags_key(arn: &str) -> String {
    format!("tags/{arn}")
}

pub(super) fn load_tags(tx: &dyn Tx, arn: &str) -> OpResult<Vec<Tag>> {
    match tx.meta(&tags_key(arn))? {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| EcsError::server(format!("stored tags of {arn} are corrupt: {e}"))),
        None => Ok(vec![]),
    }
}

pub(super) fn save_tags(tx: &dyn Tx, arn: &str, list: &[Tag]) -> OpResult<()> {
    let text = serde_json::to_string(list).map_err(|e| EcsError::server(e.to_string()))?;
    tx.put_meta(&tags_key(arn), &text)?;
    Ok(())
}

/// What a `taskDefinition` parameter names: a family (latest ACTIVE), `family:revision`, or an ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TdRef {
    pub family: String,
    pub revision: Option<i32>,
}

pub(super) fn parse_ref(given: &str) -> OpResult<TdRef> {
    if given.starts_with("arn:") {
        return match Arn::parse(given)?.resource {
            Resource::TaskDefinition { family, revision } => Ok(TdRef {
                family,
                revision: Some(revision),
            }),
            _ => Err(EcsError::invalid(format!(
                "'{given}' is not a task definition ARN."
            ))),
        };
    }
    match given.rsplit_once(':') {
        Some((family, rev)) => {
            let revision = rev.parse::<i32>().ok().filter(|r| *r >= 1).ok_or_else(|| {
                EcsError::client(format!(
                    "Invalid revision number in '{given}'. Number: {rev}"
                ))
            })?;
            Ok(TdRef {
                family: family.to_string(),
                revision: Some(revision),
            })
        }
        None => Ok(TdRef {
            family: given.to_string(),
            revision: None,
        }),
    }
}

/// Looks a task definition up; `None` when it does not exist.
pub(super) fn find(tx: &dyn Tx, r: &TdRef) -> OpResult<Option<Versioned<TaskDefinition>>> {
    Ok(tx.task_definition(&r.family, r.revision)?)
}

fn validate_containers(
    defs: &mut [ContainerDefinition],
    mi_required: bool,
) -> OpResult<(i64, i64)> {
    if defs.is_empty() {
        return Err(EcsError::client("Container list cannot be empty."));
    }
    if defs.len() > MAX_CONTAINERS {
        return Err(EcsError::client(format!(
            "Too many containers: {} were given and a task definition can have at most {MAX_CONTAINERS}.",
            defs.len()
        )));
    }
    let mut names = std::collections::BTreeSet::new();
    let (mut cpu, mut memory) = (0i64, 0i64);
    for c in defs.iter_mut() {
        let name = ContainerName::parse(c.name.as_deref().unwrap_or(""))?;
        if !names.insert(name.to_string()) {
            return Err(EcsError::client(format!(
                "Duplicate container name '{name}' in the task definition."
            )));
        }
        if c.image.as_deref().map(str::trim).unwrap_or("").is_empty() {
            return Err(EcsError::client(format!(
                "Container '{name}' needs an image."
            )));
        }
        if c.cpu < 0 {
            return Err(EcsError::client(format!(
                "Container '{name}': cpu cannot be negative."
            )));
        }
        if let Some(m) = c.memory {
            if m < 6 {
                return Err(EcsError::client(format!(
                    "Invalid 'memory' setting for container '{name}'. The memory limit must be at least 6 MiB."
                )));
            }
        }
        if let Some(r) = c.memory_reservation {
            if r < 6 {
                return Err(EcsError::client(format!(
                    "Invalid 'memoryReservation' setting for container '{name}'. It must be at least 6 MiB."
                )));
            }
            if let Some(m) = c.memory {
                if r > m {
                    return Err(EcsError::client(format!(
                        "Invalid setting for container '{name}'. 'memoryReservation' must be less than or equal to 'memory'."
                    )));
                }
            }
        }
        for pm in c.port_mappings.get_or_insert_with(Vec::new).iter_mut() {
            let p = pm.container_port.unwrap_or(0);
            if pm.container_port_range.is_none() && !(1..=65535).contains(&p) {
                return Err(EcsError::client(format!(
                    "Container '{name}': containerPort must be between 1 and 65535."
                )));
            }
            if let Some(h) = pm.host_port {
                if !(0..=65535).contains(&h) {
                    return Err(EcsError::client(format!(
                        "Container '{name}': hostPort must be between 0 and 65535."
                    )));
                }
            }
            if pm.protocol.is_none() {
                pm.protocol = Some(TransportProtocol::Tcp);
            }
        }
        if mi_required {
            if let Some(c) = c
                .linux_parameters
                .as_ref()
                .and_then(|l| l.capabilities.as_ref())
            {
                for cap in c.add.iter().flatten().chain(c.drop.iter().flatten()) {
                    let norm = cap.trim_start_matches("CAP_");
                    if norm.is_empty() || !norm.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                    {
                        return Err(EcsError::client(format!(
                            "Container '{name}': '{cap}' is not a Linux capability."
                        )));
                    }
                }
            }
        }
        c.essential.get_or_insert(true);
        c.environment.get_or_insert_with(Vec::new);
        c.mount_points.get_or_insert_with(Vec::new);
        c.volumes_from.get_or_insert_with(Vec::new);
        cpu += i64::from(c.cpu);
        memory += i64::from(c.memory.or(c.memory_reservation).unwrap_or(0));
    }
    if !defs.iter().any(|c| c.essential == Some(true)) {
        return Err(EcsError::client(
            "Task definition does not have any essential container.",
        ));
    }
    Ok((cpu, memory))
}

/// Checks `volumes` and the containers' `mountPoints` and `volumesFrom` against them: volume
/// names are ECS's (1 to 255 letters, digits, `-`, `_`) and unique, `host.sourcePath` is an
/// absolute path, every `sourceVolume` is declared, every `containerPath` is absolute, every
/// `sourceContainer` is another container of the task.
fn validate_volumes(volumes: &[Volume], defs: &[ContainerDefinition]) -> OpResult<()> {
    let mut names = std::collections::BTreeSet::new();
    for v in volumes {
        let Some(name) = v.name.as_deref() else {
            continue;
        };
        let valid = !name.is_empty()
            && name.len() <= 255
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(EcsError::client(format!(
                "Invalid volume name '{name}'. Up to 255 letters (uppercase and lowercase), numbers, hyphens and underscores are allowed."
            )));
        }
        if !names.insert(name) {
            return Err(EcsError::client(format!(
                "Duplicate volume name '{name}' in the task definition."
            )));
        }
        if let Some(path) = v.host.as_ref().and_then(|h| h.source_path.as_deref()) {
            if !path.starts_with('/') {
                return Err(EcsError::client(format!(
                    "Invalid 'host.sourcePath' setting for volume '{name}'. '{path}' is not an absolute path."
                )));
            }
        }
    }
    for c in defs {
        let cname = c.name.as_deref().unwrap_or("");
        for mp in c.mount_points.iter().flatten() {
            let source = mp.source_volume.as_deref().unwrap_or("");
            if !names.contains(source) {
                return Err(EcsError::client(format!(
                    "Invalid 'mountPoints' setting for container '{cname}'. The source volume '{source}' is not declared in the task definition's volumes."
                )));
            }
            let path = mp.container_path.as_deref().unwrap_or("");
            if !path.starts_with('/') {
                return Err(EcsError::client(format!(
                    "Invalid 'mountPoints' setting for container '{cname}'. The container path '{path}' of volume '{source}' is not an absolute path."
                )));
            }
        }
        for vf in c.volumes_from.iter().flatten() {
            let source = vf.source_container.as_deref().unwrap_or("");
            if source == cname || !defs.iter().any(|d| d.name.as_deref() == Some(source)) {
                return Err(EcsError::client(format!(
                    "Invalid 'volumesFrom' setting for container '{cname}'. '{source}' is not another container of the task definition."
                )));
            }
        }
    }
    Ok(())
}

/// Why a task definition cannot run on managed instances, if it cannot.
fn managed_instances_problem(req: &RegisterTaskDefinitionRequest) -> Option<String> {
    if req.network_mode == Some(NetworkMode::Bridge) {
        return Some("The bridge network mode is not supported on MANAGED_INSTANCES; use awsvpc, host or none.".into());
    }
    if req
        .inference_accelerators
        .as_ref()
        .is_some_and(|v| !v.is_empty())
    {
        return Some("inferenceAccelerators are not supported on MANAGED_INSTANCES.".into());
    }
    if req.ephemeral_storage.is_some() {
        return Some(
            "ephemeralStorage is a Fargate parameter and is not supported on MANAGED_INSTANCES."
                .into(),
        );
    }
    if let Some(os) = req
        .runtime_platform
        .as_ref()
        .and_then(|p| p.operating_system_family)
    {
        if os != OSFamily::Linux {
            return Some(format!("The operating system family {os} is not supported on MANAGED_INSTANCES; only LINUX is."));
        }
    }
    if req
        .volumes
        .iter()
        .flatten()
        .any(|v| v.fsx_windows_file_server_volume_configuration.is_some())
    {
        return Some(
            "FSx for Windows File Server volumes are not supported on MANAGED_INSTANCES.".into(),
        );
    }
    None
}

pub fn register(
    ctx: &Ctx,
    req: RegisterTaskDefinitionRequest,
) -> OpResult<RegisterTaskDefinitionResponse> {
    let family = Family::parse(req.family.as_deref().unwrap_or(""))?;
    let size = serde_json::to_vec(&req).map(|v| v.len()).unwrap_or(0);
    if size > MAX_TASK_DEFINITION_BYTES {
        return Err(EcsError::client(format!(
            "The task definition is {size} bytes; a task definition can be at most 65536 bytes (64 KiB)."
        )));
    }
    let tag_list = req.tags.clone().unwrap_or_default();
    tags::validate(&tag_list)?;
    let requires = req.requires_compatibilities.clone().unwrap_or_default();
    let mi_required = requires.contains(&Compatibility::ManagedInstances);
    if requires.contains(&Compatibility::External) || requires.contains(&Compatibility::Fargate) {
        // Accepted and stored: berth places every task on managed instances.
    }
    let placement = req.placement_constraints.as_deref().unwrap_or_default();
    if placement.len() > berth_scheduler::placement::MAX_CONSTRAINTS {
        return Err(EcsError::invalid(
            "A task definition can have at most 10 placement constraints.",
        ));
    }
    for (i, c) in placement.iter().enumerate() {
        // The model allows memberOf only: distinctInstance is for RunTask and services.
        berth_scheduler::placement::Constraint::from_ecs("memberOf", c.expression.as_deref())
            .map_err(|e| EcsError::invalid(format!("placementConstraints[{i}]: {e}")))?;
    }
    let mut containers = req.container_definitions.clone().unwrap_or_default();
    let (sum_cpu, sum_memory) = validate_containers(&mut containers, mi_required)?;
    validate_volumes(req.volumes.as_deref().unwrap_or_default(), &containers)?;
    let task_cpu = req.cpu.as_deref().map(parse_cpu).transpose()?;
    let task_memory = req.memory.as_deref().map(parse_memory).transpose()?;
    if task_memory.is_none() {
        if let Some(c) = containers
            .iter()
            .find(|c| c.memory.is_none() && c.memory_reservation.is_none())
        {
            return Err(EcsError::client(format!(
                "Invalid setting for container '{}'. At least one of 'memory' or 'memoryReservation' must be specified.",
                c.name.as_deref().unwrap_or("")
            )));
        }
    }
    if let Some(tm) = task_memory {
        if sum_memory > tm as i64 {
            return Err(EcsError::client(format!(
                "The sum of the containers' memory ({sum_memory} MiB) is more than the task memory ({tm} MiB)."
            )));
        }
    }
    if let Some(tc) = task_cpu {
        if sum_cpu > i64::from(tc) {
            return Err(EcsError::client(format!(
                "The sum of the containers' cpu ({sum_cpu} units) is more than the task cpu ({tc} units)."
            )));
        }
    }
    let mi_problem = managed_instances_problem(&req);
    if mi_required {
        if let Some(p) = &mi_problem {
            return Err(EcsError::client(format!(
                "Task definition does not support launch_type MANAGED_INSTANCES. {p}"
            )));
        }
    }
    let network_mode = match req.network_mode {
        Some(m) => Some(m),
        None if mi_required => Some(NetworkMode::Awsvpc),
        None => None,
    };
    if network_mode == Some(NetworkMode::Awsvpc) {
        for c in containers.iter_mut() {
            for pm in c.port_mappings.iter_mut().flatten() {
                match pm.host_port {
                    None => pm.host_port = pm.container_port,
                    Some(h) if Some(h) != pm.container_port => {
                        return Err(EcsError::client(
                            "When networkMode=awsvpc, the host ports and container ports in port mappings must match.",
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    let mut compatibilities = vec![Compatibility::Ec2];
    if network_mode == Some(NetworkMode::Awsvpc) && task_cpu.is_some() && task_memory.is_some() {
        compatibilities.push(Compatibility::Fargate);
    }
    if mi_problem.is_none() {
        compatibilities.push(Compatibility::ManagedInstances);
    }
    ctx.store.write(|tx| {
        let revision = tx.next_revision(family.as_str())?;
        let arn = ctx.arns.task_definition(family.as_str(), revision);
        let td = TaskDefinition {
            task_definition_arn: Some(arn.clone()),
            container_definitions: Some(containers.clone()),
            family: Some(family.to_string()),
            task_role_arn: req.task_role_arn.clone(),
            execution_role_arn: req.execution_role_arn.clone(),
            network_mode,
            revision,
            volumes: Some(req.volumes.clone().unwrap_or_default()),
            status: Some(TaskDefinitionStatus::Active),
            requires_attributes: Some(vec![]),
            placement_constraints: Some(req.placement_constraints.clone().unwrap_or_default()),
            compatibilities: Some(compatibilities.clone()),
            runtime_platform: req.runtime_platform.clone(),
            requires_compatibilities: req.requires_compatibilities.clone(),
            cpu: task_cpu.map(|c| c.to_string()),
            memory: task_memory.map(|m| m.to_string()),
            inference_accelerators: req.inference_accelerators.clone(),
            pid_mode: req.pid_mode,
            ipc_mode: req.ipc_mode,
            proxy_configuration: req.proxy_configuration.clone(),
            registered_at: Some(ctx.now()),
            registered_by: Some(format!("arn:aws:iam::{}:root", ctx.arns.account)),
            ephemeral_storage: req.ephemeral_storage.clone(),
            enable_fault_injection: req.enable_fault_injection,
            ..Default::default()
        };
        tx.put_task_definition(&td, Expect::Absent)?;
        if !tag_list.is_empty() {
            save_tags(tx, &arn, &tag_list)?;
        }
        Ok(RegisterTaskDefinitionResponse {
            task_definition: Some(td),
            tags: Some(tag_list.clone()),
        })
    })
}

pub fn describe(
    ctx: &Ctx,
    req: DescribeTaskDefinitionRequest,
) -> OpResult<DescribeTaskDefinitionResponse> {
    let r = parse_ref(req.task_definition.as_deref().unwrap_or(""))?;
    let include_tags = req
        .include
        .as_deref()
        .unwrap_or_default()
        .contains(&TaskDefinitionField::Tags);
    ctx.store.read(|tx| {
        let Some(td) = find(tx, &r)? else {
            return Err(EcsError::client("Unable to describe task definition."));
        };
        let tags = if include_tags {
            Some(load_tags(
                tx,
                td.value.task_definition_arn.as_deref().unwrap_or(""),
            )?)
        } else {
            None
        };
        Ok(DescribeTaskDefinitionResponse {
            task_definition: Some(td.value),
            tags,
        })
    })
}

pub fn list(ctx: &Ctx, req: ListTaskDefinitionsRequest) -> OpResult<ListTaskDefinitionsResponse> {
    let limit = page_size(req.max_results, 100, 100)?;
    let after = decode_token(Operation::ListTaskDefinitions, req.next_token.as_deref())?;
    let filter = TaskDefinitionFilter {
        family: req.family_prefix.clone(),
        status: Some(req.status.unwrap_or(TaskDefinitionStatus::Active)),
        descending: req.sort == Some(SortOrder::Desc),
    };
    ctx.store.read(|tx| {
        let page = tx.task_definitions(&filter, after.as_deref(), limit)?;
        let next_token = page
            .next
            .as_deref()
            .map(|k| encode_token(Operation::ListTaskDefinitions, k));
        Ok(ListTaskDefinitionsResponse {
            task_definition_arns: Some(page.items),
            next_token,
        })
    })
}

pub fn list_families(
    ctx: &Ctx,
    req: ListTaskDefinitionFamiliesRequest,
) -> OpResult<ListTaskDefinitionFamiliesResponse> {
    let limit = page_size(req.max_results, 100, 100)?;
    let mut after = decode_token(
        Operation::ListTaskDefinitionFamilies,
        req.next_token.as_deref(),
    )?;
    let status = req.status.unwrap_or(TaskDefinitionFamilyStatus::All);
    ctx.store.read(|tx| {
        let mut families = vec![];
        loop {
            let want = limit - families.len();
            let page = match status {
                TaskDefinitionFamilyStatus::Active => tx.families(
                    req.family_prefix.as_deref(),
                    Some(TaskDefinitionStatus::Active),
                    after.as_deref(),
                    want,
                )?,
                TaskDefinitionFamilyStatus::All | TaskDefinitionFamilyStatus::Inactive => {
                    tx.families(req.family_prefix.as_deref(), None, after.as_deref(), want)?
                }
            };
            for f in page.items {
                // INACTIVE families are those with no ACTIVE revision left.
                if status != TaskDefinitionFamilyStatus::Inactive
                    || tx.task_definition(&f, None)?.is_none()
                {
                    families.push(f);
                }
            }
            after = page.next;
            if after.is_none() || families.len() == limit {
                break;
            }
        }
        let next_token = match (&after, families.last()) {
            (Some(_), Some(last)) => {
                Some(encode_token(Operation::ListTaskDefinitionFamilies, last))
            }
            _ => None,
        };
        Ok(ListTaskDefinitionFamiliesResponse {
            families: Some(families),
            next_token,
        })
    })
}

pub fn deregister(
    ctx: &Ctx,
    req: DeregisterTaskDefinitionRequest,
) -> OpResult<DeregisterTaskDefinitionResponse> {
    let given = req.task_definition.clone().unwrap_or_default();
    let r = parse_ref(&given)?;
    if r.revision.is_none() {
        return Err(EcsError::client(format!(
            "Invalid revision number in '{given}': a revision is required to deregister a task definition (family:revision)."
        )));
    }
    ctx.store.write(|tx| {
        let Some(Versioned {
            version,
            value: mut td,
        }) = find(tx, &r)?
        else {
            return Err(EcsError::client(
                "The specified task definition does not exist.",
            ));
        };
        if td.status == Some(TaskDefinitionStatus::Active) {
            td.status = Some(TaskDefinitionStatus::Inactive);
            td.deregistered_at = Some(ctx.now());
            tx.put_task_definition(&td, Expect::Version(version))?;
        }
        Ok(DeregisterTaskDefinitionResponse {
            task_definition: Some(td),
        })
    })
}

pub fn delete(
    ctx: &Ctx,
    req: DeleteTaskDefinitionsRequest,
) -> OpResult<DeleteTaskDefinitionsResponse> {
    let wanted = req.task_definitions.clone().unwrap_or_default();
    if wanted.is_empty() || wanted.len() > 10 {
        return Err(EcsError::invalid(
            "DeleteTaskDefinitions takes between 1 and 10 task definitions.",
        ));
    }
    ctx.store.write(|tx| {
        let mut deleted = vec![];
        let mut failures = vec![];
        for w in &wanted {
            let fail = |reason: &str| Failure {
                arn: Some(w.clone()),
                reason: Some(reason.to_string()),
                detail: None,
            };
            let r = match parse_ref(w) {
                Ok(r) if r.revision.is_some() => r,
                _ => {
                    failures.push(fail("The specified task definition identifier is invalid. Specify a valid name or ARN and try again."));
                    continue;
                }
            };
            match find(tx, &r)? {
                None => failures.push(fail("The specified task definition does not exist. Specify a valid account, family, revision and try again.")),
                Some(Versioned { value, .. }) if value.status == Some(TaskDefinitionStatus::Active) => failures.push(fail(
                    "The specified task definition is still in ACTIVE status. Please deregister the target and try again.",
                )),
                Some(Versioned { version, value: mut td }) => {
                    if td.status != Some(TaskDefinitionStatus::DeleteInProgress) {
                        td.status = Some(TaskDefinitionStatus::DeleteInProgress);
                        td.delete_requested_at = Some(ctx.now());
                        tx.put_task_definition(&td, Expect::Version(version))?;
                    }
                    deleted.push(td);
                }
            }
        }
        Ok(DeleteTaskDefinitionsResponse { task_definitions: Some(deleted), failures: Some(failures) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        assert_eq!(
            parse_ref("web").ok(),
            Some(TdRef {
                family: "web".into(),
                revision: None
            })
        );
        assert_eq!(
            parse_ref("web:3").ok(),
            Some(TdRef {
                family: "web".into(),
                revision: Some(3)
            })
        );
        assert_eq!(
            parse_ref("arn:aws:ecs:us-east-1:000000000000:task-definition/web:7").ok(),
            Some(TdRef {
                family: "web".into(),
                revision: Some(7)
            })
        );
        assert!(parse_ref("web:0").is_err());
        assert!(parse_ref("web:x").is_err());
        assert!(parse_ref("arn:aws:ecs:us-east-1:000000000000:cluster/x").is_err());
    }
}

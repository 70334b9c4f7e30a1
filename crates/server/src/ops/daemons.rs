//! ECS managed daemons, the API half: RegisterDaemonTaskDefinition,
//! DescribeDaemonTaskDefinition, ListDaemonTaskDefinitions,
//! DeleteDaemonTaskDefinition, CreateDaemon, UpdateDaemon, DeleteDaemon,
//! DescribeDaemon, ListDaemons, DescribeDaemonDeployments,
//! ListDaemonDeployments, DescribeDaemonRevisions.
//!
//! # Design
//!
//! No task is started or stopped here: the daemon reconciler
//! (`berth_control::daemons`) runs one task of each daemon on every instance
//! of its capacity providers and moves deployments along. What both halves
//! share is the storage contract of [`berth_control::daemons::records`]:
//!
//! - a daemon task definition is a `DAEMON_TD` document keyed
//!   `FAMILY:REVISION`; revision numbers come from the meta counter
//!   `daemon-td-revision/FAMILY`, so a number is never given out twice;
//! - a daemon is a `DAEMON` document ([`DaemonRecord`]) keyed by its ARN under
//!   its cluster's ARN;
//! - every CreateDaemon and UpdateDaemon records an immutable
//!   `DaemonRevision` (what to run: the task definition and its images, tag
//!   propagation, execute command) and a `DaemonDeployment` (the rollout to
//!   it, PENDING until the reconciler picks it up), both under the daemon's
//!   ARN. The record's `revision_arn` and `capacity_provider_arns` say what
//!   should run where; an update stops the deployment still in progress
//!   (`Stopped: replaced by deployment ID.`).
//!
//! Each write is one store transaction; every check that needs no store runs
//! before it, the others before the first write, so a refused request leaves
//! nothing behind.
//!
//! # Deletion
//!
//! DeleteDaemonTaskDefinition makes a daemon task definition
//! DELETE_IN_PROGRESS while the current revision of an ACTIVE daemon runs it
//! (the reconciler finishes the deletion), DELETED otherwise; the document is
//! kept, so DescribeDaemonTaskDefinition shows DELETED (the
//! `DaemonTaskDefinitionDeleted` waiter). DeleteDaemon makes the daemon
//! DELETE_IN_PROGRESS and stops its deployment in progress; the reconciler
//! stops its tasks and then removes the daemon's document, after which
//! DescribeDaemon answers DaemonNotFoundException. Deployments and revisions
//! stay describable.
//!
//! # Limitations
//!
//! - CreateDaemon's `clientToken` is remembered for as long as the daemon it
//!   created exists; once the daemon is removed the token is free again.
//! - A daemon created again under the name of a removed one has the same
//!   ARN, so ListDaemonDeployments lists the old daemon's deployments too.
//! - `deploymentConfiguration`, when given, is complete: members left out take
//!   their defaults (drainPercent 25, bakeTimeInMinutes 0, no alarms). When
//!   UpdateDaemon leaves it out, the daemon keeps its configuration.
//!   UpdateDaemon's `propagateTags`, `enableECSManagedTags` and
//!   `enableExecuteCommand` describe the new revision, as CreateDaemon's do
//!   (absent: NONE, false, false).
//! - CloudWatch alarms are recorded but not watched; image digests are not
//!   resolved.

use super::{active_cluster, decode_token, encode_token, page_size, Ctx, OpResult};
use berth_control::daemons::{
    self, DaemonRecord, DaemonTdRecord, DAEMON, DAEMON_DEPLOYMENT, DAEMON_REVISION, DAEMON_TD,
};
use berth_model::arn::{Arn, Resource};
use berth_model::ecs::*;
use berth_model::resources::{parse_cpu, parse_memory};
use berth_model::{tags, EcsError, ErrorKind};
use berth_store::{docs, Expect, Tx, Versioned};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::BTreeSet;

/// At most this many containers in one daemon task definition, as for task definitions.
const MAX_CONTAINERS: usize = 10;
/// Daemon task definitions larger than 64 KiB are refused, as task definitions are.
const MAX_DEFINITION_BYTES: usize = 64 * 1024;
/// DescribeDaemonDeployments and DescribeDaemonRevisions take at most this many ARNs.
const DESCRIBE_MAX: usize = 20;
/// The share of instances drained at once when `drainPercent` is not given.
const DEFAULT_DRAIN_PERCENT: f64 = 25.0;
/// The status a deployment still moving has.
const IN_PROGRESS: [DaemonDeploymentStatus; 3] = [
    DaemonDeploymentStatus::Pending,
    DaemonDeploymentStatus::InProgress,
    DaemonDeploymentStatus::RollbackInProgress,
];

fn not_found() -> EcsError {
    EcsError::new(ErrorKind::DaemonNotFound, "Daemon not found.")
}

fn not_active() -> EcsError {
    EcsError::new(
        ErrorKind::DaemonNotActive,
        "Daemon is not ACTIVE: it is being deleted.",
    )
}

/// Checks a name of the ECS kind: up to 255 letters, numbers, hyphens and underscores.
fn check_name(member: &str, value: &str) -> OpResult<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if value.is_empty() || value.len() > 255 || !value.chars().all(ok) {
        return Err(EcsError::invalid(format!(
            "{member} '{value}' is invalid: up to 255 letters (uppercase and lowercase), numbers, hyphens and underscores are allowed."
        )));
    }
    Ok(())
}

fn ours(ctx: &Ctx, arn: &Arn) -> bool {
    arn.region == ctx.arns.region && arn.account == ctx.arns.account
}

// ---------------------------------------------------------------------------
// Daemon task definitions.

/// What a daemon task definition parameter names: a family (its latest
/// ACTIVE revision), `family:revision`, or an ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TdRef {
    family: String,
    revision: Option<i32>,
}

fn parse_td_ref(ctx: &Ctx, member: &str, given: &str) -> OpResult<TdRef> {
    if given.starts_with("arn:") {
        let bad = || {
            EcsError::invalid(format!(
                "{member} '{given}' is not a daemon task definition ARN of this account and region."
            ))
        };
        let arn = Arn::parse(given).map_err(|_| bad())?;
        return match &arn.resource {
            Resource::DaemonTaskDefinition { family, revision } if ours(ctx, &arn) => Ok(TdRef {
                family: family.clone(),
                revision: Some(*revision),
            }),
            _ => Err(bad()),
        };
    }
    let (family, revision) = match given.rsplit_once(':') {
        Some((family, rev)) => {
            let revision = rev.parse::<i32>().ok().filter(|r| *r >= 1).ok_or_else(|| {
                EcsError::invalid(format!(
                    "{member} '{given}': invalid revision number '{rev}'; revisions are whole numbers from 1."
                ))
            })?;
            (family, Some(revision))
        }
        None => (given, None),
    };
    check_name(&format!("{member}: the family"), family)?;
    Ok(TdRef {
        family: family.to_string(),
        revision,
    })
}

/// The daemon task definition a reference names, in any status; a bare
/// family names its latest ACTIVE revision.
fn find_td(tx: &dyn Tx, r: &TdRef) -> OpResult<Option<Versioned<DaemonTdRecord>>> {
    match r.revision {
        Some(rev) => Ok(docs::get(tx, DAEMON_TD, &daemons::td_key(&r.family, rev))?),
        None => Ok(docs::all::<DaemonTdRecord>(tx, DAEMON_TD, Some(&r.family))?
            .into_iter()
            .map(|(_, v)| v)
            .filter(|v| v.value.definition.status == Some(DaemonTaskDefinitionStatus::Active))
            .max_by_key(|v| v.value.definition.revision)),
    }
}

/// The ACTIVE daemon task definition a CreateDaemon or UpdateDaemon names.
fn usable_td(ctx: &Ctx, tx: &dyn Tx, given: &str) -> OpResult<DaemonTaskDefinition> {
    let r = parse_td_ref(ctx, "daemonTaskDefinitionArn", given)?;
    match find_td(tx, &r)? {
        Some(td) if td.value.definition.status == Some(DaemonTaskDefinitionStatus::Active) => {
            Ok(td.value.definition)
        }
        Some(td) => Err(EcsError::invalid(format!(
            "daemonTaskDefinitionArn: the daemon task definition '{given}' is {}, not ACTIVE.",
            td.value
                .definition
                .status
                .map(|s| s.as_str())
                .unwrap_or("unknown")
        ))),
        None => Err(EcsError::invalid(format!(
            "daemonTaskDefinitionArn: the daemon task definition '{given}' does not exist."
        ))),
    }
}

fn revision_key(family: &str) -> String {
    format!("daemon-td-revision/{family}")
}

/// Checks the volumes; returns their names.
fn check_volumes(volumes: &[DaemonVolume]) -> OpResult<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let Some(name) = v.name.as_deref() else {
            return Err(EcsError::invalid(format!("volumes[{i}].name is required.")));
        };
        check_name(&format!("volumes[{i}].name"), name)?;
        if !names.insert(name.to_string()) {
            return Err(EcsError::invalid(format!(
                "volumes: the volume name '{name}' is used more than once."
            )));
        }
        if let Some(path) = v.host.as_ref().and_then(|h| h.source_path.as_deref()) {
            if !path.starts_with('/') {
                return Err(EcsError::invalid(format!(
                    "volumes[{i}] ({name}): host.sourcePath '{path}' must be an absolute path."
                )));
            }
        }
    }
    Ok(names)
}

/// Checks the containers (filling `essential`); returns the sums of their
/// cpu and memory (a container's memory, else its reservation).
fn check_containers(
    defs: &mut [DaemonContainerDefinition],
    volumes: &BTreeSet<String>,
) -> OpResult<(i64, i64)> {
    if defs.is_empty() {
        return Err(EcsError::invalid(
            "containerDefinitions must have at least one container.",
        ));
    }
    if defs.len() > MAX_CONTAINERS {
        return Err(EcsError::invalid(format!(
            "containerDefinitions: {} containers were given and a daemon task definition can have at most {MAX_CONTAINERS}.",
            defs.len()
        )));
    }
    let mut names = BTreeSet::new();
    for (i, c) in defs.iter().enumerate() {
        let name = c.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Err(EcsError::invalid(format!(
                "containerDefinitions[{i}].name is required: berth needs every container of a daemon task definition to have a unique name."
            )));
        }
        check_name(&format!("containerDefinitions[{i}].name"), name)?;
        if !names.insert(name.to_string()) {
            return Err(EcsError::invalid(format!(
                "containerDefinitions: the container name '{name}' is used more than once."
            )));
        }
    }
    let (mut cpu, mut memory) = (0i64, 0i64);
    for (i, c) in defs.iter_mut().enumerate() {
        let name = c.name.clone().unwrap_or_default();
        let at = format!("containerDefinitions[{i}] ({name})");
        if c.image.as_deref().map(str::trim).unwrap_or("").is_empty() {
            return Err(EcsError::invalid(format!("{at}: image is required.")));
        }
        if c.cpu < 0 {
            return Err(EcsError::invalid(format!("{at}: cpu cannot be negative.")));
        }
        if let Some(m) = c.memory {
            if m < 6 {
                return Err(EcsError::invalid(format!(
                    "{at}: memory must be at least 6 MiB; {m} was given."
                )));
            }
        }
        if let Some(r) = c.memory_reservation {
            if r < 6 {
                return Err(EcsError::invalid(format!(
                    "{at}: memoryReservation must be at least 6 MiB; {r} was given."
                )));
            }
            if c.memory.is_some_and(|m| r > m) {
                return Err(EcsError::invalid(format!(
                    "{at}: memoryReservation must be less than or equal to memory."
                )));
            }
        }
        for (j, mp) in c.mount_points.iter().flatten().enumerate() {
            let source = mp.source_volume.as_deref().unwrap_or("");
            if !volumes.contains(source) {
                return Err(EcsError::invalid(format!(
                    "{at}: mountPoints[{j}].sourceVolume '{source}' is not a volume of the daemon task definition."
                )));
            }
            if mp.container_path.as_deref().unwrap_or("").is_empty() {
                return Err(EcsError::invalid(format!(
                    "{at}: mountPoints[{j}].containerPath is required."
                )));
            }
        }
        for (j, d) in c.depends_on.iter().flatten().enumerate() {
            let other = d.container_name.as_deref().unwrap_or("");
            if other == name || !names.contains(other) {
                return Err(EcsError::invalid(format!(
                    "{at}: dependsOn[{j}].containerName '{other}' is not another container of the daemon task definition."
                )));
            }
        }
        c.essential.get_or_insert(true);
        cpu += i64::from(c.cpu);
        memory += i64::from(c.memory.or(c.memory_reservation).unwrap_or(0));
    }
    if !defs.iter().any(|c| c.essential == Some(true)) {
        return Err(EcsError::invalid(
            "containerDefinitions: at least one container must be essential.",
        ));
    }
    Ok((cpu, memory))
}

pub fn register_task_definition(
    ctx: &Ctx,
    req: RegisterDaemonTaskDefinitionRequest,
) -> OpResult<RegisterDaemonTaskDefinitionResponse> {
    let family = req.family.clone().unwrap_or_default();
    check_name("family", &family)?;
    let size = serde_json::to_vec(&req).map(|v| v.len()).unwrap_or(0);
    if size > MAX_DEFINITION_BYTES {
        return Err(EcsError::invalid(format!(
            "The daemon task definition is {size} bytes; it can be at most {MAX_DEFINITION_BYTES} bytes (64 KiB)."
        )));
    }
    let tag_list = req.tags.clone().unwrap_or_default();
    tags::validate(&tag_list)?;
    let volumes = req.volumes.clone().unwrap_or_default();
    let volume_names = check_volumes(&volumes)?;
    let mut containers = req.container_definitions.clone().unwrap_or_default();
    let (sum_cpu, sum_memory) = check_containers(&mut containers, &volume_names)?;
    let task_cpu = req.cpu.as_deref().map(parse_cpu).transpose()?;
    let task_memory = req.memory.as_deref().map(parse_memory).transpose()?;
    match task_memory {
        None => {
            if let Some(c) = containers
                .iter()
                .find(|c| c.memory.is_none() && c.memory_reservation.is_none())
            {
                return Err(EcsError::invalid(format!(
                    "memory: the daemon task definition has no task memory, so every container needs memory or memoryReservation; container '{}' has neither.",
                    c.name.as_deref().unwrap_or("")
                )));
            }
        }
        Some(tm) => {
            if sum_memory > tm as i64 {
                return Err(EcsError::invalid(format!(
                    "memory: the containers' memory adds up to {sum_memory} MiB, more than the task memory ({tm} MiB)."
                )));
            }
        }
    }
    if let Some(tc) = task_cpu {
        if sum_cpu > i64::from(tc) {
            return Err(EcsError::invalid(format!(
                "cpu: the containers' cpu adds up to {sum_cpu} units, more than the task cpu ({tc} units)."
            )));
        }
    }
    ctx.store.write(|tx| {
        let key = revision_key(&family);
        let last = match tx.meta(&key)? {
            Some(text) => text.parse::<i32>().map_err(|_| {
                EcsError::server(format!("the stored revision counter {key} is corrupt"))
            })?,
            None => 0,
        };
        let revision = last.checked_add(1).ok_or_else(|| {
            EcsError::new(
                ErrorKind::LimitExceeded,
                format!("The daemon task definition family {family} has no revision numbers left."),
            )
        })?;
        tx.put_meta(&key, &revision.to_string())?;
        let arn = ctx.arns.daemon_task_definition(&family, revision);
        let definition = DaemonTaskDefinition {
            daemon_task_definition_arn: Some(arn.clone()),
            family: Some(family.clone()),
            revision,
            task_role_arn: req.task_role_arn.clone(),
            execution_role_arn: req.execution_role_arn.clone(),
            container_definitions: Some(containers.clone()),
            volumes: Some(volumes.clone()),
            cpu: task_cpu.map(|c| c.to_string()),
            memory: task_memory.map(|m| m.to_string()),
            status: Some(DaemonTaskDefinitionStatus::Active),
            registered_at: Some(ctx.now()),
            delete_requested_at: None,
            registered_by: Some(format!("arn:aws:iam::{}:root", ctx.arns.account)),
        };
        docs::put(
            tx,
            DAEMON_TD,
            &daemons::td_key(&family, revision),
            &family,
            &DaemonTdRecord {
                definition,
                tags: tag_list.clone(),
            },
            Expect::Absent,
        )?;
        Ok(RegisterDaemonTaskDefinitionResponse {
            daemon_task_definition_arn: Some(arn),
        })
    })
}

pub fn describe_task_definition(
    ctx: &Ctx,
    req: DescribeDaemonTaskDefinitionRequest,
) -> OpResult<DescribeDaemonTaskDefinitionResponse> {
    let r = parse_td_ref(
        ctx,
        "daemonTaskDefinition",
        req.daemon_task_definition.as_deref().unwrap_or(""),
    )?;
    ctx.store.read(|tx| match find_td(tx, &r)? {
        Some(td) => Ok(DescribeDaemonTaskDefinitionResponse {
            daemon_task_definition: Some(td.value.definition),
        }),
        None => Err(EcsError::client(
            "Unable to describe daemon task definition.",
        )),
    })
}

/// A ListDaemonTaskDefinitions token's key: `FAMILY:REVISION`.
fn td_position(key: &str) -> OpResult<(String, i32)> {
    key.rsplit_once(':')
        .and_then(|(f, r)| Some((f.to_string(), r.parse::<i32>().ok()?)))
        .ok_or_else(|| {
            EcsError::invalid("The nextToken is invalid: pass the nextToken exactly as a previous call of this operation returned it.")
        })
}

pub fn list_task_definitions(
    ctx: &Ctx,
    req: ListDaemonTaskDefinitionsRequest,
) -> OpResult<ListDaemonTaskDefinitionsResponse> {
    let limit = page_size(req.max_results, 100, 100)?;
    let after = decode_token(
        Operation::ListDaemonTaskDefinitions,
        req.next_token.as_deref(),
    )?
    .map(|k| td_position(&k))
    .transpose()?;
    let descending = req.sort == Some(SortOrder::Desc);
    let status = req
        .status
        .unwrap_or(DaemonTaskDefinitionStatusFilter::Active);
    ctx.store.read(|tx| {
        let mut found: Vec<DaemonTaskDefinition> =
            docs::all::<DaemonTdRecord>(tx, DAEMON_TD, req.family.as_deref())?
                .into_iter()
                .map(|(_, v)| v.value.definition)
                .filter(|d| {
                    let family = d.family.as_deref().unwrap_or("");
                    req.family_prefix
                        .as_deref()
                        .is_none_or(|p| family.starts_with(p))
                })
                .filter(|d| match status {
                    DaemonTaskDefinitionStatusFilter::Active => {
                        d.status == Some(DaemonTaskDefinitionStatus::Active)
                    }
                    DaemonTaskDefinitionStatusFilter::DeleteInProgress => {
                        d.status == Some(DaemonTaskDefinitionStatus::DeleteInProgress)
                    }
                    DaemonTaskDefinitionStatusFilter::All => true,
                })
                .collect();
        let position =
            |d: &DaemonTaskDefinition| (d.family.clone().unwrap_or_default(), d.revision);
        found.sort_by_key(position);
        if req.revision == Some(DaemonTaskDefinitionRevisionFilter::LastRegistered) {
            // Sorted by family then revision: the last of each family is its newest.
            let mut newest: Vec<DaemonTaskDefinition> = vec![];
            for d in found {
                match newest.last_mut() {
                    Some(prev) if prev.family == d.family => *prev = d,
                    _ => newest.push(d),
                }
            }
            found = newest;
        }
        if descending {
            found.reverse();
        }
        let rest: Vec<DaemonTaskDefinition> = found
            .into_iter()
            .filter(|d| match &after {
                None => true,
                Some(a) if descending => position(d) < *a,
                Some(a) => position(d) > *a,
            })
            .collect();
        let more = rest.len() > limit;
        let page: Vec<DaemonTaskDefinition> = rest.into_iter().take(limit).collect();
        let next_token = if more {
            page.last().map(|d| {
                encode_token(
                    Operation::ListDaemonTaskDefinitions,
                    &format!("{}:{}", d.family.as_deref().unwrap_or(""), d.revision),
                )
            })
        } else {
            None
        };
        Ok(ListDaemonTaskDefinitionsResponse {
            daemon_task_definitions: Some(
                page.into_iter()
                    .map(|d| DaemonTaskDefinitionSummary {
                        arn: d.daemon_task_definition_arn,
                        registered_at: d.registered_at,
                        registered_by: d.registered_by,
                        delete_requested_at: d.delete_requested_at,
                        status: d.status,
                    })
                    .collect(),
            ),
            next_token,
        })
    })
}

/// Whether the current revision of an ACTIVE daemon runs this daemon task definition.
fn td_in_use(tx: &dyn Tx, td_arn: &str) -> OpResult<bool> {
    for (_, d) in docs::all::<DaemonRecord>(tx, DAEMON, None)? {
        if d.value.detail.status != Some(DaemonStatus::Active) {
            continue;
        }
        if let Some(rev) = daemons::load_revision(tx, &d.value.revision_arn)? {
            if rev.value.daemon_task_definition_arn.as_deref() == Some(td_arn) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

pub fn delete_task_definition(
    ctx: &Ctx,
    req: DeleteDaemonTaskDefinitionRequest,
) -> OpResult<DeleteDaemonTaskDefinitionResponse> {
    let given = req.daemon_task_definition.clone().unwrap_or_default();
    let r = parse_td_ref(ctx, "daemonTaskDefinition", &given)?;
    let Some(revision) = r.revision else {
        return Err(EcsError::invalid(format!(
            "daemonTaskDefinition '{given}' must name a revision: pass family:revision or the ARN."
        )));
    };
    ctx.store.write(|tx| {
        let Some(Versioned {
            version,
            value: mut record,
        }) = find_td(tx, &r)?
        else {
            return Err(EcsError::client(format!(
                "The daemon task definition '{given}' does not exist."
            )));
        };
        let d = &mut record.definition;
        let arn = d.daemon_task_definition_arn.clone().unwrap_or_default();
        let next = match d.status {
            Some(DaemonTaskDefinitionStatus::Deleted) => None,
            // Asked again: done if no daemon runs it any more.
            Some(DaemonTaskDefinitionStatus::DeleteInProgress) => {
                (!td_in_use(tx, &arn)?).then_some(DaemonTaskDefinitionStatus::Deleted)
            }
            _ => Some(if td_in_use(tx, &arn)? {
                DaemonTaskDefinitionStatus::DeleteInProgress
            } else {
                DaemonTaskDefinitionStatus::Deleted
            }),
        };
        if let Some(status) = next {
            d.status = Some(status);
            d.delete_requested_at.get_or_insert(ctx.now());
            docs::put(
                tx,
                DAEMON_TD,
                &daemons::td_key(&r.family, revision),
                &r.family,
                &record,
                Expect::Version(version),
            )?;
        }
        Ok(DeleteDaemonTaskDefinitionResponse {
            daemon_task_definition_arn: Some(arn),
        })
    })
}

// ---------------------------------------------------------------------------
// Daemons.

/// The canonical ARN a `daemonArn` parameter names; a daemon ARN of another
/// account or region names no daemon here.
fn daemon_arn(ctx: &Ctx, given: &str) -> OpResult<Result<String, EcsError>> {
    let bad = || {
        EcsError::invalid(format!(
            "daemonArn '{given}' is not a daemon ARN (arn:aws:ecs:REGION:ACCOUNT:daemon/CLUSTER/NAME)."
        ))
    };
    let arn = Arn::parse(given).map_err(|_| bad())?;
    match &arn.resource {
        Resource::Daemon { cluster, name } if ours(ctx, &arn) => {
            Ok(Ok(ctx.arns.daemon(cluster, name)))
        }
        Resource::Daemon { .. } => Ok(Err(not_found())),
        _ => Err(bad()),
    }
}

/// The daemon a `daemonArn` names, or DaemonNotFoundException.
fn lookup(ctx: &Ctx, tx: &dyn Tx, given: &str) -> OpResult<Versioned<DaemonRecord>> {
    let arn = daemon_arn(ctx, given)??;
    daemons::load_daemon(tx, &arn)?.ok_or_else(not_found)
}

/// The canonical ARN of a capacity provider given by name or ARN, and its name.
fn provider_ref(ctx: &Ctx, member: &str, given: &str) -> OpResult<(String, String)> {
    if !given.starts_with("arn:") {
        return Ok((ctx.arns.capacity_provider(given), given.to_string()));
    }
    let bad = || {
        EcsError::invalid(format!(
            "{member}: '{given}' is not a capacity provider ARN of this account and region."
        ))
    };
    let arn = Arn::parse(given).map_err(|_| bad())?;
    match &arn.resource {
        Resource::CapacityProvider { name } if ours(ctx, &arn) => {
            Ok((ctx.arns.capacity_provider(name), name.clone()))
        }
        _ => Err(bad()),
    }
}

/// The managed instances capacity providers of `cluster` a request names, as
/// canonical ARNs without repeats.
fn resolve_providers(
    ctx: &Ctx,
    tx: &dyn Tx,
    cluster: &Cluster,
    given: &[String],
) -> OpResult<Vec<String>> {
    const MEMBER: &str = "capacityProviderArns";
    if given.is_empty() {
        return Err(EcsError::invalid(format!(
            "{MEMBER} must name at least one managed instances capacity provider of the cluster."
        )));
    }
    let cluster_name = cluster.cluster_name.as_deref().unwrap_or("");
    let associated = cluster.capacity_providers.as_deref().unwrap_or_default();
    let mut arns: Vec<String> = vec![];
    for g in given {
        let (arn, name) = provider_ref(ctx, MEMBER, g)?;
        let Some(cp) = tx.capacity_provider(&name)? else {
            return Err(EcsError::invalid(format!(
                "{MEMBER}: the capacity provider '{g}' does not exist."
            )));
        };
        if cp.value.managed_instances_provider.is_none() {
            return Err(EcsError::invalid(format!(
                "{MEMBER}: the capacity provider '{g}' is not a managed instances capacity provider; daemons run only on managed instances."
            )));
        }
        if cp.value.status != Some(CapacityProviderStatus::Active) {
            return Err(EcsError::invalid(format!(
                "{MEMBER}: the capacity provider '{g}' is not ACTIVE."
            )));
        }
        if !associated.iter().any(|a| a == &name) {
            return Err(EcsError::invalid(format!(
                "{MEMBER}: the capacity provider '{g}' is not associated with the cluster {cluster_name}."
            )));
        }
        if !arns.contains(&arn) {
            arns.push(arn);
        }
    }
    Ok(arns)
}

/// The deployment configuration a request gives, checked, with defaults for
/// what it leaves out; `current` when it gives none.
fn deployment_configuration(
    given: Option<&DaemonDeploymentConfiguration>,
    current: Option<&DaemonDeploymentConfiguration>,
) -> OpResult<DaemonDeploymentConfiguration> {
    let defaults = || DaemonDeploymentConfiguration {
        drain_percent: Some(DEFAULT_DRAIN_PERCENT),
        alarms: Some(DaemonAlarmConfiguration {
            alarm_names: Some(vec![]),
            enable: false,
        }),
        bake_time_in_minutes: 0,
    };
    let Some(g) = given else {
        return Ok(current.cloned().unwrap_or_else(defaults));
    };
    let drain = g.drain_percent.unwrap_or(DEFAULT_DRAIN_PERCENT);
    if !(0.0..=100.0).contains(&drain) {
        return Err(EcsError::invalid(format!(
            "deploymentConfiguration.drainPercent must be between 0 and 100; {drain} was given."
        )));
    }
    if g.bake_time_in_minutes < 0 {
        return Err(EcsError::invalid(format!(
            "deploymentConfiguration.bakeTimeInMinutes must be at least 0; {} was given.",
            g.bake_time_in_minutes
        )));
    }
    let alarms = match &g.alarms {
        None => DaemonAlarmConfiguration {
            alarm_names: Some(vec![]),
            enable: false,
        },
        Some(a) => {
            let names = a.alarm_names.clone().unwrap_or_default();
            if names.iter().any(|n| n.is_empty() || n.len() > 255) {
                return Err(EcsError::invalid(
                    "deploymentConfiguration.alarms.alarmNames: alarm names must be between 1 and 255 characters.",
                ));
            }
            if a.enable && names.is_empty() {
                return Err(EcsError::invalid(
                    "deploymentConfiguration.alarms: at least one alarm name is needed when alarms are enabled.",
                ));
            }
            DaemonAlarmConfiguration {
                alarm_names: Some(names),
                enable: a.enable,
            }
        }
    };
    Ok(DaemonDeploymentConfiguration {
        drain_percent: Some(drain),
        alarms: Some(alarms),
        bake_time_in_minutes: g.bake_time_in_minutes,
    })
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// What a new revision of a daemon runs, apart from its task definition.
struct RevisionOptions {
    propagate_tags: DaemonPropagateTags,
    enable_ecs_managed_tags: bool,
    enable_execute_command: bool,
}

/// The daemon a rollout is for.
struct Target<'a> {
    daemon_arn: &'a str,
    cluster_arn: &'a str,
    cluster: &'a str,
    name: &'a str,
}

/// Records a new revision of a daemon and the deployment to it; returns
/// their ARNs. `deployment_id` is chosen by the caller, which may need it
/// first.
#[allow(clippy::too_many_arguments)]
fn roll_out(
    ctx: &Ctx,
    tx: &dyn Tx,
    target: &Target<'_>,
    td: &DaemonTaskDefinition,
    providers: &[String],
    dc: &DaemonDeploymentConfiguration,
    options: &RevisionOptions,
    source: Option<DaemonDeploymentRevisionDetail>,
    deployment_id: &str,
) -> OpResult<(String, String)> {
    let now = ctx.now();
    let revision_arn = ctx
        .arns
        .daemon_revision(target.cluster, target.name, &new_id());
    let revision = DaemonRevision {
        daemon_revision_arn: Some(revision_arn.clone()),
        cluster_arn: Some(target.cluster_arn.to_string()),
        daemon_arn: Some(target.daemon_arn.to_string()),
        daemon_task_definition_arn: td.daemon_task_definition_arn.clone(),
        created_at: Some(now),
        container_images: Some(
            td.container_definitions
                .iter()
                .flatten()
                .map(|c| DaemonContainerImage {
                    container_name: c.name.clone(),
                    image_digest: None,
                    image: c.image.clone(),
                })
                .collect(),
        ),
        propagate_tags: Some(options.propagate_tags),
        enable_ecs_managed_tags: Some(options.enable_ecs_managed_tags),
        enable_execute_command: Some(options.enable_execute_command),
    };
    docs::put(
        tx,
        DAEMON_REVISION,
        &revision_arn,
        target.daemon_arn,
        &revision,
        Expect::Absent,
    )?;
    let deployment_arn = ctx
        .arns
        .daemon_deployment(target.cluster, target.name, deployment_id);
    let alarms = dc.alarms.clone().unwrap_or_default();
    let deployment = DaemonDeployment {
        daemon_deployment_arn: Some(deployment_arn.clone()),
        cluster_arn: Some(target.cluster_arn.to_string()),
        status: Some(DaemonDeploymentStatus::Pending),
        status_reason: None,
        target_daemon_revision: Some(DaemonDeploymentRevisionDetail {
            arn: Some(revision_arn.clone()),
            capacity_providers: Some(
                providers
                    .iter()
                    .map(|arn| DaemonDeploymentCapacityProvider {
                        arn: Some(arn.clone()),
                        running_instance_count: Some(0),
                        draining_instance_count: Some(0),
                    })
                    .collect(),
            ),
            total_running_instance_count: Some(0),
            total_draining_instance_count: Some(0),
        }),
        source_daemon_revisions: Some(source.into_iter().collect()),
        circuit_breaker: Some(DaemonCircuitBreaker {
            failure_count: 0,
            status: Some(DaemonDeploymentRollbackMonitorsStatus::Monitoring),
            // The reconciler sets it from the number of instances.
            threshold: 0,
        }),
        alarms: Some(DaemonDeploymentAlarms {
            status: Some(if alarms.enable {
                DaemonDeploymentRollbackMonitorsStatus::Monitoring
            } else {
                DaemonDeploymentRollbackMonitorsStatus::Disabled
            }),
            alarm_names: Some(alarms.alarm_names.unwrap_or_default()),
            triggered_alarm_names: Some(vec![]),
        }),
        rollback: None,
        deployment_configuration: Some(dc.clone()),
        created_at: Some(now),
        started_at: None,
        stopped_at: None,
        finished_at: None,
    };
    docs::put(
        tx,
        DAEMON_DEPLOYMENT,
        &deployment_arn,
        target.daemon_arn,
        &deployment,
        Expect::Absent,
    )?;
    Ok((revision_arn, deployment_arn))
}

/// Stops every deployment of the daemon still in progress, giving `reason`.
fn stop_deployments(ctx: &Ctx, tx: &dyn Tx, daemon_arn: &str, reason: &str) -> OpResult<()> {
    let now = ctx.now();
    for (key, mut d) in docs::all::<DaemonDeployment>(tx, DAEMON_DEPLOYMENT, Some(daemon_arn))? {
        if !d.value.status.is_some_and(|s| IN_PROGRESS.contains(&s)) {
            continue;
        }
        d.value.status = Some(DaemonDeploymentStatus::Stopped);
        d.value.status_reason = Some(reason.to_string());
        d.value.stopped_at = Some(now);
        docs::put(
            tx,
            DAEMON_DEPLOYMENT,
            &key,
            daemon_arn,
            &d.value,
            Expect::Version(d.version),
        )?;
    }
    Ok(())
}

fn check_client_token(token: Option<&str>) -> OpResult<()> {
    if let Some(t) = token {
        if t.is_empty() || t.len() > 36 || !t.bytes().all(|b| (33..=126).contains(&b)) {
            return Err(EcsError::invalid(
                "clientToken must be 1 to 36 ASCII characters from '!' to '~'.",
            ));
        }
    }
    Ok(())
}

fn token_key(cluster_arn: &str, token: &str) -> String {
    format!("daemon-client-token/{cluster_arn}/{token}")
}

/// What a CreateDaemon client token remembers.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRecord {
    daemon_arn: String,
    digest: String,
    created_at: Option<f64>,
    deployment_arn: Option<String>,
}

/// A digest of a CreateDaemon request, to recognise a retry of it.
fn digest(req: &CreateDaemonRequest) -> String {
    let text = serde_json::to_string(req).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

pub fn create(ctx: &Ctx, req: CreateDaemonRequest) -> OpResult<CreateDaemonResponse> {
    let name = req.daemon_name.clone().unwrap_or_default();
    check_name("daemonName", &name)?;
    check_client_token(req.client_token.as_deref())?;
    let tag_list = req.tags.clone().unwrap_or_default();
    tags::validate(&tag_list)?;
    let dc = deployment_configuration(req.deployment_configuration.as_ref(), None)?;
    let td_given = req.daemon_task_definition_arn.clone().unwrap_or_default();
    let providers_given = req.capacity_provider_arns.clone().unwrap_or_default();
    let request_digest = digest(&req);
    ctx.store.write(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster_arn.as_deref())?.value;
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let cluster_name = cluster.cluster_name.clone().unwrap_or_default();
        let arn = ctx.arns.daemon(&cluster_name, &name);
        let existing = daemons::load_daemon(tx, &arn)?;
        if let Some(token) = &req.client_token {
            if let Some(text) = tx.meta(&token_key(&cluster_arn, token))? {
                let seen: TokenRecord = serde_json::from_str(&text).map_err(|e| {
                    EcsError::server(format!("the stored client token {token} is corrupt: {e}"))
                })?;
                let daemon = daemons::load_daemon(tx, &seen.daemon_arn)?;
                if let Some(daemon) = daemon {
                    if seen.digest != request_digest {
                        return Err(EcsError::invalid(format!(
                            "clientToken '{token}' was already used for a different CreateDaemon request."
                        )));
                    }
                    return Ok(CreateDaemonResponse {
                        daemon_arn: Some(seen.daemon_arn),
                        status: daemon.value.detail.status,
                        created_at: seen.created_at,
                        deployment_arn: seen.deployment_arn,
                    });
                }
            }
        }
        if existing.is_some() {
            return Err(EcsError::invalid("Creation of daemon was not idempotent."));
        }
        let td = usable_td(ctx, tx, &td_given)?;
        let providers = resolve_providers(ctx, tx, &cluster, &providers_given)?;
        let now = ctx.now();
        let target = Target {
            daemon_arn: &arn,
            cluster_arn: &cluster_arn,
            cluster: &cluster_name,
            name: &name,
        };
        let options = RevisionOptions {
            propagate_tags: req.propagate_tags.unwrap_or(DaemonPropagateTags::None),
            enable_ecs_managed_tags: req.enable_ecs_managed_tags,
            enable_execute_command: req.enable_execute_command,
        };
        let (revision_arn, deployment_arn) = roll_out(
            ctx, tx, &target, &td, &providers, &dc, &options, None, &new_id(),
        )?;
        let record = DaemonRecord {
            detail: DaemonDetail {
                daemon_arn: Some(arn.clone()),
                cluster_arn: Some(cluster_arn.clone()),
                status: Some(DaemonStatus::Active),
                current_revisions: Some(vec![]),
                deployment_arn: Some(deployment_arn.clone()),
                created_at: Some(now),
                updated_at: Some(now),
            },
            name: name.clone(),
            tags: tag_list.clone(),
            revision_arn,
            capacity_provider_arns: providers,
            deployment_configuration: Some(dc.clone()),
        };
        docs::put(tx, DAEMON, &arn, &cluster_arn, &record, Expect::Absent)?;
        if let Some(token) = &req.client_token {
            let remembered = TokenRecord {
                daemon_arn: arn.clone(),
                digest: request_digest.clone(),
                created_at: Some(now),
                deployment_arn: Some(deployment_arn.clone()),
            };
            let text = serde_json::to_string(&remembered)
                .map_err(|e| EcsError::server(e.to_string()))?;
            tx.put_meta(&token_key(&cluster_arn, token), &text)?;
        }
        Ok(CreateDaemonResponse {
            daemon_arn: Some(arn),
            status: Some(DaemonStatus::Active),
            created_at: Some(now),
            deployment_arn: Some(deployment_arn),
        })
    })
}

/// The daemon's current revision as the source of a new deployment, with
/// the running counts the reconciler last reported.
fn source_revision(record: &DaemonRecord) -> DaemonDeploymentRevisionDetail {
    let current = record
        .detail
        .current_revisions
        .iter()
        .flatten()
        .find(|r| r.arn.as_deref() == Some(record.revision_arn.as_str()));
    let running = |cp: &str| {
        current
            .and_then(|r| {
                r.capacity_providers
                    .iter()
                    .flatten()
                    .find(|c| c.arn.as_deref() == Some(cp))
            })
            .map(|c| c.running_count)
            .unwrap_or(0)
    };
    let providers: Vec<DaemonDeploymentCapacityProvider> = record
        .capacity_provider_arns
        .iter()
        .map(|arn| DaemonDeploymentCapacityProvider {
            arn: Some(arn.clone()),
            running_instance_count: Some(running(arn)),
            draining_instance_count: Some(0),
        })
        .collect();
    DaemonDeploymentRevisionDetail {
        arn: Some(record.revision_arn.clone()),
        total_running_instance_count: Some(
            providers
                .iter()
                .map(|p| p.running_instance_count.unwrap_or(0))
                .sum(),
        ),
        total_draining_instance_count: Some(0),
        capacity_providers: Some(providers),
    }
}

pub fn update(ctx: &Ctx, req: UpdateDaemonRequest) -> OpResult<UpdateDaemonResponse> {
    let given = req.daemon_arn.clone().unwrap_or_default();
    let td_given = req.daemon_task_definition_arn.clone().unwrap_or_default();
    let providers_given = req.capacity_provider_arns.clone().unwrap_or_default();
    ctx.store.write(|tx| {
        let Versioned {
            version,
            value: mut record,
        } = lookup(ctx, tx, &given)?;
        if record.detail.status != Some(DaemonStatus::Active) {
            return Err(not_active());
        }
        let arn = record.detail.daemon_arn.clone().unwrap_or_default();
        let cluster_arn = record.detail.cluster_arn.clone().unwrap_or_default();
        let cluster = active_cluster(ctx, tx, Some(&cluster_arn))?.value;
        let cluster_name = cluster.cluster_name.clone().unwrap_or_default();
        let dc = deployment_configuration(
            req.deployment_configuration.as_ref(),
            record.deployment_configuration.as_ref(),
        )?;
        let td = usable_td(ctx, tx, &td_given)?;
        let providers = resolve_providers(ctx, tx, &cluster, &providers_given)?;
        let deployment_id = new_id();
        stop_deployments(
            ctx,
            tx,
            &arn,
            &format!("Stopped: replaced by deployment {deployment_id}."),
        )?;
        let target = Target {
            daemon_arn: &arn,
            cluster_arn: &cluster_arn,
            cluster: &cluster_name,
            name: &record.name,
        };
        let options = RevisionOptions {
            propagate_tags: req.propagate_tags.unwrap_or(DaemonPropagateTags::None),
            enable_ecs_managed_tags: req.enable_ecs_managed_tags,
            enable_execute_command: req.enable_execute_command,
        };
        let (revision_arn, deployment_arn) = roll_out(
            ctx,
            tx,
            &target,
            &td,
            &providers,
            &dc,
            &options,
            Some(source_revision(&record)),
            &deployment_id,
        )?;
        let now = ctx.now();
        record.revision_arn = revision_arn;
        record.capacity_provider_arns = providers;
        record.deployment_configuration = Some(dc);
        record.detail.deployment_arn = Some(deployment_arn.clone());
        record.detail.updated_at = Some(now);
        docs::put(
            tx,
            DAEMON,
            &arn,
            &cluster_arn,
            &record,
            Expect::Version(version),
        )?;
        Ok(UpdateDaemonResponse {
            daemon_arn: Some(arn),
            status: record.detail.status,
            created_at: record.detail.created_at,
            updated_at: Some(now),
            deployment_arn: Some(deployment_arn),
        })
    })
}

pub fn delete(ctx: &Ctx, req: DeleteDaemonRequest) -> OpResult<DeleteDaemonResponse> {
    let given = req.daemon_arn.clone().unwrap_or_default();
    ctx.store.write(|tx| {
        let Versioned {
            version,
            value: mut record,
        } = lookup(ctx, tx, &given)?;
        let arn = record.detail.daemon_arn.clone().unwrap_or_default();
        if record.detail.status == Some(DaemonStatus::Active) {
            record.detail.status = Some(DaemonStatus::DeleteInProgress);
            record.detail.updated_at = Some(ctx.now());
            stop_deployments(ctx, tx, &arn, "Stopped: the daemon is being deleted.")?;
            let cluster_arn = record.detail.cluster_arn.clone().unwrap_or_default();
            docs::put(
                tx,
                DAEMON,
                &arn,
                &cluster_arn,
                &record,
                Expect::Version(version),
            )?;
        }
        let d = record.detail;
        Ok(DeleteDaemonResponse {
            daemon_arn: d.daemon_arn,
            status: d.status,
            created_at: d.created_at,
            updated_at: d.updated_at,
            deployment_arn: d.deployment_arn,
        })
    })
}

pub fn describe(ctx: &Ctx, req: DescribeDaemonRequest) -> OpResult<DescribeDaemonResponse> {
    let given = req.daemon_arn.clone().unwrap_or_default();
    ctx.store.read(|tx| {
        let record = lookup(ctx, tx, &given)?;
        Ok(DescribeDaemonResponse {
            daemon: Some(record.value.detail),
        })
    })
}

pub fn list(ctx: &Ctx, req: ListDaemonsRequest) -> OpResult<ListDaemonsResponse> {
    let limit = page_size(req.max_results, 100, 100)?;
    let after = decode_token(Operation::ListDaemons, req.next_token.as_deref())?;
    let wanted: Vec<String> = req
        .capacity_provider_arns
        .iter()
        .flatten()
        .map(|g| provider_ref(ctx, "capacityProviderArns", g).map(|(arn, _)| arn))
        .collect::<OpResult<_>>()?;
    ctx.store.read(|tx| {
        let cluster_arn = match &req.cluster_arn {
            Some(c) => Some(
                active_cluster(ctx, tx, Some(c))?
                    .value
                    .cluster_arn
                    .unwrap_or_default(),
            ),
            None => None,
        };
        let mut rest = docs::all::<DaemonRecord>(tx, DAEMON, cluster_arn.as_deref())?
            .into_iter()
            .filter(|(key, _)| after.as_deref().is_none_or(|a| key.as_str() > a))
            .filter(|(_, d)| {
                wanted.is_empty()
                    || d.value
                        .capacity_provider_arns
                        .iter()
                        .any(|a| wanted.contains(a))
            })
            .peekable();
        let mut page = vec![];
        while page.len() < limit {
            match rest.next() {
                Some(item) => page.push(item),
                None => break,
            }
        }
        let next_token = match (rest.peek(), page.last()) {
            (Some(_), Some((key, _))) => Some(encode_token(Operation::ListDaemons, key)),
            _ => None,
        };
        Ok(ListDaemonsResponse {
            daemon_summaries_list: Some(
                page.into_iter()
                    .map(|(_, d)| {
                        let d = d.value.detail;
                        DaemonSummary {
                            daemon_arn: d.daemon_arn,
                            status: d.status,
                            created_at: d.created_at,
                            updated_at: d.updated_at,
                        }
                    })
                    .collect(),
            ),
            next_token,
        })
    })
}

/// Checks the ARN list of DescribeDaemonDeployments or DescribeDaemonRevisions.
fn history_arns(given: Option<&Vec<String>>, member: &str) -> OpResult<Vec<String>> {
    let arns = given.cloned().unwrap_or_default();
    if arns.is_empty() || arns.len() > DESCRIBE_MAX {
        return Err(EcsError::invalid(format!(
            "{member} must have between 1 and {DESCRIBE_MAX} ARNs; {} were given.",
            arns.len()
        )));
    }
    Ok(arns)
}

fn missing(arn: &str) -> Failure {
    Failure {
        arn: Some(arn.to_string()),
        reason: Some("MISSING".into()),
        detail: None,
    }
}

pub fn describe_deployments(
    ctx: &Ctx,
    req: DescribeDaemonDeploymentsRequest,
) -> OpResult<DescribeDaemonDeploymentsResponse> {
    let arns = history_arns(req.daemon_deployment_arns.as_ref(), "daemonDeploymentArns")?;
    ctx.store.read(|tx| {
        let mut found = vec![];
        let mut failures = vec![];
        for arn in &arns {
            match daemons::load_deployment(tx, arn)? {
                Some(d) => found.push(d.value),
                None => failures.push(missing(arn)),
            }
        }
        Ok(DescribeDaemonDeploymentsResponse {
            failures: Some(failures),
            daemon_deployments: Some(found),
        })
    })
}

pub fn describe_revisions(
    ctx: &Ctx,
    req: DescribeDaemonRevisionsRequest,
) -> OpResult<DescribeDaemonRevisionsResponse> {
    let arns = history_arns(req.daemon_revision_arns.as_ref(), "daemonRevisionArns")?;
    ctx.store.read(|tx| {
        let mut found = vec![];
        let mut failures = vec![];
        for arn in &arns {
            match daemons::load_revision(tx, arn)? {
                Some(r) => found.push(r.value),
                None => failures.push(missing(arn)),
            }
        }
        Ok(DescribeDaemonRevisionsResponse {
            daemon_revisions: Some(found),
            failures: Some(failures),
        })
    })
}

/// Newest first; a page resumes after the ARN in the token. A daemon's
/// deployments are listed whether or not the daemon still exists.
pub fn list_deployments(
    ctx: &Ctx,
    req: ListDaemonDeploymentsRequest,
) -> OpResult<ListDaemonDeploymentsResponse> {
    let given = req.daemon_arn.clone().unwrap_or_default();
    let limit = page_size(req.max_results, 100, 20)?;
    let after = decode_token(Operation::ListDaemonDeployments, req.next_token.as_deref())?;
    let Ok(arn) = daemon_arn(ctx, &given)? else {
        // Another account's or region's daemon: none of its deployments are here.
        return Ok(ListDaemonDeploymentsResponse {
            next_token: None,
            daemon_deployments: Some(vec![]),
        });
    };
    let statuses = req.status.clone().unwrap_or_default();
    ctx.store.read(|tx| {
        let mut all: Vec<DaemonDeployment> =
            docs::all::<DaemonDeployment>(tx, DAEMON_DEPLOYMENT, Some(&arn))?
                .into_iter()
                .map(|(_, d)| d.value)
                .filter(|d| statuses.is_empty() || d.status.is_some_and(|s| statuses.contains(&s)))
                .filter(|d| {
                    let at = d.created_at.unwrap_or(0.0);
                    req.created_at.as_ref().is_none_or(|c| {
                        c.after.is_none_or(|a| at >= a) && c.before.is_none_or(|b| at <= b)
                    })
                })
                .collect();
        all.sort_by(|a, b| {
            b.created_at
                .unwrap_or(0.0)
                .total_cmp(&a.created_at.unwrap_or(0.0))
                .then_with(|| b.daemon_deployment_arn.cmp(&a.daemon_deployment_arn))
        });
        let start = match &after {
            Some(key) => all
                .iter()
                .position(|d| d.daemon_deployment_arn.as_deref() == Some(key.as_str()))
                .map_or(all.len(), |i| i + 1),
            None => 0,
        };
        let page: Vec<DaemonDeployment> = all.iter().skip(start).take(limit).cloned().collect();
        let next_token = (start + page.len() < all.len())
            .then(|| page.last().and_then(|d| d.daemon_deployment_arn.clone()))
            .flatten()
            .map(|k| encode_token(Operation::ListDaemonDeployments, &k));
        Ok(ListDaemonDeploymentsResponse {
            next_token,
            daemon_deployments: Some(
                page.into_iter()
                    .map(|d| DaemonDeploymentSummary {
                        daemon_deployment_arn: d.daemon_deployment_arn,
                        daemon_arn: Some(arn.clone()),
                        cluster_arn: d.cluster_arn,
                        status: d.status,
                        status_reason: d.status_reason,
                        target_daemon_revision_arn: d.target_daemon_revision.and_then(|r| r.arn),
                        created_at: d.created_at,
                        started_at: d.started_at,
                        stopped_at: d.stopped_at,
                        finished_at: d.finished_at,
                    })
                    .collect(),
            ),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("daemonName", "a-b_C9").is_ok());
        assert!(check_name("daemonName", &"x".repeat(255)).is_ok());
        for bad in ["", "has space", "a/b", "a:b"] {
            assert!(check_name("daemonName", bad).is_err(), "{bad}");
        }
        assert!(check_name("daemonName", &"x".repeat(256)).is_err());
    }

    #[test]
    fn client_tokens() {
        assert!(check_client_token(None).is_ok());
        assert!(check_client_token(Some("abc-123!~")).is_ok());
        assert!(check_client_token(Some(&"t".repeat(36))).is_ok());
        for bad in ["", "has space", "é"] {
            assert!(check_client_token(Some(bad)).is_err(), "{bad}");
        }
        assert!(check_client_token(Some(&"t".repeat(37))).is_err());
    }

    #[test]
    fn deployment_configuration_defaults_and_ranges() {
        let dc = deployment_configuration(None, None).ok();
        assert_eq!(dc.as_ref().and_then(|d| d.drain_percent), Some(25.0));
        assert_eq!(dc.as_ref().map(|d| d.bake_time_in_minutes), Some(0));
        for (drain, bake, ok) in [
            (Some(0.0), 0, true),
            (Some(100.0), 5, true),
            (None, 0, true),
            (Some(100.5), 0, false),
            (Some(-1.0), 0, false),
            (Some(f64::NAN), 0, false),
            (Some(50.0), -1, false),
        ] {
            let given = DaemonDeploymentConfiguration {
                drain_percent: drain,
                bake_time_in_minutes: bake,
                alarms: None,
            };
            assert_eq!(
                deployment_configuration(Some(&given), None).is_ok(),
                ok,
                "{drain:?} {bake}"
            );
        }
        let kept = DaemonDeploymentConfiguration {
            drain_percent: Some(10.0),
            ..Default::default()
        };
        assert_eq!(
            deployment_configuration(None, Some(&kept)).ok(),
            Some(kept.clone())
        );
    }

    #[test]
    fn token_positions() {
        assert_eq!(td_position("web:3").ok(), Some(("web".to_string(), 3)));
        assert!(td_position("web").is_err());
        assert!(td_position("web:x").is_err());
    }
}

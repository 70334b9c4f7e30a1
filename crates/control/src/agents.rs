//! The agent state machine: authentication, registration, reports, and the
//! desired set of tasks each instance should run.

use crate::usage::{registered, resource_list};
use crate::{digest, new_secret, Ctx};
use berth_model::arn::{Arn, Resource as ArnResource};
use berth_model::ecs::*;
use berth_model::EcsError;
use berth_protocol::{DesiredStatus, Hello, TaskReport, TaskSpec};
use berth_store::{Expect, TaskFilter, Tx, Versioned};
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::sync::Arc;
use subtle::ConstantTimeEq as _;

/// berth's private record of an instance, beside its public ContainerInstance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    pub instance_id: String,
    pub cluster_arn: String,
    pub container_instance_arn: String,
    pub capacity_provider: String,
    pub instance_type: String,
    pub availability_zone: String,
    /// SHA-256 of the one-time join token, until it is used.
    pub join_token_digest: Option<String>,
    /// SHA-256 of the per-instance credential, once issued.
    pub credential_digest: Option<String>,
    /// The generation of the last desired set sent.
    pub generation: u64,
    pub launched_at: f64,
    /// The OS image version it was launched with.
    #[serde(default)]
    pub image_version: Option<String>,
    /// Draining, and why (none for an instance the user drained).
    #[serde(default)]
    pub drain: Option<crate::lifecycle::DrainState>,
    /// When its agent went away, while it is away.
    #[serde(default)]
    pub disconnected_at: Option<f64>,
    /// When a spot interruption notice came for it.
    #[serde(default)]
    pub interrupted_at: Option<f64>,
    /// Replacement capacity launched ahead of its planned drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preparing: Option<crate::lifecycle::Preparing>,
}

/// Whether a task has its own network namespace and address.
pub fn is_awsvpc(t: &Task) -> bool {
    t.attachments
        .iter()
        .flatten()
        .any(|a| a.r#type.as_deref() == Some("ElasticNetworkInterface"))
}

fn address_key(task_arn: &str) -> String {
    format!("task-address/{task_arn}")
}

const RELEASES_KEY: &str = "task-address-releases";

/// Records a task's address: in its ENI attachment (`privateIPv4Address`) for
/// users, and beside it for the desired set.
pub fn assign_address(
    tx: &dyn Tx,
    t: &mut Task,
    instance_id: &str,
    a: berth_protocol::TaskAddress,
) -> Result<(), EcsError> {
    let arn = t.task_arn.clone().unwrap_or_default();
    let text =
        serde_json::to_string(&(instance_id, a)).map_err(|e| EcsError::server(e.to_string()))?;
    tx.put_meta(&address_key(&arn), &text)?;
    for att in t.attachments.iter_mut().flatten() {
        if att.r#type.as_deref() == Some("ElasticNetworkInterface") {
            let details = att.details.get_or_insert_with(Vec::new);
            details.retain(|d| d.name.as_deref() != Some("privateIPv4Address"));
            details.push(KeyValuePair {
                name: Some("privateIPv4Address".into()),
                value: Some(a.address.to_string()),
            });
        }
    }
    Ok(())
}

fn task_address(
    tx: &dyn Tx,
    task_arn: &str,
) -> Result<Option<(String, berth_protocol::TaskAddress)>, EcsError> {
    match tx.meta(&address_key(task_arn))? {
        Some(text) if !text.is_empty() => Ok(serde_json::from_str(&text).ok()),
        _ => Ok(None),
    }
}

/// A stopped task's address is queued for release to the provider.
fn queue_release(tx: &dyn Tx, task_arn: &str) -> Result<(), EcsError> {
    let Some((instance_id, _)) = task_address(tx, task_arn)? else {
        return Ok(());
    };
    let mut list: Vec<(String, String)> = tx
        .meta(RELEASES_KEY)?
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    if !list.iter().any(|(i, t)| *i == instance_id && t == task_arn) {
        list.push((instance_id, task_arn.to_string()));
    }
    tx.put_meta(
        RELEASES_KEY,
        &serde_json::to_string(&list).map_err(|e| EcsError::server(e.to_string()))?,
    )?;
    tx.put_meta(&address_key(task_arn), "")?;
    Ok(())
}

/// Addresses waiting to go back to the provider: (instance id, task ARN).
pub fn pending_releases(ctx: &Ctx) -> Result<Vec<(String, String)>, EcsError> {
    ctx.store.read(|tx| {
        Ok(tx
            .meta(RELEASES_KEY)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    })
}

/// The provider took a task's address back: a DEPROVISIONING task is now STOPPED.
pub fn released(ctx: &Ctx, instance_id: &str, task_arn: &str) -> Result<(), EcsError> {
    let now = ctx.now();
    ctx.store.write(|tx| {
        if let Some(Versioned {
            version,
            value: mut t,
        }) = tx.task(task_arn)?
        {
            if t.last_status.as_deref() == Some("DEPROVISIONING") {
                t.last_status = Some("STOPPED".into());
                t.stopped_at = Some(now);
                for a in t.attachments.iter_mut().flatten() {
                    a.status = Some("DELETED".into());
                }
                t.version += 1;
                tx.put_task(&t, Expect::Version(version))?;
            }
        }
        let mut list: Vec<(String, String)> = tx
            .meta(RELEASES_KEY)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        list.retain(|(i, t)| !(i == instance_id && t == task_arn));
        tx.put_meta(
            RELEASES_KEY,
            &serde_json::to_string(&list).map_err(|e| EcsError::server(e.to_string()))?,
        )?;
        Ok(())
    })
}

pub(crate) fn record_key(instance_id: &str) -> String {
    format!("instance/{instance_id}")
}

pub fn load_record(tx: &dyn Tx, instance_id: &str) -> Result<Option<InstanceRecord>, EcsError> {
    match tx.meta(&record_key(instance_id))? {
        Some(text) => parse_record(instance_id, &text).map(Some),
        None => Ok(None),
    }
}

/// An instance record from its stored text.
pub(crate) fn parse_record(instance_id: &str, text: &str) -> Result<InstanceRecord, EcsError> {
    serde_json::from_str(text)
        .map_err(|e| EcsError::server(format!("instance record {instance_id} is corrupt: {e}")))
}

pub fn save_record(tx: &dyn Tx, r: &InstanceRecord) -> Result<(), EcsError> {
    let text = serde_json::to_string(r).map_err(|e| EcsError::server(e.to_string()))?;
    tx.put_meta(&record_key(&r.instance_id), &text)?;
    Ok(())
}

/// The outcome of presenting a bearer secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The join token was valid: here is the credential to hand over (once).
    Joined { credential: String },
    /// The credential was valid.
    Known,
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Checks an agent's bearer secret. A join token works once: it is replaced by
/// a credential in the same transaction. Agent secrets are never user keys.
pub fn admit(ctx: &Ctx, instance_id: &str, bearer: &str) -> Result<Admission, EcsError> {
    let presented = digest(bearer);
    ctx.store.write(|tx| {
        let Some(mut r) = load_record(tx, instance_id)? else {
            return Err(EcsError::new(
                berth_model::ErrorKind::UnrecognizedClient,
                "Unknown instance.",
            ));
        };
        if r.credential_digest
            .as_deref()
            .is_some_and(|d| same(d, &presented))
        {
            return Ok(Admission::Known);
        }
        if r.join_token_digest
            .as_deref()
            .is_some_and(|d| same(d, &presented))
        {
            let credential = new_secret();
            r.join_token_digest = None;
            r.credential_digest = Some(digest(&credential));
            save_record(tx, &r)?;
            return Ok(Admission::Joined { credential });
        }
        Err(EcsError::new(
            berth_model::ErrorKind::UnrecognizedClient,
            "The agent credential is not valid.",
        ))
    })
}

/// Registers (or re-registers) a connected agent: the instance becomes ACTIVE
/// with its resources and attributes; tasks it reports that berth does not
/// want are sent back as stopped. Returns the ARN, the desired set and its generation.
pub fn hello(ctx: &Ctx, hello: &Hello) -> Result<(String, u64, Vec<TaskSpec>), EcsError> {
    let now = ctx.now();
    ctx.store.write(|tx| {
        let Some(mut r) = load_record(tx, &hello.instance_id)? else {
            return Err(EcsError::client("Unknown instance."));
        };
        let Some(Versioned {
            version,
            value: mut ci,
        }) = tx.container_instance(&r.container_instance_arn)?
        else {
            return Err(EcsError::client("The container instance was deregistered."));
        };
        if ci.status.as_deref() == Some("INACTIVE") {
            return Err(EcsError::client("The container instance was deregistered."));
        }
        if ci.status.as_deref() == Some("REGISTERING") {
            ci.status = Some("ACTIVE".into());
            ci.registered_at = Some(now);
        }
        ci.agent_connected = true;
        crate::lifecycle::set_health(
            &mut ci,
            InstanceHealthCheckType::ContainerRuntime,
            InstanceHealthCheckState::Ok,
            None,
            now,
        );
        ci.version_info = Some(VersionInfo {
            agent_version: Some(hello.agent_version.clone()),
            agent_hash: None,
            docker_version: Some(format!("berth/{}", hello.runtime)),
        });
        let gpus = hello.resources.gpus.clone();
        ci.registered_resources = Some(resource_list(
            i64::from(hello.resources.cpu),
            hello.resources.memory_mib as i64,
            &gpus,
        ));
        let mut attrs: Vec<Attribute> = hello
            .attributes
            .iter()
            .map(|(k, v)| Attribute {
                name: Some(k.clone()),
                value: Some(v.clone()),
                ..Default::default()
            })
            .collect();
        attrs.retain(|a| a.name.as_deref() != Some(crate::lifecycle::IMAGE_VERSION_ATTRIBUTE));
        attrs.push(Attribute {
            name: Some(crate::lifecycle::IMAGE_VERSION_ATTRIBUTE.into()),
            value: Some(
                r.image_version
                    .clone()
                    .unwrap_or_else(|| crate::lifecycle::DEFAULT_IMAGE_VERSION.into()),
            ),
            ..Default::default()
        });
        attrs.sort_by(|a, b| a.name.cmp(&b.name));
        ci.attributes = Some(attrs);
        ci.version += 1;
        tx.put_container_instance(&r.cluster_arn, &ci, Expect::Version(version))?;
        // Reported tasks the server no longer knows are stopped, never duplicated.
        for report in &hello.tasks {
            apply_report(ctx, tx, &r, report)?;
        }
        r.generation += 1;
        r.disconnected_at = None;
        save_record(tx, &r)?;
        refresh_counts(tx, &r)?;
        let tasks = desired(tx, &r)?;
        Ok((r.container_instance_arn.clone(), r.generation, tasks))
    })
}

/// The agent went away: the instance stays, marked disconnected (and
/// presumed lost once away for the lifecycle's agent timeout).
pub fn disconnected(ctx: &Ctx, instance_id: &str) -> Result<(), EcsError> {
    let now = ctx.now();
    ctx.store.write(|tx| {
        let Some(mut r) = load_record(tx, instance_id)? else {
            return Ok(());
        };
        if r.disconnected_at.is_none() {
            r.disconnected_at = Some(now);
            save_record(tx, &r)?;
        }
        if let Some(Versioned {
            version,
            value: mut ci,
        }) = tx.container_instance(&r.container_instance_arn)?
        {
            if ci.agent_connected {
                ci.agent_connected = false;
                crate::lifecycle::set_health(
                    &mut ci,
                    InstanceHealthCheckType::ContainerRuntime,
                    InstanceHealthCheckState::InsufficientData,
                    Some("The instance's agent is not connected.".into()),
                    now,
                );
                ci.version += 1;
                tx.put_container_instance(&r.cluster_arn, &ci, Expect::Version(version))?;
            }
        }
        Ok(())
    })
}

/// Applies a task report from an agent. Returns whether the desired set changed.
pub fn report(ctx: &Ctx, instance_id: &str, report: &TaskReport) -> Result<bool, EcsError> {
    reports(ctx, instance_id, std::slice::from_ref(report))
}

/// Applies an agent's task reports in order, in one transaction (the
/// instance's counts refreshed once). Returns whether the desired set changed.
pub fn reports(ctx: &Ctx, instance_id: &str, reports: &[TaskReport]) -> Result<bool, EcsError> {
    ctx.store.write(|tx| {
        let Some(r) = load_record(tx, instance_id)? else {
            return Ok(false);
        };
        let mut changed = false;
        for report in reports {
            changed |= apply_report(ctx, tx, &r, report)?;
        }
        refresh_counts(tx, &r)?;
        Ok(changed)
    })
}

fn apply_report(
    ctx: &Ctx,
    tx: &dyn Tx,
    r: &InstanceRecord,
    rep: &TaskReport,
) -> Result<bool, EcsError> {
    let now = ctx.now();
    let Some(Versioned {
        version,
        value: mut t,
    }) = tx.task(&rep.task_arn)?
    else {
        return Ok(false);
    };
    if t.container_instance_arn.as_deref() != Some(r.container_instance_arn.as_str()) {
        return Ok(false);
    }
    if t.last_status.as_deref() == Some("STOPPED") {
        return Ok(false);
    }
    let before = t.clone();
    if t.pull_started_at.is_none() {
        t.pull_started_at = rep.pull_started_at;
    }
    if t.pull_stopped_at.is_none() {
        t.pull_stopped_at = rep.pull_stopped_at;
    }
    for c in t.containers.iter_mut().flatten() {
        if let Some(cr) = rep
            .containers
            .iter()
            .find(|x| Some(&x.name) == c.name.as_ref())
        {
            c.runtime_id = cr.runtime_id.clone().or(c.runtime_id.take());
            c.last_status = Some(cr.last_status.clone());
            if cr.exit_code.is_some() {
                c.exit_code = cr.exit_code;
            }
            if cr.reason.is_some() {
                c.reason = cr.reason.clone();
            }
            if let Some(h) = cr.health_status.as_deref().and_then(HealthStatus::parse) {
                c.health_status = Some(h);
            }
            if cr.image_digest.is_some() {
                c.image_digest = cr.image_digest.clone();
            }
        }
    }
    // The task is as healthy as its containers: UNHEALTHY if any is, HEALTHY
    // when every container with a health check is, else UNKNOWN.
    let checked: Vec<HealthStatus> = t
        .containers
        .iter()
        .flatten()
        .filter_map(|c| c.health_status)
        .filter(|h| *h != HealthStatus::Unknown)
        .collect();
    let any_check = rep.containers.iter().any(|c| c.health_status.is_some());
    if any_check {
        t.health_status = Some(if checked.contains(&HealthStatus::Unhealthy) {
            HealthStatus::Unhealthy
        } else if !checked.is_empty()
            && rep
                .containers
                .iter()
                .filter(|c| c.health_status.is_some())
                .all(|c| c.health_status.as_deref() == Some("HEALTHY"))
        {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unknown
        });
    }
    if let Some(ip) = &rep.private_ipv4_address {
        for a in t.attachments.iter_mut().flatten() {
            if a.r#type.as_deref() == Some("ElasticNetworkInterface") {
                a.status = Some("ATTACHED".into());
                let details = a.details.get_or_insert_with(Vec::new);
                if !details
                    .iter()
                    .any(|d| d.name.as_deref() == Some("privateIPv4Address"))
                {
                    details.push(KeyValuePair {
                        name: Some("privateIPv4Address".into()),
                        value: Some(ip.clone()),
                    });
                }
            }
        }
        for c in t.containers.iter_mut().flatten() {
            c.network_interfaces = Some(vec![NetworkInterface {
                attachment_id: t
                    .attachments
                    .as_ref()
                    .and_then(|a| a.first())
                    .and_then(|a| a.id.clone()),
                private_ipv4_address: Some(ip.clone()),
                ipv6_address: None,
            }]);
        }
    }
    match rep.last_status.as_str() {
        "ACTIVATING" if t.last_status.as_deref() == Some("PENDING") => {
            t.last_status = Some("ACTIVATING".into());
        }
        "RUNNING" => {
            if t.desired_status.as_deref() == Some("RUNNING") {
                t.last_status = Some("RUNNING".into());
            }
            if t.started_at.is_none() {
                t.started_at = rep.started_at.or(Some(now));
                t.connectivity = Some(Connectivity::Connected);
                t.connectivity_at = t.started_at;
                bind_ports(tx, &mut t)?;
            }
        }
        "STOPPING" => {
            t.last_status = Some("STOPPING".into());
            t.stopping_at.get_or_insert(now);
        }
        "STOPPED" => {
            // A task with an address of its own stays DEPROVISIONING until the
            // provider has it back (see `released`), as ECS does with an ENI.
            let has_address = task_address(tx, &rep.task_arn)?.is_some();
            if t.started_at.is_none() && rep.started_at.is_some() {
                // It ran and exited between two looks of the agent.
                t.started_at = rep.started_at;
            }
            t.last_status = Some(
                if has_address {
                    "DEPROVISIONING"
                } else {
                    "STOPPED"
                }
                .into(),
            );
            t.desired_status = Some("STOPPED".into());
            t.stopping_at.get_or_insert(now);
            t.execution_stopped_at = rep.execution_stopped_at.or(Some(now));
            if !has_address {
                t.stopped_at = Some(now);
            }
            if t.stop_code.is_none() {
                t.stop_code = rep.stop_code.as_deref().and_then(TaskStopCode::parse);
            }
            if t.stopped_reason.is_none() {
                t.stopped_reason = rep.stopped_reason.clone();
            }
            for c in t.containers.iter_mut().flatten() {
                c.last_status = Some("STOPPED".into());
            }
            for a in t.attachments.iter_mut().flatten() {
                a.status = Some(if has_address { "DELETING" } else { "DELETED" }.into());
            }
            queue_release(tx, &rep.task_arn)?;
        }
        _ => {}
    }
    if t == before {
        return Ok(false);
    }
    crate::metering::task_changed(ctx, tx, r, &before, &t, now)?;
    t.version += 1;
    tx.put_task(&t, Expect::Version(version))?;
    Ok(t.last_status != before.last_status)
}

/// `host` tasks publish their port mappings on the instance: ECS reports them
/// as each container's `networkBindings` (awsvpc tasks use their own address
/// instead, in `networkInterfaces`).
fn bind_ports(tx: &dyn Tx, t: &mut Task) -> Result<(), EcsError> {
    let Some(spec) = spec_for(tx, t)? else {
        return Ok(());
    };
    if spec.network_mode != "host" {
        return Ok(());
    }
    for c in t.containers.iter_mut().flatten() {
        let Some(def) = spec.containers.iter().find(|d| d.name == c.name) else {
            continue;
        };
        let bindings: Vec<NetworkBinding> = def
            .port_mappings
            .iter()
            .flatten()
            .map(|pm| NetworkBinding {
                bind_ip: Some("0.0.0.0".into()),
                container_port: pm.container_port,
                host_port: pm.host_port.filter(|p| *p != 0).or(pm.container_port),
                protocol: Some(pm.protocol.unwrap_or(TransportProtocol::Tcp)),
                container_port_range: pm.container_port_range.clone(),
                host_port_range: None,
            })
            .collect();
        c.network_bindings = Some(bindings);
    }
    Ok(())
}

/// Keeps the instance's task counts and remaining resources true.
pub fn refresh_counts(tx: &dyn Tx, r: &InstanceRecord) -> Result<(), EcsError> {
    let Some(Versioned {
        version,
        value: mut ci,
    }) = tx.container_instance(&r.container_instance_arn)?
    else {
        return Ok(());
    };
    // Only what the counts are made of is decoded.
    let tasks = tx.task_loads(&r.cluster_arn, &r.container_instance_arn)?;
    let (mut cpu, mut mem, mut running, mut pending) = (0i64, 0i64, 0, 0);
    for t in &tasks {
        let (c, m) = crate::usage::load_needs(t);
        cpu += i64::from(c);
        mem += m as i64;
        match t.last_status.as_deref() {
            Some("RUNNING") => running += 1,
            _ => pending += 1,
        }
    }
    let (reg_cpu, reg_mem) = registered(&ci);
    let used: Vec<&String> = tasks
        .iter()
        .flat_map(|t| t.containers.iter().flatten())
        .flat_map(|c| c.gpu_ids.iter().flatten())
        .collect();
    let free_gpus: Vec<String> = crate::placing::registered_gpus(&ci)
        .into_iter()
        .filter(|g| !used.contains(&g))
        .collect();
    let remaining = resource_list(reg_cpu - cpu, reg_mem - mem, &free_gpus);
    if ci.remaining_resources.as_ref() != Some(&remaining)
        || ci.running_tasks_count != running
        || ci.pending_tasks_count != pending
    {
        ci.remaining_resources = Some(remaining);
        ci.running_tasks_count = running;
        ci.pending_tasks_count = pending;
        ci.version += 1;
        tx.put_container_instance(&r.cluster_arn, &ci, Expect::Version(version))?;
    }
    Ok(())
}

/// Tasks assigned to an instance that are not yet STOPPED.
pub fn instance_tasks(tx: &dyn Tx, r: &InstanceRecord) -> Result<Vec<Task>, EcsError> {
    instance_tasks_wanted(tx, r, &["RUNNING", "STOPPED"])
}

/// Tasks assigned to an instance that are not yet STOPPED, of these desired statuses.
fn instance_tasks_wanted(
    tx: &dyn Tx,
    r: &InstanceRecord,
    wanted: &[&str],
) -> Result<Vec<Task>, EcsError> {
    let mut out = vec![];
    for desired in wanted {
        let filter = TaskFilter {
            cluster_arn: r.cluster_arn.clone(),
            container_instance_arn: Some(r.container_instance_arn.clone()),
            desired_status: Some((*desired).into()),
            not_stopped: true,
            ..Default::default()
        };
        let tasks = berth_store::all(|a, n| tx.tasks(&filter, a, n))?;
        out.extend(
            tasks
                .into_iter()
                .map(|v| v.value)
                .filter(|t| t.last_status.as_deref() != Some("STOPPED")),
        );
    }
    Ok(out)
}

/// The tasks [`desired`] makes the set of, with their versions: when they
/// are the same, so is the set.
pub fn desired_versions(tx: &dyn Tx, r: &InstanceRecord) -> Result<Vec<(String, i64)>, EcsError> {
    let filter = TaskFilter {
        cluster_arn: r.cluster_arn.clone(),
        container_instance_arn: Some(r.container_instance_arn.clone()),
        desired_status: Some("RUNNING".into()),
        not_stopped: true,
        ..Default::default()
    };
    Ok(berth_store::all(|a, n| tx.task_versions(&filter, a, n))?)
}

/// The full desired set for an instance: the tasks it should run. A task
/// the agent runs and the set leaves out is one to stop (StopTask, or the
/// instance is draining), so tasks whose desired status is STOPPED are not
/// sent: the set, and each push of it, stays the size of what runs rather
/// than growing with tasks winding down. The exception is a spot-interrupted
/// instance: its stopping tasks are sent with their stop timeouts capped at
/// the interruption's notice ([`crate::lifecycle::SPOT_NOTICE`]), since the
/// capacity goes when it runs out.
pub fn desired(tx: &dyn Tx, r: &InstanceRecord) -> Result<Vec<TaskSpec>, EcsError> {
    let wanted: &[&str] = if r.interrupted_at.is_some() {
        &["RUNNING", "STOPPED"]
    } else {
        &["RUNNING"]
    };
    desired_of(tx, &instance_tasks_wanted(tx, r, wanted)?)
}

/// [`desired`] of the tasks it would read, read by the caller (who may
/// keep them decoded): those not STOPPED, desired RUNNING first.
pub fn desired_of<T: Borrow<Task>>(tx: &dyn Tx, tasks: &[T]) -> Result<Vec<TaskSpec>, EcsError> {
    let mut specs = vec![];
    let mut tds = TdCache::default();
    for t in tasks {
        let t: &Task = t.borrow();
        if let Some(td) = tds.get(tx, t.task_definition_arn.as_deref())? {
            if let Some(mut spec) = spec_with(tx, t, &td)? {
                if spec.desired_status == DesiredStatus::Stopped {
                    spec.stop_timeout_cap = Some(crate::lifecycle::SPOT_NOTICE as u32);
                }
                specs.push(spec);
            }
        }
    }
    Ok(specs)
}

/// The task definition of an ARN, if it parses and exists: a task
/// definition, or a daemon task definition as the task definition its
/// tasks run ([`crate::daemons::as_task_definition`]).
pub fn load_task_definition(tx: &dyn Tx, td_arn: &str) -> Result<Option<TaskDefinition>, EcsError> {
    match Arn::parse(td_arn) {
        Ok(Arn {
            resource: ArnResource::TaskDefinition { family, revision },
            ..
        }) => Ok(tx
            .task_definition(&family, Some(revision))?
            .map(|v| v.value)),
        Ok(Arn {
            resource: ArnResource::DaemonTaskDefinition { .. },
            ..
        }) => Ok(crate::daemons::load_td(tx, td_arn)?
            .map(|v| crate::daemons::as_task_definition(&v.value.definition))),
        _ => Ok(None),
    }
}

/// Task definitions by ARN, each read once (for one pass over many tasks).
#[derive(Default)]
pub struct TdCache(std::collections::BTreeMap<String, Option<Arc<TaskDefinition>>>);

impl TdCache {
    /// The task definition of `arn` (`None` when absent or not found),
    /// shared with every other task of this cache's pass.
    pub fn get(
        &mut self,
        tx: &dyn Tx,
        arn: Option<&str>,
    ) -> Result<Option<Arc<TaskDefinition>>, EcsError> {
        let Some(arn) = arn else {
            return Ok(None);
        };
        if let Some(td) = self.0.get(arn) {
            return Ok(td.clone());
        }
        let td = load_task_definition(tx, arn)?.map(Arc::new);
        self.0.insert(arn.to_string(), td.clone());
        Ok(td)
    }
}

/// The spec of one task: its definition's containers with the overrides applied.
pub fn spec_for(tx: &dyn Tx, t: &Task) -> Result<Option<TaskSpec>, EcsError> {
    match load_task_definition(tx, t.task_definition_arn.as_deref().unwrap_or(""))? {
        Some(td) => spec_with(tx, t, &td),
        None => Ok(None),
    }
}

/// The spec of one task of `td`.
fn spec_with(tx: &dyn Tx, t: &Task, td: &TaskDefinition) -> Result<Option<TaskSpec>, EcsError> {
    let family = td.family.clone().unwrap_or_default();
    let revision = td.revision;
    let overrides = t.overrides.clone().unwrap_or_default();
    let containers = td
        .container_definitions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            if let Some(o) = overrides
                .container_overrides
                .iter()
                .flatten()
                .find(|o| o.name == c.name)
            {
                if let Some(cmd) = &o.command {
                    c.command = Some(cmd.clone());
                }
                if let Some(env) = &o.environment {
                    let mut merged = c.environment.take().unwrap_or_default();
                    for kv in env {
                        merged.retain(|x| x.name != kv.name);
                        merged.push(kv.clone());
                    }
                    c.environment = Some(merged);
                }
                if let Some(v) = o.cpu {
                    c.cpu = v;
                }
                if let Some(v) = o.memory {
                    c.memory = Some(v);
                }
                if let Some(v) = o.memory_reservation {
                    c.memory_reservation = Some(v);
                }
            }
            c
        })
        .collect();
    let desired_status = if t.desired_status.as_deref() == Some("STOPPED") {
        DesiredStatus::Stopped
    } else {
        DesiredStatus::Running
    };
    Ok(Some(TaskSpec {
        task_arn: t.task_arn.clone().unwrap_or_default(),
        family,
        revision,
        network_mode: td
            .network_mode
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(|| "host".into()),
        desired_status,
        cpu: t.cpu.as_deref().and_then(|c| c.parse().ok()),
        memory_mib: t.memory.as_deref().and_then(|m| m.parse().ok()),
        containers,
        gpu_ids: t
            .containers
            .iter()
            .flatten()
            .filter_map(|c| Some((c.name.clone()?, c.gpu_ids.clone()?)))
            .filter(|(_, ids)| !ids.is_empty())
            .collect(),
        address: task_address(tx, t.task_arn.as_deref().unwrap_or(""))?.map(|(_, a)| a),
        volumes: td.volumes.clone().unwrap_or_default(),
        stop_timeout_cap: None,
    }))
}

/// Checks an agent's credential without changing anything (for the registry).
pub fn check_credential(ctx: &Ctx, instance_id: &str, secret: &str) -> bool {
    let presented = digest(secret);
    ctx.store
        .read(|tx| load_record(tx, instance_id))
        .ok()
        .flatten()
        .and_then(|r| r.credential_digest)
        .is_some_and(|d| same(&d, &presented))
}

/// An instance is gone: its container instance becomes INACTIVE and the tasks
/// it ran are STOPPED with `TerminationNotice`. Returns how many were.
pub fn terminated(ctx: &Ctx, instance_id: &str, reason: &str) -> Result<usize, EcsError> {
    let now = ctx.now();
    ctx.store.write(|tx| {
        let Some(r) = load_record(tx, instance_id)? else {
            return Ok(0);
        };
        let mut stopped = 0;
        for mut t in instance_tasks(tx, &r)? {
            let Some(current) = tx.task(t.task_arn.as_deref().unwrap_or(""))? else {
                continue;
            };
            t.last_status = Some("STOPPED".into());
            t.desired_status = Some("STOPPED".into());
            t.stop_code.get_or_insert(TaskStopCode::TerminationNotice);
            t.stopped_reason.get_or_insert_with(|| reason.to_string());
            t.stopping_at.get_or_insert(now);
            t.execution_stopped_at.get_or_insert(now);
            t.stopped_at = Some(now);
            for c in t.containers.iter_mut().flatten() {
                c.last_status = Some("STOPPED".into());
            }
            t.version += 1;
            tx.put_task(&t, Expect::Version(current.version))?;
            queue_release(tx, t.task_arn.as_deref().unwrap_or(""))?;
            stopped += 1;
        }
        crate::metering::instance_ended(tx, instance_id, now)?;
        if let Some(Versioned {
            version,
            value: mut ci,
        }) = tx.container_instance(&r.container_instance_arn)?
        {
            if ci.status.as_deref() != Some("INACTIVE") {
                ci.status = Some("INACTIVE".into());
                ci.status_reason = Some(reason.to_string());
                ci.agent_connected = false;
                ci.running_tasks_count = 0;
                ci.pending_tasks_count = 0;
                ci.version += 1;
                tx.put_container_instance(&r.cluster_arn, &ci, Expect::Version(version))?;
            }
        }
        Ok(stopped)
    })
}

/// Lines the store up with the instances that still run: those the store
/// knows and that run are kept (returned); those the store thinks alive but
/// that no longer run are recorded as terminated.
pub fn reconcile_instances(
    ctx: &Ctx,
    running: &[String],
    reason: &str,
) -> Result<Vec<String>, EcsError> {
    let ids = ctx.store.read(|tx| {
        let mut ids = vec![];
        for c in berth_store::all(|a, n| tx.clusters(a, n))? {
            let arn = c.cluster_arn.clone().unwrap_or_default();
            for status in ["ACTIVE", "DRAINING", "REGISTERING"] {
                let list =
                    berth_store::all(|a, n| tx.container_instances(&arn, Some(status), a, n))?;
                ids.extend(list.into_iter().filter_map(|ci| ci.value.ec2_instance_id));
            }
        }
        Ok::<_, EcsError>(ids)
    })?;
    let mut kept = vec![];
    for id in ids {
        if running.contains(&id) {
            kept.push(id);
        } else {
            terminated(ctx, &id, reason)?;
        }
    }
    Ok(kept)
}

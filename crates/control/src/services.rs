//! The service reconciler: for each ACTIVE or DRAINING service of a cluster,
//! a snapshot of its deployments and tasks goes to
//! [`berth_scheduler::service::decide`], and the decision is applied in the
//! same store transaction: new tasks (PROVISIONING, placed by the scheduler's
//! placement right after), tasks stopped with `ServiceSchedulerInitiated`,
//! rollout states, rollbacks, retired deployments, events and counts. A
//! DRAINING service whose tasks are all gone becomes INACTIVE.
//!
//! Level-triggered and idempotent: everything it reads is in the store, so
//! a crash at any line is repaired by the next tick.

use crate::agents::TdCache;
use crate::protection;
use crate::tasks::{build, NewTask};
use crate::Ctx;
use berth_model::ecs::*;
use berth_model::EcsError;
use berth_scheduler::service::{self as decide, CircuitBreaker, Health, Rollout, TaskStatus};
use berth_store::{Expect, ServiceFilter, TaskFilter, Tx, Versioned};
use foldhash::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Marks the deployment of a task on a DRAINING instance, so the service
/// decision replaces it as it replaces older deployments' tasks.
const DRAINING_SUFFIX: &str = "@draining";

/// Events kept per service, newest first (ECS keeps the last 100).
const MAX_EVENTS: usize = 100;

/// What a service's last pass read when it changed nothing and nothing it
/// decided on depended on the time (no health check pending or failing, no
/// protected task): while all of it is the same, so is the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    service_version: i64,
    /// Its tasks not yet STOPPED and their versions.
    tasks: Vec<(String, i64)>,
    draining: BTreeSet<String>,
}

/// A task as a pass read it, by ARN: its version and document, and the
/// pass that last read it.
type Known = HashMap<String, (i64, Arc<Task>, u64)>;

/// What the reconciler keeps between passes, by service ARN, so a pass
/// reads its tasks' versions (an index) and little else:
///
/// * the services whose last pass changed nothing ([`Seen`]): when nothing
///   it read changed since, the pass stops there;
/// * the tasks each pass read: the next one reads again only those whose
///   version changed (a version is never reused for other content: every
///   write of a task takes the next, and only committed rows are read).
#[derive(Debug, Default)]
pub struct Steady {
    seen: Mutex<BTreeMap<String, Seen>>,
    tasks: Mutex<BTreeMap<String, (u64, Known)>>,
}

impl Steady {
    fn is(&self, service_arn: &str, seen: &Seen) -> bool {
        self.seen
            .lock()
            .is_ok_and(|m| m.get(service_arn).is_some_and(|s| s == seen))
    }

    fn set(&self, service_arn: &str, seen: Option<Seen>) {
        if let Ok(mut m) = self.seen.lock() {
            match seen {
                Some(s) => m.insert(service_arn.to_string(), s),
                None => m.remove(service_arn),
            };
        }
    }

    /// The tasks of `versions`, from what the last pass of the service read
    /// where the version is the same, else from the store; keeps exactly
    /// these for the next pass.
    fn read(
        &self,
        tx: &dyn Tx,
        service_arn: &str,
        versions: &[(String, i64)],
    ) -> Result<Vec<Versioned<Arc<Task>>>, EcsError> {
        // Taken out while the pass reads (a failed read forgets it all).
        let (pass, mut known) = self
            .tasks
            .lock()
            .ok()
            .and_then(|mut m| m.remove(service_arn))
            .unwrap_or_default();
        let pass = pass + 1;
        let mut out = Vec::with_capacity(versions.len());
        for (arn, version) in versions {
            let hit = known.get_mut(arn.as_str()).and_then(|(v, t, seen)| {
                (*v == *version).then(|| {
                    *seen = pass;
                    t.clone()
                })
            });
            let task = match hit {
                Some(t) => t,
                None => match tx.task(arn)? {
                    Some(v) if v.version == *version => {
                        let t = Arc::new(v.value);
                        known.insert(arn.clone(), (*version, t.clone(), pass));
                        t
                    }
                    // Listed in this transaction, so read the same; skip
                    // what would not be.
                    _ => continue,
                },
            };
            out.push(Versioned {
                version: *version,
                value: task,
            });
        }
        // Exactly the tasks of this pass are kept for the next.
        known.retain(|_, (_, _, seen)| *seen == pass);
        if let Ok(mut m) = self.tasks.lock() {
            m.insert(service_arn.to_string(), (pass, known));
        }
        Ok(out)
    }
}

/// Reconciles every ACTIVE or DRAINING service of a cluster. Returns how many
/// tasks it started and stopped.
pub fn reconcile_cluster(ctx: &Ctx, cluster: &Cluster) -> Result<(usize, usize), EcsError> {
    reconcile_cluster_with(ctx, cluster, &Steady::default())
}

/// [`reconcile_cluster`], skipping the services `steady` knows unchanged
/// since a pass that changed nothing (the scheduler keeps one across ticks).
pub fn reconcile_cluster_with(
    ctx: &Ctx,
    cluster: &Cluster,
    steady: &Steady,
) -> Result<(usize, usize), EcsError> {
    let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
    let cluster_name = cluster.cluster_name.clone().unwrap_or_default();
    let services = ctx.store.read(|tx| {
        let filter = ServiceFilter {
            cluster_arn: cluster_arn.clone(),
            statuses: vec!["ACTIVE".into(), "DRAINING".into()],
            ..Default::default()
        };
        let services = berth_store::all(|a, n| tx.services(&filter, a, n))?;
        let draining: BTreeSet<String> = if services.is_empty() {
            BTreeSet::new()
        } else {
            berth_store::all(|a, n| {
                tx.container_instance_versions(&cluster_arn, Some("DRAINING"), a, n)
            })?
            .into_iter()
            .map(|(arn, _)| arn)
            .collect()
        };
        Ok::<_, EcsError>((services, draining))
    })?;
    let (services, draining) = services;
    let (mut started, mut stopped) = (0, 0);
    for s in services {
        let arn = s.value.service_arn.clone().unwrap_or_default();
        let (a, b) = ctx.store.write(|tx| {
            reconcile_service(
                ctx,
                tx,
                &cluster_name,
                &cluster_arn,
                &arn,
                &draining,
                steady,
            )
        })?;
        started += a;
        stopped += b;
    }
    Ok((started, stopped))
}

fn status_of(t: &Task) -> TaskStatus {
    match t.last_status.as_deref() {
        Some("PROVISIONING") => TaskStatus::Provisioning,
        Some("PENDING") => TaskStatus::Pending,
        Some("ACTIVATING") => TaskStatus::Activating,
        Some("RUNNING") => TaskStatus::Running,
        Some("DEACTIVATING") => TaskStatus::Deactivating,
        Some("STOPPING") => TaskStatus::Stopping,
        Some("DEPROVISIONING") => TaskStatus::Deprovisioning,
        _ => TaskStatus::Stopped,
    }
}

fn has_health_check(td: Option<&TaskDefinition>) -> bool {
    td.and_then(|d| d.container_definitions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.health_check.is_some()))
}

fn rollout_of(d: &Deployment) -> Rollout {
    match d.rollout_state {
        Some(DeploymentRolloutState::Completed) => Rollout::Completed,
        Some(DeploymentRolloutState::Failed) => Rollout::Failed {
            reason: d.rollout_state_reason.clone().unwrap_or_default(),
        },
        _ => Rollout::InProgress,
    }
}

/// Tasks of a deployment that stopped on their own (failed to start, or an
/// essential container exited), what the circuit breaker counts; counting
/// stops at `cap` (the breaker's threshold is at most 200).
fn failures(tx: &dyn Tx, cluster_arn: &str, deployment: &str, cap: u32) -> Result<u32, EcsError> {
    let filter = TaskFilter {
        cluster_arn: cluster_arn.to_string(),
        started_by: Some(deployment.to_string()),
        last_status: Some("STOPPED".into()),
        ..Default::default()
    };
    let mut n = 0;
    let mut after: Option<String> = None;
    loop {
        let page = tx.tasks(&filter, after.as_deref(), 100)?;
        for v in &page.items {
            let failed = matches!(
                v.value.stop_code,
                Some(TaskStopCode::TaskFailedToStart)
                    | Some(TaskStopCode::EssentialContainerExited)
            );
            if failed {
                n += 1;
                if n >= cap {
                    return Ok(n);
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(n),
        }
    }
}

fn reconcile_service(
    ctx: &Ctx,
    tx: &dyn Tx,
    cluster_name: &str,
    cluster_arn: &str,
    service_arn: &str,
    draining_instances: &BTreeSet<String>,
    steady: &Steady,
) -> Result<(usize, usize), EcsError> {
    let Some(Versioned {
        version,
        value: mut svc,
    }) = tx.service(service_arn)?
    else {
        return Ok((0, 0));
    };
    let name = svc.service_name.clone().unwrap_or_default();
    let group = format!("service:{name}");
    let now = ctx.now();
    let filter = TaskFilter {
        cluster_arn: cluster_arn.to_string(),
        group: Some(group.clone()),
        desired_status: Some("RUNNING".into()),
        // A task is STOPPED with its desired status STOPPED: the same
        // tasks, read from the index of those not yet stopped.
        not_stopped: true,
        ..Default::default()
    };
    let stopping_filter = TaskFilter {
        desired_status: Some("STOPPED".into()),
        ..filter.clone()
    };
    let mut live = berth_store::all(|a, n| tx.task_versions(&filter, a, n))?;
    live.extend(berth_store::all(|a, n| {
        tx.task_versions(&stopping_filter, a, n)
    })?);
    let seen = Seen {
        service_version: version,
        tasks: live,
        draining: draining_instances.clone(),
    };
    if steady.is(service_arn, &seen) {
        return Ok((0, 0));
    }
    // Whether the decision depends on the time (health checks in their
    // grace period or failing, protections that expire).
    let mut timed = false;
    // Desired RUNNING first, then those stopping.
    let (stopping, running): (Vec<_>, Vec<_>) = steady
        .read(tx, service_arn, &seen.tasks)?
        .into_iter()
        .partition(|v| v.value.desired_status.as_deref() == Some("STOPPED"));
    let draining = svc.status.as_deref() == Some("DRAINING");
    if draining && running.is_empty() && stopping.is_empty() {
        svc.status = Some("INACTIVE".into());
        svc.running_count = 0;
        svc.pending_count = 0;
        push_event(
            &mut svc,
            now,
            format!("(service {name}) has stopped: it is INACTIVE."),
        );
        tx.put_service(&svc, Expect::Version(version))?;
        return Ok((0, 0));
    }
    let original = svc.clone();
    let mut deployments = svc.deployments.clone().unwrap_or_default();
    // PRIMARY first.
    deployments.sort_by_key(|d| d.status.as_deref() != Some("PRIMARY"));
    if deployments.is_empty() {
        return Ok((0, 0));
    }
    let mut tds = TdCache::default();
    let config = svc.deployment_configuration.clone().unwrap_or_default();
    let breaker = config
        .deployment_circuit_breaker
        .clone()
        .unwrap_or_default();
    // Failures are counted (a read of the deployment's stopped tasks) while
    // its rollout is in progress, the only time the breaker judges it; a
    // deployment whose rollout is over keeps the count it reached (ECS too
    // stops counting once a deployment runs), so no pass reads a
    // long-lived deployment's whole history.
    let mut failed: BTreeMap<String, u32> = BTreeMap::new();
    for d in &deployments {
        let id = d.id.clone().unwrap_or_default();
        let n = if rollout_of(d) == Rollout::InProgress {
            failures(tx, cluster_arn, &id, 200)?
        } else {
            u32::try_from(d.failed_tasks).unwrap_or(0)
        };
        failed.insert(id, n);
    }
    let mut zones: Vec<String> = vec![];
    let mut tasks = vec![];
    let protections = protection::Protections::load(tx)?;
    for v in running.iter().chain(&stopping) {
        let t = &v.value;
        let arn = t.task_arn.clone().unwrap_or_default();
        let td = tds.get(tx, t.task_definition_arn.as_deref())?;
        let health = if !has_health_check(td.as_deref()) {
            Health::NoCheck
        } else {
            match t.health_status {
                Some(HealthStatus::Healthy) => Health::Healthy,
                Some(HealthStatus::Unhealthy) => Health::Unhealthy,
                _ => Health::Unknown,
            }
        };
        let protected = protections.is_protected(&arn, now)?;
        timed |= protected || !matches!(health, Health::NoCheck | Health::Healthy);
        let zone = t.availability_zone.clone().unwrap_or_default();
        if !zone.is_empty() && !zones.contains(&zone) {
            zones.push(zone.clone());
        }
        // A task on a draining instance is replaced like a task of an older
        // deployment: its replacement starts within maximumPercent and it
        // stops within minimumHealthyPercent.
        let deployment = t.started_by.clone().unwrap_or_default();
        let on_draining = t
            .container_instance_arn
            .as_ref()
            .is_some_and(|ci| draining_instances.contains(ci));
        tasks.push(decide::Task {
            id: arn.clone(),
            deployment: if on_draining {
                format!("{deployment}{DRAINING_SUFFIX}")
            } else {
                deployment
            },
            last_status: status_of(t),
            desired_status: if t.desired_status.as_deref() == Some("STOPPED") {
                decide::DesiredStatus::Stopped
            } else {
                decide::DesiredStatus::Running
            },
            health,
            started_at: t.started_at.map(|s| s.max(0.0) as u64),
            zone,
            protected,
        });
    }
    zones.sort();
    let input = decide::Service {
        name: name.clone(),
        desired_count: if draining {
            0
        } else {
            u32::try_from(svc.desired_count).unwrap_or(0)
        },
        minimum_healthy_percent: config
            .minimum_healthy_percent
            .map_or(100, |v| u32::try_from(v).unwrap_or(100)),
        maximum_percent: config
            .maximum_percent
            .map_or(200, |v| u32::try_from(v).unwrap_or(200)),
        circuit_breaker: CircuitBreaker {
            enable: breaker.enable,
            rollback: breaker.rollback,
        },
        health_check_grace_period_secs: svc
            .health_check_grace_period_seconds
            .map_or(0, |g| u64::try_from(g).unwrap_or(0)),
        now: now.max(0.0) as u64,
        deployments: deployments
            .iter()
            .map(|d| decide::Deployment {
                id: d.id.clone().unwrap_or_default(),
                task_definition: d.task_definition.clone().unwrap_or_default(),
                rollout: rollout_of(d),
                failed_tasks: failed
                    .get(d.id.as_deref().unwrap_or(""))
                    .copied()
                    .unwrap_or(0),
            })
            .collect(),
        tasks,
        zones,
    };
    let decision = decide::decide(&input).map_err(|e| EcsError::server(e.to_string()))?;
    // Rollback: the target deployment becomes PRIMARY again.
    if let Some(rb) = &decision.rollback {
        for d in deployments.iter_mut() {
            if d.id.as_deref() == Some(rb.to.as_str()) {
                d.status = Some("PRIMARY".into());
                d.rollout_state = Some(DeploymentRolloutState::InProgress);
                d.rollout_state_reason = Some(format!("ECS deployment {} in progress.", rb.to));
                d.updated_at = Some(now);
            } else if d.id.as_deref() == Some(rb.from.as_str()) {
                d.status = Some("ACTIVE".into());
            }
        }
        deployments.sort_by_key(|d| d.status.as_deref() != Some("PRIMARY"));
        svc.task_definition = Some(rb.task_definition.clone());
    }
    for (id, r) in &decision.rollout {
        if let Some(d) = deployments
            .iter_mut()
            .find(|d| d.id.as_deref() == Some(id.as_str()))
        {
            let (state, reason) = match r {
                Rollout::InProgress => (
                    DeploymentRolloutState::InProgress,
                    format!("ECS deployment {id} in progress."),
                ),
                Rollout::Completed => (
                    DeploymentRolloutState::Completed,
                    format!("ECS deployment {id} completed."),
                ),
                Rollout::Failed { reason } => (DeploymentRolloutState::Failed, reason.clone()),
            };
            if d.rollout_state != Some(state) {
                d.rollout_state = Some(state);
                d.rollout_state_reason = Some(reason);
                d.updated_at = Some(now);
            }
        }
    }
    // Stops.
    let by_arn: BTreeMap<&str, &Versioned<Arc<Task>>> = running
        .iter()
        .chain(&stopping)
        .map(|v| (v.value.task_arn.as_deref().unwrap_or(""), v))
        .collect();
    let mut stopped = 0;
    for s in &decision.stop {
        let Some(v) = by_arn.get(s.task.as_str()) else {
            continue;
        };
        let mut t = Task::clone(&v.value);
        if t.desired_status.as_deref() == Some("STOPPED") {
            continue;
        }
        t.desired_status = Some("STOPPED".into());
        t.stop_code = Some(TaskStopCode::ServiceSchedulerInitiated);
        t.stopped_reason = Some(s.stopped_reason.clone());
        t.stopping_at.get_or_insert(now);
        if t.container_instance_arn.is_none() {
            // Never placed: nothing runs, it is STOPPED at once.
            t.last_status = Some("STOPPED".into());
            t.stopped_at = Some(now);
            t.execution_stopped_at = Some(now);
        }
        t.version += 1;
        tx.put_task(&t, Expect::Version(v.version))?;
        stopped += 1;
    }
    // Starts.
    let mut started = 0;
    for st in &decision.start {
        let Some(d) = deployments
            .iter()
            .find(|d| d.id.as_deref() == Some(st.deployment.as_str()))
        else {
            continue;
        };
        let td_arn = d.task_definition.clone().unwrap_or_default();
        let Some(td) = tds.get(tx, Some(td_arn.as_str()))? else {
            push_event(
                &mut svc,
                now,
                format!("(service {name}) was unable to start tasks: task definition {td_arn} is missing."),
            );
            continue;
        };
        let strategy = d
            .capacity_provider_strategy
            .clone()
            .or_else(|| svc.capacity_provider_strategy.clone())
            .unwrap_or_default();
        let provider = strategy
            .iter()
            .find(|i| i.base > 0)
            .or_else(|| strategy.iter().max_by_key(|i| i.weight))
            .and_then(|i| i.capacity_provider.clone())
            .unwrap_or_default();
        let tags = if svc.propagate_tags == Some(PropagateTags::Service) {
            svc.tags.clone().unwrap_or_default()
        } else {
            vec![]
        };
        for _ in 0..st.count {
            let task = build(&NewTask {
                arns: &ctx.arns,
                cluster_name,
                cluster_arn,
                task_definition: &td,
                overrides: &TaskOverride::default(),
                network_configuration: d
                    .network_configuration
                    .as_ref()
                    .or(svc.network_configuration.as_ref()),
                capacity_provider: provider.clone(),
                group: group.clone(),
                started_by: Some(st.deployment.clone()),
                enable_execute_command: svc.enable_execute_command,
                tags: tags.clone(),
                cpu: td.cpu.clone(),
                memory: td.memory.clone(),
                now,
            });
            tx.put_task(&task, Expect::Absent)?;
            crate::placing::remember(
                tx,
                task.task_arn.as_deref().unwrap_or(""),
                &crate::placing::Requested {
                    constraints: svc.placement_constraints.clone().unwrap_or_default(),
                    strategy: svc.placement_strategy.clone().unwrap_or_default(),
                },
            )?;
            started += 1;
        }
    }
    deployments.retain(|d| {
        !decision
            .retire
            .iter()
            .any(|r| d.id.as_deref() == Some(r.as_str()))
    });
    // Counts, from the tasks as they are now.
    let stopping_now: BTreeSet<&str> = decision.stop.iter().map(|s| s.task.as_str()).collect();
    let (mut run_total, mut pending_total) = (0, 0);
    for d in deployments.iter_mut() {
        let id = d.id.clone().unwrap_or_default();
        let mine = running
            .iter()
            .filter(|v| v.value.started_by.as_deref() == Some(id.as_str()))
            .filter(|v| {
                v.value
                    .task_arn
                    .as_deref()
                    .is_none_or(|a| !stopping_now.contains(a))
            });
        let (mut r, mut p) = (0, 0);
        for v in mine {
            if v.value.last_status.as_deref() == Some("RUNNING") {
                r += 1;
            } else {
                p += 1;
            }
        }
        p += decision
            .start
            .iter()
            .filter(|s| s.deployment == id)
            .map(|s| s.count as i32)
            .sum::<i32>();
        d.running_count = r;
        d.pending_count = p;
        d.failed_tasks = failed.get(&id).copied().unwrap_or(0) as i32;
        if d.status.as_deref() == Some("PRIMARY") {
            d.desired_count = if draining { 0 } else { svc.desired_count };
        } else {
            d.desired_count = 0;
        }
        run_total += r;
        pending_total += p;
    }
    svc.running_count = run_total;
    svc.pending_count = pending_total;
    svc.deployments = Some(deployments);
    for e in &decision.events {
        push_event(&mut svc, now, e.to_string());
    }
    let unchanged = svc == original && stopped == 0 && started == 0 && decision.rollback.is_none();
    steady.set(service_arn, (unchanged && !timed).then_some(seen));
    // A steady service is not written again every tick.
    if svc != original {
        tx.put_service(&svc, Expect::Version(version))?;
    }
    Ok((started, stopped))
}

/// Adds an event, newest first, unless it repeats the newest one; keeps 100.
fn push_event(svc: &mut Service, now: f64, message: String) {
    let events = svc.events.get_or_insert_with(Vec::new);
    if events.first().and_then(|e| e.message.as_deref()) == Some(message.as_str()) {
        return;
    }
    events.insert(
        0,
        ServiceEvent {
            id: Some(uuid::Uuid::new_v4().to_string()),
            created_at: Some(now),
            message: Some(message),
        },
    );
    events.truncate(MAX_EVENTS);
}

//! The daemon reconciler: for each daemon of a cluster, exactly one task of
//! its current revision on every ACTIVE or DRAINING instance of its capacity
//! providers.
//!
//! Each pass reads the daemons, the instances and the daemon tasks, and
//! takes the converging steps in one transaction per daemon, so it can run
//! again at any moment (after a crash at any line) without harm:
//!
//! - an instance without the daemon gets its task at once, assigned to it
//!   directly (no placement: the daemon goes where the instance is), before
//!   any application task is placed there — the scheduler places nothing on
//!   an instance while one of its daemon tasks is starting
//!   ([`DaemonView::starting`], at most [`START_WAIT`]);
//! - a task of an older revision is replaced in place, stop then start, on
//!   at most `drainPercent` of the instances at once (at least one);
//! - on a DRAINING instance the daemon stays until every other task there
//!   has stopped (daemons stop last);
//! - a task that stops on its own is started again after a backoff; a
//!   critical daemon's failure marks its instance IMPAIRED (health check
//!   `DAEMON`), for repair to replace it;
//! - a deployment goes PENDING → IN_PROGRESS → SUCCESSFUL once every
//!   instance runs the target revision; when its tasks keep failing (the
//!   circuit breaker: `clamp(ceil(instances / 2), 3, 200)` failures) it
//!   rolls back to the revision it replaced (ROLLBACK_IN_PROGRESS →
//!   ROLLBACK_SUCCESSFUL), or stops (STOPPED) when there is none;
//! - a daemon being deleted stops its tasks and its record goes once they
//!   have stopped.

use super::records::*;
use crate::agents::{load_record, refresh_counts, InstanceRecord};
use crate::tasks::{build, NewTask};
use crate::usage::{registered, task_needs};
use crate::Ctx;
use berth_model::ecs::*;
use berth_model::EcsError;
use berth_store::{docs, Expect, TaskFilter, Tx, Versioned};
use std::collections::{BTreeMap, BTreeSet};

/// How long application tasks wait for a daemon task starting on their
/// instance before they are placed there anyway.
pub const START_WAIT: f64 = 120.0;
/// Restart backoff after a daemon task fails: doubling from this, per
/// failure on the instance, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: f64 = 5.0;
const MAX_BACKOFF: f64 = 300.0;
/// ECS's default share of instances a daemon deployment replaces at once.
const DEFAULT_DRAIN_PERCENT: f64 = 25.0;

/// What the daemons mean for the scheduler's pass over the same cluster.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DaemonView {
    /// Daemon tasks not yet stopped, by container instance ARN.
    pub tasks_on: BTreeMap<String, usize>,
    /// Container instances where a daemon task is starting: application
    /// tasks are not placed there yet.
    pub starting: BTreeSet<String>,
    /// CPU units and MiB the daemons take on each instance of a capacity
    /// provider (by name), held back when planning and filling new instances.
    pub reserve: BTreeMap<String, (u32, u64)>,
    pub started: usize,
    pub stopped: usize,
    /// Seconds until a restart backoff ends, when one is running.
    pub next_tick: Option<f64>,
}

impl DaemonView {
    fn wake_in(&mut self, secs: f64) {
        let secs = secs.max(0.1);
        self.next_tick = Some(self.next_tick.map_or(secs, |n| n.min(secs)));
    }
}

/// The capacity provider name of an ARN (or of a bare name).
fn cp_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn failed(t: &Task) -> bool {
    !matches!(
        t.stop_code,
        Some(TaskStopCode::ServiceSchedulerInitiated) | Some(TaskStopCode::TerminationNotice)
    )
}

/// One instance as the daemons see it.
struct Instance {
    ci: Versioned<ContainerInstance>,
    record: InstanceRecord,
    cp: String,
    draining: bool,
    /// Other (application) tasks not yet stopped.
    others: usize,
}

/// Reconciles every daemon of a cluster.
pub fn reconcile_cluster(ctx: &Ctx, cluster: &Cluster) -> Result<DaemonView, EcsError> {
    let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
    let cluster_name = cluster.cluster_name.clone().unwrap_or_default();
    let mut view = DaemonView::default();
    let arns: Vec<String> = ctx.store.read(|tx| {
        Ok::<_, EcsError>(
            cluster_daemons(tx, &cluster_arn)?
                .into_iter()
                .filter_map(|d| d.value.detail.daemon_arn)
                .collect(),
        )
    })?;
    for arn in arns {
        ctx.store
            .write(|tx| reconcile_daemon(ctx, tx, &cluster_name, &cluster_arn, &arn, &mut view))?;
    }
    Ok(view)
}

fn reconcile_daemon(
    ctx: &Ctx,
    tx: &dyn Tx,
    cluster_name: &str,
    cluster_arn: &str,
    daemon_arn: &str,
    view: &mut DaemonView,
) -> Result<(), EcsError> {
    let Some(Versioned {
        version,
        value: mut daemon,
    }) = load_daemon(tx, daemon_arn)?
    else {
        return Ok(());
    };
    let now = ctx.now();
    let group = daemon.group();
    let filter = TaskFilter {
        cluster_arn: cluster_arn.to_string(),
        group: Some(group.clone()),
        ..Default::default()
    };
    let live: Vec<Versioned<Task>> = ["RUNNING", "STOPPED"]
        .iter()
        .map(|d| {
            let f = TaskFilter {
                desired_status: Some((*d).into()),
                not_stopped: true,
                ..filter.clone()
            };
            berth_store::all(|a, n| tx.tasks(&f, a, n))
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .filter(|v| v.value.last_status.as_deref() != Some("STOPPED"))
        .collect();
    let deleting = daemon.detail.status == Some(DaemonStatus::DeleteInProgress);
    if deleting {
        let mut left = 0;
        for v in &live {
            left += 1;
            if v.value.desired_status.as_deref() != Some("STOPPED") {
                stop(
                    tx,
                    v,
                    now,
                    format!("Daemon {} is being deleted.", daemon.name),
                )?;
                view.stopped += 1;
            }
            count_on(view, &v.value);
        }
        if left == 0 {
            tx.delete_document(DAEMON, daemon_arn, version)?;
        }
        return Ok(());
    }
    let Some(revision) = load_revision(tx, &daemon.revision_arn)?.map(|v| v.value) else {
        return Ok(());
    };
    let rev_id = id_of(&daemon.revision_arn).to_string();
    let td_arn = revision
        .daemon_task_definition_arn
        .clone()
        .unwrap_or_default();
    let Some(td) = load_td(tx, &td_arn)?.map(|v| as_task_definition(&v.value.definition)) else {
        return Ok(());
    };
    let cps: BTreeSet<String> = daemon
        .capacity_provider_arns
        .iter()
        .map(|a| cp_name(a).to_string())
        .collect();
    let (need_cpu, need_mem) = needs(&td);
    for cp in &cps {
        let r = view.reserve.entry(cp.clone()).or_default();
        r.0 += need_cpu;
        r.1 += need_mem;
    }

    // The instances of the daemon's capacity providers.
    let mut instances: Vec<Instance> = vec![];
    for status in ["ACTIVE", "DRAINING"] {
        let list =
            berth_store::all(|a, n| tx.container_instances(cluster_arn, Some(status), a, n))?;
        for ci in list {
            let cp = ci.value.capacity_provider_name.clone().unwrap_or_default();
            let Some(record) = load_record(tx, ci.value.ec2_instance_id.as_deref().unwrap_or(""))?
            else {
                continue;
            };
            // Only a draining instance's other tasks matter (its daemons
            // stop last), so only a draining instance's tasks are read.
            let others = if status == "DRAINING" {
                crate::agents::instance_tasks(tx, &record)?
                    .iter()
                    .filter(|t| !is_daemon_task(t))
                    .count()
            } else {
                0
            };
            instances.push(Instance {
                ci,
                record,
                cp,
                draining: status == "DRAINING",
                others,
            });
        }
    }
    let mut on: BTreeMap<&str, Vec<&Versioned<Task>>> = BTreeMap::new();
    for v in &live {
        count_on(view, &v.value);
        on.entry(v.value.container_instance_arn.as_deref().unwrap_or(""))
            .or_default()
            .push(v);
    }
    let in_scope = |i: &Instance| cps.contains(&i.cp);
    let targets = instances.iter().filter(|i| in_scope(i)).count();
    let drain_percent = daemon
        .deployment_configuration
        .as_ref()
        .and_then(|c| c.drain_percent)
        .unwrap_or(DEFAULT_DRAIN_PERCENT)
        .clamp(0.0, 100.0);
    let budget = ((targets as f64 * drain_percent / 100.0).floor() as usize).max(1);
    // Instances replacing their daemon task now: the old one stopping, or
    // the new one not yet RUNNING.
    let mut in_flight = instances
        .iter()
        .filter(|i| in_scope(i))
        .filter(|i| {
            let tasks = on.get(i.record.container_instance_arn.as_str());
            tasks.is_some_and(|ts| {
                ts.iter().any(|v| {
                    let current = v.value.started_by.as_deref() == Some(rev_id.as_str());
                    let stopping = v.value.desired_status.as_deref() == Some("STOPPED");
                    (!current && stopping)
                        || (current
                            && !stopping
                            && v.value.last_status.as_deref() != Some("RUNNING"))
                })
            })
        })
        .count();

    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let (mut running_on, mut draining_on) = (BTreeMap::<String, i32>::new(), BTreeMap::new());
    let mut done = 0usize;
    for inst in &instances {
        let ci_arn = inst.record.container_instance_arn.as_str();
        let tasks: Vec<&Versioned<Task>> = on.get(ci_arn).cloned().unwrap_or_default();
        let wanted = tasks
            .iter()
            .filter(|v| v.value.desired_status.as_deref() == Some("RUNNING"));
        let (current, old): (Vec<&Versioned<Task>>, Vec<&Versioned<Task>>) =
            wanted.partition(|v| v.value.started_by.as_deref() == Some(rev_id.as_str()));
        if !in_scope(inst) || (inst.draining && inst.others == 0) {
            // Not the daemon's any more, or drained of everything else: stop last.
            for v in current.iter().chain(&old) {
                let why = if inst.draining {
                    "Instance is draining: daemons stop last.".to_string()
                } else {
                    format!(
                        "Daemon {} no longer runs on capacity provider {}.",
                        daemon.name, inst.cp
                    )
                };
                stop(tx, v, now, why)?;
                view.stopped += 1;
                dirty.insert(inst.record.instance_id.clone());
            }
            continue;
        }
        // One of the current revision is enough.
        for v in current.iter().skip(1) {
            stop(tx, v, now, "Duplicate daemon task.".into())?;
            view.stopped += 1;
            dirty.insert(inst.record.instance_id.clone());
        }
        if let Some(v) = current.first() {
            if v.value.last_status.as_deref() == Some("RUNNING") {
                *running_on.entry(inst.cp.clone()).or_insert(0) += 1;
                if old.is_empty() {
                    done += 1;
                }
            } else if now - v.value.created_at.unwrap_or(now) < START_WAIT {
                view.starting.insert(ci_arn.to_string());
            }
            for o in &old {
                stop(tx, o, now, "Replaced by a new daemon revision.".into())?;
                view.stopped += 1;
            }
            continue;
        }
        // An old revision runs: replace it within the budget, stop first
        // (not on a draining instance: it is going).
        if !old.is_empty() && inst.draining {
            continue;
        }
        if !old.is_empty() {
            *draining_on.entry(inst.cp.clone()).or_insert(0) += 1;
            if in_flight < budget {
                for o in &old {
                    stop(
                        tx,
                        o,
                        now,
                        format!("Daemon {} deploys a new revision.", daemon.name),
                    )?;
                    view.stopped += 1;
                }
                in_flight += 1;
                dirty.insert(inst.record.instance_id.clone());
            }
            continue;
        }
        if tasks
            .iter()
            .any(|v| v.value.desired_status.as_deref() == Some("STOPPED"))
        {
            // The old one is still stopping.
            *draining_on.entry(inst.cp.clone()).or_insert(0) += 1;
            continue;
        }
        // None runs here: start one, after the backoff of recent failures.
        let history = stopped_here(tx, cluster_arn, &group, ci_arn)?;
        let failures: Vec<&Task> = history
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(rev_id.as_str()) && failed(t))
            .collect();
        if let Some(last) = history.iter().filter(|t| failed(t)).max_by(|a, b| {
            a.stopped_at
                .unwrap_or(0.0)
                .total_cmp(&b.stopped_at.unwrap_or(0.0))
        }) {
            if daemon.critical() {
                // The reason names the task: once per failure.
                let reason = format!(
                    "Daemon {} task {} stopped: {}",
                    daemon.name,
                    id_of(last.task_arn.as_deref().unwrap_or("")),
                    last.stopped_reason.as_deref().unwrap_or("no reason given")
                );
                impair(tx, inst, reason, now)?;
            }
            let n = failures.len().clamp(1, 16) as i32;
            let wait = (FIRST_BACKOFF * 2f64.powi(n - 1)).min(MAX_BACKOFF);
            let since = now - last.stopped_at.unwrap_or(now);
            if since < wait {
                view.wake_in(wait - since);
                continue;
            }
        }
        let (reg_cpu, reg_mem) = registered(&inst.ci.value);
        let (used_cpu, used_mem) = crate::agents::instance_tasks(tx, &inst.record)?
            .iter()
            .map(task_needs)
            .fold((0i64, 0i64), |(c, m), (tc, tm)| {
                (c + i64::from(tc), m + tm as i64)
            });
        if reg_cpu - used_cpu < i64::from(need_cpu) || reg_mem - used_mem < need_mem as i64 {
            // Full of application tasks: a critical daemon impairs the
            // instance, which repair replaces by one planned with room.
            tracing::warn!(
                daemon = daemon.name,
                instance_id = inst.record.instance_id,
                "the instance has no room left for the daemon task"
            );
            if daemon.critical() {
                let reason = format!(
                    "Daemon {} does not fit: it needs {need_cpu} CPU units and {need_mem} MiB beside the tasks running there.",
                    daemon.name
                );
                impair(tx, inst, reason, now)?;
            }
            continue;
        }
        let tags = if revision.propagate_tags == Some(DaemonPropagateTags::Daemon) {
            daemon.tags.clone()
        } else {
            vec![]
        };
        let mut task = build(&NewTask {
            arns: &ctx.arns,
            cluster_name,
            cluster_arn,
            task_definition: &td,
            overrides: &TaskOverride::default(),
            network_configuration: None,
            capacity_provider: inst.cp.clone(),
            group: group.clone(),
            started_by: Some(rev_id.clone()),
            enable_execute_command: revision.enable_execute_command.unwrap_or(false),
            tags,
            cpu: td.cpu.clone(),
            memory: td.memory.clone(),
            now,
        });
        task.container_instance_arn = Some(ci_arn.to_string());
        task.availability_zone = Some(inst.record.availability_zone.clone());
        task.last_status = Some("PENDING".into());
        tx.put_task(&task, Expect::Absent)?;
        in_flight += 1;
        view.started += 1;
        *view.tasks_on.entry(ci_arn.to_string()).or_insert(0) += 1;
        view.starting.insert(ci_arn.to_string());
        dirty.insert(inst.record.instance_id.clone());
    }
    for inst in &instances {
        if dirty.contains(&inst.record.instance_id) {
            refresh_counts(tx, &inst.record)?;
        }
    }

    // The deployment and the daemon's counts.
    let mut changed_daemon = false;
    let counts: Vec<DaemonCapacityProvider> = daemon
        .capacity_provider_arns
        .iter()
        .map(|a| DaemonCapacityProvider {
            arn: Some(a.clone()),
            running_count: running_on.get(cp_name(a)).copied().unwrap_or(0),
        })
        .collect();
    let current = vec![DaemonRevisionDetail {
        arn: Some(daemon.revision_arn.clone()),
        capacity_providers: Some(counts),
        total_running_count: running_on.values().sum(),
    }];
    if daemon.detail.current_revisions.as_ref() != Some(&current) {
        daemon.detail.current_revisions = Some(current);
        changed_daemon = true;
    }
    if let Some(dep_arn) = daemon.detail.deployment_arn.clone() {
        if let Some(Versioned {
            version: dep_version,
            value: mut dep,
        }) = load_deployment(tx, &dep_arn)?
        {
            let before = dep.clone();
            let rolled_back = advance(
                tx,
                cluster_arn,
                &mut daemon,
                &mut dep,
                &rev_id,
                targets,
                done,
                &running_on,
                &draining_on,
                now,
            )?;
            changed_daemon |= rolled_back;
            if dep != before {
                docs::put(
                    tx,
                    DAEMON_DEPLOYMENT,
                    &dep_arn,
                    daemon_arn,
                    &dep,
                    Expect::Version(dep_version),
                )?;
            }
        }
    }
    if changed_daemon {
        daemon.detail.updated_at = Some(now);
        docs::put(
            tx,
            DAEMON,
            daemon_arn,
            cluster_arn,
            &daemon,
            Expect::Version(version),
        )?;
    }
    Ok(())
}

/// Moves a deployment along; true when it rolled the daemon back.
#[allow(clippy::too_many_arguments)]
fn advance(
    tx: &dyn Tx,
    cluster_arn: &str,
    daemon: &mut DaemonRecord,
    dep: &mut DaemonDeployment,
    rev_id: &str,
    targets: usize,
    done: usize,
    running_on: &BTreeMap<String, i32>,
    draining_on: &BTreeMap<String, i32>,
    now: f64,
) -> Result<bool, EcsError> {
    use DaemonDeploymentStatus as S;
    let status = dep.status.unwrap_or(S::Pending);
    if status == S::Pending {
        dep.status = Some(S::InProgress);
        dep.started_at = Some(now);
    }
    let status = dep.status.unwrap_or(S::InProgress);
    if !matches!(status, S::InProgress | S::RollbackInProgress) {
        return Ok(false);
    }
    // Counts of the revision being rolled out.
    if let Some(target) = dep.target_daemon_revision.as_mut() {
        let cps: Vec<DaemonDeploymentCapacityProvider> = daemon
            .capacity_provider_arns
            .iter()
            .map(|a| DaemonDeploymentCapacityProvider {
                arn: Some(a.clone()),
                running_instance_count: Some(running_on.get(cp_name(a)).copied().unwrap_or(0)),
                draining_instance_count: Some(draining_on.get(cp_name(a)).copied().unwrap_or(0)),
            })
            .collect();
        if status == S::InProgress {
            target.total_running_instance_count = Some(running_on.values().sum());
            target.total_draining_instance_count = Some(draining_on.values().sum());
            target.capacity_providers = Some(cps);
        }
    }
    // The circuit breaker watches the rollout (a rollback keeps what tripped it).
    let threshold = ((targets as u32).div_ceil(2)).clamp(3, 200);
    let mut failures = 0;
    if status == S::InProgress {
        let since = dep.started_at.unwrap_or(0.0);
        failures = revision_failures(tx, cluster_arn, &daemon.group(), rev_id, since, threshold)?;
        let breaker = dep.circuit_breaker.get_or_insert_with(Default::default);
        breaker.threshold = threshold as i32;
        breaker.failure_count = failures as i32;
        if breaker.status.is_none() {
            breaker.status = Some(DaemonDeploymentRollbackMonitorsStatus::Monitoring);
        }
    }
    if status == S::InProgress && failures >= threshold {
        let breaker = dep.circuit_breaker.get_or_insert_with(Default::default);
        breaker.status = Some(DaemonDeploymentRollbackMonitorsStatus::Triggered);
        let reason = format!(
            "Daemon deployment circuit breaker: {failures} tasks of the revision failed to run (threshold {threshold})."
        );
        let source = dep
            .source_daemon_revisions
            .iter()
            .flatten()
            .find_map(|r| r.arn.clone());
        match source {
            Some(src) => {
                dep.status = Some(S::RollbackInProgress);
                dep.status_reason = Some(format!("{reason} Rolling back to {src}."));
                dep.rollback = Some(DaemonRollback {
                    reason: Some(reason),
                    started_at: Some(now),
                    rollback_target_daemon_revision_arn: Some(src.clone()),
                    rollback_capacity_providers: Some(daemon.capacity_provider_arns.clone()),
                });
                daemon.revision_arn = src;
                return Ok(true);
            }
            None => {
                dep.status = Some(S::Stopped);
                dep.status_reason = Some(reason);
                dep.stopped_at = Some(now);
                return Ok(false);
            }
        }
    }
    if done == targets {
        if status == S::InProgress {
            if let Some(b) = dep.circuit_breaker.as_mut() {
                b.status = Some(DaemonDeploymentRollbackMonitorsStatus::MonitoringComplete);
            }
            dep.status = Some(S::Successful);
            dep.status_reason = Some(format!(
                "Every instance ({targets}) runs the daemon's revision."
            ));
        } else {
            dep.status = Some(S::RollbackSuccessful);
            dep.status_reason = Some(format!(
                "Rolled back: every instance ({targets}) runs the previous revision."
            ));
        }
        dep.finished_at = Some(now);
    }
    Ok(false)
}

/// What a daemon task takes: the task-level cpu and memory, else its
/// containers' sums.
fn needs(td: &TaskDefinition) -> (u32, u64) {
    let containers = td.container_definitions.as_deref().unwrap_or_default();
    let cpu = td
        .cpu
        .as_deref()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| containers.iter().map(|c| c.cpu.max(0) as u32).sum());
    let memory = td
        .memory
        .as_deref()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| {
            containers
                .iter()
                .map(|c| c.memory.or(c.memory_reservation).unwrap_or(0).max(0) as u64)
                .sum()
        });
    (cpu, memory)
}

fn count_on(view: &mut DaemonView, t: &Task) {
    if let Some(ci) = &t.container_instance_arn {
        *view.tasks_on.entry(ci.clone()).or_insert(0) += 1;
    }
}

/// Asks a daemon task to stop (the agent stops it; the scheduler's stop code).
fn stop(tx: &dyn Tx, v: &Versioned<Task>, now: f64, reason: String) -> Result<(), EcsError> {
    crate::tasks::request_stop(
        tx,
        v.value.task_arn.as_deref().unwrap_or(""),
        TaskStopCode::ServiceSchedulerInitiated,
        reason,
        now,
    )
}

/// The daemon's stopped tasks on one instance.
fn stopped_here(
    tx: &dyn Tx,
    cluster_arn: &str,
    group: &str,
    ci_arn: &str,
) -> Result<Vec<Task>, EcsError> {
    let filter = TaskFilter {
        cluster_arn: cluster_arn.to_string(),
        group: Some(group.to_string()),
        container_instance_arn: Some(ci_arn.to_string()),
        last_status: Some("STOPPED".into()),
        ..Default::default()
    };
    Ok(berth_store::all(|a, n| tx.tasks(&filter, a, n))?
        .into_iter()
        .map(|v| v.value)
        .collect())
}

/// Tasks of a revision that failed since `since`, counted up to `cap`.
fn revision_failures(
    tx: &dyn Tx,
    cluster_arn: &str,
    group: &str,
    rev_id: &str,
    since: f64,
    cap: u32,
) -> Result<u32, EcsError> {
    let filter = TaskFilter {
        cluster_arn: cluster_arn.to_string(),
        group: Some(group.to_string()),
        started_by: Some(rev_id.to_string()),
        last_status: Some("STOPPED".into()),
        ..Default::default()
    };
    let mut n = 0;
    let mut after: Option<String> = None;
    loop {
        let page = tx.tasks(&filter, after.as_deref(), 100)?;
        for v in &page.items {
            if failed(&v.value) && v.value.stopped_at.unwrap_or(0.0) >= since {
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

/// Marks an instance IMPAIRED by a critical daemon (health check DAEMON),
/// written once per distinct reason.
fn impair(tx: &dyn Tx, inst: &Instance, reason: String, now: f64) -> Result<(), EcsError> {
    let Some(Versioned {
        version,
        value: mut ci,
    }) = tx.container_instance(&inst.record.container_instance_arn)?
    else {
        return Ok(());
    };
    if crate::lifecycle::set_health(
        &mut ci,
        InstanceHealthCheckType::Daemon,
        InstanceHealthCheckState::Impaired,
        Some(reason),
        now,
    ) {
        ci.version += 1;
        tx.put_container_instance(&inst.record.cluster_arn, &ci, Expect::Version(version))?;
    }
    Ok(())
}

//! The ECS service scheduler's decision for one service, as a pure function
//! of a snapshot: which tasks to start (on which deployment), which to stop
//! and why, how each deployment's rollout stands, whether the circuit breaker
//! trips and where to roll back to.
//!
//! # Rules and their sources
//!
//! From "Deploy Amazon ECS services by replacing tasks" (ECS Developer
//! Guide) and the `DeploymentConfiguration` API reference:
//!
//! * `minimumHealthyPercent` is "the lower limit on the number of tasks that
//!   should be running and healthy ... as a percent of the desired number of
//!   tasks ... This value is rounded up." Here: the **floor** is
//!   `ceil(min% × desired / 100)`; a decision never stops a healthy task if
//!   that would leave fewer healthy tasks than the floor (when fewer are
//!   healthy already, it stops none of them).
//! * `maximumPercent` is "the upper limit on the number of tasks ... allowed
//!   in the RUNNING or PENDING state ... This value is rounded down." Here:
//!   the **ceiling** is `floor(max% × desired / 100)`, and starts never make
//!   the service's tasks that are not STOPPED (those draining included)
//!   exceed it. A stop frees room only once the task is gone from a later
//!   snapshot: starts never count on this decision's stops.
//! * "If tasks become unhealthy, the Amazon ECS service scheduler will start
//!   replacement tasks first and maintain minimumHealthyPercent tasks until
//!   the replacement tasks become healthy", and "If ... maximumPercent
//!   doesn't allow the Amazon ECS scheduler to start replacement tasks, the
//!   scheduler stops the unhealthy tasks one-by-one": an UNHEALTHY task past
//!   the grace period is replaced; it is stopped once a replacement is
//!   healthy, or at once where the ceiling blocks its replacement.
//! * Deployment circuit breaker (`ServiceDeploymentCircuitBreaker`): "a
//!   minimum threshold of 3 and a maximum threshold of 200 ... 0.5 * desired
//!   task count". Here `clamp(ceil(desired / 2), 3, 200)` (the rounding is
//!   ours). When a PRIMARY deployment's failed tasks reach it, the deployment
//!   is FAILED and "stop[s] launching new tasks"; with `rollback`, "the
//!   service is rolled back to the last deployment that completed
//!   successfully".
//! * Task scale-in protection: "protect your tasks from being terminated by
//!   scale-in events from either service auto scaling or deployments". Here a
//!   protected task is never stopped; a scale-in that only protected tasks
//!   could satisfy leaves the service above its desired count and says so.
//! * Scale-in keeps Availability Zones balanced: tasks go from the zone with
//!   the most tasks of the deployment first.
//! * Every stop carries ECS's stop code `ServiceSchedulerInitiated`.
//!
//! berth's own choices, where ECS publishes none:
//!
//! * A task is *healthy* when RUNNING and its containers have no health
//!   check, report HEALTHY, or it is within the health check grace period
//!   (since `started_at`). UNKNOWN past the grace period is neither healthy
//!   nor replaced (ECS replaces only UNHEALTHY tasks). ECS's extra 40 s wait
//!   for tasks without a health check is not modelled.
//! * The ceiling is at least `desired` (a `maximumPercent` under 100 would
//!   not let the service run its desired count). Where the floor would reach
//!   the ceiling (e.g. 100 % / 100 %) a deployment could never progress, so
//!   the floor gives way to `ceiling − 1`: one task at a time. [`limits`]
//!   computes both; `minimumHealthyPercent` above 100 counts as 100.
//! * Stops, in priority order under the floor: tasks of older deployments
//!   (not-yet-healthy ones first, oldest deployment first), replaced
//!   UNHEALTHY tasks (never counted healthy, so free), then the scale-in
//!   excess of the target deployment, zone with the most tasks first and,
//!   within a zone, not-yet-healthy tasks first, then the youngest.
//! * A task whose deployment is not in the snapshot belongs to an older
//!   deployment.
//! * A deployment is COMPLETED when at least `desired` healthy tasks run on
//!   it and no other deployment has a task that is not STOPPED. COMPLETED and
//!   FAILED are final; the breaker watches only an IN_PROGRESS PRIMARY.
//! * With `desired_count` 0 every unprotected task is stopped, even under a
//!   FAILED deployment.
//!
//! # What the control plane does with a decision
//!
//! 1. Persist [`Decision::rollout`] on the deployments. If
//!    [`Decision::rollback`] is set, make its `to` deployment PRIMARY again
//!    (first in the list, IN_PROGRESS, its failure count reset) and the
//!    failed one ACTIVE; this decision already targets `to`.
//! 2. Set `desiredStatus` STOPPED on each [`Decision::stop`] task with stop
//!    code `ServiceSchedulerInitiated` and its `stopped_reason`.
//! 3. Create the [`Decision::start`] tasks (PROVISIONING) on their
//!    deployment's task definition, spread over zones as `by_zone` suggests
//!    (the placement engine has the last word).
//! 4. Remove the [`Decision::retire`] deployments (they have no tasks left
//!    and the PRIMARY completed).
//! 5. Record [`Decision::events`] as service events (`Display` gives the
//!    ECS text) and decide again on the next tick or task state change.
//!    Decisions are level-triggered: a lost decision is simply made again.
//!
//! # Complexity
//!
//! `O(T log T + Z log Z + S log Z)` for `T` tasks, `Z` zones and `S` starts:
//! one pass classifies the tasks, the stop candidates are sorted once, and
//! zones are picked from binary heaps. What a whole reconcile of a
//! 1,000-task service costs (this decision included) is measured by
//! `berth bench services` (BENCHMARKS.md); `service_cases::thousand_tasks_is_fast`
//! only guards against a gross regression.

use foldhash::HashMap;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;

use serde::{Deserialize, Serialize};

/// ECS's stop code for every stop the service scheduler initiates.
pub const STOP_CODE: &str = "ServiceSchedulerInitiated";

/// Smallest circuit breaker threshold (ECS).
pub const MIN_FAILURE_THRESHOLD: u32 = 3;
/// Largest circuit breaker threshold (ECS).
pub const MAX_FAILURE_THRESHOLD: u32 = 200;

/// One service as the scheduler sees it at `now`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// The service name, for events.
    pub name: String,
    pub desired_count: u32,
    pub minimum_healthy_percent: u32,
    pub maximum_percent: u32,
    pub circuit_breaker: CircuitBreaker,
    pub health_check_grace_period_secs: u64,
    /// Seconds on the caller's clock (the same clock as [`Task::started_at`]).
    pub now: u64,
    /// PRIMARY first, then the ACTIVE ones, newest first.
    pub deployments: Vec<Deployment>,
    /// The service's tasks; STOPPED ones may be left out or included.
    pub tasks: Vec<Task>,
    /// The Availability Zones of the capacity the service runs on, for the
    /// spread of starts.
    pub zones: Vec<String>,
}

/// `deploymentCircuitBreaker`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreaker {
    pub enable: bool,
    pub rollback: bool,
}

/// One deployment of the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub task_definition: String,
    /// As the previous decision left it (IN_PROGRESS when new).
    pub rollout: Rollout,
    /// Tasks of this deployment that failed to start or stopped
    /// unexpectedly since it began (the circuit breaker's count).
    pub failed_tasks: u32,
}

/// A deployment's `rolloutState`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rollout {
    InProgress,
    Completed,
    Failed { reason: String },
}

/// A task's `lastStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

/// A task's `desiredStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DesiredStatus {
    Running,
    Stopped,
}

/// A task's container health (`healthStatus`), or none when no essential
/// container has a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    NoCheck,
    Unknown,
    Healthy,
    Unhealthy,
}

/// One task of the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub deployment: String,
    pub last_status: TaskStatus,
    pub desired_status: DesiredStatus,
    pub health: Health,
    /// When it reached RUNNING, if it has.
    pub started_at: Option<u64>,
    pub zone: String,
    /// Scale-in protection (`UpdateTaskProtection`).
    pub protected: bool,
}

/// The effective floor and ceiling for a desired count (see the module
/// docs for the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Fewest healthy tasks a stop may leave.
    pub floor: u32,
    /// Most tasks not STOPPED a start may make.
    pub ceiling: u32,
}

/// [`Limits`] for `desired` tasks under `min_percent` / `max_percent`.
pub fn limits(desired: u32, min_percent: u32, max_percent: u32) -> Limits {
    let d = u64::from(desired);
    let min = u64::from(min_percent.min(100));
    let floor = (d * min).div_ceil(100);
    let ceiling = (d * u64::from(max_percent) / 100).max(d);
    let floor = if desired > 0 && floor >= ceiling {
        ceiling - 1
    } else {
        floor
    };
    Limits {
        floor: u32::try_from(floor).unwrap_or(u32::MAX),
        ceiling: u32::try_from(ceiling).unwrap_or(u32::MAX),
    }
}

/// The circuit breaker's failure threshold for `desired` tasks.
pub fn failure_threshold(desired: u32) -> u32 {
    desired
        .div_ceil(2)
        .clamp(MIN_FAILURE_THRESHOLD, MAX_FAILURE_THRESHOLD)
}

/// Why a task is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// It belongs to an older deployment (a rolling update, or a rollback).
    Replaced,
    /// It failed its container health checks.
    Unhealthy,
    /// The service has more tasks than desired.
    ScaleIn,
}

/// Tasks to start on one deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    pub deployment: String,
    pub count: u32,
    /// Suggested spread: zones with the fewest tasks of the deployment first.
    /// Empty when the service has no zones.
    pub by_zone: Vec<(String, u32)>,
}

/// One task to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub task: String,
    pub reason: StopReason,
    /// ECS's `stoppedReason` text.
    pub stopped_reason: String,
}

impl Stop {
    /// ECS's `stopCode`, the same for every stop.
    pub fn stop_code(&self) -> &'static str {
        STOP_CODE
    }
}

/// The circuit breaker rolled back: `to` is the target again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub from: String,
    pub to: String,
    pub task_definition: String,
}

/// A service event; `Display` gives ECS's wording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Started {
        service: String,
        count: u32,
        deployment: String,
    },
    Stopped {
        service: String,
        tasks: Vec<String>,
    },
    FailedHealthChecks {
        service: String,
        task: String,
    },
    ScaleInBlocked {
        service: String,
        protected: u32,
    },
    DeploymentCompleted {
        service: String,
        deployment: String,
    },
    DeploymentFailed {
        service: String,
        deployment: String,
    },
    RollingBack {
        service: String,
        from: String,
        to: String,
    },
    NoRollbackTarget {
        service: String,
        deployment: String,
    },
    SteadyState {
        service: String,
    },
}

/// Tasks an event names; the rest it counts.
const LISTED_TASKS: usize = 10;

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Started {
                service,
                count,
                deployment,
            } => write!(
                f,
                "(service {service}) has started {count} tasks (deployment {deployment})."
            ),
            Event::Stopped { service, tasks } => {
                write!(f, "(service {service}) has stopped {} running tasks:", tasks.len())?;
                // Tasks by ID, as ECS names them; a long list is cut, so a
                // service's 100 events stay small whatever the fleet's size.
                for t in tasks.iter().take(LISTED_TASKS) {
                    write!(f, " (task {})", t.rsplit('/').next().unwrap_or(t))?;
                }
                if tasks.len() > LISTED_TASKS {
                    write!(f, " and {} more", tasks.len() - LISTED_TASKS)?;
                }
                f.write_str(".")
            }
            Event::FailedHealthChecks { service, task } => write!(
                f,
                "(service {service}) (task {task}) failed container health checks."
            ),
            Event::ScaleInBlocked { service, protected } => write!(
                f,
                "(service {service}) was unable to scale in due to (reason: {protected} tasks under protection)."
            ),
            Event::DeploymentCompleted {
                service,
                deployment,
            } => write!(
                f,
                "(service {service}) (deployment {deployment}) deployment completed."
            ),
            Event::DeploymentFailed {
                service,
                deployment,
            } => write!(
                f,
                "(service {service}) (deployment {deployment}) deployment failed: tasks failed to start."
            ),
            Event::RollingBack { service, from, to } => write!(
                f,
                "(service {service}) (deployment {from}) deployment failed: rolling back to deployment {to}."
            ),
            Event::NoRollbackTarget {
                service,
                deployment,
            } => write!(
                f,
                "(service {service}) (deployment {deployment}) deployment failed: no completed deployment to roll back to."
            ),
            Event::SteadyState { service } => {
                write!(f, "(service {service}) has reached a steady state.")
            }
        }
    }
}

/// What the service scheduler does now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub start: Vec<Start>,
    pub stop: Vec<Stop>,
    /// The rollout state of every deployment of the snapshot, in its order.
    pub rollout: Vec<(String, Rollout)>,
    pub rollback: Option<Rollback>,
    /// ACTIVE deployments to remove: the PRIMARY completed and they have no
    /// tasks left.
    pub retire: Vec<String>,
    pub events: Vec<Event>,
    /// Nothing to do: the PRIMARY is COMPLETED with exactly `desired`
    /// tasks, all healthy.
    pub steady: bool,
}

/// A snapshot the scheduler cannot decide on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("service {0} has no deployment")]
    NoDeployment(String),
}

/// What one task is to the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// STOPPED: ignored.
    Gone,
    /// Being stopped: counts against the ceiling only.
    Draining,
    /// Not yet RUNNING, or RUNNING with UNKNOWN health past the grace.
    NotYetHealthy,
    Healthy,
    /// UNHEALTHY past the grace period: to replace.
    Unhealthy,
}

fn classify(t: &Task, now: u64, grace: u64) -> Class {
    match t.last_status {
        TaskStatus::Stopped => return Class::Gone,
        TaskStatus::Deactivating | TaskStatus::Stopping | TaskStatus::Deprovisioning => {
            return Class::Draining
        }
        TaskStatus::Provisioning
        | TaskStatus::Pending
        | TaskStatus::Activating
        | TaskStatus::Running => {}
    }
    match t.desired_status {
        DesiredStatus::Stopped => return Class::Draining,
        DesiredStatus::Running => {}
    }
    match t.last_status {
        TaskStatus::Running => {}
        TaskStatus::Provisioning
        | TaskStatus::Pending
        | TaskStatus::Activating
        | TaskStatus::Deactivating
        | TaskStatus::Stopping
        | TaskStatus::Deprovisioning
        | TaskStatus::Stopped => return Class::NotYetHealthy,
    }
    let in_grace = t.started_at.is_none_or(|s| now < s.saturating_add(grace));
    match t.health {
        Health::NoCheck | Health::Healthy => Class::Healthy,
        Health::Unknown | Health::Unhealthy if in_grace => Class::Healthy,
        Health::Unknown => Class::NotYetHealthy,
        Health::Unhealthy => Class::Unhealthy,
    }
}

/// A live task, as a stop candidate.
struct Live<'a> {
    task: &'a Task,
    class: Class,
    /// Index of its deployment in the snapshot (`usize::MAX`: unknown).
    dep: usize,
}

/// Decides what the service scheduler does for `s` now.
pub fn decide(s: &Service) -> Result<Decision, ServiceError> {
    if s.deployments.is_empty() {
        return Err(ServiceError::NoDeployment(s.name.clone()));
    }
    let name = &s.name;
    let desired = s.desired_count;
    let lim = limits(desired, s.minimum_healthy_percent, s.maximum_percent);
    let mut events = Vec::new();
    let mut rollout: Vec<(String, Rollout)> = s
        .deployments
        .iter()
        .map(|d| (d.id.clone(), d.rollout.clone()))
        .collect();

    // Circuit breaker on the PRIMARY; with rollback the target moves.
    let primary = &s.deployments[0];
    let mut target = 0usize;
    let mut rollback = None;
    let mut starts_allowed = true;
    if s.circuit_breaker.enable
        && primary.rollout == Rollout::InProgress
        && primary.failed_tasks >= failure_threshold(desired)
    {
        let reason = "tasks failed to start".to_string();
        rollout[0].1 = Rollout::Failed { reason };
        events.push(Event::DeploymentFailed {
            service: name.clone(),
            deployment: primary.id.clone(),
        });
        let back = s
            .deployments
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, d)| d.rollout == Rollout::Completed);
        match (s.circuit_breaker.rollback, back) {
            (true, Some((i, d))) => {
                target = i;
                rollout[i].1 = Rollout::InProgress;
                rollback = Some(Rollback {
                    from: primary.id.clone(),
                    to: d.id.clone(),
                    task_definition: d.task_definition.clone(),
                });
                events.push(Event::RollingBack {
                    service: name.clone(),
                    from: primary.id.clone(),
                    to: d.id.clone(),
                });
            }
            (true, None) => {
                starts_allowed = false;
                events.push(Event::NoRollbackTarget {
                    service: name.clone(),
                    deployment: primary.id.clone(),
                });
            }
            (false, _) => starts_allowed = false,
        }
    } else if matches!(primary.rollout, Rollout::Failed { .. }) {
        starts_allowed = false;
    }
    let tdep = &s.deployments[target];

    // One pass: classify every task.
    let index: HashMap<&str, usize> = s
        .deployments
        .iter()
        .enumerate()
        .rev()
        .map(|(i, d)| (d.id.as_str(), i))
        .collect();
    let mut not_stopped: u64 = 0;
    let mut healthy_all: u64 = 0;
    let mut others_present = false;
    let mut t_good: Vec<Live> = Vec::new(); // target: healthy or not yet
    let mut t_unhealthy: Vec<Live> = Vec::new();
    let mut old: Vec<Live> = Vec::new();
    let mut t_healthy: u64 = 0;
    for t in &s.tasks {
        let class = classify(t, s.now, s.health_check_grace_period_secs);
        let dep = index
            .get(t.deployment.as_str())
            .copied()
            .unwrap_or(usize::MAX);
        if class == Class::Gone {
            continue;
        }
        not_stopped += 1;
        if dep != target {
            others_present = true;
        }
        if class == Class::Draining {
            continue;
        }
        if class == Class::Healthy {
            healthy_all += 1;
        }
        let live = Live {
            task: t,
            class,
            dep,
        };
        if dep != target {
            old.push(live);
        } else if class == Class::Unhealthy {
            t_unhealthy.push(live);
        } else {
            if class == Class::Healthy {
                t_healthy += 1;
            }
            t_good.push(live);
        }
    }
    let desired64 = u64::from(desired);

    // Starts on the target, within the ceiling.
    let need = desired64.saturating_sub(t_good.len() as u64);
    let room = u64::from(lim.ceiling).saturating_sub(not_stopped);
    let started = if starts_allowed { need.min(room) } else { 0 };
    let mut start = Vec::new();
    if started > 0 {
        let count = u32::try_from(started).unwrap_or(u32::MAX);
        start.push(Start {
            deployment: tdep.id.clone(),
            count,
            by_zone: spread(&s.zones, &t_good, count),
        });
        events.push(Event::Started {
            service: name.clone(),
            count,
            deployment: tdep.id.clone(),
        });
    }

    // Stops, under the floor: a healthy stop spends one unit of budget.
    let mut budget = healthy_all.saturating_sub(u64::from(lim.floor));
    let mut stop = Vec::new();
    let replaced_msg = format!("Scaling activity initiated by (deployment {})", tdep.id);
    let push = |stop: &mut Vec<Stop>, budget: &mut u64, l: &Live, reason| -> bool {
        if l.task.protected {
            return false;
        }
        if l.class == Class::Healthy {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
        }
        let stopped_reason = match reason {
            StopReason::Unhealthy => "Task failed container health checks".to_string(),
            StopReason::Replaced | StopReason::ScaleIn => replaced_msg.clone(),
        };
        stop.push(Stop {
            task: l.task.id.clone(),
            reason,
            stopped_reason,
        });
        true
    };

    // 1. Older deployments' tasks (not while a FAILED target holds still,
    //    unless the service scales to zero).
    if starts_allowed || desired == 0 {
        old.sort_by(|a, b| {
            (a.class == Class::Healthy, Reverse(a.dep), &a.task.id).cmp(&(
                b.class == Class::Healthy,
                Reverse(b.dep),
                &b.task.id,
            ))
        });
        for l in &old {
            push(&mut stop, &mut budget, l, StopReason::Replaced);
        }
    }

    // 2. Unhealthy target tasks: one per healthy replacement beyond desired,
    //    and those whose replacement the ceiling blocks.
    t_unhealthy.sort_by(|a, b| a.task.id.cmp(&b.task.id));
    let blocked = if starts_allowed { need - started } else { 0 };
    let surplus = (t_healthy + t_unhealthy.len() as u64).saturating_sub(desired64);
    let mut unhealthy_stops = blocked.saturating_add(surplus);
    for l in &t_unhealthy {
        if unhealthy_stops == 0 {
            break;
        }
        if push(&mut stop, &mut budget, l, StopReason::Unhealthy) {
            unhealthy_stops -= 1;
            events.push(Event::FailedHealthChecks {
                service: name.clone(),
                task: l.task.id.clone(),
            });
        }
    }

    // 3. Scale-in of the target: zone with the most tasks first.
    let excess = (t_good.len() as u64).saturating_sub(desired64);
    if excess > 0 {
        let taken = scale_in(&t_good, excess, &mut |l| {
            push(&mut stop, &mut budget, l, StopReason::ScaleIn)
        });
        // Only protected tasks left to take: the service stays above
        // desired (a shortfall with unprotected tasks left is the floor's,
        // and passes as replacements become healthy).
        let unprotected = t_good.iter().filter(|l| !l.task.protected).count() as u64;
        if taken < excess && unprotected == taken {
            events.push(Event::ScaleInBlocked {
                service: name.clone(),
                protected: u32::try_from(excess - taken).unwrap_or(u32::MAX),
            });
        }
    }
    if !stop.is_empty() {
        events.push(Event::Stopped {
            service: name.clone(),
            tasks: stop.iter().map(|s| s.task.clone()).collect(),
        });
    }

    // Rollout of the target.
    let mut retire = Vec::new();
    if rollout[target].1 == Rollout::InProgress && t_healthy >= desired64 && !others_present {
        rollout[target].1 = Rollout::Completed;
        events.push(Event::DeploymentCompleted {
            service: name.clone(),
            deployment: tdep.id.clone(),
        });
    }
    if rollout[target].1 == Rollout::Completed && !others_present {
        retire = s
            .deployments
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != target)
            .map(|(_, d)| d.id.clone())
            .collect();
    }
    let steady = start.is_empty()
        && stop.is_empty()
        && rollback.is_none()
        && rollout[target].1 == Rollout::Completed
        && !others_present
        && t_unhealthy.is_empty()
        && t_good.len() as u64 == desired64
        && t_healthy == desired64;
    if steady {
        events.push(Event::SteadyState {
            service: name.clone(),
        });
    }
    Ok(Decision {
        start,
        stop,
        rollout,
        rollback,
        retire,
        events,
        steady,
    })
}

/// Picks up to `excess` tasks of `good` to stop, always from the zone with
/// the most tasks left (ties: the lowest zone name); within a zone,
/// not-yet-healthy tasks first, then the youngest, then by id. `take`
/// returns false for a task it may not stop (protected, or healthy with no
/// budget left); the zone's next candidates are tried. Returns how many
/// were taken.
fn scale_in(good: &[Live], excess: u64, take: &mut dyn FnMut(&Live) -> bool) -> u64 {
    let mut zones: BTreeMap<&str, Vec<&Live>> = BTreeMap::new();
    for l in good {
        zones.entry(l.task.zone.as_str()).or_default().push(l);
    }
    let mut heap: BinaryHeap<(usize, Reverse<&str>)> = BinaryHeap::new();
    let mut cursor: HashMap<&str, usize> = HashMap::default();
    for (z, v) in &mut zones {
        // Reverse order of preference, so the best candidate is popped last.
        v.sort_by(|a, b| {
            let ka = (
                a.class != Class::Healthy,
                a.task.started_at.unwrap_or(u64::MAX),
            );
            let kb = (
                b.class != Class::Healthy,
                b.task.started_at.unwrap_or(u64::MAX),
            );
            ka.cmp(&kb).then_with(|| b.task.id.cmp(&a.task.id))
        });
        heap.push((v.len(), Reverse(*z)));
        cursor.insert(*z, v.len());
    }
    let mut taken = 0;
    while taken < excess {
        let Some((count, Reverse(z))) = heap.pop() else {
            break;
        };
        let (Some(v), Some(c)) = (zones.get(z), cursor.get_mut(z)) else {
            continue;
        };
        // Candidates are v[..c], best last; skip those `take` refuses.
        let mut picked = false;
        while *c > 0 {
            *c -= 1;
            if take(v[*c]) {
                picked = true;
                break;
            }
        }
        if picked {
            taken += 1;
            if count > 1 {
                heap.push((count - 1, Reverse(z)));
            }
        }
        // A zone with nothing takeable left drops out of the heap.
    }
    taken
}

/// Spreads `count` starts over `zones`, fewest tasks of the target first
/// (ties: the lowest zone name).
fn spread(zones: &[String], good: &[Live], count: u32) -> Vec<(String, u32)> {
    if zones.is_empty() {
        return Vec::new();
    }
    let mut have: BTreeMap<&str, u64> = zones.iter().map(|z| (z.as_str(), 0)).collect();
    for l in good {
        if let Some(n) = have.get_mut(l.task.zone.as_str()) {
            *n += 1;
        }
    }
    let mut heap: BinaryHeap<Reverse<(u64, &str)>> =
        have.iter().map(|(z, n)| Reverse((*n, *z))).collect();
    let mut out: BTreeMap<&str, u32> = BTreeMap::new();
    for _ in 0..count {
        let Some(Reverse((n, z))) = heap.pop() else {
            break;
        };
        *out.entry(z).or_default() += 1;
        heap.push(Reverse((n + 1, z)));
    }
    out.into_iter().map(|(z, n)| (z.to_string(), n)).collect()
}

//! Placement of tasks onto running container instances, with ECS semantics.
//!
//! # What it does
//!
//! [`place`] takes a [`Snapshot`] of the cluster's ACTIVE container instances
//! (what each has left, its attributes, the groups of the tasks on it) and a
//! batch of [`Demand`]s (one per task: cpu, memory, GPUs, host ports, group,
//! constraints, strategies) and decides, task by task in order, which instance
//! gets each, or why none can ([`Failure`]). The snapshot is updated as tasks
//! are placed, so RunTask `count: 10` packs and spreads as ECS does.
//!
//! ECS's process, per task:
//!
//! 1. instances whose agent is connected and that have the cpu, memory, GPUs
//!    and host ports the task needs;
//! 2. of those, the ones that satisfy every placement constraint:
//!    `memberOf` (a [cluster query language](parse_expression) expression) and
//!    `distinctInstance` (no task of the same group already on the instance);
//! 3. of those, the best by the placement strategies, in order, each later one
//!    breaking the ties of the ones before:
//!    * `binpack` on `cpu` or `memory`: least remaining of that resource first;
//!    * `spread` on `instanceId` (or `host`) or `attribute:NAME`: the fewest
//!      tasks *of the task's group* first — counted on the instance, or over
//!      all instances sharing the attribute's value (ECS: "service tasks are
//!      spread based on the tasks from that service; standalone tasks based on
//!      the tasks from the same task group"). Instances lacking the attribute
//!      share one value of their own;
//!    * `random`: a uniformly random instance among those still tied,
//!      reproducible under [`PlaceOptions::seed`]; strategies after it have
//!      nothing left to decide.
//!
//!    Ties that remain go to the lowest instance index (the snapshot's order).
//! 4. The task is recorded on the chosen instance: resources and ports
//!    reserved, GPUs assigned by id (the first free ones, whole GPUs).
//!
//! With no strategy, a task gets [`PlaceOptions::default_strategies`]: ECS
//! places standalone tasks (RunTask) randomly ([`PlaceOptions::run_task`]) and
//! service tasks spread over `attribute:ecs.availability-zone`
//! ([`PlaceOptions::service`]).
//!
//! # Failures
//!
//! A task that fits nowhere gets the reason ECS would give, the most specific
//! one: each instance is checked in the order agent, cpu, memory, GPU, ports,
//! `memberOf`, `distinctInstance`; the instance that got furthest is the
//! "closest matching" one, and the check it failed is the reason
//! ([`FailureReason::ecs_reason`]: `AGENT`, `RESOURCE:CPU`, `RESOURCE:MEMORY`,
//! `RESOURCE:GPU`, `RESOURCE:PORTS`, `MemberOf placement constraint
//! unsatisfied.`, `DistinctInstance placement constraint unsatisfied.`).
//!
//! # Design
//!
//! Two implementations with the same results. [`place`] keeps indexes in the
//! snapshot, built on first use and updated on each placement: instances
//! ordered by remaining cpu and by remaining memory (binpack walks them from
//! the task's need upwards and stops at the first class that has a feasible
//! instance), instances bucketed by the value of each spread attribute with
//! per-group task counts per value (spread visits the values from the least
//! loaded), per-group cursors past the instances that already hold the group
//! (so spreading on `instanceId` does not rescan them), and one bit set per
//! `memberOf` expression that reads only registration facts (evaluated once
//! per instance; expressions on `task:group` or `runningTasksCount` are
//! evaluated per candidate). Checking a candidate allocates nothing.
//! [`place_reference`] is the plain linear scan of every instance for every
//! task, kept as the oracle for tests and the baseline of `berth bench
//! placement`.
//!
//! # Limits
//!
//! * Network mode `awsvpc` (ENI attachment limits, `RESOURCE:ENI`) and
//!   `requiresAttributes` (`ATTRIBUTE`) are not modelled; the caller filters on
//!   them before placement.
//! * `matches` patterns support a subset of Java regular expressions (no
//!   groups or counted repetition); others are refused at parse time.
//! * The snapshot holds no task removal: a batch only adds tasks.

mod engine;
mod expr;
mod pattern;
mod reference;
mod snapshot;

pub use expr::{parse_expression, AgentVersion, Expr, ExprError, Facts, MAX_EXPRESSION_CHARS};
pub use snapshot::{HostPort, InstanceSpec, InstanceView, Protocol, Snapshot};

use std::fmt;

/// ECS's limit on placement strategies per task.
pub const MAX_STRATEGIES: usize = 5;
/// ECS's limit on placement constraints per task (task definition and RunTask together).
pub const MAX_CONSTRAINTS: usize = 10;

/// A resource binpack can pack on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// CPU units.
    Cpu,
    /// Memory (MiB).
    Memory,
}

/// What spread balances over.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SpreadField {
    /// `instanceId` (or `host`): each instance is its own value.
    InstanceId,
    /// `attribute:NAME`: instances sharing the attribute's value form one value.
    Attribute(String),
}

/// A placement strategy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// `binpack`: least remaining of the resource first.
    Binpack(Resource),
    /// `spread`: fewest tasks of the task's group first.
    Spread(SpreadField),
    /// `random`: uniformly among the instances still tied.
    Random,
}

/// Why a placement strategy of a request is invalid; `Display` is the message
/// for an `InvalidParameterException`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    /// `type` is not binpack, spread or random.
    #[error("invalid placement strategy type '{0}': valid types are binpack, spread and random")]
    Type(String),
    /// `field` does not fit the type.
    #[error("invalid field '{field}' for placement strategy {kind}: {expected}")]
    Field {
        /// The strategy type.
        kind: &'static str,
        /// The field given.
        field: String,
        /// What the type accepts.
        expected: &'static str,
    },
}

impl Strategy {
    /// The strategy of an ECS `PlacementStrategy` (`type`, `field`).
    pub fn from_ecs(kind: &str, field: Option<&str>) -> Result<Strategy, StrategyError> {
        match kind {
            "binpack" => match field {
                Some(f) if f.eq_ignore_ascii_case("cpu") => Ok(Strategy::Binpack(Resource::Cpu)),
                Some(f) if f.eq_ignore_ascii_case("memory") => {
                    Ok(Strategy::Binpack(Resource::Memory))
                }
                f => Err(StrategyError::Field {
                    kind: "binpack",
                    field: f.unwrap_or("").to_string(),
                    expected: "cpu or memory",
                }),
            },
            "spread" => match field {
                Some(f)
                    if f.eq_ignore_ascii_case("instanceId") || f.eq_ignore_ascii_case("host") =>
                {
                    Ok(Strategy::Spread(SpreadField::InstanceId))
                }
                Some(f) if f.len() > "attribute:".len() && f.starts_with("attribute:") => Ok(
                    Strategy::Spread(SpreadField::Attribute(f["attribute:".len()..].to_string())),
                ),
                f => Err(StrategyError::Field {
                    kind: "spread",
                    field: f.unwrap_or("").to_string(),
                    expected: "instanceId, host or attribute:NAME",
                }),
            },
            "random" => Ok(Strategy::Random),
            other => Err(StrategyError::Type(other.to_string())),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Binpack(Resource::Cpu) => f.write_str("binpack(cpu)"),
            Strategy::Binpack(Resource::Memory) => f.write_str("binpack(memory)"),
            Strategy::Spread(SpreadField::InstanceId) => f.write_str("spread(instanceId)"),
            Strategy::Spread(SpreadField::Attribute(a)) => write!(f, "spread(attribute:{a})"),
            Strategy::Random => f.write_str("random"),
        }
    }
}

/// A placement constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// `distinctInstance`: no other task of the same group on the instance
    /// (RunTask and services only; ECS refuses it in task definitions).
    DistinctInstance,
    /// `memberOf`: the instance satisfies the expression.
    MemberOf(Expr),
}

/// Why a placement constraint of a request is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// `type` is not distinctInstance or memberOf.
    #[error(
        "invalid placement constraint type '{0}': valid types are distinctInstance and memberOf"
    )]
    Type(String),
    /// memberOf without an expression.
    #[error("a memberOf placement constraint needs an expression")]
    MissingExpression,
    /// distinctInstance with an expression.
    #[error("a distinctInstance placement constraint takes no expression")]
    UnexpectedExpression,
    /// The expression does not parse.
    #[error(transparent)]
    Expression(#[from] ExprError),
}

impl Constraint {
    /// The constraint of an ECS `PlacementConstraint` (`type`, `expression`).
    pub fn from_ecs(kind: &str, expression: Option<&str>) -> Result<Constraint, ConstraintError> {
        match (kind, expression) {
            ("distinctInstance", None) => Ok(Constraint::DistinctInstance),
            ("distinctInstance", Some(_)) => Err(ConstraintError::UnexpectedExpression),
            ("memberOf", Some(e)) => Ok(Constraint::MemberOf(parse_expression(e)?)),
            ("memberOf", None) => Err(ConstraintError::MissingExpression),
            (other, _) => Err(ConstraintError::Type(other.to_string())),
        }
    }
}

/// What one pending task needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    /// CPU units.
    pub cpu: u32,
    /// Memory (MiB): the task's reservation.
    pub memory: u32,
    /// Whole GPUs.
    pub gpus: u32,
    /// Host ports to reserve (`host` and `bridge` network modes, fixed host
    /// ports only), each distinct.
    pub host_ports: Vec<HostPort>,
    /// The task's group: `family:NAME` for a RunTask without `group`,
    /// `service:NAME` for a service's task.
    pub group: String,
    /// The task definition's constraints followed by the request's.
    pub constraints: Vec<Constraint>,
    /// Strategies in order (at most [`MAX_STRATEGIES`]); empty: the options' default.
    pub strategies: Vec<Strategy>,
}

/// Options of a placement run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaceOptions {
    /// Seed of the `random` strategy: the same snapshot, tasks and seed give
    /// the same placements.
    pub seed: u64,
    /// The strategies of a task that names none.
    pub default_strategies: Vec<Strategy>,
}

impl PlaceOptions {
    /// ECS's default for standalone tasks (RunTask): random.
    pub fn run_task(seed: u64) -> Self {
        PlaceOptions {
            seed,
            default_strategies: vec![Strategy::Random],
        }
    }

    /// ECS's default for service tasks: spread over Availability Zones.
    pub fn service(seed: u64) -> Self {
        PlaceOptions {
            seed,
            default_strategies: vec![Strategy::Spread(SpreadField::Attribute(
                "ecs.availability-zone".to_string(),
            ))],
        }
    }
}

/// Why a task could not be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureReason {
    /// The snapshot holds no instance (ECS answers RunTask with an
    /// InvalidParameterException "No Container Instances were found in your cluster.").
    NoContainerInstances,
    /// The closest instance's agent is disconnected.
    Agent,
    /// Not enough CPU units.
    Cpu,
    /// Not enough memory.
    Memory,
    /// Not enough free GPUs.
    Gpu,
    /// A host port is taken.
    Ports,
    /// A memberOf expression does not hold.
    MemberOf,
    /// A task of the same group is already there.
    DistinctInstance,
}

impl FailureReason {
    /// The `reason` of ECS's `Failure`.
    pub fn ecs_reason(self) -> &'static str {
        match self {
            FailureReason::NoContainerInstances => {
                "No Container Instances were found in your cluster."
            }
            FailureReason::Agent => "AGENT",
            FailureReason::Cpu => "RESOURCE:CPU",
            FailureReason::Memory => "RESOURCE:MEMORY",
            FailureReason::Gpu => "RESOURCE:GPU",
            FailureReason::Ports => "RESOURCE:PORTS",
            FailureReason::MemberOf => "MemberOf placement constraint unsatisfied.",
            FailureReason::DistinctInstance => "DistinctInstance placement constraint unsatisfied.",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ecs_reason())
    }
}

/// Why a task was not placed, and the instance that came closest (the `arn`
/// of ECS's `Failure`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The most specific reason.
    pub reason: FailureReason,
    /// The index of the closest instance; `None` when there is none.
    pub closest: Option<usize>,
}

/// Where one task went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On instance `instance` (an index into the snapshot), with these GPUs.
    Placed {
        /// Index of the instance in the snapshot.
        instance: usize,
        /// The GPU ids assigned to the task (empty without GPUs).
        gpus: Vec<String>,
    },
    /// Nowhere.
    Failed(Failure),
}

impl Placement {
    /// The instance index, if placed.
    pub fn instance(&self) -> Option<usize> {
        match self {
            Placement::Placed { instance, .. } => Some(*instance),
            Placement::Failed(_) => None,
        }
    }
}

/// Places `tasks` in order onto the instances of `snapshot` (updated as tasks
/// are placed), using its indexes. One result per task, in order.
pub fn place(snapshot: &mut Snapshot, tasks: &[Demand], opts: &PlaceOptions) -> Vec<Placement> {
    engine::place(snapshot, tasks, opts)
}

/// The same as [`place`], by a linear scan of every instance for every task:
/// the oracle of the tests and the baseline of the benchmark.
pub fn place_reference(
    snapshot: &mut Snapshot,
    tasks: &[Demand],
    opts: &PlaceOptions,
) -> Vec<Placement> {
    reference::place(snapshot, tasks, opts)
}

/// The checks of one instance, in ECS's order; the failing check, if any.
fn first_failure(snap: &Snapshot, i: usize, d: &Demand, group: u32) -> Option<FailureReason> {
    if !snap.meta[i].agent_connected {
        return Some(FailureReason::Agent);
    }
    if snap.cpu[i] < d.cpu {
        return Some(FailureReason::Cpu);
    }
    if snap.mem[i] < d.memory {
        return Some(FailureReason::Memory);
    }
    if (snap.gpus[i].len() as u64) < u64::from(d.gpus) {
        return Some(FailureReason::Gpu);
    }
    if !snap.ports_free(i, &d.host_ports) {
        return Some(FailureReason::Ports);
    }
    let view = snap.instance(i);
    for c in &d.constraints {
        if let Constraint::MemberOf(e) = c {
            if !e.matches(&view) {
                return Some(FailureReason::MemberOf);
            }
        }
    }
    if d.constraints.contains(&Constraint::DistinctInstance) && snap.group_count(i, group) > 0 {
        return Some(FailureReason::DistinctInstance);
    }
    None
}

/// The failure of a task that fits nowhere: the instance that passed the most
/// checks (lowest index among equals) and the check it failed.
fn diagnose(snap: &Snapshot, d: &Demand, group: u32) -> Failure {
    let mut best: Option<(FailureReason, usize)> = None;
    for i in 0..snap.len() {
        let Some(r) = first_failure(snap, i, d, group) else {
            continue;
        };
        if best.is_none_or(|(b, _)| r > b) {
            best = Some((r, i));
        }
    }
    match best {
        Some((reason, i)) => Failure {
            reason,
            closest: Some(i),
        },
        None => Failure {
            reason: FailureReason::NoContainerInstances,
            closest: None,
        },
    }
}

/// SplitMix64: the `random` strategy's generator (tiny, seedable, portable).
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// An index below `n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The strategies that order candidates (those before the first `random`) and
/// whether a `random` ends them.
fn split_strategies(s: &[Strategy]) -> (&[Strategy], bool) {
    match s.iter().position(|x| *x == Strategy::Random) {
        Some(k) => (&s[..k], true),
        None => (s, false),
    }
}

//! Consolidation: which under-used instances to empty, where their tasks go,
//! and which cheaper instances (if any) to launch for them, so that the fleet
//! costs less without churning.
//!
//! # Background
//!
//! ECS Managed Instances' `infrastructureOptimization.scaleInAfter` covers
//! idle instances (no tasks: terminated, handled by the idle path elsewhere)
//! and *underutilized* ones: their service tasks are moved, start before
//! stop, onto other capacity and the instance is retired. [`consolidate`]
//! makes that decision as a pure function of a fleet snapshot. It borrows
//! the shape of Karpenter's consolidation (single-node deletion or
//! replacement with a cheaper node, multi-node replacement of several nodes
//! by at most one, a minimum stable time, a disruption budget in percent of
//! the fleet) and adds what Karpenter users ask for most: a **price
//! improvement threshold**, so a fleet is not churned for pennies.
//!
//! # What may move
//!
//! * An instance is a *source* (may be emptied) only if every task on it is
//!   [`Task::movable`] — a service task without scale-in protection. One
//!   standalone task (RunTask) or protected task pins the whole instance.
//! * ... and it is settled: launched at least `max(min_age, scale_in_after)`
//!   ago and with no task started or stopped on it for `scale_in_after`
//!   ([`Instance::stable_since`]).
//! * ... and it is not already being disrupted ([`Instance::disrupting`])
//!   and has tasks (an instance with none is the idle path's; counting it
//!   here would spend the budget on what costs nothing to retire).
//! * A *target* (may receive tasks) is an instance that is not disrupting,
//!   not a source of any action, has tasks (an empty one is about to be
//!   terminated by the idle path, or was just launched for pending tasks),
//!   was launched at least `min_age` ago (a young one is the planner's room
//!   for pending tasks), has the same architecture as the task's instance
//!   and, with [`ConsolidateOptions::keep_zone`] (the default), the same
//!   availability zone, so a service's spread over zones and its `awsvpc`
//!   subnets stay as they are.
//! * A task fits a target when the target's cpu, memory and GPUs, less what
//!   it already runs and what this run has moved onto it, hold it; a task
//!   with [`Task::distinct_instance`] never joins another task of its group.
//!   Room is reserved *up front*: moves are start-before-stop, so the old
//!   and the new copy of a task never share capacity.
//!
//! # Algorithm
//!
//! Candidates are the eligible sources ordered by utilisation (the largest
//! share of cpu, memory or GPUs their tasks use), least first, then by
//! cost, dearest first, then by id. Tasks are placed largest first (GPUs,
//! CPU, memory, then id) on the eligible target where they fit *best*
//! (least normalised room left; ties to the lowest id), so moved tasks fill
//! already-busy instances and keep whole instances free for later steps.
//! One round is three passes, each action applied to the simulated fleet
//! before the next is sought:
//!
//! 1. **Drain**: each candidate whose tasks all fit on the targets becomes a
//!    [`Action::Drain`]; it saves the instance's whole cost and launches
//!    nothing, so it is tried first.
//! 2. **Multi-node replace**: per class (architecture, and zone with
//!    `keep_zone`), the first `k` candidates are replaced together: their
//!    tasks go to the targets where they fit, the rest onto *one* new
//!    instance of the cheapest replacement type that holds them. The prefix
//!    (at most [`ConsolidateOptions::max_multi_candidates`] and the budget
//!    left) is found as Karpenter does, by binary search over `2..=len` for
//!    the longest one that *fits*; the saving is not monotone in `k` (the
//!    longer prefix usually saves a larger share), so it is checked after,
//!    on that prefix and up to [`MULTI_SHORTER_TRIES`] shorter ones; the
//!    first that passes the threshold is taken, and the search repeats
//!    while it finds one. At most one new instance per action: replacing N
//!    instances by several is rarely worth the launch risk and would need
//!    the full planner.
//! 3. **Single-node replace**: each remaining candidate, with the same rule
//!    (the rest of its tasks on one cheaper new instance).
//!
//! Rounds repeat until one accepts nothing (at most [`MAX_ROUNDS`]), so the
//! result is a fixed point: applying the actions and running again at the
//! same `now` finds nothing, because targets and new instances are inside
//! their windows and every other candidate was already tried against the
//! final fleet (this needs `scale_in_after > 0` and `min_age > 0`; with 0
//! the next run may consolidate this run's targets, which is what 0 asks
//! for). As fleet cost strictly falls by at least the threshold per action,
//! repeated runs over unchanged tasks stop after finitely many actions.
//!
//! # Thresholds and budget (defaults, and why)
//!
//! * An action must save at least [`DEFAULT_MIN_SAVING_PER_HOUR`] = $0.005/h
//!   (about $3.65 a month; below that a restart of the tasks is worth more)
//!   **and** at least [`DEFAULT_MIN_SAVING_FRACTION`] = 10 % of the cost of
//!   the instances it retires. A drain saves 100 %; the fraction governs
//!   replacements, so an m-type is not swapped for a 3 %-cheaper c-type and
//!   back as prices and tasks drift.
//! * Disruption budget: at most [`DisruptionBudget::max_fraction`] (default
//!   [`DEFAULT_BUDGET_FRACTION`] = 10 % of the fleet, rounded up, so 1 for
//!   fleets of up to 10) and at most [`DisruptionBudget::max_instances`]
//!   (default none) instances disrupted at once, counting those already
//!   [`Instance::disrupting`]. Karpenter's default budget is the same 10 %.
//! * Windows: [`DEFAULT_SCALE_IN_AFTER_SECS`] = 300 s when the capacity
//!   provider leaves `scaleInAfter` unset (ECS does not publish its own
//!   default; see [`scale_in_after_from_ecs`]); [`DEFAULT_MIN_AGE_SECS`] =
//!   600 s, so an instance launched for a scale-out is not emptied (or
//!   filled) before the placer has used it.
//!
//! # What the control plane does with an action
//!
//! For each action, in order, each step waiting for the one before:
//!
//! 1. mark the retired instances disrupting (no new placements; they count
//!    against the budget until gone);
//! 2. launch the [`NewInstance`]s of a [`Action::Replace`] and wait until
//!    they are ACTIVE;
//! 3. start every [`Move`]d task's replacement on its destination, and wait
//!    until each is RUNNING (and healthy, where the service has health
//!    checks);
//! 4. stop the original tasks;
//! 5. terminate the retired instances.
//!
//! If any step fails (a launch without capacity, a task that does not
//! start), stop the replacements started so far, terminate what was
//! launched, and clear the disrupting mark: the fleet is as before and the
//! next run decides again. Protection is re-read (`is_protected`) right
//! before step 4: a task protected meanwhile aborts the action.
//!
//! # Complexity
//!
//! With `N` instances, `T` tasks, `R` replacement types and `K` the
//! multi-node prefix bound: a drain or single replacement trial of an
//! instance with `t` tasks is `O(t·N + R)`, so a pass is `O(T·N + N·R)`; a
//! multi-node search is `O(log K)` trials of `O(K·t·N + R)` each per action.
//! Actions are bounded by the budget and rounds by [`MAX_ROUNDS`]. For 1,000
//! instances with 20 tasks each, a round is some 2·10⁷ fit checks.
//!
//! # Limits
//!
//! * Host ports, ENIs and placement constraints other than
//!   `distinctInstance` are not modelled; the caller leaves out targets a
//!   task may not use (or gives such a task `movable: false`).
//! * Pending tasks are not considered: run consolidation when none is
//!   waiting for room, or the moved tasks may take room the placer wanted.
//! * A replacement is priced with the cheapest fitting type
//!   ([`replacement_types`] builds the list the planner would consider),
//!   not the full planner; spot prices are not modelled.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use berth_catalog::{Architecture, Catalog, MatchOptions, RequirementsError};
use berth_model::ecs::{CPUArchitecture, InstanceRequirementsRequest};
use serde::{Deserialize, Serialize};

use crate::plan::Reservation;

/// Smallest hourly saving of an action by default, USD.
pub const DEFAULT_MIN_SAVING_PER_HOUR: f64 = 0.005;
/// Smallest saving of an action, as a fraction of the cost of the instances
/// it retires, by default.
pub const DEFAULT_MIN_SAVING_FRACTION: f64 = 0.10;
/// Largest share of the fleet disrupted at once by default (rounded up).
pub const DEFAULT_BUDGET_FRACTION: f64 = 0.10;
/// Stability window when `scaleInAfter` is unset, seconds.
pub const DEFAULT_SCALE_IN_AFTER_SECS: u64 = 300;
/// Minimum age of a source or target instance by default, seconds.
pub const DEFAULT_MIN_AGE_SECS: u64 = 600;
/// Most candidates one multi-node replacement considers by default
/// (Karpenter uses the same bound).
pub const DEFAULT_MAX_MULTI_CANDIDATES: usize = 100;
/// Shorter prefixes a multi-node search tries when the longest that fits
/// saves too little.
pub const MULTI_SHORTER_TRIES: usize = 3;
/// Most rounds of the three passes (see the module docs).
pub const MAX_ROUNDS: usize = 8;

/// Resources: CPU units (1024 = one vCPU), MiB, whole GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU units.
    pub cpu: u64,
    /// MiB.
    pub memory_mib: u64,
    /// Whole GPUs.
    pub gpu: u64,
}

impl Resources {
    fn dims(&self) -> [u64; 3] {
        [self.cpu, self.memory_mib, self.gpu]
    }
}

/// A running task, as consolidation sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// The task's id (ARN), unique in the fleet.
    pub id: String,
    /// The task's group (`service:NAME` for service tasks).
    pub group: String,
    /// What the task reserves.
    pub resources: Resources,
    /// A service task without scale-in protection: it may be replaced
    /// elsewhere. Standalone and protected tasks are not movable, and pin
    /// their instance.
    pub movable: bool,
    /// The group has a `distinctInstance` constraint: a moved task never
    /// joins another task of its group.
    #[serde(default)]
    pub distinct_instance: bool,
}

/// A running container instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// The instance's id, unique in the fleet.
    pub id: String,
    /// `m7a.large`.
    pub instance_type: String,
    /// USD per hour: price + management fee.
    pub hourly_cost: f64,
    /// What tasks may use (registered resources).
    pub allocatable: Resources,
    /// The availability zone.
    pub availability_zone: String,
    /// The architecture; a task moves only to instances of its own.
    pub architecture: CPUArchitecture,
    /// When it was launched, seconds on the caller's clock.
    pub launched_at: u64,
    /// Since when its task set has not changed (a task started or stopped),
    /// seconds; `launched_at` if never.
    pub stable_since: u64,
    /// Already being drained or terminated: neither source nor target, and
    /// counted against the budget.
    #[serde(default)]
    pub disrupting: bool,
    /// Its tasks.
    pub tasks: Vec<Task>,
}

/// An instance type a replacement may be launched as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplacementType {
    /// `c7g.large`.
    pub instance_type: String,
    /// USD per hour: price + management fee.
    pub hourly_cost: f64,
    /// What tasks may use, after the per-instance reservation.
    pub allocatable: Resources,
    /// The architectures it runs.
    pub architectures: Vec<CPUArchitecture>,
}

/// How many instances may be disrupted at once: the smaller of the two
/// limits, less the instances already disrupting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudget {
    /// A share of the fleet, rounded up ([`DEFAULT_BUDGET_FRACTION`]).
    pub max_fraction: f64,
    /// A count; `None` = no count limit.
    pub max_instances: Option<usize>,
}

impl Default for DisruptionBudget {
    fn default() -> Self {
        DisruptionBudget {
            max_fraction: DEFAULT_BUDGET_FRACTION,
            max_instances: None,
        }
    }
}

impl DisruptionBudget {
    /// No limit (tests, offline analysis).
    pub fn unlimited() -> Self {
        DisruptionBudget {
            max_fraction: 1.0,
            max_instances: None,
        }
    }

    /// Instances that may be disrupted at once in a fleet of `fleet`.
    pub fn allowed(&self, fleet: usize) -> usize {
        let by_fraction = (fleet as f64 * self.max_fraction).ceil();
        let by_fraction = if by_fraction.is_finite() && by_fraction > 0.0 {
            (by_fraction as usize).min(fleet)
        } else {
            0
        };
        self.max_instances
            .map_or(by_fraction, |m| m.min(by_fraction))
    }
}

/// Knobs; [`Default`] gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsolidateOptions {
    /// The capacity provider's `scaleInAfter`, seconds
    /// ([`DEFAULT_SCALE_IN_AFTER_SECS`]; see [`scale_in_after_from_ecs`]).
    pub scale_in_after_secs: u64,
    /// Minimum age of a source or target ([`DEFAULT_MIN_AGE_SECS`]).
    pub min_age_secs: u64,
    /// Smallest hourly saving of an action, USD ([`DEFAULT_MIN_SAVING_PER_HOUR`]).
    pub min_saving_per_hour: f64,
    /// Smallest saving as a fraction of the retired instances' cost
    /// ([`DEFAULT_MIN_SAVING_FRACTION`]).
    pub min_saving_fraction: f64,
    /// The disruption budget.
    pub budget: DisruptionBudget,
    /// Move tasks only within their availability zone (default true).
    pub keep_zone: bool,
    /// Most candidates a multi-node replacement considers
    /// ([`DEFAULT_MAX_MULTI_CANDIDATES`]); below 2 turns multi-node off.
    pub max_multi_candidates: usize,
}

impl Default for ConsolidateOptions {
    fn default() -> Self {
        ConsolidateOptions {
            scale_in_after_secs: DEFAULT_SCALE_IN_AFTER_SECS,
            min_age_secs: DEFAULT_MIN_AGE_SECS,
            min_saving_per_hour: DEFAULT_MIN_SAVING_PER_HOUR,
            min_saving_fraction: DEFAULT_MIN_SAVING_FRACTION,
            budget: DisruptionBudget::default(),
            keep_zone: true,
            max_multi_candidates: DEFAULT_MAX_MULTI_CANDIDATES,
        }
    }
}

/// The window for an ECS `scaleInAfter`: unset → the default, `-1` (or any
/// negative value) → `None`, consolidation off; otherwise the seconds given.
pub fn scale_in_after_from_ecs(value: Option<i32>) -> Option<u64> {
    match value {
        None => Some(DEFAULT_SCALE_IN_AFTER_SECS),
        Some(v) => u64::try_from(v).ok(),
    }
}

/// What to decide on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsolidateRequest {
    /// The fleet: every instance of the capacity provider, disrupting or not.
    pub instances: Vec<Instance>,
    /// Types replacements may be launched as ([`replacement_types`]); empty =
    /// drains only.
    pub replacement_types: Vec<ReplacementType>,
    /// The current time, seconds on the clock of the instances' timestamps.
    pub now: u64,
    /// Knobs.
    pub options: ConsolidateOptions,
}

/// Where a moved task goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Destination {
    /// A running instance, by id.
    Instance(String),
    /// The action's `with[i]`, launched first.
    New(usize),
}

/// One task to start on its destination, then stop where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Move {
    /// The task's id.
    pub task: String,
    /// The instance it runs on now.
    pub from: String,
    /// Where its replacement starts.
    pub to: Destination,
}

/// An instance to launch for a [`Action::Replace`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewInstance {
    /// The type.
    pub instance_type: String,
    /// The architecture of the tasks it gets.
    pub architecture: CPUArchitecture,
    /// The zone to launch it in.
    pub availability_zone: String,
    /// USD per hour.
    pub hourly_cost: f64,
    /// What tasks may use.
    pub allocatable: Resources,
}

/// One consolidation step (see the module docs for how to carry it out).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Action {
    /// Move every task of `instance` onto other running instances, then
    /// terminate it. `moves` is empty only for an instance with no tasks,
    /// which [`consolidate`] leaves to the idle path and never returns.
    Drain {
        /// The instance to retire.
        instance: String,
        /// Every task of it, with its destination.
        moves: Vec<Move>,
        /// USD per hour saved: the instance's cost.
        hourly_saving: f64,
    },
    /// Launch `with`, move every task of `instances` onto `with` or other
    /// running instances, then terminate `instances`.
    Replace {
        /// The instances to retire (one: a cheaper type; several: multi-node).
        instances: Vec<String>,
        /// What to launch first (one instance).
        with: Vec<NewInstance>,
        /// Every task of `instances`, with its destination.
        moves: Vec<Move>,
        /// USD per hour saved: Σ retired − Σ launched.
        hourly_saving: f64,
    },
}

impl Action {
    /// USD per hour the action saves.
    pub fn hourly_saving(&self) -> f64 {
        match self {
            Action::Drain { hourly_saving, .. } | Action::Replace { hourly_saving, .. } => {
                *hourly_saving
            }
        }
    }

    /// The instances the action retires.
    pub fn retired(&self) -> Vec<&str> {
        match self {
            Action::Drain { instance, .. } => vec![instance.as_str()],
            Action::Replace { instances, .. } => instances.iter().map(String::as_str).collect(),
        }
    }

    /// The tasks it moves.
    pub fn moves(&self) -> &[Move] {
        match self {
            Action::Drain { moves, .. } | Action::Replace { moves, .. } => moves,
        }
    }

    /// What it launches.
    pub fn launches(&self) -> &[NewInstance] {
        match self {
            Action::Drain { .. } => &[],
            Action::Replace { with, .. } => with,
        }
    }
}

/// Why there is no decision.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConsolidateError {
    /// Two instances share an id.
    #[error("instances: the id `{0}` is used by more than one instance")]
    DuplicateInstance(String),
    /// Two tasks share an id.
    #[error("tasks: the id `{0}` is used by more than one task")]
    DuplicateTask(String),
    /// An instance's cost is negative or not a number.
    #[error("instance `{instance}`: hourly cost {cost} must be a finite number >= 0")]
    InstanceCost {
        /// The instance.
        instance: String,
        /// The cost given.
        cost: f64,
    },
    /// A replacement type's cost is negative or not a number.
    #[error("replacement type `{instance_type}`: hourly cost {cost} must be a finite number >= 0")]
    ReplacementCost {
        /// The type.
        instance_type: String,
        /// The cost given.
        cost: f64,
    },
    /// A threshold or budget knob out of range.
    #[error("options.{name}: {value} is out of range ({expected})")]
    Option {
        /// The knob.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The range.
        expected: &'static str,
    },
}

/// The replacement types the catalog offers under `requirements` in
/// `region`, with the planner's conventions: candidates per ECS
/// architecture (so price protection compares like with like), allocatable
/// memory after `reservation`, cost = on-demand price + management fee
/// (rounded to the micro-dollar). Sorted by name.
pub fn replacement_types(
    catalog: &Catalog,
    region: &str,
    requirements: &InstanceRequirementsRequest,
    reservation: Reservation,
) -> Result<Vec<ReplacementType>, RequirementsError> {
    let mut out: BTreeMap<String, ReplacementType> = BTreeMap::new();
    for &arch in CPUArchitecture::ALL {
        let catalog_arch = match arch {
            CPUArchitecture::X8664 => Architecture::X86_64,
            CPUArchitecture::Arm64 => Architecture::Arm64,
        };
        let opts = MatchOptions {
            architecture: Some(catalog_arch),
            ..MatchOptions::default()
        };
        let types = match catalog.matching_with(region, requirements, &opts) {
            Ok(types) => types,
            Err(RequirementsError::NoMatch { .. }) => continue,
            Err(e) => return Err(e),
        };
        for t in types {
            if let Some(r) = out.get_mut(&t.name) {
                r.architectures.push(arch);
                continue;
            }
            let Some(price) = catalog.on_demand_price(region, &t.name) else {
                continue;
            };
            let fee = catalog.management_fee(region, &t.name).unwrap_or(0.0);
            let memory = t
                .memory_mib
                .saturating_sub(reservation.memory_mib(t.memory_mib));
            if memory == 0 {
                continue;
            }
            out.insert(
                t.name.clone(),
                ReplacementType {
                    instance_type: t.name.clone(),
                    hourly_cost: round6(price) + round6(fee),
                    allocatable: Resources {
                        cpu: u64::from(t.cpu_units()),
                        memory_mib: memory,
                        gpu: u64::from(t.whole_gpus()),
                    },
                    architectures: vec![arch],
                },
            );
        }
    }
    Ok(out.into_values().collect())
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Decides the consolidation actions for `request` (see the module docs).
/// The result depends only on the request's content, not on the order of
/// its instances, tasks or replacement types.
pub fn consolidate(request: &ConsolidateRequest) -> Result<Vec<Action>, ConsolidateError> {
    validate(request)?;
    let mut fleet = Fleet::new(request);
    Ok(fleet.run())
}

fn validate(request: &ConsolidateRequest) -> Result<(), ConsolidateError> {
    let o = &request.options;
    let knobs: [(&'static str, f64, bool, &'static str); 3] = [
        (
            "minSavingPerHour",
            o.min_saving_per_hour,
            o.min_saving_per_hour.is_finite() && o.min_saving_per_hour >= 0.0,
            "a finite number >= 0",
        ),
        (
            "minSavingFraction",
            o.min_saving_fraction,
            (0.0..=1.0).contains(&o.min_saving_fraction),
            "0 to 1",
        ),
        (
            "budget.maxFraction",
            o.budget.max_fraction,
            (0.0..=1.0).contains(&o.budget.max_fraction),
            "0 to 1",
        ),
    ];
    for (name, value, ok, expected) in knobs {
        if !ok {
            return Err(ConsolidateError::Option {
                name,
                value,
                expected,
            });
        }
    }
    let mut ids = BTreeSet::new();
    let mut task_ids = BTreeSet::new();
    for inst in &request.instances {
        if !ids.insert(inst.id.as_str()) {
            return Err(ConsolidateError::DuplicateInstance(inst.id.clone()));
        }
        if !(inst.hourly_cost.is_finite() && inst.hourly_cost >= 0.0) {
            return Err(ConsolidateError::InstanceCost {
                instance: inst.id.clone(),
                cost: inst.hourly_cost,
            });
        }
        for t in &inst.tasks {
            if !task_ids.insert(t.id.as_str()) {
                return Err(ConsolidateError::DuplicateTask(t.id.clone()));
            }
        }
    }
    for r in &request.replacement_types {
        if !(r.hourly_cost.is_finite() && r.hourly_cost >= 0.0) {
            return Err(ConsolidateError::ReplacementCost {
                instance_type: r.instance_type.clone(),
                cost: r.hourly_cost,
            });
        }
    }
    Ok(())
}

/// What an instance is to this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Untouched so far.
    Free,
    /// Retired by an action: no longer a target.
    Retired,
    /// Received tasks: no longer a source (its task set just changed).
    Touched,
}

/// An instance in the simulation.
struct Node<'a> {
    inst: &'a Instance,
    /// Tasks sorted by id.
    tasks: Vec<&'a Task>,
    alloc: [u64; 3],
    used: [u64; 3],
    /// Groups of the tasks on it (sorted, no repeats).
    groups: Vec<&'a str>,
    /// Index of its class (architecture, and zone with `keep_zone`).
    class: usize,
    /// May be emptied (before roles).
    source_ok: bool,
    /// May receive tasks (before roles).
    target_ok: bool,
    role: Role,
}

/// One trial's outcome.
struct Trial {
    /// (source node, task, destination node or `None` for the new instance).
    moves: Vec<(usize, usize, Option<usize>)>,
    /// Index into the sorted replacement types.
    new: Option<usize>,
    /// Σ retired − new.
    saving: f64,
    /// Σ retired.
    retired_cost: f64,
}

struct Fleet<'a> {
    nodes: Vec<Node<'a>>,
    /// Target nodes per class, in id order.
    targets: Vec<Vec<usize>>,
    /// (architecture, zone) per class.
    class_keys: Vec<(CPUArchitecture, Option<&'a str>)>,
    /// Source candidates, best first.
    order: Vec<usize>,
    /// Replacement types by (cost, name).
    types: Vec<&'a ReplacementType>,
    budget_left: usize,
    options: ConsolidateOptions,
}

fn task_order(a: &Task, b: &Task) -> Ordering {
    b.resources
        .gpu
        .cmp(&a.resources.gpu)
        .then(b.resources.cpu.cmp(&a.resources.cpu))
        .then(b.resources.memory_mib.cmp(&a.resources.memory_mib))
        .then_with(|| a.id.cmp(&b.id))
}

impl<'a> Fleet<'a> {
    fn new(request: &'a ConsolidateRequest) -> Fleet<'a> {
        let o = request.options;
        let now = request.now;
        let mut insts: Vec<&Instance> = request.instances.iter().collect();
        insts.sort_by(|a, b| a.id.cmp(&b.id));

        let mut class_index: BTreeMap<(CPUArchitecture, Option<&str>), usize> = BTreeMap::new();
        let mut class_keys = Vec::new();
        let mut nodes = Vec::with_capacity(insts.len());
        for inst in insts {
            let key = (
                inst.architecture,
                o.keep_zone.then_some(inst.availability_zone.as_str()),
            );
            let class = *class_index.entry(key).or_insert_with(|| {
                class_keys.push(key);
                class_keys.len() - 1
            });
            let mut tasks: Vec<&Task> = inst.tasks.iter().collect();
            tasks.sort_by(|a, b| a.id.cmp(&b.id));
            let mut used = [0u64; 3];
            for t in &tasks {
                for (u, r) in used.iter_mut().zip(t.resources.dims()) {
                    *u = u.saturating_add(r);
                }
            }
            let mut groups: Vec<&str> = tasks.iter().map(|t| t.group.as_str()).collect();
            groups.sort_unstable();
            groups.dedup();
            let settled = |since: u64, window: u64| now >= since.saturating_add(window);
            let has_tasks = !tasks.is_empty();
            let source_ok = !inst.disrupting
                && has_tasks
                && tasks.iter().all(|t| t.movable)
                && settled(inst.launched_at, o.min_age_secs.max(o.scale_in_after_secs))
                && settled(inst.stable_since, o.scale_in_after_secs);
            let target_ok =
                !inst.disrupting && has_tasks && settled(inst.launched_at, o.min_age_secs);
            nodes.push(Node {
                inst,
                tasks,
                alloc: inst.allocatable.dims(),
                used,
                groups,
                class,
                source_ok,
                target_ok,
                role: Role::Free,
            });
        }
        let mut targets = vec![Vec::new(); class_keys.len()];
        for (i, n) in nodes.iter().enumerate() {
            if n.target_ok {
                targets[n.class].push(i);
            }
        }
        let mut order: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].source_ok).collect();
        let util: Vec<f64> = nodes.iter().map(|n| share(&n.used, &n.alloc)).collect();
        order.sort_by(|&a, &b| {
            util[a]
                .total_cmp(&util[b])
                .then(
                    nodes[b]
                        .inst
                        .hourly_cost
                        .total_cmp(&nodes[a].inst.hourly_cost),
                )
                .then(a.cmp(&b))
        });
        let mut types: Vec<&ReplacementType> = request.replacement_types.iter().collect();
        types.sort_by(|a, b| {
            a.hourly_cost
                .total_cmp(&b.hourly_cost)
                .then_with(|| a.instance_type.cmp(&b.instance_type))
        });
        let disrupting = nodes.iter().filter(|n| n.inst.disrupting).count();
        let budget_left = o.budget.allowed(nodes.len()).saturating_sub(disrupting);
        Fleet {
            nodes,
            targets,
            class_keys,
            order,
            types,
            budget_left,
            options: o,
        }
    }

    fn run(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let before = actions.len();
            self.drain_pass(&mut actions);
            self.multi_pass(&mut actions);
            self.single_replace_pass(&mut actions);
            if actions.len() == before || self.budget_left == 0 {
                break;
            }
        }
        actions
    }

    fn free_candidates(&self) -> Vec<usize> {
        self.order
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].role == Role::Free)
            .collect()
    }

    fn drain_pass(&mut self, actions: &mut Vec<Action>) {
        for c in self.free_candidates() {
            if self.budget_left == 0 {
                return;
            }
            if self.nodes[c].role != Role::Free {
                continue;
            }
            if let Some(trial) = self.trial(&[c], false) {
                if self.acceptable(&[c], &trial) {
                    actions.extend(self.commit(&[c], trial));
                }
            }
        }
    }

    fn multi_pass(&mut self, actions: &mut Vec<Action>) {
        if self.options.max_multi_candidates < 2 {
            return;
        }
        for class in 0..self.class_keys.len() {
            loop {
                let limit = self.options.max_multi_candidates.min(self.budget_left);
                let cands: Vec<usize> = self
                    .free_candidates()
                    .into_iter()
                    .filter(|&i| self.nodes[i].class == class)
                    .take(limit)
                    .collect();
                if cands.len() < 2 {
                    break;
                }
                // The largest prefix whose tasks fit the targets and one new
                // instance, by binary search (fitting is nearly monotone in
                // the prefix; the saving is not, so it is checked after);
                // then that prefix and a few shorter ones against the
                // threshold.
                let (mut lo, mut hi) = (2usize, cands.len());
                let mut fits = 0;
                while lo <= hi {
                    let mid = lo + (hi - lo) / 2;
                    if self.trial(&cands[..mid], true).is_some() {
                        fits = mid;
                        lo = mid + 1;
                    } else {
                        hi = mid - 1;
                    }
                }
                let mut best: Option<(usize, Trial)> = None;
                for k in (2..=fits).rev().take(MULTI_SHORTER_TRIES + 1) {
                    if let Some(t) = self.trial(&cands[..k], true) {
                        if self.acceptable(&cands[..k], &t) {
                            best = Some((k, t));
                            break;
                        }
                    }
                }
                let Some((k, trial)) = best else { break };
                actions.extend(self.commit(&cands[..k], trial));
            }
        }
    }

    fn single_replace_pass(&mut self, actions: &mut Vec<Action>) {
        for c in self.free_candidates() {
            if self.budget_left == 0 {
                return;
            }
            if self.nodes[c].role != Role::Free {
                continue;
            }
            if let Some(trial) = self.trial(&[c], true) {
                if self.acceptable(&[c], &trial) {
                    actions.extend(self.commit(&[c], trial));
                }
            }
        }
    }

    /// Whether a saving of `saving` retiring `retired_cost` passes the threshold.
    fn passes(&self, saving: f64, retired_cost: f64) -> bool {
        saving >= self.options.min_saving_per_hour
            && saving >= self.options.min_saving_fraction * retired_cost
            && saving > 0.0
    }

    /// Tries to retire `set` (all Free sources of one class): its tasks onto
    /// the targets, the rest (with `allow_new`) onto one new instance of the
    /// cheapest type that holds them. Feasibility only: the threshold is
    /// [`Fleet::acceptable`]'s.
    fn trial(&self, set: &[usize], allow_new: bool) -> Option<Trial> {
        if set.len() > self.budget_left {
            return None;
        }
        let class = self.nodes[*set.first()?].class;
        let mut in_set = vec![false; self.nodes.len()];
        for &s in set {
            in_set[s] = true;
        }
        let mut tasks: Vec<(usize, usize)> = set
            .iter()
            .flat_map(|&s| (0..self.nodes[s].tasks.len()).map(move |t| (s, t)))
            .collect();
        tasks.sort_by(|&(sa, ta), &(sb, tb)| {
            task_order(self.nodes[sa].tasks[ta], self.nodes[sb].tasks[tb])
        });
        let mut extra = vec![[0u64; 3]; self.nodes.len()];
        let mut added_groups: BTreeSet<(usize, &str)> = BTreeSet::new();
        let mut moves = Vec::with_capacity(tasks.len());
        let mut leftover: Vec<(usize, usize)> = Vec::new();
        for (s, ti) in tasks {
            let task = self.nodes[s].tasks[ti];
            let req = task.resources.dims();
            let mut best: Option<(f64, usize)> = None;
            for &i in &self.targets[class] {
                let n = &self.nodes[i];
                if n.role == Role::Retired || in_set[i] {
                    continue;
                }
                let ex = extra[i];
                let mut room = [0u64; 3];
                let mut fits = true;
                for d in 0..3 {
                    let used = n.used[d].saturating_add(ex[d]).saturating_add(req[d]);
                    if used > n.alloc[d] {
                        fits = false;
                        break;
                    }
                    room[d] = n.alloc[d] - used;
                }
                if !fits {
                    continue;
                }
                if task.distinct_instance {
                    let group = task.group.as_str();
                    if n.groups.binary_search(&group).is_ok() || added_groups.contains(&(i, group))
                    {
                        continue;
                    }
                }
                let score: f64 = (0..3)
                    .filter(|&d| n.alloc[d] > 0)
                    .map(|d| room[d] as f64 / n.alloc[d] as f64)
                    .sum();
                if best.is_none_or(|(b, _)| score < b) {
                    best = Some((score, i));
                }
            }
            match best {
                Some((_, i)) => {
                    for (e, r) in extra[i].iter_mut().zip(req) {
                        *e = e.saturating_add(r);
                    }
                    added_groups.insert((i, task.group.as_str()));
                    moves.push((s, ti, Some(i)));
                }
                None => leftover.push((s, ti)),
            }
        }
        let retired_cost: f64 = set.iter().map(|&s| self.nodes[s].inst.hourly_cost).sum();
        let mut new = None;
        let mut new_cost = 0.0;
        if !leftover.is_empty() {
            if !allow_new {
                return None;
            }
            let mut need = [0u64; 3];
            let mut distinct: BTreeSet<&str> = BTreeSet::new();
            for &(s, ti) in &leftover {
                let task = self.nodes[s].tasks[ti];
                for (n, r) in need.iter_mut().zip(task.resources.dims()) {
                    *n = n.saturating_add(r);
                }
                if task.distinct_instance && !distinct.insert(task.group.as_str()) {
                    return None;
                }
            }
            let arch = self.class_keys[class].0;
            let r = self.types.iter().position(|t| {
                t.architectures.contains(&arch)
                    && need.iter().zip(t.allocatable.dims()).all(|(&n, a)| n <= a)
            })?;
            new = Some(r);
            new_cost = self.types[r].hourly_cost;
            moves.extend(leftover.into_iter().map(|(s, ti)| (s, ti, None)));
        }
        Some(Trial {
            moves,
            new,
            saving: retired_cost - new_cost,
            retired_cost,
        })
    }

    /// Whether retiring `set` as `trial` says passes the threshold.
    fn acceptable(&self, set: &[usize], trial: &Trial) -> bool {
        if !self.passes(trial.saving, trial.retired_cost) {
            return false;
        }
        // Several instances emptied without a launch become one drain each:
        // each must pass on its own.
        trial.new.is_some()
            || set.iter().all(|&s| {
                let cost = self.nodes[s].inst.hourly_cost;
                self.passes(cost, cost)
            })
    }

    /// Applies `trial` to the simulation and renders its action(s).
    fn commit(&mut self, set: &[usize], trial: Trial) -> Vec<Action> {
        self.budget_left = self.budget_left.saturating_sub(set.len());
        for &s in set {
            self.nodes[s].role = Role::Retired;
        }
        for &(s, ti, to) in &trial.moves {
            let Some(i) = to else { continue };
            let task = self.nodes[s].tasks[ti];
            let n = &mut self.nodes[i];
            for (u, r) in n.used.iter_mut().zip(task.resources.dims()) {
                *u = u.saturating_add(r);
            }
            if let Err(pos) = n.groups.binary_search(&task.group.as_str()) {
                n.groups.insert(pos, task.group.as_str());
            }
            n.role = Role::Touched;
        }
        let render = |moves: &[(usize, usize, Option<usize>)]| -> Vec<Move> {
            let mut out: Vec<Move> = moves
                .iter()
                .map(|&(s, ti, to)| Move {
                    task: self.nodes[s].tasks[ti].id.clone(),
                    from: self.nodes[s].inst.id.clone(),
                    to: match to {
                        Some(i) => Destination::Instance(self.nodes[i].inst.id.clone()),
                        None => Destination::New(0),
                    },
                })
                .collect();
            out.sort_by(|a, b| a.from.cmp(&b.from).then_with(|| a.task.cmp(&b.task)));
            out
        };
        match trial.new {
            None => set
                .iter()
                .map(|&s| {
                    let mine: Vec<_> = trial
                        .moves
                        .iter()
                        .copied()
                        .filter(|&(from, _, _)| from == s)
                        .collect();
                    Action::Drain {
                        instance: self.nodes[s].inst.id.clone(),
                        moves: render(&mine),
                        hourly_saving: self.nodes[s].inst.hourly_cost,
                    }
                })
                .collect(),
            Some(r) => {
                let ty = self.types[r];
                let (arch, zone) = self.class_keys[self.nodes[set[0]].class];
                let zone = zone.map_or_else(|| self.busiest_zone(set), str::to_string);
                let mut instances: Vec<String> =
                    set.iter().map(|&s| self.nodes[s].inst.id.clone()).collect();
                instances.sort();
                vec![Action::Replace {
                    instances,
                    with: vec![NewInstance {
                        instance_type: ty.instance_type.clone(),
                        architecture: arch,
                        availability_zone: zone,
                        hourly_cost: ty.hourly_cost,
                        allocatable: ty.allocatable,
                    }],
                    moves: render(&trial.moves),
                    hourly_saving: trial.saving,
                }]
            }
        }
    }

    /// The zone holding most of `set`'s tasks (ties: the first by name).
    fn busiest_zone(&self, set: &[usize]) -> String {
        let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
        for &s in set {
            *per_zone
                .entry(self.nodes[s].inst.availability_zone.as_str())
                .or_default() += self.nodes[s].tasks.len();
        }
        per_zone
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(z, _)| (*z).to_string())
            .unwrap_or_default()
    }
}

/// The largest share of any resource `used` takes of `alloc`.
fn share(used: &[u64; 3], alloc: &[u64; 3]) -> f64 {
    (0..3)
        .map(|d| {
            if alloc[d] == 0 {
                if used[d] > 0 {
                    f64::INFINITY
                } else {
                    0.0
                }
            } else {
                used[d] as f64 / alloc[d] as f64
            }
        })
        .fold(0.0, f64::max)
}

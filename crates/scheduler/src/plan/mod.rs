//! The provisioning planner: which instance types to launch, and how many, so
//! that a set of pending tasks fits at the lowest hourly cost, with a proven
//! lower bound on what any fleet holding them must cost.
//!
//! # Background
//!
//! ECS Managed Instances launches instances for tasks that do not fit on the
//! running ones. The choice is a variable-sized, multi-dimensional bin
//! packing problem (CPU units, memory, whole GPUs; each instance type a bin
//! with a price) with compatibility constraints (a task's architecture, GPU
//! tasks only on GPU types). [`plan`] solves it heuristically and says how far
//! from optimal it can be at most: `hourlyCost / lowerBound`.
//!
//! # Design
//!
//! 1. **Candidates, once.** The types the ECS `InstanceRequirementsRequest`
//!    admits in the region (`Catalog::matching_with`, once per architecture
//!    the tasks need, so price protection compares like with like), minus the
//!    [`PlanRequest::unavailable`] types, minus types without spot support for
//!    [`CapacityOption::Spot`]. Each candidate's allocatable capacity is its
//!    size less the per-instance [`Reservation`]; its cost is price + fee.
//!    Types another candidate dominates (at least as much of every resource,
//!    every architecture, for no more money) are dropped: no optimal fleet
//!    needs them.
//! 2. **Lower bound and task values** (`bound.rs`). The LP relaxation of the
//!    problem (fractional instances, fractional tasks) has a dual in which
//!    every candidate type `t` gets a resource price vector `w_t` with
//!    `w_t · capacity_t = cost_t`, and every task group `g` is worth
//!    `u_g = min over the types that can hold one of its tasks of w_t · r_g`.
//!    Any such choice is dual-feasible, so `Σ count_g × u_g` is a **proven**
//!    lower bound (weak duality). berth takes `w_t` proportional to a weight
//!    vector `λ` shared by the types of one class (architecture × GPU or
//!    not) and searches the `λ`s (grid, then local refinement, coordinate
//!    ascent over the classes): any `λ` gives a valid bound, a good one a
//!    tight bound. The bound is also at least the cheapest instance that can
//!    hold the most demanding task. The values `u_g` are each task's "fair
//!    price" and drive the packing.
//! 3. **Greedy by value per dollar** (`pack.rs`). Repeatedly: for every
//!    candidate type, fill one instance from the remaining tasks (a batch
//!    greedy that scores each group by its value over its size *relative to
//!    the instance's residual capacity*, so once CPU runs short memory-heavy
//!    tasks win: complementary shapes end up together); take the type whose
//!    fill is worth the most per dollar; launch as many copies of that fill
//!    as the remaining counts allow. Values are recomputed for what remains
//!    after each step. This is cost-aware in a way first-fit-decreasing is
//!    not: a type is chosen for what it packs per dollar, not for fitting the
//!    next task.
//! 4. **Bounded local search** (`pack.rs`): right-size every instance to the
//!    cheapest type that holds its tasks; then a fixed number of moves chosen
//!    by a seeded xorshift (deterministic): drain an instance into the others'
//!    spare room, merge two instances onto one type, re-pack two or three
//!    instances from scratch. A move is kept only if the fleet gets cheaper.
//! 5. **Spot.** The catalog has no spot prices: the price is
//!    [`PlanOptions::spot_price_ratio`] × on-demand (default
//!    [`DEFAULT_SPOT_PRICE_RATIO`] = 0.35, i.e. 65 % off, about the average
//!    discount AWS advertises for spot). The management fee stays the
//!    on-demand figure: AWS bills the ECS Managed Instances fee per instance
//!    hour by instance type, whatever the purchase option (berth's reading of
//!    the pricing page). Only `spot_supported` types are candidates, and no
//!    type may hold more than [`PlanOptions::spot_max_type_share`] (default
//!    [`DEFAULT_SPOT_MAX_TYPE_SHARE`]) of the instances when the fleet has
//!    at least [`SPOT_DIVERSITY_MIN_FLEET`] instances, so one reclaimed
//!    spot pool cannot take the whole fleet: the plan is made, the cap
//!    computed from its size, and the plan made again under the cap.
//! 6. **Availability zones.** When [`PlanRequest::availability_zones`] is
//!    given, instances (sorted by type) are dealt round-robin over them: each
//!    type's instances spread, the zones stay within one instance of each
//!    other, and the cost is unchanged.
//!
//! [`plan_ffd`] is the baseline the benchmark compares with, Karpenter-like:
//! tasks sorted by size decreasing (GPUs, then CPU, then memory), each put on
//! the first open instance with room, else on a new instance of the
//! **cheapest type that holds that task**; no right-sizing afterwards.
//!
//! # Reservation
//!
//! berth's default holds back [`DEFAULT_RESERVED_MEMORY_MIB`] = 256 MiB of
//! every instance for the OS and the agent, as the control plane does
//! (`berth up`) and as the ECS developer guide's example of
//! `ECS_RESERVED_MEMORY=256` does ("the agent registers the total memory
//! minus 256 MiB for that instance"). ECS's own agent default is 0 on top of
//! what the kernel takes, which varies by type and AMI and is not published;
//! a flat figure is the documented, predictable choice. CPU is not reserved.
//!
//! # Limits
//!
//! * Heuristic: the plan is not proven optimal; `hourlyCost / lowerBound`
//!   bounds the gap. The bound is fractional (LP), so on small fleets the
//!   gap mostly reflects whole instances, not a bad plan.
//! * Per-instance task limits (ENIs for `awsvpc`, ports) are not modelled.
//! * Spot prices are a flat ratio, not market prices.

mod bound;
mod ffd;
mod pack;
mod problem;

use std::collections::{BTreeMap, BTreeSet};

use berth_catalog::{Catalog, RequirementsError};
use berth_model::ecs::{CPUArchitecture, InstanceRequirementsRequest};
use serde::{Deserialize, Serialize};

/// MiB held back on every instance by default (see the module docs).
pub const DEFAULT_RESERVED_MEMORY_MIB: u64 = 256;
/// Spot price as a fraction of the on-demand price by default (65 % off).
pub const DEFAULT_SPOT_PRICE_RATIO: f64 = 0.35;
/// The largest share of a spot fleet's instances one type may have by default.
pub const DEFAULT_SPOT_MAX_TYPE_SHARE: f64 = 0.5;
/// The spot diversity cap applies to fleets of at least this many instances.
pub const SPOT_DIVERSITY_MIN_FLEET: usize = 4;
/// Local-search moves tried by default.
pub const DEFAULT_SEARCH_ITERATIONS: u32 = 600;

/// On-demand or spot capacity (ECS `capacityOptionType`; `RESERVED` is not
/// planned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CapacityOption {
    /// On-demand instances at the catalog price.
    #[default]
    #[serde(rename = "ON_DEMAND")]
    OnDemand,
    /// Spot instances: the discounted price, spot-capable types only.
    #[serde(rename = "SPOT")]
    Spot,
}

/// How much of each instance is held back from tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// This many MiB of memory per instance, whatever its size.
    MemoryMib(u64),
    /// This much CPU and memory per instance (the system's share plus what
    /// the daemons of the capacity provider take), whatever its size.
    Fixed { cpu_units: u32, memory_mib: u64 },
}

impl Default for Reservation {
    /// berth's rule: [`DEFAULT_RESERVED_MEMORY_MIB`].
    fn default() -> Self {
        Reservation::MemoryMib(DEFAULT_RESERVED_MEMORY_MIB)
    }
}

impl Reservation {
    /// The memory reserved on an instance of `memory_mib`.
    pub fn memory_mib(&self, _instance_memory_mib: u64) -> u64 {
        match self {
            Reservation::MemoryMib(m) => *m,
            Reservation::Fixed { memory_mib, .. } => *memory_mib,
        }
    }

    /// The CPU units reserved on each instance.
    pub fn cpu_units(&self) -> u32 {
        match self {
            Reservation::MemoryMib(_) => 0,
            Reservation::Fixed { cpu_units, .. } => *cpu_units,
        }
    }
}

/// Identical tasks: `count` tasks of the same size and architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskGroup {
    /// A name, unique in the request (the key of [`PlannedInstance::tasks`]).
    pub name: String,
    /// CPU units per task (1024 = one vCPU).
    pub cpu: u32,
    /// MiB per task.
    pub memory_mib: u64,
    /// Whole GPUs per task.
    pub gpu: u32,
    /// How many tasks.
    pub count: u32,
    /// The architecture the task's image is built for.
    pub architecture: CPUArchitecture,
}

/// Tuning knobs; [`Default`] gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanOptions {
    /// Spot price as a fraction of on-demand ([`DEFAULT_SPOT_PRICE_RATIO`]).
    pub spot_price_ratio: f64,
    /// Largest share of a spot fleet one type may hold ([`DEFAULT_SPOT_MAX_TYPE_SHARE`]).
    pub spot_max_type_share: f64,
    /// Local-search moves ([`DEFAULT_SEARCH_ITERATIONS`]); 0 = greedy only.
    pub search_iterations: u32,
    /// Seed of the local search's xorshift.
    pub seed: u64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            spot_price_ratio: DEFAULT_SPOT_PRICE_RATIO,
            spot_max_type_share: DEFAULT_SPOT_MAX_TYPE_SHARE,
            search_iterations: DEFAULT_SEARCH_ITERATIONS,
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

/// What to plan for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    /// The region whose offerings and prices apply.
    pub region: String,
    /// The capacity provider's instance requirements.
    pub requirements: InstanceRequirementsRequest,
    /// On-demand or spot.
    pub capacity: CapacityOption,
    /// What each instance holds back.
    pub reservation: Reservation,
    /// The tasks.
    pub groups: Vec<TaskGroup>,
    /// Types not to launch (a launch failed for want of capacity, say).
    pub unavailable: BTreeSet<String>,
    /// Zones to spread new instances over; empty = no zone in the plan.
    pub availability_zones: Vec<String>,
    /// Knobs.
    pub options: PlanOptions,
}

impl PlanRequest {
    /// A request with berth's defaults for everything but the essentials.
    pub fn new(
        region: impl Into<String>,
        requirements: InstanceRequirementsRequest,
        groups: Vec<TaskGroup>,
    ) -> Self {
        PlanRequest {
            region: region.into(),
            requirements,
            capacity: CapacityOption::OnDemand,
            reservation: Reservation::default(),
            groups,
            unavailable: BTreeSet::new(),
            availability_zones: Vec::new(),
            options: PlanOptions::default(),
        }
    }
}

/// The permissive requirements used when none are given: any type with more
/// than one vCPU (ECS Managed Instances' floor applies anyway), any memory,
/// price protection off (the planner minimises cost itself, so an expensive
/// type is only chosen when it packs cheaper); everything else as ECS
/// defaults it (no bare metal, no burstable types).
pub fn permissive_requirements() -> InstanceRequirementsRequest {
    InstanceRequirementsRequest {
        v_cpu_count: Some(berth_model::ecs::VCpuCountRangeRequest {
            min: Some(1),
            max: None,
        }),
        memory_mib: Some(berth_model::ecs::MemoryMiBRequest {
            min: Some(0),
            max: None,
        }),
        on_demand_max_price_percentage_over_lowest_price: Some(berth_catalog::PRICE_PROTECTION_OFF),
        ..Default::default()
    }
}

/// Allocatable capacity of an instance, after the reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// CPU units.
    pub cpu: u64,
    /// MiB.
    pub memory: u64,
    /// Whole GPUs.
    pub gpu: u64,
}

/// One instance to launch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedInstance {
    /// `c7a.xlarge`.
    pub instance_type: String,
    /// USD per hour (the spot estimate for spot).
    pub hourly_price: f64,
    /// ECS Managed Instances fee, USD per hour.
    pub hourly_fee: f64,
    /// What tasks can use.
    pub capacity: Capacity,
    /// Tasks per group name.
    pub tasks: BTreeMap<String, u32>,
    /// The zone, when zones were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
}

/// Tasks no allowed type can hold, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unplaceable {
    /// The group.
    pub name: String,
    /// How many tasks.
    pub count: u32,
    /// Why, in words naming the resource or attribute.
    pub reason: String,
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Instances, one entry each, sorted by type.
    pub instances: Vec<PlannedInstance>,
    /// Σ (price + fee) over the instances, USD per hour.
    pub hourly_cost: f64,
    /// A proven lower bound on the hourly cost of any fleet that holds the
    /// placeable tasks.
    pub lower_bound: f64,
    /// Tasks left out.
    pub unplaceable: Vec<Unplaceable>,
}

/// Why there is no plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The instance requirements are invalid, or the region unknown.
    #[error("instanceRequirements: {0}")]
    Requirements(#[source] RequirementsError),
    /// Two groups have one name.
    #[error("tasks: the name `{0}` is used by more than one task group; names must be unique")]
    DuplicateGroup(String),
    /// A group with an empty name.
    #[error("tasks[{0}].name: must not be empty")]
    EmptyName(usize),
    /// A task that asks for nothing.
    #[error("tasks[{index}] (`{name}`): cpu, memory and gpu are all 0; a task must reserve some CPU or memory")]
    EmptyTask {
        /// Index in the request.
        index: usize,
        /// The group's name.
        name: String,
    },
    /// A spot ratio outside (0, 1].
    #[error("spot price ratio {0} must be in (0, 1]")]
    SpotRatio(f64),
}

/// Plans a fleet for `request` with berth's planner (see the module docs).
pub fn plan(catalog: &Catalog, request: &PlanRequest) -> Result<Plan, PlanError> {
    let problem = problem::Problem::build(catalog, request)?;
    let mut limits: Option<Vec<u32>> = None;
    let mut fleet = pack::solve(&problem, limits.as_deref());
    if request.capacity == CapacityOption::Spot && fleet.len() >= SPOT_DIVERSITY_MIN_FLEET {
        let cap = spot_cap(fleet.len(), request.options.spot_max_type_share);
        let mut per_type = vec![0u32; problem.cands.len()];
        for inst in &fleet {
            per_type[inst.ty] += 1;
        }
        if per_type.iter().any(|&n| n > cap) {
            limits = Some(vec![cap; problem.cands.len()]);
            fleet = pack::solve(&problem, limits.as_deref());
        }
    }
    Ok(problem.render(fleet))
}

/// Answers kept by a [`PlanCache`] before it starts afresh.
const PLANS_KEPT: usize = 256;

/// [`plan`]'s answers by request, for one catalog. The planner is a pure
/// function of the catalog (immutable) and the request, and a scheduler
/// asks the same question again and again (each instance of a drain wave
/// is replaced by the same tasks' shape), so an answer is worked out once.
#[derive(Debug, Default)]
pub struct PlanCache {
    /// By the request's `Debug` text: every field, floats exact.
    answers: std::sync::Mutex<std::collections::HashMap<String, Result<Plan, PlanError>>>,
}

impl PlanCache {
    /// [`plan`] of `request` over `catalog`, which must be the catalog of
    /// every earlier question to this cache.
    pub fn plan(&self, catalog: &Catalog, request: &PlanRequest) -> Result<Plan, PlanError> {
        let key = format!("{request:?}");
        if let Some(found) = self.answers.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return found;
        }
        let answer = plan(catalog, request);
        if let Ok(mut m) = self.answers.lock() {
            if m.len() >= PLANS_KEPT {
                m.clear();
            }
            m.insert(key, answer.clone());
        }
        answer
    }
}

/// The per-type limit for a spot fleet of `n` instances.
fn spot_cap(n: usize, share: f64) -> u32 {
    let share = if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        1.0
    };
    ((n as f64 * share).ceil() as u32).max(1)
}

/// Plans with the first-fit-decreasing baseline (see the module docs); the
/// same candidates, bound and unplaceable tasks as [`plan`].
pub fn plan_ffd(catalog: &Catalog, request: &PlanRequest) -> Result<Plan, PlanError> {
    let problem = problem::Problem::build(catalog, request)?;
    let fleet = ffd::solve(&problem);
    Ok(problem.render(fleet))
}

/// Tiny deterministic xorshift64* generator (no `rand` dependency).
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

//! The scheduling reconciler: places pending tasks on instances with room,
//! launches instances for what does not fit, and pushes each instance its
//! desired set when it changed.

use crate::agents::{self, load_record, save_record, InstanceRecord, TdCache};
use crate::daemons::DaemonView;
use crate::placing;
use crate::usage::{registered, task_needs};
use crate::{new_secret, AgentLink, Ctx};
use berth_model::ecs::*;
use berth_model::EcsError;
use berth_protocol::ServerMessage;
use berth_scheduler::placement::{
    self, AgentVersion, Constraint, Demand, Facts, InstanceSpec, PlaceOptions, Placement, Snapshot,
};
use berth_scheduler::plan::{CapacityOption, PlanRequest, Reservation, TaskGroup};
use berth_store::{Expect, PlacedTask, TaskFilter, Tx, Versioned};
use foldhash::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How the scheduler launches instances.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The URL agents connect back to.
    pub server_url: String,
    /// The program that runs the agent (berth itself) and the arguments before `agent`.
    pub agent_program: PathBuf,
    pub agent_args: Vec<String>,
    /// Where instances keep their agent state.
    pub state_root: PathBuf,
    /// Memory held back on every instance for the OS and the agent, in MiB.
    pub reserved_memory_mib: u64,
    /// Only instance types of this architecture (the host's, for local instances).
    pub architecture: Option<berth_catalog::Architecture>,
    /// Tasks waiting for capacity are planned for together once no new one
    /// came for this long...
    pub batch_idle: Duration,
    /// ...or once the first has waited this long.
    pub batch_max: Duration,
    /// How long an instance type whose launch failed is left out of plans.
    pub unavailable_for: Duration,
    /// How long an instance stays idle before it is terminated when its
    /// capacity provider's `scaleInAfter` is null (ECS publishes no figure;
    /// berth's default is [`DEFAULT_SCALE_IN_AFTER`]).
    pub default_scale_in_after: Duration,
    /// Drain age, maximum lifetime and the agent timeout.
    pub lifecycle: crate::lifecycle::LifecycleConfig,
}

/// berth's batching window for pending tasks: 1 s idle, at most 10 s (as
/// Karpenter batches pods by default).
pub const DEFAULT_BATCH_IDLE: Duration = Duration::from_secs(1);
/// See [`DEFAULT_BATCH_IDLE`].
pub const DEFAULT_BATCH_MAX: Duration = Duration::from_secs(10);
/// How long a failed offering is avoided.
pub const DEFAULT_UNAVAILABLE_FOR: Duration = Duration::from_secs(300);
/// Idle time before scale-in when `scaleInAfter` is null: 5 minutes.
pub const DEFAULT_SCALE_IN_AFTER: Duration = Duration::from_secs(300);

impl SchedulerConfig {
    /// A configuration with berth's defaults for batching, unavailable
    /// offerings, scale-in and the memory reservation.
    pub fn new(server_url: String, agent_program: PathBuf, state_root: PathBuf) -> Self {
        SchedulerConfig {
            server_url,
            agent_program,
            agent_args: vec![],
            state_root,
            reserved_memory_mib: berth_scheduler::plan::DEFAULT_RESERVED_MEMORY_MIB,
            architecture: None,
            batch_idle: DEFAULT_BATCH_IDLE,
            batch_max: DEFAULT_BATCH_MAX,
            unavailable_for: DEFAULT_UNAVAILABLE_FOR,
            default_scale_in_after: DEFAULT_SCALE_IN_AFTER,
            lifecycle: crate::lifecycle::LifecycleConfig::default(),
        }
    }
}

/// An instance to launch, as the scheduler asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    pub instance_id: String,
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub gpus: u32,
    pub subnet: String,
    pub now: f64,
    /// The agent to start on it: program, arguments, environment.
    pub agent_program: PathBuf,
    pub agent_args: Vec<String>,
    pub agent_env: Vec<(String, String)>,
}

/// Where instances come from: the seam to an instance provider.
pub trait Launcher: Send + Sync {
    /// Launches an instance; its agent connects back on its own.
    fn launch(&self, request: &LaunchRequest) -> Result<(), String>;
    /// The availability zone a subnet is in.
    fn availability_zone(&self, subnet: &str) -> String;
    /// A new instance id.
    fn new_instance_id(&self) -> String;
    /// An address for an `awsvpc` task on an instance's network (its ENI).
    /// Providers without task networks say so, and such tasks share their
    /// instance's network.
    fn allocate_task_address(
        &self,
        instance_id: &str,
        task_id: &str,
    ) -> Result<berth_protocol::TaskAddress, String> {
        let _ = (instance_id, task_id);
        Err("this instance provider gives tasks no addresses of their own".into())
    }
    /// Gives a task's address back (idempotent).
    fn release_task_address(&self, instance_id: &str, task_id: &str) -> Result<(), String> {
        let _ = (instance_id, task_id);
        Ok(())
    }
    /// Terminates an instance (scale-in): its agent and tasks stop, what it
    /// held on the host is removed.
    fn terminate(&self, instance_id: &str) -> Result<(), String>;
}

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TickReport {
    pub placed: usize,
    pub launched: Vec<String>,
    pub waiting: usize,
    /// Instances terminated for being idle.
    pub terminated: Vec<String>,
    /// Tasks the service reconciler started and stopped.
    pub service_started: usize,
    pub service_stopped: usize,
    /// Tasks the daemon reconciler started and stopped.
    pub daemon_started: usize,
    pub daemon_stopped: usize,
    /// Instances that started draining, and why.
    pub drained: Vec<(String, crate::lifecycle::DrainKind)>,
    /// Instances terminated by the lifecycle (drained, expired, lost,
    /// interrupted), with the reason.
    pub retired: Vec<(String, String)>,
    /// Tasks the retirements stopped (those still on the instances).
    pub retired_tasks: usize,
    /// Instances due for a planned drain that got replacement capacity
    /// first: the instance and the replacements launched for it.
    pub prepared: Vec<(String, Vec<String>)>,
    /// Seconds until something is due (a batch to plan, an idle instance to
    /// scale in), when sooner than the next periodic tick should be.
    pub next_tick: Option<f64>,
}

/// The requirements used when a capacity provider gives none: ECS Managed
/// Instances' general-purpose default of at least 2 vCPUs and 4 GiB.
fn default_requirements() -> InstanceRequirementsRequest {
    InstanceRequirementsRequest {
        v_cpu_count: Some(VCpuCountRangeRequest {
            min: Some(2),
            max: Some(8),
        }),
        memory_mib: Some(MemoryMiBRequest {
            min: Some(4096),
            max: Some(32768),
        }),
        ..Default::default()
    }
}

/// Ticks an entry of [`KnownInstances`] is kept unread.
const KNOWN_KEPT: u64 = 8;

/// Container instances and the tasks placed on them as read, by ARN: the
/// tick that last read each, its version and document.
#[derive(Default)]
struct KnownInstances {
    tick: u64,
    by_arn: BTreeMap<String, (u64, i64, Arc<ContainerInstance>)>,
    tasks: BTreeMap<String, (u64, i64, Arc<Task>)>,
    /// Instance records by instance id: the text as stored, decoded, and
    /// the store's change mark it is known to hold at.
    records: HashMap<String, KnownRecord>,
    /// Listings of a cluster's instances of a status, with the change mark
    /// they were read at.
    listings: HashMap<(String, String), (Mark, Listing)>,
}

/// Container instances as [`Scheduler::instances`] lists them.
type Listing = Vec<Versioned<Arc<ContainerInstance>>>;

/// [`berth_store::Store::change_mark`].
type Mark = (u64, i64);

struct KnownRecord {
    seen: u64,
    text: String,
    record: Arc<InstanceRecord>,
    at: Option<Mark>,
}

/// A desired set as last sent to an instance.
struct Sent {
    /// The tasks it was made of and their versions: while they are the
    /// same, so is the set, and it is not built again.
    tasks: Vec<(String, i64)>,
    /// The set itself, as JSON.
    fingerprint: String,
    generation: u64,
}

pub struct Scheduler {
    pub ctx: Arc<Ctx>,
    pub provider: Arc<dyn Launcher>,
    pub link: Arc<dyn AgentLink>,
    pub config: SchedulerConfig,
    /// What each instance was last sent and its generation, so a desired set
    /// goes out only when it changed, with a generation above the last one.
    sent: Mutex<BTreeMap<String, Sent>>,
    /// Services whose last pass changed nothing (see [`crate::services::Steady`]).
    steady: crate::services::Steady,
    /// By cluster, the store's change mark when every desired set of its
    /// instances was last settled (sent, or unchanged): while the store has
    /// not changed since, there is nothing new to push.
    pushed: Mutex<BTreeMap<String, (u64, i64)>>,
    /// Container instances as last read (see `instances`).
    known: Mutex<KnownInstances>,
    /// Seed of the `random` placement strategy, a new one every tick.
    seed: AtomicU64,
    /// Since when each instance (by cluster) has had no task.
    idle_since: Mutex<BTreeMap<(String, String), f64>>,
    /// Tasks waiting for capacity, by cluster and capacity provider.
    batches: Mutex<BTreeMap<(String, String), Batch>>,
    /// Instance types left out of plans until then (their launch failed).
    unavailable: Mutex<BTreeMap<String, f64>>,
    /// Tasks already logged as waiting without a way to get capacity.
    warned: Mutex<BTreeSet<String>>,
    /// The instance each task was planned onto, until the task is placed.
    planned: Mutex<BTreeMap<String, String>>,
    /// What each capacity provider's daemons reserve on an instance, as of
    /// the last tick (for replacement capacity planned before they run).
    reserve: Mutex<BTreeMap<String, (u32, u64)>>,
    /// Replacement instances already told to pull their images.
    prefetched: Mutex<BTreeSet<String>>,
    /// The planner's answers over `ctx.catalog`, by request.
    plans: berth_scheduler::plan::PlanCache,
}

struct Slot {
    record: Arc<InstanceRecord>,
    connected: bool,
    /// Takes tasks now: ACTIVE, and no daemon task starting there.
    active: bool,
    /// ACTIVE (its agent gets desired sets).
    registered: bool,
    /// Application (not daemon) tasks on it not yet STOPPED.
    tasks: usize,
    /// What placement sees: remaining resources, attributes, ports, groups, GPUs.
    spec: InstanceSpec,
}

/// A task that fits on no running instance.
struct Waiting {
    task_arn: String,
    demand: Demand,
    architecture: CPUArchitecture,
}

/// The CPU architecture a task definition asks for (X86_64 unless its
/// `runtimePlatform` says otherwise).
fn architecture_of(td: Option<&TaskDefinition>) -> CPUArchitecture {
    td.and_then(|d| d.runtime_platform.as_ref())
        .and_then(|p| p.cpu_architecture)
        .unwrap_or(CPUArchitecture::X8664)
}

/// How the reason of a task waiting for capacity starts.
const WAITING: &str = "Waiting for capacity";

/// Shows why a PROVISIONING task waits, in its containers' `reason` (ECS's
/// free text about a container), when that changed.
fn set_waiting_reason(
    tx: &dyn Tx,
    t: &mut Task,
    version: i64,
    why: Option<String>,
) -> Result<(), EcsError> {
    let unchanged = t.containers.iter().flatten().all(|c| c.reason == why);
    if unchanged {
        return Ok(());
    }
    for c in t.containers.iter_mut().flatten() {
        c.reason = why.clone();
    }
    t.version += 1;
    tx.put_task(t, Expect::Version(version))?;
    Ok(())
}

/// The instance planned for a task.
fn planned_for(planned: &Mutex<BTreeMap<String, String>>, task_arn: &str) -> Option<String> {
    planned.lock().ok()?.get(task_arn).cloned()
}

/// `demand` restricted to one instance.
fn pin(demand: &Demand, instance_id: &str) -> Demand {
    let mut d = demand.clone();
    if let Ok(e) = placement::parse_expression(&format!("ec2InstanceId == {instance_id}")) {
        d.constraints.push(Constraint::MemberOf(e));
    }
    d
}

/// Pending tasks gathering before they are planned for.
struct Batch {
    first: f64,
    grew: f64,
    arns: BTreeSet<String>,
}

/// The facts of an instance not launched yet, for `memberOf` expressions: its
/// type's attributes and its zone.
struct NewInstance<'a> {
    instance_type: &'a berth_catalog::InstanceType,
    zone: &'a str,
}

impl Facts for NewInstance<'_> {
    fn attribute(&self, name: &str) -> Option<Option<&str>> {
        match name {
            "ecs.instance-type" => Some(Some(self.instance_type.name.as_str())),
            "ecs.availability-zone" if !self.zone.is_empty() => Some(Some(self.zone)),
            "ecs.os-type" => Some(Some("linux")),
            "ecs.cpu-architecture" => self
                .instance_type
                .architectures
                .first()
                .map(|a| Some(a.as_str())),
            _ => None,
        }
    }
    fn ec2_instance_id(&self) -> &str {
        ""
    }
    fn agent_connected(&self) -> bool {
        true
    }
    fn agent_version(&self) -> Option<AgentVersion> {
        None
    }
    fn registered_at(&self) -> i64 {
        0
    }
    fn running_tasks_count(&self) -> u32 {
        0
    }
    fn any_task_group(&self, _f: &mut dyn FnMut(&str) -> bool) -> bool {
        false
    }
}

impl Scheduler {
    pub fn new(
        ctx: Arc<Ctx>,
        provider: Arc<dyn Launcher>,
        link: Arc<dyn AgentLink>,
        config: SchedulerConfig,
    ) -> Self {
        Self {
            ctx,
            provider,
            link,
            config,
            sent: Mutex::new(BTreeMap::new()),
            steady: crate::services::Steady::default(),
            pushed: Mutex::new(BTreeMap::new()),
            known: Mutex::new(KnownInstances::default()),
            plans: Default::default(),
            seed: AtomicU64::new(0x5eed),
            idle_since: Mutex::new(BTreeMap::new()),
            batches: Mutex::new(BTreeMap::new()),
            unavailable: Mutex::new(BTreeMap::new()),
            warned: Mutex::new(BTreeSet::new()),
            planned: Mutex::new(BTreeMap::new()),
            reserve: Mutex::new(BTreeMap::new()),
            prefetched: Mutex::new(BTreeSet::new()),
        }
    }

    /// A cluster's container instances of a status, by ARN. Each is decoded
    /// again only when its version changed since the last read (a version
    /// is never reused for other content); what no tick read for two ticks
    /// is forgotten. Only what is committed may be kept: in a write
    /// transaction, call it before writing any container instance.
    fn instances(
        &self,
        tx: &dyn Tx,
        cluster_arn: &str,
        status: &str,
    ) -> Result<Vec<Versioned<Arc<ContainerInstance>>>, EcsError> {
        self.instances_at(tx, cluster_arn, status, None)
    }

    /// [`Self::instances`] in a read transaction begun at the store's
    /// change `mark` (as [`Self::record_at`]): a listing read at that mark
    /// is not read again.
    fn instances_at(
        &self,
        tx: &dyn Tx,
        cluster_arn: &str,
        status: &str,
        mark: Option<Mark>,
    ) -> Result<Vec<Versioned<Arc<ContainerInstance>>>, EcsError> {
        let key = (cluster_arn.to_string(), status.to_string());
        if let Some(m) = mark {
            let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, listing)) = known.listings.get(&key) {
                if *at == m {
                    return Ok(listing.clone());
                }
            }
        }
        let out = self.instances_read(tx, cluster_arn, status)?;
        if let Some(m) = mark {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            known.listings.insert(key, (m, out.clone()));
        }
        Ok(out)
    }

    fn instances_read(
        &self,
        tx: &dyn Tx,
        cluster_arn: &str,
        status: &str,
    ) -> Result<Vec<Versioned<Arc<ContainerInstance>>>, EcsError> {
        let versions = berth_store::all(|a, n| {
            tx.container_instance_versions(cluster_arn, Some(status), a, n)
        })?;
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let tick = known.tick;
        let mut out = Vec::with_capacity(versions.len());
        for (arn, version) in versions {
            let hit = known
                .by_arn
                .get(&arn)
                .filter(|(_, v, _)| *v == version)
                .map(|(_, _, ci)| ci.clone());
            let ci = match hit {
                Some(ci) => ci,
                None => match tx.container_instance(&arn)? {
                    Some(v) if v.version == version => Arc::new(v.value),
                    _ => continue,
                },
            };
            known.by_arn.insert(arn, (tick, version, ci.clone()));
            out.push(Versioned { version, value: ci });
        }
        Ok(out)
    }

    /// [`load_record`], decoded again only when its stored text changed
    /// since a tick read it.
    fn record(
        &self,
        tx: &dyn Tx,
        instance_id: &str,
    ) -> Result<Option<Arc<InstanceRecord>>, EcsError> {
        self.record_at(tx, instance_id, None)
    }

    /// [`Self::record`] in a read transaction begun at the store's change
    /// `mark` (taken before it): a record known at that mark is not read
    /// again (nothing was written since, see `Store::change_mark`).
    fn record_at(
        &self,
        tx: &dyn Tx,
        instance_id: &str,
        mark: Option<Mark>,
    ) -> Result<Option<Arc<InstanceRecord>>, EcsError> {
        if let Some(m) = mark {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            let tick = known.tick;
            if let Some(k) = known.records.get_mut(instance_id) {
                if k.at == Some(m) {
                    k.seen = tick;
                    return Ok(Some(k.record.clone()));
                }
            }
        }
        let Some(text) = tx.meta(&agents::record_key(instance_id))? else {
            return Ok(None);
        };
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let tick = known.tick;
        if let Some(k) = known.records.get_mut(instance_id) {
            if k.text == text {
                k.seen = tick;
                k.at = mark;
                return Ok(Some(k.record.clone()));
            }
        }
        let r = Arc::new(agents::parse_record(instance_id, &text)?);
        known.records.insert(
            instance_id.to_string(),
            KnownRecord {
                seen: tick,
                text,
                record: r.clone(),
                at: mark,
            },
        );
        Ok(Some(r))
    }

    /// [`agents::instance_tasks`] of an instance whose placed tasks
    /// ([`Tx::placed_task_versions`]) are `placed`: desired RUNNING, then
    /// STOPPED, each task decoded again only when its version changed since
    /// a tick read it (as [`Self::instances`], and with its rule: before any
    /// write in the transaction).
    fn instance_tasks(
        &self,
        tx: &dyn Tx,
        placed: &[PlacedTask],
    ) -> Result<Vec<Arc<Task>>, EcsError> {
        let mut out = vec![];
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let tick = known.tick;
        for desired in ["RUNNING", "STOPPED"] {
            for p in placed
                .iter()
                .filter(|p| p.desired_status.as_deref() == Some(desired))
            {
                if let Some(t) = known_task(&mut known, tx, tick, &p.arn, p.version)? {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    /// Forgets what an instance was sent (it reconnected and got a fresh set).
    pub fn forget(&self, instance_id: &str) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.remove(instance_id);
        }
        if let Ok(mut pushed) = self.pushed.lock() {
            pushed.clear();
        }
    }

    /// One reconcile pass over every cluster.
    pub fn tick(&self) -> Result<TickReport, EcsError> {
        let mut report = TickReport::default();
        {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            known.tick += 1;
            let tick = known.tick;
            // What no tick read for a while is let go, looked for every
            // few ticks rather than walked each time.
            if tick.is_multiple_of(KNOWN_KEPT) {
                known
                    .by_arn
                    .retain(|_, (seen, _, _)| *seen + KNOWN_KEPT >= tick);
                known
                    .tasks
                    .retain(|_, (seen, _, _)| *seen + KNOWN_KEPT >= tick);
                known.records.retain(|_, r| r.seen + KNOWN_KEPT >= tick);
                known.listings.clear();
            }
        }
        // Addresses of stopped tasks go back to the provider.
        for (instance_id, task_arn) in agents::pending_releases(&self.ctx)? {
            let task_id = task_arn.rsplit('/').next().unwrap_or("");
            match self.provider.release_task_address(&instance_id, task_id) {
                Ok(()) => agents::released(&self.ctx, &instance_id, &task_arn)?,
                Err(e) => tracing::warn!(
                    instance_id,
                    task_id,
                    error = e,
                    "cannot release a task address"
                ),
            }
        }
        let clusters = self.ctx.store.read(|tx| {
            let all = berth_store::all(|a, n| tx.clusters(a, n))?;
            Ok::<_, EcsError>(
                all.into_iter()
                    .filter(|c| c.status.as_deref() == Some("ACTIVE"))
                    .collect::<Vec<_>>(),
            )
        })?;
        for c in clusters {
            self.tick_cluster(&c, &mut report)?;
        }
        Ok(report)
    }

    fn tick_cluster(&self, cluster: &Cluster, report: &mut TickReport) -> Result<(), EcsError> {
        // The lifecycle first: what drains now is replaced in this tick.
        self.lifecycle(cluster, report)?;
        // Daemons next: their tasks go on each instance before anything else.
        let daemons = crate::daemons::reconcile_cluster(&self.ctx, cluster)?;
        if let Ok(mut r) = self.reserve.lock() {
            r.extend(daemons.reserve.iter().map(|(k, v)| (k.clone(), *v)));
        }
        report.daemon_started += daemons.started;
        report.daemon_stopped += daemons.stopped;
        if let Some(n) = daemons.next_tick {
            report.next_tick = Some(report.next_tick.map_or(n, |m: f64| m.min(n)));
        }
        // Services next: the tasks they start are placed below, in this tick.
        let (started, stopped) =
            crate::services::reconcile_cluster_with(&self.ctx, cluster, &self.steady)?;
        report.service_started += started;
        report.service_stopped += stopped;
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let now = self.ctx.now();
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut connected: Vec<String> = vec![];
        let mut waiting: BTreeMap<String, Vec<Waiting>> = BTreeMap::new();
        let mut idle: Vec<(String, String)> = vec![];
        let seed = self.seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Nothing to place: what is connected and what is idle, from the
        // container instances' own counts, in a read.
        let mark = self.ctx.store.change_mark().ok();
        let quiet = self.ctx.store.read(|tx| {
            if has_pending_tasks(tx, &cluster_arn)? {
                return Ok::<_, EcsError>(false);
            }
            for ci in self.instances_at(tx, &cluster_arn, "ACTIVE", mark)? {
                let ci = ci.value;
                let Some(record) =
                    self.record_at(tx, ci.ec2_instance_id.as_deref().unwrap_or(""), mark)?
                else {
                    continue;
                };
                if ci.agent_connected {
                    connected.push(record.instance_id.clone());
                }
                // Only daemons on it: idle (they stop with it).
                let arn = ci.container_instance_arn.as_deref().unwrap_or("");
                let daemon_tasks = daemons.tasks_on.get(arn).copied().unwrap_or(0);
                let tasks = ci.running_tasks_count + ci.pending_tasks_count;
                if usize::try_from(tasks).unwrap_or(usize::MAX) <= daemon_tasks {
                    idle.push((record.instance_id.clone(), record.capacity_provider.clone()));
                }
            }
            Ok(true)
        })?;
        if quiet {
            self.scale_in(cluster, &idle, now, report)?;
            self.provision(cluster, BTreeMap::new(), &daemons.reserve, now, report)?;
            return self.push_draining(&cluster_arn, connected);
        }
        connected.clear();
        idle.clear();
        self.ctx.store.write(|tx| {
            let mut tds = TdCache::default();
            let slots = self.slots(tx, &cluster_arn, &mut tds, &daemons)?;
            let pending = pending_tasks(tx, &cluster_arn)?;
            let mut by_cp: BTreeMap<String, Vec<Versioned<Task>>> = BTreeMap::new();
            for v in pending {
                by_cp
                    .entry(v.value.capacity_provider_name.clone().unwrap_or_default())
                    .or_default()
                    .push(v);
            }
            for (cp, tasks) in by_cp {
                // Running instances of the provider, then those on their way
                // (registering: their agent is taken as connected, for what
                // will fit once it is).
                let active: Vec<usize> = (0..slots.len())
                    .filter(|&i| slots[i].active && slots[i].record.capacity_provider == cp)
                    .collect();
                let coming: Vec<usize> = (0..slots.len())
                    .filter(|&i| !slots[i].active && slots[i].record.capacity_provider == cp)
                    .collect();
                let mut snap =
                    Snapshot::new(active.iter().map(|&i| slots[i].spec.clone()).collect());
                let mut later = Snapshot::new(
                    coming
                        .iter()
                        .map(|&i| InstanceSpec {
                            agent_connected: true,
                            ..slots[i].spec.clone()
                        })
                        .collect(),
                );
                let mut demands = Vec::with_capacity(tasks.len());
                for v in &tasks {
                    let td = tds.get(tx, v.value.task_definition_arn.as_deref())?;
                    let requested =
                        placing::requested(tx, v.value.task_arn.as_deref().unwrap_or(""))?;
                    demands.push(placing::demand(&v.value, td.as_deref(), &requested));
                }
                let options = PlaceOptions::run_task(seed);
                // Tasks the planner launched an instance for go there first,
                // so the fleet packs as planned; the rest (and those that no
                // longer fit there) are placed by their strategies.
                let planned = self.planned_instances(&tasks);
                let mut placed: Vec<Option<Placement>> = vec![None; tasks.len()];
                if !snap.is_empty() {
                    let is_active =
                        |id: &str| active.iter().any(|&k| slots[k].record.instance_id == id);
                    let first: Vec<usize> = (0..tasks.len())
                        .filter(|&i| planned[i].as_deref().is_some_and(is_active))
                        .collect();
                    let pinned: Vec<Demand> = first
                        .iter()
                        .map(|&i| pin(&demands[i], planned[i].as_deref().unwrap_or("")))
                        .collect();
                    for (&i, r) in first
                        .iter()
                        .zip(placement::place(&mut snap, &pinned, &options))
                    {
                        if matches!(r, Placement::Placed { .. }) {
                            placed[i] = Some(r);
                        }
                    }
                    let rest: Vec<usize> =
                        (0..tasks.len()).filter(|&i| placed[i].is_none()).collect();
                    let others: Vec<Demand> = rest.iter().map(|&i| demands[i].clone()).collect();
                    for (&i, r) in rest
                        .iter()
                        .zip(placement::place(&mut snap, &others, &options))
                    {
                        placed[i] = Some(r);
                    }
                }
                for ((v, d), result) in tasks.into_iter().zip(&demands).zip(placed) {
                    let Versioned {
                        version,
                        value: mut t,
                    } = v;
                    if let Some(Placement::Placed { instance, gpus }) = result {
                        let slot = &slots[active[instance]];
                        if agents::is_awsvpc(&t) {
                            let task_id = t
                                .task_arn
                                .as_deref()
                                .unwrap_or("")
                                .rsplit('/')
                                .next()
                                .unwrap_or("");
                            match self
                                .provider
                                .allocate_task_address(&slot.record.instance_id, task_id)
                            {
                                Ok(a) => {
                                    agents::assign_address(tx, &mut t, &slot.record.instance_id, a)?
                                }
                                Err(e) => tracing::warn!(
                                    task = task_id,
                                    error = e,
                                    "the task shares its instance's network"
                                ),
                            }
                        }
                        if !gpus.is_empty() {
                            if let Some(td) = tds.get(tx, t.task_definition_arn.as_deref())? {
                                placing::assign_gpus(&mut t, &td, &gpus);
                            }
                        }
                        for c in t.containers.iter_mut().flatten() {
                            if c.reason.as_deref().is_some_and(|r| r.starts_with(WAITING)) {
                                c.reason = None;
                            }
                        }
                        t.container_instance_arn = Some(slot.record.container_instance_arn.clone());
                        t.availability_zone = Some(slot.record.availability_zone.clone());
                        t.last_status = Some("PENDING".into());
                        t.version += 1;
                        tx.put_task(&t, Expect::Version(version))?;
                        placing::forget(tx, t.task_arn.as_deref().unwrap_or(""))?;
                        if let Ok(mut p) = self.planned.lock() {
                            p.remove(t.task_arn.as_deref().unwrap_or(""));
                        }
                        dirty.insert(slot.record.instance_id.clone());
                        report.placed += 1;
                        continue;
                    }
                    report.waiting += 1;
                    let reason = match &result {
                        Some(Placement::Failed(f)) => f.reason.ecs_reason().to_string(),
                        _ => "no running instance".to_string(),
                    };
                    // Capacity on its way counts before launching more: the
                    // instance planned for the task, else any with room.
                    if !later.is_empty() {
                        let own = planned_for(&self.planned, t.task_arn.as_deref().unwrap_or(""))
                            .filter(|id| {
                                coming.iter().any(|&k| &slots[k].record.instance_id == id)
                            });
                        let mut on: Option<usize> = None;
                        if let Some(id) = own {
                            let r = placement::place(&mut later, &[pin(d, &id)], &options);
                            on = r.first().and_then(Placement::instance);
                        }
                        if on.is_none() {
                            let r = placement::place(&mut later, std::slice::from_ref(d), &options);
                            on = r.first().and_then(Placement::instance);
                        }
                        if let Some(k) = on {
                            let r = &slots[coming[k]].record;
                            let why = format!(
                                "Waiting for capacity: instance {} ({}) is starting for this task.",
                                r.instance_id, r.instance_type
                            );
                            set_waiting_reason(tx, &mut t, version, Some(why))?;
                            continue;
                        }
                    }
                    let why = format!(
                        "Waiting for capacity: no running instance of capacity provider {cp} can take the task ({reason}); berth plans and launches one."
                    );
                    set_waiting_reason(tx, &mut t, version, Some(why))?;
                    let td = tds.get(tx, t.task_definition_arn.as_deref())?;
                    waiting.entry(cp.clone()).or_default().push(Waiting {
                        task_arn: t.task_arn.clone().unwrap_or_default(),
                        demand: d.clone(),
                        architecture: architecture_of(td.as_deref()),
                    });
                }
            }
            for s in &slots {
                if dirty.contains(&s.record.instance_id) {
                    agents::refresh_counts(tx, &s.record)?;
                }
                if s.connected && s.registered {
                    connected.push(s.record.instance_id.clone());
                }
                if s.registered && s.tasks == 0 && !dirty.contains(&s.record.instance_id) {
                    idle.push((
                        s.record.instance_id.clone(),
                        s.record.capacity_provider.clone(),
                    ));
                }
            }
            Ok::<_, EcsError>(())
        })?;
        self.scale_in(cluster, &idle, now, report)?;
        self.provision(cluster, waiting, &daemons.reserve, now, report)?;
        self.push_draining(&cluster_arn, connected)
    }

    /// Pushes the desired sets of these connected ACTIVE instances and of
    /// every connected DRAINING one (whose tasks are being stopped).
    fn push_draining(&self, cluster_arn: &str, connected: Vec<String>) -> Result<(), EcsError> {
        let mark = self.ctx.store.change_mark()?;
        let settled = self
            .pushed
            .lock()
            .is_ok_and(|p| p.get(cluster_arn) == Some(&mark));
        if settled {
            return Ok(());
        }
        // The records and the tasks of every instance to push to, in one read.
        let current = self.ctx.store.read(|tx| {
            let draining: Vec<String> = self
                .instances_at(tx, cluster_arn, "DRAINING", Some(mark))?
                .into_iter()
                .filter(|ci| ci.value.agent_connected)
                .filter_map(|ci| ci.value.ec2_instance_id.clone())
                .collect();
            let placed = tx.placed_task_versions(cluster_arn)?;
            let by_instance = by_instance(&placed);
            // Only the instances whose tasks changed since their set was
            // sent are taken further.
            let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
            let mut current = vec![];
            for id in connected.iter().chain(&draining) {
                if let Some(r) = self.record_at(tx, id, Some(mark))? {
                    // The set is made of the tasks desired RUNNING.
                    let v: Vec<&PlacedTask> = by_instance
                        .get(r.container_instance_arn.as_str())
                        .copied()
                        .unwrap_or_default()
                        .iter()
                        .filter(|p| p.desired_status.as_deref() == Some("RUNNING"))
                        .collect();
                    let unchanged = sent.get(id.as_str()).is_some_and(|last| {
                        last.tasks.len() == v.len()
                            && last
                                .tasks
                                .iter()
                                .zip(&v)
                                .all(|(a, p)| a.0 == p.arn && a.1 == p.version)
                    });
                    if !unchanged {
                        let v = v.iter().map(|p| (p.arn.clone(), p.version)).collect();
                        current.push((r, v));
                    }
                }
            }
            Ok::<_, EcsError>(current)
        })?;
        let mut all_settled = true;
        for (record, versions) in current {
            all_settled &= self.push_versions(&record, versions)?;
        }
        if let Ok(mut pushed) = self.pushed.lock() {
            if all_settled {
                pushed.insert(cluster_arn.to_string(), mark);
            } else {
                pushed.remove(cluster_arn);
            }
        }
        Ok(())
    }

    /// Every ACTIVE and REGISTERING instance as placement sees it. An ACTIVE
    /// instance where a daemon task is starting is taken as coming capacity
    /// (application tasks wait for its daemons); a REGISTERING one has what
    /// its type offers less what its daemons will take.
    fn slots(
        &self,
        tx: &dyn Tx,
        cluster_arn: &str,
        tds: &mut TdCache,
        daemons: &DaemonView,
    ) -> Result<Vec<Slot>, EcsError> {
        let custom = berth_store::all(|a, n| {
            tx.attributes(
                &berth_store::AttributeFilter {
                    cluster_arn: cluster_arn.to_string(),
                    ..Default::default()
                },
                a,
                n,
            )
        })?;
        // The tasks on every instance, in one read.
        let placed = tx.placed_task_versions(cluster_arn)?;
        let by_instance = by_instance(&placed);
        let mut out = vec![];
        for status in ["ACTIVE", "REGISTERING"] {
            for ci in self.instances(tx, cluster_arn, status)? {
                let ci = ci.value;
                let Some(id) = ci.ec2_instance_id.clone() else {
                    continue;
                };
                let Some(record) = self.record(tx, &id)? else {
                    continue;
                };
                let (reg_cpu, reg_mem) = match registered(&ci) {
                    (0, 0) => {
                        let (c, m) = self.planned_capacity(&record);
                        let (dc, dm) = daemons
                            .reserve
                            .get(&record.capacity_provider)
                            .copied()
                            .unwrap_or((0, 0));
                        (c - i64::from(dc), m - dm as i64)
                    }
                    other => other,
                };
                let mut on = vec![];
                let mut app_tasks = 0;
                let (mut used_cpu, mut used_mem) = (0i64, 0i64);
                let placed = by_instance
                    .get(record.container_instance_arn.as_str())
                    .copied()
                    .unwrap_or_default();
                for t in self.instance_tasks(tx, placed)? {
                    if !crate::daemons::is_daemon_task(&t) {
                        app_tasks += 1;
                    }
                    let (c, m) = task_needs(&t);
                    used_cpu += i64::from(c);
                    used_mem += m as i64;
                    let td = tds.get(tx, t.task_definition_arn.as_deref())?;
                    on.push((t, td));
                }
                let arn = ci.container_instance_arn.clone().unwrap_or_default();
                let mine: Vec<Attribute> = custom
                    .iter()
                    .filter(|a| a.target_id.as_deref() == Some(arn.as_str()))
                    .cloned()
                    .collect();
                let mut spec =
                    placing::instance_spec(&ci, &mine, &on, reg_cpu - used_cpu, reg_mem - used_mem);
                if status == "REGISTERING" && spec.free_gpus.is_empty() {
                    // Not registered yet: the GPUs its type has.
                    let n = self
                        .ctx
                        .catalog
                        .get(&record.instance_type)
                        .map_or(0, |t| t.whole_gpus());
                    spec.free_gpus = (0..n).map(|i| i.to_string()).collect();
                }
                out.push(Slot {
                    connected: ci.agent_connected,
                    active: status == "ACTIVE" && !daemons.starting.contains(&arn),
                    registered: status == "ACTIVE",
                    tasks: app_tasks,
                    spec,
                    record,
                });
            }
        }
        Ok(out)
    }

    /// What an instance will register, before its agent says so.
    fn planned_capacity(&self, r: &InstanceRecord) -> (i64, i64) {
        match self.ctx.catalog.get(&r.instance_type) {
            Some(t) => (
                i64::from(t.cpu_units()),
                t.memory_mib.saturating_sub(self.config.reserved_memory_mib) as i64,
            ),
            None => (0, 0),
        }
    }

    /// Idle instances: terminated once idle for their capacity provider's
    /// `scaleInAfter`.
    fn scale_in(
        &self,
        cluster: &Cluster,
        idle: &[(String, String)],
        now: f64,
        report: &mut TickReport,
    ) -> Result<(), EcsError> {
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let due: Vec<(String, f64)> = {
            let Ok(mut since) = self.idle_since.lock() else {
                return Ok(());
            };
            since.retain(|(c, id), _| c != &cluster_arn || idle.iter().any(|(i, _)| i == id));
            let mut due = vec![];
            for (id, cp) in idle {
                let first = *since
                    .entry((cluster_arn.clone(), id.clone()))
                    .or_insert(now);
                let Some(after) = self.scale_in_after(cp)? else {
                    continue;
                };
                if now - first >= after {
                    due.push((id.clone(), now - first));
                } else {
                    report.next_tick = Some(
                        report
                            .next_tick
                            .map_or(after - (now - first), |n: f64| n.min(after - (now - first))),
                    );
                }
            }
            due
        };
        for (id, idle_for) in due {
            // Still idle, in the same transaction that takes it out of placement.
            let deregistering = self.ctx.store.write(|tx| {
                let Some(r) = load_record(tx, &id)? else {
                    return Ok::<_, EcsError>(false);
                };
                if !agents::instance_tasks(tx, &r)?
                    .iter()
                    .all(crate::daemons::is_daemon_task)
                {
                    return Ok(false);
                }
                let Some(Versioned {
                    version,
                    value: mut ci,
                }) = tx.container_instance(&r.container_instance_arn)?
                else {
                    return Ok(false);
                };
                if ci.status.as_deref() != Some("ACTIVE") {
                    return Ok(false);
                }
                ci.status = Some("DEREGISTERING".into());
                ci.status_reason = Some(format!(
                    "Idle for {idle_for:.0} s (capacity provider scaleInAfter): scaling in."
                ));
                ci.version += 1;
                tx.put_container_instance(&r.cluster_arn, &ci, Expect::Version(version))?;
                Ok(true)
            })?;
            if let Ok(mut since) = self.idle_since.lock() {
                since.remove(&(cluster_arn.clone(), id.clone()));
            }
            if !deregistering {
                continue;
            }
            match self.provider.terminate(&id) {
                Ok(()) => {
                    agents::terminated(
                        &self.ctx,
                        &id,
                        &format!("Scaled in: the instance was idle for {idle_for:.0} s."),
                    )?;
                    tracing::info!(instance_id = id, idle_for, "scaled in an idle instance");
                    report.terminated.push(id);
                }
                Err(e) => {
                    tracing::warn!(
                        instance_id = id,
                        error = e,
                        "cannot terminate an idle instance"
                    );
                    self.ctx.store.write(|tx| {
                        let Some(r) = load_record(tx, &id)? else {
                            return Ok::<_, EcsError>(());
                        };
                        if let Some(Versioned {
                            version,
                            value: mut ci,
                        }) = tx.container_instance(&r.container_instance_arn)?
                        {
                            ci.status = Some("DEREGISTRATION_FAILED".into());
                            ci.status_reason =
                                Some(format!("Terminating the instance failed: {e}"));
                            ci.version += 1;
                            tx.put_container_instance(
                                &r.cluster_arn,
                                &ci,
                                Expect::Version(version),
                            )?;
                        }
                        Ok(())
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The lifecycle pass: drains due instances (lifetime, image, repair,
    /// spot) within each provider's budget and windows, and terminates the
    /// drained, the expired, the lost and the interrupted
    /// ([`crate::lifecycle`]).
    fn lifecycle(&self, cluster: &Cluster, report: &mut TickReport) -> Result<(), EcsError> {
        use crate::lifecycle::{self as lc, DrainKind};
        use berth_scheduler::lifecycle as pure;
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let now = self.ctx.now();
        let config = &self.config.lifecycle;
        // Per capacity provider: its instances, their records, and whether empty.
        type Member = (Arc<ContainerInstance>, Arc<InstanceRecord>, bool);
        let mark = self.ctx.store.change_mark().ok();
        let (fleets, current) = self.ctx.store.read(|tx| {
            let mut fleets: BTreeMap<String, Vec<Member>> = BTreeMap::new();
            for status in ["ACTIVE", "DRAINING"] {
                for ci in self.instances_at(tx, &cluster_arn, status, mark)? {
                    let Some(r) = self.record_at(
                        tx,
                        ci.value.ec2_instance_id.as_deref().unwrap_or(""),
                        mark,
                    )?
                    else {
                        continue;
                    };
                    // The counts the instance keeps (refresh_counts), not a read of its tasks.
                    let empty =
                        ci.value.running_tasks_count == 0 && ci.value.pending_tasks_count == 0;
                    fleets
                        .entry(r.capacity_provider.clone())
                        .or_default()
                        .push((ci.value, r, empty));
                }
            }
            Ok::<_, EcsError>((fleets, lc::image_version(tx)?))
        })?;
        for (cp_name, members) in fleets {
            let cp = self
                .ctx
                .store
                .read(|tx| Ok::<_, EcsError>(tx.capacity_provider(&cp_name)?))?;
            // autoRepairConfiguration: ENABLED unless the provider says DISABLED.
            let auto_repair = cp
                .as_ref()
                .and_then(|v| v.value.managed_instances_provider.as_ref())
                .and_then(|m| m.auto_repair_configuration.as_ref())
                .and_then(|a| a.actions_status)
                != Some(AutoRepairActionsStatus::Disabled);
            let policy = match cp.map(|v| lc::policy_for(&v.value, config)) {
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    tracing::warn!(
                        capacity_provider = cp_name,
                        error = e,
                        "lifecycle tags ignored"
                    );
                    pure::Policy::new(config.drain_age, config.max_lifetime)
                }
                None => pure::Policy::new(config.drain_age, config.max_lifetime),
            };
            let replace_before = self.ctx.store.read(|tx| lc::replace_before(tx, &cp_name))?;
            let mut fleet = vec![];
            let mut retire: Vec<(String, String)> = vec![];
            for (ci, r, empty) in &members {
                let draining = ci.status.as_deref() == Some("DRAINING");
                let kind = match (&r.drain, draining) {
                    (Some(d), true) => Some(d.kind),
                    (None, true) => Some(DrainKind::User),
                    (_, false) => None,
                };
                // Lost: the agent has been away past the timeout.
                if r.disconnected_at
                    .is_some_and(|at| now - at >= config.agent_timeout)
                    && !ci.agent_connected
                {
                    retire.push((
                        r.instance_id.clone(),
                        format!(
                            "Instance presumed lost: its agent has been unreachable for {:.0} s.",
                            config.agent_timeout
                        ),
                    ));
                    continue;
                }
                match kind {
                    Some(DrainKind::User) | None => {}
                    Some(DrainKind::Spot) => {
                        let notice_over = r
                            .interrupted_at
                            .is_some_and(|at| now - at >= lc::SPOT_NOTICE);
                        if *empty || notice_over {
                            retire.push((
                                r.instance_id.clone(),
                                "Spot interruption: the capacity was taken back.".into(),
                            ));
                            continue;
                        }
                    }
                    Some(k) if *empty => {
                        retire.push((
                            r.instance_id.clone(),
                            format!("Replaced: drained ({}).", k.as_str()),
                        ));
                        continue;
                    }
                    Some(_) => {}
                }
                let agent_lost = !ci.agent_connected && r.disconnected_at.is_some();
                // Preparing a planned drain counts as draining: against the
                // budget, and not due again.
                let preparing = r.preparing.as_ref().map(|p| p.kind);
                fleet.push(pure::Instance {
                    id: r.instance_id.clone(),
                    launched_at: r.launched_at,
                    draining: kind.or(preparing),
                    // An older image, or `berth fleet replace` since its launch.
                    outdated_image: lc::outdated(r, &current)
                        || replace_before.is_some_and(|t| r.launched_at < t),
                    impaired: auto_repair && (lc::impaired(ci) || agent_lost),
                    interrupted: r.interrupted_at.is_some(),
                });
            }
            let d = pure::decide(&policy, &fleet, now);
            if let Some(n) = d.next_in {
                report.next_tick = Some(report.next_tick.map_or(n, |m: f64| m.min(n)));
            }
            for id in &d.expire {
                retire.push((
                    id.clone(),
                    format!(
                        "Maximum lifetime reached ({:.0} s): the instance is terminated.",
                        policy.max_lifetime
                    ),
                ));
            }
            let planned = |k: &DrainKind| matches!(k, DrainKind::Lifetime | DrainKind::Image);
            for (id, kind) in &d.drain {
                if planned(kind) && config.prepare_timeout > 0.0 {
                    let replacements =
                        self.prepare_replacement(cluster, &cp_name, id, *kind, now)?;
                    if !replacements.is_empty() {
                        report.prepared.push((id.clone(), replacements));
                        // Due next: the replacements joining (a change the
                        // next tick sees), else the wait's end.
                        let left = config.prepare_timeout;
                        report.next_tick =
                            Some(report.next_tick.map_or(left, |n: f64| n.min(left)));
                        continue;
                    }
                }
                self.start_drain(id, *kind, now)?;
                report.drained.push((id.clone(), *kind));
                tracing::info!(instance_id = id, kind = kind.as_str(), "draining");
            }
            // Prepared drains whose replacements have joined (or that waited
            // long enough) begin.
            for (ci, r, _) in &members {
                let Some(p) = &r.preparing else { continue };
                if ci.status.as_deref() != Some("ACTIVE") || r.drain.is_some() {
                    continue;
                }
                if d.expire.contains(&r.instance_id) {
                    continue;
                }
                let waited = now - p.since;
                if !self.replacements_ready(r, p)? && waited < config.prepare_timeout {
                    // A replacement joining is a change the next tick sees
                    // (the server ticks at least every second); what is due
                    // here is the timeout.
                    let left = config.prepare_timeout - waited;
                    report.next_tick = Some(report.next_tick.map_or(left, |n: f64| n.min(left)));
                    continue;
                }
                if waited >= config.prepare_timeout {
                    tracing::warn!(
                        instance_id = r.instance_id,
                        "replacement capacity did not join in time; draining anyway"
                    );
                }
                self.start_drain(&r.instance_id, p.kind, now)?;
                if let Ok(mut told) = self.prefetched.lock() {
                    for id in &p.replacements {
                        told.remove(id);
                    }
                }
                report.drained.push((r.instance_id.clone(), p.kind));
                tracing::info!(
                    instance_id = r.instance_id,
                    kind = p.kind.as_str(),
                    "draining"
                );
            }
            for (id, why) in retire {
                if let Some(stopped) = self.retire(&id, &why)? {
                    report.retired_tasks += stopped;
                    report.retired.push((id, why));
                }
            }
            // ACTIVE again: whatever drain there was is cancelled.
            let cancelled: Vec<String> = members
                .iter()
                .filter(|(ci, r, _)| ci.status.as_deref() == Some("ACTIVE") && r.drain.is_some())
                .map(|(_, r, _)| r.instance_id.clone())
                .collect();
            for id in cancelled {
                self.ctx.store.write(|tx| {
                    if let Some(mut r) = load_record(tx, &id)? {
                        r.drain = None;
                        save_record(tx, &r)?;
                    }
                    Ok::<_, EcsError>(())
                })?;
            }
        }
        Ok(())
    }

    /// Sets an instance DRAINING for `kind`. A spot drain also stops every
    /// task on it at once (stop code `SpotInterruption`): the capacity goes
    /// within the notice, and services start replacements elsewhere.
    fn start_drain(
        &self,
        instance_id: &str,
        kind: crate::lifecycle::DrainKind,
        now: f64,
    ) -> Result<(), EcsError> {
        use crate::lifecycle::{self as lc, DrainKind, DrainState};
        self.ctx.store.write(|tx| {
            let Some(mut r) = load_record(tx, instance_id)? else {
                return Ok::<_, EcsError>(());
            };
            let Some(Versioned {
                version,
                value: mut ci,
            }) = tx.container_instance(&r.container_instance_arn)?
            else {
                return Ok(());
            };
            ci.status = Some("DRAINING".into());
            ci.status_reason = Some(lc::reason(kind).into());
            ci.version += 1;
            tx.put_container_instance(&r.cluster_arn, &ci, Expect::Version(version))?;
            r.drain = Some(DrainState { kind, since: now });
            r.preparing = None;
            save_record(tx, &r)?;
            if kind == DrainKind::Spot {
                for t in agents::instance_tasks(tx, &r)? {
                    crate::tasks::request_stop(
                        tx,
                        t.task_arn.as_deref().unwrap_or(""),
                        TaskStopCode::SpotInterruption,
                        "Spot interruption: the instance's capacity is being taken back.".into(),
                        now,
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Launches the capacity that the service tasks of `instance_id` will
    /// move to, before it drains, and records it on the instance
    /// ([`crate::lifecycle::Preparing`]). Answers the instances launched:
    /// none when nothing needs moving or nothing could be launched (then the
    /// drain starts at once and provisioning follows as usual).
    fn prepare_replacement(
        &self,
        cluster: &Cluster,
        cp_name: &str,
        instance_id: &str,
        kind: crate::lifecycle::DrainKind,
        now: f64,
    ) -> Result<Vec<String>, EcsError> {
        let waiting = self.ctx.store.read(|tx| {
            let Some(r) = self.record(tx, instance_id)? else {
                return Ok::<_, EcsError>(vec![]);
            };
            let mut tds = TdCache::default();
            let mut out = vec![];
            for t in agents::instance_tasks(tx, &r)? {
                // Service tasks move; daemons stop with the instance, and
                // standalone tasks run on until the deadline.
                let moves = t.desired_status.as_deref() == Some("RUNNING")
                    && t.group
                        .as_deref()
                        .is_some_and(|g| g.starts_with("service:"));
                if !moves {
                    continue;
                }
                let arn = t.task_arn.clone().unwrap_or_default();
                let td = tds.get(tx, t.task_definition_arn.as_deref())?;
                let requested = placing::requested(tx, &arn)?;
                out.push(Waiting {
                    task_arn: arn,
                    demand: placing::demand(&t, td.as_deref(), &requested),
                    architecture: architecture_of(td.as_deref()),
                });
            }
            Ok(out)
        })?;
        if waiting.is_empty() {
            return Ok(vec![]);
        }
        let daemons = self
            .reserve
            .lock()
            .ok()
            .and_then(|r| r.get(cp_name).copied())
            .unwrap_or((0, 0));
        let launched = self.launch_for(cluster, cp_name, &waiting, daemons, now)?;
        // The running tasks are not pending: their replacements are placed
        // by the services' new tasks, not pinned by these plans.
        if let Ok(mut p) = self.planned.lock() {
            for w in &waiting {
                p.remove(&w.task_arn);
            }
        }
        if launched.is_empty() {
            return Ok(launched);
        }
        self.ctx.store.write(|tx| {
            if let Some(mut r) = load_record(tx, instance_id)? {
                r.preparing = Some(crate::lifecycle::Preparing {
                    kind,
                    since: now,
                    replacements: launched.clone(),
                });
                save_record(tx, &r)?;
            }
            Ok::<_, EcsError>(())
        })?;
        tracing::info!(
            instance_id,
            kind = kind.as_str(),
            replacements = ?launched,
            "replacement capacity launched ahead of the drain"
        );
        Ok(launched)
    }

    /// Whether every replacement of a prepared drain has joined (ACTIVE, its
    /// agent connected) or is gone. Each one that has joined is told, once,
    /// to pull the images of the tasks that will move to it.
    fn replacements_ready(
        &self,
        r: &InstanceRecord,
        p: &crate::lifecycle::Preparing,
    ) -> Result<bool, EcsError> {
        let (joined, waiting, images) = self.ctx.store.read(|tx| {
            let mut joined = vec![];
            let mut waiting = false;
            for id in &p.replacements {
                let Some(rr) = self.record(tx, id)? else {
                    continue;
                };
                let ci = tx.container_instance(&rr.container_instance_arn)?;
                match ci.map(|v| v.value) {
                    Some(ci) if ci.status.as_deref() == Some("ACTIVE") && ci.agent_connected => {
                        joined.push(id.clone())
                    }
                    Some(ci) if ci.status.as_deref() == Some("INACTIVE") => {}
                    Some(_) => waiting = true,
                    None => waiting = true,
                }
            }
            let mut images = BTreeSet::new();
            if !joined.is_empty() {
                for spec in agents::desired(tx, r)? {
                    images.extend(spec.containers.iter().filter_map(|c| c.image.clone()));
                }
            }
            Ok::<_, EcsError>((joined, waiting, images))
        })?;
        if let Ok(mut told) = self.prefetched.lock() {
            for id in joined {
                if told.insert(id.clone()) && !images.is_empty() {
                    self.link.send(
                        &id,
                        ServerMessage::Prefetch {
                            images: images.iter().cloned().collect(),
                        },
                    );
                }
            }
        }
        Ok(!waiting)
    }

    /// A provider's spot interruption notice for an instance: it drains at
    /// once, its tasks stop (`SpotInterruption`) and replacements are placed
    /// elsewhere; it is terminated when empty or when the notice runs out.
    pub fn spot_interruption(&self, instance_id: &str) -> Result<(), EcsError> {
        let now = self.ctx.now();
        self.ctx.store.write(|tx| {
            if let Some(mut r) = load_record(tx, instance_id)? {
                if r.interrupted_at.is_none() {
                    r.interrupted_at = Some(now);
                    save_record(tx, &r)?;
                }
            }
            Ok::<_, EcsError>(())
        })?;
        if let Ok(Some(r)) = self.ctx.store.read(|tx| load_record(tx, instance_id)) {
            if let Ok(mut u) = self.unavailable.lock() {
                u.insert(
                    r.instance_type.clone(),
                    now + self.config.unavailable_for.as_secs_f64(),
                );
            }
        }
        self.start_drain(instance_id, crate::lifecycle::DrainKind::Spot, now)
    }

    /// Deregisters and terminates an instance for the lifecycle; whatever
    /// still runs there is STOPPED with `TerminationNotice`. How many tasks
    /// were; `None` when it was already gone.
    fn retire(&self, instance_id: &str, why: &str) -> Result<Option<usize>, EcsError> {
        let deregistering = self.ctx.store.write(|tx| {
            let Some(r) = load_record(tx, instance_id)? else {
                return Ok::<_, EcsError>(false);
            };
            let Some(Versioned {
                version,
                value: mut ci,
            }) = tx.container_instance(&r.container_instance_arn)?
            else {
                return Ok(false);
            };
            if !matches!(ci.status.as_deref(), Some("ACTIVE") | Some("DRAINING")) {
                return Ok(false);
            }
            ci.status = Some("DEREGISTERING".into());
            ci.status_reason = Some(why.to_string());
            ci.version += 1;
            tx.put_container_instance(&r.cluster_arn, &ci, Expect::Version(version))?;
            Ok(true)
        })?;
        if !deregistering {
            return Ok(None);
        }
        if let Err(e) = self.provider.terminate(instance_id) {
            tracing::warn!(instance_id, error = e, "cannot terminate an instance");
        }
        let stopped = agents::terminated(&self.ctx, instance_id, why)?;
        tracing::info!(instance_id, why, "instance retired");
        Ok(Some(stopped))
    }

    /// A capacity provider's `scaleInAfter` in seconds; `None` when scale-in is off (-1).
    fn scale_in_after(&self, cp_name: &str) -> Result<Option<f64>, EcsError> {
        let cp = self
            .ctx
            .store
            .read(|tx| Ok::<_, EcsError>(tx.capacity_provider(cp_name)?))?;
        let value = cp.and_then(|v| {
            v.value
                .managed_instances_provider?
                .infrastructure_optimization?
                .scale_in_after
        });
        Ok(match value {
            None => Some(self.config.default_scale_in_after.as_secs_f64()),
            Some(v) if v < 0 => None,
            Some(v) => Some(f64::from(v)),
        })
    }

    /// Launches instances for the tasks that fit nowhere, once their batch is
    /// due: no new task for [`SchedulerConfig::batch_idle`], or the oldest has
    /// waited [`SchedulerConfig::batch_max`].
    fn provision(
        &self,
        cluster: &Cluster,
        waiting: BTreeMap<String, Vec<Waiting>>,
        reserve: &BTreeMap<String, (u32, u64)>,
        now: f64,
        report: &mut TickReport,
    ) -> Result<(), EcsError> {
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let idle = self.config.batch_idle.as_secs_f64();
        let max = self.config.batch_max.as_secs_f64();
        let mut due = vec![];
        if let Ok(mut batches) = self.batches.lock() {
            batches.retain(|(c, cp), _| c != &cluster_arn || waiting.contains_key(cp));
            for (cp, tasks) in waiting {
                let b = batches
                    .entry((cluster_arn.clone(), cp.clone()))
                    .or_insert_with(|| Batch {
                        first: now,
                        grew: now,
                        arns: BTreeSet::new(),
                    });
                for t in &tasks {
                    if b.arns.insert(t.task_arn.clone()) {
                        b.grew = now;
                    }
                }
                b.arns.retain(|a| tasks.iter().any(|t| &t.task_arn == a));
                let left = (idle - (now - b.grew)).min(max - (now - b.first));
                if left <= 0.0 {
                    batches.remove(&(cluster_arn.clone(), cp.clone()));
                    due.push((cp, tasks));
                } else {
                    report.next_tick = Some(report.next_tick.map_or(left, |n: f64| n.min(left)));
                }
            }
        }
        for (cp, tasks) in due {
            let daemons = reserve.get(&cp).copied().unwrap_or((0, 0));
            for id in self.launch_for(cluster, &cp, &tasks, daemons, now)? {
                report.launched.push(id);
            }
        }
        Ok(())
    }

    /// Plans and launches instances for tasks that fit nowhere: berth's
    /// planner ([`berth_scheduler::plan`]) over the capacity provider's
    /// instance types, once per class of placement constraints (a `memberOf`
    /// narrows the types and zones; `distinctInstance` gets an instance per
    /// task). Types whose launch failed lately are left out.
    fn launch_for(
        &self,
        cluster: &Cluster,
        cp_name: &str,
        tasks: &[Waiting],
        (daemon_cpu, daemon_mem): (u32, u64),
        now: f64,
    ) -> Result<Vec<String>, EcsError> {
        let cp = self
            .ctx
            .store
            .read(|tx| Ok::<_, EcsError>(tx.capacity_provider(cp_name)?))?;
        let Some(cp) = cp.map(|v| v.value) else {
            return Ok(vec![]);
        };
        let template = cp
            .managed_instances_provider
            .as_ref()
            .and_then(|m| m.instance_launch_template.clone())
            .unwrap_or_default();
        let requirements = template
            .instance_requirements
            .clone()
            .unwrap_or_else(default_requirements);
        let capacity = match template.capacity_option_type {
            Some(CapacityOptionType::Spot) => CapacityOption::Spot,
            _ => CapacityOption::OnDemand,
        };
        let subnets = template
            .network_configuration
            .as_ref()
            .and_then(|n| n.subnets.clone())
            .unwrap_or_default();
        let zones: Vec<(String, String)> = subnets
            .iter()
            .map(|s| (self.provider.availability_zone(s), s.clone()))
            .collect();
        let region = self.ctx.arns.region.clone();
        let unavailable: BTreeSet<String> = match self.unavailable.lock() {
            Ok(mut u) => {
                u.retain(|_, until| *until > now);
                u.keys().cloned().collect()
            }
            Err(_) => BTreeSet::new(),
        };
        // Tasks by placement class: the same memberOf expressions and distinctInstance.
        let mut classes: BTreeMap<(Vec<String>, bool), Vec<&Waiting>> = BTreeMap::new();
        for w in tasks {
            if let Some(host) = self.config.architecture {
                if host.ecs() != Some(w.architecture) {
                    self.warn_once(
                        &w.task_arn,
                        &format!(
                            "the task needs {} and this provider's instances run {}",
                            w.architecture.as_str(),
                            host.as_str()
                        ),
                    );
                    continue;
                }
            }
            let mut exprs = vec![];
            let mut distinct = false;
            for c in &w.demand.constraints {
                match c {
                    Constraint::MemberOf(e) => exprs.push(e.source().to_string()),
                    Constraint::DistinctInstance => distinct = true,
                }
            }
            exprs.sort();
            classes.entry((exprs, distinct)).or_default().push(w);
        }
        let mut launched = vec![];
        for ((_, distinct), members) in classes {
            let exprs: Vec<&berth_scheduler::placement::Expr> = members[0]
                .demand
                .constraints
                .iter()
                .filter_map(|c| match c {
                    Constraint::MemberOf(e) => Some(e),
                    Constraint::DistinctInstance => None,
                })
                .collect();
            // The (type, zone) pairs a new instance could have that satisfy every expression.
            let mut excluded = unavailable.clone();
            let mut class_zones: Vec<(String, String)> = zones.clone();
            if !exprs.is_empty() {
                let options = berth_catalog::MatchOptions {
                    architecture: self.config.architecture,
                    ..Default::default()
                };
                let types = self
                    .ctx
                    .catalog
                    .matching_with(&region, &requirements, &options)
                    .unwrap_or_default();
                let zone_names: Vec<String> = if zones.is_empty() {
                    vec![String::new()]
                } else {
                    zones.iter().map(|(z, _)| z.clone()).collect()
                };
                let mut ok_types = BTreeSet::new();
                let mut ok_zones = BTreeSet::new();
                for t in &types {
                    for z in &zone_names {
                        let facts = NewInstance {
                            instance_type: t,
                            zone: z,
                        };
                        if exprs.iter().all(|e| e.matches(&facts)) {
                            ok_types.insert(t.name.clone());
                            ok_zones.insert(z.clone());
                        }
                    }
                }
                if ok_types.is_empty() {
                    for w in &members {
                        self.warn_once(
                            &w.task_arn,
                            "no instance type of the capacity provider satisfies its memberOf placement constraints",
                        );
                    }
                    continue;
                }
                excluded.extend(
                    types
                        .iter()
                        .map(|t| t.name.clone())
                        .filter(|n| !ok_types.contains(n)),
                );
                class_zones.retain(|(z, _)| ok_zones.contains(z));
            }
            // Identical tasks form a group.
            let mut groups: Vec<TaskGroup> = vec![];
            for w in &members {
                let d = &w.demand;
                match groups.iter_mut().find(|g| {
                    g.cpu == d.cpu
                        && g.memory_mib == u64::from(d.memory)
                        && g.gpu == d.gpus
                        && g.architecture == w.architecture
                }) {
                    Some(g) => g.count += 1,
                    None => groups.push(TaskGroup {
                        name: format!("g{}", groups.len()),
                        cpu: d.cpu,
                        memory_mib: u64::from(d.memory),
                        gpu: d.gpus,
                        count: 1,
                        architecture: w.architecture,
                    }),
                }
            }
            // distinctInstance: one task per instance, so plan one and launch it as often.
            let rounds: Vec<(Vec<TaskGroup>, u32)> = if distinct {
                groups
                    .into_iter()
                    .map(|g| {
                        (
                            vec![TaskGroup {
                                count: 1,
                                ..g.clone()
                            }],
                            g.count,
                        )
                    })
                    .collect()
            } else {
                vec![(groups, 1)]
            };
            for (groups, copies) in rounds {
                let groups_of_round = groups.clone();
                let mut request = PlanRequest::new(region.clone(), requirements.clone(), groups);
                request.capacity = capacity;
                // What the instance keeps for itself and for its daemons.
                request.reservation = Reservation::Fixed {
                    cpu_units: daemon_cpu,
                    memory_mib: self.config.reserved_memory_mib + daemon_mem,
                };
                request.unavailable = excluded.clone();
                request.availability_zones = class_zones.iter().map(|(z, _)| z.clone()).collect();
                let plan = match self.plans.plan(self.ctx.catalog, &request) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(capacity_provider = cp_name, error = %e, "cannot plan capacity");
                        continue;
                    }
                };
                for u in &plan.unplaceable {
                    tracing::warn!(
                        capacity_provider = cp_name,
                        tasks = u.count,
                        reason = u.reason,
                        "no instance type of the capacity provider can hold these tasks"
                    );
                }
                tracing::info!(
                    capacity_provider = cp_name,
                    instances = plan.instances.len() * copies as usize,
                    hourly_cost = plan.hourly_cost * f64::from(copies),
                    lower_bound = plan.lower_bound * f64::from(copies),
                    "planned capacity"
                );
                // Which waiting tasks each planned instance is for, by group.
                let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for w in &members {
                    let d = &w.demand;
                    if let Some(g) = groups_of_round.iter().find(|g| {
                        g.cpu == d.cpu
                            && g.memory_mib == u64::from(d.memory)
                            && g.gpu == d.gpus
                            && g.architecture == w.architecture
                    }) {
                        by_group
                            .entry(g.name.clone())
                            .or_default()
                            .push(w.task_arn.clone());
                    }
                }
                for i in 0..copies as usize {
                    for (k, inst) in plan.instances.iter().enumerate() {
                        // The planned zone; copies (distinctInstance) turn
                        // round the zones from there.
                        let base = inst
                            .availability_zone
                            .as_ref()
                            .and_then(|z| class_zones.iter().position(|(zone, _)| zone == z))
                            .unwrap_or(k);
                        let n = class_zones.len().max(1);
                        let subnet = class_zones
                            .get((base + i) % n)
                            .map(|(_, s)| s.clone())
                            .or_else(|| subnets.first().cloned())
                            .unwrap_or_default();
                        match self.launch(cluster, cp_name, &inst.instance_type, &subnet) {
                            Ok(id) => {
                                if let Ok(mut p) = self.planned.lock() {
                                    for (g, n) in &inst.tasks {
                                        let Some(arns) = by_group.get_mut(g) else {
                                            continue;
                                        };
                                        let take = (*n as usize).min(arns.len());
                                        for arn in arns.drain(..take) {
                                            p.insert(arn, id.clone());
                                        }
                                    }
                                }
                                launched.push(id)
                            }
                            Err(e) => {
                                // That offering is out for a while; the next batch plans without it.
                                tracing::warn!(
                                    instance_type = inst.instance_type,
                                    error = %e.message,
                                    "marking the instance type unavailable"
                                );
                                if let Ok(mut u) = self.unavailable.lock() {
                                    u.insert(
                                        inst.instance_type.clone(),
                                        now + self.config.unavailable_for.as_secs_f64(),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(launched)
    }

    /// A provider reports that an offering was interrupted (a spot
    /// instance reclaimed) or ran out of capacity: plans leave the type out
    /// for [`SchedulerConfig::unavailable_for`].
    pub fn offering_unavailable(&self, instance_type: &str) {
        let until = self.ctx.now() + self.config.unavailable_for.as_secs_f64();
        if let Ok(mut u) = self.unavailable.lock() {
            u.insert(instance_type.to_string(), until);
        }
        tracing::info!(instance_type, "offering unavailable for a while");
    }

    /// The instance planned for each task, if any.
    fn planned_instances(&self, tasks: &[Versioned<Task>]) -> Vec<Option<String>> {
        tasks
            .iter()
            .map(|v| planned_for(&self.planned, v.value.task_arn.as_deref().unwrap_or("")))
            .collect()
    }

    /// Logs why a task cannot get capacity, once per task.
    fn warn_once(&self, task_arn: &str, why: &str) {
        if let Ok(mut warned) = self.warned.lock() {
            if warned.insert(task_arn.to_string()) {
                tracing::warn!(task = task_arn, "the task waits in PROVISIONING: {why}");
            }
        }
    }

    fn launch(
        &self,
        cluster: &Cluster,
        cp: &str,
        instance_type: &str,
        subnet: &str,
    ) -> Result<String, EcsError> {
        let Some(t) = self.ctx.catalog.get(instance_type) else {
            return Err(EcsError::server(format!(
                "{instance_type} is not in the catalog"
            )));
        };
        let instance_id = self.provider.new_instance_id();
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let cluster_name = cluster.cluster_name.clone().unwrap_or_default();
        let ci_id = uuid::Uuid::new_v4().simple().to_string();
        let ci_arn = self.ctx.arns.container_instance(&cluster_name, &ci_id);
        let az = self.provider.availability_zone(subnet);
        let join_token = new_secret();
        let now = self.ctx.now();
        let image_version = self
            .ctx
            .store
            .read(|tx| crate::lifecycle::image_version(tx))?;
        let record = InstanceRecord {
            instance_id: instance_id.clone(),
            cluster_arn: cluster_arn.clone(),
            container_instance_arn: ci_arn.clone(),
            capacity_provider: cp.to_string(),
            instance_type: instance_type.to_string(),
            availability_zone: az.clone(),
            join_token_digest: Some(crate::digest(&join_token)),
            credential_digest: None,
            generation: 0,
            launched_at: now,
            image_version: Some(image_version.clone()),
            drain: None,
            disconnected_at: None,
            interrupted_at: None,
            preparing: None,
        };
        let ci = ContainerInstance {
            container_instance_arn: Some(ci_arn),
            ec2_instance_id: Some(instance_id.clone()),
            capacity_provider_name: Some(cp.to_string()),
            version: 1,
            status: Some("REGISTERING".into()),
            agent_connected: false,
            attributes: Some(vec![
                Attribute {
                    name: Some("ecs.instance-type".into()),
                    value: Some(instance_type.into()),
                    ..Default::default()
                },
                Attribute {
                    name: Some("ecs.availability-zone".into()),
                    value: Some(az.clone()),
                    ..Default::default()
                },
                Attribute {
                    name: Some(crate::lifecycle::IMAGE_VERSION_ATTRIBUTE.into()),
                    value: Some(image_version.clone()),
                    ..Default::default()
                },
            ]),
            registered_resources: Some(vec![]),
            remaining_resources: Some(vec![]),
            tags: Some(vec![]),
            ..Default::default()
        };
        self.ctx.store.write(|tx| {
            save_record(tx, &record)?;
            tx.put_container_instance(&cluster_arn, &ci, Expect::Absent)?;
            crate::metering::instance_launched(&self.ctx, tx, &record)?;
            Ok::<_, EcsError>(())
        })?;
        let mut args = self.config.agent_args.clone();
        args.extend([
            "agent".to_string(),
            "--server".into(),
            self.config.server_url.clone(),
            "--instance-id".into(),
            instance_id.clone(),
            "--state-dir".into(),
            self.config
                .state_root
                .join(&instance_id)
                .display()
                .to_string(),
            "--instance-type".into(),
            instance_type.to_string(),
            "--availability-zone".into(),
            az.clone(),
            "--cpu".into(),
            t.cpu_units().to_string(),
            "--memory".into(),
            t.memory_mib
                .saturating_sub(self.config.reserved_memory_mib)
                .to_string(),
            "--gpus".into(),
            t.whole_gpus().to_string(),
        ]);
        let spec = LaunchRequest {
            instance_id: instance_id.clone(),
            instance_type: instance_type.to_string(),
            vcpus: t.vcpus,
            memory_mib: t.memory_mib,
            gpus: t.whole_gpus(),
            subnet: subnet.to_string(),
            now,
            agent_program: self.config.agent_program.clone(),
            agent_args: args,
            agent_env: vec![("BERTH_JOIN_TOKEN".into(), join_token)],
        };
        if let Err(e) = self.provider.launch(&spec) {
            tracing::warn!(instance_id, instance_type, error = %e, "launch failed");
            self.ctx.store.write(|tx| {
                if let Some(Versioned {
                    version,
                    value: mut ci,
                }) = tx.container_instance(&record.container_instance_arn)?
                {
                    ci.status = Some("REGISTRATION_FAILED".into());
                    ci.status_reason = Some(e.to_string());
                    ci.version += 1;
                    tx.put_container_instance(&cluster_arn, &ci, Expect::Version(version))?;
                }
                crate::metering::instance_voided(tx, &record.instance_id)?;
                Ok::<_, EcsError>(())
            })?;
            return Err(EcsError::server(format!(
                "launching {instance_type} failed: {e}"
            )));
        }
        tracing::info!(
            instance_id,
            instance_type,
            availability_zone = az,
            "launched instance"
        );
        Ok(instance_id)
    }

    /// Sends an instance its desired set, with a new generation, when it
    /// differs from what it was last sent.
    ///
    /// Generations only have to grow along one connection (an agent starts
    /// counting again on each): the hello stores and sends one, and each push
    /// after it takes the next, counted in memory, so a push costs no write.
    pub fn push_if_changed(&self, instance_id: &str) -> Result<(), EcsError> {
        self.push(instance_id).map(|_| ())
    }

    /// [`Self::push_if_changed`]; answers whether the instance's set is
    /// settled: unchanged, or sent.
    fn push(&self, instance_id: &str) -> Result<bool, EcsError> {
        // The set's tasks and their versions first: while none changed, the
        // set is what was sent, and building it (every task's spec) is
        // skipped. A set depends on nothing else that changes: a task's
        // definition never does, its address comes with a write of the task.
        let current = self.ctx.store.read(|tx| {
            let Some(r) = self.record(tx, instance_id)? else {
                return Ok::<_, EcsError>(None);
            };
            Ok(Some((agents::desired_versions(tx, &r)?, r)))
        })?;
        let Some((versions, record)) = current else {
            // Nothing to send to an instance berth does not know.
            return Ok(true);
        };
        self.push_versions(&record, versions)
    }

    /// [`Self::push`] of an instance whose set's tasks and versions
    /// ([`agents::desired_versions`]) are `versions`.
    fn push_versions(
        &self,
        record: &InstanceRecord,
        versions: Vec<(String, i64)>,
    ) -> Result<bool, EcsError> {
        let instance_id = record.instance_id.as_str();
        let unchanged = self.sent.lock().is_ok_and(|sent| {
            sent.get(instance_id)
                .is_some_and(|last| last.tasks == versions)
        });
        if unchanged {
            return Ok(true);
        }
        let tasks = self.ctx.store.read(|tx| {
            // The tasks listed, as decoded before where their versions are
            // the same (a read transaction sees only what is committed);
            // the set is read afresh where the listing is not what this
            // read sees, and for an interrupted instance (its stopping
            // tasks are in its set too).
            if record.interrupted_at.is_none() {
                let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
                let tick = known.tick;
                let mut tasks = Vec::with_capacity(versions.len());
                for (arn, version) in &versions {
                    match known_task(&mut known, tx, tick, arn, *version)? {
                        Some(t) => tasks.push(t),
                        None => break,
                    }
                }
                drop(known);
                if tasks.len() == versions.len() {
                    return agents::desired_of(tx, &tasks);
                }
            }
            agents::desired(tx, record)
        })?;
        let fingerprint = serde_json::to_string(&tasks).unwrap_or_default();
        let Ok(mut sent) = self.sent.lock() else {
            return Ok(false);
        };
        let last = sent.get_mut(instance_id);
        if let Some(last) = last {
            if last.fingerprint == fingerprint {
                // Tasks changed (a report), the set did not.
                last.tasks = versions;
                return Ok(true);
            }
        }
        let last = sent.get(instance_id);
        let generation =
            last.map_or(record.generation, |s| s.generation.max(record.generation)) + 1;
        if !self
            .link
            .send(instance_id, ServerMessage::Desired { generation, tasks })
        {
            return Ok(false);
        }
        sent.insert(
            instance_id.to_string(),
            Sent {
                tasks: versions,
                fingerprint,
                generation,
            },
        );
        Ok(true)
    }
}

/// A task at `version`: as a tick decoded it, else read (and kept) when the
/// transaction sees it at that version; `None` when it does not. Called
/// before any write in the transaction, so what is kept is committed.
fn known_task(
    known: &mut KnownInstances,
    tx: &dyn Tx,
    tick: u64,
    arn: &str,
    version: i64,
) -> Result<Option<Arc<Task>>, EcsError> {
    if let Some((seen, _, t)) = known.tasks.get_mut(arn).filter(|(_, v, _)| *v == version) {
        *seen = tick;
        return Ok(Some(t.clone()));
    }
    match tx.task(arn)? {
        Some(v) if v.version == version => {
            let t = Arc::new(v.value);
            known
                .tasks
                .insert(arn.to_string(), (tick, version, t.clone()));
            Ok(Some(t))
        }
        _ => Ok(None),
    }
}

/// Placed tasks by container instance ARN, in their listing's order (which
/// is by instance: each instance's tasks are one run of the listing).
fn by_instance(placed: &[PlacedTask]) -> HashMap<&str, &[PlacedTask]> {
    placed
        .chunk_by(|a, b| a.container_instance_arn == b.container_instance_arn)
        .filter_map(|run| Some((run.first()?.container_instance_arn.as_str(), run)))
        .collect()
}

/// Whether any task waits for placement: PROVISIONING, desired RUNNING (a
/// read of versions; [`pending_tasks`] reads the tasks).
fn has_pending_tasks(tx: &dyn Tx, cluster_arn: &str) -> Result<bool, EcsError> {
    let filter = pending_filter(cluster_arn);
    Ok(!tx.task_versions(&filter, None, 1)?.items.is_empty())
}

/// Tasks waiting for placement: PROVISIONING, desired RUNNING.
fn pending_filter(cluster_arn: &str) -> TaskFilter {
    TaskFilter {
        cluster_arn: cluster_arn.to_string(),
        desired_status: Some("RUNNING".into()),
        last_status: Some("PROVISIONING".into()),
        ..Default::default()
    }
}

fn pending_tasks(tx: &dyn Tx, cluster_arn: &str) -> Result<Vec<Versioned<Task>>, EcsError> {
    let filter = pending_filter(cluster_arn);
    let mut out: Vec<Versioned<Task>> = berth_store::all(|a, n| tx.tasks(&filter, a, n))?
        .into_iter()
        .filter(|t| t.value.container_instance_arn.is_none())
        .collect();
    out.sort_by(|a, b| {
        a.value
            .created_at
            .unwrap_or(0.0)
            .total_cmp(&b.value.created_at.unwrap_or(0.0))
    });
    Ok(out)
}

//! The engine: the real scheduler (placement, the cost planner,
//! provisioning, scale-in, services, the lifecycle) over an in-memory store
//! and a [`ManualClock`], launching through a [`SimProvider`], with
//! simulated agents that join, say hello and act on their desired sets by
//! the same calls the server's agent gateway makes
//! ([`agents::admit`], [`agents::hello`], [`agents::report`],
//! [`agents::disconnected`]).
//!
//! # Time
//!
//! Virtual time moves in steps, each one tick of the scheduler. A step
//! jumps to the next thing that is due: a scenario event, an instance
//! finishing its boot, a standalone task's end, an agent coming back, a
//! spot notice running out, an away agent's timeout, or the scheduler's own
//! `next_tick` (a batch of pending tasks to plan, an idle instance to scale
//! in, the next lifecycle drain or deadline). Two bounds:
//!
//! * **floor** ([`Options::min_step`], 1 s): after a step in which
//!   something changed (the tick did anything, or an agent reported), the
//!   next step comes 1 s later, as the server ticks at least every second
//!   while there is work; a due time closer than that waits for it. A tick
//!   whose only work was retiring instances that held no task
//!   ([`berth_control::scheduler::TickReport::retired_tasks`] is 0) leaves
//!   nothing to follow up: the budget it frees was counted free in the same
//!   tick, so it asks for no step of its own.
//! * **cap** ([`Options::max_step`], 6 h): nothing is left unticked for
//!   longer. Every timed behaviour of the controllers this engine drives
//!   says when it is due — the scheduler's `next_tick` covers batches,
//!   scale-in, lifecycle drains and deadlines and maintenance windows; the
//!   engine's own timers cover boots, task ends, agents coming back, spot
//!   notices and agent timeouts — so the cap is a safety net, not the pace.
//!   The report counts the steps the cap alone brought and how many of
//!   them found work ([`crate::report::EngineReport::cap_steps_with_work`]);
//!   a tick costs the same whether or not it finds work, and on a large
//!   fleet a 5-minute cap would spend most of the wall time in ticks that
//!   find nothing (see BENCHMARKS.md).
//!
//! Times are whole milliseconds, as the clock and ECS timestamps keep them.
//!
//! # Agents
//!
//! An instance whose boot is over joins with its launch's join token and
//! says hello with the resources of its launch arguments (`--cpu`,
//! `--memory`, `--gpus`), as `berth agent` does. On a desired set it starts
//! what is new (reports RUNNING) and stops what was left out (reports
//! STOPPED), starting before stopping. A standalone task with `runFor`
//! exits 0 when due (`EssentialContainerExited`). A failed instance goes
//! silent (its connection drops: [`agents::disconnected`]) and the provider
//! terminates it; the lifecycle presumes it lost after the agent timeout. An
//! agent that comes back says hello again with the tasks it still runs (and
//! those that exited while it was away), so stale ones are stopped.
//!
//! # What the engine adds to the scheduler's tick
//!
//! * Desired sets for DRAINING instances ([`Options::push_to_draining`]):
//!   `Scheduler::tick` pushes only to ACTIVE instances, so the agent of a
//!   draining instance would never stop the tasks the services replaced
//!   there, and no drain would finish before the maximum lifetime. After
//!   each tick the engine calls the scheduler's own `push_if_changed` for
//!   them.
//! * A wake-up when a spot-interrupted instance type comes back into plans
//!   (`SchedulerConfig::unavailable_for` later): tasks only that type can
//!   hold wait until then, and the tick's `next_tick` does not say so (the
//!   server ticks every second anyway).
//!
//! # Ground truth
//!
//! Services' running counts are what the simulated instances actually run
//! (tasks on a failed instance are gone at once, tasks behind a lost
//! connection keep running), not what the store says; a task started on one
//! instance while another still runs it is counted in
//! [`crate::report::Invariants::tasks_running_twice`].

use crate::report::{self, Below, Day, Report, ServiceReport, TimelineEntry};
use crate::scenario::{EventKind, Scenario, ScenarioError};
use berth_control::agents::{self, Admission};
use berth_control::lifecycle::{self as lc, DrainKind, LifecycleConfig};
use berth_control::scheduler::{LaunchRequest, Launcher, Scheduler, SchedulerConfig, TickReport};
use berth_control::{AgentLink, Ctx};
use berth_model::arn::ArnContext;
use berth_model::clock::ManualClock;
use berth_model::ecs::{CapacityProvider, Operation};
use berth_model::EcsError;
use berth_protocol::{
    ContainerReport, DesiredStatus, Hello, Resources, ServerMessage, TaskReport, TaskSpec, VERSION,
};
use berth_providers::{
    AgentCommand, InstanceProvider, InstanceState, LaunchSpec, SimConfig, SimProvider,
};
use berth_scheduler::lifecycle::Policy;
use berth_store::Store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Milliseconds since the epoch.
type Ms = i64;

/// When the simulation starts: 2027-01-15 08:00 UTC (a Friday).
pub const START_EPOCH_MS: Ms = 1_800_000_000_000;

const CLUSTER: &str = "sim";
const CAPACITY_PROVIDER: &str = "sim-mi";
const PRINCIPAL: &str = "berth-sim";

/// How the engine steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Shortest step between two ticks, seconds (1).
    pub min_step: f64,
    /// Longest step between two ticks, seconds (6 h).
    pub max_step: f64,
    /// After each tick, push desired sets to connected DRAINING instances
    /// (true). `Scheduler::tick` pushes to ACTIVE instances only, so without
    /// this the agent of a draining instance never learns that its tasks are
    /// to stop, and no drain completes before the maximum lifetime. The
    /// push is the scheduler's own `push_if_changed`, which sends nothing
    /// when the set did not change: harmless once the scheduler does it.
    pub push_to_draining: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_step: 1.0,
            max_step: 6.0 * 3600.0,
            push_to_draining: true,
        }
    }
}

/// Why a simulation could not run.
#[derive(Debug)]
pub enum SimError {
    /// The scenario is wrong: the message names the field.
    Scenario(ScenarioError),
    /// The controllers failed.
    Engine(String),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Scenario(e) => e.fmt(f),
            SimError::Engine(e) => write!(f, "the simulation failed: {e}"),
        }
    }
}

impl std::error::Error for SimError {}

impl From<ScenarioError> for SimError {
    fn from(e: ScenarioError) -> Self {
        SimError::Scenario(e)
    }
}

impl From<EcsError> for SimError {
    fn from(e: EcsError) -> Self {
        SimError::Engine(e.message)
    }
}

fn engine(msg: impl Into<String>) -> SimError {
    SimError::Engine(msg.into())
}

fn secs(ms: Ms) -> f64 {
    ms as f64 / 1000.0
}

fn to_ms(s: f64) -> Ms {
    (s * 1000.0).round() as Ms
}

/// The scheduler's launches and terminations, through the sim provider.
struct SimLauncher {
    provider: Arc<SimProvider>,
    launches: Mutex<Vec<LaunchRequest>>,
    terminations: Mutex<Vec<String>>,
}

impl SimLauncher {
    fn take(&self) -> (Vec<LaunchRequest>, Vec<String>) {
        let l = self
            .launches
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        let t = self
            .terminations
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        (l, t)
    }
}

impl Launcher for SimLauncher {
    fn launch(&self, r: &LaunchRequest) -> Result<(), String> {
        let spec = LaunchSpec {
            instance_id: r.instance_id.clone(),
            instance_type: r.instance_type.clone(),
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            gpus: r.gpus,
            subnet: r.subnet.clone(),
            now: r.now,
            agent: AgentCommand {
                program: r.agent_program.clone(),
                args: r.agent_args.clone(),
                env: r.agent_env.clone(),
            },
        };
        self.provider.launch(&spec).map_err(|e| e.to_string())?;
        if let Ok(mut l) = self.launches.lock() {
            l.push(r.clone());
        }
        Ok(())
    }

    fn availability_zone(&self, subnet: &str) -> String {
        self.provider.availability_zone(subnet)
    }

    fn new_instance_id(&self) -> String {
        self.provider.new_instance_id()
    }

    fn terminate(&self, instance_id: &str) -> Result<(), String> {
        self.provider
            .terminate(instance_id)
            .map_err(|e| e.to_string())?;
        if let Ok(mut t) = self.terminations.lock() {
            t.push(instance_id.to_string());
        }
        Ok(())
    }
}

/// Desired sets for connected simulated agents.
#[derive(Default)]
struct SimLink {
    connected: Mutex<BTreeSet<String>>,
    inbox: Mutex<Vec<(String, Vec<TaskSpec>)>>,
}

impl SimLink {
    fn connect(&self, id: &str, on: bool) {
        if let Ok(mut c) = self.connected.lock() {
            if on {
                c.insert(id.to_string());
            } else {
                c.remove(id);
            }
        }
    }

    fn take(&self) -> Vec<(String, Vec<TaskSpec>)> {
        self.inbox
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

impl AgentLink for SimLink {
    fn send(&self, instance_id: &str, message: ServerMessage) -> bool {
        let connected = self
            .connected
            .lock()
            .map(|c| c.contains(instance_id))
            .unwrap_or(false);
        if !connected {
            return false;
        }
        if let ServerMessage::Desired { tasks, .. } = message {
            if let Ok(mut inbox) = self.inbox.lock() {
                inbox.push((instance_id.to_string(), tasks));
            }
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentState {
    /// Launched, not yet joined.
    Booting,
    Connected,
    /// Its connection is down; it still runs its tasks.
    Away,
    /// The instance is gone.
    Dead,
}

#[derive(Debug, Clone)]
struct RunningTask {
    family: String,
    containers: Vec<String>,
    started_at: Ms,
    ends_at: Option<Ms>,
}

#[derive(Debug, Clone)]
struct Inst {
    instance_type: String,
    launched_at: Ms,
    ended_at: Option<Ms>,
    image_version: String,
    token: String,
    credential: Option<String>,
    cpu: u32,
    memory_mib: u64,
    gpus: u32,
    zone: String,
    state: AgentState,
    /// ACTIVE or DRAINING in the store (joined, not yet deregistered).
    in_fleet: bool,
    draining: Option<DrainKind>,
    /// Counted against the disruption budget right now.
    budgeted: bool,
    tasks: BTreeMap<String, RunningTask>,
    /// Tasks that exited while the agent was away, to report on its return.
    exited: Vec<(String, Vec<String>, Ms, Ms)>,
}

#[derive(Debug, Clone)]
enum Timer {
    Event(usize),
    Standalone(usize),
    Boot(String),
    TaskEnd(String, String),
    Reconnect(String),
    SpotDeadline(String),
    /// Only a tick (an away agent's timeout).
    Wake,
}

#[derive(Debug, Clone)]
struct SvcStats {
    name: String,
    desired: u32,
    min_healthy_percent: u32,
    reached_at: Option<Ms>,
    min_running: Option<u32>,
    max_running: u32,
    min_fraction: Option<f64>,
    below_ms: Ms,
    below: Vec<Below>,
    open: Option<Below>,
    /// A scale event whose new count was not reached yet: (desired, since).
    awaiting: Option<(u32, Ms)>,
}

/// What one simulation step reports to the stepping.
struct Step {
    dirty: bool,
    next_tick: Option<f64>,
    /// Tasks waiting for capacity after the tick.
    waiting: usize,
}

/// Wall time by phase.
#[derive(Debug, Clone, Copy, Default)]
struct Spans {
    tick: Duration,
    agents: Duration,
    events: Duration,
}

/// A simulation in progress. [`Simulation::new`] sets the scene through the
/// ECS operations; [`Simulation::run`] plays it to the end.
pub struct Simulation {
    scenario: Scenario,
    options: Options,
    clock: Arc<ManualClock>,
    ctx: Arc<Ctx>,
    provider: Arc<SimProvider>,
    launcher: Arc<SimLauncher>,
    link: Arc<SimLink>,
    scheduler: Scheduler,
    policy: Policy,
    start: Ms,
    now: Ms,
    end: Ms,
    timers: BTreeMap<(Ms, u64), Timer>,
    seq: u64,
    instances: BTreeMap<String, Inst>,
    task_home: HashMap<String, String>,
    run_for: BTreeMap<String, Ms>,
    running: BTreeMap<String, u32>,
    image_version: String,
    /// Instances alive, by image version.
    images: BTreeMap<String, u64>,
    rollout_since: Option<(String, Ms)>,
    rng: StdRng,
    launched: u64,
    terminated: u64,
    alive: u64,
    peak_instances: u64,
    budgeted_draining: u64,
    max_concurrent_drains: u64,
    drains: BTreeMap<DrainKind, u64>,
    budget_exceeded: u64,
    tasks_running_twice: u64,
    services: Vec<SvcStats>,
    timeline: Vec<(Ms, String)>,
    days: Vec<Day>,
    steps: u64,
    cap_steps: u64,
    cap_steps_with_work: u64,
    spans: Spans,
}

fn call(ctx: &Ctx, op: &str, body: Value) -> Result<Value, EcsError> {
    let operation =
        Operation::parse(op).ok_or_else(|| EcsError::server(format!("unknown operation {op}")))?;
    let out = berth_server::ops::dispatch(ctx, operation, PRINCIPAL, body.to_string().as_bytes())?;
    serde_json::from_slice(&out).map_err(|e| EcsError::server(format!("{op}: {e}")))
}

/// A launch argument's value (`--cpu 2048`).
fn arg<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

fn running_report(arn: &str, t: &RunningTask) -> TaskReport {
    TaskReport {
        task_arn: arn.to_string(),
        last_status: "RUNNING".into(),
        started_at: Some(secs(t.started_at)),
        containers: t
            .containers
            .iter()
            .map(|n| ContainerReport {
                name: n.clone(),
                last_status: "RUNNING".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A task that stopped: exit 0 of its essential container (it ended), else
/// 143 (stopped by SIGTERM because the server asked).
fn stopped_report(
    arn: &str,
    containers: &[String],
    started_at: Ms,
    at: Ms,
    ended: bool,
) -> TaskReport {
    TaskReport {
        task_arn: arn.to_string(),
        last_status: "STOPPED".into(),
        started_at: Some(secs(started_at)),
        execution_stopped_at: Some(secs(at)),
        stop_code: ended.then(|| "EssentialContainerExited".to_string()),
        stopped_reason: ended.then(|| "Essential container in task exited".to_string()),
        containers: containers
            .iter()
            .map(|n| ContainerReport {
                name: n.clone(),
                last_status: "STOPPED".into(),
                exit_code: Some(if ended { 0 } else { 143 }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

impl Simulation {
    /// Sets the scene: cluster, capacity provider (with the scenario's
    /// tags), task definitions and services, through the ECS operations.
    /// Anything they refuse is a [`SimError::Scenario`] naming the field.
    pub fn new(scenario: Scenario, options: Options) -> Result<Simulation, SimError> {
        if !(options.min_step > 0.0 && options.max_step >= options.min_step) {
            return Err(engine("the step floor must be above 0 and at most the cap"));
        }
        let start = START_EPOCH_MS;
        let clock = Arc::new(ManualClock::new(Duration::from_millis(start as u64)));
        let store = Store::in_memory().map_err(|e| engine(format!("in-memory store: {e}")))?;
        let ctx = Arc::new(Ctx {
            store,
            arns: ArnContext {
                region: scenario.region.clone(),
                account: "000000000000".into(),
            },
            clock: clock.clone(),
            catalog: berth_catalog::Catalog::embedded(),
        });
        // Lifecycle tags first: the API stores them without checking.
        let tags: Vec<berth_model::ecs::Tag> = scenario
            .tags
            .iter()
            .map(|(k, v)| berth_model::ecs::Tag {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect();
        lc::check_tags(&tags).map_err(|e| ScenarioError(format!("tags: {}", e.message)))?;
        call(&ctx, "CreateCluster", json!({"clusterName": CLUSTER}))?;
        let created = call(
            &ctx,
            "CreateCapacityProvider",
            json!({"name": CAPACITY_PROVIDER, "cluster": CLUSTER,
                   "managedInstancesProvider": scenario.capacity_provider}),
        )
        .map_err(|e| {
            // The scenario's capacityProvider is the request's managedInstancesProvider.
            let msg = e
                .message
                .replace("managedInstancesProvider.", "capacityProvider.");
            ScenarioError(format!("capacityProvider: {msg}"))
        })?;
        if !tags.is_empty() {
            let arn = created["capacityProvider"]["capacityProviderArn"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let list: Vec<Value> = scenario
                .tags
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            call(
                &ctx,
                "TagResource",
                json!({"resourceArn": arn, "tags": list}),
            )
            .map_err(|e| ScenarioError(format!("tags: {}", e.message)))?;
        }
        call(
            &ctx,
            "PutClusterCapacityProviders",
            json!({"cluster": CLUSTER, "capacityProviders": [CAPACITY_PROVIDER],
                   "defaultCapacityProviderStrategy": [{"capacityProvider": CAPACITY_PROVIDER, "weight": 1}]}),
        )?;
        let register = |name: &str, cpu: u32, memory: u32| {
            call(
                &ctx,
                "RegisterTaskDefinition",
                json!({"family": name, "requiresCompatibilities": ["MANAGED_INSTANCES"],
                       "networkMode": "host", "cpu": cpu.to_string(), "memory": memory.to_string(),
                       "containerDefinitions": [{"name": "app", "image": format!("sim/{name}:1"), "essential": true}]}),
            )
        };
        let mut run_for = BTreeMap::new();
        let mut services = vec![];
        for (i, s) in scenario.services.iter().enumerate() {
            register(&s.name, s.cpu, s.memory)
                .map_err(|e| ScenarioError(format!("services[{i}]: {}", e.message)))?;
            call(
                &ctx,
                "CreateService",
                json!({"cluster": CLUSTER, "serviceName": s.name, "taskDefinition": s.name,
                       "desiredCount": s.desired_count,
                       "capacityProviderStrategy": [{"capacityProvider": CAPACITY_PROVIDER, "weight": 1}],
                       "deploymentConfiguration": {"minimumHealthyPercent": s.minimum_healthy_percent,
                                                   "maximumPercent": s.maximum_percent}}),
            )
            .map_err(|e| ScenarioError(format!("services[{i}]: {}", e.message)))?;
            services.push(SvcStats {
                name: s.name.clone(),
                desired: s.desired_count,
                min_healthy_percent: s.minimum_healthy_percent,
                reached_at: None,
                min_running: None,
                max_running: 0,
                min_fraction: None,
                below_ms: 0,
                below: vec![],
                open: None,
                awaiting: None,
            });
        }
        for (i, s) in scenario.standalone.iter().enumerate() {
            register(&s.name, s.cpu, s.memory)
                .map_err(|e| ScenarioError(format!("standaloneTasks[{i}]: {}", e.message)))?;
            if let Some(d) = s.run_for {
                run_for.insert(s.name.clone(), to_ms(d));
            }
        }
        let mut lifecycle = LifecycleConfig {
            agent_timeout: scenario.agent_timeout,
            ..LifecycleConfig::default()
        };
        let cp: Option<CapacityProvider> = ctx
            .store
            .read(|tx| Ok::<_, EcsError>(tx.capacity_provider(CAPACITY_PROVIDER)?))?
            .map(|v| v.value);
        let policy = match &cp {
            Some(cp) => {
                lc::policy_for(cp, &lifecycle).map_err(|e| ScenarioError(format!("tags: {e}")))?
            }
            None => return Err(engine("the capacity provider was not stored")),
        };
        lifecycle.drain_age = policy.drain_age;
        lifecycle.max_lifetime = policy.max_lifetime;
        let provider = Arc::new(SimProvider::new(SimConfig {
            boot_delay: scenario.boot_delay,
            seed: scenario.seed,
            region: scenario.region.clone(),
            ..SimConfig::default()
        }));
        provider.advance(secs(start));
        let launcher = Arc::new(SimLauncher {
            provider: provider.clone(),
            launches: Mutex::new(vec![]),
            terminations: Mutex::new(vec![]),
        });
        let link = Arc::new(SimLink::default());
        let config = SchedulerConfig {
            architecture: Some(berth_catalog::Architecture::X86_64),
            lifecycle,
            ..SchedulerConfig::new(
                "sim://berth".into(),
                "berth".into(),
                "/nonexistent/berth-sim".into(),
            )
        };
        let scheduler = Scheduler::new(ctx.clone(), launcher.clone(), link.clone(), config);
        let end = start + to_ms(scenario.duration);
        let mut sim = Simulation {
            rng: StdRng::seed_from_u64(scenario.seed),
            options,
            clock,
            ctx,
            provider,
            launcher,
            link,
            scheduler,
            policy,
            start,
            now: start,
            end,
            timers: BTreeMap::new(),
            seq: 0,
            instances: BTreeMap::new(),
            task_home: HashMap::new(),
            run_for,
            running: BTreeMap::new(),
            image_version: lc::DEFAULT_IMAGE_VERSION.to_string(),
            images: BTreeMap::new(),
            rollout_since: None,
            launched: 0,
            terminated: 0,
            alive: 0,
            peak_instances: 0,
            budgeted_draining: 0,
            max_concurrent_drains: 0,
            drains: DrainKind::ALL.iter().map(|k| (*k, 0)).collect(),
            budget_exceeded: 0,
            tasks_running_twice: 0,
            services,
            timeline: vec![],
            days: vec![],
            steps: 0,
            cap_steps: 0,
            cap_steps_with_work: 0,
            spans: Spans::default(),
            scenario,
        };
        for i in 0..sim.scenario.standalone.len() {
            let at = start + to_ms(sim.scenario.standalone[i].at);
            sim.schedule(at, Timer::Standalone(i));
        }
        for i in 0..sim.scenario.events.len() {
            let at = start + to_ms(sim.scenario.events[i].at);
            sim.schedule(at, Timer::Event(i));
        }
        Ok(sim)
    }

    fn schedule(&mut self, at: Ms, timer: Timer) {
        self.seq += 1;
        self.timers.insert((at, self.seq), timer);
    }

    fn note(&mut self, text: String) {
        self.timeline.push((self.now, text));
    }

    fn day(&mut self) -> &mut Day {
        let i = usize::try_from((self.now - self.start) / 86_400_000).unwrap_or(0);
        while self.days.len() <= i {
            let n = self.days.len() as u32;
            self.days.push(Day {
                day: n,
                ..Day::default()
            });
        }
        &mut self.days[i]
    }

    /// Plays the scenario to its end (once). `progress` is told the
    /// fraction of virtual time done after each step.
    pub fn run(&mut self, progress: &mut dyn FnMut(f64)) -> Result<Report, SimError> {
        if self.steps > 0 {
            return Err(engine("this simulation has run already"));
        }
        let wall = Instant::now();
        let min_step = to_ms(self.options.min_step).max(1);
        let max_step = to_ms(self.options.max_step).max(min_step);
        let total = (self.end - self.start).max(1) as f64;
        let mut by_cap = false;
        loop {
            let step = self.step()?;
            if by_cap {
                self.cap_steps += 1;
                if step.dirty || step.waiting > 0 {
                    self.cap_steps_with_work += 1;
                }
            }
            let t = self.now;
            if t >= self.end {
                self.sample(t, t);
                break;
            }
            let mut next = t + max_step;
            by_cap = true;
            let mut sooner = |at: Ms, by_cap: &mut bool| {
                if at < next {
                    next = at;
                    *by_cap = false;
                }
            };
            if let Some((&(at, _), _)) = self.timers.first_key_value() {
                sooner(at, &mut by_cap);
            }
            if let Some(n) = step.next_tick {
                sooner(t + (n.max(0.0) * 1000.0).ceil() as Ms, &mut by_cap);
            }
            if step.dirty {
                sooner(t + min_step, &mut by_cap);
            }
            next = next.max(t + min_step);
            if next >= self.end {
                next = self.end;
                by_cap = false;
            }
            self.sample(t, next);
            self.now = next;
            progress((self.now - self.start) as f64 / total);
        }
        self.finish(wall.elapsed())
    }

    /// One step at `self.now`: due timers, one tick, desired sets to agents.
    fn step(&mut self) -> Result<Step, SimError> {
        let t = self.now;
        self.steps += 1;
        self.day().steps += 1;
        self.clock.set(Duration::from_millis(t as u64));
        self.provider.advance(secs(t));
        let mut dirty = false;
        while let Some((&(at, _), _)) = self.timers.first_key_value() {
            if at > t {
                break;
            }
            let Some((_, timer)) = self.timers.pop_first() else {
                break;
            };
            let began = Instant::now();
            dirty |= self.fire(timer)?;
            self.spans.events += began.elapsed();
        }
        let fleet_before = self.instances.values().filter(|i| i.in_fleet).count();
        let began = Instant::now();
        let report = self.scheduler.tick()?;
        self.spans.tick += began.elapsed();
        let next_tick = report.next_tick;
        dirty |= self.absorb(&report, fleet_before)?;
        if self.options.push_to_draining {
            // The scheduler pushes desired sets to ACTIVE instances only; a
            // DRAINING one would never hear that its tasks are to stop.
            let draining: Vec<String> = self
                .instances
                .iter()
                .filter(|(_, i)| {
                    i.in_fleet && i.draining.is_some() && i.state == AgentState::Connected
                })
                .map(|(id, _)| id.clone())
                .collect();
            let began = Instant::now();
            for id in draining {
                self.scheduler.push_if_changed(&id)?;
            }
            self.spans.tick += began.elapsed();
        }
        let began = Instant::now();
        for (id, tasks) in self.link.take() {
            dirty |= self.apply_desired(&id, &tasks)?;
        }
        self.spans.agents += began.elapsed();
        Ok(Step {
            dirty,
            next_tick,
            waiting: report.waiting,
        })
    }

    fn fire(&mut self, timer: Timer) -> Result<bool, SimError> {
        match timer {
            Timer::Event(i) => {
                self.event(i)?;
                Ok(true)
            }
            Timer::Standalone(i) => {
                self.run_standalone(i)?;
                Ok(true)
            }
            Timer::Boot(id) => self.join(&id),
            Timer::TaskEnd(id, arn) => self.task_end(&id, &arn),
            Timer::Reconnect(id) => self.reconnect(&id),
            Timer::SpotDeadline(id) => {
                let alive = self
                    .instances
                    .get(&id)
                    .is_some_and(|i| i.state != AgentState::Dead);
                if alive {
                    self.note(format!(
                        "{id}: the spot notice ran out with the instance still there; its capacity is taken back"
                    ));
                    self.fail(&id)?;
                }
                Ok(alive)
            }
            Timer::Wake => Ok(false),
        }
    }

    /// Takes in what a tick did: launches, terminations, drains.
    fn absorb(&mut self, report: &TickReport, fleet_before: usize) -> Result<bool, SimError> {
        let (launches, terminations) = self.launcher.take();
        for r in launches {
            let launched_at = to_ms(r.now);
            let token = r
                .agent_env
                .iter()
                .find(|(k, _)| k == "BERTH_JOIN_TOKEN")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let number = |flag: &str| -> Result<u64, SimError> {
                arg(&r.agent_args, flag)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| engine(format!("the launch of {} has no {flag}", r.instance_id)))
            };
            let inst = Inst {
                instance_type: r.instance_type.clone(),
                launched_at,
                ended_at: None,
                image_version: self.image_version.clone(),
                token,
                credential: None,
                cpu: u32::try_from(number("--cpu")?).unwrap_or(u32::MAX),
                memory_mib: number("--memory")?,
                gpus: u32::try_from(number("--gpus")?).unwrap_or(0),
                zone: arg(&r.agent_args, "--availability-zone")
                    .unwrap_or_default()
                    .to_string(),
                state: AgentState::Booting,
                in_fleet: false,
                draining: None,
                budgeted: false,
                tasks: BTreeMap::new(),
                exited: vec![],
            };
            *self.images.entry(inst.image_version.clone()).or_insert(0) += 1;
            self.instances.insert(r.instance_id.clone(), inst);
            self.launched += 1;
            self.alive += 1;
            self.peak_instances = self.peak_instances.max(self.alive);
            self.day().launched += 1;
            let boot = launched_at + to_ms(self.scenario.boot_delay);
            self.schedule(boot, Timer::Boot(r.instance_id.clone()));
        }
        for id in terminations {
            self.gone(&id);
            self.left_fleet(&id);
        }
        let mut new_budgeted = false;
        for (id, kind) in &report.drained {
            self.count_drain(id, *kind);
            new_budgeted |= *kind != DrainKind::Spot;
        }
        if new_budgeted && self.budgeted_draining > self.policy.budget(fleet_before) as u64 {
            self.budget_exceeded += 1;
            self.note(format!(
                "disruption budget exceeded: {} instances draining in a fleet of {fleet_before}",
                self.budgeted_draining
            ));
        }
        let images_done = self
            .rollout_since
            .as_ref()
            .is_some_and(|(v, _)| self.images.iter().all(|(k, n)| k == v || *n == 0));
        if images_done {
            if let Some((v, since)) = self.rollout_since.take() {
                let took = secs(self.now - since);
                self.note(format!(
                    "image {v} rolled out: every instance runs it ({})",
                    report::human(took)
                ));
            }
        }
        Ok(report.placed > 0
            || !report.launched.is_empty()
            || !report.terminated.is_empty()
            || report.service_started > 0
            || report.service_stopped > 0
            || report.daemon_started > 0
            || report.daemon_stopped > 0
            || !report.drained.is_empty()
            // An emptied instance retired leaves nothing to follow up (the
            // budget it frees was counted free in the same tick); one whose
            // tasks were stopped with it has them to replace.
            || report.retired_tasks > 0)
    }

    fn count_drain(&mut self, id: &str, kind: DrainKind) {
        *self.drains.entry(kind).or_insert(0) += 1;
        *self
            .day()
            .drains
            .entry(kind.as_str().to_string())
            .or_insert(0) += 1;
        if let Some(i) = self.instances.get_mut(id) {
            i.draining = Some(kind);
            if kind != DrainKind::Spot && !i.budgeted && i.in_fleet {
                i.budgeted = true;
                self.budgeted_draining += 1;
                self.max_concurrent_drains = self.max_concurrent_drains.max(self.budgeted_draining);
            }
        }
    }

    /// The instance is physically gone: its agent and its tasks with it.
    fn gone(&mut self, id: &str) {
        let now = self.now;
        let Some(inst) = self.instances.get_mut(id) else {
            return;
        };
        if inst.ended_at.is_some() {
            return;
        }
        inst.ended_at = Some(now);
        inst.state = AgentState::Dead;
        let tasks = std::mem::take(&mut inst.tasks);
        inst.exited.clear();
        let version = inst.image_version.clone();
        for (arn, t) in tasks {
            self.forget_task(id, &arn, &t.family);
        }
        if let Some(n) = self.images.get_mut(&version) {
            *n = n.saturating_sub(1);
        }
        self.link.connect(id, false);
        self.terminated += 1;
        self.alive = self.alive.saturating_sub(1);
        self.day().terminated += 1;
    }

    /// The instance left the store's fleet (deregistered).
    fn left_fleet(&mut self, id: &str) {
        if let Some(i) = self.instances.get_mut(id) {
            i.in_fleet = false;
            if i.budgeted {
                i.budgeted = false;
                self.budgeted_draining = self.budgeted_draining.saturating_sub(1);
            }
        }
    }

    fn forget_task(&mut self, id: &str, arn: &str, family: &str) {
        if self.task_home.get(arn).is_some_and(|h| h == id) {
            self.task_home.remove(arn);
        }
        if let Some(n) = self.running.get_mut(family) {
            *n = n.saturating_sub(1);
        }
    }

    /// An instance dies: its agent goes silent (the server sees the
    /// connection drop), the provider terminates it.
    fn fail(&mut self, id: &str) -> Result<(), SimError> {
        let was_connected = self
            .instances
            .get(id)
            .is_some_and(|i| i.state == AgentState::Connected);
        self.gone(id);
        self.provider
            .terminate(id)
            .map_err(|e| engine(format!("terminating {id}: {e}")))?;
        if was_connected {
            agents::disconnected(&self.ctx, id)?;
        }
        let at = self.now + to_ms(self.scenario.agent_timeout);
        self.schedule(at, Timer::Wake);
        Ok(())
    }

    /// A booted instance's agent joins and says hello.
    fn join(&mut self, id: &str) -> Result<bool, SimError> {
        if self
            .instances
            .get(id)
            .is_none_or(|i| i.state != AgentState::Booting)
        {
            return Ok(false);
        }
        match self.provider.get(id).map(|i| i.state) {
            Some(InstanceState::Running) => {}
            Some(InstanceState::Pending) => {
                // The provider counts in float seconds: a millisecond more.
                let at = self.now + 1;
                self.schedule(at, Timer::Boot(id.to_string()));
                return Ok(false);
            }
            other => {
                return Err(engine(format!(
                    "{id} is due to have booted but the provider says {other:?}"
                )))
            }
        }
        let Some(inst) = self.instances.get(id) else {
            return Ok(false);
        };
        let credential = match agents::admit(&self.ctx, id, &inst.token)? {
            Admission::Joined { credential } => credential,
            Admission::Known => return Err(engine(format!("{id} joined twice"))),
        };
        let mut attributes = BTreeMap::new();
        attributes.insert("ecs.instance-type".to_string(), inst.instance_type.clone());
        attributes.insert("ecs.availability-zone".to_string(), inst.zone.clone());
        attributes.insert("ecs.os-type".to_string(), "linux".to_string());
        let arch = self
            .ctx
            .catalog
            .get(&inst.instance_type)
            .and_then(|t| t.architectures.first().copied())
            .unwrap_or(berth_catalog::Architecture::X86_64);
        attributes.insert(
            "ecs.cpu-architecture".to_string(),
            arch.as_str().to_string(),
        );
        let hello = Hello {
            protocol: VERSION,
            instance_id: id.to_string(),
            agent_version: "sim".into(),
            runtime: "sim".into(),
            resources: Resources {
                cpu: inst.cpu,
                memory_mib: inst.memory_mib,
                gpus: (0..inst.gpus).map(|g| g.to_string()).collect(),
            },
            attributes,
            tasks: vec![],
            generation: 0,
        };
        let (_, _, tasks) = agents::hello(&self.ctx, &hello)?;
        self.scheduler.forget(id);
        self.link.connect(id, true);
        if let Some(i) = self.instances.get_mut(id) {
            i.credential = Some(credential);
            i.state = AgentState::Connected;
            i.in_fleet = true;
        }
        self.apply_desired(id, &tasks)?;
        Ok(true)
    }

    /// An agent acts on its desired set: starts what is new, then stops
    /// what was left out. True when it reported anything.
    fn apply_desired(&mut self, id: &str, specs: &[TaskSpec]) -> Result<bool, SimError> {
        let now = self.now;
        let Some(inst) = self.instances.get(id) else {
            return Ok(false);
        };
        if inst.state != AgentState::Connected {
            return Ok(false);
        }
        let want: Vec<&TaskSpec> = specs
            .iter()
            .filter(|s| s.desired_status == DesiredStatus::Running)
            .collect();
        let new: Vec<&TaskSpec> = want
            .iter()
            .copied()
            .filter(|s| !inst.tasks.contains_key(&s.task_arn))
            .collect();
        let keep: BTreeSet<&str> = want.iter().map(|s| s.task_arn.as_str()).collect();
        let stop: Vec<String> = inst
            .tasks
            .keys()
            .filter(|a| !keep.contains(a.as_str()))
            .cloned()
            .collect();
        let mut changed = false;
        // What the agent reports, at once: starts before stops.
        let mut reports = vec![];
        for s in new {
            if let Some(other) = self.task_home.get(&s.task_arn) {
                if other != id {
                    self.tasks_running_twice += 1;
                    let other = other.clone();
                    self.note(format!(
                        "task {} started on {id} while {other} still runs it",
                        s.task_arn
                    ));
                }
            }
            let task = RunningTask {
                family: s.family.clone(),
                containers: s.containers.iter().filter_map(|c| c.name.clone()).collect(),
                started_at: now,
                ends_at: self.run_for.get(&s.family).map(|d| now + d),
            };
            reports.push(running_report(&s.task_arn, &task));
            if let Some(end) = task.ends_at {
                self.schedule(end, Timer::TaskEnd(id.to_string(), s.task_arn.clone()));
            }
            *self.running.entry(s.family.clone()).or_insert(0) += 1;
            self.task_home.insert(s.task_arn.clone(), id.to_string());
            if let Some(i) = self.instances.get_mut(id) {
                i.tasks.insert(s.task_arn.clone(), task);
            }
            changed = true;
        }
        for arn in stop {
            let Some(t) = self
                .instances
                .get_mut(id)
                .and_then(|i| i.tasks.remove(&arn))
            else {
                continue;
            };
            reports.push(stopped_report(
                &arn,
                &t.containers,
                t.started_at,
                now,
                false,
            ));
            self.forget_task(id, &arn, &t.family);
            changed = true;
        }
        if !reports.is_empty() {
            agents::reports(&self.ctx, id, &reports)?;
        }
        Ok(changed)
    }

    /// A standalone task's essential container exits 0.
    fn task_end(&mut self, id: &str, arn: &str) -> Result<bool, SimError> {
        let now = self.now;
        let Some(inst) = self.instances.get_mut(id) else {
            return Ok(false);
        };
        if inst.tasks.get(arn).and_then(|t| t.ends_at) != Some(now) {
            return Ok(false);
        }
        let Some(t) = inst.tasks.remove(arn) else {
            return Ok(false);
        };
        let connected = inst.state == AgentState::Connected;
        if !connected {
            inst.exited
                .push((arn.to_string(), t.containers.clone(), t.started_at, now));
        }
        self.forget_task(id, arn, &t.family);
        if connected {
            agents::report(
                &self.ctx,
                id,
                &stopped_report(arn, &t.containers, t.started_at, now, true),
            )?;
        }
        Ok(connected)
    }

    /// An away agent comes back: hello with what it runs.
    fn reconnect(&mut self, id: &str) -> Result<bool, SimError> {
        let Some(inst) = self.instances.get(id) else {
            return Ok(false);
        };
        if inst.state != AgentState::Away {
            return Ok(false);
        }
        let credential = inst.credential.clone().unwrap_or_default();
        let mut reports: Vec<TaskReport> = inst
            .tasks
            .iter()
            .map(|(arn, t)| running_report(arn, t))
            .collect();
        reports.extend(
            inst.exited
                .iter()
                .map(|(arn, c, started, at)| stopped_report(arn, c, *started, *at, true)),
        );
        let mut attributes = BTreeMap::new();
        attributes.insert("ecs.instance-type".to_string(), inst.instance_type.clone());
        attributes.insert("ecs.availability-zone".to_string(), inst.zone.clone());
        attributes.insert("ecs.os-type".to_string(), "linux".to_string());
        let hello = Hello {
            protocol: VERSION,
            instance_id: id.to_string(),
            agent_version: "sim".into(),
            runtime: "sim".into(),
            resources: Resources {
                cpu: inst.cpu,
                memory_mib: inst.memory_mib,
                gpus: (0..inst.gpus).map(|g| g.to_string()).collect(),
            },
            attributes,
            tasks: reports,
            generation: 0,
        };
        if agents::admit(&self.ctx, id, &credential)? != Admission::Known {
            return Err(engine(format!(
                "{id} could not present its credential again"
            )));
        }
        match agents::hello(&self.ctx, &hello) {
            Ok((_, _, tasks)) => {
                self.scheduler.forget(id);
                self.link.connect(id, true);
                if let Some(i) = self.instances.get_mut(id) {
                    i.state = AgentState::Connected;
                    i.exited.clear();
                }
                self.note(format!("{id}: the agent is back and says hello"));
                self.apply_desired(id, &tasks)?;
            }
            Err(e) => {
                self.note(format!(
                    "{id}: the agent is back but refused ({}); the instance shuts down",
                    e.message
                ));
                self.fail(id)?;
            }
        }
        Ok(true)
    }

    /// Instances events may hit: connected, registered, not draining; `count`
    /// of them picked with the scenario's seed.
    fn victims(&mut self, count: u32) -> Vec<String> {
        let mut pool: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, i)| i.state == AgentState::Connected && i.in_fleet && i.draining.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let n = (count as usize).min(pool.len());
        for k in 0..n {
            let j = self.rng.random_range(k..pool.len());
            pool.swap(k, j);
        }
        pool.truncate(n);
        pool
    }

    fn event(&mut self, i: usize) -> Result<(), SimError> {
        let event = self.scenario.events[i].clone();
        match &event.kind {
            EventKind::Scale {
                service,
                desired_count,
            } => {
                call(
                    &self.ctx,
                    "UpdateService",
                    json!({"cluster": CLUSTER, "service": service, "desiredCount": desired_count}),
                )
                .map_err(|e| engine(format!("{}: UpdateService: {}", event.label, e.message)))?;
                let now = self.now;
                if let Some(s) = self.services.iter_mut().find(|s| &s.name == service) {
                    let from = s.desired;
                    s.desired = *desired_count;
                    s.awaiting = (*desired_count > from).then_some((*desired_count, now));
                    self.note(format!(
                        "scale: {service} from {from} to {desired_count} tasks"
                    ));
                }
            }
            EventKind::SetImage { version } => {
                lc::set_image_version(&self.ctx, version)
                    .map_err(|e| engine(format!("{}: {}", event.label, e.message)))?;
                self.image_version = version.clone();
                let outdated: u64 = self
                    .images
                    .iter()
                    .filter(|(v, _)| *v != version)
                    .map(|(_, n)| *n)
                    .sum();
                self.note(format!(
                    "set-image: version {version} published; {outdated} instances run an older one"
                ));
                if outdated > 0 {
                    self.rollout_since = Some((version.clone(), self.now));
                }
            }
            EventKind::InstanceFailure { count } => {
                let victims = self.victims(*count);
                self.note(format!(
                    "instance-failure: {} ({})",
                    report::plural(victims.len(), "instance"),
                    victims.join(", ")
                ));
                for id in victims {
                    self.fail(&id)?;
                }
            }
            EventKind::SpotInterruption { count } => {
                let victims = self.victims(*count);
                self.note(format!(
                    "spot-interruption: a 2-minute notice for {} ({})",
                    report::plural(victims.len(), "instance"),
                    victims.join(", ")
                ));
                for id in victims {
                    self.scheduler.spot_interruption(&id)?;
                    self.count_drain(&id, DrainKind::Spot);
                    let at = self.now + to_ms(lc::SPOT_NOTICE);
                    self.schedule(at, Timer::SpotDeadline(id));
                }
                // The interrupted type is left out of plans for a while; tasks
                // that only it could hold wait until then, and the tick does not
                // say when that is.
                let back =
                    self.now + to_ms(self.scheduler.config.unavailable_for.as_secs_f64()) + 1;
                self.schedule(back, Timer::Wake);
            }
            EventKind::AgentDisconnect { count, for_secs } => {
                let victims = self.victims(*count);
                self.note(format!(
                    "agent-disconnect: {} for {} ({})",
                    report::plural(victims.len(), "agent connection"),
                    report::human(*for_secs),
                    victims.join(", ")
                ));
                for id in victims {
                    if let Some(i) = self.instances.get_mut(&id) {
                        i.state = AgentState::Away;
                    }
                    self.link.connect(&id, false);
                    agents::disconnected(&self.ctx, &id)?;
                    let back = self.now + to_ms(*for_secs);
                    self.schedule(back, Timer::Reconnect(id.clone()));
                    let lost = self.now + to_ms(self.scenario.agent_timeout);
                    self.schedule(lost, Timer::Wake);
                }
            }
        }
        Ok(())
    }

    fn run_standalone(&mut self, i: usize) -> Result<(), SimError> {
        let s = self.scenario.standalone[i].clone();
        let mut left = s.count;
        while left > 0 {
            let n = left.min(10);
            let out = call(
                &self.ctx,
                "RunTask",
                json!({"cluster": CLUSTER, "taskDefinition": s.name, "count": n,
                       "capacityProviderStrategy": [{"capacityProvider": CAPACITY_PROVIDER, "weight": 1}]}),
            )
            .map_err(|e| engine(format!("standaloneTasks[{i}]: RunTask: {}", e.message)))?;
            if let Some(f) = out["failures"].as_array().filter(|f| !f.is_empty()) {
                return Err(engine(format!(
                    "standaloneTasks[{i}]: RunTask failed: {}",
                    Value::Array(f.clone())
                )));
            }
            left -= n;
        }
        self.note(format!(
            "run-task: {} of {}{}",
            report::plural(s.count as usize, "standalone task"),
            s.name,
            match s.run_for {
                Some(d) => format!(", each running {}", report::human(d)),
                None => String::new(),
            }
        ));
        Ok(())
    }

    /// Services' running counts after a step, holding until `next`.
    fn sample(&mut self, t: Ms, next: Ms) {
        let mut notes = vec![];
        for s in &mut self.services {
            let running = self.running.get(&s.name).copied().unwrap_or(0);
            s.max_running = s.max_running.max(running);
            if s.reached_at.is_none() && running >= s.desired {
                s.reached_at = Some(t);
                notes.push(format!(
                    "{} reached its desired count: {running} running",
                    s.name
                ));
            }
            if let Some((d, since)) = s.awaiting {
                if running >= d {
                    s.awaiting = None;
                    if s.reached_at.is_some_and(|r| r < t) {
                        notes.push(format!(
                            "{} reached {d} running, {} after the scale",
                            s.name,
                            report::human(secs(t - since))
                        ));
                    }
                }
            }
            if s.reached_at.is_none() {
                continue;
            }
            s.min_running = Some(s.min_running.map_or(running, |m| m.min(running)));
            let fraction = if s.desired == 0 {
                1.0
            } else {
                f64::from(running) / f64::from(s.desired)
            };
            s.min_fraction = Some(s.min_fraction.map_or(fraction, |m| m.min(fraction)));
            let floor = (u64::from(s.desired) * u64::from(s.min_healthy_percent)).div_ceil(100);
            let floor = u32::try_from(floor).unwrap_or(u32::MAX);
            if running < floor {
                s.below_ms += next - t;
                match &mut s.open {
                    Some(b) => {
                        b.to = secs(next - self.start);
                        b.min_running = b.min_running.min(running);
                        b.floor = b.floor.max(floor);
                    }
                    None => {
                        s.open = Some(Below {
                            from: secs(t - self.start),
                            to: secs(next - self.start),
                            min_running: running,
                            floor,
                        })
                    }
                }
            } else if let Some(b) = s.open.take() {
                s.below.push(b);
            }
        }
        for n in notes {
            self.timeline.push((t, n));
        }
        let alive = self.alive;
        let d = self.day();
        d.peak_instances = d.peak_instances.max(alive);
    }

    /// How long one scheduler tick takes at the end of the run, with the
    /// clock stopped (nothing new is due): the median of `runs`. The
    /// baseline of `berth bench simulate`.
    pub fn time_tick(&mut self, runs: u32) -> Result<Duration, SimError> {
        let mut times = vec![];
        for _ in 0..runs.max(1) {
            let began = Instant::now();
            self.scheduler.tick()?;
            times.push(began.elapsed());
            // Whatever the tick sent stays unanswered, as a quiet fleet's would.
            self.link.take();
        }
        times.sort();
        Ok(times.get(times.len() / 2).copied().unwrap_or_default())
    }

    fn finish(&mut self, wall: Duration) -> Result<Report, SimError> {
        let end = self.end;
        for s in &mut self.services {
            if let Some(b) = s.open.take() {
                s.below.push(b);
            }
        }
        // Task stops by stop code, from the store.
        let cluster_arn = self.ctx.arns.cluster(CLUSTER);
        let stops = self.ctx.store.read(|tx| {
            let filter = berth_store::TaskFilter {
                cluster_arn: cluster_arn.clone(),
                last_status: Some("STOPPED".into()),
                ..Default::default()
            };
            let mut out: BTreeMap<String, u64> = BTreeMap::new();
            for v in berth_store::all(|a, n| tx.tasks(&filter, a, n))? {
                let code = v.value.stop_code.map_or("None", |c| c.as_str()).to_string();
                *out.entry(code).or_insert(0) += 1;
            }
            Ok::<_, EcsError>(out)
        })?;
        let mut max_age: f64 = 0.0;
        let mut images: BTreeMap<String, u64> = BTreeMap::new();
        for inst in self.instances.values() {
            let until = inst.ended_at.unwrap_or(end);
            let age = secs(until - inst.launched_at);
            max_age = max_age.max(age);
            if inst.ended_at.is_none() {
                *images.entry(inst.image_version.clone()).or_insert(0) += 1;
            }
        }
        let services = self
            .services
            .iter()
            .map(|s| {
                let total = s.below.len();
                let mut below = s.below.clone();
                below.truncate(report::MAX_INTERVALS);
                (
                    s.name.clone(),
                    ServiceReport {
                        desired: s.desired,
                        min_running: s.min_running,
                        max_running: s.max_running,
                        min_running_fraction: s.min_fraction,
                        seconds_below_minimum: secs(s.below_ms),
                        reached_desired_at: s.reached_at.map(|r| secs(r - self.start)),
                        minimum_healthy_percent: s.min_healthy_percent,
                        below_minimum_intervals: total,
                        below_minimum: below,
                    },
                )
            })
            .collect();
        Ok(Report {
            duration_seconds: secs(end - self.start),
            instances_launched: self.launched,
            instances_terminated: self.terminated,
            max_instance_age_seconds: max_age,
            max_concurrent_drains: self.max_concurrent_drains,
            image_versions: images,
            drains: self
                .drains
                .iter()
                .map(|(k, n)| (k.as_str().to_string(), *n))
                .collect(),
            task_stops: stops,
            services,
            cost: report::Cost::metered(&berth_control::metering::report(
                &self.ctx,
                None,
                berth_catalog::cost::Window {
                    since: None,
                    until: secs(end),
                },
                berth_catalog::cost::GroupBy::Service,
            )?),
            wall_seconds: wall.as_secs_f64(),
            policy: report::PolicyReport {
                drain_age_seconds: self.policy.drain_age,
                max_lifetime_seconds: self.policy.max_lifetime,
                budget_percent: self.policy.budget_percent,
                small_fleet: self.policy.small_fleet as u64,
                agent_timeout_seconds: self.scenario.agent_timeout,
                boot_delay_seconds: self.scenario.boot_delay,
            },
            invariants: report::Invariants {
                tasks_running_twice: self.tasks_running_twice,
                budget_exceeded: self.budget_exceeded,
                peak_instances: self.peak_instances,
            },
            engine: report::EngineReport {
                steps: self.steps,
                cap_steps: self.cap_steps,
                cap_steps_with_work: self.cap_steps_with_work,
                tick_seconds: self.spans.tick.as_secs_f64(),
                agent_seconds: self.spans.agents.as_secs_f64(),
                event_seconds: self.spans.events.as_secs_f64(),
                min_step_seconds: self.options.min_step,
                max_step_seconds: self.options.max_step,
            },
            timeline: self
                .timeline
                .iter()
                .map(|(t, text)| TimelineEntry {
                    at: secs(t - self.start),
                    event: text.clone(),
                })
                .collect(),
            daily: self.days.clone(),
        })
    }
}

/// Runs a scenario with the default options.
pub fn simulate(scenario: Scenario) -> Result<Report, SimError> {
    Simulation::new(scenario, Options::default())?.run(&mut |_| {})
}

//! The supervisor: converges real containers to the desired set of tasks.
//!
//! # Design
//!
//! Level-triggered like the server's reconcilers: [`Supervisor::converge`]
//! looks at the desired set and at what the runtime says is running, takes
//! the steps that bring them together (pull and start, stop, report an
//! exit), and can run again at any time. Each task's local record (its spec,
//! its containers' runtime ids, its timestamps) is kept on disk under the
//! state dir, so a restarted agent re-adopts running containers instead of
//! starting them again.
//!
//! # Promptness
//!
//! A pass hands each change to the connection as it makes it
//! ([`Supervisor::converge_with`]), starts the tasks new to the agent before
//! walking the others, and takes a desired set that arrives meanwhile at the
//! next task, so a new task never waits for a pass over many others.

use crate::images::ImageSource;
use crate::runtime::{BindMount, ContainerLaunch, ContainerStatus, Network, Runtime};
use berth_model::ecs::ContainerDefinition;
use berth_protocol::{ContainerReport, DesiredStatus, LogBatch, LogLine, TaskReport, TaskSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// SIGTERM, then SIGKILL after the container's `stopTimeout` (ECS's default: 30 s).
const DEFAULT_STOP_TIMEOUT: f64 = 30.0;
const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;
/// At most this many bytes of output are shipped per container per pass.
const MAX_LOG_CHUNK: u64 = 256 * 1024;

/// One container of a task, as the agent keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalContainer {
    pub name: String,
    pub runtime_id: String,
    pub essential: bool,
    pub started: bool,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// Bytes of stdout / stderr already shipped.
    pub shipped: [u64; 2],
    /// The unpacked image, once pulled: its layers and config.
    #[serde(default)]
    pub layers: Vec<PathBuf>,
    #[serde(default)]
    pub image: Option<crate::runtime::ImageConfig>,
    /// The container will never start: a `dependsOn` condition cannot hold.
    #[serde(default)]
    pub skipped: bool,
    /// `HEALTHY`, `UNHEALTHY` or `UNKNOWN`, when the container has a health check.
    #[serde(default)]
    pub health: Option<String>,
    /// The task's volumes this container mounts, resolved when the task started.
    #[serde(default)]
    pub mounts: Vec<BindMount>,
}

/// A health check in progress or scheduled, per container runtime id.
struct Probe {
    next_at: f64,
    failures: i32,
    in_flight: Option<std::sync::mpsc::Receiver<Option<i32>>>,
}

/// A task as the agent keeps it on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalTask {
    pub spec: TaskSpec,
    pub containers: Vec<LocalContainer>,
    pub report: TaskReport,
    /// When the agent sent the first SIGTERM, for the SIGKILL deadline.
    pub stop_signalled_at: Option<f64>,
    /// The task's own network namespace (`awsvpc`), while it exists.
    #[serde(default)]
    pub netns: Option<PathBuf>,
}

/// What the supervisor needs from its surroundings.
pub struct SupervisorConfig {
    pub state_dir: PathBuf,
    /// The instance's cgroup path (under each controller), parent of every task's.
    pub cgroup_root: String,
    /// The network namespace `host` tasks join: the agent's own.
    pub host_netns: PathBuf,
    /// The instance's interface `awsvpc` tasks' interfaces hang off.
    pub uplink: String,
}

/// A change the supervisor hands to the agent's connection as it makes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A task's report changed.
    Task(TaskReport),
    /// New output of a container.
    Logs(LogBatch),
}

pub struct Supervisor {
    config: SupervisorConfig,
    runtime: Arc<dyn Runtime>,
    images: Box<dyn ImageSource>,
    clock: Arc<dyn Fn() -> f64 + Send + Sync>,
    tasks: BTreeMap<String, LocalTask>,
    desired: Option<Vec<TaskSpec>>,
    probes: std::sync::Mutex<BTreeMap<String, Probe>>,
}

fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The runtime id of a task's container: `<task id>-<container name>` (characters other than
/// `[A-Za-z0-9_-]` become `_`), what DescribeTasks reports as `runtimeId`.
pub fn runtime_id(task_arn: &str, container: &str) -> String {
    let safe: String = container
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}-{safe}", task_id(task_arn))
}

impl Supervisor {
    /// Opens the supervisor, re-adopting the tasks recorded in the state dir.
    pub fn open(
        config: SupervisorConfig,
        runtime: Arc<dyn Runtime>,
        images: Box<dyn ImageSource>,
        clock: Arc<dyn Fn() -> f64 + Send + Sync>,
    ) -> std::io::Result<Self> {
        let dir = config.state_dir.join("tasks");
        std::fs::create_dir_all(&dir)?;
        let mut tasks = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path).map(|b| serde_json::from_slice::<LocalTask>(&b)) {
                Ok(Ok(t)) => {
                    tasks.insert(t.spec.task_arn.clone(), t);
                }
                _ => tracing::warn!(path = %path.display(), "ignoring an unreadable task record"),
            }
        }
        Ok(Self {
            config,
            runtime,
            images,
            clock,
            tasks,
            desired: None,
            probes: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// Reports of every task the agent knows, for the hello.
    pub fn reports(&self) -> Vec<TaskReport> {
        self.tasks.values().map(|t| t.report.clone()).collect()
    }

    /// A new desired set from the server.
    pub fn set_desired(&mut self, tasks: Vec<TaskSpec>) {
        self.desired = Some(tasks);
    }

    fn save(&self, t: &LocalTask) {
        let path = self
            .config
            .state_dir
            .join("tasks")
            .join(format!("{}.json", task_id(&t.spec.task_arn)));
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec(t)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot record task state");
        }
    }

    fn forget(&mut self, arn: &str) {
        if let Some(t) = self.tasks.remove(arn) {
            for c in &t.containers {
                if let Err(e) = self.runtime.remove(&c.runtime_id) {
                    tracing::warn!(container = c.runtime_id, error = %e, "cannot remove container");
                }
            }
            let path = self
                .config
                .state_dir
                .join("tasks")
                .join(format!("{}.json", task_id(arn)));
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_dir_all(self.log_dir(arn));
            // Its private volumes.
            let dir = self.task_dir(arn);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the task's directory");
                }
            }
        }
    }

    fn log_dir(&self, arn: &str) -> PathBuf {
        self.config.state_dir.join("logs").join(task_id(arn))
    }

    /// The task's own directory (its private volumes), next to its record; never `tasks/`
    /// itself, whatever the ARN.
    fn task_dir(&self, arn: &str) -> PathBuf {
        let id = match task_id(arn) {
            id @ ("" | "." | "..") => format!("_{id}"),
            id => id.to_string(),
        };
        self.config.state_dir.join("tasks").join(id)
    }

    /// One converging pass. Returns the reports that changed and new output.
    pub fn converge(&mut self) -> (Vec<TaskReport>, Vec<LogBatch>) {
        let mut reports = vec![];
        let mut logs = vec![];
        self.converge_with(&|| None, &mut |u| match u {
            Update::Task(r) => reports.push(r),
            Update::Logs(b) => logs.push(b),
        });
        (reports, logs)
    }

    /// One converging pass that hands every change to `emit` as soon as it is
    /// made, and takes a newer desired set from `inbox` between two tasks.
    ///
    /// Tasks new to the agent go first: they are prepared and their containers
    /// started, and their reports emitted, before the pass walks the tasks it
    /// already runs. A desired set that arrives during the walk is taken at
    /// the next task, so a new task never waits for the rest of a pass.
    /// Returns whether a desired set arrived during the pass (run another).
    pub fn converge_with(
        &mut self,
        inbox: &dyn Fn() -> Option<Vec<TaskSpec>>,
        emit: &mut dyn FnMut(Update),
    ) -> bool {
        let mut visited = std::collections::BTreeSet::new();
        self.absorb(&mut visited, emit);
        let mut again = false;
        let arns: Vec<String> = self.tasks.keys().cloned().collect();
        for arn in arns {
            if let Some(desired) = inbox() {
                self.desired = Some(desired);
                self.absorb(&mut visited, emit);
                again = true;
            }
            if visited.insert(arn.clone()) {
                let now = (self.clock)();
                self.step(&arn, now, emit);
            }
        }
        again
    }

    /// Applies the desired set: starts the tasks new to the agent (and moves
    /// them along at once), and marks what the server no longer wants.
    fn absorb(
        &mut self,
        visited: &mut std::collections::BTreeSet<String>,
        emit: &mut dyn FnMut(Update),
    ) {
        let Some(desired) = self.desired.clone() else {
            return;
        };
        for spec in &desired {
            if !self.tasks.contains_key(&spec.task_arn)
                && spec.desired_status == DesiredStatus::Running
            {
                let now = (self.clock)();
                let t = self.start_task(spec, now);
                emit(Update::Task(t.report.clone()));
                self.save(&t);
                self.tasks.insert(spec.task_arn.clone(), t);
                visited.insert(spec.task_arn.clone());
                let now = (self.clock)();
                self.step(&spec.task_arn, now, emit);
            }
        }
        // Desired status changes (StopTask) and tasks the server no longer wants.
        for (arn, t) in self.tasks.iter_mut() {
            match desired.iter().find(|s| &s.task_arn == arn) {
                Some(s) => {
                    t.spec.desired_status = s.desired_status;
                    if let Some(cap) = s.stop_timeout_cap {
                        t.spec.stop_timeout_cap =
                            Some(t.spec.stop_timeout_cap.map_or(cap, |c| c.min(cap)));
                    }
                }
                None if t.report.last_status == "STOPPED" => {}
                None => t.spec.desired_status = DesiredStatus::Stopped,
            }
        }
    }

    /// Observes one task, starts what is ready, ships its output, emits what
    /// changed, and forgets it once it is STOPPED and no longer desired.
    fn step(&mut self, arn: &str, now: f64, emit: &mut dyn FnMut(Update)) {
        let Some(mut t) = self.tasks.remove(arn) else {
            return;
        };
        let before = t.report.clone();
        self.observe(&mut t, now);
        // Exits just observed may satisfy other containers' dependsOn.
        let can_start = t.spec.desired_status == DesiredStatus::Running
            && t.report.last_status != "STOPPED"
            && t.stop_signalled_at.is_none();
        if can_start {
            let moved = |t: &LocalTask| {
                t.containers
                    .iter()
                    .filter(|c| c.started || c.skipped)
                    .count()
            };
            let before_start = moved(&t);
            t = self.start_ready(t, now);
            if moved(&t) != before_start {
                self.observe(&mut t, now);
            }
        }
        let done = t.report.last_status == "STOPPED";
        if done && t.netns.is_some() {
            // Its address goes back to the pool once the server hears STOPPED: free it here first.
            match crate::network::delete_task_netns(task_id(arn)) {
                Ok(()) => t.netns = None,
                Err(e) => {
                    tracing::warn!(task = arn, error = %e, "cannot remove the task network")
                }
            }
        }
        // Output first, so a STOPPED report comes after the last lines.
        for b in self.ship_logs(&mut t, now) {
            emit(Update::Logs(b));
        }
        if t.report != before {
            emit(Update::Task(t.report.clone()));
            self.save(&t);
        }
        let forgotten = done
            && self
                .desired
                .as_ref()
                .is_some_and(|d| !d.iter().any(|s| s.task_arn == arn));
        self.tasks.insert(arn.to_string(), t);
        if forgotten {
            self.forget(arn);
        }
    }

    fn start_task(&self, spec: &TaskSpec, now: f64) -> LocalTask {
        let mut t = LocalTask {
            spec: spec.clone(),
            containers: spec
                .containers
                .iter()
                .map(|c| LocalContainer {
                    name: c.name.clone().unwrap_or_default(),
                    runtime_id: runtime_id(&spec.task_arn, c.name.as_deref().unwrap_or("")),
                    essential: c.essential.unwrap_or(true),
                    ..Default::default()
                })
                .collect(),
            report: TaskReport {
                task_arn: spec.task_arn.clone(),
                last_status: "PENDING".into(),
                pull_started_at: Some(now),
                ..Default::default()
            },
            stop_signalled_at: None,
            netns: None,
        };
        // Pull every image first: a task starts only when all its images are here.
        let mut prepared = vec![];
        for c in &spec.containers {
            let image = c.image.clone().unwrap_or_default();
            match self.images.prepare(&image) {
                Ok(p) => prepared.push(p),
                Err(e) => {
                    let reason = format!("CannotPullContainerError: {image}: {e:#}");
                    return self.failed_to_start(t, now, reason);
                }
            }
        }
        t.report.pull_stopped_at = Some((self.clock)());
        // The task's volumes: host paths and private directories the containers mount.
        match crate::volumes::resolve(
            &spec.volumes,
            &spec.containers,
            &self.task_dir(&spec.task_arn),
        ) {
            Ok(mut mounts) => {
                for lc in t.containers.iter_mut() {
                    lc.mounts = mounts.remove(&lc.name).unwrap_or_default();
                }
            }
            Err(e) => return self.failed_to_start(t, now, e.0),
        }
        // `awsvpc`: the task's own namespace, with its own address on the instance's network.
        if let (true, Some(a)) = (spec.network_mode == "awsvpc", spec.address) {
            let addr = crate::network::TaskAddress {
                address: a.address,
                prefix: a.prefix,
                gateway: a.gateway,
            };
            match crate::network::create_task_netns(
                task_id(&spec.task_arn),
                &self.config.uplink,
                &addr,
            ) {
                Ok(path) => {
                    t.netns = Some(path);
                    t.report.private_ipv4_address = Some(a.address.to_string());
                }
                Err(e) => {
                    let reason =
                        format!("ResourceInitializationError: cannot set up the task network: {e}");
                    return self.failed_to_start(t, now, reason);
                }
            }
        }
        for (lc, image) in t.containers.iter_mut().zip(prepared) {
            lc.layers = image.layers;
            lc.image = Some(image.config);
        }
        // Images and network are ready: ECS's ACTIVATING. The containers start
        // in the same pass (see `converge`), which then reports RUNNING.
        t.report.last_status = "ACTIVATING".into();
        t
    }

    /// Starts the containers whose `dependsOn` conditions now hold. ECS's
    /// conditions: START (the dependency started), COMPLETE (it exited),
    /// SUCCESS (it exited 0), HEALTHY (its health check passed).
    fn start_ready(&self, mut t: LocalTask, now: f64) -> LocalTask {
        loop {
            let mut progressed = false;
            for i in 0..t.containers.len() {
                let c = &t.containers[i];
                if c.started || c.skipped || c.exit_code.is_some() {
                    continue;
                }
                let Some(def) = t
                    .spec
                    .containers
                    .iter()
                    .find(|d| d.name.as_deref() == Some(c.name.as_str()))
                    .cloned()
                else {
                    continue;
                };
                let mut ready = true;
                let mut impossible: Option<String> = None;
                for dep in def.depends_on.iter().flatten() {
                    let name = dep.container_name.as_deref().unwrap_or("");
                    let Some(d) = t.containers.iter().find(|x| x.name == name) else {
                        impossible =
                            Some(format!("dependency {name} is not a container of the task"));
                        break;
                    };
                    use berth_model::ecs::ContainerCondition as C;
                    let exited = d.exit_code.is_some() || d.skipped;
                    match dep.condition.unwrap_or(C::Start) {
                        C::Start => ready &= d.started || exited,
                        C::Healthy => {
                            if d.health.as_deref() == Some("UNHEALTHY") || exited {
                                impossible =
                                    Some(format!("dependency {name} did not become healthy"));
                            }
                            ready &= d.health.as_deref() == Some("HEALTHY");
                        }
                        C::Complete => ready &= exited,
                        C::Success => {
                            if d.skipped || d.exit_code.is_some_and(|code| code != 0) {
                                impossible =
                                    Some(format!("dependency {name} did not exit successfully"));
                            }
                            ready &= d.exit_code == Some(0);
                        }
                    }
                }
                if let Some(why) = impossible {
                    let c = &mut t.containers[i];
                    c.skipped = true;
                    c.reason = Some(format!("CannotStartContainerError: {why}"));
                    progressed = true;
                    continue;
                }
                if !ready {
                    continue;
                }
                let c = &t.containers[i];
                let image = crate::images::Prepared {
                    layers: c.layers.clone(),
                    config: c.image.clone().unwrap_or_default(),
                    digest: String::new(),
                };
                let mut launch = self.launch_for(t.netns.as_deref(), &t.spec, &def, image);
                launch.mounts = c.mounts.clone();
                if let Err(e) = self.runtime.start(&launch) {
                    let msg = format!("CannotStartContainerError: {}: {e}", c.name);
                    for started in t.containers.iter().filter(|x| x.started) {
                        let _ = self.runtime.signal(&started.runtime_id, SIGKILL);
                    }
                    return self.failed_to_start(t, now, msg);
                }
                t.containers[i].started = true;
                progressed = true;
            }
            if !progressed {
                return t;
            }
        }
    }

    fn failed_to_start(&self, mut t: LocalTask, now: f64, reason: String) -> LocalTask {
        tracing::warn!(task = t.spec.task_arn, reason, "task failed to start");
        t.report.last_status = "STOPPED".into();
        t.report.stop_code = Some("TaskFailedToStart".into());
        t.report.stopped_reason = Some(reason.clone());
        t.report.execution_stopped_at = Some(now);
        t.report.containers = t
            .containers
            .iter()
            .map(|c| ContainerReport {
                name: c.name.clone(),
                runtime_id: None,
                last_status: "STOPPED".into(),
                reason: Some(reason.clone()),
                ..Default::default()
            })
            .collect();
        t
    }

    fn launch_for(
        &self,
        netns: Option<&Path>,
        spec: &TaskSpec,
        c: &ContainerDefinition,
        image: crate::images::Prepared,
    ) -> ContainerLaunch {
        let name = c.name.clone().unwrap_or_default();
        // `awsvpc` tasks share the instance's network for now; a namespace per task comes later.
        let network = match (spec.network_mode.as_str(), netns) {
            (_, Some(path)) => Network::Join(path.to_path_buf()),
            ("none", None) => Network::None,
            // `awsvpc` without an address of its own (a provider without task
            // networks) shares the instance's network, as `host` does.
            (_, None) => Network::Host(self.config.host_netns.clone()),
        };
        ContainerLaunch {
            id: runtime_id(&spec.task_arn, &name),
            layers: image.layers,
            image: image.config,
            definition: c.clone(),
            network,
            cgroup_parent: format!(
                "{}/task-{}",
                self.config.cgroup_root,
                task_id(&spec.task_arn)
            ),
            hostname: c.hostname.clone(),
            log_dir: self.log_dir(&spec.task_arn).join(&name),
            extra_env: vec![],
            gpu_ids: spec.gpu_ids.get(&name).cloned().unwrap_or_default(),
            mounts: vec![],
        }
    }

    /// Reads the runtime's view of a task and moves it along.
    fn observe(&self, t: &mut LocalTask, now: f64) {
        if t.report.last_status == "STOPPED" {
            return;
        }
        let mut statuses = vec![];
        for c in &t.containers {
            let s = if c.started {
                self.runtime
                    .status(&c.runtime_id)
                    .unwrap_or(ContainerStatus::Missing)
            } else {
                ContainerStatus::Missing
            };
            statuses.push(s);
        }
        for (c, st) in t.containers.iter_mut().zip(&statuses) {
            let def = t
                .spec
                .containers
                .iter()
                .find(|d| d.name.as_deref() == Some(c.name.as_str()));
            if let (Some(hc), ContainerStatus::Running { started_at, .. }) =
                (def.and_then(|d| d.health_check.as_ref()), st)
            {
                self.probe(c, hc, *started_at, now);
            }
        }
        let mut started_at: Option<f64> = None;
        let mut essential_exit: Option<String> = None;
        let mut all_exited = true;
        let started_any = t.containers.iter().any(|c| c.started);
        for (c, s) in t.containers.iter_mut().zip(&statuses) {
            match s {
                ContainerStatus::Running { started_at: at, .. } => {
                    all_exited = false;
                    started_at = Some(started_at.map_or(*at, |x: f64| x.max(*at)));
                }
                ContainerStatus::Exited {
                    code,
                    oom_killed,
                    started_at: at,
                    ..
                } => {
                    // A container that ran and exited between two looks still started.
                    started_at = Some(started_at.map_or(*at, |x: f64| x.max(*at)));
                    c.exit_code = Some(*code);
                    if *oom_killed {
                        c.reason =
                            Some("OutOfMemoryError: Container killed due to memory usage".into());
                    }
                    if c.essential && essential_exit.is_none() {
                        essential_exit = Some(c.name.clone());
                    }
                }
                ContainerStatus::Missing => {
                    if c.started && c.exit_code.is_none() {
                        c.reason = Some("The container is gone from the runtime.".into());
                        c.exit_code = Some(137);
                        if c.essential && essential_exit.is_none() {
                            essential_exit = Some(c.name.clone());
                        }
                    }
                }
            }
        }
        let wants_stop = t.spec.desired_status == DesiredStatus::Stopped;
        // A container still waiting on its dependencies keeps the task going.
        let waiting = t
            .containers
            .iter()
            .any(|c| !c.started && !c.skipped && c.exit_code.is_none());
        if waiting && !wants_stop && essential_exit.is_none() {
            all_exited = false;
        }
        for c in t.containers.iter().filter(|c| c.skipped && c.essential) {
            if essential_exit.is_none() {
                essential_exit = Some(c.name.clone());
            }
        }
        if (wants_stop || essential_exit.is_some()) && !all_exited {
            // Stop what still runs: SIGTERM once, SIGKILL after the stop timeout.
            let first = t.stop_signalled_at.is_none();
            let since = *t.stop_signalled_at.get_or_insert(now);
            for (c, s) in t.containers.iter().zip(&statuses) {
                if let ContainerStatus::Running { .. } = s {
                    let def = t
                        .spec
                        .containers
                        .iter()
                        .find(|d| d.name.as_deref() == Some(c.name.as_str()));
                    let timeout = def
                        .and_then(|d| d.stop_timeout)
                        .map_or(DEFAULT_STOP_TIMEOUT, f64::from)
                        .min(t.spec.stop_timeout_cap.map_or(f64::INFINITY, f64::from));
                    if first {
                        let _ = self.runtime.signal(&c.runtime_id, SIGTERM);
                    } else if now - since >= timeout {
                        let _ = self.runtime.signal(&c.runtime_id, SIGKILL);
                    }
                }
            }
            if essential_exit.is_some() && !wants_stop && t.report.stop_code.is_none() {
                t.report.stop_code = Some("EssentialContainerExited".into());
                t.report.stopped_reason = Some("Essential container in task exited".into());
            }
            t.report.last_status = "STOPPING".into();
        } else if all_exited && (started_any || essential_exit.is_some()) {
            if essential_exit.is_some() && !wants_stop && t.report.stop_code.is_none() {
                t.report.stop_code = Some("EssentialContainerExited".into());
                t.report.stopped_reason = Some("Essential container in task exited".into());
            }
            t.report.last_status = "STOPPED".into();
            t.report.execution_stopped_at.get_or_insert(now);
        } else if statuses
            .iter()
            .any(|s| matches!(s, ContainerStatus::Running { .. }))
        {
            t.report.last_status = "RUNNING".into();
        }
        if t.report.started_at.is_none() {
            t.report.started_at = started_at;
        }
        t.report.containers = t
            .containers
            .iter()
            .zip(&statuses)
            .map(|(c, s)| ContainerReport {
                name: c.name.clone(),
                runtime_id: Some(c.runtime_id.clone()),
                last_status: match s {
                    ContainerStatus::Running { .. } => "RUNNING".into(),
                    ContainerStatus::Exited { .. } => "STOPPED".into(),
                    ContainerStatus::Missing if c.exit_code.is_some() => "STOPPED".into(),
                    ContainerStatus::Missing => "PENDING".into(),
                },
                exit_code: c.exit_code,
                reason: c.reason.clone(),
                health_status: c.health.clone(),
                image_digest: None,
            })
            .collect();
    }

    /// Runs a container's health check as ECS does: every `interval` seconds
    /// (default 30), each run limited to `timeout` (default 5); HEALTHY after a
    /// success, UNHEALTHY after `retries` (default 3) failures in a row;
    /// failures within `startPeriod` do not count. Checks run on their own
    /// threads so a slow one never holds up the others.
    fn probe(
        &self,
        c: &mut LocalContainer,
        hc: &berth_model::ecs::HealthCheck,
        started_at: f64,
        now: f64,
    ) {
        let command = hc.command.clone().unwrap_or_default();
        let argv: Vec<String> = match command.split_first() {
            Some((kind, rest)) if kind == "CMD-SHELL" => {
                vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
            }
            Some((kind, rest)) if kind == "CMD" => rest.to_vec(),
            _ => return,
        };
        if argv.is_empty() {
            return;
        }
        let interval = f64::from(hc.interval.unwrap_or(30).max(1));
        let timeout = std::time::Duration::from_secs(
            u64::try_from(hc.timeout.unwrap_or(5).max(1)).unwrap_or(5),
        );
        let retries = hc.retries.unwrap_or(3).max(1);
        let grace = f64::from(hc.start_period.unwrap_or(0).max(0));
        c.health.get_or_insert_with(|| "UNKNOWN".into());
        let Ok(mut probes) = self.probes.lock() else {
            return;
        };
        let p = probes.entry(c.runtime_id.clone()).or_insert(Probe {
            next_at: now,
            failures: 0,
            in_flight: None,
        });
        if let Some(rx) = &p.in_flight {
            match rx.try_recv() {
                Ok(result) => {
                    p.in_flight = None;
                    p.next_at = now + interval;
                    if result == Some(0) {
                        p.failures = 0;
                        c.health = Some("HEALTHY".into());
                    } else if now >= started_at + grace {
                        p.failures += 1;
                        if p.failures >= retries {
                            c.health = Some("UNHEALTHY".into());
                        }
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => p.in_flight = None,
            }
            return;
        }
        if now < p.next_at {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let runtime = self.runtime.clone();
        let id = c.runtime_id.clone();
        std::thread::spawn(move || {
            let result = runtime.exec(&id, &argv, timeout).unwrap_or(Some(-1));
            let _ = tx.send(result);
        });
        p.in_flight = Some(rx);
    }

    /// New output of a task's containers since the last pass.
    fn ship_logs(&self, t: &mut LocalTask, now: f64) -> Vec<LogBatch> {
        let mut out = vec![];
        let dir = self.log_dir(&t.spec.task_arn);
        for c in t.containers.iter_mut() {
            let mut lines = vec![];
            for (i, stream) in ["stdout", "stderr"].iter().enumerate() {
                let path = dir.join(&c.name).join(format!("{stream}.log"));
                let (text, new_offset) = read_from(&path, c.shipped[i]);
                c.shipped[i] = new_offset;
                for l in text.lines() {
                    lines.push(LogLine {
                        timestamp: now,
                        stream: (*stream).to_string(),
                        message: l.to_string(),
                    });
                }
            }
            if !lines.is_empty() {
                out.push(LogBatch {
                    task_arn: t.spec.task_arn.clone(),
                    container: c.name.clone(),
                    lines,
                });
            }
        }
        out
    }
}

/// Complete lines of a file from `offset`, and the offset after them.
fn read_from(path: &Path, offset: u64) -> (String, u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (String::new(), offset);
    };
    if f.seek(std::io::SeekFrom::Start(offset)).is_err() {
        return (String::new(), offset);
    }
    let mut buf = Vec::new();
    if f.take(MAX_LOG_CHUNK).read_to_end(&mut buf).is_err() {
        return (String::new(), offset);
    }
    // Ship whole lines only; a partial last line waits for its newline (or the cap).
    let end = match buf.iter().rposition(|b| *b == b'\n') {
        Some(p) => p + 1,
        None if buf.len() as u64 >= MAX_LOG_CHUNK => buf.len(),
        None => 0,
    };
    buf.truncate(end);
    (
        String::from_utf8_lossy(&buf).into_owned(),
        offset + end as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::Prepared;
    use crate::runtime::{ContainerStatus, RuntimeError};
    use berth_model::ecs::{ContainerCondition, ContainerDependency};
    use std::sync::Mutex;

    /// A runtime that records what it is told and whose containers exit when a test says so.
    #[derive(Default)]
    struct Fake {
        started: Mutex<Vec<String>>,
        signals: Mutex<Vec<(String, i32)>>,
        state: Mutex<BTreeMap<String, ContainerStatus>>,
        mounts: Mutex<BTreeMap<String, Vec<BindMount>>>,
    }

    impl Fake {
        fn exit(&self, id: &str, code: i32) {
            self.state.lock().expect("lock").insert(
                id.to_string(),
                ContainerStatus::Exited {
                    code,
                    oom_killed: false,
                    started_at: 1.0,
                    finished_at: 2.0,
                },
            );
        }
    }

    impl Runtime for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn start(&self, launch: &ContainerLaunch) -> Result<(), RuntimeError> {
            if launch.definition.image.as_deref() == Some("broken") {
                return Err(RuntimeError::InvalidConfig("broken image".into()));
            }
            self.started.lock().expect("lock").push(launch.id.clone());
            self.mounts
                .lock()
                .expect("lock")
                .insert(launch.id.clone(), launch.mounts.clone());
            self.state.lock().expect("lock").insert(
                launch.id.clone(),
                ContainerStatus::Running {
                    pid: 42,
                    started_at: 1.0,
                },
            );
            Ok(())
        }
        fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
            Ok(self
                .state
                .lock()
                .expect("lock")
                .get(id)
                .cloned()
                .unwrap_or(ContainerStatus::Missing))
        }
        fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
            self.signals
                .lock()
                .expect("lock")
                .push((id.to_string(), signal));
            // The container honours SIGKILL at once and SIGTERM only when told (see `exit`).
            if signal == SIGKILL {
                self.exit(id, 137);
            }
            Ok(())
        }
        fn remove(&self, id: &str) -> Result<(), RuntimeError> {
            self.state.lock().expect("lock").remove(id);
            Ok(())
        }
        fn list(&self) -> Result<Vec<String>, RuntimeError> {
            Ok(self.state.lock().expect("lock").keys().cloned().collect())
        }
        fn exec(
            &self,
            _id: &str,
            argv: &[String],
            _timeout: std::time::Duration,
        ) -> Result<Option<i32>, RuntimeError> {
            Ok(Some(if argv.last().is_some_and(|a| a == "true") {
                0
            } else {
                1
            }))
        }
    }

    struct NoImages;

    impl ImageSource for NoImages {
        fn prepare(&self, reference: &str) -> anyhow::Result<Prepared> {
            if reference == "missing" {
                anyhow::bail!("manifest unknown");
            }
            Ok(Prepared {
                layers: vec![],
                config: Default::default(),
                digest: String::new(),
            })
        }
    }

    fn container(
        name: &str,
        essential: bool,
        deps: &[(&str, ContainerCondition)],
    ) -> ContainerDefinition {
        ContainerDefinition {
            name: Some(name.into()),
            image: Some("busybox".into()),
            essential: Some(essential),
            stop_timeout: Some(5),
            depends_on: (!deps.is_empty()).then(|| {
                deps.iter()
                    .map(|(n, c)| ContainerDependency {
                        container_name: Some((*n).into()),
                        condition: Some(*c),
                    })
                    .collect()
            }),
            ..Default::default()
        }
    }

    fn spec(arn: &str, containers: Vec<ContainerDefinition>) -> TaskSpec {
        TaskSpec {
            task_arn: arn.into(),
            family: "f".into(),
            revision: 1,
            network_mode: "host".into(),
            desired_status: DesiredStatus::Running,
            cpu: None,
            memory_mib: None,
            containers,
            gpu_ids: Default::default(),
            address: None,
            volumes: vec![],
            stop_timeout_cap: None,
        }
    }

    struct Rig {
        dir: tempfile::TempDir,
        runtime: Arc<Fake>,
        now: Arc<Mutex<f64>>,
    }

    impl Rig {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("tempdir"),
                runtime: Arc::new(Fake::default()),
                now: Arc::new(Mutex::new(100.0)),
            }
        }
        fn open(&self) -> Supervisor {
            let now = self.now.clone();
            Supervisor::open(
                SupervisorConfig {
                    state_dir: self.dir.path().to_path_buf(),
                    cgroup_root: "/berth/test".into(),
                    host_netns: PathBuf::from("/proc/self/ns/net"),
                    uplink: "eth0".into(),
                },
                self.runtime.clone(),
                Box::new(NoImages),
                Arc::new(move || *now.lock().expect("lock")),
            )
            .expect("open")
        }
        fn advance(&self, secs: f64) {
            *self.now.lock().expect("lock") += secs;
        }
    }

    fn last(reports: &[TaskReport], arn: &str) -> TaskReport {
        reports
            .iter()
            .rev()
            .find(|r| r.task_arn == arn)
            .cloned()
            .expect("a report")
    }

    #[test]
    fn a_set_arriving_mid_pass_starts_its_new_task_before_the_walk_goes_on() {
        let rig = Rig::new();
        let mut s = rig.open();
        let old: Vec<TaskSpec> = (0..5)
            .map(|i| spec(&format!("arn:t/a{i}"), vec![container("app", true, &[])]))
            .collect();
        s.set_desired(old.clone());
        s.converge();
        // The next set adds one task and leaves a0 out (StopTask); it arrives
        // while the pass walks the tasks the agent already runs.
        let mut next = old[1..].to_vec();
        next.push(spec("arn:t/new", vec![container("app", true, &[])]));
        let inbox = Mutex::new(Some(next));
        let mut seen = vec![];
        let again = s.converge_with(&|| inbox.lock().expect("lock").take(), &mut |u| {
            if let Update::Task(r) = u {
                seen.push((r.task_arn, r.last_status));
            }
        });
        assert!(again, "a set that arrived mid-pass asks for another pass");
        // The new task is started and reported RUNNING as soon as its set is
        // taken: before a0, which the walk reaches after it, is stopped.
        let first = seen
            .iter()
            .position(|(a, st)| a == "arn:t/new" && st == "RUNNING")
            .expect("the new task reported RUNNING within the pass");
        let stop = seen
            .iter()
            .position(|(a, st)| a == "arn:t/a0" && st == "STOPPING");
        assert!(
            stop.is_none_or(|i| i > first),
            "the new task waited for the rest of the pass: {seen:?}"
        );
        assert!(rig
            .runtime
            .started
            .lock()
            .expect("lock")
            .contains(&"new-app".to_string()));
        // a0 is told to stop in this pass or the next one.
        s.converge();
        assert!(rig
            .runtime
            .signals
            .lock()
            .expect("lock")
            .contains(&("a0-app".to_string(), SIGTERM)));
    }

    #[test]
    fn an_essential_exit_stops_the_rest_and_reports_the_codes() {
        let rig = Rig::new();
        let mut s = rig.open();
        s.set_desired(vec![spec(
            "arn:t/1",
            vec![container("app", true, &[]), container("side", false, &[])],
        )]);
        let (r, _) = s.converge();
        assert_eq!(last(&r, "arn:t/1").last_status, "RUNNING");
        rig.runtime.exit("1-app", 3);
        let (r, _) = s.converge();
        let rep = last(&r, "arn:t/1");
        assert_eq!(rep.last_status, "STOPPING");
        assert_eq!(rep.stop_code.as_deref(), Some("EssentialContainerExited"));
        assert!(rig
            .runtime
            .signals
            .lock()
            .expect("lock")
            .contains(&("1-side".into(), SIGTERM)));
        // The side container ignores SIGTERM: SIGKILL after its stopTimeout.
        rig.advance(6.0);
        s.converge();
        let (r, _) = s.converge();
        let rep = last(&r, "arn:t/1");
        assert_eq!(rep.last_status, "STOPPED");
        let codes: Vec<Option<i32>> = rep.containers.iter().map(|c| c.exit_code).collect();
        assert_eq!(codes, vec![Some(3), Some(137)]);
    }

    #[test]
    fn depends_on_orders_starts_and_a_failed_success_condition_stops_the_task() {
        let rig = Rig::new();
        let mut s = rig.open();
        s.set_desired(vec![spec(
            "arn:t/2",
            vec![
                container("init", false, &[]),
                container("app", true, &[("init", ContainerCondition::Success)]),
            ],
        )]);
        s.converge();
        assert_eq!(
            *rig.runtime.started.lock().expect("lock"),
            vec!["2-init".to_string()]
        );
        rig.runtime.exit("2-init", 0);
        s.converge();
        assert_eq!(
            *rig.runtime.started.lock().expect("lock"),
            vec!["2-init".to_string(), "2-app".to_string()]
        );

        s.set_desired(vec![spec(
            "arn:t/3",
            vec![
                container("init", false, &[]),
                container("app", true, &[("init", ContainerCondition::Success)]),
            ],
        )]);
        s.converge();
        rig.runtime.exit("3-init", 1);
        let (r, _) = s.converge();
        let rep = last(&r, "arn:t/3");
        assert_eq!(rep.last_status, "STOPPED");
        assert!(!rig
            .runtime
            .started
            .lock()
            .expect("lock")
            .contains(&"3-app".to_string()));
        assert!(rep.containers[1]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("did not exit successfully")));
    }

    #[test]
    fn stop_is_sigterm_then_sigkill_and_the_task_is_forgotten_once_the_server_drops_it() {
        let rig = Rig::new();
        let mut s = rig.open();
        let mut t = spec("arn:t/4", vec![container("app", true, &[])]);
        s.set_desired(vec![t.clone()]);
        s.converge();
        t.desired_status = DesiredStatus::Stopped;
        s.set_desired(vec![t.clone()]);
        let (r, _) = s.converge();
        assert_eq!(last(&r, "arn:t/4").last_status, "STOPPING");
        assert_eq!(
            rig.runtime.signals.lock().expect("lock").as_slice(),
            &[("4-app".to_string(), SIGTERM)]
        );
        rig.runtime.exit("4-app", 143);
        let (r, _) = s.converge();
        let rep = last(&r, "arn:t/4");
        assert_eq!(rep.last_status, "STOPPED");
        assert_eq!(
            rep.stop_code, None,
            "a requested stop is the server's to name"
        );
        assert_eq!(rep.containers[0].exit_code, Some(143));
        s.set_desired(vec![]);
        s.converge();
        assert!(s.reports().is_empty());
        assert!(
            rig.runtime.list().expect("list").is_empty(),
            "the container was removed"
        );
    }

    #[test]
    fn a_spot_notice_caps_the_stop_timeout() {
        let rig = Rig::new();
        let mut s = rig.open();
        let mut slow = container("app", true, &[]);
        slow.stop_timeout = Some(600);
        let mut t = spec("arn:t/9", vec![slow]);
        s.set_desired(vec![t.clone()]);
        s.converge();
        t.desired_status = DesiredStatus::Stopped;
        t.stop_timeout_cap = Some(120);
        s.set_desired(vec![t.clone()]);
        s.converge();
        let signals = |rig: &Rig| rig.runtime.signals.lock().expect("lock").clone();
        assert_eq!(signals(&rig), [("9-app".to_string(), SIGTERM)]);
        rig.advance(119.0);
        s.converge();
        assert_eq!(signals(&rig).len(), 1, "within the notice: no SIGKILL yet");
        // A later set without the cap does not lift it.
        t.stop_timeout_cap = None;
        s.set_desired(vec![t.clone()]);
        rig.advance(1.5);
        s.converge();
        assert_eq!(
            signals(&rig),
            [
                ("9-app".to_string(), SIGTERM),
                ("9-app".to_string(), SIGKILL)
            ],
            "killed at the notice's end, not after its own 600 s"
        );
    }

    #[test]
    fn a_restarted_agent_readopts_running_containers_without_starting_them_again() {
        let rig = Rig::new();
        let t = spec("arn:t/5", vec![container("app", true, &[])]);
        {
            let mut s = rig.open();
            s.set_desired(vec![t.clone()]);
            s.converge();
        }
        let mut s = rig.open();
        let reports = s.reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].last_status, "RUNNING");
        s.set_desired(vec![t]);
        s.converge();
        assert_eq!(
            rig.runtime.started.lock().expect("lock").len(),
            1,
            "started once only"
        );
    }

    fn converge_until(
        s: &mut Supervisor,
        arn: &str,
        f: impl Fn(&TaskReport) -> bool,
    ) -> TaskReport {
        for _ in 0..200 {
            s.converge();
            if let Some(rep) = s.reports().into_iter().find(|r| r.task_arn == arn) {
                if f(&rep) {
                    return rep;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("the condition never held");
    }

    #[test]
    fn health_checks_make_containers_healthy_or_unhealthy_and_gate_depends_on() {
        let rig = Rig::new();
        let mut s = rig.open();
        let check = |cmd: &str| berth_model::ecs::HealthCheck {
            command: Some(vec!["CMD-SHELL".into(), cmd.into()]),
            interval: Some(5),
            retries: Some(2),
            ..Default::default()
        };
        let mut db = container("db", false, &[]);
        db.health_check = Some(check("true"));
        let app = container("app", true, &[("db", ContainerCondition::Healthy)]);
        s.set_desired(vec![spec("arn:t/8", vec![db, app])]);
        let rep = converge_until(&mut s, "arn:t/8", |r| {
            r.containers[0].health_status.as_deref() == Some("HEALTHY")
        });
        assert_eq!(rep.last_status, "RUNNING");
        let rep = converge_until(&mut s, "arn:t/8", |r| {
            r.containers[1].last_status == "RUNNING"
        });
        assert_eq!(rep.containers[1].runtime_id.as_deref(), Some("8-app"));

        let mut sick = container("web", true, &[]);
        sick.health_check = Some(check("false"));
        s.set_desired(vec![spec("arn:t/9", vec![sick])]);
        // Failures count one per interval; UNHEALTHY needs `retries` of them in a row.
        let mut seen_unknown_after_first_failure = false;
        let mut rep = None;
        for _ in 0..400 {
            rig.advance(1.0);
            s.converge();
            let r = s
                .reports()
                .into_iter()
                .find(|r| r.task_arn == "arn:t/9")
                .expect("report");
            match r.containers[0].health_status.as_deref() {
                Some("UNHEALTHY") => {
                    rep = Some(r);
                    break;
                }
                Some("UNKNOWN") => seen_unknown_after_first_failure = true,
                other => panic!("unexpected health {other:?}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(seen_unknown_after_first_failure);
        let rep = rep.expect("the container became UNHEALTHY");
        assert_eq!(
            rep.last_status, "RUNNING",
            "an unhealthy container keeps running; replacing it is the scheduler's call"
        );
    }

    #[test]
    fn missing_images_and_failed_starts_are_task_failed_to_start() {
        let rig = Rig::new();
        let mut s = rig.open();
        let mut missing = container("app", true, &[]);
        missing.image = Some("missing".into());
        let mut broken = container("app", true, &[]);
        broken.image = Some("broken".into());
        s.set_desired(vec![
            spec("arn:t/6", vec![missing]),
            spec("arn:t/7", vec![broken]),
        ]);
        let (r, _) = s.converge();
        let a = last(&r, "arn:t/6");
        assert_eq!(a.stop_code.as_deref(), Some("TaskFailedToStart"));
        assert!(a
            .stopped_reason
            .as_deref()
            .is_some_and(|m| m.contains("CannotPullContainerError") && m.contains("missing")));
        let b = last(&r, "arn:t/7");
        assert_eq!(b.stop_code.as_deref(), Some("TaskFailedToStart"));
        assert!(b
            .stopped_reason
            .as_deref()
            .is_some_and(|m| m.contains("CannotStartContainerError")));
    }

    #[test]
    fn volumes_reach_the_containers_and_the_task_directory_goes_with_the_task() {
        use berth_model::ecs::{HostVolumeProperties, MountPoint, Volume, VolumeFrom};
        let rig = Rig::new();
        let mut s = rig.open();
        let host = rig.dir.path().join("host-logs");
        let mut app = container("app", true, &[]);
        app.mount_points = Some(vec![
            MountPoint {
                source_volume: Some("logs".into()),
                container_path: Some("/var/log/app".into()),
                read_only: None,
            },
            MountPoint {
                source_volume: Some("scratch".into()),
                container_path: Some("/scratch".into()),
                read_only: Some(false),
            },
        ]);
        let mut shipper = container("shipper", false, &[]);
        shipper.volumes_from = Some(vec![VolumeFrom {
            source_container: Some("app".into()),
            read_only: Some(true),
        }]);
        let mut t = spec("arn:t/v1", vec![app, shipper]);
        t.volumes = vec![
            Volume {
                name: Some("logs".into()),
                host: Some(HostVolumeProperties {
                    source_path: Some(host.to_string_lossy().into_owned()),
                }),
                ..Default::default()
            },
            Volume {
                name: Some("scratch".into()),
                ..Default::default()
            },
        ];
        s.set_desired(vec![t.clone()]);
        let (r, _) = s.converge();
        assert_eq!(last(&r, "arn:t/v1").last_status, "RUNNING");
        let scratch = rig.dir.path().join("tasks/v1/volumes/scratch");
        let mounts = rig.runtime.mounts.lock().expect("lock").clone();
        let m = |src: &Path, dest: &str, ro: bool| BindMount {
            source: src.to_path_buf(),
            destination: dest.into(),
            read_only: ro,
        };
        assert_eq!(
            mounts["v1-app"],
            vec![
                m(&host, "/var/log/app", false),
                m(&scratch, "/scratch", false)
            ]
        );
        assert_eq!(
            mounts["v1-shipper"],
            vec![
                m(&host, "/var/log/app", true),
                m(&scratch, "/scratch", true)
            ]
        );
        assert!(host.is_dir(), "the missing host directory was created");
        assert!(scratch.is_dir());
        // Stopped and dropped by the server: the private volume goes, the host path stays.
        rig.runtime.exit("v1-app", 0);
        rig.runtime.exit("v1-shipper", 0);
        let (r, _) = s.converge();
        assert_eq!(last(&r, "arn:t/v1").last_status, "STOPPED");
        assert!(
            scratch.is_dir(),
            "kept while the server still lists the task"
        );
        s.set_desired(vec![]);
        s.converge();
        assert!(!rig.dir.path().join("tasks/v1").exists());
        assert!(host.is_dir());
    }

    #[test]
    fn a_mount_point_of_an_undeclared_volume_fails_the_task_start() {
        use berth_model::ecs::MountPoint;
        let rig = Rig::new();
        let mut s = rig.open();
        let mut app = container("app", true, &[]);
        app.mount_points = Some(vec![MountPoint {
            source_volume: Some("data".into()),
            container_path: Some("/data".into()),
            read_only: None,
        }]);
        s.set_desired(vec![spec("arn:t/v2", vec![app])]);
        let (r, _) = s.converge();
        let rep = last(&r, "arn:t/v2");
        assert_eq!(rep.last_status, "STOPPED");
        assert_eq!(rep.stop_code.as_deref(), Some("TaskFailedToStart"));
        assert_eq!(
            rep.stopped_reason.as_deref(),
            Some("CannotCreateContainerError: app: mount point names volume \"data\", which the task does not declare")
        );
        assert!(rig.runtime.started.lock().expect("lock").is_empty());
    }
}

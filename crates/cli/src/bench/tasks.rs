//! `berth bench tasks`: how long a task takes from RunTask to RUNNING on a warm
//! managed instance of a running `berth up`, against a bare `runc run -d` of the
//! same container, and how much memory the agents hold.
//!
//! Needs what `berth up` needs (root, runc) plus a static busybox; it does not
//! start `berth up` itself.
//!
//! # What it does
//!
//! 1. Setup, through the API: imports a one-layer image `bench-busybox:latest`
//!    built from a root file system holding `/bin/busybox` and its applet links
//!    (by running this binary's own `berth image import`, so its stdout stays
//!    the report's), CreateCluster `bench-tasks`, CreateCapacityProvider
//!    `bench-tasks-mi` for it ("already exists" is fine on a rerun) and
//!    RegisterTaskDefinition `bench-tasks`: one container `sleep 3600`, 16 MiB,
//!    `networkMode: host`, `MANAGED_INSTANCES`.
//! 2. Warm-up: one task until RUNNING (an instance launched, its agent
//!    connected, the image pulled and unpacked), then StopTask, and once it is
//!    STOPPED a first reading of the agents' memory.
//! 3. `--tasks` times, one at a time: RunTask (`count: 1`), then DescribeTasks
//!    every 5 ms (`--poll-ms`) until `lastStatus` is RUNNING. The latency runs
//!    from just before RunTask to the first answer saying RUNNING. Then
//!    StopTask, without waiting (the instance stays warm, and the stopped
//!    tasks wind down meanwhile). A task that stops instead, or takes longer
//!    than `--timeout`, fails the run.
//!    Each task's own timestamps (`createdAt`, `pullStartedAt`,
//!    `pullStoppedAt`, `startedAt`; one clock, as client, server and agents
//!    share the machine; the server's to the millisecond) split its latency
//!    into phases. Before each RunTask (unmeasured) DescribeContainerInstances
//!    counts the tasks not yet STOPPED on the instance: `sleep` as a
//!    container's PID 1 ignores SIGTERM, so a stopped task winds down for the
//!    30 s stop timeout, and the latency is also reported by that count.
//!    The baseline is interleaved with the measured tasks, so both see the
//!    same machine (a build or a test suite running meanwhile slows both): once
//!    a task is RUNNING, and before its StopTask, one `runc run -d` of an OCI
//!    bundle over the same root file system (`runc spec`, args `sleep 3600`,
//!    no terminal, no network namespace of its own as with `networkMode:
//!    host`) with a fresh container id: the time from invoking `runc run -d`
//!    until it returns; then, unmeasured, `runc state` must say `running`, and
//!    `runc delete -f`.
//! 4. Waits until every task is STOPPED, then 50 more runs of the baseline
//!    alone, on the quiet machine: the report gives berth's p50 against both.
//! 5. The agents (`berth agent …` processes, found through `/proc/*/cmdline`):
//!    VmRSS (and PSS) with no task on the instance after the measured tasks,
//!    and again with `--with-tasks` sleep tasks RUNNING on it, with the
//!    `berth shim` processes of those containers; then those tasks are stopped
//!    and waited for.
//!
//! Whatever the run started is stopped at the end, on failure and on Ctrl-C
//! too. The cluster, capacity provider, task definition and image stay (a rerun
//! reuses them); `berth up`'s Ctrl-C removes the instances.

use super::{ms, percentile, Output};
use crate::client::{Client, EndpointArgs};
use anyhow::{anyhow, bail, Context as _};
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the benchmark creates (and leaves for a rerun).
const CLUSTER: &str = "bench-tasks";
const CAPACITY_PROVIDER: &str = "bench-tasks-mi";
const FAMILY: &str = "bench-tasks";
const IMAGE: &str = "bench-busybox:latest";
/// The StopTask reason of the benchmark's tasks.
const STOP_REASON: &str = "berth bench tasks";
/// How often many tasks are described while waiting for all of them.
const POLL_MANY: Duration = Duration::from_millis(100);
/// The fewest `runc run -d` of the baseline.
const MIN_BASELINE_RUNS: u32 = 50;
/// ECS limits: tasks per RunTask, tasks per DescribeTasks.
const RUN_BATCH: u32 = 10;
const DESCRIBE_BATCH: usize = 100;
/// Busybox applets linked into the image.
const APPLETS: [&str; 12] = [
    "sh", "sleep", "echo", "cat", "ls", "true", "false", "env", "id", "ps", "hostname", "ip",
];

#[derive(clap::Args)]
pub struct TasksArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Tasks to time from RunTask to RUNNING, one after the other.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    tasks: u32,
    /// Sleep tasks RUNNING on the instance for the second reading of its agent's memory (0: skip it).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=2000))]
    with_tasks: u32,
    /// Report format.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// How often a measured task is described until it is RUNNING, in milliseconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    poll_ms: u64,
    /// The static busybox the image and the runc bundle are made of.
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// The runc of the baseline.
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    /// How long one task may take to reach RUNNING (or many to reach RUNNING or
    /// STOPPED together); the warm-up, which launches an instance, gets 5 times as long.
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    timeout: Duration,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match crate::client::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("the timeout must be above zero".into()),
        Err(e) => Err(format!("{e:#}")),
    }
}

// ---------------------------------------------------------------- the report

/// Latency percentiles of one way of starting the container, in milliseconds.
#[derive(Debug, Clone, Serialize)]
struct Starts {
    runs: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Starts {
    fn new(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let mean = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().map(Duration::as_secs_f64).sum::<f64>() / sorted.len() as f64
        };
        Self {
            runs: sorted.len(),
            p50: ms(percentile(&sorted, 50.0)),
            p90: ms(percentile(&sorted, 90.0)),
            p99: ms(percentile(&sorted, 99.0)),
            max: ms(sorted.last().copied().unwrap_or_default()),
            mean: (mean * 1e6).round() / 1e3,
        }
    }
}

/// One phase of a task's way to RUNNING over all measured tasks, in milliseconds.
#[derive(Debug, Clone, Serialize)]
struct PhaseStats {
    phase: &'static str,
    /// What happens in it.
    covers: &'static str,
    p50: f64,
    p90: f64,
    max: f64,
    mean: f64,
}

/// The phases, in order; with the same names as [`Phases`]' fields.
const PHASES: [(&str, &str); 5] = [
    (
        "run_task",
        "client before RunTask → createdAt: the request up to the task's creation",
    ),
    (
        "to_agent",
        "createdAt → pullStartedAt: commit, answer, scheduler tick, desired-set push, agent's converge pass",
    ),
    (
        "image",
        "pullStartedAt → pullStoppedAt: the agent finds the image (cached)",
    ),
    (
        "container_start",
        "pullStoppedAt → startedAt: bundle, shim, runc run",
    ),
    (
        "report",
        "startedAt → RUNNING seen: rest of the pass, report, server update, next DescribeTasks",
    ),
];

/// One task's phases, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Phases {
    run_task: f64,
    to_agent: f64,
    image: f64,
    container_start: f64,
    report: f64,
}

impl Phases {
    /// From the client's wall clock just before RunTask (`sent`, Unix seconds), the time
    /// RUNNING was seen (`seen`) and the task's own timestamps; `None` when one is missing.
    fn of(task: &Value, sent: f64, seen: f64) -> Option<Self> {
        let at = |k: &str| task.get(k).and_then(Value::as_f64);
        let created = at("createdAt")?;
        let pull_started = at("pullStartedAt")?;
        let pull_stopped = at("pullStoppedAt")?;
        let started = at("startedAt")?;
        let d = |a: f64, b: f64| ((b - a) * 1e6).round() / 1e3;
        Some(Self {
            run_task: d(sent, created),
            to_agent: d(created, pull_started),
            image: d(pull_started, pull_stopped),
            container_start: d(pull_stopped, started),
            report: d(started, seen),
        })
    }

    fn get(&self, name: &str) -> f64 {
        match name {
            "run_task" => self.run_task,
            "to_agent" => self.to_agent,
            "image" => self.image,
            "container_start" => self.container_start,
            _ => self.report,
        }
    }
}

fn phase_stats(all: &[Phases]) -> Vec<PhaseStats> {
    PHASES
        .iter()
        .map(|(name, covers)| {
            let mut v: Vec<f64> = all.iter().map(|p| p.get(name)).collect();
            v.sort_unstable_by(f64::total_cmp);
            let mean = if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            };
            PhaseStats {
                phase: name,
                covers,
                p50: percentile_f64(&v, 50.0),
                p90: percentile_f64(&v, 90.0),
                max: v.last().copied().unwrap_or_default(),
                mean: (mean * 1e3).round() / 1e3,
            }
        })
        .collect()
}

/// The nearest-rank percentile `p` (0–100) of sorted values, as [`percentile`].
fn percentile_f64(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One agent's resident memory.
#[derive(Debug, Clone, Serialize)]
struct AgentMemory {
    instance_id: String,
    pid: u32,
    /// Whether the benchmark's tasks ran on this instance.
    bench_instance: bool,
    /// VmRSS after the warm-up, before the measured tasks (the warm-up task
    /// STOPPED, so no task on the instance), KiB (none: not running then).
    warm_rss_kib: Option<u64>,
    warm_pss_kib: Option<u64>,
    /// VmRSS with no task on the instance after the measured tasks, KiB (none: the process was gone).
    idle_rss_kib: Option<u64>,
    /// Its proportional set size then (shared pages divided among their users), KiB.
    idle_pss_kib: Option<u64>,
    /// VmRSS with `with_tasks` sleep tasks RUNNING on the bench instance, KiB.
    with_tasks_rss_kib: Option<u64>,
    with_tasks_pss_kib: Option<u64>,
    /// `berth shim` processes of this instance at the second reading (one per
    /// running container), and their VmRSS and PSS summed, KiB.
    shims: usize,
    shims_rss_kib: u64,
    shims_pss_kib: u64,
}

impl AgentMemory {
    fn new(instance_id: &str, pid: u32, bench_instance: bool) -> Self {
        Self {
            instance_id: instance_id.to_string(),
            pid,
            bench_instance,
            warm_rss_kib: None,
            warm_pss_kib: None,
            idle_rss_kib: None,
            idle_pss_kib: None,
            with_tasks_rss_kib: None,
            with_tasks_pss_kib: None,
            shims: 0,
            shims_rss_kib: 0,
            shims_pss_kib: 0,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
struct Report {
    endpoint: String,
    started_at: String,
    /// CPUs of the machine (client, server, agents and containers share them).
    cpus: usize,
    cluster: &'static str,
    task_definition: String,
    image: String,
    /// The instances the measured tasks ran on.
    instances: Vec<String>,
    /// The warm-up task's RunTask → RUNNING (an instance launch included when there was none).
    warm_up_ms: f64,
    /// RunTask → first DescribeTasks answering RUNNING.
    berth: Starts,
    /// The RunTask call alone (client-measured round trip).
    run_task_call: Starts,
    /// The interval of those DescribeTasks calls, ms.
    poll_ms: u64,
    /// DescribeTasks calls per measured task until RUNNING, mean.
    describes_per_task: f64,
    /// Where the berth latency goes, from each task's own timestamps.
    phases: Vec<PhaseStats>,
    /// The berth latency by how many tasks were on the instance (stopped ones
    /// still winding down included).
    by_tasks_on_instance: Vec<LoadBucket>,
    /// `runc run -d` until it returns, one after each measured task (while it runs).
    runc: Starts,
    /// `runc run -d` until it returns, 50 more once every task has stopped.
    runc_quiet: Starts,
    /// berth p50 over the interleaved runc p50 (the goal is at most 2).
    ratio_p50: f64,
    /// berth p50 over the quiet runc p50.
    ratio_p50_quiet: f64,
    with_tasks: u32,
    agents: Vec<AgentMemory>,
    /// Every measurement, in order, ms.
    samples: Samples,
}

#[derive(Debug, Clone, Serialize)]
struct Samples {
    berth: Vec<f64>,
    runc: Vec<f64>,
    runc_quiet: Vec<f64>,
    /// Each measured task: its ARN, the client's wall clock just before RunTask
    /// (Unix seconds, to line up with logs and traces) and its phases.
    tasks: Vec<TaskSample>,
}

#[derive(Debug, Clone, Serialize)]
struct TaskSample {
    task_arn: String,
    sent_at: f64,
    /// Tasks not yet STOPPED on the bench's instances just before RunTask
    /// (`runningTasksCount` + `pendingTasksCount`; the stopped ones wind down meanwhile).
    tasks_on_instance: u32,
    phases: Phases,
}

/// The berth latency of the tasks started while `from..=to` tasks were on the instance.
#[derive(Debug, Clone, Serialize)]
struct LoadBucket {
    from: u32,
    to: u32,
    runs: usize,
    p50: f64,
    p90: f64,
}

/// Width of a [`LoadBucket`].
const LOAD_BUCKET: u32 = 50;

fn by_load(latencies: &[Duration], samples: &[TaskSample]) -> Vec<LoadBucket> {
    let mut buckets: BTreeMap<u32, Vec<Duration>> = BTreeMap::new();
    for (d, s) in latencies.iter().zip(samples) {
        buckets
            .entry(s.tasks_on_instance / LOAD_BUCKET)
            .or_default()
            .push(*d);
    }
    buckets
        .into_iter()
        .map(|(b, mut v)| {
            v.sort_unstable();
            LoadBucket {
                from: b * LOAD_BUCKET,
                to: b * LOAD_BUCKET + LOAD_BUCKET - 1,
                runs: v.len(),
                p50: ms(percentile(&v, 50.0)),
                p90: ms(percentile(&v, 90.0)),
            }
        })
        .collect()
}

// ---------------------------------------------------------------- the run

/// What the run started, so that it can be stopped however the run ends.
struct Cleanup {
    client: Arc<Client>,
    /// Tasks started and not yet asked to stop.
    unstopped: BTreeSet<String>,
    /// The baseline's container ids start with this.
    runc_prefix: String,
    runc: PathBuf,
    /// Tells the baseline loop to stop after its current container.
    runc_abort: Arc<AtomicBool>,
    runc_job: Option<tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>>,
}

impl Cleanup {
    async fn stop(&mut self, arn: &str) -> anyhow::Result<()> {
        self.client
            .ecs(
                "StopTask",
                &json!({ "cluster": CLUSTER, "task": arn, "reason": STOP_REASON }),
            )
            .await
            .with_context(|| format!("StopTask {arn}"))?;
        self.unstopped.remove(arn);
        Ok(())
    }

    /// Stops what is left: tasks, the baseline loop and its containers.
    async fn finish(&mut self) -> anyhow::Result<()> {
        let mut errors = vec![];
        for arn in std::mem::take(&mut self.unstopped) {
            let r = self
                .client
                .ecs(
                    "StopTask",
                    &json!({ "cluster": CLUSTER, "task": arn, "reason": STOP_REASON }),
                )
                .await;
            if let Err(e) = r {
                errors.push(format!("StopTask {arn}: {e:#}"));
            }
        }
        self.runc_abort.store(true, Ordering::Relaxed);
        if let Some(job) = self.runc_job.take() {
            let _ = job.await;
        }
        let (runc, prefix) = (self.runc.clone(), self.runc_prefix.clone());
        let left = tokio::task::spawn_blocking(move || delete_runc_containers(&runc, &prefix))
            .await
            .map_err(|e| anyhow!("{e}"))
            .and_then(|r| r);
        if let Err(e) = left {
            errors.push(format!("{e:#}"));
        }
        if !errors.is_empty() {
            bail!("cleaning up: {}", errors.join("; "));
        }
        Ok(())
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("berth-bench-tasks-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn stderr_bar(len: u64, prefix: &str, visible: bool) -> ProgressBar {
    super::stderr_bar(
        len,
        prefix,
        "{prefix:>12} [{bar:30}] {pos:>5}/{len:5} {elapsed_precise} {msg}",
        visible,
    )
}

/// What the machine must have: root, the static busybox and a runc that runs.
fn preflight(args: &TasksArgs) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the process's effective user.
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .context("cannot read /proc/self: berth bench tasks needs Linux with /proc")?;
    if uid != 0 {
        bail!("berth bench tasks runs containers with runc, as `berth up` does: run it as root");
    }
    if !args.busybox.is_file() {
        bail!(
            "{} is missing: install busybox-static (apt-get install busybox-static) or pass --busybox",
            args.busybox.display()
        );
    }
    let out = Command::new(&args.runc)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (apt-get install runc, or pass --runc)",
                args.runc.display()
            )
        })?;
    if !out.status.success() {
        bail!("`{} --version` failed", args.runc.display());
    }
    Ok(())
}

/// A root file system of the static busybox and its applet links.
fn busybox_rootfs(root: &Path, busybox: &Path) -> anyhow::Result<()> {
    let bin = root.join("bin");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    std::fs::copy(busybox, bin.join("busybox"))
        .with_context(|| format!("cannot copy {}", busybox.display()))?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(a))
            .with_context(|| format!("cannot link {}", bin.join(a).display()))?;
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

/// Pushes the root file system as [`IMAGE`] with `berth image import`; answers its output line (`NAME:TAG DIGEST`).
async fn import_image(endpoint: &str, rootfs: &Path) -> anyhow::Result<String> {
    let creds = crate::client::credentials()?;
    let exe = std::env::current_exe().context("cannot find the berth binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["image", "import", "--rootfs"])
        .arg(rootfs)
        .args(["--tag", IMAGE, "--endpoint", endpoint])
        .env("AWS_ACCESS_KEY_ID", &creds.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &creds.secret_access_key)
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| anyhow!("{e}"))?
        .context("cannot run `berth image import`")?;
    if !out.status.success() {
        bail!(
            "`berth image import --tag {IMAGE}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn task_definition() -> Value {
    json!({
        "family": FAMILY,
        "networkMode": "host",
        "requiresCompatibilities": ["MANAGED_INSTANCES"],
        "containerDefinitions": [{
            "name": "sleep",
            "image": IMAGE,
            "memory": 16,
            "essential": true,
            "command": ["sleep", "3600"]
        }]
    })
}

fn capacity_provider() -> Value {
    json!({
        "name": CAPACITY_PROVIDER,
        "cluster": CLUSTER,
        "managedInstancesProvider": {
            "infrastructureRoleArn": "arn:aws:iam::123456789012:role/ecsInfrastructureRole",
            "instanceLaunchTemplate": {
                "ec2InstanceProfileArn": "arn:aws:iam::123456789012:instance-profile/ecsInstanceProfile",
                "networkConfiguration": { "subnets": ["subnet-0123456789abcdef0"] },
                "instanceRequirements": {
                    "vCpuCount": { "min": 2, "max": 4 },
                    "memoryMiB": { "min": 8192, "max": 16384 }
                }
            }
        }
    })
}

/// Setup through the API; answers the task definition's ARN.
async fn setup(client: &Client) -> anyhow::Result<String> {
    client
        .ecs("CreateCluster", &json!({ "clusterName": CLUSTER }))
        .await
        .context("CreateCluster")?;
    match client
        .ecs("CreateCapacityProvider", &capacity_provider())
        .await
    {
        Ok(_) => {}
        Err(e)
            if e.downcast_ref::<crate::client::ApiError>()
                .is_some_and(|a| a.message.contains("already exists")) => {}
        Err(e) => return Err(e.context("CreateCapacityProvider")),
    }
    let td = client
        .ecs("RegisterTaskDefinition", &task_definition())
        .await
        .context("RegisterTaskDefinition")?;
    td.pointer("/taskDefinition/taskDefinitionArn")
        .and_then(Value::as_str)
        .map(str::to_string)
        .context("RegisterTaskDefinition answered no taskDefinition.taskDefinitionArn")
}

/// RunTask of `count` (≤ 10) tasks; answers their ARNs.
async fn run_tasks(
    client: &Client,
    cleanup: &mut Cleanup,
    td: &str,
    count: u32,
) -> anyhow::Result<Vec<String>> {
    let answer = client
        .ecs(
            "RunTask",
            &json!({
                "cluster": CLUSTER,
                "taskDefinition": td,
                "count": count,
                "capacityProviderStrategy": [{ "capacityProvider": CAPACITY_PROVIDER }]
            }),
        )
        .await
        .context("RunTask")?;
    let arns: Vec<String> = answer
        .get("tasks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("taskArn").and_then(Value::as_str).map(str::to_string))
        .collect();
    cleanup.unstopped.extend(arns.iter().cloned());
    match answer.get("failures").and_then(Value::as_array) {
        Some(f) if !f.is_empty() => bail!("RunTask answered failures: {}", Value::Array(f.clone())),
        _ => {}
    }
    if arns.len() != count as usize {
        bail!("RunTask started {} tasks, not {count}", arns.len());
    }
    Ok(arns)
}

/// What a stopped task says about why.
fn stop_story(task: &Value) -> String {
    let s = |k: &str| task.get(k).and_then(Value::as_str).unwrap_or("-");
    let containers: Vec<String> = task
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{} exit {} {}",
                c.get("name").and_then(Value::as_str).unwrap_or("?"),
                c.get("exitCode").map_or("-".into(), Value::to_string),
                c.get("reason").and_then(Value::as_str).unwrap_or("")
            )
        })
        .collect();
    format!(
        "stopCode {}, stoppedReason {:?}, containers [{}]",
        s("stopCode"),
        s("stoppedReason"),
        containers.join("; ")
    )
}

/// A task seen RUNNING: when, after how many DescribeTasks, and its document then.
struct Seen {
    at: Instant,
    describes: u32,
    task: Value,
}

/// Describes one task every `poll` until it is RUNNING; a task that stops, or
/// that is not RUNNING within `timeout`, is an error.
async fn until_running(
    client: &Client,
    arn: &str,
    poll: Duration,
    timeout: Duration,
) -> anyhow::Result<Seen> {
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut describes = 0;
    loop {
        tick.tick().await;
        let answer = client
            .ecs(
                "DescribeTasks",
                &json!({ "cluster": CLUSTER, "tasks": [arn] }),
            )
            .await
            .context("DescribeTasks")?;
        let at = Instant::now();
        describes += 1;
        let Some(task) = answer
            .get("tasks")
            .and_then(Value::as_array)
            .and_then(|t| t.first())
        else {
            bail!("DescribeTasks does not know {arn}: {answer}");
        };
        match task.get("lastStatus").and_then(Value::as_str) {
            Some("RUNNING") => {
                return Ok(Seen {
                    at,
                    describes,
                    task: task.clone(),
                })
            }
            Some("STOPPED") => bail!("{arn} stopped instead of running: {}", stop_story(task)),
            _ if at >= deadline => bail!(
                "{arn} is not RUNNING after {:?}: {}",
                timeout,
                task.get("lastStatus").unwrap_or(&Value::Null)
            ),
            _ => {}
        }
    }
}

/// Waits until every task of `arns` has `lastStatus` `want` (RUNNING or STOPPED);
/// waiting for RUNNING, a task that stops is an error.
async fn until_all(
    client: &Client,
    arns: &[String],
    want: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut tasks = Vec::with_capacity(arns.len());
        for chunk in arns.chunks(DESCRIBE_BATCH) {
            let answer = client
                .ecs(
                    "DescribeTasks",
                    &json!({ "cluster": CLUSTER, "tasks": chunk }),
                )
                .await
                .context("DescribeTasks")?;
            tasks.extend(
                answer
                    .get("tasks")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        let status = |t: &Value| {
            t.get("lastStatus")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        if want != "STOPPED" {
            if let Some(t) = tasks.iter().find(|t| status(t) == "STOPPED") {
                bail!(
                    "{} stopped instead of running: {}",
                    t.get("taskArn").and_then(Value::as_str).unwrap_or("a task"),
                    stop_story(t)
                );
            }
        }
        let done = tasks.iter().filter(|t| status(t) == want).count();
        if tasks.len() == arns.len() && done == arns.len() {
            return Ok(tasks);
        }
        if Instant::now() >= deadline {
            bail!(
                "{done} of {} tasks are {want} after {:?} ({} described)",
                arns.len(),
                timeout,
                tasks.len()
            );
        }
        tokio::time::sleep(POLL_MANY).await;
    }
}

/// The tasks not yet STOPPED on these container instances of the cluster.
async fn tasks_on(client: &Client, container_instances: &BTreeSet<String>) -> anyhow::Result<u32> {
    if container_instances.is_empty() {
        return Ok(0);
    }
    let list: Vec<&String> = container_instances.iter().collect();
    let answer = client
        .ecs(
            "DescribeContainerInstances",
            &json!({ "cluster": CLUSTER, "containerInstances": list }),
        )
        .await
        .context("DescribeContainerInstances")?;
    let count = |ci: &Value, k: &str| ci.get(k).and_then(Value::as_u64).unwrap_or(0);
    let total: u64 = answer
        .get("containerInstances")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|ci| count(ci, "runningTasksCount") + count(ci, "pendingTasksCount"))
        .sum();
    Ok(u32::try_from(total).unwrap_or(u32::MAX))
}

/// The instance ids (`i-…`) behind container instance ARNs of the cluster.
async fn instance_ids(
    client: &Client,
    container_instances: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    if container_instances.is_empty() {
        return Ok(BTreeMap::new());
    }
    let list: Vec<&String> = container_instances.iter().collect();
    let answer = client
        .ecs(
            "DescribeContainerInstances",
            &json!({ "cluster": CLUSTER, "containerInstances": list }),
        )
        .await
        .context("DescribeContainerInstances")?;
    Ok(answer
        .get("containerInstances")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ci| {
            Some((
                ci.get("containerInstanceArn")?.as_str()?.to_string(),
                ci.get("ec2InstanceId")?.as_str()?.to_string(),
            ))
        })
        .collect())
}

// ---------------------------------------------------------------- processes

/// A `berth SUBCOMMAND …` process.
#[derive(Debug, Clone, PartialEq)]
struct BerthProcess {
    pid: u32,
    argv: Vec<String>,
}

/// `argv` when `cmdline` (NUL-separated) is `…/berth SUBCOMMAND …`.
fn berth_argv(cmdline: &[u8], subcommand: &str) -> Option<Vec<String>> {
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let program = Path::new(argv.first()?).file_name()?.to_str()?;
    (program == "berth" && argv.get(1).map(String::as_str) == Some(subcommand)).then_some(argv)
}

/// Every running `berth SUBCOMMAND …`, from /proc/*/cmdline.
fn berth_processes(subcommand: &str) -> Vec<BerthProcess> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let mut out: Vec<BerthProcess> = dir
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            Some(BerthProcess {
                pid,
                argv: berth_argv(&cmdline, subcommand)?,
            })
        })
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

/// The value of `--flag VALUE` or `--flag=VALUE`.
fn flag_value(argv: &[String], flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    argv.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            argv.get(i + 1).cloned()
        } else {
            a.strip_prefix(&prefix).map(str::to_string)
        }
    })
}

/// VmRSS in KiB from the text of /proc/PID/status.
fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn rss_of(pid: u32) -> Option<u64> {
    vm_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Pss in KiB from the text of /proc/PID/smaps_rollup.
fn pss_kib(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn pss_of(pid: u32) -> Option<u64> {
    pss_kib(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// The running agents by instance id.
fn agents() -> BTreeMap<String, u32> {
    berth_processes("agent")
        .into_iter()
        .filter_map(|p| Some((flag_value(&p.argv, "--instance-id")?, p.pid)))
        .collect()
}

/// The shims of one instance (their state directory lies under the agent's):
/// how many, their VmRSS and their PSS summed.
fn shims_of(instance_id: &str) -> (usize, u64, u64) {
    let needle = format!("/{instance_id}/");
    berth_processes("shim")
        .into_iter()
        .filter(|p| p.argv.iter().skip(2).any(|a| a.contains(&needle)))
        .fold((0, 0, 0), |(n, rss, pss), p| {
            (
                n + 1,
                rss + rss_of(p.pid).unwrap_or(0),
                pss + pss_of(p.pid).unwrap_or(0),
            )
        })
}

// ---------------------------------------------------------------- runc

/// `runc spec`'s config with the benchmark's process, and no network namespace
/// of its own (`networkMode: host` joins an existing one).
fn baseline_spec(mut spec: Value) -> anyhow::Result<Value> {
    let process = spec
        .get_mut("process")
        .and_then(Value::as_object_mut)
        .context("the runc spec has no process")?;
    process.insert("terminal".into(), json!(false));
    process.insert("args".into(), json!(["sleep", "3600"]));
    if let Some(ns) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    {
        ns.retain(|n| n.get("type").and_then(Value::as_str) != Some("network"));
    }
    Ok(spec)
}

/// Makes the OCI bundle of the baseline in `bundle`, whose `rootfs` is already there.
fn make_bundle(runc: &Path, bundle: &Path) -> anyhow::Result<()> {
    let out = Command::new(runc)
        .arg("spec")
        .arg("--bundle")
        .arg(bundle)
        .stdin(Stdio::null())
        .output()
        .context("cannot run runc spec")?;
    if !out.status.success() {
        bail!(
            "runc spec failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let path = bundle.join("config.json");
    let spec: Value = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    std::fs::write(&path, serde_json::to_vec_pretty(&baseline_spec(spec)?)?)?;
    Ok(())
}

fn runc_out(runc: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(runc)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run runc {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "runc {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `runc run -d` `runs` times, each timed until it returns; the container must
/// then be running, and is deleted.
fn runc_baseline(
    runc: &Path,
    bundle: &Path,
    prefix: &str,
    runs: std::ops::Range<u32>,
    abort: &AtomicBool,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(runs.len());
    for i in runs {
        if abort.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let took = runc_once(runc, bundle, &format!("{prefix}{i}"))?;
        samples.push(took);
        bar.inc(1);
        bar.set_message(format!("{:.1} ms", ms(took)));
    }
    Ok(samples)
}

/// One `runc run -d` of container `id`, timed until it returns; the container
/// must then be running, and is deleted (not timed).
fn runc_once(runc: &Path, bundle: &Path, id: &str) -> anyhow::Result<Duration> {
    let err_path = bundle.join("runc.stderr");
    // The container inherits runc's stdio: no pipe that would keep us waiting.
    let err = std::fs::File::create(&err_path)
        .with_context(|| format!("cannot create {}", err_path.display()))?;
    let started = Instant::now();
    let status = Command::new(runc)
        .args(["run", "-d", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .status();
    let took = started.elapsed();
    let status = status.context("cannot run runc run")?;
    if !status.success() {
        let why = std::fs::read_to_string(&err_path).unwrap_or_default();
        let _ = runc_out(runc, &["delete", "-f", id]);
        bail!("runc run -d {id} failed ({status}): {}", why.trim());
    }
    let state: Value = serde_json::from_str(&runc_out(runc, &["state", id])?)
        .with_context(|| format!("runc state {id} is not JSON"))?;
    let running = state.get("status").and_then(Value::as_str) == Some("running");
    runc_out(runc, &["delete", "-f", id])?;
    if !running {
        bail!(
            "runc run -d {id} returned, but the container is {}",
            state.get("status").unwrap_or(&Value::Null)
        );
    }
    Ok(took)
}

/// Deletes the containers whose id starts with `prefix` (left by an interrupted baseline).
fn delete_runc_containers(runc: &Path, prefix: &str) -> anyhow::Result<()> {
    let list = runc_out(runc, &["list", "-q"])?;
    for id in list
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
    {
        runc_out(runc, &["delete", "-f", id])?;
    }
    Ok(())
}

// ---------------------------------------------------------------- the bench

/// Runs the benchmark in `tmp` (the root file system, the runc bundle).
async fn bench(
    args: &TasksArgs,
    client: &Client,
    cleanup: &mut Cleanup,
    tmp: &Path,
    progress: bool,
) -> anyhow::Result<Report> {
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let endpoint = args.endpoint.url();
    let poll = Duration::from_millis(args.poll_ms);
    let bundle = tmp.join("bundle");
    let rootfs = bundle.join("rootfs");
    busybox_rootfs(&rootfs, &args.busybox)?;

    // 1. Setup.
    eprintln!("setup: image {IMAGE}, cluster {CLUSTER}, capacity provider {CAPACITY_PROVIDER}, task definition {FAMILY}");
    let image = import_image(&endpoint, &rootfs).await?;
    let td = setup(client).await.context("setup failed")?;

    // 2. Warm-up.
    eprintln!("warm-up: one task until RUNNING (launches an instance if the cluster has none)");
    let t0 = Instant::now();
    let [arn] = <[String; 1]>::try_from(run_tasks(client, cleanup, &td, 1).await?)
        .map_err(|_| anyhow!("RunTask answered no task"))?;
    let seen = until_running(client, &arn, poll, args.timeout * 5)
        .await
        .context("warm-up")?;
    let warm_up = seen.at - t0;
    cleanup.stop(&arn).await?;
    eprintln!("warm-up task stopping (up to 30 s: sleep ignores SIGTERM), then the agents' memory");
    let stop_wait = args.timeout.max(Duration::from_secs(120));
    until_all(client, std::slice::from_ref(&arn), "STOPPED", stop_wait).await?;
    let warm: BTreeMap<String, (u32, Option<u64>, Option<u64>)> = agents()
        .into_iter()
        .map(|(id, pid)| (id, (pid, rss_of(pid), pss_of(pid))))
        .collect();
    let mut all_arns = vec![arn];

    // The baseline's bundle, ready before the first measured task.
    let (runc, b) = (args.runc.clone(), bundle.clone());
    tokio::task::spawn_blocking(move || make_bundle(&runc, &b))
        .await
        .map_err(|e| anyhow!("{e}"))??;
    let mut runc_samples = Vec::with_capacity(args.tasks as usize);

    // 3. RunTask → RUNNING, one task at a time, each followed by one bare
    //    `runc run -d`, so that both see the same machine.
    eprintln!(
        "measuring: {} tasks, RunTask → RUNNING, DescribeTasks every {} ms",
        args.tasks, args.poll_ms
    );
    let bar = stderr_bar(u64::from(args.tasks), "berth", progress);
    let mut latencies = Vec::with_capacity(args.tasks as usize);
    let mut calls = Vec::with_capacity(args.tasks as usize);
    let mut phases = Vec::with_capacity(args.tasks as usize);
    let mut task_samples = Vec::with_capacity(args.tasks as usize);
    let mut describes = 0u64;
    let mut container_instances = BTreeSet::new();
    if let Some(ci) = seen
        .task
        .get("containerInstanceArn")
        .and_then(Value::as_str)
    {
        container_instances.insert(ci.to_string());
    }
    for _ in 0..args.tasks {
        let load = tasks_on(client, &container_instances).await?;
        let sent_wall = unix_now();
        let sent = Instant::now();
        let arns = run_tasks(client, cleanup, &td, 1).await?;
        calls.push(sent.elapsed());
        let arn = arns
            .into_iter()
            .next()
            .context("RunTask answered no task")?;
        let seen = until_running(client, &arn, poll, args.timeout).await?;
        let took = seen.at - sent;
        latencies.push(took);
        describes += u64::from(seen.describes);
        let seen_wall = sent_wall + took.as_secs_f64();
        let p = Phases::of(&seen.task, sent_wall, seen_wall).with_context(|| {
            format!(
                "{arn} is RUNNING without createdAt, pullStartedAt, pullStoppedAt and startedAt"
            )
        })?;
        phases.push(p);
        task_samples.push(TaskSample {
            task_arn: arn.clone(),
            sent_at: sent_wall,
            tasks_on_instance: load,
            phases: p,
        });
        if let Some(ci) = seen
            .task
            .get("containerInstanceArn")
            .and_then(Value::as_str)
        {
            container_instances.insert(ci.to_string());
        }
        // The bare runc start while the task runs, before StopTask (whose
        // SIGTERM is a `runc kill` the agent runs at once).
        let (runc, b, id) = (
            args.runc.clone(),
            bundle.clone(),
            format!("{}{}", cleanup.runc_prefix, runc_samples.len()),
        );
        let bare = tokio::task::spawn_blocking(move || runc_once(&runc, &b, &id))
            .await
            .map_err(|e| anyhow!("{e}"))??;
        runc_samples.push(bare);
        cleanup.stop(&arn).await?;
        all_arns.push(arn);
        bar.inc(1);
        bar.set_message(format!("{:.1} ms / runc {:.1} ms", ms(took), ms(bare)));
    }
    bar.finish_and_clear();
    eprintln!(
        "waiting for the {} tasks to stop (a container that ignores SIGTERM gets SIGKILL after 30 s)",
        all_arns.len()
    );
    until_all(client, &all_arns, "STOPPED", stop_wait).await?;

    // 4. The runc baseline again, alone: every task STOPPED, nothing polling.
    let more = MIN_BASELINE_RUNS;
    let mut quiet_samples = vec![];
    {
        eprintln!("baseline: runc run -d, {more} more times on the quiet machine");
        let bar = stderr_bar(u64::from(more), "runc", progress);
        let job = {
            let (runc, bundle, prefix) = (
                args.runc.clone(),
                bundle.clone(),
                cleanup.runc_prefix.clone(),
            );
            let (abort, bar) = (cleanup.runc_abort.clone(), bar.clone());
            let first = args.tasks;
            tokio::task::spawn_blocking(move || {
                runc_baseline(&runc, &bundle, &prefix, first..first + more, &abort, &bar)
            })
        };
        let job = cleanup.runc_job.insert(job);
        quiet_samples = job.await.map_err(|e| anyhow!("{e}"))??;
        cleanup.runc_job = None;
        bar.finish_and_clear();
    }

    // 5. The agents' memory: idle, then with tasks.
    let ids = instance_ids(client, &container_instances).await?;
    let bench_instances: BTreeSet<String> = ids.values().cloned().collect();
    let idle = agents();
    let mut memory: BTreeMap<String, AgentMemory> = idle
        .iter()
        .map(|(id, pid)| {
            let mut m = AgentMemory::new(id, *pid, bench_instances.contains(id));
            if let Some((p, rss, pss)) = warm.get(id) {
                if p == pid {
                    (m.warm_rss_kib, m.warm_pss_kib) = (*rss, *pss);
                }
            }
            m.idle_rss_kib = rss_of(*pid);
            m.idle_pss_kib = pss_of(*pid);
            (id.clone(), m)
        })
        .collect();
    if args.with_tasks > 0 {
        eprintln!(
            "agent memory: idle read; now {} sleep tasks",
            args.with_tasks
        );
        let mut arns = vec![];
        let mut left = args.with_tasks;
        while left > 0 {
            let n = left.min(RUN_BATCH);
            arns.extend(run_tasks(client, cleanup, &td, n).await?);
            left -= n;
        }
        let running = until_all(client, &arns, "RUNNING", args.timeout).await?;
        let now = agents();
        for (id, pid) in &now {
            let m = memory
                .entry(id.clone())
                .or_insert_with(|| AgentMemory::new(id, *pid, bench_instances.contains(id)));
            if m.pid == *pid {
                m.with_tasks_rss_kib = rss_of(*pid);
                m.with_tasks_pss_kib = pss_of(*pid);
                (m.shims, m.shims_rss_kib, m.shims_pss_kib) = shims_of(id);
            }
        }
        // Tasks that landed on another instance than the measured ones.
        let mut cis = BTreeSet::new();
        for t in &running {
            if let Some(ci) = t.get("containerInstanceArn").and_then(Value::as_str) {
                cis.insert(ci.to_string());
            }
        }
        for id in instance_ids(client, &cis).await?.values() {
            if let Some(m) = memory.get_mut(id) {
                m.bench_instance = true;
            }
        }
        for arn in &arns {
            cleanup.stop(arn).await?;
        }
        eprintln!("stopping the {} sleep tasks", arns.len());
        until_all(client, &arns, "STOPPED", stop_wait).await?;
    }

    let berth = Starts::new(&latencies);
    let runc = Starts::new(&runc_samples);
    let runc_quiet = Starts::new(&quiet_samples);
    let ratio = |base: &Starts| {
        if base.p50 > 0.0 {
            (berth.p50 / base.p50 * 100.0).round() / 100.0
        } else {
            0.0
        }
    };
    let ratio_p50 = ratio(&runc);
    let ratio_p50_quiet = ratio(&runc_quiet);
    let ms_all = |v: &[Duration]| v.iter().map(|d| ms(*d)).collect::<Vec<_>>();
    Ok(Report {
        endpoint,
        started_at,
        cpus: std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1),
        cluster: CLUSTER,
        task_definition: td,
        image,
        instances: bench_instances.into_iter().collect(),
        warm_up_ms: ms(warm_up),
        run_task_call: Starts::new(&calls),
        poll_ms: args.poll_ms,
        describes_per_task: if latencies.is_empty() {
            0.0
        } else {
            (describes as f64 / latencies.len() as f64 * 10.0).round() / 10.0
        },
        phases: phase_stats(&phases),
        by_tasks_on_instance: by_load(&latencies, &task_samples),
        samples: Samples {
            berth: ms_all(&latencies),
            runc: ms_all(&runc_samples),
            runc_quiet: ms_all(&quiet_samples),
            tasks: task_samples,
        },
        berth,
        runc,
        runc_quiet,
        ratio_p50,
        ratio_p50_quiet,
        with_tasks: args.with_tasks,
        agents: memory.into_values().collect(),
    })
}

// ---------------------------------------------------------------- output

fn right_align(t: &mut comfy_table::Table, from: usize, to: usize) {
    for i in from..to {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
}

fn new_table() -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t
}

fn starts_table(r: &Report) -> comfy_table::Table {
    let mut t = new_table();
    t.set_header(vec![
        "start", "runs", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms",
    ]);
    for (name, s) in [
        ("berth: RunTask → RUNNING", &r.berth),
        ("  of which the RunTask call", &r.run_task_call),
        ("runc run -d, after each task (interleaved)", &r.runc),
        ("runc run -d, alone afterwards", &r.runc_quiet),
    ] {
        t.add_row(vec![
            name.to_string(),
            s.runs.to_string(),
            format!("{:.2}", s.p50),
            format!("{:.2}", s.p90),
            format!("{:.2}", s.p99),
            format!("{:.2}", s.max),
            format!("{:.2}", s.mean),
        ]);
    }
    right_align(&mut t, 1, 7);
    t
}

fn phases_table(r: &Report) -> comfy_table::Table {
    let mut t = new_table();
    t.set_header(vec![
        "phase", "p50 ms", "p90 ms", "max ms", "mean ms", "covers",
    ]);
    for p in &r.phases {
        t.add_row(vec![
            p.phase.to_string(),
            format!("{:.2}", p.p50),
            format!("{:.2}", p.p90),
            format!("{:.2}", p.max),
            format!("{:.2}", p.mean),
            p.covers.to_string(),
        ]);
    }
    right_align(&mut t, 1, 5);
    t
}

fn load_table(r: &Report) -> comfy_table::Table {
    let mut t = new_table();
    t.set_header(vec!["tasks on the instance", "runs", "p50 ms", "p90 ms"]);
    for b in &r.by_tasks_on_instance {
        t.add_row(vec![
            format!("{}–{}", b.from, b.to),
            b.runs.to_string(),
            format!("{:.2}", b.p50),
            format!("{:.2}", b.p90),
        ]);
    }
    right_align(&mut t, 1, 4);
    t
}

fn kib(v: Option<u64>) -> String {
    v.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn agents_table(r: &Report) -> comfy_table::Table {
    let mut t = new_table();
    let with = format!("RSS with {} tasks, MiB", r.with_tasks);
    t.set_header(vec![
        "agent of instance",
        "pid",
        "bench",
        "RSS after warm-up, MiB",
        "idle RSS, MiB",
        with.as_str(),
        "shims",
        "shims' RSS, MiB",
        "shims' PSS, MiB",
    ]);
    for a in &r.agents {
        t.add_row(vec![
            a.instance_id.clone(),
            a.pid.to_string(),
            if a.bench_instance { "yes" } else { "" }.to_string(),
            kib(a.warm_rss_kib),
            kib(a.idle_rss_kib),
            kib(a.with_tasks_rss_kib),
            a.shims.to_string(),
            kib(Some(a.shims_rss_kib)),
            kib(Some(a.shims_pss_kib)),
        ]);
    }
    right_align(&mut t, 1, 9);
    t
}

fn print_table(r: &Report) {
    println!(
        "berth bench tasks: {} tasks one after the other on a warm instance ({}), {} CPUs, {}",
        r.berth.runs,
        r.instances.join(", "),
        r.cpus,
        r.endpoint
    );
    println!(
        "warm-up (first task, instance launch included when there was none): {:.0} ms; DescribeTasks every {} ms, {:.1} per task",
        r.warm_up_ms, r.poll_ms, r.describes_per_task
    );
    println!("{}", starts_table(r));
    println!(
        "berth p50 / runc p50 = {:.2}× interleaved (goal ≤ 2×), {:.2}× against runc on the quiet machine",
        r.ratio_p50, r.ratio_p50_quiet
    );
    println!();
    println!("where berth's time goes, from each task's own timestamps:");
    println!("{}", phases_table(r));
    println!();
    println!("berth RunTask → RUNNING by tasks already on the instance (stopped ones winding down included):");
    println!("{}", load_table(r));
    println!();
    println!("agents (VmRSS; idle: no task on the instance, after the measured ones):");
    println!("{}", agents_table(r));
}

pub async fn run(args: TasksArgs) -> anyhow::Result<()> {
    preflight(&args)?;
    let client = Arc::new(Client::new(&args.endpoint)?);
    let progress = std::io::stderr().is_terminal();
    let mut cleanup = Cleanup {
        client: client.clone(),
        unstopped: BTreeSet::new(),
        runc_prefix: format!("berth-bench-{}-", std::process::id()),
        runc: args.runc.clone(),
        runc_abort: Arc::new(AtomicBool::new(false)),
        runc_job: None,
    };
    // Dropped (removed) after the cleanup: the baseline's containers run from it.
    let tmp = TempDir::new()?;
    let outcome = tokio::select! {
        r = bench(&args, &client, &mut cleanup, &tmp.0, progress) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let cleaned = cleanup.finish().await;
    let report = match (outcome, cleaned) {
        (Ok(r), Ok(())) => r,
        (Err(e), Ok(())) => return Err(e),
        (Err(e), Err(c)) => return Err(e.context(format!("{c:#}"))),
        (Ok(_), Err(c)) => return Err(c),
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print_table(&report),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_berth_processes_by_their_command_line() {
        let agent = b"/work/target/release/berth\0agent\0--server\0http://10.0.0.1:7700\0--instance-id\0i-0abc\0--cpu\x002048\0";
        let argv = berth_argv(agent, "agent");
        assert!(argv.is_some());
        let argv = argv.unwrap_or_default();
        assert_eq!(
            flag_value(&argv, "--instance-id").as_deref(),
            Some("i-0abc")
        );
        assert_eq!(flag_value(&argv, "--memory"), None);
        assert_eq!(
            flag_value(&["--instance-id=i-1".to_string()], "--instance-id").as_deref(),
            Some("i-1")
        );
        assert!(berth_argv(agent, "shim").is_none());
        assert!(berth_argv(b"/usr/bin/berthx\0agent\0", "agent").is_none());
        assert!(berth_argv(b"berth\0shim\0run\0/d/i-1/runtime/x\0", "shim").is_some());
        assert!(berth_argv(b"", "agent").is_none());
    }

    #[test]
    fn reads_vm_rss_and_pss() {
        let status = "Name:\tberth\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_kib(status), Some(12345));
        assert_eq!(vm_rss_kib("Name:\tkthreadd\n"), None);
        let rollup = "55-7f ---p 00000000 00:00 0   [rollup]\nRss:    1752 kB\nPss:     276 kB\nPss_Dirty:   112 kB\n";
        assert_eq!(pss_kib(rollup), Some(276));
        assert_eq!(pss_kib(""), None);
    }

    #[test]
    fn baseline_spec_runs_sleep_without_a_terminal_in_the_callers_network() -> anyhow::Result<()> {
        let spec = json!({
            "process": { "terminal": true, "args": ["sh"], "cwd": "/" },
            "linux": { "namespaces": [{ "type": "pid" }, { "type": "network" }, { "type": "mount" }] }
        });
        let s = baseline_spec(spec)?;
        assert_eq!(s["process"]["terminal"], false);
        assert_eq!(s["process"]["args"], json!(["sleep", "3600"]));
        assert_eq!(s["process"]["cwd"], "/");
        assert_eq!(
            s["linux"]["namespaces"],
            json!([{ "type": "pid" }, { "type": "mount" }])
        );
        assert!(baseline_spec(json!({})).is_err());
        Ok(())
    }

    #[test]
    fn phases_split_the_latency() {
        let task = json!({
            "createdAt": 100.002,
            "pullStartedAt": 100.010,
            "pullStoppedAt": 100.011,
            "startedAt": 100.040,
        });
        let p = Phases::of(&task, 100.0, 100.05);
        assert!(p.is_some());
        let p = p.unwrap_or_default();
        assert_eq!(
            (p.run_task, p.to_agent, p.image, p.container_start, p.report),
            (2.0, 8.0, 1.0, 29.0, 10.0)
        );
        assert!(Phases::of(&json!({ "createdAt": 1.0 }), 0.0, 2.0).is_none());
        let stats = phase_stats(&[p, Phases { to_agent: 4.0, ..p }]);
        let names: Vec<&str> = stats.iter().map(|s| s.phase).collect();
        assert_eq!(
            names,
            ["run_task", "to_agent", "image", "container_start", "report"]
        );
        assert_eq!(
            (stats[1].p50, stats[1].p90, stats[1].max, stats[1].mean),
            (4.0, 8.0, 8.0, 6.0)
        );
    }

    #[test]
    fn latency_by_tasks_on_the_instance() {
        let sample = |n| TaskSample {
            task_arn: String::new(),
            sent_at: 0.0,
            tasks_on_instance: n,
            phases: Phases::default(),
        };
        let samples = [sample(0), sample(49), sample(50), sample(120)];
        let lat: Vec<Duration> = [10, 30, 50, 70].map(Duration::from_millis).to_vec();
        let b = by_load(&lat, &samples);
        let rows: Vec<(u32, u32, usize, f64)> =
            b.iter().map(|b| (b.from, b.to, b.runs, b.p50)).collect();
        assert_eq!(
            rows,
            [(0, 49, 2, 10.0), (50, 99, 1, 50.0), (100, 149, 1, 70.0)]
        );
    }

    #[test]
    fn percentiles_and_starts() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_f64(&v, 50.0), 50.0);
        assert_eq!(percentile_f64(&v, 99.0), 99.0);
        assert_eq!(percentile_f64(&[], 50.0), 0.0);
        let d: Vec<Duration> = (1..=10).rev().map(Duration::from_millis).collect();
        let s = Starts::new(&d);
        assert_eq!(
            (s.runs, s.p50, s.p90, s.max, s.mean),
            (10, 5.0, 9.0, 10.0, 5.5)
        );
    }

    #[test]
    fn the_task_definition_and_capacity_provider_are_the_briefs() {
        let td = task_definition();
        assert_eq!(td["networkMode"], "host");
        assert_eq!(td["containerDefinitions"][0]["memory"], 16);
        assert_eq!(
            td["containerDefinitions"][0]["command"],
            json!(["sleep", "3600"])
        );
        let cp = capacity_provider();
        assert_eq!(
            cp.pointer("/managedInstancesProvider/instanceLaunchTemplate/instanceRequirements/memoryMiB/min"),
            Some(&json!(8192))
        );
    }

    #[test]
    fn a_stopped_task_says_why() {
        let t = json!({
            "stopCode": "TaskFailedToStart",
            "stoppedReason": "CannotPullContainerError: x",
            "containers": [{ "name": "sleep", "exitCode": 1, "reason": "boom" }]
        });
        let s = stop_story(&t);
        assert!(
            s.contains("TaskFailedToStart")
                && s.contains("CannotPull")
                && s.contains("sleep exit 1 boom"),
            "{s}"
        );
    }

    #[test]
    fn the_report_renders() {
        let p = Phases::default();
        let r = Report {
            endpoint: "http://127.0.0.1:7700".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            cpus: 2,
            cluster: CLUSTER,
            task_definition: "arn:aws:ecs:us-east-1:0:task-definition/bench-tasks:1".into(),
            image: "bench-busybox:latest sha256:00".into(),
            instances: vec!["i-1".into()],
            warm_up_ms: 900.0,
            berth: Starts::new(&[Duration::from_millis(40)]),
            run_task_call: Starts::new(&[Duration::from_millis(3)]),
            poll_ms: 5,
            describes_per_task: 5.0,
            phases: phase_stats(&[p]),
            by_tasks_on_instance: vec![],
            runc: Starts::new(&[Duration::from_millis(20)]),
            runc_quiet: Starts::new(&[Duration::from_millis(16)]),
            ratio_p50: 2.0,
            ratio_p50_quiet: 2.5,
            with_tasks: 50,
            agents: vec![AgentMemory {
                idle_rss_kib: Some(10240),
                ..AgentMemory::new("i-1", 42, true)
            }],
            samples: Samples {
                berth: vec![40.0],
                runc: vec![20.0],
                runc_quiet: vec![16.0],
                tasks: vec![TaskSample {
                    task_arn: "arn:aws:ecs:us-east-1:0:task/bench-tasks/1".into(),
                    sent_at: 1.5,
                    tasks_on_instance: 3,
                    phases: p,
                }],
            },
        };
        assert!(starts_table(&r).to_string().contains("runc run -d"));
        assert!(phases_table(&r).to_string().contains("container_start"));
        let agents = agents_table(&r).to_string();
        assert!(
            agents.contains("i-1") && agents.contains("10.0"),
            "{agents}"
        );
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(json["ratio_p50"], 2.0);
        assert_eq!(json["agents"][0]["idle_rss_kib"], 10240);
    }
}

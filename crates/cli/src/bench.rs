//! `berth bench`: API throughput and latency against a running server
//! (`berth bench api`, below), and task start latency against a running
//! `berth up` (`berth bench tasks`, in [`tasks`]).
//!
//! `berth bench api` drives a server the way an ECS client does: every request
//! is a SigV4-signed HTTP/1.1 request, signed afresh when it is sent. It opens
//! `--concurrency` keep-alive connections once and keeps them for the whole run
//! (one worker per connection, one request in flight per connection), and
//! checks at the end that no connection was opened again, so the figures never
//! include a TCP handshake.
//!
//! # What it does
//!
//! 1. Setup through the API on the first connection: CreateCluster `bench`,
//!    CreateCapacityProvider `bench-mi` for it (an "already exists" answer is
//!    fine on a rerun), RegisterTaskDefinition family `bench` and RunTask
//!    10 × 10 tasks, whose ARNs DescribeTasks then asks for.
//! 2. Each operation of `--operations` in turn, `GET /healthz` first: `--requests`
//!    requests spread over the workers. The request bodies are rendered before
//!    the clock starts; a request's latency runs from signing it to having read
//!    the whole answer.
//! 3. A report per operation: requests, errors, wall time, requests/s, the ratio
//!    of its requests/s to `GET /healthz`'s (the baseline: same connections,
//!    same client; the server does a one-row store read but no signature
//!    check and no JSON) and latency percentiles.
//!
//! Every answer must be HTTP 200, and the first answer of each worker for each
//! operation is also checked for its content (RunTask started one task without
//! failures, DescribeTasks found its ten tasks, ...). Any error, or a
//! connection opened more than once, makes the run fail after the report.
//!
//! Each run adds task definition revisions and tasks to the server's state.

use anyhow::{bail, Context as _};
use berth_model::ecs::TARGET_PREFIX;
use berth_server::sigv4::{self, Credentials, Scope};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod placement;
mod plan;
mod services;
mod simulate;
mod tasks;

/// The cluster, capacity provider and task definition family the benchmark uses.
const CLUSTER: &str = "bench";
const CAPACITY_PROVIDER: &str = "bench-mi";
const FAMILY: &str = "bench";
/// Setup runs this many RunTask calls of 10 tasks each.
const SETUP_RUNS: usize = 10;
/// Tasks per DescribeTasks call.
const DESCRIBE_BATCH: usize = 10;
/// Error answers kept per operation to show.
const ERROR_SAMPLES: usize = 5;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    benchmark: Benchmark,
}

impl BenchArgs {
    /// Whether this runs the controllers in-process (`simulate`), whose logs
    /// are many.
    pub fn in_process_controllers(&self) -> bool {
        matches!(self.benchmark, Benchmark::Simulate(_))
    }
}

#[derive(clap::Subcommand)]
enum Benchmark {
    /// Requests/s and latency of ECS API operations, against `GET /healthz` as the baseline.
    ///
    /// Creates (or reuses) the cluster `bench`, its capacity provider `bench-mi` and the
    /// task definition family `bench`, runs 100 tasks, then measures each operation over
    /// --concurrency keep-alive connections. Each run adds task definition revisions and
    /// tasks to the server's state. Fails if any answer is not HTTP 200.
    Api(ApiArgs),
    /// Task start latency: RunTask → RUNNING on a warm managed instance of a running
    /// `berth up`, against a bare `runc run -d` of the same container; agent memory.
    ///
    /// Needs root, runc and a static busybox (as `berth up` does). Imports the image
    /// `bench-busybox:latest`, creates (or reuses) the cluster `bench-tasks`, its capacity
    /// provider `bench-tasks-mi` and the task definition family `bench-tasks`, and stops
    /// every task it started. Fails if a task stops instead of running.
    Tasks(tasks::TasksArgs),
    /// Task placement throughput (binpack; spread with constraints) on a synthetic
    /// cluster, single-threaded and without a server, against the linear-scan reference.
    Placement(placement::PlacementArgs),
    /// The provisioning planner against first-fit-decreasing on reference workloads
    /// (offline, no server): time, hourly cost, lower bound and ratios.
    Plan(plan::PlanArgs),
    /// One reconcile of a large service (in-memory store, no server): create, steady,
    /// scale-in and deploy, against reading the service's tasks.
    Services(services::ServicesArgs),
    /// `berth simulate`'s speed: 30 virtual days of a 1,000-instance fleet (by default),
    /// against the cost of one quiet scheduler tick of the same fleet.
    Simulate(simulate::SimulateArgs),
}

#[derive(clap::Args)]
struct ApiArgs {
    /// The server's ECS endpoint (plain http).
    #[arg(long, default_value = "http://127.0.0.1:7700")]
    endpoint: Uri,
    /// Requests per operation.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
    /// Keep-alive connections, each with one request in flight at a time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Operations to measure, comma-separated; healthz (the baseline) is measured first.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values = ["healthz", "describe-tasks", "run-task", "register-task-definition"]
    )]
    operations: Vec<Op>,
    /// Report format.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// AWS shared-credentials file to read the `[default]` profile from
    /// (the server writes one as DATA_DIR/credentials). Without it:
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// Region of the SigV4 credential scope; must be the server's.
    #[arg(long, default_value = "us-east-1")]
    region: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Output {
    /// A table, for people.
    Table,
    /// One JSON document, for programs.
    Json,
}

/// An operation the benchmark can measure.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Op {
    /// `GET /healthz`: HTTP, a hop to the server's blocking pool and a one-row store read;
    /// no signature check, no JSON.
    Healthz,
    /// DescribeTasks of 10 tasks: a read transaction.
    DescribeTasks,
    /// RunTask of 1 task: a write transaction.
    RunTask,
    /// RegisterTaskDefinition, a new revision of one family: a write transaction.
    RegisterTaskDefinition,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Healthz => "healthz",
            Op::DescribeTasks => "describe-tasks",
            Op::RunTask => "run-task",
            Op::RegisterTaskDefinition => "register-task-definition",
        }
    }

    /// The ECS operation name, `None` for healthz.
    fn ecs_name(self) -> Option<&'static str> {
        match self {
            Op::Healthz => None,
            Op::DescribeTasks => Some("DescribeTasks"),
            Op::RunTask => Some("RunTask"),
            Op::RegisterTaskDefinition => Some("RegisterTaskDefinition"),
        }
    }
}

/// Where requests go and how they are signed.
struct Target {
    /// `host:port` to connect to.
    addr: String,
    /// The `host` header.
    host: HeaderValue,
    creds: Credentials,
    region: String,
    /// TCP connections opened so far.
    connects: AtomicU64,
}

impl Target {
    fn new(endpoint: &Uri, creds: Credentials, region: String) -> anyhow::Result<Self> {
        if endpoint.scheme_str() != Some("http") {
            bail!("--endpoint must be a plain http:// URL, like http://127.0.0.1:7700 (got {endpoint})");
        }
        let Some(authority) = endpoint.authority() else {
            bail!("--endpoint has no host: {endpoint}");
        };
        if !matches!(endpoint.path(), "" | "/") || endpoint.query().is_some() {
            bail!("--endpoint must be the server's root URL, without a path or query (got {endpoint})");
        }
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let host = HeaderValue::from_str(authority.as_str())
            .context("--endpoint has a host that cannot be a header")?;
        Ok(Self {
            addr,
            host,
            creds,
            region,
            connects: AtomicU64::new(0),
        })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with {} failed", self.addr))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.connects.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    /// A request signed now: `GET /healthz` for `None`, else the ECS operation `ecs_op` with `body`.
    fn request(&self, ecs_op: Option<&str>, body: &Bytes) -> anyhow::Result<Request<Full<Bytes>>> {
        let (method, uri) = match ecs_op {
            None => (Method::GET, Uri::from_static("/healthz")),
            Some(_) => (Method::POST, Uri::from_static("/")),
        };
        let mut headers = HeaderMap::new();
        headers.insert(HOST, self.host.clone());
        if let Some(name) = ecs_op {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            headers.insert(
                "x-amz-target",
                HeaderValue::from_str(&format!("{TARGET_PREFIX}.{name}"))?,
            );
        }
        let scope = Scope {
            region: &self.region,
            service: "ecs",
        };
        sigv4::sign(
            &method,
            &uri,
            &mut headers,
            body,
            &self.creds,
            scope,
            time::OffsetDateTime::now_utc(),
        );
        if !headers.contains_key(AUTHORIZATION) {
            bail!("cannot sign the request: the access key id or the region holds a character not allowed in a header");
        }
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(body.clone()))?;
        *req.headers_mut() = headers;
        Ok(req)
    }
}

/// One connection, opened again only if the server closed it (which [`verdict`] reports).
struct Conn {
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn open(target: &Target) -> anyhow::Result<Self> {
        Ok(Self {
            sender: Some(target.connect().await?),
        })
    }

    /// Sends a request (see [`Target::request`]) signed now and reads the whole answer: status and body.
    async fn call(
        &mut self,
        target: &Target,
        ecs_op: Option<&str>,
        body: &Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        let req = target.request(ecs_op, body)?;
        let sender = match &mut self.sender {
            Some(s) if !s.is_closed() => s,
            slot => slot.insert(target.connect().await?),
        };
        let answer = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        answer.map_err(|e| {
            self.sender = None;
            anyhow::Error::new(e).context("the request failed")
        })
    }

    /// An ECS call during setup: the answer's JSON on HTTP 200, else its error.
    async fn ecs(&mut self, target: &Target, op: &str, body: Value) -> Result<Value, EcsFailure> {
        let body = Bytes::from(body.to_string());
        let (status, answer) = self
            .call(target, Some(op), &body)
            .await
            .map_err(|e| EcsFailure::transport(op, e))?;
        let json: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        if status == 200 {
            return Ok(json);
        }
        Err(EcsFailure {
            op: op.to_string(),
            status: Some(status),
            kind: json
                .get("__type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            message: json
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&answer).chars().take(300).collect()),
        })
    }
}

/// A setup call that did not succeed.
#[derive(Debug)]
struct EcsFailure {
    op: String,
    status: Option<u16>,
    kind: String,
    message: String,
}

impl EcsFailure {
    fn transport(op: &str, e: anyhow::Error) -> Self {
        Self {
            op: op.to_string(),
            status: None,
            kind: String::new(),
            message: format!("{e:#}"),
        }
    }
}

impl std::fmt::Display for EcsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(
                f,
                "{} answered HTTP {s} {}: {}",
                self.op, self.kind, self.message
            ),
            None => write!(f, "{}: {}", self.op, self.message),
        }
    }
}

impl std::error::Error for EcsFailure {}

/// What setup made: the task ARNs to describe.
struct Setup {
    task_arns: Vec<String>,
}

async fn setup(conn: &mut Conn, target: &Target) -> anyhow::Result<Setup> {
    conn.ecs(target, "CreateCluster", json!({ "clusterName": CLUSTER }))
        .await?;
    let provider = json!({
        "name": CAPACITY_PROVIDER,
        "cluster": CLUSTER,
        "managedInstancesProvider": {
            "infrastructureRoleArn": "arn:aws:iam::123456789012:role/ecsInfrastructureRole",
            "instanceLaunchTemplate": {
                "ec2InstanceProfileArn": "arn:aws:iam::123456789012:instance-profile/ecsInstanceProfile",
                "networkConfiguration": { "subnets": ["subnet-0123456789abcdef0"] }
            }
        }
    });
    match conn.ecs(target, "CreateCapacityProvider", provider).await {
        Ok(_) => {}
        Err(e) if e.kind == "ClientException" && e.message.contains("already exists") => {}
        Err(e) => return Err(e.into()),
    }
    let td = conn
        .ecs(target, "RegisterTaskDefinition", task_definition())
        .await?;
    check_register(&td).context("setup RegisterTaskDefinition")?;
    let mut task_arns = Vec::with_capacity(SETUP_RUNS * 10);
    for _ in 0..SETUP_RUNS {
        let mut body = run_task();
        body["count"] = json!(10);
        let answer = conn.ecs(target, "RunTask", body).await?;
        check_run(&answer, 10).context("setup RunTask")?;
        task_arns.extend(
            answer["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["taskArn"].as_str().map(str::to_string)),
        );
    }
    Ok(Setup { task_arns })
}

fn task_definition() -> Value {
    json!({
        "family": FAMILY,
        "containerDefinitions": [{ "name": "app", "image": "busybox", "memory": 128, "essential": true }],
        "requiresCompatibilities": ["MANAGED_INSTANCES"]
    })
}

fn run_task() -> Value {
    json!({
        "cluster": CLUSTER,
        "taskDefinition": FAMILY,
        "count": 1,
        "capacityProviderStrategy": [{ "capacityProvider": CAPACITY_PROVIDER }]
    })
}

fn failures_empty(v: &Value) -> anyhow::Result<()> {
    match v.get("failures").and_then(Value::as_array) {
        Some(f) if f.is_empty() => Ok(()),
        Some(f) => bail!("the answer has failures: {}", Value::Array(f.clone())),
        None => bail!("the answer has no failures list"),
    }
}

fn check_run(v: &Value, count: usize) -> anyhow::Result<()> {
    failures_empty(v)?;
    let tasks = v
        .get("tasks")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    if tasks != count {
        bail!("RunTask started {tasks} tasks, not {count}");
    }
    Ok(())
}

fn check_register(v: &Value) -> anyhow::Result<()> {
    if v.pointer("/taskDefinition/revision")
        .and_then(Value::as_i64)
        .is_none()
    {
        bail!("the answer has no taskDefinition.revision");
    }
    Ok(())
}

fn check_describe(v: &Value) -> anyhow::Result<()> {
    failures_empty(v)?;
    let tasks = v
        .get("tasks")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    if tasks != DESCRIBE_BATCH {
        bail!("DescribeTasks found {tasks} tasks, not {DESCRIBE_BATCH}");
    }
    Ok(())
}

/// Checks the content of a 200 answer to `op`.
fn check_answer(op: Op, body: &[u8]) -> anyhow::Result<()> {
    if op == Op::Healthz {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(body).context("the answer is not JSON")?;
    match op {
        Op::Healthz => Ok(()),
        Op::DescribeTasks => check_describe(&v),
        Op::RunTask => check_run(&v, 1),
        Op::RegisterTaskDefinition => check_register(&v),
    }
}

/// The request bodies for `op`, rendered before the clock starts; request `i` sends `bodies[i % len]`.
fn bodies(op: Op, setup: &Setup) -> Vec<Bytes> {
    match op {
        Op::Healthz => vec![Bytes::new()],
        Op::RunTask => vec![Bytes::from(run_task().to_string())],
        Op::RegisterTaskDefinition => vec![Bytes::from(task_definition().to_string())],
        Op::DescribeTasks => setup
            .task_arns
            .chunks(DESCRIBE_BATCH)
            .filter(|c| c.len() == DESCRIBE_BATCH)
            .map(|c| Bytes::from(json!({ "cluster": CLUSTER, "tasks": c }).to_string()))
            .collect(),
    }
}

/// What one worker saw during one operation.
#[derive(Default)]
struct WorkerResult {
    latencies: Vec<Duration>,
    errors: u64,
    samples: Vec<String>,
}

/// Measures `op`: `requests` requests over the connections, one worker each.
async fn measure(
    op: Op,
    requests: u64,
    conns: Vec<Conn>,
    target: &Arc<Target>,
    bodies: Vec<Bytes>,
    bar: &ProgressBar,
) -> anyhow::Result<(Vec<Conn>, OpReport)> {
    if bodies.is_empty() {
        bail!(
            "no request bodies for {}: setup made too few tasks",
            op.name()
        );
    }
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(conns.len());
    for mut conn in conns {
        let (target, bodies, next, bar) =
            (target.clone(), bodies.clone(), next.clone(), bar.clone());
        workers.push(tokio::spawn(async move {
            let mut r = WorkerResult::default();
            let mut first = true;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let body = &bodies[(i % bodies.len() as u64) as usize];
                let t0 = Instant::now();
                let answer = conn.call(&target, op.ecs_name(), body).await;
                r.latencies.push(t0.elapsed());
                let fault = match answer {
                    Ok((200, body)) if first => check_answer(op, &body)
                        .err()
                        .map(|e| format!("HTTP 200 but {e:#}")),
                    Ok((200, _)) => None,
                    Ok((status, body)) => Some(format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(300)
                            .collect::<String>()
                    )),
                    Err(e) => Some(format!("{e:#}")),
                };
                first = false;
                if let Some(f) = fault {
                    r.errors += 1;
                    if r.samples.len() < ERROR_SAMPLES {
                        r.samples.push(f);
                    }
                }
                bar.inc(1);
            }
            (conn, r)
        }));
    }
    let mut conns = Vec::with_capacity(workers.len());
    let mut all = WorkerResult::default();
    for w in workers {
        let (conn, r) = w.await.context("a benchmark worker panicked")?;
        conns.push(conn);
        all.latencies.extend(r.latencies);
        all.errors += r.errors;
        all.samples.extend(r.samples);
    }
    let wall = started.elapsed();
    all.samples.truncate(ERROR_SAMPLES);
    Ok((conns, OpReport::new(op, wall, all)))
}

/// Latency figures, in milliseconds.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// The nearest-rank percentile `p` (0–100) of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The report of one operation.
#[derive(Debug, Clone, Serialize)]
struct OpReport {
    operation: &'static str,
    requests: u64,
    errors: u64,
    wall_seconds: f64,
    requests_per_second: f64,
    /// requests/s over healthz's requests/s, when healthz was measured.
    ratio_to_healthz: Option<f64>,
    latency_ms: Latency,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    error_samples: Vec<String>,
}

impl OpReport {
    fn new(op: Op, wall: Duration, mut r: WorkerResult) -> Self {
        r.latencies.sort_unstable();
        let n = r.latencies.len() as u64;
        let secs = wall.as_secs_f64();
        Self {
            operation: op.name(),
            requests: n,
            errors: r.errors,
            wall_seconds: (secs * 1e3).round() / 1e3,
            requests_per_second: if secs > 0.0 {
                (n as f64 / secs * 10.0).round() / 10.0
            } else {
                0.0
            },
            ratio_to_healthz: None,
            latency_ms: Latency {
                p50: ms(percentile(&r.latencies, 50.0)),
                p90: ms(percentile(&r.latencies, 90.0)),
                p99: ms(percentile(&r.latencies, 99.0)),
                max: ms(r.latencies.last().copied().unwrap_or_default()),
            },
            error_samples: r.samples,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
struct Report {
    endpoint: String,
    region: String,
    started_at: String,
    requests_per_operation: u64,
    concurrency: u16,
    /// TCP connections opened during the run: equal to `concurrency` when every connection was kept alive.
    connections_opened: u64,
    /// CPUs of the machine running the benchmark (client and server usually share them).
    client_cpus: usize,
    operations: Vec<OpReport>,
}

/// The operations in measuring order: healthz first, each once.
fn plan(ops: &[Op]) -> Vec<Op> {
    let mut out = vec![];
    if ops.contains(&Op::Healthz) {
        out.push(Op::Healthz);
    }
    for op in ops {
        if !out.contains(op) {
            out.push(*op);
        }
    }
    out
}

fn credentials(args: &ApiArgs) -> anyhow::Result<Credentials> {
    if let Some(path) = &args.credentials_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let (id, secret) = berth_server::credentials::parse_credentials_file(&text, "default")
            .with_context(|| {
                format!(
                    "{} has no [default] aws_access_key_id and aws_secret_access_key",
                    path.display()
                )
            })?;
        return Ok(Credentials::new(id, secret));
    }
    match (std::env::var("AWS_ACCESS_KEY_ID"), std::env::var("AWS_SECRET_ACCESS_KEY")) {
        (Ok(id), Ok(secret)) if !id.is_empty() && !secret.is_empty() => Ok(Credentials::new(id, secret)),
        _ => bail!(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --credentials-file \
             (the server writes one as DATA_DIR/credentials)"
        ),
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub(crate) fn stderr_bar(len: u64, prefix: &str, template: &str, visible: bool) -> ProgressBar {
    let target = if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_string());
    bar
}

fn progress_bar(op: Op, requests: u64, visible: bool) -> ProgressBar {
    stderr_bar(
        requests,
        op.name(),
        "{prefix:>24} [{bar:30}] {pos:>6}/{len:6} {per_sec:>12} {elapsed_precise}",
        visible,
    )
}

/// Runs the API benchmark and answers its report; `Err` only when it could not run.
async fn bench_api(args: &ApiArgs, creds: Credentials, progress: bool) -> anyhow::Result<Report> {
    let target = Arc::new(Target::new(&args.endpoint, creds, args.region.clone())?);
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut conns = Vec::with_capacity(usize::from(args.concurrency));
    for _ in 0..args.concurrency {
        conns.push(Conn::open(&target).await?);
    }
    let ops = plan(&args.operations);
    let setup = match conns.first_mut() {
        Some(c) if ops.iter().any(|o| *o != Op::Healthz) => {
            if progress {
                eprintln!("setup: cluster {CLUSTER}, capacity provider {CAPACITY_PROVIDER}, task definition {FAMILY}, {} tasks", SETUP_RUNS * 10);
            }
            setup(c, &target).await.context("setup failed")?
        }
        _ => Setup { task_arns: vec![] },
    };
    let mut reports = vec![];
    for op in ops {
        let bar = progress_bar(op, args.requests, progress);
        let (back, report) =
            measure(op, args.requests, conns, &target, bodies(op, &setup), &bar).await?;
        bar.finish();
        conns = back;
        reports.push(report);
    }
    let baseline = reports
        .iter()
        .find(|r| r.operation == Op::Healthz.name())
        .map(|r| r.requests_per_second);
    if let Some(b) = baseline.filter(|b| *b > 0.0) {
        for r in &mut reports {
            r.ratio_to_healthz = Some((r.requests_per_second / b * 1000.0).round() / 1000.0);
        }
    }
    drop(conns);
    Ok(Report {
        endpoint: args.endpoint.to_string(),
        region: args.region.clone(),
        started_at,
        requests_per_operation: args.requests,
        concurrency: args.concurrency,
        connections_opened: target.connects.load(Ordering::Relaxed),
        client_cpus: std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1),
        operations: reports,
    })
}

fn table(report: &Report) -> comfy_table::Table {
    use comfy_table::{CellAlignment, Table};
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "operation",
        "requests",
        "errors",
        "wall s",
        "req/s",
        "× healthz",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
    ]);
    for r in &report.operations {
        t.add_row(vec![
            r.operation.to_string(),
            r.requests.to_string(),
            r.errors.to_string(),
            format!("{:.2}", r.wall_seconds),
            format!("{:.0}", r.requests_per_second),
            r.ratio_to_healthz
                .map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "-".into()),
            format!("{:.2}", r.latency_ms.p50),
            format!("{:.2}", r.latency_ms.p90),
            format!("{:.2}", r.latency_ms.p99),
            format!("{:.2}", r.latency_ms.max),
        ]);
    }
    for i in 1..10 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// What is wrong with a finished run, if anything.
fn verdict(report: &Report) -> anyhow::Result<()> {
    let errors: u64 = report.operations.iter().map(|r| r.errors).sum();
    if errors > 0 {
        bail!("{errors} requests failed (not HTTP 200 or unexpected content)");
    }
    if report.connections_opened != u64::from(report.concurrency) {
        bail!(
            "connections were not kept alive: {} opened for {} workers",
            report.connections_opened,
            report.concurrency
        );
    }
    Ok(())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let args = match args.benchmark {
        Benchmark::Api(a) => a,
        Benchmark::Tasks(a) => return tasks::run(a).await,
        Benchmark::Placement(a) => return placement::run(a),
        Benchmark::Plan(a) => return plan::run(a),
        Benchmark::Services(a) => return services::run(a),
        Benchmark::Simulate(a) => return simulate::run(a),
    };
    let creds = credentials(&args)?;
    let report = bench_api(&args, creds, true).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            println!(
                "berth bench api: {} requests per operation, {} keep-alive connections ({} opened), {} CPUs, {}",
                report.requests_per_operation,
                report.concurrency,
                report.connections_opened,
                report.client_cpus,
                report.endpoint
            );
            println!("{}", table(&report));
        }
    }
    for r in &report.operations {
        for s in &r.error_samples {
            eprintln!("{}: {s}", r.operation);
        }
    }
    verdict(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 90.0), Duration::from_millis(90));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn healthz_is_measured_first_and_once() {
        let ops = [Op::RunTask, Op::Healthz, Op::RunTask, Op::DescribeTasks];
        assert_eq!(
            plan(&ops),
            vec![Op::Healthz, Op::RunTask, Op::DescribeTasks]
        );
        assert_eq!(plan(&[Op::RunTask]), vec![Op::RunTask]);
    }

    #[test]
    fn endpoints() {
        let creds = || Credentials::new("AKIDEXAMPLE", "secret");
        let t = Target::new(
            &Uri::from_static("http://127.0.0.1:7700"),
            creds(),
            "us-east-1".into(),
        );
        assert!(matches!(t, Ok(ref t) if t.addr == "127.0.0.1:7700" && t.host == "127.0.0.1:7700"));
        let t = Target::new(
            &Uri::from_static("http://localhost/"),
            creds(),
            "us-east-1".into(),
        );
        assert!(matches!(t, Ok(ref t) if t.addr == "localhost:80" && t.host == "localhost"));
        assert!(Target::new(&Uri::from_static("https://localhost"), creds(), "r".into()).is_err());
        assert!(Target::new(&Uri::from_static("http://localhost/x"), creds(), "r".into()).is_err());
    }

    #[test]
    fn checks_answers() {
        assert!(check_answer(Op::RunTask, br#"{"tasks":[{}],"failures":[]}"#).is_ok());
        assert!(check_answer(Op::RunTask, br#"{"tasks":[],"failures":[{"reason":"X"}]}"#).is_err());
        assert!(check_answer(
            Op::RegisterTaskDefinition,
            br#"{"taskDefinition":{"revision":3}}"#
        )
        .is_ok());
        assert!(check_answer(Op::DescribeTasks, br#"{"tasks":[{}],"failures":[]}"#).is_err());
        assert!(check_answer(Op::DescribeTasks, b"not json").is_err());
    }

    /// The whole benchmark against a server in this process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_against_a_server() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("berth-bench-test-{}", std::process::id()));
        let config = berth_server::Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.clone(),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            durability: berth_store::Durability::Process,
            exec: Default::default(),
            catalog: berth_catalog::Catalog::embedded(),
        };
        let server = berth_server::Server::bind(&config).await?;
        let addr = server.local_addr()?;
        let creds = Credentials::new(
            server.credentials.access_key_id.clone(),
            server.credentials.secret_access_key.clone(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        let args = ApiArgs {
            endpoint: format!("http://{addr}").parse()?,
            requests: 40,
            concurrency: 3,
            operations: vec![
                Op::RunTask,
                Op::DescribeTasks,
                Op::Healthz,
                Op::RegisterTaskDefinition,
            ],
            output: Output::Json,
            credentials_file: None,
            region: "us-east-1".into(),
        };
        let first = bench_api(&args, creds.clone(), false).await;
        // A second run reuses what the first set up.
        let second = bench_api(&args, creds.clone(), false).await;
        // A wrong key stops the run at setup, with the server's error.
        let refused = bench_api(&args, Credentials::new("AKIAWRONGWRONGWRONG0", "x"), false).await;
        // Answers other than 200 are counted, with samples.
        let target = Arc::new(Target::new(&args.endpoint, creds, "us-east-1".into())?);
        let conns = vec![Conn::open(&target).await?, Conn::open(&target).await?];
        let bad = vec![Bytes::from_static(
            br#"{"cluster":"no-such-cluster","taskDefinition":"bench"}"#,
        )];
        let counted = measure(Op::RunTask, 5, conns, &target, bad, &ProgressBar::hidden()).await;
        let _ = stop.send(());
        let _ = serving.await;
        let _ = std::fs::remove_dir_all(&dir);
        for report in [first?, second?] {
            verdict(&report)?;
            let names: Vec<&str> = report.operations.iter().map(|r| r.operation).collect();
            assert_eq!(
                names,
                [
                    "healthz",
                    "run-task",
                    "describe-tasks",
                    "register-task-definition"
                ]
            );
            assert_eq!(report.connections_opened, 3);
            for r in &report.operations {
                assert_eq!((r.requests, r.errors), (40, 0), "{r:?}");
                assert!(r.ratio_to_healthz.is_some());
                assert!(
                    r.latency_ms.p50 <= r.latency_ms.p99 && r.latency_ms.p99 <= r.latency_ms.max
                );
            }
        }
        let refused = refused.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(refused.contains("UnrecognizedClientException"), "{refused}");
        let (conns, report) = counted?;
        assert_eq!((conns.len(), report.requests, report.errors), (2, 5, 5));
        assert!(
            report
                .error_samples
                .iter()
                .all(|s| s.starts_with("HTTP 400")),
            "{:?}",
            report.error_samples
        );
        assert_eq!(target.connects.load(Ordering::Relaxed), 2);
        Ok(())
    }
}

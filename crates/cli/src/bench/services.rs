//! `berth bench services`: how long one reconcile of a large service takes —
//! the service reconciler (`berth_control::services`) over an in-memory
//! store, as the scheduler runs it at the start of every tick.
//!
//! # What it does
//!
//! Through the ECS operations (no HTTP): a cluster, a managed instances
//! capacity provider, a task definition and a service of `--tasks` tasks.
//! Then, each timed:
//!
//! 1. **create**: the first reconcile, which creates every task;
//! 2. (every task is then made RUNNING on a fake instance by a store write);
//! 3. **steady**: a reconcile with nothing to do, `--runs` times;
//! 4. **scale-in**: desiredCount −10 %, one reconcile (it stops 10 %);
//! 5. **deploy**: a new revision, one reconcile (it starts the first wave).
//!
//! The baseline, in the same run: reading the service's tasks from the store
//! (one read transaction, every task decoded) — the least any reconcile that
//! looks at every task must do. The report gives each step against it.

use super::Output;
use anyhow::{anyhow, Context as _};
use berth_control::Ctx;
use berth_model::arn::ArnContext;
use berth_model::clock::ManualClock;
use berth_model::ecs::{Cluster, Operation};
use berth_store::{Expect, Store, TaskFilter};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ServicesArgs {
    /// Tasks of the service.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    tasks: u32,
    /// Timed runs of the steady reconcile and of the baseline.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    runs: u32,
    /// Report format.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Serialize)]
struct Step {
    step: &'static str,
    /// Median over the runs, ms.
    ms: f64,
    /// `ms` over the baseline's.
    ratio: f64,
    what: String,
}

fn call(ctx: &Ctx, op: &str, body: Value) -> anyhow::Result<Value> {
    let op = Operation::parse(op).ok_or_else(|| anyhow!("unknown operation {op}"))?;
    let out = berth_server::ops::dispatch(ctx, op, "bench", body.to_string().as_bytes())
        .map_err(|e| anyhow!("{op:?}: {}", e.message))?;
    Ok(serde_json::from_slice(&out)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(args: ServicesArgs) -> anyhow::Result<()> {
    let ctx = Ctx {
        store: Store::in_memory().context("in-memory store")?,
        arns: ArnContext {
            region: "us-east-1".into(),
            account: "000000000000".into(),
        },
        clock: Arc::new(ManualClock::new(Duration::from_secs(1_795_000_000))),
        catalog: berth_catalog::Catalog::embedded(),
    };
    call(&ctx, "CreateCluster", json!({"clusterName": "bench"}))?;
    call(
        &ctx,
        "CreateCapacityProvider",
        json!({"name": "bench-mi", "cluster": "bench", "managedInstancesProvider": {
            "infrastructureRoleArn": "arn:aws:iam::123456789012:role/ecsInfrastructureRole",
            "instanceLaunchTemplate": {
                "ec2InstanceProfileArn": "arn:aws:iam::123456789012:instance-profile/ecsInstanceProfile",
                "networkConfiguration": {"subnets": ["subnet-0123456789abcdef0"]},
                "instanceRequirements": {"vCpuCount": {"min": 2}, "memoryMiB": {"min": 4096}}}}}),
    )?;
    let td = |image: &str| {
        json!({"family": "bench", "requiresCompatibilities": ["MANAGED_INSTANCES"],
               "containerDefinitions": [{"name": "app", "image": image, "memory": 16}]})
    };
    call(&ctx, "RegisterTaskDefinition", td("busybox"))?;
    call(
        &ctx,
        "CreateService",
        json!({"cluster": "bench", "serviceName": "big", "taskDefinition": "bench",
               "desiredCount": args.tasks,
               "capacityProviderStrategy": [{"capacityProvider": "bench-mi", "weight": 1}]}),
    )?;
    let cluster: Cluster = serde_json::from_value(
        call(&ctx, "DescribeClusters", json!({"clusters": ["bench"]}))?["clusters"][0].clone(),
    )?;
    let reconcile = || -> anyhow::Result<(usize, usize, Duration)> {
        let t = Instant::now();
        let (a, b) = berth_control::services::reconcile_cluster(&ctx, &cluster)
            .map_err(|e| anyhow!(e.message))?;
        Ok((a, b, t.elapsed()))
    };
    let group_filter = TaskFilter {
        cluster_arn: cluster.cluster_arn.clone().unwrap_or_default(),
        group: Some("service:big".into()),
        desired_status: Some("RUNNING".into()),
        ..Default::default()
    };
    let baseline = || -> anyhow::Result<(usize, Duration)> {
        let t = Instant::now();
        let n = ctx
            .store
            .read(|tx| berth_store::all(|a, n| tx.tasks(&group_filter, a, n)).map(|v| v.len()))
            .map_err(|e| anyhow!("{e}"))?;
        Ok((n, t.elapsed()))
    };

    let (created, _, create) = reconcile()?;
    // Every task RUNNING on a (fake) instance.
    ctx.store
        .write(|tx| {
            for v in berth_store::all(|a, n| tx.tasks(&group_filter, a, n))? {
                let mut t = v.value;
                t.last_status = Some("RUNNING".into());
                t.container_instance_arn =
                    Some("arn:aws:ecs:us-east-1:000000000000:container-instance/bench/x".into());
                t.availability_zone = Some("us-east-1a".into());
                t.started_at = Some(1.0);
                t.version += 1;
                tx.put_task(&t, Expect::Version(v.version))?;
            }
            Ok::<_, berth_store::StoreError>(())
        })
        .map_err(|e| anyhow!("{e}"))?;
    let mut base = vec![];
    let mut steady = vec![];
    for _ in 0..args.runs {
        let (n, d) = baseline()?;
        if n != created {
            anyhow::bail!("the baseline read {n} tasks, not {created}");
        }
        base.push(ms(d));
        // (The first pass after the tasks ran records their counts and the
        // steady-state event; the later ones find nothing to do.)
        let (_, _, d) = reconcile()?;
        steady.push(ms(d));
    }
    let base = median(base);
    let scale_to = args.tasks - args.tasks / 10;
    call(
        &ctx,
        "UpdateService",
        json!({"cluster": "bench", "service": "big", "desiredCount": scale_to}),
    )?;
    let (_, stopped, scale) = reconcile()?;
    call(&ctx, "RegisterTaskDefinition", td("busybox:2"))?;
    call(
        &ctx,
        "UpdateService",
        json!({"cluster": "bench", "service": "big", "taskDefinition": "bench:2"}),
    )?;
    let (started, _, deploy) = reconcile()?;
    let ratio = |v: f64| if base > 0.0 { v / base } else { 0.0 };
    let steps = vec![
        Step {
            step: "baseline",
            ms: base,
            ratio: 1.0,
            what: format!(
                "read the service's {created} tasks (median of {})",
                args.runs
            ),
        },
        Step {
            step: "create",
            ms: ms(create),
            ratio: ratio(ms(create)),
            what: format!("first reconcile: created {created} tasks"),
        },
        Step {
            step: "steady",
            ms: median(steady.clone()),
            ratio: ratio(median(steady)),
            what: format!("nothing to do (median of {})", args.runs),
        },
        Step {
            step: "scale-in",
            ms: ms(scale),
            ratio: ratio(ms(scale)),
            what: format!("desired {} → {scale_to}: stopped {stopped}", args.tasks),
        },
        Step {
            step: "deploy",
            ms: ms(deploy),
            ratio: ratio(ms(deploy)),
            what: format!("new revision: started {started} (first wave)"),
        },
    ];
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&steps)?),
        Output::Table => {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            t.set_header(vec!["step", "ms", "× baseline", "what"]);
            for s in &steps {
                t.add_row(vec![
                    s.step.to_string(),
                    format!("{:.2}", s.ms),
                    format!("{:.2}", s.ratio),
                    s.what.clone(),
                ]);
            }
            println!("berth bench services: one reconcile of a {}-task service (in-memory store, one thread)", args.tasks);
            println!("{t}");
        }
    }
    Ok(())
}

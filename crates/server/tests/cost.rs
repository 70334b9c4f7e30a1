//! Metering and cost on a virtual clock, to the cent: the scheduler and
//! agents (direct calls) run real launches, tasks and terminations, and
//! `BerthV1.GetCost` reports from the meters they leave.

mod common;

use berth_control::agents;
use berth_control::scheduler::Scheduler;
use berth_model::clock::{Clock, ManualClock};
use berth_protocol::TaskReport;
use berth_store::{Durability, Store};
use common::sched::{agents_act, join_all, live_tasks, scheduler, Recorder};
use common::{setup, Harness};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn tick(s: &Scheduler) {
    tokio::task::block_in_place(|| s.tick()).expect("tick");
}

fn cents(x: f64) -> i64 {
    (x * 100.0).round() as i64
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

async fn settle(h: &Harness, s: &Scheduler, rec: &Recorder) {
    for _ in 0..6 {
        tick(s);
        join_all(h, rec);
        tick(s);
        agents_act(h, &[]).await;
    }
}

async fn run_task(h: &Harness) -> String {
    h.ok(
        "RunTask",
        json!({"cluster": "c1", "taskDefinition": "web",
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}]}),
    )
    .await["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn cost(h: &Harness, body: Value) -> Value {
    h.ok("BerthV1.GetCost", body).await
}

/// The catalog's price + fee per second of an instance type, us-east-1.
fn rates(instance_type: &str) -> (f64, f64) {
    let c = berth_catalog::Catalog::embedded();
    (
        c.on_demand_price("us-east-1", instance_type)
            .expect("price")
            / 3600.0,
        c.management_fee("us-east-1", instance_type).expect("fee") / 3600.0,
    )
}

fn advance(h: &Harness, secs: u64) {
    h.clock.advance(Duration::from_secs(secs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lives_bill_a_minute_and_long_ones_every_second_at_price_plus_fee() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    run_task(&h).await;
    settle(&h, &s, &rec).await;
    let short = rec.launches.lock().expect("lock")[0].instance_id.clone();
    advance(&h, 30);
    agents::terminated(&h.state.ctx, &short, "test: gone after 30 s").expect("terminated");
    // Billed its minute as soon as it has ended.
    let r = cost(&h, json!({"groupBy": "instance"})).await;
    assert_eq!(r["rows"][0]["seconds"], 60, "{r}");

    run_task(&h).await;
    settle(&h, &s, &rec).await;
    let long = rec.launches.lock().expect("lock")[1].instance_id.clone();
    advance(&h, 5400);
    agents::terminated(&h.state.ctx, &long, "test: gone after 90 min").expect("terminated");
    advance(&h, 1000);

    let r = cost(&h, json!({"groupBy": "instance"})).await;
    let rows = r["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{r}");
    for (id, seconds) in [(&short, 60u64), (&long, 5400)] {
        let row = rows
            .iter()
            .find(|x| x["instanceId"] == json!(id))
            .expect("row");
        assert_eq!(row["key"], json!(id));
        assert_eq!(row["seconds"], seconds, "{row}");
        let (price, fee) = rates(row["instanceType"].as_str().expect("type"));
        let secs = seconds as f64;
        assert_eq!(
            cents(row["instanceUsd"].as_f64().expect("usd")),
            cents(secs * price)
        );
        assert_eq!(
            cents(row["feeUsd"].as_f64().expect("usd")),
            cents(secs * fee)
        );
        assert_eq!(
            cents(row["totalUsd"].as_f64().expect("usd")),
            cents(secs * (price + fee))
        );
        assert!(close(
            row["totalUsd"].as_f64().unwrap_or(0.0),
            secs * (price + fee)
        ));
        assert_eq!(row["purchaseOption"], "ON_DEMAND");
    }
    assert_eq!(r["instanceSeconds"], 5460);
    // Idle plus the tasks' shares is the bill.
    let tasks = cost(&h, json!({"groupBy": "task", "cluster": "c1"})).await;
    let shares: f64 = tasks["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x["totalUsd"].as_f64().unwrap_or(0.0))
        .sum();
    assert_eq!(tasks["rows"].as_array().map(Vec::len), Some(2));
    assert!(close(
        shares + tasks["idleUsd"].as_f64().expect("idle"),
        tasks["totalUsd"].as_f64().expect("total")
    ));
    assert!(close(
        tasks["totalUsd"].as_f64().unwrap_or(0.0),
        r["totalUsd"].as_f64().unwrap_or(-1.0)
    ));
    // The short task ran 30 s (not the minute's padding, which is idle);
    // the long one 5,400 s, both with a Fargate price.
    let mut secs: Vec<u64> = tasks["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x["seconds"].as_u64().unwrap_or(0))
        .collect();
    secs.sort();
    assert_eq!(secs, [30, 5400]);
    assert!(tasks["rows"][0]["fargateUsd"].as_f64().is_some());
    assert_eq!(tasks["fargateUnpricedTasks"], 0);
    // The web task (64 MiB, no CPU) is a 0.25 vCPU / 0.5 GB Fargate task,
    // billed a minute for its 30 s.
    let per_hour = 0.25 * 0.04048 + 0.5 * 0.004445;
    assert!(close(
        tasks["fargateUsd"].as_f64().unwrap_or(0.0),
        (60.0 + 5400.0) * per_hour / 3600.0
    ));
    // A window cuts the bill: the first 600 s of the long one's life (the
    // short one ended, minute and all, when it began).
    let launched = r["until"].as_f64().unwrap_or(0.0) - 1000.0 - 5400.0;
    let w = cost(
        &h,
        json!({"groupBy": "cluster", "since": launched, "until": launched + 600.0}),
    )
    .await;
    assert_eq!(w["instanceSeconds"], 600, "{w}");
    assert_eq!(
        w["rows"][0]["key"],
        "arn:aws:ecs:us-east-1:000000000000:cluster/c1"
    );
    for by in ["service", "capacity-provider", "instance-type", "day"] {
        let r = cost(&h, json!({"groupBy": by})).await;
        let total: f64 = r["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x["totalUsd"].as_f64().unwrap_or(0.0))
            .sum();
        let expected = if by == "service" {
            r["attributedUsd"].as_f64()
        } else {
            r["totalUsd"].as_f64()
        };
        assert!(close(total, expected.unwrap_or(-1.0)), "{by}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_moved_to_another_instance_is_charged_on_each() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    h.ok(
        "CreateService",
        json!({"cluster": "c1", "serviceName": "api", "taskDefinition": "web", "desiredCount": 1,
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}],
               "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 200}}),
    )
    .await;
    settle(&h, &s, &rec).await;
    let first = live_tasks(&h).await[0]["containerInstanceArn"].clone();
    advance(&h, 600);
    h.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "c1", "containerInstances": [first], "status": "DRAINING"}),
    )
    .await;
    settle(&h, &s, &rec).await;
    let now_on: Vec<Value> = live_tasks(&h)
        .await
        .into_iter()
        .map(|t| t["containerInstanceArn"].clone())
        .collect();
    assert_eq!(now_on.len(), 1);
    assert_ne!(now_on[0], first, "the task moved");
    advance(&h, 900);

    let by_service = cost(&h, json!({"groupBy": "service"})).await;
    let row = &by_service["rows"][0];
    assert_eq!(row["key"], "service:api");
    assert_eq!(row["seconds"], 1500, "{by_service}");
    let by_instance = cost(&h, json!({"groupBy": "instance"})).await;
    let rows = by_instance["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    // Each instance: the task's share for its seconds there, the rest idle.
    let mut charged = 0.0;
    for r in rows {
        let total = r["totalUsd"].as_f64().unwrap_or(0.0);
        let idle = r["idleUsd"].as_f64().unwrap_or(0.0);
        assert!(idle < total, "a share of {r} is the task's");
        charged += total - idle;
    }
    assert!(close(charged, row["totalUsd"].as_f64().unwrap_or(-1.0)));
    let by_task = cost(&h, json!({"groupBy": "task"})).await;
    let mut secs: Vec<u64> = by_task["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x["seconds"].as_u64().unwrap_or(0))
        .collect();
    secs.sort();
    assert_eq!(secs, [600, 900]);
    let shares: f64 = by_task["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x["totalUsd"].as_f64().unwrap_or(0.0))
        .sum();
    assert_eq!(
        cents(shares + by_task["idleUsd"].as_f64().unwrap_or(0.0)),
        cents(by_task["totalUsd"].as_f64().unwrap_or(-1.0))
    );
    assert!(close(
        shares + by_task["idleUsd"].as_f64().unwrap_or(0.0),
        by_task["totalUsd"].as_f64().unwrap_or(-1.0)
    ));
}

/// A harness over a SQLite file, with its own clock.
fn file_harness(path: &Path, clock: Arc<ManualClock>) -> Harness {
    let store = Store::open_sqlite(path, Durability::Process).expect("store");
    Harness::over(store, clock, &path.parent().unwrap_or(path).join("state"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_neither_loses_nor_double_counts() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("berth.db");
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1_795_000_000)));
    let rec = Arc::new(Recorder::default());
    let (id, task) = {
        let h = file_harness(&db, clock.clone());
        setup(&h).await;
        let s = scheduler(&h, &rec);
        let task = run_task(&h).await;
        settle(&h, &s, &rec).await;
        advance(&h, 100);
        let id = rec.launches.lock().expect("lock")[0].instance_id.clone();
        (id, task)
    };
    // The server restarts on the same file: the meters are still there.
    let h = file_harness(&db, clock.clone());
    let before = cost(&h, json!({"groupBy": "instance"})).await;
    assert_eq!(before["instanceSeconds"], 100, "{before}");
    // Replays after the restart (the agent reports RUNNING again on hello,
    // a termination is recorded twice) change nothing.
    let r = TaskReport {
        task_arn: task.clone(),
        last_status: "RUNNING".into(),
        ..Default::default()
    };
    agents::report(&h.state.ctx, &id, &r).expect("report");
    advance(&h, 100);
    agents::terminated(&h.state.ctx, &id, "test").expect("terminated");
    advance(&h, 100);
    agents::terminated(&h.state.ctx, &id, "test again").expect("terminated");
    let after = cost(&h, json!({"groupBy": "task"})).await;
    assert_eq!(after["instanceSeconds"], 200, "{after}");
    assert_eq!(after["rows"][0]["key"], json!(task));
    assert_eq!(after["rows"][0]["seconds"], 200);
    drop(h);
    let h = file_harness(&db, clock);
    let again = cost(&h, json!({"groupBy": "task"})).await;
    assert_eq!(again["instanceSeconds"], 200);
    assert_eq!(again["totalUsd"], after["totalUsd"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_read_costs_and_bad_requests_say_what_is_wrong() {
    let h = Harness::new();
    setup(&h).await;
    let user = h
        .ok("BerthV1.CreateUser", json!({"name": "v", "role": "viewer"}))
        .await;
    let key = user["user"]["accessKeyId"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let secret = user["secretAccessKey"].as_str().unwrap_or("").to_string();
    let (status, r) = h
        .call_as(&key, &secret, "BerthV1.GetCost", json!({"cluster": "c1"}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["totalUsd"], 0.0);
    assert_eq!(r["groupBy"], "cluster");
    assert!(r["priceTable"]["source"].as_str().is_some());
    assert_eq!(r["feeTable"]["date"], "2026-11-25");

    let (status, kind) = h.err("BerthV1.GetCost", json!({"groupBy": "month"})).await;
    assert_eq!((status, kind.as_str()), (400, "InvalidParameterException"));
    let (status, kind) = h.err("BerthV1.GetCost", json!({"since": -5})).await;
    assert_eq!((status, kind.as_str()), (400, "InvalidParameterException"));
    let now = h.clock.epoch_seconds();
    let (_, kind) = h
        .err(
            "BerthV1.GetCost",
            json!({"since": now, "until": now - 10.0}),
        )
        .await;
    assert_eq!(kind, "InvalidParameterException");
    let (_, kind) = h.err("BerthV1.GetCost", json!({"cluster": "nope"})).await;
    assert_eq!(kind, "ClusterNotFoundException");
    let (_, kind) = h.err("BerthV1.GetCost", json!({"colour": "red"})).await;
    assert_eq!(kind, "InvalidParameterException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_instances_are_billed_at_the_planners_spot_price_and_the_full_fee() {
    let h = Harness::new();
    setup(&h).await;
    let mut spot = common::provider("spot", "c1");
    spot["managedInstancesProvider"]["instanceLaunchTemplate"]["capacityOptionType"] =
        json!("SPOT");
    h.ok("CreateCapacityProvider", spot).await;
    h.ok(
        "PutClusterCapacityProviders",
        json!({"cluster": "c1", "capacityProviders": ["mi", "spot"], "defaultCapacityProviderStrategy": []}),
    )
    .await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    h.ok(
        "RunTask",
        json!({"cluster": "c1", "taskDefinition": "web",
               "capacityProviderStrategy": [{"capacityProvider": "spot", "weight": 1}]}),
    )
    .await;
    settle(&h, &s, &rec).await;
    advance(&h, 3600);
    let r = cost(&h, json!({"groupBy": "instance"})).await;
    let row = &r["rows"][0];
    assert_eq!(row["purchaseOption"], "SPOT", "{r}");
    assert_eq!(row["capacityProvider"], "spot");
    assert_eq!(row["seconds"], 3600);
    let (price, fee) = rates(row["instanceType"].as_str().expect("type"));
    let ratio = berth_scheduler::plan::DEFAULT_SPOT_PRICE_RATIO;
    assert!(close(
        row["instanceUsd"].as_f64().unwrap_or(0.0),
        3600.0 * price * ratio
    ));
    assert!(close(row["feeUsd"].as_f64().unwrap_or(0.0), 3600.0 * fee));
    let by_cp = cost(&h, json!({"groupBy": "capacity-provider"})).await;
    assert_eq!(by_cp["rows"][0]["key"], "spot");
}

//! The service reconciler through the API and the scheduler: a service keeps
//! its desired count, replaces what stops, rolls a new revision start before
//! stop within its percentages, and drains to INACTIVE. Agents are direct
//! calls that report their tasks RUNNING or STOPPED.

mod common;

use berth_control::agents;
use berth_control::scheduler::Scheduler;
use berth_model::clock::Clock as _;
use berth_protocol::TaskReport;
use common::sched::{instance_id, join_all, scheduler, Recorder};
use common::{setup, Harness};
use serde_json::{json, Value};
use std::sync::Arc;

fn tick(s: &Scheduler) {
    tokio::task::block_in_place(|| s.tick()).expect("tick");
}

async fn service(h: &Harness) -> Value {
    h.ok(
        "DescribeServices",
        json!({"cluster": "c1", "services": ["api"]}),
    )
    .await["services"][0]
        .clone()
}

/// The service's tasks not yet STOPPED.
async fn tasks(h: &Harness) -> Vec<Value> {
    let mut out = vec![];
    for desired in ["RUNNING", "STOPPED"] {
        let list = h
            .ok(
                "ListTasks",
                json!({"cluster": "c1", "serviceName": "api", "desiredStatus": desired}),
            )
            .await;
        let arns = list["taskArns"].as_array().cloned().unwrap_or_default();
        if arns.is_empty() {
            continue;
        }
        let d = h
            .ok("DescribeTasks", json!({"cluster": "c1", "tasks": arns}))
            .await;
        out.extend(
            d["tasks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t["lastStatus"] != "STOPPED"),
        );
    }
    out
}

/// What the agents do: placed tasks the server wants run, RUNNING; tasks it
/// wants stopped, STOPPED (exit 143).
async fn agents_act(h: &Harness) {
    agents_act_failing(h, None).await
}

/// Like [`agents_act`], but tasks of `failing` (a task definition ARN suffix)
/// fail to start.
async fn agents_act_failing(h: &Harness, failing: Option<&str>) {
    for t in tasks(h).await {
        let Some(ci) = t["containerInstanceArn"].as_str() else {
            continue;
        };
        let id = instance_id(h, ci).await;
        let fails = failing.is_some_and(|f| {
            t["taskDefinitionArn"]
                .as_str()
                .is_some_and(|a| a.ends_with(f))
        });
        let stop = t["desiredStatus"] == "STOPPED";
        let report = if fails {
            TaskReport {
                task_arn: t["taskArn"].as_str().unwrap_or("").into(),
                last_status: "STOPPED".into(),
                stop_code: Some("TaskFailedToStart".into()),
                stopped_reason: Some("CannotPullContainerError: crash".into()),
                ..Default::default()
            }
        } else {
            TaskReport {
                task_arn: t["taskArn"].as_str().unwrap_or("").into(),
                last_status: if stop { "STOPPED" } else { "RUNNING" }.into(),
                started_at: Some(1.0),
                ..Default::default()
            }
        };
        agents::report(&h.state.ctx, &id, &report).expect("report");
    }
}

/// Ticks and lets agents act until nothing changes (at most 10 rounds).
async fn settle(h: &Harness, s: &Scheduler, rec: &Recorder) {
    for _ in 0..10 {
        tick(s);
        join_all(h, rec);
        tick(s);
        agents_act(h).await;
        tick(s);
    }
}

fn by_status(tasks: &[Value]) -> (usize, usize) {
    let running = tasks
        .iter()
        .filter(|t| t["lastStatus"] == "RUNNING")
        .count();
    (running, tasks.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_keeps_its_count_rolls_revisions_and_drains() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    h.ok(
        "CreateService",
        json!({"cluster": "c1", "serviceName": "api", "taskDefinition": "web", "desiredCount": 3,
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}],
               "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 200}}),
    )
    .await;
    settle(&h, &s, &rec).await;
    let svc = service(&h).await;
    assert_eq!(svc["runningCount"], 3, "{svc}");
    assert_eq!(svc["deployments"].as_array().map(Vec::len), Some(1));
    assert_eq!(svc["deployments"][0]["rolloutState"], "COMPLETED", "{svc}");
    let events: Vec<String> = svc["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect();
    assert!(
        events.iter().any(|e| e.contains("steady state")),
        "{events:?}"
    );
    let ts = tasks(&h).await;
    assert_eq!(by_status(&ts), (3, 3));
    for t in &ts {
        assert_eq!(t["group"], "service:api");
        assert_eq!(t["startedBy"], svc["deployments"][0]["id"]);
    }

    // Scale out to 5.
    h.ok(
        "UpdateService",
        json!({"cluster": "c1", "service": "api", "desiredCount": 5}),
    )
    .await;
    settle(&h, &s, &rec).await;
    assert_eq!(by_status(&tasks(&h).await), (5, 5));

    // A task that stops on its own is replaced.
    let victim = tasks(&h).await[0].clone();
    let id = instance_id(&h, victim["containerInstanceArn"].as_str().unwrap_or("")).await;
    let report = TaskReport {
        task_arn: victim["taskArn"].as_str().unwrap_or("").into(),
        last_status: "STOPPED".into(),
        stop_code: Some("EssentialContainerExited".into()),
        stopped_reason: Some("Essential container in task exited".into()),
        ..Default::default()
    };
    agents::report(&h.state.ctx, &id, &report).expect("report");
    settle(&h, &s, &rec).await;
    let ts = tasks(&h).await;
    assert_eq!(by_status(&ts), (5, 5));
    assert!(ts.iter().all(|t| t["taskArn"] != victim["taskArn"]));

    // A new revision rolls start before stop, within 100 % .. 200 %.
    h.ok(
        "RegisterTaskDefinition",
        json!({"family": "web", "requiresCompatibilities": ["MANAGED_INSTANCES"],
               "containerDefinitions": [{"name": "app", "image": "busybox:2", "memory": 64}]}),
    )
    .await;
    h.ok(
        "UpdateService",
        json!({"cluster": "c1", "service": "api", "taskDefinition": "web:2"}),
    )
    .await;
    for _ in 0..10 {
        tick(&s);
        join_all(&h, &rec);
        tick(&s);
        let ts = tasks(&h).await;
        let running = ts.iter().filter(|t| t["lastStatus"] == "RUNNING").count();
        assert!(
            running >= 5,
            "below minimumHealthyPercent: {running} running"
        );
        assert!(ts.len() <= 10, "above maximumPercent: {} tasks", ts.len());
        agents_act(&h).await;
    }
    settle(&h, &s, &rec).await;
    let svc = service(&h).await;
    assert_eq!(
        svc["deployments"].as_array().map(Vec::len),
        Some(1),
        "{svc}"
    );
    assert_eq!(svc["deployments"][0]["rolloutState"], "COMPLETED");
    let ts = tasks(&h).await;
    assert_eq!(by_status(&ts), (5, 5));
    assert!(ts.iter().all(|t| t["taskDefinitionArn"]
        .as_str()
        .is_some_and(|a| a.ends_with("web:2"))));
    // The old ones were stopped by the scheduler.
    let old = h
        .ok(
            "ListTasks",
            json!({"cluster": "c1", "serviceName": "api", "desiredStatus": "STOPPED"}),
        )
        .await["taskArns"]
        .clone();
    let old = h
        .ok("DescribeTasks", json!({"cluster": "c1", "tasks": old}))
        .await;
    assert!(old["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["stopCode"] == "ServiceSchedulerInitiated"));

    // Delete with force: drained, then INACTIVE.
    h.ok(
        "DeleteService",
        json!({"cluster": "c1", "service": "api", "force": true}),
    )
    .await;
    settle(&h, &s, &rec).await;
    assert!(tasks(&h).await.is_empty());
    assert_eq!(service(&h).await["status"], "INACTIVE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_fails_to_start_trips_the_circuit_breaker_and_rolls_back() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    h.ok(
        "CreateService",
        json!({"cluster": "c1", "serviceName": "api", "taskDefinition": "web", "desiredCount": 3,
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}],
               "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 200,
                   "deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
    )
    .await;
    settle(&h, &s, &rec).await;
    assert_eq!(by_status(&tasks(&h).await), (3, 3));
    h.ok(
        "RegisterTaskDefinition",
        json!({"family": "web", "requiresCompatibilities": ["MANAGED_INSTANCES"],
               "containerDefinitions": [{"name": "app", "image": "crash", "memory": 64}]}),
    )
    .await;
    h.ok(
        "UpdateService",
        json!({"cluster": "c1", "service": "api", "taskDefinition": "web:2"}),
    )
    .await;
    for _ in 0..15 {
        tick(&s);
        join_all(&h, &rec);
        tick(&s);
        let running = tasks(&h)
            .await
            .iter()
            .filter(|t| t["lastStatus"] == "RUNNING")
            .count();
        assert!(running >= 3, "the old revision keeps serving: {running}");
        agents_act_failing(&h, Some("web:2")).await;
    }
    settle(&h, &s, &rec).await;
    let svc = service(&h).await;
    let deployments = svc["deployments"].as_array().cloned().unwrap_or_default();
    let primary = deployments
        .iter()
        .find(|d| d["status"] == "PRIMARY")
        .cloned()
        .unwrap_or_default();
    assert!(
        primary["taskDefinition"]
            .as_str()
            .is_some_and(|a| a.ends_with("web:1")),
        "rolled back to web:1: {svc}"
    );
    assert!(svc["taskDefinition"]
        .as_str()
        .is_some_and(|a| a.ends_with("web:1")));
    let ts = tasks(&h).await;
    assert_eq!(by_status(&ts), (3, 3));
    assert!(ts.iter().all(|t| t["taskDefinitionArn"]
        .as_str()
        .is_some_and(|a| a.ends_with("web:1"))));
    let events: Vec<String> = svc["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect();
    assert!(
        events.iter().any(|e| e.contains("circuit breaker")
            || e.contains("rolling back")
            || e.contains("rolled back")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_instance_hands_its_service_tasks_over_start_before_stop() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    h.ok(
        "CreateService",
        json!({"cluster": "c1", "serviceName": "api", "taskDefinition": "web", "desiredCount": 3,
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}],
               "placementConstraints": [{"type": "distinctInstance"}],
               "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 150}}),
    )
    .await;
    settle(&h, &s, &rec).await;
    let ts = tasks(&h).await;
    assert_eq!(by_status(&ts), (3, 3));
    let ci = ts[0]["containerInstanceArn"].clone();
    h.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "c1", "containerInstances": [ci], "status": "DRAINING"}),
    )
    .await;
    // Never fewer than 3 running, never more than 4 tasks (150 %).
    for _ in 0..10 {
        tick(&s);
        join_all(&h, &rec);
        tick(&s);
        let ts = tasks(&h).await;
        let running = ts.iter().filter(|t| t["lastStatus"] == "RUNNING").count();
        assert!(running >= 3, "below minimumHealthyPercent: {running}");
        assert!(ts.len() <= 4, "above maximumPercent: {}", ts.len());
        agents_act(&h).await;
    }
    settle(&h, &s, &rec).await;
    let ts = tasks(&h).await;
    assert_eq!(by_status(&ts), (3, 3));
    assert!(ts.iter().all(|t| t["containerInstanceArn"] != ci), "{ts:?}");
    // ACTIVE again: nothing moves back, nothing else changes.
    h.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "c1", "containerInstances": [ci], "status": "ACTIVE"}),
    )
    .await;
    settle(&h, &s, &rec).await;
    assert_eq!(by_status(&tasks(&h).await), (3, 3));
    let svc = service(&h).await;
    assert_eq!(
        svc["deployments"].as_array().map(Vec::len),
        Some(1),
        "{svc}"
    );
}

/// A pass that changed nothing is remembered and the next ones skipped while
/// nothing they read changes, but not when the decision depends on the time:
/// an UNHEALTHY task is kept through the grace period and replaced once it
/// is over, with nothing in the store changed in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_task_is_replaced_when_its_grace_period_ends_with_nothing_else_changed() {
    let h = Harness::new();
    setup(&h).await;
    h.ok(
        "RegisterTaskDefinition",
        json!({"family": "checked", "requiresCompatibilities": ["MANAGED_INSTANCES"],
               "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 64,
                   "healthCheck": {"command": ["CMD-SHELL", "true"]}}]}),
    )
    .await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    h.ok(
        "CreateService",
        json!({"cluster": "c1", "serviceName": "api", "taskDefinition": "checked", "desiredCount": 2,
               "healthCheckGracePeriodSeconds": 60,
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}],
               "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 200}}),
    )
    .await;
    for _ in 0..5 {
        tick(&s);
        join_all(&h, &rec);
        tick(&s);
    }
    // Both RUNNING and UNHEALTHY, started now: healthy for the grace period.
    let now = h.clock.now().as_secs_f64();
    for t in tasks(&h).await {
        let Some(ci) = t["containerInstanceArn"].as_str() else {
            continue;
        };
        let id = instance_id(&h, ci).await;
        let report = TaskReport {
            task_arn: t["taskArn"].as_str().unwrap_or("").into(),
            last_status: "RUNNING".into(),
            started_at: Some(now),
            containers: vec![berth_protocol::ContainerReport {
                name: "app".into(),
                last_status: "RUNNING".into(),
                health_status: Some("UNHEALTHY".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        agents::report(&h.state.ctx, &id, &report).expect("report");
    }
    for _ in 0..3 {
        tick(&s);
    }
    let before: Vec<Value> = tasks(&h).await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before.iter().all(|t| t["desiredStatus"] == "RUNNING"));
    // The grace period ends; nothing else changes.
    h.clock.advance(std::time::Duration::from_secs(61));
    tick(&s);
    let after = tasks(&h).await;
    assert!(
        after.len() > 2,
        "replacements start once the grace period is over: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_reports_apply_in_order_in_one_write() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    h.ok(
        "CreateService",
        json!({"cluster": "c1", "serviceName": "api", "taskDefinition": "web", "desiredCount": 4,
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}]}),
    )
    .await;
    tick(&s);
    join_all(&h, &rec);
    tick(&s);
    // Each instance's tasks reported at once: RUNNING, then one of them
    // STOPPED in the same batch, and a task berth does not know.
    let mut by_instance: std::collections::BTreeMap<String, (String, Vec<String>)> =
        Default::default();
    for t in tasks(&h).await {
        let ci = t["containerInstanceArn"]
            .as_str()
            .expect("placed")
            .to_string();
        let id = instance_id(&h, &ci).await;
        let e = by_instance.entry(id).or_insert((ci, vec![]));
        e.1.push(t["taskArn"].as_str().unwrap_or("").to_string());
    }
    assert!(!by_instance.is_empty());
    let mut stopped = vec![];
    for (id, (_, arns)) in &by_instance {
        let mut reports: Vec<TaskReport> = arns
            .iter()
            .map(|a| TaskReport {
                task_arn: a.clone(),
                last_status: "RUNNING".into(),
                started_at: Some(1.0),
                ..Default::default()
            })
            .collect();
        reports.push(TaskReport {
            task_arn: format!("{}-unknown", arns[0]),
            last_status: "RUNNING".into(),
            ..Default::default()
        });
        reports.push(TaskReport {
            task_arn: arns[0].clone(),
            last_status: "STOPPED".into(),
            stop_code: Some("EssentialContainerExited".into()),
            ..Default::default()
        });
        stopped.push(arns[0].clone());
        agents::reports(&h.state.ctx, id, &reports).expect("reports");
    }
    // Later reports of a batch apply over earlier ones.
    let d = h
        .ok("DescribeTasks", json!({"cluster": "c1", "tasks": stopped}))
        .await;
    for t in d["tasks"].as_array().expect("tasks") {
        assert_eq!(t["lastStatus"], "STOPPED", "{t}");
    }
    // The counts are the batch's outcome.
    for (ci, arns) in by_instance.values() {
        let d = h
            .ok(
                "DescribeContainerInstances",
                json!({"cluster": "c1", "containerInstances": [ci]}),
            )
            .await;
        let c = &d["containerInstances"][0];
        assert_eq!(c["runningTasksCount"], arns.len() - 1, "{c}");
        assert_eq!(c["pendingTasksCount"], 0, "{c}");
    }
}

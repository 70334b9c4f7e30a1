//! The instance lifecycle through the API and the scheduler, on a virtual
//! clock: lifetime drains and the hard deadline, the disruption budget, spot
//! interruptions, lost agents, user drains and auto repair. Agents are
//! direct calls reporting their tasks.

mod common;

use berth_control::agents;
use berth_control::scheduler::Scheduler;
use berth_protocol::{DesiredStatus, ServerMessage};
use common::sched::{agents_act, join_all, live_tasks, scheduler_with, Recorder};
use common::{setup, Harness};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const DAY: u64 = 86_400;

fn tick(s: &Scheduler) -> berth_control::scheduler::TickReport {
    tokio::task::block_in_place(|| s.tick()).expect("tick")
}

async fn describe_task(h: &Harness, arn: &Value) -> Value {
    h.ok("DescribeTasks", json!({"cluster": "c1", "tasks": [arn]}))
        .await["tasks"][0]
        .clone()
}

async fn instance(h: &Harness, ci: &Value) -> Value {
    h.ok(
        "DescribeContainerInstances",
        json!({"cluster": "c1", "containerInstances": [ci], "include": ["CONTAINER_INSTANCE_HEALTH"]}),
    )
    .await["containerInstances"][0]
        .clone()
}

async fn instances(h: &Harness, status: &str) -> Vec<Value> {
    let arns = h
        .ok(
            "ListContainerInstances",
            json!({"cluster": "c1", "status": status}),
        )
        .await["containerInstanceArns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if arns.is_empty() {
        return vec![];
    }
    h.ok(
        "DescribeContainerInstances",
        json!({"cluster": "c1", "containerInstances": arns}),
    )
    .await["containerInstances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn settle(h: &Harness, s: &Scheduler, rec: &Recorder, silent: &[String]) {
    for _ in 0..8 {
        tick(s);
        join_all(h, rec);
        tick(s);
        agents_act(h, silent).await;
        tick(s);
    }
}

async fn running_of(h: &Harness, service: &str) -> usize {
    live_tasks(h)
        .await
        .iter()
        .filter(|t| t["group"] == format!("service:{service}") && t["lastStatus"] == "RUNNING")
        .count()
}

async fn tag_provider(h: &Harness, tags: Value) {
    let arn = h
        .ok(
            "DescribeCapacityProviders",
            json!({"capacityProviders": ["mi"]}),
        )
        .await["capacityProviders"][0]["capacityProviderArn"]
        .clone();
    h.ok("TagResource", json!({"resourceArn": arn, "tags": tags}))
        .await;
}

async fn service(h: &Harness, name: &str, count: u32, distinct: bool) {
    let mut body = json!({"cluster": "c1", "serviceName": name, "taskDefinition": "web", "desiredCount": count,
           "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}],
           "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 200}});
    if distinct {
        body["placementConstraints"] = json!([{"type": "distinctInstance"}]);
    }
    h.ok("CreateService", body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_instances_drain_at_their_age_and_expire_at_the_deadline() {
    let h = Harness::new();
    setup(&h).await;
    tag_provider(
        &h,
        json!([{"key": "berth:drain-age", "value": "1d"}, {"key": "berth:max-lifetime", "value": "2d"}]),
    )
    .await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler_with(&h, &rec, |_| {});
    let lone = h
        .ok(
            "RunTask",
            json!({"cluster": "c1", "taskDefinition": "web",
                   "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}]}),
        )
        .await["tasks"][0]["taskArn"]
        .clone();
    settle(&h, &s, &rec, &[]).await;
    service(&h, "api", 3, false).await;
    settle(&h, &s, &rec, &[]).await;
    assert_eq!(running_of(&h, "api").await, 3);
    let first = describe_task(&h, &lone).await["containerInstanceArn"].clone();
    let image = instance(&h, &first).await["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == "berth:image-version")
        .map(|a| a["value"].clone());
    assert_eq!(image, Some(json!("1")));

    // Not yet: 0.8 days is before any spread drain date (at most 0.1 day early).
    h.clock.advance(Duration::from_secs(DAY * 8 / 10));
    let r = tick(&s);
    assert!(r.drained.is_empty(), "{r:?}");
    h.clock.advance(Duration::from_secs(DAY / 5));
    // Due: replacement capacity for its service tasks is launched first; the
    // instance stays ACTIVE until it has joined.
    let launches = rec.launches.lock().expect("lock").len();
    let r = tick(&s);
    assert!(r.drained.is_empty(), "{r:?}");
    assert_eq!(r.prepared.len(), 1, "{r:?}");
    let replacement = r.prepared[0].1[0].clone();
    assert!(rec.launches.lock().expect("lock").len() > launches);
    assert_eq!(instance(&h, &first).await["status"], "ACTIVE");
    let fleet = h
        .ok("BerthV1.DescribeFleet", json!({"cluster": "c1"}))
        .await;
    let preparing: Vec<&Value> = fleet["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("preparing"))
        .collect();
    assert_eq!(preparing.len(), 1, "{fleet}");
    assert_eq!(preparing[0]["kind"], "lifetime");
    assert_eq!(preparing[0]["replacements"][0], replacement.as_str());
    let r = tick(&s);
    assert!(r.drained.is_empty() && r.prepared.is_empty(), "{r:?}");
    join_all(&h, &rec);
    let r = tick(&s);
    assert_eq!(r.drained.len(), 1, "{r:?}");
    assert_eq!(
        r.drained[0].1,
        berth_control::lifecycle::DrainKind::Lifetime
    );
    let ci = instance(&h, &first).await;
    assert_eq!(ci["status"], "DRAINING");
    // The replacement was told to pull the images of the tasks moving to it.
    let prefetched: Vec<Vec<String>> = rec
        .sent
        .lock()
        .expect("lock")
        .iter()
        .filter(|(to, _)| to == &replacement)
        .filter_map(|(_, m)| match m {
            ServerMessage::Prefetch { images } => Some(images.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(prefetched, [vec!["busybox".to_string()]]);
    // The service moves, never below its floor; the standalone task stays.
    for _ in 0..8 {
        tick(&s);
        join_all(&h, &rec);
        tick(&s);
        assert!(running_of(&h, "api").await >= 3);
        agents_act(&h, &[]).await;
    }
    settle(&h, &s, &rec, &[]).await;
    let ts = live_tasks(&h).await;
    assert!(ts
        .iter()
        .filter(|t| t["group"] == "service:api")
        .all(|t| t["containerInstanceArn"] != first));
    assert_eq!(describe_task(&h, &lone).await["lastStatus"], "RUNNING");
    assert_eq!(instance(&h, &first).await["status"], "DRAINING");

    // The hard deadline: the standalone task is stopped, the instance goes.
    h.clock.advance(Duration::from_secs(DAY));
    let r = tick(&s);
    assert!(
        r.retired
            .iter()
            .any(|(_, why)| why.contains("Maximum lifetime")),
        "{r:?}"
    );
    let t = describe_task(&h, &lone).await;
    assert_eq!(t["lastStatus"], "STOPPED");
    assert_eq!(t["stopCode"], "TerminationNotice");
    assert_eq!(instance(&h, &first).await["status"], "INACTIVE");
    settle(&h, &s, &rec, &[]).await;
    assert_eq!(running_of(&h, "api").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disruption_budget_bounds_concurrent_drains() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler_with(&h, &rec, |c| {
        c.lifecycle.drain_age = DAY as f64;
        c.lifecycle.max_lifetime = 30.0 * DAY as f64;
    });
    service(&h, "api", 10, true).await;
    settle(&h, &s, &rec, &[]).await;
    assert_eq!(instances(&h, "ACTIVE").await.len(), 10);
    h.clock.advance(Duration::from_secs(DAY));
    let r = tick(&s);
    assert_eq!(r.prepared.len(), 2, "20 % of 10: {r:?}");
    assert!(r.drained.is_empty(), "{r:?}");
    // Replacements that never join hold the drains up to the prepare timeout.
    h.clock.advance(Duration::from_secs(599));
    assert!(tick(&s).drained.is_empty());
    h.clock.advance(Duration::from_secs(1));
    let r = tick(&s);
    assert_eq!(r.drained.len(), 2, "20 % of 10: {r:?}");
    assert_eq!(instances(&h, "DRAINING").await.len(), 2);
    tick(&s);
    assert_eq!(instances(&h, "DRAINING").await.len(), 2);
    // Drains complete one batch at a time; every old instance goes.
    let old: Vec<Value> = instances(&h, "ACTIVE")
        .await
        .into_iter()
        .chain(instances(&h, "DRAINING").await)
        .map(|c| c["containerInstanceArn"].clone())
        .collect();
    for _ in 0..15 {
        tick(&s);
        join_all(&h, &rec);
        tick(&s);
        assert!(instances(&h, "DRAINING").await.len() <= 2);
        assert!(running_of(&h, "api").await >= 10);
        agents_act(&h, &[]).await;
    }
    for ci in &old {
        assert_eq!(instance(&h, ci).await["status"], "INACTIVE");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_interruption_stops_tasks_at_once_and_replaces_them() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler_with(&h, &rec, |_| {});
    service(&h, "api", 2, false).await;
    settle(&h, &s, &rec, &[]).await;
    let ci = instances(&h, "ACTIVE").await[0].clone();
    let id = ci["ec2InstanceId"].as_str().unwrap_or("").to_string();
    let before: Vec<Value> = live_tasks(&h)
        .await
        .iter()
        .map(|t| t["taskArn"].clone())
        .collect();
    tokio::task::block_in_place(|| s.spot_interruption(&id)).expect("notice");
    for arn in &before {
        let t = describe_task(&h, arn).await;
        assert_eq!(t["desiredStatus"], "STOPPED");
        assert_eq!(t["stopCode"], "SpotInterruption");
    }
    // The agent is told to stop them within the notice, whatever their stopTimeout.
    tick(&s);
    let sent = rec.sent.lock().expect("lock").clone();
    let Some(ServerMessage::Desired { tasks, .. }) = sent
        .iter()
        .rev()
        .find(|(to, m)| to == &id && matches!(m, ServerMessage::Desired { .. }))
        .map(|(_, m)| m)
    else {
        panic!("no desired set for the interrupted instance");
    };
    assert_eq!(tasks.len(), before.len());
    for spec in tasks {
        assert_eq!(spec.desired_status, DesiredStatus::Stopped);
        assert_eq!(spec.stop_timeout_cap, Some(120));
    }
    settle(&h, &s, &rec, &[]).await;
    assert_eq!(running_of(&h, "api").await, 2);
    assert_eq!(
        instance(&h, &ci["containerInstanceArn"]).await["status"],
        "INACTIVE"
    );
    assert!(rec.terminated.lock().expect("lock").contains(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_instance_is_presumed_lost_and_its_tasks_are_replaced_once() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler_with(&h, &rec, |c| c.lifecycle.agent_timeout = 600.0);
    service(&h, "api", 2, false).await;
    settle(&h, &s, &rec, &[]).await;
    let ci = instances(&h, "ACTIVE").await[0].clone();
    let id = ci["ec2InstanceId"].as_str().unwrap_or("").to_string();
    agents::disconnected(&h.state.ctx, &id).expect("gone");
    let health = instance(&h, &ci["containerInstanceArn"]).await["healthStatus"].clone();
    assert_eq!(health["overallStatus"], "INSUFFICIENT_DATA", "{health}");
    assert_eq!(health["details"][0]["type"], "CONTAINER_RUNTIME");
    // Within the timeout: it is repaired (drained), its tasks are not lost yet.
    h.clock.advance(Duration::from_secs(60));
    settle(&h, &s, &rec, std::slice::from_ref(&id)).await;
    assert!(running_of(&h, "api").await >= 2);
    // Past it: presumed lost, its tasks STOPPED, the service whole elsewhere.
    h.clock.advance(Duration::from_secs(600));
    let r = tick(&s);
    assert!(
        r.retired
            .iter()
            .any(|(i, why)| i == &id && why.contains("presumed lost")),
        "{r:?}"
    );
    settle(&h, &s, &rec, std::slice::from_ref(&id)).await;
    assert_eq!(running_of(&h, "api").await, 2);
    // It comes back: refused, nothing runs twice.
    let again = agents::hello(&h.state.ctx, &common::sched::hello(&id, 2048, 3840));
    assert!(again.is_err());
    assert_eq!(running_of(&h, "api").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_drain_empties_the_instance_without_terminating_it() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler_with(&h, &rec, |_| {});
    service(&h, "api", 2, false).await;
    settle(&h, &s, &rec, &[]).await;
    let ci = instances(&h, "ACTIVE").await[0]["containerInstanceArn"].clone();
    h.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "c1", "containerInstances": [ci], "status": "DRAINING"}),
    )
    .await;
    settle(&h, &s, &rec, &[]).await;
    let c = instance(&h, &ci).await;
    assert_eq!(c["status"], "DRAINING");
    assert_eq!(c["runningTasksCount"], 0);
    assert_eq!(running_of(&h, "api").await, 2);
    assert!(rec.terminated.lock().expect("lock").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_repair_replaces_impaired_instances_unless_disabled() {
    let h = Harness::new();
    setup(&h).await;
    h.ok(
        "UpdateCapacityProvider",
        json!({"name": "mi", "managedInstancesProvider": {
            "infrastructureRoleArn": "arn:aws:iam::123456789012:role/ecsInfrastructureRole",
            "instanceLaunchTemplate": common::provider("mi", "c1")["managedInstancesProvider"]["instanceLaunchTemplate"],
            "autoRepairConfiguration": {"actionsStatus": "DISABLED"}}}),
    )
    .await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler_with(&h, &rec, |_| {});
    service(&h, "api", 1, false).await;
    settle(&h, &s, &rec, &[]).await;
    let ci = instances(&h, "ACTIVE").await[0].clone();
    let id = ci["ec2InstanceId"].as_str().unwrap_or("").to_string();
    agents::disconnected(&h.state.ctx, &id).expect("gone");
    h.clock.advance(Duration::from_secs(60));
    let r = tick(&s);
    assert!(r.drained.is_empty(), "repair is off: {r:?}");
    h.ok(
        "UpdateCapacityProvider",
        json!({"name": "mi", "managedInstancesProvider": {
            "infrastructureRoleArn": "arn:aws:iam::123456789012:role/ecsInfrastructureRole",
            "instanceLaunchTemplate": common::provider("mi", "c1")["managedInstancesProvider"]["instanceLaunchTemplate"],
            "autoRepairConfiguration": {"actionsStatus": "ENABLED"}}}),
    )
    .await;
    let r = tick(&s);
    assert_eq!(
        r.drained,
        vec![(id, berth_control::lifecycle::DrainKind::Repair)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lifecycle_tags_are_refused_and_nothing_changes() {
    let h = Harness::new();
    setup(&h).await;
    let arn = h
        .ok(
            "DescribeCapacityProviders",
            json!({"capacityProviders": ["mi"]}),
        )
        .await["capacityProviders"][0]["capacityProviderArn"]
        .clone();
    for tags in [
        json!([{"key": "berth:drain-age", "value": "soon"}]),
        json!([{"key": "berth:maintenance-window", "value": "someday 02-04"}]),
        json!([{"key": "berth:drain-age", "value": "20d"}, {"key": "berth:max-lifetime", "value": "10d"}]),
    ] {
        let (status, kind) = h
            .err("TagResource", json!({"resourceArn": arn, "tags": tags}))
            .await;
        assert_eq!((status, kind.as_str()), (400, "InvalidParameterException"));
    }
    let mut bad = common::provider("other", "c1");
    bad["tags"] = json!([{"key": "berth:max-lifetime", "value": "-3d"}]);
    let (_, kind) = h.err("CreateCapacityProvider", bad).await;
    assert_eq!(kind, "InvalidParameterException");
    let listed = h
        .ok("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(listed["tags"], json!([]));
}

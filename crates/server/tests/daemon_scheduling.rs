//! The daemon reconciler through the API and the scheduler: one daemon task
//! on every instance of the daemon's capacity providers, before application
//! tasks and after them when the instance goes; revisions roll in place and
//! roll back when they fail; a failing critical daemon impairs its instance;
//! deletion stops everything. Agents are direct calls reporting their tasks.

mod common;

use berth_control::agents;
use berth_control::scheduler::Scheduler;
use berth_protocol::TaskReport;
use common::sched::{instance_id, join_all, live_tasks, scheduler, scheduler_with, Recorder};
use common::{setup, Harness};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn tick(s: &Scheduler) {
    tokio::task::block_in_place(|| s.tick()).expect("tick");
}

fn is_daemon(t: &Value) -> bool {
    t["group"]
        .as_str()
        .is_some_and(|g| g.starts_with("daemon:"))
}

async fn instances(h: &Harness) -> Vec<Value> {
    let list = h
        .ok("ListContainerInstances", json!({"cluster": "c1"}))
        .await;
    let arns = list["containerInstanceArns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if arns.is_empty() {
        return vec![];
    }
    h.ok(
        "DescribeContainerInstances",
        json!({"cluster": "c1", "containerInstances": arns, "include": ["CONTAINER_INSTANCE_HEALTH"]}),
    )
    .await["containerInstances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn report(t: &Value, status: &str) -> TaskReport {
    TaskReport {
        task_arn: t["taskArn"].as_str().unwrap_or("").into(),
        last_status: status.into(),
        started_at: Some(1.0),
        ..Default::default()
    }
}

/// The agents: placed tasks run, tasks to stop stop; tasks whose task
/// definition ARN ends with `failing` fail to start.
async fn agents_act(h: &Harness, failing: Option<&str>) {
    for t in live_tasks(h).await {
        let Some(ci) = t["containerInstanceArn"].as_str() else {
            continue;
        };
        let id = instance_id(h, ci).await;
        let fails = failing.is_some_and(|f| {
            t["taskDefinitionArn"]
                .as_str()
                .is_some_and(|a| a.ends_with(f))
        });
        let r = if fails {
            TaskReport {
                stop_code: Some("TaskFailedToStart".into()),
                stopped_reason: Some("CannotStartContainerError: crash".into()),
                ..report(&t, "STOPPED")
            }
        } else if t["desiredStatus"] == "STOPPED" {
            report(&t, "STOPPED")
        } else {
            report(&t, "RUNNING")
        };
        agents::report(&h.state.ctx, &id, &r).expect("report");
    }
}

async fn settle(h: &Harness, s: &Scheduler, rec: &Recorder, failing: Option<&str>) {
    for _ in 0..10 {
        tick(s);
        join_all(h, rec);
        tick(s);
        agents_act(h, failing).await;
        tick(s);
    }
}

/// Daemon tasks by container instance ARN.
fn daemons_by_instance(tasks: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for t in tasks.iter().filter(|t| is_daemon(t)) {
        out.entry(t["containerInstanceArn"].as_str().unwrap_or("").into())
            .or_default()
            .push(t.clone());
    }
    out
}

async fn register_daemon_td(h: &Harness, image: &str, memory: u32) -> String {
    h.ok(
        "RegisterDaemonTaskDefinition",
        json!({"family": "shipper", "cpu": "256", "memory": memory.to_string(),
               "containerDefinitions": [{"name": "ship", "image": image, "privileged": true,
                                          "mountPoints": [{"sourceVolume": "logs", "containerPath": "/host/logs", "readOnly": true}]}],
               "volumes": [{"name": "logs", "host": {"sourcePath": "/var/log"}}]}),
    )
    .await["daemonTaskDefinitionArn"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn create_daemon(h: &Harness, td: &str) -> (String, String) {
    let cp = h
        .ok(
            "DescribeCapacityProviders",
            json!({"capacityProviders": ["mi"]}),
        )
        .await["capacityProviders"][0]["capacityProviderArn"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let r = h
        .ok(
            "CreateDaemon",
            json!({"clusterArn": "c1", "daemonName": "logs", "daemonTaskDefinitionArn": td,
                   "capacityProviderArns": [cp]}),
        )
        .await;
    (
        r["daemonArn"].as_str().unwrap_or("").to_string(),
        r["deploymentArn"].as_str().unwrap_or("").to_string(),
    )
}

async fn deployment(h: &Harness, arn: &str) -> Value {
    h.ok(
        "DescribeDaemonDeployments",
        json!({"daemonDeploymentArns": [arn]}),
    )
    .await["daemonDeployments"][0]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_runs_once_on_every_instance_before_application_tasks() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    let td = register_daemon_td(&h, "busybox", 512).await;
    let (daemon, dep) = create_daemon(&h, &td).await;
    // No instance yet: the deployment has nothing to do.
    tick(&s);
    assert_eq!(deployment(&h, &dep).await["status"], "SUCCESSFUL");

    // Two tasks of 3 GiB: each needs an instance, with room for the daemon too.
    h.ok(
        "RegisterTaskDefinition",
        json!({"family": "big", "requiresCompatibilities": ["MANAGED_INSTANCES"],
               "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 3072}]}),
    )
    .await;
    h.ok(
        "RunTask",
        json!({"cluster": "c1", "taskDefinition": "big", "count": 2,
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}],
               "placementConstraints": [{"type": "distinctInstance"}]}),
    )
    .await;
    tick(&s);
    assert_eq!(rec.launches.lock().expect("lock").len(), 2);
    join_all(&h, &rec);
    tick(&s);
    // The daemon is on each new instance; the application waits for it.
    let ts = live_tasks(&h).await;
    let by_ci = daemons_by_instance(&ts);
    assert_eq!(by_ci.len(), 2, "{ts:?}");
    assert!(by_ci.values().all(|v| v.len() == 1));
    for t in ts.iter().filter(|t| !is_daemon(t)) {
        assert_eq!(
            t["lastStatus"], "PROVISIONING",
            "placed before the daemon: {t}"
        );
    }
    for t in ts.iter().filter(|t| is_daemon(t)) {
        assert_eq!(t["group"], "daemon:logs");
        assert!(t["taskDefinitionArn"]
            .as_str()
            .is_some_and(|a| a.contains(":daemon-task-definition/shipper:1")));
    }
    settle(&h, &s, &rec, None).await;
    let ts = live_tasks(&h).await;
    assert!(ts.iter().all(|t| t["lastStatus"] == "RUNNING"), "{ts:?}");
    assert_eq!(ts.len(), 4);
    // Remaining resources count the daemon.
    for ci in instances(&h).await {
        let mem = ci["remainingResources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == "MEMORY")
            .and_then(|r| r["integerValue"].as_i64())
            .unwrap_or(-1);
        assert!(mem >= 0, "{ci}");
    }
    let d = h.ok("DescribeDaemon", json!({"daemonArn": daemon})).await["daemon"].clone();
    assert_eq!(d["currentRevisions"][0]["totalRunningCount"], 2, "{d}");

    // A third instance (launched later) gets the daemon too.
    h.ok(
        "RunTask",
        json!({"cluster": "c1", "taskDefinition": "big", "count": 1,
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}]}),
    )
    .await;
    settle(&h, &s, &rec, None).await;
    let ts = live_tasks(&h).await;
    let by_ci = daemons_by_instance(&ts);
    assert_eq!(by_ci.len(), instances(&h).await.len());
    assert!(by_ci.values().all(|v| v.len() == 1), "{by_ci:?}");
    assert!(by_ci.len() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_revision_rolls_in_place_and_a_failing_one_rolls_back() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    let td1 = register_daemon_td(&h, "busybox", 128).await;
    let (daemon, _) = create_daemon(&h, &td1).await;
    h.ok(
        "RunTask",
        json!({"cluster": "c1", "taskDefinition": "web", "count": 4,
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}],
               "placementConstraints": [{"type": "distinctInstance"}]}),
    )
    .await;
    settle(&h, &s, &rec, None).await;
    assert_eq!(daemons_by_instance(&live_tasks(&h).await).len(), 4);

    let cp = h
        .ok(
            "DescribeCapacityProviders",
            json!({"capacityProviders": ["mi"]}),
        )
        .await["capacityProviders"][0]["capacityProviderArn"]
        .clone();
    let td2 = register_daemon_td(&h, "busybox:2", 128).await;
    let dep2 = h
        .ok(
            "UpdateDaemon",
            json!({"daemonArn": daemon, "daemonTaskDefinitionArn": td2,
                   "capacityProviderArns": [cp], "deploymentConfiguration": {"drainPercent": 50}}),
        )
        .await["deploymentArn"]
        .as_str()
        .unwrap_or("")
        .to_string();
    // At most half the instances replace their daemon at once.
    for _ in 0..8 {
        tick(&s);
        let ts = live_tasks(&h).await;
        let replacing = daemons_by_instance(&ts)
            .values()
            .filter(|v| {
                v.iter()
                    .any(|t| t["desiredStatus"] == "STOPPED" || t["lastStatus"] != "RUNNING")
            })
            .count()
            + 4
            - daemons_by_instance(&ts).len();
        assert!(replacing <= 2, "{replacing} instances replacing at once");
        agents_act(&h, None).await;
    }
    settle(&h, &s, &rec, None).await;
    assert_eq!(deployment(&h, &dep2).await["status"], "SUCCESSFUL");
    let ts = live_tasks(&h).await;
    let by_ci = daemons_by_instance(&ts);
    assert_eq!(by_ci.len(), 4);
    for v in by_ci.values() {
        assert_eq!(v.len(), 1);
        assert!(v[0]["taskDefinitionArn"]
            .as_str()
            .is_some_and(|a| a.ends_with("shipper:2")));
    }
    // The application tasks were never touched.
    assert_eq!(ts.iter().filter(|t| !is_daemon(t)).count(), 4);

    // Revision 3 fails to start everywhere: the breaker trips, back to 2.
    let td3 = register_daemon_td(&h, "busybox:broken", 128).await;
    let dep3 = h
        .ok(
            "UpdateDaemon",
            json!({"daemonArn": daemon, "daemonTaskDefinitionArn": td3,
                   "capacityProviderArns": [cp], "deploymentConfiguration": {"drainPercent": 100}}),
        )
        .await["deploymentArn"]
        .as_str()
        .unwrap_or("")
        .to_string();
    for _ in 0..20 {
        settle(&h, &s, &rec, Some("shipper:3")).await;
        h.clock.advance(Duration::from_secs(400));
        let st = deployment(&h, &dep3).await["status"].clone();
        if st == "ROLLBACK_SUCCESSFUL" {
            break;
        }
    }
    let d3 = deployment(&h, &dep3).await;
    assert_eq!(d3["status"], "ROLLBACK_SUCCESSFUL", "{d3}");
    assert_eq!(d3["circuitBreaker"]["status"], "TRIGGERED", "{d3}");
    assert!(d3["rollback"]["rollbackTargetDaemonRevisionArn"].is_string());
    let ts = live_tasks(&h).await;
    for v in daemons_by_instance(&ts).values() {
        assert_eq!(v.len(), 1);
        assert!(v[0]["taskDefinitionArn"]
            .as_str()
            .is_some_and(|a| a.ends_with("shipper:2")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_daemon_impairs_its_instance_and_comes_back_after_a_backoff() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    let td = register_daemon_td(&h, "busybox", 128).await;
    create_daemon(&h, &td).await;
    h.ok(
        "RunTask",
        json!({"cluster": "c1", "taskDefinition": "web", "count": 1,
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}]}),
    )
    .await;
    settle(&h, &s, &rec, None).await;
    let ts = live_tasks(&h).await;
    let victim = ts.iter().find(|t| is_daemon(t)).cloned().expect("daemon");
    let id = instance_id(&h, victim["containerInstanceArn"].as_str().unwrap_or("")).await;
    let r = TaskReport {
        stop_code: Some("EssentialContainerExited".into()),
        stopped_reason: Some("Essential container in task exited".into()),
        ..report(&victim, "STOPPED")
    };
    agents::report(&h.state.ctx, &id, &r).expect("report");
    tick(&s);
    // Impaired, and not started again before the backoff.
    let ci = instances(&h).await[0].clone();
    assert_eq!(ci["healthStatus"]["overallStatus"], "IMPAIRED", "{ci}");
    let detail = ci["healthStatus"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["type"] == "DAEMON")
        .cloned()
        .unwrap_or_default();
    assert_eq!(detail["status"], "IMPAIRED");
    assert!(detail["statusReason"]
        .as_str()
        .is_some_and(|r| r.contains("logs")));
    assert!(daemons_by_instance(&live_tasks(&h).await).is_empty());
    // Repair: the impaired instance drains (to be replaced) ...
    tick(&s);
    let ci = instances(&h).await[0].clone();
    assert_eq!(ci["status"], "DRAINING", "{ci}");
    assert!(ci["statusReason"]
        .as_str()
        .is_some_and(|r| r.contains("IMPAIRED")));
    // ... and keeps its daemon while its application tasks run.
    h.clock.advance(Duration::from_secs(6));
    tick(&s);
    let by_ci = daemons_by_instance(&live_tasks(&h).await);
    assert_eq!(by_ci.len(), 1);
    assert_ne!(
        by_ci.values().next().expect("one")[0]["taskArn"],
        victim["taskArn"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_stop_last_and_do_not_keep_an_idle_instance() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler_with(&h, &rec, |c| {
        c.default_scale_in_after = Duration::from_secs(60);
    });
    let td = register_daemon_td(&h, "busybox", 128).await;
    let (daemon, _) = create_daemon(&h, &td).await;
    let run = h
        .ok(
            "RunTask",
            json!({"cluster": "c1", "taskDefinition": "web", "count": 1,
                   "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}]}),
        )
        .await;
    settle(&h, &s, &rec, None).await;
    assert_eq!(live_tasks(&h).await.len(), 2);
    // A draining instance keeps its daemon while the application runs.
    let ci = instances(&h).await[0]["containerInstanceArn"].clone();
    h.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "c1", "containerInstances": [ci], "status": "DRAINING"}),
    )
    .await;
    settle(&h, &s, &rec, None).await;
    assert_eq!(daemons_by_instance(&live_tasks(&h).await).len(), 1);
    h.ok(
        "StopTask",
        json!({"cluster": "c1", "task": run["tasks"][0]["taskArn"]}),
    )
    .await;
    settle(&h, &s, &rec, None).await;
    // The application is gone, then the daemon.
    assert!(live_tasks(&h).await.is_empty());
    h.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "c1", "containerInstances": [ci], "status": "ACTIVE"}),
    )
    .await;
    settle(&h, &s, &rec, None).await;
    assert_eq!(daemons_by_instance(&live_tasks(&h).await).len(), 1);
    // Only the daemon on it: the instance is idle and scales in.
    h.clock.advance(Duration::from_secs(61));
    tick(&s);
    h.clock.advance(Duration::from_secs(61));
    tick(&s);
    assert_eq!(rec.terminated.lock().expect("lock").len(), 1);
    assert!(live_tasks(&h).await.is_empty());

    // Delete: the record goes once its tasks are gone.
    h.ok("DeleteDaemon", json!({"daemonArn": daemon})).await;
    settle(&h, &s, &rec, None).await;
    let (_, kind) = h.err("DescribeDaemon", json!({"daemonArn": daemon})).await;
    assert_eq!(kind, "DaemonNotFoundException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_daemon_stops_its_tasks_first() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    let td = register_daemon_td(&h, "busybox", 128).await;
    let (daemon, _) = create_daemon(&h, &td).await;
    h.ok(
        "RunTask",
        json!({"cluster": "c1", "taskDefinition": "web", "count": 2,
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}],
               "placementConstraints": [{"type": "distinctInstance"}]}),
    )
    .await;
    settle(&h, &s, &rec, None).await;
    assert_eq!(daemons_by_instance(&live_tasks(&h).await).len(), 2);
    h.ok("DeleteDaemon", json!({"daemonArn": daemon})).await;
    tick(&s);
    let d = h.ok("DescribeDaemon", json!({"daemonArn": daemon})).await;
    assert_eq!(d["daemon"]["status"], "DELETE_IN_PROGRESS");
    let ts = live_tasks(&h).await;
    for t in ts.iter().filter(|t| is_daemon(t)) {
        assert_eq!(t["desiredStatus"], "STOPPED");
        assert_eq!(t["stopCode"], "ServiceSchedulerInitiated");
    }
    settle(&h, &s, &rec, None).await;
    assert!(daemons_by_instance(&live_tasks(&h).await).is_empty());
    let (_, kind) = h.err("DescribeDaemon", json!({"daemonArn": daemon})).await;
    assert_eq!(kind, "DaemonNotFoundException");
    // The application tasks stay.
    assert_eq!(live_tasks(&h).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_does_not_fit_gets_its_instance_replaced_by_one_with_room() {
    let h = Harness::new();
    setup(&h).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    h.ok(
        "RegisterTaskDefinition",
        json!({"family": "big", "requiresCompatibilities": ["MANAGED_INSTANCES"],
               "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 3500}]}),
    )
    .await;
    h.ok(
        "CreateService",
        json!({"cluster": "c1", "serviceName": "api", "taskDefinition": "big", "desiredCount": 1,
               "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}],
               "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 200}}),
    )
    .await;
    settle(&h, &s, &rec, None).await;
    let first = instances(&h).await;
    assert_eq!(first.len(), 1);
    let full = first[0]["containerInstanceArn"].clone();
    // The daemon comes after the instance filled up.
    let td = register_daemon_td(&h, "busybox", 512).await;
    create_daemon(&h, &td).await;
    tick(&s);
    let ci = instances(&h)
        .await
        .into_iter()
        .find(|c| c["containerInstanceArn"] == full)
        .unwrap_or_default();
    assert_eq!(ci["healthStatus"]["overallStatus"], "IMPAIRED", "{ci}");
    settle(&h, &s, &rec, None).await;
    // Repaired: a new instance planned with room for both runs both.
    let ts = live_tasks(&h).await;
    let by_ci = daemons_by_instance(&ts);
    assert_eq!(by_ci.len(), 1, "{ts:?}");
    let home = by_ci.keys().next().cloned().unwrap_or_default();
    assert_ne!(json!(home), full);
    assert!(ts
        .iter()
        .filter(|t| !is_daemon(t))
        .all(|t| t["containerInstanceArn"] == json!(home) && t["lastStatus"] == "RUNNING"));
    let gone = h
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "c1", "containerInstances": [full]}),
        )
        .await["containerInstances"][0]["status"]
        .clone();
    assert_eq!(gone, "INACTIVE");
}

//! ExecuteCommand through the router, with agents that say hello by direct
//! calls and are never connected: the refusals that need no container.

mod common;

use berth_control::agents;
use berth_protocol::{ContainerReport, TaskReport, EXEC_CAPABILITY};
use common::sched::{hello, scheduler, Recorder};
use common::{setup, Harness};
use serde_json::json;
use std::sync::Arc;

/// A RUNNING task (exec-enabled or not) on an instance whose agent said hello, with or
/// without the exec capability, and is not connected now. Returns the task ARN.
async fn running_task(h: &Harness, exec_enabled: bool, capable: bool) -> String {
    setup(h).await;
    let run = h
        .ok(
            "RunTask",
            json!({"cluster": "c1", "taskDefinition": "web",
                   "capacityProviderStrategy": [{"capacityProvider": "mi"}],
                   "enableExecuteCommand": exec_enabled}),
        )
        .await;
    let arn = run["tasks"][0]["taskArn"]
        .as_str()
        .expect("a task")
        .to_string();
    let rec = Arc::new(Recorder::default());
    let s = scheduler(h, &rec);
    tokio::task::block_in_place(|| s.tick()).expect("tick");
    let launch = rec.launches.lock().expect("lock")[0].clone();
    let token = launch
        .agent_env
        .iter()
        .find(|(k, _)| k == "BERTH_JOIN_TOKEN")
        .map(|(_, v)| v.clone())
        .expect("a join token");
    let ctx = h.state.ctx.clone();
    let id = launch.instance_id.clone();
    agents::admit(&ctx, &id, &token).expect("join");
    let mut hi = hello(&id, 2048, 3840);
    if capable {
        hi.attributes.insert(EXEC_CAPABILITY.into(), String::new());
    }
    agents::hello(&ctx, &hi).expect("hello");
    tokio::task::block_in_place(|| s.tick()).expect("tick");
    let report = TaskReport {
        task_arn: arn.clone(),
        last_status: "RUNNING".into(),
        started_at: Some(1.0),
        containers: vec![ContainerReport {
            name: "app".into(),
            runtime_id: Some("rt-1".into()),
            last_status: "RUNNING".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    agents::report(&ctx, &id, &report).expect("report");
    arn
}

fn execute(arn: &str) -> serde_json::Value {
    json!({"cluster": "c1", "task": arn, "interactive": true, "command": "/bin/sh"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_is_not_connected_is_target_not_connected() {
    let h = Harness::new();
    let arn = running_task(&h, true, true).await;
    let t = h
        .ok("DescribeTasks", json!({"cluster": "c1", "tasks": [arn]}))
        .await;
    let agent = &t["tasks"][0]["containers"][0]["managedAgents"][0];
    assert_eq!(agent["name"], "ExecuteCommandAgent");
    assert_eq!(agent["lastStatus"], "RUNNING");
    let (status, v) = h.call("ExecuteCommand", execute(&arn)).await;
    assert_eq!(status, 400);
    assert_eq!(v["__type"], "TargetNotConnectedException", "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("not connected")),
        "{v}"
    );
    assert_eq!(h.state.exec.attached_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_exec_is_target_not_connected() {
    let h = Harness::new();
    let arn = running_task(&h, true, false).await;
    let (status, v) = h.call("ExecuteCommand", execute(&arn)).await;
    assert_eq!(status, 400);
    assert_eq!(v["__type"], "TargetNotConnectedException", "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not run exec sessions")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_agent_is_asked() {
    let h = Harness::new();
    let arn = running_task(&h, false, true).await;
    let t = h
        .ok("DescribeTasks", json!({"cluster": "c1", "tasks": [arn]}))
        .await;
    assert!(t["tasks"][0]["containers"][0]
        .get("managedAgents")
        .is_none());
    let (_, v) = h.call("ExecuteCommand", execute(&arn)).await;
    assert_eq!(v["__type"], "InvalidParameterException");
    assert_eq!(
        v["message"],
        berth_server::ops::exec::NOT_ENABLED,
        "AWS's words"
    );
    let mut body = execute(&arn);
    body["interactive"] = json!(false);
    let (_, v) = h.call("ExecuteCommand", body).await;
    assert_eq!(v["__type"], "InvalidParameterException");
    let (_, v) = h
        .call(
            "ExecuteCommand",
            json!({"cluster": "c1", "task": arn, "interactive": true}),
        )
        .await;
    assert_eq!(
        v["__type"], "InvalidParameterException",
        "command is required"
    );
    let mut body = execute(&arn);
    body["command"] = json!("   ");
    let (_, v) = h.call("ExecuteCommand", body).await;
    assert_eq!(v["__type"], "InvalidParameterException");
    // A cluster that asks for KMS-encrypted sessions is told berth does not do that.
    h.ok(
        "UpdateCluster",
        json!({"cluster": "c1", "configuration": {"executeCommandConfiguration":
               {"kmsKeyId": "arn:aws:kms:us-east-1:000000000000:key/k", "logging": "DEFAULT"}}}),
    )
    .await;
    let (_, v) = h.call("ExecuteCommand", execute(&arn)).await;
    assert_eq!(v["__type"], "UnsupportedFeatureException", "{v}");
}

//! Router tests of task scale-in protection (UpdateTaskProtection,
//! GetTaskProtection) under a manual clock.

mod common;

use berth_model::clock::Clock;
use berth_store::Tx;
use common::{setup, Harness};
use serde_json::{json, Value};
use std::time::Duration;

const CLUSTER_ARN: &str = "arn:aws:ecs:us-east-1:000000000000:cluster/c1";

async fn run(h: &Harness, count: u32) -> Vec<String> {
    let v = h
        .ok(
            "RunTask",
            json!({"cluster": "c1", "taskDefinition": "web", "count": count,
                   "capacityProviderStrategy": [{"capacityProvider": "mi", "weight": 1}]}),
        )
        .await;
    v["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn ready() -> (Harness, Vec<String>) {
    let h = Harness::new();
    setup(&h).await;
    let tasks = run(&h, 3).await;
    assert_eq!(tasks.len(), 3);
    (h, tasks)
}

fn now(h: &Harness) -> f64 {
    h.clock.epoch_seconds()
}

fn protected(v: &Value) -> Vec<Value> {
    v["protectedTasks"].as_array().cloned().unwrap_or_default()
}

fn failures(v: &Value) -> Vec<Value> {
    v["failures"].as_array().cloned().unwrap_or_default()
}

fn is_protected(h: &Harness, arn: &str) -> bool {
    let at = now(h);
    h.state
        .ctx
        .store
        .read(|tx: &dyn Tx| berth_control::protection::is_protected(tx, arn, at))
        .expect("read")
}

#[tokio::test]
async fn enable_defaults_to_two_hours_and_expires() {
    let (h, tasks) = ready().await;
    let t0 = now(&h);
    let v = h
        .ok(
            "UpdateTaskProtection",
            json!({"cluster": "c1", "tasks": [tasks[0]], "protectionEnabled": true}),
        )
        .await;
    assert_eq!(failures(&v), Vec::<Value>::new());
    let p = protected(&v);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["taskArn"], json!(tasks[0]));
    assert_eq!(p[0]["protectionEnabled"], json!(true));
    assert_eq!(p[0]["expirationDate"].as_f64(), Some(t0 + 120.0 * 60.0));
    assert!(is_protected(&h, &tasks[0]));
    assert!(!is_protected(&h, &tasks[1]));

    // Get answers the same; an unprotected task reads false without a date.
    let v = h
        .ok(
            "GetTaskProtection",
            json!({"cluster": CLUSTER_ARN, "tasks": [tasks[0], tasks[1]]}),
        )
        .await;
    let p = protected(&v);
    assert_eq!(p.len(), 2);
    assert_eq!(p[0]["protectionEnabled"], json!(true));
    assert_eq!(p[0]["expirationDate"].as_f64(), Some(t0 + 7200.0));
    assert_eq!(p[1]["protectionEnabled"], json!(false));
    assert!(p[1].get("expirationDate").is_none());

    // One second before the expiry it holds; at the expiry it is gone.
    h.clock.advance(Duration::from_secs(7199));
    assert!(is_protected(&h, &tasks[0]));
    h.clock.advance(Duration::from_secs(1));
    assert!(!is_protected(&h, &tasks[0]));
    let v = h
        .ok(
            "GetTaskProtection",
            json!({"cluster": "c1", "tasks": [tasks[0]]}),
        )
        .await;
    assert_eq!(protected(&v)[0]["protectionEnabled"], json!(false));
    assert!(protected(&v)[0].get("expirationDate").is_none());
}

#[tokio::test]
async fn custom_expiry_renewal_and_disable() {
    let (h, tasks) = ready().await;
    let id = tasks[1].rsplit('/').next().unwrap_or_default().to_string();
    let t0 = now(&h);
    // By task id, for one minute.
    let v = h
        .ok(
            "UpdateTaskProtection",
            json!({"cluster": "c1", "tasks": [id], "protectionEnabled": true, "expiresInMinutes": 1}),
        )
        .await;
    assert_eq!(protected(&v)[0]["taskArn"], json!(tasks[1]));
    assert_eq!(protected(&v)[0]["expirationDate"].as_f64(), Some(t0 + 60.0));
    // Calling again resets the expiry from now.
    h.clock.advance(Duration::from_secs(30));
    let v = h
        .ok(
            "UpdateTaskProtection",
            json!({"cluster": "c1", "tasks": [tasks[1]], "protectionEnabled": true, "expiresInMinutes": 2880}),
        )
        .await;
    assert_eq!(
        protected(&v)[0]["expirationDate"].as_f64(),
        Some(t0 + 30.0 + 2880.0 * 60.0)
    );
    h.clock.advance(Duration::from_secs(47 * 3600));
    assert!(is_protected(&h, &tasks[1]));
    // Disabling answers false without a date.
    let v = h
        .ok(
            "UpdateTaskProtection",
            json!({"cluster": "c1", "tasks": [tasks[1]], "protectionEnabled": false}),
        )
        .await;
    assert_eq!(protected(&v)[0]["protectionEnabled"], json!(false));
    assert!(protected(&v)[0].get("expirationDate").is_none());
    assert!(!is_protected(&h, &tasks[1]));
}

#[tokio::test]
async fn unknown_and_stopped_tasks_are_failures() {
    let (h, tasks) = ready().await;
    h.ok(
        "StopTask",
        json!({"cluster": "c1", "task": tasks[2], "reason": "done"}),
    )
    .await;
    let ghost = "arn:aws:ecs:us-east-1:000000000000:task/c1/00000000000000000000000000000000";
    let v = h
        .ok(
            "UpdateTaskProtection",
            json!({"cluster": "c1", "tasks": [tasks[0], ghost, tasks[2], "nope"], "protectionEnabled": true}),
        )
        .await;
    let p = protected(&v);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["taskArn"], json!(tasks[0]));
    let f = failures(&v);
    assert_eq!(f.len(), 3);
    assert_eq!(f[0]["arn"], json!(ghost));
    assert_eq!(f[0]["reason"], json!("MISSING"));
    assert_eq!(f[1]["arn"], json!(tasks[2]));
    assert_eq!(f[1]["reason"], json!("TASK_NOT_VALID"));
    assert!(f[1]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("stopped")));
    assert_eq!(
        f[2]["arn"],
        json!("arn:aws:ecs:us-east-1:000000000000:task/c1/nope")
    );
    assert_eq!(f[2]["reason"], json!("MISSING"));
    assert!(!is_protected(&h, &tasks[2]));

    // Get: unknown is MISSING, a stopped task reads unprotected.
    let v = h
        .ok(
            "GetTaskProtection",
            json!({"cluster": "c1", "tasks": [ghost, tasks[2]]}),
        )
        .await;
    assert_eq!(failures(&v).len(), 1);
    assert_eq!(failures(&v)[0]["reason"], json!("MISSING"));
    assert_eq!(protected(&v).len(), 1);
    assert_eq!(protected(&v)[0]["protectionEnabled"], json!(false));

    // A task of another cluster is MISSING here.
    h.ok("CreateCluster", json!({"clusterName": "c2"})).await;
    let v = h
        .ok(
            "UpdateTaskProtection",
            json!({"cluster": "c2", "tasks": [tasks[0]], "protectionEnabled": true}),
        )
        .await;
    assert_eq!(failures(&v)[0]["reason"], json!("MISSING"));
}

#[tokio::test]
async fn bad_input_is_refused() {
    let (h, tasks) = ready().await;
    for minutes in [0, -1, 2881] {
        let (status, t) = h
            .err(
                "UpdateTaskProtection",
                json!({"cluster": "c1", "tasks": [tasks[0]], "protectionEnabled": true, "expiresInMinutes": minutes}),
            )
            .await;
        assert_eq!((status, t.as_str()), (400, "InvalidParameterException"));
    }
    let (_, v) = h
        .call(
            "UpdateTaskProtection",
            json!({"cluster": "c1", "tasks": [tasks[0]], "protectionEnabled": true, "expiresInMinutes": 2881}),
        )
        .await;
    assert!(v["message"].as_str().is_some_and(|m| m.contains("2880")));
    // Eleven tasks, or none.
    let eleven: Vec<String> = (0..11).map(|_| tasks[0].clone()).collect();
    let (_, v) = h
        .call(
            "UpdateTaskProtection",
            json!({"cluster": "c1", "tasks": eleven, "protectionEnabled": true}),
        )
        .await;
    assert_eq!(v["__type"], json!("InvalidParameterException"));
    assert!(v["message"].as_str().is_some_and(|m| m.contains("10")));
    let (_, t) = h
        .err(
            "UpdateTaskProtection",
            json!({"cluster": "c1", "tasks": [], "protectionEnabled": true}),
        )
        .await;
    assert_eq!(t, "InvalidParameterException");
    // The model's required members.
    for body in [
        json!({"cluster": "c1", "tasks": [tasks[0]]}),
        json!({"cluster": "c1", "tasks": [tasks[0]], "protectionEnabled": null}),
        json!({"cluster": "c1", "protectionEnabled": true}),
        json!({"tasks": [tasks[0]], "protectionEnabled": true}),
    ] {
        let (_, v) = h.call("UpdateTaskProtection", body.clone()).await;
        assert_eq!(v["__type"], json!("InvalidParameterException"), "{body}");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("Missing required parameter")),
            "{v}"
        );
    }
    let (_, t) = h
        .err("GetTaskProtection", json!({"tasks": [tasks[0]]}))
        .await;
    assert_eq!(t, "InvalidParameterException");
    let (_, t) = h
        .err(
            "UpdateTaskProtection",
            json!({"cluster": "c1", "tasks": [tasks[0]], "protectionEnabled": "yes"}),
        )
        .await;
    assert_eq!(t, "SerializationException");
    // Get takes at most 100.
    let many: Vec<String> = (0..101).map(|_| tasks[0].clone()).collect();
    let (_, t) = h
        .err("GetTaskProtection", json!({"cluster": "c1", "tasks": many}))
        .await;
    assert_eq!(t, "InvalidParameterException");
    // Unknown clusters.
    for cluster in ["nope", "arn:aws:ecs:us-east-1:000000000000:cluster/nope"] {
        let (status, t) = h
            .err(
                "UpdateTaskProtection",
                json!({"cluster": cluster, "tasks": [tasks[0]], "protectionEnabled": true}),
            )
            .await;
        assert_eq!((status, t.as_str()), (400, "ClusterNotFoundException"));
        let (_, t) = h
            .err(
                "GetTaskProtection",
                json!({"cluster": cluster, "tasks": [tasks[0]]}),
            )
            .await;
        assert_eq!(t, "ClusterNotFoundException");
    }
    // Nothing was protected by any of it.
    assert!(!is_protected(&h, &tasks[0]));
    // Get without tasks answers nothing.
    let v = h.ok("GetTaskProtection", json!({"cluster": "c1"})).await;
    assert_eq!(protected(&v), Vec::<Value>::new());
    assert_eq!(failures(&v), Vec::<Value>::new());
}

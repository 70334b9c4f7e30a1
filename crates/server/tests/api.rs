//! Router tests: the whole HTTP edge and service layer without a socket,
//! over an in-memory store and a manual clock.

mod common;

use axum::body::Body;
use berth_model::clock::Clock;
use common::{provider, setup, Harness, SECRET};
use http::{Method, Request};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn authentication_failures_are_403_with_aws_names() {
    let h = Harness::new();
    let body = b"{}";
    // No signature at all.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/")
        .header(
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.ListClusters",
        )
        .body(Body::from(body.to_vec()))
        .expect("request");
    let (status, v) = h.send(req).await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (403, Some("MissingAuthenticationTokenException"))
    );
    // Wrong secret.
    let (status, v) = h
        .send(h.signed("ListClusters", body, "wrong", "us-east-1", h.clock.now()))
        .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (403, Some("InvalidSignatureException"))
    );
    // Wrong region in the scope.
    let (status, v) = h
        .send(h.signed("ListClusters", body, SECRET, "eu-west-1", h.clock.now()))
        .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (403, Some("InvalidSignatureException"))
    );
    // Signed 16 minutes ago.
    let old = h.clock.now() - Duration::from_secs(16 * 60);
    let (status, v) = h
        .send(h.signed("ListClusters", body, SECRET, "us-east-1", old))
        .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (403, Some("InvalidSignatureException"))
    );
    // Within the skew it passes.
    let recent = h.clock.now() - Duration::from_secs(14 * 60);
    let (status, _) = h
        .send(h.signed("ListClusters", body, SECRET, "us-east-1", recent))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn protocol_errors() {
    let h = Harness::new();
    let (status, v) = h
        .send(h.signed("NoSuchThing", b"{}", SECRET, "us-east-1", h.clock.now()))
        .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("UnknownOperationException"))
    );
    let (status, v) = h
        .send(h.signed("", b"{}", SECRET, "us-east-1", h.clock.now()))
        .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("UnknownOperationException"))
    );
    let (status, v) = h
        .send(h.signed(
            "ListClusters",
            b"{not json",
            SECRET,
            "us-east-1",
            h.clock.now(),
        ))
        .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("SerializationException"))
    );
    let (_, t) = h.err("ListClusters", json!({"maxResults": "ten"})).await;
    assert_eq!(t, "SerializationException");
    let (_, t) = h
        .err(
            "CreateTaskSet",
            json!({"service": "x", "cluster": "c", "taskDefinition": "t"}),
        )
        .await;
    assert_eq!(t, "UnsupportedFeatureException");
    // Unknown members are ignored.
    h.ok("ListClusters", json!({"somethingNew": 1})).await;
    // Missing required member.
    let (_, t) = h
        .err("RegisterTaskDefinition", json!({"family": "x"}))
        .await;
    assert_eq!(t, "InvalidParameterException");
    // An unknown enum value.
    let (_, t) = h
        .err("ListTaskDefinitions", json!({"status": "SLEEPING"}))
        .await;
    assert_eq!(t, "InvalidParameterException");
}

#[tokio::test]
async fn run_task_stores_provisioning_tasks_and_is_idempotent_by_client_token() {
    let h = Harness::new();
    setup(&h).await;
    let req = json!({"cluster": "c1", "taskDefinition": "web", "count": 3, "clientToken": "tok-1",
                     "capacityProviderStrategy": [{"capacityProvider": "mi"}], "enableExecuteCommand": true});
    let first = h.ok("RunTask", req.clone()).await;
    let tasks = first["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 3);
    for t in &tasks {
        assert_eq!(t["lastStatus"], "PROVISIONING");
        assert_eq!(t["desiredStatus"], "RUNNING");
        assert_eq!(t["launchType"], "MANAGED_INSTANCES");
        assert_eq!(t["capacityProviderName"], "mi");
        assert_eq!(t["group"], "family:web");
        assert_eq!(t["enableExecuteCommand"], true);
    }
    let again = h.ok("RunTask", req.clone()).await;
    let arns = |v: &Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["taskArn"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(arns(&first), arns(&again));
    let mut different = req.clone();
    different["count"] = json!(2);
    let (_, t) = h.err("RunTask", different).await;
    assert_eq!(t, "ConflictException");
    let listed = h.ok("ListTasks", json!({"cluster": "c1"})).await;
    assert_eq!(listed["taskArns"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn pagination_visits_every_task_once() {
    let h = Harness::new();
    setup(&h).await;
    for _ in 0..3 {
        h.ok(
            "RunTask",
            json!({"cluster": "c1", "taskDefinition": "web", "count": 10,
                               "capacityProviderStrategy": [{"capacityProvider": "mi"}]}),
        )
        .await;
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut req = json!({"cluster": "c1", "maxResults": 7});
        if let Some(t) = &token {
            req["nextToken"] = json!(t);
        }
        let page = h.ok("ListTasks", req).await;
        for a in page["taskArns"].as_array().into_iter().flatten() {
            assert!(
                seen.insert(a.as_str().unwrap_or("").to_string()),
                "listed twice: {a}"
            );
        }
        pages += 1;
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30);
    assert!(pages >= 5);
    let (_, t) = h
        .err(
            "ListTasks",
            json!({"cluster": "c1", "nextToken": "garbage"}),
        )
        .await;
    assert_eq!(t, "InvalidParameterException");
}

#[tokio::test]
async fn delete_cluster_refusals() {
    let h = Harness::new();
    setup(&h).await;
    let (_, t) = h.err("DeleteCluster", json!({"cluster": "c1"})).await;
    assert_eq!(t, "ClusterContainsCapacityProviderException");
    h.ok("DeleteCapacityProvider", json!({"capacityProvider": "mi"}))
        .await;
    h.ok("CreateCapacityProvider", provider("mi2", "c1")).await;
    let run = h
        .ok(
            "RunTask",
            json!({"cluster": "c1", "taskDefinition": "web",
                              "capacityProviderStrategy": [{"capacityProvider": "mi2"}]}),
        )
        .await;
    let (_, t) = h
        .err("DeleteCapacityProvider", json!({"capacityProvider": "mi2"}))
        .await;
    assert_eq!(t, "ResourceInUseException");
    let arn = run["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let stopped = h
        .ok(
            "StopTask",
            json!({"cluster": "c1", "task": arn, "reason": "done here"}),
        )
        .await;
    assert_eq!(stopped["task"]["stopCode"], "UserInitiated");
    assert_eq!(stopped["task"]["stoppedReason"], "done here");
    assert_eq!(stopped["task"]["lastStatus"], "STOPPED");
    h.ok("DeleteCapacityProvider", json!({"capacityProvider": "mi2"}))
        .await;
    let deleted = h.ok("DeleteCluster", json!({"cluster": "c1"})).await;
    assert_eq!(deleted["cluster"]["status"], "INACTIVE");
    let (_, t) = h
        .err("DescribeTasks", json!({"cluster": "c1", "tasks": [arn]}))
        .await;
    assert_eq!(t, "ClusterNotFoundException");
}

#[tokio::test]
async fn task_definition_revisions_and_deregistration() {
    let h = Harness::new();
    setup(&h).await;
    let td = json!({"family": "web", "cpu": "1 vCPU", "memory": "1GB",
                    "containerDefinitions": [{"name": "app", "image": "busybox"}]});
    let r2 = h.ok("RegisterTaskDefinition", td.clone()).await;
    assert_eq!(r2["taskDefinition"]["revision"], 2);
    assert_eq!(r2["taskDefinition"]["cpu"], "1024");
    assert_eq!(r2["taskDefinition"]["memory"], "1024");
    h.ok(
        "DeregisterTaskDefinition",
        json!({"taskDefinition": "web:2"}),
    )
    .await;
    let latest = h
        .ok("DescribeTaskDefinition", json!({"taskDefinition": "web"}))
        .await;
    assert_eq!(latest["taskDefinition"]["revision"], 1);
    let del = h
        .ok(
            "DeleteTaskDefinitions",
            json!({"taskDefinitions": ["web:1", "web:2"]}),
        )
        .await;
    assert_eq!(
        del["failures"].as_array().map(Vec::len),
        Some(1),
        "web:1 is still ACTIVE"
    );
    assert_eq!(del["taskDefinitions"][0]["status"], "DELETE_IN_PROGRESS");
    let r3 = h.ok("RegisterTaskDefinition", td).await;
    assert_eq!(
        r3["taskDefinition"]["revision"], 3,
        "revision numbers are never reused"
    );
    let (_, t) = h
        .err(
            "RunTask",
            json!({"cluster": "c1", "taskDefinition": "web:2",
                               "capacityProviderStrategy": [{"capacityProvider": "mi"}]}),
        )
        .await;
    assert_eq!(t, "ClientException");
}

#[tokio::test]
async fn task_definition_volumes_and_mount_points_are_checked() {
    let h = Harness::new();
    let td = |volumes: Value, containers: Value| {
        json!({"family": "vols", "memory": "512",
               "volumes": volumes, "containerDefinitions": containers})
    };
    let app = |mounts: Value| json!({"name": "app", "image": "busybox", "mountPoints": mounts});
    let ok = h
        .ok(
            "RegisterTaskDefinition",
            td(
                json!([{"name": "logs", "host": {"sourcePath": "/var/log"}}, {"name": "scratch"}]),
                json!([
                    app(json!([{"sourceVolume": "logs", "containerPath": "/logs", "readOnly": true},
                               {"sourceVolume": "scratch", "containerPath": "/scratch"}])),
                    {"name": "shipper", "image": "busybox", "essential": false,
                     "volumesFrom": [{"sourceContainer": "app", "readOnly": true}]}
                ]),
            ),
        )
        .await;
    assert_eq!(ok["taskDefinition"]["volumes"][1]["name"], "scratch");
    assert_eq!(
        ok["taskDefinition"]["containerDefinitions"][1]["volumesFrom"][0]["sourceContainer"],
        "app"
    );
    let refused = |volumes: Value, containers: Value, says: &'static [&'static str]| {
        let h = &h;
        let body = td(volumes, containers);
        async move {
            let (status, v) = h.call("RegisterTaskDefinition", body).await;
            assert_eq!(
                (status, v["__type"].as_str()),
                (400, Some("ClientException")),
                "{v}"
            );
            let message = v["message"].as_str().unwrap_or_default();
            for s in says {
                assert!(message.contains(s), "{message:?} should say {s:?}");
            }
        }
    };
    let mp = |v: &str, p: &str| json!([{"sourceVolume": v, "containerPath": p}]);
    refused(
        json!([{"name": "logs"}]),
        json!([app(mp("data", "/data"))]),
        &["container 'app'", "'data' is not declared"],
    )
    .await;
    refused(
        json!([{"name": "logs"}]),
        json!([app(mp("logs", "logs"))]),
        &["container 'app'", "'logs' is not an absolute path"],
    )
    .await;
    refused(
        json!([{"name": "logs", "host": {"sourcePath": "var/log"}}]),
        json!([app(json!([]))]),
        &["host.sourcePath", "volume 'logs'"],
    )
    .await;
    refused(
        json!([{"name": "logs"}, {"name": "logs"}]),
        json!([app(json!([]))]),
        &["Duplicate volume name 'logs'"],
    )
    .await;
    refused(
        json!([{"name": "../etc"}]),
        json!([app(json!([]))]),
        &["Invalid volume name '../etc'"],
    )
    .await;
    refused(
        json!([]),
        json!([{"name": "app", "image": "busybox",
                "volumesFrom": [{"sourceContainer": "nope"}]}]),
        &["container 'app'", "'nope'"],
    )
    .await;
}

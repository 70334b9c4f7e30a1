//! Router tests of ECS services: CreateService, UpdateService, DeleteService,
//! DescribeServices, ListServices and the service history operations.

mod common;

use common::{setup, Harness};
use serde_json::{json, Value};
use std::time::Duration;

const CLUSTER_ARN: &str = "arn:aws:ecs:us-east-1:000000000000:cluster/c1";
const PREFIX: &str = "arn:aws:ecs:us-east-1:000000000000";

fn strategy() -> Value {
    json!([{"capacityProvider": "mi", "weight": 1}])
}

async fn create(h: &Harness, name: &str, desired: i64) -> Value {
    h.ok(
        "CreateService",
        json!({"cluster": "c1", "serviceName": name, "taskDefinition": "web",
               "desiredCount": desired, "capacityProviderStrategy": strategy()}),
    )
    .await["service"]
        .clone()
}

fn digits_after<'a>(s: &'a str, prefix: &str) -> &'a str {
    s.strip_prefix(prefix).unwrap_or("")
}

#[tokio::test]
async fn create_returns_an_active_service_with_a_primary_deployment() {
    let h = Harness::new();
    setup(&h).await;
    let s = h
        .ok(
            "CreateService",
            json!({"cluster": "c1", "serviceName": "api", "taskDefinition": "web",
                   "desiredCount": 2, "capacityProviderStrategy": strategy(),
                   "tags": [{"key": "team", "value": "a"}], "enableExecuteCommand": true,
                   "healthCheckGracePeriodSeconds": 30,
                   "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
        )
        .await["service"]
        .clone();
    assert_eq!(s["serviceArn"], format!("{PREFIX}:service/c1/api"));
    assert_eq!(s["clusterArn"], CLUSTER_ARN);
    assert_eq!(s["status"], "ACTIVE");
    assert_eq!(s["desiredCount"], 2);
    assert_eq!(s["runningCount"], 0);
    assert_eq!(s["pendingCount"], 0);
    assert_eq!(s["schedulingStrategy"], "REPLICA");
    assert_eq!(s["events"], json!([]));
    assert_eq!(s["enableExecuteCommand"], true);
    assert_eq!(s["healthCheckGracePeriodSeconds"], 30);
    assert_eq!(
        s["taskDefinition"],
        format!("{PREFIX}:task-definition/web:1")
    );
    assert_eq!(s["deploymentConfiguration"]["maximumPercent"], 200);
    assert_eq!(s["deploymentConfiguration"]["minimumHealthyPercent"], 100);
    assert_eq!(
        s["deploymentConfiguration"]["deploymentCircuitBreaker"],
        json!({"enable": true, "rollback": true})
    );
    assert_eq!(s["tags"], json!([{"key": "team", "value": "a"}]));
    let deployments = s["deployments"].as_array().cloned().unwrap_or_default();
    assert_eq!(deployments.len(), 1);
    let d = &deployments[0];
    assert_eq!(d["status"], "PRIMARY");
    assert_eq!(d["rolloutState"], "IN_PROGRESS");
    assert_eq!(d["desiredCount"], 0);
    assert_eq!(d["runningCount"], 0);
    assert_eq!(d["pendingCount"], 0);
    let id = d["id"].as_str().unwrap_or("");
    let n = digits_after(id, "ecs-svc/");
    assert!(
        n.len() == 19 && n.bytes().all(|b| b.is_ascii_digit()),
        "{id}"
    );

    // The revision and the deployment are recorded and describable.
    let dep_arn = s["currentServiceDeployment"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        dep_arn.starts_with(&format!("{PREFIX}:service-deployment/c1/api/")),
        "{dep_arn}"
    );
    let rev_arn = s["currentServiceRevisions"][0]["arn"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        rev_arn.starts_with(&format!("{PREFIX}:service-revision/c1/api/")),
        "{rev_arn}"
    );
    assert_eq!(s["currentServiceRevisions"][0]["requestedTaskCount"], 2);
    let v = h
        .ok(
            "DescribeServiceDeployments",
            json!({"serviceDeploymentArns": [dep_arn, "nope"]}),
        )
        .await;
    let sd = &v["serviceDeployments"][0];
    assert_eq!(sd["status"], "IN_PROGRESS");
    assert_eq!(sd["targetServiceRevision"]["arn"], rev_arn.as_str());
    assert_eq!(sd["deploymentCircuitBreaker"]["status"], "MONITORING");
    assert_eq!(sd["deploymentCircuitBreaker"]["threshold"], 3);
    assert_eq!(v["failures"][0]["reason"], "MISSING");
    let v = h
        .ok(
            "DescribeServiceRevisions",
            json!({"serviceRevisionArns": [rev_arn]}),
        )
        .await;
    let r = &v["serviceRevisions"][0];
    assert_eq!(
        r["taskDefinition"],
        format!("{PREFIX}:task-definition/web:1")
    );
    assert_eq!(r["containerImages"][0]["image"], "busybox");

    // The cluster counts it.
    let c = h
        .ok(
            "DescribeClusters",
            json!({"clusters": ["c1"], "include": ["STATISTICS"]}),
        )
        .await;
    assert_eq!(c["clusters"][0]["activeServicesCount"], 1);
}

#[tokio::test]
async fn create_validates_with_ecs_errors() {
    let h = Harness::new();
    setup(&h).await;
    let base = json!({"cluster": "c1", "serviceName": "s", "taskDefinition": "web",
                      "desiredCount": 1, "capacityProviderStrategy": strategy()});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b.as_object_mut().map(|o| o.remove(k));
        b
    };
    let cases = [
        (
            with("serviceName", json!("bad name")),
            "InvalidParameterException",
        ),
        (
            with("serviceName", json!("x".repeat(256))),
            "InvalidParameterException",
        ),
        (without("serviceName"), "InvalidParameterException"),
        (without("desiredCount"), "InvalidParameterException"),
        (with("desiredCount", json!(-1)), "InvalidParameterException"),
        (
            with("schedulingStrategy", json!("DAEMON")),
            "InvalidParameterException",
        ),
        (with("taskDefinition", json!("nosuch")), "ClientException"),
        (with("cluster", json!("nosuch")), "ClusterNotFoundException"),
        (
            with("launchType", json!("FARGATE")),
            "InvalidParameterException",
        ),
        (
            with(
                "capacityProviderStrategy",
                json!([{"capacityProvider": "other"}]),
            ),
            "InvalidParameterException",
        ),
        (
            with("deploymentConfiguration", json!({"maximumPercent": 50})),
            "InvalidParameterException",
        ),
        (
            with(
                "deploymentConfiguration",
                json!({"minimumHealthyPercent": 101}),
            ),
            "InvalidParameterException",
        ),
        (
            with("placementStrategy", json!([{"type": "spread"}])),
            "InvalidParameterException",
        ),
        (
            with(
                "placementConstraints",
                json!([{"type": "memberOf", "expression": "attribute:"}]),
            ),
            "InvalidParameterException",
        ),
        (
            with(
                "networkConfiguration",
                json!({"awsvpcConfiguration": {"subnets": ["nope"]}}),
            ),
            "InvalidParameterException",
        ),
        (
            with("tags", json!([{"key": "aws:x", "value": "y"}])),
            "InvalidParameterException",
        ),
        (
            with(
                "loadBalancers",
                json!([{"targetGroupArn": "arn:x", "containerName": "app", "containerPort": 80}]),
            ),
            "UnsupportedFeatureException",
        ),
    ];
    for (body, want) in cases {
        let (status, kind) = h.err("CreateService", body.clone()).await;
        assert_eq!((status, kind.as_str()), (400, want), "{body}");
    }
    // Nothing was created by any of them.
    let v = h.ok("ListServices", json!({"cluster": "c1"})).await;
    assert_eq!(v["serviceArns"], json!([]));
}

#[tokio::test]
async fn names_are_unique_per_cluster_and_retries_with_a_client_token_are_idempotent() {
    let h = Harness::new();
    setup(&h).await;
    let req = json!({"cluster": "c1", "serviceName": "s", "taskDefinition": "web",
                     "desiredCount": 1, "capacityProviderStrategy": strategy(),
                     "clientToken": "tok-1"});
    let first = h.ok("CreateService", req.clone()).await;
    let again = h.ok("CreateService", req.clone()).await;
    assert_eq!(first, again);
    let mut other = req.clone();
    other["desiredCount"] = json!(3);
    let (status, v) = h.call("CreateService", other).await;
    assert_eq!(status, 400);
    assert_eq!(v["__type"], "InvalidParameterException");
    assert_eq!(v["message"], "Creation of service was not idempotent.");
    let mut no_token = req.clone();
    no_token.as_object_mut().map(|o| o.remove("clientToken"));
    let (_, kind) = h.err("CreateService", no_token).await;
    assert_eq!(kind, "InvalidParameterException");
}

#[tokio::test]
async fn describe_and_list_page_and_report_missing() {
    let h = Harness::new();
    setup(&h).await;
    for i in 0..5 {
        create(&h, &format!("s{i}"), 0).await;
    }
    let mut seen = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"cluster": "c1", "maxResults": 2});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let v = h.ok("ListServices", body).await;
        for a in v["serviceArns"].as_array().cloned().unwrap_or_default() {
            seen.push(a.as_str().unwrap_or("").to_string());
        }
        match v["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = (0..5)
        .map(|i| format!("{PREFIX}:service/c1/s{i}"))
        .collect();
    assert_eq!(seen, want);
    let (_, kind) = h
        .err("ListServices", json!({"cluster": "c1", "maxResults": 101}))
        .await;
    assert_eq!(kind, "InvalidParameterException");
    let v = h
        .ok(
            "ListServices",
            json!({"cluster": "c1", "launchType": "FARGATE"}),
        )
        .await;
    assert_eq!(v["serviceArns"], json!([]));
    let v = h
        .ok(
            "ListServices",
            json!({"cluster": "c1", "schedulingStrategy": "REPLICA"}),
        )
        .await;
    assert_eq!(v["serviceArns"].as_array().map(Vec::len), Some(5));

    let v = h
        .ok(
            "DescribeServices",
            json!({"cluster": "c1", "services": ["s0", format!("{PREFIX}:service/c1/s1"), "gone"]}),
        )
        .await;
    assert_eq!(v["services"].as_array().map(Vec::len), Some(2));
    assert!(v["services"][0].get("tags").is_none());
    assert_eq!(
        v["failures"],
        json!([{"arn": format!("{PREFIX}:service/c1/gone"), "reason": "MISSING"}])
    );
    let eleven: Vec<String> = (0..11).map(|i| format!("s{i}")).collect();
    let (_, kind) = h
        .err(
            "DescribeServices",
            json!({"cluster": "c1", "services": eleven}),
        )
        .await;
    assert_eq!(kind, "InvalidParameterException");
}

#[tokio::test]
async fn update_with_a_new_revision_makes_a_new_primary_deployment() {
    let h = Harness::new();
    setup(&h).await;
    let s = create(&h, "api", 1).await;
    let first_dep = s["currentServiceDeployment"]
        .as_str()
        .unwrap_or("")
        .to_string();
    h.ok(
        "RegisterTaskDefinition",
        json!({"family": "web", "requiresCompatibilities": ["MANAGED_INSTANCES"],
               "containerDefinitions": [{"name": "app", "image": "busybox:2", "memory": 64}]}),
    )
    .await;
    h.clock.advance(Duration::from_secs(1));
    // desiredCount alone makes no new deployment.
    let s = h
        .ok(
            "UpdateService",
            json!({"cluster": "c1", "service": "api", "desiredCount": 3}),
        )
        .await["service"]
        .clone();
    assert_eq!(s["desiredCount"], 3);
    assert_eq!(s["deployments"].as_array().map(Vec::len), Some(1));
    h.clock.advance(Duration::from_secs(1));
    let s = h
        .ok(
            "UpdateService",
            json!({"cluster": "c1", "service": "api", "taskDefinition": "web:2",
                   "deploymentConfiguration": {"minimumHealthyPercent": 50}}),
        )
        .await["service"]
        .clone();
    assert_eq!(
        s["taskDefinition"],
        format!("{PREFIX}:task-definition/web:2")
    );
    assert_eq!(s["deploymentConfiguration"]["minimumHealthyPercent"], 50);
    assert_eq!(s["deploymentConfiguration"]["maximumPercent"], 200);
    let ds = s["deployments"].as_array().cloned().unwrap_or_default();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds[0]["status"], "PRIMARY");
    assert_eq!(
        ds[0]["taskDefinition"],
        format!("{PREFIX}:task-definition/web:2")
    );
    assert_eq!(ds[1]["status"], "ACTIVE");
    assert_eq!(
        ds[1]["taskDefinition"],
        format!("{PREFIX}:task-definition/web:1")
    );
    assert_eq!(
        s["currentServiceRevisions"].as_array().map(Vec::len),
        Some(2)
    );
    h.clock.advance(Duration::from_secs(1));
    // forceNewDeployment makes a third.
    let s = h
        .ok(
            "UpdateService",
            json!({"cluster": "c1", "service": "api", "forceNewDeployment": true}),
        )
        .await["service"]
        .clone();
    assert_eq!(s["deployments"].as_array().map(Vec::len), Some(3));

    // The history lists three deployments, newest first; the first stopped.
    let v = h
        .ok(
            "ListServiceDeployments",
            json!({"cluster": "c1", "service": "api"}),
        )
        .await;
    let briefs = v["serviceDeployments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(briefs.len(), 3);
    assert_eq!(
        briefs[0]["serviceDeploymentArn"],
        s["currentServiceDeployment"]
    );
    assert_eq!(briefs[2]["serviceDeploymentArn"], first_dep.as_str());
    assert_eq!(briefs[2]["status"], "STOPPED");
    let v = h
        .ok(
            "ListServiceDeployments",
            json!({"service": format!("{PREFIX}:service/c1/api"), "status": ["IN_PROGRESS"], "maxResults": 1}),
        )
        .await;
    assert_eq!(v["serviceDeployments"].as_array().map(Vec::len), Some(1));
    assert!(v.get("nextToken").is_none());

    let (_, kind) = h
        .err(
            "UpdateService",
            json!({"cluster": "c1", "service": "nope", "desiredCount": 1}),
        )
        .await;
    assert_eq!(kind, "ServiceNotFoundException");
    let (_, kind) = h
        .err(
            "UpdateService",
            json!({"cluster": "c1", "service": "api", "taskDefinition": "nosuch"}),
        )
        .await;
    assert_eq!(kind, "ClientException");
}

#[tokio::test]
async fn delete_needs_force_above_zero_and_blocks_cluster_deletion_until_then() {
    let h = Harness::new();
    setup(&h).await;
    create(&h, "a", 2).await;
    create(&h, "b", 0).await;
    let (status, v) = h
        .call("DeleteService", json!({"cluster": "c1", "service": "a"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["__type"], "InvalidParameterException");
    let (_, kind) = h.err("DeleteCluster", json!({"cluster": "c1"})).await;
    assert_eq!(kind, "ClusterContainsServicesException");

    // With no tasks running, a deleted service is INACTIVE at once.
    let s = h
        .ok(
            "DeleteService",
            json!({"cluster": "c1", "service": "a", "force": true}),
        )
        .await["service"]
        .clone();
    assert_eq!(s["status"], "INACTIVE");
    assert_eq!(s["desiredCount"], 0);
    let s = h
        .ok("DeleteService", json!({"cluster": "c1", "service": "b"}))
        .await["service"]
        .clone();
    assert_eq!(s["status"], "INACTIVE");
    let (_, kind) = h
        .err("DeleteService", json!({"cluster": "c1", "service": "b"}))
        .await;
    assert_eq!(kind, "ServiceNotActiveException");
    let (_, kind) = h
        .err("DeleteService", json!({"cluster": "c1", "service": "zz"}))
        .await;
    assert_eq!(kind, "ServiceNotFoundException");

    // INACTIVE services are still described, not listed, and free the name.
    let v = h
        .ok(
            "DescribeServices",
            json!({"cluster": "c1", "services": ["a"]}),
        )
        .await;
    assert_eq!(v["services"][0]["status"], "INACTIVE");
    let v = h.ok("ListServices", json!({"cluster": "c1"})).await;
    assert_eq!(v["serviceArns"], json!([]));
    let again = create(&h, "a", 1).await;
    assert_eq!(again["status"], "ACTIVE");
    h.ok(
        "DeleteService",
        json!({"cluster": "c1", "service": "a", "force": true}),
    )
    .await;

    h.ok("DeleteCapacityProvider", json!({"capacityProvider": "mi"}))
        .await;
    h.ok("DeleteCluster", json!({"cluster": "c1"})).await;
}

#[tokio::test]
async fn services_take_tags() {
    let h = Harness::new();
    setup(&h).await;
    let s = create(&h, "t", 0).await;
    let arn = s["serviceArn"].as_str().unwrap_or("").to_string();
    h.ok(
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"key": "k", "value": "v"}]}),
    )
    .await;
    let v = h
        .ok("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(v["tags"], json!([{"key": "k", "value": "v"}]));
    let v = h
        .ok(
            "DescribeServices",
            json!({"cluster": "c1", "services": ["t"], "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(
        v["services"][0]["tags"],
        json!([{"key": "k", "value": "v"}])
    );
    h.ok(
        "UntagResource",
        json!({"resourceArn": arn, "tagKeys": ["k"]}),
    )
    .await;
    let v = h
        .ok("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(v["tags"], json!([]));
}

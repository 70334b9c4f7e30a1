//! Router tests of the API half of ECS managed daemons: daemon task
//! definitions, daemons, and their deployments and revisions.

mod common;

use berth_control::daemons;
use berth_model::ecs::CapacityProvider;
use berth_store::Expect;
use common::{provider, setup, Harness};
use serde_json::{json, Value};
use std::time::Duration;

const PREFIX: &str = "arn:aws:ecs:us-east-1:000000000000";
const CLUSTER_ARN: &str = "arn:aws:ecs:us-east-1:000000000000:cluster/c1";
const MI_ARN: &str = "arn:aws:ecs:us-east-1:000000000000:capacity-provider/mi";

fn container(name: &str) -> Value {
    json!({"name": name, "image": "busybox", "memory": 32})
}

async fn register(h: &Harness, family: &str) -> String {
    let v = h
        .ok(
            "RegisterDaemonTaskDefinition",
            json!({"family": family, "containerDefinitions": [container("agent")]}),
        )
        .await;
    v["daemonTaskDefinitionArn"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The cluster, its managed instances provider `mi` and the daemon task definition `agent:1`.
async fn daemon_setup(h: &Harness) {
    setup(h).await;
    register(h, "agent").await;
}

async fn create(h: &Harness, name: &str) -> Value {
    h.ok(
        "CreateDaemon",
        json!({"clusterArn": "c1", "daemonName": name, "daemonTaskDefinitionArn": "agent",
               "capacityProviderArns": ["mi"]}),
    )
    .await
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

async fn describe(h: &Harness, arn: &str) -> Value {
    h.ok("DescribeDaemon", json!({"daemonArn": arn})).await["daemon"].clone()
}

async fn deployment(h: &Harness, arn: &str) -> Value {
    h.ok(
        "DescribeDaemonDeployments",
        json!({"daemonDeploymentArns": [arn]}),
    )
    .await["daemonDeployments"][0]
        .clone()
}

async fn error(h: &Harness, op: &str, body: Value) -> (String, String) {
    let (status, v) = h.call(op, body.clone()).await;
    assert_eq!(status, 400, "{op} {body} should fail: {v}");
    (text(&v["__type"]), text(&v["message"]))
}

/// Every daemon document (kind, key, version) and the daemon meta keys given.
fn snapshot(h: &Harness, metas: &[&str]) -> Vec<(String, String, String)> {
    h.state
        .ctx
        .store
        .read(|tx| {
            let mut out = vec![];
            for kind in [
                daemons::DAEMON_TD,
                daemons::DAEMON,
                daemons::DAEMON_DEPLOYMENT,
                daemons::DAEMON_REVISION,
            ] {
                for (key, v) in berth_store::all(|a, n| tx.documents(kind, None, a, n))? {
                    out.push((kind.to_string(), key, v.version.to_string()));
                }
            }
            for m in metas {
                out.push((
                    "meta".to_string(),
                    m.to_string(),
                    tx.meta(m)?.unwrap_or_default(),
                ));
            }
            Ok::<_, berth_store::StoreError>(out)
        })
        .expect("snapshot")
}

// ---------------------------------------------------------------------------
// Daemon task definitions.

#[tokio::test]
async fn register_and_describe_daemon_task_definitions() {
    let h = Harness::new();
    let v = h
        .ok(
            "RegisterDaemonTaskDefinition",
            json!({"family": "agent", "cpu": "1 vCPU", "memory": "1 GB",
                   "taskRoleArn": "arn:aws:iam::000000000000:role/r",
                   "containerDefinitions": [
                       {"name": "agent", "image": "busybox", "cpu": 256,
                        "mountPoints": [{"sourceVolume": "logs", "containerPath": "/logs"}]},
                       {"name": "side", "image": "alpine", "essential": false,
                        "dependsOn": [{"containerName": "agent", "condition": "START"}]}],
                   "volumes": [{"name": "logs", "host": {"sourcePath": "/var/log"}}, {"name": "scratch"}],
                   "tags": [{"key": "team", "value": "ops"}]}),
        )
        .await;
    let arn = format!("{PREFIX}:daemon-task-definition/agent:1");
    assert_eq!(v["daemonTaskDefinitionArn"], arn.as_str());

    for given in ["agent", "agent:1", arn.as_str()] {
        let d = h
            .ok(
                "DescribeDaemonTaskDefinition",
                json!({"daemonTaskDefinition": given}),
            )
            .await["daemonTaskDefinition"]
            .clone();
        assert_eq!(d["daemonTaskDefinitionArn"], arn.as_str(), "{given}");
        assert_eq!(d["family"], "agent");
        assert_eq!(d["revision"], 1);
        assert_eq!(d["status"], "ACTIVE");
        assert_eq!(d["cpu"], "1024");
        assert_eq!(d["memory"], "1024");
        assert_eq!(d["taskRoleArn"], "arn:aws:iam::000000000000:role/r");
        assert_eq!(d["registeredAt"].as_f64(), Some(1_795_000_000.0));
        assert_eq!(d["registeredBy"], "arn:aws:iam::000000000000:root");
        assert_eq!(d["containerDefinitions"][0]["essential"], true);
        assert_eq!(d["containerDefinitions"][1]["essential"], false);
        assert_eq!(d["volumes"][0]["host"]["sourcePath"], "/var/log");
        assert!(d.get("deleteRequestedAt").is_none());
    }

    // Revisions count up per family; a bare family names the newest ACTIVE one.
    let second = register(&h, "agent").await;
    assert_eq!(second, format!("{PREFIX}:daemon-task-definition/agent:2"));
    assert_eq!(
        register(&h, "other").await,
        format!("{PREFIX}:daemon-task-definition/other:1")
    );
    let d = h
        .ok(
            "DescribeDaemonTaskDefinition",
            json!({"daemonTaskDefinition": "agent"}),
        )
        .await;
    assert_eq!(d["daemonTaskDefinition"]["revision"], 2);

    // Tags are kept with it.
    let t = h
        .ok("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(t["tags"], json!([{"key": "team", "value": "ops"}]));
}

#[tokio::test]
async fn register_refuses_bad_definitions_and_spends_no_revision() {
    let h = Harness::new();
    let base = json!({"family": "agent", "containerDefinitions": [container("agent")]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("family", json!("bad family")), "family"),
        (with("family", json!("")), "family"),
        (
            with("containerDefinitions", json!([])),
            "containerDefinitions",
        ),
        (
            with(
                "containerDefinitions",
                json!([{"image": "busybox", "memory": 32}]),
            ),
            "name",
        ),
        (
            with(
                "containerDefinitions",
                json!([{"name": "", "image": "busybox", "memory": 32}]),
            ),
            "name",
        ),
        (
            with(
                "containerDefinitions",
                json!([container("a"), container("a")]),
            ),
            "more than once",
        ),
        (
            with("containerDefinitions", json!([{"name": "a", "memory": 32}])),
            "image",
        ),
        (
            with(
                "containerDefinitions",
                json!([{"name": "a", "image": " ", "memory": 32}]),
            ),
            "image",
        ),
        (
            with(
                "containerDefinitions",
                json!([{"name": "a", "image": "busybox"}]),
            ),
            "memory",
        ),
        (
            with(
                "containerDefinitions",
                json!([{"name": "a", "image": "busybox", "memory": 3}]),
            ),
            "memory",
        ),
        (
            with(
                "containerDefinitions",
                json!([{"name": "a", "image": "busybox", "memory": 32, "memoryReservation": 64}]),
            ),
            "memoryReservation",
        ),
        (
            with(
                "containerDefinitions",
                json!([{"name": "a", "image": "busybox", "memory": 32, "essential": false}]),
            ),
            "essential",
        ),
        (
            with(
                "containerDefinitions",
                json!([{"name": "a", "image": "busybox", "memory": 32,
                        "mountPoints": [{"sourceVolume": "nope", "containerPath": "/x"}]}]),
            ),
            "sourceVolume",
        ),
        (
            with(
                "containerDefinitions",
                json!([{"name": "a", "image": "busybox", "memory": 32,
                        "dependsOn": [{"containerName": "b", "condition": "START"}]}]),
            ),
            "dependsOn",
        ),
        (
            with(
                "volumes",
                json!([{"name": "v", "host": {"sourcePath": "var/log"}}]),
            ),
            "sourcePath",
        ),
        (
            with("volumes", json!([{"name": "v"}, {"name": "v"}])),
            "more than once",
        ),
        (with("cpu", json!("lots")), "cpu"),
        (with("memory", json!("0")), "memory"),
        (with("memory", json!("16")), "memory"),
        (
            json!({"family": "agent", "cpu": "8",
                   "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 32, "cpu": 16}]}),
            "cpu",
        ),
        (
            with("tags", json!([{"key": "aws:x", "value": "y"}])),
            "aws:",
        ),
    ];
    for (body, needle) in cases {
        let (status, v) = h.call("RegisterDaemonTaskDefinition", body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        let kind = text(&v["__type"]);
        assert!(
            kind == "InvalidParameterException" || kind == "ClientException",
            "{body}: {v}"
        );
        assert!(text(&v["message"]).contains(needle), "{body}: {v}");
    }
    // A container without a name is refused as InvalidParameterException.
    let (kind, _) = error(
        &h,
        "RegisterDaemonTaskDefinition",
        with(
            "containerDefinitions",
            json!([{"image": "busybox", "memory": 32}]),
        ),
    )
    .await;
    assert_eq!(kind, "InvalidParameterException");
    // Missing required members are named.
    let (kind, message) = error(&h, "RegisterDaemonTaskDefinition", json!({"family": "x"})).await;
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("containerDefinitions"), "{message}");

    // None of them was stored, nor spent a revision number.
    assert_eq!(
        snapshot(&h, &["daemon-td-revision/agent"]),
        vec![(
            "meta".to_string(),
            "daemon-td-revision/agent".to_string(),
            String::new()
        )]
    );
    assert_eq!(
        register(&h, "agent").await,
        format!("{PREFIX}:daemon-task-definition/agent:1")
    );
}

#[tokio::test]
async fn describe_of_a_missing_daemon_task_definition_is_a_client_exception() {
    let h = Harness::new();
    register(&h, "agent").await;
    for given in [
        "nosuch",
        "agent:2",
        "arn:aws:ecs:us-east-1:000000000000:daemon-task-definition/agent:9",
    ] {
        let (kind, message) = error(
            &h,
            "DescribeDaemonTaskDefinition",
            json!({"daemonTaskDefinition": given}),
        )
        .await;
        assert_eq!(kind, "ClientException", "{given}");
        assert_eq!(message, "Unable to describe daemon task definition.");
    }
    for given in [
        "agent:0",
        "agent:x",
        "bad name",
        "arn:aws:ecs:us-east-1:000000000000:task-definition/agent:1",
        "arn:aws:ecs:eu-west-1:000000000000:daemon-task-definition/agent:1",
    ] {
        let (kind, _) = error(
            &h,
            "DescribeDaemonTaskDefinition",
            json!({"daemonTaskDefinition": given}),
        )
        .await;
        assert_eq!(kind, "InvalidParameterException", "{given}");
    }
}

async fn list_tds(h: &Harness, body: Value) -> Vec<String> {
    let v = h.ok("ListDaemonTaskDefinitions", body).await;
    v["daemonTaskDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| text(&s["arn"]).rsplit('/').next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn list_daemon_task_definitions_filters_sorts_and_pages() {
    let h = Harness::new();
    for f in ["b", "a", "b", "ab", "a", "b"] {
        register(&h, f).await;
    }
    h.ok(
        "DeleteDaemonTaskDefinition",
        json!({"daemonTaskDefinition": "b:3"}),
    )
    .await;
    assert_eq!(
        list_tds(&h, json!({})).await,
        ["a:1", "a:2", "ab:1", "b:1", "b:2"]
    );
    assert_eq!(
        list_tds(&h, json!({"sort": "DESC"})).await,
        ["b:2", "b:1", "ab:1", "a:2", "a:1"]
    );
    assert_eq!(
        list_tds(&h, json!({"familyPrefix": "a"})).await,
        ["a:1", "a:2", "ab:1"]
    );
    assert_eq!(list_tds(&h, json!({"family": "a"})).await, ["a:1", "a:2"]);
    assert_eq!(
        list_tds(&h, json!({"revision": "LAST_REGISTERED"})).await,
        ["a:2", "ab:1", "b:2"]
    );
    assert_eq!(
        list_tds(&h, json!({"status": "ALL", "family": "b"})).await,
        ["b:1", "b:2", "b:3"]
    );
    assert_eq!(
        list_tds(&h, json!({"status": "DELETE_IN_PROGRESS"})).await,
        Vec::<String>::new()
    );

    // Summaries carry the status and times.
    let v = h
        .ok(
            "ListDaemonTaskDefinitions",
            json!({"status": "ALL", "family": "b", "sort": "DESC", "maxResults": 1}),
        )
        .await;
    let s = &v["daemonTaskDefinitions"][0];
    assert_eq!(s["status"], "DELETED");
    assert!(s["deleteRequestedAt"].is_number());
    assert!(s["registeredAt"].is_number());

    // Pages, in both orders.
    for (sort, want) in [
        ("ASC", ["a:1", "a:2", "ab:1", "b:1", "b:2"]),
        ("DESC", ["b:2", "b:1", "ab:1", "a:2", "a:1"]),
    ] {
        let mut seen = vec![];
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({"maxResults": 2, "sort": sort});
            if let Some(t) = &token {
                body["nextToken"] = json!(t);
            }
            let v = h.ok("ListDaemonTaskDefinitions", body).await;
            let page = v["daemonTaskDefinitions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(page.len() <= 2);
            for s in page {
                seen.push(text(&s["arn"]).rsplit('/').next().unwrap_or("").to_string());
            }
            match v["nextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, want, "{sort}");
    }

    for bad in [
        json!({"maxResults": 0}),
        json!({"maxResults": 101}),
        json!({"nextToken": "garbage"}),
        json!({"status": "DELETED"}),
    ] {
        let (kind, _) = error(&h, "ListDaemonTaskDefinitions", bad.clone()).await;
        assert_eq!(kind, "InvalidParameterException", "{bad}");
    }
}

#[tokio::test]
async fn delete_daemon_task_definition_waits_for_the_daemons_that_run_it() {
    let h = Harness::new();
    daemon_setup(&h).await;
    let unused = register(&h, "spare").await;

    // Unused: DELETED at once, and still describable as such.
    let v = h
        .ok(
            "DeleteDaemonTaskDefinition",
            json!({"daemonTaskDefinition": "spare:1"}),
        )
        .await;
    assert_eq!(v["daemonTaskDefinitionArn"], unused.as_str());
    let d = h
        .ok(
            "DescribeDaemonTaskDefinition",
            json!({"daemonTaskDefinition": unused}),
        )
        .await["daemonTaskDefinition"]
        .clone();
    assert_eq!(d["status"], "DELETED");
    assert_eq!(d["deleteRequestedAt"].as_f64(), Some(1_795_000_000.0));
    // Twice is fine and changes nothing.
    h.clock.advance(Duration::from_secs(5));
    h.ok(
        "DeleteDaemonTaskDefinition",
        json!({"daemonTaskDefinition": unused}),
    )
    .await;
    let d = h
        .ok(
            "DescribeDaemonTaskDefinition",
            json!({"daemonTaskDefinition": "spare:1"}),
        )
        .await["daemonTaskDefinition"]
        .clone();
    assert_eq!(d["status"], "DELETED");
    assert_eq!(d["deleteRequestedAt"].as_f64(), Some(1_795_000_000.0));
    // A family with no ACTIVE revision left names nothing.
    let (kind, _) = error(
        &h,
        "DescribeDaemonTaskDefinition",
        json!({"daemonTaskDefinition": "spare"}),
    )
    .await;
    assert_eq!(kind, "ClientException");
    // A daemon cannot be created from it.
    let (kind, message) = error(
        &h,
        "CreateDaemon",
        json!({"clusterArn": "c1", "daemonName": "d", "daemonTaskDefinitionArn": unused,
               "capacityProviderArns": ["mi"]}),
    )
    .await;
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("DELETED"), "{message}");

    // In use by an ACTIVE daemon: DELETE_IN_PROGRESS until it no longer is.
    let daemon = text(&create(&h, "d").await["daemonArn"]);
    h.ok(
        "DeleteDaemonTaskDefinition",
        json!({"daemonTaskDefinition": "agent:1"}),
    )
    .await;
    let d = h
        .ok(
            "DescribeDaemonTaskDefinition",
            json!({"daemonTaskDefinition": "agent:1"}),
        )
        .await["daemonTaskDefinition"]
        .clone();
    assert_eq!(d["status"], "DELETE_IN_PROGRESS");
    assert!(d["deleteRequestedAt"].is_number());
    assert_eq!(
        list_tds(&h, json!({"status": "DELETE_IN_PROGRESS"})).await,
        ["agent:1"]
    );
    h.ok("DeleteDaemon", json!({"daemonArn": daemon})).await;
    h.ok(
        "DeleteDaemonTaskDefinition",
        json!({"daemonTaskDefinition": "agent:1"}),
    )
    .await;
    let d = h
        .ok(
            "DescribeDaemonTaskDefinition",
            json!({"daemonTaskDefinition": "agent:1"}),
        )
        .await;
    assert_eq!(d["daemonTaskDefinition"]["status"], "DELETED");

    // A revision is required; a missing one is a ClientException.
    let (kind, _) = error(
        &h,
        "DeleteDaemonTaskDefinition",
        json!({"daemonTaskDefinition": "agent"}),
    )
    .await;
    assert_eq!(kind, "InvalidParameterException");
    let (kind, _) = error(
        &h,
        "DeleteDaemonTaskDefinition",
        json!({"daemonTaskDefinition": "agent:7"}),
    )
    .await;
    assert_eq!(kind, "ClientException");
}

// ---------------------------------------------------------------------------
// Daemons.

#[tokio::test]
async fn create_records_the_daemon_its_revision_and_a_pending_deployment() {
    let h = Harness::new();
    daemon_setup(&h).await;
    let v = h
        .ok(
            "CreateDaemon",
            json!({"clusterArn": CLUSTER_ARN, "daemonName": "logs",
                   "daemonTaskDefinitionArn": format!("{PREFIX}:daemon-task-definition/agent:1"),
                   "capacityProviderArns": [MI_ARN, "mi"],
                   "deploymentConfiguration": {"drainPercent": 50.0, "bakeTimeInMinutes": 3,
                       "alarms": {"alarmNames": ["high-cpu"], "enable": true}},
                   "tags": [{"key": "team", "value": "ops"}],
                   "propagateTags": "DAEMON", "enableECSManagedTags": true,
                   "enableExecuteCommand": true}),
        )
        .await;
    let arn = format!("{PREFIX}:daemon/c1/logs");
    assert_eq!(v["daemonArn"], arn.as_str());
    assert_eq!(v["status"], "ACTIVE");
    assert_eq!(v["createdAt"].as_f64(), Some(1_795_000_000.0));
    let dep_arn = text(&v["deploymentArn"]);
    assert!(
        dep_arn.starts_with(&format!("{PREFIX}:daemon-deployment/c1/logs/")),
        "{dep_arn}"
    );

    // DescribeDaemon: what the DaemonActive waiter reads.
    let d = describe(&h, &arn).await;
    assert_eq!(d["daemonArn"], arn.as_str());
    assert_eq!(d["clusterArn"], CLUSTER_ARN);
    assert_eq!(d["status"], "ACTIVE");
    assert_eq!(d["currentRevisions"], json!([]));
    assert_eq!(d["deploymentArn"], dep_arn.as_str());
    assert_eq!(d["createdAt"], d["updatedAt"]);

    // The deployment: PENDING towards the new revision.
    let dep = deployment(&h, &dep_arn).await;
    assert_eq!(dep["status"], "PENDING");
    assert_eq!(dep["clusterArn"], CLUSTER_ARN);
    assert_eq!(dep["sourceDaemonRevisions"], json!([]));
    assert_eq!(
        dep["targetDaemonRevision"]["capacityProviders"],
        json!([{"arn": MI_ARN, "runningInstanceCount": 0, "drainingInstanceCount": 0}])
    );
    assert_eq!(dep["targetDaemonRevision"]["totalRunningInstanceCount"], 0);
    assert_eq!(dep["targetDaemonRevision"]["totalDrainingInstanceCount"], 0);
    assert_eq!(
        dep["circuitBreaker"],
        json!({"failureCount": 0, "status": "MONITORING", "threshold": 0})
    );
    assert_eq!(dep["alarms"]["status"], "MONITORING");
    assert_eq!(dep["alarms"]["alarmNames"], json!(["high-cpu"]));
    assert_eq!(
        dep["deploymentConfiguration"],
        json!({"drainPercent": 50.0, "bakeTimeInMinutes": 3,
               "alarms": {"alarmNames": ["high-cpu"], "enable": true}})
    );
    assert_eq!(dep["createdAt"].as_f64(), Some(1_795_000_000.0));

    // The revision: what runs.
    let rev_arn = text(&dep["targetDaemonRevision"]["arn"]);
    let id = rev_arn
        .strip_prefix(&format!("{PREFIX}:daemon-revision/c1/logs/"))
        .unwrap_or("");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{rev_arn}"
    );
    let r = h
        .ok(
            "DescribeDaemonRevisions",
            json!({"daemonRevisionArns": [rev_arn]}),
        )
        .await["daemonRevisions"][0]
        .clone();
    assert_eq!(r["daemonArn"], arn.as_str());
    assert_eq!(r["clusterArn"], CLUSTER_ARN);
    assert_eq!(
        r["daemonTaskDefinitionArn"],
        format!("{PREFIX}:daemon-task-definition/agent:1")
    );
    assert_eq!(
        r["containerImages"],
        json!([{"containerName": "agent", "image": "busybox"}])
    );
    assert_eq!(r["propagateTags"], "DAEMON");
    assert_eq!(r["enableECSManagedTags"], true);
    assert_eq!(r["enableExecuteCommand"], true);

    // The stored record is what the reconciler reads.
    let record = h
        .state
        .ctx
        .store
        .read(|tx| daemons::load_daemon(tx, &arn))
        .expect("read")
        .expect("record")
        .value;
    assert_eq!(record.name, "logs");
    assert_eq!(record.revision_arn, rev_arn);
    assert_eq!(record.capacity_provider_arns, vec![MI_ARN.to_string()]);
    assert_eq!(
        record
            .deployment_configuration
            .and_then(|c| c.drain_percent),
        Some(50.0)
    );
    let t = h
        .ok("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(t["tags"], json!([{"key": "team", "value": "ops"}]));

    // Defaults: the default cluster is "default", drainPercent 25, no alarms, NONE.
    h.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    h.ok("CreateCapacityProvider", provider("dmi", "default"))
        .await;
    let v = h
        .ok(
            "CreateDaemon",
            json!({"daemonName": "plain", "daemonTaskDefinitionArn": "agent:1",
                   "capacityProviderArns": ["dmi"]}),
        )
        .await;
    assert_eq!(v["daemonArn"], format!("{PREFIX}:daemon/default/plain"));
    let dep = deployment(&h, &text(&v["deploymentArn"])).await;
    assert_eq!(dep["deploymentConfiguration"]["drainPercent"], 25.0);
    assert_eq!(dep["deploymentConfiguration"]["bakeTimeInMinutes"], 0);
    assert_eq!(dep["alarms"]["status"], "DISABLED");
    let r = h
        .ok(
            "DescribeDaemonRevisions",
            json!({"daemonRevisionArns": [dep["targetDaemonRevision"]["arn"]]}),
        )
        .await["daemonRevisions"][0]
        .clone();
    assert_eq!(r["propagateTags"], "NONE");
    assert_eq!(r["enableExecuteCommand"], false);
}

#[tokio::test]
async fn create_refuses_bad_requests_and_stores_nothing() {
    let h = Harness::new();
    daemon_setup(&h).await;
    // A second cluster with its own provider, and a provider that is not a
    // managed instances one (written directly: the API creates none).
    h.ok("CreateCluster", json!({"clusterName": "c2"})).await;
    h.ok("CreateCapacityProvider", provider("mi2", "c2")).await;
    h.state
        .ctx
        .store
        .write(|tx| {
            let cp = CapacityProvider {
                capacity_provider_arn: Some(format!("{PREFIX}:capacity-provider/asg")),
                name: Some("asg".into()),
                status: Some(berth_model::ecs::CapacityProviderStatus::Active),
                ..Default::default()
            };
            tx.put_capacity_provider(&cp, Expect::Absent)?;
            let mut c = tx.cluster("c1")?.expect("c1");
            c.value
                .capacity_providers
                .get_or_insert_with(Vec::new)
                .push("asg".into());
            tx.put_cluster(&c.value, Expect::Version(c.version))?;
            Ok::<_, berth_store::StoreError>(())
        })
        .expect("write");
    register(&h, "gone").await;
    h.ok(
        "DeleteDaemonTaskDefinition",
        json!({"daemonTaskDefinition": "gone:1"}),
    )
    .await;

    let base = json!({"clusterArn": "c1", "daemonName": "d", "daemonTaskDefinitionArn": "agent",
                      "capacityProviderArns": ["mi"], "clientToken": "tok"});
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
    let invalid = "InvalidParameterException";
    let cases = [
        (with("daemonName", json!("bad name")), invalid, "daemonName"),
        (
            with("daemonName", json!("x".repeat(256))),
            invalid,
            "daemonName",
        ),
        (without("daemonName"), invalid, "daemonName"),
        (
            without("daemonTaskDefinitionArn"),
            invalid,
            "daemonTaskDefinitionArn",
        ),
        (
            without("capacityProviderArns"),
            invalid,
            "capacityProviderArns",
        ),
        (
            with("clusterArn", json!("nosuch")),
            "ClusterNotFoundException",
            "Cluster",
        ),
        (
            with(
                "clusterArn",
                json!("arn:aws:ecs:eu-west-1:000000000000:cluster/c1"),
            ),
            "ClusterNotFoundException",
            "Cluster",
        ),
        (
            with("daemonTaskDefinitionArn", json!("nosuch")),
            invalid,
            "does not exist",
        ),
        (
            with("daemonTaskDefinitionArn", json!("agent:2")),
            invalid,
            "does not exist",
        ),
        (
            with("daemonTaskDefinitionArn", json!("gone:1")),
            invalid,
            "DELETED",
        ),
        (
            with(
                "daemonTaskDefinitionArn",
                json!(format!("{PREFIX}:task-definition/web:1")),
            ),
            invalid,
            "daemonTaskDefinitionArn",
        ),
        (
            with("capacityProviderArns", json!([])),
            invalid,
            "capacityProviderArns",
        ),
        (
            with("capacityProviderArns", json!(["nosuch"])),
            invalid,
            "nosuch",
        ),
        (
            with("capacityProviderArns", json!(["mi", "mi2"])),
            invalid,
            "mi2",
        ),
        (with("capacityProviderArns", json!(["asg"])), invalid, "asg"),
        (
            with(
                "capacityProviderArns",
                json!([format!("{PREFIX}:cluster/c1")]),
            ),
            invalid,
            "capacityProviderArns",
        ),
        (
            with("deploymentConfiguration", json!({"drainPercent": 100.5})),
            invalid,
            "drainPercent",
        ),
        (
            with("deploymentConfiguration", json!({"drainPercent": -1})),
            invalid,
            "drainPercent",
        ),
        (
            with("deploymentConfiguration", json!({"bakeTimeInMinutes": -1})),
            invalid,
            "bakeTimeInMinutes",
        ),
        (
            with(
                "deploymentConfiguration",
                json!({"alarms": {"enable": true}}),
            ),
            invalid,
            "alarm",
        ),
        (
            with("tags", json!([{"key": "aws:x", "value": "y"}])),
            invalid,
            "aws:",
        ),
        (with("clientToken", json!("")), invalid, "clientToken"),
        (
            with("clientToken", json!("x".repeat(37))),
            invalid,
            "clientToken",
        ),
        (with("propagateTags", json!("SERVICE")), invalid, "SERVICE"),
    ];
    let before = snapshot(
        &h,
        &["daemon-client-token/arn:aws:ecs:us-east-1:000000000000:cluster/c1/tok"],
    );
    for (body, want, needle) in cases {
        let (kind, message) = error(&h, "CreateDaemon", body.clone()).await;
        assert_eq!(kind, want, "{body}: {message}");
        assert!(message.contains(needle), "{body}: {message}");
    }
    assert_eq!(
        snapshot(
            &h,
            &["daemon-client-token/arn:aws:ecs:us-east-1:000000000000:cluster/c1/tok"]
        ),
        before
    );
    let v = h.ok("ListDaemons", json!({})).await;
    assert_eq!(v["daemonSummariesList"], json!([]));
    // The token was not spent: the right request with it works.
    h.ok("CreateDaemon", base.clone()).await;
}

#[tokio::test]
async fn names_are_unique_and_client_tokens_make_retries_idempotent() {
    let h = Harness::new();
    daemon_setup(&h).await;
    let req = json!({"clusterArn": "c1", "daemonName": "d", "daemonTaskDefinitionArn": "agent",
                     "capacityProviderArns": ["mi"], "clientToken": "tok-1"});
    let first = h.ok("CreateDaemon", req.clone()).await;
    h.clock.advance(Duration::from_secs(10));
    let again = h.ok("CreateDaemon", req.clone()).await;
    assert_eq!(first, again);
    // The retry made no second deployment.
    let v = h
        .ok(
            "ListDaemonDeployments",
            json!({"daemonArn": first["daemonArn"]}),
        )
        .await;
    assert_eq!(v["daemonDeployments"].as_array().map(Vec::len), Some(1));

    // The same token with another request is refused.
    let mut other = req.clone();
    other["deploymentConfiguration"] = json!({"drainPercent": 10});
    let (kind, message) = error(&h, "CreateDaemon", other).await;
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("clientToken"), "{message}");
    // Without a token, or with another, the name is taken.
    for token in [None, Some("tok-2")] {
        let mut b = req.clone();
        match token {
            Some(t) => b["clientToken"] = json!(t),
            None => {
                b.as_object_mut().map(|o| o.remove("clientToken"));
            }
        }
        let (kind, message) = error(&h, "CreateDaemon", b).await;
        assert_eq!(kind, "InvalidParameterException");
        assert_eq!(message, "Creation of daemon was not idempotent.");
    }
    // Still taken while it is being deleted.
    h.ok("DeleteDaemon", json!({"daemonArn": first["daemonArn"]}))
        .await;
    let mut b = req.clone();
    b["clientToken"] = json!("tok-3");
    let (_, message) = error(&h, "CreateDaemon", b).await;
    assert_eq!(message, "Creation of daemon was not idempotent.");
    // A retry of the original now says where the daemon is.
    let v = h.ok("CreateDaemon", req.clone()).await;
    assert_eq!(v["status"], "DELETE_IN_PROGRESS");
    assert_eq!(v["deploymentArn"], first["deploymentArn"]);
}

#[tokio::test]
async fn update_rolls_out_a_new_revision_and_stops_the_deployment_it_replaces() {
    let h = Harness::new();
    daemon_setup(&h).await;
    register(&h, "agent").await;
    h.ok("CreateCapacityProvider", provider("mi-b", "c1")).await;
    let created = h
        .ok(
            "CreateDaemon",
            json!({"clusterArn": "c1", "daemonName": "d", "daemonTaskDefinitionArn": "agent:1",
                   "capacityProviderArns": ["mi"],
                   "deploymentConfiguration": {"drainPercent": 10}}),
        )
        .await;
    let arn = text(&created["daemonArn"]);
    let first_dep = text(&created["deploymentArn"]);
    let first_rev = text(&deployment(&h, &first_dep).await["targetDaemonRevision"]["arn"]);

    h.clock.advance(Duration::from_secs(60));
    let v = h
        .ok(
            "UpdateDaemon",
            json!({"daemonArn": arn, "daemonTaskDefinitionArn": "agent",
                   "capacityProviderArns": ["mi", "mi-b"], "enableExecuteCommand": true}),
        )
        .await;
    assert_eq!(v["daemonArn"], arn.as_str());
    assert_eq!(v["status"], "ACTIVE");
    assert_eq!(v["createdAt"].as_f64(), Some(1_795_000_000.0));
    assert_eq!(v["updatedAt"].as_f64(), Some(1_795_000_060.0));
    let second_dep = text(&v["deploymentArn"]);
    assert_ne!(second_dep, first_dep);

    // The replaced deployment is STOPPED, naming its successor.
    let old = deployment(&h, &first_dep).await;
    let new_id = second_dep.rsplit('/').next().unwrap_or("");
    assert_eq!(old["status"], "STOPPED");
    assert_eq!(
        old["statusReason"],
        format!("Stopped: replaced by deployment {new_id}.")
    );
    assert_eq!(old["stoppedAt"].as_f64(), Some(1_795_000_060.0));

    // The new one goes from the old revision to the new.
    let new = deployment(&h, &second_dep).await;
    assert_eq!(new["status"], "PENDING");
    assert_eq!(new["sourceDaemonRevisions"][0]["arn"], first_rev.as_str());
    assert_eq!(
        new["sourceDaemonRevisions"][0]["capacityProviders"],
        json!([{"arn": MI_ARN, "runningInstanceCount": 0, "drainingInstanceCount": 0}])
    );
    assert_eq!(
        new["targetDaemonRevision"]["capacityProviders"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // The daemon kept its deployment configuration.
    assert_eq!(new["deploymentConfiguration"]["drainPercent"], 10.0);
    let rev_arn = text(&new["targetDaemonRevision"]["arn"]);
    let r = h
        .ok(
            "DescribeDaemonRevisions",
            json!({"daemonRevisionArns": [rev_arn, first_rev]}),
        )
        .await["daemonRevisions"]
        .clone();
    assert_eq!(
        r[0]["daemonTaskDefinitionArn"],
        format!("{PREFIX}:daemon-task-definition/agent:2")
    );
    assert_eq!(r[0]["enableExecuteCommand"], true);
    assert_eq!(
        r[1]["daemonTaskDefinitionArn"],
        format!("{PREFIX}:daemon-task-definition/agent:1")
    );

    let d = describe(&h, &arn).await;
    assert_eq!(d["deploymentArn"], second_dep.as_str());
    assert_eq!(d["updatedAt"].as_f64(), Some(1_795_000_060.0));
    let record = h
        .state
        .ctx
        .store
        .read(|tx| daemons::load_daemon(tx, &arn))
        .expect("read")
        .expect("record")
        .value;
    assert_eq!(record.revision_arn, rev_arn);
    assert_eq!(
        record.capacity_provider_arns,
        vec![
            MI_ARN.to_string(),
            format!("{PREFIX}:capacity-provider/mi-b")
        ]
    );

    // A deployment already finished is left as it is.
    let successful = h.state.ctx.store.write(|tx| {
        let mut d = daemons::load_deployment(tx, &second_dep)?.expect("deployment");
        d.value.status = Some(berth_model::ecs::DaemonDeploymentStatus::Successful);
        berth_store::docs::put(
            tx,
            daemons::DAEMON_DEPLOYMENT,
            &second_dep,
            &arn,
            &d.value,
            Expect::Version(d.version),
        )?;
        Ok::<_, berth_model::EcsError>(())
    });
    assert!(successful.is_ok());
    let v = h
        .ok(
            "UpdateDaemon",
            json!({"daemonArn": arn, "daemonTaskDefinitionArn": "agent:1",
                   "capacityProviderArns": ["mi"]}),
        )
        .await;
    assert_eq!(deployment(&h, &second_dep).await["status"], "SUCCESSFUL");
    assert_eq!(
        deployment(&h, &text(&v["deploymentArn"])).await["status"],
        "PENDING"
    );
}

#[tokio::test]
async fn update_refuses_bad_requests_and_changes_nothing() {
    let h = Harness::new();
    daemon_setup(&h).await;
    h.ok("CreateCluster", json!({"clusterName": "c2"})).await;
    h.ok("CreateCapacityProvider", provider("mi2", "c2")).await;
    let arn = text(&create(&h, "d").await["daemonArn"]);
    let base = json!({"daemonArn": arn, "daemonTaskDefinitionArn": "agent",
                      "capacityProviderArns": ["mi"]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let before = snapshot(&h, &[]);
    let cases = [
        (
            with("daemonArn", json!(format!("{PREFIX}:daemon/c1/nosuch"))),
            "DaemonNotFoundException",
        ),
        (
            with(
                "daemonArn",
                json!("arn:aws:ecs:eu-west-1:000000000000:daemon/c1/d"),
            ),
            "DaemonNotFoundException",
        ),
        (with("daemonArn", json!("d")), "InvalidParameterException"),
        (
            with("daemonTaskDefinitionArn", json!("nosuch")),
            "InvalidParameterException",
        ),
        (
            with("capacityProviderArns", json!(["mi2"])),
            "InvalidParameterException",
        ),
        (
            with("capacityProviderArns", json!([])),
            "InvalidParameterException",
        ),
        (
            with("deploymentConfiguration", json!({"drainPercent": 101})),
            "InvalidParameterException",
        ),
    ];
    for (body, want) in cases {
        let (kind, message) = error(&h, "UpdateDaemon", body.clone()).await;
        assert_eq!(kind, want, "{body}: {message}");
    }
    assert_eq!(snapshot(&h, &[]), before);

    // Being deleted: DaemonNotActiveException.
    h.ok("DeleteDaemon", json!({"daemonArn": arn})).await;
    let (kind, _) = error(&h, "UpdateDaemon", base.clone()).await;
    assert_eq!(kind, "DaemonNotActiveException");
}

#[tokio::test]
async fn delete_stops_the_deployment_and_the_daemon_goes_when_the_reconciler_removes_it() {
    let h = Harness::new();
    daemon_setup(&h).await;
    let created = create(&h, "d").await;
    let arn = text(&created["daemonArn"]);
    let dep = text(&created["deploymentArn"]);
    let rev = text(&deployment(&h, &dep).await["targetDaemonRevision"]["arn"]);

    h.clock.advance(Duration::from_secs(30));
    let v = h.ok("DeleteDaemon", json!({"daemonArn": arn})).await;
    assert_eq!(v["daemonArn"], arn.as_str());
    assert_eq!(v["status"], "DELETE_IN_PROGRESS");
    assert_eq!(v["deploymentArn"], dep.as_str());
    assert_eq!(v["updatedAt"].as_f64(), Some(1_795_000_030.0));
    let d = describe(&h, &arn).await;
    assert_eq!(d["status"], "DELETE_IN_PROGRESS");
    let stopped = deployment(&h, &dep).await;
    assert_eq!(stopped["status"], "STOPPED");
    assert_eq!(stopped["stoppedAt"].as_f64(), Some(1_795_000_030.0));
    assert!(text(&stopped["statusReason"]).starts_with("Stopped:"));

    // Again: no change.
    h.clock.advance(Duration::from_secs(30));
    let again = h.ok("DeleteDaemon", json!({"daemonArn": arn})).await;
    assert_eq!(again, v);

    // Still listed while being deleted.
    let v = h.ok("ListDaemons", json!({"clusterArn": "c1"})).await;
    assert_eq!(v["daemonSummariesList"][0]["status"], "DELETE_IN_PROGRESS");

    // The reconciler removes the document once the tasks are gone.
    h.state
        .ctx
        .store
        .write(|tx| {
            let d = daemons::load_daemon(tx, &arn)?.expect("daemon");
            tx.delete_document(daemons::DAEMON, &arn, d.version)?;
            Ok::<_, berth_model::EcsError>(())
        })
        .expect("remove");
    for op in ["DescribeDaemon", "DeleteDaemon"] {
        let (kind, _) = error(&h, op, json!({"daemonArn": arn})).await;
        assert_eq!(kind, "DaemonNotFoundException", "{op}");
    }
    // Its history stays.
    assert_eq!(deployment(&h, &dep).await["status"], "STOPPED");
    let r = h
        .ok(
            "DescribeDaemonRevisions",
            json!({"daemonRevisionArns": [rev]}),
        )
        .await;
    assert_eq!(r["failures"], json!([]));
    let v = h
        .ok("ListDaemonDeployments", json!({"daemonArn": arn}))
        .await;
    assert_eq!(
        v["daemonDeployments"][0]["daemonDeploymentArn"],
        dep.as_str()
    );
    // And the name is free again.
    let v = create(&h, "d").await;
    assert_eq!(v["daemonArn"], arn.as_str());
    assert_eq!(v["status"], "ACTIVE");
}

#[tokio::test]
async fn describe_daemon_errors() {
    let h = Harness::new();
    daemon_setup(&h).await;
    for (given, want) in [
        (
            format!("{PREFIX}:daemon/c1/nosuch"),
            "DaemonNotFoundException",
        ),
        (
            "arn:aws:ecs:eu-west-1:000000000000:daemon/c1/x".to_string(),
            "DaemonNotFoundException",
        ),
        ("nosuch".to_string(), "InvalidParameterException"),
        (
            format!("{PREFIX}:service/c1/x"),
            "InvalidParameterException",
        ),
    ] {
        let (kind, _) = error(&h, "DescribeDaemon", json!({"daemonArn": given})).await;
        assert_eq!(kind, want, "{given}");
    }
    let (kind, _) = error(&h, "DescribeDaemon", json!({})).await;
    assert_eq!(kind, "InvalidParameterException");
}

#[tokio::test]
async fn list_daemons_filters_and_pages() {
    let h = Harness::new();
    daemon_setup(&h).await;
    h.ok("CreateCluster", json!({"clusterName": "c2"})).await;
    h.ok("CreateCapacityProvider", provider("mi2", "c2")).await;
    h.ok("CreateCapacityProvider", provider("mi-b", "c1")).await;
    for name in ["d3", "d1", "d2"] {
        create(&h, name).await;
    }
    h.ok(
        "CreateDaemon",
        json!({"clusterArn": "c1", "daemonName": "d4", "daemonTaskDefinitionArn": "agent",
               "capacityProviderArns": ["mi-b"]}),
    )
    .await;
    h.ok(
        "CreateDaemon",
        json!({"clusterArn": "c2", "daemonName": "e1", "daemonTaskDefinitionArn": "agent",
               "capacityProviderArns": ["mi2"]}),
    )
    .await;
    let names = |v: &Value| -> Vec<String> {
        v["daemonSummariesList"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                text(&s["daemonArn"])
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let v = h.ok("ListDaemons", json!({})).await;
    assert_eq!(names(&v), ["d1", "d2", "d3", "d4", "e1"]);
    let s = &v["daemonSummariesList"][0];
    assert_eq!(s["status"], "ACTIVE");
    assert!(s["createdAt"].is_number() && s["updatedAt"].is_number());
    for c in ["c2", "arn:aws:ecs:us-east-1:000000000000:cluster/c2"] {
        let v = h.ok("ListDaemons", json!({"clusterArn": c})).await;
        assert_eq!(names(&v), ["e1"], "{c}");
    }
    let v = h
        .ok("ListDaemons", json!({"capacityProviderArns": ["mi-b"]}))
        .await;
    assert_eq!(names(&v), ["d4"]);
    let v = h
        .ok(
            "ListDaemons",
            json!({"capacityProviderArns": [MI_ARN, "mi2"]}),
        )
        .await;
    assert_eq!(names(&v), ["d1", "d2", "d3", "e1"]);
    let v = h
        .ok(
            "ListDaemons",
            json!({"clusterArn": "c1", "capacityProviderArns": ["mi2"]}),
        )
        .await;
    assert_eq!(names(&v), Vec::<String>::new());

    let mut seen = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"maxResults": 2});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let v = h.ok("ListDaemons", body).await;
        let page = names(&v);
        assert!(page.len() <= 2);
        seen.extend(page);
        match v["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["d1", "d2", "d3", "d4", "e1"]);

    for (bad, want) in [
        (json!({"maxResults": 0}), "InvalidParameterException"),
        (json!({"maxResults": 101}), "InvalidParameterException"),
        (json!({"nextToken": "garbage"}), "InvalidParameterException"),
        (json!({"clusterArn": "nosuch"}), "ClusterNotFoundException"),
        (
            json!({"capacityProviderArns": [format!("{PREFIX}:cluster/c1")]}),
            "InvalidParameterException",
        ),
    ] {
        let (kind, _) = error(&h, "ListDaemons", bad.clone()).await;
        assert_eq!(kind, want, "{bad}");
    }
}

#[tokio::test]
async fn describe_history_reports_missing_arns_and_bounds_the_list() {
    let h = Harness::new();
    daemon_setup(&h).await;
    let created = create(&h, "d").await;
    let dep = text(&created["deploymentArn"]);
    let missing = format!("{PREFIX}:daemon-deployment/c1/d/nosuch");
    let v = h
        .ok(
            "DescribeDaemonDeployments",
            json!({"daemonDeploymentArns": [dep, missing, "garbage"]}),
        )
        .await;
    assert_eq!(v["daemonDeployments"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        v["failures"],
        json!([{"arn": missing, "reason": "MISSING"}, {"arn": "garbage", "reason": "MISSING"}])
    );
    let v = h
        .ok(
            "DescribeDaemonRevisions",
            json!({"daemonRevisionArns": ["nosuch"]}),
        )
        .await;
    assert_eq!(v["daemonRevisions"], json!([]));
    assert_eq!(v["failures"][0]["reason"], "MISSING");

    let many: Vec<String> = (0..21).map(|i| format!("a{i}")).collect();
    for op_member in [
        ("DescribeDaemonDeployments", "daemonDeploymentArns"),
        ("DescribeDaemonRevisions", "daemonRevisionArns"),
    ] {
        let (op, member) = op_member;
        let body = |list: &[String]| {
            let mut b = json!({});
            b[member] = json!(list);
            b
        };
        for list in [&many[..0], &many[..]] {
            let (kind, message) = error(&h, op, body(list)).await;
            assert_eq!(kind, "InvalidParameterException");
            assert!(message.contains(member), "{message}");
        }
        let v = h.ok(op, body(&many[..20])).await;
        assert_eq!(v["failures"].as_array().map(Vec::len), Some(20));
    }
}

#[tokio::test]
async fn list_daemon_deployments_newest_first_with_filters_and_pages() {
    let h = Harness::new();
    daemon_setup(&h).await;
    let created = create(&h, "d").await;
    let arn = text(&created["daemonArn"]);
    let mut deps = vec![text(&created["deploymentArn"])];
    for _ in 0..4 {
        h.clock.advance(Duration::from_secs(10));
        let v = h
            .ok(
                "UpdateDaemon",
                json!({"daemonArn": arn, "daemonTaskDefinitionArn": "agent",
                       "capacityProviderArns": ["mi"]}),
            )
            .await;
        deps.push(text(&v["deploymentArn"]));
    }
    deps.reverse();
    let arns = |v: &Value| -> Vec<String> {
        v["daemonDeployments"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|d| text(&d["daemonDeploymentArn"]))
            .collect()
    };
    let v = h
        .ok("ListDaemonDeployments", json!({"daemonArn": arn}))
        .await;
    assert_eq!(arns(&v), deps);
    let s = &v["daemonDeployments"][0];
    assert_eq!(s["daemonArn"], arn.as_str());
    assert_eq!(s["clusterArn"], CLUSTER_ARN);
    assert_eq!(s["status"], "PENDING");
    assert!(text(&s["targetDaemonRevisionArn"]).contains(":daemon-revision/c1/d/"));
    let s = &v["daemonDeployments"][1];
    assert_eq!(s["status"], "STOPPED");
    assert!(text(&s["statusReason"]).starts_with("Stopped: replaced by deployment"));
    assert!(s["stoppedAt"].is_number());

    let v = h
        .ok(
            "ListDaemonDeployments",
            json!({"daemonArn": arn, "status": ["PENDING"]}),
        )
        .await;
    assert_eq!(arns(&v), deps[..1]);
    let v = h
        .ok(
            "ListDaemonDeployments",
            json!({"daemonArn": arn, "status": ["STOPPED", "SUCCESSFUL"]}),
        )
        .await;
    assert_eq!(arns(&v), deps[1..]);
    let v = h
        .ok(
            "ListDaemonDeployments",
            json!({"daemonArn": arn,
                   "createdAt": {"after": 1_795_000_010.0, "before": 1_795_000_030.0}}),
        )
        .await;
    assert_eq!(arns(&v), deps[1..4]);

    let mut seen = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"daemonArn": arn, "maxResults": 2});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let v = h.ok("ListDaemonDeployments", body).await;
        let page = arns(&v);
        assert!(page.len() <= 2);
        seen.extend(page);
        match v["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, deps);

    // An unknown daemon has no deployments; a malformed ARN is refused.
    let v = h
        .ok(
            "ListDaemonDeployments",
            json!({"daemonArn": format!("{PREFIX}:daemon/c1/nosuch")}),
        )
        .await;
    assert_eq!(v["daemonDeployments"], json!([]));
    for bad in [
        json!({"daemonArn": "d"}),
        json!({}),
        json!({"daemonArn": arn, "maxResults": 0}),
        json!({"daemonArn": arn, "maxResults": 101}),
        json!({"daemonArn": arn, "nextToken": "garbage"}),
        json!({"daemonArn": arn, "status": ["DONE"]}),
    ] {
        let (kind, _) = error(&h, "ListDaemonDeployments", bad.clone()).await;
        assert_eq!(kind, "InvalidParameterException", "{bad}");
    }
}

#[tokio::test]
async fn tags_on_daemons_and_daemon_task_definitions() {
    let h = Harness::new();
    daemon_setup(&h).await;
    let arn = text(&create(&h, "d").await["daemonArn"]);
    let td = format!("{PREFIX}:daemon-task-definition/agent:1");
    for r in [&arn, &td] {
        h.ok(
            "TagResource",
            json!({"resourceArn": r, "tags": [{"key": "k", "value": "v"}]}),
        )
        .await;
        let t = h.ok("ListTagsForResource", json!({"resourceArn": r})).await;
        assert_eq!(t["tags"], json!([{"key": "k", "value": "v"}]), "{r}");
    }
    // Tagging does not disturb the daemon.
    assert_eq!(describe(&h, &arn).await["status"], "ACTIVE");
}

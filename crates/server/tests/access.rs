//! Access control and the audit log through the router: users and their
//! keys, each role's allowed and refused operations, agent credentials kept
//! off the API, audit records of writes (ok, error, denied) and not of
//! reads, exec sessions recorded and listed.

mod common;

use axum::body::Body;
use base64::Engine as _;
use berth_model::clock::Clock as _;
use berth_model::ecs::Operation;
use berth_protocol::LogLine;
use berth_server::access::{ecs_rule, Caller, Role};
use berth_server::audit::{self, ExecSession, Outcome};
use common::{setup, Harness, KEY, SECRET};
use http::{Method, Request};
use serde_json::{json, Value};
use tower::ServiceExt as _;

/// A user's key.
struct User {
    key: String,
    secret: String,
}

async fn user(h: &Harness, name: &str, role: &str) -> User {
    let r = h
        .ok("BerthV1.CreateUser", json!({"name": name, "role": role}))
        .await;
    assert_eq!(r["user"]["name"], name);
    assert_eq!(r["user"]["role"], role);
    User {
        key: r["user"]["accessKeyId"]
            .as_str()
            .expect("accessKeyId")
            .into(),
        secret: r["secretAccessKey"].as_str().expect("secret").into(),
    }
}

async fn call(h: &Harness, u: &User, op: &str, body: Value) -> (u16, Value) {
    h.call_as(&u.key, &u.secret, op, body).await
}

fn kind(v: &Value) -> &str {
    v["__type"].as_str().unwrap_or("")
}

async fn api_records(h: &Harness) -> Vec<Value> {
    let r = h
        .ok(
            "BerthV1.ListAuditRecords",
            json!({"kind": "api", "maxResults": 1000}),
        )
        .await;
    r["records"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn every_operation_is_allowed_or_refused_by_role() {
    let h = Harness::new();
    setup(&h).await;
    let users = [
        (Role::Viewer, user(&h, "v", "viewer").await),
        (Role::Operator, user(&h, "o", "operator").await),
        (Role::Admin, user(&h, "a", "admin").await),
    ];
    for op in Operation::ALL {
        let rule = ecs_rule(*op, b"{}");
        for (role, u) in &users {
            let (status, v) = call(&h, u, op.name(), json!({})).await;
            let refused = kind(&v) == "AccessDeniedException";
            assert_eq!(
                refused,
                !role.allows(rule.level),
                "{role} {}: {status} {v}",
                op.name()
            );
            if refused {
                assert_eq!(status, 400);
                let msg = v["message"].as_str().unwrap_or("");
                assert!(
                    msg.contains(&format!("ecs:{}", op.name())),
                    "the refusal names the operation: {msg}"
                );
                assert!(msg.contains(role.name()), "and the role: {msg}");
            }
        }
    }
    // berth's own operations.
    for (op, body, viewer, operator) in [
        (
            "GetTaskLogs",
            json!({"cluster": "c1", "task": "nope"}),
            true,
            true,
        ),
        ("DescribeFleet", json!({"cluster": "c1"}), true, true),
        ("ListUsers", json!({}), false, false),
        ("ListAuditRecords", json!({"kind": "api"}), false, false),
        (
            "CreateUser",
            json!({"name": "z", "role": "viewer"}),
            false,
            false,
        ),
        ("DeleteUser", json!({"name": "z"}), false, false),
        ("SetImageVersion", json!({"version": "2"}), false, false),
        (
            "ReplaceInstances",
            json!({"capacityProvider": "mi"}),
            false,
            false,
        ),
    ] {
        for (u, allowed) in [(&users[0].1, viewer), (&users[1].1, operator)] {
            let (_, v) = call(&h, u, &format!("BerthV1.{op}"), body.clone()).await;
            assert_eq!(kind(&v) != "AccessDeniedException", allowed, "{op}: {v}");
            if !allowed {
                let msg = v["message"].as_str().unwrap_or("");
                assert!(msg.contains(&format!("berth:{op}")), "{msg}");
            }
        }
    }
}

#[tokio::test]
async fn operators_run_stop_update_and_exec_but_not_administer() {
    let h = Harness::new();
    setup(&h).await;
    let o = user(&h, "ops", "operator").await;
    let (s, run) = call(
        &h,
        &o,
        "RunTask",
        json!({"cluster": "c1", "taskDefinition": "web",
               "capacityProviderStrategy": [{"capacityProvider": "mi"}]}),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    let task = run["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (s, v) = call(
        &h,
        &o,
        "TagResource",
        json!({"resourceArn": task, "tags": [{"key": "k", "value": "v"}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(&h, &o, "StopTask", json!({"cluster": "c1", "task": task})).await;
    assert_eq!(s, 200, "{v}");
    // ExecuteCommand is an operator's: past the role check, the task itself is refused
    // (it was not run with enableExecuteCommand).
    let (_, v) = call(
        &h,
        &o,
        "ExecuteCommand",
        json!({"cluster": "c1", "task": task, "command": "sh", "interactive": true}),
    )
    .await;
    assert_eq!(kind(&v), "InvalidParameterException", "{v}");

    let cluster_arn = "arn:aws:ecs:us-east-1:000000000000:cluster/c1";
    for (op, body) in [
        ("CreateCluster", json!({"clusterName": "mine"})),
        ("DeleteCluster", json!({"cluster": "c1"})),
        ("DeleteCapacityProvider", json!({"capacityProvider": "mi"})),
        (
            "PutAccountSetting",
            json!({"name": "containerInsights", "value": "enabled"}),
        ),
        (
            "TagResource",
            json!({"resourceArn": cluster_arn, "tags": [{"key": "k", "value": "v"}]}),
        ),
    ] {
        let (s, v) = call(&h, &o, op, body).await;
        assert_eq!((s, kind(&v)), (400, "AccessDeniedException"), "{op}: {v}");
    }
    // Nothing of it happened.
    let c = h
        .ok("DescribeClusters", json!({"clusters": ["mine", "c1"]}))
        .await;
    assert_eq!(c["clusters"].as_array().map(Vec::len), Some(1), "{c}");
}

#[tokio::test]
async fn users_are_created_listed_and_removed_and_a_removed_key_stops_at_once() {
    let h = Harness::new();
    let r = h
        .ok(
            "BerthV1.CreateUser",
            json!({"name": "alice", "role": "viewer"}),
        )
        .await;
    let key = r["user"]["accessKeyId"].as_str().unwrap_or("").to_string();
    let secret = r["secretAccessKey"].as_str().unwrap_or("").to_string();
    assert!(key.starts_with("AKIA") && key.len() == 20, "{key}");
    assert_eq!(secret.len(), 40);
    assert_ne!(key, KEY);
    assert!(r["user"]["createdAt"].as_f64().is_some());
    assert!(r["user"].get("secretAccessKey").is_none());

    let (s, v) = h.call_as(&key, &secret, "ListClusters", json!({})).await;
    assert_eq!(s, 200, "{v}");

    let listed = h.ok("BerthV1.ListUsers", json!({})).await;
    assert_eq!(listed["users"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["users"][0]["name"], "alice");
    assert_eq!(listed["users"][0]["accessKeyId"], key.as_str());
    assert!(
        !listed.to_string().contains(&secret),
        "a secret is never listed"
    );

    // Bad input.
    for (body, want) in [
        (
            json!({"name": "alice", "role": "viewer"}),
            "ConflictException",
        ),
        (
            json!({"name": "bob", "role": "god"}),
            "InvalidParameterException",
        ),
        (
            json!({"name": "b b", "role": "viewer"}),
            "InvalidParameterException",
        ),
        (
            json!({"name": "root", "role": "admin"}),
            "InvalidParameterException",
        ),
        (
            json!({"name": "", "role": "admin"}),
            "InvalidParameterException",
        ),
        (json!({"role": "admin"}), "InvalidParameterException"),
        (
            json!({"name": "x", "role": "admin", "extra": 1}),
            "InvalidParameterException",
        ),
    ] {
        let (s, v) = h.call("BerthV1.CreateUser", body.clone()).await;
        assert_eq!((s, kind(&v)), (400, want), "{body}: {v}");
    }
    let (_, v) = h
        .call("BerthV1.DeleteUser", json!({"name": "nobody"}))
        .await;
    assert_eq!(kind(&v), "ResourceNotFoundException");
    let (_, v) = h.call("BerthV1.DeleteUser", json!({"name": "root"})).await;
    assert_eq!(kind(&v), "InvalidParameterException");

    let d = h.ok("BerthV1.DeleteUser", json!({"name": "alice"})).await;
    assert_eq!(d["user"]["accessKeyId"], key.as_str());
    let (s, v) = h.call_as(&key, &secret, "ListClusters", json!({})).await;
    assert_eq!((s, kind(&v)), (403, "UnrecognizedClientException"), "{v}");
    let listed = h.ok("BerthV1.ListUsers", json!({})).await;
    assert_eq!(listed["users"].as_array().map(Vec::len), Some(0));
    // The root key is untouched.
    h.ok("ListClusters", json!({})).await;
}

#[tokio::test]
async fn an_admin_user_manages_users_and_a_wrong_secret_is_refused() {
    let h = Harness::new();
    let a = user(&h, "boss", "admin").await;
    let (s, v) = call(
        &h,
        &a,
        "BerthV1.CreateUser",
        json!({"name": "eve", "role": "operator"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = h
        .call_as(
            &a.key,
            "not-the-secret-not-the-secret-not-the-se",
            "ListClusters",
            json!({}),
        )
        .await;
    assert_eq!((s, kind(&v)), (403, "InvalidSignatureException"), "{v}");
}

#[tokio::test]
async fn agent_credentials_never_sign_api_calls_and_user_keys_never_admit_an_agent() {
    use berth_control::agents::{self, Admission, InstanceRecord};
    let h = Harness::new();
    setup(&h).await;
    let instance = "i-0123456789abcdef0";
    let credential = "agent-credential-agent-credential-0001";
    let ctx = h.state.ctx.clone();
    ctx.store
        .write(|tx| {
            agents::save_record(
                tx,
                &InstanceRecord {
                    instance_id: instance.into(),
                    cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/c1".into(),
                    container_instance_arn:
                        "arn:aws:ecs:us-east-1:000000000000:container-instance/c1/x".into(),
                    capacity_provider: "mi".into(),
                    instance_type: "m5.large".into(),
                    availability_zone: "us-east-1a".into(),
                    join_token_digest: None,
                    credential_digest: Some(berth_control::digest(credential)),
                    generation: 0,
                    launched_at: 0.0,
                    image_version: None,
                    drain: None,
                    disconnected_at: None,
                    interrupted_at: None,
                    preparing: None,
                },
            )
        })
        .expect("instance");
    assert_eq!(
        agents::admit(&ctx, instance, credential).ok(),
        Some(Admission::Known)
    );
    for op in [
        "ListClusters",
        "RunTask",
        "BerthV1.DescribeFleet",
        "BerthV1.ListUsers",
    ] {
        let (s, v) = h.call_as(instance, credential, op, json!({})).await;
        assert_eq!(
            (s, kind(&v)),
            (403, "UnrecognizedClientException"),
            "{op}: {v}"
        );
    }

    let u = user(&h, "ops", "operator").await;
    assert!(agents::admit(&ctx, instance, &u.secret).is_err());
    assert!(agents::admit(&ctx, &u.key, &u.secret).is_err());
    assert!(agents::admit(&ctx, instance, SECRET).is_err());

    // In the registry an agent pulls and never pushes; so does a viewer; an operator pushes.
    let v = user(&h, "look", "viewer").await;
    let registry = |id: &str, secret: &str, method: Method, path: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Basic {auth}"))
            .body(Body::empty())
            .expect("request")
    };
    for (id, secret, push) in [
        (instance, credential, false),
        (v.key.as_str(), v.secret.as_str(), false),
        (u.key.as_str(), u.secret.as_str(), true),
    ] {
        let r = h
            .router
            .clone()
            .oneshot(registry(id, secret, Method::GET, "/v2/"))
            .await
            .expect("answer");
        assert_eq!(r.status().as_u16(), 200, "{id}");
        let r = h
            .router
            .clone()
            .oneshot(registry(id, secret, Method::POST, "/v2/x/blobs/uploads/"))
            .await
            .expect("answer");
        assert_eq!(r.status().as_u16() == 202, push, "{id}: {}", r.status());
        if !push {
            assert_eq!(r.status().as_u16(), 403);
        }
    }
}

#[tokio::test]
async fn writes_leave_audit_records_with_their_outcome_and_reads_leave_none() {
    let h = Harness::new();
    setup(&h).await;
    let v = user(&h, "val", "viewer").await;
    let o = user(&h, "otto", "operator").await;
    let before = api_records(&h).await.len();

    h.ok("CreateCluster", json!({"clusterName": "c9"})).await;
    h.ok("ListClusters", json!({})).await;
    h.ok("DescribeClusters", json!({"clusters": ["c9"]})).await;
    let (_, e) = h
        .call(
            "RunTask",
            json!({"cluster": "nope", "taskDefinition": "web"}),
        )
        .await;
    assert_eq!(kind(&e), "ClusterNotFoundException");
    let (_, e) = call(
        &h,
        &v,
        "RunTask",
        json!({"cluster": "c1", "taskDefinition": "web"}),
    )
    .await;
    assert_eq!(kind(&e), "AccessDeniedException");
    let (_, e) = call(
        &h,
        &v,
        "DescribeTasks",
        json!({"cluster": "c1", "tasks": ["x"]}),
    )
    .await;
    assert_ne!(kind(&e), "AccessDeniedException");
    let (_, e) = call(&h, &o, "BerthV1.ListUsers", json!({})).await;
    assert_eq!(kind(&e), "AccessDeniedException");
    // Creating an existing cluster again writes nothing and is still recorded.
    h.ok("CreateCluster", json!({"clusterName": "c9"})).await;

    let all = api_records(&h).await;
    let records = &all[before..];
    let ops: Vec<&str> = records
        .iter()
        .map(|r| r["operation"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        ops,
        [
            "ecs:CreateCluster",
            "ecs:RunTask",
            "ecs:RunTask",
            "berth:ListUsers",
            "ecs:CreateCluster"
        ],
        "{records:#?}"
    );
    let ok = &records[0];
    assert_eq!(ok["outcome"], "ok");
    assert_eq!(ok["principal"]["user"], "root");
    assert_eq!(ok["principal"]["role"], "admin");
    assert_eq!(ok["principal"]["accessKeyId"], KEY);
    assert_eq!(ok["target"], "c9");
    assert!(ok["time"].as_f64().is_some() && ok.get("errorCode").is_none());

    let err = &records[1];
    assert_eq!(err["outcome"], "error");
    assert_eq!(err["errorCode"], "ClusterNotFoundException");
    assert_eq!(err["cluster"], "nope");
    assert_eq!(err["target"], "web");

    let denied = &records[2];
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["errorCode"], "AccessDeniedException");
    assert_eq!(denied["principal"]["user"], "val");
    assert_eq!(denied["principal"]["role"], "viewer");
    assert_eq!(denied["principal"]["accessKeyId"], v.key.as_str());
    assert!(denied["errorMessage"]
        .as_str()
        .unwrap_or("")
        .contains("ecs:RunTask"));

    assert_eq!(records[3]["outcome"], "denied");
    assert_eq!(records[3]["principal"]["user"], "otto");
    assert_eq!(records[4]["outcome"], "ok");

    // User management is recorded, never with a secret.
    let earlier = all.iter().find(|r| r["operation"] == "berth:CreateUser");
    let Some(created) = earlier else {
        panic!("CreateUser recorded: {all:#?}")
    };
    assert_eq!(created["target"], "val");
    assert!(!serde_json::to_string(&all)
        .unwrap_or_default()
        .contains(&v.secret));
}

#[tokio::test]
async fn audit_records_page_and_filter_by_time() {
    let h = Harness::new();
    let t0 = h.clock.epoch_seconds();
    for i in 0..5 {
        h.ok("CreateCluster", json!({"clusterName": format!("p{i}")}))
            .await;
        h.clock.advance(std::time::Duration::from_secs(10));
    }
    let since = h
        .ok(
            "BerthV1.ListAuditRecords",
            json!({"kind": "api", "since": t0 + 20.0}),
        )
        .await;
    let targets: Vec<&str> = since["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["target"].as_str())
        .collect();
    assert_eq!(targets, ["p2", "p3", "p4"]);

    let mut seen = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"kind": "api", "maxResults": 2});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let page = h.ok("BerthV1.ListAuditRecords", body).await;
        let items = page["records"].as_array().cloned().unwrap_or_default();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .filter_map(|r| r["target"].as_str().map(String::from)),
        );
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4"]);
}

#[tokio::test]
async fn bad_audit_listing_input_is_refused() {
    let h = Harness::new();
    for (body, want) in [
        (json!({"kind": "nope"}), "InvalidParameterException"),
        (json!({}), "InvalidParameterException"),
        (
            json!({"kind": "api", "since": -1}),
            "InvalidParameterException",
        ),
        (
            json!({"kind": "api", "maxResults": 0}),
            "InvalidParameterException",
        ),
        (
            json!({"kind": "api", "maxResults": 1001}),
            "InvalidParameterException",
        ),
        (
            json!({"kind": "api", "nextToken": "!!"}),
            "InvalidParameterException",
        ),
        (
            json!({"kind": "api", "since": "yesterday"}),
            "SerializationException",
        ),
    ] {
        let (s, v) = h.call("BerthV1.ListAuditRecords", body.clone()).await;
        assert_eq!((s, kind(&v)), (400, want), "{body}: {v}");
    }
    // A token of one kind is no good for the other.
    for i in 0..3 {
        h.ok("CreateCluster", json!({"clusterName": format!("k{i}")}))
            .await;
    }
    let page = h
        .ok(
            "BerthV1.ListAuditRecords",
            json!({"kind": "api", "maxResults": 1}),
        )
        .await;
    let token = page["nextToken"].as_str().unwrap_or("").to_string();
    assert!(!token.is_empty());
    let (_, v) = h
        .call(
            "BerthV1.ListAuditRecords",
            json!({"kind": "exec", "nextToken": token}),
        )
        .await;
    assert_eq!(kind(&v), "InvalidParameterException");
    // Not JSON, and an unknown berth operation.
    let req = h.signed("ListClusters", b"{", SECRET, "us-east-1", h.clock.now());
    let (s, v) = h.send(req).await;
    assert_eq!((s, kind(&v)), (400, "SerializationException"), "{v}");
    let (_, v) = h.call("BerthV1.NoSuchThing", json!({})).await;
    assert_eq!(kind(&v), "UnknownOperationException");
}

fn session(who: &Caller, cluster: &str, task: &str, started_at: f64, exit: i32) -> ExecSession {
    ExecSession {
        principal: who.clone(),
        started_at,
        cluster: cluster.into(),
        task: task.into(),
        container: "app".into(),
        command: "/bin/sh -c 'echo hi'".into(),
        exit_code: Some(exit),
        duration_seconds: 1.5,
        bytes_in: 12,
        bytes_out: 345,
        outcome: Outcome::Ok,
        error: None,
    }
}

#[tokio::test]
async fn exec_sessions_are_recorded_listed_since_and_their_transcript_kept_unless_logging_is_none()
{
    let h = Harness::new();
    setup(&h).await;
    h.ok(
        "CreateCluster",
        json!({"clusterName": "quiet", "configuration": {"executeCommandConfiguration": {"logging": "NONE"}}}),
    )
    .await;
    let empty = h
        .ok("BerthV1.ListAuditRecords", json!({"kind": "exec"}))
        .await;
    assert_eq!(empty["records"].as_array().map(Vec::len), Some(0));

    let who = Caller {
        access_key_id: "AKIAOPERATOR00000001".into(),
        user: "ops".into(),
        role: Role::Operator,
    };
    let t0 = h.clock.epoch_seconds();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let quiet_id = uuid::Uuid::new_v4().simple().to_string();
    let task = format!("arn:aws:ecs:us-east-1:000000000000:task/c1/{id}");
    let quiet_task = format!("arn:aws:ecs:us-east-1:000000000000:task/quiet/{quiet_id}");
    let transcript = [
        LogLine {
            timestamp: t0,
            stream: "stdin".into(),
            message: "echo hi".into(),
        },
        LogLine {
            timestamp: t0 + 0.1,
            stream: "stdout".into(),
            message: "hi".into(),
        },
    ];
    let st = &h.state;
    let first = audit::record_exec(
        &st.ctx,
        &st.logs,
        &session(&who, "c1", &task, t0, 0),
        &transcript,
    )
    .expect("record");
    audit::record_exec(
        &st.ctx,
        &st.logs,
        &session(&who, "quiet", &quiet_task, t0 + 60.0, 137),
        &transcript,
    )
    .expect("record");
    assert!(!first.is_empty());

    let all = h
        .ok("BerthV1.ListAuditRecords", json!({"kind": "exec"}))
        .await;
    let records = all["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 2, "{all}");
    let r = &records[0];
    assert_eq!(r["id"], first.as_str());
    assert_eq!(r["principal"]["user"], "ops");
    assert_eq!(r["principal"]["role"], "operator");
    assert_eq!(r["startedAt"].as_f64(), Some(t0));
    assert_eq!(r["cluster"], "c1");
    assert_eq!(r["task"], task.as_str());
    assert_eq!(r["container"], "app");
    assert_eq!(r["command"], "/bin/sh -c 'echo hi'");
    assert_eq!(r["exitCode"], 0);
    assert_eq!(r["durationSeconds"].as_f64(), Some(1.5));
    assert_eq!(r["bytesIn"], 12);
    assert_eq!(r["bytesOut"], 345);
    assert_eq!(r["outcome"], "ok");
    assert_eq!(records[1]["exitCode"], 137);

    let since = h
        .ok(
            "BerthV1.ListAuditRecords",
            json!({"kind": "exec", "since": t0 + 30.0}),
        )
        .await;
    let later = since["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0]["cluster"], "quiet");
    // Exec sessions are not API calls.
    assert!(api_records(&h)
        .await
        .iter()
        .all(|r| r["operation"] != "ecs:ExecuteCommand"));

    // Logging DEFAULT (the default) keeps the transcript with the task's logs; NONE does not.
    let kept = st.logs.read(&id, Some("app"), 0.0);
    let streams: Vec<(&str, &str)> = kept
        .iter()
        .map(|(_, l)| (l.stream.as_str(), l.message.as_str()))
        .collect();
    assert_eq!(streams, [("exec:stdin", "echo hi"), ("exec:stdout", "hi")]);
    assert!(st.logs.read(&quiet_id, None, 0.0).is_empty());
}

//! The test harness: the whole HTTP edge and service layer without a socket,
//! over an in-memory store and a manual clock.
#![allow(dead_code)]

pub mod sched;

use axum::body::Body;
use berth_model::arn::ArnContext;
use berth_model::clock::{Clock, ManualClock};
use berth_server::api::{app, AppState};
use berth_server::credentials::RootKey;
use berth_server::ops::Ctx;
use berth_server::sigv4::{self, Credentials, Scope};
use berth_store::Store;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;

pub const KEY: &str = "AKIATESTTESTTESTTEST";
pub const SECRET: &str = "testsecrettestsecrettestsecrettestsecret";

pub struct Harness {
    pub router: axum::Router,
    pub clock: Arc<ManualClock>,
    pub state: Arc<AppState>,
}

impl Harness {
    pub fn new() -> Self {
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_795_000_000)));
        let dir = std::env::temp_dir().join(format!("berth-test-{}", std::process::id()));
        Self::over(Store::in_memory().expect("store"), clock, &dir)
    }

    /// A harness over `store`, on `clock`, keeping its other state in `dir`.
    pub fn over(store: Store, clock: Arc<ManualClock>, dir: &std::path::Path) -> Self {
        let ctx = Ctx {
            store,
            arns: ArnContext {
                region: "us-east-1".into(),
                account: "000000000000".into(),
            },
            clock: clock.clone(),
            catalog: berth_catalog::Catalog::embedded(),
        };
        let root = RootKey {
            access_key_id: KEY.into(),
            secret_access_key: SECRET.into(),
            file: None,
            generated: false,
        };
        let state = Arc::new(AppState::new(ctx, &root, dir).expect("state"));
        Self {
            router: app(state.clone()),
            clock,
            state,
        }
    }

    pub fn signed(
        &self,
        op: &str,
        body: &[u8],
        secret: &str,
        region: &str,
        at: Duration,
    ) -> Request<Body> {
        self.signed_as(KEY, op, body, secret, region, at)
    }

    /// A request signed with any key; `op` is an ECS operation or `BerthV1.<op>`.
    pub fn signed_as(
        &self,
        key: &str,
        op: &str,
        body: &[u8],
        secret: &str,
        region: &str,
        at: Duration,
    ) -> Request<Body> {
        let uri: Uri = "http://localhost/".parse().expect("uri");
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("localhost"));
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        if !op.is_empty() {
            let target = if op.starts_with("BerthV1.") {
                op.to_string()
            } else {
                format!("AmazonEC2ContainerServiceV20141113.{op}")
            };
            headers.insert(
                "x-amz-target",
                HeaderValue::from_str(&target).expect("target"),
            );
        }
        let creds = Credentials {
            access_key_id: key.into(),
            secret_access_key: secret.into(),
        };
        let now = time::OffsetDateTime::UNIX_EPOCH + at;
        sigv4::sign(
            &Method::POST,
            &uri,
            &mut headers,
            body,
            &creds,
            Scope {
                region,
                service: "ecs",
            },
            now,
        );
        let mut req = Request::builder().method(Method::POST).uri("/");
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        req.body(Body::from(body.to_vec())).expect("request")
    }

    pub async fn send(&self, req: Request<Body>) -> (u16, Value) {
        let resp = self.router.clone().oneshot(req).await.expect("response");
        let status = resp.status().as_u16();
        assert!(
            resp.headers().contains_key("x-amzn-requestid"),
            "every answer carries a request id"
        );
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn call(&self, op: &str, body: Value) -> (u16, Value) {
        let bytes = body.to_string().into_bytes();
        let req = self.signed(op, &bytes, SECRET, "us-east-1", self.clock.now());
        self.send(req).await
    }

    /// Calls `op` signed with `key` and `secret`.
    pub async fn call_as(&self, key: &str, secret: &str, op: &str, body: Value) -> (u16, Value) {
        let bytes = body.to_string().into_bytes();
        let req = self.signed_as(key, op, &bytes, secret, "us-east-1", self.clock.now());
        self.send(req).await
    }

    pub async fn ok(&self, op: &str, body: Value) -> Value {
        let (status, v) = self.call(op, body).await;
        assert_eq!(status, 200, "{op} failed: {v}");
        v
    }

    pub async fn err(&self, op: &str, body: Value) -> (u16, String) {
        let (status, v) = self.call(op, body).await;
        assert_ne!(status, 200, "{op} should fail: {v}");
        (status, v["__type"].as_str().unwrap_or("").to_string())
    }
}

pub fn provider(name: &str, cluster: &str) -> Value {
    json!({
        "name": name,
        "cluster": cluster,
        "managedInstancesProvider": {
            "infrastructureRoleArn": "arn:aws:iam::123456789012:role/ecsInfrastructureRole",
            "instanceLaunchTemplate": {
                "ec2InstanceProfileArn": "arn:aws:iam::123456789012:instance-profile/ecsInstanceProfile",
                "networkConfiguration": {"subnets": ["subnet-0123456789abcdef0"]},
                "instanceRequirements": {"vCpuCount": {"min": 2, "max": 8}, "memoryMiB": {"min": 4096}}
            }
        }
    })
}

pub async fn setup(h: &Harness) {
    h.ok("CreateCluster", json!({"clusterName": "c1"})).await;
    h.ok("CreateCapacityProvider", provider("mi", "c1")).await;
    h.ok(
        "RegisterTaskDefinition",
        json!({"family": "web", "requiresCompatibilities": ["MANAGED_INSTANCES"],
               "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 64}]}),
    )
    .await;
}

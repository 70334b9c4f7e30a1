//! The HTTP edge: SigV4, `X-Amz-Target`, JSON in, JSON or the ECS error shape out.

use crate::access;
use crate::audit;
use crate::ops::{self, Ctx};
use crate::sigv4::{self, AuthError, Scope};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use berth_model::ecs::{Operation, TARGET_PREFIX};
use berth_model::{EcsError, ErrorKind};
use std::sync::Arc;

/// The `X-Amz-Target` prefix of berth's own operations.
pub const BERTH_TARGET_PREFIX: &str = "BerthV1";

/// The largest request body accepted. AWS caps a task definition at 64 KiB;
/// this leaves room for the largest shapes while bounding memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every request handler shares.
pub struct AppState {
    pub ctx: Arc<Ctx>,
    /// The keys the API accepts: the root key and the users'.
    pub keys: crate::users::Keys,
    /// Connected agents.
    pub hub: Arc<crate::gateway::Hub>,
    /// Wakes the scheduler early (a task changed).
    pub wake: Arc<tokio::sync::Notify>,
    /// Container output shipped by agents.
    pub logs: crate::logs::LogStore,
    /// The built-in image registry's blobs and manifests.
    pub images: Arc<berth_image::BlobStore>,
    /// Exec sessions (ExecuteCommand and its streams).
    pub exec: Arc<crate::exec::ExecHub>,
    scheduler: std::sync::OnceLock<Arc<berth_control::scheduler::Scheduler>>,
}

impl AppState {
    /// The state of a server keeping its logs and images under `data_dir`.
    pub fn new(
        ctx: Ctx,
        root: &crate::credentials::RootKey,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let keys = crate::users::Keys::load(root, &ctx.store)
            .map_err(|e| anyhow::anyhow!("cannot load the users: {}", e.message))?;
        let images = berth_image::BlobStore::open(data_dir.join("registry"))?;
        let exec = crate::exec::ExecHub::new(ctx.clock.clone(), Default::default());
        Ok(Self {
            ctx: Arc::new(ctx),
            keys,
            hub: Arc::new(crate::gateway::Hub::default()),
            wake: Arc::new(tokio::sync::Notify::new()),
            logs: crate::logs::LogStore::new(data_dir.join("logs")),
            images: Arc::new(images),
            exec: Arc::new(exec),
            scheduler: std::sync::OnceLock::new(),
        })
    }

    /// The same state with exec sessions configured so.
    pub fn with_exec_config(mut self, config: crate::exec::ExecConfig) -> Self {
        self.exec = Arc::new(crate::exec::ExecHub::new(self.ctx.clock.clone(), config));
        self
    }

    /// What a key may do in the registry: a user's key pulls, and pushes
    /// unless it is a viewer's; an instance's credential only pulls.
    fn registry_access(&self, id: &str, secret: &str) -> crate::registry::Access {
        use crate::registry::Access;
        use subtle::ConstantTimeEq as _;
        if let Some(key) = self.keys.get(id) {
            if !bool::from(key.secret.as_bytes().ct_eq(secret.as_bytes())) {
                return Access::None;
            }
            return if key.caller.role.allows(crate::access::Level::Operate) {
                Access::PushPull
            } else {
                Access::Pull
            };
        }
        if berth_control::agents::check_credential(&self.ctx, id, secret) {
            Access::Pull
        } else {
            Access::None
        }
    }

    /// The scheduler, when this server launches instances.
    pub fn scheduler(&self) -> Option<&Arc<berth_control::scheduler::Scheduler>> {
        self.scheduler.get()
    }

    pub fn set_scheduler(&self, s: Arc<berth_control::scheduler::Scheduler>) {
        let _ = self.scheduler.set(s);
    }
}

/// The router, without a socket, so tests can drive it directly.
pub fn app(state: Arc<AppState>) -> Router {
    // Every exec session that ends is recorded in the audit log.
    let weak = Arc::downgrade(&state);
    state
        .exec
        .set_end_hook(Arc::new(move |end: &crate::exec::SessionEnd| {
            if let Some(st) = weak.upgrade() {
                record_exec_end(&st, end);
            }
        }));
    let for_registry = state.clone();
    let auth: crate::registry::AuthFn =
        Arc::new(move |id, secret| for_registry.registry_access(id, secret));
    let registry = crate::registry::routes(state.images.clone(), auth);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/", post(ecs))
        .route(berth_protocol::CONNECT_PATH, get(crate::gateway::connect))
        .route("/v1/data-channel/{session}", get(crate::exec::ssm::connect))
        .route(
            "/berth/v1/exec/{session}",
            get(crate::exec::native::connect),
        )
        .with_state(state)
        .merge(registry)
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let ctx = state.ctx.clone();
    let ok = tokio::task::spawn_blocking(move || ctx.store.read(|tx| tx.meta("schema")).is_ok())
        .await
        .unwrap_or(false);
    if ok {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
    }
}

fn auth_kind(e: &AuthError) -> ErrorKind {
    match e {
        AuthError::MissingAuthenticationToken => ErrorKind::MissingAuthenticationToken,
        AuthError::IncompleteSignature(_) => ErrorKind::IncompleteSignature,
        AuthError::UnrecognizedClient => ErrorKind::UnrecognizedClient,
        AuthError::InvalidSignature(_) => ErrorKind::InvalidSignature,
    }
}

fn error_response(request_id: &str, e: &EcsError) -> Response {
    let body = serde_json::json!({ "__type": e.kind.name(), "message": e.message });
    let status = StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    if let Ok(v) = HeaderValue::from_str(e.kind.name()) {
        h.insert("x-amzn-errortype", v);
    }
    resp
}

fn ok_response(request_id: &str, body: Vec<u8>) -> Response {
    let mut resp = (StatusCode::OK, Body::from(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// Reads the operation out of `X-Amz-Target`.
fn operation(headers: &HeaderMap) -> Result<Operation, EcsError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = target
        .strip_prefix(TARGET_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or("");
    Operation::parse(name).ok_or_else(|| {
        EcsError::new(
            ErrorKind::UnknownOperation,
            if target.is_empty() {
                "Missing the X-Amz-Target header: it names the operation, for example AmazonEC2ContainerServiceV20141113.ListClusters.".to_string()
            } else {
                format!("Unknown operation {target}.")
            },
        )
    })
}

async fn ecs(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = req.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            let e = EcsError::new(
                ErrorKind::RequestEntityTooLarge,
                format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
            );
            return error_response(&request_id, &e);
        }
    };
    let now = time::OffsetDateTime::UNIX_EPOCH + state.ctx.clock.now();
    let scope = Scope {
        region: &state.ctx.arns.region,
        service: "ecs",
    };
    // The key whose secret checked the signature: its caller is the principal.
    let verified = {
        let found = std::cell::RefCell::new(None);
        let lookup = |id: &str| {
            let key = state.keys.get(id)?;
            let secret = key.secret.clone();
            *found.borrow_mut() = Some(key);
            Some(secret)
        };
        sigv4::verify(
            &parts.method,
            &parts.uri,
            &parts.headers,
            &body,
            scope,
            now,
            &lookup,
        )
        .map(|_| found.into_inner())
    };
    let key = match verified {
        Ok(Some(key)) => key,
        Ok(None) => {
            let e =
                EcsError::server("Internal error: the signing key vanished; retry the request.");
            return error_response(&request_id, &e);
        }
        Err(e) => {
            tracing::debug!(request_id, error = %e, "authentication refused");
            return error_response(&request_id, &EcsError::new(auth_kind(&e), e.to_string()));
        }
    };
    let caller = key.caller.clone();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(name) = target
        .strip_prefix(BERTH_TARGET_PREFIX)
        .and_then(|r| r.strip_prefix('.'))
    {
        let Some(rule) = access::berth_rule(name) else {
            let e = EcsError::new(
                ErrorKind::UnknownOperation,
                format!("Unknown operation {BERTH_TARGET_PREFIX}.{name}."),
            );
            return error_response(&request_id, &e);
        };
        let name = name.to_string();
        let st = state.clone();
        let result = tokio::task::spawn_blocking(move || {
            let label = format!("berth:{name}");
            checked(&st.ctx, &caller, &label, rule, &body, || {
                crate::berth_ops::dispatch(&st, &name, &body)
            })
        })
        .await;
        return match result {
            Ok(Ok(bytes)) => ok_response(&request_id, bytes),
            Ok(Err(e)) => error_response(&request_id, &e),
            Err(_) => error_response(
                &request_id,
                &EcsError::server("Internal error; the request may be retried."),
            ),
        };
    }
    let op = match operation(&parts.headers) {
        Ok(op) => op,
        Err(e) => return error_response(&request_id, &e),
    };
    let rule = access::ecs_rule(op, &body);
    let ctx = state.ctx.clone();
    let exec_env = ExecEnvOf {
        base: crate::exec::ws_base(
            state.exec.config(),
            parts.headers.get("host").and_then(|h| h.to_str().ok()),
        ),
        state: state.clone(),
    };
    let result = tokio::task::spawn_blocking(move || {
        let label = format!("ecs:{}", op.name());
        checked(&ctx, &caller, &label, rule, &body, || {
            ops::dispatch_with(&ctx, Some(&exec_env), op, &caller.access_key_id, &body)
        })
    })
    .await;
    match result {
        Ok(Ok(bytes)) => {
            if matches!(
                op,
                Operation::RunTask
                    | Operation::StopTask
                    | Operation::UpdateContainerInstancesState
                    | Operation::DeregisterContainerInstance
                    | Operation::CreateCapacityProvider
            ) {
                // The scheduler acts on this now rather than at its next resync.
                state.wake.notify_one();
            }
            ok_response(&request_id, bytes)
        }
        Ok(Err(e)) => {
            if e.kind == ErrorKind::Server {
                tracing::error!(request_id, operation = op.name(), error = %e.message, "request failed");
            }
            error_response(&request_id, &e)
        }
        Err(join) => {
            tracing::error!(request_id, operation = op.name(), error = %join, "request handler panicked");
            error_response(
                &request_id,
                &EcsError::server("Internal error; the request may be retried."),
            )
        }
    }
}

/// Checks the caller's role for `operation`, runs `call`, and records a
/// mutating call (or any refusal) in the audit log (blocking).
fn checked(
    ctx: &Ctx,
    caller: &access::Caller,
    operation: &str,
    rule: access::Rule,
    body: &[u8],
    call: impl FnOnce() -> Result<Vec<u8>, EcsError>,
) -> Result<Vec<u8>, EcsError> {
    if let Err(e) = access::check(caller, operation, rule) {
        audit::denied(
            ctx,
            audit::api_record(caller, operation, body, ctx.now()),
            &e,
        );
        return Err(e);
    }
    if !rule.mutating {
        return call();
    }
    audit::audited(
        ctx,
        audit::api_record(caller, operation, body, ctx.now()),
        call,
    )
}

/// What ExecuteCommand needs from the server, for one request.
struct ExecEnvOf {
    state: Arc<AppState>,
    /// `ws://host:port` as the caller reached the server (or the public URL).
    base: String,
}

impl ops::exec::ExecEnv for ExecEnvOf {
    fn agent_connected(&self, instance_id: &str) -> bool {
        self.state.hub.is_connected(instance_id)
    }

    fn issue(&self, info: crate::exec::SessionInfo) -> (String, String) {
        self.state.exec.issue(info)
    }

    fn stream_url(&self, session_id: &str) -> String {
        format!(
            "{}/v1/data-channel/{session_id}?role=publish_subscribe",
            self.base
        )
    }
}

/// Records an ended exec session in the audit log (who, what, how it ended).
fn record_exec_end(state: &AppState, end: &crate::exec::SessionEnd) {
    crate::exec::log_session_end(end);
    let caller = state
        .keys
        .get(&end.principal)
        .map(|k| k.caller.clone())
        .unwrap_or_else(|| access::Caller {
            access_key_id: end.principal.clone(),
            user: String::new(),
            role: access::Role::Viewer,
        });
    let duration = end.duration.as_secs_f64();
    let session = audit::ExecSession {
        principal: caller,
        started_at: state.ctx.now() - duration,
        cluster: end.cluster.clone(),
        task: end.task.clone(),
        container: end.container.clone(),
        command: end.command.clone(),
        exit_code: end.exit_code,
        duration_seconds: duration,
        bytes_in: end.bytes_in,
        bytes_out: end.bytes_out,
        outcome: if end.refused {
            audit::Outcome::Denied
        } else if end.reason.is_none() {
            audit::Outcome::Ok
        } else {
            audit::Outcome::Error
        },
        error: end.reason.clone(),
    };
    if let Err(e) = audit::record_exec(&state.ctx, &state.logs, &session, &end.transcript) {
        tracing::warn!(error = %e, session = end.session_id, "cannot record an exec session");
    }
}

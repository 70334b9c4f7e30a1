//! Operations beyond the ECS API (`X-Amz-Target: BerthV1.<Operation>`),
//! signed, shaped and answered like ECS's: container logs, the fleet's
//! lifecycle (`SetImageVersion`, `ReplaceInstances`, `DescribeFleet`), users
//! (`CreateUser`, `ListUsers`, `DeleteUser`), the audit log
//! (`ListAuditRecords`) and metered cost (`GetCost`). Who may call which is [`crate::access`].

use crate::api::AppState;
use crate::ops::{active_cluster, OpResult};
use berth_model::{EcsError, ErrorKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetTaskLogsRequest {
    cluster: Option<String>,
    task: String,
    container: Option<String>,
    /// Only lines at or after this time (epoch seconds).
    start_time: Option<f64>,
    /// At most this many lines (default 10,000).
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LogEvent {
    timestamp: f64,
    container: String,
    stream: String,
    message: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GetTaskLogsResponse {
    events: Vec<LogEvent>,
    /// Where a follow-up call should start to see only newer lines.
    next_start_time: Option<f64>,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> OpResult<T> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        if ["unknown variant", "unknown field", "missing field"]
            .iter()
            .any(|p| msg.starts_with(p))
        {
            EcsError::invalid(format!("Invalid value in request: {msg}"))
        } else {
            EcsError::new(
                ErrorKind::Serialization,
                format!("Cannot read the request body: {msg}"),
            )
        }
    })
}

fn render<T: Serialize>(v: &T) -> OpResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| EcsError::server(e.to_string()))
}

/// Runs one berth operation (blocking: called on a blocking thread).
pub fn dispatch(state: &AppState, operation: &str, body: &[u8]) -> OpResult<Vec<u8>> {
    match operation {
        "GetTaskLogs" => render(&get_task_logs(state, parse(body)?)?),
        "SetImageVersion" => render(&set_image_version(state, parse(body)?)?),
        "ReplaceInstances" => render(&replace_instances(state, parse(body)?)?),
        "DescribeFleet" => render(&describe_fleet(state, parse(body)?)?),
        "CreateUser" => render(&create_user(state, parse(body)?)?),
        "ListUsers" => render(&list_users(state, parse(body)?)?),
        "DeleteUser" => render(&delete_user(state, parse(body)?)?),
        "ListAuditRecords" => list_audit_records(state, parse(body)?),
        "GetCost" => render(&get_cost(state, parse(body)?)?),
        other => Err(EcsError::new(
            ErrorKind::UnknownOperation,
            format!("Unknown operation BerthV1.{other}."),
        )),
    }
}

fn get_task_logs(state: &AppState, req: GetTaskLogsRequest) -> OpResult<GetTaskLogsResponse> {
    let ctx = &state.ctx;
    let limit = req.limit.unwrap_or(10_000).clamp(1, 100_000);
    let task_arn = ctx.store.read(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let arn = if req.task.starts_with("arn:") {
            req.task.clone()
        } else {
            ctx.arns
                .task(cluster.cluster_name.as_deref().unwrap_or(""), &req.task)
        };
        match tx.task(&arn)? {
            Some(t) if t.value.cluster_arn == cluster.cluster_arn => Ok(arn),
            _ => Err(EcsError::invalid("The referenced task was not found.")),
        }
    })?;
    let id = task_arn.rsplit('/').next().unwrap_or("");
    let lines = state
        .logs
        .read(id, req.container.as_deref(), req.start_time.unwrap_or(0.0));
    let skip = lines.len().saturating_sub(limit);
    let events: Vec<LogEvent> = lines
        .into_iter()
        .skip(skip)
        .map(|(container, l)| LogEvent {
            timestamp: l.timestamp,
            container,
            stream: l.stream,
            message: l.message,
        })
        .collect();
    let next_start_time = events.last().map(|e| e.timestamp + 0.000_001);
    Ok(GetTaskLogsResponse {
        events,
        next_start_time,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetImageVersionRequest {
    version: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SetImageVersionResponse {
    version: String,
    previous_version: String,
}

/// Publishes a new OS image version: every fleet rolls to it within its
/// budgets and maintenance windows.
fn set_image_version(
    state: &AppState,
    req: SetImageVersionRequest,
) -> OpResult<SetImageVersionResponse> {
    let ctx = &state.ctx;
    let previous = ctx
        .store
        .read(|tx| berth_control::lifecycle::image_version(tx))?;
    berth_control::lifecycle::set_image_version(ctx, &req.version)?;
    Ok(SetImageVersionResponse {
        version: req.version.trim().to_string(),
        previous_version: previous,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplaceInstancesRequest {
    capacity_provider: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReplaceInstancesResponse {
    capacity_provider: String,
    /// Instances launched before now, all to be replaced.
    instances: usize,
}

/// Rolls every existing instance of a capacity provider (after an
/// UpdateCapacityProvider, say), within its budget and windows.
fn replace_instances(
    state: &AppState,
    req: ReplaceInstancesRequest,
) -> OpResult<ReplaceInstancesResponse> {
    let ctx = &state.ctx;
    let name = req
        .capacity_provider
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    let instances = berth_control::lifecycle::replace_instances(ctx, &name)?;
    Ok(ReplaceInstancesResponse {
        capacity_provider: name,
        instances,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeFleetRequest {
    cluster: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DescribeFleetResponse {
    image_version: String,
    instances: Vec<berth_control::lifecycle::FleetInstance>,
}

/// Every live instance of a cluster with its age, image and drain.
fn describe_fleet(state: &AppState, req: DescribeFleetRequest) -> OpResult<DescribeFleetResponse> {
    let ctx = &state.ctx;
    ctx.store.read(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        Ok(DescribeFleetResponse {
            image_version: berth_control::lifecycle::image_version(tx)?,
            instances: berth_control::lifecycle::fleet(
                tx,
                cluster.cluster_arn.as_deref().unwrap_or(""),
                ctx.now(),
            )?,
        })
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GetCostRequest {
    /// A cluster name or ARN; every cluster when absent.
    cluster: Option<String>,
    /// `task`, `service`, `cluster` (default), `capacity-provider`,
    /// `instance`, `instance-type` or `day`.
    group_by: Option<String>,
    /// Epoch seconds; from the first meter when absent.
    since: Option<f64>,
    /// Epoch seconds; now when absent (and at most now).
    until: Option<f64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GetCostResponse {
    #[serde(flatten)]
    report: berth_catalog::cost::CostReport,
    /// The cluster reported on, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_arn: Option<String>,
    /// The tables new instances are priced with now (meters keep the
    /// price and fee of their launch).
    price_table: berth_catalog::TableInfo,
    fee_table: berth_catalog::TableInfo,
    /// Where Fargate's rates come from.
    fargate_rates: String,
}

/// Metered cost over a window: instance bills, task shares, idle capacity
/// and the Fargate comparison ([`berth_control::metering`]).
fn get_cost(state: &AppState, req: GetCostRequest) -> OpResult<GetCostResponse> {
    use berth_catalog::cost::{GroupBy, Window};
    let ctx = &state.ctx;
    let group_by = match req.group_by.as_deref() {
        None => GroupBy::Cluster,
        Some(g) => GroupBy::parse(g).ok_or_else(|| {
            let all: Vec<&str> = GroupBy::ALL.iter().map(|g| g.as_str()).collect();
            EcsError::invalid(format!("groupBy `{g}` is not one of {}.", all.join(", ")))
        })?,
    };
    let now = ctx.now();
    for (name, v) in [("since", req.since), ("until", req.until)] {
        if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(EcsError::invalid(format!(
                "{name} must be a time in epoch seconds, 0 or later."
            )));
        }
    }
    let until = req.until.unwrap_or(now).min(now);
    if let Some(since) = req.since {
        if since >= until {
            return Err(EcsError::invalid(format!(
                "since ({since}) must be before until ({until}, which is at most now)."
            )));
        }
    }
    let cluster_arn = match req.cluster.as_deref() {
        None => None,
        Some(c) => {
            let name = crate::ops::cluster_name(ctx, Some(c))?;
            // A deleted cluster's cost stays reportable: any status will do.
            let found = ctx.store.read(|tx| tx.cluster(&name))?;
            match found {
                Some(c) => c.value.cluster_arn,
                None => return Err(EcsError::cluster_not_found()),
            }
        }
    };
    let report = berth_control::metering::report(
        ctx,
        cluster_arn.as_deref(),
        Window {
            since: req.since,
            until,
        },
        group_by,
    )?;
    Ok(GetCostResponse {
        report,
        cluster_arn,
        price_table: ctx.catalog.price_table().clone(),
        fee_table: ctx.catalog.fee_table().clone(),
        fargate_rates: "fargate-prices.csv: AWS Fargate on-demand, us-east-1 (2026-09-20), \
                        used for every region"
            .into(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateUserRequest {
    name: String,
    role: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateUserResponse {
    user: crate::users::User,
    /// Shown here only: berth never answers it again.
    secret_access_key: String,
}

fn create_user(state: &AppState, req: CreateUserRequest) -> OpResult<CreateUserResponse> {
    let role = crate::users::parse_role(&req.role)?;
    let record = crate::users::create(&state.ctx, &state.keys, &req.name, role)?;
    Ok(CreateUserResponse {
        user: crate::users::User::from(&record),
        secret_access_key: record.secret_access_key.clone(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListUsersRequest {}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListUsersResponse {
    users: Vec<crate::users::User>,
}

fn list_users(state: &AppState, _req: ListUsersRequest) -> OpResult<ListUsersResponse> {
    Ok(ListUsersResponse {
        users: crate::users::list(&state.ctx)?,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeleteUserRequest {
    name: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DeleteUserResponse {
    user: crate::users::User,
}

fn delete_user(state: &AppState, req: DeleteUserRequest) -> OpResult<DeleteUserResponse> {
    Ok(DeleteUserResponse {
        user: crate::users::delete(&state.ctx, &state.keys, &req.name)?,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListAuditRecordsRequest {
    kind: crate::audit::Kind,
    /// Only records at or after this time (epoch seconds).
    since: Option<f64>,
    /// 1 to 1000; 100 by default.
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListAuditRecordsResponse<T> {
    records: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

/// One page of the audit log, oldest first.
fn list_audit_records(state: &AppState, req: ListAuditRecordsRequest) -> OpResult<Vec<u8>> {
    use crate::audit::{ApiRecord, ExecRecord, Kind};
    let limit = crate::ops::page_size(req.max_results, 1000, 100)?;
    let (ctx, token) = (&state.ctx, req.next_token.as_deref());
    match req.kind {
        Kind::Api => {
            let (records, next_token) =
                crate::audit::list::<ApiRecord>(ctx, req.kind, req.since, limit, token)?;
            render(&ListAuditRecordsResponse {
                records,
                next_token,
            })
        }
        Kind::Exec => {
            let (records, next_token) =
                crate::audit::list::<ExecRecord>(ctx, req.kind, req.since, limit, token)?;
            render(&ListAuditRecordsResponse {
                records,
                next_token,
            })
        }
    }
}

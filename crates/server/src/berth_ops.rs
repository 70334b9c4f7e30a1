//! Operations beyond the ECS API (`X-Amz-Target: BerthV1.<Operation>`),
//! signed, shaped and answered like ECS's: container logs for now.

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
    serde_json::from_slice(body).map_err(|e| {
        EcsError::new(
            ErrorKind::Serialization,
            format!("Cannot read the request body: {e}"),
        )
    })
}

fn render<T: Serialize>(v: &T) -> OpResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| EcsError::server(e.to_string()))
}

/// Runs one berth operation (blocking: called on a blocking thread).
pub fn dispatch(state: &AppState, operation: &str, body: &[u8]) -> OpResult<Vec<u8>> {
    match operation {
        "GetTaskLogs" => render(&get_task_logs(state, parse(body)?)?),
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

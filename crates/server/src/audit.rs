//! The audit log: a record of every mutating API call and of every exec
//! session.
//!
//! # Design
//!
//! Records are documents of kind `audit`, under the parent `api` or `exec`,
//! keyed by their time (zero-padded epoch milliseconds), a sequence number and
//! a random suffix, so the store lists them in time order and `since` is a
//! key bound.
//!
//! An API call's record is written in the same transaction as the call's own
//! write: the edge runs the operation inside [`audited`], which hands the
//! record to the store as a [`berth_store::rider`], and the operation's first
//! commit stores it. A call that commits nothing (it failed, was refused, or
//! had nothing to change) gets its record in a small write of its own, with
//! the outcome. A call that fails after it committed has its record rewritten
//! with the error. Reads are not recorded; refusals always are.
//!
//! Exec sessions are recorded by [`record_exec`], which the exec stream calls
//! when a session ends; when the cluster keeps exec output
//! (`executeCommandConfiguration.logging` `DEFAULT`, the default, or
//! `OVERRIDE`) the session's transcript goes to the task's logs beside the
//! container's output, on the streams `exec:<stream>`.

use crate::access::Caller;
use crate::logs::LogStore;
use crate::ops::Ctx;
use base64::Engine as _;
use berth_model::ecs::ExecuteCommandLogging;
use berth_model::{EcsError, ErrorKind};
use berth_protocol::{LogBatch, LogLine};
use berth_store::rider::{self, Rider};
use berth_store::{docs, Expect, Page};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// The documents' kind.
pub const KIND: &str = "audit";
/// The parent of API call records.
pub const API: &str = "api";
/// The parent of exec session records.
pub const EXEC: &str = "exec";

/// The longest `target` kept, in characters.
const MAX_TARGET: usize = 512;

/// How a call or session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Refused for the caller's role.
    Denied,
    Error,
}

/// One mutating API call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiRecord {
    /// The record's key.
    pub id: String,
    /// When the call arrived (epoch seconds).
    pub time: f64,
    pub principal: Caller,
    /// `ecs:<Operation>` or `berth:<Operation>`.
    pub operation: String,
    /// The cluster the request names, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The most specific resource the request names (task, service, ARN, name…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub outcome: Outcome,
    /// The error's `__type` when the outcome is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// One exec session, as the exec stream reports it when the session ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecSession {
    pub principal: Caller,
    /// When the session started (epoch seconds).
    pub started_at: f64,
    pub cluster: String,
    pub task: String,
    pub container: String,
    pub command: String,
    /// The command's exit code; none when it never ran or was cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_seconds: f64,
    /// Bytes from the client to the command (its stdin).
    pub bytes_in: u64,
    /// Bytes from the command to the client (its stdout and stderr).
    pub bytes_out: u64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An exec session as stored and listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRecord {
    pub id: String,
    #[serde(flatten)]
    pub session: ExecSession,
}

/// Epoch milliseconds, as keys hold them.
fn millis(time: f64) -> u64 {
    (time.max(0.0) * 1000.0).round() as u64
}

/// A record key: the time in zero-padded epoch milliseconds, then this
/// process's sequence number (records of one millisecond keep their order)
/// and a random suffix (keys of two processes never collide).
fn new_key(time: f64) -> String {
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{:013}-{seq:012x}-{:08x}",
        millis(time),
        rand::rng().random::<u32>()
    )
}

/// A bound below every key of `since`'s millisecond and above every earlier one.
fn since_key(since: f64) -> String {
    format!("{:013}", millis(since))
}

fn text(v: &serde_json::Value) -> Option<String> {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str())
            .collect::<Vec<_>>()
            .join(","),
        _ => return None,
    };
    if s.is_empty() {
        return None;
    }
    Some(s.chars().take(MAX_TARGET).collect())
}

/// The cluster and the most specific resource a request body names.
pub fn targets(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Named {
        cluster: Option<serde_json::Value>,
        cluster_name: Option<serde_json::Value>,
        cluster_arn: Option<serde_json::Value>,
        task: Option<serde_json::Value>,
        tasks: Option<serde_json::Value>,
        service: Option<serde_json::Value>,
        service_name: Option<serde_json::Value>,
        daemon_arn: Option<serde_json::Value>,
        daemon_name: Option<serde_json::Value>,
        container_instance: Option<serde_json::Value>,
        container_instances: Option<serde_json::Value>,
        resource_arn: Option<serde_json::Value>,
        capacity_provider: Option<serde_json::Value>,
        task_definition: Option<serde_json::Value>,
        task_definitions: Option<serde_json::Value>,
        daemon_task_definition: Option<serde_json::Value>,
        family: Option<serde_json::Value>,
        name: Option<serde_json::Value>,
        version: Option<serde_json::Value>,
    }
    let n: Named = serde_json::from_slice(body).unwrap_or_default();
    let cluster = [&n.cluster, &n.cluster_name, &n.cluster_arn]
        .into_iter()
        .flatten()
        .find_map(text);
    let target = [
        &n.task,
        &n.tasks,
        &n.service,
        &n.service_name,
        &n.daemon_arn,
        &n.daemon_name,
        &n.container_instance,
        &n.container_instances,
        &n.resource_arn,
        &n.capacity_provider,
        &n.task_definition,
        &n.task_definitions,
        &n.daemon_task_definition,
        &n.family,
        &n.name,
        &n.version,
    ]
    .into_iter()
    .flatten()
    .find_map(text)
    .or_else(|| cluster.clone());
    (cluster, target)
}

/// The record of a call by `caller` to `operation` with `body`, arriving at
/// `now`, as if it succeeds.
pub fn api_record(caller: &Caller, operation: &str, body: &[u8], now: f64) -> ApiRecord {
    let (cluster, target) = targets(body);
    ApiRecord {
        id: new_key(now),
        time: now,
        principal: caller.clone(),
        operation: operation.to_string(),
        cluster,
        target,
        outcome: Outcome::Ok,
        error_code: None,
        error_message: None,
    }
}

fn failed(mut record: ApiRecord, e: &EcsError) -> ApiRecord {
    record.outcome = if e.kind == ErrorKind::AccessDenied {
        Outcome::Denied
    } else {
        Outcome::Error
    };
    record.error_code = Some(e.kind.name().to_string());
    record.error_message = Some(e.message.chars().take(1024).collect());
    record
}

fn store_record(ctx: &Ctx, record: &ApiRecord) {
    let put = ctx.store.write(|tx| -> Result<(), EcsError> {
        match docs::get::<serde_json::Value>(tx, KIND, &record.id)? {
            Some(v) => docs::put(
                tx,
                KIND,
                &record.id,
                API,
                record,
                Expect::Version(v.version),
            )?,
            None => docs::put(tx, KIND, &record.id, API, record, Expect::Absent)?,
        };
        Ok(())
    });
    if let Err(e) = put {
        tracing::error!(operation = record.operation, error = %e, "cannot store the audit record");
    }
}

/// Records a refused call (a separate small write: nothing else is written).
pub fn denied(ctx: &Ctx, record: ApiRecord, e: &EcsError) {
    store_record(ctx, &failed(record, e));
}

/// Runs a mutating call and records it, in the same transaction as the
/// call's first write when it commits one.
pub fn audited<T>(
    ctx: &Ctx,
    record: ApiRecord,
    call: impl FnOnce() -> Result<T, EcsError>,
) -> Result<T, EcsError> {
    let doc = match serde_json::to_string(&record) {
        Ok(d) => d,
        Err(e) => {
            return Err(EcsError::server(format!(
                "cannot render the audit record: {e}"
            )))
        }
    };
    let pending = Rider {
        kind: KIND.into(),
        key: record.id.clone(),
        parent: API.into(),
        doc,
    };
    let (result, left) = rider::with(pending, call);
    match (&result, left) {
        // Carried by the call's commit.
        (Ok(_), None) => {}
        // Nothing committed: an idempotent repeat, or nothing to change.
        (Ok(_), Some(_)) => store_record(ctx, &record),
        // Failed before or after committing: the record tells the error.
        (Err(e), _) => store_record(ctx, &failed(record, e)),
    }
    result
}

/// Records an exec session; answers the record's id. When the cluster keeps
/// exec output, `transcript` is appended to the task's logs under the
/// session's container, each line's stream prefixed with `exec:`.
pub fn record_exec(
    ctx: &Ctx,
    logs: &LogStore,
    session: &ExecSession,
    transcript: &[LogLine],
) -> Result<String, EcsError> {
    let id = new_key(session.started_at);
    let record = ExecRecord {
        id: id.clone(),
        session: session.clone(),
    };
    let keep = ctx.store.write(|tx| -> Result<bool, EcsError> {
        docs::put(tx, KIND, &id, EXEC, &record, Expect::Absent)?;
        let name = crate::ops::cluster_name(ctx, Some(&session.cluster)).unwrap_or_default();
        let logging = tx
            .cluster(&name)?
            .and_then(|c| c.value.configuration)
            .and_then(|c| c.execute_command_configuration)
            .and_then(|e| e.logging);
        // AWS's default is DEFAULT: output is kept unless logging is NONE.
        Ok(logging != Some(ExecuteCommandLogging::None))
    })?;
    if keep && !transcript.is_empty() {
        logs.append(&LogBatch {
            task_arn: session.task.clone(),
            container: session.container.clone(),
            lines: transcript
                .iter()
                .map(|l| LogLine {
                    timestamp: l.timestamp,
                    stream: format!("exec:{}", l.stream),
                    message: l.message.clone(),
                })
                .collect(),
        });
    }
    Ok(id)
}

/// Which records to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Api,
    Exec,
}

impl Kind {
    fn parent(self) -> &'static str {
        match self {
            Kind::Api => API,
            Kind::Exec => EXEC,
        }
    }
}

fn encode_token(kind: Kind, key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("audit\n{}\n{key}", kind.parent()))
}

fn decode_token(kind: Kind, token: &str) -> Result<String, EcsError> {
    let bad = || {
        EcsError::invalid(
            "The nextToken is invalid: pass it exactly as a previous ListAuditRecords of the same kind returned it.",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    match text.splitn(3, '\n').collect::<Vec<_>>().as_slice() {
        ["audit", parent, key] if *parent == kind.parent() && !key.is_empty() => {
            Ok((*key).to_string())
        }
        _ => Err(bad()),
    }
}

/// One page of records of `kind`, oldest first, from `since` (epoch seconds)
/// or after a `next_token`; answers the records and the next page's token.
pub fn list<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    kind: Kind,
    since: Option<f64>,
    limit: usize,
    next_token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), EcsError> {
    if let Some(s) = since {
        if !s.is_finite() || s < 0.0 {
            return Err(EcsError::invalid(
                "since must be a time in epoch seconds, 0 or later.",
            ));
        }
    }
    let after = match next_token {
        Some(t) => Some(decode_token(kind, t)?),
        None => since.map(since_key),
    };
    let page: Page<(String, berth_store::Versioned<T>)> = ctx
        .store
        .read(|tx| docs::list(tx, KIND, Some(kind.parent()), after.as_deref(), limit))?;
    let next = page.next.map(|k| encode_token(kind, &k));
    Ok((page.items.into_iter().map(|(_, v)| v.value).collect(), next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_time_and_since_bounds_them() {
        let a = new_key(1_795_000_000.123);
        let b = new_key(1_795_000_000.124);
        assert!(a < b);
        assert!(since_key(1_795_000_000.123).as_str() < a.as_str());
        assert!(since_key(1_795_000_000.124).as_str() > a.as_str());
        assert!(since_key(1_795_000_000.124).as_str() < b.as_str());
    }

    #[test]
    fn targets_prefer_the_most_specific() {
        let (c, t) = targets(br#"{"cluster":"c1","task":"abc","reason":"x"}"#);
        assert_eq!((c.as_deref(), t.as_deref()), (Some("c1"), Some("abc")));
        let (c, t) = targets(br#"{"clusterName":"c2"}"#);
        assert_eq!((c.as_deref(), t.as_deref()), (Some("c2"), Some("c2")));
        let (_, t) = targets(br#"{"cluster":"c1","tasks":["a","b"]}"#);
        assert_eq!(t.as_deref(), Some("a,b"));
        assert_eq!(targets(b"not json"), (None, None));
        assert_eq!(targets(br#"{"cluster":7}"#), (None, None));
    }

    #[test]
    fn tokens_are_bound_to_their_kind() {
        let t = encode_token(Kind::Api, "0001-x");
        assert_eq!(decode_token(Kind::Api, &t).ok().as_deref(), Some("0001-x"));
        assert!(decode_token(Kind::Exec, &t).is_err());
        assert!(decode_token(Kind::Api, "!!").is_err());
    }
}

//! Task scale-in protection: UpdateTaskProtection, GetTaskProtection.
//!
//! The protection itself is kept by [`berth_control::protection`], which the
//! scheduler reads before it stops a task to scale in or consolidate.
//!
//! # Differences from ECS
//!
//! ECS accepts only tasks that belong to a service and answers `TASK_NOT_VALID`
//! for a standalone task. berth is broader: every task that is not stopping
//! or stopped can be protected (standalone tasks too, which scale-in and
//! consolidation never stop anyway); a stopping or stopped one is the
//! `TASK_NOT_VALID` failure. A task that is not in the cluster is `MISSING`,
//! as in DescribeTasks.

use super::tasks::task_arn;
use super::{active_cluster, Ctx, OpResult};
use berth_control::protection::{self, Protection};
use berth_model::ecs::*;
use berth_model::wire::{join, Required};
use berth_model::EcsError;
use serde::Deserialize;

/// How long a protection lasts when `expiresInMinutes` is not given.
const DEFAULT_MINUTES: i32 = 120;
/// The longest protection ECS allows: 48 hours.
const MAX_MINUTES: i32 = 2880;
const MAX_UPDATE_TASKS: usize = 10;
const MAX_GET_TASKS: usize = 100;

/// UpdateTaskProtection as read off the wire. The generated shape holds
/// `protectionEnabled` as a plain `bool`, which cannot tell an absent member
/// from `false`; the model requires it, so it is read here as an option.
#[derive(Debug, Deserialize)]
pub struct UpdateInput {
    #[serde(flatten)]
    request: UpdateTaskProtectionRequest,
    #[serde(rename = "protectionEnabled", default)]
    protection_enabled: Option<bool>,
}

impl Required for UpdateInput {
    fn missing(&self, path: &str) -> Option<String> {
        self.request.missing(path).or_else(|| {
            self.protection_enabled
                .is_none()
                .then(|| join(path, "protectionEnabled"))
        })
    }
}

fn failure(arn: String, reason: &str, detail: Option<&str>) -> Failure {
    Failure {
        arn: Some(arn),
        reason: Some(reason.into()),
        detail: detail.map(str::to_string),
    }
}

fn stopping(t: &Task) -> bool {
    t.desired_status.as_deref() == Some("STOPPED") || t.last_status.as_deref() == Some("STOPPED")
}

fn answer(arn: String, protection: Protection) -> ProtectedTask {
    match protection {
        Protection::Off => ProtectedTask {
            task_arn: Some(arn),
            protection_enabled: false,
            expiration_date: None,
        },
        Protection::Until { expires_at } => ProtectedTask {
            task_arn: Some(arn),
            protection_enabled: true,
            expiration_date: Some(expires_at),
        },
    }
}

pub fn update(ctx: &Ctx, input: UpdateInput) -> OpResult<UpdateTaskProtectionResponse> {
    let Some(enabled) = input.protection_enabled else {
        return Err(EcsError::invalid(
            "Missing required parameter in input: \"protectionEnabled\"",
        ));
    };
    let req = input.request;
    let wanted = req.tasks.clone().unwrap_or_default();
    if wanted.is_empty() || wanted.len() > MAX_UPDATE_TASKS {
        return Err(EcsError::invalid(format!(
            "tasks must name between 1 and {MAX_UPDATE_TASKS} tasks; {} were given.",
            wanted.len()
        )));
    }
    let minutes = match req.expires_in_minutes {
        None => DEFAULT_MINUTES,
        Some(m) if (1..=MAX_MINUTES).contains(&m) => m,
        Some(m) => {
            return Err(EcsError::invalid(format!(
                "expiresInMinutes must be between 1 and {MAX_MINUTES} (48 hours); {m} was given."
            )))
        }
    };
    ctx.store.write(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let now = ctx.now();
        let wanted_protection = if enabled {
            Protection::Until {
                expires_at: now + f64::from(minutes) * 60.0,
            }
        } else {
            Protection::Off
        };
        let mut protected_tasks = vec![];
        let mut failures = vec![];
        for given in &wanted {
            let arn = task_arn(ctx, &cluster, given);
            match tx
                .task(&arn)?
                .filter(|t| t.value.cluster_arn == cluster.cluster_arn)
            {
                None => failures.push(failure(arn, "MISSING", None)),
                Some(t) if stopping(&t.value) => failures.push(failure(
                    arn,
                    "TASK_NOT_VALID",
                    Some("The task is stopping or stopped: only a task that is not stopping can change its scale-in protection."),
                )),
                Some(_) => {
                    protection::save(tx, &arn, wanted_protection)?;
                    protected_tasks.push(answer(arn, wanted_protection));
                }
            }
        }
        Ok(UpdateTaskProtectionResponse {
            protected_tasks: Some(protected_tasks),
            failures: Some(failures),
        })
    })
}

pub fn get(ctx: &Ctx, req: GetTaskProtectionRequest) -> OpResult<GetTaskProtectionResponse> {
    let wanted = req.tasks.clone().unwrap_or_default();
    if wanted.len() > MAX_GET_TASKS {
        return Err(EcsError::invalid(format!(
            "tasks can name at most {MAX_GET_TASKS} tasks; {} were given.",
            wanted.len()
        )));
    }
    ctx.store.read(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let now = ctx.now();
        let mut protected_tasks = vec![];
        let mut failures = vec![];
        for given in &wanted {
            let arn = task_arn(ctx, &cluster, given);
            match tx
                .task(&arn)?
                .filter(|t| t.value.cluster_arn == cluster.cluster_arn)
            {
                None => failures.push(failure(arn, "MISSING", None)),
                // A stopped task runs nowhere: nothing is left to protect.
                Some(t) if stopping(&t.value) => protected_tasks.push(answer(arn, Protection::Off)),
                Some(_) => {
                    let p = protection::load(tx, &arn)?.at(now);
                    protected_tasks.push(answer(arn, p));
                }
            }
        }
        Ok(GetTaskProtectionResponse {
            protected_tasks: Some(protected_tasks),
            failures: Some(failures),
        })
    })
}

//! The instance lifecycle in the control plane: maximum lifetime, image
//! rollouts, repairs, spot interruptions and user drains, over
//! [`berth_scheduler::lifecycle`]'s decisions.
//!
//! A planned drain (lifetime, image) is prepared first: replacement
//! capacity for the instance's service tasks is launched and told to pull
//! their images, and the drain begins once it has joined or after
//! [`LifecycleConfig::prepare_timeout`] ([`Preparing`]).
//! A drain sets the container instance DRAINING and records why in the
//! instance's record ([`InstanceRecord::drain`]). Then the other
//! reconcilers do the work: services replace their tasks there start before
//! stop within their percentages, daemons stop last, placement sends nothing
//! there and provisioning launches the replacement capacity. A drained
//! instance (no task left) is deregistered and terminated, unless the user
//! drained it; at the hard deadline whatever still runs is stopped with
//! `TerminationNotice` and the instance is terminated.
//!
//! Settings: the server's [`LifecycleConfig`], overridden per capacity
//! provider by the tags `berth:drain-age`, `berth:max-lifetime` (durations
//! such as `14d`, `36h`, `90m`, `30s`) and `berth:maintenance-window`
//! (see [`berth_scheduler::lifecycle::Window::parse`]). The fleet's OS image
//! version is the store's meta key [`IMAGE_VERSION_KEY`]; each instance
//! carries the version it was launched with as attribute
//! `berth:image-version`.

use crate::agents::InstanceRecord;
use crate::Ctx;
use berth_model::ecs::*;
use berth_model::EcsError;
use berth_scheduler::lifecycle::{Policy, Window, DEFAULT_DRAIN_AGE, DEFAULT_MAX_LIFETIME};
use berth_store::Tx;
use serde::{Deserialize, Serialize};

pub use berth_scheduler::lifecycle::DrainKind;

pub const DRAIN_AGE_TAG: &str = "berth:drain-age";
pub const MAX_LIFETIME_TAG: &str = "berth:max-lifetime";
pub const WINDOW_TAG: &str = "berth:maintenance-window";
pub const IMAGE_VERSION_ATTRIBUTE: &str = "berth:image-version";
pub const IMAGE_VERSION_KEY: &str = "fleet/image-version";
/// The image version of a fleet nobody published one for.
pub const DEFAULT_IMAGE_VERSION: &str = "1";
/// A spot interruption notice gives this long before the capacity goes.
pub const SPOT_NOTICE: f64 = 120.0;
/// How long a planned drain waits for its replacement capacity at most.
pub const DEFAULT_PREPARE_TIMEOUT: f64 = 600.0;

/// Replacement capacity launched ahead of a planned drain (lifetime or
/// image): the instance stays ACTIVE, counted against the disruption budget,
/// until every replacement has joined (and been told to pull the images of
/// the tasks that will move), or until the prepare timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preparing {
    pub kind: DrainKind,
    pub since: f64,
    /// The instances launched for it.
    pub replacements: Vec<String>,
}

/// The server's lifecycle settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleConfig {
    /// Seconds from launch when an instance starts draining.
    pub drain_age: f64,
    /// Seconds from launch when an instance is terminated.
    pub max_lifetime: f64,
    /// An instance whose agent has been away this long is presumed lost.
    pub agent_timeout: f64,
    /// The longest a planned drain (lifetime, image) waits for the
    /// replacement capacity launched ahead of it to join; 0 drains at once
    /// and leaves the replacement to provisioning.
    pub prepare_timeout: f64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            drain_age: DEFAULT_DRAIN_AGE,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            agent_timeout: 600.0,
            prepare_timeout: DEFAULT_PREPARE_TIMEOUT,
        }
    }
}

/// Why and since when an instance drains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainState {
    pub kind: DrainKind,
    pub since: f64,
}

/// Parses a duration: `14d`, `36h`, `90m`, `30s` or plain seconds.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let bad = || {
        format!("invalid duration '{s}': expected a number with d, h, m or s, such as 14d, 36h, 90m or 30s")
    };
    let (num, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, 's'),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    let mult = match unit {
        'd' => 86_400.0,
        'h' => 3600.0,
        'm' => 60.0,
        's' => 1.0,
        _ => return Err(bad()),
    };
    Ok(n * mult)
}

/// A capacity provider's policy: the server's settings with its tags applied.
pub fn policy_for(cp: &CapacityProvider, config: &LifecycleConfig) -> Result<Policy, String> {
    let tag = |key: &str| {
        cp.tags
            .iter()
            .flatten()
            .find(|t| t.key.as_deref() == Some(key))
            .and_then(|t| t.value.clone())
    };
    let drain_age = match tag(DRAIN_AGE_TAG) {
        Some(v) => parse_duration(&v).map_err(|e| format!("tag {DRAIN_AGE_TAG}: {e}"))?,
        None => config.drain_age,
    };
    let max_lifetime = match tag(MAX_LIFETIME_TAG) {
        Some(v) => parse_duration(&v).map_err(|e| format!("tag {MAX_LIFETIME_TAG}: {e}"))?,
        None => config.max_lifetime.max(drain_age),
    };
    if max_lifetime < drain_age {
        return Err(format!(
            "{MAX_LIFETIME_TAG} ({max_lifetime} s) is shorter than {DRAIN_AGE_TAG} ({drain_age} s)"
        ));
    }
    let mut policy = Policy::new(drain_age, max_lifetime);
    if let Some(w) = tag(WINDOW_TAG) {
        policy.window = Some(Window::parse(&w).map_err(|e| format!("tag {WINDOW_TAG}: {e}"))?);
    }
    Ok(policy)
}

/// Checks a capacity provider's lifecycle tags (for the API to refuse bad ones).
pub fn check_tags(tags: &[Tag]) -> Result<(), EcsError> {
    let cp = CapacityProvider {
        tags: Some(tags.to_vec()),
        ..Default::default()
    };
    policy_for(&cp, &LifecycleConfig::default())
        .map(|_| ())
        .map_err(|e| EcsError::invalid(format!("Invalid lifecycle tag: {e}.")))
}

/// The fleet's current OS image version.
pub fn image_version(tx: &dyn Tx) -> Result<String, EcsError> {
    Ok(tx
        .meta(IMAGE_VERSION_KEY)?
        .unwrap_or_else(|| DEFAULT_IMAGE_VERSION.to_string()))
}

/// Publishes a new OS image version: every fleet rolls to it within its
/// budgets and windows.
pub fn set_image_version(ctx: &Ctx, version: &str) -> Result<(), EcsError> {
    let v = version.trim();
    if v.is_empty()
        || v.len() > 128
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(EcsError::invalid(format!(
            "Invalid image version '{version}': use 1 to 128 letters, digits, '.', '_' or '-'."
        )));
    }
    ctx.store.write(|tx| tx.put_meta(IMAGE_VERSION_KEY, v))?;
    Ok(())
}

/// Whether an instance runs an image older than the fleet's.
pub fn outdated(r: &InstanceRecord, current: &str) -> bool {
    r.image_version.as_deref().unwrap_or(DEFAULT_IMAGE_VERSION) != current
}

/// Whether a container instance is IMPAIRED by any health check.
pub fn impaired(ci: &ContainerInstance) -> bool {
    ci.health_status
        .as_ref()
        .and_then(|h| h.overall_status)
        .is_some_and(|s| s == InstanceHealthCheckState::Impaired)
}

/// The status reason a drain shows on the container instance.
pub fn reason(kind: DrainKind) -> &'static str {
    match kind {
        DrainKind::Lifetime => {
            "Draining: the instance reached its drain age and is being replaced."
        }
        DrainKind::Image => "Draining: a newer OS image is rolling through the fleet.",
        DrainKind::Repair => {
            "Draining: a health check found the instance IMPAIRED; it is being replaced."
        }
        DrainKind::Spot => "Draining: spot interruption notice; the capacity is being taken back.",
        DrainKind::Consolidation => "Draining: its tasks move to cheaper capacity.",
        DrainKind::User => "Draining: requested with UpdateContainerInstancesState.",
    }
}

fn replace_key(cp: &str) -> String {
    format!("fleet/replace/{cp}")
}

/// Instances of `cp` launched before this time are to be replaced.
pub fn replace_before(tx: &dyn Tx, cp: &str) -> Result<Option<f64>, EcsError> {
    Ok(tx.meta(&replace_key(cp))?.and_then(|v| v.parse().ok()))
}

/// Asks for every instance of a capacity provider launched until now to be
/// replaced (within its budget and windows); returns how many there are.
pub fn replace_instances(ctx: &Ctx, cp: &str) -> Result<usize, EcsError> {
    let now = ctx.now();
    ctx.store.write(|tx| {
        if tx.capacity_provider(cp)?.is_none() {
            return Err(EcsError::invalid(format!(
                "The capacity provider '{cp}' does not exist: name one that DescribeCapacityProviders lists."
            )));
        }
        tx.put_meta(&replace_key(cp), &now.to_string())?;
        let mut n = 0;
        for c in berth_store::all(|a, l| tx.clusters(a, l))? {
            let arn = c.cluster_arn.unwrap_or_default();
            for status in ["ACTIVE", "DRAINING"] {
                for ci in berth_store::all(|a, l| tx.container_instances(&arn, Some(status), a, l))? {
                    if ci.value.capacity_provider_name.as_deref() == Some(cp) {
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    })
}

/// One instance of `berth fleet ls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetInstance {
    pub instance_id: String,
    pub container_instance_arn: String,
    pub capacity_provider: String,
    pub instance_type: String,
    pub status: String,
    pub age_seconds: f64,
    pub image_version: String,
    pub drain: Option<DrainKind>,
    /// A planned drain waiting for its replacement capacity: the kind, and
    /// the instances launched for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preparing: Option<PreparingView>,
    pub running_tasks: i32,
}

/// What `berth fleet ls` shows of a drain being prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreparingView {
    pub kind: DrainKind,
    pub seconds: f64,
    pub replacements: Vec<String>,
}

/// The live instances of a cluster, oldest first.
pub fn fleet(tx: &dyn Tx, cluster_arn: &str, now: f64) -> Result<Vec<FleetInstance>, EcsError> {
    let mut out = vec![];
    for status in ["REGISTERING", "ACTIVE", "DRAINING", "DEREGISTERING"] {
        for ci in berth_store::all(|a, l| tx.container_instances(cluster_arn, Some(status), a, l))?
        {
            let ci = ci.value;
            let Some(r) =
                crate::agents::load_record(tx, ci.ec2_instance_id.as_deref().unwrap_or(""))?
            else {
                continue;
            };
            let drain = match (r.drain, status) {
                (Some(d), "DRAINING") => Some(d.kind),
                (None, "DRAINING") => Some(DrainKind::User),
                _ => None,
            };
            out.push(FleetInstance {
                instance_id: r.instance_id.clone(),
                container_instance_arn: r.container_instance_arn.clone(),
                capacity_provider: r.capacity_provider.clone(),
                instance_type: r.instance_type.clone(),
                status: status.to_string(),
                age_seconds: (now - r.launched_at).max(0.0),
                image_version: r
                    .image_version
                    .clone()
                    .unwrap_or_else(|| DEFAULT_IMAGE_VERSION.into()),
                drain,
                preparing: r
                    .preparing
                    .as_ref()
                    .filter(|_| status == "ACTIVE")
                    .map(|p| PreparingView {
                        kind: p.kind,
                        seconds: (now - p.since).max(0.0),
                        replacements: p.replacements.clone(),
                    }),
                running_tasks: ci.running_tasks_count,
            });
        }
    }
    out.sort_by(|a, b| b.age_seconds.total_cmp(&a.age_seconds));
    Ok(out)
}

/// Records one health check's result on a container instance (keeping when
/// its status last changed) and recomputes the overall status: IMPAIRED if
/// any check is, else INSUFFICIENT_DATA or INITIALIZING if any is, else OK.
/// Returns whether anything changed.
pub fn set_health(
    ci: &mut ContainerInstance,
    check: InstanceHealthCheckType,
    status: InstanceHealthCheckState,
    reason: Option<String>,
    now: f64,
) -> bool {
    use InstanceHealthCheckState as S;
    let health = ci.health_status.get_or_insert_with(Default::default);
    let details = health.details.get_or_insert_with(Vec::new);
    let before = details.iter().find(|d| d.r#type == Some(check)).cloned();
    if before
        .as_ref()
        .is_some_and(|d| d.status == Some(status) && d.status_reason == reason)
    {
        return false;
    }
    let changed_at = match &before {
        Some(d) if d.status == Some(status) => d.last_status_change,
        _ => Some(now),
    };
    details.retain(|d| d.r#type != Some(check));
    details.push(InstanceHealthCheckResult {
        r#type: Some(check),
        status: Some(status),
        status_reason: reason,
        last_updated: Some(now),
        last_status_change: changed_at,
    });
    details.sort_by_key(|d| d.r#type.map(|t| t.as_str()));
    let worst = |s: S| details.iter().any(|d| d.status == Some(s));
    health.overall_status = Some(if worst(S::Impaired) {
        S::Impaired
    } else if worst(S::InsufficientData) {
        S::InsufficientData
    } else if worst(S::Initializing) {
        S::Initializing
    } else {
        S::Ok
    });
    true
}

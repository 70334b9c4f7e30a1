//! The scenario file: what the simulated fleet runs and what happens to it.
//!
//! ```json
//! {"duration": "60d", "region": "us-east-1",
//!  "capacityProvider": {"infrastructureRoleArn": "…", "instanceLaunchTemplate": {…}},
//!  "tags": {"berth:drain-age": "14d"},
//!  "bootDelay": "60s", "seed": 7, "agentTimeout": "10m",
//!  "services": [{"name": "web", "cpu": 512, "memory": 1024, "desiredCount": 40,
//!                "minimumHealthyPercent": 100, "maximumPercent": 200}],
//!  "standaloneTasks": [{"name": "batch", "cpu": 1024, "memory": 2048, "count": 5, "runFor": "30d"}],
//!  "events": [{"at": "3d", "kind": "scale", "service": "web", "desiredCount": 80},
//!             {"at": "10d", "kind": "set-image", "version": "2"},
//!             {"at": "12d", "kind": "instance-failure", "count": 2},
//!             {"at": "20d", "kind": "spot-interruption", "count": 1},
//!             {"at": "25d", "kind": "agent-disconnect", "count": 1, "for": "10m"}]}
//! ```
//!
//! * `duration` is required; durations are `14d`, `36h`, `90m`, `30s` or
//!   plain seconds ([`berth_control::lifecycle::parse_duration`]).
//! * `capacityProvider` is CreateCapacityProvider's `managedInstancesProvider`
//!   shape, checked by the real operation; without it, a provider of 2 to 8
//!   vCPUs and at least 4 GiB in one subnet. `tags` become the capacity
//!   provider's tags (the lifecycle's `berth:drain-age`,
//!   `berth:max-lifetime`, `berth:maintenance-window`).
//! * Optional: `region` (`us-east-1`), `bootDelay` (60 s: launch to the
//!   agent's hello), `seed` (0: which instances events hit), `agentTimeout`
//!   (10 m: an agent away this long is presumed lost).
//! * A service's `minimumHealthyPercent` defaults to 100 and
//!   `maximumPercent` to 200; a standalone task's `count` to 1, its `at` to
//!   0 and without `runFor` it runs until the end.
//!
//! Every error names the field it is about (`services[1].cpu: …`).

use berth_control::lifecycle::parse_duration;
use serde_json::{Map, Value};
use std::fmt;

/// A scenario that cannot be simulated: the message names the field.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioError(pub String);

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

fn bad(msg: impl Into<String>) -> ScenarioError {
    ScenarioError(msg.into())
}

/// The longest simulation accepted: a year.
pub const MAX_DURATION: f64 = 366.0 * 86_400.0;
/// The default boot delay: 60 s from launch to the agent's hello.
pub const DEFAULT_BOOT_DELAY: f64 = 60.0;
/// The default agent timeout (berth's lifecycle default).
pub const DEFAULT_AGENT_TIMEOUT: f64 = 600.0;
/// Most tasks a scenario may ask for at once (services and standalone).
pub const MAX_TASKS: u64 = 200_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Seconds of virtual time.
    pub duration: f64,
    pub region: String,
    /// CreateCapacityProvider's `managedInstancesProvider`.
    pub capacity_provider: Value,
    /// The capacity provider's tags, in order.
    pub tags: Vec<(String, String)>,
    pub boot_delay: f64,
    pub seed: u64,
    pub agent_timeout: f64,
    pub services: Vec<ServiceSpec>,
    pub standalone: Vec<StandaloneSpec>,
    /// In time order (stable for equal times).
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub cpu: u32,
    pub memory: u32,
    pub desired_count: u32,
    pub minimum_healthy_percent: u32,
    pub maximum_percent: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StandaloneSpec {
    pub name: String,
    pub cpu: u32,
    pub memory: u32,
    pub count: u32,
    /// Seconds from the start of the simulation when RunTask is called.
    pub at: f64,
    /// Seconds a task runs before its essential container exits 0.
    pub run_for: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds from the start.
    pub at: f64,
    pub kind: EventKind,
    /// Where it came from, for messages: `events[3]`.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// UpdateService desiredCount.
    Scale { service: String, desired_count: u32 },
    /// A new OS image version for the fleet.
    SetImage { version: String },
    /// Instances die: agents silent, the provider terminates them.
    InstanceFailure { count: u32 },
    /// Spot interruption notices.
    SpotInterruption { count: u32 },
    /// Agents lose their connection for a while.
    AgentDisconnect { count: u32, for_secs: f64 },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Scale { .. } => "scale",
            EventKind::SetImage { .. } => "set-image",
            EventKind::InstanceFailure { .. } => "instance-failure",
            EventKind::SpotInterruption { .. } => "spot-interruption",
            EventKind::AgentDisconnect { .. } => "agent-disconnect",
        }
    }
}

/// The capacity provider used when the scenario gives none.
pub fn default_capacity_provider() -> Value {
    serde_json::json!({
        "infrastructureRoleArn": "arn:aws:iam::123456789012:role/ecsInfrastructureRole",
        "instanceLaunchTemplate": {
            "ec2InstanceProfileArn": "arn:aws:iam::123456789012:instance-profile/ecsInstanceProfile",
            "networkConfiguration": {"subnets": ["subnet-0123456789abcdef0"]},
            "instanceRequirements": {"vCpuCount": {"min": 2, "max": 8}, "memoryMiB": {"min": 4096}}
        }
    })
}

const ROOT_FIELDS: &[&str] = &[
    "duration",
    "region",
    "capacityProvider",
    "tags",
    "bootDelay",
    "seed",
    "agentTimeout",
    "services",
    "standaloneTasks",
    "events",
];

fn check_fields(
    obj: &Map<String, Value>,
    path: &str,
    allowed: &[&str],
) -> Result<(), ScenarioError> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            return Err(bad(format!(
                "{at}: unknown field; expected one of {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ScenarioError> {
    v.as_object()
        .ok_or_else(|| bad(format!("{path}: expected an object")))
}

fn duration_of(v: &Value, path: &str) -> Result<f64, ScenarioError> {
    let secs = match v {
        Value::String(s) => parse_duration(s).map_err(|e| bad(format!("{path}: {e}")))?,
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => x,
            _ => {
                return Err(bad(format!(
                    "{path}: expected a duration such as 14d, 36h, 90m or 30s"
                )))
            }
        },
        _ => {
            return Err(bad(format!(
                "{path}: expected a duration such as 14d, 36h, 90m or 30s"
            )))
        }
    };
    if secs > MAX_DURATION {
        return Err(bad(format!("{path}: at most 366d")));
    }
    // Milliseconds, as the clock keeps them.
    Ok((secs * 1000.0).round() / 1000.0)
}

fn uint(v: &Value, path: &str, min: u64, max: u64) -> Result<u64, ScenarioError> {
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad(format!(
            "{path}: expected a whole number from {min} to {max}"
        ))),
    }
}

fn string(v: &Value, path: &str) -> Result<String, ScenarioError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| bad(format!("{path}: expected a string")))
}

fn name_of(v: Option<&Value>, path: &str) -> Result<String, ScenarioError> {
    let Some(v) = v else {
        return Err(bad(format!("{path}: required")));
    };
    let s = string(v, path)?;
    if s.is_empty()
        || s.len() > 255
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad(format!(
            "{path}: '{s}' is not a valid name: use 1 to 255 letters, digits, '-' or '_'"
        )));
    }
    Ok(s)
}

fn required<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a Value, ScenarioError> {
    obj.get(key)
        .ok_or_else(|| bad(format!("{path}.{key}: required")))
}

impl Scenario {
    /// Parses a scenario from JSON text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        Scenario::from_value(&v)
    }

    /// Parses a scenario from a JSON value.
    pub fn from_value(v: &Value) -> Result<Scenario, ScenarioError> {
        let root = v
            .as_object()
            .ok_or_else(|| bad("the scenario must be a JSON object"))?;
        check_fields(root, "", ROOT_FIELDS)?;
        let duration = duration_of(
            root.get("duration")
                .ok_or_else(|| bad("duration: required (such as \"60d\")"))?,
            "duration",
        )?;
        if duration <= 0.0 {
            return Err(bad("duration: must be more than 0"));
        }
        let region = match root.get("region") {
            None => "us-east-1".to_string(),
            Some(r) => {
                let r = string(r, "region")?;
                let catalog = berth_catalog::Catalog::embedded();
                if !catalog.has_region(&r) {
                    return Err(bad(format!("region: '{r}' is not in berth's catalog")));
                }
                r
            }
        };
        let capacity_provider = match root.get("capacityProvider") {
            None => default_capacity_provider(),
            Some(cp) => {
                object(cp, "capacityProvider")?;
                cp.clone()
            }
        };
        let mut tags = vec![];
        if let Some(t) = root.get("tags") {
            for (k, v) in object(t, "tags")? {
                let value = string(v, &format!("tags.{k}"))?;
                tags.push((k.clone(), value));
            }
        }
        let boot_delay = match root.get("bootDelay") {
            None => DEFAULT_BOOT_DELAY,
            Some(v) => duration_of(v, "bootDelay")?,
        };
        let seed = match root.get("seed") {
            None => 0,
            Some(v) => uint(v, "seed", 0, u64::MAX)?,
        };
        let agent_timeout = match root.get("agentTimeout") {
            None => DEFAULT_AGENT_TIMEOUT,
            Some(v) => duration_of(v, "agentTimeout")?,
        };
        if agent_timeout < 1.0 {
            return Err(bad("agentTimeout: at least 1s"));
        }
        let mut names: Vec<String> = vec![];
        let mut total: u64 = 0;
        let mut services = vec![];
        if let Some(list) = root.get("services") {
            let list = list
                .as_array()
                .ok_or_else(|| bad("services: expected a list"))?;
            for (i, s) in list.iter().enumerate() {
                let path = format!("services[{i}]");
                let o = object(s, &path)?;
                check_fields(
                    o,
                    &path,
                    &[
                        "name",
                        "cpu",
                        "memory",
                        "desiredCount",
                        "minimumHealthyPercent",
                        "maximumPercent",
                    ],
                )?;
                let name = name_of(o.get("name"), &format!("{path}.name"))?;
                if names.contains(&name) {
                    return Err(bad(format!(
                        "{path}.name: '{name}' is used twice (services and standalone tasks need distinct names)"
                    )));
                }
                names.push(name.clone());
                let cpu = uint(
                    required(o, "cpu", &path)?,
                    &format!("{path}.cpu"),
                    1,
                    196_608,
                )? as u32;
                let memory = uint(
                    required(o, "memory", &path)?,
                    &format!("{path}.memory"),
                    1,
                    4_194_304,
                )? as u32;
                let desired_count = uint(
                    required(o, "desiredCount", &path)?,
                    &format!("{path}.desiredCount"),
                    0,
                    MAX_TASKS,
                )? as u32;
                total += u64::from(desired_count);
                let minimum_healthy_percent = match o.get("minimumHealthyPercent") {
                    None => 100,
                    Some(v) => uint(v, &format!("{path}.minimumHealthyPercent"), 0, 100)? as u32,
                };
                let maximum_percent = match o.get("maximumPercent") {
                    None => 200,
                    Some(v) => uint(v, &format!("{path}.maximumPercent"), 100, 200)? as u32,
                };
                services.push(ServiceSpec {
                    name,
                    cpu,
                    memory,
                    desired_count,
                    minimum_healthy_percent,
                    maximum_percent,
                });
            }
        }
        let mut standalone = vec![];
        if let Some(list) = root.get("standaloneTasks") {
            let list = list
                .as_array()
                .ok_or_else(|| bad("standaloneTasks: expected a list"))?;
            for (i, s) in list.iter().enumerate() {
                let path = format!("standaloneTasks[{i}]");
                let o = object(s, &path)?;
                check_fields(
                    o,
                    &path,
                    &["name", "cpu", "memory", "count", "at", "runFor"],
                )?;
                let name = name_of(o.get("name"), &format!("{path}.name"))?;
                if names.contains(&name) {
                    return Err(bad(format!(
                        "{path}.name: '{name}' is used twice (services and standalone tasks need distinct names)"
                    )));
                }
                names.push(name.clone());
                let cpu = uint(
                    required(o, "cpu", &path)?,
                    &format!("{path}.cpu"),
                    1,
                    196_608,
                )? as u32;
                let memory = uint(
                    required(o, "memory", &path)?,
                    &format!("{path}.memory"),
                    1,
                    4_194_304,
                )? as u32;
                let count = match o.get("count") {
                    None => 1,
                    Some(v) => uint(v, &format!("{path}.count"), 1, MAX_TASKS)? as u32,
                };
                total += u64::from(count);
                let at = match o.get("at") {
                    None => 0.0,
                    Some(v) => duration_of(v, &format!("{path}.at"))?,
                };
                if at > duration {
                    return Err(bad(format!("{path}.at: after the end of the simulation")));
                }
                let run_for = match o.get("runFor") {
                    None => None,
                    Some(v) => {
                        let d = duration_of(v, &format!("{path}.runFor"))?;
                        if d < 1.0 {
                            return Err(bad(format!("{path}.runFor: at least 1s")));
                        }
                        Some(d)
                    }
                };
                standalone.push(StandaloneSpec {
                    name,
                    cpu,
                    memory,
                    count,
                    at,
                    run_for,
                });
            }
        }
        let mut events = vec![];
        if let Some(list) = root.get("events") {
            let list = list
                .as_array()
                .ok_or_else(|| bad("events: expected a list"))?;
            for (i, e) in list.iter().enumerate() {
                let path = format!("events[{i}]");
                let o = object(e, &path)?;
                let at = duration_of(required(o, "at", &path)?, &format!("{path}.at"))?;
                if at > duration {
                    return Err(bad(format!("{path}.at: after the end of the simulation")));
                }
                let kind = string(required(o, "kind", &path)?, &format!("{path}.kind"))?;
                let count = |o: &Map<String, Value>| -> Result<u32, ScenarioError> {
                    Ok(uint(
                        required(o, "count", &path)?,
                        &format!("{path}.count"),
                        1,
                        100_000,
                    )? as u32)
                };
                let kind = match kind.as_str() {
                    "scale" => {
                        check_fields(o, &path, &["at", "kind", "service", "desiredCount"])?;
                        let service = string(required(o, "service", &path)?, &format!("{path}.service"))?;
                        if !services.iter().any(|s| s.name == service) {
                            return Err(bad(format!(
                                "{path}.service: no service '{service}' in services"
                            )));
                        }
                        let desired_count = uint(
                            required(o, "desiredCount", &path)?,
                            &format!("{path}.desiredCount"),
                            0,
                            MAX_TASKS,
                        )? as u32;
                        total += u64::from(desired_count);
                        EventKind::Scale {
                            service,
                            desired_count,
                        }
                    }
                    "set-image" => {
                        check_fields(o, &path, &["at", "kind", "version"])?;
                        let version = match required(o, "version", &path)? {
                            Value::Number(n) => n.to_string(),
                            other => string(other, &format!("{path}.version"))?,
                        };
                        let ok = !version.is_empty()
                            && version.len() <= 128
                            && version
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                        if !ok {
                            return Err(bad(format!(
                                "{path}.version: '{version}' is not a valid image version: use 1 to 128 letters, digits, '.', '_' or '-'"
                            )));
                        }
                        EventKind::SetImage { version }
                    }
                    "instance-failure" => {
                        check_fields(o, &path, &["at", "kind", "count"])?;
                        EventKind::InstanceFailure { count: count(o)? }
                    }
                    "spot-interruption" => {
                        check_fields(o, &path, &["at", "kind", "count"])?;
                        EventKind::SpotInterruption { count: count(o)? }
                    }
                    "agent-disconnect" => {
                        check_fields(o, &path, &["at", "kind", "count", "for"])?;
                        let for_secs =
                            duration_of(required(o, "for", &path)?, &format!("{path}.for"))?;
                        if for_secs < 1.0 {
                            return Err(bad(format!("{path}.for: at least 1s")));
                        }
                        EventKind::AgentDisconnect {
                            count: count(o)?,
                            for_secs,
                        }
                    }
                    other => {
                        return Err(bad(format!(
                            "{path}.kind: unknown kind '{other}'; expected scale, set-image, instance-failure, spot-interruption or agent-disconnect"
                        )))
                    }
                };
                events.push(Event {
                    at,
                    kind,
                    label: path,
                });
            }
        }
        if total > MAX_TASKS {
            return Err(bad(format!(
                "services, standaloneTasks, events: at most {MAX_TASKS} tasks in all"
            )));
        }
        events.sort_by(|a, b| a.at.total_cmp(&b.at));
        Ok(Scenario {
            duration,
            region,
            capacity_provider,
            tags,
            boot_delay,
            seed,
            agent_timeout,
            services,
            standalone,
            events,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        Scenario::from_value(&v).expect_err("should fail").0
    }

    #[test]
    fn the_issue_example_parses() {
        let s = Scenario::from_value(&json!({
            "duration": "60d", "region": "us-east-1",
            "tags": {"berth:drain-age": "14d"},
            "services": [{"name": "web", "cpu": 512, "memory": 1024, "desiredCount": 40,
                          "minimumHealthyPercent": 100, "maximumPercent": 200}],
            "standaloneTasks": [{"name": "batch", "cpu": 1024, "memory": 2048, "count": 5, "runFor": "30d"}],
            "events": [{"at": "3d", "kind": "scale", "service": "web", "desiredCount": 80},
                       {"at": "10d", "kind": "set-image", "version": "2"},
                       {"at": "12d", "kind": "instance-failure", "count": 2},
                       {"at": "20d", "kind": "spot-interruption", "count": 1},
                       {"at": "25d", "kind": "agent-disconnect", "count": 1, "for": "10m"}]
        }))
        .expect("parses");
        assert_eq!(s.duration, 60.0 * 86_400.0);
        assert_eq!(s.boot_delay, 60.0);
        assert_eq!(s.events.len(), 5);
        assert_eq!(
            s.events[4].kind,
            EventKind::AgentDisconnect {
                count: 1,
                for_secs: 600.0
            }
        );
        assert_eq!(s.standalone[0].run_for, Some(30.0 * 86_400.0));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err(json!({})).starts_with("duration"));
        assert!(err(json!({"duration": "5x"})).starts_with("duration:"));
        assert!(err(json!({"duration": "1d", "bogus": 1})).starts_with("bogus:"));
        let e = err(
            json!({"duration": "1d", "services": [{"name": "a", "cpu": "x", "memory": 1, "desiredCount": 1}]}),
        );
        assert!(e.starts_with("services[0].cpu:"), "{e}");
        let e = err(json!({"duration": "1d", "services": [{"name": "a", "cpu": 1, "memory": 1}]}));
        assert!(e.starts_with("services[0].desiredCount: required"), "{e}");
        let e = err(
            json!({"duration": "1d", "events": [{"at": "2d", "kind": "set-image", "version": "2"}]}),
        );
        assert!(e.starts_with("events[0].at:"), "{e}");
        let e = err(
            json!({"duration": "1d", "events": [{"at": "1h", "kind": "scale", "service": "x", "desiredCount": 1}]}),
        );
        assert!(e.starts_with("events[0].service:"), "{e}");
        let e = err(json!({"duration": "1d", "events": [{"at": "1h", "kind": "meteor"}]}));
        assert!(e.starts_with("events[0].kind:"), "{e}");
        let e = err(
            json!({"duration": "1d", "events": [{"at": "1h", "kind": "agent-disconnect", "count": 1}]}),
        );
        assert!(e.starts_with("events[0].for: required"), "{e}");
        let e = err(json!({"duration": "1d", "region": "mars-1"}));
        assert!(e.starts_with("region:"), "{e}");
    }
}

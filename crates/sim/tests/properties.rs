//! Random small scenarios under the real controllers: whatever happens, no
//! task runs twice, the disruption budget holds, no instance outlives its
//! maximum lifetime, and a service runs below its floor only right after
//! capacity was genuinely lost or the floor was raised.

use berth_sim::report::Report;
use berth_sim::{Options, Scenario, Simulation};
use proptest::prelude::*;
use serde_json::{json, Value};

fn service() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            (256u32, 512u32),
            (512, 1024),
            (1024, 2048),
            (2048, 4096),
        ]),
        1u32..10,
        prop::sample::select(vec![
            (0u32, 200u32),
            (50, 150),
            (50, 200),
            (100, 150),
            (100, 200),
        ]),
    )
        .prop_map(|((cpu, memory), desired, (min, max))| {
            json!({"cpu": cpu, "memory": memory, "desiredCount": desired,
                   "minimumHealthyPercent": min, "maximumPercent": max})
        })
}

/// (at in hours, kind) of one event; `services` names the services.
fn event(hours: u64, services: usize) -> impl Strategy<Value = Value> {
    (
        0..hours,
        0u8..6,
        0..services,
        0u32..12,
        1u32..3,
        1u64..25,
    )
        .prop_map(|(at, kind, svc, desired, count, minutes)| {
            let at = format!("{at}h");
            match kind {
                0 => json!({"at": at, "kind": "scale", "service": format!("s{svc}"), "desiredCount": desired}),
                1 => json!({"at": at, "kind": "set-image", "version": format!("v{desired}")}),
                2 => json!({"at": at, "kind": "instance-failure", "count": count}),
                3 => json!({"at": at, "kind": "spot-interruption", "count": 1}),
                _ => json!({"at": at, "kind": "agent-disconnect", "count": count, "for": format!("{minutes}m")}),
            }
        })
}

fn scenario() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(service(), 1..3),
        2u64..5,
        prop::sample::select(vec![24u64, 36, 48]),
        any::<u64>(),
        prop::option::of((1u32..4, 1u64..12)),
        prop::bool::ANY,
    )
        .prop_flat_map(|(services, days, drain_hours, seed, standalone, spot)| {
            let hours = days * 24;
            let n = services.len();
            (
                Just((services, days, drain_hours, seed, standalone, spot)),
                prop::collection::vec(event(hours, n), 0..6),
            )
        })
        .prop_map(|((services, days, drain_hours, seed, standalone, spot), events)| {
            let services: Vec<Value> = services
                .into_iter()
                .enumerate()
                .map(|(i, mut s)| {
                    s["name"] = json!(format!("s{i}"));
                    s
                })
                .collect();
            let standalone: Vec<Value> = standalone
                .into_iter()
                .map(|(count, hours)| {
                    json!({"name": "job", "cpu": 512, "memory": 1024, "count": count,
                           "runFor": format!("{hours}h")})
                })
                .collect();
            json!({
                "duration": format!("{days}d"),
                "seed": seed,
                "capacityProvider": {
                    "infrastructureRoleArn": "arn:aws:iam::123456789012:role/ecsInfrastructureRole",
                    "instanceLaunchTemplate": {
                        "ec2InstanceProfileArn": "arn:aws:iam::123456789012:instance-profile/ecsInstanceProfile",
                        "networkConfiguration": {"subnets": ["subnet-0123456789abcdef0", "subnet-0000000000000000b"]},
                        "capacityOptionType": if spot { "SPOT" } else { "ON_DEMAND" },
                        "instanceRequirements": {"vCpuCount": {"min": 2, "max": 8}, "memoryMiB": {"min": 4096}}
                    }
                },
                "tags": {"berth:drain-age": format!("{drain_hours}h"),
                         "berth:max-lifetime": format!("{}h", drain_hours + 24)},
                "services": services,
                "standaloneTasks": standalone,
                "events": events,
            })
        })
}

fn seconds(v: &Value) -> f64 {
    berth_control::lifecycle::parse_duration(v.as_str().unwrap_or("0")).unwrap_or(0.0)
}

/// When capacity was lost for good (failures, spot, an agent away past the
/// timeout) or a floor was raised (any scale: the count in force changes).
fn excuses(v: &Value, r: &Report) -> Vec<f64> {
    let timeout = r.policy.agent_timeout_seconds;
    let mut out = vec![];
    for e in v["events"].as_array().into_iter().flatten() {
        let at = seconds(&e["at"]);
        match e["kind"].as_str() {
            Some("instance-failure") | Some("spot-interruption") | Some("scale") => out.push(at),
            Some("agent-disconnect") if seconds(&e["for"]) >= timeout => out.push(at + timeout),
            _ => {}
        }
    }
    out
}

/// Whether every desired count the service has in the scenario leaves
/// room for one more task than its floor (or has no floor at all).
fn always_room(v: &Value, name: &str) -> bool {
    let Some(svc) = v["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
    else {
        return true;
    };
    let min = svc["minimumHealthyPercent"].as_u64().unwrap_or(100);
    let max = svc["maximumPercent"].as_u64().unwrap_or(200);
    let mut counts = vec![svc["desiredCount"].as_u64().unwrap_or(0)];
    for e in v["events"].as_array().into_iter().flatten() {
        if e["kind"] == "scale" && e["service"] == name {
            counts.push(e["desiredCount"].as_u64().unwrap_or(0));
        }
    }
    counts.into_iter().all(|d| {
        let floor = (d * min).div_ceil(100);
        floor == 0 || d * max / 100 > floor
    })
}

fn check(v: &Value, r: &Report) -> Result<(), TestCaseError> {
    let json = serde_json::to_string(r).unwrap_or_default();
    prop_assert_eq!(r.invariants.tasks_running_twice, 0, "{} {}", v, json);
    prop_assert_eq!(r.invariants.budget_exceeded, 0, "{} {}", v, json);
    prop_assert!(
        r.max_instance_age_seconds <= r.policy.max_lifetime_seconds + r.engine.min_step_seconds,
        "{} {}",
        v,
        json
    );
    prop_assert_eq!(r.engine.cap_steps_with_work, 0, "{} {}", v, json);
    let allowance = r.policy.agent_timeout_seconds + r.policy.boot_delay_seconds + 120.0;
    let excuses = excuses(v, r);
    let near = |t: f64| excuses.iter().any(|&e| t >= e && t <= e + allowance);
    for (name, s) in &r.services {
        if !always_room(v, name) {
            // The percentages leave no room to start a replacement before
            // stopping (ECS rounds the floor up and the ceiling down): a
            // drain goes below the floor by design.
            continue;
        }
        for b in &s.below_minimum {
            prop_assert!(
                near(b.from) && near(b.to),
                "{} below its floor without a cause: {:?}\n{}\n{}",
                name,
                b,
                v,
                json
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 16, ..ProptestConfig::default() })]

    #[test]
    fn random_scenarios_keep_the_invariants(v in scenario()) {
        let s = Scenario::from_value(&v).map_err(|e| TestCaseError::fail(format!("{e}: {v}")))?;
        let r = Simulation::new(s, Options::default())
            .and_then(|mut sim| sim.run(&mut |_| {}))
            .map_err(|e| TestCaseError::fail(format!("{e}: {v}")))?;
        check(&v, &r)?;
    }
}

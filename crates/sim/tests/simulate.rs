//! Sixty days of a fleet under the real controllers: scaling, two image
//! rollouts, instance failures, agent disconnects (shorter and longer than
//! the agent timeout) and a spot interruption, with the invariants the
//! lifecycle promises checked on the report.

use berth_sim::report::Report;
use berth_sim::{Options, Scenario, SimError, Simulation};
use serde_json::{json, Value};

const DAY: f64 = 86_400.0;

fn scenario() -> Value {
    json!({
        "duration": "60d",
        "region": "us-east-1",
        "seed": 11,
        "capacityProvider": {
            "infrastructureRoleArn": "arn:aws:iam::123456789012:role/ecsInfrastructureRole",
            "instanceLaunchTemplate": {
                "ec2InstanceProfileArn": "arn:aws:iam::123456789012:instance-profile/ecsInstanceProfile",
                "networkConfiguration": {"subnets": ["subnet-0123456789abcdef0", "subnet-0000000000000000b"]},
                "instanceRequirements": {"vCpuCount": {"min": 2, "max": 4}, "memoryMiB": {"min": 4096}}
            }
        },
        "tags": {"berth:drain-age": "14d"},
        "services": [
            {"name": "web", "cpu": 512, "memory": 1024, "desiredCount": 16,
             "minimumHealthyPercent": 100, "maximumPercent": 200},
            {"name": "api", "cpu": 1024, "memory": 2048, "desiredCount": 4,
             "minimumHealthyPercent": 50, "maximumPercent": 200}
        ],
        "standaloneTasks": [
            {"name": "batch", "cpu": 1024, "memory": 2048, "count": 2, "runFor": "2d"},
            {"name": "report", "cpu": 512, "memory": 1024, "count": 1, "at": "30d", "runFor": "6h"}
        ],
        "events": [
            {"at": "3d", "kind": "scale", "service": "web", "desiredCount": 24},
            {"at": "10d", "kind": "set-image", "version": "2"},
            {"at": "12d", "kind": "instance-failure", "count": 1},
            {"at": "20d", "kind": "spot-interruption", "count": 1},
            {"at": "25d", "kind": "agent-disconnect", "count": 1, "for": "5m"},
            {"at": "33d", "kind": "agent-disconnect", "count": 1, "for": "20m"},
            {"at": "40d", "kind": "scale", "service": "web", "desiredCount": 20},
            {"at": "45d", "kind": "set-image", "version": "3"},
            {"at": "50d", "kind": "instance-failure", "count": 2}
        ]
    })
}

fn run(v: &Value) -> Result<Report, SimError> {
    let s = Scenario::from_value(v)?;
    Simulation::new(s, Options::default())?.run(&mut |_| {})
}

/// Scenario events after which a service may run below its floor for a
/// while: capacity genuinely lost (failures, spot, an agent away past the
/// timeout) or a floor raised (scale-up).
fn excusing_events(v: &Value, report: &Report) -> Vec<f64> {
    let mut out = vec![];
    let timeout = report.policy.agent_timeout_seconds;
    for e in v["events"].as_array().into_iter().flatten() {
        let at = berth_control::lifecycle::parse_duration(e["at"].as_str().unwrap_or("0"))
            .unwrap_or(0.0);
        match e["kind"].as_str() {
            Some("instance-failure") | Some("spot-interruption") | Some("scale") => out.push(at),
            Some("agent-disconnect") => {
                let away =
                    berth_control::lifecycle::parse_duration(e["for"].as_str().unwrap_or("0"))
                        .unwrap_or(0.0);
                if away >= timeout {
                    out.push(at + timeout);
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn sixty_days_keep_every_promise() {
    let v = scenario();
    let r = run(&v).expect("the simulation runs");
    let json = serde_json::to_string_pretty(&r).unwrap_or_default();
    let policy = &r.policy;
    assert_eq!(policy.drain_age_seconds, 14.0 * DAY);
    assert_eq!(policy.max_lifetime_seconds, 21.0 * DAY);

    // No task ran on two instances at once.
    assert_eq!(r.invariants.tasks_running_twice, 0, "{json}");

    // No instance outlived its maximum lifetime (one step of slack), so
    // every instance launched before day 39 was replaced.
    assert!(r.max_instance_age_seconds > 13.0 * DAY, "{json}");
    assert!(
        r.max_instance_age_seconds <= policy.max_lifetime_seconds + r.engine.min_step_seconds,
        "{json}"
    );
    assert!(r.drains["lifetime"] > 0, "{json}");
    assert!(
        r.instances_terminated >= r.invariants.peak_instances,
        "{json}"
    );

    // The disruption budget held (spot drains are outside it).
    assert_eq!(r.invariants.budget_exceeded, 0, "{json}");
    let budget = if r.invariants.peak_instances < policy.small_fleet {
        1
    } else {
        (r.invariants.peak_instances * u64::from(policy.budget_percent) / 100).max(1)
    };
    assert!(r.max_concurrent_drains >= 1, "{json}");
    assert!(r.max_concurrent_drains <= budget, "{json}");

    // Both image rollouts finished: every instance runs version 3.
    assert!(r.drains["image"] > 0, "{json}");
    assert_eq!(r.image_versions.keys().collect::<Vec<_>>(), ["3"], "{json}");

    // Spot and repair drains happened, and tasks stopped for the reasons
    // the scenario gives them.
    assert_eq!(r.drains["spot"], 1, "{json}");
    assert!(r.drains["repair"] >= 1, "{json}");
    assert!(
        r.task_stops
            .get("ServiceSchedulerInitiated")
            .is_some_and(|n| *n > 0),
        "{json}"
    );
    assert!(
        r.task_stops.get("SpotInterruption").is_some_and(|n| *n > 0),
        "{json}"
    );
    assert_eq!(
        r.task_stops.get("EssentialContainerExited"),
        Some(&3),
        "{json}"
    );

    // Services reached their counts and stayed at their floor, except
    // right after capacity was genuinely lost or the floor was raised.
    let allowance = policy.agent_timeout_seconds + policy.boot_delay_seconds + 120.0;
    let excuses = excusing_events(&v, &r);
    for (name, s) in &r.services {
        assert!(
            s.reached_desired_at.is_some_and(|t| t < 600.0),
            "{name}: {json}"
        );
        assert!(
            s.seconds_below_minimum <= excuses.len() as f64 * allowance,
            "{name}: {json}"
        );
        assert_eq!(s.below_minimum.len(), s.below_minimum_intervals, "{name}");
        for b in &s.below_minimum {
            let explained = excuses
                .iter()
                .any(|&e| b.from >= e && b.to <= e + allowance);
            assert!(
                explained,
                "{name} below its floor without a cause: {b:?}\n{json}"
            );
        }
    }
    assert_eq!(r.services["web"].desired, 20);
    assert!(r.services["web"].max_running >= 24);

    // The cap never had to notice anything: the controllers' next_tick
    // and the engine's timers covered every due time.
    assert_eq!(r.engine.cap_steps_with_work, 0, "{json}");
    assert!(r.cost.total_usd > 0.0);
    assert!((r.cost.total_usd - r.cost.instance_usd - r.cost.fee_usd).abs() < 0.02);
    // The same metered figures as `berth cost`: every group's share plus
    // idle capacity is the bill (each rounded to the cent), and Fargate
    // prices the same tasks.
    let shares: f64 = r.cost.services.values().map(|s| s.total_usd).sum();
    let groups = r.cost.services.len() as f64;
    assert!(
        (shares + r.cost.idle_usd - r.cost.total_usd).abs() <= 0.01 * (groups + 2.0),
        "{json}"
    );
    assert!(r.cost.services["service:web"].total_usd > 0.0, "{json}");
    assert!(r.cost.fargate_usd > 0.0);
    assert!(r.cost.instance_seconds > 0);
}

#[test]
fn bad_scenarios_name_the_field() {
    let mut v = scenario();
    v["services"][0]["cpu"] = json!(-1);
    match run(&v) {
        Err(SimError::Scenario(e)) => assert!(e.0.starts_with("services[0].cpu"), "{e}"),
        other => panic!("expected a scenario error, got {other:?}"),
    }
    let mut v = scenario();
    v["tags"] = json!({"berth:drain-age": "soon"});
    match run(&v) {
        Err(SimError::Scenario(e)) => assert!(e.0.starts_with("tags:"), "{e}"),
        other => panic!("expected a scenario error, got {other:?}"),
    }
    let mut v = scenario();
    v["capacityProvider"]["instanceLaunchTemplate"]["instanceRequirements"] =
        json!({"vCpuCount": {"min": 4096}, "memoryMiB": {"min": 1}});
    match run(&v) {
        Err(SimError::Scenario(e)) => assert!(e.0.starts_with("capacityProvider:"), "{e}"),
        other => panic!("expected a scenario error, got {other:?}"),
    }
}

#[test]
fn a_service_no_instance_type_can_hold_never_reaches_its_count() {
    let mut v = scenario();
    v["duration"] = json!("1d");
    v["events"] = json!([]);
    v["standaloneTasks"] = json!([]);
    v["services"][0]["memory"] = json!(4_000_000);
    v["services"][0]["cpu"] = json!(100_000);
    let r = run(&v).expect("the simulation runs");
    let web = &r.services["web"];
    assert_eq!(web.reached_desired_at, None);
    assert_eq!(web.min_running, None);
    assert_eq!(web.max_running, 0);
    assert_eq!(web.seconds_below_minimum, 0.0);
    assert!(r.services["api"].reached_desired_at.is_some());
}

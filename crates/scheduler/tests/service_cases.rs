//! Scenarios of the service scheduler: scale out, rolling updates under
//! 100/200 and 50/100, scale to zero, unhealthy replacement, protection,
//! the circuit breaker, the ECS rounding examples, determinism and speed.
#![allow(clippy::unwrap_used)]

#[path = "service_sim.rs"]
mod sim;

use std::time::Instant;

use berth_scheduler::service::{
    decide, failure_threshold, limits, CircuitBreaker, Deployment, DesiredStatus, Event, Health,
    Limits, Rollout, Service, StopReason, Task, TaskStatus, STOP_CODE,
};
use sim::Fleet;

const NO_BREAKER: CircuitBreaker = CircuitBreaker {
    enable: false,
    rollback: false,
};

/// A fleet steady with `desired` tasks of `td`.
fn steady(desired: u32, min: u32, max: u32, breaker: CircuitBreaker, td: &str) -> Fleet {
    let mut f = Fleet::new(desired, min, max, breaker, td);
    assert!(f.run_until_steady(50), "never steady");
    f
}

fn on_primary(f: &Fleet) -> usize {
    let p = f.primary().id.clone();
    f.live().filter(|t| t.deployment == p).count()
}

#[test]
fn ecs_rounding_examples() {
    // "minimum healthy percent is 50 and the desired task count is four,
    // then the scheduler can stop two existing tasks"
    assert_eq!(
        limits(4, 50, 200),
        Limits {
            floor: 2,
            ceiling: 8
        }
    );
    // "75% and the desired task count is two ... can't stop any tasks"
    assert_eq!(limits(2, 75, 200).floor, 2);
    // rounded down
    assert_eq!(limits(3, 0, 150).ceiling, 4);
    // 100/100 would never progress: one at a time
    assert_eq!(
        limits(3, 100, 100),
        Limits {
            floor: 2,
            ceiling: 3
        }
    );
    // max under 100 still lets the desired count run
    assert_eq!(limits(4, 0, 50).ceiling, 4);
    assert_eq!(
        limits(0, 100, 200),
        Limits {
            floor: 0,
            ceiling: 0
        }
    );
}

#[test]
fn breaker_threshold() {
    assert_eq!(failure_threshold(0), 3);
    assert_eq!(failure_threshold(1), 3);
    assert_eq!(failure_threshold(7), 4);
    assert_eq!(failure_threshold(10), 5);
    assert_eq!(failure_threshold(400), 200);
    assert_eq!(failure_threshold(10_000), 200);
}

#[test]
fn scale_out_3_to_5() {
    let mut f = steady(3, 100, 200, NO_BREAKER, "web:1");
    f.svc.desired_count = 5;
    let d = f.step();
    assert_eq!(d.start.len(), 1);
    assert_eq!(d.start[0].count, 2);
    assert_eq!(d.start[0].deployment, f.primary().id);
    assert!(d.stop.is_empty());
    assert!(!d.steady);
    assert!(d
        .events
        .iter()
        .any(|e| e.to_string() == "(service web) has started 2 tasks (deployment ecs-svc/1)."));
    assert!(f.run_until_steady(20));
    assert_eq!(on_primary(&f), 5);
    // the two new tasks went to the zones without one
    assert!(f.per_zone().values().all(|&n| n == 1 || n == 2));
}

fn roll(min: u32, max: u32) -> Fleet {
    let mut f = steady(4, min, max, NO_BREAKER, "web:1");
    f.deploy("web:2");
    let lim = limits(4, min, max);
    for _ in 0..60 {
        f.tick();
        assert!(f.not_stopped() <= lim.ceiling as usize);
        if f.decisions.last().unwrap().steady {
            break;
        }
    }
    assert!(f.decisions.last().unwrap().steady, "never steady");
    assert_eq!(on_primary(&f), 4);
    assert_eq!(f.svc.deployments.len(), 1, "old deployment retired");
    assert_eq!(f.primary().task_definition, "web:2");
    assert_eq!(f.primary().rollout, Rollout::Completed);
    f
}

#[test]
fn rolling_update_min_100_max_200() {
    let mut f = steady(4, 100, 200, NO_BREAKER, "web:1");
    f.deploy("web:2");
    let d = f.step();
    // start before stop: four new tasks, nothing stopped yet
    assert_eq!(d.start[0].count, 4);
    assert!(d.stop.is_empty());
    let f = roll(100, 200);
    // healthy never dropped under 4 once there
    assert!(f.stopped.iter().all(|(_, r)| *r == StopReason::Replaced));
}

#[test]
fn rolling_update_min_50_max_100() {
    let mut f = steady(4, 50, 100, NO_BREAKER, "web:1");
    f.deploy("web:2");
    let d = f.step();
    // no room to start: stop two old tasks first
    assert!(d.start.is_empty());
    assert_eq!(d.stop.len(), 2);
    assert!(d.stop.iter().all(|s| s.reason == StopReason::Replaced
        && s.stop_code() == STOP_CODE
        && s.stopped_reason == "Scaling activity initiated by (deployment ecs-svc/2)"));
    let d = f.tick();
    assert_eq!(d.start[0].count, 2);
    roll(50, 100);
}

#[test]
fn rolling_update_min_100_max_100_one_at_a_time() {
    roll(100, 100);
}

#[test]
fn scale_to_zero_stops_everything() {
    let mut f = steady(5, 100, 200, NO_BREAKER, "web:1");
    f.svc.desired_count = 0;
    let d = f.step();
    assert_eq!(d.stop.len(), 5);
    assert!(d.start.is_empty());
    assert!(f.run_until_steady(5));
    assert_eq!(f.live().count(), 0);
}

#[test]
fn unhealthy_replaced_after_grace_start_first() {
    let mut f = steady(3, 100, 200, NO_BREAKER, "web:1");
    f.svc.health_check_grace_period_secs = 30;
    f.svc.tasks[0].health = Health::Unhealthy;
    f.svc.tasks[0].started_at = Some(f.svc.now);
    // within the grace period: nothing to do
    let d = decide(&f.svc).unwrap();
    assert!(d.start.is_empty() && d.stop.is_empty());
    f.svc.tasks[0].started_at = Some(f.svc.now - 30);
    let d = f.step();
    assert_eq!(d.start[0].count, 1, "replacement first");
    assert!(d.stop.is_empty(), "the unhealthy task waits for it");
    assert!(f.run_until_steady(20));
    assert!(f.stopped.iter().any(|(_, r)| *r == StopReason::Unhealthy));
    assert!(f
        .decisions
        .iter()
        .flat_map(|d| &d.events)
        .any(|e| matches!(e, Event::FailedHealthChecks { .. })));
}

#[test]
fn unhealthy_stopped_first_when_ceiling_blocks() {
    let mut f = steady(2, 50, 100, NO_BREAKER, "web:1");
    f.svc.tasks[0].health = Health::Unhealthy;
    let d = f.step();
    assert!(d.start.is_empty());
    assert_eq!(d.stop.len(), 1);
    assert_eq!(d.stop[0].reason, StopReason::Unhealthy);
    assert!(f.run_until_steady(20));
}

#[test]
fn protected_tasks_block_scale_in() {
    let mut f = steady(3, 100, 200, NO_BREAKER, "web:1");
    for t in &mut f.svc.tasks {
        t.protected = true;
    }
    f.svc.desired_count = 1;
    let d = f.step();
    assert!(d.stop.is_empty());
    assert!(!d.steady);
    assert!(d.events.iter().any(|e| e.to_string()
        == "(service web) was unable to scale in due to (reason: 2 tasks under protection)."));
    // one unprotected: it goes, the protected stay
    f.svc.tasks[1].protected = false;
    let d = f.step();
    assert_eq!(d.stop.len(), 1);
    assert_eq!(d.stop[0].task, f.svc.tasks[1].id);
}

#[test]
fn breaker_rolls_back() {
    let breaker = CircuitBreaker {
        enable: true,
        rollback: true,
    };
    let mut f = steady(4, 100, 200, breaker, "web:1");
    f.failing.insert("web:2".into());
    f.deploy("web:2");
    assert!(f.run_until_steady(60));
    assert_eq!(f.rollbacks, vec![("ecs-svc/2".into(), "ecs-svc/1".into())]);
    // all four first tasks fail in the same tick: the count jumps past 3
    assert_eq!(f.tripped.len(), 1);
    assert!(f.tripped[0].1 >= failure_threshold(4));
    assert_eq!(f.primary().task_definition, "web:1");
    assert_eq!(on_primary(&f), 4);
}

#[test]
fn breaker_without_rollback_holds() {
    let breaker = CircuitBreaker {
        enable: true,
        rollback: false,
    };
    let mut f = steady(4, 100, 200, breaker, "web:1");
    f.failing.insert("web:2".into());
    f.deploy("web:2");
    for _ in 0..30 {
        f.tick();
    }
    assert!(matches!(f.primary().rollout, Rollout::Failed { .. }));
    assert!(f.rollbacks.is_empty());
    // the old tasks keep serving; nothing more is launched
    assert_eq!(f.healthy(), 4);
    assert!(f.tick().start.is_empty());
}

fn big_service(n: usize) -> Service {
    let zones = sim::zones();
    let tasks = (0..n)
        .map(|i| Task {
            id: format!("task-{i:05}"),
            deployment: if i % 3 == 0 { "d2" } else { "d1" }.into(),
            last_status: TaskStatus::Running,
            desired_status: DesiredStatus::Running,
            health: if i % 17 == 0 {
                Health::Unhealthy
            } else {
                Health::Healthy
            },
            started_at: Some(i as u64),
            zone: zones[i % 3].clone(),
            protected: i % 11 == 0,
        })
        .collect();
    Service {
        name: "big".into(),
        desired_count: (n / 2) as u32,
        minimum_healthy_percent: 50,
        maximum_percent: 200,
        circuit_breaker: NO_BREAKER,
        health_check_grace_period_secs: 0,
        now: 100_000,
        deployments: vec![
            Deployment {
                id: "d2".into(),
                task_definition: "big:2".into(),
                rollout: Rollout::InProgress,
                failed_tasks: 0,
            },
            Deployment {
                id: "d1".into(),
                task_definition: "big:1".into(),
                rollout: Rollout::Completed,
                failed_tasks: 0,
            },
        ],
        tasks,
        zones,
    }
}

#[test]
fn deterministic_under_input_order() {
    let s = big_service(300);
    let a = decide(&s).unwrap();
    let mut r = s.clone();
    r.tasks.reverse();
    assert_eq!(a, decide(&r).unwrap());
    assert!(!a.stop.is_empty());
}

/// A loose guard against a gross regression; the figures are `berth bench services`'.
#[test]
fn thousand_tasks_is_fast() {
    let s = big_service(1_000);
    let t = Instant::now();
    let mut stops = 0;
    for _ in 0..10 {
        stops += decide(&s).unwrap().stop.len();
    }
    let per = t.elapsed() / 10;
    eprintln!("1,000-task decision: {per:?} (this build)");
    assert!(stops > 0);
    assert!(per.as_millis() < 50, "one decision took {per:?}");
}

#[test]
fn tasks_of_unknown_deployments_are_replaced() {
    let mut f = steady(2, 100, 200, NO_BREAKER, "web:1");
    for t in &mut f.svc.tasks {
        t.deployment = "ecs-svc/gone".into();
    }
    let d = f.step();
    assert_eq!(d.start[0].count, 2);
    assert!(d.stop.is_empty(), "start before stop");
    assert!(f.run_until_steady(20));
    assert!(f.live().all(|t| t.deployment == "ecs-svc/1"));
}

#[test]
fn scale_to_zero_under_failed_deployment() {
    let breaker = CircuitBreaker {
        enable: true,
        rollback: false,
    };
    let mut f = steady(3, 100, 200, breaker, "web:1");
    f.failing.insert("web:2".into());
    f.deploy("web:2");
    for _ in 0..10 {
        f.tick();
    }
    assert!(matches!(f.primary().rollout, Rollout::Failed { .. }));
    f.svc.desired_count = 0;
    let d = f.step();
    assert_eq!(d.stop.len(), 3);
    for _ in 0..3 {
        f.tick();
    }
    assert_eq!(f.live().count(), 0);
}

#[test]
fn completion_is_reported_once_and_old_deployment_retired() {
    let mut f = steady(2, 100, 200, NO_BREAKER, "web:1");
    f.deploy("web:2");
    assert!(f.run_until_steady(30));
    let completed: Vec<String> = f
        .decisions
        .iter()
        .flat_map(|d| &d.events)
        .filter(|e| matches!(e, Event::DeploymentCompleted { .. }))
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        completed,
        vec![
            "(service web) (deployment ecs-svc/1) deployment completed.".to_string(),
            "(service web) (deployment ecs-svc/2) deployment completed.".to_string(),
        ]
    );
    assert!(f
        .decisions
        .iter()
        .any(|d| d.retire == vec!["ecs-svc/1".to_string()]));
    assert_eq!(
        f.decisions
            .last()
            .unwrap()
            .events
            .last()
            .unwrap()
            .to_string(),
        "(service web) has reached a steady state."
    );
}

#[test]
fn a_stop_event_names_ten_tasks_by_id_and_counts_the_rest() {
    let one = Event::Stopped {
        service: "web".into(),
        tasks: vec!["arn:aws:ecs:us-east-1:123456789012:task/c/abc".into()],
    };
    assert_eq!(
        one.to_string(),
        "(service web) has stopped 1 running tasks: (task abc)."
    );
    let many = Event::Stopped {
        service: "web".into(),
        tasks: (0..800)
            .map(|i| format!("arn:aws:ecs:us-east-1:123456789012:task/c/{i:032x}"))
            .collect(),
    };
    let text = many.to_string();
    assert!(
        text.starts_with("(service web) has stopped 800 running tasks: (task 00000000000000000000000000000000) (task 00000000000000000000000000000001)"),
        "{text}"
    );
    assert!(
        text.ends_with(" (task 00000000000000000000000000000009) and 790 more."),
        "{text}"
    );
    assert_eq!(text.matches("(task ").count(), 10);
    assert!(text.len() < 500, "{} characters", text.len());
}

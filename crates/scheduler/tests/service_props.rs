//! Property tests of the service scheduler on the simulated fleet: random
//! sequences of scaling, deployments, task kills and unhealthy tasks never
//! break the floor or the ceiling (checked on every decision by
//! `Fleet::check`), and converge to steady on the PRIMARY once nothing
//! fails; a revision whose tasks never start trips the breaker (and rolls
//! back when asked); scale-in keeps zones within one task of each other and
//! never stops a protected task.
#![allow(clippy::unwrap_used)]

#[path = "service_sim.rs"]
mod sim;

use berth_scheduler::service::{failure_threshold, limits, CircuitBreaker, Event, Rollout};
use proptest::prelude::*;
use sim::Fleet;

const NO_BREAKER: CircuitBreaker = CircuitBreaker {
    enable: false,
    rollback: false,
};

#[derive(Debug, Clone)]
enum Op {
    Scale(u32),
    Deploy,
    Kill(usize, usize),
    Sicken(usize, usize),
    Wait(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..=12).prop_map(Op::Scale),
        Just(Op::Deploy),
        (1usize..=3, 0usize..100).prop_map(|(n, s)| Op::Kill(n, s)),
        (1usize..=3, 0usize..100).prop_map(|(n, s)| Op::Sicken(n, s)),
        (1usize..=4).prop_map(Op::Wait),
    ]
}

fn config() -> impl Strategy<Value = (u32, u32, u32, u64, u64)> {
    (
        0u32..=10,
        prop::sample::select(vec![0u32, 25, 50, 75, 100]),
        prop::sample::select(vec![100u32, 125, 150, 200]),
        prop::sample::select(vec![0u64, 20]),
        1u64..=3,
    )
}

fn fleet((d, min, max, grace, k): (u32, u32, u32, u64, u64), breaker: CircuitBreaker) -> Fleet {
    let mut f = Fleet::new(d, min, max, breaker, "web:1");
    f.svc.health_check_grace_period_secs = grace;
    f.start_ticks = k;
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The limits hold on every decision; once the faults stop, the service
    /// reaches steady with `desired` healthy tasks of the PRIMARY only.
    #[test]
    fn limits_hold_and_converge(cfg in config(), ops in prop::collection::vec(op(), 1..25)) {
        let mut f = fleet(cfg, NO_BREAKER);
        let (_, min, max, _, _) = cfg;
        let mut revision = 1;
        for op in &ops {
            match op {
                Op::Scale(n) => f.svc.desired_count = *n,
                Op::Deploy => {
                    revision += 1;
                    f.deploy(&format!("web:{revision}"));
                }
                Op::Kill(n, s) => f.kill(*n, *s),
                Op::Sicken(n, s) => f.sicken(*n, *s),
                Op::Wait(n) => {
                    for _ in 0..*n {
                        f.tick();
                    }
                }
            }
            f.tick();
        }
        let d = f.svc.desired_count;
        // the effective limits are ECS's wherever ECS's can progress
        let lim = limits(d, min, max);
        let ecs_floor = (d * min).div_ceil(100);
        let ecs_ceiling = (d * max / 100).max(d);
        if ecs_floor < ecs_ceiling || d == 0 {
            prop_assert_eq!((lim.floor, lim.ceiling), (ecs_floor, ecs_ceiling));
        }
        prop_assert!(f.run_until_steady(300), "never steady: {:?}", f.decisions.last());
        let primary = f.primary().id.clone();
        prop_assert_eq!(f.svc.deployments.len(), 1);
        prop_assert_eq!(f.primary().rollout.clone(), Rollout::Completed);
        prop_assert_eq!(f.live().count(), d as usize);
        prop_assert!(f.live().all(|t| t.deployment == primary));
        prop_assert_eq!(f.healthy(), d as usize);
        prop_assert_eq!(f.primary().task_definition.clone(), format!("web:{revision}"));
    }

    /// A revision whose tasks never start trips the breaker at the threshold;
    /// with rollback the previous revision is the target again and the
    /// service gets back to steady on it; without, the old tasks keep running.
    #[test]
    fn breaker_trips_and_rolls_back(
        d in 1u32..=12,
        min in prop::sample::select(vec![0u32, 50, 100]),
        max in prop::sample::select(vec![100u32, 150, 200]),
        rollback in any::<bool>(),
        k in 1u64..=3,
    ) {
        let breaker = CircuitBreaker { enable: true, rollback };
        let mut f = fleet((d, min, max, 0, k), breaker);
        prop_assert!(f.run_until_steady(100));
        f.failing.insert("web:2".into());
        f.deploy("web:2");
        for _ in 0..120 {
            f.tick();
            if !f.tripped.is_empty() && (!rollback || f.decisions.last().unwrap().steady) {
                break;
            }
        }
        prop_assert_eq!(f.tripped.len(), 1, "tripped: {:?}", f.tripped);
        let (ref failed, count, desired) = f.tripped[0];
        prop_assert_eq!(failed.as_str(), "ecs-svc/2");
        prop_assert!(count >= failure_threshold(desired));
        if rollback {
            prop_assert_eq!(f.rollbacks.clone(), vec![("ecs-svc/2".to_string(), "ecs-svc/1".to_string())]);
            prop_assert!(f.decisions.last().unwrap().steady);
            prop_assert_eq!(f.primary().task_definition.as_str(), "web:1");
            prop_assert_eq!(f.live().count(), d as usize);
        } else {
            prop_assert!(f.rollbacks.is_empty());
            let failed = matches!(f.primary().rollout, Rollout::Failed { .. });
            prop_assert!(failed);
            prop_assert!(f.healthy() >= limits(d, min, max).floor as usize);
            let t = f.tick();
            prop_assert!(t.start.is_empty());
        }
    }

    /// Unconstrained scale-in leaves zones within one task of each other.
    #[test]
    fn scale_in_keeps_zones_balanced(
        from in 3u32..=30,
        to_frac in 0u32..100,
        min in prop::sample::select(vec![0u32, 50, 100]),
    ) {
        let to = from * to_frac / 100;
        let mut f = fleet((from, min, 200, 0, 1), NO_BREAKER);
        prop_assert!(f.run_until_steady(50));
        f.svc.desired_count = to;
        prop_assert!(f.run_until_steady(50));
        let z = f.per_zone();
        let hi = z.values().max().copied().unwrap_or(0);
        let lo = z.values().min().copied().unwrap_or(0);
        prop_assert!(hi - lo <= 1, "zones {:?}", z);
        prop_assert_eq!(f.live().count(), to as usize);
    }

    /// Scale-in never stops a protected task (every decision is checked);
    /// the service stays above desired by what only protected tasks could
    /// give, and says so.
    #[test]
    fn scale_in_spares_protected(
        from in 2u32..=20,
        to_frac in 0u32..100,
        mask in prop::collection::vec(any::<bool>(), 20),
    ) {
        let to = from * to_frac / 100;
        let mut f = fleet((from, 100, 200, 0, 1), NO_BREAKER);
        prop_assert!(f.run_until_steady(50));
        for (t, &p) in f.svc.tasks.iter_mut().zip(&mask) {
            t.protected = p;
        }
        let protected = f.svc.tasks.iter().filter(|t| t.protected).count();
        f.svc.desired_count = to;
        for _ in 0..20 {
            f.tick();
        }
        prop_assert_eq!(f.live().count(), protected.max(to as usize));
        if protected > to as usize {
            let blocked = f
                .decisions
                .last()
                .unwrap()
                .events
                .iter()
                .any(|e| matches!(e, Event::ScaleInBlocked { .. }));
            prop_assert!(blocked);
        }
    }
}

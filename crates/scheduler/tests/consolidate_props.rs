//! Property tests of consolidation over random fleets: every action is
//! feasible (after all moves no instance is over capacity, architecture,
//! zone and `distinctInstance` hold, every task of a retired instance moves
//! exactly once), only movable tasks move, no retired instance holds a
//! pinned task or is unsettled, savings pass the threshold and add up, the
//! budget holds, the result does not depend on input order, applying it and
//! running again at the same time finds nothing, and repeated runs stop.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use berth_model::ecs::CPUArchitecture;
use berth_scheduler::consolidate::{
    consolidate, Action, ConsolidateOptions, ConsolidateRequest, Destination, DisruptionBudget,
    Instance, ReplacementType, Resources, Task,
};
use proptest::prelude::*;

mod consolidate_common;
use consolidate_common::apply;

const NOW: u64 = 100_000;

/// (cpu, memory, gpu, cost): the shapes of instances and replacements.
const SHAPES: &[(u64, u64, u64, f64)] = &[
    (2048, 3_840, 0, 0.0864),
    (2048, 7_936, 0, 0.1008),
    (4096, 15_616, 0, 0.2016),
    (8192, 31_744, 0, 0.4032),
    (4096, 15_616, 1, 0.5260),
];

fn types() -> Vec<ReplacementType> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, &(cpu, memory_mib, gpu, cost))| ReplacementType {
            instance_type: format!("type{i}"),
            hourly_cost: cost,
            allocatable: Resources {
                cpu,
                memory_mib,
                gpu,
            },
            architectures: if gpu > 0 {
                vec![CPUArchitecture::X8664]
            } else {
                vec![CPUArchitecture::X8664, CPUArchitecture::Arm64]
            },
        })
        .collect()
}

/// (cpu, memory MiB, gpu, movable, group).
type TaskSpec = (u64, u64, bool, bool, usize);
/// (shape, arm, zone, age, stable for, disrupting, tasks).
type InstSpec = (usize, bool, usize, u64, u64, bool, Vec<TaskSpec>);

fn task_spec() -> impl Strategy<Value = TaskSpec> {
    (
        1u64..=8,
        1u64..=16,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.85),
        0usize..4,
    )
        .prop_map(|(c, m, g, mv, grp)| (c * 128, m * 256, g, mv, grp))
}

fn inst_spec() -> impl Strategy<Value = InstSpec> {
    (
        0..SHAPES.len(),
        prop::bool::weighted(0.3),
        0usize..2,
        prop::sample::select(vec![100u64, 700, 5_000, 50_000]),
        prop::sample::select(vec![0u64, 100, 400, 50_000]),
        prop::bool::weighted(0.1),
        prop::collection::vec(task_spec(), 0..8),
    )
}

/// Small instances of one class, each more than half used, so that no one
/// drains into another and multi-node replacement has work to do.
fn dense_spec() -> impl Strategy<Value = InstSpec> {
    (
        9u64..=11,
        6u64..=9,
        prop::bool::weighted(0.9),
        prop::sample::select(vec![700u64, 50_000]),
    )
        .prop_map(|(c, m, movable, age)| {
            (
                0,
                false,
                0,
                age,
                50_000,
                false,
                vec![(c * 128, m * 256, false, movable, 1)],
            )
        })
}

/// A fleet: mixed, or dense.
fn fleet_spec() -> impl Strategy<Value = Vec<InstSpec>> {
    prop_oneof![
        3 => prop::collection::vec(inst_spec(), 0..14),
        1 => prop::collection::vec(dense_spec(), 2..12),
    ]
}

fn build(specs: &[InstSpec]) -> Vec<Instance> {
    specs
        .iter()
        .enumerate()
        .map(|(i, (shape, arm, zone, age, stable, disrupting, tasks))| {
            let (cpu, mem, gpu, cost) = SHAPES[*shape];
            // GPU types are x86 only.
            let arm = *arm && gpu == 0;
            let mut used = [0u64; 3];
            let mut kept = Vec::new();
            for (k, &(c, m, g, movable, group)) in tasks.iter().enumerate() {
                let g = u64::from(g);
                if used[0] + c > cpu || used[1] + m > mem || used[2] + g > gpu {
                    continue;
                }
                // Group 0 has a distinctInstance constraint: one per instance.
                if group == 0 && kept.iter().any(|t: &Task| t.group == "svc0") {
                    continue;
                }
                used = [used[0] + c, used[1] + m, used[2] + g];
                kept.push(Task {
                    id: format!("t{i:02}-{k}"),
                    group: format!("svc{group}"),
                    resources: Resources {
                        cpu: c,
                        memory_mib: m,
                        gpu: g,
                    },
                    movable,
                    distinct_instance: group == 0,
                });
            }
            let launched_at = NOW - age;
            Instance {
                id: format!("i-{i:02}"),
                instance_type: format!("type{shape}"),
                hourly_cost: cost,
                allocatable: Resources {
                    cpu,
                    memory_mib: mem,
                    gpu,
                },
                availability_zone: format!("az{zone}"),
                architecture: if arm {
                    CPUArchitecture::Arm64
                } else {
                    CPUArchitecture::X8664
                },
                launched_at,
                stable_since: (NOW - stable).max(launched_at),
                disrupting: *disrupting,
                tasks: kept,
            }
        })
        .collect()
}

fn options() -> impl Strategy<Value = ConsolidateOptions> {
    (
        prop::sample::select(vec![0.0, 0.005, 0.05]),
        prop::sample::select(vec![0.0, 0.1, 0.3]),
        prop::sample::select(vec![0.1, 0.5, 1.0]),
        prop::sample::select(vec![None, Some(1usize), Some(3)]),
        any::<bool>(),
        prop::sample::select(vec![0usize, 2, 100]),
    )
        .prop_map(
            |(abs, frac, bfrac, bmax, keep_zone, multi)| ConsolidateOptions {
                min_saving_per_hour: abs,
                min_saving_fraction: frac,
                budget: DisruptionBudget {
                    max_fraction: bfrac,
                    max_instances: bmax,
                },
                keep_zone,
                max_multi_candidates: multi,
                ..ConsolidateOptions::default()
            },
        )
}

/// Used and allocatable resources of an instance, and its tasks.
type Load<'a> = ([u64; 3], [u64; 3], Vec<&'a Task>);

/// Checks every promise of `consolidate` about `actions` for `req`.
fn check(req: &ConsolidateRequest, actions: &[Action]) {
    let o = &req.options;
    let by_id: BTreeMap<&str, &Instance> =
        req.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let task_home: BTreeMap<&str, (&Task, &Instance)> = req
        .instances
        .iter()
        .flat_map(|i| i.tasks.iter().map(move |t| (t.id.as_str(), (t, i))))
        .collect();
    let mut retired: BTreeSet<&str> = BTreeSet::new();
    for a in actions {
        for id in a.retired() {
            assert!(retired.insert(id), "{id} retired twice");
        }
    }
    // Budget.
    let disrupting = req.instances.iter().filter(|i| i.disrupting).count();
    let allowed = o.budget.allowed(req.instances.len());
    assert!(
        retired.len() + disrupting <= allowed.max(disrupting),
        "budget: {} retired + {disrupting} disrupting > {allowed}",
        retired.len()
    );
    assert!(retired.len() <= allowed.saturating_sub(disrupting));

    // Loads after every move: (instance or new) -> [cpu, mem, gpu], tasks.
    let mut load: BTreeMap<String, Load> = req
        .instances
        .iter()
        .filter(|i| !retired.contains(i.id.as_str()))
        .map(|i| {
            let mut u = [0u64; 3];
            for t in &i.tasks {
                u = add(u, &t.resources);
            }
            (
                i.id.clone(),
                (
                    u,
                    [
                        i.allocatable.cpu,
                        i.allocatable.memory_mib,
                        i.allocatable.gpu,
                    ],
                    i.tasks.iter().collect(),
                ),
            )
        })
        .collect();
    let types = types();
    for (ai, a) in actions.iter().enumerate() {
        let ids = a.retired();
        assert!(!ids.is_empty());
        let mut retired_cost = 0.0;
        let mut expected_tasks = BTreeSet::new();
        for id in &ids {
            let inst = by_id[id];
            assert!(!inst.disrupting, "{id} is already disrupting");
            assert!(!inst.tasks.is_empty(), "{id} has no tasks");
            assert!(
                inst.tasks.iter().all(|t| t.movable),
                "{id} holds a pinned task"
            );
            assert!(
                NOW >= inst.launched_at + o.min_age_secs.max(o.scale_in_after_secs)
                    && NOW >= inst.stable_since + o.scale_in_after_secs,
                "{id} is unsettled"
            );
            retired_cost += inst.hourly_cost;
            expected_tasks.extend(inst.tasks.iter().map(|t| t.id.as_str()));
        }
        let moved: Vec<&str> = a.moves().iter().map(|m| m.task.as_str()).collect();
        let moved_set: BTreeSet<&str> = moved.iter().copied().collect();
        assert_eq!(moved.len(), moved_set.len(), "a task moves twice");
        assert_eq!(moved_set, expected_tasks, "moves != tasks of the retired");
        for (k, n) in a.launches().iter().enumerate() {
            let ty = types
                .iter()
                .find(|t| t.instance_type == n.instance_type)
                .unwrap();
            assert!(ty.architectures.contains(&n.architecture));
            assert_eq!(ty.hourly_cost, n.hourly_cost);
            load.insert(
                format!("new-{ai}-{k}"),
                (
                    [0; 3],
                    [
                        ty.allocatable.cpu,
                        ty.allocatable.memory_mib,
                        ty.allocatable.gpu,
                    ],
                    Vec::new(),
                ),
            );
        }
        for m in a.moves() {
            let (task, home) = task_home[m.task.as_str()];
            assert_eq!(home.id, m.from);
            assert!(task.movable);
            let key = match &m.to {
                Destination::Instance(id) => {
                    let t = by_id[id.as_str()];
                    assert!(
                        !retired.contains(id.as_str()),
                        "{id} is retired and a target"
                    );
                    assert!(!t.disrupting && !t.tasks.is_empty());
                    assert!(NOW >= t.launched_at + o.min_age_secs, "{id} too young");
                    assert_eq!(t.architecture, home.architecture);
                    if o.keep_zone {
                        assert_eq!(t.availability_zone, home.availability_zone);
                    }
                    id.clone()
                }
                Destination::New(k) => {
                    let n = &a.launches()[*k];
                    assert_eq!(n.architecture, home.architecture);
                    if o.keep_zone {
                        assert_eq!(n.availability_zone, home.availability_zone);
                    }
                    format!("new-{ai}-{k}")
                }
            };
            let entry = load.get_mut(&key).unwrap();
            entry.0 = add(entry.0, &task.resources);
            entry.2.push(task);
        }
        let new_cost: f64 = a.launches().iter().map(|n| n.hourly_cost).sum();
        let saving = a.hourly_saving();
        assert!((saving - (retired_cost - new_cost)).abs() < 1e-9);
        assert!(saving > 0.0);
        assert!(
            saving >= o.min_saving_per_hour - 1e-12,
            "{saving} below abs"
        );
        assert!(
            saving >= o.min_saving_fraction * retired_cost - 1e-12,
            "{saving} below fraction of {retired_cost}"
        );
        match a {
            Action::Drain { moves, .. } => assert!(!moves.is_empty()),
            Action::Replace { with, .. } => assert_eq!(with.len(), 1),
        }
    }
    for (id, (used, alloc, tasks)) in &load {
        assert!(
            (0..3).all(|d| used[d] <= alloc[d]),
            "{id} over capacity: {used:?} > {alloc:?}"
        );
        for t in tasks.iter().filter(|t| t.distinct_instance) {
            let same = tasks.iter().filter(|u| u.group == t.group).count();
            assert_eq!(same, 1, "{id}: two tasks of distinct group {}", t.group);
        }
    }
}

fn add(u: [u64; 3], r: &Resources) -> [u64; 3] {
    [u[0] + r.cpu, u[1] + r.memory_mib, u[2] + r.gpu]
}

fn request(instances: Vec<Instance>, options: ConsolidateOptions) -> ConsolidateRequest {
    ConsolidateRequest {
        instances,
        replacement_types: types(),
        now: NOW,
        options,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn actions_are_feasible_and_keep_every_promise(
        specs in fleet_spec(),
        options in options(),
    ) {
        let req = request(build(&specs), options);
        let actions = consolidate(&req).unwrap();
        check(&req, &actions);
    }

    #[test]
    fn order_of_the_input_does_not_matter(
        specs in fleet_spec(),
        options in options(),
    ) {
        let req = request(build(&specs), options);
        let actions = consolidate(&req).unwrap();
        let mut shuffled = req.clone();
        shuffled.instances.reverse();
        for i in &mut shuffled.instances {
            i.tasks.reverse();
        }
        shuffled.replacement_types.reverse();
        prop_assert_eq!(&consolidate(&shuffled).unwrap(), &actions);
        prop_assert_eq!(consolidate(&req).unwrap(), actions);
    }

    #[test]
    fn applying_the_actions_leaves_nothing_to_do_at_the_same_time(
        specs in fleet_spec(),
        options in options(),
    ) {
        let options = ConsolidateOptions { budget: DisruptionBudget::unlimited(), ..options };
        let req = request(build(&specs), options);
        let actions = consolidate(&req).unwrap();
        let after = request(apply(&req.instances, &actions, NOW, "a"), options);
        let again = consolidate(&after).unwrap();
        prop_assert!(again.is_empty(), "first {:?}\nthen {:?}", actions, again);
    }

    #[test]
    fn repeated_runs_lower_the_cost_and_stop(
        specs in fleet_spec(),
        options in options(),
    ) {
        let mut req = request(build(&specs), options);
        let cost = |r: &ConsolidateRequest| r.instances.iter().map(|i| i.hourly_cost).sum::<f64>();
        let mut rounds = 0;
        loop {
            let actions = consolidate(&req).unwrap();
            check(&req, &actions);
            if actions.is_empty() {
                break;
            }
            rounds += 1;
            prop_assert!(rounds < 100, "no fixed point after 100 runs");
            let before = cost(&req);
            let saving: f64 = actions.iter().map(Action::hourly_saving).sum();
            let tag = format!("r{rounds}");
            // Time passes: everything settles before the next run.
            req.instances = apply(&req.instances, &actions, NOW, &tag);
            for i in &mut req.instances {
                i.launched_at = 0;
                i.stable_since = 0;
            }
            let after = cost(&req);
            prop_assert!((before - after - saving).abs() < 1e-9);
            prop_assert!(after < before);
        }
    }
}

//! Worked cases of consolidation: what is drained, replaced or left alone,
//! and why (pinned tasks, thresholds, windows, zones, architectures, GPUs,
//! `distinctInstance`, the budget), stability after applying, the real
//! catalog, and a 1,000-instance fleet.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use berth_catalog::Catalog;
use berth_model::ecs::CPUArchitecture;
use berth_scheduler::consolidate::{
    consolidate, replacement_types, scale_in_after_from_ecs, Action, ConsolidateError,
    ConsolidateOptions, ConsolidateRequest, Destination, DisruptionBudget, Instance,
    ReplacementType, Resources, Task, DEFAULT_SCALE_IN_AFTER_SECS,
};
use berth_scheduler::plan::{permissive_requirements, Reservation};

mod consolidate_common;
use consolidate_common::apply;

const NOW: u64 = 100_000;
const X86: CPUArchitecture = CPUArchitecture::X8664;
const ARM: CPUArchitecture = CPUArchitecture::Arm64;

fn res(cpu: u64, memory_mib: u64, gpu: u64) -> Resources {
    Resources {
        cpu,
        memory_mib,
        gpu,
    }
}

fn svc(id: &str, group: &str, cpu: u64, mem: u64) -> Task {
    Task {
        id: id.into(),
        group: group.into(),
        resources: res(cpu, mem, 0),
        movable: true,
        distinct_instance: false,
    }
}

fn standalone(id: &str, cpu: u64, mem: u64) -> Task {
    Task {
        movable: false,
        ..svc(id, "family:batch", cpu, mem)
    }
}

/// A settled x86 instance in az-a: 2 vCPUs, 7.75 GiB, $0.10/h.
fn inst(id: &str, tasks: Vec<Task>) -> Instance {
    Instance {
        id: id.into(),
        instance_type: "m.large".into(),
        hourly_cost: 0.10,
        allocatable: res(2048, 7936, 0),
        availability_zone: "az-a".into(),
        architecture: X86,
        launched_at: 0,
        stable_since: 0,
        disrupting: false,
        tasks,
    }
}

fn ty(name: &str, cost: f64, r: Resources) -> ReplacementType {
    ReplacementType {
        instance_type: name.into(),
        hourly_cost: cost,
        allocatable: r,
        architectures: vec![X86, ARM],
    }
}

fn req(instances: Vec<Instance>, types: Vec<ReplacementType>) -> ConsolidateRequest {
    ConsolidateRequest {
        instances,
        replacement_types: types,
        now: NOW,
        options: ConsolidateOptions::default(),
    }
}

fn unlimited(mut r: ConsolidateRequest) -> ConsolidateRequest {
    r.options.budget = DisruptionBudget::unlimited();
    r
}

/// Two half-empty m.large instances.
fn two_half_empty() -> Vec<Instance> {
    vec![
        inst(
            "i-a",
            vec![
                svc("a1", "svc:web", 512, 2048),
                svc("a2", "svc:web", 256, 1024),
            ],
        ),
        inst(
            "i-b",
            vec![
                svc("b1", "svc:api", 512, 2048),
                svc("b2", "svc:api", 256, 1024),
            ],
        ),
    ]
}

#[test]
fn two_half_empty_instances_become_one() {
    let r = req(two_half_empty(), vec![]);
    let actions = consolidate(&r).unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    let Action::Drain {
        instance,
        moves,
        hourly_saving,
    } = &actions[0]
    else {
        panic!("expected a drain: {actions:?}")
    };
    // Equal utilisation and cost: the first by id goes.
    assert_eq!(instance, "i-a");
    assert_eq!(*hourly_saving, 0.10);
    let tasks: Vec<&str> = moves.iter().map(|m| m.task.as_str()).collect();
    assert_eq!(tasks, ["a1", "a2"]);
    assert!(moves
        .iter()
        .all(|m| m.from == "i-a" && m.to == Destination::Instance("i-b".into())));
}

#[test]
fn applying_the_actions_then_running_again_does_nothing() {
    let r = req(
        two_half_empty(),
        vec![ty("m.large", 0.10, res(2048, 7936, 0))],
    );
    let actions = consolidate(&r).unwrap();
    assert_eq!(actions.len(), 1);
    let after = apply(&r.instances, &actions, NOW, "case");
    assert_eq!(after.len(), 1);
    // At once: the target just changed.
    let mut again = req(after.clone(), r.replacement_types.clone());
    assert!(consolidate(&again).unwrap().is_empty());
    // A day later, settled: the remaining instance is the cheapest that holds
    // its tasks, and there is nowhere else to go.
    again.now = NOW + 86_400;
    assert!(consolidate(&again).unwrap().is_empty());
}

#[test]
fn an_instance_with_a_standalone_task_is_never_drained() {
    let mut fleet = two_half_empty();
    fleet[0].tasks.push(standalone("a3", 128, 128));
    let r = unlimited(req(fleet, vec![ty("small", 0.01, res(4096, 16384, 0))]));
    let actions = consolidate(&r).unwrap();
    assert!(actions.iter().all(|a| !a.retired().contains(&"i-a")));
    // It can still receive tasks: i-b drains onto it.
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].retired(), ["i-b"]);
    assert!(actions[0]
        .moves()
        .iter()
        .all(|m| m.to == Destination::Instance("i-a".into())));

    // Alone, with a much cheaper type available, still nothing.
    let r = unlimited(req(
        vec![inst("i-a", vec![standalone("a3", 128, 128)])],
        vec![ty("tiny", 0.001, res(1024, 1024, 0))],
    ));
    assert!(consolidate(&r).unwrap().is_empty());
}

#[test]
fn a_protected_task_blocks_its_instance() {
    let mut fleet = two_half_empty();
    // Service tasks, one of them under UpdateTaskProtection on each instance.
    fleet[0].tasks[1].movable = false;
    fleet[1].tasks[0].movable = false;
    let r = unlimited(req(fleet, vec![ty("tiny", 0.001, res(4096, 16384, 0))]));
    assert!(consolidate(&r).unwrap().is_empty());
}

#[test]
fn a_big_expensive_instance_with_few_small_tasks_is_replaced_by_a_cheaper_type() {
    let catalog = Catalog::embedded();
    let types = replacement_types(
        catalog,
        "us-east-1",
        &permissive_requirements(),
        Reservation::default(),
    )
    .unwrap();
    let big_cost = catalog.hourly_cost("us-east-1", "m7i.8xlarge").unwrap();
    let big = Instance {
        instance_type: "m7i.8xlarge".into(),
        hourly_cost: big_cost,
        allocatable: res(32 * 1024, 128 * 1024 - 256, 0),
        tasks: vec![
            svc("w1", "svc:web", 512, 1024),
            svc("w2", "svc:web", 512, 1024),
            svc("w3", "svc:web", 256, 512),
        ],
        ..inst("i-big", vec![])
    };
    let actions = consolidate(&req(vec![big], types.clone())).unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    let Action::Replace {
        instances,
        with,
        moves,
        hourly_saving,
    } = &actions[0]
    else {
        panic!("expected a replacement: {actions:?}")
    };
    assert_eq!(instances, &["i-big"]);
    assert_eq!(with.len(), 1);
    let new = &with[0];
    assert_eq!(new.architecture, X86);
    assert_eq!(new.availability_zone, "az-a");
    assert!(new.allocatable.cpu >= 1280 && new.allocatable.memory_mib >= 2560);
    assert!(new.hourly_cost < big_cost / 4.0, "{new:?}");
    assert!((hourly_saving - (big_cost - new.hourly_cost)).abs() < 1e-9);
    assert_eq!(moves.len(), 3);
    assert!(moves.iter().all(|m| m.to == Destination::New(0)));
    // It is the cheapest x86 type that holds the three tasks.
    let cheapest = types
        .iter()
        .filter(|t| t.architectures.contains(&X86))
        .filter(|t| t.allocatable.cpu >= 1280 && t.allocatable.memory_mib >= 2560)
        .map(|t| t.hourly_cost)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(new.hourly_cost, cheapest);
}

#[test]
fn several_instances_are_replaced_by_one() {
    // Three c.large each 60 % used: none fits on another, but the three fit
    // on one c.xlarge that costs less than two of them.
    let small = res(2048, 3840, 0);
    let fleet: Vec<Instance> = (0..3)
        .map(|i| Instance {
            instance_type: "c.large".into(),
            hourly_cost: 0.09,
            allocatable: small,
            ..inst(
                &format!("i-{i}"),
                vec![svc(&format!("t{i}"), "svc:web", 1200, 2000)],
            )
        })
        .collect();
    let types = vec![
        ty("c.large", 0.09, small),
        ty("c.xlarge", 0.17, res(4096, 7680, 0)),
    ];
    let r = unlimited(req(fleet.clone(), types.clone()));
    let actions = consolidate(&r).unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    let Action::Replace {
        instances, with, ..
    } = &actions[0]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(instances, &["i-0", "i-1", "i-2"]);
    assert_eq!(with[0].instance_type, "c.xlarge");
    assert!((actions[0].hourly_saving() - (0.27 - 0.17)).abs() < 1e-9);

    // With multi-node consolidation off, nothing can be done.
    let mut off = r.clone();
    off.options.max_multi_candidates = 0;
    assert!(consolidate(&off).unwrap().is_empty());

    // A budget of two: the best prefix of two (0.18 → 0.17) saves under 10 %.
    let mut two = r;
    two.options.budget.max_instances = Some(2);
    assert!(consolidate(&two).unwrap().is_empty());
}

#[test]
fn savings_below_the_threshold_produce_nothing() {
    // A replacement 5 % cheaper: under the 10 % default.
    let one = vec![inst("i-a", vec![svc("a1", "svc:web", 512, 1024)])];
    let types = vec![ty("m.cheaper", 0.095, res(2048, 7936, 0))];
    let r = req(one, types);
    assert!(consolidate(&r).unwrap().is_empty());
    let mut lenient = r.clone();
    lenient.options.min_saving_fraction = 0.0;
    let actions = consolidate(&lenient).unwrap();
    assert_eq!(actions.len(), 1);
    assert!((actions[0].hourly_saving() - 0.005).abs() < 1e-9);
    // ... and an absolute floor above the saving stops it again.
    lenient.options.min_saving_per_hour = 0.01;
    assert!(consolidate(&lenient).unwrap().is_empty());

    // A drain that saves under $0.005/h (a tiny instance) is not worth it.
    let mut fleet = two_half_empty();
    for i in &mut fleet {
        i.hourly_cost = 0.004;
    }
    let r = req(fleet, vec![]);
    assert!(consolidate(&r).unwrap().is_empty());
    let mut cheap_floor = r;
    cheap_floor.options.min_saving_per_hour = 0.001;
    assert_eq!(consolidate(&cheap_floor).unwrap().len(), 1);
}

#[test]
fn a_tight_fleet_is_left_alone() {
    let fleet: Vec<Instance> = (0..5)
        .map(|i| {
            inst(
                &format!("i-{i}"),
                vec![
                    svc(&format!("t{i}a"), "svc:web", 1024, 4096),
                    svc(&format!("t{i}b"), "svc:web", 768, 2048),
                ],
            )
        })
        .collect();
    let types = vec![
        ty("m.large", 0.10, res(2048, 7936, 0)),
        ty("m.xlarge", 0.20, res(4096, 15872, 0)),
        ty("m.2xlarge", 0.40, res(8192, 31744, 0)),
    ];
    let r = unlimited(req(fleet, types));
    assert!(consolidate(&r).unwrap().is_empty());
}

#[test]
fn young_or_recently_changed_instances_are_not_touched() {
    let mut young = two_half_empty();
    for i in &mut young {
        i.launched_at = NOW - 100;
        i.stable_since = NOW - 100;
    }
    assert!(consolidate(&req(young, vec![])).unwrap().is_empty());

    let mut changed = two_half_empty();
    for i in &mut changed {
        i.stable_since = NOW - DEFAULT_SCALE_IN_AFTER_SECS + 1;
    }
    assert!(consolidate(&req(changed.clone(), vec![]))
        .unwrap()
        .is_empty());
    // One settled, one not: the settled one drains into the other.
    changed[1].stable_since = 0;
    let actions = consolidate(&req(changed, vec![])).unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].retired(), ["i-b"]);
}

#[test]
fn empty_instances_are_left_to_the_idle_path() {
    let fleet = vec![
        inst("i-a", vec![]),
        inst("i-b", vec![svc("b1", "svc:web", 256, 256)]),
    ];
    let r = unlimited(req(fleet, vec![]));
    // i-b could only go to i-a, which is empty: no target.
    assert!(consolidate(&r).unwrap().is_empty());
}

#[test]
fn tasks_stay_in_their_zone_unless_told_otherwise() {
    let mut fleet = two_half_empty();
    fleet[1].availability_zone = "az-b".into();
    let r = req(fleet, vec![]);
    assert!(consolidate(&r).unwrap().is_empty());
    let mut any_zone = r;
    any_zone.options.keep_zone = false;
    assert_eq!(consolidate(&any_zone).unwrap().len(), 1);
}

#[test]
fn tasks_stay_on_their_architecture() {
    let mut fleet = two_half_empty();
    fleet[1].architecture = ARM;
    assert!(consolidate(&unlimited(req(fleet, vec![])))
        .unwrap()
        .is_empty());
}

#[test]
fn gpu_tasks_need_gpus_on_the_target() {
    let gpu_task = Task {
        resources: res(512, 2048, 1),
        ..svc("g1", "svc:ml", 0, 0)
    };
    let gpu_inst = Instance {
        instance_type: "g.xlarge".into(),
        hourly_cost: 0.53,
        allocatable: res(4096, 15616, 1),
        ..inst("i-gpu", vec![gpu_task])
    };
    let plain = inst("i-plain", vec![svc("p1", "svc:web", 256, 512)]);
    let r = unlimited(req(vec![gpu_inst.clone(), plain.clone()], vec![]));
    let actions = consolidate(&r).unwrap();
    // The GPU task cannot go to i-plain; i-plain's task may go to i-gpu.
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].retired(), ["i-plain"]);

    // A second GPU instance with a free GPU takes it.
    let other = Instance {
        id: "i-gpu2".into(),
        tasks: vec![svc("p2", "svc:web", 256, 512)],
        ..gpu_inst
    };
    let r = unlimited(req(vec![r.instances[0].clone(), other], vec![]));
    let actions = consolidate(&r).unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    let moved: Vec<&str> = actions[0].moves().iter().map(|m| m.task.as_str()).collect();
    assert!(moved == ["p2"] || moved == ["g1"], "{moved:?}");
}

#[test]
fn distinct_instance_groups_never_share_an_instance() {
    let d = |id: &str| Task {
        distinct_instance: true,
        ..svc(id, "svc:ha", 256, 512)
    };
    let fleet = vec![inst("i-a", vec![d("a1")]), inst("i-b", vec![d("b1")])];
    let r = unlimited(req(fleet.clone(), vec![]));
    assert!(consolidate(&r).unwrap().is_empty());
    // Without the constraint, one drains into the other.
    let mut loose = fleet;
    for i in &mut loose {
        i.tasks[0].distinct_instance = false;
    }
    assert_eq!(
        consolidate(&unlimited(req(loose, vec![]))).unwrap().len(),
        1
    );
}

#[test]
fn the_budget_limits_how_many_go_at_once() {
    // Ten instances each 10 % used: most could go.
    let fleet: Vec<Instance> = (0..10)
        .map(|i| {
            inst(
                &format!("i-{i}"),
                vec![svc(&format!("t{i}"), "svc:web", 200, 700)],
            )
        })
        .collect();
    // Default: 10 % of 10, rounded up = 1.
    let r = req(fleet.clone(), vec![]);
    let actions = consolidate(&r).unwrap();
    assert_eq!(actions.len(), 1);
    // Half the fleet.
    let mut half = r.clone();
    half.options.budget.max_fraction = 0.5;
    let actions = consolidate(&half).unwrap();
    let retired: usize = actions.iter().map(|a| a.retired().len()).sum();
    assert_eq!(retired, 5);
    // Instances already disrupting count against it, and are not targets.
    let mut busy = half;
    for i in busy.instances.iter_mut().take(3) {
        i.disrupting = true;
    }
    let actions = consolidate(&busy).unwrap();
    let retired: Vec<&str> = actions.iter().flat_map(|a| a.retired()).collect();
    assert_eq!(retired.len(), 2);
    for a in &actions {
        for m in a.moves() {
            let Destination::Instance(id) = &m.to else {
                panic!()
            };
            assert!(!["i-0", "i-1", "i-2"].contains(&id.as_str()));
        }
    }
    // Unlimited: everything fits on one instance (10 × 200 CPU units ≤ 2048).
    let all = unlimited(req(fleet, vec![]));
    let actions = consolidate(&all).unwrap();
    assert_eq!(actions.len(), 9, "{actions:?}");
    let after = apply(&all.instances, &actions, NOW, "case");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].tasks.len(), 10);
}

#[test]
fn bad_input_is_refused() {
    let mut dup = two_half_empty();
    dup[1].id = "i-a".into();
    assert_eq!(
        consolidate(&req(dup, vec![])),
        Err(ConsolidateError::DuplicateInstance("i-a".into()))
    );
    let mut dup_task = two_half_empty();
    dup_task[1].tasks[0].id = "a1".into();
    assert_eq!(
        consolidate(&req(dup_task, vec![])),
        Err(ConsolidateError::DuplicateTask("a1".into()))
    );
    let mut nan = two_half_empty();
    nan[0].hourly_cost = f64::NAN;
    assert!(matches!(
        consolidate(&req(nan, vec![])),
        Err(ConsolidateError::InstanceCost { .. })
    ));
    let mut r = req(two_half_empty(), vec![]);
    r.options.min_saving_fraction = 1.5;
    assert!(matches!(
        consolidate(&r),
        Err(ConsolidateError::Option {
            name: "minSavingFraction",
            ..
        })
    ));
}

#[test]
fn scale_in_after_follows_ecs() {
    assert_eq!(
        scale_in_after_from_ecs(None),
        Some(DEFAULT_SCALE_IN_AFTER_SECS)
    );
    assert_eq!(scale_in_after_from_ecs(Some(-1)), None);
    assert_eq!(scale_in_after_from_ecs(Some(0)), Some(0));
    assert_eq!(scale_in_after_from_ecs(Some(3600)), Some(3600));
}

#[test]
fn budget_rounds_up() {
    let b = DisruptionBudget::default();
    assert_eq!(b.allowed(0), 0);
    assert_eq!(b.allowed(1), 1);
    assert_eq!(b.allowed(10), 1);
    assert_eq!(b.allowed(11), 2);
    assert_eq!(b.allowed(1000), 100);
    let capped = DisruptionBudget {
        max_instances: Some(3),
        ..b
    };
    assert_eq!(capped.allowed(1000), 3);
}

#[test]
fn a_thousand_instance_fleet_is_decided_quickly() {
    // 1,000 instances over two zones and two architectures, 30 % used on
    // average, every tenth with a standalone task; 10 % budget.
    let mut fleet = Vec::new();
    for i in 0..1000u64 {
        let n = 1 + (i * 7919) % 6;
        let mut tasks: Vec<Task> = (0..n)
            .map(|k| {
                svc(
                    &format!("t{i}-{k}"),
                    &format!("svc:{}", (i + k) % 17),
                    128 * (1 + (i + k) % 3),
                    512 * (1 + (i * k) % 3),
                )
            })
            .collect();
        if i % 10 == 0 {
            tasks.push(standalone(&format!("s{i}"), 128, 256));
        }
        fleet.push(Instance {
            availability_zone: if i % 2 == 0 { "az-a" } else { "az-b" }.into(),
            architecture: if i % 5 == 0 { ARM } else { X86 },
            ..inst(&format!("i-{i:04}"), tasks)
        });
    }
    let types = vec![
        ty("m.large", 0.10, res(2048, 7936, 0)),
        ty("c.large", 0.085, res(2048, 3840, 0)),
        ty("m.xlarge", 0.20, res(4096, 15872, 0)),
    ];
    let r = req(fleet, types);
    let start = Instant::now();
    let actions = consolidate(&r).unwrap();
    let elapsed = start.elapsed();
    eprintln!(
        "1,000 instances: {} actions in {elapsed:?} (debug build)",
        actions.len()
    );
    let retired: usize = actions.iter().map(|a| a.retired().len()).sum();
    assert!(retired <= 100);
    assert!(
        retired > 50,
        "an under-used fleet should consolidate: {retired}"
    );
    assert!(actions.iter().flat_map(|a| a.retired()).all(|id| {
        r.instances
            .iter()
            .any(|i| i.id == id && i.tasks.iter().all(|t| t.movable))
    }));
}

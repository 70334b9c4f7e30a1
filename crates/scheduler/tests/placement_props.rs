//! Placement: properties on random clusters and batches, the indexed placer
//! against the linear-scan reference, and worked examples.
#![allow(clippy::unwrap_used)]

use berth_scheduler::placement::{
    parse_expression, place, place_reference, Constraint, Demand, Facts, FailureReason, HostPort,
    InstanceSpec, PlaceOptions, Placement, Resource, Snapshot, SpreadField, Strategy as S,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const GROUPS: [&str; 4] = ["family:web", "family:db", "service:api", "batch"];
const AZS: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const TYPES: [&str; 3] = ["t2.small", "m5.large", "g4dn.xlarge"];
const PORTS: [u16; 3] = [80, 443, 8080];
const EXPRS: [&str; 8] = [
    "attribute:ecs.instance-type =~ t2.*",
    "attribute:ecs.instance-type in [m5.large, g4dn.xlarge]",
    "attribute:ecs.availability-zone != us-east-1c",
    "attribute:stack exists",
    "not(task:group == family:db)",
    "task:group == family:web or runningTasksCount < 2",
    "runningTasksCount <= 3",
    "attribute:stack == prod and attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
];

fn instance() -> impl Strategy<Value = InstanceSpec> {
    (
        (
            prop::option::weighted(0.9, 0..AZS.len()),
            0..TYPES.len(),
            prop::option::of(prop::bool::ANY),
            prop::bool::weighted(0.9),
        ),
        (0u32..9, 0u32..9, 0usize..4),
        prop::collection::vec((prop::bool::ANY, 0..PORTS.len()), 0..3),
        prop::collection::vec(0..GROUPS.len(), 0..4),
    )
        .prop_map(
            |((az, ty, stack, connected), (cpu, mem, gpus), ports, groups)| {
                let mut attributes =
                    vec![("ecs.instance-type".to_string(), Some(TYPES[ty].to_string()))];
                if let Some(az) = az {
                    attributes.push(("ecs.availability-zone".into(), Some(AZS[az].into())));
                }
                if let Some(prod) = stack {
                    attributes.push((
                        "stack".into(),
                        Some(if prod { "prod" } else { "dev" }.into()),
                    ));
                }
                InstanceSpec {
                    ec2_instance_id: String::new(),
                    arn: String::new(),
                    attributes,
                    agent_connected: connected,
                    agent_version: Some("1.80.0".into()),
                    registered_at: 0,
                    remaining_cpu: cpu * 256,
                    remaining_memory: mem * 512,
                    free_gpus: (0..gpus).map(|g| format!("GPU-{g}")).collect(),
                    ports_in_use: ports
                        .into_iter()
                        .map(|(udp, p)| {
                            if udp {
                                HostPort::udp(PORTS[p])
                            } else {
                                HostPort::tcp(PORTS[p])
                            }
                        })
                        .collect(),
                    task_groups: groups.into_iter().map(|g| GROUPS[g].to_string()).collect(),
                }
            },
        )
}

fn strategy() -> impl Strategy<Value = S> {
    prop_oneof![
        Just(S::Binpack(Resource::Cpu)),
        Just(S::Binpack(Resource::Memory)),
        Just(S::Spread(SpreadField::InstanceId)),
        Just(S::Spread(SpreadField::Attribute(
            "ecs.availability-zone".into()
        ))),
        Just(S::Spread(SpreadField::Attribute("stack".into()))),
        Just(S::Random),
    ]
}

/// The combinations people use (each with its own fast path), or anything.
fn strategies() -> impl Strategy<Value = Vec<S>> {
    let az = || S::Spread(SpreadField::Attribute("ecs.availability-zone".into()));
    prop_oneof![
        Just(vec![]),
        Just(vec![S::Binpack(Resource::Memory)]),
        Just(vec![
            S::Binpack(Resource::Cpu),
            S::Spread(SpreadField::InstanceId)
        ]),
        Just(vec![az()]),
        Just(vec![az(), S::Spread(SpreadField::InstanceId)]),
        Just(vec![az(), S::Binpack(Resource::Memory)]),
        Just(vec![S::Spread(SpreadField::InstanceId)]),
        Just(vec![S::Spread(SpreadField::InstanceId), S::Random]),
        prop::collection::vec(strategy(), 0..4),
        prop::collection::vec(strategy(), 0..4),
    ]
}

fn demand() -> impl Strategy<Value = Demand> {
    (
        (0u32..5, 0u32..5, prop::option::weighted(0.2, 1u32..3)),
        prop::collection::btree_set(0..PORTS.len(), 0..2),
        0..GROUPS.len(),
        prop::bool::weighted(0.3),
        prop::collection::vec(0..EXPRS.len(), 0..2),
        strategies(),
    )
        .prop_map(
            |((cpu, mem, gpus), ports, group, distinct, exprs, strategies)| {
                let mut constraints: Vec<Constraint> = exprs
                    .into_iter()
                    .map(|k| Constraint::MemberOf(parse_expression(EXPRS[k]).unwrap()))
                    .collect();
                if distinct {
                    constraints.push(Constraint::DistinctInstance);
                }
                Demand {
                    cpu: cpu * 128,
                    memory: mem * 256,
                    gpus: gpus.unwrap_or(0),
                    host_ports: ports.into_iter().map(|p| HostPort::tcp(PORTS[p])).collect(),
                    group: GROUPS[group].into(),
                    constraints,
                    strategies,
                }
            },
        )
}

/// The test's own reading of "instance `i` can take `d` now".
fn feasible(snap: &Snapshot, i: usize, d: &Demand) -> bool {
    let v = snap.instance(i);
    let ports: BTreeSet<HostPort> = v.ports_in_use().collect();
    v.agent_connected()
        && v.remaining_cpu() >= d.cpu
        && v.remaining_memory() >= d.memory
        && v.free_gpus().len() >= d.gpus as usize
        && d.host_ports.iter().all(|p| !ports.contains(p))
        && d.constraints.iter().all(|c| match c {
            Constraint::MemberOf(e) => e.matches(&v),
            Constraint::DistinctInstance => v.task_groups().all(|(g, _)| g != d.group),
        })
}

fn state(snap: &Snapshot) -> Vec<String> {
    (0..snap.len())
        .map(|i| {
            let v = snap.instance(i);
            let groups: BTreeMap<&str, u32> = v.task_groups().collect();
            format!(
                "{} {} {:?} {:?} {:?}",
                v.remaining_cpu(),
                v.remaining_memory(),
                v.free_gpus(),
                v.ports_in_use().collect::<Vec<_>>(),
                groups
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The indexed placer decides exactly as the linear scan does.
    #[test]
    fn indexed_equals_reference(
        instances in prop::collection::vec(instance(), 0..12),
        tasks in prop::collection::vec(demand(), 1..30),
        seed in any::<u64>(),
        service in any::<bool>(),
    ) {
        let opts = if service { PlaceOptions::service(seed) } else { PlaceOptions::run_task(seed) };
        let mut fast = Snapshot::new(instances.clone());
        let mut slow = Snapshot::new(instances);
        // Two runs on the same snapshot: the indexes carry over between calls.
        let half = tasks.len() / 2;
        let mut a = place(&mut fast, &tasks[..half], &opts);
        a.extend(place(&mut fast, &tasks[half..], &opts));
        let mut b = place_reference(&mut slow, &tasks[..half], &opts);
        b.extend(place_reference(&mut slow, &tasks[half..], &opts));
        prop_assert_eq!(a, b);
        prop_assert_eq!(state(&fast), state(&slow));
    }

    /// Every placement respects resources, GPUs, ports and constraints, binpack
    /// picks the least remaining resource, and a failure means no instance fit.
    #[test]
    fn placements_are_valid(
        instances in prop::collection::vec(instance(), 1..12),
        tasks in prop::collection::vec(demand(), 1..30),
        seed in any::<u64>(),
    ) {
        let opts = PlaceOptions::run_task(seed);
        let mut snap = Snapshot::new(instances);
        let mut gpus_given: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        for d in &tasks {
            let fit: Vec<usize> = (0..snap.len()).filter(|&i| feasible(&snap, i, d)).collect();
            let before_mem: Vec<u32> = (0..snap.len()).map(|i| snap.instance(i).remaining_memory()).collect();
            let before_cpu: Vec<u32> = (0..snap.len()).map(|i| snap.instance(i).remaining_cpu()).collect();
            let free_before: Vec<Vec<String>> = (0..snap.len()).map(|i| snap.instance(i).free_gpus().to_vec()).collect();
            let got = place(&mut snap, std::slice::from_ref(d), &opts).pop().unwrap();
            match got {
                Placement::Placed { instance, gpus } => {
                    prop_assert!(fit.contains(&instance), "placed on an instance that did not fit");
                    prop_assert_eq!(gpus.len(), d.gpus as usize);
                    for g in &gpus {
                        prop_assert!(free_before[instance].contains(g));
                        prop_assert!(gpus_given.entry(instance).or_default().insert(g.clone()), "GPU {} given twice", g);
                        prop_assert!(!snap.instance(instance).free_gpus().contains(g));
                    }
                    let after = snap.instance(instance);
                    prop_assert_eq!(after.remaining_cpu(), before_cpu[instance] - d.cpu);
                    prop_assert_eq!(after.remaining_memory(), before_mem[instance] - d.memory);
                    let ports: BTreeSet<HostPort> = after.ports_in_use().collect();
                    prop_assert!(d.host_ports.iter().all(|p| ports.contains(p)));
                    let first = d.strategies.first().cloned().unwrap_or(S::Random);
                    if let S::Binpack(r) = first {
                        let amount = |i: usize| match r {
                            Resource::Cpu => before_cpu[i],
                            Resource::Memory => before_mem[i],
                        };
                        let least = fit.iter().map(|&i| amount(i)).min().unwrap();
                        prop_assert_eq!(amount(instance), least);
                    }
                }
                Placement::Failed(f) => {
                    prop_assert!(fit.is_empty(), "failed ({:?}) although {:?} fit", f, fit);
                    prop_assert!(f.closest.is_some());
                }
            }
        }
    }

    /// Spread over an attribute alone, with room everywhere and no constraint,
    /// keeps the group's counts per value within one of each other.
    #[test]
    fn spread_is_balanced(
        azs in prop::collection::vec(prop::option::weighted(0.9, 0..AZS.len()), 1..15),
        groups in prop::collection::vec(0..GROUPS.len(), 1..60),
    ) {
        let instances: Vec<InstanceSpec> = azs.iter().map(|az| InstanceSpec {
            attributes: az.map(|a| ("ecs.availability-zone".to_string(), Some(AZS[a].to_string()))).into_iter().collect(),
            agent_connected: true,
            remaining_cpu: 1 << 20,
            remaining_memory: 1 << 20,
            ..InstanceSpec::default()
        }).collect();
        let mut snap = Snapshot::new(instances);
        let tasks: Vec<Demand> = groups.iter().map(|&g| Demand {
            cpu: 1, memory: 1, group: GROUPS[g].into(), ..Demand::default()
        }).collect();
        let placed = place(&mut snap, &tasks, &PlaceOptions::service(1));
        let values: BTreeSet<Option<&str>> = (0..snap.len())
            .map(|i| snap.instance(i).attribute("ecs.availability-zone").map(|v| v.unwrap_or("")))
            .collect();
        for g in GROUPS {
            let mut counts: BTreeMap<Option<&str>, u32> = values.iter().map(|v| (*v, 0)).collect();
            for (p, d) in placed.iter().zip(&tasks) {
                if d.group == g {
                    let i = p.instance().unwrap();
                    *counts.get_mut(&snap.instance(i).attribute("ecs.availability-zone").map(|v| v.unwrap_or(""))).unwrap() += 1;
                }
            }
            let max = counts.values().max().unwrap();
            let min = counts.values().min().unwrap();
            prop_assert!(max - min <= 1, "{}: {:?}", g, counts);
        }
    }
}

fn spec(id: &str, az: &str, cpu: u32, mem: u32) -> InstanceSpec {
    InstanceSpec {
        ec2_instance_id: id.into(),
        arn: format!("arn:aws:ecs:us-east-1:000000000000:container-instance/c/{id}"),
        attributes: vec![
            ("ecs.availability-zone".into(), Some(az.into())),
            ("ecs.instance-type".into(), Some("m5.large".into())),
        ],
        agent_connected: true,
        remaining_cpu: cpu,
        remaining_memory: mem,
        ..InstanceSpec::default()
    }
}

#[test]
fn run_task_count_ten_packs_with_binpack() {
    let mut snap = Snapshot::new(vec![
        spec("i-1", "a", 4096, 4096),
        spec("i-2", "a", 4096, 2048),
        spec("i-3", "b", 4096, 8192),
    ]);
    let d = Demand {
        cpu: 10,
        memory: 512,
        group: "family:web".into(),
        strategies: vec![S::Binpack(Resource::Memory)],
        ..Demand::default()
    };
    let got: Vec<Option<usize>> = place(&mut snap, &vec![d; 10], &PlaceOptions::run_task(0))
        .iter()
        .map(Placement::instance)
        .collect();
    // Fill i-2 (4 tasks), then i-1 (8 would fit, 6 left to place).
    assert_eq!(
        got,
        vec![
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(0)
        ]
    );
    assert_eq!(snap.instance(1).remaining_memory(), 0);
    assert_eq!(snap.instance(0).remaining_memory(), 1024);
}

#[test]
fn spread_zone_then_instance() {
    let mut snap = Snapshot::new(vec![
        spec("i-1", "a", 4096, 4096),
        spec("i-2", "a", 4096, 4096),
        spec("i-3", "b", 4096, 4096),
        spec("i-4", "b", 4096, 4096),
    ]);
    let d = Demand {
        cpu: 1,
        memory: 1,
        group: "service:api".into(),
        strategies: vec![
            S::Spread(SpreadField::Attribute("ecs.availability-zone".into())),
            S::Spread(SpreadField::InstanceId),
        ],
        ..Demand::default()
    };
    let got: Vec<Option<usize>> = place(&mut snap, &vec![d; 4], &PlaceOptions::run_task(0))
        .iter()
        .map(Placement::instance)
        .collect();
    assert_eq!(got, vec![Some(0), Some(2), Some(1), Some(3)]);
}

#[test]
fn gpus_are_assigned_by_id() {
    let mut i = spec("i-1", "a", 4096, 4096);
    i.free_gpus = vec!["GPU-0".into(), "GPU-1".into(), "GPU-2".into()];
    let mut snap = Snapshot::new(vec![i]);
    let d = Demand {
        gpus: 2,
        group: "family:ml".into(),
        ..Demand::default()
    };
    let got = place(&mut snap, &[d.clone(), d], &PlaceOptions::run_task(0));
    assert_eq!(
        got[0],
        Placement::Placed {
            instance: 0,
            gpus: vec!["GPU-0".into(), "GPU-1".into()]
        }
    );
    let Placement::Failed(f) = &got[1] else {
        panic!("{:?}", got[1])
    };
    assert_eq!(f.reason, FailureReason::Gpu);
    assert_eq!(f.reason.ecs_reason(), "RESOURCE:GPU");
    assert_eq!(snap.instance(0).free_gpus(), ["GPU-2".to_string()]);
}

#[test]
fn failure_reasons_are_the_most_specific() {
    let d = |memory, constraints: Vec<Constraint>, ports: Vec<HostPort>| Demand {
        cpu: 100,
        memory,
        host_ports: ports,
        group: "family:web".into(),
        constraints,
        ..Demand::default()
    };
    let member = |e: &str| Constraint::MemberOf(parse_expression(e).unwrap());
    let mut small = spec("i-1", "a", 4096, 512);
    small.ports_in_use = vec![HostPort::tcp(80)];
    let mut off = spec("i-2", "a", 4096, 8192);
    off.agent_connected = false;
    let mut snap = Snapshot::new(vec![small, off, spec("i-3", "b", 50, 8192)]);
    let reason =
        |snap: &mut Snapshot, d: Demand| match place(snap, &[d], &PlaceOptions::run_task(0))
            .pop()
            .unwrap()
        {
            Placement::Failed(f) => (f.reason, f.closest),
            p => panic!("placed: {p:?}"),
        };
    // i-1 lacks memory, i-2 is disconnected, i-3 lacks cpu: memory is the furthest.
    assert_eq!(
        reason(&mut snap, d(1024, vec![], vec![])),
        (FailureReason::Memory, Some(0))
    );
    assert_eq!(
        reason(&mut snap, d(256, vec![], vec![HostPort::tcp(80)])),
        (FailureReason::Ports, Some(0))
    );
    assert_eq!(
        reason(
            &mut snap,
            d(
                256,
                vec![member("attribute:ecs.availability-zone == b")],
                vec![]
            )
        ),
        (FailureReason::MemberOf, Some(0))
    );
    assert_eq!(
        FailureReason::MemberOf.ecs_reason(),
        "MemberOf placement constraint unsatisfied."
    );
    // One web task fits on i-1; a second with distinctInstance does not.
    assert!(
        place(
            &mut snap,
            &[d(256, vec![], vec![])],
            &PlaceOptions::run_task(0)
        )[0]
        .instance()
            == Some(0)
    );
    assert_eq!(
        reason(
            &mut snap,
            d(256, vec![Constraint::DistinctInstance], vec![])
        ),
        (FailureReason::DistinctInstance, Some(0))
    );
    let mut empty = Snapshot::new(vec![]);
    assert_eq!(
        reason(&mut empty, d(1, vec![], vec![])),
        (FailureReason::NoContainerInstances, None)
    );
}

#[test]
fn random_is_reproducible_under_a_seed() {
    let instances: Vec<InstanceSpec> = (0..20)
        .map(|k| spec(&format!("i-{k}"), "a", 4096, 4096))
        .collect();
    let d = Demand {
        cpu: 1,
        memory: 1,
        group: "family:web".into(),
        ..Demand::default()
    };
    let run = |seed| {
        let mut snap = Snapshot::new(instances.clone());
        place(
            &mut snap,
            &vec![d.clone(); 30],
            &PlaceOptions::run_task(seed),
        )
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    let used: BTreeSet<usize> = run(7).iter().filter_map(Placement::instance).collect();
    assert!(used.len() > 5, "random should use many instances: {used:?}");
}

#[test]
fn strategies_and_constraints_from_ecs_shapes() {
    assert_eq!(
        S::from_ecs("binpack", Some("memory")),
        Ok(S::Binpack(Resource::Memory))
    );
    assert_eq!(
        S::from_ecs("spread", Some("host")),
        Ok(S::Spread(SpreadField::InstanceId))
    );
    assert_eq!(
        S::from_ecs("spread", Some("attribute:ecs.availability-zone")),
        Ok(S::Spread(SpreadField::Attribute(
            "ecs.availability-zone".into()
        )))
    );
    assert_eq!(S::from_ecs("random", None), Ok(S::Random));
    assert!(S::from_ecs("binpack", Some("gpu")).is_err());
    assert!(S::from_ecs("spread", None).is_err());
    assert!(S::from_ecs("pack", None)
        .unwrap_err()
        .to_string()
        .contains("binpack, spread and random"));
    assert_eq!(
        Constraint::from_ecs("distinctInstance", None),
        Ok(Constraint::DistinctInstance)
    );
    assert!(Constraint::from_ecs("memberOf", Some("attribute:a =="))
        .unwrap_err()
        .to_string()
        .contains("position 15"));
    assert!(Constraint::from_ecs("memberOf", None).is_err());
    assert!(Constraint::from_ecs("other", None).is_err());
}

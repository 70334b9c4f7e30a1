//! Worked cases of the provisioning planner: reasons for unplaceable tasks,
//! GPU and architecture rules, unavailable types, spot, zones, and the
//! planner against the first-fit-decreasing baseline.
#![allow(clippy::unwrap_used)]

use berth_catalog::Catalog;
use berth_model::ecs::{CPUArchitecture, InstanceRequirementsRequest};
use berth_scheduler::plan::{
    permissive_requirements, plan, plan_ffd, CapacityOption, PlanCache, PlanRequest, TaskGroup,
};

fn g(name: &str, cpu: u32, memory_mib: u64, gpu: u32, count: u32, arm: bool) -> TaskGroup {
    TaskGroup {
        name: name.into(),
        cpu,
        memory_mib,
        gpu,
        count,
        architecture: if arm {
            CPUArchitecture::Arm64
        } else {
            CPUArchitecture::X8664
        },
    }
}

fn req(groups: Vec<TaskGroup>) -> PlanRequest {
    PlanRequest::new("us-east-1", permissive_requirements(), groups)
}

fn reqs(json: &str) -> InstanceRequirementsRequest {
    serde_json::from_str(json).unwrap()
}

#[test]
fn unplaceable_tasks_say_why() {
    let c = Catalog::embedded();
    let mut r = req(vec![
        g("web", 256, 512, 0, 3, false),
        g("huge", 1024, 64 * 1024 * 1024, 0, 2, false),
        g("arm", 256, 512, 0, 1, true),
        g("gpu", 1024, 2048, 1, 1, false),
    ]);
    r.requirements = reqs(
        r#"{"vCpuCount": {"min": 2}, "memoryMiB": {"min": 0}, "allowedInstanceTypes": ["c7a.*", "m7a.*"]}"#,
    );
    let p = plan(c, &r).unwrap();
    let why = |n: &str| {
        p.unplaceable
            .iter()
            .find(|u| u.name == n)
            .map(|u| (u.count, u.reason.clone()))
            .unwrap()
    };
    assert_eq!(why("huge").0, 2);
    assert!(why("huge").1.starts_with("memory:"), "{}", why("huge").1);
    assert!(
        why("arm").1.starts_with("architecture ARM64"),
        "{}",
        why("arm").1
    );
    assert!(why("gpu").1.starts_with("gpu:"), "{}", why("gpu").1);
    assert_eq!(p.instances.iter().map(|i| i.tasks["web"]).sum::<u32>(), 3);
    assert!(p
        .instances
        .iter()
        .all(|i| i.instance_type.starts_with("c7a.") || i.instance_type.starts_with("m7a.")));
}

#[test]
fn gpu_tasks_only_on_gpu_types_and_cpu_tasks_off_them_when_cheaper() {
    let c = Catalog::embedded();
    let p = plan(
        c,
        &req(vec![
            g("infer", 4096, 16384, 1, 4, false),
            g("api", 512, 1024, 0, 200, false),
        ]),
    )
    .unwrap();
    assert!(p.unplaceable.is_empty());
    for i in &p.instances {
        let t = c.get(&i.instance_type).unwrap();
        if i.tasks.contains_key("infer") {
            assert!(t.whole_gpus() >= 1);
        }
    }
    // Most API tasks sit on types without GPUs (cheaper per vCPU).
    let on_cpu: u32 = p
        .instances
        .iter()
        .filter(|i| i.capacity.gpu == 0)
        .filter_map(|i| i.tasks.get("api"))
        .sum();
    assert!(on_cpu >= 150, "{on_cpu}");
}

#[test]
fn unavailable_types_are_avoided() {
    let c = Catalog::embedded();
    let mut r = req(vec![g("web", 512, 1024, 0, 100, false)]);
    let first = plan(c, &r).unwrap();
    let used: Vec<String> = first
        .instances
        .iter()
        .map(|i| i.instance_type.clone())
        .collect();
    r.unavailable = used.iter().cloned().collect();
    let second = plan(c, &r).unwrap();
    assert!(second.unplaceable.is_empty());
    assert!(second
        .instances
        .iter()
        .all(|i| !used.contains(&i.instance_type)));
    assert!(second.hourly_cost >= first.lower_bound);
}

#[test]
fn spot_uses_spot_types_discounts_the_price_not_the_fee_and_diversifies() {
    let c = Catalog::embedded();
    let mut r = req(vec![g("web", 1024, 2048, 0, 40, false)]);
    r.requirements = reqs(
        r#"{"vCpuCount": {"min": 2, "max": 4}, "memoryMiB": {"min": 0}, "onDemandMaxPricePercentageOverLowestPrice": 999999}"#,
    );
    r.capacity = CapacityOption::Spot;
    let p = plan(c, &r).unwrap();
    assert!(p.instances.len() >= 4);
    let mut per_type = std::collections::BTreeMap::new();
    for i in &p.instances {
        let t = c.get(&i.instance_type).unwrap();
        assert!(t.spot_supported);
        let od = c.on_demand_price("us-east-1", &t.name).unwrap();
        assert!((i.hourly_price - od * 0.35).abs() < 1e-6);
        assert!((i.hourly_fee - c.management_fee("us-east-1", &t.name).unwrap()).abs() < 1e-6);
        *per_type.entry(i.instance_type.clone()).or_insert(0usize) += 1;
    }
    let cap = (p.instances.len() as f64 * 0.5).ceil() as usize;
    assert!(per_type.values().all(|&n| n <= cap), "{per_type:?}");
}

#[test]
fn zones_round_robin() {
    let c = Catalog::embedded();
    let mut r = req(vec![g("web", 2048, 4096, 0, 10, false)]);
    r.requirements = reqs(r#"{"vCpuCount": {"min": 2, "max": 2}, "memoryMiB": {"min": 0}}"#);
    r.availability_zones = vec![
        "us-east-1a".into(),
        "us-east-1b".into(),
        "us-east-1c".into(),
    ];
    let p = plan(c, &r).unwrap();
    assert_eq!(p.instances.len(), 10);
    let zones: Vec<&str> = p
        .instances
        .iter()
        .map(|i| i.availability_zone.as_deref().unwrap())
        .collect();
    for z in ["us-east-1a", "us-east-1b", "us-east-1c"] {
        let n = zones.iter().filter(|x| **x == z).count();
        assert!((3..=4).contains(&n), "{zones:?}");
    }
}

#[test]
fn complementary_shapes_beat_ffd() {
    let c = Catalog::embedded();
    let r = req(vec![
        g("cpu", 2048, 1024, 0, 100, false),
        g("mem", 256, 7168, 0, 100, false),
    ]);
    let p = plan(c, &r).unwrap();
    let f = plan_ffd(c, &r).unwrap();
    assert!(
        p.hourly_cost < 0.8 * f.hourly_cost,
        "{} vs {}",
        p.hourly_cost,
        f.hourly_cost
    );
    assert!(
        p.hourly_cost <= 1.05 * p.lower_bound,
        "{} vs {}",
        p.hourly_cost,
        p.lower_bound
    );
    // Some instance holds both shapes.
    assert!(p.instances.iter().any(|i| i.tasks.len() == 2));
}

#[test]
fn bad_requests_are_errors() {
    let c = Catalog::embedded();
    let r = req(vec![
        g("a", 256, 512, 0, 1, false),
        g("a", 256, 512, 0, 1, false),
    ]);
    assert!(plan(c, &r)
        .unwrap_err()
        .to_string()
        .contains("more than one"));
    let r = req(vec![g("z", 0, 0, 0, 1, false)]);
    assert!(plan(c, &r).is_err());
    let mut r = req(vec![g("a", 256, 512, 0, 1, false)]);
    r.requirements = reqs(r#"{"vCpuCount": {"min": 4, "max": 2}, "memoryMiB": {"min": 0}}"#);
    assert!(plan(c, &r)
        .unwrap_err()
        .to_string()
        .starts_with("instanceRequirements:"));
    let mut r = req(vec![]);
    r.region = "xx-nowhere-1".into();
    assert!(plan(c, &r).is_err());
}

#[test]
fn empty_request_is_an_empty_plan() {
    let p = plan(Catalog::embedded(), &req(vec![])).unwrap();
    assert!(p.instances.is_empty() && p.unplaceable.is_empty());
    assert_eq!((p.hourly_cost, p.lower_bound), (0.0, 0.0));
}

/// The cache answers every question as the planner does, the same question
/// again included, and a question that differs in one field gets its own
/// answer, not a kept one.
#[test]
fn a_cached_plan_is_the_plan() {
    let c = Catalog::embedded();
    let cache = PlanCache::default();
    let web = req(vec![g("g0", 512, 1024, 0, 4, false)]);
    let mut spot = web.clone();
    spot.capacity = CapacityOption::Spot;
    let mut without = web.clone();
    let first = plan(c, &web).unwrap();
    without.unavailable = first
        .instances
        .iter()
        .map(|i| i.instance_type.clone())
        .collect();
    let mut zones = web.clone();
    zones.availability_zones = vec!["us-east-1a".into(), "us-east-1b".into()];
    let bad = PlanRequest::new("nowhere-1", permissive_requirements(), vec![]);
    for _ in 0..2 {
        for r in [&web, &spot, &without, &zones, &bad] {
            assert_eq!(cache.plan(c, r), plan(c, r), "{r:?}");
        }
    }
    assert_ne!(cache.plan(c, &without), cache.plan(c, &web));
    assert!(cache.plan(c, &bad).is_err());
}

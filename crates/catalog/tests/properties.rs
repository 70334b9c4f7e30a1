//! Property tests of matching, price protection, wildcards and fitting.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use berth_catalog::{instance_type_pattern_matches, Catalog, InstanceType, RequirementsError};
use berth_model::ecs::{
    BareMetal, BurstablePerformance, CpuManufacturer, InstanceGeneration,
    InstanceRequirementsRequest, LocalStorage, MemoryMiBRequest, VCpuCountRangeRequest,
};
use proptest::prelude::*;

const REGIONS: &[&str] = &["us-east-1", "eu-west-1", "ap-northeast-1", "sa-east-1"];

fn catalog() -> &'static Catalog {
    Catalog::embedded()
}

/// A random request over the attributes that most shape the result.
#[derive(Debug, Clone)]
struct Spec {
    vcpu: (i32, Option<i32>),
    mem: (i32, Option<i32>),
    cpu: Vec<CpuManufacturer>,
    generations: Vec<InstanceGeneration>,
    bare_metal: Option<BareMetal>,
    burstable: Option<BurstablePerformance>,
    local_storage: Option<LocalStorage>,
    accel_max: Option<i32>,
    pct: Option<i32>,
}

impl Spec {
    fn request(&self) -> InstanceRequirementsRequest {
        InstanceRequirementsRequest {
            v_cpu_count: Some(VCpuCountRangeRequest {
                min: Some(self.vcpu.0),
                max: self.vcpu.1,
            }),
            memory_mib: Some(MemoryMiBRequest {
                min: Some(self.mem.0),
                max: self.mem.1,
            }),
            cpu_manufacturers: Some(self.cpu.clone()),
            instance_generations: Some(self.generations.clone()),
            bare_metal: self.bare_metal,
            burstable_performance: self.burstable,
            local_storage: self.local_storage,
            accelerator_count: self
                .accel_max
                .map(|m| berth_model::ecs::AcceleratorCountRequest {
                    min: None,
                    max: Some(m),
                }),
            on_demand_max_price_percentage_over_lowest_price: self.pct,
            ..Default::default()
        }
    }

    /// Each constraint, checked independently of the crate's code.
    fn satisfied_by(&self, t: &InstanceType) -> bool {
        let in_range = |v: i64, (lo, hi): (i32, Option<i32>)| {
            v >= i64::from(lo) && hi.is_none_or(|h| v <= i64::from(h))
        };
        let tri = |mode: &str, has: bool| match mode {
            "included" => true,
            "required" => has,
            _ => !has,
        };
        in_range(i64::from(t.vcpus), self.vcpu)
            && in_range(t.memory_mib as i64, self.mem)
            && (self.cpu.is_empty()
                || self.cpu.iter().any(|m| match m {
                    CpuManufacturer::Intel => t.cpu_manufacturer == berth_catalog::CpuVendor::Intel,
                    CpuManufacturer::Amd => t.cpu_manufacturer == berth_catalog::CpuVendor::Amd,
                    CpuManufacturer::AmazonWebServices => {
                        t.cpu_manufacturer == berth_catalog::CpuVendor::Aws
                    }
                }))
            && (self.generations.is_empty()
                || self.generations.iter().any(|g| match g {
                    InstanceGeneration::Current => t.current_generation,
                    InstanceGeneration::Previous => !t.current_generation,
                }))
            && tri(
                self.bare_metal.map_or("excluded", |b| b.as_str()),
                t.bare_metal,
            )
            && tri(
                self.burstable.map_or("excluded", |b| b.as_str()),
                t.burstable,
            )
            && tri(
                self.local_storage.map_or("included", |b| b.as_str()),
                t.local_storage_gb > 0,
            )
            && self.accel_max.is_none_or(|m| {
                let n = t.gpu_count.max(t.gpu_logical_count) + t.accelerator_count;
                i64::from(n) <= i64::from(m)
            })
            && t.vcpus > 1
            && t.size != "nano"
            && t.size != "micro"
    }
}

fn subset<T: Clone + std::fmt::Debug>(all: &'static [T]) -> impl Strategy<Value = Vec<T>> {
    proptest::sample::subsequence(all.to_vec(), 0..=all.len())
}

fn range(max: i32) -> impl Strategy<Value = (i32, Option<i32>)> {
    (0..=max, proptest::option::of(0..=max)).prop_map(|(a, b)| match b {
        Some(b) if b < a => (b, Some(a)),
        other => (a, other),
    })
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        range(200),
        range(1 << 20),
        subset(CpuManufacturer::ALL),
        subset(InstanceGeneration::ALL),
        proptest::option::of(proptest::sample::select(BareMetal::ALL.to_vec())),
        proptest::option::of(proptest::sample::select(BurstablePerformance::ALL.to_vec())),
        proptest::option::of(proptest::sample::select(LocalStorage::ALL.to_vec())),
        proptest::option::of(0..=2i32),
        proptest::option::of(prop_oneof![0..=100i32, Just(999_999)]),
    )
        .prop_map(
            |(
                vcpu,
                mem,
                cpu,
                generations,
                bare_metal,
                burstable,
                local_storage,
                accel_max,
                pct,
            )| Spec {
                vcpu,
                mem,
                cpu,
                generations,
                bare_metal,
                burstable,
                local_storage,
                accel_max,
                pct,
            },
        )
}

fn names(region: &str, req: &InstanceRequirementsRequest) -> BTreeSet<String> {
    match catalog().matching(region, req) {
        Ok(v) => v.into_iter().map(|t| t.name.clone()).collect(),
        Err(RequirementsError::NoMatch { .. }) => BTreeSet::new(),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Every match satisfies each constraint, is offered and priced in the
    /// region; and without price protection every type satisfying the
    /// constraints there is matched.
    #[test]
    fn matches_satisfy_every_constraint(spec in spec(), region in proptest::sample::select(REGIONS)) {
        let c = catalog();
        let got = names(region, &spec.request());
        for n in &got {
            let t = c.get(n).unwrap();
            prop_assert!(spec.satisfied_by(t), "{n} violates {spec:?}");
            prop_assert!(c.offered(region, n) && c.on_demand_price(region, n).is_some());
        }
        if spec.pct.unwrap_or(20) >= 999_999 {
            let expected: BTreeSet<String> = c
                .types()
                .iter()
                .filter(|t| c.offered(region, &t.name) && c.on_demand_price(region, &t.name).is_some())
                .filter(|t| spec.satisfied_by(t))
                .map(|t| t.name.clone())
                .collect();
            prop_assert_eq!(got, expected);
        }
    }

    /// Widening the vCPU or memory range never removes a type (price
    /// protection off: a wider range may lower the reference price).
    #[test]
    fn widening_a_range_never_removes_types(
        spec in spec(),
        lower_by in 0..=8i32,
        raise_by in proptest::option::of(0..=64i32),
        memory in any::<bool>(),
    ) {
        let mut narrow = spec.clone();
        narrow.pct = Some(999_999);
        let mut wide = narrow.clone();
        let widen = |(lo, hi): (i32, Option<i32>), scale: i32| {
            ((lo - lower_by * scale).max(0), match raise_by {
                None => None,
                Some(r) => hi.map(|h| h + r * scale),
            })
        };
        if memory {
            wide.mem = widen(narrow.mem, 1024);
        } else {
            wide.vcpu = widen(narrow.vcpu, 1);
        }
        let a = names("us-east-1", &narrow.request());
        let b = names("us-east-1", &wide.request());
        prop_assert!(a.is_subset(&b), "widening removed {:?}", a.difference(&b).collect::<Vec<_>>());
    }

    /// Price protection only removes types, and a higher threshold never
    /// removes more than a lower one.
    #[test]
    fn price_protection_is_monotone(spec in spec(), lo in 0..=100i32, extra in 0..=200i32) {
        let mut off = spec.clone();
        off.pct = Some(999_999);
        let mut low = spec.clone();
        low.pct = Some(lo);
        let mut high = spec;
        high.pct = Some(lo + extra);
        let off = names("us-east-1", &off.request());
        let low = names("us-east-1", &low.request());
        let high = names("us-east-1", &high.request());
        prop_assert!(low.is_subset(&high));
        prop_assert!(high.is_subset(&off));
        prop_assert_eq!(low.is_empty(), off.is_empty());
    }

    /// `cheapest_fitting` returns a candidate that fits, and none that fits
    /// is cheaper.
    #[test]
    fn cheapest_fitting_is_cheapest(
        picks in proptest::collection::vec(0..1395usize, 0..40),
        cpu in 0..=65536u32,
        mem in 0..=262_144u64,
        gpus in 0..=2u32,
        region in proptest::sample::select(REGIONS),
    ) {
        let c = catalog();
        let cands: Vec<&InstanceType> = picks.iter().map(|&i| &c.types()[i % c.types().len()]).collect();
        let fits = |t: &InstanceType| {
            t.cpu_units() >= cpu && t.memory_mib >= mem && t.whole_gpus() >= gpus
                && c.hourly_cost(region, &t.name).is_some()
        };
        match c.cheapest_fitting(region, &cands, cpu, mem, gpus) {
            None => prop_assert!(!cands.iter().any(|t| fits(t))),
            Some(best) => {
                prop_assert!(fits(best));
                let cost = c.hourly_cost(region, &best.name).unwrap();
                for t in cands.iter().filter(|t| fits(t)) {
                    prop_assert!(c.hourly_cost(region, &t.name).unwrap() >= cost);
                }
            }
        }
    }

    /// Wildcards: a name matches itself, `*`, its family + `.*`, and
    /// any prefix + `*`; a literal pattern matches only its own name.
    #[test]
    fn wildcard_laws(i in 0..1395usize, j in 0..1395usize, cut in 0..8usize) {
        let types = catalog().types();
        let a = &types[i % types.len()];
        let b = &types[j % types.len()];
        prop_assert!(instance_type_pattern_matches(&a.name, &a.name));
        prop_assert!(instance_type_pattern_matches("*", &a.name));
        let family = format!("{}.*", a.family);
        let size = format!("*.{}", a.size);
        let prefix: String = a.name.chars().take(cut).chain(std::iter::once('*')).collect();
        prop_assert!(instance_type_pattern_matches(&family, &a.name));
        prop_assert!(instance_type_pattern_matches(&size, &a.name));
        prop_assert!(instance_type_pattern_matches(&prefix, &a.name));
        prop_assert_eq!(instance_type_pattern_matches(&a.name, &b.name), a.name == b.name);
        prop_assert_eq!(
            instance_type_pattern_matches(&family, &b.name),
            a.family == b.family
        );
    }
}

//! Attribute-by-attribute tests of `Catalog::matching` against the embedded
//! data: each attribute must narrow the set exactly as its rule says.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use berth_catalog::{
    Catalog, InstanceType, MatchOptions, PriceBasis, Requirements, RequirementsError,
};
use berth_model::ecs::InstanceRequirementsRequest;
use serde_json::{json, Value};

const REGION: &str = "us-east-1";

fn catalog() -> &'static Catalog {
    Catalog::embedded()
}

/// Builds a request from its ECS JSON form.
fn req(value: Value) -> InstanceRequirementsRequest {
    serde_json::from_value(value).unwrap()
}

/// The loosest request: any size, every optional kind included, price
/// protection off. `extra` members are merged over it.
fn open(extra: Value) -> InstanceRequirementsRequest {
    let mut base = json!({
        "vCpuCount": {"min": 0},
        "memoryMiB": {"min": 0},
        "bareMetal": "included",
        "burstablePerformance": "included",
        "onDemandMaxPricePercentageOverLowestPrice": 999999,
    });
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    req(base)
}

fn names(types: &[&InstanceType]) -> BTreeSet<String> {
    types.iter().map(|t| t.name.clone()).collect()
}

fn matching(r: &InstanceRequirementsRequest) -> BTreeSet<String> {
    names(&catalog().matching(REGION, r).unwrap())
}

/// Asserts that adding `extra` to the open request keeps exactly the types
/// of the open result that satisfy `keep`, and that it changes something.
fn assert_narrows(extra: Value, keep: impl Fn(&InstanceType) -> bool) -> BTreeSet<String> {
    let all = catalog().matching(REGION, &open(json!({}))).unwrap();
    let expected: BTreeSet<String> = all
        .iter()
        .filter(|t| keep(t))
        .map(|t| t.name.clone())
        .collect();
    let got = match catalog().matching(REGION, &open(extra.clone())) {
        Ok(v) => names(&v),
        Err(RequirementsError::NoMatch { .. }) => BTreeSet::new(),
        Err(e) => panic!("{extra}: {e}"),
    };
    assert_eq!(got, expected, "{extra}");
    assert!(got.len() < all.len(), "{extra} removed nothing");
    got
}

fn has(set: &BTreeSet<String>, name: &str) -> bool {
    set.contains(name)
}

#[test]
fn defaults() {
    // Only the required members: every other attribute takes AWS's default.
    let r = req(json!({
        "vCpuCount": {"min": 0},
        "memoryMiB": {"min": 0},
        "onDemandMaxPricePercentageOverLowestPrice": 999999,
    }));
    let got = matching(&r);
    assert!(
        !has(&got, "t3.large"),
        "burstablePerformance defaults to excluded"
    );
    assert!(
        !has(&got, "m7i.metal-24xl"),
        "bareMetal defaults to excluded"
    );
    assert!(has(&got, "i4i.large"), "localStorage defaults to included");
    assert!(
        has(&got, "p5.48xlarge"),
        "acceleratorCount defaults to unrestricted"
    );
    assert!(has(&got, "inf2.xlarge"));
    assert!(
        has(&got, "m5.large"),
        "instanceGenerations defaults to current and previous"
    );
    assert!(has(&got, "m7i.large") && has(&got, "c7g.xlarge"));
    assert!(
        has(&got, "i4i.large"),
        "requireHibernateSupport defaults to false"
    );
    let all = catalog().types();
    assert!(got.iter().all(|n| {
        let t = catalog().get(n).unwrap();
        !t.burstable && !t.bare_metal
    }));
    assert!(got.len() > 900 && got.len() < all.len());
}

#[test]
fn vcpu_count_is_an_inclusive_range() {
    let got = assert_narrows(json!({"vCpuCount": {"min": 2, "max": 2}}), |t| t.vcpus == 2);
    assert!(has(&got, "m7i.large") && !has(&got, "c7g.xlarge"));
    let got = assert_narrows(json!({"vCpuCount": {"min": 4, "max": 4}}), |t| t.vcpus == 4);
    assert!(has(&got, "c7g.xlarge"));
    assert_narrows(json!({"vCpuCount": {"min": 96}}), |t| t.vcpus >= 96);
}

#[test]
fn memory_mib_is_an_inclusive_range() {
    let got = assert_narrows(json!({"memoryMiB": {"min": 8192, "max": 8192}}), |t| {
        t.memory_mib == 8192
    });
    assert!(has(&got, "m7i.large") && has(&got, "c7g.xlarge") && !has(&got, "i4i.large"));
    assert_narrows(json!({"memoryMiB": {"min": 0, "max": 4096}}), |t| {
        t.memory_mib <= 4096
    });
}

#[test]
fn cpu_manufacturers_or_within_the_list() {
    let got = assert_narrows(json!({"cpuManufacturers": ["amazon-web-services"]}), |t| {
        t.cpu_manufacturer == berth_catalog::CpuVendor::Aws
    });
    assert!(has(&got, "c7g.xlarge") && !has(&got, "m7i.large"));
    let got = assert_narrows(json!({"cpuManufacturers": ["intel", "amd"]}), |t| {
        matches!(
            t.cpu_manufacturer,
            berth_catalog::CpuVendor::Intel | berth_catalog::CpuVendor::Amd
        )
    });
    assert!(has(&got, "m7i.large") && has(&got, "c6a.2xlarge") && !has(&got, "c7g.xlarge"));
}

#[test]
fn memory_gib_per_vcpu() {
    let got = assert_narrows(json!({"memoryGiBPerVCpu": {"min": 4.0, "max": 4.0}}), |t| {
        t.memory_gib_per_vcpu() == 4.0
    });
    assert!(has(&got, "m7i.large") && !has(&got, "c7g.xlarge") && !has(&got, "i4i.large"));
    assert_narrows(json!({"memoryGiBPerVCpu": {"min": 7.5}}), |t| {
        t.memory_gib_per_vcpu() >= 7.5
    });
}

#[test]
fn instance_generations() {
    let got = assert_narrows(json!({"instanceGenerations": ["current"]}), |t| {
        t.current_generation
    });
    assert!(has(&got, "m7i.large") && !has(&got, "m5.large"));
    let got = assert_narrows(json!({"instanceGenerations": ["previous"]}), |t| {
        !t.current_generation
    });
    assert!(has(&got, "m5.large") && !has(&got, "m7i.large"));
    let both = matching(&open(
        json!({"instanceGenerations": ["current", "previous"]}),
    ));
    assert_eq!(both, matching(&open(json!({}))));
}

#[test]
fn bare_metal() {
    let got = assert_narrows(json!({"bareMetal": "required"}), |t| t.bare_metal);
    assert!(has(&got, "m7i.metal-24xl") && !has(&got, "m7i.large"));
    let got = assert_narrows(json!({"bareMetal": "excluded"}), |t| !t.bare_metal);
    assert!(!has(&got, "m7i.metal-24xl") && has(&got, "m7i.large"));
}

#[test]
fn burstable_performance() {
    let got = assert_narrows(json!({"burstablePerformance": "required"}), |t| t.burstable);
    assert!(has(&got, "t3.large") && !has(&got, "m7i.large"));
    let got = assert_narrows(json!({"burstablePerformance": "excluded"}), |t| {
        !t.burstable
    });
    assert!(!has(&got, "t3.large"));
}

#[test]
fn require_hibernate_support() {
    let got = assert_narrows(json!({"requireHibernateSupport": true}), |t| {
        t.hibernation_supported
    });
    assert!(has(&got, "m7i.large") && !has(&got, "i4i.large"));
    assert_eq!(
        matching(&open(json!({"requireHibernateSupport": false}))),
        matching(&open(json!({})))
    );
}

#[test]
fn network_interface_count() {
    let got = assert_narrows(
        json!({"networkInterfaceCount": {"min": 4, "max": 4}}),
        |t| t.max_network_interfaces == 4,
    );
    assert!(has(&got, "c7g.xlarge") && !has(&got, "m7i.large"));
}

#[test]
fn local_storage() {
    let got = assert_narrows(json!({"localStorage": "required"}), |t| {
        t.local_storage_gb > 0
    });
    assert!(has(&got, "i4i.large") && !has(&got, "m7i.large"));
    let got = assert_narrows(json!({"localStorage": "excluded"}), |t| {
        t.local_storage_gb == 0
    });
    assert!(!has(&got, "i4i.large") && has(&got, "m7i.large"));
}

#[test]
fn local_storage_types_restrict_the_kind_of_instance_store() {
    use berth_model::ecs::LocalStorageType;
    let got = assert_narrows(json!({"localStorageTypes": ["hdd"]}), |t| {
        t.local_storage_type != Some(LocalStorageType::Ssd)
    });
    // EBS-only types have no instance store to restrict.
    assert!(has(&got, "d3.xlarge") && has(&got, "m7i.large") && !has(&got, "i4i.large"));
    let got = assert_narrows(
        json!({"localStorageTypes": ["ssd"], "localStorage": "required"}),
        |t| t.local_storage_type == Some(LocalStorageType::Ssd),
    );
    assert!(has(&got, "i4i.large") && !has(&got, "d3.xlarge"));
}

#[test]
fn total_local_storage_gb() {
    let got = assert_narrows(
        json!({"totalLocalStorageGB": {"min": 400.0, "max": 500.0}}),
        |t| (400..=500).contains(&t.local_storage_gb),
    );
    assert!(has(&got, "i4i.large") && !has(&got, "m7i.large"));
}

#[test]
fn baseline_ebs_bandwidth() {
    let got = assert_narrows(
        json!({"baselineEbsBandwidthMbps": {"min": 650, "max": 650}}),
        |t| t.ebs_baseline_bandwidth_mbps == 650,
    );
    assert!(has(&got, "m7i.large") && !has(&got, "c7g.xlarge"));
}

#[test]
fn network_bandwidth_is_the_baseline() {
    let got = assert_narrows(json!({"networkBandwidthGbps": {"min": 3200.0}}), |t| {
        t.network_baseline_gbps >= 3200.0
    });
    assert!(has(&got, "p5.48xlarge") && !has(&got, "m7i.large"));
}

#[test]
fn accelerator_types() {
    let got = assert_narrows(json!({"acceleratorTypes": ["gpu"]}), |t| t.has_gpu());
    assert!(
        has(&got, "p5.48xlarge") && has(&got, "g6f.large"),
        "fractional GPUs are GPU types"
    );
    assert!(!has(&got, "inf2.xlarge") && !has(&got, "m7i.large"));
    let got = assert_narrows(json!({"acceleratorTypes": ["inference"]}), |t| {
        matches!(
            t.accelerator_kind,
            Some(
                berth_catalog::AcceleratorKind::Neuron | berth_catalog::AcceleratorKind::Inference
            )
        )
    });
    assert!(has(&got, "inf2.xlarge") && has(&got, "trn1.2xlarge") && !has(&got, "p5.48xlarge"));
    let got = assert_narrows(json!({"acceleratorTypes": ["fpga"]}), |t| {
        t.accelerator_kind == Some(berth_catalog::AcceleratorKind::Fpga)
    });
    assert!(has(&got, "f2.6xlarge"));
    let got = assert_narrows(json!({"acceleratorTypes": ["gpu", "fpga"]}), |t| {
        t.has_gpu() || t.accelerator_kind == Some(berth_catalog::AcceleratorKind::Fpga)
    });
    assert!(has(&got, "f2.6xlarge") && has(&got, "p5.48xlarge"));
}

#[test]
fn accelerator_count_counts_gpus_and_other_accelerators() {
    let got = assert_narrows(json!({"acceleratorCount": {"max": 0}}), |t| {
        !t.has_gpu() && t.accelerator_kind.is_none()
    });
    assert!(!has(&got, "p5.48xlarge") && !has(&got, "g6f.large") && !has(&got, "inf2.xlarge"));
    assert!(!has(&got, "vt1.3xlarge") && has(&got, "m7i.large"));
    let got = assert_narrows(json!({"acceleratorCount": {"min": 8, "max": 8}}), |t| {
        t.accelerator_total_count() == 8
    });
    assert!(has(&got, "p5.48xlarge") && has(&got, "vt1.24xlarge"));
    let got = assert_narrows(json!({"acceleratorCount": {"min": 1, "max": 1}}), |t| {
        t.accelerator_total_count() == 1
    });
    assert!(has(&got, "g6f.large") && has(&got, "inf2.xlarge") && has(&got, "g6.xlarge"));
}

#[test]
fn accelerator_manufacturers() {
    let got = assert_narrows(json!({"acceleratorManufacturers": ["nvidia"]}), |t| {
        t.gpu_manufacturer.as_deref() == Some("NVIDIA")
    });
    assert!(has(&got, "p5.48xlarge") && !has(&got, "inf2.xlarge") && !has(&got, "m7i.large"));
    let got = assert_narrows(
        json!({"acceleratorManufacturers": ["amazon-web-services"]}),
        |t| t.accelerator_manufacturer.as_deref() == Some("AWS"),
    );
    assert!(has(&got, "inf2.xlarge") && has(&got, "trn1.2xlarge") && !has(&got, "p5.48xlarge"));
    let got = assert_narrows(json!({"acceleratorManufacturers": ["xilinx"]}), |t| {
        t.accelerator_manufacturer.as_deref() == Some("Xilinx")
    });
    assert!(has(&got, "f2.6xlarge") && has(&got, "vt1.3xlarge"));
}

#[test]
fn accelerator_names() {
    let got = assert_narrows(json!({"acceleratorNames": ["h100"]}), |t| {
        t.gpu_name.as_deref() == Some("H100")
    });
    assert!(has(&got, "p5.48xlarge"));
    let got = assert_narrows(json!({"acceleratorNames": ["a10g", "t4"]}), |t| {
        matches!(t.gpu_name.as_deref(), Some("A10G" | "T4"))
    });
    assert!(has(&got, "g5.xlarge") && has(&got, "g4dn.xlarge") && !has(&got, "g5g.xlarge"));
    // `inferentia` is Inferentia (inf1), not Inferentia2 (inf2), which the ECS model cannot name.
    let got = assert_narrows(json!({"acceleratorNames": ["inferentia"]}), |t| {
        t.accelerator_name.as_deref() == Some("Inferentia")
    });
    assert!(has(&got, "inf1.xlarge") && !has(&got, "inf2.xlarge"));
}

#[test]
fn accelerator_total_memory() {
    let got = assert_narrows(json!({"acceleratorTotalMemoryMiB": {"min": 600000}}), |t| {
        t.accelerator_total_memory_mib() >= 600_000
    });
    assert!(has(&got, "p5.48xlarge") && !has(&got, "g6.xlarge"));
    assert_narrows(
        json!({"acceleratorTotalMemoryMiB": {"min": 32768, "max": 32768}}),
        |t| t.accelerator_total_memory_mib() == 32768,
    );
}

#[test]
fn allowed_instance_types_with_wildcards() {
    let got = assert_narrows(json!({"allowedInstanceTypes": ["m5.*"]}), |t| {
        t.family == "m5"
    });
    assert!(has(&got, "m5.large") && !has(&got, "m5a.large"));
    let got = assert_narrows(json!({"allowedInstanceTypes": ["*.metal"]}), |t| {
        t.size == "metal"
    });
    assert!(has(&got, "m5.metal") && !has(&got, "m7i.metal-24xl"));
    let got = assert_narrows(json!({"allowedInstanceTypes": ["c5*.*"]}), |t| {
        t.family.starts_with("c5")
    });
    assert!(has(&got, "c5.large") && has(&got, "c5n.large") && !has(&got, "c6a.2xlarge"));
    let got = assert_narrows(
        json!({"allowedInstanceTypes": ["m7i.large", "c7g.xlarge"]}),
        |t| t.name == "m7i.large" || t.name == "c7g.xlarge",
    );
    assert_eq!(got.len(), 2);
    // A bare family name means the whole family (ECS/Batch: "for example, m5.large or g5").
    let got = assert_narrows(json!({"allowedInstanceTypes": ["g5"]}), |t| {
        t.family == "g5"
    });
    assert!(has(&got, "g5.xlarge") && !has(&got, "g5g.xlarge"));
}

#[test]
fn allowed_is_anded_with_the_other_attributes() {
    // `*.metal` with bareMetal at its default (excluded) leaves nothing.
    let r = req(json!({
        "vCpuCount": {"min": 0}, "memoryMiB": {"min": 0},
        "allowedInstanceTypes": ["*.metal"],
    }));
    assert_eq!(
        catalog().matching(REGION, &r).unwrap_err(),
        RequirementsError::NoMatch {
            region: REGION.into()
        }
    );
    let got = matching(&open(
        json!({"allowedInstanceTypes": ["m7i.*"], "vCpuCount": {"min": 2, "max": 2}}),
    ));
    assert_eq!(got, BTreeSet::from(["m7i.large".to_string()]));
}

#[test]
fn excluded_instance_types() {
    let got = assert_narrows(
        json!({"excludedInstanceTypes": ["m7i.*", "*.metal*"]}),
        |t| t.family != "m7i" && !t.size.starts_with("metal"),
    );
    assert!(!has(&got, "m7i.large") && !has(&got, "m7i.metal-24xl") && has(&got, "m7a.large"));
    let got = assert_narrows(json!({"excludedInstanceTypes": ["t3"]}), |t| {
        t.family != "t3"
    });
    assert!(!has(&got, "t3.large") && has(&got, "t3a.large"));
}

#[test]
fn ecs_floor_never_picks_tiny_types() {
    let got = matching(&open(json!({"allowedInstanceTypes": ["t3.*", "c7g.*"]})));
    assert!(
        !has(&got, "t3.nano") && !has(&got, "t3.micro"),
        "nano/micro never"
    );
    assert!(!has(&got, "c7g.medium"), "1 vCPU never");
    assert!(has(&got, "t3.small") && has(&got, "c7g.large"));
    let all = matching(&open(json!({})));
    assert!(all.iter().all(|n| {
        let t = catalog().get(n).unwrap();
        t.vcpus >= 2 && t.size != "nano" && t.size != "micro"
    }));
    // Asking only for 1 vCPU leaves nothing.
    let r = open(json!({"vCpuCount": {"min": 1, "max": 1}}));
    assert!(matches!(
        catalog().matching(REGION, &r),
        Err(RequirementsError::NoMatch { .. })
    ));
}

#[test]
fn region_filtering() {
    let c = catalog();
    let r = open(json!({}));
    for region in ["us-east-1", "eu-west-1", "me-south-1", "us-gov-west-1"] {
        let got = c.matching(region, &r).unwrap();
        assert!(!got.is_empty());
        for t in got {
            assert!(c.offered(region, &t.name), "{region} {}", t.name);
            assert!(
                c.on_demand_price(region, &t.name).is_some(),
                "{region} {}",
                t.name
            );
        }
    }
    // m7i.large is not offered in me-south-1.
    assert!(has(&matching(&r), "m7i.large"));
    assert!(!names(&c.matching("me-south-1", &r).unwrap()).contains("m7i.large"));
    // eu-west-1 offers r8id.48xlarge but has no price for it.
    assert!(
        c.offered("eu-west-1", "r8id.48xlarge")
            && c.on_demand_price("eu-west-1", "r8id.48xlarge").is_none()
    );
    assert!(!names(&c.matching("eu-west-1", &r).unwrap()).contains("r8id.48xlarge"));
    // Mac types have no price anywhere, so they never match.
    assert!(!has(&matching(&r), "mac2.metal"));
    // Offerings without prices: nothing can be selected.
    assert_eq!(
        c.matching("ap-southeast-5", &r).unwrap_err(),
        RequirementsError::NoMatch {
            region: "ap-southeast-5".into()
        }
    );
    assert_eq!(
        c.matching("mars-1", &r).unwrap_err(),
        RequirementsError::UnknownRegion("mars-1".into())
    );
}

/// The price-protection result computed by hand from the unprotected set.
fn protected_by_hand(
    extra: Value,
    pct: f64,
    unit: impl Fn(&InstanceType, f64) -> f64,
) -> BTreeSet<String> {
    let c = catalog();
    let open_set = c.matching(REGION, &open(extra)).unwrap();
    let priced: Vec<(&InstanceType, f64)> = open_set
        .iter()
        .map(|t| (*t, unit(t, c.on_demand_price(REGION, &t.name).unwrap())))
        .collect();
    let lowest = |f: &dyn Fn(&InstanceType) -> bool| {
        priced
            .iter()
            .filter(|(t, _)| f(t))
            .map(|(_, p)| *p)
            .fold(f64::INFINITY, f64::min)
    };
    let mut reference =
        lowest(&|t| t.current_generation && ["c", "m", "r"].contains(&t.category.as_str()));
    if reference.is_infinite() {
        reference = lowest(&|t| t.current_generation);
    }
    if reference.is_infinite() {
        reference = lowest(&|_| true);
    }
    priced
        .iter()
        .filter(|(_, p)| *p <= reference * (1.0 + pct / 100.0) * (1.0 + 1e-12))
        .map(|(t, _)| t.name.clone())
        .collect()
}

fn with_pct(extra: &Value, pct: Option<i32>) -> InstanceRequirementsRequest {
    let mut r = open(extra.clone());
    r.on_demand_max_price_percentage_over_lowest_price = pct;
    r
}

#[test]
fn price_protection_defaults_to_20_percent_per_vcpu() {
    let extra =
        json!({"vCpuCount": {"min": 2, "max": 16}, "memoryMiB": {"min": 4096, "max": 65536}});
    let expected = protected_by_hand(extra.clone(), 20.0, |t, p| p / f64::from(t.vcpus));
    let got = matching(&with_pct(&extra, None));
    assert_eq!(got, expected);
    let unprotected = matching(&open(extra.clone()));
    assert!(got.len() < unprotected.len(), "20 % removed nothing");
    assert!(got.is_subset(&unprotected));
    // Whole families survive per vCPU: every size of the cheapest family is in.
    let cheapest = got.iter().min_by(|a, b| {
        let pa = catalog().on_demand_price(REGION, a).unwrap()
            / f64::from(catalog().get(a).unwrap().vcpus);
        let pb = catalog().on_demand_price(REGION, b).unwrap()
            / f64::from(catalog().get(b).unwrap().vcpus);
        pa.total_cmp(&pb)
    });
    assert!(cheapest.is_some());
    // An explicit 20 is the same as the default; 50 admits more; 0 keeps the cheapest only.
    assert_eq!(matching(&with_pct(&extra, Some(20))), got);
    let wider = matching(&with_pct(&extra, Some(50)));
    assert!(got.is_subset(&wider) && wider.len() > got.len());
    assert_eq!(
        matching(&with_pct(&extra, Some(50))),
        protected_by_hand(extra.clone(), 50.0, |t, p| p / f64::from(t.vcpus))
    );
    let zero = matching(&with_pct(&extra, Some(0)));
    assert!(!zero.is_empty() && zero.is_subset(&got));
    // 999999 turns it off.
    assert_eq!(matching(&with_pct(&extra, Some(999_999))), unprotected);
    assert_eq!(matching(&with_pct(&extra, Some(5_000_000))), unprotected);
}

#[test]
fn price_protection_per_instance_and_per_memory() {
    let extra =
        json!({"vCpuCount": {"min": 2, "max": 16}, "memoryMiB": {"min": 4096, "max": 65536}});
    let per_instance = MatchOptions {
        price_basis: PriceBasis::PerInstance,
        ..MatchOptions::default()
    };
    let got = names(
        &catalog()
            .matching_with(REGION, &with_pct(&extra, None), &per_instance)
            .unwrap(),
    );
    assert_eq!(got, protected_by_hand(extra.clone(), 20.0, |_, p| p));
    assert!(
        got.iter().all(|n| catalog().get(n).unwrap().vcpus == 2),
        "per instance keeps the smallest sizes"
    );
    let per_mem = MatchOptions {
        price_basis: PriceBasis::PerMemoryMib,
        ..MatchOptions::default()
    };
    let got = names(
        &catalog()
            .matching_with(REGION, &with_pct(&extra, None), &per_mem)
            .unwrap(),
    );
    assert_eq!(
        got,
        protected_by_hand(extra, 20.0, |t, p| p / t.memory_mib as f64)
    );
}

#[test]
fn architecture_filters_before_price_protection() {
    use berth_catalog::Architecture;
    let c = catalog();
    let extra = json!({"vCpuCount": {"min": 2, "max": 8}, "memoryMiB": {"min": 4096}});
    let x86 = MatchOptions {
        architecture: Some(Architecture::X86_64),
        ..MatchOptions::default()
    };
    let got = names(
        &c.matching_with(REGION, &with_pct(&extra, None), &x86)
            .unwrap(),
    );
    assert!(got
        .iter()
        .all(|n| c.get(n).unwrap().supports(Architecture::X86_64)));
    // By hand: the x86 subset of the unprotected set, protected on its own.
    let open_x86: Vec<&InstanceType> = c
        .matching(REGION, &open(extra.clone()))
        .unwrap()
        .into_iter()
        .filter(|t| t.supports(Architecture::X86_64))
        .collect();
    let unit = |t: &InstanceType| c.on_demand_price(REGION, &t.name).unwrap() / f64::from(t.vcpus);
    let reference = open_x86
        .iter()
        .filter(|t| t.current_generation && ["c", "m", "r"].contains(&t.category.as_str()))
        .map(|t| unit(t))
        .fold(f64::INFINITY, f64::min);
    let expected: BTreeSet<String> = open_x86
        .iter()
        .filter(|t| unit(t) <= reference * 1.2 * (1.0 + 1e-12))
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(got, expected);
    // Filtering afterwards keeps fewer x86 types: Graviton set the reference.
    let after: BTreeSet<String> = c
        .matching(REGION, &with_pct(&extra, None))
        .unwrap()
        .into_iter()
        .filter(|t| t.supports(Architecture::X86_64))
        .map(|t| t.name.clone())
        .collect();
    assert!(after.is_subset(&got) && after.len() < got.len());
    let arm = MatchOptions {
        architecture: Some(Architecture::Arm64),
        ..MatchOptions::default()
    };
    let got = c
        .matching_with(REGION, &with_pct(&extra, None), &arm)
        .unwrap();
    assert!(got.iter().all(|t| t.supports(Architecture::Arm64)));
}

#[test]
fn price_protection_reference_falls_back_without_c_m_r() {
    // Only GPU families: no C, M or R type, so the reference is the cheapest
    // current-generation type that matches.
    let extra = json!({"allowedInstanceTypes": ["g6.*", "g5.*", "p5.*"]});
    let expected = protected_by_hand(extra.clone(), 20.0, |t, p| p / f64::from(t.vcpus));
    let got = matching(&with_pct(&extra, None));
    assert_eq!(got, expected);
    assert!(!got.is_empty() && got.len() < matching(&open(extra)).len());
    // Only previous-generation types: the reference is the cheapest of them.
    let extra = json!({"allowedInstanceTypes": ["m4.*", "m5.*"]});
    let got = matching(&with_pct(&extra, None));
    assert_eq!(
        got,
        protected_by_hand(extra.clone(), 20.0, |t, p| p / f64::from(t.vcpus))
    );
    assert!(!got.is_empty());
}

#[test]
fn spot_thresholds_are_accepted_but_do_not_filter() {
    let base = matching(&open(json!({})));
    let spot = matching(&open(json!({"spotMaxPricePercentageOverLowestPrice": 10})));
    assert_eq!(spot, base);
    let spot = matching(&open(
        json!({"maxSpotPriceAsPercentageOfOptimalOnDemandPrice": 10}),
    ));
    assert_eq!(spot, base);
}

fn err(value: Value) -> String {
    let r = req(value);
    let e = catalog().matching(REGION, &r).unwrap_err();
    // Requirements::new reports the same error without a region.
    if e.is_invalid_request() {
        assert_eq!(Requirements::new(&r).unwrap_err(), e);
    } else {
        assert!(Requirements::new(&r).is_ok());
    }
    e.to_string()
}

#[test]
fn validation_errors_read_like_aws() {
    let v = "1 validation error detected: Value";
    assert_eq!(
        err(json!({"memoryMiB": {"min": 0}})),
        format!("{v} null at 'vCpuCount' failed to satisfy constraint: Member must not be null")
    );
    assert_eq!(
        err(json!({"vCpuCount": {"max": 4}, "memoryMiB": {"min": 0}})),
        format!(
            "{v} null at 'vCpuCount.min' failed to satisfy constraint: Member must not be null"
        )
    );
    assert_eq!(
        err(json!({"vCpuCount": {"min": 2}})),
        format!("{v} null at 'memoryMiB' failed to satisfy constraint: Member must not be null")
    );
    assert_eq!(
        err(json!({"vCpuCount": {"min": 2}, "memoryMiB": {"max": 4}})),
        format!(
            "{v} null at 'memoryMiB.min' failed to satisfy constraint: Member must not be null"
        )
    );
    assert_eq!(
        err(json!({"vCpuCount": {"min": -1}, "memoryMiB": {"min": 0}})),
        format!("{v} '-1' at 'vCpuCount.min' failed to satisfy constraint: Member must have value greater than or equal to 0")
    );
    assert_eq!(
        err(json!({"vCpuCount": {"min": 1}, "memoryMiB": {"min": 0, "max": -5}})),
        format!("{v} '-5' at 'memoryMiB.max' failed to satisfy constraint: Member must have value greater than or equal to 0")
    );
    assert_eq!(
        err(json!({"vCpuCount": {"min": 8, "max": 4}, "memoryMiB": {"min": 0}})),
        "The minimum value for vCpuCount (8) must be less than or equal to the maximum value (4)."
    );
    assert_eq!(
        err(json!({"vCpuCount": {"min": 2}, "memoryMiB": {"min": 0}, "memoryGiBPerVCpu": {"min": 8.5, "max": 2.0}})),
        "The minimum value for memoryGiBPerVCpu (8.5) must be less than or equal to the maximum value (2)."
    );
    assert_eq!(
        err(json!({"vCpuCount": {"min": 2}, "memoryMiB": {"min": 0}, "networkBandwidthGbps": {"min": -0.5}})),
        format!("{v} '-0.5' at 'networkBandwidthGbps.min' failed to satisfy constraint: Member must have value greater than or equal to 0")
    );
    assert_eq!(
        err(json!({"vCpuCount": {"min": 2}, "memoryMiB": {"min": 0},
                   "allowedInstanceTypes": ["m5.*"], "excludedInstanceTypes": ["m5.large"]})),
        "You can specify allowedInstanceTypes or excludedInstanceTypes, but not both."
    );
    assert_eq!(
        err(json!({"vCpuCount": {"min": 2}, "memoryMiB": {"min": 0},
                   "spotMaxPricePercentageOverLowestPrice": 10,
                   "maxSpotPriceAsPercentageOfOptimalOnDemandPrice": 10})),
        "You can specify spotMaxPricePercentageOverLowestPrice or maxSpotPriceAsPercentageOfOptimalOnDemandPrice, but not both."
    );
    assert_eq!(
        err(json!({"vCpuCount": {"min": 2}, "memoryMiB": {"min": 0}, "onDemandMaxPricePercentageOverLowestPrice": -1})),
        format!("{v} '-1' at 'onDemandMaxPricePercentageOverLowestPrice' failed to satisfy constraint: Member must have value greater than or equal to 0")
    );
    assert_eq!(
        err(json!({"vCpuCount": {"min": 2}, "memoryMiB": {"min": 0}, "allowedInstanceTypes": ["m5.large;rm"]})),
        format!("{v} 'm5.large;rm' at 'allowedInstanceTypes' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9\\.\\*\\-]+")
    );
    assert_eq!(
        err(json!({"vCpuCount": {"min": 2}, "memoryMiB": {"min": 0}, "excludedInstanceTypes": [""]})),
        format!("{v} '' at 'excludedInstanceTypes' failed to satisfy constraint: Member must have length greater than or equal to 1")
    );
    let long = "m".repeat(31);
    assert_eq!(
        err(json!({"vCpuCount": {"min": 2}, "memoryMiB": {"min": 0}, "excludedInstanceTypes": [long]})),
        format!("{v} '{long}' at 'excludedInstanceTypes' failed to satisfy constraint: Member must have length less than or equal to 30")
    );
    let many: Vec<String> = (0..401).map(|i| format!("m{i}.*")).collect();
    assert_eq!(
        err(json!({"vCpuCount": {"min": 2}, "memoryMiB": {"min": 0}, "allowedInstanceTypes": many})),
        format!("{v} with 401 members at 'allowedInstanceTypes' failed to satisfy constraint: Member must have length less than or equal to 400")
    );
    // Every other range is checked too.
    for attr in [
        "networkInterfaceCount",
        "totalLocalStorageGB",
        "baselineEbsBandwidthMbps",
        "acceleratorCount",
        "acceleratorTotalMemoryMiB",
    ] {
        let mut r = json!({"vCpuCount": {"min": 2}, "memoryMiB": {"min": 0}});
        r[attr] = json!({"min": 5, "max": 1});
        assert_eq!(
            err(r),
            format!("The minimum value for {attr} (5) must be less than or equal to the maximum value (1).")
        );
    }
    assert_eq!(
        err(json!({"vCpuCount": {"min": 4096}, "memoryMiB": {"min": 0}})),
        "No instance type in us-east-1 satisfies the instance requirements. Widen vCpuCount or memoryMiB, relax the other attributes, or check allowedInstanceTypes and excludedInstanceTypes."
    );
    assert_eq!(
        catalog()
            .matching("mars-1", &open(json!({})))
            .unwrap_err()
            .to_string(),
        "The region 'mars-1' is not in the instance type catalog."
    );
}

#[test]
fn validation_precedes_region_lookup() {
    let r = req(json!({"memoryMiB": {"min": 0}}));
    assert!(matches!(
        catalog().matching("mars-1", &r),
        Err(RequirementsError::Missing { .. })
    ));
}

#[test]
fn non_finite_bounds_are_rejected() {
    let mut r = open(json!({}));
    r.memory_gib_per_v_cpu = Some(berth_model::ecs::MemoryGiBPerVCpuRequest {
        min: Some(f64::NAN),
        max: None,
    });
    assert!(matches!(
        Requirements::new(&r),
        Err(RequirementsError::NotFinite {
            path: "memoryGiBPerVCpu.min",
            ..
        })
    ));
}

#[test]
fn empty_lists_count_as_absent() {
    let base = matching(&open(json!({})));
    let empty = matching(&open(json!({
        "cpuManufacturers": [], "instanceGenerations": [], "acceleratorTypes": [],
        "acceleratorNames": [], "acceleratorManufacturers": [], "localStorageTypes": [],
        "allowedInstanceTypes": [], "excludedInstanceTypes": [],
    })));
    assert_eq!(empty, base);
    // So an empty allowed list beside an excluded one is no conflict.
    let r = open(json!({"allowedInstanceTypes": [], "excludedInstanceTypes": ["m7i.*"]}));
    assert!(catalog().matching(REGION, &r).is_ok());
}

#[test]
fn requirements_admits_and_results_are_sorted() {
    let r = open(json!({"vCpuCount": {"min": 2, "max": 4}}));
    let requirements = Requirements::new(&r).unwrap();
    assert_eq!(requirements.on_demand_max_price_percentage(), None);
    assert!(requirements.admits(catalog().get("m7i.large").unwrap()));
    assert!(!requirements.admits(catalog().get("m7i.2xlarge").unwrap()));
    let got = catalog().matching(REGION, &r).unwrap();
    assert!(got.windows(2).all(|w| w[0].name < w[1].name));
    let d = Requirements::new(&req(
        json!({"vCpuCount": {"min": 0}, "memoryMiB": {"min": 0}}),
    ))
    .unwrap();
    assert_eq!(d.on_demand_max_price_percentage(), Some(20));
}

#[test]
fn cheapest_fitting_over_a_match() {
    let c = catalog();
    let r = open(json!({"vCpuCount": {"min": 2, "max": 64}, "instanceGenerations": ["current"]}));
    let cands = c.matching(REGION, &r).unwrap();
    let pick = c.cheapest_fitting(REGION, &cands, 4096, 8192, 0).unwrap();
    let cost = c.hourly_cost(REGION, &pick.name).unwrap();
    for t in &cands {
        if t.cpu_units() >= 4096 && t.memory_mib >= 8192 {
            assert!(
                c.hourly_cost(REGION, &t.name).unwrap() >= cost,
                "{} is cheaper than {}",
                t.name,
                pick.name
            );
        }
    }
    assert!(pick.cpu_units() >= 4096 && pick.memory_mib >= 8192);
}

#[test]
fn a_question_asked_again_gets_the_same_answer_as_a_fresh_catalog() {
    use berth_catalog::{Architecture, CatalogCsv};
    let fresh = || Catalog::from_csv(&CatalogCsv::EMBEDDED).unwrap();
    let kept = fresh();
    let questions = [
        (
            open(json!({"vCpuCount": {"min": 2, "max": 8}})),
            MatchOptions::default(),
        ),
        (
            req(json!({"vCpuCount": {"min": 2, "max": 16}, "memoryMiB": {"min": 4096}})),
            MatchOptions {
                architecture: Some(Architecture::Arm64),
                ..MatchOptions::default()
            },
        ),
        (
            req(json!({"vCpuCount": {"min": 2, "max": 16}, "memoryMiB": {"min": 4096}})),
            MatchOptions {
                price_basis: PriceBasis::PerVcpu,
                ..MatchOptions::default()
            },
        ),
        // No type has this much: an error, kept as well.
        (
            open(json!({"vCpuCount": {"min": 100000}})),
            MatchOptions::default(),
        ),
    ];
    for round in 0..3 {
        for (r, o) in &questions {
            let want = fresh()
                .matching_with(REGION, r, o)
                .map(|ts| names(&ts))
                .map_err(|e| e.to_string());
            let got = kept
                .matching_with(REGION, r, o)
                .map(|ts| names(&ts))
                .map_err(|e| e.to_string());
            assert_eq!(got, want, "round {round}: {o:?}");
        }
        // Another region is another question.
        let other = kept
            .matching_with("eu-west-1", &questions[0].0, &questions[0].1)
            .map(|ts| names(&ts))
            .map_err(|e| e.to_string());
        let want = fresh()
            .matching_with("eu-west-1", &questions[0].0, &questions[0].1)
            .map(|ts| names(&ts))
            .map_err(|e| e.to_string());
        assert_eq!(other, want);
        assert_ne!(other, Ok(BTreeSet::new()));
    }
}

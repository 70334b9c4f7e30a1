//! Attribute-based instance type selection: which instance types an ECS
//! `InstanceRequirementsRequest` admits in a region.
//!
//! The rules follow AWS's documentation of EC2 attribute-based instance type
//! selection (`InstanceRequirements` / `InstanceRequirementsRequest` in the
//! EC2 and Auto Scaling API references), which the ECS Managed Instances
//! `InstanceRequirementsRequest` mirrors, plus the ECS developer guide's page
//! "Amazon ECS Managed Instances instance types". Each rule below cites the
//! sentence it implements. Where the documents are silent the choice is
//! marked **berth's choice**.

use berth_model::ecs::{
    BareMetal, BurstablePerformance, InstanceGeneration, InstanceRequirementsRequest, LocalStorage,
};

use crate::{Catalog, InstanceType};

/// Answers of [`Catalog::matching_with`] kept at most (all are dropped past it).
const MATCHES_KEPT: usize = 256;

/// `onDemandMaxPricePercentageOverLowestPrice` when the request omits it.
/// EC2 API reference, `InstanceRequirementsRequest.OnDemandMaxPricePercentageOverLowestPrice`:
/// "Default: 20".
pub const DEFAULT_ON_DEMAND_MAX_PRICE_PERCENTAGE: i32 = 20;

/// The value AWS documents for turning price protection off: "To turn off
/// price protection, specify a high value, such as 999999." Any value at or
/// above it disables the filter here.
pub const PRICE_PROTECTION_OFF: i32 = 999_999;

/// The most entries `allowedInstanceTypes` / `excludedInstanceTypes` may have
/// (EC2 API reference: "Array Members: Maximum number of 400 items").
pub const MAX_INSTANCE_TYPE_PATTERNS: usize = 400;

/// The longest entry allowed in those lists (EC2 API reference: "Length
/// Constraints: Minimum length of 1. Maximum length of 30.").
pub const MAX_INSTANCE_TYPE_PATTERN_LEN: usize = 30;

/// An invalid request, or one nothing satisfies.
///
/// Validation messages copy the shape of AWS's request-validation errors
/// ("1 validation error detected: Value … at '…' failed to satisfy
/// constraint: …") where AWS reports the problem that way. AWS's exact text
/// for the semantic errors (min > max, both lists, both spot thresholds, no
/// match) was not found in any searchable source; those messages are berth's
/// own wording in AWS's style.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequirementsError {
    /// A required member is absent (`vCpuCount`, `memoryMiB`, or their `min`).
    #[error("1 validation error detected: Value null at '{path}' failed to satisfy constraint: Member must not be null")]
    Missing {
        /// The member, e.g. `vCpuCount.min`.
        path: &'static str,
    },
    /// A count, size or percentage below 0.
    #[error("1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: Member must have value greater than or equal to 0")]
    Negative {
        /// The member, e.g. `memoryMiB.max`.
        path: &'static str,
        /// The value as given.
        value: String,
    },
    /// A floating-point bound that is NaN or infinite.
    #[error("1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: Member must be a finite number")]
    NotFinite {
        /// The member.
        path: &'static str,
        /// The value as given.
        value: String,
    },
    /// `min` greater than `max` in a range.
    #[error("The minimum value for {attribute} ({min}) must be less than or equal to the maximum value ({max}).")]
    InvertedRange {
        /// The range, e.g. `vCpuCount`.
        attribute: &'static str,
        /// The minimum as given.
        min: String,
        /// The maximum as given.
        max: String,
    },
    /// Both `allowedInstanceTypes` and `excludedInstanceTypes` are non-empty.
    /// ("If you specify AllowedInstanceTypes, you can't specify ExcludedInstanceTypes.")
    #[error("You can specify allowedInstanceTypes or excludedInstanceTypes, but not both.")]
    AllowedAndExcluded,
    /// Both spot thresholds are given. ("Only one of
    /// SpotMaxPricePercentageOverLowestPrice or
    /// MaxSpotPriceAsPercentageOfOptimalOnDemandPrice can be specified.")
    #[error("You can specify spotMaxPricePercentageOverLowestPrice or maxSpotPriceAsPercentageOfOptimalOnDemandPrice, but not both.")]
    BothSpotPriceProtections,
    /// More than [`MAX_INSTANCE_TYPE_PATTERNS`] entries in a list.
    #[error("1 validation error detected: Value with {count} members at '{path}' failed to satisfy constraint: Member must have length less than or equal to 400")]
    TooManyInstanceTypes {
        /// `allowedInstanceTypes` or `excludedInstanceTypes`.
        path: &'static str,
        /// How many there were.
        count: usize,
    },
    /// An entry that is empty, longer than 30 characters, or has a character
    /// outside `[a-zA-Z0-9.*-]` (the EC2 API's pattern for these lists).
    #[error("1 validation error detected: Value '{pattern}' at '{path}' failed to satisfy constraint: {constraint}")]
    InvalidInstanceTypePattern {
        /// `allowedInstanceTypes` or `excludedInstanceTypes`.
        path: &'static str,
        /// The entry.
        pattern: String,
        /// What it violates.
        constraint: &'static str,
    },
    /// The catalog knows nothing about the region.
    #[error("The region '{0}' is not in the instance type catalog.")]
    UnknownRegion(String),
    /// The request is valid but no instance type satisfies it in the region.
    #[error("No instance type in {region} satisfies the instance requirements. Widen vCpuCount or memoryMiB, relax the other attributes, or check allowedInstanceTypes and excludedInstanceTypes.")]
    NoMatch {
        /// The region searched.
        region: String,
    },
}

impl RequirementsError {
    /// Whether the request itself is invalid (AWS would answer
    /// `InvalidParameterException`), as opposed to valid but unsatisfiable
    /// ([`RequirementsError::NoMatch`]) or aimed at an unknown region.
    pub fn is_invalid_request(&self) -> bool {
        !matches!(self, Self::NoMatch { .. } | Self::UnknownRegion(_))
    }
}

/// What price protection compares (berth's choice; see [`MatchOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PriceBasis {
    /// Price per vCPU, as EC2 does "if you set TargetCapacityUnitType to vcpu".
    #[default]
    PerVcpu,
    /// Price per instance, EC2's default for fleets counted in instances.
    PerInstance,
    /// Price per MiB of memory, as EC2 does for `memory-mib` capacity units.
    PerMemoryMib,
}

/// Knobs for [`Catalog::matching_with`].
///
/// **Price basis (berth's choice).** EC2 applies price protection "based on
/// the per-vCPU or per-memory price instead of the per-instance price" when
/// capacity is counted in vCPUs or memory, and per instance otherwise. ECS
/// Managed Instances sizes capacity to pending tasks and places several tasks
/// on larger instances, so counting per instance (which would drop every size
/// above the smallest) cannot be what it does; berth compares per vCPU by
/// default.
///
/// **Architecture.** The ECS request has no architecture member; ECS takes
/// it from the task definition's `runtimePlatform`. EC2's own preview call,
/// `GetInstanceTypesFromInstanceRequirements`, takes it beside the
/// requirements (`ArchitectureType.N`, "Required: Yes"), so it filters before
/// price protection picks its reference. Set `architecture` to do the same;
/// filtering the result afterwards instead would keep a reference price that
/// another architecture set (Graviton is usually cheapest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MatchOptions {
    /// What price protection compares.
    pub price_basis: PriceBasis,
    /// Only types supporting this architecture; `None` = any.
    pub architecture: Option<crate::Architecture>,
}

/// An inclusive range with either end optional.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Range {
    min: Option<f64>,
    max: Option<f64>,
}

impl Range {
    fn contains(&self, value: f64) -> bool {
        self.min.is_none_or(|m| value >= m) && self.max.is_none_or(|m| value <= m)
    }
}

/// A validated `InstanceRequirementsRequest`, ready to test instance types
/// against. Build it with [`Requirements::new`]; [`Requirements::admits`]
/// applies the attribute rules (not region, price or price protection).
///
/// | attribute | rule | default |
/// | --- | --- | --- |
/// | `vCpuCount`, `memoryMiB` | inclusive range; `min` required | — |
/// | `memoryGiBPerVCpu`, `networkInterfaceCount`, `totalLocalStorageGB`, `baselineEbsBandwidthMbps`, `acceleratorTotalMemoryMiB` | inclusive range, either end optional | no limit |
/// | `networkBandwidthGbps` | range over the **baseline** bandwidth | no limit |
/// | `acceleratorCount` | range over GPUs + other accelerators; `max: 0` excludes accelerated types | no limit |
/// | `cpuManufacturers`, `instanceGenerations`, `localStorageTypes` | any of the listed values | any |
/// | `acceleratorTypes`, `acceleratorManufacturers`, `acceleratorNames` | the type must have one of the listed accelerators | any (accelerator or none) |
/// | `bareMetal`, `burstablePerformance` | included / required / excluded | excluded |
/// | `localStorage` | included / required / excluded | included |
/// | `requireHibernateSupport` | `true` requires hibernation support | false |
/// | `allowedInstanceTypes` / `excludedInstanceTypes` | `*` wildcards over the whole name; not both | all / none |
/// | `onDemandMaxPricePercentageOverLowestPrice` | see [`Catalog::matching_with`] | 20; 999999 = off |
///
/// Sources (quoted rule by rule in the code):
/// * EC2 API reference, `InstanceRequirementsRequest` and its range shapes:
///   <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceRequirementsRequest.html>,
///   <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_AcceleratorCountRequest.html>
/// * EC2 Auto Scaling API reference, `InstanceRequirements` (price-protection
///   fallback): <https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_InstanceRequirements.html>
/// * ECS API reference, `InstanceRequirementsRequest` and
///   `VCpuCountRangeRequest`: <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_InstanceRequirementsRequest.html>
/// * ECS developer guide, "Amazon ECS Managed Instances instance types"
///   (wildcards `c6i.*`, `m6*.*`): <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/managed-instances-instance-types.html>
/// * AWS Batch API reference, `InstanceRequirementsRequest` (families such
///   as `g5`): <https://docs.aws.amazon.com/batch/latest/APIReference/API_InstanceRequirementsRequest.html>
#[derive(Debug, Clone, PartialEq)]
pub struct Requirements {
    vcpus: Range,
    memory_mib: Range,
    memory_gib_per_vcpu: Range,
    network_interfaces: Range,
    total_local_storage_gb: Range,
    baseline_ebs_mbps: Range,
    accelerator_count: Range,
    accelerator_total_memory_mib: Range,
    network_bandwidth_gbps: Range,
    cpu_manufacturers: Vec<berth_model::ecs::CpuManufacturer>,
    instance_generations: Vec<InstanceGeneration>,
    bare_metal: BareMetal,
    burstable: BurstablePerformance,
    require_hibernate: bool,
    local_storage: LocalStorage,
    local_storage_types: Vec<berth_model::ecs::LocalStorageType>,
    accelerator_types: Vec<berth_model::ecs::AcceleratorType>,
    accelerator_manufacturers: Vec<berth_model::ecs::AcceleratorManufacturer>,
    accelerator_names: Vec<berth_model::ecs::AcceleratorName>,
    allowed: Vec<String>,
    excluded: Vec<String>,
    on_demand_max_pct: Option<u32>,
}

fn int_range(
    attribute: &'static str,
    paths: (&'static str, &'static str),
    min: Option<i32>,
    max: Option<i32>,
) -> Result<Range, RequirementsError> {
    for (path, value) in [(paths.0, min), (paths.1, max)] {
        if let Some(v) = value.filter(|v| *v < 0) {
            return Err(RequirementsError::Negative {
                path,
                value: v.to_string(),
            });
        }
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            return Err(RequirementsError::InvertedRange {
                attribute,
                min: lo.to_string(),
                max: hi.to_string(),
            });
        }
    }
    Ok(Range {
        min: min.map(f64::from),
        max: max.map(f64::from),
    })
}

fn float_range(
    attribute: &'static str,
    paths: (&'static str, &'static str),
    min: Option<f64>,
    max: Option<f64>,
) -> Result<Range, RequirementsError> {
    for (path, value) in [(paths.0, min), (paths.1, max)] {
        if let Some(v) = value {
            if !v.is_finite() {
                return Err(RequirementsError::NotFinite {
                    path,
                    value: v.to_string(),
                });
            }
            if v < 0.0 {
                return Err(RequirementsError::Negative {
                    path,
                    value: v.to_string(),
                });
            }
        }
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            return Err(RequirementsError::InvertedRange {
                attribute,
                min: lo.to_string(),
                max: hi.to_string(),
            });
        }
    }
    Ok(Range { min, max })
}

/// Checks one `allowedInstanceTypes` / `excludedInstanceTypes` list and
/// returns its entries in lower case.
fn patterns(
    path: &'static str,
    list: &Option<Vec<String>>,
) -> Result<Vec<String>, RequirementsError> {
    let list = list.as_deref().unwrap_or_default();
    if list.len() > MAX_INSTANCE_TYPE_PATTERNS {
        return Err(RequirementsError::TooManyInstanceTypes {
            path,
            count: list.len(),
        });
    }
    list.iter()
        .map(|p| {
            let bad = |constraint| RequirementsError::InvalidInstanceTypePattern {
                path,
                pattern: p.clone(),
                constraint,
            };
            if p.is_empty() {
                return Err(bad("Member must have length greater than or equal to 1"));
            }
            if p.chars().count() > MAX_INSTANCE_TYPE_PATTERN_LEN {
                return Err(bad("Member must have length less than or equal to 30"));
            }
            if !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '*' | '-'))
            {
                return Err(bad(
                    "Member must satisfy regular expression pattern: [a-zA-Z0-9\\.\\*\\-]+",
                ));
            }
            Ok(p.to_ascii_lowercase())
        })
        .collect()
}

/// Whether `name` matches one `allowedInstanceTypes`/`excludedInstanceTypes`
/// entry (already lower-cased).
///
/// EC2 API reference, `AllowedInstanceTypes`: "You can use strings with one
/// or more wild cards, represented by an asterisk (*), to allow an instance
/// type, size, or generation. The following are examples: m5.8xlarge, c5*.*,
/// m5a.*, r*, *3*. For example, if you specify c5*, Amazon EC2 will allow the
/// entire C5 instance family, which includes all C5a and C5n instance types.
/// If you specify m5a.*, Amazon EC2 will allow all the M5a instance types, but
/// not the M5n instance types." So `*` matches any run of characters, dots
/// included, and the pattern must cover the whole name.
///
/// An entry with neither `*` nor `.` names a family (`g5` = `g5.*`): the ECS
/// Managed Instances `allowedInstanceTypes` is documented as "A list of
/// specific instance types or instance families … (for example, m5.large or
/// g5)" (AWS Batch API reference, `InstanceRequirementsRequest`, which
/// describes the ECS Managed Instances capacity provider's field).
pub fn instance_type_pattern_matches(pattern: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if !pattern.contains(['*', '.']) {
        return name.split('.').next() == Some(pattern);
    }
    glob(pattern.as_bytes(), name.as_bytes())
}

/// `*`-only glob over the whole text (iterative, with backtracking to the
/// last star).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// ECS Managed Instances' own floor, on top of the requested attributes:
/// never an instance type with 1 vCPU or less, never a `nano` or `micro`
/// size. **Source:** berth's brief; AWS's ECS Managed Instances pages found
/// in the searchable corpora (developer guide "instance types" page, API
/// reference, launch blog) do not state it, so it is recorded here as a
/// product rule rather than a cited AWS rule.
pub fn ecs_managed_instances_floor(t: &InstanceType) -> bool {
    t.vcpus > 1 && t.size != "nano" && t.size != "micro"
}

impl Requirements {
    /// Validates `req` and applies AWS's defaults to what it omits.
    pub fn new(req: &InstanceRequirementsRequest) -> Result<Self, RequirementsError> {
        use RequirementsError::Missing;
        // ECS API reference, InstanceRequirementsRequest: vCpuCount and
        // memoryMiB are "Required: Yes"; VCpuCountRangeRequest.min and
        // MemoryMiBRequest.min are "Required: Yes".
        let vcpu = req
            .v_cpu_count
            .as_ref()
            .ok_or(Missing { path: "vCpuCount" })?;
        let vcpu_min = vcpu.min.ok_or(Missing {
            path: "vCpuCount.min",
        })?;
        let mem = req
            .memory_mib
            .as_ref()
            .ok_or(Missing { path: "memoryMiB" })?;
        let mem_min = mem.min.ok_or(Missing {
            path: "memoryMiB.min",
        })?;

        // Ranges: "The minimum … To specify no minimum limit, omit this
        // parameter" / "The maximum … To specify no maximum limit, omit this
        // parameter" (EC2 API reference, each *Request range shape); bounds are
        // inclusive ("Instance types with fewer vCPUs than this value are
        // excluded", ECS API reference, VCpuCountRangeRequest).
        let vcpus = int_range(
            "vCpuCount",
            ("vCpuCount.min", "vCpuCount.max"),
            Some(vcpu_min),
            vcpu.max,
        )?;
        let memory_mib = int_range(
            "memoryMiB",
            ("memoryMiB.min", "memoryMiB.max"),
            Some(mem_min),
            mem.max,
        )?;
        let r = req.memory_gib_per_v_cpu.as_ref();
        let memory_gib_per_vcpu = float_range(
            "memoryGiBPerVCpu",
            ("memoryGiBPerVCpu.min", "memoryGiBPerVCpu.max"),
            r.and_then(|r| r.min),
            r.and_then(|r| r.max),
        )?;
        let r = req.network_interface_count.as_ref();
        let network_interfaces = int_range(
            "networkInterfaceCount",
            ("networkInterfaceCount.min", "networkInterfaceCount.max"),
            r.and_then(|r| r.min),
            r.and_then(|r| r.max),
        )?;
        let r = req.total_local_storage_gb.as_ref();
        let total_local_storage_gb = float_range(
            "totalLocalStorageGB",
            ("totalLocalStorageGB.min", "totalLocalStorageGB.max"),
            r.and_then(|r| r.min),
            r.and_then(|r| r.max),
        )?;
        let r = req.baseline_ebs_bandwidth_mbps.as_ref();
        let baseline_ebs_mbps = int_range(
            "baselineEbsBandwidthMbps",
            (
                "baselineEbsBandwidthMbps.min",
                "baselineEbsBandwidthMbps.max",
            ),
            r.and_then(|r| r.min),
            r.and_then(|r| r.max),
        )?;
        let r = req.accelerator_count.as_ref();
        let accelerator_count = int_range(
            "acceleratorCount",
            ("acceleratorCount.min", "acceleratorCount.max"),
            r.and_then(|r| r.min),
            r.and_then(|r| r.max),
        )?;
        let r = req.accelerator_total_memory_mib.as_ref();
        let accelerator_total_memory_mib = int_range(
            "acceleratorTotalMemoryMiB",
            (
                "acceleratorTotalMemoryMiB.min",
                "acceleratorTotalMemoryMiB.max",
            ),
            r.and_then(|r| r.min),
            r.and_then(|r| r.max),
        )?;
        let r = req.network_bandwidth_gbps.as_ref();
        let network_bandwidth_gbps = float_range(
            "networkBandwidthGbps",
            ("networkBandwidthGbps.min", "networkBandwidthGbps.max"),
            r.and_then(|r| r.min),
            r.and_then(|r| r.max),
        )?;

        // "To limit the list of instance types … you can use one of the
        // following parameters, but not both in the same request:
        // AllowedInstanceTypes … ExcludedInstanceTypes" (EC2 API reference,
        // InstanceRequirementsRequest). An empty list counts as absent
        // (berth's choice).
        let allowed = patterns("allowedInstanceTypes", &req.allowed_instance_types)?;
        let excluded = patterns("excludedInstanceTypes", &req.excluded_instance_types)?;
        if !allowed.is_empty() && !excluded.is_empty() {
            return Err(RequirementsError::AllowedAndExcluded);
        }

        let percentages = [
            (
                "onDemandMaxPricePercentageOverLowestPrice",
                req.on_demand_max_price_percentage_over_lowest_price,
            ),
            (
                "spotMaxPricePercentageOverLowestPrice",
                req.spot_max_price_percentage_over_lowest_price,
            ),
            (
                "maxSpotPriceAsPercentageOfOptimalOnDemandPrice",
                req.max_spot_price_as_percentage_of_optimal_on_demand_price,
            ),
        ];
        for (path, value) in percentages {
            if let Some(v) = value.filter(|v| *v < 0) {
                return Err(RequirementsError::Negative {
                    path,
                    value: v.to_string(),
                });
            }
        }
        // "Only one of SpotMaxPricePercentageOverLowestPrice or
        // MaxSpotPriceAsPercentageOfOptimalOnDemandPrice can be specified."
        if req.spot_max_price_percentage_over_lowest_price.is_some()
            && req
                .max_spot_price_as_percentage_of_optimal_on_demand_price
                .is_some()
        {
            return Err(RequirementsError::BothSpotPriceProtections);
        }
        // "Default: 20" … "To turn off price protection, specify a high value,
        // such as 999999."
        let pct = req
            .on_demand_max_price_percentage_over_lowest_price
            .unwrap_or(DEFAULT_ON_DEMAND_MAX_PRICE_PERCENTAGE);
        let on_demand_max_pct = (pct < PRICE_PROTECTION_OFF).then(|| pct.unsigned_abs());

        Ok(Requirements {
            vcpus,
            memory_mib,
            memory_gib_per_vcpu,
            network_interfaces,
            total_local_storage_gb,
            baseline_ebs_mbps,
            accelerator_count,
            accelerator_total_memory_mib,
            network_bandwidth_gbps,
            cpu_manufacturers: req.cpu_manufacturers.clone().unwrap_or_default(),
            instance_generations: req.instance_generations.clone().unwrap_or_default(),
            // "BareMetal … Default: excluded"
            bare_metal: req.bare_metal.unwrap_or(BareMetal::Excluded),
            // "BurstablePerformance … Default: excluded"
            burstable: req
                .burstable_performance
                .unwrap_or(BurstablePerformance::Excluded),
            // "RequireHibernateSupport … Default: false"
            require_hibernate: req.require_hibernate_support.unwrap_or(false),
            // "LocalStorage … Default: included"
            local_storage: req.local_storage.unwrap_or(LocalStorage::Included),
            local_storage_types: req.local_storage_types.clone().unwrap_or_default(),
            accelerator_types: req.accelerator_types.clone().unwrap_or_default(),
            accelerator_manufacturers: req.accelerator_manufacturers.clone().unwrap_or_default(),
            accelerator_names: req.accelerator_names.clone().unwrap_or_default(),
            allowed,
            excluded,
            on_demand_max_pct,
        })
    }

    /// The on-demand price-protection threshold in percent, `None` when off.
    pub fn on_demand_max_price_percentage(&self) -> Option<u32> {
        self.on_demand_max_pct
    }

    /// Whether `t` satisfies every attribute of the request (AND across
    /// attributes, OR within a list: "When you specify multiple attributes,
    /// you get instance types that satisfy all of the specified attributes. If
    /// you specify multiple values for an attribute, you get instance types
    /// that satisfy any of the specified values."). Region, price, price
    /// protection and the ECS floor are not applied here.
    pub fn admits(&self, t: &InstanceType) -> bool {
        // vCpuCount, memoryMiB: inclusive ranges.
        self.vcpus.contains(f64::from(t.vcpus))
            && self.memory_mib.contains(t.memory_mib as f64)
            // memoryGiBPerVCpu: "The minimum and maximum amount of memory per
            // vCPU, in GiB. Default: No minimum or maximum limits".
            && self.memory_gib_per_vcpu.contains(t.memory_gib_per_vcpu())
            // cpuManufacturers: "Default: Any manufacturer". A maker the model
            // has no value for (Apple) matches no list.
            && (self.cpu_manufacturers.is_empty()
                || t.cpu_manufacturer.ecs().is_some_and(|m| self.cpu_manufacturers.contains(&m)))
            // instanceGenerations: "For current generation instance types,
            // specify current. … For previous generation instance types,
            // specify previous. Default: Current and previous generation
            // instance types". Generation = the CurrentGeneration flag.
            && (self.instance_generations.is_empty()
                || self.instance_generations.contains(&if t.current_generation {
                    InstanceGeneration::Current
                } else {
                    InstanceGeneration::Previous
                }))
            && tri_state(self.bare_metal_mode(), t.bare_metal)
            && tri_state(self.burstable_mode(), t.burstable)
            // requireHibernateSupport: "Indicates whether instance types must
            // support hibernation for On-Demand Instances."
            && (!self.require_hibernate || t.hibernation_supported)
            // networkInterfaceCount: "The minimum and maximum number of network
            // interfaces."
            && self.network_interfaces.contains(f64::from(t.max_network_interfaces))
            && tri_state(self.local_storage_mode(), t.local_storage_gb > 0)
            // localStorageTypes: "For instance types with hard disk drive (HDD)
            // storage, specify hdd. For instance types with solid state drive
            // (SSD) storage, specify ssd. Default: hdd and ssd". It restricts
            // the kind of instance store; EBS-only types have none to restrict
            // and pass (berth's choice; `localStorage: required` is how to
            // demand a disk).
            && (self.local_storage_types.is_empty()
                || t.local_storage_type.is_none_or(|k| self.local_storage_types.contains(&k)))
            // totalLocalStorageGB: "The minimum and maximum amount of total
            // local storage, in GB." EBS-only types have 0.
            && self.total_local_storage_gb.contains(t.local_storage_gb as f64)
            // baselineEbsBandwidthMbps: "The minimum and maximum baseline
            // bandwidth to Amazon EBS, in Mbps."
            && self.baseline_ebs_mbps.contains(f64::from(t.ebs_baseline_bandwidth_mbps))
            // acceleratorTypes: "The accelerator types that must be on the
            // instance type. For instance types with GPU accelerators, specify
            // gpu. … FPGA … fpga. … inference accelerators, specify inference.
            // Default: Any accelerator type". A given list therefore requires
            // one of the kinds; types without accelerators fail it.
            && (self.accelerator_types.is_empty()
                || t.accelerator_types().iter().any(|k| self.accelerator_types.contains(k)))
            // acceleratorCount: "The minimum and maximum number of accelerators
            // (GPUs, FPGAs, or AWS Inferentia chips) on an instance. To exclude
            // accelerator-enabled instance types, set Max to 0. Default: No
            // minimum or maximum limits".
            && self.accelerator_count.contains(f64::from(t.accelerator_total_count()))
            // acceleratorManufacturers: "Indicates whether instance types must
            // have accelerators by specific manufacturers. … Default: Any
            // manufacturer".
            && (self.accelerator_manufacturers.is_empty()
                || t.accelerator_manufacturers().iter().any(|m| self.accelerator_manufacturers.contains(m)))
            // acceleratorNames: "The accelerators that must be on the instance
            // type. … Default: Any accelerator".
            && (self.accelerator_names.is_empty()
                || t.accelerator_names().iter().any(|n| self.accelerator_names.contains(n)))
            // acceleratorTotalMemoryMiB: "The minimum and maximum amount of
            // total accelerator memory, in MiB." (GPU + other accelerators.)
            && self.accelerator_total_memory_mib.contains(t.accelerator_total_memory_mib() as f64)
            // networkBandwidthGbps: "The minimum and maximum amount of baseline
            // network bandwidth, in gigabits per second (Gbps)."
            && self.network_bandwidth_gbps.contains(t.network_baseline_gbps)
            // allowedInstanceTypes: "All other instance types are ignored, even
            // if they match your specified attributes." excludedInstanceTypes:
            // "The instance types to exclude from the list, even if they match
            // your specified attributes."
            && (self.allowed.is_empty()
                || self.allowed.iter().any(|p| instance_type_pattern_matches(p, &t.name)))
            && !self.excluded.iter().any(|p| instance_type_pattern_matches(p, &t.name))
    }

    fn bare_metal_mode(&self) -> TriState {
        match self.bare_metal {
            BareMetal::Included => TriState::Included,
            BareMetal::Required => TriState::Required,
            BareMetal::Excluded => TriState::Excluded,
        }
    }

    fn burstable_mode(&self) -> TriState {
        match self.burstable {
            BurstablePerformance::Included => TriState::Included,
            BurstablePerformance::Required => TriState::Required,
            BurstablePerformance::Excluded => TriState::Excluded,
        }
    }

    fn local_storage_mode(&self) -> TriState {
        match self.local_storage {
            LocalStorage::Included => TriState::Included,
            LocalStorage::Required => TriState::Required,
            LocalStorage::Excluded => TriState::Excluded,
        }
    }
}

/// `included` / `required` / `excluded`, as bareMetal, burstablePerformance
/// and localStorage use them: "To include … specify included. To require only
/// … specify required. To exclude … specify excluded."
#[derive(Clone, Copy)]
enum TriState {
    Included,
    Required,
    Excluded,
}

fn tri_state(mode: TriState, has: bool) -> bool {
    match mode {
        TriState::Included => true,
        TriState::Required => has,
        TriState::Excluded => !has,
    }
}

impl Catalog {
    /// The instance types `req` admits in `region`, with the default
    /// [`MatchOptions`], sorted by name. See [`Catalog::matching_with`].
    pub fn matching(
        &self,
        region: &str,
        req: &InstanceRequirementsRequest,
    ) -> Result<Vec<&InstanceType>, RequirementsError> {
        self.matching_with(region, req, &MatchOptions::default())
    }

    /// The instance types `req` admits in `region`, sorted by name:
    ///
    /// 1. `req` is validated ([`Requirements::new`]);
    /// 2. a type must be offered in the region and have an on-demand price
    ///    there (a type without a price cannot be costed or protected), and
    ///    support `options.architecture` when one is set;
    /// 3. it must pass the ECS Managed Instances floor
    ///    ([`ecs_managed_instances_floor`]);
    /// 4. it must satisfy every attribute ([`Requirements::admits`]);
    /// 5. on-demand price protection removes what costs more than
    ///    `onDemandMaxPricePercentageOverLowestPrice` percent (default 20)
    ///    over the reference price: "the price of the lowest priced current
    ///    generation C, M, or R instance type with your specified attributes.
    ///    If no current generation C, M, or R instance type matches your
    ///    attributes, then the identified price is from either the lowest
    ///    priced current generation instance types or, failing that, the
    ///    lowest priced previous generation instance types that match your
    ///    attributes." (EC2 Auto Scaling API reference, `InstanceRequirements`.)
    ///    The reference is taken over the survivors of steps 2–4. C, M and R
    ///    are the `category` letters `c`, `m`, `r`.
    ///
    /// Spot price protection is validated but not applied: the catalog holds
    /// no spot prices.
    ///
    /// An empty result is [`RequirementsError::NoMatch`].
    ///
    /// The catalog is immutable, so the answer to the same question is kept
    /// (as positions in [`Catalog::types`]) and given again at once.
    pub fn matching_with(
        &self,
        region: &str,
        req: &InstanceRequirementsRequest,
        options: &MatchOptions,
    ) -> Result<Vec<&InstanceType>, RequirementsError> {
        let key = serde_json::to_string(req)
            .ok()
            .map(|r| format!("{region}\n{options:?}\n{r}"));
        let types = self.types();
        let from_positions = |found: &Result<Vec<usize>, RequirementsError>| match found {
            Ok(at) => Ok(at.iter().filter_map(|&i| types.get(i)).collect()),
            Err(e) => Err(e.clone()),
        };
        if let Some(key) = &key {
            if let Some(found) = self.matches().lock().ok().and_then(|m| m.get(key).cloned()) {
                return from_positions(&found);
            }
        }
        let found = self.matching_uncached(region, req, options).map(|ts| {
            ts.iter()
                .filter_map(|t| types.binary_search_by(|x| x.name.cmp(&t.name)).ok())
                .collect::<Vec<usize>>()
        });
        if let (Some(key), Ok(mut m)) = (key, self.matches().lock()) {
            if m.len() >= MATCHES_KEPT {
                m.clear();
            }
            m.insert(key, found.clone());
        }
        from_positions(&found)
    }

    fn matching_uncached(
        &self,
        region: &str,
        req: &InstanceRequirementsRequest,
        options: &MatchOptions,
    ) -> Result<Vec<&InstanceType>, RequirementsError> {
        let requirements = Requirements::new(req)?;
        if !self.has_region(region) {
            return Err(RequirementsError::UnknownRegion(region.to_string()));
        }
        let mut survivors: Vec<(&InstanceType, f64)> = self
            .types()
            .iter()
            .filter(|t| self.offered(region, &t.name))
            .filter_map(|t| self.on_demand_price(region, &t.name).map(|p| (t, p)))
            .filter(|(t, _)| options.architecture.is_none_or(|a| t.supports(a)))
            .filter(|(t, _)| ecs_managed_instances_floor(t))
            .filter(|(t, _)| requirements.admits(t))
            .collect();

        if let Some(pct) = requirements.on_demand_max_price_percentage() {
            let unit = |t: &InstanceType, price: f64| match options.price_basis {
                PriceBasis::PerInstance => price,
                PriceBasis::PerVcpu => price / f64::from(t.vcpus),
                PriceBasis::PerMemoryMib => price / t.memory_mib as f64,
            };
            let lowest = |keep: &dyn Fn(&InstanceType) -> bool| {
                survivors
                    .iter()
                    .filter(|(t, _)| keep(t))
                    .map(|(t, p)| unit(t, *p))
                    .min_by(f64::total_cmp)
            };
            let reference =
                lowest(&|t| t.current_generation && matches!(t.category.as_str(), "c" | "m" | "r"))
                    .or_else(|| lowest(&|t| t.current_generation))
                    .or_else(|| lowest(&|_| true));
            if let Some(reference) = reference {
                let threshold = reference * (1.0 + f64::from(pct) / 100.0);
                // A relative epsilon keeps the reference type itself (and
                // exact ties) in despite float rounding.
                survivors.retain(|(t, p)| unit(t, *p) <= threshold * (1.0 + 1e-12));
            }
        }

        if survivors.is_empty() {
            return Err(RequirementsError::NoMatch {
                region: region.to_string(),
            });
        }
        Ok(survivors.into_iter().map(|(t, _)| t).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_semantics() {
        let m = instance_type_pattern_matches;
        assert!(m("m5.8xlarge", "m5.8xlarge"));
        assert!(!m("m5.8xlarge", "m5.8xlarge2"));
        assert!(m("c5*.*", "c5.large"));
        assert!(m("c5*.*", "c5n.18xlarge"));
        assert!(!m("c5*.*", "c6a.large"));
        assert!(m("c5*", "c5a.large"));
        assert!(m("m5a.*", "m5a.large"));
        assert!(!m("m5a.*", "m5n.large"));
        assert!(m("r*", "r7i.large"));
        assert!(m("*3*", "t3.large"));
        assert!(m("*3*", "m5.metal-48xl") == "m5.metal-48xl".contains('3'));
        assert!(m("*.metal", "m7i.metal"));
        assert!(!m("*.metal", "m7i.metal-24xl"));
        assert!(m("*.metal*", "m7i.metal-24xl"));
        assert!(m("*", "anything.at-all"));
        assert!(m("**a**", "a"));
        assert!(m("g5", "g5.xlarge"));
        assert!(!m("g5", "g5g.xlarge"));
        assert!(m("m7i.large", "M7I.LARGE"));
    }

    #[test]
    fn floor() {
        let c = Catalog::embedded();
        let f = |n: &str| ecs_managed_instances_floor(c.get(n).expect("type"));
        assert!(f("m7i.large"));
        assert!(!f("c7g.medium")); // 1 vCPU
        assert!(!f("t3.micro")); // 2 vCPUs but micro
        assert!(!f("t3.nano"));
        assert!(f("t3.small"));
    }
}

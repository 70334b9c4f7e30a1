//! [`InstanceType`]: the hardware attributes of one EC2 instance type.

use berth_model::ecs::{
    AcceleratorManufacturer, AcceleratorName, AcceleratorType, CpuManufacturer, LocalStorageType,
};
use serde::Serialize;

use crate::csv::Row;
use crate::DataError;

/// A processor architecture (`ProcessorInfo.SupportedArchitectures`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Architecture {
    /// `x86_64`.
    #[serde(rename = "x86_64")]
    X86_64,
    /// `arm64` (Graviton).
    #[serde(rename = "arm64")]
    Arm64,
    /// `i386` (old 32-bit capable x86 types; they also list `x86_64`).
    #[serde(rename = "i386")]
    I386,
    /// `x86_64_mac` (Intel Mac; Dedicated Hosts only).
    #[serde(rename = "x86_64_mac")]
    X86_64Mac,
    /// `arm64_mac` (Apple silicon Mac; Dedicated Hosts only).
    #[serde(rename = "arm64_mac")]
    Arm64Mac,
}

impl Architecture {
    /// Every value.
    pub const ALL: &'static [Architecture] = &[
        Self::X86_64,
        Self::Arm64,
        Self::I386,
        Self::X86_64Mac,
        Self::Arm64Mac,
    ];

    /// The EC2 spelling (`x86_64`, `arm64`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
            Self::I386 => "i386",
            Self::X86_64Mac => "x86_64_mac",
            Self::Arm64Mac => "arm64_mac",
        }
    }

    /// Parses the EC2 spelling.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == value)
    }

    /// The ECS `runtimePlatform.cpuArchitecture` this corresponds to, if any
    /// (`X86_64` or `ARM64`; Mac and i386 have none).
    pub fn ecs(&self) -> Option<berth_model::ecs::CPUArchitecture> {
        match self {
            Self::X86_64 => Some(berth_model::ecs::CPUArchitecture::X8664),
            Self::Arm64 => Some(berth_model::ecs::CPUArchitecture::Arm64),
            _ => None,
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CPU maker (`ProcessorInfo.Manufacturer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum CpuVendor {
    /// Intel.
    Intel,
    /// AMD.
    #[serde(rename = "AMD")]
    Amd,
    /// AWS (Graviton).
    #[serde(rename = "AWS")]
    Aws,
    /// Apple (Mac types).
    Apple,
    /// A maker this crate does not know.
    Other,
}

impl CpuVendor {
    fn parse(value: &str) -> Self {
        match value {
            "Intel" => Self::Intel,
            "AMD" => Self::Amd,
            "AWS" => Self::Aws,
            "Apple" => Self::Apple,
            _ => Self::Other,
        }
    }

    /// The `cpuManufacturers` value that selects this maker. Apple has none in
    /// the ECS model, so Mac types never match a `cpuManufacturers` list.
    pub fn ecs(&self) -> Option<CpuManufacturer> {
        match self {
            Self::Intel => Some(CpuManufacturer::Intel),
            Self::Amd => Some(CpuManufacturer::Amd),
            Self::Aws => Some(CpuManufacturer::AmazonWebServices),
            Self::Apple | Self::Other => None,
        }
    }
}

/// A non-GPU accelerator, by the DescribeInstanceTypes block it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceleratorKind {
    /// `NeuronInfo`: AWS Inferentia / Trainium (inf1, inf2, trn1, trn2).
    Neuron,
    /// `InferenceAcceleratorInfo` alone: Qualcomm AI100 (dl2q).
    Inference,
    /// `FpgaInfo`: Xilinx FPGAs (f2).
    Fpga,
    /// `MediaAcceleratorInfo`: Xilinx U30 media accelerators (vt1).
    Media,
}

impl AcceleratorKind {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "neuron" => Some(Self::Neuron),
            "inference" => Some(Self::Inference),
            "fpga" => Some(Self::Fpga),
            "media" => Some(Self::Media),
            _ => None,
        }
    }

    /// The `acceleratorTypes` value that selects this kind. Neuron chips are
    /// inference/training accelerators and answer to `inference` (EC2 lists
    /// Inferentia under `InferenceAcceleratorInfo` too); media accelerators
    /// have no value in the ECS model, so `acceleratorTypes` never selects them.
    pub fn ecs(&self) -> Option<AcceleratorType> {
        match self {
            Self::Neuron | Self::Inference => Some(AcceleratorType::Inference),
            Self::Fpga => Some(AcceleratorType::Fpga),
            Self::Media => None,
        }
    }
}

/// Maps a manufacturer as DescribeInstanceTypes spells it (`NVIDIA`, `AWS`,
/// `Xilinx`…) to the `acceleratorManufacturers` value, if the model has one.
fn accelerator_manufacturer(value: &str) -> Option<AcceleratorManufacturer> {
    match value.to_ascii_lowercase().as_str() {
        "nvidia" => Some(AcceleratorManufacturer::Nvidia),
        "amd" => Some(AcceleratorManufacturer::Amd),
        "aws" | "amazon-web-services" => Some(AcceleratorManufacturer::AmazonWebServices),
        "xilinx" => Some(AcceleratorManufacturer::Xilinx),
        "habana" => Some(AcceleratorManufacturer::Habana),
        _ => None,
    }
}

/// Maps an accelerator name as DescribeInstanceTypes spells it (`A10G`,
/// `T4g`, `Inferentia`, `Radeon Pro V520`) to the `acceleratorNames` value:
/// lower case, spaces to `-`. Names the model lacks (L4, H200, Inferentia2…)
/// map to `None`.
fn accelerator_name(value: &str) -> Option<AcceleratorName> {
    AcceleratorName::parse(&value.to_ascii_lowercase().replace(' ', "-"))
}

/// One EC2 instance type and its hardware attributes, from a
/// DescribeInstanceTypes snapshot (see `data/PROVENANCE.md`).
///
/// Counts and sizes that do not apply are 0 (an EBS-only type has
/// `local_storage_gb == 0`, a type without GPUs has `gpu_count == 0`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceType {
    /// `m7g.large`.
    pub name: String,
    /// The part before the `.`: `m7g`, `c7i-flex`, `u7in-16tb`.
    pub family: String,
    /// The part after the `.`: `large`, `metal-48xl`.
    pub size: String,
    /// The leading letters of the name: `m`, `c`, `inf`, `mac` (empty for `mac-m4*`).
    pub category: String,
    /// The first digits after the category (`7` for `m7g`), when there are any.
    pub generation: Option<u32>,
    /// `CurrentGeneration`: what `instanceGenerations: current/previous` means.
    pub current_generation: bool,
    /// `VCpuInfo.DefaultVCpus`.
    pub vcpus: u32,
    /// `VCpuInfo.DefaultCores`.
    pub default_cores: u32,
    /// `VCpuInfo.DefaultThreadsPerCore`.
    pub default_threads_per_core: u32,
    /// `MemoryInfo.SizeInMiB`.
    pub memory_mib: u64,
    /// `ProcessorInfo.SupportedArchitectures`.
    pub architectures: Vec<Architecture>,
    /// `ProcessorInfo.Manufacturer`.
    pub cpu_manufacturer: CpuVendor,
    /// `ProcessorInfo.SustainedClockSpeedInGhz`.
    pub sustained_clock_ghz: Option<f64>,
    /// Physical GPUs (`GpuInfo.Gpus[0].Count`); **0 for fractional-GPU types**.
    pub gpu_count: u32,
    /// Logical GPUs (`LogicalGpuCount`): 1 for fractional types.
    pub gpu_logical_count: u32,
    /// The share of one GPU each logical GPU gets (1.0 whole; 0.125–0.5 on g6f/gr6f).
    pub gpu_partition_size: Option<f64>,
    /// `NVIDIA`.
    pub gpu_manufacturer: Option<String>,
    /// `H100`, `L4`, `A10G`…
    pub gpu_name: Option<String>,
    /// Memory of one GPU (or GPU slice), MiB.
    pub gpu_memory_mib: u64,
    /// `GpuInfo.TotalGpuMemoryInMiB`.
    pub gpu_total_memory_mib: u64,
    /// The non-GPU accelerator, if any.
    pub accelerator_kind: Option<AcceleratorKind>,
    /// `AWS`, `Xilinx`, `Qualcomm`.
    pub accelerator_manufacturer: Option<String>,
    /// `Inferentia2`, `Trainium`, `U30`…
    pub accelerator_name: Option<String>,
    /// Number of non-GPU accelerators.
    pub accelerator_count: u32,
    /// Their total memory, MiB.
    pub accelerator_total_memory_mib: u64,
    /// `BurstablePerformanceSupported` (T types).
    pub burstable: bool,
    /// `BareMetal`.
    pub bare_metal: bool,
    /// `nitro`, `xen`, or `None` (bare metal).
    pub hypervisor: Option<String>,
    /// `InstanceStorageInfo.TotalSizeInGB` (0 = EBS only).
    pub local_storage_gb: u64,
    /// SSD or HDD instance store.
    pub local_storage_type: Option<LocalStorageType>,
    /// Number of instance-store disks.
    pub local_storage_disks: u32,
    /// `NetworkInfo.NetworkPerformance` as text (`Up to 12.5 Gigabit`).
    pub network_performance: String,
    /// Sum of `NetworkCards[].BaselineBandwidthInGbps`.
    pub network_baseline_gbps: f64,
    /// Sum of `NetworkCards[].PeakBandwidthInGbps`.
    pub network_peak_gbps: f64,
    /// `NetworkInfo.MaximumNetworkCards`.
    pub max_network_cards: u32,
    /// `NetworkInfo.MaximumNetworkInterfaces` (ENIs; bounds `awsvpc` task density).
    pub max_network_interfaces: u32,
    /// `NetworkInfo.Ipv4AddressesPerInterface`.
    pub ipv4_per_interface: u32,
    /// `NetworkInfo.Ipv6Supported`.
    pub ipv6_supported: bool,
    /// `NetworkInfo.EfaSupported`.
    pub efa_supported: bool,
    /// `EbsInfo.EbsOptimizedInfo.BaselineBandwidthInMbps`.
    pub ebs_baseline_bandwidth_mbps: u32,
    /// `EbsInfo.EbsOptimizedInfo.MaximumBandwidthInMbps`.
    pub ebs_max_bandwidth_mbps: u32,
    /// `spot` is among `SupportedUsageClasses`.
    pub spot_supported: bool,
    /// `HibernationSupported`.
    pub hibernation_supported: bool,
}

impl InstanceType {
    /// ECS CPU units: `vcpus × 1024`.
    pub fn cpu_units(&self) -> u32 {
        self.vcpus.saturating_mul(1024)
    }

    /// Memory in GiB.
    pub fn memory_gib(&self) -> f64 {
        self.memory_mib as f64 / 1024.0
    }

    /// GiB of memory per vCPU (what `memoryGiBPerVCpu` compares).
    pub fn memory_gib_per_vcpu(&self) -> f64 {
        if self.vcpus == 0 {
            0.0
        } else {
            self.memory_gib() / f64::from(self.vcpus)
        }
    }

    /// Whether the type runs code built for `arch`.
    pub fn supports(&self, arch: Architecture) -> bool {
        self.architectures.contains(&arch)
    }

    /// Whether the type has GPU hardware: whole GPUs or a GPU slice.
    pub fn has_gpu(&self) -> bool {
        self.gpu_count > 0 || self.gpu_logical_count > 0
    }

    /// Whether the type gets a fraction of one GPU (g6f, gr6f): it has a
    /// logical GPU but no whole physical one.
    pub fn is_fractional_gpu(&self) -> bool {
        self.gpu_count == 0 && self.gpu_logical_count > 0
    }

    /// Whole GPUs a task can be given (`resourceRequirements` GPU is an
    /// integer count): `gpu_count`, so 0 for fractional types.
    pub fn whole_gpus(&self) -> u32 {
        self.gpu_count
    }

    /// Accelerators as `acceleratorCount` counts them: GPUs (a fractional GPU
    /// counts as one, being one logical device) plus every other accelerator
    /// (Inferentia/Trainium chips, FPGAs, media accelerators, AI100 cards).
    pub fn accelerator_total_count(&self) -> u32 {
        self.gpu_count.max(self.gpu_logical_count) + self.accelerator_count
    }

    /// Accelerator memory as `acceleratorTotalMemoryMiB` compares it: GPU
    /// memory plus the other accelerators' memory.
    pub fn accelerator_total_memory_mib(&self) -> u64 {
        self.gpu_total_memory_mib + self.accelerator_total_memory_mib
    }

    /// The `acceleratorTypes` values this type answers to (empty for none).
    pub fn accelerator_types(&self) -> Vec<AcceleratorType> {
        let mut out = Vec::new();
        if self.has_gpu() {
            out.push(AcceleratorType::Gpu);
        }
        if let Some(t) = self.accelerator_kind.and_then(|k| k.ecs()) {
            out.push(t);
        }
        out
    }

    /// The `acceleratorManufacturers` values this type answers to.
    pub fn accelerator_manufacturers(&self) -> Vec<AcceleratorManufacturer> {
        let mut out = Vec::new();
        if self.has_gpu() {
            out.extend(
                self.gpu_manufacturer
                    .as_deref()
                    .and_then(accelerator_manufacturer),
            );
        }
        if self.accelerator_kind.is_some() {
            out.extend(
                self.accelerator_manufacturer
                    .as_deref()
                    .and_then(accelerator_manufacturer),
            );
        }
        out
    }

    /// The `acceleratorNames` values this type answers to.
    pub fn accelerator_names(&self) -> Vec<AcceleratorName> {
        let mut out = Vec::new();
        if self.has_gpu() {
            out.extend(self.gpu_name.as_deref().and_then(accelerator_name));
        }
        if self.accelerator_kind.is_some() {
            out.extend(self.accelerator_name.as_deref().and_then(accelerator_name));
        }
        out
    }

    /// Parses one row of `instance-types.csv`.
    pub(crate) fn from_row(row: &Row<'_, '_>) -> Result<Self, DataError> {
        let architectures = row
            .str("architectures")?
            .split(';')
            .filter(|s| !s.is_empty())
            .map(|s| {
                Architecture::parse(s)
                    .ok_or_else(|| row.error(format!("unknown architecture `{s}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let accelerator_kind = match row.opt_str("accelerator_kind")? {
            None => None,
            Some(s) => Some(
                AcceleratorKind::parse(s)
                    .ok_or_else(|| row.error(format!("unknown accelerator kind `{s}`")))?,
            ),
        };
        let local_storage_type = match row.opt_str("local_storage_type")? {
            None => None,
            Some(s) => Some(
                LocalStorageType::parse(s)
                    .ok_or_else(|| row.error(format!("unknown local storage type `{s}`")))?,
            ),
        };
        let owned = |s: Option<&str>| s.map(str::to_string);
        let t = InstanceType {
            name: row.str("instance_type")?.to_string(),
            family: row.str("family")?.to_string(),
            size: row.str("size")?.to_string(),
            category: row.str("category")?.to_string(),
            generation: row.opt_parse("family_generation")?,
            current_generation: row.bool("current_generation")?,
            vcpus: row.parse("vcpus")?,
            default_cores: row.parse_or("default_cores", 0)?,
            default_threads_per_core: row.parse_or("default_threads_per_core", 0)?,
            memory_mib: row.parse("memory_mib")?,
            architectures,
            cpu_manufacturer: CpuVendor::parse(row.str("processor_manufacturer")?),
            sustained_clock_ghz: row.opt_parse("sustained_clock_ghz")?,
            gpu_count: row.parse_or("gpu_count", 0)?,
            gpu_logical_count: row.parse_or("gpu_logical_count", 0)?,
            gpu_partition_size: row.opt_parse("gpu_partition_size")?,
            gpu_manufacturer: owned(row.opt_str("gpu_manufacturer")?),
            gpu_name: owned(row.opt_str("gpu_name")?),
            gpu_memory_mib: row.parse_or("gpu_memory_mib", 0)?,
            gpu_total_memory_mib: row.parse_or("gpu_total_memory_mib", 0)?,
            accelerator_kind,
            accelerator_manufacturer: owned(row.opt_str("accelerator_manufacturer")?),
            accelerator_name: owned(row.opt_str("accelerator_name")?),
            accelerator_count: row.parse_or("accelerator_count", 0)?,
            accelerator_total_memory_mib: row.parse_or("accelerator_total_memory_mib", 0)?,
            burstable: row.bool("burstable")?,
            bare_metal: row.bool("bare_metal")?,
            hypervisor: owned(row.opt_str("hypervisor")?),
            local_storage_gb: row.parse_or("local_storage_gb", 0)?,
            local_storage_type,
            local_storage_disks: row.parse_or("local_storage_disks", 0)?,
            network_performance: row.str("network_performance")?.to_string(),
            network_baseline_gbps: row.parse_or("network_baseline_gbps", 0.0)?,
            network_peak_gbps: row.parse_or("network_peak_gbps", 0.0)?,
            max_network_cards: row.parse_or("max_network_cards", 0)?,
            max_network_interfaces: row.parse_or("max_network_interfaces", 0)?,
            ipv4_per_interface: row.parse_or("ipv4_per_interface", 0)?,
            ipv6_supported: row.bool("ipv6_supported")?,
            efa_supported: row.bool("efa_supported")?,
            ebs_baseline_bandwidth_mbps: row.parse_or("ebs_baseline_bandwidth_mbps", 0)?,
            ebs_max_bandwidth_mbps: row.parse_or("ebs_max_bandwidth_mbps", 0)?,
            spot_supported: row.bool("spot_supported")?,
            hibernation_supported: row.bool("hibernation_supported")?,
        };
        if t.name.is_empty() {
            return Err(row.error("empty instance_type"));
        }
        if t.vcpus == 0 || t.memory_mib == 0 {
            return Err(row.error(format!("{}: zero vCPUs or memory", t.name)));
        }
        if t.architectures.is_empty() {
            return Err(row.error(format!("{}: no architecture", t.name)));
        }
        let finite = [
            Some(t.network_baseline_gbps),
            Some(t.network_peak_gbps),
            t.gpu_partition_size,
        ];
        if finite
            .into_iter()
            .flatten()
            .any(|v| !v.is_finite() || v < 0.0)
        {
            return Err(row.error(format!("{}: a negative or non-finite number", t.name)));
        }
        Ok(t)
    }
}

/// Columns `instance-types.csv` must have.
pub(crate) const COLUMNS: &[&str] = &[
    "instance_type",
    "family",
    "size",
    "category",
    "family_generation",
    "current_generation",
    "vcpus",
    "memory_mib",
    "architectures",
    "processor_manufacturer",
    "gpu_count",
    "gpu_logical_count",
    "burstable",
    "bare_metal",
    "local_storage_gb",
    "local_storage_type",
    "network_baseline_gbps",
    "max_network_interfaces",
    "ebs_baseline_bandwidth_mbps",
    "spot_supported",
    "hibernation_supported",
];

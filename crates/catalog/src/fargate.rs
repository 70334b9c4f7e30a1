//! AWS Fargate rates and valid task sizes, for comparing costs against
//! Fargate. The rates are us-east-1 only (see `data/PROVENANCE.md`).

use serde::Serialize;

use crate::csv::Table;
use crate::{Architecture, Catalog, DataError};

/// The operating system a Fargate rate applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FargateOs {
    /// Linux.
    Linux,
    /// Windows Server.
    Windows,
}

/// What a Fargate rate is charged for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FargateDimension {
    /// Per vCPU-hour.
    Vcpu,
    /// Per GB-hour of task memory.
    Memory,
    /// Windows licence, per vCPU-hour, added to the vCPU rate.
    OsLicense,
    /// Per GB-hour of ephemeral storage beyond the 20 GB included.
    EphemeralStorageOver20Gb,
}

impl FargateDimension {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "vcpu" => Some(Self::Vcpu),
            "memory" => Some(Self::Memory),
            "os_license" => Some(Self::OsLicense),
            "ephemeral_storage_over_20gb" => Some(Self::EphemeralStorageOver20Gb),
            _ => None,
        }
    }
}

/// One row of `fargate-prices.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FargateRate {
    /// The region (`us-east-1`).
    pub region: String,
    /// The OS it applies to; `None` = any.
    pub os: Option<FargateOs>,
    /// The architecture it applies to; `None` = any.
    pub architecture: Option<Architecture>,
    /// What is charged.
    pub dimension: FargateDimension,
    /// `vCPU-hour` or `GB-hour`.
    pub unit: String,
    /// USD per unit.
    pub usd: f64,
}

/// One valid Fargate task size (`fargate-task-sizes.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FargateTaskSize {
    /// Task CPU units (1024 = 1 vCPU).
    pub cpu_units: u32,
    /// Task memory, MiB.
    pub memory_mib: u32,
    /// Whether Windows tasks may use this size (Linux always may).
    pub windows: bool,
}

impl Catalog {
    /// Every Fargate rate.
    pub fn fargate_rates(&self) -> &[FargateRate] {
        &self.fargate_rates
    }

    /// The Fargate rate for `dimension`, USD per unit: the row for exactly
    /// this OS and architecture, else one that says "any".
    pub fn fargate_rate(
        &self,
        region: &str,
        os: FargateOs,
        arch: Architecture,
        dimension: FargateDimension,
    ) -> Option<f64> {
        let candidates = || {
            self.fargate_rates
                .iter()
                .filter(move |r| r.region == region && r.dimension == dimension)
                .filter(move |r| r.os.is_none_or(|o| o == os))
                .filter(move |r| r.architecture.is_none_or(|a| a == arch))
        };
        candidates()
            .find(|r| r.os.is_some() && r.architecture.is_some())
            .or_else(|| candidates().next())
            .map(|r| r.usd)
    }

    /// Every valid Fargate task size.
    pub fn fargate_task_sizes(&self) -> &[FargateTaskSize] {
        &self.fargate_task_sizes
    }

    /// Whether `cpu_units`/`memory_mib` is a valid Fargate task size for `os`.
    pub fn fargate_size_supported(&self, cpu_units: u32, memory_mib: u32, os: FargateOs) -> bool {
        self.fargate_task_sizes.iter().any(|s| {
            s.cpu_units == cpu_units
                && s.memory_mib == memory_mib
                && (os == FargateOs::Linux || s.windows)
        })
    }

    /// The smallest valid Fargate size holding `cpu_units` and `memory_mib`
    /// (fewest CPU units, then least memory), if any.
    pub fn fargate_size_for(
        &self,
        cpu_units: u32,
        memory_mib: u32,
        os: FargateOs,
    ) -> Option<FargateTaskSize> {
        self.fargate_task_sizes
            .iter()
            .filter(|s| s.cpu_units >= cpu_units && s.memory_mib >= memory_mib)
            .filter(|s| os == FargateOs::Linux || s.windows)
            .min_by_key(|s| (s.cpu_units, s.memory_mib))
            .copied()
    }

    /// What a Fargate task of this size costs per hour (vCPU + memory, plus
    /// the Windows licence), without ephemeral storage beyond the free 20 GB
    /// and without Fargate Spot. `None` where a rate is missing (any region
    /// but us-east-1, or Windows on arm64). The size is not checked against
    /// [`Catalog::fargate_task_sizes`].
    pub fn fargate_hourly_cost(
        &self,
        region: &str,
        os: FargateOs,
        arch: Architecture,
        cpu_units: u32,
        memory_mib: u32,
    ) -> Option<f64> {
        let vcpus = f64::from(cpu_units) / 1024.0;
        let gb = f64::from(memory_mib) / 1024.0;
        let mut per_vcpu = self.fargate_rate(region, os, arch, FargateDimension::Vcpu)?;
        if os == FargateOs::Windows {
            per_vcpu += self.fargate_rate(region, os, arch, FargateDimension::OsLicense)?;
        }
        let per_gb = self.fargate_rate(region, os, arch, FargateDimension::Memory)?;
        Some(vcpus * per_vcpu + gb * per_gb)
    }
}

pub(crate) fn parse_rates(text: &str) -> Result<Vec<FargateRate>, DataError> {
    let table = Table::parse("fargate-prices.csv", text)?;
    table.require(&["region", "os", "architecture", "dimension", "unit", "usd"])?;
    table
        .rows()
        .map(|row| {
            let os = match row.str("os")? {
                "linux" => Some(FargateOs::Linux),
                "windows" => Some(FargateOs::Windows),
                "any" => None,
                other => return Err(row.error(format!("unknown os `{other}`"))),
            };
            let architecture = match row.str("architecture")? {
                "any" => None,
                other => Some(
                    Architecture::parse(other)
                        .ok_or_else(|| row.error(format!("unknown architecture `{other}`")))?,
                ),
            };
            let dimension_text = row.str("dimension")?;
            let dimension = FargateDimension::parse(dimension_text)
                .ok_or_else(|| row.error(format!("unknown dimension `{dimension_text}`")))?;
            let usd: f64 = row.parse("usd")?;
            if !usd.is_finite() || usd < 0.0 {
                return Err(row.error(format!("rate {usd} is negative")));
            }
            Ok(FargateRate {
                region: row.str("region")?.to_string(),
                os,
                architecture,
                dimension,
                unit: row.str("unit")?.to_string(),
                usd,
            })
        })
        .collect()
}

pub(crate) fn parse_sizes(text: &str) -> Result<Vec<FargateTaskSize>, DataError> {
    let table = Table::parse("fargate-task-sizes.csv", text)?;
    table.require(&["cpu_units", "memory_mib", "os"])?;
    table
        .rows()
        .map(|row| {
            let os = row.str("os")?;
            let oses: Vec<&str> = os.split(';').collect();
            if !oses.contains(&"linux") || oses.iter().any(|o| *o != "linux" && *o != "windows") {
                return Err(row.error(format!("unexpected os list `{os}`")));
            }
            Ok(FargateTaskSize {
                cpu_units: row.parse("cpu_units")?,
                memory_mib: row.parse("memory_mib")?,
                windows: oses.contains(&"windows"),
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn rates() {
        let c = Catalog::embedded();
        let rate = |os, arch, dim| c.fargate_rate("us-east-1", os, arch, dim);
        use Architecture::*;
        use FargateDimension::*;
        use FargateOs::*;
        assert_eq!(rate(Linux, X86_64, Vcpu), Some(0.04048));
        assert_eq!(rate(Linux, X86_64, Memory), Some(0.004445));
        assert_eq!(rate(Linux, Arm64, Vcpu), Some(0.03238));
        assert_eq!(rate(Linux, Arm64, Memory), Some(0.00356));
        assert_eq!(rate(Windows, X86_64, OsLicense), Some(0.046));
        assert_eq!(rate(Windows, Arm64, Vcpu), None);
        assert_eq!(rate(Linux, Arm64, EphemeralStorageOver20Gb), Some(0.000111));
        assert_eq!(c.fargate_rate("eu-west-1", Linux, X86_64, Vcpu), None);
        assert_eq!(c.fargate_rates().len(), 8);
    }

    #[test]
    fn hourly_cost() {
        let c = Catalog::embedded();
        use Architecture::*;
        use FargateOs::*;
        // 1 vCPU, 2 GB Linux/x86: 0.04048 + 2 × 0.004445.
        let cost = c
            .fargate_hourly_cost("us-east-1", Linux, X86_64, 1024, 2048)
            .unwrap();
        assert!(close(cost, 0.04048 + 2.0 * 0.004445));
        let win = c
            .fargate_hourly_cost("us-east-1", Windows, X86_64, 1024, 2048)
            .unwrap();
        assert!(close(win, 0.09148 + 0.046 + 2.0 * 0.01005));
        assert!(c
            .fargate_hourly_cost("us-east-1", Windows, Arm64, 1024, 2048)
            .is_none());
        assert!(c
            .fargate_hourly_cost("sa-east-1", Linux, X86_64, 1024, 2048)
            .is_none());
    }

    #[test]
    fn sizes() {
        let c = Catalog::embedded();
        assert_eq!(c.fargate_task_sizes().len(), 74);
        assert!(c.fargate_size_supported(256, 512, FargateOs::Linux));
        assert!(!c.fargate_size_supported(256, 512, FargateOs::Windows));
        assert!(c.fargate_size_supported(1024, 8192, FargateOs::Windows));
        assert!(!c.fargate_size_supported(1024, 9216, FargateOs::Linux));
        assert!(c.fargate_size_supported(16384, 122880, FargateOs::Linux));
        assert!(!c.fargate_size_supported(16384, 122880, FargateOs::Windows));
        let s = c.fargate_size_for(300, 600, FargateOs::Linux).unwrap();
        assert_eq!((s.cpu_units, s.memory_mib), (512, 1024));
        let s = c.fargate_size_for(300, 600, FargateOs::Windows).unwrap();
        assert_eq!((s.cpu_units, s.memory_mib), (1024, 2048));
        assert!(c
            .fargate_size_for(16384, 130000, FargateOs::Linux)
            .is_none());
    }

    #[test]
    fn bad_rows_are_rejected() {
        assert!(
            parse_rates("region,os,architecture,dimension,unit,usd\nr,mac,any,vcpu,u,1\n").is_err()
        );
        assert!(
            parse_rates("region,os,architecture,dimension,unit,usd\nr,any,any,gpu,u,1\n").is_err()
        );
        assert!(parse_sizes("cpu_units,vcpu,memory_mib,os\n256,0.25,512,windows\n").is_err());
    }
}

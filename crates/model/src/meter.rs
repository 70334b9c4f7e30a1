//! Meter records: what berth bills, as the store keeps it.
//!
//! An [`InstanceMeter`] is written in the same store transaction that
//! launches an instance, with its price and fee frozen at that moment, and
//! closed (`ended_at`) in the transaction that records its end. A
//! [`TaskUsage`] is opened in the transaction that sees a task RUNNING on an
//! instance and closed in the one that records it STOPPED there (or the
//! instance gone). Opening or closing twice changes nothing, so replays after
//! a restart neither lose nor double-count time. Costs are computed from
//! these records only (never from tasks, which may be pruned): see
//! `berth_catalog::cost`.

use serde::{Deserialize, Serialize};

/// How an instance was bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PurchaseOption {
    OnDemand,
    Spot,
}

impl PurchaseOption {
    /// `ON_DEMAND` or `SPOT`, as ECS's `capacityOptionType` spells them.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::OnDemand => "ON_DEMAND",
            Self::Spot => "SPOT",
        }
    }

    /// The inverse of [`PurchaseOption::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ON_DEMAND" => Some(Self::OnDemand),
            "SPOT" => Some(Self::Spot),
            _ => None,
        }
    }
}

/// One instance's meter: what it is, what it costs per hour (frozen at
/// launch) and when it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceMeter {
    pub instance_id: String,
    pub cluster_arn: String,
    pub container_instance_arn: String,
    pub capacity_provider: String,
    pub instance_type: String,
    pub region: String,
    pub purchase_option: PurchaseOption,
    /// The instance's whole CPU (1024 units a vCPU), the denominator of
    /// attribution.
    pub cpu_units: u32,
    /// The instance's whole memory, MiB.
    pub memory_mib: u64,
    /// USD per hour for the instance itself (on-demand, or the spot estimate).
    pub price_per_hour: f64,
    /// USD per hour of the ECS Managed Instances management fee.
    pub fee_per_hour: f64,
    /// The price table the price came from (`source, date`).
    pub price_table: String,
    /// The fee table the fee came from (`source, date`).
    pub fee_table: String,
    /// Seconds since the epoch.
    pub launched_at: f64,
    /// Seconds since the epoch; `None` while it runs.
    pub ended_at: Option<f64>,
}

/// One task's stay on one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsage {
    pub task_arn: String,
    pub instance_id: String,
    pub cluster_arn: String,
    /// The task's group (`service:web`, `family:batch`).
    pub group: Option<String>,
    pub family: Option<String>,
    /// Reserved CPU units.
    pub cpu_units: u32,
    /// Reserved memory, MiB.
    pub memory_mib: u64,
    /// Whole GPUs reserved (Fargate has none).
    pub gpus: u32,
    /// `x86_64` or `arm64`: the instance's architecture.
    pub architecture: String,
    pub started_at: f64,
    pub stopped_at: Option<f64>,
}

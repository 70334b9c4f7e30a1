//! # berth-catalog
//!
//! berth's offline catalog of EC2 instance types, and the rules ECS Managed
//! Instances uses to pick among them.
//!
//! * **What it holds.** The hardware attributes of 1395 EC2 instance types
//!   (vCPUs, memory, architectures, GPUs and other accelerators, instance
//!   store, network, EBS bandwidth…), which types each of 30 commercial
//!   regions offers, Linux on-demand prices for 28 commercial regions plus
//!   GovCloud, the ECS Managed Instances management fee (three observed
//!   figures; the rest are 12 % estimates, labelled as such), and Fargate's
//!   us-east-1 rates and valid task sizes. Sources, licences and dates are in
//!   `data/PROVENANCE.md`.
//! * **What it does.** [`Catalog::matching`] turns an ECS
//!   [`InstanceRequirementsRequest`](berth_model::ecs::InstanceRequirementsRequest)
//!   into the instance types it admits in a region, following AWS's documented
//!   attribute-based instance type selection ([`Requirements`] tabulates the
//!   attribute rules and their sources, [`Catalog::matching_with`] lists the
//!   steps, and the code quotes the AWS sentence behind each rule).
//!   [`Catalog::cheapest_fitting`] picks the cheapest of those for a task;
//!   [`Catalog::fargate_hourly_cost`] prices the Fargate alternative.
//!   [`cost`] turns meter records into bills, task shares, idle capacity,
//!   roll-ups and the Fargate comparison (the rules are in its docs).
//! * **Whose prices.** [`Catalog::with_tables`] and
//!   [`Catalog::with_fee_percent`] set the price and fee tables' provenance
//!   and a fee ratio, for catalogs built from an operator's tables
//!   ([`table_info`] reads a table's sources and date).
//!
//! ```
//! use berth_catalog::Catalog;
//! use berth_model::ecs::InstanceRequirementsRequest;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let catalog = Catalog::embedded();
//! let req: InstanceRequirementsRequest = serde_json::from_str(
//!     r#"{"vCpuCount": {"min": 2, "max": 8}, "memoryMiB": {"min": 4096}}"#,
//! )?;
//! let candidates = catalog.matching("us-east-1", &req)?;
//! // A task of 1 vCPU and 6 GiB: the cheapest candidate by price + fee.
//! let pick = catalog
//!     .cheapest_fitting("us-east-1", &candidates, 1024, 6144, 0)
//!     .ok_or("nothing fits")?;
//! assert!(pick.cpu_units() >= 1024 && pick.memory_mib >= 6144);
//! assert_eq!(catalog.on_demand_price("us-east-1", "c6a.2xlarge"), Some(0.306));
//! # Ok(())
//! # }
//! ```
//!
//! ## Design
//!
//! * **No I/O.** The CSV files under `data/` are compiled in with
//!   `include_str!` and parsed once, on first use, into a `static`
//!   ([`Catalog::embedded`], a [`std::sync::OnceLock`]); that takes about
//!   25 ms in a release build. [`Catalog::from_csv`] builds a catalog from
//!   other text in the same formats (fresher data, or small test fixtures).
//! * **Immutable and shareable.** A [`Catalog`] is never changed after it is
//!   built; everything hands out `&` references, so it is `Send + Sync`.
//! * **Validation first.** [`Requirements::new`] rejects an invalid request
//!   with a [`RequirementsError`] whose message reads like AWS's; only a valid
//!   request is matched.
//! * **Rules cite their source.** Each matching rule quotes the AWS
//!   documentation sentence it implements; rules AWS does not document are
//!   marked "berth's choice" in the code.
//!
//! ## Rules in brief
//!
//! AND across attributes, OR within a list; inclusive ranges with either end
//! optional; defaults as AWS documents them (`bareMetal` and
//! `burstablePerformance` excluded, `localStorage` included, any generation,
//! any accelerator count); `allowedInstanceTypes` / `excludedInstanceTypes`
//! take `*` wildcards over the whole name (`m5.*`, `*.metal`, `c5*.*`) and
//! cannot both be given; on-demand price protection (default 20 % over the
//! cheapest current-generation C, M or R type that matches, 999999 = off,
//! compared per vCPU by default: [`MatchOptions`]); a type must be offered
//! and priced in the region; ECS Managed Instances never picks a type with 1
//! vCPU or less, nor a `nano`/`micro` size ([`ecs_managed_instances_floor`]).
//!
//! **GPUs.** `acceleratorTypes: [gpu]` selects every type with GPU hardware.
//! Fractional-GPU types (g6f, gr6f: a slice of one L4) count as GPU types
//! with **one** accelerator for `acceleratorCount`, because they expose one
//! logical GPU, so `acceleratorCount.max = 0` excludes them. They supply
//! **zero whole GPUs** to tasks ([`InstanceType::whole_gpus`]), so
//! [`Catalog::cheapest_fitting`] never places a GPU task on them.
//! `acceleratorCount` adds GPUs and every other accelerator (Inferentia and
//! Trainium chips, FPGAs, media accelerators, AI100 cards); Neuron chips
//! answer to `acceleratorTypes: [inference]`.
//!
//! ## Limits
//!
//! * **The data is a snapshot** (instance types from moto 5.2.5; prices dated
//!   2026-02-07 and 2026-07-20). Types launched later are absent; prices may
//!   have moved.
//! * **Management fees are mostly estimates** (12 % of on-demand, outside
//!   three observed points); [`Catalog::management_fee_quote`] says which.
//!   GPU fees are probably overstated (the one measurement is 7.8 %).
//! * **No spot prices.** Spot price-protection fields are validated, not
//!   applied. No Savings Plans, reserved, Windows or dedicated-host prices.
//! * **Regions.** `ap-southeast-5` and `ca-west-1` have offerings but no
//!   prices, so nothing matches there; GovCloud has prices but no offering
//!   data (a priced type counts as offered); China is absent. Fargate rates
//!   are us-east-1 only.
//! * **Architecture is a separate input.** The ECS request has no
//!   architecture member; pass the task's `runtimePlatform` architecture in
//!   [`MatchOptions::architecture`] so that price protection compares like
//!   with like.
//! * **Capacity is raw.** [`Catalog::cheapest_fitting`] compares the task
//!   with the whole instance; memory reserved for the OS and agent is the
//!   caller's concern.
//! * **Unsourced rules.** The ECS Managed Instances floor (no type with 1
//!   vCPU or less, no `nano`/`micro`) is a product rule; no AWS page found
//!   states it. AWS's exact messages for "no instance type satisfies the
//!   requirements", min > max and the either/or lists were not found either;
//!   those [`RequirementsError`] messages are berth's wording in AWS's style.

mod catalog;
pub mod cost;
mod csv;
mod fargate;
mod matching;
mod types;

pub use catalog::{
    embedded_fee_table, embedded_price_table, table_info, Catalog, CatalogCsv, Fee, FeeBasis,
    Price, PriceSource, TableInfo, ESTIMATED_FEE_RATIO,
};
pub use fargate::{FargateDimension, FargateOs, FargateRate, FargateTaskSize};
pub use matching::{
    ecs_managed_instances_floor, instance_type_pattern_matches, MatchOptions, PriceBasis,
    Requirements, RequirementsError, DEFAULT_ON_DEMAND_MAX_PRICE_PERCENTAGE,
    MAX_INSTANCE_TYPE_PATTERNS, MAX_INSTANCE_TYPE_PATTERN_LEN, PRICE_PROTECTION_OFF,
};
pub use types::{AcceleratorKind, Architecture, CpuVendor, InstanceType};

/// Malformed catalog data: which file, which line, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct DataError {
    /// The file (`instance-types.csv`…).
    pub file: &'static str,
    /// The 1-based line (0 when the problem is not tied to a line).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl DataError {
    pub(crate) fn new(file: &'static str, line: usize, message: impl Into<String>) -> Self {
        DataError {
            file,
            line,
            message: message.into(),
        }
    }
}

//! [`Catalog`]: instance types, regional offerings, prices and fees.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

use crate::csv::Table;
use crate::fargate::{FargateRate, FargateTaskSize};
use crate::types::{self, InstanceType};
use crate::DataError;

/// The fee ratio the data's README suggests where no fee is recorded: 12 % of
/// the on-demand price. It reproduces AWS's one published example (us-east-1
/// c6a.2xlarge: 12 % of $0.306 = $0.0367 ≈ $0.037). An **estimate**.
pub const ESTIMATED_FEE_RATIO: f64 = 0.12;

/// The CSV texts a [`Catalog`] is built from (the formats of the files in
/// `data/`; see `data/PROVENANCE.md`).
#[derive(Debug, Clone, Copy)]
pub struct CatalogCsv<'a> {
    /// `instance-types.csv`.
    pub instance_types: &'a str,
    /// `instance-type-offerings.csv`: `region,instance_type,az_count`.
    pub offerings: &'a str,
    /// `prices-on-demand.csv`: `region,instance_type,usd_per_hour,source`.
    pub prices: &'a str,
    /// `ecs-mi-management-fee.csv`: `region,instance_type,fee_usd_per_hour,basis`.
    pub fees: &'a str,
    /// `fargate-prices.csv`.
    pub fargate_prices: &'a str,
    /// `fargate-task-sizes.csv`.
    pub fargate_task_sizes: &'a str,
}

impl CatalogCsv<'static> {
    /// The files embedded in this crate.
    pub const EMBEDDED: CatalogCsv<'static> = CatalogCsv {
        instance_types: include_str!("../data/instance-types.csv"),
        offerings: include_str!("../data/instance-type-offerings.csv"),
        prices: include_str!("../data/prices-on-demand.csv"),
        fees: include_str!("../data/ecs-mi-management-fee.csv"),
        fargate_prices: include_str!("../data/fargate-prices.csv"),
        fargate_task_sizes: include_str!("../data/fargate-task-sizes.csv"),
    };
}

/// Where an on-demand price came from (`source` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriceSource {
    /// Karpenter's generated price table (us-east-1, GovCloud), 2026-07-20.
    Karpenter,
    /// Karpenter's bare-metal price, taken from *Dedicated* tenancy: may be
    /// 6–10 % above the shared-tenancy list price.
    KarpenterMetalDedicated,
    /// The aws-samples ECS Managed Instances calculator (28 regions), 2026-02-07.
    AwsSamples,
    /// Any other label (caller-supplied data).
    Other,
}

impl PriceSource {
    fn parse(value: &str) -> Self {
        match value {
            "karpenter" => Self::Karpenter,
            "karpenter-metal-dedicated" => Self::KarpenterMetalDedicated,
            "aws-samples" => Self::AwsSamples,
            _ => Self::Other,
        }
    }
}

/// A Linux on-demand price, USD per instance-hour.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// USD per hour.
    pub usd_per_hour: f64,
    /// Where it came from.
    pub source: PriceSource,
}

/// How a management fee was arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeeBasis {
    /// AWS's published pricing example (us-east-1 c6a.2xlarge).
    PublishedExample,
    /// A ratio measured from a real bill (7.80 %, two ap-northeast-1 GPU types).
    MeasuredRatio,
    /// A 12 % estimate recorded in the data file (us-east-1).
    Estimate,
    /// A 12 % estimate computed here from the on-demand price, for a
    /// (region, type) the fee file does not cover.
    Extrapolated,
    /// Given by the operator: a fee table without a `basis` column
    /// (`--fee-table`) or a percentage of on-demand (`--fee-percent`).
    Configured,
}

impl FeeBasis {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "published_example" => Some(Self::PublishedExample),
            "measured_ratio" => Some(Self::MeasuredRatio),
            "estimate_12pct" => Some(Self::Estimate),
            "configured" => Some(Self::Configured),
            _ => None,
        }
    }

    /// Whether the figure is an estimate rather than an observation.
    pub fn is_estimate(&self) -> bool {
        matches!(self, Self::Estimate | Self::Extrapolated)
    }
}

/// The ECS Managed Instances management fee, USD per instance-hour, billed on
/// top of the EC2 price.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fee {
    /// USD per hour.
    pub usd_per_hour: f64,
    /// How it was arrived at.
    pub basis: FeeBasis,
}

/// Where a price or fee table came from and how recent it is, as cost
/// reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableInfo {
    /// Where the figures come from (sources, or the file given).
    pub source: String,
    /// The date of the figures (`YYYY-MM-DD`), or what is known of it.
    pub date: String,
}

impl TableInfo {
    /// `source (date)`, the label meters keep.
    pub fn label(&self) -> String {
        format!("{} ({})", self.source, self.date)
    }
}

impl std::fmt::Display for TableInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// The embedded price table's provenance (`data/PROVENANCE.md`).
pub fn embedded_price_table() -> TableInfo {
    TableInfo {
        source: "berth catalog: Karpenter pricing (us-east-1, GovCloud, 2026-07-20) and \
                 the aws-samples ECS Managed Instances calculator (other regions, 2026-02-07)"
            .into(),
        date: "2026-11-25".into(),
    }
}

/// The embedded fee table's provenance (`data/PROVENANCE.md`).
pub fn embedded_fee_table() -> TableInfo {
    TableInfo {
        source: "berth catalog: AWS's published example and 12 % estimates of on-demand \
                 (ecs-mi-management-fee.csv)"
            .into(),
        date: "2026-11-25".into(),
    }
}

/// The provenance of a price or fee table given in the formats of `data/`
/// (`--price-table`, `--fee-table`): the file, the distinct values of its
/// `source` (or `basis`) column, and the latest of its `as_of` column
/// (`undated` without one).
pub fn table_info(file: &str, text: &str) -> TableInfo {
    let mut sources = BTreeSet::new();
    let mut dates = BTreeSet::new();
    if let Ok(table) = Table::parse("table", text) {
        for row in table.rows() {
            for column in ["source", "basis"] {
                if let Ok(Some(v)) = row.opt_str(column) {
                    sources.insert(v.to_string());
                }
            }
            if let Ok(Some(v)) = row.opt_str("as_of") {
                dates.insert(v.to_string());
            }
        }
    }
    let mut source = file.to_string();
    if !sources.is_empty() {
        source.push_str(&format!(
            " ({})",
            sources.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    TableInfo {
        source,
        date: dates.pop_last().unwrap_or_else(|| "undated".into()),
    }
}

#[derive(Debug, Default)]
struct RegionData {
    /// Type → number of AZ ids offering it. `None`: no offering data at all.
    offerings: Option<HashMap<String, u32>>,
    prices: HashMap<String, Price>,
    fees: HashMap<String, Fee>,
}

/// The instance-type catalog. Immutable once built; [`Catalog::embedded`]
/// gives the one built from the data compiled into the crate.
#[derive(Debug)]
pub struct Catalog {
    /// Sorted by name.
    types: Vec<InstanceType>,
    by_name: HashMap<String, usize>,
    /// Sorted.
    regions: Vec<String>,
    region_data: HashMap<String, RegionData>,
    pub(crate) fargate_rates: Vec<FargateRate>,
    pub(crate) fargate_task_sizes: Vec<FargateTaskSize>,
    /// The fee as a fraction of on-demand where the fee table has no row.
    fee_ratio: f64,
    /// Fees for a (region, type) without a row are `Configured`, not estimates.
    fee_ratio_configured: bool,
    price_table: TableInfo,
    fee_table: TableInfo,
    /// Answers of `matching_with`, by question (see there).
    matches: Mutex<HashMap<String, MatchFound>>,
}

/// A kept answer of `matching_with`: positions in `types`.
pub(crate) type MatchFound = Result<Vec<usize>, crate::matching::RequirementsError>;

static EMBEDDED: OnceLock<Catalog> = OnceLock::new();

impl Catalog {
    /// The catalog built from the embedded data, parsed on first use.
    ///
    /// # Panics
    /// If the embedded data does not parse. That is a build defect, which the
    /// crate's own tests catch (`embedded_data_parses`).
    pub fn embedded() -> &'static Catalog {
        EMBEDDED.get_or_init(|| {
            #[allow(clippy::expect_used)]
            Catalog::from_csv(&CatalogCsv::EMBEDDED)
                .expect("berth-catalog: the embedded catalog data is malformed (build defect)")
        })
    }

    /// Builds a catalog from CSV text in the formats of `data/`.
    pub fn from_csv(csv: &CatalogCsv<'_>) -> Result<Catalog, DataError> {
        let mut types = parse_types(csv.instance_types)?;
        types.sort_by(|a, b| a.name.cmp(&b.name));
        let mut by_name = HashMap::with_capacity(types.len());
        for (i, t) in types.iter().enumerate() {
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(DataError::new(
                    "instance-types.csv",
                    0,
                    format!("duplicate instance type `{}`", t.name),
                ));
            }
        }

        let mut region_data: HashMap<String, RegionData> = HashMap::new();

        let table = Table::parse("instance-type-offerings.csv", csv.offerings)?;
        table.require(&["region", "instance_type"])?;
        for row in table.rows() {
            let region = nonempty(&row, "region")?;
            let name = nonempty(&row, "instance_type")?;
            let az_count = row.parse_or("az_count", 1)?;
            region_data
                .entry(region.to_string())
                .or_default()
                .offerings
                .get_or_insert_with(HashMap::new)
                .insert(name.to_string(), az_count);
        }

        let table = Table::parse("prices-on-demand.csv", csv.prices)?;
        table.require(&["region", "instance_type", "usd_per_hour"])?;
        for row in table.rows() {
            let region = nonempty(&row, "region")?;
            let name = nonempty(&row, "instance_type")?;
            let usd_per_hour: f64 = row.parse("usd_per_hour")?;
            if !usd_per_hour.is_finite() || usd_per_hour <= 0.0 {
                return Err(row.error(format!("price {usd_per_hour} is not positive")));
            }
            let source = PriceSource::parse(row.opt_str("source").ok().flatten().unwrap_or(""));
            let prices = &mut region_data.entry(region.to_string()).or_default().prices;
            if prices
                .insert(
                    name.to_string(),
                    Price {
                        usd_per_hour,
                        source,
                    },
                )
                .is_some()
            {
                return Err(row.error(format!("a second price for {region} {name}")));
            }
        }

        let table = Table::parse("ecs-mi-management-fee.csv", csv.fees)?;
        table.require(&["region", "instance_type", "fee_usd_per_hour"])?;
        for row in table.rows() {
            let region = nonempty(&row, "region")?;
            let name = nonempty(&row, "instance_type")?;
            let usd_per_hour: f64 = row.parse("fee_usd_per_hour")?;
            if !usd_per_hour.is_finite() || usd_per_hour < 0.0 {
                return Err(row.error(format!("fee {usd_per_hour} is negative")));
            }
            // A table without a basis column is the operator's own.
            let basis = match row.opt_str("basis").ok().flatten() {
                None | Some("") => FeeBasis::Configured,
                Some(text) => FeeBasis::parse(text)
                    .ok_or_else(|| row.error(format!("unknown fee basis `{text}`")))?,
            };
            let fees = &mut region_data.entry(region.to_string()).or_default().fees;
            if fees
                .insert(
                    name.to_string(),
                    Fee {
                        usd_per_hour,
                        basis,
                    },
                )
                .is_some()
            {
                return Err(row.error(format!("a second fee for {region} {name}")));
            }
        }

        let regions: BTreeSet<String> = region_data.keys().cloned().collect();
        let fargate_rates = crate::fargate::parse_rates(csv.fargate_prices)?;
        let fargate_task_sizes = crate::fargate::parse_sizes(csv.fargate_task_sizes)?;
        Ok(Catalog {
            types,
            by_name,
            regions: regions.into_iter().collect(),
            region_data,
            fargate_rates,
            fargate_task_sizes,
            fee_ratio: ESTIMATED_FEE_RATIO,
            fee_ratio_configured: false,
            price_table: embedded_price_table(),
            fee_table: embedded_fee_table(),
            matches: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn matches(&self) -> &Mutex<HashMap<String, MatchFound>> {
        &self.matches
    }

    /// The same catalog with these provenances for its price and fee tables.
    pub fn with_tables(mut self, price_table: TableInfo, fee_table: TableInfo) -> Catalog {
        self.price_table = price_table;
        self.fee_table = fee_table;
        self
    }

    /// The same catalog with every management fee `percent` % of the
    /// on-demand price (`--fee-percent`): the fee rows are dropped.
    pub fn with_fee_percent(mut self, percent: f64) -> Catalog {
        for data in self.region_data.values_mut() {
            data.fees.clear();
        }
        self.fee_ratio = percent / 100.0;
        self.fee_ratio_configured = true;
        self
    }

    /// Where the on-demand prices come from.
    pub fn price_table(&self) -> &TableInfo {
        &self.price_table
    }

    /// Where the management fees come from.
    pub fn fee_table(&self) -> &TableInfo {
        &self.fee_table
    }

    /// Every instance type, sorted by name.
    pub fn types(&self) -> &[InstanceType] {
        &self.types
    }

    /// The type named `name` (`m7i.large`).
    pub fn get(&self, name: &str) -> Option<&InstanceType> {
        self.by_name.get(name).map(|&i| &self.types[i])
    }

    /// Every region the data mentions (offerings or prices), sorted.
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// Whether the data knows `region` at all.
    pub fn has_region(&self, region: &str) -> bool {
        self.region_data.contains_key(region)
    }

    /// Whether `instance_type` is offered in `region`.
    ///
    /// A region with no offering data (the two GovCloud regions have prices
    /// only) counts a type as offered when it has a price there.
    pub fn offered(&self, region: &str, instance_type: &str) -> bool {
        match self.region_data.get(region) {
            None => false,
            Some(data) => match &data.offerings {
                Some(offerings) => offerings.contains_key(instance_type),
                None => data.prices.contains_key(instance_type),
            },
        }
    }

    /// How many availability-zone ids of `region` offer the type, when the
    /// offering data says so.
    pub fn az_count(&self, region: &str, instance_type: &str) -> Option<u32> {
        self.region_data
            .get(region)?
            .offerings
            .as_ref()?
            .get(instance_type)
            .copied()
    }

    /// The Linux on-demand price with its source.
    pub fn price(&self, region: &str, instance_type: &str) -> Option<Price> {
        self.region_data
            .get(region)?
            .prices
            .get(instance_type)
            .copied()
    }

    /// The Linux on-demand price, USD per hour.
    pub fn on_demand_price(&self, region: &str, instance_type: &str) -> Option<f64> {
        self.price(region, instance_type).map(|p| p.usd_per_hour)
    }

    /// The ECS Managed Instances management fee with how it was arrived at:
    /// the fee file's figure when it has one, otherwise
    /// [`ESTIMATED_FEE_RATIO`] × the on-demand price ([`FeeBasis::Extrapolated`]),
    /// otherwise `None`.
    pub fn management_fee_quote(&self, region: &str, instance_type: &str) -> Option<Fee> {
        let data = self.region_data.get(region)?;
        if let Some(fee) = data.fees.get(instance_type) {
            return Some(*fee);
        }
        let price = data.prices.get(instance_type)?;
        Some(Fee {
            usd_per_hour: price.usd_per_hour * self.fee_ratio,
            basis: if self.fee_ratio_configured {
                FeeBasis::Configured
            } else {
                FeeBasis::Extrapolated
            },
        })
    }

    /// The ECS Managed Instances management fee, USD per hour (mostly an
    /// estimate: see [`Catalog::management_fee_quote`]).
    pub fn management_fee(&self, region: &str, instance_type: &str) -> Option<f64> {
        self.management_fee_quote(region, instance_type)
            .map(|f| f.usd_per_hour)
    }

    /// What an instance of the type costs per hour under ECS Managed
    /// Instances: on-demand price + management fee. `None` without a price.
    pub fn hourly_cost(&self, region: &str, instance_type: &str) -> Option<f64> {
        let price = self.on_demand_price(region, instance_type)?;
        let fee = self.management_fee(region, instance_type).unwrap_or(0.0);
        Some(price + fee)
    }

    /// The cheapest of `candidates` (by [`Catalog::hourly_cost`] in `region`)
    /// that holds a task of `cpu_units` CPU units, `memory_mib` MiB and `gpus`
    /// whole GPUs. Candidates without a price in `region` are skipped; ties go
    /// to fewer vCPUs, then to the name. The comparison is against the raw
    /// instance size: nothing is reserved here for the OS or the agent.
    pub fn cheapest_fitting<'a>(
        &self,
        region: &str,
        candidates: &[&'a InstanceType],
        cpu_units: u32,
        memory_mib: u64,
        gpus: u32,
    ) -> Option<&'a InstanceType> {
        candidates
            .iter()
            .copied()
            .filter(|t| {
                t.cpu_units() >= cpu_units && t.memory_mib >= memory_mib && t.whole_gpus() >= gpus
            })
            .filter_map(|t| self.hourly_cost(region, &t.name).map(|cost| (cost, t)))
            .min_by(|(ca, a), (cb, b)| {
                ca.total_cmp(cb)
                    .then(a.vcpus.cmp(&b.vcpus))
                    .then_with(|| a.name.cmp(&b.name))
            })
            .map(|(_, t)| t)
    }
}

fn nonempty<'r>(row: &'r crate::csv::Row<'_, '_>, column: &str) -> Result<&'r str, DataError> {
    row.opt_str(column)?
        .ok_or_else(|| row.error(format!("column `{column}` is empty")))
}

fn parse_types(text: &str) -> Result<Vec<InstanceType>, DataError> {
    let table = Table::parse("instance-types.csv", text)?;
    table.require(types::COLUMNS)?;
    table
        .rows()
        .map(|row| InstanceType::from_row(&row))
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
    fn embedded_data_parses() {
        let catalog = Catalog::from_csv(&CatalogCsv::EMBEDDED).unwrap();
        assert_eq!(catalog.types().len(), 1395);
        assert_eq!(catalog.regions().len(), 32);
        assert_eq!(catalog.fargate_rates.len(), 8);
        assert_eq!(catalog.fargate_task_sizes.len(), 74);
        // And the lazily built one is the same data.
        assert_eq!(Catalog::embedded().types().len(), 1395);
    }

    #[test]
    fn catalog_is_shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Catalog>();
        let handle = std::thread::spawn(|| Catalog::embedded().types().len());
        assert_eq!(handle.join().unwrap(), Catalog::embedded().types().len());
    }

    #[test]
    fn counts_match_the_readme() {
        let c = Catalog::embedded();
        let current = c.types().iter().filter(|t| t.current_generation).count();
        assert_eq!(current, 1259);
        assert_eq!(c.types().iter().filter(|t| t.has_gpu()).count(), 65);
        assert_eq!(c.types().iter().filter(|t| t.burstable).count(), 28);
        assert_eq!(c.types().iter().filter(|t| t.bare_metal).count(), 154);
        assert_eq!(
            c.types().iter().filter(|t| t.local_storage_gb > 0).count(),
            579
        );
        let offered = c
            .types()
            .iter()
            .filter(|t| c.offered("us-east-1", &t.name))
            .count();
        assert_eq!(offered, 1375);
    }

    #[test]
    fn known_attributes() {
        let c = Catalog::embedded();
        let m = c.get("m7i.large").unwrap();
        assert_eq!((m.vcpus, m.memory_mib, m.cpu_units()), (2, 8192, 2048));
        assert_eq!(m.family, "m7i");
        assert_eq!(m.size, "large");
        assert_eq!(m.category, "m");
        assert_eq!(m.generation, Some(7));
        assert!(m.current_generation && !m.burstable && !m.bare_metal);
        assert_eq!(m.cpu_manufacturer, crate::CpuVendor::Intel);
        assert_eq!(m.architectures, vec![crate::Architecture::X86_64]);

        let g = c.get("c7g.xlarge").unwrap();
        assert_eq!((g.vcpus, g.memory_mib), (4, 8192));
        assert_eq!(g.cpu_manufacturer, crate::CpuVendor::Aws);
        assert!(g.supports(crate::Architecture::Arm64));

        let p5 = c.get("p5.48xlarge").unwrap();
        assert_eq!((p5.vcpus, p5.gpu_count, p5.whole_gpus()), (192, 8, 8));
        assert_eq!(p5.gpu_name.as_deref(), Some("H100"));
        assert_eq!(p5.accelerator_total_count(), 8);

        let i4i = c.get("i4i.large").unwrap();
        assert_eq!(i4i.local_storage_gb, 468);
        assert_eq!(
            i4i.local_storage_type,
            Some(berth_model::ecs::LocalStorageType::Ssd)
        );

        let metal = c.get("m7i.metal-24xl").unwrap();
        assert!(metal.bare_metal);
        assert_eq!(metal.hypervisor, None);

        let frac = c.get("g6f.large").unwrap();
        assert!(frac.has_gpu() && frac.is_fractional_gpu());
        assert_eq!((frac.whole_gpus(), frac.accelerator_total_count()), (0, 1));

        let inf2 = c.get("inf2.xlarge").unwrap();
        assert_eq!(inf2.accelerator_kind, Some(crate::AcceleratorKind::Neuron));
        assert_eq!(
            inf2.accelerator_types(),
            vec![berth_model::ecs::AcceleratorType::Inference]
        );
        assert!(c.get("m5.micro").is_none());
    }

    #[test]
    fn known_prices_and_fees() {
        let c = Catalog::embedded();
        assert!(close(
            c.on_demand_price("us-east-1", "c6a.2xlarge").unwrap(),
            0.306
        ));
        let fee = c.management_fee_quote("us-east-1", "c6a.2xlarge").unwrap();
        assert!(close(fee.usd_per_hour, 0.037));
        assert_eq!(fee.basis, FeeBasis::PublishedExample);
        assert!(!fee.basis.is_estimate());
        assert!(close(
            c.hourly_cost("us-east-1", "c6a.2xlarge").unwrap(),
            0.343
        ));

        let measured = c
            .management_fee_quote("ap-northeast-1", "g6.xlarge")
            .unwrap();
        assert_eq!(measured.basis, FeeBasis::MeasuredRatio);
        assert!(close(measured.usd_per_hour, 0.091042));

        let m = c.management_fee_quote("us-east-1", "m7i.large").unwrap();
        assert_eq!(m.basis, FeeBasis::Estimate);
        let price = c.on_demand_price("us-east-1", "m7i.large").unwrap();
        assert!((m.usd_per_hour - 0.12 * price).abs() < 1e-4);

        // Outside the fee file: 12 % of the regional price, labelled as such.
        let p = c.on_demand_price("eu-west-1", "m7i.large").unwrap();
        let x = c.management_fee_quote("eu-west-1", "m7i.large").unwrap();
        assert_eq!(x.basis, FeeBasis::Extrapolated);
        assert!(close(x.usd_per_hour, p * ESTIMATED_FEE_RATIO));

        assert_eq!(
            c.price("us-east-1", "c6a.2xlarge").unwrap().source,
            PriceSource::Karpenter
        );
        assert_eq!(c.on_demand_price("us-east-1", "mac2.metal"), None);
        assert_eq!(c.management_fee("us-east-1", "mac2.metal"), None);
        assert_eq!(c.on_demand_price("nowhere-1", "m7i.large"), None);
    }

    #[test]
    fn offerings_and_regions() {
        let c = Catalog::embedded();
        assert!(c.regions().iter().any(|r| r == "us-east-1"));
        assert!(c.regions().windows(2).all(|w| w[0] < w[1]));
        assert!(c.offered("us-east-1", "m7i.large"));
        assert!(!c.offered("us-east-1", "no.such"));
        assert!(!c.offered("nowhere-1", "m7i.large"));
        assert!(c.az_count("us-east-1", "m7i.large").unwrap() >= 1);
        // GovCloud: prices, no offering dump → priced means offered.
        assert!(c.has_region("us-gov-west-1"));
        let gov_priced = c
            .types()
            .iter()
            .find(|t| c.price("us-gov-west-1", &t.name).is_some())
            .unwrap();
        assert!(c.offered("us-gov-west-1", &gov_priced.name));
        assert_eq!(c.az_count("us-gov-west-1", &gov_priced.name), None);
    }

    #[test]
    fn cheapest_fitting_picks_the_lowest_total_cost() {
        let c = Catalog::embedded();
        let names = [
            "m7i.large",
            "m7i.xlarge",
            "c7i.2xlarge",
            "r7i.large",
            "g6.xlarge",
            "g6f.large",
        ];
        let cands: Vec<&InstanceType> = names.iter().map(|n| c.get(n).unwrap()).collect();
        // 1 vCPU / 4 GiB: m7i.large is the cheapest that fits.
        let pick = c
            .cheapest_fitting("us-east-1", &cands, 1024, 4096, 0)
            .unwrap();
        assert_eq!(pick.name, "m7i.large");
        // 2 vCPU / 16 GiB: r7i.large (16 GiB) beats m7i.xlarge.
        let pick = c
            .cheapest_fitting("us-east-1", &cands, 2048, 16384, 0)
            .unwrap();
        assert_eq!(pick.name, "r7i.large");
        // A whole GPU: only g6.xlarge; the fractional g6f.large does not count.
        let pick = c
            .cheapest_fitting("us-east-1", &cands, 1024, 1024, 1)
            .unwrap();
        assert_eq!(pick.name, "g6.xlarge");
        assert!(c
            .cheapest_fitting("us-east-1", &cands, 1024, 1024, 2)
            .is_none());
        assert!(c
            .cheapest_fitting("us-east-1", &cands, 64 * 1024, 1024, 0)
            .is_none());
        assert!(c
            .cheapest_fitting("nowhere-1", &cands, 1024, 1024, 0)
            .is_none());
        assert!(c.cheapest_fitting("us-east-1", &[], 0, 0, 0).is_none());
    }

    #[test]
    fn bad_data_is_reported() {
        let good = CatalogCsv::EMBEDDED;
        let bad_price = CatalogCsv {
            prices: "region,instance_type,usd_per_hour,source\nus-east-1,m7i.large,-1,x\n",
            ..good
        };
        let err = Catalog::from_csv(&bad_price).unwrap_err();
        assert_eq!(err.file, "prices-on-demand.csv");
        assert_eq!(err.line, 2);
        let dup = CatalogCsv {
            prices: "region,instance_type,usd_per_hour\nr,t.x,1\nr,t.x,2\n",
            ..good
        };
        assert!(Catalog::from_csv(&dup).is_err());
        let bad_fee = CatalogCsv {
            fees: "region,instance_type,fee_usd_per_hour,basis\nr,t.x,1,guess\n",
            ..good
        };
        assert!(Catalog::from_csv(&bad_fee).is_err());
        let no_col = CatalogCsv {
            offerings: "region\nr\n",
            ..good
        };
        assert!(Catalog::from_csv(&no_col).is_err());
        let bad_arch = CatalogCsv {
            instance_types: &good.instance_types.replacen(",x86_64,", ",sparc,", 1),
            ..good
        };
        assert!(Catalog::from_csv(&bad_arch).is_err());
    }
}

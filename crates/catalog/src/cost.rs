//! Cost from meter records: billing, attribution, roll-ups and the Fargate
//! comparison, as pure functions.
//!
//! # Rules
//!
//! * **Billing.** An instance is billed per second from its launch, with a
//!   60-second minimum: it lived `d` seconds (until it ended, or until the
//!   report's end while it runs) and is billed `max(60, ⌈d⌉)` seconds at the
//!   price and fee per hour frozen in its meter at launch. Seconds accrue as
//!   it runs: a report over `[since, until)` counts the whole seconds of its
//!   life `[⌊launch⌋, ⌊launch⌋ + ⌈d⌉)` inside the window, and the minimum's
//!   padding (`60 − ⌈d⌉` for a shorter life) is charged at its end, when
//!   the end is in the window. So an instance still running is billed up to
//!   now, and one that lived 30 s is billed 60 s once it has ended.
//! * **Attribution.** Each second a task runs on an instance it is charged
//!   its share of that second's price and fee: the average of its reserved
//!   CPU over the instance's CPU and its reserved memory over the instance's
//!   memory (each capped at 1). A task's times are rounded to the nearest
//!   second and kept inside the instance's life. What no task reserved —
//!   unreserved capacity, the agent's reservation, the 60 s minimum's
//!   padding — is **idle**: per instance, idle = bill − Σ task shares, so
//!   idle plus task shares is always the instance bill.
//! * **Fargate.** Each stay of a task on an instance is priced as a Fargate
//!   task of the smallest valid size that holds its CPU and memory, at the
//!   Linux per-vCPU-hour and per-GB-hour rates of its architecture, per
//!   second with Fargate's 1-minute minimum (charged at its stop, as an
//!   instance's is at its end). The rates are those of the
//!   instance's region, else us-east-1's (the only region in the data). A
//!   task with GPUs, or larger than any Fargate size, has no Fargate price:
//!   it is counted in [`CostReport::fargate_unpriced_tasks`].

use std::collections::{BTreeMap, BTreeSet};

use berth_model::meter::{InstanceMeter, TaskUsage};
use serde::{Deserialize, Serialize};

use crate::{Architecture, Catalog, FargateOs};

/// The minimum an instance (and a Fargate task) is billed, seconds.
pub const MINIMUM_SECONDS: i64 = 60;
const DAY: i64 = 86_400;
/// Where Fargate rates are taken from when a region has none.
pub const FARGATE_FALLBACK_REGION: &str = "us-east-1";

/// How a report's rows are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupBy {
    /// One row per task ARN: its shares.
    Task,
    /// One row per task group (`service:web`, `family:batch`): its tasks' shares.
    Service,
    /// One row per cluster ARN: its instances' bills.
    Cluster,
    /// One row per capacity provider: its instances' bills.
    CapacityProvider,
    /// One row per instance: its bill.
    Instance,
    /// One row per instance type: the bills of its instances.
    InstanceType,
    /// One row per UTC day (`YYYY-MM-DD`): the bills of that day's seconds.
    Day,
}

impl GroupBy {
    /// Every value.
    pub const ALL: &'static [GroupBy] = &[
        Self::Task,
        Self::Service,
        Self::Cluster,
        Self::CapacityProvider,
        Self::Instance,
        Self::InstanceType,
        Self::Day,
    ];

    /// The spelling of `--by` and of the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Service => "service",
            Self::Cluster => "cluster",
            Self::CapacityProvider => "capacity-provider",
            Self::Instance => "instance",
            Self::InstanceType => "instance-type",
            Self::Day => "day",
        }
    }

    /// The inverse of [`GroupBy::as_str`].
    pub fn parse(s: &str) -> Option<GroupBy> {
        Self::ALL.iter().copied().find(|g| g.as_str() == s)
    }

    /// Whether rows are instances' bills (true) or tasks' shares (false).
    pub fn by_instance(&self) -> bool {
        match self {
            Self::Task | Self::Service => false,
            Self::Cluster
            | Self::CapacityProvider
            | Self::Instance
            | Self::InstanceType
            | Self::Day => true,
        }
    }
}

/// The period a report covers, `[since, until)` in seconds since the epoch.
/// `until` is also "now" for what still runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub since: Option<f64>,
    pub until: f64,
}

impl Window {
    fn since_s(&self) -> i64 {
        self.since.map_or(i64::MIN, |s| s.floor() as i64)
    }
    fn until_s(&self) -> i64 {
        self.until.ceil() as i64
    }
}

/// One row of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CostRow {
    /// What the row is for (a task ARN, a group, a cluster ARN, a capacity
    /// provider, an instance id, an instance type or a day).
    pub key: String,
    /// `--by instance`: the instance id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// `--by instance`: its type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// `--by instance`: its capacity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_provider: Option<String>,
    /// `--by instance`: `ON_DEMAND` or `SPOT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_option: Option<String>,
    /// Billed seconds: instance seconds for instance rows, task seconds for
    /// task and service rows.
    pub seconds: u64,
    /// The instances' price part (no management fee).
    pub instance_usd: f64,
    /// The management fee part.
    pub fee_usd: f64,
    /// `instance_usd + fee_usd`.
    pub total_usd: f64,
    /// Instance rows: the part of the bill no task reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_usd: Option<f64>,
    /// What the same tasks would have cost on Fargate (those that fit it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fargate_usd: Option<f64>,
}

/// A cost report over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostReport {
    pub group_by: GroupBy,
    pub since: Option<f64>,
    pub until: f64,
    pub rows: Vec<CostRow>,
    /// Instances billed in the window.
    pub instances: usize,
    /// Their billed seconds.
    pub instance_seconds: u64,
    /// The instances' price part: what they cost without the management fee.
    pub instance_usd: f64,
    pub fee_usd: f64,
    /// The instances' bill: `instance_usd + fee_usd`.
    pub total_usd: f64,
    /// What tasks were charged (Σ shares).
    pub attributed_usd: f64,
    /// What no task reserved: `total_usd − attributed_usd`.
    pub idle_usd: f64,
    /// Tasks that ran in the window.
    pub tasks: usize,
    /// What those of them that fit Fargate would have cost there.
    pub fargate_usd: f64,
    /// Tasks with no Fargate price (GPUs, or larger than any Fargate size).
    pub fargate_unpriced_tasks: usize,
    /// The price tables the billed instances' prices came from.
    pub price_tables: Vec<String>,
    /// The fee tables their fees came from.
    pub fee_tables: Vec<String>,
}

#[derive(Default)]
struct Acc {
    row: CostRow,
    idle: f64,
    fargate: f64,
    fargate_priced: bool,
}

impl Acc {
    fn add(&mut self, seconds: i64, price: f64, fee: f64) {
        self.row.seconds += seconds.max(0) as u64;
        self.row.instance_usd += price;
        self.row.fee_usd += fee;
    }
}

/// A task's stay on an instance, in whole seconds.
struct Stay<'a> {
    usage: &'a TaskUsage,
    start: i64,
    end: i64,
    share: f64,
    /// Fargate's 1-minute minimum's padding, charged when it stopped...
    fargate_pad: i64,
    /// ...in this piece of the window.
    pad_piece: Option<usize>,
    /// Fargate USD per hour, `None` when it has no Fargate price.
    fargate_rate: Option<f64>,
}

/// `[a, b)` ∩ `[c, d)`, as a length.
fn overlap(a: i64, b: i64, c: i64, d: i64) -> i64 {
    (b.min(d) - a.max(c)).max(0)
}

/// Billed seconds of an instance over its whole life so far: its age while
/// it runs, at least the minimum once it has ended.
pub fn billed_seconds(m: &InstanceMeter, now: f64) -> i64 {
    let lived = lived_seconds(m, now);
    if m.ended_at.is_some_and(|e| e <= now) {
        lived.max(MINIMUM_SECONDS)
    } else {
        lived
    }
}

/// Whole seconds the instance lived (ran), before the minimum.
fn lived_seconds(m: &InstanceMeter, now: f64) -> i64 {
    let end = m.ended_at.unwrap_or(now).max(m.launched_at);
    // A hair of slack so that 5400.000000001 s of float noise bills 5400 s.
    ((end - m.launched_at) - 1e-6).ceil().max(0.0) as i64
}

/// A task's share of its instance (see the module's rules).
pub fn share(m: &InstanceMeter, u: &TaskUsage) -> f64 {
    let ratio = |part: f64, whole: f64| {
        if whole > 0.0 {
            (part / whole).min(1.0)
        } else {
            0.0
        }
    };
    0.5 * (ratio(f64::from(u.cpu_units), f64::from(m.cpu_units))
        + ratio(u.memory_mib as f64, m.memory_mib as f64))
}

/// The Fargate price of a task per hour, `None` when it has no Fargate size
/// (GPUs, too big) or no rate.
pub fn fargate_hourly(catalog: &Catalog, region: &str, u: &TaskUsage) -> Option<f64> {
    if u.gpus > 0 {
        return None;
    }
    let memory = u32::try_from(u.memory_mib).ok()?;
    let size = catalog.fargate_size_for(u.cpu_units, memory, FargateOs::Linux)?;
    let arch = match u.architecture.as_str() {
        "arm64" => Architecture::Arm64,
        _ => Architecture::X86_64,
    };
    catalog
        .fargate_hourly_cost(
            region,
            FargateOs::Linux,
            arch,
            size.cpu_units,
            size.memory_mib,
        )
        .or_else(|| {
            catalog.fargate_hourly_cost(
                FARGATE_FALLBACK_REGION,
                FargateOs::Linux,
                arch,
                size.cpu_units,
                size.memory_mib,
            )
        })
}

/// A UTC day `YYYY-MM-DD` from days since the epoch (civil-from-days, H. Hinnant).
fn day_label(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

/// `[a, b)` cut at UTC day boundaries when `by_day`, else whole; each piece
/// with its day label (empty when not by day).
fn pieces(a: i64, b: i64, by_day: bool) -> Vec<(String, i64, i64)> {
    if a >= b {
        return vec![];
    }
    if !by_day {
        return vec![(String::new(), a, b)];
    }
    let mut out = vec![];
    let mut at = a;
    while at < b {
        let day = at.div_euclid(DAY);
        let end = ((day + 1) * DAY).min(b);
        out.push((day_label(day), at, end));
        at = end;
    }
    out
}

/// The report over `window`, keyed by `group_by`, from each instance's meter
/// and the usages of tasks on it.
pub fn report(
    catalog: &Catalog,
    instances: &[(InstanceMeter, Vec<TaskUsage>)],
    window: Window,
    group_by: GroupBy,
) -> CostReport {
    let (since, until) = (window.since_s(), window.until_s());
    let by_day = group_by == GroupBy::Day;
    let mut rows: BTreeMap<String, Acc> = BTreeMap::new();
    let mut out = CostReport {
        group_by,
        since: window.since,
        until: window.until,
        rows: vec![],
        instances: 0,
        instance_seconds: 0,
        instance_usd: 0.0,
        fee_usd: 0.0,
        total_usd: 0.0,
        attributed_usd: 0.0,
        idle_usd: 0.0,
        tasks: 0,
        fargate_usd: 0.0,
        fargate_unpriced_tasks: 0,
        price_tables: vec![],
        fee_tables: vec![],
    };
    let mut tasks = BTreeSet::new();
    let mut unpriced = BTreeSet::new();
    let mut price_tables = BTreeSet::new();
    let mut fee_tables = BTreeSet::new();
    for (m, usages) in instances {
        let start = m.launched_at.floor() as i64;
        let lived = lived_seconds(m, window.until);
        let lived_end = start + lived;
        // The minimum's padding is charged when the life ends (in the window).
        let ended = m.ended_at.is_some_and(|e| e <= window.until);
        let pad = if ended && since < lived_end && lived_end <= until {
            (MINIMUM_SECONDS - lived).max(0)
        } else {
            0
        };
        let mut parts = pieces(start.max(since), lived_end.min(until), by_day);
        if pad > 0 && parts.last().map(|p| p.2) != Some(lived_end) {
            let day = (lived_end - 1).max(start).div_euclid(DAY);
            let key = if by_day {
                day_label(day)
            } else {
                String::new()
            };
            parts.push((key, lived_end, lived_end));
        }
        if parts.is_empty() {
            continue;
        }
        let last = parts.len() - 1;
        out.instances += 1;
        price_tables.insert(m.price_table.clone());
        fee_tables.insert(m.fee_table.clone());
        let price_s = m.price_per_hour / 3600.0;
        let fee_s = m.fee_per_hour / 3600.0;
        // Each stay: its seconds on the instance, share, Fargate padding and rate.
        let stays: Vec<Stay<'_>> = usages
            .iter()
            .map(|u| {
                let a = (u.started_at.round() as i64).clamp(start, lived_end);
                let stop = u.stopped_at.or(m.ended_at);
                let b = (stop.unwrap_or(window.until).round() as i64).clamp(a, lived_end);
                let stopped = stop.is_some_and(|e| e <= window.until);
                let fargate_pad = if stopped && since < b && b <= until {
                    (MINIMUM_SECONDS - (b - a)).max(0)
                } else {
                    0
                };
                let pad_piece = (fargate_pad > 0)
                    .then(|| {
                        parts
                            .iter()
                            .position(|p| p.1 < b && b <= p.2)
                            .or_else(|| parts.iter().position(|p| p.1 <= b && b <= p.2))
                    })
                    .flatten();
                Stay {
                    usage: u,
                    start: a,
                    end: b,
                    share: share(m, u),
                    fargate_pad,
                    pad_piece,
                    fargate_rate: fargate_hourly(catalog, &m.region, u),
                }
            })
            .collect();
        for (i, (piece_key, pa, pb)) in parts.into_iter().enumerate() {
            let seconds = pb - pa + if i == last { pad } else { 0 };
            let bill_price = seconds as f64 * price_s;
            let bill_fee = seconds as f64 * fee_s;
            out.instance_seconds += seconds as u64;
            out.instance_usd += bill_price;
            out.fee_usd += bill_fee;
            let mut shares = 0.0;
            let instance_key = match group_by {
                GroupBy::Cluster => Some(m.cluster_arn.clone()),
                GroupBy::CapacityProvider => Some(m.capacity_provider.clone()),
                GroupBy::Instance => Some(m.instance_id.clone()),
                GroupBy::InstanceType => Some(m.instance_type.clone()),
                GroupBy::Day => Some(piece_key.clone()),
                GroupBy::Task | GroupBy::Service => None,
            };
            let mut fargate_here = 0.0;
            let mut fargate_priced_here = false;
            for stay in &stays {
                let (u, sh) = (stay.usage, stay.share);
                let task_seconds = overlap(stay.start, stay.end, pa, pb);
                let padded = stay.pad_piece == Some(i);
                if task_seconds == 0 && !padded {
                    continue;
                }
                let fargate_seconds = task_seconds + if padded { stay.fargate_pad } else { 0 };
                tasks.insert(u.task_arn.clone());
                let price = task_seconds as f64 * sh * price_s;
                let fee = task_seconds as f64 * sh * fee_s;
                shares += price + fee;
                let fargate = stay
                    .fargate_rate
                    .map(|r| fargate_seconds as f64 * r / 3600.0);
                match fargate {
                    Some(f) => {
                        out.fargate_usd += f;
                        fargate_here += f;
                        fargate_priced_here = true;
                    }
                    None => {
                        unpriced.insert(u.task_arn.clone());
                    }
                }
                let task_key = match group_by {
                    GroupBy::Task => Some(u.task_arn.clone()),
                    GroupBy::Service => Some(u.group.clone().unwrap_or_else(|| "-".into())),
                    _ => None,
                };
                if let Some(k) = task_key {
                    let acc = rows.entry(k.clone()).or_default();
                    acc.row.key = k;
                    acc.add(task_seconds, price, fee);
                    if let Some(f) = fargate {
                        acc.fargate += f;
                        acc.fargate_priced = true;
                    }
                }
            }
            out.attributed_usd += shares;
            let idle = bill_price + bill_fee - shares;
            out.idle_usd += idle;
            if let Some(k) = instance_key {
                let acc = rows.entry(k.clone()).or_default();
                acc.row.key = k;
                if group_by == GroupBy::Instance {
                    acc.row.instance_id = Some(m.instance_id.clone());
                    acc.row.instance_type = Some(m.instance_type.clone());
                    acc.row.capacity_provider = Some(m.capacity_provider.clone());
                    acc.row.purchase_option = Some(m.purchase_option.as_str().to_string());
                }
                acc.add(seconds, bill_price, bill_fee);
                acc.idle += idle;
                acc.fargate += fargate_here;
                acc.fargate_priced |= fargate_priced_here;
            }
        }
    }
    out.total_usd = out.instance_usd + out.fee_usd;
    out.tasks = tasks.len();
    out.fargate_unpriced_tasks = unpriced.len();
    out.price_tables = price_tables.into_iter().collect();
    out.fee_tables = fee_tables.into_iter().collect();
    let by_instance = group_by.by_instance();
    out.rows = rows
        .into_values()
        .map(|acc| {
            let mut row = acc.row;
            row.total_usd = row.instance_usd + row.fee_usd;
            row.idle_usd = by_instance.then_some(acc.idle);
            row.fargate_usd = acc.fargate_priced.then_some(acc.fargate);
            row
        })
        .collect();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use berth_model::meter::PurchaseOption;

    const T0: f64 = 1_800_000_000.0; // 2027-01-15T08:00:00Z

    fn cents(x: f64) -> i64 {
        (x * 100.0).round() as i64
    }

    fn meter(id: &str, launched: f64, ended: Option<f64>) -> InstanceMeter {
        InstanceMeter {
            instance_id: id.into(),
            cluster_arn: "arn:aws:ecs:us-east-1:0:cluster/c".into(),
            container_instance_arn: format!("ci/{id}"),
            capacity_provider: "cp".into(),
            instance_type: "m7i.large".into(),
            region: "us-east-1".into(),
            purchase_option: PurchaseOption::OnDemand,
            cpu_units: 2048,
            memory_mib: 8192,
            price_per_hour: 0.1008,
            fee_per_hour: 0.012096,
            price_table: "p".into(),
            fee_table: "f".into(),
            launched_at: launched,
            ended_at: ended,
        }
    }

    fn usage(task: &str, id: &str, cpu: u32, mem: u64, a: f64, b: Option<f64>) -> TaskUsage {
        TaskUsage {
            task_arn: task.into(),
            instance_id: id.into(),
            cluster_arn: "arn:aws:ecs:us-east-1:0:cluster/c".into(),
            group: Some("service:web".into()),
            family: Some("web".into()),
            cpu_units: cpu,
            memory_mib: mem,
            gpus: 0,
            architecture: "x86_64".into(),
            started_at: a,
            stopped_at: b,
        }
    }

    fn window(until: f64) -> Window {
        Window { since: None, until }
    }

    #[test]
    fn a_short_life_is_billed_the_minimum() {
        let m = meter("i-1", T0, Some(T0 + 30.0));
        assert_eq!(billed_seconds(&m, T0 + 1000.0), 60);
        let r = report(
            Catalog::embedded(),
            &[(m, vec![])],
            window(T0 + 1000.0),
            GroupBy::Instance,
        );
        assert_eq!(r.instance_seconds, 60);
        assert_eq!(r.rows[0].seconds, 60);
        let expected = 60.0 * (0.1008 + 0.012096) / 3600.0;
        assert!((r.total_usd - expected).abs() < 1e-12);
        assert!((r.idle_usd - expected).abs() < 1e-12);
    }

    #[test]
    fn ninety_minutes_is_5400_seconds_at_price_and_fee() {
        let m = meter("i-1", T0 + 0.25, Some(T0 + 0.25 + 5400.0));
        let r = report(
            Catalog::embedded(),
            &[(m, vec![])],
            window(T0 + 9000.0),
            GroupBy::Cluster,
        );
        assert_eq!(r.instance_seconds, 5400);
        assert_eq!(cents(r.instance_usd), cents(1.5 * 0.1008));
        assert_eq!(cents(r.fee_usd), cents(1.5 * 0.012096));
        assert_eq!(r.rows[0].seconds, 5400);
        assert!((r.rows[0].total_usd - 1.5 * (0.1008 + 0.012096)).abs() < 1e-9);
    }

    #[test]
    fn a_running_instance_is_billed_until_now() {
        let m = meter("i-1", T0, None);
        let r = report(
            Catalog::embedded(),
            &[(m, vec![])],
            window(T0 + 600.0),
            GroupBy::Instance,
        );
        assert_eq!(r.instance_seconds, 600);
    }

    #[test]
    fn shares_and_idle_add_up_to_the_bill() {
        let m = meter("i-1", T0, Some(T0 + 3600.0));
        // Half the CPU and a quarter of the memory: share 0.375, for half an hour.
        let u1 = usage("t1", "i-1", 1024, 2048, T0 + 100.0, Some(T0 + 1900.0));
        // Running to the instance's end: a quarter of both, 0.25.
        let u2 = usage("t2", "i-1", 512, 2048, T0 + 1800.0, None);
        let r = report(
            Catalog::embedded(),
            &[(m, vec![u1, u2])],
            window(T0 + 7200.0),
            GroupBy::Task,
        );
        let rate = (0.1008 + 0.012096) / 3600.0;
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[0].seconds, 1800);
        assert!((r.rows[0].total_usd - 1800.0 * 0.375 * rate).abs() < 1e-12);
        assert_eq!(r.rows[1].seconds, 1800);
        assert!((r.rows[1].total_usd - 1800.0 * 0.25 * rate).abs() < 1e-12);
        let sum: f64 = r.rows.iter().map(|x| x.total_usd).sum();
        assert!((sum + r.idle_usd - r.total_usd).abs() < 1e-12);
        assert!(r.rows.iter().all(|x| x.idle_usd.is_none()));
    }

    #[test]
    fn a_task_on_two_instances_is_charged_on_each() {
        let a = meter("i-a", T0, Some(T0 + 600.0));
        let b = meter("i-b", T0 + 600.0, Some(T0 + 1200.0));
        let ua = usage("t1", "i-a", 1024, 4096, T0, Some(T0 + 600.0));
        let ub = usage("t1", "i-b", 1024, 4096, T0 + 600.0, Some(T0 + 1200.0));
        let input = [(a, vec![ua]), (b, vec![ub])];
        let r = report(
            Catalog::embedded(),
            &input,
            window(T0 + 2000.0),
            GroupBy::Task,
        );
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].seconds, 1200);
        let r = report(
            Catalog::embedded(),
            &input,
            window(T0 + 2000.0),
            GroupBy::Instance,
        );
        assert_eq!(r.rows.len(), 2);
        for row in &r.rows {
            // A half of the instance for all its 600 s; the other half idle.
            assert!((row.idle_usd.unwrap() - row.total_usd / 2.0).abs() < 1e-12);
        }
    }

    #[test]
    fn windows_cut_the_billed_span() {
        let m = meter("i-1", T0, Some(T0 + 3600.0));
        let w = Window {
            since: Some(T0 + 600.0),
            until: T0 + 1200.0,
        };
        let r = report(
            Catalog::embedded(),
            &[(m.clone(), vec![])],
            w,
            GroupBy::Cluster,
        );
        assert_eq!(r.instance_seconds, 600);
        // The padding of a short life lies inside its minute.
        // A short life's minute is charged at its end, in the window or not.
        let short = meter("i-2", T0, Some(T0 + 10.0));
        let w = Window {
            since: Some(T0 + 30.0),
            until: T0 + 1200.0,
        };
        let r = report(
            Catalog::embedded(),
            &[(short.clone(), vec![])],
            w,
            GroupBy::Cluster,
        );
        assert_eq!((r.instances, r.instance_seconds), (0, 0));
        let w = Window {
            since: Some(T0 + 5.0),
            until: T0 + 1200.0,
        };
        let r = report(
            Catalog::embedded(),
            &[(short.clone(), vec![])],
            w,
            GroupBy::Cluster,
        );
        assert_eq!(r.instance_seconds, 55);
        // Before its end it has accrued its age.
        let r = report(
            Catalog::embedded(),
            &[(short, vec![])],
            window(T0 + 8.0),
            GroupBy::Cluster,
        );
        assert_eq!(r.instance_seconds, 8);
    }

    #[test]
    fn days_split_at_midnight_utc() {
        // 2027-01-15T23:00:00Z for two hours.
        let start = (T0 / 86_400.0).floor() * 86_400.0 + 23.0 * 3600.0;
        let m = meter("i-1", start, Some(start + 7200.0));
        let r = report(
            Catalog::embedded(),
            &[(m, vec![])],
            window(start + 9000.0),
            GroupBy::Day,
        );
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[0].seconds, 3600);
        assert_eq!(r.rows[1].seconds, 3600);
        assert!(r.rows[0].key < r.rows[1].key);
        assert_eq!(day_label(0), "1970-01-01");
        assert_eq!(day_label(20_833), "2027-01-15");
    }

    #[test]
    fn fargate_rounds_up_and_skips_gpus() {
        let c = Catalog::embedded();
        let m = meter("i-1", T0, Some(T0 + 3600.0));
        // 300 CPU units and 600 MiB → 0.5 vCPU and 1 GB.
        let u = usage("t1", "i-1", 300, 600, T0, Some(T0 + 3600.0));
        let mut g = usage("t2", "i-1", 1024, 1024, T0, Some(T0 + 3600.0));
        g.gpus = 1;
        // 30 s on Fargate is billed a minute.
        let s = usage("t3", "i-1", 256, 512, T0, Some(T0 + 30.0));
        let r = report(c, &[(m, vec![u, g, s])], window(T0 + 3600.0), GroupBy::Task);
        let rows: BTreeMap<&str, &CostRow> = r.rows.iter().map(|x| (x.key.as_str(), x)).collect();
        let expected = 0.5 * 0.04048 + 1.0 * 0.004445;
        assert!((rows["t1"].fargate_usd.unwrap() - expected).abs() < 1e-12);
        assert_eq!(rows["t2"].fargate_usd, None);
        let short = 60.0 * (0.25 * 0.04048 + 0.5 * 0.004445) / 3600.0;
        assert!((rows["t3"].fargate_usd.unwrap() - short).abs() < 1e-12);
        assert_eq!(r.fargate_unpriced_tasks, 1);
        assert_eq!(r.tasks, 3);
        assert!((r.fargate_usd - expected - short).abs() < 1e-12);
        // arm64 takes the Graviton rates.
        let mut arm = usage("t4", "i-1", 1024, 2048, T0, None);
        arm.architecture = "arm64".into();
        assert!(
            (fargate_hourly(c, "eu-west-1", &arm).unwrap() - (0.03238 + 2.0 * 0.00356)).abs()
                < 1e-12
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        /// Whatever the lives, stays and window: every grouping's rows add
        /// up (shares plus idle for tasks, whole bills for instances), and
        /// idle plus shares is the bill.
        #[test]
        fn rows_add_up_to_the_bill(
            lives in proptest::collection::vec((0u32..200_000, proptest::option::of(0u32..200_000)), 1..4),
            stays in proptest::collection::vec((0usize..4, 0u32..4, 0u32..200_000, proptest::option::of(0u32..200_000)), 0..6),
            since in proptest::option::of(0u32..150_000),
            span in 1u32..250_000,
        ) {
            let mut input: Vec<(InstanceMeter, Vec<TaskUsage>)> = lives
                .iter()
                .enumerate()
                .map(|(i, (a, d))| {
                    let launched = T0 + f64::from(*a);
                    (meter(&format!("i-{i}"), launched, d.map(|d| launched + f64::from(d))), vec![])
                })
                .collect();
            // At most four stays of a quarter each: reservations always fit.
            for (k, (i, slot, a, d)) in stays.iter().enumerate() {
                let Some((m, us)) = input.get_mut(*i) else { continue };
                if us.len() >= 4 {
                    continue;
                }
                let started = m.launched_at + f64::from(*a);
                let mut u = usage(&format!("t{k}-{slot}"), &m.instance_id, 512, 2048, started,
                    d.map(|d| started + f64::from(d)));
                u.group = Some(format!("service:{}", slot % 2));
                us.push(u);
            }
            let since = since.map(|s| T0 + f64::from(s));
            let w = Window { since, until: since.unwrap_or(T0) + f64::from(span) };
            for g in GroupBy::ALL {
                let r = report(Catalog::embedded(), &input, w, *g);
                let rows: f64 = r.rows.iter().map(|x| x.total_usd).sum();
                proptest::prop_assert!((r.attributed_usd + r.idle_usd - r.total_usd).abs() < 1e-9);
                proptest::prop_assert!(r.idle_usd > -1e-9, "idle {} < 0", r.idle_usd);
                if g.by_instance() {
                    proptest::prop_assert!((rows - r.total_usd).abs() < 1e-9);
                    let secs: u64 = r.rows.iter().map(|x| x.seconds).sum();
                    proptest::prop_assert_eq!(secs, r.instance_seconds);
                } else {
                    proptest::prop_assert!((rows - r.attributed_usd).abs() < 1e-9);
                }
            }
        }
    }

    #[test]
    fn group_by_spellings_round_trip() {
        for g in GroupBy::ALL {
            assert_eq!(GroupBy::parse(g.as_str()), Some(*g));
        }
        assert_eq!(GroupBy::parse("month"), None);
    }
}

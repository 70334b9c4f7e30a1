//! `berth cost`: metered cost from the server (`BerthV1.GetCost`), and the
//! price and fee tables `berth up` / `berth server` bill with.

use crate::client::{parse_duration, Client, EndpointArgs};
use crate::user::when;
use anyhow::Context as _;
use berth_catalog::cost::GroupBy;
use berth_catalog::{table_info, Catalog, CatalogCsv};
use clap::ValueEnum;
use serde_json::{json, Value};
use std::path::Path;

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// `--by`: the API's own spellings ([`GroupBy::as_str`]).
fn group_by() -> impl clap::builder::TypedValueParser<Value = GroupBy> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(GroupBy::ALL.iter().map(|g| g.as_str()))
        .map(|s: String| GroupBy::parse(&s).unwrap_or(GroupBy::Cluster))
}

#[derive(clap::Args)]
pub struct CostArgs {
    /// Only this cluster (name or ARN); every cluster by default.
    #[arg(long)]
    cluster: Option<String>,
    /// What each row is: a task, a service (task group), a cluster, a
    /// capacity provider, an instance, an instance type or a UTC day.
    #[arg(long, value_parser = group_by(), default_value = "cluster")]
    by: GroupBy,
    /// From then: a duration back from now (90s, 5m, 2h, 14d) or a time
    /// (2026-01-31T12:00:00Z). Default: since the first meter.
    #[arg(long)]
    since: Option<String>,
    /// Until then (same forms). Default: now.
    #[arg(long)]
    until: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

/// A `--since`/`--until` value as epoch seconds.
fn time_arg(flag: &str, s: &str, now: f64) -> anyhow::Result<f64> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t.unix_timestamp() as f64 + f64::from(t.nanosecond()) / 1e9);
    }
    match parse_duration(s) {
        Ok(d) => Ok((now - d.as_secs_f64()).max(0.0)),
        Err(_) => anyhow::bail!(
            "--{flag} {s:?}: give a duration back from now (90s, 5m, 2h, 14d) or an RFC 3339 time (2026-01-31T12:00:00Z)"
        ),
    }
}

fn usd(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.4}"),
        None => "-".into(),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub async fn run(args: CostArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoint)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    let mut body = json!({"groupBy": args.by.as_str()});
    if let Some(c) = &args.cluster {
        body["cluster"] = json!(c);
    }
    if let Some(s) = &args.since {
        body["since"] = json!(time_arg("since", s, now)?);
    }
    if let Some(u) = &args.until {
        body["until"] = json!(time_arg("until", u, now)?);
    }
    let r = client.berth("GetCost", &body).await?;
    if let Output::Json = args.output {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let by_instance = args.by.by_instance();
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    let mut header = vec![args.by.as_str().to_uppercase()];
    if args.by == GroupBy::Instance {
        header.extend(["TYPE".to_string(), "PURCHASE".to_string()]);
    }
    header.extend(
        [
            "SECONDS",
            "INSTANCE USD",
            "FEE USD",
            "TOTAL USD",
            if by_instance { "IDLE USD" } else { "" },
            "FARGATE USD",
        ]
        .iter()
        .filter(|h| !h.is_empty())
        .map(|h| h.to_string()),
    );
    t.set_header(header);
    for row in r["rows"].as_array().into_iter().flatten() {
        let mut cells = vec![text(&row["key"])];
        if args.by == GroupBy::Instance {
            cells.push(text(&row["instanceType"]));
            cells.push(text(&row["purchaseOption"]));
        }
        cells.push(text(&row["seconds"]));
        cells.push(usd(&row["instanceUsd"]));
        cells.push(usd(&row["feeUsd"]));
        cells.push(usd(&row["totalUsd"]));
        if by_instance {
            cells.push(usd(&row["idleUsd"]));
        }
        cells.push(usd(&row["fargateUsd"]));
        t.add_row(cells);
    }
    let since = r["since"]
        .as_f64()
        .map_or_else(|| "the first meter".to_string(), when);
    println!(
        "Cost from {since} until {}",
        when(r["until"].as_f64().unwrap_or(now))
    );
    println!("{t}");
    println!(
        "Instances: {} billed for {} s: ${} + management fee ${} = ${} (${} without the fee)",
        text(&r["instances"]),
        text(&r["instanceSeconds"]),
        usd(&r["instanceUsd"]),
        usd(&r["feeUsd"]),
        usd(&r["totalUsd"]),
        usd(&r["instanceUsd"]),
    );
    println!(
        "Tasks: {} charged ${}; idle capacity (reserved by no task) ${}",
        text(&r["tasks"]),
        usd(&r["attributedUsd"]),
        usd(&r["idleUsd"]),
    );
    let unpriced = r["fargateUnpricedTasks"].as_u64().unwrap_or(0);
    println!(
        "On Fargate the same tasks would have cost ${}{}",
        usd(&r["fargateUsd"]),
        if unpriced > 0 {
            format!(" ({unpriced} task(s) with GPUs or beyond Fargate's sizes left out)")
        } else {
            String::new()
        }
    );
    println!(
        "Prices: {}, {}",
        text(&r["priceTable"]["source"]),
        text(&r["priceTable"]["date"])
    );
    println!(
        "Fees: {}, {}",
        text(&r["feeTable"]["source"]),
        text(&r["feeTable"]["date"])
    );
    println!("Fargate: {}", text(&r["fargateRates"]));
    Ok(())
}

/// The catalog the server prices with: the embedded one, or one with the
/// given price and fee tables (in the formats of crates/catalog/data).
pub fn load_catalog(
    price_table: Option<&Path>,
    fee_table: Option<&Path>,
    fee_percent: Option<f64>,
) -> anyhow::Result<&'static Catalog> {
    if price_table.is_none() && fee_table.is_none() && fee_percent.is_none() {
        return Ok(Catalog::embedded());
    }
    let read = |flag: &str, p: &Path| {
        std::fs::read_to_string(p).with_context(|| {
            format!(
                "--{flag} {}: cannot read the file; give a CSV file in the format of crates/catalog/data",
                p.display()
            )
        })
    };
    let prices = price_table.map(|p| read("price-table", p)).transpose()?;
    let fees = fee_table.map(|p| read("fee-table", p)).transpose()?;
    let csv = CatalogCsv {
        prices: prices.as_deref().unwrap_or(CatalogCsv::EMBEDDED.prices),
        fees: fees.as_deref().unwrap_or(CatalogCsv::EMBEDDED.fees),
        ..CatalogCsv::EMBEDDED
    };
    let catalog = Catalog::from_csv(&csv).map_err(|e| {
        let flag = match e.file {
            "prices-on-demand.csv" => "--price-table",
            "ecs-mi-management-fee.csv" => "--fee-table",
            _ => "the catalog",
        };
        anyhow::anyhow!(
            "{flag}: {e}; the columns are region,instance_type,usd_per_hour[,source][,as_of] \
             for prices and region,instance_type,fee_usd_per_hour[,basis][,as_of] for fees"
        )
    })?;
    let price_info = match (price_table, &prices) {
        (Some(p), Some(text)) => table_info(&p.display().to_string(), text),
        _ => catalog.price_table().clone(),
    };
    let mut fee_info = match (fee_table, &fees) {
        (Some(p), Some(text)) => table_info(&p.display().to_string(), text),
        _ => catalog.fee_table().clone(),
    };
    let mut catalog = catalog;
    if let Some(pct) = fee_percent {
        if !pct.is_finite() || !(0.0..=1000.0).contains(&pct) {
            anyhow::bail!("--fee-percent {pct}: give a percentage of the on-demand price between 0 and 1000 (12 for 12 %)");
        }
        catalog = catalog.with_fee_percent(pct);
        fee_info = berth_catalog::TableInfo {
            source: format!("--fee-percent {pct}: {pct} % of on-demand"),
            date: "configured".into(),
        };
    }
    Ok(Box::leak(Box::new(
        catalog.with_tables(price_info, fee_info),
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tables_replace_prices_and_fees_with_their_provenance() {
        let dir = tempfile::tempdir().unwrap();
        let prices = dir.path().join("prices.csv");
        std::fs::write(
            &prices,
            "region,instance_type,usd_per_hour,source,as_of\nus-east-1,m7i.large,1.5,my-quote,2026-10-01\n",
        )
        .unwrap();
        let fees = dir.path().join("fees.csv");
        std::fs::write(
            &fees,
            "region,instance_type,fee_usd_per_hour\nus-east-1,m7i.large,0.25\n",
        )
        .unwrap();
        let c = load_catalog(Some(&prices), Some(&fees), None).unwrap();
        assert_eq!(c.on_demand_price("us-east-1", "m7i.large"), Some(1.5));
        assert_eq!(c.on_demand_price("us-east-1", "m7i.xlarge"), None);
        assert_eq!(c.management_fee("us-east-1", "m7i.large"), Some(0.25));
        assert_eq!(c.price_table().date, "2026-10-01");
        assert!(c.price_table().source.contains("my-quote"));
        assert_eq!(c.fee_table().date, "undated");

        let c = load_catalog(None, None, Some(10.0)).unwrap();
        let p = c.on_demand_price("us-east-1", "c6a.2xlarge").unwrap();
        assert!((c.management_fee("us-east-1", "c6a.2xlarge").unwrap() - p * 0.10).abs() < 1e-12);
        assert!(c.fee_table().source.contains("--fee-percent 10"));

        std::fs::write(&prices, "region,instance_type\nus-east-1,m7i.large\n").unwrap();
        let e = load_catalog(Some(&prices), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--price-table"), "{e}");
        assert!(load_catalog(None, None, Some(-1.0)).is_err());
        let missing = dir.path().join("nope.csv");
        let e = load_catalog(Some(&missing), None, None).unwrap_err();
        assert!(format!("{e:#}").contains("cannot read"), "{e:#}");
    }

    #[test]
    fn times_are_rfc3339_or_back_from_now() {
        assert_eq!(time_arg("since", "90s", 1000.0).unwrap(), 910.0);
        assert_eq!(
            time_arg("until", "2026-01-31T12:00:00Z", 0.0).unwrap(),
            1_769_860_800.0
        );
        assert!(time_arg("since", "yesterday", 0.0).is_err());
    }
}

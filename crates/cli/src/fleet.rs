//! `berth fleet`: the instances' lifecycle — list them with their age, OS
//! image and drain; publish a new image version; replace a capacity
//! provider's instances now.

use crate::client::{Client, EndpointArgs};
use clap::{Subcommand, ValueEnum};
use serde_json::json;

#[derive(clap::Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    command: FleetCommand,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum FleetCommand {
    /// List a cluster's instances: age, OS image version, drain.
    Ls {
        #[arg(long, default_value = "default")]
        cluster: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Publish a new OS image version: every fleet rolls to it within its
    /// disruption budget and maintenance windows.
    SetImage {
        version: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Replace every instance a capacity provider has now (after
    /// UpdateCapacityProvider, say), within its budget and windows.
    Replace {
        #[arg(long)]
        capacity_provider: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

fn days(secs: f64) -> String {
    if secs >= 86_400.0 {
        format!("{:.1}d", secs / 86_400.0)
    } else if secs >= 3600.0 {
        format!("{:.1}h", secs / 3600.0)
    } else {
        format!("{secs:.0}s")
    }
}

pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoint)?;
    match args.command {
        FleetCommand::Ls { cluster, output } => {
            let r = client
                .berth("DescribeFleet", &json!({"cluster": cluster}))
                .await?;
            if let Output::Json = output {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            t.set_header([
                "INSTANCE",
                "TYPE",
                "CAPACITY PROVIDER",
                "STATUS",
                "AGE",
                "IMAGE",
                "DRAIN",
                "TASKS",
            ]);
            for i in r["instances"].as_array().into_iter().flatten() {
                t.add_row([
                    i["instanceId"].as_str().unwrap_or("").to_string(),
                    i["instanceType"].as_str().unwrap_or("").to_string(),
                    i["capacityProvider"].as_str().unwrap_or("").to_string(),
                    i["status"].as_str().unwrap_or("").to_string(),
                    days(i["ageSeconds"].as_f64().unwrap_or(0.0)),
                    i["imageVersion"].as_str().unwrap_or("").to_string(),
                    match (i["drain"].as_str(), i["preparing"]["kind"].as_str()) {
                        (Some(d), _) => d.to_string(),
                        (None, Some(k)) => format!(
                            "{k}: waiting for {}",
                            i["preparing"]["replacements"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|r| r.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        (None, None) => "-".to_string(),
                    },
                    i["runningTasks"].to_string(),
                ]);
            }
            println!("{t}");
            println!(
                "fleet image version: {}",
                r["imageVersion"].as_str().unwrap_or("")
            );
        }
        FleetCommand::SetImage { version, output } => {
            let r = client
                .berth("SetImageVersion", &json!({"version": version}))
                .await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                Output::Table => println!(
                    "image version {} → {}: instances roll within their budgets and windows (berth fleet ls shows the progress)",
                    r["previousVersion"].as_str().unwrap_or(""),
                    r["version"].as_str().unwrap_or("")
                ),
            }
        }
        FleetCommand::Replace {
            capacity_provider,
            output,
        } => {
            let r = client
                .berth(
                    "ReplaceInstances",
                    &json!({"capacityProvider": capacity_provider}),
                )
                .await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                Output::Table => println!(
                    "{} instances of {} will be replaced within the budget and windows (berth fleet ls shows the progress)",
                    r["instances"],
                    r["capacityProvider"].as_str().unwrap_or("")
                ),
            }
        }
    }
    Ok(())
}

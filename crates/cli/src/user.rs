//! `berth user`: API principals with an access key and a role (admin,
//! operator, viewer) — create (the secret is printed once), list, remove.

use crate::client::{Client, EndpointArgs};
use clap::{Subcommand, ValueEnum};
use serde_json::json;

#[derive(clap::Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    /// Everything, users included.
    Admin,
    /// Reads, and running, stopping, updating and exec'ing workloads.
    Operator,
    /// Reads only.
    Viewer,
}

impl RoleArg {
    fn name(self) -> &'static str {
        match self {
            RoleArg::Admin => "admin",
            RoleArg::Operator => "operator",
            RoleArg::Viewer => "viewer",
        }
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user with a new access key; its secret is printed this once.
    Create {
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// List the users (never their secrets).
    Ls {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Remove a user: its key is refused from now on.
    Rm {
        name: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

/// An epoch time as RFC 3339, to the second.
pub fn when(t: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn s(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

pub async fn run(args: UserArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoint)?;
    match args.command {
        UserCommand::Create { name, role, output } => {
            let r = client
                .berth("CreateUser", &json!({"name": name, "role": role.name()}))
                .await?;
            let u = &r["user"];
            match output {
                Output::Json => {
                    let flat = json!({
                        "name": u["name"],
                        "role": u["role"],
                        "accessKeyId": u["accessKeyId"],
                        "secretAccessKey": r["secretAccessKey"],
                        "createdAt": u["createdAt"],
                    });
                    println!("{}", serde_json::to_string_pretty(&flat)?);
                }
                Output::Table => {
                    println!("user {} created with role {}", s(&u["name"]), s(&u["role"]));
                    println!("aws_access_key_id = {}", s(&u["accessKeyId"]));
                    println!("aws_secret_access_key = {}", s(&r["secretAccessKey"]));
                    println!("the secret is shown only now: keep it (for example in an AWS credentials file)");
                }
            }
        }
        UserCommand::Ls { output } => {
            let r = client.berth("ListUsers", &json!({})).await?;
            if let Output::Json = output {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            t.set_header(["NAME", "ROLE", "ACCESS KEY ID", "CREATED"]);
            for u in r["users"].as_array().into_iter().flatten() {
                t.add_row([
                    s(&u["name"]),
                    s(&u["role"]),
                    s(&u["accessKeyId"]),
                    when(u["createdAt"].as_f64().unwrap_or(0.0)),
                ]);
            }
            println!("{t}");
        }
        UserCommand::Rm { name, output } => {
            let r = client.berth("DeleteUser", &json!({"name": name})).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                Output::Table => println!(
                    "user {} removed; its key {} is refused from now on",
                    s(&r["user"]["name"]),
                    s(&r["user"]["accessKeyId"])
                ),
            }
        }
    }
    Ok(())
}

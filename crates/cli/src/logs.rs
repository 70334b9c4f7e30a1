//! `berth logs`: a task's container output, optionally followed.

use crate::client::{parse_duration, Client, EndpointArgs};
use serde_json::json;
use std::time::Duration;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The task: its ID or ARN.
    task: String,
    /// The cluster (name or ARN).
    #[arg(long, default_value = "default")]
    cluster: String,
    /// Only this container's output.
    #[arg(long)]
    container: Option<String>,
    /// Keep printing new output until the task stops (Ctrl-C to leave).
    #[arg(short, long)]
    follow: bool,
    /// Only output newer than this (90s, 5m, 2h…).
    #[arg(long)]
    since: Option<String>,
    /// Prefix each line with its time and container.
    #[arg(long)]
    timestamps: bool,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoint)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    let mut start = match &args.since {
        Some(s) => now - parse_duration(s)?.as_secs_f64(),
        None => 0.0,
    };
    loop {
        let mut body = json!({"cluster": args.cluster, "task": args.task, "startTime": start});
        if let Some(c) = &args.container {
            body["container"] = json!(c);
        }
        let answer = client.berth("GetTaskLogs", &body).await?;
        for e in answer["events"].as_array().into_iter().flatten() {
            let message = e["message"].as_str().unwrap_or("");
            if args.timestamps {
                let t = e["timestamp"].as_f64().unwrap_or(0.0);
                let when = time::OffsetDateTime::from_unix_timestamp(t as i64)
                    .ok()
                    .and_then(|d| {
                        d.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default();
                println!("{when} {} {message}", e["container"].as_str().unwrap_or(""));
            } else if e["stream"] == "stderr" || e["stream"] == "exec:stderr" {
                eprintln!("{message}");
            } else {
                println!("{message}");
            }
        }
        if let Some(n) = answer["nextStartTime"].as_f64() {
            start = n;
        }
        if !args.follow {
            return Ok(());
        }
        let task = client
            .ecs(
                "DescribeTasks",
                &json!({"cluster": args.cluster, "tasks": [args.task]}),
            )
            .await?;
        if task["tasks"][0]["lastStatus"] == "STOPPED"
            && answer["events"].as_array().is_none_or(|v| v.is_empty())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! `berth audit`: the audit log — exec sessions (`exec`) and mutating API
//! calls (`api`), oldest first.

use crate::client::{parse_duration, Client, EndpointArgs};
use crate::user::when;
use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(clap::Args)]
struct ListArgs {
    /// Only records since then: a duration back from now (90s, 5m, 2h, 14d)
    /// or a time (2026-01-31T12:00:00Z).
    #[arg(long)]
    since: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Exec sessions: who ran what in which container, its exit code,
    /// duration and bytes each way.
    Exec(ListArgs),
    /// Mutating API calls, refused ones included: who, what, on what, outcome.
    Api(ListArgs),
}

/// `--since` as epoch seconds.
fn since(s: &str, now: f64) -> anyhow::Result<f64> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t.unix_timestamp() as f64 + f64::from(t.nanosecond()) / 1e9);
    }
    match parse_duration(s) {
        Ok(d) => Ok((now - d.as_secs_f64()).max(0.0)),
        Err(_) => anyhow::bail!(
            "--since {s:?}: give a duration back from now (90s, 5m, 2h, 14d) or an RFC 3339 time (2026-01-31T12:00:00Z)"
        ),
    }
}

/// Every record of `kind` since `since`, following the pages.
async fn all(client: &Client, kind: &str, since: Option<f64>) -> anyhow::Result<Vec<Value>> {
    let mut out = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"kind": kind, "maxResults": 1000});
        if let Some(s) = since {
            body["since"] = json!(s);
        }
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let r = client.berth("ListAuditRecords", &body).await?;
        out.extend(r["records"].as_array().cloned().unwrap_or_default());
        match r["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(out),
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoint)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    let (kind, list) = match &args.command {
        AuditCommand::Exec(l) => ("exec", l),
        AuditCommand::Api(l) => ("api", l),
    };
    let from = list.since.as_deref().map(|x| since(x, now)).transpose()?;
    let records = all(&client, kind, from).await?;
    if let Output::Json = list.output {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "records": records }))?
        );
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    if kind == "exec" {
        t.set_header([
            "STARTED",
            "USER",
            "CLUSTER",
            "TASK",
            "CONTAINER",
            "COMMAND",
            "EXIT",
            "DURATION",
            "BYTES IN",
            "BYTES OUT",
        ]);
        for r in &records {
            t.add_row([
                when(r["startedAt"].as_f64().unwrap_or(0.0)),
                s(&r["principal"]["user"]),
                s(&r["cluster"]),
                s(&r["task"]),
                s(&r["container"]),
                s(&r["command"]),
                s(&r["exitCode"]),
                format!("{:.1}s", r["durationSeconds"].as_f64().unwrap_or(0.0)),
                s(&r["bytesIn"]),
                s(&r["bytesOut"]),
            ]);
        }
    } else {
        t.set_header(["TIME", "USER", "ROLE", "OPERATION", "TARGET", "OUTCOME"]);
        for r in &records {
            let outcome = match r["errorCode"].as_str() {
                Some(code) => format!("{} ({code})", s(&r["outcome"])),
                None => s(&r["outcome"]),
            };
            t.add_row([
                when(r["time"].as_f64().unwrap_or(0.0)),
                s(&r["principal"]["user"]),
                s(&r["principal"]["role"]),
                s(&r["operation"]),
                s(&r["target"]),
                outcome,
            ]);
        }
    }
    println!("{t}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        assert_eq!(since("90s", 1000.0).ok(), Some(910.0));
        assert_eq!(since("2h", 100.0).ok(), Some(0.0));
        assert_eq!(since("1970-01-01T00:01:40Z", 0.0).ok(), Some(100.0));
        assert!(since("yesterday", 0.0).is_err());
    }
}

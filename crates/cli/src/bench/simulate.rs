//! `berth bench simulate`: how fast `berth simulate` plays a large fleet's
//! month — by default 30 virtual days of 1,000 instances (the goal: at most
//! 10 s of wall time).
//!
//! # What it does
//!
//! A scenario built here (no file): one capacity provider whose only
//! instance type is `m5.large` (2 vCPUs, 8 GiB), so the fleet's size is
//! known — a service `web` of 4 × `--instances` tasks of 512 CPU units and
//! 1 GiB, four to an instance — with the lifecycle's defaults (drain age
//! 14 days, maximum lifetime 21 days) and the events scaled up: a
//! new image on day 10 (the whole fleet rolls), 5 instance failures on day
//! 12, 3 spot interruptions on day 20, 3 agents away for 10 minutes on day
//! 25 (events past `--days` are left out). It runs with `berth simulate`'s
//! stepping (`--min-step`, `--max-step`) and a progress bar on stderr.
//!
//! # Baseline
//!
//! From the same run: one scheduler tick of the final fleet with nothing to
//! do (the median of 5, clock stopped) — what any step costs at least, since
//! every step is one tick. The report gives the wall time, the steps, where
//! the time went (ticks, agents, events), and the wall time as a multiple
//! of steps × that tick: how much a step costs beyond a quiet tick.

use super::Output;
use berth_sim::{Options, Scenario, Simulation};
use serde::Serialize;
use serde_json::json;
use std::io::IsTerminal as _;
use std::time::Instant;

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Instances of the fleet (four tasks each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    instances: u32,
    /// Virtual days.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366))]
    days: u32,
    /// Shortest virtual step between two ticks (as `berth simulate --min-step`).
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration_arg)]
    min_step: std::time::Duration,
    /// Longest virtual step between two ticks (as `berth simulate --max-step`).
    #[arg(long, default_value = "6h", value_parser = crate::parse_duration_arg)]
    max_step: std::time::Duration,
    /// Report format.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// Print the scenario (for `berth simulate --scenario`) instead of running it.
    #[arg(long)]
    print_scenario: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Result {
    instances: u32,
    days: u32,
    tasks: u32,
    min_step_seconds: f64,
    max_step_seconds: f64,
    /// Setting the scene (API calls), not in `wallSeconds`.
    setup_seconds: f64,
    wall_seconds: f64,
    steps: u64,
    tick_seconds: f64,
    agent_seconds: f64,
    event_seconds: f64,
    other_seconds: f64,
    /// Baseline: one quiet tick of the final fleet, ms.
    quiet_tick_ms: f64,
    /// wallSeconds / (steps × quietTickMs).
    ratio_to_quiet_ticks: f64,
    /// wallSeconds / 10 s (the goal for 30 days of 1,000 instances).
    ratio_to_goal: f64,
    virtual_days_per_wall_second: f64,
    instances_launched: u64,
    peak_instances: u64,
    drains: std::collections::BTreeMap<String, u64>,
    web_seconds_below_minimum: f64,
    tasks_running_twice: u64,
    /// Ticks that started drains beyond the disruption budget.
    budget_exceeded: u64,
    /// The most instances draining at once under the budget.
    max_concurrent_drains: u64,
    /// The oldest any instance got, days (the maximum lifetime is 21).
    max_instance_age_days: f64,
    cap_steps_with_work: u64,
    /// Steps taken each virtual day.
    steps_by_day: Vec<u64>,
}

fn scenario(instances: u32, days: u32) -> serde_json::Value {
    let events: Vec<serde_json::Value> = [
        json!({"at": "10d", "kind": "set-image", "version": "2"}),
        json!({"at": "12d", "kind": "instance-failure", "count": 5}),
        json!({"at": "20d", "kind": "spot-interruption", "count": 3}),
        json!({"at": "25d", "kind": "agent-disconnect", "count": 3, "for": "10m"}),
    ]
    .into_iter()
    .filter(|e| {
        let at = e["at"].as_str().unwrap_or("0d").trim_end_matches('d');
        at.parse::<u32>().is_ok_and(|d| d < days)
    })
    .collect();
    json!({
        "duration": format!("{days}d"),
        "seed": 1,
        "capacityProvider": {
            "infrastructureRoleArn": "arn:aws:iam::123456789012:role/ecsInfrastructureRole",
            "instanceLaunchTemplate": {
                "ec2InstanceProfileArn": "arn:aws:iam::123456789012:instance-profile/ecsInstanceProfile",
                "networkConfiguration": {"subnets": ["subnet-0123456789abcdef0", "subnet-0000000000000000b", "subnet-0000000000000000c"]},
                "instanceRequirements": {"vCpuCount": {"min": 2}, "memoryMiB": {"min": 4096},
                                         "allowedInstanceTypes": ["m5.large"]}
            }
        },
        "services": [{"name": "web", "cpu": 512, "memory": 1024, "desiredCount": instances * 4,
                      "minimumHealthyPercent": 100, "maximumPercent": 200}],
        "events": events,
    })
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let visible = std::io::stderr().is_terminal() && args.output == Output::Table;
    let doc = scenario(args.instances, args.days);
    if args.print_scenario {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let scenario = Scenario::from_value(&doc)?;
    let options = Options {
        min_step: args.min_step.as_secs_f64(),
        max_step: args.max_step.as_secs_f64(),
        ..Options::default()
    };
    let setup = Instant::now();
    let mut sim = Simulation::new(scenario, options).map_err(|e| anyhow::anyhow!("{e}"))?;
    let setup_seconds = setup.elapsed().as_secs_f64();
    let bar = super::stderr_bar(
        1000,
        "simulate",
        "{prefix} [{bar:30}] {msg} {elapsed_precise}",
        visible,
    );
    let days = f64::from(args.days);
    let mut last = 0;
    let report = sim
        .run(&mut |done| {
            let permille = (done * 1000.0) as u64;
            if permille != last {
                last = permille;
                bar.set_position(permille);
                bar.set_message(format!("day {:.1} of {days}", done * days));
            }
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    bar.finish_and_clear();
    let quiet = sim
        .time_tick(5)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .as_secs_f64();
    let e = &report.engine;
    let wall = report.wall_seconds;
    let result = Result {
        instances: args.instances,
        days: args.days,
        tasks: args.instances * 4,
        min_step_seconds: e.min_step_seconds,
        max_step_seconds: e.max_step_seconds,
        setup_seconds,
        wall_seconds: wall,
        steps: e.steps,
        tick_seconds: e.tick_seconds,
        agent_seconds: e.agent_seconds,
        event_seconds: e.event_seconds,
        other_seconds: (wall - e.tick_seconds - e.agent_seconds - e.event_seconds).max(0.0),
        quiet_tick_ms: quiet * 1e3,
        ratio_to_quiet_ticks: if quiet > 0.0 && e.steps > 0 {
            wall / (e.steps as f64 * quiet)
        } else {
            0.0
        },
        ratio_to_goal: wall / 10.0,
        virtual_days_per_wall_second: if wall > 0.0 { days / wall } else { 0.0 },
        instances_launched: report.instances_launched,
        peak_instances: report.invariants.peak_instances,
        drains: report
            .drains
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect(),
        web_seconds_below_minimum: report
            .services
            .get("web")
            .map_or(0.0, |s| s.seconds_below_minimum),
        tasks_running_twice: report.invariants.tasks_running_twice,
        budget_exceeded: report.invariants.budget_exceeded,
        max_concurrent_drains: report.max_concurrent_drains,
        max_instance_age_days: report.max_instance_age_seconds / 86_400.0,
        cap_steps_with_work: e.cap_steps_with_work,
        steps_by_day: report.daily.iter().map(|d| d.steps).collect(),
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&result)?),
        Output::Table => {
            let r = &result;
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            t.set_header(vec!["", ""]);
            let rows: Vec<(&str, String)> = vec![
                (
                    "fleet",
                    format!(
                        "{} instances (m5.large), service web of {} tasks, {} days",
                        r.instances, r.tasks, r.days
                    ),
                ),
                (
                    "wall time",
                    format!(
                        "{:.2} s ({:.2} × the 10 s goal; setup {:.2} s apart)",
                        r.wall_seconds, r.ratio_to_goal, r.setup_seconds
                    ),
                ),
                (
                    "steps",
                    format!(
                        "{} (min step {} s, max step {} s)",
                        r.steps, r.min_step_seconds, r.max_step_seconds
                    ),
                ),
                (
                    "where the time went",
                    format!(
                        "ticks {:.2} s, agents {:.2} s, events {:.2} s, other {:.2} s",
                        r.tick_seconds, r.agent_seconds, r.event_seconds, r.other_seconds
                    ),
                ),
                (
                    "baseline: quiet tick",
                    format!("{:.2} ms (the final fleet, nothing to do)", r.quiet_tick_ms),
                ),
                (
                    "wall / (steps × quiet tick)",
                    format!("{:.2}", r.ratio_to_quiet_ticks),
                ),
                (
                    "virtual days per wall second",
                    format!("{:.3}", r.virtual_days_per_wall_second),
                ),
                (
                    "instances launched / peak",
                    format!("{} / {}", r.instances_launched, r.peak_instances),
                ),
                (
                    "drains",
                    r.drains
                        .iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                (
                    "web below its floor",
                    format!("{:.0} s", r.web_seconds_below_minimum),
                ),
                ("tasks running twice", r.tasks_running_twice.to_string()),
                (
                    "drains beyond the budget",
                    format!(
                        "{} (at most {} at once)",
                        r.budget_exceeded, r.max_concurrent_drains
                    ),
                ),
                (
                    "oldest instance",
                    format!("{:.2} days", r.max_instance_age_days),
                ),
                (
                    "steps by day",
                    r.steps_by_day
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
            ];
            for (k, v) in rows {
                t.add_row(vec![k.to_string(), v]);
            }
            println!(
                "berth bench simulate: {} virtual days of {} instances",
                r.days, r.instances
            );
            println!("{t}");
        }
    }
    Ok(())
}

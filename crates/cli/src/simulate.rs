//! `berth simulate`: weeks of a fleet's life in seconds, the real
//! controllers on a virtual clock and simulated instances ([`berth_sim`]).
//!
//! Reads a scenario file (see `berth_sim::scenario` for the format), plays
//! it, and prints the report: as one JSON document (`--output json`) or as
//! tables with a timeline (`--output table`, the default). A scenario the
//! simulator cannot use exits with code 2 and a message naming the field.
//! Long runs show a progress bar on stderr when it is a terminal.

use berth_sim::report::{at, human, Report};
use berth_sim::{Options, Scenario, ScenarioError, SimError, Simulation};
use comfy_table::{CellAlignment, Table};
use std::io::IsTerminal as _;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// The scenario (JSON): duration, capacity provider, services, standalone
    /// tasks and events.
    #[arg(long)]
    scenario: PathBuf,
    /// Report format.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// Longest virtual time between two scheduler ticks when nothing is due
    /// (5m, 1h, …): a safety net, since the controllers say when they are due.
    #[arg(long, default_value = "6h", value_parser = crate::parse_duration_arg)]
    max_step: std::time::Duration,
    /// Shortest virtual time between two ticks (1s, …), as the server ticks
    /// at least every second while there is work; more is faster and coarser.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration_arg)]
    min_step: std::time::Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Output {
    /// Tables and a timeline, for people.
    Table,
    /// One JSON document, for programs.
    Json,
}

/// Reads and parses a scenario file; every failure is a [`ScenarioError`].
pub fn load(path: &std::path::Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ScenarioError(format!(
            "--scenario {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    Scenario::parse(&text).map_err(|e| ScenarioError(format!("{}: {e}", path.display())))
}

/// Runs a scenario with a progress bar on stderr when `visible`.
pub fn run_scenario(scenario: Scenario, options: Options, visible: bool) -> anyhow::Result<Report> {
    let days = scenario.duration / 86_400.0;
    let mut sim = Simulation::new(scenario, options).map_err(into_anyhow)?;
    let bar = crate::bench::stderr_bar(
        1000,
        "simulate",
        "{prefix} [{bar:30}] {msg} {elapsed_precise}",
        visible,
    );
    let mut last = 0;
    let report = sim
        .run(&mut |done| {
            let permille = (done * 1000.0) as u64;
            if permille != last {
                last = permille;
                bar.set_position(permille);
                bar.set_message(format!("day {:.1} of {days:.1}", done * days));
            }
        })
        .map_err(into_anyhow)?;
    bar.finish_and_clear();
    Ok(report)
}

fn into_anyhow(e: SimError) -> anyhow::Error {
    match e {
        SimError::Scenario(s) => s.into(),
        other => anyhow::anyhow!("{other}"),
    }
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let scenario = load(&args.scenario)?;
    let options = Options {
        min_step: args.min_step.as_secs_f64(),
        max_step: args.max_step.as_secs_f64(),
        ..Options::default()
    };
    if !(options.min_step > 0.0 && options.max_step >= options.min_step) {
        return Err(
            ScenarioError("--min-step must be above 0 and at most --max-step".into()).into(),
        );
    }
    let report = run_scenario(scenario, options, std::io::stderr().is_terminal())?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print_table(&report),
    }
    Ok(())
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t
}

fn right(t: &mut Table, from: usize) {
    let n = t.column_count();
    for i in from..n {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

fn print_table(r: &Report) {
    println!(
        "{} simulated in {:.1} s ({} ticks; {:.1} s in the scheduler, {:.1} s in agents).",
        human(r.duration_seconds),
        r.wall_seconds,
        r.engine.steps,
        r.engine.tick_seconds,
        r.engine.agent_seconds,
    );
    println!();
    let mut t = table();
    t.set_header(vec!["fleet", ""]);
    t.add_row(vec![
        "instances launched / terminated".to_string(),
        format!("{} / {}", r.instances_launched, r.instances_terminated),
    ]);
    t.add_row(vec![
        "most instances at once".to_string(),
        r.invariants.peak_instances.to_string(),
    ]);
    t.add_row(vec![
        "oldest instance".to_string(),
        format!(
            "{} (maximum lifetime {}, drain age {})",
            human(r.max_instance_age_seconds),
            human(r.policy.max_lifetime_seconds),
            human(r.policy.drain_age_seconds)
        ),
    ]);
    t.add_row(vec![
        "most drains at once".to_string(),
        format!(
            "{} (budget {} % of the fleet, one at a time below {} instances; spot drains apart)",
            r.max_concurrent_drains, r.policy.budget_percent, r.policy.small_fleet
        ),
    ]);
    let images: Vec<String> = r
        .image_versions
        .iter()
        .map(|(v, n)| format!("version {v}: {n}"))
        .collect();
    t.add_row(vec![
        "image versions at the end".to_string(),
        if images.is_empty() {
            "no instance".to_string()
        } else {
            images.join(", ")
        },
    ]);
    let drains: Vec<String> = r
        .drains
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    t.add_row(vec![
        "drains".to_string(),
        if drains.is_empty() {
            "none".to_string()
        } else {
            drains.join(", ")
        },
    ]);
    let stops: Vec<String> = r
        .task_stops
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    t.add_row(vec![
        "task stops".to_string(),
        if stops.is_empty() {
            "none".to_string()
        } else {
            stops.join(", ")
        },
    ]);
    t.add_row(vec![
        "cost".to_string(),
        format!(
            "${:.2} (instances ${:.2} + management fee ${:.2}); idle capacity ${:.2}; on Fargate ${:.2}{}",
            r.cost.total_usd,
            r.cost.instance_usd,
            r.cost.fee_usd,
            r.cost.idle_usd,
            r.cost.fargate_usd,
            if r.cost.fargate_unpriced_tasks > 0 {
                format!(
                    " ({} tasks with GPUs or beyond Fargate's sizes left out)",
                    r.cost.fargate_unpriced_tasks
                )
            } else {
                String::new()
            }
        ),
    ]);
    let inv = &r.invariants;
    t.add_row(vec![
        "invariants".to_string(),
        if inv.tasks_running_twice == 0 && inv.budget_exceeded == 0 {
            "no task ran twice; the disruption budget held".to_string()
        } else {
            format!(
                "{} tasks ran twice; {} ticks exceeded the disruption budget",
                inv.tasks_running_twice, inv.budget_exceeded
            )
        },
    ]);
    println!("{t}");
    if !r.services.is_empty() {
        let mut s = table();
        s.set_header(vec![
            "service",
            "desired",
            "min running",
            "max running",
            "min fraction",
            "below floor",
            "first at desired",
            "cost",
            "on Fargate",
        ]);
        for (name, v) in &r.services {
            let cost = r.cost.services.get(&format!("service:{name}"));
            s.add_row(vec![
                name.clone(),
                v.desired.to_string(),
                v.min_running.map_or("-".into(), |m| m.to_string()),
                v.max_running.to_string(),
                v.min_running_fraction
                    .map_or("-".into(), |f| format!("{:.2}", f)),
                format!(
                    "{} ({}×)",
                    human(v.seconds_below_minimum),
                    v.below_minimum_intervals
                ),
                v.reached_desired_at.map_or("never".into(), at),
                cost.map_or("-".into(), |c| format!("${:.2}", c.total_usd)),
                cost.and_then(|c| c.fargate_usd)
                    .map_or("-".into(), |f| format!("${f:.2}")),
            ]);
        }
        right(&mut s, 1);
        println!("{s}");
    }
    if !r.daily.is_empty() {
        let mut d = table();
        d.set_header(vec![
            "day",
            "launched",
            "terminated",
            "peak instances",
            "ticks",
            "drains",
        ]);
        for day in &r.daily {
            let drains: Vec<String> = day.drains.iter().map(|(k, n)| format!("{k} {n}")).collect();
            d.add_row(vec![
                day.day.to_string(),
                day.launched.to_string(),
                day.terminated.to_string(),
                day.peak_instances.to_string(),
                day.steps.to_string(),
                drains.join(", "),
            ]);
        }
        right(&mut d, 0);
        println!("{d}");
    }
    let mut tl = table();
    tl.set_header(vec!["when", "timeline"]);
    const SHOWN: usize = 60;
    for e in r.timeline.iter().take(SHOWN) {
        tl.add_row(vec![at(e.at), e.event.clone()]);
    }
    if r.timeline.len() > SHOWN {
        tl.add_row(vec![
            String::new(),
            format!("… {} more in --output json", r.timeline.len() - SHOWN),
        ]);
    }
    let mut below: Vec<(f64, String)> = vec![];
    for (name, v) in &r.services {
        for b in &v.below_minimum {
            below.push((
                b.from,
                format!(
                    "{name} below its floor for {}: {} running, floor {}",
                    human(b.to - b.from),
                    b.min_running,
                    b.floor
                ),
            ));
        }
    }
    if !below.is_empty() {
        println!("{tl}");
        let mut bt = table();
        bt.set_header(vec!["when", "below the floor"]);
        below.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (when, text) in below.into_iter().take(SHOWN) {
            bt.add_row(vec![at(when), text]);
        }
        println!("{bt}");
    } else {
        println!("{tl}");
    }
}

//! What a simulation found: the JSON report of `berth simulate --output
//! json`, and helpers for writing it for people.

use serde::Serialize;
use std::collections::BTreeMap;

/// Below-floor intervals kept per service in the report.
pub const MAX_INTERVALS: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Virtual seconds simulated.
    pub duration_seconds: f64,
    pub instances_launched: u64,
    /// Instances that ended: scaled in, retired by the lifecycle, failed,
    /// taken back at the end of a spot notice.
    pub instances_terminated: u64,
    /// The oldest any instance got (launch to termination, or to the end).
    pub max_instance_age_seconds: f64,
    /// The most instances draining at once under the disruption budget
    /// (spot drains are outside it and not counted).
    pub max_concurrent_drains: u64,
    /// Live instances at the end, by OS image version.
    pub image_versions: BTreeMap<String, u64>,
    /// Drains started, by kind (every kind listed).
    pub drains: BTreeMap<String, u64>,
    /// Tasks STOPPED at the end, by stop code (`None` when none was set).
    pub task_stops: BTreeMap<String, u64>,
    pub services: BTreeMap<String, ServiceReport>,
    pub cost: Cost,
    /// Wall time of the run (setup excluded).
    pub wall_seconds: f64,
    pub policy: PolicyReport,
    pub invariants: Invariants,
    pub engine: EngineReport,
    pub timeline: Vec<TimelineEntry>,
    pub daily: Vec<Day>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReport {
    /// The desired count at the end.
    pub desired: u32,
    /// From the moment the service first reached its desired count (`null`
    /// if it never did): the fewest tasks running...
    pub min_running: Option<u32>,
    /// (over the whole run) the most tasks running,
    pub max_running: u32,
    /// ...the lowest running / desired (the desired count in force then)...
    pub min_running_fraction: Option<f64>,
    /// ...and how long it ran fewer than minimumHealthyPercent × desired.
    pub seconds_below_minimum: f64,
    /// Seconds from the start when it first reached its desired count.
    pub reached_desired_at: Option<f64>,
    pub minimum_healthy_percent: u32,
    /// How many times it went below its floor; the first
    /// [`MAX_INTERVALS`] are in `belowMinimum`.
    pub below_minimum_intervals: usize,
    pub below_minimum: Vec<Below>,
}

/// A time a service ran fewer tasks than its floor.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Below {
    /// Seconds from the start.
    pub from: f64,
    pub to: f64,
    pub min_running: u32,
    /// The highest floor in force meanwhile.
    pub floor: u32,
}

/// The virtual period's cost, from the same meters and arithmetic as
/// `berth cost` (`berth_control::metering`), in USD rounded to the cent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    /// Billed instance seconds × the on-demand price (× 0.35 for spot).
    pub instance_usd: f64,
    /// Billed instance seconds × the ECS Managed Instances management fee.
    pub fee_usd: f64,
    pub total_usd: f64,
    /// The part of the bill no task reserved.
    pub idle_usd: f64,
    /// What the same tasks would have cost on Fargate (those that fit it).
    pub fargate_usd: f64,
    /// Tasks without a Fargate price (GPUs, beyond Fargate's sizes).
    pub fargate_unpriced_tasks: usize,
    /// Billed instance seconds.
    pub instance_seconds: u64,
    /// Each task group's (`service:NAME`, `family:NAME`) share.
    pub services: BTreeMap<String, ServiceCost>,
}

/// One task group's share of the bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCost {
    /// Seconds its tasks ran.
    pub seconds: u64,
    pub total_usd: f64,
    /// What its tasks would have cost on Fargate.
    pub fargate_usd: Option<f64>,
}

impl Cost {
    /// The report's figures from a metered cost report by service.
    pub fn metered(r: &berth_catalog::cost::CostReport) -> Cost {
        let round = |x: f64| (x * 100.0).round() / 100.0;
        Cost {
            instance_usd: round(r.instance_usd),
            fee_usd: round(r.fee_usd),
            total_usd: round(r.total_usd),
            idle_usd: round(r.idle_usd),
            fargate_usd: round(r.fargate_usd),
            fargate_unpriced_tasks: r.fargate_unpriced_tasks,
            instance_seconds: r.instance_seconds,
            services: r
                .rows
                .iter()
                .map(|row| {
                    (
                        row.key.clone(),
                        ServiceCost {
                            seconds: row.seconds,
                            total_usd: round(row.total_usd),
                            fargate_usd: row.fargate_usd.map(round),
                        },
                    )
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    pub drain_age_seconds: f64,
    pub max_lifetime_seconds: f64,
    pub budget_percent: u32,
    /// Below this many instances, one drain at a time.
    pub small_fleet: u64,
    pub agent_timeout_seconds: f64,
    pub boot_delay_seconds: f64,
}

/// What must never happen.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invariants {
    /// Tasks started on an instance while another still ran them.
    pub tasks_running_twice: u64,
    /// Ticks that started drains beyond the disruption budget.
    pub budget_exceeded: u64,
    /// The most instances alive at once.
    pub peak_instances: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineReport {
    /// Steps (one scheduler tick each).
    pub steps: u64,
    /// Steps that came only because the cap ran out...
    pub cap_steps: u64,
    /// ...and those of them whose tick found something to do or tasks
    /// waiting for capacity (none means the cap was never needed to notice
    /// anything).
    pub cap_steps_with_work: u64,
    /// Wall seconds in the scheduler's ticks...
    pub tick_seconds: f64,
    /// ...in agents acting on desired sets...
    pub agent_seconds: f64,
    /// ...and in events, boots, task ends and reconnects.
    pub event_seconds: f64,
    pub min_step_seconds: f64,
    pub max_step_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// Seconds from the start.
    pub at: f64,
    pub event: String,
}

/// One virtual day.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Day {
    /// From 0.
    pub day: u32,
    pub launched: u64,
    pub terminated: u64,
    /// Drains started, by kind (kinds with none left out).
    pub drains: BTreeMap<String, u64>,
    pub peak_instances: u64,
    /// Steps (scheduler ticks) taken that day.
    pub steps: u64,
}

/// `90 s`, `12 min`, `3 h 20 min`, `14 d 2 h`.
pub fn human(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s < 120 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else if s < 86_400 {
        let (h, m) = (s / 3600, s % 3600 / 60);
        if m == 0 {
            format!("{h} h")
        } else {
            format!("{h} h {m} min")
        }
    } else {
        let (d, h) = (s / 86_400, s % 86_400 / 3600);
        if h == 0 {
            format!("{d} d")
        } else {
            format!("{d} d {h} h")
        }
    }
}

/// A moment of the simulation: `day 3 04:05:06`.
pub fn at(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!(
        "day {} {:02}:{:02}:{:02}",
        s / 86_400,
        s % 86_400 / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// `1 instance`, `3 instances`.
pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_moments_read_well() {
        assert_eq!(human(45.0), "45 s");
        assert_eq!(human(600.0), "10 min");
        assert_eq!(human(3.0 * 3600.0 + 1200.0), "3 h 20 min");
        assert_eq!(human(14.0 * 86_400.0), "14 d");
        assert_eq!(at(86_400.0 * 3.0 + 3723.0), "day 3 01:02:03");
        assert_eq!(plural(1, "agent"), "1 agent");
        assert_eq!(plural(2, "agent"), "2 agents");
    }
}

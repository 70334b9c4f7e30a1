//! `berth bench placement`: throughput of task placement (the pure core in
//! `berth_scheduler::placement`), single-threaded, no server.
//!
//! # What it does
//!
//! 1. Builds a synthetic cluster, the same for a given `--seed`: `--instances`
//!    container instances (default 5,000) of four types (m5.large, m5.xlarge,
//!    c5.2xlarge, r5.large, with their ECS-registered cpu and memory) over
//!    three Availability Zones, with the built-in attributes
//!    `ecs.instance-type`, `ecs.availability-zone`, `ecs.cpu-architecture` and
//!    `ecs.os-type`; and `--tasks` pending tasks (default 100,000) in RunTask
//!    batches of 10 of one group each (200 groups `service:svc-N`), sized from
//!    32 cpu / 128 MiB to 256 cpu / 768 MiB: about 60% of the cluster's cpu and
//!    memory, 70–80% of the instances the `memberOf` constraint allows.
//! 2. Two scenarios, each from a fresh copy of the cluster:
//!    * `binpack`: every task `binpack(memory)`, no constraint;
//!    * `spread+constraints`: every task `spread(attribute:ecs.availability-zone)`
//!      then `spread(instanceId)`, a `memberOf` constraint
//!      `attribute:ecs.instance-type in [m5.large, m5.xlarge, c5.2xlarge]`, and
//!      `distinctInstance` for the tasks of the first 10 groups.
//! 3. Per scenario: the indexed placer (`placement::place`) on all tasks, then
//!    the baseline — the linear-scan reference (`placement::place_reference`)
//!    on the first `--baseline-tasks` (default 2,000) tasks, and the indexed
//!    placer on the same slice, whose placements must equal the reference's
//!    (the run fails otherwise). The clock covers `place` alone (index
//!    building included), not the construction of the cluster.
//! 4. Report: tasks placed and failed, seconds, tasks/s, and the ratio of the
//!    indexed placer's tasks/s (all tasks) to the reference's (the slice).

use super::Output;
use anyhow::bail;
use berth_scheduler::placement::{
    parse_expression, place, place_reference, Constraint, Demand, InstanceSpec, PlaceOptions,
    Placement, Resource, Snapshot, SpreadField, Strategy,
};
use serde::Serialize;
use std::time::Instant;

#[derive(clap::Args)]
pub struct PlacementArgs {
    /// Container instances in the synthetic cluster.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    instances: u32,
    /// Tasks to place per scenario.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    tasks: u32,
    /// Tasks the linear-scan baseline places (the first ones of the same list).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    baseline_tasks: u32,
    /// Seed of the synthetic cluster and tasks.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Report format.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

/// (type, cpu units, memory MiB as the ECS agent registers them).
const TYPES: [(&str, u32, u32); 4] = [
    ("m5.large", 2048, 7680),
    ("m5.xlarge", 4096, 15_700),
    ("c5.2xlarge", 8192, 15_200),
    ("r5.large", 2048, 15_700),
];
const AZS: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
/// (cpu, memory) of the tasks.
const SIZES: [(u32, u32); 5] = [(32, 128), (64, 256), (128, 256), (128, 512), (256, 768)];
const GROUPS: u64 = 200;
const DISTINCT_GROUPS: u64 = 10;
const BATCH: usize = 10;
const MEMBER_OF: &str = "attribute:ecs.instance-type in [m5.large, m5.xlarge, c5.2xlarge]";

/// SplitMix64, for a cluster that depends on the seed alone.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn cluster(n: u32, seed: u64) -> Vec<InstanceSpec> {
    let mut g = Gen(seed);
    (0..n)
        .map(|k| {
            let (ty, cpu, mem) = TYPES[g.below(TYPES.len())];
            let az = AZS[g.below(AZS.len())];
            InstanceSpec {
                ec2_instance_id: format!("i-{:017x}", u64::from(k) * 7919 + seed),
                arn: format!(
                    "arn:aws:ecs:us-east-1:000000000000:container-instance/bench/{k:032x}"
                ),
                attributes: vec![
                    ("ecs.instance-type".into(), Some(ty.into())),
                    ("ecs.availability-zone".into(), Some(az.into())),
                    ("ecs.cpu-architecture".into(), Some("x86_64".into())),
                    ("ecs.os-type".into(), Some("linux".into())),
                ],
                agent_connected: true,
                agent_version: Some("1.80.0".into()),
                registered_at: 1_790_000_000,
                remaining_cpu: cpu,
                remaining_memory: mem,
                ..InstanceSpec::default()
            }
        })
        .collect()
}

/// The tasks of both scenarios: the same groups and sizes, different placement rules.
fn tasks(n: u32, seed: u64, spread: bool) -> anyhow::Result<Vec<Demand>> {
    let mut g = Gen(seed ^ 0x5eed);
    let member = Constraint::MemberOf(parse_expression(MEMBER_OF)?);
    let az = Strategy::Spread(SpreadField::Attribute("ecs.availability-zone".into()));
    let mut out = Vec::with_capacity(n as usize);
    while out.len() < n as usize {
        let group = g.next() % GROUPS;
        let (cpu, memory) = SIZES[g.below(SIZES.len())];
        let (constraints, strategies) = if spread {
            let mut c = vec![member.clone()];
            if group < DISTINCT_GROUPS {
                c.push(Constraint::DistinctInstance);
            }
            (
                c,
                vec![az.clone(), Strategy::Spread(SpreadField::InstanceId)],
            )
        } else {
            (Vec::new(), vec![Strategy::Binpack(Resource::Memory)])
        };
        let d = Demand {
            cpu,
            memory,
            group: format!("service:svc-{group}"),
            constraints,
            strategies,
            ..Demand::default()
        };
        for _ in 0..BATCH.min(n as usize - out.len()) {
            out.push(d.clone());
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct Run {
    placer: &'static str,
    tasks: usize,
    placed: usize,
    failed: usize,
    seconds: f64,
    tasks_per_second: f64,
}

#[derive(Serialize)]
struct Scenario {
    scenario: &'static str,
    indexed: Run,
    reference_slice: Run,
    indexed_slice: Run,
    /// indexed (all tasks) tasks/s over reference (slice) tasks/s.
    speedup: f64,
}

#[derive(Serialize)]
struct Report {
    instances: u32,
    tasks: u32,
    baseline_tasks: u32,
    seed: u64,
    scenarios: Vec<Scenario>,
}

type Placer = fn(&mut Snapshot, &[Demand], &PlaceOptions) -> Vec<Placement>;

fn measure(
    name: &'static str,
    f: Placer,
    base: &Snapshot,
    tasks: &[Demand],
) -> (Run, Vec<Placement>) {
    let mut snap = base.clone();
    let opts = PlaceOptions::run_task(1);
    let start = Instant::now();
    let got = f(&mut snap, tasks, &opts);
    let seconds = start.elapsed().as_secs_f64();
    let placed = got.iter().filter(|p| p.instance().is_some()).count();
    let run = Run {
        placer: name,
        tasks: tasks.len(),
        placed,
        failed: tasks.len() - placed,
        seconds,
        tasks_per_second: tasks.len() as f64 / seconds.max(1e-9),
    };
    (run, got)
}

pub fn run(args: PlacementArgs) -> anyhow::Result<()> {
    let base = Snapshot::new(cluster(args.instances, args.seed));
    let slice = args.baseline_tasks.min(args.tasks) as usize;
    let mut scenarios = Vec::new();
    for (scenario, spread) in [("binpack", false), ("spread+constraints", true)] {
        let all = tasks(args.tasks, args.seed, spread)?;
        let (indexed, _) = measure("indexed", place, &base, &all);
        let (reference_slice, want) = measure("reference", place_reference, &base, &all[..slice]);
        let (indexed_slice, got) = measure("indexed", place, &base, &all[..slice]);
        if got != want {
            bail!("{scenario}: the indexed placer and the reference disagree on the first {slice} tasks");
        }
        scenarios.push(Scenario {
            scenario,
            speedup: indexed.tasks_per_second / reference_slice.tasks_per_second,
            indexed,
            reference_slice,
            indexed_slice,
        });
    }
    let report = Report {
        instances: args.instances,
        tasks: args.tasks,
        baseline_tasks: args.baseline_tasks,
        seed: args.seed,
        scenarios,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            println!(
                "berth bench placement: {} instances, {} tasks per scenario (baseline: first {}), seed {}, one thread",
                report.instances, report.tasks, slice, report.seed
            );
            println!("{}", table(&report));
        }
    }
    Ok(())
}

fn table(report: &Report) -> comfy_table::Table {
    use comfy_table::{CellAlignment, Table};
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "scenario",
        "placer",
        "tasks",
        "placed",
        "failed",
        "seconds",
        "tasks/s",
        "vs reference",
    ]);
    for s in &report.scenarios {
        for (r, ratio) in [
            (&s.indexed, Some(s.speedup)),
            (&s.reference_slice, Some(1.0)),
            (
                &s.indexed_slice,
                Some(s.indexed_slice.tasks_per_second / s.reference_slice.tasks_per_second),
            ),
        ] {
            t.add_row(vec![
                s.scenario.to_string(),
                r.placer.to_string(),
                r.tasks.to_string(),
                r.placed.to_string(),
                r.failed.to_string(),
                format!("{:.3}", r.seconds),
                format!("{:.0}", r.tasks_per_second),
                ratio.map_or(String::new(), |x| format!("{x:.1}×")),
            ]);
        }
    }
    for i in 2..8 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenario_is_deterministic_and_the_placers_agree() {
        let base = Snapshot::new(cluster(300, 3));
        let all = tasks(600, 3, true).unwrap_or_default();
        assert_eq!(all.len(), 600);
        let (_, a) = measure("indexed", place, &base, &all);
        let (_, b) = measure("reference", place_reference, &base, &all);
        assert_eq!(a, b);
        assert_eq!(cluster(10, 3), cluster(10, 3));
    }
}

//! `berth bench plan`: the provisioning planner against the
//! first-fit-decreasing baseline on reference workloads, offline (no server).
//!
//! Every workload plans over the embedded catalog in us-east-1, on-demand,
//! with berth's default reservation (256 MiB per instance) and the
//! permissive requirements (every type with more than one vCPU, price
//! protection off) unless said otherwise:
//!
//! | workload | tasks | what it exercises |
//! | --- | --- | --- |
//! | `web` | 256/512 ×2000, 512/1024 ×800, 1024/2048 ×300 | a web tier: small tasks at 2 GiB per vCPU |
//! | `cache` | 512/4096 ×400, 1024/8192 ×200, 256/2048 ×600 | memory-heavy: 8 GiB per vCPU |
//! | `complementary` | 2048/1024 ×500 + 256/7168 ×500 | CPU-heavy beside memory-heavy: packs well only together |
//! | `gpu` | 4096/16384/1 GPU ×40, 8192/30720/1 GPU ×10 + 1024/2048 ×400 | GPU tasks on GPU types, CPU tasks beside them or not |
//! | `arm` | ARM64 512/1024 ×1000, 1024/4096 ×500 + X86_64 1024/2048 ×200 | architectures kept apart |
//! | `spot` | the `web` mix as SPOT | spot-capable types, 0.35 × price, diversity cap |
//! | `large` | 20,000 tasks in 40 groups (seeded, ¼ ARM64, 1 % GPU) | planner time at scale over the whole catalog |
//!
//! (cpu units / MiB per task.) For each: planner and FFD wall time, their
//! hourly costs, the lower bound, cost/bound and planner/FFD.

use std::time::Instant;

use anyhow::Context as _;
use berth_catalog::Catalog;
use berth_model::ecs::CPUArchitecture;
use berth_scheduler::plan::{
    permissive_requirements, plan, plan_ffd, CapacityOption, PlanRequest, TaskGroup,
};
use serde::Serialize;

use super::Output;

#[derive(clap::Args)]
pub struct PlanArgs {
    /// Report format.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// Runs per workload; the fastest run's time is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    workload: &'static str,
    tasks: u64,
    planner_ms: f64,
    ffd_ms: f64,
    planner_cost: f64,
    ffd_cost: f64,
    lower_bound: f64,
    planner_instances: usize,
    ffd_instances: usize,
    cost_over_bound: f64,
    ffd_over_bound: f64,
    planner_over_ffd: f64,
}

fn g(name: &str, cpu: u32, memory_mib: u64, gpu: u32, count: u32, arm: bool) -> TaskGroup {
    TaskGroup {
        name: name.to_string(),
        cpu,
        memory_mib,
        gpu,
        count,
        architecture: if arm {
            CPUArchitecture::Arm64
        } else {
            CPUArchitecture::X8664
        },
    }
}

/// The 20,000-task mix: 40 groups drawn by a fixed xorshift from ECS-valid
/// sizes (0.25 to 8 vCPU, 1 to 8 GiB per vCPU), every fourth ARM64, and
/// one GPU group of 200 single-GPU tasks.
fn large() -> Vec<TaskGroup> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11
    };
    let cpus = [256u32, 512, 1024, 2048, 4096, 8192];
    let ratios = [1u64, 2, 4, 8];
    let mut groups = Vec::new();
    let mut total = 0u32;
    for i in 0..39 {
        let cpu = cpus[(next() % cpus.len() as u64) as usize];
        let per_vcpu = ratios[(next() % ratios.len() as u64) as usize];
        let memory = (u64::from(cpu) * per_vcpu).max(512);
        let count = if i == 38 {
            19_800 - total
        } else {
            // Small tasks are the common ones.
            (4096 / cpu) * (10 + (next() % 40) as u32)
        };
        total += count;
        groups.push(g(&format!("svc{i:02}"), cpu, memory, 0, count, i % 4 == 3));
    }
    groups.push(g("gpu", 4096, 16384, 1, 200, false));
    groups
}

fn workloads() -> Vec<(&'static str, PlanRequest)> {
    let req =
        |groups: Vec<TaskGroup>| PlanRequest::new("us-east-1", permissive_requirements(), groups);
    let web = vec![
        g("small", 256, 512, 0, 2000, false),
        g("medium", 512, 1024, 0, 800, false),
        g("large", 1024, 2048, 0, 300, false),
    ];
    let mut spot = req(web.clone());
    spot.capacity = CapacityOption::Spot;
    vec![
        ("web", req(web)),
        (
            "cache",
            req(vec![
                g("cache-m", 512, 4096, 0, 400, false),
                g("cache-l", 1024, 8192, 0, 200, false),
                g("cache-s", 256, 2048, 0, 600, false),
            ]),
        ),
        (
            "complementary",
            req(vec![
                g("cpu-heavy", 2048, 1024, 0, 500, false),
                g("mem-heavy", 256, 7168, 0, 500, false),
            ]),
        ),
        (
            "gpu",
            req(vec![
                g("infer", 4096, 16384, 1, 40, false),
                g("train", 8192, 30720, 1, 10, false),
                g("api", 1024, 2048, 0, 400, false),
            ]),
        ),
        (
            "arm",
            req(vec![
                g("arm-small", 512, 1024, 0, 1000, true),
                g("arm-mem", 1024, 4096, 0, 500, true),
                g("x86", 1024, 2048, 0, 200, false),
            ]),
        ),
        ("spot", spot),
        ("large", req(large())),
    ]
}

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let catalog = Catalog::embedded();
    let mut rows = Vec::new();
    for (name, request) in workloads() {
        let tasks: u64 = request.groups.iter().map(|g| u64::from(g.count)).sum();
        let mut planner_ms = f64::INFINITY;
        let mut ffd_ms = f64::INFINITY;
        let mut result = None;
        let mut baseline = None;
        for _ in 0..args.runs {
            let t0 = Instant::now();
            let p = plan(catalog, &request).with_context(|| format!("workload {name}"))?;
            planner_ms = planner_ms.min(t0.elapsed().as_secs_f64() * 1e3);
            let t1 = Instant::now();
            let f = plan_ffd(catalog, &request).with_context(|| format!("workload {name}"))?;
            ffd_ms = ffd_ms.min(t1.elapsed().as_secs_f64() * 1e3);
            result = Some(p);
            baseline = Some(f);
        }
        let (Some(p), Some(f)) = (result, baseline) else {
            continue;
        };
        if !p.unplaceable.is_empty() {
            anyhow::bail!("workload {name}: unplaceable tasks {:?}", p.unplaceable);
        }
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        rows.push(Row {
            workload: name,
            tasks,
            planner_ms,
            ffd_ms,
            planner_cost: p.hourly_cost,
            ffd_cost: f.hourly_cost,
            lower_bound: p.lower_bound,
            planner_instances: p.instances.len(),
            ffd_instances: f.instances.len(),
            cost_over_bound: ratio(p.hourly_cost, p.lower_bound),
            ffd_over_bound: ratio(f.hourly_cost, p.lower_bound),
            planner_over_ffd: ratio(p.hourly_cost, f.hourly_cost),
        });
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Table => {
            use comfy_table::{CellAlignment, Table};
            let mut t = Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            t.set_header(vec![
                "workload",
                "tasks",
                "planner ms",
                "FFD ms",
                "planner $/h",
                "FFD $/h",
                "bound $/h",
                "planner/bound",
                "FFD/bound",
                "planner/FFD",
                "instances (planner/FFD)",
            ]);
            for r in &rows {
                t.add_row(vec![
                    r.workload.to_string(),
                    r.tasks.to_string(),
                    format!("{:.1}", r.planner_ms),
                    format!("{:.1}", r.ffd_ms),
                    format!("{:.4}", r.planner_cost),
                    format!("{:.4}", r.ffd_cost),
                    format!("{:.4}", r.lower_bound),
                    format!("{:.4}", r.cost_over_bound),
                    format!("{:.4}", r.ffd_over_bound),
                    format!("{:.4}", r.planner_over_ffd),
                    format!("{}/{}", r.planner_instances, r.ffd_instances),
                ]);
            }
            for i in 1..=10 {
                if let Some(c) = t.column_mut(i) {
                    c.set_cell_alignment(CellAlignment::Right);
                }
            }
            println!("{t}");
            println!("us-east-1, on-demand unless noted, 256 MiB reserved per instance; times: fastest of {} runs, single thread", args.runs);
        }
    }
    Ok(())
}

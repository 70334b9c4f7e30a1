//! `berth capacity plan`: the provisioning planner, offline (no server).
//!
//! Reads a JSON file describing tasks and the capacity provider's instance
//! requirements, prints the cheapest fleet berth's planner finds, with a
//! proven lower bound on the cost of any fleet (see
//! `berth_scheduler::plan`). Input:
//!
//! ```json
//! {"region": "us-east-1",
//!  "instanceRequirements": {"vCpuCount": {"min": 2}, "memoryMiB": {"min": 4096}},
//!  "capacityOptionType": "ON_DEMAND",
//!  "reservedMemoryMiB": 256,
//!  "tasks": [{"name": "web", "cpu": 256, "memory": 512, "gpu": 0, "count": 40,
//!             "architecture": "X86_64"}]}
//! ```
//!
//! * `instanceRequirements` (ECS `InstanceRequirementsRequest`, camelCase) is
//!   optional: without it every type with more than one vCPU is a candidate,
//!   price protection off ([`berth_scheduler::plan::permissive_requirements`]).
//! * `capacityOptionType`: `ON_DEMAND` (default) or `SPOT`.
//! * `reservedMemoryMiB`: memory held back per instance; default berth's
//!   rule, 256 MiB.
//! * per task: `gpu` defaults to 0, `architecture` to `X86_64`.
//! * optional extras: `unavailableInstanceTypes` (types to avoid) and
//!   `availabilityZones` (spread the instances round-robin over them).
//!
//! Bad input is an [`InputError`] naming the field (exit code 2).

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_catalog::Catalog;
use berth_model::ecs::{CPUArchitecture, InstanceRequirementsRequest};
use berth_scheduler::plan::{
    self, permissive_requirements, CapacityOption, Plan, PlanRequest, Reservation, TaskGroup,
};
use serde_json::{Map, Value};

#[derive(clap::Args)]
pub struct CapacityArgs {
    #[command(subcommand)]
    command: CapacityCommand,
}

#[derive(clap::Subcommand)]
enum CapacityCommand {
    /// Plan the cheapest fleet of instances for a set of tasks (offline, no server).
    ///
    /// Prints the instances to launch, the hourly cost (price + ECS management fee), a
    /// proven lower bound on the cost of any fleet, and the tasks no allowed type can hold.
    Plan(PlanArgs),
}

#[derive(clap::Args)]
struct PlanArgs {
    /// The JSON input (see `berth capacity plan --help` and the module docs).
    #[arg(long)]
    input: PathBuf,
    /// Report format.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Output {
    /// Tables and a summary line, for people.
    Table,
    /// The plan as one JSON document, for programs.
    Json,
}

/// Input the planner cannot use: the message names the field and what to do.
#[derive(Debug)]
pub struct InputError(String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

fn bad(msg: impl Into<String>) -> anyhow::Error {
    InputError(msg.into()).into()
}

pub fn run(args: CapacityArgs) -> anyhow::Result<()> {
    match args.command {
        CapacityCommand::Plan(a) => plan_cmd(a),
    }
}

fn plan_cmd(args: PlanArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.input).map_err(|e| {
        bad(format!(
            "--input {}: cannot read it: {e}",
            args.input.display()
        ))
    })?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{}: not valid JSON: {e}", args.input.display())))?;
    let request = parse_request(&value)?;
    let result = plan::plan(Catalog::embedded(), &request).map_err(|e| bad(e.to_string()))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&result)?),
        Output::Table => print_table(&result),
    }
    Ok(())
}

const ROOT_FIELDS: &[&str] = &[
    "region",
    "instanceRequirements",
    "capacityOptionType",
    "reservedMemoryMiB",
    "tasks",
    "unavailableInstanceTypes",
    "availabilityZones",
];
const TASK_FIELDS: &[&str] = &["name", "cpu", "memory", "gpu", "count", "architecture"];

fn check_fields(obj: &Map<String, Value>, allowed: &[&str], at: &str) -> anyhow::Result<()> {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(bad(format!(
                "{at}{key}: unknown field; expected one of {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn uint(obj: &Map<String, Value>, key: &str, at: &str, max: u64) -> anyhow::Result<Option<u64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            _ => Err(bad(format!(
                "{at}{key}: expected a whole number from 0 to {max}, got {v}"
            ))),
        },
    }
}

fn string<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> anyhow::Result<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(bad(format!("{at}{key}: expected a string, got {v}"))),
    }
}

fn strings(obj: &Map<String, Value>, key: &str) -> anyhow::Result<Vec<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("{key}[{i}]: expected a string, got {v}")))
            })
            .collect(),
        Some(v) => Err(bad(format!("{key}: expected an array of strings, got {v}"))),
    }
}

/// Turns the input document into a [`PlanRequest`], naming the field at fault.
fn parse_request(value: &Value) -> anyhow::Result<PlanRequest> {
    let root = value
        .as_object()
        .ok_or_else(|| bad("the input must be a JSON object with region and tasks"))?;
    check_fields(root, ROOT_FIELDS, "")?;
    let region =
        string(root, "region", "")?.ok_or_else(|| bad("region: required (e.g. \"us-east-1\")"))?;
    let catalog = Catalog::embedded();
    if !catalog.has_region(region) {
        return Err(bad(format!(
            "region: `{region}` is not in the instance type catalog; use one of {}",
            catalog.regions().join(", ")
        )));
    }
    let requirements: InstanceRequirementsRequest = match root.get("instanceRequirements") {
        None | Some(Value::Null) => permissive_requirements(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            bad(format!(
                "instanceRequirements: {e} (an ECS InstanceRequirementsRequest in camelCase, e.g. {{\"vCpuCount\": {{\"min\": 2}}, \"memoryMiB\": {{\"min\": 4096}}}})"
            ))
        })?,
    };
    let capacity = match string(root, "capacityOptionType", "")? {
        None | Some("ON_DEMAND") => CapacityOption::OnDemand,
        Some("SPOT") => CapacityOption::Spot,
        Some(other) => {
            return Err(bad(format!(
                "capacityOptionType: `{other}` is not supported; use ON_DEMAND or SPOT"
            )))
        }
    };
    let reservation = match uint(root, "reservedMemoryMiB", "", u64::from(u32::MAX))? {
        None => Reservation::default(),
        Some(m) => Reservation::MemoryMib(m),
    };
    let tasks = match root.get("tasks") {
        Some(Value::Array(items)) => items,
        Some(v) => return Err(bad(format!("tasks: expected an array of task groups, got {v}"))),
        None => {
            return Err(bad(
                "tasks: required, an array like [{\"name\": \"web\", \"cpu\": 256, \"memory\": 512, \"count\": 10}]",
            ))
        }
    };
    let mut groups = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.iter().enumerate() {
        let at = format!("tasks[{i}].");
        let obj = t
            .as_object()
            .ok_or_else(|| bad(format!("tasks[{i}]: expected an object, got {t}")))?;
        check_fields(obj, TASK_FIELDS, &at)?;
        let name = string(obj, "name", &at)?
            .ok_or_else(|| bad(format!("{at}name: required")))?
            .to_string();
        let max32 = u64::from(u32::MAX);
        let need = |key: &str, v: Option<u64>| {
            v.ok_or_else(|| bad(format!("{at}{key}: required (a whole number)")))
        };
        let cpu = need("cpu", uint(obj, "cpu", &at, max32)?)? as u32;
        let memory_mib = need("memory", uint(obj, "memory", &at, max32)?)?;
        let count = need("count", uint(obj, "count", &at, 1_000_000)?)? as u32;
        let gpu = uint(obj, "gpu", &at, 1024)?.unwrap_or(0) as u32;
        let architecture = match string(obj, "architecture", &at)? {
            None | Some("X86_64") => CPUArchitecture::X8664,
            Some("ARM64") => CPUArchitecture::Arm64,
            Some(other) => {
                return Err(bad(format!(
                    "{at}architecture: `{other}` is not X86_64 or ARM64"
                )))
            }
        };
        groups.push(TaskGroup {
            name,
            cpu,
            memory_mib,
            gpu,
            count,
            architecture,
        });
    }
    let mut request = PlanRequest::new(region, requirements, groups);
    request.capacity = capacity;
    request.reservation = reservation;
    request.unavailable = strings(root, "unavailableInstanceTypes")?
        .into_iter()
        .collect();
    request.availability_zones = strings(root, "availabilityZones")?;
    Ok(request)
}

fn print_table(plan: &Plan) {
    use comfy_table::{CellAlignment, Table};
    // Identical instances (type, zone and tasks) on one row.
    let mut rows: BTreeMap<(String, String, String), (usize, &plan::PlannedInstance)> =
        BTreeMap::new();
    for inst in &plan.instances {
        let tasks = inst
            .tasks
            .iter()
            .map(|(n, k)| format!("{n}×{k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let zone = inst.availability_zone.clone().unwrap_or_default();
        rows.entry((inst.instance_type.clone(), zone, tasks))
            .or_insert((0, inst))
            .0 += 1;
    }
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    let zones = plan.instances.iter().any(|i| i.availability_zone.is_some());
    let mut header = vec!["instance type", "count"];
    if zones {
        header.push("zone");
    }
    header.extend([
        "cpu",
        "memory MiB",
        "gpu",
        "price $/h",
        "fee $/h",
        "tasks per instance",
    ]);
    t.set_header(header);
    for ((ty, zone, tasks), (n, inst)) in &rows {
        let mut row = vec![ty.clone(), n.to_string()];
        if zones {
            row.push(zone.clone());
        }
        row.extend([
            inst.capacity.cpu.to_string(),
            inst.capacity.memory.to_string(),
            inst.capacity.gpu.to_string(),
            format!("{:.6}", inst.hourly_price),
            format!("{:.6}", inst.hourly_fee),
            tasks.clone(),
        ]);
        t.add_row(row);
    }
    for i in 1..(if zones { 8 } else { 7 }) {
        if i == 1 || i >= 3 {
            if let Some(c) = t.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    if !plan.instances.is_empty() {
        println!("{t}");
    }
    if !plan.unplaceable.is_empty() {
        let mut u = Table::new();
        u.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        u.set_header(vec!["unplaceable", "count", "reason"]);
        for x in &plan.unplaceable {
            u.add_row(vec![x.name.clone(), x.count.to_string(), x.reason.clone()]);
        }
        println!("{u}");
    }
    let ratio = if plan.lower_bound > 0.0 {
        format!("{:.3}×", plan.hourly_cost / plan.lower_bound)
    } else {
        "n/a".to_string()
    };
    let unplaced: u64 = plan.unplaceable.iter().map(|u| u64::from(u.count)).sum();
    println!(
        "{} instances, hourly cost ${:.4}, lower bound ${:.4}, cost/bound {ratio}{}",
        plan.instances.len(),
        plan.hourly_cost,
        plan.lower_bound,
        if unplaced > 0 {
            format!(", {unplaced} tasks unplaceable")
        } else {
            String::new()
        }
    );
}

//! Metering: the meter records written beside the state changes they
//! record, and cost reports read from them.
//!
//! # Design
//!
//! Each hook takes the transaction of the state change it records, so a
//! meter can never disagree with the state: [`instance_launched`] runs in the
//! launch's transaction (price and fee frozen then, from the catalog — the
//! server's price and fee tables), [`instance_voided`] in a failed launch's,
//! [`instance_ended`] in the termination's, [`task_changed`] in the one that
//! applies an agent's report (RUNNING opens a task's usage of its instance,
//! STOPPED closes it). Opening and closing are idempotent in the store, so a
//! replay after a restart neither loses nor double-counts time. Everything
//! is timed by the injected clock; an agent's own timestamps are not used.
//!
//! The arithmetic (billing, attribution, roll-ups, Fargate) is the pure
//! [`berth_catalog::cost`]; [`report`] feeds it the meters of a window.
//!
//! Spot instances are priced as the planner prices them:
//! [`DEFAULT_SPOT_PRICE_RATIO`] × on-demand, management fee unchanged.

use crate::agents::InstanceRecord;
use crate::Ctx;
use berth_catalog::cost::{self, CostReport, GroupBy, Window};
use berth_catalog::Architecture;
use berth_model::ecs::{CapacityOptionType, Task};
use berth_model::meter::{InstanceMeter, PurchaseOption, TaskUsage};
use berth_model::EcsError;
use berth_scheduler::plan::DEFAULT_SPOT_PRICE_RATIO;
use berth_store::Tx;

/// Opens the meter of an instance being launched (in the launch's
/// transaction): its price and fee per hour are frozen now.
pub fn instance_launched(ctx: &Ctx, tx: &dyn Tx, r: &InstanceRecord) -> Result<(), EcsError> {
    let region = ctx.arns.region.as_str();
    let purchase_option = match tx
        .capacity_provider(&r.capacity_provider)?
        .and_then(|cp| cp.value.managed_instances_provider)
        .and_then(|m| m.instance_launch_template)
        .and_then(|t| t.capacity_option_type)
    {
        Some(CapacityOptionType::Spot) => PurchaseOption::Spot,
        _ => PurchaseOption::OnDemand,
    };
    let on_demand = ctx.catalog.on_demand_price(region, &r.instance_type);
    if on_demand.is_none() {
        tracing::warn!(
            instance_type = r.instance_type,
            region,
            "no price for the instance type: it is metered at $0"
        );
    }
    let price = on_demand.unwrap_or(0.0)
        * match purchase_option {
            PurchaseOption::OnDemand => 1.0,
            PurchaseOption::Spot => DEFAULT_SPOT_PRICE_RATIO,
        };
    let (cpu_units, memory_mib) = ctx
        .catalog
        .get(&r.instance_type)
        .map_or((0, 0), |t| (t.cpu_units(), t.memory_mib));
    tx.open_instance_meter(&InstanceMeter {
        instance_id: r.instance_id.clone(),
        cluster_arn: r.cluster_arn.clone(),
        container_instance_arn: r.container_instance_arn.clone(),
        capacity_provider: r.capacity_provider.clone(),
        instance_type: r.instance_type.clone(),
        region: region.to_string(),
        purchase_option,
        cpu_units,
        memory_mib,
        price_per_hour: price,
        fee_per_hour: ctx
            .catalog
            .management_fee(region, &r.instance_type)
            .unwrap_or(0.0),
        price_table: ctx.catalog.price_table().label(),
        fee_table: ctx.catalog.fee_table().label(),
        launched_at: r.launched_at,
        ended_at: None,
    })?;
    Ok(())
}

/// The launch failed: nothing ran, nothing is billed.
pub fn instance_voided(tx: &dyn Tx, instance_id: &str) -> Result<(), EcsError> {
    tx.void_instance_meter(instance_id)?;
    Ok(())
}

/// Closes an instance's meter, and the usages of tasks still open on it, at
/// `at` (in the termination's transaction).
pub fn instance_ended(tx: &dyn Tx, instance_id: &str, at: f64) -> Result<(), EcsError> {
    tx.close_instance_meter(instance_id, at)?;
    Ok(())
}

/// A task report changed `before` into `after` on instance `r`: RUNNING
/// opens the task's usage of the instance, STOPPED (or DEPROVISIONING)
/// closes it, both at `now`.
pub fn task_changed(
    ctx: &Ctx,
    tx: &dyn Tx,
    r: &InstanceRecord,
    before: &Task,
    after: &Task,
    now: f64,
) -> Result<(), EcsError> {
    let Some(task_arn) = after.task_arn.as_deref() else {
        return Ok(());
    };
    if before.started_at.is_none() && after.started_at.is_some() {
        tx.open_task_usage(&usage(ctx, r, after, task_arn, now))?;
    }
    let stopped = |t: &Task| matches!(t.last_status.as_deref(), Some("STOPPED" | "DEPROVISIONING"));
    if stopped(after) && !stopped(before) {
        tx.close_task_usage(task_arn, &r.instance_id, now)?;
    }
    Ok(())
}

fn usage(ctx: &Ctx, r: &InstanceRecord, t: &Task, task_arn: &str, now: f64) -> TaskUsage {
    let (cpu_units, memory_mib) = crate::usage::task_needs(t);
    let gpus = t
        .containers
        .iter()
        .flatten()
        .map(|c| c.gpu_ids.as_ref().map_or(0, Vec::len))
        .sum::<usize>();
    let family = t
        .task_definition_arn
        .as_deref()
        .and_then(|arn| arn.rsplit_once('/'))
        .map(|(_, rest)| rest.split(':').next().unwrap_or(rest).to_string());
    let arm = ctx
        .catalog
        .get(&r.instance_type)
        .is_some_and(|it| it.architectures.contains(&Architecture::Arm64));
    TaskUsage {
        task_arn: task_arn.to_string(),
        instance_id: r.instance_id.clone(),
        cluster_arn: r.cluster_arn.clone(),
        group: t.group.clone(),
        family,
        cpu_units,
        memory_mib,
        gpus: u32::try_from(gpus).unwrap_or(u32::MAX),
        architecture: if arm { "arm64" } else { "x86_64" }.to_string(),
        started_at: now,
        stopped_at: None,
    }
}

/// The cost report over `window` (of one cluster when given), keyed by
/// `group_by`.
pub fn report(
    ctx: &Ctx,
    cluster_arn: Option<&str>,
    window: Window,
    group_by: GroupBy,
) -> Result<CostReport, EcsError> {
    let since = window.since.unwrap_or(f64::MIN);
    let input = ctx.store.read(|tx| {
        let meters = tx.instance_meters(cluster_arn, since, window.until)?;
        let mut out = Vec::with_capacity(meters.len());
        for m in meters {
            let usages = tx.task_usages(&m.instance_id)?;
            out.push((m, usages));
        }
        Ok::<_, EcsError>(out)
    })?;
    Ok(cost::report(ctx.catalog, &input, window, group_by))
}

//! Tasks: RunTask, StopTask, DescribeTasks, ListTasks.
//!
//! RunTask stores each task durably in `PROVISIONING` with desiredStatus
//! `RUNNING` before it answers; placing and starting it is the scheduler's job.

use super::task_definitions::{find, load_tags, parse_ref};
use super::{active_cluster, decode_token, encode_token, page_size, Ctx, OpResult};
use berth_model::arn::{Arn, Resource};
use berth_model::ecs::*;
use berth_model::resources::{parse_cpu, parse_memory};
use berth_model::{tags, EcsError, ErrorKind};
use berth_store::{ClientToken, Expect, TaskFilter, Tx, Versioned};
use sha2::Digest as _;

/// Splits `count` tasks over a capacity provider strategy: bases first, then by weight.
pub(super) fn spread(strategy: &[CapacityProviderStrategyItem], count: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(count);
    let mut assigned = vec![0i64; strategy.len()];
    for (i, item) in strategy.iter().enumerate() {
        while out.len() < count && assigned[i] < i64::from(item.base) {
            out.push(item.capacity_provider.clone().unwrap_or_default());
            assigned[i] += 1;
        }
    }
    // Past the bases, tasks are split by weight: each goes to the item
    // furthest below its weighted share of the tasks placed by weight so far.
    let bases: Vec<i64> = assigned.clone();
    let total_weight: i64 = strategy.iter().map(|i| i64::from(i.weight)).sum();
    let mut by_weight = 0i64;
    while out.len() < count {
        by_weight += 1;
        let share = |i: usize| {
            let w = if total_weight == 0 {
                1.0 / strategy.len() as f64
            } else {
                f64::from(strategy[i].weight) / total_weight as f64
            };
            w * by_weight as f64 - (assigned[i] - bases[i]) as f64
        };
        let pick = (0..strategy.len())
            .filter(|&i| total_weight == 0 || strategy[i].weight > 0)
            .max_by(|&a, &b| share(a).total_cmp(&share(b)).then(b.cmp(&a)))
            .unwrap_or(0);
        out.push(
            strategy
                .get(pick)
                .and_then(|i| i.capacity_provider.clone())
                .unwrap_or_default(),
        );
        assigned[pick] += 1;
    }
    out
}

fn digest(req: &RunTaskRequest) -> String {
    let mut r = req.clone();
    r.client_token = None;
    let text = serde_json::to_string(&r).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

pub(super) fn check_network(nc: &Option<NetworkConfiguration>) -> OpResult<()> {
    if let Some(vpc) = nc.as_ref().and_then(|n| n.awsvpc_configuration.as_ref()) {
        let subnets = vpc.subnets.as_deref().unwrap_or_default();
        if subnets.is_empty() || subnets.len() > 16 {
            return Err(EcsError::invalid(
                "awsvpcConfiguration needs between 1 and 16 subnets.",
            ));
        }
        for s in subnets.iter().chain(vpc.security_groups.iter().flatten()) {
            let ok = ["subnet-", "sg-"].iter().any(|p| {
                s.strip_prefix(p).is_some_and(|h| {
                    (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_hexdigit())
                })
            });
            if !ok {
                return Err(EcsError::invalid(format!(
                    "'{s}' is not a valid subnet or security group ID."
                )));
            }
        }
    }
    Ok(())
}

/// The capacity provider strategy a request places by: its own, or the
/// cluster's default; every item an ACTIVE managed instances provider of the
/// cluster.
pub(super) fn resolve_strategy(
    tx: &dyn Tx,
    cluster: &Cluster,
    given: Option<&[CapacityProviderStrategyItem]>,
) -> OpResult<Vec<CapacityProviderStrategyItem>> {
    let strategy = match given {
        Some(s) => s.to_vec(),
        None => cluster
            .default_capacity_provider_strategy
            .clone()
            .unwrap_or_default(),
    };
    if strategy.is_empty() {
        return Err(EcsError::invalid(
            "No capacity provider strategy was given and the cluster has no default capacity provider strategy. Pass capacityProviderStrategy naming a managed instances capacity provider of this cluster.",
        ));
    }
    super::clusters::validate_strategy(
        &strategy,
        cluster.capacity_providers.as_deref().unwrap_or_default(),
    )?;
    for item in &strategy {
        let name = item.capacity_provider.clone().unwrap_or_default();
        match tx.capacity_provider(&name)? {
            Some(cp)
                if cp.value.r#type == Some(CapacityProviderType::ManagedInstances)
                    && cp.value.status == Some(CapacityProviderStatus::Active) => {}
            _ => {
                return Err(EcsError::invalid(format!(
                    "The capacity provider {name} is not an active managed instances capacity provider of this cluster."
                )))
            }
        }
    }
    Ok(strategy)
}

/// The task ARN a `task` parameter (ID or ARN) names, within a cluster.
pub(super) fn task_arn(ctx: &Ctx, cluster: &Cluster, given: &str) -> String {
    if given.starts_with("arn:") {
        given.to_string()
    } else {
        ctx.arns
            .task(cluster.cluster_name.as_deref().unwrap_or(""), given)
    }
}

fn present(mut t: Task, include_tags: bool) -> Task {
    if !include_tags {
        t.tags = None;
    }
    if t.enable_execute_command {
        let agents: Vec<_> = t
            .containers
            .iter()
            .flatten()
            .map(|c| super::exec::managed_agents(&t, c))
            .collect();
        for (c, a) in t.containers.iter_mut().flatten().zip(agents) {
            c.managed_agents = a;
        }
    }
    t
}

pub fn run(ctx: &Ctx, req: RunTaskRequest) -> OpResult<RunTaskResponse> {
    let count = req.count.unwrap_or(1);
    if !(1..=10).contains(&count) {
        return Err(EcsError::invalid("count must be between 1 and 10."));
    }
    if req.launch_type.is_some() && req.capacity_provider_strategy.is_some() {
        return Err(EcsError::invalid(
            "Specifying both a launch type and capacity provider strategy is not supported.",
        ));
    }
    if let Some(lt) = req.launch_type {
        return Err(EcsError::invalid(format!(
            "The launch type {lt} is not supported: berth runs tasks on managed instances. Omit launchType and use a capacityProviderStrategy naming a managed instances capacity provider (or the cluster's default strategy)."
        )));
    }
    let tag_list = req.tags.clone().unwrap_or_default();
    tags::validate(&tag_list)?;
    if req.started_by.as_deref().is_some_and(|s| s.len() > 128) {
        return Err(EcsError::invalid(
            "startedBy can be at most 128 characters.",
        ));
    }
    if req.group.as_deref().is_some_and(|g| g.len() > 255) {
        return Err(EcsError::invalid("group can be at most 255 characters."));
    }
    if req
        .client_token
        .as_deref()
        .is_some_and(|t| t.is_empty() || t.len() > 64)
    {
        return Err(EcsError::invalid(
            "clientToken must be between 1 and 64 characters.",
        ));
    }
    check_network(&req.network_configuration)?;
    if let Some(o) = &req.overrides {
        let len = serde_json::to_string(&o.container_overrides)
            .map(|s| s.len())
            .unwrap_or(0);
        if len > 8192 {
            return Err(EcsError::invalid(
                "Container Overrides length must be at most 8192",
            ));
        }
    }
    // The request's own placement first; with the task definition's constraints below.
    berth_control::placing::check(
        &[],
        req.placement_constraints.as_deref().unwrap_or_default(),
        req.placement_strategy.as_deref().unwrap_or_default(),
    )?;
    let td_ref = parse_ref(req.task_definition.as_deref().unwrap_or(""))?;
    let request_digest = digest(&req);
    ctx.store.write(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let cluster_name = cluster.cluster_name.clone().unwrap_or_default();
        if let Some(token) = &req.client_token {
            if let Some(prev) = tx.client_token(&cluster_arn, token)? {
                if prev.request_digest != request_digest {
                    return Err(EcsError::new(
                        ErrorKind::Conflict,
                        format!(
                            "The clientToken is already in use with a different RunTask request. Existing tasks: {}",
                            prev.task_arns.join(", ")
                        ),
                    ));
                }
                let mut tasks = vec![];
                for arn in &prev.task_arns {
                    if let Some(t) = tx.task(arn)? {
                        tasks.push(present(t.value, false));
                    }
                }
                return Ok(RunTaskResponse { tasks: Some(tasks), failures: Some(vec![]) });
            }
        }
        let Some(td) = find(tx, &td_ref)? else {
            return Err(EcsError::client(format!(
                "Unable to find the task definition '{}'.",
                req.task_definition.as_deref().unwrap_or("")
            )));
        };
        let td = td.value;
        if td.status != Some(TaskDefinitionStatus::Active) {
            return Err(EcsError::client("TaskDefinition is inactive"));
        }
        berth_control::placing::check(
            td.placement_constraints.as_deref().unwrap_or_default(),
            req.placement_constraints.as_deref().unwrap_or_default(),
            req.placement_strategy.as_deref().unwrap_or_default(),
        )?;
        let requested = berth_control::placing::Requested {
            constraints: req.placement_constraints.clone().unwrap_or_default(),
            strategy: req.placement_strategy.clone().unwrap_or_default(),
        };
        if !td.compatibilities.iter().flatten().any(|c| *c == Compatibility::ManagedInstances) {
            return Err(EcsError::client(
                "Task definition does not support launch_type MANAGED_INSTANCES.",
            ));
        }
        let strategy = resolve_strategy(tx, &cluster, req.capacity_provider_strategy.as_deref())?;
        let containers = td.container_definitions.clone().unwrap_or_default();
        let overrides = req.overrides.clone().unwrap_or_default();
        for o in overrides.container_overrides.iter().flatten() {
            let name = o.name.as_deref().unwrap_or("");
            if !containers.iter().any(|c| c.name.as_deref() == Some(name)) {
                return Err(EcsError::invalid(format!(
                    "Override for container named {name} is not a container in the TaskDefinition."
                )));
            }
        }
        let task_cpu = match overrides.cpu.as_deref().map(parse_cpu).transpose()? {
            Some(c) => Some(c.to_string()),
            None => td.cpu.clone(),
        };
        let task_memory = match overrides.memory.as_deref().map(parse_memory).transpose()? {
            Some(m) => Some(m.to_string()),
            None => td.memory.clone(),
        };
        let mut task_tags = tag_list.clone();
        if req.propagate_tags == Some(PropagateTags::TaskDefinition) {
            let td_tags = load_tags(tx, td.task_definition_arn.as_deref().unwrap_or(""))?;
            for t in td_tags {
                if !task_tags.iter().any(|x| x.key == t.key) {
                    task_tags.push(t);
                }
            }
            tags::validate(&task_tags)?;
        }
        let family = td.family.clone().unwrap_or_default();
        let providers = spread(&strategy, count as usize);
        let now = ctx.now();
        let mut tasks = vec![];
        for provider in providers {
            let task = berth_control::tasks::build(&berth_control::tasks::NewTask {
                arns: &ctx.arns,
                cluster_name: &cluster_name,
                cluster_arn: &cluster_arn,
                task_definition: &td,
                overrides: &overrides,
                network_configuration: req.network_configuration.as_ref(),
                capacity_provider: provider,
                group: req.group.clone().unwrap_or_else(|| format!("family:{family}")),
                started_by: req.started_by.clone(),
                enable_execute_command: req.enable_execute_command,
                tags: task_tags.clone(),
                cpu: task_cpu.clone(),
                memory: task_memory.clone(),
                now,
            });
            let arn = task.task_arn.clone().unwrap_or_default();
            tx.put_task(&task, Expect::Absent)?;
            berth_control::placing::remember(tx, &arn, &requested)?;
            tasks.push(task);
        }
        if let Some(token) = &req.client_token {
            let value = ClientToken {
                request_digest: request_digest.clone(),
                task_arns: tasks.iter().filter_map(|t| t.task_arn.clone()).collect(),
            };
            tx.put_client_token(&cluster_arn, token, &value)?;
        }
        Ok(RunTaskResponse {
            tasks: Some(tasks.into_iter().map(|t| present(t, false)).collect()),
            failures: Some(vec![]),
        })
    })
}

pub fn stop(ctx: &Ctx, req: StopTaskRequest) -> OpResult<StopTaskResponse> {
    let reason = req
        .reason
        .clone()
        .unwrap_or_else(|| "Task stopped by user".to_string());
    if reason.len() > 1024 {
        return Err(EcsError::invalid("reason can be at most 1024 characters."));
    }
    ctx.store.write(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let arn = task_arn(ctx, &cluster, req.task.as_deref().unwrap_or(""));
        let found = tx
            .task(&arn)?
            .filter(|t| t.value.cluster_arn == cluster.cluster_arn);
        let Some(Versioned {
            version,
            value: mut t,
        }) = found
        else {
            return Err(EcsError::invalid("The referenced task was not found."));
        };
        if t.desired_status.as_deref() != Some("STOPPED") {
            let now = ctx.now();
            t.desired_status = Some("STOPPED".into());
            t.stop_code = Some(TaskStopCode::UserInitiated);
            t.stopped_reason = Some(reason.clone());
            t.stopping_at = Some(now);
            t.version += 1;
            if t.last_status.as_deref() == Some("RUNNING") {
                // ECS's first step of a stop; the agent's report moves it to STOPPING.
                t.last_status = Some("DEACTIVATING".into());
            }
            if t.container_instance_arn.is_none() {
                // Never placed: nothing runs anywhere, so it is stopped at once.
                t.last_status = Some("STOPPED".into());
                t.execution_stopped_at = Some(now);
                t.stopped_at = Some(now);
                for c in t.containers.iter_mut().flatten() {
                    c.last_status = Some("STOPPED".into());
                }
            }
            tx.put_task(&t, Expect::Version(version))?;
        }
        Ok(StopTaskResponse {
            task: Some(present(t, false)),
        })
    })
}

pub fn describe(ctx: &Ctx, req: DescribeTasksRequest) -> OpResult<DescribeTasksResponse> {
    let wanted = req.tasks.clone().unwrap_or_default();
    if wanted.len() > 100 {
        return Err(EcsError::invalid(
            "DescribeTasks accepts at most 100 tasks.",
        ));
    }
    let include_tags = req
        .include
        .as_deref()
        .unwrap_or_default()
        .contains(&TaskField::Tags);
    ctx.store.read(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let mut tasks = vec![];
        let mut failures = vec![];
        for w in &wanted {
            let arn = task_arn(ctx, &cluster, w);
            match tx
                .task(&arn)?
                .filter(|t| t.value.cluster_arn == cluster.cluster_arn)
            {
                Some(t) => tasks.push(present(t.value, include_tags)),
                None => failures.push(Failure {
                    arn: Some(arn),
                    reason: Some("MISSING".into()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeTasksResponse {
            tasks: Some(tasks),
            failures: Some(failures),
        })
    })
}

pub fn list(ctx: &Ctx, req: ListTasksRequest) -> OpResult<ListTasksResponse> {
    let limit = page_size(req.max_results, 100, 100)?;
    let after = decode_token(Operation::ListTasks, req.next_token.as_deref())?;
    ctx.store.read(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        if let Some(lt) = req.launch_type {
            if lt != LaunchType::ManagedInstances {
                return Ok(ListTasksResponse {
                    task_arns: Some(vec![]),
                    next_token: None,
                });
            }
        }
        let container_instance_arn = req.container_instance.as_ref().map(|ci| {
            if ci.starts_with("arn:") {
                ci.clone()
            } else {
                ctx.arns
                    .container_instance(cluster.cluster_name.as_deref().unwrap_or(""), ci)
            }
        });
        if let Some(arn) = &container_instance_arn {
            let ok = matches!(
                Arn::parse(arn).map(|a| a.resource),
                Ok(Resource::ContainerInstance { .. })
            );
            if !ok {
                return Err(EcsError::invalid(format!(
                    "'{arn}' is not a container instance ID or ARN."
                )));
            }
        }
        let filter = TaskFilter {
            cluster_arn: cluster.cluster_arn.clone().unwrap_or_default(),
            family: req.family.clone(),
            started_by: req.started_by.clone(),
            group: req.service_name.as_ref().map(|s| format!("service:{s}")),
            container_instance_arn,
            desired_status: Some(
                req.desired_status
                    .unwrap_or(DesiredStatus::Running)
                    .as_str()
                    .to_string(),
            ),
            last_status: None,
            not_stopped: false,
        };
        let page = tx.tasks(&filter, after.as_deref(), limit)?;
        let next_token = page
            .next
            .as_deref()
            .map(|k| encode_token(Operation::ListTasks, k));
        Ok(ListTasksResponse {
            task_arns: Some(
                page.items
                    .into_iter()
                    .filter_map(|t| t.value.task_arn)
                    .collect(),
            ),
            next_token,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, weight: i32, base: i32) -> CapacityProviderStrategyItem {
        CapacityProviderStrategyItem {
            capacity_provider: Some(name.into()),
            weight,
            base,
        }
    }

    #[test]
    fn spread_honours_base_then_weights() {
        let s = [item("a", 1, 2), item("b", 3, 0)];
        let got = spread(&s, 6);
        assert_eq!(got.iter().filter(|p| *p == "a").count(), 3);
        assert_eq!(got.iter().filter(|p| *p == "b").count(), 3);
        assert_eq!(&got[..2], &["a".to_string(), "a".to_string()]);
        let only = spread(&[item("x", 0, 0)], 3);
        assert_eq!(only, vec!["x", "x", "x"]);
        let weighted = spread(&[item("a", 1, 0), item("b", 1, 0)], 10);
        assert_eq!(weighted.iter().filter(|p| *p == "a").count(), 5);
    }
}

//! Between the store and the pure placement engine
//! ([`berth_scheduler::placement`]): the placement a RunTask asked for, kept
//! beside the task until it is placed; the [`Demand`] of a stored task; the
//! [`InstanceSpec`] of a stored container instance.

use crate::usage::task_needs;
use berth_model::ecs::*;
use berth_model::EcsError;
use berth_scheduler::placement::{
    Constraint, Demand, HostPort, InstanceSpec, Strategy, MAX_CONSTRAINTS, MAX_STRATEGIES,
};
use berth_store::Tx;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The placement constraints and strategies of a RunTask, as it gave them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Requested {
    #[serde(default)]
    pub constraints: Vec<PlacementConstraint>,
    #[serde(default)]
    pub strategy: Vec<PlacementStrategy>,
}

impl Requested {
    fn is_empty(&self) -> bool {
        self.constraints.is_empty() && self.strategy.is_empty()
    }
}

fn key(task_arn: &str) -> String {
    format!("placement/{task_arn}")
}

/// Checks a RunTask's placement against ECS's rules, with the task
/// definition's own constraints: known types, parseable `memberOf`
/// expressions, fields that fit the strategy, at most 10 constraints in all
/// and 5 strategies. The error is an `InvalidParameterException`.
pub fn check(
    td_constraints: &[TaskDefinitionPlacementConstraint],
    constraints: &[PlacementConstraint],
    strategy: &[PlacementStrategy],
) -> Result<(), EcsError> {
    if td_constraints.len() + constraints.len() > MAX_CONSTRAINTS {
        return Err(EcsError::invalid(format!(
            "At most {MAX_CONSTRAINTS} placement constraints are allowed for a task, those of its task definition ({}) and of the request ({}) together.",
            td_constraints.len(),
            constraints.len()
        )));
    }
    for (i, c) in constraints.iter().enumerate() {
        let Some(kind) = c.r#type else {
            return Err(EcsError::invalid(format!(
                "placementConstraints[{i}]: a placement constraint needs a type (distinctInstance or memberOf)."
            )));
        };
        Constraint::from_ecs(kind.as_str(), c.expression.as_deref())
            .map_err(|e| EcsError::invalid(format!("placementConstraints[{i}]: {e}")))?;
    }
    if strategy.len() > MAX_STRATEGIES {
        return Err(EcsError::invalid(format!(
            "At most {MAX_STRATEGIES} placement strategies are allowed in one request."
        )));
    }
    for (i, s) in strategy.iter().enumerate() {
        let Some(kind) = s.r#type else {
            return Err(EcsError::invalid(format!(
                "placementStrategy[{i}]: a placement strategy needs a type (binpack, spread or random)."
            )));
        };
        Strategy::from_ecs(kind.as_str(), s.field.as_deref())
            .map_err(|e| EcsError::invalid(format!("placementStrategy[{i}]: {e}")))?;
    }
    Ok(())
}

/// Keeps a RunTask's placement beside its task, until it is placed.
pub fn remember(tx: &dyn Tx, task_arn: &str, requested: &Requested) -> Result<(), EcsError> {
    if requested.is_empty() {
        return Ok(());
    }
    let text = serde_json::to_string(requested).map_err(|e| EcsError::server(e.to_string()))?;
    tx.put_meta(&key(task_arn), &text)?;
    Ok(())
}

/// The placement a task was run with (empty when none was given).
pub fn requested(tx: &dyn Tx, task_arn: &str) -> Result<Requested, EcsError> {
    Ok(tx
        .meta(&key(task_arn))?
        .filter(|s| !s.is_empty())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default())
}

/// Drops what [`remember`] kept (the task is placed or gone).
pub fn forget(tx: &dyn Tx, task_arn: &str) -> Result<(), EcsError> {
    if tx.meta(&key(task_arn))?.is_some_and(|s| !s.is_empty()) {
        tx.put_meta(&key(task_arn), "")?;
    }
    Ok(())
}

/// Whole GPUs each container of a task definition asks for
/// (`resourceRequirements` of type GPU), in definition order.
pub fn container_gpus(td: &TaskDefinition) -> Vec<(String, u32)> {
    td.container_definitions
        .iter()
        .flatten()
        .map(|c| {
            let n = c
                .resource_requirements
                .iter()
                .flatten()
                .filter(|r| r.r#type == Some(ResourceType::Gpu))
                .filter_map(|r| r.value.as_deref()?.trim().parse::<u32>().ok())
                .sum();
            (c.name.clone().unwrap_or_default(), n)
        })
        .collect()
}

/// The host ports a task of `td` holds on its instance: fixed host ports of
/// `host` (the container port; berth's default network mode) and `bridge`
/// mode; `awsvpc` and `none` tasks hold none.
pub fn host_ports(td: &TaskDefinition) -> Vec<HostPort> {
    let host = match td.network_mode {
        Some(NetworkMode::Host) | None => true,
        Some(NetworkMode::Bridge) => false,
        Some(_) => return vec![],
    };
    let mut out = vec![];
    for c in td.container_definitions.iter().flatten() {
        for m in c.port_mappings.iter().flatten() {
            let port = match (host, m.host_port, m.container_port) {
                (_, Some(p), _) if p > 0 => p,
                (true, _, Some(p)) if p > 0 => p,
                _ => continue,
            };
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            let hp = match m.protocol {
                Some(TransportProtocol::Udp) => HostPort::udp(port),
                _ => HostPort::tcp(port),
            };
            if !out.contains(&hp) {
                out.push(hp);
            }
        }
    }
    out
}

/// The group of a task: its own, else `family:FAMILY`.
pub fn group_of(t: &Task, td: Option<&TaskDefinition>) -> String {
    t.group.clone().unwrap_or_else(|| {
        format!(
            "family:{}",
            td.and_then(|d| d.family.clone()).unwrap_or_default()
        )
    })
}

/// What a pending task needs from an instance, for the placement engine.
/// Constraints and strategies that do not parse (they were checked when the
/// task was run) are left out.
pub fn demand(t: &Task, td: Option<&TaskDefinition>, requested: &Requested) -> Demand {
    let (cpu, memory) = task_needs(t);
    let mut constraints = vec![];
    if let Some(td) = td {
        for c in td.placement_constraints.iter().flatten() {
            if let Some(kind) = c.r#type {
                if let Ok(c) = Constraint::from_ecs(kind.as_str(), c.expression.as_deref()) {
                    constraints.push(c);
                }
            }
        }
    }
    for c in &requested.constraints {
        if let Some(kind) = c.r#type {
            if let Ok(c) = Constraint::from_ecs(kind.as_str(), c.expression.as_deref()) {
                constraints.push(c);
            }
        }
    }
    let strategies = requested
        .strategy
        .iter()
        .filter_map(|s| Strategy::from_ecs(s.r#type?.as_str(), s.field.as_deref()).ok())
        .take(MAX_STRATEGIES)
        .collect();
    Demand {
        cpu,
        memory: u32::try_from(memory).unwrap_or(u32::MAX),
        gpus: td.map_or(0, |d| container_gpus(d).iter().map(|(_, n)| n).sum()),
        host_ports: td.map(host_ports).unwrap_or_default(),
        group: group_of(t, td),
        constraints,
        strategies,
    }
}

/// The GPU ids of a container instance: the `GPU` string set of its
/// registered resources.
pub fn registered_gpus(ci: &ContainerInstance) -> Vec<String> {
    ci.registered_resources
        .iter()
        .flatten()
        .find(|r| r.name.as_deref() == Some("GPU"))
        .and_then(|r| r.string_set_value.clone())
        .unwrap_or_default()
}

/// The GPU ids the tasks hold.
fn gpus_of<'a>(tasks: impl Iterator<Item = &'a Task>) -> Vec<String> {
    tasks
        .flat_map(|t| t.containers.iter().flatten())
        .flat_map(|c| c.gpu_ids.iter().flatten().cloned())
        .collect()
}

/// Gives a task's GPUs to its containers, as many to each as it asks for, in
/// definition order.
pub fn assign_gpus(t: &mut Task, td: &TaskDefinition, gpus: &[String]) {
    let mut rest = gpus.iter();
    for (name, n) in container_gpus(td) {
        if n == 0 {
            continue;
        }
        let ids: Vec<String> = rest.by_ref().take(n as usize).cloned().collect();
        if let Some(c) = t
            .containers
            .iter_mut()
            .flatten()
            .find(|c| c.name.as_deref() == Some(name.as_str()))
        {
            c.gpu_ids = Some(ids);
        }
    }
}

/// A container instance as the placement engine sees it. `attributes` are
/// its own (built-in, from its agent) followed by custom ones (PutAttributes);
/// `tasks` are those on it not yet STOPPED, with `tds` resolving their task
/// definitions (for host ports and groups).
pub fn instance_spec(
    ci: &ContainerInstance,
    custom: &[Attribute],
    tasks: &[(Arc<Task>, Option<Arc<TaskDefinition>>)],
    remaining_cpu: i64,
    remaining_memory: i64,
) -> InstanceSpec {
    let mut attributes: Vec<(String, Option<String>)> = ci
        .attributes
        .iter()
        .flatten()
        .chain(custom)
        .filter_map(|a| Some((a.name.clone()?, a.value.clone())))
        .collect();
    attributes.dedup_by(|a, b| a.0 == b.0);
    let used = gpus_of(tasks.iter().map(|(t, _)| &**t));
    let free_gpus = registered_gpus(ci)
        .into_iter()
        .filter(|g| !used.contains(g))
        .collect();
    InstanceSpec {
        ec2_instance_id: ci.ec2_instance_id.clone().unwrap_or_default(),
        arn: ci.container_instance_arn.clone().unwrap_or_default(),
        attributes,
        agent_connected: ci.agent_connected,
        agent_version: ci
            .version_info
            .as_ref()
            .and_then(|v| v.agent_version.clone()),
        registered_at: ci.registered_at.map_or(0, |t| t as i64),
        remaining_cpu: u32::try_from(remaining_cpu.max(0)).unwrap_or(u32::MAX),
        remaining_memory: u32::try_from(remaining_memory.max(0)).unwrap_or(u32::MAX),
        free_gpus,
        ports_in_use: tasks
            .iter()
            .filter_map(|(_, td)| td.as_deref())
            .flat_map(host_ports)
            .collect(),
        task_groups: tasks
            .iter()
            .map(|(t, td)| group_of(t, td.as_deref()))
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn td(mode: NetworkMode, containers: Vec<ContainerDefinition>) -> TaskDefinition {
        TaskDefinition {
            family: Some("web".into()),
            network_mode: Some(mode),
            container_definitions: Some(containers),
            ..Default::default()
        }
    }

    fn container(
        name: &str,
        gpus: Option<&str>,
        ports: &[(i32, Option<i32>)],
    ) -> ContainerDefinition {
        ContainerDefinition {
            name: Some(name.into()),
            resource_requirements: gpus.map(|g| {
                vec![ResourceRequirement {
                    value: Some(g.into()),
                    r#type: Some(ResourceType::Gpu),
                }]
            }),
            port_mappings: Some(
                ports
                    .iter()
                    .map(|(c, h)| PortMapping {
                        container_port: Some(*c),
                        host_port: *h,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn host_ports_follow_the_network_mode() {
        let host = td(
            NetworkMode::Host,
            vec![container("a", None, &[(80, None), (80, Some(80))])],
        );
        assert_eq!(host_ports(&host), vec![HostPort::tcp(80)]);
        let bridge = td(
            NetworkMode::Bridge,
            vec![container("a", None, &[(80, None), (443, Some(8443))])],
        );
        assert_eq!(host_ports(&bridge), vec![HostPort::tcp(8443)]);
        let vpc = td(
            NetworkMode::Awsvpc,
            vec![container("a", None, &[(80, Some(80))])],
        );
        assert!(host_ports(&vpc).is_empty());
    }

    #[test]
    fn gpus_go_to_the_containers_that_ask() {
        let d = td(
            NetworkMode::Host,
            vec![
                container("a", Some("2"), &[]),
                container("b", None, &[]),
                container("c", Some("1"), &[]),
            ],
        );
        assert_eq!(
            container_gpus(&d),
            vec![("a".into(), 2), ("b".into(), 0), ("c".into(), 1)]
        );
        let mut t = Task {
            containers: Some(
                ["a", "b", "c"]
                    .iter()
                    .map(|n| Container {
                        name: Some((*n).into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        assign_gpus(&mut t, &d, &["0".into(), "1".into(), "3".into()]);
        let ids: Vec<Option<Vec<String>>> = t
            .containers
            .unwrap()
            .into_iter()
            .map(|c| c.gpu_ids)
            .collect();
        assert_eq!(
            ids,
            vec![
                Some(vec!["0".into(), "1".into()]),
                None,
                Some(vec!["3".into()])
            ]
        );
        assert_eq!(
            demand(&Task::default(), Some(&d), &Requested::default()).gpus,
            3
        );
    }

    #[test]
    fn checks_refuse_bad_placement_with_the_position() {
        let memberof = |e: &str| PlacementConstraint {
            r#type: Some(PlacementConstraintType::MemberOf),
            expression: Some(e.into()),
        };
        assert!(check(
            &[],
            &[memberof("attribute:ecs.instance-type == t3.small")],
            &[]
        )
        .is_ok());
        let e = check(&[], &[memberof("attribute:ecs.instance-type ==")], &[]).unwrap_err();
        assert!(
            e.message.contains("placementConstraints[0]"),
            "{}",
            e.message
        );
        let s = PlacementStrategy {
            r#type: Some(PlacementStrategyType::Binpack),
            field: Some("disk".into()),
        };
        let e = check(&[], &[], &[s]).unwrap_err();
        assert!(e.message.contains("placementStrategy[0]"), "{}", e.message);
        let many = vec![memberof("attribute:a exists"); 11];
        assert!(check(&[], &many, &[]).is_err());
    }
}

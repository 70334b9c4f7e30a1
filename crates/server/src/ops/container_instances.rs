//! Container instances: ListContainerInstances, DescribeContainerInstances,
//! UpdateContainerInstancesState, DeregisterContainerInstance — over the
//! records agents create when they register.

use super::{active_cluster, decode_token, encode_token, page_size, Ctx, OpResult};
use berth_model::ecs::*;
use berth_model::{EcsError, ErrorKind};
use berth_store::{Expect, TaskFilter, Tx, Versioned};

/// The ARN a `containerInstance` parameter (ID or ARN) names within a cluster.
pub(super) fn instance_arn(ctx: &Ctx, cluster: &Cluster, given: &str) -> String {
    if given.starts_with("arn:") {
        given.to_string()
    } else {
        ctx.arns
            .container_instance(cluster.cluster_name.as_deref().unwrap_or(""), given)
    }
}

fn present(mut ci: ContainerInstance, include: &[ContainerInstanceField]) -> ContainerInstance {
    if !include.contains(&ContainerInstanceField::Tags) {
        ci.tags = None;
    }
    if !include.contains(&ContainerInstanceField::ContainerInstanceHealth) {
        ci.health_status = None;
    }
    ci
}

pub fn list(
    ctx: &Ctx,
    req: ListContainerInstancesRequest,
) -> OpResult<ListContainerInstancesResponse> {
    let limit = page_size(req.max_results, 100, 100)?;
    if req.filter.is_some() {
        return Err(EcsError::new(
            ErrorKind::UnsupportedFeature,
            "The cluster query language filter of ListContainerInstances is not supported yet; filter by status instead.",
        ));
    }
    let mut after = decode_token(Operation::ListContainerInstances, req.next_token.as_deref())?;
    ctx.store.read(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let cluster_arn = cluster.cluster_arn.unwrap_or_default();
        let status = req.status.map(|s| s.as_str());
        let mut arns = vec![];
        loop {
            let page =
                tx.container_instances(&cluster_arn, status, after.as_deref(), limit - arns.len())?;
            for ci in page.items {
                // Without a status filter, every state but INACTIVE is listed.
                if status.is_some() || ci.value.status.as_deref() != Some("INACTIVE") {
                    arns.push(ci.value.container_instance_arn.unwrap_or_default());
                }
            }
            after = page.next;
            if after.is_none() || arns.len() == limit {
                break;
            }
        }
        let next_token = match (&after, arns.last()) {
            (Some(_), Some(last)) => Some(encode_token(Operation::ListContainerInstances, last)),
            _ => None,
        };
        Ok(ListContainerInstancesResponse {
            container_instance_arns: Some(arns),
            next_token,
        })
    })
}

fn lookup(
    ctx: &Ctx,
    tx: &dyn Tx,
    cluster: &Cluster,
    given: &str,
) -> OpResult<Result<Versioned<ContainerInstance>, Failure>> {
    let arn = instance_arn(ctx, cluster, given);
    let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
    let cluster_name = cluster.cluster_name.clone().unwrap_or_default();
    let in_cluster = arn.contains(&format!(":container-instance/{cluster_name}/"));
    match tx.container_instance(&arn)? {
        Some(ci) if in_cluster && !cluster_arn.is_empty() => Ok(Ok(ci)),
        _ => Ok(Err(Failure {
            arn: Some(arn),
            reason: Some("MISSING".into()),
            detail: None,
        })),
    }
}

pub fn describe(
    ctx: &Ctx,
    req: DescribeContainerInstancesRequest,
) -> OpResult<DescribeContainerInstancesResponse> {
    let wanted = req.container_instances.clone().unwrap_or_default();
    if wanted.len() > 100 {
        return Err(EcsError::invalid(
            "DescribeContainerInstances accepts at most 100 container instances.",
        ));
    }
    let include = req.include.clone().unwrap_or_default();
    ctx.store.read(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let mut found = vec![];
        let mut failures = vec![];
        for w in &wanted {
            match lookup(ctx, tx, &cluster, w)? {
                Ok(ci) => found.push(present(ci.value, &include)),
                Err(f) => failures.push(f),
            }
        }
        Ok(DescribeContainerInstancesResponse {
            container_instances: Some(found),
            failures: Some(failures),
        })
    })
}

pub fn update_state(
    ctx: &Ctx,
    req: UpdateContainerInstancesStateRequest,
) -> OpResult<UpdateContainerInstancesStateResponse> {
    let status = req
        .status
        .ok_or_else(|| EcsError::invalid("status is required."))?;
    if !matches!(
        status,
        ContainerInstanceStatus::Active | ContainerInstanceStatus::Draining
    ) {
        return Err(EcsError::invalid(format!(
            "Container instances can only be set to ACTIVE or DRAINING; {status} was given."
        )));
    }
    let wanted = req.container_instances.clone().unwrap_or_default();
    if wanted.is_empty() || wanted.len() > 10 {
        return Err(EcsError::invalid(
            "UpdateContainerInstancesState takes between 1 and 10 container instances.",
        ));
    }
    ctx.store.write(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let mut found = vec![];
        let mut failures = vec![];
        for w in &wanted {
            match lookup(ctx, tx, &cluster, w)? {
                Ok(Versioned { version, value: mut ci }) => {
                    let current = ci.status.clone().unwrap_or_default();
                    if current != "ACTIVE" && current != "DRAINING" {
                        failures.push(Failure {
                            arn: ci.container_instance_arn.clone(),
                            reason: Some(format!("Container instance is {current}; only ACTIVE and DRAINING instances can change state.")),
                            detail: None,
                        });
                        continue;
                    }
                    if current != status.as_str() {
                        ci.status = Some(status.as_str().to_string());
                        ci.version += 1;
                        tx.put_container_instance(&cluster_arn, &ci, Expect::Version(version))?;
                    }
                    found.push(present(ci, &[]));
                }
                Err(f) => failures.push(f),
            }
        }
        Ok(UpdateContainerInstancesStateResponse { container_instances: Some(found), failures: Some(failures) })
    })
}

pub fn deregister(
    ctx: &Ctx,
    req: DeregisterContainerInstanceRequest,
) -> OpResult<DeregisterContainerInstanceResponse> {
    let force = req.force.unwrap_or(false);
    ctx.store.write(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let given = req.container_instance.clone().unwrap_or_default();
        let Versioned { version, value: mut ci } = match lookup(ctx, tx, &cluster, &given)? {
            Ok(ci) => ci,
            Err(_) => return Err(EcsError::invalid("The referenced container instance was not found.")),
        };
        let arn = ci.container_instance_arn.clone().unwrap_or_default();
        let filter = TaskFilter {
            cluster_arn: cluster_arn.clone(),
            container_instance_arn: Some(arn),
            desired_status: Some("RUNNING".into()),
            ..Default::default()
        };
        if !force && !tx.tasks(&filter, None, 1)?.items.is_empty() {
            return Err(EcsError::invalid(
                "Found running tasks on the instance. Stop them first, or pass force=true to deregister it anyway.",
            ));
        }
        ci.status = Some("INACTIVE".into());
        ci.agent_connected = false;
        ci.version += 1;
        tx.put_container_instance(&cluster_arn, &ci, Expect::Version(version))?;
        Ok(DeregisterContainerInstanceResponse { container_instance: Some(present(ci, &[])) })
    })
}

//! Managed instances capacity providers: CreateCapacityProvider,
//! DescribeCapacityProviders, UpdateCapacityProvider, DeleteCapacityProvider.
//!
//! berth manages its own instances, so only the `managedInstancesProvider`
//! shape is accepted; a provider belongs to the cluster it was created for,
//! as managed instances providers do in AWS.

use super::{active_cluster, decode_token, encode_token, page_size, Ctx, OpResult};
use berth_model::arn::{check_iam_arn, Arn, Resource};
use berth_model::ecs::*;
use berth_model::names::CapacityProviderName;
use berth_model::{tags, EcsError, ErrorKind};
use berth_store::{Expect, Tx, Versioned};

fn check_ids(ids: &[String], prefix: &str, member: &str, required: bool) -> OpResult<()> {
    if required && ids.is_empty() {
        return Err(EcsError::invalid(format!(
            "At least one {member} entry is required."
        )));
    }
    if ids.len() > 16 {
        return Err(EcsError::invalid(format!(
            "At most 16 {member} entries are allowed."
        )));
    }
    for id in ids {
        let hex = id.strip_prefix(prefix).unwrap_or("");
        if !(hex.len() == 8 || hex.len() == 17) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EcsError::invalid(format!(
                "The {member} entry '{id}' is not a valid ID: expected {prefix} followed by 8 or 17 hexadecimal characters."
            )));
        }
    }
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != ids.len() {
        return Err(EcsError::invalid(format!(
            "The {member} list contains duplicates."
        )));
    }
    Ok(())
}

fn check_network(n: &ManagedInstancesNetworkConfiguration) -> OpResult<()> {
    check_ids(
        n.subnets.as_deref().unwrap_or_default(),
        "subnet-",
        "subnets",
        true,
    )?;
    check_ids(
        n.security_groups.as_deref().unwrap_or_default(),
        "sg-",
        "securityGroups",
        false,
    )
}

fn check_optimization(o: &Option<InfrastructureOptimization>) -> OpResult<()> {
    if let Some(s) = o.as_ref().and_then(|o| o.scale_in_after) {
        if s != -1 && !(0..=3600).contains(&s) {
            return Err(EcsError::invalid(format!(
                "scaleInAfter must be -1 (turned off) or between 0 and 3600 seconds; {s} was given."
            )));
        }
    }
    Ok(())
}

fn check_requirements(ctx: &Ctx, req: &Option<InstanceRequirementsRequest>) -> OpResult<()> {
    if let Some(r) = req {
        let matched = ctx
            .catalog
            .matching(&ctx.arns.region, r)
            .map_err(|e| EcsError::invalid(e.to_string()))?;
        if matched.is_empty() {
            return Err(EcsError::invalid(
                "No instance types match the specified instance requirements. Widen the requirements (vCpuCount, memoryMiB, allowed or excluded types).",
            ));
        }
    }
    Ok(())
}

fn check_template(ctx: &Ctx, t: &InstanceLaunchTemplate) -> OpResult<()> {
    check_iam_arn(
        t.ec2_instance_profile_arn.as_deref().unwrap_or(""),
        "instance-profile",
        "ec2InstanceProfileArn",
    )?;
    if let Some(n) = &t.network_configuration {
        check_network(n)?;
    }
    if let Some(s) = t
        .storage_configuration
        .as_ref()
        .and_then(|s| s.storage_size_gib)
    {
        if !(1..=16384).contains(&s) {
            return Err(EcsError::invalid(
                "storageSizeGiB must be between 1 and 16384.",
            ));
        }
    }
    check_requirements(ctx, &t.instance_requirements)
}

/// Resolves a provider name or ARN to its name.
fn provider_name(given: &str) -> String {
    if given.starts_with("arn:") {
        if let Ok(Arn {
            resource: Resource::CapacityProvider { name },
            ..
        }) = Arn::parse(given)
        {
            return name;
        }
    }
    given.to_string()
}

fn present(mut cp: CapacityProvider, include_tags: bool) -> CapacityProvider {
    if !include_tags {
        cp.tags = None;
    }
    cp
}

pub fn create(
    ctx: &Ctx,
    req: CreateCapacityProviderRequest,
) -> OpResult<CreateCapacityProviderResponse> {
    let name = CapacityProviderName::parse(req.name.as_deref().unwrap_or(""))?;
    let tag_list = req.tags.clone().unwrap_or_default();
    tags::validate(&tag_list)?;
    berth_control::lifecycle::check_tags(&tag_list)?;
    if req.auto_scaling_group_provider.is_some() {
        return Err(EcsError::invalid(
            "berth launches and manages its own instances: create the capacity provider with managedInstancesProvider, not autoScalingGroupProvider.",
        ));
    }
    let Some(mi) = req.managed_instances_provider.clone() else {
        return Err(EcsError::invalid("managedInstancesProvider is required."));
    };
    let Some(cluster) = req.cluster.clone() else {
        return Err(EcsError::invalid(
            "cluster is required for a managed instances capacity provider.",
        ));
    };
    check_iam_arn(
        mi.infrastructure_role_arn.as_deref().unwrap_or(""),
        "role",
        "infrastructureRoleArn",
    )?;
    let template = mi.instance_launch_template.clone().unwrap_or_default();
    check_template(ctx, &template)?;
    check_optimization(&mi.infrastructure_optimization)?;
    ctx.store.write(|tx| {
        let Versioned { version, value: mut c } = active_cluster(ctx, tx, Some(&cluster))?;
        if tx.capacity_provider(name.as_str())?.is_some() {
            return Err(EcsError::client(format!(
                "The specified capacity provider {name} already exists. To change its configuration, use UpdateCapacityProvider."
            )));
        }
        let cluster_arn = c.cluster_arn.clone().unwrap_or_default();
        let cp = CapacityProvider {
            capacity_provider_arn: Some(ctx.arns.capacity_provider(name.as_str())),
            name: Some(name.to_string()),
            cluster: Some(cluster_arn),
            status: Some(CapacityProviderStatus::Active),
            managed_instances_provider: Some(ManagedInstancesProvider {
                infrastructure_role_arn: mi.infrastructure_role_arn.clone(),
                instance_launch_template: Some(InstanceLaunchTemplate {
                    capacity_option_type: Some(template.capacity_option_type.unwrap_or(CapacityOptionType::OnDemand)),
                    monitoring: Some(template.monitoring.unwrap_or(ManagedInstancesMonitoringOptions::Basic)),
                    ..template.clone()
                }),
                propagate_tags: Some(mi.propagate_tags.unwrap_or(PropagateMITags::None)),
                infrastructure_optimization: mi.infrastructure_optimization.clone(),
                auto_repair_configuration: Some(mi.auto_repair_configuration.clone().unwrap_or(AutoRepairConfiguration {
                    actions_status: Some(AutoRepairActionsStatus::Enabled),
                })),
            }),
            update_status: Some(CapacityProviderUpdateStatus::CreateComplete),
            tags: Some(tag_list.clone()),
            r#type: Some(CapacityProviderType::ManagedInstances),
            ..Default::default()
        };
        tx.put_capacity_provider(&cp, Expect::Absent)?;
        let mut providers = c.capacity_providers.take().unwrap_or_default();
        providers.push(name.to_string());
        c.capacity_providers = Some(providers);
        tx.put_cluster(&c, Expect::Version(version))?;
        Ok(CreateCapacityProviderResponse { capacity_provider: Some(cp) })
    })
}

pub fn describe(
    ctx: &Ctx,
    req: DescribeCapacityProvidersRequest,
) -> OpResult<DescribeCapacityProvidersResponse> {
    let include_tags = req
        .include
        .as_deref()
        .unwrap_or_default()
        .contains(&CapacityProviderField::Tags);
    ctx.store.read(|tx| {
        let cluster_arn = match &req.cluster {
            Some(c) => Some(
                active_cluster(ctx, tx, Some(c))?
                    .value
                    .cluster_arn
                    .unwrap_or_default(),
            ),
            None => None,
        };
        if let Some(wanted) = &req.capacity_providers {
            if wanted.len() > 100 {
                return Err(EcsError::invalid(
                    "DescribeCapacityProviders accepts at most 100 capacity providers.",
                ));
            }
            let mut found = vec![];
            let mut failures = vec![];
            for w in wanted {
                match tx.capacity_provider(&provider_name(w))? {
                    Some(cp) if cluster_arn.is_none() || cp.value.cluster == cluster_arn => {
                        found.push(present(cp.value, include_tags))
                    }
                    _ => failures.push(Failure {
                        arn: Some(if w.starts_with("arn:") {
                            w.clone()
                        } else {
                            ctx.arns.capacity_provider(w)
                        }),
                        reason: Some("MISSING".into()),
                        detail: None,
                    }),
                }
            }
            return Ok(DescribeCapacityProvidersResponse {
                capacity_providers: Some(found),
                failures: Some(failures),
                next_token: None,
            });
        }
        let limit = page_size(req.max_results, 10, 10)?;
        let mut after = decode_token(
            Operation::DescribeCapacityProviders,
            req.next_token.as_deref(),
        )?;
        let mut found = vec![];
        loop {
            let page = tx.capacity_providers(after.as_deref(), limit - found.len())?;
            for cp in page.items {
                if cluster_arn.is_none() || cp.cluster == cluster_arn {
                    found.push(present(cp, include_tags));
                }
            }
            after = page.next;
            if after.is_none() || found.len() == limit {
                break;
            }
        }
        let next_token = match (&after, found.last()) {
            (Some(_), Some(last)) => Some(encode_token(
                Operation::DescribeCapacityProviders,
                last.name.as_deref().unwrap_or_default(),
            )),
            _ => None,
        };
        Ok(DescribeCapacityProvidersResponse {
            capacity_providers: Some(found),
            failures: Some(vec![]),
            next_token,
        })
    })
}

pub fn update(
    ctx: &Ctx,
    req: UpdateCapacityProviderRequest,
) -> OpResult<UpdateCapacityProviderResponse> {
    let name = provider_name(req.name.as_deref().unwrap_or(""));
    if req.auto_scaling_group_provider.is_some() {
        return Err(EcsError::invalid(
            "autoScalingGroupProvider cannot be updated on a managed instances capacity provider.",
        ));
    }
    let Some(upd) = req.managed_instances_provider.clone() else {
        return Err(EcsError::invalid("managedInstancesProvider is required."));
    };
    check_iam_arn(
        upd.infrastructure_role_arn.as_deref().unwrap_or(""),
        "role",
        "infrastructureRoleArn",
    )?;
    check_optimization(&upd.infrastructure_optimization)?;
    ctx.store.write(|tx| {
        let Some(Versioned {
            version,
            value: mut cp,
        }) = tx.capacity_provider(&name)?
        else {
            return Err(EcsError::client(format!(
                "The specified capacity provider {name} does not exist."
            )));
        };
        if let Some(c) = &req.cluster {
            let arn = active_cluster(ctx, tx, Some(c))?.value.cluster_arn;
            if arn != cp.cluster {
                return Err(EcsError::client(format!(
                    "The capacity provider {name} does not belong to the cluster {c}."
                )));
            }
        }
        let mut mi = cp.managed_instances_provider.take().unwrap_or_default();
        mi.infrastructure_role_arn = upd.infrastructure_role_arn.clone();
        let mut t = mi.instance_launch_template.take().unwrap_or_default();
        if let Some(u) = &upd.instance_launch_template {
            if let Some(v) = &u.ec2_instance_profile_arn {
                t.ec2_instance_profile_arn = Some(v.clone());
            }
            if let Some(v) = &u.network_configuration {
                t.network_configuration = Some(v.clone());
            }
            if let Some(v) = &u.storage_configuration {
                t.storage_configuration = Some(v.clone());
            }
            if let Some(v) = u.instance_metadata_tags_propagation {
                t.instance_metadata_tags_propagation = Some(v);
            }
            if let Some(v) = &u.local_storage_configuration {
                t.local_storage_configuration = Some(v.clone());
            }
            if let Some(v) = u.monitoring {
                t.monitoring = Some(v);
            }
            if let Some(v) = &u.instance_requirements {
                t.instance_requirements = Some(v.clone());
            }
            if let Some(v) = &u.capacity_reservations {
                t.capacity_reservations = Some(v.clone());
            }
        }
        check_template(ctx, &t)?;
        mi.instance_launch_template = Some(t);
        if let Some(v) = upd.propagate_tags {
            mi.propagate_tags = Some(v);
        }
        if let Some(v) = &upd.infrastructure_optimization {
            mi.infrastructure_optimization = Some(v.clone());
        }
        if let Some(v) = &upd.auto_repair_configuration {
            mi.auto_repair_configuration = Some(v.clone());
        }
        cp.managed_instances_provider = Some(mi);
        cp.update_status = Some(CapacityProviderUpdateStatus::UpdateComplete);
        tx.put_capacity_provider(&cp, Expect::Version(version))?;
        Ok(UpdateCapacityProviderResponse {
            capacity_provider: Some(present(cp, false)),
        })
    })
}

pub fn delete(
    ctx: &Ctx,
    req: DeleteCapacityProviderRequest,
) -> OpResult<DeleteCapacityProviderResponse> {
    let name = provider_name(req.capacity_provider.as_deref().unwrap_or(""));
    ctx.store.write(|tx| {
        let Some(Versioned { version, value: mut cp }) = tx.capacity_provider(&name)? else {
            return Err(EcsError::client(format!("The specified capacity provider {name} does not exist.")));
        };
        let cluster_arn = cp.cluster.clone().unwrap_or_default();
        if in_use(tx, &cluster_arn, &name)? {
            return Err(EcsError::new(
                ErrorKind::ResourceInUse,
                format!("The capacity provider {name} still has tasks that are not stopped; stop them first."),
            ));
        }
        tx.delete_capacity_provider(&name, version)?;
        // Drop it from its cluster's providers and default strategy.
        let cluster_name = Arn::parse(&cluster_arn).ok().and_then(|a| match a.resource {
            Resource::Cluster { name } => Some(name),
            _ => None,
        });
        if let Some(cn) = cluster_name {
            if let Some(Versioned { version, value: mut c }) = tx.cluster(&cn)? {
                if let Some(list) = c.capacity_providers.as_mut() {
                    list.retain(|p| p != &name);
                }
                if let Some(list) = c.default_capacity_provider_strategy.as_mut() {
                    list.retain(|i| i.capacity_provider.as_deref() != Some(name.as_str()));
                }
                tx.put_cluster(&c, Expect::Version(version))?;
            }
        }
        cp.status = Some(CapacityProviderStatus::Inactive);
        cp.update_status = Some(CapacityProviderUpdateStatus::DeleteComplete);
        Ok(DeleteCapacityProviderResponse { capacity_provider: Some(present(cp, false)) })
    })
}

fn in_use(tx: &dyn Tx, cluster_arn: &str, name: &str) -> OpResult<bool> {
    let filter = berth_store::TaskFilter {
        cluster_arn: cluster_arn.to_string(),
        desired_status: Some("RUNNING".into()),
        ..Default::default()
    };
    let tasks = berth_store::all(|a, n| tx.tasks(&filter, a, n))?;
    Ok(tasks
        .iter()
        .any(|t| t.value.capacity_provider_name.as_deref() == Some(name)))
}

//! Clusters: CreateCluster, DescribeClusters, ListClusters, UpdateCluster,
//! UpdateClusterSettings, PutClusterCapacityProviders, DeleteCluster.

use super::{active_cluster, cluster_name, decode_token, encode_token, page_size, Ctx, OpResult};
use berth_model::ecs::*;
use berth_model::names::ClusterName;
use berth_model::{tags, EcsError, ErrorKind};
use berth_store::{Expect, Tx, Versioned};

fn validate_settings(settings: &[ClusterSetting]) -> OpResult<()> {
    for s in settings {
        let name = s
            .name
            .ok_or_else(|| EcsError::invalid("A cluster setting needs a name."))?;
        match name {
            ClusterSettingName::ContainerInsights => {
                let v = s.value.as_deref().unwrap_or("");
                if !["enabled", "disabled", "enhanced"].contains(&v) {
                    return Err(EcsError::invalid(format!(
                        "The value '{v}' is not valid for containerInsights. Valid values are enabled, disabled and enhanced."
                    )));
                }
            }
        }
    }
    Ok(())
}

fn merge_settings(existing: &mut Vec<ClusterSetting>, new: &[ClusterSetting]) {
    for s in new {
        match existing.iter_mut().find(|e| e.name == s.name) {
            Some(e) => e.value = s.value.clone(),
            None => existing.push(s.clone()),
        }
    }
}

/// Checks a capacity provider strategy against the providers a cluster has.
pub(super) fn validate_strategy(
    items: &[CapacityProviderStrategyItem],
    allowed: &[String],
) -> OpResult<()> {
    if items.len() > 20 {
        return Err(EcsError::invalid(
            "A capacity provider strategy can contain at most 20 capacity providers.",
        ));
    }
    let mut with_base = 0;
    let mut seen = std::collections::BTreeSet::new();
    for i in items {
        let name = i.capacity_provider.as_deref().unwrap_or("");
        if !seen.insert(name) {
            return Err(EcsError::invalid(format!(
                "The capacity provider {name} appears more than once in the strategy."
            )));
        }
        if !allowed.iter().any(|a| a == name) {
            return Err(EcsError::invalid(format!(
                "The specified capacity provider {name} is not associated with the cluster. Associate it with PutClusterCapacityProviders or create it with this cluster."
            )));
        }
        if !(0..=1000).contains(&i.weight) {
            return Err(EcsError::invalid(
                "A capacity provider strategy weight must be between 0 and 1000.",
            ));
        }
        if !(0..=100_000).contains(&i.base) {
            return Err(EcsError::invalid(
                "A capacity provider strategy base must be between 0 and 100000.",
            ));
        }
        if i.base > 0 {
            with_base += 1;
        }
    }
    if with_base > 1 {
        return Err(EcsError::invalid(
            "Only one capacity provider in a strategy can have a base defined.",
        ));
    }
    Ok(())
}

/// The cluster as DescribeClusters shows it: counts filled in, optional members only when included.
fn present(tx: &dyn Tx, mut c: Cluster, include: &[ClusterField]) -> OpResult<Cluster> {
    let arn = c.cluster_arn.clone().unwrap_or_default();
    let counts = tx.task_counts(&arn)?;
    let count = |s: &str| {
        counts
            .iter()
            .filter(|(k, _)| k == s)
            .map(|(_, n)| *n)
            .sum::<i64>() as i32
    };
    c.running_tasks_count = count("RUNNING");
    c.pending_tasks_count = count("PENDING") + count("PROVISIONING") + count("ACTIVATING");
    let mut registered = 0;
    for status in ["ACTIVE", "DRAINING"] {
        registered +=
            berth_store::all(|a, n| tx.container_instances(&arn, Some(status), a, n))?.len() as i32;
    }
    c.registered_container_instances_count = registered;
    c.active_services_count = super::services::count(tx, &arn, "ACTIVE")?;
    if include.contains(&ClusterField::Statistics) {
        let mut stats = vec![];
        for (k, v) in [
            ("runningEC2TasksCount", 0),
            ("runningFargateTasksCount", 0),
            ("pendingEC2TasksCount", 0),
            ("pendingFargateTasksCount", 0),
            ("activeEC2ServiceCount", 0),
            ("activeFargateServiceCount", 0),
            ("drainingEC2ServiceCount", 0),
            ("drainingFargateServiceCount", 0),
            ("runningManagedInstancesTasksCount", c.running_tasks_count),
            ("pendingManagedInstancesTasksCount", c.pending_tasks_count),
            (
                "activeManagedInstancesServiceCount",
                c.active_services_count,
            ),
            (
                "drainingManagedInstancesServiceCount",
                super::services::count(tx, &arn, "DRAINING")?,
            ),
        ] {
            stats.push(KeyValuePair {
                name: Some(k.into()),
                value: Some(v.to_string()),
            });
        }
        c.statistics = Some(stats);
    } else {
        c.statistics = Some(vec![]);
    }
    if !include.contains(&ClusterField::Tags) {
        c.tags = None;
    }
    if !include.contains(&ClusterField::Settings) {
        c.settings = None;
    }
    if !include.contains(&ClusterField::Configurations) {
        c.configuration = None;
    }
    if !include.contains(&ClusterField::Attachments) {
        c.attachments = None;
    }
    Ok(c)
}

/// The cluster as a write operation returns it: everything, with counts.
fn full(tx: &dyn Tx, c: Cluster) -> OpResult<Cluster> {
    present(
        tx,
        c,
        &[
            ClusterField::Settings,
            ClusterField::Configurations,
            ClusterField::Tags,
            ClusterField::Attachments,
        ],
    )
}

pub fn create(ctx: &Ctx, req: CreateClusterRequest) -> OpResult<CreateClusterResponse> {
    let name = ClusterName::parse(req.cluster_name.as_deref().unwrap_or("default"))?;
    let tag_list = req.tags.clone().unwrap_or_default();
    tags::validate(&tag_list)?;
    let settings = req.settings.clone().unwrap_or_default();
    validate_settings(&settings)?;
    let providers = req.capacity_providers.clone().unwrap_or_default();
    let strategy = req
        .default_capacity_provider_strategy
        .clone()
        .unwrap_or_default();
    ctx.store.write(|tx| {
        for p in &providers {
            if tx.capacity_provider(p)?.is_none()
                && !["FARGATE", "FARGATE_SPOT"].contains(&p.as_str())
            {
                return Err(EcsError::invalid(format!(
                    "The specified capacity provider {p} does not exist."
                )));
            }
        }
        validate_strategy(&strategy, &providers)?;
        let existing = tx.cluster(name.as_str())?;
        if let Some(Versioned { value, .. }) = &existing {
            if value.status.as_deref() == Some("ACTIVE") {
                // CreateCluster is idempotent by name: the existing cluster is returned unchanged.
                return Ok(CreateClusterResponse {
                    cluster: Some(full(tx, value.clone())?),
                });
            }
        }
        let mut cluster_settings = vec![ClusterSetting {
            name: Some(ClusterSettingName::ContainerInsights),
            value: Some("disabled".into()),
        }];
        merge_settings(&mut cluster_settings, &settings);
        let cluster = Cluster {
            cluster_arn: Some(ctx.arns.cluster(name.as_str())),
            cluster_name: Some(name.to_string()),
            configuration: req.configuration.clone(),
            status: Some("ACTIVE".into()),
            tags: Some(tag_list.clone()),
            settings: Some(cluster_settings),
            capacity_providers: Some(providers.clone()),
            default_capacity_provider_strategy: Some(strategy.clone()),
            attachments: Some(vec![]),
            service_connect_defaults: req.service_connect_defaults.as_ref().map(|d| {
                ClusterServiceConnectDefaults {
                    namespace: d.namespace.clone(),
                }
            }),
            ..Default::default()
        };
        match existing {
            Some(v) => tx.put_cluster(&cluster, Expect::Version(v.version))?,
            None => tx.put_cluster(&cluster, Expect::Absent)?,
        };
        Ok(CreateClusterResponse {
            cluster: Some(full(tx, cluster)?),
        })
    })
}

pub fn describe(ctx: &Ctx, req: DescribeClustersRequest) -> OpResult<DescribeClustersResponse> {
    let wanted = req
        .clusters
        .clone()
        .unwrap_or_else(|| vec!["default".into()]);
    if wanted.len() > 100 {
        return Err(EcsError::invalid(
            "DescribeClusters accepts at most 100 clusters.",
        ));
    }
    let include = req.include.clone().unwrap_or_default();
    ctx.store.read(|tx| {
        let mut clusters = vec![];
        let mut failures = vec![];
        for w in &wanted {
            let found = match cluster_name(ctx, Some(w)) {
                Ok(name) => tx.cluster(&name)?,
                Err(_) => None,
            };
            match found {
                Some(c) => clusters.push(present(tx, c.value, &include)?),
                None => failures.push(Failure {
                    arn: Some(if w.starts_with("arn:") {
                        w.clone()
                    } else {
                        ctx.arns.cluster(w)
                    }),
                    reason: Some("MISSING".into()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeClustersResponse {
            clusters: Some(clusters),
            failures: Some(failures),
        })
    })
}

pub fn list(ctx: &Ctx, req: ListClustersRequest) -> OpResult<ListClustersResponse> {
    let limit = page_size(req.max_results, 100, 100)?;
    let after = decode_token(Operation::ListClusters, req.next_token.as_deref())?;
    ctx.store.read(|tx| {
        let mut arns = vec![];
        let mut after = after;
        // INACTIVE clusters are skipped; keep reading until the page is full or the listing ends.
        loop {
            let page = tx.clusters(after.as_deref(), limit - arns.len())?;
            for c in page.items {
                if c.status.as_deref() != Some("INACTIVE") {
                    arns.push(c.cluster_arn.unwrap_or_default());
                }
            }
            after = page.next;
            if after.is_none() || arns.len() == limit {
                break;
            }
        }
        let next_token = match (&after, arns.last()) {
            (Some(_), Some(last)) => Some(encode_token(Operation::ListClusters, last)),
            _ => None,
        };
        Ok(ListClustersResponse {
            cluster_arns: Some(arns),
            next_token,
        })
    })
}

/// UpdateCluster and UpdateClusterSettings: merge the settings (and the
/// configuration and Service Connect defaults, when given) into the cluster.
fn update_cluster(
    ctx: &Ctx,
    cluster: Option<&str>,
    settings: &[ClusterSetting],
    configuration: Option<&ClusterConfiguration>,
    connect: Option<&ClusterServiceConnectDefaultsRequest>,
) -> OpResult<Cluster> {
    validate_settings(settings)?;
    ctx.store.write(|tx| {
        let Versioned {
            version,
            value: mut c,
        } = active_cluster(ctx, tx, cluster)?;
        let mut s = c.settings.take().unwrap_or_default();
        merge_settings(&mut s, settings);
        c.settings = Some(s);
        if let Some(conf) = configuration {
            c.configuration = Some(conf.clone());
        }
        if let Some(d) = connect {
            c.service_connect_defaults = Some(ClusterServiceConnectDefaults {
                namespace: d.namespace.clone(),
            });
        }
        tx.put_cluster(&c, Expect::Version(version))?;
        full(tx, c)
    })
}

pub fn update(ctx: &Ctx, req: UpdateClusterRequest) -> OpResult<UpdateClusterResponse> {
    let cluster = update_cluster(
        ctx,
        req.cluster.as_deref(),
        req.settings.as_deref().unwrap_or_default(),
        req.configuration.as_ref(),
        req.service_connect_defaults.as_ref(),
    )?;
    Ok(UpdateClusterResponse {
        cluster: Some(cluster),
    })
}

pub fn update_settings(
    ctx: &Ctx,
    req: UpdateClusterSettingsRequest,
) -> OpResult<UpdateClusterSettingsResponse> {
    let settings = req.settings.as_deref().unwrap_or_default();
    let cluster = update_cluster(ctx, req.cluster.as_deref(), settings, None, None)?;
    Ok(UpdateClusterSettingsResponse {
        cluster: Some(cluster),
    })
}

pub fn put_capacity_providers(
    ctx: &Ctx,
    req: PutClusterCapacityProvidersRequest,
) -> OpResult<PutClusterCapacityProvidersResponse> {
    let providers = req.capacity_providers.clone().unwrap_or_default();
    let strategy = req
        .default_capacity_provider_strategy
        .clone()
        .unwrap_or_default();
    ctx.store.write(|tx| {
        let Versioned { version, value: mut c } = active_cluster(ctx, tx, req.cluster.as_deref())?;
        let arn = c.cluster_arn.clone().unwrap_or_default();
        for p in &providers {
            match tx.capacity_provider(p)? {
                Some(cp) => {
                    if let Some(owner) = &cp.value.cluster {
                        if owner != &arn && owner != c.cluster_name.as_deref().unwrap_or("") {
                            return Err(EcsError::invalid(format!(
                                "The capacity provider {p} belongs to another cluster and cannot be associated with this one."
                            )));
                        }
                    }
                }
                None if ["FARGATE", "FARGATE_SPOT"].contains(&p.as_str()) => {}
                None => return Err(EcsError::invalid(format!("The specified capacity provider {p} does not exist."))),
            }
        }
        // A managed instances provider created for this cluster cannot be removed while it exists.
        for cp in berth_store::all(|a, n| tx.capacity_providers(a, n))? {
            let owned = cp.cluster.as_deref() == Some(arn.as_str());
            let name = cp.name.clone().unwrap_or_default();
            if owned && !providers.contains(&name) && cp.status != Some(CapacityProviderStatus::Inactive) {
                return Err(EcsError::new(
                    ErrorKind::ResourceInUse,
                    format!("The capacity provider {name} was created for this cluster and cannot be removed from it; delete the capacity provider instead."),
                ));
            }
        }
        validate_strategy(&strategy, &providers)?;
        c.capacity_providers = Some(providers.clone());
        c.default_capacity_provider_strategy = Some(strategy.clone());
        tx.put_cluster(&c, Expect::Version(version))?;
        Ok(PutClusterCapacityProvidersResponse { cluster: Some(full(tx, c)?) })
    })
}

pub fn delete(ctx: &Ctx, req: DeleteClusterRequest) -> OpResult<DeleteClusterResponse> {
    if req.cluster.is_none() {
        return Err(EcsError::invalid(
            "Missing required parameter in input: \"cluster\"",
        ));
    }
    ctx.store.write(|tx| {
        let Versioned { version, value: mut c } = active_cluster(ctx, tx, req.cluster.as_deref())?;
        let arn = c.cluster_arn.clone().unwrap_or_default();
        // Tasks first: they are what keeps a provider from being deleted.
        let counts = tx.task_counts(&arn)?;
        if counts.iter().any(|(s, n)| s != "STOPPED" && *n > 0) {
            return Err(EcsError::new(
                ErrorKind::ClusterContainsTasks,
                "The Cluster cannot be deleted while Tasks are active.",
            ));
        }
        for status in ["ACTIVE", "DRAINING"] {
            if super::services::count(tx, &arn, status)? > 0 {
                return Err(EcsError::new(
                    ErrorKind::ClusterContainsServices,
                    "The Cluster cannot be deleted while Services are active.",
                ));
            }
        }
        let providers = berth_store::all(|a, n| tx.capacity_providers(a, n))?;
        if providers.iter().any(|cp| cp.cluster.as_deref() == Some(arn.as_str())) {
            return Err(EcsError::new(
                ErrorKind::ClusterContainsCapacityProvider,
                "The Cluster cannot be deleted while it has managed instances capacity providers. Delete them first with DeleteCapacityProvider.",
            ));
        }
        for status in ["ACTIVE", "DRAINING", "REGISTERING", "DEREGISTERING"] {
            if !tx.container_instances(&arn, Some(status), None, 1)?.items.is_empty() {
                return Err(EcsError::new(
                    ErrorKind::ClusterContainsContainerInstances,
                    "The Cluster cannot be deleted while Container Instances are active or draining.",
                ));
            }
        }
        c.status = Some("INACTIVE".into());
        tx.put_cluster(&c, Expect::Version(version))?;
        Ok(DeleteClusterResponse { cluster: Some(full(tx, c)?) })
    })
}

//! Services: CreateService, UpdateService, DeleteService, DescribeServices,
//! ListServices, and the service history: DescribeServiceDeployments,
//! ListServiceDeployments, DescribeServiceRevisions.
//!
//! # Design
//!
//! This is the API and store half of ECS services; no task is started or
//! stopped here. A service is stored as its ECS `Service` shape, keyed by its
//! ARN (`service/CLUSTER/NAME`). Every rollout — the creation, and each update
//! that changes what tasks run (task definition, capacity provider strategy,
//! network configuration) or says `forceNewDeployment` — records:
//!
//! - a `ServiceRevision`, the immutable description of the tasks to run;
//! - a `ServiceDeployment`, the rollout towards that revision;
//! - a new `PRIMARY` entry in the service's `deployments`, the previous
//!   PRIMARY becoming `ACTIVE` (it keeps its tasks until the rollout drains it).
//!
//! The reconciler (the next slice) is what starts tasks, moves deployment
//! counts and rollout states, and retires ACTIVE deployments.
//!
//! # Deletion
//!
//! DeleteService sets desiredCount 0 and status DRAINING. A service none of
//! whose tasks (group `service:NAME`) is still running goes INACTIVE in the
//! same transaction, so without a reconciler the `services-inactive` waiter
//! succeeds at once; one that still has tasks stays DRAINING until the
//! reconciler sees them gone. INACTIVE services stay describable (ECS keeps
//! them for a while) until a new service of the same name replaces the row.
//!
//! # Limitations
//!
//! REPLICA only (DAEMON is ECS managed daemons' job: CreateDaemon); no load
//! balancers, service registries, Service Connect, VPC Lattice or service
//! volumes; only the ECS deployment controller with the ROLLING strategy.

use super::task_definitions::{find, parse_ref};
use super::tasks::{check_network, resolve_strategy};
use super::{active_cluster, cluster_name, decode_token, encode_token, page_size, Ctx, OpResult};
use berth_model::arn::{Arn, Resource};
use berth_model::ecs::*;
use berth_model::names::ServiceName;
use berth_model::{tags, EcsError, ErrorKind};
use berth_store::{Expect, ServiceFilter, TaskFilter, Tx, Versioned};
use rand::Rng as _;
use sha2::Digest as _;

/// ECS's defaults for a rolling deployment.
const DEFAULT_MAXIMUM_PERCENT: i32 = 200;
const DEFAULT_MINIMUM_HEALTHY_PERCENT: i32 = 100;
/// The largest `maximumPercent` berth accepts.
const MAX_MAXIMUM_PERCENT: i32 = 2000;
/// DescribeServices takes at most this many services.
const DESCRIBE_MAX: usize = 10;
/// DescribeServiceDeployments and DescribeServiceRevisions take at most this many ARNs.
const DESCRIBE_HISTORY_MAX: usize = 20;

fn not_found() -> EcsError {
    EcsError::new(ErrorKind::ServiceNotFound, "Service not found.")
}

fn not_active() -> EcsError {
    EcsError::new(ErrorKind::ServiceNotActive, "Service was not ACTIVE.")
}

/// The ARN a `service` parameter (name or ARN) names in a cluster.
fn service_arn(ctx: &Ctx, cluster: &str, given: &str) -> OpResult<String> {
    if !given.starts_with("arn:") {
        return Ok(ctx.arns.service(cluster, given));
    }
    let arn = Arn::parse(given).map_err(|_| not_found())?;
    match arn.resource {
        Resource::Service { .. }
            if arn.region == ctx.arns.region && arn.account == ctx.arns.account =>
        {
            Ok(given.to_string())
        }
        _ => Err(not_found()),
    }
}

/// The service a `service` parameter names in `cluster`, in any status.
fn lookup(
    ctx: &Ctx,
    tx: &dyn Tx,
    cluster: &Cluster,
    given: &str,
) -> OpResult<Option<Versioned<Service>>> {
    let arn = service_arn(ctx, cluster.cluster_name.as_deref().unwrap_or(""), given)?;
    Ok(tx
        .service(&arn)?
        .filter(|s| s.value.cluster_arn == cluster.cluster_arn))
}

/// `n` random decimal digits, the first not zero (ECS's revision and deployment ids).
fn digits(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|i| {
            let low = u8::from(i == 0);
            char::from(b'0' + rng.random_range(low..10))
        })
        .collect()
}

/// A service deployment id the way ECS writes them: `XXXXXXXX-xxxxxxxxxxxx`.
fn deployment_id() -> String {
    let rng = rand::rng();
    let s: String = rng
        .sample_iter(rand::distr::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    format!("{}-{}", &s[..8], &s[8..])
}

/// Refuses what berth's services cannot do yet, by member name.
fn refuse_unsupported(members: &[(&str, bool)]) -> OpResult<()> {
    for (name, present) in members {
        if *present {
            return Err(EcsError::new(
                ErrorKind::UnsupportedFeature,
                format!("berth services do not support {name} yet."),
            ));
        }
    }
    Ok(())
}

fn nonempty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

/// The deployment configuration after applying `given` to `current` (or to
/// ECS's defaults), checked against ECS's ranges.
fn deployment_configuration(
    given: Option<&DeploymentConfiguration>,
    current: Option<&DeploymentConfiguration>,
) -> OpResult<DeploymentConfiguration> {
    let mut dc = current.cloned().unwrap_or_else(|| DeploymentConfiguration {
        deployment_circuit_breaker: Some(DeploymentCircuitBreaker::default()),
        maximum_percent: Some(DEFAULT_MAXIMUM_PERCENT),
        minimum_healthy_percent: Some(DEFAULT_MINIMUM_HEALTHY_PERCENT),
        alarms: Some(DeploymentAlarms {
            alarm_names: Some(vec![]),
            enable: false,
            rollback: false,
        }),
        strategy: Some(DeploymentStrategy::Rolling),
        ..Default::default()
    });
    let Some(g) = given else { return Ok(dc) };
    if let Some(s) = g.strategy {
        if s != DeploymentStrategy::Rolling {
            return Err(EcsError::new(
                ErrorKind::UnsupportedFeature,
                format!("berth services support only the ROLLING deployment strategy, not {s}."),
            ));
        }
    }
    refuse_unsupported(&[
        (
            "deploymentConfiguration.lifecycleHooks",
            nonempty(&g.lifecycle_hooks),
        ),
        (
            "deploymentConfiguration.linearConfiguration",
            g.linear_configuration.is_some(),
        ),
        (
            "deploymentConfiguration.canaryConfiguration",
            g.canary_configuration.is_some(),
        ),
        (
            "deploymentConfiguration.bakeTimeInMinutes",
            g.bake_time_in_minutes.is_some(),
        ),
    ])?;
    if let Some(max) = g.maximum_percent {
        if !(100..=MAX_MAXIMUM_PERCENT).contains(&max) {
            return Err(EcsError::invalid(format!(
                "deploymentConfiguration.maximumPercent must be between 100 and {MAX_MAXIMUM_PERCENT}; {max} was given."
            )));
        }
        dc.maximum_percent = Some(max);
    }
    if let Some(min) = g.minimum_healthy_percent {
        if !(0..=100).contains(&min) {
            return Err(EcsError::invalid(format!(
                "deploymentConfiguration.minimumHealthyPercent must be between 0 and 100; {min} was given."
            )));
        }
        dc.minimum_healthy_percent = Some(min);
    }
    if let Some(cb) = &g.deployment_circuit_breaker {
        dc.deployment_circuit_breaker = Some(cb.clone());
    }
    if let Some(alarms) = &g.alarms {
        let names = alarms.alarm_names.clone().unwrap_or_default();
        if alarms.enable && names.is_empty() {
            return Err(EcsError::invalid(
                "deploymentConfiguration.alarms: at least one alarm name is needed when alarms are enabled.",
            ));
        }
        if names.iter().any(|n| n.is_empty() || n.len() > 255) {
            return Err(EcsError::invalid(
                "deploymentConfiguration.alarms: alarm names must be between 1 and 255 characters.",
            ));
        }
        dc.alarms = Some(DeploymentAlarms {
            alarm_names: Some(names),
            ..alarms.clone()
        });
    }
    Ok(dc)
}

/// The ACTIVE, MANAGED_INSTANCES-compatible task definition a request names.
fn usable_task_definition(tx: &dyn Tx, given: &str) -> OpResult<TaskDefinition> {
    let r = parse_ref(given)?;
    let Some(td) = find(tx, &r)? else {
        return Err(EcsError::client(format!(
            "Unable to find the task definition '{given}'."
        )));
    };
    let td = td.value;
    if td.status != Some(TaskDefinitionStatus::Active) {
        return Err(EcsError::client("TaskDefinition is inactive"));
    }
    if !td
        .compatibilities
        .iter()
        .flatten()
        .any(|c| *c == Compatibility::ManagedInstances)
    {
        return Err(EcsError::invalid(
            "Task definition does not support launch_type MANAGED_INSTANCES.",
        ));
    }
    Ok(td)
}

fn check_grace_period(v: Option<i32>) -> OpResult<()> {
    if v.is_some_and(|v| v < 0) {
        return Err(EcsError::invalid(
            "healthCheckGracePeriodSeconds must be at least 0.",
        ));
    }
    Ok(())
}

fn check_desired(v: Option<i32>) -> OpResult<()> {
    if v.is_some_and(|v| v < 0) {
        return Err(EcsError::invalid("desiredCount must be at least 0."));
    }
    Ok(())
}

fn monitor_status(enabled: bool) -> ServiceDeploymentRollbackMonitorsStatus {
    if enabled {
        ServiceDeploymentRollbackMonitorsStatus::Monitoring
    } else {
        ServiceDeploymentRollbackMonitorsStatus::Disabled
    }
}

/// ECS's circuit breaker threshold: half the desired count, between 3 and 200.
fn breaker_threshold(desired: i32) -> i32 {
    ((desired + 1) / 2).clamp(3, 200)
}

/// Starts a rollout of `svc` to its current task definition, strategy and
/// network configuration: a new revision, a new service deployment (stopping
/// the one in progress), a new PRIMARY deployment (the previous PRIMARY
/// becomes ACTIVE).
fn roll_out(ctx: &Ctx, tx: &dyn Tx, svc: &mut Service, td: &TaskDefinition) -> OpResult<()> {
    let now = ctx.now();
    let service_arn = svc.service_arn.clone().unwrap_or_default();
    let cluster_arn = svc.cluster_arn.clone().unwrap_or_default();
    let cluster = cluster_arn.rsplit('/').next().unwrap_or("").to_string();
    let name = svc.service_name.clone().unwrap_or_default();

    let revision_arn = ctx.arns.service_revision(&cluster, &name, &digits(19));
    let revision = ServiceRevision {
        service_revision_arn: Some(revision_arn.clone()),
        service_arn: Some(service_arn.clone()),
        cluster_arn: Some(cluster_arn.clone()),
        task_definition: svc.task_definition.clone(),
        capacity_provider_strategy: svc.capacity_provider_strategy.clone(),
        launch_type: svc.launch_type,
        load_balancers: Some(vec![]),
        service_registries: Some(vec![]),
        network_configuration: svc.network_configuration.clone(),
        container_images: Some(
            td.container_definitions
                .iter()
                .flatten()
                .map(|c| ContainerImage {
                    container_name: c.name.clone(),
                    image: c.image.clone(),
                    image_digest: None,
                })
                .collect(),
        ),
        guard_duty_enabled: false,
        created_at: Some(now),
        ..Default::default()
    };
    tx.put_service_revision(&revision, Expect::Absent)?;

    // The rollout in progress, if any, gives way to this one.
    let previous = svc.current_service_revisions.clone().unwrap_or_default();
    if let Some(current) = &svc.current_service_deployment {
        if let Some(mut d) = tx.service_deployment(current)? {
            if matches!(
                d.value.status,
                Some(ServiceDeploymentStatus::Pending | ServiceDeploymentStatus::InProgress)
            ) {
                d.value.status = Some(ServiceDeploymentStatus::Stopped);
                d.value.status_reason =
                    Some("Stopped because a newer service deployment started.".into());
                d.value.stopped_at = Some(now);
                d.value.updated_at = Some(now);
                tx.put_service_deployment(&d.value, Expect::Version(d.version))?;
            }
        }
    }

    let dc = svc.deployment_configuration.clone().unwrap_or_default();
    let breaker = dc.deployment_circuit_breaker.clone().unwrap_or_default();
    let alarms = dc.alarms.clone().unwrap_or_default();
    let target = ServiceRevisionSummary {
        arn: Some(revision_arn.clone()),
        requested_task_count: svc.desired_count,
        ..Default::default()
    };
    let deployment_arn = ctx
        .arns
        .service_deployment(&cluster, &name, &deployment_id());
    let deployment = ServiceDeployment {
        service_deployment_arn: Some(deployment_arn.clone()),
        service_arn: Some(service_arn),
        cluster_arn: Some(cluster_arn),
        created_at: Some(now),
        started_at: Some(now),
        updated_at: Some(now),
        source_service_revisions: Some(
            previous
                .iter()
                .map(|r| ServiceRevisionSummary {
                    arn: r.arn.clone(),
                    requested_task_count: r.requested_task_count,
                    running_task_count: r.running_task_count,
                    pending_task_count: r.pending_task_count,
                    ..Default::default()
                })
                .collect(),
        ),
        target_service_revision: Some(target),
        status: Some(ServiceDeploymentStatus::InProgress),
        deployment_configuration: Some(dc),
        deployment_circuit_breaker: Some(ServiceDeploymentCircuitBreaker {
            status: Some(monitor_status(breaker.enable)),
            failure_count: 0,
            threshold: breaker_threshold(svc.desired_count),
        }),
        alarms: Some(ServiceDeploymentAlarms {
            status: Some(monitor_status(alarms.enable)),
            alarm_names: alarms.alarm_names.clone(),
            triggered_alarm_names: Some(vec![]),
        }),
        ..Default::default()
    };
    tx.put_service_deployment(&deployment, Expect::Absent)?;

    let id = format!("ecs-svc/{}", digits(19));
    let mut deployments = svc.deployments.take().unwrap_or_default();
    for d in &mut deployments {
        if d.status.as_deref() == Some("PRIMARY") {
            d.status = Some("ACTIVE".into());
            d.updated_at = Some(now);
        }
    }
    deployments.insert(
        0,
        Deployment {
            id: Some(id.clone()),
            status: Some("PRIMARY".into()),
            task_definition: svc.task_definition.clone(),
            created_at: Some(now),
            updated_at: Some(now),
            capacity_provider_strategy: svc.capacity_provider_strategy.clone(),
            launch_type: svc.launch_type,
            network_configuration: svc.network_configuration.clone(),
            rollout_state: Some(DeploymentRolloutState::InProgress),
            rollout_state_reason: Some(format!("ECS deployment {id} in progress.")),
            ..Default::default()
        },
    );
    svc.deployments = Some(deployments);
    svc.current_service_deployment = Some(deployment_arn);
    let mut revisions = vec![ServiceCurrentRevisionSummary {
        arn: Some(revision_arn),
        requested_task_count: svc.desired_count,
        running_task_count: 0,
        pending_task_count: 0,
    }];
    revisions.extend(previous);
    svc.current_service_revisions = Some(revisions);
    Ok(())
}

/// A digest of a CreateService request, to recognise a retry of it.
fn digest(req: &CreateServiceRequest) -> String {
    let text = serde_json::to_string(req).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn request_key(service_arn: &str) -> String {
    format!("service-request/{service_arn}")
}

pub fn create(ctx: &Ctx, req: CreateServiceRequest) -> OpResult<CreateServiceResponse> {
    let name = ServiceName::parse(req.service_name.as_deref().unwrap_or(""))?;
    if req.scheduling_strategy == Some(SchedulingStrategy::Daemon) {
        return Err(EcsError::invalid(
            "berth services support only the REPLICA scheduling strategy. To run one task on every instance, use a managed daemon (CreateDaemon).",
        ));
    }
    let Some(desired) = req.desired_count else {
        return Err(EcsError::invalid(
            "desiredCount is required for a service with the REPLICA scheduling strategy.",
        ));
    };
    check_desired(Some(desired))?;
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
    refuse_unsupported_members(
        req.deployment_controller.as_ref(),
        &[
            ("loadBalancers", nonempty(&req.load_balancers)),
            ("serviceRegistries", nonempty(&req.service_registries)),
            (
                "serviceConnectConfiguration",
                req.service_connect_configuration
                    .as_ref()
                    .is_some_and(|c| c.enabled),
            ),
            ("volumeConfigurations", nonempty(&req.volume_configurations)),
            (
                "vpcLatticeConfigurations",
                nonempty(&req.vpc_lattice_configurations),
            ),
        ],
    )?;
    if req
        .client_token
        .as_deref()
        .is_some_and(|t| t.is_empty() || t.len() > 36)
    {
        return Err(EcsError::invalid(
            "clientToken must be between 1 and 36 characters.",
        ));
    }
    let tag_list = req.tags.clone().unwrap_or_default();
    tags::validate(&tag_list)?;
    check_network(&req.network_configuration)?;
    check_grace_period(req.health_check_grace_period_seconds)?;
    let dc = deployment_configuration(req.deployment_configuration.as_ref(), None)?;
    berth_control::placing::check(
        &[],
        req.placement_constraints.as_deref().unwrap_or_default(),
        req.placement_strategy.as_deref().unwrap_or_default(),
    )?;
    let Some(td_given) = req.task_definition.clone() else {
        return Err(EcsError::invalid(
            "A task definition must be specified for a service that uses the ECS deployment controller.",
        ));
    };
    let request_digest = digest(&req);

    ctx.store.write(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let cname = cluster.cluster_name.clone().unwrap_or_default();
        let arn = ctx.arns.service(&cname, name.as_str());
        let existing = tx.service(&arn)?;
        let expect = match &existing {
            None => Expect::Absent,
            Some(s) => match s.value.status.as_deref() {
                Some("INACTIVE") => Expect::Version(s.version),
                Some("DRAINING") => {
                    return Err(EcsError::invalid(
                        "Unable to Start a service that is still Draining.",
                    ))
                }
                _ => {
                    let same = req.client_token.is_some()
                        && tx.meta(&request_key(&arn))?.as_deref() == Some(request_digest.as_str());
                    if same {
                        return Ok(CreateServiceResponse {
                            service: Some(s.value.clone()),
                        });
                    }
                    return Err(EcsError::invalid("Creation of service was not idempotent."));
                }
            },
        };
        let td = usable_task_definition(tx, &td_given)?;
        berth_control::placing::check(
            td.placement_constraints.as_deref().unwrap_or_default(),
            req.placement_constraints.as_deref().unwrap_or_default(),
            req.placement_strategy.as_deref().unwrap_or_default(),
        )?;
        let strategy = resolve_strategy(tx, &cluster, req.capacity_provider_strategy.as_deref())?;
        let now = ctx.now();
        let mut svc = Service {
            service_arn: Some(arn.clone()),
            service_name: Some(name.as_str().to_string()),
            cluster_arn: Some(cluster_arn),
            load_balancers: Some(vec![]),
            service_registries: Some(vec![]),
            status: Some("ACTIVE".into()),
            desired_count: desired,
            running_count: 0,
            pending_count: 0,
            capacity_provider_strategy: Some(strategy),
            task_definition: td.task_definition_arn.clone(),
            deployment_configuration: Some(dc),
            events: Some(vec![]),
            created_at: Some(now),
            placement_constraints: Some(req.placement_constraints.clone().unwrap_or_default()),
            placement_strategy: Some(req.placement_strategy.clone().unwrap_or_default()),
            network_configuration: req.network_configuration.clone(),
            health_check_grace_period_seconds: req.health_check_grace_period_seconds,
            scheduling_strategy: Some(SchedulingStrategy::Replica),
            deployment_controller: Some(DeploymentController {
                r#type: Some(DeploymentControllerType::Ecs),
            }),
            tags: Some(tag_list.clone()),
            enable_ecs_managed_tags: req.enable_ecs_managed_tags,
            propagate_tags: Some(req.propagate_tags.unwrap_or(PropagateTags::None)),
            enable_execute_command: req.enable_execute_command,
            availability_zone_rebalancing: req.availability_zone_rebalancing,
            ..Default::default()
        };
        roll_out(ctx, tx, &mut svc, &td)?;
        tx.put_service(&svc, expect)?;
        tx.put_meta(&request_key(&arn), &request_digest)?;
        Ok(CreateServiceResponse { service: Some(svc) })
    })
}

/// The members CreateService and UpdateService share that berth does not
/// support: a deployment controller other than ECS, and `members` that are set.
fn refuse_unsupported_members(
    controller: Option<&DeploymentController>,
    members: &[(&str, bool)],
) -> OpResult<()> {
    if controller.is_some_and(|c| c.r#type.is_some_and(|t| t != DeploymentControllerType::Ecs)) {
        return Err(EcsError::invalid(
            "berth services support only the ECS deployment controller.",
        ));
    }
    refuse_unsupported(members)
}

pub fn update(ctx: &Ctx, req: UpdateServiceRequest) -> OpResult<UpdateServiceResponse> {
    let Some(given) = req.service.clone() else {
        return Err(EcsError::invalid(
            "Missing required parameter in input: \"service\"",
        ));
    };
    check_desired(req.desired_count)?;
    check_grace_period(req.health_check_grace_period_seconds)?;
    check_network(&req.network_configuration)?;
    refuse_unsupported_members(
        req.deployment_controller.as_ref(),
        &[
            ("loadBalancers", nonempty(&req.load_balancers)),
            ("serviceRegistries", nonempty(&req.service_registries)),
            (
                "serviceConnectConfiguration",
                req.service_connect_configuration
                    .as_ref()
                    .is_some_and(|c| c.enabled),
            ),
            ("volumeConfigurations", nonempty(&req.volume_configurations)),
            (
                "vpcLatticeConfigurations",
                nonempty(&req.vpc_lattice_configurations),
            ),
        ],
    )?;
    berth_control::placing::check(
        &[],
        req.placement_constraints.as_deref().unwrap_or_default(),
        req.placement_strategy.as_deref().unwrap_or_default(),
    )?;
    ctx.store.write(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let Some(Versioned {
            version,
            value: mut svc,
        }) = lookup(ctx, tx, &cluster, &given)?
        else {
            return Err(not_found());
        };
        if svc.status.as_deref() != Some("ACTIVE") {
            return Err(not_active());
        }
        let mut changed_tasks = req.force_new_deployment;
        let td = match &req.task_definition {
            Some(given) => usable_task_definition(tx, given)?,
            None => {
                let current = svc.task_definition.clone().unwrap_or_default();
                usable_or_current(tx, &current)?
            }
        };
        if td.task_definition_arn != svc.task_definition {
            svc.task_definition = td.task_definition_arn.clone();
            changed_tasks = true;
        }
        if let Some(given) = &req.capacity_provider_strategy {
            let strategy = resolve_strategy(tx, &cluster, Some(given))?;
            if svc.capacity_provider_strategy.as_ref() != Some(&strategy) {
                svc.capacity_provider_strategy = Some(strategy);
                changed_tasks = true;
            }
        }
        if let Some(nc) = &req.network_configuration {
            if svc.network_configuration.as_ref() != Some(nc) {
                svc.network_configuration = Some(nc.clone());
                changed_tasks = true;
            }
        }
        if req.deployment_configuration.is_some() {
            svc.deployment_configuration = Some(deployment_configuration(
                req.deployment_configuration.as_ref(),
                svc.deployment_configuration.as_ref(),
            )?);
        }
        let constraints = req
            .placement_constraints
            .clone()
            .or_else(|| svc.placement_constraints.clone())
            .unwrap_or_default();
        let strategy = req
            .placement_strategy
            .clone()
            .or_else(|| svc.placement_strategy.clone())
            .unwrap_or_default();
        berth_control::placing::check(
            td.placement_constraints.as_deref().unwrap_or_default(),
            &constraints,
            &strategy,
        )?;
        svc.placement_constraints = Some(constraints);
        svc.placement_strategy = Some(strategy);
        if let Some(n) = req.desired_count {
            svc.desired_count = n;
            if let Some(primary) = svc
                .current_service_revisions
                .as_mut()
                .and_then(|r| r.first_mut())
            {
                primary.requested_task_count = n;
            }
        }
        if let Some(g) = req.health_check_grace_period_seconds {
            svc.health_check_grace_period_seconds = Some(g);
        }
        if let Some(e) = req.enable_execute_command {
            svc.enable_execute_command = e;
        }
        if let Some(e) = req.enable_ecs_managed_tags {
            svc.enable_ecs_managed_tags = e;
        }
        if let Some(p) = req.propagate_tags {
            svc.propagate_tags = Some(p);
        }
        if let Some(r) = req.availability_zone_rebalancing {
            svc.availability_zone_rebalancing = Some(r);
        }
        if changed_tasks {
            roll_out(ctx, tx, &mut svc, &td)?;
        }
        tx.put_service(&svc, Expect::Version(version))?;
        Ok(UpdateServiceResponse { service: Some(svc) })
    })
}

/// The service's current task definition for a forced redeployment: it may
/// have been deregistered since (ECS then keeps using it), so only its
/// existence matters here.
fn usable_or_current(tx: &dyn Tx, arn: &str) -> OpResult<TaskDefinition> {
    let r = parse_ref(arn)?;
    match find(tx, &r)? {
        Some(td) => Ok(td.value),
        None => Err(EcsError::client(format!(
            "Unable to find the task definition '{arn}'."
        ))),
    }
}

/// Whether any task of the service is still running or on its way.
fn has_live_tasks(tx: &dyn Tx, svc: &Service) -> OpResult<bool> {
    let filter = TaskFilter {
        cluster_arn: svc.cluster_arn.clone().unwrap_or_default(),
        group: Some(format!(
            "service:{}",
            svc.service_name.as_deref().unwrap_or("")
        )),
        ..Default::default()
    };
    let tasks = berth_store::all(|a, n| tx.tasks(&filter, a, n))?;
    Ok(tasks
        .iter()
        .any(|t| t.value.last_status.as_deref() != Some("STOPPED")))
}

pub fn delete(ctx: &Ctx, req: DeleteServiceRequest) -> OpResult<DeleteServiceResponse> {
    let Some(given) = req.service.clone() else {
        return Err(EcsError::invalid(
            "Missing required parameter in input: \"service\"",
        ));
    };
    ctx.store.write(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let Some(Versioned {
            version,
            value: mut svc,
        }) = lookup(ctx, tx, &cluster, &given)?
        else {
            return Err(not_found());
        };
        if svc.status.as_deref() != Some("ACTIVE") {
            return Err(not_active());
        }
        if svc.desired_count > 0 && req.force != Some(true) {
            return Err(EcsError::invalid(
                "The service cannot be stopped while it is scaled above 0.",
            ));
        }
        svc.desired_count = 0;
        for r in svc.current_service_revisions.iter_mut().flatten() {
            r.requested_task_count = 0;
        }
        let status = if has_live_tasks(tx, &svc)? {
            "DRAINING"
        } else {
            "INACTIVE"
        };
        svc.status = Some(status.into());
        tx.put_service(&svc, Expect::Version(version))?;
        Ok(DeleteServiceResponse { service: Some(svc) })
    })
}

pub fn describe(ctx: &Ctx, req: DescribeServicesRequest) -> OpResult<DescribeServicesResponse> {
    let given = req.services.clone().unwrap_or_default();
    if given.is_empty() || given.len() > DESCRIBE_MAX {
        return Err(EcsError::invalid(format!(
            "services must name between 1 and {DESCRIBE_MAX} services."
        )));
    }
    let include_tags = req
        .include
        .iter()
        .flatten()
        .any(|f| *f == ServiceField::Tags);
    ctx.store.read(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let cname = cluster.cluster_name.clone().unwrap_or_default();
        let mut services = vec![];
        let mut failures = vec![];
        for g in &given {
            let found = match lookup(ctx, tx, &cluster, g) {
                Ok(found) => found,
                Err(e) if e.kind == ErrorKind::ServiceNotFound => None,
                Err(e) => return Err(e),
            };
            match found {
                Some(s) => {
                    let mut s = s.value;
                    if !include_tags {
                        s.tags = None;
                    }
                    services.push(s);
                }
                None => failures.push(Failure {
                    arn: Some(service_arn(ctx, &cname, g).unwrap_or_else(|_| g.clone())),
                    reason: Some("MISSING".into()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeServicesResponse {
            services: Some(services),
            failures: Some(failures),
        })
    })
}

pub fn list(ctx: &Ctx, req: ListServicesRequest) -> OpResult<ListServicesResponse> {
    let limit = page_size(req.max_results, 100, 10)?;
    let after = decode_token(Operation::ListServices, req.next_token.as_deref())?;
    ctx.store.read(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let filter = ServiceFilter {
            cluster_arn: cluster.cluster_arn.clone().unwrap_or_default(),
            statuses: vec!["ACTIVE".into(), "DRAINING".into()],
            launch_type: req.launch_type.map(|l| l.as_str().to_string()),
            scheduling_strategy: req.scheduling_strategy.map(|s| s.as_str().to_string()),
        };
        let page = tx.services(&filter, after.as_deref(), limit)?;
        Ok(ListServicesResponse {
            service_arns: Some(
                page.items
                    .into_iter()
                    .filter_map(|s| s.value.service_arn)
                    .collect(),
            ),
            next_token: page.next.map(|k| encode_token(Operation::ListServices, &k)),
        })
    })
}

/// Checks the ARN list of a Describe of the service history.
fn history_arns(given: Option<&Vec<String>>, member: &str) -> OpResult<Vec<String>> {
    let arns = given.cloned().unwrap_or_default();
    if arns.is_empty() || arns.len() > DESCRIBE_HISTORY_MAX {
        return Err(EcsError::invalid(format!(
            "{member} must have between 1 and {DESCRIBE_HISTORY_MAX} ARNs."
        )));
    }
    Ok(arns)
}

fn missing(arn: &str) -> Failure {
    Failure {
        arn: Some(arn.to_string()),
        reason: Some("MISSING".into()),
        detail: None,
    }
}

pub fn describe_deployments(
    ctx: &Ctx,
    req: DescribeServiceDeploymentsRequest,
) -> OpResult<DescribeServiceDeploymentsResponse> {
    let arns = history_arns(
        req.service_deployment_arns.as_ref(),
        "serviceDeploymentArns",
    )?;
    ctx.store.read(|tx| {
        let mut found = vec![];
        let mut failures = vec![];
        for arn in &arns {
            match tx.service_deployment(arn)? {
                Some(d) => found.push(d.value),
                None => failures.push(missing(arn)),
            }
        }
        Ok(DescribeServiceDeploymentsResponse {
            service_deployments: Some(found),
            failures: Some(failures),
        })
    })
}

pub fn describe_revisions(
    ctx: &Ctx,
    req: DescribeServiceRevisionsRequest,
) -> OpResult<DescribeServiceRevisionsResponse> {
    let arns = history_arns(req.service_revision_arns.as_ref(), "serviceRevisionArns")?;
    ctx.store.read(|tx| {
        let mut found = vec![];
        let mut failures = vec![];
        for arn in &arns {
            match tx.service_revision(arn)? {
                Some(r) => found.push(r.value),
                None => failures.push(missing(arn)),
            }
        }
        Ok(DescribeServiceRevisionsResponse {
            service_revisions: Some(found),
            failures: Some(failures),
        })
    })
}

/// Newest first; a page resumes after the ARN in the token.
pub fn list_deployments(
    ctx: &Ctx,
    req: ListServiceDeploymentsRequest,
) -> OpResult<ListServiceDeploymentsResponse> {
    let Some(given) = req.service.clone() else {
        return Err(EcsError::invalid(
            "Missing required parameter in input: \"service\"",
        ));
    };
    let limit = page_size(req.max_results, 100, 20)?;
    let after = decode_token(Operation::ListServiceDeployments, req.next_token.as_deref())?;
    // A service ARN names its cluster; a bare name is looked up in `cluster`.
    let cluster_param = match Arn::parse(&given).ok().map(|a| a.resource) {
        Some(Resource::Service { cluster, .. }) if req.cluster.is_none() => Some(cluster),
        _ => req.cluster.clone(),
    };
    ctx.store.read(|tx| {
        let name = cluster_name(ctx, cluster_param.as_deref())?;
        let Some(cluster) = tx.cluster(&name)? else {
            return Err(EcsError::cluster_not_found());
        };
        let Some(svc) = lookup(ctx, tx, &cluster.value, &given)? else {
            return Err(not_found());
        };
        let svc_arn = svc.value.service_arn.clone().unwrap_or_default();
        let mut all: Vec<ServiceDeployment> =
            berth_store::all(|a, n| tx.service_deployments(&svc_arn, a, n))?
                .into_iter()
                .map(|d| d.value)
                .filter(|d| {
                    let statuses = req.status.as_deref().unwrap_or_default();
                    statuses.is_empty() || d.status.is_some_and(|s| statuses.contains(&s))
                })
                .filter(|d| {
                    let at = d.created_at.unwrap_or(0.0);
                    req.created_at.as_ref().is_none_or(|c| {
                        c.after.is_none_or(|a| at >= a) && c.before.is_none_or(|b| at <= b)
                    })
                })
                .collect();
        all.sort_by(|a, b| {
            b.created_at
                .unwrap_or(0.0)
                .total_cmp(&a.created_at.unwrap_or(0.0))
                .then_with(|| b.service_deployment_arn.cmp(&a.service_deployment_arn))
        });
        let start = match &after {
            Some(key) => match all
                .iter()
                .position(|d| d.service_deployment_arn.as_deref() == Some(key.as_str()))
            {
                Some(i) => i + 1,
                None => all.len(),
            },
            None => 0,
        };
        let page: Vec<ServiceDeployment> = all.iter().skip(start).take(limit).cloned().collect();
        let next = (start + page.len() < all.len())
            .then(|| page.last().and_then(|d| d.service_deployment_arn.clone()))
            .flatten()
            .map(|k| encode_token(Operation::ListServiceDeployments, &k));
        Ok(ListServiceDeploymentsResponse {
            service_deployments: Some(
                page.into_iter()
                    .map(|d| ServiceDeploymentBrief {
                        service_deployment_arn: d.service_deployment_arn,
                        service_arn: d.service_arn,
                        cluster_arn: d.cluster_arn,
                        started_at: d.started_at,
                        created_at: d.created_at,
                        finished_at: d.finished_at,
                        target_service_revision_arn: d.target_service_revision.and_then(|r| r.arn),
                        status: d.status,
                        status_reason: d.status_reason,
                    })
                    .collect(),
            ),
            next_token: next,
        })
    })
}

/// How many services of a cluster are in `status`.
pub(super) fn count(tx: &dyn Tx, cluster_arn: &str, status: &str) -> OpResult<i32> {
    let filter = ServiceFilter {
        cluster_arn: cluster_arn.to_string(),
        statuses: vec![status.to_string()],
        ..Default::default()
    };
    let n = berth_store::all(|a, n| tx.services(&filter, a, n))?.len();
    Ok(i32::try_from(n).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_ecs_shapes() {
        let d = digits(19);
        assert_eq!(d.len(), 19);
        assert!(d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0'));
        let id = deployment_id();
        assert_eq!(id.len(), 21);
        assert_eq!(id.as_bytes()[8], b'-');
    }

    #[test]
    fn breaker_threshold_is_half_between_3_and_200() {
        assert_eq!(breaker_threshold(0), 3);
        assert_eq!(breaker_threshold(10), 5);
        assert_eq!(breaker_threshold(11), 6);
        assert_eq!(breaker_threshold(1000), 200);
    }

    #[test]
    fn deployment_configuration_defaults_and_ranges() {
        let dc = deployment_configuration(None, None).ok();
        let dc = dc.as_ref();
        assert_eq!(dc.and_then(|d| d.maximum_percent), Some(200));
        assert_eq!(dc.and_then(|d| d.minimum_healthy_percent), Some(100));
        for (min, max, ok) in [
            (Some(0), Some(100), true),
            (Some(101), None, false),
            (Some(-1), None, false),
            (None, Some(99), false),
            (None, Some(2001), false),
        ] {
            let given = DeploymentConfiguration {
                minimum_healthy_percent: min,
                maximum_percent: max,
                ..Default::default()
            };
            assert_eq!(
                deployment_configuration(Some(&given), None).is_ok(),
                ok,
                "{min:?} {max:?}"
            );
        }
    }
}

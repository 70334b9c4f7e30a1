//! The scheduling reconciler: places pending tasks on instances with room,
//! launches instances for what does not fit, and pushes each instance its
//! desired set when it changed.

use crate::agents::{self, load_record, save_record, InstanceRecord};
use crate::usage::{registered, task_needs};
use crate::{new_secret, AgentLink, Ctx};
use berth_model::ecs::*;
use berth_model::EcsError;
use berth_protocol::ServerMessage;
use berth_store::{Expect, TaskFilter, Tx, Versioned};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

/// How the scheduler launches instances.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The URL agents connect back to.
    pub server_url: String,
    /// The program that runs the agent (berth itself) and the arguments before `agent`.
    pub agent_program: PathBuf,
    pub agent_args: Vec<String>,
    /// Where instances keep their agent state.
    pub state_root: PathBuf,
    /// Memory held back on every instance for the OS and the agent, in MiB.
    pub reserved_memory_mib: u64,
    /// Only instance types of this architecture (the host's, for local instances).
    pub architecture: Option<berth_catalog::Architecture>,
}

/// An instance to launch, as the scheduler asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    pub instance_id: String,
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub gpus: u32,
    pub subnet: String,
    pub now: f64,
    /// The agent to start on it: program, arguments, environment.
    pub agent_program: PathBuf,
    pub agent_args: Vec<String>,
    pub agent_env: Vec<(String, String)>,
}

/// Where instances come from: the seam to an instance provider.
pub trait Launcher: Send + Sync {
    /// Launches an instance; its agent connects back on its own.
    fn launch(&self, request: &LaunchRequest) -> Result<(), String>;
    /// The availability zone a subnet is in.
    fn availability_zone(&self, subnet: &str) -> String;
    /// A new instance id.
    fn new_instance_id(&self) -> String;
    /// An address for an `awsvpc` task on an instance's network (its ENI).
    /// Providers without task networks say so, and such tasks share their
    /// instance's network.
    fn allocate_task_address(
        &self,
        instance_id: &str,
        task_id: &str,
    ) -> Result<berth_protocol::TaskAddress, String> {
        let _ = (instance_id, task_id);
        Err("this instance provider gives tasks no addresses of their own".into())
    }
    /// Gives a task's address back (idempotent).
    fn release_task_address(&self, instance_id: &str, task_id: &str) -> Result<(), String> {
        let _ = (instance_id, task_id);
        Ok(())
    }
}

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub placed: usize,
    pub launched: Vec<String>,
    pub waiting: usize,
}

/// The requirements used when a capacity provider gives none: ECS Managed
/// Instances' general-purpose default of at least 2 vCPUs and 4 GiB.
fn default_requirements() -> InstanceRequirementsRequest {
    InstanceRequirementsRequest {
        v_cpu_count: Some(VCpuCountRangeRequest {
            min: Some(2),
            max: Some(8),
        }),
        memory_mib: Some(MemoryMiBRequest {
            min: Some(4096),
            max: Some(32768),
        }),
        ..Default::default()
    }
}

pub struct Scheduler {
    pub ctx: Arc<Ctx>,
    pub provider: Arc<dyn Launcher>,
    pub link: Arc<dyn AgentLink>,
    pub config: SchedulerConfig,
    /// What each instance was last sent and its generation, so a desired set
    /// goes out only when it changed, with a generation above the last one.
    sent: std::sync::Mutex<BTreeMap<String, (String, u64)>>,
}

struct Slot {
    record: InstanceRecord,
    connected: bool,
    active: bool,
    free_cpu: i64,
    free_mem: i64,
}

impl Scheduler {
    pub fn new(
        ctx: Arc<Ctx>,
        provider: Arc<dyn Launcher>,
        link: Arc<dyn AgentLink>,
        config: SchedulerConfig,
    ) -> Self {
        Self {
            ctx,
            provider,
            link,
            config,
            sent: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Forgets what an instance was sent (it reconnected and got a fresh set).
    pub fn forget(&self, instance_id: &str) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.remove(instance_id);
        }
    }

    /// One reconcile pass over every cluster.
    pub fn tick(&self) -> Result<TickReport, EcsError> {
        let mut report = TickReport::default();
        // Addresses of stopped tasks go back to the provider.
        for (instance_id, task_arn) in agents::pending_releases(&self.ctx)? {
            let task_id = task_arn.rsplit('/').next().unwrap_or("");
            match self.provider.release_task_address(&instance_id, task_id) {
                Ok(()) => agents::released(&self.ctx, &instance_id, &task_arn)?,
                Err(e) => tracing::warn!(
                    instance_id,
                    task_id,
                    error = e,
                    "cannot release a task address"
                ),
            }
        }
        let clusters = self.ctx.store.read(|tx| {
            let all = berth_store::all(|a, n| tx.clusters(a, n))?;
            Ok::<_, EcsError>(
                all.into_iter()
                    .filter(|c| c.status.as_deref() == Some("ACTIVE"))
                    .collect::<Vec<_>>(),
            )
        })?;
        for c in clusters {
            self.tick_cluster(&c, &mut report)?;
        }
        Ok(report)
    }

    fn tick_cluster(&self, cluster: &Cluster, report: &mut TickReport) -> Result<(), EcsError> {
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut connected: Vec<String> = vec![];
        let mut unplaced: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
        self.ctx.store.write(|tx| {
            let mut slots = self.slots(tx, &cluster_arn)?;
            let pending = pending_tasks(tx, &cluster_arn)?;
            for Versioned {
                version,
                value: mut t,
            } in pending
            {
                let (cpu, mem) = task_needs(&t);
                let cp = t.capacity_provider_name.clone().unwrap_or_default();
                // Binpack on memory: the fitting instance with the least memory left.
                let pick = slots
                    .iter_mut()
                    .filter(|s| {
                        s.active
                            && s.connected
                            && s.record.capacity_provider == cp
                            && s.free_cpu >= i64::from(cpu)
                            && s.free_mem >= mem as i64
                    })
                    .min_by_key(|s| (s.free_mem, s.record.instance_id.clone()));
                match pick {
                    Some(slot) => {
                        slot.free_cpu -= i64::from(cpu);
                        slot.free_mem -= mem as i64;
                        if agents::is_awsvpc(&t) {
                            let task_id = t
                                .task_arn
                                .as_deref()
                                .unwrap_or("")
                                .rsplit('/')
                                .next()
                                .unwrap_or("");
                            match self
                                .provider
                                .allocate_task_address(&slot.record.instance_id, task_id)
                            {
                                Ok(a) => {
                                    agents::assign_address(tx, &mut t, &slot.record.instance_id, a)?
                                }
                                Err(e) => tracing::warn!(
                                    task = task_id,
                                    error = e,
                                    "the task shares its instance's network"
                                ),
                            }
                        }
                        t.container_instance_arn = Some(slot.record.container_instance_arn.clone());
                        t.availability_zone = Some(slot.record.availability_zone.clone());
                        t.last_status = Some("PENDING".into());
                        t.version += 1;
                        tx.put_task(&t, Expect::Version(version))?;
                        dirty.insert(slot.record.instance_id.clone());
                        report.placed += 1;
                    }
                    None => {
                        // Capacity on its way (instances still registering) counts before launching more.
                        let coming = slots.iter_mut().find(|s| {
                            !s.active
                                && s.record.capacity_provider == cp
                                && s.free_cpu >= i64::from(cpu)
                                && s.free_mem >= mem as i64
                        });
                        match coming {
                            Some(s) => {
                                s.free_cpu -= i64::from(cpu);
                                s.free_mem -= mem as i64;
                            }
                            None => unplaced.entry(cp).or_default().push((cpu, mem)),
                        }
                        report.waiting += 1;
                    }
                }
            }
            for s in &slots {
                if dirty.contains(&s.record.instance_id) {
                    agents::refresh_counts(tx, &s.record)?;
                }
                if s.connected && s.active {
                    connected.push(s.record.instance_id.clone());
                }
            }
            Ok::<_, EcsError>(())
        })?;
        for (cp, needs) in unplaced {
            for id in self.launch_for(cluster, &cp, needs)? {
                report.launched.push(id);
            }
        }
        for id in connected {
            self.push_if_changed(&id)?;
        }
        Ok(())
    }

    fn slots(&self, tx: &dyn Tx, cluster_arn: &str) -> Result<Vec<Slot>, EcsError> {
        let mut out = vec![];
        for status in ["ACTIVE", "REGISTERING"] {
            let list =
                berth_store::all(|a, n| tx.container_instances(cluster_arn, Some(status), a, n))?;
            for ci in list {
                let ci = ci.value;
                let Some(id) = ci.ec2_instance_id.clone() else {
                    continue;
                };
                let Some(record) = load_record(tx, &id)? else {
                    continue;
                };
                let (reg_cpu, reg_mem) = match registered(&ci) {
                    (0, 0) => self.planned_capacity(&record),
                    other => other,
                };
                let (mut used_cpu, mut used_mem) = (0i64, 0i64);
                for t in agents::instance_tasks(tx, &record)? {
                    let (c, m) = task_needs(&t);
                    used_cpu += i64::from(c);
                    used_mem += m as i64;
                }
                out.push(Slot {
                    connected: ci.agent_connected,
                    active: status == "ACTIVE",
                    free_cpu: reg_cpu - used_cpu,
                    free_mem: reg_mem - used_mem,
                    record,
                });
            }
        }
        Ok(out)
    }

    /// What an instance will register, before its agent says so.
    fn planned_capacity(&self, r: &InstanceRecord) -> (i64, i64) {
        match self.ctx.catalog.get(&r.instance_type) {
            Some(t) => (
                i64::from(t.cpu_units()),
                t.memory_mib.saturating_sub(self.config.reserved_memory_mib) as i64,
            ),
            None => (0, 0),
        }
    }

    /// Launches instances for tasks that fit nowhere: first-fit decreasing
    /// over new instances of the cheapest type that holds the largest task.
    fn launch_for(
        &self,
        cluster: &Cluster,
        cp_name: &str,
        mut needs: Vec<(u32, u64)>,
    ) -> Result<Vec<String>, EcsError> {
        let cp = self
            .ctx
            .store
            .read(|tx| Ok::<_, EcsError>(tx.capacity_provider(cp_name)?))?;
        let Some(cp) = cp.map(|v| v.value) else {
            return Ok(vec![]);
        };
        let template = cp
            .managed_instances_provider
            .as_ref()
            .and_then(|m| m.instance_launch_template.clone())
            .unwrap_or_default();
        let reqs = template
            .instance_requirements
            .clone()
            .unwrap_or_else(default_requirements);
        let region = self.ctx.arns.region.clone();
        let options = berth_catalog::MatchOptions {
            architecture: self.config.architecture,
            ..Default::default()
        };
        let candidates = self
            .ctx
            .catalog
            .matching_with(&region, &reqs, &options)
            .unwrap_or_default();
        let subnets = template
            .network_configuration
            .as_ref()
            .and_then(|n| n.subnets.clone())
            .unwrap_or_default();
        needs.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        let reserve = self.config.reserved_memory_mib;
        let mut bins: Vec<(String, i64, i64)> = vec![];
        for (cpu, mem) in needs {
            if let Some(b) = bins
                .iter_mut()
                .find(|b| b.1 >= i64::from(cpu) && b.2 >= mem as i64)
            {
                b.1 -= i64::from(cpu);
                b.2 -= mem as i64;
                continue;
            }
            let Some(t) =
                self.ctx
                    .catalog
                    .cheapest_fitting(&region, &candidates, cpu, mem + reserve, 0)
            else {
                tracing::warn!(
                    capacity_provider = cp_name,
                    cpu,
                    memory = mem,
                    "no instance type of the capacity provider fits the task"
                );
                continue;
            };
            bins.push((
                t.name.clone(),
                i64::from(t.cpu_units()) - i64::from(cpu),
                t.memory_mib as i64 - reserve as i64 - mem as i64,
            ));
        }
        let mut launched = vec![];
        for (i, (instance_type, _, _)) in bins.into_iter().enumerate() {
            let subnet = subnets
                .get(i % subnets.len().max(1))
                .cloned()
                .unwrap_or_default();
            launched.push(self.launch(cluster, cp_name, &instance_type, &subnet)?);
        }
        Ok(launched)
    }

    fn launch(
        &self,
        cluster: &Cluster,
        cp: &str,
        instance_type: &str,
        subnet: &str,
    ) -> Result<String, EcsError> {
        let Some(t) = self.ctx.catalog.get(instance_type) else {
            return Err(EcsError::server(format!(
                "{instance_type} is not in the catalog"
            )));
        };
        let instance_id = self.provider.new_instance_id();
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let cluster_name = cluster.cluster_name.clone().unwrap_or_default();
        let ci_id = uuid::Uuid::new_v4().simple().to_string();
        let ci_arn = self.ctx.arns.container_instance(&cluster_name, &ci_id);
        let az = self.provider.availability_zone(subnet);
        let join_token = new_secret();
        let now = self.ctx.now();
        let record = InstanceRecord {
            instance_id: instance_id.clone(),
            cluster_arn: cluster_arn.clone(),
            container_instance_arn: ci_arn.clone(),
            capacity_provider: cp.to_string(),
            instance_type: instance_type.to_string(),
            availability_zone: az.clone(),
            join_token_digest: Some(crate::digest(&join_token)),
            credential_digest: None,
            generation: 0,
            launched_at: now,
        };
        let ci = ContainerInstance {
            container_instance_arn: Some(ci_arn),
            ec2_instance_id: Some(instance_id.clone()),
            capacity_provider_name: Some(cp.to_string()),
            version: 1,
            status: Some("REGISTERING".into()),
            agent_connected: false,
            attributes: Some(vec![
                Attribute {
                    name: Some("ecs.instance-type".into()),
                    value: Some(instance_type.into()),
                    ..Default::default()
                },
                Attribute {
                    name: Some("ecs.availability-zone".into()),
                    value: Some(az.clone()),
                    ..Default::default()
                },
            ]),
            registered_resources: Some(vec![]),
            remaining_resources: Some(vec![]),
            tags: Some(vec![]),
            ..Default::default()
        };
        self.ctx.store.write(|tx| {
            save_record(tx, &record)?;
            tx.put_container_instance(&cluster_arn, &ci, Expect::Absent)?;
            Ok::<_, EcsError>(())
        })?;
        let mut args = self.config.agent_args.clone();
        args.extend([
            "agent".to_string(),
            "--server".into(),
            self.config.server_url.clone(),
            "--instance-id".into(),
            instance_id.clone(),
            "--state-dir".into(),
            self.config
                .state_root
                .join(&instance_id)
                .display()
                .to_string(),
            "--instance-type".into(),
            instance_type.to_string(),
            "--availability-zone".into(),
            az.clone(),
            "--cpu".into(),
            t.cpu_units().to_string(),
            "--memory".into(),
            t.memory_mib
                .saturating_sub(self.config.reserved_memory_mib)
                .to_string(),
        ]);
        let spec = LaunchRequest {
            instance_id: instance_id.clone(),
            instance_type: instance_type.to_string(),
            vcpus: t.vcpus,
            memory_mib: t.memory_mib,
            gpus: t.whole_gpus(),
            subnet: subnet.to_string(),
            now,
            agent_program: self.config.agent_program.clone(),
            agent_args: args,
            agent_env: vec![("BERTH_JOIN_TOKEN".into(), join_token)],
        };
        if let Err(e) = self.provider.launch(&spec) {
            tracing::warn!(instance_id, instance_type, error = %e, "launch failed");
            self.ctx.store.write(|tx| {
                if let Some(Versioned {
                    version,
                    value: mut ci,
                }) = tx.container_instance(&record.container_instance_arn)?
                {
                    ci.status = Some("REGISTRATION_FAILED".into());
                    ci.status_reason = Some(e.to_string());
                    ci.version += 1;
                    tx.put_container_instance(&cluster_arn, &ci, Expect::Version(version))?;
                }
                Ok::<_, EcsError>(())
            })?;
            return Err(EcsError::server(format!(
                "launching {instance_type} failed: {e}"
            )));
        }
        tracing::info!(
            instance_id,
            instance_type,
            availability_zone = az,
            "launched instance"
        );
        Ok(instance_id)
    }

    /// Sends an instance its desired set, with a new generation, when it
    /// differs from what it was last sent.
    ///
    /// Generations only have to grow along one connection (an agent starts
    /// counting again on each): the hello stores and sends one, and each push
    /// after it takes the next, counted in memory, so a push costs no write.
    pub fn push_if_changed(&self, instance_id: &str) -> Result<(), EcsError> {
        let current = self.ctx.store.read(|tx| {
            let Some(r) = load_record(tx, instance_id)? else {
                return Ok::<_, EcsError>(None);
            };
            Ok(Some((r.generation, agents::desired(tx, &r)?)))
        })?;
        let Some((stored, tasks)) = current else {
            return Ok(());
        };
        let fingerprint = serde_json::to_string(&tasks).unwrap_or_default();
        let Ok(mut sent) = self.sent.lock() else {
            return Ok(());
        };
        let last = sent.get(instance_id);
        if last.is_some_and(|(f, _)| *f == fingerprint) {
            return Ok(());
        }
        let generation = last.map_or(stored, |(_, g)| (*g).max(stored)) + 1;
        if self
            .link
            .send(instance_id, ServerMessage::Desired { generation, tasks })
        {
            sent.insert(instance_id.to_string(), (fingerprint, generation));
        }
        Ok(())
    }
}

fn pending_tasks(tx: &dyn Tx, cluster_arn: &str) -> Result<Vec<Versioned<Task>>, EcsError> {
    let filter = TaskFilter {
        cluster_arn: cluster_arn.to_string(),
        desired_status: Some("RUNNING".into()),
        last_status: Some("PROVISIONING".into()),
        ..Default::default()
    };
    let mut out: Vec<Versioned<Task>> = berth_store::all(|a, n| tx.tasks(&filter, a, n))?
        .into_iter()
        .filter(|t| t.value.container_instance_arn.is_none())
        .collect();
    out.sort_by(|a, b| {
        a.value
            .created_at
            .unwrap_or(0.0)
            .total_cmp(&b.value.created_at.unwrap_or(0.0))
    });
    Ok(out)
}

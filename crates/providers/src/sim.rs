//! The sim provider: virtual instances in memory. No I/O, no clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::addr::AddressRange;
use crate::{
    availability_zone_for, format_instance_id, invalid_task_id, is_instance_id, valid_task_id,
    Instance, InstanceProvider, InstanceState, LaunchSpec, ProviderError, TaskAddress,
    DEFAULT_REGION,
};

/// How the sim provider behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seconds from launch until an instance reports `Running`.
    pub boot_delay: f64,
    /// Seconds from terminate until an instance reports `Terminated`
    /// (`ShuttingDown` meanwhile); 0 terminates at once.
    pub shutdown_delay: f64,
    /// Seed of the id generator ([`SimProvider::new_instance_id`]).
    pub seed: u64,
    /// The region availability zones are named after.
    pub region: String,
    /// Where private addresses come from (they are only reported, never used).
    pub range: AddressRange,
    /// Memory (MiB) all live instances may take together; `None` is unlimited.
    pub capacity_mib: Option<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            boot_delay: 0.0,
            shutdown_delay: 0.0,
            seed: 0,
            region: DEFAULT_REGION.into(),
            range: AddressRange::default(),
            capacity_mib: None,
        }
    }
}

#[derive(Debug, Clone)]
struct SimInstance {
    instance: Instance,
    spec: LaunchSpec,
    /// When a shutting-down instance becomes terminated.
    terminated_at: Option<f64>,
    /// Task addresses held on the instance, by task id (freed on terminate).
    tasks: BTreeMap<String, Ipv4Addr>,
    /// Its place in the launch order.
    seq: u64,
}

#[derive(Debug)]
struct Inner {
    rng: StdRng,
    now: f64,
    instances: BTreeMap<String, SimInstance>,
    /// Launch order, for `list`.
    order: Vec<String>,
    /// Instances still to change state on their own (`Pending`,
    /// `ShuttingDown`), by launch order: what [`SimProvider::settle`] walks.
    unsettled: BTreeMap<u64, String>,
    /// The addresses of live instances and of their tasks.
    used: BTreeSet<Ipv4Addr>,
    failures: VecDeque<String>,
    cursor: Option<Ipv4Addr>,
}

/// Virtual instances for simulation: launch, terminate and list in memory.
///
/// Time moves only through the caller: [`LaunchSpec::now`] and
/// [`SimProvider::advance`]. An instance is `Pending` until
/// `now >= launched_at + boot_delay`, then `Running`; terminating makes it
/// `ShuttingDown` until `shutdown_delay` has passed, then `Terminated`.
///
/// Task addresses come from [`SimConfig::range`] like instance addresses
/// (one round-robin cursor, never an address a live instance or task holds)
/// and are freed when their instance is terminated.
pub struct SimProvider {
    config: SimConfig,
    inner: Mutex<Inner>,
}

impl SimProvider {
    pub fn new(config: SimConfig) -> Self {
        let inner = Inner {
            rng: StdRng::seed_from_u64(config.seed),
            now: 0.0,
            instances: BTreeMap::new(),
            order: vec![],
            unsettled: BTreeMap::new(),
            used: BTreeSet::new(),
            failures: VecDeque::new(),
            cursor: None,
        };
        Self {
            config,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next id of the seeded sequence: the same seed gives the same ids.
    pub fn new_instance_id(&self) -> String {
        format_instance_id(self.lock().rng.random::<u128>())
    }

    /// Makes the next launch fail with `reason` (failures queue up, one per launch).
    pub fn fail_next_launch(&self, reason: impl Into<String>) {
        self.lock().failures.push_back(reason.into());
    }

    /// The latest time the provider has seen.
    pub fn now(&self) -> f64 {
        self.lock().now
    }

    /// Moves time to `now` (never backwards) and applies the state changes
    /// due by then; returns them, in launch order.
    pub fn advance(&self, now: f64) -> Vec<(String, InstanceState)> {
        let mut inner = self.lock();
        if now > inner.now {
            inner.now = now;
        }
        Self::settle(&mut inner, self.config.boot_delay)
    }

    fn settle(inner: &mut Inner, boot_delay: f64) -> Vec<(String, InstanceState)> {
        let now = inner.now;
        let mut changes = vec![];
        let Inner {
            instances,
            unsettled,
            used,
            ..
        } = inner;
        let mut settled = vec![];
        for (seq, id) in unsettled.iter() {
            let Some(si) = instances.get_mut(id) else {
                settled.push(*seq);
                continue;
            };
            let next = match si.instance.state {
                InstanceState::Pending if now >= si.instance.launched_at + boot_delay => {
                    InstanceState::Running
                }
                InstanceState::ShuttingDown if si.terminated_at.is_some_and(|t| now >= t) => {
                    InstanceState::Terminated
                }
                s => s,
            };
            if next != si.instance.state {
                si.instance.state = next;
                changes.push((id.clone(), next));
                settled.push(*seq);
                // Its task addresses went with `terminate`.
                if next == InstanceState::Terminated {
                    if let Some(ip) = si.instance.private_ip {
                        used.remove(&ip);
                    }
                }
            }
        }
        for seq in settled {
            unsettled.remove(&seq);
        }
        changes
    }

    /// One instance.
    pub fn get(&self, instance_id: &str) -> Option<Instance> {
        self.lock()
            .instances
            .get(instance_id)
            .map(|si| si.instance.clone())
    }

    /// The spec an instance was launched with (to start its agent in-process, say).
    pub fn spec(&self, instance_id: &str) -> Option<LaunchSpec> {
        self.lock()
            .instances
            .get(instance_id)
            .map(|si| si.spec.clone())
    }
}

impl Default for SimProvider {
    fn default() -> Self {
        Self::new(SimConfig::default())
    }
}

impl InstanceProvider for SimProvider {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Instance, ProviderError> {
        let id = &spec.instance_id;
        let invalid = |reason: &str| ProviderError::InvalidSpec {
            instance_id: id.clone(),
            reason: reason.into(),
        };
        if !is_instance_id(id) {
            return Err(invalid(
                "the instance id must be i- and 17 lowercase hex digits",
            ));
        }
        if spec.vcpus == 0 {
            return Err(invalid("an instance needs at least one vCPU"));
        }
        if spec.memory_mib == 0 {
            return Err(invalid("an instance needs memory"));
        }
        let mut inner = self.lock();
        if inner.instances.contains_key(id) {
            return Err(ProviderError::AlreadyExists {
                instance_id: id.clone(),
            });
        }
        if let Some(reason) = inner.failures.pop_front() {
            return Err(ProviderError::LaunchFailed {
                instance_id: id.clone(),
                reason,
            });
        }
        let live = || {
            inner
                .instances
                .values()
                .filter(|si| si.instance.state.is_live())
        };
        if let Some(capacity_mib) = self.config.capacity_mib {
            let used: u64 = live().map(|si| si.spec.memory_mib).sum();
            let available_mib = capacity_mib.saturating_sub(used);
            if spec.memory_mib > available_mib {
                return Err(ProviderError::InsufficientCapacity {
                    instance_id: id.clone(),
                    requested_mib: spec.memory_mib,
                    available_mib,
                    capacity_mib,
                });
            }
        }
        let addr = self
            .config
            .range
            .allocate(&inner.used, inner.cursor)
            .ok_or_else(|| ProviderError::AddressesExhausted {
                instance_id: id.clone(),
                range: self.config.range.to_string(),
            })?;
        inner.cursor = Some(addr);
        if spec.now > inner.now {
            inner.now = spec.now;
        }
        let instance = Instance {
            instance_id: id.clone(),
            instance_type: spec.instance_type.clone(),
            availability_zone: self.availability_zone(&spec.subnet),
            private_ip: Some(addr),
            netns_path: None,
            cgroup: None,
            state: InstanceState::Pending,
            launched_at: spec.now,
        };
        let seq = inner.order.len() as u64;
        inner.instances.insert(
            id.clone(),
            SimInstance {
                instance,
                spec: spec.clone(),
                terminated_at: None,
                tasks: BTreeMap::new(),
                seq,
            },
        );
        inner.used.insert(addr);
        inner.order.push(id.clone());
        inner.unsettled.insert(seq, id.clone());
        Self::settle(&mut inner, self.config.boot_delay);
        inner
            .instances
            .get(id)
            .map(|si| si.instance.clone())
            .ok_or_else(|| ProviderError::LaunchFailed {
                instance_id: id.clone(),
                reason: "lost track of the instance".into(),
            })
    }

    fn terminate(&self, instance_id: &str) -> Result<(), ProviderError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let now = inner.now;
        let Some(si) = inner.instances.get_mut(instance_id) else {
            return Ok(());
        };
        if matches!(
            si.instance.state,
            InstanceState::Pending | InstanceState::Running
        ) {
            si.instance.state = InstanceState::ShuttingDown;
            si.terminated_at = Some(now + self.config.shutdown_delay);
            inner.unsettled.insert(si.seq, instance_id.to_string());
        }
        for addr in si.tasks.values() {
            inner.used.remove(addr);
        }
        si.tasks.clear();
        Self::settle(inner, self.config.boot_delay);
        Ok(())
    }

    fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        let inner = self.lock();
        Ok(inner
            .order
            .iter()
            .filter_map(|id| inner.instances.get(id).map(|si| si.instance.clone()))
            .collect())
    }

    fn availability_zone(&self, subnet: &str) -> String {
        availability_zone_for(&self.config.region, subnet)
    }

    fn allocate_task_address(
        &self,
        instance_id: &str,
        task_id: &str,
    ) -> Result<TaskAddress, ProviderError> {
        if !valid_task_id(task_id) {
            return Err(invalid_task_id(instance_id, task_id));
        }
        let range = self.config.range;
        let task_address = |address| TaskAddress {
            address,
            prefix: range.prefix(),
            gateway: range.gateway(),
        };
        let mut inner = self.lock();
        let Some(si) = inner.instances.get(instance_id) else {
            return Err(ProviderError::UnknownInstance {
                instance_id: instance_id.into(),
                reason: "does not exist".into(),
            });
        };
        if let Some(addr) = si.tasks.get(task_id) {
            return Ok(task_address(*addr));
        }
        let state = si.instance.state;
        if !matches!(state, InstanceState::Pending | InstanceState::Running) {
            return Err(ProviderError::UnknownInstance {
                instance_id: instance_id.into(),
                reason: format!("is {state}: it takes no new task addresses"),
            });
        }
        let addr = range.allocate(&inner.used, inner.cursor).ok_or_else(|| {
            ProviderError::AddressesExhausted {
                instance_id: instance_id.into(),
                range: range.to_string(),
            }
        })?;
        inner.cursor = Some(addr);
        inner.used.insert(addr);
        if let Some(si) = inner.instances.get_mut(instance_id) {
            si.tasks.insert(task_id.into(), addr);
        }
        Ok(task_address(addr))
    }

    fn release_task_address(&self, instance_id: &str, task_id: &str) -> Result<(), ProviderError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if let Some(addr) = inner
            .instances
            .get_mut(instance_id)
            .and_then(|si| si.tasks.remove(task_id))
        {
            inner.used.remove(&addr);
        }
        Ok(())
    }

    fn task_addresses(
        &self,
        instance_id: &str,
    ) -> Result<BTreeMap<String, TaskAddress>, ProviderError> {
        let range = self.config.range;
        Ok(self
            .lock()
            .instances
            .get(instance_id)
            .map(|si| {
                si.tasks
                    .iter()
                    .map(|(task, addr)| {
                        let ta = TaskAddress {
                            address: *addr,
                            prefix: range.prefix(),
                            gateway: range.gateway(),
                        };
                        (task.clone(), ta)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::AgentCommand;

    fn spec(id: &str, now: f64) -> LaunchSpec {
        LaunchSpec {
            instance_id: id.into(),
            instance_type: "m7i.large".into(),
            vcpus: 2,
            memory_mib: 8192,
            gpus: 0,
            subnet: "subnet-0123456789abcdef0".into(),
            now,
            agent: AgentCommand {
                program: "berth".into(),
                args: vec!["agent".into()],
                env: vec![],
            },
        }
    }

    #[test]
    fn seeded_ids_repeat() {
        let a = SimProvider::new(SimConfig {
            seed: 7,
            ..SimConfig::default()
        });
        let b = SimProvider::new(SimConfig {
            seed: 7,
            ..SimConfig::default()
        });
        let c = SimProvider::new(SimConfig {
            seed: 8,
            ..SimConfig::default()
        });
        let ids_a: Vec<_> = (0..5).map(|_| a.new_instance_id()).collect();
        let ids_b: Vec<_> = (0..5).map(|_| b.new_instance_id()).collect();
        assert_eq!(ids_a, ids_b);
        assert_ne!(ids_a[0], c.new_instance_id());
        assert!(ids_a.iter().all(|id| is_instance_id(id)));
        assert_eq!(
            ids_a
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            5
        );
    }

    #[test]
    fn boots_after_the_delay_and_shuts_down() {
        let p = SimProvider::new(SimConfig {
            boot_delay: 30.0,
            shutdown_delay: 5.0,
            ..SimConfig::default()
        });
        assert_eq!(p.name(), "sim");
        let id = p.new_instance_id();
        let i = p.launch(&spec(&id, 100.0)).unwrap();
        assert_eq!(i.state, InstanceState::Pending);
        assert_eq!(i.launched_at, 100.0);
        assert_eq!(i.availability_zone, "us-east-1d");
        assert_eq!(i.private_ip, Some(Ipv4Addr::new(10, 213, 0, 2)));
        assert!(p.advance(129.9).is_empty());
        assert_eq!(p.get(&id).unwrap().state, InstanceState::Pending);
        assert_eq!(p.advance(130.0), vec![(id.clone(), InstanceState::Running)]);
        // time does not go back
        assert!(p.advance(10.0).is_empty());
        assert_eq!(p.now(), 130.0);
        p.terminate(&id).unwrap();
        assert_eq!(p.get(&id).unwrap().state, InstanceState::ShuttingDown);
        p.terminate(&id).unwrap();
        assert!(p.advance(134.0).is_empty());
        assert_eq!(
            p.advance(135.0),
            vec![(id.clone(), InstanceState::Terminated)]
        );
        p.terminate(&id).unwrap();
        p.terminate("i-00000000000000000").unwrap();
        assert_eq!(p.list().unwrap().len(), 1);
        assert_eq!(p.spec(&id).unwrap().instance_type, "m7i.large");
    }

    #[test]
    fn no_delay_runs_and_terminates_at_once() {
        let p = SimProvider::default();
        let id = p.new_instance_id();
        assert_eq!(
            p.launch(&spec(&id, 1.0)).unwrap().state,
            InstanceState::Running
        );
        p.terminate(&id).unwrap();
        assert_eq!(p.get(&id).unwrap().state, InstanceState::Terminated);
    }

    #[test]
    fn injected_failures_and_capacity() {
        let p = SimProvider::new(SimConfig {
            capacity_mib: Some(16384),
            ..SimConfig::default()
        });
        p.fail_next_launch("no capacity in us-east-1d");
        let a = p.new_instance_id();
        match p.launch(&spec(&a, 0.0)) {
            Err(ProviderError::LaunchFailed {
                instance_id,
                reason,
            }) => {
                assert_eq!(instance_id, a);
                assert_eq!(reason, "no capacity in us-east-1d");
            }
            other => panic!("{other:?}"),
        }
        assert!(p.list().unwrap().is_empty());
        // the failure is used up
        p.launch(&spec(&a, 0.0)).unwrap();
        assert!(matches!(
            p.launch(&spec(&a, 0.0)),
            Err(ProviderError::AlreadyExists { .. })
        ));
        let b = p.new_instance_id();
        p.launch(&spec(&b, 0.0)).unwrap();
        let c = p.new_instance_id();
        assert!(matches!(
            p.launch(&spec(&c, 0.0)),
            Err(ProviderError::InsufficientCapacity {
                requested_mib: 8192,
                available_mib: 0,
                ..
            })
        ));
        p.terminate(&a).unwrap();
        let ci = p.launch(&spec(&c, 0.0)).unwrap();
        // addresses move on rather than reusing the one just released
        assert_eq!(ci.private_ip, Some(Ipv4Addr::new(10, 213, 0, 4)));
        assert!(matches!(
            p.launch(&spec("i-nope", 0.0)),
            Err(ProviderError::InvalidSpec { .. })
        ));
        let ids: Vec<_> = p
            .list()
            .unwrap()
            .into_iter()
            .map(|i| i.instance_id)
            .collect();
        assert_eq!(ids, [a, b, c]);
    }

    #[test]
    fn task_addresses_never_collide_and_are_freed_on_terminate() {
        // a /29: gateway .1, five addresses .2 ..= .6
        let p = SimProvider::new(SimConfig {
            range: "10.9.0.0/29".parse().unwrap(),
            ..SimConfig::default()
        });
        let a = p.new_instance_id();
        let b = p.new_instance_id();
        let ia = p.launch(&spec(&a, 0.0)).unwrap().private_ip.unwrap();
        let t1 = p.allocate_task_address(&a, "task-1").unwrap();
        assert_eq!(
            t1,
            TaskAddress {
                address: Ipv4Addr::new(10, 9, 0, 3),
                prefix: 29,
                gateway: Ipv4Addr::new(10, 9, 0, 1),
            }
        );
        // idempotent per (instance, task)
        assert_eq!(p.allocate_task_address(&a, "task-1").unwrap(), t1);
        // instances skip task addresses
        let ib = p.launch(&spec(&b, 0.0)).unwrap().private_ip.unwrap();
        assert_eq!(ib, Ipv4Addr::new(10, 9, 0, 4));
        let t2 = p.allocate_task_address(&b, "task-2").unwrap().address;
        let t3 = p.allocate_task_address(&a, "task-3").unwrap().address;
        let all: BTreeSet<_> = [ia, ib, t1.address, t2, t3].into_iter().collect();
        assert_eq!(all.len(), 5);
        // the range is full, for tasks and instances alike
        assert!(matches!(
            p.allocate_task_address(&b, "task-4"),
            Err(ProviderError::AddressesExhausted { .. })
        ));
        assert!(matches!(
            p.launch(&spec(&p.new_instance_id(), 0.0)),
            Err(ProviderError::AddressesExhausted { .. })
        ));
        // release is idempotent; the released address is the only free one
        p.release_task_address(&b, "task-2").unwrap();
        p.release_task_address(&b, "task-2").unwrap();
        p.release_task_address(&b, "never-allocated").unwrap();
        p.release_task_address("i-00000000000000000", "task-2")
            .unwrap();
        assert_eq!(p.allocate_task_address(&b, "task-4").unwrap().address, t2);
        assert_eq!(
            p.task_addresses(&a).unwrap().keys().collect::<Vec<_>>(),
            ["task-1", "task-3"]
        );
        // terminating frees the instance's tasks (and, once terminated, the instance)
        p.terminate(&a).unwrap();
        assert!(p.task_addresses(&a).unwrap().is_empty());
        assert!(matches!(
            p.allocate_task_address(&a, "task-5"),
            Err(ProviderError::UnknownInstance { .. })
        ));
        let t5 = p.allocate_task_address(&b, "task-5").unwrap().address;
        let t6 = p.allocate_task_address(&b, "task-6").unwrap().address;
        let t7 = p.allocate_task_address(&b, "task-7").unwrap().address;
        let freed: BTreeSet<_> = [t5, t6, t7].into_iter().collect();
        assert_eq!(freed, [ia, t1.address, t3].into_iter().collect());
        assert!(matches!(
            p.allocate_task_address("i-00000000000000000", "t"),
            Err(ProviderError::UnknownInstance { .. })
        ));
        assert!(matches!(
            p.allocate_task_address(&b, ""),
            Err(ProviderError::InvalidTask { .. })
        ));
        assert!(matches!(
            p.allocate_task_address(&b, "a b"),
            Err(ProviderError::InvalidTask { .. })
        ));
    }

    #[test]
    fn providers_without_task_addresses_say_so() {
        struct Bare;
        impl InstanceProvider for Bare {
            fn name(&self) -> &'static str {
                "bare"
            }
            fn launch(&self, _: &LaunchSpec) -> Result<Instance, ProviderError> {
                unimplemented!()
            }
            fn terminate(&self, _: &str) -> Result<(), ProviderError> {
                Ok(())
            }
            fn list(&self) -> Result<Vec<Instance>, ProviderError> {
                Ok(vec![])
            }
            fn availability_zone(&self, subnet: &str) -> String {
                subnet.into()
            }
        }
        let e = Bare.allocate_task_address("i-1", "t").unwrap_err();
        assert!(matches!(e, ProviderError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("bare provider"), "{e}");
        assert!(matches!(
            Bare.release_task_address("i-1", "t"),
            Err(ProviderError::Unsupported { .. })
        ));
        assert!(matches!(
            Bare.task_addresses("i-1"),
            Err(ProviderError::Unsupported { .. })
        ));
    }
}

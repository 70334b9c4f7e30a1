//! The cluster snapshot placement works on: the running container instances,
//! what is left on each, and the tasks already there.

use super::expr::{AgentVersion, Facts};
use std::collections::HashMap;

/// A host port protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A host port (of `host` or `bridge` network mode) with its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port number on the host; never 0 (a dynamic port reserves nothing).
    pub port: u16,
}

impl HostPort {
    /// A TCP port.
    pub fn tcp(port: u16) -> Self {
        HostPort {
            protocol: Protocol::Tcp,
            port,
        }
    }

    /// A UDP port.
    pub fn udp(port: u16) -> Self {
        HostPort {
            protocol: Protocol::Udp,
            port,
        }
    }

    fn key(self) -> u32 {
        (u32::from(self.protocol == Protocol::Udp) << 16) | u32::from(self.port)
    }

    fn from_key(k: u32) -> Self {
        HostPort {
            protocol: if k >> 16 == 1 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            port: (k & 0xffff) as u16,
        }
    }
}

/// One running container instance, as the control plane describes it to
/// placement. Only ACTIVE instances belong in a snapshot (DRAINING ones take no
/// new tasks); a disconnected agent is allowed and makes the instance fail
/// with `AGENT`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceSpec {
    /// The EC2-style instance id, `i-...`.
    pub ec2_instance_id: String,
    /// The container instance ARN.
    pub arn: String,
    /// Attributes, built-in (`ecs.instance-type`, `ecs.availability-zone`,
    /// `ecs.cpu-architecture`, `ecs.os-type`, ...) and custom (PutAttributes):
    /// name and optional value. A name given twice keeps its last value.
    pub attributes: Vec<(String, Option<String>)>,
    /// Whether the agent is connected.
    pub agent_connected: bool,
    /// The agent's version (`1.14.5`), if it reported one.
    pub agent_version: Option<String>,
    /// Registration time, seconds since the Unix epoch.
    pub registered_at: i64,
    /// CPU units not yet reserved by tasks.
    pub remaining_cpu: u32,
    /// Memory (MiB) not yet reserved by tasks.
    pub remaining_memory: u32,
    /// GPUs not assigned to a task, by id (`GPU-0`, ...), in the order to assign them.
    pub free_gpus: Vec<String>,
    /// Host ports reserved by the tasks already there.
    pub ports_in_use: Vec<HostPort>,
    /// The group of each task already on the instance (`family:web`,
    /// `service:api`, a RunTask `group`), one entry per task.
    pub task_groups: Vec<String>,
}

/// The registration-time facts of an instance, which placement never changes.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    pub ec2_instance_id: String,
    pub arn: String,
    /// Sorted by name, names unique.
    pub attributes: Vec<(String, Option<String>)>,
    pub agent_connected: bool,
    pub agent_version: Option<AgentVersion>,
    pub agent_version_text: Option<String>,
    pub registered_at: i64,
}

/// The cluster as placement sees it: instances (addressed by their index, the
/// order they were given in) and what is left on each. Placing a task updates
/// it, so a batch of tasks packs correctly.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub(crate) meta: Vec<Meta>,
    pub(crate) cpu: Vec<u32>,
    pub(crate) mem: Vec<u32>,
    pub(crate) gpus: Vec<Vec<String>>,
    /// Sorted port keys per instance.
    pub(crate) ports: Vec<Vec<u32>>,
    /// (group id, task count) per instance.
    pub(crate) groups_on: Vec<Vec<(u32, u32)>>,
    pub(crate) running: Vec<u32>,
    pub(crate) group_names: Vec<String>,
    pub(crate) group_ids: HashMap<String, u32>,
    /// The indexes of the fast placer, built on its first use and kept up to date.
    pub(crate) index: Option<Box<super::engine::Index>>,
}

impl Snapshot {
    /// A snapshot of `instances`; instance `i` of the placement results is `instances[i]`.
    pub fn new(instances: Vec<InstanceSpec>) -> Snapshot {
        let n = instances.len();
        let mut s = Snapshot {
            meta: Vec::with_capacity(n),
            cpu: Vec::with_capacity(n),
            mem: Vec::with_capacity(n),
            gpus: Vec::with_capacity(n),
            ports: Vec::with_capacity(n),
            groups_on: Vec::with_capacity(n),
            running: Vec::with_capacity(n),
            group_names: Vec::new(),
            group_ids: HashMap::new(),
            index: None,
        };
        for spec in instances {
            let mut attributes = spec.attributes;
            // Keep the last value of a repeated name: stable sort, then keep last of each run.
            attributes.sort_by(|a, b| a.0.cmp(&b.0));
            let mut dedup: Vec<(String, Option<String>)> = Vec::with_capacity(attributes.len());
            for a in attributes {
                match dedup.last_mut() {
                    Some(last) if last.0 == a.0 => *last = a,
                    _ => dedup.push(a),
                }
            }
            let mut ports: Vec<u32> = spec.ports_in_use.iter().map(|p| p.key()).collect();
            ports.sort_unstable();
            ports.dedup();
            let mut groups: Vec<(u32, u32)> = Vec::new();
            for g in &spec.task_groups {
                let id = s.intern(g);
                match groups.iter_mut().find(|(x, _)| *x == id) {
                    Some(e) => e.1 += 1,
                    None => groups.push((id, 1)),
                }
            }
            s.meta.push(Meta {
                ec2_instance_id: spec.ec2_instance_id,
                arn: spec.arn,
                attributes: dedup,
                agent_connected: spec.agent_connected,
                agent_version: spec.agent_version.as_deref().and_then(AgentVersion::parse),
                agent_version_text: spec.agent_version,
                registered_at: spec.registered_at,
            });
            s.cpu.push(spec.remaining_cpu);
            s.mem.push(spec.remaining_memory);
            s.gpus.push(spec.free_gpus);
            s.ports.push(ports);
            s.groups_on.push(groups);
            s.running
                .push(u32::try_from(spec.task_groups.len()).unwrap_or(u32::MAX));
        }
        s
    }

    pub(crate) fn intern(&mut self, group: &str) -> u32 {
        if let Some(&id) = self.group_ids.get(group) {
            return id;
        }
        let id = u32::try_from(self.group_names.len()).unwrap_or(u32::MAX);
        self.group_names.push(group.to_string());
        self.group_ids.insert(group.to_string(), id);
        id
    }

    /// How many instances the snapshot holds.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Whether the snapshot holds no instance.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Instance `i` as it stands now (with the tasks placed so far).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn instance(&self, i: usize) -> InstanceView<'_> {
        assert!(
            i < self.len(),
            "instance {i} of a snapshot of {}",
            self.len()
        );
        InstanceView { snap: self, i }
    }

    /// How many tasks of `group` run on instance `i`.
    pub(crate) fn group_count(&self, i: usize, group: u32) -> u32 {
        self.groups_on[i]
            .iter()
            .find(|(g, _)| *g == group)
            .map_or(0, |(_, n)| *n)
    }

    pub(crate) fn ports_free(&self, i: usize, ports: &[HostPort]) -> bool {
        let used = &self.ports[i];
        ports.iter().all(|p| used.binary_search(&p.key()).is_err())
    }

    pub(crate) fn attribute(&self, i: usize, name: &str) -> Option<Option<&str>> {
        let attrs = &self.meta[i].attributes;
        attrs
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|k| attrs[k].1.as_deref())
    }

    /// Records a task of `group` (interned) on instance `i`: reserves its
    /// resources and ports, assigns it the first `gpus` free GPUs (returned).
    /// The caller has checked that it fits.
    pub(crate) fn commit(
        &mut self,
        i: usize,
        group: u32,
        cpu: u32,
        mem: u32,
        gpus: u32,
        ports: &[HostPort],
    ) -> Vec<String> {
        let (old_cpu, old_mem) = (self.cpu[i], self.mem[i]);
        self.cpu[i] -= cpu;
        self.mem[i] -= mem;
        let taken: Vec<String> = self.gpus[i].drain(..gpus as usize).collect();
        for p in ports {
            let k = p.key();
            if let Err(at) = self.ports[i].binary_search(&k) {
                self.ports[i].insert(at, k);
            }
        }
        match self.groups_on[i].iter_mut().find(|(g, _)| *g == group) {
            Some(e) => e.1 += 1,
            None => self.groups_on[i].push((group, 1)),
        }
        self.running[i] += 1;
        if let Some(index) = self.index.as_deref_mut() {
            index.on_commit(i, group, old_cpu, old_mem, self.cpu[i], self.mem[i]);
        }
        taken
    }
}

/// A read-only view of one instance of a [`Snapshot`].
#[derive(Clone, Copy)]
pub struct InstanceView<'a> {
    snap: &'a Snapshot,
    i: usize,
}

impl<'a> InstanceView<'a> {
    /// The index of the instance in the snapshot.
    pub fn index(&self) -> usize {
        self.i
    }
    /// The container instance ARN.
    pub fn arn(&self) -> &'a str {
        &self.snap.meta[self.i].arn
    }
    /// CPU units left.
    pub fn remaining_cpu(&self) -> u32 {
        self.snap.cpu[self.i]
    }
    /// Memory (MiB) left.
    pub fn remaining_memory(&self) -> u32 {
        self.snap.mem[self.i]
    }
    /// GPU ids not assigned yet.
    pub fn free_gpus(&self) -> &'a [String] {
        &self.snap.gpus[self.i]
    }
    /// Host ports in use, sorted (TCP first).
    pub fn ports_in_use(&self) -> impl Iterator<Item = HostPort> + 'a {
        self.snap.ports[self.i]
            .iter()
            .map(|&k| HostPort::from_key(k))
    }
    /// (group, number of tasks) of the tasks on the instance.
    pub fn task_groups(&self) -> impl Iterator<Item = (&'a str, u32)> + 'a {
        let snap = self.snap;
        snap.groups_on[self.i]
            .iter()
            .map(move |&(g, n)| (snap.group_names[g as usize].as_str(), n))
    }
    /// The attribute `name`: `None` if the instance lacks it, `Some(None)` if
    /// it has it without a value.
    pub fn attribute(&self, name: &str) -> Option<Option<&'a str>> {
        self.snap.attribute(self.i, name)
    }
    /// The EC2 instance id.
    pub fn ec2_instance_id(&self) -> &'a str {
        &self.snap.meta[self.i].ec2_instance_id
    }
    /// The agent's version as reported.
    pub fn agent_version_text(&self) -> Option<&'a str> {
        self.snap.meta[self.i].agent_version_text.as_deref()
    }
}

impl Facts for InstanceView<'_> {
    fn attribute(&self, name: &str) -> Option<Option<&str>> {
        InstanceView::attribute(self, name)
    }
    fn ec2_instance_id(&self) -> &str {
        InstanceView::ec2_instance_id(self)
    }
    fn agent_connected(&self) -> bool {
        self.snap.meta[self.i].agent_connected
    }
    fn agent_version(&self) -> Option<AgentVersion> {
        self.snap.meta[self.i].agent_version
    }
    fn registered_at(&self) -> i64 {
        self.snap.meta[self.i].registered_at
    }
    fn running_tasks_count(&self) -> u32 {
        self.snap.running[self.i]
    }
    fn any_task_group(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.snap.groups_on[self.i]
            .iter()
            .any(|&(g, _)| f(&self.snap.group_names[g as usize]))
    }
}

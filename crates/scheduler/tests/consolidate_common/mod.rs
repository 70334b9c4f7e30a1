//! What the consolidation tests share.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use berth_scheduler::consolidate::{Action, Destination, Instance, Task};

/// The fleet after `actions` at `now`: retired instances gone, moved tasks
/// on their destinations (which count as changed at `now`), new instances
/// launched at `now`.
pub fn apply(instances: &[Instance], actions: &[Action], now: u64, tag: &str) -> Vec<Instance> {
    let retired: BTreeSet<&str> = actions.iter().flat_map(|a| a.retired()).collect();
    let tasks: BTreeMap<&str, &Task> = instances
        .iter()
        .flat_map(|i| i.tasks.iter().map(|t| (t.id.as_str(), t)))
        .collect();
    let mut out: Vec<Instance> = instances
        .iter()
        .filter(|i| !retired.contains(i.id.as_str()))
        .cloned()
        .collect();
    for (ai, a) in actions.iter().enumerate() {
        for (k, n) in a.launches().iter().enumerate() {
            out.push(Instance {
                id: format!("new-{tag}-{ai}-{k}"),
                instance_type: n.instance_type.clone(),
                hourly_cost: n.hourly_cost,
                allocatable: n.allocatable,
                availability_zone: n.availability_zone.clone(),
                architecture: n.architecture,
                launched_at: now,
                stable_since: now,
                disrupting: false,
                tasks: Vec::new(),
            });
        }
        for m in a.moves() {
            let id = match &m.to {
                Destination::Instance(id) => id.clone(),
                Destination::New(k) => format!("new-{tag}-{ai}-{k}"),
            };
            let inst = out.iter_mut().find(|i| i.id == id).unwrap();
            inst.tasks.push(tasks[m.task.as_str()].clone());
            inst.stable_since = now;
        }
    }
    out
}

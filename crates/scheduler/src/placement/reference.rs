//! The plain placement: every instance checked for every task. The oracle of
//! the tests and the baseline of the benchmark; see the module docs for the
//! semantics both implementations share.

use super::{
    diagnose, first_failure, split_strategies, Demand, Failure, PlaceOptions, Placement, Resource,
    Rng, Snapshot, SpreadField, Strategy, MAX_STRATEGIES,
};
use std::collections::HashMap;

pub(super) fn place(snap: &mut Snapshot, tasks: &[Demand], opts: &PlaceOptions) -> Vec<Placement> {
    let mut rng = Rng(opts.seed);
    let mut out = Vec::with_capacity(tasks.len());
    for d in tasks {
        let group = snap.intern(&d.group);
        let strategies = if d.strategies.is_empty() {
            &opts.default_strategies[..]
        } else {
            &d.strategies[..]
        };
        let (ordering, random) = split_strategies(strategies);
        let ordering = &ordering[..ordering.len().min(MAX_STRATEGIES)];
        // Tasks of the group per attribute value, for each spread attribute.
        let counts: Vec<HashMap<Option<&str>, u64>> = ordering
            .iter()
            .map(|s| {
                let mut m = HashMap::new();
                if let Strategy::Spread(SpreadField::Attribute(a)) = s {
                    for i in 0..snap.len() {
                        let v = snap.attribute(i, a).map(|v| v.unwrap_or(""));
                        *m.entry(v).or_insert(0) += u64::from(snap.group_count(i, group));
                    }
                }
                m
            })
            .collect();
        let mut best: Option<[u64; MAX_STRATEGIES]> = None;
        let mut ties: Vec<usize> = Vec::new();
        for i in 0..snap.len() {
            if first_failure(snap, i, d, group).is_some() {
                continue;
            }
            let mut key = [0u64; MAX_STRATEGIES];
            for (k, s) in ordering.iter().enumerate() {
                key[k] = match s {
                    Strategy::Binpack(Resource::Cpu) => u64::from(snap.cpu[i]),
                    Strategy::Binpack(Resource::Memory) => u64::from(snap.mem[i]),
                    Strategy::Spread(SpreadField::InstanceId) => {
                        u64::from(snap.group_count(i, group))
                    }
                    Strategy::Spread(SpreadField::Attribute(a)) => {
                        let v = snap.attribute(i, a).map(|v| v.unwrap_or(""));
                        counts[k].get(&v).copied().unwrap_or(0)
                    }
                    Strategy::Random => 0,
                };
            }
            match best {
                Some(b) if key > b => {}
                Some(b) if key == b => ties.push(i),
                _ => {
                    best = Some(key);
                    ties.clear();
                    ties.push(i);
                }
            }
        }
        drop(counts);
        let chosen = match ties.len() {
            0 => None,
            n if random => Some(ties[rng.below(n)]),
            _ => Some(ties[0]),
        };
        out.push(match chosen {
            Some(i) => Placement::Placed {
                instance: i,
                gpus: snap.commit(i, group, d.cpu, d.memory, d.gpus, &d.host_ports),
            },
            None => Placement::Failed(if snap.is_empty() {
                Failure {
                    reason: super::FailureReason::NoContainerInstances,
                    closest: None,
                }
            } else {
                diagnose(snap, d, group)
            }),
        });
    }
    out
}

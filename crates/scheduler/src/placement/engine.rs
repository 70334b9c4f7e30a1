//! The indexed placer (see the module docs, "Design"). Its results equal the
//! reference's for every input; the property tests hold it to that.

use super::{
    diagnose, split_strategies, Constraint, Demand, PlaceOptions, Placement, Resource, Rng,
    Snapshot, SpreadField, Strategy, MAX_STRATEGIES,
};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};

/// The indexes kept in a [`Snapshot`] once the indexed placer has run on it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    /// (remaining cpu, instance) and (remaining memory, instance).
    by_cpu: BTreeSet<(u32, u32)>,
    by_mem: BTreeSet<(u32, u32)>,
    /// Per spread attribute name.
    spread: HashMap<String, SpreadIndex>,
    /// Per `memberOf` expression source: the index in `member_sets` of the
    /// bit set of matching instances, `None` for expressions that depend on
    /// the tasks placed.
    member: HashMap<Box<str>, Option<usize>>,
    member_sets: Vec<Vec<u64>>,
    /// Per group: every instance before this position holds the group
    /// (positions in instance order); a spread-on-instanceId scan starts there.
    instance_cursor: HashMap<u32, Cell<usize>>,
    /// Every instance index, in order.
    all: Vec<u32>,
    /// Per group (of the tasks that use `distinctInstance` or spread on
    /// `instanceId`): the bit set of the instances that hold a task of it.
    holders: HashMap<u32, Vec<u64>>,
}

#[derive(Clone, Debug)]
struct SpreadIndex {
    /// Value id of each instance (the last id: "attribute missing").
    value_of: Vec<u32>,
    /// Instances of each value, in instance order.
    buckets: Vec<Vec<u32>>,
    /// Per group: tasks per value, and per value the cursor past the leading
    /// instances of the bucket that hold the group.
    per_group: HashMap<u32, GroupSpread>,
}

#[derive(Clone, Debug)]
struct GroupSpread {
    counts: Vec<u64>,
    cursors: Vec<Cell<usize>>,
}

impl Index {
    fn build(snap: &Snapshot) -> Index {
        let mut ix = Index {
            all: (0..snap.len() as u32).collect(),
            ..Index::default()
        };
        for i in 0..snap.len() {
            let k = i as u32;
            ix.by_cpu.insert((snap.cpu[i], k));
            ix.by_mem.insert((snap.mem[i], k));
        }
        ix
    }

    pub(crate) fn on_commit(
        &mut self,
        i: usize,
        group: u32,
        old_cpu: u32,
        old_mem: u32,
        new_cpu: u32,
        new_mem: u32,
    ) {
        let k = i as u32;
        if old_cpu != new_cpu {
            self.by_cpu.remove(&(old_cpu, k));
            self.by_cpu.insert((new_cpu, k));
        }
        if old_mem != new_mem {
            self.by_mem.remove(&(old_mem, k));
            self.by_mem.insert((new_mem, k));
        }
        for s in self.spread.values_mut() {
            if let Some(g) = s.per_group.get_mut(&group) {
                g.counts[s.value_of[i] as usize] += 1;
            }
        }
        if let Some(bits) = self.holders.get_mut(&group) {
            bits[i / 64] |= 1 << (i % 64);
        }
    }
}

fn spread_index(snap: &Snapshot, attr: &str) -> SpreadIndex {
    let mut ids: HashMap<Option<&str>, u32> = HashMap::new();
    let mut values: Vec<Option<&str>> = Vec::new();
    let mut value_of = Vec::with_capacity(snap.len());
    for i in 0..snap.len() {
        let v = snap.attribute(i, attr).map(|v| v.unwrap_or(""));
        let id = *ids.entry(v).or_insert_with(|| {
            values.push(v);
            (values.len() - 1) as u32
        });
        value_of.push(id);
    }
    let mut buckets = vec![Vec::new(); values.len()];
    for (i, &v) in value_of.iter().enumerate() {
        buckets[v as usize].push(i as u32);
    }
    SpreadIndex {
        value_of,
        buckets,
        per_group: HashMap::new(),
    }
}

fn group_spread(snap: &Snapshot, s: &SpreadIndex, group: u32) -> GroupSpread {
    let mut counts = vec![0u64; s.buckets.len()];
    for i in 0..snap.len() {
        counts[s.value_of[i] as usize] += u64::from(snap.group_count(i, group));
    }
    GroupSpread {
        counts,
        cursors: vec![Cell::new(0); s.buckets.len()],
    }
}

/// One task's needs, resolved against the snapshot and its indexes.
struct Task<'d> {
    d: &'d Demand,
    group: u32,
    distinct: bool,
    /// The instances holding the group, when the index keeps them.
    holders: Option<&'d [u64]>,
}

impl Task<'_> {
    /// Whether instance `i` holds a task of the group.
    #[inline]
    fn held(&self, snap: &Snapshot, i: usize) -> bool {
        match self.holders {
            Some(bits) => bits[i / 64] & (1 << (i % 64)) != 0,
            None => snap.group_count(i, self.group) > 0,
        }
    }
}

/// Per-run scratch buffers, reused across tasks so the hot loop allocates nothing.
#[derive(Default)]
struct Scratch {
    /// Indexes into `Index::member_sets` of the bit sets the task must match.
    sets: Vec<usize>,
    /// Constraints (indexes into the demand's) evaluated per candidate.
    dynamic: Vec<usize>,
    /// The best key so far and the instances that have it.
    best: Option<Key>,
    ties: Vec<usize>,
    /// Value ids of the primary spread attribute, in visiting order.
    order: Vec<u32>,
}

type Key = [u64; MAX_STRATEGIES];

impl Scratch {
    fn consider(&mut self, i: usize, key: Key) {
        match self.best {
            Some(b) if key > b => {}
            Some(b) if key == b => self.ties.push(i),
            _ => {
                self.best = Some(key);
                self.ties.clear();
                self.ties.push(i);
            }
        }
    }

    /// The chosen instance among the best: the lowest index, or a random one.
    fn take(&mut self, random: bool, rng: &mut Rng) -> Option<usize> {
        if self.ties.is_empty() {
            return None;
        }
        if random {
            self.ties.sort_unstable();
            Some(self.ties[rng.below(self.ties.len())])
        } else {
            self.ties.iter().copied().min()
        }
    }
}

pub(super) fn place(snap: &mut Snapshot, tasks: &[Demand], opts: &PlaceOptions) -> Vec<Placement> {
    if snap.index.is_none() {
        snap.index = Some(Box::new(Index::build(snap)));
    }
    let mut rng = Rng(opts.seed);
    let mut out = Vec::with_capacity(tasks.len());
    let mut sc = Scratch::default();
    for d in tasks {
        let group = snap.intern(&d.group);
        let strategies = if d.strategies.is_empty() {
            &opts.default_strategies[..]
        } else {
            &d.strategies[..]
        };
        let (ordering, random) = split_strategies(strategies);
        let ordering = &ordering[..ordering.len().min(MAX_STRATEGIES)];
        prepare(snap, d, group, ordering, &mut sc);
        let distinct = d.constraints.contains(&Constraint::DistinctInstance);
        let task = Task {
            d,
            group,
            distinct,
            holders: snap
                .index
                .as_deref()
                .and_then(|ix| ix.holders.get(&group))
                .map(Vec::as_slice),
        };
        sc.best = None;
        sc.ties.clear();
        let chosen = choose(snap, &task, ordering, random, &mut rng, &mut sc);
        out.push(match chosen {
            Some(i) => Placement::Placed {
                instance: i,
                gpus: snap.commit(i, group, d.cpu, d.memory, d.gpus, &d.host_ports),
            },
            None => Placement::Failed(diagnose(snap, d, group)),
        });
    }
    out
}

/// Builds what the task needs from the indexes (bit sets, spread counts,
/// cursors) and fills the scratch lists of its constraints.
fn prepare(snap: &mut Snapshot, d: &Demand, group: u32, ordering: &[Strategy], sc: &mut Scratch) {
    sc.sets.clear();
    sc.dynamic.clear();
    let Some(mut ix) = snap.index.take() else {
        return;
    };
    for (k, c) in d.constraints.iter().enumerate() {
        let Constraint::MemberOf(e) = c else {
            continue;
        };
        let slot = match ix.member.get(e.source()) {
            Some(slot) => *slot,
            None => {
                let slot = if e.depends_on_tasks() {
                    None
                } else {
                    let mut bits = vec![0u64; snap.len().div_ceil(64)];
                    for (i, word) in (0..snap.len()).map(|i| (i, i / 64)) {
                        if e.matches(&snap.instance(i)) {
                            bits[word] |= 1 << (i % 64);
                        }
                    }
                    ix.member_sets.push(bits);
                    Some(ix.member_sets.len() - 1)
                };
                ix.member.insert(e.source().into(), slot);
                slot
            }
        };
        match slot {
            Some(s) => sc.sets.push(s),
            None => sc.dynamic.push(k),
        }
    }
    for s in ordering {
        if let Strategy::Spread(SpreadField::Attribute(a)) = s {
            if !ix.spread.contains_key(a.as_str()) {
                let si = spread_index(snap, a);
                ix.spread.insert(a.clone(), si);
            }
            if let Some(si) = ix.spread.get_mut(a.as_str()) {
                if !si.per_group.contains_key(&group) {
                    let gs = group_spread(snap, si, group);
                    si.per_group.insert(group, gs);
                }
            }
        }
    }
    if ordering.first() == Some(&Strategy::Spread(SpreadField::InstanceId)) {
        ix.instance_cursor
            .entry(group)
            .or_insert_with(|| Cell::new(0));
    }
    let by_instance = ordering.contains(&Strategy::Spread(SpreadField::InstanceId));
    if (by_instance || d.constraints.contains(&Constraint::DistinctInstance))
        && !ix.holders.contains_key(&group)
    {
        let mut bits = vec![0u64; snap.len().div_ceil(64)];
        for i in 0..snap.len() {
            if snap.group_count(i, group) > 0 {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        ix.holders.insert(group, bits);
    }
    snap.index = Some(ix);
}

/// Whether instance `i` can take the task (every check of `first_failure`).
#[inline]
fn fits(snap: &Snapshot, ix: &Index, i: usize, t: &Task<'_>, sc: &Scratch) -> bool {
    let d = t.d;
    if snap.cpu[i] < d.cpu
        || snap.mem[i] < d.memory
        || (snap.gpus[i].len() as u64) < u64::from(d.gpus)
        || !snap.meta[i].agent_connected
    {
        return false;
    }
    for &s in &sc.sets {
        if ix.member_sets[s][i / 64] & (1 << (i % 64)) == 0 {
            return false;
        }
    }
    if !d.host_ports.is_empty() && !snap.ports_free(i, &d.host_ports) {
        return false;
    }
    if t.distinct && t.held(snap, i) {
        return false;
    }
    if !sc.dynamic.is_empty() {
        let view = snap.instance(i);
        for &k in &sc.dynamic {
            if let Constraint::MemberOf(e) = &t.d.constraints[k] {
                if !e.matches(&view) {
                    return false;
                }
            }
        }
    }
    true
}

/// The spread data each strategy of `ordering` reads (for attribute spreads).
type Resolved<'a> = [Option<(&'a SpreadIndex, &'a GroupSpread)>; MAX_STRATEGIES];

/// The keys of `strategies` (whose spread data is `res`) for instance `i`.
fn keys(
    snap: &Snapshot,
    i: usize,
    group: u32,
    strategies: &[Strategy],
    res: &[Option<(&SpreadIndex, &GroupSpread)>],
) -> Key {
    let mut key = [0u64; MAX_STRATEGIES];
    for (k, s) in strategies.iter().enumerate() {
        key[k] = match s {
            Strategy::Binpack(Resource::Cpu) => u64::from(snap.cpu[i]),
            Strategy::Binpack(Resource::Memory) => u64::from(snap.mem[i]),
            Strategy::Spread(SpreadField::InstanceId) => u64::from(snap.group_count(i, group)),
            Strategy::Spread(SpreadField::Attribute(_)) => match res[k] {
                Some((si, gs)) => gs.counts[si.value_of[i] as usize],
                None => 0,
            },
            Strategy::Random => 0,
        };
    }
    key
}

fn choose(
    snap: &Snapshot,
    t: &Task<'_>,
    ordering: &[Strategy],
    random: bool,
    rng: &mut Rng,
    sc: &mut Scratch,
) -> Option<usize> {
    let ix = snap.index.as_deref()?;
    let mut res: Resolved<'_> = [None; MAX_STRATEGIES];
    for (k, s) in ordering.iter().enumerate() {
        if let Strategy::Spread(SpreadField::Attribute(a)) = s {
            res[k] = ix
                .spread
                .get(a.as_str())
                .and_then(|si| si.per_group.get(&t.group).map(|gs| (si, gs)));
        }
    }
    let rest = ordering.get(1..).unwrap_or(&[]);
    let only_first = rest.is_empty() && !random;
    match ordering.first() {
        None if !random => {
            return (0..snap.len()).find(|&i| fits(snap, ix, i, t, sc));
        }
        Some(Strategy::Binpack(r)) => {
            let (set, need) = match r {
                Resource::Cpu => (&ix.by_cpu, t.d.cpu),
                Resource::Memory => (&ix.by_mem, t.d.memory),
            };
            let mut class = None;
            for &(k, i) in set.range((need, 0)..) {
                if class.is_some_and(|c| c != k) {
                    break;
                }
                let i = i as usize;
                if !fits(snap, ix, i, t, sc) {
                    continue;
                }
                if only_first {
                    return Some(i);
                }
                class = Some(k);
                sc.consider(i, keys(snap, i, t.group, rest, &res[1..]));
            }
            return sc.take(random, rng);
        }
        Some(Strategy::Spread(SpreadField::Attribute(_))) => {
            if let Some((si, gs)) = res[0] {
                return spread_attribute(snap, ix, t, si, gs, rest, &res[1..], random, rng, sc);
            }
        }
        Some(Strategy::Spread(SpreadField::InstanceId)) if only_first => {
            if let Some(cursor) = ix.instance_cursor.get(&t.group) {
                if let Some(i) = first_without_group(snap, ix, t, sc, cursor, &ix.all) {
                    return Some(i);
                }
            }
        }
        _ => {}
    }
    // Everything else: every instance.
    for i in 0..snap.len() {
        if fits(snap, ix, i, t, sc) {
            sc.consider(i, keys(snap, i, t.group, ordering, &res));
        }
    }
    sc.take(random, rng)
}

/// Spread over an attribute first: the values from the fewest tasks of the
/// group; within the first class of equally loaded values that has a feasible
/// instance, the best by the remaining strategies.
#[allow(clippy::too_many_arguments)]
fn spread_attribute(
    snap: &Snapshot,
    ix: &Index,
    t: &Task<'_>,
    si: &SpreadIndex,
    gs: &GroupSpread,
    rest: &[Strategy],
    res: &[Option<(&SpreadIndex, &GroupSpread)>],
    random: bool,
    rng: &mut Rng,
    sc: &mut Scratch,
) -> Option<usize> {
    let mut order = std::mem::take(&mut sc.order);
    order.clear();
    order.extend(0..si.buckets.len() as u32);
    order.sort_unstable_by_key(|&v| (gs.counts[v as usize], v));
    let then_instance = rest == [Strategy::Spread(SpreadField::InstanceId)] && !random;
    let mut start = 0;
    let mut chosen = None;
    while start < order.len() {
        let load = gs.counts[order[start] as usize];
        let mut end = start;
        while end < order.len() && gs.counts[order[end] as usize] == load {
            end += 1;
        }
        for &v in &order[start..end] {
            let bucket = &si.buckets[v as usize];
            if rest.is_empty() && !random {
                if let Some(&i) = bucket.iter().find(|&&i| fits(snap, ix, i as usize, t, sc)) {
                    sc.consider(i as usize, [0; MAX_STRATEGIES]);
                }
                continue;
            }
            if then_instance {
                let cursor = &gs.cursors[v as usize];
                if let Some(i) = first_without_group(snap, ix, t, sc, cursor, bucket) {
                    sc.consider(i, [0; MAX_STRATEGIES]);
                    continue;
                }
            }
            for &i in bucket {
                let i = i as usize;
                if fits(snap, ix, i, t, sc) {
                    sc.consider(i, keys(snap, i, t.group, rest, res));
                }
            }
        }
        chosen = sc.take(random, rng);
        if chosen.is_some() {
            break;
        }
        start = end;
    }
    sc.order = order;
    chosen
}

/// The first instance of `items` (instance order) that holds no task of the
/// group and fits, starting at `cursor`, which this advances past the leading
/// instances that hold the group (they never stop holding it: a batch only
/// adds tasks).
fn first_without_group(
    snap: &Snapshot,
    ix: &Index,
    t: &Task<'_>,
    sc: &Scratch,
    cursor: &Cell<usize>,
    items: &[u32],
) -> Option<usize> {
    let len = items.len();
    let mut p = cursor.get();
    let mut leading = true;
    for &i in items.get(p..).unwrap_or(&[]) {
        let i = i as usize;
        if t.held(snap, i) {
            if leading {
                p += 1;
            }
            continue;
        }
        if leading {
            leading = false;
            cursor.set(p.min(len));
        }
        if fits(snap, ix, i, t, sc) {
            return Some(i);
        }
    }
    if leading {
        cursor.set(p.min(len));
    }
    None
}

//! berth's planner: greedy by value per dollar, right-sizing, and a bounded,
//! seeded local search (see the module docs of `plan`).

use super::bound::{self, Lambdas};
use super::problem::{Inst, Problem, DIMS};
use super::XorShift;

/// Costs closer than this are equal.
const EPS: f64 = 1e-9;
/// The local search picks its "worst instance" among this many.
const WORST: usize = 8;

/// Per-type instance limits (the spot diversity cap) and usage.
struct Limits<'a> {
    limit: Option<&'a [u32]>,
    per_type: Vec<u32>,
}

impl Limits<'_> {
    fn room(&self, t: usize) -> u32 {
        match self.limit {
            None => u32::MAX,
            Some(l) => l[t].saturating_sub(self.per_type[t]),
        }
    }
}

/// Plans the problem's placeable tasks.
pub(crate) fn solve(p: &Problem, limit: Option<&[u32]>) -> Vec<Inst> {
    let mut lim = Limits {
        limit,
        per_type: vec![0; p.cands.len()],
    };
    let mut by_cost: Vec<usize> = (0..p.cands.len()).collect();
    by_cost.sort_by(|&a, &b| {
        p.cands[a]
            .cost
            .total_cmp(&p.cands[b].cost)
            .then(p.cands[a].vcpus.cmp(&p.cands[b].vcpus))
            .then_with(|| p.cands[a].name.cmp(&p.cands[b].name))
    });
    let mut pool: Vec<u32> = p.groups.iter().map(|g| g.count).collect();
    let mut fleet = Vec::new();
    greedy(p, &mut pool, &mut lim, &mut fleet, true);
    for inst in fleet.iter_mut() {
        right_size(p, inst, &mut lim, &by_cost);
    }
    search(p, &mut fleet, &mut lim, &by_cost);
    fleet
}

/// Fills one instance of type `t` from `pool` into `out`; returns its value.
///
/// A batch greedy: the group with the best value per size, size measured
/// against the *residual* capacity (so a dimension running short makes the
/// groups that need it look big), takes half of what still fits of it, and
/// again, until nothing fits.
fn fill(p: &Problem, t: usize, pool: &[u32], values: &[f64], out: &mut [u32]) -> f64 {
    let mut resid = p.cands[t].cap;
    out.fill(0);
    let mut total = 0.0;
    loop {
        let mut best_g = usize::MAX;
        let mut best_score = 0.0;
        for (g, grp) in p.groups.iter().enumerate() {
            if out[g] >= pool[g] || !p.fits(g, t) {
                continue;
            }
            let r = &grp.req;
            if r[0] > resid[0] || r[1] > resid[1] || r[2] > resid[2] {
                continue;
            }
            let mut size = 0.0;
            for d in 0..DIMS {
                if r[d] > 0 {
                    size += r[d] as f64 / resid[d] as f64;
                }
            }
            let score = values[g] / size;
            if best_g == usize::MAX || score > best_score {
                best_g = g;
                best_score = score;
            }
        }
        if best_g == usize::MAX {
            break;
        }
        let r = &p.groups[best_g].req;
        let mut max_fit = u64::from(pool[best_g] - out[best_g]);
        for d in 0..DIMS {
            if let Some(q) = resid[d].checked_div(r[d]) {
                max_fit = max_fit.min(q);
            }
        }
        let take = max_fit.div_ceil(2).max(1);
        for d in 0..DIMS {
            resid[d] -= take * r[d];
        }
        out[best_g] += take as u32;
        total += take as f64 * values[best_g];
    }
    total
}

/// Launches instances for `pool` until it is empty: each step takes the type
/// whose one-instance fill is worth the most per dollar, and as many copies
/// of that fill as the pool allows.
fn greedy(
    p: &Problem,
    pool: &mut [u32],
    lim: &mut Limits<'_>,
    fleet: &mut Vec<Inst>,
    thorough: bool,
) {
    let n = p.groups.len();
    let mut values = vec![0.0; n];
    let mut scratch = vec![0u32; n];
    let mut best = vec![0u32; n];
    let mut lam = Lambdas::new();
    let mut first = thorough;
    while pool.iter().any(|&k| k > 0) {
        bound::values(p, pool, &mut lam, first, &mut values);
        first = false;
        let mut choice: Option<(usize, f64, f64)> = None;
        for (t, c) in p.cands.iter().enumerate() {
            if lim.room(t) == 0 {
                continue;
            }
            let v = fill(p, t, pool, &values, &mut scratch);
            if v <= 0.0 {
                continue;
            }
            let eff = v / c.cost;
            let better = match choice {
                None => true,
                Some((_, be, bv)) => {
                    eff > be * (1.0 + 1e-9) || (eff >= be * (1.0 - 1e-9) && v > bv * (1.0 + 1e-9))
                }
            };
            if better {
                choice = Some((t, eff, v));
                best.copy_from_slice(&scratch);
            }
        }
        let Some((t, _, _)) = choice else {
            if lim.limit.is_some() {
                // Every type that fits is at its spot-diversity cap: the cap yields.
                lim.limit = None;
                continue;
            }
            break;
        };
        let mut copies = lim.room(t);
        for g in 0..n {
            if let Some(q) = pool[g].checked_div(best[g]) {
                copies = copies.min(q);
            }
        }
        let copies = copies.max(1);
        for g in 0..n {
            pool[g] -= copies * best[g];
        }
        lim.per_type[t] += copies;
        for _ in 0..copies {
            fleet.push(Inst {
                ty: t,
                counts: best.clone(),
            });
        }
    }
}

/// The cheapest type (cheaper than `below`) that holds `counts`, with room
/// under the limits (`released` types count one instance freed).
fn cheapest_holding(
    p: &Problem,
    counts: &[u32],
    lim: &Limits<'_>,
    by_cost: &[usize],
    below: f64,
    released: &[usize],
) -> Option<usize> {
    let used = p.used(counts);
    for &t in by_cost {
        let c = &p.cands[t];
        if c.cost >= below - EPS {
            return None;
        }
        if (0..DIMS).any(|d| used[d] > c.cap[d]) {
            continue;
        }
        let room = lim.room(t) as usize + released.iter().filter(|&&r| r == t).count();
        if room == 0 {
            continue;
        }
        if p.holds(t, counts, &used) {
            return Some(t);
        }
    }
    None
}

/// Moves the instance to the cheapest type that holds its tasks.
fn right_size(p: &Problem, inst: &mut Inst, lim: &mut Limits<'_>, by_cost: &[usize]) -> bool {
    let cur = p.cands[inst.ty].cost;
    match cheapest_holding(p, &inst.counts, lim, by_cost, cur, &[inst.ty]) {
        Some(t) if t != inst.ty => {
            lim.per_type[inst.ty] -= 1;
            lim.per_type[t] += 1;
            inst.ty = t;
            true
        }
        _ => false,
    }
}

fn fleet_cost(p: &Problem, fleet: &[Inst]) -> f64 {
    fleet.iter().map(|i| p.cands[i.ty].cost).sum()
}

/// Removes the instances at `idx` (any order).
fn remove(fleet: &mut Vec<Inst>, lim: &mut Limits<'_>, idx: &mut [usize]) {
    idx.sort_unstable_by(|a, b| b.cmp(a));
    for &i in idx.iter() {
        let inst = fleet.swap_remove(i);
        lim.per_type[inst.ty] -= 1;
    }
}

/// A fixed number of moves, chosen by the seeded xorshift; each is kept only
/// when it makes the fleet cheaper.
fn search(p: &Problem, fleet: &mut Vec<Inst>, lim: &mut Limits<'_>, by_cost: &[usize]) {
    let iterations = p.options.search_iterations;
    if iterations == 0 || fleet.is_empty() {
        return;
    }
    let mut rng = XorShift::new(p.options.seed);
    let all: Vec<u32> = p.groups.iter().map(|g| g.count).collect();
    let mut values = vec![0.0; p.groups.len()];
    bound::values(p, &all, &mut Lambdas::new(), false, &mut values);
    let mut ranked: Vec<(f64, usize)> = Vec::new();
    for _ in 0..iterations {
        if fleet.is_empty() {
            break;
        }
        // The least useful instances per dollar are where the waste is.
        ranked.clear();
        ranked.extend(fleet.iter().enumerate().map(|(i, inst)| {
            let v: f64 = inst
                .counts
                .iter()
                .enumerate()
                .map(|(g, &k)| f64::from(k) * values[g])
                .sum();
            (v / p.cands[inst.ty].cost, i)
        }));
        let k = WORST.min(ranked.len());
        if k < ranked.len() {
            ranked.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
        ranked[..k].sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let pick = |rng: &mut XorShift| {
            if rng.below(2) == 0 {
                ranked[rng.below(k)].1
            } else {
                rng.below(fleet.len())
            }
        };
        let i = pick(&mut rng);
        let mv = rng.below(4);
        let mut others = Vec::new();
        if mv > 0 {
            let want = if mv >= 2 { 1 + rng.below(2) } else { 1 };
            for _ in 0..want * 3 {
                let j = pick(&mut rng);
                if j != i && !others.contains(&j) {
                    others.push(j);
                }
                if others.len() == want {
                    break;
                }
            }
            if others.is_empty() {
                continue;
            }
        }
        match mv {
            0 => drain(p, fleet, i, lim, by_cost, &mut rng),
            1 => merge(p, fleet, i, others[0], lim, by_cost),
            3 => {
                others.push(i);
                exact(p, fleet, &mut others, lim, by_cost);
            }
            _ => {
                others.push(i);
                repack(p, fleet, &mut others, lim, by_cost);
            }
        }
    }
    // A problem small enough is re-planned exactly as a whole: the moves
    // above touch at most three instances, and a cheaper fleet may need every
    // task divided anew (four small instances into one larger and one small).
    let mut every: Vec<usize> = (0..fleet.len()).collect();
    exact(p, fleet, &mut every, lim, by_cost);
    for inst in fleet.iter_mut() {
        right_size(p, inst, lim, by_cost);
    }
}

/// Moves what it can of instance `i` into the others' spare room; keeps the
/// move if `i` empties or what is left fits a cheaper type.
fn drain(
    p: &Problem,
    fleet: &mut Vec<Inst>,
    i: usize,
    lim: &mut Limits<'_>,
    by_cost: &[usize],
    rng: &mut XorShift,
) {
    let n = fleet.len();
    let mut left = fleet[i].counts.clone();
    let mut free: Vec<[u64; DIMS]> = fleet
        .iter()
        .map(|inst| {
            let used = p.used(&inst.counts);
            let cap = p.cands[inst.ty].cap;
            [cap[0] - used[0], cap[1] - used[1], cap[2] - used[2]]
        })
        .collect();
    let mut adds: Vec<(usize, usize, u32)> = Vec::new();
    let start = rng.below(n);
    for (g, left_g) in left.iter_mut().enumerate() {
        if *left_g == 0 {
            continue;
        }
        let r = p.groups[g].req;
        for jj in 0..n {
            let j = (start + jj) % n;
            if j == i || !p.fits(g, fleet[j].ty) {
                continue;
            }
            let mut k = u64::from(*left_g);
            for d in 0..DIMS {
                if let Some(q) = free[j][d].checked_div(r[d]) {
                    k = k.min(q);
                }
            }
            if k == 0 {
                continue;
            }
            for d in 0..DIMS {
                free[j][d] -= k * r[d];
            }
            adds.push((j, g, k as u32));
            *left_g -= k as u32;
            if *left_g == 0 {
                break;
            }
        }
    }
    if adds.is_empty() {
        return;
    }
    let cost_i = p.cands[fleet[i].ty].cost;
    let empty = left.iter().all(|&k| k == 0);
    let new_type = if empty {
        None
    } else {
        match cheapest_holding(p, &left, lim, by_cost, cost_i, &[fleet[i].ty]) {
            Some(t) => Some(t),
            None => return,
        }
    };
    for &(j, g, k) in &adds {
        fleet[j].counts[g] += k;
    }
    match new_type {
        None => remove(fleet, lim, &mut [i]),
        Some(t) => {
            lim.per_type[fleet[i].ty] -= 1;
            lim.per_type[t] += 1;
            fleet[i] = Inst {
                ty: t,
                counts: left,
            };
        }
    }
}

/// Puts instances `i` and `j` on one type when that is cheaper than both.
fn merge(
    p: &Problem,
    fleet: &mut Vec<Inst>,
    i: usize,
    j: usize,
    lim: &mut Limits<'_>,
    by_cost: &[usize],
) {
    let both = p.cands[fleet[i].ty].cost + p.cands[fleet[j].ty].cost;
    let union: Vec<u32> = fleet[i]
        .counts
        .iter()
        .zip(&fleet[j].counts)
        .map(|(a, b)| a + b)
        .collect();
    let released = [fleet[i].ty, fleet[j].ty];
    if let Some(t) = cheapest_holding(p, &union, lim, by_cost, both, &released) {
        remove(fleet, lim, &mut [i, j]);
        lim.per_type[t] += 1;
        fleet.push(Inst {
            ty: t,
            counts: union,
        });
    }
}

/// The largest joint state space (Π (count + 1) over the groups) that
/// [`exact`] solves.
const MAX_STATES: usize = 2048;

/// Re-plans the tasks of the instances at `idx` optimally, by dynamic
/// programming over the vector of their task counts (every way of dividing
/// them into instances, each on the cheapest type that holds it), when that
/// space is small; keeps the result if cheaper.
fn exact(
    p: &Problem,
    fleet: &mut Vec<Inst>,
    idx: &mut [usize],
    lim: &mut Limits<'_>,
    by_cost: &[usize],
) {
    let n = p.groups.len();
    let mut union = vec![0u32; n];
    let mut before = 0.0;
    let mut released = Vec::with_capacity(idx.len());
    for &i in idx.iter() {
        for (g, &k) in fleet[i].counts.iter().enumerate() {
            union[g] += k;
        }
        before += p.cands[fleet[i].ty].cost;
        released.push(fleet[i].ty);
    }
    let groups: Vec<usize> = (0..n).filter(|&g| union[g] > 0).collect();
    let radix: Vec<usize> = groups.iter().map(|&g| union[g] as usize + 1).collect();
    let mut states = 1usize;
    for r in &radix {
        states = states.saturating_mul(*r);
        if states > MAX_STATES {
            return;
        }
    }
    let decode = |mut s: usize, out: &mut [u32]| {
        for (k, &g) in groups.iter().enumerate() {
            out[g] = (s % radix[k]) as u32;
            s /= radix[k];
        }
    };
    let mut side = vec![0u32; n];
    let mut cheap: Vec<Option<usize>> = Vec::with_capacity(states);
    for s in 0..states {
        decode(s, &mut side);
        cheap.push(if s == 0 {
            None
        } else {
            cheapest_holding(p, &side, lim, by_cost, before, &released)
        });
    }
    let mut f = vec![f64::INFINITY; states];
    let mut pick = vec![0usize; states];
    f[0] = 0.0;
    let mut digits = vec![0usize; radix.len()];
    let mut sub = vec![0usize; radix.len()];
    for s in 1..states {
        let mut rest = s;
        for (k, r) in radix.iter().enumerate() {
            digits[k] = rest % r;
            rest /= r;
        }
        // Odometer over the sub-states k ≤ s; index(s − k) = s − index(k).
        sub.iter_mut().for_each(|d| *d = 0);
        loop {
            let mut carry = true;
            let mut kidx = 0;
            let mut mul = 1;
            for (k, r) in radix.iter().enumerate() {
                if carry {
                    if sub[k] < digits[k] {
                        sub[k] += 1;
                        carry = false;
                    } else {
                        sub[k] = 0;
                    }
                }
                kidx += sub[k] * mul;
                mul *= r;
            }
            if carry {
                break;
            }
            if let Some(t) = cheap[kidx] {
                let v = p.cands[t].cost + f[s - kidx];
                if v < f[s] {
                    f[s] = v;
                    pick[s] = kidx;
                }
            }
        }
    }
    let full = states - 1;
    if f[full] >= before - EPS {
        return;
    }
    let mut new = Vec::new();
    let mut s = full;
    while s > 0 {
        let k = pick[s];
        let Some(t) = cheap[k] else { return };
        let mut counts = vec![0u32; n];
        decode(k, &mut counts);
        new.push(Inst { ty: t, counts });
        s -= k;
    }
    // Respect the per-type limits with the old instances released.
    if lim.limit.is_some() {
        let mut need = vec![0usize; p.cands.len()];
        for inst in &new {
            need[inst.ty] += 1;
        }
        for (t, &k) in need.iter().enumerate() {
            if k > 0 && k > lim.room(t) as usize + released.iter().filter(|&&r| r == t).count() {
                return;
            }
        }
    }
    remove(fleet, lim, idx);
    for inst in new {
        lim.per_type[inst.ty] += 1;
        fleet.push(inst);
    }
}

/// Re-plans the tasks of the instances at `idx` from scratch; keeps the new
/// instances if they cost less.
fn repack(
    p: &Problem,
    fleet: &mut Vec<Inst>,
    idx: &mut [usize],
    lim: &mut Limits<'_>,
    by_cost: &[usize],
) {
    let mut pool = vec![0u32; p.groups.len()];
    let mut before = 0.0;
    for &i in idx.iter() {
        for (g, &k) in fleet[i].counts.iter().enumerate() {
            pool[g] += k;
        }
        before += p.cands[fleet[i].ty].cost;
        lim.per_type[fleet[i].ty] -= 1;
    }
    let mut sub = Vec::new();
    greedy(p, &mut pool, lim, &mut sub, false);
    for inst in sub.iter_mut() {
        right_size(p, inst, lim, by_cost);
    }
    if pool.iter().all(|&k| k == 0) && fleet_cost(p, &sub) < before - EPS {
        for &i in idx.iter() {
            lim.per_type[fleet[i].ty] += 1;
        }
        remove(fleet, lim, idx);
        fleet.extend(sub);
    } else {
        for inst in &sub {
            lim.per_type[inst.ty] -= 1;
        }
        for &i in idx.iter() {
            lim.per_type[fleet[i].ty] += 1;
        }
    }
}

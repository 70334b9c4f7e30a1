//! The first-fit-decreasing baseline (Karpenter-like; see the module docs of
//! `plan`): tasks by size decreasing (GPUs, CPU, memory), each on the first
//! open instance with room, else on a new instance of the cheapest type that
//! holds it.

use super::problem::{Inst, Problem, DIMS};

pub(crate) fn solve(p: &Problem) -> Vec<Inst> {
    let n = p.groups.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&p.groups[a].req, &p.groups[b].req);
        rb[2]
            .cmp(&ra[2])
            .then(rb[0].cmp(&ra[0]))
            .then(rb[1].cmp(&ra[1]))
            .then_with(|| p.groups[a].name.cmp(&p.groups[b].name))
    });
    let mut fleet: Vec<Inst> = Vec::new();
    let mut free: Vec<[u64; DIMS]> = Vec::new();
    for g in order {
        let r = p.groups[g].req;
        let mut left = p.groups[g].count;
        // Instances before `start` have no room for this group any more:
        // room only shrinks while the group is placed.
        let mut start = 0;
        while left > 0 {
            let max_fit = |room: &[u64; DIMS]| {
                let mut k = u64::from(left);
                for d in 0..DIMS {
                    if let Some(q) = room[d].checked_div(r[d]) {
                        k = k.min(q);
                    }
                }
                k as u32
            };
            let mut placed = false;
            while start < fleet.len() {
                let j = start;
                if p.fits(g, fleet[j].ty) {
                    let k = max_fit(&free[j]);
                    if k > 0 {
                        fleet[j].counts[g] += k;
                        for d in 0..DIMS {
                            free[j][d] -= u64::from(k) * r[d];
                        }
                        left -= k;
                        placed = true;
                        break;
                    }
                }
                start += 1;
            }
            if placed {
                continue;
            }
            // A new instance: the cheapest type that holds one task.
            let Some(t) = (0..p.cands.len())
                .filter(|&t| p.fits(g, t))
                .min_by(|&a, &b| {
                    let (ca, cb) = (&p.cands[a], &p.cands[b]);
                    ca.cost
                        .total_cmp(&cb.cost)
                        .then(ca.vcpus.cmp(&cb.vcpus))
                        .then_with(|| ca.name.cmp(&cb.name))
                })
            else {
                break;
            };
            fleet.push(Inst {
                ty: t,
                counts: vec![0; n],
            });
            free.push(p.cands[t].cap);
        }
    }
    fleet
}

//! The lower bound and the task values (see the module docs of `plan`).
//!
//! The LP relaxation of the planning problem, with `x_t` fractional
//! instances of type `t` and `z_gt` fractional tasks of group `g` on type `t`
//! (only where one task fits), is
//!
//! ```text
//! min Σ_t c_t x_t   s.t.   Σ_t z_gt ≥ n_g                      (u_g ≥ 0)
//!                          cap_td x_t − Σ_g r_gd z_gt ≥ 0      (w_td ≥ 0)
//! ```
//!
//! and its dual `max Σ_g n_g u_g` subject to `Σ_d cap_td w_td ≤ c_t` for
//! every type and `u_g ≤ Σ_d r_gd w_td` for every pair where `g` fits `t`.
//! For any weights `λ ≥ 0`, `w_t = λ c_t / (λ · cap_t)` meets the first
//! constraint with equality, and `u_g = min_t c_t (λ · r_g) / (λ · cap_t)`
//! the second, so `Σ_g n_g u_g` is a lower bound on every fleet's cost (weak
//! duality) whatever `λ` is. One `λ` per class of types (architecture × GPU)
//! is searched to make it large. Every candidate type's own `λ` spans the
//! whole dual, so the restriction to classes only loosens the bound a little.

use super::problem::{Problem, CLASSES, DIMS};

/// Weights per class: `θ` splits CPU against memory, `γ` gives the GPU share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lambdas {
    theta: [f64; CLASSES],
    gamma: [f64; CLASSES],
}

impl Lambdas {
    pub fn new() -> Self {
        Lambdas {
            theta: [0.5; CLASSES],
            gamma: [0.0; CLASSES],
        }
    }
}

struct Ctx<'a> {
    p: &'a Problem,
    pool: &'a [u32],
    /// Total demand per dimension (0 = the dimension carries no weight).
    scale: [f64; DIMS],
    present: [bool; CLASSES],
    gpu_class: [bool; CLASSES],
}

impl Ctx<'_> {
    fn new<'a>(p: &'a Problem, pool: &'a [u32]) -> Ctx<'a> {
        let mut scale = [0.0; DIMS];
        for (g, grp) in p.groups.iter().enumerate() {
            for (d, s) in scale.iter_mut().enumerate() {
                *s += f64::from(pool[g]) * grp.req[d] as f64;
            }
        }
        let mut present = [false; CLASSES];
        let mut gpu_class = [false; CLASSES];
        for c in &p.cands {
            present[c.class] = true;
            gpu_class[c.class] = c.cap[2] > 0;
        }
        Ctx {
            p,
            pool,
            scale,
            present,
            gpu_class,
        }
    }

    fn weights(&self, lam: &Lambdas, class: usize) -> [f64; DIMS] {
        let mut theta = lam.theta[class];
        if self.scale[0] == 0.0 {
            theta = 0.0;
        }
        if self.scale[1] == 0.0 {
            theta = 1.0;
        }
        let gamma = if self.gpu_class[class] && self.scale[2] > 0.0 {
            lam.gamma[class]
        } else {
            0.0
        };
        let raw = [(1.0 - gamma) * theta, (1.0 - gamma) * (1.0 - theta), gamma];
        let mut w = [0.0; DIMS];
        for d in 0..DIMS {
            if self.scale[d] > 0.0 {
                w[d] = raw[d] / self.scale[d];
            }
        }
        w
    }

    /// Σ_g pool_g u_g under `lam`; writes `u_g` into `out` when given.
    fn eval(&self, lam: &Lambdas, mut out: Option<&mut [f64]>) -> f64 {
        let mut w = [[0.0; DIMS]; CLASSES];
        for (c, wc) in w.iter_mut().enumerate() {
            if self.present[c] {
                *wc = self.weights(lam, c);
            }
        }
        let mut total = 0.0;
        for (g, grp) in self.p.groups.iter().enumerate() {
            if self.pool[g] == 0 && out.is_none() {
                continue;
            }
            let r = [grp.req[0] as f64, grp.req[1] as f64, grp.req[2] as f64];
            let mut best = f64::INFINITY;
            for (t, c) in self.p.cands.iter().enumerate() {
                if !self.p.fits(g, t) {
                    continue;
                }
                let wc = &w[c.class];
                let lr = wc[0] * r[0] + wc[1] * r[1] + wc[2] * r[2];
                let term = if lr <= 0.0 {
                    0.0
                } else {
                    let lc =
                        wc[0] * c.cap[0] as f64 + wc[1] * c.cap[1] as f64 + wc[2] * c.cap[2] as f64;
                    c.cost * lr / lc
                };
                if term < best {
                    best = term;
                }
            }
            if !best.is_finite() {
                best = 0.0;
            }
            total += f64::from(self.pool[g]) * best;
            if let Some(o) = out.as_deref_mut() {
                o[g] = best;
            }
        }
        total
    }

    /// Pattern search on one class's (θ, γ).
    fn refine(
        &self,
        lam: &mut Lambdas,
        class: usize,
        mut best: f64,
        step0: f64,
        halvings: u32,
    ) -> f64 {
        let mut step = step0;
        let use_gamma = self.gpu_class[class] && self.scale[2] > 0.0;
        for _ in 0..halvings {
            let mut moves = 0;
            loop {
                let mut improved = false;
                let dirs: &[(f64, f64)] = if use_gamma {
                    &[(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)]
                } else {
                    &[(1.0, 0.0), (-1.0, 0.0)]
                };
                for &(dt, dg) in dirs {
                    let mut trial = *lam;
                    trial.theta[class] = (lam.theta[class] + dt * step).clamp(0.0, 1.0);
                    trial.gamma[class] = (lam.gamma[class] + dg * step).clamp(0.0, 1.0);
                    let v = self.eval(&trial, None);
                    if v > best * (1.0 + 1e-12) {
                        best = v;
                        *lam = trial;
                        improved = true;
                    }
                }
                moves += 1;
                if !improved || moves >= 4 {
                    break;
                }
            }
            step /= 2.0;
        }
        best
    }

    fn optimise(&self, lam: &mut Lambdas, thorough: bool) -> f64 {
        let mut best = self.eval(lam, None);
        if thorough {
            // One λ shared by every class first: moving one class alone
            // cannot lift a minimum another class holds down.
            let use_gamma = self.scale[2] > 0.0;
            for i in 0..=16 {
                for j in 0..=(if use_gamma { 8 } else { 0 }) {
                    let trial = Lambdas {
                        theta: [f64::from(i) / 16.0; CLASSES],
                        gamma: [f64::from(j) / 8.0; CLASSES],
                    };
                    let v = self.eval(&trial, None);
                    if v > best * (1.0 + 1e-12) {
                        best = v;
                        *lam = trial;
                    }
                }
            }
        }
        let rounds = if thorough { 2 } else { 1 };
        for round in 0..rounds {
            for class in 0..CLASSES {
                if !self.present[class] {
                    continue;
                }
                let use_gamma = self.gpu_class[class] && self.scale[2] > 0.0;
                if thorough && round == 0 {
                    let gammas = if use_gamma { 8 } else { 0 };
                    for i in 0..=16 {
                        for j in 0..=gammas {
                            let mut trial = *lam;
                            trial.theta[class] = f64::from(i) / 16.0;
                            trial.gamma[class] = f64::from(j) / 8.0;
                            let v = self.eval(&trial, None);
                            if v > best * (1.0 + 1e-12) {
                                best = v;
                                *lam = trial;
                            }
                        }
                    }
                }
                let (step, halvings) = if thorough {
                    (1.0 / 32.0, 8)
                } else {
                    (1.0 / 16.0, 3)
                };
                best = self.refine(lam, class, best, step, halvings);
            }
        }
        best
    }
}

/// A proven lower bound on the cost of any fleet holding the problem's
/// placeable tasks: the best dual found, and at least the cheapest instance
/// that can hold the most demanding group's task.
pub(crate) fn lower_bound(p: &Problem) -> f64 {
    if p.groups.is_empty() {
        return 0.0;
    }
    let pool: Vec<u32> = p.groups.iter().map(|g| g.count).collect();
    let ctx = Ctx::new(p, &pool);
    let mut lam = Lambdas::new();
    let lp = ctx.optimise(&mut lam, true);
    let single = (0..p.groups.len())
        .map(|g| {
            (0..p.cands.len())
                .filter(|&t| p.fits(g, t))
                .map(|t| p.cands[t].cost)
                .fold(f64::INFINITY, f64::min)
        })
        .filter(|c| c.is_finite())
        .fold(0.0, f64::max);
    lp.max(single)
}

/// Task values (the dual `u_g`) for the tasks of `pool`, warm-started from
/// and updating `lam`. Groups not in the pool get their value too.
pub(crate) fn values(
    p: &Problem,
    pool: &[u32],
    lam: &mut Lambdas,
    thorough: bool,
    out: &mut [f64],
) {
    let ctx = Ctx::new(p, pool);
    ctx.optimise(lam, thorough);
    ctx.eval(lam, Some(out));
    // A group the weights ignore still needs a positive value to be packed.
    let floor = out
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let floor = if floor.is_finite() {
        floor * 1e-3
    } else {
        1e-9
    };
    for v in out.iter_mut() {
        if *v <= 0.0 {
            *v = floor;
        }
    }
}

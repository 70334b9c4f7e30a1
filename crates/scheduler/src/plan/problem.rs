//! The planning problem in numbers: candidate types (capacity after the
//! reservation, cost), placeable task groups, the compatibility matrix, and
//! the tasks nothing can hold with the reason why.

use std::collections::{BTreeMap, BTreeSet};

use berth_catalog::{Architecture, Catalog, MatchOptions, RequirementsError};
use berth_model::ecs::CPUArchitecture;

use super::{
    bound, Capacity, CapacityOption, Plan, PlanError, PlanOptions, PlanRequest, PlannedInstance,
    Unplaceable,
};

/// Resource dimensions: CPU units, MiB, whole GPUs.
pub(crate) const DIMS: usize = 3;
/// Candidate classes: architecture mask (1..=3) × GPU or not.
pub(crate) const CLASSES: usize = 8;

/// Architecture bits.
const X86: u8 = 1;
const ARM: u8 = 2;

fn arch_bit(a: CPUArchitecture) -> u8 {
    match a {
        CPUArchitecture::X8664 => X86,
        CPUArchitecture::Arm64 => ARM,
    }
}

fn arch_name(a: CPUArchitecture) -> &'static str {
    match a {
        CPUArchitecture::X8664 => "X86_64",
        CPUArchitecture::Arm64 => "ARM64",
    }
}

fn catalog_arch(a: CPUArchitecture) -> Architecture {
    match a {
        CPUArchitecture::X8664 => Architecture::X86_64,
        CPUArchitecture::Arm64 => Architecture::Arm64,
    }
}

/// A candidate instance type.
#[derive(Debug, Clone)]
pub(crate) struct Cand {
    pub name: String,
    pub vcpus: u32,
    /// Allocatable CPU units, MiB, GPUs.
    pub cap: [u64; DIMS],
    pub price: f64,
    pub fee: f64,
    /// price + fee.
    pub cost: f64,
    /// Architectures the tasks may use it for (bits).
    pub arch: u8,
    /// Index into the classes of the bound (`arch * 2 + gpu`).
    pub class: usize,
}

/// A placeable task group.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub name: String,
    pub req: [u64; DIMS],
    pub count: u32,
    /// Architecture bit.
    pub arch: u8,
}

/// One instance of a fleet under construction: its type and tasks per group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Inst {
    pub ty: usize,
    pub counts: Vec<u32>,
}

/// Everything the solvers need, computed once.
#[derive(Debug)]
pub(crate) struct Problem {
    pub cands: Vec<Cand>,
    pub groups: Vec<Group>,
    /// `fit[t * groups + g]`: one task of `g` fits an empty `t` of its architecture.
    fit: Vec<bool>,
    pub unplaceable: Vec<Unplaceable>,
    pub zones: Vec<String>,
    pub options: PlanOptions,
}

impl Problem {
    /// Whether one task of group `g` can go on type `t`.
    #[inline]
    pub fn fits(&self, g: usize, t: usize) -> bool {
        self.fit[t * self.groups.len() + g]
    }

    pub fn build(catalog: &Catalog, request: &PlanRequest) -> Result<Problem, PlanError> {
        let options = request.options;
        if !(options.spot_price_ratio > 0.0 && options.spot_price_ratio <= 1.0) {
            return Err(PlanError::SpotRatio(options.spot_price_ratio));
        }
        let mut names = BTreeSet::new();
        for (i, g) in request.groups.iter().enumerate() {
            if g.name.is_empty() {
                return Err(PlanError::EmptyName(i));
            }
            if !names.insert(g.name.as_str()) {
                return Err(PlanError::DuplicateGroup(g.name.clone()));
            }
            if g.cpu == 0 && g.memory_mib == 0 && g.gpu == 0 {
                return Err(PlanError::EmptyTask {
                    index: i,
                    name: g.name.clone(),
                });
            }
        }

        // Candidates per architecture the tasks need (so that price
        // protection compares like with like), merged into one list.
        let mut archs: Vec<CPUArchitecture> = Vec::new();
        for g in request.groups.iter().filter(|g| g.count > 0) {
            if !archs.contains(&g.architecture) {
                archs.push(g.architecture);
            }
        }
        let region = request.region.as_str();
        let mut masks: BTreeMap<&str, u8> = BTreeMap::new();
        let mut no_match: u8 = 0;
        if archs.is_empty() {
            // Validate the requirements all the same.
            match catalog.matching_with(region, &request.requirements, &MatchOptions::default()) {
                Ok(_) | Err(RequirementsError::NoMatch { .. }) => {}
                Err(e) => return Err(PlanError::Requirements(e)),
            }
        }
        for &a in &archs {
            let opts = MatchOptions {
                architecture: Some(catalog_arch(a)),
                ..MatchOptions::default()
            };
            match catalog.matching_with(region, &request.requirements, &opts) {
                Ok(types) => {
                    for t in types {
                        *masks.entry(t.name.as_str()).or_insert(0) |= arch_bit(a);
                    }
                }
                Err(RequirementsError::NoMatch { .. }) => no_match |= arch_bit(a),
                Err(e) => return Err(PlanError::Requirements(e)),
            }
        }
        let reserved_for = |mem: u64| request.reservation.memory_mib(mem);
        let mut cands = Vec::new();
        let mut spot_skipped = 0usize;
        let mut unavailable_skipped = 0usize;
        for (name, &arch) in &masks {
            let Some(t) = catalog.get(name) else { continue };
            let Some(on_demand) = catalog.on_demand_price(region, name) else {
                continue;
            };
            if request.unavailable.contains(*name) {
                unavailable_skipped += 1;
                continue;
            }
            let price = match request.capacity {
                CapacityOption::OnDemand => on_demand,
                CapacityOption::Spot => {
                    if !t.spot_supported {
                        spot_skipped += 1;
                        continue;
                    }
                    on_demand * options.spot_price_ratio
                }
            };
            // Rounded to the micro-dollar once, here, so that the plan's
            // figures, its cost and its bound all work on the same numbers.
            let price = round6(price);
            let fee = round6(catalog.management_fee(region, name).unwrap_or(0.0));
            let memory = t.memory_mib.saturating_sub(reserved_for(t.memory_mib));
            let cpu = t
                .cpu_units()
                .saturating_sub(request.reservation.cpu_units());
            if memory == 0 || cpu == 0 {
                continue;
            }
            let gpu = u64::from(t.whole_gpus());
            cands.push(Cand {
                name: t.name.clone(),
                vcpus: t.vcpus,
                cap: [u64::from(cpu), memory, gpu],
                price,
                fee,
                cost: price + fee,
                arch,
                class: usize::from(arch) * 2 + usize::from(gpu > 0),
            });
        }

        // Unplaceable groups, with the reason; the rest are the problem.
        let mut groups = Vec::new();
        let mut unplaceable = Vec::new();
        for g in request.groups.iter().filter(|g| g.count > 0) {
            let req = [u64::from(g.cpu), g.memory_mib, u64::from(g.gpu)];
            let bit = arch_bit(g.architecture);
            let fits = |c: &Cand| c.arch & bit != 0 && (0..DIMS).all(|d| req[d] <= c.cap[d]);
            if cands.iter().any(fits) {
                groups.push(Group {
                    name: g.name.clone(),
                    req,
                    count: g.count,
                    arch: bit,
                });
                continue;
            }
            let reason = reason(
                g.architecture,
                req,
                &cands,
                bit,
                no_match & bit != 0,
                region,
                (spot_skipped, unavailable_skipped),
                request.reservation.memory_mib(0),
            );
            unplaceable.push(Unplaceable {
                name: g.name.clone(),
                count: g.count,
                reason,
            });
        }

        let cands = undominated(cands);
        let n = groups.len();
        let mut fit = vec![false; cands.len() * n];
        for (t, c) in cands.iter().enumerate() {
            for (g, grp) in groups.iter().enumerate() {
                fit[t * n + g] =
                    c.arch & grp.arch != 0 && (0..DIMS).all(|d| grp.req[d] <= c.cap[d]);
            }
        }
        Ok(Problem {
            cands,
            groups,
            fit,
            unplaceable,
            zones: request.availability_zones.clone(),
            options,
        })
    }

    /// What tasks `counts` use, per dimension.
    pub fn used(&self, counts: &[u32]) -> [u64; DIMS] {
        let mut used = [0u64; DIMS];
        for (g, &k) in counts.iter().enumerate() {
            if k > 0 {
                for (d, u) in used.iter_mut().enumerate() {
                    *u += u64::from(k) * self.groups[g].req[d];
                }
            }
        }
        used
    }

    /// Whether type `t` holds tasks `counts` using `used` resources.
    pub fn holds(&self, t: usize, counts: &[u32], used: &[u64; DIMS]) -> bool {
        let c = &self.cands[t];
        (0..DIMS).all(|d| used[d] <= c.cap[d])
            && counts
                .iter()
                .enumerate()
                .all(|(g, &k)| k == 0 || self.fits(g, t))
    }

    /// The fleet as the caller sees it: sorted, priced, zoned, bounded.
    pub fn render(&self, mut fleet: Vec<Inst>) -> Plan {
        fleet.sort_by(|a, b| {
            self.cands[a.ty]
                .name
                .cmp(&self.cands[b.ty].name)
                .then_with(|| b.counts.cmp(&a.counts))
        });
        let mut hourly_cost = 0.0;
        let mut instances = Vec::with_capacity(fleet.len());
        for (i, inst) in fleet.iter().enumerate() {
            let c = &self.cands[inst.ty];
            let (price, fee) = (c.price, c.fee);
            hourly_cost += price + fee;
            let tasks = inst
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &k)| k > 0)
                .map(|(g, &k)| (self.groups[g].name.clone(), k))
                .collect();
            instances.push(PlannedInstance {
                instance_type: c.name.clone(),
                hourly_price: price,
                hourly_fee: fee,
                capacity: Capacity {
                    cpu: c.cap[0],
                    memory: c.cap[1],
                    gpu: c.cap[2],
                },
                tasks,
                availability_zone: if self.zones.is_empty() {
                    None
                } else {
                    Some(self.zones[i % self.zones.len()].clone())
                },
            });
        }
        let bound = bound::lower_bound(self);
        // Guard against float noise, then round down: still a lower bound.
        let lower_bound = ((bound * (1.0 - 1e-9)) * 1e6).floor() / 1e6;
        Plan {
            instances,
            hourly_cost: round6(hourly_cost),
            lower_bound: lower_bound.max(0.0),
            unplaceable: self.unplaceable.clone(),
        }
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Drops candidates another candidate dominates: no less of any resource,
/// every architecture, no more cost (ties: the first by name stays).
fn undominated(cands: Vec<Cand>) -> Vec<Cand> {
    let dominates = |a: &Cand, b: &Cand| {
        a.arch & b.arch == b.arch && (0..DIMS).all(|d| a.cap[d] >= b.cap[d]) && a.cost <= b.cost
    };
    let keep: Vec<bool> = cands
        .iter()
        .enumerate()
        .map(|(i, b)| {
            !cands
                .iter()
                .enumerate()
                .any(|(j, a)| j != i && dominates(a, b) && (!dominates(b, a) || j < i))
        })
        .collect();
    cands
        .into_iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect()
}

/// Why no candidate holds a task of `req` for architecture `arch`.
#[allow(clippy::too_many_arguments)]
fn reason(
    arch: CPUArchitecture,
    req: [u64; DIMS],
    cands: &[Cand],
    bit: u8,
    no_match: bool,
    region: &str,
    (spot_skipped, unavailable_skipped): (usize, usize),
    reserved: u64,
) -> String {
    let an = arch_name(arch);
    let of_arch: Vec<&Cand> = cands.iter().filter(|c| c.arch & bit != 0).collect();
    if of_arch.is_empty() {
        let mut why = if no_match {
            format!("architecture {an}: no instance type the instanceRequirements admit in {region} supports {an}")
        } else {
            format!("architecture {an}: no allowed instance type supporting {an} is left")
        };
        if spot_skipped > 0 {
            why.push_str(&format!(
                " ({spot_skipped} matching types do not support spot)"
            ));
        }
        if unavailable_skipped > 0 {
            why.push_str(&format!(
                " ({unavailable_skipped} matching types are marked unavailable)"
            ));
        }
        return why;
    }
    let max = |d: usize, set: &[&Cand]| set.iter().map(|c| c.cap[d]).max().unwrap_or(0);
    if req[2] > 0 {
        let most = max(2, &of_arch);
        if req[2] > most {
            let hint = if most == 0 {
                "; allow GPU types (acceleratorTypes [gpu]; price protection may exclude them: onDemandMaxPricePercentageOverLowestPrice 999999 turns it off)"
            } else {
                ""
            };
            return format!(
                "gpu: needs {} whole GPUs per task; the most any allowed {an} type has is {most}{hint}",
                req[2]
            );
        }
    }
    let with_gpu: Vec<&Cand> = of_arch
        .iter()
        .copied()
        .filter(|c| c.cap[2] >= req[2])
        .collect();
    let cpu_max = max(0, &with_gpu);
    if req[0] > cpu_max {
        return format!(
            "cpu: needs {} CPU units per task; the largest allowed {an} type{} has {cpu_max}",
            req[0],
            if req[2] > 0 { " with enough GPUs" } else { "" }
        );
    }
    let mem_max = max(1, &with_gpu);
    if req[1] > mem_max {
        return format!(
            "memory: needs {} MiB per task; the largest allowed {an} type{} has {mem_max} MiB for tasks (after reserving {reserved} MiB per instance)",
            req[1],
            if req[2] > 0 { " with enough GPUs" } else { "" }
        );
    }
    format!(
        "no allowed {an} type has {} CPU units, {} MiB (after reserving {reserved} MiB) and {} GPUs at once",
        req[0], req[1], req[2]
    )
}

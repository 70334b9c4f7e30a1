//! A fake fleet on a virtual clock that applies service decisions, shared by
//! `service_cases.rs` and `service_props.rs` (included with `#[path]`).
//!
//! Each [`Fleet::tick`]: tasks being stopped are gone; PROVISIONING tasks
//! older than `start_ticks` either fail to start (their revision is in
//! `failing`: the task vanishes and its deployment's failure count grows)
//! or reach RUNNING (UNHEALTHY if their revision is in `sick`); then the
//! scheduler decides, the decision is checked against the limits (see
//! [`Fleet::check`]) and applied as the control plane would.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use berth_scheduler::service::{
    decide, limits, CircuitBreaker, Decision, Deployment, DesiredStatus, Health, Rollout, Service,
    StopReason, Task, TaskStatus,
};

/// Seconds per tick.
pub const TICK: u64 = 10;

pub struct Fleet {
    pub svc: Service,
    pub tick: u64,
    /// Ticks from PROVISIONING to RUNNING.
    pub start_ticks: u64,
    /// Task definitions whose tasks never start.
    pub failing: BTreeSet<String>,
    /// Task definitions whose tasks run UNHEALTHY.
    pub sick: BTreeSet<String>,
    pub next_id: u64,
    pub next_deployment: u64,
    created: BTreeMap<String, u64>,
    pub decisions: Vec<Decision>,
    /// Every task the scheduler ever stopped, and why.
    pub stopped: Vec<(String, StopReason)>,
    /// Rollbacks seen (from, to).
    pub rollbacks: Vec<(String, String)>,
    /// Deployments that went FAILED, with their failure count and the
    /// desired count at that moment.
    pub tripped: Vec<(String, u32, u32)>,
}

pub fn zones() -> Vec<String> {
    ["az-a", "az-b", "az-c"]
        .iter()
        .map(|z| z.to_string())
        .collect()
}

impl Fleet {
    /// A service with no tasks yet on revision `td`.
    pub fn new(desired: u32, min: u32, max: u32, breaker: CircuitBreaker, td: &str) -> Fleet {
        let mut f = Fleet {
            svc: Service {
                name: "web".into(),
                desired_count: desired,
                minimum_healthy_percent: min,
                maximum_percent: max,
                circuit_breaker: breaker,
                health_check_grace_period_secs: 0,
                now: 0,
                deployments: Vec::new(),
                tasks: Vec::new(),
                zones: zones(),
            },
            tick: 0,
            start_ticks: 2,
            failing: BTreeSet::new(),
            sick: BTreeSet::new(),
            next_id: 0,
            next_deployment: 0,
            created: BTreeMap::new(),
            decisions: Vec::new(),
            stopped: Vec::new(),
            rollbacks: Vec::new(),
            tripped: Vec::new(),
        };
        f.deploy(td);
        f
    }

    /// UpdateService with a new task definition: a new PRIMARY.
    pub fn deploy(&mut self, td: &str) {
        self.next_deployment += 1;
        self.svc.deployments.insert(
            0,
            Deployment {
                id: format!("ecs-svc/{}", self.next_deployment),
                task_definition: td.to_string(),
                rollout: Rollout::InProgress,
                failed_tasks: 0,
            },
        );
    }

    pub fn primary(&self) -> &Deployment {
        &self.svc.deployments[0]
    }

    /// Tasks not STOPPED.
    pub fn not_stopped(&self) -> usize {
        self.svc
            .tasks
            .iter()
            .filter(|t| t.last_status != TaskStatus::Stopped)
            .count()
    }

    /// The test's own healthy predicate (independent of the library's).
    pub fn is_healthy(&self, t: &Task) -> bool {
        t.last_status == TaskStatus::Running
            && t.desired_status == DesiredStatus::Running
            && match t.health {
                Health::NoCheck | Health::Healthy => true,
                Health::Unknown | Health::Unhealthy => t
                    .started_at
                    .is_none_or(|s| self.svc.now < s + self.svc.health_check_grace_period_secs),
            }
    }

    pub fn healthy(&self) -> usize {
        self.svc.tasks.iter().filter(|t| self.is_healthy(t)).count()
    }

    /// Tasks that will keep running (desired RUNNING, not STOPPED).
    pub fn live(&self) -> impl Iterator<Item = &Task> {
        self.svc.tasks.iter().filter(|t| {
            t.desired_status == DesiredStatus::Running && t.last_status != TaskStatus::Stopped
        })
    }

    fn deployment_mut(&mut self, id: &str) -> Option<&mut Deployment> {
        self.svc.deployments.iter_mut().find(|d| d.id == id)
    }

    fn task_definition(&self, deployment: &str) -> String {
        self.svc
            .deployments
            .iter()
            .find(|d| d.id == deployment)
            .map(|d| d.task_definition.clone())
            .unwrap_or_default()
    }

    /// Time passes: stops complete, starts progress.
    pub fn advance(&mut self) {
        self.tick += 1;
        self.svc.now = self.tick * TICK;
        let now = self.svc.now;
        self.svc
            .tasks
            .retain(|t| t.desired_status == DesiredStatus::Running);
        let mut failed: Vec<String> = Vec::new();
        let mut keep = Vec::new();
        for mut t in std::mem::take(&mut self.svc.tasks) {
            let born = self.created.get(&t.id).copied().unwrap_or(0);
            if t.last_status == TaskStatus::Provisioning && self.tick >= born + self.start_ticks {
                let td = self.task_definition(&t.deployment);
                if self.failing.contains(&td) {
                    failed.push(t.deployment.clone());
                    continue;
                }
                t.last_status = TaskStatus::Running;
                t.started_at = Some(now);
                t.health = if self.sick.contains(&td) {
                    Health::Unhealthy
                } else {
                    Health::Healthy
                };
            }
            keep.push(t);
        }
        self.svc.tasks = keep;
        for d in failed {
            if let Some(d) = self.deployment_mut(&d) {
                d.failed_tasks += 1;
            }
        }
    }

    /// Kills up to `n` tasks (they stop unexpectedly: failures of their
    /// deployment), picked by `seed`.
    pub fn kill(&mut self, n: usize, seed: usize) {
        for i in 0..n {
            let len = self.svc.tasks.len();
            if len == 0 {
                return;
            }
            let t = self.svc.tasks.remove((seed + i * 7) % len);
            if let Some(d) = self.deployment_mut(&t.deployment) {
                d.failed_tasks += 1;
            }
        }
    }

    /// Makes up to `n` running tasks UNHEALTHY, picked by `seed`.
    pub fn sicken(&mut self, n: usize, seed: usize) {
        let len = self.svc.tasks.len();
        for i in 0..n.min(len) {
            let t = &mut self.svc.tasks[(seed + i * 5) % len];
            if t.last_status == TaskStatus::Running {
                t.health = Health::Unhealthy;
            }
        }
    }

    /// Decides, checks the decision against the limits, applies it.
    pub fn step(&mut self) -> Decision {
        let d = decide(&self.svc).unwrap();
        self.check(&d);
        self.apply(&d);
        self.decisions.push(d.clone());
        d
    }

    /// One tick: advance, then step.
    pub fn tick(&mut self) -> Decision {
        self.advance();
        self.step()
    }

    /// Ticks until steady (then `true`) or `max` ticks pass.
    pub fn run_until_steady(&mut self, max: usize) -> bool {
        for _ in 0..max {
            if self.tick().steady {
                return true;
            }
        }
        false
    }

    /// The limits hold for `d` applied to the current fleet.
    pub fn check(&self, d: &Decision) {
        let lim = limits(
            self.svc.desired_count,
            self.svc.minimum_healthy_percent,
            self.svc.maximum_percent,
        );
        let by_id: BTreeMap<&str, &Task> =
            self.svc.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        let mut seen = BTreeSet::new();
        let mut healthy_stopped = 0;
        for s in &d.stop {
            assert!(seen.insert(s.task.clone()), "task {} stopped twice", s.task);
            let t = by_id.get(s.task.as_str()).expect("stop of an unknown task");
            assert!(!t.protected, "protected task {} stopped", t.id);
            assert_eq!(t.desired_status, DesiredStatus::Running);
            if self.is_healthy(t) {
                healthy_stopped += 1;
            }
        }
        let before = self.healthy();
        let after = before - healthy_stopped;
        assert!(
            after >= (lim.floor as usize).min(before),
            "floor {}: {before} healthy, {after} after the decision",
            lim.floor
        );
        let started: u32 = d.start.iter().map(|s| s.count).sum();
        let n = self.not_stopped();
        if started > 0 {
            assert!(
                n + started as usize <= lim.ceiling as usize,
                "ceiling {}: {n} tasks + {started} started",
                lim.ceiling
            );
        }
        for s in &d.start {
            let spread: u32 = s.by_zone.iter().map(|(_, c)| c).sum();
            assert_eq!(spread, s.count);
        }
    }

    fn apply(&mut self, d: &Decision) {
        let stops: BTreeMap<&str, StopReason> =
            d.stop.iter().map(|s| (s.task.as_str(), s.reason)).collect();
        for t in &mut self.svc.tasks {
            if let Some(r) = stops.get(t.id.as_str()) {
                t.desired_status = DesiredStatus::Stopped;
                self.stopped.push((t.id.clone(), *r));
            }
        }
        for (id, r) in &d.rollout {
            let failures = self.svc.deployments.iter().find(|x| &x.id == id);
            if let (Rollout::Failed { .. }, Some(dep)) = (r, failures) {
                if dep.rollout == Rollout::InProgress {
                    self.tripped
                        .push((id.clone(), dep.failed_tasks, self.svc.desired_count));
                }
            }
            if let Some(dep) = self.deployment_mut(id) {
                dep.rollout = r.clone();
            }
        }
        for s in &d.start {
            for (zone, count) in &s.by_zone {
                for _ in 0..*count {
                    self.next_id += 1;
                    let id = format!("t{:05}", self.next_id);
                    self.created.insert(id.clone(), self.tick);
                    self.svc.tasks.push(Task {
                        id,
                        deployment: s.deployment.clone(),
                        last_status: TaskStatus::Provisioning,
                        desired_status: DesiredStatus::Running,
                        health: Health::Unknown,
                        started_at: None,
                        zone: zone.clone(),
                        protected: false,
                    });
                }
            }
        }
        if let Some(rb) = &d.rollback {
            self.rollbacks.push((rb.from.clone(), rb.to.clone()));
            if let Some(i) = self.svc.deployments.iter().position(|x| x.id == rb.to) {
                let mut dep = self.svc.deployments.remove(i);
                dep.rollout = Rollout::InProgress;
                dep.failed_tasks = 0;
                self.svc.deployments.insert(0, dep);
            }
        }
        self.svc.deployments.retain(|x| !d.retire.contains(&x.id));
    }

    /// Live tasks per zone (all zones listed).
    pub fn per_zone(&self) -> BTreeMap<String, usize> {
        let mut m: BTreeMap<String, usize> = zones().into_iter().map(|z| (z, 0)).collect();
        for t in self.live() {
            *m.entry(t.zone.clone()).or_default() += 1;
        }
        m
    }
}

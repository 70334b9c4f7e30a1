//! Instance lifecycle decisions, as a pure function of a capacity
//! provider's fleet at `now`: which instances start draining (and why), and
//! which reached their hard deadline.
//!
//! # Rules
//!
//! * Every instance is replaced before it gets old: it starts draining at
//!   its *drain age* (ECS Managed Instances: 14 days) and is terminated at
//!   its *maximum lifetime* (21 days) whatever still runs on it.
//! * Drain dates are spread: an instance's drain is due up to
//!   [`Policy::spread`] before its drain age, by a deterministic hash of its
//!   id, so a fleet launched together is not replaced at once; and batched:
//!   drains due within the same slot of [`Policy::batch`] seconds (three
//!   hours by default) are all due at the slot's start, so a fleet is replaced in
//!   a few waves (within the budget) rather than one instance at a time,
//!   each drain starting at most `batch` earlier than its spread date.
//! * With a maintenance window, lifetime and image drains begin only inside
//!   a window — earlier than the drain age when the last window before the
//!   deadline comes first (a drain must start at least
//!   [`Policy::drain_margin`] before the deadline).
//! * A disruption budget bounds the instances draining at once: at most
//!   [`Policy::budget_percent`] of the provider's instances, and one at a
//!   time below [`Policy::small_fleet`] instances (AWS's auto-repair rule);
//!   at least one. Repairs come first, then lifetime drains (oldest first),
//!   then image rollouts.
//! * Spot interruptions drain at once, outside the budget (the capacity is
//!   going anyway); the hard deadline is never postponed by the budget.

use serde::{Deserialize, Serialize};

/// Why an instance drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainKind {
    /// Its drain age came.
    Lifetime,
    /// It runs an older OS image than the fleet's.
    Image,
    /// A health check found it IMPAIRED.
    Repair,
    /// Its spot capacity is being taken back.
    Spot,
    /// Consolidation moves its tasks to cheaper capacity.
    Consolidation,
    /// UpdateContainerInstancesState DRAINING.
    User,
}

impl DrainKind {
    pub const ALL: [DrainKind; 6] = [
        DrainKind::Lifetime,
        DrainKind::Image,
        DrainKind::Repair,
        DrainKind::Spot,
        DrainKind::Consolidation,
        DrainKind::User,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DrainKind::Lifetime => "lifetime",
            DrainKind::Image => "image",
            DrainKind::Repair => "repair",
            DrainKind::Spot => "spot",
            DrainKind::Consolidation => "consolidation",
            DrainKind::User => "user",
        }
    }
}

/// A weekly maintenance window in UTC: days of the week (0 = Monday) and an
/// hour range `[start_hour, end_hour)` (end may pass midnight: 22–2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub days: Vec<u8>,
    pub start_hour: u8,
    pub end_hour: u8,
}

/// 1970-01-01 was a Thursday (day 3 with Monday = 0).
const EPOCH_WEEKDAY: u64 = 3;

impl Window {
    /// Parses `"sat,sun 02-06"`, `"mon-fri 22-02"` or `"daily 03-05"`.
    pub fn parse(s: &str) -> Result<Window, String> {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let bad = || {
            format!(
                "invalid maintenance window '{s}': expected DAYS HH-HH in UTC, such as 'sat,sun 02-06', 'mon-fri 22-02' or 'daily 03-05'"
            )
        };
        let (days_text, hours) = s.trim().split_once(' ').ok_or_else(bad)?;
        let day = |d: &str| {
            NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(d.trim()))
                .map(|p| p as u8)
        };
        let mut days = vec![];
        if days_text.eq_ignore_ascii_case("daily") {
            days = (0..7).collect();
        } else {
            for part in days_text.split(',') {
                match part.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day(a).ok_or_else(bad)?, day(b).ok_or_else(bad)?);
                        let mut d = a;
                        loop {
                            days.push(d);
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                    }
                    None => days.push(day(part).ok_or_else(bad)?),
                }
            }
        }
        let (a, b) = hours.trim().split_once('-').ok_or_else(bad)?;
        let start_hour: u8 = a.trim().parse().map_err(|_| bad())?;
        let end_hour: u8 = b.trim().parse().map_err(|_| bad())?;
        if start_hour > 23 || end_hour > 24 || start_hour == end_hour {
            return Err(bad());
        }
        days.sort_unstable();
        days.dedup();
        Ok(Window {
            days,
            start_hour,
            end_hour,
        })
    }

    /// Whether `t` (epoch seconds) is inside the window. A window passing
    /// midnight belongs to the day it starts on.
    pub fn contains(&self, t: f64) -> bool {
        let t = t.max(0.0) as u64;
        let day = (t / 86_400 + EPOCH_WEEKDAY) % 7;
        let hour = ((t % 86_400) / 3600) as u8;
        let (s, e) = (self.start_hour, self.end_hour);
        if s < e {
            self.days.contains(&(day as u8)) && hour >= s && hour < e
        } else {
            let prev = ((day + 6) % 7) as u8;
            (self.days.contains(&(day as u8)) && hour >= s)
                || (self.days.contains(&prev) && hour < e)
        }
    }

    /// The first window opening at or after `t`.
    pub fn next_start(&self, t: f64) -> f64 {
        if self.days.is_empty() {
            return f64::INFINITY;
        }
        let t0 = t.max(0.0).ceil() as u64;
        let midnight = t0 - t0 % 86_400;
        for d in 0..8u64 {
            let day_start = midnight + d * 86_400;
            let day = ((day_start / 86_400 + EPOCH_WEEKDAY) % 7) as u8;
            let open = day_start + u64::from(self.start_hour) * 3600;
            if self.days.contains(&day) && open >= t0 {
                return open as f64;
            }
        }
        f64::INFINITY
    }
}

/// A capacity provider's lifecycle settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Seconds from launch when the drain is due (14 days).
    pub drain_age: f64,
    /// Seconds from launch when the instance is terminated (21 days).
    pub max_lifetime: f64,
    /// Drains are spread up to this many seconds before the drain age.
    pub spread: f64,
    /// Drains due within the same slot of this many seconds (counted from
    /// the epoch) are due together, at the slot's start; 0: each at its
    /// own date.
    #[serde(default)]
    pub batch: f64,
    /// A drain starts at least this long before the deadline.
    pub drain_margin: f64,
    pub window: Option<Window>,
    /// Most instances draining at once, as a percent of the fleet (20).
    pub budget_percent: u32,
    /// Below this many instances, one at a time (9).
    pub small_fleet: usize,
}

pub const DEFAULT_DRAIN_AGE: f64 = 14.0 * 86_400.0;
pub const DEFAULT_MAX_LIFETIME: f64 = 21.0 * 86_400.0;

impl Default for Policy {
    fn default() -> Self {
        Policy::new(DEFAULT_DRAIN_AGE, DEFAULT_MAX_LIFETIME)
    }
}

impl Policy {
    /// A policy with these ages and the default budget; the spread is a
    /// tenth of the drain age (at most a day), the batch an eighth of the
    /// spread (at most three hours), the margin a tenth of the time between the
    /// two ages (at most a day).
    pub fn new(drain_age: f64, max_lifetime: f64) -> Policy {
        let max_lifetime = max_lifetime.max(drain_age);
        let spread = (drain_age / 10.0).min(86_400.0);
        Policy {
            drain_age,
            max_lifetime,
            spread,
            batch: (spread / 8.0).min(3.0 * 3600.0),
            drain_margin: ((max_lifetime - drain_age) / 10.0).min(86_400.0),
            window: None,
            budget_percent: 20,
            small_fleet: 9,
        }
    }

    /// Most instances of a fleet of `n` draining at once.
    pub fn budget(&self, n: usize) -> usize {
        if n < self.small_fleet {
            1
        } else {
            (n * self.budget_percent as usize / 100).max(1)
        }
    }

    /// When the drain of an instance launched at `launched_at` is due,
    /// without a window: its drain age, spread earlier by its id, at the
    /// start of its batch.
    pub fn drain_due(&self, id: &str, launched_at: f64) -> f64 {
        let h = fnv(id) % 10_000;
        let due = launched_at + self.drain_age - self.spread * (h as f64 / 10_000.0);
        if self.batch > 0.0 {
            (due / self.batch).floor() * self.batch
        } else {
            due
        }
    }

    pub fn deadline(&self, launched_at: f64) -> f64 {
        launched_at + self.max_lifetime
    }
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// One instance of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub launched_at: f64,
    /// Draining already, and why.
    pub draining: Option<DrainKind>,
    /// Its OS image is older than the fleet's.
    pub outdated_image: bool,
    /// A health check found it IMPAIRED.
    pub impaired: bool,
    /// Its spot capacity is being taken back.
    pub interrupted: bool,
}

/// What the lifecycle does now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Instances to start draining, and why.
    pub drain: Vec<(String, DrainKind)>,
    /// Instances past their maximum lifetime: stop what runs, terminate.
    pub expire: Vec<String>,
    /// Seconds until the next lifecycle event is due, if any.
    pub next_in: Option<f64>,
}

/// Decides the lifecycle of one capacity provider's fleet at `now`.
pub fn decide(policy: &Policy, fleet: &[Instance], now: f64) -> Decision {
    let mut d = Decision::default();
    let mut wake = |at: f64| {
        if at > now && at.is_finite() {
            let secs = at - now;
            d.next_in = Some(d.next_in.map_or(secs, |n: f64| n.min(secs)));
        }
    };
    let mut expire = vec![];
    for i in fleet {
        let deadline = policy.deadline(i.launched_at);
        if now >= deadline {
            expire.push(i.id.clone());
        } else {
            wake(deadline);
        }
    }
    let mut drain = vec![];
    // Spot: at once, whatever the budget.
    for i in fleet {
        if i.draining.is_none() && i.interrupted && !expire.contains(&i.id) {
            drain.push((i.id.clone(), DrainKind::Spot));
        }
    }
    let counted = fleet
        .iter()
        .filter(|i| !expire.contains(&i.id))
        .filter(|i| i.draining.is_some_and(|k| k != DrainKind::Spot))
        .count();
    let mut room = policy.budget(fleet.len()).saturating_sub(counted);
    let in_window = policy.window.as_ref().is_none_or(|w| w.contains(now));
    // Candidates: repairs, then lifetime (oldest first), then images.
    let mut candidates: Vec<(u8, f64, &Instance, DrainKind)> = vec![];
    for i in fleet {
        if i.draining.is_some() || i.interrupted || expire.contains(&i.id) {
            continue;
        }
        if i.impaired {
            candidates.push((0, i.launched_at, i, DrainKind::Repair));
            continue;
        }
        let due = policy.drain_due(&i.id, i.launched_at);
        let latest = policy.deadline(i.launched_at) - policy.drain_margin;
        let lifetime_due = match &policy.window {
            None => now >= due,
            Some(w) => {
                // Inside a window: at the drain age, or earlier when no
                // later window opens before the latest start.
                in_window && (now >= due || w.next_start(now + 1.0) > latest)
                    // No window before the latest start at all: drain anyway.
                    || now >= latest
            }
        };
        if lifetime_due {
            candidates.push((1, i.launched_at, i, DrainKind::Lifetime));
        } else {
            match &policy.window {
                None => wake(due),
                Some(w) => wake(w.next_start(now).max(now + 1.0).min(latest)),
            }
            if i.outdated_image && in_window {
                candidates.push((2, i.launched_at, i, DrainKind::Image));
            } else if i.outdated_image {
                if let Some(w) = &policy.window {
                    wake(w.next_start(now));
                }
            }
        }
    }
    candidates.sort_by(|a, b| {
        (a.0, a.1, &a.2.id)
            .partial_cmp(&(b.0, b.1, &b.2.id))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for (_, _, i, kind) in candidates {
        if room == 0 {
            break;
        }
        drain.push((i.id.clone(), kind));
        room -= 1;
    }
    d.drain = drain;
    d.expire = expire;
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: f64 = 86_400.0;

    fn inst(id: &str, launched_at: f64) -> Instance {
        Instance {
            id: id.into(),
            launched_at,
            draining: None,
            outdated_image: false,
            impaired: false,
            interrupted: false,
        }
    }

    #[test]
    fn windows_parse_and_contain() {
        let w = Window::parse("sat,sun 02-06").expect("parses");
        assert_eq!(w.days, vec![5, 6]);
        // 1970-01-03 was a Saturday.
        assert!(w.contains(2.0 * DAY + 3.0 * 3600.0));
        assert!(!w.contains(2.0 * DAY + 7.0 * 3600.0));
        assert!(!w.contains(1.0 * DAY + 3.0 * 3600.0));
        let night = Window::parse("mon-fri 22-02").expect("parses");
        assert_eq!(night.days, vec![0, 1, 2, 3, 4]);
        // Friday 23:00 and Saturday 01:00 belong to Friday's window.
        assert!(night.contains(DAY + 23.0 * 3600.0));
        assert!(night.contains(2.0 * DAY + 3600.0));
        assert!(!night.contains(3.0 * DAY + 3600.0 + DAY)); // Monday 01:00 belongs to Sunday
        assert_eq!(
            Window::parse("daily 03-05")
                .expect("parses")
                .next_start(0.0),
            3.0 * 3600.0
        );
        for bad in [
            "",
            "sat",
            "sat 02",
            "funday 02-03",
            "sat 25-02",
            "sat 03-03",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn drains_are_due_at_the_drain_age_spread_and_within_the_budget() {
        let p = Policy::default();
        let fleet: Vec<Instance> = (0..20).map(|i| inst(&format!("i-{i}"), 0.0)).collect();
        assert!(decide(&p, &fleet, 12.0 * DAY).drain.is_empty());
        let d = decide(&p, &fleet, 14.0 * DAY);
        assert_eq!(d.drain.len(), 4, "20 % of 20");
        assert!(d.drain.iter().all(|(_, k)| *k == DrainKind::Lifetime));
        // Due dates differ by id (without batches).
        let unbatched = Policy {
            batch: 0.0,
            ..p.clone()
        };
        let dues: std::collections::BTreeSet<u64> = fleet
            .iter()
            .map(|i| unbatched.drain_due(&i.id, 0.0) as u64)
            .collect();
        assert!(dues.len() > 10);
        // Below 9 instances: one at a time, and draining ones count.
        let mut small: Vec<Instance> = (0..5).map(|i| inst(&format!("s-{i}"), 0.0)).collect();
        assert_eq!(decide(&p, &small, 14.0 * DAY).drain.len(), 1);
        small[0].draining = Some(DrainKind::Lifetime);
        assert!(decide(&p, &small, 14.0 * DAY).drain.is_empty());
    }

    #[test]
    fn drains_due_in_the_same_batch_start_together_within_the_budget() {
        let p = Policy::default();
        assert_eq!(p.batch, 3.0 * 3600.0);
        let fleet: Vec<Instance> = (0..400).map(|i| inst(&format!("i-{i}"), 0.0)).collect();
        for i in &fleet {
            let due = p.drain_due(&i.id, 0.0);
            let spread = Policy {
                batch: 0.0,
                ..p.clone()
            }
            .drain_due(&i.id, 0.0);
            // At the start of its batch, never later than its spread date,
            // never more than a batch earlier.
            assert_eq!(due % p.batch, 0.0);
            assert!(due <= spread && spread - due < p.batch);
        }
        // The first batch of the spread: every instance due then drains at
        // its start, together, within the budget (20 % of 400 = 80).
        let first = fleet
            .iter()
            .map(|i| p.drain_due(&i.id, 0.0))
            .fold(f64::INFINITY, f64::min);
        let due_then = fleet
            .iter()
            .filter(|i| p.drain_due(&i.id, 0.0) == first)
            .count();
        assert!(due_then > 1);
        let d = decide(&p, &fleet, first);
        assert_eq!(d.drain.len(), due_then.min(80));
        assert!(decide(&p, &fleet, first - 1.0).drain.is_empty());
        // The next wake-up is the next batch.
        assert_eq!(d.next_in, Some(p.batch));
    }

    #[test]
    fn the_deadline_expires_whatever_the_budget_and_spot_drains_at_once() {
        let p = Policy::default();
        let mut fleet = vec![inst("a", 0.0), inst("b", 0.0), inst("c", 10.0 * DAY)];
        fleet[0].draining = Some(DrainKind::Lifetime);
        fleet[2].interrupted = true;
        let d = decide(&p, &fleet, 21.0 * DAY);
        assert_eq!(d.expire, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(d.drain, vec![("c".to_string(), DrainKind::Spot)]);
    }

    #[test]
    fn repairs_come_first_and_images_roll_within_windows() {
        let mut p = Policy::default();
        let mut fleet = vec![inst("old", 0.0), inst("sick", 5.0 * DAY)];
        fleet[0].outdated_image = true;
        fleet[1].impaired = true;
        let d = decide(&p, &fleet, 6.0 * DAY);
        assert_eq!(d.drain, vec![("sick".to_string(), DrainKind::Repair)]);
        fleet[1].impaired = false;
        assert_eq!(
            decide(&p, &fleet, 6.0 * DAY).drain,
            vec![("old".to_string(), DrainKind::Image)]
        );
        // With a window, the image waits for it.
        p.window = Some(Window::parse("sat,sun 02-06").expect("parses"));
        let thursday_noon = 7.0 * DAY + 12.0 * 3600.0;
        let d = decide(&p, &fleet, thursday_noon);
        assert!(d.drain.is_empty());
        assert!(d.next_in.is_some_and(|n| n > 0.0 && n < 3.0 * DAY));
        let saturday_3am = 9.0 * DAY + 3.0 * 3600.0;
        assert_eq!(
            decide(&p, &fleet, saturday_3am).drain,
            vec![("old".to_string(), DrainKind::Image)]
        );
    }

    #[test]
    fn a_window_before_the_deadline_brings_the_lifetime_drain_forward() {
        let p = Policy {
            window: Some(Window::parse("sun 02-04").expect("parses")),
            ..Policy::default()
        };
        // Launched on a Thursday: the drain age (day 14) is a Thursday, and
        // the last Sunday window before the deadline (day 21, a Thursday,
        // less the margin) is day 17.
        let fleet = vec![inst("a", 0.0)];
        let sunday_3am = |week: f64| (3.0 + 7.0 * week) * DAY + 3.0 * 3600.0;
        // Day 10 (the second Sunday): a later window still comes in time.
        assert!(decide(&p, &fleet, sunday_3am(1.0)).drain.is_empty());
        // Day 17 (the third Sunday, after the drain age): drain.
        assert_eq!(decide(&p, &fleet, sunday_3am(2.0)).drain.len(), 1);
        // With a drain age of 20 days, day 17 is still the last window in time.
        let mut late = p.clone();
        late.drain_age = 20.0 * DAY;
        late.spread = 0.0;
        assert_eq!(decide(&late, &fleet, sunday_3am(2.0)).drain.len(), 1);
        assert!(decide(&late, &fleet, sunday_3am(1.0)).drain.is_empty());
    }
}

//! The one clock every timed behaviour reads.
//!
//! Nothing in berth calls the system time directly: the server injects a
//! real clock, tests and the simulator a [`ManualClock`] they advance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A source of the current time, as a duration since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;

    /// Seconds since the epoch with millisecond precision, as ECS timestamps are sent.
    fn epoch_seconds(&self) -> f64 {
        let d = self.now();
        (d.as_millis() as f64) / 1000.0
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    pub fn new(start: Duration) -> Self {
        Self {
            nanos: AtomicU64::new(start.as_nanos() as u64),
        }
    }
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
    pub fn set(&self, to: Duration) {
        self.nanos.store(to.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Duration::from_secs(100));
        assert_eq!(c.epoch_seconds(), 100.0);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.epoch_seconds(), 101.5);
        c.set(Duration::from_secs(7));
        assert_eq!(c.now(), Duration::from_secs(7));
    }
}

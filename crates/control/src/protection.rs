//! Task scale-in protection: whether a task may be stopped to scale in or to
//! consolidate instances.
//!
//! # Design
//!
//! A task's protection is kept in the store's meta table under
//! `protection/<task ARN>` as `{"enabled": bool, "expiresAt": epoch seconds}`,
//! beside the task rather than in it: the `Task` shape has no member for it,
//! and a protection write must not race the agent's task reports for the
//! task's version. `UpdateTaskProtection` writes it; `GetTaskProtection`
//! reads it, and scale-in and consolidation in the scheduler are to ask
//! [`is_protected`] before they stop a task.
//!
//! Expiry is never written: a protection whose `expiresAt` has passed reads
//! as off, so no reconciler has to clear it. Time comes only from the
//! caller's `now`, read from the injected `Clock`.
//!
//! # Limitations
//!
//! The record outlives its task; callers only ask about tasks that still run.

use berth_model::EcsError;
use berth_store::Tx;
use foldhash::HashMap;
use serde::{Deserialize, Serialize};

/// A task's scale-in protection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Protection {
    /// Never set, turned off, or (after [`Protection::at`]) expired.
    Off,
    /// Protected until `expires_at` (epoch seconds), exclusive.
    Until { expires_at: f64 },
}

impl Protection {
    /// The protection as it stands at `now`: an expired one is off.
    pub fn at(self, now: f64) -> Protection {
        match self {
            Protection::Until { expires_at } if now < expires_at => self,
            Protection::Until { .. } | Protection::Off => Protection::Off,
        }
    }
}

/// The stored form.
#[derive(Serialize, Deserialize)]
struct Record {
    enabled: bool,
    #[serde(rename = "expiresAt", default)]
    expires_at: Option<f64>,
}

const PREFIX: &str = "protection/";

fn key(task_arn: &str) -> String {
    format!("{PREFIX}{task_arn}")
}

/// The stored protection of a task, expired or not (`Off` when none was ever set).
pub fn load(tx: &dyn Tx, task_arn: &str) -> Result<Protection, EcsError> {
    match tx.meta(&key(task_arn))? {
        Some(text) => parse(task_arn, &text),
        None => Ok(Protection::Off),
    }
}

/// Every stored protection, read at once: what a pass over many tasks asks
/// instead of reading each task's.
pub struct Protections(HashMap<String, String>);

impl Protections {
    pub fn load(tx: &dyn Tx) -> Result<Protections, EcsError> {
        let mut by_task = HashMap::default();
        for (k, text) in tx.metas(PREFIX)? {
            if let Some(arn) = k.strip_prefix(PREFIX) {
                by_task.insert(arn.to_string(), text);
            }
        }
        Ok(Protections(by_task))
    }

    /// [`is_protected`] from what was read.
    pub fn is_protected(&self, task_arn: &str, now: f64) -> Result<bool, EcsError> {
        let p = match self.0.get(task_arn) {
            Some(text) => parse(task_arn, text)?,
            None => Protection::Off,
        };
        Ok(matches!(p.at(now), Protection::Until { .. }))
    }
}

fn parse(task_arn: &str, text: &str) -> Result<Protection, EcsError> {
    let record: Record = serde_json::from_str(text).map_err(|e| {
        EcsError::server(format!("stored protection of {task_arn} is corrupt: {e}"))
    })?;
    match (record.enabled, record.expires_at) {
        (true, Some(expires_at)) => Ok(Protection::Until { expires_at }),
        (true, None) => Err(EcsError::server(format!(
            "stored protection of {task_arn} is corrupt: enabled without expiresAt"
        ))),
        (false, _) => Ok(Protection::Off),
    }
}

/// Stores a task's protection (within the caller's transaction).
pub fn save(tx: &dyn Tx, task_arn: &str, protection: Protection) -> Result<(), EcsError> {
    let record = match protection {
        Protection::Off => Record {
            enabled: false,
            expires_at: None,
        },
        Protection::Until { expires_at } => Record {
            enabled: true,
            expires_at: Some(expires_at),
        },
    };
    let text = serde_json::to_string(&record)
        .map_err(|e| EcsError::server(format!("cannot store protection of {task_arn}: {e}")))?;
    tx.put_meta(&key(task_arn), &text)?;
    Ok(())
}

/// Whether the task is protected from scale-in at `now` (epoch seconds).
pub fn is_protected(tx: &dyn Tx, task_arn: &str, now: f64) -> Result<bool, EcsError> {
    Ok(matches!(
        load(tx, task_arn)?.at(now),
        Protection::Until { .. }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::Store;

    const ARN: &str = "arn:aws:ecs:us-east-1:000000000000:task/c1/0123456789abcdef0123456789abcdef";

    #[test]
    fn unset_is_unprotected() {
        let store = Store::in_memory().expect("store");
        let got = store.read(|tx| is_protected(tx, ARN, 100.0));
        assert!(matches!(got, Ok(false)));
    }

    #[test]
    fn protected_until_the_expiry_exclusive() {
        let store = Store::in_memory().expect("store");
        let saved = store.write(|tx| save(tx, ARN, Protection::Until { expires_at: 160.0 }));
        assert!(saved.is_ok());
        for (now, want) in [(100.0, true), (159.9, true), (160.0, false), (1e9, false)] {
            let got = store.read(|tx| is_protected(tx, ARN, now));
            assert!(matches!(got, Ok(w) if w == want), "at {now}: {got:?}");
        }
        let other = store.read(|tx| is_protected(tx, "arn:other", 100.0));
        assert!(matches!(other, Ok(false)));
    }

    #[test]
    fn read_at_once_they_say_what_one_by_one_says() {
        let store = Store::in_memory().expect("store");
        let other = "arn:aws:ecs:us-east-1:000000000000:task/c1/ffffffffffffffffffffffffffffffff";
        let saved = store.write(|tx| {
            save(tx, ARN, Protection::Until { expires_at: 160.0 })?;
            save(tx, other, Protection::Off)?;
            tx.put_meta("protectionless", "{}")?;
            Ok::<_, EcsError>(())
        });
        assert!(saved.is_ok());
        let all = store.read(|tx| Protections::load(tx)).expect("load");
        for arn in [ARN, other, "arn:unknown"] {
            for now in [100.0, 159.9, 160.0] {
                let one = store.read(|tx| is_protected(tx, arn, now)).expect("one");
                assert_eq!(
                    all.is_protected(arn, now).expect("all"),
                    one,
                    "{arn} at {now}"
                );
            }
        }
        assert!(all.is_protected(ARN, 100.0).expect("all"));
        let corrupt = store.write(|tx| {
            tx.put_meta(&key(other), "{\"enabled\":true}")?;
            Ok::<_, EcsError>(())
        });
        assert!(corrupt.is_ok());
        let all = store.read(|tx| Protections::load(tx)).expect("load");
        assert!(all.is_protected(other, 100.0).is_err());
        assert!(all.is_protected(ARN, 100.0).expect("the others still read"));
    }

    #[test]
    fn turning_off_clears_it() {
        let store = Store::in_memory().expect("store");
        let r = store.write(|tx| {
            save(tx, ARN, Protection::Until { expires_at: 160.0 })?;
            save(tx, ARN, Protection::Off)
        });
        assert!(r.is_ok());
        assert!(matches!(
            store.read(|tx| load(tx, ARN)),
            Ok(Protection::Off)
        ));
        assert!(matches!(
            store.read(|tx| is_protected(tx, ARN, 100.0)),
            Ok(false)
        ));
    }

    #[test]
    fn a_corrupt_record_is_a_server_error() {
        let store = Store::in_memory().expect("store");
        let r = store.write(|tx| {
            tx.put_meta(&key(ARN), "{\"enabled\":true}")?;
            Ok::<_, EcsError>(())
        });
        assert!(r.is_ok());
        assert!(store.read(|tx| is_protected(tx, ARN, 100.0)).is_err());
    }
}

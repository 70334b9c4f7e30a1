//! A rider lands in the commit of the write it rides with, or is handed back.

#![allow(clippy::unwrap_used)]

use berth_store::rider::{self, Rider};
use berth_store::{Durability, Expect, Store, StoreError};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("berth.db"), Durability::Full).unwrap();
    (dir, store)
}

fn rider(key: &str) -> Rider {
    Rider {
        kind: "audit".into(),
        key: key.into(),
        parent: "api".into(),
        doc: format!("{{\"key\":\"{key}\"}}"),
    }
}

fn stored(store: &Store, kind: &str, key: &str) -> bool {
    store.read(|tx| tx.document(kind, key)).unwrap().is_some()
}

#[test]
fn rides_the_first_committed_write() {
    let (_d, store) = store();
    let (out, left) = rider::with(rider("r1"), || {
        store.write(|tx| tx.put_document("thing", "a", "p", "{}", Expect::Absent))?;
        store.write(|tx| tx.put_document("thing", "b", "p", "{}", Expect::Absent))
    });
    assert!(out.is_ok());
    assert_eq!(left, None);
    assert!(stored(&store, "audit", "r1"));
    assert!(stored(&store, "thing", "a") && stored(&store, "thing", "b"));
}

#[test]
fn a_failed_write_hands_the_rider_on() {
    let (_d, store) = store();
    let (out, left) = rider::with(rider("r2"), || {
        store.write(|tx| -> Result<(), StoreError> {
            tx.put_document("thing", "a", "p", "{}", Expect::Absent)?;
            Err(StoreError::Backend("refused".into()))
        })
    });
    assert!(out.is_err());
    assert_eq!(left, Some(rider("r2")));
    assert!(!stored(&store, "audit", "r2"));
    assert!(!stored(&store, "thing", "a"));

    // A failed write followed by a good one: the good one carries it.
    let (_, left) = rider::with(rider("r3"), || {
        let _ = store
            .write(|_tx| -> Result<(), StoreError> { Err(StoreError::Backend("refused".into())) });
        store.write(|tx| tx.put_document("thing", "c", "p", "{}", Expect::Absent))
    });
    assert_eq!(left, None);
    assert!(stored(&store, "audit", "r3"));
}

#[test]
fn reads_and_other_threads_never_carry_it() {
    let (_d, store) = store();
    let store = std::sync::Arc::new(store);
    let other = store.clone();
    let (_, left) = rider::with(rider("r4"), || {
        store.read(|tx| tx.meta("schema")).unwrap();
        std::thread::spawn(move || {
            other.write(|tx| tx.put_document("thing", "t", "p", "{}", Expect::Absent))
        })
        .join()
        .unwrap()
        .unwrap();
    });
    assert_eq!(left, Some(rider("r4")));
    assert!(!stored(&store, "audit", "r4"));
    // Nothing stays pending after the call.
    store
        .write(|tx| tx.put_document("thing", "u", "p", "{}", Expect::Absent))
        .unwrap();
    assert!(!stored(&store, "audit", "r4"));
}

#[test]
fn a_panic_leaves_nothing_pending() {
    let (_d, store) = store();
    let caught = std::panic::catch_unwind(|| rider::with(rider("r5"), || panic!("boom")));
    assert!(caught.is_err());
    store
        .write(|tx| tx.put_document("thing", "v", "p", "{}", Expect::Absent))
        .unwrap();
    assert!(!stored(&store, "audit", "r5"));
}

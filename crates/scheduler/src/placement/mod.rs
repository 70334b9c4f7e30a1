//! Placement onto running instances (see the crate docs).

//! berth's scheduling cores, pure functions over in-memory snapshots (no I/O):
//!
//! * [`placement`]: which running instance gets which pending task, under ECS
//!   placement strategies and constraints;
//! * [`plan`]: which instance types to launch, and how many, for the tasks that
//!   do not fit on running instances, at the lowest hourly cost, with a proven
//!   lower bound.
//!
//! The `control` crate's reconcilers feed these from the store; `berth capacity
//! plan` and `berth bench` call them directly.

pub mod consolidate;
pub mod lifecycle;
pub mod placement;
pub mod plan;
pub mod service;

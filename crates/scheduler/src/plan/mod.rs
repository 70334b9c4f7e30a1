//! The provisioning planner (see the crate docs).

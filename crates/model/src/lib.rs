//! berth's domain: the ECS wire shapes, ARNs, names, resources and errors.
//!
//! # Design
//!
//! [`ecs`] is generated from the AWS ECS service model (`tools/gen_shapes.py`),
//! so every request and response member is named and typed as AWS has it:
//! optional members are `Option`, the model's primitive members are plain
//! values that are always sent, enums are Rust enums. Everything else here is
//! hand-written domain logic over those shapes. The crate does no I/O.

pub mod arn;
pub mod clock;
pub mod ecs;
pub mod error;
pub mod meter;
pub mod names;
pub mod resources;
pub mod tags;
pub mod wire;

pub use error::{EcsError, ErrorKind};

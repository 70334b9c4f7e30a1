//! The berth agent: runs on each instance, converges real containers (runc, or plain processes) to the desired set of tasks.

pub mod daemon;
pub mod exec;
pub mod images;
pub mod leftovers;
pub mod network;
pub mod runtime;
pub mod supervisor;
pub mod volumes;

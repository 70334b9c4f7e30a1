//! berth's controllers: the reconcilers that turn stored desired state into
//! running instances and tasks, and the agent state machine.
//!
//! # Design
//!
//! Everything here works over a [`Ctx`] (the store, the ARN context, the one
//! clock and the catalog), an [`berth_providers::InstanceProvider`] and an
//! [`AgentLink`] that delivers messages to connected agents. There is no HTTP
//! here: the server owns sockets and calls in. The same code runs under a
//! virtual clock and the sim provider.
//!
//! Reconcilers are level-triggered: [`scheduler::Scheduler::tick`] reads the
//! whole desired and observed state, takes the converging steps (place a
//! task, launch an instance, push a desired set) and can run again at any
//! moment — after a crash at any line — without harm, because each step is
//! one store transaction that re-checks what it read.
//!
//! # Limitations
//!
//! Placement is first-fit by capacity provider with memory binpacking, and
//! provisioning launches the cheapest catalog type that fits; the
//! cost-optimal planner and ECS placement strategies come later.

pub mod agents;
pub mod daemons;
pub mod lifecycle;
pub mod metering;
pub mod placing;
pub mod protection;
pub mod scheduler;
pub mod services;
pub mod tasks;
pub mod usage;

use berth_catalog::Catalog;
use berth_model::arn::ArnContext;
use berth_model::clock::Clock;
use berth_protocol::ServerMessage;
use berth_store::Store;
use std::sync::Arc;

/// What the service layer and the controllers work with.
pub struct Ctx {
    pub store: Store,
    pub arns: ArnContext,
    pub clock: Arc<dyn Clock>,
    pub catalog: &'static Catalog,
}

impl Ctx {
    /// Now, as ECS timestamps are written.
    pub fn now(&self) -> f64 {
        self.clock.epoch_seconds()
    }
}

/// Delivers messages to connected agents.
pub trait AgentLink: Send + Sync {
    /// Sends a message to an instance's agent; false when it is not connected.
    fn send(&self, instance_id: &str, message: ServerMessage) -> bool;
}

/// A hex SHA-256, for storing tokens and credentials without keeping them.
pub fn digest(secret: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// A random secret of 32 bytes, hex encoded.
pub fn new_secret() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

//! `berth simulate`: weeks of a fleet's life in seconds.
//!
//! The real controllers — the scheduler's placement, the cost planner,
//! provisioning, scale-in, the service reconciler and the instance
//! lifecycle — run over an in-memory store on a virtual clock, launching
//! through the sim instance provider; simulated agents join, run and stop
//! tasks by the same calls the server makes for real agents. No sockets, no
//! containers. The scene is set through the ECS operations themselves
//! (`berth_server::ops::dispatch`), so a scenario gets the API's validation.
//!
//! * [`scenario`]: the scenario file and its errors (each names its field);
//! * [`engine`]: the simulation, its stepping and its agents;
//! * [`report`]: what it found.
//!
//! ```no_run
//! let scenario = berth_sim::Scenario::parse(r#"{"duration": "7d",
//!     "services": [{"name": "web", "cpu": 512, "memory": 1024, "desiredCount": 10}]}"#)?;
//! let report = berth_sim::simulate(scenario)?;
//! println!("{} instances launched", report.instances_launched);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod engine;
pub mod report;
pub mod scenario;

pub use engine::{simulate, Options, SimError, Simulation};
pub use report::Report;
pub use scenario::{Scenario, ScenarioError};

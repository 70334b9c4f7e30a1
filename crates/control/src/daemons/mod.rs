//! Managed daemons: one task of each daemon on every instance of its
//! capacity providers. [`records`] is how they are stored (the API writes
//! them, in the server's `ops::daemons`); [`reconcile`] runs their tasks.

pub mod reconcile;
pub mod records;

pub use reconcile::{reconcile_cluster, DaemonView};
pub use records::*;

//! Managed daemons: one task of each daemon on every instance of its
//! capacity providers.

pub mod records;

pub use records::*;

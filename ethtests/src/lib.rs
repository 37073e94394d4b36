//! lockstep-ethtests: Ethereum test fixtures through every executor path and store.

pub use lockstep_harness::fixtures;

pub mod blockchain;
pub mod network;
pub mod report;
pub mod runner;
pub mod schema;
pub mod state;

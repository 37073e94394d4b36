//! lockstep-ethtests: Ethereum test fixtures through every executor path.

pub mod fixtures;
pub mod schema;

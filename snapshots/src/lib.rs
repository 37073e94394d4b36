//! lockstep-snapshots: real mainnet blocks with their pre-state, replayed on every executor
//! path and store and checked against the block header.

pub mod format;
pub mod replay;
pub mod summary;

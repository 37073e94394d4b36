//! lockstep-snapshots: real mainnet blocks with their pre-state, replayed on every executor
//! path and store and checked against the block header ([`replay`]), and captured from a
//! JSON-RPC node ([`capture`]). The files are described in [`format`].

pub mod capture;
pub mod format;
pub mod replay;
pub mod summary;

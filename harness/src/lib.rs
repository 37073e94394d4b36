//! lockstep-harness: workloads, and comparison and timing of executor runs.

pub mod asm;
pub mod bench;
pub mod contracts;
pub mod fixtures;
pub mod random_block;
pub mod workloads;

pub use workloads::{Workload, WorkloadKind};

//! lockstep-harness: workloads, and comparison and timing of executor runs.

pub mod asm;
pub mod bench;
pub mod case;
pub mod contracts;
pub mod fetch;
pub mod fixtures;
pub mod http;
pub mod local_http;
pub mod random_block;
pub mod workloads;

pub use workloads::{Workload, WorkloadKind};

/// The exit code of a checking command: 0 when everything passed, 1 when a case failed,
/// 2 when the command could not run (the error is printed).
pub fn exit_code(result: Result<bool, String>) -> std::process::ExitCode {
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

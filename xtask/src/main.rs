//! `cargo xtask`: the project's automation, as plain Rust instead of shell scripts.
//!
//! Heavy suites run in release builds of the project's own binaries; this crate only
//! orchestrates them.

use clap::{Parser, Subcommand};
use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "lockstep's project automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Benchmark the sequential and parallel paths on the generated 1-gigagas workloads
    /// (release build), then replay the mainnet snapshots when they are present. Extra
    /// arguments go to `lockstep perf` (see `--help` there).
    Perf {
        /// JSON report path.
        #[arg(long, default_value = "target/perf.json")]
        json: PathBuf,
        /// Skip the mainnet snapshots even when $SNAPSHOTS_DIR or ../shared/mainnet exists.
        #[arg(long)]
        no_snapshots: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the Ethereum state and blockchain tests through both executor paths (release
    /// build). Extra arguments go to `lockstep-ethtests` (see `--help` there): paths, --fork,
    /// --filter, --storage, --threads, --shard I/N, --json, --junit, --keep-going, --fetch.
    Ethtests {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Replay the mainnet block snapshots on both paths and both stores (release build), or
    /// capture new ones from a JSON-RPC node: `capture --rpc URL --block N... [--out DIR]`.
    /// Extra arguments go to `lockstep-snapshots` (see `--help` there): DIR|ARCHIVE,
    /// --block N..., --storage, --threads, --runs, --json, --plot.
    Snapshots {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// What CI runs: formatting, clippy with warnings denied, and the test suite.
    Ci,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

fn cargo(args: &[&str]) -> Result<(), String> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// Runs one of the project's binaries in a release build with `args`.
fn release_bin(package: &str, bin: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["run", "--release", "--quiet", "-p", package, "--bin", bin, "--"];
    all.extend_from_slice(args);
    cargo(&all)
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn run(task: Task) -> Result<(), String> {
    match task {
        Task::Perf { json, no_snapshots, args } => {
            let json = json.to_string_lossy().into_owned();
            let mut all = vec!["perf", "--json", &json];
            all.extend(strs(&args));
            release_bin("lockstep-harness", "lockstep", &all)?;
            let snapshots = std::env::var_os("SNAPSHOTS_DIR")
                .map_or_else(|| root().join("../shared/mainnet"), PathBuf::from);
            if no_snapshots || !snapshots.exists() {
                return Ok(());
            }
            release_bin(
                "lockstep-snapshots",
                "lockstep-snapshots",
                &["--json", "target/snapshots.json", "--plot", "target/snapshots.svg"],
            )
        }
        Task::Ethtests { args } => {
            release_bin("lockstep-ethtests", "lockstep-ethtests", &strs(&args))
        }
        Task::Snapshots { args } => {
            release_bin("lockstep-snapshots", "lockstep-snapshots", &strs(&args))
        }
        Task::Ci => {
            cargo(&["fmt", "--all", "--", "--check"])?;
            cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
            cargo(&["nextest", "run", "--workspace"])
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

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
    /// Fuzz the parallel path against the sequential one with cargo-fuzz (`cargo install
    /// cargo-fuzz --locked`), on random conflict-heavy blocks; or save a crash as a case of
    /// the regression corpus (`fuzz/regressions/`) that the tests replay.
    Fuzz {
        #[command(subcommand)]
        save: Option<FuzzSave>,
        /// Stop after this many seconds (0: run until stopped or a failure).
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Worker processes (libFuzzer's `-fork`); each also uses the block's threads.
        #[arg(long, default_value_t = 1)]
        jobs: u32,
    },
    /// What CI runs: formatting, clippy with warnings denied (the fuzz crate too), and the
    /// test suite.
    Ci,
}

#[derive(Subcommand)]
enum FuzzSave {
    /// Write the case of a crash input as `fuzz/regressions/NAME.json` (after
    /// `cargo fuzz tmin` has shrunk it, for the smallest case).
    Save {
        /// The input libFuzzer saved, e.g. fuzz/artifacts/parallel_matches_sequential/crash-...
        artifact: PathBuf,
        /// The fixture's name, e.g. the bug it caught.
        name: String,
    },
}

/// The one fuzz target: a random block through every parallel configuration.
const FUZZ_TARGET: &str = "parallel_matches_sequential";

fn fuzz(save: Option<FuzzSave>, time: u64, jobs: u32) -> Result<(), String> {
    let fuzz = |args: &[String], envs: &[(&str, &Path)]| {
        eprintln!("$ cargo fuzz {}", args.join(" "));
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .arg("fuzz")
            .args(args)
            .envs(envs.iter().copied())
            .current_dir(root())
            .status()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))
    };
    let base = ["run", "--sanitizer", "none", FUZZ_TARGET].map(String::from);
    match save {
        None => {
            let mut args = base.to_vec();
            // Inputs of up to 48 transactions from the start (about 6 bytes each), rather
            // than libFuzzer's slow growth from a few bytes.
            let limits = ["-max_len=320".into(), "-len_control=0".into()];
            args.extend(["--".into(), format!("-max_total_time={time}")]);
            args.extend(limits);
            if jobs > 1 {
                args.push(format!("-fork={jobs}"));
            }
            let status = fuzz(&args, &[])?;
            status.success().then_some(()).ok_or_else(|| {
                format!(
                    "the fuzzer stopped ({status}): a crash is in fuzz/artifacts/{FUZZ_TARGET}/ \
                     (`cargo fuzz tmin --sanitizer none {FUZZ_TARGET} FILE` shrinks it, \
                     `cargo xtask fuzz save FILE NAME` keeps it); without cargo-fuzz, \
                     `cargo install cargo-fuzz --locked`"
                )
            })
        }
        Some(FuzzSave::Save { artifact, name }) => {
            let artifact = std::path::absolute(&artifact).map_err(|e| e.to_string())?;
            let case = root().join("fuzz/regressions").join(format!("{name}.json"));
            let mut args = base.to_vec();
            args.push(artifact.to_string_lossy().into_owned());
            // The input should still fail; the case is written before it runs either way.
            let _ = std::fs::remove_file(&case);
            let status = fuzz(&args, &[("LOCKSTEP_SAVE_CASE", &case)])?;
            if !case.exists() {
                return Err(format!("{}: no case was written", artifact.display()));
            }
            let verdict = if status.success() { "passes now" } else { "still fails" };
            eprintln!("saved {} (the input {verdict})", case.display());
            Ok(())
        }
    }
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

/// `perf`'s own flags picked out of the arguments for `lockstep perf` as well: once one of
/// those is given, the parser hands every later argument on, `--no-snapshots` and `--json`
/// included (`cargo xtask perf --gas 100000000 --no-snapshots`).
fn perf_args(args: Vec<String>, json: PathBuf, no_snapshots: bool) -> (Vec<String>, PathBuf, bool) {
    let (mut rest, mut json, mut no_snapshots) = (Vec::new(), json, no_snapshots);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-snapshots" => no_snapshots = true,
            "--json" => json = args.next().map_or(json, PathBuf::from),
            _ => match arg.strip_prefix("--json=") {
                Some(path) => json = PathBuf::from(path),
                None => rest.push(arg),
            },
        }
    }
    (rest, json, no_snapshots)
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn run(task: Task) -> Result<(), String> {
    match task {
        Task::Perf { json, no_snapshots, args } => {
            let (args, json, no_snapshots) = perf_args(args, json, no_snapshots);
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
        Task::Fuzz { save, time, jobs } => fuzz(save, time, jobs),
        Task::Ci => {
            let fuzz = ["--manifest-path", "fuzz/Cargo.toml"];
            cargo(&["fmt", "--all", "--", "--check"])?;
            cargo(&["fmt", fuzz[0], fuzz[1], "--", "--check"])?;
            cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
            cargo(&["clippy", fuzz[0], fuzz[1], "--target-dir", "target", "--", "-D", "warnings"])?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_flags_are_found_among_the_forwarded_arguments() {
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let default = PathBuf::from("target/perf.json");
        let given = args(&["--gas", "100", "--no-snapshots", "--json", "a.json", "--runs", "2"]);
        let (rest, json, skip) = perf_args(given, default.clone(), false);
        assert_eq!(
            (rest, json, skip),
            (args(&["--gas", "100", "--runs", "2"]), "a.json".into(), true)
        );
        let (rest, json, skip) = perf_args(args(&["--json=b.json"]), default.clone(), false);
        assert_eq!((rest, json, skip), (vec![], "b.json".into(), false));
        let (rest, json, skip) =
            perf_args(args(&["--workload", "amm-swaps"]), default.clone(), true);
        assert_eq!((rest, json, skip), (args(&["--workload", "amm-swaps"]), default, true));
    }
}

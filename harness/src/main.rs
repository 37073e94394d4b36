//! `lockstep`: run generated workloads through both executor paths on both stores, check that
//! they agree, and report how fast each is.

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use lockstep_executor::ParallelConfig;
use lockstep_harness::{
    WorkloadKind,
    bench::{self, BenchError, PerfRow, StorageArg, StorageKind},
};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(
    name = "lockstep",
    version,
    about = "Prove a parallel EVM executor matches the sequential one, and measure it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmark workloads sequentially and in parallel, alternating, and report
    /// medians, speedup, gas/s, re-executions and peak memory. Every run is also checked:
    /// parallel must equal sequential.
    Perf(PerfArgs),
    /// Run one workload once on each path on one store and print this process's peak
    /// memory in MiB: `perf` runs it in a process of its own for each row.
    #[command(hide = true)]
    Memory {
        #[arg(long, value_enum)]
        workload: WorkloadArg,
        #[arg(long, value_enum)]
        storage: StorageKind,
        #[arg(long)]
        gas: u64,
        #[arg(long)]
        threads: usize,
        #[arg(long)]
        always_parallel: bool,
    },
    /// Run one path repeatedly on one in-memory workload, for a profiler to watch.
    #[command(hide = true)]
    Profile {
        #[arg(long, value_enum)]
        workload: WorkloadArg,
        #[arg(long, value_enum)]
        path: PathArg,
        #[arg(long, default_value_t = 200_000_000)]
        gas: u64,
        #[arg(long, default_value_t = 10)]
        iterations: usize,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Take no sequential fallback, however the block looks.
        #[arg(long)]
        always_parallel: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PathArg {
    Sequential,
    Parallel,
    Revm,
}

fn profile(
    kind: WorkloadKind,
    path: PathArg,
    gas: u64,
    iterations: usize,
    threads: usize,
    always_parallel: bool,
) {
    use lockstep_executor::{InMemoryStorage, StateDiff, parallel, sequential};
    let workload = kind.generate(gas);
    let store = InMemoryStorage::from_diff(&StateDiff::from_alloc(&workload.alloc));
    let config = config(threads, always_parallel);
    // Time the runs only: dropping an outcome (or building revm's database) is not counted,
    // as in `perf`.
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = std::time::Instant::now();
        match path {
            PathArg::Sequential => {
                let outcome = std::hint::black_box(sequential::execute(&store, &workload.block));
                times.push(start.elapsed());
                drop(outcome);
            }
            PathArg::Parallel => {
                let outcome =
                    std::hint::black_box(parallel::execute(&store, &workload.block, &config));
                times.push(start.elapsed());
                drop(outcome);
            }
            PathArg::Revm => {
                std::hint::black_box(bench::revm_loop(&workload, &store).expect("in memory"));
                times.push(start.elapsed());
            }
        }
    }
    let median = bench::median(times.clone()).as_secs_f64() * 1e3;
    let min = times.iter().min().map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!("median {median:.2} ms, min {min:.2} ms per run");
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum WorkloadArg {
    RawTransfers,
    Erc20Transfers,
    AmmSwaps,
    DependentChain,
}

impl WorkloadArg {
    fn kind(self) -> WorkloadKind {
        match self {
            Self::RawTransfers => WorkloadKind::RawTransfers,
            Self::Erc20Transfers => WorkloadKind::Erc20Transfers,
            Self::AmmSwaps => WorkloadKind::AmmSwaps,
            Self::DependentChain => WorkloadKind::DependentChain,
        }
    }
}

#[derive(clap::Args)]
struct PerfArgs {
    /// Gas per generated block.
    #[arg(long, default_value_t = 1_000_000_000)]
    gas: u64,
    /// Timed runs per path (medians are reported); six run the three paths in each of their
    /// orders once.
    #[arg(long, default_value_t = 6)]
    runs: usize,
    /// Worker threads of the parallel path.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Workloads to run (default: all).
    #[arg(long, value_enum)]
    workload: Vec<WorkloadArg>,
    #[arg(long, value_enum, default_value_t = StorageArg::Both)]
    storage: StorageArg,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run every block through Block-STM, without the sequential fallbacks for small,
    /// transfer-only or chained blocks.
    #[arg(long)]
    always_parallel: bool,
}

fn config(threads: usize, always_parallel: bool) -> ParallelConfig {
    if always_parallel {
        ParallelConfig::always_parallel(threads)
    } else {
        ParallelConfig::with_threads(threads)
    }
}

fn perf(args: &PerfArgs) -> Result<Vec<PerfRow>, String> {
    let workloads = if args.workload.is_empty() {
        WorkloadArg::value_variants().to_vec()
    } else {
        args.workload.clone()
    };
    let storages = args.storage.kinds();
    let config = config(args.threads, args.always_parallel);
    let bar = ProgressBar::new(workloads.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("static template"),
    );
    // Every timed run then reuses memory already mapped (see `bench::prefault_heap`); the
    // peak memory of each row is measured in a process of its own, which this heap would hide.
    bench::prefault_heap(bench::PREFAULT_BYTES);
    let mut rows = Vec::new();
    for arg in workloads {
        let workload = arg.kind().generate(args.gas);
        bar.set_message(workload.name.clone());
        let mut peak = |storage| peak_memory_apart(args, arg, storage, &workload.name);
        rows.extend(
            bench::measure_all(&workload, &storages, &config, args.runs, &mut peak)
                .map_err(|e| e.to_string())?,
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(rows)
}

/// How `value` is spelled on the command line.
fn spelled(value: &impl ValueEnum) -> String {
    value.to_possible_value().expect("no skipped values").get_name().to_string()
}

/// The peak memory of `lockstep memory` run as a child process for one row of `perf`.
fn peak_memory_apart(
    args: &PerfArgs,
    workload: WorkloadArg,
    storage: StorageKind,
    name: &str,
) -> Result<f64, BenchError> {
    let fail = |message: String| BenchError::Memory {
        workload: name.to_string(),
        storage: storage.name(),
        message,
    };
    let mut command =
        std::process::Command::new(std::env::current_exe().map_err(|e| fail(e.to_string()))?);
    command.args(["memory", "--workload", &spelled(&workload), "--storage", &spelled(&storage)]);
    command.args(["--gas", &args.gas.to_string(), "--threads", &args.threads.to_string()]);
    if args.always_parallel {
        command.arg("--always-parallel");
    }
    let output = command.output().map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(fail(String::from_utf8_lossy(&output.stderr).trim().to_string()));
    }
    stdout.trim().parse().map_err(|_| fail(format!("not a number: {stdout:?}")))
}

#[global_allocator]
static ALLOCATOR: bench::Allocator = bench::Allocator;

fn main() -> ExitCode {
    bench::keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Memory { workload, storage, gas, threads, always_parallel } => {
            let workload = workload.kind().generate(gas);
            match bench::peak_memory(&workload, storage, &config(threads, always_parallel)) {
                Ok(peak) => {
                    println!("{peak:.1}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Profile { workload, path, gas, iterations, threads, always_parallel } => {
            profile(workload.kind(), path, gas, iterations, threads, always_parallel);
            ExitCode::SUCCESS
        }
        Command::Perf(args) => match perf(&args) {
            Ok(rows) => {
                print!("{}", bench::table(&rows));
                if let Some(path) = &args.json {
                    let json = serde_json::to_string_pretty(&rows).expect("rows serialize");
                    if let Err(e) = std::fs::write(path, json) {
                        eprintln!("error: cannot write {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

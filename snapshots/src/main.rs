//! `lockstep-snapshots`: replay mainnet block snapshots on both paths and both stores, or
//! capture new ones from a JSON-RPC node (`capture`).

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lockstep_executor::ParallelConfig;
use lockstep_harness::{bench::StorageArg, fixtures, http::RpcClient};
use lockstep_snapshots::{
    capture::{self, Captured},
    replay::{self, BlockReport},
    summary::Report,
};
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

/// Replay mainnet block snapshots sequentially and in parallel, check them against their
/// headers (gas used, receipts root, logs bloom), and time both paths.
#[derive(Parser)]
#[command(name = "lockstep-snapshots", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Snapshot directory or .tar.zst archive (default: $SNAPSHOTS_DIR's ethereum-blocks).
    path: Option<PathBuf>,
    /// Only these blocks.
    #[arg(long, num_args = 1..)]
    block: Vec<u64>,
    #[arg(long, value_enum, default_value_t = StorageArg::Both)]
    storage: StorageArg,
    /// Threads of the parallel path.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed runs per path and block (medians are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot of the speedup per block here.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Capture snapshots from a JSON-RPC archive node with the debug API (prestate tracer),
    /// then replay each once and check it against its header.
    Capture {
        /// JSON-RPC endpoint URL.
        #[arg(long)]
        rpc: String,
        /// Blocks to capture.
        #[arg(long, num_args = 1.., required = true)]
        block: Vec<u64>,
        /// Snapshot directory to write into (default: .cache/captured in the workspace, or
        /// under $LOCKSTEP_CACHE).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[global_allocator]
static ALLOCATOR: lockstep_harness::bench::Allocator = lockstep_harness::bench::Allocator;

fn main() -> ExitCode {
    lockstep_harness::bench::keep_freed_memory();
    let args = Args::parse();
    lockstep_harness::exit_code(match &args.command {
        Some(Command::Capture { rpc, block, out }) => {
            let out = out.clone().unwrap_or_else(|| fixtures::cache_dir().join("captured"));
            run_capture(&RpcClient::new(rpc), block, &out)
        }
        None => {
            // Replays are timed: no timed run should be the one that grows the heap.
            lockstep_harness::bench::prefault_heap(lockstep_harness::bench::PREFAULT_BYTES);
            run(&args)
        }
    })
}

/// Captures each block; one that fails is reported and the others still go on.
fn run_capture(rpc: &RpcClient, blocks: &[u64], out: &Path) -> Result<bool, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut ok = true;
    for &number in blocks {
        let result = capture::capture(rpc, number, out);
        ok &= result.as_ref().is_ok_and(|c| c.check.is_ok());
        println!("{}", describe(number, &result));
    }
    Ok(ok)
}

fn describe(number: u64, result: &Result<Captured, String>) -> String {
    let c = match result {
        Ok(c) => c,
        Err(e) => return format!("block {number}: capture failed: {e}"),
    };
    let captured = format!(
        "block {number}: captured into {} ({} accounts, {} slots, {} block hashes read)",
        c.dir.display(),
        c.accounts,
        c.slots,
        c.block_hashes.len()
    );
    match &c.check {
        Ok(true) => format!("{captured}; replay matches gas used, logs bloom and receipts root"),
        Ok(false) => format!(
            "{captured}; replay matches gas used and logs bloom (receipts root unchecked before \
             Byzantium)"
        ),
        Err(e) => format!("{captured}, but its replay does not match the header: {e}"),
    }
}

/// How many blocks take turns in one batch.
const BATCH: usize = 32;

fn run(args: &Args) -> Result<bool, String> {
    let path = match &args.path {
        Some(path) => path.clone(),
        None => fixtures::default_snapshots_dir()
            .ok_or("no snapshots: pass a path or set SNAPSHOTS_DIR")?
            .join("ethereum-blocks.tar.zst"),
    };
    let mut root = fixtures::materialize(&path).map_err(|e| e.to_string())?;
    if root.join("ethereum").is_dir() {
        root = root.join("ethereum");
    }
    let (mut blocks, hashes) = replay::list(&root).map_err(|e| e.to_string())?;
    if !args.block.is_empty() {
        blocks.retain(|(n, _)| args.block.contains(n));
    }
    let storages = args.storage.kinds();
    let config = ParallelConfig::with_threads(args.threads);
    let bar = ProgressBar::new(blocks.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} blocks {msg}").expect("static template"),
    );
    let mut reports: Vec<BlockReport> = Vec::new();
    // Blocks take turns within a batch (see `replay_all`); batches bound what is held at once.
    for batch in blocks.chunks(BATCH) {
        let mut snapshots = Vec::new();
        for (number, dir) in batch {
            match replay::load(dir, &hashes) {
                Ok(snapshot) => snapshots.push(snapshot),
                Err(e) => reports.extend(
                    storages.iter().map(|s| BlockReport::failed(*number, *s, e.to_string())),
                ),
            }
        }
        let (first, last) = (batch[0].0, batch[batch.len() - 1].0);
        bar.set_message(format!("blocks {first} to {last}"));
        let replayed = replay::replay_all(&snapshots, &storages, &config, args.runs);
        reports.extend(replayed.into_iter().flat_map(|(block_reports, _)| block_reports));
        bar.inc(batch.len() as u64);
    }
    // Reports by block, each block's stores in the order asked for.
    reports.sort_by_key(|r| r.block);
    bar.finish_and_clear();
    let report = Report::new(reports);
    print!("{}", report.text());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, report.svg()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(report.failed == 0)
}

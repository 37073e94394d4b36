//! `lockstep-ethtests`: Ethereum state and blockchain tests through the sequential and the
//! parallel path.

use clap::Parser;
use lockstep_ethtests::{
    fixtures,
    report::{self, Report},
    runner::{self, Shard},
    state::{RunOptions, StorageChoice},
};
use std::{path::PathBuf, process::ExitCode};

/// Run Ethereum state and blockchain tests through both executor paths and compare them with the fixtures
/// and with each other.
#[derive(Parser)]
#[command(name = "lockstep-ethtests", version)]
struct Args {
    /// Fixture files, directories or .tar.zst archives (default: $ETHTESTS_DIR's
    /// GeneralStateTests, legacytests and execution-spec-tests archives).
    paths: Vec<PathBuf>,
    /// Only this fork (fixture name, e.g. Cancun, Prague).
    #[arg(long)]
    fork: Option<String>,
    /// Only tests whose name matches this regular expression.
    #[arg(long)]
    filter: Option<String>,
    #[arg(long, value_enum, default_value_t = StorageChoice::Memory)]
    storage: StorageChoice,
    /// Threads of the parallel path.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Run only shard I of N (1-based), e.g. 2/4.
    #[arg(long)]
    shard: Option<Shard>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Exit successfully even when cases fail (the reports still list them).
    #[arg(long)]
    keep_going: bool,
    /// Failures to print in full.
    #[arg(long, default_value_t = 20)]
    show: usize,
}

const DEFAULT_ARCHIVES: &[&str] = &[
    "GeneralStateTests.tar.zst",
    "legacytests-Cancun-GeneralStateTests.tar.zst",
    "eest-fusaka-devnet-5.tar.zst",
    "BlockchainTests-GeneralStateTests.tar.zst",
    "BlockchainTests-ValidInvalidBlocks.tar.zst",
];

fn main() -> ExitCode {
    lockstep_harness::exit_code(run(&Args::parse()))
}

fn run(args: &Args) -> Result<bool, String> {
    let roots = if args.paths.is_empty() {
        let dir = fixtures::default_ethtests_dir()
            .ok_or("no fixtures: pass paths or set ETHTESTS_DIR")?;
        DEFAULT_ARCHIVES.iter().map(|a| dir.join(a)).collect()
    } else {
        args.paths.clone()
    };
    let filter = args
        .filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| format!("--filter: {e}"))?;
    let options = RunOptions {
        storage: args.storage,
        threads: args.threads,
        fork: args.fork.clone(),
        filter,
    };
    let mut files = runner::collect_files(&roots)?;
    if let Some(shard) = args.shard {
        files = shard.select(files);
    }
    let start = std::time::Instant::now();
    let cases = runner::run(&files, &options, std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let report = Report::new(&cases);
    print!("{}", report.summary(args.show));
    println!("{} files in {:.1}s", files.len(), start.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, report::junit(&cases))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(report.failed == 0 || args.keep_going)
}

//! `lockstep-ethtests`: Ethereum state and blockchain tests through the sequential and the
//! parallel path.

use clap::Parser;
use lockstep_ethtests::{
    fixtures,
    report::{self, Report},
    runner::{self, Shard},
    state::{RunOptions, StorageChoice},
};
use lockstep_harness::fetch;
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
    /// Download the pinned fixture release (execution-spec-tests v5.4.0, checked against its
    /// SHA-256) into the cache and run it instead of the default sets.
    #[arg(long)]
    fetch: bool,
    /// With --fetch: another URL for the release (a mirror).
    #[arg(long, requires = "fetch", requires = "fetch_sha256")]
    fetch_url: Option<String>,
    /// With --fetch-url: the archive's SHA-256, in hex.
    #[arg(long, requires = "fetch_url")]
    fetch_sha256: Option<String>,
    /// With --fetch-url: folders of the archive to run (default: the whole archive).
    #[arg(long, requires = "fetch_url", num_args = 1..)]
    fetch_dir: Vec<String>,
}

const DEFAULT_ARCHIVES: &[&str] = &[
    "GeneralStateTests.tar.zst",
    "legacytests-Cancun-GeneralStateTests.tar.zst",
    "eest-fusaka-devnet-5.tar.zst",
    "BlockchainTests-GeneralStateTests.tar.zst",
    "BlockchainTests-ValidInvalidBlocks.tar.zst",
];

#[global_allocator]
static ALLOCATOR: lockstep_harness::bench::Allocator = lockstep_harness::bench::Allocator;

fn main() -> ExitCode {
    lockstep_harness::bench::keep_freed_memory();
    lockstep_harness::exit_code(run(&Args::parse()))
}

/// The folders of the fetched release: the pinned one, or the one --fetch-url names.
fn fetched(args: &Args) -> Result<Vec<PathBuf>, String> {
    let release = match (&args.fetch_url, &args.fetch_sha256) {
        (Some(url), Some(sha256)) => fetch::Release {
            url: url.clone(),
            sha256: sha256.to_lowercase(),
            dirs: if args.fetch_dir.is_empty() {
                vec![String::new()]
            } else {
                args.fetch_dir.clone()
            },
        },
        _ => fetch::default_ethtests_release(),
    };
    eprintln!("fetching {}", release.url);
    fetch::fetch(&release, &fixtures::cache_dir()).map_err(|e| e.to_string())
}

fn run(args: &Args) -> Result<bool, String> {
    let roots = if args.fetch {
        fetched(args)?
    } else if args.paths.is_empty() {
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

//! Timing of executor paths on workloads: medians of alternating runs, peak memory, and the
//! plain revm loop the sequential path is measured against.

use crate::workloads::Workload;
use lockstep_executor::{
    BlockOutcome, ExecutionError, InMemoryStorage, MdbxStorage, ParallelConfig, StateDiff, Storage,
    parallel,
    revm::{
        Context, ExecuteCommitEvm, MainBuilder, MainContext,
        database::{CacheDB, EmptyDB},
        state::AccountInfo,
    },
    sequential,
};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Which store a measurement ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Memory,
    Mdbx,
}

impl StorageKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Mdbx => "mdbx",
        }
    }
}

/// Which stores to run on, as every command line spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageArg {
    Memory,
    Mdbx,
    Both,
}

impl StorageArg {
    pub fn kinds(self) -> Vec<StorageKind> {
        match self {
            Self::Memory => vec![StorageKind::Memory],
            Self::Mdbx => vec![StorageKind::Mdbx],
            Self::Both => vec![StorageKind::Memory, StorageKind::Mdbx],
        }
    }

    pub fn memory(self) -> bool {
        self != Self::Mdbx
    }

    pub fn mdbx(self) -> bool {
        self != Self::Memory
    }
}

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{workload}: {source}")]
    Execution { workload: String, source: ExecutionError },
    #[error("{workload} on {storage}: parallel differs from sequential: {divergence}")]
    Divergence {
        workload: String,
        storage: &'static str,
        divergence: Box<lockstep_executor::Divergence>,
    },
    #[error("{workload}: cannot create the store: {message}")]
    Store { workload: String, message: String },
}

/// One row of the performance report.
#[derive(Clone, Debug, Serialize)]
pub struct PerfRow {
    pub name: String,
    pub storage: StorageKind,
    pub txs: usize,
    pub gas: u64,
    pub sequential_ms: f64,
    pub parallel_ms: f64,
    pub speedup: f64,
    /// Gas per second of the parallel path.
    pub gas_per_s: f64,
    pub re_executions: u64,
    pub peak_rss_mb: f64,
    /// The plain revm `transact_commit` loop on the same block (in-memory rows only).
    pub revm_baseline_ms: Option<f64>,
}

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Resets the kernel's peak-RSS counter of this process (Linux; a no-op elsewhere).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process since the last reset, in MiB.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A CacheDB holding `alloc`, for the plain revm loop.
pub fn revm_db(alloc: &lockstep_executor::Alloc) -> CacheDB<EmptyDB> {
    let mut db = CacheDB::new(EmptyDB::default());
    for (address, account) in alloc {
        let code = lockstep_executor::state::bytecode(&account.code);
        let info = AccountInfo {
            balance: account.balance,
            nonce: account.nonce,
            code_hash: code.hash_slow(),
            code: Some(code),
            ..Default::default()
        };
        db.insert_account_info(*address, info);
        for (slot, value) in &account.storage {
            db.insert_account_storage(*address, *slot, *value).expect("in-memory insert");
        }
    }
    db
}

/// The plain revm loop: every transaction through `transact_commit` on a CacheDB.
pub fn revm_loop(workload: &Workload, db: CacheDB<EmptyDB>) -> usize {
    let block = &workload.block;
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_block(block.block_env())
        .with_cfg(block.cfg_env())
        .build_mainnet();
    block.transactions.iter().filter(|tx| evm.transact_commit((*tx).clone()).is_ok()).count()
}

fn check(
    workload: &Workload,
    storage: StorageKind,
    sequential: &BlockOutcome,
    parallel: &BlockOutcome,
) -> Result<(), BenchError> {
    match sequential.first_difference(parallel) {
        None => Ok(()),
        Some(divergence) => Err(BenchError::Divergence {
            workload: workload.name.clone(),
            storage: storage.name(),
            divergence: Box::new(divergence),
        }),
    }
}

/// Measures `workload` on one store: `runs` alternating sequential and parallel runs.
pub fn measure<S: Storage>(
    workload: &Workload,
    store: &S,
    storage: StorageKind,
    config: &ParallelConfig,
    runs: usize,
) -> Result<PerfRow, BenchError> {
    let fail = |source| BenchError::Execution { workload: workload.name.clone(), source };
    reset_peak_rss();
    let (mut seq_times, mut par_times, mut base_times) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let sequential = sequential::execute(store, &workload.block).map_err(fail)?;
        seq_times.push(start.elapsed());
        let start = Instant::now();
        let parallel = parallel::execute(store, &workload.block, config).map_err(fail)?;
        par_times.push(start.elapsed());
        check(workload, storage, &sequential, &parallel)?;
        if storage == StorageKind::Memory {
            let db = revm_db(&workload.alloc);
            let start = Instant::now();
            std::hint::black_box(revm_loop(workload, db));
            base_times.push(start.elapsed());
        }
        last = Some(parallel);
    }
    let outcome = last.expect("at least one run");
    let (sequential_ms, parallel_ms) = (ms(median(seq_times)), ms(median(par_times)));
    Ok(PerfRow {
        name: workload.name.clone(),
        storage,
        txs: workload.block.transactions.len(),
        gas: outcome.gas_used,
        sequential_ms,
        parallel_ms,
        speedup: sequential_ms / parallel_ms,
        gas_per_s: outcome.gas_used as f64 / (parallel_ms / 1e3),
        re_executions: outcome.stats.re_executions(),
        peak_rss_mb: peak_rss_mb(),
        revm_baseline_ms: (!base_times.is_empty()).then(|| ms(median(base_times))),
    })
}

/// Measures `workload` on each requested store.
pub fn measure_all(
    workload: &Workload,
    storages: &[StorageKind],
    config: &ParallelConfig,
    runs: usize,
) -> Result<Vec<PerfRow>, BenchError> {
    let diff = StateDiff::from_alloc(&workload.alloc);
    let mut rows = Vec::new();
    for storage in storages {
        let row = match storage {
            StorageKind::Memory => {
                measure(workload, &InMemoryStorage::from_diff(&diff), *storage, config, runs)?
            }
            StorageKind::Mdbx => {
                let store_err = |e: &dyn std::fmt::Display| BenchError::Store {
                    workload: workload.name.clone(),
                    message: e.to_string(),
                };
                let dir = tempfile::tempdir().map_err(|e| store_err(&e))?;
                let store = MdbxStorage::create(dir.path(), &diff).map_err(|e| store_err(&e))?;
                measure(workload, &store, *storage, config, runs)?
            }
        };
        rows.push(row);
    }
    Ok(rows)
}

/// The rows as a fixed-width table.
pub fn table(rows: &[PerfRow]) -> String {
    let mut out = format!(
        "{:<16} {:<7} {:>6} {:>14} {:>10} {:>10} {:>8} {:>8} {:>9} {:>8} {:>10}\n",
        "workload",
        "storage",
        "txs",
        "gas",
        "seq ms",
        "par ms",
        "speedup",
        "Mgas/s",
        "re-exec",
        "rss MB",
        "revm ms"
    );
    for r in rows {
        out += &format!(
            "{:<16} {:<7} {:>6} {:>14} {:>10.1} {:>10.1} {:>7.2}x {:>8.0} {:>9} {:>8.0} {:>10}\n",
            r.name,
            r.storage.name(),
            r.txs,
            r.gas,
            r.sequential_ms,
            r.parallel_ms,
            r.speedup,
            r.gas_per_s / 1e6,
            r.re_executions,
            r.peak_rss_mb,
            r.revm_baseline_ms.map_or("-".into(), |m| format!("{m:.1}")),
        );
    }
    out
}

//! Timing of executor paths on workloads: medians of alternating runs, peak memory, and the
//! plain revm loop the sequential path is measured against.

use crate::workloads::Workload;
use alloy_primitives::{Address, B256, KECCAK256_EMPTY, U256};
use lockstep_executor::{
    BlockOutcome, ExecutionError, Fallback, InMemoryStorage, MdbxStorage, ParallelConfig,
    StateDiff, StateReader, Storage, StorageError, block_state, parallel,
    revm::{
        Context, DatabaseRef, ExecuteCommitEvm, MainBuilder, MainContext,
        bytecode::Bytecode,
        context::{TxEnv, result::EVMError},
        database::CacheDB,
        state::AccountInfo,
    },
    sequential,
};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Which store a measurement ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
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
    #[error("{workload}: the plain revm loop used {revm} gas, the executor {executor}")]
    Baseline { workload: String, revm: u64, executor: u64 },
    #[error("{workload}: cannot create the store: {message}")]
    Store { workload: String, message: String },
    #[error("{workload} on {storage}: cannot measure peak memory: {message}")]
    Memory { workload: String, storage: &'static str, message: String },
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
    /// Why the parallel path ran the block sequentially (`None`: it ran in parallel).
    pub fallback: Option<Fallback>,
    /// How many speculative ranges the parallel path ran the block as (0: Block-STM or the
    /// sequential path).
    pub ranges: usize,
    /// Peak resident memory of a process that builds the row's store and runs its block
    /// once on each path (see [`peak_memory`]).
    pub peak_rss_mb: f64,
    /// The plain revm `transact_commit` loop on the same block and store (median).
    pub revm_baseline_ms: f64,
    /// The speedup independent copies of the sequential path reached at once: see [`Copies`].
    pub ceiling: f64,
}

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The allocator of the measuring binaries (`#[global_allocator]` in each `main.rs`), as a
/// node picks one. Against glibc's malloc (its freed memory kept too) it made the mainnet
/// snapshots 4.6% faster on the sequential path and 7.2% on the parallel one, whose workers
/// free what the other allocated.
pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h` of the version the lock file pins; the
/// crate does not export it): how long freed memory waits before it goes back to the kernel.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes [`Allocator`] keep the memory the process frees instead of handing it back to the
/// kernel, as a long-running node's allocator does. Otherwise a timed run can start on pages
/// the kernel must fault in and zero again, and a path that keeps its results (the executor)
/// pays for that where one that drops them (the plain revm loop) does not. Call once, first
/// thing in `main`.
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's tunables; -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Heap the measuring binaries fault in before they time anything: well above their peak
/// (about 400 MB), so that no timed run is the one that grows the heap.
pub const PREFAULT_BYTES: usize = 1 << 30;

/// Touches `bytes` of fresh heap and frees it again; with [`keep_freed_memory`] in force the
/// allocator keeps those pages, already mapped, for what the process allocates later.
///
/// On this machine, a virtual one, the first touch of fresh memory cost about 5.5 ms per
/// 2 MiB huge page (1 GiB took 2.85 s). Runs of mainnet block 13217637 that grew the heap by a
/// page or two took 8.6 to 20 ms instead of 3.8 (one run in fifty or so, in clusters), and
/// where such runs made up most of a block's samples they moved its median (0.53x instead of
/// 1.2x). With the heap faulted in first, 300 alternating runs of that block had none.
pub fn prefault_heap(bytes: usize) {
    const CHUNK: usize = 4 << 20;
    let chunks: Vec<Vec<u8>> = (0..bytes / CHUNK).map(|_| vec![1; CHUNK]).collect();
    // Kept from being optimized away: the pages must really be touched.
    drop(std::hint::black_box(chunks));
}

/// Peak resident memory of this process so far, in MiB.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A store's reader as a revm `DatabaseRef`, so the plain revm loop reads the same state the
/// executor does.
#[derive(Debug)]
pub struct StoreDb<R>(pub R);

impl<R: StateReader> DatabaseRef for StoreDb<R> {
    type Error = StorageError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, StorageError> {
        Ok(self.0.account(address)?.map(block_state::to_revm_info))
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, StorageError> {
        if code_hash == KECCAK256_EMPTY {
            return Ok(block_state::empty_code());
        }
        self.0.code(code_hash)?.ok_or(StorageError::MissingCode(code_hash))
    }

    fn storage_ref(&self, address: Address, slot: U256) -> Result<U256, StorageError> {
        self.0.storage(address, slot)
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, StorageError> {
        self.0.block_hash(number)?.ok_or(StorageError::MissingBlockHash(number))
    }
}

/// The plain revm loop: every transaction through `transact_commit`, on a `CacheDB` over a
/// reader of `store`. Returns the gas the block used (invalid transactions use none).
pub fn revm_loop<S: Storage>(workload: &Workload, store: &S) -> Result<u64, StorageError> {
    let block = &workload.block;
    let db = CacheDB::new(StoreDb(store.reader()?));
    // Each transaction lent, not cloned, as the executor's paths do (a clone per transaction
    // cost the sequential path 8 ms of 68 on the AMM block).
    let no_tx = TxEnv::default();
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_block(block.block_env())
        .with_cfg(block.cfg_env())
        .with_tx(&no_tx)
        .build_mainnet();
    let mut gas = 0;
    for tx in &block.transactions {
        match evm.transact_commit(tx) {
            Ok(result) => gas += result.tx_gas_used(),
            Err(EVMError::Database(e)) => return Err(e),
            Err(_) => {}
        }
    }
    Ok(gas)
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

/// The order in which round `round` runs `paths` timed paths (numbered from zero): every
/// order in turn, so that over `paths!` rounds every path runs first, second, ... equally
/// often, and right after each other path equally often. A fixed order is not neutral: the
/// same work ran about 2% slower as the first of a round than as the second, and the parallel
/// path up to 5% slower right after a sequential run than right before one (mainnet snapshots,
/// medians of 41 rounds). Rotating the order would balance the places but not who follows
/// whom: of three paths rotated, each would follow one of the others twice as often as the
/// other.
pub fn turn_order(round: usize, paths: usize) -> impl Iterator<Item = usize> {
    let factorial = |n: usize| (1..=n).product::<usize>();
    // The round's order in lexicographic order of all orders, read off digit by digit.
    let mut index = round % factorial(paths);
    let mut left: Vec<usize> = (0..paths).collect();
    let mut order = Vec::with_capacity(paths);
    for remaining in (1..=paths).rev() {
        let per_first = factorial(remaining - 1);
        order.push(left.remove(index / per_first));
        index %= per_first;
    }
    order.into_iter()
}

/// Independent copies of the sequential path run at once, one per worker thread, as a measure
/// of the speedup this machine can give that many threads at the moment: on a shared machine
/// two busy virtual cores gave anything from 1.2 to 2 times one core's work (two independent
/// hash loops in two processes each ran 0% to 45% slower together than alone).
/// The copies share nothing but the store, so they give the *ceiling* the parallel path's
/// speedup is read against: the threads times the sequential time over the copies' time.
///
/// The copies' threads start for each sample and exit after it. Kept threads (a rayon pool)
/// spin for a while once idle, and that took a core from the run after them: with the copies
/// in the same rounds on a kept pool, the snapshots' Block-STM blocks came out at 1.21x-1.27x
/// in four runs, against 1.38x just before without them.
#[derive(Clone, Copy, Debug)]
pub struct Copies {
    threads: usize,
}

impl Copies {
    pub fn new(threads: usize) -> Self {
        Self { threads: threads.max(1) }
    }

    /// Runs `work` once on every thread at once (the calling thread included) and returns
    /// the time until all finished, with their results: drop them after the clock stops.
    fn run<T: Send>(&self, work: impl Fn() -> T + Sync) -> (Duration, Vec<T>) {
        let start = Instant::now();
        let results = std::thread::scope(|scope| {
            let others: Vec<_> = (1..self.threads).map(|_| scope.spawn(&work)).collect();
            let mut results = vec![work()];
            results.extend(others.into_iter().map(|h| h.join().expect("a copy panicked")));
            results
        });
        (start.elapsed(), results)
    }

    /// The ceiling for `work` (the sequential path on one block): `rounds` rounds of `batch`
    /// runs alone and of `batch` runs in each copy, in turns (see [`turn_order`]).
    ///
    /// A phase of its own, after the paths' rounds: a run right after the copies came out
    /// about 5% slower, and the path that followed them more often would have paid for it.
    pub fn ceiling<T: Send, E: Send>(
        &self,
        rounds: usize,
        batch: u32,
        work: impl Fn() -> Result<T, E> + Sync,
    ) -> Result<f64, E> {
        let batch = batch.max(1);
        let sample = || (0..batch).map(|_| work()).collect::<Result<Vec<T>, E>>();
        let (mut alone, mut together) = (Vec::new(), Vec::new());
        for round in 0..rounds.max(1) {
            for turn in turn_order(round, 2) {
                let (elapsed, results) = if turn == 0 {
                    let start = Instant::now();
                    let result = sample();
                    (start.elapsed(), vec![result])
                } else {
                    self.run(sample)
                };
                [&mut alone, &mut together][turn].push(elapsed);
                for result in results {
                    result?;
                }
            }
        }
        Ok(self.threads as f64 * median(alone).as_secs_f64() / median(together).as_secs_f64())
    }
}

/// Rounds run before the timed ones, their times dropped: the first runs of a process fault in
/// the memory the later ones reuse. Of 20 sequential runs of the AMM block in a row, the first
/// took 181 ms, the next two 71 and 64, the rest 55 to 59 (with some outliers at 63-75); the
/// kernel zeroing fresh pages was a fifth of the samples of a profile, all of them in the first
/// third of its runs.
const WARM_UP_ROUNDS: usize = 2;

/// Measures `workload` on one store: `runs` rounds of the sequential path, the parallel path
/// and the plain revm loop, in turns (see [`turn_order`]), after [`WARM_UP_ROUNDS`] untimed
/// ones, then the [`Copies`]' ceiling. The row's peak memory is `peak_rss_mb`, measured apart.
pub fn measure<S: Storage>(
    workload: &Workload,
    store: &S,
    storage: StorageKind,
    config: &ParallelConfig,
    runs: usize,
    peak_rss_mb: f64,
) -> Result<PerfRow, BenchError> {
    let fail = |source| BenchError::Execution { workload: workload.name.clone(), source };
    let (mut seq_times, mut par_times, mut base_times) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for round in 0..WARM_UP_ROUNDS + runs.max(1) {
        let (mut sequential, mut parallel, mut revm_gas) = (None, None, None);
        // Each path takes each turn equally often: see [`turn_order`].
        for path in turn_order(round, 3) {
            let start = Instant::now();
            let block = &workload.block;
            match path {
                0 => sequential = Some(sequential::execute(store, block).map_err(fail)?),
                1 => parallel = Some(parallel::execute(store, block, config).map_err(fail)?),
                _ => revm_gas = Some(revm_loop(workload, store).map_err(|e| fail(e.into()))?),
            }
            if round >= WARM_UP_ROUNDS {
                [&mut seq_times, &mut par_times, &mut base_times][path].push(start.elapsed());
            }
        }
        let (sequential, parallel) = (sequential.expect("ran"), parallel.expect("ran"));
        let revm_gas = std::hint::black_box(revm_gas.expect("ran"));
        check(workload, storage, &sequential, &parallel)?;
        // A baseline that skipped work would flatter nothing but itself; make sure it did it.
        if revm_gas != sequential.gas_used {
            return Err(BenchError::Baseline {
                workload: workload.name.clone(),
                revm: revm_gas,
                executor: sequential.gas_used,
            });
        }
        // Only its figures: a whole outcome kept alive would take memory the next runs reuse.
        let stats = &parallel.stats;
        last = Some((parallel.gas_used, stats.re_executions(), stats.fallback, stats.ranges));
    }
    let (gas_used, re_executions, fallback, ranges) = last.expect("at least one run");
    let copies = Copies::new(config.threads.get());
    let ceiling = copies.ceiling(runs, 1, || sequential::execute(store, &workload.block));
    let ceiling = ceiling.map_err(fail)?;
    let (sequential_ms, parallel_ms) = (ms(median(seq_times)), ms(median(par_times)));
    Ok(PerfRow {
        name: workload.name.clone(),
        storage,
        txs: workload.block.transactions.len(),
        gas: gas_used,
        sequential_ms,
        parallel_ms,
        speedup: sequential_ms / parallel_ms,
        gas_per_s: gas_used as f64 / (parallel_ms / 1e3),
        re_executions,
        fallback,
        ranges,
        peak_rss_mb,
        revm_baseline_ms: ms(median(base_times)),
        ceiling,
    })
}

/// `$run` with `$store` bound to a new `$storage` store holding `$workload`'s pre-state (a
/// macro: what runs on the store is generic over its type).
macro_rules! on_store {
    ($workload:expr, $storage:expr, |$store:ident| $run:expr) => {{
        let workload: &Workload = $workload;
        let diff = StateDiff::from_alloc(&workload.alloc);
        match $storage {
            StorageKind::Memory => {
                let $store = &InMemoryStorage::from_diff(&diff);
                $run
            }
            StorageKind::Mdbx => {
                let store_err = |e: &dyn std::fmt::Display| BenchError::Store {
                    workload: workload.name.clone(),
                    message: e.to_string(),
                };
                let dir = tempfile::tempdir().map_err(|e| store_err(&e))?;
                let $store = &MdbxStorage::create(dir.path(), &diff).map_err(|e| store_err(&e))?;
                $run
            }
        }
    }};
}

/// Measures `workload` on each requested store; `peak` gives each row's peak memory (see
/// [`peak_memory`]), asked before the row is timed.
pub fn measure_all(
    workload: &Workload,
    storages: &[StorageKind],
    config: &ParallelConfig,
    runs: usize,
    peak: &mut dyn FnMut(StorageKind) -> Result<f64, BenchError>,
) -> Result<Vec<PerfRow>, BenchError> {
    let mut rows = Vec::new();
    for storage in storages {
        let peak_rss_mb = peak(*storage)?;
        rows.push(on_store!(workload, *storage, |store| {
            measure(workload, store, *storage, config, runs, peak_rss_mb)
        })?);
    }
    Ok(rows)
}

/// The peak resident memory of this process in MiB, once it has built a `storage` store for
/// `workload` and run the block once on each path (checked to agree). In a process that does
/// nothing else (`lockstep memory`, which `perf` runs for each row) this is what the block
/// takes, store and outcomes included; `perf`'s own process holds the heap it faulted in
/// up front (see [`prefault_heap`]), which would hide it.
pub fn peak_memory(
    workload: &Workload,
    storage: StorageKind,
    config: &ParallelConfig,
) -> Result<f64, BenchError> {
    let fail = |source| BenchError::Execution { workload: workload.name.clone(), source };
    on_store!(workload, storage, |store| {
        let sequential = sequential::execute(store, &workload.block).map_err(fail)?;
        let parallel = parallel::execute(store, &workload.block, config).map_err(fail)?;
        check(workload, storage, &sequential, &parallel)?;
        Ok(peak_rss_mb())
    })
}

/// How the parallel path ran a block, for tables: Block-STM, speculative ranges, or the
/// sequential path and why.
pub fn path_name(fallback: Option<Fallback>, ranges: usize) -> String {
    match fallback {
        None if ranges > 0 => "ranges".into(),
        None => "block-stm".into(),
        Some(why) => format!("sequential: {why}"),
    }
}

/// The rows as a fixed-width table.
pub fn table(rows: &[PerfRow]) -> String {
    let mut out = format!(
        "{:<16} {:<7} {:>6} {:>14} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10}  {}\n",
        "workload",
        "storage",
        "txs",
        "gas",
        "seq ms",
        "par ms",
        "speedup",
        "ceiling",
        "Mgas/s",
        "re-exec",
        "rss MB",
        "revm ms",
        "parallel path"
    );
    for r in rows {
        out += &format!(
            "{:<16} {:<7} {:>6} {:>14} {:>10.1} {:>10.1} {:>7.2}x {:>7.2}x {:>8.0} {:>9} {:>8.0} {:>10}  {}\n",
            r.name,
            r.storage.name(),
            r.txs,
            r.gas,
            r.sequential_ms,
            r.parallel_ms,
            r.speedup,
            r.ceiling,
            r.gas_per_s / 1e6,
            r.re_executions,
            r.peak_rss_mb,
            format!("{:.1}", r.revm_baseline_ms),
            path_name(r.fallback, r.ranges),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{MI_OPTION_PURGE_DELAY, keep_freed_memory, turn_order};

    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_mimallocs_and_turns_purging_off() {
        // SAFETY: reads one of mimalloc's tunables.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // mimalloc 3's default purge delay, in ms: no neighbouring option defaults to it.
        assert_eq!(get(), 1000, "the index is mimalloc's purge delay");
        keep_freed_memory();
        assert_eq!(get(), -1, "purging is off");
    }

    #[test]
    fn every_path_takes_every_turn_and_follows_every_other_equally_often() {
        for paths in 1..=4 {
            let orders: usize = (1..=paths).product();
            // turns[path][turn]: how often `path` ran at position `turn`; follows[a][b]: how
            // often `b` ran right after `a` within a round.
            let mut turns = vec![vec![0; paths]; paths];
            let mut follows = vec![vec![0; paths]; paths];
            for round in 0..orders * 2 {
                let order: Vec<usize> = turn_order(round, paths).collect();
                let mut sorted = order.clone();
                sorted.sort();
                assert_eq!(sorted, (0..paths).collect::<Vec<_>>(), "each path once per round");
                for (turn, path) in order.iter().enumerate() {
                    turns[*path][turn] += 1;
                }
                for pair in order.windows(2) {
                    follows[pair[0]][pair[1]] += 1;
                }
            }
            let per_turn = 2 * orders / paths;
            assert!(turns.iter().flatten().all(|&n| n == per_turn), "{paths} paths: {turns:?}");
            let others = follows.iter().enumerate().flat_map(|(a, row)| {
                row.iter().enumerate().filter(move |(b, _)| *b != a).map(|(_, n)| *n)
            });
            let counts: Vec<usize> = others.collect();
            assert!(counts.windows(2).all(|w| w[0] == w[1]), "{paths} paths: {follows:?}");
        }
        assert_eq!(turn_order(0, 2).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(turn_order(1, 2).collect::<Vec<_>>(), [1, 0], "two paths alternate");
    }
}

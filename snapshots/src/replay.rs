//! Replaying snapshots: both paths on both stores, checked against the header, and timed.

use crate::format::{PreAccount, RpcBlock, SnapshotError, alloc, read_json};
use alloy_primitives::{Address, B256, U256, keccak256};
use lockstep_executor::{
    Account, Block, BlockOutcome, Fallback, InMemoryStorage, MdbxStorage, ParallelConfig,
    StateDiff, StateReader, Storage, StorageError, parallel,
    revm::{bytecode::Bytecode, primitives::hardfork::SpecId},
    sequential,
};
use lockstep_harness::bench::{Copies, StorageKind, median, turn_order};
use serde::Serialize;
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

/// One block with its pre-state, ready to run.
#[derive(Debug)]
pub struct Snapshot {
    pub number: u64,
    pub header: RpcBlock,
    pub block: Block,
    pub pre: BTreeMap<Address, PreAccount>,
    /// The pre-state as a diff, block hashes included.
    pub state: StateDiff,
}

/// Block folders by number.
pub type BlockDirs = Vec<(u64, PathBuf)>;

/// The block folders of a snapshot directory, by number, and its shared block hashes.
pub fn list(root: &Path) -> Result<(BlockDirs, BTreeMap<u64, B256>), SnapshotError> {
    let read_err = |e: std::io::Error| SnapshotError::Read {
        path: root.display().to_string(),
        message: e.to_string(),
    };
    let mut blocks = Vec::new();
    for entry in std::fs::read_dir(root).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if let Some(number) =
            path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok())
            && path.is_dir()
        {
            blocks.push((number, path));
        }
    }
    blocks.sort();
    let hashes_path = root.join("block_hashes.json");
    let hashes: BTreeMap<String, B256> =
        if hashes_path.exists() { read_json(&hashes_path)? } else { BTreeMap::new() };
    let hashes = hashes
        .into_iter()
        .map(|(n, h)| {
            n.parse::<u64>().map(|n| (n, h)).map_err(|_| SnapshotError::Json {
                path: hashes_path.display().to_string(),
                message: format!("key `{n}` is not a block number"),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((blocks, hashes))
}

/// Loads one block folder.
pub fn load(dir: &Path, hashes: &BTreeMap<u64, B256>) -> Result<Snapshot, SnapshotError> {
    let block_path = dir.join("block.json");
    let header: RpcBlock = read_json(&block_path)?;
    let block = header.to_block(&block_path.display().to_string())?;
    let pre: BTreeMap<Address, PreAccount> = read_json(&dir.join("pre_state.json"))?;
    let mut state = StateDiff::from_alloc(&alloc(&pre));
    state.block_hashes.extend(hashes.iter().map(|(n, h)| (*n, *h)));
    Ok(Snapshot { number: block.number, header, block, pre, state })
}

/// One block on one store.
#[derive(Clone, Debug, Serialize)]
pub struct BlockReport {
    pub block: u64,
    pub storage: StorageKind,
    pub txs: usize,
    pub gas: u64,
    pub sequential_ms: f64,
    pub parallel_ms: f64,
    pub speedup: f64,
    /// The speedup of as many independent copies of the sequential path as the parallel path
    /// has threads, run at once: the machine's ceiling for `speedup` (see `Copies`).
    pub ceiling: f64,
    pub re_executions: u64,
    /// The keys whose stale reads aborted the most transactions in the last parallel run,
    /// at most three.
    pub hot_keys: Vec<HotKey>,
    /// Why the parallel path ran the block sequentially (`None`: it ran Block-STM).
    pub fallback: Option<Fallback>,
    pub ok: bool,
    pub error: Option<String>,
    /// Pre-Byzantium receipts carry intermediate state roots a partial pre-state cannot give.
    pub receipts_root_checked: bool,
}

impl BlockReport {
    fn new(snapshot: &Snapshot, storage: StorageKind) -> Self {
        Self {
            block: snapshot.number,
            storage,
            txs: snapshot.block.transactions.len(),
            gas: snapshot.header.gas_used.to(),
            sequential_ms: 0.0,
            parallel_ms: 0.0,
            speedup: 0.0,
            ceiling: 0.0,
            re_executions: 0,
            hot_keys: Vec::new(),
            fallback: None,
            ok: false,
            error: None,
            receipts_root_checked: false,
        }
    }

    /// A block that could not run at all (its files are broken, or its store).
    pub fn failed(number: u64, storage: StorageKind, error: String) -> Self {
        Self {
            block: number,
            storage,
            txs: 0,
            gas: 0,
            sequential_ms: 0.0,
            parallel_ms: 0.0,
            speedup: 0.0,
            ceiling: 0.0,
            re_executions: 0,
            hot_keys: Vec::new(),
            fallback: None,
            ok: false,
            error: Some(error),
            receipts_root_checked: false,
        }
    }
}

/// A key of the state and the aborts its stale reads caused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HotKey {
    pub key: String,
    pub aborts: usize,
}

/// Keys reported per block.
pub(crate) const HOT_KEYS: usize = 3;

/// Compares an outcome with the header: gas used, logs bloom, receipts root (from Byzantium).
pub fn check_header(snapshot: &Snapshot, outcome: &BlockOutcome) -> Result<bool, String> {
    if let Some((index, reason)) = outcome.first_invalid() {
        return Err(format!("transaction {index} is invalid: {reason}"));
    }
    let header = &snapshot.header;
    if outcome.gas_used != header.gas_used.to::<u64>() {
        return Err(format!("gas used: header {}, executed {}", header.gas_used, outcome.gas_used));
    }
    let bloom = outcome.logs_bloom();
    if bloom != header.logs_bloom {
        return Err(format!("logs bloom: header {}, executed {bloom}", header.logs_bloom));
    }
    let checkable = snapshot.block.spec.is_enabled_in(SpecId::BYZANTIUM);
    if checkable {
        let root = outcome.receipts_root();
        if root != header.receipts_root {
            return Err(format!("receipts root: header {}, executed {root}", header.receipts_root));
        }
    }
    Ok(checkable)
}

/// What a block read that its pre-state lacks: accounts, and slots per account.
#[derive(Debug, Default)]
struct Missing {
    accounts: BTreeSet<Address>,
    slots: BTreeMap<Address, usize>,
}

/// A reader that notes every account or slot the block reads but the pre-state lacks.
struct Tracking<'a, R> {
    inner: R,
    pre: &'a BTreeMap<Address, PreAccount>,
    missing: &'a Mutex<Missing>,
}

impl<R: StateReader> StateReader for Tracking<'_, R> {
    fn account(&self, address: Address) -> Result<Option<Account>, StorageError> {
        if !self.pre.contains_key(&address) {
            self.missing.lock().expect("lock").accounts.insert(address);
        }
        self.inner.account(address)
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytecode>, StorageError> {
        self.inner.code(code_hash)
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StorageError> {
        if self.pre.get(&address).is_none_or(|a| !a.storage.contains_key(&slot)) {
            *self.missing.lock().expect("lock").slots.entry(address).or_default() += 1;
        }
        self.inner.storage(address, slot)
    }

    fn block_hash(&self, number: u64) -> Result<Option<B256>, StorageError> {
        self.inner.block_hash(number)
    }
}

/// Why a block fails: an incomplete snapshot when it read what its pre-state lacks,
/// otherwise the mismatch itself. Accounts the block may legitimately read while absent (new
/// recipients) are listed after those it calls with data or reads storage of.
fn diagnose(snapshot: &Snapshot, store: &InMemoryStorage, mismatch: String) -> String {
    let missing = Mutex::new(Missing::default());
    let reader = Tracking {
        inner: store.reader().expect("in-memory reader"),
        pre: &snapshot.pre,
        missing: &missing,
    };
    let _ = sequential::execute_on_reader(reader, &snapshot.block);
    let missing = missing.into_inner().expect("lock");
    if missing.accounts.is_empty() && missing.slots.is_empty() {
        return mismatch;
    }
    // Accounts a transaction calls with data, or whose storage was read, must have existed.
    let called: BTreeSet<Address> = snapshot
        .block
        .transactions
        .iter()
        .filter(|tx| !tx.data.is_empty())
        .filter_map(|tx| tx.kind.to().copied())
        .collect();
    let mut ranked: Vec<(Address, bool, usize)> = missing
        .accounts
        .iter()
        .map(|a| (*a, called.contains(a), missing.slots.get(a).copied().unwrap_or(0)))
        .collect();
    ranked.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then(a.0.cmp(&b.0)));
    let shown: Vec<String> = ranked
        .iter()
        .take(5)
        .map(|(a, called, slots)| match (called, slots) {
            (true, _) => format!("account {a} (called with data)"),
            (false, 0) => format!("account {a}"),
            (false, n) => format!("account {a} ({n} slots read)"),
        })
        .collect();
    let slot_total: usize = missing.slots.values().sum();
    format!(
        "incomplete snapshot: the block reads {} account(s) and {slot_total} slot(s) missing from pre_state.json, e.g. {}; {mismatch}",
        missing.accounts.len(),
        shown.join(", ")
    )
}

/// Runs a snapshot once, sequentially in memory, and checks it against its header: whether the
/// receipts root was checked, or the mismatch, naming what the pre-state lacks if it does.
pub fn check(snapshot: &Snapshot) -> Result<bool, String> {
    let store = InMemoryStorage::from_diff(&snapshot.state);
    let outcome =
        sequential::execute(&store, &snapshot.block).map_err(|e| format!("sequential: {e}"))?;
    check_header(snapshot, &outcome).map_err(|mismatch| diagnose(snapshot, &store, mismatch))
}

/// Timing keeps alternating past the requested runs until both paths together took this
/// long (or [`MAX_RUNS`] were made): the median of a handful of runs of a block that takes
/// microseconds is mostly noise, and at 20 ms two blocks that run sequentially on both paths
/// still came out at 0.92x and 0.93x.
const MIN_TIMED: Duration = Duration::from_millis(100);
const MAX_RUNS: usize = 200;

/// A store of either kind, with the folder an MDBX store lives in.
enum Store {
    Memory(InMemoryStorage),
    /// The store closes before its folder goes.
    Mdbx {
        store: MdbxStorage,
        _dir: tempfile::TempDir,
    },
}

impl Store {
    fn create(snapshot: &Snapshot, storage: StorageKind) -> Result<Self, String> {
        match storage {
            StorageKind::Memory => Ok(Self::Memory(InMemoryStorage::from_diff(&snapshot.state))),
            StorageKind::Mdbx => {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let store = MdbxStorage::create(dir.path().join("state"), &snapshot.state)
                    .map_err(|e| e.to_string())?;
                Ok(Self::Mdbx { store, _dir: dir })
            }
        }
    }
}

/// Blocks faster than this run several times per timed sample, so that a sample takes about
/// this long: a single run of a block of microseconds is at the mercy of the timer and of
/// any interrupt (blocks that run sequentially on both paths came out anywhere from 0.92x
/// to 1.03x when timed one run at a time).
const MIN_SAMPLE: Duration = Duration::from_micros(500);

/// A sample of the ceiling lasts at least this long: the copies' threads start for each
/// sample (see `Copies`), 30 to 60 us on this machine, which must not count.
const MIN_CEILING_SAMPLE: Duration = Duration::from_millis(5);

/// The order of the two paths (0: sequential, 1: parallel) in round `round` of the block at
/// `place` in a sweep, which runs one round of every block: each path goes first in every
/// other round (see `turn_order`), and the order flips from one block to the next. With the
/// same order for every block, each path always ran right after the other (sequential,
/// parallel | sequential, parallel), and a sequential run always came just before the
/// parallel run of the same block.
fn sweep_order(round: usize, place: usize) -> impl Iterator<Item = usize> {
    turn_order(round + place, 2)
}

/// The times of one block's runs on one store.
struct Times {
    /// Per round, the time of one run, from a sample of `batch` runs.
    sequential: Vec<Duration>,
    parallel: Vec<Duration>,
    total: Duration,
    /// Runs per sample, set from the first round.
    batch: u32,
}

impl Default for Times {
    fn default() -> Self {
        Self { sequential: Vec::new(), parallel: Vec::new(), total: Duration::ZERO, batch: 1 }
    }
}

impl Times {
    /// Runs `block` on both paths in [`sweep_order`] (`place`: the block's place in the
    /// sweep) and returns their outcomes.
    fn round<S: Storage>(
        &mut self,
        store: &S,
        block: &Block,
        config: &ParallelConfig,
        place: usize,
    ) -> Result<(BlockOutcome, BlockOutcome), String> {
        let (mut seq, mut par) = (None, None);
        for path in sweep_order(self.sequential.len(), place) {
            let run = || {
                if path == 0 {
                    sequential::execute(store, block)
                } else {
                    parallel::execute(store, block, config)
                }
            };
            let (elapsed, result) = sample(self.batch, run);
            let outcome =
                result.map_err(|e| format!("{}: {e}", ["sequential", "parallel"][path]))?;
            self.total += elapsed;
            let one_run = elapsed / self.batch;
            if path == 0 {
                self.sequential.push(one_run);
                seq = Some(outcome);
            } else {
                self.parallel.push(one_run);
                par = Some(outcome);
            }
        }
        if self.sequential.len() == 1 {
            let fastest = self.sequential[0].min(self.parallel[0]).max(Duration::from_nanos(100));
            self.batch = u32::try_from(MIN_SAMPLE.as_nanos().div_ceil(fastest.as_nanos()))
                .unwrap_or(u32::MAX)
                .clamp(1, 1_000);
        }
        Ok((seq.expect("ran"), par.expect("ran")))
    }
}

/// One timed sample: `batch` runs of `run` after an untimed one; returns their time and the
/// last result. The untimed run lets the sample find the path as a run of its own left the
/// machine (code and branch predictors, caches, the allocator's free memory), not as the
/// other path or the block before did: the sequential path took 1% to 15% longer right after
/// a Block-STM run than right after a sequential run (blocks of 70 us to 1.5 ms), and so did
/// the parallel path on the blocks it runs sequentially, which made them look slower than
/// the same code on the sequential path.
fn sample<T, E>(batch: u32, run: impl Fn() -> Result<T, E>) -> (Duration, Result<T, E>) {
    drop(run());
    // Outcomes are dropped after the clock stops, as a single run's is.
    let mut results = Vec::with_capacity(batch as usize);
    let start = Instant::now();
    for _ in 0..batch.max(1) {
        results.push(run());
        if results.last().is_some_and(Result::is_err) {
            break;
        }
    }
    let elapsed = start.elapsed();
    (elapsed, results.pop().expect("at least one run"))
}

/// One snapshot on one store while its rounds are timed.
struct Timing<'a> {
    snapshot: &'a Snapshot,
    store: Store,
    report: BlockReport,
    times: Times,
    /// The latest sequential outcome.
    outcome: Option<BlockOutcome>,
}

impl<'a> Timing<'a> {
    fn new(snapshot: &'a Snapshot, store: Store, storage: StorageKind) -> Self {
        Self {
            snapshot,
            store,
            report: BlockReport::new(snapshot, storage),
            times: Times::default(),
            outcome: None,
        }
    }

    /// Whether it needs another round: fewer than `runs`, or too little time measured.
    fn wants_round(&self, runs: usize) -> bool {
        let rounds = self.times.sequential.len();
        self.report.error.is_none()
            && (rounds < runs.max(1) || (self.times.total < MIN_TIMED && rounds < MAX_RUNS))
    }

    /// A sequential and a parallel run, in [`sweep_order`], whose outcomes must agree.
    /// `place`: where the block's round comes in the sweep over the blocks.
    fn round(&mut self, config: &ParallelConfig, place: usize) {
        let block = &self.snapshot.block;
        let result = match &self.store {
            Store::Memory(store) => self.times.round(store, block, config, place),
            Store::Mdbx { store, .. } => self.times.round(store, block, config, place),
        };
        let (seq, par) = match result {
            Ok(outcomes) => outcomes,
            Err(error) => return self.report.error = Some(error),
        };
        if let Some(d) = seq.first_difference(&par) {
            return self.report.error = Some(format!("sequential != parallel: {d}"));
        }
        self.report.re_executions = par.stats.re_executions();
        self.report.hot_keys = (par.stats.hot_keys().into_iter().take(HOT_KEYS))
            .map(|(key, aborts)| HotKey { key: key.to_string(), aborts })
            .collect();
        self.report.fallback = par.stats.fallback;
        self.outcome = Some(seq);
    }

    /// Measures the block's ceiling (after its rounds: see `Copies::ceiling`).
    fn ceiling(&mut self, copies: &Copies, runs: usize) {
        let Some(sequential) = self.times.sequential.iter().min().copied() else { return };
        let batch = MIN_CEILING_SAMPLE.as_nanos().div_ceil(sequential.as_nanos().max(100));
        let batch = u32::try_from(batch).unwrap_or(u32::MAX).clamp(1, 1_000);
        let block = &self.snapshot.block;
        let ceiling = match &self.store {
            Store::Memory(store) => {
                copies.ceiling(runs, batch, || sequential::execute(store, block))
            }
            Store::Mdbx { store, .. } => {
                copies.ceiling(runs, batch, || sequential::execute(store, block))
            }
        };
        match ceiling {
            Ok(ceiling) => self.report.ceiling = ceiling,
            Err(e) => self.report.error = Some(format!("sequential copy: {e}")),
        }
    }

    /// The report with median times, checked against the header, and the outcome.
    fn finish(self) -> (BlockReport, Option<BlockOutcome>) {
        let mut report = self.report;
        let Some(outcome) = self.outcome.filter(|_| report.error.is_none()) else {
            return (report, None);
        };
        report.sequential_ms = median(self.times.sequential).as_secs_f64() * 1e3;
        report.parallel_ms = median(self.times.parallel).as_secs_f64() * 1e3;
        report.speedup = report.sequential_ms / report.parallel_ms;
        match check_header(self.snapshot, &outcome) {
            Ok(checked) => {
                report.ok = true;
                report.receipts_root_checked = checked;
            }
            Err(mismatch) => {
                let store = InMemoryStorage::from_diff(&self.snapshot.state);
                report.error = Some(diagnose(self.snapshot, &store, mismatch));
            }
        }
        (report, Some(outcome))
    }
}

/// Runs one snapshot on each requested store; the outcomes must agree across stores.
pub fn replay(
    snapshot: &Snapshot,
    storages: &[StorageKind],
    config: &ParallelConfig,
    runs: usize,
) -> (Vec<BlockReport>, Option<BlockOutcome>) {
    let mut replayed = replay_all(std::slice::from_ref(snapshot), storages, config, runs);
    replayed.pop().expect("one snapshot")
}

/// Runs snapshots on each requested store, in rounds that take turns across all of them: a
/// burst of noise from the machine then costs a few rounds of many blocks rather than every
/// round of one (on this 2-core machine one block's median once fell from 1.38x to 0.98x
/// between two runs of one binary). Per snapshot: its reports, which agree across stores,
/// and its outcome.
pub fn replay_all(
    snapshots: &[Snapshot],
    storages: &[StorageKind],
    config: &ParallelConfig,
    runs: usize,
) -> Vec<(Vec<BlockReport>, Option<BlockOutcome>)> {
    let mut timings: Vec<Vec<Timing<'_>>> = snapshots
        .iter()
        .map(|snapshot| {
            storages
                .iter()
                .map(|&storage| match Store::create(snapshot, storage) {
                    Ok(store) => Timing::new(snapshot, store, storage),
                    Err(e) => {
                        let store = Store::Memory(InMemoryStorage::default());
                        let mut timing = Timing::new(snapshot, store, storage);
                        timing.report.error = Some(format!("cannot create the store: {e}"));
                        timing
                    }
                })
                .collect()
        })
        .collect();
    while timings.iter().flatten().any(|t| t.wants_round(runs)) {
        let due = timings.iter_mut().flatten().filter(|t| t.wants_round(runs));
        for (place, timing) in due.enumerate() {
            timing.round(config, place);
        }
    }
    let copies = Copies::new(config.threads.get());
    for timing in timings.iter_mut().flatten().filter(|t| t.report.error.is_none()) {
        timing.ceiling(&copies, runs);
    }
    timings.into_iter().map(|per_store| agree(per_store.into_iter().map(Timing::finish))).collect()
}

/// One snapshot's reports across stores, each checked against the first outcome.
fn agree(
    finished: impl Iterator<Item = (BlockReport, Option<BlockOutcome>)>,
) -> (Vec<BlockReport>, Option<BlockOutcome>) {
    let mut reports = Vec::new();
    let mut first: Option<BlockOutcome> = None;
    for (mut report, outcome) in finished {
        if let (Some(first), Some(outcome)) = (&first, &outcome)
            && let Some(d) = first.first_difference(outcome)
        {
            report.ok = false;
            report.error = Some(format!("memory != mdbx: {d}"));
        }
        if first.is_none() {
            first = outcome;
        }
        reports.push(report);
    }
    (reports, first)
}

/// A normalized, reviewable summary of a block's outcome (for `insta` snapshots).
#[derive(Debug, Serialize)]
pub struct OutcomeSummary {
    pub block: u64,
    pub txs: usize,
    pub gas_used: u64,
    pub receipts_root: B256,
    /// keccak256 of the post-state diff serialized as JSON.
    pub diff_digest: B256,
}

pub fn summarize(number: u64, outcome: &BlockOutcome) -> OutcomeSummary {
    let diff = serde_json::to_vec(&outcome.diff).expect("diff serializes");
    OutcomeSummary {
        block: number,
        txs: outcome.txs.len(),
        gas_used: outcome.gas_used,
        receipts_root: outcome.receipts_root(),
        diff_digest: keccak256(diff),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_a_sweep_each_path_follows_each_path_equally_often() {
        // follows[a][b]: how often path b ran right after path a.
        let mut follows = [[0u32; 2]; 2];
        let mut last: Option<usize> = None;
        for round in 0..4 {
            for place in 0..5 {
                for path in sweep_order(round, place) {
                    if let Some(before) = last {
                        follows[before][path] += 1;
                    }
                    last = Some(path);
                }
            }
        }
        let [[ss, sp], [ps, pp]] = follows;
        assert!(ss.abs_diff(sp) <= 1 && ps.abs_diff(pp) <= 1, "{follows:?}");
        assert!(ss > 0 && pp > 0, "{follows:?}");
    }

    #[test]
    fn a_sample_times_its_batch_after_an_untimed_run() {
        let runs = std::cell::Cell::new(0u32);
        let pause = Duration::from_millis(50);
        // The first run (the untimed one) is slow, the batch's are instant.
        let run = || {
            runs.set(runs.get() + 1);
            if runs.get() == 1 {
                std::thread::sleep(pause);
            }
            Ok::<u32, ()>(runs.get())
        };
        let (elapsed, last) = sample(3, run);
        assert_eq!((runs.get(), last), (4, Ok(4)), "one untimed run, then the batch of three");
        assert!(elapsed < pause, "the untimed run is not in the sample's {elapsed:?}");
    }

    #[test]
    fn a_failing_run_ends_its_sample() {
        let runs = std::cell::Cell::new(0u32);
        let run = || {
            runs.set(runs.get() + 1);
            Err::<(), u32>(runs.get())
        };
        let (_, last) = sample(5, run);
        assert_eq!((runs.get(), last), (2, Err(2)), "the untimed run, then one timed run");
    }

    #[test]
    fn a_block_of_microseconds_is_timed_in_batches_of_runs() {
        let (store, block) = (InMemoryStorage::default(), Block::default());
        let mut times = Times::default();
        let config = ParallelConfig::with_threads(2);
        times.round(&store, &block, &config, 0).expect("an empty block runs");
        assert!(times.batch > 1, "an empty block takes far less than {MIN_SAMPLE:?}");
        let first_round = times.total;
        times.round(&store, &block, &config, 0).expect("an empty block runs");
        assert_eq!((times.sequential.len(), times.parallel.len()), (2, 2), "a sample per round");
        // Each sample is one run's share of its batch (up to the division's rounding).
        let timed = times.total - first_round;
        let samples = times.sequential[1] + times.parallel[1];
        let rounding = Duration::from_nanos(2);
        assert!(samples * times.batch <= timed && timed <= (samples + rounding) * times.batch);
    }
}

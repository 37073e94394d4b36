//! Replaying snapshots: both paths on both stores, checked against the header, and timed.

use crate::format::{PreAccount, RpcBlock, SnapshotError, alloc, read_json};
use alloy_primitives::{Address, B256, U256, keccak256};
use lockstep_executor::{
    Account, Block, BlockOutcome, Fallback, InMemoryStorage, MdbxStorage, ParallelConfig,
    StateDiff, StateReader, Storage, StorageError, parallel,
    revm::{bytecode::Bytecode, primitives::hardfork::SpecId},
    sequential,
};
use lockstep_harness::bench::{StorageKind, median, turn_order};
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
    pub re_executions: u64,
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
            re_executions: 0,
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
            re_executions: 0,
            fallback: None,
            ok: false,
            error: Some(error),
            receipts_root_checked: false,
        }
    }
}

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
/// microseconds is mostly noise.
const MIN_TIMED: Duration = Duration::from_millis(20);
const MAX_RUNS: usize = 200;

/// Runs one snapshot on one store: at least `runs` rounds of a sequential and a parallel run,
/// each first in every other round.
pub fn replay_on<S: Storage>(
    snapshot: &Snapshot,
    store: &S,
    storage: StorageKind,
    config: &ParallelConfig,
    runs: usize,
) -> (BlockReport, Option<BlockOutcome>) {
    let mut report = BlockReport::new(snapshot, storage);
    let (mut seq_times, mut par_times) = (Vec::new(), Vec::new());
    let mut outcome = None;
    let mut timed = Duration::ZERO;
    while seq_times.len() < runs.max(1) || (timed < MIN_TIMED && seq_times.len() < MAX_RUNS) {
        let (mut seq, mut par) = (None, None);
        // Each path goes first in every other round (see `turn_order`).
        for path in turn_order(seq_times.len(), 2) {
            let start = Instant::now();
            let result = if path == 0 {
                sequential::execute(store, &snapshot.block)
            } else {
                parallel::execute(store, &snapshot.block, config)
            };
            let elapsed = start.elapsed();
            let outcome = match result {
                Ok(outcome) => outcome,
                Err(e) => {
                    let which = ["sequential", "parallel"][path];
                    return (BlockReport { error: Some(format!("{which}: {e}")), ..report }, None);
                }
            };
            timed += elapsed;
            if path == 0 {
                seq_times.push(elapsed);
                seq = Some(outcome);
            } else {
                par_times.push(elapsed);
                par = Some(outcome);
            }
        }
        let (seq, par) = (seq.expect("ran"), par.expect("ran"));
        if let Some(d) = seq.first_difference(&par) {
            return (
                BlockReport { error: Some(format!("sequential != parallel: {d}")), ..report },
                None,
            );
        }
        report.re_executions = par.stats.re_executions();
        report.fallback = par.stats.fallback;
        outcome = Some(seq);
    }
    let outcome = outcome.expect("at least one run");
    report.sequential_ms = median(seq_times).as_secs_f64() * 1e3;
    report.parallel_ms = median(par_times).as_secs_f64() * 1e3;
    report.speedup = report.sequential_ms / report.parallel_ms;
    match check_header(snapshot, &outcome) {
        Ok(checked) => {
            report.ok = true;
            report.receipts_root_checked = checked;
        }
        Err(mismatch) => {
            let store = InMemoryStorage::from_diff(&snapshot.state);
            report.error = Some(diagnose(snapshot, &store, mismatch));
        }
    }
    (report, Some(outcome))
}

/// Runs one snapshot on each requested store; the outcomes must agree across stores.
pub fn replay(
    snapshot: &Snapshot,
    storages: &[StorageKind],
    config: &ParallelConfig,
    runs: usize,
) -> (Vec<BlockReport>, Option<BlockOutcome>) {
    let mut reports = Vec::new();
    let mut first: Option<BlockOutcome> = None;
    for storage in storages {
        let (mut report, outcome) = match storage {
            StorageKind::Memory => replay_on(
                snapshot,
                &InMemoryStorage::from_diff(&snapshot.state),
                *storage,
                config,
                runs,
            ),
            StorageKind::Mdbx => {
                let created = tempfile::tempdir().map_err(|e| e.to_string()).and_then(|dir| {
                    MdbxStorage::create(dir.path().join("state"), &snapshot.state)
                        .map(|s| (dir, s))
                        .map_err(|e| e.to_string())
                });
                match created {
                    Ok((_dir, store)) => replay_on(snapshot, &store, *storage, config, runs),
                    Err(e) => {
                        let error = format!("cannot create the MDBX store: {e}");
                        (BlockReport::failed(snapshot.number, *storage, error), None)
                    }
                }
            }
        };
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

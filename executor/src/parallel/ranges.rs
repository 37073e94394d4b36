//! Speculative ranges, for blocks of many transactions: each worker executes a contiguous
//! range of the block in order, on a cached state of its own over the state before the block
//! (the sequential path's), and records every location it loaded from that state. The ranges
//! are then checked in block order: a range stands as long as what it loaded is what the
//! ranges before it left there. From the first transaction that loaded a value an earlier
//! range changed, the rest of the block runs in order on the calling thread, after the
//! transactions that stood.
//!
//! This is Block-STM's optimistic execution and validation with a range, not a transaction,
//! as the unit. On blocks of many cheap transactions Block-STM's bookkeeping per transaction
//! (a versioned read for every access, a record of every write, a validation, an outcome
//! merged at the end) cost about as much as executing them; here a location costs one
//! recorded load per range, and a range's changes are merged as the sequential path merges
//! them.
//!
//! Every transaction pays the beneficiary, so the later ranges defer its fee (as Block-STM's
//! workers do) and the fees are resolved in block order at the end. A transaction of a later
//! range that reads the beneficiary itself ends its range's speculation there.
//!
//! The ranges start as one per thread, of about equal gas limits; a helper done with its
//! range then takes a chunk of what the first range has not reached yet (see `claims.rs`),
//! so the first range ends where the helpers' chunks begin.

use super::{
    ParallelConfig,
    chaos::Chaos,
    claims::{self, Claims},
    pool,
    vm::{Base, DeferredFee, beneficiary_fee},
};
use crate::{
    block::Block,
    block_state::{BlockState, Written, recycle},
    error::ExecutionError,
    outcome::{Conflict, ExecutionStats, StateKey, TxOutcome},
    sequential,
    sorted_map::SortedMap,
    state::{self, Account, AccountDiff, StateDiff},
    storage::{StateReader, StorageError},
};
use alloy_primitives::{Address, B256, U256, map::HashMap};
use revm::{
    Context, Database, ExecuteEvm, MainBuilder, MainContext,
    bytecode::Bytecode,
    context::{
        ContextSetters,
        result::{EVMError, ExecutionResult, InvalidTransaction},
    },
    handler::Handler,
    state::AccountInfo,
};
use std::{
    borrow::Cow,
    cell::RefCell,
    iter::Peekable,
    marker::PhantomData,
    ops::Range,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

/// What a block's ranges produced, once checked and completed: its transactions' outcomes,
/// the merged account changes (the pre-block calls' included) and the counters.
pub(crate) struct Ranges {
    pub(crate) txs: Vec<TxOutcome>,
    pub(crate) accounts: SortedMap<Address, AccountDiff>,
    pub(crate) stats: ExecutionStats,
}

/// Executes `block`'s transactions as speculative ranges, one per thread and then chunks
/// for the helpers that finish first, on the store's state with the pre-block system calls'
/// changes on top: `reader` opens a reader of the store for each range.
pub(crate) fn execute<R: StateReader>(
    block: &Block,
    config: &ParallelConfig,
    pre_block: &StateDiff,
    reader: impl Fn() -> Result<R, StorageError> + Sync,
) -> Result<Ranges, ExecutionError> {
    let txs = block.transactions.len();
    let bounds = bounds(block, config.threads.get(), config.chaos);
    // Under chaos any chunk will do, so that small test blocks run as many ranges.
    let min_chunk = if config.chaos.is_some() { 1 } else { claims::MIN_CHUNK_TXS };
    let claims = Claims::new(block, bounds[1], min_chunk);
    let later: Mutex<Vec<Result<Speculation, ExecutionError>>> = Mutex::default();
    let parent = block.parent();
    let mut first = None;
    let probe = Probe::default();
    pool::run(
        bounds.len() - 2,
        |worker| {
            let range = bounds[worker]..bounds[worker + 1];
            let chaos = config.chaos.map(|seed| Chaos::new(seed, worker));
            let speculations = help(block, pre_block, &reader, range, &claims, &probe, chaos);
            later.lock().expect("ranges lock poisoned").extend(speculations);
        },
        || {
            first = Some(reader().map_err(ExecutionError::from).and_then(|reader| {
                let base = Base { reader, diff: pre_block };
                let mut state = BlockState::with_capacity(base, parent, txs);
                let mut outcomes = Vec::with_capacity(txs);
                let mut chaos = config.chaos.map(|seed| Chaos::new(seed, 0));
                let mut claimed = std::iter::from_fn(|| {
                    if let Some(chaos) = &mut chaos {
                        chaos.delay();
                    }
                    claims.next_first()
                });
                let probed = claimed.by_ref().take(PROBE_TXS);
                let done = sequential::execute_txs(&mut state, block, probed, 0, &mut outcomes);
                // Published even on an error, so that no later range waits for it.
                let _ = probe.written.set(probe_of(&outcomes));
                done?;
                let gas = outcomes.last().map_or(0, |o| o.cumulative_gas_used);
                sequential::execute_txs(&mut state, block, claimed, gas, &mut outcomes)?;
                // Needed only when every range stands, the common case: built here, while
                // the other ranges may still run, unless one gave up already.
                let changes = (!probe.gave_up.load(Ordering::Relaxed)).then(|| state.changes());
                Ok((state, outcomes, changes))
            }));
        },
    );
    let (mut state, mut outcomes, first_changes) = first.expect("the calling thread ran")?;
    let first_end = outcomes.len();
    let mut later: Vec<Speculation> = (later.into_inner().expect("ranges lock poisoned"))
        .into_iter()
        .collect::<Result<_, _>>()?;
    // Helpers take their chunks from the top down: block order is by start. (Chaos may
    // leave a helper an empty range.)
    later.retain(|s| !s.range.is_empty());
    later.sort_unstable_by_key(|s| s.range.start);
    debug_assert_eq!(
        later.iter().try_fold(first_end, |end, s| (end == s.range.start).then_some(s.range.end)),
        Some(txs),
        "the ranges cover the block, each transaction once"
    );
    let mut changes: Vec<_> = later.iter_mut().map(|s| std::mem::take(&mut s.changes)).collect();

    let ranges = 1 + later.len();
    let mut stats = ExecutionStats { ranges, ..ExecutionStats::sequential(txs) };
    stats.sequential = false;
    let stops: Vec<Option<usize>> = later.iter().map(Speculation::stopped).collect();
    let outputs: Vec<Vec<Output>> =
        later.iter_mut().map(|s| std::mem::take(&mut s.outputs)).collect();
    // The tail's three tasks run as though every range stands, the common case: this thread
    // pays the later ranges' fees, a helper merges the ranges' changes (the first range's and
    // the last's, which no check reads, moved), and then each takes chunks of the check until
    // none is left. A stale range (or an error) makes the merge useless: the helper then
    // stops early rather than hold up the calling thread, which waits for it before finishing
    // the block in order.
    let owned = Mutex::new(first_changes.map(|first| (first, changes.pop())));
    let merged = OnceLock::new();
    // A range that stopped short is stale: then the merge is in vain from the start.
    let in_vain = AtomicBool::new(stops.iter().any(Option::is_some));
    let check = Check::new(&later, &changes, state.written(), &stops);
    let mut paid = None;
    pool::run(
        usize::from(!later.is_empty()),
        |_| {
            let owned = owned.lock().expect("merge lock poisoned").take();
            if let Some((first, last)) = owned
                && let Some(accounts) = merge(&pre_block.accounts, first, &changes, last, &in_vain)
            {
                let _ = merged.set(accounts);
            }
            // Without a reader of its own, it leaves the check to the calling thread.
            if !check.done()
                && let Ok(reader) = reader()
            {
                check.work(&Base { reader, diff: pre_block }, &in_vain);
            }
        },
        || {
            let beneficiary = Beneficiary::new(block, state.written(), state.reader());
            if beneficiary.is_err() {
                in_vain.store(true, Ordering::Relaxed);
            }
            paid = Some(beneficiary.map(|mut beneficiary| {
                for outputs in outputs {
                    beneficiary.resolve(block, outputs, &mut outcomes);
                }
                beneficiary
            }));
            check.work(state.reader(), &in_vain);
        },
    );
    let beneficiary = paid.expect("the calling thread ran")?;
    let stale = check.stale(&stops)?;
    let checked = stale.map_or(later.len(), |(index, _, _)| index + 1);
    for speculation in &later[..checked] {
        for tx in speculation.range.start..speculation.executed_to() {
            stats.validations[tx] = 1;
        }
    }
    let Some((index, stale_tx, key)) = stale else {
        let accounts = match merged.into_inner() {
            Some(merged) => merged,
            None => {
                // No helper merged: no later range, or (every range standing) unreachable
                // without the first range's changes; built here all the same.
                let owned = owned.into_inner().expect("merge lock poisoned");
                let (first, last) = owned.unwrap_or_else(|| (state.changes(), changes.pop()));
                let never = AtomicBool::new(false);
                merge(&pre_block.accounts, first, &changes, last, &never).expect("not stopped")
            }
        };
        let accounts = with_beneficiary(accounts, beneficiary);
        return Ok(Ranges { txs: outcomes, accounts, stats });
    };
    // The ranges before the stale one stand, and so do its transactions before the stale
    // one, whose fees are paid: bring the state up to them.
    outcomes.truncate(stale_tx);
    apply(&mut state, &outcomes[first_end..]);
    // Executions in vain: what the ranges ran from the stale point on.
    let mut later = later.into_iter().skip(index);
    let speculation = later.next().expect("the stale range is one of them");
    let wasted = std::iter::once(stale_tx..speculation.executed_to());
    for range in wasted.chain(later.map(|s| s.range.start..s.executed_to())) {
        for tx in range {
            stats.executions[tx] += 1;
        }
    }
    if let Some(key) = key {
        stats.aborts[stale_tx] = 1;
        let writer = last_writer(&outcomes, &key);
        stats.conflicts.push(Conflict { tx: stale_tx, key, writer });
    }
    let gas = outcomes.last().map_or(0, |o| o.cumulative_gas_used);
    sequential::execute_txs(&mut state, block, stale_tx..txs, gas, &mut outcomes)?;
    let accounts = join(&pre_block.accounts, state.changes());
    Ok(Ranges { txs: outcomes, accounts, stats })
}

/// A stale later range: its index among them, its first stale transaction, and the key that
/// transaction loaded (`None` when the range stopped there on the beneficiary).
type Stale = (usize, usize, Option<StateKey>);

/// Loads checked per chunk: some tens of microseconds of work, so that the threads end the
/// check close together.
const CHECK_CHUNK: usize = 1024;

/// The check of the later ranges against what the ranges before each changed, in chunks of
/// their loads that the tail's threads take once their own task is done.
struct Check<'a> {
    later: &'a [Speculation],
    /// The changes of the later ranges, in order (the last may be missing: no check reads it).
    changes: &'a [SortedMap<Address, AccountDiff>],
    first: Written<'a>,
    /// (later range, its loads) per chunk.
    chunks: Vec<(usize, Range<usize>)>,
    next: AtomicUsize,
    /// Per later range, the first of its loads found changed (`usize::MAX`: none).
    changed: Vec<AtomicUsize>,
    /// Whether a changed load (or an error) was found: chunks are taken in block order, so
    /// every chunk before it is taken already, and none after it can matter.
    found: AtomicBool,
    error: Mutex<Option<StorageError>>,
}

impl<'a> Check<'a> {
    /// The check of `later`, whose stops are `stops`: up to the first that stopped short
    /// (the ranges after it run again anyway).
    fn new(
        later: &'a [Speculation],
        changes: &'a [SortedMap<Address, AccountDiff>],
        first: Written<'a>,
        stops: &[Option<usize>],
    ) -> Self {
        let checked = stops.iter().position(Option::is_some).map_or(later.len(), |i| i + 1);
        let chunks = (later[..checked].iter().enumerate())
            .flat_map(|(index, s)| {
                let loads = s.loads.len();
                (0..loads)
                    .step_by(CHECK_CHUNK)
                    .map(move |from| (index, from..(from + CHECK_CHUNK).min(loads)))
            })
            .collect();
        let changed = later.iter().map(|_| AtomicUsize::new(usize::MAX)).collect();
        let (next, found) = (AtomicUsize::new(0), AtomicBool::new(false));
        Self { later, changes, first, chunks, next, changed, found, error: Mutex::default() }
    }

    /// Whether nothing is left to check.
    fn done(&self) -> bool {
        self.found.load(Ordering::Relaxed) || self.next.load(Ordering::Relaxed) >= self.chunks.len()
    }

    /// Checks chunks until none is left, reading the state before the block from `base`;
    /// sets `in_vain` once it finds a range stale (or fails).
    fn work(&self, base: &impl StateReader, in_vain: &AtomicBool) {
        while !self.found.load(Ordering::Relaxed) {
            let next = self.next.fetch_add(1, Ordering::Relaxed);
            let Some((index, loads)) = self.chunks.get(next) else { return };
            let accepted = &self.changes[..*index];
            match self.later[*index].first_changed(self.first, base, accepted, loads.clone()) {
                Ok(None) => {}
                Ok(Some(at)) => {
                    self.changed[*index].fetch_min(at, Ordering::Relaxed);
                    self.found.store(true, Ordering::Relaxed);
                    in_vain.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    self.error.lock().expect("check lock poisoned").get_or_insert(e);
                    self.found.store(true, Ordering::Relaxed);
                    in_vain.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Once every chunk is checked: the first stale range, if any. `stops`: where each
    /// range stopped short, if it did.
    fn stale(self, stops: &[Option<usize>]) -> Result<Option<Stale>, ExecutionError> {
        if let Some(error) = self.error.into_inner().expect("check lock poisoned") {
            return Err(error.into());
        }
        for (index, (speculation, changed)) in self.later.iter().zip(self.changed).enumerate() {
            let at = changed.into_inner();
            if at != usize::MAX {
                let key = match speculation.loads[at] {
                    Load::Account(address) => StateKey::Account(address),
                    Load::Slot(address, slot) => StateKey::Storage(address, slot),
                };
                return Ok(Some((index, speculation.tx_of_load(at), Some(key))));
            }
            if let Some(tx) = stops[index] {
                return Ok(Some((index, tx, None)));
            }
        }
        Ok(None)
    }
}

/// Where the ranges start, and the block's end: as many ranges as `workers`, of about equal
/// gas limits (at random places under chaos).
fn bounds(block: &Block, workers: usize, chaos: Option<u64>) -> Vec<usize> {
    let txs = block.transactions.len();
    let mut bounds = vec![0];
    if let Some(seed) = chaos {
        let mut chaos = Chaos::new(seed, usize::MAX);
        let mut cuts: Vec<usize> = (1..workers).map(|_| chaos.below(txs + 1)).collect();
        cuts.sort_unstable();
        bounds.extend(cuts);
    } else {
        let total: u128 = block.transactions.iter().map(|tx| u128::from(tx.gas_limit)).sum();
        let mut sum = 0u128;
        for (index, tx) in block.transactions.iter().enumerate() {
            while bounds.len() < workers && sum * workers as u128 >= total * bounds.len() as u128 {
                bounds.push(index);
            }
            sum += u128::from(tx.gas_limit);
        }
        bounds.resize(workers, txs);
    }
    bounds.push(txs);
    bounds
}

/// Transactions at the start of each range that judge whether the later ranges are worth
/// running: in a block where every transaction depends on the one before (a counter, one
/// sender), a later range's first transaction loads what the first range's first wrote.
const PROBE_TXS: usize = 32;

/// What the first range's first [`PROBE_TXS`] transactions wrote, for the later ranges to
/// see early whether they are likely to stand, and whether one gave up.
#[derive(Debug, Default)]
struct Probe {
    written: OnceLock<HashMap<Load, Value>>,
    gave_up: AtomicBool,
}

/// A value a transaction left at a location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    Account(Option<Account>),
    Slot(U256),
}

/// The probe's content: the last value each of `outcomes` wrote, by location.
fn probe_of(outcomes: &[TxOutcome]) -> HashMap<Load, Value> {
    let mut written = HashMap::default();
    for outcome in outcomes {
        for (address, change) in &outcome.changes.accounts {
            written.insert(Load::Account(*address), Value::Account(change.account));
            for (slot, value) in &change.storage {
                written.insert(Load::Slot(*address, *slot), Value::Slot(*value));
            }
        }
    }
    written
}

/// A location a range loaded from the state before the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Load {
    Account(Address),
    Slot(Address, U256),
}

/// A reader that records the accounts and slots it is asked for. The cached state above it
/// asks once per location, so this is the range's read set at one entry per location.
#[derive(Debug)]
struct Recording<R> {
    reader: R,
    loads: RefCell<Vec<Load>>,
}

impl<R: StateReader> StateReader for Recording<R> {
    fn account(&self, address: Address) -> Result<Option<Account>, StorageError> {
        self.loads.borrow_mut().push(Load::Account(address));
        self.reader.account(address)
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytecode>, StorageError> {
        // Code never changes under its hash. The range keeps a copy of its own: revm clones
        // and drops a contract's code in every transaction that calls it, and the count of
        // the store's one copy would move between the workers' cores at each.
        let code = self.reader.code(code_hash)?;
        Ok(code.map(|code| Bytecode::new_raw_checked(code.original_bytes()).unwrap_or(code)))
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StorageError> {
        self.loads.borrow_mut().push(Load::Slot(address, slot));
        self.reader.storage(address, slot)
    }

    fn block_hash(&self, number: u64) -> Result<Option<B256>, StorageError> {
        self.reader.block_hash(number)
    }
}

/// Why a later range's transaction could not execute.
#[derive(Debug, thiserror::Error)]
enum RangeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("reads the beneficiary, whose earlier fees are not resolved yet")]
    Beneficiary,
}

impl revm::database_interface::DBErrorMarker for RangeError {}

/// A later range's state as revm's database: everything but the beneficiary.
struct RangeDb<'s, R> {
    state: &'s mut BlockState<Recording<R>>,
    beneficiary: Address,
}

impl<R: StateReader> Database for RangeDb<'_, R> {
    type Error = RangeError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, RangeError> {
        if address == self.beneficiary {
            return Err(RangeError::Beneficiary);
        }
        Ok(self.state.basic(address)?)
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, RangeError> {
        Ok(self.state.code_by_hash(code_hash)?)
    }

    fn storage(&mut self, address: Address, slot: U256) -> Result<U256, RangeError> {
        Ok(self.state.storage(address, slot)?)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, RangeError> {
        Ok(self.state.block_hash(number)?)
    }
}

/// A later range's transaction as executed with its fee deferred.
#[derive(Debug)]
struct Output {
    result: Result<ExecutionResult, InvalidTransaction>,
    changes: StateDiff,
    fee: U256,
}

/// What a later range did on its own.
#[derive(Debug)]
struct Speculation {
    range: Range<usize>,
    /// One per transaction executed, from the range's start.
    outputs: Vec<Output>,
    /// What it loaded, in order; where each executed transaction's loads start (one stopped
    /// on the beneficiary included).
    loads: Vec<Load>,
    starts: Vec<usize>,
    /// The range's own changes, merged.
    changes: SortedMap<Address, AccountDiff>,
}

impl Speculation {
    /// The end of what it executed, a transaction stopped on the beneficiary included.
    fn executed_to(&self) -> usize {
        self.range.start + self.starts.len()
    }

    /// Where the speculation stopped short of the range's end: the first transaction without
    /// an output (one that read the beneficiary, or the next after a failed probe).
    fn stopped(&self) -> Option<usize> {
        let end = self.range.start + self.outputs.len();
        (end < self.range.end).then_some(end)
    }

    /// The transaction that made the load at `at`.
    fn tx_of_load(&self, at: usize) -> usize {
        self.range.start + self.starts.partition_point(|start| *start <= at) - 1
    }

    /// The first of `loads` (positions in this range's loads) whose value the ranges before
    /// it changed. `first`: what the first range wrote; `accepted`: the changes of the ranges
    /// between it and this one; `base`: the state before the block.
    fn first_changed(
        &self,
        first: Written<'_>,
        base: &impl StateReader,
        accepted: &[SortedMap<Address, AccountDiff>],
        loads: Range<usize>,
    ) -> Result<Option<usize>, StorageError> {
        for at in loads {
            let changed = match self.loads[at] {
                Load::Account(address) => {
                    let later = accepted.iter().rev().find_map(|c| c.get(&address));
                    match later.map(|change| change.account).or_else(|| first.account(&address)) {
                        Some(now) => now != base.account(address)?,
                        None => false,
                    }
                }
                Load::Slot(address, slot) => {
                    let later = accepted.iter().rev().find_map(|c| {
                        let change = c.get(&address)?;
                        let value = change.storage.get(&slot).copied();
                        value.or(change.storage_cleared.then_some(U256::ZERO))
                    });
                    match later.or_else(|| first.slot(&address, &slot)) {
                        Some(now) => now != base.storage(address, slot)?,
                        None => false,
                    }
                }
            };
            if changed {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }
}

/// A helper's work: its own `range`, then chunks of what the first range has not reached
/// while there are any. Each range's changes are built once no chunk is left, so that the
/// helper takes its chunks while the first range still executes.
fn help<R: StateReader>(
    block: &Block,
    pre_block: &StateDiff,
    reader: impl Fn() -> Result<R, StorageError>,
    mut range: Range<usize>,
    claims: &Claims<'_>,
    probe: &Probe,
    mut chaos: Option<Chaos>,
) -> Vec<Result<Speculation, ExecutionError>> {
    let mut done = Vec::new();
    // How far this helper got: the gas limits of what it ran, against the first range's.
    let mut executed = 0;
    loop {
        executed += claims.gas_of(range.clone());
        let speculated = reader().map_err(ExecutionError::from).and_then(|reader| {
            let reader =
                Recording { reader: Base { reader, diff: pre_block }, loads: RefCell::default() };
            let state = BlockState::with_capacity(reader, block.parent(), range.len());
            speculate(block, state, range, probe, chaos.as_mut())
        });
        // A range that stopped short ends the speculation there: what comes after it runs
        // in order, so claiming more would be in vain.
        let go_on = matches!(&speculated, Ok((s, _)) if s.stopped().is_none())
            && !probe.gave_up.load(Ordering::Relaxed);
        done.push(speculated);
        match go_on.then(|| claims.chunk(executed)).flatten() {
            Some(chunk) => range = chunk,
            None => break,
        }
    }
    let built = done.into_iter().map(|speculated| {
        let (mut speculation, state) = speculated?;
        speculation.changes = state.changes();
        Ok(speculation)
    });
    built.collect()
}

/// Executes `range` in order on `state` with the beneficiary's fees deferred, until the range
/// ends or a transaction reads the beneficiary; returns what it did and the state it left,
/// whose changes are still to build.
fn speculate<R: StateReader>(
    block: &Block,
    mut state: BlockState<Recording<R>>,
    range: Range<usize>,
    probe: &Probe,
    mut chaos: Option<&mut Chaos>,
) -> Result<(Speculation, BlockState<Recording<R>>), ExecutionError> {
    let mut outputs = Vec::with_capacity(range.len());
    let mut starts = Vec::with_capacity(range.len());
    let db = RangeDb { state: &mut state, beneficiary: block.beneficiary };
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_block(block.block_env())
        .with_cfg(block.cfg_env())
        .build_mainnet();
    let mut probed = false;
    for index in range.clone() {
        if let Some(chaos) = &mut chaos {
            chaos.delay();
        }
        let db = &evm.ctx.journaled_state.database;
        if !probed
            && starts.len() >= PROBE_TXS.min(range.len())
            && let Some(written) = probe.written.get()
        {
            probed = true;
            if unlikely_to_stand(db.state.reader(), written)? {
                probe.gave_up.store(true, Ordering::Relaxed);
                break;
            }
        }
        starts.push(db.state.reader().loads.borrow().len());
        let tx = &block.transactions[index];
        evm.ctx.set_tx(tx.clone());
        let outcome = DeferredFee(PhantomData).run(&mut evm);
        let evm_state = evm.finalize();
        let output = match outcome {
            Ok(result) => {
                let journal = &mut evm.ctx.journaled_state;
                // Room for the fee's change, added when it is resolved.
                let changes =
                    journal.database.state.commit_evm_state_with_room(&evm_state, block.spec, 1);
                recycle(&mut journal.inner, evm_state);
                let fee = beneficiary_fee(tx, block, &result);
                Output { result: Ok(result), changes, fee }
            }
            Err(EVMError::Transaction(invalid)) => {
                Output { result: Err(invalid), changes: StateDiff::default(), fee: U256::ZERO }
            }
            Err(EVMError::Database(RangeError::Beneficiary)) => break,
            Err(EVMError::Database(RangeError::Storage(e))) => return Err(e.into()),
            Err(e) => {
                return Err(ExecutionError::Evm {
                    context: format!("tx {index}"),
                    message: e.to_string(),
                });
            }
        };
        outputs.push(output);
    }
    drop(evm);
    let loads = state.reader().loads.take();
    let changes = SortedMap::default();
    Ok((Speculation { range, outputs, loads, starts, changes }, state))
}

/// Whether a range's loads so far include a value the first range's probe shows changed:
/// then everything the range executes from there on is thrown away, and it stops.
fn unlikely_to_stand<R: StateReader>(
    recording: &Recording<R>,
    written: &HashMap<Load, Value>,
) -> Result<bool, ExecutionError> {
    for load in recording.loads.borrow().iter() {
        let changed = match (load, written.get(load)) {
            (Load::Account(address), Some(Value::Account(now))) => {
                *now != recording.reader.account(*address)?
            }
            (Load::Slot(address, slot), Some(Value::Slot(now))) => {
                *now != recording.reader.storage(*address, *slot)?
            }
            _ => false,
        };
        if changed {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The beneficiary as the transactions resolved so far leave it.
#[derive(Clone, Copy)]
struct Beneficiary {
    address: Address,
    account: Option<Account>,
    /// Whether a transaction changed it: then the block's diff holds it.
    changed: bool,
}

impl Beneficiary {
    /// As the first range leaves it: `first`, what it wrote, over `base`, the state before
    /// the block.
    fn new(
        block: &Block,
        first: Written<'_>,
        base: &impl StateReader,
    ) -> Result<Self, StorageError> {
        let address = block.beneficiary;
        let written = first.account(&address);
        let account = match written {
            Some(account) => account,
            None => base.account(address)?,
        };
        Ok(Self { address, account, changed: written.is_some() })
    }

    /// Pays the fees of `outputs` in order and appends their outcomes.
    fn resolve(&mut self, block: &Block, outputs: Vec<Output>, outcomes: &mut Vec<TxOutcome>) {
        let mut gas = outcomes.last().map_or(0, |o| o.cumulative_gas_used);
        for output in outputs {
            let tx_type = block.transactions[outcomes.len()].tx_type;
            let Output { result, mut changes, fee } = output;
            let result = match result {
                Ok(result) => result,
                Err(invalid) => {
                    outcomes.push(TxOutcome::invalid(invalid, tx_type, gas));
                    continue;
                }
            };
            let after = state::credited(self.account, fee, block.spec);
            if after != self.account {
                let change = AccountDiff { account: after, ..AccountDiff::default() };
                changes.accounts.insert(self.address, change);
                self.account = after;
                self.changed = true;
            }
            gas += result.tx_gas_used();
            outcomes.push(sequential::executed(tx_type, result, gas, changes));
        }
    }
}

/// Applies transactions' changes to `state`, in order.
fn apply<R: StateReader>(state: &mut BlockState<R>, outcomes: &[TxOutcome]) {
    for outcome in outcomes {
        state.apply(&outcome.changes);
    }
}

/// The last transaction whose changes hold `key`.
fn last_writer(outcomes: &[TxOutcome], key: &StateKey) -> Option<usize> {
    outcomes.iter().rposition(|outcome| {
        let accounts = &outcome.changes.accounts;
        match key {
            StateKey::Account(address) | StateKey::Wipe(address) => accounts.contains_key(address),
            StateKey::Storage(address, slot) => accounts
                .get(address)
                .is_some_and(|c| c.storage_cleared || c.storage.contains_key(slot)),
        }
    })
}

/// The block's account changes: the pre-block calls', then every range's in block order (a
/// later change of an account goes on top of an earlier one), in one pass over them all. It
/// runs beside the checks, which read the middle ranges' changes: those are copied from in
/// place, while the first range's and the last's, which no check reads, are moved. `None`
/// if `in_vain` was set before the merge was done.
fn merge(
    pre_block: &SortedMap<Address, AccountDiff>,
    first: SortedMap<Address, AccountDiff>,
    middle: &[SortedMap<Address, AccountDiff>],
    last: Option<SortedMap<Address, AccountDiff>>,
    in_vain: &AtomicBool,
) -> Option<SortedMap<Address, AccountDiff>> {
    let mut layers: Vec<Layer<'_>> =
        std::iter::once(Layer::Borrowed(pre_block.into_iter().peekable()))
            .chain([Layer::Owned(first.into_iter().peekable())])
            .chain(middle.iter().map(|layer| Layer::Borrowed(layer.into_iter().peekable())))
            .chain(last.map(|layer| Layer::Owned(layer.into_iter().peekable())))
            .collect();
    let mut merged = Vec::with_capacity(layers.iter().map(Layer::len).sum());
    loop {
        // Often enough to stop within microseconds, rarely enough to cost nothing.
        if merged.len() % 1024 == 0 && in_vain.load(Ordering::Relaxed) {
            return None;
        }
        let Some(address) = layers.iter_mut().filter_map(Layer::peek).min() else { break };
        let mut change: Option<AccountDiff> = None;
        for layer in &mut layers {
            if let Some(on_top) = layer.next_if(address) {
                match &mut change {
                    Some(change) => change.merge(&on_top),
                    None => change = Some(on_top.into_owned()),
                }
            }
        }
        merged.push((address, change.expect("some layer holds the address")));
    }
    Some(SortedMap::from_sorted(merged))
}

/// A layer of changes as [`merge`] reads it, address by address.
enum Layer<'a> {
    Owned(Peekable<std::vec::IntoIter<(Address, AccountDiff)>>),
    Borrowed(Peekable<<&'a SortedMap<Address, AccountDiff> as IntoIterator>::IntoIter>),
}

impl<'a> Layer<'a> {
    fn len(&self) -> usize {
        match self {
            Self::Owned(layer) => layer.len(),
            Self::Borrowed(layer) => layer.len(),
        }
    }

    fn peek(&mut self) -> Option<Address> {
        match self {
            Self::Owned(layer) => layer.peek().map(|(address, _)| *address),
            Self::Borrowed(layer) => layer.peek().map(|(address, _)| **address),
        }
    }

    /// The layer's change of `address`, if that is its next.
    fn next_if(&mut self, address: Address) -> Option<Cow<'a, AccountDiff>> {
        match self {
            Self::Owned(layer) => layer.next_if(|(a, _)| *a == address).map(|(_, c)| Cow::Owned(c)),
            Self::Borrowed(layer) => {
                layer.next_if(|(a, _)| **a == address).map(|(_, c)| Cow::Borrowed(c))
            }
        }
    }
}

/// `accounts` with the beneficiary as the fees leave it, where a transaction changed it.
fn with_beneficiary(
    mut accounts: SortedMap<Address, AccountDiff>,
    beneficiary: Beneficiary,
) -> SortedMap<Address, AccountDiff> {
    if beneficiary.changed {
        match accounts.get_mut(&beneficiary.address) {
            Some(change) => change.account = beneficiary.account,
            None => {
                let change = AccountDiff { account: beneficiary.account, ..AccountDiff::default() };
                accounts.insert(beneficiary.address, change);
            }
        }
    }
    accounts
}

/// The pre-block calls' few changes under `later`, a whole block's.
fn join(
    earlier: &SortedMap<Address, AccountDiff>,
    mut later: SortedMap<Address, AccountDiff>,
) -> SortedMap<Address, AccountDiff> {
    for (address, change) in earlier {
        let mut joined = change.clone();
        match later.get_mut(address) {
            Some(on_top) => {
                joined.merge(on_top);
                *on_top = joined;
            }
            None => {
                later.insert(*address, joined);
            }
        }
    }
    later
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(balance: u64) -> Option<Account> {
        Some(Account::with_balance(U256::from(balance)))
    }

    fn change(balance: u64, cleared: bool, slots: &[(u64, u64)]) -> AccountDiff {
        let storage = slots.iter().map(|&(k, v)| (U256::from(k), U256::from(v))).collect();
        AccountDiff { account: account(balance), storage_cleared: cleared, storage }
    }

    fn at(byte: u8) -> Address {
        Address::repeat_byte(byte)
    }

    #[test]
    fn merge_puts_each_layer_on_the_ones_before() {
        let pre = SortedMap::from([(at(1), change(1, false, &[(1, 1), (2, 2)]))]);
        let first =
            SortedMap::from([(at(1), change(2, false, &[(2, 3)])), (at(3), change(3, false, &[]))]);
        let middle =
            SortedMap::from([(at(1), change(4, true, &[(5, 5)])), (at(2), change(6, false, &[]))]);
        let last =
            SortedMap::from([(at(2), change(7, false, &[(8, 8)])), (at(4), change(1, false, &[]))]);
        let go = AtomicBool::new(false);
        let merged =
            merge(&pre, first.clone(), std::slice::from_ref(&middle), Some(last.clone()), &go);
        let expected = SortedMap::from([
            // The wipe in the middle layer drops the slots before it.
            (at(1), change(4, true, &[(5, 5)])),
            (at(2), change(7, false, &[(8, 8)])),
            (at(3), change(3, false, &[])),
            (at(4), change(1, false, &[])),
        ]);
        assert_eq!(merged.unwrap(), expected);
        let without_wipe = merge(&pre, first.clone(), &[], None, &go).unwrap();
        assert_eq!(without_wipe[&at(1)], change(2, false, &[(1, 1), (2, 3)]));
        // Whether a layer is moved or copied from, the merge is the same.
        let borrowed = merge(&pre, SortedMap::new(), &[first, middle, last], None, &go);
        assert_eq!(borrowed.unwrap(), expected);
    }

    #[test]
    fn a_merge_in_vain_stops() {
        let layer: SortedMap<_, _> = (0..=255).map(|b| (at(b), change(1, false, &[]))).collect();
        let in_vain = AtomicBool::new(true);
        assert!(merge(&SortedMap::new(), layer, &[], None, &in_vain).is_none());
    }

    #[test]
    fn the_beneficiary_is_set_only_when_a_transaction_changed_it() {
        let accounts = SortedMap::from([(at(1), change(1, false, &[(1, 1)]))]);
        let beneficiary = |address, changed| Beneficiary { address, account: account(9), changed };
        let unchanged = with_beneficiary(accounts.clone(), beneficiary(at(1), false));
        assert_eq!(unchanged, accounts);
        let patched = with_beneficiary(accounts.clone(), beneficiary(at(1), true));
        assert_eq!(patched[&at(1)], change(9, false, &[(1, 1)]));
        let added = with_beneficiary(accounts, beneficiary(at(2), true));
        assert_eq!(added[&at(2)], AccountDiff { account: account(9), ..AccountDiff::default() });
    }

    #[test]
    fn join_puts_the_block_on_the_pre_block_calls() {
        let pre =
            SortedMap::from([(at(1), change(1, false, &[(1, 1)])), (at(5), change(5, false, &[]))]);
        let block =
            SortedMap::from([(at(1), change(2, false, &[(2, 2)])), (at(3), change(3, false, &[]))]);
        let expected = SortedMap::from([
            (at(1), change(2, false, &[(1, 1), (2, 2)])),
            (at(3), change(3, false, &[])),
            (at(5), change(5, false, &[])),
        ]);
        assert_eq!(join(&pre, block), expected);
    }
}

//! What a later range does on its own: execute its transactions in order on a cached state
//! of its own over the state before the block, with the beneficiary's fees deferred,
//! recording every location it loads from that state.

use super::super::{
    chaos::Chaos,
    claims::Claims,
    vm::{Base, DeferredFee, beneficiary_fee},
};
use crate::{
    block::Block,
    block_state::{BlockState, Written, own_copy, recycle},
    error::ExecutionError,
    outcome::TxOutcome,
    sorted_map::SortedMap,
    state::{Account, AccountDiff, StateDiff},
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
    cell::RefCell,
    marker::PhantomData,
    ops::Range,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

/// Transactions at the start of each range that judge whether the later ranges are worth
/// running: in a block where every transaction depends on the one before (a counter, one
/// sender), a later range's first transaction loads what the first range's first wrote.
pub(super) const PROBE_TXS: usize = 32;

/// What the first range's first [`PROBE_TXS`] transactions wrote, for the later ranges to
/// see early whether they are likely to stand, and whether one gave up.
#[derive(Debug, Default)]
pub(super) struct Probe {
    pub(super) written: OnceLock<HashMap<Load, Value>>,
    pub(super) gave_up: AtomicBool,
}

/// A value a transaction left at a location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Value {
    Account(Option<Account>),
    Slot(U256),
}

/// The probe's content: the last value each of `outcomes` wrote, by location.
pub(super) fn probe_of(outcomes: &[TxOutcome]) -> HashMap<Load, Value> {
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
pub(super) enum Load {
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
        Ok(self.reader.code(code_hash)?.as_ref().map(own_copy))
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
pub(super) struct Output {
    pub(super) result: Result<ExecutionResult, InvalidTransaction>,
    pub(super) changes: StateDiff,
    pub(super) fee: U256,
    /// The transaction's type, read here while its `TxEnv` is in the cache.
    pub(super) tx_type: u8,
}

/// What a later range did on its own.
#[derive(Debug)]
pub(super) struct Speculation {
    pub(super) range: Range<usize>,
    /// One per transaction executed, from the range's start.
    pub(super) outputs: Vec<Output>,
    /// What it loaded, in order; where each executed transaction's loads start (one stopped
    /// on the beneficiary included).
    pub(super) loads: Vec<Load>,
    pub(super) starts: Vec<usize>,
    /// The range's own changes, merged.
    pub(super) changes: SortedMap<Address, AccountDiff>,
}

impl Speculation {
    /// The end of what it executed, a transaction stopped on the beneficiary included.
    pub(super) fn executed_to(&self) -> usize {
        self.range.start + self.starts.len()
    }

    /// Where the speculation stopped short of the range's end: the first transaction without
    /// an output (one that read the beneficiary, or the next after a failed probe).
    pub(super) fn stopped(&self) -> Option<usize> {
        let end = self.range.start + self.outputs.len();
        (end < self.range.end).then_some(end)
    }

    /// The transaction that made the load at `at`.
    pub(super) fn tx_of_load(&self, at: usize) -> usize {
        self.range.start + self.starts.partition_point(|start| *start <= at) - 1
    }

    /// The first of `loads` (positions in this range's loads) whose value the ranges before
    /// it changed. `first`: what the first range wrote; `accepted`: the changes of the ranges
    /// between it and this one; `base`: the state before the block.
    pub(super) fn first_changed(
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
pub(super) fn help<R: StateReader>(
    block: &Block,
    pre_block: &StateDiff,
    reader: impl Fn() -> Result<R, StorageError>,
    mut range: Range<usize>,
    claims: &Claims,
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
        .with_tx(crate::tx::none())
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
        evm.ctx.set_tx(tx);
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
                Output { result: Ok(result), changes, fee, tx_type: tx.tx_type }
            }
            Err(EVMError::Transaction(invalid)) => {
                let changes = StateDiff::default();
                Output { result: Err(invalid), changes, fee: U256::ZERO, tx_type: tx.tx_type }
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

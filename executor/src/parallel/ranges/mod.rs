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

mod check;
mod layers;
mod speculation;

use super::{
    ParallelConfig,
    chaos::Chaos,
    claims::{self, Claims},
    pool,
    vm::Base,
};
use crate::{
    block::Block,
    block_state::{BlockState, Written},
    error::ExecutionError,
    outcome::{Conflict, ExecutionStats, StateKey, TxOutcome},
    sequential,
    sorted_map::SortedMap,
    state::{self, Account, AccountDiff, StateDiff},
    storage::{StateReader, StorageError},
};
use alloy_primitives::Address;
use check::Check;
use layers::{join, merge, with_beneficiary};
use speculation::{Output, PROBE_TXS, Probe, Speculation, help, probe_of};
use std::sync::{
    Mutex, OnceLock,
    atomic::{AtomicBool, Ordering},
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
    let gas = claims::gas_before_each(block);
    let bounds = bounds(&gas, config.threads.get(), config.chaos);
    // Under chaos any chunk will do, so that small test blocks run as many ranges.
    let min_chunk = if config.chaos.is_some() { 1 } else { claims::MIN_CHUNK_TXS };
    let claims = Claims::new(gas, bounds[1], min_chunk);
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
    let stale = check.stale()?;
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

/// Where the ranges start, and the block's end: as many ranges as `workers`, of about equal
/// gas limits (`gas`: see [`claims::gas_before_each`]; at random places under chaos).
fn bounds(gas: &[u128], workers: usize, chaos: Option<u64>) -> Vec<usize> {
    let txs = gas.len() - 1;
    let mut bounds = vec![0];
    if let Some(seed) = chaos {
        let mut chaos = Chaos::new(seed, usize::MAX);
        let mut cuts: Vec<usize> = (1..workers).map(|_| chaos.below(txs + 1)).collect();
        cuts.sort_unstable();
        bounds.extend(cuts);
    } else {
        // Range k starts at the first transaction with k shares of the gas before it.
        let (total, shares) = (gas[txs], workers as u128);
        let start =
            |k: usize| gas[..txs].partition_point(|&before| before * shares < total * k as u128);
        bounds.extend((1..workers).map(start));
    }
    bounds.push(txs);
    bounds
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
            let Output { result, mut changes, fee, tx_type } = output;
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

#[cfg(test)]
mod tests {
    use super::*;
    use revm::context::TxEnv;

    #[test]
    fn ranges_start_at_equal_shares_of_the_gas() {
        // Every hundredth transaction holds as much gas as fifty of the others.
        let limits: Vec<u64> =
            (0..1000).map(|i| if i % 100 == 7 { 1_050_000 } else { 21_000 }).collect();
        let transactions = limits.iter().map(|&gas_limit| TxEnv { gas_limit, ..TxEnv::default() });
        let block = Block { transactions: transactions.collect(), ..Block::default() };
        let gas = claims::gas_before_each(&block);
        let total: u64 = limits.iter().sum();
        for workers in 1..=5 {
            let bounds = bounds(&gas, workers, None);
            assert_eq!((bounds.len(), bounds[0], bounds[workers]), (workers + 1, 0, 1000));
            for (k, start) in bounds[1..workers].iter().enumerate() {
                // The first transaction with k + 1 shares of the gas before it.
                let before = |tx: usize| limits[..tx].iter().sum::<u64>() * workers as u64;
                let share = total * (k as u64 + 1);
                assert!(before(*start) >= share, "{workers} workers, range {}", k + 1);
                assert!(*start == 0 || before(start - 1) < share, "{workers} workers, {k}");
            }
        }
    }

    #[test]
    fn chaos_cuts_anywhere_in_order() {
        let transactions = (0..50).map(|_| TxEnv { gas_limit: 21_000, ..TxEnv::default() });
        let block = Block { transactions: transactions.collect(), ..Block::default() };
        let gas = claims::gas_before_each(&block);
        for seed in 0..20 {
            let bounds = bounds(&gas, 4, Some(seed));
            assert_eq!((bounds.len(), bounds[0], bounds[4]), (5, 0, 50));
            assert!(bounds.is_sorted(), "{bounds:?}");
        }
    }
}

//! The end of a parallel run, done by the workers themselves (no thread has to start for
//! it): once every transaction is final, one worker resolves the credits in block order,
//! then each builds the outcomes of a range of transactions, then each merges the block diff
//! for a range of accounts.

use super::{
    Run, idle_wait,
    merge::{self, Sampler},
    mv_memory::TxIdx,
    vm::{Base, TxOutput, Vm},
};
use crate::{
    error::ExecutionError,
    outcome::{ExecutionStats, TxOutcome},
    sequential,
    sorted_map::SortedMap,
    state::{self, Account, AccountDiff, StateDiff},
    storage::StateReader,
};
use alloy_primitives::{Address, B256, Bytes, map::AddressMap};
use std::{
    collections::BTreeMap,
    ops::Range,
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

/// What the workers hand each other at the end of a run.
#[derive(Debug)]
pub(crate) struct Tail {
    barrier: Barrier,
    resolved: OnceLock<Resolved>,
    /// Per worker, the outcomes of its range of transactions.
    chunks: Vec<OnceLock<Chunk>>,
    /// Per worker, the merged changes of its range of accounts.
    ranges: Vec<OnceLock<Vec<(Address, AccountDiff)>>>,
}

/// What resolving the credits in block order gives the transactions.
#[derive(Debug)]
struct Resolved {
    /// Per transaction, the block's gas up to and including it.
    cumulative_gas: Vec<u64>,
    /// Credited accounts as each transaction leaves them, in block order.
    accounts: Vec<(TxIdx, Address, Option<Account>)>,
}

/// The outcomes of a range of transactions.
#[derive(Debug)]
struct Chunk {
    outcomes: Vec<TxOutcome>,
    stats: ExecutionStats,
    /// Keys of their changes, to split the merge evenly.
    samples: Vec<merge::Key>,
    /// Code their changes deploy, gathered while they are at hand.
    codes: BTreeMap<B256, Bytes>,
}

/// A finished run's outcomes, statistics and merged account changes.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) txs: Vec<TxOutcome>,
    pub(crate) stats: ExecutionStats,
    pub(crate) accounts: SortedMap<Address, AccountDiff>,
    /// Code the transactions deployed, by hash.
    pub(crate) codes: BTreeMap<B256, Bytes>,
}

impl Tail {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            barrier: Barrier::new(workers),
            resolved: OnceLock::new(),
            chunks: (0..workers).map(|_| OnceLock::new()).collect(),
            ranges: (0..workers).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Releases every worker waiting in the tail, for good (an error, a panic).
    pub(crate) fn abandon(&self) {
        self.barrier.abandon();
    }

    /// The run's result, or `None` when it gave the block up to the sequential path.
    pub(crate) fn into_finished(self) -> Option<Finished> {
        let chunks: Vec<Chunk> =
            self.chunks.into_iter().map(OnceLock::into_inner).collect::<Option<_>>()?;
        let ranges: Vec<Vec<(Address, AccountDiff)>> =
            self.ranges.into_iter().map(OnceLock::into_inner).collect::<Option<_>>()?;
        let mut chunks = chunks.into_iter();
        let Chunk { outcomes: mut txs, mut stats, mut codes, .. } = chunks.next()?;
        for mut chunk in chunks {
            txs.extend(chunk.outcomes);
            codes.append(&mut chunk.codes);
            stats.executions.extend(chunk.stats.executions);
            stats.validations.extend(chunk.stats.validations);
            stats.aborts.extend(chunk.stats.aborts);
            stats.suspensions.extend(chunk.stats.suspensions);
        }
        // Each range is sorted and the ranges are in order.
        let accounts = SortedMap::from_sorted(merge::join(ranges));
        Some(Finished { txs, stats, accounts, codes })
    }
}

/// One worker's share of the tail, after its task loop.
pub(super) fn finish<R: StateReader>(run: &Run<'_>, worker: usize, vm: &mut Vm<'_, R>) {
    let tail = &run.tail;
    // Every worker is out of the task loop: no output changes any more.
    if !tail.barrier.wait() {
        return;
    }
    if worker == 0 {
        let resolved =
            run.conclude(vm).and_then(|go| go.then(|| resolve(run, vm.base())).transpose());
        match resolved {
            Ok(Some(resolved)) => tail.resolved.set(resolved).expect("resolved once"),
            // Given up to the sequential path: the others find nothing resolved.
            Ok(None) => {}
            Err(e) => run.fail(e),
        }
    }
    if !tail.barrier.wait() {
        return;
    }
    let Some(resolved) = tail.resolved.get() else { return };
    let workers = tail.chunks.len();
    let txs = run.shared.block.transactions.len();
    let range = worker * txs / workers..(worker + 1) * txs / workers;
    tail.chunks[worker].set(build_chunk(run, resolved, range)).expect("one chunk per worker");
    if !tail.barrier.wait() {
        return;
    }
    let chunks: Vec<&Chunk> =
        tail.chunks.iter().map(|c| c.get().expect("every chunk is built before")).collect();
    // Every worker computes the same bounds from the same samples.
    let samples = chunks.iter().flat_map(|c| c.samples.iter().copied()).collect();
    let bounds = merge::bounds(samples, workers);
    let merged = match bounds.get(worker..worker + 2) {
        Some(&[start, end]) => {
            let parts: Vec<&StateDiff> = std::iter::once(run.pre_block)
                .chain(chunks.iter().flat_map(|c| c.outcomes.iter().map(|o| &o.changes)))
                .collect();
            merge::merge_range(&parts, start, end)
        }
        _ => Vec::new(),
    };
    tail.ranges[worker].set(merged).expect("one range per worker");
    run.shared.mv.free_records_of(worker);
}

/// Walks the final outputs in block order, turning each credit into the account state it
/// leaves (only accounts that can be credited are followed), and sums the gas.
fn resolve<R: StateReader>(run: &Run<'_>, base: &Base<'_, R>) -> Result<Resolved, ExecutionError> {
    let block = run.shared.block;
    let txs = block.transactions.len();
    let mut current: AddressMap<Option<Account>> = AddressMap::default();
    let mut resolved = Resolved { cumulative_gas: Vec::with_capacity(txs), accounts: Vec::new() };
    let mut gas = 0;
    for tx in 0..txs {
        run.shared.mv.with_output(tx, |output| {
            let output = output.expect("every transaction executed");
            gas += output.result.as_ref().map_or(0, |r| r.tx_gas_used());
            resolved.cumulative_gas.push(gas);
            for address in &output.creditable {
                let change = output.changes.accounts.get(address).expect("a changed account");
                current.insert(*address, change.account);
            }
            let fee = output.fee.map(|fee| (block.beneficiary, fee));
            for (address, amount) in output.credit.into_iter().chain(fee) {
                let before = match current.get(&address) {
                    Some(account) => *account,
                    None => base.account(address)?,
                };
                let after = state::credited(before, amount, block.spec);
                current.insert(address, after);
                if after != before {
                    resolved.accounts.push((tx, address, after));
                }
            }
            Ok::<_, ExecutionError>(())
        })?;
    }
    Ok(resolved)
}

/// The outcomes of the transactions in `txs`, their resolved credits joined to their changes.
fn build_chunk(run: &Run<'_>, resolved: &Resolved, txs: Range<TxIdx>) -> Chunk {
    let block = run.shared.block;
    // The first chunk is the one the others join: room for them all spares a copy of it.
    let all = block.transactions.len();
    let mut outcomes = Vec::with_capacity(if txs.start == 0 { all } else { txs.len() });
    let mut sampler = Sampler::default();
    let mut codes = BTreeMap::new();
    let mut credited = resolved.accounts.partition_point(|(tx, ..)| *tx < txs.start);
    for tx in txs.clone() {
        let output = run.shared.mv.take_output(tx).expect("every transaction executed");
        let TxOutput { result, mut changes, .. } = output;
        while let Some((_, address, account)) =
            resolved.accounts.get(credited).filter(|(t, ..)| *t == tx)
        {
            let change = AccountDiff { account: *account, ..AccountDiff::default() };
            changes.accounts.insert(*address, change);
            credited += 1;
        }
        sampler.add(&changes);
        codes.extend(changes.codes.iter().map(|(hash, code)| (*hash, code.clone())));
        let (tx_type, cumulative) = (block.transactions[tx].tx_type, resolved.cumulative_gas[tx]);
        outcomes.push(match result {
            Ok(result) => sequential::executed(tx_type, result, cumulative, changes),
            Err(invalid) => TxOutcome::invalid(invalid, tx_type, cumulative),
        });
    }
    let mut stats = ExecutionStats::default();
    for tx in txs {
        let counters = run.scheduler.counters(tx);
        let count = |counter: &AtomicUsize| counter.load(Ordering::Relaxed) as u32;
        stats.executions.push(count(&counters.executions));
        stats.validations.push(count(&counters.validations));
        stats.aborts.push(count(&counters.aborts));
        stats.suspensions.push(count(&counters.suspensions));
    }
    Chunk { outcomes, stats, samples: sampler.keys, codes }
}

/// A barrier the workers spin at (a sleeping waiter can take a millisecond to wake here),
/// and that can be abandoned for good so that no worker waits for one that failed.
#[derive(Debug)]
struct Barrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    abandoned: AtomicBool,
}

impl Barrier {
    fn new(parties: usize) -> Self {
        Self {
            parties,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            abandoned: AtomicBool::new(false),
        }
    }

    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }

    /// Waits for every party; false when the barrier was abandoned.
    fn wait(&self) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            // Reset before the release, so that a party leaving early counts from zero.
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
        } else {
            let mut idle = 0;
            while self.generation.load(Ordering::Acquire) == generation {
                if self.abandoned.load(Ordering::Acquire) {
                    return false;
                }
                idle_wait(&mut idle);
            }
        }
        !self.abandoned.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barrier_holds_every_party_until_the_last_arrives() {
        let barrier = Barrier::new(3);
        let passed = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for round in 0..50 {
                        assert!(barrier.wait());
                        // Nobody passes round `round`'s barrier before all passed the last.
                        assert!(passed.load(Ordering::SeqCst) >= 3 * round);
                        passed.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(passed.load(Ordering::SeqCst), 150);
    }

    #[test]
    fn an_abandoned_barrier_releases_its_waiters() {
        let barrier = Barrier::new(2);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| barrier.wait());
            std::thread::sleep(std::time::Duration::from_millis(5));
            barrier.abandon();
            assert!(!waiter.join().unwrap(), "the waiter learns it was abandoned");
        });
        assert!(!barrier.wait(), "later arrivals do not wait");
    }
}

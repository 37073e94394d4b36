//! The end of a parallel run, done by the workers themselves (no thread has to start for
//! it): once every transaction is final, each worker sums up what its range of transactions
//! does to the accounts that credits touch, then builds the outcomes of its range (resolving
//! its credits from the sums of the ranges before it), then merges the block diff for a
//! range of accounts.

use super::{
    Run, idle_wait,
    merge::{self, Sampler},
    mv_memory::TxIdx,
    vm::{Base, TxOutput, Vm},
};
use crate::{
    block::Block,
    error::ExecutionError,
    outcome::{ExecutionStats, TxOutcome},
    sequential,
    sorted_map::SortedMap,
    state::{self, Account, AccountDiff, StateDiff},
    storage::StateReader,
};
use alloy_primitives::{Address, B256, Bytes, U256, map::AddressMap};
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
    /// Set once the run is final and stays parallel (see `Run::conclude`).
    go: OnceLock<()>,
    /// Per worker but the last, the net effect of its range of transactions.
    summaries: Vec<OnceLock<Summary>>,
    /// Per worker, the outcomes of its range of transactions.
    chunks: Vec<OnceLock<Chunk>>,
    /// Per worker, the merged changes of its range of accounts.
    ranges: Vec<OnceLock<Vec<(Address, AccountDiff)>>>,
}

/// What a range of transactions does, as the ranges after it need to know: its gas, and
/// where it leaves each account that it changes and a credit can touch.
#[derive(Debug, Default)]
struct Summary {
    gas: u64,
    accounts: AddressMap<Net>,
}

/// One creditable account's net change over a range of transactions. Credits add up: two in
/// a row leave an account as one credit of their sum does, EIP-161's removal included (a
/// credit leaves an account empty only when it was empty and the credit zero).
#[derive(Clone, Copy, Debug)]
enum Net {
    /// Set by a transaction of the range (and maybe credited since).
    Set(Option<Account>),
    /// Only credited, by this much in all.
    Credited(U256),
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
            go: OnceLock::new(),
            summaries: (1..workers).map(|_| OnceLock::new()).collect(),
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
/// `recorded`: the transactions whose records this worker allocated.
pub(super) fn finish<R: StateReader>(
    run: &Run<'_>,
    worker: usize,
    vm: &mut Vm<'_, R>,
    recorded: &[TxIdx],
) {
    let tail = &run.tail;
    // Every worker is out of the task loop: no output changes any more.
    if !tail.barrier.wait() {
        return;
    }
    if worker == 0 {
        match run.conclude(vm) {
            Ok(true) => tail.go.set(()).expect("concluded once"),
            // Given up to the sequential path: the others find no go.
            Ok(false) => {}
            Err(e) => run.fail(e),
        }
    }
    if !tail.barrier.wait() || tail.go.get().is_none() {
        return;
    }
    let workers = tail.chunks.len();
    let txs = run.shared.block.transactions.len();
    let range = worker * txs / workers..(worker + 1) * txs / workers;
    // Taken once, before the wait, by the last worker too (which sums up nothing).
    let outputs: Vec<TxOutput> = (range.clone())
        .map(|tx| run.shared.mv.take_output(tx).expect("every transaction executed"))
        .collect();
    if let Some(summary) = tail.summaries.get(worker) {
        summary.set(summarize(run.shared.block, &outputs)).expect("one summary per worker");
    }
    if !tail.barrier.wait() {
        return;
    }
    let earlier: Vec<&Summary> =
        tail.summaries[..worker].iter().map(|s| s.get().expect("summed up before")).collect();
    match build_chunk(run, vm.base(), &earlier, range, outputs) {
        Ok(chunk) => tail.chunks[worker].set(chunk).expect("one chunk per worker"),
        Err(e) => return run.fail(e),
    }
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
    run.shared.mv.free_records_of(worker, recorded);
}

/// The credits of an output, in the order they apply: a plain transfer's to its recipient,
/// then the beneficiary's fee.
fn credits(
    credit: Option<(Address, U256)>,
    fee: Option<U256>,
    beneficiary: Address,
) -> impl Iterator<Item = (Address, U256)> {
    credit.into_iter().chain(fee.map(|fee| (beneficiary, fee)))
}

/// The net effect of a range's `outputs` on the accounts credits touch, and their gas.
fn summarize(block: &Block, outputs: &[TxOutput]) -> Summary {
    let mut summary = Summary::default();
    for output in outputs {
        summary.gas += output.result.as_ref().map_or(0, |r| r.tx_gas_used());
        for address in &output.creditable {
            let change = output.changes.accounts.get(address).expect("a changed account");
            summary.accounts.insert(*address, Net::Set(change.account));
        }
        for (address, amount) in credits(output.credit, output.fee, block.beneficiary) {
            let net = summary.accounts.entry(address).or_insert(Net::Credited(U256::ZERO));
            *net = match *net {
                Net::Set(account) => Net::Set(state::credited(account, amount, block.spec)),
                Net::Credited(sum) => Net::Credited(sum.saturating_add(amount)),
            };
        }
    }
    summary
}

/// `address` as the ranges summed up in `earlier` leave it, on top of the base state.
fn start_of<R: StateReader>(
    address: Address,
    earlier: &[&Summary],
    base: &Base<'_, R>,
    spec: revm::primitives::hardfork::SpecId,
) -> Result<Option<Account>, ExecutionError> {
    // The latest range that set it, plus every credit since.
    let mut credit: Option<U256> = None;
    let mut account = None;
    for summary in earlier.iter().rev() {
        match summary.accounts.get(&address) {
            Some(Net::Set(set)) => {
                account = Some(*set);
                break;
            }
            Some(Net::Credited(sum)) => {
                credit = Some(credit.unwrap_or_default().saturating_add(*sum));
            }
            None => {}
        }
    }
    let account = match account {
        Some(account) => account,
        None => base.account(address)?,
    };
    Ok(match credit {
        Some(amount) => state::credited(account, amount, spec),
        None => account,
    })
}

/// The outcomes of the transactions in `txs` from their `outputs`, their credits resolved in
/// block order from where the `earlier` ranges leave each account.
fn build_chunk<R: StateReader>(
    run: &Run<'_>,
    base: &Base<'_, R>,
    earlier: &[&Summary],
    txs: Range<TxIdx>,
    outputs: Vec<TxOutput>,
) -> Result<Chunk, ExecutionError> {
    let block = run.shared.block;
    // The first chunk is the one the others join: room for them all spares a copy of it.
    let all = block.transactions.len();
    let mut outcomes = Vec::with_capacity(if txs.start == 0 { all } else { txs.len() });
    let mut sampler = Sampler::default();
    let mut codes = BTreeMap::new();
    let mut gas: u64 = earlier.iter().map(|s| s.gas).sum();
    // Creditable accounts as the transactions so far leave them.
    let mut current: AddressMap<Option<Account>> = AddressMap::default();
    for (tx, output) in txs.clone().zip(outputs) {
        let TxOutput { result, mut changes, fee, credit, creditable } = output;
        for address in &creditable {
            let change = changes.accounts.get(address).expect("a changed account");
            current.insert(*address, change.account);
        }
        for (address, amount) in credits(credit, fee, block.beneficiary) {
            let before = match current.get(&address) {
                Some(account) => *account,
                None => start_of(address, earlier, base, block.spec)?,
            };
            let after = state::credited(before, amount, block.spec);
            current.insert(address, after);
            if after != before {
                changes
                    .accounts
                    .insert(address, AccountDiff { account: after, ..AccountDiff::default() });
            }
        }
        sampler.add(&changes);
        codes.extend(changes.codes.iter().map(|(hash, code)| (*hash, code.clone())));
        gas += result.as_ref().map_or(0, |r| r.tx_gas_used());
        let tx_type = block.transactions[tx].tx_type;
        outcomes.push(match result {
            Ok(result) => sequential::executed(tx_type, result, gas, changes),
            Err(invalid) => TxOutcome::invalid(invalid, tx_type, gas),
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
    Ok(Chunk { outcomes, stats, samples: sampler.keys, codes })
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

//! The Block-STM parallel path.
//!
//! Workers pull execution and validation tasks from a shared [`scheduler`]; transactions read
//! and write through the [`mv_memory`]; every read is validated after execution, and a
//! transaction whose reads went stale runs again. Fees to the beneficiary and value to
//! code-less recipients of plain transfers are credits that need no read of the balance, and
//! are resolved in block order at the end. The outcome is the sequential path's, bit for bit.

mod chaos;
mod claims;
mod hints;
mod merge;
mod mv_memory;
mod padded;
mod pool;
mod ranges;
mod scheduler;
mod tail;
mod vm;

use crate::{
    block::Block,
    block_state::BlockState,
    effects,
    error::ExecutionError,
    outcome::{BlockOutcome, Conflict, Fallback},
    sequential,
    state::StateDiff,
    storage::{Layered, StateReader, Storage},
};
use chaos::Chaos;
use hints::{Calls, Senders};
use mv_memory::{Recorded, TxIdx, Version};
use scheduler::{Scheduler, Task};
use std::{
    num::NonZeroUsize,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};
use tail::Tail;
use vm::{Attempt, Base, Shared, Vm};

/// How the parallel path runs a block.
#[derive(Clone, Debug, PartialEq)]
pub struct ParallelConfig {
    /// Worker threads, the calling thread included.
    pub threads: NonZeroUsize,
    /// Seed of the schedule perturbation, for determinism checks; `None` in production.
    pub chaos: Option<u64>,
    /// Blocks with fewer transactions run sequentially.
    pub min_txs: usize,
    /// Blocks with at least this many transactions run as speculative ranges, one per
    /// thread, instead of Block-STM (see `ranges/`): their transactions are too many and
    /// too cheap for bookkeeping per transaction.
    pub min_range_txs: usize,
    /// Blocks whose contract work (the gas limits of transactions with calldata or init code)
    /// sums to less run sequentially: plain transfers are too cheap to gain from threads.
    pub min_gas: u64,
    /// Blocks averaging less contract gas per transaction run sequentially: mostly plain
    /// transfers and simple token moves, each too cheap for the coordination it would need.
    /// Of the mainnet snapshots, blocks at 16k to 25k averaged 0.93x to 1.03x in parallel,
    /// blocks from 30k up 1.2x to 1.7x.
    pub min_gas_per_tx: u64,
    /// Blocks where one sender signs more than this share of the transactions run
    /// sequentially: its nonces chain those transactions one after another anyway.
    pub max_sender_share: f64,
    /// Finish sequentially once re-executions show the block is a dependency chain.
    pub adaptive: bool,
    /// When the adaptive fallback stops a run that has done less than this share of the
    /// block's work, the block runs afresh on the sequential path; otherwise the rest is
    /// finished in order, reusing every execution that is still valid.
    pub restart_below: f64,
}

impl Default for ParallelConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            chaos: None,
            min_txs: 16,
            min_range_txs: 2048,
            min_gas: 3_000_000,
            min_gas_per_tx: 20_000,
            max_sender_share: 0.5,
            adaptive: true,
            restart_below: 0.4,
        }
    }
}

impl ParallelConfig {
    pub fn with_threads(threads: usize) -> Self {
        Self { threads: NonZeroUsize::new(threads).unwrap_or(NonZeroUsize::MIN), ..Self::default() }
    }

    /// Every block through Block-STM, however small, and no adaptive fallback: for tests.
    pub fn always_parallel(threads: usize) -> Self {
        Self {
            min_txs: 0,
            min_range_txs: usize::MAX,
            min_gas: 0,
            min_gas_per_tx: 0,
            adaptive: false,
            ..Self::with_threads(threads)
        }
    }

    /// Every block as speculative ranges, however small: for tests.
    pub fn always_ranges(threads: usize) -> Self {
        Self { min_range_txs: 0, ..Self::always_parallel(threads) }
    }
}

/// Executes `block` on the last committed state of `storage` with Block-STM.
pub fn execute<S: Storage + ?Sized>(
    storage: &S,
    block: &Block,
    config: &ParallelConfig,
) -> Result<BlockOutcome, ExecutionError> {
    let txs = block.transactions.len();
    let contract_gas = contract_gas(block);
    let transfer_heavy = contract_gas / (txs.max(1) as u64) < config.min_gas_per_tx;
    if txs < config.min_txs.max(2) {
        return fall_back(storage, block, Fallback::FewTransactions);
    }
    if txs >= config.min_range_txs {
        return execute_ranges(storage, block, config);
    }
    if contract_gas < config.min_gas || transfer_heavy {
        return fall_back(storage, block, Fallback::LittleContractGas);
    }
    // Above half, only a majority sender can sign too much, and a vote finds it unhashed.
    if config.max_sender_share >= 0.5
        && hints::majority_sender(block).is_some_and(|count| too_many(config, block, count))
    {
        return fall_back(storage, block, Fallback::OneSender);
    }
    // Handed from thread to thread as the run starts (see `Start`); declared in the order
    // they borrow each other.
    let (shared, pre_block, hints) = (OnceLock::new(), OnceLock::new(), Handoff::default());
    let run: Handoff<Run<'_>> = Handoff::default();
    let mut stopped = None;
    pool::run(
        config.threads.get() - 1,
        |worker| {
            if worker == 1 {
                hints.claim(|| Some(hints_of(block)));
            }
            if let Some(run) = run.wait() {
                run.work(worker, || storage.reader());
            }
        },
        || {
            let start = Start { storage, block, config, shared: &shared, pre_block: &pre_block };
            run.publish(|| start.prepare(&hints).map_err(|why| stopped = Some(why)).ok());
            if let Some(run) = run.wait() {
                run.work(0, || storage.reader());
            }
        },
    );
    let Some(run) = run.into_inner() else {
        return match stopped.expect("a run that did not start says why") {
            Stop::Fallback(why) => fall_back(storage, block, why),
            Stop::Failed(error) => Err(error),
        };
    };
    if let Some(error) = run.error.lock().expect("error lock poisoned").take() {
        return Err(error);
    }
    let Some(finished) = run.tail.into_finished() else {
        // The run stopped early on a dependency chain (see `Run::conclude`).
        return fall_back(storage, block, Fallback::DependencyChain);
    };
    let conflicts = run.conflicts.into_inner().expect("conflicts lock poisoned");
    let pre_block = pre_block.into_inner().expect("a run that started has its pre-block part");

    let (accounts, codes) = (finished.accounts, finished.codes);
    let mut diff = StateDiff { accounts, codes, ..StateDiff::default() };
    let txs = finished.txs;
    // The transactions' codes were gathered with their outcomes: only the block's own parts.
    sequential::add_codes_and_hashes(&mut diff, &[&pre_block]);
    let mut stats = finished.stats;
    stats.conflicts = conflicts;
    // Stable: one transaction's aborts stay in the order they happened.
    stats.conflicts.sort_by_key(|c| c.tx);
    let outcome = sequential::assemble(pre_block, txs, StateDiff::default(), diff, stats);
    with_post_block(storage, block, outcome)
}

/// Whether one sender signing `count` transactions signs too much of `block` for a run.
fn too_many(config: &ParallelConfig, block: &Block, count: usize) -> bool {
    count as f64 > config.max_sender_share * block.transactions.len() as f64
}

/// Who sends what and which calls may chain: what helper 1 hashes while a run is prepared.
fn hints_of(block: &Block) -> (Senders, Calls) {
    (Senders::of(block), Calls::of(block))
}

/// Why a run did not start.
enum Stop {
    Fallback(Fallback),
    Failed(ExecutionError),
}

/// A value one thread publishes and others wait for; `None` when it never comes (the
/// publisher gave up or panicked).
struct Handoff<T> {
    value: OnceLock<Option<T>>,
    /// Whether a thread took on making the value (see [`Handoff::claim`]).
    claimed: AtomicBool,
}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        Self { value: OnceLock::new(), claimed: AtomicBool::new(false) }
    }
}

impl<T> Handoff<T> {
    /// Publishes what `make` returns unless another thread took this on first.
    fn claim(&self, make: impl FnOnce() -> Option<T>) {
        if !self.claimed.swap(true, Ordering::AcqRel) {
            self.publish(make);
        }
    }

    /// Publishes what `make` returns; `None` as well when `make` panics, so that no waiter
    /// waits forever.
    fn publish(&self, make: impl FnOnce() -> Option<T>) {
        struct OnPanic<'a, T>(&'a OnceLock<Option<T>>);
        impl<T> Drop for OnPanic<'_, T> {
            fn drop(&mut self) {
                let _ = self.0.set(None);
            }
        }
        let on_panic = OnPanic(&self.value);
        let value = make();
        let _ = self.value.set(value);
        drop(on_panic);
    }

    /// The value once published, spinning until then: it comes within the hundred or so
    /// microseconds a run takes to prepare.
    fn wait(&self) -> Option<&T> {
        let mut idle = 0;
        loop {
            if let Some(value) = self.value.get() {
                return value.as_ref();
            }
            idle_wait(&mut idle);
        }
    }

    fn into_inner(self) -> Option<T> {
        self.value.into_inner().flatten()
    }
}

/// What the calling thread prepares a run from.
///
/// It wakes the helpers first and prepares while they wake up: waking a parked thread cost
/// the caller 40 us on this machine, and the helper ran 25 us after that. Preparing costs
/// about 0.1 us per transaction in each of three parts (the senders and the calls hashed,
/// the shared state allocated: 130 us of block 13217637's 1,100 transactions), and helper 1
/// hashes the senders and calls meanwhile if it is awake in time.
struct Start<'a, S: ?Sized> {
    storage: &'a S,
    block: &'a Block,
    config: &'a ParallelConfig,
    shared: &'a OnceLock<Shared<'a>>,
    pre_block: &'a OnceLock<StateDiff>,
}

impl<'a, S: Storage + ?Sized> Start<'a, S> {
    /// The run, or why there is none: the pre-block calls failed, or one sender signs too
    /// much of the block. `hints` come from helper 1, or from here when it is not awake yet.
    fn prepare(&self, hints: &'a Handoff<(Senders, Calls)>) -> Result<Run<'a>, Stop> {
        let (block, config) = (self.block, self.config);
        let shared = self.shared.get_or_init(|| Shared::new(block));
        let reader = self.storage.reader().map_err(|e| Stop::Failed(e.into()))?;
        let diff = effects::pre_block(block, &mut BlockState::new(reader, block.parent()))
            .map_err(Stop::Failed)?;
        let pre_block = self.pre_block.get_or_init(|| diff);
        // On a small block this thread gets here before helper 1 is awake.
        hints.claim(|| Some(hints_of(block)));
        let (senders, calls) =
            hints.wait().expect("made, unless helper 1 panicked, whose panic ends the run");
        if too_many(config, block, senders.top_count) {
            return Err(Stop::Fallback(Fallback::OneSender));
        }
        Ok(Run::new(shared, config, pre_block, &senders.previous, calls))
    }
}

/// `block` as speculative ranges (see `ranges/`).
fn execute_ranges<S: Storage + ?Sized>(
    storage: &S,
    block: &Block,
    config: &ParallelConfig,
) -> Result<BlockOutcome, ExecutionError> {
    let parent = block.parent();
    let pre_block = effects::pre_block(block, &mut BlockState::new(storage.reader()?, parent))?;
    let ranges = ranges::execute(block, config, &pre_block, || storage.reader())?;
    let mut diff = StateDiff { accounts: ranges.accounts, ..StateDiff::default() };
    let none = StateDiff::default();
    sequential::add_codes_and_hashes(&mut diff, &sequential::parts(&pre_block, &ranges.txs, &none));
    let outcome = sequential::assemble(pre_block, ranges.txs, none, diff, ranges.stats);
    with_post_block(storage, block, outcome)
}

/// Adds the block-level effects after the transactions (rewards, withdrawals) to `outcome`.
fn with_post_block<S: Storage + ?Sized>(
    storage: &S,
    block: &Block,
    mut outcome: BlockOutcome,
) -> Result<BlockOutcome, ExecutionError> {
    if effects::has_post_block(block) {
        let parent = block.parent();
        // The block-level effects see the state after every transaction: the merged diff,
        // read where it lies rather than copied into a new state.
        let after_txs = Layered { reader: storage.reader()?, diff: &outcome.diff };
        let mut state = BlockState::new(after_txs, parent);
        outcome.post_block = effects::post_block(block, &mut state)?;
        outcome.diff.merge(&outcome.post_block);
    }
    Ok(outcome)
}

/// `block` on the sequential path, saying why.
fn fall_back<S: Storage + ?Sized>(
    storage: &S,
    block: &Block,
    why: Fallback,
) -> Result<BlockOutcome, ExecutionError> {
    let mut outcome = sequential::execute(storage, block)?;
    outcome.stats.fallback = Some(why);
    Ok(outcome)
}

/// Gas limits of the transactions that run code (calldata or contract creation): the part of
/// a block's work that can outweigh the cost of coordinating threads.
fn contract_gas(block: &Block) -> u64 {
    block
        .transactions
        .iter()
        .filter(|tx| !tx.data.is_empty() || tx.kind.is_create())
        .map(|tx| tx.gas_limit)
        .fold(0, u64::saturating_add)
}

/// State of one parallel run, shared by its workers.
struct Run<'a> {
    shared: &'a Shared<'a>,
    config: &'a ParallelConfig,
    pre_block: &'a StateDiff,
    scheduler: Scheduler,
    /// Per transaction, the same sender's previous one (see [`Senders`]).
    previous_of_sender: &'a [Option<TxIdx>],
    calls: &'a Calls,
    tail: Tail,
    error: Mutex<Option<ExecutionError>>,
    /// Every abort so far (rare enough for one lock).
    conflicts: Mutex<Vec<Conflict>>,
    fell_back: AtomicBool,
    total_executions: AtomicUsize,
    total_reruns: AtomicUsize,
}

impl<'a> Run<'a> {
    fn new(
        shared: &'a Shared<'a>,
        config: &'a ParallelConfig,
        pre_block: &'a StateDiff,
        previous_of_sender: &'a [Option<TxIdx>],
        calls: &'a Calls,
    ) -> Self {
        let txs = shared.block.transactions.len();
        Self {
            shared,
            config,
            pre_block,
            scheduler: Scheduler::new(txs).with_early(hints::early_candidates(shared.block)),
            previous_of_sender,
            calls,
            tail: Tail::new(config.threads.get()),
            error: Mutex::default(),
            conflicts: Mutex::default(),
            fell_back: AtomicBool::new(false),
            total_executions: AtomicUsize::new(0),
            total_reruns: AtomicUsize::new(0),
        }
    }

    /// Records the first error and stops every worker, the tail included.
    fn fail(&self, error: ExecutionError) {
        self.error.lock().expect("error lock poisoned").get_or_insert(error);
        self.scheduler.halt();
        self.tail.abandon();
    }

    /// One worker: run tasks until the block is final, then take a share of the tail.
    fn work<R: StateReader>(
        &self,
        worker: usize,
        reader: impl FnOnce() -> Result<R, crate::storage::StorageError>,
    ) {
        let _halt = HaltOnPanic(self);
        let reader = match reader() {
            Ok(reader) => reader,
            Err(e) => return self.fail(e.into()),
        };
        let mut vm = Vm::new(self.shared, Base { reader, diff: self.pre_block });
        let recorded = self.run_tasks(worker, &mut vm);
        tail::finish(self, worker, &mut vm, &recorded);
    }

    /// Runs tasks until the block is final; returns the transactions whose records this
    /// worker allocated.
    fn run_tasks<R: StateReader>(&self, worker: usize, vm: &mut Vm<'_, R>) -> Vec<TxIdx> {
        let mut recorded = Vec::new();
        let mut chaos = self.config.chaos.map(|seed| Chaos::new(seed, worker));
        let mut task: Option<Task> = None;
        let mut idle = 0u32;
        let txs = self.shared.block.transactions.len();
        while !self.scheduler.is_done() {
            if let Some(chaos) = &mut chaos {
                chaos.delay();
                if task.is_none() {
                    task = chaos
                        .extra_validation(txs)
                        .and_then(|tx| self.scheduler.extra_validation(tx));
                }
            }
            task = match task {
                Some(Task::Execute(version)) => self.execute(worker, vm, version, &mut recorded),
                Some(Task::Validate(version)) => self.validate(version),
                None => {
                    let prefer_execution = chaos.as_mut().is_some_and(Chaos::prefer_execution);
                    // The calling thread keeps to block order while the others take the
                    // transactions to run early.
                    match self.scheduler.next_task(prefer_execution, worker != 0) {
                        Some(task) => {
                            idle = 0;
                            Some(task)
                        }
                        None => {
                            idle_wait(&mut idle);
                            None
                        }
                    }
                }
            };
        }
        recorded
    }

    fn execute<R: StateReader>(
        &self,
        worker: usize,
        vm: &mut Vm<'_, R>,
        version: Version,
        recorded: &mut Vec<TxIdx>,
    ) -> Option<Task> {
        // A transaction whose sender's previous one has not executed would read a nonce
        // that is about to change, and so would a call of a function that proved a chain:
        // wait for it instead of executing in vain.
        let previous = [self.previous_of_sender[version.tx], self.calls.wait_for(version.tx)];
        if previous.into_iter().flatten().any(|p| self.scheduler.add_dependency(version.tx, p)) {
            return None;
        }
        loop {
            self.scheduler.counters(version.tx).executions.fetch_add(1, Ordering::Relaxed);
            let executions = self.total_executions.fetch_add(1, Ordering::Relaxed) + 1;
            match vm.execute(version.tx) {
                Err(e) => {
                    self.fail(e);
                    return None;
                }
                Ok(Attempt::Blocked { blocker, at }) => {
                    self.calls.conflict(version.tx, blocker, at.storage_of());
                    self.total_reruns.fetch_add(1, Ordering::Relaxed);
                    self.check_chain(executions);
                    if self.scheduler.add_dependency(version.tx, blocker) {
                        return None;
                    }
                }
                Ok(Attempt::Done { output, writes, reads }) => {
                    let written = Recorded { worker, writes, reads, fee: output.fee };
                    let wrote_new = self.shared.mv.record(version, written, output);
                    recorded.push(version.tx);
                    return self.scheduler.finish_execution(version, wrote_new);
                }
            }
        }
    }

    fn validate(&self, version: Version) -> Option<Task> {
        let stale = self.shared.mv.validate_reads(version.tx).err();
        let aborted = stale.is_some() && self.scheduler.try_validation_abort(version);
        if aborted {
            if let Some(Some(stale)) = stale {
                if let Some(writer) = stale.writer {
                    self.calls.conflict(version.tx, writer, stale.location.storage_of());
                }
                let conflict =
                    Conflict { tx: version.tx, key: stale.location.into(), writer: stale.writer };
                self.conflicts.lock().expect("conflicts lock poisoned").push(conflict);
            }
            self.shared.mv.convert_writes_to_estimates(version.tx);
            self.total_reruns.fetch_add(1, Ordering::Relaxed);
            self.check_chain(self.total_executions.load(Ordering::Relaxed));
        }
        self.scheduler.finish_validation(version.tx, aborted)
    }

    /// Stops the parallel run once aborts and suspensions show a dependency chain: the rest
    /// runs in order (see `conclude`).
    fn check_chain(&self, executions: usize) {
        if !self.config.adaptive {
            return;
        }
        let reruns = self.total_reruns.load(Ordering::Relaxed);
        // Real blocks often open with a cluster of conflicts (a run of swaps on one pool)
        // and are independent after it: the more of a small block is seen before judging,
        // the fewer false alarms. A large block is judged early, when a chain has cost little.
        let threads = self.config.threads.get();
        let txs = self.shared.block.transactions.len();
        let warmup = (txs / 2).min(64 * threads).max(8 * threads + 16);
        if executions >= warmup && reruns * 3 > executions {
            self.fell_back.store(true, Ordering::Relaxed);
            self.scheduler.halt();
        }
    }

    /// Makes every transaction final once the workers have stopped (worker 0, while the
    /// others wait): after an adaptive stop, either gives the block up to the sequential path
    /// (returns false) or finishes it in order.
    fn conclude<R: StateReader>(&self, vm: &mut Vm<'_, R>) -> Result<bool, ExecutionError> {
        if !self.fell_back.load(Ordering::Relaxed) {
            return Ok(true);
        }
        // Finishing in order on the parallel path's VM reuses what is still valid, but costs
        // about 1.7 times the sequential path per transaction (measured on the ERC-20
        // workload): when the run stopped before it had done most of the block's work (its
        // executions less its re-executions), running it afresh on the sequential path is
        // cheaper.
        let txs = self.shared.block.transactions.len();
        let reruns = self.total_reruns.load(Ordering::Relaxed);
        let useful = self.total_executions.load(Ordering::Relaxed).saturating_sub(reruns);
        if (useful as f64) < self.config.restart_below * txs as f64 {
            return Ok(false);
        }
        self.finish_in_order(vm)?;
        Ok(true)
    }

    /// Completes a halted run in block order: keeps each output whose reads are still valid
    /// and re-executes the rest, now against final values of every earlier transaction.
    fn finish_in_order<R: StateReader>(&self, vm: &mut Vm<'_, R>) -> Result<(), ExecutionError> {
        for tx in 0..self.shared.block.transactions.len() {
            // Only an executed transaction's writes are in the memory (not estimates).
            if self.scheduler.is_executed(tx) && self.shared.mv.validate_reads(tx).is_ok() {
                continue;
            }
            self.scheduler.counters(tx).executions.fetch_add(1, Ordering::Relaxed);
            match vm.execute(tx)? {
                Attempt::Done { output, writes, reads } => {
                    let incarnation = self.scheduler.incarnation(tx) + 1;
                    let version = Version { tx, incarnation };
                    let written = Recorded { worker: 0, writes, reads, fee: output.fee };
                    self.shared.mv.record(version, written, output);
                }
                Attempt::Blocked { blocker, .. } => {
                    return Err(ExecutionError::Evm {
                        context: format!("tx {tx}"),
                        message: format!(
                            "blocked on tx {blocker} although every earlier tx is final"
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Halts the run when a worker panics, so the others stop instead of waiting forever for
/// the task or the share of the tail it left unfinished (the panic then reaches the caller
/// through the scope).
struct HaltOnPanic<'a, 'r>(&'a Run<'r>);

impl Drop for HaltOnPanic<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.scheduler.halt();
            self.0.tail.abandon();
        }
    }
}

/// Waiting for work: spin briefly (a task usually appears within microseconds), then yield
/// the core so that a worker never starves other threads of an oversubscribed machine.
fn idle_wait(idle: &mut u32) {
    *idle += 1;
    if *idle < 128 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handoff_is_made_once_by_whoever_claims_it_first() {
        let handoff = Handoff::default();
        let made = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    handoff.claim(|| Some(made.fetch_add(1, Ordering::SeqCst)));
                    assert_eq!(handoff.wait(), Some(&0));
                });
            }
        });
        assert_eq!(made.into_inner(), 1);
    }

    #[test]
    fn a_handoff_whose_maker_panicked_tells_its_waiters_there_is_nothing() {
        let handoff: Handoff<u32> = Handoff::default();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| handoff.wait().copied());
            let maker = scope.spawn(|| handoff.publish(|| panic!("preparing failed")));
            assert!(maker.join().is_err());
            assert_eq!(waiter.join().unwrap(), None, "the waiter returned instead of hanging");
        });
        assert_eq!(handoff.into_inner(), None);
    }
}

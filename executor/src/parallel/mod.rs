//! The Block-STM parallel path.
//!
//! Workers pull execution and validation tasks from a shared [`scheduler`]; transactions read
//! and write through the [`mv_memory`]; every read is validated after execution, and a
//! transaction whose reads went stale runs again. Fees to the beneficiary and value to
//! code-less recipients of plain transfers are credits that need no read of the balance, and
//! are resolved in block order at the end. The outcome is the sequential path's, bit for bit.

mod chaos;
mod mv_memory;
mod padded;
mod scheduler;
mod vm;

use crate::{
    block::Block,
    block_state::BlockState,
    effects,
    error::ExecutionError,
    outcome::{BlockOutcome, ExecutionStats, TxOutcome},
    sequential,
    state::{self, Account, AccountDiff, StateDiff},
    storage::{StateReader, Storage},
};
use alloy_primitives::map::{AddressMap, AddressSet};
use chaos::Chaos;
use mv_memory::Version;
use padded::CachePadded;
use scheduler::{Scheduler, Task};
use std::{
    num::NonZeroUsize,
    sync::{
        Mutex,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
};
use vm::{Attempt, Base, Shared, TxOutput, Vm};

/// How the parallel path runs a block.
#[derive(Clone, Debug, PartialEq)]
pub struct ParallelConfig {
    /// Worker threads, the calling thread included.
    pub threads: NonZeroUsize,
    /// Seed of the schedule perturbation, for determinism checks; `None` in production.
    pub chaos: Option<u64>,
    /// Blocks with fewer transactions run sequentially.
    pub min_txs: usize,
    /// Blocks whose contract work (the gas limits of transactions with calldata or init code)
    /// sums to less run sequentially: plain transfers are too cheap to gain from threads.
    pub min_gas: u64,
    /// Blocks averaging less contract gas per transaction run sequentially: mostly plain
    /// transfers, each too cheap for the coordination it would need.
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
            min_gas: 3_000_000,
            min_gas_per_tx: 15_000,
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
            min_gas: 0,
            min_gas_per_tx: 0,
            adaptive: false,
            ..Self::with_threads(threads)
        }
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
    if txs < config.min_txs.max(2)
        || contract_gas < config.min_gas
        || transfer_heavy
        || top_sender_count(block) as f64 > config.max_sender_share * txs as f64
    {
        return sequential::execute(storage, block);
    }
    let parent = block.parent_hash.map(|hash| (block.number.saturating_sub(1), hash));
    let pre_block = effects::pre_block(block, &mut BlockState::new(storage.reader()?, parent))?;

    let shared = Shared::new(block);
    let run = Run::new(&shared, config);
    std::thread::scope(|scope| {
        for worker in 1..config.threads.get() {
            let (run, pre_block) = (&run, &pre_block);
            scope.spawn(move || run.work(worker, || storage.reader(), pre_block));
        }
        // Linux queues a new thread on its parent's core; without a yield it may wait there
        // for milliseconds (measured: 1.5 ms median on this 2-core machine), longer than a
        // small block takes.
        std::thread::yield_now();
        run.work(0, || storage.reader(), &pre_block);
    });
    if let Some(error) = run.error.lock().expect("error lock poisoned").take() {
        return Err(error);
    }

    if run.fell_back.load(Ordering::Relaxed) {
        // Finishing in order on the parallel path's VM reuses what is still valid, but costs
        // about 1.7 times the sequential path per transaction (measured on the ERC-20
        // workload): when the run stopped before it had done most of the block's work (its
        // executions less its re-executions), running it afresh on the sequential path is
        // cheaper.
        let reruns = run.total_reruns.load(Ordering::Relaxed);
        let useful = run.total_executions.load(Ordering::Relaxed).saturating_sub(reruns);
        if (useful as f64) < config.restart_below * txs as f64 {
            return sequential::execute(storage, block);
        }
        let mut vm = Vm::new(&shared, Base { reader: storage.reader()?, pre_block: &pre_block });
        finish_in_order(&shared, &run, &mut vm)?;
    }
    let stats = ExecutionStats {
        executions: run.slots.iter().map(|s| s.executions.load(Ordering::Relaxed)).collect(),
        validations: collect(&run.scheduler, txs, |c| &c.validations),
        aborts: collect(&run.scheduler, txs, |c| &c.aborts),
        suspensions: collect(&run.scheduler, txs, |c| &c.suspensions),
        sequential: false,
    };
    let mut slots = run.slots;
    let base = Base { reader: storage.reader()?, pre_block: &pre_block };
    let txs = outcomes(&shared, &mut slots, &base)?;
    let threads = config.threads.get();
    let post_block = StateDiff::default();
    let diff = sequential::merge_parts(&sequential::parts(&pre_block, &txs, &post_block), threads);
    let mut outcome = sequential::assemble(pre_block, txs, post_block, diff, stats);
    if effects::has_post_block(block) {
        // The block-level effects see the state after every transaction: the merged diff.
        let mut state = BlockState::new(storage.reader()?, parent);
        state.apply(&outcome.diff);
        outcome.post_block = effects::post_block(block, &mut state)?;
        outcome.diff.merge(&outcome.post_block);
    }
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

/// How many transactions the most frequent sender signs.
fn top_sender_count(block: &Block) -> usize {
    let mut counts: AddressMap<usize> = AddressMap::default();
    for tx in &block.transactions {
        *counts.entry(tx.caller).or_default() += 1;
    }
    counts.values().copied().max().unwrap_or(0)
}

fn collect(
    scheduler: &Scheduler,
    txs: usize,
    field: impl Fn(&scheduler::TxCounters) -> &AtomicUsize,
) -> Vec<u32> {
    (0..txs).map(|tx| field(scheduler.counters(tx)).load(Ordering::Relaxed) as u32).collect()
}

/// One transaction's latest output and its execution count.
#[derive(Debug, Default)]
struct TxSlot {
    output: Mutex<Option<TxOutput>>,
    executions: AtomicU32,
}

impl TxSlot {
    fn output(&self) -> std::sync::MutexGuard<'_, Option<TxOutput>> {
        self.output.lock().expect("output lock poisoned")
    }

    /// The final output, once the workers are gone.
    fn take_output(&mut self) -> TxOutput {
        let output = self.output.get_mut().expect("output lock poisoned").take();
        output.expect("every transaction executed")
    }
}

/// State of one parallel run, shared by its workers.
struct Run<'a> {
    shared: &'a Shared<'a>,
    config: &'a ParallelConfig,
    scheduler: Scheduler,
    slots: Vec<CachePadded<TxSlot>>,
    error: Mutex<Option<ExecutionError>>,
    fell_back: std::sync::atomic::AtomicBool,
    total_executions: AtomicUsize,
    total_reruns: AtomicUsize,
}

impl<'a> Run<'a> {
    fn new(shared: &'a Shared<'a>, config: &'a ParallelConfig) -> Self {
        let txs = shared.block.transactions.len();
        Self {
            shared,
            config,
            scheduler: Scheduler::new(txs),
            slots: (0..txs).map(|_| CachePadded::default()).collect(),
            error: Mutex::default(),
            fell_back: Default::default(),
            total_executions: AtomicUsize::new(0),
            total_reruns: AtomicUsize::new(0),
        }
    }

    fn fail(&self, error: ExecutionError) {
        self.error.lock().expect("error lock poisoned").get_or_insert(error);
        self.scheduler.halt();
    }

    /// One worker's loop: take a task, run it, repeat until the block is done.
    fn work<R: StateReader>(
        &self,
        worker: usize,
        reader: impl FnOnce() -> Result<R, crate::storage::StorageError>,
        pre_block: &'a crate::state::StateDiff,
    ) {
        let reader = match reader() {
            Ok(reader) => reader,
            Err(e) => return self.fail(e.into()),
        };
        let mut vm = Vm::new(self.shared, Base { reader, pre_block });
        let _halt = HaltOnPanic(&self.scheduler);
        let mut chaos = self.config.chaos.map(|seed| Chaos::new(seed, worker));
        let mut task: Option<Task> = None;
        let mut idle = 0u32;
        while !self.scheduler.is_done() {
            if let Some(chaos) = &mut chaos {
                chaos.delay();
                if task.is_none() {
                    task = chaos
                        .extra_validation(self.slots.len())
                        .and_then(|tx| self.scheduler.extra_validation(tx));
                }
            }
            task = match task {
                Some(Task::Execute(version)) => self.execute(&mut vm, version),
                Some(Task::Validate(version)) => self.validate(version),
                None => {
                    let prefer_execution = chaos.as_mut().is_some_and(Chaos::prefer_execution);
                    match self.scheduler.next_task(prefer_execution) {
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
    }

    fn execute<R: StateReader>(&self, vm: &mut Vm<'_, R>, version: Version) -> Option<Task> {
        loop {
            self.slots[version.tx].executions.fetch_add(1, Ordering::Relaxed);
            let executions = self.total_executions.fetch_add(1, Ordering::Relaxed) + 1;
            match vm.execute(version.tx) {
                Err(e) => {
                    self.fail(e);
                    return None;
                }
                Ok(Attempt::Blocked(blocker)) => {
                    self.total_reruns.fetch_add(1, Ordering::Relaxed);
                    self.check_chain(executions);
                    if self.scheduler.add_dependency(version.tx, blocker) {
                        return None;
                    }
                }
                Ok(Attempt::Done(output, writes)) => {
                    let wrote_new = self.shared.mv.record(version, writes);
                    self.shared.mv.set_fee(version, output.lazy_fee(self.shared.block.beneficiary));
                    *self.slots[version.tx].output() = Some(*output);
                    return self.scheduler.finish_execution(version, wrote_new);
                }
            }
        }
    }

    fn validate(&self, version: Version) -> Option<Task> {
        let valid = {
            let output = self.slots[version.tx].output();
            let reads = &output.as_ref().expect("validated after execution").reads;
            reads
                .iter()
                .all(|r| self.shared.mv.still_valid(&r.location, version.tx, r.mode, &r.origin))
        };
        let aborted = !valid && self.scheduler.try_validation_abort(version);
        if aborted {
            self.shared.mv.convert_writes_to_estimates(version.tx);
            self.total_reruns.fetch_add(1, Ordering::Relaxed);
            self.check_chain(self.total_executions.load(Ordering::Relaxed));
        }
        self.scheduler.finish_validation(version.tx, aborted)
    }

    /// Stops the parallel run once aborts and suspensions show a dependency chain: the rest
    /// runs in order (see `execute`).
    fn check_chain(&self, executions: usize) {
        if !self.config.adaptive {
            return;
        }
        let reruns = self.total_reruns.load(Ordering::Relaxed);
        let warmup = 8 * self.config.threads.get() + 16;
        if executions >= warmup && reruns * 3 > executions {
            self.fell_back.store(true, Ordering::Relaxed);
            self.scheduler.halt();
        }
    }
}

/// Completes a halted run in block order: keeps each output whose reads are still valid and
/// re-executes the rest, now against final values of every earlier transaction.
fn finish_in_order<R: StateReader>(
    shared: &Shared<'_>,
    run: &Run<'_>,
    vm: &mut Vm<'_, R>,
) -> Result<(), ExecutionError> {
    for tx in 0..shared.block.transactions.len() {
        let mut output = run.slots[tx].output();
        // Only an executed transaction's writes are in the memory (not estimates).
        let valid = run.scheduler.is_executed(tx)
            && output.as_ref().is_some_and(|o| {
                o.reads.iter().all(|r| shared.mv.still_valid(&r.location, tx, r.mode, &r.origin))
            });
        if valid {
            continue;
        }
        run.slots[tx].executions.fetch_add(1, Ordering::Relaxed);
        match vm.execute(tx)? {
            Attempt::Done(new_output, writes) => {
                let incarnation = run.scheduler.incarnation(tx) + 1;
                let version = Version { tx, incarnation };
                shared.mv.record(version, writes);
                shared.mv.set_fee(version, new_output.lazy_fee(shared.block.beneficiary));
                *output = Some(*new_output);
            }
            Attempt::Blocked(blocker) => {
                return Err(ExecutionError::Evm {
                    context: format!("tx {tx}"),
                    message: format!("blocked on tx {blocker} although every earlier tx is final"),
                });
            }
        }
    }
    Ok(())
}

/// Builds the outcomes from the slots' outputs in block order, resolving each transaction's
/// credits into the full account states sequential execution writes. One pass, so each output
/// is touched once; only accounts that can be credited are followed.
fn outcomes<R: StateReader>(
    shared: &Shared<'_>,
    slots: &mut [CachePadded<TxSlot>],
    base: &Base<'_, R>,
) -> Result<Vec<TxOutcome>, ExecutionError> {
    let block = shared.block;
    // Credits go to the beneficiary or to a plain transfer's recipient: known from the block.
    let creditable: AddressSet = std::iter::once(block.beneficiary)
        .chain(block.transactions.iter().filter_map(|tx| shared.lazy_recipient_candidate(tx)))
        .collect();
    let mut current: AddressMap<Option<Account>> = AddressMap::default();
    let mut cumulative_gas = 0;
    let mut txs = Vec::with_capacity(slots.len());
    for (slot, tx) in slots.iter_mut().zip(&block.transactions) {
        let TxOutput { result, mut changes, credits, .. } = slot.0.take_output();
        for (address, change) in changes.accounts.iter() {
            if creditable.contains(address) {
                current.insert(*address, change.account);
            }
        }
        for (address, amount) in credits {
            let before = match current.get(&address) {
                Some(account) => *account,
                None => base.account(address)?,
            };
            let after = state::credited(before, amount, block.spec);
            current.insert(address, after);
            if after != before {
                changes
                    .accounts
                    .insert(address, AccountDiff { account: after, ..Default::default() });
            }
        }
        cumulative_gas += result.as_ref().map_or(0, |r| r.tx_gas_used());
        txs.push(match result {
            Ok(result) => sequential::executed(tx.tx_type, result, cumulative_gas, changes),
            Err(invalid) => TxOutcome::invalid(invalid, tx.tx_type, cumulative_gas),
        });
    }
    Ok(txs)
}

/// Halts the scheduler when a worker panics, so the others stop instead of waiting forever
/// for the task it left unfinished (the panic then reaches the caller through the scope).
struct HaltOnPanic<'a>(&'a Scheduler);

impl Drop for HaltOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.halt();
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

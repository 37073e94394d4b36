//! The collaborative scheduler of Block-STM: execution and validation indices that worker
//! threads pull tasks from, transaction statuses, and suspension on dependencies.

use super::{
    mv_memory::{Incarnation, TxIdx, Version},
    padded::CachePadded,
};
use std::sync::{
    Mutex,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    ReadyToExecute,
    Executing,
    Executed,
    Aborting,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Task {
    Execute(Version),
    Validate(Version),
}

/// Per-transaction counters for the outcome's statistics.
#[derive(Debug, Default)]
pub(crate) struct TxCounters {
    pub(crate) executions: AtomicUsize,
    pub(crate) validations: AtomicUsize,
    pub(crate) aborts: AtomicUsize,
    pub(crate) suspensions: AtomicUsize,
}

/// One transaction's scheduling state, on its own cache lines.
#[derive(Debug)]
struct TxSlot {
    status: Mutex<(Incarnation, Status)>,
    /// Transactions suspended until this one finishes executing.
    dependents: Mutex<Vec<TxIdx>>,
    counters: TxCounters,
}

#[derive(Debug)]
pub(crate) struct Scheduler {
    txs: usize,
    execution_idx: CachePadded<AtomicUsize>,
    validation_idx: CachePadded<AtomicUsize>,
    /// Bumped whenever an index moves down, so `check_done` can tell nothing moved meanwhile.
    decrease_count: CachePadded<AtomicUsize>,
    active_tasks: CachePadded<AtomicUsize>,
    done: CachePadded<AtomicBool>,
    slots: Vec<CachePadded<TxSlot>>,
    /// Transactions to execute ahead of block order (see [`Scheduler::with_early`]), and how
    /// many of them were handed out.
    early: Vec<TxIdx>,
    early_next: CachePadded<AtomicUsize>,
}

impl Scheduler {
    pub(crate) fn new(txs: usize) -> Self {
        Self {
            txs,
            execution_idx: CachePadded(AtomicUsize::new(0)),
            validation_idx: CachePadded(AtomicUsize::new(0)),
            decrease_count: CachePadded(AtomicUsize::new(0)),
            active_tasks: CachePadded(AtomicUsize::new(0)),
            done: CachePadded(AtomicBool::new(txs == 0)),
            slots: (0..txs)
                .map(|_| {
                    CachePadded(TxSlot {
                        status: Mutex::new((0, Status::ReadyToExecute)),
                        dependents: Mutex::default(),
                        counters: TxCounters::default(),
                    })
                })
                .collect(),
            early: Vec::new(),
            early_next: CachePadded(AtomicUsize::new(0)),
        }
    }

    /// Hands out `early` (in that order) before the next transaction in block order, to
    /// workers that ask for them. Executing ahead is always safe: whenever a transaction
    /// below writes something new the validation index returns to it, so its output is kept
    /// only if it is validated after everything before it executed.
    pub(crate) fn with_early(mut self, early: Vec<TxIdx>) -> Self {
        self.early = early;
        self
    }

    fn status(&self, tx: TxIdx) -> std::sync::MutexGuard<'_, (Incarnation, Status)> {
        self.slots[tx].status.lock().expect("scheduler lock poisoned")
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Stops every worker at its next task pick-up (on an error, or to fall back).
    pub(crate) fn halt(&self) {
        self.done.store(true, Ordering::Release);
    }

    pub(crate) fn counters(&self, tx: TxIdx) -> &TxCounters {
        &self.slots[tx].counters
    }

    /// Whether a transaction's latest incarnation finished and was not aborted since.
    pub(crate) fn is_executed(&self, tx: TxIdx) -> bool {
        self.status(tx).1 == Status::Executed
    }

    /// The incarnation a transaction is at.
    pub(crate) fn incarnation(&self, tx: TxIdx) -> Incarnation {
        self.status(tx).0
    }

    fn decrease_execution_idx(&self, target: TxIdx) {
        self.execution_idx.fetch_min(target, Ordering::SeqCst);
        self.decrease_count.fetch_add(1, Ordering::SeqCst);
    }

    fn decrease_validation_idx(&self, target: TxIdx) {
        self.validation_idx.fetch_min(target, Ordering::SeqCst);
        self.decrease_count.fetch_add(1, Ordering::SeqCst);
    }

    fn check_done(&self) {
        let observed = self.decrease_count.load(Ordering::SeqCst);
        if self.execution_idx.load(Ordering::SeqCst).min(self.validation_idx.load(Ordering::SeqCst))
            >= self.txs
            && self.active_tasks.load(Ordering::SeqCst) == 0
            && observed == self.decrease_count.load(Ordering::SeqCst)
        {
            self.done.store(true, Ordering::Release);
        }
    }

    /// Claims the next incarnation of `tx` if it is ready to execute.
    fn try_incarnate(&self, tx: TxIdx) -> Option<Version> {
        if tx >= self.txs {
            return None;
        }
        let mut status = self.status(tx);
        if status.1 == Status::ReadyToExecute {
            status.1 = Status::Executing;
            return Some(Version { tx, incarnation: status.0 });
        }
        None
    }

    fn next_version_to_execute(&self) -> Option<Version> {
        if self.execution_idx.load(Ordering::SeqCst) >= self.txs {
            self.check_done();
            return None;
        }
        self.active_tasks.fetch_add(1, Ordering::SeqCst);
        let tx = self.execution_idx.fetch_add(1, Ordering::SeqCst);
        let version = self.try_incarnate(tx);
        if version.is_none() {
            self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        }
        version
    }

    fn next_early(&self) -> Option<Version> {
        if self.early_next.load(Ordering::Relaxed) >= self.early.len() {
            return None;
        }
        let tx = *self.early.get(self.early_next.fetch_add(1, Ordering::SeqCst))?;
        self.active_tasks.fetch_add(1, Ordering::SeqCst);
        let version = self.try_incarnate(tx);
        if version.is_none() {
            self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        }
        version
    }

    fn next_version_to_validate(&self) -> Option<Version> {
        let next = self.validation_idx.load(Ordering::SeqCst);
        if next >= self.txs {
            self.check_done();
            return None;
        }
        // Validating past a transaction that has not executed yet is wasted: its execution
        // writes locations new to the memory and sends validation back to it (about 1.45
        // validations per transaction on two threads, against one when waiting here). The
        // claim is Block-STM's, as a compare-and-swap; a status that changed since this look
        // is handled as Block-STM handles it.
        if self.status(next).1 != Status::Executed {
            return None;
        }
        self.active_tasks.fetch_add(1, Ordering::SeqCst);
        let claimed = self.validation_idx.compare_exchange(
            next,
            next + 1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        if claimed.is_ok() {
            let (incarnation, status) = *self.status(next);
            if status == Status::Executed {
                return Some(Version { tx: next, incarnation });
            }
        }
        self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }

    /// The next task, or `None` when there is nothing to do right now. `prefer_execution`
    /// inverts the usual preference for validation (the chaos option's out-of-order pick-up).
    pub(crate) fn next_task(&self, prefer_execution: bool, take_early: bool) -> Option<Task> {
        if take_early && let Some(version) = self.next_early() {
            return Some(Task::Execute(version));
        }
        let validate_first =
            self.validation_idx.load(Ordering::SeqCst) < self.execution_idx.load(Ordering::SeqCst);
        if validate_first != prefer_execution {
            self.next_version_to_validate()
                .map(Task::Validate)
                .or_else(|| self.next_version_to_execute().map(Task::Execute))
        } else {
            self.next_version_to_execute()
                .map(Task::Execute)
                .or_else(|| self.next_version_to_validate().map(Task::Validate))
        }
    }

    /// Suspends `tx` until `blocker` finishes executing. Returns false if `blocker` already has,
    /// in which case `tx` should simply execute again.
    pub(crate) fn add_dependency(&self, tx: TxIdx, blocker: TxIdx) -> bool {
        let mut dependents =
            self.slots[blocker].dependents.lock().expect("scheduler lock poisoned");
        if self.status(blocker).1 == Status::Executed {
            return false;
        }
        self.status(tx).1 = Status::Aborting;
        dependents.push(tx);
        drop(dependents);
        self.slots[tx].counters.suspensions.fetch_add(1, Ordering::Relaxed);
        self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        true
    }

    fn set_ready(&self, tx: TxIdx) {
        let mut status = self.status(tx);
        *status = (status.0 + 1, Status::ReadyToExecute);
    }

    /// Marks `version` executed, resumes its dependents, and returns its validation task if
    /// this worker should run it right away.
    pub(crate) fn finish_execution(
        &self,
        version: Version,
        wrote_new_location: bool,
    ) -> Option<Task> {
        self.status(version.tx).1 = Status::Executed;
        let dependents = std::mem::take(
            &mut *self.slots[version.tx].dependents.lock().expect("scheduler lock poisoned"),
        );
        if let Some(min) = dependents.iter().min().copied() {
            for tx in dependents {
                self.set_ready(tx);
            }
            self.decrease_execution_idx(min);
        }
        if self.validation_idx.load(Ordering::SeqCst) > version.tx {
            if !wrote_new_location {
                return Some(Task::Validate(version));
            }
            self.decrease_validation_idx(version.tx);
        }
        self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }

    /// Claims the right to abort `version` after a failed validation (only one validator wins).
    pub(crate) fn try_validation_abort(&self, version: Version) -> bool {
        let mut status = self.status(version.tx);
        if *status == (version.incarnation, Status::Executed) {
            status.1 = Status::Aborting;
            self.slots[version.tx].counters.aborts.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Ends a validation; after an abort, returns the re-execution if this worker should run it.
    pub(crate) fn finish_validation(&self, tx: TxIdx, aborted: bool) -> Option<Task> {
        self.slots[tx].counters.validations.fetch_add(1, Ordering::Relaxed);
        if aborted {
            self.set_ready(tx);
            self.decrease_validation_idx(tx + 1);
            if self.execution_idx.load(Ordering::SeqCst) > tx
                && let Some(version) = self.try_incarnate(tx)
            {
                return Some(Task::Execute(version));
            }
        }
        self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }

    /// An extra validation of an executed transaction (the chaos option): always safe, since a
    /// stale read set found this way is aborted and re-executed like any other.
    pub(crate) fn extra_validation(&self, tx: TxIdx) -> Option<Task> {
        if tx >= self.txs || self.is_done() {
            return None;
        }
        self.active_tasks.fetch_add(1, Ordering::SeqCst);
        let (incarnation, status) = *self.status(tx);
        if status == Status::Executed && tx < self.validation_idx.load(Ordering::SeqCst) {
            return Some(Task::Validate(Version { tx, incarnation }));
        }
        self.active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(tx: TxIdx, incarnation: Incarnation) -> Version {
        Version { tx, incarnation }
    }

    #[test]
    fn single_worker_executes_then_validates_in_order() {
        let s = Scheduler::new(2);
        assert_eq!(s.next_task(false, false), Some(Task::Execute(v(0, 0))));
        // Tx 0 finished before its validation index was passed: no immediate validation.
        assert_eq!(s.finish_execution(v(0, 0), true), None);
        assert_eq!(s.next_task(false, false), Some(Task::Validate(v(0, 0))));
        assert_eq!(s.finish_validation(0, false), None);
        assert_eq!(s.next_task(false, false), Some(Task::Execute(v(1, 0))));
        assert_eq!(s.finish_execution(v(1, 0), false), None);
        assert_eq!(s.next_task(false, false), Some(Task::Validate(v(1, 0))));
        assert_eq!(s.finish_validation(1, false), None);
        assert!(!s.is_done());
        assert_eq!(s.next_task(false, false), None);
        assert!(s.is_done());
    }

    #[test]
    fn failed_validation_reexecutes_with_a_new_incarnation() {
        let s = Scheduler::new(2);
        let e0 = s.next_task(false, false).unwrap();
        let e1 = s.next_task(true, false).unwrap();
        assert_eq!((e0, e1), (Task::Execute(v(0, 0)), Task::Execute(v(1, 0))));
        assert_eq!(s.finish_execution(v(1, 0), false), None);
        assert_eq!(s.finish_execution(v(0, 0), false), None);
        assert_eq!(s.next_task(false, false), Some(Task::Validate(v(0, 0))));
        assert_eq!(s.finish_validation(0, false), None);
        assert_eq!(s.next_task(false, false), Some(Task::Validate(v(1, 0))));
        assert!(s.try_validation_abort(v(1, 0)));
        assert!(!s.try_validation_abort(v(1, 0)), "only one validator aborts an incarnation");
        assert_eq!(s.finish_validation(1, true), Some(Task::Execute(v(1, 1))));
        // The validation index is past tx 1, so its new incarnation is validated right away.
        assert_eq!(s.finish_execution(v(1, 1), false), Some(Task::Validate(v(1, 1))));
        assert_eq!(s.finish_validation(1, false), None);
        assert_eq!(s.next_task(false, false), None);
        assert!(s.is_done());
        assert_eq!(s.counters(1).aborts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn suspended_transaction_resumes_after_its_blocker() {
        let s = Scheduler::new(2);
        let _ = s.next_task(false, false); // execute 0
        let _ = s.next_task(true, false); // execute 1
        assert!(s.add_dependency(1, 0), "tx 0 is still executing");
        assert_eq!(s.finish_execution(v(0, 0), false), None);
        // Tx 1 is ready again with incarnation 1, and the execution index moved back to it.
        assert_eq!(s.next_task(true, false), Some(Task::Execute(v(1, 1))));
        assert!(!s.add_dependency(1, 0), "a finished blocker does not suspend");
        assert_eq!(s.counters(1).suspensions.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn early_transactions_go_first_to_workers_that_take_them_and_are_validated_in_order() {
        let s = Scheduler::new(3).with_early(vec![2]);
        // A worker that keeps to block order does not get it.
        assert_eq!(s.next_task(false, false), Some(Task::Execute(v(0, 0))));
        assert_eq!(s.next_task(false, true), Some(Task::Execute(v(2, 0))));
        // Handed out once.
        assert_eq!(s.next_task(false, true), Some(Task::Execute(v(1, 0))));
        // Tx 2 finishes before the validation index reaches it: no validation yet.
        assert_eq!(s.finish_execution(v(2, 0), false), None);
        assert_eq!(s.finish_execution(v(0, 0), true), None);
        assert_eq!(s.finish_execution(v(1, 0), true), None);
        // Block order skips the executed tx 2; validation takes all three in order.
        for tx in 0..3 {
            assert_eq!(s.next_task(false, true), Some(Task::Validate(v(tx, 0))));
            assert_eq!(s.finish_validation(tx, false), None);
        }
        assert_eq!(s.next_task(false, true), None);
        assert!(s.is_done());
    }

    #[test]
    fn validation_waits_at_a_transaction_not_executed_yet() {
        let s = Scheduler::new(3);
        assert_eq!(s.next_task(false, false), Some(Task::Execute(v(0, 0))));
        assert_eq!(s.next_task(true, false), Some(Task::Execute(v(1, 0))));
        assert_eq!(s.next_task(true, false), Some(Task::Execute(v(2, 0))));
        // Tx 0 finishes, tx 1 is still executing, tx 2 finishes: only tx 0 is validated; the
        // index stays at tx 1 instead of passing it to validate tx 2 in vain.
        assert_eq!(s.finish_execution(v(0, 0), true), None);
        assert_eq!(s.finish_execution(v(2, 0), true), None);
        assert_eq!(s.next_task(false, false), Some(Task::Validate(v(0, 0))));
        assert_eq!(s.finish_validation(0, false), None);
        assert_eq!(s.next_task(false, false), None, "tx 1 has not executed");
        assert_eq!(s.next_task(true, false), None);
        // Its execution writes new locations, and nothing above it was validated before it.
        assert_eq!(s.finish_execution(v(1, 0), true), None);
        for tx in 1..3 {
            assert_eq!(s.next_task(false, false), Some(Task::Validate(v(tx, 0))));
            assert_eq!(s.finish_validation(tx, false), None);
        }
        assert_eq!(s.next_task(false, false), None);
        assert!(s.is_done());
        let validations: usize =
            (0..3).map(|tx| s.counters(tx).validations.load(Ordering::Relaxed)).sum();
        assert_eq!(validations, 3, "one validation per transaction");
    }
}

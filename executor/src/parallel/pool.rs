//! Worker threads kept between blocks. Starting a thread for each block cost 30 to 60 us
//! before it ran (measured on this 2-core machine: median 50 us of a 550 us mainnet block of
//! 24 transactions). Waking a parked pool thread is not free either: while the caller was
//! busy (its last block) the helper's core went idle, and the wake-up cost the caller 40 us
//! and the helper 65 us before it ran (block 13217637), so the parallel path prepares its
//! run while its helpers wake up (see `Start`).

use super::idle_wait;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};

/// Runs `main` on the calling thread and `helper(1..=helpers)` on pool threads, and returns
/// once all have. The pool is the caller's alone for the call: a block's workers wait for
/// each other at its tail, so helpers of two blocks queued on shared threads could each hold
/// a thread the other's waits for.
pub(crate) fn run(helpers: usize, helper: impl Fn(usize) + Sync, main: impl FnOnce()) {
    if helpers == 0 {
        return main();
    }
    let pool = Lease::take(helpers);
    let finished = AtomicUsize::new(0);
    pool.0.in_place_scope(|scope| {
        for worker in 1..=helpers {
            let (helper, finished) = (&helper, &finished);
            scope.spawn(move |_| {
                // Counted even when the helper panics, so that `main`'s thread stops waiting.
                let _finished = Finished(finished);
                helper(worker);
            });
        }
        main();
        // The scope's own wait sleeps when a helper is still busy, and the wake-up costs
        // more than the few microseconds a helper takes to finish after `main`: spin first.
        let mut idle = 0;
        while finished.load(Ordering::Acquire) < helpers {
            idle_wait(&mut idle);
        }
    });
}

struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// Idle pools, kept for the life of the process: as many of each size as callers ever
/// needed at once.
static IDLE: Mutex<Vec<&'static ThreadPool>> = Mutex::new(Vec::new());

/// A pool taken for one call, given back when dropped (a panic included: its threads
/// survive it).
struct Lease(&'static ThreadPool);

impl Lease {
    fn take(threads: usize) -> Self {
        let mut idle = IDLE.lock().expect("pool list poisoned");
        if let Some(at) = idle.iter().position(|pool| pool.current_num_threads() == threads) {
            return Self(idle.swap_remove(at));
        }
        drop(idle);
        let pool = ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lockstep-worker-{i}"))
            .build()
            .expect("spawning the worker threads");
        Self(Box::leak(Box::new(pool)))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // A poisoned list only loses this pool for reuse.
        if let Ok(mut idle) = IDLE.lock() {
            idle.push(self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A helper and `main` that each wait for the other: this returns only when the helpers
    /// run at the same time as `main`.
    fn meet(helpers: usize) {
        let arrived = AtomicUsize::new(0);
        let wait_for_all = || {
            arrived.fetch_add(1, Ordering::SeqCst);
            while arrived.load(Ordering::SeqCst) < helpers + 1 {
                std::thread::yield_now();
            }
        };
        run(helpers, |_| wait_for_all(), wait_for_all);
        assert_eq!(arrived.load(Ordering::SeqCst), helpers + 1);
    }

    #[test]
    fn helpers_run_beside_the_caller() {
        meet(1);
        meet(3);
        meet(1);
    }

    #[test]
    fn blocks_run_at_once_never_wait_for_each_others_helpers() {
        // Eight callers with two helpers each, and each waits for all of its own: on shared
        // threads, two callers could each hold one thread and wait for the other.
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        meet(2);
                    }
                });
            }
        });
    }

    #[test]
    fn a_pool_serves_one_caller_at_a_time() {
        let first = Lease::take(5);
        let second = Lease::take(5);
        assert!(!std::ptr::eq(first.0, second.0), "a pool in use is not handed out again");
        let first_pool = first.0;
        drop(first);
        let again = Lease::take(5);
        assert!(std::ptr::eq(again.0, first_pool), "an idle pool is reused");
        assert_eq!(again.0.current_num_threads(), 5);
    }

    #[test]
    fn every_helper_gets_its_number() {
        let seen: Vec<AtomicBool> = (0..4).map(|_| AtomicBool::new(false)).collect();
        run(
            3,
            |worker| seen[worker].store(true, Ordering::SeqCst),
            || seen[0].store(true, Ordering::SeqCst),
        );
        assert!(seen.iter().all(|s| s.load(Ordering::SeqCst)));
    }

    #[test]
    fn a_helpers_panic_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| run(1, |_| panic!("helper failed"), || {}));
        assert!(caught.is_err());
        // The pool still serves later blocks.
        meet(1);
    }
}

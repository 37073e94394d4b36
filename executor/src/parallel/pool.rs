//! Worker threads kept between blocks. Starting a thread for each block cost 30 to 60 us
//! before it ran (measured on this 2-core machine: median 50 us of a 550 us mainnet block of
//! 24 transactions); a parked pool thread wakes in 4 to 9 us.

use super::idle_wait;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};

/// Runs `main` on the calling thread and `helper(1..=helpers)` on pool threads, and returns
/// once all have. Each helper has a pool thread of its own, so none waits for another of the
/// same block (a block's workers wait for each other at its tail); blocks run at once by
/// several callers share the threads, and one's helpers start when the other's are done.
pub(crate) fn run(helpers: usize, helper: impl Fn(usize) + Sync, main: impl FnOnce()) {
    if helpers == 0 {
        return main();
    }
    let finished = AtomicUsize::new(0);
    pool(helpers).in_place_scope(|scope| {
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

/// The pool of `threads` threads, built on first use and kept for the life of the process.
fn pool(threads: usize) -> &'static ThreadPool {
    static POOLS: Mutex<Vec<(usize, &'static ThreadPool)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().expect("pool list poisoned");
    if let Some((_, pool)) = pools.iter().find(|(size, _)| *size == threads) {
        return pool;
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("lockstep-worker-{i}"))
        .build()
        .expect("spawning the worker threads");
    let pool: &'static ThreadPool = Box::leak(Box::new(pool));
    pools.push((threads, pool));
    pool
}

//! Seeded schedule perturbation: yields, short sleeps, extra validations and out-of-order
//! task pick-up. None of it may change the outcome; the determinism checks rely on that.

use std::time::Duration;

/// A worker's perturbation source (splitmix64, seeded per worker).
#[derive(Debug, Clone)]
pub(crate) struct Chaos {
    state: u64,
}

impl Chaos {
    pub(crate) fn new(seed: u64, worker: usize) -> Self {
        Self { state: seed ^ (worker as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Maybe yields or sleeps a few microseconds.
    pub(crate) fn delay(&mut self) {
        match self.next() % 16 {
            0..=2 => std::thread::yield_now(),
            3 => std::thread::sleep(Duration::from_micros(self.next() % 50)),
            _ => {}
        }
    }

    /// Whether to take an execution task before a pending validation.
    pub(crate) fn prefer_execution(&mut self) -> bool {
        self.next().is_multiple_of(4)
    }

    /// A transaction to validate once more, now and then.
    pub(crate) fn extra_validation(&mut self, txs: usize) -> Option<usize> {
        (txs > 0 && self.next().is_multiple_of(8)).then(|| (self.next() % txs as u64) as usize)
    }

    /// A number below `n` (zero when `n` is zero).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

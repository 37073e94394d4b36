//! Which worker runs which of a block's transactions when the block runs as speculative
//! ranges. The first range takes transactions one at a time from the front; a helper that
//! is done with its range takes a chunk from the top of what nobody has taken yet, so that a
//! worker that finishes early relieves the first range instead of idling. Two virtual cores
//! of this machine ran the same instructions at rates up to 1.4 apart, so ranges of equal
//! work fixed up front finished far apart.

use crate::block::Block;
use std::{
    ops::Range,
    sync::atomic::{AtomicU64, Ordering},
};

/// Chunks smaller than this are not worth a range of their own: each costs a cold cache,
/// a layer to check and a layer to merge.
pub(crate) const MIN_CHUNK_TXS: usize = 64;

/// The claims on one block's transactions.
#[derive(Debug)]
pub(crate) struct Claims {
    /// The first range's next transaction (low half) and the start of the lowest range a
    /// helper holds (high half): what lies between is nobody's yet. One word, so that a
    /// claim from either end is one compare-and-swap.
    word: AtomicU64,
    /// Gas limits summed before each transaction (see [`gas_before_each`]).
    gas: Vec<u128>,
    min_chunk: usize,
}

impl Claims {
    /// Claims of a block whose gas limits summed before each transaction are `gas`, where
    /// helpers hold everything from `first_end` on, and give out chunks of at least
    /// `min_chunk` transactions ([`MIN_CHUNK_TXS`] but under chaos).
    pub(crate) fn new(gas: Vec<u128>, first_end: usize, min_chunk: usize) -> Self {
        let txs = gas.len() - 1;
        assert!(first_end <= txs && u32::try_from(txs).is_ok(), "a block of under 2^32 txs");
        let word = AtomicU64::new(pack(0, first_end));
        Self { word, gas, min_chunk: min_chunk.max(1) }
    }

    /// The first range's next transaction, unless a helper took it. Once `None`, always.
    pub(crate) fn next_first(&self) -> Option<usize> {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            let (next, limit) = unpack(word);
            if next >= limit {
                return None;
            }
            match self.word.compare_exchange_weak(
                word,
                pack(next + 1, limit),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(next),
                Err(now) => word = now,
            }
        }
    }

    /// A chunk for a helper that has executed transactions of `done` gas limits so far: the
    /// top of what nobody has taken, in the share of the helper's pace to the first range's
    /// (each measured by gas limits since the block started; within a tenth and nine tenths),
    /// so that the two, the first range going on from the bottom, finish about together. A
    /// helper's transactions run slower than the first range's (their loads are recorded,
    /// their fees deferred), and a core of this machine ran up to 1.4 times another's pace.
    /// `None` once that share would be under the smallest chunk.
    pub(crate) fn chunk(&self, done: u128) -> Option<Range<usize>> {
        let gas = &self.gas;
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            let (next, limit) = unpack(word);
            let paces = done + gas[next];
            let share = if paces == 0 { 0.5 } else { (done as f64 / paces as f64).clamp(0.1, 0.9) };
            let taken = ((gas[limit] - gas[next]) as f64 * share) as u128;
            let start = gas.partition_point(|&g| g < gas[limit] - taken).clamp(next, limit);
            if limit - start < self.min_chunk {
                return None;
            }
            match self.word.compare_exchange_weak(
                word,
                pack(next, start),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(start..limit),
                Err(now) => word = now,
            }
        }
    }

    /// The gas limits of `range`'s transactions.
    pub(crate) fn gas_of(&self, range: Range<usize>) -> u128 {
        self.gas[range.end] - self.gas[range.start]
    }
}

/// The gas limits of `block`'s transactions summed before each, and after the last: where
/// the ranges start and how large a chunk is are both read from it, so the block's
/// transactions are walked once, before the helpers start (a walk over 47,619 of them took
/// about 0.55 ms: each gas limit sits in a transaction of its own, far from the next).
pub(crate) fn gas_before_each(block: &Block) -> Vec<u128> {
    let mut sum = 0u128;
    let mut gas = Vec::with_capacity(block.transactions.len() + 1);
    gas.push(0);
    for tx in &block.transactions {
        sum += u128::from(tx.gas_limit);
        gas.push(sum);
    }
    gas
}

fn pack(next: usize, limit: usize) -> u64 {
    (limit as u64) << 32 | next as u64
}

fn unpack(word: u64) -> (usize, usize) {
    ((word & u64::from(u32::MAX)) as usize, (word >> 32) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use revm::context::TxEnv;

    fn block(gas_limits: impl IntoIterator<Item = u64>) -> Block {
        let transactions =
            gas_limits.into_iter().map(|gas_limit| TxEnv { gas_limit, ..TxEnv::default() });
        Block { transactions: transactions.collect(), ..Block::default() }
    }

    #[test]
    fn the_first_range_stops_where_a_helper_starts() {
        let block = block([21_000; 200]);
        let claims = Claims::new(gas_before_each(&block), 150, MIN_CHUNK_TXS);
        let taken: Vec<usize> = std::iter::from_fn(|| claims.next_first()).take(10).collect();
        assert_eq!(taken, (0..10).collect::<Vec<_>>());
        // 140 left: a helper at the first range's pace takes the top half.
        assert_eq!(claims.chunk(claims.gas_of(0..10)), Some(80..150));
        assert_eq!(std::iter::from_fn(|| claims.next_first()).count(), 70);
        assert_eq!(claims.next_first(), None, "stays taken");
        assert_eq!(claims.chunk(claims.gas_of(0..80)), None);
    }

    #[test]
    fn a_chunk_is_half_the_gas_left() {
        // The last ten transactions hold as much gas as the ninety before them.
        let block = block((0..100).map(|tx| if tx < 90 { 1_000 } else { 9_000 }));
        let claims = Claims::new(gas_before_each(&block), 100, MIN_CHUNK_TXS);
        assert_eq!(claims.chunk(0), None, "ten transactions are too few for a chunk");
        let block = block_of_repeats(&block, 10);
        let claims = Claims::new(gas_before_each(&block), 1000, MIN_CHUNK_TXS);
        let chunk = claims.chunk(0).expect("enough left");
        let gas = |r: Range<usize>| block.transactions[r].iter().map(|t| t.gas_limit).sum::<u64>();
        let (below, above) = (gas(0..chunk.start), gas(chunk.clone()));
        assert!(below.abs_diff(above) <= 9_000, "{below} below, {above} in {chunk:?}");
    }

    fn block_of_repeats(block: &Block, times: usize) -> Block {
        let transactions = (0..times).flat_map(|_| block.transactions.iter().cloned());
        Block { transactions: transactions.collect(), ..Block::default() }
    }

    #[test]
    fn too_little_left_gives_no_chunk() {
        let block = block([21_000; 1000]);
        let claims = Claims::new(gas_before_each(&block), 1000, MIN_CHUNK_TXS);
        assert_eq!(std::iter::from_fn(|| claims.next_first()).take(1000 - 127).count(), 873);
        let even = claims.gas_of(0..873);
        assert_eq!(claims.chunk(even), None, "127 left: a half of 63 is under a chunk");
        let claims = Claims::new(gas_before_each(&block), 1000, MIN_CHUNK_TXS);
        assert_eq!(std::iter::from_fn(|| claims.next_first()).take(1000 - 128).count(), 872);
        assert_eq!(claims.chunk(claims.gas_of(0..872)), Some(936..1000));
    }

    #[test]
    fn a_chunk_follows_the_helpers_pace_against_the_first_ranges() {
        let block = block([21_000; 1300]);
        let claims = Claims::new(gas_before_each(&block), 1000, MIN_CHUNK_TXS);
        assert_eq!(std::iter::from_fn(|| claims.next_first()).take(100).count(), 100);
        // In the same time the helper ran its 300 transactions, the first range ran 100:
        // of the 900 left, it takes three quarters.
        assert_eq!(claims.chunk(claims.gas_of(1000..1300)), Some(325..1000));
        // A first range that has run nothing yet still keeps a tenth.
        let claims = Claims::new(gas_before_each(&block), 1000, MIN_CHUNK_TXS);
        assert_eq!(claims.chunk(claims.gas_of(1000..1300)), Some(100..1000));
        // A helper at a third of the first range's pace takes a quarter.
        let claims = Claims::new(gas_before_each(&block), 1000, MIN_CHUNK_TXS);
        assert_eq!(std::iter::from_fn(|| claims.next_first()).take(600).count(), 600);
        assert_eq!(claims.chunk(claims.gas_of(1000..1200)), Some(900..1000));
    }

    #[test]
    fn the_smallest_chunks_halve_what_is_left_down_to_one() {
        let block = block([21_000; 100]);
        let claims = Claims::new(gas_before_each(&block), 100, 1);
        let chunks: Vec<_> = std::iter::from_fn(|| claims.chunk(0)).collect();
        assert_eq!(chunks.first(), Some(&(50..100)));
        assert!(chunks.windows(2).all(|w| w[1].end == w[0].start), "{chunks:?}");
        assert_eq!(chunks.last().map(|c| c.start), Some(1), "the first range keeps one");
        assert_eq!(std::iter::from_fn(|| claims.next_first()).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn racing_claims_take_every_transaction_once() {
        let block = block((0..20_000u64).map(|tx| 21_000 + tx % 7 * 10_000));
        for _ in 0..20 {
            let claims = Claims::new(gas_before_each(&block), 12_000, MIN_CHUNK_TXS);
            let (first, helpers) = std::thread::scope(|scope| {
                let helpers: Vec<_> = (0..3)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut chunks = Vec::new();
                            while let Some(chunk) = claims.chunk(claims.gas_of(12_000..20_000)) {
                                chunks.push(chunk);
                                std::thread::yield_now();
                            }
                            chunks
                        })
                    })
                    .collect();
                let first: Vec<usize> = std::iter::from_fn(|| claims.next_first()).collect();
                (first, helpers.into_iter().flat_map(|h| h.join().unwrap()).collect::<Vec<_>>())
            });
            let mut owner = vec![0u8; 20_000];
            for tx in first.iter().copied().chain(helpers.iter().flat_map(Clone::clone)) {
                owner[tx] += 1;
            }
            // From 12,000 on the helpers' ranges were theirs from the start.
            assert!(owner[12_000..].iter().all(|&n| n == 0));
            assert!(owner[..12_000].iter().all(|&n| n == 1), "each taken once");
            assert!(first.windows(2).all(|w| w[1] == w[0] + 1) && first.first() == Some(&0));
            assert!(helpers.iter().all(|chunk| chunk.start >= first.len()));
        }
    }
}

//! The check of the later ranges: each stands if every location it loaded still holds,
//! after the ranges before it, the value it loaded.

use super::speculation::{Load, Speculation};
use crate::{
    block_state::Written,
    error::ExecutionError,
    outcome::StateKey,
    sorted_map::SortedMap,
    state::AccountDiff,
    storage::{StateReader, StorageError},
};
use alloy_primitives::Address;
use std::{
    ops::Range,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

/// A stale later range: its index among them, its first stale transaction, and the key that
/// transaction loaded (`None` when the range stopped there on the beneficiary).
pub(super) type Stale = (usize, usize, Option<StateKey>);

/// Loads checked per chunk: some tens of microseconds of work, so that the threads end the
/// check close together.
const CHECK_CHUNK: usize = 1024;

/// The check of the later ranges against what the ranges before each changed, in chunks of
/// their loads that the tail's threads take once their own task is done.
pub(super) struct Check<'a> {
    later: &'a [Speculation],
    /// Where each later range stopped short, if it did.
    stops: &'a [Option<usize>],
    /// The changes of the later ranges, in order (the last may be missing: no check reads it).
    changes: &'a [SortedMap<Address, AccountDiff>],
    first: Written<'a>,
    /// (later range, its loads) per chunk.
    chunks: Vec<(usize, Range<usize>)>,
    next: AtomicUsize,
    /// Per later range, the first of its loads found changed (`usize::MAX`: none).
    changed: Vec<AtomicUsize>,
    /// Whether a changed load (or an error) was found: chunks are taken in block order, so
    /// every chunk before it is taken already, and none after it can matter.
    found: AtomicBool,
    error: Mutex<Option<StorageError>>,
}

impl<'a> Check<'a> {
    /// The check of `later`, whose stops are `stops`: up to the first that stopped short
    /// (the ranges after it run again anyway).
    pub(super) fn new(
        later: &'a [Speculation],
        changes: &'a [SortedMap<Address, AccountDiff>],
        first: Written<'a>,
        stops: &'a [Option<usize>],
    ) -> Self {
        let checked = stops.iter().position(Option::is_some).map_or(later.len(), |i| i + 1);
        let chunks = (later[..checked].iter().enumerate())
            .flat_map(|(index, s)| {
                let loads = s.loads.len();
                (0..loads)
                    .step_by(CHECK_CHUNK)
                    .map(move |from| (index, from..(from + CHECK_CHUNK).min(loads)))
            })
            .collect();
        let changed = later.iter().map(|_| AtomicUsize::new(usize::MAX)).collect();
        let (next, found) = (AtomicUsize::new(0), AtomicBool::new(false));
        let error = Mutex::default();
        Self { later, stops, changes, first, chunks, next, changed, found, error }
    }

    /// Whether nothing is left to check.
    pub(super) fn done(&self) -> bool {
        self.found.load(Ordering::Relaxed) || self.next.load(Ordering::Relaxed) >= self.chunks.len()
    }

    /// Checks chunks until none is left, reading the state before the block from `base`;
    /// sets `in_vain` once it finds a range stale (or fails).
    pub(super) fn work(&self, base: &impl StateReader, in_vain: &AtomicBool) {
        while !self.found.load(Ordering::Relaxed) {
            let next = self.next.fetch_add(1, Ordering::Relaxed);
            let Some((index, loads)) = self.chunks.get(next) else { return };
            let accepted = &self.changes[..*index];
            match self.later[*index].first_changed(self.first, base, accepted, loads.clone()) {
                Ok(None) => {}
                Ok(Some(at)) => {
                    self.changed[*index].fetch_min(at, Ordering::Relaxed);
                    self.found.store(true, Ordering::Relaxed);
                    in_vain.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    self.error.lock().expect("check lock poisoned").get_or_insert(e);
                    self.found.store(true, Ordering::Relaxed);
                    in_vain.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Once every chunk is checked: the first stale range, if any.
    pub(super) fn stale(self) -> Result<Option<Stale>, ExecutionError> {
        if let Some(error) = self.error.into_inner().expect("check lock poisoned") {
            return Err(error.into());
        }
        for (index, (speculation, changed)) in self.later.iter().zip(self.changed).enumerate() {
            let at = changed.into_inner();
            if at != usize::MAX {
                let key = match speculation.loads[at] {
                    Load::Account(address) => StateKey::Account(address),
                    Load::Slot(address, slot) => StateKey::Storage(address, slot),
                };
                return Ok(Some((index, speculation.tx_of_load(at), Some(key))));
            }
            if let Some(tx) = self.stops[index] {
                return Ok(Some((index, tx, None)));
            }
        }
        Ok(None)
    }
}

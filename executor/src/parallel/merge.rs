//! Merging the transactions' diffs into the block's, split into ranges of keys so that every
//! worker merges an equal share, even when one account (a token) holds most of the changes.

use crate::{
    key_order,
    state::{AccountDiff, StateDiff},
};
use alloy_primitives::{Address, U256};

/// What a change is ordered by: an account's own fields are `(address, None)`, each of its
/// slots `(address, Some(slot))`.
pub(crate) type Key = (Address, Option<U256>);

/// Keeps every `SAMPLE_EVERY`th key of the changes it is shown, to place range bounds.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    seen: usize,
    pub(crate) keys: Vec<Key>,
}

const SAMPLE_EVERY: usize = 16;

impl Sampler {
    pub(crate) fn add(&mut self, diff: &StateDiff) {
        for (address, change) in &diff.accounts {
            let skip = self.seen.next_multiple_of(SAMPLE_EVERY) - self.seen;
            let keys = std::iter::once(None).chain(change.storage.keys().copied().map(Some));
            self.keys.extend(keys.skip(skip).step_by(SAMPLE_EVERY).map(|slot| (*address, slot)));
            self.seen += 1 + change.storage.len();
        }
    }
}

/// Bounds that split the sampled keys into `shares` even ranges: range `i` runs from bound
/// `i` (included) to bound `i + 1` (excluded), `None` being unbounded. Without samples there
/// is one range.
pub(crate) fn bounds(mut samples: Vec<Key>, shares: usize) -> Vec<Option<Key>> {
    samples.sort_unstable();
    let inner = (1..shares).filter_map(|i| samples.get(i * samples.len() / shares).copied());
    std::iter::once(None).chain(inner.map(Some)).chain([None]).collect()
}

/// The merged changes of the keys in `[start, end)`, sorted by address. An account whose
/// keys straddle a bound appears in both ranges, each with its share of the slots; [`join`]
/// puts it back together.
pub(crate) fn merge_range(
    parts: &[&StateDiff],
    start: Option<Key>,
    end: Option<Key>,
) -> Vec<(Address, AccountDiff)> {
    let in_range = |key: &Key| start.is_none_or(|s| s <= *key) && end.is_none_or(|e| *key < e);
    let address_in_range = |a: &Address| {
        start.is_none_or(|s| s.0 <= *a)
            && end.is_none_or(|e| *a < e.0 || (*a == e.0 && e.1.is_some()))
    };
    let unsorted: Vec<(Address, &AccountDiff)> = (parts.iter())
        .flat_map(|d| d.accounts.iter())
        .filter(|(a, _)| address_in_range(a))
        .map(|(a, change)| (*a, change))
        .collect();
    // An account's changes stay in block order.
    let changes = key_order::sorted(&unsorted);
    let mut merged = Vec::new();
    for group in changes.chunk_by(|a, b| a.0 == b.0) {
        let address = group[0].0;
        let whole = in_range(&(address, None))
            && end.is_none_or(|e| e.0 != address)
            && start.is_none_or(|s| s.0 != address || s.1.is_none());
        let keep = |slot: &U256| whole || in_range(&(address, Some(*slot)));
        let change = merge_account(group.iter().map(|(_, c)| *c), keep);
        if in_range(&(address, None)) || !change.storage.is_empty() {
            merged.push((address, change));
        }
    }
    merged
}

/// The ranges' merged changes, in order, one account again where a bound split it.
pub(crate) fn join(ranges: Vec<Vec<(Address, AccountDiff)>>) -> Vec<(Address, AccountDiff)> {
    let mut ranges = ranges.into_iter();
    let mut joined = ranges.next().unwrap_or_default();
    for range in ranges {
        let mut range = range.into_iter().peekable();
        if let (Some((last, first)), Some((next, _))) = (joined.last_mut(), range.peek())
            && last == next
        {
            let (_, rest) = range.next().expect("peeked");
            // The later range holds the higher slots: this appends, without a sort.
            first.storage.extend(rest.storage.iter().map(|(k, v)| (*k, *v)));
        }
        joined.extend(range);
    }
    joined
}

/// One account's changes merged, as applying them in order would leave it: the last account
/// value, and the slots `keep` selects written since the last wipe (the last write wins).
/// One pass over the changes, oldest first: a large group (every transaction's fee to the
/// beneficiary, a token's slots) is read once rather than once for each question.
fn merge_account<'a>(
    changes: impl Iterator<Item = &'a AccountDiff>,
    keep: impl Fn(&U256) -> bool,
) -> AccountDiff {
    let mut merged = AccountDiff::default();
    let mut slots: Vec<(U256, U256)> = Vec::new();
    // Changes since the last wipe with slots kept: below two, no slot can repeat.
    let mut writers = 0;
    for change in changes {
        merged.account = change.account;
        if change.storage_cleared {
            merged.storage_cleared = true;
            slots.clear();
            writers = 0;
        }
        let before = slots.len();
        slots.extend(change.storage.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (*k, *v)));
        writers += usize::from(slots.len() > before);
    }
    if writers > 1 {
        // Stable: among writes of one slot the newest comes last, and its value stays.
        slots = key_order::sort(slots);
        slots.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = later.1;
            }
            same
        });
    }
    merged.storage = crate::sorted_map::SortedMap::from_sorted(slots);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Account;
    use proptest::prelude::*;

    /// A change of one of four accounts: a new balance, maybe a wipe, writes to a few slots.
    fn change() -> impl Strategy<Value = (u8, AccountDiff)> {
        let slots = proptest::collection::btree_map(0u8..6, 0u8..3, 0..4);
        (0u8..4, any::<Option<u8>>(), any::<bool>(), slots).prop_map(
            |(who, balance, wipe, slots)| {
                let account = balance.map(|b| Account::with_balance(U256::from(b)));
                let storage = slots.into_iter().map(|(k, v)| (U256::from(k), U256::from(v)));
                let diff =
                    AccountDiff { account, storage_cleared: wipe, storage: storage.collect() };
                (who.wrapping_mul(97), diff)
            },
        )
    }

    /// A bound at an account's own fields or one of its slots.
    fn bound() -> impl Strategy<Value = Option<Key>> {
        proptest::option::of((0u8..4, proptest::option::of(0u8..7))).prop_map(|b| {
            b.map(|(who, slot)| (Address::repeat_byte(who.wrapping_mul(97)), slot.map(U256::from)))
        })
    }

    proptest! {
        #[test]
        fn merging_by_ranges_equals_applying_in_order(
            parts in proptest::collection::vec(proptest::collection::vec(change(), 0..4), 0..12),
            inner in proptest::collection::vec(bound(), 0..4),
        ) {
            let diffs: Vec<StateDiff> = parts
                .into_iter()
                .map(|changes| {
                    let mut diff = StateDiff::default();
                    for (who, change) in changes {
                        diff.accounts.insert(Address::repeat_byte(who), change);
                    }
                    diff
                })
                .collect();
            let mut expected = StateDiff::default();
            for diff in &diffs {
                expected.merge(diff);
            }
            let refs: Vec<&StateDiff> = diffs.iter().collect();
            // Inner bounds in order; an unbounded one stands for the highest key.
            let mut inner: Vec<Key> = inner.into_iter().flatten().collect();
            inner.sort();
            let mut bounds: Vec<Option<Key>> = vec![None];
            bounds.extend(inner.into_iter().map(Some));
            bounds.push(None);
            let ranges = bounds.windows(2).map(|w| merge_range(&refs, w[0], w[1])).collect();
            let expected: Vec<(Address, AccountDiff)> =
                expected.accounts.iter().map(|(a, c)| (*a, c.clone())).collect();
            prop_assert_eq!(join(ranges), expected);
        }
    }

    #[test]
    fn bounds_split_the_samples_evenly() {
        let keys: Vec<Key> = (0..100u64).map(|i| (Address::ZERO, Some(U256::from(i)))).collect();
        let bounds = bounds(keys, 4);
        let slots: Vec<Option<u64>> =
            bounds.iter().map(|b| b.map(|(_, s)| s.unwrap().to::<u64>())).collect();
        assert_eq!(slots, vec![None, Some(25), Some(50), Some(75), None]);
        assert_eq!(super::bounds(Vec::new(), 3), vec![None; 2], "no sample: one range");
    }
}

//! Sorting a block's changes by address or by slot: on a block of 94,000 accounts a plain sort
//! by address cost as much as the rest of the block's diff, and on a token's 40,000 written
//! slots a plain sort by slot took most of the time the block diff took.

use alloy_primitives::{Address, U256};

/// Bits of a sort key that hold the entry's position; the other bits hold key bytes.
const POSITION_BITS: u32 = 24;
const POSITION: u64 = (1 << POSITION_BITS) - 1;
/// Key bytes that fit in a sort key beside the position.
const KEY_BYTES: usize = 8 - POSITION_BITS as usize / 8;
/// Below this many entries a plain sort in place is as fast, and needs no positions.
const FEW: usize = 32;

/// A key ordered as its big-endian bytes, which it hands out as four 64-bit words, most
/// significant first (a shorter key ends in zeros, which never vary).
pub(crate) trait Words: Ord + Copy {
    fn words(&self) -> [u64; 4];
}

impl Words for Address {
    fn words(&self) -> [u64; 4] {
        let word = |i: usize| u64::from_be_bytes(self.0[i..i + 8].try_into().expect("8 bytes"));
        let last = u32::from_be_bytes(self.0[16..].try_into().expect("4 bytes"));
        [word(0), word(8), u64::from(last) << 32, 0]
    }
}

impl Words for U256 {
    fn words(&self) -> [u64; 4] {
        let [a, b, c, d] = *self.as_limbs();
        [d, c, b, a]
    }
}

/// Copies of `entries` sorted by key, equal keys in their input order.
///
/// The entries are sorted as positions (see [`order`]) and then copied in that order in one
/// pass that does nothing else: a pass that also built each entry's result waited on every
/// random read in turn.
pub(crate) fn sorted<K: Words, T: Copy>(entries: &[(K, T)]) -> Vec<(K, T)> {
    if entries.len() < FEW {
        return sort(entries.to_vec());
    }
    order(entries).into_iter().map(|i| entries[i as usize]).collect()
}

/// [`sorted`] for values that move rather than copy; a few entries are sorted in place.
pub(crate) fn sort<K: Words, T>(mut entries: Vec<(K, T)>) -> Vec<(K, T)> {
    if entries.len() < FEW {
        entries.sort_by_key(|(key, _)| *key);
        return entries;
    }
    let order = order(&entries);
    let mut entries: Vec<Option<(K, T)>> = entries.into_iter().map(Some).collect();
    order.into_iter().map(|i| entries[i as usize].take().expect("each position once")).collect()
}

/// The positions of `entries` in ascending order of key, equal keys in input order.
///
/// Sorts one integer per entry: the first few key bytes that vary among the entries, above
/// the entry's position. Bytes that every key shares decide nothing, and generated addresses
/// and small slot numbers share most of theirs. The rare runs of entries that agree on the
/// bytes in the integer are then sorted by their whole key. Sorting the entries themselves
/// moved large values, and sorting keys of three integers each cost twice as long.
fn order<K: Words, T>(entries: &[(K, T)]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    if entries.len() > POSITION as usize {
        order.sort_by_key(|&i| entries[i as usize].0);
        return order;
    }
    let (picked, count) = varying_bytes(entries.iter().map(|(key, _)| key));
    if count == 0 {
        return order; // all equal
    }
    let integer = |key: &K| {
        let words = key.words();
        let byte = |i: &usize| (words[i / 8] >> (56 - 8 * (i % 8))) & 0xff;
        let bytes = picked[..count].iter().fold(0u64, |bytes, i| bytes << 8 | byte(i));
        bytes << (8 * (8 - count))
    };
    let mut integers: Vec<u64> = (entries.iter().enumerate())
        .map(|(i, (key, _))| integer(key) & !POSITION | i as u64)
        .collect();
    integers.sort_unstable();
    let mut start = 0;
    for run in integers.chunk_by(|a, b| a & !POSITION == b & !POSITION) {
        let positions = &mut order[start..start + run.len()];
        for (position, integer) in positions.iter_mut().zip(run) {
            *position = (integer & POSITION) as u32;
        }
        if run.len() > 1 {
            // Stable, and the run's positions are in increasing order.
            positions.sort_by_key(|&i| entries[i as usize].0);
        }
        start += run.len();
    }
    order
}

/// The first [`KEY_BYTES`] byte positions (at most) at which the keys differ, and how many
/// there are.
fn varying_bytes<'a, K: Words + 'a>(
    mut keys: impl Iterator<Item = &'a K>,
) -> ([usize; KEY_BYTES], usize) {
    let mut picked = [0; KEY_BYTES];
    let Some(first) = keys.next().map(K::words) else { return (picked, 0) };
    // Whole words compare faster than bytes one by one.
    let differing = keys.fold([0; 4], |mut differing, key| {
        for ((bits, word), first) in differing.iter_mut().zip(key.words()).zip(first) {
            *bits |= word ^ first;
        }
        differing
    });
    let bytes = differing.into_iter().flat_map(u64::to_be_bytes);
    let mut count = 0;
    for (i, _) in bytes.enumerate().filter(|(_, byte)| *byte != 0).take(KEY_BYTES) {
        picked[count] = i;
        count += 1;
    }
    (picked, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An address from a few chosen bytes: most positions shared, as in generated blocks,
    /// so that keys tie on their leading bytes and the whole-address runs get exercised.
    fn address() -> impl Strategy<Value = Address> {
        proptest::collection::vec((0usize..20, 0u8..4), 0..7).prop_map(|bytes| {
            let mut address = Address::repeat_byte(0x51);
            for (i, byte) in bytes {
                address.0[i] = byte;
            }
            address
        })
    }

    /// A slot from a few chosen bytes, in any of the 32.
    fn slot() -> impl Strategy<Value = U256> {
        proptest::collection::vec((0usize..32, 0u8..4), 0..7).prop_map(|bytes| {
            let mut slot = [0u8; 32];
            for (i, byte) in bytes {
                slot[i] = byte;
            }
            U256::from_be_bytes(slot)
        })
    }

    fn check_sorts<K: Words + std::fmt::Debug>(keys: Vec<K>) -> Result<(), TestCaseError> {
        let entries: Vec<(K, usize)> = keys.into_iter().enumerate().map(|(i, k)| (k, i)).collect();
        let mut expected = entries.clone();
        expected.sort_by_key(|(key, _)| *key);
        prop_assert_eq!(sorted(&entries), expected.clone());
        prop_assert_eq!(sort(entries), expected);
        Ok(())
    }

    proptest! {
        #[test]
        fn sorting_by_address_equals_a_stable_sort(
            addresses in proptest::collection::vec(address(), 0..160),
        ) {
            check_sorts(addresses)?;
        }

        #[test]
        fn sorting_by_slot_equals_a_stable_sort(
            slots in proptest::collection::vec(slot(), 0..160),
        ) {
            check_sorts(slots)?;
        }
    }

    #[test]
    fn words_order_as_the_keys_do() {
        let mut a = Address::ZERO;
        a.0[19] = 1;
        let mut b = Address::ZERO;
        b.0[0] = 1;
        assert!(a.words() < b.words() && a < b);
        assert!(U256::from(1).words() < (U256::from(1) << 200usize).words());
        assert_eq!(U256::from(0x0102).words(), [0, 0, 0, 0x0102]);
    }

    #[test]
    fn key_bytes_skip_what_every_key_shares() {
        let addresses = [Address::repeat_byte(7), Address::repeat_byte(7)];
        assert_eq!(varying_bytes(addresses.iter()).1, 0, "equal addresses: nothing varies");
        let mut a = Address::repeat_byte(7);
        let mut b = a;
        (a.0[3], b.0[3], b.0[17]) = (1, 2, 9);
        let (picked, count) = varying_bytes([a, b, Address::repeat_byte(7)].iter());
        assert_eq!(&picked[..count], &[3, 17]);
        let slots = [U256::from(5), U256::from(6) << 128usize, U256::from(7)];
        let (picked, count) = varying_bytes(slots.iter());
        assert_eq!(&picked[..count], &[15, 31], "the low byte of each half");
    }
}

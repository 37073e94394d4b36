//! Sorting a block's changes by address: on a block of 94,000 accounts a plain sort cost as
//! much as the rest of the block's diff.

use alloy_primitives::Address;

/// Bits of a sort key that hold the entry's position; the other bits hold address bytes.
const POSITION_BITS: u32 = 24;
const POSITION: u64 = (1 << POSITION_BITS) - 1;
/// Address bytes that fit in a sort key beside the position.
const KEY_BYTES: usize = 8 - POSITION_BITS as usize / 8;

/// Copies of `entries` sorted by address, equal addresses in their input order.
///
/// The entries are sorted as positions (see [`address_order`]) and then copied in that order
/// in one pass that does nothing else: a pass that also built each entry's result waited on
/// every random read in turn.
pub(crate) fn sorted_by_address<T: Copy>(entries: &[(Address, T)]) -> Vec<(Address, T)> {
    address_order(entries).into_iter().map(|i| entries[i as usize]).collect()
}

/// [`sorted_by_address`] for values that move rather than copy.
pub(crate) fn sort_by_address<T>(entries: Vec<(Address, T)>) -> Vec<(Address, T)> {
    let order = address_order(&entries);
    let mut entries: Vec<Option<(Address, T)>> = entries.into_iter().map(Some).collect();
    order.into_iter().map(|i| entries[i as usize].take().expect("each position once")).collect()
}

/// The positions of `entries` in ascending order of address, equal addresses in input order.
///
/// Sorts one integer per entry: the first few address bytes that vary among the entries,
/// above the entry's position. Bytes that every address shares decide nothing, and generated
/// addresses share most of theirs. The rare runs of entries that agree on the bytes in the key
/// are then sorted by their whole address. Sorting the entries themselves moved large values,
/// and sorting keys of three integers each cost twice as long.
pub(crate) fn address_order<T>(entries: &[(Address, T)]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    if entries.len() > POSITION as usize {
        order.sort_by_key(|&i| entries[i as usize].0);
        return order;
    }
    let (picked, count) = varying_bytes(entries.iter().map(|(address, _)| address));
    if count == 0 {
        return order; // all equal
    }
    let key = |a: &Address| {
        let word = picked[..count].iter().fold(0u64, |word, i| word << 8 | u64::from(a[*i]));
        word << (8 * (8 - count))
    };
    let mut keys: Vec<u64> =
        (entries.iter().enumerate()).map(|(i, (a, _))| key(a) & !POSITION | i as u64).collect();
    keys.sort_unstable();
    let mut start = 0;
    for run in keys.chunk_by(|a, b| a & !POSITION == b & !POSITION) {
        let positions = &mut order[start..start + run.len()];
        for (position, key) in positions.iter_mut().zip(run) {
            *position = (key & POSITION) as u32;
        }
        if run.len() > 1 {
            // Stable, and the run's positions are in increasing order.
            positions.sort_by_key(|&i| entries[i as usize].0);
        }
        start += run.len();
    }
    order
}

/// The first [`KEY_BYTES`] byte positions (at most) at which the addresses differ, and how
/// many there are.
fn varying_bytes<'a>(
    mut addresses: impl Iterator<Item = &'a Address>,
) -> ([usize; KEY_BYTES], usize) {
    // As two integers: whole words compare faster than bytes one by one.
    let words = |a: &Address| {
        let (high, low) = a.0.split_at(16);
        (
            u128::from_be_bytes(high.try_into().expect("16 bytes")),
            u32::from_be_bytes(low.try_into().expect("4 bytes")),
        )
    };
    let mut picked = [0; KEY_BYTES];
    let Some(first) = addresses.next().map(words) else { return (picked, 0) };
    let (high, low) = addresses.fold((0, 0), |(high, low), address| {
        let (h, l) = words(address);
        (high | (h ^ first.0), low | (l ^ first.1))
    });
    let varying = high.to_be_bytes().into_iter().chain(low.to_be_bytes());
    let mut count = 0;
    for (i, _) in varying.enumerate().filter(|(_, byte)| *byte != 0).take(KEY_BYTES) {
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

    proptest! {
        #[test]
        fn sorting_by_address_equals_a_stable_sort(
            addresses in proptest::collection::vec(address(), 0..64),
        ) {
            let entries: Vec<(Address, usize)> =
                addresses.into_iter().enumerate().map(|(i, a)| (a, i)).collect();
            let mut expected = entries.clone();
            expected.sort_by_key(|(address, _)| *address);
            prop_assert_eq!(sorted_by_address(&entries), expected.clone());
            prop_assert_eq!(sort_by_address(entries), expected);
        }
    }

    #[test]
    fn key_bytes_skip_what_every_address_shares() {
        let addresses = [Address::repeat_byte(7), Address::repeat_byte(7)];
        assert_eq!(varying_bytes(addresses.iter()).1, 0, "equal addresses: nothing varies");
        let mut a = Address::repeat_byte(7);
        let mut b = a;
        (a.0[3], b.0[3], b.0[17]) = (1, 2, 9);
        let (picked, count) = varying_bytes([a, b, Address::repeat_byte(7)].iter());
        assert_eq!(&picked[..count], &[3, 17]);
    }
}

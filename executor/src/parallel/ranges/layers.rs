//! The block's account changes from the ranges' own: merged in block order, the
//! beneficiary as the fees leave it, the pre-block calls' changes underneath.

use super::Beneficiary;
use crate::{sorted_map::SortedMap, state::AccountDiff};
use alloy_primitives::Address;
use std::{
    borrow::Cow,
    iter::Peekable,
    sync::atomic::{AtomicBool, Ordering},
};

/// The block's account changes: the pre-block calls', then every range's in block order (a
/// later change of an account goes on top of an earlier one), in one pass over them all. It
/// runs beside the checks, which read the middle ranges' changes: those are copied from in
/// place, while the first range's and the last's, which no check reads, are moved. `None`
/// if `in_vain` was set before the merge was done.
pub(super) fn merge(
    pre_block: &SortedMap<Address, AccountDiff>,
    first: SortedMap<Address, AccountDiff>,
    middle: &[SortedMap<Address, AccountDiff>],
    last: Option<SortedMap<Address, AccountDiff>>,
    in_vain: &AtomicBool,
) -> Option<SortedMap<Address, AccountDiff>> {
    let mut layers: Vec<Layer<'_>> =
        std::iter::once(Layer::Borrowed(pre_block.into_iter().peekable()))
            .chain([Layer::Owned(first.into_iter().peekable())])
            .chain(middle.iter().map(|layer| Layer::Borrowed(layer.into_iter().peekable())))
            .chain(last.map(|layer| Layer::Owned(layer.into_iter().peekable())))
            .collect();
    let mut merged = Vec::with_capacity(layers.iter().map(Layer::len).sum());
    loop {
        // Often enough to stop within microseconds, rarely enough to cost nothing.
        if merged.len() % 1024 == 0 && in_vain.load(Ordering::Relaxed) {
            return None;
        }
        let Some(address) = layers.iter_mut().filter_map(Layer::peek).min() else { break };
        let mut change: Option<AccountDiff> = None;
        for layer in &mut layers {
            if let Some(on_top) = layer.next_if(address) {
                match &mut change {
                    Some(change) => change.merge(&on_top),
                    None => change = Some(on_top.into_owned()),
                }
            }
        }
        merged.push((address, change.expect("some layer holds the address")));
    }
    Some(SortedMap::from_sorted(merged))
}

/// A layer of changes as [`merge`] reads it, address by address.
enum Layer<'a> {
    Owned(Peekable<std::vec::IntoIter<(Address, AccountDiff)>>),
    Borrowed(Peekable<<&'a SortedMap<Address, AccountDiff> as IntoIterator>::IntoIter>),
}

impl<'a> Layer<'a> {
    fn len(&self) -> usize {
        match self {
            Self::Owned(layer) => layer.len(),
            Self::Borrowed(layer) => layer.len(),
        }
    }

    fn peek(&mut self) -> Option<Address> {
        match self {
            Self::Owned(layer) => layer.peek().map(|(address, _)| *address),
            Self::Borrowed(layer) => layer.peek().map(|(address, _)| **address),
        }
    }

    /// The layer's change of `address`, if that is its next.
    fn next_if(&mut self, address: Address) -> Option<Cow<'a, AccountDiff>> {
        match self {
            Self::Owned(layer) => layer.next_if(|(a, _)| *a == address).map(|(_, c)| Cow::Owned(c)),
            Self::Borrowed(layer) => {
                layer.next_if(|(a, _)| **a == address).map(|(_, c)| Cow::Borrowed(c))
            }
        }
    }
}

/// `accounts` with the beneficiary as the fees leave it, where a transaction changed it.
pub(super) fn with_beneficiary(
    mut accounts: SortedMap<Address, AccountDiff>,
    beneficiary: Beneficiary,
) -> SortedMap<Address, AccountDiff> {
    if beneficiary.changed {
        match accounts.get_mut(&beneficiary.address) {
            Some(change) => change.account = beneficiary.account,
            None => {
                let change = AccountDiff { account: beneficiary.account, ..AccountDiff::default() };
                accounts.insert(beneficiary.address, change);
            }
        }
    }
    accounts
}

/// The pre-block calls' few changes under `later`, a whole block's.
pub(super) fn join(
    earlier: &SortedMap<Address, AccountDiff>,
    mut later: SortedMap<Address, AccountDiff>,
) -> SortedMap<Address, AccountDiff> {
    for (address, change) in earlier {
        let mut joined = change.clone();
        match later.get_mut(address) {
            Some(on_top) => {
                joined.merge(on_top);
                *on_top = joined;
            }
            None => {
                later.insert(*address, joined);
            }
        }
    }
    later
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Account;
    use alloy_primitives::U256;

    fn account(balance: u64) -> Option<Account> {
        Some(Account::with_balance(U256::from(balance)))
    }

    fn change(balance: u64, cleared: bool, slots: &[(u64, u64)]) -> AccountDiff {
        let storage = slots.iter().map(|&(k, v)| (U256::from(k), U256::from(v))).collect();
        AccountDiff { account: account(balance), storage_cleared: cleared, storage }
    }

    fn at(byte: u8) -> Address {
        Address::repeat_byte(byte)
    }

    #[test]
    fn merge_puts_each_layer_on_the_ones_before() {
        let pre = SortedMap::from([(at(1), change(1, false, &[(1, 1), (2, 2)]))]);
        let first =
            SortedMap::from([(at(1), change(2, false, &[(2, 3)])), (at(3), change(3, false, &[]))]);
        let middle =
            SortedMap::from([(at(1), change(4, true, &[(5, 5)])), (at(2), change(6, false, &[]))]);
        let last =
            SortedMap::from([(at(2), change(7, false, &[(8, 8)])), (at(4), change(1, false, &[]))]);
        let go = AtomicBool::new(false);
        let merged =
            merge(&pre, first.clone(), std::slice::from_ref(&middle), Some(last.clone()), &go);
        let expected = SortedMap::from([
            // The wipe in the middle layer drops the slots before it.
            (at(1), change(4, true, &[(5, 5)])),
            (at(2), change(7, false, &[(8, 8)])),
            (at(3), change(3, false, &[])),
            (at(4), change(1, false, &[])),
        ]);
        assert_eq!(merged.unwrap(), expected);
        let without_wipe = merge(&pre, first.clone(), &[], None, &go).unwrap();
        assert_eq!(without_wipe[&at(1)], change(2, false, &[(1, 1), (2, 3)]));
        // Whether a layer is moved or copied from, the merge is the same.
        let borrowed = merge(&pre, SortedMap::new(), &[first, middle, last], None, &go);
        assert_eq!(borrowed.unwrap(), expected);
    }

    #[test]
    fn a_merge_in_vain_stops() {
        let layer: SortedMap<_, _> = (0..=255).map(|b| (at(b), change(1, false, &[]))).collect();
        let in_vain = AtomicBool::new(true);
        assert!(merge(&SortedMap::new(), layer, &[], None, &in_vain).is_none());
    }

    #[test]
    fn the_beneficiary_is_set_only_when_a_transaction_changed_it() {
        let accounts = SortedMap::from([(at(1), change(1, false, &[(1, 1)]))]);
        let beneficiary = |address, changed| Beneficiary { address, account: account(9), changed };
        let unchanged = with_beneficiary(accounts.clone(), beneficiary(at(1), false));
        assert_eq!(unchanged, accounts);
        let patched = with_beneficiary(accounts.clone(), beneficiary(at(1), true));
        assert_eq!(patched[&at(1)], change(9, false, &[(1, 1)]));
        let added = with_beneficiary(accounts, beneficiary(at(2), true));
        assert_eq!(added[&at(2)], AccountDiff { account: account(9), ..AccountDiff::default() });
    }

    #[test]
    fn join_puts_the_block_on_the_pre_block_calls() {
        let pre =
            SortedMap::from([(at(1), change(1, false, &[(1, 1)])), (at(5), change(5, false, &[]))]);
        let block =
            SortedMap::from([(at(1), change(2, false, &[(2, 2)])), (at(3), change(3, false, &[]))]);
        let expected = SortedMap::from([
            (at(1), change(2, false, &[(1, 1), (2, 2)])),
            (at(3), change(3, false, &[])),
            (at(5), change(5, false, &[])),
        ]);
        assert_eq!(join(&pre, block), expected);
    }
}

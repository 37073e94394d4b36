//! What a block's transactions tell the scheduler before and while they run: which may
//! take long, whose nonces chain, and which calls to one function turn out to conflict.

use super::mv_memory::TxIdx;
use crate::block::Block;
use alloy_primitives::{
    Address, TxKind,
    map::{AddressMap, Entry, HashMap},
};
use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

/// How many transactions of each kind [`early_candidates`] picks.
const EARLY_PER_KEY: usize = 2;

/// Transactions past the block's first eighth that may take far longer than their position
/// leaves time for: the longest calldata and the highest gas limits. Proof verifications
/// and rollup batches rank there, and take milliseconds (pairings, KZG) for modest gas; one
/// that starts late in block order runs alone while the other workers idle (measured: a
/// 4.8 ms transaction last in a 8.8 ms block, a 6 ms one at 23 of 186). Only those above
/// the block's mean count, so a block of alike transactions keeps its order. Latest first,
/// as those would start last.
pub(super) fn early_candidates(block: &Block) -> Vec<TxIdx> {
    let txs = &block.transactions;
    let late: Vec<TxIdx> =
        (txs.len() / 8..txs.len()).filter(|&tx| !txs[tx].data.is_empty()).collect();
    let top = |key: fn(&revm::context::TxEnv) -> u64| {
        let mean = txs.iter().map(key).fold(0u64, u64::saturating_add) / txs.len().max(1) as u64;
        let mut ranked: Vec<TxIdx> =
            late.iter().copied().filter(|&tx| key(&txs[tx]) > mean).collect();
        ranked.sort_by_key(|&tx| std::cmp::Reverse(key(&txs[tx])));
        ranked.truncate(EARLY_PER_KEY);
        ranked
    };
    let mut early = top(|tx| tx.data.len() as u64);
    early.extend(top(|tx| tx.gas_limit));
    early.sort_unstable_by(|a, b| b.cmp(a));
    early.dedup();
    early
}

/// How many of `block`'s transactions the sender of more than half of them signs, if one
/// does: Boyer and Moore's majority vote, two passes without hashing. Blocks one sender
/// dominates run sequentially, and hashing every sender ([`Senders::of`]) only to learn that
/// cost about 2% of such a block (12520364: 660 transactions, 1.4 ms).
pub(super) fn majority_sender(block: &Block) -> Option<usize> {
    let callers = || block.transactions.iter().map(|tx| tx.caller);
    let (mut candidate, mut lead) = (None, 0usize);
    for caller in callers() {
        if lead == 0 {
            candidate = Some(caller);
        }
        lead = if candidate == Some(caller) { lead + 1 } else { lead - 1 };
    }
    let candidate = candidate?;
    let count = callers().filter(|caller| *caller == candidate).count();
    (2 * count > block.transactions.len()).then_some(count)
}

/// Who signs a block's transactions, as far as scheduling cares.
pub(super) struct Senders {
    /// How many transactions the most frequent sender signs.
    pub(super) top_count: usize,
    /// Per transaction, the sender's previous transaction in the block: the one whose nonce
    /// it follows, so it cannot run before that one has.
    pub(super) previous: Vec<Option<TxIdx>>,
}

impl Senders {
    pub(super) fn of(block: &Block) -> Self {
        // Per sender: transactions so far, and the latest.
        let mut seen: AddressMap<(usize, TxIdx)> =
            AddressMap::with_capacity_and_hasher(block.transactions.len(), Default::default());
        let previous = (block.transactions.iter().enumerate())
            .map(|(tx, env)| match seen.entry(env.caller) {
                Entry::Occupied(mut entry) => {
                    let (count, latest) = entry.get_mut();
                    *count += 1;
                    Some(std::mem::replace(latest, tx))
                }
                Entry::Vacant(entry) => {
                    entry.insert((1, tx));
                    None
                }
            })
            .collect();
        let top_count = seen.values().map(|(count, _)| *count).max().unwrap_or(0);
        Self { top_count, previous }
    }
}

/// Calls of one function of one contract (its address and selector). Runs of them often
/// conflict (a sale's counter, a pool's reserves) and as often do not (token transfers
/// between different holders), so a function counts as a chain only once two of its calls
/// were seen to conflict; from then on its calls wait for the previous one to execute
/// instead of executing in vain. Block 10760440 holds three runs of up to ten such calls.
///
/// Payments (calldata too short for a selector) run a contract's fallback, or no code at
/// all: block 6137495 pays one contract's fallback thirty times, and block 13217637 one
/// exchange address 934 times. They chain the same way, but only on a conflict over the
/// payee's storage, which proves they ran code. Such chains are rare, so payments are not
/// hashed up front: each knows its payee, and a chained payment finds the previous payment
/// by a scan back (hashing the 987 payments of block 13217637 cost it about 1%).
#[derive(Debug)]
pub(super) struct Calls {
    /// Per transaction, the function it calls (an index into `chained`).
    function: Vec<Option<u32>>,
    /// Per transaction, the previous call of its function.
    previous: Vec<Option<TxIdx>>,
    /// Per function, whether two of its calls conflicted.
    chained: Vec<AtomicBool>,
    /// Per transaction, whom it pays, when it is a payment.
    payee: Vec<Option<Address>>,
    /// Payees whose payments proved a chain; `any_payee` says whether there are any.
    chained_payees: Mutex<Vec<Address>>,
    any_payee: AtomicBool,
}

impl Calls {
    pub(super) fn of(block: &Block) -> Self {
        // Per function: its index, and its latest call so far.
        let mut seen: HashMap<(Address, [u8; 4]), (u32, TxIdx)> =
            HashMap::with_capacity_and_hasher(block.transactions.len(), Default::default());
        // Filled in the same walk over the transactions, which sit far apart in memory.
        let mut payee = Vec::with_capacity(block.transactions.len());
        let (function, previous) = (block.transactions.iter().enumerate())
            .map(|(tx, env)| {
                payee.push(env.kind.to().copied().filter(|_| env.data.len() < 4));
                let TxKind::Call(to) = env.kind else { return (None, None) };
                let Some(selector) = env.data.get(..4) else { return (None, None) };
                let key = (to, selector.try_into().expect("four bytes"));
                let functions = u32::try_from(seen.len()).expect("fewer than 2^32 functions");
                match seen.entry(key) {
                    Entry::Occupied(mut entry) => {
                        let (function, latest) = entry.get_mut();
                        (Some(*function), Some(std::mem::replace(latest, tx)))
                    }
                    Entry::Vacant(entry) => {
                        entry.insert((functions, tx));
                        (Some(functions), None)
                    }
                }
            })
            .unzip();
        let chained = (0..seen.len()).map(|_| AtomicBool::new(false)).collect();
        let (chained_payees, any_payee) = (Mutex::default(), AtomicBool::new(false));
        Self { function, previous, chained, payee, chained_payees, any_payee }
    }

    /// Notes that `tx` read what `writer` wrote while it was stale or about to change (in
    /// the storage of `storage_of`, when known): when both call one function, or both pay
    /// the account whose storage it is, that function or payee is a chain.
    pub(super) fn conflict(&self, tx: TxIdx, writer: TxIdx, storage_of: Option<Address>) {
        if let (Some(a), Some(b)) = (self.function[tx], self.function[writer])
            && a == b
        {
            self.chained[a as usize].store(true, Ordering::Relaxed);
        }
        if let Some(payee) = self.payee[tx]
            && self.payee[writer] == Some(payee)
            && storage_of == Some(payee)
        {
            let mut chained = self.chained_payees.lock().expect("payees lock poisoned");
            if !chained.contains(&payee) {
                chained.push(payee);
            }
            self.any_payee.store(true, Ordering::Relaxed);
        }
    }

    /// The previous call `tx` should wait for: its function's or its payee's, once that is
    /// a chain.
    pub(super) fn wait_for(&self, tx: TxIdx) -> Option<TxIdx> {
        if let Some(function) = self.function[tx] {
            return self.chained[function as usize]
                .load(Ordering::Relaxed)
                .then_some(self.previous[tx])?;
        }
        let payee = self.payee[tx]?;
        if !self.any_payee.load(Ordering::Relaxed)
            || !self.chained_payees.lock().expect("payees lock poisoned").contains(&payee)
        {
            return None;
        }
        (0..tx).rev().find(|&earlier| self.payee[earlier] == Some(payee))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::Bytes;
    use revm::context::TxEnv;

    fn block_of(txs: impl IntoIterator<Item = (u64, usize)>) -> Block {
        let transactions = txs
            .into_iter()
            .map(|(gas_limit, data)| TxEnv {
                gas_limit,
                data: Bytes::from(vec![1; data]),
                ..Default::default()
            })
            .collect();
        Block { transactions, ..Block::default() }
    }

    #[test]
    fn the_majority_sender_is_found_only_past_half() {
        let block = |senders: &[u8]| Block {
            transactions: (senders.iter())
                .map(|&s| TxEnv { caller: Address::repeat_byte(s), ..Default::default() })
                .collect(),
            ..Block::default()
        };
        assert_eq!(majority_sender(&block(&[])), None);
        assert_eq!(majority_sender(&block(&[7])), Some(1));
        // The vote's last candidate is 3, which is no majority: the count decides.
        assert_eq!(majority_sender(&block(&[1, 1, 2, 2, 3])), None);
        assert_eq!(majority_sender(&block(&[1, 2, 1, 2])), None, "half is not more than half");
        assert_eq!(majority_sender(&block(&[2, 1, 2, 3, 2, 4, 2])), Some(4));
        assert_eq!(majority_sender(&block(&[1, 2, 3, 9, 9, 9, 9])), Some(4));
    }

    #[test]
    fn early_candidates_are_the_late_outliers_latest_first() {
        let alike = block_of(vec![(100_000, 68); 40]);
        assert!(early_candidates(&alike).is_empty(), "alike transactions keep block order");
        let mut txs = vec![(100_000, 68); 40];
        txs[3] = (5_000_000, 9_000); // in the first eighth: starts soon anyway
        txs[30] = (400_000, 68);
        txs[35] = (150_000, 2_000);
        txs[39] = (300_000, 4_000);
        txs[38] = (50_000, 0); // no calldata: a plain transfer is never heavy
        assert_eq!(early_candidates(&block_of(txs)), vec![39, 35, 30]);
    }

    #[test]
    fn calls_of_a_function_wait_for_each_other_once_two_conflicted() {
        let call = |to: u8, selector: u8| TxEnv {
            kind: TxKind::Call(Address::repeat_byte(to)),
            data: Bytes::from(vec![selector; 36]),
            ..Default::default()
        };
        let transfer = TxEnv { kind: TxKind::Call(Address::repeat_byte(1)), ..Default::default() };
        // Function (1, a) at 0, 2 and 5; (1, b) at 1 and 4; (2, a) at 3; value sent to 1
        // without calldata (its fallback) at 6, 7 and 8, and to 3 at 9.
        let txs = vec![call(1, 0xa), call(1, 0xb), call(1, 0xa), call(2, 0xa), call(1, 0xb)];
        let mut transactions = txs;
        let elsewhere = TxEnv { kind: TxKind::Call(Address::repeat_byte(3)), ..Default::default() };
        transactions.extend([call(1, 0xa), transfer.clone(), transfer.clone(), transfer]);
        transactions.push(elsewhere);
        let calls = Calls::of(&Block { transactions, ..Block::default() });
        assert!((0..10).all(|tx| calls.wait_for(tx).is_none()), "no chain before a conflict");
        // Conflicts across functions, the fallback included, prove nothing.
        calls.conflict(3, 2, None);
        calls.conflict(4, 2, None);
        calls.conflict(6, 5, None);
        assert!((0..10).all(|tx| calls.wait_for(tx).is_none()));
        calls.conflict(2, 0, None);
        assert_eq!(calls.wait_for(5), Some(2), "a call waits for its function's previous one");
        assert_eq!(calls.wait_for(2), Some(0));
        assert_eq!(calls.wait_for(0), None, "the first call has none to wait for");
        assert_eq!(calls.wait_for(4), None, "another function of that contract is not a chain");
        assert_eq!(calls.wait_for(3), None, "nor is that function on another contract");
        assert_eq!(calls.wait_for(8), None, "nor is the fallback");
        // Payments conflicting elsewhere may be plain transfers to an account without code.
        calls.conflict(8, 6, None);
        calls.conflict(8, 6, Some(Address::repeat_byte(2)));
        assert_eq!(calls.wait_for(8), None, "payments chain only over the payee's storage");
        calls.conflict(8, 6, Some(Address::repeat_byte(1)));
        assert_eq!(calls.wait_for(8), Some(7), "payments to one fallback chain like calls");
        assert_eq!(calls.wait_for(7), Some(6));
        assert_eq!(calls.wait_for(6), None, "the first payment has none to wait for");
        assert_eq!(calls.wait_for(9), None, "nor do payments to another account");
    }
}

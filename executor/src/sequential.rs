//! The sequential reference path: the block's transactions one after another on revm.

use crate::{
    block::Block,
    block_state::BlockState,
    effects,
    error::ExecutionError,
    outcome::{BlockOutcome, ExecutionStats, TxOutcome},
    sorted_map::SortedMap,
    state::{AccountDiff, StateDiff},
    storage::{StateReader, Storage},
};
use alloy_primitives::{Address, U256};
use revm::{
    Context, ExecuteEvm, MainBuilder, MainContext,
    context::result::{EVMError, ExecutionResult},
};

/// Executes `block` on the last committed state of `storage`, in order.
///
/// An invalid transaction is recorded as such and changes nothing; the block goes on with
/// the next one. Only a storage failure or an invalid header stops the block.
pub fn execute<S: Storage + ?Sized>(
    storage: &S,
    block: &Block,
) -> Result<BlockOutcome, ExecutionError> {
    execute_on_reader(storage.reader()?, block)
}

/// [`execute`] on a reader the caller already holds.
pub fn execute_on_reader<R: StateReader>(
    reader: R,
    block: &Block,
) -> Result<BlockOutcome, ExecutionError> {
    let parent = block.parent_hash.map(|hash| (block.number.saturating_sub(1), hash));
    let mut state = BlockState::with_capacity(reader, parent, block.transactions.len());
    let pre_block = effects::pre_block(block, &mut state)?;

    let mut evm = Context::mainnet()
        .with_db(&mut state)
        .with_block(block.block_env())
        .with_cfg(block.cfg_env())
        .build_mainnet();
    let mut txs = Vec::with_capacity(block.transactions.len());
    let mut cumulative_gas = 0u64;
    for (index, tx) in block.transactions.iter().enumerate() {
        match evm.transact(tx.clone()) {
            Ok(output) => {
                let changes =
                    evm.ctx.journaled_state.database.commit_evm_state(output.state, block.spec);
                cumulative_gas += output.result.tx_gas_used();
                txs.push(executed(tx.tx_type, output.result, cumulative_gas, changes));
            }
            Err(EVMError::Transaction(invalid)) => {
                txs.push(TxOutcome::invalid(invalid, tx.tx_type, cumulative_gas));
            }
            Err(e) => return Err(ExecutionError::from_evm(e, format_args!("tx {index}"))),
        }
    }
    drop(evm);

    let post_block = effects::post_block(block, &mut state)?;
    let mut diff = StateDiff { accounts: state.changes(), ..StateDiff::default() };
    add_codes_and_hashes(&mut diff, &parts(&pre_block, &txs, &post_block));
    let stats = ExecutionStats::sequential(block.transactions.len());
    Ok(assemble(pre_block, txs, post_block, diff, stats))
}

/// The outcome of one executed transaction.
pub(crate) fn executed(
    tx_type: u8,
    result: ExecutionResult,
    cumulative_gas_used: u64,
    changes: StateDiff,
) -> TxOutcome {
    TxOutcome { result: Ok(result), tx_type, cumulative_gas_used, changes }
}

/// The parts of a block's execution with `diff`, their merged changes, as its outcome.
pub(crate) fn assemble(
    pre_block: StateDiff,
    txs: Vec<TxOutcome>,
    post_block: StateDiff,
    diff: StateDiff,
    stats: ExecutionStats,
) -> BlockOutcome {
    let gas_used = txs.iter().map(TxOutcome::gas_used).sum();
    BlockOutcome { txs, pre_block, post_block, diff, gas_used, stats }
}

/// A block's changes in order: before the transactions, each transaction's, after them.
pub(crate) fn parts<'a>(
    pre_block: &'a StateDiff,
    txs: &'a [TxOutcome],
    post_block: &'a StateDiff,
) -> Vec<&'a StateDiff> {
    std::iter::once(pre_block).chain(txs.iter().map(|tx| &tx.changes)).chain([post_block]).collect()
}

/// [`merge_all`], on one thread when the parts are too few for helpers to pay.
pub(crate) fn merge_parts(parts: &[&StateDiff], threads: usize) -> StateDiff {
    let changes: usize = parts.iter().map(|d| d.accounts.len()).sum();
    // Below this, a helper thread costs more than it saves.
    merge_all(parts, if changes < 8192 { 1 } else { threads })
}

/// Merges diffs given in order. Accounts are split by the leading byte of their address into
/// `threads` ranges merged side by side; each range sorts its changes once (stable, so an
/// account's changes stay in block order) instead of inserting them one by one.
pub(crate) fn merge_all(parts: &[&StateDiff], threads: usize) -> StateDiff {
    let threads = threads.clamp(1, 256);
    let range = |p: usize| {
        let (from, to) = (p * 256 / threads, (p + 1) * 256 / threads);
        move |address: &Address| (from..to).contains(&(address[0] as usize))
    };
    let mut ranges: Vec<Vec<(Address, AccountDiff)>> = if threads == 1 {
        vec![merge_range(parts, |_| true)]
    } else {
        std::thread::scope(|scope| {
            let helpers: Vec<_> =
                (1..threads).map(|p| scope.spawn(move || merge_range(parts, range(p)))).collect();
            // Let the helpers start before this thread takes its own share (see
            // `parallel::execute`).
            std::thread::yield_now();
            let mut ranges = vec![merge_range(parts, range(0))];
            ranges.extend(helpers.into_iter().map(|h| h.join().expect("merge helper panicked")));
            ranges
        })
    };
    let mut accounts = ranges.remove(0);
    for rest in ranges {
        accounts.extend(rest);
    }
    // Each range is sorted and the ranges are in order.
    let mut diff = StateDiff { accounts: SortedMap::from_sorted(accounts), ..StateDiff::default() };
    add_codes_and_hashes(&mut diff, parts);
    diff
}

/// Adds the code and block hashes every part makes known.
fn add_codes_and_hashes(diff: &mut StateDiff, parts: &[&StateDiff]) {
    for part in parts {
        diff.codes.extend(part.codes.iter().map(|(k, v)| (*k, v.clone())));
        diff.block_hashes.extend(part.block_hashes.iter().map(|(k, v)| (*k, *v)));
    }
}

/// The merged changes of the accounts `keep` selects, sorted by address.
fn merge_range(
    parts: &[&StateDiff],
    keep: impl Fn(&Address) -> bool,
) -> Vec<(Address, AccountDiff)> {
    let mut changes: Vec<(&Address, &AccountDiff)> =
        parts.iter().flat_map(|d| d.accounts.iter()).filter(|(a, _)| keep(a)).collect();
    changes.sort_by_key(|(address, _)| **address);
    changes
        .chunk_by(|a, b| a.0 == b.0)
        .map(|group| (*group[0].0, merge_account(group.iter().map(|(_, c)| *c))))
        .collect()
}

/// One account's changes merged, as applying them in order would leave it: the last account
/// value, and the slots written since the last wipe (the last write of each winning).
fn merge_account<'a>(
    changes: impl DoubleEndedIterator<Item = &'a AccountDiff> + Clone,
) -> AccountDiff {
    let last = changes.clone().next_back().expect("a group is never empty");
    let storage_cleared = changes.clone().any(|c| c.storage_cleared);
    let since_wipe: Vec<&AccountDiff> = {
        let mut newest_first: Vec<&AccountDiff> = Vec::new();
        for change in changes.rev() {
            newest_first.push(change);
            if change.storage_cleared {
                break;
            }
        }
        newest_first
    };
    let storage = match since_wipe.as_slice() {
        [only] => only.storage.clone(),
        newest_first => {
            let mut slots: Vec<(U256, U256)> =
                newest_first.iter().flat_map(|c| c.storage.iter().map(|(k, v)| (*k, *v))).collect();
            // Stable: among writes of one slot the newest stays first, and dedup keeps it.
            slots.sort_by_key(|(slot, _)| *slot);
            slots.dedup_by_key(|(slot, _)| *slot);
            slots.into_iter().collect()
        }
    };
    AccountDiff { account: last.account, storage_cleared, storage }
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
                // Spread the accounts over the address space so every range gets some.
                (who.wrapping_mul(97), diff)
            },
        )
    }

    proptest! {
        #[test]
        fn merging_at_once_equals_applying_in_order(
            parts in proptest::collection::vec(proptest::collection::vec(change(), 0..4), 0..12),
            threads in 1usize..5,
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
            prop_assert_eq!(merge_all(&refs, threads), expected);
        }
    }
}

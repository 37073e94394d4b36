//! The sequential reference path: the block's transactions one after another on revm.

use crate::{
    block::Block,
    block_state::{BlockState, recycle},
    effects,
    error::ExecutionError,
    outcome::{BlockOutcome, ExecutionStats, TxOutcome},
    state::StateDiff,
    storage::{StateReader, Storage},
};
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
    let parent = block.parent();
    let mut state = BlockState::with_capacity(reader, parent, block.transactions.len());
    let pre_block = effects::pre_block(block, &mut state)?;

    let mut txs = Vec::with_capacity(block.transactions.len());
    execute_txs(&mut state, block, 0..block.transactions.len(), 0, &mut txs)?;

    let post_block = effects::post_block(block, &mut state)?;
    let mut diff = StateDiff { accounts: state.changes(), ..StateDiff::default() };
    add_codes_and_hashes(&mut diff, &parts(&pre_block, &txs, &post_block));
    let stats = ExecutionStats::sequential(block.transactions.len());
    Ok(assemble(pre_block, txs, post_block, diff, stats))
}

/// Executes the transactions of `block` at `indices` (ascending, each after the last) in
/// order on `state`, the state before the first of them, after `gas_before` gas of the
/// block; appends their outcomes to `txs`.
pub(crate) fn execute_txs<R: StateReader>(
    state: &mut BlockState<R>,
    block: &Block,
    indices: impl IntoIterator<Item = usize>,
    gas_before: u64,
    txs: &mut Vec<TxOutcome>,
) -> Result<(), ExecutionError> {
    let mut evm = Context::mainnet()
        .with_db(state)
        .with_block(block.block_env())
        .with_cfg(block.cfg_env())
        .with_tx(crate::tx::none())
        .build_mainnet();
    let mut cumulative_gas = gas_before;
    for index in indices {
        let tx = &block.transactions[index];
        match evm.transact(tx) {
            Ok(output) => {
                let journal = &mut evm.ctx.journaled_state;
                let changes = journal.database.commit_evm_state(&output.state, block.spec);
                recycle(&mut journal.inner, output.state);
                cumulative_gas += output.result.tx_gas_used();
                txs.push(executed(tx.tx_type, output.result, cumulative_gas, changes));
            }
            Err(EVMError::Transaction(invalid)) => {
                txs.push(TxOutcome::invalid(invalid, tx.tx_type, cumulative_gas));
            }
            Err(e) => return Err(ExecutionError::from_evm(e, format_args!("tx {index}"))),
        }
    }
    Ok(())
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
    // The last receipt's cumulative gas is the block's: no pass over every outcome.
    let gas_used = txs.last().map_or(0, |tx| tx.cumulative_gas_used);
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

/// Adds the code and block hashes every part makes known.
pub(crate) fn add_codes_and_hashes(diff: &mut StateDiff, parts: &[&StateDiff]) {
    for part in parts {
        // Most parts have neither: a length read each, not two iterators.
        if !part.codes.is_empty() {
            diff.codes.extend(part.codes.iter().map(|(k, v)| (*k, v.clone())));
        }
        if !part.block_hashes.is_empty() {
            diff.block_hashes.extend(part.block_hashes.iter().map(|(k, v)| (*k, *v)));
        }
    }
}

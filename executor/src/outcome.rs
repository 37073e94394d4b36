//! The executor's output, the same for every path, and the field-by-field comparison of two.

use crate::state::{AccountDiff, StateDiff};
use alloy_primitives::{Address, B256, Bloom, Log, U256, logs_bloom};
use revm::context::result::{ExecutionResult, InvalidTransaction};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A transaction receipt (EIP-2718 typed, post-Byzantium status form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub tx_type: u8,
    pub success: bool,
    pub cumulative_gas_used: u64,
    pub logs: Vec<Log>,
    pub logs_bloom: Bloom,
}

impl Receipt {
    /// The receipt as the consensus layer encodes it (EIP-2718 envelope, EIP-658 status).
    pub fn envelope(&self) -> alloy_consensus::ReceiptEnvelope {
        self.envelope_with(alloy_consensus::Eip658Value::Eip658(self.success))
    }

    /// The receipt before Byzantium, which holds the state root after the transaction in
    /// place of the status.
    pub fn pre_byzantium_envelope(&self, state_root: B256) -> alloy_consensus::ReceiptEnvelope {
        self.envelope_with(alloy_consensus::Eip658Value::PostState(state_root))
    }

    fn envelope_with(
        &self,
        status: alloy_consensus::Eip658Value,
    ) -> alloy_consensus::ReceiptEnvelope {
        use alloy_consensus::{ReceiptEnvelope, ReceiptWithBloom};
        let receipt = alloy_consensus::Receipt {
            status,
            cumulative_gas_used: self.cumulative_gas_used,
            logs: self.logs.clone(),
        };
        let with_bloom = ReceiptWithBloom { receipt, logs_bloom: self.logs_bloom };
        match self.tx_type {
            1 => ReceiptEnvelope::Eip2930(with_bloom),
            2 => ReceiptEnvelope::Eip1559(with_bloom),
            3 => ReceiptEnvelope::Eip4844(with_bloom),
            4 => ReceiptEnvelope::Eip7702(with_bloom),
            _ => ReceiptEnvelope::Legacy(with_bloom),
        }
    }

    pub fn new(tx_type: u8, success: bool, cumulative_gas_used: u64, logs: Vec<Log>) -> Self {
        let logs_bloom = logs_bloom(&logs);
        Self { tx_type, success, cumulative_gas_used, logs, logs_bloom }
    }
}

/// What one transaction did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxOutcome {
    /// The execution result, or why the transaction is invalid (and so was not executed).
    pub result: Result<ExecutionResult, InvalidTransaction>,
    /// EIP-2718 type of the transaction.
    pub tx_type: u8,
    /// Gas used by the block up to and including this transaction.
    pub cumulative_gas_used: u64,
    /// The state this transaction changed; empty for an invalid transaction.
    pub changes: StateDiff,
}

impl TxOutcome {
    pub fn invalid(reason: InvalidTransaction, tx_type: u8, cumulative_gas_used: u64) -> Self {
        Self { result: Err(reason), tx_type, cumulative_gas_used, changes: StateDiff::default() }
    }

    /// The receipt, built on demand (its bloom costs four hashes per log); `None` for an
    /// invalid transaction.
    pub fn receipt(&self) -> Option<Receipt> {
        let result = self.result.as_ref().ok()?;
        Some(Receipt::new(
            self.tx_type,
            result.is_success(),
            self.cumulative_gas_used,
            result.logs().to_vec(),
        ))
    }

    pub fn gas_used(&self) -> u64 {
        self.result.as_ref().map_or(0, ExecutionResult::tx_gas_used)
    }
}

/// Counters a path reports about how it executed a block; not part of the comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionStats {
    /// Per transaction: times executed (1 for a sequential run).
    pub executions: Vec<u32>,
    /// Per transaction: validations of its read set.
    pub validations: Vec<u32>,
    /// Per transaction: incarnations aborted by a failed validation.
    pub aborts: Vec<u32>,
    /// Per transaction: times it was suspended on a dependency.
    pub suspensions: Vec<u32>,
    /// The block was (or fell back to being) executed sequentially.
    pub sequential: bool,
    /// Why the parallel path handed the block to the sequential one (`None`: it did not, or
    /// the sequential path was called directly).
    pub fallback: Option<Fallback>,
    /// How many speculative ranges the parallel path ran the block as (see `ranges/`);
    /// 0 when it ran Block-STM or the sequential path.
    #[serde(default)]
    pub ranges: usize,
    /// Every abort, in the order the transactions come in the block: which read went stale.
    pub conflicts: Vec<Conflict>,
}

/// An aborted incarnation: the first of its reads that would now find another version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub tx: usize,
    pub key: StateKey,
    /// The transaction whose write the read would now find (`None`: the state before the
    /// block, as when the write it found was withdrawn).
    pub writer: Option<usize>,
}

/// A unit of state that transactions read and write, as conflicts name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKey {
    /// An account's nonce, balance and code hash, or its absence.
    Account(Address),
    Storage(Address, U256),
    /// Whether an account's storage was wiped (by a self-destruct or a creation).
    Wipe(Address),
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Account(address) => write!(f, "account {address}"),
            Self::Storage(address, slot) => write!(f, "slot {slot:#x} of {address}"),
            Self::Wipe(address) => write!(f, "storage wipe of {address}"),
        }
    }
}

/// Why the parallel path ran a block sequentially.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Fewer transactions than `ParallelConfig::min_txs`.
    FewTransactions,
    /// Less contract gas than `ParallelConfig::min_gas`, or less per transaction than
    /// `ParallelConfig::min_gas_per_tx`: mostly plain transfers.
    LittleContractGas,
    /// One sender signs more than `ParallelConfig::max_sender_share` of the transactions.
    OneSender,
    /// Re-executions showed a dependency chain early in the run (the adaptive fallback).
    DependencyChain,
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::FewTransactions => "few transactions",
            Self::LittleContractGas => "little contract gas",
            Self::OneSender => "one sender",
            Self::DependencyChain => "dependency chain",
        })
    }
}

impl ExecutionStats {
    pub fn sequential(txs: usize) -> Self {
        Self {
            executions: vec![1; txs],
            validations: vec![0; txs],
            aborts: vec![0; txs],
            suspensions: vec![0; txs],
            sequential: true,
            fallback: None,
            ranges: 0,
            conflicts: Vec::new(),
        }
    }

    /// The keys that aborted transactions, with how many aborts each caused, most first
    /// (ties in key order).
    pub fn hot_keys(&self) -> Vec<(StateKey, usize)> {
        let mut counts: std::collections::BTreeMap<StateKey, usize> = Default::default();
        for conflict in &self.conflicts {
            *counts.entry(conflict.key).or_default() += 1;
        }
        let mut hot: Vec<(StateKey, usize)> = counts.into_iter().collect();
        hot.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        hot
    }

    /// Executions beyond the first, over all transactions.
    pub fn re_executions(&self) -> u64 {
        self.executions.iter().map(|&n| u64::from(n.saturating_sub(1))).sum()
    }
}

/// What a block did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockOutcome {
    pub txs: Vec<TxOutcome>,
    /// Changes of the block-level effects before the transactions (system calls).
    pub pre_block: StateDiff,
    /// Changes of the block-level effects after the transactions (rewards, withdrawals,
    /// request system calls).
    pub post_block: StateDiff,
    /// Every change of the block merged: what `Storage::commit` applies.
    pub diff: StateDiff,
    pub gas_used: u64,
    pub stats: ExecutionStats,
}

impl BlockOutcome {
    pub fn receipts(&self) -> impl Iterator<Item = Receipt> + '_ {
        self.txs.iter().filter_map(TxOutcome::receipt)
    }

    /// The receipts root of the block's post-Byzantium (status) receipts.
    pub fn receipts_root(&self) -> B256 {
        let envelopes: Vec<_> = self.receipts().map(|r| r.envelope()).collect();
        alloy_consensus::proofs::calculate_receipt_root(&envelopes)
    }

    /// The receipts root before Byzantium, given the state root after each valid transaction.
    pub fn pre_byzantium_receipts_root(&self, state_roots: &[B256]) -> B256 {
        let envelopes: Vec<_> = self
            .receipts()
            .zip(state_roots)
            .map(|(r, root)| r.pre_byzantium_envelope(*root))
            .collect();
        alloy_consensus::proofs::calculate_receipt_root(&envelopes)
    }

    /// The block's logs bloom: every receipt's bloom combined.
    pub fn logs_bloom(&self) -> Bloom {
        let mut bloom = Bloom::ZERO;
        for tx in &self.txs {
            if let Ok(result) = &tx.result {
                bloom.accrue_bloom(&logs_bloom(result.logs()));
            }
        }
        bloom
    }

    /// The first invalid transaction: its index and reason.
    pub fn first_invalid(&self) -> Option<(usize, &InvalidTransaction)> {
        self.txs.iter().enumerate().find_map(|(i, tx)| tx.result.as_ref().err().map(|e| (i, e)))
    }

    /// The first field where `self` and `other` differ, ignoring execution statistics.
    pub fn first_difference(&self, other: &BlockOutcome) -> Option<Divergence> {
        first_difference(self, other)
    }
}

/// Where two outcomes of the same block first differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// The transaction index, or `None` for a block-level field.
    pub tx: Option<usize>,
    /// The field, e.g. `gas_used`, `logs[1]` or `changes.0xab…cd.storage[0x01]`.
    pub field: String,
    pub left: String,
    pub right: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tx {
            Some(tx) => write!(f, "tx {tx}, {}: {} != {}", self.field, self.left, self.right),
            None => write!(f, "block, {}: {} != {}", self.field, self.left, self.right),
        }
    }
}

#[allow(clippy::needless_pass_by_value)] // callers pass computed temporaries
fn check<T: PartialEq + fmt::Debug>(
    tx: Option<usize>,
    field: impl FnOnce() -> String,
    left: T,
    right: T,
) -> Option<Divergence> {
    (left != right).then(|| Divergence {
        tx,
        field: field(),
        left: format!("{left:?}"),
        right: format!("{right:?}"),
    })
}

/// A field name for [`check`], only built on a mismatch.
fn name(field: &'static str) -> impl FnOnce() -> String {
    move || field.to_string()
}

fn first_difference(a: &BlockOutcome, b: &BlockOutcome) -> Option<Divergence> {
    check(None, name("tx_count"), a.txs.len(), b.txs.len())
        .or_else(|| diff_state(None, "pre_block", &a.pre_block, &b.pre_block))
        .or_else(|| a.txs.iter().zip(&b.txs).enumerate().find_map(|(i, (x, y))| diff_tx(i, x, y)))
        .or_else(|| diff_state(None, "post_block", &a.post_block, &b.post_block))
        .or_else(|| check(None, name("gas_used"), a.gas_used, b.gas_used))
        .or_else(|| diff_state(None, "diff", &a.diff, &b.diff))
}

fn status(result: &Result<ExecutionResult, InvalidTransaction>) -> String {
    match result {
        Ok(ExecutionResult::Success { reason, .. }) => format!("success ({reason:?})"),
        Ok(ExecutionResult::Revert { .. }) => "revert".into(),
        Ok(ExecutionResult::Halt { reason, .. }) => format!("halt ({reason:?})"),
        Err(invalid) => format!("invalid ({invalid})"),
    }
}

fn diff_tx(i: usize, a: &TxOutcome, b: &TxOutcome) -> Option<Divergence> {
    if a == b {
        return None;
    }
    let tx = Some(i);
    let (Ok(ra), Ok(rb)) = (&a.result, &b.result) else {
        return check(tx, name("status"), status(&a.result), status(&b.result));
    };
    check(tx, name("status"), status(&a.result), status(&b.result))
        .or_else(|| check(tx, name("gas_used"), ra.tx_gas_used(), rb.tx_gas_used()))
        .or_else(|| {
            check(tx, name("gas_spent"), ra.gas().total_gas_spent(), rb.gas().total_gas_spent())
        })
        .or_else(|| check(tx, name("refund"), ra.gas().final_refunded(), rb.gas().final_refunded()))
        .or_else(|| check(tx, name("output"), ra.output(), rb.output()))
        .or_else(|| check(tx, name("created_address"), ra.created_address(), rb.created_address()))
        .or_else(|| check(tx, name("logs.len"), ra.logs().len(), rb.logs().len()))
        .or_else(|| {
            ra.logs()
                .iter()
                .zip(rb.logs())
                .enumerate()
                .find_map(|(j, (x, y))| check(tx, || format!("logs[{j}]"), x, y))
        })
        .or_else(|| check(tx, name("result"), ra, rb))
        .or_else(|| check(tx, name("tx_type"), a.tx_type, b.tx_type))
        .or_else(|| {
            check(tx, name("cumulative_gas_used"), a.cumulative_gas_used, b.cumulative_gas_used)
        })
        .or_else(|| diff_state(tx, "changes", &a.changes, &b.changes))
}

/// The first difference between two state diffs, naming account and field.
pub fn diff_state(
    tx: Option<usize>,
    name: &str,
    a: &StateDiff,
    b: &StateDiff,
) -> Option<Divergence> {
    if a == b {
        return None;
    }
    let addresses: std::collections::BTreeSet<&Address> =
        a.accounts.keys().chain(b.accounts.keys()).collect();
    for address in addresses {
        let field = format!("{name}.{address}");
        let found = match (a.accounts.get(address), b.accounts.get(address)) {
            (Some(x), Some(y)) => diff_account(tx, &field, x, y),
            (x, y) => check(tx, || field.clone(), x, y),
        };
        if found.is_some() {
            return found;
        }
    }
    check(
        tx,
        || format!("{name}.codes"),
        a.codes.keys().collect::<Vec<_>>(),
        b.codes.keys().collect(),
    )
    .or_else(|| check(tx, || format!("{name}.block_hashes"), &a.block_hashes, &b.block_hashes))
}

fn diff_account(
    tx: Option<usize>,
    field: &str,
    a: &AccountDiff,
    b: &AccountDiff,
) -> Option<Divergence> {
    match (&a.account, &b.account) {
        (Some(x), Some(y)) => check(tx, || format!("{field}.nonce"), x.nonce, y.nonce)
            .or_else(|| check(tx, || format!("{field}.balance"), x.balance, y.balance))
            .or_else(|| check(tx, || format!("{field}.code_hash"), x.code_hash, y.code_hash)),
        (x, y) => check(tx, || format!("{field}.exists"), x.is_some(), y.is_some()),
    }
    .or_else(|| {
        check(tx, || format!("{field}.storage_cleared"), a.storage_cleared, b.storage_cleared)
    })
    .or_else(|| {
        let slots: std::collections::BTreeSet<_> =
            a.storage.keys().chain(b.storage.keys()).collect();
        slots.into_iter().find_map(|slot| {
            check(
                tx,
                || format!("{field}.storage[{slot:#x}]"),
                a.storage.get(slot),
                b.storage.get(slot),
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_keys_count_aborts_per_key_most_first() {
        let token = Address::repeat_byte(7);
        let pool = Address::repeat_byte(9);
        let conflict = |tx, key| Conflict { tx, key, writer: Some(0) };
        let stats = ExecutionStats {
            conflicts: vec![
                conflict(1, StateKey::Account(pool)),
                conflict(2, StateKey::Storage(token, U256::from(3))),
                conflict(3, StateKey::Storage(token, U256::from(3))),
                conflict(4, StateKey::Wipe(pool)),
            ],
            ..ExecutionStats::default()
        };
        let hot = stats.hot_keys();
        assert_eq!(hot[0], (StateKey::Storage(token, U256::from(3)), 2));
        // Ties keep the key order: an account before its wipe.
        assert_eq!(&hot[1..], &[(StateKey::Account(pool), 1), (StateKey::Wipe(pool), 1)]);
        assert_eq!(
            StateKey::Storage(token, U256::from(3)).to_string(),
            format!("slot 0x3 of {token}")
        );
    }
}

//! Signed Ethereum transactions as the executor's revm transactions.

use alloy_consensus::{Transaction, TxEnvelope, Typed2718, transaction::SignerRecoverable};
use alloy_primitives::Address;
use revm::{context::TxEnv, context_interface::either::Either};

/// No transaction: what an EVM holds before it is lent its first. The paths lend revm each
/// transaction of the block (`&TxEnv`) rather than clone it: a clone copied the whole `TxEnv`
/// and bumped its calldata's count, and dropped both again, for every execution.
pub(crate) fn none() -> &'static TxEnv {
    static NONE: std::sync::OnceLock<TxEnv> = std::sync::OnceLock::new();
    NONE.get_or_init(TxEnv::default)
}

/// Why a signed transaction has no sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signature: {0}")]
pub struct SignatureError(String);

/// The sender of `tx`. Before Homestead (EIP-2) signatures with a high `s` are valid too.
pub fn sender(tx: &TxEnvelope, homestead: bool) -> Result<Address, SignatureError> {
    let recovered = if homestead { tx.recover_signer() } else { tx.recover_signer_unchecked() };
    recovered.map_err(|e| SignatureError(e.to_string()))
}

/// The revm transaction that `caller` sends with `tx`: legacy, EIP-2930, EIP-1559, EIP-4844
/// or EIP-7702. Validity (nonce, fees, chain id, blob and authorization rules) is revm's job.
pub fn tx_env(tx: &TxEnvelope, caller: Address) -> TxEnv {
    TxEnv {
        tx_type: tx.ty(),
        caller,
        gas_limit: tx.gas_limit(),
        gas_price: tx.max_fee_per_gas(),
        gas_priority_fee: if tx.ty() >= 2 { tx.max_priority_fee_per_gas() } else { None },
        kind: tx.kind(),
        value: tx.value(),
        data: tx.input().clone(),
        nonce: tx.nonce(),
        chain_id: tx.chain_id(),
        access_list: tx.access_list().cloned().unwrap_or_default(),
        blob_hashes: tx.blob_versioned_hashes().map(<[_]>::to_vec).unwrap_or_default(),
        max_fee_per_blob_gas: tx.max_fee_per_blob_gas().unwrap_or_default(),
        authorization_list: tx
            .authorization_list()
            .into_iter()
            .flatten()
            .cloned()
            .map(Either::Left)
            .collect(),
    }
}

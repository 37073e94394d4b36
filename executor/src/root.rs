//! State root and logs hash, as the Ethereum tests define them.

use crate::storage::{Storage, StorageError};
use alloy_primitives::{B256, Log, keccak256};
use alloy_trie::{
    TrieAccount,
    root::{state_root_unsorted, storage_root_unhashed},
};

/// The Merkle Patricia root over every account of `storage` and their storage tries.
pub fn state_root<S: Storage + ?Sized>(storage: &S) -> Result<B256, StorageError> {
    let mut accounts = Vec::new();
    storage.for_each_account(&mut |(address, account, slots)| {
        let storage_root =
            storage_root_unhashed(slots.iter().map(|(slot, value)| (B256::from(*slot), *value)));
        let trie_account = TrieAccount {
            nonce: account.nonce,
            balance: account.balance,
            storage_root,
            code_hash: account.code_hash,
        };
        accounts.push((keccak256(address), trie_account));
    })?;
    Ok(state_root_unsorted(accounts))
}

/// keccak256 of the RLP list of logs (the state tests' `logs` field).
pub fn logs_hash(logs: &[Log]) -> B256 {
    let mut out = Vec::new();
    alloy_rlp::encode_list(logs, &mut out);
    keccak256(out)
}

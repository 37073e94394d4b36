//! Plain account state and the diffs that move a store from one block to the next.

use crate::sorted_map::SortedMap;
use alloy_primitives::{Address, B256, Bytes, KECCAK256_EMPTY, U256, keccak256};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The account fields that live in the state trie, minus the storage root.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Account {
    pub nonce: u64,
    pub balance: U256,
    pub code_hash: B256,
}

impl Account {
    /// An account with no code.
    pub fn with_balance(balance: U256) -> Self {
        Self { nonce: 0, balance, code_hash: KECCAK256_EMPTY }
    }

    /// EIP-161 emptiness: no nonce, no balance, no code.
    pub fn is_empty(&self) -> bool {
        self.nonce == 0 && self.balance.is_zero() && self.code_hash == KECCAK256_EMPTY
    }
}

/// Analysed code for raw bytes; malformed EIP-7702 designators are kept as legacy code, as
/// revm's own test runner does, rather than panicking.
pub fn bytecode(raw: &Bytes) -> revm::bytecode::Bytecode {
    revm::bytecode::Bytecode::new_raw_checked(raw.clone())
        .unwrap_or_else(|_| revm::bytecode::Bytecode::new_legacy(raw.clone()))
}

/// `account` after a balance credit that touches it: created if absent, and removed when left
/// empty once EIP-161 (Spurious Dragon) is active.
pub fn credited(
    account: Option<Account>,
    amount: U256,
    spec: revm::primitives::hardfork::SpecId,
) -> Option<Account> {
    let mut after = account.unwrap_or_else(|| Account::with_balance(U256::ZERO));
    after.balance = after.balance.saturating_add(amount);
    let removed =
        after.is_empty() && spec.is_enabled_in(revm::primitives::hardfork::SpecId::SPURIOUS_DRAGON);
    (!removed).then_some(after)
}

/// One account of a pre-state allocation (genesis `alloc`, state test `pre`, snapshot pre-state).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisAccount {
    pub nonce: u64,
    pub balance: U256,
    pub code: Bytes,
    pub storage: BTreeMap<U256, U256>,
}

/// A pre-state allocation.
pub type Alloc = BTreeMap<Address, GenesisAccount>;

/// What one account looks like after a change.
///
/// `account == None` means the account does not exist afterwards (self-destructed or removed as
/// empty under EIP-161). `storage_cleared` means every slot stored before was wiped first (a
/// destroyed or newly created account); `storage` then holds the slots written after the wipe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDiff {
    pub account: Option<Account>,
    pub storage_cleared: bool,
    pub storage: SortedMap<U256, U256>,
}

impl AccountDiff {
    pub fn is_destroyed(&self) -> bool {
        self.account.is_none()
    }

    /// Created in place: storage wiped and the account exists afterwards.
    pub fn is_created(&self) -> bool {
        self.storage_cleared && self.account.is_some()
    }

    /// Applies a later change of the same account on top of this one.
    pub fn merge(&mut self, later: &AccountDiff) {
        self.account = later.account;
        if later.storage_cleared {
            self.storage_cleared = true;
            self.storage.clone_from(&later.storage);
        } else {
            self.storage.extend(later.storage.iter().map(|(k, v)| (*k, *v)));
        }
    }
}

/// A set of state changes: one transaction's, one block's, or a whole pre-state allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDiff {
    pub accounts: SortedMap<Address, AccountDiff>,
    /// Code deployed by these changes, by hash.
    pub codes: BTreeMap<B256, Bytes>,
    /// Block hashes these changes make known (number → hash).
    pub block_hashes: BTreeMap<u64, B256>,
}

impl StateDiff {
    /// The diff that builds a store holding exactly `alloc` from an empty one.
    pub fn from_alloc(alloc: &Alloc) -> Self {
        let mut diff = StateDiff::default();
        for (address, genesis) in alloc {
            let code_hash = if genesis.code.is_empty() {
                KECCAK256_EMPTY
            } else {
                let hash = keccak256(&genesis.code);
                diff.codes.insert(hash, genesis.code.clone());
                hash
            };
            let storage =
                genesis.storage.iter().filter(|(_, v)| !v.is_zero()).map(|(k, v)| (*k, *v));
            diff.accounts.insert(
                *address,
                AccountDiff {
                    account: Some(Account {
                        nonce: genesis.nonce,
                        balance: genesis.balance,
                        code_hash,
                    }),
                    storage_cleared: true,
                    storage: storage.collect(),
                },
            );
        }
        diff
    }

    /// Applies `later` on top of these changes.
    pub fn merge(&mut self, later: &StateDiff) {
        let mut added = Vec::new();
        for (address, change) in &later.accounts {
            match self.accounts.get_mut(address) {
                Some(existing) => existing.merge(change),
                None => added.push((*address, change.clone())),
            }
        }
        // One sort for all new accounts, not one shift of a large map per account.
        self.accounts.extend(added);
        self.codes.extend(later.codes.iter().map(|(k, v)| (*k, v.clone())));
        self.block_hashes.extend(later.block_hashes.iter().map(|(k, v)| (*k, *v)));
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.codes.is_empty() && self.block_hashes.is_empty()
    }
}

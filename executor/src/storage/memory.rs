//! A store held in hash maps.

use super::{AccountEntry, StateReader, Storage, StorageError};
use crate::state::{Account, StateDiff};
use alloy_primitives::{
    Address, B256, U256,
    map::{AddressMap, B256Map, HashMap},
};
use revm::bytecode::Bytecode;

/// A store held in memory; readers are plain shared references.
///
/// Addresses and hashes are keys of alloy's fixed-bytes hasher: the default one hashes them as
/// byte slices of over 16 bytes, its slow path (2.6% of a sequential ERC-20 run with the block
/// state's maps).
#[derive(Debug, Default, Clone)]
pub struct InMemoryStorage {
    accounts: AddressMap<Account>,
    storage: AddressMap<HashMap<U256, U256>>,
    codes: B256Map<Bytecode>,
    block_hashes: HashMap<u64, B256>,
}

impl InMemoryStorage {
    /// A store holding exactly the state `diff` describes.
    pub fn from_diff(diff: &StateDiff) -> Self {
        let mut store = Self::default();
        store.apply(diff);
        store
    }

    fn apply(&mut self, diff: &StateDiff) {
        for (hash, code) in &diff.codes {
            self.codes.entry(*hash).or_insert_with(|| crate::state::bytecode(code));
        }
        for (address, change) in &diff.accounts {
            match change.account {
                Some(account) => self.accounts.insert(*address, account),
                None => self.accounts.remove(address),
            };
            if change.storage_cleared {
                self.storage.remove(address);
            }
            if !change.storage.is_empty() {
                let slots = self.storage.entry(*address).or_default();
                for (slot, value) in &change.storage {
                    if value.is_zero() {
                        slots.remove(slot);
                    } else {
                        slots.insert(*slot, *value);
                    }
                }
            }
        }
        self.block_hashes.extend(diff.block_hashes.iter().map(|(k, v)| (*k, *v)));
    }
}

impl StateReader for &InMemoryStorage {
    fn account(&self, address: Address) -> Result<Option<Account>, StorageError> {
        Ok(self.accounts.get(&address).copied())
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytecode>, StorageError> {
        Ok(self.codes.get(&code_hash).cloned())
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StorageError> {
        Ok(self
            .storage
            .get(&address)
            .and_then(|slots| slots.get(&slot))
            .copied()
            .unwrap_or_default())
    }

    fn block_hash(&self, number: u64) -> Result<Option<B256>, StorageError> {
        Ok(self.block_hashes.get(&number).copied())
    }
}

impl Storage for InMemoryStorage {
    type Reader<'a> = &'a InMemoryStorage;

    fn reader(&self) -> Result<Self::Reader<'_>, StorageError> {
        Ok(self)
    }

    fn commit(&mut self, diff: &StateDiff) -> Result<(), StorageError> {
        self.apply(diff);
        Ok(())
    }

    fn for_each_account(
        &self,
        visit: &mut dyn FnMut(AccountEntry<'_>),
    ) -> Result<(), StorageError> {
        let mut slots = Vec::new();
        for (address, account) in &self.accounts {
            slots.clear();
            if let Some(storage) = self.storage.get(address) {
                slots.extend(storage.iter().map(|(k, v)| (*k, *v)));
            }
            visit((*address, *account, &slots));
        }
        Ok(())
    }
}

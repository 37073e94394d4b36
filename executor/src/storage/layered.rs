//! A diff read over a store, without copying either.

use super::{StateReader, StorageError};
use crate::state::{Account, StateDiff};
use alloy_primitives::{Address, B256, U256};
use revm::bytecode::Bytecode;

/// The state `diff` leaves on top of what `reader` sees: an account, slot, code or block hash
/// the diff holds wins, a wiped account's other slots read as zero, the rest comes from the
/// reader.
#[derive(Debug)]
pub(crate) struct Layered<'a, R> {
    pub(crate) reader: R,
    pub(crate) diff: &'a StateDiff,
}

impl<R: StateReader> StateReader for Layered<'_, R> {
    fn account(&self, address: Address) -> Result<Option<Account>, StorageError> {
        match self.diff.accounts.get(&address) {
            Some(change) => Ok(change.account),
            None => self.reader.account(address),
        }
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytecode>, StorageError> {
        match self.diff.codes.get(&code_hash) {
            Some(code) => Ok(Some(crate::state::bytecode(code))),
            None => self.reader.code(code_hash),
        }
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StorageError> {
        if let Some(change) = self.diff.accounts.get(&address) {
            if let Some(value) = change.storage.get(&slot) {
                return Ok(*value);
            }
            if change.storage_cleared {
                return Ok(U256::ZERO);
            }
        }
        self.reader.storage(address, slot)
    }

    fn block_hash(&self, number: u64) -> Result<Option<B256>, StorageError> {
        match self.diff.block_hashes.get(&number) {
            Some(hash) => Ok(Some(*hash)),
            None => self.reader.block_hash(number),
        }
    }
}

//! The `Storage` trait every executor path reads through, and its two implementations.

mod layered;
mod mdbx;
mod memory;

pub(crate) use layered::Layered;
pub use mdbx::MdbxStorage;
pub use memory::InMemoryStorage;

use crate::state::{Account, StateDiff};
use alloy_primitives::{Address, B256, U256};
use revm::bytecode::Bytecode;
use std::path::PathBuf;

/// Why a store could not answer or commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("mdbx store {path}: {message}")]
    Mdbx { path: PathBuf, message: String },
    #[error("mdbx store {path} is not a lockstep store: {reason}")]
    Foreign { path: PathBuf, reason: String },
    #[error("corrupt {table} record for key {key}: {reason}")]
    Corrupt { table: &'static str, key: String, reason: String },
    #[error("code {0} is missing from the store")]
    MissingCode(B256),
    #[error("the hash of block {0} is missing from the store")]
    MissingBlockHash(u64),
}

impl revm::database_interface::DBErrorMarker for StorageError {}

/// Reads of one consistent view of a store. A reader belongs to one thread; every worker
/// thread takes its own from [`Storage::reader`].
pub trait StateReader {
    /// The account at `address`, or `None` if it does not exist.
    fn account(&self, address: Address) -> Result<Option<Account>, StorageError>;
    /// The code with hash `code_hash`, or `None` if the store does not hold it.
    fn code(&self, code_hash: B256) -> Result<Option<Bytecode>, StorageError>;
    /// The value of a storage slot (zero when unset).
    fn storage(&self, address: Address, slot: U256) -> Result<U256, StorageError>;
    /// The hash of block `number`, if the store knows it.
    fn block_hash(&self, number: u64) -> Result<Option<B256>, StorageError>;
}

/// One account with its non-zero storage, as listed by [`Storage::for_each_account`].
pub type AccountEntry<'a> = (Address, Account, &'a [(U256, U256)]);

/// A world state that many threads read at once and that a block's diff is committed to.
pub trait Storage: Send + Sync {
    type Reader<'a>: StateReader
    where
        Self: 'a;

    /// A reader over the last committed state.
    fn reader(&self) -> Result<Self::Reader<'_>, StorageError>;

    /// Applies `diff` atomically: either all of it is visible afterwards or none of it.
    fn commit(&mut self, diff: &StateDiff) -> Result<(), StorageError>;

    /// Visits every account with its non-zero storage, in no particular order.
    fn for_each_account(&self, visit: &mut dyn FnMut(AccountEntry<'_>))
    -> Result<(), StorageError>;
}

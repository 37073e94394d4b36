//! lockstep-executor: one block model, one outcome, several ways to execute.
//!
//! - [`sequential`]: the reference path, transactions in order on revm.
//! - [`parallel`]: Block-STM, bit-identical to the sequential path.
//! - [`storage`]: the [`Storage`] trait with an in-memory and an MDBX store.
//! - [`root`]: state root and logs hash.

pub mod block;
pub mod block_state;
pub mod effects;
pub mod error;
mod key_order;
pub mod outcome;
pub mod parallel;
pub mod root;
pub mod sequential;
pub mod sorted_map;
pub mod state;
pub mod storage;
pub mod tx;

pub use block::{Block, Ommer, Withdrawal};
pub use error::ExecutionError;
pub use outcome::{
    BlockOutcome, Conflict, Divergence, ExecutionStats, Fallback, Receipt, StateKey, TxOutcome,
};
pub use parallel::ParallelConfig;
pub use root::{logs_hash, state_root};
pub use sorted_map::SortedMap;
pub use state::{Account, AccountDiff, Alloc, GenesisAccount, StateDiff};
pub use storage::{InMemoryStorage, MdbxStorage, StateReader, Storage, StorageError};

/// Re-exported so users build transactions and specs with the same revm version.
pub use revm;

//! Errors that stop a block: the store failed, or the block itself is invalid.

use crate::storage::StorageError;
use alloy_primitives::Address;
use revm::context::result::EVMError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutionError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("system call to {contract} failed: {reason}")]
    SystemCall { contract: Address, reason: String },
    #[error("block header is invalid: {0}")]
    Header(String),
    #[error("evm error in {context}: {message}")]
    Evm { context: String, message: String },
}

impl ExecutionError {
    /// Converts revm's error for a call that is not a user transaction.
    pub fn from_evm<T: std::fmt::Display>(
        error: EVMError<StorageError, T>,
        context: impl std::fmt::Display,
    ) -> Self {
        match error {
            EVMError::Database(e) => Self::Storage(e),
            EVMError::Header(h) => Self::Header(h.to_string()),
            other => Self::Evm { context: context.to_string(), message: other.to_string() },
        }
    }
}

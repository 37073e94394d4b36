//! The executor's input: one block and everything needed to execute it.

use alloy_primitives::{Address, B256, U256};
use revm::{
    context::{BlockEnv, CfgEnv, TxEnv},
    primitives::hardfork::SpecId,
};
use serde::{Deserialize, Serialize};

/// A withdrawal (EIP-4895); `amount` is in gwei.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub index: u64,
    pub validator_index: u64,
    pub address: Address,
    pub amount: u64,
}

/// An ommer header's fields that the pre-merge reward needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ommer {
    pub number: u64,
    pub beneficiary: Address,
}

/// A block: its header fields, its ordered transactions, and its block-level inputs.
///
/// How a path executes it is not part of the block: the sequential, parallel and (later)
/// access-list paths all take the same `Block` and return the same `BlockOutcome`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub spec: SpecId,
    pub chain_id: u64,
    pub number: u64,
    pub timestamp: u64,
    pub beneficiary: Address,
    pub base_fee: u64,
    pub gas_limit: u64,
    pub difficulty: U256,
    /// `mixHash` after the merge.
    pub prevrandao: Option<B256>,
    pub excess_blob_gas: Option<u64>,
    /// Overrides the fork's blob base fee update fraction (blob-parameter-only forks).
    pub blob_base_fee_update_fraction: Option<u64>,
    /// Overrides the fork's blob count limit per transaction (see `default_max_blobs_per_tx`).
    pub max_blobs_per_tx: Option<u64>,
    /// When known, answers BLOCKHASH(number - 1) and feeds the EIP-2935 system call.
    pub parent_hash: Option<B256>,
    pub parent_beacon_block_root: Option<B256>,
    pub withdrawals: Vec<Withdrawal>,
    pub ommers: Vec<Ommer>,
    /// Apply block-level effects: pre-merge rewards, withdrawals and the fork's system calls.
    /// Off for state tests, which execute their transaction alone.
    pub block_effects: bool,
    pub transactions: Vec<TxEnv>,
}

impl Default for Block {
    fn default() -> Self {
        Self {
            spec: SpecId::PRAGUE,
            chain_id: 1,
            number: 1,
            timestamp: 0,
            beneficiary: Address::ZERO,
            base_fee: 0,
            gas_limit: 30_000_000,
            difficulty: U256::ZERO,
            prevrandao: Some(B256::ZERO),
            excess_blob_gas: Some(0),
            blob_base_fee_update_fraction: None,
            max_blobs_per_tx: None,
            parent_hash: None,
            parent_beacon_block_root: None,
            withdrawals: Vec::new(),
            ommers: Vec::new(),
            block_effects: true,
            transactions: Vec::new(),
        }
    }
}

/// The per-transaction blob limit of each fork: the block limit until Osaka (6 in Cancun,
/// 9 in Prague), then EIP-7594's 6.
fn default_max_blobs_per_tx(spec: SpecId) -> Option<u64> {
    if spec.is_enabled_in(SpecId::OSAKA) {
        Some(6)
    } else if spec.is_enabled_in(SpecId::PRAGUE) {
        Some(9)
    } else if spec.is_enabled_in(SpecId::CANCUN) {
        Some(6)
    } else {
        None
    }
}

impl Block {
    /// The parent's number and hash, when the block knows the hash (for BLOCKHASH).
    pub fn parent(&self) -> Option<(u64, B256)> {
        self.parent_hash.map(|hash| (self.number.saturating_sub(1), hash))
    }

    /// revm's block environment for this block.
    pub fn block_env(&self) -> BlockEnv {
        let mut env = BlockEnv {
            number: U256::from(self.number),
            beneficiary: self.beneficiary,
            timestamp: U256::from(self.timestamp),
            gas_limit: self.gas_limit,
            basefee: self.base_fee,
            difficulty: self.difficulty,
            prevrandao: if self.spec.is_enabled_in(SpecId::MERGE) { self.prevrandao } else { None },
            blob_excess_gas_and_price: None,
            ..Default::default()
        };
        if let Some(excess) =
            self.excess_blob_gas.filter(|_| self.spec.is_enabled_in(SpecId::CANCUN))
        {
            env.set_blob_excess_gas_and_price(
                excess,
                self.cfg_env().blob_base_fee_update_fraction(),
            );
        }
        env
    }

    /// revm's configuration for this block.
    pub fn cfg_env(&self) -> CfgEnv {
        let mut cfg = CfgEnv::new_with_spec(self.spec).with_chain_id(self.chain_id);
        cfg.blob_base_fee_update_fraction = self.blob_base_fee_update_fraction;
        cfg.max_blobs_per_tx =
            self.max_blobs_per_tx.or_else(|| default_max_blobs_per_tx(self.spec));
        cfg
    }
}

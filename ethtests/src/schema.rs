//! The parts of the fixture JSON schemas this crate reads itself.

use alloy_primitives::{Address, B256, Bytes, U64, U256};
use lockstep_executor::{Alloc, GenesisAccount};
use serde::Deserialize;
use std::collections::BTreeMap;

/// An account of a fixture's `pre` or `postState`.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureAccount {
    pub balance: U256,
    pub nonce: U64,
    #[serde(default)]
    pub code: Bytes,
    #[serde(default)]
    pub storage: BTreeMap<U256, U256>,
}

/// Converts a fixture allocation into the executor's.
pub fn alloc(accounts: &BTreeMap<Address, FixtureAccount>) -> Alloc {
    accounts
        .iter()
        .map(|(address, a)| {
            let account = GenesisAccount {
                nonce: a.nonce.to::<u64>(),
                balance: a.balance,
                code: a.code.clone(),
                storage: a.storage.clone(),
            };
            (*address, account)
        })
        .collect()
}

/// The header fields of a blockchain test's genesis this crate checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenesisHeader {
    pub state_root: B256,
    pub hash: B256,
}

/// One blockchain test, as far as its genesis is concerned.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockchainGenesis {
    pub genesis_block_header: GenesisHeader,
    pub pre: BTreeMap<Address, FixtureAccount>,
    #[serde(default)]
    pub network: String,
}

/// A blockchain test: a genesis, a chain of RLP blocks (some marked invalid) and the state
/// expected at the head.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockchainTest {
    pub genesis_block_header: GenesisHeader,
    #[serde(rename = "genesisRLP")]
    pub genesis_rlp: Bytes,
    pub blocks: Vec<FixtureBlock>,
    pub lastblockhash: B256,
    pub network: String,
    pub pre: BTreeMap<Address, FixtureAccount>,
    pub post_state: Option<BTreeMap<Address, FixtureAccount>>,
    pub post_state_hash: Option<B256>,
}

/// One block of a blockchain test. The RLP stays text so that bad hex rejects that block only.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FixtureBlock {
    pub rlp: String,
    pub expect_exception: Option<String>,
}

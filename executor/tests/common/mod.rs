//! Helpers shared by the executor's integration tests.
#![allow(dead_code, unreachable_pub)]

use alloy_primitives::{Address, B256, Bytes, U256};
use lockstep_executor::{
    Alloc, Block, BlockOutcome, GenesisAccount, InMemoryStorage, MdbxStorage, StateDiff, Storage,
    sequential, state_root,
};

pub const ETHER: u128 = 1_000_000_000_000_000_000;

pub fn eoa(balance: u128) -> GenesisAccount {
    GenesisAccount { balance: U256::from(balance), ..Default::default() }
}

pub fn contract(code: Bytes) -> GenesisAccount {
    GenesisAccount { code, nonce: 1, ..Default::default() }
}

/// Runs `block` sequentially on an in-memory store built from `alloc`, commits it, and
/// returns the outcome with the post-state root.
pub fn run(alloc: &Alloc, block: &Block) -> (BlockOutcome, B256) {
    let mut store = InMemoryStorage::from_diff(&StateDiff::from_alloc(alloc));
    let outcome = sequential::execute(&store, block).expect("block executes");
    store.commit(&outcome.diff).unwrap();
    (outcome, state_root(&store).unwrap())
}

/// The same on a fresh MDBX store.
pub fn run_mdbx(alloc: &Alloc, block: &Block) -> (BlockOutcome, B256) {
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        MdbxStorage::create(dir.path().join("db"), &StateDiff::from_alloc(alloc)).unwrap();
    let outcome = sequential::execute(&store, block).expect("block executes");
    store.commit(&outcome.diff).unwrap();
    (outcome, state_root(&store).unwrap())
}

pub fn balance(outcome: &BlockOutcome, address: Address) -> Option<U256> {
    outcome.diff.accounts.get(&address).and_then(|a| a.account.map(|a| a.balance))
}

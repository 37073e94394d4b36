//! Block-level effects: the fork's system calls, pre-merge rewards and withdrawals.
//!
//! They run on the same `BlockState` as the transactions, so every path that merges its
//! transactions' changes into a `BlockState` applies them identically.

use crate::{
    block::Block, block_state::BlockState, error::ExecutionError, state::StateDiff,
    storage::StateReader,
};
use alloy_primitives::{Address, Bytes, U256, address};
use revm::{
    Context, MainBuilder, MainContext, SystemCallEvm, handler::SYSTEM_ADDRESS,
    primitives::hardfork::SpecId,
};

/// EIP-4788 beacon roots contract.
pub const BEACON_ROOTS_ADDRESS: Address = address!("0x000F3df6D732807Ef1319fB7B8bB8522d0Beac02");
/// EIP-2935 block hash history contract.
pub const HISTORY_STORAGE_ADDRESS: Address = address!("0x0000F90827F1C53a10cb7A02335B175320002935");
/// EIP-7002 withdrawal request contract.
pub const WITHDRAWAL_REQUEST_ADDRESS: Address =
    address!("0x00000961Ef480Eb55e80D19ad83579A64c007002");
/// EIP-7251 consolidation request contract.
pub const CONSOLIDATION_REQUEST_ADDRESS: Address =
    address!("0x0000BBdDc7CE488642fb579F8B00f3a590007251");

const ETHER: u128 = 1_000_000_000_000_000_000;
const GWEI: u64 = 1_000_000_000;

/// System calls before the block's transactions (EIP-4788, EIP-2935).
pub fn pre_block<R: StateReader>(
    block: &Block,
    state: &mut BlockState<R>,
) -> Result<StateDiff, ExecutionError> {
    let mut diff = StateDiff::default();
    if !block.block_effects {
        return Ok(diff);
    }
    if let Some(hash) = block.parent_hash {
        diff.block_hashes.insert(block.number.saturating_sub(1), hash);
    }
    if block.spec.is_enabled_in(SpecId::CANCUN)
        && let Some(root) = block.parent_beacon_block_root
    {
        diff.merge(&system_call(block, state, BEACON_ROOTS_ADDRESS, root.into(), false)?);
    }
    if block.spec.is_enabled_in(SpecId::PRAGUE)
        && let Some(parent) = block.parent_hash
    {
        diff.merge(&system_call(block, state, HISTORY_STORAGE_ADDRESS, parent.into(), false)?);
    }
    Ok(diff)
}

/// Effects after the block's transactions: rewards, withdrawals, request system calls.
pub fn post_block<R: StateReader>(
    block: &Block,
    state: &mut BlockState<R>,
) -> Result<StateDiff, ExecutionError> {
    let mut diff = StateDiff::default();
    if !block.block_effects {
        return Ok(diff);
    }
    let spec = block.spec;
    if let Some(reward) = block_reward(spec) {
        let ommers = block.ommers.len() as u128;
        let miner = reward + reward / 32 * ommers;
        diff.merge(&state.add_balance(block.beneficiary, U256::from(miner), spec)?);
        for ommer in &block.ommers {
            // Valid ommers are 1 to 6 generations old; an older one (an invalid block) earns
            // nothing rather than underflowing.
            let share = (8 + u128::from(ommer.number)).saturating_sub(u128::from(block.number))
                * reward
                / 8;
            diff.merge(&state.add_balance(ommer.beneficiary, U256::from(share), spec)?);
        }
    }
    if spec.is_enabled_in(SpecId::SHANGHAI) {
        for withdrawal in &block.withdrawals {
            let amount = U256::from(withdrawal.amount) * U256::from(GWEI);
            diff.merge(&state.add_balance(withdrawal.address, amount, spec)?);
        }
    }
    if spec.is_enabled_in(SpecId::PRAGUE) {
        diff.merge(&system_call(block, state, WITHDRAWAL_REQUEST_ADDRESS, Bytes::new(), true)?);
        diff.merge(&system_call(block, state, CONSOLIDATION_REQUEST_ADDRESS, Bytes::new(), true)?);
    }
    Ok(diff)
}

/// Whether [`post_block`] has anything to do for this block.
pub fn has_post_block(block: &Block) -> bool {
    block.block_effects
        && (block_reward(block.spec).is_some()
            || (block.spec.is_enabled_in(SpecId::SHANGHAI) && !block.withdrawals.is_empty())
            || block.spec.is_enabled_in(SpecId::PRAGUE))
}

/// The pre-merge block reward in wei, if the fork pays one.
fn block_reward(spec: SpecId) -> Option<u128> {
    if spec.is_enabled_in(SpecId::MERGE) {
        None
    } else if spec.is_enabled_in(SpecId::PETERSBURG) {
        Some(2 * ETHER)
    } else if spec.is_enabled_in(SpecId::BYZANTIUM) {
        Some(3 * ETHER)
    } else {
        Some(5 * ETHER)
    }
}

/// Calls a system contract as `SYSTEM_ADDRESS` and commits what it changed. A contract with
/// no code is skipped; a failing call fails the block when `must_succeed`.
fn system_call<R: StateReader>(
    block: &Block,
    state: &mut BlockState<R>,
    contract: Address,
    data: Bytes,
    must_succeed: bool,
) -> Result<StateDiff, ExecutionError> {
    let has_code =
        state.account(contract)?.is_some_and(|a| a.code_hash != alloy_primitives::KECCAK256_EMPTY);
    if !has_code {
        return Ok(StateDiff::default());
    }
    let mut evm = Context::mainnet()
        .with_db(&mut *state)
        .with_block(block.block_env())
        .with_cfg(block.cfg_env())
        .build_mainnet();
    let outcome =
        evm.system_call(contract, data).map_err(|e| ExecutionError::from_evm(e, contract))?;
    if must_succeed && !outcome.result.is_success() {
        return Err(ExecutionError::SystemCall {
            contract,
            reason: format!("{:?}", outcome.result),
        });
    }
    let mut evm_state = outcome.state;
    // The call is not a transaction: neither the caller nor the fee recipient is touched.
    evm_state.remove(&SYSTEM_ADDRESS);
    evm_state.remove(&block.beneficiary);
    drop(evm);
    Ok(state.commit_evm_state(&evm_state, block.spec))
}

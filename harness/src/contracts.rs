//! Contracts the workloads and tests call, written with [`Asm`].

use crate::asm::Asm;
use alloy_primitives::{Address, B256, Bytes, U256, b256, keccak256};
use lockstep_executor::revm::bytecode::opcode::*;

/// `Transfer(address,address,uint256)` event topic.
pub const TRANSFER_TOPIC: B256 =
    b256!("0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");
/// `transfer(address,uint256)`.
pub const TRANSFER_SELECTOR: u32 = 0xa9059cbb;
/// `balanceOf(address)`.
pub const BALANCE_OF_SELECTOR: u32 = 0x70a08231;
/// Selector of the pair's `swap(amount_in, direction)` (direction 0: token0 in, 1: token1 in).
pub const SWAP_SELECTOR: u32 = 0xd0e30db0;

/// Selector dispatch: jumps to each label whose selector matches calldata, else reverts.
fn dispatch(asm: &mut Asm, routes: &[(u32, &'static str)]) {
    asm.push(0).ops(&[CALLDATALOAD]).push(0xe0).ops(&[SHR]);
    for (selector, label) in routes {
        asm.ops(&[DUP1]).push(u64::from(*selector)).ops(&[EQ]).jumpi(label);
    }
    asm.label("revert").push(0).ops(&[DUP1, REVERT]);
}

fn return_word(asm: &mut Asm) {
    asm.store(0).push(32).push(0).ops(&[RETURN]);
}

/// An ERC-20 token whose balance of `a` lives in slot `uint(a)`.
pub fn erc20() -> Bytes {
    let mut asm = Asm::new();
    dispatch(&mut asm, &[(TRANSFER_SELECTOR, "transfer"), (BALANCE_OF_SELECTOR, "balanceOf")]);
    asm.label("transfer")
        .ops(&[CALLER, SLOAD]) // [from_balance]
        .push(36)
        .ops(&[CALLDATALOAD]) // [from_balance, amount]
        .ops(&[DUP1, DUP3, LT])
        .jumpi("revert") // from_balance < amount
        .ops(&[DUP1, DUP3, SUB, CALLER, SSTORE]) // balance[from] -= amount
        .push(4)
        .ops(&[CALLDATALOAD, SLOAD, DUP2, ADD])
        .push(4)
        .ops(&[CALLDATALOAD, SSTORE]) // balance[to] += amount
        .store(0)
        .push(4)
        .ops(&[CALLDATALOAD, CALLER])
        .push_word(U256::from_be_bytes(TRANSFER_TOPIC.0))
        .push(32)
        .push(0)
        .ops(&[LOG3])
        .push(1);
    return_word(&mut asm);
    asm.label("balanceOf").push(4).ops(&[CALLDATALOAD, SLOAD]);
    return_word(&mut asm);
    asm.build()
}

/// Storage of an [`erc20`] token holding `balances`.
pub fn erc20_storage(
    balances: impl IntoIterator<Item = (Address, U256)>,
) -> impl Iterator<Item = (U256, U256)> {
    balances.into_iter().map(|(a, b)| (U256::from_be_slice(a.as_slice()), b))
}

pub fn erc20_transfer(to: Address, amount: U256) -> Bytes {
    call_data(TRANSFER_SELECTOR, &[U256::from_be_slice(to.as_slice()), amount])
}

/// A constant-product pair (0.3% fee) that keeps its users' token balances itself:
/// slots 0 and 1 hold the reserves; user `u`'s balance of token `t` is slot `2·uint(u) + t`.
pub fn amm_pair() -> Bytes {
    const AMOUNT_IN: u64 = 0x00;
    const DIR: u64 = 0x20;
    const RESERVE_IN: u64 = 0x40;
    const RESERVE_OUT: u64 = 0x60;
    const AMOUNT_OUT: u64 = 0x80;
    const KEY: u64 = 0xa0;
    let mut asm = Asm::new();
    dispatch(&mut asm, &[(SWAP_SELECTOR, "swap")]);
    asm.label("swap")
        .push(4)
        .ops(&[CALLDATALOAD])
        .store(AMOUNT_IN)
        .push(36)
        .ops(&[CALLDATALOAD])
        .push(1)
        .ops(&[AND])
        .store(DIR)
        .load(DIR)
        .ops(&[SLOAD])
        .store(RESERVE_IN)
        .load(DIR)
        .push(1)
        .ops(&[SUB, SLOAD])
        .store(RESERVE_OUT)
        // out = in·997·reserve_out / (reserve_in·1000 + in·997)
        .load(AMOUNT_IN)
        .push(997)
        .ops(&[MUL])
        .load(RESERVE_OUT)
        .ops(&[MUL])
        .load(AMOUNT_IN)
        .push(997)
        .ops(&[MUL])
        .load(RESERVE_IN)
        .push(1000)
        .ops(&[MUL, ADD])
        .ops(&[SWAP1, DIV])
        .store(AMOUNT_OUT)
        .ops(&[CALLER])
        .push(1)
        .ops(&[SHL])
        .store(KEY)
        // balance_in -= in, reverting if short
        .load(KEY)
        .load(DIR)
        .ops(&[ADD, DUP1, SLOAD])
        .ops(&[DUP1])
        .load(AMOUNT_IN)
        .ops(&[GT])
        .jumpi("revert")
        .load(AMOUNT_IN)
        .ops(&[SWAP1, SUB, SWAP1, SSTORE])
        // balance_out += out
        .load(KEY)
        .load(DIR)
        .push(1)
        .ops(&[SUB, ADD, DUP1, SLOAD])
        .load(AMOUNT_OUT)
        .ops(&[ADD, SWAP1, SSTORE])
        // reserves
        .load(RESERVE_IN)
        .load(AMOUNT_IN)
        .ops(&[ADD])
        .load(DIR)
        .ops(&[SSTORE])
        .load(AMOUNT_OUT)
        .load(RESERVE_OUT)
        .ops(&[SUB])
        .load(DIR)
        .push(1)
        .ops(&[SUB, SSTORE])
        // Swap(caller) with (in, out)
        .load(AMOUNT_OUT)
        .store(0x20)
        .ops(&[CALLER])
        .push_word(U256::from_be_bytes(keccak256("Swap(address,uint256,uint256)").0))
        .push(0x40)
        .push(0)
        .ops(&[LOG2])
        .load(AMOUNT_OUT);
    return_word(&mut asm);
    asm.build()
}

/// Storage of an [`amm_pair`] with reserves and user balances `(user, token, amount)`.
pub fn amm_storage(reserves: (U256, U256), balances: &[(Address, u8, U256)]) -> Vec<(U256, U256)> {
    let mut slots = vec![(U256::ZERO, reserves.0), (U256::from(1), reserves.1)];
    for (user, token, amount) in balances {
        let key = (U256::from_be_slice(user.as_slice()) << 1) + U256::from(*token);
        slots.push((key, *amount));
    }
    slots
}

pub fn amm_swap(amount_in: U256, token1_in: bool) -> Bytes {
    call_data(SWAP_SELECTOR, &[amount_in, U256::from(u8::from(token1_in))])
}

/// The constant-product output for `amount_in` against the given reserves.
pub fn amm_amount_out(amount_in: U256, reserve_in: U256, reserve_out: U256) -> U256 {
    let with_fee = amount_in * U256::from(997);
    with_fee * reserve_out / (reserve_in * U256::from(1000) + with_fee)
}

/// Adds 1 to slot 0 on every call: a transaction chain through one slot.
pub fn counter() -> Bytes {
    let mut asm = Asm::new();
    asm.push(0).ops(&[SLOAD]).push(1).ops(&[ADD]).push(0).ops(&[SSTORE, STOP]);
    asm.build()
}

fn call_data(selector: u32, words: &[U256]) -> Bytes {
    let mut data = selector.to_be_bytes().to_vec();
    for word in words {
        data.extend_from_slice(&word.to_be_bytes::<32>());
    }
    data.into()
}

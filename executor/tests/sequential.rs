//! Behaviour of the sequential reference path.

mod common;

use alloy_primitives::{Address, B256, Bytes, Log, TxKind, U256, keccak256};
use common::{ETHER, balance, contract, eoa, run, run_mdbx};
use lockstep_executor::{
    Alloc, Block, Ommer, Withdrawal, logs_hash,
    revm::{
        bytecode::opcode::*,
        context::{
            TxEnv,
            result::{ExecutionResult, HaltReason, InvalidTransaction},
        },
        primitives::hardfork::SpecId,
    },
};
use lockstep_harness::{
    asm::{Asm, deployer},
    contracts,
    workloads::{BASE_FEE, WorkloadKind, address, call},
};

fn block(spec: SpecId, txs: Vec<TxEnv>) -> Block {
    Block {
        spec,
        base_fee: BASE_FEE,
        beneficiary: address(0xbe, 0),
        transactions: txs,
        ..Block::default()
    }
}

fn sender(i: u64) -> Address {
    address(0x51, i)
}

#[test]
fn transfer_moves_value_and_pays_fees() {
    let (from, to) = (sender(0), address(0x52, 0));
    let alloc: Alloc = [(from, eoa(ETHER))].into();
    let value = U256::from(12_345);
    let (outcome, _) =
        run(&alloc, &block(SpecId::CANCUN, vec![call(from, 0, to, value, Bytes::new(), 21_000)]));

    let tx = &outcome.txs[0];
    assert!(matches!(tx.result, Ok(ExecutionResult::Success { .. })));
    assert_eq!(tx.gas_used(), 21_000);
    // EIP-1559: the sender pays base fee + tip, the beneficiary receives only the tip.
    let effective_price = U256::from(BASE_FEE) + U256::from(1_000_000_000u64);
    let sender_after = outcome.diff.accounts[&from].account.unwrap();
    assert_eq!(sender_after.nonce, 1);
    assert_eq!(
        sender_after.balance,
        U256::from(ETHER) - value - effective_price * U256::from(21_000)
    );
    assert_eq!(balance(&outcome, to), Some(value));
    assert_eq!(balance(&outcome, address(0xbe, 0)), Some(U256::from(1_000_000_000u64 * 21_000)));
    assert_eq!(outcome.gas_used, 21_000);
    let receipt = tx.receipt().unwrap();
    assert!(receipt.success);
    assert_eq!((receipt.tx_type, receipt.cumulative_gas_used), (2, 21_000));
}

#[test]
fn erc20_transfer_writes_slots_and_logs() {
    let workload = WorkloadKind::Erc20Transfers.generate(3 * 50_400);
    let (outcome, _) = run(&workload.alloc, &workload.block);
    let token = address(0xc0, 0);
    for (i, tx) in outcome.txs.iter().enumerate() {
        let (from, to) = (sender(i as u64), address(0x52, i as u64));
        let amount = U256::from(100 + i);
        let ExecutionResult::Success { logs, output, .. } = tx.result.as_ref().unwrap() else {
            panic!("tx {i} failed: {:?}", tx.result)
        };
        assert_eq!(output.data().as_ref(), &U256::from(1).to_be_bytes::<32>());
        let slots = &tx.changes.accounts[&token].storage;
        assert_eq!(slots[&U256::from_be_slice(from.as_slice())], U256::from(1_000_000) - amount);
        assert_eq!(slots[&U256::from_be_slice(to.as_slice())], amount);
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].address, token);
        assert_eq!(
            logs[0].topics(),
            &[contracts::TRANSFER_TOPIC, from.into_word(), to.into_word()]
        );
        assert_eq!(logs[0].data.data.as_ref(), &amount.to_be_bytes::<32>());
        assert_eq!(tx.receipt().unwrap().logs, *logs);
        assert!(
            tx.receipt()
                .unwrap()
                .logs_bloom
                .contains_input(alloy_primitives::BloomInput::Raw(token.as_slice()))
        );
    }
    // The logs hash is keccak(rlp(list of logs)); an empty list is 0xc0.
    assert_eq!(logs_hash(&[]), keccak256([0xc0]));
    let logs: Vec<Log> = outcome.txs[0].result.as_ref().unwrap().logs().to_vec();
    assert_ne!(logs_hash(&logs), logs_hash(&[]));
}

#[test]
fn amm_swap_matches_constant_product() {
    let workload = WorkloadKind::AmmSwaps.generate(2 * 60_500);
    let (outcome, _) = run(&workload.alloc, &workload.block);
    for (i, tx) in outcome.txs.iter().enumerate() {
        let token1_in = i % 2 == 1;
        let (r0, r1) = (U256::from(1_000_000_000u64), U256::from(2_000_000_000u64));
        let (reserve_in, reserve_out) = if token1_in { (r1, r0) } else { (r0, r1) };
        let amount_in = U256::from(10_000 + i);
        let expected = contracts::amm_amount_out(amount_in, reserve_in, reserve_out);
        let output = tx.result.as_ref().unwrap().output().unwrap();
        assert_eq!(U256::from_be_slice(output), expected, "tx {i}");
        let pair = &tx.changes.accounts[&address(0xa0, i as u64)].storage;
        let (slot_in, slot_out) =
            if token1_in { (U256::from(1), U256::ZERO) } else { (U256::ZERO, U256::from(1)) };
        assert_eq!(pair[&slot_in], reserve_in + amount_in);
        assert_eq!(pair[&slot_out], reserve_out - expected);
    }
}

#[test]
fn dependent_chain_counts_every_tx() {
    let workload = WorkloadKind::DependentChain.generate(5 * 26_000);
    let (outcome, _) = run(&workload.alloc, &workload.block);
    let counter = address(0xc1, 0);
    for (i, tx) in outcome.txs.iter().enumerate() {
        assert_eq!(tx.changes.accounts[&counter].storage[&U256::ZERO], U256::from(i + 2));
    }
}

#[test]
fn workload_gas_estimates_hold() {
    for kind in WorkloadKind::ALL {
        let workload = kind.generate(4 * kind.gas_per_tx());
        let (outcome, _) = run(&workload.alloc, &workload.block);
        for tx in &outcome.txs {
            assert!(
                tx.result.as_ref().is_ok_and(ExecutionResult::is_success),
                "{kind:?}: {:?}",
                tx.result
            );
            let gas = tx.gas_used() as f64;
            assert!((gas / kind.gas_per_tx() as f64 - 1.0).abs() < 0.05, "{kind:?} uses {gas}");
        }
    }
}

fn create(from: Address, nonce: u64, init: Bytes, value: u64) -> TxEnv {
    TxEnv {
        kind: TxKind::Create,
        ..call(from, nonce, Address::ZERO, U256::from(value), init, 500_000)
    }
}

#[test]
fn create_and_create2_deploy_code() {
    let from = sender(0);
    let runtime = contracts::counter();
    // A factory that CREATE2s `runtime` with salt 7 and returns the new address.
    let init = deployer(&runtime);
    let mut factory = Asm::new();
    for (i, byte) in init.iter().enumerate() {
        factory.push(u64::from(*byte)).push(i as u64).ops(&[MSTORE8]);
    }
    factory
        .push(7)
        .push(init.len() as u64)
        .push(0)
        .push(0)
        .ops(&[CREATE2])
        .store(0)
        .push(32)
        .push(0)
        .ops(&[RETURN]);
    let factory_address = address(0xfa, 0);
    let alloc: Alloc = [(from, eoa(ETHER)), (factory_address, contract(factory.build()))].into();
    let txs = vec![
        create(from, 0, deployer(&runtime), 0),
        call(from, 1, factory_address, U256::ZERO, Bytes::new(), 500_000),
    ];
    let (outcome, _) = run(&alloc, &block(SpecId::CANCUN, txs));

    let created = from.create(0);
    assert_eq!(outcome.txs[0].result.as_ref().unwrap().created_address(), Some(created));
    let code_hash = keccak256(&runtime);
    assert_eq!(outcome.diff.accounts[&created].account.unwrap().code_hash, code_hash);
    assert!(outcome.diff.accounts[&created].is_created());
    assert_eq!(outcome.diff.codes[&code_hash], runtime);

    let child = factory_address.create2(B256::from(U256::from(7)), keccak256(&init));
    let output = outcome.txs[1].result.as_ref().unwrap().output().unwrap();
    assert_eq!(Address::from_word(B256::from_slice(output)), child);
    let child_account = outcome.diff.accounts[&child].account.unwrap();
    assert_eq!((child_account.nonce, child_account.code_hash), (1, code_hash));
    assert_eq!(outcome.diff.accounts[&factory_address].account.unwrap().nonce, 2);
}

/// A contract that self-destructs to `heir`.
fn destructor(heir: Address) -> Bytes {
    let mut asm = Asm::new();
    asm.push_address(heir).ops(&[SELFDESTRUCT]);
    asm.build()
}

#[test]
fn selfdestruct_before_cancun_removes_the_account() {
    let (from, victim, heir) = (sender(0), address(0xde, 0), address(0x4e, 0));
    let mut account = contract(destructor(heir));
    account.balance = U256::from(5);
    account.storage.insert(U256::from(1), U256::from(2));
    let alloc: Alloc = [(from, eoa(ETHER)), (victim, account)].into();
    let txs = vec![call(from, 0, victim, U256::ZERO, Bytes::new(), 100_000)];
    let (outcome, _) = run(&alloc, &block(SpecId::SHANGHAI, txs));
    let change = &outcome.diff.accounts[&victim];
    assert!(change.is_destroyed() && change.storage_cleared);
    assert_eq!(balance(&outcome, heir), Some(U256::from(5)));
}

#[test]
fn selfdestruct_from_cancun_only_moves_balance() {
    let (from, victim, heir) = (sender(0), address(0xde, 0), address(0x4e, 0));
    let mut account = contract(destructor(heir));
    account.balance = U256::from(5);
    account.storage.insert(U256::from(1), U256::from(2));
    let alloc: Alloc = [(from, eoa(ETHER)), (victim, account)].into();
    let mut txs = vec![call(from, 0, victim, U256::ZERO, Bytes::new(), 100_000)];
    // Created and destroyed in one transaction: gone even under EIP-6780.
    txs.push(create(from, 1, destructor(heir), 3));
    let (outcome, _) = run(&alloc, &block(SpecId::CANCUN, txs));
    let change = &outcome.txs[0].changes.accounts[&victim];
    assert_eq!(change.account.unwrap().balance, U256::ZERO);
    assert!(
        !change.storage_cleared
            && change.account.unwrap().code_hash != alloy_primitives::KECCAK256_EMPTY
    );
    assert!(
        !outcome.diff.accounts.contains_key(&from.create(1)),
        "an account created and destroyed in one tx never appears"
    );
    assert_eq!(balance(&outcome, heir), Some(U256::from(8)));
}

#[test]
fn revert_and_halt_keep_state_but_charge_gas() {
    let from = sender(0);
    let token = address(0xc0, 0);
    let halter = address(0xfe, 0);
    let alloc: Alloc = [
        (from, eoa(ETHER)),
        (token, contract(contracts::erc20())),
        (halter, contract(vec![INVALID].into())),
    ]
    .into();
    let txs = vec![
        call(
            from,
            0,
            token,
            U256::ZERO,
            contracts::erc20_transfer(sender(1), U256::from(1)),
            100_000,
        ),
        call(from, 1, halter, U256::ZERO, Bytes::new(), 50_000),
    ];
    let (outcome, _) = run(&alloc, &block(SpecId::CANCUN, txs));
    assert!(matches!(outcome.txs[0].result, Ok(ExecutionResult::Revert { .. })));
    assert!(!outcome.txs[0].receipt().unwrap().success);
    assert!(!outcome.txs[0].changes.accounts.contains_key(&token));
    assert!(matches!(
        outcome.txs[1].result,
        Ok(ExecutionResult::Halt { reason: HaltReason::InvalidFEOpcode, .. })
    ));
    assert_eq!(outcome.txs[1].gas_used(), 50_000, "a halt consumes all gas");
    assert_eq!(outcome.diff.accounts[&from].account.unwrap().nonce, 2);
}

#[test]
fn invalid_transactions_are_reported_and_skipped() {
    let (rich, poor) = (sender(0), sender(1));
    let alloc: Alloc = [(rich, eoa(ETHER)), (poor, eoa(1_000))].into();
    let to = address(0x52, 0);
    let mut low_fee = call(rich, 0, to, U256::ZERO, Bytes::new(), 21_000);
    low_fee.gas_price = u128::from(BASE_FEE) - 1;
    low_fee.gas_priority_fee = Some(0);
    let txs = vec![
        call(rich, 5, to, U256::ZERO, Bytes::new(), 21_000), // nonce too high
        call(poor, 0, to, U256::ZERO, Bytes::new(), 21_000), // cannot pay for gas
        call(rich, 0, to, U256::ZERO, Bytes::new(), 20_000), // below intrinsic gas
        low_fee,                                             // fee cap below base fee
        call(rich, 0, to, U256::from(1), Bytes::new(), 21_000), // valid
    ];
    let (outcome, _) = run(&alloc, &block(SpecId::CANCUN, txs));
    assert!(matches!(
        outcome.txs[0].result,
        Err(InvalidTransaction::NonceTooHigh { tx: 5, state: 0 })
    ));
    assert!(matches!(outcome.txs[1].result, Err(InvalidTransaction::LackOfFundForMaxFee { .. })));
    assert!(matches!(
        outcome.txs[2].result,
        Err(InvalidTransaction::CallGasCostMoreThanGasLimit { .. })
    ));
    assert!(matches!(outcome.txs[3].result, Err(InvalidTransaction::GasPriceLessThanBasefee)));
    for tx in &outcome.txs[..4] {
        assert!(tx.changes.is_empty() && tx.receipt().is_none());
    }
    assert!(outcome.txs[4].result.as_ref().unwrap().is_success());
    assert_eq!(outcome.first_invalid().map(|(i, _)| i), Some(0));
    assert_eq!(outcome.txs[4].receipt().unwrap().cumulative_gas_used, 21_000);
}

#[test]
fn withdrawals_credit_gwei() {
    let (existing, fresh, untouched) = (address(0x77, 1), address(0x77, 2), address(0x77, 3));
    let alloc: Alloc = [(existing, eoa(1))].into();
    let withdrawal =
        |index, address, amount| Withdrawal { index, validator_index: index, address, amount };
    let block = Block {
        withdrawals: vec![
            withdrawal(0, existing, 2),
            withdrawal(1, fresh, 3),
            withdrawal(2, untouched, 0),
        ],
        ..block(SpecId::SHANGHAI, vec![])
    };
    let (outcome, _) = run(&alloc, &block);
    assert_eq!(balance(&outcome, existing), Some(U256::from(1 + 2_000_000_000u64)));
    assert_eq!(balance(&outcome, fresh), Some(U256::from(3_000_000_000u64)));
    assert!(
        !outcome.diff.accounts.contains_key(&untouched),
        "a zero withdrawal creates no account"
    );
    assert_eq!(outcome.post_block, outcome.diff);
}

#[test]
fn pre_merge_rewards_pay_miner_and_ommers() {
    let miner = address(0xbe, 0);
    let uncle_miner = address(0xbe, 1);
    let block = Block {
        number: 10,
        ommers: vec![Ommer { number: 9, beneficiary: uncle_miner }],
        ..block(SpecId::BYZANTIUM, vec![])
    };
    let (outcome, _) = run(&Alloc::new(), &block);
    let reward = 3 * ETHER;
    assert_eq!(balance(&outcome, miner), Some(U256::from(reward + reward / 32)));
    assert_eq!(balance(&outcome, uncle_miner), Some(U256::from(7 * reward / 8)));

    let (outcome, _) = run(&Alloc::new(), &Block { spec: SpecId::MERGE, ..block });
    assert!(outcome.diff.accounts.is_empty(), "no reward after the merge");
}

#[test]
fn in_memory_and_mdbx_agree() {
    let mut checked = 0;
    for kind in WorkloadKind::ALL {
        let workload = kind.generate(20 * kind.gas_per_tx());
        let (memory, memory_root) = run(&workload.alloc, &workload.block);
        let (mdbx, mdbx_root) = run_mdbx(&workload.alloc, &workload.block);
        assert_eq!(memory.first_difference(&mdbx), None, "{kind:?}");
        assert_eq!(memory, mdbx);
        assert_eq!(memory_root, mdbx_root, "{kind:?}");
        checked += memory.txs.len();
    }
    assert!(checked >= 80);
}

#[test]
fn divergence_names_tx_and_field() {
    let workload = WorkloadKind::Erc20Transfers.generate(3 * 50_400);
    let (outcome, _) = run(&workload.alloc, &workload.block);
    let mut tampered = outcome.clone();
    let token = address(0xc0, 0);
    let slot = U256::from_be_slice(sender(1).as_slice());
    tampered.txs[1].changes.accounts.get_mut(&token).unwrap().storage.insert(slot, U256::from(7));
    let divergence = outcome.first_difference(&tampered).unwrap();
    assert_eq!(divergence.tx, Some(1));
    assert_eq!(divergence.field, format!("changes.{token}.storage[{slot:#x}]"));
    assert_eq!(divergence.right, format!("{:?}", Some(U256::from(7))));
}

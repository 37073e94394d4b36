//! For one transaction, the sequential path returns what revm's own `transact` returns.

mod common;

use alloy_primitives::{Address, TxKind, U256};
use common::{ETHER, eoa, run};
use lockstep_executor::{
    Alloc, Block,
    revm::{
        Context, ExecuteEvm, MainBuilder, MainContext,
        context::TxEnv,
        database::{CacheDB, EmptyDB},
        primitives::hardfork::SpecId,
        state::AccountInfo,
    },
};
use lockstep_harness::{
    asm::deployer,
    contracts,
    workloads::{WorkloadKind, address, call},
};

/// revm's own in-memory database holding `alloc`: nothing of ours between revm and the state.
fn revm_db(alloc: &Alloc) -> CacheDB<EmptyDB> {
    let mut db = CacheDB::new(EmptyDB::default());
    for (address, account) in alloc {
        let code = lockstep_executor::state::bytecode(&account.code);
        let info = AccountInfo {
            balance: account.balance,
            nonce: account.nonce,
            code_hash: code.hash_slow(),
            code: Some(code),
            ..Default::default()
        };
        db.insert_account_info(*address, info);
        for (slot, value) in &account.storage {
            db.insert_account_storage(*address, *slot, *value).expect("in-memory insert");
        }
    }
    db
}

fn assert_same_as_revm(alloc: &Alloc, block: &Block) {
    let tx = block.transactions[0].clone();
    let mut evm = Context::mainnet()
        .with_db(revm_db(alloc))
        .with_block(block.block_env())
        .with_cfg(block.cfg_env())
        .build_mainnet();
    let expected = evm.transact(tx).expect("valid tx");
    let (outcome, _) =
        run(alloc, &Block { transactions: block.transactions[..1].to_vec(), ..block.clone() });
    let ours = &outcome.txs[0];
    assert_eq!(ours.result.as_ref().unwrap(), &expected.result);

    let mut compared = 0;
    for (address, account) in &expected.state {
        let original = account.original_info();
        let changed_slots: Vec<_> =
            account.changed_storage_slots().map(|(k, v)| (*k, v.present_value)).collect();
        let untouched = !account.is_touched()
            || (account.info == original && changed_slots.is_empty() && !account.is_created());
        match ours.changes.accounts.get(address) {
            None => assert!(untouched, "{address}: revm changed it, we did not"),
            Some(change) => {
                let ours = change.account.expect("no account is destroyed here");
                assert_eq!(
                    (ours.nonce, ours.balance, ours.code_hash),
                    (account.info.nonce, account.info.balance, account.info.code_hash),
                    "{address}"
                );
                for (slot, value) in changed_slots {
                    assert_eq!(change.storage.get(&slot), Some(&value), "{address} slot {slot}");
                }
                assert_eq!(
                    change.storage.len(),
                    account.changed_storage_slots().count(),
                    "{address}"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, ours.changes.accounts.len(), "we changed accounts revm did not");
}

#[test]
fn workload_transactions_match_revm() {
    for kind in WorkloadKind::ALL {
        let workload = kind.generate(kind.gas_per_tx());
        assert_same_as_revm(&workload.alloc, &workload.block);
    }
}

#[test]
fn create_and_revert_match_revm() {
    let from = address(0x51, 0);
    let token = address(0xc0, 0);
    let mut alloc: Alloc = [(from, eoa(ETHER))].into();
    alloc.insert(
        token,
        lockstep_executor::GenesisAccount {
            code: contracts::erc20(),
            nonce: 1,
            ..Default::default()
        },
    );
    let create = TxEnv {
        kind: TxKind::Create,
        ..call(from, 0, Address::ZERO, U256::from(9), deployer(&contracts::amm_pair()), 300_000)
    };
    let revert =
        call(from, 0, token, U256::ZERO, contracts::erc20_transfer(from, U256::from(1)), 100_000);
    for (spec, tx) in
        [(SpecId::CANCUN, create.clone()), (SpecId::PRAGUE, revert), (SpecId::LONDON, create)]
    {
        let block =
            Block { spec, base_fee: 1_000_000_000, transactions: vec![tx], ..Block::default() };
        assert_same_as_revm(&alloc, &block);
    }
}

//! Property: random conflict-heavy blocks give parallel == sequential at 1, 2, 3 and 8
//! threads, with and without chaos, on Block-STM and as speculative ranges.

mod common;

use common::run;
use lockstep_executor::revm::primitives::hardfork::SpecId;
use lockstep_harness::{
    case::{Case, FORKS},
    random_block::{Target, TxSpec, build},
};
use proptest::prelude::*;

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (0u8..6).prop_map(Target::User),
        Just(Target::Beneficiary),
        (0u8..4).prop_map(Target::Fresh),
        Just(Target::Token),
        Just(Target::Counter),
        (0u8..17).prop_map(Target::Precompile),
    ]
}

fn tx_spec() -> impl Strategy<Value = TxSpec> {
    let user = 0u8..4;
    prop_oneof![
        4 => (user.clone(), target(), 0u16..3000).prop_map(|(from, to, value)| TxSpec::Transfer { from, to, value }),
        3 => (user.clone(), user.clone(), 0u32..2_000_000).prop_map(|(from, to, amount)| TxSpec::Erc20 { from, to, amount }),
        2 => user.clone().prop_map(|from| TxSpec::Count { from }),
        2 => (user.clone(), 1u32..50_000, any::<bool>()).prop_map(|(from, amount, token1_in)| TxSpec::Swap { from, amount, token1_in }),
        1 => user.clone().prop_map(|from| TxSpec::Create { from }),
        1 => user.clone().prop_map(|from| TxSpec::Destruct { from }),
        1 => (user.clone(), 0u16..100).prop_map(|(from, value)| TxSpec::CreateAndDestruct { from, value }),
        1 => user.clone().prop_map(|from| TxSpec::BadNonce { from }),
        1 => user.clone().prop_map(|from| TxSpec::ReadBeneficiary { from }),
        1 => (user, 0u16..100).prop_map(|(to, value)| TxSpec::FromBeneficiary { to, value }),
    ]
}

fn spec_id() -> impl Strategy<Value = SpecId> {
    prop::sample::select(FORKS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_blocks_match_sequential(
        txs in prop::collection::vec(tx_spec(), 1..40),
        spec in spec_id(),
        chaos in prop::option::of(any::<u64>()),
    ) {
        let case = Case { spec, chaos, txs };
        if let Err(divergence) = case.check() {
            // Each failure overwrites the last, so the file ends with the shrunk case.
            let saved = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("failed_case.json");
            let _ = std::fs::write(&saved, case.to_json());
            prop_assert!(
                false,
                "{divergence}\ncase saved as {} (move it into fuzz/regressions/ to keep it)",
                saved.display()
            );
        }
    }
}

#[test]
fn random_block_specs_do_what_they_say() {
    use lockstep_executor::revm::context::result::ExecutionResult;
    use lockstep_harness::random_block::{BENEFICIARY, user};
    let specs = [
        TxSpec::Transfer { from: 0, to: Target::Beneficiary, value: 5 },
        TxSpec::Erc20 { from: 1, to: 2, amount: 2_000_000 },
        TxSpec::Create { from: 2 },
        TxSpec::Destruct { from: 3 },
        TxSpec::CreateAndDestruct { from: 0, value: 7 },
        TxSpec::BadNonce { from: 1 },
        TxSpec::ReadBeneficiary { from: 2 },
        TxSpec::FromBeneficiary { to: 3, value: 9 },
        TxSpec::Swap { from: 1, amount: 1_000, token1_in: true },
    ];
    let workload = build(&specs, SpecId::SHANGHAI);
    let (outcome, _) = run(&workload.alloc, &workload.block);
    let ok = |i: usize| matches!(outcome.txs[i].result, Ok(ExecutionResult::Success { .. }));
    assert!(ok(0) && ok(2) && ok(3) && ok(4) && ok(6) && ok(7) && ok(8), "{:#?}", outcome.txs);
    assert!(matches!(outcome.txs[1].result, Ok(ExecutionResult::Revert { .. })));
    assert!(outcome.txs[5].result.is_err());
    let created = user(2).create(0);
    assert_eq!(
        outcome.diff.accounts[&created].storage[&alloy_primitives::U256::from(1)],
        alloy_primitives::U256::from(0x2a)
    );
    assert!(outcome.txs[3].changes.accounts.values().any(|c| c.is_destroyed()));
    // The probe stored the beneficiary's balance after the fees of txs 0..=5 and transfer 0.
    let probe_change = outcome.txs[6]
        .changes
        .accounts
        .values()
        .find(|c| !c.storage.is_empty() && c.account.is_some_and(|a| a.nonce == 1))
        .unwrap();
    let stored = probe_change.storage[&alloy_primitives::U256::ZERO];
    let before_tx6 = outcome.txs[..6].iter().fold(None, |acc, tx| {
        tx.changes.accounts.get(&BENEFICIARY).map(|c| c.account.unwrap().balance).or(acc)
    });
    assert_eq!(Some(stored), before_tx6);
}

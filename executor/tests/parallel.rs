//! The parallel path is bit-identical to the sequential one: per tx, per block, per root.

mod common;

use alloy_primitives::Address;
use common::run;
use lockstep_executor::{
    BlockOutcome, Fallback, InMemoryStorage, ParallelConfig, StateDiff, Storage, parallel,
    state_root,
};
use lockstep_harness::{Workload, WorkloadKind};

fn parallel_run(
    workload: &Workload,
    config: &ParallelConfig,
) -> (BlockOutcome, alloy_primitives::B256) {
    let mut store = InMemoryStorage::from_diff(&StateDiff::from_alloc(&workload.alloc));
    let outcome = parallel::execute(&store, &workload.block, config).expect("block executes");
    store.commit(&outcome.diff).unwrap();
    (outcome, state_root(&store).unwrap())
}

fn assert_identical(workload: &Workload, config: &ParallelConfig) -> BlockOutcome {
    let (sequential, sequential_root) = run(&workload.alloc, &workload.block);
    let (parallel, parallel_root) = parallel_run(workload, config);
    if let Some(divergence) = sequential.first_difference(&parallel) {
        panic!("{} with {config:?}: {divergence}", workload.name);
    }
    assert_eq!(sequential_root, parallel_root);
    assert_eq!(sequential.txs, parallel.txs);
    parallel
}

#[test]
fn workloads_match_sequential_at_every_thread_count() {
    for kind in WorkloadKind::ALL {
        let workload = kind.generate(150 * kind.gas_per_tx());
        for threads in [1, 2, 3, 8] {
            let outcome = assert_identical(&workload, &ParallelConfig::always_parallel(threads));
            assert!(!outcome.stats.sequential);
            assert_eq!(outcome.stats.executions.len(), workload.block.transactions.len());
        }
    }
}

#[test]
fn workloads_match_sequential_under_chaos() {
    for kind in WorkloadKind::ALL {
        let workload = kind.generate(60 * kind.gas_per_tx());
        for seed in 0..4 {
            let config = ParallelConfig { chaos: Some(seed), ..ParallelConfig::always_parallel(3) };
            assert_identical(&workload, &config);
        }
    }
}

#[test]
fn independent_workloads_never_reexecute() {
    // Every transaction pays the same beneficiary and the ERC-20 ones all call one contract,
    // yet none depends on another: under any schedule nothing is re-executed or suspended.
    for kind in [WorkloadKind::RawTransfers, WorkloadKind::Erc20Transfers, WorkloadKind::AmmSwaps] {
        let workload = kind.generate(300 * kind.gas_per_tx());
        for config in [
            ParallelConfig::always_parallel(2),
            ParallelConfig { chaos: Some(7), ..ParallelConfig::always_parallel(3) },
        ] {
            let outcome = assert_identical(&workload, &config);
            assert_eq!(outcome.stats.re_executions(), 0, "{kind:?}");
            assert_eq!(outcome.stats.suspensions.iter().sum::<u32>(), 0, "{kind:?}");
        }
    }
}

#[test]
fn dependent_chain_falls_back_and_still_matches() {
    let workload = WorkloadKind::DependentChain.generate(400 * 26_000);
    // Only the adaptive fallback may take this block off Block-STM.
    let config = ParallelConfig { adaptive: true, ..ParallelConfig::always_parallel(2) };
    // Both ways of falling back: afresh on the sequential path, or finishing in order.
    for restart_below in [1.1, 0.0] {
        let config = ParallelConfig { restart_below, ..config.clone() };
        let outcome = assert_identical(&workload, &config);
        // A restart says why (if the chain rule fired at all: a descheduled worker leaves the
        // other to run the chain in order, without re-executions); finishing in order keeps
        // the parallel run's statistics.
        let allowed = if restart_below > 1.0 { Some(Fallback::DependencyChain) } else { None };
        assert!(outcome.stats.fallback.is_none() || outcome.stats.fallback == allowed);
        for seed in 0..3 {
            assert_identical(&workload, &ParallelConfig { chaos: Some(seed), ..config.clone() });
        }
    }
}

#[test]
fn small_or_transfer_only_blocks_take_the_sequential_path() {
    let config = ParallelConfig::with_threads(2);
    let path = |workload: &Workload, config: &ParallelConfig| {
        let stats = assert_identical(workload, config).stats;
        assert_eq!(stats.sequential, stats.fallback.is_some(), "{stats:?}");
        stats.fallback
    };
    let small = WorkloadKind::Erc20Transfers.generate(12 * 50_400);
    assert_eq!(path(&small, &config), Some(Fallback::FewTransactions));
    let transfers = WorkloadKind::RawTransfers.generate(500 * 21_000);
    assert_eq!(path(&transfers, &config), Some(Fallback::LittleContractGas));
    let calls = WorkloadKind::Erc20Transfers.generate(200 * 50_400);
    assert_eq!(path(&calls, &config), None);
    // One sender's nonces chain its transactions: no point in threads.
    use lockstep_harness::random_block::{TxSpec, build};
    let specs = vec![TxSpec::Erc20 { from: 0, to: 1, amount: 5 }; 40];
    let chained = build(&specs, lockstep_executor::revm::primitives::hardfork::SpecId::CANCUN);
    assert_eq!(path(&chained, &config), Some(Fallback::OneSender));
    let parallel = ParallelConfig { max_sender_share: 1.0, ..config };
    assert_eq!(path(&chained, &parallel), None);
}

#[test]
fn a_sender_below_half_is_caught_once_a_helper_hashed_the_senders() {
    // The majority vote before the run only finds senders of more than half the block; a
    // lower share is found once the senders are hashed, by helper 1 while the run is being
    // prepared or by the calling thread when it gets there first. Either way the run does
    // not start, and the helpers it woke go back.
    let mut workload = WorkloadKind::Erc20Transfers.generate(100 * 50_400);
    // Two in five are one sender's: not a majority.
    let sender = workload.block.transactions[0].caller;
    let mine = (0..workload.block.transactions.len()).filter(|i| i % 5 < 2);
    for (nonce, i) in mine.enumerate() {
        let tx = &mut workload.block.transactions[i];
        (tx.caller, tx.nonce) = (sender, nonce as u64);
    }
    for threads in [1, 2, 3] {
        let strict =
            ParallelConfig { max_sender_share: 0.3, ..ParallelConfig::with_threads(threads) };
        let outcome = assert_identical(&workload, &strict);
        assert_eq!(outcome.stats.fallback, Some(Fallback::OneSender), "{threads} threads");
        let lenient = ParallelConfig { max_sender_share: 0.5, ..strict };
        let outcome = assert_identical(&workload, &lenient);
        assert_eq!(outcome.stats.fallback, None, "{threads} threads");
        assert!(!outcome.stats.sequential);
    }
}

#[test]
fn same_sender_transactions_wait_for_each_other_instead_of_reexecuting() {
    // Every other transaction is one sender's: each reads the nonce and token balance its
    // predecessor writes. Without waiting for that predecessor, two threads would execute
    // some of them too early and re-execute them.
    let mut workload = WorkloadKind::Erc20Transfers.generate(80 * 50_400);
    let sender = workload.block.transactions[0].caller;
    for (i, tx) in workload.block.transactions.iter_mut().enumerate().step_by(2) {
        tx.caller = sender;
        tx.nonce = i as u64 / 2;
    }
    for config in [
        ParallelConfig::always_parallel(2),
        ParallelConfig { chaos: Some(3), ..ParallelConfig::always_parallel(3) },
    ] {
        let outcome = assert_identical(&workload, &config);
        assert_eq!(outcome.stats.re_executions(), 0, "{config:?}");
    }
}

#[test]
fn payments_to_one_fallback_match_sequential() {
    use lockstep_executor::revm::primitives::hardfork::SpecId;
    use lockstep_harness::random_block::{TxSpec, build};
    // A hundred senders each call one contract without calldata, and its fallback increments
    // one slot: each payment depends on the one before, and once two of them conflict over
    // that slot the rest wait for their predecessor (whether they got to conflict depends on
    // the schedule; the outcome must not).
    let mut workload = build(&[TxSpec::Count { from: 0 }; 100], SpecId::CANCUN);
    for (i, tx) in workload.block.transactions.iter_mut().enumerate() {
        tx.caller = Address::left_padding_from(&[0xee, i as u8]);
        tx.nonce = 0;
        workload.alloc.insert(tx.caller, common::eoa(common::ETHER));
    }
    assert_identical(&workload, &ParallelConfig::always_parallel(2));
    for seed in 0..4 {
        let config = ParallelConfig { chaos: Some(seed), ..ParallelConfig::always_parallel(3) };
        assert_identical(&workload, &config);
    }
}

#[test]
fn heavy_late_transactions_run_early_and_still_match() {
    // Every transaction reads and writes one slot. The last ones carry the block's highest
    // gas limits, so they are handed out first, read the slot before anything wrote it,
    // and must be caught by validation and re-executed.
    let mut workload = WorkloadKind::DependentChain.generate(60 * 26_000);
    let txs = workload.block.transactions.len();
    for tx in &mut workload.block.transactions[txs - 3..] {
        tx.gas_limit *= 4;
    }
    for config in [
        ParallelConfig::always_parallel(2),
        ParallelConfig::always_parallel(3),
        ParallelConfig { chaos: Some(5), ..ParallelConfig::always_parallel(2) },
    ] {
        assert_identical(&workload, &config);
    }
}

#[test]
fn credits_resolve_across_every_workers_range() {
    use lockstep_executor::revm::primitives::hardfork::SpecId;
    use lockstep_harness::random_block::{Target, TxSpec, build};
    // One recipient credited in every worker's range, and set in the middle by a transfer
    // of its own; the beneficiary likewise, paid by every transaction and paying once.
    let specs: Vec<TxSpec> = (0..30u8)
        .map(|i| match i {
            11 => TxSpec::Transfer { from: 3, to: Target::User(0), value: 5 },
            19 => TxSpec::FromBeneficiary { to: 1, value: 9 },
            _ => TxSpec::Transfer { from: i % 3, to: Target::User(3), value: 7 },
        })
        .collect();
    let workload = build(&specs, SpecId::CANCUN);
    for threads in [2, 3, 4, 8] {
        assert_identical(&workload, &ParallelConfig::always_parallel(threads));
    }
}

#[test]
fn workloads_match_sequential_as_ranges() {
    for kind in WorkloadKind::ALL {
        let workload = kind.generate(150 * kind.gas_per_tx());
        let txs = workload.block.transactions.len();
        for threads in [1, 2, 3, 8] {
            for chaos in [None, Some(threads as u64)] {
                let config = ParallelConfig { chaos, ..ParallelConfig::always_ranges(threads) };
                let stats = assert_identical(&workload, &config).stats;
                assert!(stats.ranges >= threads && !stats.sequential, "{kind:?}");
                let independent = kind != WorkloadKind::DependentChain;
                if independent {
                    assert_eq!(stats.re_executions(), 0, "{kind:?} {config:?}");
                }
                // Every transaction executed once, or twice when its range was given up.
                assert_eq!(stats.executions.len(), txs);
                assert!(stats.executions.iter().all(|e| (1..=2).contains(e)));
            }
        }
    }
}

#[test]
fn a_worker_done_early_takes_over_part_of_the_first_range() {
    // The two ranges start with equal gas limits, but the later half of the block is invalid
    // (its nonces are far ahead) and takes almost no time: the helper, done early, takes
    // chunks from the top of what the first range has not reached. (Whether it does depends
    // on the helper's thread getting a core in time, which other tests running at once can
    // delay: hence up to twenty tries of 50 ms.)
    let mut workload = WorkloadKind::Erc20Transfers.generate(2_000 * 50_400);
    for tx in &mut workload.block.transactions[1_000..] {
        tx.nonce = 1_000;
    }
    let mut ranges = Vec::new();
    for _ in 0..20 {
        let outcome = assert_identical(&workload, &ParallelConfig::always_ranges(2));
        assert!(outcome.txs[1_000..].iter().all(|tx| tx.result.is_err()), "invalid");
        assert!(outcome.stats.executions.iter().all(|e| *e == 1), "nothing re-executed");
        ranges.push(outcome.stats.ranges);
        if outcome.stats.ranges > 2 {
            break;
        }
    }
    assert!(ranges.iter().any(|r| *r > 2), "ranges per try: {ranges:?}");
    // Three threads share two cores here: the outcome, not the chunks, is what is checked.
    assert_identical(&workload, &ParallelConfig::always_ranges(3));
}

#[test]
fn large_blocks_run_as_ranges_by_default() {
    let calls = WorkloadKind::Erc20Transfers.generate(2_100 * 50_400);
    let stats = assert_identical(&calls, &ParallelConfig::with_threads(2)).stats;
    assert!(stats.ranges > 0 && stats.fallback.is_none());
    let smaller = WorkloadKind::Erc20Transfers.generate(1_000 * 50_400);
    let stats = assert_identical(&smaller, &ParallelConfig::with_threads(2)).stats;
    assert!(stats.ranges == 0 && stats.fallback.is_none(), "Block-STM below 2,048 transactions");
}

#[test]
fn a_later_range_that_loads_a_changed_value_is_redone_from_there() {
    // Every transaction reads and writes one slot: the second range's first transaction
    // loads it before the first range wrote it, so from there the block runs in order.
    let workload = WorkloadKind::DependentChain.generate(200 * 26_000);
    let stats = assert_identical(&workload, &ParallelConfig::always_ranges(2)).stats;
    let second = stats.validations.iter().position(|v| *v > 0).expect("a range was checked");
    assert_eq!(stats.aborts.iter().sum::<u32>(), 1);
    assert_eq!(stats.aborts[second], 1, "the first transaction of the second range");
    assert_eq!(stats.conflicts.len(), 1);
    let conflict = &stats.conflicts[0];
    assert_eq!(conflict.tx, second);
    assert!(conflict.writer.is_some_and(|w| w < second), "{conflict:?}");
    assert!(stats.executions[..second].iter().all(|e| *e == 1));
}

#[test]
fn a_load_made_stale_deep_in_a_later_range_is_found() {
    // Independent token moves, but transaction 2,000 is sent by the sender of transaction
    // 100, with the nonce that one leaves: the second range runs it on the nonce before the
    // block (so it is invalid there), thousands of loads into its range, past the first
    // chunks the check hands out.
    let mut workload = WorkloadKind::Erc20Transfers.generate(2_400 * 50_400);
    let (early, late) = (100, 2_000);
    let sender = workload.block.transactions[early].caller;
    let tx = &mut workload.block.transactions[late];
    tx.caller = sender;
    tx.nonce = 1;
    let outcome = assert_identical(&workload, &ParallelConfig::always_ranges(2));
    assert!(outcome.txs[late].result.is_ok(), "valid in block order");
    let stats = outcome.stats;
    assert_eq!(stats.aborts.iter().sum::<u32>(), 1);
    assert_eq!(stats.aborts[late], 1);
    let conflict = &stats.conflicts[0];
    assert_eq!(conflict.key, lockstep_executor::StateKey::Account(sender));
    assert_eq!(conflict.writer, Some(early));
    assert!(stats.executions[..late].iter().all(|e| *e == 1), "everything before it stood");
}

#[test]
fn a_later_range_stops_where_it_reads_the_beneficiary() {
    // Independent token moves, but one late transaction pays the beneficiary, so it reads
    // the balance that every fee before it decides.
    let mut workload = WorkloadKind::Erc20Transfers.generate(40 * 50_400);
    let payer = 30;
    let tx = &mut workload.block.transactions[payer];
    tx.kind = lockstep_executor::revm::primitives::TxKind::Call(workload.block.beneficiary);
    tx.data = Default::default();
    tx.value = alloy_primitives::U256::from(1);
    let stats = assert_identical(&workload, &ParallelConfig::always_ranges(2)).stats;
    assert!(stats.ranges > 0);
    assert_eq!(stats.executions[payer], 2, "tried in its range, then in order");
    assert!(stats.executions[payer + 1..].iter().all(|e| *e == 1), "not tried after it");
    assert_eq!(stats.aborts.iter().sum::<u32>(), 0, "a stop is not a conflict");
    for threads in [3, 8] {
        assert_identical(&workload, &ParallelConfig::always_ranges(threads));
    }
}

//! The benchmark's measurements: every row checked, the plain revm baseline doing the same
//! work as the executor.

use lockstep_executor::{InMemoryStorage, ParallelConfig, StateDiff, sequential};
use lockstep_harness::{
    WorkloadKind,
    bench::{self, StorageKind},
};

#[test]
fn the_revm_baseline_uses_the_gas_the_executor_does() {
    for kind in WorkloadKind::ALL {
        let workload = kind.generate(40 * kind.gas_per_tx());
        let store = InMemoryStorage::from_diff(&StateDiff::from_alloc(&workload.alloc));
        let outcome = sequential::execute(&store, &workload.block).unwrap();
        assert!(outcome.gas_used >= 40 * 21_000, "{}", workload.name);
        assert_eq!(
            bench::revm_loop(&workload, &store).unwrap(),
            outcome.gas_used,
            "{}",
            workload.name
        );
    }
}

#[test]
fn rows_cover_each_store_with_positive_times() {
    let workload = WorkloadKind::Erc20Transfers.generate(30 * 50_400);
    // Each row's peak memory comes from `peak`, asked once per store, before the row.
    let mut asked = Vec::new();
    let mut peak = |storage| {
        asked.push(storage);
        Ok(100.0 + asked.len() as f64)
    };
    let rows = bench::measure_all(
        &workload,
        &[StorageKind::Memory, StorageKind::Mdbx],
        &ParallelConfig::always_parallel(2),
        2,
        &mut peak,
    )
    .unwrap();
    assert_eq!(asked, [StorageKind::Memory, StorageKind::Mdbx]);
    assert_eq!(
        rows.iter().map(|r| (r.storage, r.peak_rss_mb)).collect::<Vec<_>>(),
        [(StorageKind::Memory, 101.0), (StorageKind::Mdbx, 102.0)]
    );
    for row in &rows {
        assert_eq!(row.txs, 30);
        assert!(row.gas > 30 * 21_000);
        assert!(row.sequential_ms > 0.0 && row.parallel_ms > 0.0 && row.revm_baseline_ms > 0.0);
        assert!(row.ceiling > 0.0);
        assert!((row.speedup - row.sequential_ms / row.parallel_ms).abs() < 1e-9);
    }
}

#[test]
fn the_ceiling_runs_one_copy_per_thread_and_alone_in_turn() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = AtomicUsize::new(0);
    let threads = std::sync::Mutex::new(std::collections::HashSet::new());
    let work = || {
        calls.fetch_add(1, Ordering::Relaxed);
        threads.lock().unwrap().insert(std::thread::current().id());
        Ok::<_, String>(std::hint::black_box((0..20_000u64).sum::<u64>()))
    };
    let ceiling = bench::Copies::new(3).ceiling(4, 2, work).unwrap();
    assert!(ceiling.is_finite() && ceiling > 0.0);
    // Four rounds: two runs alone, and two in each of the three copies.
    assert_eq!(calls.load(Ordering::Relaxed), 4 * (2 + 3 * 2));
    // The calling thread, and two others per round.
    assert!(threads.lock().unwrap().len() >= 3);
}

#[test]
fn a_failing_copy_fails_the_ceiling() {
    let failed = bench::Copies::new(2).ceiling(3, 1, || Err::<(), _>("store gone"));
    assert_eq!(failed, Err("store gone"));
}

#[test]
fn ranges_rows_run_on_both_stores_and_say_so() {
    // Each range reads through its own reader: on MDBX, its own read transaction.
    let workload = WorkloadKind::AmmSwaps.generate(64 * WorkloadKind::AmmSwaps.gas_per_tx());
    let stores = [StorageKind::Memory, StorageKind::Mdbx];
    for threads in [2, 3] {
        let config = ParallelConfig::always_ranges(threads);
        let rows = bench::measure_all(&workload, &stores, &config, 1, &mut |_| Ok(0.0)).unwrap();
        assert_eq!(rows.len(), 2);
        for row in &rows {
            assert!(row.ranges >= threads && row.fallback.is_none(), "{row:?}");
            assert_eq!(row.re_executions, 0, "independent swaps");
            assert_eq!(bench::path_name(row.fallback, row.ranges), "ranges");
        }
    }
}

#[test]
fn the_memory_command_prints_the_peak_of_a_process_that_ran_the_block() {
    let run = |workload: &str, gas: &str| {
        let args = ["memory", "--workload", workload, "--storage", "mdbx", "--gas", gas];
        std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(args)
            .args(["--threads", "2"])
            .output()
            .unwrap()
    };
    let small = run("raw-transfers", "2100000");
    assert!(small.status.success(), "{}", String::from_utf8_lossy(&small.stderr));
    let small: f64 = String::from_utf8_lossy(&small.stdout).trim().parse().unwrap();
    // A hundred transfers need a few MiB beyond the program; 20,000 need tens more.
    let large = run("raw-transfers", "420000000");
    let large: f64 = String::from_utf8_lossy(&large.stdout).trim().parse().unwrap();
    assert!(small > 1.0 && large > small + 10.0, "{small} MiB, then {large} MiB");
}

#[test]
fn peak_memory_is_this_processs_peak_after_the_runs() {
    let workload = WorkloadKind::Erc20Transfers.generate(20 * 50_400);
    let config = ParallelConfig::always_parallel(2);
    let peak = bench::peak_memory(&workload, StorageKind::Memory, &config).unwrap();
    let after = bench::peak_rss_mb();
    assert!(peak > 0.0 && peak <= after && peak > after - 1.0, "{peak} MiB, {after} after");
}

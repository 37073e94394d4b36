//! Mainnet snapshots: every shipped block matches its header on both paths and stores, its
//! outcome summary is reviewed with insta, and broken or incomplete snapshots give clear errors.

use lockstep_executor::ParallelConfig;
use lockstep_harness::{bench::StorageKind, fixtures};
use lockstep_snapshots::replay::{self, Snapshot};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    let dir =
        fixtures::default_snapshots_dir().expect("SNAPSHOTS_DIR or ../shared/mainnet must exist");
    fixtures::materialize(&dir.join("ethereum-blocks.tar.zst")).unwrap().join("ethereum")
}

fn load_all() -> Vec<Snapshot> {
    let root = root();
    let (blocks, hashes) = replay::list(&root).unwrap();
    blocks.iter().map(|(_, dir)| replay::load(dir, &hashes).unwrap()).collect()
}

#[test]
fn every_shipped_block_matches_its_header() {
    let snapshots = load_all();
    assert_eq!(snapshots.len(), 57);
    let config = ParallelConfig::with_threads(2);
    let mut summaries = Vec::new();
    let mut checked_receipts = 0;
    for (i, snapshot) in snapshots.iter().enumerate() {
        // Every block in memory; every fourth also on MDBX (all of them run in `cargo xtask snapshots`).
        let stores: &[StorageKind] = if i % 4 == 0 {
            &[StorageKind::Memory, StorageKind::Mdbx]
        } else {
            &[StorageKind::Memory]
        };
        let (reports, outcome) = replay::replay(snapshot, stores, &config, 1);
        for report in &reports {
            assert!(
                report.ok,
                "block {} on {:?}: {:?}",
                report.block, report.storage, report.error
            );
            checked_receipts += usize::from(report.receipts_root_checked);
        }
        summaries.push(replay::summarize(snapshot.number, &outcome.unwrap()));
    }
    assert!(checked_receipts >= 40, "receipts roots checked for only {checked_receipts} blocks");
    insta::assert_json_snapshot!("mainnet_outcomes", summaries);
}

#[test]
fn blocks_taking_turns_give_each_its_own_outcome() {
    // Rounds alternate across blocks and stores: each block's reports and outcome must still
    // be its own, as when it runs alone.
    let snapshots: Vec<Snapshot> =
        load_all().into_iter().filter(|s| s.block.transactions.len() >= 20).take(3).collect();
    let config = ParallelConfig::with_threads(2);
    let stores = [StorageKind::Memory, StorageKind::Mdbx];
    let together = replay::replay_all(&snapshots, &stores, &config, 2);
    assert_eq!(together.len(), snapshots.len());
    for (snapshot, (reports, outcome)) in snapshots.iter().zip(together) {
        assert_eq!(reports.len(), 2);
        for report in &reports {
            assert!(report.ok && report.block == snapshot.number, "{report:?}");
        }
        let alone = replay::replay(snapshot, &[StorageKind::Memory], &config, 1).1.unwrap();
        assert_eq!(
            serde_json::to_value(replay::summarize(snapshot.number, &outcome.unwrap())).unwrap(),
            serde_json::to_value(replay::summarize(snapshot.number, &alone)).unwrap()
        );
    }
}

#[test]
fn every_shipped_block_matches_when_forced_parallel() {
    // The same blocks through Block-STM even where the executor would choose sequential.
    let config = ParallelConfig::always_parallel(3);
    for snapshot in load_all().iter().filter(|s| s.block.transactions.len() >= 2) {
        let (reports, _) = replay::replay(snapshot, &[StorageKind::Memory], &config, 1);
        assert!(reports[0].ok, "block {}: {:?}", snapshot.number, reports[0].error);
    }
}

fn copy_block(number: &str, to: &Path) -> PathBuf {
    let from = root().join(number);
    let dir = to.join(number);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["block.json", "pre_state.json"] {
        std::fs::copy(from.join(file), dir.join(file)).unwrap();
    }
    std::fs::copy(root().join("block_hashes.json"), to.join("block_hashes.json")).unwrap();
    dir
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_string(&value).unwrap()).unwrap();
}

#[test]
fn malformed_snapshots_name_the_file_and_the_rest_still_run() {
    let tmp = tempfile::tempdir().unwrap();
    let truncated = copy_block("19934116", tmp.path());
    let text = std::fs::read_to_string(truncated.join("block.json")).unwrap();
    std::fs::write(truncated.join("block.json"), &text[..text.len() / 2]).unwrap();
    let bad_hex = copy_block("19933612", tmp.path());
    edit_json(&bad_hex.join("pre_state.json"), |pre| {
        let first = pre.as_object_mut().unwrap().values_mut().next().unwrap();
        first["balance"] = "0xzz".into();
    });
    let bad_type = copy_block("19933597", tmp.path());
    edit_json(&bad_type.join("block.json"), |block| {
        block["transactions"][0]["type"] = "0x7f".into();
    });
    copy_block("19929064", tmp.path());

    let (blocks, hashes) = replay::list(tmp.path()).unwrap();
    let results: Vec<(u64, Result<Snapshot, String>)> = blocks
        .iter()
        .map(|(n, dir)| (*n, replay::load(dir, &hashes).map_err(|e| e.to_string())))
        .collect();
    let error = |n: u64| {
        results.iter().find(|(b, _)| *b == n).unwrap().1.as_ref().err().cloned().unwrap_or_default()
    };
    assert!(
        error(19934116).contains("19934116/block.json") && error(19934116).contains("truncated"),
        "{}",
        error(19934116)
    );
    assert!(error(19933612).contains("pre_state.json"), "{}", error(19933612));
    assert!(
        error(19933597).contains("transaction 0") && error(19933597).contains("type 127"),
        "{}",
        error(19933597)
    );
    let good = results.iter().find(|(b, _)| *b == 19929064).unwrap().1.as_ref().unwrap();
    let (reports, _) =
        replay::replay(good, &[StorageKind::Memory], &ParallelConfig::with_threads(2), 1);
    assert!(reports[0].ok, "{:?}", reports[0].error);
}

#[test]
fn a_pre_state_missing_what_the_block_reads_is_reported_as_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_block("19934116", tmp.path());
    let block: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("block.json")).unwrap()).unwrap();
    let mut pre: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pre_state.json")).unwrap())
            .unwrap();
    // Drop the contract the block's first contract call talks to.
    let target = block["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tx| {
            tx["input"] != "0x"
                && pre
                    .get(tx["to"].as_str().unwrap_or_default())
                    .is_some_and(|a| a.get("code").is_some())
        })
        .and_then(|tx| tx["to"].as_str())
        .unwrap()
        .to_string();
    pre.remove(&target);
    std::fs::write(dir.join("pre_state.json"), serde_json::to_string(&pre).unwrap()).unwrap();

    let (_, hashes) = replay::list(tmp.path()).unwrap();
    let snapshot = replay::load(&dir, &hashes).unwrap();
    let (reports, _) =
        replay::replay(&snapshot, &[StorageKind::Memory], &ParallelConfig::with_threads(2), 1);
    let error = reports[0].error.clone().unwrap_or_default();
    assert!(!reports[0].ok);
    assert!(error.contains("incomplete snapshot"), "{error}");
    assert!(error.to_lowercase().contains(&target.to_lowercase()), "{error} should name {target}");
}

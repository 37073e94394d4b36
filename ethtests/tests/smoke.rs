//! CI smoke run: a fixed slice of every fixture set through both paths (and both stores for
//! state tests).
//! The whole sets run with `cargo xtask ethtests`.

use lockstep_ethtests::{
    fixtures,
    report::Report,
    runner::{self, Shard},
    state::{RunOptions, StorageChoice},
};

fn smoke(archive: &str, shard: &str, storage: StorageChoice) -> Report {
    let root =
        fixtures::default_ethtests_dir().expect("ETHTESTS_DIR or ../shared/ethtests must exist");
    let files = runner::collect_files(&[root.join(archive)]).unwrap();
    let files = shard.parse::<Shard>().unwrap().select(files);
    let options = RunOptions { storage, threads: 2, fork: None, filter: None };
    let report = Report::new(&runner::run(&files, &options, false));
    assert_eq!(report.failed, 0, "{archive} {shard}:\n{}", report.summary(10));
    assert!(report.passed > 0);
    report
}

#[test]
fn general_state_tests_slice() {
    let report = smoke("GeneralStateTests.tar.zst", "1/4", StorageChoice::Memory);
    assert!(report.passed > 1_000, "{}", report.passed);
}

#[test]
fn general_state_tests_slice_on_mdbx() {
    smoke("GeneralStateTests.tar.zst", "3/20", StorageChoice::Both);
}

#[test]
fn legacy_tests_slice() {
    smoke("legacytests-Cancun-GeneralStateTests.tar.zst", "3/16", StorageChoice::Memory);
}

#[test]
fn execution_spec_tests_slice() {
    smoke("eest-fusaka-devnet-5.tar.zst", "1/2", StorageChoice::Memory);
}

#[test]
fn blockchain_tests_slice() {
    smoke("BlockchainTests-GeneralStateTests.tar.zst", "5/40", StorageChoice::Memory);
}

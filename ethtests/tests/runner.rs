//! The state-test runner: reports, filters, sharding, and bad input that fails only its file.

use lockstep_ethtests::{
    fixtures,
    report::{Outcome, Report, junit},
    runner::{self, Shard},
    state::{RunOptions, StorageChoice, run_file},
};
use std::path::{Path, PathBuf};

fn general_state_tests() -> PathBuf {
    let root =
        fixtures::default_ethtests_dir().expect("ETHTESTS_DIR or ../shared/ethtests must exist");
    fixtures::materialize(&root.join("GeneralStateTests.tar.zst"))
        .unwrap()
        .join("GeneralStateTests")
}

fn example(name: &str) -> (PathBuf, String) {
    let path = general_state_tests().join("stExample").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

fn options() -> RunOptions {
    RunOptions { storage: StorageChoice::Both, threads: 2, fork: None, filter: None }
}

fn statuses(results: &[lockstep_ethtests::report::CaseResult]) -> Vec<&Outcome> {
    results.iter().map(|r| &r.outcome).collect()
}

#[test]
fn a_real_vector_passes_on_both_stores() {
    let (path, text) = example("add11.json");
    let results = run_file(&path, &text, &options());
    assert_eq!(statuses(&results), vec![&Outcome::Passed]);
    assert!(results[0].paths.sequential > std::time::Duration::ZERO);
}

#[test]
fn wrong_expectations_fail_with_the_field() {
    let (path, text) = example("add11.json");
    let wrong_root = text.replace(
        "0xe8010ce590f401c9d61fef8ab05bea9bcec24281b795e5868809bc4e515aa530",
        &format!("0x{}", "11".repeat(32)),
    );
    let results = run_file(&path, &wrong_root, &options());
    let Outcome::Failed(reason) = &results[0].outcome else { panic!("{results:?}") };
    assert!(reason.contains("state root: expected 0x1111"), "{reason}");
    assert!(reason.contains("indexes d0 g0 v0"), "{reason}");

    let wrong_logs = text.replace(
        "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
        &format!("0x{}", "22".repeat(32)),
    );
    let Outcome::Failed(reason) = &run_file(&path, &wrong_logs, &options())[0].outcome else {
        panic!()
    };
    assert!(reason.contains("logs hash"), "{reason}");
}

#[test]
fn filters_select_tests_and_forks() {
    let dir = general_state_tests().join("stExample");
    let (path, text) = example("add11.json");
    let only = |filter: Option<&str>, fork: Option<&str>| {
        let options = RunOptions {
            filter: filter.map(|f| regex::Regex::new(f).unwrap()),
            fork: fork.map(String::from),
            ..options()
        };
        run_file(&path, &text, &options).len()
    };
    assert_eq!(only(Some("^add11$"), None), 1);
    assert_eq!(only(Some("^nothing"), None), 0);
    assert_eq!(only(None, Some("cancun")), 1, "fork names match case-insensitively");
    assert_eq!(only(None, Some("Prague")), 0);
    assert!(dir.is_dir());
}

#[test]
fn shards_partition_the_files() {
    let files = runner::collect_files(&[general_state_tests()]).unwrap();
    assert!(files.len() > 2_000);
    for count in 1..=4 {
        let mut seen: Vec<PathBuf> = (1..=count)
            .flat_map(|i| format!("{i}/{count}").parse::<Shard>().unwrap().select(files.clone()))
            .collect();
        seen.sort();
        assert_eq!(seen, files, "{count} shards must cover every file exactly once");
    }
    for bad in ["0/2", "3/2", "1/0", "x/2", "12"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn malformed_files_fail_alone_and_name_the_problem() {
    let (_, good) = example("add11.json");
    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        write(dir.path(), "a_good.json", &good),
        write(dir.path(), "b_not_json.json", "{ this is not json"),
        write(dir.path(), "c_bad_hex.json", &good.replace("\"0x0de0b6b3a7640000\"", "\"0xzz\"")),
        write(dir.path(), "d_unknown_fork.json", &good.replace("\"Cancun\"", "\"Atlantis\"")),
        write(
            dir.path(),
            "e_missing_field.json",
            &good.replace("\"transaction\"", "\"transactionz\""),
        ),
        write(dir.path(), "f_truncated.json", &good[..good.len() / 2]),
    ];
    let results = runner::run(&files, &options(), false);
    let by_file =
        |name: &str| results.iter().filter(|r| r.file.ends_with(name)).collect::<Vec<_>>();
    assert_eq!(by_file("a_good.json")[0].outcome, Outcome::Passed);
    for (name, needle) in [
        ("b_not_json.json", "malformed state test JSON"),
        ("c_bad_hex.json", "malformed state test JSON"),
        ("d_unknown_fork.json", "unknown fork"),
        ("e_missing_field.json", "missing field `transaction`"),
        ("f_truncated.json", "EOF"),
    ] {
        let cases = by_file(name);
        assert_eq!(cases.len(), 1, "{name}");
        let Outcome::Failed(reason) = &cases[0].outcome else { panic!("{name}: {:?}", cases[0]) };
        assert!(reason.contains(needle), "{name}: {reason}");
    }

    let report = Report::new(&results);
    assert_eq!((report.passed, report.failed, report.skipped), (1, 5, 0));
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["failed"], 5);
    assert_eq!(json["failures"].as_array().unwrap().len(), 5);
    assert!(json["failures"][0]["reason"].as_str().is_some());
    let xml = junit(&results);
    assert_eq!(xml.matches("<testsuite ").count(), 6);
    assert_eq!(xml.matches("<failure ").count(), 5);
}

#[test]
fn skips_are_reported_as_skipped() {
    let dir = general_state_tests();
    let file = dir.join("stTransactionTest/ValueOverflowParis.json");
    let results = runner::run(&[file], &options(), false);
    assert_eq!(results.len(), 1);
    assert!(matches!(&results[0].outcome, Outcome::Skipped(why) if why.contains("256 bits")));
    let collision = runner::collect_files(&[dir.join("stSStoreTest")]).unwrap();
    let init = collision
        .iter()
        .find(|f| f.to_string_lossy().contains("InitCollision"))
        .expect("an InitCollision fixture");
    let results = runner::run(std::slice::from_ref(init), &options(), false);
    assert!(results.iter().all(|r| matches!(r.outcome, Outcome::Skipped(_))), "{results:?}");
}

#[test]
fn single_files_and_folders_can_be_named() {
    let dir = general_state_tests().join("stExample");
    let file = dir.join("add11.json");
    assert_eq!(runner::collect_files(std::slice::from_ref(&file)).unwrap(), vec![file.clone()]);
    let both = runner::collect_files(&[dir.clone(), file.clone()]).unwrap();
    assert_eq!(both, runner::collect_files(&[dir]).unwrap(), "a file named twice runs once");
    assert!(both.contains(&file));
}

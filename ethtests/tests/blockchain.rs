//! Blockchain tests: real chains pass, and each kind of wrong chain is caught and named.

use alloy_primitives::{B256, hex};
use alloy_rlp::{Decodable, Encodable};
use lockstep_ethtests::{
    blockchain::run_file,
    fixtures,
    report::{Outcome, Report},
    runner,
    state::{RunOptions, StorageChoice},
};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn set(archive: &str) -> PathBuf {
    let root =
        fixtures::default_ethtests_dir().expect("ETHTESTS_DIR or ../shared/ethtests must exist");
    fixtures::materialize(&root.join(archive)).unwrap()
}

fn valid_invalid() -> PathBuf {
    set("BlockchainTests-ValidInvalidBlocks.tar.zst")
}

fn options() -> RunOptions {
    RunOptions { storage: StorageChoice::Memory, threads: 2, fork: None, filter: None }
}

fn run(files: &[PathBuf]) -> Report {
    Report::new(&runner::run(files, &options(), false))
}

#[test]
fn valid_and_invalid_block_chains_pass() {
    let files = fixtures::json_files(&valid_invalid());
    let invalid = files.iter().filter(|f| f.to_string_lossy().contains("InvalidBlocks")).count();
    assert!(invalid > 100 && files.len() > 300, "{invalid} of {} files", files.len());
    let report = run(&files);
    assert_eq!(report.failed, 0, "{}", report.summary(10));
    assert!(report.passed > 500, "{}", report.summary(0));
}

#[test]
fn pre_byzantium_chains_check_receipts_with_state_roots() {
    let dir = set("BlockchainTests-GeneralStateTests.tar.zst");
    let files: Vec<_> = fixtures::json_files(&dir)
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("Pyspecs/frontier/opcodes"))
        .collect();
    let report = run(&files);
    assert_eq!(report.failed, 0, "{}", report.summary(10));
    for fork in ["Frontier", "Homestead", "Byzantium", "Cancun"] {
        assert!(report.forks.get(fork).is_some_and(|c| c.passed > 0), "{fork}: {report:?}");
    }
}

/// One fixture file as JSON, with the single test it holds.
fn fixture(relative: &str) -> (PathBuf, Value) {
    let path = valid_invalid().join(relative);
    let json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (path, json)
}

fn test_of(json: &mut Value) -> &mut Value {
    json.as_object_mut().unwrap().values_mut().next().unwrap()
}

/// The first block of the fixture's test that is marked invalid, with its index.
fn invalid_block(json: &mut Value) -> (usize, &mut Value) {
    let blocks = test_of(json)["blocks"].as_array_mut().unwrap();
    blocks.iter_mut().enumerate().find(|(_, b)| b.get("expectException").is_some()).unwrap()
}

/// The single case's failure message after running `json` as the file at `path`.
fn failure(path: &Path, json: &Value) -> String {
    let results = run_file(path, &json.to_string(), &options());
    assert_eq!(results.len(), 1, "{results:?}");
    match &results[0].outcome {
        Outcome::Failed(reason) => reason.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn an_unmodified_fixture_passes() {
    let (path, json) = fixture("ValidBlocks/bcExample/basefeeExample.json");
    let results = run_file(&path, &json.to_string(), &options());
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome, Outcome::Passed);
    assert_eq!(results[0].blocks, Some(1));
}

#[test]
fn a_wrong_receipts_root_rejects_the_block() {
    let (path, mut json) = fixture("ValidBlocks/bcExample/basefeeExample.json");
    let block = &mut test_of(&mut json)["blocks"][0];
    let bytes = hex::decode(block["rlp"].as_str().unwrap()).unwrap();
    let mut decoded =
        alloy_consensus::Block::<alloy_consensus::TxEnvelope>::decode(&mut bytes.as_slice())
            .unwrap();
    decoded.header.receipts_root = B256::repeat_byte(0x11);
    let mut encoded = Vec::new();
    decoded.encode(&mut encoded);
    block["rlp"] = Value::String(hex::encode_prefixed(encoded));
    let reason = failure(&path, &json);
    assert!(reason.contains("block 0: rejected: receipts root"), "{reason}");
}

#[test]
fn an_invalid_block_must_be_rejected() {
    let (path, mut json) = fixture("InvalidBlocks/bcInvalidHeaderTest/wrongStateRoot.json");
    let (index, block) = invalid_block(&mut json);
    block.as_object_mut().unwrap().remove("expectException");
    let reason = failure(&path, &json);
    assert!(reason.contains(&format!("block {index}: rejected: state root")), "{reason}");
}

#[test]
fn a_valid_block_marked_invalid_fails() {
    let (path, mut json) = fixture("ValidBlocks/bcExample/basefeeExample.json");
    test_of(&mut json)["blocks"][0]["expectException"] = "BlockException.INVALID_GASLIMIT".into();
    let reason = failure(&path, &json);
    assert!(reason.contains("block 0: accepted, but the fixture expects"), "{reason}");
}

#[test]
fn a_rejection_for_another_reason_fails() {
    let (path, mut json) = fixture("InvalidBlocks/bcInvalidHeaderTest/wrongStateRoot.json");
    let (_, block) = invalid_block(&mut json);
    block["expectException"] = "TransactionException.NONCE_MISMATCH_TOO_LOW".into();
    let reason = failure(&path, &json);
    assert!(reason.contains("rejected for another reason: state root"), "{reason}");
}

#[test]
fn a_wrong_post_state_names_the_account() {
    let (path, mut json) = fixture("ValidBlocks/bcExample/basefeeExample.json");
    let post = test_of(&mut json)["postState"].as_object_mut().unwrap();
    let (address, account) = post.iter_mut().last().unwrap();
    let address = address.clone();
    account["balance"] = "0x0123".into();
    let reason = failure(&path, &json);
    assert!(
        reason.to_lowercase().contains(&format!("post-state {}", address.to_lowercase())),
        "{reason}"
    );
}

#[test]
fn bad_input_fails_its_case_with_a_clear_message() {
    let (path, json) = fixture("ValidBlocks/bcExample/basefeeExample.json");
    let mut bad_hex = json.clone();
    test_of(&mut bad_hex)["blocks"][0]["rlp"] = "0xzz".into();
    assert!(failure(&path, &bad_hex).contains("block 0: rejected: block RLP is not hex"));

    let mut truncated = json.clone();
    let rlp = test_of(&mut truncated)["blocks"][0]["rlp"].as_str().unwrap().to_owned();
    test_of(&mut truncated)["blocks"][0]["rlp"] = rlp[..rlp.len() / 2].into();
    assert!(failure(&path, &truncated).contains("block 0: rejected: block RLP"));

    let mut network = json;
    test_of(&mut network)["network"] = "Atlantis".into();
    assert!(failure(&path, &network).contains("unknown network `Atlantis`"));

    let results = run_file(&path, "{\"broken\": ", &options());
    assert!(
        matches!(&results[..], [r] if matches!(&r.outcome, Outcome::Failed(m) if m.contains("malformed blockchain test JSON")))
    );
}

#[test]
fn a_wrong_execution_result_must_be_the_expected_one() {
    // A state root mismatch is what an executor bug looks like: it must not pass for a fixture
    // that expects some other header error.
    let (path, mut json) = fixture("InvalidBlocks/bcInvalidHeaderTest/wrongStateRoot.json");
    let (_, block) = invalid_block(&mut json);
    assert_eq!(block["expectException"], "BlockException.INVALID_STATE_ROOT");
    block["expectException"] = "BlockException.INVALID_GASLIMIT".into();
    let reason = failure(&path, &json);
    assert!(reason.contains("rejected for another reason: state root"), "{reason}");
}

//! The regression corpus (`fuzz/regressions/*.json`): every case that once made a parallel
//! run differ from the sequential one, replayed on every parallel configuration.

use lockstep_harness::case::{Case, regressions};

#[test]
fn every_saved_case_matches_sequential() {
    let paths = regressions().unwrap();
    assert!(!paths.is_empty(), "the corpus holds the cases that failed before");
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|path| {
            let failed = Case::load(path).and_then(|case| case.check());
            failed.err().map(|e| format!("{}: {e}", path.display()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_malformed_case_names_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, r#"{"spec": "SHANGHAI", "txs": [{"Transfer": {"from": 0}}]}"#).unwrap();
    let error = Case::load(&path).unwrap_err();
    assert!(error.contains("broken.json") && error.contains("missing field"), "{error}");
}

#[test]
fn a_saved_case_reads_back_as_written() {
    use lockstep_harness::random_block::{Target, TxSpec};
    let case = Case {
        spec: lockstep_executor::revm::primitives::hardfork::SpecId::PRAGUE,
        chaos: Some(7),
        txs: vec![
            TxSpec::Transfer { from: 1, to: Target::Precompile(3), value: 9 },
            TxSpec::Swap { from: 2, amount: 500, token1_in: true },
            TxSpec::FromBeneficiary { to: 0, value: 1 },
        ],
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.json");
    std::fs::write(&path, case.to_json()).unwrap();
    assert_eq!(Case::load(&path).unwrap(), case);
}

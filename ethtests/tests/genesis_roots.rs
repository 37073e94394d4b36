//! Every BlockchainTests fixture's `pre` allocation hashes to its genesis `stateRoot`.

use lockstep_ethtests::{fixtures, schema};
use lockstep_executor::{InMemoryStorage, StateDiff, state_root};
use rayon::prelude::*;
use std::collections::BTreeMap;

#[test]
fn blockchain_test_genesis_state_roots() {
    let root =
        fixtures::default_ethtests_dir().expect("ETHTESTS_DIR or ../shared/ethtests must exist");
    let sets: Vec<_> =
        ["BlockchainTests-GeneralStateTests.tar.zst", "BlockchainTests-ValidInvalidBlocks.tar.zst"]
            .iter()
            .map(|name| fixtures::materialize(&root.join(name)).unwrap())
            .collect();
    let files: Vec<_> = sets.iter().flat_map(|dir| fixtures::json_files(dir)).collect();
    assert!(files.len() > 3_000, "found only {} fixture files", files.len());

    let results: Vec<(usize, Vec<String>)> = files
        .par_iter()
        .map(|file| {
            let text = fixtures::read(file).unwrap();
            let tests: BTreeMap<String, schema::BlockchainGenesis> =
                match serde_json::from_str(&text) {
                    Ok(tests) => tests,
                    Err(e) => return (0, vec![format!("{}: {e}", file.display())]),
                };
            let mut failures = Vec::new();
            for (name, test) in &tests {
                let store =
                    InMemoryStorage::from_diff(&StateDiff::from_alloc(&schema::alloc(&test.pre)));
                let got = state_root(&store).unwrap();
                if got != test.genesis_block_header.state_root {
                    failures.push(format!(
                        "{}: {name}: root {got} != {}",
                        file.display(),
                        test.genesis_block_header.state_root
                    ));
                }
            }
            (tests.len(), failures)
        })
        .collect();
    let checked: usize = results.iter().map(|(n, _)| n).sum();
    let failures: Vec<&String> = results.iter().flat_map(|(_, f)| f).collect();
    assert!(
        failures.is_empty(),
        "{} of {checked} genesis roots differ:\n{}",
        failures.len(),
        failures.iter().take(20).map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
    );
    assert!(checked > 10_000, "checked only {checked} tests");
    eprintln!("{checked} genesis state roots match");
}

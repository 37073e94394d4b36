//! A random conflict-heavy block (hot accounts and slots, same-sender chains, transfers to
//! the beneficiary, CREATE and SELFDESTRUCT, reverts) through every parallel configuration,
//! which must all equal the sequential path.
//!
//! With `LOCKSTEP_SAVE_CASE=FILE` set, the case is written there as JSON before it runs:
//! `cargo xtask fuzz save ARTIFACT NAME` turns a crash into a fixture of the regression corpus.
#![no_main]

use lockstep_harness::case::Case;

libfuzzer_sys::fuzz_target!(|case: Case| {
    if let Some(path) = std::env::var_os("LOCKSTEP_SAVE_CASE") {
        std::fs::write(path, case.to_json()).expect("the case file is writable");
    }
    if let Err(divergence) = case.check() {
        panic!("{divergence}\n{}", case.to_json());
    }
});

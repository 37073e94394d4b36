//! General state tests: each post vector as a one-transaction block through both paths, and
//! the vectors of one test together as a multi-transaction block, parallel against sequential.

use crate::report::{CaseResult, Outcome, Paths};
use alloy_primitives::{Address, B256, U256, keccak256};
use lockstep_executor::{
    AccountDiff, Alloc, Block, BlockOutcome, GenesisAccount, InMemoryStorage, MdbxStorage,
    ParallelConfig, StateDiff, StateReader, Storage, logs_hash, parallel,
    revm::{context::TxEnv, primitives::hardfork::SpecId},
    sequential,
    state::credited,
    state_root,
};
use rayon::prelude::*;
use revm_statetest_types::{SpecName, Test, TestSuite, TestUnit};
use std::time::Instant;

pub use lockstep_harness::bench::StorageArg as StorageChoice;

/// How to run the cases of a file.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub storage: StorageChoice,
    /// Threads of the parallel path (at least 2 for the multi-transaction blocks).
    pub threads: usize,
    pub fork: Option<String>,
    pub filter: Option<regex::Regex>,
}

/// Cases revm cannot represent, by test-name prefix: reported as skipped, never as passed.
/// They apply to state tests and to their blockchain-test form alike.
pub const SKIPS: &[(&str, &str)] = &[
    (
        "InitCollision",
        "CREATE into an account with storage (EIP-7610): revm's state cannot hold it",
    ),
    ("create2collisionStorage", "CREATE2 into an account with storage (EIP-7610)"),
    ("dynamicAccountOverwriteEmpty", "CREATE into an account with storage (EIP-7610)"),
    ("RevertInCreateInInit", "CREATE into an account with storage (EIP-7610)"),
    ("test_init_collision", "CREATE into an account with storage (EIP-7610)"),
];

/// State tests whose transaction JSON cannot become a `TxEnv`. Their blockchain-test form
/// encodes the transaction as RLP, which the blockchain runner rejects as the fixture expects.
pub const STATE_TEST_SKIPS: &[(&str, &str)] =
    &[("ValueOverflow", "transaction value does not fit 256 bits: not representable as a TxEnv")];

/// Why the original Constantinople fork is skipped.
pub(crate) const CONSTANTINOPLE: &str =
    "original Constantinople (EIP-1283 without Petersburg's fix) is not in revm";

/// Forks revm cannot run.
fn fork_skip(spec: &SpecName) -> Option<&'static str> {
    match spec {
        SpecName::Constantinople | SpecName::ByzantiumToConstantinopleAt5 => Some(CONSTANTINOPLE),
        _ => None,
    }
}

/// Why a state test is skipped, if it is.
fn state_skip_reason(path: &str, test: &str) -> Option<&'static str> {
    skip_reason(path, test).or_else(|| {
        STATE_TEST_SKIPS.iter().find(|(prefix, _)| test.starts_with(prefix)).map(|(_, why)| *why)
    })
}

/// Why a test (state or blockchain form) is skipped, if it is.
pub fn skip_reason(path: &str, test: &str) -> Option<&'static str> {
    if path.contains("eip7610_create_collision") {
        return Some("CREATE into an account with storage (EIP-7610)");
    }
    SKIPS.iter().find(|(prefix, _)| test.starts_with(prefix)).map(|(_, why)| *why)
}

/// The fixture's fork name as written in reports.
pub fn fork_name(spec: &SpecName) -> String {
    format!("{spec:?}")
}

fn pre_alloc(unit: &TestUnit) -> Alloc {
    unit.pre
        .iter()
        .map(|(address, a)| {
            let account = GenesisAccount {
                nonce: a.nonce,
                balance: a.balance,
                code: a.code.clone(),
                storage: a.storage.iter().map(|(k, v)| (*k, *v)).collect(),
            };
            (*address, account)
        })
        .collect()
}

/// The pre-state, plus the block hashes state tests define: keccak of the decimal number.
fn pre_state(alloc: &Alloc, number: u64) -> StateDiff {
    let mut diff = StateDiff::from_alloc(alloc);
    for n in number.saturating_sub(256)..number {
        diff.block_hashes.insert(n, keccak256(n.to_string()));
    }
    diff
}

fn block_for(unit: &TestUnit, spec: SpecId, transactions: Vec<TxEnv>) -> Block {
    let env = &unit.env;
    let saturate = |v: U256| v.try_into().unwrap_or(u64::MAX);
    Block {
        spec,
        chain_id: env.current_chain_id.map_or(1, saturate),
        number: saturate(env.current_number),
        timestamp: saturate(env.current_timestamp),
        beneficiary: env.current_coinbase,
        base_fee: env.current_base_fee.map_or(0, saturate),
        gas_limit: saturate(env.current_gas_limit),
        difficulty: env.current_difficulty,
        prevrandao: Some(env.current_random.unwrap_or_default()),
        excess_blob_gas: env.current_excess_blob_gas.map(saturate),
        block_effects: false,
        transactions,
        ..Block::default()
    }
}

/// Runs `block` on a fresh store of the given kind: sequentially once, then in parallel with
/// each of `configs`, every parallel outcome checked against the sequential one; returns the
/// sequential outcome and the post-state root after committing it.
fn run_on<S: Storage>(
    mut store: S,
    block: &Block,
    configs: &[ParallelConfig],
    paths: &mut Paths,
) -> Result<(BlockOutcome, B256), String> {
    let start = Instant::now();
    let seq = sequential::execute(&store, block).map_err(|e| format!("sequential: {e}"))?;
    paths.sequential += start.elapsed();
    for config in configs {
        let start = Instant::now();
        let par = parallel::execute(&store, block, config).map_err(|e| format!("parallel: {e}"))?;
        paths.parallel += start.elapsed();
        if let Some(d) = seq.first_difference(&par) {
            return Err(format!("sequential != parallel ({} threads): {d}", config.threads));
        }
    }
    store.commit(&seq.diff).map_err(|e| e.to_string())?;
    if seq.txs.iter().any(|tx| tx.result.is_err()) {
        touch_coinbase(&mut store, block).map_err(|e| e.to_string())?;
    }
    let root = state_root(&store).map_err(|e| e.to_string())?;
    Ok((seq, root))
}

/// The fixtures' post-states come from geth's runner, which pays the coinbase a zero reward
/// even when the transaction is invalid. Before EIP-161 that touch creates an empty account.
fn touch_coinbase<S: Storage>(
    store: &mut S,
    block: &Block,
) -> Result<(), lockstep_executor::StorageError> {
    let before = store.reader()?.account(block.beneficiary)?;
    let after = credited(before, U256::ZERO, block.spec);
    if after != before {
        let mut diff = StateDiff::default();
        diff.accounts
            .insert(block.beneficiary, AccountDiff { account: after, ..Default::default() });
        store.commit(&diff)?;
    }
    Ok(())
}

/// [`run_on`] on each store the options name; the stores must agree.
fn run_everywhere(
    pre: &StateDiff,
    block: &Block,
    options: &RunOptions,
    threads: &[usize],
    paths: &mut Paths,
) -> Result<(BlockOutcome, B256), String> {
    // Block-STM at every thread count, and the block as speculative ranges at the most.
    let ranges = threads.iter().max().map(|&n| ParallelConfig::always_ranges(n));
    let block_stm = threads.iter().map(|&n| ParallelConfig::always_parallel(n));
    let configs: Vec<_> = block_stm.chain(ranges).collect();
    let mut memory = None;
    if options.storage.memory() {
        memory = Some(run_on(InMemoryStorage::from_diff(pre), block, &configs, paths)?);
    }
    if !options.storage.mdbx() {
        return memory.ok_or_else(|| "no store selected".into());
    }
    let dir = tempfile::tempdir().map_err(|e| format!("temporary store: {e}"))?;
    let store = MdbxStorage::create(dir.path(), pre).map_err(|e| e.to_string())?;
    let run = run_on(store, block, &configs, paths)?;
    if let Some((first, root)) = &memory {
        if let Some(d) = first.first_difference(&run.0) {
            return Err(format!("memory != mdbx: {d}"));
        }
        if *root != run.1 {
            return Err(format!("state root: memory {root} != mdbx {}", run.1));
        }
    }
    Ok(run)
}

/// Checks one post vector against the fixture.
fn check_vector(
    unit: &TestUnit,
    spec: SpecId,
    test: &Test,
    options: &RunOptions,
    paths: &mut Paths,
) -> Result<(), String> {
    let tx = match test.tx_env(unit) {
        Ok(tx) => tx,
        Err(_) if test.expect_exception.is_some() => return Ok(()),
        Err(e) => return Err(format!("cannot build the transaction: {e}")),
    };
    let block = block_for(unit, spec, vec![tx]);
    let pre = pre_state(&pre_alloc(unit), block.number);
    let (outcome, root) = run_everywhere(&pre, &block, options, &[options.threads.max(1)], paths)?;
    let tx = &outcome.txs[0];
    match (&test.expect_exception, &tx.result) {
        (Some(expected), Ok(result)) => {
            return Err(format!("expected exception {expected}, got {}", status(result)));
        }
        (None, Err(invalid)) => return Err(format!("unexpected invalid transaction: {invalid}")),
        _ => {}
    }
    if root != test.hash {
        return Err(format!("state root: expected {}, got {root}", test.hash));
    }
    let logs = tx.result.as_ref().map(|r| r.logs().to_vec()).unwrap_or_default();
    let got_logs = logs_hash(&logs);
    if got_logs != test.logs {
        return Err(format!("logs hash: expected {}, got {got_logs}", test.logs));
    }
    Ok(())
}

fn status(result: &lockstep_executor::revm::context::result::ExecutionResult) -> String {
    use lockstep_executor::revm::context::result::ExecutionResult::*;
    match result {
        Success { .. } => "success".into(),
        Revert { .. } => "revert".into(),
        Halt { reason, .. } => format!("halt ({reason:?})"),
    }
}

/// Sender of vector `k` in a multi-transaction block.
fn synthetic_sender(k: usize) -> Address {
    let mut bytes = [0x5e; 20];
    bytes[12..].copy_from_slice(&(k as u64).to_be_bytes());
    Address::from(bytes)
}

/// All vectors of one test and fork as one block, each transaction from its own copy of the
/// sender, executed sequentially and in parallel at 2 (or `--threads`) and twice as many threads.
fn check_block(
    unit: &TestUnit,
    spec: SpecId,
    tests: &[Test],
    options: &RunOptions,
    paths: &mut Paths,
) -> Result<(), String> {
    let mut alloc = pre_alloc(unit);
    let mut txs = Vec::new();
    for (k, test) in tests.iter().enumerate() {
        let Ok(mut tx) = test.tx_env(unit) else { continue };
        let sender = alloc.get(&tx.caller).cloned().unwrap_or_default();
        tx.caller = synthetic_sender(k);
        alloc.insert(tx.caller, sender);
        txs.push(tx);
    }
    let block = block_for(unit, spec, txs);
    let pre = pre_state(&alloc, block.number);
    let threads = [options.threads.max(2), options.threads.max(2) * 2];
    run_everywhere(&pre, &block, options, &threads, paths).map(drop)
}

pub(crate) fn catch<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        Err(format!("panicked: {message}"))
    })
}

/// Runs every selected case of one state test file.
pub fn run_file(path: &std::path::Path, text: &str, options: &RunOptions) -> Vec<CaseResult> {
    let file = path.display().to_string();
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let filtered_out = options.filter.as_ref().is_some_and(|re| !re.is_match(stem));
    if state_skip_reason(&file, stem).is_some() && filtered_out {
        return Vec::new();
    }
    if let Some(why) = state_skip_reason(&file, stem) {
        return vec![
            CaseResult::new(&file, stem, "-", None)
                .finish(Outcome::Skipped(why.into()), Paths::default()),
        ];
    }
    let suite: TestSuite = match serde_json::from_str(text) {
        Ok(suite) => suite,
        Err(e) => {
            return vec![CaseResult::file_error(&file, format!("malformed state test JSON: {e}"))];
        }
    };
    // Cases become jobs that run in parallel too, so one file of slow cases is not one core's.
    let mut jobs: Vec<Job<'_>> = Vec::new();
    for (name, unit) in &suite.0 {
        if options.filter.as_ref().is_some_and(|re| !re.is_match(name)) {
            continue;
        }
        for (spec_name, tests) in &unit.post {
            let fork = fork_name(spec_name);
            if options.fork.as_ref().is_some_and(|f| !f.eq_ignore_ascii_case(&fork)) {
                continue;
            }
            let case = |vector: Option<usize>| CaseResult::new(&file, name, &fork, vector);
            if *spec_name == SpecName::Unknown {
                let known = "Frontier..Osaka as named by the fixtures";
                let why = format!("unknown fork name in `post` (expected {known})");
                jobs.push(Job::Done(case(None).finish(Outcome::Failed(why), Paths::default())));
                continue;
            }
            if let Some(why) = fork_skip(spec_name).or_else(|| state_skip_reason(&file, name)) {
                jobs.extend(tests.iter().enumerate().map(|(k, _)| {
                    Job::Done(case(Some(k)).finish(Outcome::Skipped(why.into()), Paths::default()))
                }));
                continue;
            }
            let spec = spec_name.to_spec_id();
            for (k, test) in tests.iter().enumerate() {
                jobs.push(Job::Vector { case: case(Some(k)), unit, spec, test });
            }
            if tests.len() >= 2 {
                jobs.push(Job::Block { case: case(None), unit, spec, tests });
            }
        }
    }
    jobs.into_par_iter().map(|job| job.run(options)).collect()
}

/// One case of a state test file.
enum Job<'a> {
    Done(CaseResult),
    Vector { case: CaseResult, unit: &'a TestUnit, spec: SpecId, test: &'a Test },
    Block { case: CaseResult, unit: &'a TestUnit, spec: SpecId, tests: &'a [Test] },
}

impl Job<'_> {
    fn run(self, options: &RunOptions) -> CaseResult {
        let mut paths = Paths::default();
        match self {
            Job::Done(result) => result,
            Job::Vector { case, unit, spec, test } => {
                let outcome = match catch(|| check_vector(unit, spec, test, options, &mut paths)) {
                    Ok(()) => Outcome::Passed,
                    Err(e) => Outcome::Failed(format!(
                        "indexes d{} g{} v{}: {e}",
                        test.indexes.data, test.indexes.gas, test.indexes.value
                    )),
                };
                case.finish(outcome, paths)
            }
            Job::Block { case, unit, spec, tests } => {
                let outcome = match catch(|| check_block(unit, spec, tests, options, &mut paths)) {
                    Ok(()) => Outcome::Passed,
                    Err(e) => Outcome::Failed(format!("block of {} vectors: {e}", tests.len())),
                };
                case.finish(outcome, paths)
            }
        }
    }
}

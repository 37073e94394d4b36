//! Blockchain tests: each block decoded from RLP, checked against its parent, executed by the
//! sequential and the parallel path and checked against its own header; the state at the
//! chain's head checked against `postState` / `postStateHash`.
//!
//! Header rules are those of the proof-of-stake era and the fork-independent ones (number,
//! timestamp, gas limit, extra data, base fee, blob gas, roots). Proof-of-work difficulty,
//! seals and ommer ancestry are not checked (the fixtures use `NoProof`, and the sets here mark
//! no pre-merge block invalid); ommers are held to at most two, 1 to 6 generations old.
//! Prague's requests hash must be present but is not recomputed yet, so a block with wrong
//! requests is accepted.

use crate::{
    network::Network,
    report::{CaseResult, Outcome, Paths},
    schema::{self, BlockchainTest, FixtureBlock},
    state::{CONSTANTINOPLE, RunOptions, catch, skip_reason},
};
use alloy_consensus::{Header, TxEnvelope, constants::EMPTY_OMMER_ROOT_HASH, proofs};
use alloy_eips::{
    eip1559::{BaseFeeParams, INITIAL_BASE_FEE},
    eip4844::DATA_GAS_PER_BLOB,
    eip7840::BlobParams,
};
use alloy_primitives::{Address, B256, U256, hex};
use alloy_rlp::Decodable;
use lockstep_executor::{
    Account, Block, BlockOutcome, InMemoryStorage, Ommer, ParallelConfig, StateDiff, Storage,
    Withdrawal, parallel,
    revm::primitives::hardfork::SpecId,
    sequential, state_root,
    tx::{sender, tx_env},
};
use rayon::prelude::*;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Instant,
};

type RlpBlock = alloy_consensus::Block<TxEnvelope>;

/// The kind of rule a rejected block broke, matched against the fixture's expected exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Rlp,
    Block,
    /// The header disagrees with what execution produced (gas used, receipts, bloom, state
    /// root): an executor bug looks like this too, so it must be exactly what the fixture expects.
    Result,
    Transaction,
}

#[derive(Debug)]
struct Rejection {
    class: Class,
    message: String,
}

fn reject(class: Class) -> impl Fn(String) -> Rejection {
    move |message| Rejection { class, message }
}

impl Class {
    /// Whether a rejection of this class fits `expected` (`A|B|…`, each `BlockException.X` or
    /// `TransactionException.X`). A transaction that does not decode breaks a transaction rule.
    fn fits(self, expected: &str) -> bool {
        expected.split('|').any(|name| {
            // A header missing a fork's field (or with an extra one) may fail to decode.
            if name.ends_with(".INCORRECT_BLOCK_FORMAT") {
                return matches!(self, Class::Rlp | Class::Block);
            }
            const RESULTS: [&str; 4] = [
                "INVALID_STATE_ROOT",
                "INVALID_RECEIPTS_ROOT",
                "INVALID_GAS_USED",
                "INVALID_LOG_BLOOM",
            ];
            let kind = if name.contains(".RLP_") {
                Class::Rlp
            } else if RESULTS.iter().any(|r| name == format!("BlockException.{r}")) {
                Class::Result
            } else if name.starts_with("BlockException.") {
                Class::Block
            } else if name.starts_with("TransactionException.") {
                Class::Transaction
            } else {
                return true;
            };
            kind == self || (self == Class::Rlp && kind == Class::Transaction)
        })
    }
}

/// A block in the chain, with the state after it.
#[derive(Debug)]
struct Node {
    header: Header,
    spec: SpecId,
    store: InMemoryStorage,
}

/// Runs every selected test of one blockchain test file.
pub fn run_file(path: &std::path::Path, text: &str, options: &RunOptions) -> Vec<CaseResult> {
    let file = path.display().to_string();
    let tests: std::collections::BTreeMap<String, BlockchainTest> = match serde_json::from_str(text)
    {
        Ok(tests) => tests,
        Err(e) => {
            let message = format!("malformed blockchain test JSON: {e}");
            return vec![CaseResult::file_error(&file, message)];
        }
    };
    let selected: Vec<(&String, &BlockchainTest)> = tests
        .iter()
        .filter(|(name, test)| {
            options.filter.as_ref().is_none_or(|re| re.is_match(name))
                && options.fork.as_ref().is_none_or(|f| f.eq_ignore_ascii_case(&test.network))
        })
        .collect();
    // Tests run in parallel too, so one file of long chains is not one core's.
    selected
        .into_par_iter()
        .map(|(name, test)| {
            let case = CaseResult::chain(&file, name, &test.network, test.blocks.len());
            if let Some(why) = skip_reason(&file, name).or_else(|| network_skip(&test.network)) {
                return case.finish(Outcome::Skipped(why.into()), Paths::default());
            }
            let mut paths = Paths::default();
            let outcome = match catch(|| run_test(test, options, &mut paths)) {
                Ok(()) => Outcome::Passed,
                Err(e) => Outcome::Failed(e),
            };
            case.finish(outcome, paths)
        })
        .collect()
}

/// Networks revm cannot run.
fn network_skip(network: &str) -> Option<&'static str> {
    (network == "Constantinople").then_some(CONSTANTINOPLE)
}

fn run_test(test: &BlockchainTest, options: &RunOptions, paths: &mut Paths) -> Result<(), String> {
    let network = Network::parse(&test.network)?;
    let genesis = RlpBlock::decode(&mut test.genesis_rlp.as_ref())
        .map_err(|e| format!("genesisRLP: {e}"))?
        .header;
    let genesis_hash = genesis.hash_slow();
    if genesis_hash != test.genesis_block_header.hash {
        let expected = test.genesis_block_header.hash;
        return Err(format!("genesis hash: expected {expected}, got {genesis_hash}"));
    }
    let mut pre = StateDiff::from_alloc(&schema::alloc(&test.pre));
    pre.block_hashes.insert(0, genesis_hash);
    let genesis_store = InMemoryStorage::from_diff(&pre);
    let genesis_root = state_root(&genesis_store).map_err(|e| e.to_string())?;
    expect("genesis state root", genesis.state_root, genesis_root)?;
    let spec = network.spec(0, genesis.timestamp);
    let mut chain = HashMap::new();
    chain.insert(genesis_hash, Node { header: genesis, spec, store: genesis_store });
    let config = ParallelConfig::always_parallel(options.threads.max(1));
    for (i, block) in test.blocks.iter().enumerate() {
        match (import(&chain, block, network, &config, paths)?, &block.expect_exception) {
            (Ok((hash, node)), None) => {
                chain.insert(hash, node);
            }
            (Ok(_), Some(expected)) => {
                return Err(format!("block {i}: accepted, but the fixture expects {expected}"));
            }
            (Err(rejection), None) => {
                return Err(format!("block {i}: rejected: {}", rejection.message));
            }
            (Err(rejection), Some(expected)) if !rejection.class.fits(expected) => {
                return Err(format!(
                    "block {i}: expected {expected}, rejected for another reason: {}",
                    rejection.message
                ));
            }
            (Err(_), Some(_)) => {}
        }
    }
    let head = chain.get(&test.lastblockhash).ok_or_else(|| {
        format!("lastblockhash {} is not in the imported chain", test.lastblockhash)
    })?;
    check_post_state(test, &head.store)
}

/// Decodes, validates and executes one block on its parent's state. `Ok(Err(_))` is a block
/// the chain rejects; `Err(_)` means the check itself failed (e.g. the paths diverged).
fn import(
    chain: &HashMap<B256, Node>,
    fixture: &FixtureBlock,
    network: Network,
    config: &ParallelConfig,
    paths: &mut Paths,
) -> Result<Result<(B256, Node), Rejection>, String> {
    let (block, size) = match decode(&fixture.rlp) {
        Ok(decoded) => decoded,
        Err(message) => return Ok(Err(Rejection { class: Class::Rlp, message })),
    };
    let Some(parent) = chain.get(&block.header.parent_hash) else {
        let message = format!("unknown parent {}", block.header.parent_hash);
        return Ok(Err(Rejection { class: Class::Block, message }));
    };
    let spec = network.spec(block.header.number, block.header.timestamp);
    if spec.is_enabled_in(SpecId::OSAKA) && size > MAX_BLOCK_RLP {
        let message = format!("block RLP is {size} bytes, above EIP-7934's {MAX_BLOCK_RLP}");
        return Ok(Err(Rejection { class: Class::Rlp, message }));
    }
    let header = check_header(&block.header, &parent.header, spec, parent.spec);
    let executable =
        match header.map_err(reject(Class::Block)).and_then(|()| executor_block(&block, spec)) {
            Ok(executable) => executable,
            Err(rejection) => return Ok(Err(rejection)),
        };
    let outcome = execute_both(&parent.store, &executable, config, paths)?;
    // Transactions first: fixtures that expect an invalid transaction commit to a body without it.
    let checked = check_transactions(&block.header, &executable, &outcome)
        .and_then(|()| check_body(&block, spec).map_err(reject(Class::Block)))
        .and_then(|()| check_results(&block.header, &parent.store, spec, &outcome));
    if let Err(rejection) = checked {
        return Ok(Err(rejection));
    }
    let hash = block.header.hash_slow();
    let mut store = parent.store.clone();
    store.commit(&outcome.diff).map_err(|e| e.to_string())?;
    let mut hashes = StateDiff::default();
    hashes.block_hashes.insert(block.header.number, hash);
    store.commit(&hashes).map_err(|e| e.to_string())?;
    let root = state_root(&store).map_err(|e| e.to_string())?;
    if root != block.header.state_root {
        let message = format!("state root: header {}, executed {root}", block.header.state_root);
        return Ok(Err(Rejection { class: Class::Result, message }));
    }
    Ok(Ok((hash, Node { header: block.header, spec, store })))
}

/// EIP-7934's limit on a block's RLP size (from Osaka): 10 MiB less a 2 MiB margin.
const MAX_BLOCK_RLP: usize = 8 * 1024 * 1024;

/// The block, and the size of its RLP.
fn decode(rlp: &str) -> Result<(RlpBlock, usize), String> {
    let bytes = hex::decode(rlp).map_err(|e| format!("block RLP is not hex: {e}"))?;
    let mut rest = bytes.as_slice();
    let block = RlpBlock::decode(&mut rest).map_err(|e| format!("block RLP: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("block RLP: {} bytes after the block", rest.len()));
    }
    // Blob sidecars travel beside blocks, never inside them.
    if block
        .body
        .transactions
        .iter()
        .any(|tx| tx.as_eip4844().is_some_and(|tx| tx.tx().as_with_sidecar().is_some()))
    {
        return Err("block RLP: a blob transaction carries its blobs".into());
    }
    // A header that commits to withdrawals needs a body that lists them, and vice versa.
    if block.header.withdrawals_root.is_some() != block.body.withdrawals.is_some() {
        return Err("block RLP: withdrawals in the header and the body do not match".into());
    }
    Ok((block, bytes.len()))
}

fn blob_params(spec: SpecId) -> BlobParams {
    if spec.is_enabled_in(SpecId::OSAKA) {
        BlobParams::osaka()
    } else if spec.is_enabled_in(SpecId::PRAGUE) {
        BlobParams::prague()
    } else {
        BlobParams::cancun()
    }
}

fn expect<T: PartialEq + Copy + std::fmt::Debug>(
    field: &str,
    header: T,
    expected: T,
) -> Result<(), String> {
    if header == expected {
        Ok(())
    } else {
        Err(format!("{field}: header {header:?}, expected {expected:?}"))
    }
}

/// The rules a header must meet given its parent.
fn check_header(
    h: &Header,
    parent: &Header,
    spec: SpecId,
    parent_spec: SpecId,
) -> Result<(), String> {
    expect("number", h.number, parent.number + 1)?;
    if h.timestamp <= parent.timestamp {
        return Err(format!(
            "timestamp {} is not after the parent's {}",
            h.timestamp, parent.timestamp
        ));
    }
    if h.extra_data.len() > 32 {
        return Err(format!("extra data is {} bytes, more than 32", h.extra_data.len()));
    }
    if h.gas_limit > i64::MAX as u64 {
        return Err(format!("gas limit {} is above 2^63 - 1", h.gas_limit));
    }
    if h.gas_used > h.gas_limit {
        return Err(format!("gas used {} is above the gas limit {}", h.gas_used, h.gas_limit));
    }
    let london = spec.is_enabled_in(SpecId::LONDON);
    let london_starts = london && !parent_spec.is_enabled_in(SpecId::LONDON);
    // EIP-1559 doubles the limit at the fork block: the old limit becomes the new target.
    let parent_limit = if london_starts { parent.gas_limit * 2 } else { parent.gas_limit };
    if h.gas_limit.abs_diff(parent_limit) >= parent_limit / 1024 || h.gas_limit < 5000 {
        return Err(format!(
            "gas limit {} is out of bounds for the parent's {parent_limit}",
            h.gas_limit
        ));
    }
    let base_fee = match (london_starts, london) {
        (true, _) => Some(INITIAL_BASE_FEE),
        (false, true) => parent.next_block_base_fee(BaseFeeParams::ethereum()),
        (false, false) => None,
    };
    expect("base fee", h.base_fee_per_gas, base_fee)?;
    if spec.is_enabled_in(SpecId::MERGE) {
        expect("difficulty", h.difficulty, Default::default())?;
        expect("nonce", h.nonce, Default::default())?;
        expect("ommers hash", h.ommers_hash, EMPTY_OMMER_ROOT_HASH)?;
    }
    let shanghai = spec.is_enabled_in(SpecId::SHANGHAI);
    expect("withdrawals root present", h.withdrawals_root.is_some(), shanghai)?;
    let cancun = spec.is_enabled_in(SpecId::CANCUN);
    expect("blob gas used present", h.blob_gas_used.is_some(), cancun)?;
    expect("parent beacon block root present", h.parent_beacon_block_root.is_some(), cancun)?;
    let prague = spec.is_enabled_in(SpecId::PRAGUE);
    expect("requests hash present", h.requests_hash.is_some(), prague)?;
    if cancun {
        let params = blob_params(spec);
        let excess = if parent_spec.is_enabled_in(SpecId::CANCUN) {
            params.next_block_excess_blob_gas_osaka(
                parent.excess_blob_gas.unwrap_or_default(),
                parent.blob_gas_used.unwrap_or_default(),
                parent.base_fee_per_gas.unwrap_or_default(),
            )
        } else {
            0
        };
        expect("excess blob gas", h.excess_blob_gas, Some(excess))?;
    } else {
        expect("excess blob gas present", h.excess_blob_gas.is_some(), false)?;
    }
    Ok(())
}

/// The body must be the one the header commits to.
fn check_body(block: &RlpBlock, spec: SpecId) -> Result<(), String> {
    let (h, body) = (&block.header, &block.body);
    expect(
        "transactions root",
        h.transactions_root,
        proofs::calculate_transaction_root(&body.transactions),
    )?;
    expect("ommers hash", h.ommers_hash, proofs::calculate_ommers_root(&body.ommers))?;
    if body.ommers.len() > 2 {
        return Err(format!("{} ommers, at most 2 allowed", body.ommers.len()));
    }
    for ommer in &body.ommers {
        // Difficulty, seals and the ancestry of ommers are not checked (see the module doc).
        if !(1..=6).contains(&h.number.saturating_sub(ommer.number)) || ommer.number >= h.number {
            return Err(format!("ommer {} is not 1 to 6 generations old", ommer.number));
        }
    }
    let withdrawals = body.withdrawals.as_ref().map(|w| proofs::calculate_withdrawals_root(w));
    expect("withdrawals root", h.withdrawals_root, withdrawals)?;
    if spec.is_enabled_in(SpecId::CANCUN) {
        let blobs: usize = body
            .transactions
            .iter()
            .filter_map(|tx| alloy_consensus::Transaction::blob_versioned_hashes(tx))
            .map(<[B256]>::len)
            .sum();
        expect("blob gas used", h.blob_gas_used, Some(blobs as u64 * DATA_GAS_PER_BLOB))?;
    }
    Ok(())
}

/// The executor's block, with each transaction's sender recovered from its signature.
fn executor_block(block: &RlpBlock, spec: SpecId) -> Result<Block, Rejection> {
    let h = &block.header;
    let homestead = spec.is_enabled_in(SpecId::HOMESTEAD);
    let transactions = block
        .body
        .transactions
        .iter()
        .enumerate()
        .map(|(i, tx)| {
            let invalid = |message: String| Rejection {
                class: Class::Transaction,
                message: format!("transaction {i}: {message}"),
            };
            if tx.is_legacy()
                && alloy_consensus::Transaction::chain_id(tx).is_some()
                && !spec.is_enabled_in(SpecId::SPURIOUS_DRAGON)
            {
                return Err(invalid("EIP-155 replay protection before Spurious Dragon".into()));
            }
            let caller = sender(tx, homestead).map_err(|e| invalid(e.to_string()))?;
            Ok(tx_env(tx, caller))
        })
        .collect::<Result<_, _>>()?;
    let withdrawals = block.body.withdrawals.iter().flatten().map(|w| Withdrawal {
        index: w.index,
        validator_index: w.validator_index,
        address: w.address,
        amount: w.amount,
    });
    let ommers =
        block.body.ommers.iter().map(|o| Ommer { number: o.number, beneficiary: o.beneficiary });
    Ok(Block {
        spec,
        chain_id: 1,
        number: h.number,
        timestamp: h.timestamp,
        beneficiary: h.beneficiary,
        base_fee: h.base_fee_per_gas.unwrap_or_default(),
        gas_limit: h.gas_limit,
        difficulty: h.difficulty,
        prevrandao: Some(h.mix_hash),
        excess_blob_gas: h.excess_blob_gas,
        parent_hash: Some(h.parent_hash),
        parent_beacon_block_root: h.parent_beacon_block_root,
        withdrawals: withdrawals.collect(),
        ommers: ommers.collect(),
        block_effects: true,
        transactions,
        ..Block::default()
    })
}

/// Executes `block` on both paths; their outcomes must be bit-identical, so every later
/// verdict about the block is the same for both.
fn execute_both(
    store: &InMemoryStorage,
    block: &Block,
    config: &ParallelConfig,
    paths: &mut Paths,
) -> Result<BlockOutcome, String> {
    let start = Instant::now();
    let seq = sequential::execute(store, block).map_err(|e| format!("sequential: {e}"))?;
    paths.sequential += start.elapsed();
    let start = Instant::now();
    let par = parallel::execute(store, block, config).map_err(|e| format!("parallel: {e}"))?;
    paths.parallel += start.elapsed();
    match seq.first_difference(&par) {
        Some(d) => Err(format!("block {}: sequential != parallel: {d}", block.number)),
        None => Ok(seq),
    }
}

/// Transaction validity and the block's gas and blob gas pools.
fn check_transactions(h: &Header, block: &Block, outcome: &BlockOutcome) -> Result<(), Rejection> {
    let (mut cumulative, mut blob_gas) = (0u64, 0u64);
    let max_blob_gas = blob_params(block.spec).max_blob_gas_per_block();
    for (i, (tx, out)) in block.transactions.iter().zip(&outcome.txs).enumerate() {
        blob_gas += tx.blob_hashes.len() as u64 * DATA_GAS_PER_BLOB;
        if blob_gas > max_blob_gas {
            let message =
                format!("transaction {i}: blob gas {blob_gas} is above the block's {max_blob_gas}");
            return Err(Rejection { class: Class::Transaction, message });
        }
        if cumulative.saturating_add(tx.gas_limit) > h.gas_limit {
            let message = format!(
                "transaction {i}: gas limit {} is above the block's remaining {}",
                tx.gas_limit,
                h.gas_limit - cumulative
            );
            return Err(Rejection { class: Class::Transaction, message });
        }
        if let Err(invalid) = &out.result {
            let message = format!("transaction {i}: {invalid}");
            return Err(Rejection { class: Class::Transaction, message });
        }
        cumulative = out.cumulative_gas_used;
    }
    Ok(())
}

/// The header's execution results: gas used, receipts root, logs bloom.
fn check_results(
    h: &Header,
    parent: &InMemoryStorage,
    spec: SpecId,
    outcome: &BlockOutcome,
) -> Result<(), Rejection> {
    let block_rule = reject(Class::Result);
    expect("gas used", h.gas_used, outcome.gas_used).map_err(&block_rule)?;
    let receipts_root = if spec.is_enabled_in(SpecId::BYZANTIUM) {
        outcome.receipts_root()
    } else {
        let roots = intermediate_roots(parent, outcome).map_err(&block_rule)?;
        outcome.pre_byzantium_receipts_root(&roots)
    };
    expect("receipts root", h.receipts_root, receipts_root).map_err(&block_rule)?;
    expect("logs bloom", h.logs_bloom, outcome.logs_bloom()).map_err(&block_rule)
}

/// The state root after each valid transaction, which pre-Byzantium receipts hold.
fn intermediate_roots(
    parent: &InMemoryStorage,
    outcome: &BlockOutcome,
) -> Result<Vec<B256>, String> {
    let mut store = parent.clone();
    store.commit(&outcome.pre_block).map_err(|e| e.to_string())?;
    let mut roots = Vec::new();
    for tx in outcome.txs.iter().filter(|tx| tx.result.is_ok()) {
        store.commit(&tx.changes).map_err(|e| e.to_string())?;
        roots.push(state_root(&store).map_err(|e| e.to_string())?);
    }
    Ok(roots)
}

/// The head's state against the fixture's `postState` (or its root, `postStateHash`).
fn check_post_state(test: &BlockchainTest, store: &InMemoryStorage) -> Result<(), String> {
    let root = state_root(store).map_err(|e| e.to_string())?;
    if let Some(expected) = test.post_state_hash {
        return expect("post-state root", root, expected);
    }
    let Some(post) = &test.post_state else {
        return Err("the fixture has neither postState nor postStateHash".into());
    };
    let expected = InMemoryStorage::from_diff(&StateDiff::from_alloc(&schema::alloc(post)));
    if root == state_root(&expected).map_err(|e| e.to_string())? {
        return Ok(());
    }
    Err(first_account_difference(&expected, store)
        .unwrap_or_else(|| "post-state root differs".into()))
}

type Dump = BTreeMap<Address, (Account, BTreeMap<U256, U256>)>;

fn dump(store: &InMemoryStorage) -> Dump {
    let mut accounts = Dump::new();
    let _ = store.for_each_account(&mut |(address, account, slots)| {
        accounts.insert(address, (account, slots.iter().copied().collect()));
    });
    accounts
}

/// The first account (in address order) whose state differs, for the failure message.
fn first_account_difference(expected: &InMemoryStorage, got: &InMemoryStorage) -> Option<String> {
    let (expected, got) = (dump(expected), dump(got));
    let addresses: BTreeSet<&Address> = expected.keys().chain(got.keys()).collect();
    addresses.into_iter().find_map(|address| {
        let (want, have) = (expected.get(address), got.get(address));
        match (want, have) {
            (Some((a, want)), Some((b, have))) if a == b => {
                let slots: BTreeSet<&U256> = want.keys().chain(have.keys()).collect();
                let slot = slots.into_iter().find(|s| want.get(s) != have.get(s))?;
                Some(format!(
                    "post-state {address} slot {slot}: expected {:?}, got {:?}",
                    want.get(slot),
                    have.get(slot)
                ))
            }
            _ if want.map(|w| w.0) == have.map(|h| h.0) => None,
            _ => Some(format!(
                "post-state {address}: expected {:?}, got {:?}",
                want.map(|w| w.0),
                have.map(|h| h.0)
            )),
        }
    })
}

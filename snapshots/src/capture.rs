//! Capturing new snapshots from a JSON-RPC node (an archive node with geth's `debug` API).
//!
//! For block `n`:
//! - `eth_getBlockByNumber(n, true)` goes to `<out>/<n>/block.json` as the node wrote it.
//! - `debug_traceBlockByNumber(n, prestateTracer)` gives, per transaction, the accounts and
//!   slots it touches as they were before it. The first transaction to show an account or a
//!   slot saw it as it was before the block; later ones see what earlier transactions made of
//!   it. What that first sight leaves out (geth omits a zero nonce and empty code), accounts
//!   first shown after the first transaction with code or a nonce (geth leaves a contract out
//!   of the trace of the transaction that creates it), and the beneficiary and withdrawal
//!   recipients when no transaction shows them, are read at block `n - 1` with
//!   `eth_getBalance`, `eth_getTransactionCount` and `eth_getCode`. Accounts that did not exist
//!   before the block are left out, as in the shipped snapshots. The result goes to
//!   `<out>/<n>/pre_state.json`.
//! - The block runs once locally on that pre-state; every BLOCKHASH it reads is fetched
//!   (`eth_getBlockByNumber(m, false)`; the parent's hash comes with the block) and merged
//!   into `<out>/block_hashes.json`.
//! - The written snapshot is replayed once and checked against its header, so an incomplete
//!   capture is reported, naming the accounts it lacks.

use crate::{
    format::{PreAccount, RpcBlock, alloc, write_block_hashes, write_pre_state},
    replay,
};
use alloy_primitives::{Address, B256, Bytes, U64, U256};
use lockstep_executor::{
    Account, Block, InMemoryStorage, StateDiff, StateReader, StorageError,
    revm::bytecode::Bytecode, sequential,
};
use lockstep_harness::http::{HttpError, RpcClient};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use std::{
    cell::RefCell,
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// One captured block: where it went, its size, and whether its replay matches the header.
#[derive(Debug)]
pub struct Captured {
    pub number: u64,
    pub dir: PathBuf,
    pub accounts: usize,
    pub slots: usize,
    /// The block hashes the block reads.
    pub block_hashes: BTreeMap<u64, B256>,
    /// The replay check: whether the receipts root was checked, or the mismatch.
    pub check: Result<bool, String>,
}

/// Captures block `number` into `out` (see the module documentation). Nothing is written
/// unless every request succeeded.
pub fn capture(rpc: &RpcClient, number: u64, out: &Path) -> Result<Captured, String> {
    let parent = number.checked_sub(1).ok_or("the genesis block has no pre-state to capture")?;
    let (raw_block, header) = fetch_block(rpc, number)?;
    let block = header.to_block(&format!("block {number}")).map_err(|e| e.to_string())?;
    let mut partial = merge(fetch_traces(rpc, number, header.transactions.len())?);
    // Block rewards and withdrawals touch these after the transactions.
    let recipients = header.withdrawals.iter().flatten().map(|w| w.address);
    for address in std::iter::once(header.miner).chain(recipients) {
        partial.entry(address).or_default();
    }
    resolve(rpc, parent, &mut partial).map_err(|e| e.to_string())?;
    let pre = finish(partial);
    let block_hashes = read_block_hashes(rpc, &block, &pre)?;

    let (_, mut hashes) = replay::list(out).map_err(|e| e.to_string())?;
    hashes.extend(&block_hashes);
    let dir = out.join(number.to_string());
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::write(dir.join("block.json"), raw_block).map_err(io)?;
    write_pre_state(&dir.join("pre_state.json"), &pre).map_err(|e| e.to_string())?;
    write_block_hashes(&out.join("block_hashes.json"), &hashes).map_err(|e| e.to_string())?;

    let snapshot = replay::load(&dir, &hashes).map_err(|e| e.to_string())?;
    Ok(Captured {
        number,
        accounts: pre.len(),
        slots: pre.values().map(|a| a.storage.len()).sum(),
        block_hashes,
        check: replay::check(&snapshot),
        dir,
    })
}

fn hex(number: u64) -> String {
    format!("{number:#x}")
}

/// The block as the node wrote it, and parsed.
fn fetch_block(rpc: &RpcClient, number: u64) -> Result<(String, RpcBlock), String> {
    let method = "eth_getBlockByNumber";
    let raw = rpc
        .call_raw(method, &json!([hex(number), true]))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: {method}: block {number} not found", rpc.url()))?;
    let header: RpcBlock = serde_json::from_str(raw.get())
        .map_err(|e| format!("{}: {method}: unexpected block ({e})", rpc.url()))?;
    if header.number.to::<u64>() != number {
        return Err(format!(
            "{}: {method}: asked for block {number}, got {}",
            rpc.url(),
            header.number
        ));
    }
    Ok((raw.get().to_string(), header))
}

/// One transaction's entry in `debug_traceBlockByNumber`'s answer.
#[derive(Deserialize)]
struct TxTrace {
    result: Option<BTreeMap<Address, TraceAccount>>,
    error: Option<String>,
}

/// An account as the prestate tracer shows it before one transaction; geth omits a zero nonce,
/// empty code and untouched storage.
#[derive(Deserialize)]
struct TraceAccount {
    balance: Option<U256>,
    nonce: Option<Quantity>,
    code: Option<Bytes>,
    #[serde(default)]
    storage: BTreeMap<U256, U256>,
}

/// A nonce: a number for geth, a hex string for some other nodes.
#[derive(Deserialize)]
#[serde(untagged)]
enum Quantity {
    Number(u64),
    Hex(U64),
}

impl Quantity {
    fn get(&self) -> u64 {
        match self {
            Self::Number(n) => *n,
            Self::Hex(n) => n.to(),
        }
    }
}

/// The prestate tracer's result for each transaction, in block order.
fn fetch_traces(
    rpc: &RpcClient,
    number: u64,
    txs: usize,
) -> Result<Vec<BTreeMap<Address, TraceAccount>>, String> {
    let method = "debug_traceBlockByNumber";
    let traces: Vec<TxTrace> = rpc
        .call(method, &json!([hex(number), {"tracer": "prestateTracer"}]))
        .map_err(|e| e.to_string())?;
    if traces.len() != txs {
        let got = traces.len();
        return Err(format!("{}: {method}: {got} results for {txs} transactions", rpc.url()));
    }
    traces
        .into_iter()
        .enumerate()
        .map(|(index, trace)| match trace {
            TxTrace { result: Some(result), error: None } => Ok(result),
            TxTrace { error, .. } => Err(format!(
                "{}: {method}: transaction {index}: {}",
                rpc.url(),
                error.unwrap_or_else(|| "no result".into())
            )),
        })
        .collect()
}

/// An account's pre-block state as far as the traces tell; `None` fields are read at the
/// parent block.
#[derive(Debug, Default)]
struct Partial {
    balance: Option<U256>,
    nonce: Option<u64>,
    code: Option<Bytes>,
    storage: BTreeMap<U256, U256>,
}

/// Merges the per-transaction pre-states: the first sight of each account and slot wins.
fn merge(traces: Vec<BTreeMap<Address, TraceAccount>>) -> BTreeMap<Address, Partial> {
    let mut pre: BTreeMap<Address, Partial> = BTreeMap::new();
    for (index, trace) in traces.into_iter().enumerate() {
        for (address, account) in trace {
            let entry = pre.entry(address).or_insert_with(|| first_sight(index, &account));
            for (slot, value) in account.storage {
                entry.storage.entry(slot).or_insert(value);
            }
        }
    }
    pre
}

/// What the first sight of an account, in transaction `index`, tells of it before the block.
fn first_sight(index: usize, account: &TraceAccount) -> Partial {
    let nonce = account.nonce.as_ref().map(Quantity::get);
    // geth leaves a contract out of the trace of the transaction that creates it, so a later
    // transaction may be the first to show it, already created: read such accounts at the parent.
    let has_code = account.code.as_ref().is_some_and(|code| !code.is_empty());
    if index > 0 && (has_code || nonce.is_some_and(|n| n > 0)) {
        return Partial::default();
    }
    Partial {
        balance: account.balance,
        nonce,
        code: account.code.clone(),
        storage: BTreeMap::new(),
    }
}

/// Reads the fields the traces left open at block `parent`, in batched calls.
fn resolve(
    rpc: &RpcClient,
    parent: u64,
    pre: &mut BTreeMap<Address, Partial>,
) -> Result<(), HttpError> {
    let open = |pre: &BTreeMap<Address, Partial>, field: fn(&Partial) -> bool| -> Vec<Address> {
        pre.iter().filter(|(_, p)| field(p)).map(|(address, _)| *address).collect()
    };
    let balances: Vec<(Address, U256)> =
        read_at(rpc, "eth_getBalance", parent, open(pre, |p| p.balance.is_none()))?;
    let nonces: Vec<(Address, U64)> =
        read_at(rpc, "eth_getTransactionCount", parent, open(pre, |p| p.nonce.is_none()))?;
    let codes: Vec<(Address, Bytes)> =
        read_at(rpc, "eth_getCode", parent, open(pre, |p| p.code.is_none()))?;
    for (address, balance) in balances {
        pre.entry(address).or_default().balance = Some(balance);
    }
    for (address, nonce) in nonces {
        pre.entry(address).or_default().nonce = Some(nonce.to());
    }
    for (address, code) in codes {
        pre.entry(address).or_default().code = Some(code);
    }
    Ok(())
}

/// Calls `method(address, parent)` for each address.
fn read_at<T: DeserializeOwned>(
    rpc: &RpcClient,
    method: &str,
    parent: u64,
    addresses: Vec<Address>,
) -> Result<Vec<(Address, T)>, HttpError> {
    let params: Vec<Value> = addresses.iter().map(|a| json!([a, hex(parent)])).collect();
    Ok(addresses.into_iter().zip(rpc.batch(method, &params)?).collect())
}

/// The snapshot's pre-state. An account without code has no storage (what a transaction read
/// there was the storage of a contract it was still creating), and one that is empty did not
/// exist before the block.
fn finish(pre: BTreeMap<Address, Partial>) -> BTreeMap<Address, PreAccount> {
    pre.into_iter()
        .filter_map(|(address, partial)| {
            let code = partial.code.filter(|code| !code.is_empty());
            let storage = if code.is_some() { partial.storage } else { BTreeMap::new() };
            let account = PreAccount {
                balance: partial.balance.unwrap_or_default(),
                nonce: partial.nonce.unwrap_or_default(),
                code,
                storage,
            };
            let exists = !account.balance.is_zero() || account.nonce > 0 || account.code.is_some();
            exists.then_some((address, account))
        })
        .collect()
}

/// Block hashes read while running the block, fetched from the node on first read.
struct HashReads<'a> {
    rpc: &'a RpcClient,
    parent: (u64, B256),
    read: RefCell<BTreeMap<u64, B256>>,
    error: RefCell<Option<String>>,
}

impl HashReads<'_> {
    fn get(&self, number: u64) -> Option<B256> {
        if let Some(hash) = self.read.borrow().get(&number) {
            return Some(*hash);
        }
        let hash = if number == self.parent.0 { Ok(self.parent.1) } else { self.fetch(number) };
        match hash {
            Ok(hash) => {
                self.read.borrow_mut().insert(number, hash);
                Some(hash)
            }
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    fn fetch(&self, number: u64) -> Result<B256, String> {
        #[derive(Deserialize)]
        struct Header {
            hash: B256,
        }
        let method = "eth_getBlockByNumber";
        let header: Option<Header> =
            self.rpc.call(method, &json!([hex(number), false])).map_err(|e| e.to_string())?;
        header
            .map(|h| h.hash)
            .ok_or_else(|| format!("{}: {method}: block {number} not found", self.rpc.url()))
    }
}

/// A reader over the captured pre-state that answers BLOCKHASH through [`HashReads`].
struct Recorder<'a, R> {
    inner: R,
    hashes: &'a HashReads<'a>,
}

impl<R: StateReader> StateReader for Recorder<'_, R> {
    fn account(&self, address: Address) -> Result<Option<Account>, StorageError> {
        self.inner.account(address)
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytecode>, StorageError> {
        self.inner.code(code_hash)
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StorageError> {
        self.inner.storage(address, slot)
    }

    fn block_hash(&self, number: u64) -> Result<Option<B256>, StorageError> {
        Ok(self.hashes.get(number))
    }
}

/// Runs the block on its pre-state and returns the block hashes it reads. The run leaves the
/// parent's hash to the reader too, so that reads of it are seen (from Prague this also skips
/// the EIP-2935 system call, which only matters to a transaction reading that contract). A run
/// that fails otherwise is left to the replay check, which names what is missing.
fn read_block_hashes(
    rpc: &RpcClient,
    block: &Block,
    pre: &BTreeMap<Address, PreAccount>,
) -> Result<BTreeMap<u64, B256>, String> {
    let parent = block.parent_hash.ok_or("the block has no parent hash")?;
    let hashes = HashReads {
        rpc,
        parent: (block.number.saturating_sub(1), parent),
        read: RefCell::default(),
        error: RefCell::default(),
    };
    let store = InMemoryStorage::from_diff(&StateDiff::from_alloc(&alloc(pre)));
    let run = Block { parent_hash: None, ..block.clone() };
    let _ = sequential::execute_on_reader(Recorder { inner: &store, hashes: &hashes }, &run);
    match hashes.error.into_inner() {
        Some(error) => Err(error),
        None => Ok(hashes.read.into_inner()),
    }
}

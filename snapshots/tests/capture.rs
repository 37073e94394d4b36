//! `capture` against a local JSON-RPC node that serves shipped blocks: the snapshots it writes
//! equal the shipped ones, and failing or unreachable nodes give clear errors.
//!
//! The node answers HTTP/1.1 POSTs on 127.0.0.1 like an archive node with geth's prestate
//! tracer: each account and slot of the shipped pre-state first appears, true, in one
//! transaction's trace and again, changed, in later ones; a zero nonce and empty code are left
//! out; a contract created in the block shows up only after its creation.

use alloy_primitives::{Address, B256, U256};
use lockstep_harness::{fixtures, http::RpcClient, local_http};
use lockstep_snapshots::{capture, format::PreAccount};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

/// Blocks captured, with the block hashes each reads: a Homestead block (pre-Byzantium) that
/// reads its parent's hash, a Byzantium block that reads the hash of block n - 4, and an empty
/// Cancun block whose beneficiary and withdrawal recipients no transaction touches.
const BLOCKS: [(u64, &[u64]); 3] =
    [(2462997, &[2462996]), (4864590, &[4864586]), (EMPTY_BLOCK, &[])];
const EMPTY_BLOCK: u64 = 19910734;

/// The shipped snapshots, or `None` (with a message) when the shared data is absent.
fn shipped() -> Option<PathBuf> {
    let Some(dir) = fixtures::default_snapshots_dir() else {
        eprintln!("skipped: no snapshots (SNAPSHOTS_DIR or ../shared/mainnet)");
        return None;
    };
    Some(fixtures::materialize(&dir.join("ethereum-blocks.tar.zst")).unwrap().join("ethereum"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn hex_number(value: &Value) -> u64 {
    let text = value.as_str().unwrap_or_default();
    u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap_or(u64::MAX)
}

/// One block the node serves: its JSON as shipped, its traces, and the state before it.
struct NodeBlock {
    raw: String,
    traces: Value,
    state: BTreeMap<Address, PreAccount>,
}

#[derive(Default)]
struct Node {
    blocks: BTreeMap<u64, NodeBlock>,
    /// Hashes of other blocks (the shipped block_hashes.json).
    hashes: BTreeMap<u64, B256>,
    /// Blocks whose trace fails, as on a node that pruned their state.
    unavailable: BTreeSet<u64>,
}

impl Node {
    fn with_shipped(root: &Path, numbers: &[u64]) -> Self {
        let hashes: BTreeMap<String, B256> =
            serde_json::from_str(&read(&root.join("block_hashes.json"))).unwrap();
        let mut node = Node {
            hashes: hashes.into_iter().map(|(n, h)| (n.parse().unwrap(), h)).collect(),
            ..Node::default()
        };
        for &number in numbers {
            let dir = root.join(number.to_string());
            let raw = read(&dir.join("block.json"));
            let mut state: BTreeMap<Address, PreAccount> =
                serde_json::from_str(&read(&dir.join("pre_state.json"))).unwrap();
            if number == EMPTY_BLOCK {
                state = untouched_accounts(&parse(&raw));
            }
            let txs = parse(&raw)["transactions"].as_array().unwrap().len();
            let traces = traces(&state, txs);
            node.blocks.insert(number, NodeBlock { raw, traces, state });
        }
        node
    }

    /// Starts serving; returns the URL. The path `/broken` answers 500.
    fn serve(self) -> String {
        local_http::serve(move |request| {
            if request.path == "/broken" {
                return (500, b"overloaded".to_vec());
            }
            let body = serde_json::from_slice(&request.body).unwrap_or_default();
            (200, self.reply(&body).into_bytes())
        })
    }

    /// The response text to a request or a batch; results are spliced in as text so that
    /// blocks go out byte for byte as shipped.
    fn reply(&self, request: &Value) -> String {
        if let Some(batch) = request.as_array() {
            let replies: Vec<String> = batch.iter().map(|r| self.reply(r)).collect();
            return format!("[{}]", replies.join(","));
        }
        let id = &request["id"];
        let method = request["method"].as_str().unwrap_or_default();
        match self.answer(method, &request["params"]) {
            Ok(result) => format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#),
            Err(message) => {
                let error = json!({"code": -32000, "message": message});
                format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{error}}}"#)
            }
        }
    }

    fn answer(&self, method: &str, params: &Value) -> Result<String, String> {
        match method {
            "eth_getBlockByNumber" => self.block(hex_number(&params[0]), params[1] == true),
            "debug_traceBlockByNumber" => {
                let number = hex_number(&params[0]);
                if params[1]["tracer"] != "prestateTracer" {
                    return Err(format!("unexpected tracer config {}", params[1]));
                }
                if self.unavailable.contains(&number) {
                    return Err(format!("required historical state unavailable (block {number})"));
                }
                let block = self.blocks.get(&number).ok_or("block not found")?;
                Ok(block.traces.to_string())
            }
            "eth_getBalance" | "eth_getTransactionCount" | "eth_getCode" => {
                let address: Address = serde_json::from_value(params[0].clone())
                    .map_err(|e| format!("invalid address: {e}"))?;
                let number = hex_number(&params[1]);
                let block = self
                    .blocks
                    .get(&number.wrapping_add(1))
                    .ok_or(format!("state of block {number} not available"))?;
                // A real node answers zeros for an account that does not exist.
                let account = block.state.get(&address);
                let answer = match method {
                    "eth_getBalance" => {
                        json!(format!("{:#x}", account.map_or(U256::ZERO, |a| a.balance)))
                    }
                    "eth_getTransactionCount" => {
                        json!(format!("{:#x}", account.map_or(0, |a| a.nonce)))
                    }
                    _ => json!(account.and_then(|a| a.code.clone()).unwrap_or_default()),
                };
                Ok(answer.to_string())
            }
            _ => Err(format!("the method {method} does not exist/is not available")),
        }
    }

    fn block(&self, number: u64, full: bool) -> Result<String, String> {
        match (self.blocks.get(&number), self.hashes.get(&number)) {
            (Some(block), _) if full => Ok(block.raw.clone()),
            (Some(block), _) => {
                let mut value = parse(&block.raw);
                let hashes: Vec<Value> = value["transactions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|tx| tx["hash"].clone())
                    .collect();
                value["transactions"] = hashes.into();
                Ok(value.to_string())
            }
            (None, Some(hash)) if !full => {
                Ok(json!({"number": format!("{number:#x}"), "hash": hash}).to_string())
            }
            _ => Err(format!("block {number} is not served here")),
        }
    }
}

/// The prestate tracer's answer for a block of `txs` transactions whose pre-state is `pre`.
/// Each account shows up in the transaction that first touches it (the first, or the second for
/// every third account), the one after, and the last; its odd slots first show up in its
/// second sight. A first sight is true, later ones are changed by the number of transactions
/// since. The first transaction also shows a fresh recipient (balance 0, not an account before
/// the block), and the second a contract the first created.
fn traces(pre: &BTreeMap<Address, PreAccount>, txs: usize) -> Value {
    let last = txs.saturating_sub(1);
    let traces: Vec<Value> = (0..txs)
        .map(|tx| {
            let mut result = serde_json::Map::new();
            for (k, (address, account)) in pre.iter().enumerate() {
                let first = if k % 3 == 2 { 1.min(last) } else { 0 };
                let sights: Vec<usize> = BTreeSet::from([first, first + 1, last])
                    .into_iter()
                    .filter(|t| *t <= last)
                    .collect();
                if !sights.contains(&tx) {
                    continue;
                }
                let changed = (tx - first) as u64;
                let mut entry =
                    json!({"balance": format!("{:#x}", account.balance + U256::from(changed))});
                if account.nonce + changed > 0 {
                    entry["nonce"] = (account.nonce + changed).into();
                }
                if let Some(code) = &account.code {
                    entry["code"] = json!(code);
                }
                let mut storage = serde_json::Map::new();
                for (j, (slot, value)) in account.storage.iter().enumerate() {
                    let first_slot = sights.get(j % 2).copied().unwrap_or(first);
                    if tx >= first_slot {
                        let value = *value + U256::from(tx - first_slot);
                        storage.insert(B256::from(*slot).to_string(), json!(B256::from(value)));
                    }
                }
                if !storage.is_empty() {
                    entry["storage"] = storage.into();
                }
                result.insert(format!("{address:#x}"), entry);
            }
            if tx == 0 {
                result.insert(
                    format!("{:#x}", Address::repeat_byte(0xd0)),
                    json!({"balance": "0x0"}),
                );
            }
            if tx == 1 {
                let mut created = json!({"balance": "0x0", "nonce": 1, "code": "0x6000"});
                let slot = B256::with_last_byte(1).to_string();
                created["storage"] = json!({slot: B256::with_last_byte(5)});
                result.insert(format!("{:#x}", Address::repeat_byte(0xc0)), created);
            }
            json!({"txHash": B256::with_last_byte(tx as u8), "result": result})
        })
        .collect();
    traces.into()
}

/// State for the accounts an empty block touches only through its reward and withdrawals:
/// the beneficiary, and all withdrawal recipients but the last, which does not exist yet.
fn untouched_accounts(block: &Value) -> BTreeMap<Address, PreAccount> {
    let miner: Address = serde_json::from_value(block["miner"].clone()).unwrap();
    let mut recipients: Vec<Address> = Vec::new();
    for withdrawal in block["withdrawals"].as_array().unwrap() {
        let address = serde_json::from_value(withdrawal["address"].clone()).unwrap();
        if !recipients.contains(&address) {
            recipients.push(address);
        }
    }
    let mut accounts = BTreeMap::new();
    accounts.insert(
        miner,
        PreAccount { balance: U256::from(0x1234), nonce: 7, code: None, storage: BTreeMap::new() },
    );
    for (i, address) in recipients[..recipients.len() - 1].iter().enumerate() {
        let code = (i == 0).then(|| vec![0x60, 0x00].into());
        let account =
            PreAccount { balance: U256::from(i + 1), nonce: 0, code, storage: BTreeMap::new() };
        accounts.insert(*address, account);
    }
    accounts
}

/// Asserts two pre-states are equal, naming the first account that differs.
fn assert_same_accounts(got: &Value, want: &Value, block: u64) {
    let (got, want) = (got.as_object().unwrap(), want.as_object().unwrap());
    for address in want.keys().chain(got.keys()) {
        assert_eq!(got.get(address), want.get(address), "block {block}: account {address}");
    }
}

fn pre_state_json(pre: &BTreeMap<Address, PreAccount>) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pre_state.json");
    lockstep_snapshots::format::write_pre_state(&path, pre).unwrap();
    parse(&read(&path))
}

#[test]
fn captured_blocks_equal_the_shipped_snapshots() {
    let Some(root) = shipped() else { return };
    let numbers: Vec<u64> = BLOCKS.iter().map(|(n, _)| *n).collect();
    let url = Node::with_shipped(&root, &numbers).serve();
    let out = tempfile::tempdir().unwrap();
    // An existing block_hashes.json is merged into, not replaced.
    let unrelated = B256::repeat_byte(0x11);
    std::fs::write(out.path().join("block_hashes.json"), json!({"1": unrelated}).to_string())
        .unwrap();
    let shipped_hashes: BTreeMap<String, B256> =
        serde_json::from_str(&read(&root.join("block_hashes.json"))).unwrap();

    let rpc = RpcClient::new(&url);
    let mut expected_hashes = BTreeMap::from([(1, unrelated)]);
    for (number, reads) in BLOCKS {
        let captured = capture::capture(&rpc, number, out.path()).unwrap();
        assert_eq!(captured.check, Ok(number > 4_370_000), "block {number}");
        let (from, to) = (root.join(number.to_string()), out.path().join(number.to_string()));

        // block.json as the node sent it, byte for byte.
        assert_eq!(read(&to.join("block.json")), read(&from.join("block.json")).trim_end());
        let pre = read(&to.join("pre_state.json"));
        if number == EMPTY_BLOCK {
            assert_eq!(read(&from.join("pre_state.json")), "{}");
            let node_state = untouched_accounts(&parse(&read(&from.join("block.json"))));
            assert_eq!(node_state.len(), 6);
            assert_same_accounts(&parse(&pre), &pre_state_json(&node_state), number);
        } else {
            // Equal as JSON, and laid out as the shipped file.
            assert_same_accounts(&parse(&pre), &parse(&read(&from.join("pre_state.json"))), number);
            assert!(pre == read(&from.join("pre_state.json")), "block {number}: layout differs");
        }

        // Exactly the hashes the block reads, as shipped.
        let reads: BTreeMap<u64, B256> =
            reads.iter().map(|n| (*n, shipped_hashes[&n.to_string()])).collect();
        assert_eq!(captured.block_hashes, reads, "block {number}");
        expected_hashes.extend(reads);
    }
    let written = read(&out.path().join("block_hashes.json"));
    let expected: BTreeMap<String, B256> =
        expected_hashes.iter().map(|(n, h)| (n.to_string(), *h)).collect();
    assert_eq!(parse(&written), serde_json::to_value(&expected).unwrap());
    // Sorted by number, as shipped.
    let order: Vec<u64> =
        written.lines().filter_map(|l| l.trim().split('"').nth(1)?.parse().ok()).collect();
    assert_eq!(order, expected_hashes.keys().copied().collect::<Vec<_>>());
}

#[test]
fn a_failing_block_is_reported_and_the_others_are_still_captured() {
    let Some(root) = shipped() else { return };
    let mut node = Node::with_shipped(&root, &[2462997, 9068998]);
    node.unavailable.insert(2462997);
    let url = node.serve();
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_lockstep-snapshots"))
        .args(["capture", "--rpc", &url, "--block", "2462997", "9068998", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let failed = stdout.lines().find(|l| l.starts_with("block 2462997:")).unwrap_or_default();
    for part in ["capture failed", &url, "debug_traceBlockByNumber", "historical state unavailable"]
    {
        assert!(failed.contains(part), "{failed:?} should name {part:?}");
    }
    assert!(stdout.contains("block 9068998: captured into"), "{stdout}");
    assert!(stdout.contains("replay matches gas used"), "{stdout}");
    assert!(!out.path().join("2462997").exists());
    assert!(out.path().join("9068998/pre_state.json").exists());
}

#[test]
fn unreachable_and_failing_nodes_give_clear_errors() {
    let out = tempfile::tempdir().unwrap();
    // A port nothing listens on any more.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{closed}");
    let error = capture::capture(&RpcClient::new(&url), 9068998, out.path()).unwrap_err();
    assert!(error.contains(&url) && error.contains("eth_getBlockByNumber"), "{error}");
    assert!(error.to_lowercase().contains("connect"), "{error}");

    let url = Node::default().serve();
    let error = capture::capture(&RpcClient::new(&url), 9068998, out.path()).unwrap_err();
    assert!(error.contains("block 9068998 is not served here"), "{error}");
    let broken = format!("{url}/broken");
    let error = capture::capture(&RpcClient::new(&broken), 9068998, out.path()).unwrap_err();
    assert!(error.contains(&broken) && error.contains("500"), "{error}");
    assert!(error.contains("overloaded"), "{error}");
    let error = RpcClient::new(&url).call::<Value>("eth_mine", &json!([])).unwrap_err().to_string();
    assert!(error.contains("eth_mine") && error.contains("does not exist"), "{error}");
    assert!(std::fs::read_dir(out.path()).unwrap().next().is_none(), "nothing is written");
}

#[test]
fn a_capture_missing_an_account_is_reported_as_incomplete() {
    let Some(root) = shipped() else { return };
    let mut node = Node::with_shipped(&root, &[9068998]);
    // A node whose traces lack the contract the first transaction calls.
    let block = node.blocks.get_mut(&9068998).unwrap();
    let called = parse(&block.raw)["transactions"][0]["to"].as_str().unwrap().to_string();
    for trace in block.traces.as_array_mut().unwrap() {
        trace["result"].as_object_mut().unwrap().remove(&called);
    }
    let out = tempfile::tempdir().unwrap();
    let captured = capture::capture(&RpcClient::new(node.serve()), 9068998, out.path()).unwrap();
    let error = captured.check.unwrap_err();
    assert!(error.contains("incomplete snapshot"), "{error}");
    assert!(error.to_lowercase().contains(&called), "{error} should name {called}");
}

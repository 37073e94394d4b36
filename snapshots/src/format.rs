//! The snapshot format, its conversion into the executor's block and pre-state, and its writing
//! (for captures).
//!
//! A snapshot directory holds one folder per block and a shared `block_hashes.json`:
//!
//! - `<number>/block.json`: the block as `eth_getBlockByNumber(number, true)` returns it.
//! - `<number>/pre_state.json`: every existing account the block reads, before the block:
//!   `{address: {"balance": hex, "code"?: hex, "nonce": int, "storage": {slot: value}}}`
//!   (`code` only for accounts with code; numbers as minimal hex).
//! - `block_hashes.json`: `{number: hash}` for the BLOCKHASH lookups of all blocks.
//!
//! `pre_state.json` and `block_hashes.json` have a one-space indent, no final newline, and
//! their keys in order (addresses and slots as text, block numbers as numbers).

use alloy_primitives::{Address, B256, Bloom, Bytes, TxKind, U64, U128, U256};
use lockstep_executor::{
    Alloc, Block, GenesisAccount, Withdrawal,
    revm::{
        context::TxEnv,
        context_interface::transaction::{AccessList, AccessListItem},
        primitives::hardfork::SpecId,
    },
};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, path::Path};

/// Why a snapshot could not be loaded; names the file and what is wrong in it.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: malformed or truncated JSON: {message}")]
    Json { path: String, message: String },
    #[error("{path}: transaction {index}: {message}")]
    Transaction { path: String, index: usize, message: String },
    #[error("{path}: cannot write: {message}")]
    Write { path: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcBlock {
    pub hash: B256,
    pub parent_hash: B256,
    pub miner: Address,
    pub number: U64,
    pub gas_limit: U64,
    pub gas_used: U64,
    pub timestamp: U64,
    #[serde(default)]
    pub difficulty: U256,
    pub mix_hash: Option<B256>,
    pub base_fee_per_gas: Option<U64>,
    pub receipts_root: B256,
    pub logs_bloom: Bloom,
    #[serde(default)]
    pub uncles: Vec<B256>,
    #[serde(default)]
    pub withdrawals: Option<Vec<RpcWithdrawal>>,
    pub excess_blob_gas: Option<U64>,
    pub parent_beacon_block_root: Option<B256>,
    pub transactions: Vec<RpcTransaction>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcWithdrawal {
    pub index: U64,
    pub validator_index: U64,
    pub address: Address,
    pub amount: U64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcAccessItem {
    pub address: Address,
    pub storage_keys: Vec<B256>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcTransaction {
    pub from: Address,
    pub to: Option<Address>,
    pub value: U256,
    pub gas: U64,
    pub gas_price: Option<U128>,
    pub max_fee_per_gas: Option<U128>,
    pub max_priority_fee_per_gas: Option<U128>,
    pub input: Bytes,
    pub nonce: U64,
    pub chain_id: Option<U64>,
    #[serde(rename = "type")]
    pub tx_type: Option<U64>,
    pub access_list: Option<Vec<RpcAccessItem>>,
    pub blob_versioned_hashes: Option<Vec<B256>>,
    pub max_fee_per_blob_gas: Option<U128>,
}

/// A pre-state account as the prestate tracer writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreAccount {
    #[serde(default)]
    pub balance: U256,
    #[serde(default)]
    pub nonce: u64,
    #[serde(default)]
    pub code: Option<Bytes>,
    #[serde(default)]
    pub storage: BTreeMap<U256, U256>,
}

/// Mainnet's fork at a block (by number until the merge, by timestamp after it).
pub fn mainnet_spec(number: u64, timestamp: u64) -> SpecId {
    const BY_TIMESTAMP: [(u64, SpecId); 3] = [
        (1_746_612_311, SpecId::PRAGUE),
        (1_710_338_135, SpecId::CANCUN),
        (1_681_338_455, SpecId::SHANGHAI),
    ];
    const BY_NUMBER: [(u64, SpecId); 10] = [
        (15_537_394, SpecId::MERGE),
        (12_965_000, SpecId::LONDON),
        (12_244_000, SpecId::BERLIN),
        (9_069_000, SpecId::ISTANBUL),
        (7_280_000, SpecId::PETERSBURG),
        (4_370_000, SpecId::BYZANTIUM),
        (2_675_000, SpecId::SPURIOUS_DRAGON),
        (2_463_000, SpecId::TANGERINE),
        (1_150_000, SpecId::HOMESTEAD),
        (0, SpecId::FRONTIER),
    ];
    if number >= 15_537_394
        && let Some((_, spec)) = BY_TIMESTAMP.iter().find(|(t, _)| timestamp >= *t)
    {
        return *spec;
    }
    BY_NUMBER.iter().find(|(n, _)| number >= *n).map_or(SpecId::FRONTIER, |(_, spec)| *spec)
}

fn tx_env(tx: &RpcTransaction) -> Result<TxEnv, String> {
    let tx_type = tx.tx_type.map_or(0, |t| t.to::<u64>());
    let tx_type = u8::try_from(tx_type).map_err(|_| format!("type {tx_type} out of range"))?;
    if tx_type > 3 {
        return Err(format!("transaction type {tx_type} is not supported by snapshots"));
    }
    let gas_price = match tx_type {
        0 | 1 => tx.gas_price.ok_or("missing field `gasPrice`")?,
        _ => tx.max_fee_per_gas.ok_or("missing field `maxFeePerGas`")?,
    };
    let access_list = tx.access_list.iter().flatten().map(|item| AccessListItem {
        address: item.address,
        storage_keys: item.storage_keys.clone(),
    });
    Ok(TxEnv {
        tx_type,
        caller: tx.from,
        gas_limit: tx.gas.to(),
        gas_price: gas_price.to(),
        gas_priority_fee: if tx_type >= 2 {
            tx.max_priority_fee_per_gas.map(|p| p.to())
        } else {
            None
        },
        kind: tx.to.map_or(TxKind::Create, TxKind::Call),
        value: tx.value,
        data: tx.input.clone(),
        nonce: tx.nonce.to(),
        chain_id: tx.chain_id.map(|c| c.to()),
        access_list: AccessList(access_list.collect()),
        blob_hashes: tx.blob_versioned_hashes.clone().unwrap_or_default(),
        max_fee_per_blob_gas: tx.max_fee_per_blob_gas.map_or(0, |f| f.to()),
        ..Default::default()
    })
}

impl RpcBlock {
    /// The executor's block. Ommer rewards need the ommers' headers, which the format does not
    /// hold; they change only the ommer miners' balances, never gas, receipts or logs.
    pub fn to_block(&self, path: &str) -> Result<Block, SnapshotError> {
        let number = self.number.to::<u64>();
        let timestamp = self.timestamp.to::<u64>();
        let transactions = self
            .transactions
            .iter()
            .enumerate()
            .map(|(index, tx)| {
                tx_env(tx).map_err(|message| SnapshotError::Transaction {
                    path: path.into(),
                    index,
                    message,
                })
            })
            .collect::<Result<_, _>>()?;
        let withdrawals = self.withdrawals.iter().flatten().map(|w| Withdrawal {
            index: w.index.to(),
            validator_index: w.validator_index.to(),
            address: w.address,
            amount: w.amount.to(),
        });
        Ok(Block {
            spec: mainnet_spec(number, timestamp),
            chain_id: 1,
            number,
            timestamp,
            beneficiary: self.miner,
            base_fee: self.base_fee_per_gas.map_or(0, |b| b.to()),
            gas_limit: self.gas_limit.to(),
            difficulty: self.difficulty,
            prevrandao: self.mix_hash,
            excess_blob_gas: self.excess_blob_gas.map(|e| e.to()),
            parent_hash: Some(self.parent_hash),
            parent_beacon_block_root: self.parent_beacon_block_root,
            withdrawals: withdrawals.collect(),
            ommers: Vec::new(),
            block_effects: true,
            transactions,
            ..Block::default()
        })
    }
}

/// The executor's allocation for a snapshot pre-state.
pub fn alloc(pre: &BTreeMap<Address, PreAccount>) -> Alloc {
    pre.iter()
        .map(|(address, a)| {
            let account = GenesisAccount {
                nonce: a.nonce,
                balance: a.balance,
                code: a.code.clone().unwrap_or_default(),
                storage: a.storage.clone(),
            };
            (*address, account)
        })
        .collect()
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SnapshotError> {
    let text = std::fs::read_to_string(path).map_err(|e| SnapshotError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| SnapshotError::Json {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// A pre-state account as the snapshot files hold it: keys in alphabetical order, `code` only
/// for accounts that have code, storage keys sorted as text.
#[derive(Serialize)]
struct WrittenAccount<'a> {
    balance: U256,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a Bytes>,
    nonce: u64,
    storage: BTreeMap<String, U256>,
}

/// Writes a `pre_state.json` laid out as the shipped ones.
pub fn write_pre_state(
    path: &Path,
    pre: &BTreeMap<Address, PreAccount>,
) -> Result<(), SnapshotError> {
    let accounts: BTreeMap<String, WrittenAccount<'_>> = pre
        .iter()
        .map(|(address, a)| {
            let account = WrittenAccount {
                balance: a.balance,
                code: a.code.as_ref().filter(|code| !code.is_empty()),
                nonce: a.nonce,
                storage: a
                    .storage
                    .iter()
                    .map(|(slot, value)| (format!("{slot:#x}"), *value))
                    .collect(),
            };
            (format!("{address:#x}"), account)
        })
        .collect();
    write_json(path, &accounts)
}

/// Writes a `block_hashes.json` laid out as the shipped one.
pub fn write_block_hashes(path: &Path, hashes: &BTreeMap<u64, B256>) -> Result<(), SnapshotError> {
    write_json(path, hashes)
}

/// Writes JSON as the shipped snapshot files are: one-space indent, no final newline.
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), SnapshotError> {
    let error =
        |message: String| SnapshotError::Write { path: path.display().to_string(), message };
    let mut bytes = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    value
        .serialize(&mut serde_json::Serializer::with_formatter(&mut bytes, formatter))
        .map_err(|e| error(e.to_string()))?;
    std::fs::write(path, bytes).map_err(|e| error(e.to_string()))
}

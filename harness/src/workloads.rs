//! Generated blocks with their pre-state: the benchmark workloads.

use crate::contracts;
use alloy_primitives::{Address, Bytes, TxKind, U256};
use lockstep_executor::{
    Alloc, Block, GenesisAccount,
    revm::{context::TxEnv, primitives::hardfork::SpecId},
};

/// A block and the pre-state it runs on.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    pub alloc: Alloc,
    pub block: Block,
}

/// The generated workload families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Plain value transfers between distinct accounts.
    RawTransfers,
    /// ERC-20 transfers, each from its own holder to its own recipient.
    Erc20Transfers,
    /// Swaps, each on its own constant-product pair.
    AmmSwaps,
    /// Every transaction increments the same counter slot.
    DependentChain,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 4] =
        [Self::RawTransfers, Self::Erc20Transfers, Self::AmmSwaps, Self::DependentChain];

    pub fn name(self) -> &'static str {
        match self {
            Self::RawTransfers => "raw_transfers",
            Self::Erc20Transfers => "erc20_transfers",
            Self::AmmSwaps => "amm_swaps",
            Self::DependentChain => "dependent_chain",
        }
    }

    /// Gas one transaction of this family uses, measured by the tests in this crate.
    pub fn gas_per_tx(self) -> u64 {
        match self {
            Self::RawTransfers => 21_000,
            Self::Erc20Transfers => 50_400,
            Self::AmmSwaps => 60_500,
            Self::DependentChain => 26_000,
        }
    }

    /// A block of about `gas` gas of this family.
    pub fn generate(self, gas: u64) -> Workload {
        let txs = (gas / self.gas_per_tx()).max(1) as usize;
        let (alloc, transactions) = match self {
            Self::RawTransfers => raw_transfers(txs),
            Self::Erc20Transfers => erc20_transfers(txs),
            Self::AmmSwaps => amm_swaps(txs),
            Self::DependentChain => dependent_chain(txs),
        };
        let block = Block {
            spec: SpecId::CANCUN,
            number: 1,
            timestamp: 1_700_000_000,
            beneficiary: address(0xbe, 0),
            base_fee: BASE_FEE,
            gas_limit: transactions.iter().map(|t| t.gas_limit).sum::<u64>().max(30_000_000),
            transactions,
            ..Block::default()
        };
        Workload { name: self.name().into(), alloc, block }
    }
}

pub const BASE_FEE: u64 = 1_000_000_000;
const MAX_FEE: u128 = 2_000_000_000;
const PRIORITY_FEE: u128 = 1_000_000_000;
const ETHER: u128 = 1_000_000_000_000_000_000;

/// A deterministic address: a family tag byte and an index.
pub fn address(tag: u8, index: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = tag;
    bytes[12..].copy_from_slice(&index.to_be_bytes());
    Address::from(bytes)
}

/// An EIP-1559 call.
pub fn call(
    from: Address,
    nonce: u64,
    to: Address,
    value: U256,
    data: Bytes,
    gas_limit: u64,
) -> TxEnv {
    TxEnv {
        tx_type: 2,
        caller: from,
        gas_limit,
        gas_price: MAX_FEE,
        gas_priority_fee: Some(PRIORITY_FEE),
        kind: TxKind::Call(to),
        value,
        data,
        nonce,
        chain_id: Some(1),
        ..Default::default()
    }
}

fn funded(balance: u128) -> GenesisAccount {
    GenesisAccount { balance: U256::from(balance), ..Default::default() }
}

fn contract(code: Bytes, storage: impl IntoIterator<Item = (U256, U256)>) -> GenesisAccount {
    GenesisAccount { code, storage: storage.into_iter().collect(), nonce: 1, ..Default::default() }
}

fn raw_transfers(txs: usize) -> (Alloc, Vec<TxEnv>) {
    let mut alloc = Alloc::new();
    let transactions = (0..txs as u64)
        .map(|i| {
            let from = address(0x51, i);
            alloc.insert(from, funded(10 * ETHER));
            call(from, 0, address(0x52, i), U256::from(1_000 + i), Bytes::new(), 21_000)
        })
        .collect();
    (alloc, transactions)
}

fn erc20_transfers(txs: usize) -> (Alloc, Vec<TxEnv>) {
    let token = address(0xc0, 0);
    let holders: Vec<Address> = (0..txs as u64).map(|i| address(0x51, i)).collect();
    let mut alloc: Alloc = holders.iter().map(|h| (*h, funded(10 * ETHER))).collect();
    let balances = holders.iter().map(|h| (*h, U256::from(1_000_000u64)));
    alloc.insert(token, contract(contracts::erc20(), contracts::erc20_storage(balances)));
    let transactions = holders
        .iter()
        .enumerate()
        .map(|(i, from)| {
            let data = contracts::erc20_transfer(address(0x52, i as u64), U256::from(100 + i));
            call(*from, 0, token, U256::ZERO, data, 80_000)
        })
        .collect();
    (alloc, transactions)
}

fn amm_swaps(txs: usize) -> (Alloc, Vec<TxEnv>) {
    let mut alloc = Alloc::new();
    let code = contracts::amm_pair();
    let transactions = (0..txs as u64)
        .map(|i| {
            let (user, pair) = (address(0x51, i), address(0xa0, i));
            alloc.insert(user, funded(10 * ETHER));
            let reserves = (U256::from(1_000_000_000u64), U256::from(2_000_000_000u64));
            let storage = contracts::amm_storage(
                reserves,
                &[(user, (i % 2) as u8, U256::from(1_000_000u64))],
            );
            alloc.insert(pair, contract(code.clone(), storage));
            call(
                user,
                0,
                pair,
                U256::ZERO,
                contracts::amm_swap(U256::from(10_000 + i), i % 2 == 1),
                120_000,
            )
        })
        .collect();
    (alloc, transactions)
}

fn dependent_chain(txs: usize) -> (Alloc, Vec<TxEnv>) {
    let counter = address(0xc1, 0);
    let mut alloc = Alloc::new();
    alloc.insert(counter, contract(contracts::counter(), [(U256::ZERO, U256::from(1))]));
    let transactions = (0..txs as u64)
        .map(|i| {
            let from = address(0x51, i);
            alloc.insert(from, funded(10 * ETHER));
            call(from, 0, counter, U256::ZERO, Bytes::new(), 60_000)
        })
        .collect();
    (alloc, transactions)
}

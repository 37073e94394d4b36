//! Small conflict-heavy blocks built from a list of transaction specs: a few hot accounts and
//! slots, same-sender chains, transfers to the beneficiary, CREATE and SELFDESTRUCT, reverts.
//! Property tests and fuzz targets generate the specs; this turns them into a block.

use crate::{
    asm::{Asm, deployer},
    contracts,
    workloads::{BASE_FEE, Workload, address, call},
};
use alloy_primitives::{Address, Bytes, TxKind, U256};
use lockstep_executor::{
    Alloc, Block, GenesisAccount,
    revm::{bytecode::opcode::*, context::TxEnv, primitives::hardfork::SpecId},
};
use serde::{Deserialize, Serialize};

/// Number of externally owned accounts that send and receive.
pub const USERS: u8 = 4;

/// Who receives a plain transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    User(u8),
    Beneficiary,
    /// An address no one has used: the transfer creates it.
    Fresh(u8),
    Token,
    Counter,
    /// Precompile `0x01 + i % 17`: value sent to it is never a lazy credit.
    Precompile(u8),
}

/// One transaction of a random block. Users are indices modulo [`USERS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxSpec {
    Transfer {
        from: u8,
        to: Target,
        value: u16,
    },
    /// May exceed the sender's balance, and then reverts.
    Erc20 {
        from: u8,
        to: u8,
        amount: u32,
    },
    Count {
        from: u8,
    },
    Swap {
        from: u8,
        amount: u32,
        token1_in: bool,
    },
    /// Deploys a contract whose constructor writes a slot.
    Create {
        from: u8,
    },
    /// Calls the self-destructing contract, which sends its balance to a user.
    Destruct {
        from: u8,
    },
    /// Deploys a contract whose constructor self-destructs (gone even after Cancun).
    CreateAndDestruct {
        from: u8,
        value: u16,
    },
    /// A nonce from the future: invalid.
    BadNonce {
        from: u8,
    },
    /// Reads the beneficiary's balance into storage, so it depends on every earlier fee.
    ReadBeneficiary {
        from: u8,
    },
    /// The beneficiary sends a transfer itself.
    FromBeneficiary {
        to: u8,
        value: u16,
    },
}

pub fn user(i: u8) -> Address {
    address(0x51, u64::from(i % USERS))
}

pub const BENEFICIARY: Address = Address::repeat_byte(0xbe);
const TOKEN: u64 = 1;
const COUNTER: u64 = 2;
const PAIR: u64 = 3;
const DESTRUCTOR: u64 = 4;
const PROBE: u64 = 5;

fn contract_address(i: u64) -> Address {
    address(0xc0, i)
}

fn target(to: Target) -> Address {
    match to {
        Target::User(i) => user(i),
        Target::Beneficiary => BENEFICIARY,
        Target::Fresh(i) => address(0xf0, u64::from(i % 4)),
        Target::Token => contract_address(TOKEN),
        Target::Counter => contract_address(COUNTER),
        Target::Precompile(i) => Address::with_last_byte(1 + i % 17),
    }
}

/// Stores BALANCE(beneficiary) at slot 0.
fn probe() -> Bytes {
    let mut asm = Asm::new();
    asm.push_address(BENEFICIARY).ops(&[BALANCE]).push(0).ops(&[SSTORE, STOP]);
    asm.build()
}

fn destructor() -> Bytes {
    let mut asm = Asm::new();
    asm.push_address(user(0)).ops(&[SELFDESTRUCT]);
    asm.build()
}

/// Init code that writes slot 1 = 0x2a and deploys the counter.
fn storing_init() -> Bytes {
    let runtime = contracts::counter();
    let mut asm = Asm::new();
    asm.push(0x2a).push(1).ops(&[SSTORE]);
    let mut code = asm.build().to_vec();
    let deploy = deployer(&runtime);
    // Shift the deployer's CODECOPY offset past the prefix.
    let mut deploy = deploy.to_vec();
    deploy[5] += code.len() as u8;
    code.extend_from_slice(&deploy);
    code.into()
}

fn pre_state() -> Alloc {
    let mut alloc = Alloc::new();
    let eth = U256::from(10u128.pow(18));
    for i in 0..USERS {
        alloc.insert(user(i), GenesisAccount { balance: eth, ..Default::default() });
    }
    alloc.insert(BENEFICIARY, GenesisAccount { balance: eth, ..Default::default() });
    let holders = (0..USERS).map(|i| (user(i), U256::from(1_000_000u64)));
    let with_code = |code: Bytes, storage: Vec<(U256, U256)>, balance: u64| GenesisAccount {
        code,
        nonce: 1,
        balance: U256::from(balance),
        storage: storage.into_iter().collect(),
    };
    alloc.insert(
        contract_address(TOKEN),
        with_code(contracts::erc20(), contracts::erc20_storage(holders).collect(), 0),
    );
    alloc.insert(
        contract_address(COUNTER),
        with_code(contracts::counter(), vec![(U256::ZERO, U256::from(1))], 0),
    );
    let balances: Vec<_> = (0..USERS)
        .flat_map(|i| {
            [(user(i), 0, U256::from(1_000_000u64)), (user(i), 1, U256::from(1_000_000u64))]
        })
        .collect();
    let reserves = (U256::from(10_000_000u64), U256::from(20_000_000u64));
    alloc.insert(
        contract_address(PAIR),
        with_code(contracts::amm_pair(), contracts::amm_storage(reserves, &balances), 0),
    );
    alloc.insert(
        contract_address(DESTRUCTOR),
        with_code(destructor(), vec![(U256::from(1), U256::from(1))], 1_000),
    );
    alloc.insert(contract_address(PROBE), with_code(probe(), vec![], 0));
    alloc
}

/// The block for `specs` under fork `spec`, with its pre-state.
pub fn build(specs: &[TxSpec], spec: SpecId) -> Workload {
    let mut nonces = std::collections::HashMap::<Address, u64>::new();
    let transactions: Vec<TxEnv> = specs
        .iter()
        .map(|spec| {
            let mut next = |from: Address| {
                let nonce = nonces.entry(from).or_default();
                *nonce += 1;
                *nonce - 1
            };
            let send =
                |from: Address, nonce: u64, to: Address, value: u64, data: Bytes, gas: u64| {
                    call(from, nonce, to, U256::from(value), data, gas)
                };
            match *spec {
                TxSpec::Transfer { from, to, value } => {
                    let from = user(from);
                    send(from, next(from), target(to), u64::from(value), Bytes::new(), 60_000)
                }
                TxSpec::Erc20 { from, to, amount } => {
                    let from = user(from);
                    let data = contracts::erc20_transfer(user(to), U256::from(amount));
                    send(from, next(from), contract_address(TOKEN), 0, data, 90_000)
                }
                TxSpec::Count { from } => {
                    let from = user(from);
                    send(from, next(from), contract_address(COUNTER), 0, Bytes::new(), 60_000)
                }
                TxSpec::Swap { from, amount, token1_in } => {
                    let from = user(from);
                    let data = contracts::amm_swap(U256::from(amount), token1_in);
                    send(from, next(from), contract_address(PAIR), 0, data, 120_000)
                }
                TxSpec::Create { from } => {
                    let from = user(from);
                    TxEnv {
                        kind: TxKind::Create,
                        ..send(from, next(from), Address::ZERO, 0, storing_init(), 200_000)
                    }
                }
                TxSpec::Destruct { from } => {
                    let from = user(from);
                    send(from, next(from), contract_address(DESTRUCTOR), 0, Bytes::new(), 60_000)
                }
                TxSpec::CreateAndDestruct { from, value } => {
                    let from = user(from);
                    TxEnv {
                        kind: TxKind::Create,
                        ..send(
                            from,
                            next(from),
                            Address::ZERO,
                            u64::from(value),
                            destructor(),
                            200_000,
                        )
                    }
                }
                TxSpec::BadNonce { from } => {
                    let from = user(from);
                    let nonce = nonces.get(&from).copied().unwrap_or_default() + 5;
                    send(from, nonce, user(0), 1, Bytes::new(), 30_000)
                }
                TxSpec::ReadBeneficiary { from } => {
                    let from = user(from);
                    send(from, next(from), contract_address(PROBE), 0, Bytes::new(), 60_000)
                }
                TxSpec::FromBeneficiary { to, value } => send(
                    BENEFICIARY,
                    next(BENEFICIARY),
                    user(to),
                    u64::from(value),
                    Bytes::new(),
                    30_000,
                ),
            }
        })
        .collect();
    let block = Block {
        spec,
        number: 1,
        timestamp: 1_700_000_000,
        beneficiary: BENEFICIARY,
        base_fee: BASE_FEE,
        transactions,
        ..Block::default()
    };
    Workload { name: format!("random {spec:?} x{}", specs.len()), alloc: pre_state(), block }
}

//! Executing one transaction incarnation against the multi-version memory: a `revm::Database`
//! that records what it read, and a handler that defers the beneficiary's fee.

use super::mv_memory::{Blocked, Found, Location, MvMemory, Read, ReadMode, TxIdx, Write};
use crate::{
    block::Block,
    block_state::{deployed_codes, empty_code, evm_state_changes, recycle, to_revm_info},
    error::ExecutionError,
    state::{Account, AccountDiff, StateDiff, credited},
    storage::{Layered, StateReader, StorageError},
};
use alloy_primitives::map::{AddressSet, B256Map};
use alloy_primitives::{Address, B256, KECCAK256_EMPTY, TxKind, U256};
use revm::{
    Context, Database, ExecuteEvm, MainBuilder, MainContext, MainnetEvm,
    bytecode::Bytecode,
    context::{
        BlockEnv, CfgEnv, ContextSetters, ContextTr, JournalTr, TxEnv,
        result::{EVMError, ExecutionResult, HaltReason, InvalidTransaction},
    },
    context_interface::Transaction,
    handler::{EthFrame, EvmTr, EvmTrError, FrameResult, FrameTr, Handler},
    interpreter::interpreter_action::FrameInit,
    precompile::{PrecompileSpecId, Precompiles},
    primitives::hardfork::SpecId,
    state::{AccountInfo, EvmState},
};
use std::{
    marker::PhantomData,
    sync::{
        RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

/// What an incarnation produced.
#[derive(Clone, Debug)]
pub(crate) struct TxOutput {
    pub(crate) result: Result<ExecutionResult, InvalidTransaction>,
    /// The changes that are final as they stand (everything but credits).
    pub(crate) changes: StateDiff,
    /// The beneficiary's fee, when paid without reading its balance. This and `credit` are
    /// resolved in block order at the end.
    pub(crate) fee: Option<U256>,
    /// The value a plain transfer credits its code-less recipient without reading it.
    pub(crate) credit: Option<(Address, U256)>,
    /// Accounts in `changes` that some transaction of the block may credit: their values
    /// are where those credits start from.
    pub(crate) creditable: Vec<Address>,
}

/// Why a read could not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ViewError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("blocked on transaction {} at {:?}", .0.0, .1)]
    Blocked(Blocked, Location),
}

impl revm::database_interface::DBErrorMarker for ViewError {}

/// The state before the block's transactions: the store plus the pre-block system calls.
pub(crate) type Base<'a, R> = Layered<'a, R>;

/// Code deployed during the block, shared by all workers. Keyed by hash, so an entry from an
/// aborted incarnation is still correct for anyone who finds its hash.
pub(crate) type CodeCache = RwLock<B256Map<Bytecode>>;

/// Whether `address` has the leading zeros of a precompile's (0x01 to 0x100 so far).
fn is_small(address: &Address) -> bool {
    address.0[..18].iter().all(|b| *b == 0)
}

/// What every worker shares for one block.
#[derive(Debug)]
pub(crate) struct Shared<'a> {
    pub(crate) block: &'a Block,
    pub(crate) mv: MvMemory<TxOutput>,
    pub(crate) codes: CodeCache,
    /// Whether `codes` holds anything: most blocks deploy nothing, and their code reads then
    /// skip the lock, whose shared cache line the workers would otherwise pass back and forth.
    deployed: AtomicBool,
    /// Accounts that can be credited: the beneficiary and the recipients of plain transfers.
    pub(crate) creditable: AddressSet,
    block_env: BlockEnv,
    cfg_env: CfgEnv,
    precompiles: &'static Precompiles,
    /// Every precompile's address [`is_small`].
    small_precompiles: bool,
}

impl<'a> Shared<'a> {
    pub(crate) fn new(block: &'a Block) -> Self {
        let precompiles = Precompiles::new(PrecompileSpecId::from_spec_id(block.spec));
        let mut shared = Self {
            block,
            mv: MvMemory::new(block.transactions.len(), block.beneficiary),
            codes: RwLock::default(),
            deployed: AtomicBool::new(false),
            creditable: AddressSet::default(),
            block_env: block.block_env(),
            cfg_env: block.cfg_env(),
            precompiles,
            small_precompiles: precompiles.addresses().all(is_small),
        };
        let recipients =
            block.transactions.iter().filter_map(|tx| shared.lazy_recipient_candidate(tx));
        let creditable = std::iter::once(block.beneficiary).chain(recipients).collect();
        shared.creditable = creditable;
        shared
    }

    /// The recipient of a plain value transfer, whose balance can be credited lazily: it must
    /// not be the sender, the beneficiary or a precompile, and no authorization may touch it.
    pub(crate) fn lazy_recipient_candidate(&self, tx: &TxEnv) -> Option<Address> {
        let TxKind::Call(to) = tx.kind else { return None };
        let plain = !tx.value.is_zero()
            && to != tx.caller
            && to != self.block.beneficiary
            && tx.authorization_list.is_empty()
            && !self.is_precompile(&to);
        plain.then_some(to)
    }

    /// Precompiles sit at small addresses: checking the leading zeros first spares nearly
    /// every address a hash lookup.
    fn is_precompile(&self, address: &Address) -> bool {
        (is_small(address) || !self.small_precompiles) && self.precompiles.contains(address)
    }
}

/// The `Database` of one worker: reads go through the multi-version memory at the current
/// transaction's index and are recorded for validation.
#[derive(Debug)]
pub(crate) struct TxView<'a, R> {
    shared: &'a Shared<'a>,
    base: Base<'a, R>,
    tx: TxIdx,
    lazy_candidate: Option<Address>,
    lazy_engaged: bool,
    reads: Vec<Read>,
    /// This incarnation's reads of storage wipes, by account: every slot read of an account
    /// needs its wipe, which is read (and recorded for validation) once.
    wipes: Vec<(Address, Option<TxIdx>)>,
}

impl<R: StateReader> TxView<'_, R> {
    fn read(&mut self, location: Location, mode: ReadMode) -> Result<Found, ViewError> {
        let found = (self.shared.mv.read(&location, self.tx, mode))
            .map_err(|blocked| ViewError::Blocked(blocked, location))?;
        self.reads.push(Read { location, mode, origin: found.origin.clone() });
        Ok(found)
    }

    fn account(&mut self, address: Address, mode: ReadMode) -> Result<Option<Account>, ViewError> {
        let found = self.read(Location::Account(address), mode)?;
        let mut account = match found.write {
            Some(Write::Account(account)) => account,
            _ => self.base.account(address)?,
        };
        for credit in found.credits {
            account = credited(account, credit, self.shared.block.spec);
        }
        Ok(account)
    }
}

impl<R: StateReader> Database for TxView<'_, R> {
    type Error = ViewError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, ViewError> {
        if self.lazy_candidate == Some(address) {
            // A code-less recipient of a plain transfer is only credited: read it blind to
            // earlier credits and hand revm a zero balance, so the transfer's result is the
            // credit itself.
            let account = self.account(address, ReadMode::IgnoreCredits)?;
            if account.is_none_or(|a| a.code_hash == KECCAK256_EMPTY) {
                self.lazy_engaged = true;
                return Ok(account.map(|a| to_revm_info(Account { balance: U256::ZERO, ..a })));
            }
            self.lazy_candidate = None;
        }
        Ok(self.account(address, ReadMode::Full)?.map(to_revm_info))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, ViewError> {
        if code_hash == KECCAK256_EMPTY {
            return Ok(empty_code());
        }
        // A transaction that found this hash in the memory found it after its deployer
        // recorded, and so after `deployed` was set.
        if self.shared.deployed.load(Ordering::Relaxed)
            && let Some(code) =
                self.shared.codes.read().expect("code cache poisoned").get(&code_hash)
        {
            return Ok(code.clone());
        }
        Ok(self.base.code(code_hash)?.ok_or(StorageError::MissingCode(code_hash))?)
    }

    fn storage(&mut self, address: Address, slot: U256) -> Result<U256, ViewError> {
        let found = self.read(Location::Storage(address, slot), ReadMode::Full)?;
        let wiped_at = match self.wipes.iter().find(|(a, _)| *a == address) {
            Some((_, wiped_at)) => *wiped_at,
            None => {
                let wipe = self.read(Location::Wipe(address), ReadMode::Full)?;
                let wiped_at = wipe.origin.base.map(|v| v.tx);
                self.wipes.push((address, wiped_at));
                wiped_at
            }
        };
        let written_at = found.origin.base.map(|v| v.tx);
        match (found.write, wiped_at) {
            (Some(Write::Storage(value)), wiped) if wiped <= written_at => Ok(value),
            (_, Some(_)) => Ok(U256::ZERO),
            _ => Ok(self.base.storage(address, slot)?),
        }
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, ViewError> {
        let block = self.shared.block;
        if let Some(hash) = block.parent_hash.filter(|_| number + 1 == block.number) {
            return Ok(hash);
        }
        Ok(self.base.block_hash(number)?.ok_or(StorageError::MissingBlockHash(number))?)
    }
}

/// revm's mainnet handler with the beneficiary's fee left out, so that paying it does not
/// make every transaction read the beneficiary: the fee becomes a lazy credit instead.
pub(crate) struct DeferredFee<EVM>(pub(crate) PhantomData<EVM>);

impl<EVM> Handler for DeferredFee<EVM>
where
    EVM: EvmTr<Context: ContextTr<Journal: JournalTr<State = EvmState>>, Frame = EthFrame>,
    EVMError<<<EVM::Context as ContextTr>::Db as Database>::Error, InvalidTransaction>:
        EvmTrError<EVM>,
    EthFrame: FrameTr<FrameResult = FrameResult, FrameInit = FrameInit>,
{
    type Evm = EVM;
    type Error = EVMError<<<EVM::Context as ContextTr>::Db as Database>::Error, InvalidTransaction>;
    type HaltReason = HaltReason;

    fn reward_beneficiary(
        &self,
        _evm: &mut EVM,
        _result: &mut FrameResult,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// One worker's reusable EVM.
pub(crate) struct Vm<'a, R: StateReader> {
    evm: MainnetEvm<Context<BlockEnv, &'a TxEnv, CfgEnv, TxView<'a, R>>>,
}

impl<R: StateReader> std::fmt::Debug for Vm<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm").finish_non_exhaustive()
    }
}

/// The outcome of one attempt to execute an incarnation.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per execution and taken apart at once; a box would cost an allocation"
)]
pub(crate) enum Attempt {
    /// Its output, and what it wrote and read, for the multi-version memory.
    Done { output: TxOutput, writes: Vec<(Location, Write)>, reads: Vec<Read> },
    /// It read an estimate of `blocker`'s at `at`.
    Blocked { blocker: TxIdx, at: Location },
}

impl<'a, R: StateReader> Vm<'a, R> {
    pub(crate) fn new(shared: &'a Shared<'a>, base: Base<'a, R>) -> Self {
        let view = TxView {
            shared,
            base,
            tx: 0,
            lazy_candidate: None,
            lazy_engaged: false,
            reads: Vec::new(),
            wipes: Vec::new(),
        };
        let evm = Context::mainnet()
            .with_db(view)
            .with_block(shared.block_env.clone())
            .with_cfg(shared.cfg_env.clone())
            .with_tx(crate::tx::none())
            .build_mainnet();
        Self { evm }
    }

    /// The state before the block's transactions, as this VM reads it.
    pub(crate) fn base(&self) -> &Base<'a, R> {
        &self.evm.ctx.journaled_state.database.base
    }

    /// Executes transaction `tx` once, against what the transactions before it wrote.
    pub(crate) fn execute(&mut self, tx: TxIdx) -> Result<Attempt, ExecutionError> {
        let shared = self.evm.ctx.journaled_state.database.shared;
        let block = shared.block;
        let tx_env = &block.transactions[tx];
        let view = &mut self.evm.ctx.journaled_state.database;
        view.tx = tx;
        view.lazy_candidate = shared.lazy_recipient_candidate(tx_env);
        view.lazy_engaged = false;
        view.reads.clear();
        view.wipes.clear();

        self.evm.ctx.set_tx(tx_env);
        let outcome = DeferredFee(PhantomData).run(&mut self.evm);
        let mut state = self.evm.finalize();
        let view = &mut self.evm.ctx.journaled_state.database;
        // The next incarnation likely reads about as much: give it that capacity up front.
        let capacity = view.reads.len().next_power_of_two();
        let reads = std::mem::replace(&mut view.reads, Vec::with_capacity(capacity));
        let result = match outcome {
            Ok(result) => result,
            Err(EVMError::Transaction(invalid)) => {
                let output = TxOutput {
                    result: Err(invalid),
                    changes: StateDiff::default(),
                    fee: None,
                    credit: None,
                    creditable: Vec::new(),
                };
                return Ok(Attempt::Done { output, writes: Vec::new(), reads });
            }
            Err(EVMError::Database(ViewError::Blocked(Blocked(blocker), at))) => {
                return Ok(Attempt::Blocked { blocker, at });
            }
            Err(EVMError::Database(ViewError::Storage(e))) => return Err(e.into()),
            Err(e) => {
                return Err(ExecutionError::Evm {
                    context: format!("tx {tx}"),
                    message: e.to_string(),
                });
            }
        };

        let mut credit = None;
        if view.lazy_engaged {
            let recipient = view.lazy_candidate.expect("engaged implies a candidate");
            if let Some(account) = state.remove(&recipient)
                && account.is_touched()
                && !account.info.balance.is_zero()
            {
                credit = Some((recipient, account.info.balance));
            }
        }
        let fee = beneficiary_fee(tx_env, block, &result);
        let fee = match state.get_mut(&block.beneficiary) {
            // The transaction read the beneficiary itself: pay the fee as revm would have.
            Some(account) => {
                account.mark_touch();
                account.info.balance = account.info.balance.saturating_add(fee);
                None
            }
            None => Some(fee),
        };

        // Resolved credits join these changes at the end: leave room for them now.
        let spare = usize::from(fee.is_some()) + usize::from(credit.is_some());
        let slots: usize = state.values().map(|account| account.storage.len()).sum();
        let mut writes = Vec::with_capacity(slots + 2 * state.len() + 1);
        let changes = evm_state_changes(&state, block.spec, spare, |address, change, own| {
            add_writes(&mut writes, address, change, own);
        });
        // The beneficiary's fee is recorded apart (see `MvMemory::record`).
        if let Some((address, amount)) = credit {
            writes.push((Location::Account(address), Write::Credit(amount)));
        }
        if !changes.codes.is_empty() {
            shared.deployed.store(true, Ordering::Relaxed);
            let mut codes = shared.codes.write().expect("code cache poisoned");
            for (hash, code) in deployed_codes(&state, &changes) {
                codes.entry(hash).or_insert_with(|| code.clone());
            }
        }
        let creditable =
            changes.accounts.keys().filter(|a| shared.creditable.contains(*a)).copied().collect();
        recycle(&mut self.evm.ctx.journaled_state.inner, state);
        let output = TxOutput { result: Ok(result), changes, fee, credit, creditable };
        Ok(Attempt::Done { output, writes, reads })
    }
}

/// The fee revm's `reward_beneficiary` would have paid.
pub(crate) fn beneficiary_fee(tx: &TxEnv, block: &Block, result: &ExecutionResult) -> U256 {
    let base_fee = u128::from(block.base_fee);
    let price = tx.effective_gas_price(base_fee);
    let price = if block.spec.is_enabled_in(SpecId::LONDON) {
        price.saturating_sub(base_fee)
    } else {
        price
    };
    U256::from(price) * U256::from(result.tx_gas_used())
}

/// The multi-version writes of one account's change. An account whose own fields did not
/// change (a contract whose storage did) is not written, so its readers do not depend on
/// this transaction.
fn add_writes(
    writes: &mut Vec<(Location, Write)>,
    address: Address,
    change: &AccountDiff,
    own_fields_changed: bool,
) {
    if own_fields_changed {
        writes.push((Location::Account(address), Write::Account(change.account)));
    }
    if change.storage_cleared {
        writes.push((Location::Wipe(address), Write::Wipe));
    }
    for (slot, value) in &change.storage {
        writes.push((Location::Storage(address, *slot), Write::Storage(*value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer_to(to: Address) -> TxEnv {
        TxEnv { kind: TxKind::Call(to), value: U256::from(1), ..TxEnv::default() }
    }

    #[test]
    fn precompiles_of_the_fork_are_never_lazy_recipients() {
        let ecrecover = Address::with_last_byte(1);
        let bls_map = Address::with_last_byte(0x11);
        let user = Address::repeat_byte(0x42);
        let small_user = Address::with_last_byte(0x42);
        let candidate = |spec, to| {
            let block = Block { spec, ..Block::default() };
            Shared::new(&block).lazy_recipient_candidate(&transfer_to(to))
        };
        assert_eq!(candidate(SpecId::PRAGUE, ecrecover), None);
        assert_eq!(candidate(SpecId::PRAGUE, bls_map), None);
        assert_eq!(
            candidate(SpecId::CANCUN, bls_map),
            Some(bls_map),
            "no precompile before Prague"
        );
        assert_eq!(candidate(SpecId::PRAGUE, user), Some(user));
        assert_eq!(candidate(SpecId::PRAGUE, small_user), Some(small_user));
    }
}

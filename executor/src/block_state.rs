//! The state as a block sees it while it executes: a store's reader plus the block's own
//! changes so far, with reads cached. It is the `revm::Database` of the sequential path.

use crate::{
    key_order,
    sorted_map::SortedMap,
    state::{Account, AccountDiff, StateDiff, credited},
    storage::{StateReader, StorageError},
};
use alloy_primitives::{
    Address, B256, KECCAK256_EMPTY, U256,
    map::{AddressMap, B256Map, Entry, U256Map},
};
use revm::{
    Database,
    bytecode::Bytecode,
    context::JournalInner,
    primitives::hardfork::SpecId,
    state::{AccountInfo, EvmState},
};

/// A value as the block sees it: read from the store, or written by the block.
#[derive(Clone, Copy, Debug)]
struct Cached<T> {
    value: T,
    written: bool,
}

impl<T> Cached<T> {
    fn read(value: T) -> Self {
        Self { value, written: false }
    }

    fn written(value: T) -> Self {
        Self { value, written: true }
    }
}

#[derive(Debug, Default)]
struct Slots {
    /// The account's stored slots were wiped in this block: the store is not consulted.
    cleared: bool,
    values: SlotMap,
}

/// Slots a vector holds before they move to a hash map.
const FEW_SLOTS: usize = 16;

/// One account's slot values. Most accounts a block touches have a handful: a short vector
/// searched in place costs one allocation, where a hash map per account would cost several.
#[derive(Debug)]
enum SlotMap {
    Few(Vec<(U256, Cached<U256>)>),
    Many(U256Map<Cached<U256>>),
}

impl Default for SlotMap {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl SlotMap {
    fn get(&self, slot: &U256) -> Option<&Cached<U256>> {
        match self {
            Self::Few(pairs) => pairs.iter().find(|(k, _)| k == slot).map(|(_, v)| v),
            Self::Many(map) => map.get(slot),
        }
    }

    fn insert(&mut self, slot: U256, value: Cached<U256>) {
        match self {
            Self::Few(pairs) => match pairs.iter().position(|(k, _)| *k == slot) {
                Some(i) => pairs[i].1 = value,
                None if pairs.len() < FEW_SLOTS => pairs.push((slot, value)),
                None => {
                    let mut map: U256Map<Cached<U256>> = pairs.drain(..).collect();
                    map.insert(slot, value);
                    *self = Self::Many(map);
                }
            },
            Self::Many(map) => {
                map.insert(slot, value);
            }
        }
    }

    /// The value of `slot`, read with `read` and cached when it is not held yet (a read
    /// that gives `None` is not cached). One lookup of the slot, not two.
    fn get_or_read<E>(
        &mut self,
        slot: U256,
        read: impl FnOnce() -> Result<Option<U256>, E>,
    ) -> Result<U256, E> {
        if let Self::Many(map) = self {
            return match map.entry(slot) {
                Entry::Occupied(entry) => Ok(entry.get().value),
                Entry::Vacant(entry) => match read()? {
                    Some(value) => Ok(entry.insert(Cached::read(value)).value),
                    None => Ok(U256::ZERO),
                },
            };
        }
        if let Some(cached) = self.get(&slot) {
            return Ok(cached.value);
        }
        let Some(value) = read()? else { return Ok(U256::ZERO) };
        self.insert(slot, Cached::read(value));
        Ok(value)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }

    /// The slots written, with their values, in no particular order. One loop per shape:
    /// one iterator chaining both cost a call and two checks per slot (the block diff of
    /// 16,528 AMM swaps, each on a pair of its own: 9.2-9.7 ms with it, 8.7-9.1 without).
    fn written(&self) -> Vec<(U256, U256)> {
        let written =
            |slot: &U256, cached: &Cached<U256>| cached.written.then_some((*slot, cached.value));
        match self {
            Self::Few(pairs) => {
                pairs.iter().filter_map(|(slot, cached)| written(slot, cached)).collect()
            }
            Self::Many(map) => {
                map.iter().filter_map(|(slot, cached)| written(slot, cached)).collect()
            }
        }
    }
}

/// Whether an account's stored slots were wiped, and the slots written since.
type WrittenStorage = (bool, SortedMap<U256, U256>);

/// The block's changes so far, with the values read beside them: what a [`BlockState`] layers
/// on its reader. It knows what the block wrote, so the block's diff comes from it directly
/// instead of from merging every transaction's. Its keys use alloy's fixed-bytes hashers (see
/// `InMemoryStorage`).
#[derive(Debug, Default)]
struct Overlay {
    accounts: AddressMap<Cached<Option<Account>>>,
    slots: AddressMap<Slots>,
    codes: B256Map<Bytecode>,
}

impl Overlay {
    /// Room for the accounts of about `txs` transactions, so the maps do not grow by
    /// rehashing while the block runs.
    fn with_capacity(txs: usize) -> Self {
        Self {
            accounts: AddressMap::with_capacity_and_hasher(2 * txs, Default::default()),
            ..Self::default()
        }
    }

    /// Applies a change set on top.
    fn apply(&mut self, diff: &StateDiff) {
        for (address, change) in &diff.accounts {
            // Every change names its account, so `written` on the account covers its slots.
            self.accounts.insert(*address, Cached::written(change.account));
            if !change.storage_cleared && change.storage.is_empty() {
                continue;
            }
            let slots = self.slots.entry(*address).or_default();
            if change.storage_cleared {
                slots.cleared = true;
                slots.values.clear();
            }
            for (slot, value) in &change.storage {
                slots.values.insert(*slot, Cached::written(*value));
            }
        }
        for (hash, code) in &diff.codes {
            self.codes.entry(*hash).or_insert_with(|| crate::state::bytecode(code));
        }
    }

    /// Every account the block changed, as one diff of the block so far: the last value of
    /// each account and the slots written since its last wipe. Codes and block hashes are not
    /// tracked here.
    fn changes(&self) -> SortedMap<Address, AccountDiff> {
        let written: Vec<(Address, Option<Account>)> = (self.accounts.iter())
            .filter(|(_, account)| account.written)
            .map(|(address, account)| (*address, account.value))
            .collect();
        // Storage is joined to the sorted accounts rather than looked up for each: most
        // accounts a block changes hold no storage, and a lookup each cost more than the sort.
        let mut storages = self.written_storage().into_iter().peekable();
        let diffs = key_order::sorted(&written).into_iter().map(|(address, account)| {
            let (storage_cleared, storage) =
                storages.next_if(|(a, _)| *a == address).map(|(_, s)| s).unwrap_or_default();
            (address, AccountDiff { account, storage_cleared, storage })
        });
        let diffs = SortedMap::from_sorted(diffs.collect());
        debug_assert!(storages.next().is_none(), "storage written without its account");
        diffs
    }

    /// The storage the block wrote, by account in address order.
    fn written_storage(&self) -> Vec<(Address, WrittenStorage)> {
        let storages: Vec<_> = (self.slots.iter())
            .map(|(address, slots)| {
                let written = slots.values.written();
                (*address, (slots.cleared, SortedMap::from_sorted(key_order::sort(written))))
            })
            .filter(|(_, (cleared, storage))| *cleared || !storage.is_empty())
            .collect();
        key_order::sort(storages)
    }
}

/// The values a block wrote, as [`BlockState::written`] shows them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Written<'a>(&'a Overlay);

impl Written<'_> {
    /// The account the block left at `address`, if the block wrote it (`Some(None)`: it
    /// does not exist afterwards).
    pub(crate) fn account(&self, address: &Address) -> Option<Option<Account>> {
        self.0.accounts.get(address).filter(|a| a.written).map(|a| a.value)
    }

    /// The value the block left in a slot, if the block wrote it or wiped its account.
    pub(crate) fn slot(&self, address: &Address, slot: &U256) -> Option<U256> {
        let slots = self.0.slots.get(address)?;
        match slots.values.get(slot) {
            Some(cached) if cached.written => Some(cached.value),
            _ => slots.cleared.then_some(U256::ZERO),
        }
    }
}

/// A reader with the block's changes layered on top.
#[derive(Debug)]
pub struct BlockState<R> {
    reader: R,
    overlay: Overlay,
    /// (number, hash) of the parent block, when the block knows it.
    parent: Option<(u64, B256)>,
}

impl<R: StateReader> BlockState<R> {
    pub fn new(reader: R, parent: Option<(u64, B256)>) -> Self {
        Self::with_capacity(reader, parent, 0)
    }

    /// Room for the accounts of about `txs` transactions, so the state does not grow by
    /// rehashing while the block runs.
    pub fn with_capacity(reader: R, parent: Option<(u64, B256)>, txs: usize) -> Self {
        Self { reader, overlay: Overlay::with_capacity(txs), parent }
    }

    /// The current account at `address`.
    pub fn account(&mut self, address: Address) -> Result<Option<Account>, StorageError> {
        match self.overlay.accounts.entry(address) {
            Entry::Occupied(entry) => Ok(entry.get().value),
            Entry::Vacant(entry) => {
                Ok(entry.insert(Cached::read(self.reader.account(address)?)).value)
            }
        }
    }

    /// The reader under the block's changes.
    pub(crate) fn reader(&self) -> &R {
        &self.reader
    }

    /// What the block wrote, without the reader: a view other threads can share.
    pub(crate) fn written(&self) -> Written<'_> {
        Written(&self.overlay)
    }

    /// See [`Overlay::changes`].
    pub fn changes(&self) -> SortedMap<Address, AccountDiff> {
        self.overlay.changes()
    }

    /// Applies a change set (already expressed as a diff) to the current state.
    pub fn apply(&mut self, diff: &StateDiff) {
        self.overlay.apply(diff);
    }

    /// Turns one transaction's (or system call's) journal output into its diff and applies it.
    pub fn commit_evm_state(&mut self, state: &EvmState, spec: SpecId) -> StateDiff {
        self.commit_evm_state_with_room(state, spec, 0)
    }

    /// [`Self::commit_evm_state`], with room in the diff for `spare` more accounts.
    pub(crate) fn commit_evm_state_with_room(
        &mut self,
        state: &EvmState,
        spec: SpecId,
        spare: usize,
    ) -> StateDiff {
        let diff = evm_state_changes(state, spec, spare, |_, _, _| {});
        // Keep revm's analysed code so it is not analysed again.
        for (hash, code) in deployed_codes(state, &diff) {
            self.overlay.codes.entry(hash).or_insert_with(|| code.clone());
        }
        self.apply(&diff);
        diff
    }

    /// Adds `amount` to a balance outside any transaction (rewards, withdrawals) and returns
    /// the change, following EIP-161 for an account left empty.
    pub fn add_balance(
        &mut self,
        address: Address,
        amount: U256,
        spec: SpecId,
    ) -> Result<StateDiff, StorageError> {
        let before = self.account(address)?;
        let after = credited(before, amount, spec);
        let mut diff = StateDiff::default();
        if after != before {
            diff.accounts.insert(address, AccountDiff { account: after, ..Default::default() });
            self.apply(&diff);
        }
        Ok(diff)
    }
}

/// revm's analysed code of each code that `diff` (made from `state`) deploys, by hash.
pub(crate) fn deployed_codes<'a>(
    state: &'a EvmState,
    diff: &'a StateDiff,
) -> impl Iterator<Item = (B256, &'a Bytecode)> {
    let accounts = (!diff.codes.is_empty()).then(|| state.values()).into_iter().flatten();
    accounts.filter_map(|account| {
        let hash = account.info.code_hash;
        account.info.code.as_ref().filter(|_| diff.codes.contains_key(&hash)).map(|c| (hash, c))
    })
}

/// Hands a transaction's finalized state back to the journal, emptied: revm takes the map
/// out for every transaction and would start the next on a new one, allocating and growing
/// it again.
pub(crate) fn recycle<E>(journal: &mut JournalInner<E>, mut state: EvmState) {
    state.clear();
    journal.state = state;
}

/// The diff of one transaction's journal output: every touched account that really changed.
pub fn evm_state_diff(state: &EvmState, spec: SpecId) -> StateDiff {
    evm_state_changes(state, spec, 0, |_, _, _| {})
}

/// [`evm_state_diff`], showing `visit` each change as it is made, and whether the account's
/// own fields (existence, nonce, balance, code) changed, as opposed to only its storage; with
/// room for `spare` more accounts.
pub(crate) fn evm_state_changes(
    state: &EvmState,
    spec: SpecId,
    spare: usize,
    mut visit: impl FnMut(Address, &AccountDiff, bool),
) -> StateDiff {
    let mut diff = StateDiff::default();
    let mut accounts = Vec::with_capacity(state.len() + spare);
    for (address, account) in state {
        if !account.is_touched() {
            continue;
        }
        let info = &account.info;
        let removed = account.is_selfdestructed()
            || (spec.is_enabled_in(SpecId::SPURIOUS_DRAGON) && account.is_empty());
        let after = (!removed).then_some(Account {
            nonce: info.nonce,
            balance: info.balance,
            code_hash: info.code_hash,
        });
        let existed = !account.is_loaded_as_not_existing();
        // revm compares nonce, balance and code hash with the values loaded, without the copy
        // (and code reference count) that `original_info` costs.
        let account_changed = match after {
            None => existed,
            Some(_) => !existed || account.is_changed(),
        };
        let storage_cleared = account.is_selfdestructed() || account.is_created();
        let storage = if removed {
            Default::default()
        } else if storage_cleared {
            SortedMap::from_distinct(
                account
                    .storage
                    .iter()
                    .filter(|(_, s)| !s.present_value.is_zero())
                    .map(|(k, s)| (*k, s.present_value))
                    .collect(),
            )
        } else {
            SortedMap::from_distinct(
                account.changed_storage_slots().map(|(k, s)| (*k, s.present_value)).collect(),
            )
        };
        // A wipe is a change if the account existed before or exists after; an account created
        // and destroyed within the transaction leaves no trace.
        let changed = account_changed
            || (storage_cleared && (existed || after.is_some()))
            || !storage.is_empty();
        if !changed {
            continue;
        }
        if let Some(after) = &after
            && after.code_hash != KECCAK256_EMPTY
            && (!existed
                || (account_changed && account.original_info().code_hash != after.code_hash))
            && let Some(code) = &info.code
        {
            diff.codes.insert(after.code_hash, code.original_bytes());
        }
        let change = AccountDiff { account: after, storage_cleared, storage };
        visit(*address, &change, account_changed || storage_cleared);
        accounts.push((*address, change));
    }
    diff.accounts = SortedMap::from_distinct(accounts);
    diff
}

/// revm's view of an account; code is loaded separately through `code_by_hash` (leaving it
/// out matters: an `AccountInfo` with code claims that code).
pub fn to_revm_info(account: Account) -> AccountInfo {
    let mut info =
        AccountInfo::new(account.balance, account.nonce, account.code_hash, empty_code());
    if account.code_hash != KECCAK256_EMPTY {
        info.code = None;
    }
    info
}

thread_local! {
    static EMPTY_CODE: Bytecode = own_copy(&Bytecode::new());
}

/// The empty code, as revm's default has it, but one copy per thread: revm clones and drops
/// it for every code-less account it loads, and the count of revm's one shared copy (which
/// every empty code revm makes is) moved between the workers' cores at every clone and drop.
pub fn empty_code() -> Bytecode {
    EMPTY_CODE.with(Bytecode::clone)
}

/// A copy of `code` with a reference count of its own, for one thread to clone and drop as
/// often as revm does (every account load and call of a contract) without moving the shared
/// copy's count between cores. The analysis is copied, not redone.
#[allow(unsafe_code)]
pub(crate) fn own_copy(code: &Bytecode) -> Bytecode {
    match code.legacy_jump_table() {
        // SAFETY: the bytes, their original length and the jump table come from code revm
        // analysed, padding included, which is all `new_analyzed` asks of them.
        Some(jumps) if !code.bytecode().is_empty() => unsafe {
            Bytecode::new_analyzed(code.bytecode().clone(), code.len(), jumps.clone())
        },
        // EIP-7702 designators are 23 bytes: analysing one again costs as little as a copy.
        _ => Bytecode::new_raw_checked(code.original_bytes()).unwrap_or_else(|_| code.clone()),
    }
}

impl<R: StateReader> Database for BlockState<R> {
    type Error = StorageError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StorageError> {
        Ok(self.account(address)?.map(to_revm_info))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StorageError> {
        if code_hash == KECCAK256_EMPTY {
            return Ok(empty_code());
        }
        if let Some(code) = self.overlay.codes.get(&code_hash) {
            return Ok(code.clone());
        }
        let code = self.reader.code(code_hash)?.ok_or(StorageError::MissingCode(code_hash))?;
        self.overlay.codes.insert(code_hash, code.clone());
        Ok(code)
    }

    fn storage(&mut self, address: Address, slot: U256) -> Result<U256, StorageError> {
        let slots = self.overlay.slots.entry(address).or_default();
        let cleared = slots.cleared;
        let reader = &self.reader;
        // Slots of a wiped account that the block did not write are zero, not the store's.
        slots.values.get_or_read(slot, || {
            if cleared { Ok(None) } else { reader.storage(address, slot).map(Some) }
        })
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StorageError> {
        if let Some((parent, hash)) = self.parent
            && parent == number
        {
            return Ok(hash);
        }
        self.reader.block_hash(number)?.ok_or(StorageError::MissingBlockHash(number))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::InMemoryStorage;

    #[test]
    fn each_threads_empty_code_is_revms_empty_code() {
        let here = empty_code();
        let there = std::thread::spawn(empty_code).join().unwrap();
        for code in [&here, &there] {
            assert!(!code.is_default(), "not revm's shared copy");
            assert_eq!(*code, Bytecode::default());
            assert_eq!(code.original_bytes(), Bytecode::default().original_bytes());
            assert_eq!(code.hash_slow(), KECCAK256_EMPTY);
        }
        let info = to_revm_info(Account::with_balance(U256::from(1)));
        assert_eq!(info.code, Some(Bytecode::default()), "a code-less account's code is known");
        let with_code = Account { code_hash: B256::repeat_byte(1), ..Account::default() };
        assert_eq!(to_revm_info(with_code).code, None, "loaded by hash");
    }

    #[test]
    fn an_own_copy_of_code_runs_as_the_original_and_shares_no_count() {
        let legacy = Bytecode::new_legacy(alloy_primitives::Bytes::from_static(&[
            0x60, 0x04, 0x56, 0x00, 0x5b, 0x60, 0x01, 0x00, // PUSH1 4 JUMP STOP JUMPDEST ...
        ]));
        let delegation = Bytecode::new_eip7702(Address::repeat_byte(7));
        for code in [legacy, delegation, Bytecode::new()] {
            let copy = own_copy(&code);
            assert_eq!(copy, code, "same kind, bytes, length and jump table");
            assert_eq!(copy.original_bytes(), code.original_bytes());
            assert_eq!(copy.hash_slow(), code.hash_slow());
            assert_eq!(copy.legacy_jump_table(), code.legacy_jump_table());
        }
    }

    fn account(balance: u64) -> Option<Account> {
        Some(Account { nonce: 1, balance: U256::from(balance), code_hash: KECCAK256_EMPTY })
    }

    fn change(balance: u64, cleared: bool, slots: &[(u64, u64)]) -> AccountDiff {
        let storage = slots.iter().map(|(k, v)| (U256::from(*k), U256::from(*v))).collect();
        AccountDiff { account: account(balance), storage_cleared: cleared, storage }
    }

    /// A store where `who` holds `slots` slots, slot `i` holding `i + 100`.
    fn store(who: Address, slots: u64) -> InMemoryStorage {
        let stored: Vec<(u64, u64)> = (0..slots).map(|i| (i, i + 100)).collect();
        let mut diff = StateDiff::default();
        diff.accounts.insert(who, change(1, true, &stored));
        InMemoryStorage::from_diff(&diff)
    }

    #[test]
    fn a_wiped_account_reads_zero_except_what_the_block_wrote_since() {
        let who = Address::repeat_byte(1);
        // Few slots are kept in a vector, many in a hash map: both must see through the wipe.
        for read_first in [2, 3 * FEW_SLOTS as u64] {
            let store = store(who, read_first + 1);
            let mut state = BlockState::new(&store, None);
            for slot in 0..read_first {
                assert_eq!(state.storage(who, U256::from(slot)).unwrap(), U256::from(slot + 100));
            }
            let mut wipe = StateDiff::default();
            wipe.accounts.insert(who, change(2, true, &[(1, 7)]));
            state.apply(&wipe);
            let read = |state: &mut BlockState<_>, slot: u64| {
                state.storage(who, U256::from(slot)).unwrap().to::<u64>()
            };
            assert_eq!(read(&mut state, 0), 0, "a slot read before the wipe");
            assert_eq!(read(&mut state, 1), 7, "a slot written after the wipe");
            assert_eq!(read(&mut state, read_first), 0, "a stored slot never read");
            let changes = state.changes();
            assert_eq!(changes.get(&who), Some(&change(2, true, &[(1, 7)])));
        }
    }

    #[test]
    fn the_blocks_changes_equal_its_transactions_merged() {
        let store = InMemoryStorage::default();
        let mut state = BlockState::new(&store, None);
        let mut merged = StateDiff::default();
        // Addresses that share most bytes, so the sort must look past them.
        let who = |i: u8| Address::with_last_byte(i);
        let steps = [
            (who(3), change(1, false, &[(5, 1), (6, 2)])),
            (who(1), change(2, false, &[])),
            (who(3), change(3, false, &[(5, 9)])),
            (who(2), change(4, true, &[(1, 1)])),
            (who(1), change(5, true, &[])),
        ];
        for (address, step) in steps {
            let mut diff = StateDiff::default();
            diff.accounts.insert(address, step);
            state.apply(&diff);
            merged.merge(&diff);
        }
        assert_eq!(state.changes(), merged.accounts);
    }
}

//! A durable store on libmdbx.
//!
//! Tables: `accounts` (address → nonce ‖ balance ‖ code hash), `storage` (address ‖ slot →
//! value, zero values absent), `bytecodes` (code hash → raw code), `block_hashes` (big-endian
//! number → hash), and `meta`, whose `format` key marks the file as a lockstep store.

use super::{AccountEntry, StateReader, Storage, StorageError};
use crate::state::{Account, StateDiff};
use alloy_primitives::{Address, B256, U256, map::B256Map};
use libmdbx::{
    Database, DatabaseOptions, Mode, NoWriteMap, RO, ReadWriteOptions, Table, TableFlags,
    Transaction, WriteFlags,
};
use revm::bytecode::Bytecode;
use std::{
    borrow::Cow,
    path::{Path, PathBuf},
    sync::RwLock,
};

const ACCOUNTS: &str = "accounts";
const STORAGE: &str = "storage";
const BYTECODES: &str = "bytecodes";
const BLOCK_HASHES: &str = "block_hashes";
const META: &str = "meta";
const FORMAT_KEY: &[u8] = b"format";
const FORMAT: &[u8] = b"lockstep-state-v1";
const ACCOUNT_LEN: usize = 8 + 32 + 32;

/// A world state in an MDBX environment (a directory holding `mdbx.dat`).
pub struct MdbxStorage {
    db: Database<NoWriteMap>,
    path: PathBuf,
    /// Analysed code by hash, shared by every reader and block: analysing a contract's jump
    /// destinations took an eighth of a real block's time when each reader did it again.
    /// Code never changes under its hash, so nothing here goes stale.
    codes: RwLock<B256Map<Bytecode>>,
}

/// Contracts [`MdbxStorage`] keeps analysed before it starts over (a few tens of MB).
const CACHED_CODES: usize = 4096;

impl std::fmt::Debug for MdbxStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdbxStorage").field("path", &self.path).finish()
    }
}

impl MdbxStorage {
    /// Opens the store at `path`, creating an empty one if the directory holds none.
    /// A file that is not MDBX, or an MDBX file not written by lockstep, is an error.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|e| StorageError::Mdbx {
            path: path.clone(),
            message: format!("cannot create directory: {e}"),
        })?;
        let options = DatabaseOptions {
            max_tables: Some(8),
            max_readers: Some(256),
            mode: Mode::ReadWrite(ReadWriteOptions {
                max_size: Some(1 << 40),
                growth_step: Some(1 << 26),
                ..Default::default()
            }),
            ..Default::default()
        };
        let db = Database::open_with_options(&path, options).map_err(|e| StorageError::Mdbx {
            path: path.clone(),
            message: match e {
                libmdbx::Error::Invalid | libmdbx::Error::Corrupted => {
                    format!("not a valid MDBX file or corrupt ({e})")
                }
                e => e.to_string(),
            },
        })?;
        let store = Self { db, path, codes: RwLock::default() };
        store.init_tables()?;
        Ok(store)
    }

    /// A new store at `path` holding the state `diff` describes.
    pub fn create(path: impl AsRef<Path>, diff: &StateDiff) -> Result<Self, StorageError> {
        let mut store = Self::open(path)?;
        store.commit(diff)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    #[allow(clippy::needless_pass_by_value)] // used as `map_err(|e| self.err(e))`
    fn err(&self, e: libmdbx::Error) -> StorageError {
        StorageError::Mdbx { path: self.path.clone(), message: e.to_string() }
    }

    /// Creates the tables in a new store, or checks the format marker of an existing one.
    fn init_tables(&self) -> Result<(), StorageError> {
        let txn = self.db.begin_rw_txn().map_err(|e| self.err(e))?;
        let main = txn.open_table(None).map_err(|e| self.err(e))?;
        let is_new = txn.table_stat(&main).map_err(|e| self.err(e))?.entries() == 0;
        if is_new {
            for name in [ACCOUNTS, STORAGE, BYTECODES, BLOCK_HASHES] {
                txn.create_table(Some(name), TableFlags::default()).map_err(|e| self.err(e))?;
            }
            let meta =
                txn.create_table(Some(META), TableFlags::default()).map_err(|e| self.err(e))?;
            txn.put(&meta, FORMAT_KEY, FORMAT, WriteFlags::UPSERT).map_err(|e| self.err(e))?;
            txn.commit().map_err(|e| self.err(e))?;
            return Ok(());
        }
        let foreign = |reason: String| StorageError::Foreign { path: self.path.clone(), reason };
        let meta =
            txn.open_table(Some(META)).map_err(|e| foreign(format!("no `meta` table ({e})")))?;
        match txn.get::<Vec<u8>>(&meta, FORMAT_KEY).map_err(|e| self.err(e))? {
            Some(format) if format == FORMAT => Ok(()),
            Some(format) => Err(foreign(format!(
                "format marker is {:?}, expected {:?}",
                String::from_utf8_lossy(&format),
                String::from_utf8_lossy(FORMAT)
            ))),
            None => Err(foreign("no format marker".into())),
        }
    }
}

/// The tables a reader reads. MDBX table handles outlive the transaction that opens them;
/// holding them spares every read a table lookup under the environment's lock.
struct Tables<'a> {
    accounts: Table<'a>,
    storage: Table<'a>,
    bytecodes: Table<'a>,
    block_hashes: Table<'a>,
}

/// One thread's read transaction.
pub struct MdbxReader<'a> {
    store: &'a MdbxStorage,
    txn: Transaction<'a, RO, NoWriteMap>,
    tables: Tables<'a>,
}

impl std::fmt::Debug for MdbxReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdbxReader").field("path", &self.store.path).finish()
    }
}

impl<'a> MdbxReader<'a> {
    /// The value at `key`, borrowed from the memory map.
    fn get(&self, table: &Table<'a>, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StorageError> {
        self.txn.get::<Cow<'_, [u8]>>(table, key).map_err(|e| self.store.err(e))
    }
}

fn corrupt(table: &'static str, key: &[u8], reason: &str) -> StorageError {
    StorageError::Corrupt { table, key: alloy_primitives::hex::encode(key), reason: reason.into() }
}

fn encode_account(account: &Account) -> [u8; ACCOUNT_LEN] {
    let mut out = [0u8; ACCOUNT_LEN];
    out[..8].copy_from_slice(&account.nonce.to_be_bytes());
    out[8..40].copy_from_slice(&account.balance.to_be_bytes::<32>());
    out[40..].copy_from_slice(account.code_hash.as_slice());
    out
}

fn decode_account(key: &[u8], raw: &[u8]) -> Result<Account, StorageError> {
    if raw.len() != ACCOUNT_LEN {
        return Err(corrupt(
            ACCOUNTS,
            key,
            &format!("{} bytes, expected {ACCOUNT_LEN}", raw.len()),
        ));
    }
    Ok(Account {
        nonce: u64::from_be_bytes(raw[..8].try_into().expect("8 bytes")),
        balance: U256::from_be_slice(&raw[8..40]),
        code_hash: B256::from_slice(&raw[40..]),
    })
}

fn decode_word(table: &'static str, key: &[u8], raw: &[u8]) -> Result<U256, StorageError> {
    if raw.len() != 32 {
        return Err(corrupt(table, key, &format!("{} bytes, expected 32", raw.len())));
    }
    Ok(U256::from_be_slice(raw))
}

fn slot_key(address: &Address, slot: &U256) -> [u8; 52] {
    let mut key = [0u8; 52];
    key[..20].copy_from_slice(address.as_slice());
    key[20..].copy_from_slice(&slot.to_be_bytes::<32>());
    key
}

impl StateReader for MdbxReader<'_> {
    fn account(&self, address: Address) -> Result<Option<Account>, StorageError> {
        self.get(&self.tables.accounts, address.as_slice())?
            .map(|raw| decode_account(address.as_slice(), &raw))
            .transpose()
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytecode>, StorageError> {
        let codes = &self.store.codes;
        if let Some(code) = codes.read().expect("code cache poisoned").get(&code_hash) {
            return Ok(Some(code.clone()));
        }
        let Some(raw) = self.get(&self.tables.bytecodes, code_hash.as_slice())? else {
            return Ok(None);
        };
        let code = crate::state::bytecode(&raw.into_owned().into());
        let mut codes = codes.write().expect("code cache poisoned");
        if codes.len() >= CACHED_CODES {
            codes.clear();
        }
        codes.insert(code_hash, code.clone());
        Ok(Some(code))
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StorageError> {
        let key = slot_key(&address, &slot);
        match self.get(&self.tables.storage, &key)? {
            Some(raw) => decode_word(STORAGE, &key, &raw),
            None => Ok(U256::ZERO),
        }
    }

    fn block_hash(&self, number: u64) -> Result<Option<B256>, StorageError> {
        let key = number.to_be_bytes();
        match self.get(&self.tables.block_hashes, &key)? {
            Some(raw) if raw.len() == 32 => Ok(Some(B256::from_slice(&raw))),
            Some(raw) => {
                Err(corrupt(BLOCK_HASHES, &key, &format!("{} bytes, expected 32", raw.len())))
            }
            None => Ok(None),
        }
    }
}

impl MdbxStorage {
    /// Opens the read tables in a short transaction whose commit rebinds their handles to the
    /// environment (in the order they were primed).
    fn tables(&self) -> Result<Tables<'_>, StorageError> {
        let err = |e| self.err(e);
        let txn = self.db.begin_ro_txn().map_err(err)?;
        for name in [ACCOUNTS, STORAGE, BYTECODES, BLOCK_HASHES] {
            txn.prime_for_permaopen(txn.open_table(Some(name)).map_err(err)?);
        }
        let (_, rebound) = txn.commit_and_rebind_open_dbs().map_err(err)?;
        let Ok([accounts, storage, bytecodes, block_hashes]) = <[Table<'_>; 4]>::try_from(rebound)
        else {
            let message = "the four read tables were not all rebound".into();
            return Err(StorageError::Mdbx { path: self.path.clone(), message });
        };
        Ok(Tables { accounts, storage, bytecodes, block_hashes })
    }
}

impl Storage for MdbxStorage {
    type Reader<'a> = MdbxReader<'a>;

    fn reader(&self) -> Result<Self::Reader<'_>, StorageError> {
        let tables = self.tables()?;
        let txn = self.db.begin_ro_txn().map_err(|e| self.err(e))?;
        Ok(MdbxReader { store: self, txn, tables })
    }

    fn commit(&mut self, diff: &StateDiff) -> Result<(), StorageError> {
        let err = |e| self.err(e);
        let txn = self.db.begin_rw_txn().map_err(err)?;
        let accounts = txn.open_table(Some(ACCOUNTS)).map_err(err)?;
        let storage = txn.open_table(Some(STORAGE)).map_err(err)?;
        let bytecodes = txn.open_table(Some(BYTECODES)).map_err(err)?;
        let block_hashes = txn.open_table(Some(BLOCK_HASHES)).map_err(err)?;
        for (hash, code) in &diff.codes {
            txn.put(&bytecodes, hash, code, WriteFlags::UPSERT).map_err(err)?;
        }
        for (address, change) in &diff.accounts {
            match &change.account {
                Some(account) => {
                    txn.put(&accounts, address, encode_account(account), WriteFlags::UPSERT)
                        .map_err(err)?;
                }
                None => {
                    txn.del(&accounts, address, None).map_err(err)?;
                }
            }
            if change.storage_cleared {
                // Keys of one address are contiguous: collect them from its prefix, then delete.
                let mut cursor = txn.cursor(&storage).map_err(err)?;
                let mut doomed = Vec::new();
                for item in cursor.iter_from::<Cow<'_, [u8]>, ()>(address.as_slice()) {
                    let (key, ()) = item.map_err(err)?;
                    if !key.starts_with(address.as_slice()) {
                        break;
                    }
                    doomed.push(key.into_owned());
                }
                drop(cursor);
                for key in doomed {
                    txn.del(&storage, key, None).map_err(err)?;
                }
            }
            for (slot, value) in &change.storage {
                let key = slot_key(address, slot);
                if value.is_zero() {
                    txn.del(&storage, key, None).map_err(err)?;
                } else {
                    txn.put(&storage, key, value.to_be_bytes::<32>(), WriteFlags::UPSERT)
                        .map_err(err)?;
                }
            }
        }
        for (number, hash) in &diff.block_hashes {
            txn.put(&block_hashes, number.to_be_bytes(), hash, WriteFlags::UPSERT).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(())
    }

    fn for_each_account(
        &self,
        visit: &mut dyn FnMut(AccountEntry<'_>),
    ) -> Result<(), StorageError> {
        let err = |e| self.err(e);
        let txn = self.db.begin_ro_txn().map_err(err)?;
        let accounts = txn.open_table(Some(ACCOUNTS)).map_err(err)?;
        let storage = txn.open_table(Some(STORAGE)).map_err(err)?;
        let mut account_cursor = txn.cursor(&accounts).map_err(err)?;
        let mut storage_cursor = txn.cursor(&storage).map_err(err)?;
        let mut slots_iter = storage_cursor.iter_start::<Cow<'_, [u8]>, Cow<'_, [u8]>>().peekable();
        let mut slots = Vec::new();
        // Both tables are ordered by address, so one pass over each suffices.
        for item in account_cursor.iter_start::<Cow<'_, [u8]>, Cow<'_, [u8]>>() {
            let (key, raw) = item.map_err(err)?;
            if key.len() != 20 {
                return Err(corrupt(ACCOUNTS, &key, "key is not an address"));
            }
            let address = Address::from_slice(&key);
            let account = decode_account(&key, &raw)?;
            slots.clear();
            while let Some(next) = slots_iter.peek() {
                let (slot_key, value) = match next {
                    Ok(kv) => kv,
                    Err(e) => {
                        return Err(StorageError::Mdbx {
                            path: self.path.clone(),
                            message: e.to_string(),
                        });
                    }
                };
                if slot_key.len() != 52 {
                    return Err(corrupt(STORAGE, slot_key, "key is not address ‖ slot"));
                }
                match slot_key[..20].cmp(address.as_slice()) {
                    std::cmp::Ordering::Less => {} // storage of a missing account: not in the state
                    std::cmp::Ordering::Equal => slots.push((
                        U256::from_be_slice(&slot_key[20..]),
                        decode_word(STORAGE, slot_key, value)?,
                    )),
                    std::cmp::Ordering::Greater => break,
                }
                slots_iter.next();
            }
            visit((address, account, &slots));
        }
        Ok(())
    }
}

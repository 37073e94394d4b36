//! The MDBX store: persistence, atomic commits, and clear errors for bad files.

mod common;

use alloy_primitives::{Address, U256};
use lockstep_executor::{
    Account, AccountDiff, MdbxStorage, StateDiff, StateReader, Storage, StorageError, state_root,
};
use std::process::Command;

fn account(balance: u64) -> Option<Account> {
    Some(Account::with_balance(U256::from(balance)))
}

/// A diff that sets `accounts` accounts to balance `generation` and slot 0 of each to it too.
fn generation_diff(accounts: u64, generation: u64) -> StateDiff {
    let mut diff = StateDiff::default();
    for i in 0..accounts {
        let mut change = AccountDiff { account: account(generation), ..Default::default() };
        change.storage.insert(U256::ZERO, U256::from(generation));
        diff.accounts.insert(Address::with_last_byte(0).create(i), change);
    }
    diff
}

#[test]
fn reopened_store_holds_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let diff = generation_diff(50, 7);
    let root = {
        let mut store = MdbxStorage::open(&path).unwrap();
        store.commit(&diff).unwrap();
        let mut wipe = StateDiff::default();
        let first = *diff.accounts.keys().next().unwrap();
        wipe.accounts.insert(
            first,
            AccountDiff { account: None, storage_cleared: true, ..Default::default() },
        );
        store.commit(&wipe).unwrap();
        state_root(&store).unwrap()
    };
    let store = MdbxStorage::open(&path).unwrap();
    assert_eq!(state_root(&store).unwrap(), root);
    let reader = store.reader().unwrap();
    let mut keys = diff.accounts.keys();
    let first = *keys.next().unwrap();
    assert_eq!(reader.account(first).unwrap(), None);
    assert_eq!(reader.storage(first, U256::ZERO).unwrap(), U256::ZERO);
    let second = *keys.next().unwrap();
    assert_eq!(reader.account(second).unwrap(), account(7));
    assert_eq!(reader.storage(second, U256::ZERO).unwrap(), U256::from(7));
}

#[test]
fn garbage_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mdbx.dat"), vec![0xab; 64 * 1024]).unwrap();
    let err = MdbxStorage::open(dir.path()).unwrap_err();
    assert!(matches!(err, StorageError::Mdbx { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&dir.path().display().to_string()), "{message}");
}

#[test]
fn truncated_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = MdbxStorage::open(dir.path()).unwrap();
        store.commit(&generation_diff(2_000, 1)).unwrap();
    }
    let data = dir.path().join("mdbx.dat");
    // Cut into the B-tree pages (the file is preallocated, so a fraction of it may hold none).
    let file = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    file.set_len(5 * 4096).unwrap();
    drop(file);
    let opened = MdbxStorage::open(dir.path()).and_then(|store| state_root(&store).map(|_| store));
    assert!(opened.is_err(), "a truncated store must not open as if whole");
}

#[test]
fn foreign_mdbx_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    {
        use lockstep_executor::revm as _;
        let db = libmdbx::Database::<libmdbx::NoWriteMap>::open(dir.path()).unwrap();
        let txn = db.begin_rw_txn().unwrap();
        let table = txn.create_table(None, Default::default()).unwrap();
        txn.put(&table, b"someone", b"else", libmdbx::WriteFlags::UPSERT).unwrap();
        txn.commit().unwrap();
    }
    let err = MdbxStorage::open(dir.path()).unwrap_err();
    assert!(matches!(err, StorageError::Foreign { .. }), "{err:?}");
}

const CHILD_ENV: &str = "LOCKSTEP_MDBX_KILL_CHILD";
const ACCOUNTS: u64 = 20_000;

/// Run as a child process: commits generation after generation until killed.
#[test]
#[ignore = "helper process of killed_commit_leaves_previous_state"]
fn commit_forever_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let mut store = MdbxStorage::open(&path).unwrap();
    for generation in 1.. {
        store.commit(&generation_diff(ACCOUNTS, generation)).unwrap();
        std::fs::write(format!("{path}.progress"), generation.to_string()).unwrap();
    }
}

#[test]
fn killed_commit_leaves_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "commit_forever_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let progress = dir.path().join("state.progress");
    // Let it commit a few generations, then kill it in the middle of one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&progress).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        < 3
    {
        assert!(std::time::Instant::now() < deadline, "child made no progress");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let store = MdbxStorage::open(&path).unwrap();
    let mut generations = std::collections::BTreeSet::new();
    let mut count = 0;
    store
        .for_each_account(&mut |(_, account, slots)| {
            count += 1;
            generations.insert(account.balance);
            generations.extend(slots.iter().map(|(_, v)| *v));
        })
        .unwrap();
    assert_eq!(count, ACCOUNTS);
    assert_eq!(generations.len(), 1, "a commit was torn: generations {generations:?}");
    assert!(*generations.first().unwrap() >= U256::from(3));
}

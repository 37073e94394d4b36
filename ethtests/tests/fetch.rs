//! `--fetch`: a release downloaded from a (local) server, verified by SHA-256, unpacked into
//! the cache and run; a wrong checksum or a failing server is a clear error.

use lockstep_ethtests::fixtures;
use lockstep_harness::{
    fetch::{self, FetchError, Release},
    local_http,
};
use std::{
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

/// A `.tar.gz` release holding one real state test under `fixtures/state_tests/`.
fn release_archive() -> Vec<u8> {
    let root =
        fixtures::default_ethtests_dir().expect("ETHTESTS_DIR or ../shared/ethtests must exist");
    let tests = fixtures::materialize(&root.join("GeneralStateTests.tar.zst")).unwrap();
    let test = std::fs::read(tests.join("GeneralStateTests/stExample/add11.json")).unwrap();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(test.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "fixtures/state_tests/stExample/add11.json", test.as_slice())
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

/// Serves `archive` at `/release.tar.gz` and counts the downloads.
fn server(archive: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let downloads = Arc::new(AtomicUsize::new(0));
    let counter = downloads.clone();
    let base = local_http::serve(move |request| {
        if request.method == "GET" && request.path == "/release.tar.gz" {
            counter.fetch_add(1, Ordering::SeqCst);
            (200, archive.clone())
        } else {
            (404, b"not found".to_vec())
        }
    });
    (base, downloads)
}

fn sha256(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a");
    std::fs::write(&path, bytes).unwrap();
    fetch::sha256_file(&path).unwrap()
}

fn release(url: String, sha256: String) -> Release {
    Release { url, sha256, dirs: vec!["fixtures/state_tests".into()] }
}

#[test]
fn sha256_matches_a_known_digest() {
    // SHA-256("abc") from FIPS 180-2, appendix B.1.
    assert_eq!(sha256(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn a_release_is_downloaded_once_verified_and_unpacked() {
    let archive = release_archive();
    let (base, downloads) = server(archive.clone());
    let cache = tempfile::tempdir().unwrap();
    let release = release(format!("{base}/release.tar.gz"), sha256(&archive));

    let dirs = fetch::fetch(&release, cache.path()).unwrap();
    assert_eq!(dirs.len(), 1);
    assert!(dirs[0].join("stExample/add11.json").is_file());
    assert!(dirs[0].starts_with(cache.path()));
    assert_eq!(downloads.load(Ordering::SeqCst), 1);

    // A second fetch reuses the verified archive.
    assert_eq!(fetch::fetch(&release, cache.path()).unwrap(), dirs);
    assert_eq!(downloads.load(Ordering::SeqCst), 1);
}

#[test]
fn a_checksum_mismatch_is_an_error_and_leaves_nothing_behind() {
    let archive = release_archive();
    let (base, _) = server(archive.clone());
    let cache = tempfile::tempdir().unwrap();
    let wrong = "00".repeat(32);
    let err = fetch::fetch(&release(format!("{base}/release.tar.gz"), wrong.clone()), cache.path())
        .unwrap_err();
    match &err {
        FetchError::Checksum { expected, got, .. } => {
            assert_eq!(expected, &wrong);
            assert_eq!(got, &sha256(&archive));
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    assert!(err.to_string().contains("checksum mismatch"));
    let left: Vec<PathBuf> = std::fs::read_dir(cache.path().join("downloads"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_missing_release_or_folder_names_the_url() {
    let archive = release_archive();
    let (base, _) = server(archive.clone());
    let cache = tempfile::tempdir().unwrap();
    let missing = format!("{base}/nothing.tar.gz");
    let err = fetch::fetch(&release(missing.clone(), sha256(&archive)), cache.path()).unwrap_err();
    assert!(err.to_string().contains(&missing), "{err}");

    let mut no_dir = release(format!("{base}/release.tar.gz"), sha256(&archive));
    no_dir.dirs = vec!["fixtures/blockchain_tests".into()];
    let err = fetch::fetch(&no_dir, cache.path()).unwrap_err();
    assert!(err.to_string().contains("no folder `fixtures/blockchain_tests`"), "{err}");
}

#[test]
fn the_command_runs_a_fetched_release() {
    let archive = release_archive();
    let (base, _) = server(archive.clone());
    let cache = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_lockstep-ethtests"))
        .args(["--fetch", "--fetch-url", &format!("{base}/release.tar.gz")])
        .args(["--fetch-sha256", &sha256(&archive), "--fetch-dir", "fixtures/state_tests"])
        .env("LOCKSTEP_CACHE", cache.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("1 files"), "{stdout}");
    let total = stdout.lines().find(|l| l.starts_with("total")).unwrap();
    let counts: Vec<&str> = total.split_whitespace().skip(1).collect();
    assert_eq!(counts, ["1", "0", "0"], "{stdout}");
}

//! Downloading a pinned fixture release into the cache, verified by its SHA-256.

use crate::{
    fixtures::{self, FixtureError},
    http,
};
use sha2::{Digest, Sha256};
use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// A published fixture archive and the folders of it that hold runnable fixtures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub url: String,
    /// Lower-case hex SHA-256 of the archive file.
    pub sha256: String,
    /// Folders inside the unpacked archive to run.
    pub dirs: Vec<String>,
}

/// The release `cargo xtask ethtests --fetch` downloads: execution-spec-tests v5.4.0
/// (`fixtures_develop`: every fork up to Osaka; state and blockchain tests).
pub fn default_ethtests_release() -> Release {
    Release {
        url: "https://github.com/ethereum/execution-spec-tests/releases/download/v5.4.0/fixtures_develop.tar.gz".into(),
        sha256: "3e2b02d49fe903eda4fd8caca5cbf0d139c470e97e1de9a85299b1b034f97099".into(),
        dirs: vec!["fixtures/state_tests".into(), "fixtures/blockchain_tests".into()],
    }
}

/// Why a release could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{url}: checksum mismatch: expected sha256 {expected}, got {got}")]
    Checksum { url: String, expected: String, got: String },
    #[error(transparent)]
    Fixtures(#[from] FixtureError),
    #[error("{url}: the archive has no folder `{dir}`")]
    MissingDir { url: String, dir: String },
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok(alloy_primitives::hex::encode(hasher.finalize()))
}

/// Downloads `release` into `<cache>/downloads` (once: a cached archive with the right
/// checksum is reused), unpacks it and returns its fixture folders. A download whose checksum
/// differs is deleted and reported, never unpacked.
pub fn fetch(release: &Release, cache: &Path) -> Result<Vec<PathBuf>, FetchError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Io { path, source }
    };
    let name =
        release.url.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("fixtures.tar.gz");
    let downloads = cache.join("downloads");
    fs::create_dir_all(&downloads).map_err(io_err(&downloads))?;
    let archive =
        downloads.join(format!("{}-{name}", &release.sha256[..release.sha256.len().min(12)]));
    if sha256_file(&archive).ok().as_deref() != Some(release.sha256.as_str()) {
        let partial = archive.with_extension(format!("part-{}", std::process::id()));
        http::download(&release.url, &partial)?;
        let got = sha256_file(&partial).map_err(io_err(&partial))?;
        if got != release.sha256 {
            let _ = fs::remove_file(&partial);
            return Err(FetchError::Checksum {
                url: release.url.clone(),
                expected: release.sha256.clone(),
                got,
            });
        }
        fs::rename(&partial, &archive).map_err(io_err(&archive))?;
    }
    let root = fixtures::materialize_in(&archive, cache)?;
    release
        .dirs
        .iter()
        .map(|dir| {
            let path = root.join(dir);
            if path.is_dir() {
                Ok(path)
            } else {
                Err(FetchError::MissingDir { url: release.url.clone(), dir: dir.clone() })
            }
        })
        .collect()
}

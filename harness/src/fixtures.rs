//! Finding fixture sets: a directory, or a `.tar.zst` (or `.tar.gz`) archive unpacked once into
//! a cache.

use std::{
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
};

/// Why a fixture set could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a fixture directory or .tar.zst / .tar.gz archive")]
    NotFixtures { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FixtureError + '_ {
    move |source| FixtureError::Io { path: path.to_path_buf(), source }
}

/// The workspace root, where `.cache/` lives.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate sits in the workspace")
        .to_path_buf()
}

/// The cache folder for unpacked archives: `$LOCKSTEP_CACHE` or `<workspace>/.cache`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("LOCKSTEP_CACHE")
        .map_or_else(|| workspace_root().join(".cache"), PathBuf::from)
}

/// A data directory: `$VAR` if set, else `../shared/<name>` beside the workspace if it exists.
fn data_dir(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(var) {
        return Some(PathBuf::from(dir));
    }
    let shared = workspace_root().join("../shared").join(name);
    shared.exists().then_some(shared)
}

/// Where the Ethereum test fixtures are: `$ETHTESTS_DIR` or `../shared/ethtests`.
pub fn default_ethtests_dir() -> Option<PathBuf> {
    data_dir("ETHTESTS_DIR", "ethtests")
}

/// Where the mainnet block snapshots are: `$SNAPSHOTS_DIR` or `../shared/mainnet`.
pub fn default_snapshots_dir() -> Option<PathBuf> {
    data_dir("SNAPSHOTS_DIR", "mainnet")
}

/// Makes `path` browsable as a directory: a directory is returned as is; a `.tar.zst` or
/// `.tar.gz` archive is unpacked under the cache (once; a marker file records a complete unpack).
pub fn materialize(path: &Path) -> Result<PathBuf, FixtureError> {
    materialize_in(path, &cache_dir())
}

/// [`materialize`] with an explicit cache folder.
pub fn materialize_in(path: &Path, cache: &Path) -> Result<PathBuf, FixtureError> {
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some((stem, format)) = archive_format(name) else {
        return Err(FixtureError::NotFixtures { path: path.to_path_buf() });
    };
    let target = cache.join("fixtures").join(stem);
    let archive_len = fs::metadata(path).map_err(io_err(path))?.len().to_string();
    let complete =
        |dir: &Path| fs::read_to_string(dir.join(".complete")).is_ok_and(|len| len == archive_len);
    if complete(&target) {
        return Ok(target);
    }
    // Unpack into a directory of this process's own and rename it into place: concurrent test
    // processes may unpack the same archive, and a killed unpack never looks complete.
    static UNPACKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = UNPACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = target.with_extension(format!("partial-{}-{unique}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).map_err(io_err(&partial))?;
    let file = fs::File::open(path).map_err(io_err(path))?;
    let decoder: Box<dyn Read> = match format {
        Compression::Zstd => Box::new(zstd::Decoder::new(file).map_err(io_err(path))?),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(file)),
    };
    tar::Archive::new(decoder).unpack(&partial).map_err(io_err(path))?;
    fs::write(partial.join(".complete"), &archive_len).map_err(io_err(&partial))?;
    if fs::rename(&partial, &target).is_err() {
        if complete(&target) {
            // Another process finished first.
            let _ = fs::remove_dir_all(&partial);
            return Ok(target);
        }
        // A stale unpack of an older archive: replace it.
        let _ = fs::remove_dir_all(&target);
        fs::rename(&partial, &target).map_err(io_err(&target))?;
    }
    Ok(target)
}

enum Compression {
    Zstd,
    Gzip,
}

/// An archive's name without its suffix, and how it is compressed.
fn archive_format(name: &str) -> Option<(&str, Compression)> {
    if let Some(stem) = name.strip_suffix(".tar.zst") {
        return Some((stem, Compression::Zstd));
    }
    let stem = name.strip_suffix(".tar.gz").or_else(|| name.strip_suffix(".tgz"))?;
    Some((stem, Compression::Gzip))
}

/// Every archive or directory inside a fixture root, made browsable.
pub fn materialize_all(root: &Path) -> Result<Vec<PathBuf>, FixtureError> {
    if !root.is_dir() {
        return Ok(vec![materialize(root)?]);
    }
    let mut archives: Vec<PathBuf> = fs::read_dir(root)
        .map_err(io_err(root))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).and_then(archive_format).is_some())
        .collect();
    if archives.is_empty() {
        return Ok(vec![root.to_path_buf()]);
    }
    archives.sort();
    archives.iter().map(|a| materialize(a)).collect()
}

/// Every `.json` file under `dir`, sorted.
pub fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Reads a whole file (fixtures are read once each).
pub fn read(path: &Path) -> Result<String, FixtureError> {
    let mut text = String::new();
    fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text)).map_err(io_err(path))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_unpacks_of_one_archive_agree() {
        let Some(root) = default_ethtests_dir() else {
            panic!("ETHTESTS_DIR or ../shared/ethtests must exist")
        };
        let archive = root.join("eest-fusaka-devnet-5.tar.zst");
        let cache = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| materialize_in(&archive, cache.path()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(dirs.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(json_files(&dirs[0]).len(), 35);
        let leftovers = fs::read_dir(cache.path().join("fixtures")).unwrap().count();
        assert_eq!(leftovers, 1, "partial unpacks must not be left behind");
        // A second call reuses the unpacked copy.
        assert_eq!(materialize_in(&archive, cache.path()).unwrap(), dirs[0]);
        assert!(matches!(
            materialize_in(Path::new("x.zip"), cache.path()),
            Err(FixtureError::NotFixtures { .. })
        ));
    }
}

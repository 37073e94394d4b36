//! Runs fixture files in parallel: selection, sharding, progress, and isolation of failures.

use crate::{
    blockchain, fixtures,
    report::CaseResult,
    state::{self, RunOptions},
};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Shard `index` of `count` (0-based): every file belongs to exactly one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// Parses `I/N` with 1 ≤ I ≤ N (as CI matrices number their jobs).
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s.split_once('/').ok_or_else(|| format!("shard `{s}` is not I/N"))?;
        let index: usize =
            i.trim().parse().map_err(|_| format!("shard index `{i}` is not a number"))?;
        let count: usize =
            n.trim().parse().map_err(|_| format!("shard count `{n}` is not a number"))?;
        if count == 0 || index == 0 || index > count {
            return Err(format!("shard `{s}` must satisfy 1 <= I <= N"));
        }
        Ok(Shard { index: index - 1, count })
    }
}

impl Shard {
    /// Files of this shard, taken round-robin from the sorted list.
    pub fn select(self, files: Vec<PathBuf>) -> Vec<PathBuf> {
        files
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.count == self.index)
            .map(|(_, f)| f)
            .collect()
    }
}

/// Every fixture JSON file under the given roots (directories or archives).
pub fn collect_files(roots: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for root in roots {
        if root.is_file() && root.extension().is_some_and(|e| e == "json") {
            files.push(root.clone());
            continue;
        }
        for dir in fixtures::materialize_all(root).map_err(|e| e.to_string())? {
            files.extend(fixtures::json_files(&dir));
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn run_one(path: &Path, options: &RunOptions) -> Vec<CaseResult> {
    match fixtures::read(path) {
        Ok(text) if text.contains("\"genesisBlockHeader\"") => {
            blockchain::run_file(path, &text, options)
        }
        Ok(text) => state::run_file(path, &text, options),
        Err(e) => vec![CaseResult::file_error(&path.display().to_string(), e.to_string())],
    }
}

/// Runs `files` across the available cores, with a progress bar when `progress` is set.
pub fn run(files: &[PathBuf], options: &RunOptions, progress: bool) -> Vec<CaseResult> {
    let bar = if progress { ProgressBar::new(files.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} files {msg} [{elapsed_precise}]")
            .expect("static template"),
    );
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let vectors = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, Vec<CaseResult>)> = files
        .par_iter()
        .enumerate()
        .map(|(i, path)| {
            let cases = run_one(path, options);
            let new_failures = cases
                .iter()
                .filter(|c| matches!(c.outcome, crate::report::Outcome::Failed(_)))
                .count();
            let f =
                failed.fetch_add(new_failures, std::sync::atomic::Ordering::Relaxed) + new_failures;
            let v =
                vectors.fetch_add(cases.len(), std::sync::atomic::Ordering::Relaxed) + cases.len();
            bar.set_message(format!("{v} cases, {f} failed"));
            bar.inc(1);
            (i, cases)
        })
        .collect();
    bar.finish_and_clear();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().flat_map(|(_, cases)| cases).collect()
}

//! A random block as a replayable case (its transaction specs, fork and chaos seed), and the
//! one check that the property tests, the fuzz targets and the regression corpus all run on
//! it: every parallel configuration against the sequential path.

use crate::random_block::{TxSpec, build};
use lockstep_executor::{
    InMemoryStorage, ParallelConfig, StateDiff, Storage, parallel,
    revm::primitives::hardfork::SpecId, sequential, state_root,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The forks a case may run under: before Cancun (SELFDESTRUCT deletes), Cancun (EIP-6780
/// and the beacon-root call) and Prague (the block-hash call).
pub const FORKS: [SpecId; 3] = [SpecId::SHANGHAI, SpecId::CANCUN, SpecId::PRAGUE];

/// Thread counts every case runs at: one worker, two, an odd count, more than the block needs.
pub const THREADS: [usize; 4] = [1, 2, 3, 8];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub spec: SpecId,
    /// Seed of the schedule perturbation (`None`: the unperturbed schedule).
    pub chaos: Option<u64>,
    pub txs: Vec<TxSpec>,
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Case {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        // Long enough to conflict at every thread count, short enough to run hundreds a second.
        const MAX_TXS: usize = 48;
        let spec = *u.choose(&FORKS)?;
        let chaos = u.arbitrary()?;
        // As many transactions as the input holds: a longer input is a longer block.
        let mut txs = Vec::new();
        while txs.len() < MAX_TXS && !u.is_empty() {
            txs.push(tx_spec(u)?);
        }
        Ok(Self { spec, chaos, txs })
    }
}

/// A transaction drawn as the property tests draw them: mostly transfers, token moves and
/// swaps, with amounts around the holders' balances so that some revert and most do not.
#[cfg(feature = "arbitrary")]
fn tx_spec(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<TxSpec> {
    use crate::random_block::Target;
    let from = u.int_in_range(0..=3)?;
    let to = u.int_in_range(0..=5)?;
    Ok(match u.int_in_range(0..=16)? {
        0..=3 => {
            let to = match u.int_in_range(0..=5)? {
                0 => Target::User(to),
                1 => Target::Beneficiary,
                2 => Target::Fresh(to),
                3 => Target::Token,
                4 => Target::Counter,
                _ => Target::Precompile(u.int_in_range(0..=16)?),
            };
            TxSpec::Transfer { from, to, value: u.int_in_range(0..=3000)? }
        }
        4..=6 => TxSpec::Erc20 { from, to, amount: u.int_in_range(0..=2_000_000)? },
        7 | 8 => TxSpec::Count { from },
        9 | 10 => {
            let (amount, token1_in) = (u.int_in_range(1..=50_000)?, u.arbitrary()?);
            TxSpec::Swap { from, amount, token1_in }
        }
        11 => TxSpec::Create { from },
        12 => TxSpec::Destruct { from },
        13 => TxSpec::CreateAndDestruct { from, value: u.int_in_range(0..=100)? },
        14 => TxSpec::BadNonce { from },
        15 => TxSpec::ReadBeneficiary { from },
        _ => TxSpec::FromBeneficiary { to, value: u.int_in_range(0..=100)? },
    })
}

impl Case {
    /// Reads a case saved as JSON, naming the file in any error.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a case serializes")
    }

    /// Runs the case sequentially, then on Block-STM and as speculative ranges at every count
    /// of [`THREADS`], and returns the first way a parallel run differs: its outcome, its
    /// state root, or statistics that contradict themselves.
    pub fn check(&self) -> Result<(), String> {
        let workload = build(&self.txs, self.spec);
        let pre = StateDiff::from_alloc(&workload.alloc);
        let mut store = InMemoryStorage::from_diff(&pre);
        let reference = sequential::execute(&store, &workload.block).map_err(|e| e.to_string())?;
        store.commit(&reference.diff).map_err(|e| e.to_string())?;
        let reference_root = state_root(&store).map_err(|e| e.to_string())?;
        for threads in THREADS {
            for config in
                [ParallelConfig::always_parallel(threads), ParallelConfig::always_ranges(threads)]
            {
                let config = ParallelConfig { chaos: self.chaos, ..config };
                let ranges = config.min_range_txs == 0;
                let run = format!("{threads} threads, ranges {ranges}, chaos {:?}", self.chaos);
                let mut store = InMemoryStorage::from_diff(&pre);
                let outcome = parallel::execute(&store, &workload.block, &config)
                    .map_err(|e| format!("{run}: {e}"))?;
                if let Some(divergence) = reference.first_difference(&outcome) {
                    return Err(format!("{run}: {divergence}"));
                }
                consistent(&outcome.stats, ranges).map_err(|e| format!("{run}: {e}"))?;
                store.commit(&outcome.diff).map_err(|e| format!("{run}: {e}"))?;
                let root = state_root(&store).map_err(|e| format!("{run}: {e}"))?;
                if root != reference_root {
                    return Err(format!("{run}: state root {root}, sequential {reference_root}"));
                }
            }
        }
        Ok(())
    }
}

/// Statistics that agree with themselves: each abort names the read that went stale, a read
/// can only have found a lower transaction's write, and the run says how it ran.
fn consistent(stats: &lockstep_executor::ExecutionStats, ranges: bool) -> Result<(), String> {
    let aborts: u32 = stats.aborts.iter().sum();
    if stats.conflicts.len() != aborts as usize {
        return Err(format!("{aborts} aborts but {} conflicts", stats.conflicts.len()));
    }
    for conflict in &stats.conflicts {
        if stats.aborts[conflict.tx] == 0 || conflict.writer.is_some_and(|w| w >= conflict.tx) {
            return Err(format!("conflict {conflict:?} against aborts {:?}", stats.aborts));
        }
    }
    if !stats.conflicts.is_sorted_by_key(|c| c.tx) {
        return Err("conflicts out of block order".into());
    }
    if (stats.ranges > 0) != (ranges && stats.fallback.is_none()) {
        return Err(format!("ranges {} (fallback {:?})", stats.ranges, stats.fallback));
    }
    Ok(())
}

/// The regression corpus: cases that once failed, saved as JSON and replayed by the tests.
pub fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions")
}

/// The corpus's cases, sorted by file name.
pub fn regressions() -> Result<Vec<PathBuf>, String> {
    let dir = regressions_dir();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    Ok(paths)
}

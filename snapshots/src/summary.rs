//! Figures over all blocks: speedups per store, MDBX against in-memory, and a plot.

use crate::replay::BlockReport;
use lockstep_harness::bench::{StorageKind, path_name};
use serde::Serialize;
use std::{collections::BTreeMap, fmt::Write as _};

#[derive(Debug, Clone, Serialize)]
pub struct StoreSummary {
    pub blocks: usize,
    pub geomean_speedup: f64,
    /// The blocks the parallel path ran with Block-STM, and their geometric-mean speedup.
    pub block_stm_blocks: usize,
    pub block_stm_geomean_speedup: Option<f64>,
    /// The blocks it handed to the sequential path (small, transfer-only, one sender or a
    /// chain), and theirs: about 1.0 by construction.
    pub sequential_path_blocks: usize,
    pub sequential_path_geomean_speedup: Option<f64>,
    /// The geometric mean of the blocks' ceilings (see `BlockReport::ceiling`), over all
    /// blocks and over those run by Block-STM: the speedups to read them against.
    pub geomean_ceiling: f64,
    pub block_stm_geomean_ceiling: Option<f64>,
    pub worst_speedup: f64,
    pub worst_block: u64,
    pub best_speedup: f64,
    pub best_block: u64,
    pub sequential_ms: f64,
    pub parallel_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    pub blocks: Vec<BlockReport>,
    pub summary: BTreeMap<&'static str, StoreSummary>,
    /// MDBX time over in-memory time, per path (sums over the blocks both ran).
    pub mdbx_vs_memory: Option<BTreeMap<&'static str, f64>>,
}

/// The geometric mean of the blocks' speedups (`None` without blocks).
fn geomean(blocks: &[&BlockReport]) -> Option<f64> {
    geomean_of(blocks, |b| b.speedup)
}

/// The geometric mean of one figure of the blocks (`None` without blocks).
fn geomean_of(blocks: &[&BlockReport], figure: impl Fn(&BlockReport) -> f64) -> Option<f64> {
    let logs: f64 = blocks.iter().map(|b| figure(b).ln()).sum();
    (!blocks.is_empty()).then(|| (logs / blocks.len() as f64).exp())
}

impl Report {
    pub fn new(blocks: Vec<BlockReport>) -> Self {
        let passed = blocks.iter().filter(|b| b.ok).count();
        let mut summary = BTreeMap::new();
        for storage in [StorageKind::Memory, StorageKind::Mdbx] {
            let ok: Vec<&BlockReport> =
                blocks.iter().filter(|b| b.ok && b.storage == storage).collect();
            if ok.is_empty() {
                continue;
            }
            let (block_stm, sequential_path): (Vec<&BlockReport>, Vec<&BlockReport>) =
                ok.iter().partition(|b| b.fallback.is_none());
            let by_speedup = |a: &&&BlockReport, b: &&&BlockReport| a.speedup.total_cmp(&b.speedup);
            let worst = ok.iter().min_by(by_speedup).expect("non-empty");
            let best = ok.iter().max_by(by_speedup).expect("non-empty");
            summary.insert(
                storage.name(),
                StoreSummary {
                    blocks: ok.len(),
                    geomean_speedup: geomean(&ok).expect("non-empty"),
                    block_stm_blocks: block_stm.len(),
                    block_stm_geomean_speedup: geomean(&block_stm),
                    sequential_path_blocks: sequential_path.len(),
                    sequential_path_geomean_speedup: geomean(&sequential_path),
                    geomean_ceiling: geomean_of(&ok, |b| b.ceiling).expect("non-empty"),
                    block_stm_geomean_ceiling: geomean_of(&block_stm, |b| b.ceiling),
                    worst_speedup: worst.speedup,
                    worst_block: worst.block,
                    best_speedup: best.speedup,
                    best_block: best.block,
                    sequential_ms: ok.iter().map(|b| b.sequential_ms).sum(),
                    parallel_ms: ok.iter().map(|b| b.parallel_ms).sum(),
                },
            );
        }
        let mdbx_vs_memory = match (summary.get("memory"), summary.get("mdbx")) {
            (Some(m), Some(d)) => Some(BTreeMap::from([
                ("sequential", d.sequential_ms / m.sequential_ms),
                ("parallel", d.parallel_ms / m.parallel_ms),
            ])),
            _ => None,
        };
        Report { passed, failed: blocks.len() - passed, blocks, summary, mdbx_vs_memory }
    }

    /// The per-block table and the summary lines.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{:>9} {:<7} {:>5} {:>11} {:>9} {:>9} {:>8} {:>8} {:>8}  {:<24} {}\n",
            "block",
            "storage",
            "txs",
            "gas",
            "seq ms",
            "par ms",
            "speedup",
            "ceiling",
            "re-exec",
            "parallel path",
            "result"
        );
        for b in &self.blocks {
            let result = match (&b.error, b.receipts_root_checked) {
                (Some(e), _) => format!("FAIL {e}"),
                (None, true) => "ok".into(),
                (None, false) => "ok (receipts root not checkable before Byzantium)".into(),
            };
            let _ = writeln!(
                out,
                "{:>9} {:<7} {:>5} {:>11} {:>9.2} {:>9.2} {:>7.2}x {:>7.2}x {:>8}  {:<24} {result}",
                b.block,
                b.storage.name(),
                b.txs,
                b.gas,
                b.sequential_ms,
                b.parallel_ms,
                b.speedup,
                b.ceiling,
                b.re_executions,
                path_name(b.fallback, 0),
            );
        }
        for (storage, s) in &self.summary {
            let part = |geomean: Option<f64>, blocks, how| {
                geomean.map(|g| format!(", {g:.2}x over the {blocks} {how}")).unwrap_or_default()
            };
            let _ = writeln!(
                out,
                "{storage}: geometric-mean speedup {:.2}x over {} blocks{}{}; worst {:.2}x (block {}), best {:.2}x (block {})",
                s.geomean_speedup,
                s.blocks,
                part(s.block_stm_geomean_speedup, s.block_stm_blocks, "run by Block-STM"),
                part(
                    s.sequential_path_geomean_speedup,
                    s.sequential_path_blocks,
                    "run sequentially"
                ),
                s.worst_speedup,
                s.worst_block,
                s.best_speedup,
                s.best_block
            );
            let block_stm = s
                .block_stm_geomean_ceiling
                .map(|c| format!(", {c:.2}x over the blocks run by Block-STM"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{storage}: the sequential path's copies reached {:.2}x at once (geometric mean){block_stm}: the machine's ceiling for these speedups",
                s.geomean_ceiling
            );
        }
        if let Some(ratios) = &self.mdbx_vs_memory {
            let _ = writeln!(
                out,
                "mdbx / memory time: sequential {:.2}, parallel {:.2}",
                ratios["sequential"], ratios["parallel"]
            );
        }
        if let Some((storage, hot)) = self.hot_keys() {
            let top = crate::replay::HOT_KEYS;
            let _ = writeln!(out, "most aborts ({storage} blocks, each block's top {top}): {hot}");
        }
        let _ = writeln!(out, "{} passed, {} failed", self.passed, self.failed);
        out
    }

    /// The keys that aborted the most transactions over the blocks of one store (in-memory
    /// when it ran), from each block's report (`None`: no aborts).
    fn hot_keys(&self) -> Option<(&'static str, String)> {
        let memory = StorageKind::Memory.name();
        let storage =
            if self.summary.contains_key(memory) { memory } else { *self.summary.keys().next()? };
        let mut totals: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for block in self.blocks.iter().filter(|b| b.ok && b.storage.name() == storage) {
            for hot in &block.hot_keys {
                let (aborts, blocks) = totals.entry(&hot.key).or_default();
                *aborts += hot.aborts;
                *blocks += 1;
            }
        }
        let mut totals: Vec<(&str, (usize, usize))> = totals.into_iter().collect();
        totals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let top = totals.iter().take(5).map(|(key, (aborts, blocks))| {
            format!("{key}: {aborts} in {blocks} block{}", if *blocks == 1 { "" } else { "s" })
        });
        (!totals.is_empty()).then(|| (storage, top.collect::<Vec<_>>().join("; ")))
    }

    /// An SVG bar chart of the speedup per block on each store, with the 1.0 line.
    pub fn svg(&self) -> String {
        let numbers: Vec<u64> = {
            let mut n: Vec<u64> = self.blocks.iter().map(|b| b.block).collect();
            n.dedup();
            n
        };
        let (bar, gap, height, top) = (7.0, 8.0, 300.0, 24.0);
        // Capped so one outlier does not flatten the rest; taller bars are clipped at the top.
        let max = self.blocks.iter().map(|b| b.speedup).fold(2.0_f64, f64::max).min(4.0);
        let y = |v: f64| top + height * (1.0 - v.min(max) / max);
        let width = 60.0 + numbers.len() as f64 * (2.0 * bar + gap);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"10\">\n",
            height + top + 70.0
        );
        let _ = writeln!(
            svg,
            "<text x=\"50\" y=\"12\">speedup per block (parallel vs sequential): memory (blue), mdbx (orange)</text>"
        );
        for (i, number) in numbers.iter().enumerate() {
            let x0 = 50.0 + i as f64 * (2.0 * bar + gap);
            for (k, storage, color) in
                [(0.0, StorageKind::Memory, "#3b6fb6"), (1.0, StorageKind::Mdbx, "#e8871e")]
            {
                if let Some(b) =
                    self.blocks.iter().find(|b| b.block == *number && b.storage == storage && b.ok)
                {
                    let _ = writeln!(
                        svg,
                        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{:.1}\" fill=\"{color}\"><title>{number} {}: {:.2}x</title></rect>",
                        x0 + k * bar,
                        y(b.speedup),
                        height + top - y(b.speedup),
                        storage.name(),
                        b.speedup
                    );
                }
            }
            let _ = writeln!(
                svg,
                "<text transform=\"translate({:.1},{:.1}) rotate(90)\">{number}</text>",
                x0 + bar - 3.0,
                height + top + 4.0
            );
        }
        for tick in [0.5, 1.0, 1.5, 2.0, 3.0].into_iter().filter(|t| *t <= max) {
            let dash = if tick == 1.0 { "4" } else { "1 3" };
            let _ = writeln!(
                svg,
                "<line x1=\"45\" x2=\"{width}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"black\" stroke-dasharray=\"{dash}\"/><text x=\"14\" y=\"{0:.1}\">{tick:.1}x</text>",
                y(tick)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_executor::Fallback;

    fn block(number: u64, speedup: f64, fallback: Option<Fallback>) -> BlockReport {
        BlockReport {
            speedup,
            sequential_ms: speedup,
            parallel_ms: 1.0,
            ok: true,
            error: None,
            fallback,
            ..BlockReport::failed(number, StorageKind::Memory, String::new())
        }
    }

    #[test]
    fn the_keys_that_aborted_most_are_summed_over_blocks() {
        use crate::replay::HotKey;
        let hot = |key: &str, aborts| HotKey { key: key.into(), aborts };
        let mut first = block(1, 1.5, None);
        first.hot_keys = vec![hot("account A", 4), hot("slot 0x8 of B", 1)];
        let mut second = block(2, 1.2, None);
        second.hot_keys = vec![hot("account A", 2)];
        let mut on_mdbx = block(2, 1.2, None);
        on_mdbx.storage = StorageKind::Mdbx;
        on_mdbx.hot_keys = vec![hot("slot 0x8 of B", 50)];
        let text = Report::new(vec![first, second, on_mdbx]).text();
        let line = text.lines().find(|l| l.starts_with("most aborts")).expect("a line of keys");
        // The in-memory blocks only: mdbx would count the same blocks again.
        assert!(line.ends_with("account A: 6 in 2 blocks; slot 0x8 of B: 1 in 1 block"), "{line}");
        let calm = Report::new(vec![block(3, 1.0, None)]).text();
        assert!(!calm.contains("most aborts"), "no line without aborts");
    }

    #[test]
    fn the_ceiling_is_summed_up_like_the_speedups() {
        let with_ceiling =
            |number, ceiling, fallback| BlockReport { ceiling, ..block(number, 1.0, fallback) };
        let report = Report::new(vec![
            with_ceiling(1, 2.0, None),
            with_ceiling(2, 1.0, None),
            with_ceiling(3, 0.5, Some(Fallback::FewTransactions)),
        ]);
        let memory = &report.summary["memory"];
        // (2 * 1 * 0.5)^(1/3) over all; (2 * 1)^(1/2) over the Block-STM blocks.
        assert!((memory.geomean_ceiling - 1.0).abs() < 1e-12);
        assert!((memory.block_stm_geomean_ceiling.unwrap() - 2f64.sqrt()).abs() < 1e-12);
        let text = report.text();
        assert!(
            text.contains("copies reached 1.00x at once (geometric mean), 1.41x over"),
            "{text}"
        );
        assert!(text.lines().any(|l| l.starts_with("        1 memory") && l.contains("2.00x")));
    }

    #[test]
    fn summary_splits_block_stm_blocks_from_sequential_ones() {
        let report = Report::new(vec![
            block(1, 2.0, None),
            block(2, 0.5, None),
            block(3, 1.0, Some(Fallback::FewTransactions)),
            block(4, 4.0, None),
            BlockReport::failed(5, StorageKind::Memory, "broken".into()),
        ]);
        let memory = &report.summary["memory"];
        assert_eq!(
            (memory.blocks, memory.block_stm_blocks, memory.sequential_path_blocks),
            (4, 3, 1)
        );
        // (2 * 0.5 * 4)^(1/3) and (2 * 0.5 * 1 * 4)^(1/4)
        assert!((memory.block_stm_geomean_speedup.unwrap() - 4f64.cbrt()).abs() < 1e-12);
        assert!((memory.geomean_speedup - 4f64.powf(0.25)).abs() < 1e-12);
        assert_eq!(memory.sequential_path_geomean_speedup, Some(1.0));
        assert_eq!((memory.worst_block, memory.best_block), (2, 4));
        assert_eq!((report.passed, report.failed), (4, 1));
        assert!(
            report
                .text()
                .contains("1.59x over the 3 run by Block-STM, 1.00x over the 1 run sequentially")
        );
    }
}

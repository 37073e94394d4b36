//! Results of fixture runs: per case, summarized per fork, as JSON and JUnit XML.

use serde::Serialize;
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

/// Time spent in each executor path.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Paths {
    #[serde(serialize_with = "seconds")]
    pub sequential: Duration,
    #[serde(serialize_with = "seconds")]
    pub parallel: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// One case: a state test vector, a block of vectors, a blockchain test, or a broken file.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub file: String,
    pub test: String,
    pub fork: String,
    /// The post vector's position, or `None` for a multi-transaction block or a whole test.
    pub vector: Option<usize>,
    /// The number of blocks, for a blockchain test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<usize>,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(skip)]
    pub paths: Paths,
}

impl CaseResult {
    pub fn new(file: &str, test: &str, fork: &str, vector: Option<usize>) -> Self {
        Self {
            file: file.into(),
            test: test.into(),
            fork: fork.into(),
            vector,
            blocks: None,
            outcome: Outcome::Passed,
            paths: Paths::default(),
        }
    }

    /// A blockchain test of `blocks` blocks on `network`.
    pub fn chain(file: &str, test: &str, network: &str, blocks: usize) -> Self {
        Self { blocks: Some(blocks), ..Self::new(file, test, network, None) }
    }

    pub fn finish(mut self, outcome: Outcome, paths: Paths) -> Self {
        self.outcome = outcome;
        self.paths = paths;
        self
    }

    /// A file that could not be read or parsed: one failed case standing for the file.
    pub fn file_error(file: &str, message: String) -> Self {
        Self::new(file, "(file)", "-", None).finish(Outcome::Failed(message), Paths::default())
    }

    pub fn name(&self) -> String {
        match (self.vector, self.blocks) {
            (Some(k), _) => format!("{}::{}[{}]", self.test, self.fork, k),
            (None, Some(_)) => format!("{}::{}[chain]", self.test, self.fork),
            (None, None) => format!("{}::{}[block]", self.test, self.fork),
        }
    }
}

/// Counts per fork and overall.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Counts {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Passed => self.passed += 1,
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Skipped(_) => self.skipped += 1,
        }
    }
}

/// The report of a whole run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub forks: BTreeMap<String, Counts>,
    pub sequential_seconds: f64,
    pub parallel_seconds: f64,
    pub failures: Vec<CaseResult>,
}

impl Report {
    pub fn new(cases: &[CaseResult]) -> Self {
        let mut report = Report::default();
        let mut total = Counts::default();
        for case in cases {
            total.add(&case.outcome);
            report.forks.entry(case.fork.clone()).or_default().add(&case.outcome);
            report.sequential_seconds += case.paths.sequential.as_secs_f64();
            report.parallel_seconds += case.paths.parallel.as_secs_f64();
            if matches!(case.outcome, Outcome::Failed(_)) {
                report.failures.push(case.clone());
            }
        }
        (report.passed, report.failed, report.skipped) =
            (total.passed, total.failed, total.skipped);
        report
    }

    /// Human summary: counts per fork, time per path, and the first failures.
    pub fn summary(&self, max_failures: usize) -> String {
        let mut out = String::new();
        for failure in self.failures.iter().take(max_failures) {
            let reason = match &failure.outcome {
                Outcome::Failed(reason) => reason.as_str(),
                _ => "",
            };
            let _ = writeln!(out, "FAIL {} {}\n     {reason}", failure.file, failure.name());
        }
        if self.failures.len() > max_failures {
            let _ = writeln!(out, "... and {} more failures", self.failures.len() - max_failures);
        }
        let _ = writeln!(out, "{:<24} {:>8} {:>8} {:>8}", "fork", "passed", "failed", "skipped");
        for (fork, c) in &self.forks {
            let _ = writeln!(out, "{fork:<24} {:>8} {:>8} {:>8}", c.passed, c.failed, c.skipped);
        }
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>8} {:>8}\ntime in paths: sequential {:.2}s, parallel {:.2}s",
            "total",
            self.passed,
            self.failed,
            self.skipped,
            self.sequential_seconds,
            self.parallel_seconds
        );
        out
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// JUnit XML: one test suite per file, one test case per case.
pub fn junit(cases: &[CaseResult]) -> String {
    let mut by_file: BTreeMap<&str, Vec<&CaseResult>> = BTreeMap::new();
    for case in cases {
        by_file.entry(&case.file).or_default().push(case);
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for (file, cases) in by_file {
        let failures = cases.iter().filter(|c| matches!(c.outcome, Outcome::Failed(_))).count();
        let skipped = cases.iter().filter(|c| matches!(c.outcome, Outcome::Skipped(_))).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
            xml_escape(file),
            cases.len()
        );
        for case in cases {
            let time = (case.paths.sequential + case.paths.parallel).as_secs_f64();
            let _ = write!(
                out,
                "    <testcase name=\"{}\" time=\"{time:.6}\"",
                xml_escape(&case.name())
            );
            match &case.outcome {
                Outcome::Passed => out.push_str("/>\n"),
                Outcome::Failed(reason) => {
                    let _ =
                        writeln!(out, "><failure message=\"{}\"/></testcase>", xml_escape(reason));
                }
                Outcome::Skipped(reason) => {
                    let _ =
                        writeln!(out, "><skipped message=\"{}\"/></testcase>", xml_escape(reason));
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

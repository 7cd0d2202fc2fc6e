//! What `check` found, line by line, and how it prints.

use std::fmt;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fine.
    Ok,
    /// Works, but deserves a look.
    Warn,
    /// `run` would fail or lose events.
    Fail,
    /// Not checked: an earlier failure prevents it.
    Skipped,
    /// Information that passes either way (e.g. whether the mode not configured would work).
    Info,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    /// `postgres` or `kafka` (or `config`).
    pub area: &'static str,
    /// The outcome.
    pub outcome: Outcome,
    /// What was found.
    pub what: String,
    /// How to fix it, for failures and warnings.
    pub fix: Option<String>,
}

/// Everything `check` found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// In the order checked.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether nothing failed.
    pub fn passed(&self) -> bool {
        !self.findings.iter().any(|f| f.outcome == Outcome::Fail)
    }

    fn add(&mut self, area: &'static str, outcome: Outcome, what: String, fix: Option<String>) {
        self.findings.push(Finding {
            area,
            outcome,
            what,
            fix,
        });
    }

    pub(super) fn ok(&mut self, area: &'static str, what: impl Into<String>) {
        self.add(area, Outcome::Ok, what.into(), None);
    }

    pub(super) fn fail(
        &mut self,
        area: &'static str,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.add(area, Outcome::Fail, what.into(), Some(fix.into()));
    }

    pub(super) fn warn(
        &mut self,
        area: &'static str,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.add(area, Outcome::Warn, what.into(), Some(fix.into()));
    }

    pub(super) fn skip(&mut self, area: &'static str, what: impl Into<String>) {
        self.add(area, Outcome::Skipped, what.into(), None);
    }

    pub(super) fn info(&mut self, area: &'static str, what: impl Into<String>) {
        self.add(area, Outcome::Info, what.into(), None);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let label = match finding.outcome {
                Outcome::Ok => "ok",
                Outcome::Warn => "WARN",
                Outcome::Fail => "FAIL",
                Outcome::Skipped => "skip",
                Outcome::Info => "info",
            };
            writeln!(f, "{label:<5} {:<9} {}", finding.area, finding.what)?;
            if let Some(fix) = &finding.fix {
                writeln!(f, "{:<15} fix: {fix}", "")?;
            }
        }
        let failed = self
            .findings
            .iter()
            .filter(|f| f.outcome == Outcome::Fail)
            .count();
        if failed == 0 {
            writeln!(f, "all checks passed")
        } else {
            writeln!(f, "{failed} check(s) failed")
        }
    }
}

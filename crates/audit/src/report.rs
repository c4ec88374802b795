//! What an audit found: each check, how many it held for, and the rides it failed for.

use std::collections::BTreeMap;
use std::fmt::Write;

use bimride_events::{Millis, Topic};
use serde::Serialize;

/// Rides named per check in the table; the JSON report names them all.
const NAMED: usize = 5;

/// One rule, checked over every ride it applies to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub checked: usize,
    /// The rides (or drivers, or notifications) it failed for.
    pub failed: Vec<String>,
}

impl Check {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            checked: 0,
            failed: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rides: usize,
    /// Rides too young to be held to a decision yet.
    pub undecided_recent: usize,
    /// Records written twice (a producer's retry, a recompute), taken once.
    pub redelivered: usize,
    /// The newest event time read, ms since the epoch.
    pub through_ms: i64,
    /// Records read of each topic, by its name in the namespace (`ride-events`).
    pub records: BTreeMap<&'static str, usize>,
    pub checks: Vec<Check>,
    pub clean: bool,
}

impl Report {
    pub fn new(
        checks: Vec<Check>,
        rides: usize,
        undecided_recent: usize,
        redelivered: usize,
        through: Millis,
        records: BTreeMap<&'static str, usize>,
    ) -> Self {
        let clean = checks.iter().all(|c| c.failed.is_empty());
        Self {
            rides,
            undecided_recent,
            redelivered,
            through_ms: through.0,
            records,
            checks,
            clean,
        }
    }

    /// The report with one more check, made apart from the ledger (the ride store's).
    pub fn with(mut self, check: Check) -> Self {
        self.clean &= check.failed.is_empty();
        self.checks.push(check);
        self
    }

    /// The check called `name`, if any ride reached it.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// A table for a terminal: each check, its counts, and the first rides it failed for.
    pub fn table(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<width$}  {:>8}  {:>6}  failed for",
            "check", "checked", "failed"
        );
        for c in &self.checks {
            let named: Vec<&str> = c.failed.iter().take(NAMED).map(String::as_str).collect();
            let more = c.failed.len().saturating_sub(NAMED);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:>8}  {:>6}  {}{tail}",
                c.name,
                c.checked,
                c.failed.len(),
                named.join(", ")
            );
        }
        // In the catalogue's order, which follows a ride through the city.
        let read: Vec<String> = Topic::ALL
            .iter()
            .filter_map(|t| Some(format!("{} {}", self.records.get(t.suffix())?, t.suffix())))
            .collect();
        if !read.is_empty() {
            let _ = writeln!(out, "records read: {}", read.join(", "));
        }
        let _ = writeln!(
            out,
            "{} rides; {} too recent to judge; {} records written twice, taken once; {}",
            self.rides,
            self.undecided_recent,
            self.redelivered,
            if self.clean {
                "no discrepancy"
            } else {
                "DISCREPANCIES FOUND"
            }
        );
        out
    }
}

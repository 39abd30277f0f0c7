//! What verify saw: one [`Hop`] per hop walked, the [`VerifyReport`] with its text rendering,
//! and the [`VerifyFailure`] that pairs a report with the error that stopped it.
//!
//! Architecture invariant: plain data and pure rendering, no I/O.

use std::time::Duration;

use serde::Serialize;

use super::VerifyError;
use crate::output::human_duration;

/// One hop of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Hop {
    /// One of [`HOPS`](super::HOPS).
    pub hop: &'static str,
    /// Whether it got through.
    pub ok: bool,
    /// Time it took (until it failed, for a failed hop).
    pub elapsed_ms: u128,
    /// What was seen.
    pub detail: String,
}

/// What verify saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Every hop passed.
    pub ok: bool,
    /// The hops walked, in order (up to and including a failed one).
    pub hops: Vec<Hop>,
    /// The version marker committed.
    pub version: String,
    /// The app commit.
    pub commit: String,
    /// The build of it.
    pub build: Option<i64>,
    /// From the first hop's start to the last hop's end.
    pub total_ms: u128,
}

impl VerifyReport {
    /// The report as text, one line per hop with its time.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for h in &self.hops {
            out.push_str(&format!(
                "{} {:<16} {:>8}  {}\n",
                if h.ok { "✓" } else { "✗" },
                h.hop,
                human_duration(Duration::from_millis(h.elapsed_ms as u64)),
                h.detail.lines().next().unwrap_or_default()
            ));
        }
        out.push_str(&format!(
            "{} in {}\n",
            if self.ok {
                "the loop works"
            } else {
                "the loop is broken"
            },
            human_duration(Duration::from_millis(self.total_ms as u64))
        ));
        out
    }
}

/// verify failed: the report up to the failed hop, and why.
#[derive(Debug)]
pub struct VerifyFailure {
    /// What was walked.
    pub report: VerifyReport,
    /// Why it stopped.
    pub error: VerifyError,
}

//! What verify saw: one [`Hop`] per hop walked, the [`VerifyReport`] with its text rendering,
//! and the [`VerifyFailure`] that pairs a report with the error that stopped it.
//!
//! Architecture invariant: plain data and pure rendering, no I/O.

use std::time::Duration;

use serde::Serialize;

use super::VerifyError;
use crate::edges::output::human_duration;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(hop: &'static str, ok: bool, elapsed_ms: u128, detail: &str) -> Hop {
        Hop {
            hop,
            ok,
            elapsed_ms,
            detail: detail.into(),
        }
    }

    #[test]
    fn the_text_has_one_line_per_hop_with_its_time_and_the_first_line_of_its_detail() {
        let report = VerifyReport {
            ok: false,
            hops: vec![
                hop("commit", true, 1500, "version v1 → v2 in commit abc1234"),
                hop(
                    "build succeeded",
                    false,
                    61_000,
                    "build #3 ended `failure`\nlast 1 lines of its log:\n  | boom",
                ),
            ],
            total_ms: 62_500,
            ..VerifyReport::default()
        };
        assert_eq!(
            report.to_text(),
            "✓ commit               1.5s  version v1 → v2 in commit abc1234\n\
             ✗ build succeeded     1m01s  build #3 ended `failure`\n\
             the loop is broken in 1m02s\n"
        );
    }

    #[test]
    fn a_whole_walk_says_the_loop_works() {
        let report = VerifyReport {
            ok: true,
            hops: vec![hop("app serves", true, 200, "serves version v2")],
            total_ms: 200,
            ..VerifyReport::default()
        };
        assert_eq!(
            report.to_text(),
            "✓ app serves           0.2s  serves version v2\nthe loop works in 0.2s\n"
        );
    }
}

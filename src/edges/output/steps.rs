//! How wiring reports its sub-steps: each starts and finishes through the `Progress` seam and is
//! kept as a [`StepReport`], so `up` can tell a wiring run that wrote from one that only read.
//!
//! Lives beside the progress seam, below the services that record sub-steps (Gitea's and the
//! CI's wiring) and `up`, whose `wire-gitea` and `wire-ci` steps they make up; their names are
//! constants in [`crate::model::plan::wiring`], which the plan lists too.
//!
//! Architecture invariant: shared by every wiring module (Gitea, the CI); a step's outcome is
//! `Done` only when it wrote something.

use std::time::Instant;

use serde::Serialize;

use super::{Outcome, Progress};

/// One wiring step's result.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// Step name (`gitea admin`, `repo lab/gitops`, `drone login`, …).
    pub step: String,
    /// Done (wrote), Skipped (already so: only reads).
    pub outcome: Outcome,
    /// What happened.
    pub detail: String,
}

/// Steps that wrote something.
pub fn writes(steps: &[StepReport]) -> usize {
    steps.iter().filter(|s| s.outcome == Outcome::Done).count()
}

/// Records steps as they run and reports them through `progress`.
pub struct Steps<'p> {
    progress: &'p dyn Progress,
    /// Finished steps, in order.
    pub reports: Vec<StepReport>,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

impl<'p> Steps<'p> {
    /// Nothing recorded yet.
    pub fn new(progress: &'p dyn Progress) -> Steps<'p> {
        Steps {
            progress,
            reports: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// A step starts.
    pub fn start(&self, step: &str, detail: &str) -> Instant {
        self.progress.start(step, detail);
        Instant::now()
    }

    /// A line about a running step (what it waits for).
    pub fn update(&self, step: &str, detail: &str) {
        self.progress.update(step, detail);
    }

    /// A step ended with `result` (its outcome, a line for people, and a value to pass on).
    pub fn end<T, E: std::fmt::Display>(
        &mut self,
        step: &str,
        started: Instant,
        result: Result<(Outcome, String, T), E>,
    ) -> Result<T, E> {
        match result {
            Ok((outcome, detail, value)) => {
                self.progress
                    .finish(step, outcome.clone(), started.elapsed(), &detail);
                self.reports.push(StepReport {
                    step: step.to_string(),
                    outcome,
                    detail,
                });
                Ok(value)
            }
            Err(e) => {
                self.progress
                    .finish(step, Outcome::Failed, started.elapsed(), &e.to_string());
                Err(e)
            }
        }
    }
}

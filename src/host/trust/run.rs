//! Running a [`TrustPlan`] (`trust --apply`) and undoing the ledger (`untrust`): the effectful
//! shell around the pure plan.
//!
//! Place in the data flow: [`TrustPlan`] ─[`apply`]▶ host trust stores + ledger;
//! ledger ─[`untrust_all`]▶ host trust stores restored, ledger emptied.
//!
//! Architecture invariant: every command runs through [`Cmd`] (stdin null, so nothing waits on
//! a prompt); elevated ones through `sudo -n`, after one `sudo -n true` that fails fast with a
//! hint when sudo would ask for a password. A ledger entry is written right after the command
//! that makes a change succeeds, and removed right after its undo succeeds.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::ledger::{LEDGER_FILE, Ledger, LedgerEntry};
use super::{HostCmd, StepKind, TrustError, TrustPlan, TrustStep};
use crate::edges::output::{Outcome, Progress};
use crate::edges::process::{Cmd, ProcessError};
use crate::edges::state::LabState;
use crate::edges::tools::Os;

/// How host commands are run: the OS decides whether `sudo` exists as a concept, `sudo` is the
/// program found on PATH (none: elevated commands run directly, e.g. as root in a container).
#[derive(Clone, Debug)]
pub struct Runner {
    os: Os,
    sudo: Option<PathBuf>,
}

impl Runner {
    /// The runner for this process: its OS, and `sudo` from PATH.
    pub fn for_this_host() -> Runner {
        Runner {
            os: Os::current(),
            sudo: which::which("sudo").ok(),
        }
    }

    /// A runner with an explicit OS and `sudo` (tests).
    pub fn new(os: Os, sudo: Option<PathBuf>) -> Runner {
        Runner { os, sudo }
    }

    fn command(&self, c: &HostCmd, summary: String) -> Cmd {
        match (&self.sudo, c.elevated && self.os != Os::Windows) {
            (Some(sudo), true) => Cmd::new(sudo, summary)
                .args(["-n", "--"])
                .arg(&c.program)
                .args(&c.args),
            _ => Cmd::new(&c.program, summary).args(&c.args),
        }
    }

    /// Fail fast, before changing anything, when `sudo` would need a password.
    fn check_sudo(&self, rerun: &str, by_hand: &str) -> Result<(), TrustError> {
        let Some(sudo) = (self.os != Os::Windows)
            .then_some(())
            .and(self.sudo.as_ref())
        else {
            return Ok(());
        };
        let cmd = Cmd::new(sudo, "check that sudo runs without a prompt").args(["-n", "true"]);
        cmd.run()
            .map(|_| ())
            .map_err(|source| TrustError::SudoNeedsPassword {
                rerun: rerun.into(),
                by_hand: by_hand.into(),
                source: Box::new(source),
            })
    }
}

/// What happened to one step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepOutcome {
    /// Step id.
    pub id: String,
    /// For people.
    pub title: String,
    /// Done, or Skipped.
    pub outcome: Outcome,
    /// Why.
    pub detail: String,
}

/// What `trust --apply` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// One per step of the plan, in order.
    pub steps: Vec<StepOutcome>,
}

/// What `untrust` undid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UntrustReport {
    /// Titles of the changes undone, in the order undone (newest first).
    pub undone: Vec<String>,
}

/// Run every step of `plan` not yet in the ledger, recording each change with its undo.
///
/// Steps the ledger records as complete for this CA are skipped, half-applied ones (a refresh
/// failed) run again, and re-running never duplicates an entry; a git key already set to this CA by hand is left alone and not recorded, and one set
/// to something else is recorded with an undo that restores the old value. Stops at the first
/// failing step.
pub fn apply(
    state: &LabState,
    plan: &TrustPlan,
    runner: &Runner,
    progress: &dyn Progress,
) -> Result<ApplyReport, TrustError> {
    let mut ledger = Ledger::load(state)?;
    for step in &plan.steps {
        if let Some(entry) = ledger.get(&step.id)
            && entry.ca_sha256 != plan.ca_sha256
        {
            return Err(TrustError::OtherCa {
                ledger: state.path(LEDGER_FILE).display().to_string(),
                title: step.title.clone(),
                recorded: entry.ca_sha256.clone(),
            });
        }
    }
    let done = |ledger: &Ledger, id: &str| ledger.get(id).is_some_and(|e| e.complete);
    let pending: Vec<&TrustStep> = plan
        .steps
        .iter()
        .filter(|s| !done(&ledger, &s.id))
        .collect();
    if pending.iter().any(|s| s.apply.iter().any(|c| c.elevated)) {
        runner.check_sudo(
            "homelab trust --apply",
            "the commands `homelab trust` prints",
        )?;
    }

    let mut report = ApplyReport::default();
    for step in &plan.steps {
        if done(&ledger, &step.id) {
            report.steps.push(outcome(
                step,
                Outcome::Skipped,
                format!("already applied (recorded in `{LEDGER_FILE}`)"),
            ));
            continue;
        }
        let started = Instant::now();
        progress.start("trust", &step.title);
        // A half-applied step keeps the undo recorded when its change was made.
        let recorded_undo = ledger.get(&step.id).map(|e| e.undo.clone());
        let mut undo = recorded_undo.clone().unwrap_or_else(|| step.undo.clone());
        if let (StepKind::Git { key, value }, None) = (&step.kind, &recorded_undo) {
            match git_get(runner, key, &step.title)? {
                Some(current) if &current == value => {
                    let detail = "already set to this CA by hand; not recorded, so `homelab untrust` leaves it".to_string();
                    progress.finish("trust", Outcome::Skipped, started.elapsed(), &step.title);
                    report.steps.push(outcome(step, Outcome::Skipped, detail));
                    continue;
                }
                Some(previous) => {
                    // Undo restores what the user had, rather than deleting their setting.
                    undo = vec![HostCmd {
                        elevated: false,
                        program: "git".into(),
                        args: vec!["config".into(), "--global".into(), key.clone(), previous],
                        already_done_codes: Vec::new(),
                    }];
                }
                None => {}
            }
        }

        for (i, cmd) in step.apply.iter().enumerate() {
            let summary = if i == 0 {
                format!("add the lab CA to {}", step.title)
            } else {
                format!("update {}", step.title)
            };
            if let Err(source) = runner.command(cmd, summary).run() {
                progress.finish("trust", Outcome::Failed, started.elapsed(), &step.title);
                return Err(TrustError::Step {
                    recorded: i > 0 || recorded_undo.is_some(),
                    source: Box::new(source),
                });
            }
            let last = i + 1 == step.apply.len();
            if i == 0 || last {
                // The change is made: record it (with its undo) before anything else can
                // fail, and mark it complete once the refresh commands have run too.
                ledger.record(LedgerEntry {
                    id: step.id.clone(),
                    title: step.title.clone(),
                    ca_sha256: plan.ca_sha256.clone(),
                    applied: step.apply.iter().map(|c| c.display(plan.os)).collect(),
                    undo: undo.clone(),
                    complete: last,
                });
                ledger.save(state)?;
            }
        }
        progress.finish("trust", Outcome::Done, started.elapsed(), &step.title);
        report
            .steps
            .push(outcome(step, Outcome::Done, "applied and recorded".into()));
    }
    Ok(report)
}

/// Undo every change the lab's ledger records, newest first, and nothing else.
///
/// Each entry leaves the ledger as soon as all its undo commands succeed; an entry whose undo
/// fails stays, the remaining entries are still tried, and the error lists the failures, so
/// the ledger always holds exactly what is still applied. An empty ledger is a no-op.
///
/// This is what `homelab untrust` runs, and what `homelab down --purge --untrust` calls before
/// deleting the lab state:
///
/// ```no_run
/// # fn f(state: &homelab::edges::state::LabState) -> Result<(), homelab::host::trust::TrustError> {
/// use homelab::host::trust::{Runner, untrust_all};
/// let report = untrust_all(state, &Runner::for_this_host(), &homelab::edges::output::Silent)?;
/// for title in &report.undone {
///     println!("untrusted: {title}");
/// }
/// # Ok(()) }
/// ```
pub fn untrust_all(
    state: &LabState,
    runner: &Runner,
    progress: &dyn Progress,
) -> Result<UntrustReport, TrustError> {
    let mut ledger = Ledger::load(state)?;
    let mut report = UntrustReport::default();
    if ledger.entries.is_empty() {
        return Ok(report);
    }
    let ledger_path = state.path(LEDGER_FILE).display().to_string();
    if ledger
        .entries
        .iter()
        .any(|e| e.undo.iter().any(|c| c.elevated))
    {
        runner.check_sudo(
            "homelab untrust",
            &format!("the `undo` commands listed in `{ledger_path}`"),
        )?;
    }

    let mut failures = Vec::new();
    for entry in ledger.entries.clone().iter().rev() {
        let started = Instant::now();
        progress.start("untrust", &entry.title);
        match undo_entry(runner, entry) {
            Ok(()) => {
                ledger.remove(&entry.id);
                ledger.save(state)?;
                progress.finish("untrust", Outcome::Done, started.elapsed(), &entry.title);
                report.undone.push(entry.title.clone());
            }
            Err(e) => {
                progress.finish("untrust", Outcome::Failed, started.elapsed(), &entry.title);
                failures.push(e);
            }
        }
    }
    if failures.is_empty() {
        Ok(report)
    } else {
        let details = failures
            .iter()
            .map(|e| format!("\n  - {}", e.to_string().replace('\n', "\n    ")))
            .collect::<String>();
        Err(TrustError::UndoFailed {
            count: failures.len(),
            ledger: ledger_path,
            details,
        })
    }
}

fn undo_entry(runner: &Runner, entry: &LedgerEntry) -> Result<(), ProcessError> {
    for c in &entry.undo {
        let cmd = runner.command(c, format!("remove the lab CA from {}", entry.title));
        let out = cmd.run_unchecked()?;
        let done = out.success()
            || out
                .code
                .is_some_and(|code| c.already_done_codes.contains(&code));
        if !done {
            return Err(cmd.failed(out));
        }
    }
    Ok(())
}

/// The current value of a global git config key; `None` when unset (git exits 1).
fn git_get(runner: &Runner, key: &str, title: &str) -> Result<Option<String>, TrustError> {
    let probe = HostCmd {
        elevated: false,
        program: "git".into(),
        args: vec![
            "config".into(),
            "--global".into(),
            "--get".into(),
            key.into(),
        ],
        already_done_codes: Vec::new(),
    };
    let cmd = runner.command(&probe, format!("read the current setting for {title}"));
    let out = cmd.run_unchecked().map_err(|source| TrustError::Step {
        recorded: false,
        source: Box::new(source),
    })?;
    match out.code {
        Some(0) => Ok(Some(out.stdout.trim_end_matches(['\r', '\n']).to_string())),
        Some(1) => Ok(None),
        _ => Err(TrustError::Step {
            recorded: false,
            source: Box::new(cmd.failed(out)),
        }),
    }
}

fn outcome(step: &TrustStep, outcome: Outcome, detail: String) -> StepOutcome {
    StepOutcome {
        id: step.id.clone(),
        title: step.title.clone(),
        outcome,
        detail,
    }
}

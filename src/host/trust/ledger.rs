//! The trust ledger: `trust-ledger.json` in the lab state, one entry per change `trust --apply`
//! made on this computer, each with the exact commands that undo it.
//!
//! Place in the data flow: `trust::apply` appends ─▶ ledger ─▶ `trust::untrust_all` removes;
//! `down --purge` reads it for [`purge_reminder`].
//!
//! Architecture invariant: the ledger is rewritten atomically (through [`LabState`]) after every
//! single change, so at any moment it lists exactly what is applied, never less. Entries are
//! keyed by the step id; applying a step twice never adds a second entry.

use serde::{Deserialize, Serialize};

use super::{HostCmd, TrustError};
use crate::edges::state::{LabState, StateError};

/// The ledger file in the lab state.
pub const LEDGER_FILE: &str = "trust-ledger.json";

/// Every recorded trust change of one lab, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Format version.
    pub version: u32,
    /// The changes, in the order they were made.
    pub entries: Vec<LedgerEntry>,
}

/// One change to one trust store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The step id (`system`, `nss:<dir>`, `git:<url>`).
    pub id: String,
    /// For people.
    pub title: String,
    /// SHA-256 of the CA the change trusts.
    pub ca_sha256: String,
    /// The commands that made the change, as shown to people.
    pub applied: Vec<String>,
    /// The commands that undo it, run in order by `untrust`.
    pub undo: Vec<HostCmd>,
    /// False while a later command of the step (a trust-store refresh) has not succeeded yet;
    /// the next `trust --apply` runs the step again instead of skipping it.
    #[serde(default)]
    pub complete: bool,
}

impl Ledger {
    /// The lab's ledger; empty when there is none.
    pub fn load(state: &LabState) -> Result<Ledger, StateError> {
        Ok(state.read_json(LEDGER_FILE)?.unwrap_or(Ledger {
            version: 1,
            entries: Vec::new(),
        }))
    }

    /// Write it back atomically (0600).
    pub fn save(&self, state: &LabState) -> Result<(), StateError> {
        state.write_json(LEDGER_FILE, self)
    }

    /// The entry for a step, if recorded.
    pub fn get(&self, id: &str) -> Option<&LedgerEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// Record an entry, replacing one with the same id (never a duplicate).
    pub fn record(&mut self, entry: LedgerEntry) {
        match self.entries.iter_mut().find(|e| e.id == entry.id) {
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
    }

    /// Forget an entry once its undo has succeeded.
    pub fn remove(&mut self, id: &str) {
        self.entries.retain(|e| e.id != id);
    }

    /// Titles of the recorded changes joined for a sentence.
    pub fn summary(&self) -> String {
        self.entries
            .iter()
            .map(|e| e.title.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What `homelab down --purge` prints when this computer still trusts the lab's CA, or `None`
/// when the ledger is empty. Purging deletes the ledger, and with it the record of what to
/// undo, so the reminder comes before anything is deleted.
pub fn purge_reminder(state: &LabState) -> Result<Option<String>, TrustError> {
    let ledger = Ledger::load(state)?;
    if ledger.entries.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "this computer still trusts the CA of lab `{}` ({}); `homelab down --purge` would delete the record of those changes, so run `homelab untrust` first, or `homelab down --purge --untrust` to do both",
        state.lab(),
        ledger.summary()
    )))
}

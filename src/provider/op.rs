//! What a provider operation is handed and hands back: the lab's [`Waits`], an [`OpCx`] (settings,
//! state, where to say what it does) and a [`StepReport`] (changed something, or found it so).
//!
//! Architecture invariant: the providers' operations see only this, never the `up` runner that
//! calls them; `up`'s step context implements [`OpCx`], so the layers only look down.

use std::time::Duration;

use crate::edges::error::{Error, Result};
use crate::edges::output::Outcome;
use crate::edges::state::LabState;
use crate::model::settings::Settings;

/// What an operation (or an `up` step) found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    /// [`Outcome::Done`] when it changed something, [`Outcome::Skipped`] when all was true.
    pub outcome: Outcome,
    /// One line for people.
    pub detail: String,
}

impl StepReport {
    /// It changed something.
    pub fn done(detail: impl Into<String>) -> StepReport {
        StepReport {
            outcome: Outcome::Done,
            detail: detail.into(),
        }
    }

    /// Everything was already as it should be; nothing was written.
    pub fn skipped(detail: impl Into<String>) -> StepReport {
        StepReport {
            outcome: Outcome::Skipped,
            detail: detail.into(),
        }
    }
}

/// What an operation can see and where it says what it does.
pub trait OpCx: Sync {
    /// Resolved settings.
    fn settings(&self) -> &Settings;
    /// The lab state.
    fn state(&self) -> &LabState;
    /// Waits.
    fn waits(&self) -> &Waits;
    /// Say what the operation is doing now (replaces the spinner's message, or prints a line).
    fn update(&self, detail: &str);
    /// Warn the user about something they should know (shown even with `--quiet`).
    fn warn(&self, message: &str);
    /// Tell the user something worth reading that is not a warning.
    fn note(&self, message: &str);
}

/// How long `up` waits for things, and how often it looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waits {
    /// First pause between two looks; doubles up to `poll_max`.
    pub poll: Duration,
    /// Longest pause between two looks.
    pub poll_max: Duration,
    /// A VM that is starting must run within this.
    pub vm_running: Duration,
    /// cloud-init (snap install of microk8s) must finish within this.
    pub provisioned: Duration,
    /// The API must answer and every node be Ready within this.
    pub ready: Duration,
    /// One `multipass exec` may take this long.
    pub exec: Duration,
    /// How long a command waits for another that holds the lab's command lock.
    pub lock: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Waits {
            poll: Duration::from_secs(1),
            poll_max: Duration::from_secs(5),
            vm_running: Duration::from_secs(10 * 60),
            // Installing the snap on a slow network takes a while; Multipass itself gives up
            // after 5 minutes, which is why this wait exists at all.
            provisioned: Duration::from_secs(30 * 60),
            ready: Duration::from_secs(10 * 60),
            exec: Duration::from_secs(120),
            // Long enough for a short command (`trust --apply`, `ca regenerate`) to finish;
            // an `up` takes minutes, and the message says to run again once it is done.
            lock: Duration::from_secs(30),
        }
    }
}

impl Waits {
    /// The defaults, overridden by `HOMELAB_TEST_WAITS` (`poll_ms=5,ready_ms=300,…`; keys
    /// `poll_ms`, `poll_max_ms`, `vm_running_ms`, `provisioned_ms`, `ready_ms`, `exec_ms`,
    /// `lock_ms`).
    /// Meant for tests and very slow networks.
    pub fn from_env(value: Option<&str>) -> Result<Waits> {
        let mut w = Waits::default();
        let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
            return Ok(w);
        };
        for pair in value.split(',') {
            let bad = || {
                Error::msg(format!("invalid `HOMELAB_TEST_WAITS` entry `{pair}`")).hint(
                    "write `key_ms=N` pairs separated by commas, e.g. `poll_ms=10,ready_ms=500`",
                )
            };
            let (k, v) = pair.trim().split_once('=').ok_or_else(bad)?;
            let ms: u64 = v.trim().parse().map_err(|_| bad())?;
            let d = Duration::from_millis(ms);
            match k.trim() {
                "poll_ms" => w.poll = d,
                "poll_max_ms" => w.poll_max = d,
                "vm_running_ms" => w.vm_running = d,
                "provisioned_ms" => w.provisioned = d,
                "ready_ms" => w.ready = d,
                "exec_ms" => w.exec = d,
                "lock_ms" => w.lock = d,
                _ => return Err(bad()),
            }
        }
        w.poll_max = w.poll_max.max(w.poll);
        Ok(w)
    }

    /// The pause before look number `attempt` (0-based): `poll`, doubling, at most `poll_max`.
    pub fn pause(&self, attempt: u32) -> Duration {
        self.poll
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.poll_max)
    }
}

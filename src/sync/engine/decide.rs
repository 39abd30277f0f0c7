//! The decide phase: whether this reconcile syncs, and when the Application wants the next one —
//! by hand, on an `operation`, by the automated policy on a new commit, as a retry of a failed
//! sync (with backoff), or as self-heal of drift (with its own backoff); else it waits for the
//! polling interval.
//!
//! Architecture invariant: decides only; the one state it keeps is the per-Application backoff
//! bookkeeping in memory (`AppRuntime`).

use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;

use super::compare::Compared;
use super::{Engine, Mode, random};
use crate::sync::app::AppSpec;
use crate::sync::backoff;
use crate::sync::plan::SyncPlan;
use crate::sync::status::{InitiatedBy, SyncCode};

/// What this reconcile does.
pub(super) enum Act {
    Nothing,
    Sync {
        initiated_by: InitiatedBy,
        retry_count: i64,
    },
}

/// What to do now, and when to look again.
pub(super) struct Decision {
    pub(super) action: Act,
    pub(super) wake_in: Option<Duration>,
    /// The wake-up is the polling interval (git is asked then), not a backoff.
    pub(super) poll: bool,
}

impl Engine {
    /// Decide whether to sync now; `requested`: the Application carries an `operation`.
    pub(super) fn decide(
        &self,
        spec: &AppSpec,
        mode: Mode,
        compared: &Compared,
        plan: &SyncPlan,
        prev: &Value,
        requested: bool,
    ) -> Decision {
        let poll = backoff::poll_interval(self.cfg.poll, random());
        let nothing = Decision {
            action: Act::Nothing,
            wake_in: Some(poll),
            poll: true,
        };
        let user = || InitiatedBy {
            automated: false,
            username: spec
                .operation
                .as_ref()
                .and_then(|o| o.username.clone())
                .or_else(|| std::env::var("USER").ok()),
        };
        match mode {
            Mode::Preview => return nothing,
            Mode::Manual { .. } => {
                return Decision {
                    action: Act::Sync {
                        initiated_by: user(),
                        retry_count: 0,
                    },
                    wake_in: Some(poll),
                    poll: true,
                };
            }
            Mode::Auto if requested => {
                return Decision {
                    action: Act::Sync {
                        initiated_by: user(),
                        retry_count: 0,
                    },
                    wake_in: Some(poll),
                    poll: true,
                };
            }
            Mode::Auto => {}
        }
        let Some(auto) = spec.automated else {
            return nothing;
        };
        let actionable = plan.waves.iter().map(|(_, t)| t.len()).sum::<usize>()
            + if auto.prune { plan.prunes.len() } else { 0 }
            + usize::from(plan.prune_refused.is_some());
        if actionable == 0 {
            return nothing;
        }
        let auto_by = InitiatedBy {
            automated: true,
            username: None,
        };
        let op = &prev["operationState"];
        let last_rev = op["syncResult"]["revision"].as_str();
        let finished = op["finishedAt"].as_str().and_then(|s| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        });
        let mut rt = self.runtime.lock().expect("runtime");
        let rt = rt.entry(spec.name.clone()).or_default();
        let since_finish = match rt.last_finished {
            Some(t) => t.elapsed(),
            None => finished
                .map(|f| {
                    (OffsetDateTime::now_utc() - f)
                        .try_into()
                        .unwrap_or(Duration::ZERO)
                })
                .unwrap_or(Duration::MAX),
        };
        if last_rev != Some(compared.revision.as_str()) {
            rt.self_heal_attempts = 0;
            rt.revision_of_attempts = Some(compared.revision.clone());
            return Decision {
                action: Act::Sync {
                    initiated_by: auto_by,
                    retry_count: 0,
                },
                wake_in: Some(poll),
                poll: true,
            };
        }
        if matches!(op["phase"].as_str(), Some("Failed" | "Error")) {
            let retries = op["retryCount"].as_i64().unwrap_or(0);
            return match backoff::retry_delay(&spec.retry, retries as u32) {
                None => nothing,
                Some(d) if since_finish >= d => Decision {
                    action: Act::Sync {
                        initiated_by: auto_by,
                        retry_count: retries + 1,
                    },
                    wake_in: Some(poll),
                    poll: true,
                },
                Some(d) => Decision {
                    action: Act::Nothing,
                    wake_in: Some(d - since_finish),
                    poll: false,
                },
            };
        }
        if !auto.self_heal {
            return nothing;
        }
        let delay = self.cfg.self_heal.delay(rt.self_heal_attempts);
        let since_heal = rt
            .last_self_heal
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX);
        let waited = since_finish.min(since_heal);
        if waited < delay {
            return Decision {
                action: Act::Nothing,
                wake_in: Some(delay - waited),
                poll: false,
            };
        }
        rt.self_heal_attempts += 1;
        rt.last_self_heal = Some(Instant::now());
        tracing::info!(app = %spec.name, attempt = rt.self_heal_attempts, "self-healing drift");
        Decision {
            action: Act::Sync {
                initiated_by: auto_by,
                retry_count: 0,
            },
            wake_in: Some(poll),
            poll: true,
        }
    }

    /// Argo's cooldown: a long quiet spell (the app `sync` is Synced) forgets the self-heal
    /// backoff.
    pub(super) fn cool_down(&self, name: &str, sync: SyncCode) {
        if sync == SyncCode::Synced
            && let Some(rt) = self.runtime.lock().expect("runtime").get_mut(name)
            && rt
                .last_self_heal
                .is_some_and(|t| t.elapsed() > self.cfg.self_heal.max + Duration::from_secs(30))
        {
            rt.self_heal_attempts = 0;
        }
    }
}

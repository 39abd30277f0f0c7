//! One reconcile of one Application, as its phases in order: admit (the spec we may act on and
//! whose objects are ours) → compare ([`super::compare`]) → warnings → plan → decide
//! ([`super::decide`]) → sync ([`super::execute`], [`super::prune`]) → observe
//! ([`super::observe`]) → finish ([`super::finish`]).
//!
//! Architecture invariant: [`Engine::reconcile_with`] only strings the phases together; a phase
//! that cannot go on says what the status reports instead, and every path ends in
//! [`Engine::finish`] (or, for an Application being deleted, [`Engine::finalize`]).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::compare::{Compared, Item};
use super::decide::{Act, Decision};
use super::finish::Finish;
use super::{Engine, EngineError, Fetch, Ident, Mode, Outcome};
use crate::model::kinds::ObjectRef;
use crate::sync::app::{self, AppSpec};
use crate::sync::backoff;
use crate::sync::plan::{self, Desired, PlanConfig, SyncPlan, Tracked};
use crate::sync::status::{
    self, Condition, ConditionType, InitiatedBy, OperationInput, OperationPhase, OperationState,
};
use crate::sync::tracking::{Owner, app_key, resource_options, sync_wave};

/// The plan of a sync and what it was asked with.
struct Planned {
    plan: SyncPlan,
    /// Prune what git dropped (by hand, by the `operation`, or by the automated policy).
    prune: bool,
    /// An `operation` asked for this reconcile's sync (cleared from the Application after).
    requested: bool,
}

/// What the sync phase did; nothing when the decision was not to sync.
struct Synced {
    conditions: Vec<Condition>,
    operation: Option<OperationState>,
    deployed: Option<(String, String, InitiatedBy)>,
    applied: usize,
    pruned: usize,
    wake_in: Option<Duration>,
    wake_is_poll: bool,
}

impl Engine {
    /// Reconcile one Application; `fetch` says whether git must be asked for a new commit.
    pub async fn reconcile_with(
        &self,
        app: &Value,
        mode: Mode,
        fetch: Fetch,
    ) -> Result<Outcome, EngineError> {
        let started = Instant::now();
        self.stats
            .reconciles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = app["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let prev = app["status"].clone();
        let (spec, id, mut conditions) = match self.admit(app).await {
            Ok(admitted) => admitted,
            Err(conditions) => {
                return self
                    .finish(app, mode, Finish::unknown(&prev, conditions))
                    .await;
            }
        };
        if spec.deleting {
            if mode == Mode::Preview {
                // `homelab diff` never deletes, not even for an Application being deleted.
                return self
                    .finish(app, mode, Finish::unknown(&prev, conditions))
                    .await;
            }
            return self.finalize(app, &spec, &id).await;
        }
        let compared = match self.compare(&spec, &id, &prev, fetch).await {
            Ok(c) => c,
            Err(stop) => {
                conditions.push(stop.condition);
                let health = match stop.health {
                    Some(h) => h,
                    None => self.tracked_health(&id, &prev).await,
                };
                let fin = Finish::stopped(stop.sync, health, stop.revision, conditions);
                return self.finish(app, mode, fin).await;
            }
        };
        conditions.extend(compared.warnings.iter().cloned());
        conditions.extend(sharing_warnings(&compared.items));
        let planned = plan_sync(&spec, mode, &compared);
        conditions.extend(option_warnings(&compared.items));
        let decision = self.decide(
            &spec,
            mode,
            &compared,
            &planned.plan,
            &prev,
            planned.requested,
        );
        let synced = self
            .sync(app, &spec, &id, &compared, &planned, decision)
            .await;
        conditions.extend(synced.conditions);
        let resynced = synced.operation.is_some();
        let observed = self.observe(&spec, &id, mode, &compared, resynced).await;
        self.cool_down(&name, observed.sync);
        tracing::info!(
            app = %name,
            revision = %short(&compared.revision),
            sync = observed.sync.as_str(),
            health = observed.health.status.as_str(),
            applied = synced.applied,
            pruned = synced.pruned,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
        let mut fin = Finish::stopped(
            observed.sync,
            observed.health,
            Some(compared.revision.clone()),
            conditions,
        );
        fin.resources = observed.resources;
        fin.operation = synced.operation;
        fin.deployed = synced.deployed;
        fin.clear_operation = planned.requested;
        fin.applied = synced.applied;
        fin.pruned = synced.pruned;
        fin.diffs = observed.diffs;
        fin.wake_in = synced.wake_in;
        fin.wake_is_poll = synced.wake_is_poll;
        self.finish(app, mode, fin).await
    }

    /// The spec we may act on, whose objects are this Application's, and the conditions so far;
    /// or, when there is nothing we may act on, the conditions saying why.
    async fn admit(&self, app: &Value) -> Result<(AppSpec, Ident, Vec<Condition>), Vec<Condition>> {
        let parsed = app::parse(app);
        let mut conditions = parsed.conditions.clone();
        let blocked = parsed.blocked();
        let spec = match parsed.spec {
            Some(s) if !blocked => s,
            // Nothing we may act on: report why (the last known health is kept).
            _ => return Err(conditions),
        };
        let installation = match self.installation_id().await {
            Ok(i) => i,
            Err(message) => {
                conditions.push(Condition::new(ConditionType::ComparisonError, message));
                return Err(conditions);
            }
        };
        let id = Ident {
            key: app_key(&spec.name, &spec.namespace, &self.cfg.app_namespace),
            installation,
        };
        Ok((spec, id, conditions))
    }

    /// Run the decision: sync (unless a prune was refused) and say what was done, for the
    /// operation state, the history and the next wake-up.
    async fn sync(
        &self,
        app: &Value,
        spec: &AppSpec,
        id: &Ident,
        compared: &Compared,
        planned: &Planned,
        decision: Decision,
    ) -> Synced {
        let plan = &planned.plan;
        let mut out = Synced {
            conditions: Vec::new(),
            operation: None,
            deployed: None,
            applied: 0,
            pruned: 0,
            wake_in: decision.wake_in,
            wake_is_poll: decision.poll,
        };
        if let Some(refusal) = &plan.prune_refused
            && matches!(decision.action, Act::Sync { .. })
        {
            out.conditions
                .push(Condition::new(ConditionType::SyncError, refusal.clone()));
        }
        let refused = plan.prune_refused.is_some();
        let (initiated_by, retry_count) = match decision.action {
            Act::Sync {
                initiated_by,
                retry_count,
            } if !refused => (initiated_by, retry_count),
            Act::Sync { .. } | Act::Nothing => return out,
        };
        self.stats
            .syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sync_started = status::now();
        let outcome = self.execute(spec, &id.key, compared, plan).await;
        self.runtime
            .lock()
            .expect("runtime")
            .entry(spec.name.clone())
            .or_default()
            .last_finished = Some(Instant::now());
        out.applied = outcome.applied;
        out.pruned = outcome.pruned;
        let phase = if outcome.error.is_some() {
            OperationPhase::Failed
        } else {
            OperationPhase::Succeeded
        };
        if let Some(e) = &outcome.error {
            out.conditions
                .push(Condition::new(ConditionType::SyncError, e.clone()));
            if let Some(d) = backoff::retry_delay(&spec.retry, retry_count as u32)
                && out.wake_in.is_none_or(|w| d < w)
            {
                out.wake_in = Some(d);
                out.wake_is_poll = false;
            }
        }
        let message = match &outcome.error {
            Some(e) => e.clone(),
            None => format!(
                "successfully synced (all tasks run): {} applied, {} pruned",
                outcome.applied, outcome.pruned
            ),
        };
        let source_value = app["spec"]["source"].clone();
        out.operation = Some(OperationState::build(OperationInput {
            revision: &compared.revision,
            source: &source_value,
            prune: planned.prune,
            sync_options: &spec.options.raw,
            initiated_by: initiated_by.clone(),
            phase,
            message,
            started_at: sync_started.clone(),
            finished_at: Some(status::now()),
            retry_count: if phase == OperationPhase::Failed {
                retry_count
            } else {
                0
            },
            results: outcome.results,
        }));
        if phase == OperationPhase::Succeeded {
            out.deployed = Some((compared.revision.clone(), sync_started, initiated_by));
        }
        out
    }
}

/// Objects another Application tracks too, and objects git defines more than once.
fn sharing_warnings(items: &[Item]) -> Vec<Condition> {
    let mut conditions = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Owner::Other(other) = &item.owner {
            conditions.push(Condition::new(
                ConditionType::SharedResourceWarning,
                format!(
                    "{} (`{}`) is also tracked by Application `{other}`",
                    item.key, item.origin
                ),
            ));
        }
        if items[..i].iter().any(|o| o.key == item.key) {
            conditions.push(Condition::new(
                ConditionType::RepeatedResourceWarning,
                format!(
                    "{} is defined more than once (last: `{}`)",
                    item.key, item.origin
                ),
            ));
        }
    }
    conditions
}

/// Sync options on objects that homelab's engine does not support.
fn option_warnings(items: &[Item]) -> Vec<Condition> {
    let mut conditions = Vec::new();
    for item in items {
        if !item.options.unsupported.is_empty() {
            conditions.push(Condition::new(
                ConditionType::UnsupportedFieldWarning,
                format!(
                    "{} (`{}`): sync options {} are not supported and have no effect",
                    item.key,
                    item.origin,
                    item.options.unsupported.join(", ")
                ),
            ));
        }
    }
    conditions
}

/// The sync plan from the comparison, pruning as asked: by hand, by the `operation` (which only
/// the engine's own reconciles honour), else by the automated policy.
fn plan_sync(spec: &AppSpec, mode: Mode, compared: &Compared) -> Planned {
    let manual_prune = match mode {
        Mode::Manual { prune } => Some(prune),
        _ => None,
    };
    let requested = if mode == Mode::Auto {
        spec.operation.as_ref()
    } else {
        None
    };
    let prune = manual_prune
        .or(requested.map(|o| o.prune))
        .unwrap_or_else(|| spec.automated.is_some_and(|a| a.prune));
    let plan = plan::build(
        &compared
            .items
            .iter()
            .map(|i| Desired {
                key: i.key.clone(),
                object: i.object.clone(),
                wave: i.wave,
                status: i.comparison.status,
                options: i.options.clone(),
            })
            .collect::<Vec<_>>(),
        &compared
            .tracked
            .iter()
            .map(|(_, v)| Tracked {
                key: ObjectRef::of(v).expect("cached objects have identity"),
                api_version: v["apiVersion"].as_str().unwrap_or_default().to_string(),
                wave: sync_wave(v).unwrap_or(0),
                options: resource_options(v),
            })
            .collect::<Vec<_>>(),
        PlanConfig {
            prune,
            allow_empty: spec.automated.is_some_and(|a| a.allow_empty),
            prune_last: spec.options.prune_last,
            replace: spec.options.replace,
        },
    );
    Planned {
        plan,
        prune,
        requested: requested.is_some(),
    }
}

fn short(rev: &str) -> &str {
    &rev[..rev.len().min(8)]
}

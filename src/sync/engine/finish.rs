//! The finish phase: the Application's `.status` built from what the reconcile found and did,
//! and written (unless previewing, or unchanged and fresh) as a merge patch, together with
//! clearing a handled `operation` and a done refresh; the [`Outcome`] the caller sees.
//!
//! Architecture invariant: the only write to the Application itself besides the finalizer;
//! a preview writes nothing.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Engine, EngineError, Mode, ObjectDiff, Outcome, random};
use crate::cluster::kube::describe;
use crate::sync::app::REFRESH_ANNOTATION;
use crate::sync::backoff;
use crate::sync::status::{
    self, Condition, Deployed, Health, HealthCode, InitiatedBy, OperationState, ResourceStatus,
    StatusInput, SyncCode,
};

pub(super) struct Finish {
    pub(super) sync: SyncCode,
    pub(super) health: Health,
    pub(super) revision: Option<String>,
    pub(super) conditions: Vec<Condition>,
    pub(super) resources: Vec<ResourceStatus>,
    pub(super) operation: Option<OperationState>,
    pub(super) deployed: Option<(String, String, InitiatedBy)>,
    pub(super) clear_operation: bool,
    pub(super) applied: usize,
    pub(super) pruned: usize,
    pub(super) diffs: Vec<ObjectDiff>,
    pub(super) wake_in: Option<Duration>,
    pub(super) wake_is_poll: bool,
}

impl Finish {
    pub(super) fn stopped(
        sync: SyncCode,
        health: Health,
        revision: Option<String>,
        conditions: Vec<Condition>,
    ) -> Finish {
        Finish {
            sync,
            health,
            revision,
            conditions,
            resources: Vec::new(),
            operation: None,
            deployed: None,
            clear_operation: false,
            applied: 0,
            pruned: 0,
            diffs: Vec::new(),
            wake_in: None,
            wake_is_poll: true,
        }
    }

    /// Sync status Unknown and the last known health: nothing could be compared.
    pub(super) fn unknown(prev: &Value, conditions: Vec<Condition>) -> Finish {
        Finish::stopped(SyncCode::Unknown, previous_health(prev), None, conditions)
    }
}

impl Engine {
    /// Build and (unless previewing or unchanged) write `.status`.
    pub(super) async fn finish(
        &self,
        app: &Value,
        mode: Mode,
        f: Finish,
    ) -> Result<Outcome, EngineError> {
        let name = app["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = app["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let prev = &app["status"];
        let now = status::now();
        let source = app["spec"]["source"].clone();
        let history_limit = app["spec"]["revisionHistoryLimit"].as_u64().unwrap_or(10) as usize;
        let operation_phase = f.operation.as_ref().map(|o| o.phase);
        let deployed = f.deployed.as_ref().map(|(rev, started, by)| Deployed {
            revision: rev,
            started_at: started,
            initiated_by: by.clone(),
        });
        let new = status::build(StatusInput {
            previous: prev,
            source: &source,
            destination: &app["spec"]["destination"],
            sync: f.sync,
            revision: f.revision.as_deref(),
            health: f.health.clone(),
            resources: f.resources,
            operation: f.operation,
            deployed,
            history_limit,
            conditions: f.conditions.clone(),
            now: &now,
        });
        let mut wrote = false;
        if mode != Mode::Preview {
            let fresh = prev["reconciledAt"]
                .as_str()
                .and_then(|s| {
                    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
                })
                .is_some_and(|t| {
                    OffsetDateTime::now_utc() - t
                        < time::Duration::try_from(self.cfg.status_refresh).unwrap_or_default()
                });
            let same = without_timestamps(prev) == without_timestamps(&new);
            let refresh = !app["metadata"]["annotations"][REFRESH_ANNOTATION].is_null();
            if !(same && fresh) || f.clear_operation || refresh {
                let mut patch = json!({"status": replacing_patch(prev, &new)});
                if f.clear_operation {
                    patch["operation"] = Value::Null;
                }
                if !app["metadata"]["annotations"][REFRESH_ANNOTATION].is_null() {
                    // A refresh asked for (by a standby engine or `argocd app get --refresh`) is done.
                    patch["metadata"] =
                        json!({"annotations": {crate::sync::app::REFRESH_ANNOTATION: null}});
                }
                let pp = PatchParams::default();
                let merge = Patch::Merge(&patch);
                crate::cluster::kube::retry(&Default::default(), || {
                    self.apps.patch(&name, &pp, &merge)
                })
                .await
                .map_err(|e| EngineError::App {
                    action: "write the status of",
                    namespace: namespace.clone(),
                    name: name.clone(),
                    message: describe(&e),
                })?;
                wrote = true;
            }
        }
        if let (Some(phase), true) = (operation_phase, mode != Mode::Preview) {
            self.history.push(crate::sync::page::SyncRecord {
                at: now.clone(),
                app: name.clone(),
                revision: f.revision.clone().unwrap_or_default(),
                phase: format!("{phase:?}"),
                applied: f.applied,
                pruned: f.pruned,
            });
        }
        Ok(Outcome {
            name,
            sync: f.sync,
            health: f.health,
            revision: f.revision,
            operation: operation_phase,
            applied: f.applied,
            pruned: f.pruned,
            conditions: f.conditions,
            diffs: f.diffs,
            // An Application that stopped early (unreadable repo, invalid spec) is polled too.
            wake_in: f
                .wake_in
                .or_else(|| Some(backoff::poll_interval(self.cfg.poll, random()))),
            wake_is_poll: f.wake_in.is_none() || f.wake_is_poll,
            wrote_status: wrote,
        })
    }
}

pub(super) fn previous_health(prev: &Value) -> Health {
    let code = match prev["health"]["status"].as_str() {
        Some("Healthy") => HealthCode::Healthy,
        Some("Suspended") => HealthCode::Suspended,
        Some("Progressing") => HealthCode::Progressing,
        Some("Missing") => HealthCode::Missing,
        Some("Degraded") => HealthCode::Degraded,
        _ => HealthCode::Unknown,
    };
    Health::new(code, prev["health"]["message"].as_str().unwrap_or_default())
}

fn without_timestamps(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(m) = s.as_object_mut() {
        m.remove("reconciledAt");
        m.remove("observedAt");
    }
    s
}

/// A JSON merge patch turning `old` into `new`: keys `new` lacks are set to null.
pub fn replacing_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, ov) in o {
                match n.get(k) {
                    None => {
                        out.insert(k.clone(), Value::Null);
                    }
                    Some(nv) => {
                        if ov != nv {
                            out.insert(k.clone(), replacing_patch(ov, nv));
                        }
                    }
                }
            }
            for (k, nv) in n {
                if !o.contains_key(k) {
                    out.insert(k.clone(), nv.clone());
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_patch_nulls_what_went_away() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        let new = json!({"b": {"c": 2}, "e": [2], "f": "x"});
        assert_eq!(
            replacing_patch(&old, &new),
            json!({"a": null, "b": {"d": null}, "e": [2], "f": "x"})
        );
    }
}

//! The cascading delete of an Application being deleted (Argo's resources finalizer): every
//! object it tracks deleted, last wave first, and the finalizer dropped once they are gone.
//!
//! Architecture invariant: only objects tracked to this Application within this installation are
//! deleted; while any remains, the finalizer stays and the next reconcile looks again.

use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::finish::previous_health;
use super::prune::{Going, is_deleting};
use super::{Engine, EngineError, Ident, Outcome, random};
use crate::cluster::kube::{describe, status_code};
use crate::model::kinds::{ObjectRef, kind_rank};
use crate::sync::app::AppSpec;
use crate::sync::backoff;
use crate::sync::status::SyncCode;
use crate::sync::tracking::{Owner, sync_wave};

impl Engine {
    /// Cascading delete of an Application with Argo's resources finalizer: delete everything it
    /// tracks, wait until it is gone (argo-cd `finalizeApplicationDeletion` keeps the finalizer
    /// while objects remain), then drop the finalizer.
    pub(super) async fn finalize(
        &self,
        app: &Value,
        spec: &AppSpec,
        id: &Ident,
    ) -> Result<Outcome, EngineError> {
        let name = spec.name.clone();
        let mut outcome = Outcome {
            name: name.clone(),
            sync: SyncCode::Unknown,
            health: previous_health(&app["status"]),
            revision: None,
            operation: None,
            applied: 0,
            pruned: 0,
            conditions: Vec::new(),
            diffs: Vec::new(),
            wake_in: None,
            wake_is_poll: false,
            wrote_status: false,
        };
        let Some(finalizer) = &spec.finalizer else {
            return Ok(outcome);
        };
        let kinds = self.previous_kinds(&app["status"]).await;
        for r in &kinds {
            let _ = self.cache.ensure(r).await;
        }
        let mut tracked = self.cache.tracked_by(&id.key, &kinds);
        tracked.retain(|(_, v)| id.owner(v) == Owner::This);
        tracked.sort_by_key(|(_, v)| {
            std::cmp::Reverse((
                sync_wave(v).unwrap_or(0),
                kind_rank(v["kind"].as_str().unwrap_or_default()),
            ))
        });
        let dp = if finalizer.ends_with("/background") {
            DeleteParams::background()
        } else {
            DeleteParams::foreground()
        };
        let mut going = Vec::new();
        for (r, v) in &tracked {
            let Some(k) = ObjectRef::of(v) else { continue };
            let g = Going {
                resolved: r.clone(),
                key: k.clone(),
                uid: v["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            };
            if is_deleting(v) {
                going.push(g);
                continue;
            }
            let api = self.applier.api(r, &k.namespace);
            match api.delete(&k.name, &dp).await {
                Ok(answer) => {
                    outcome.pruned += 1;
                    if answer.is_left() {
                        going.push(g);
                        continue;
                    }
                }
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => {
                    return Err(EngineError::App {
                        action: "delete the resources of",
                        namespace: spec.namespace.clone(),
                        name,
                        message: format!("{k}: {}", describe(&e)),
                    });
                }
            }
            self.cache.forget(r, &k);
        }
        let deadline = tokio::time::Instant::now() + self.cfg.wave_timeout;
        if let Err(e) = self.wait_deleted(&going, deadline).await {
            // The finalizer stays until the resources are gone; the next reconcile looks again.
            tracing::warn!(app = %name, "deleting the Application's resources: {e}");
            outcome.wake_in = Some(backoff::poll_interval(self.cfg.poll, random()));
            outcome.wake_is_poll = true;
            return Ok(outcome);
        }
        let remaining: Vec<Value> = app["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f.as_str() != Some(finalizer.as_str()))
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": remaining}});
        self.apps
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| EngineError::App {
                action: "remove the finalizer of",
                namespace: spec.namespace.clone(),
                name: name.clone(),
                message: describe(&e),
            })?;
        tracing::info!(app = %name, pruned = outcome.pruned, "deleted the Application's resources");
        Ok(outcome)
    }
}

//! The prune phase: objects git dropped deleted with the Application's propagation policy, group
//! by group (a wave; `PruneLast` ones last), each group done when its objects are gone from the
//! watch cache, not when the API server accepted the DELETE; and the waiting shared with the
//! apply of a copy being deleted and with the cascading delete.
//!
//! Architecture invariant: only objects of the plan (tracked to this Application) are deleted,
//! and an object already being deleted is never deleted again, only waited for (bounded).

use std::time::Duration;

use kube::api::DeleteParams;
use serde_json::Value;

use super::Engine;
use super::compare::Compared;
use super::execute::{Executed, result};
use crate::cluster::apply::Resolved;
use crate::cluster::kube::{describe, status_code};
use crate::model::kinds::ObjectRef;
use crate::sync::app::{AppSpec, Propagation};
use crate::sync::plan::{self, SyncPlan};
use crate::sync::status::{ResourceResult, ResultCode};

/// An object whose deletion is under way.
pub(super) struct Going {
    pub(super) resolved: Resolved,
    pub(super) key: ObjectRef,
    pub(super) uid: String,
}

impl Engine {
    /// Run the plan's prunes group by group, stopping at the first failure. Like Argo's sync
    /// context: a group of prunes (one wave; PruneLast ones last) is done when its objects are
    /// gone, not when the API server accepted the DELETE — with foreground propagation they stay,
    /// with a deletionTimestamp, until the garbage collector has removed their dependents.
    pub(super) async fn prune_all(
        &self,
        spec: &AppSpec,
        compared: &Compared,
        plan: &SyncPlan,
        out: &mut Executed,
    ) {
        let deadline = tokio::time::Instant::now() + self.cfg.wave_timeout;
        let mut i = 0;
        while i < plan.prunes.len() {
            let group = (plan.prunes[i].last, plan.prunes[i].wave);
            let mut going = Vec::new();
            while i < plan.prunes.len() && (plan.prunes[i].last, plan.prunes[i].wave) == group {
                let (r, pending) = self.prune(spec, compared, &plan.prunes[i]).await;
                match r.status {
                    ResultCode::Pruned => out.pruned += 1,
                    _ => {
                        if out.error.is_none() {
                            out.error = Some(r.message.clone());
                        }
                    }
                }
                going.extend(pending);
                out.results.push(r);
                i += 1;
            }
            if out.error.is_none()
                && let Err(e) = self.wait_deleted(&going, deadline).await
            {
                out.error = Some(e);
            }
            if out.error.is_some() {
                break;
            }
        }
    }

    /// Delete one object git dropped. Returns the result and, when the object is still there
    /// being deleted (finalizers), what to wait for.
    async fn prune(
        &self,
        spec: &AppSpec,
        compared: &Compared,
        p: &plan::PruneTask,
    ) -> (ResourceResult, Option<Going>) {
        let version = crate::model::kinds::group_version(&p.api_version)
            .1
            .to_string();
        let Some((r, live)) = compared
            .tracked
            .iter()
            .find(|(_, v)| ObjectRef::of(v).as_ref() == Some(&p.key))
        else {
            return (
                result(
                    &p.key,
                    &version,
                    ResultCode::SyncFailed,
                    "vanished before pruning",
                ),
                None,
            );
        };
        let going = Going {
            resolved: r.clone(),
            key: p.key.clone(),
            uid: live["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        if is_deleting(live) {
            // gitops-engine `pruneObject`: an object already being deleted is not deleted again
            // (that would only bump it and wake every watcher); its deletion is waited for.
            return (
                result(&p.key, &version, ResultCode::Pruned, "pruned"),
                Some(going),
            );
        }
        let api = self.applier.api(r, &p.key.namespace);
        let dp = match spec.options.propagation {
            Propagation::Foreground => DeleteParams::foreground(),
            Propagation::Background => DeleteParams::background(),
            Propagation::Orphan => DeleteParams::orphan(),
        };
        match crate::cluster::kube::retry(&Default::default(), || api.delete(&p.key.name, &dp))
            .await
        {
            // The server answers with the object while finalizers hold it (foreground and orphan
            // propagation add one), with a Status once it is gone.
            Ok(answer) if answer.is_left() => (
                result(&p.key, &version, ResultCode::Pruned, "pruned"),
                Some(going),
            ),
            Ok(_) => {
                self.cache.forget(r, &p.key);
                (result(&p.key, &version, ResultCode::Pruned, "pruned"), None)
            }
            Err(e) if status_code(&e) == Some(404) => {
                self.cache.forget(r, &p.key);
                (
                    result(
                        &p.key,
                        &version,
                        ResultCode::Pruned,
                        "pruned (already gone)",
                    ),
                    None,
                )
            }
            Err(e) => (
                result(
                    &p.key,
                    &version,
                    ResultCode::SyncFailed,
                    &format!("prune {}: {}", p.key, describe(&e)),
                ),
                None,
            ),
        }
    }

    /// Wait, by the watch cache, until every object in `going` has left it (by uid: a new
    /// object of the same name is another object), or `deadline`.
    pub(super) async fn wait_deleted(
        &self,
        going: &[Going],
        deadline: tokio::time::Instant,
    ) -> Result<(), String> {
        let changed = self.cache.changed();
        loop {
            let notified = changed.notified();
            let left = going.iter().find_map(|g| {
                self.cache
                    .get(&g.resolved, &g.key)
                    .filter(|v| v["metadata"]["uid"] == g.uid.as_str())
                    .map(|v| (g, v))
            });
            let Some((g, live)) = left else {
                return Ok(());
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(still_deleting(&g.key, &live, self.cfg.wave_timeout));
            }
        }
    }
}

/// The object is being deleted (it has a `deletionTimestamp`; finalizers hold it).
pub(super) fn is_deleting(v: &Value) -> bool {
    v["metadata"]["deletionTimestamp"].is_string()
}

/// Why an object is still there after `waited`: its finalizers, and what to do.
pub(super) fn still_deleting(key: &ObjectRef, live: &Value, waited: Duration) -> String {
    let finalizers: Vec<String> = live["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(|f| format!("`{f}`")))
        .collect();
    let held = if finalizers.is_empty() {
        String::new()
    } else {
        format!(" (finalizers {})", finalizers.join(", "))
    };
    format!(
        "{key} is still being deleted after {} s{held}: the controller that owns a finalizer removes it when its work is done (`foregroundDeletion` waits for the object's dependents); the next sync waits again",
        waited.as_secs()
    )
}

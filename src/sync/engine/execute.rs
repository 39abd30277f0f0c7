//! The execute phase: the plan run against the cluster — the destination namespace created when
//! asked, then the waves in order, kind by kind (Namespaces and CRDs before what they hold), each
//! kind's objects applied concurrently through the apply engine, each wave healthy before the
//! next; then the prunes ([`super::prune`]).
//!
//! Architecture invariant: an object is only written through server-side apply with the
//! engine's field manager; an immutable field is replaced (deleted, then created) only with
//! `Replace=true`; a copy being deleted is waited for, never written.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use kube::api::DeleteParams;
use serde_json::{Value, json};

use super::Engine;
use super::compare::{Compared, Item};
use super::prune::{Going, is_deleting, still_deleting};
use crate::cluster::apply::{self, ApplyError, ApplyOptions};
use crate::cluster::kube::{describe, status_code};
use crate::model::kinds::{ObjectRef, kind_rank};
use crate::sync::app::AppSpec;
use crate::sync::cache::Known;
use crate::sync::health;
use crate::sync::plan::{self, Action, SyncPlan};
use crate::sync::status::{HealthCode, ResourceResult, ResultCode};
use crate::sync::tracking::{self, Owner};

/// What running the plan did; `error` is the first failure, which stops the run.
#[derive(Default)]
pub(super) struct Executed {
    pub(super) applied: usize,
    pub(super) pruned: usize,
    pub(super) results: Vec<ResourceResult>,
    pub(super) error: Option<String>,
}

impl Engine {
    /// Run the plan: waves in order (waiting for each to be healthy before the next), then
    /// prunes.
    pub(super) async fn execute(
        &self,
        spec: &AppSpec,
        key: &str,
        compared: &Compared,
        plan: &SyncPlan,
    ) -> Executed {
        let mut out = Executed::default();
        let by_key: HashMap<&ObjectRef, &Item> =
            compared.items.iter().map(|i| (&i.key, i)).collect();
        if spec.options.create_namespace
            && let Some(ns) = &spec.destination_namespace
            && let Err(e) = self.create_namespace(spec, ns).await
        {
            out.error = Some(e);
            return out;
        }
        let last_wave = plan.waves.last().map(|(w, _)| *w);
        for (wave, tasks) in &plan.waves {
            // Kind by kind (Namespaces and CRDs before what they hold), each kind concurrently.
            let mut groups: BTreeMap<usize, Vec<&plan::ApplyTask>> = BTreeMap::new();
            for t in tasks {
                groups.entry(kind_rank(&t.key.kind)).or_default().push(t);
            }
            for (_, group) in groups {
                let mut futs = Vec::with_capacity(group.len());
                for t in group {
                    let item = by_key.get(&t.key).copied();
                    futs.push(self.apply_task(t, item));
                }
                let results = futures::stream::iter(futs)
                    .buffer_unordered(self.cfg.concurrency.max(1))
                    .collect::<Vec<_>>()
                    .await;
                for r in results {
                    if r.status == ResultCode::Synced {
                        out.applied += 1;
                    } else if out.error.is_none() {
                        out.error = Some(r.message.clone());
                    }
                    out.results.push(r);
                }
            }
            if out.error.is_some() {
                return out;
            }
            // Like Argo: the next wave starts once this one is healthy (prunes do not wait).
            if Some(*wave) != last_wave
                && let Err(e) = self.wait_wave_healthy(key, *wave, tasks).await
            {
                out.error = Some(e);
                return out;
            }
        }
        self.stats
            .applied
            .fetch_add(out.applied as u64, std::sync::atomic::Ordering::Relaxed);
        self.prune_all(spec, compared, plan, &mut out).await;
        self.stats
            .pruned
            .fetch_add(out.pruned as u64, std::sync::atomic::Ordering::Relaxed);
        for k in &plan.prune_skipped {
            out.results.push(result(
                k,
                "",
                ResultCode::PruneSkipped,
                "ignored (requires pruning)",
            ));
        }
        out
    }

    async fn create_namespace(&self, spec: &AppSpec, ns: &str) -> Result<(), String> {
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        if let Some(md) = &spec.namespace_metadata {
            if !md.labels.is_empty() {
                obj["metadata"]["labels"] = json!(md.labels);
            }
            if !md.annotations.is_empty() {
                obj["metadata"]["annotations"] = json!(md.annotations);
            }
        }
        let opts = ApplyOptions {
            field_manager: self.cfg.field_manager.clone(),
            ..Default::default()
        };
        let m = apply::Manifest {
            origin: "CreateNamespace=true".into(),
            object: obj,
        };
        self.applier
            .apply(&[m], &opts)
            .await
            .map(|_| ())
            .map_err(|e| format!("create namespace `{ns}`: {e}"))
    }

    async fn apply_task(&self, t: &plan::ApplyTask, item: Option<&Item>) -> ResourceResult {
        let origin = item.map(|i| i.origin.clone()).unwrap_or_default();
        let version = tracking::gv(&t.object).1;
        // Ours (tracked to this app, or new): take fields back from other writers (self-heal).
        // Someone else's: never force; a conflict is reported.
        let ours = item.is_none_or(|i| i.owner == Owner::This || i.live.is_none());
        let opts = ApplyOptions {
            field_manager: self.cfg.field_manager.clone(),
            concurrency: 1,
            force_conflicts: ours,
            ..Default::default()
        };
        let m = apply::Manifest {
            origin: origin.clone(),
            object: t.object.clone(),
        };
        let resolved = item.and_then(|i| i.resolved.as_ref());
        let deadline = tokio::time::Instant::now() + self.cfg.wave_timeout;
        // The copy in the cluster is being deleted: an apply would change an object that is
        // about to go. Wait for it to go, then create the object anew.
        if let Some(r) = resolved
            && let Known::Tracked(live) = self.cache.knows(r, &t.key)
            && is_deleting(&live)
        {
            let going = Going {
                resolved: r.clone(),
                key: t.key.clone(),
                uid: live["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            };
            if let Err(e) = self.wait_deleted(&[going], deadline).await {
                return result(&t.key, &version, ResultCode::SyncFailed, &e);
            }
        }
        // What the watch cache knows saves the GET before the apply.
        let known = || match resolved.map(|r| self.cache.knows(r, &t.key)) {
            Some(Known::Tracked(v)) => Some(Some(v.as_ref().clone())),
            Some(Known::Absent) => Some(None),
            _ => None,
        };
        let mut attempt = self.applier.apply_known(&m, known(), &opts).await;
        if let Err(ApplyError::Object {
            code: Some(422),
            message,
            ..
        }) = &attempt
            && is_immutable(message)
        {
            if t.action == Action::Replace {
                tracing::info!(object = %t.key, "immutable field changed; replacing (Replace=true)");
                if let Err(e) = self.delete_and_wait(item, &t.key, &t.object).await {
                    return result(&t.key, &version, ResultCode::SyncFailed, &e);
                }
                attempt = self.applier.apply_known(&m, None, &opts).await;
            } else {
                return result(
                    &t.key,
                    &version,
                    ResultCode::SyncFailed,
                    &format!(
                        "{} (`{origin}`): {message}; the field cannot change in place: add the sync option `Replace=true` (annotation `argocd.argoproj.io/sync-options: Replace=true` on the object, or in the Application's syncOptions) to let the engine delete and recreate it",
                        t.key
                    ),
                );
            }
        }
        // The apply landed on an object being deleted that the cache did not know of (it was
        // not ours yet): wait for it to go, then create ours.
        if let Ok(report) = &attempt
            && let Some(a) = report.objects.iter().find(|a| is_deleting(&a.live))
        {
            let uid = a.live["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let api = self.applier.api(&a.resolved, &t.key.namespace);
            let gone = kube::runtime::wait::await_condition(
                api,
                &t.key.name,
                kube::runtime::wait::conditions::is_deleted(&uid),
            );
            match tokio::time::timeout_at(deadline, gone).await {
                Ok(Ok(_)) => attempt = self.applier.apply_known(&m, None, &opts).await,
                Ok(Err(e)) => {
                    return result(
                        &t.key,
                        &version,
                        ResultCode::SyncFailed,
                        &format!("{}: wait for its deletion: {e}", t.key),
                    );
                }
                Err(_) => {
                    return result(
                        &t.key,
                        &version,
                        ResultCode::SyncFailed,
                        &still_deleting(&t.key, &a.live, self.cfg.wave_timeout),
                    );
                }
            }
        }
        match attempt {
            Ok(report) => {
                let mut message = "unchanged".to_string();
                for a in report.objects {
                    message = match a.change {
                        apply::Change::Created => "created".into(),
                        apply::Change::Configured => "configured".into(),
                        apply::Change::Unchanged => "unchanged".into(),
                    };
                    self.cache.remember(&a.resolved, a.live);
                }
                result(&t.key, &version, ResultCode::Synced, &message)
            }
            Err(e) => result(&t.key, &version, ResultCode::SyncFailed, &e.to_string()),
        }
    }

    async fn delete_and_wait(
        &self,
        item: Option<&Item>,
        key: &ObjectRef,
        obj: &Value,
    ) -> Result<(), String> {
        let r = match item.and_then(|i| i.resolved.clone()) {
            Some(r) => r,
            None => self
                .applier
                .discovery()
                .resolve(obj["apiVersion"].as_str().unwrap_or_default(), &key.kind)
                .await
                .ok()
                .flatten()
                .ok_or_else(|| format!("replace {key}: kind not served"))?,
        };
        let api = self.applier.api(&r, &key.namespace);
        let uid = match api.get_opt(&key.name).await {
            Ok(Some(o)) => o.metadata.uid.clone(),
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("replace {key}: {}", describe(&e))),
        };
        match api.delete(&key.name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(format!("replace {key}: delete: {}", describe(&e))),
        }
        let gone = kube::runtime::wait::await_condition(
            api,
            &key.name,
            kube::runtime::wait::conditions::is_deleted(uid.as_deref().unwrap_or_default()),
        );
        match tokio::time::timeout(self.cfg.wave_timeout, gone).await {
            Ok(Ok(_)) => {
                self.cache.forget(&r, key);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("replace {key}: wait for deletion: {e}")),
            Err(_) => Err(format!(
                "replace {key}: still not deleted after {} s",
                self.cfg.wave_timeout.as_secs()
            )),
        }
    }

    /// Wait, by cache notifications (the watch), until every object of a wave is healthy.
    async fn wait_wave_healthy(
        &self,
        _key: &str,
        wave: i64,
        tasks: &[plan::ApplyTask],
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.cfg.wave_timeout;
        let changed = self.cache.changed();
        loop {
            let notified = changed.notified();
            let mut waiting = None;
            for t in tasks {
                let r = self
                    .applier
                    .discovery()
                    .resolve(
                        t.object["apiVersion"].as_str().unwrap_or_default(),
                        &t.key.kind,
                    )
                    .await
                    .ok()
                    .flatten();
                let Some(r) = r else { continue };
                let _ = self.cache.ensure(&r).await;
                match self.cache.get(&r, &t.key).and_then(|l| health::assess(&l)) {
                    Some(h) if h.status == HealthCode::Degraded => {
                        return Err(format!("wave {wave}: {} is Degraded: {}", t.key, h.message));
                    }
                    Some(h) if h.status != HealthCode::Healthy => {
                        waiting = Some((t.key.clone(), h));
                        break;
                    }
                    _ => {}
                }
            }
            let Some((k, h)) = waiting else {
                return Ok(());
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!(
                    "wave {wave} was not healthy within {} s: {k} is {} {}",
                    self.cfg.wave_timeout.as_secs(),
                    h.status.as_str(),
                    h.message
                ));
            }
        }
    }
}

pub(super) fn result(
    k: &ObjectRef,
    version: &str,
    status: ResultCode,
    message: &str,
) -> ResourceResult {
    ResourceResult {
        group: k.group.clone(),
        version: version.to_string(),
        kind: k.kind.clone(),
        namespace: k.namespace.clone(),
        name: k.name.clone(),
        status,
        message: message.to_string(),
        sync_phase: "Sync".into(),
    }
}

fn is_immutable(message: &str) -> bool {
    message.contains("immutable")
}

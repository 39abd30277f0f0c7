//! The observe phase: what the Application looks like after the sync, read from the watch cache
//! as it is now (the engine's own writes are already in it) — each object's sync status and
//! health, those that require pruning, the app's health and sync status, and for `homelab diff`
//! the differences as people read them.
//!
//! Architecture invariant: reads only; a preview asks the API server (not the cache) only for
//! objects the engine does not track yet.

use std::collections::HashSet;

use serde_json::Value;

use super::compare::{Compared, Item};
use super::prune::is_deleting;
use super::{Engine, Ident, Mode, ObjectDiff};
use crate::cluster::apply;
use crate::model::kinds::{ObjectRef, kind_rank};
use crate::sync::app::AppSpec;
use crate::sync::diff::{self, RenderConfig};
use crate::sync::health;
use crate::sync::status::{Health, HealthCode, ResourceStatus, SyncCode};
use crate::sync::tracking::{self, Owner, sync_wave};

/// The Application as observed after the sync.
pub(super) struct Observed {
    pub(super) resources: Vec<ResourceStatus>,
    pub(super) health: Health,
    pub(super) sync: SyncCode,
    pub(super) diffs: Vec<ObjectDiff>,
}

impl Engine {
    /// Status from the cache as it is now; `resynced`: a sync ran, so the comparison is redone.
    pub(super) async fn observe(
        &self,
        spec: &AppSpec,
        id: &Ident,
        mode: Mode,
        compared: &Compared,
        resynced: bool,
    ) -> Observed {
        let mut resources = Vec::new();
        let mut healths = Vec::new();
        let mut diffs = Vec::new();
        let mut any_out = false;
        for item in &compared.items {
            let live = item
                .resolved
                .as_ref()
                .and_then(|r| self.cache.get(r, &item.key));
            let cmp = if resynced {
                diff::compare(&item.object, live.as_deref(), self.compare_cfg(spec))
            } else {
                item.comparison.clone()
            };
            let h = match &live {
                Some(l) => health::assess(l),
                None => Some(Health::new(HealthCode::Missing, "")),
            };
            if let Some(h) = &h {
                healths.push(h.clone());
            }
            any_out |= cmp.status != SyncCode::Synced;
            if mode == Mode::Preview && cmp.status != SyncCode::Synced {
                let live_view = match &live {
                    // A copy being deleted is as good as gone: the sync would create git's anew.
                    Some(l) if is_deleting(l) => None,
                    Some(l) => Some(l.as_ref().clone()),
                    None => self.get_untracked(item).await.filter(|v| !is_deleting(v)),
                };
                diffs.push(ObjectDiff {
                    key: item.key.clone(),
                    change: if live_view.is_some() {
                        "OutOfSync"
                    } else {
                        "Missing"
                    },
                    text: diff::render(
                        &strip_hash(&item.object),
                        live_view.map(|v| strip_hash(&v)).as_ref(),
                        &self.cfg.field_manager,
                        RenderConfig { context: 3 },
                    ),
                });
            }
            resources.push(ResourceStatus {
                group: item.key.group.clone(),
                version: tracking::gv(&item.object).1,
                kind: item.key.kind.clone(),
                namespace: item.key.namespace.clone(),
                name: item.key.name.clone(),
                status: cmp.status,
                health: h,
                requires_pruning: false,
                sync_wave: item.wave,
            });
        }
        let desired_keys: HashSet<&ObjectRef> = compared.items.iter().map(|i| &i.key).collect();
        for (r, v) in self.cache.tracked_by(&id.key, &compared.kinds) {
            let Some(k) = ObjectRef::of(&v) else { continue };
            if desired_keys.contains(&k) || id.owner(&v) != Owner::This {
                continue;
            }
            any_out = true;
            if mode == Mode::Preview {
                diffs.push(ObjectDiff {
                    key: k.clone(),
                    change: "Prune",
                    text: String::new(),
                });
            }
            // As in Argo (argo-cd `setApplicationHealth` walks every managed resource, those
            // that require pruning too): one still being deleted keeps the app Progressing.
            let h = health::assess(&v);
            healths.extend(h.clone());
            resources.push(ResourceStatus {
                group: k.group.clone(),
                version: r.resource.version.clone(),
                kind: k.kind.clone(),
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                status: SyncCode::OutOfSync,
                health: h,
                requires_pruning: true,
                sync_wave: sync_wave(&v).unwrap_or(0),
            });
        }
        resources.sort_by(|a, b| {
            (
                a.sync_wave,
                kind_rank(&a.kind),
                &a.kind,
                &a.namespace,
                &a.name,
            )
                .cmp(&(
                    b.sync_wave,
                    kind_rank(&b.kind),
                    &b.kind,
                    &b.namespace,
                    &b.name,
                ))
        });
        Observed {
            resources,
            health: health::aggregate(&healths),
            sync: if any_out {
                SyncCode::OutOfSync
            } else {
                SyncCode::Synced
            },
            diffs,
        }
    }

    async fn get_untracked(&self, item: &Item) -> Option<Value> {
        let r = item.resolved.as_ref()?;
        let api = self.applier.api(r, &item.key.namespace);
        let o = api.get_opt(&item.key.name).await.ok()??;
        Some(apply::to_value(&o, r))
    }
}

fn strip_hash(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(a) = v["metadata"]["annotations"].as_object_mut() {
        a.remove(apply::diff::HASH_ANNOTATION);
    }
    v
}

//! The sync plan: which objects to apply, in which order, and which to prune — computed whole,
//! as a value, before anything is written (gitops-engine's `syncTasks`).
//!
//! Place in the data flow: per-object comparisons (from [`super::diff`]) + tracked live objects
//! → [`build`] → [`SyncPlan`] that the engine walks.
//!
//! Architecture invariant: the prune list only ever holds objects whose tracking id names this
//! Application and the object itself ([`super::tracking::owner`] is `This`), that git no longer
//! has, and that do not say `Prune=false`; and it is empty when git rendered nothing unless the
//! Application allows it (`allowEmpty`). Order: wave (lowest first) → Argo's kind order → name for
//! applies; prunes in reverse (highest wave first, reverse kind order), `PruneLast` ones at the
//! very end.

use serde_json::Value;

use crate::model::kinds::{ObjectRef, kind_rank};

use super::status::SyncCode;
use super::tracking::ResourceOptions;

/// How an object is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Server-side apply.
    Apply,
    /// Server-side apply; if the server refuses an immutable-field change, delete and recreate
    /// (sync option `Replace=true`).
    Replace,
}

/// One object to write.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplyTask {
    /// Identity.
    pub key: ObjectRef,
    /// Wave.
    pub wave: i64,
    /// How.
    pub action: Action,
    /// The normalised desired object.
    pub object: Value,
}

/// One object to delete.
#[derive(Clone, Debug, PartialEq)]
pub struct PruneTask {
    /// Identity.
    pub key: ObjectRef,
    /// apiVersion of the live object.
    pub api_version: String,
    /// Wave of the live object.
    pub wave: i64,
    /// Runs after everything else (`PruneLast=true`).
    pub last: bool,
}

/// A desired object with its comparison result.
#[derive(Clone, Debug)]
pub struct Desired {
    /// Identity.
    pub key: ObjectRef,
    /// Normalised object.
    pub object: Value,
    /// Wave.
    pub wave: i64,
    /// Comparison.
    pub status: SyncCode,
    /// Per-resource options.
    pub options: ResourceOptions,
}

/// A live object this Application tracks.
#[derive(Clone, Debug)]
pub struct Tracked {
    /// Identity.
    pub key: ObjectRef,
    /// apiVersion.
    pub api_version: String,
    /// Wave (from its annotation).
    pub wave: i64,
    /// Per-resource options.
    pub options: ResourceOptions,
}

/// Plan inputs that are not per object.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlanConfig {
    /// Pruning allowed (automated.prune, or the manual operation's prune).
    pub prune: bool,
    /// automated.allowEmpty.
    pub allow_empty: bool,
    /// App-level `PruneLast=true`.
    pub prune_last: bool,
    /// App-level `Replace=true`.
    pub replace: bool,
}

/// The whole plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncPlan {
    /// Applies, grouped by wave, lowest first.
    pub waves: Vec<(i64, Vec<ApplyTask>)>,
    /// Deletions in the order they run.
    pub prunes: Vec<PruneTask>,
    /// Would be pruned, but pruning is off or the object says `Prune=false`.
    pub prune_skipped: Vec<ObjectRef>,
    /// Why pruning was refused as a whole (empty render without allowEmpty).
    pub prune_refused: Option<String>,
}

impl SyncPlan {
    /// True when the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.waves.is_empty() && self.prunes.is_empty()
    }

    /// Number of objects written or deleted.
    pub fn len(&self) -> usize {
        self.waves.iter().map(|(_, t)| t.len()).sum::<usize>() + self.prunes.len()
    }
}

/// Build the plan: apply what is out of sync, prune what git dropped.
pub fn build(desired: &[Desired], tracked: &[Tracked], cfg: PlanConfig) -> SyncPlan {
    let mut plan = SyncPlan::default();

    let mut applies: Vec<ApplyTask> = desired
        .iter()
        .filter(|d| d.status != SyncCode::Synced)
        .map(|d| ApplyTask {
            key: d.key.clone(),
            wave: d.wave,
            action: if cfg.replace || d.options.replace {
                Action::Replace
            } else {
                Action::Apply
            },
            object: d.object.clone(),
        })
        .collect();
    applies.sort_by(|a, b| order(a.wave, &a.key).cmp(&order(b.wave, &b.key)));
    for t in applies {
        match plan.waves.last_mut() {
            Some((w, tasks)) if *w == t.wave => tasks.push(t),
            _ => plan.waves.push((t.wave, vec![t])),
        }
    }

    let in_git: std::collections::HashSet<&ObjectRef> = desired.iter().map(|d| &d.key).collect();
    let orphans: Vec<&Tracked> = tracked
        .iter()
        .filter(|t| !in_git.contains(&t.key))
        .collect();
    if desired.is_empty() && !orphans.is_empty() && !cfg.allow_empty {
        plan.prune_refused = Some(format!(
            "the source rendered no objects; refusing to prune all {} tracked objects (set `spec.syncPolicy.automated.allowEmpty: true` to allow it)",
            orphans.len()
        ));
        plan.prune_skipped = orphans.iter().map(|t| t.key.clone()).collect();
        plan.prune_skipped.sort();
        return plan;
    }
    let mut prunes = Vec::new();
    for t in orphans {
        if !cfg.prune || t.options.no_prune {
            plan.prune_skipped.push(t.key.clone());
            continue;
        }
        prunes.push(PruneTask {
            key: t.key.clone(),
            api_version: t.api_version.clone(),
            wave: t.wave,
            last: cfg.prune_last || t.options.prune_last,
        });
    }
    prunes.sort_by(|a, b| {
        (a.last, std::cmp::Reverse(order(a.wave, &a.key)))
            .cmp(&(b.last, std::cmp::Reverse(order(b.wave, &b.key))))
    });
    plan.prunes = prunes;
    plan.prune_skipped.sort();
    plan
}

fn order(wave: i64, key: &ObjectRef) -> (i64, usize, &str, &str, &str) {
    (
        wave,
        kind_rank(&key.kind),
        key.kind.as_str(),
        key.namespace.as_str(),
        key.name.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, name: &str) -> ObjectRef {
        ObjectRef {
            group: String::new(),
            kind: kind.into(),
            namespace: "n".into(),
            name: name.into(),
        }
    }

    fn d(kind: &str, name: &str, wave: i64, status: SyncCode) -> Desired {
        Desired {
            key: key(kind, name),
            object: Value::Null,
            wave,
            status,
            options: ResourceOptions::default(),
        }
    }

    fn t(kind: &str, name: &str, wave: i64) -> Tracked {
        Tracked {
            key: key(kind, name),
            api_version: "v1".into(),
            wave,
            options: ResourceOptions::default(),
        }
    }

    fn names(plan: &SyncPlan) -> Vec<String> {
        plan.waves
            .iter()
            .flat_map(|(w, ts)| {
                ts.iter()
                    .map(move |t| format!("{w}:{}/{}", t.key.kind, t.key.name))
            })
            .collect()
    }

    #[test]
    fn applies_go_by_wave_then_kind_order_then_name_and_skip_synced() {
        let desired = vec![
            d("Deployment", "web", 0, SyncCode::OutOfSync),
            d("Service", "web", 0, SyncCode::OutOfSync),
            d("Widget", "w", 0, SyncCode::OutOfSync),
            d("ConfigMap", "b", 0, SyncCode::OutOfSync),
            d("ConfigMap", "a", 0, SyncCode::OutOfSync),
            d("Namespace", "n", 1, SyncCode::OutOfSync),
            d("Job", "migrate", -1, SyncCode::OutOfSync),
            d("Secret", "same", 0, SyncCode::Synced),
        ];
        let plan = build(&desired, &[], PlanConfig::default());
        assert_eq!(
            names(&plan),
            vec![
                "-1:Job/migrate",
                "0:ConfigMap/a",
                "0:ConfigMap/b",
                "0:Service/web",
                "0:Deployment/web",
                "0:Widget/w",
                "1:Namespace/n"
            ]
        );
        assert_eq!(plan.waves.len(), 3);
    }

    #[test]
    fn prunes_only_tracked_objects_git_dropped_in_reverse_order() {
        let desired = vec![d("ConfigMap", "keep", 0, SyncCode::Synced)];
        let mut keep = t("Secret", "pinned", 0);
        keep.options.no_prune = true;
        let mut last = t("ConfigMap", "last", 5);
        last.options.prune_last = true;
        let tracked = vec![
            t("ConfigMap", "keep", 0),
            t("Namespace", "old", 0),
            t("Deployment", "old", 0),
            t("Service", "early", -1),
            t("ConfigMap", "late", 3),
            keep,
            last,
        ];
        let plan = build(
            &desired,
            &tracked,
            PlanConfig {
                prune: true,
                ..Default::default()
            },
        );
        let order: Vec<_> = plan
            .prunes
            .iter()
            .map(|p| format!("{}/{}", p.key.kind, p.key.name))
            .collect();
        assert_eq!(
            order,
            vec![
                "ConfigMap/late",
                "Deployment/old",
                "Namespace/old",
                "Service/early",
                "ConfigMap/last"
            ]
        );
        assert_eq!(plan.prune_skipped, vec![key("Secret", "pinned")]);
        assert!(plan.waves.is_empty());
    }

    #[test]
    fn without_prune_everything_is_skipped_not_deleted() {
        let plan = build(
            &[d("ConfigMap", "a", 0, SyncCode::Synced)],
            &[t("ConfigMap", "gone", 0)],
            PlanConfig::default(),
        );
        assert!(plan.prunes.is_empty());
        assert_eq!(plan.prune_skipped, vec![key("ConfigMap", "gone")]);
    }

    #[test]
    fn an_empty_render_never_prunes_without_allow_empty() {
        let tracked = vec![t("ConfigMap", "a", 0), t("Deployment", "b", 0)];
        let cfg = PlanConfig {
            prune: true,
            ..Default::default()
        };
        let plan = build(&[], &tracked, cfg);
        assert!(plan.prunes.is_empty());
        assert_eq!(plan.prune_skipped.len(), 2);
        assert!(plan.prune_refused.as_deref().unwrap().starts_with(
            "the source rendered no objects; refusing to prune all 2 tracked objects"
        ));
        let plan = build(
            &[],
            &tracked,
            PlanConfig {
                allow_empty: true,
                ..cfg
            },
        );
        assert_eq!(plan.prunes.len(), 2);
        assert_eq!(plan.prune_refused, None);
    }

    #[test]
    fn replace_is_per_app_or_per_resource() {
        let mut r = d("Job", "j", 0, SyncCode::OutOfSync);
        r.options.replace = true;
        let plan = build(
            &[r, d("ConfigMap", "c", 0, SyncCode::OutOfSync)],
            &[],
            PlanConfig::default(),
        );
        let actions: Vec<_> = plan.waves[0].1.iter().map(|t| t.action).collect();
        assert_eq!(actions, vec![Action::Apply, Action::Replace]);
    }
}

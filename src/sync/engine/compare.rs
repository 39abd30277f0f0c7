//! The compare phase: the desired state (read from git, or from memory when it cannot have
//! changed), its kinds resolved, each object prepared as the engine would apply it, the kinds
//! watched, and each object compared with its live copy in the watch cache.
//!
//! Architecture invariant: reads only (git, discovery, the watch cache); nothing is written. A
//! failure is a [`Stop`]: what the Application's status says instead of a comparison.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::finish::previous_health;
use super::{Engine, Fetch, Ident, ManifestKey};
use crate::cluster::apply::{self, Resolved};
use crate::cluster::kube::describe;
use crate::model::kinds::ObjectRef;
use crate::sync::app::AppSpec;
use crate::sync::diff::{self, CompareConfig, Comparison};
use crate::sync::health;
use crate::sync::manifests::{self, Manifest, ManifestError};
use crate::sync::status::{Condition, ConditionType, Health, HealthCode, SyncCode};
use crate::sync::tracking::{self, Owner, resource_options, sync_wave};

/// A desired object on its way through a reconcile.
pub(super) struct Item {
    pub(super) origin: String,
    pub(super) key: ObjectRef,
    pub(super) resolved: Option<Resolved>,
    pub(super) object: Value,
    pub(super) wave: i64,
    pub(super) options: tracking::ResourceOptions,
    pub(super) live: Option<Arc<Value>>,
    pub(super) owner: Owner,
    pub(super) comparison: Comparison,
}

/// The comparison of one Application.
pub(super) struct Compared {
    pub(super) revision: String,
    pub(super) items: Vec<Item>,
    pub(super) kinds: Vec<Resolved>,
    pub(super) tracked: Vec<(Resolved, Arc<Value>)>,
    /// What the manifests ask for that we do not do (resource hooks).
    pub(super) warnings: Vec<Condition>,
}

/// A failure before anything could be compared.
pub(super) struct Stop {
    pub(super) sync: SyncCode,
    pub(super) health: Option<Health>,
    pub(super) revision: Option<String>,
    pub(super) condition: Condition,
}

impl Engine {
    /// Fetch, read, resolve, normalise and compare.
    pub(super) async fn compare(
        &self,
        spec: &AppSpec,
        id: &Ident,
        prev: &Value,
        fetch: Fetch,
    ) -> Result<Compared, Stop> {
        let (revision, manifests) = self.read_desired(spec, prev, fetch).await?;
        let resolved = self.resolve_kinds(&manifests, &revision).await?;
        let (mut items, warnings) = self.prepare(spec, id, &manifests, resolved, &revision)?;
        let kinds = self.watch_kinds(&items, prev, &revision).await?;
        self.compare_live(spec, id, &mut items);
        let tracked = self
            .cache
            .tracked_by(&id.key, &kinds)
            .into_iter()
            .filter(|(_, v)| id.owner(v) == Owner::This)
            .collect();
        Ok(Compared {
            revision,
            items,
            kinds,
            tracked,
            warnings,
        })
    }

    /// The commit to compare and its manifests: asked of git unless the desired state cannot
    /// have changed; parsed manifests are kept per source while the commit stays the same.
    async fn read_desired(
        &self,
        spec: &AppSpec,
        prev: &Value,
        fetch: Fetch,
    ) -> Result<(String, Arc<Vec<Manifest>>), Stop> {
        let mkey: ManifestKey = (
            spec.source.repo_url.clone(),
            spec.source.target_revision.clone(),
            spec.source.path.clone(),
            spec.source.recurse,
            spec.source.include.clone(),
            spec.source.exclude.clone(),
        );
        let cached = self
            .manifests
            .lock()
            .expect("manifest cache")
            .get(&mkey)
            .cloned();
        let last = prev["sync"]["revision"].as_str();
        let fetched = match &cached {
            // The desired state did not change: no need to ask git.
            Some((commit, m)) if fetch == Fetch::IfNeeded && last == Some(commit.as_str()) => {
                Ok((commit.clone(), Ok(m.clone())))
            }
            _ => {
                self.stats
                    .fetches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let auth = self.repo_auth(&spec.source.repo_url).await;
                let src = spec.source.clone();
                self.source
                    .with_checkout(
                        &spec.source.repo_url,
                        &spec.source.target_revision,
                        &auth,
                        |c| {
                            // Parsed manifests are reused while the commit stays the same.
                            let read = match &cached {
                                Some((commit, m)) if *commit == c.commit => Ok(m.clone()),
                                _ => manifests::read(&c.dir, &src).map(Arc::new),
                            };
                            (c.commit.clone(), read)
                        },
                    )
                    .await
            }
        };
        let (revision, read) = match fetched {
            Ok(x) => x,
            Err(e) => {
                return Err(Stop {
                    sync: SyncCode::Unknown,
                    health: None,
                    revision: None,
                    condition: Condition::new(ConditionType::ComparisonError, e.to_string()),
                });
            }
        };
        let manifests = match read {
            Ok(m) => m,
            Err(e) => return Err(bad_manifests(&e, &revision)),
        };
        self.manifests
            .lock()
            .expect("manifest cache")
            .insert(mkey, (revision.clone(), manifests.clone()));
        Ok((revision, manifests))
    }

    /// Resolve kinds; a kind the cluster does not serve and no CRD here defines is an error
    /// naming the file.
    async fn resolve_kinds(
        &self,
        manifests: &[Manifest],
        revision: &str,
    ) -> Result<Vec<Option<Resolved>>, Stop> {
        let discovery = self.applier.discovery();
        let mut resolved: Vec<Option<Resolved>> = Vec::with_capacity(manifests.len());
        let mut known: HashMap<(String, String), bool> = HashMap::new();
        for m in manifests.iter() {
            let api_version = m.object["apiVersion"].as_str().unwrap_or_default();
            let kind = m.object["kind"].as_str().unwrap_or_default();
            let r = discovery
                .resolve(api_version, kind)
                .await
                .map_err(|e| Stop {
                    sync: SyncCode::Unknown,
                    health: None,
                    revision: Some(revision.to_string()),
                    condition: Condition::new(
                        ConditionType::ComparisonError,
                        format!("discover `{api_version}`: {}", describe(&e)),
                    ),
                })?;
            known.insert((api_version.into(), kind.into()), r.is_some());
            resolved.push(r);
        }
        manifests::check_kinds(manifests, |a, k| {
            known
                .get(&(a.to_string(), k.to_string()))
                .copied()
                .unwrap_or(false)
        })
        .map_err(|e| bad_manifests(&e, revision))?;
        Ok(resolved)
    }

    /// The desired objects as the engine applies them: resource hooks left out (with a warning),
    /// each normalised (tracking id, namespace, installation id) and refused when the engine may
    /// not manage it.
    fn prepare(
        &self,
        spec: &AppSpec,
        id: &Ident,
        manifests: &[Manifest],
        resolved: Vec<Option<Resolved>>,
        revision: &str,
    ) -> Result<(Vec<Item>, Vec<Condition>), Stop> {
        let mut items = Vec::with_capacity(manifests.len());
        let mut warnings = Vec::new();
        for (m, r) in manifests.iter().zip(resolved) {
            if let Some(hook) = tracking::annotation(&m.object, tracking::HOOK) {
                // `Skip` means "never apply"; other hooks would need a hook runner.
                if hook != "Skip" {
                    let oref = ObjectRef::of(&m.object).expect("manifests have identity");
                    warnings.push(Condition::new(
                        ConditionType::UnsupportedFieldWarning,
                        format!(
                            "`{}`: {oref} is an Argo CD resource hook (`{hook}`); hooks are not supported by homelab's sync engine, so it was not applied",
                            m.origin()
                        ),
                    ));
                }
                continue;
            }
            let mut obj = m.object.clone();
            // Kinds a CRD of this set defines are namespaced unless proven otherwise.
            let namespaced = r
                .as_ref()
                .map(|r| r.namespaced)
                .unwrap_or_else(|| crd_scope(manifests, &obj).unwrap_or(true));
            diff::normalize(
                &mut obj,
                &id.key,
                spec.destination_namespace.as_deref(),
                namespaced,
            );
            tracking::stamp_installation(&mut obj, id.installation.as_deref());
            let obj = apply::diff::prepare(&obj);
            let oref = ObjectRef::of(&obj).expect("manifests have identity");
            self.admissible(m, &oref, namespaced, revision)?;
            items.push(Item {
                origin: m.origin(),
                wave: sync_wave(&obj).unwrap_or(0),
                options: resource_options(&obj),
                key: oref,
                resolved: r,
                object: obj,
                live: None,
                owner: Owner::Untracked,
                comparison: Comparison {
                    status: SyncCode::OutOfSync,
                    first_difference: None,
                },
            });
        }
        Ok((items, warnings))
    }

    /// An object the engine may manage: in its namespaces (namespace-scoped mode), and with a
    /// namespace when its kind is namespaced.
    fn admissible(
        &self,
        m: &Manifest,
        oref: &ObjectRef,
        namespaced: bool,
        revision: &str,
    ) -> Result<(), Stop> {
        if !self.cache.allows(&oref.namespace) {
            let scope = self
                .cfg
                .namespaces
                .iter()
                .flatten()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let msg = if oref.namespace.is_empty() {
                format!(
                    "`{}`: {oref} is cluster-scoped; the engine may manage only namespaced objects in {scope}",
                    m.origin()
                )
            } else {
                format!(
                    "`{}`: {oref} is outside the namespaces the engine may manage ({scope})",
                    m.origin()
                )
            };
            return Err(Stop {
                sync: SyncCode::OutOfSync,
                health: Some(Health::new(HealthCode::Degraded, msg.clone())),
                revision: Some(revision.to_string()),
                condition: Condition::new(ConditionType::ComparisonError, msg),
            });
        }
        if namespaced && oref.namespace.is_empty() {
            return Err(Stop {
                sync: SyncCode::OutOfSync,
                health: Some(Health::new(
                    HealthCode::Degraded,
                    format!("`{}`: {oref} names no namespace", m.origin()),
                )),
                revision: Some(revision.to_string()),
                condition: Condition::new(
                    ConditionType::ComparisonError,
                    format!(
                        "`{}`: {oref} is namespaced but neither it nor `spec.destination.namespace` names a namespace",
                        m.origin()
                    ),
                ),
            });
        }
        Ok(())
    }

    /// Kinds to watch: what git has now, and what the app tracked before (to find prunes). All
    /// watches start at once; then each first LIST is awaited.
    async fn watch_kinds(
        &self,
        items: &[Item],
        prev: &Value,
        revision: &str,
    ) -> Result<Vec<Resolved>, Stop> {
        let mut kinds: BTreeMap<String, Resolved> = BTreeMap::new();
        for r in items.iter().filter_map(|i| i.resolved.clone()) {
            kinds
                .entry(format!("{}/{}", r.resource.api_version, r.resource.kind))
                .or_insert(r);
        }
        for r in self.previous_kinds(prev).await {
            kinds
                .entry(format!("{}/{}", r.resource.api_version, r.resource.kind))
                .or_insert(r);
        }
        let kinds: Vec<Resolved> = kinds.into_values().collect();
        for r in &kinds {
            self.cache.watch(r);
        }
        let mut ensure = Vec::with_capacity(kinds.len());
        for r in &kinds {
            ensure.push(self.cache.ensure(r).await);
        }
        if let Some(Err(e)) = ensure.into_iter().find(|r| r.is_err()) {
            return Err(Stop {
                sync: SyncCode::Unknown,
                health: None,
                revision: Some(revision.to_string()),
                condition: Condition::new(ConditionType::ComparisonError, e.to_string()),
            });
        }
        Ok(kinds)
    }

    /// Each desired object against its live copy in the watch cache, and whose that copy is.
    fn compare_live(&self, spec: &AppSpec, id: &Ident, items: &mut [Item]) {
        let cfg = self.compare_cfg(spec);
        for item in items {
            item.live = item
                .resolved
                .as_ref()
                .and_then(|r| self.cache.get(r, &item.key));
            item.owner = item
                .live
                .as_ref()
                .map(|l| id.owner(l))
                .unwrap_or(Owner::Untracked);
            item.comparison = diff::compare(&item.object, item.live.as_deref(), cfg);
            if let Some(d) = &item.comparison.first_difference {
                tracing::debug!(object = %item.key, difference = %d, "out of sync");
            }
        }
    }

    /// Kinds listed in the previous status's resources.
    pub(super) async fn previous_kinds(&self, prev: &Value) -> Vec<Resolved> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for r in prev["resources"].as_array().into_iter().flatten() {
            let group = r["group"].as_str().unwrap_or_default();
            let version = r["version"].as_str().unwrap_or_default();
            let kind = r["kind"].as_str().unwrap_or_default();
            if version.is_empty() || kind.is_empty() {
                continue;
            }
            let api_version = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            if !seen.insert((api_version.clone(), kind.to_string())) {
                continue;
            }
            if let Ok(Some(r)) = self.applier.discovery().resolve(&api_version, kind).await {
                out.push(r);
            }
        }
        out
    }

    /// Health from the objects the app tracks, when git could not be read.
    pub(super) async fn tracked_health(&self, id: &Ident, prev: &Value) -> Health {
        let kinds = self.previous_kinds(prev).await;
        for r in &kinds {
            let _ = self.cache.ensure(r).await;
        }
        let hs: Vec<Health> = self
            .cache
            .tracked_by(&id.key, &kinds)
            .iter()
            .filter(|(_, v)| id.owner(v) == Owner::This)
            .filter_map(|(_, v)| health::assess(v))
            .collect();
        if hs.is_empty() {
            return previous_health(prev);
        }
        health::aggregate(&hs)
    }

    pub(super) fn compare_cfg<'a>(&'a self, spec: &'a AppSpec) -> CompareConfig<'a> {
        CompareConfig {
            manager: &self.cfg.field_manager,
            ignore: &spec.ignore_differences,
        }
    }
}

fn bad_manifests(e: &ManifestError, revision: &str) -> Stop {
    Stop {
        sync: SyncCode::OutOfSync,
        health: Some(Health::new(HealthCode::Degraded, e.to_string())),
        revision: Some(revision.to_string()),
        condition: Condition::new(ConditionType::ComparisonError, e.to_string()),
    }
}

/// Scope of a kind that a CRD in the same set defines.
fn crd_scope(manifests: &[Manifest], obj: &Value) -> Option<bool> {
    let (group, _) = crate::model::kinds::group_version(obj["apiVersion"].as_str()?);
    let kind = obj["kind"].as_str()?;
    manifests.iter().find_map(|m| {
        let spec = &m.object["spec"];
        (m.object["kind"] == "CustomResourceDefinition"
            && spec["group"] == group
            && spec["names"]["kind"] == kind)
            .then(|| spec["scope"] != "Cluster")
    })
}

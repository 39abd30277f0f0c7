//! The apply engine: a set of objects → the cluster, by server-side apply with one field manager.
//! Used by `up` (through `deploy`) and, later, by the sync engine.
//!
//! Data flow: manifests (values or multi-document YAML) → resolve each kind through a cached
//! discovery → Namespaces and CRDs first → wait for the CRDs to be Established and refresh
//! discovery → the rest, in kind order, objects of one kind concurrently → [`ApplyReport`].
//! [`Applier::prune`] deletes what an owner no longer renders.
//!
//! Architecture invariant: no write for an object that already matches (every field we set has
//! our value live and the hash annotation matches; a server-side dry run settles the cases where
//! the server normalised a value); prune deletes only objects the caller's ownership rule
//! claims, never one with an owner reference, and never a Namespace or CRD that still holds
//! objects that are not ours.

pub mod diff;
pub mod discovery;
pub mod readiness;
pub mod wait;

mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ::kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use futures::StreamExt;
use serde_json::Value;

use crate::cluster::kube::{Backoff, describe, retry, status_code};
use crate::edges::yaml;
use crate::model::kinds::{ObjectRef, group_version, kind_rank};
pub use discovery::{Discovery, Resolved};
pub use report::{Applied, ApplyError, ApplyOptions, ApplyReport, Change, PruneReport, PruneScope};

/// The field manager homelab applies with.
pub const FIELD_MANAGER: &str = "homelab";

/// An object to apply, with where it came from (for messages).
#[derive(Clone, Debug)]
pub struct Manifest {
    /// File, template or component it was read from.
    pub origin: String,
    /// The object.
    pub object: Value,
}

/// Parse multi-document YAML into manifests; each document must be an object with apiVersion,
/// kind and metadata.name.
pub fn parse_documents(origin: &str, text: &str) -> Result<Vec<Manifest>, ApplyError> {
    let docs = yaml::documents(text).map_err(|e| ApplyError::Parse {
        origin: origin.to_string(),
        message: match e.position() {
            Some(p) => format!("{} at {p}", e.message),
            None => e.message,
        },
    })?;
    docs.into_iter()
        .map(|(line, object)| {
            if ObjectRef::of(&object).is_none() {
                return Err(ApplyError::Parse {
                    origin: origin.to_string(),
                    message: format!(
                        "the document at line {line} has no apiVersion, kind or metadata.name"
                    ),
                });
            }
            Ok(Manifest {
                origin: origin.to_string(),
                object,
            })
        })
        .collect()
}

/// An object with its kind resolved and namespace settled.
#[derive(Clone)]
struct Planned {
    origin: String,
    object: Value,
    oref: ObjectRef,
    resolved: Resolved,
}

/// Applies object sets to one cluster; holds the discovery cache.
pub struct Applier {
    client: ::kube::Client,
    discovery: Arc<Discovery>,
    backoff: Backoff,
}

impl Applier {
    /// The served resource for `apiVersion` + `kind`, `None` when the cluster does not serve it.
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Resolved>, ApplyError> {
        self.discovery
            .resolve(api_version, kind)
            .await
            .map_err(|e| ApplyError::Api {
                action: format!("discover `{api_version}`"),
                message: describe(&e),
            })
    }

    /// An applier for this client.
    pub fn new(client: ::kube::Client) -> Applier {
        Applier {
            discovery: Arc::new(Discovery::new(client.clone())),
            client,
            backoff: Backoff::default(),
        }
    }

    /// The client.
    pub fn client(&self) -> &::kube::Client {
        &self.client
    }

    /// The discovery cache.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// An `Api` for a resolved kind in a namespace ("" for cluster-scoped or all namespaces).
    pub fn api(&self, resolved: &Resolved, namespace: &str) -> Api<DynamicObject> {
        if resolved.namespaced && !namespace.is_empty() {
            Api::namespaced_with(self.client.clone(), namespace, &resolved.resource)
        } else {
            Api::all_with(self.client.clone(), &resolved.resource)
        }
    }

    async fn plan_one(
        &self,
        m: &Manifest,
        opts: &ApplyOptions,
    ) -> Result<Option<Planned>, ApplyError> {
        let api_version = m.object["apiVersion"].as_str().unwrap_or_default();
        let kind = m.object["kind"].as_str().unwrap_or_default();
        let resolved = self.resolve(api_version, kind).await?;
        let Some(resolved) = resolved else {
            return Ok(None);
        };
        let mut object = diff::prepare(&m.object);
        let mut oref = ObjectRef::of(&object).expect("checked when parsed");
        if resolved.namespaced {
            if oref.namespace.is_empty() {
                let Some(ns) = &opts.default_namespace else {
                    return Err(ApplyError::NoNamespace {
                        object: Box::new(oref),
                        origin: m.origin.clone(),
                    });
                };
                object["metadata"]["namespace"] = Value::String(ns.clone());
                oref.namespace = ns.clone();
            }
        } else if let Some(meta) = object["metadata"].as_object_mut() {
            // A namespace on a cluster-scoped object means nothing; the server would ignore it.
            meta.remove("namespace");
            oref.namespace.clear();
        }
        Ok(Some(Planned {
            origin: m.origin.clone(),
            object,
            oref,
            resolved,
        }))
    }

    /// Apply a set of objects.
    pub async fn apply(
        &self,
        manifests: &[Manifest],
        opts: &ApplyOptions,
    ) -> Result<ApplyReport, ApplyError> {
        // Kinds a CRD of this batch defines: (group, kind) → CRD name.
        let crd_kinds: BTreeMap<(String, String), String> = manifests
            .iter()
            .filter(|m| m.object["kind"] == "CustomResourceDefinition")
            .filter_map(|m| {
                let spec = &m.object["spec"];
                Some((
                    (
                        spec["group"].as_str()?.to_string(),
                        spec.pointer("/names/kind")?.as_str()?.to_string(),
                    ),
                    m.object.pointer("/metadata/name")?.as_str()?.to_string(),
                ))
            })
            .collect();
        let mut first: Vec<Planned> = Vec::new();
        let mut rest: Vec<Planned> = Vec::new();
        let mut deferred: Vec<&Manifest> = Vec::new();
        for m in manifests {
            match self.plan_one(m, opts).await? {
                Some(p) => {
                    let early = matches!(
                        (
                            p.resolved.resource.group.as_str(),
                            p.resolved.resource.kind.as_str()
                        ),
                        ("", "Namespace") | ("apiextensions.k8s.io", "CustomResourceDefinition")
                    );
                    if early { first.push(p) } else { rest.push(p) }
                }
                None => {
                    let api_version = m.object["apiVersion"].as_str().unwrap_or_default();
                    let kind = m.object["kind"].as_str().unwrap_or_default();
                    let group = group_version(api_version).0.to_string();
                    if crd_kinds.contains_key(&(group, kind.to_string())) {
                        deferred.push(m);
                    } else {
                        return Err(ApplyError::UnknownKind {
                            object: Box::new(ObjectRef::of(&m.object).expect("parsed")),
                            origin: m.origin.clone(),
                            kind: kind.into(),
                            api_version: api_version.into(),
                        });
                    }
                }
            }
        }
        let mut report = ApplyReport::default();
        let live = self.live_index(first.iter().chain(&rest), opts).await?;
        first.sort_by_key(|p| kind_rank(&p.oref.kind));
        report
            .objects
            .extend(self.apply_group(first.clone(), &live, opts).await?);

        // CRDs of this batch must be Established before their objects can be applied.
        let crds: Vec<&Planned> = first
            .iter()
            .filter(|p| p.resolved.resource.kind == "CustomResourceDefinition")
            .collect();
        if !crds.is_empty() {
            let resolved = crds[0].resolved.clone();
            let names: Vec<String> = crds.iter().map(|p| p.oref.name.clone()).collect();
            wait::crds_established(self, &resolved, &names, opts.crd_timeout).await?;
            for p in &crds {
                let spec = &p.object["spec"];
                let group = spec["group"].as_str().unwrap_or_default();
                for v in spec["versions"].as_array().into_iter().flatten() {
                    if let Some(name) = v["name"].as_str() {
                        self.discovery.invalidate(&format!("{group}/{name}"));
                    }
                }
            }
        }
        let mut late = Vec::new();
        for m in deferred {
            match self.plan_one(m, opts).await? {
                Some(p) => late.push(p),
                None => {
                    let api_version = m.object["apiVersion"].as_str().unwrap_or_default();
                    return Err(ApplyError::UnknownKind {
                        object: Box::new(ObjectRef::of(&m.object).expect("parsed")),
                        origin: m.origin.clone(),
                        kind: m.object["kind"].as_str().unwrap_or_default().into(),
                        api_version: api_version.into(),
                    });
                }
            }
        }
        let live_late = self.live_index(late.iter(), opts).await?;
        rest.extend(late);
        let live: BTreeMap<ObjectRef, Value> = live.into_iter().chain(live_late).collect();
        // Kind by kind in Argo CD's order; objects of one kind at once.
        let mut by_rank: BTreeMap<(usize, String), Vec<Planned>> = BTreeMap::new();
        for p in rest {
            by_rank
                .entry((kind_rank(&p.oref.kind), p.oref.kind.clone()))
                .or_default()
                .push(p);
        }
        for (_, group) in by_rank {
            report
                .objects
                .extend(self.apply_group(group, &live, opts).await?);
        }
        Ok(report)
    }

    /// Apply one object whose live state the caller already knows from a watch — `Some(None)`:
    /// there is no such object; `Some(Some(v))`: it is `v` — so no GET precedes the write (the
    /// sync engine's first sync of 1,000 objects is then 1,000 requests, not 2,000). `None`
    /// reads it as [`Applier::apply`] does. Namespaces and CRDs go through [`Applier::apply`]
    /// (a CRD must be Established before anything uses it).
    pub async fn apply_known(
        &self,
        m: &Manifest,
        live: Option<Option<Value>>,
        opts: &ApplyOptions,
    ) -> Result<ApplyReport, ApplyError> {
        let early = matches!(
            m.object["kind"].as_str(),
            Some("Namespace" | "CustomResourceDefinition")
        );
        if early {
            return self.apply(std::slice::from_ref(m), opts).await;
        }
        let Some(p) = self.plan_one(m, opts).await? else {
            // Not served: `apply` explains why, or applies it after its CRD.
            return self.apply(std::slice::from_ref(m), opts).await;
        };
        let applied = self.apply_one(p, live, opts).await?;
        Ok(ApplyReport {
            objects: vec![applied],
        })
    }

    /// Live objects of the planned kinds: one LIST per kind with the live selector, else nothing
    /// (each object is then read with a GET).
    async fn live_index<'a>(
        &self,
        planned: impl Iterator<Item = &'a Planned>,
        opts: &ApplyOptions,
    ) -> Result<BTreeMap<ObjectRef, Value>, ApplyError> {
        let Some(selector) = &opts.live_selector else {
            return Ok(BTreeMap::new());
        };
        let mut kinds: BTreeMap<String, Resolved> = BTreeMap::new();
        for p in planned {
            kinds
                .entry(format!(
                    "{}/{}",
                    p.resolved.resource.api_version, p.resolved.resource.kind
                ))
                .or_insert_with(|| p.resolved.clone());
        }
        let mut out = BTreeMap::new();
        let list_futures: Vec<_> = kinds
            .into_values()
            .map(|r| async move {
                let api = self.api(&r, "");
                let lp = ListParams::default().labels(selector);
                let list = retry(&self.backoff, || api.list(&lp)).await;
                (r, list)
            })
            .collect();
        let lists = futures::stream::iter(list_futures)
            .buffer_unordered(opts.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        for (r, list) in lists {
            let list = list.map_err(|e| ApplyError::Api {
                action: format!("list `{}`", r.resource.plural),
                message: describe(&e),
            })?;
            for item in list.items {
                let mut v = serde_json::to_value(&item).expect("objects serialize");
                v["apiVersion"] = Value::String(r.resource.api_version.clone());
                v["kind"] = Value::String(r.resource.kind.clone());
                if let Some(oref) = ObjectRef::of(&v) {
                    out.insert(oref, v);
                }
            }
        }
        // An empty entry per planned kind marks "listed": absent means it does not exist.
        Ok(out)
    }

    async fn apply_group(
        &self,
        group: Vec<Planned>,
        live: &BTreeMap<ObjectRef, Value>,
        opts: &ApplyOptions,
    ) -> Result<Vec<Applied>, ApplyError> {
        let apply_futures: Vec<_> = group
            .into_iter()
            .map(|p| {
                let known = if opts.live_selector.is_some() {
                    Some(live.get(&p.oref).cloned())
                } else {
                    None
                };
                async move { self.apply_one(p, known, opts).await }
            })
            .collect();
        let results: Vec<Result<Applied, ApplyError>> = futures::stream::iter(apply_futures)
            .buffered(opts.concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn get_live(&self, p: &Planned) -> Result<Option<Value>, ApplyError> {
        let api = self.api(&p.resolved, &p.oref.namespace);
        match retry(&self.backoff, || api.get_opt(&p.oref.name)).await {
            Ok(o) => Ok(o.map(|o| to_value(&o, &p.resolved))),
            Err(e) => Err(object_error(p, &e)),
        }
    }

    /// Send a write for `oref`, retried as [`ApplyOptions::admission`] says.
    async fn write<T, F, Fut>(
        &self,
        opts: &ApplyOptions,
        oref: &ObjectRef,
        op: F,
    ) -> Result<T, ::kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ::kube::Error>>,
    {
        let Some(a) = &opts.admission else {
            return retry(&self.backoff, op).await;
        };
        let mut waited = false;
        let out = crate::cluster::kube::retry_until(
            &self.backoff,
            a.deadline,
            |w| {
                waited = true;
                let text = w.waiting_text();
                a.waiting.set(oref, &text);
                a.waiting.notice(&format!("{oref}: {text}"));
            },
            op,
        )
        .await;
        if waited && out.is_ok() {
            a.waiting.done(oref);
        }
        out
    }

    /// Apply one object unless it already matches.
    async fn apply_one(
        &self,
        p: Planned,
        known: Option<Option<Value>>,
        opts: &ApplyOptions,
    ) -> Result<Applied, ApplyError> {
        let live = match known {
            Some(l) => l,
            None => self.get_live(&p).await?,
        };
        let api = self.api(&p.resolved, &p.oref.namespace);
        let obj: DynamicObject =
            serde_json::from_value(p.object.clone()).map_err(|e| ApplyError::Object {
                object: Box::new(p.oref.clone()),
                origin: p.origin.clone(),
                message: e.to_string(),
                code: None,
            })?;
        let patch = Patch::Apply(&obj);
        if let Some(live) = &live {
            if diff::is_subset(&p.object, live) {
                return Ok(applied(p, Change::Unchanged, live.clone()));
            }
            // The server may normalise values (quantities, defaults inside lists): ask it what
            // an apply would produce before writing.
            let params = PatchParams::apply(&opts.field_manager).dry_run();
            let preview = self
                .write(opts, &p.oref, || api.patch(&p.oref.name, &params, &patch))
                .await;
            if let Ok(preview) = preview {
                let preview = to_value(&preview, &p.resolved);
                if diff::comparable(&preview) == diff::comparable(live) {
                    return Ok(applied(p, Change::Unchanged, live.clone()));
                }
            }
        }
        let params = PatchParams::apply(&opts.field_manager);
        let result = self
            .write(opts, &p.oref, || api.patch(&p.oref.name, &params, &patch))
            .await;
        let change = if live.is_some() {
            Change::Configured
        } else {
            Change::Created
        };
        match result {
            Ok(out) => Ok(applied(p.clone(), change, to_value(&out, &p.resolved))),
            Err(e) if status_code(&e) == Some(409) => {
                let ours = opts.force_conflicts
                    || live
                        .as_ref()
                        .is_some_and(|l| owned_by(l, &opts.ownership, &opts.field_manager));
                if !ours {
                    return Err(ApplyError::Conflict {
                        object: Box::new(p.oref.clone()),
                        message: describe(&e),
                    });
                }
                // The object is ours: someone changed fields homelab sets (e.g. `kubectl edit`).
                tracing::debug!(object = %p.oref, "taking back fields changed by another manager");
                let forced = PatchParams::apply(&opts.field_manager).force();
                let out = self
                    .write(opts, &p.oref, || api.patch(&p.oref.name, &forced, &patch))
                    .await
                    .map_err(|e| object_error(&p, &e))?;
                Ok(applied(p.clone(), change, to_value(&out, &p.resolved)))
            }
            Err(e) => Err(object_error(&p, &e)),
        }
    }

    /// Delete live objects the scope claims and `keep` does not hold. Returns what was deleted
    /// and what was kept with a reason.
    pub async fn prune(
        &self,
        keep: &BTreeSet<ObjectRef>,
        scope: &PruneScope<'_>,
    ) -> Result<PruneReport, ApplyError> {
        let kinds = self.discovery.all().await.map_err(|e| ApplyError::Api {
            action: "discover the cluster's kinds".into(),
            message: describe(&e),
        })?;
        let kinds: Vec<Resolved> = kinds
            .into_iter()
            .filter(|k| {
                k.verbs.iter().any(|v| v == "list")
                    && k.verbs.iter().any(|v| v == "delete")
                    && !matches!(k.resource.kind.as_str(), "Event" | "Endpoints")
            })
            .collect();
        // Collected first: a stream over a borrowing closure trips rustc's higher-ranked
        // lifetime check when the caller's future must be `Send` (the `up` pipeline's are).
        let list_futures: Vec<_> = kinds
            .iter()
            .map(|r| async move {
                let api = self.api(r, "");
                let lp = ListParams::default().labels(scope.selector);
                (r, retry(&self.backoff, || api.list(&lp)).await)
            })
            .collect();
        let lists = futures::stream::iter(list_futures)
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        let mut candidates: Vec<(Resolved, ObjectRef, Value)> = Vec::new();
        for (r, list) in lists {
            let Some(list) = visible(r, list)? else {
                continue;
            };
            for item in list.items {
                let v = to_value(&item, r);
                let Some(oref) = ObjectRef::of(&v) else {
                    continue;
                };
                let has_owner = v
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                let deleting = v.pointer("/metadata/deletionTimestamp").is_some();
                if keep.contains(&oref) || has_owner || deleting || !(scope.owns)(&v) {
                    continue;
                }
                candidates.push((r.clone(), oref, v));
            }
        }
        // Reverse apply order: workloads before their config, namespaces and CRDs last.
        candidates.sort_by_key(|(_, o, _)| {
            let last = matches!(o.kind.as_str(), "Namespace" | "CustomResourceDefinition");
            (last, std::cmp::Reverse(kind_rank(&o.kind)), o.clone())
        });
        let mut report = PruneReport::default();
        // The TLS Secrets of pruned Ingresses, which cert-manager issued for them and leaves
        // behind (see `is_issued_certificate`).
        let mut issued: Vec<ObjectRef> = Vec::new();
        for (r, oref, v) in candidates {
            if oref.kind == "Ingress" {
                for t in v
                    .pointer("/spec/tls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(name) = t["secretName"].as_str() {
                        issued.push(ObjectRef {
                            group: String::new(),
                            kind: "Secret".into(),
                            namespace: oref.namespace.clone(),
                            name: name.to_string(),
                        });
                    }
                }
            }
            if (oref.kind == "Namespace" || oref.kind == "CustomResourceDefinition")
                && let Some(foreign) = self.foreign_content(&kinds, &oref, &v, scope).await?
            {
                report.kept.push((oref, foreign));
                continue;
            }
            let api = self.api(&r, &oref.namespace);
            delete_in_background(&self.backoff, &api, &oref).await?;
            report.deleted.push(oref);
        }
        let secrets = kinds
            .iter()
            .find(|k| k.resource.group.is_empty() && k.resource.kind == "Secret");
        for oref in issued {
            let Some(r) = secrets else { break };
            if keep.contains(&oref) {
                continue;
            }
            let api = self.api(r, &oref.namespace);
            let live = match retry(&self.backoff, || api.get_opt(&oref.name)).await {
                Ok(Some(o)) => to_value(&o, r),
                Ok(None) => continue,
                Err(e) if matches!(status_code(&e), Some(403..=405)) => continue,
                Err(e) => {
                    return Err(ApplyError::Api {
                        action: format!("read {oref}"),
                        message: describe(&e),
                    });
                }
            };
            if !is_issued_certificate(&live) || (scope.owns)(&live) {
                continue;
            }
            delete_in_background(&self.backoff, &api, &oref).await?;
            report.deleted.push(oref);
        }
        Ok(report)
    }

    /// Whether a Namespace or CRD about to be pruned still holds objects the scope does not claim
    /// (deleting it would delete them too). Returns a description of one such object.
    async fn foreign_content(
        &self,
        kinds: &[Resolved],
        oref: &ObjectRef,
        obj: &Value,
        scope: &PruneScope<'_>,
    ) -> Result<Option<String>, ApplyError> {
        let targets: Vec<(Resolved, String)> = if oref.kind == "Namespace" {
            kinds
                .iter()
                .filter(|k| k.namespaced)
                .map(|k| (k.clone(), oref.name.clone()))
                .collect()
        } else {
            let group = obj
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let kind = obj
                .pointer("/spec/names/kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            kinds
                .iter()
                .filter(|k| k.resource.group == group && k.resource.kind == kind)
                .map(|k| (k.clone(), String::new()))
                .collect()
        };
        for (r, ns) in targets {
            let api = self.api(&r, &ns);
            let lp = ListParams::default();
            let Some(list) = visible(&r, retry(&self.backoff, || api.list(&lp)).await)? else {
                continue;
            };
            for item in list.items {
                let v = to_value(&item, &r);
                if (scope.owns)(&v)
                    || is_system_object(&v)
                    || is_issued_certificate(&v)
                    || is_lease(&v)
                {
                    continue;
                }
                let has_owner = v
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                if has_owner {
                    continue;
                }
                if let Some(o) = ObjectRef::of(&v) {
                    return Ok(Some(format!("it holds {o}, which is not ours")));
                }
            }
        }
        Ok(None)
    }
}

/// Delete `oref` in the background (its dependents are the garbage collector's); already gone
/// is as good.
async fn delete_in_background(
    backoff: &Backoff,
    api: &Api<DynamicObject>,
    oref: &ObjectRef,
) -> Result<(), ApplyError> {
    let dp = DeleteParams::background();
    match retry(backoff, || api.delete(&oref.name, &dp)).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(ApplyError::Api {
            action: format!("delete {oref}"),
            message: describe(&e),
        }),
    }
}

/// A list's answer: `None` for a kind we may not list (RBAC) or that vanished meanwhile, which
/// holds nothing of ours we can see; any other failure is the error.
fn visible(
    r: &Resolved,
    list: Result<::kube::api::ObjectList<DynamicObject>, ::kube::Error>,
) -> Result<Option<::kube::api::ObjectList<DynamicObject>>, ApplyError> {
    match list {
        Ok(l) => Ok(Some(l)),
        Err(e) if matches!(status_code(&e), Some(403..=405)) => Ok(None),
        Err(e) => Err(ApplyError::Api {
            action: format!("list `{}`", r.resource.plural),
            message: describe(&e),
        }),
    }
}

/// A Secret cert-manager wrote for a Certificate (it annotates every Secret it issues with
/// `cert-manager.io/certificate-name`, cert-manager v1.21 pkg/apis/certmanager/v1 `types.go`
/// `CertificateNameKey`): the lab's Ingresses asked for it, cert-manager leaves it behind when the
/// Certificate goes (no owner reference unless `--enable-certificate-owner-ref`), and it can be
/// issued again, so it does not keep the lab's namespace alive (the lab page's
/// `homelab-system/lab-page-tls` when a lab switches to the argocd stack).
fn is_issued_certificate(v: &Value) -> bool {
    v["kind"] == "Secret"
        && v.pointer("/metadata/annotations/cert-manager.io~1certificate-name")
            .is_some()
}

/// A Lease is the leader-election record of the namespace's workloads (homelab's engine keeps
/// `homelab-system/homelab-sync-engine`): whether the namespace holds something foreign is
/// decided by those workloads, not by their lock.
fn is_lease(v: &Value) -> bool {
    v["kind"] == "Lease"
}

/// Objects the cluster itself puts in every namespace.
fn is_system_object(v: &Value) -> bool {
    let kind = v["kind"].as_str().unwrap_or_default();
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    matches!(
        (kind, name),
        ("ConfigMap", "kube-root-ca.crt") | ("ServiceAccount", "default")
    ) || matches!(kind, "Event" | "Endpoints" | "EndpointSlice")
        || v["type"] == "kubernetes.io/service-account-token"
}

fn owned_by(live: &Value, labels: &BTreeMap<String, String>, manager: &str) -> bool {
    let has_labels = !labels.is_empty()
        && labels.iter().all(|(k, v)| {
            live.pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                == Some(v.as_str())
        });
    let applied_before = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|m| {
            m.iter()
                .any(|e| e["manager"] == manager && e["operation"] == "Apply")
        });
    has_labels && applied_before
}

fn applied(p: Planned, change: Change, live: Value) -> Applied {
    Applied {
        object: p.oref,
        resolved: p.resolved,
        change,
        live,
    }
}

fn object_error(p: &Planned, e: &::kube::Error) -> ApplyError {
    ApplyError::Object {
        object: Box::new(p.oref.clone()),
        origin: p.origin.clone(),
        message: describe(e),
        code: status_code(e),
    }
}

/// A dynamic object as a JSON value with apiVersion/kind filled in (list items may lack them).
pub fn to_value(obj: &DynamicObject, r: &Resolved) -> Value {
    let mut v = serde_json::to_value(obj).expect("objects serialize");
    v["apiVersion"] = Value::String(r.resource.api_version.clone());
    v["kind"] = Value::String(r.resource.kind.clone());
    v
}

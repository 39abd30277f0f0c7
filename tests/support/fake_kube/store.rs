//! The fake API server's state: resource types (built-in and from CRDs), objects, server-side
//! apply with per-manager field ownership, selectors, and the watch history.
//!
//! Everything here is synchronous and runs under one mutex held by the server; the HTTP layer
//! (`server.rs`) turns requests into calls on [`Store`] and results into responses.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// A served resource type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// Has a `/status` subresource (status is ignored on the main endpoint).
    pub status: bool,
    /// Defined by a CRD (list items carry apiVersion/kind, as the real server does for CRs).
    pub custom: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, as the real server names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    status: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced,
        status,
        custom: false,
    }
}

/// The built-in types the fake serves (a subset of Kubernetes 1.36; see the module doc in `mod.rs`):
/// group, version, kind, plural, namespaced, has a `status` subresource.
#[rustfmt::skip]
const BUILTIN: &[(&str, &str, &str, &str, bool, bool)] = &[
    ("", "v1", "Namespace", "namespaces", false, true),
    ("", "v1", "ConfigMap", "configmaps", true, false),
    ("", "v1", "Secret", "secrets", true, false),
    ("", "v1", "Service", "services", true, true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true, false),
    ("", "v1", "Pod", "pods", true, true),
    ("", "v1", "Node", "nodes", false, true),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, true),
    ("", "v1", "PersistentVolume", "persistentvolumes", false, true),
    ("", "v1", "Event", "events", true, false),
    ("", "v1", "Endpoints", "endpoints", true, false),
    ("", "v1", "ResourceQuota", "resourcequotas", true, true),
    ("", "v1", "LimitRange", "limitranges", true, false),
    ("apps", "v1", "Deployment", "deployments", true, true),
    ("apps", "v1", "StatefulSet", "statefulsets", true, true),
    ("apps", "v1", "DaemonSet", "daemonsets", true, true),
    ("apps", "v1", "ReplicaSet", "replicasets", true, true),
    ("batch", "v1", "Job", "jobs", true, true),
    ("batch", "v1", "CronJob", "cronjobs", true, true),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true, true),
    ("networking.k8s.io", "v1", "IngressClass", "ingressclasses", false, false),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, false),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, false),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true, false),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, false),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, false),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, false),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses", false, false),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, true),
    ("coordination.k8s.io", "v1", "Lease", "leases", true, false),
    ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", false, false),
    ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", false, false),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", false, true),
    ("apiregistration.k8s.io", "v1", "APIService", "apiservices", false, true),
];

/// [`BUILTIN`] as resource types.
pub fn builtin_types() -> Vec<ResourceType> {
    BUILTIN
        .iter()
        .map(|&(group, version, kind, plural, namespaced, status)| {
            builtin(group, version, kind, plural, namespaced, status)
        })
        .collect()
}

/// Object identity in the store: group, plural, namespace ("" when cluster-scoped), name.
pub type Key = (String, String, String, String);

/// The finalizer of a foreground deletion (`metav1.FinalizerDeleteDependents`).
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer of an orphaning deletion (`metav1.FinalizerOrphanDependents`).
pub const ORPHAN_FINALIZER: &str = "orphan";

/// An API error as the real server would send it.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub causes: Vec<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            causes: Vec::new(),
        }
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified()),
        )
    }

    pub fn namespace_not_found(ns: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
    }

    pub fn invalid(rt: &ResourceType, name: &str, field: &str, detail: &str) -> ApiError {
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!(
                "{}.{} \"{name}\" is invalid: {field}: {detail}",
                rt.kind, rt.group
            )
            .replace(". \"", " \""),
        );
        e.causes
            .push(json!({"reason": "FieldValueInvalid", "message": detail, "field": field}));
        e
    }

    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": {"causes": self.causes},
            "code": self.code,
        })
    }
}

/// A write recorded for watchers.
#[derive(Clone, Debug)]
pub struct WatchEvent {
    pub rv: u64,
    pub kind: &'static str,
    pub key: Key,
    pub object: Value,
}

/// Field ownership: manager → set of field paths it manages.
type Owners = BTreeMap<String, (String, BTreeSet<Vec<String>>)>;

/// The whole cluster state.
pub struct Store {
    pub types: Vec<ResourceType>,
    pub objects: BTreeMap<Key, Value>,
    owners: BTreeMap<Key, Owners>,
    pub rv: u64,
    /// Watch history, oldest first; watches from a resourceVersion older than `floor` get 410.
    pub history: Vec<WatchEvent>,
    pub floor: u64,
    uid: u64,
    cluster_ip: u32,
    /// How many history entries to keep before compacting.
    pub history_limit: usize,
}

/// How an apply or a patch should behave.
pub struct WriteOptions<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub dry_run: bool,
    pub subresource_status: bool,
}

impl Store {
    pub fn new() -> Store {
        let mut s = Store {
            types: builtin_types(),
            objects: BTreeMap::new(),
            owners: BTreeMap::new(),
            rv: 1000,
            history: Vec::new(),
            floor: 0,
            uid: 0,
            cluster_ip: 10,
            history_limit: 50_000,
        };
        for ns in ["default", "kube-system", "kube-public"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            s.create_internal(obj).expect("system namespaces");
        }
        s
    }

    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    pub fn type_for(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        let (g, v) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.types
            .iter()
            .find(|t| t.group == g && t.version == v && t.kind == kind)
            .cloned()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, kind: &'static str, key: Key, object: Value) {
        let rv = self.rv;
        self.history.push(WatchEvent {
            rv,
            kind,
            key,
            object,
        });
        if self.history.len() > self.history_limit {
            let cut = self.history.len() - self.history_limit / 2;
            self.floor = self.history[cut - 1].rv;
            self.history.drain(..cut);
        }
    }

    /// Forget the watch history, so any watch from an older resourceVersion gets 410 Gone.
    pub fn compact(&mut self) {
        self.floor = self.rv;
        self.history.clear();
    }

    pub fn namespace_active(&self, ns: &str) -> bool {
        self.objects
            .get(&(String::new(), "namespaces".into(), String::new(), ns.into()))
            .is_some_and(|n| n.pointer("/metadata/deletionTimestamp").is_none())
    }

    /// The object as served: with managedFields rendered from the ownership sets.
    pub fn render(&self, key: &Key) -> Option<Value> {
        let mut obj = self.objects.get(key)?.clone();
        if let Some(owners) = self.owners.get(key) {
            let api_version = obj["apiVersion"].clone();
            let entries: Vec<Value> = owners
                .iter()
                .map(|(manager, (op, fields))| {
                    json!({
                        "manager": manager,
                        "operation": op,
                        "apiVersion": api_version,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": fields_v1(fields),
                    })
                })
                .collect();
            obj["metadata"]["managedFields"] = Value::Array(entries);
        }
        Some(obj)
    }

    /// Objects of a type, optionally in one namespace, filtered by selectors; sorted by key.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &Selector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.0 == rt.group && k.1 == rt.plural && ns.is_none_or(|n| k.2 == n))
            .filter(|(_, o)| labels.matches(o) && fields.matches(o))
            .filter_map(|(k, _)| self.render(k))
            .collect()
    }

    pub fn key_of(rt: &ResourceType, ns: &str, name: &str) -> Key {
        (
            rt.group.clone(),
            rt.plural.clone(),
            if rt.namespaced {
                ns.into()
            } else {
                String::new()
            },
            name.into(),
        )
    }

    /// Insert or replace an object directly (test hooks, simulated controllers); emits a watch event.
    pub fn put(&mut self, mut obj: Value, manager: &str) -> Result<Value, ApiError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let rt = self.type_for(&api_version, &kind).ok_or_else(|| {
            ApiError::new(404, "NotFound", format!("no type {api_version} {kind}"))
        })?;
        let ns = str_at(&obj, "/metadata/namespace");
        let name = str_at(&obj, "/metadata/name");
        let key = Self::key_of(&rt, &ns, &name);
        match self.objects.get(&key).cloned() {
            None => {
                if rt.namespaced && !self.namespace_active(&ns) {
                    return Err(ApiError::namespace_not_found(&ns));
                }
                strip_server_fields(&mut obj);
                let fields = leaf_paths(&obj);
                self.owners
                    .entry(key.clone())
                    .or_default()
                    .insert(manager.into(), ("Update".into(), fields));
                self.create_internal(obj)
            }
            Some(live) => {
                strip_server_fields(&mut obj);
                let mut merged = obj;
                merged["metadata"] = merge_metadata(&live["metadata"], &merged["metadata"]);
                self.commit_update(&rt, key, live, merged)
            }
        }
    }

    fn create_internal(&mut self, mut obj: Value) -> Result<Value, ApiError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let rt = self
            .type_for(&api_version, &kind)
            .expect("type checked by caller");
        let ns = str_at(&obj, "/metadata/namespace");
        let name = str_at(&obj, "/metadata/name");
        let key = Self::key_of(&rt, &ns, &name);
        self.uid += 1;
        let rv = self.next_rv();
        {
            let meta = obj["metadata"].as_object_mut().expect("metadata");
            if !rt.namespaced {
                meta.remove("namespace");
            }
            meta.insert(
                "uid".into(),
                json!(format!("00000000-0000-4000-8000-{:012}", self.uid)),
            );
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
            meta.insert("generation".into(), json!(1));
        }
        self.default_on_create(&rt, &mut obj);
        fold_string_data(&mut obj);
        self.objects.insert(key.clone(), obj);
        let rendered = self.render(&key).expect("just inserted");
        self.record("ADDED", key, rendered.clone());
        self.after_write(&rt, &rendered);
        Ok(rendered)
    }

    fn default_on_create(&mut self, rt: &ResourceType, obj: &mut Value) {
        match (rt.group.as_str(), rt.kind.as_str()) {
            ("", "Namespace") => obj["status"] = json!({"phase": "Active"}),
            ("", "Service") => {
                let spec = obj["spec"].as_object_mut();
                if let Some(spec) = spec {
                    spec.entry("type").or_insert(json!("ClusterIP"));
                    if !spec.contains_key("clusterIP") && spec["type"] != "ExternalName" {
                        self.cluster_ip += 1;
                        let ip = format!("10.152.183.{}", self.cluster_ip % 250 + 2);
                        spec.insert("clusterIP".into(), json!(ip));
                        spec.insert("clusterIPs".into(), json!([ip]));
                    }
                }
            }
            ("", "PersistentVolumeClaim") => obj["status"] = json!({"phase": "Pending"}),
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                obj["status"] =
                    json!({"conditions": [], "acceptedNames": obj["spec"]["names"].clone()});
            }
            _ => {}
        }
    }

    fn after_write(&mut self, rt: &ResourceType, obj: &Value) {
        if rt.kind == "CustomResourceDefinition" {
            self.register_crd(obj);
        }
    }

    /// Serve the CRD's versions (the server establishes it separately, see [`Store::establish`]).
    fn register_crd(&mut self, crd: &Value) {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default().to_string();
        let plural = str_at(spec, "/names/plural");
        let kind = str_at(spec, "/names/kind");
        let namespaced = spec["scope"] == "Namespaced";
        self.types
            .retain(|t| !(t.custom && t.group == group && t.plural == plural));
        for v in spec["versions"].as_array().into_iter().flatten() {
            if v["served"] == false {
                continue;
            }
            self.types.push(ResourceType {
                group: group.clone(),
                version: v["name"].as_str().unwrap_or_default().into(),
                kind: kind.clone(),
                plural: plural.clone(),
                namespaced,
                status: v.pointer("/subresources/status").is_some(),
                custom: true,
            });
        }
    }

    /// Set the CRD's NamesAccepted and Established conditions (what the apiextensions controller does).
    pub fn establish(&mut self, name: &str) {
        let key = (
            "apiextensions.k8s.io".to_string(),
            "customresourcedefinitions".to_string(),
            String::new(),
            name.to_string(),
        );
        if let Some(mut crd) = self.objects.get(&key).cloned() {
            let now = now_rfc3339();
            crd["status"]["conditions"] = json!([
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "lastTransitionTime": now},
            ]);
            let live = self.objects[&key].clone();
            let rt = self
                .type_for("apiextensions.k8s.io/v1", "CustomResourceDefinition")
                .unwrap();
            let _ = self.commit_update(&rt, key, live, crd);
        }
    }

    /// Whether a CRD-defined type is established (served in discovery).
    pub fn is_established(&self, rt: &ResourceType) -> bool {
        if !rt.custom {
            return true;
        }
        self.objects
            .get(&(
                "apiextensions.k8s.io".into(),
                "customresourcedefinitions".into(),
                String::new(),
                format!("{}.{}", rt.plural, rt.group),
            ))
            .is_some_and(|crd| condition_true(crd, "Established"))
    }

    /// Store a new version of an existing object: bump resourceVersion (and generation when
    /// anything but metadata and status changed), unless nothing changed at all.
    fn commit_update(
        &mut self,
        rt: &ResourceType,
        key: Key,
        live: Value,
        mut new: Value,
    ) -> Result<Value, ApiError> {
        if new == live {
            return Ok(self.render(&key).expect("exists"));
        }
        // Like the API server: an object being deleted goes once its last finalizer is removed.
        let finalizers_left = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if new.pointer("/metadata/deletionTimestamp").is_some() && !finalizers_left {
            let rendered = self.render(&key).expect("exists");
            self.remove(&key, "Background");
            return Ok(rendered);
        }
        let spec_changed = {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("metadata");
                    m.remove("status");
                }
                v
            };
            strip(&live) != strip(&new)
        };
        let rv = self.next_rv();
        let generation = live
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        new["metadata"]["generation"] = json!(if spec_changed {
            generation + 1
        } else {
            generation
        });
        fold_string_data(&mut new);
        self.objects.insert(key.clone(), new);
        let rendered = self.render(&key).expect("exists");
        self.record("MODIFIED", key, rendered.clone());
        self.after_write(rt, &rendered);
        Ok(rendered)
    }

    /// Server-side apply (PATCH with application/apply-patch+yaml) on the main resource or on `/status`.
    pub fn apply(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut applied: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        if !applied.is_object() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the apply patch is not an object",
            ));
        }
        check_identity(rt, ns, name, &applied)?;
        let key = Self::key_of(rt, ns, name);
        if rt.namespaced && !self.namespace_active(ns) {
            return Err(ApiError::namespace_not_found(ns));
        }
        let existing = self.objects.get(&key).cloned();
        if existing.is_none() && opts.subresource_status {
            return Err(ApiError::not_found(rt, name));
        }
        if let Some(live) = &existing {
            check_resource_version(rt, name, live, &applied)?;
        }
        strip_server_fields(&mut applied);
        drop_nulls(&mut applied);
        // Which part of the object this endpoint writes.
        let scope_status = opts.subresource_status;
        if rt.status
            && let Some(m) = applied.as_object_mut()
        {
            if scope_status {
                let status = m.remove("status");
                m.retain(|k, _| k == "apiVersion" || k == "kind" || k == "metadata");
                if let Some(s) = status {
                    m.insert("status".into(), s);
                }
            } else {
                m.remove("status");
            }
        }
        let mut new_fields = leaf_paths(&applied);
        new_fields.retain(|p| !is_identity(p));
        let base = existing.clone().unwrap_or_else(
            || json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": name}}),
        );
        let mut owners = self.owners.get(&key).cloned().unwrap_or_default();
        // Conflicts: a field another manager owns, set here to a different value.
        let mut conflicts: Vec<(String, String)> = Vec::new();
        for (other, (_, fields)) in owners.iter_mut() {
            if other == opts.manager {
                continue;
            }
            let clashing: Vec<Vec<String>> = fields
                .iter()
                .filter(|f| {
                    new_fields.iter().any(|p| {
                        (p.starts_with(f) || f.starts_with(p))
                            && get_path(&base, p) != get_path(&applied, p)
                    })
                })
                .cloned()
                .collect();
            for f in clashing {
                if opts.force {
                    fields.remove(&f);
                } else {
                    conflicts.push((other.clone(), dotted(&f)));
                }
            }
        }
        owners.retain(|_, (_, f)| !f.is_empty());
        if !conflicts.is_empty() {
            let mut e = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    conflicts
                        .iter()
                        .map(|(m, f)| format!(
                            "conflict with \"{m}\" using {}: {f}",
                            rt.api_version()
                        ))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            );
            e.causes = conflicts
                .iter()
                .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {}", rt.api_version()), "field": f}))
                .collect();
            return Err(e);
        }
        // Fields this manager set before and no longer sets are removed, unless someone else owns them.
        let mut merged = base.clone();
        if let Some((_, old)) = owners.get(opts.manager) {
            for p in old.difference(&new_fields) {
                let shared = owners.iter().any(|(m, (_, f))| {
                    m != opts.manager && f.iter().any(|g| g.starts_with(p) || p.starts_with(g))
                });
                if !shared {
                    remove_path(&mut merged, p);
                }
            }
        }
        merge_into(&mut merged, &applied);
        owners.insert(opts.manager.into(), ("Apply".into(), new_fields));
        match existing {
            None => {
                validate(rt, name, None, &merged)?;
                if opts.dry_run {
                    let mut preview = merged;
                    preview["metadata"]["uid"] = json!("dry-run");
                    return Ok(preview);
                }
                self.owners.insert(key, owners);
                if rt.namespaced {
                    merged["metadata"]["namespace"] = json!(ns);
                }
                self.create_internal(merged)
            }
            Some(live) => {
                validate(rt, name, Some(&live), &merged)?;
                if opts.dry_run {
                    let saved = self.owners.insert(key.clone(), owners);
                    let mut preview = merged.clone();
                    if preview != live {
                        let generation = live
                            .pointer("/metadata/generation")
                            .and_then(Value::as_i64)
                            .unwrap_or(1);
                        preview["metadata"]["generation"] = json!(generation);
                    }
                    let mut tmp = self.render(&key).unwrap_or(preview.clone());
                    tmp["metadata"]["managedFields"] = self.render_owners(&key, &preview);
                    match saved {
                        Some(s) => self.owners.insert(key, s),
                        None => self.owners.remove(&key),
                    };
                    preview["metadata"]["managedFields"] = tmp["metadata"]["managedFields"].clone();
                    return Ok(preview);
                }
                self.owners.insert(key.clone(), owners);
                self.commit_update(rt, key, live, merged)
            }
        }
    }

    fn render_owners(&self, key: &Key, obj: &Value) -> Value {
        let api_version = obj["apiVersion"].clone();
        Value::Array(
            self.owners
                .get(key)
                .into_iter()
                .flatten()
                .map(|(m, (op, f))| json!({"manager": m, "operation": op, "apiVersion": api_version, "fieldsType": "FieldsV1", "fieldsV1": fields_v1(f)}))
                .collect(),
        )
    }

    /// POST: create; 409 AlreadyExists when present.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        manager: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let name = str_at(&obj, "/metadata/name");
        if name.is_empty() {
            return Err(ApiError::invalid(
                rt,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
        check_identity(rt, ns, &name, &obj)?;
        if rt.namespaced && !self.namespace_active(ns) {
            return Err(ApiError::namespace_not_found(ns));
        }
        let key = Self::key_of(rt, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.qualified()),
            ));
        }
        strip_server_fields(&mut obj);
        if rt.status
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        validate(rt, &name, None, &obj)?;
        if dry_run {
            return Ok(obj);
        }
        if rt.namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        }
        let mut fields = leaf_paths(&obj);
        fields.retain(|p| !is_identity(p));
        self.owners
            .entry(key)
            .or_default()
            .insert(manager.into(), ("Update".into(), fields));
        self.create_internal(obj)
    }

    /// JSON merge patch (RFC 7386) on the main resource or `/status`.
    pub fn merge_patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        patch: &Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let key = Self::key_of(rt, ns, name);
        let live = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let mut patch = patch.clone();
        if rt.status
            && let Some(m) = patch.as_object_mut()
        {
            if opts.subresource_status {
                m.retain(|k, _| k == "status" || k == "metadata");
            } else {
                m.remove("status");
            }
        }
        let mut new = live.clone();
        json_merge(&mut new, &patch);
        validate(rt, name, Some(&live), &new)?;
        if opts.dry_run {
            return Ok(new);
        }
        let mut fields = leaf_paths(&patch);
        fields.retain(|p| !is_identity(p));
        let owners = self.owners.entry(key.clone()).or_default();
        let entry = owners
            .entry(opts.manager.into())
            .or_insert_with(|| ("Update".into(), BTreeSet::new()));
        entry.1.extend(fields);
        self.commit_update(rt, key, live, new)
    }

    /// PUT: replace the main resource or `/status`.
    pub fn replace(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_identity(rt, ns, name, &obj)?;
        let key = Self::key_of(rt, ns, name);
        let live = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        check_resource_version(rt, name, &live, &obj)?;
        strip_server_fields(&mut obj);
        let mut new = if opts.subresource_status {
            let mut n = live.clone();
            n["status"] = obj["status"].clone();
            n
        } else {
            let mut n = obj;
            if rt.status {
                n["status"] = live["status"].clone();
            }
            n["metadata"] = merge_metadata(&live["metadata"], &n["metadata"]);
            n
        };
        drop_nulls(&mut new);
        validate(rt, name, Some(&live), &new)?;
        if opts.dry_run {
            return Ok(new);
        }
        self.commit_update(rt, key, live, new)
    }

    /// DELETE, as kube-apiserver's generic registry does it (kubernetes
    /// `staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go`, `Delete`,
    /// `deletionFinalizersForGarbageCollection`, `updateForGracefulDeletionAndFinalizers`,
    /// `markAsDeleting`; Kubernetes 1.27–1.36):
    /// - the propagation policy becomes a finalizer the garbage collector owns: `Foreground` →
    ///   `foregroundDeletion`, `Orphan` → `orphan`, `Background` → neither (both are removed);
    ///   without a policy the object's own GC finalizer is kept, else background (the default of
    ///   every type served here);
    /// - an object left with any finalizer is only marked: `deletionTimestamp` (kept when already
    ///   set), `deletionGracePeriodSeconds: 0`, `generation` + 1 on the first mark, and the
    ///   answer is the object itself; it goes when its last finalizer is removed (see
    ///   [`Store::commit_update`]), which for the GC's finalizers is the garbage collector's work
    ///   ([`super::gc`]);
    /// - an object without finalizers goes now and the answer is a `Status`; its dependents are
    ///   left to the garbage collector, never deleted in the same request.
    ///
    /// `propagation` is `""` when the request named none. Pods' graceful deletion is not modelled
    /// (the fake runs no kubelet): they go like any other object.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        propagation: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = Self::key_of(rt, ns, name);
        let live = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if !matches!(propagation, "" | "Foreground" | "Background" | "Orphan") {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{propagation}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                ),
            ));
        }
        let existing = finalizers(&live);
        // The first GC finalizer on the object decides when the request names no policy.
        let own_policy = existing.iter().find_map(|f| match f.as_str() {
            ORPHAN_FINALIZER => Some("Orphan"),
            FOREGROUND_FINALIZER => Some("Foreground"),
            _ => None,
        });
        let policy = match propagation {
            "" => own_policy.unwrap_or("Background"),
            p => p,
        };
        let mut wanted: Vec<String> = existing
            .iter()
            .filter(|f| !matches!(f.as_str(), ORPHAN_FINALIZER | FOREGROUND_FINALIZER))
            .cloned()
            .collect();
        match policy {
            "Orphan" => wanted.push(ORPHAN_FINALIZER.into()),
            "Foreground" => wanted.push(FOREGROUND_FINALIZER.into()),
            _ => {}
        }
        if wanted.is_empty() {
            if dry_run {
                return Ok(self.render(&key).expect("exists"));
            }
            self.remove(&key, policy);
            return Ok(
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": live["metadata"]["uid"]}}),
            );
        }
        let mut marked = live.clone();
        marked["metadata"]["finalizers"] = json!(wanted);
        if live.pointer("/metadata/deletionTimestamp").is_none() {
            marked["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            if let Some(g) = live.pointer("/metadata/generation").and_then(Value::as_i64)
                && g > 0
            {
                marked["metadata"]["generation"] = json!(g + 1);
            }
        }
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if dry_run {
            return Ok(marked);
        }
        self.commit_marked(rt, key, live, marked)
    }

    /// Store an object as the deletion path marked it (its generation as given).
    fn commit_marked(
        &mut self,
        rt: &ResourceType,
        key: Key,
        live: Value,
        mut new: Value,
    ) -> Result<Value, ApiError> {
        if new == live {
            return Ok(self.render(&key).expect("exists"));
        }
        let rv = self.next_rv();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(key.clone(), new);
        let rendered = self.render(&key).expect("exists");
        self.record("MODIFIED", key, rendered.clone());
        self.after_write(rt, &rendered);
        Ok(rendered)
    }

    /// Remove an object now (its last finalizer is gone, or it had none), with a namespace's
    /// content and a CRD's objects and served types. Its dependents by ownerReference are not
    /// touched here: as on a real cluster, the garbage collector ([`super::gc`]) deletes or
    /// orphans them a moment later. `_propagation` is what the deletion asked for; the GC reads
    /// what it needs from the objects themselves.
    pub fn remove(&mut self, key: &Key, _propagation: &str) {
        let Some(obj) = self.render(key) else { return };
        self.objects.remove(key);
        self.owners.remove(key);
        self.next_rv();
        let mut gone = obj.clone();
        gone["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record("DELETED", key.clone(), gone);
        if key.1 == "namespaces" && key.0.is_empty() {
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.2 == key.3)
                .cloned()
                .collect();
            for k in inside {
                self.remove(&k, "Background");
            }
        }
        if key.1 == "customresourcedefinitions" {
            let group = str_at(&obj, "/spec/group");
            let plural = str_at(&obj, "/spec/names/plural");
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.0 == group && k.1 == plural)
                .cloned()
                .collect();
            for k in inside {
                self.remove(&k, "Background");
            }
            self.types
                .retain(|t| !(t.custom && t.group == group && t.plural == plural));
        }
    }

    /// The served type of a stored object's key.
    pub fn find_type_by_key(&self, key: &Key) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == key.0 && t.plural == key.1)
            .cloned()
    }

    /// Key of an object held in `obj` (for test hooks).
    pub fn key_for(&self, obj: &Value) -> Option<(ResourceType, Key)> {
        let rt = self.type_for(obj["apiVersion"].as_str()?, obj["kind"].as_str()?)?;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = obj.pointer("/metadata/name").and_then(Value::as_str)?;
        let key = Self::key_of(&rt, ns, name);
        Some((rt, key))
    }

    /// Write an object as a controller's update does (the garbage collector's metadata changes):
    /// it goes when that leaves it deleting without finalizers.
    pub fn gc_write(&mut self, key: &Key, new: Value) -> Option<Value> {
        let live = self.objects.get(key)?.clone();
        let rt = self.find_type_by_key(key)?;
        self.commit_update(&rt, key.clone(), live, new).ok()
    }

    /// Set `status` directly (test hooks and simulated controllers); emits MODIFIED.
    pub fn set_status(&mut self, key: &Key, status: Value) -> Option<Value> {
        let live = self.objects.get(key)?.clone();
        let rt = self.find_type_by_key(key)?;
        let mut new = live.clone();
        new["status"] = status;
        self.commit_update(&rt, key.clone(), live, new).ok()
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

/// The body must name the same kind, name and namespace as the URL.
/// A write that names a `resourceVersion` must name the live one, or it is a 409 Conflict
/// (kubernetes v1.24 `staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go`,
/// `OptimisticLockErrorMsg`); a write without one is not checked.
fn check_resource_version(
    rt: &ResourceType,
    name: &str,
    live: &Value,
    sent: &Value,
) -> Result<(), ApiError> {
    let version = |v: &Value| {
        v.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match version(sent) {
        Some(want) if version(live).as_deref() != Some(want.as_str()) => Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                rt.qualified()
            ),
        )),
        _ => Ok(()),
    }
}

fn check_identity(rt: &ResourceType, ns: &str, name: &str, obj: &Value) -> Result<(), ApiError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(ApiError::new(
            400,
            "BadRequest",
            "Object 'Kind' is missing in the request body",
        ));
    }
    if kind != rt.kind || api_version != rt.api_version() {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                rt.api_version()
            ),
        ));
    }
    let body_name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            ),
        ));
    }
    if let Some(body_ns) = obj.pointer("/metadata/namespace").and_then(Value::as_str)
        && rt.namespaced
        && !body_ns.is_empty()
        && body_ns != ns
    {
        return Err(ApiError::new(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// What an update may not do to an object's deletion state, as kubernetes/apimachinery
/// `pkg/api/validation/objectmeta.go` (`ValidateObjectMetaUpdate`, `ValidateNoNewFinalizers`;
/// Kubernetes 1.27–1.36) checks it: `deletionTimestamp` changes only through DELETE, and once it
/// is set no new finalizer may be added (removing them is how deletion completes).
fn validate_deletion_fields(
    rt: &ResourceType,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    let was = old.pointer("/metadata/deletionTimestamp");
    if new.pointer("/metadata/deletionTimestamp") != was {
        return Err(ApiError::invalid(
            rt,
            name,
            "metadata.deletionTimestamp",
            "Invalid value: field is immutable; may only be changed via deletion",
        ));
    }
    if was.is_some() {
        let before = finalizers(old);
        let added: Vec<String> = finalizers(new)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            let mut e = ApiError::invalid(
                rt,
                name,
                "metadata.finalizers",
                &format!(
                    "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    added
                        .iter()
                        .map(|f| format!("{f:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            e.causes[0]["reason"] = json!("FieldValueForbidden");
            return Err(e);
        }
    }
    Ok(())
}

/// An object's `metadata.finalizers`.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// The validation the real server does for the calls homelab makes (see the module doc).
fn validate(
    rt: &ResourceType,
    name: &str,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    let label_names = matches!(rt.kind.as_str(), "Namespace" | "Service");
    let name_ok = if label_names {
        is_dns1123_subdomain(name) && !name.contains('.') && name.len() <= 63
    } else if rt.kind == "ClusterRole"
        || rt.kind == "ClusterRoleBinding"
        || rt.kind == "Role"
        || rt.kind == "RoleBinding"
    {
        !name.is_empty() && !name.contains('/') && !name.contains('%')
    } else {
        is_dns1123_subdomain(name)
    };
    if let Some(old) = old {
        validate_deletion_fields(rt, name, old, new)?;
    }
    if !name_ok {
        return Err(ApiError::invalid(
            rt,
            name,
            "metadata.name",
            &format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.'"
            ),
        ));
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet") => {
            let selector = new.pointer("/spec/selector");
            let Some(selector) = selector else {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "spec.selector",
                    "Required value",
                ));
            };
            let labels = new
                .pointer("/spec/template/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            let sel = Selector::from_label_selector(selector);
            if sel.is_empty() {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "spec.selector",
                    "Invalid value: empty selector is invalid for deployment",
                ));
            }
            if !sel.matches(&json!({"metadata": {"labels": labels}})) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "spec.template.metadata.labels",
                    "Invalid value: `selector` does not match template `labels`",
                ));
            }
            if let Some(old) = old
                && old.pointer("/spec/selector") != Some(selector)
            {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "spec.selector",
                    "Invalid value: field is immutable",
                ));
            }
            if new
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .is_none_or(|c| c.is_empty())
            {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "spec.template.spec.containers",
                    "Required value",
                ));
            }
        }
        ("", "Service") => {
            if let Some(old) = old {
                let before = old
                    .pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let after = new
                    .pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !before.is_empty() && before != after {
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        "spec.clusterIPs[0]",
                        "Invalid value: field is immutable",
                    ));
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(old) = old {
                let strip = |v: &Value| {
                    let mut s = v.pointer("/spec").cloned().unwrap_or(json!({}));
                    if let Some(r) = s.pointer_mut("/resources").and_then(Value::as_object_mut) {
                        r.remove("requests");
                    }
                    s
                };
                if strip(old) != strip(new) {
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        "spec",
                        "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                    ));
                }
            }
        }
        ("batch", "Job") => {
            if let Some(old) = old
                && old.pointer("/spec/template") != new.pointer("/spec/template")
            {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "spec.template",
                    "Invalid value: field is immutable",
                ));
            }
        }
        ("", "Secret" | "ConfigMap") => {
            if let Some(old) = old
                && old["immutable"] == true
                && (old["data"] != new["data"] || old.get("stringData").is_some())
            {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "data",
                    "Forbidden: field is immutable when `immutable` is set",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn strip_server_fields(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(k);
        }
    }
}

fn merge_metadata(live: &Value, new: &Value) -> Value {
    let mut m = new.clone();
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "namespace",
        "name",
        "deletionTimestamp",
    ] {
        if let Some(v) = live.get(k) {
            m[k] = v.clone();
        }
    }
    m
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            for x in m.values_mut() {
                drop_nulls(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn is_identity(p: &[String]) -> bool {
    matches!(p.first().map(String::as_str), Some("apiVersion" | "kind"))
        || (p.first().map(String::as_str) == Some("metadata")
            && matches!(p.get(1).map(String::as_str), Some("name" | "namespace")))
}

/// A list is associative (merged by key) when every element is an object with a `name`.
fn assoc_key(item: &Value) -> Option<String> {
    item.get("name")
        .and_then(Value::as_str)
        .map(|n| format!("k:{{\"name\":\"{n}\"}}"))
}

fn is_assoc(list: &[Value]) -> bool {
    !list.is_empty() && list.iter().all(|i| assoc_key(i).is_some())
}

/// Every leaf field path of an applied object: scalars, empty maps, atomic lists, and the
/// elements of associative lists (by `name`).
pub fn leaf_paths(v: &Value) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn walk(v: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                path.push(k.clone());
                walk(x, path, out);
                path.pop();
            }
        }
        Value::Array(a) if is_assoc(a) => {
            for item in a {
                path.push(assoc_key(item).expect("assoc"));
                walk(item, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn dotted(p: &[String]) -> String {
    p.iter()
        .map(|s| {
            if let Some(k) = s.strip_prefix("k:") {
                format!("[{k}]")
            } else {
                format!(".{s}")
            }
        })
        .collect()
}

fn get_path<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in p {
        cur = if seg.starts_with("k:") {
            cur.as_array()?
                .iter()
                .find(|i| assoc_key(i).as_deref() == Some(seg.as_str()))?
        } else {
            cur.get(seg)?
        };
    }
    Some(cur)
}

fn remove_path(v: &mut Value, p: &[String]) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        let next = if seg.starts_with("k:") {
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|i| assoc_key(i).as_deref() == Some(seg.as_str()))
            })
        } else {
            cur.get_mut(seg)
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if last.starts_with("k:") {
        if let Some(a) = cur.as_array_mut() {
            a.retain(|i| assoc_key(i).as_deref() != Some(last.as_str()));
        }
    } else if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// Apply semantics for merging: maps merge, associative lists merge by name, other lists replace.
fn merge_into(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) => merge_into(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p)) if is_assoc(p) && (b.is_empty() || is_assoc(b)) => {
            let mut out: Vec<Value> = Vec::new();
            for item in p {
                let key = assoc_key(item);
                let mut merged = b
                    .iter()
                    .find(|i| assoc_key(i) == key)
                    .cloned()
                    .unwrap_or(json!({}));
                merge_into(&mut merged, item);
                out.push(merged);
            }
            for item in b.iter() {
                if !p.iter().any(|x| assoc_key(x) == assoc_key(item)) {
                    out.push(item.clone());
                }
            }
            *b = out;
        }
        (b, p) => *b = p.clone(),
    }
}

/// RFC 7386 JSON merge patch.
pub fn json_merge(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        let t = target.as_object_mut().expect("object");
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                json_merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// Field sets in the `FieldsV1` tree form (`{"f:metadata": {"f:labels": {"f:app": {}}}}`).
fn fields_v1(paths: &BTreeSet<Vec<String>>) -> Value {
    let mut root = json!({});
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            let key = if seg.starts_with("k:") {
                seg.clone()
            } else {
                format!("f:{seg}")
            };
            cur = cur
                .as_object_mut()
                .expect("map")
                .entry(key)
                .or_insert(json!({}));
        }
    }
    root
}

pub fn condition_true(obj: &Value, kind: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm) keeps the fake free of a date crate.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An equality- and set-based label selector (`a=b,c!=d,e in (f,g),h,!i`).
#[derive(Clone, Debug, Default)]
pub struct Selector {
    reqs: Vec<(String, &'static str, Vec<String>)>,
}

impl Selector {
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut cur = String::new();
        for c in s.chars() {
            match c {
                '(' => {
                    depth += 1;
                    cur.push(c)
                }
                ')' => {
                    depth -= 1;
                    cur.push(c)
                }
                ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        parts.push(cur);
        for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            if let Some((k, v)) = p.split_once("!=") {
                reqs.push((k.trim().into(), "!=", vec![v.trim().into()]));
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                reqs.push((k.trim().into(), "=", vec![v.trim().into()]));
            } else if let Some((k, v)) = p.split_once(" notin ") {
                reqs.push((k.trim().into(), "notin", set_values(v)?));
            } else if let Some((k, v)) = p.split_once(" in ") {
                reqs.push((k.trim().into(), "in", set_values(v)?));
            } else if let Some(k) = p.strip_prefix('!') {
                reqs.push((k.trim().into(), "!exists", vec![]));
            } else {
                reqs.push((p.into(), "exists", vec![]));
            }
        }
        Ok(Selector { reqs })
    }

    /// From a `LabelSelector` object (`matchLabels` + `matchExpressions`).
    pub fn from_label_selector(v: &Value) -> Selector {
        let mut reqs = Vec::new();
        for (k, val) in v
            .get("matchLabels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            reqs.push((
                k.clone(),
                "=",
                vec![val.as_str().unwrap_or_default().to_string()],
            ));
        }
        for e in v
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e["key"].as_str().unwrap_or_default().to_string();
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(String::from))
                .collect();
            let op = match e["operator"].as_str().unwrap_or_default() {
                "In" => "in",
                "NotIn" => "notin",
                "Exists" => "exists",
                _ => "!exists",
            };
            reqs.push((key, op, values));
        }
        Selector { reqs }
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|(k, op, vals)| match *op {
            "=" => get(k) == Some(vals[0].as_str()),
            "!=" => get(k) != Some(vals[0].as_str()),
            "in" => get(k).is_some_and(|v| vals.iter().any(|x| x == v)),
            "notin" => get(k).is_none_or(|v| !vals.iter().any(|x| x == v)),
            "exists" => get(k).is_some(),
            _ => get(k).is_none(),
        })
    }
}

fn set_values(v: &str) -> Result<Vec<String>, String> {
    let v = v.trim();
    let inner = v
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: {v}"))?;
    Ok(inner.split(',').map(|s| s.trim().to_string()).collect())
}

/// A field selector: `path=value` / `path!=value` pairs on dotted paths (`metadata.name`,
/// `type`, `involvedObject.name`, …).
#[derive(Clone, Debug, Default)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> FieldSelector {
        let reqs = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                if let Some((k, v)) = p.split_once("!=") {
                    Some((k.to_string(), false, v.to_string()))
                } else {
                    p.split_once("==")
                        .or_else(|| p.split_once('='))
                        .map(|(k, v)| (k.to_string(), true, v.to_string()))
                }
            })
            .collect();
        FieldSelector { reqs }
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(path, eq, want)| {
            let ptr = format!("/{}", path.replace('.', "/"));
            let have = obj.pointer(&ptr).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            let have = have.unwrap_or_default();
            (have == *want) == *eq
        })
    }
}

/// A Secret's `stringData` is write-only, as on the real API server: its entries are stored
/// base64-encoded in `data` (overriding keys there) and the field itself is never returned.
fn fold_string_data(obj: &mut Value) {
    if obj["apiVersion"] != "v1" || obj["kind"] != "Secret" {
        return;
    }
    let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    use base64::Engine as _;
    let data = obj
        .as_object_mut()
        .expect("objects are maps")
        .entry("data")
        .or_insert_with(|| json!({}));
    if let Some(map) = data.as_object_mut() {
        for (k, v) in plain {
            let text = v.as_str().unwrap_or_default();
            map.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

/// The string at `pointer` in `obj`, "" when absent.
fn str_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

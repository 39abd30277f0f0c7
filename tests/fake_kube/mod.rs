//! A fake Kubernetes API server at the HTTP level, so kube-rs's real client code (discovery,
//! server-side apply, list/watch, retries) runs against it. Test binaries use it with
//! `mod fake_kube;`; the benchmark includes it by path.
//!
//! Architecture invariant: it must reject what the real API server rejects for the calls homelab
//! makes. A fake that accepts what the real system rejects is a bug.
//!
//! # Implemented (Kubernetes 1.36 semantics, for the calls homelab makes)
//! - Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{g}`, `/apis/{g}/{v}`, with the
//!   namespaced flag, verbs and `status`/`log` subresources; unknown paths → 404.
//! - Built-in types listed in `store::builtin_types` (core, apps, batch, networking, rbac,
//!   storage, policy, discovery, coordination, admissionregistration, apiextensions,
//!   apiregistration).
//! - get, list (label selectors with `=`, `==`, `!=`, `in`, `notin`, exists, `!`; field selectors
//!   `path=value` / `path!=value` on any dotted path; `limit` + `continue` paging; built-in list
//!   items without apiVersion/kind, CR list items with them) and watch (`resourceVersion` replay
//!   from a kept history, `410 Gone` as an ERROR event for versions older than the kept window,
//!   `timeoutSeconds`, selectors).
//! - Server-side apply (`PATCH` with `application/apply-patch+yaml`): `fieldManager` required,
//!   create-on-apply, per-manager field ownership rendered as `managedFields` (FieldsV1), removal
//!   of fields a manager stopped applying, conflicts → 409 with `FieldManagerConflict` causes
//!   unless `force=true` (which transfers ownership), `dryRun=All`, resourceVersion
//!   preconditions, a no-op apply does not bump resourceVersion or generation.
//!   Lists whose elements all have `name` are merged by name (containers, env, ports, volumes);
//!   other lists are atomic.
//! - create (POST, 409 AlreadyExists), replace (PUT), JSON merge patch (and strategic merge patch
//!   treated as a JSON merge patch), delete (finalizers keep the object with a deletionTimestamp;
//!   dependents by ownerReference are deleted, or orphaned with `propagationPolicy: Orphan`;
//!   deleting a namespace deletes its content at once; deleting a CRD removes its objects and
//!   its type), deletecollection.
//! - Status subresources: `status` is ignored on the main endpoint of types that have one, and
//!   `/status` writes only status. `generation` bumps when anything but metadata/status changes.
//! - CRDs: applying one serves its types; they appear in discovery once the CRD is Established,
//!   which the fake sets after a configurable delay (like the apiextensions controller).
//! - Rejections: a namespaced object in a missing namespace (404 `namespaces "x" not found`),
//!   apply without `fieldManager` (400), unknown resource (404), body kind/name/namespace not
//!   matching the URL (400), invalid names (422), immutable fields: Service `spec.clusterIP`,
//!   Deployment/StatefulSet/DaemonSet `spec.selector`, PVC `spec` (except requests), Job
//!   `spec.template`, immutable Secret/ConfigMap data; workloads without a selector, with a
//!   selector that does not match the template labels, or without containers (422).
//! - Defaults: Service `type` and `clusterIP`, Namespace `status.phase`, PVC `Pending`.
//! - Pod logs (`pods/{name}/log` with `container`, `previous`, `tailLines`) from test hooks.
//! - Fault injection: status codes (429 with `Retry-After`, 503, …), dropped connections, watch
//!   410 Gone; a request log with verb, path, object, dry-run, field manager and status code.
//! - Simulated controllers ([`Controllers`]), off by default: workloads become ready, Jobs
//!   complete, PVCs bind (except with a WaitForFirstConsumer class), Services get a ready
//!   EndpointSlice, Certificates and (Cluster)Issuers become Ready, Ingress TLS secrets appear —
//!   after a delay per object, so readiness tests are deterministic.
//!
//! # Not implemented
//! Authentication/authorization (any client is admin), admission webhooks, OpenAPI schema
//! validation of fields, defaulting beyond the list above, JSON patch, strategic-merge
//! semantics, aggregated discovery, protobuf, table output, `sendInitialEvents`/bookmarks,
//! namespace `Terminating` phase (content is deleted at once), foreground deletion ordering,
//! label-selector transitions reported as DELETED to watchers, field ownership of list items by
//! keys other than `name`, pods/exec/attach/port-forward, server-side garbage collection of
//! objects whose owner never existed.

#![allow(dead_code)]

pub mod server;
pub mod store;
pub mod test_cluster;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use store::{Store, WatchEvent, condition_true};

/// One request the fake answered.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub at: Instant,
    pub method: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `discovery`, `unknown`.
    pub verb: String,
    pub path: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub subresource: Option<String>,
    pub dry_run: bool,
    /// A server-side apply patch.
    pub apply: bool,
    pub field_manager: Option<String>,
    pub user_agent: String,
    /// Status code sent (0 when the connection was dropped).
    pub code: u16,
    /// Answered by an injected fault.
    pub fault: bool,
}

impl RequestRecord {
    /// A request that changes the cluster (not dry-run, not answered by a fault).
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) && !self.dry_run
            && !self.fault
    }
}

/// What an injected fault does.
#[derive(Clone, Debug)]
pub enum FaultAction {
    /// Answer with this status (and a `Retry-After` header in seconds).
    Status { code: u16, retry_after: Option<u64> },
    /// Close the connection without an answer.
    Drop,
    /// Answer a watch with an ERROR event carrying 410 Gone.
    Gone,
}

/// A fault for the next `times` requests that match.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Only this method (any when `None`).
    pub method: Option<Method>,
    /// Only this verb (`patch`, `watch`, …; any when `None`).
    pub verb: Option<String>,
    /// Only paths containing this.
    pub path_contains: String,
    pub action: FaultAction,
    pub times: usize,
}

impl Fault {
    pub fn new(action: FaultAction, times: usize) -> Fault {
        Fault {
            method: None,
            verb: None,
            path_contains: String::new(),
            action,
            times,
        }
    }
    pub fn verb(mut self, verb: &str) -> Fault {
        self.verb = Some(verb.into());
        self
    }
    pub fn path(mut self, s: &str) -> Fault {
        self.path_contains = s.into();
        self
    }
}

/// Simulated controllers: how long objects take to become ready.
#[derive(Clone, Debug, Default)]
pub struct Controllers {
    pub enabled: bool,
    /// Delay before an object becomes ready.
    pub ready_after: Duration,
    /// Per object name overrides.
    pub per_name: BTreeMap<String, Duration>,
    /// Objects (by name) that never become ready.
    pub never: BTreeSet<String>,
}

/// When a simulated controller made an object ready.
#[derive(Clone, Debug)]
pub struct ReadyEvent {
    pub at: Instant,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

pub struct Inner {
    pub store: Mutex<Store>,
    pub events: broadcast::Sender<WatchEvent>,
    published: Mutex<u64>,
    pub log: Mutex<Vec<RequestRecord>>,
    faults: Mutex<Vec<Fault>>,
    /// (namespace, pod, container, previous) → log text.
    pub logs: Mutex<HashMap<(String, String, String, bool), String>>,
    pub shutdown: Arc<Notify>,
    controllers: Mutex<Controllers>,
    crd_delay: Mutex<Duration>,
    ready: Mutex<Vec<ReadyEvent>>,
}

impl Inner {
    /// Send history entries not yet broadcast to watchers, in order.
    pub fn publish(&self) {
        let store = self.store.lock().unwrap();
        let mut published = self.published.lock().unwrap();
        for e in store.history.iter().filter(|e| e.rv > *published) {
            let _ = self.events.send(e.clone());
        }
        *published = (*published).max(store.rv);
    }

    fn take_fault(&self, method: &Method, path: &str, verb: &str) -> Option<FaultAction> {
        let mut faults = self.faults.lock().unwrap();
        let i = faults.iter().position(|f| {
            f.times > 0
                && f.method.as_ref().is_none_or(|m| m == method)
                && f.verb.as_deref().is_none_or(|v| v == verb)
                && path.contains(&f.path_contains)
        })?;
        faults[i].times -= 1;
        let action = faults[i].action.clone();
        if faults[i].times == 0 {
            faults.remove(i);
        }
        Some(action)
    }
}

/// A running fake API server on 127.0.0.1.
pub struct FakeKube {
    pub inner: Arc<Inner>,
    addr: SocketAddr,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.inner.shutdown.notify_waiters();
    }
}

impl FakeKube {
    /// Start on an ephemeral port on the current tokio runtime.
    pub async fn start() -> FakeKube {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (events, _) = broadcast::channel(65_536);
        let inner = Arc::new(Inner {
            store: Mutex::new(Store::new()),
            events,
            published: Mutex::new(0),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            logs: Mutex::new(HashMap::new()),
            shutdown: Arc::new(Notify::new()),
            controllers: Mutex::new(Controllers::default()),
            crd_delay: Mutex::new(Duration::from_millis(30)),
            ready: Mutex::new(Vec::new()),
        });
        inner.publish();
        let accept = inner.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                    _ = accept.shutdown.notified() => return,
                };
                let inner = accept.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| server::handle(inner.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let ctl = inner.clone();
        let mut rx = inner.events.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = ctl.shutdown.notified() => return,
                    ev = rx.recv() => match ev {
                        Ok(e) => react(&ctl, e),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    }
                }
            }
        });
        FakeKube { inner, addr }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Write a kubeconfig whose context `fake` points here.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("fake-kubeconfig.yaml");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.log.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.inner.log.lock().unwrap().clear();
    }

    /// Requests by verb (faults excluded).
    pub fn verb_counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.inner.log.lock().unwrap().iter().filter(|r| !r.fault) {
            *out.entry(r.verb.clone()).or_default() += 1;
        }
        out
    }

    /// Requests that changed the cluster.
    pub fn writes(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(RequestRecord::is_write)
            .collect()
    }

    pub fn inject(&self, fault: Fault) {
        self.inner.faults.lock().unwrap().push(fault);
    }

    /// Faults not yet used.
    pub fn pending_faults(&self) -> usize {
        self.inner
            .faults
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.times)
            .sum()
    }

    /// An object as the server would return it.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.inner.store.lock().unwrap();
        let probe = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}});
        let (_, key) = store.key_for(&probe)?;
        store.render(&key)
    }

    /// Every object of a kind (any namespace).
    pub fn all(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let store = self.inner.store.lock().unwrap();
        let Some(rt) = store.type_for(api_version, kind) else {
            return Vec::new();
        };
        store.list(&rt, None, &Default::default(), &Default::default())
    }

    /// Create or replace an object directly, as another client (manager `test`) would.
    pub fn insert(&self, obj: Value) -> Value {
        let out = self
            .inner
            .store
            .lock()
            .unwrap()
            .put(obj, "test")
            .expect("insert");
        self.inner.publish();
        out
    }

    /// Set an object's status directly.
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) {
        let probe = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}});
        {
            let mut store = self.inner.store.lock().unwrap();
            let (_, key) = store.key_for(&probe).expect("known type");
            store.set_status(&key, status).expect("object exists");
        }
        self.inner.publish();
    }

    /// What `kubectl logs [--previous] -c container pod` returns.
    pub fn set_log(&self, namespace: &str, pod: &str, container: &str, previous: bool, text: &str) {
        self.inner.logs.lock().unwrap().insert(
            (namespace.into(), pod.into(), container.into(), previous),
            text.into(),
        );
    }

    /// Forget the watch history: every watch from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        self.inner.store.lock().unwrap().compact();
    }

    /// How long the fake takes to establish a CRD.
    pub fn set_crd_delay(&self, d: Duration) {
        *self.inner.crd_delay.lock().unwrap() = d;
    }

    /// Turn on simulated controllers.
    pub fn controllers(&self, c: Controllers) {
        *self.inner.controllers.lock().unwrap() = Controllers { enabled: true, ..c };
        // Objects already present are reconciled too.
        let existing: Vec<WatchEvent> = {
            let store = self.inner.store.lock().unwrap();
            store
                .objects
                .keys()
                .map(|k| WatchEvent {
                    rv: store.rv,
                    kind: "ADDED",
                    key: k.clone(),
                    object: store.render(k).unwrap(),
                })
                .collect()
        };
        for e in existing {
            react(&self.inner, e);
        }
    }

    /// When the simulated controllers made objects ready.
    pub fn ready_events(&self) -> Vec<ReadyEvent> {
        self.inner.ready.lock().unwrap().clone()
    }
}

fn mark_ready(inner: &Inner, kind: &str, ns: &str, name: &str) {
    inner.ready.lock().unwrap().push(ReadyEvent {
        at: Instant::now(),
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
    });
}

/// React to a watch event like the controllers of a real cluster would, after a delay.
fn react(inner: &Arc<Inner>, e: WatchEvent) {
    if e.kind == "DELETED" {
        return;
    }
    let obj = e.object;
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind == "CustomResourceDefinition" {
        if !condition_true(&obj, "Established") {
            let delay = *inner.crd_delay.lock().unwrap();
            let inner = inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                inner.store.lock().unwrap().establish(&name);
                inner.publish();
            });
        }
        return;
    }
    let cfg = inner.controllers.lock().unwrap().clone();
    if !cfg.enabled || cfg.never.contains(&name) {
        return;
    }
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let observed = obj
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let status: Option<Value> = match kind.as_str() {
        "Deployment" if observed != Some(generation) => Some(json!({
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
        })),
        "StatefulSet" if observed != Some(generation) => Some(json!({
            "observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
            "currentReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas,
            "currentRevision": format!("{name}-{generation}"), "updateRevision": format!("{name}-{generation}"),
        })),
        "DaemonSet" if observed != Some(generation) => Some(json!({
            "observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
            "numberReady": 1, "numberAvailable": 1, "updatedNumberScheduled": 1, "numberMisscheduled": 0,
        })),
        "Job" if !condition_true(&obj, "Complete") => Some(json!({
            "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}],
        })),
        "Certificate" | "ClusterIssuer" | "Issuer" if !condition_true(&obj, "Ready") => {
            Some(json!({
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}],
            }))
        }
        "PersistentVolumeClaim"
            if obj.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") =>
        {
            let class = obj
                .pointer("/spec/storageClassName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let wffc = {
                let store = inner.store.lock().unwrap();
                store
                    .objects
                    .get(&(
                        "storage.k8s.io".into(),
                        "storageclasses".into(),
                        String::new(),
                        class.into(),
                    ))
                    .is_some_and(|sc| sc["volumeBindingMode"] == "WaitForFirstConsumer")
            };
            if wffc {
                None
            } else {
                Some(json!({"phase": "Bound"}))
            }
        }
        _ => None,
    };
    let delay = cfg.per_name.get(&name).copied().unwrap_or(cfg.ready_after);
    let key_probe = obj.clone();
    let inner = inner.clone();
    match (kind.as_str(), status) {
        (_, Some(status)) => {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                {
                    let mut store = inner.store.lock().unwrap();
                    let Some((_, key)) = store.key_for(&key_probe) else {
                        return;
                    };
                    // Only if the object is still the generation we saw.
                    let current_gen = store
                        .objects
                        .get(&key)
                        .and_then(|o| o.pointer("/metadata/generation").and_then(Value::as_i64));
                    if current_gen != Some(generation) {
                        return;
                    }
                    store.set_status(&key, status);
                    if kind == "Certificate"
                        && let Some(secret) = key_probe
                            .pointer("/spec/secretName")
                            .and_then(Value::as_str)
                    {
                        let _ =
                            store.put(tls_secret(&ns, secret), "cert-manager-certificates-issuing");
                    }
                }
                mark_ready(&inner, &kind, &ns, &name);
                inner.publish();
            });
        }
        ("Service", None) => {
            let has_selector = obj
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty());
            if !has_selector {
                return;
            }
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let slice = json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("{name}-fake"), "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": ["10.1.0.10"], "conditions": {"ready": true}}],
                });
                {
                    let mut store = inner.store.lock().unwrap();
                    if store.objects.contains_key(&(
                        "discovery.k8s.io".into(),
                        "endpointslices".into(),
                        ns.clone(),
                        format!("{name}-fake"),
                    )) {
                        return;
                    }
                    let _ = store.put(slice, "endpointslice-controller");
                }
                mark_ready(&inner, "Service", &ns, &name);
                inner.publish();
            });
        }
        ("Ingress", None) => {
            let secrets: Vec<String> = obj
                .pointer("/spec/tls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| t["secretName"].as_str().map(String::from))
                .collect();
            if secrets.is_empty() {
                return;
            }
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                {
                    let mut store = inner.store.lock().unwrap();
                    for s in &secrets {
                        if !store.objects.contains_key(&(
                            String::new(),
                            "secrets".into(),
                            ns.clone(),
                            s.clone(),
                        )) {
                            let _ =
                                store.put(tls_secret(&ns, s), "cert-manager-certificates-issuing");
                        }
                    }
                }
                mark_ready(&inner, "Ingress", &ns, &name);
                inner.publish();
            });
        }
        _ => {}
    }
}

fn tls_secret(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": ns},
        "data": {"tls.crt": "ZmFrZQ==", "tls.key": "ZmFrZQ==", "ca.crt": "ZmFrZQ=="},
    })
}

//! A fake Kubernetes API server at the HTTP level, so kube-rs's real client code (discovery,
//! server-side apply, list/watch, retries) runs against it. The test binary has it in
//! `tests/support`; the benchmarks include it by path, beside the HTTP kit it listens, logs and
//! pages with (`super::http_kit`).
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
//!   treated as a JSON merge patch), delete as kube-apiserver's registry does it
//!   ([`store::Store::delete`]: `propagationPolicy: Foreground`/`Orphan` become the
//!   `foregroundDeletion`/`orphan` finalizers; any finalizer keeps the object, answered as itself,
//!   with `deletionTimestamp` and `deletionGracePeriodSeconds: 0` until the last one is removed;
//!   no new finalizer and no `deletionTimestamp` change by update; deleting a namespace deletes
//!   its content at once; deleting a CRD removes its objects and its type), deletecollection
//!   (not of Namespaces: 405, as kube-apiserver).
//! - The garbage collector ([`gc`], always on, [`FakeKube::set_gc_delay`] after each event):
//!   finishes foreground deletions once no blocking dependent remains, orphans dependents, and
//!   deletes dependents whose owners are gone (background cascading happens after the DELETE,
//!   never within it).
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
//! - Admission webhooks ([`admission`]): a write a Validating/MutatingWebhookConfiguration
//!   matches is refused with kube-apiserver's `500 InternalError` "failed calling webhook …"
//!   while the webhook cannot be called (its Service missing or without ready endpoints:
//!   "connection refused"; its `caBundle` empty: "x509: certificate signed by unknown
//!   authority"); mutating webhooks before the object's own checks, validating ones after; dry
//!   runs too. A webhook that can be called admits.
//! - Pod logs (`pods/{name}/log` with `container`, `previous`, `tailLines`) from test hooks; the
//!   container is chosen or refused as the API server does ([`pod_log`]).
//! - Pod exec (`pods/{name}/exec`, websocket `v5`/`v4.channel.k8s.io`, see [`exec`]), the command
//!   played by a test handler ([`FakeKube::on_exec`]).
//! - HTTPS with x509 client certificates as microk8s serves its API ([`tls`], [`Listen`]); the
//!   request log records the user (the certificate's common name, or the bearer token).
//! - Fault injection: status codes (429 with `Retry-After`, 503, …), dropped connections, watch
//!   410 Gone; a request log with verb, path, object, dry-run, field manager and status code.
//! - Simulated controllers ([`Controllers`], see [`controllers`]), off by default: workloads
//!   roll out (optionally with their ReplicaSets and Pods, gated by a test kubelet), Jobs
//!   complete, PVCs bind (a WaitForFirstConsumer claim once a pod uses it), Services get a ready
//!   EndpointSlice, cert-manager issues real certificates from a CA issuer's key pair (and
//!   ingress-shim turns annotated Ingresses into Certificates; its webhook writes its serving CA
//!   and cainjector injects it into the webhook configurations, later), NIC publishes Ingress
//!   status —
//!   after a delay per object, so readiness tests are deterministic.
//!
//! # Not implemented
//! Authentication/authorization (any client is admin), webhooks that answer and deny (see
//! [`admission`] for what else of admission is left out), OpenAPI schema
//! validation of fields, defaulting beyond the list above, JSON patch, strategic-merge
//! semantics, aggregated discovery, protobuf, table output, `sendInitialEvents`/bookmarks,
//! namespace `Terminating` phase (content is deleted at once), pods' graceful deletion (no
//! kubelet: a pod goes like any object), label-selector transitions reported as DELETED to
//! watchers, field ownership of list items by keys other than `name`, pods/attach/port-forward.

pub mod admission;
pub mod controllers;
pub mod exec;
pub mod gc;
pub mod pod_log;
pub mod server;
pub mod store;
pub mod test_cluster;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
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

use super::http_kit;
use http_kit::log::RequestLog;

pub use controllers::Controllers;
use controllers::react;
use store::{Store, WatchEvent};

/// One request the fake answered.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub at: Instant,
    pub method: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `exec`, `discovery`, `unknown`.
    pub verb: String,
    pub path: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    /// A server-side apply patch.
    pub apply: bool,
    pub field_manager: Option<String>,
    /// The `User-Agent` header, "" when the client sent none (as a real audit log shows it).
    pub user_agent: String,
    /// Who asked: the client certificate's common name (HTTPS), `token:<value>` for a bearer
    /// token, else `anonymous`.
    pub user: String,
    /// Status code sent (0 when the connection was dropped).
    pub code: u16,
    /// Answered by an injected fault.
    pub fault: bool,
}

impl RequestRecord {
    /// A request that changes the cluster (not dry-run, not answered by a fault); a command run
    /// in a pod counts, since it can change anything there.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection" | "exec"
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
    /// `times` answers with status `code` (and `Retry-After: <seconds>`).
    pub fn status(code: u16, retry_after: Option<u64>, times: usize) -> Fault {
        Fault::new(FaultAction::Status { code, retry_after }, times)
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

/// When a simulated controller made an object ready.
#[derive(Clone, Debug)]
pub struct ReadyEvent {
    pub at: Instant,
    pub kind: String,
    pub name: String,
}

pub struct Inner {
    pub store: Mutex<Store>,
    pub events: broadcast::Sender<WatchEvent>,
    published: Mutex<u64>,
    pub log: RequestLog<RequestRecord>,
    faults: Mutex<Vec<Fault>>,
    /// (namespace, pod, container, previous) → log text.
    pub logs: Mutex<HashMap<(String, String, String, bool), String>>,
    pub shutdown: Arc<Notify>,
    pub(crate) controllers: Mutex<Controllers>,
    pub(crate) crd_delay: Mutex<Duration>,
    /// How long the garbage collector ([`gc`]) takes to react to an event.
    pub(crate) gc_delay: Mutex<Duration>,
    /// A garbage-collector pass is scheduled and has not started.
    pub(crate) gc_pending: std::sync::atomic::AtomicBool,
    pub(crate) ready: Mutex<Vec<ReadyEvent>>,
    exec: Mutex<Option<exec::ExecHandler>>,
}

/// Serve HTTP/1.1 on one connection, upgrades (exec) included.
async fn serve_connection(
    inner: Arc<Inner>,
    stream: Box<dyn http_kit::tls::Io>,
    user: Option<PeerUser>,
) {
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if let Some(u) = &user {
            req.extensions_mut().insert(u.clone());
        }
        server::handle(inner.clone(), req)
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
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
    pki: Option<tls::ClusterPki>,
}

/// Where and how the fake listens.
#[derive(Clone)]
pub struct Listen {
    /// Address to bind (an ephemeral port).
    pub ip: std::net::IpAddr,
    /// HTTPS with client certificates (as microk8s serves its API); plain HTTP when `None`.
    pub tls: Option<tls::ClusterPki>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            ip: std::net::IpAddr::from([127, 0, 0, 1]),
            tls: None,
        }
    }
}

/// The user a TLS connection authenticated as (its client certificate's common name).
#[derive(Clone, Debug)]
pub struct PeerUser(pub String);

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.inner.shutdown.notify_waiters();
    }
}

impl FakeKube {
    /// Start on an ephemeral port of 127.0.0.1, plain HTTP, on the current tokio runtime.
    pub async fn start() -> FakeKube {
        FakeKube::start_with(Listen::default()).await
    }

    /// Start as `listen` says, on the current tokio runtime.
    pub async fn start_with(listen: Listen) -> FakeKube {
        let listener = tokio::net::TcpListener::bind((listen.ip, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (events, _) = broadcast::channel(65_536);
        let inner = Arc::new(Inner {
            store: Mutex::new(Store::new()),
            events,
            published: Mutex::new(0),
            log: RequestLog::default(),
            faults: Mutex::new(Vec::new()),
            logs: Mutex::new(HashMap::new()),
            shutdown: Arc::new(Notify::new()),
            controllers: Mutex::new(Controllers::default()),
            crd_delay: Mutex::new(Duration::from_millis(30)),
            gc_delay: Mutex::new(Duration::from_millis(30)),
            gc_pending: std::sync::atomic::AtomicBool::new(false),
            ready: Mutex::new(Vec::new()),
            exec: Mutex::new(None),
        });
        inner.publish();
        let accept = inner.clone();
        let tls_on = listen.tls.is_some();
        // With TLS, a client without a certificate the cluster CA signed fails the handshake.
        http_kit::tls::accept_loop(
            listener,
            listen.tls.as_ref().map(|p| p.acceptor()),
            inner.shutdown.clone(),
            move |conn| {
                let user = tls_on.then(|| {
                    PeerUser(
                        conn.peer_cert
                            .as_deref()
                            .and_then(tls::common_name)
                            .unwrap_or_default(),
                    )
                });
                serve_connection(accept.clone(), conn.io, user)
            },
        );
        let ctl = inner.clone();
        let mut rx = inner.events.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = ctl.shutdown.notified() => return,
                    ev = rx.recv() => match ev {
                        Ok(e) => {
                            gc::observe(&ctl, &e);
                            react(&ctl, e);
                        }
                        // Missed events: the garbage collector looks at everything again.
                        Err(broadcast::error::RecvError::Lagged(_)) => gc::schedule(&ctl),
                        Err(_) => return,
                    }
                }
            }
        });
        FakeKube {
            inner,
            addr,
            pki: listen.tls,
        }
    }

    /// `http://127.0.0.1:<port>`, or `https://<ip>:<port>` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster CA and certificates, when it serves HTTPS.
    pub fn pki(&self) -> Option<&tls::ClusterPki> {
        self.pki.as_ref()
    }

    /// Run `handler` for every exec into a pod (`pods/{name}/exec`); without one, an exec is
    /// answered as a container without the command would (exit code 127).
    pub fn on_exec(&self, handler: exec::ExecHandler) {
        *self.inner.exec.lock().unwrap() = Some(handler);
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
        self.inner.log.all()
    }

    pub fn clear_requests(&self) {
        self.inner.log.clear();
    }

    /// Requests by verb (faults excluded).
    pub fn verb_counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.inner.log.lock().iter().filter(|r| !r.fault) {
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

    /// How long the garbage collector takes to react (default 30 ms): foreground and orphaning
    /// deletions finish, and dependents of removed owners go, that long after the event.
    pub fn set_gc_delay(&self, d: Duration) {
        *self.inner.gc_delay.lock().unwrap() = d;
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

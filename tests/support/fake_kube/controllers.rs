//! Simulated controllers: what a real cluster's controllers do to the objects homelab applies,
//! after a configurable delay per object, so readiness tests are deterministic.
//!
//! - Workloads (Deployment, StatefulSet, DaemonSet) roll out: status as their controllers write
//!   it, and with [`Controllers::pods`] their ReplicaSet and Pods (Running and Ready, labelled
//!   from the pod template). A [`Kubelet`] can hold a rollout back (an image that cannot be
//!   pulled): the workload then reports unavailable replicas and its pods wait with the reason,
//!   and the kubelet is asked again until the template changes.
//! - Jobs complete, PVCs bind (not on a `WaitForFirstConsumer` class), Services get a ready
//!   EndpointSlice.
//! - cert-manager: a `ClusterIssuer`/`Issuer` is Ready when it is `selfSigned`, or `ca` with a
//!   Secret holding a usable CA certificate and key (in `cert-manager`, the cluster resource
//!   namespace, for a ClusterIssuer); a `Certificate` is issued once its issuer is Ready — a real
//!   leaf signed by that CA (`homelab::model::tls::issue_leaf`, the shape cert-manager writes) into its
//!   Secret; ingress-shim turns an Ingress annotated `cert-manager.io/cluster-issuer` (or
//!   `issuer`) into a Certificate per `spec.tls` entry, named after its `secretName`; deleting a
//!   Certificate's Secret issues it again.
//! - cert-manager's webhook and cainjector: a webhook Deployment started with
//!   `--dynamic-serving-ca-secret-name` writes its serving CA into that Secret before it turns
//!   Available (cert-manager v1.21.1 `pkg/server/tls/authority/authority.go` writes `ca.crt`,
//!   `tls.crt`, `tls.key`; `pkg/webhook/server/server.go` `handleHealthz` fails until the
//!   certificate is there); cainjector, once its own Deployment is Available, copies that `ca.crt`
//!   into `clientConfig.caBundle` of every webhook of the Validating/MutatingWebhookConfigurations
//!   annotated `cert-manager.io/inject-ca-from-secret: <ns>/<name>`
//!   (`pkg/controller/cainjector/sources.go`) — [`Controllers::ca_injection`] later, so that a
//!   client that takes Available Deployments for a working webhook meets the API server's
//!   refusal (cert-manager issue 7625).
//! - NGINX Ingress Controller (F5's `nginx/nginx-ingress`): for an IngressClass whose controller
//!   is `nginx.org/ingress-controller`, a ready workload started with `-ingress-class=<class>` and
//!   `-report-ingress-status` writes `status.loadBalancer.ingress` of that class's Ingresses from
//!   the `external-status-address` key of its `-nginx-configmaps` ConfigMap, as NIC does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::store::{Key, Store, WatchEvent, condition_true};
use super::{Inner, ReadyEvent};

/// Why a workload's pods do not run: the waiting reason and message the kubelet reports
/// (`ImagePullBackOff`, `CrashLoopBackOff`, …).
#[derive(Clone, Debug)]
pub struct PodsWaiting {
    pub reason: String,
    pub message: String,
}

/// What the kubelet says about a workload's pods.
pub type PodsVerdict = Result<(), PodsWaiting>;

/// Asked before a workload's pods start, with the workload as it is being rolled out (the
/// test starts what the pods would run here).
#[derive(Clone)]
pub struct Kubelet(
    pub Arc<dyn Fn(Value) -> futures::future::BoxFuture<'static, PodsVerdict> + Send + Sync>,
);

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kubelet(..)")
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
    /// Create the ReplicaSets and Pods of workloads.
    pub pods: bool,
    /// Asked before a workload's pods run.
    pub kubelet: Option<Kubelet>,
    /// When cert-manager's cainjector injects its webhook's CA.
    pub ca_injection: CaInjection,
}

/// Fixture builders: `Controllers::ready_after(d).pods()` instead of a struct literal per test.
impl Controllers {
    /// Objects become ready after `d`.
    pub fn ready_after(d: Duration) -> Controllers {
        Controllers {
            ready_after: d,
            ..Default::default()
        }
    }

    /// Only these objects (by name) never become ready.
    pub fn never_ready(names: &[&str]) -> Controllers {
        Controllers {
            never: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Controllers on.
    pub fn enabled(mut self) -> Controllers {
        self.enabled = true;
        self
    }

    /// Workloads get their ReplicaSets and Pods.
    pub fn pods(mut self) -> Controllers {
        self.pods = true;
        self
    }

    /// cainjector injects as `when` says.
    pub fn ca_injection(mut self, when: CaInjection) -> Controllers {
        self.ca_injection = when;
        self
    }
}

/// When the simulated cainjector puts the webhook's CA into the webhook configurations, counted
/// from when it could first (the CA Secret exists and cainjector is Available).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaInjection {
    /// After this long.
    After(Duration),
    /// Never (a broken cainjector).
    Never,
}

impl Default for CaInjection {
    /// 3 s: longer than a client's few quick retries of a refused write last, as a cainjector that
    /// starts after the webhook (or waits for its leader-election Lease) takes on a real lab.
    fn default() -> Self {
        CaInjection::After(Duration::from_secs(3))
    }
}

pub(super) fn mark_ready(inner: &Inner, kind: &str, name: &str) {
    inner.ready.lock().unwrap().push(ReadyEvent {
        at: std::time::Instant::now(),
        kind: kind.into(),
        name: name.into(),
    });
}

fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn key(group: &str, plural: &str, ns: &str, name: &str) -> Key {
    (group.into(), plural.into(), ns.into(), name.into())
}

/// Every object of one type (any namespace), by key order.
fn of_type(store: &Store, group: &str, plural: &str) -> Vec<(Key, Value)> {
    let from = key(group, plural, "", "");
    store
        .objects
        .range(from..)
        .take_while(|(k, _)| k.0 == group && k.1 == plural)
        .map(|(k, _)| (k.clone(), store.render(k).expect("listed")))
        .collect()
}

/// React to a watch event like the controllers of a real cluster would, after a delay.
pub(super) fn react(inner: &Arc<Inner>, e: WatchEvent) {
    let obj = e.object;
    let kind = s(&obj, "/kind").to_string();
    let name = s(&obj, "/metadata/name").to_string();
    let ns = s(&obj, "/metadata/namespace").to_string();
    if e.kind == "DELETED" {
        if kind == "Secret" {
            certificate_secret_deleted(inner, &obj);
        }
        return;
    }
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
    let delay = cfg.per_name.get(&name).copied().unwrap_or(cfg.ready_after);
    match kind.as_str() {
        // A workload being deleted gets no new rollout (its deletion mark bumps generation):
        // kubernetes pkg/controller/deployment/deployment_controller.go `syncDeployment` only
        // syncs status then, and the StatefulSet and DaemonSet controllers skip it likewise.
        "Deployment" | "StatefulSet" | "DaemonSet"
            if obj.pointer("/metadata/deletionTimestamp").is_some() => {}
        "Deployment" | "StatefulSet" | "DaemonSet" => {
            let generation = obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let observed = obj
                .pointer("/status/observedGeneration")
                .and_then(Value::as_i64);
            if observed != Some(generation) {
                tokio::spawn(roll_out(inner.clone(), cfg.clone(), obj, generation, delay));
            }
            nic_reconcile(inner);
            cainjector_reconcile(inner, &cfg);
        }
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
            cainjector_reconcile(inner, &cfg);
        }
        "Job" if !condition_true(&obj, "Complete") => later(inner, delay, obj, |_, _| {
            Some(json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}))
        }),
        "ClusterIssuer" | "Issuer" if !condition_true(&obj, "Ready") => {
            later(inner, delay, obj, |store, obj| {
                issuer_ca(store, obj).map(|_| {
                    json!({"conditions": [{"type": "Ready", "status": "True", "reason": "KeyPairVerified", "message": "Signing CA verified"}]})
                })
            });
        }
        "ClusterIssuer" | "Issuer" => {
            // A Ready issuer issues the Certificates that waited for it.
            let waiting: Vec<Value> = {
                let store = inner.store.lock().unwrap();
                of_type(&store, "cert-manager.io", "certificates")
                    .into_iter()
                    .map(|(_, c)| c)
                    .filter(|c| !condition_true(c, "Ready") && s(c, "/spec/issuerRef/name") == name)
                    .collect()
            };
            for c in waiting {
                issue_later(inner, delay, c);
            }
        }
        "Certificate" if !condition_true(&obj, "Ready") => issue_later(inner, delay, obj),
        "Secret" => {
            cainjector_reconcile(inner, &cfg);
            // A CA Secret that appears late makes its issuers Ready.
            let issuers: Vec<Value> = {
                let store = inner.store.lock().unwrap();
                let mut out: Vec<Value> = of_type(&store, "cert-manager.io", "clusterissuers")
                    .into_iter()
                    .map(|(_, i)| i)
                    .filter(|_| ns == "cert-manager")
                    .collect();
                out.extend(
                    of_type(&store, "cert-manager.io", "issuers")
                        .into_iter()
                        .map(|(_, i)| i)
                        .filter(|i| s(i, "/metadata/namespace") == ns),
                );
                out.into_iter()
                    .filter(|i| !condition_true(i, "Ready") && s(i, "/spec/ca/secretName") == name)
                    .collect()
            };
            for i in issuers {
                later(inner, delay, i, |store, obj| {
                    issuer_ca(store, obj).map(|_| {
                        json!({"conditions": [{"type": "Ready", "status": "True", "reason": "KeyPairVerified", "message": "Signing CA verified"}]})
                    })
                });
            }
        }
        "PersistentVolumeClaim" if s(&obj, "/status/phase") != "Bound" => {
            later(inner, delay, obj, |store, obj| {
                let class = s(obj, "/spec/storageClassName");
                let wffc = store
                    .objects
                    .get(&key("storage.k8s.io", "storageclasses", "", class))
                    .is_some_and(|sc| sc["volumeBindingMode"] == "WaitForFirstConsumer");
                (!wffc).then(|| json!({"phase": "Bound"}))
            });
        }
        "Service" => {
            let has_selector = obj
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty());
            if !has_selector {
                return;
            }
            let inner = inner.clone();
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
                    if store.objects.contains_key(&key(
                        "discovery.k8s.io",
                        "endpointslices",
                        &ns,
                        &format!("{name}-fake"),
                    )) {
                        return;
                    }
                    let _ = store.put(slice, "endpointslice-controller");
                }
                mark_ready(&inner, "Service", &name);
                inner.publish();
            });
        }
        "Ingress" => {
            ingress_shim(inner, &obj);
            nic_reconcile(inner);
        }
        "IngressClass" | "ConfigMap" => nic_reconcile(inner),
        _ => {}
    }
}

/// After `delay`, if `obj` is still the generation seen, set the status `f` computes (or
/// nothing when it returns `None`).
fn later(
    inner: &Arc<Inner>,
    delay: Duration,
    obj: Value,
    f: impl FnOnce(&Store, &Value) -> Option<Value> + Send + 'static,
) {
    let inner = inner.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let kind = s(&obj, "/kind").to_string();
        let name = s(&obj, "/metadata/name").to_string();
        {
            let mut store = inner.store.lock().unwrap();
            let Some((_, k)) = store.key_for(&obj) else {
                return;
            };
            let Some(live) = store.render(&k) else { return };
            if live.pointer("/metadata/generation") != obj.pointer("/metadata/generation") {
                return;
            }
            let Some(status) = f(&store, &live) else {
                return;
            };
            store.set_status(&k, status);
        }
        mark_ready(&inner, &kind, &name);
        inner.publish();
    });
}

// ---------------------------------------------------------------------------------------------
// Workloads

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    homelab::edges::state::random_bytes(5)
        .unwrap()
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn ready_status(kind: &str, name: &str, generation: i64, replicas: i64) -> Value {
    match kind {
        "Deployment" => json!({
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
        }),
        "StatefulSet" => json!({
            "observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
            "currentReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas,
            "currentRevision": format!("{name}-{generation}"), "updateRevision": format!("{name}-{generation}"),
        }),
        _ => json!({
            "observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
            "numberReady": 1, "numberAvailable": 1, "updatedNumberScheduled": 1, "numberMisscheduled": 0,
        }),
    }
}

fn waiting_status(kind: &str, name: &str, generation: i64, replicas: i64) -> Value {
    match kind {
        "Deployment" => json!({
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": 0, "availableReplicas": 0, "unavailableReplicas": replicas,
            "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}],
        }),
        "StatefulSet" => json!({
            "observedGeneration": generation, "replicas": replicas, "readyReplicas": 0,
            "currentReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": 0,
            "currentRevision": format!("{name}-{generation}"), "updateRevision": format!("{name}-{generation}"),
        }),
        _ => json!({
            "observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
            "numberReady": 0, "numberAvailable": 0, "numberUnavailable": 1, "updatedNumberScheduled": 1,
            "numberMisscheduled": 0,
        }),
    }
}

/// Roll `obj` out at `generation`: ask the kubelet, then write the workload's status and its pods;
/// while the kubelet holds it back, ask again until the template changes.
async fn roll_out(
    inner: Arc<Inner>,
    cfg: Controllers,
    obj: Value,
    generation: i64,
    delay: Duration,
) {
    let kind = s(&obj, "/kind").to_string();
    let name = s(&obj, "/metadata/name").to_string();
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut reported_waiting = false;
    tokio::time::sleep(delay).await;
    loop {
        let live = {
            let store = inner.store.lock().unwrap();
            store
                .key_for(&obj)
                .and_then(|(_, k)| store.render(&k))
                .filter(|o| {
                    o.pointer("/metadata/generation").and_then(Value::as_i64) == Some(generation)
                })
        };
        let Some(live) = live else { return };
        let verdict = match &cfg.kubelet {
            Some(k) => (k.0)(live.clone()).await,
            None => Ok(()),
        };
        {
            let mut store = inner.store.lock().unwrap();
            let Some((_, k)) = store.key_for(&live) else {
                return;
            };
            match &verdict {
                Ok(()) => {
                    webhook_serving_ca(&mut store, &live);
                    store.set_status(&k, ready_status(&kind, &name, generation, replicas));
                    if cfg.pods {
                        replace_pods(&mut store, &live, None);
                    }
                }
                Err(w) if !reported_waiting => {
                    store.set_status(&k, waiting_status(&kind, &name, generation, replicas));
                    if cfg.pods {
                        replace_pods(&mut store, &live, Some(w));
                    }
                }
                Err(_) => {}
            }
        }
        inner.publish();
        if verdict.is_ok() {
            mark_ready(&inner, &kind, &name);
            nic_reconcile(&inner);
            return;
        }
        reported_waiting = true;
        // The kubelet retries (image pulls back off); a new template starts another rollout.
        tokio::time::sleep(delay.max(Duration::from_millis(50))).await;
    }
}

fn owner_ref(obj: &Value) -> Value {
    json!({
        "apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
    })
}

fn owned_by(o: &Value, uid: &Value) -> bool {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| &r["uid"] == uid))
}

/// The workload's pods for its current template: Running and Ready, or waiting with `waiting`.
/// Pods (and ReplicaSets) of older templates go.
fn replace_pods(store: &mut Store, workload: &Value, waiting: Option<&PodsWaiting>) {
    let kind = s(workload, "/kind").to_string();
    let ns = s(workload, "/metadata/namespace").to_string();
    let name = s(workload, "/metadata/name").to_string();
    let template = workload
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let hash =
        homelab::edges::digest::sha256_hex(template.to_string().as_bytes())[..10].to_string();
    let replicas = match kind.as_str() {
        "DaemonSet" => 1,
        _ => workload
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1),
    };
    // Deployments own a ReplicaSet per template; their pods belong to it.
    let owner = if kind == "Deployment" {
        let rs_name = format!("{name}-{hash}");
        let rs_key = key("apps", "replicasets", &ns, &rs_name);
        for (k, rs) in of_type(store, "apps", "replicasets") {
            if k.2 == ns && k.3 != rs_name && owned_by(&rs, &workload["metadata"]["uid"]) {
                store.remove(&k, "Background");
            }
        }
        match store.render(&rs_key) {
            Some(rs) => rs,
            None => {
                let mut labels = template
                    .pointer("/metadata/labels")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                labels["pod-template-hash"] = json!(hash);
                let mut selector = workload["spec"]["selector"].clone();
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let rs = json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs_name, "namespace": ns, "labels": labels, "ownerReferences": [owner_ref(workload)]},
                    "spec": {"replicas": replicas, "selector": selector, "template": template},
                });
                match store.put(rs, "kube-controller-manager") {
                    Ok(rs) => rs,
                    Err(_) => return,
                }
            }
        }
    } else {
        workload.clone()
    };
    let owner_uid = owner["metadata"]["uid"].clone();
    let current: Vec<(Key, Value)> = of_type(store, "", "pods")
        .into_iter()
        .filter(|(k, p)| k.2 == ns && owned_by(p, &owner_uid))
        .collect();
    for (k, _) in &current {
        store.remove(k, "Background");
    }
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if kind == "Deployment" {
        labels["pod-template-hash"] = json!(hash);
    }
    // Scheduling the pod binds its claims (what WaitForFirstConsumer waits for).
    for v in template
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let Some(claim) = v
            .pointer("/persistentVolumeClaim/claimName")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let k = key("", "persistentvolumeclaims", &ns, claim);
        if store
            .render(&k)
            .is_some_and(|pvc| s(&pvc, "/status/phase") != "Bound")
        {
            store.set_status(&k, json!({"phase": "Bound"}));
        }
    }
    let containers: Vec<Value> = template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for i in 0..replicas {
        let pod_name = match kind.as_str() {
            "StatefulSet" => format!("{name}-{i}"),
            "Deployment" => format!("{name}-{hash}-{}", random_suffix()),
            _ => format!("{name}-{}", random_suffix()),
        };
        let mut spec = template
            .pointer("/spec")
            .cloned()
            .unwrap_or_else(|| json!({}));
        spec["nodeName"] = json!("node-1");
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": pod_name, "namespace": ns, "labels": labels,
                "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({})),
                "ownerReferences": [owner_ref(&owner)],
            },
            "spec": spec,
        });
        let Ok(pod) = store.put(pod, "kubelet") else {
            continue;
        };
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| match waiting {
                None => json!({"name": c["name"], "image": c["image"], "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": super::store::now_rfc3339()}}}),
                Some(w) => json!({"name": c["name"], "image": c["image"], "ready": false, "started": false, "restartCount": 0, "state": {"waiting": {"reason": w.reason, "message": w.message}}}),
            })
            .collect();
        let ready = if waiting.is_none() { "True" } else { "False" };
        let status = json!({
            "phase": if waiting.is_none() { "Running" } else { "Pending" },
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "ContainersReady", "status": ready},
                {"type": "Ready", "status": ready},
            ],
            "containerStatuses": statuses,
            "podIP": "10.1.0.10",
        });
        if let Some((_, k)) = store.key_for(&pod) {
            store.set_status(&k, status);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cert-manager

/// The CA an issuer signs with, when it is usable: `Some(None)` for `selfSigned`.
fn issuer_ca(store: &Store, issuer: &Value) -> Option<Option<homelab::model::tls::LabCa>> {
    if issuer.pointer("/spec/selfSigned").is_some() {
        return Some(None);
    }
    let secret = s(issuer, "/spec/ca/secretName");
    if secret.is_empty() {
        return None;
    }
    // A ClusterIssuer reads its Secret from the cluster resource namespace.
    let ns = match s(issuer, "/kind") {
        "ClusterIssuer" => "cert-manager",
        _ => s(issuer, "/metadata/namespace"),
    };
    let data = store
        .render(&key("", "secrets", ns, secret))?
        .get("data")?
        .clone();
    let decode = |k: &str| -> Option<String> {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD
            .decode(data.get(k)?.as_str()?)
            .ok()?;
        String::from_utf8(b).ok()
    };
    let ca = homelab::model::tls::LabCa {
        cert_pem: decode("tls.crt")?,
        key_pem: homelab::edges::redact::Secret::new(decode("tls.key")?),
    };
    // cert-manager verifies the key pair before it calls the issuer Ready.
    rcgen::KeyPair::from_pem(ca.key_pem.expose()).ok()?;
    homelab::model::tls::inspect(&ca.cert_pem).ok()?;
    Some(Some(ca))
}

fn issue_later(inner: &Arc<Inner>, delay: Duration, cert: Value) {
    let inner = inner.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let ns = s(&cert, "/metadata/namespace").to_string();
        let name = s(&cert, "/metadata/name").to_string();
        {
            let mut store = inner.store.lock().unwrap();
            let Some(live) = store.render(&key("cert-manager.io", "certificates", &ns, &name))
            else {
                return;
            };
            if condition_true(&live, "Ready") {
                return;
            }
            let issuer_name = s(&live, "/spec/issuerRef/name");
            let issuer = match s(&live, "/spec/issuerRef/kind") {
                "ClusterIssuer" => {
                    store.render(&key("cert-manager.io", "clusterissuers", "", issuer_name))
                }
                _ => store.render(&key("cert-manager.io", "issuers", &ns, issuer_name)),
            };
            let Some(issuer) = issuer.filter(|i| condition_true(i, "Ready")) else {
                return;
            };
            let Some(ca) = issuer_ca(&store, &issuer) else {
                return;
            };
            let dns: Vec<String> = live
                .pointer("/spec/dnsNames")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect();
            let now = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
            let mut spec = homelab::model::tls::LeafSpec::for_names(&dns, now);
            spec.common_name = live
                .pointer("/spec/commonName")
                .and_then(Value::as_str)
                .map(str::to_string);
            // selfSigned: a CA of its own signs the leaf (the shape is what matters to clients).
            let ca = ca.unwrap_or_else(|| {
                homelab::model::tls::generate(
                    "self-signed",
                    &homelab::model::tls::permitted_domains(None),
                    now,
                )
                .unwrap()
            });
            let Ok(leaf) = homelab::model::tls::issue_leaf(&ca, &spec) else {
                return;
            };
            use base64::Engine as _;
            let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
            let secret_name = s(&live, "/spec/secretName").to_string();
            let secret = json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": secret_name, "namespace": ns, "annotations": {
                    "cert-manager.io/certificate-name": name,
                    "cert-manager.io/issuer-name": issuer_name,
                    "cert-manager.io/issuer-kind": s(&live, "/spec/issuerRef/kind"),
                }},
                "data": {"tls.crt": b64(&leaf.cert_pem), "tls.key": b64(leaf.key_pem.expose()), "ca.crt": b64(&leaf.ca_pem)},
            });
            if store
                .put(secret, "cert-manager-certificates-issuing")
                .is_err()
            {
                return;
            }
            store.set_status(
                &key("cert-manager.io", "certificates", &ns, &name),
                json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "Certificate is up to date and has not expired"}]}),
            );
        }
        mark_ready(&inner, "Certificate", &name);
        inner.publish();
    });
}

/// cert-manager: a Certificate whose Secret is deleted turns `Ready=False` (`DoesNotExist`) and is
/// issued again (the Certificate event that status change makes starts the issuing).
fn certificate_secret_deleted(inner: &Arc<Inner>, secret: &Value) {
    let cert = s(
        secret,
        "/metadata/annotations/cert-manager.io~1certificate-name",
    );
    if cert.is_empty() || !inner.controllers.lock().unwrap().enabled {
        return;
    }
    let ns = s(secret, "/metadata/namespace");
    let changed = inner.store.lock().unwrap().set_status(
        &key("cert-manager.io", "certificates", ns, cert),
        json!({"conditions": [{"type": "Ready", "status": "False", "reason": "DoesNotExist", "message": "Issuing certificate as Secret does not exist"}]}),
    );
    if changed.is_some() {
        inner.publish();
    }
}

/// cert-manager's ingress-shim: a Certificate per `spec.tls` entry of an annotated Ingress.
fn ingress_shim(inner: &Arc<Inner>, ingress: &Value) {
    let (issuer, issuer_kind) = match (
        ingress.pointer("/metadata/annotations/cert-manager.io~1cluster-issuer"),
        ingress.pointer("/metadata/annotations/cert-manager.io~1issuer"),
    ) {
        (Some(Value::String(n)), _) => (n.clone(), "ClusterIssuer"),
        (None, Some(Value::String(n))) => (n.clone(), "Issuer"),
        _ => return,
    };
    let ns = s(ingress, "/metadata/namespace").to_string();
    let mut store = inner.store.lock().unwrap();
    let served = store
        .type_for("cert-manager.io/v1", "Certificate")
        .is_some_and(|t| store.is_established(&t));
    if !served {
        // No cert-manager in this cluster: nobody acts on the annotation.
        return;
    }
    for tls in ingress
        .pointer("/spec/tls")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let Some(secret) = tls["secretName"].as_str() else {
            continue;
        };
        let hosts = tls["hosts"].clone();
        let spec = json!({
            "secretName": secret, "dnsNames": hosts,
            "issuerRef": {"name": issuer, "kind": issuer_kind, "group": "cert-manager.io"},
            "usages": ["digital signature", "key encipherment"],
        });
        let k = key("cert-manager.io", "certificates", &ns, secret);
        if store.render(&k).is_some_and(|c| c["spec"] == spec) {
            continue;
        }
        let cert = json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": secret, "namespace": ns, "ownerReferences": [owner_ref(ingress)]},
            "spec": spec,
        });
        let _ = store.put(cert, "cert-manager-ingress-shim");
    }
    drop(store);
    inner.publish();
}

/// The value of a container argument `--<flag>=<value>` of a workload.
fn container_arg(workload: &Value, flag: &str) -> Option<String> {
    container_args(workload)
        .into_iter()
        .find_map(|a| a.strip_prefix(&format!("--{flag}=")).map(str::to_string))
}

/// cert-manager's webhook: before it reports healthy it has a serving CA in the Secret its
/// `--dynamic-serving-ca-secret-*` flags name (generated once, kept after).
fn webhook_serving_ca(store: &mut Store, workload: &Value) {
    let Some(secret) = container_arg(workload, "dynamic-serving-ca-secret-name") else {
        return;
    };
    let ns = container_arg(workload, "dynamic-serving-ca-secret-namespace")
        .unwrap_or_default()
        .replace("$(POD_NAMESPACE)", s(workload, "/metadata/namespace"));
    if store
        .objects
        .contains_key(&key("", "secrets", &ns, &secret))
    {
        return;
    }
    let ca = super::http_kit::tls::lab_ca("cert-manager-webhook-ca", None);
    use base64::Engine as _;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let _ = store.put(
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret, "namespace": ns, "annotations": {"cert-manager.io/allow-direct-injection": "true"}},
            "data": {"ca.crt": b64(&ca.cert_pem), "tls.crt": b64(&ca.cert_pem), "tls.key": b64(ca.key_pem.expose())},
        }),
        "cert-manager-webhook",
    );
}

/// Webhook configurations whose `caBundle` cainjector would change now: (kind, name, bundle).
fn injections_due(store: &Store) -> Vec<(String, String, String)> {
    let cainjector_ready = of_type(store, "apps", "deployments").iter().any(|(_, d)| {
        d.pointer("/metadata/labels/app.kubernetes.io~1component") == Some(&json!("cainjector"))
            && workload_ready(d)
    });
    if !cainjector_ready {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (plural, kind) in [
        (
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
        ),
        (
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
        ),
    ] {
        for (k, config) in of_type(store, "admissionregistration.k8s.io", plural) {
            let from = s(
                &config,
                "/metadata/annotations/cert-manager.io~1inject-ca-from-secret",
            );
            let Some((ns, name)) = from.split_once('/') else {
                continue;
            };
            let Some(bundle) = store.render(&key("", "secrets", ns, name)).and_then(|sec| {
                sec.pointer("/data/ca.crt")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }) else {
                continue;
            };
            let stale = config
                .get("webhooks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|w| {
                    w.pointer("/clientConfig/caBundle").and_then(Value::as_str) != Some(&bundle)
                });
            if stale {
                out.push((kind.to_string(), k.3.clone(), bundle));
            }
        }
    }
    out
}

/// cainjector: inject what is due, after [`Controllers::ca_injection`].
fn cainjector_reconcile(inner: &Arc<Inner>, cfg: &Controllers) {
    let CaInjection::After(delay) = cfg.ca_injection else {
        return;
    };
    if injections_due(&inner.store.lock().unwrap()).is_empty() {
        return;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut injected = Vec::new();
        {
            let mut store = inner.store.lock().unwrap();
            for (kind, name, bundle) in injections_due(&store) {
                let Some(rt) = store.type_for("admissionregistration.k8s.io/v1", &kind) else {
                    continue;
                };
                let Some(live) =
                    store.render(&key("admissionregistration.k8s.io", &rt.plural, "", &name))
                else {
                    continue;
                };
                let hooks: Vec<Value> = live["webhooks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| json!({"name": w["name"], "clientConfig": {"caBundle": bundle}}))
                    .collect();
                let patch = json!({
                    "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                    "metadata": {"name": name}, "webhooks": hooks,
                });
                let opts = super::store::WriteOptions {
                    manager: "cert-manager-cainjector",
                    force: true,
                    dry_run: false,
                    subresource_status: false,
                };
                if store.apply(&rt, "", &name, patch, &opts).is_ok() {
                    injected.push((kind, name));
                }
            }
        }
        for (kind, name) in injected {
            mark_ready(&inner, &kind, &name);
        }
        inner.publish();
    });
}

/// A stand-in for cert-manager's release manifest (what `upstream.url` names), for which the
/// controllers above play cert-manager: its namespace, two of its CRDs, the controller,
/// cainjector and webhook Deployments, the webhook's Service, and its Validating and Mutating
/// WebhookConfigurations as v1.21.1's static manifest renders them (`make/manifests.mk`: `helm
/// template … --namespace=cert-manager --set=startupapicheck.enabled=false`; chart templates
/// `deploy/charts/cert-manager/templates/webhook-{validating,mutating}-webhook.yaml`,
/// `webhook-service.yaml`, `webhook-deployment.yaml`, values `webhook.timeoutSeconds: 30` and
/// the validating webhook's `namespaceSelector`): no `caBundle`, which cainjector injects.
pub fn cert_manager_stand_in() -> String {
    r#"apiVersion: v1
kind: Namespace
metadata:
  name: cert-manager
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: certificates.cert-manager.io
spec:
  group: cert-manager.io
  scope: Namespaced
  names: {plural: certificates, singular: certificate, kind: Certificate, listKind: CertificateList}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: clusterissuers.cert-manager.io
spec:
  group: cert-manager.io
  scope: Cluster
  names: {plural: clusterissuers, singular: clusterissuer, kind: ClusterIssuer, listKind: ClusterIssuerList}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cert-manager
  namespace: cert-manager
spec:
  selector: {matchLabels: {app: cert-manager}}
  template:
    metadata: {labels: {app: cert-manager}}
    spec:
      containers:
        - name: cert-manager-controller
          image: quay.io/jetstack/cert-manager-controller:v1.21.1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cert-manager-cainjector
  namespace: cert-manager
  labels: {app: cainjector, app.kubernetes.io/name: cainjector, app.kubernetes.io/instance: cert-manager, app.kubernetes.io/component: cainjector}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: cainjector, app.kubernetes.io/instance: cert-manager, app.kubernetes.io/component: cainjector}
  template:
    metadata:
      labels: {app: cainjector, app.kubernetes.io/name: cainjector, app.kubernetes.io/instance: cert-manager, app.kubernetes.io/component: cainjector}
    spec:
      containers:
        - name: cert-manager-cainjector
          image: quay.io/jetstack/cert-manager-cainjector:v1.21.1
          args: [--v=2, --leader-election-namespace=kube-system]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cert-manager-webhook
  namespace: cert-manager
  labels: {app: webhook, app.kubernetes.io/name: webhook, app.kubernetes.io/instance: cert-manager, app.kubernetes.io/component: webhook}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: webhook, app.kubernetes.io/instance: cert-manager, app.kubernetes.io/component: webhook}
  template:
    metadata:
      labels: {app: webhook, app.kubernetes.io/name: webhook, app.kubernetes.io/instance: cert-manager, app.kubernetes.io/component: webhook}
    spec:
      containers:
        - name: cert-manager-webhook
          image: quay.io/jetstack/cert-manager-webhook:v1.21.1
          args:
            - --v=2
            - --secure-port=10250
            - --dynamic-serving-ca-secret-namespace=$(POD_NAMESPACE)
            - --dynamic-serving-ca-secret-name=cert-manager-webhook-ca
            - --dynamic-serving-dns-names=cert-manager-webhook
            - --dynamic-serving-dns-names=cert-manager-webhook.$(POD_NAMESPACE)
            - --dynamic-serving-dns-names=cert-manager-webhook.$(POD_NAMESPACE).svc
          ports:
            - {name: https, protocol: TCP, containerPort: 10250}
            - {name: healthcheck, protocol: TCP, containerPort: 6080}
          env:
            - name: POD_NAMESPACE
              valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
---
apiVersion: v1
kind: Service
metadata:
  name: cert-manager-webhook
  namespace: cert-manager
  labels: {app: webhook, app.kubernetes.io/name: webhook, app.kubernetes.io/instance: cert-manager, app.kubernetes.io/component: webhook}
spec:
  type: ClusterIP
  ports:
    - {name: https, port: 443, protocol: TCP, targetPort: https}
  selector: {app.kubernetes.io/name: webhook, app.kubernetes.io/instance: cert-manager, app.kubernetes.io/component: webhook}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: cert-manager-webhook
  labels: {app: webhook, app.kubernetes.io/name: webhook, app.kubernetes.io/instance: cert-manager, app.kubernetes.io/component: webhook}
  annotations:
    cert-manager.io/inject-ca-from-secret: "cert-manager/cert-manager-webhook-ca"
webhooks:
  - name: webhook.cert-manager.io
    rules:
      - apiGroups: ["cert-manager.io"]
        apiVersions: ["v1"]
        operations: [CREATE]
        resources: ["certificaterequests"]
    admissionReviewVersions: ["v1"]
    matchPolicy: Equivalent
    timeoutSeconds: 30
    failurePolicy: Fail
    sideEffects: None
    clientConfig:
      service: {name: cert-manager-webhook, namespace: cert-manager, path: /mutate}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: cert-manager-webhook
  labels: {app: webhook, app.kubernetes.io/name: webhook, app.kubernetes.io/instance: cert-manager, app.kubernetes.io/component: webhook}
  annotations:
    cert-manager.io/inject-ca-from-secret: "cert-manager/cert-manager-webhook-ca"
webhooks:
  - name: webhook.cert-manager.io
    namespaceSelector:
      matchExpressions:
        - {key: cert-manager.io/disable-validation, operator: NotIn, values: ["true"]}
    rules:
      - apiGroups: ["cert-manager.io", "acme.cert-manager.io"]
        apiVersions: ["v1"]
        operations: [CREATE, UPDATE]
        resources: ["*/*"]
    admissionReviewVersions: ["v1"]
    matchPolicy: Equivalent
    timeoutSeconds: 30
    failurePolicy: Fail
    sideEffects: None
    clientConfig:
      service: {name: cert-manager-webhook, namespace: cert-manager, path: /validate}
"#
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// NGINX Ingress Controller

fn container_args(workload: &Value) -> Vec<String> {
    workload
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c["args"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|a| a.as_str().map(str::to_string))
        })
        .collect()
}

fn workload_ready(w: &Value) -> bool {
    let n = |p: &str| w.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    match s(w, "/kind") {
        "DaemonSet" => n("/status/numberReady") > 0,
        _ => n("/status/availableReplicas") > 0,
    }
}

/// The address NIC publishes for Ingresses of `class`, if a ready NIC serves it.
fn nic_address(store: &Store, class: &str) -> Option<String> {
    let ic = store.render(&key("networking.k8s.io", "ingressclasses", "", class))?;
    if s(&ic, "/spec/controller") != "nginx.org/ingress-controller" {
        return None;
    }
    let mut workloads = of_type(store, "apps", "daemonsets");
    workloads.extend(of_type(store, "apps", "deployments"));
    for (k, w) in workloads {
        let args = container_args(&w);
        if !args.iter().any(|a| a == &format!("-ingress-class={class}"))
            || !args.iter().any(|a| a == "-report-ingress-status")
            || !workload_ready(&w)
        {
            continue;
        }
        let cm = args
            .iter()
            .find_map(|a| a.strip_prefix("-nginx-configmaps="))?
            .replace("$(POD_NAMESPACE)", &k.2);
        let (cm_ns, cm_name) = cm.split_once('/')?;
        let cm = store.render(&key("", "configmaps", cm_ns, cm_name))?;
        return cm
            .pointer("/data/external-status-address")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .map(str::to_string);
    }
    None
}

fn ingress_class(store: &Store, ingress: &Value) -> Option<String> {
    if let Some(c) = ingress
        .pointer("/spec/ingressClassName")
        .and_then(Value::as_str)
    {
        return Some(c.to_string());
    }
    of_type(store, "networking.k8s.io", "ingressclasses")
        .into_iter()
        .find(|(_, ic)| {
            ic.pointer("/metadata/annotations/ingressclass.kubernetes.io~1is-default-class")
                == Some(&json!("true"))
        })
        .map(|(k, _)| k.3)
}

/// Write `status.loadBalancer.ingress` of every Ingress a ready NIC serves.
fn nic_reconcile(inner: &Arc<Inner>) {
    let mut changed = Vec::new();
    {
        let mut store = inner.store.lock().unwrap();
        let ingresses = of_type(&store, "networking.k8s.io", "ingresses");
        if ingresses.is_empty() {
            return;
        }
        for (k, ing) in ingresses {
            let Some(class) = ingress_class(&store, &ing) else {
                continue;
            };
            let Some(addr) = nic_address(&store, &class) else {
                continue;
            };
            let entry = if addr.parse::<std::net::IpAddr>().is_ok() {
                json!({"ip": addr})
            } else {
                json!({"hostname": addr})
            };
            let status = json!({"loadBalancer": {"ingress": [entry]}});
            if ing.get("status") == Some(&status) {
                continue;
            }
            store.set_status(&k, status);
            changed.push(k);
        }
    }
    if changed.is_empty() {
        return;
    }
    for k in &changed {
        mark_ready(inner, "Ingress", &k.3);
    }
    inner.publish();
}

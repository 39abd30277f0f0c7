//! Waiting for applied objects to be ready, by watching them (never by sleeping or polling on a
//! timer), and one-shot readiness checks for `status`.
//!
//! Architecture invariant: every wait is a watch (kube-runtime's watcher, which lists then
//! watches from the list's resourceVersion and re-lists on 410 Gone); the rules themselves live
//! in `readiness.rs`. Waits have no deadline of their own: callers bound them. What is worth
//! telling the user while waiting (an admission webhook that cannot be called yet) is a notice on
//! [`Waiting`], which the caller forwards to its progress.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::kube::api::{Api, DynamicObject, ListParams};
use ::kube::runtime::watcher::{self, Event, watch_object};
use futures::StreamExt;
use serde_json::Value;

use super::readiness::{self, Readiness, Rule};
use super::{Applied, Applier, ApplyError, Resolved, to_value};
use crate::cluster::kube::describe;
use crate::model::kinds::ObjectRef;

/// What each object being waited on is waiting for, shared with whoever reports progress or a
/// timeout.
#[derive(Debug)]
pub struct Waiting {
    reasons: Mutex<BTreeMap<ObjectRef, String>>,
    notices: tokio::sync::watch::Sender<String>,
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting {
            reasons: Mutex::new(BTreeMap::new()),
            notices: tokio::sync::watch::Sender::new(String::new()),
        }
    }
}

/// How long, and on whose behalf, a write refused because an admission webhook cannot be called
/// yet is tried again (see [`crate::cluster::kube::retry_until`]).
#[derive(Clone, Debug)]
pub struct AdmissionWait {
    /// Give up at this instant (the component's timeout).
    pub deadline: tokio::time::Instant,
    /// Where the wait is recorded and noticed.
    pub waiting: Arc<Waiting>,
}

impl Waiting {
    /// Notices worth a progress line (one at a time; the latest wins).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<String> {
        self.notices.subscribe()
    }

    /// Tell whoever shows progress, unless it is what they were told last.
    pub fn notice(&self, text: &str) {
        self.notices.send_if_modified(|last| {
            if last == text {
                return false;
            }
            *last = text.to_string();
            true
        });
    }

    /// Objects not ready yet, with why.
    pub fn snapshot(&self) -> Vec<(ObjectRef, String)> {
        self.reasons
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `o` waits for `why`.
    pub fn set(&self, o: &ObjectRef, why: &str) {
        self.reasons
            .lock()
            .unwrap()
            .insert(o.clone(), why.to_string());
    }

    /// `o` waits no more.
    pub fn done(&self, o: &ObjectRef) {
        self.reasons.lock().unwrap().remove(o);
    }
}

/// Backoff after a watch error, so a broken connection is not hammered. Not a poll: the watch
/// resumes from its last resourceVersion.
struct ErrorBackoff(Duration);

impl ErrorBackoff {
    fn new() -> Self {
        ErrorBackoff(Duration::from_millis(100))
    }
    async fn wait(&mut self, e: &watcher::Error) {
        tracing::debug!(error = %e, "watch error; resuming");
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

/// Wait until every named CRD is Established.
pub async fn crds_established(
    applier: &Applier,
    crd: &Resolved,
    names: &[String],
    timeout: Duration,
) -> Result<(), ApplyError> {
    let api = applier.api(crd, "");
    for name in names {
        let wait = async {
            let mut stream = pin!(watch_object(api.clone(), name));
            let mut backoff = ErrorBackoff::new();
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(Some(obj)) => {
                        let v = to_value(&obj, crd);
                        if readiness::own_status(
                            "apiextensions.k8s.io",
                            "CustomResourceDefinition",
                            &v,
                            false,
                        ) == Readiness::Ready
                        {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => backoff.wait(&e).await,
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ApplyError::CrdNotEstablished {
                name: name.clone(),
                waited: timeout,
            })?;
    }
    Ok(())
}

async fn resolve(applier: &Applier, api_version: &str, kind: &str) -> Result<Resolved, String> {
    applier
        .discovery()
        .resolve(api_version, kind)
        .await
        .map_err(|e| describe(&e))?
        .ok_or_else(|| format!("the cluster does not serve `{kind}` of `{api_version}`"))
}

/// Whether the PVC's storage class binds on first consumer (then `Pending` is expected).
async fn wait_for_first_consumer(applier: &Applier, pvc: &Value) -> bool {
    let Ok(sc) = resolve(applier, "storage.k8s.io/v1", "StorageClass").await else {
        return false;
    };
    let api = applier.api(&sc, "");
    let class = match pvc
        .pointer("/spec/storageClassName")
        .and_then(Value::as_str)
    {
        Some(c) => api.get_opt(c).await.ok().flatten(),
        None => api.list(&ListParams::default()).await.ok().and_then(|l| {
            l.items.into_iter().find(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                    .is_some_and(|v| v == "true")
            })
        }),
    };
    class.is_some_and(|c| {
        c.data.get("volumeBindingMode").and_then(Value::as_str) == Some("WaitForFirstConsumer")
    })
}

/// Wait until a Service has a ready endpoint (an EndpointSlice labelled with its name has one).
async fn ready_endpoints(applier: &Applier, namespace: &str, service: &str) -> Result<(), String> {
    let slices = resolve(applier, "discovery.k8s.io/v1", "EndpointSlice").await?;
    let api: Api<DynamicObject> = applier.api(&slices, namespace);
    let selector = format!("kubernetes.io/service-name={service}");
    let mut stream = pin!(watcher::watcher(
        api,
        watcher::Config::default().labels(&selector)
    ));
    let mut backoff = ErrorBackoff::new();
    let mut known: BTreeMap<String, Value> = BTreeMap::new();
    let mut init: BTreeMap<String, Value> = BTreeMap::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => init.clear(),
            Ok(Event::InitApply(s)) => {
                init.insert(
                    s.metadata.name.clone().unwrap_or_default(),
                    to_value(&s, &slices),
                );
            }
            Ok(Event::InitDone) => known = std::mem::take(&mut init),
            Ok(Event::Apply(s)) => {
                known.insert(
                    s.metadata.name.clone().unwrap_or_default(),
                    to_value(&s, &slices),
                );
            }
            Ok(Event::Delete(s)) => {
                known.remove(&s.metadata.name.clone().unwrap_or_default());
            }
            Err(e) => {
                backoff.wait(&e).await;
                continue;
            }
        }
        let all: Vec<Value> = known.values().cloned().collect();
        if readiness::slices_ready(&all) {
            return Ok(());
        }
    }
    Err("the watch ended".to_string())
}

/// Whether a Service has a ready endpoint now (one LIST).
async fn has_ready_endpoints(applier: &Applier, namespace: &str, service: &str) -> Readiness {
    let Ok(slices) = resolve(applier, "discovery.k8s.io/v1", "EndpointSlice").await else {
        return Readiness::Waiting("endpoints unknown".into());
    };
    let api = applier.api(&slices, namespace);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    match api.list(&lp).await {
        Ok(l) => {
            let all: Vec<Value> = l.items.iter().map(|s| to_value(s, &slices)).collect();
            if readiness::slices_ready(&all) {
                Readiness::Ready
            } else {
                Readiness::Waiting("no ready endpoints".into())
            }
        }
        Err(e) => Readiness::Waiting(describe(&e)),
    }
}

/// Wait until one applied object is ready. `Err` carries why it will not become ready.
pub async fn until_ready(
    applier: &Applier,
    target: &Applied,
    waiting: &Waiting,
) -> Result<(), String> {
    let r = &target.resolved;
    let o = &target.object;
    let group = r.resource.group.as_str();
    let kind = r.resource.kind.as_str();
    let rule = readiness::rule(group, kind, &target.live);
    let result = match rule {
        Rule::Applied => Ok(()),
        Rule::OwnStatus => {
            let api = applier.api(r, &o.namespace);
            let mut stream = pin!(watch_object(api, &o.name));
            let mut backoff = ErrorBackoff::new();
            let mut wffc: Option<bool> = None;
            let mut outcome = Err("the watch ended".to_string());
            waiting.set(o, "waiting for status");
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(Some(obj)) => {
                        let v = to_value(&obj, r);
                        if kind == "PersistentVolumeClaim" && wffc.is_none() {
                            wffc = Some(wait_for_first_consumer(applier, &v).await);
                        }
                        match readiness::own_status(group, kind, &v, wffc.unwrap_or(false)) {
                            Readiness::Ready => {
                                outcome = Ok(());
                                break;
                            }
                            Readiness::Waiting(why) => waiting.set(o, &why),
                            Readiness::Failed(why) => {
                                outcome = Err(why);
                                break;
                            }
                        }
                    }
                    Ok(None) => waiting.set(o, "the object does not exist"),
                    Err(e) => backoff.wait(&e).await,
                }
            }
            outcome
        }
        Rule::ServiceEndpoints => {
            waiting.set(o, "no ready endpoints");
            ready_endpoints(applier, &o.namespace, &o.name).await
        }
        Rule::Webhooks(services) => {
            let api = applier.api(r, "");
            let mut stream = pin!(watch_object(api, &o.name));
            let mut backoff = ErrorBackoff::new();
            let mut outcome = Err("the watch ended".to_string());
            waiting.set(o, "waiting for its CA bundle");
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(Some(obj)) => match readiness::webhook_ca(&to_value(&obj, r)) {
                        Readiness::Ready => {
                            outcome = Ok(());
                            break;
                        }
                        Readiness::Waiting(why) | Readiness::Failed(why) => {
                            waiting.set(o, &why);
                            waiting.notice(&format!("{o}: {why}"));
                        }
                    },
                    Ok(None) => waiting.set(o, "the object does not exist"),
                    Err(e) => backoff.wait(&e).await,
                }
            }
            for (ns, name) in services {
                if outcome.is_err() {
                    break;
                }
                let why = format!(
                    "Service `{name}` in `{ns}` that serves the webhook has no ready endpoints (look at `kubectl -n {ns} get pods,endpointslices`)"
                );
                waiting.set(o, &why);
                waiting.notice(&format!("{o}: {why}"));
                outcome = ready_endpoints(applier, &ns, &name).await;
            }
            outcome
        }
        Rule::IngressCertificates(secrets) => {
            let secret = resolve(applier, "v1", "Secret").await?;
            let api = applier.api(&secret, &o.namespace);
            let mut outcome = Ok(());
            for name in secrets {
                waiting.set(o, &format!("waiting for TLS secret `{name}`"));
                let mut stream = pin!(watch_object(api.clone(), &name));
                let mut backoff = ErrorBackoff::new();
                let mut found = false;
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(Some(s)) => {
                            // Only whether a certificate is there is read; the data is dropped here.
                            if readiness::has_certificate(&to_value(&s, &secret)) {
                                found = true;
                                break;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => backoff.wait(&e).await,
                    }
                }
                if !found {
                    outcome = Err("the watch ended".to_string());
                    break;
                }
            }
            outcome
        }
    };
    if result.is_ok() {
        waiting.done(o);
    }
    result
}

/// One-shot readiness of a live object (for `status`): the same rules, read once.
pub async fn check(applier: &Applier, r: &Resolved, live: &Value) -> Readiness {
    let group = r.resource.group.as_str();
    let kind = r.resource.kind.as_str();
    let Some(o) = ObjectRef::of(live) else {
        return Readiness::Waiting("unreadable object".into());
    };
    match readiness::rule(group, kind, live) {
        Rule::Applied => Readiness::Ready,
        Rule::OwnStatus => {
            let wffc =
                kind == "PersistentVolumeClaim" && wait_for_first_consumer(applier, live).await;
            readiness::own_status(group, kind, live, wffc)
        }
        Rule::ServiceEndpoints => has_ready_endpoints(applier, &o.namespace, &o.name).await,
        Rule::Webhooks(services) => {
            let ca = readiness::webhook_ca(live);
            if ca != Readiness::Ready {
                return ca;
            }
            for (ns, name) in services {
                if has_ready_endpoints(applier, &ns, &name).await != Readiness::Ready {
                    return Readiness::Waiting(format!(
                        "Service `{name}` in `{ns}` that serves the webhook has no ready endpoints"
                    ));
                }
            }
            Readiness::Ready
        }
        Rule::IngressCertificates(secrets) => {
            let Ok(secret) = resolve(applier, "v1", "Secret").await else {
                return Readiness::Waiting("secrets unknown".into());
            };
            let api = applier.api(&secret, &o.namespace);
            for name in secrets {
                let ok = api
                    .get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|s| readiness::has_certificate(&to_value(&s, &secret)));
                if !ok {
                    return Readiness::Waiting(format!(
                        "no certificate in TLS secret `{name}` yet"
                    ));
                }
            }
            Readiness::Ready
        }
    }
}

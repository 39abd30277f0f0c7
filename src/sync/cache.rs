//! The watch cache: for every kind an Application manages, one LIST and then a WATCH (kube-
//! runtime's watcher, which re-lists on `410 Gone`), keeping the objects that carry an Argo
//! tracking id, and telling the engine which Application an event concerns.
//!
//! Place in the data flow: the cluster → [`Cache`] → live objects for the diff, health and
//! prune decisions; tracked-object events → engine triggers (self-heal).
//!
//! Architecture invariant: a reconcile never LISTs or GETs managed objects itself; it reads this
//! cache, so a no-op reconcile of 1,000 objects costs no API request beyond the first LIST per
//! kind. Objects without a tracking id are kept by name only (not their content), so the cache
//! also knows which names are free: creating 1,000 new objects costs no GET either. After a re-list (a watch that ended with 410 Gone) the kind's contents are replaced as a
//! whole and every Application with an object in the old or new contents is triggered, so a change
//! made while the watch was down is never missed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};

use super::tracking::{TRACKING_ID, parse_tracking_id};
use crate::cluster::apply::{Resolved, to_value};
use crate::model::kinds::ObjectRef;

/// An event worth a reconcile: a tracked object of this app key changed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Touched {
    /// The `<app>` part of the tracking id.
    pub app_key: String,
}

/// What the cache knows of one object.
#[derive(Clone, Debug)]
pub enum Known {
    /// It exists and carries a tracking id: here it is, as last seen.
    Tracked(Arc<Value>),
    /// It exists without a tracking id (its content is not kept).
    Untracked,
    /// No such object (as of the watch's last event).
    Absent,
    /// Its kind is not watched (or not listed yet): the cache cannot tell.
    Unknown,
}

/// Objects of one kind.
struct KindStore {
    objects: Arc<RwLock<HashMap<ObjectRef, Arc<Value>>>>,
    /// Names of the objects without a tracking id.
    others: Arc<RwLock<HashSet<ObjectRef>>>,
    synced: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KindStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The cache of every watched kind.
pub struct Cache {
    client: kube::Client,
    /// Watched stores, by `<apiVersion>/<Kind>@<namespace>` ("" = all namespaces).
    kinds: Mutex<HashMap<String, Arc<KindStore>>>,
    /// With namespace-scoped RBAC: namespaced kinds are watched in these namespaces only, and
    /// cluster-scoped kinds not at all.
    namespaces: Option<Vec<String>>,
    touched: mpsc::UnboundedSender<Touched>,
    changed: Arc<Notify>,
    sync_timeout: Duration,
}

/// Waiting for a kind's first LIST failed.
#[derive(Debug, thiserror::Error)]
#[error("list `{plural}` ({api_version}) for the watch cache: {message}")]
pub struct CacheError {
    /// Plural resource.
    pub plural: String,
    /// apiVersion.
    pub api_version: String,
    /// Why.
    pub message: String,
}

impl crate::edges::error::Diagnostic for CacheError {
    fn hints(&self) -> Vec<String> {
        vec!["check that the engine may list and watch this kind (its ClusterRole)".into()]
    }
}

fn kind_key(r: &Resolved, namespace: &str) -> String {
    format!("{}/{}@{namespace}", r.resource.api_version, r.resource.kind)
}

impl Cache {
    /// A cache sending "touched" events to `touched`.
    pub fn new(
        client: kube::Client,
        touched: mpsc::UnboundedSender<Touched>,
        namespaces: Option<Vec<String>>,
    ) -> Cache {
        Cache {
            client,
            kinds: Mutex::new(HashMap::new()),
            namespaces,
            touched,
            changed: Arc::new(Notify::new()),
            sync_timeout: Duration::from_secs(60),
        }
    }

    /// Notified on every change to any cached object (for waits on health).
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Kinds being watched.
    pub fn watched(&self) -> usize {
        self.kinds.lock().expect("cache kinds").len()
    }

    /// The namespaces `r` is watched in: `[""]` (all) unless the engine is namespace-scoped;
    /// `None` for a cluster-scoped kind under namespace scope (it may not be watched).
    fn scopes(&self, r: &Resolved) -> Option<Vec<String>> {
        match &self.namespaces {
            None => Some(vec![String::new()]),
            Some(_) if !r.namespaced => None,
            Some(ns) => Some(ns.clone()),
        }
    }

    /// The store key of the object `oref` of kind `r`.
    fn key_of(&self, r: &Resolved, oref: &ObjectRef) -> String {
        match &self.namespaces {
            Some(_) if r.namespaced => kind_key(r, &oref.namespace),
            _ => kind_key(r, ""),
        }
    }

    /// Start watching `r` if not yet (without waiting for its first LIST).
    pub fn watch(&self, r: &Resolved) {
        for ns in self.scopes(r).unwrap_or_default() {
            let _ = self.store(r, &ns);
        }
    }

    fn store(&self, r: &Resolved, namespace: &str) -> Arc<KindStore> {
        let mut kinds = self.kinds.lock().expect("cache kinds");
        kinds
            .entry(kind_key(r, namespace))
            .or_insert_with(|| Arc::new(self.start(r.clone(), namespace)))
            .clone()
    }

    /// Start watching `r` if not yet, and wait until its first LIST is in.
    pub async fn ensure(&self, r: &Resolved) -> Result<(), CacheError> {
        let Some(scopes) = self.scopes(r) else {
            return Err(CacheError {
                plural: r.resource.plural.clone(),
                api_version: r.resource.api_version.clone(),
                message: format!(
                    "`{}` is cluster-scoped, and the engine is limited to the namespaces {}",
                    r.resource.kind,
                    self.namespaces
                        .iter()
                        .flatten()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        for ns in scopes {
            let store = self.store(r, &ns);
            let mut synced = store.synced.clone();
            let wait = synced.wait_for(|s| *s);
            if !matches!(
                tokio::time::timeout(self.sync_timeout, wait).await,
                Ok(Ok(_))
            ) {
                return Err(CacheError {
                    plural: r.resource.plural.clone(),
                    api_version: r.resource.api_version.clone(),
                    message: format!("no complete list within {} s", self.sync_timeout.as_secs()),
                });
            }
        }
        Ok(())
    }

    /// Whether an object in `namespace` may be managed ("" = cluster-scoped).
    pub fn allows(&self, namespace: &str) -> bool {
        match &self.namespaces {
            None => true,
            Some(ns) => !namespace.is_empty() && ns.iter().any(|n| n == namespace),
        }
    }

    fn start(&self, r: Resolved, namespace: &str) -> KindStore {
        let (tx, rx) = watch::channel(false);
        let objects: Arc<RwLock<HashMap<ObjectRef, Arc<Value>>>> = Arc::default();
        let store_objects = objects.clone();
        let others: Arc<RwLock<HashSet<ObjectRef>>> = Arc::default();
        let store_others = others.clone();
        let api: Api<DynamicObject> = if namespace.is_empty() {
            Api::all_with(self.client.clone(), &r.resource)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, &r.resource)
        };
        // One LIST, however many objects: the page limit would turn 1,000 objects into two.
        let cfg = watcher::Config {
            page_size: None,
            ..Default::default()
        };
        let touched = self.touched.clone();
        let changed = self.changed.clone();
        let resolved = r.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
            let mut buffer: HashMap<ObjectRef, Arc<Value>> = HashMap::new();
            let mut buffer_others: HashSet<ObjectRef> = HashSet::new();
            while let Some(ev) = stream.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::debug!(kind = %resolved.resource.kind, error = %e, "watch error; the watcher retries");
                        continue;
                    }
                };
                match ev {
                    Event::Init => {
                        buffer.clear();
                        buffer_others.clear();
                    }
                    Event::InitApply(o) => match keep(&o, &resolved) {
                        Some((k, v)) => {
                            buffer.insert(k, Arc::new(v));
                        }
                        None => buffer_others.extend(name_of(&o, &resolved)),
                    },
                    Event::InitDone => {
                        let fresh = std::mem::take(&mut buffer);
                        let mut apps: HashSet<String> = HashSet::new();
                        {
                            let mut objs = store_objects.write().expect("cache objects");
                            // Objects that changed or vanished while the watch was down.
                            for (k, v) in objs.iter() {
                                if fresh.get(k).map(|n| n.as_ref()) != Some(v.as_ref()) {
                                    apps.extend(app_of(v));
                                }
                            }
                            for (k, v) in &fresh {
                                if objs.get(k).map(|o| o.as_ref()) != Some(v.as_ref()) {
                                    apps.extend(app_of(v));
                                }
                            }
                            *objs = fresh;
                        }
                        *store_others.write().expect("cache names") =
                            std::mem::take(&mut buffer_others);
                        let _ = tx.send(true);
                        for app_key in apps {
                            let _ = touched.send(Touched { app_key });
                        }
                        changed.notify_waiters();
                    }
                    Event::Apply(o) => {
                        let kept = keep(&o, &resolved);
                        let oref = ObjectRef::of(&to_value(&o, &resolved));
                        let mut apps = Vec::new();
                        {
                            let mut objs = store_objects.write().expect("cache objects");
                            let mut names = store_others.write().expect("cache names");
                            match (kept, oref) {
                                (Some((k, v)), _) => {
                                    names.remove(&k);
                                    apps.extend(app_of(&v));
                                    if let Some(old) = objs.insert(k, Arc::new(v)) {
                                        apps.extend(app_of(&old));
                                    }
                                }
                                // The tracking id was removed: it left whoever tracked it.
                                (None, Some(k)) => {
                                    if let Some(old) = objs.remove(&k) {
                                        apps.extend(app_of(&old));
                                    }
                                    names.insert(k);
                                }
                                (None, None) => {}
                            }
                        }
                        for app_key in apps {
                            let _ = touched.send(Touched { app_key });
                        }
                        changed.notify_waiters();
                    }
                    Event::Delete(o) => {
                        let v = to_value(&o, &resolved);
                        if let Some(k) = ObjectRef::of(&v) {
                            store_others.write().expect("cache names").remove(&k);
                            let old = store_objects.write().expect("cache objects").remove(&k);
                            if let Some(app_key) = old.and_then(|o| app_of(&o)) {
                                let _ = touched.send(Touched { app_key });
                            }
                        }
                        changed.notify_waiters();
                    }
                }
            }
        });
        KindStore {
            objects,
            others,
            synced: rx,
            task,
        }
    }

    /// The cached object, if it exists and carries a tracking id.
    pub fn get(&self, r: &Resolved, oref: &ObjectRef) -> Option<Arc<Value>> {
        let kinds = self.kinds.lock().expect("cache kinds");
        let store = kinds.get(&self.key_of(r, oref))?;
        let objs = store.objects.read().expect("cache objects");
        objs.get(oref).cloned()
    }

    /// What the cache knows of `oref` (of kind `r`): enough to skip the GET before an apply.
    pub fn knows(&self, r: &Resolved, oref: &ObjectRef) -> Known {
        let kinds = self.kinds.lock().expect("cache kinds");
        let Some(store) = kinds.get(&self.key_of(r, oref)) else {
            return Known::Unknown;
        };
        if !*store.synced.borrow() {
            return Known::Unknown;
        }
        if let Some(v) = store.objects.read().expect("cache objects").get(oref) {
            return Known::Tracked(v.clone());
        }
        if store.others.read().expect("cache names").contains(oref) {
            return Known::Untracked;
        }
        Known::Absent
    }

    /// Every cached object whose tracking id names `app_key`, of the kinds in `kinds`.
    pub fn tracked_by(&self, app_key: &str, kinds: &[Resolved]) -> Vec<(Resolved, Arc<Value>)> {
        let all = self.kinds.lock().expect("cache kinds");
        let mut out = Vec::new();
        for r in kinds {
            for ns in self.scopes(r).unwrap_or_default() {
                let Some(store) = all.get(&kind_key(r, &ns)) else {
                    continue;
                };
                let objs = store.objects.read().expect("cache objects");
                for v in objs.values() {
                    if app_of(v).as_deref() == Some(app_key) {
                        out.push((r.clone(), v.clone()));
                    }
                }
            }
        }
        out
    }

    /// Put an object the engine just wrote, so the status it writes next reflects it even before
    /// the watch event arrives (the watch event then replaces it).
    pub fn remember(&self, r: &Resolved, obj: Value) {
        let Some(oref) = ObjectRef::of(&obj) else {
            return;
        };
        let kinds = self.kinds.lock().expect("cache kinds");
        let Some(store) = kinds.get(&self.key_of(r, &oref)) else {
            return;
        };
        let mut objs = store.objects.write().expect("cache objects");
        if obj["metadata"]["annotations"][TRACKING_ID].is_string() {
            store.others.write().expect("cache names").remove(&oref);
            // Never go back in time: keep the newer of what we have and what we wrote.
            let newer = objs.get(&oref).is_none_or(|old| rv(old) <= rv(&obj));
            if newer {
                objs.insert(oref, Arc::new(obj));
            }
        }
    }

    /// Forget an object the engine just deleted.
    pub fn forget(&self, r: &Resolved, oref: &ObjectRef) {
        let kinds = self.kinds.lock().expect("cache kinds");
        if let Some(store) = kinds.get(&self.key_of(r, oref)) {
            store.objects.write().expect("cache objects").remove(oref);
        }
    }
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Keep an object only when it carries a tracking id (memory stays proportional to what the
/// engine manages, not to the cluster).
fn keep(o: &DynamicObject, r: &Resolved) -> Option<(ObjectRef, Value)> {
    let tracked = o
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(TRACKING_ID));
    if !tracked {
        return None;
    }
    let mut v = to_value(o, r);
    // managedFields are kept: the diff needs our manager's field set.
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("selfLink");
    }
    Some((ObjectRef::of(&v)?, v))
}

/// The identity of an object kept by name only.
fn name_of(o: &DynamicObject, r: &Resolved) -> Option<ObjectRef> {
    Some(ObjectRef {
        group: r.resource.group.clone(),
        kind: r.resource.kind.clone(),
        namespace: if r.namespaced {
            o.metadata.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        },
        name: o.metadata.name.clone()?,
    })
}

fn app_of(v: &Value) -> Option<String> {
    let id = v["metadata"]["annotations"][TRACKING_ID].as_str()?;
    parse_tracking_id(id).map(|t| t.app)
}

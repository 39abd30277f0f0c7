//! The long-running loop behind `homelab sync --watch` and `--in-cluster`: watch Applications,
//! collect triggers (Application changes, tracked-object events, webhooks, polling and backoff
//! timers), and reconcile each Application — one reconcile per Application at a time, several
//! Applications at once, only while holding the Lease.
//!
//! Place in the data flow: triggers → [`run`] → [`super::engine::Engine::reconcile`].
//!
//! Architecture invariant: an Application's own status writes never trigger it again (only a
//! change to its spec, operation, finalizers, deletion or refresh annotation does), and a trigger
//! that arrives while the Application is being reconciled is remembered and run once afterwards,
//! so events coalesce instead of piling up and nothing loops on its own writes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::app;
use super::cache::Touched;
use super::engine::{Engine, Fetch, Mode};
use super::webhook::Push;

use super::app::REFRESH_ANNOTATION;

/// Something that asks for reconciles.
#[derive(Clone, Debug)]
pub enum Trigger {
    /// One Application by name.
    App(String),
    /// A git push: every Application whose repoURL it concerns.
    Push(Push),
    /// Every Application.
    All,
}

/// Loop settings.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Applications reconciled at once.
    pub concurrency: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig { concurrency: 8 }
    }
}

/// What part of an Application a reconcile reacts to: not its status.
pub fn fingerprint(app: &Value) -> String {
    let meta = &app["metadata"];
    serde_json::to_string(&serde_json::json!([
        app["spec"],
        app["operation"],
        meta["deletionTimestamp"],
        meta["finalizers"],
        meta["annotations"][REFRESH_ANNOTATION],
    ]))
    .expect("values serialize")
}

/// Run until `shutdown` resolves.
pub async fn run(
    engine: Arc<Engine>,
    cfg: SchedulerConfig,
    mut triggers: mpsc::UnboundedReceiver<Trigger>,
    mut touched: mpsc::UnboundedReceiver<Touched>,
    mut leader: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let api = engine.apps_api().clone();
    let mut app_events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut apps: HashMap<String, Value> = HashMap::new();
    let mut prints: HashMap<String, String> = HashMap::new();
    let mut buffer: HashMap<String, Value> = HashMap::new();
    let mut pending: HashSet<String> = HashSet::new();
    // Apps whose next reconcile must ask git: set by every trigger except events on managed
    // objects and backoff timers (the desired state did not change then), cleared when it runs.
    let mut refetch: HashSet<String> = HashSet::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut again: HashSet<String> = HashSet::new();
    // Next wake-up per app, and whether it is the poll (ask git) or a backoff.
    let mut due: HashMap<String, (Instant, bool)> = HashMap::new();
    let mut tasks: JoinSet<(String, Option<(Duration, bool)>)> = JoinSet::new();
    let far = Duration::from_secs(3600);

    loop {
        let next = due
            .values()
            .map(|(t, _)| *t)
            .min()
            .unwrap_or_else(|| Instant::now() + far);
        tokio::select! {
            _ = &mut shutdown => break,
            Some(t) = triggers.recv() => match t {
                Trigger::App(n) => { refetch.insert(n.clone()); pending.insert(n); }
                Trigger::All => {
                    refetch.extend(apps.keys().cloned());
                    pending.extend(apps.keys().cloned());
                }
                Trigger::Push(p) => {
                    for (n, a) in &apps {
                        if a["spec"]["source"]["repoURL"].as_str().is_some_and(|u| p.concerns(u)) {
                            refetch.insert(n.clone());
                            pending.insert(n.clone());
                        }
                    }
                }
            },
            Some(t) = touched.recv() => {
                // `<ns>_<name>` for apps outside the control namespace (names have no `_`).
                let name = t.app_key.rsplit('_').next().unwrap_or(&t.app_key).to_string();
                if apps.contains_key(&name) {
                    pending.insert(name);
                }
            },
            Some(ev) = app_events.next() => match ev {
                Ok(Event::Init) => buffer.clear(),
                Ok(Event::InitApply(o)) => {
                    let v = to_app(&o);
                    if let Some(n) = name_of(&v) { buffer.insert(n, v); }
                }
                Ok(Event::InitDone) => {
                    let fresh = std::mem::take(&mut buffer);
                    for n in apps.keys() {
                        if !fresh.contains_key(n) { due.remove(n); prints.remove(n); }
                    }
                    for (n, v) in &fresh {
                        let fp = fingerprint(v);
                        if prints.get(n) != Some(&fp) {
                            refetch.insert(n.clone());
                            pending.insert(n.clone());
                            prints.insert(n.clone(), fp);
                        }
                    }
                    apps = fresh;
                    let _ = ready.send(true);
                }
                Ok(Event::Apply(o)) => {
                    let v = to_app(&o);
                    if let Some(n) = name_of(&v) {
                        let fp = fingerprint(&v);
                        if prints.get(&n) != Some(&fp) {
                            refetch.insert(n.clone());
                            pending.insert(n.clone());
                            prints.insert(n.clone(), fp);
                        }
                        apps.insert(n, v);
                    }
                }
                Ok(Event::Delete(o)) => {
                    let v = to_app(&o);
                    if let Some(n) = name_of(&v) {
                        apps.remove(&n);
                        prints.remove(&n);
                        due.remove(&n);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watch Applications"),
            },
            _ = tokio::time::sleep_until(next) => {
                let now = Instant::now();
                let ripe: Vec<(String, bool)> = due
                    .iter()
                    .filter(|(_, (t, _))| *t <= now)
                    .map(|(n, (_, poll))| (n.clone(), *poll))
                    .collect();
                for (n, poll) in ripe {
                    due.remove(&n);
                    if poll { refetch.insert(n.clone()); }
                    pending.insert(n);
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok((n, wake)) = done {
                    running.remove(&n);
                    if let Some((w, poll)) = wake { due.insert(n.clone(), (Instant::now() + w, poll)); }
                    if again.remove(&n) { pending.insert(n); }
                }
            },
            Ok(()) = leader.changed() => {
                if *leader.borrow() {
                    tracing::info!("holding the lease: reconciling every Application");
                    refetch.extend(apps.keys().cloned());
                    pending.extend(apps.keys().cloned());
                }
            },
        }
        if !*leader.borrow() {
            continue;
        }
        let names: Vec<String> = pending.drain().collect();
        for n in names {
            if running.contains(&n) {
                again.insert(n);
                continue;
            }
            if running.len() >= cfg.concurrency.max(1) {
                again.insert(n);
                continue;
            }
            let Some(app) = apps.get(&n).cloned() else {
                continue;
            };
            running.insert(n.clone());
            let engine = engine.clone();
            let fetch = if refetch.remove(&n) {
                Fetch::Always
            } else {
                Fetch::IfNeeded
            };
            tasks.spawn(async move {
                let wake = match engine.reconcile_with(&app, Mode::Auto, fetch).await {
                    Ok(o) => o.wake_in.map(|w| (w, o.wake_is_poll)),
                    Err(e) => {
                        tracing::warn!(app = %n, error = %e, "reconcile");
                        Some((Duration::from_secs(10), true))
                    }
                };
                (n, wake)
            });
        }
        // Apps held back by the concurrency bound run as slots free up.
        if running.len() < cfg.concurrency.max(1) && !again.is_empty() {
            let free: Vec<String> = again
                .iter()
                .filter(|n| !running.contains(*n))
                .cloned()
                .collect();
            for n in free {
                again.remove(&n);
                pending.insert(n);
            }
        }
    }
    tasks.shutdown().await;
}

fn to_app(o: &kube::api::DynamicObject) -> Value {
    let mut v = serde_json::to_value(o).expect("objects serialize");
    v["apiVersion"] = Value::String(app::API_VERSION.into());
    v["kind"] = Value::String(app::KIND.into());
    v
}

fn name_of(v: &Value) -> Option<String> {
    v["metadata"]["name"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_writes_do_not_change_the_fingerprint() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "1"}, "spec": {"source": {"repoURL": "r"}}});
        let mut b = a.clone();
        b["status"] = json!({"sync": {"status": "Synced"}});
        b["metadata"]["resourceVersion"] = json!("2");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b["metadata"]["annotations"] = json!({REFRESH_ANNOTATION: "normal"});
        assert_ne!(fingerprint(&a), fingerprint(&b));
        let mut c = a.clone();
        c["spec"]["source"]["targetRevision"] = json!("v2");
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}

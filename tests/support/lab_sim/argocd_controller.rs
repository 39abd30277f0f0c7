//! A stand-in for Argo CD v3.5.1's application controller and its webhook endpoint, for the
//! `argocd` stack (issue 15): what the lab's loop needs of Argo CD, and no more.
//!
//! Started by the kubelet ([`super::kubelet`]) when `argocd-application-controller` (the
//! StatefulSet of install.yaml) rolls out; `argocd-server`'s pod serves [`webhook`] on its
//! container port 8080. Every rule names its upstream file in argoproj/argo-cd v3.5.1.
//!
//! What it does: for each Application in the `argocd` namespace, it fetches
//! `spec.source.repoURL` at `spec.source.targetRevision` with real `git` (credentials from the
//! repository Secret whose `url` is the repoURL, as util/db/repository.go matches them), reads
//! the directory `spec.source.path` (`*.yaml`, `*.yml`, `*.json`, not recursive: the Directory
//! source type, reposerver/repository/repository.go `findManifests`), applies it to
//! `spec.destination.namespace` under `syncPolicy.automated` (creating the namespace with
//! `CreateNamespace=true`), and writes the status fields Argo writes
//! (pkg/apis/application/v1alpha1/types.go `ApplicationStatus`).
//!
//! When it refreshes (controller/appcontroller.go `needRefreshAppStatus`): an Application it has
//! not reconciled yet or whose spec changed, one the webhook asked to refresh, and every
//! `timeout.reconciliation` of `argocd-cm` (default 120 s; see `resync_period`) — or
//! sooner only where a test sets [`super::World::argocd_poll`]. Between refreshes it re-reads the
//! health of what it applied (the cluster cache's watch, controller/cache/cache.go).
//!
//! What it does NOT model: manifest generation other than a plain directory (Helm, Kustomize,
//! plugins), hooks and sync waves, pruning, client-side apply's last-applied annotation (it uses
//! server-side apply), diffing beyond "every desired object exists at the revision synced",
//! retries and backoff, reconciliation jitter, AppProjects' rules, multi-source Applications,
//! RBAC on the controller's service account, the UI and API beyond `/api/webhook`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::World;
use crate::support::fake_kube::store::{WriteOptions, now_rfc3339};

const NS: &str = "argocd";
/// The field manager of what the stand-in applies.
const MANAGER: &str = "argocd-controller";

/// The controller's memory between reconciliations.
#[derive(Default)]
pub struct ArgoCd {
    /// Applications the webhook asked to refresh (`ns/name`).
    pending: Mutex<Vec<String>>,
    /// Per Application: when it was last refreshed from git, and the spec it was compared with.
    seen: Mutex<BTreeMap<String, (Instant, Value)>>,
    /// What happened, for failure messages.
    pub log: Mutex<Vec<String>>,
    wake: tokio::sync::Notify,
}

impl ArgoCd {
    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

/// Start the controller loop (once per world).
pub fn start(world: &Arc<World>) {
    let mut slot = world.argocd.lock().unwrap();
    if slot.is_some() {
        return;
    }
    let argo = Arc::new(ArgoCd::default());
    *slot = Some(argo.clone());
    let world = world.clone();
    tokio::spawn(async move {
        loop {
            let apps = applications(&world);
            for app in apps {
                reconcile(&world, &argo, &app).await;
            }
            // The cluster cache reports changes of managed resources at once; modelled as a
            // short tick, which re-reads health only (no git fetch).
            let _ = tokio::time::timeout(Duration::from_millis(200), argo.wake.notified()).await;
        }
    });
}

/// The Applications in Argo CD's namespace.
fn applications(world: &World) -> Vec<Value> {
    let store = world.kube.store.lock().unwrap();
    match store.type_for("argoproj.io/v1alpha1", "Application") {
        Some(rt) => store.list(&rt, Some(NS), &Default::default(), &Default::default()),
        None => Vec::new(),
    }
}

/// The controller's resync period: `ARGOCD_RECONCILIATION_TIMEOUT`, which install.yaml's
/// StatefulSet maps from `argocd-cm`'s `timeout.reconciliation` (optional key), default 120 s
/// (cmd/argocd-application-controller/commands/argocd_application_controller.go
/// `defaultAppResyncPeriod`) — unless the test set a faster poll.
fn resync_period(world: &World) -> Duration {
    if let Some(d) = *world.argocd_poll.lock().unwrap() {
        return d;
    }
    world
        .data("configmaps", NS, "argocd-cm")
        .and_then(|d| d.get("timeout.reconciliation").cloned())
        .and_then(|s| parse_duration(&s))
        .unwrap_or(Duration::from_secs(120))
}

/// Go's `time.ParseDuration` for the forms argocd-cm uses (`180s`, `3m`, `1h`, `0`).
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(60 * n),
        "h" => Duration::from_secs(3600 * n),
        "ms" => Duration::from_millis(n),
        _ => return None,
    })
}

fn key(app: &Value) -> String {
    format!(
        "{}/{}",
        app["metadata"]["namespace"].as_str().unwrap_or_default(),
        app["metadata"]["name"].as_str().unwrap_or_default()
    )
}

async fn reconcile(world: &Arc<World>, argo: &ArgoCd, app: &Value) {
    let id = key(app);
    let spec = app["spec"].clone();
    let forced = {
        let mut p = argo.pending.lock().unwrap();
        let hit = p.contains(&id);
        p.retain(|k| k != &id);
        hit
    };
    let due = match argo.seen.lock().unwrap().get(&id) {
        None => true,
        Some((at, old)) => *old != spec || at.elapsed() >= resync_period(world),
    };
    let mut status = app["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    let source = spec["source"].clone();
    let dest_ns = spec["destination"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if forced || due {
        argo.seen
            .lock()
            .unwrap()
            .insert(id.clone(), (Instant::now(), spec.clone()));
        match fetch(world, &source).await {
            Err(e) => {
                // controller/state.go CompareAppState: a failed manifest generation is the
                // `ComparisonError` condition, sync status Unknown.
                argo.note(format!("{id}: {e}"));
                status["sync"] = json!({"status": "Unknown", "comparedTo": compared_to(&spec)});
                status["conditions"] = json!([{
                    "type": "ComparisonError",
                    "message": format!("Failed to load target state: {e}"),
                    "lastTransitionTime": now_rfc3339(),
                }]);
            }
            Ok((revision, desired)) => {
                status.as_object_mut().unwrap().remove("conditions");
                let in_sync = status["sync"]["revision"] == revision.as_str()
                    && status["sync"]["status"] == "Synced"
                    && desired.iter().all(|o| live(world, o, &dest_ns).is_some());
                // controller/appcontroller.go autoSync: only with `syncPolicy.automated`.
                if !in_sync && spec["syncPolicy"]["automated"].is_object() {
                    argo.note(format!("{id}: sync to {revision}"));
                    sync(
                        world,
                        &id,
                        &spec,
                        &revision,
                        &desired,
                        &dest_ns,
                        &mut status,
                    );
                } else if !in_sync {
                    status["sync"] = json!({"status": "OutOfSync", "revision": revision, "comparedTo": compared_to(&spec)});
                }
                status["resources"] = Value::Array(
                    desired
                        .iter()
                        .map(|o| resource_status(world, o, &dest_ns))
                        .collect(),
                );
            }
        }
        // controller/appcontroller.go processAppRefreshQueueItem: reconciledAt on a full
        // comparison; sourceType and controllerNamespace on every one.
        status["reconciledAt"] = json!(now_rfc3339());
        status["sourceType"] = json!("Directory");
        status["controllerNamespace"] = json!(NS);
    } else if let Some(resources) = status["resources"].as_array().cloned() {
        // Between refreshes: health of the managed resources as the cluster cache sees them.
        status["resources"] = Value::Array(
            resources
                .iter()
                .map(|r| {
                    let probe = json!({"apiVersion": api_version(r), "kind": r["kind"], "metadata": {"name": r["name"], "namespace": r["namespace"]}});
                    resource_status(world, &probe, &dest_ns)
                })
                .collect(),
        );
    } else {
        return;
    }
    status["health"] = app_health(&status["resources"]);
    if status != app["status"] {
        let name = app["metadata"]["name"].as_str().unwrap_or_default();
        let probe = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": name, "namespace": NS}});
        {
            let mut store = world.kube.store.lock().unwrap();
            if let Some((_, k)) = store.key_for(&probe) {
                store.set_status(&k, status);
            }
        }
        world.kube.publish();
    }
}

fn api_version(r: &Value) -> String {
    match r["group"].as_str().unwrap_or_default() {
        "" => r["version"].as_str().unwrap_or_default().to_string(),
        g => format!("{g}/{}", r["version"].as_str().unwrap_or_default()),
    }
}

/// `status.sync.comparedTo` (types.go `ComparedTo`): the source and destination compared.
fn compared_to(spec: &Value) -> Value {
    json!({"source": spec["source"], "destination": spec["destination"]})
}

/// The repository's credentials: the Secret labelled `argocd.argoproj.io/secret-type:
/// repository` whose `url` is the repoURL (util/db/repository_secrets.go).
fn credentials(world: &World, url: &str) -> Option<(String, String)> {
    let secrets = {
        let store = world.kube.store.lock().unwrap();
        let rt = store.type_for("v1", "Secret")?;
        store.list(&rt, Some(NS), &Default::default(), &Default::default())
    };
    secrets
        .into_iter()
        .filter(|s| {
            s.pointer("/metadata/labels/argocd.argoproj.io~1secret-type")
                .and_then(Value::as_str)
                == Some("repository")
        })
        .find_map(|s| {
            let name = s["metadata"]["name"].as_str()?.to_string();
            let d = world.data("secrets", NS, &name)?;
            (d.get("url")?.trim_end_matches('/') == url.trim_end_matches('/')).then(|| {
                (
                    d.get("username").cloned().unwrap_or_default(),
                    d.get("password").cloned().unwrap_or_default(),
                )
            })
        })
}

/// What the repo-server generates: the commit `targetRevision` names and the directory's
/// objects at it.
async fn fetch(world: &Arc<World>, source: &Value) -> Result<(String, Vec<Value>), String> {
    let url = source["repoURL"].as_str().unwrap_or_default();
    let rev = source["targetRevision"].as_str().unwrap_or("HEAD");
    let path = source["path"].as_str().unwrap_or(".");
    let dir = tempfile::tempdir_in(&world.work).map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-c")
        .arg("protocol.version=2")
        .env("http_proxy", format!("http://{}", world.net.http_proxy()))
        .env("GIT_TERMINAL_PROMPT", "0");
    if let Some((u, p)) = credentials(world, url) {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        cmd.arg("-c")
            .arg(format!("http.extraHeader=Authorization: Basic {basic}"));
    }
    cmd.args(["clone", "--quiet", "--depth", "1"]);
    if rev != "HEAD" {
        cmd.args(["--branch", rev]);
    }
    let out = cmd
        .arg(url)
        .arg(dir.path().join("repo"))
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "rpc error: code = Unknown desc = git clone {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let repo = dir.path().join("repo");
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&repo)
        .output()
        .map_err(|e| e.to_string())?;
    let revision = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let app_dir = repo.join(path);
    if !app_dir.is_dir() {
        // reposerver/repository/repository.go: "app path does not exist".
        return Err(format!("{path}: app path does not exist"));
    }
    Ok((revision, read_dir(&app_dir)?))
}

fn read_dir(dir: &Path) -> Result<Vec<Value>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| e.to_string())?;
        for (_, doc) in homelab::edges::yaml::documents(&text)
            .map_err(|e| format!("{}: {}", f.display(), e.full()))?
        {
            if doc.is_object() {
                out.push(doc);
            }
        }
    }
    Ok(out)
}

/// The live object for a desired one (in the destination namespace when it has none).
fn live(world: &World, obj: &Value, dest_ns: &str) -> Option<Value> {
    let store = world.kube.store.lock().unwrap();
    let mut probe = obj.clone();
    let (rt, _) = store.key_for(&probe)?;
    if rt.namespaced && probe["metadata"]["namespace"].as_str().is_none() {
        probe["metadata"]["namespace"] = json!(dest_ns);
    }
    let (_, key) = store.key_for(&probe)?;
    store.render(&key)
}

/// Apply the revision's objects (controller/sync.go `SyncAppState`), writing
/// `status.operationState` and `status.sync` as a finished automated sync leaves them.
fn sync(
    world: &World,
    id: &str,
    spec: &Value,
    revision: &str,
    desired: &[Value],
    dest_ns: &str,
    status: &mut Value,
) {
    let started = now_rfc3339();
    let app_name = id.rsplit('/').next().unwrap_or_default();
    let create_ns = spec["syncPolicy"]["syncOptions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o == "CreateNamespace=true");
    let mut results = Vec::new();
    let mut failed = false;
    {
        let mut store = world.kube.store.lock().unwrap();
        if create_ns && !dest_ns.is_empty() {
            let ns =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": dest_ns}});
            if store
                .key_for(&ns)
                .and_then(|(_, k)| store.render(&k))
                .is_none()
                && let Some(rt) = store.type_for("v1", "Namespace")
            {
                let _ = store.apply(&rt, "", dest_ns, ns, &write_options());
            }
        }
        for obj in desired {
            let mut obj = obj.clone();
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            let api = obj["apiVersion"].as_str().unwrap_or_default().to_string();
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let (group, version) = api.rsplit_once('/').unwrap_or(("", api.as_str()));
            let Some(rt) = store.type_for(&api, &kind) else {
                failed = true;
                results.push(json!({"group": group, "version": version, "kind": kind, "namespace": dest_ns, "name": name,
                    "status": "SyncFailed", "message": format!("the server could not find the requested resource"), "syncPhase": "Sync"}));
                continue;
            };
            let ns = if rt.namespaced {
                obj["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(dest_ns)
                    .to_string()
            } else {
                String::new()
            };
            if rt.namespaced {
                obj["metadata"]["namespace"] = json!(ns);
            }
            // Annotation tracking (util/argo/resource_tracking.go, v3's default method):
            // `<app>:<group>/<kind>:<namespace>/<name>`.
            obj["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] =
                json!(format!("{app_name}:{group}/{kind}:{ns}/{name}"));
            let existed = store
                .key_for(&obj)
                .and_then(|(_, k)| store.render(&k))
                .is_some();
            let r = store.apply(&rt, &ns, &name, obj, &write_options());
            let (st, message) = match r {
                Ok(_) => (
                    "Synced",
                    format!(
                        "{}{}/{name} {}",
                        kind.to_lowercase(),
                        if group.is_empty() {
                            String::new()
                        } else {
                            format!(".{group}")
                        },
                        if existed { "configured" } else { "created" }
                    ),
                ),
                Err(e) => {
                    failed = true;
                    (
                        "SyncFailed",
                        e.status()["message"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                }
            };
            results.push(json!({"group": group, "version": version, "kind": kind, "namespace": ns, "name": name,
                "status": st, "message": message, "hookPhase": "Running", "syncPhase": "Sync"}));
        }
    }
    world.kube.publish();
    // pkg/apis/application/v1alpha1/types.go OperationState; controller/sync.go sets the
    // message "successfully synced (all tasks run)" on success, "one or more objects failed to
    // apply" when an apply failed (gitops-engine pkg/sync/sync_context.go).
    let (phase, message) = if failed {
        ("Failed", "one or more objects failed to apply")
    } else {
        ("Succeeded", "successfully synced (all tasks run)")
    };
    status["operationState"] = json!({
        "operation": {
            "sync": {"revision": revision, "prune": spec["syncPolicy"]["automated"]["prune"] == true,
                     "syncOptions": spec["syncPolicy"]["syncOptions"]},
            "initiatedBy": {"automated": true},
            "retry": {"limit": 5},
        },
        "phase": phase,
        "message": message,
        "startedAt": started,
        "finishedAt": now_rfc3339(),
        "syncResult": {"revision": revision, "source": spec["source"], "resources": results},
    });
    status["sync"] = json!({
        "status": if failed { "OutOfSync" } else { "Synced" },
        "revision": revision,
        "comparedTo": compared_to(spec),
    });
}

fn write_options() -> WriteOptions<'static> {
    WriteOptions {
        manager: MANAGER,
        force: true,
        dry_run: false,
        subresource_status: false,
    }
}

/// One `status.resources[]` entry (types.go `ResourceStatus`), with the health gitops-engine
/// gives the live object.
fn resource_status(world: &World, obj: &Value, dest_ns: &str) -> Value {
    let api = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api.rsplit_once('/').unwrap_or(("", api));
    let live = live(world, obj, dest_ns);
    let ns = live
        .as_ref()
        .and_then(|l| l["metadata"]["namespace"].as_str().map(str::to_string))
        .unwrap_or_else(|| {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or(dest_ns)
                .to_string()
        });
    let mut r = json!({
        "group": group, "version": version, "kind": obj["kind"], "namespace": ns,
        "name": obj["metadata"]["name"],
        "status": if live.is_some() { "Synced" } else { "OutOfSync" },
    });
    if let Some(h) = health(obj["kind"].as_str().unwrap_or_default(), live.as_ref()) {
        r["health"] = h;
    }
    r
}

/// gitops-engine pkg/health: `Missing` for an absent object; a Deployment is `Progressing`
/// until its rollout finished (health_deployment.go: observed generation, updated and available
/// replicas), `Degraded` past its progress deadline; kinds without a health check have none.
fn health(kind: &str, live: Option<&Value>) -> Option<Value> {
    let Some(l) = live else {
        return Some(json!({"status": "Missing"}));
    };
    if kind != "Deployment" {
        return None;
    }
    let int = |p: &str| l.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let want = l
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let deadline = l["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
    Some(if deadline {
        json!({"status": "Degraded", "message": format!("Deployment {:?} exceeded its progress deadline", l["metadata"]["name"].as_str().unwrap_or_default())})
    } else if int("/status/observedGeneration") < int("/metadata/generation") {
        json!({"status": "Progressing", "message": "Waiting for rollout to finish: observed deployment generation less than desired generation"})
    } else if int("/status/updatedReplicas") < want {
        json!({"status": "Progressing", "message": format!("Waiting for rollout to finish: {} out of {want} new replicas have been updated...", int("/status/updatedReplicas"))})
    } else if int("/status/availableReplicas") < int("/status/updatedReplicas") {
        json!({"status": "Progressing", "message": format!("Waiting for rollout to finish: {} of {} updated replicas are available...", int("/status/availableReplicas"), int("/status/updatedReplicas"))})
    } else {
        json!({"status": "Healthy"})
    })
}

/// controller/health.go `setApplicationHealth`: the worst health of the resources (gitops-engine
/// health.go `IsWorse`: Healthy < Suspended < Progressing < Missing < Degraded < Unknown).
fn app_health(resources: &Value) -> Value {
    let rank = |s: &str| match s {
        "Healthy" => 0,
        "Suspended" => 1,
        "Progressing" => 2,
        "Missing" => 3,
        "Degraded" => 4,
        _ => 5,
    };
    let mut worst = json!({"status": "Healthy"});
    for r in resources.as_array().into_iter().flatten() {
        if let Some(s) = r["health"]["status"].as_str()
            && rank(s) > rank(worst["status"].as_str().unwrap_or_default())
        {
            worst = r["health"].clone();
        }
    }
    worst["lastTransitionTime"] = json!(now_rfc3339());
    worst
}

/// argocd-server's `/api/webhook` (util/webhook/webhook.go `Handler`), for Gitea's push events:
/// the Gogs parser claims a request with `X-Gogs-Event` (checked before GitHub's, as Gitea sends
/// both); the signature `X-Gogs-Signature` is the hex HMAC-SHA256 of the body with
/// `webhook.gogs.secret` of argocd-secret (go-playground/webhooks v6 gogs/gogs.go): missing, 400
/// "Webhook processing failed"; wrong, 401 "Unauthorized"; no parser claims it, 400 "Unknown
/// webhook event". A push refreshes the Applications whose repoURL matches the payload's
/// `repository.html_url` (`GetWebURLRegex`: same host name and path) and whose targetRevision
/// is the pushed branch (`sourceRevisionHasChanged`).
pub async fn serve_webhook(world: Arc<World>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/api/webhook",
        axum::routing::any(
            move |method: axum::http::Method,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let world = world.clone();
                async move { webhook(&world, &method, &headers, &body) }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn webhook(
    world: &World,
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    let argo = world.argocd.lock().unwrap().clone();
    let note = |s: String| {
        if let Some(a) = &argo {
            a.note(s)
        }
    };
    if header("X-Gogs-Event").is_empty() {
        note("webhook: no parser claims the request".into());
        return (StatusCode::BAD_REQUEST, "Unknown webhook event\n".into());
    }
    let failed = |why: &str| {
        note(format!("webhook: processing failed: {why}"));
        let code = if method == axum::http::Method::POST {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::METHOD_NOT_ALLOWED
        };
        (code, "Webhook processing failed\n".to_string())
    };
    if method != axum::http::Method::POST {
        return failed("invalid HTTP Method");
    }
    let secret = world
        .data("secrets", NS, "argocd-secret")
        .and_then(|d| d.get("webhook.gogs.secret").cloned())
        .unwrap_or_default();
    if !secret.is_empty() {
        let sig = header("X-Gogs-Signature");
        if sig.is_empty() {
            return failed("missing X-Gogs-Signature Header");
        }
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let ok = hex::decode(sig)
            .map(|s| ring::hmac::verify(&key, body, &s).is_ok())
            .unwrap_or(false);
        if !ok {
            note("webhook: HMAC verification failed".into());
            return (StatusCode::UNAUTHORIZED, "Unauthorized\n".into());
        }
    }
    let Ok(payload) = serde_json::from_slice::<Value>(body) else {
        return failed("error parsing payload");
    };
    if header("X-Gogs-Event") != "push" {
        // The Gogs parser parses push events only; others are acknowledged and dropped.
        return (StatusCode::OK, String::new());
    }
    let html = payload["repository"]["html_url"]
        .as_str()
        .unwrap_or_default();
    let branch = payload["ref"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("refs/heads/")
        .to_string();
    let default = payload["repository"]["default_branch"].as_str() == Some(branch.as_str());
    let apps = applications(world);
    let mut refreshed = Vec::new();
    for app in &apps {
        let src = &app["spec"]["source"];
        let target = src["targetRevision"].as_str().unwrap_or("HEAD");
        let revision_changed = target == branch || (default && matches!(target, "" | "HEAD"));
        if revision_changed && same_repo(html, src["repoURL"].as_str().unwrap_or_default()) {
            refreshed.push(key(app));
        }
    }
    note(format!(
        "webhook: push to {html} ({branch}) refreshes {refreshed:?}"
    ));
    if let Some(a) = &argo {
        a.pending.lock().unwrap().extend(refreshed);
        a.wake.notify_one();
    }
    (StatusCode::OK, String::new())
}

/// `GetWebURLRegex(webURL)` matched against a repoURL: same host name (any scheme, user, port),
/// same path with an optional `.git`, case-insensitive.
fn same_repo(web_url: &str, repo_url: &str) -> bool {
    let parse = |u: &str| {
        reqwest::Url::parse(u).ok().map(|u| {
            (
                u.host_str().unwrap_or_default().to_lowercase(),
                u.path()
                    .trim_start_matches('/')
                    .trim_end_matches(".git")
                    .to_lowercase(),
            )
        })
    };
    matches!((parse(web_url), parse(repo_url)), (Some(a), Some(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_matches_repositories_by_host_and_path() {
        assert!(same_repo(
            "https://gitea.lab/lab/gitops",
            "https://gitea.lab:443/lab/gitops.git"
        ));
        assert!(!same_repo(
            "https://gitea.lab/lab/gitops",
            "http://gitea-http.gitea.svc.cluster.local:3000/lab/gitops.git"
        ));
        assert_eq!(parse_duration("180s"), Some(Duration::from_secs(180)));
        assert_eq!(parse_duration("3m"), Some(Duration::from_secs(180)));
    }
}

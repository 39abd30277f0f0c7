//! The engine reads the lab for its page: the `homelab-lab` ConfigMap (components and their
//! URLs), the health of the lab's Deployments, StatefulSets and DaemonSets (by the
//! `homelab.dev/component` label render puts on every object), the Applications, the
//! `homelab-verify` ConfigMap and its own sync history.
//!
//! Architecture invariant: reads only — ConfigMaps, workloads and Applications, never a Secret
//! (the engine's role could read them; the page must not). A part that cannot be read becomes a
//! line in [`LabPageState::problems`], never a failed page. One read per kind per page view, and
//! views within [`PageSource::ttl`] share one read.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};
use serde::Deserialize;
use serde_json::Value;

use super::{
    AppRow, CaSummary, ComponentRow, Health, LAB_CONFIGMAP, LabPageState, LastSync, ResourceResult,
    VERIFY_CONFIGMAP, VERIFY_KEY, VerifyRun,
};
use crate::edges::redact::Scrubber;
use crate::model::render::{LABEL_COMPONENT, LABEL_LAB};
use crate::sync::engine::Engine;
use crate::sync::status::HealthCode;

/// Where the page's inputs are and what it may show.
pub struct PageConfig {
    /// The engine's namespace, holding `homelab-lab` and `homelab-verify`.
    pub namespace: String,
    /// The lab CA certificate (public part), served for download.
    pub ca_pem: Option<String>,
    /// Values that must never reach the page (the webhook secret): scrubbed from the HTML as a
    /// last line of defence.
    pub scrub: Scrubber,
}

/// The page's inputs, read at most once per `ttl`.
pub struct PageSource {
    /// Settings.
    pub cfg: PageConfig,
    /// How long one read serves page views.
    pub ttl: Duration,
    last: Mutex<Option<(Instant, LabPageState)>>,
}

impl PageSource {
    /// A source over `cfg`.
    pub fn new(cfg: PageConfig) -> PageSource {
        PageSource {
            cfg,
            ttl: Duration::from_secs(2),
            last: Mutex::default(),
        }
    }

    /// The page as HTML, from a fresh or a recent read.
    pub async fn html(&self, engine: &Engine) -> String {
        let cached = {
            let last = self.last.lock().expect("page cache lock");
            last.as_ref()
                .filter(|(at, _)| at.elapsed() < self.ttl)
                .map(|(_, s)| s.clone())
        };
        let state = match cached {
            Some(s) => s,
            None => {
                let s = gather(engine, &self.cfg).await;
                *self.last.lock().expect("page cache lock") = Some((Instant::now(), s.clone()));
                s
            }
        };
        self.cfg.scrub.scrub(&super::html::render(&state))
    }
}

#[derive(Deserialize)]
struct ComponentEntry {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    url: String,
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn to_value(o: &DynamicObject, ar: &ApiResource) -> Value {
    let mut v = serde_json::to_value(o).expect("objects serialize");
    v["apiVersion"] = ar.api_version.clone().into();
    v["kind"] = ar.kind.clone().into();
    v
}

/// Read everything the page shows.
pub async fn gather(engine: &Engine, cfg: &PageConfig) -> LabPageState {
    let client = engine.client().clone();
    let mut s = LabPageState {
        generated_at: crate::sync::status::now(),
        ..Default::default()
    };
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), &cfg.namespace);

    let mut entries = Vec::new();
    match cms.get_opt(LAB_CONFIGMAP).await {
        Ok(Some(cm)) => {
            let data = cm.data.unwrap_or_default();
            s.lab = data.get("lab").cloned().unwrap_or_default();
            s.domain = data.get("domain").cloned().unwrap_or_default();
            match crate::edges::yaml::from_str::<Vec<ComponentEntry>>(
                data.get("components.yaml").map_or("[]", String::as_str),
            ) {
                Ok(e) => entries = e,
                Err(e) => s.problems.push(format!(
                    "ConfigMap `{LAB_CONFIGMAP}`: `components.yaml` is not a list of components ({e})"
                )),
            }
        }
        Ok(None) => s.problems.push(format!(
            "no ConfigMap `{LAB_CONFIGMAP}` in `{}`",
            cfg.namespace
        )),
        Err(e) => s
            .problems
            .push(format!("read ConfigMap `{LAB_CONFIGMAP}`: {e}")),
    }

    // Workloads of the lab's components, by component.
    let mut selector = LABEL_COMPONENT.to_string();
    if !s.lab.is_empty() {
        selector = format!("{LABEL_LAB}={},{LABEL_COMPONENT}", s.lab);
    }
    let lp = ListParams::default().labels(&selector);
    let mut by_component: BTreeMap<String, Vec<(String, crate::sync::status::Health)>> =
        BTreeMap::new();
    for ar in [
        resource("apps", "v1", "Deployment", "deployments"),
        resource("apps", "v1", "StatefulSet", "statefulsets"),
        resource("apps", "v1", "DaemonSet", "daemonsets"),
    ] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        match api.list(&lp).await {
            Ok(list) => {
                for o in &list.items {
                    let v = to_value(o, &ar);
                    let Some(component) = v["metadata"]["labels"][LABEL_COMPONENT].as_str() else {
                        continue;
                    };
                    if let Some(h) = crate::sync::health::assess(&v) {
                        let name = v["metadata"]["name"].as_str().unwrap_or_default();
                        by_component
                            .entry(component.to_string())
                            .or_default()
                            .push((format!("{}/{name}", ar.kind), h));
                    }
                }
            }
            Err(e) => s.problems.push(format!("list {}: {e}", ar.plural)),
        }
    }
    for e in entries {
        let workloads = by_component.remove(&e.name).unwrap_or_default();
        let (health, detail) = if workloads.is_empty() {
            (Health::None, String::new())
        } else {
            let agg = crate::sync::health::aggregate(workloads.iter().map(|(_, h)| h));
            let detail = workloads
                .iter()
                .map(|(n, h)| {
                    if h.message.is_empty() {
                        format!("{n} {}", h.status.as_str())
                    } else {
                        format!("{n} {} ({})", h.status.as_str(), h.message)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            (health_of(agg.status), detail)
        };
        s.components.push(ComponentRow {
            name: e.name,
            description: e.description,
            url: e.url,
            health,
            detail,
        });
    }

    match engine.list_apps().await {
        Ok(apps) => s.applications = apps.iter().map(app_row).collect(),
        Err(e) => s.problems.push(e.to_string()),
    }

    match cms.get_opt(VERIFY_CONFIGMAP).await {
        Ok(Some(cm)) => {
            let text = cm
                .data
                .unwrap_or_default()
                .get(VERIFY_KEY)
                .cloned()
                .unwrap_or_default();
            match serde_json::from_str::<VerifyRun>(&text) {
                Ok(v) => s.verify = Some(v),
                Err(e) => s.problems.push(format!(
                    "ConfigMap `{VERIFY_CONFIGMAP}`: `{VERIFY_KEY}` is not a verify report ({e})"
                )),
            }
        }
        Ok(None) => {}
        Err(e) => s
            .problems
            .push(format!("read ConfigMap `{VERIFY_CONFIGMAP}`: {e}")),
    }

    s.history = engine.history.recent();
    s.ca = cfg.ca_pem.as_deref().and_then(|pem| {
        crate::model::tls::inspect(pem)
            .ok()
            .map(|i| CaSummary { sha256: i.sha256 })
    });
    s
}

fn health_of(code: HealthCode) -> Health {
    Health::from_argo(code.as_str())
}

/// An Application as the page shows it (from its status, as either engine writes it).
pub fn app_row(app: &Value) -> AppRow {
    let st = &app["status"];
    let src = if app["spec"]["source"].is_object() {
        &app["spec"]["source"]
    } else {
        &app["spec"]["sources"][0]
    };
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let op = &st["operationState"];
    let last_sync = op.is_object().then(|| LastSync {
        phase: str_of(&op["phase"]),
        message: str_of(&op["message"]),
        started_at: str_of(&op["startedAt"]),
        finished_at: str_of(&op["finishedAt"]),
        resources: op["syncResult"]["resources"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| ResourceResult {
                        kind: str_of(&r["kind"]),
                        namespace: str_of(&r["namespace"]),
                        name: str_of(&r["name"]),
                        status: str_of(&r["status"]),
                        message: str_of(&r["message"]),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    });
    AppRow {
        name: str_of(&app["metadata"]["name"]),
        sync: str_of(&st["sync"]["status"]),
        health: str_of(&st["health"]["status"]),
        revision: str_of(&st["sync"]["revision"]),
        repo: str_of(&src["repoURL"]),
        path: str_of(&src["path"]),
        last_sync,
        conditions: st["conditions"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| format!("{}: {}", str_of(&c["type"]), str_of(&c["message"])))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

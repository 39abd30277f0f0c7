//! What the cluster says about the lab, for `homelab export logs`: nodes, Applications,
//! cert-manager's certificates and issuers, and per lab namespace its events, pods (as
//! `kubectl get pods -o yaml` shows them, without `managedFields`), workloads, Services,
//! Ingresses and claims, and the last log lines of every container (the previous instance's
//! too when it restarted).
//!
//! Architecture invariant: reads only, each bounded; Secrets (and ConfigMaps) are never
//! requested. A cluster that does not answer is one record, not an error.

use std::collections::BTreeSet;
use std::time::Duration;

use ::kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, LogParams};
use futures::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::archive::Bundle;
use super::pretty;
use crate::provider::Cluster;

/// One API call may take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Whether the API answers at all is known sooner.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// A container's log is cut to this many bytes (after the line limit).
const LOG_BYTES: i64 = 2 << 20;
/// Log requests in flight at once.
const LOG_CONCURRENCY: usize = 6;

/// What the cluster collector needs.
#[derive(Clone, Debug)]
pub struct ClusterInput {
    /// The cluster and kube context the lab uses.
    pub cluster: Cluster,
    /// Namespaces to look into (those that do not exist are left out).
    pub namespaces: BTreeSet<String>,
    /// Lines of each container log to keep.
    pub tail_lines: usize,
}

/// A kind read in every lab namespace.
struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
    }
}

/// Per namespace, besides pods and events. Never `secrets`, nor `configmaps`.
const NAMESPACED: &[Kind] = &[
    kind("apps", "v1", "Deployment", "deployments"),
    kind("apps", "v1", "StatefulSet", "statefulsets"),
    kind("apps", "v1", "DaemonSet", "daemonsets"),
    kind("batch", "v1", "Job", "jobs"),
    kind("", "v1", "Service", "services"),
    kind("networking.k8s.io", "v1", "Ingress", "ingresses"),
    kind("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
];

/// Across the cluster; a kind whose CRD is missing is recorded as such.
const CLUSTER_WIDE: &[Kind] = &[
    kind("", "v1", "Node", "nodes"),
    kind("argoproj.io", "v1alpha1", "Application", "applications"),
    kind("cert-manager.io", "v1", "ClusterIssuer", "clusterissuers"),
    kind("cert-manager.io", "v1", "Certificate", "certificates"),
    kind(
        "cert-manager.io",
        "v1",
        "CertificateRequest",
        "certificaterequests",
    ),
];

impl Kind {
    fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }
}

/// Collect from the cluster.
pub async fn collect(input: &ClusterInput) -> Bundle {
    let mut b = Bundle::new();
    let context = &input.cluster.context;
    let client = match input.cluster.client().await {
        Ok(c) => c,
        Err(e) => {
            b.skipped(
                "the cluster",
                format!(
                    "no client for kube context `{context}`: {}",
                    crate::edges::error::Error::from(e)
                ),
            );
            return b;
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(v)) => b.file(
            "cluster/version.json",
            format!("the API server's `/version` (kube context `{context}`)"),
            pretty(&serde_json::to_value(&v).unwrap_or_default()),
        ),
        Ok(Err(e)) => {
            b.skipped(
                "the cluster",
                format!(
                    "the API server of kube context `{context}` does not answer: {}",
                    crate::cluster::kube::describe(&e)
                ),
            );
            return b;
        }
        Err(_) => {
            b.skipped(
                "the cluster",
                format!(
                    "the API server of kube context `{context}` did not answer within {} s",
                    PROBE_TIMEOUT.as_secs()
                ),
            );
            return b;
        }
    }

    let mut namespaces = input.namespaces.clone();
    for k in CLUSTER_WIDE {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &k.resource());
        let what = format!("`kubectl get {} -A -o yaml`", k.plural);
        match list(&api).await {
            Ok(items) => {
                if k.plural == "applications" {
                    // The namespaces the Applications deploy into are the lab's too.
                    for app in &items {
                        if let Some(ns) = app
                            .pointer("/spec/destination/namespace")
                            .and_then(Value::as_str)
                        {
                            namespaces.insert(ns.to_string());
                        }
                    }
                }
                b.file(&format!("cluster/{}.yaml", k.plural), what, as_list(items));
            }
            Err(e) => e.record(&mut b, what),
        }
    }
    let ns_api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kind("", "v1", "Namespace", "namespaces").resource(),
    );
    match list(&ns_api).await {
        Ok(items) => {
            let existing: BTreeSet<String> = items
                .iter()
                .filter_map(|n| n.pointer("/metadata/name").and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            for gone in namespaces.difference(&existing) {
                b.skipped(
                    format!("namespace `{gone}`"),
                    "it does not exist in the cluster",
                );
            }
            namespaces.retain(|n| existing.contains(n));
            b.file(
                "cluster/namespaces.yaml",
                "`kubectl get namespaces -o yaml`",
                as_list(items),
            );
        }
        Err(e) => e.record(&mut b, "`kubectl get namespaces -o yaml`".into()),
    }

    for ns in &namespaces {
        namespace(&client, ns, input.tail_lines, &mut b).await;
    }
    b
}

async fn namespace(client: &::kube::Client, ns: &str, tail_lines: usize, b: &mut Bundle) {
    let dir = format!("namespaces/{ns}");
    let events: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kind("", "v1", "Event", "events").resource(),
    );
    let what = format!("`kubectl get events -n {ns} -o yaml`");
    match list(&events).await {
        Ok(mut items) => {
            items.sort_by_key(event_time);
            b.file(
                &format!("{dir}/events.txt"),
                format!("{what}, as a table"),
                events_table(&items),
            );
            b.file(&format!("{dir}/events.yaml"), what, as_list(items));
        }
        Err(e) => e.record(b, what),
    }
    let pods: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kind("", "v1", "Pod", "pods").resource(),
    );
    let what = format!("`kubectl get pods -n {ns} -o yaml`");
    let pod_list = match list(&pods).await {
        Ok(items) => {
            b.file(&format!("{dir}/pods.yaml"), what, as_list(items.clone()));
            items
        }
        Err(e) => {
            e.record(b, what);
            Vec::new()
        }
    };
    for k in NAMESPACED {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &k.resource());
        let what = format!("`kubectl get {} -n {ns} -o yaml`", k.plural);
        match list(&api).await {
            Ok(items) if items.is_empty() => {}
            Ok(items) => b.file(&format!("{dir}/{}.yaml", k.plural), what, as_list(items)),
            Err(e) => e.record(b, what),
        }
    }
    let logs: Api<Pod> = Api::namespaced(client.clone(), ns);
    let wanted = log_requests(&pod_list);
    let fetched: Vec<(LogRequest, Result<String, String>)> = stream::iter(wanted)
        .map(|req| {
            let logs = logs.clone();
            async move {
                let lp = LogParams {
                    container: Some(req.container.clone()),
                    previous: req.previous,
                    tail_lines: Some(tail_lines as i64),
                    limit_bytes: Some(LOG_BYTES),
                    ..LogParams::default()
                };
                let got = match tokio::time::timeout(CALL_TIMEOUT, logs.logs(&req.pod, &lp)).await {
                    Ok(Ok(text)) => Ok(text),
                    Ok(Err(e)) => Err(crate::cluster::kube::describe(&e)),
                    Err(_) => Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs())),
                };
                (req, got)
            }
        })
        .buffered(LOG_CONCURRENCY)
        .collect()
        .await;
    for (req, got) in fetched {
        let suffix = if req.previous { ".previous" } else { "" };
        let path = format!("{dir}/logs/{}/{}{suffix}.log", req.pod, req.container);
        let what = format!(
            "`kubectl logs -n {ns} {} -c {}{} --tail {tail_lines}`",
            req.pod,
            req.container,
            if req.previous { " --previous" } else { "" }
        );
        match got {
            Ok(text) => b.file(&path, what, text),
            Err(why) => b.failed(None, what, why, None),
        }
    }
}

/// One container log to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRequest {
    /// Pod.
    pub pod: String,
    /// Container (init containers too).
    pub container: String,
    /// The instance before the last restart.
    pub previous: bool,
}

/// Every container of every pod, and its previous instance when it restarted.
pub fn log_requests(pods: &[Value]) -> Vec<LogRequest> {
    let mut out = Vec::new();
    for pod in pods {
        let Some(name) = pod.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        for (spec, status) in [
            ("/spec/initContainers", "/status/initContainerStatuses"),
            ("/spec/containers", "/status/containerStatuses"),
        ] {
            let statuses = pod.pointer(status).and_then(Value::as_array);
            for c in pod
                .pointer(spec)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(container) = c.get("name").and_then(Value::as_str) else {
                    continue;
                };
                out.push(LogRequest {
                    pod: name.into(),
                    container: container.into(),
                    previous: false,
                });
                let restarted = statuses
                    .into_iter()
                    .flatten()
                    .find(|s| s.get("name").and_then(Value::as_str) == Some(container))
                    .is_some_and(|s| {
                        s.get("restartCount").and_then(Value::as_i64).unwrap_or(0) > 0
                    });
                if restarted {
                    out.push(LogRequest {
                        pod: name.into(),
                        container: container.into(),
                        previous: true,
                    });
                }
            }
        }
    }
    out
}

/// Why a list could not be read.
enum ListError {
    /// The API server does not serve the kind (its CRD is not installed): nothing to read.
    NotServed(String),
    /// Anything else.
    Failed(String),
}

impl ListError {
    /// Record it: a kind that is not served is skipped, anything else failed.
    fn record(self, b: &mut Bundle, what: String) {
        match self {
            ListError::NotServed(why) => b.skipped(what, why),
            ListError::Failed(why) => b.failed(None, what, why, None),
        }
    }
}

/// Every item of a list, bounded, without `managedFields` (as `kubectl get -o yaml` shows them).
async fn list(api: &Api<DynamicObject>) -> Result<Vec<Value>, ListError> {
    let got = tokio::time::timeout(CALL_TIMEOUT, api.list(&ListParams::default())).await;
    let list = match got {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            return Err(match crate::cluster::kube::status_code(&e) {
                Some(404) => ListError::NotServed(format!(
                    "the API server does not serve this kind (its CRD is not installed): {}",
                    crate::cluster::kube::describe(&e)
                )),
                _ => ListError::Failed(crate::cluster::kube::describe(&e)),
            });
        }
        Err(_) => {
            return Err(ListError::Failed(format!(
                "no answer within {} s",
                CALL_TIMEOUT.as_secs()
            )));
        }
    };
    Ok(list
        .items
        .into_iter()
        .map(|o| {
            let mut v = serde_json::to_value(o).unwrap_or_default();
            if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            v
        })
        .collect())
}

fn as_list(items: Vec<Value>) -> String {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    crate::edges::yaml::to_string(&list).unwrap_or_else(|_| pretty(&list))
}

fn event_time(e: &Value) -> String {
    [
        "/lastTimestamp",
        "/eventTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| e.pointer(p).and_then(Value::as_str))
    .unwrap_or_default()
    .to_string()
}

/// `LAST SEEN  TYPE  REASON  OBJECT  MESSAGE`, oldest first, as `kubectl get events` lists them.
pub fn events_table(events: &[Value]) -> String {
    let mut out = String::from("LAST SEEN\tTYPE\tREASON\tOBJECT\tCOUNT\tMESSAGE\n");
    for e in events {
        let s = |p: &str| {
            e.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let count = e.pointer("/count").and_then(Value::as_i64).unwrap_or(1);
        out.push_str(&format!(
            "{}\t{}\t{}\t{}/{}\t{}\t{}\n",
            event_time(e),
            s("/type"),
            s("/reason"),
            s("/involvedObject/kind"),
            s("/involvedObject/name"),
            count,
            s("/message").replace('\n', " ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_is_asked_for_and_the_previous_one_when_it_restarted() {
        let pods = vec![json!({
            "metadata": {"name": "gitea-0"},
            "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "gitea"}, {"name": "side"}]},
            "status": {"containerStatuses": [{"name": "gitea", "restartCount": 3}, {"name": "side", "restartCount": 0}]},
        })];
        let got: Vec<(String, bool)> = log_requests(&pods)
            .into_iter()
            .map(|r| (r.container, r.previous))
            .collect();
        assert_eq!(
            got,
            [
                ("init".to_string(), false),
                ("gitea".to_string(), false),
                ("gitea".to_string(), true),
                ("side".to_string(), false),
            ]
        );
    }

    #[test]
    fn the_kinds_read_never_include_secrets_or_configmaps() {
        for k in NAMESPACED.iter().chain(CLUSTER_WIDE) {
            assert!(
                !["secrets", "configmaps"].contains(&k.plural),
                "{}",
                k.plural
            );
        }
    }
}

//! Why objects are not ready, in words: their own reason, their pods' troubles (image pulls,
//! crash loops with the last log lines, scheduling) and recent Warning events about them.

use ::kube::api::{Api, ListParams, LogParams};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::cluster::apply::{Applied, Applier};
use crate::model::kinds::ObjectRef;

/// Why objects are not ready: their own reason, their pods' troubles (image pulls with the image,
/// crash loops with the last log lines, scheduling with the scheduler's reason), and recent
/// Warning events about them.
pub async fn diagnose(
    applier: &Applier,
    objects: &[Applied],
    not_ready: &[(ObjectRef, String)],
) -> String {
    let mut lines = Vec::new();
    for (oref, why) in not_ready {
        lines.push(format!("  {oref}: {why}"));
        let Some(a) = objects.iter().find(|a| &a.object == oref) else {
            continue;
        };
        let mut names = vec![oref.name.clone()];
        if let Some(selector) = pod_selector(&a.live) {
            let pods: Api<Pod> = Api::namespaced(applier.client().clone(), &oref.namespace);
            if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                for pod in list.items {
                    let pod_name = pod.metadata.name.clone().unwrap_or_default();
                    names.push(pod_name.clone());
                    for l in pod_troubles(&pods, &pod).await {
                        lines.push(format!("    pod `{pod_name}`: {l}"));
                    }
                }
            }
        }
        lines.extend(warning_events(applier, &oref.namespace, &names).await);
    }
    lines.join("\n")
}

/// The label selector of a workload's pods.
fn pod_selector(live: &Value) -> Option<String> {
    let kind = live["kind"].as_str()?;
    if !matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet" | "Job") {
        return None;
    }
    let labels = live
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)?;
    let s: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    (!s.is_empty()).then(|| s.join(","))
}

async fn pod_troubles(pods: &Api<Pod>, pod: &Pod) -> Vec<String> {
    let mut out = Vec::new();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let Some(status) = &pod.status else {
        return out;
    };
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        out.push(format!(
            "Pending, not scheduled: {}{}",
            c.reason.clone().unwrap_or_default(),
            c.message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for cs in statuses {
        let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        match reason.as_str() {
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" => out.push(format!(
                "container `{}` cannot pull image `{}` ({reason}){}",
                cs.name,
                cs.image,
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            )),
            "CrashLoopBackOff" => {
                let mut logs = String::new();
                for previous in [true, false] {
                    let lp = LogParams {
                        container: Some(cs.name.clone()),
                        previous,
                        tail_lines: Some(10),
                        ..LogParams::default()
                    };
                    if let Ok(text) = pods.logs(&name, &lp).await
                        && !text.trim().is_empty()
                    {
                        logs = text;
                        break;
                    }
                }
                let mut line = format!(
                    "container `{}` is crash-looping ({} restarts)",
                    cs.name, cs.restart_count
                );
                if logs.trim().is_empty() {
                    line.push_str("; it wrote no log lines");
                } else {
                    line.push_str("; last log lines:");
                    for l in logs.lines() {
                        line.push_str(&format!("\n        {l}"));
                    }
                }
                out.push(line);
            }
            "" => {}
            other => out.push(format!(
                "container `{}` waiting: {other}{}",
                cs.name,
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            )),
        }
    }
    out
}

/// The five most recent Warning events about these object names in a namespace.
async fn warning_events(applier: &Applier, namespace: &str, names: &[String]) -> Vec<String> {
    let Ok(Some(r)) = applier.discovery().resolve("v1", "Event").await else {
        return Vec::new();
    };
    let api = applier.api(&r, namespace);
    let Ok(list) = api
        .list(&ListParams::default().fields("type=Warning"))
        .await
    else {
        return Vec::new();
    };
    let mut events: Vec<Value> = list
        .items
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or_default())
        .filter(|e| {
            e.pointer("/involvedObject/name")
                .and_then(Value::as_str)
                .is_some_and(|n| names.iter().any(|x| x == n))
        })
        .collect();
    let when = |e: &Value| {
        e.get("lastTimestamp")
            .or_else(|| e.get("eventTime"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    events.sort_by_key(when);
    let skip = events.len().saturating_sub(5);
    events
        .iter()
        .skip(skip)
        .map(|e| {
            format!(
                "    Warning {} on `{}/{}`: {}",
                e["reason"].as_str().unwrap_or_default(),
                e.pointer("/involvedObject/kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                e.pointer("/involvedObject/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                e["message"].as_str().unwrap_or_default().trim()
            )
        })
        .collect()
}

//! Health of live objects, per kind, with Argo CD's rules (gitops-engine `pkg/health`, including
//! HorizontalPodAutoscaler and APIService, plus Argo CD's built-in resource customizations for
//! CronJob, cert-manager Certificate and nested Applications), and an app's health as the worst
//! of its resources.
//!
//! Place in the data flow: live objects (from the watch cache) → [`assess`] → per-resource
//! health → [`aggregate`] → `.status.health`.
//!
//! Architecture invariant: pure functions over `serde_json::Value`; a kind without a rule has
//! no health (it adds nothing to the app's health), exactly as in Argo.

use serde_json::Value;

use super::status::{Health, HealthCode};

/// Health of a live object; `None` for kinds without a health check.
pub fn assess(obj: &Value) -> Option<Health> {
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return Some(Health::new(HealthCode::Progressing, "Pending deletion"));
    }
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let group = crate::model::kinds::group_version(api_version).0;
    let kind = obj["kind"].as_str().unwrap_or_default();
    let h = match (group, kind) {
        ("apps" | "extensions", "Deployment") => deployment(obj),
        ("apps", "StatefulSet") => stateful_set(obj),
        ("apps" | "extensions", "DaemonSet") => daemon_set(obj),
        ("apps" | "extensions", "ReplicaSet") => replica_set(obj),
        ("", "Pod") => pod(obj),
        ("", "Service") => service(obj),
        ("networking.k8s.io" | "extensions", "Ingress") => ingress(obj),
        ("", "PersistentVolumeClaim") => pvc(obj),
        ("batch", "Job") => job(obj),
        ("batch", "CronJob") => cron_job(obj),
        ("cert-manager.io", "Certificate") => certificate(obj),
        ("argoproj.io", "Application") => application(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(obj, api_version),
        ("apiregistration.k8s.io", "APIService") => api_service(obj, api_version),
        _ => return None,
    };
    Some(h)
}

/// App health: the worst resource health (Healthy when there is none).
pub fn aggregate<'a>(healths: impl IntoIterator<Item = &'a Health>) -> Health {
    let mut worst = Health::new(HealthCode::Healthy, "");
    for h in healths {
        if h.status > worst.status {
            worst = h.clone();
        }
    }
    // The app-level message is the worst resource's only when that is not Healthy; Argo leaves
    // the message empty for a healthy app.
    if worst.status == HealthCode::Healthy {
        worst.message.clear();
    }
    worst
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn progressing(msg: impl Into<String>) -> Health {
    Health::new(HealthCode::Progressing, msg)
}

fn healthy(msg: impl Into<String>) -> Health {
    Health::new(HealthCode::Healthy, msg)
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some(kind))
}

fn message(c: &Value) -> String {
    c["message"].as_str().unwrap_or_default().to_string()
}

fn generation_observed(obj: &Value) -> bool {
    int(&obj["metadata"]["generation"]) <= int(&obj["status"]["observedGeneration"])
}

fn deployment(obj: &Value) -> Health {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if obj["spec"]["paused"].as_bool() == Some(true) {
        return Health::new(HealthCode::Suspended, "Deployment is paused");
    }
    if !generation_observed(obj) {
        return progressing(
            "Waiting for rollout to finish: observed deployment generation less than desired generation",
        );
    }
    let s = &obj["status"];
    if let Some(c) = condition(obj, "Progressing")
        && c["reason"].as_str() == Some("ProgressDeadlineExceeded")
    {
        return Health::new(
            HealthCode::Degraded,
            format!("Deployment {name:?} exceeded its progress deadline"),
        );
    }
    let updated = int(&s["updatedReplicas"]);
    if let Some(replicas) = obj["spec"]["replicas"].as_i64()
        && updated < replicas
    {
        return progressing(format!(
            "Waiting for rollout to finish: {updated} out of {replicas} new replicas have been updated..."
        ));
    }
    let total = int(&s["replicas"]);
    if total > updated {
        return progressing(format!(
            "Waiting for rollout to finish: {} old replicas are pending termination...",
            total - updated
        ));
    }
    let available = int(&s["availableReplicas"]);
    if available < updated {
        return progressing(format!(
            "Waiting for rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    healthy("")
}

fn stateful_set(obj: &Value) -> Health {
    let s = &obj["status"];
    let observed = int(&s["observedGeneration"]);
    if observed == 0 || int(&obj["metadata"]["generation"]) > observed {
        return progressing("Waiting for statefulset spec update to be observed...");
    }
    let replicas = obj["spec"]["replicas"].as_i64();
    let ready = int(&s["readyReplicas"]);
    if let Some(r) = replicas
        && ready < r
    {
        return progressing(format!("Waiting for {} pods to be ready...", r - ready));
    }
    let strategy = &obj["spec"]["updateStrategy"];
    let updated = int(&s["updatedReplicas"]);
    match strategy["type"].as_str() {
        Some("RollingUpdate") if strategy["rollingUpdate"].is_object() => {
            if let (Some(r), Some(p)) = (replicas, strategy["rollingUpdate"]["partition"].as_i64())
                && updated < r - p
            {
                return progressing(format!(
                    "Waiting for partitioned roll out to finish: {updated} out of {} new pods have been updated...",
                    r - p
                ));
            }
            healthy(format!(
                "partitioned roll out complete: {updated} new pods have been updated..."
            ))
        }
        Some("OnDelete") => healthy(format!("statefulset has {ready} ready pods")),
        _ => {
            let update_rev = s["updateRevision"].as_str().unwrap_or_default();
            let current_rev = s["currentRevision"].as_str().unwrap_or_default();
            if update_rev != current_rev {
                progressing(format!(
                    "waiting for statefulset rolling update to complete {updated} pods at revision {update_rev}..."
                ))
            } else {
                healthy(format!(
                    "statefulset rolling update complete {} pods at revision {current_rev}...",
                    int(&s["currentReplicas"])
                ))
            }
        }
    }
}

fn daemon_set(obj: &Value) -> Health {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if !generation_observed(obj) {
        return progressing(
            "Waiting for rollout to finish: observed daemon set generation less than desired generation",
        );
    }
    let s = &obj["status"];
    let updated = int(&s["updatedNumberScheduled"]);
    let desired = int(&s["desiredNumberScheduled"]);
    if obj["spec"]["updateStrategy"]["type"].as_str() == Some("OnDelete") {
        return healthy(format!(
            "daemon set {updated} out of {desired} new pods have been updated"
        ));
    }
    if updated < desired {
        return progressing(format!(
            "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
        ));
    }
    let available = int(&s["numberAvailable"]);
    if available < desired {
        return progressing(format!(
            "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
        ));
    }
    healthy("")
}

fn replica_set(obj: &Value) -> Health {
    if !generation_observed(obj) {
        return progressing(
            "Waiting for rollout to finish: observed replica set generation less than desired generation",
        );
    }
    if let Some(c) = condition(obj, "ReplicaFailure")
        && c["status"].as_str() == Some("True")
    {
        return Health::new(HealthCode::Degraded, message(c));
    }
    let available = int(&obj["status"]["availableReplicas"]);
    if let Some(r) = obj["spec"]["replicas"].as_i64()
        && available < r
    {
        return progressing(format!(
            "Waiting for rollout to finish: {available} out of {r} new replicas are available..."
        ));
    }
    healthy("")
}

fn pod(obj: &Value) -> Health {
    let s = &obj["status"];
    let msg = s["message"].as_str().unwrap_or_default().to_string();
    let restart = obj["spec"]["restartPolicy"].as_str().unwrap_or("Always");
    let statuses = s["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Only for restartPolicy Always: a hook pod (OnFailure/Never) waiting on an image must not
    // be reported Degraded before it had its chance (gitops-engine's reasoning).
    if restart == "Always" {
        let waiting: Vec<String> = statuses
            .iter()
            .filter_map(|c| {
                let w = &c["state"]["waiting"];
                let reason = w["reason"].as_str()?;
                (reason.starts_with("Err")
                    || reason.ends_with("Error")
                    || reason.ends_with("BackOff"))
                .then(|| w["message"].as_str().unwrap_or_default().to_string())
            })
            .collect();
        if !waiting.is_empty() {
            return Health::new(HealthCode::Degraded, waiting.join(", "));
        }
    }
    match s["phase"].as_str() {
        Some("Pending") => progressing(msg),
        Some("Succeeded") => healthy(msg),
        Some("Failed") => {
            if !msg.is_empty() {
                return Health::new(HealthCode::Degraded, msg);
            }
            let mut all = s["initContainerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            all.extend(statuses);
            for c in &all {
                let t = &c["state"]["terminated"];
                if t.is_null() {
                    continue;
                }
                let m = t["message"].as_str().unwrap_or_default();
                if !m.is_empty() {
                    return Health::new(HealthCode::Degraded, m);
                }
                if t["reason"].as_str() == Some("OOMKilled") {
                    return Health::new(HealthCode::Degraded, "OOMKilled");
                }
                let code = int(&t["exitCode"]);
                if code != 0 {
                    return Health::new(
                        HealthCode::Degraded,
                        format!(
                            "container {:?} failed with exit code {code}",
                            c["name"].as_str().unwrap_or_default()
                        ),
                    );
                }
            }
            Health::new(HealthCode::Degraded, "")
        }
        Some("Running") => match restart {
            "Always" => {
                let ready = condition(obj, "Ready").is_some_and(|c| c["status"] == "True");
                if ready {
                    healthy(msg)
                } else if statuses
                    .iter()
                    .any(|c| !c["lastState"]["terminated"].is_null())
                {
                    Health::new(HealthCode::Degraded, msg)
                } else {
                    progressing(msg)
                }
            }
            _ => progressing(msg),
        },
        _ => Health::new(HealthCode::Unknown, msg),
    }
}

fn has_lb_ingress(obj: &Value) -> bool {
    obj["status"]["loadBalancer"]["ingress"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

fn service(obj: &Value) -> Health {
    if obj["spec"]["type"].as_str() == Some("LoadBalancer") && !has_lb_ingress(obj) {
        return progressing("");
    }
    healthy("")
}

fn ingress(obj: &Value) -> Health {
    if has_lb_ingress(obj) {
        healthy("")
    } else {
        progressing("")
    }
}

fn pvc(obj: &Value) -> Health {
    match obj["status"]["phase"].as_str() {
        Some("Bound") => healthy(""),
        Some("Pending") => progressing(""),
        Some("Lost") => Health::new(HealthCode::Degraded, ""),
        _ => Health::new(HealthCode::Unknown, ""),
    }
}

fn job(obj: &Value) -> Health {
    let mut failed = None;
    let mut complete = None;
    for c in obj["status"]["conditions"].as_array().into_iter().flatten() {
        if c["status"].as_str() == Some("False") {
            continue;
        }
        match c["type"].as_str() {
            Some("Failed") => failed = Some(message(c)),
            Some("Complete") => complete = Some(message(c)),
            _ => {}
        }
    }
    if let Some(m) = failed {
        return Health::new(HealthCode::Degraded, m);
    }
    if let Some(m) = complete {
        return healthy(m);
    }
    if obj["spec"]["suspend"].as_bool() == Some(true) {
        return Health::new(HealthCode::Suspended, "Job is suspended");
    }
    progressing("")
}

fn cron_job(obj: &Value) -> Health {
    if obj["spec"]["suspend"].as_bool() == Some(true) {
        return Health::new(HealthCode::Suspended, "CronJob is Suspended");
    }
    let s = &obj["status"];
    if s.is_null() {
        return progressing("Waiting for CronJob");
    }
    let Some(scheduled) = s["lastScheduleTime"].as_str() else {
        return healthy("CronJob has not been scheduled yet");
    };
    let Some(succeeded) = s["lastSuccessfulTime"].as_str() else {
        return healthy("The Cronjob never completed succesfully. It may not be healthy");
    };
    if s["active"].as_array().is_some_and(|a| !a.is_empty()) {
        return healthy("The job is running. Its last execution may not have been successful");
    }
    // RFC 3339 timestamps in UTC compare correctly as strings.
    if succeeded < scheduled {
        return Health::new(
            HealthCode::Degraded,
            "CronJob has not completed its last execution successfully",
        );
    }
    healthy("CronJob has completed its last execution successfully")
}

fn certificate(obj: &Value) -> Health {
    let conditions = obj["status"]["conditions"].as_array();
    if let Some(c) = conditions
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Issuing" && c["status"] == "True")
    {
        return progressing(message(c));
    }
    if let Some(c) = conditions
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready" && (c["status"] == "True" || c["status"] == "False"))
    {
        return if c["status"] == "True" {
            healthy(message(c))
        } else {
            Health::new(HealthCode::Degraded, message(c))
        };
    }
    progressing("Waiting for certificate")
}

/// One HPA condition, as gitops-engine reads it (`pkg/health/health_hpa.go`, `hpaCondition`):
/// the typed `status.conditions` of autoscaling v2, v2beta2 and v2beta1, or the JSON list in the
/// `autoscaling.alpha.kubernetes.io/conditions` annotation of autoscaling v1 (Go's JSON decoder
/// matches the keys without regard to case).
struct HpaCondition {
    kind: String,
    reason: String,
    message: String,
    status: String,
}

impl HpaCondition {
    fn of(v: &Value) -> HpaCondition {
        let field = |name: &str| {
            v.as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        HpaCondition {
            kind: field("type"),
            reason: field("reason"),
            message: field("message"),
            status: field("status"),
        }
    }
}

/// HorizontalPodAutoscaler health as gitops-engine `pkg/health/health_hpa.go` decides it: the
/// first condition that is a known failure (by type and reason, whatever its status) makes it
/// Degraded, the first `AbleToScale` or `ScalingLimited` condition that is `True` makes it
/// Healthy (its message kept), anything else is "Waiting to Autoscale". Versions other than v1,
/// v2beta1, v2beta2 and v2 are not understood (Unknown, as Argo's error becomes).
fn hpa(obj: &Value, api_version: &str) -> Health {
    const WAITING: &str = "Waiting to Autoscale";
    let conditions: Vec<HpaCondition> = match api_version {
        "autoscaling/v1" => {
            let Some(text) =
                obj["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/conditions"]
                    .as_str()
            else {
                return progressing(WAITING);
            };
            match serde_json::from_str::<Vec<Value>>(text) {
                Ok(list) => list.iter().map(HpaCondition::of).collect(),
                Err(e) => {
                    return Health::new(
                        HealthCode::Unknown,
                        format!("failed to convert conditions annotation to typed: {e}"),
                    );
                }
            }
        }
        "autoscaling/v2" | "autoscaling/v2beta2" | "autoscaling/v2beta1" => {
            match &obj["status"]["conditions"] {
                Value::Null => Vec::new(),
                Value::Array(list) => list.iter().map(HpaCondition::of).collect(),
                _ => {
                    return Health::new(
                        HealthCode::Unknown,
                        "failed to convert unstructured HPA to typed: status.conditions is not a list",
                    );
                }
            }
        }
        other => {
            return Health::new(
                HealthCode::Unknown,
                format!("unsupported HPA GVK: {other}, Kind=HorizontalPodAutoscaler"),
            );
        }
    };
    const DEGRADED: &[(&str, &str)] = &[
        ("AbleToScale", "FailedGetScale"),
        ("AbleToScale", "FailedUpdateScale"),
        ("ScalingActive", "FailedGetResourceMetric"),
        ("ScalingActive", "InvalidSelector"),
    ];
    for c in &conditions {
        if DEGRADED.contains(&(c.kind.as_str(), c.reason.as_str())) {
            return Health::new(HealthCode::Degraded, c.message.clone());
        }
        if matches!(c.kind.as_str(), "AbleToScale" | "ScalingLimited") && c.status == "True" {
            return healthy(c.message.clone());
        }
    }
    progressing(WAITING)
}

/// APIService health as gitops-engine `pkg/health/health_apiservice.go` decides it
/// (apiregistration v1 and v1beta1): the `Available` condition — `True` is Healthy, anything
/// else Progressing, both with "<reason>: <message>"; without it, "Waiting to be processed".
fn api_service(obj: &Value, api_version: &str) -> Health {
    if !matches!(
        api_version,
        "apiregistration.k8s.io/v1" | "apiregistration.k8s.io/v1beta1"
    ) {
        return Health::new(
            HealthCode::Unknown,
            format!("unsupported APIService GVK: {api_version}, Kind=APIService"),
        );
    }
    match condition(obj, "Available") {
        Some(c) => {
            let text = format!(
                "{}: {}",
                c["reason"].as_str().unwrap_or_default(),
                message(c)
            );
            if c["status"] == "True" {
                healthy(text)
            } else {
                progressing(text)
            }
        }
        None => progressing("Waiting to be processed"),
    }
}

fn application(obj: &Value) -> Health {
    let h = &obj["status"]["health"];
    let code = match h["status"].as_str() {
        Some("Healthy") => HealthCode::Healthy,
        Some("Suspended") => HealthCode::Suspended,
        Some("Progressing") => HealthCode::Progressing,
        Some("Missing") => HealthCode::Missing,
        Some("Degraded") => HealthCode::Degraded,
        Some("Unknown") => HealthCode::Unknown,
        _ => return progressing("Waiting for application to be reconciled"),
    };
    Health::new(code, h["message"].as_str().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    //! One fixture per kind and state, as gitops-engine tests health: each file in
    //! `tests/fixtures/health/` is named `<kind>-<state>[-<variant>].yaml` and holds one live
    //! object; its expected health is the `<state>` part of the name, and its expected message,
    //! when the fixture pins one, is the annotation `test.homelab.dev/message`.

    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn fixtures() -> Vec<(String, Value)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/health");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let v: Value =
                crate::edges::yaml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            out.push((name, v));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn code(s: &str) -> HealthCode {
        match s {
            "healthy" => HealthCode::Healthy,
            "progressing" => HealthCode::Progressing,
            "degraded" => HealthCode::Degraded,
            "suspended" => HealthCode::Suspended,
            "missing" => HealthCode::Missing,
            "unknown" => HealthCode::Unknown,
            other => panic!("fixture state `{other}` is not a health code"),
        }
    }

    #[test]
    fn every_fixture_has_its_named_health() {
        let mut failures = Vec::new();
        for (name, obj) in fixtures() {
            let mut parts = name.splitn(3, '-');
            let _kind = parts.next().unwrap();
            let want = code(parts.next().expect("fixture name has a state"));
            let got = assess(&obj).unwrap_or_else(|| panic!("{name}: no health check"));
            if got.status != want {
                failures.push(format!("{name}: want {want:?}, got {got:?}"));
            }
            if let Some(m) = obj["metadata"]["annotations"]["test.homelab.dev/message"].as_str()
                && m != got.message
            {
                failures.push(format!("{name}: message {:?}, want {m:?}", got.message));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn fixtures_cover_every_kind_and_state() {
        let have: BTreeSet<String> = fixtures()
            .into_iter()
            .map(|(n, _)| n.splitn(3, '-').take(2).collect::<Vec<_>>().join("-"))
            .collect();
        let want = [
            "deployment-healthy",
            "deployment-progressing",
            "deployment-degraded",
            "deployment-suspended",
            "statefulset-healthy",
            "statefulset-progressing",
            "daemonset-healthy",
            "daemonset-progressing",
            "replicaset-healthy",
            "replicaset-progressing",
            "replicaset-degraded",
            "pod-healthy",
            "pod-progressing",
            "pod-degraded",
            "pod-unknown",
            "service-healthy",
            "service-progressing",
            "ingress-healthy",
            "ingress-progressing",
            "pvc-healthy",
            "pvc-progressing",
            "pvc-degraded",
            "pvc-unknown",
            "job-healthy",
            "job-progressing",
            "job-degraded",
            "job-suspended",
            "cronjob-healthy",
            "cronjob-progressing",
            "cronjob-degraded",
            "cronjob-suspended",
            "certificate-healthy",
            "certificate-progressing",
            "certificate-degraded",
            "application-healthy",
            "application-progressing",
            "application-degraded",
            "application-suspended",
            "application-missing",
            "application-unknown",
            "hpa-healthy",
            "hpa-progressing",
            "hpa-degraded",
            "hpa-unknown",
            "apiservice-healthy",
            "apiservice-progressing",
        ];
        let missing: Vec<_> = want.iter().filter(|w| !have.contains(**w)).collect();
        assert!(missing.is_empty(), "no fixture for {missing:?}");
    }

    #[test]
    fn kinds_without_a_check_add_no_health() {
        let cm =
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert_eq!(assess(&cm), None);
    }

    #[test]
    fn deletion_pending_is_progressing() {
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "deletionTimestamp": "2026-01-01T00:00:00Z"}});
        assert_eq!(
            assess(&cm),
            Some(Health::new(HealthCode::Progressing, "Pending deletion"))
        );
    }

    #[test]
    fn an_hpa_or_apiservice_of_a_version_argo_does_not_know_is_unknown() {
        let hpa = serde_json::json!({"apiVersion": "autoscaling/v3", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "x"}, "status": {"conditions": [{"type": "AbleToScale", "status": "True"}]}});
        assert_eq!(
            assess(&hpa),
            Some(Health::new(
                HealthCode::Unknown,
                "unsupported HPA GVK: autoscaling/v3, Kind=HorizontalPodAutoscaler"
            ))
        );
        let svc = serde_json::json!({"apiVersion": "apiregistration.k8s.io/v2", "kind": "APIService",
            "metadata": {"name": "x"}});
        assert_eq!(assess(&svc).map(|h| h.status), Some(HealthCode::Unknown));
    }

    #[test]
    fn app_health_is_the_worst() {
        let hs = [
            Health::new(HealthCode::Healthy, ""),
            Health::new(HealthCode::Missing, ""),
            Health::new(HealthCode::Progressing, "waiting"),
        ];
        assert_eq!(aggregate(&hs).status, HealthCode::Missing);
        assert_eq!(aggregate(&[]).status, HealthCode::Healthy);
        let hs = [
            Health::new(HealthCode::Degraded, "crash"),
            Health::new(HealthCode::Unknown, "?"),
        ];
        assert_eq!(aggregate(&hs), Health::new(HealthCode::Unknown, "?"));
    }
}

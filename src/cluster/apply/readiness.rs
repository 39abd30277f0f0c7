//! When is an applied object ready? The rules per kind, as pure functions over live objects.
//!
//! Architecture invariant: pure. The watch loop (`wait.rs`) feeds live objects in; these
//! functions only read them. Kinds without a rule are ready once applied.

use serde_json::Value;

/// What a live object says about its readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Ready.
    Ready,
    /// Not yet; why, for progress lines and timeout messages.
    Waiting(String),
    /// Will not become ready without a change (a failed Job).
    Failed(String),
}

/// What else must be looked at to judge an object of this kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Ready once applied.
    Applied,
    /// The object's own status says it (workloads, Jobs, CRDs, cert-manager objects, PVCs).
    OwnStatus,
    /// A Service with a selector: ready when an EndpointSlice has a ready endpoint.
    ServiceEndpoints,
    /// An Ingress with TLS: ready when each TLS Secret exists with a certificate.
    IngressCertificates(Vec<String>),
    /// A Validating/MutatingWebhookConfiguration: ready when every webhook served by a Service
    /// carries a CA bundle ([`webhook_ca`]) and each of these Services (namespace, name) has a
    /// ready endpoint. Until then the API server refuses every write the webhook matches
    /// (`failurePolicy: Fail`): cert-manager's Deployments are Available before its cainjector
    /// has put the webhook's CA into `caBundle` (cert-manager issue 7625).
    Webhooks(Vec<(String, String)>),
}

/// The rule for an object (group, kind, and for Services/Ingresses, its spec).
pub fn rule(group: &str, kind: &str, obj: &Value) -> Rule {
    match (group, kind) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job")
        | ("apiextensions.k8s.io", "CustomResourceDefinition")
        | ("cert-manager.io", "Certificate" | "ClusterIssuer" | "Issuer")
        | ("", "PersistentVolumeClaim") => Rule::OwnStatus,
        ("", "Service") => {
            let external =
                obj.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName");
            let has_selector = obj
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty());
            if has_selector && !external {
                Rule::ServiceEndpoints
            } else {
                Rule::Applied
            }
        }
        ("networking.k8s.io", "Ingress") => {
            let secrets: Vec<String> = obj
                .pointer("/spec/tls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    t.get("secretName")
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .collect();
            if secrets.is_empty() {
                Rule::Applied
            } else {
                Rule::IngressCertificates(secrets)
            }
        }
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration",
        ) => {
            let mut services: Vec<(String, String)> = webhooks(obj)
                .filter_map(|w| {
                    let svc = w.pointer("/clientConfig/service")?;
                    Some((
                        svc.get("namespace")?.as_str()?.to_string(),
                        svc.get("name")?.as_str()?.to_string(),
                    ))
                })
                .collect();
            services.sort();
            services.dedup();
            Rule::Webhooks(services)
        }
        _ => Rule::Applied,
    }
}

fn webhooks(obj: &Value) -> impl Iterator<Item = &Value> {
    obj.get("webhooks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Whether every webhook of a webhook configuration that is served by a Service has a CA bundle
/// to verify it with. Without one the API server checks the webhook's serving certificate
/// against the system roots, which never signed an in-cluster CA, and fails closed with
/// "x509: certificate signed by unknown authority". A webhook called by URL is left alone (a
/// public certificate needs no bundle).
pub fn webhook_ca(obj: &Value) -> Readiness {
    let missing: Vec<&str> = webhooks(obj)
        .filter(|w| w.pointer("/clientConfig/service").is_some())
        .filter(|w| {
            w.pointer("/clientConfig/caBundle")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        })
        .map(|w| w.get("name").and_then(Value::as_str).unwrap_or("?"))
        .collect();
    if missing.is_empty() {
        return Readiness::Ready;
    }
    let names = missing
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let annotation = |k: &str| {
        obj.pointer(&format!("/metadata/annotations/{}", k.replace('/', "~1")))
            .and_then(Value::as_str)
    };
    // cert-manager's cainjector fills `caBundle` in from what these annotations name
    // (cert-manager `pkg/apis/certmanager/v1/types.go`: WantInjectFromSecretAnnotation,
    // WantInjectAnnotation).
    let source = annotation("cert-manager.io/inject-ca-from-secret")
        .map(|s| ("Secret", s))
        .or_else(|| annotation("cert-manager.io/inject-ca-from").map(|c| ("Certificate", c)));
    let why = match source {
        Some((kind, from)) => {
            let ns = from.split('/').next().unwrap_or("cert-manager");
            format!(
                "webhook {names} has no CA bundle yet: cert-manager's cainjector injects it from {kind} `{from}` (look at `kubectl -n {ns} logs -l app.kubernetes.io/component=cainjector`)"
            )
        }
        None => format!(
            "webhook {names} has no CA bundle (`clientConfig.caBundle`), and nothing is named to inject one"
        ),
    };
    Readiness::Waiting(why)
}

/// An Application's state as its engine reported it, from the status fields both homelab's
/// engine and Argo CD write (argo-cd v3.5.1 pkg/apis/application/v1alpha1/types.go
/// `ApplicationStatus`: `sync.status`, `sync.revision`, `health.status`, `health.message`,
/// `operationState.phase`): ready when `Synced` and `Healthy`; failed when `Degraded` or
/// `Missing`, or its last operation `Failed`/`Error`; waiting otherwise, with the status in
/// one line. Used by `status` only: `up` does not wait for an Application (its engine syncs it
/// when the pipeline has pushed an image).
pub fn application(obj: &Value) -> Readiness {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let or_unset = |v: &'static str| {
        move |x: &str| {
            if x.is_empty() {
                v.to_string()
            } else {
                x.to_string()
            }
        }
    };
    let revision = s("/status/sync/revision");
    let mut line = format!(
        "sync `{}` at `{}`, health `{}`",
        or_unset("unset")(s("/status/sync/status")),
        if revision.is_empty() {
            "no revision"
        } else {
            &revision[..revision.len().min(7)]
        },
        or_unset("unset")(s("/status/health/status")),
    );
    if !s("/status/health/message").is_empty() {
        line.push_str(&format!(" ({})", s("/status/health/message")));
    }
    let phase = s("/status/operationState/phase");
    if !phase.is_empty() {
        line.push_str(&format!(", last operation `{phase}`"));
    }
    match (s("/status/sync/status"), s("/status/health/status"), phase) {
        ("Synced", "Healthy", p) if !matches!(p, "Failed" | "Error") => Readiness::Ready,
        (_, "Degraded" | "Missing", _) | (_, _, "Failed" | "Error") => Readiness::Failed(line),
        _ => Readiness::Waiting(line),
    }
}

fn int(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn condition_is(obj: &Value, kind: &str, status: &str) -> bool {
    condition(obj, kind)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some(status)
}

fn observed(obj: &Value) -> bool {
    let generation = int(obj, "/metadata/generation");
    obj.pointer("/status/observedGeneration")
        .and_then(Value::as_i64)
        .is_some_and(|o| o >= generation)
}

/// Readiness from the object's own status (for [`Rule::OwnStatus`] kinds). `wffc` tells whether
/// a PVC's storage class binds on first consumer, where `Pending` is the expected state until a
/// pod uses it, so not a blocker.
pub fn own_status(group: &str, kind: &str, obj: &Value, wffc: bool) -> Readiness {
    let waiting = |s: String| Readiness::Waiting(s);
    match (group, kind) {
        ("apps", "Deployment") => {
            let want = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            if !observed(obj) {
                return waiting("rollout not observed yet".into());
            }
            if let Some(c) = condition(obj, "Progressing")
                && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
            {
                return waiting("progress deadline exceeded".into());
            }
            let updated = int(obj, "/status/updatedReplicas");
            let available = int(obj, "/status/availableReplicas");
            let total = int(obj, "/status/replicas");
            if updated < want {
                waiting(format!("{updated} of {want} replicas updated"))
            } else if total > updated {
                waiting(format!(
                    "{} old replicas pending termination",
                    total - updated
                ))
            } else if available < want {
                waiting(format!("{available} of {want} replicas available"))
            } else {
                Readiness::Ready
            }
        }
        ("apps", "StatefulSet") => {
            let want = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            if !observed(obj) {
                return waiting("rollout not observed yet".into());
            }
            let ready = int(obj, "/status/readyReplicas");
            let updated = int(obj, "/status/updatedReplicas");
            let on_delete = obj
                .pointer("/spec/updateStrategy/type")
                .and_then(Value::as_str)
                == Some("OnDelete");
            let revisions_differ = obj.pointer("/status/updateRevision").is_some()
                && obj.pointer("/status/updateRevision") != obj.pointer("/status/currentRevision");
            if ready < want {
                waiting(format!("{ready} of {want} replicas ready"))
            } else if !on_delete && updated < want {
                waiting(format!("{updated} of {want} replicas updated"))
            } else if !on_delete && revisions_differ {
                waiting("update revision not rolled out".into())
            } else {
                Readiness::Ready
            }
        }
        ("apps", "DaemonSet") => {
            if !observed(obj) {
                return waiting("rollout not observed yet".into());
            }
            let desired = int(obj, "/status/desiredNumberScheduled");
            let updated = int(obj, "/status/updatedNumberScheduled");
            let available = int(obj, "/status/numberAvailable");
            if updated < desired {
                waiting(format!("{updated} of {desired} pods updated"))
            } else if available < desired {
                waiting(format!("{available} of {desired} pods available"))
            } else {
                Readiness::Ready
            }
        }
        ("batch", "Job") => {
            if condition_is(obj, "Complete", "True") {
                Readiness::Ready
            } else if condition_is(obj, "Failed", "True") {
                let c = condition(obj, "Failed").expect("checked");
                Readiness::Failed(format!(
                    "job failed: {}",
                    c.get("message")
                        .or_else(|| c.get("reason"))
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                ))
            } else {
                waiting("job not complete".into())
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            if condition_is(obj, "Established", "True") {
                Readiness::Ready
            } else {
                waiting("not established".into())
            }
        }
        ("cert-manager.io", _) => {
            if condition_is(obj, "Ready", "True") {
                Readiness::Ready
            } else {
                let why = condition(obj, "Ready")
                    .and_then(|c| c.get("message").and_then(Value::as_str))
                    .unwrap_or("not Ready");
                waiting(why.to_string())
            }
        }
        ("", "PersistentVolumeClaim") => {
            match obj.pointer("/status/phase").and_then(Value::as_str) {
                Some("Bound") => Readiness::Ready,
                Some("Lost") => Readiness::Failed("claim lost its volume".into()),
                _ if wffc => Readiness::Ready,
                _ => waiting("not bound".into()),
            }
        }
        _ => Readiness::Ready,
    }
}

/// Whether any EndpointSlice (items of a list) has a ready endpoint.
pub fn slices_ready(slices: &[Value]) -> bool {
    slices.iter().any(|s| {
        s.get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|e| e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false))
    })
}

/// Whether a Secret holds a certificate.
pub fn has_certificate(secret: &Value) -> bool {
    secret
        .pointer("/data/tls.crt")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployment_needs_observed_updated_and_available() {
        let mut d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}});
        assert!(matches!(
            own_status("apps", "Deployment", &d, false),
            Readiness::Waiting(_)
        ));
        d["status"]["observedGeneration"] = json!(2);
        assert_eq!(
            own_status("apps", "Deployment", &d, false),
            Readiness::Ready
        );
        d["status"]["availableReplicas"] = json!(1);
        assert_eq!(
            own_status("apps", "Deployment", &d, false),
            Readiness::Waiting("1 of 2 replicas available".into())
        );
    }

    #[test]
    fn pending_pvc_of_a_wait_for_first_consumer_class_is_not_a_blocker() {
        let pvc = json!({"status": {"phase": "Pending"}});
        assert_eq!(
            own_status("", "PersistentVolumeClaim", &pvc, true),
            Readiness::Ready
        );
        assert!(matches!(
            own_status("", "PersistentVolumeClaim", &pvc, false),
            Readiness::Waiting(_)
        ));
    }

    #[test]
    fn an_application_is_ready_when_synced_and_healthy() {
        let app = |sync: &str, health: &str, phase: &str| {
            serde_json::json!({"status": {"sync": {"status": sync, "revision": "0123456789abcdef"},
                "health": {"status": health}, "operationState": {"phase": phase}}})
        };
        assert_eq!(
            application(&app("Synced", "Healthy", "Succeeded")),
            Readiness::Ready
        );
        assert_eq!(
            application(&app("OutOfSync", "Progressing", "Running")),
            Readiness::Waiting(
                "sync `OutOfSync` at `0123456`, health `Progressing`, last operation `Running`"
                    .into()
            )
        );
        assert!(matches!(
            application(&app("Synced", "Degraded", "Succeeded")),
            Readiness::Failed(_)
        ));
        assert!(matches!(
            application(&app("Synced", "Healthy", "Failed")),
            Readiness::Failed(_)
        ));
        assert_eq!(
            application(&serde_json::json!({})),
            Readiness::Waiting("sync `unset` at `no revision`, health `unset`".into())
        );
    }

    #[test]
    fn failed_job_fails() {
        let job = json!({"status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}});
        assert_eq!(
            own_status("batch", "Job", &job, false),
            Readiness::Failed("job failed: BackoffLimitExceeded".into())
        );
    }

    #[test]
    fn services_without_selector_and_plain_ingresses_are_ready_on_apply() {
        assert_eq!(rule("", "Service", &json!({"spec": {}})), Rule::Applied);
        assert_eq!(
            rule("", "Service", &json!({"spec": {"selector": {"app": "x"}}})),
            Rule::ServiceEndpoints
        );
        assert_eq!(
            rule(
                "networking.k8s.io",
                "Ingress",
                &json!({"spec": {"tls": [{"secretName": "t"}]}})
            ),
            Rule::IngressCertificates(vec!["t".into()])
        );
    }

    /// cert-manager v1.21.1's ValidatingWebhookConfiguration as its release manifest renders it
    /// (`deploy/charts/cert-manager/templates/webhook-validating-webhook.yaml`), before and after
    /// cainjector has injected the CA.
    #[test]
    fn a_webhook_configuration_waits_for_its_ca_bundle_and_its_service() {
        let mut vwc = json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "cert-manager-webhook", "annotations": {"cert-manager.io/inject-ca-from-secret": "cert-manager/cert-manager-webhook-ca"}},
            "webhooks": [{"name": "webhook.cert-manager.io", "failurePolicy": "Fail", "sideEffects": "None",
                "clientConfig": {"service": {"name": "cert-manager-webhook", "namespace": "cert-manager", "path": "/validate"}}}],
        });
        assert_eq!(
            rule(
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
                &vwc
            ),
            Rule::Webhooks(vec![("cert-manager".into(), "cert-manager-webhook".into())])
        );
        assert_eq!(
            webhook_ca(&vwc),
            Readiness::Waiting("webhook `webhook.cert-manager.io` has no CA bundle yet: cert-manager's cainjector injects it from Secret `cert-manager/cert-manager-webhook-ca` (look at `kubectl -n cert-manager logs -l app.kubernetes.io/component=cainjector`)".into())
        );
        vwc["webhooks"][0]["clientConfig"]["caBundle"] = json!("LS0tLS1CRUdJTi");
        assert_eq!(webhook_ca(&vwc), Readiness::Ready);
        // A webhook called by URL needs no bundle, and names no Service to wait for.
        let url = json!({"webhooks": [{"name": "w", "clientConfig": {"url": "https://example.com/validate"}}]});
        assert_eq!(webhook_ca(&url), Readiness::Ready);
        assert_eq!(
            rule(
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration",
                &url
            ),
            Rule::Webhooks(Vec::new())
        );
    }
}

//! Admission webhooks as kube-apiserver calls them, for the fake API server: a write that a
//! Validating/MutatingWebhookConfiguration matches is refused while its webhook cannot be called
//! (its Service missing or without ready endpoints, its `caBundle` empty), exactly as the real
//! server refuses it; a webhook that can be called admits everything (the fake runs no webhook
//! servers).
//!
//! Mirrors kubernetes (release 1.36):
//! - which webhooks are called: `staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/predicates/rules/rules.go`
//!   (operations, apiGroups, apiVersions, `resource/subresource` with `*`, `scope`, and
//!   `IsExemptAdmissionConfigurationResource`: webhook and admission-policy configurations are
//!   never sent to webhooks), `.../predicates/namespace/matcher.go` (a cluster-scoped object
//!   other than a Namespace always matches; a Namespace is matched on its own labels; a missing
//!   namespace is a 404) and `.../predicates/object/matcher.go` (new or old object's labels);
//! - how a call fails: `staging/src/k8s.io/apiserver/pkg/util/webhook/client.go` (`HookClient`:
//!   the URL `https://<service>.<namespace>.svc:<port><path>`, the Service resolved when dialling,
//!   the `caBundle` the only roots the TLS client trusts) and the dial through kube-proxy to the
//!   Service's ClusterIP — microk8s's kube-apiserver runs without `--enable-aggregator-routing`
//!   (`microk8s-resources/default-args/kube-apiserver`), so the ClusterIP resolver
//!   (`kube-aggregator/pkg/apiserver/resolvers.go`, `apiserver/pkg/util/proxy/proxy.go`
//!   `ResolveCluster`) is used, and kube-proxy rejects connections to a Service without ready
//!   endpoints (`pkg/proxy/iptables/proxier.go`: "has no endpoints" REJECT): "connect:
//!   connection refused";
//! - how the refusal is answered: `.../plugin/webhook/validating/dispatcher.go` and
//!   `.../mutating/dispatcher.go` (`callHook`: `failed to call webhook: %w`; a `failurePolicy:
//!   Fail` webhook (the v1 default) turns `ErrCallingWebhook` into `apierrors.NewInternalError`,
//!   `Ignore` lets the request through; on a dry run a webhook whose `sideEffects` is not
//!   `None`/`NoneOnDryRun` refuses with 400), `staging/src/k8s.io/apiserver/pkg/util/webhook/error.go`
//!   (`failed calling webhook %q: %v`) and apimachinery `pkg/api/errors/errors.go`
//!   (`NewInternalError`: 500, reason `InternalError`, message `Internal error occurred: %v`,
//!   the error as the one cause).
//!
//! Not modelled: `matchConditions` (CEL; a webhook with them is treated as matching),
//! `matchPolicy: Equivalent` across versions (the fake serves one version per resource), URL
//! webhooks (treated as answering), a `caBundle` that is set but is not the CA the webhook serves
//! with, the API server's informer lag before a changed configuration is used, and webhooks
//! that answer and deny.

use serde_json::{Value, json};

use super::store::{ApiError, ResourceType, Selector, Store};

/// Which admission plugin is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `MutatingAdmissionWebhook`: runs before the object is validated.
    Mutating,
    /// `ValidatingAdmissionWebhook`: runs after the object is validated, before it is stored.
    Validating,
}

/// What the request does, as admission sees it.
pub struct Attributes<'a> {
    pub rt: &'a ResourceType,
    /// "" for cluster-scoped objects; the Namespace's name for a Namespace.
    pub namespace: &'a str,
    pub subresource: Option<&'a str>,
    /// `CREATE`, `UPDATE`, `DELETE`.
    pub operation: &'static str,
    /// The object written (or the apply patch), when there is one.
    pub object: Option<&'a Value>,
    /// The object as it is stored, when it exists.
    pub old: Option<&'a Value>,
    pub dry_run: bool,
}

/// Ask every matching webhook of `phase`; the first that cannot be called (and fails closed)
/// refuses the request.
pub fn admit(store: &Store, phase: Phase, attr: &Attributes) -> Result<(), ApiError> {
    if attr.rt.group == "admissionregistration.k8s.io"
        && matches!(
            attr.rt.kind.as_str(),
            "ValidatingWebhookConfiguration"
                | "MutatingWebhookConfiguration"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
                | "MutatingAdmissionPolicy"
                | "MutatingAdmissionPolicyBinding"
        )
    {
        return Ok(());
    }
    let plural = match phase {
        Phase::Mutating => "mutatingwebhookconfigurations",
        Phase::Validating => "validatingwebhookconfigurations",
    };
    let configs: Vec<Value> = store
        .objects
        .iter()
        .filter(|(k, _)| k.0 == "admissionregistration.k8s.io" && k.1 == plural)
        .map(|(_, v)| v.clone())
        .collect();
    for config in configs {
        for hook in config
            .get("webhooks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !rules_match(hook, attr) || !object_matches(hook, attr) {
                continue;
            }
            if !namespace_matches(store, hook, attr)? {
                continue;
            }
            let Err(why) = call(store, hook, attr) else {
                continue;
            };
            let fail_closed = hook["failurePolicy"].as_str().unwrap_or("Fail") != "Ignore";
            match why {
                CallError::DryRunUnsupported(e) => return Err(e),
                CallError::Calling(message) if fail_closed => {
                    let mut e = ApiError::new(
                        500,
                        "InternalError",
                        format!("Internal error occurred: {message}"),
                    );
                    e.causes.push(json!({"message": message}));
                    return Err(e);
                }
                CallError::Calling(_) => {}
            }
        }
    }
    Ok(())
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn exact_or_wildcard(items: &[&str], requested: &str) -> bool {
    items.iter().any(|i| *i == "*" || *i == requested)
}

/// `rules.go`: any rule of the webhook matches.
fn rules_match(hook: &Value, attr: &Attributes) -> bool {
    let rules = hook.get("rules").and_then(Value::as_array);
    rules.into_iter().flatten().any(|rule| {
        let scope = rule["scope"].as_str().unwrap_or("*");
        let is_namespace = attr.rt.group.is_empty() && attr.rt.plural == "namespaces";
        let scope_ok = match scope {
            "Namespaced" => !is_namespace && !attr.namespace.is_empty(),
            "Cluster" => is_namespace || attr.namespace.is_empty(),
            _ => true,
        };
        let resource_ok = strings(&rule["resources"]).iter().any(|r| {
            let (res, sub) = r.split_once('/').unwrap_or((r, ""));
            (res == "*" || res == attr.rt.plural)
                && (sub == "*" || sub == attr.subresource.unwrap_or(""))
        });
        scope_ok
            && exact_or_wildcard(&strings(&rule["operations"]), attr.operation)
            && exact_or_wildcard(&strings(&rule["apiGroups"]), &attr.rt.group)
            && exact_or_wildcard(&strings(&rule["apiVersions"]), &attr.rt.version)
            && resource_ok
    })
}

/// `object/matcher.go`: the new or the old object's labels match `objectSelector`.
fn object_matches(hook: &Value, attr: &Attributes) -> bool {
    let Some(sel) = hook.get("objectSelector") else {
        return true;
    };
    let selector = Selector::from_label_selector(sel);
    if selector.is_empty() {
        return true;
    }
    attr.object.is_some_and(|o| selector.matches(o))
        || attr.old.is_some_and(|o| selector.matches(o))
}

/// `namespace/matcher.go`.
fn namespace_matches(store: &Store, hook: &Value, attr: &Attributes) -> Result<bool, ApiError> {
    let is_namespace = attr.rt.group.is_empty() && attr.rt.plural == "namespaces";
    if attr.namespace.is_empty() && !is_namespace {
        return Ok(true);
    }
    let Some(sel) = hook.get("namespaceSelector") else {
        return Ok(true);
    };
    let selector = Selector::from_label_selector(sel);
    if selector.is_empty() {
        return Ok(true);
    }
    if is_namespace
        && attr.subresource.is_none()
        && matches!(attr.operation, "CREATE" | "UPDATE")
        && let Some(o) = attr.object
    {
        return Ok(selector.matches(o));
    }
    let ns = store
        .objects
        .get(&(
            String::new(),
            "namespaces".into(),
            String::new(),
            attr.namespace.to_string(),
        ))
        .ok_or_else(|| ApiError::namespace_not_found(attr.namespace))?;
    Ok(selector.matches(ns))
}

enum CallError {
    /// `ErrCallingWebhook`: the webhook could not be asked (the text after "Internal error occurred: ").
    Calling(String),
    /// A dry run sent to a webhook with side effects.
    DryRunUnsupported(ApiError),
}

/// Call one webhook: `Ok` when it could be asked (and, in the fake, admits).
fn call(store: &Store, hook: &Value, attr: &Attributes) -> Result<(), CallError> {
    let name = hook["name"].as_str().unwrap_or_default();
    let calling = |why: String| {
        CallError::Calling(format!(
            "failed calling webhook \"{name}\": failed to call webhook: {why}"
        ))
    };
    if attr.dry_run {
        match hook.get("sideEffects").and_then(Value::as_str) {
            None => {
                return Err(CallError::Calling(format!(
                    "failed calling webhook \"{name}\": Webhook SideEffects is nil"
                )));
            }
            Some("None" | "NoneOnDryRun") => {}
            Some(_) => {
                // `errors/statuserror.go` NewDryRunUnsupportedErr.
                return Err(CallError::DryRunUnsupported(ApiError::new(
                    400,
                    "BadRequest",
                    format!("admission webhook \"{name}\" does not support dry run"),
                )));
            }
        }
    }
    let Some(svc_ref) = hook.pointer("/clientConfig/service") else {
        return Ok(());
    };
    let svc_ns = svc_ref["namespace"].as_str().unwrap_or_default();
    let svc_name = svc_ref["name"].as_str().unwrap_or_default();
    let port = svc_ref["port"].as_i64().unwrap_or(443);
    let path = svc_ref["path"].as_str().unwrap_or_default();
    let timeout = hook["timeoutSeconds"].as_i64().unwrap_or(10);
    let url = format!("https://{svc_name}.{svc_ns}.svc:{port}{path}?timeout={timeout}s");
    let post = |why: String| calling(format!("Post \"{url}\": {why}"));
    let Some(svc) = store.objects.get(&(
        String::new(),
        "services".into(),
        svc_ns.to_string(),
        svc_name.to_string(),
    )) else {
        return Err(post(format!("service \"{svc_name}\" not found")));
    };
    let cluster_ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if cluster_ip == "None" {
        return Err(post(
            "cannot route to service with ClusterIP \"None\"".to_string(),
        ));
    }
    let has_port = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|p| p["port"].as_i64() == Some(port));
    if !has_port {
        return Err(post(format!(
            "no service port {port} found for service \"{svc_name}\""
        )));
    }
    let ready = store
        .objects
        .iter()
        .filter(|(k, _)| k.0 == "discovery.k8s.io" && k.1 == "endpointslices" && k.2 == svc_ns)
        .filter(|(_, s)| {
            s.pointer("/metadata/labels/kubernetes.io~1service-name")
                .and_then(Value::as_str)
                == Some(svc_name)
        })
        .flat_map(|(_, s)| {
            s.get("endpoints")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .any(|e| e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false));
    if !ready {
        return Err(post(format!(
            "dial tcp {cluster_ip}:{port}: connect: connection refused"
        )));
    }
    let ca = hook
        .pointer("/clientConfig/caBundle")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if ca.is_empty() {
        // The TLS client trusts only the bundle; without one, the system roots, which never
        // signed the webhook's in-cluster serving CA.
        return Err(post(
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .to_string(),
        ));
    }
    Ok(())
}

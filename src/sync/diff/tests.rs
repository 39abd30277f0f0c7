//! Unit tests of the comparison and the rendered diffs (the parent module).

use super::*;
use serde_json::json;

const MGR: &str = "homelab";

fn cfg() -> CompareConfig<'static> {
    CompareConfig {
        manager: MGR,
        ignore: &[],
    }
}

fn desired() -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}],
                    "resources": {"requests": {"cpu": "0.5", "memory": "128Mi"}, "limits": {"cpu": 1}}}],
                    "volumes": [{"name": "tmp", "emptyDir": {}}]}}}
    });
    normalize(&mut d, "nyan", Some("nyan"), true);
    d
}

/// What the API server returns for `desired()` after a server-side apply: defaults,
/// canonical quantities, status, managedFields, server metadata.
fn live() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "nyan", "labels": {"app": "web"},
            "annotations": {"argocd.argoproj.io/tracking-id": "nyan:apps/Deployment:nyan/web",
                            "deployment.kubernetes.io/revision": "1"},
            "uid": "1234", "resourceVersion": "99", "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": MGR, "operation": "Apply", "apiVersion": "apps/v1",
                "fieldsType": "FieldsV1", "fieldsV1": {
                    "f:metadata": {"f:labels": {"f:app": {}}, "f:annotations": {"f:argocd.argoproj.io/tracking-id": {}}},
                    "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {"f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}},
                            "f:resources": {"f:requests": {"f:cpu": {}, "f:memory": {}}, "f:limits": {"f:cpu": {}}}}},
                            "f:volumes": {"k:{\"name\":\"tmp\"}": {".": {}, "f:name": {}, "f:emptyDir": {}}}}}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:replicas": {}}}}]},
        "spec": {"replicas": 2, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}, "limits": {"cpu": "1"}},
                    "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"}],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                    "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"}}},
        "status": {"replicas": 2, "availableReplicas": 2}
    })
}

#[test]
fn an_unchanged_object_never_shows_a_diff() {
    let c = compare(&desired(), Some(&live()), cfg());
    assert_eq!(
        c,
        Comparison {
            status: SyncCode::Synced,
            first_difference: None
        }
    );
    assert_eq!(
        render(&desired(), Some(&live()), MGR, RenderConfig { context: 3 }),
        ""
    );
}

/// Issue 12: a copy that is being deleted (foreground propagation keeps it a moment, any
/// finalizer longer) is not the object git wants, however well its fields match.
#[test]
fn an_object_being_deleted_is_never_in_sync() {
    let mut l = live();
    l["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:05Z");
    l["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
    let c = compare(&desired(), Some(&l), cfg());
    assert_eq!(c.status, SyncCode::OutOfSync);
    assert_eq!(c.first_difference.as_deref(), Some("(being deleted)"));
}

#[test]
fn a_changed_field_is_out_of_sync_and_named() {
    let mut l = live();
    l["spec"]["replicas"] = json!(5);
    let c = compare(&desired(), Some(&l), cfg());
    assert_eq!(c.status, SyncCode::OutOfSync);
    assert_eq!(c.first_difference.as_deref(), Some("spec.replicas"));
    let text = render(&desired(), Some(&l), MGR, RenderConfig { context: 1 });
    assert!(text.contains("-  replicas: 5\n+  replicas: 2\n"), "{text}");
    assert!(!text.contains("resourceVersion"), "{text}");
    assert!(!text.contains("progressDeadlineSeconds"), "{text}");
}

#[test]
fn a_field_removed_from_git_is_out_of_sync() {
    let mut d = desired();
    d["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("app");
    let c = compare(&d, Some(&live()), cfg());
    assert_eq!(
        c.first_difference.as_deref(),
        Some("metadata.labels.app (removed from git)")
    );
    let mut d = desired();
    d["spec"]["template"]["spec"]["volumes"] = json!([]);
    let c = compare(&d, Some(&live()), cfg());
    assert_eq!(c.status, SyncCode::OutOfSync);
}

#[test]
fn missing_is_out_of_sync() {
    assert_eq!(compare(&desired(), None, cfg()).status, SyncCode::OutOfSync);
}

#[test]
fn ignore_differences_json_pointers() {
    let mut l = live();
    l["spec"]["replicas"] = json!(5);
    let rules = [IgnoreRule {
        group: "apps".into(),
        kind: "Deployment".into(),
        json_pointers: vec!["/spec/replicas".into()],
        ..Default::default()
    }];
    let c = compare(
        &desired(),
        Some(&l),
        CompareConfig {
            manager: MGR,
            ignore: &rules,
        },
    );
    assert_eq!(c.status, SyncCode::Synced);
}

#[test]
fn normalisation_fills_namespace_tracks_and_folds_string_data() {
    let mut s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "stringData": {"token": "abc"}, "data": {"x": "eA=="}});
    normalize(&mut s, "nyan", Some("nyan"), true);
    assert_eq!(s["metadata"]["namespace"], "nyan");
    assert_eq!(s["data"], json!({"x": "eA==", "token": "YWJj"}));
    assert!(s.get("stringData").is_none());
    assert_eq!(
        s["metadata"]["annotations"][TRACKING_ID],
        "nyan:/Secret:nyan/s"
    );
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "namespace": "oops"}});
    normalize(&mut ns, "nyan", Some("nyan"), false);
    assert!(ns["metadata"].get("namespace").is_none());
    assert_eq!(
        ns["metadata"]["annotations"][TRACKING_ID],
        "nyan:/Namespace:/n"
    );
}

#[test]
fn secrets_are_redacted_in_diffs() {
    let mut d = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "n"},
        "data": {"same": "c2FtZQ==", "changed": "bmV3"}});
    normalize(&mut d, "nyan", None, true);
    let l = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "n",
        "annotations": {TRACKING_ID: "nyan:/Secret:n/s", "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"changed\":\"b2xk\"}}"}},
        "data": {"same": "c2FtZQ==", "changed": "b2xk"}, "type": "Opaque"});
    let text = render(&d, Some(&l), MGR, RenderConfig { context: 5 });
    assert!(
        !text.contains("bmV3") && !text.contains("b2xk") && !text.contains("c2FtZQ"),
        "{text}"
    );
    assert!(text.contains("-  changed: '<redacted: live>'"), "{text}");
    assert!(text.contains("+  changed: '<redacted: git>'"), "{text}");
    assert!(text.contains("   same: <redacted>"), "{text}");
}

#[test]
fn quantities_compare_by_value() {
    assert!(quantities_equal("0.5", "500m"));
    assert!(quantities_equal("1Gi", "1024Mi"));
    assert!(quantities_equal("1", "1000m"));
    assert!(quantities_equal("1e3", "1k"));
    assert!(!quantities_equal("1", "2"));
    assert!(!quantities_equal("abc", "abc"));
}

#[test]
fn unified_diff_has_context_and_gaps() {
    let a = "a\nb\nc\nd\ne\nf\ng\n";
    let b = "a\nb\nc\nD\ne\nf\ng\n";
    assert_eq!(unified(a, b, 1), "--- live\n+++ git\n@@\n c\n-d\n+D\n e\n");
    assert_eq!(unified(a, a, 3), "");
}

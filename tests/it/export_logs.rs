//! What `homelab export logs` relies on from the Kubernetes API, checked against the fake API
//! server and, with `HOMELAB_TEST_KUBECONFIG`, a real one: how `pods/{name}/log` picks the
//! container (kubernetes/kubernetes `pkg/registry/core/pod/strategy.go`, `LogLocation`). The
//! export itself is tested end to end in `up_full` (a whole lab) and `provision` (failures).

use crate::support::fake_kube;

use fake_kube::test_cluster::TestCluster;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, LogParams, PostParams};
use serde_json::json;

/// Issue 12: the export names the container of every log it reads, because the API server
/// refuses a log request without one for a pod with several containers, and refuses a name the
/// pod does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs_need_one_of_the_pods_container_names() {
    let t = TestCluster::new().await;
    let ns = t.ns("logs");
    let nss: Api<Namespace> = Api::all(t.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"homelab.dev/lab": t.lab}}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "two"},
            "spec": {"initContainers": [{"name": "init", "image": "busybox:1.37"}],
                     "containers": [{"name": "a", "image": "busybox:1.37"}, {"name": "b", "image": "busybox:1.37"}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let refused = |r: Result<String, kube::Error>| match r {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    // The list's wording changed over releases (v1.24: `[init a b]`; v1.27 on, the fake's:
    // `[a b] or one of the init containers: [init]`); homelab never reads it.
    let (code, message) = refused(pods.logs("two", &LogParams::default()).await);
    assert_eq!(code, 400);
    assert!(
        message.starts_with("a container name must be specified for pod two, choose one of: ["),
        "{message}"
    );
    for c in ["init", "a", "b"] {
        assert!(
            message.contains(&format!("[{c} "))
                || message.contains(&format!(" {c}]"))
                || message.contains(&format!(" {c} ")),
            "{c}: {message}"
        );
    }
    if t.fake().is_some() {
        assert_eq!(
            message,
            "a container name must be specified for pod two, choose one of: [a b] or one of the init containers: [init]"
        );
    }
    let named = |c: &str| LogParams {
        container: Some(c.into()),
        ..LogParams::default()
    };
    assert_eq!(
        refused(pods.logs("two", &named("c")).await),
        (400, "container c is not valid for pod two".to_string())
    );
    // A pod not scheduled yet has no log, and asking for one of its containers is no error.
    assert_eq!(pods.logs("two", &named("b")).await.unwrap(), "");
    assert_eq!(pods.logs("two", &named("init")).await.unwrap(), "");
}

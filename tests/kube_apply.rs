//! Kubernetes-facing tests: the apply engine and deploy, against the fake API server by default
//! and against a real cluster when `HOMELAB_TEST_KUBECONFIG` names a kubeconfig.

mod fake_kube;

use fake_kube::FakeKube;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_smoke() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = fake.write_kubeconfig(dir.path());
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let gvk = kube::api::GroupVersionKind::gvk("apps", "v1", "Deployment");
    let (ar, caps) = discovery.resolve_gvk(&gvk).unwrap();
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}
    })).unwrap();
    let out = api
        .patch("web", &PatchParams::apply("homelab"), &Patch::Apply(&obj))
        .await
        .unwrap();
    assert_eq!(out.metadata.generation, Some(1));
    let ns_ar = ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&());
    let _ = ns_ar;
    let listed = api.list(&Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let missing: Api<DynamicObject> = Api::namespaced_with(client.clone(), "nope", &ar);
    let err = missing
        .patch("web", &PatchParams::apply("homelab"), &Patch::Apply(&obj))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("namespaces \"nope\" not found"),
        "{err}"
    );
    let counts = fake.verb_counts();
    assert_eq!(counts["patch"], 2, "{counts:?}");
}

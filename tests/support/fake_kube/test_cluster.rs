//! `TestCluster`: the cluster a Kubernetes-facing test runs against — the fake API server by
//! default, a real cluster when `HOMELAB_TEST_KUBECONFIG` names a kubeconfig.
//!
//! On a real cluster every test gets a unique lab name and namespace prefix, and its namespaces
//! and cluster-scoped objects labelled with that lab are deleted when the `TestCluster` drops.
//! Tests that need fake-only control (fault injection, status hooks) call [`TestCluster::fake_only`],
//! which prints an explicit skip line on a real cluster.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::FakeKube;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct TestCluster {
    fake: Option<FakeKube>,
    pub kubeconfig: PathBuf,
    /// Unique per test: the ownership label value, and the prefix of its namespaces.
    pub lab: String,
    pub client: kube::Client,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    pub async fn new() -> TestCluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let lab = format!("t{}-{n}-{:x}", std::process::id() % 10_000, nanos % 0xfffff);
        let (fake, kubeconfig) = match std::env::var_os("HOMELAB_TEST_KUBECONFIG") {
            Some(path) => (None, PathBuf::from(path)),
            None => {
                let fake = FakeKube::start().await;
                let path = fake.write_kubeconfig(dir.path());
                (Some(fake), path)
            }
        };
        let target = homelab::cluster::kube::KubeTarget::new(&kubeconfig);
        let client = homelab::cluster::kube::connect(&target, &Default::default())
            .await
            .expect("client");
        TestCluster {
            fake,
            kubeconfig,
            lab,
            client,
            _dir: dir,
        }
    }

    pub fn is_real(&self) -> bool {
        self.fake.is_none()
    }

    /// The fake, when this is one.
    pub fn fake(&self) -> Option<&FakeKube> {
        self.fake.as_ref()
    }

    /// The fake, or `None` after printing why the test is skipped on a real cluster.
    pub fn fake_only(&self, test: &str, why: &str) -> Option<&FakeKube> {
        if self.fake.is_none() {
            eprintln!("SKIPPED on the real cluster: `{test}` is fake-only ({why})");
        }
        self.fake.as_ref()
    }

    /// A namespace name unique to this test.
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.lab)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.fake.is_some() {
            return;
        }
        // Clean up what this test created on the real cluster: namespaces and CRDs carrying its
        // lab label. Runs on its own runtime because Drop cannot await.
        let kubeconfig = self.kubeconfig.clone();
        let lab = self.lab.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let target = homelab::cluster::kube::KubeTarget::new(&kubeconfig);
                let Ok(client) = homelab::cluster::kube::connect(&target, &Default::default()).await else { return };
                let lp = kube::api::ListParams::default().labels(&format!("homelab.dev/lab={lab}"));
                let dp = kube::api::DeleteParams::background();
                // One by one: Namespaces have no deletecollection (kube-apiserver answers 405,
                // kubernetes pkg/registry/core/namespace/storage/storage.go), so a collection
                // delete left every test's namespaces behind.
                let nss: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
                if let Ok(list) = nss.list(&lp).await {
                    for ns in list {
                        if let Some(name) = ns.metadata.name {
                            let _ = nss.delete(&name, &dp).await;
                        }
                    }
                }
                let crds: kube::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
                    kube::Api::all(client.clone());
                let _ = crds.delete_collection(&dp, &lp).await;
            });
        })
        .join();
    }
}

//! Where Application statuses come from: the [`Applications`] seam (a watch of one object) and
//! its implementation over kube-rs, [`KubeApplications`]; tests replace it.
//!
//! Architecture invariant: the only Kubernetes I/O of verify; it reads, never writes.

use futures::StreamExt as _;
use futures::stream::BoxStream;

use super::AppStatus;

/// Where Application statuses come from: a watch of one object (`None` while it is missing).
/// The implementation over kube-rs is [`KubeApplications`]; tests replace it.
pub trait Applications: Send + Sync {
    /// Every state of the Application as it changes, starting with the current one.
    fn watch(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxStream<'static, Result<Option<AppStatus>, String>>;
}

/// [`Applications`] over kube-rs (`argoproj.io/v1alpha1 Application`).
pub struct KubeApplications {
    client: ::kube::Client,
}

impl KubeApplications {
    /// Over this client.
    pub fn new(client: ::kube::Client) -> KubeApplications {
        KubeApplications { client }
    }
}

impl Applications for KubeApplications {
    fn watch(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxStream<'static, Result<Option<AppStatus>, String>> {
        use ::kube::api::{ApiResource, DynamicObject, GroupVersionKind};
        let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "applications");
        let api: ::kube::Api<DynamicObject> =
            ::kube::Api::namespaced_with(self.client.clone(), namespace, &ar);
        ::kube::runtime::watcher::watch_object(api, name)
            .map(|r| {
                r.map(|o| {
                    o.map(|o| AppStatus::from_object(&serde_json::to_value(&o).unwrap_or_default()))
                })
                .map_err(|e| e.to_string())
            })
            .boxed()
    }
}

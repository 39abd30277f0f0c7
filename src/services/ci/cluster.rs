//! [`Workloads`] over kube-rs: the Kubernetes half of wiring a CI server.
//!
//! Place in the data flow: `up` builds a [`KubeWorkloads`] from the lab's client and hands it to
//! `ci::wire`. Architecture invariant: it writes with its own field manager
//! ([`WIRE_FIELD_MANAGER`]), distinct from the apply engine's, so applying a few Secret keys never
//! drops the keys the apply engine owns; readiness is judged by the apply engine's own rule
//! (`apply::readiness`) and awaited with a watch, bounded by a deadline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::kube::Api;
use ::kube::api::{Patch, PatchParams};
use base64::Engine as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use serde_json::json;

use super::{WorkloadError, Workloads};
use crate::cluster::apply::readiness::{Readiness, own_status};
use crate::edges::redact::Secret;

/// Field manager of the wiring's writes.
pub const WIRE_FIELD_MANAGER: &str = "homelab-wire";

/// [`Workloads`] on a live cluster.
#[derive(Clone)]
pub struct KubeWorkloads {
    client: ::kube::Client,
}

impl KubeWorkloads {
    /// Over this client.
    pub fn new(client: ::kube::Client) -> KubeWorkloads {
        KubeWorkloads { client }
    }
}

fn api_err(call: String) -> impl FnOnce(::kube::Error) -> WorkloadError {
    move |e| WorkloadError::Api {
        call,
        detail: crate::cluster::kube::describe(&e),
    }
}

impl Workloads for KubeWorkloads {
    async fn secret_data(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Secret>>, WorkloadError> {
        let api: Api<KubeSecret> = Api::namespaced(self.client.clone(), namespace);
        let found = api
            .get_opt(name)
            .await
            .map_err(api_err(format!("read `Secret/{name}` in `{namespace}`")))?;
        Ok(found.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, Secret::new(String::from_utf8_lossy(&v.0).into_owned())))
                .collect()
        }))
    }

    async fn apply_secret_data(
        &self,
        namespace: &str,
        name: &str,
        data: &BTreeMap<String, Secret>,
    ) -> Result<(), WorkloadError> {
        let api: Api<KubeSecret> = Api::namespaced(self.client.clone(), namespace);
        let encoded: BTreeMap<&str, String> = data
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    base64::engine::general_purpose::STANDARD.encode(v.expose()),
                )
            })
            .collect();
        let body = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": encoded,
        });
        // Forced: the apply engine rendered these keys before the values existed (empty), and
        // the values it renders from the lab state afterwards are the same ones.
        let params = PatchParams::apply(WIRE_FIELD_MANAGER).force();
        api.patch(name, &params, &Patch::Apply(&body))
            .await
            .map_err(api_err(format!(
                "apply keys {} of `Secret/{name}` in `{namespace}`",
                data.keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))?;
        Ok(())
    }

    async fn pod_template_annotations(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, WorkloadError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let found = api.get_opt(name).await.map_err(api_err(format!(
            "read `Deployment/{name}` in `{namespace}`"
        )))?;
        Ok(found.map(|d| {
            d.spec
                .and_then(|s| s.template.metadata)
                .and_then(|m| m.annotations)
                .unwrap_or_default()
        }))
    }

    async fn roll_deployment(
        &self,
        namespace: &str,
        name: &str,
        annotations: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<(), WorkloadError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        // A merge patch of pod-template annotations is how `kubectl rollout restart` restarts a
        // Deployment; the value records why (the OAuth client), so re-running is a no-op.
        let body = json!({"spec": {"template": {"metadata": {"annotations": annotations}}}});
        let params = PatchParams {
            field_manager: Some(WIRE_FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch(name, &params, &Patch::Merge(&body))
            .await
            .map_err(api_err(format!(
                "annotate `Deployment/{name}` in `{namespace}` to restart it"
            )))?;
        let last = Arc::new(Mutex::new(String::from("not observed yet")));
        let seen = last.clone();
        let rolled_out = move |d: Option<&Deployment>| {
            let Some(d) = d else { return false };
            let value = serde_json::to_value(d).unwrap_or_default();
            match own_status("apps", "Deployment", &value, false) {
                Readiness::Ready => true,
                Readiness::Waiting(why) | Readiness::Failed(why) => {
                    *seen.lock().unwrap() = why;
                    false
                }
            }
        };
        match tokio::time::timeout(
            timeout,
            ::kube::runtime::wait::await_condition(api, name, rolled_out),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(WorkloadError::Api {
                call: format!("watch `Deployment/{name}` in `{namespace}` roll out"),
                detail: e.to_string(),
            }),
            Err(_) => Err(WorkloadError::RolloutTimeout {
                namespace: namespace.into(),
                name: name.into(),
                after: timeout,
                state: last.lock().unwrap().clone(),
            }),
        }
    }
}

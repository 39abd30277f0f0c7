//! verify's report for the lab page: `up` and `verify` run on the host, the page is served in the
//! cluster, so the last report goes into the ConfigMap `homelab-verify` next to the sync engine,
//! which reads it (see `sync::page`).
//!
//! Architecture invariant: [`page_run`] is pure and copies only hop names, times, the version
//! marker and the error text — no token or password is part of a report; [`publish`] writes one
//! ConfigMap with server-side apply and never fails verify (the page is a view, the proof is the
//! walk itself).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{VerifyError, VerifyReport};
use crate::sync::page::{VERIFY_CONFIGMAP, VERIFY_KEY, VerifyHop, VerifyRun};

/// The field manager of the report's ConfigMap.
pub const FIELD_MANAGER: &str = "homelab-verify";

/// The report as the page shows it.
pub fn page_run(
    report: &VerifyReport,
    error: Option<&VerifyError>,
    finished_at: &str,
) -> VerifyRun {
    VerifyRun {
        finished_at: finished_at.to_string(),
        ok: report.ok && error.is_none(),
        version: report.version.clone(),
        hops: report
            .hops
            .iter()
            .map(|h| VerifyHop {
                hop: h.hop.to_string(),
                ok: h.ok,
                elapsed_ms: h.elapsed_ms as u64,
                detail: h.detail.clone(),
            })
            .collect(),
        total_ms: report.total_ms as u64,
        error: error.map(|e| e.to_string()).unwrap_or_default(),
    }
}

/// The namespace the page's engine reads the report from: the `lab-page` component's, when the
/// stack has one.
pub fn page_namespace(stack: &crate::model::stack::Stack) -> Option<String> {
    stack
        .component("lab-page")
        .and_then(|c| c.namespace.clone())
}

/// Write the report for the page; a failure is logged, not returned.
pub async fn publish(client: kube::Client, namespace: &str, run: &VerifyRun) {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": VERIFY_CONFIGMAP, "namespace": namespace},
        "data": {VERIFY_KEY: serde_json::to_string(run).expect("reports serialize")},
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Err(e) = api
        .patch(VERIFY_CONFIGMAP, &params, &Patch::Apply(&cm))
        .await
    {
        tracing::warn!(error = %e, namespace, "could not record the verify report for the lab page");
    }
}

//! What the engine reads about itself from the cluster: repository credentials and CAs stored
//! the way Argo CD stores them, and the installation id that says which objects are this
//! engine's. Both are cached for 30 s.
//!
//! Architecture invariant: reads only; a failed read of the installation id with none known
//! stops the reconcile rather than guess.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use serde_json::Value;

use super::Engine;
use crate::cluster::kube::describe;
use crate::edges::redact::Secret;
use crate::sync::source::GitAuth;
use crate::sync::tracking;

impl Engine {
    /// Credentials for a repository, the way Argo CD stores them: Secrets in the Applications'
    /// namespace labelled `argocd.argoproj.io/secret-type: repository` (exact `url`) or
    /// `repo-creds` (`url` prefix), with `username`/`password`; CAs from the ConfigMap
    /// `argocd-tls-certs-cm` (one key per host); plus the engine's own CA (the lab CA).
    pub(super) async fn repo_auth(&self, url: &str) -> GitAuth {
        let mut auth = GitAuth {
            ca_pem: self.cfg.ca_pem.clone(),
            ..Default::default()
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return auth;
        }
        let (secrets, tls) = self.creds().await;
        let norm = crate::sync::webhook::normalize_repo_url(url);
        let decode = |s: &Value, k: &str| -> Option<String> {
            let b = s["data"][k].as_str()?;
            let bytes =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok()?;
            String::from_utf8(bytes).ok()
        };
        let exact = secrets.iter().find(|s| {
            s["metadata"]["labels"]["argocd.argoproj.io/secret-type"] == "repository"
                && decode(s, "url")
                    .is_some_and(|u| crate::sync::webhook::normalize_repo_url(&u) == norm)
        });
        let prefix = || {
            secrets
                .iter()
                .filter(|s| {
                    s["metadata"]["labels"]["argocd.argoproj.io/secret-type"] == "repo-creds"
                })
                .filter_map(|s| decode(s, "url").map(|u| (u, s)))
                .filter(|(u, _)| url.starts_with(u.as_str()))
                .max_by_key(|(u, _)| u.len())
                .map(|(_, s)| s)
        };
        if let Some(s) = exact.or_else(prefix) {
            auth.username = decode(s, "username");
            auth.password = decode(s, "password").map(Secret::new);
        }
        if let Some(host) = url.split("://").nth(1).and_then(|r| r.split('/').next()) {
            let host = host.rsplit('@').next().unwrap_or(host);
            let host = host.split(':').next().unwrap_or(host);
            if let Some(pem) = tls["data"][host].as_str() {
                let mut all = auth.ca_pem.take().unwrap_or_default();
                all.push_str(pem);
                auth.ca_pem = Some(all);
            }
        }
        auth
    }

    /// The engine's installation id: `installationID` of the ConfigMap `argocd-cm` in the
    /// Applications namespace, where Argo CD reads it (none without the ConfigMap or the key).
    /// Read at most every 30 s. A failed read keeps the last value; with none known it stops the
    /// reconcile (guessing could take another installation's objects for ours, or ours for
    /// another's).
    pub(super) async fn installation_id(&self) -> Result<Option<String>, String> {
        let last = self.installation.lock().expect("installation").clone();
        if let Some((at, id)) = &last
            && at.elapsed() < Duration::from_secs(30)
        {
            return Ok(id.clone());
        }
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), &self.cfg.app_namespace);
        let read = crate::cluster::kube::retry(&Default::default(), || {
            cms.get_opt(tracking::SETTINGS_CONFIG_MAP)
        })
        .await;
        let id = match read {
            Ok(cm) => cm
                .and_then(|cm| cm.data)
                .and_then(|d| d.get("installationID").cloned())
                .filter(|id| !id.is_empty()),
            Err(e) => {
                return match last {
                    Some((_, id)) => Ok(id),
                    None => Err(format!(
                        "read the installation id (`{}` in `{}`): {}",
                        tracking::SETTINGS_CONFIG_MAP,
                        self.cfg.app_namespace,
                        describe(&e)
                    )),
                };
            }
        };
        *self.installation.lock().expect("installation") = Some((Instant::now(), id.clone()));
        Ok(id)
    }

    async fn creds(&self) -> (Arc<Vec<Value>>, Arc<Value>) {
        if let Some((at, s, t)) = self.creds.lock().expect("creds").as_ref()
            && at.elapsed() < Duration::from_secs(30)
        {
            return (s.clone(), t.clone());
        }
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client.clone(), &self.cfg.app_namespace);
        let lp = ListParams::default()
            .labels("argocd.argoproj.io/secret-type in (repository,repo-creds)");
        let list: Vec<Value> = match secrets.list(&lp).await {
            Ok(l) => l
                .items
                .iter()
                .map(|s| serde_json::to_value(s).expect("secrets serialize"))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %describe(&e), "no repository credentials readable");
                Vec::new()
            }
        };
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), &self.cfg.app_namespace);
        let tls = match cms.get_opt("argocd-tls-certs-cm").await {
            Ok(Some(cm)) => serde_json::to_value(cm).expect("configmaps serialize"),
            _ => Value::Null,
        };
        let (s, t) = (Arc::new(list), Arc::new(tls));
        *self.creds.lock().expect("creds") = Some((Instant::now(), s.clone(), t.clone()));
        (s, t)
    }
}

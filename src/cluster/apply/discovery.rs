//! A lazy discovery cache: one request per group-version actually used, refreshed for the groups
//! a batch's CRDs add.
//!
//! Architecture invariant: scope (namespaced or cluster) and the plural always come from the API
//! server's discovery documents, never from guessing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ::kube::discovery::ApiResource;

use crate::cluster::kube::{Backoff, retry};

/// A kind the server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// For `Api::*_with`.
    pub resource: ApiResource,
    /// Namespaced (else cluster-scoped).
    pub namespaced: bool,
    /// Verbs (`list`, `delete`, `watch`, …).
    pub verbs: Vec<String>,
}

/// Cached discovery, shared by concurrent applies.
pub struct Discovery {
    client: ::kube::Client,
    backoff: Backoff,
    /// apiVersion → kind → resolved; `None` when the group-version is not served.
    cache: Mutex<BTreeMap<String, Option<BTreeMap<String, Resolved>>>>,
}

impl Discovery {
    /// An empty cache.
    pub fn new(client: ::kube::Client) -> Discovery {
        Discovery {
            client,
            backoff: Backoff::default(),
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    /// Resolve `apiVersion` + `kind`; `Ok(None)` when the server does not serve it.
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Resolved>, ::kube::Error> {
        let cached = self.cache.lock().unwrap().get(api_version).cloned();
        let kinds = match cached {
            Some(k) => k,
            None => {
                let k = self.fetch(api_version).await?;
                self.cache
                    .lock()
                    .unwrap()
                    .insert(api_version.to_string(), k.clone());
                k
            }
        };
        Ok(kinds.and_then(|k| k.get(kind).cloned()))
    }

    /// Forget what is known about an apiVersion (after a CRD for it became Established).
    pub fn invalidate(&self, api_version: &str) {
        self.cache.lock().unwrap().remove(api_version);
    }

    async fn fetch(
        &self,
        api_version: &str,
    ) -> Result<Option<BTreeMap<String, Resolved>>, ::kube::Error> {
        let (group, version) = crate::model::kinds::group_version(api_version);
        let list = retry(&self.backoff, || async {
            if group.is_empty() {
                self.client.list_core_api_resources(version).await
            } else {
                self.client.list_api_group_resources(api_version).await
            }
        })
        .await;
        let list = match list {
            Ok(l) => l,
            Err(::kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = BTreeMap::new();
        for r in list.resources {
            // Subresources (`deployments/status`) are not kinds of their own.
            if r.name.contains('/') {
                continue;
            }
            out.insert(
                r.kind.clone(),
                Resolved {
                    resource: ApiResource {
                        group: group.to_string(),
                        version: version.to_string(),
                        api_version: api_version.to_string(),
                        kind: r.kind.clone(),
                        plural: r.name.clone(),
                    },
                    namespaced: r.namespaced,
                    verbs: r.verbs.clone(),
                },
            );
        }
        Ok(Some(out))
    }

    /// Every served kind (full discovery: `/api`, `/apis` and each group-version), for pruning.
    pub async fn all(&self) -> Result<Vec<Resolved>, ::kube::Error> {
        let mut versions = vec!["v1".to_string()];
        let groups = retry(&self.backoff, || self.client.list_api_groups()).await?;
        for g in groups.groups {
            if let Some(pv) = g.preferred_version.as_ref() {
                versions.push(pv.group_version.clone());
            } else if let Some(v) = g.versions.first() {
                versions.push(v.group_version.clone());
            }
        }
        let mut out = Vec::new();
        for v in versions {
            self.invalidate(&v);
            let fetched = self.fetch(&v).await?;
            self.cache
                .lock()
                .unwrap()
                .insert(v.clone(), fetched.clone());
            out.extend(fetched.into_iter().flat_map(|m| m.into_values()));
        }
        Ok(out)
    }
}

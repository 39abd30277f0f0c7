//! Leader election with a `coordination.k8s.io/v1` Lease, so two engines (two replicas, or the
//! in-cluster engine and `homelab sync` on a laptop) never act at once.
//!
//! Place in the data flow: beside the engine's loop — the loop reconciles only while
//! the leadership channel of [`Leader::new`] says so; a standby keeps its caches warm and takes over when the holder
//! stops renewing.
//!
//! Architecture invariant: every change to the Lease is a `replace` guarded by the
//! resourceVersion it was read at (or a `create` that fails if someone else created it first),
//! so two candidates can never both believe they won; a holder that cannot renew before its own
//! lease expires steps down before anyone else may take over.

use std::time::Duration;

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::cluster::kube::{describe, status_code};

/// Default Lease name.
pub const LEASE_NAME: &str = "homelab-sync-engine";
/// Default Lease namespace (the engine's own).
pub const LEASE_NAMESPACE: &str = "homelab-system";

/// Lease timing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// Who we are (pod name, or `laptop-<host>-<pid>`).
    pub identity: String,
    /// How long a renewal holds.
    pub duration: Duration,
    /// How often the holder renews (and a candidate retries).
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// Defaults: 15 s leases renewed every 5 s (client-go's leader election uses 15/10/2).
    pub fn new(identity: impl Into<String>) -> LeaseConfig {
        LeaseConfig {
            namespace: LEASE_NAMESPACE.into(),
            name: LEASE_NAME.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// The Lease could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The namespace for the Lease is missing.
    #[error("namespace `{namespace}` for the sync engine's Lease does not exist")]
    NoNamespace {
        /// The namespace.
        namespace: String,
    },
    /// Another engine holds the Lease.
    #[error("another sync engine (`{holder}`) holds the Lease `{namespace}/{name}`")]
    Held {
        /// Its identity.
        holder: String,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The API refused.
    #[error("{action} Lease `{namespace}/{name}`: {message}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Why.
        message: String,
    },
}

impl crate::edges::error::Diagnostic for LeaseError {
    fn hints(&self) -> Vec<String> {
        match self {
            LeaseError::NoNamespace { namespace } => vec![format!(
                "create it (`kubectl create namespace {namespace}`) or pass `--lease-namespace`"
            )],
            LeaseError::Held { .. } => vec![
                "the in-cluster engine is running: it already keeps the cluster in line with git; scale it to 0 to drive syncs from here".into(),
            ],
            LeaseError::Api { .. } => Vec::new(),
        }
    }
}

fn lease_resource() -> ApiResource {
    ApiResource {
        group: "coordination.k8s.io".into(),
        version: "v1".into(),
        api_version: "coordination.k8s.io/v1".into(),
        kind: "Lease".into(),
        plural: "leases".into(),
    }
}

/// `metav1.MicroTime`: RFC 3339 with microseconds.
fn micro_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    ))
    .expect("a UTC time formats")
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// What a Lease says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// holderIdentity.
    pub identity: String,
    /// Still valid at the time of reading.
    pub valid: bool,
}

/// Read who holds a Lease object (pure).
pub fn holder(lease: &Value, now: OffsetDateTime) -> Option<Holder> {
    let spec = &lease["spec"];
    let identity = spec["holderIdentity"].as_str().filter(|s| !s.is_empty())?;
    let renewed = spec["renewTime"].as_str().and_then(parse_time)?;
    let secs = spec["leaseDurationSeconds"].as_i64().unwrap_or(15);
    Some(Holder {
        identity: identity.to_string(),
        valid: renewed + time::Duration::seconds(secs) > now,
    })
}

/// One candidate.
pub struct Leader {
    api: Api<DynamicObject>,
    cfg: LeaseConfig,
    tx: watch::Sender<bool>,
}

impl Leader {
    /// A candidate for `cfg`'s Lease.
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> (Leader, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        let api = Api::namespaced_with(client, &cfg.namespace, &lease_resource());
        (Leader { api, cfg, tx }, rx)
    }

    fn err(&self, action: &'static str, e: &kube::Error) -> LeaseError {
        if status_code(e) == Some(404) && action == "create" {
            return LeaseError::NoNamespace {
                namespace: self.cfg.namespace.clone(),
            };
        }
        LeaseError::Api {
            action,
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            message: describe(e),
        }
    }

    /// Try once to hold (or keep holding) the Lease. `Ok(true)` when we hold it now.
    pub async fn try_acquire(&self) -> Result<bool, LeaseError> {
        let now = OffsetDateTime::now_utc();
        let stamp = micro_time(now);
        let secs = self.cfg.duration.as_secs() as i64;
        let current = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(|e| self.err("read", &e))?;
        let Some(current) = current else {
            let obj = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.cfg.name, "namespace": self.cfg.namespace},
                "spec": {"holderIdentity": self.cfg.identity, "leaseDurationSeconds": secs,
                         "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}
            });
            let obj: DynamicObject = serde_json::from_value(obj).expect("a Lease deserializes");
            return match self.api.create(&PostParams::default(), &obj).await {
                Ok(_) => Ok(true),
                Err(e) if status_code(&e) == Some(409) => Ok(false),
                Err(e) => Err(self.err("create", &e)),
            };
        };
        let mut v = serde_json::to_value(&current).expect("objects serialize");
        let mine = holder(&v, now);
        let ours = mine
            .as_ref()
            .is_some_and(|h| h.identity == self.cfg.identity);
        if !ours && mine.as_ref().is_some_and(|h| h.valid) {
            return Ok(false);
        }
        v["apiVersion"] = json!("coordination.k8s.io/v1");
        v["kind"] = json!("Lease");
        let spec = &mut v["spec"];
        if !ours {
            spec["acquireTime"] = json!(stamp);
            spec["leaseTransitions"] = json!(spec["leaseTransitions"].as_i64().unwrap_or(0) + 1);
        }
        spec["holderIdentity"] = json!(self.cfg.identity);
        spec["leaseDurationSeconds"] = json!(secs);
        spec["renewTime"] = json!(stamp);
        let obj: DynamicObject = serde_json::from_value(v).expect("a Lease deserializes");
        // `replace` carries the resourceVersion we read: a concurrent change makes it fail (409).
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &obj)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(409) => Ok(false),
            Err(e) => Err(self.err("renew", &e)),
        }
    }

    /// Who holds the Lease now, if anyone validly does.
    pub async fn current_holder(&self) -> Result<Option<String>, LeaseError> {
        let current = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(|e| self.err("read", &e))?;
        Ok(current.and_then(|c| {
            let v = serde_json::to_value(&c).ok()?;
            holder(&v, OffsetDateTime::now_utc())
                .filter(|h| h.valid)
                .map(|h| h.identity)
        }))
    }

    /// Acquire once or fail naming the holder (for `homelab sync --once`).
    pub async fn acquire_or_fail(&self) -> Result<(), LeaseError> {
        if self.try_acquire().await? {
            let _ = self.tx.send(true);
            return Ok(());
        }
        Err(LeaseError::Held {
            holder: self
                .current_holder()
                .await?
                .unwrap_or_else(|| "unknown".into()),
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
        })
    }

    /// Give the Lease up (on shutdown), so a successor need not wait for it to expire.
    pub async fn release(&self) {
        let Ok(Some(current)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let mut v = serde_json::to_value(&current).expect("objects serialize");
        if v["spec"]["holderIdentity"].as_str() != Some(self.cfg.identity.as_str()) {
            return;
        }
        v["apiVersion"] = json!("coordination.k8s.io/v1");
        v["kind"] = json!("Lease");
        v["spec"]["holderIdentity"] = Value::Null;
        v["spec"]["renewTime"] = Value::Null;
        if let Ok(obj) = serde_json::from_value::<DynamicObject>(v) {
            let _ = self
                .api
                .replace(&self.cfg.name, &PostParams::default(), &obj)
                .await;
        }
        let _ = self.tx.send(false);
    }

    /// Keep trying and renewing until `stop` resolves; publishes leadership on the watch channel.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last_renewed: Option<tokio::time::Instant> = None;
        loop {
            let held = match self.try_acquire().await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "lease");
                    false
                }
            };
            if held {
                last_renewed = Some(tokio::time::Instant::now());
            }
            // A holder that could not renew steps down before the lease can expire for others.
            let leading = held
                || last_renewed
                    .is_some_and(|t| t.elapsed() + self.cfg.renew_every < self.cfg.duration);
            if !leading {
                last_renewed = None;
            }
            if *self.tx.borrow() != leading {
                tracing::info!(identity = %self.cfg.identity, leading, "leadership changed");
                let _ = self.tx.send(leading);
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(self.cfg.renew_every) => {}
            }
        }
        if *self.tx.borrow() {
            self.release().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_validity_follows_renew_time_and_duration() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let lease = |renew: OffsetDateTime| json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": micro_time(renew)}});
        assert_eq!(
            holder(&lease(now - time::Duration::seconds(10)), now),
            Some(Holder {
                identity: "a".into(),
                valid: true
            })
        );
        assert_eq!(
            holder(&lease(now - time::Duration::seconds(16)), now),
            Some(Holder {
                identity: "a".into(),
                valid: false
            })
        );
        assert_eq!(holder(&json!({"spec": {}}), now), None);
        assert_eq!(micro_time(now), "2027-01-15T08:00:00.000000Z");
    }
}

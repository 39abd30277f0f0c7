//! Certificates issued by a lab CA that has since been replaced (`homelab ca regenerate`) are
//! issued again.
//!
//! cert-manager never compares an issued Secret with its issuer's current CA: after the lab CA
//! changes, every existing certificate stays signed by the old one until it expires, and clients
//! that trust only the new CA refuse it. Deleting the Secret is cert-manager's own trigger to
//! issue again (the Certificate turns `Ready=False, DoesNotExist`, then issues).
//!
//! Data flow: the rendered manifests name the lab's CA ClusterIssuers → LIST Certificates (all
//! namespaces) that use them → GET each one's Secret → a Secret whose `ca.crt` is not the lab CA
//! is deleted → wait (bounded) until each is back with the lab CA. When nothing is stale this
//! reads only (one LIST, one GET per certificate).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ::kube::api::{DeleteParams, ListParams};
use base64::Engine as _;
use serde_json::Value;

use crate::cluster::apply::{Applier, ApplyError, Resolved, to_value};
use crate::cluster::kube::describe;
use crate::edges::output::Progress;
use crate::model::render::Manifests;
use crate::model::tls::LabCa;

/// The progress line this work reports under.
const PROGRESS: &str = "certificates";

/// A certificate the lab CA issues, and where its Secret lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Issued {
    namespace: String,
    certificate: String,
    secret: String,
}

/// The names of the ClusterIssuers the lab renders that sign with a CA (`spec.ca`).
pub fn lab_ca_issuers(manifests: &Manifests) -> BTreeSet<String> {
    manifests
        .components
        .iter()
        .flat_map(|c| &c.objects)
        .filter(|o| {
            o["kind"] == "ClusterIssuer"
                && o["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("cert-manager.io/"))
                && o.pointer("/spec/ca").is_some()
        })
        .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// Whether a certificate Secret carries `ca` as its `ca.crt`: `None` when it does not say
/// (no `ca.crt`), so that nothing is deleted on a guess.
fn issued_by(secret: &Value, ca: &LabCa) -> Option<bool> {
    let b64 = secret.pointer("/data/ca.crt").and_then(Value::as_str)?;
    let pem = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(String::from_utf8_lossy(&pem).trim() == ca.cert_pem.trim())
}

fn api_error(action: String, e: &::kube::Error) -> ApplyError {
    ApplyError::Api {
        action,
        message: describe(e),
    }
}

/// Issue again every certificate of the lab's CA issuers whose Secret was signed by another CA,
/// and wait until each is back (bounded by `limit`, looking every `poll`). Returns the
/// certificates issued again, as `namespace/name`.
pub async fn stale_certificates(
    client: &::kube::Client,
    manifests: &Manifests,
    ca: &LabCa,
    poll: Duration,
    limit: Duration,
    progress: &dyn Progress,
) -> Result<Vec<String>, ApplyError> {
    let issuers = lab_ca_issuers(manifests);
    if issuers.is_empty() {
        return Ok(Vec::new());
    }
    let applier = Applier::new(client.clone());
    let Some(certificates) = applier.resolve("cert-manager.io/v1", "Certificate").await? else {
        return Ok(Vec::new());
    };
    let Some(secrets) = applier.resolve("v1", "Secret").await? else {
        return Ok(Vec::new());
    };
    let listed = applier
        .api(&certificates, "")
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error("list cert-manager Certificates".into(), &e))?;
    let mut stale = Vec::new();
    for c in &listed.items {
        let c = to_value(c, &certificates);
        let s = |p: &str| c.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let group = s("/spec/issuerRef/group");
        if s("/spec/issuerRef/kind") != "ClusterIssuer"
            || !(group.is_empty() || group == "cert-manager.io")
            || !issuers.contains(s("/spec/issuerRef/name"))
        {
            continue;
        }
        let issued = Issued {
            namespace: s("/metadata/namespace").to_string(),
            certificate: s("/metadata/name").to_string(),
            secret: s("/spec/secretName").to_string(),
        };
        let secret = read_secret(&applier, &secrets, &issued).await?;
        if secret.is_some_and(|v| issued_by(&v, ca) == Some(false)) {
            stale.push(issued);
        }
    }
    if stale.is_empty() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    progress.start(
        PROGRESS,
        &format!(
            "{} certificates are signed by a previous lab CA; issuing them again",
            stale.len()
        ),
    );
    for i in &stale {
        applier
            .api(&secrets, &i.namespace)
            .delete(&i.secret, &DeleteParams::default())
            .await
            .map(|_| ())
            .or_else(|e| match e {
                ::kube::Error::Api(ref r) if r.code == 404 => Ok(()),
                e => Err(api_error(
                    format!(
                        "delete Secret {}/{} to issue it again",
                        i.namespace, i.secret
                    ),
                    &e,
                )),
            })?;
    }
    let mut waiting: Vec<&Issued> = stale.iter().collect();
    let mut pause = poll;
    loop {
        let mut still = Vec::new();
        for i in waiting {
            let secret = read_secret(&applier, &secrets, i).await?;
            if secret.and_then(|v| issued_by(&v, ca)) != Some(true) {
                still.push(i);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if started.elapsed() >= limit {
            let names: Vec<String> = waiting
                .iter()
                .map(|i| format!("{}/{}", i.namespace, i.certificate))
                .collect();
            return Err(ApplyError::Api {
                action: format!(
                    "issue certificates again from the new lab CA within {}s",
                    limit.as_secs()
                ),
                message: format!(
                    "not issued yet: {}; `kubectl describe certificate -n <namespace> <name>` says why",
                    names.join(", ")
                ),
            });
        }
        progress.update(
            PROGRESS,
            &format!("waiting for {} certificates", waiting.len()),
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5).max(poll));
    }
    progress.finish(
        PROGRESS,
        crate::edges::output::Outcome::Done,
        started.elapsed(),
        &format!("{} certificates issued again from the lab CA", stale.len()),
    );
    Ok(stale
        .into_iter()
        .map(|i| format!("{}/{}", i.namespace, i.certificate))
        .collect())
}

async fn read_secret(
    applier: &Applier,
    secrets: &Resolved,
    i: &Issued,
) -> Result<Option<Value>, ApplyError> {
    applier
        .api(secrets, &i.namespace)
        .get_opt(&i.secret)
        .await
        .map(|o| o.map(|o| to_value(&o, secrets)))
        .map_err(|e| api_error(format!("read Secret {}/{}", i.namespace, i.secret), &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::redact::Secret;
    use serde_json::json;

    fn ca(pem: &str) -> LabCa {
        LabCa {
            cert_pem: pem.into(),
            key_pem: Secret::new("k"),
        }
    }

    #[test]
    fn a_secret_is_judged_by_its_ca_crt_and_never_on_a_guess() {
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let secret = json!({"data": {"ca.crt": b64("NEW\n"), "tls.crt": b64("leaf")}});
        assert_eq!(issued_by(&secret, &ca("NEW")), Some(true));
        assert_eq!(issued_by(&secret, &ca("OLD")), Some(false));
        assert_eq!(
            issued_by(&json!({"data": {"tls.crt": b64("leaf")}}), &ca("NEW")),
            None
        );
    }
}

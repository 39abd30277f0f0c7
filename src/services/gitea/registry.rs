//! Gitea's container registry (`/v2/`): the login docker, containerd and kaniko do, so `up`
//! proves the token it stores can push images.
//!
//! Architecture invariant: credentials go only to Gitea's own host; a token realm elsewhere is
//! refused before anything is sent to it.

use reqwest::{Method, StatusCode, Url};

use super::client::{Credentials, GiteaClient, GiteaError};
use crate::edges::http::api::{Auth, decode, fail};
use crate::edges::redact::{Secret, redact_url};

/// The registry accepted the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryAccess {
    /// The realm that issued the bearer token, redacted; `None` when basic auth was accepted
    /// directly.
    pub realm: Option<String>,
}

impl GiteaClient {
    /// Log in to the container registry the way docker, containerd and kaniko do (OCI
    /// distribution spec): `GET /v2/` anonymously; on a 401 with a `Bearer` challenge, fetch a
    /// token from the realm with these credentials (basic auth) and retry `GET /v2/` with it.
    /// With basic credentials accepted directly, no dance is needed.
    pub async fn registry_login(&self) -> Result<RegistryAccess, GiteaError> {
        let call = "log in to the container registry";
        let v2 = self.url(&["v2", ""], &[]);
        let anonymous = self.with_credentials(Credentials::None);
        let (status, bytes, challenge) = anonymous.send_raw(call, v2.clone(), None).await?;
        if status.is_success() {
            // An open registry proves nothing about the token: ask with it too.
            let (status, bytes, _) = self.send_raw(call, v2, None).await?;
            return if status.is_success() {
                Ok(RegistryAccess { realm: None })
            } else {
                Err(fail(call, status, &bytes).into())
            };
        }
        if status != StatusCode::UNAUTHORIZED {
            return Err(fail(call, status, &bytes).into());
        }
        let Some(challenge) = challenge.as_deref().and_then(parse_bearer_challenge) else {
            // Basic challenge: the registry takes the credentials as they are.
            let (status, bytes, _) = self.send_raw(call, v2, None).await?;
            return if status.is_success() {
                Ok(RegistryAccess { realm: None })
            } else {
                Err(fail(call, status, &bytes).into())
            };
        };
        let realm = Url::parse(&challenge.realm).map_err(|e| GiteaError::Realm {
            call: call.into(),
            realm: redact_url(&challenge.realm),
            why: format!("is not a URL: {e}"),
        })?;
        // Credentials go only to the host they were made for.
        if realm.host_str() != self.base_url().host_str()
            || realm.port_or_known_default() != self.base_url().port_or_known_default()
            || realm.scheme() != self.base_url().scheme()
        {
            return Err(GiteaError::Realm {
                call: call.into(),
                realm: redact_url(realm.as_str()),
                why: format!(
                    "is not on Gitea's own host `{}`; check Gitea's `ROOT_URL`",
                    self.base_url().host_str().unwrap_or_default()
                ),
            });
        }
        let mut token_url = realm.clone();
        {
            let mut q = token_url.query_pairs_mut();
            if let Some(service) = &challenge.service {
                q.append_pair("service", service);
            }
            if let Some(scope) = &challenge.scope {
                q.append_pair("scope", scope);
            }
        }
        let (status, bytes, _) = self.send_raw(call, token_url, None).await?;
        if !status.is_success() {
            return Err(fail(call, status, &bytes).into());
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: Secret,
            #[serde(default)]
            access_token: Secret,
        }
        let answer: TokenAnswer = decode::<_, GiteaError>(call, &bytes)?;
        let bearer = if answer.token.is_empty() {
            answer.access_token
        } else {
            answer.token
        };
        if bearer.is_empty() {
            return Err(GiteaError::Decode {
                call: call.into(),
                message: "the token realm answered without a token".into(),
            });
        }
        let (status, bytes, _) = anonymous.send_raw(call, v2, Some(&bearer)).await?;
        if status.is_success() {
            Ok(RegistryAccess {
                realm: Some(redact_url(realm.as_str())),
            })
        } else {
            Err(fail(call, status, &bytes).into())
        }
    }

    /// The digest of the manifest `repository:reference` points at (`GET
    /// /v2/<repository>/manifests/<reference>`, hashed), `None` when the registry has none
    /// (404).
    pub async fn registry_manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, GiteaError> {
        let call = "look up an image in the container registry";
        let a = self
            .registry_call(
                call,
                Method::GET,
                repository,
                &["manifests", reference],
                &[],
                None,
            )
            .await?;
        match a.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(format!(
                "sha256:{}",
                crate::edges::digest::sha256_hex(&a.body)
            ))),
            s => Err(fail(call, s, &a.body).into()),
        }
    }

    /// The registry holds blob `digest` for `repository` (`HEAD /v2/<repository>/blobs/<digest>`).
    pub async fn registry_has_blob(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<bool, GiteaError> {
        let call = "look up a blob in the container registry";
        let a = self
            .registry_call(
                call,
                Method::HEAD,
                repository,
                &["blobs", digest],
                &[],
                None,
            )
            .await?;
        match a.status {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            s => Err(fail(call, s, &a.body).into()),
        }
    }

    /// Upload one blob in a single request (OCI distribution spec "single POST": `POST
    /// /v2/<repository>/blobs/uploads/?digest=<digest>` with the bytes; Gitea answers 201 and
    /// checks the digest).
    pub async fn registry_put_blob(
        &self,
        repository: &str,
        digest: &str,
        bytes: Vec<u8>,
    ) -> Result<(), GiteaError> {
        let call = "push a blob to the container registry";
        let a = self
            .registry_call(
                call,
                Method::POST,
                repository,
                &["blobs", "uploads", ""],
                &[("digest", digest)],
                Some((bytes, "application/octet-stream")),
            )
            .await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(fail(call, a.status, &a.body).into())
        }
    }

    /// Tag a manifest (`PUT /v2/<repository>/manifests/<tag>` with its media type); every blob
    /// it names must be in the registry already.
    pub async fn registry_put_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), GiteaError> {
        let call = "push a manifest to the container registry";
        let a = self
            .registry_call(
                call,
                Method::PUT,
                repository,
                &["manifests", tag],
                &[],
                Some((bytes, media_type)),
            )
            .await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(fail(call, a.status, &a.body).into())
        }
    }

    /// One call under `/v2/<repository>/…` with this client's credentials (Gitea takes basic
    /// credentials on every registry route: `routers/api/packages/api.go` `ContainerRoutes`).
    async fn registry_call(
        &self,
        call: &str,
        method: Method,
        repository: &str,
        tail: &[&str],
        query: &[(&str, &str)],
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<crate::edges::http::api::Answer, GiteaError> {
        let mut segments: Vec<&str> = vec!["v2"];
        segments.extend(repository.split('/'));
        segments.extend(tail);
        let query: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let url = self.url(&segments, &query);
        self.core()
            .send_typed::<GiteaError>(call, method, url, self.auth(), body)
            .await
    }

    async fn send_raw(
        &self,
        call: &str,
        url: Url,
        bearer: Option<&Secret>,
    ) -> Result<(StatusCode, Vec<u8>, Option<String>), GiteaError> {
        // The bearer token is only ever sent by the anonymous client.
        let auth = match bearer {
            Some(b) => Auth::Bearer(b),
            None => self.auth(),
        };
        let a = self
            .core()
            .send::<GiteaError>(call, Method::GET, url, auth, None)
            .await?;
        Ok((a.status, a.body, a.challenge))
    }
}

/// A `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BearerChallenge {
    /// Where to fetch a token.
    pub realm: String,
    /// `service` parameter.
    pub service: Option<String>,
    /// `scope` parameter.
    pub scope: Option<String>,
}

/// Parse a bearer challenge; `None` for other schemes.
pub fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let rest = header.trim();
    let (scheme, params) = rest.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut s = params.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim();
        let after = after.trim_start();
        let (value, rest) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            "scope" => scope = Some(value.to_string()),
            _ => {}
        }
        s = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(BearerChallenge {
        realm: realm?,
        service,
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_is_parsed() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://gitea.x/v2/token",service="container_registry",scope="*""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://gitea.x/v2/token");
        assert_eq!(c.service.as_deref(), Some("container_registry"));
        assert_eq!(c.scope.as_deref(), Some("*"));
        assert_eq!(parse_bearer_challenge(r#"Basic realm="x""#), None);
    }
}

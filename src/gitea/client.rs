//! The typed Gitea client: one method per API call, the base URL as the seam.
//!
//! Architecture invariant: credentials only ever travel in the `Authorization` header (never in a
//! URL), request and response bodies are never logged (a token creation answer holds the token),
//! and every error names the call it came from with the URL redacted.

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::types::*;
use crate::error::Diagnostic;
use crate::http::{Endpoint, answer_message, error_chain};
use crate::redact::{Secret, redact_url};

/// How a request authenticates.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    /// Anonymous.
    #[default]
    None,
    /// HTTP basic auth with a password (or a token as the password).
    Basic {
        /// Login.
        user: String,
        /// Password or token.
        password: Secret,
    },
    /// `Authorization: token <T>`.
    Token(Secret),
}

/// A Gitea call failed.
#[derive(Debug, thiserror::Error)]
pub enum GiteaError {
    /// The HTTP client could not be built (bad CA PEM, bad URL).
    #[error("prepare the connection to Gitea at {url}: {message}")]
    Setup {
        /// The base URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// No answer (DNS, TCP, TLS).
    #[error("{call}: could not reach Gitea at {url}: {detail}")]
    Unreachable {
        /// The call, e.g. "create repository `lab/gitops`".
        call: String,
        /// The URL, redacted.
        url: String,
        /// The transport error chain, redacted.
        detail: String,
    },
    /// An answer with an unexpected status.
    #[error("{call}: Gitea answered {status}{}", crate::http::detail_suffix(.message))]
    Status {
        /// The call.
        call: String,
        /// The HTTP status.
        status: u16,
        /// Gitea's `message`, or the start of the body.
        message: String,
    },
    /// An answer that is not the JSON documented for the call.
    #[error("{call}: Gitea's answer is not the documented JSON: {message}")]
    Decode {
        /// The call.
        call: String,
        /// The parser message.
        message: String,
    },
    /// The registry's token realm points somewhere homelab will not send credentials to.
    #[error("{call}: the registry's token realm `{realm}` {why}")]
    Realm {
        /// The call.
        call: String,
        /// The realm URL, redacted.
        realm: String,
        /// What is wrong with it.
        why: String,
    },
}

impl GiteaError {
    /// The HTTP status when Gitea answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GiteaError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl Diagnostic for GiteaError {
    fn hints(&self) -> Vec<String> {
        match self {
            GiteaError::Setup { .. } => Vec::new(),
            GiteaError::Unreachable { detail, .. } if detail.contains("certificate") => vec![
                "Gitea's certificate is not signed by the lab CA: check the `gitea` Certificate with `kubectl -n gitea get certificate` and that cert-manager issued it".into(),
            ],
            GiteaError::Unreachable { .. } => vec![
                "check that the ingress answers for Gitea's host (`homelab status`); a router that drops DNS answers with private IPs breaks `*.sslip.io` names, `--domain` avoids it".into(),
            ],
            GiteaError::Status { status: 401, .. } => vec![
                "the stored token or the admin password was refused; `homelab up` replaces a stale token, so run it again".into(),
            ],
            GiteaError::Status { status: 403, message, .. } if message.contains("scope") => vec![
                "the stored token lacks a scope this call needs; delete `gitea_token` from the lab's `secrets.json` and run `homelab up` to create a new one".into(),
            ],
            GiteaError::Status { status, .. } if *status >= 500 => vec![
                "Gitea failed internally: look at its log with `kubectl -n gitea logs deploy/gitea`".into(),
            ],
            _ => Vec::new(),
        }
    }
}

/// What a create call found.
#[derive(Clone, Debug)]
pub enum Created<T> {
    /// Created now.
    Created(T),
    /// It already existed (422 or 409): someone created it between the look and the create.
    Exists,
}

/// The registry accepted the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryAccess {
    /// The realm that issued the bearer token, redacted; `None` when basic auth was accepted
    /// directly.
    pub realm: Option<String>,
}

/// A client for one Gitea, with one set of credentials.
#[derive(Clone)]
pub struct GiteaClient {
    http: reqwest::Client,
    base: Url,
    credentials: Credentials,
}

const PAGE_LIMIT: usize = 50;

impl GiteaClient {
    /// An anonymous client for `endpoint`.
    pub fn new(endpoint: &Endpoint) -> Result<GiteaClient, GiteaError> {
        let setup = |message: String| GiteaError::Setup {
            url: redact_url(&endpoint.base_url),
            message,
        };
        let mut base = Url::parse(endpoint.base_url.trim_end_matches('/'))
            .map_err(|e| setup(format!("not a URL: {e}")))?;
        if !base.username().is_empty() || base.password().is_some() {
            return Err(setup(
                "credentials do not belong in the URL; they are sent in headers".into(),
            ));
        }
        if base.path() == "/" {
            base.set_path("");
        }
        // No redirects: one would carry the Authorization header to wherever Gitea points.
        let http = crate::http::client(&[endpoint], None, std::time::Duration::from_secs(60))
            .map_err(setup)?;
        Ok(GiteaClient {
            http,
            base,
            credentials: Credentials::None,
        })
    }

    /// The same client with other credentials.
    pub fn with_credentials(&self, credentials: Credentials) -> GiteaClient {
        GiteaClient {
            http: self.http.clone(),
            base: self.base.clone(),
            credentials,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("http(s) URLs have paths");
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    fn api(&self, path: &[&str], query: &[(&str, String)]) -> Url {
        let mut segments = vec!["api", "v1"];
        segments.extend_from_slice(path);
        self.url(&segments, query)
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Credentials::None => req,
            Credentials::Basic { user, password } => req.basic_auth(user, Some(password.expose())),
            Credentials::Token(token) => {
                let mut value =
                    reqwest::header::HeaderValue::from_str(&format!("token {}", token.expose()))
                        .unwrap_or_else(|_| {
                            reqwest::header::HeaderValue::from_static("token invalid")
                        });
                value.set_sensitive(true);
                req.header(reqwest::header::AUTHORIZATION, value)
            }
        }
    }

    async fn send(
        &self,
        call: &str,
        method: Method,
        url: Url,
        body: Option<&(dyn erased::Json + Sync)>,
    ) -> Result<(StatusCode, Vec<u8>), GiteaError> {
        let shown = redact_url(url.as_str());
        let mut req = self.authorize(self.http.request(method.clone(), url));
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_json());
        }
        let resp = req.send().await.map_err(|e| GiteaError::Unreachable {
            call: call.to_string(),
            url: shown.clone(),
            detail: redact_url(&error_chain(&e)),
        })?;
        let status = resp.status();
        tracing::debug!("{method} {shown} → {}", status.as_u16());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| GiteaError::Unreachable {
                call: call.to_string(),
                url: shown,
                detail: redact_url(&error_chain(&e)),
            })?
            .to_vec();
        Ok((status, bytes))
    }

    fn fail(call: &str, status: StatusCode, body: &[u8]) -> GiteaError {
        let message = answer_message(body);
        GiteaError::Status {
            call: call.to_string(),
            status: status.as_u16(),
            message,
        }
    }

    fn decode<T: DeserializeOwned>(call: &str, body: &[u8]) -> Result<T, GiteaError> {
        serde_json::from_slice(body).map_err(|e| GiteaError::Decode {
            call: call.to_string(),
            message: e.to_string(),
        })
    }

    /// `GET` one resource: `None` on 404, decoded on 2xx, an error otherwise.
    async fn get_optional<T: DeserializeOwned>(
        &self,
        call: &str,
        url: Url,
    ) -> Result<Option<T>, GiteaError> {
        let (status, bytes) = self.send(call, Method::GET, url, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Self::decode(call, &bytes).map(Some),
            s => Err(Self::fail(call, s, &bytes)),
        }
    }

    /// Every page of a list endpoint (`page`, `limit` query parameters), concatenated.
    async fn list_all<T: DeserializeOwned>(
        &self,
        call: &str,
        path: &[&str],
    ) -> Result<Vec<T>, GiteaError> {
        let mut all = Vec::new();
        for page in 1.. {
            let url = self.api(
                path,
                &[
                    ("page", page.to_string()),
                    ("limit", PAGE_LIMIT.to_string()),
                ],
            );
            let batch: Vec<T> = self.json(call, Method::GET, url, None).await?;
            let n = batch.len();
            all.extend(batch);
            if n < PAGE_LIMIT {
                break;
            }
        }
        Ok(all)
    }

    /// Send and decode a 2xx answer; any other status is an error.
    async fn json<T: DeserializeOwned>(
        &self,
        call: &str,
        method: Method,
        url: Url,
        body: Option<&(dyn erased::Json + Sync)>,
    ) -> Result<T, GiteaError> {
        let (status, bytes) = self.send(call, method, url, body).await?;
        if !status.is_success() {
            return Err(Self::fail(call, status, &bytes));
        }
        Self::decode(call, &bytes)
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<ServerVersion, GiteaError> {
        self.json(
            "read Gitea's version",
            Method::GET,
            self.api(&["version"], &[]),
            None,
        )
        .await
    }

    /// `GET /user`: who the credentials belong to.
    pub async fn current_user(&self) -> Result<User, GiteaError> {
        self.json(
            "read the signed-in user",
            Method::GET,
            self.api(&["user"], &[]),
            None,
        )
        .await
    }

    /// `GET /users/{username}/tokens`, every page (basic auth only).
    pub async fn list_tokens(&self, user: &str) -> Result<Vec<AccessToken>, GiteaError> {
        let call = format!("list the API tokens of `{user}`");
        self.list_all(&call, &["users", user, "tokens"]).await
    }

    /// `POST /users/{username}/tokens` (basic auth only). A duplicate name is a 400.
    pub async fn create_token(
        &self,
        user: &str,
        option: &CreateAccessTokenOption,
    ) -> Result<AccessToken, GiteaError> {
        let call = format!("create the API token `{}` of `{user}`", option.name);
        let (status, bytes) = self
            .send(
                &call,
                Method::POST,
                self.api(&["users", user, "tokens"], &[]),
                Some(option),
            )
            .await?;
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(Self::fail(&call, status, &bytes));
        }
        Self::decode(&call, &bytes)
    }

    /// `DELETE /users/{username}/tokens/{token}` by name or id (basic auth only).
    pub async fn delete_token(&self, user: &str, token: &str) -> Result<(), GiteaError> {
        let call = format!("delete the API token `{token}` of `{user}`");
        let (status, bytes) = self
            .send(
                &call,
                Method::DELETE,
                self.api(&["users", user, "tokens", token], &[]),
                None,
            )
            .await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Self::fail(&call, status, &bytes))
        }
    }

    /// `GET /orgs/{org}`; `None` on 404.
    pub async fn get_org(&self, org: &str) -> Result<Option<Organization>, GiteaError> {
        let call = format!("read organization `{org}`");
        self.get_optional(&call, self.api(&["orgs", org], &[]))
            .await
    }

    /// `POST /orgs`; 422 means it exists.
    pub async fn create_org(
        &self,
        option: &CreateOrgOption,
    ) -> Result<Created<Organization>, GiteaError> {
        let call = format!("create organization `{}`", option.username);
        let (status, bytes) = self
            .send(&call, Method::POST, self.api(&["orgs"], &[]), Some(option))
            .await?;
        match status {
            StatusCode::CREATED | StatusCode::OK => {
                Self::decode(&call, &bytes).map(Created::Created)
            }
            StatusCode::UNPROCESSABLE_ENTITY if is_exists(&bytes) => Ok(Created::Exists),
            s => Err(Self::fail(&call, s, &bytes)),
        }
    }

    /// `GET /repos/{owner}/{repo}`; `None` on 404.
    pub async fn get_repo(
        &self,
        owner: &str,
        repo: &str,
    ) -> Result<Option<Repository>, GiteaError> {
        let call = format!("read repository `{owner}/{repo}`");
        self.get_optional(&call, self.api(&["repos", owner, repo], &[]))
            .await
    }

    /// `POST /orgs/{org}/repos`; 409 means it exists.
    pub async fn create_org_repo(
        &self,
        org: &str,
        option: &CreateRepoOption,
    ) -> Result<Created<Repository>, GiteaError> {
        let call = format!("create repository `{org}/{}`", option.name);
        let (status, bytes) = self
            .send(
                &call,
                Method::POST,
                self.api(&["orgs", org, "repos"], &[]),
                Some(option),
            )
            .await?;
        match status {
            StatusCode::CREATED | StatusCode::OK => {
                Self::decode(&call, &bytes).map(Created::Created)
            }
            StatusCode::CONFLICT => Ok(Created::Exists),
            s => Err(Self::fail(&call, s, &bytes)),
        }
    }

    /// `GET /repos/{owner}/{repo}/hooks`, every page.
    pub async fn list_hooks(&self, owner: &str, repo: &str) -> Result<Vec<Hook>, GiteaError> {
        let call = format!("list the webhooks of `{owner}/{repo}`");
        self.list_all(&call, &["repos", owner, repo, "hooks"]).await
    }

    /// `POST /repos/{owner}/{repo}/hooks`.
    pub async fn create_hook(
        &self,
        owner: &str,
        repo: &str,
        option: &CreateHookOption,
    ) -> Result<Hook, GiteaError> {
        let call = format!("create a webhook on `{owner}/{repo}`");
        self.json(
            &call,
            Method::POST,
            self.api(&["repos", owner, repo, "hooks"], &[]),
            Some(option),
        )
        .await
    }

    /// `PATCH /repos/{owner}/{repo}/hooks/{id}`.
    pub async fn edit_hook(
        &self,
        owner: &str,
        repo: &str,
        id: i64,
        option: &EditHookOption,
    ) -> Result<Hook, GiteaError> {
        let call = format!("update webhook {id} on `{owner}/{repo}`");
        let id = id.to_string();
        self.json(
            &call,
            Method::PATCH,
            self.api(&["repos", owner, repo, "hooks", &id], &[]),
            Some(option),
        )
        .await
    }

    /// `DELETE /repos/{owner}/{repo}/hooks/{id}`.
    pub async fn delete_hook(&self, owner: &str, repo: &str, id: i64) -> Result<(), GiteaError> {
        let call = format!("delete duplicate webhook {id} on `{owner}/{repo}`");
        let id = id.to_string();
        let (status, bytes) = self
            .send(
                &call,
                Method::DELETE,
                self.api(&["repos", owner, repo, "hooks", &id], &[]),
                None,
            )
            .await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Self::fail(&call, status, &bytes))
        }
    }

    /// `GET /user/applications/oauth2`, every page: the signed-in user's OAuth2 apps (without
    /// their secrets).
    pub async fn list_oauth2_apps(&self) -> Result<Vec<OAuth2Application>, GiteaError> {
        let call = "list the OAuth2 applications";
        self.list_all(call, &["user", "applications", "oauth2"])
            .await
    }

    /// `POST /user/applications/oauth2`: the answer holds the client secret, and only it does.
    pub async fn create_oauth2_app(
        &self,
        option: &CreateOAuth2ApplicationOptions,
    ) -> Result<OAuth2Application, GiteaError> {
        let call = format!("create the OAuth2 application `{}`", option.name);
        self.json(
            &call,
            Method::POST,
            self.api(&["user", "applications", "oauth2"], &[]),
            Some(option),
        )
        .await
    }

    /// `PATCH /user/applications/oauth2/{id}`: updates the app and, per Gitea's contract
    /// ("this includes regenerating the client secret"), always issues a new client secret.
    pub async fn update_oauth2_app(
        &self,
        id: i64,
        option: &CreateOAuth2ApplicationOptions,
    ) -> Result<OAuth2Application, GiteaError> {
        let call = format!("update the OAuth2 application `{}` ({id})", option.name);
        let id = id.to_string();
        self.json(
            &call,
            Method::PATCH,
            self.api(&["user", "applications", "oauth2", &id], &[]),
            Some(option),
        )
        .await
    }

    /// `DELETE /user/applications/oauth2/{id}`; a 404 counts as done.
    pub async fn delete_oauth2_app(&self, id: i64) -> Result<(), GiteaError> {
        let call = format!("delete the OAuth2 application {id}");
        let id = id.to_string();
        let (status, bytes) = self
            .send(
                &call,
                Method::DELETE,
                self.api(&["user", "applications", "oauth2", &id], &[]),
                None,
            )
            .await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Self::fail(&call, status, &bytes))
        }
    }

    /// `GET /repos/{owner}/{repo}/contents/{filepath}?ref=`; `None` on 404.
    pub async fn get_contents(
        &self,
        owner: &str,
        repo: &str,
        path: &str,
        reference: &str,
    ) -> Result<Option<ContentsResponse>, GiteaError> {
        let call = format!("read `{path}` in `{owner}/{repo}` at `{reference}`");
        let mut segments = vec!["repos", owner, repo, "contents"];
        segments.extend(path.split('/'));
        let url = self.api(&segments, &[("ref", reference.to_string())]);
        self.get_optional(&call, url).await
    }

    /// `PUT /repos/{owner}/{repo}/contents/{filepath}`: one commit replacing one file.
    pub async fn update_file(
        &self,
        owner: &str,
        repo: &str,
        path: &str,
        option: &UpdateFileOptions,
    ) -> Result<FileResponse, GiteaError> {
        let call = format!("commit `{path}` to `{owner}/{repo}` on `{}`", option.branch);
        let mut segments = vec!["repos", owner, repo, "contents"];
        segments.extend(path.split('/'));
        self.json(&call, Method::PUT, self.api(&segments, &[]), Some(option))
            .await
    }

    /// `GET /repos/{owner}/{repo}/branches/{branch}`; `None` on 404.
    pub async fn get_branch(
        &self,
        owner: &str,
        repo: &str,
        branch: &str,
    ) -> Result<Option<Branch>, GiteaError> {
        let call = format!("read branch `{branch}` of `{owner}/{repo}`");
        let url = self.api(&["repos", owner, repo, "branches", branch], &[]);
        self.get_optional(&call, url).await
    }

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
                Err(Self::fail(call, status, &bytes))
            };
        }
        if status != StatusCode::UNAUTHORIZED {
            return Err(Self::fail(call, status, &bytes));
        }
        let Some(challenge) = challenge.as_deref().and_then(parse_bearer_challenge) else {
            // Basic challenge: the registry takes the credentials as they are.
            let (status, bytes, _) = self.send_raw(call, v2, None).await?;
            return if status.is_success() {
                Ok(RegistryAccess { realm: None })
            } else {
                Err(Self::fail(call, status, &bytes))
            };
        };
        let realm = Url::parse(&challenge.realm).map_err(|e| GiteaError::Realm {
            call: call.into(),
            realm: redact_url(&challenge.realm),
            why: format!("is not a URL: {e}"),
        })?;
        // Credentials go only to the host they were made for.
        if realm.host_str() != self.base.host_str()
            || realm.port_or_known_default() != self.base.port_or_known_default()
            || realm.scheme() != self.base.scheme()
        {
            return Err(GiteaError::Realm {
                call: call.into(),
                realm: redact_url(realm.as_str()),
                why: format!(
                    "is not on Gitea's own host `{}`; check Gitea's `ROOT_URL`",
                    self.base.host_str().unwrap_or_default()
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
            return Err(Self::fail(call, status, &bytes));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: Secret,
            #[serde(default)]
            access_token: Secret,
        }
        let answer: TokenAnswer = Self::decode(call, &bytes)?;
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
            Err(Self::fail(call, status, &bytes))
        }
    }

    async fn send_raw(
        &self,
        call: &str,
        url: Url,
        bearer: Option<&Secret>,
    ) -> Result<(StatusCode, Vec<u8>, Option<String>), GiteaError> {
        let shown = redact_url(url.as_str());
        let mut req = self.authorize(self.http.get(url));
        if let Some(b) = bearer {
            req = req.bearer_auth(b.expose());
        }
        let unreachable = |e: reqwest::Error| GiteaError::Unreachable {
            call: call.to_string(),
            url: shown.clone(),
            detail: redact_url(&error_chain(&e)),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        tracing::debug!("GET {shown} → {}", status.as_u16());
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(unreachable)?.to_vec();
        Ok((status, bytes, challenge))
    }
}

fn is_exists(body: &[u8]) -> bool {
    let message = serde_json::from_slice::<ApiError>(body)
        .map(|e| e.message)
        .unwrap_or_default();
    message.contains("already exists") || message.contains("been taken")
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

/// Object-safe JSON bodies, so `send` takes any request option type.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("request options serialize")
        }
    }
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

    #[test]
    fn urls_encode_segments_and_keep_credentials_out() {
        let c = GiteaClient::new(&Endpoint {
            base_url: "https://gitea.example.test/".into(),
            ca_pem: None,
            resolve: None,
        })
        .unwrap();
        assert_eq!(
            c.api(&["repos", "lab", "a b"], &[("page", "1".into())])
                .as_str(),
            "https://gitea.example.test/api/v1/repos/lab/a%20b?page=1"
        );
        let err = GiteaClient::new(&Endpoint {
            base_url: "https://u:secret@gitea.example.test".into(),
            ca_pem: None,
            resolve: None,
        })
        .err()
        .unwrap();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}

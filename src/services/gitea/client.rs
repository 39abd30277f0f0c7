//! The typed Gitea client: one method per API call, the base URL as the seam.
//!
//! Architecture invariant: credentials only ever travel in the `Authorization` header (never in a
//! URL), request and response bodies are never logged (a token creation answer holds the token),
//! and every error names the call it came from with the URL redacted.

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::types::*;
use crate::edges::error::Diagnostic;
use crate::edges::http::Endpoint;
use crate::edges::http::api::{
    Answer, ApiCore, Auth, Failure, authorization, decode, fail, success,
};
use crate::edges::redact::{Secret, redact_url};

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
    #[error("{call}: Gitea answered {status}{}", crate::edges::http::detail_suffix(.message))]
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

/// A client for one Gitea, with one set of credentials.
#[derive(Clone)]
pub struct GiteaClient {
    core: ApiCore,
    credentials: Credentials,
}

const PAGE_LIMIT: usize = 50;

impl From<Failure> for GiteaError {
    fn from(f: Failure) -> GiteaError {
        match f {
            Failure::Unreachable { call, url, detail } => {
                GiteaError::Unreachable { call, url, detail }
            }
            Failure::Status {
                call,
                status,
                message,
            } => GiteaError::Status {
                call,
                status,
                message,
            },
            Failure::Decode { call, message } => GiteaError::Decode { call, message },
        }
    }
}

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
        let http =
            crate::edges::http::client(&[endpoint], None, std::time::Duration::from_secs(60))
                .map_err(setup)?;
        Ok(GiteaClient {
            core: ApiCore::new(http, base),
            credentials: Credentials::None,
        })
    }

    /// The same client with other credentials.
    pub fn with_credentials(&self, credentials: Credentials) -> GiteaClient {
        GiteaClient {
            core: self.core.clone(),
            credentials,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        self.core.base()
    }

    pub(super) fn core(&self) -> &ApiCore {
        &self.core
    }

    pub(super) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.core.url(segments, &query)
    }

    fn api(&self, path: &[&str], query: &[(&str, String)]) -> Url {
        let mut segments = vec!["api", "v1"];
        segments.extend_from_slice(path);
        self.url(&segments, query)
    }

    pub(super) fn auth(&self) -> Auth<'_> {
        match &self.credentials {
            Credentials::None => Auth::None,
            Credentials::Basic { user, password } => Auth::Basic { user, password },
            Credentials::Token(token) => {
                Auth::Header(authorization("token", token, "token invalid"))
            }
        }
    }

    async fn send(
        &self,
        call: &str,
        method: Method,
        url: Url,
        body: Option<&(dyn erased::Json + Sync)>,
    ) -> Result<Answer, GiteaError> {
        let body = body.map(|b| b.to_json());
        self.core.send(call, method, url, self.auth(), body).await
    }

    /// `GET` one resource: `None` on 404, decoded on 2xx, an error otherwise.
    async fn get_optional<T: DeserializeOwned>(
        &self,
        call: &str,
        url: Url,
    ) -> Result<Option<T>, GiteaError> {
        self.core.get_optional(call, url, self.auth()).await
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
        let body = body.map(|b| b.to_json());
        self.core.json(call, method, url, self.auth(), body).await
    }

    /// `POST` a new resource: decoded on 201 or 200, otherwise the answer as it came, for the
    /// caller to read (each endpoint says "exists" its own way) or turn into an error.
    async fn post_new<T: DeserializeOwned>(
        &self,
        call: &str,
        path: &[&str],
        option: &(dyn erased::Json + Sync),
    ) -> Result<Result<T, Answer>, GiteaError> {
        let answer = self
            .send(call, Method::POST, self.api(path, &[]), Some(option))
            .await?;
        match answer.status {
            StatusCode::CREATED | StatusCode::OK => decode(call, &answer.body).map(Ok),
            _ => Ok(Err(answer)),
        }
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
        self.post_new(&call, &["users", user, "tokens"], option)
            .await?
            .map_err(|a| fail(&call, a.status, &a.body).into())
    }

    /// `DELETE /users/{username}/tokens/{token}` by name or id (basic auth only).
    pub async fn delete_token(&self, user: &str, token: &str) -> Result<(), GiteaError> {
        let call = format!("delete the API token `{token}` of `{user}`");
        let answer = self
            .send(
                &call,
                Method::DELETE,
                self.api(&["users", user, "tokens", token], &[]),
                None,
            )
            .await?;
        success(&call, &answer, &[StatusCode::NOT_FOUND])
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
        match self.post_new(&call, &["orgs"], option).await? {
            Ok(org) => Ok(Created::Created(org)),
            Err(a) if a.status == StatusCode::UNPROCESSABLE_ENTITY && is_exists(&a.body) => {
                Ok(Created::Exists)
            }
            Err(a) => Err(fail(&call, a.status, &a.body).into()),
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
        match self
            .post_new(&call, &["orgs", org, "repos"], option)
            .await?
        {
            Ok(repo) => Ok(Created::Created(repo)),
            Err(a) if a.status == StatusCode::CONFLICT => Ok(Created::Exists),
            Err(a) => Err(fail(&call, a.status, &a.body).into()),
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
        let answer = self
            .send(
                &call,
                Method::DELETE,
                self.api(&["repos", owner, repo, "hooks", &id], &[]),
                None,
            )
            .await?;
        success(&call, &answer, &[StatusCode::NOT_FOUND])
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
        let answer = self
            .send(
                &call,
                Method::DELETE,
                self.api(&["user", "applications", "oauth2", &id], &[]),
                None,
            )
            .await?;
        success(&call, &answer, &[StatusCode::NOT_FOUND])
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
}

fn is_exists(body: &[u8]) -> bool {
    let message = serde_json::from_slice::<ApiError>(body)
        .map(|e| e.message)
        .unwrap_or_default();
    message.contains("already exists") || message.contains("been taken")
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

//! The typed Drone 2.24 client: one method per route of `drone/routes.json`, the base URL as the
//! seam.
//!
//! Architecture invariant: the API token travels only in the `Authorization` header (never as
//! `?access_token=`, which would land in logs), bodies are never logged, and every error names
//! the call with the URL redacted.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::types::*;
use crate::edges::error::Diagnostic;
use crate::edges::http::Endpoint;
use crate::edges::http::api::{
    Answer, ApiCore, Auth, Failure, authorization, decode, fail, success,
};
use crate::edges::redact::{Secret, redact_url};

/// A Drone call failed.
#[derive(Debug, thiserror::Error)]
pub enum DroneError {
    /// The client could not be built (bad URL, bad CA).
    #[error("prepare the connection to Drone at {url}: {message}")]
    Setup {
        /// The base URL, redacted.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// No answer (DNS, TCP, TLS).
    #[error("{call}: could not reach Drone at {url}: {detail}")]
    Unreachable {
        /// The call, e.g. "activate `lab/nyan-cat` in Drone".
        call: String,
        /// The URL, redacted.
        url: String,
        /// The transport error chain, redacted.
        detail: String,
    },
    /// An answer with an unexpected status.
    #[error("{call}: Drone answered {status}{}", crate::edges::http::detail_suffix(.message))]
    Status {
        /// The call.
        call: String,
        /// HTTP status.
        status: u16,
        /// Drone's `message`, or the start of the body.
        message: String,
    },
    /// An answer that is not the JSON the route returns.
    #[error("{call}: Drone's answer is not the expected JSON: {message}")]
    Decode {
        /// The call.
        call: String,
        /// Parser message.
        message: String,
    },
}

impl DroneError {
    /// The HTTP status when Drone answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            DroneError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl Diagnostic for DroneError {
    fn hints(&self) -> Vec<String> {
        match self {
            DroneError::Setup { .. } | DroneError::Decode { .. } => Vec::new(),
            DroneError::Unreachable { detail, .. } if detail.contains("certificate") => vec![
                "Drone's certificate is not signed by the lab CA: check `kubectl -n drone get certificate`".into(),
            ],
            DroneError::Unreachable { .. } => vec![
                "check that Drone runs (`kubectl -n drone get pods`) and that the ingress answers for its host".into(),
            ],
            DroneError::Status { status: 401, .. } => vec![
                "Drone refused the API token kept in the lab state; `homelab up` logs in again and stores a new one".into(),
            ],
            DroneError::Status { status, .. } if *status >= 500 => vec![
                "look at Drone's log: `kubectl -n drone logs deploy/drone`".into(),
            ],
            DroneError::Status { .. } => Vec::new(),
        }
    }
}

/// A client for one Drone server, with or without an API token.
#[derive(Clone)]
pub struct DroneClient {
    core: ApiCore,
    token: Option<Secret>,
}

impl From<Failure> for DroneError {
    fn from(f: Failure) -> DroneError {
        match f {
            Failure::Unreachable { call, url, detail } => {
                DroneError::Unreachable { call, url, detail }
            }
            Failure::Status {
                call,
                status,
                message,
            } => DroneError::Status {
                call,
                status,
                message,
            },
            Failure::Decode { call, message } => DroneError::Decode { call, message },
        }
    }
}

impl DroneClient {
    /// An anonymous client for `endpoint`.
    pub fn new(endpoint: &Endpoint) -> Result<DroneClient, DroneError> {
        let setup = |message: String| DroneError::Setup {
            url: redact_url(&endpoint.base_url),
            message,
        };
        let base = endpoint.url().map_err(setup)?;
        let http = crate::edges::http::client(&[endpoint], None, Duration::from_secs(120))
            .map_err(setup)?;
        Ok(DroneClient {
            core: ApiCore::new(http, base),
            token: None,
        })
    }

    /// The same client with an API token.
    pub fn with_token(&self, token: Secret) -> DroneClient {
        DroneClient {
            core: self.core.clone(),
            token: Some(token),
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        self.core.base()
    }

    /// The web page of a build (for messages).
    pub fn build_link(&self, owner: &str, name: &str, number: i64) -> String {
        self.url(&[owner, name, &number.to_string()], &[])
            .to_string()
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        self.core.url(segments, query)
    }

    fn api(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut all = vec!["api"];
        all.extend_from_slice(segments);
        self.url(&all, query)
    }

    fn auth(&self) -> Auth<'_> {
        match &self.token {
            Some(token) => Auth::Header(authorization("Bearer", token, "Bearer -")),
            None => Auth::None,
        }
    }

    async fn send(
        &self,
        call: &str,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, DroneError> {
        self.core.send(call, method, url, self.auth(), body).await
    }

    async fn json<T: DeserializeOwned>(
        &self,
        call: &str,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<T, DroneError> {
        self.core.json(call, method, url, self.auth(), body).await
    }

    /// `GET /healthz`: the server is up (200, plain text).
    pub async fn healthz(&self) -> Result<(), DroneError> {
        let call = "check Drone's health";
        let answer = self
            .send(call, Method::GET, self.url(&["healthz"], &[]), None)
            .await?;
        success(call, &answer, &[])
    }

    /// `GET /api/user`: who the token belongs to; `None` when Drone answers 401.
    pub async fn current_user(&self) -> Result<Option<User>, DroneError> {
        let call = "read Drone's signed-in user";
        let Answer {
            status,
            body: bytes,
            ..
        } = self
            .send(call, Method::GET, self.api(&["user"], &[]), None)
            .await?;
        match status {
            StatusCode::UNAUTHORIZED => Ok(None),
            s if s.is_success() => decode(call, &bytes).map(Some),
            s => Err(fail(call, s, &bytes).into()),
        }
    }

    /// `POST /api/user/repos`: sync the user's repositories from Gitea (synchronous: Drone
    /// answers when the sync is done), returning them.
    pub async fn sync_repos(&self) -> Result<Vec<Repo>, DroneError> {
        self.json(
            "sync Drone's repository list from Gitea",
            Method::POST,
            self.api(&["user", "repos"], &[]),
            None,
        )
        .await
    }

    /// `GET /api/repos/{owner}/{name}`; `None` on 404 (not synced yet).
    pub async fn repo(&self, owner: &str, name: &str) -> Result<Option<Repo>, DroneError> {
        let call = format!("read `{owner}/{name}` in Drone");
        self.core
            .get_optional(&call, self.api(&["repos", owner, name], &[]), self.auth())
            .await
    }

    /// `POST /api/repos/{owner}/{name}`: activate (Drone creates its webhook in Gitea).
    pub async fn activate_repo(&self, owner: &str, name: &str) -> Result<Repo, DroneError> {
        self.json(
            &format!("activate `{owner}/{name}` in Drone"),
            Method::POST,
            self.api(&["repos", owner, name], &[]),
            None,
        )
        .await
    }

    /// `PATCH /api/repos/{owner}/{name}`: change the repository's settings, answering the
    /// repository as Drone stored it. Drone ignores the administrator-only fields (`trusted`,
    /// `timeout`, `throttle`, `counter`) of a caller who is not a Drone administrator and still
    /// answers 200, so callers check the answer.
    pub async fn update_repo(
        &self,
        owner: &str,
        name: &str,
        patch: &RepoPatch,
    ) -> Result<Repo, DroneError> {
        let body = serde_json::to_vec(patch).expect("repository patches serialize");
        self.json(
            &format!("update `{owner}/{name}` in Drone"),
            Method::PATCH,
            self.api(&["repos", owner, name], &[]),
            Some(body),
        )
        .await
    }

    /// `GET /api/repos/{owner}/{name}/secrets` (names only; Drone never returns values).
    pub async fn list_secrets(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Vec<SecretInfo>, DroneError> {
        self.json(
            &format!("list the secrets of `{owner}/{name}` in Drone"),
            Method::GET,
            self.api(&["repos", owner, name, "secrets"], &[]),
            None,
        )
        .await
    }

    /// `POST /api/repos/{owner}/{name}/secrets`. Drone answers 500 to a duplicate name, so
    /// callers look first and use [`DroneClient::update_secret`] for existing ones.
    pub async fn create_secret(
        &self,
        owner: &str,
        name: &str,
        secret: &SecretCreate,
    ) -> Result<(), DroneError> {
        let call = format!(
            "create secret `{}` of `{owner}/{name}` in Drone",
            secret.name
        );
        let body = serde_json::to_vec(secret).expect("secret bodies serialize");
        let answer = self
            .send(
                &call,
                Method::POST,
                self.api(&["repos", owner, name, "secrets"], &[]),
                Some(body),
            )
            .await?;
        success(&call, &answer, &[])
    }

    /// `PATCH /api/repos/{owner}/{name}/secrets/{secret}`.
    pub async fn update_secret(
        &self,
        owner: &str,
        name: &str,
        secret: &str,
        update: &SecretUpdate,
    ) -> Result<(), DroneError> {
        let call = format!("update secret `{secret}` of `{owner}/{name}` in Drone");
        let body = serde_json::to_vec(update).expect("secret bodies serialize");
        let answer = self
            .send(
                &call,
                Method::PATCH,
                self.api(&["repos", owner, name, "secrets", secret], &[]),
                Some(body),
            )
            .await?;
        success(&call, &answer, &[])
    }

    /// `GET /api/repos/{owner}/{name}/builds`: the most recent builds, newest first.
    pub async fn list_builds(&self, owner: &str, name: &str) -> Result<Vec<Build>, DroneError> {
        self.json(
            &format!("list the builds of `{owner}/{name}` in Drone"),
            Method::GET,
            self.api(&["repos", owner, name, "builds"], &[]),
            None,
        )
        .await
    }

    /// `POST /api/repos/{owner}/{name}/builds?branch=…`: start a build of the branch head. Drone
    /// gives such builds the event `custom`; when no pipeline's trigger matches, it creates
    /// nothing and answers `null`, returned here as `None`.
    pub async fn create_build(
        &self,
        owner: &str,
        name: &str,
        branch: &str,
    ) -> Result<Option<Build>, DroneError> {
        self.json(
            &format!("start a build of `{owner}/{name}` on `{branch}` in Drone"),
            Method::POST,
            self.api(&["repos", owner, name, "builds"], &[("branch", branch)]),
            None,
        )
        .await
    }

    /// `GET /api/repos/{owner}/{name}/builds/{number}` with its stages and steps.
    pub async fn build(&self, owner: &str, name: &str, number: i64) -> Result<Build, DroneError> {
        self.json(
            &format!("read build {number} of `{owner}/{name}` in Drone"),
            Method::GET,
            self.api(&["repos", owner, name, "builds", &number.to_string()], &[]),
            None,
        )
        .await
    }

    /// `GET /api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}`.
    pub async fn logs(
        &self,
        owner: &str,
        name: &str,
        build: i64,
        stage: i64,
        step: i64,
    ) -> Result<Vec<Line>, DroneError> {
        self.json(
            &format!("read the log of build {build} stage {stage} step {step} of `{owner}/{name}`"),
            Method::GET,
            self.api(
                &[
                    "repos",
                    owner,
                    name,
                    "builds",
                    &build.to_string(),
                    "logs",
                    &stage.to_string(),
                    &step.to_string(),
                ],
                &[],
            ),
            None,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_are_built_from_segments() {
        let c = DroneClient::new(&Endpoint {
            base_url: "https://drone.example.test/".into(),
            ca_pem: None,
            resolve: None,
        })
        .unwrap();
        assert_eq!(
            c.api(
                &["repos", "lab", "nyan-cat", "builds"],
                &[("branch", "main")]
            )
            .as_str(),
            "https://drone.example.test/api/repos/lab/nyan-cat/builds?branch=main"
        );
        assert_eq!(
            c.build_link("lab", "nyan-cat", 7),
            "https://drone.example.test/lab/nyan-cat/7"
        );
    }
}

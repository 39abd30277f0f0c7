//! Serde types for the bodies of the Drone 2.24 calls homelab makes (field names as Drone's
//! `core` package serializes them).
//!
//! Architecture invariant: responses tolerate missing fields (`#[serde(default)]`), request
//! bodies carry only what homelab sets, and a secret value only ever sits in a [`Secret`].

use serde::{Deserialize, Serialize};

use crate::edges::redact::Secret;

/// `core.User` as `GET /api/user` answers it (token fields are never serialized by Drone).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct User {
    /// Numeric id.
    #[serde(default)]
    pub id: i64,
    /// Login, the Gitea user name.
    #[serde(default)]
    pub login: String,
    /// Email.
    #[serde(default)]
    pub email: String,
    /// Drone administrator.
    #[serde(default)]
    pub admin: bool,
    /// Active.
    #[serde(default)]
    pub active: bool,
    /// Unix time of the last repository sync (0 = never).
    #[serde(default)]
    pub synced: i64,
}

/// What `POST /api/user/token` answers: the user plus its API token.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct UserToken {
    /// Login.
    #[serde(default)]
    pub login: String,
    /// The API token.
    #[serde(default)]
    pub token: Secret,
}

/// `core.Repository` (only the fields homelab reads).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Repo {
    /// Numeric id.
    #[serde(default)]
    pub id: i64,
    /// Owner (the Gitea organisation).
    #[serde(default)]
    pub namespace: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `owner/name`.
    #[serde(default)]
    pub slug: String,
    /// Activated in Drone.
    #[serde(default)]
    pub active: bool,
    /// Pipeline file.
    #[serde(default)]
    pub config_path: String,
    /// Default branch.
    #[serde(default)]
    pub default_branch: String,
    /// Number of the last build (0 = never built).
    #[serde(default)]
    pub counter: i64,
    /// Trusted: the runners allow its pipelines what they refuse other repositories (volumes
    /// from ConfigMaps, Secrets or host paths, privileged steps). Only a Drone administrator can
    /// set it.
    #[serde(default)]
    pub trusted: bool,
}

/// Body of `PATCH /api/repos/{owner}/{name}`: pointer fields in Drone, so an omitted field is
/// left unchanged (handler/api/repos/update.go, `repositoryInput`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepoPatch {
    /// Trust the repository. Drone applies it only for an administrator and silently keeps
    /// the old value for anyone else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted: Option<bool>,
}

/// Body of `POST /api/repos/{owner}/{name}/secrets`.
#[derive(Clone, Debug, Serialize)]
pub struct SecretCreate {
    /// Name, `[a-zA-Z0-9-_.]+`.
    pub name: String,
    /// Value (never shown back).
    pub data: String,
    /// Expose to pull requests from forks: never for lab credentials.
    pub pull_request: bool,
}

/// Body of `PATCH /api/repos/{owner}/{name}/secrets/{secret}` (omitted fields are unchanged).
#[derive(Clone, Debug, Serialize)]
pub struct SecretUpdate {
    /// New value.
    pub data: String,
}

/// A repository secret as Drone lists it (without its value).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SecretInfo {
    /// Name.
    #[serde(default)]
    pub name: String,
}

/// `core.Build`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Build {
    /// Numeric id.
    #[serde(default)]
    pub id: i64,
    /// Per-repository number (URLs use it).
    #[serde(default)]
    pub number: i64,
    /// `pending`, `running`, `success`, `failure`, `error`, `killed`, `skipped`, `blocked`,
    /// `declined`, `waiting_on_dependencies`.
    #[serde(default)]
    pub status: String,
    /// Error text for builds that could not start (bad YAML, missing secret).
    #[serde(default)]
    pub error: String,
    /// `push`, `custom`, `pull_request`, `tag`, `promote`, `rollback`, `cron`.
    #[serde(default)]
    pub event: String,
    /// Git ref (`refs/heads/main`).
    #[serde(default, rename = "ref")]
    pub git_ref: String,
    /// Commit built.
    #[serde(default)]
    pub after: String,
    /// Commit message.
    #[serde(default)]
    pub message: String,
    /// Stages, with their steps (only in `GET …/builds/{number}`).
    #[serde(default)]
    pub stages: Vec<Stage>,
}

/// `core.Stage`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Stage {
    /// Number within the build (log URLs use it).
    #[serde(default)]
    pub number: i64,
    /// Pipeline name.
    #[serde(default)]
    pub name: String,
    /// Status, as for builds.
    #[serde(default)]
    pub status: String,
    /// Why the stage could not run.
    #[serde(default)]
    pub error: String,
    /// Steps.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// `core.Step`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Step {
    /// Number within the stage (log URLs use it).
    #[serde(default)]
    pub number: i64,
    /// Name from the pipeline file.
    #[serde(default)]
    pub name: String,
    /// Status, as for builds.
    #[serde(default)]
    pub status: String,
    /// Exit code of the step's container.
    #[serde(default)]
    pub exit_code: i64,
    /// Why the step could not run (image pull failure, …).
    #[serde(default)]
    pub error: String,
}

/// `core.Line`: one line of a step's log.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Line {
    /// Line number.
    #[serde(default)]
    pub pos: i64,
    /// Text, usually ending in a newline.
    #[serde(default)]
    pub out: String,
}

//! Serde types for the bodies of the Gitea calls homelab makes, named as in Gitea's OpenAPI
//! document (`swagger.v1.json`, definitions of the same name).
//!
//! Architecture invariant: request types serialize only the fields homelab sets (optional ones
//! are skipped when `None`, so older Gitea versions never see a field they lack); response types
//! tolerate missing fields (`#[serde(default)]`) because older versions return fewer. A token
//! value is deserialized straight into a [`Secret`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::edges::redact::Secret;

/// `ServerVersion`: what `GET /version` answers.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ServerVersion {
    /// e.g. `1.26.1`, `1.27.0+dev-12-gabcdef`.
    #[serde(default)]
    pub version: String,
}

/// `User` (only the fields homelab reads).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct User {
    /// Numeric id.
    #[serde(default)]
    pub id: i64,
    /// Login name.
    #[serde(default)]
    pub login: String,
    /// Site administrator.
    #[serde(default)]
    pub is_admin: bool,
}

/// `CreateAccessTokenOption`.
#[derive(Clone, Debug, Serialize)]
pub struct CreateAccessTokenOption {
    /// Token name, unique per user.
    pub name: String,
    /// Scopes; `None` for Gitea versions before token scopes existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

/// `AccessToken`. The secret (`sha1`) is only present in the answer to creation.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AccessToken {
    /// Numeric id.
    #[serde(default)]
    pub id: i64,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// The token itself (creation answer only).
    #[serde(default)]
    pub sha1: Secret,
    /// Last eight characters, to recognise a stored token in a listing.
    #[serde(default)]
    pub token_last_eight: String,
    /// Scopes; absent on Gitea versions without token scopes.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

/// `Organization` (only the fields homelab reads).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Organization {
    /// Numeric id.
    #[serde(default)]
    pub id: i64,
    /// The organisation's login name.
    #[serde(default)]
    pub username: String,
    /// `public`, `limited` or `private`.
    #[serde(default)]
    pub visibility: String,
}

/// Visibility of an organisation (`CreateOrgOption.visibility`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone can see it.
    Public,
    /// Signed-in users only.
    Limited,
    /// Members only.
    Private,
}

/// `CreateOrgOption`.
#[derive(Clone, Debug, Serialize)]
pub struct CreateOrgOption {
    /// The organisation's login name.
    pub username: String,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Visibility.
    pub visibility: Visibility,
}

/// `Repository` (only the fields homelab reads).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Repository {
    /// Numeric id.
    #[serde(default)]
    pub id: i64,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `owner/name`.
    #[serde(default)]
    pub full_name: String,
    /// HTTPS clone URL as Gitea sees itself (from its ROOT_URL).
    #[serde(default)]
    pub clone_url: String,
    /// Default branch.
    #[serde(default)]
    pub default_branch: String,
    /// No commits yet.
    #[serde(default)]
    pub empty: bool,
    /// Private.
    #[serde(default)]
    pub private: bool,
    /// `sha1` or `sha256`; empty on versions before SHA-256 support (always SHA-1 there).
    #[serde(default)]
    pub object_format_name: String,
}

/// `CreateRepoOption`.
#[derive(Clone, Debug, Serialize)]
pub struct CreateRepoOption {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Private.
    pub private: bool,
    /// Create a first commit (homelab pushes its own first commit, so false).
    pub auto_init: bool,
    /// Default branch.
    pub default_branch: String,
    /// `sha1` (homelab's tree comparison and every tool in the lab assume it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_format_name: Option<String>,
}

/// `Hook`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Hook {
    /// Numeric id.
    #[serde(default)]
    pub id: i64,
    /// `gitea`, `slack`, …
    #[serde(default, rename = "type")]
    pub kind: String,
    /// `url`, `content_type`, `http_method`, … (Gitea never returns the secret).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Events that trigger it.
    #[serde(default)]
    pub events: Vec<String>,
    /// Active.
    #[serde(default)]
    pub active: bool,
    /// Branch filter.
    #[serde(default)]
    pub branch_filter: String,
}

/// `CreateHookOption`.
#[derive(Clone, Debug, Serialize)]
pub struct CreateHookOption {
    /// Hook type (`gitea`).
    #[serde(rename = "type")]
    pub kind: String,
    /// `url`, `content_type`, `secret`, `http_method`.
    pub config: BTreeMap<String, String>,
    /// Events.
    pub events: Vec<String>,
    /// Active (Gitea's default is false).
    pub active: bool,
    /// Branch filter (`*` = all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_filter: Option<String>,
}

/// `EditHookOption`.
#[derive(Clone, Debug, Serialize)]
pub struct EditHookOption {
    /// New config (replaces the stored one, secret included).
    pub config: BTreeMap<String, String>,
    /// Events.
    pub events: Vec<String>,
    /// Active.
    pub active: bool,
    /// Branch filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_filter: Option<String>,
}

/// `APIError`: `{"message": …, "url": …}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    #[serde(default)]
    pub message: String,
}

/// `CreateOAuth2ApplicationOptions`: the body of both creating and updating an OAuth2 app.
#[derive(Clone, Debug, Serialize)]
pub struct CreateOAuth2ApplicationOptions {
    /// Display name (homelab finds its apps by name).
    pub name: String,
    /// Allowed redirect URIs; Gitea compares them exactly.
    pub redirect_uris: Vec<String>,
    /// A confidential client authenticates with its secret (and skips the consent page once
    /// granted).
    pub confidential_client: bool,
    /// Skip the consent page even without a grant (Gitea ≥ 1.21; older versions ignore it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_secondary_authorization: Option<bool>,
}

/// `OAuth2Application`. The secret is only in the answers to create and update.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OAuth2Application {
    /// Numeric id (for PATCH and DELETE).
    #[serde(default)]
    pub id: i64,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// The public client id.
    #[serde(default)]
    pub client_id: String,
    /// The client secret: empty in listings.
    #[serde(default)]
    pub client_secret: Secret,
    /// Registered redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Confidential client.
    #[serde(default)]
    pub confidential_client: bool,
}

/// `ContentsResponse` for a file (only the fields homelab reads).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ContentsResponse {
    /// `file`, `dir`, `symlink` or `submodule`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Path in the repository.
    #[serde(default)]
    pub path: String,
    /// Blob sha: an update must name it.
    #[serde(default)]
    pub sha: String,
    /// The commit that last changed this path.
    #[serde(default)]
    pub last_commit_sha: String,
    /// Content, encoded as `encoding` says.
    #[serde(default)]
    pub content: Option<String>,
    /// `base64` for files.
    #[serde(default)]
    pub encoding: Option<String>,
}

/// `Identity`: an author or committer.
#[derive(Clone, Debug, Serialize)]
pub struct Identity {
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
}

/// `UpdateFileOptions`.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateFileOptions {
    /// New content, base64.
    pub content: String,
    /// Blob sha of the file being replaced.
    pub sha: String,
    /// Commit message.
    pub message: String,
    /// Branch to commit on.
    pub branch: String,
    /// Author (the token's user when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<Identity>,
}

/// `FileCommitResponse` (only the fields homelab reads).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct FileCommitResponse {
    /// The new commit.
    #[serde(default)]
    pub sha: String,
}

/// `FileResponse`: what a file change answers.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct FileResponse {
    /// The commit made.
    #[serde(default)]
    pub commit: Option<FileCommitResponse>,
}

/// `PayloadCommit` (only the fields homelab reads).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadCommit {
    /// Commit sha.
    #[serde(default)]
    pub id: String,
}

/// `Branch` (only the fields homelab reads).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Branch {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Head commit.
    #[serde(default)]
    pub commit: Option<PayloadCommit>,
}

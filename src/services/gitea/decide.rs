//! Gitea wiring's decisions: what the lab's Gitea should hold and what to do about what it holds,
//! as pure functions of what was read (the seed action for a repository's content, the token's
//! scopes for a Gitea version, the webhook plan, the admin CLI commands), and the record kept in
//! the lab state between runs.
//!
//! Place in the data flow: [`super::wire`] reads Gitea, asks these functions, then writes.
//! Architecture invariant: no I/O here; every function is tested without a server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::types::Hook;
use crate::edges::redact::Secret;
use crate::services::gitea::pod_exec::{ExecOutput, ExecRequest};

/// Key of the Gitea API token in the lab's `secrets.json`.
pub const GITEA_TOKEN_KEY: &str = "gitea_token";
/// Non-secret record of what wiring did (pushed commits, webhook secret fingerprints).
pub const GITEA_RECORD_FILE: &str = "gitea.json";
/// Name of homelab's API token in Gitea.
pub const DEFAULT_TOKEN_NAME: &str = "homelab";
/// The sync engine's in-cluster webhook endpoint (Service `homelab-sync` in `homelab-system`).
pub const DEFAULT_SYNC_WEBHOOK_URL: &str =
    "http://homelab-sync.homelab-system.svc.cluster.local:8080/api/webhook";
/// Config file of the rootless Gitea image.
pub const ROOTLESS_APP_INI: &str = "/etc/gitea/app.ini";
/// Label selector of the Gitea pod.
pub const DEFAULT_GITEA_POD_SELECTOR: &str = "app.kubernetes.io/name=gitea";
/// Branch homelab seeds when a repository has none yet.
pub const DEFAULT_BRANCH: &str = "main";

/// Scopes homelab's token needs on Gitea ≥ 1.20: organisations and repositories (wiring),
/// user (OAuth2 applications for Drone live under `/user`), package (registry push), admin.
pub const TOKEN_SCOPES: &[&str] = &[
    "write:admin",
    "write:organization",
    "write:package",
    "write:repository",
    "write:user",
];

/// The admin login.
#[derive(Clone, Debug)]
pub struct AdminLogin {
    /// Login name (never `admin`, which Gitea reserves).
    pub user: String,
    /// Email Gitea requires for a user.
    pub email: String,
    /// Password from the lab state (or the settings override).
    pub password: Secret,
}

/// How the Gitea CLI is invoked in the pod.
#[derive(Clone, Debug)]
pub struct GiteaCli {
    /// `app.ini` path (`/etc/gitea/app.ini` in the rootless image, which already runs as `git`).
    pub config: String,
}

impl AdminLogin {
    /// The admin of a lab whose Gitea answers at `gitea_host` (the email is `<user>@<host>`:
    /// Gitea requires one, nothing is ever sent to it).
    pub fn new(user: &str, password: Secret, gitea_host: &str) -> AdminLogin {
        AdminLogin {
            user: user.to_string(),
            email: format!("{user}@{gitea_host}"),
            password,
        }
    }
}

impl Default for GiteaCli {
    fn default() -> Self {
        GiteaCli {
            config: ROOTLESS_APP_INI.into(),
        }
    }
}

/// Record of what homelab pushed to one repository.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedRecord {
    /// The last commit homelab pushed (or found equal to its seed).
    pub commit: String,
    /// Its tree.
    pub tree: String,
    /// A head someone else pushed, with its tree, last time homelab looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign: Option<(String, String)>,
}

/// `gitea.json` in the lab state: nothing secret, only what makes the next run a pure read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiteaRecord {
    /// Gitea's public URL when last wired.
    #[serde(default)]
    pub url: String,
    /// Per `owner/name`.
    #[serde(default)]
    pub repos: BTreeMap<String, SeedRecord>,
    /// Fingerprint of the secret each webhook was given, per `owner/name` (Gitea never returns a
    /// hook's secret, so a changed secret is only visible here).
    #[serde(default)]
    pub webhook_secrets: BTreeMap<String, String>,
}

/// What to do with a repository's content. Pure decision from the seed's tree, the remote head
/// and what homelab recorded last time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedAction {
    /// The remote holds homelab's last push and the seed has not changed.
    UpToDate,
    /// The branch does not exist: push the seed as the first commit.
    Initial,
    /// The remote still holds homelab's last push but the seed changed: commit on top of it.
    Update {
        /// The current head.
        parent: String,
    },
    /// Commits were added on top of homelab's last push (the pipeline bumping a tag, `verify`,
    /// a person) and the seed has not changed since: nothing to push, nothing to look at.
    MovedOn {
        /// The current head.
        head: String,
    },
    /// The head is unknown to homelab: fetch it and compare trees.
    Inspect {
        /// The current head.
        head: String,
    },
    /// Someone else pushed (already inspected): leave their work alone.
    Diverged {
        /// The current head.
        head: String,
    },
}

/// Decide what to do with a repository's content (see [`SeedAction`]).
pub fn seed_action(seed_tree: &str, head: Option<&str>, record: Option<&SeedRecord>) -> SeedAction {
    let Some(head) = head else {
        return SeedAction::Initial;
    };
    if let Some(r) = record {
        if r.commit == head {
            return if r.tree == seed_tree {
                SeedAction::UpToDate
            } else {
                SeedAction::Update {
                    parent: head.to_string(),
                }
            };
        }
        // Work on top of homelab's seed is the lab in use; only a seed homelab still wants to
        // push makes a foreign head worth inspecting (and a fetch, and a warning).
        if r.tree == seed_tree && !r.commit.is_empty() {
            return SeedAction::MovedOn {
                head: head.to_string(),
            };
        }
        if let Some((foreign_head, foreign_tree)) = &r.foreign
            && foreign_head == head
        {
            return if foreign_tree == seed_tree {
                SeedAction::UpToDate
            } else {
                SeedAction::Diverged {
                    head: head.to_string(),
                }
            };
        }
    }
    SeedAction::Inspect {
        head: head.to_string(),
    }
}

/// `(major, minor)` of a Gitea version string (`1.26.1`, `1.27.0+dev-3-gabc`, `v1.21.0`).
pub fn parse_version(v: &str) -> Option<(u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The scopes to ask for: fine-grained on ≥ 1.20; `all` on 1.19 (whose scope names differ);
/// none before 1.19, which had no scopes (every token had full access).
pub fn token_scopes(version: &str) -> Option<Vec<String>> {
    let fine: Vec<String> = TOKEN_SCOPES.iter().map(|s| s.to_string()).collect();
    match parse_version(version) {
        Some((1, minor)) if minor >= 20 => Some(fine),
        Some((1, 19)) => Some(vec!["all".into()]),
        Some((1, _)) | Some((0, _)) => None,
        // Later majors (and Forgejo's numbering) use today's scopes; so does an unparsable
        // development version.
        _ => Some(fine),
    }
}

pub(crate) fn scopes_cover(have: Option<&Vec<String>>, need: Option<&Vec<String>>) -> bool {
    match (have, need) {
        (_, None) | (None, _) => true,
        (Some(have), Some(need)) => {
            have.iter().any(|s| s == "all") || need.iter().all(|n| have.contains(n))
        }
    }
}

/// What to do about the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookPlan {
    /// Create a new one, update one in place, or nothing.
    pub action: HookAction,
    /// Extra hooks with our URL to delete (a webhook is never duplicated).
    pub delete: Vec<i64>,
}

/// The action on the one webhook homelab keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookAction {
    /// No hook with our URL: create it.
    Create,
    /// Ours exists but differs (settings, or the secret changed): edit it.
    Update(i64),
    /// Ours exists with a type an edit cannot change: delete it, then create.
    Replace(i64),
    /// Ours is as it should be.
    Keep(i64),
}

/// Plan the webhook from the existing hooks. Pure. `secret_changed`: the recorded fingerprint
/// of the secret differs from the current one (or none is recorded).
pub fn plan_hook(existing: &[Hook], url: &str, secret_changed: bool) -> HookPlan {
    let mut ours: Vec<&Hook> = existing
        .iter()
        .filter(|h| h.config.get("url").map(String::as_str) == Some(url))
        .collect();
    ours.sort_by_key(|h| h.id);
    let Some((first, rest)) = ours.split_first() else {
        return HookPlan {
            action: HookAction::Create,
            delete: Vec::new(),
        };
    };
    let delete = rest.iter().map(|h| h.id).collect();
    let action = if first.kind != "gitea" {
        HookAction::Replace(first.id)
    } else {
        let differs = first.config.get("content_type").map(String::as_str) != Some("json")
            || first.events != ["push"]
            || !first.active
            || !matches!(first.branch_filter.as_str(), "" | "*")
            || secret_changed;
        if differs {
            HookAction::Update(first.id)
        } else {
            HookAction::Keep(first.id)
        }
    };
    HookPlan { action, delete }
}

/// A fingerprint of the webhook secret, safe to store beside the secret-free record.
pub fn secret_fingerprint(secret: &Secret) -> String {
    let digest = sha2::Sha256::digest(format!("homelab webhook secret\0{}", secret.expose()));
    hex::encode(&digest[..16])
}

// The password reaches the CLI on stdin: the argv travels in the exec URL, which is logged.
const CREATE_SCRIPT: &str = r#"IFS= read -r password; exec gitea --config "$1" admin user create --username "$2" --email "$3" --password "$password" --admin --must-change-password=false"#;
const RESET_SCRIPT: &str = r#"IFS= read -r password; exec gitea --config "$1" admin user change-password --username "$2" --password "$password" --must-change-password=false"#;

/// The command that creates the admin user in the pod.
pub fn admin_create_request(cli: &GiteaCli, admin: &AdminLogin) -> ExecRequest {
    ExecRequest {
        summary: format!("create the Gitea admin user `{}`", admin.user),
        argv: vec![
            "sh".into(),
            "-c".into(),
            CREATE_SCRIPT.into(),
            "homelab".into(),
            cli.config.clone(),
            admin.user.clone(),
            admin.email.clone(),
        ],
        display: format!(
            "gitea --config {} admin user create --username {} --email {} --password *** --admin --must-change-password=false",
            cli.config, admin.user, admin.email
        ),
        stdin: Some(admin.password.clone()),
    }
}

/// The command that resets the admin's password in the pod.
pub fn admin_reset_request(cli: &GiteaCli, admin: &AdminLogin) -> ExecRequest {
    ExecRequest {
        summary: format!(
            "reset the password of the Gitea admin user `{}`",
            admin.user
        ),
        argv: vec![
            "sh".into(),
            "-c".into(),
            RESET_SCRIPT.into(),
            "homelab".into(),
            cli.config.clone(),
            admin.user.clone(),
        ],
        display: format!(
            "gitea --config {} admin user change-password --username {} --password *** --must-change-password=false",
            cli.config, admin.user
        ),
        stdin: Some(admin.password.clone()),
    }
}

pub(crate) fn user_exists(out: &ExecOutput) -> bool {
    out.stderr.contains("user already exists") || out.stdout.contains("user already exists")
}

#[cfg(test)]
mod tests;

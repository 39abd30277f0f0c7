//! Wire Gitea: the admin user, an API token, the `lab` organisation, the lab repositories with
//! their seed content, the GitOps webhook, and a registry login check.
//!
//! Place in the data flow: `up` calls [`wire`] after apply, once Gitea's Deployment is Ready, with
//! the repositories' content from `render` and the secrets from the lab state. Architecture
//! invariant: every step looks before it writes (user, token, organisation, repository, branch
//! head, webhook), so a second run on a wired lab performs only reads; the decisions are pure
//! functions ([`seed_action`], [`token_scopes`], [`plan_hook`]) tested without a server.
//!
//! The first call waits: Gitea's Deployment may be Ready while the ingress still has no
//! certificate for its name (cert-manager is issuing it) or is not listening yet, so connection
//! and TLS errors are retried within [`GiteaWiring::patience`], with progress, before wiring
//! fails with what it tried and where to look. HTTP error answers are never retried.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::pod_exec::{ExecOutput, ExecRequest, PodExec, PodExecError};
use super::steps::{StepReport, Steps};
use crate::error::Diagnostic;
use crate::git::{self, Git, GitAuth, GitError, GitRemote, Identity, ObjectFormat, PushRequest};
use crate::gitea::types::*;
use crate::gitea::{Created, Credentials, Endpoint, GiteaClient, GiteaError};
use crate::http::Patience;
use crate::output::{Outcome, Progress};
use crate::redact::Secret;
use crate::render::Manifests;
use crate::state::{LabState, StateError};

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

/// One repository to create in the organisation, with the content it should start from.
#[derive(Clone, Debug)]
pub struct RepoSeed {
    /// Name (`nyan-cat`, `gitops`).
    pub name: String,
    /// Description shown in Gitea.
    pub description: String,
    /// Private repository (the lab's are public so the sync engine and Drone clone without a
    /// credential).
    pub private: bool,
    /// path → text.
    pub files: BTreeMap<String, String>,
}

impl RepoSeed {
    /// Every repository the rendered components carry, public, in name order.
    pub fn from_manifests(manifests: &Manifests) -> Vec<RepoSeed> {
        let mut all: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for c in &manifests.components {
            for (repo, files) in &c.repos {
                all.entry(repo.clone())
                    .or_default()
                    .extend(files.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        all.into_iter()
            .map(|(name, files)| RepoSeed {
                description: format!("homelab lab repository `{name}`"),
                name,
                private: false,
                files,
            })
            .collect()
    }
}

/// The webhook that tells the sync engine about pushes.
#[derive(Clone, Debug)]
pub struct WebhookSpec {
    /// Repository name in the organisation (`gitops`).
    pub repo: String,
    /// Target URL (in-cluster; Gitea's `ALLOWED_HOST_LIST` must admit it).
    pub url: String,
    /// HMAC secret (`webhook_secret` from the lab state).
    pub secret: Secret,
}

/// Everything [`wire`] needs.
pub struct GiteaWiring<'a> {
    /// Where Gitea answers and how to trust it.
    pub endpoint: Endpoint,
    /// The admin login.
    pub admin: AdminLogin,
    /// How to run the Gitea CLI.
    pub cli: GiteaCli,
    /// Where the CLI runs (the Gitea pod).
    pub pod: &'a dyn PodExec,
    /// The lab state: the token is stored in its secrets, the record next to it.
    pub state: &'a LabState,
    /// Organisation (`lab`).
    pub org: String,
    /// Repositories with their seed content.
    pub repos: Vec<RepoSeed>,
    /// The GitOps webhook.
    pub webhook: WebhookSpec,
    /// Name of homelab's API token.
    pub token_name: String,
    /// The git program.
    pub git: Git,
    /// Author of seed commits.
    pub author: Identity,
    /// How long the first call waits for Gitea to answer over HTTPS (right after deploy the
    /// ingress may still lack the certificate cert-manager is issuing).
    pub patience: Patience,
}

/// What [`wire`] did.
#[derive(Clone, Debug, Serialize)]
pub struct GiteaReport {
    /// Gitea's version.
    pub gitea_version: String,
    /// Every step in order.
    pub steps: Vec<StepReport>,
    /// Things the user should know (a repository left alone because it moved on).
    pub warnings: Vec<String>,
}

impl GiteaReport {
    /// Steps that wrote something.
    pub fn writes(&self) -> usize {
        super::steps::writes(&self.steps)
    }
}

/// Wiring Gitea failed.
#[derive(Debug, thiserror::Error)]
pub enum GiteaWireError {
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] GiteaError),
    /// A git operation failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The CLI could not be run in the pod.
    #[error(transparent)]
    Exec(#[from] PodExecError),
    /// Lab state I/O failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The Gitea CLI failed.
    #[error("{summary}: `{argv}` exited with {code}{}", stderr_block(.stderr))]
    AdminCli {
        /// What it was for.
        summary: String,
        /// The argv (no secrets in it).
        argv: String,
        /// Exit code.
        code: String,
        /// What it printed.
        stderr: String,
    },
    /// The admin login belongs to a user who is not a site administrator.
    #[error("Gitea user `{user}` exists but is not a site administrator")]
    NotAdmin {
        /// The login.
        user: String,
    },
    /// The admin still cannot sign in after the CLI ran.
    #[error("the Gitea admin `{user}` cannot sign in after the CLI {action} it")]
    AdminLogin {
        /// The login.
        user: String,
        /// `created`, `reset the password of`.
        action: &'static str,
        /// The sign-in error.
        #[source]
        source: GiteaError,
    },
    /// Gitea created a token but did not return its value.
    #[error("create the API token `{name}`: Gitea's answer holds no token value")]
    TokenMissing {
        /// The token name.
        name: String,
    },
    /// Gitea never answered over HTTPS: every try ended in a connection or TLS error.
    #[error(
        "Gitea at {url} did not answer over HTTPS within {} ({attempts} {}, each a connection or TLS error); the last: {last}",
        crate::output::human_duration(*.after),
        if *.attempts == 1 { "try" } else { "tries" }
    )]
    NeverReachable {
        /// The base URL, redacted.
        url: String,
        /// The bound.
        after: std::time::Duration,
        /// How many calls were made.
        attempts: u32,
        /// The transport error of the last one.
        last: String,
    },
}

fn stderr_block(s: &str) -> String {
    let t = s.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!("\n{t}")
    }
}

impl Diagnostic for GiteaWireError {
    fn hints(&self) -> Vec<String> {
        match self {
            GiteaWireError::Api(e) => e.hints(),
            GiteaWireError::Git(e) => e.hints(),
            GiteaWireError::Exec(e) => e.hints(),
            GiteaWireError::State(e) => e.hints(),
            GiteaWireError::AdminCli { stderr, .. } if stderr.contains("is reserved") => vec![
                "choose another `gitea.admin_user` in `homelab.yaml` (Gitea reserves `admin` and a few other names)".into(),
            ],
            GiteaWireError::AdminCli { stderr, .. } if stderr.contains("root") => vec![
                "the Gitea CLI refuses to run as root: the stack must use the rootless image, which runs as `git`".into(),
            ],
            GiteaWireError::AdminCli { .. } => vec![
                "look at Gitea's log with `kubectl -n gitea logs deploy/gitea`".into(),
            ],
            GiteaWireError::NotAdmin { user } => vec![format!(
                "make `{user}` an administrator in Gitea's site administration, or choose another `gitea.admin_user`"
            )],
            GiteaWireError::AdminLogin { .. } => vec![
                "check Gitea's `[service]` settings: a sign-in source or two-factor rule may refuse password logins to the API".into(),
            ],
            GiteaWireError::TokenMissing { .. } => Vec::new(),
            GiteaWireError::NeverReachable { last, .. } => unreachable_hints(last),
        }
    }
}

/// What to look at when Gitea never answered, from the last transport error.
fn unreachable_hints(last: &str) -> Vec<String> {
    let lower = last.to_lowercase();
    let tls = ["certificate", "tls", "handshake", "unknownissuer", "alert"]
        .iter()
        .any(|w| lower.contains(w));
    let mut hints = Vec::new();
    if tls {
        hints.push(
            "the ingress serves Gitea's name with the lab CA's certificate only once cert-manager has issued it: see whether it has with `kubectl -n gitea get certificate,secret` and why not with `kubectl -n cert-manager logs deploy/cert-manager`".into(),
        );
    } else {
        hints.push(
            "nothing answered on the node's port 443: check the ingress controller with `kubectl -n nginx-ingress get pods` and `homelab status`".into(),
        );
        hints.push(
            "a router that drops DNS answers with private addresses breaks `*.sslip.io` names; `--domain` avoids it".into(),
        );
    }
    hints.push("`homelab up` waits again where it stopped: run it once the cause is fixed".into());
    hints
}

/// Call Gitea's `/version` until it answers. Connection and TLS errors are retried within
/// `patience` (the ingress answers the name only once its certificate exists, and may still be
/// starting); an HTTP error answer is Gitea's own and is not retried.
async fn wait_for_gitea(
    anon: &GiteaClient,
    patience: &Patience,
    steps: &Steps<'_>,
    step: &str,
) -> Result<(Outcome, String, String), GiteaWireError> {
    let started = std::time::Instant::now();
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match anon.version().await {
            Ok(v) => {
                let waited = if attempt > 1 {
                    format!(
                        " (answered after {} tries in {})",
                        attempt,
                        crate::output::human_duration(started.elapsed())
                    )
                } else {
                    String::new()
                };
                return Ok((
                    Outcome::Skipped,
                    format!("Gitea {}{waited}", v.version),
                    v.version,
                ));
            }
            Err(GiteaError::Unreachable { detail, .. }) => {
                let pause = patience.pause(attempt);
                if started.elapsed() + pause > patience.limit {
                    return Err(GiteaWireError::NeverReachable {
                        url: crate::redact::redact_url(
                            anon.base_url().as_str().trim_end_matches('/'),
                        ),
                        after: patience.limit,
                        attempts: attempt,
                        last: detail,
                    });
                }
                steps.update(
                    step,
                    &format!(
                        "waiting for Gitea to answer over HTTPS (try {attempt}, {} of {}): {detail}",
                        crate::output::human_duration(started.elapsed()),
                        crate::output::human_duration(patience.limit)
                    ),
                );
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(e.into()),
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

fn scopes_cover(have: Option<&Vec<String>>, need: Option<&Vec<String>>) -> bool {
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

fn user_exists(out: &ExecOutput) -> bool {
    out.stderr.contains("user already exists") || out.stdout.contains("user already exists")
}

fn cli_error(req: &ExecRequest, out: &ExecOutput) -> GiteaWireError {
    let mut stderr = out.stderr.trim().to_string();
    if stderr.is_empty() {
        stderr = out.stdout.trim().to_string();
    }
    GiteaWireError::AdminCli {
        summary: req.summary.clone(),
        argv: req.display.clone(),
        code: out
            .code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "an unknown status".into()),
        stderr,
    }
}

/// Wire Gitea (see the module doc). Each step reports through `progress`.
pub async fn wire(
    w: &GiteaWiring<'_>,
    progress: &dyn Progress,
) -> Result<GiteaReport, GiteaWireError> {
    let mut steps = Steps::new(progress);
    let anon = GiteaClient::new(&w.endpoint)?;
    let before: GiteaRecord = w.state.read_json(GITEA_RECORD_FILE)?.unwrap_or_default();
    let mut record = before.clone();
    record.url = w.endpoint.base_url.trim_end_matches('/').to_string();

    let t = steps.start("gitea", "read Gitea's version");
    let r = wait_for_gitea(&anon, &w.patience, &steps, "gitea").await;
    let version = steps.end("gitea", t, r)?;

    let t = steps.start("gitea admin", &w.admin.user);
    let r = ensure_admin(w, &anon).await;
    steps.end("gitea admin", t, r.map(|(o, d)| (o, d, ())))?;

    let t = steps.start("gitea token", &w.token_name);
    let r = ensure_token(w, &anon, &version).await;
    let token = steps.end("gitea token", t, r)?;
    let api = anon.with_credentials(Credentials::Token(token.clone()));

    let t = steps.start("gitea org", &w.org);
    let r = ensure_org(w, &api).await;
    steps.end("gitea org", t, r.map(|(o, d)| (o, d, ())))?;

    for seed in &w.repos {
        let full = format!("{}/{}", w.org, seed.name);
        let step = format!("repo {full}");
        let t = steps.start(&step, "look, then create");
        let r = ensure_repo(w, &api, seed).await;
        let repo = steps.end(&step, t, r)?;

        let step = format!("push {full}");
        let t = steps.start(&step, "compare the content");
        let r = ensure_content(w, &token, seed, &repo, &mut record, &mut steps.warnings).await;
        steps.end(&step, t, r.map(|(o, d)| (o, d, ())))?;
    }

    let step = format!("webhook {}/{}", w.org, w.webhook.repo);
    let t = steps.start(&step, &w.webhook.url);
    let r = ensure_webhook(w, &api, &mut record).await;
    steps.end(&step, t, r.map(|(o, d)| (o, d, ())))?;

    let t = steps.start("registry", "log in with the token");
    let registry = anon.with_credentials(Credentials::Basic {
        user: w.admin.user.clone(),
        password: token.clone(),
    });
    let r = registry
        .registry_login()
        .await
        .map_err(GiteaWireError::from)
        .map(|access| {
            let how = match access.realm {
                Some(realm) => format!("the token is accepted (bearer token from {realm})"),
                None => "the token is accepted".to_string(),
            };
            (Outcome::Skipped, how, ())
        });
    steps.end("registry", t, r)?;

    if record != before {
        w.state.write_json(GITEA_RECORD_FILE, &record)?;
    }
    Ok(GiteaReport {
        gitea_version: version,
        steps: steps.reports,
        warnings: steps.warnings,
    })
}

async fn ensure_admin(
    w: &GiteaWiring<'_>,
    anon: &GiteaClient,
) -> Result<(Outcome, String), GiteaWireError> {
    let user = &w.admin.user;
    let basic = anon.with_credentials(Credentials::Basic {
        user: user.clone(),
        password: w.admin.password.clone(),
    });
    match basic.current_user().await {
        Ok(u) if u.is_admin => {
            return Ok((
                Outcome::Skipped,
                format!("`{user}` signs in as an administrator"),
            ));
        }
        Ok(_) => return Err(GiteaWireError::NotAdmin { user: user.clone() }),
        Err(e) if matches!(e.status(), Some(401 | 403)) => {}
        Err(e) => return Err(e.into()),
    }
    let create = admin_create_request(&w.cli, &w.admin);
    let out = w.pod.exec(&create).await?;
    let action = if out.success() {
        "created"
    } else if user_exists(&out) {
        // The user is there with another password (a lab state rebuilt against a kept Gitea
        // volume): the state's password wins.
        let reset = admin_reset_request(&w.cli, &w.admin);
        let out = w.pod.exec(&reset).await?;
        if !out.success() {
            return Err(cli_error(&reset, &out));
        }
        "reset the password of"
    } else {
        return Err(cli_error(&create, &out));
    };
    match basic.current_user().await {
        Ok(u) if u.is_admin => Ok((
            Outcome::Done,
            match action {
                "created" => format!("created `{user}` with the Gitea CLI"),
                _ => format!("reset the password of `{user}` with the Gitea CLI"),
            },
        )),
        Ok(_) => Err(GiteaWireError::NotAdmin { user: user.clone() }),
        Err(source) => Err(GiteaWireError::AdminLogin {
            user: user.clone(),
            action,
            source,
        }),
    }
}

async fn ensure_token(
    w: &GiteaWiring<'_>,
    anon: &GiteaClient,
    version: &str,
) -> Result<(Outcome, String, Secret), GiteaWireError> {
    let user = &w.admin.user;
    let name = &w.token_name;
    let scopes = token_scopes(version);
    let basic = anon.with_credentials(Credentials::Basic {
        user: user.clone(),
        password: w.admin.password.clone(),
    });
    let stored = w.state.secrets()?.get(GITEA_TOKEN_KEY);
    let listed = basic.list_tokens(user).await?;
    let ours = listed.iter().find(|t| &t.name == name);
    if !stored.is_empty()
        && let Some(t) = ours
        && (t.token_last_eight.is_empty() || stored.expose().ends_with(&t.token_last_eight))
        && scopes_cover(t.scopes.as_ref(), scopes.as_ref())
    {
        match anon
            .with_credentials(Credentials::Token(stored.clone()))
            .current_user()
            .await
        {
            Ok(u) if &u.login == user => {
                return Ok((
                    Outcome::Skipped,
                    format!("the stored token `{name}` works"),
                    stored,
                ));
            }
            Ok(_) => {}
            Err(e) if e.status() == Some(401) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let replaced = ours.is_some();
    if replaced {
        // Gitea refuses a second token with the same name (400), and the old value is gone
        // from the state or no longer good enough: the old token goes.
        basic.delete_token(user, name).await?;
    }
    let created = basic
        .create_token(
            user,
            &CreateAccessTokenOption {
                name: name.clone(),
                scopes: scopes.clone(),
            },
        )
        .await?;
    if created.sha1.is_empty() {
        return Err(GiteaWireError::TokenMissing { name: name.clone() });
    }
    w.state
        .store_secrets(&[(GITEA_TOKEN_KEY, created.sha1.expose())])?;
    let scopes_text = match &scopes {
        Some(s) => s.join(", "),
        None => "full access: this Gitea has no token scopes".into(),
    };
    let verb = if replaced { "replaced" } else { "created" };
    Ok((
        Outcome::Done,
        format!("{verb} token `{name}` ({scopes_text})"),
        created.sha1,
    ))
}

async fn ensure_org(
    w: &GiteaWiring<'_>,
    api: &GiteaClient,
) -> Result<(Outcome, String), GiteaWireError> {
    if api.get_org(&w.org).await?.is_some() {
        return Ok((Outcome::Skipped, format!("`{}` exists", w.org)));
    }
    let created = api
        .create_org(&CreateOrgOption {
            username: w.org.clone(),
            full_name: Some("homelab lab".into()),
            description: Some("Repositories of the homelab GitOps lab".into()),
            visibility: Visibility::Public,
        })
        .await?;
    Ok(match created {
        Created::Created(_) => (Outcome::Done, format!("created `{}`", w.org)),
        Created::Exists => (Outcome::Skipped, format!("`{}` exists", w.org)),
    })
}

async fn ensure_repo(
    w: &GiteaWiring<'_>,
    api: &GiteaClient,
    seed: &RepoSeed,
) -> Result<(Outcome, String, Repository), GiteaWireError> {
    let full = format!("{}/{}", w.org, seed.name);
    if let Some(repo) = api.get_repo(&w.org, &seed.name).await? {
        return Ok((Outcome::Skipped, format!("`{full}` exists"), repo));
    }
    let created = api
        .create_org_repo(
            &w.org,
            &CreateRepoOption {
                name: seed.name.clone(),
                description: Some(seed.description.clone()),
                private: seed.private,
                auto_init: false,
                default_branch: DEFAULT_BRANCH.into(),
                object_format_name: Some("sha1".into()),
            },
        )
        .await?;
    match created {
        Created::Created(repo) => Ok((Outcome::Done, format!("created `{full}`"), repo)),
        Created::Exists => {
            let repo = api.get_repo(&w.org, &seed.name).await?.unwrap_or_default();
            Ok((Outcome::Skipped, format!("`{full}` exists"), repo))
        }
    }
}

async fn ensure_content(
    w: &GiteaWiring<'_>,
    token: &Secret,
    seed: &RepoSeed,
    repo: &Repository,
    record: &mut GiteaRecord,
    warnings: &mut Vec<String>,
) -> Result<(Outcome, String), GiteaWireError> {
    let full = format!("{}/{}", w.org, seed.name);
    let format = ObjectFormat::from_name(&repo.object_format_name);
    let branch = if repo.default_branch.is_empty() {
        DEFAULT_BRANCH
    } else {
        repo.default_branch.as_str()
    };
    let seed_tree = git::tree_id(&full, &seed.files, format)?;
    let remote = GitRemote {
        url: format!(
            "{}/{}/{}.git",
            w.endpoint.base_url.trim_end_matches('/'),
            w.org,
            seed.name
        ),
        auth: GitAuth {
            username: Some(w.admin.user.clone()),
            password: Some(token.clone()),
            ca_pem: w.endpoint.ca_pem.clone(),
        },
        resolve: w.endpoint.resolve,
    };
    let head = w.git.remote_head(&remote, branch).await?;
    let action = seed_action(&seed_tree, head.as_deref(), record.repos.get(&full));
    let push = |parent: Option<String>, message: &'static str| {
        let remote = remote.clone();
        let files = &seed.files;
        let full = full.clone();
        async move {
            w.git
                .push_tree(
                    &remote,
                    &PushRequest {
                        repo: &full,
                        files,
                        branch,
                        parent: parent.as_deref(),
                        message,
                        author: &w.author,
                        format,
                    },
                )
                .await
        }
    };
    let diverged = |warnings: &mut Vec<String>| {
        warnings.push(format!(
            "`{full}` has commits homelab did not make and differs from homelab's seed; it was left as it is"
        ));
        (
            Outcome::Skipped,
            "kept: the branch has commits homelab did not make".to_string(),
        )
    };
    match action {
        SeedAction::UpToDate => Ok((Outcome::Skipped, "content is up to date".into())),
        SeedAction::Initial => {
            let pushed = push(None, "Seed the lab repository (homelab)").await?;
            record.repos.insert(
                full.clone(),
                SeedRecord {
                    commit: pushed.commit,
                    tree: pushed.tree,
                    foreign: None,
                },
            );
            Ok((
                Outcome::Done,
                format!("pushed {} files to `{branch}`", seed.files.len()),
            ))
        }
        SeedAction::Update { parent } => {
            let pushed = push(Some(parent), "Update the lab repository to homelab's seed").await?;
            record.repos.insert(
                full.clone(),
                SeedRecord {
                    commit: pushed.commit,
                    tree: pushed.tree,
                    foreign: None,
                },
            );
            Ok((Outcome::Done, format!("updated `{branch}` to the new seed")))
        }
        SeedAction::Diverged { .. } => Ok(diverged(warnings)),
        SeedAction::MovedOn { .. } => Ok((
            Outcome::Skipped,
            "moved on from homelab's seed; nothing new to push".into(),
        )),
        SeedAction::Inspect { head } => {
            let remote_tree = w.git.remote_tree(&remote, branch, format).await?;
            let entry = record.repos.entry(full.clone()).or_default();
            if remote_tree.tree == seed_tree {
                *entry = SeedRecord {
                    commit: remote_tree.commit,
                    tree: remote_tree.tree,
                    foreign: None,
                };
                Ok((Outcome::Skipped, "content matches the seed".into()))
            } else {
                entry.foreign = Some((head, remote_tree.tree));
                Ok(diverged(warnings))
            }
        }
    }
}

async fn ensure_webhook(
    w: &GiteaWiring<'_>,
    api: &GiteaClient,
    record: &mut GiteaRecord,
) -> Result<(Outcome, String), GiteaWireError> {
    let org = &w.org;
    let repo = &w.webhook.repo;
    let key = format!("{org}/{repo}");
    let fingerprint = secret_fingerprint(&w.webhook.secret);
    let secret_changed = record.webhook_secrets.get(&key) != Some(&fingerprint);
    let hooks = api.list_hooks(org, repo).await?;
    let plan = plan_hook(&hooks, &w.webhook.url, secret_changed);
    let mut config = BTreeMap::from([
        ("url".to_string(), w.webhook.url.clone()),
        ("content_type".to_string(), "json".to_string()),
        ("http_method".to_string(), "post".to_string()),
    ]);
    config.insert("secret".into(), w.webhook.secret.expose().to_string());
    let events = vec!["push".to_string()];
    for id in &plan.delete {
        api.delete_hook(org, repo, *id).await?;
    }
    let create = |config: BTreeMap<String, String>| CreateHookOption {
        kind: "gitea".into(),
        config,
        events: events.clone(),
        active: true,
        branch_filter: Some("*".into()),
    };
    let detail = match plan.action {
        HookAction::Keep(_) if plan.delete.is_empty() => {
            return Ok((Outcome::Skipped, "the webhook is in place".into()));
        }
        HookAction::Keep(_) => format!("removed {} duplicate webhooks", plan.delete.len()),
        HookAction::Create => {
            api.create_hook(org, repo, &create(config)).await?;
            "created the push webhook".to_string()
        }
        HookAction::Replace(id) => {
            api.delete_hook(org, repo, id).await?;
            api.create_hook(org, repo, &create(config)).await?;
            "replaced a webhook of another type".to_string()
        }
        HookAction::Update(id) => {
            api.edit_hook(
                org,
                repo,
                id,
                &EditHookOption {
                    config,
                    events: events.clone(),
                    active: true,
                    branch_filter: Some("*".into()),
                },
            )
            .await?;
            "updated the webhook".to_string()
        }
    };
    record.webhook_secrets.insert(key, fingerprint);
    Ok((Outcome::Done, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(commit: &str, tree: &str) -> SeedRecord {
        SeedRecord {
            commit: commit.into(),
            tree: tree.into(),
            foreign: None,
        }
    }

    #[test]
    fn seed_actions() {
        assert_eq!(seed_action("t1", None, None), SeedAction::Initial);
        assert_eq!(
            seed_action("t1", None, Some(&rec("c1", "t1"))),
            SeedAction::Initial
        );
        assert_eq!(
            seed_action("t1", Some("c1"), Some(&rec("c1", "t1"))),
            SeedAction::UpToDate
        );
        assert_eq!(
            seed_action("t2", Some("c1"), Some(&rec("c1", "t1"))),
            SeedAction::Update {
                parent: "c1".into()
            }
        );
        // Regression: commits of the lab's own loop (a tag bump, `verify`) made every later `up`
        // fetch the repository and warn that it "has commits homelab did not make".
        assert_eq!(
            seed_action("t1", Some("c9"), Some(&rec("c1", "t1"))),
            SeedAction::MovedOn { head: "c9".into() }
        );
        assert_eq!(
            seed_action("t2", Some("c9"), Some(&rec("c1", "t1"))),
            SeedAction::Inspect { head: "c9".into() }
        );
        assert_eq!(
            seed_action("t1", Some("c9"), None),
            SeedAction::Inspect { head: "c9".into() }
        );
        let mut r = rec("c1", "t0");
        r.foreign = Some(("c9".into(), "t9".into()));
        assert_eq!(
            seed_action("t1", Some("c9"), Some(&r)),
            SeedAction::Diverged { head: "c9".into() }
        );
        assert_eq!(
            seed_action("t9", Some("c9"), Some(&r)),
            SeedAction::UpToDate
        );
    }

    #[test]
    fn scopes_follow_the_version() {
        assert_eq!(token_scopes("1.26.1").unwrap().len(), TOKEN_SCOPES.len());
        assert_eq!(
            token_scopes("1.27.0+dev-10-gabc").unwrap(),
            token_scopes("1.20.0").unwrap()
        );
        assert_eq!(token_scopes("1.19.4"), Some(vec!["all".to_string()]));
        assert_eq!(token_scopes("1.18.5"), None);
        assert!(token_scopes("11.0.1+gitea-1.22.0").is_some());
        assert!(scopes_cover(
            Some(&vec!["all".into()]),
            token_scopes("1.26.1").as_ref()
        ));
        assert!(!scopes_cover(
            Some(&vec!["write:repository".into()]),
            token_scopes("1.26.1").as_ref()
        ));
        assert!(scopes_cover(None, token_scopes("1.26.1").as_ref()));
    }

    fn hook(id: i64, url: &str, kind: &str) -> Hook {
        Hook {
            id,
            kind: kind.into(),
            config: BTreeMap::from([
                ("url".to_string(), url.to_string()),
                ("content_type".to_string(), "json".to_string()),
            ]),
            events: vec!["push".into()],
            active: true,
            branch_filter: "*".into(),
        }
    }

    #[test]
    fn hook_plans() {
        let url = DEFAULT_SYNC_WEBHOOK_URL;
        assert_eq!(plan_hook(&[], url, true).action, HookAction::Create);
        let other = hook(1, "http://drone.drone.svc/hook", "gitea");
        assert_eq!(
            plan_hook(std::slice::from_ref(&other), url, false).action,
            HookAction::Create,
            "Drone's hook is not ours"
        );
        let ours = hook(2, url, "gitea");
        assert_eq!(
            plan_hook(&[other.clone(), ours.clone()], url, false),
            HookPlan {
                action: HookAction::Keep(2),
                delete: vec![]
            }
        );
        assert_eq!(
            plan_hook(std::slice::from_ref(&ours), url, true).action,
            HookAction::Update(2)
        );
        let mut inactive = ours.clone();
        inactive.active = false;
        assert_eq!(
            plan_hook(&[inactive], url, false).action,
            HookAction::Update(2)
        );
        let dup = hook(7, url, "gitea");
        assert_eq!(
            plan_hook(&[dup, ours.clone()], url, false),
            HookPlan {
                action: HookAction::Keep(2),
                delete: vec![7]
            }
        );
        assert_eq!(
            plan_hook(&[hook(3, url, "slack")], url, false).action,
            HookAction::Replace(3)
        );
    }

    #[test]
    fn cli_requests_keep_the_password_out_of_argv() {
        let admin = AdminLogin {
            user: "lab-admin".into(),
            email: "lab-admin@gitea.x".into(),
            password: Secret::new("pw-123"),
        };
        for req in [
            admin_create_request(&GiteaCli::default(), &admin),
            admin_reset_request(&GiteaCli::default(), &admin),
        ] {
            assert!(req.argv.iter().all(|a| !a.contains("pw-123")), "{req:?}");
            assert_eq!(req.stdin.as_ref().unwrap().expose(), "pw-123");
            assert!(req.argv.contains(&"/etc/gitea/app.ini".to_string()));
        }
    }

    #[test]
    fn fingerprint_hides_the_secret_and_tracks_changes() {
        let a = secret_fingerprint(&Secret::new("s1"));
        assert_ne!(a, secret_fingerprint(&Secret::new("s2")));
        assert!(!a.contains("s1"));
        assert_eq!(a.len(), 32);
    }
}

//! Wire Gitea: the admin user, an API token, the `lab` organisation, the lab repositories with
//! their seed content, the GitOps webhook, and a registry login check.
//!
//! Place in the data flow: `up` calls [`wire`] after apply, once Gitea's Deployment is Ready, with
//! the repositories' content from `render` and the secrets from the lab state. Architecture
//! invariant: every step looks before it writes (user, token, organisation, repository, branch
//! head, webhook), so a second run on a wired lab performs only reads; the decisions are the pure
//! functions of [`super::decide`] ([`seed_action`], [`token_scopes`], [`plan_hook`]), tested
//! without a server, and the effects (API calls, git pushes, the CLI in the pod) are the
//! `ensure_*` steps of the `ensure` module.
//!
//! The first call waits: Gitea's Deployment may be Ready while the ingress still has no
//! certificate for its name (cert-manager is issuing it) or is not listening yet, so connection
//! and TLS errors are retried within [`GiteaWiring::patience`], with progress, before wiring
//! fails with what it tried and where to look. HTTP error answers are never retried.

mod base_images;
mod ensure;

pub use base_images::BaseImage;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::decide::*;
use crate::edges::error::Diagnostic;
use crate::edges::git::{Git, GitError, Identity};
use crate::edges::http::Patience;
use crate::edges::output::steps::{StepReport, Steps};
use crate::edges::output::{Outcome, Progress};
use crate::edges::redact::Secret;
use crate::edges::state::{LabState, StateError};
use crate::model::plan::wiring;
use crate::model::render::Manifests;
use crate::services::gitea::pod_exec::{ExecOutput, ExecRequest, PodExec, PodExecError};
use crate::services::gitea::{Credentials, Endpoint, GiteaClient, GiteaError};
use ensure::{ensure_admin, ensure_content, ensure_org, ensure_repo, ensure_token, ensure_webhook};

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
    /// The images the lab's Dockerfiles start `FROM`, to push into Gitea's registry from the
    /// image cache ([`BaseImage::new`] names them as kaniko's `--registry-map` looks them up).
    pub base_images: Vec<BaseImage>,
    /// The image cache `homelab prepare` fills (`<cache>/images`), when there is one.
    pub image_cache: Option<PathBuf>,
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
        crate::edges::output::steps::writes(&self.steps)
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
    /// The image cache could not be read.
    #[error(transparent)]
    Cache(#[from] crate::cluster::image_cache::LayoutError),
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
        crate::edges::output::human_duration(*.after),
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
            GiteaWireError::Cache(e) => e.hints(),
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
                        crate::edges::output::human_duration(started.elapsed())
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
                        url: crate::edges::redact::redact_url(
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
                        crate::edges::output::human_duration(started.elapsed()),
                        crate::edges::output::human_duration(patience.limit)
                    ),
                );
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
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

    let t = steps.start(wiring::GITEA_ADMIN, &w.admin.user);
    let r = ensure_admin(w, &anon).await;
    steps.end(wiring::GITEA_ADMIN, t, r.map(|(o, d)| (o, d, ())))?;

    let t = steps.start(wiring::GITEA_TOKEN, &w.token_name);
    let r = ensure_token(w, &anon, &version).await;
    let token = steps.end(wiring::GITEA_TOKEN, t, r)?;
    let api = anon.with_credentials(Credentials::Token(token.clone()));

    let t = steps.start(wiring::GITEA_ORG, &w.org);
    let r = ensure_org(w, &api).await;
    steps.end(wiring::GITEA_ORG, t, r.map(|(o, d)| (o, d, ())))?;

    for seed in &w.repos {
        let full = format!("{}/{}", w.org, seed.name);
        let step = wiring::repo(&full);
        let t = steps.start(&step, "look, then create");
        let r = ensure_repo(w, &api, seed).await;
        let repo = steps.end(&step, t, r)?;

        let step = wiring::push(&full);
        let t = steps.start(&step, "compare the content");
        let r = ensure_content(w, &token, seed, &repo, &mut record, &mut steps.warnings).await;
        steps.end(&step, t, r.map(|(o, d)| (o, d, ())))?;
    }

    let step = wiring::webhook(&format!("{}/{}", w.org, w.webhook.repo));
    let t = steps.start(&step, &w.webhook.url);
    let r = ensure_webhook(w, &api, &mut record).await;
    steps.end(&step, t, r.map(|(o, d)| (o, d, ())))?;

    let t = steps.start(wiring::REGISTRY, "log in with the token");
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
    steps.end(wiring::REGISTRY, t, r)?;

    if !w.base_images.is_empty() {
        let t = steps.start(wiring::BASE_IMAGES, "push the cached base images");
        let r = base_images::ensure_base_images(w, &registry).await;
        steps.end(wiring::BASE_IMAGES, t, r.map(|(o, d)| (o, d, ())))?;
    }

    if record != before {
        w.state.write_json(GITEA_RECORD_FILE, &record)?;
    }
    Ok(GiteaReport {
        gitea_version: version,
        steps: steps.reports,
        warnings: steps.warnings,
    })
}

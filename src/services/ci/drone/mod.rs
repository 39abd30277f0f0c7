//! Drone 2.24 as the lab's CI: its typed client, the first login done by the tool, the wiring
//! steps `up` runs, and the pipeline-file checks.
//!
//! Place in the data flow: `ci::wire` and `ci::Ci` dispatch here; nothing outside `ci/` names
//! Drone. Wiring, in order (each step looks before it writes, so a wired lab sees only reads):
//!
//! 1. **OAuth app** `drone` in Gitea (confidential, redirect `https://drone.<domain>/login`),
//!    found by name; created, or updated when its redirect URI is wrong or the lab state lost
//!    its secret (Gitea's PATCH regenerates the secret; the client id and grants survive).
//! 2. **Drone's configuration**: the client id and secret go into the lab state and into
//!    Secret `drone` (keys `gitea-client-id`, `gitea-client-secret`); when they changed, the
//!    Deployment's pod template is annotated, which restarts Drone, and the rollout is awaited.
//! 3. **Login**: the stored API token is tried; without a working one the tool logs in through
//!    Gitea (see [`login`]) and stores the token Drone hands out.
//! 4. **Activation** of `lab/nyan-cat` (after a repository sync when Drone does not know it).
//! 5. **Trust**: the pipeline mounts the lab CA from a ConfigMap, which drone-runner-kube's
//!    linter refuses for an untrusted repository (the build ends in `error` before any step).
//!    Only a Drone administrator may set `trusted` — Drone silently ignores it from anyone
//!    else — so the admin's token PATCHes it when it is not set, and the answer is checked.
//! 6. **Secrets** of the pipeline, from two Gitea tokens kept in the lab state: PATCH when the
//!    secret exists and its value changed, POST when it is missing (a duplicate POST is a 500).
//! 7. **Build** of the branch head unless one of it succeeded or is still queued or running:
//!    the GitOps repository starts with an image tag that only a successful build creates, so
//!    a lab whose build failed (say, before the repository was trusted) is healed by the next
//!    `up` instead of staying on the never-built `:bootstrap` image.
//!
//! Architecture invariant: the decisions ([`oauth_app::plan`], [`secrets::plan`],
//! [`build::build_plan`]) are pure
//! functions of what was read; the effects go through the Drone client, the Gitea client and the
//! [`crate::services::ci::Workloads`] seam.

pub mod build;
mod client;
mod error;
pub mod login;
pub mod oauth_app;
pub mod pipeline;
pub mod secrets;
pub mod types;
mod wire;

pub use client::{DroneClient, DroneError};
pub use error::DroneWireError;
pub use wire::{client_annotations, wire};

use crate::edges::http::Endpoint;
use crate::edges::state::LabState;
use crate::services::ci::{BuildInfo, BuildState, FailedStep, RepoRef};

/// Name of the OAuth2 app in Gitea.
pub const OAUTH_APP_NAME: &str = "drone";
/// Secret and Deployment of the Drone server (templates/drone).
pub const DRONE_OBJECT: &str = "drone";
/// Keys of Secret `drone` that hold the OAuth client (templates/drone/secret.yaml).
pub const SECRET_KEY_CLIENT_ID: &str = "gitea-client-id";
/// See [`SECRET_KEY_CLIENT_ID`].
pub const SECRET_KEY_CLIENT_SECRET: &str = "gitea-client-secret";
/// Pod-template annotation carrying the client id; the same key templates/drone uses, so the
/// next apply of the component finds the value it would set.
pub const ANNOTATION_CLIENT_ID: &str = "homelab.dev/gitea-oauth-client-id";
/// Pod-template annotation carrying a fingerprint of the client secret: a regenerated secret
/// with the same client id still restarts Drone.
pub const ANNOTATION_SECRET_FINGERPRINT: &str = "homelab.dev/gitea-oauth-secret";
/// Lab-state key of the OAuth client id.
pub const STATE_CLIENT_ID: &str = "drone_oauth_client_id";
/// Lab-state key of the OAuth client secret.
pub const STATE_CLIENT_SECRET: &str = "drone_oauth_client_secret";
/// Lab-state key of Drone's API token for the Gitea admin.
pub const STATE_DRONE_TOKEN: &str = "drone_token";
/// Lab-state key of the Gitea token the pipeline pushes images with.
pub const STATE_REGISTRY_TOKEN: &str = "drone_registry_token";
/// Lab-state key of the Gitea token the pipeline pushes to the GitOps repository with.
pub const STATE_GITOPS_TOKEN: &str = "drone_gitops_token";
/// Non-secret record of what the wiring set (secret fingerprints).
pub const RECORD_FILE: &str = "drone.json";
/// Names of the pipeline's secrets (templates/repos/nyan-cat/.drone.yml).
pub const SECRET_REGISTRY_USERNAME: &str = "registry_username";
/// See [`SECRET_REGISTRY_USERNAME`].
pub const SECRET_REGISTRY_PASSWORD: &str = "registry_password";
/// See [`SECRET_REGISTRY_USERNAME`].
pub const SECRET_GITOPS_TOKEN: &str = "gitops_token";

/// The Drone client with the API token the wiring stored.
pub fn client_from_state(
    endpoint: &Endpoint,
    state: &LabState,
) -> Result<DroneClient, crate::edges::error::Error> {
    let secrets = state.secrets()?;
    let token = secrets.get(STATE_DRONE_TOKEN);
    if token.is_empty() {
        return Err(crate::edges::error::Error::msg(format!(
            "the lab state has no Drone API token (`{STATE_DRONE_TOKEN}` in `secrets.json`)"
        ))
        .hint("run `homelab up`: its wiring logs in to Drone and stores the token"));
    }
    Ok(DroneClient::new(endpoint)?.with_token(token))
}

/// Drone's status words as homelab's build states.
pub fn state_of(status: &str) -> BuildState {
    match status {
        "pending" | "blocked" | "waiting_on_dependencies" | "" => BuildState::Queued,
        "running" => BuildState::Running,
        "success" => BuildState::Succeeded,
        other => BuildState::Failed(other.to_string()),
    }
}

fn info(client: &DroneClient, repo: &RepoRef, b: &types::Build) -> BuildInfo {
    BuildInfo {
        number: b.number,
        state: state_of(&b.status),
        commit: b.after.clone(),
        event: b.event.clone(),
        error: build_error(b),
        link: client.build_link(&repo.owner, &repo.name, b.number),
    }
}

/// Why a build could not run: the server's own error (a pipeline file it could not find, parse
/// or lint), else the first stage's (the runner refused the pipeline — drone-runner-kube's
/// linter sets the stage error and runs no step). Empty when neither says.
pub fn build_error(b: &types::Build) -> String {
    if !b.error.is_empty() {
        return b.error.clone();
    }
    let mut stages: Vec<&types::Stage> = b.stages.iter().collect();
    stages.sort_by_key(|s| s.number);
    stages
        .into_iter()
        .map(|s| s.error.clone())
        .find(|e| !e.is_empty())
        .unwrap_or_default()
}

pub(crate) async fn recent_builds(
    client: &DroneClient,
    repo: &RepoRef,
) -> Result<Vec<BuildInfo>, DroneError> {
    let builds = client.list_builds(&repo.owner, &repo.name).await?;
    Ok(builds.iter().map(|b| info(client, repo, b)).collect())
}

pub(crate) async fn build_info(
    client: &DroneClient,
    repo: &RepoRef,
    number: i64,
) -> Result<BuildInfo, DroneError> {
    let b = client.build(&repo.owner, &repo.name, number).await?;
    Ok(info(client, repo, &b))
}

/// The first step (in stage, then step order) whose status is a failure, and its log tail.
pub(crate) async fn failed_step(
    client: &DroneClient,
    repo: &RepoRef,
    number: i64,
    lines: usize,
) -> Result<Option<FailedStep>, DroneError> {
    let b = client.build(&repo.owner, &repo.name, number).await?;
    let Some((stage, step)) = first_failed(&b) else {
        return Ok(None);
    };
    let log = client
        .logs(&repo.owner, &repo.name, number, stage.number, step.number)
        .await
        .unwrap_or_default();
    Ok(Some(FailedStep {
        stage: stage.name.clone(),
        step: step.name.clone(),
        exit_code: step.exit_code,
        error: if step.error.is_empty() {
            stage.error.clone()
        } else {
            step.error.clone()
        },
        log_tail: tail(&log, lines),
    }))
}

/// The first failed step of a build, by stage and step number.
pub fn first_failed(b: &types::Build) -> Option<(&types::Stage, &types::Step)> {
    let mut stages: Vec<&types::Stage> = b.stages.iter().collect();
    stages.sort_by_key(|s| s.number);
    for stage in stages {
        let mut steps: Vec<&types::Step> = stage.steps.iter().collect();
        steps.sort_by_key(|s| s.number);
        if let Some(step) = steps
            .into_iter()
            .find(|s| matches!(state_of(&s.status), BuildState::Failed(ref w) if w != "skipped"))
        {
            return Some((stage, step));
        }
    }
    None
}

/// The last `n` non-empty lines of a log.
pub fn tail(log: &[types::Line], n: usize) -> Vec<String> {
    let text: String = log.iter().map(|l| l.out.as_str()).collect();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| crate::edges::redact::redact_url(l.trim_end()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::{Build, Line, Stage, Step};

    #[test]
    fn statuses_map_to_states() {
        assert_eq!(state_of("pending"), BuildState::Queued);
        assert_eq!(state_of("running"), BuildState::Running);
        assert_eq!(state_of("success"), BuildState::Succeeded);
        assert_eq!(state_of("killed"), BuildState::Failed("killed".into()));
    }

    #[test]
    fn first_failed_step_is_found_by_number_and_skipped_steps_do_not_count() {
        let step = |number, name: &str, status: &str| Step {
            number,
            name: name.into(),
            status: status.into(),
            ..Step::default()
        };
        let b = Build {
            stages: vec![Stage {
                number: 1,
                name: "build-and-deploy".into(),
                status: "failure".into(),
                steps: vec![
                    step(4, "deploy", "skipped"),
                    step(3, "build", "failure"),
                    step(1, "clone", "success"),
                    step(2, "registry-login", "skipped"),
                ],
                ..Stage::default()
            }],
            ..Build::default()
        };
        let (stage, step) = first_failed(&b).unwrap();
        assert_eq!((stage.number, step.name.as_str()), (1, "build"));
    }

    #[test]
    fn tail_keeps_the_last_lines_and_redacts_urls() {
        let log: Vec<Line> = (1..=30)
            .map(|i| Line {
                pos: i,
                out: if i == 30 {
                    "push https://u:tok@gitea.x/lab/gitops.git\n".into()
                } else {
                    format!("line {i}\n")
                },
            })
            .collect();
        let t = tail(&log, 3);
        assert_eq!(
            t,
            [
                "line 28",
                "line 29",
                "push https://<redacted>@gitea.x/lab/gitops.git"
            ]
        );
    }
}

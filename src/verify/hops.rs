//! The hops verify walks and what they are walked with: the hop names in order ([`HOPS`]), the
//! target ([`VerifyTarget`]), the bounds on each wait ([`VerifyOptions`]) and an Application's
//! status as the `app synced` hop reads it ([`AppStatus`]).
//!
//! Architecture invariant: plain data and pure functions, no I/O; the walk over these hops is in
//! `walk`.

use std::time::Duration;

use serde::Serialize;

use crate::edges::http::Endpoint;
use crate::edges::redact::Secret;
use crate::services::ci::{BuildState, Ci};

/// The hops, in order, with the titles `plan` and the report show.
pub const HOPS: [&str; 6] = [
    "commit",
    "build started",
    "build succeeded",
    "tag bumped",
    "app synced",
    "app serves",
];

/// An Application by namespace and name.
#[derive(Clone, Debug, Serialize)]
pub struct AppRef {
    /// Namespace (`argocd`).
    pub namespace: String,
    /// Name (`nyan-cat`).
    pub name: String,
}

/// What verify drives.
#[derive(Clone)]
pub struct VerifyTarget {
    /// Gitea's public endpoint.
    pub gitea: crate::edges::http::Endpoint,
    /// A Gitea token that may write the app repository (`gitea_token` from the lab state).
    pub gitea_token: Secret,
    /// The CI, with its API token.
    pub ci: Ci,
    /// Organisation (`lab`).
    pub org: String,
    /// App repository (`nyan-cat`).
    pub app_repo: String,
    /// GitOps repository (`gitops`).
    pub gitops_repo: String,
    /// Branch that deploys (`main`).
    pub branch: String,
    /// The page whose version marker changes (`index.html`).
    pub page_path: String,
    /// The manifest whose image tag the pipeline bumps (`apps/nyan-cat/deployment.yaml`).
    pub deployment_path: String,
    /// The image without tag (`gitea.<domain>/lab/nyan-cat`).
    pub image: String,
    /// The Application that deploys it.
    pub application: AppRef,
    /// The app's public endpoint (`https://nyan.<domain>`, lab CA).
    pub site: Endpoint,
}

/// Bounds on each wait, and how often HTTP servers are asked again.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// For builds already running to finish before the commit (so an older build cannot bump
    /// the tag after ours).
    pub settle: Duration,
    /// For the CI to start a build of the commit.
    pub build_start: Duration,
    /// For that build to finish.
    pub build_finish: Duration,
    /// For the GitOps repository to carry the new tag.
    pub bump: Duration,
    /// For the Application to be Synced and Healthy at that revision.
    pub sync: Duration,
    /// For the site to serve the change.
    pub serve: Duration,
    /// First delay between two asks of an HTTP server; it doubles up to `poll_max`.
    pub poll_min: Duration,
    /// Longest delay between two asks.
    pub poll_max: Duration,
    /// Lines of a failed step's log to show.
    pub log_lines: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            settle: Duration::from_secs(900),
            build_start: Duration::from_secs(120),
            build_finish: Duration::from_secs(900),
            bump: Duration::from_secs(60),
            sync: Duration::from_secs(300),
            serve: Duration::from_secs(180),
            poll_min: Duration::from_millis(500),
            poll_max: Duration::from_secs(5),
            log_lines: 20,
        }
    }
}

/// An Application's status, as verify reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AppStatus {
    /// `status.sync.status`: `Synced`, `OutOfSync`, `Unknown`.
    pub sync: String,
    /// `status.sync.revision`.
    pub revision: String,
    /// `status.health.status`.
    pub health: String,
    /// `status.health.message`.
    pub health_message: String,
    /// `status.operationState.phase`.
    pub operation_phase: String,
    /// `status.operationState.message`.
    pub operation_message: String,
}

impl AppStatus {
    /// From an Application object's JSON.
    pub fn from_object(obj: &serde_json::Value) -> AppStatus {
        let s = |p: &str| {
            obj.pointer(p)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        AppStatus {
            sync: s("/status/sync/status"),
            revision: s("/status/sync/revision"),
            health: s("/status/health/status"),
            health_message: s("/status/health/message"),
            operation_phase: s("/status/operationState/phase"),
            operation_message: s("/status/operationState/message"),
        }
    }

    /// The status in one line, for progress updates and errors.
    pub(super) fn describe(&self) -> String {
        let mut out = format!(
            "sync `{}` at `{}`, health `{}`",
            or_unset(&self.sync),
            short(&self.revision),
            or_unset(&self.health)
        );
        if !self.health_message.is_empty() {
            out.push_str(&format!(" ({})", self.health_message));
        }
        if !self.operation_phase.is_empty() {
            out.push_str(&format!(", last operation `{}`", self.operation_phase));
            if !self.operation_message.is_empty() {
                out.push_str(&format!(": {}", self.operation_message));
            }
        }
        out
    }
}

fn or_unset(s: &str) -> &str {
    if s.is_empty() { "unset" } else { s }
}

/// A commit's short form (7 characters), or `no revision`.
pub(super) fn short(sha: &str) -> &str {
    if sha.is_empty() {
        "no revision"
    } else {
        &sha[..sha.len().min(7)]
    }
}

/// A build state as the CI words it (`running`, `success`, …).
pub(super) fn state_word(s: &BuildState) -> String {
    match s {
        BuildState::Queued => "queued".into(),
        BuildState::Running => "running".into(),
        BuildState::Succeeded => "success".into(),
        BuildState::Failed(w) => w.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_status_is_read_from_the_object() {
        let obj = serde_json::json!({"status": {"sync": {"status": "Synced", "revision": "abc"}, "health": {"status": "Progressing", "message": "1 of 1 updated"}}});
        let s = AppStatus::from_object(&obj);
        assert_eq!(s.sync, "Synced");
        assert_eq!(s.health, "Progressing");
        assert!(
            s.describe()
                .contains("health `Progressing` (1 of 1 updated)"),
            "{}",
            s.describe()
        );
    }

    #[test]
    fn a_status_reads_as_one_line_with_the_last_operation() {
        let s = AppStatus {
            sync: "OutOfSync".into(),
            revision: "0123456789abcdef".into(),
            operation_phase: "Failed".into(),
            operation_message: "one or more objects failed to apply".into(),
            ..AppStatus::default()
        };
        assert_eq!(
            s.describe(),
            "sync `OutOfSync` at `0123456`, health `unset`, last operation `Failed`: one or more objects failed to apply"
        );
        assert_eq!(
            AppStatus::default().describe(),
            "sync `unset` at `no revision`, health `unset`"
        );
    }

    #[test]
    fn hops_come_in_the_order_the_loop_runs() {
        assert_eq!(
            HOPS,
            [
                "commit",
                "build started",
                "build succeeded",
                "tag bumped",
                "app synced",
                "app serves"
            ]
        );
        assert_eq!(state_word(&BuildState::Succeeded), "success");
        assert_eq!(state_word(&BuildState::Failed("killed".into())), "killed");
    }
}

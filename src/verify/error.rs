//! Why a hop failed: [`VerifyError`], one variant per way each hop can fail, naming the object
//! and why, with the hints the user sees under it.
//!
//! Architecture invariant: plain data and pure text, no I/O.

use std::time::Duration;

use super::hops::short;
use super::{AppStatus, HOPS};
use crate::edges::error::Diagnostic;
use crate::edges::output::human_duration;
use crate::services::ci::{CiError, FailedStep};
use crate::services::gitea::GiteaError;

/// A hop failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A Gitea call failed.
    #[error("{hop}: {source}")]
    Gitea {
        /// The hop.
        hop: &'static str,
        /// The error.
        #[source]
        source: GiteaError,
    },
    /// A CI call failed.
    #[error("{hop}: {source}")]
    Ci {
        /// The hop.
        hop: &'static str,
        /// The error.
        #[source]
        source: CiError,
    },
    /// A file verify edits or reads is missing.
    #[error("{hop}: `{path}` does not exist in `{repo}` on `{branch}`")]
    FileMissing {
        /// The hop.
        hop: &'static str,
        /// owner/name.
        repo: String,
        /// Path.
        path: String,
        /// Branch.
        branch: String,
    },
    /// The page has no single version marker.
    #[error(
        "commit: `{path}` in `{repo}` has {count} elements with `id=\"version\"`; verify changes exactly one"
    )]
    NoMarker {
        /// owner/name.
        repo: String,
        /// Path.
        path: String,
        /// How many.
        count: usize,
    },
    /// Builds already running did not finish.
    #[error("commit: build #{number} of `{repo}` was still {state} after {}; verify waits for it so an older build cannot bump the tag after the new one", human_duration(*.after))]
    Busy {
        /// owner/name.
        repo: String,
        /// The build.
        number: i64,
        /// Its state.
        state: String,
        /// The bound.
        after: Duration,
    },
    /// No build of the commit appeared.
    #[error("build started: {ci} started no build of `{repo}` commit `{}` within {}", short(.commit), human_duration(*.after))]
    NoBuild {
        /// CI name.
        ci: &'static str,
        /// owner/name.
        repo: String,
        /// The commit.
        commit: String,
        /// The bound.
        after: Duration,
    },
    /// The build failed.
    #[error("build succeeded: build #{number} of `{repo}` ended `{status}`{}{}", failed_step_text(.step), error_text(.error))]
    BuildFailed {
        /// owner/name.
        repo: String,
        /// Number.
        number: i64,
        /// CI status word.
        status: String,
        /// The CI's error for builds that could not start.
        error: String,
        /// Web page.
        link: String,
        /// The failed step with its log tail.
        step: Option<FailedStep>,
    },
    /// The build did not finish.
    #[error("build succeeded: build #{number} of `{repo}` was still {state} after {}", human_duration(*.after))]
    BuildTimeout {
        /// owner/name.
        repo: String,
        /// Number.
        number: i64,
        /// Last state.
        state: String,
        /// Web page.
        link: String,
        /// The bound.
        after: Duration,
    },
    /// The GitOps repository does not deploy the new image.
    #[error("tag bumped: `{path}` in `{repo}` deploys {} instead of `{image}:{}` after {}", found_text(.found), short(.expected), human_duration(*.after))]
    NotBumped {
        /// owner/name.
        repo: String,
        /// Path.
        path: String,
        /// Image without tag.
        image: String,
        /// Expected tag.
        expected: String,
        /// Tag found.
        found: Option<String>,
        /// The bound.
        after: Duration,
    },
    /// The Application did not reach the revision, Synced and Healthy.
    #[error("app synced: Application `{name}` in `{namespace}` is not Synced and Healthy at `{}` after {}: {}", short(.revision), human_duration(*.after), status_text(.status))]
    NotSynced {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The GitOps revision expected.
        revision: String,
        /// The last status seen.
        status: Option<AppStatus>,
        /// The bound.
        after: Duration,
    },
    /// The Application could not be watched.
    #[error("app synced: watch Application `{name}` in `{namespace}`: {detail}")]
    Watch {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Why.
        detail: String,
    },
    /// The site did not answer (DNS, TCP, TLS).
    #[error("app serves: {url} did not answer within {}: {detail}", human_duration(*.after))]
    SiteUnreachable {
        /// URL.
        url: String,
        /// The last transport error.
        detail: String,
        /// The bound.
        after: Duration,
    },
    /// The site answered but not with the change.
    #[error("app serves: {url} still serves {} after {} (expected version `{expected}`)", served_text(.served, *.status), human_duration(*.after))]
    Stale {
        /// URL.
        url: String,
        /// Expected version.
        expected: String,
        /// The version served, when the page had one.
        served: Option<String>,
        /// The HTTP status last seen.
        status: u16,
        /// The bound.
        after: Duration,
    },
}

fn failed_step_text(step: &Option<FailedStep>) -> String {
    match step {
        None => String::new(),
        Some(s) => {
            let mut out = format!(
                " at step `{}` (stage `{}`, exit code {})",
                s.step, s.stage, s.exit_code
            );
            if !s.error.is_empty() {
                out.push_str(&format!(": {}", s.error));
            }
            if !s.log_tail.is_empty() {
                out.push_str(&format!(
                    "\nlast {} lines of its log:\n{}",
                    s.log_tail.len(),
                    s.log_tail
                        .iter()
                        .map(|l| format!("  | {l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
            out
        }
    }
}

fn error_text(error: &str) -> String {
    if error.is_empty() {
        String::new()
    } else {
        format!(": {error}")
    }
}

fn found_text(found: &Option<String>) -> String {
    match found {
        Some(t) => format!("tag `{t}`"),
        None => "no such image".into(),
    }
}

fn status_text(status: &Option<AppStatus>) -> String {
    match status {
        Some(s) => s.describe(),
        None => "it does not exist".into(),
    }
}

fn served_text(served: &Option<String>, status: u16) -> String {
    match served {
        Some(v) => format!("version `{v}`"),
        None if status == 200 => "a page without a version marker".into(),
        None => format!("HTTP {status}"),
    }
}

impl VerifyError {
    /// The hop that failed.
    pub fn hop(&self) -> &'static str {
        match self {
            VerifyError::Gitea { hop, .. } | VerifyError::Ci { hop, .. } => hop,
            VerifyError::FileMissing { hop, .. } => hop,
            VerifyError::NoMarker { .. } | VerifyError::Busy { .. } => HOPS[0],
            VerifyError::NoBuild { .. } => HOPS[1],
            VerifyError::BuildFailed { .. } | VerifyError::BuildTimeout { .. } => HOPS[2],
            VerifyError::NotBumped { .. } => HOPS[3],
            VerifyError::NotSynced { .. } | VerifyError::Watch { .. } => HOPS[4],
            VerifyError::SiteUnreachable { .. } | VerifyError::Stale { .. } => HOPS[5],
        }
    }
}

impl Diagnostic for VerifyError {
    fn hints(&self) -> Vec<String> {
        match self {

            VerifyError::Gitea { source, .. } => source.hints(),
            VerifyError::Ci { source, .. } => source.hints(),
            VerifyError::FileMissing { .. } => vec![
                "the lab repositories are seeded by `homelab up`; run it again if they were changed by hand".into(),
            ],
            VerifyError::NoMarker { .. } => vec![
                "keep exactly one element with `id=\"version\"` in the page (the repository's README says so)".into(),
            ],
            VerifyError::Busy { .. } => vec![
                "cancel the build in Drone, or run `homelab verify` again once it finished".into(),
            ],
            VerifyError::NoBuild { .. } => vec![
                "check that the repository is active in Drone and that Gitea delivers its webhook (repository settings → Webhooks → recent deliveries); Gitea's `[webhook] ALLOWED_HOST_LIST` must admit Drone's in-cluster host".into(),
            ],
            VerifyError::BuildFailed { link, .. } | VerifyError::BuildTimeout { link, .. } => {
                vec![format!("the build's page: {link}")]
            }
            VerifyError::NotBumped { .. } => vec![
                "the pipeline's `deploy` step pushes the new tag with the `gitops_token` secret: look at that step's log in Drone".into(),
            ],
            VerifyError::NotSynced {
                namespace, name, ..
            }
            | VerifyError::Watch {
                namespace, name, ..
            } => vec![format!(
                "see the sync engine's view with `kubectl -n {namespace} get application {name} -o yaml`"
            )],
            VerifyError::SiteUnreachable { detail, .. } if detail.contains("certificate") => vec![
                "the site's certificate is not signed by the lab CA: check `kubectl -n nyan-cat get certificate`".into(),
            ],
            VerifyError::SiteUnreachable { .. } => vec![
                "check the ingress (`homelab status`) and the app's pods (`kubectl -n nyan-cat get pods`)".into(),
            ],
            VerifyError::Stale { .. } => vec![
                "the Application is synced but the pods may still be the old ones: `kubectl -n nyan-cat get pods`".into(),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_names_the_hop_it_failed() {
        let after = Duration::from_secs(60);
        let cases = [
            (
                VerifyError::NoMarker {
                    repo: "lab/nyan-cat".into(),
                    path: "index.html".into(),
                    count: 2,
                },
                "commit",
            ),
            (
                VerifyError::NoBuild {
                    ci: "Drone",
                    repo: "lab/nyan-cat".into(),
                    commit: "abcdef0123".into(),
                    after,
                },
                "build started",
            ),
            (
                VerifyError::FileMissing {
                    hop: HOPS[3],
                    repo: "lab/gitops".into(),
                    path: "apps/nyan-cat/deployment.yaml".into(),
                    branch: "main".into(),
                },
                "tag bumped",
            ),
            (
                VerifyError::Watch {
                    namespace: "argocd".into(),
                    name: "nyan-cat".into(),
                    detail: "forbidden".into(),
                },
                "app synced",
            ),
            (
                VerifyError::Stale {
                    url: "https://nyan.x/".into(),
                    expected: "v2".into(),
                    served: Some("v1".into()),
                    status: 200,
                    after,
                },
                "app serves",
            ),
        ];
        for (e, hop) in cases {
            assert_eq!(e.hop(), hop, "{e}");
            assert!(e.to_string().starts_with(&format!("{hop}: ")), "{e}");
        }
    }

    #[test]
    fn a_failed_build_shows_its_step_and_log_tail() {
        let e = VerifyError::BuildFailed {
            repo: "lab/nyan-cat".into(),
            number: 7,
            status: "failure".into(),
            error: String::new(),
            link: "https://drone.x/lab/nyan-cat/7".into(),
            step: Some(FailedStep {
                stage: "default".into(),
                step: "test".into(),
                exit_code: 2,
                error: String::new(),
                log_tail: vec!["a".into(), "b".into()],
            }),
        };
        assert_eq!(
            e.to_string(),
            "build succeeded: build #7 of `lab/nyan-cat` ended `failure` at step `test` (stage `default`, exit code 2)\nlast 2 lines of its log:\n  | a\n  | b"
        );
        assert_eq!(
            e.hints(),
            vec!["the build's page: https://drone.x/lab/nyan-cat/7"]
        );
    }

    #[test]
    fn what_was_found_is_worded_for_a_reader() {
        let after = Duration::from_secs(5);
        let not_synced = VerifyError::NotSynced {
            namespace: "argocd".into(),
            name: "nyan-cat".into(),
            revision: String::new(),
            status: None,
            after,
        };
        assert_eq!(
            not_synced.to_string(),
            "app synced: Application `nyan-cat` in `argocd` is not Synced and Healthy at `no revision` after 5.0s: it does not exist"
        );
        let stale = |served: Option<&str>, status| VerifyError::Stale {
            url: "https://nyan.x/".into(),
            expected: "v2".into(),
            served: served.map(Into::into),
            status,
            after,
        };
        assert!(
            stale(None, 200)
                .to_string()
                .contains("still serves a page without a version marker after")
        );
        assert!(
            stale(None, 502)
                .to_string()
                .contains("still serves HTTP 502 after")
        );
        assert!(
            stale(Some("v1"), 200)
                .to_string()
                .contains("still serves version `v1` after")
        );
        let not_bumped = VerifyError::NotBumped {
            repo: "lab/gitops".into(),
            path: "apps/nyan-cat/deployment.yaml".into(),
            image: "gitea.x/lab/nyan-cat".into(),
            expected: "abcdef0123".into(),
            found: None,
            after,
        };
        assert!(
            not_bumped
                .to_string()
                .contains("deploys no such image instead of `gitea.x/lab/nyan-cat:abcdef0`"),
            "{not_bumped}"
        );
    }

    #[test]
    fn an_untrusted_certificate_gets_its_own_hint() {
        let unreachable = |detail: &str| VerifyError::SiteUnreachable {
            url: "https://nyan.x/".into(),
            detail: detail.into(),
            after: Duration::from_secs(5),
        };
        assert!(
            unreachable("invalid peer certificate: UnknownIssuer").hints()[0]
                .contains("not signed by the lab CA")
        );
        assert!(unreachable("connection refused").hints()[0].contains("homelab status"));
    }
}

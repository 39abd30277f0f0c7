//! CI: the seam between homelab and the CI server that builds the lab's apps. Drone is the
//! default (and today the only) implementation.
//!
//! Place in the data flow: `Cluster ─wire─▶ WireReport` — after Gitea is wired, `up` calls
//! [`wire`] with a [`CiWiring`] — and `Cluster ─verify─▶ VerifyReport`, where verify asks the CI
//! about builds through [`Ci`]. Architecture invariant: only `ci::drone` knows Drone's routes,
//! names and Kubernetes objects; everything outside `ci/` speaks the types here ([`BuildInfo`],
//! [`FailedStep`], [`CiReport`]) and reaches Kubernetes through the [`Workloads`] seam, so a second
//! CI (e.g. Woodpecker) is one new module and one new [`CiKind`] variant.

pub mod cluster;
pub mod drone;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::edges::error::Diagnostic;
use crate::edges::http::Endpoint;
use crate::edges::output::Progress;
pub use crate::edges::output::steps::StepReport;
use crate::edges::redact::Secret;
use crate::edges::state::LabState;

/// Gitea's web login under its old path (it lives with the Gitea service now).
pub use crate::services::gitea::web_login as oauth_login;

/// Which CI server a lab runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CiKind {
    /// Drone 2.x with drone-runner-kube.
    #[default]
    Drone,
}

impl CiKind {
    /// The product name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            CiKind::Drone => "Drone",
        }
    }
}

/// A repository by owner and name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepoRef {
    /// Owner (the Gitea organisation).
    pub owner: String,
    /// Name.
    pub name: String,
}

impl RepoRef {
    /// `owner/name`.
    pub fn new(owner: &str, name: &str) -> RepoRef {
        RepoRef {
            owner: owner.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// Where a build stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "status")]
pub enum BuildState {
    /// Waiting for a runner (or an approval, or a dependency).
    Queued,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished otherwise; the CI's own status word (`failure`, `error`, `killed`, …).
    Failed(String),
}

impl BuildState {
    /// Finished, one way or the other.
    pub fn is_done(&self) -> bool {
        matches!(self, BuildState::Succeeded | BuildState::Failed(_))
    }
}

/// A build, whatever the CI.
#[derive(Clone, Debug, Serialize)]
pub struct BuildInfo {
    /// Number (what the CI's URLs use).
    pub number: i64,
    /// State.
    pub state: BuildState,
    /// Commit built.
    pub commit: String,
    /// Event that started it (`push`, `custom`, …).
    pub event: String,
    /// Why it could not run, when the CI says (bad pipeline file, missing secret).
    pub error: String,
    /// Web page of the build.
    pub link: String,
}

/// The step that failed a build, with the end of its log.
#[derive(Clone, Debug, Serialize)]
pub struct FailedStep {
    /// Stage (pipeline) name.
    pub stage: String,
    /// Step name.
    pub step: String,
    /// Container exit code.
    pub exit_code: i64,
    /// Why it could not run, when the CI says.
    pub error: String,
    /// The last lines of its log.
    pub log_tail: Vec<String>,
}

/// A CI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CiError {
    /// Drone.
    #[error(transparent)]
    Drone(#[from] drone::DroneError),
}

impl Diagnostic for CiError {
    fn hints(&self) -> Vec<String> {
        match self {
            CiError::Drone(e) => e.hints(),
        }
    }
}

/// A CI server verify can ask about builds.
#[derive(Clone)]
pub enum Ci {
    /// Drone, with an API token.
    Drone(drone::DroneClient),
}

impl Ci {
    /// Which CI this is.
    pub fn kind(&self) -> CiKind {
        match self {
            Ci::Drone(_) => CiKind::Drone,
        }
    }

    /// The most recent builds of `repo`, newest first.
    pub async fn recent_builds(&self, repo: &RepoRef) -> Result<Vec<BuildInfo>, CiError> {
        match self {
            Ci::Drone(c) => Ok(drone::recent_builds(c, repo).await?),
        }
    }

    /// One build.
    pub async fn build(&self, repo: &RepoRef, number: i64) -> Result<BuildInfo, CiError> {
        match self {
            Ci::Drone(c) => Ok(drone::build_info(c, repo, number).await?),
        }
    }

    /// The first failed step of a finished build with the last `lines` lines of its log;
    /// `None` when no step failed (the build failed before its steps ran).
    pub async fn failed_step(
        &self,
        repo: &RepoRef,
        number: i64,
        lines: usize,
    ) -> Result<Option<FailedStep>, CiError> {
        match self {
            Ci::Drone(c) => Ok(drone::failed_step(c, repo, number, lines).await?),
        }
    }
}

/// A Kubernetes operation the CI wiring needs failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// An API call failed.
    #[error("{call}: {detail}")]
    Api {
        /// What was done, naming the object (`apply Secret/drone in drone`).
        call: String,
        /// The API's answer.
        detail: String,
    },
    /// A rollout did not finish in time.
    #[error("`Deployment/{name}` in `{namespace}` did not finish rolling out within {}: {state}", crate::edges::output::human_duration(*.after))]
    RolloutTimeout {
        /// Namespace.
        namespace: String,
        /// Deployment.
        name: String,
        /// The bound.
        after: Duration,
        /// Last seen replica counts.
        state: String,
    },
}

impl Diagnostic for WorkloadError {
    fn hints(&self) -> Vec<String> {
        match self {
            WorkloadError::Api { .. } => Vec::new(),
            WorkloadError::RolloutTimeout {
                namespace, name, ..
            } => vec![format!(
                "see why with `kubectl -n {namespace} describe deploy/{name}` and `kubectl -n {namespace} logs deploy/{name}`"
            )],
        }
    }
}

/// The Kubernetes operations wiring a CI server needs: keep a few keys of a Secret the CI's
/// Deployment reads, and restart that Deployment when they change. Tests replace it; the
/// implementation over kube-rs is [`cluster::KubeWorkloads`].
pub trait Workloads: Send + Sync {
    /// The data of Secret `name` in `namespace`; `None` when it does not exist.
    fn secret_data(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, Secret>>, WorkloadError>> + Send;

    /// Server-side apply these keys into the Secret with homelab's wiring field manager; other
    /// keys (owned by the apply engine) are left alone.
    fn apply_secret_data(
        &self,
        namespace: &str,
        name: &str,
        data: &BTreeMap<String, Secret>,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send;

    /// The annotations of the Deployment's pod template; `None` when it does not exist.
    fn pod_template_annotations(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, String>>, WorkloadError>> + Send;

    /// Set these pod-template annotations (which rolls the pods, as `kubectl rollout restart`
    /// does) and wait, at most `timeout`, until the new pods are available and the old ones
    /// gone.
    fn roll_deployment(
        &self,
        namespace: &str,
        name: &str,
        annotations: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send;
}

/// What wiring the CI did.
#[derive(Clone, Debug, Serialize)]
pub struct CiReport {
    /// Which CI.
    pub ci: CiKind,
    /// Every step, in order.
    pub steps: Vec<StepReport>,
}

impl CiReport {
    /// Steps that wrote something.
    pub fn writes(&self) -> usize {
        crate::edges::output::steps::writes(&self.steps)
    }
}

/// The Gitea admin login the CI is wired for (it logs in to the CI, owns the repositories and
/// pushes images).
#[derive(Clone, Debug)]
pub struct AdminLogin {
    /// Login name.
    pub user: String,
    /// Password.
    pub password: Secret,
}

/// How long the wiring waits.
#[derive(Clone, Debug)]
pub struct WireTimeouts {
    /// For the CI server's Deployment to roll out after a configuration change.
    pub rollout: Duration,
    /// For the CI server to answer through the ingress.
    pub ready: Duration,
}

impl Default for WireTimeouts {
    fn default() -> Self {
        WireTimeouts {
            rollout: Duration::from_secs(300),
            ready: Duration::from_secs(120),
        }
    }
}

/// Everything [`wire`] needs; `up` builds it after Gitea is wired.
pub struct CiWiring<'a> {
    /// Which CI.
    pub kind: CiKind,
    /// The CI server's public endpoint (`https://drone.<domain>`, lab CA).
    pub ci: Endpoint,
    /// Gitea's public endpoint.
    pub gitea: crate::edges::http::Endpoint,
    /// The Gitea admin.
    pub admin: AdminLogin,
    /// homelab's Gitea API token (`gitea_token` in the lab state; needs `write:user` for OAuth
    /// apps).
    pub gitea_token: Secret,
    /// The organisation holding the lab's repositories (`lab`).
    pub org: String,
    /// The app repository the CI builds (`nyan-cat`).
    pub app_repo: String,
    /// The GitOps repository the pipeline pushes to (`gitops`).
    pub gitops_repo: String,
    /// The branch that deploys (`main`).
    pub branch: String,
    /// Namespace of the CI server's Deployment and Secret (the stack's `drone` component).
    pub namespace: String,
    /// Lab state: credentials are stored in its secrets, a non-secret record next to them.
    pub state: &'a LabState,
    /// Bounds on the waits.
    pub timeouts: WireTimeouts,
}

/// Wire the CI server (see the module doc of the CI's own module for the steps). A second run
/// on a wired lab only reads.
pub async fn wire<W: Workloads>(
    w: &CiWiring<'_>,
    workloads: &W,
    progress: &dyn Progress,
) -> Result<CiReport, crate::edges::error::Error> {
    match w.kind {
        CiKind::Drone => Ok(drone::wire(w, workloads, progress).await?),
    }
}

/// The client verify uses for the CI of this lab, with the API token the wiring stored.
pub fn client_from_state(
    kind: CiKind,
    endpoint: &Endpoint,
    state: &LabState,
) -> Result<Ci, crate::edges::error::Error> {
    match kind {
        CiKind::Drone => Ok(Ci::Drone(drone::client_from_state(endpoint, state)?)),
    }
}

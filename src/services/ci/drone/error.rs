//! How wiring Drone fails: each error names what it was doing and carries hints.
//!
//! Architecture invariant: pure data and messages; the errors of the clients it calls (Drone,
//! Gitea, the login, Kubernetes, the lab state) pass through with their own hints.

use std::time::Duration;

use super::DroneError;
use super::login::DroneLoginError;
use crate::edges::error::Diagnostic;
use crate::edges::state::StateError;
use crate::services::ci::WorkloadError;
use crate::services::gitea::GiteaError;

/// Wiring Drone failed.
#[derive(Debug, thiserror::Error)]
pub enum DroneWireError {
    /// A Drone call failed.
    #[error(transparent)]
    Drone(#[from] DroneError),
    /// A Gitea call failed.
    #[error(transparent)]
    Gitea(#[from] GiteaError),
    /// The login failed.
    #[error(transparent)]
    Login(#[from] DroneLoginError),
    /// Kubernetes failed.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// Lab state I/O failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A base URL is unusable.
    #[error("prepare the Drone wiring: {0}")]
    Setup(String),
    /// Gitea answered a create/update without the secret it returns only then.
    #[error("{call}: Gitea's answer holds no secret value")]
    NoSecretValue {
        /// The call.
        call: String,
    },
    /// An object the `drone` component creates is missing.
    #[error("`{kind}/{name}` in `{namespace}` does not exist")]
    MissingObject {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
        /// Namespace.
        namespace: String,
    },
    /// Drone did not answer in time.
    #[error("Drone at {url} did not answer `/healthz` within {}: {last}", crate::edges::output::human_duration(*.after))]
    NotReady {
        /// Base URL.
        url: String,
        /// The bound.
        after: Duration,
        /// The last error.
        last: String,
    },
    /// The repository is not in Drone after a sync.
    #[error("Drone's repository sync did not bring `{repo}`; it knows {}", known(.seen))]
    NotSynced {
        /// owner/name.
        repo: String,
        /// What the sync returned.
        seen: Vec<String>,
    },
    /// The login ended as another user.
    #[error("the Drone login ended as `{got}`, not as the Gitea admin `{expected}`")]
    WrongUser {
        /// The admin.
        expected: String,
        /// Who Drone says.
        got: String,
    },
    /// Drone kept the repository untrusted after the PATCH: the caller is no Drone admin.
    #[error(
        "Drone kept `{repo}` untrusted: it applies `trusted` only for a Drone administrator, and `{user}` is {}",
        if *.admin { "one, yet the answer still says `trusted: false`" } else { "not one" }
    )]
    NotTrusted {
        /// owner/name.
        repo: String,
        /// Who the API token belongs to.
        user: String,
        /// Whether Drone says that user is an administrator.
        admin: bool,
    },
    /// The branch to build does not exist in Gitea.
    #[error("`{repo}` has no branch `{branch}` in Gitea, so Drone has nothing to build")]
    NoBranch {
        /// owner/name.
        repo: String,
        /// Branch.
        branch: String,
    },
    /// Drone created no build.
    #[error(
        "Drone started no build of `{repo}` on `{branch}`: no pipeline in its `.drone.yml` accepts the `custom` event of a build started through the API"
    )]
    FirstBuildSkipped {
        /// owner/name.
        repo: String,
        /// Branch.
        branch: String,
    },
}

fn known(seen: &[String]) -> String {
    if seen.is_empty() {
        "no repository".into()
    } else {
        seen.iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Diagnostic for DroneWireError {
    fn hints(&self) -> Vec<String> {
        match self {
            DroneWireError::Drone(e) => e.hints(),
            DroneWireError::Gitea(e) => e.hints(),
            DroneWireError::Login(e) => e.hints(),
            DroneWireError::Workload(e) => e.hints(),
            DroneWireError::State(e) => e.hints(),
            DroneWireError::MissingObject { .. } => vec![
                "the `drone` component must be applied before it is wired: run `homelab up`".into(),
            ],
            DroneWireError::NotReady { .. } => vec![
                "see why with `kubectl -n drone get pods` and `kubectl -n drone logs deploy/drone`".into(),
            ],
            DroneWireError::NotSynced { .. } => vec![
                "Drone lists the repositories its Gitea OAuth token can see: check that the Gitea admin owns the `lab` organisation's repositories".into(),
            ],
            DroneWireError::NotTrusted { user, admin: false, .. } => vec![
                format!("Drone makes `{user}` an administrator from `DRONE_USER_CREATE` (`admin:true`) in `Deployment/drone`: check it with `kubectl -n drone get deploy drone -o yaml`, then run `homelab up` again"),
                "without trust, drone-runner-kube refuses the pipeline's ConfigMap volume (the lab CA) and every build ends in `error`".into(),
            ],
            DroneWireError::NotTrusted { .. } => vec![
                "look at Drone's log: `kubectl -n drone logs deploy/drone`".into(),
            ],
            DroneWireError::NoBranch { .. } => vec![
                "`homelab up` seeds the branch when it wires Gitea: run it again, or push the branch yourself".into(),
            ],
            DroneWireError::FirstBuildSkipped { .. } => vec![
                "add `custom` to `trigger.event` in the pipeline file (it stays loop-safe: only `homelab up` and Drone's \"New build\" button make such events)".into(),
            ],
            _ => Vec::new(),
        }
    }
}

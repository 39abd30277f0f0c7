//! Every step of `up`, by kind: the lab's material ([`material`]: `secrets`, `ca`,
//! `cloud-init`), the providers' steps ([`multipass`], [`existing`]), the lab itself ([`lab`]:
//! `prepare`, `render`, `deploy`) and what runs on it ([`wire`]: `wire-gitea`, `wire-ci`,
//! `verify`). Each step's one name is a constant here; [`crate::up::graph_for`] puts them in order.
//!
//! Architecture invariant: a step is a function from the outputs of the steps it needs to its
//! report and its own output; it calls library services and provider operations, which never
//! call back into `up`.

use crate::provider::Cluster;
use crate::provider::multipass::sideload::EngineImage;

pub mod existing;
pub mod lab;
pub mod material;
pub mod multipass;
pub mod wire;

/// Generate or reuse the lab's secrets.
pub const SECRETS: &str = "secrets";
/// Create or reuse the lab CA.
pub const CA: &str = "ca";
/// Render the VMs' cloud-init (multipass).
pub const CLOUD_INIT: &str = "cloud-init";
/// Launch, start or reuse the lab's VMs (multipass).
pub const VMS: &str = "vms";
/// Wait for cloud-init (multipass).
pub const PROVISIONED: &str = "provisioned";
/// Join the VMs into one cluster (multipass).
pub const JOIN: &str = "join";
/// Write the lab's kube context (multipass).
pub const KUBECONFIG: &str = "kubeconfig";
/// Side-load the sync engine's image (multipass).
pub const ENGINE_IMAGE: &str = "engine-image";
/// The name of every provider's last step: after it, the cluster answers and can take the
/// lab. Later steps that talk to the cluster need this one.
pub const CLUSTER_READY: &str = "ready";
/// The lab's hostnames in the VMs' `/etc/hosts` (multipass).
pub const NODE_NAMES: &str = "node-names";
/// Fetch the stack's pinned upstream manifests.
pub const PREPARE: &str = "prepare";
/// Render the stack for the lab's domain.
pub const RENDER: &str = "render";
/// Apply the stack and wait until it is ready.
pub const DEPLOY: &str = "deploy";
/// Wire Gitea.
pub const WIRE_GITEA: &str = "wire-gitea";
/// Wire the CI server.
pub const WIRE_CI: &str = "wire-ci";
/// Prove the loop.
pub const VERIFY: &str = "verify";

/// What every provider's `ready` step hands on: the cluster, answering.
#[derive(Clone, Debug)]
pub struct ClusterReady {
    /// The cluster.
    pub cluster: Cluster,
    /// The engine image side-loaded into its nodes, which `render` uses instead of the stack's
    /// pin (multipass labs on a matching Linux host).
    pub engine_image: Option<EngineImage>,
}

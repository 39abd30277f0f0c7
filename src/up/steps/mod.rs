//! Every step of `up`, by kind: the lab's material ([`material`]: `secrets`, `ca`,
//! `cloud-init`), the providers' steps ([`multipass`], [`existing`]), the lab itself ([`lab`]:
//! `prepare`, `render`, `deploy`; [`images`]: the cached images side-loaded before `deploy`) and what runs on it ([`wire`]: `wire-gitea`, `wire-ci`,
//! `verify`). Each step's one name is a constant here; [`crate::up::graph_for`] puts them in order.
//!
//! Architecture invariant: a step is a function from the outputs of the steps it needs to its
//! report and its own output; it calls library services and provider operations, which never
//! call back into `up`.

use crate::provider::Cluster;
use crate::provider::multipass::sideload::EngineImage;

pub mod existing;
pub mod images;
pub mod lab;
pub mod material;
pub mod multipass;
pub mod wire;

pub use crate::model::plan::step::{
    CA, CLOUD_INIT, CLUSTER_READY, DEPLOY, ENGINE_IMAGE, IMAGES, JOIN, KUBECONFIG, NODE_NAMES,
    PREPARE, PROVISIONED, RENDER, SECRETS, SNAPSHOT, VERIFY, VMS, WIRE_CI, WIRE_GITEA,
};

/// What every provider's `ready` step hands on: the cluster, answering.
#[derive(Clone, Debug)]
pub struct ClusterReady {
    /// The cluster.
    pub cluster: Cluster,
    /// The engine image side-loaded into its nodes, which `render` uses instead of the stack's
    /// pin (multipass labs on a matching Linux host).
    pub engine_image: Option<EngineImage>,
}

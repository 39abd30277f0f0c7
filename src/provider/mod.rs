//! Providers: where the lab's cluster comes from. `multipass` builds VMs running microk8s;
//! `existing` takes a cluster from the user's kubeconfig. Both end in a [`Cluster`] that later
//! steps (deploy, wire, verify) use to talk to Kubernetes.
//!
//! Architecture invariant: one seam. The rest of homelab never asks which provider built the
//! cluster; it asks for a [`Cluster`] (from the `up` pipeline's outputs, or [`LabRecord`] in the
//! lab state) and calls [`Cluster::client`]. Provider-specific work happens only in the
//! provider's own module. Layers only look down: providers expose plain operations over an
//! [`op::OpCx`] and never import `up`, whose steps call them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::edges::error::{Diagnostic, Error};
use crate::edges::state::{LabState, StateError};
use crate::model::settings::{ProviderKind, Settings};

pub mod existing;
pub mod multipass;
pub mod op;

/// File in the lab state describing the cluster: provider, context, nodes, VM sizes.
pub const LAB_RECORD_FILE: &str = "cluster.json";
/// File in the lab state holding the lab's own kubeconfig (multipass labs; 0600).
pub const KUBECONFIG_FILE: &str = "kubeconfig";

/// What the lab state remembers about the cluster, for later runs, `status` and `down`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabRecord {
    /// The provider that built it.
    pub provider: ProviderKind,
    /// The kube context later steps use.
    pub context: String,
    /// VM count and size the lab was built with (multipass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<multipass::LabSpec>,
    /// The VMs and their addresses at the last run (multipass).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<multipass::NodeRecord>,
}

impl LabRecord {
    /// The record in the lab state, if any.
    pub fn load(state: &LabState) -> Result<Option<LabRecord>, StateError> {
        state.read_json(LAB_RECORD_FILE)
    }

    /// The cluster as the last `up` left it, for read-only commands (`status`): the lab's own
    /// kubeconfig for multipass labs, the user's for existing clusters.
    pub fn cluster(&self, state: &LabState) -> Cluster {
        Cluster {
            provider: self.provider,
            context: self.context.clone(),
            kubeconfig: match self.provider {
                ProviderKind::Multipass => Some(state.path(KUBECONFIG_FILE)),
                ProviderKind::Existing => None,
            },
            server: String::new(),
            node_ips: self.nodes.iter().map(|n| n.ip.clone()).collect(),
        }
    }

    /// Write it when it differs from what is stored (re-runs stay write-free).
    pub fn store(&self, state: &LabState) -> Result<bool, StateError> {
        if LabRecord::load(state)?.as_ref() == Some(self) {
            return Ok(false);
        }
        state.write_json(LAB_RECORD_FILE, self)?;
        Ok(true)
    }
}

/// The cluster a lab runs on, as later steps need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cluster {
    /// Who built it.
    pub provider: ProviderKind,
    /// Kube context to use.
    pub context: String,
    /// Kubeconfig file holding that context; `None`: the user's (`KUBECONFIG` or
    /// `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// API server URL.
    pub server: String,
    /// Node addresses (multipass VMs); empty for existing clusters.
    pub node_ips: Vec<String>,
}

/// The cluster could not be reached through its kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig could not be loaded for this context.
    #[error("cannot use kube context `{context}`: {message}")]
    Config {
        /// Context.
        context: String,
        /// Why.
        message: String,
    },
}

impl Diagnostic for ClusterError {
    fn hints(&self) -> Vec<String> {
        match self {
            ClusterError::Config { .. } => vec![
                "list the contexts you have with `kubectl config get-contexts`, and pass one with `--context`".into(),
            ],
        }
    }
}

impl Cluster {
    /// A Kubernetes client for this cluster (no client-side throttling; watches not cut).
    pub async fn client(&self) -> Result<kube::Client, crate::cluster::kube::KubeError> {
        crate::cluster::kube::connect(
            &crate::cluster::kube::KubeTarget {
                kubeconfig: self.kubeconfig.clone(),
                context: Some(self.context.clone()),
            },
            &crate::cluster::kube::ClientOptions::default(),
        )
        .await
    }
}

/// Refuse to build a lab with another provider than the one it already runs on.
pub fn check_provider_switch(settings: &Settings, record: Option<&LabRecord>) -> Result<(), Error> {
    match record {
        Some(r) if r.provider != settings.provider => Err(Error::msg(format!(
            "lab `{}` runs on provider `{}`, not `{}`",
            settings.lab, r.provider, settings.provider
        ))
        .hint(format!(
            "remove it first with `homelab down --lab {}`, or pick another lab name with `--lab`",
            settings.lab
        ))),
        _ => Ok(()),
    }
}

//! The multipass provider: the lab's VMs (`homelab-<lab>-1..N`) running microk8s, installed by
//! cloud-init from a pinned channel, joined into one cluster, with a kubeconfig for the host.
//!
//! Data flow (each an operation `up`'s steps call): [`CloudInit`] (rendered by `up`) →
//! [`ops::vms`] (launch/start/recover/reuse) → [`ops::provisioned`] (cloud-init's completion
//! marker, or [`cloud_init`]'s verdict that it will never come) → [`ops::join`] →
//! [`ops::kubeconfig`] → [`sideload::engine_image`] → [`ops::ready`], and [`hosts::node_names`]
//! (the lab's hostnames in the VMs' `/etc/hosts`), [`cached_images::side_load`] (the cached
//! images, once `render` knows which the lab runs), [`snapshot::ensure`] (`up`'s last step, for
//! `reset`'s [`snapshot::restore`]), then `down` ([`teardown`]) and `status` ([`observe_vms`],
//! [`observe_cluster`]).
//!
//! Architecture invariant: a pure core and one effectful shell. [`json`] reads what Multipass
//! and microk8s print, [`decide`] chooses what to do; only [`cli::Multipass`] runs `multipass`,
//! and only [`ops`] sequences the calls. The operations know nothing of `up`: they get an
//! [`OpCx`](crate::provider::op::OpCx) and what they work on, and return what they made. Every fact about Multipass comes from
//! `contracts/multipass/` and NOTES §1–2.

use serde::Serialize;

use crate::edges::error::Diagnostic;
use crate::edges::output::human_duration;

pub mod cached_images;
pub mod cli;
pub mod cloud_init;
pub mod decide;
pub mod diagnose;
pub mod hosts;
pub mod json;
pub mod ops;
pub mod sideload;
pub mod snaps;
pub mod snapshot;

pub use cli::{Multipass, MultipassError};
pub use decide::{LabSpec, NodeRecord, VmSpec, vm_name};
pub use json::NodeView;
pub use ops::Vms;

/// The file cloud-init writes last (`templates/cloud-init/user-data.yaml`): microk8s is installed.
pub const PROVISIONED_MARKER: &str = "/var/lib/homelab/provisioned";

/// The file the same script writes instead when a step fails: which step.
pub const FAILED_MARKER: &str = "/var/lib/homelab/failed";

/// File in the lab state holding the cloud-init the VMs were last launched with.
pub const CLOUD_INIT_FILE: &str = "cloud-init.yaml";

/// The cloud-init user-data every lab VM is launched with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudInit(pub String);

/// The lab's VMs or cluster did not get where `up` needs them.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A state homelab does not repair by itself.
    #[error("VM `{name}` is in state {state}, which homelab cannot fix by itself")]
    Unusable {
        /// VM.
        name: String,
        /// Its state.
        state: String,
    },
    /// The VM did not reach Running with an address.
    #[error("VM `{name}` did not come up within {limit}: it is {state}")]
    NotRunning {
        /// VM.
        name: String,
        /// Its last state.
        state: String,
        /// The wait.
        limit: String,
    },
    /// cloud-init's completion marker did not appear.
    #[error("cloud-init did not finish on VM `{name}` within {limit}")]
    NotProvisioned {
        /// VM.
        name: String,
        /// The wait.
        limit: String,
    },
    /// The provisioning script gave up and said which step failed.
    #[error("provisioning VM `{name}` failed: {step}")]
    ProvisioningFailed {
        /// VM.
        name: String,
        /// What the script wrote into its failure marker.
        step: String,
    },
    /// cloud-init ended without homelab's provisioning finishing (it failed before the script
    /// ran, or is disabled): the completion marker will never come.
    #[error(
        "cloud-init on VM `{name}` ended ({status}) before homelab's provisioning finished: {said}"
    )]
    CloudInitEnded {
        /// VM.
        name: String,
        /// cloud-init's `extended_status` (`error - done`, `degraded done`, `disabled`).
        status: String,
        /// Its errors, or what else it said.
        said: String,
    },
    /// The API never answered.
    #[error("the Kubernetes API on `{node}` did not answer within {limit}: {last}")]
    ApiNotAnswering {
        /// First VM.
        node: String,
        /// The wait.
        limit: String,
        /// The last error seen.
        last: String,
    },
    /// Not every node became Ready.
    #[error("the cluster was not ready within {limit}: {seen}")]
    NotReady {
        /// First VM.
        node: String,
        /// The wait.
        limit: String,
        /// What was seen last.
        seen: String,
    },
}

impl Diagnostic for ProvisionError {
    fn hints(&self) -> Vec<String> {
        match self {
            ProvisionError::Unusable { name, .. } | ProvisionError::NotRunning { name, .. } => {
                vec![
                    format!("`multipass info {name}` and `multipass start {name}` show what is wrong"),
                    "`homelab up --recreate` rebuilds the lab's VMs (everything inside them is lost)".into(),
                ]
            }
            ProvisionError::NotProvisioned { name, .. } => vec![
                format!(
                    "see what cloud-init is doing: `multipass exec {name} -- cloud-init status --long`"
                ),
                format!(
                    "and its log: `multipass exec {name} -- sudo tail -n 50 /var/log/cloud-init-output.log`"
                ),
                "run `homelab up` again to keep waiting".into(),
            ],
            ProvisionError::ProvisioningFailed { name, .. } => vec![
                format!(
                    "its log says why: `multipass exec {name} -- sudo tail -n 50 /var/log/cloud-init-output.log`"
                ),
                "cloud-init runs once per VM: after fixing the cause (often the network during `snap install`), `homelab up --recreate` builds the lab's VMs again".into(),
            ],
            ProvisionError::CloudInitEnded { name, .. } => vec![
                format!(
                    "cloud-init's own account: `multipass exec {name} -- cloud-init status --long`, and its log: `multipass exec {name} -- sudo tail -n 50 /var/log/cloud-init.log`"
                ),
                "cloud-init runs once per VM: after fixing the cause, `homelab up --recreate` builds the lab's VMs again".into(),
            ],
            ProvisionError::ApiNotAnswering { node, .. }
            | ProvisionError::NotReady { node, .. } => {
                vec![
                    format!("look deeper with `multipass exec {node} -- sudo microk8s inspect`"),
                    "run `homelab up` again to keep waiting".into(),
                ]
            }
        }
    }
}

fn limit(d: std::time::Duration) -> String {
    human_duration(d)
}

/// One VM as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct VmView {
    /// Instance name.
    pub name: String,
    /// State.
    pub state: String,
    /// Primary IPv4.
    pub ip: Option<String>,
    /// CPUs.
    pub cpus: Option<u32>,
    /// Memory in use, bytes.
    pub memory_used: Option<u64>,
    /// Memory seen by the guest, bytes.
    pub memory_total: Option<u64>,
}

/// The lab's VMs (deleted-not-purged ones too), first node first.
pub async fn observe_vms(mp: &Multipass, lab: &str) -> Result<Vec<VmView>, MultipassError> {
    let info = mp.info().await?;
    Ok(decide::lab_instances(lab, &info)
        .into_values()
        .map(|i| VmView {
            name: i.name.clone(),
            state: i.state.to_string(),
            ip: i.ip().map(str::to_string),
            cpus: i.cpus,
            memory_used: i.memory_used,
            memory_total: i.memory_total,
        })
        .collect())
}

/// The cluster as seen from inside the first VM.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterView {
    /// The API answered.
    pub reachable: bool,
    /// What was seen, one line.
    pub detail: String,
    /// Nodes Kubernetes lists.
    pub nodes: Vec<NodeView>,
}

/// Ask the API, from inside `first` (so it works whatever the host's network does).
pub async fn observe_cluster(mp: &Multipass, first: &str) -> Result<ClusterView, MultipassError> {
    match ops::get_nodes(mp, first).await? {
        Ok(nodes) => {
            let ready = nodes.iter().filter(|n| n.ready).count();
            Ok(ClusterView {
                reachable: true,
                detail: format!("{ready} of {} nodes Ready", nodes.len()),
                nodes,
            })
        }
        Err(why) => Ok(ClusterView {
            reachable: false,
            detail: why,
            nodes: Vec::new(),
        }),
    }
}

/// Delete and purge every VM of `lab` (and any recorded name still present). Returns the names.
pub async fn teardown(
    mp: &Multipass,
    lab: &str,
    recorded: &[NodeRecord],
) -> Result<Vec<String>, MultipassError> {
    let info = mp.info().await?;
    let mut names: Vec<String> = decide::lab_instances(lab, &info)
        .into_values()
        .map(|i| i.name.clone())
        .collect();
    for r in recorded {
        if info.contains_key(&r.name) && !names.contains(&r.name) {
            names.push(r.name.clone());
        }
    }
    if !names.is_empty() {
        mp.delete_purge(&names).await?;
    }
    Ok(names)
}

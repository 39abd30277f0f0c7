//! The `existing` provider: a cluster the user already has, from their kubeconfig
//! (`--provider existing [--context NAME]`, else the current context). [`ready`] (behind `up`'s
//! `ready` step) checks it can be reached, which Kubernetes it runs and that it has a default StorageClass, and says
//! once what homelab will and won't manage there.
//!
//! Architecture invariant: read-only towards the cluster. This module only reads (`/version`,
//! StorageClasses, Nodes); what to conclude from them ([`evaluate`], [`node_address`]) is pure.
//! It never creates, changes or deletes anything of the cluster itself; `down` removes only the
//! lab's own objects.
//!
//! The nodes' addresses are recorded like the multipass VMs': the stack's ingress listens on
//! every node (hostPort 443), so the first node's address is where the lab's URLs connect and
//! what the ingress publishes as the Ingresses' status (without it, Argo-style health never
//! calls an Ingress Healthy); without `--domain` the lab is `<node-address>.sslip.io`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::multipass::{NodeRecord, NodeView};
use super::op::{OpCx, StepReport};
use super::{Cluster, ClusterError, LabRecord};
use crate::edges::error::{Diagnostic, Result};
use crate::model::settings::{ProviderKind, Settings};
use crate::model::stack::Stack;

/// The annotation that marks the default StorageClass (and its old beta spelling).
const DEFAULT_CLASS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// How long one look at the cluster may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The existing cluster cannot take the lab.
#[derive(Debug, thiserror::Error)]
pub enum ExistingError {
    /// No context given and none current.
    #[error("no kube context to use: your kubeconfig has no current context")]
    NoContext,
    /// The kubeconfig does not have the context.
    #[error(transparent)]
    Config(#[from] ClusterError),
    /// No client could be built from the kubeconfig.
    #[error(transparent)]
    Client(#[from] crate::cluster::kube::KubeError),
    /// The API did not answer.
    #[error("the cluster of context `{context}` ({server}) is not reachable: {message}")]
    Unreachable {
        /// Context.
        context: String,
        /// API server.
        server: String,
        /// What failed.
        message: String,
    },
    /// PVCs would stay Pending forever.
    #[error("the cluster of context `{context}` has no default StorageClass{}", classes_note(.classes))]
    NoDefaultStorageClass {
        /// Context.
        context: String,
        /// The classes it has.
        classes: Vec<String>,
    },
}

fn classes_note(classes: &[String]) -> String {
    if classes.is_empty() {
        " and no StorageClass at all".into()
    } else {
        format!(
            " (it has {})",
            classes
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl Diagnostic for ExistingError {
    fn hints(&self) -> Vec<String> {
        match self {
            ExistingError::NoContext => vec![
                "pass one with `--context NAME` (`kubectl config get-contexts` lists them)".into(),
            ],
            ExistingError::Config(e) => e.hints(),
            ExistingError::Client(e) => e.hints(),
            ExistingError::Unreachable { context, .. } => vec![format!(
                "check that `kubectl --context {context} version` works from this machine"
            )],
            ExistingError::NoDefaultStorageClass { classes, .. } => match classes.first() {
                Some(c) => vec![format!(
                    "the lab's volumes need one; mark a class as default: `kubectl patch storageclass {c} -p '{{\"metadata\":{{\"annotations\":{{\"storageclass.kubernetes.io/is-default-class\":\"true\"}}}}}}'`"
                )],
                None => vec![
                    "the lab's volumes need one; install a provisioner (e.g. local-path-provisioner) and mark its class as default".into(),
                ],
            },
        }
    }
}

/// What a look at the cluster found.
#[derive(Clone, Debug, Serialize)]
pub struct Facts {
    /// `gitVersion`, e.g. `v1.36.1`.
    pub version: String,
    /// Server minor version.
    pub minor: Option<u32>,
    /// Every StorageClass and whether it is the default.
    pub storage_classes: Vec<(String, bool)>,
}

/// What [`evaluate`] concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The default StorageClass.
    pub default_class: String,
    /// Worth a warning.
    pub warnings: Vec<String>,
}

/// Judge the facts against the stack (pure).
pub fn evaluate(context: &str, facts: &Facts, stack: &Stack) -> Result<Verdict, ExistingError> {
    let defaults: Vec<&String> = facts
        .storage_classes
        .iter()
        .filter(|(_, d)| *d)
        .map(|(n, _)| n)
        .collect();
    let Some(default_class) = defaults.first() else {
        return Err(ExistingError::NoDefaultStorageClass {
            context: context.to_string(),
            classes: facts
                .storage_classes
                .iter()
                .map(|(n, _)| n.clone())
                .collect(),
        });
    };
    let mut warnings = Vec::new();
    if defaults.len() > 1 {
        warnings.push(format!(
            "context `{context}` has {} default StorageClasses; Kubernetes picks the newest one for the lab's volumes",
            defaults.len()
        ));
    }
    let target: Option<u32> = stack
        .cluster
        .kubernetes
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok());
    if let (Some(want), Some(have)) = (target, facts.minor)
        && want.abs_diff(have) > 1
    {
        warnings.push(format!(
            "context `{context}` runs Kubernetes {}, the stack's manifests are written for {}; objects may be refused or behave differently",
            facts.version, stack.cluster.kubernetes
        ));
    }
    Ok(Verdict {
        default_class: (*default_class).clone(),
        warnings,
    })
}

/// The context to use: `--context`, else the kubeconfig's current one; with its server.
pub fn resolve(settings: &Settings) -> Result<Cluster, ExistingError> {
    let kc = kube::config::Kubeconfig::read().map_err(|e| ClusterError::Config {
        context: settings.context.clone().unwrap_or_default(),
        message: e.to_string(),
    })?;
    let context = match &settings.context {
        Some(c) => c.clone(),
        None => kc
            .current_context
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or(ExistingError::NoContext)?,
    };
    let named = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .ok_or_else(|| ClusterError::Config {
            context: context.clone(),
            message: "your kubeconfig has no such context".into(),
        })?;
    let server = named
        .context
        .as_ref()
        .and_then(|c| kc.clusters.iter().find(|cl| cl.name == c.cluster))
        .and_then(|cl| cl.cluster.as_ref())
        .and_then(|cl| cl.server.clone())
        .unwrap_or_default();
    Ok(Cluster {
        provider: ProviderKind::Existing,
        context,
        kubeconfig: None,
        server,
        node_ips: Vec::new(),
    })
}

/// Read `/version` and the StorageClasses.
pub async fn look(cluster: &Cluster) -> Result<Facts, ExistingError> {
    let client = cluster.client().await?;
    let unreachable = |message: String| ExistingError::Unreachable {
        context: cluster.context.clone(),
        server: cluster.server.clone(),
        message,
    };
    let version = tokio::time::timeout(TIMEOUT, client.apiserver_version())
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
    let classes: Api<StorageClass> = Api::all(client);
    let list = tokio::time::timeout(TIMEOUT, classes.list(&ListParams::default()))
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(format!("listing StorageClasses: {e}")))?;
    let storage_classes = list
        .items
        .iter()
        .map(|sc| {
            let default = sc.metadata.annotations.as_ref().is_some_and(|a| {
                DEFAULT_CLASS
                    .iter()
                    .any(|k| a.get(*k).map(String::as_str) == Some("true"))
            });
            (sc.metadata.name.clone().unwrap_or_default(), default)
        })
        .collect();
    Ok(Facts {
        minor: version.minor.trim_end_matches('+').parse().ok(),
        version: version.git_version,
        storage_classes,
    })
}

/// The cluster's nodes, as `status` shows them.
pub async fn nodes(cluster: &Cluster) -> Result<Vec<NodeView>, ExistingError> {
    Ok(list_nodes(cluster).await?.iter().map(node_view).collect())
}

/// The nodes that have an address, Ready ones first, each by name: where the ingress listens.
pub async fn node_records(cluster: &Cluster) -> Result<Vec<NodeRecord>, ExistingError> {
    let mut nodes: Vec<(bool, NodeRecord)> = list_nodes(cluster)
        .await?
        .iter()
        .filter_map(|n| {
            let ready = node_view(n).ready;
            Some((
                !ready,
                NodeRecord {
                    name: n.metadata.name.clone()?,
                    ip: node_address(n)?,
                },
            ))
        })
        .collect();
    nodes.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    Ok(nodes.into_iter().map(|(_, r)| r).collect())
}

/// The address a laptop reaches a node at: its `ExternalIP` when it has one (cloud nodes), else
/// its `InternalIP` (kind, k3d, microk8s, a VM on this machine).
pub fn node_address(n: &Node) -> Option<String> {
    let addresses = n.status.as_ref()?.addresses.as_ref()?;
    ["ExternalIP", "InternalIP"].iter().find_map(|t| {
        addresses
            .iter()
            .find(|a| a.type_ == *t)
            .map(|a| a.address.clone())
    })
}

async fn list_nodes(cluster: &Cluster) -> Result<Vec<Node>, ExistingError> {
    let client = cluster.client().await?;
    let api: Api<Node> = Api::all(client);
    let list = tokio::time::timeout(TIMEOUT, api.list(&ListParams::default()))
        .await
        .map_err(|_| ExistingError::Unreachable {
            context: cluster.context.clone(),
            server: cluster.server.clone(),
            message: format!("no answer within {} s", TIMEOUT.as_secs()),
        })?
        .map_err(|e| ExistingError::Unreachable {
            context: cluster.context.clone(),
            server: cluster.server.clone(),
            message: e.to_string(),
        })?;
    Ok(list.items)
}

fn node_view(n: &Node) -> NodeView {
    let status = n.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let is_ready = ready.is_some_and(|c| c.status == "True");
    NodeView {
        name: n.metadata.name.clone().unwrap_or_default(),
        ready: is_ready,
        why_not: (!is_ready).then(|| match ready {
            None => "no Ready condition yet".to_string(),
            Some(c) => format!(
                "Ready={}{}",
                c.status,
                c.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        }),
        version: status
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.kubelet_version.clone()),
        internal_ip: status
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|x| x.type_ == "InternalIP"))
            .map(|x| x.address.clone()),
    }
}

/// What homelab takes care of in a cluster it did not build, and what it leaves alone.
pub fn management_note(context: &str, lab: &str, stack: &Stack) -> String {
    let addons: Vec<String> = stack
        .components
        .iter()
        .filter(|c| c.is_addon())
        .map(|c| format!("`{}`", c.name))
        .collect();
    let mut note = format!(
        "homelab will manage, in context `{context}`: the lab's namespaces and everything in them, and the cluster-wide objects the stack installs (CRDs, ClusterIssuer, IngressClass), all labelled `homelab.dev/lab={lab}`.\nIt will not manage the cluster itself: its nodes, Kubernetes version, StorageClasses, DNS and network; `homelab down` leaves the cluster running."
    );
    if !addons.is_empty() {
        note.push_str(&format!(
            "\nThe stack's microk8s addons ({}) are expected to be provided by this cluster.",
            addons.join(", ")
        ));
    }
    note
}

/// Whether the cluster can take the lab: reachable, its version, a default StorageClass; its
/// nodes recorded in the lab state (said once, with what homelab will manage there).
pub async fn ready(cx: &dyn OpCx, stack: &Stack) -> Result<(StepReport, Cluster)> {
    let settings = cx.settings();
    let cluster = resolve(settings)?;
    cx.update(&format!(
        "asking `{}` ({})",
        cluster.context, cluster.server
    ));
    let facts = look(&cluster).await?;
    let verdict = evaluate(&cluster.context, &facts, stack)?;
    for w in &verdict.warnings {
        cx.warn(w);
    }
    let nodes = node_records(&cluster).await?;
    let mut cluster = cluster;
    cluster.node_ips = nodes.iter().map(|n| n.ip.clone()).collect();
    let record = LabRecord {
        provider: ProviderKind::Existing,
        context: cluster.context.clone(),
        spec: None,
        nodes,
    };
    let new = record.store(cx.state())?;
    if new {
        cx.note(&management_note(&cluster.context, &settings.lab, stack));
    }
    let detail = format!(
        "context `{}` ({}): Kubernetes {}, default StorageClass `{}`",
        cluster.context, cluster.server, facts.version, verdict.default_class
    );
    let report = if new {
        StepReport::done(detail)
    } else {
        StepReport::skipped(detail)
    };
    Ok((report, cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack() -> Stack {
        crate::model::stack::load("default", std::path::Path::new(".")).unwrap()
    }

    fn facts(minor: u32, classes: &[(&str, bool)]) -> Facts {
        Facts {
            version: format!("v1.{minor}.2"),
            minor: Some(minor),
            storage_classes: classes.iter().map(|(n, d)| (n.to_string(), *d)).collect(),
        }
    }

    #[test]
    fn a_default_storage_class_is_required() {
        let e = evaluate("kind-x", &facts(36, &[("slow", false)]), &stack()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the cluster of context `kind-x` has no default StorageClass (it has `slow`)"
        );
        assert!(e.hints()[0].contains("kubectl patch storageclass slow"));
        let e = evaluate("kind-x", &facts(36, &[]), &stack()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the cluster of context `kind-x` has no default StorageClass and no StorageClass at all"
        );
    }

    #[test]
    fn a_node_is_reached_at_its_external_address_else_its_internal_one() {
        let node = |addresses: serde_json::Value| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n1"},
                "status": {"addresses": addresses},
            }))
            .unwrap()
        };
        let both = node(serde_json::json!([
            {"type": "InternalIP", "address": "10.0.0.4"},
            {"type": "Hostname", "address": "n1"},
            {"type": "ExternalIP", "address": "203.0.113.7"},
        ]));
        assert_eq!(node_address(&both).as_deref(), Some("203.0.113.7"));
        let internal = node(serde_json::json!([{"type": "InternalIP", "address": "172.18.0.2"}]));
        assert_eq!(node_address(&internal).as_deref(), Some("172.18.0.2"));
        assert_eq!(node_address(&node(serde_json::json!([]))), None);
    }

    #[test]
    fn old_servers_and_several_defaults_warn() {
        let v = evaluate("c", &facts(36, &[("a", true)]), &stack()).unwrap();
        assert_eq!((v.default_class.as_str(), v.warnings.len()), ("a", 0));
        let v = evaluate("c", &facts(33, &[("a", true), ("b", true)]), &stack()).unwrap();
        assert_eq!(
            v.warnings,
            [
                "context `c` has 2 default StorageClasses; Kubernetes picks the newest one for the lab's volumes",
                "context `c` runs Kubernetes v1.33.2, the stack's manifests are written for 1.36; objects may be refused or behave differently",
            ]
        );
    }
}

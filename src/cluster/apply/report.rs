//! What the applier is told and tells back: its options, the per-object changes and reports
//! of apply and prune, and its errors with their hints.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::{FIELD_MANAGER, Resolved, wait};
use crate::edges::error::Diagnostic;
use crate::model::kinds::ObjectRef;

/// How to apply.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Field manager name.
    pub field_manager: String,
    /// Namespace for namespaced objects that name none.
    pub default_namespace: Option<String>,
    /// Objects applied at once.
    pub concurrency: usize,
    /// Labels an object must carry live for homelab to override another field manager's
    /// fields on it (the object is ours); otherwise a conflict is reported.
    pub ownership: BTreeMap<String, String>,
    /// Label selector to list live objects with, one LIST per kind (else one GET per object).
    pub live_selector: Option<String>,
    /// How long to wait for CRDs of the batch to be Established.
    pub crd_timeout: Duration,
    /// Take back fields another manager changed, whatever the object's labels: for callers that
    /// establish ownership by their own rule first (the sync engine, by Argo's tracking id).
    pub force_conflicts: bool,
    /// Until when a write refused because an admission webhook cannot be called yet is tried
    /// again (cert-manager's webhook before its CA is injected), and where that wait is noticed.
    /// `None`: such a refusal fails after the usual short retry.
    pub admission: Option<wait::AdmissionWait>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            field_manager: FIELD_MANAGER.into(),
            default_namespace: None,
            concurrency: 16,
            ownership: BTreeMap::new(),
            live_selector: None,
            crd_timeout: Duration::from_secs(60),
            force_conflicts: false,
            admission: None,
        }
    }
}

/// What happened to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// It did not exist.
    Created,
    /// It existed and was changed.
    Configured,
    /// It already matched; nothing was written.
    Unchanged,
}

/// One applied object.
#[derive(Clone, Debug)]
pub struct Applied {
    /// Identity (namespace filled in).
    pub object: ObjectRef,
    /// Kind as served.
    pub resolved: Resolved,
    /// What happened.
    pub change: Change,
    /// The live object after the apply (or as found).
    pub live: Value,
}

/// The result of applying a set.
#[derive(Clone, Debug, Default)]
pub struct ApplyReport {
    /// Per object, in apply order.
    pub objects: Vec<Applied>,
}

impl ApplyReport {
    /// How many objects had each outcome.
    pub fn count(&self, change: Change) -> usize {
        self.objects.iter().filter(|o| o.change == change).count()
    }

    /// True when nothing was written.
    pub fn unchanged(&self) -> bool {
        self.objects.iter().all(|o| o.change == Change::Unchanged)
    }
}

/// Applying failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A document is not YAML or not an object.
    #[error("`{origin}`: {message}")]
    Parse {
        /// File.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The server does not serve the kind, and no CRD in the batch defines it.
    #[error(
        "{object} in `{origin}` has kind `{kind}` of `{api_version}`, which the cluster does not serve"
    )]
    UnknownKind {
        /// The object.
        object: Box<ObjectRef>,
        /// Where it came from.
        origin: String,
        /// Its kind.
        kind: String,
        /// Its apiVersion.
        api_version: String,
    },
    /// A namespaced object names no namespace and there is no default.
    #[error("{object} in `{origin}` is namespaced but names no namespace")]
    NoNamespace {
        /// The object.
        object: Box<ObjectRef>,
        /// Where it came from.
        origin: String,
    },
    /// Another field manager owns fields homelab sets, on an object that is not homelab's.
    #[error("apply {object}: {message}")]
    Conflict {
        /// The object.
        object: Box<ObjectRef>,
        /// The server's conflict message (managers and fields).
        message: String,
    },
    /// The API server refused or failed an object.
    #[error("apply {object}: {message}")]
    Object {
        /// The object.
        object: Box<ObjectRef>,
        /// Where it came from.
        origin: String,
        /// The server's message.
        message: String,
        /// HTTP status, when the server answered.
        code: Option<u16>,
    },
    /// A CRD of the batch did not become Established.
    #[error("CRD `{name}` was not Established within {}s", .waited.as_secs())]
    CrdNotEstablished {
        /// The CRD.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// Discovery or listing failed.
    #[error("{action}: {message}")]
    Api {
        /// What was being done.
        action: String,
        /// The error.
        message: String,
    },
}

impl Diagnostic for ApplyError {
    fn hints(&self) -> Vec<String> {
        match self {
            ApplyError::UnknownKind { api_version, .. } => vec![format!(
                "check the apiVersion and kind (`kubectl api-resources` lists what the cluster serves); a custom resource needs its CRD in the same set or installed first (`{api_version}`)"
            )],
            ApplyError::NoNamespace { .. } => {
                vec!["set `metadata.namespace` on the object".into()]
            }
            ApplyError::Conflict { .. } => vec![
                "another tool manages these fields; homelab overrides fields only on objects labelled as its own. Remove the other manager's changes or delete the object so homelab can recreate it".into(),
            ],
            ApplyError::Object { code: Some(422), .. } => vec![
                "the server rejected the object as invalid; if it names an immutable field, delete the object and run again".into(),
            ],
            ApplyError::Object { code: None, .. } | ApplyError::Api { .. } => vec![
                "check that the cluster is reachable (`kubectl cluster-info`)".into(),
            ],
            _ => Vec::new(),
        }
    }
}

/// What prune may delete.
pub struct PruneScope<'a> {
    /// Label selector listing candidates (e.g. `homelab.dev/lab=workshop`).
    pub selector: &'a str,
    /// Whether an object listed with the selector belongs to the caller.
    pub owns: &'a (dyn Fn(&Value) -> bool + Send + Sync),
}

/// What prune did.
#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    /// Deleted objects.
    pub deleted: Vec<ObjectRef>,
    /// Objects left in place, with why.
    pub kept: Vec<(ObjectRef, String)>,
}

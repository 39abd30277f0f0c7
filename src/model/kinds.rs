//! Facts about Kubernetes kinds that several stages share: the order objects are applied in,
//! and object identity.
//!
//! Architecture invariant: pure data and functions over `serde_json::Value` objects.

use serde_json::Value;

/// Argo CD's (gitops-engine's) kind order within a wave; unknown kinds (custom resources) go last.
pub const KIND_ORDER: &[&str] = &[
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
];

/// Position of `kind` in [`KIND_ORDER`]; custom kinds sort after every built-in one.
pub fn kind_rank(kind: &str) -> usize {
    KIND_ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KIND_ORDER.len())
}

/// `apiVersion` split into (group, version); the core group is "".
pub fn group_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Identity of an object in a manifest set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// API group ("" for core).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace, "" when not set.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectRef {
    /// Read the identity of `obj`; `None` when apiVersion, kind or metadata.name is missing.
    pub fn of(obj: &Value) -> Option<ObjectRef> {
        let api_version = obj.get("apiVersion")?.as_str()?;
        let kind = obj.get("kind")?.as_str()?;
        let meta = obj.get("metadata")?;
        let name = meta.get("name")?.as_str()?;
        let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
        Some(ObjectRef {
            group: group_version(api_version).0.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for ObjectRef {
    /// `Deployment/gitea` in `gitea`, as messages name objects.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "`{}/{}`", self.kind, self.name)
        } else {
            write!(f, "`{}/{}` in `{}`", self.kind, self.name, self.namespace)
        }
    }
}

/// Sort key: kind order, then namespace, then name.
pub fn apply_order_key(obj: &Value) -> (usize, String, String, String) {
    let r = ObjectRef::of(obj);
    let kind = r.as_ref().map(|r| r.kind.clone()).unwrap_or_default();
    (
        kind_rank(&kind),
        kind,
        r.as_ref().map(|r| r.namespace.clone()).unwrap_or_default(),
        r.map(|r| r.name).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_first_custom_last() {
        assert!(kind_rank("Namespace") < kind_rank("Deployment"));
        assert!(kind_rank("CustomResourceDefinition") < kind_rank("Service"));
        assert_eq!(kind_rank("Application"), KIND_ORDER.len());
    }

    #[test]
    fn object_ref_display() {
        let v = serde_json::json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"gitea","namespace":"gitea"}});
        let r = ObjectRef::of(&v).unwrap();
        assert_eq!(r.group, "apps");
        assert_eq!(r.to_string(), "`Deployment/gitea` in `gitea`");
    }
}
